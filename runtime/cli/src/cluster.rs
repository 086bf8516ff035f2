//! Pipelines on a cluster of processes: `weir jobmanager`, `weir taskmanager`,
//! and `weir run --taskmanagers N` (a JobManager in this process and N
//! TaskManager processes on loopback, restarted when they die, as Kubernetes
//! restarts a pod).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir::core::checkpoint::metadata::RestoredSnapshot;
use weir::prelude::StreamEnv;
use weir_cluster::jobmanager::{ClusterView, InitialRestore, JobManager, JobManagerConfig, JobManagerError};
use weir_cluster::restart::RestartStrategy;
use weir_cluster::state::JobState;
use weir_cluster::taskmanager::{TaskManagerConfig, TaskManagerError};
use weir_cluster::{BuiltJob, JobBuilder, JobSpec};
use weir_pipeline::compile::{Compiled, Overrides, compile};
use weir_pipeline::config::{PipelineFile, parse, parse_duration};
use weir_rest::{ClusterJob, RestServer};

use crate::{Failure, run, storage};

/// What every process builds a pipeline job from: the file's text (the
/// TaskManagers need not have the file) and the command line's overrides.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineDefinition {
    /// The file's path: relative paths in it, and messages, refer to it.
    pub path: PathBuf,
    pub text: String,
    pub sets: Vec<String>,
    pub checkpoint_dir: Option<String>,
    pub checkpoint_interval: Option<String>,
    #[serde(default)]
    pub savepoint_dir: Option<String>,
}

impl PipelineDefinition {
    fn file(&self) -> Result<PipelineFile, String> {
        parse(&self.path, &self.text, &self.sets).map_err(|e| e.to_string())
    }

    /// Compiles the pipeline at `parallelism` (or the file's) into `env`.
    fn compile(
        &self,
        env: &StreamEnv,
        parallelism: Option<usize>,
    ) -> Result<(Compiled, Option<weir::core::checkpoint::coordinator::CheckpointConfig>), Failure> {
        let file = self.file().map_err(Failure::BadInput)?;
        let checkpoints = run::checkpointing(
            self.checkpoint_dir.as_deref(),
            self.checkpoint_interval.as_deref(),
            self.savepoint_dir.as_deref(),
            &file,
        )?;
        let overrides = Overrides { parallelism, checkpointing: Some(checkpoints.is_some()) };
        let compiled = compile(&self.path, &file, env, &overrides).map_err(|e| Failure::BadInput(e.to_string()))?;
        Ok((compiled, checkpoints.map(|(_, c)| c)))
    }
}

fn message(f: Failure) -> String {
    match f {
        Failure::BadInput(m) | Failure::Runtime(m) => m,
    }
}

/// Builds pipeline jobs from a [`PipelineDefinition`] in the job spec.
pub struct PipelineBuilder;

impl PipelineBuilder {
    fn definition(spec: &JobSpec) -> Result<PipelineDefinition, String> {
        serde_json::from_slice(&spec.definition).map_err(|e| format!("the job's definition is not a pipeline: {e}"))
    }
}

impl JobBuilder for PipelineBuilder {
    fn build(&self, spec: &JobSpec) -> Result<BuiltJob, String> {
        let def = Self::definition(spec)?;
        let env = StreamEnv::new(spec.name.clone());
        let (_, checkpointing) = def.compile(&env, Some(spec.parallelism)).map_err(message)?;
        let graph = env.into_graph().map_err(|e| e.to_string())?;
        Ok(BuiltJob { graph, checkpointing })
    }

    fn restore(&self, spec: &JobSpec, uri: &str) -> Result<RestoredSnapshot, String> {
        let file = Self::definition(spec)?.file()?;
        let storage = storage::open(uri, file.storage.as_ref())?;
        RestoredSnapshot::open(storage, "").map_err(|e| format!("{uri}: {e}"))
    }
}

