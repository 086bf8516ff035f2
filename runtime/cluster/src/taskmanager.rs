//! The TaskManager: registers its slots with the JobManager, runs the
//! subtasks it is given, and reports on them.
//!
//! A TaskManager holds at most one attempt of the job at a time. On a
//! deployment it builds the job's graph itself (the same graph the
//! JobManager planned, from the same [`JobSpec`]) and runs its share of the
//! subtasks with the engine's executor; channels to subtasks elsewhere go
//! through its [`DataServer`]. Checkpoint commands from the JobManager's
//! coordinator are routed to the tasks, and the tasks' reports, failures and
//! metrics go back. When the connection to the JobManager is lost, the
//! running attempt is cancelled (the JobManager restarts the job from its
//! latest checkpoint) and the TaskManager registers again, with whichever
//! JobManager leads by then.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use weir_core::checkpoint::coordinator::{Command, TaskReport};
use weir_core::executor::{ExecuteOptions, JobHandle, Placement};
use weir_core::metrics::SubtaskMetrics;

use crate::JobBuilder;
use crate::auth::{self, AuthError, Channel, MAX_HANDSHAKE_FRAME, Secret};
use crate::data::{ChannelFailure, DataServer};
use crate::frame::{self, FrameError, Patience, READ_TICK};
use crate::protocol::{Deployment, ToJobManager, ToTaskManager, Version};

