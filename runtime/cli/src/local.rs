//! `weir run`: a pipeline on a cluster of its own, as Flink's MiniCluster.
//!
//! The JobManager runs in this process, and its TaskManager on threads beside
//! it or, with `--taskmanagers N`, as N processes on loopback, restarted when
//! they die (as Kubernetes restarts a pod). Either way the job runs on the one
//! runtime a cluster runs: the REST API, savepoints, rescale and restart
//! strategies are those of `weir jobmanager`.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_api::Restore;
use weir_api::launch::{FailoverOptions, TaskManagerOptions, VertexParallelism};
use weir_cluster::auth::Secret;
use weir_cluster::jobmanager::{JobManager, JobManagerConfig};
use weir_cluster::restart::RestartStrategy;
use weir_pipeline::compile::PipelineStats;
use weir_rest::{ClusterJob, RestServer};

use crate::Failure;
use crate::cluster::{PipelineBuilder, PipelineJob, pipeline_spec};
use crate::run::{Progress, RunArgs};

fn bad(m: impl std::fmt::Display) -> Failure {
    Failure::BadInput(m.to_string())
}

/// Runs `args`'s pipeline to its end (or a stop), and reports how it went.
pub fn run(args: &RunArgs) -> Result<(), Failure> {
    if args.taskmanagers == Some(0) {
        return Err(bad("--taskmanagers: must be at least 1"));
    }
    let sets = [args.set.clone(), args.state.overrides()].concat();
    let job = pipeline_spec(
        &args.pipeline,
        &sets,
        args.parallelism,
        args.checkpoint_dir.as_deref(),
        args.checkpoint_interval.as_deref(),
        args.savepoint_dir.as_deref(),
    )?;
    let config = jobmanager_config(args, &job)?;
    // The REST API asks for the JobManager's secret (if any) on requests that change the job.
    let secret = config.secret.clone();
    announce(args, &job);
    let started = Instant::now();
    let jm = Arc::new(weir_launch::jobmanager::start(config, Arc::new(PipelineBuilder::default()))?);
    if let Some(from) = jm.view().restored_from {
        eprintln!("weir: restoring from {from}");
    }
    let stats = PipelineStats::default();
    let (taskmanagers, rest) = match start_around(args, &job, &jm, &stats, secret) {
        Ok(started) => started,
        Err(e) => {
            jm.cancel();
            return Err(e);
        }
    };
    weir_launch::stop_on_signal("weir", jm.clone(), weir_launch::OnSignal::Stop);
    let progress = (!args.quiet).then(|| Progress::start(jm.clone(), stats.rows_out.clone(), started));
    wait(&jm, &taskmanagers);
    if let Some(rest) = &rest {
        rest.linger(Duration::from_secs(3));
    }
    if let Some(progress) = progress {
        progress.stop();
    }
    let view = jm.view();
    let in_process = matches!(taskmanagers, TaskManagers::InProcess(_));
    taskmanagers.stop();
    let detail = match in_process {
        true => written(&job, &stats),
        false => format!("output to {}, ", job.compiled.sink_description),
    };
    weir_launch::jobmanager::finish("weir", &view, started, &detail)
}

/// The JobManager's settings: a fresh start unless `--restore` says otherwise,
/// and, without checkpointing, no restarts unless asked for (as in Flink: a
/// restart without a checkpoint would run the job again from its start, and
/// write its output twice).
fn jobmanager_config(args: &RunArgs, job: &PipelineJob) -> Result<JobManagerConfig, Failure> {
    let restore = args.restore.clone().unwrap_or(Restore::Fresh);
    if restore == Restore::Latest && job.checkpointing.is_none() {
        return Err(bad("--restore latest: needs a checkpoint directory to look in"));
    }
    let mut spec = job.spec.clone();
    spec.vertex_parallelism.extend(VertexParallelism::map(&args.vertex_parallelism));
    let mut config = JobManagerConfig::new(spec, SocketAddr::from(([127, 0, 0, 1], 0)));
    config.restore = restore;
    config.secret = weir_launch::secret(args.auth_secret_file.as_deref())?;
    weir_launch::jobmanager::apply_failover(&args.failover, &mut config)?;
    if job.checkpointing.is_none() && args.failover.restart_strategy == FailoverOptions::DEFAULT_RESTART_STRATEGY {
        config.restart = RestartStrategy::None;
    }
    Ok(config)
}

fn announce(args: &RunArgs, job: &PipelineJob) {
    let c = &job.compiled;
    let on = match args.taskmanagers {
        Some(n) => format!(" on {n} TaskManager processes"),
        None => String::new(),
    };
    eprintln!("weir: running {} at parallelism {}{on}, output to {}", c.name, c.parallelism, c.sink_description);
    if let Some((dir, config)) = &job.checkpointing {
        eprintln!("weir: checkpoints every {:?} to {dir}/{}", config.interval, c.name);
    }
    if !args.quiet {
        eprint!("{}", job.plan);
    }
}

