//! The JobManager: schedules the job onto TaskManagers, coordinates its
//! checkpoints, and restarts it when something dies.
//!
//! ```text
//!  TaskManagers ──TCP──> connection (a thread each) ──Event────┐
//!  REST API ───────────> JobManager (the handle) ───Request───┤
//!                                                              v
//!  TaskManagers <──TaskManagerLinks── event loop (one thread: the job's state, the clock)
//!                                        │  ^
//!                      storage work ─────┘  └──── Done
//!                                        v  │
//!                                    storage thread (checkpoint storage, in order)
//! ```
//!
//! * this module: the public handle ([`JobManager`]), its configuration and
//!   the views the REST API shows;
//! * `connection`: accepting TaskManagers, their registration, and the
//!   sockets behind the loop's links;
//! * `event_loop`: the thread that owns the job's state and takes, in
//!   order, what happens; it reaches TaskManagers only through a
//!   `TaskManagerLinks` and reads time only from a `Clock`, so that its unit
//!   tests use fake TaskManagers and a manual clock;
//! * `attempt`: deployments, fail-over, rescale and savepoints;
//! * `job`: the job as planned at one parallelism, and the snapshot it
//!   starts from;
//! * `storage`: the storage thread, which makes every storage call the
//!   loop needs (metadata writes, the fence, restore points), in order.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use weir_api::Restore;
use weir_api::rest::{RescaleRequest, TriggerFailure};
use weir_core::checkpoint::coordinator::{CheckpointStats, Coordinator};
use weir_core::checkpoint::fence;
use weir_core::graph::ChainLayout;
use weir_core::metrics::{GaugeKey, MetricsSnapshot};
use weir_core::time::now_ms;

use crate::JobBuilder;
use crate::auth::Secret;
use crate::gate::Gate;
use crate::protocol::JobSpec;
use crate::restart::RestartStrategy;
use crate::state::JobState;

mod attempt;
mod connection;
mod event_loop;
mod job;
mod storage;
#[cfg(test)]
mod tests;

