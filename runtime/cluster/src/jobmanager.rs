//! The JobManager: schedules the job onto TaskManagers, coordinates its
//! checkpoints, and restarts it when something dies.
//!
//! One thread owns all of the job's state and takes, in order, what happens:
//! TaskManagers registering, their messages and heartbeats, lost connections,
//! requests from the REST API, and the coordinator's timers. Connections are
//! read by a thread each, which only decodes and forwards.
//!
//! An *attempt* is one deployment of the job. Everything an attempt's tasks
//! send carries its number, so that a straggler of a cancelled attempt is
//! recognised and ignored. A failure (a task, a channel, a TaskManager's
//! connection or heartbeat, checkpoints beyond tolerance) cancels the
//! attempt everywhere; the restart strategy says when the next one starts,
//! from the latest completed checkpoint, as soon as there are enough slots.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weir_api::Restore;

use crossbeam_channel::{Receiver, Sender};
use weir_core::checkpoint::coordinator::{
    CheckpointConfig, CheckpointStats, Command, Coordinator, JobShape, SavepointRequest,
};
use weir_core::checkpoint::metadata::{RestoreError, RestoredSnapshot};
use weir_core::graph::ChainLayout;
use weir_core::metrics::MetricsSnapshot;
use weir_core::time::now_ms;

use crate::frame;
use crate::protocol::{Deployment, JobSpec, ToJobManager, ToTaskManager};
use crate::restart::{RestartStrategy, Restarts};
use crate::schedule;
use crate::state::{JobEvent, JobState};
use crate::{BuiltJob, JobBuilder};

#[derive(Clone, Debug)]
pub struct JobManagerConfig {
    pub spec: JobSpec,
    pub rpc_bind: SocketAddr,
    pub heartbeat_interval: Duration,
    /// A TaskManager silent for this long is lost.
    pub heartbeat_timeout: Duration,
    pub restart: RestartStrategy,
    /// Where the first attempt starts from.
    pub restore: Restore,
    /// The deployment's name, given by whoever deploys the job (the operator):
    /// written into each checkpoint, and when the latest checkpoint is this
    /// deployment's own, a (re)started JobManager recovers from it instead of
    /// `restore` (its pod was restarted, not redeployed).
    pub deployment: Option<String>,
    /// When the job is over, tell the TaskManagers to shut down. Off where
    /// whatever runs them restarts a process that exits (Kubernetes): they
    /// then stay registered and idle until this JobManager goes, and register
    /// with the next one at once (a rescale's), instead of exiting into a
    /// restart backoff.
    pub release_taskmanagers: bool,
}

