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
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use weir_core::checkpoint::coordinator::{Command, TaskReport};
use weir_core::executor::{ExecuteOptions, JobHandle, Placement};

use crate::JobBuilder;
use crate::data::{ChannelFailure, DataServer};
use crate::frame::{self, FrameError};
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
    let data = DataServer::start(config.data_bind, failures_tx)
        .map_err(|source| TaskManagerError::DataServer { addr: config.data_bind, source })?;
    tracing::info!("TaskManager {} with {} slots, data server on {}", config.id, config.slots, data.addr());
    let mut tm = TaskManager { config, builder, data, failures, attempt: None };
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

struct TaskManager {
    config: TaskManagerConfig,
    builder: Arc<dyn JobBuilder>,
    data: DataServer,
    failures: Receiver<ChannelFailure>,
    attempt: Option<Attempt>,
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

    fn session(&mut self, mut stream: TcpStream, address: &str) -> Result<SessionEnd, TaskManagerError> {
        let _ = stream.set_nodelay(true);
        let register = ToJobManager::Register {
            version: Version::ours(),
            id: self.config.id.clone(),
            slots: self.config.slots,
            data_addr: self.data_addr(&stream),
        };
        if let Err(e) = frame::send(&mut stream, &register) {
            return Ok(SessionEnd::Lost(e.to_string()));
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = Vec::new();
        let heartbeat = match frame::recv::<ToTaskManager>(&mut stream, &mut buf) {
            Ok(ToTaskManager::Welcome { heartbeat_interval_ms }) => Duration::from_millis(heartbeat_interval_ms),
            Ok(ToTaskManager::Refused { reason }) => {
                return Err(TaskManagerError::Refused { address: address.to_string(), reason });
            }
            Ok(other) => return Ok(SessionEnd::Lost(format!("unexpected first message {other:?}"))),
            // A standby JobManager does not answer: try the next one.
            Err(e) => return Ok(SessionEnd::Lost(e.to_string())),
        };
        tracing::info!("registered with the JobManager at {address}");
        let _ = stream.set_read_timeout(None);
        let (events_tx, events) = crossbeam_channel::unbounded::<Event>();
        let mut reader = stream
            .try_clone()
            .map_err(|e| TaskManagerError::Refused { address: address.to_string(), reason: e.to_string() })?;
        std::thread::Builder::new()
            .name("tm-control".into())
            .spawn(move || {
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
            })
            .map_err(|e| TaskManagerError::Refused { address: address.to_string(), reason: e.to_string() })?;
        let (reports_tx, reports) = crossbeam_channel::unbounded::<(u64, TaskReport)>();
        let mut next_heartbeat = Instant::now();
        let end = loop {
            let wait = next_heartbeat.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
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
                default(wait) => {}
            }
            self.check_attempt(&mut outgoing);
            if Instant::now() >= next_heartbeat {
                outgoing.push(self.heartbeat());
                next_heartbeat = Instant::now() + heartbeat;
            }
            for m in outgoing {
                if let Err(e) = frame::send(&mut stream, &m) {
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
        tracing::info!("deploying attempt {attempt}: {} subtasks", deployment.local.len());
        match self.start(&deployment, reports) {
            Ok((handle, controls)) => {
                self.attempt = Some(Attempt { deployment, handle: Some(handle), controls, reported: false });
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
        let mut metrics = Vec::new();
        let attempt = self.attempt.as_ref().map(|a| a.deployment.attempt);
        if let Some(handle) = self.attempt.as_ref().and_then(|a| a.handle.as_ref()) {
            for (c, chain) in handle.chains.iter().enumerate() {
                for (i, m) in chain.local_subtasks.iter().zip(&chain.subtasks) {
                    metrics.push((c, *i, m.snapshot()));
                }
            }
        }
        ToJobManager::Heartbeat { attempt, metrics }
    }

    /// Cancels the running attempt and waits (briefly) for its tasks to end.
    fn cancel_current(&mut self) {
        let Some(a) = self.attempt.take() else { return };
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