/// The job spec of a pipeline, checked by compiling it here first (bad input
/// is exit 2 before any process starts), and how it compiled.
pub fn pipeline_spec(
    path: &std::path::Path,
    sets: &[String],
    parallelism: Option<usize>,
    checkpoint_dir: Option<&str>,
    checkpoint_interval: Option<&str>,
    savepoint_dir: Option<&str>,
) -> Result<(JobSpec, Compiled, bool), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::BadInput(format!("{}: cannot read: {e}", path.display())))?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let def = PipelineDefinition {
        path,
        text,
        sets: sets.to_vec(),
        checkpoint_dir: checkpoint_dir.map(str::to_string),
        checkpoint_interval: checkpoint_interval.map(str::to_string),
        savepoint_dir: savepoint_dir.map(str::to_string),
    };
    let file = def.file().map_err(Failure::BadInput)?;
    let env = StreamEnv::new(file.name.clone());
    let (compiled, checkpointing) = def.compile(&env, parallelism)?;
    let spec = JobSpec {
        name: compiled.name.clone(),
        definition: serde_json::to_vec(&def).expect("a definition serializes"),
        parallelism: compiled.parallelism,
    };
    Ok((spec, compiled, checkpointing.is_some()))
}

fn bad(m: impl std::fmt::Display) -> Failure {
    Failure::BadInput(m.to_string())
}

fn duration(flag: &str, value: &str) -> Result<Duration, Failure> {
    parse_duration(value).map_err(|e| bad(format!("{flag}: {e}")))
}

/// How the JobManager restarts and watches, from the command line.
#[derive(clap::Args, Clone, Debug)]
pub struct FailoverArgs {
    /// A TaskManager silent for this long is lost (its tasks restart elsewhere).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    heartbeat_timeout: String,
    /// none | fixed-delay:<delay>:<attempts> | exponential:<initial>:<max>:<attempts>
    #[arg(long, value_name = "STRATEGY", default_value = "fixed-delay:1s:10")]
    restart_strategy: String,
}