/// The TaskManagers, then the REST API.
fn start_around(
    args: &RunArgs,
    job: &PipelineJob,
    jm: &Arc<JobManager>,
    stats: &PipelineStats,
    secret: Option<Secret>,
) -> Result<(TaskManagers, Option<RestServer>), Failure> {
    let taskmanagers = TaskManagers::start(args, job, jm, stats)?;
    match serve_rest(args.rest_port, jm, secret) {
        Ok(rest) => Ok((taskmanagers, rest)),
        Err(e) => {
            jm.cancel();
            taskmanagers.stop();
            Err(e)
        }
    }
}

/// Serves the REST API and dashboard while the job runs. The default port may
/// be taken (another job on this machine): then the job runs without it; an
/// explicit port must work. With the job's `secret`, requests that change
/// the job must carry its bearer token.
fn serve_rest(port: Option<u16>, jm: &Arc<JobManager>, secret: Option<Secret>) -> Result<Option<RestServer>, Failure> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(8081)));
    match RestServer::start(addr, Arc::new(ClusterJob(jm.clone())), secret) {
        Ok(server) => {
            eprintln!("weir: REST API and dashboard on http://{}/ (job {})", server.addr, jm.name());
            Ok(Some(server))
        }
        Err(e) if port.is_none() => {
            eprintln!("weir: REST API not served: {addr}: {e} (choose a port with --rest-port)");
            Ok(None)
        }
        Err(e) => Err(bad(format!("--rest-port {}: {e}", addr.port()))),
    }
}

/// Waits for the job to end. A TaskManager thread that ended before it (it
/// could not reach the JobManager) leaves the job no slots: it is cancelled.
fn wait(jm: &JobManager, taskmanagers: &TaskManagers) {
    let mut cancelled = false;
    while !jm.is_finished() {
        if !cancelled && let Some(why) = taskmanagers.lost() {
            eprintln!("weir: the TaskManager ended: {why}; cancelling the job");
            jm.cancel();
            cancelled = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the in-process TaskManager's jobs counted.
fn written(job: &PipelineJob, stats: &PipelineStats) -> String {
    let rows = stats.rows_out.load(Ordering::Relaxed);
    let malformed = stats.malformed.load(Ordering::Relaxed);
    let skipped = match malformed {
        0 => String::new(),
        n => format!("{n} malformed records skipped, "),
    };
    format!("{rows} rows to {}, {skipped}", job.compiled.sink_description)
}

/// Each of `n` TaskManager processes has enough slots for the job between
/// them: together, its highest vertex parallelism (slots are shared).
fn slots_each(jm: &JobManager, n: usize) -> usize {
    weir_cluster::schedule::slots_needed(&jm.view().layout).div_ceil(n).max(1)
}

/// Where the job's subtasks run.
enum TaskManagers {
    /// One TaskManager on threads of this process, with a slot for every
    /// subtask the job could rescale to (its max parallelism).
    InProcess(JoinHandle<Result<(), Failure>>),
    /// TaskManager processes on loopback.
    Processes(Supervisor),
}

impl TaskManagers {
    fn start(
        args: &RunArgs,
        job: &PipelineJob,
        jm: &JobManager,
        stats: &PipelineStats,
    ) -> Result<TaskManagers, Failure> {
        let mut options = TaskManagerOptions::new(vec![jm.rpc_addr().to_string()]);
        options.bind = "127.0.0.1".into();
        options.auth_secret_file = args.auth_secret_file.clone();
        if let Some(n) = args.taskmanagers {
            options.slots = slots_each(jm, n);
            eprintln!("weir: {n} TaskManager processes, {} slots each", options.slots);
            return Supervisor::start(n, options).map(TaskManagers::Processes);
        }
        options.slots = job.max_parallelism as usize;
        options.id = Some("local".into());
        let builder = Arc::new(PipelineBuilder::counting(stats.clone()));
        std::thread::Builder::new()
            .name("taskmanager".into())
            .spawn(move || weir_launch::taskmanager::run(&options, builder))
            .map(TaskManagers::InProcess)
            .map_err(|e| Failure::Runtime(format!("cannot start the TaskManager: {e}")))
    }

    /// Why the in-process TaskManager ended, if it has (processes are restarted instead).
    fn lost(&self) -> Option<String> {
        match self {
            TaskManagers::InProcess(thread) if thread.is_finished() => Some("it stopped".into()),
            _ => None,
        }
    }

    /// Once the job is over: the JobManager told them to shut down.
    fn stop(self) {
        match self {
            TaskManagers::InProcess(thread) => {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !thread.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if thread.is_finished()
                    && let Ok(Err(e)) = thread.join()
                {
                    eprintln!("weir: the TaskManager failed: {e}");
                }
            }
            TaskManagers::Processes(supervisor) => supervisor.stop(),
        }
    }
}

/// Keeps N TaskManager processes running; one that dies is started again.
struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Supervisor {
    /// Starts `n` TaskManager processes with `options` (each with its own id).
    fn start(n: usize, options: TaskManagerOptions) -> Result<Supervisor, Failure> {
        let exe =
            std::env::current_exe().map_err(|e| Failure::Runtime(format!("cannot find the weir executable: {e}")))?;
        let spawn = move |i: usize| -> std::io::Result<Child> {
            let mut options = options.clone();
            options.id = Some(format!("tm-{i}"));
            Command::new(&exe).arg("taskmanager").args(options.to_args()).spawn()
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