impl JobManagerConfig {
    pub fn new(spec: JobSpec, rpc_bind: SocketAddr) -> Self {
        JobManagerConfig {
            spec,
            rpc_bind,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(10),
            restart: RestartStrategy::default(),
            restore: Restore::Fresh,
            deployment: None,
            release_taskmanagers: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobManagerError {
    #[error("{0}")]
    Build(String),
    #[error("cannot restore: {0}")]
    Restore(String),
    #[error("cannot listen for TaskManagers on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the JobManager: {0}")]
    Spawn(std::io::Error),
}

/// A TaskManager as the REST API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TaskManagerView {
    pub id: String,
    pub data_address: String,
    pub slots: usize,
    pub slots_used: usize,
    pub last_heartbeat_ms_ago: u64,
}

/// The job as the REST API shows it; refreshed by the JobManager's thread.
#[derive(Clone, Debug)]
pub struct ClusterView {
    pub name: String,
    pub state: JobState,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub start_time: i64,
    pub layout: Vec<ChainLayout>,
    /// Per chain, per subtask: the latest metrics a TaskManager sent.
    pub metrics: Vec<Vec<MetricsSnapshot>>,
    pub checkpoints: Vec<CheckpointStats>,
    pub taskmanagers: Vec<TaskManagerView>,
    pub restarts: u32,
    /// Why the job failed, once it has.
    pub failure: Option<String>,
    /// The snapshot the running attempt started from (`None`: a fresh start).
    pub restored_from: Option<String>,
    /// The deployment this JobManager belongs to (`--deployment-id`).
    pub deployment: Option<String>,
}

/// What a caller asks of the running JobManager.
enum Request {
    Savepoint { stop: bool, drain: bool, reply: Sender<Result<String, String>> },
    Rescale { parallelism: usize, reply: Sender<Result<String, String>> },
    Cancel,
}

/// A running JobManager.
pub struct JobManager {
    name: String,
    rpc_addr: SocketAddr,
    view: Arc<Mutex<ClusterView>>,
    requests: Sender<Request>,
    thread: Option<JoinHandle<()>>,
}

/// Savepoint or rescale replies.
pub type Reply = Receiver<Result<String, String>>;

impl JobManager {
    /// Builds the job (a bad job is an error here, before anything listens),
    /// opens the snapshot to start from, and starts serving TaskManagers.
    pub fn start(config: JobManagerConfig, builder: Arc<dyn JobBuilder>) -> Result<JobManager, JobManagerError> {
        let plan = Plan::of(&config.spec, builder.as_ref())
            .map_err(JobManagerError::Build)?
            .deployed_as(config.deployment.clone());
        let own = own_latest(&config, &plan).map_err(JobManagerError::Restore)?;
        let restore = match &config.restore {
            _ if own.is_some() => own,
            Restore::Fresh => None,
            Restore::Snapshot(uri) => Some(
                open(builder.as_ref(), &config.spec, &plan, Some(uri))
                    .map_err(JobManagerError::Restore)?
                    .ok_or_else(|| JobManagerError::Restore(format!("{uri}: no snapshot there")))?,
            ),
            Restore::LatestOrFresh if plan.checkpointing.is_none() => None,
            Restore::Latest | Restore::LatestOrFresh => match open(builder.as_ref(), &config.spec, &plan, None) {
                Ok(Some(r)) => Some(r),
                Ok(None) if config.restore == Restore::LatestOrFresh => None,
                Ok(None) => {
                    return Err(JobManagerError::Restore(
                        "latest: no completed checkpoint or savepoint under the checkpoint directory".into(),
                    ));
                }
                Err(e) => return Err(JobManagerError::Restore(e)),
            },
        };
        if let Some(r) = &restore {
            tracing::info!("restoring from {}", r.0);
        }
        let listener = TcpListener::bind(config.rpc_bind)
            .map_err(|source| JobManagerError::Bind { addr: config.rpc_bind, source })?;
        let rpc_addr = listener.local_addr().map_err(JobManagerError::Spawn)?;
        let (inputs_tx, inputs) = crossbeam_channel::unbounded::<Input>();
        let (requests, requests_rx) = crossbeam_channel::unbounded::<Request>();
        let view = Arc::new(Mutex::new(ClusterView {
            name: config.spec.name.clone(),
            state: JobState::Created,
            parallelism: config.spec.parallelism,
            max_parallelism: plan.max_parallelism,
            start_time: now_ms(),
            layout: plan.layout.clone(),
            metrics: plan.empty_metrics(),
            checkpoints: Vec::new(),
            taskmanagers: Vec::new(),
            restarts: 0,
            failure: None,
            restored_from: restore.as_ref().map(|r| r.0.clone()),
            deployment: config.deployment.clone(),
        }));
        let heartbeat_ms = config.heartbeat_interval.as_millis() as u64;
        let release = config.release_taskmanagers;
        std::thread::Builder::new()
            .name("jm-accept".into())
            .spawn(move || accept(listener, inputs_tx, heartbeat_ms, release))
            .map_err(JobManagerError::Spawn)?;
        let jm = Jm {
            restarts: Restarts::new(config.restart.clone()),
            config,
            builder,
            plan,
            state: JobState::Created,
            tms: BTreeMap::new(),
            attempt: None,
            next_attempt: (now_ms() as u64) * 1000,
            restart_at: Instant::now(),
            restore,
            history: Vec::new(),
            rescale: None,
            failure: None,
            view: view.clone(),
            deployed_at: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("jobmanager".into())
            .spawn(move || jm.run(inputs, requests_rx))
            .map_err(JobManagerError::Spawn)?;
        let name = view.lock().expect("view poisoned").name.clone();
        Ok(JobManager { name, rpc_addr, view, requests, thread: Some(thread) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where TaskManagers register.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    pub fn view(&self) -> ClusterView {
        self.view.lock().expect("view poisoned").clone()
    }

    /// Takes a savepoint (then stops the job, with `stop`); the reply is its URI.
    pub fn savepoint(&self, stop: bool, drain: bool) -> Result<Reply, String> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.requests.send(Request::Savepoint { stop, drain, reply }).map_err(|_| "the job has ended".to_string())?;
        Ok(rx)
    }

    /// Takes a savepoint and restarts the job from it at `parallelism`; the
    /// reply (the savepoint's URI) comes once the job runs at the new parallelism.
    pub fn rescale(&self, parallelism: usize) -> Result<Reply, String> {
        let view = self.view();
        if parallelism == 0 || parallelism > view.max_parallelism as usize {
            return Err(format!(
                "parallelism must be between 1 and the max parallelism {}, not {parallelism}",
                view.max_parallelism
            ));
        }
        if view.state != JobState::Running {
            return Err(format!("rescaling needs a running job (the job is {})", view.state));
        }
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.requests.send(Request::Rescale { parallelism, reply }).map_err(|_| "the job has ended".to_string())?;
        Ok(rx)
    }

    /// Cancels the job: every task ends at once, without a savepoint.
    pub fn cancel(&self) {
        let _ = self.requests.send(Request::Cancel);
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the job to end (TaskManagers are told to shut down); its final view.
    pub fn wait(mut self) -> ClusterView {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.view()
    }
}

/// The job as built at one parallelism: what scheduling and checkpointing need.
struct Plan {
    layout: Vec<ChainLayout>,
    shape: JobShape,
    sources: Vec<usize>,
    max_parallelism: u32,
    checkpointing: Option<CheckpointConfig>,
}

impl Plan {
    /// The plan, with its checkpoints marked as taken by `deployment`.
    fn deployed_as(mut self, deployment: Option<String>) -> Plan {
        if let Some(cp) = &mut self.checkpointing {
            cp.deployment = deployment;
        }
        self
    }

    fn of(spec: &JobSpec, builder: &dyn JobBuilder) -> Result<Plan, String> {
        let BuiltJob { graph, checkpointing } = builder.build(spec)?;
        graph.validate().map_err(|e| e.to_string())?;
        Ok(Plan {
            layout: graph.layout(),
            shape: graph.checkpoint_shape(),
            sources: graph.source_tasks(),
            max_parallelism: graph.max_parallelism,
            checkpointing,
        })
    }

    fn empty_metrics(&self) -> Vec<Vec<MetricsSnapshot>> {
        self.layout
            .iter()
            .map(|c| vec![MetricsSnapshot { pending_records: -1, ..Default::default() }; c.parallelism])
            .collect()
    }

    fn task_of(&self, task: usize) -> Option<(usize, usize)> {
        self.layout
            .iter()
            .enumerate()
            .find(|(_, c)| (c.first_task..c.first_task + c.parallelism).contains(&task))
            .map(|(i, c)| (i, task - c.first_task))
    }
}

/// A snapshot to restore: its URI and checkpoint id.
type RestorePoint = (String, u64);

/// Opens `uri`, or the latest snapshot when `None` (`Ok(None)`: there is none),
/// and checks that it fits the plan.
fn open(
    builder: &dyn JobBuilder,
    spec: &JobSpec,
    plan: &Plan,
    uri: Option<&str>,
) -> Result<Option<RestorePoint>, String> {
    let snapshot = match uri {
        Some(uri) => builder.restore(spec, uri)?,
        None => {
            let Some(cp) = &plan.checkpointing else {
                return Err("restoring needs a checkpoint directory".into());
            };
            match RestoredSnapshot::latest(cp.storage.clone(), &spec.name) {
                Ok(s) => s,
                Err(RestoreError::NoCheckpoint { .. }) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let parallelisms: Vec<usize> = plan.shape.operators.values().copied().collect();
    snapshot.check_compatible(plan.max_parallelism, &parallelisms).map_err(|e| e.to_string())?;
    Ok(Some((snapshot.uri(), snapshot.metadata.checkpoint_id)))
}

/// The latest checkpoint when this deployment took it: the JobManager was
/// restarted within its deployment, and recovers where it left off.
fn own_latest(config: &JobManagerConfig, plan: &Plan) -> Result<Option<RestorePoint>, String> {
    let (Some(deployment), Some(cp)) = (&config.deployment, &plan.checkpointing) else { return Ok(None) };
    let latest = match RestoredSnapshot::latest(cp.storage.clone(), &config.spec.name) {
        Ok(s) => s,
        Err(RestoreError::NoCheckpoint { .. }) => return Ok(None),
        Err(e) => return Err(format!("looking for deployment {deployment}'s own checkpoints: {e}")),
    };
    if latest.metadata.deployment.as_deref() != Some(deployment) {
        return Ok(None);
    }
    tracing::info!("deployment {deployment} restarted: recovering from its own latest checkpoint");
    let parallelisms: Vec<usize> = plan.shape.operators.values().copied().collect();
    latest.check_compatible(plan.max_parallelism, &parallelisms).map_err(|e| e.to_string())?;
    Ok(Some((latest.uri(), latest.metadata.checkpoint_id)))
}

enum Input {
    Registered { conn: u64, id: String, slots: usize, data_addr: String, writer: TcpStream },
    Message { conn: u64, message: ToJobManager },
    Disconnected { conn: u64, why: String },
}

/// Accepts TaskManagers: each connection's first message must be a compatible registration.
fn accept(listener: TcpListener, inputs: Sender<Input>, heartbeat_ms: u64, release: bool) {
    for (conn, stream) in (1u64..).zip(listener.incoming()) {
        let Ok(stream) = stream else { continue };
        let inputs = inputs.clone();
        let _ = std::thread::Builder::new()
            .name("jm-conn".into())
            .spawn(move || serve(conn, stream, inputs, heartbeat_ms, release));
    }
}

/// The job is over: a TaskManager is told to shut down, or (not `release`)
/// kept connected and idle until it or this process goes.
fn job_over(mut stream: TcpStream, release: bool) {
    if release {
        let _ = frame::send(&mut stream, &ToTaskManager::Shutdown);
        return;
    }
    let mut buf = Vec::new();
    while frame::recv::<ToJobManager>(&mut stream, &mut buf).is_ok() {}
}

fn serve(conn: u64, mut stream: TcpStream, inputs: Sender<Input>, heartbeat_ms: u64, release: bool) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let (id, slots, data_addr) = match frame::recv::<ToJobManager>(&mut stream, &mut buf) {
        Ok(ToJobManager::Register { version, id, slots, data_addr }) => {
            if let Some(why) = version.incompatibility() {
                tracing::warn!("TaskManager {id} at {peer} refused: {why}");
                let _ = frame::send(&mut stream, &ToTaskManager::Refused { reason: why });
                return;
            }
            (id, slots, data_addr)
        }
        Ok(other) => {
            tracing::warn!("connection from {peer} closed: it must register first, but sent {other:?}");
            return;
        }
        Err(e) => {
            tracing::warn!("connection from {peer} closed: {e}");
            return;
        }
    };
    let _ = stream.set_read_timeout(None);
    let Ok(writer) = stream.try_clone() else { return };
    if frame::send(&mut stream, &ToTaskManager::Welcome { heartbeat_interval_ms: heartbeat_ms }).is_err() {
        return;
    }
    if inputs.send(Input::Registered { conn, id, slots, data_addr, writer }).is_err() {
        // The job is over (a lingering JobManager).
        return job_over(stream, release);
    }
    loop {
        match frame::recv::<ToJobManager>(&mut stream, &mut buf) {
            Ok(message) => {
                if inputs.send(Input::Message { conn, message }).is_err() {
                    return job_over(stream, release);
                }
            }
            Err(e) => {
                let why = match e {
                    frame::FrameError::Closed => "connection closed".to_string(),
                    e => e.to_string(),
                };
                let _ = stream.shutdown(std::net::Shutdown::Both);
                let _ = inputs.send(Input::Disconnected { conn, why });
                return;
            }
        }
    }
}

struct Tm {
    id: String,
    slots: usize,
    data_addr: String,
    writer: TcpStream,
    last_seen: Instant,
}

struct Attempt {
    id: u64,
    /// The TaskManagers (by connection) and the `(chain, subtask)` pairs each runs.
    assignment: BTreeMap<u64, HashSet<(usize, usize)>>,
    finished: HashSet<u64>,
    coordinator: Option<Coordinator>,
}

struct PendingRescale {
    parallelism: usize,
    savepoint: Reply,
    /// The savepoint, once taken.
    path: Option<String>,
    reply: Sender<Result<String, String>>,
}

struct Jm {
    config: JobManagerConfig,
    builder: Arc<dyn JobBuilder>,
    plan: Plan,
    state: JobState,
    tms: BTreeMap<u64, Tm>,
    attempt: Option<Attempt>,
    next_attempt: u64,
    /// Not before this may the next attempt be deployed.
    restart_at: Instant,
    /// What the next attempt restores from.
    restore: Option<RestorePoint>,
    history: Vec<CheckpointStats>,
    rescale: Option<PendingRescale>,
    restarts: Restarts,
    failure: Option<String>,
    view: Arc<Mutex<ClusterView>>,
    deployed_at: Instant,
}

impl Jm {
    fn run(mut self, inputs: Receiver<Input>, requests: Receiver<Request>) {
        let tick = Duration::from_millis(50);
        while !self.state.is_terminal() {
            let never = crossbeam_channel::never();
            let savepoint = self.rescale.as_ref().filter(|r| r.path.is_none()).map_or(&never, |r| &r.savepoint);
            crossbeam_channel::select! {
                recv(inputs) -> i => match i {
                    Ok(i) => self.on_input(i),
                    Err(_) => break,
                },
                recv(requests) -> r => {
                    if let Ok(r) = r {
                        self.on_request(r);
                    }
                }
                recv(savepoint) -> r => self.on_rescale_savepoint(r.unwrap_or_else(|_| Err("the savepoint was abandoned".into()))),
                default(tick) => {}
            }
            self.check_heartbeats();
            self.tick_coordinator();
            self.maybe_deploy();
            self.publish();
        }
        // The job is over: the TaskManagers may go (or idle, see `release_taskmanagers`).
        if self.config.release_taskmanagers {
            for tm in self.tms.values_mut() {
                let _ = frame::send(&mut tm.writer, &ToTaskManager::Shutdown);
            }
        }
        self.publish();
        tracing::info!("job {} {}", self.config.spec.name, self.state);
    }

    fn transition(&mut self, event: JobEvent) {
        match self.state.transition(event) {
            Ok(next) => {
                if next != self.state {
                    tracing::info!("job {}: {} -> {next}", self.config.spec.name, self.state);
                }
                self.state = next;
            }
            Err(e) => tracing::error!("job {}: {e}", self.config.spec.name),
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Registered { conn, id, slots, data_addr, writer } => {
                tracing::info!("TaskManager {id} registered: {slots} slots, data at {data_addr}");
                self.tms.insert(conn, Tm { id, slots, data_addr, writer, last_seen: Instant::now() });
            }
            Input::Disconnected { conn, why } => self.lose(conn, &why),
            Input::Message { conn, message } => {
                if let Some(tm) = self.tms.get_mut(&conn) {
                    tm.last_seen = Instant::now();
                }
                self.on_message(conn, message);
            }
        }
    }

    fn current(&self, attempt: u64) -> bool {
        self.attempt.as_ref().is_some_and(|a| a.id == attempt)
    }

    fn on_message(&mut self, conn: u64, message: ToJobManager) {
        match message {
            ToJobManager::Register { .. } => {}
            ToJobManager::Heartbeat { attempt, metrics } => {
                if attempt.is_some_and(|a| self.current(a)) {
                    let mut view = self.view.lock().expect("view poisoned");
                    for (c, i, m) in metrics {
                        if let Some(slot) = view.metrics.get_mut(c).and_then(|chain| chain.get_mut(i)) {
                            *slot = m;
                        }
                    }
                }
            }
            ToJobManager::Report { attempt, report } => {
                if !self.current(attempt) {
                    return;
                }
                let commands = match self.attempt.as_mut().and_then(|a| a.coordinator.as_mut()) {
                    Some(c) => c.on_report(report, now_ms()),
                    None => Vec::new(),
                };
                self.dispatch(commands);
            }
            ToJobManager::Failed { attempt, reason } => {
                if self.current(attempt) {
                    let who = self.tms.get(&conn).map_or("?".to_string(), |t| t.id.clone());
                    self.fail_over(format!("TaskManager {who}: {reason}"));
                }
            }
            ToJobManager::Finished { attempt } => {
                if !self.current(attempt) {
                    return;
                }
                let a = self.attempt.as_mut().expect("current attempt");
                a.finished.insert(conn);
                if a.finished.len() == a.assignment.len() {
                    self.attempt_ended();
                }
            }
        }
    }

    /// Every TaskManager of the attempt reported its tasks ended.
    fn attempt_ended(&mut self) {
        let a = self.attempt.take().expect("an attempt");
        if let Some(c) = &a.coordinator {
            self.history.extend(c.history.iter().cloned());
        }
        if let Some(r) = self.rescale.take_if(|r| r.path.is_some()) {
            let path = r.path.clone().expect("a savepoint");
            let spec = JobSpec { parallelism: r.parallelism, ..self.config.spec.clone() };
            match Plan::of(&spec, self.builder.as_ref()).map(|p| p.deployed_as(self.config.deployment.clone())) {
                Ok(plan) => {
                    tracing::info!("rescaling to parallelism {} from {path}", r.parallelism);
                    // Never a silent fresh start: a savepoint that cannot be opened fails the job.
                    let point = open(self.builder.as_ref(), &spec, &plan, Some(&path))
                        .and_then(|p| p.ok_or_else(|| "no snapshot there".to_string()));
                    match point {
                        Ok(point) => self.restore = Some(point),
                        Err(e) => {
                            let why =
                                format!("rescale to {}: the savepoint {path} cannot be restored: {e}", r.parallelism);
                            let _ = r.reply.send(Err(why.clone()));
                            self.failure = Some(why);
                            self.transition(JobEvent::GaveUp);
                            return;
                        }
                    }
                    self.config.spec = spec;
                    self.plan = plan;
                    let mut view = self.view.lock().expect("view poisoned");
                    view.parallelism = r.parallelism;
                    view.layout = self.plan.layout.clone();
                    view.metrics = self.plan.empty_metrics();
                    drop(view);
                    self.transition(JobEvent::Redeploy);
                    self.restart_at = Instant::now();
                    self.rescale = Some(PendingRescale { path: Some(path), ..r });
                }
                Err(e) => {
                    let _ = r.reply.send(Err(e.clone()));
                    self.failure = Some(format!("rescale to {}: {e}", r.parallelism));
                    self.transition(JobEvent::GaveUp);
                }
            }
            return;
        }
        self.transition(JobEvent::AllTasksEnded);
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Savepoint { stop, drain, reply } => {
                match self.attempt.as_mut().filter(|_| self.state == JobState::Running) {
                    None => {
                        let _ = reply.send(Err(format!("the job is {}, not running", self.state)));
                    }
                    Some(a) => match a.coordinator.as_mut() {
                        None => {
                            let _ = reply.send(Err(
                                "savepoints need checkpointing to be configured (a checkpoint directory)".into(),
                            ));
                        }
                        Some(c) => c.request_savepoint(SavepointRequest::new(stop, drain, reply)),
                    },
                }
            }
            Request::Rescale { parallelism, reply } => {
                let refuse = |why: String| {
                    let _ = reply.send(Err(why));
                };
                if parallelism == 0 || parallelism > self.plan.max_parallelism as usize {
                    return refuse(format!(
                        "parallelism must be between 1 and the max parallelism {}, not {parallelism}",
                        self.plan.max_parallelism
                    ));
                }
                if self.rescale.is_some() {
                    return refuse("a rescale is already in progress".into());
                }
                let Some(c) = self
                    .attempt
                    .as_mut()
                    .filter(|_| self.state == JobState::Running)
                    .and_then(|a| a.coordinator.as_mut())
                else {
                    return refuse(format!(
                        "rescaling needs a running job with checkpointing (the job is {})",
                        self.state
                    ));
                };
                let (tx, savepoint) = crossbeam_channel::bounded(1);
                c.request_savepoint(SavepointRequest::new(true, false, tx));
                self.rescale = Some(PendingRescale { parallelism, savepoint, path: None, reply });
            }
            Request::Cancel => {
                if let Some(a) = self.attempt.take() {
                    self.cancel_attempt(&a);
                }
                self.transition(JobEvent::CancelRequested);
                self.transition(JobEvent::Cancelled);
            }
        }
    }

    fn on_rescale_savepoint(&mut self, result: Result<String, String>) {
        let Some(r) = self.rescale.as_mut() else { return };
        match result {
            Ok(path) => r.path = Some(path), // the job now stops; it is redeployed once every task ended
            Err(e) => {
                let r = self.rescale.take().expect("a rescale");
                let _ = r.reply.send(Err(format!("the savepoint failed: {e}")));
            }
        }
    }

    fn lose(&mut self, conn: u64, why: &str) {
        let Some(tm) = self.tms.remove(&conn) else { return };
        tracing::warn!("TaskManager {} lost: {why}", tm.id);
        if self.attempt.as_ref().is_some_and(|a| a.assignment.contains_key(&conn)) {
            self.fail_over(format!("TaskManager {} lost: {why}", tm.id));
        }
    }

    fn check_heartbeats(&mut self) {
        let timeout = self.config.heartbeat_timeout;
        let silent: Vec<u64> =
            self.tms.iter().filter(|(_, t)| t.last_seen.elapsed() > timeout).map(|(c, _)| *c).collect();
        for conn in silent {
            if let Some(tm) = self.tms.get(&conn) {
                let _ = tm.writer.shutdown(std::net::Shutdown::Both);
            }
            self.lose(conn, &format!("no heartbeat for {timeout:?}"));
        }
    }

    fn send(&mut self, conn: u64, message: &ToTaskManager) {
        let failed = match self.tms.get_mut(&conn) {
            Some(tm) => frame::send(&mut tm.writer, message).err(),
            None => return,
        };
        if let Some(e) = failed {
            // The reader sees the connection end too; failing over once is enough.
            if let Some(tm) = self.tms.get(&conn) {
                let _ = tm.writer.shutdown(std::net::Shutdown::Both);
            }
            tracing::warn!("cannot reach TaskManager (connection {conn}): {e}");
        }
    }

    fn cancel_attempt(&mut self, a: &Attempt) {
        for &conn in a.assignment.keys() {
            self.send(conn, &ToTaskManager::Cancel { attempt: a.id });
        }
    }

    /// Cancels the attempt and restarts the job as the strategy allows.
    fn fail_over(&mut self, reason: String) {
        tracing::warn!("job {} failed: {reason}", self.config.spec.name);
        if let Some(a) = self.attempt.take() {
            self.cancel_attempt(&a);
            if let Some(c) = &a.coordinator {
                self.history.extend(c.history.iter().cloned());
            }
        }
        if let Some(r) = self.rescale.take() {
            match r.path {
                // The savepoint is there: the rescale goes on from it.
                Some(_) => self.rescale = Some(r),
                None => {
                    let _ = r.reply.send(Err(format!("the job failed during the rescale: {reason}")));
                }
            }
        }
        if self.state == JobState::Cancelling {
            return;
        }
        match self.restarts.on_failure(self.deployed_at.elapsed()) {
            Some(delay) => {
                // The latest completed checkpoint; failing that, where the job started from.
                if self.rescale.is_none() && self.plan.checkpointing.is_some() {
                    match open(self.builder.as_ref(), &self.config.spec, &self.plan, None) {
                        Ok(Some(point)) => self.restore = Some(point),
                        Ok(None) => {}
                        Err(e) => {
                            self.failure = Some(format!("{reason}; and the latest checkpoint cannot be restored: {e}"));
                            self.transition(JobEvent::GaveUp);
                            return;
                        }
                    }
                }
                tracing::info!(
                    "restarting in {delay:?} (restart {}), from {}",
                    self.restarts.attempts(),
                    self.restore.as_ref().map_or("the start", |r| r.0.as_str())
                );
                self.restart_at = Instant::now() + delay;
                self.transition(JobEvent::FailedOver);
            }
            None => {
                self.failure = Some(reason);
                self.transition(JobEvent::GaveUp);
            }
        }
    }

    fn maybe_deploy(&mut self) {
        if !matches!(self.state, JobState::Created | JobState::Restarting) || Instant::now() < self.restart_at {
            return;
        }
        let free: Vec<(u64, usize)> = self.tms.iter().map(|(c, t)| (*c, t.slots)).collect();
        let Some(assignment) = schedule::assign(&self.plan.layout, &free) else { return };
        let id = self.next_attempt;
        self.next_attempt += 1;
        let peers: Vec<((usize, usize), String)> = assignment
            .iter()
            .flat_map(|(conn, set)| set.iter().map(|&s| (s, self.tms[conn].data_addr.clone())))
            .collect();
        let coordinator = match &self.plan.checkpointing {
            None => None,
            Some(cfg) => {
                let stored = Coordinator::next_free_id(cfg.storage.as_ref(), &self.config.spec.name).unwrap_or(1);
                let next_id = stored.max(self.restore.as_ref().map_or(0, |r| r.1 + 1));
                Some(Coordinator::new(self.plan.shape.clone(), cfg.clone(), next_id, now_ms()))
            }
        };
        tracing::info!(
            "deploying attempt {id} of {} at parallelism {} on {} TaskManagers",
            self.config.spec.name,
            self.config.spec.parallelism,
            assignment.len()
        );
        for (conn, set) in &assignment {
            let deployment = Deployment {
                attempt: id,
                spec: self.config.spec.clone(),
                restore: self.restore.as_ref().map(|r| r.0.clone()),
                local: set.iter().copied().collect(),
                peers: peers.clone(),
            };
            self.send(*conn, &ToTaskManager::Deploy(Box::new(deployment)));
        }
        self.attempt = Some(Attempt { id, assignment, finished: HashSet::new(), coordinator });
        self.deployed_at = Instant::now();
        {
            let mut view = self.view.lock().expect("view poisoned");
            view.metrics = self.plan.empty_metrics();
            view.restored_from = self.restore.as_ref().map(|r| r.0.clone());
        }
        self.transition(JobEvent::Deployed);
        if let Some(r) = self.rescale.take_if(|r| r.path.is_some()) {
            let _ = r.reply.send(Ok(r.path.expect("a savepoint")));
        }
    }

    fn tick_coordinator(&mut self) {
        let commands = match self.attempt.as_mut().and_then(|a| a.coordinator.as_mut()) {
            Some(c) => c.tick(now_ms()),
            None => return,
        };
        self.dispatch(commands);
    }

    /// Sends the coordinator's commands to the TaskManagers of the tasks they are for.
    fn dispatch(&mut self, commands: Vec<Command>) {
        let Some(a) = self.attempt.as_ref().filter(|_| !commands.is_empty()) else { return };
        let owner: HashMap<(usize, usize), u64> =
            a.assignment.iter().flat_map(|(conn, set)| set.iter().map(move |&s| (s, *conn))).collect();
        let attempt = a.id;
        let all_tasks: Vec<usize> =
            self.plan.layout.iter().flat_map(|c| c.first_task..c.first_task + c.parallelism).collect();
        for command in commands {
            let tasks: Vec<usize> = match &command {
                Command::Complete { .. } => all_tasks.clone(),
                Command::Trigger { .. } | Command::EndOfInput => self.plan.sources.clone(),
                Command::Fail(reason) => {
                    self.fail_over(format!("checkpointing: {reason}"));
                    return;
                }
            };
            for task in tasks {
                let Some(conn) = self.plan.task_of(task).and_then(|s| owner.get(&s)).copied() else { continue };
                self.send(conn, &ToTaskManager::Command { attempt, task, command: command.clone() });
            }
        }
    }

    fn publish(&self) {
        let mut view = self.view.lock().expect("view poisoned");
        view.state = self.state;
        view.restarts = self.restarts.attempts();
        view.failure = self.failure.clone();
        // The history only grows: copy it out when it did, not on every tick.
        let current = self.attempt.as_ref().and_then(|a| a.coordinator.as_ref()).map_or(&[][..], |c| &c.history[..]);
        if view.checkpoints.len() != self.history.len() + current.len() {
            view.checkpoints = self.history.iter().chain(current).cloned().collect();
        }
        let used: HashMap<u64, usize> = self
            .attempt
            .as_ref()
            .map(|a| {
                a.assignment.iter().map(|(c, s)| (*c, s.iter().map(|x| x.1).collect::<HashSet<_>>().len())).collect()
            })
            .unwrap_or_default();
        view.taskmanagers = self
            .tms
            .iter()
            .map(|(conn, t)| TaskManagerView {
                id: t.id.clone(),
                data_address: t.data_addr.clone(),
                slots: t.slots,
                slots_used: used.get(conn).copied().unwrap_or(0),
                last_heartbeat_ms_ago: t.last_seen.elapsed().as_millis() as u64,
            })
            .collect();
    }
}