impl FailoverArgs {
    fn apply(&self, config: &mut JobManagerConfig) -> Result<(), Failure> {
        config.heartbeat_timeout = duration("--heartbeat-timeout", &self.heartbeat_timeout)?;
        if config.heartbeat_timeout < Duration::from_secs(2) {
            return Err(bad("--heartbeat-timeout: must be at least 2s (TaskManagers send one every second)"));
        }
        config.restart = RestartStrategy::parse(&self.restart_strategy, parse_duration)
            .map_err(|e| bad(format!("--restart-strategy: {e}")))?;
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct JobManagerArgs {
    /// The pipeline file (YAML).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// A Rust job binary's arguments (after `--`): refused here, with a clear error
    /// (a StreamJob with `args` needs its job binary's image, not weir's).
    #[arg(last = true, hide = true)]
    job_args: Vec<String>,
    /// The job's name (overrides the file's `name`).
    #[arg(long)]
    job_name: Option<String>,
    #[arg(long)]
    parallelism: Option<usize>,
    /// Override one key of the pipeline file, e.g. `--set source.count=1000`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    set: Vec<String>,
    #[arg(long, value_name = "URI")]
    checkpoint_dir: Option<String>,
    #[arg(long, value_name = "DURATION")]
    checkpoint_interval: Option<String>,
    /// Where savepoints go (default: the checkpoint directory's `{job}/savepoints/`).
    #[arg(long, value_name = "URI")]
    savepoint_dir: Option<String>,
    /// `latest`, `none`, or a snapshot URI. Default: the latest completed
    /// checkpoint if there is one (a restarted JobManager recovers its job).
    #[arg(long, value_name = "latest|none|URI")]
    restore: Option<String>,
    /// Names this deployment of the job (an operator gives each rollout its own):
    /// checkpoints carry the name, and a JobManager restarted within the same
    /// deployment recovers its latest checkpoint instead of doing `--restore` again.
    #[arg(long, value_name = "NAME")]
    deployment_id: Option<String>,
    /// The address to listen on (REST API and TaskManagers).
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
    #[arg(long, default_value_t = 8081)]
    rest_port: u16,
    #[arg(long, default_value_t = 6123)]
    rpc_port: u16,
    /// After the job ends, keep serving its final state (REST API) until stopped,
    /// instead of exiting: under Kubernetes an exit would restart the JobManager.
    #[arg(long)]
    linger: bool,
    /// Lead only while holding this lock file; a standby waits on it.
    #[arg(long, value_name = "PATH")]
    leader_lock: Option<PathBuf>,
    /// Elect the leader with this Kubernetes Lease (in POD_NAMESPACE, else the client's namespace).
    #[arg(long, value_name = "NAME", conflicts_with = "leader_lock")]
    leader_lease: Option<String>,
    /// How long a leader's Lease holds without renewal (a standby takes over after it).
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    lease_duration: String,
    #[command(flatten)]
    failover: FailoverArgs,
}

#[derive(clap::Args)]
pub struct TaskManagerArgs {
    /// The JobManagers' RPC addresses (host:port, comma-separated): the leading one is used.
    #[arg(long, value_delimiter = ',', required = true)]
    jobmanager: Vec<String>,
    /// Subtask slots (one subtask of each vertex per slot).
    #[arg(long, default_value_t = 1)]
    slots: usize,
    /// The address the data server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
    /// The data server's port (0: any free one).
    #[arg(long, default_value_t = 0)]
    data_port: u16,
    /// The host other TaskManagers reach this one at (default: the address it reaches the JobManager from).
    #[arg(long)]
    advertise_host: Option<String>,
    /// How long to look for a JobManager before giving up.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    connect_timeout: String,
    /// A name for logs and the dashboard (default: host and process id).
    #[arg(long)]
    id: Option<String>,
}

fn socket(host: &str, port: u16, flag: &str) -> Result<std::net::SocketAddr, Failure> {
    format!("{host}:{port}").parse().map_err(|_| bad(format!("{flag}: `{host}` is not an IP address")))
}

pub fn taskmanager(args: TaskManagerArgs) -> Result<(), Failure> {
    if args.slots == 0 {
        return Err(bad("--slots: must be at least 1"));
    }
    let config = TaskManagerConfig {
        jobmanagers: args.jobmanager,
        slots: args.slots,
        data_bind: socket(&args.bind, args.data_port, "--bind")?,
        advertise_host: args.advertise_host,
        connect_timeout: duration("--connect-timeout", &args.connect_timeout)?,
        id: args.id.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        }),
    };
    weir_cluster::taskmanager::run(config, Arc::new(PipelineBuilder)).map_err(|e| match e {
        TaskManagerError::DataServer { .. } => bad(e),
        e => Failure::Runtime(e.to_string()),
    })
}

fn restore_of(flag: Option<&str>, default: InitialRestore) -> InitialRestore {
    match flag {
        None => default,
        Some("latest") => InitialRestore::Latest,
        Some("none") => InitialRestore::None,
        Some(uri) => InitialRestore::Uri(uri.to_string()),
    }
}

fn start_jobmanager(config: JobManagerConfig) -> Result<JobManager, Failure> {
    JobManager::start(config, Arc::new(PipelineBuilder)).map_err(|e| match e {
        JobManagerError::Build(m) => bad(m),
        JobManagerError::Restore(m) => bad(format!("--restore: {m}")),
        e => Failure::Runtime(e.to_string()),
    })
}