use connection::{Acceptor, TcpLinks};
use event_loop::{Effects, JobLoop, Request, SystemClock};
use job::{Plan, RestorePoint};

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
    /// The job's secret: every TaskManager must prove it (see [`crate::auth`]).
    pub secret: Option<Secret>,
    /// This JobManager's fencing token (see [`weir_core::checkpoint::fence`]):
    /// claimed in the checkpoint directory at start (`None`: the wall clock's
    /// milliseconds then, or one above the claimed epoch when the clock is behind it).
    pub epoch: Option<u64>,
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
            secret: None,
            epoch: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobManagerError {
    #[error("{0}")]
    Build(String),
    #[error("cannot restore: {0}")]
    Restore(String),
    /// The checkpoint directory cannot be read (so no checkpoint could be numbered, or written).
    #[error("cannot read the checkpoint directory: {0}")]
    Checkpoints(String),
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
    /// The job's own gauges, each as last sent by whichever subtask sets it
    /// (kept across restarts and rescales: a key's new owner overwrites it).
    pub gauges: BTreeMap<GaugeKey, f64>,
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

impl ClusterView {
    /// The view before the first attempt.
    fn initial(config: &JobManagerConfig, plan: &Plan, restore: Option<&RestorePoint>) -> Self {
        ClusterView {
            name: config.spec.name.clone(),
            state: JobState::Created,
            parallelism: config.spec.parallelism,
            max_parallelism: plan.max_parallelism,
            start_time: now_ms(),
            layout: plan.layout.clone(),
            metrics: plan.empty_metrics(),
            gauges: BTreeMap::new(),
            checkpoints: Vec::new(),
            taskmanagers: Vec::new(),
            restarts: 0,
            failure: None,
            restored_from: restore.map(|r| r.0.clone()),
            deployment: config.deployment.clone(),
        }
    }
}

/// A running JobManager.
pub struct JobManager {
    name: String,
    rpc_addr: SocketAddr,
    checkpointing: bool,
    view: Arc<Mutex<ClusterView>>,
    requests: Sender<Request>,
    thread: Option<JoinHandle<()>>,
}

/// A savepoint's reply: its path, or why it was not taken.
pub type Reply = Receiver<Result<String, String>>;

/// A rescale's reply: the savepoint the job runs from at the new parallelism, or why not.
pub type RescaleReply = Receiver<Result<String, TriggerFailure>>;

impl JobManager {
    /// Builds the job (a bad job is an error here, before anything listens),
    /// opens the snapshot to start from, and starts serving TaskManagers.
    pub fn start(config: JobManagerConfig, builder: Arc<dyn JobBuilder>) -> Result<JobManager, JobManagerError> {
        let mut config = config;
        let mut plan = Plan::of(&config.spec, builder.as_ref())
            .map_err(JobManagerError::Build)?
            .deployed_as(config.deployment.clone());
        if let Some(spec) = job::as_last_run(&config, builder.as_ref(), &plan)? {
            tracing::info!("resuming at the parallelism of this deployment's latest checkpoint");
            plan = Plan::of(&spec, builder.as_ref())
                .map_err(JobManagerError::Build)?
                .deployed_as(config.deployment.clone());
            config.spec = spec;
        }
        if let Some(cp) = &plan.checkpointing {
            Coordinator::next_free_id(cp.storage.as_ref(), &config.spec.name)
                .map_err(|e| JobManagerError::Checkpoints(e.to_string()))?;
            // Claimed before anything is deployed: from now on, a JobManager
            // that led the job before completes none of its checkpoints.
            let fenced = |e: fence::FenceError| JobManagerError::Checkpoints(e.to_string());
            let epoch = match config.epoch {
                Some(epoch) => epoch,
                None => fence::next_epoch(cp.storage.as_ref(), &config.spec.name, now_ms() as u64).map_err(fenced)?,
            };
            config.epoch = Some(epoch);
            fence::claim(cp.storage.as_ref(), &config.spec.name, epoch).map_err(fenced)?;
        }
        let restore = job::initial_restore(&config, builder.as_ref(), &plan)?;
        let checkpointing = plan.checkpointing.is_some();
        let listener = TcpListener::bind(config.rpc_bind)
            .map_err(|source| JobManagerError::Bind { addr: config.rpc_bind, source })?;
        let rpc_addr = listener.local_addr().map_err(JobManagerError::Spawn)?;
        let (events_tx, events) = crossbeam_channel::unbounded();
        let (requests, requests_rx) = crossbeam_channel::unbounded::<Request>();
        let view = Arc::new(Mutex::new(ClusterView::initial(&config, &plan, restore.as_ref())));
        let links = TcpLinks::default();
        let acceptor = Acceptor {
            events: events_tx,
            links: links.clone(),
            heartbeat_ms: config.heartbeat_interval.as_millis() as u64,
            release: config.release_taskmanagers,
            secret: config.secret.clone(),
            gate: Gate::new(connection::MAX_CONNECTIONS),
        };
        std::thread::Builder::new()
            .name("jm-accept".into())
            .spawn(move || acceptor.run(listener))
            .map_err(JobManagerError::Spawn)?;
        let name = config.spec.name.clone();
        let storage = storage::StorageWorker::spawn(&name).map_err(JobManagerError::Spawn)?;
        let effects = Effects { links: Box::new(links), clock: Arc::new(SystemClock), storage };
        let job = JobLoop::new(config, builder, plan, restore, view.clone(), effects);
        let thread = std::thread::Builder::new()
            .name("jobmanager".into())
            .spawn(move || job.run(events, requests_rx))
            .map_err(JobManagerError::Spawn)?;
        Ok(JobManager { name, rpc_addr, checkpointing, view, requests, thread: Some(thread) })
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

    /// Takes a savepoint and restarts the job from it at the parallelism
    /// `request` states ([`RescaleRequest`]); the reply (the savepoint's URI)
    /// comes once the job runs at the new parallelism. A request the job
    /// cannot run at is refused before anything stops.
    pub fn rescale(&self, request: RescaleRequest) -> Result<RescaleReply, String> {
        let view = self.view();
        if view.state != JobState::Running {
            return Err(format!("rescaling needs a running job (the job is {})", view.state));
        }
        let (reply, rx) = crossbeam_channel::bounded(1);
        let (accepted, answer) = crossbeam_channel::bounded(1);
        let request = Request::Rescale { request, accepted, reply };
        self.requests.send(request).map_err(|_| "the job has ended".to_string())?;
        // The event loop plans the request at once: a refusal is the caller's answer.
        answer.recv().map_err(|_| "the job has ended".to_string())??;
        Ok(rx)
    }

    /// Whether the job takes checkpoints (and so can take savepoints).
    pub fn is_checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// Stops the job's sources: the job drains (windows and timers fire as at
    /// the end of input) and finishes. Without a savepoint: for a job that
    /// takes none, the graceful stop.
    pub fn stop(&self) {
        let _ = self.requests.send(Request::Stop);
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
