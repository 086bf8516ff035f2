//! Run a Rust job binary on a cluster: the same binary is the JobManager and
//! each TaskManager, chosen by its first argument, as the `weir` binary is
//! for pipeline files.
//!
//! ```no_run
//! use weir::prelude::*;
//! use weir_workloads::WorkloadStreams;
//!
//! fn main() -> std::process::ExitCode {
//!     weir::cluster::main("my-job", |env| {
//!         env.orders(Some(1_000_000), None).filter(|o| o.amount > 100).write_json("/data/out/big-orders");
//!     })
//! }
//! ```
//!
//! ```text
//! my-job                                     run here, in this process
//! my-job jobmanager [--job-name NAME] [--parallelism N]
//!                   [--checkpoint-dir URI --checkpoint-interval 10s] [--savepoint-dir URI]
//!                   [--bind 0.0.0.0] [--rpc-port 6123] [--rest-port 8081]
//!                   [--restore latest|none|URI] [--deployment-id ID]
//!                   [--leader-lock PATH | --leader-lease NAME [--lease-duration 15s]]
//!                   [--heartbeat-timeout 10s] [--restart-strategy exponential:1s:1m:unlimited]
//!                   [--linger] [-- JOB ARGS...]
//! my-job taskmanager --jobmanager HOST:PORT[,HOST:PORT] [--slots 1] [--bind 0.0.0.0]
//!                   [--data-port 0] [--advertise-host HOST] [--connect-timeout 60s] [--id ID]
//! ```
//!
//! These are the `weir` binary's flags ([`weir_api::launch`]), started by the
//! same launcher (`weir-launch`), and the flags the Kubernetes operator gives a
//! StreamJob's pods (a StreamJob with `args` runs the image's binary with them
//! after `--`), so a binary built on this runs as a StreamJob as it is.
//!
//! Every process calls the job function to build the same graph; the
//! JobManager plans it, the TaskManagers run their share of it. The job's
//! arguments reach every process ([`job_args`] inside the job function).
//! Checkpoints go to a directory all processes see (a shared volume), or to
//! S3 with the crate's `s3` feature (endpoint, region and credentials from
//! the AWS environment; `WEIR_S3_PATH_STYLE`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use weir_api::launch::{JobManagerOptions, Process};
use weir_cluster::{BuiltJob, JobBuilder, JobSpec};
use weir_core::checkpoint::coordinator::CheckpointConfig;
use weir_core::checkpoint::metadata::RestoredSnapshot;
use weir_core::checkpoint::storage::CheckpointStorage;
use weir_launch::LaunchError;
use weir_launch::storage::StorageSettings;

use crate::env::StreamEnv;

type JobFn = dyn Fn(&StreamEnv) + Send + Sync;

/// What the processes agree on beyond the code: checkpointing and the job's arguments.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Definition {
    /// URIs: a path, `file:///path` or (feature `s3`) `s3://bucket/prefix`.
    checkpoint_dir: Option<String>,
    checkpoint_interval_ms: Option<u64>,
    #[serde(default)]
    savepoint_dir: Option<String>,
    #[serde(default)]
    args: Vec<String>,
}

/// The job's arguments in this process (what followed `--`), for the job function.
static JOB_ARGS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// The job's arguments: what followed `--` on the JobManager's command line
/// (in a StreamJob, its `args`), the same in every process of the job.
pub fn job_args() -> Vec<String> {
    JOB_ARGS.read().map(|a| a.clone()).unwrap_or_default()
}

/// The storage at `uri`; S3 settings come from the environment.
fn storage(uri: &str) -> Result<Arc<dyn CheckpointStorage>, String> {
    weir_launch::storage::open(uri, &StorageSettings::default()).map_err(|e| e.to_string())
}

struct ClosureBuilder(Arc<JobFn>);

impl JobBuilder for ClosureBuilder {
    fn build(&self, spec: &JobSpec) -> Result<BuiltJob, String> {
        let def: Definition = serde_json::from_slice(&spec.definition).map_err(|e| e.to_string())?;
        *JOB_ARGS.write().map_err(|e| e.to_string())? = def.args.clone();
        let env = StreamEnv::new(spec.name.clone());
        env.set_parallelism(spec.parallelism);
        (self.0)(&env);
        let graph = env.into_graph().map_err(|e| e.to_string())?;
        let checkpointing = match (&def.checkpoint_dir, def.checkpoint_interval_ms) {
            (Some(dir), Some(ms)) => {
                let mut config = CheckpointConfig::new(storage(dir)?, Duration::from_millis(ms));
                config.savepoints = def.savepoint_dir.as_deref().map(storage).transpose()?;
                Some(config)
            }
            _ => None,
        };
        Ok(BuiltJob { graph, checkpointing })
    }