pub fn jobmanager(args: JobManagerArgs) -> Result<(), Failure> {
    if !args.job_args.is_empty() {
        return Err(bad(format!(
            "`-- {}`: arguments for a job binary, but this is the weir binary, which runs pipeline files (--pipeline); run the job binary's image instead",
            args.job_args.join(" ")
        )));
    }
    let Some(pipeline) = &args.pipeline else { return Err(bad("--pipeline: required")) };
    let mut sets = args.set.clone();
    if let Some(name) = &args.job_name {
        sets.push(format!("name={name}"));
    }
    let (spec, compiled, _) = pipeline_spec(
        pipeline,
        &sets,
        args.parallelism,
        args.checkpoint_dir.as_deref(),
        args.checkpoint_interval.as_deref(),
        args.savepoint_dir.as_deref(),
    )?;
    let rest_addr = socket(&args.bind, args.rest_port, "--bind")?;
    let rpc_addr = socket(&args.bind, args.rpc_port, "--bind")?;
    let _leadership = match &args.leader_lock {
        Some(path) => {
            let who = format!("pid {} rpc {rpc_addr} rest {rest_addr}", std::process::id());
            let held = weir_cluster::leader::acquire(path, &who)
                .map_err(|e| bad(format!("--leader-lock {}: {e}", path.display())))?;
            eprintln!("weir: leading (holding {})", path.display());
            Some(held)
        }
        None => None,
    };
    if let Some(lease) = &args.leader_lease {
        let duration = duration("--lease-duration", &args.lease_duration)?;
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let identity = format!("{}-{}", host.trim(), std::process::id());
        let election =
            weir_lease::Election::new(lease, identity, duration).map_err(|e| bad(format!("--leader-lease: {e}")))?;
        election.lead().map_err(|e| Failure::Runtime(format!("--leader-lease: {e}")))?;
    }
    let mut config = JobManagerConfig::new(spec, rpc_addr);
    config.restore = restore_of(args.restore.as_deref(), InitialRestore::LatestIfAny);
    config.deployment = args.deployment_id.clone();
    // Lingering is for Kubernetes, which restarts a TaskManager that exits.
    config.release_taskmanagers = !args.linger;
    args.failover.apply(&mut config)?;
    eprintln!(
        "weir: JobManager for {} at parallelism {}, TaskManagers register at {rpc_addr}",
        compiled.name, compiled.parallelism
    );
    let started = Instant::now();
    let jm = Arc::new(start_jobmanager(config)?);
    let rest = RestServer::start(rest_addr, Arc::new(ClusterJob(jm.clone())))
        .map_err(|e| bad(format!("--rest-port {}: {e}", args.rest_port)))?;
    eprintln!("weir: REST API and dashboard on http://{}/", rest.addr);
    install_ctrl_c(jm.clone());
    let view = wait(jm, &rest);
    let result = finish(&view, started);
    if args.linger {
        eprintln!("weir: serving the job's final state until stopped");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    result
}

/// Waits for the job to end, then lets the REST API answer a little longer.
fn wait(jm: Arc<JobManager>, rest: &RestServer) -> ClusterView {
    while !jm.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    rest.linger(Duration::from_secs(3));
    jm.view()
}

fn finish(view: &ClusterView, started: Instant) -> Result<(), Failure> {
    let events: u64 = view
        .layout
        .iter()
        .zip(&view.metrics)
        .filter(|(c, _)| c.is_source)
        .flat_map(|(_, m)| m.iter().map(|s| s.records_in))
        .sum();
    eprintln!(
        "weir: {} {} in {:.1} s: {events} events read, {} restarts",
        view.name,
        view.state,
        started.elapsed().as_secs_f64(),
        view.restarts
    );
    if let Some(last) = view
        .checkpoints
        .iter()
        .rev()
        .find(|c| c.status == weir::core::checkpoint::coordinator::CheckpointStatus::Completed)
    {
        eprintln!("weir: last snapshot: {} (resume with --restore latest or --restore {})", last.path, last.path);
    }
    match view.state {
        JobState::Finished | JobState::Cancelled => Ok(()),
        _ => Err(Failure::Runtime(format!(
            "job {} {}: {}",
            view.name,
            view.state,
            view.failure.clone().unwrap_or_else(|| "no reason recorded".into())
        ))),
    }
}

/// First Ctrl-C (or SIGTERM): a savepoint and stop (with checkpointing), else
/// cancel; once the job has ended, leave. Second: leave at once.
fn install_ctrl_c(jm: Arc<JobManager>) {
    let stops = AtomicBool::new(false);
    let _ = ctrlc::set_handler(move || {
        if stops.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        if jm.is_finished() {
            std::process::exit(0);
        }
        eprintln!("\nweir: taking a savepoint, then stopping (Ctrl-C again to abort)");
        match jm.savepoint(true, false).map(|rx| rx.recv()) {
            Ok(Ok(Ok(uri))) => eprintln!("weir: savepoint written to {uri}"),
            Ok(Ok(Err(e))) => {
                eprintln!("weir: {e}; cancelling");
                jm.cancel();
            }
            _ => jm.cancel(),
        }
    });
}

/// `weir run --taskmanagers N`: the JobManager here, N TaskManager processes.
pub fn run_local_cluster(args: &run::RunArgs, taskmanagers: usize, failover: &FailoverArgs) -> Result<(), Failure> {
    if taskmanagers == 0 {
        return Err(bad("--taskmanagers: must be at least 1"));
    }
    let (spec, compiled, checkpointing) = pipeline_spec(
        &args.pipeline,
        &args.set,
        args.parallelism,
        args.checkpoint_dir.as_deref(),
        args.checkpoint_interval.as_deref(),
        args.savepoint_dir.as_deref(),
    )?;
    let restore = restore_of(args.restore.as_deref(), InitialRestore::None);
    if restore != InitialRestore::None && !checkpointing && restore == InitialRestore::Latest {
        return Err(bad("--restore latest: needs a checkpoint directory to look in"));
    }
    let slots = compiled.parallelism.div_ceil(taskmanagers);
    let mut config = JobManagerConfig::new(spec, "127.0.0.1:0".parse().expect("an address"));
    config.restore = restore;
    failover.apply(&mut config)?;
    eprintln!(
        "weir: running {} at parallelism {} on {taskmanagers} TaskManager processes ({slots} slots each), output to {}",
        compiled.name, compiled.parallelism, compiled.sink_description
    );
    let started = Instant::now();
    let jm = Arc::new(start_jobmanager(config)?);
    let rpc = jm.rpc_addr().to_string();
    let supervisor = Supervisor::start(taskmanagers, slots, rpc)?;
    let rest_addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.rest_port.unwrap_or(8081)));
    let rest = match RestServer::start(rest_addr, Arc::new(ClusterJob(jm.clone()))) {
        Ok(r) => {
            eprintln!("weir: REST API and dashboard on http://{}/ (job {})", r.addr, compiled.name);
            Some(r)
        }
        Err(e) if args.rest_port.is_none() => {
            eprintln!("weir: REST API not served: {rest_addr}: {e} (choose a port with --rest-port)");
            None
        }
        Err(e) => {
            jm.cancel();
            return Err(bad(format!("--rest-port {}: {e}", rest_addr.port())));
        }
    };
    install_ctrl_c(jm.clone());
    let view = match &rest {
        Some(rest) => wait(jm, rest),
        None => {
            while !jm.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
            }
            jm.view()
        }
    };
    supervisor.stop();
    finish(&view, started)
}

