//! Pipelines on a cluster of processes: `weir jobmanager`, `weir taskmanager`,
//! and `weir run --taskmanagers N` (a JobManager in this process and N
//! TaskManager processes on loopback, restarted when they die, as Kubernetes
//! restarts a pod).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_api::Restore;
use weir_api::launch::{FailoverOptions, JobManagerOptions, TaskManagerOptions};

use serde::{Deserialize, Serialize};
use weir::core::checkpoint::metadata::RestoredSnapshot;
use weir::prelude::StreamEnv;
use weir_cluster::jobmanager::JobManagerConfig;
use weir_cluster::{BuiltJob, JobBuilder, JobSpec};
use weir_pipeline::compile::{Compiled, Overrides, compile};
use weir_pipeline::config::{PipelineFile, parse};
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

/// `weir jobmanager`: a pipeline's JobManager, started by the launcher.
pub fn jobmanager(options: JobManagerOptions) -> Result<(), Failure> {
    if !options.job_args.is_empty() {
        return Err(bad(format!(
            "`-- {}`: arguments for a job binary, but this is the weir binary, which runs pipeline files (--pipeline); run the job binary's image instead",
            options.job_args.join(" ")
        )));
    }
    let Some(pipeline) = &options.pipeline else { return Err(bad("--pipeline: required")) };
    let mut sets = options.set.clone();
    if let Some(name) = &options.job_name {
        sets.push(format!("name={name}"));
    }
    let interval = options.checkpoint_interval.map(weir_api::format_duration);
    let (spec, _, _) = pipeline_spec(
        pipeline,
        &sets,
        options.parallelism,
        options.checkpoint_dir.as_deref(),
        interval.as_deref(),
        options.savepoint_dir.as_deref(),
    )?;
    weir_launch::jobmanager::run("weir", &options, spec, Arc::new(PipelineBuilder))
}

/// `weir taskmanager`: runs the pipelines its JobManager deploys.
pub fn taskmanager(options: TaskManagerOptions) -> Result<(), Failure> {
    weir_launch::taskmanager::run(&options, Arc::new(PipelineBuilder))
}

/// `weir run --taskmanagers N`: the JobManager here, N TaskManager processes.
pub fn run_local_cluster(args: &run::RunArgs, taskmanagers: usize, failover: &FailoverOptions) -> Result<(), Failure> {
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
    // `weir run` starts fresh unless told otherwise.
    let restore = args.restore.clone().unwrap_or(Restore::Fresh);
    if restore == Restore::Latest && !checkpointing {
        return Err(bad("--restore latest: needs a checkpoint directory to look in"));
    }
    let slots = compiled.parallelism.div_ceil(taskmanagers);
    let mut config = JobManagerConfig::new(spec, "127.0.0.1:0".parse().expect("an address"));
    config.restore = restore;
    weir_launch::jobmanager::apply_failover(failover, &mut config)?;
    eprintln!(
        "weir: running {} at parallelism {} on {taskmanagers} TaskManager processes ({slots} slots each), output to {}",
        compiled.name, compiled.parallelism, compiled.sink_description
    );
    let started = Instant::now();
    let jm = Arc::new(weir_launch::jobmanager::start(config, Arc::new(PipelineBuilder))?);
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
    weir_launch::stop_on_signal("weir", jm.clone());
    let view = match &rest {
        Some(rest) => weir_launch::jobmanager::wait(&jm, rest),
        None => {
            while !jm.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
            }
            jm.view()
        }
    };
    supervisor.stop();
    weir_launch::jobmanager::finish("weir", &view, started)
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
            let mut options = TaskManagerOptions::new(vec![jobmanager.clone()]);
            options.slots = slots;
            options.bind = "127.0.0.1".into();
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