    fn restore(&self, _spec: &JobSpec, uri: &str) -> Result<RestoredSnapshot, String> {
        let (root, dir) = weir_core::checkpoint::metadata::split_snapshot_uri(uri);
        RestoredSnapshot::open(storage(root)?, dir).map_err(|e| e.to_string())
    }
}

/// Runs the job as its arguments say (see the module's documentation); the
/// exit code is 0 when the job finished, 1 when it failed, 2 for bad arguments.
pub fn main(name: &str, job: impl Fn(&StreamEnv) + Send + Sync + 'static) -> ExitCode {
    let job: Arc<JobFn> = Arc::new(job);
    let result = match std::env::args().len() {
        1 => {
            let env = StreamEnv::new(name);
            job(&env);
            env.execute().map_err(|e| LaunchError::Runtime(e.to_string()))
        }
        _ => match Process::parse() {
            Process::Jobmanager(options) => jobmanager(name, job, &options),
            Process::Taskmanager(options) => {
                weir_launch::taskmanager::run_process(&options, Arc::new(ClosureBuilder(job)))
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The job spec of a job binary's JobManager: its name, and what every
/// process needs to build it (checkpointing and the job's arguments).
fn job_spec(name: &str, options: &JobManagerOptions) -> Result<JobSpec, LaunchError> {
    if options.pipeline.is_some() || !options.set.is_empty() {
        return Err(LaunchError::BadInput(
            "--pipeline and --set are for the weir binary: a job binary has its job built in".into(),
        ));
    }
    let definition = Definition {
        checkpoint_dir: options.checkpoint_dir.clone(),
        checkpoint_interval_ms: options.checkpoint_interval.map(|d| d.as_millis() as u64),
        savepoint_dir: options.savepoint_dir.clone(),
        args: options.job_args.clone(),
    };
    match (&definition.checkpoint_dir, definition.checkpoint_interval_ms) {
        (Some(_), None) | (None, Some(_)) => {
            return Err(LaunchError::BadInput("--checkpoint-dir and --checkpoint-interval go together".into()));
        }
        (_, Some(0)) => return Err(LaunchError::BadInput("--checkpoint-interval: must be longer than zero".into())),
        _ => {}
    }
    for (flag, uri) in [("checkpoint-dir", &definition.checkpoint_dir), ("savepoint-dir", &definition.savepoint_dir)] {
        if let Some(uri) = uri {
            storage(uri).map_err(|e| LaunchError::BadInput(format!("--{flag}: {e}")))?;
        }
    }
    let parallelism = options.parallelism.unwrap_or(1);
    if parallelism == 0 {
        return Err(LaunchError::BadInput("--parallelism: must be at least 1".into()));
    }
    Ok(JobSpec::new(
        options.job_name.clone().unwrap_or_else(|| name.to_string()),
        serde_json::to_vec(&definition).expect("a definition serializes"),
        parallelism,
    ))
}

fn jobmanager(name: &str, job: Arc<JobFn>, options: &JobManagerOptions) -> Result<(), LaunchError> {
    let spec = job_spec(name, options)?;
    weir_launch::jobmanager::run(name, options, spec, Arc::new(ClosureBuilder(job)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> JobManagerOptions {
        let argv = ["my-job", "jobmanager"].iter().chain(args).copied();
        match Process::try_parse_from(argv).unwrap() {
            Process::Jobmanager(o) => o,
            Process::Taskmanager(_) => unreachable!(),
        }
    }

    #[test]
    fn every_duration_form_of_a_streamjob_is_taken() {
        // A StreamJob's `checkpointing.interval: 1h` reaches a job binary as is.
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().display().to_string();
        for (interval, ms) in [("1h", 3_600_000), ("1m30s", 90_000), ("500ms", 500)] {
            let o = options(&["--checkpoint-dir", &dir, "--checkpoint-interval", interval, "--", "--min", "5"]);
            let spec = job_spec("my-job", &o).unwrap();
            let def: Definition = serde_json::from_slice(&spec.definition).unwrap();
            assert_eq!(def.checkpoint_interval_ms, Some(ms), "{interval}");
            assert_eq!(def.args, ["--min", "5"]);
        }
    }

    #[test]
    fn a_job_binary_refuses_what_it_cannot_do_by_flag() {
        let e = job_spec("j", &options(&["--pipeline", "p.yaml"])).unwrap_err();
        assert!(e.to_string().starts_with("--pipeline"), "{e}");
        let e = job_spec("j", &options(&["--checkpoint-interval", "1s"])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = job_spec("j", &options(&["--checkpoint-dir", "hdfs://x", "--checkpoint-interval", "1s"])).unwrap_err();
        assert!(e.to_string().starts_with("--checkpoint-dir"), "{e}");
        let spec = job_spec("j", &options(&["--job-name", "renamed", "--parallelism", "3"])).unwrap();
        assert_eq!((spec.name.as_str(), spec.parallelism), ("renamed", 3));
    }
}
