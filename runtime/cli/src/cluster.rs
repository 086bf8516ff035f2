//! Pipelines on a cluster: what every process builds a pipeline job from
//! ([`PipelineDefinition`], [`PipelineBuilder`]), the job checked before
//! anything starts ([`pipeline_spec`]), and the `weir jobmanager` and `weir
//! taskmanager` processes. `weir run` runs the same cluster in one process
//! (`local`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir::core::checkpoint::coordinator::CheckpointConfig;
use weir::core::checkpoint::metadata::RestoredSnapshot;
use weir::prelude::StreamEnv;
use weir_api::launch::{JobManagerOptions, TaskManagerOptions};
use weir_cluster::{BuiltJob, JobBuilder, JobSpec};
use weir_pipeline::compile::{Compiled, Overrides, PipelineStats, compile_counted};
use weir_pipeline::config::{PipelineFile, parse};

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

    /// Compiles the pipeline at `parallelism` (or the file's) into `env`,
    /// counting into `stats`; with the checkpoint directory (as given) and settings.
    fn compile(
        &self,
        env: &StreamEnv,
        parallelism: Option<usize>,
        stats: &PipelineStats,
    ) -> Result<(Compiled, Option<(String, CheckpointConfig)>), Failure> {
        let file = self.file().map_err(Failure::BadInput)?;
        let checkpoints = run::checkpointing(
            self.checkpoint_dir.as_deref(),
            self.checkpoint_interval.as_deref(),
            self.savepoint_dir.as_deref(),
            &file,
        )?;
        let overrides = Overrides { parallelism, checkpointing: Some(checkpoints.is_some()) };
        let compiled =
            compile_counted(&self.path, &file, env, &overrides, stats).map_err(|e| Failure::BadInput(e.to_string()))?;
        Ok((compiled, checkpoints))
    }
}

fn message(f: Failure) -> String {
    match f {
        Failure::BadInput(m) | Failure::Runtime(m) => m,
    }
}

/// Builds pipeline jobs from a [`PipelineDefinition`] in the job spec; the
/// jobs it builds count rows and malformed records into its stats.
#[derive(Default)]
pub struct PipelineBuilder {
    stats: PipelineStats,
}

impl PipelineBuilder {
    /// A builder whose jobs count into `stats` (a TaskManager in the process
    /// that reports them).
    pub fn counting(stats: PipelineStats) -> Self {
        PipelineBuilder { stats }
    }

    fn definition(spec: &JobSpec) -> Result<PipelineDefinition, String> {
        serde_json::from_slice(&spec.definition).map_err(|e| format!("the job's definition is not a pipeline: {e}"))
    }
}

impl JobBuilder for PipelineBuilder {
    fn build(&self, spec: &JobSpec) -> Result<BuiltJob, String> {
        let def = Self::definition(spec)?;
        let env = StreamEnv::new(spec.name.clone());
        let (_, checkpointing) = def.compile(&env, Some(spec.parallelism), &self.stats).map_err(message)?;
        let graph = env.into_graph().map_err(|e| e.to_string())?;
        Ok(BuiltJob { graph, checkpointing: checkpointing.map(|(_, c)| c) })
    }

    fn restore(&self, spec: &JobSpec, uri: &str) -> Result<RestoredSnapshot, String> {
        let file = Self::definition(spec)?.file()?;
        // Rooted at the job's directory, where an incremental checkpoint's shared files are.
        let (root, dir) = weir::core::checkpoint::metadata::split_snapshot_uri(uri);
        let storage = storage::open(root, file.storage.as_ref())?;
        RestoredSnapshot::open(storage, dir).map_err(|e| format!("{uri}: {e}"))
    }
}

/// A pipeline as the process that launches it checked and planned it.
pub struct PipelineJob {
    /// What the JobManager and every TaskManager build the job from.
    pub spec: JobSpec,
    pub compiled: Compiled,
    /// The checkpoint directory (as given) and the settings, with checkpointing.
    pub checkpointing: Option<(String, CheckpointConfig)>,
    /// The job graph, for people.
    pub plan: String,
    pub max_parallelism: u32,
}

/// The job spec of a pipeline, checked by compiling it here first (bad input
/// is exit 2 before any process starts; messages name the file as given).
pub fn pipeline_spec(
    path: &Path,
    sets: &[String],
    parallelism: Option<usize>,
    checkpoint_dir: Option<&str>,
    checkpoint_interval: Option<&str>,
    savepoint_dir: Option<&str>,
) -> Result<PipelineJob, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::BadInput(format!("{}: cannot read: {e}", path.display())))?;
    let mut def = PipelineDefinition {
        path: path.to_path_buf(),
        text,
        sets: sets.to_vec(),
        checkpoint_dir: checkpoint_dir.map(str::to_string),
        checkpoint_interval: checkpoint_interval.map(str::to_string),
        savepoint_dir: savepoint_dir.map(str::to_string),
    };
    let file = def.file().map_err(Failure::BadInput)?;
    let env = StreamEnv::new(file.name.clone());
    let (compiled, checkpointing) = def.compile(&env, parallelism, &PipelineStats::default())?;
    // A TaskManager started elsewhere finds what the file names relative to it.
    def.path = std::path::absolute(path).unwrap_or(def.path);
    let spec = JobSpec::new(
        compiled.name.clone(),
        serde_json::to_vec(&def).expect("a definition serializes"),
        compiled.parallelism,
    );
    Ok(PipelineJob { spec, compiled, checkpointing, plan: env.describe(), max_parallelism: env.max_parallelism() })
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
    let job = pipeline_spec(
        pipeline,
        &sets,
        options.parallelism,
        options.checkpoint_dir.as_deref(),
        interval.as_deref(),
        options.savepoint_dir.as_deref(),
    )?;
    weir_launch::jobmanager::run("weir", &options, job.spec, Arc::new(PipelineBuilder::default()))
}

/// `weir taskmanager`: runs the pipelines its JobManager deploys.
pub fn taskmanager(options: TaskManagerOptions) -> Result<(), Failure> {
    weir_launch::taskmanager::run_process(&options, Arc::new(PipelineBuilder::default()))
}