/// How a TaskManager is started.
#[derive(Clone, Debug)]
pub struct TaskManagerConfig {
    /// The JobManagers' RPC addresses (`host:port`): the leader among them is used.
    pub jobmanagers: Vec<String>,
    pub slots: usize,
    /// Where the data server listens.
    pub data_bind: SocketAddr,
    /// The host other TaskManagers reach this one's data server at (default: the bind address).
    pub advertise_host: Option<String>,
    /// How long to look for a JobManager before giving up.
    pub connect_timeout: Duration,
    pub id: String,
    /// The job's secret: proven to, and required of, the JobManager and the other TaskManagers.
    pub secret: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskManagerError {
    #[error("no JobManager reachable at {addresses} for {waited:?} (last error: {last})")]
    Unreachable { addresses: String, waited: Duration, last: String },
    #[error("the JobManager at {address} refused this TaskManager: {reason}")]
    Refused { address: String, reason: String },
    #[error("cannot start the data server on {addr}: {source}")]
    DataServer { addr: SocketAddr, source: std::io::Error },
}

/// How a session with a JobManager ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

struct Attempt {
    deployment: Deployment,
    handle: Option<JobHandle>,
    controls: BTreeMap<usize, Sender<Command>>,
    reported: bool,
}

/// Runs a TaskManager until its JobManager shuts it down.
pub fn run(config: TaskManagerConfig, builder: Arc<dyn JobBuilder>) -> Result<(), TaskManagerError> {
    let (failures_tx, failures) = crossbeam_channel::unbounded::<ChannelFailure>();
    let data = DataServer::start(config.data_bind, failures_tx, config.secret.clone())
        .map_err(|source| TaskManagerError::DataServer { addr: config.data_bind, source })?;
    tracing::info!("TaskManager {} with {} slots, data server on {}", config.id, config.slots, data.addr());
    let mut tm = TaskManager { config, builder, data, failures, attempt: None, beat: Arc::default() };
    let mut last = String::from("none tried yet");
    let mut since = Instant::now();
    loop {
        for address in &tm.config.jobmanagers.clone() {
            let stream = address
                .to_socket_addrs()
                .map_err(|e| e.to_string())
                .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
                .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).map_err(|e| e.to_string()));
            match stream {
                Ok(stream) => match tm.session(stream, address)? {
                    SessionEnd::Shutdown => return Ok(()),
                    SessionEnd::Lost(why) => {
                        tracing::warn!("lost the JobManager at {address}: {why}");
                        last = why;
                        since = Instant::now();
                    }
                },
                Err(e) => last = format!("{address}: {e}"),
            }
        }
        if since.elapsed() > tm.config.connect_timeout {
            return Err(TaskManagerError::Unreachable {
                addresses: tm.config.jobmanagers.join(", "),
                waited: tm.config.connect_timeout,
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

enum Event {
    Message(ToTaskManager),
    Closed(String),
}

/// How long a message to the JobManager may wait for it to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `message` on the control connection (shared by the session and its heartbeats).
fn send(writer: &Mutex<TcpStream>, message: &ToJobManager) -> std::io::Result<()> {
    frame::send(&mut *writer.lock().expect("writer poisoned"), message)
}

/// Reads the JobManager's messages on a thread of its own, as [`Event`]s.
fn read_control(mut reader: TcpStream) -> std::io::Result<Receiver<Event>> {
    let (events_tx, events) = crossbeam_channel::unbounded::<Event>();
    std::thread::Builder::new().name("tm-control".into()).spawn(move || {
        let mut buf = Vec::new();
        loop {
            match frame::recv::<ToTaskManager>(&mut reader, &mut buf) {
                Ok(m) => {
                    if events_tx.send(Event::Message(m)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let why = match e {
                        FrameError::Closed => "the JobManager closed the connection".to_string(),
                        e => e.to_string(),
                    };
                    let _ = events_tx.send(Event::Closed(why));
                    return;
                }
            }
        }
    })?;
    Ok(events)
}

/// What a heartbeat reports: the attempt this TaskManager runs and its subtasks' metrics.
#[derive(Default)]
struct Beat {
    attempt: Option<u64>,
    subtasks: Vec<(usize, usize, Arc<SubtaskMetrics>)>,
}

impl Beat {
    fn message(&self) -> ToJobManager {
        let metrics = self.subtasks.iter().map(|(c, i, m)| (*c, *i, m.snapshot())).collect();
        let gauges =
            self.subtasks.iter().map(|(c, i, m)| (*c, *i, m.gauges())).filter(|(_, _, g)| !g.is_empty()).collect();
        ToJobManager::Heartbeat { attempt: self.attempt, metrics, gauges }
    }
}

/// The thread that sends a heartbeat every interval until dropped (or the connection fails).
struct Heartbeats {
    stop: Arc<AtomicBool>,
}

impl Heartbeats {
    fn start(writer: Arc<Mutex<TcpStream>>, interval: Duration, beat: Arc<Mutex<Beat>>) -> std::io::Result<Heartbeats> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new().name("tm-heartbeat".into()).spawn(move || {
            while !stopped.load(Ordering::Acquire) {
                let message = beat.lock().expect("beat poisoned").message();
                if send(&writer, &message).is_err() {
                    // The session sees the connection fail too.
                    return;
                }
                let next = Instant::now() + interval;
                while !stopped.load(Ordering::Acquire) && Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20).min(interval));
                }
            }
        })?;
        Ok(Heartbeats { stop })
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct TaskManager {
    config: TaskManagerConfig,
    builder: Arc<dyn JobBuilder>,
    data: DataServer,
    failures: Receiver<ChannelFailure>,
    attempt: Option<Attempt>,
    /// What the heartbeat thread reports.
    beat: Arc<Mutex<Beat>>,
}

impl TaskManager {
    /// Where other TaskManagers reach this one's data server: the advertised
    /// host, else the bind address, else (bound to every interface) the
    /// address this process reaches the JobManager from.
    fn data_addr(&self, control: &TcpStream) -> String {
        let bound = self.data.addr();
        let host = match &self.config.advertise_host {
            Some(h) => h.clone(),
            None if bound.ip().is_unspecified() => {
                control.local_addr().map(|a| a.ip().to_string()).unwrap_or_else(|_| "127.0.0.1".into())
            }
            None => bound.ip().to_string(),
        };
        format!("{host}:{}", bound.port())
    }

    /// Authenticates with the JobManager at `address` and registers: the
    /// heartbeat interval it asks for, or how the session ended before it began.
    fn register(
        &self,
        stream: &mut TcpStream,
        address: &str,
    ) -> Result<Result<Duration, SessionEnd>, TaskManagerError> {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(READ_TICK));
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = |reason: String| TaskManagerError::Refused { address: address.to_string(), reason };
        match auth::connect(stream, self.config.secret.as_ref(), Channel::Control, deadline) {
            Ok(()) => {}
            // A wrong or missing secret, another version: no use trying again.
            Err(AuthError::RefusedByPeer(reason)) => return Err(refused(reason)),
            // A peer that cannot prove the secret is no JobManager of ours; a
            // standby JobManager does not answer: try the next one.
            Err(e) => return Ok(Err(SessionEnd::Lost(e.to_string()))),
        }
        let register = ToJobManager::Register {
            version: Version::ours(),
            id: self.config.id.clone(),
            slots: self.config.slots,
            data_addr: self.data_addr(stream),
        };
        if let Err(e) = frame::send(stream, &register) {
            return Ok(Err(SessionEnd::Lost(e.to_string())));
        }
        let mut buf = Vec::new();
        Ok(match frame::recv_within(stream, &mut buf, MAX_HANDSHAKE_FRAME, Patience::Until(deadline)) {
            Ok(ToTaskManager::Welcome { heartbeat_interval_ms }) => Ok(Duration::from_millis(heartbeat_interval_ms)),
            Ok(ToTaskManager::Refused { reason }) => return Err(refused(reason)),
            Ok(other) => Err(SessionEnd::Lost(format!("unexpected first message {other:?}"))),
            Err(e) => Err(SessionEnd::Lost(e.to_string())),
        })
    }

    fn session(&mut self, mut stream: TcpStream, address: &str) -> Result<SessionEnd, TaskManagerError> {
        let interval = match self.register(&mut stream, address)? {
            Ok(heartbeat) => heartbeat,
            Err(end) => return Ok(end),
        };
        tracing::info!("registered with the JobManager at {address}");
        let lost =
            |e: std::io::Error| TaskManagerError::Refused { address: address.to_string(), reason: e.to_string() };
        let events = read_control(stream.try_clone().map_err(lost)?).map_err(lost)?;
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let writer = Arc::new(Mutex::new(stream));
        // Heartbeats on a thread of their own: a deployment whose sink takes
        // long to connect, or a cancellation that waits for its tasks, must not
        // make the JobManager think this TaskManager is gone.
        let _heartbeats = Heartbeats::start(writer.clone(), interval, self.beat.clone()).map_err(lost)?;
        let (reports_tx, reports) = crossbeam_channel::unbounded::<(u64, TaskReport)>();
        let end = loop {
            let mut outgoing = Vec::new();
            crossbeam_channel::select! {
                recv(events) -> e => match e {
                    Ok(Event::Message(m)) => {
                        if let Some(end) = self.on_message(m, &reports_tx, &mut outgoing) {
                            break end;
                        }
                    }
                    Ok(Event::Closed(why)) => break SessionEnd::Lost(why),
                    Err(_) => break SessionEnd::Lost("the control connection's reader ended".into()),
                },
                recv(reports) -> r => {
                    if let Ok((attempt, report)) = r {
                        outgoing.push(ToJobManager::Report { attempt, report });
                    }
                }
                recv(self.failures) -> f => {
                    if let Ok((attempt, reason)) = f {
                        self.fail_current(attempt, reason, &mut outgoing);
                    }
                }
                default(Duration::from_millis(50)) => {}
            }
            self.check_attempt(&mut outgoing);
            for m in outgoing {
                if let Err(e) = send(&writer, &m) {
                    self.cancel_current();
                    return Ok(SessionEnd::Lost(e.to_string()));
                }
            }
        };
        self.cancel_current();
        Ok(end)
    }

    fn on_message(
        &mut self,
        message: ToTaskManager,
        reports: &Sender<(u64, TaskReport)>,
        out: &mut Vec<ToJobManager>,
    ) -> Option<SessionEnd> {
        match message {
            ToTaskManager::Deploy(deployment) => self.deploy(*deployment, reports, out),
            ToTaskManager::Cancel { attempt } => {
                if self.attempt.as_ref().is_some_and(|a| a.deployment.attempt == attempt) {
                    self.cancel_current();
                }
            }
            ToTaskManager::StopSources { attempt } => {
                if let Some(handle) =
                    self.attempt.as_ref().filter(|a| a.deployment.attempt == attempt).and_then(|a| a.handle.as_ref())
                {
                    handle.stop();
                }
            }
            ToTaskManager::Command { attempt, task, command } => {
                if let Some(a) = self.attempt.as_ref().filter(|a| a.deployment.attempt == attempt)
                    && let Some(control) = a.controls.get(&task)
                {
                    let _ = control.send(command);
                }
            }
            ToTaskManager::Shutdown => return Some(SessionEnd::Shutdown),
            ToTaskManager::Welcome { .. } | ToTaskManager::Refused { .. } => {}
        }
        None
    }

    fn deploy(&mut self, deployment: Deployment, reports: &Sender<(u64, TaskReport)>, out: &mut Vec<ToJobManager>) {
        self.cancel_current();
        let attempt = deployment.attempt;
        let subtasks = deployment.local.len();
        tracing::info!("deploying attempt {attempt}: {subtasks} subtasks");
        let began = Instant::now();
        match self.start(&deployment, reports) {
            Ok((handle, controls)) => {
                // Built means restored: a subtask's state is read before its thread starts.
                let restored = deployment.restore.as_deref().map(|uri| format!(", state restored from {uri}"));
                tracing::info!(
                    "attempt {attempt}: {subtasks} subtasks running after {} ms{}",
                    began.elapsed().as_millis(),
                    restored.unwrap_or_default()
                );
                self.attempt = Some(Attempt { deployment, handle: Some(handle), controls, reported: false });
                self.beat_for_current();
            }
            Err(reason) => {
                out.push(ToJobManager::Failed { attempt, reason });
                self.attempt = Some(Attempt { deployment, handle: None, controls: BTreeMap::new(), reported: true });
            }
        }
    }

    fn start(
        &self,
        d: &Deployment,
        reports: &Sender<(u64, TaskReport)>,
    ) -> Result<(JobHandle, BTreeMap<usize, Sender<Command>>), String> {
        let built = crate::build(self.builder.as_ref(), &d.spec)?;
        let restore = match &d.restore {
            Some(uri) => Some(self.builder.restore(&d.spec, uri)?),
            None => None,
        };
        let peers: HashMap<(usize, usize), String> = d.peers.iter().cloned().collect();
        let network = self.data.network(&d.spec.name, d.attempt, peers, built.graph.edge_chains());
        let options = ExecuteOptions {
            checkpointing: built.checkpointing,
            restore,
            placement: Some(Placement { local: d.local.iter().copied().collect(), network }),
        };
        let handle = weir_core::executor::execute_with(built.graph, options).map_err(|e| e.to_string())?;
        let mut controls = BTreeMap::new();
        if let Some(c) = handle.take_coordination() {
            controls = c.controls;
            let (reports, attempt) = (reports.clone(), d.attempt);
            std::thread::Builder::new()
                .name("tm-reports".into())
                .spawn(move || {
                    for r in c.reports.iter() {
                        if reports.send((attempt, r)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
        }
        Ok((handle, controls))
    }

    fn fail_current(&mut self, attempt: u64, reason: String, out: &mut Vec<ToJobManager>) {
        if let Some(a) = self.attempt.as_mut().filter(|a| a.deployment.attempt == attempt && !a.reported) {
            a.reported = true;
            out.push(ToJobManager::Failed { attempt, reason });
        }
    }

    /// Reports a failed or finished attempt, once.
    fn check_attempt(&mut self, out: &mut Vec<ToJobManager>) {
        let Some(a) = self.attempt.as_mut() else { return };
        if a.reported {
            return;
        }
        let attempt = a.deployment.attempt;
        let Some(handle) = a.handle.as_ref() else { return };
        if let Some(reason) = handle.failure() {
            a.reported = true;
            handle.cancel();
            out.push(ToJobManager::Failed { attempt, reason });
        } else if handle.is_finished() {
            let last = self.heartbeat();
            out.push(last);
            let a = self.attempt.as_mut().expect("an attempt");
            a.reported = true;
            let handle = a.handle.take().expect("a handle");
            out.push(match handle.wait() {
                Ok(()) => ToJobManager::Finished { attempt },
                Err(e) => ToJobManager::Failed { attempt, reason: e.to_string() },
            });
        }
    }

    fn heartbeat(&self) -> ToJobManager {
        self.beat.lock().expect("beat poisoned").message()
    }

    /// What heartbeats report from now on: the current attempt's subtasks.
    fn beat_for_current(&self) {
        let mut beat = Beat::default();
        if let Some(a) = &self.attempt {
            beat.attempt = Some(a.deployment.attempt);
            for (c, chain) in a.handle.iter().flat_map(|h| h.chains.iter().enumerate()) {
                for (i, m) in chain.local_subtasks.iter().zip(&chain.subtasks) {
                    beat.subtasks.push((c, *i, m.clone()));
                }
            }
        }
        *self.beat.lock().expect("beat poisoned") = beat;
    }

    /// Cancels the running attempt and waits (briefly) for its tasks to end.
    fn cancel_current(&mut self) {
        let Some(a) = self.attempt.take() else { return };
        self.beat_for_current();
        self.data.cancel(a.deployment.attempt);
        if let Some(handle) = a.handle {
            handle.cancel();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.wait();
            } else {
                tracing::warn!("attempt {}: tasks still running 5 s after cancellation", a.deployment.attempt);
            }
        }
    }
}