/// Keeps N TaskManager processes running; one that dies is started again.
struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Supervisor {
    fn start(n: usize, slots: usize, jobmanager: String) -> Result<Supervisor, Failure> {
        let exe =
            std::env::current_exe().map_err(|e| Failure::Runtime(format!("cannot find the weir executable: {e}")))?;
        let spawn = move |i: usize| -> std::io::Result<Child> {
            Command::new(&exe)
                .args(["taskmanager", "--jobmanager", &jobmanager, "--slots", &slots.to_string()])
                .args(["--bind", "127.0.0.1", "--id", &format!("tm-{i}")])
                .spawn()
        };
        let mut children = Vec::new();
        for i in 0..n {
            children.push(spawn(i).map_err(|e| Failure::Runtime(format!("cannot start a TaskManager: {e}")))?);
        }
        let children = Arc::new(Mutex::new(children));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    let mut children = children.lock().expect("children poisoned");
                    for (i, child) in children.iter_mut().enumerate() {
                        // Exit status 0: the JobManager shut it down (the job is over).
                        if let Ok(Some(status)) = child.try_wait()
                            && !status.success()
                            && !flag.load(Ordering::Relaxed)
                        {
                            eprintln!("weir: TaskManager tm-{i} exited ({status}); starting a new one");
                            match spawn(i) {
                                Ok(c) => *child = c,
                                Err(e) => eprintln!("weir: cannot start a TaskManager: {e}"),
                            }
                        }
                    }
                }
                // The JobManager told them to shut down; give them a moment, then make sure.
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut children = children.lock().expect("children poisoned");
                for child in children.iter_mut() {
                    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                }
            })
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        Ok(Supervisor { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
