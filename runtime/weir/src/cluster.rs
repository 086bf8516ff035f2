//! Run a Rust job binary on a cluster: the same binary is the JobManager and
//! each TaskManager, chosen by its first argument, as the `weir` binary is
//! for pipeline files.
//!
//! ```no_run
//! use weir::prelude::*;
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
//!                   [--restore latest|none|URI] [--deployment-id ID] [--leader-lock PATH]
//!                   [--linger] [-- JOB ARGS...]
//! my-job taskmanager --jobmanager HOST:PORT[,HOST:PORT] [--slots 1] [--bind 0.0.0.0]
//! ```
//!
//! These are the flags the Kubernetes operator gives a StreamJob's pods (a
//! StreamJob with `args` runs the image's binary with them after `--`), so a
//! binary built on this runs as a StreamJob as it is.
//!
//! Every process calls the job function to build the same graph; the
//! JobManager plans it, the TaskManagers run their share of it. The job's
//! arguments reach every process ([`job_args`] inside the job function).
//! Checkpoints go to a directory all processes see (a shared volume), or to
//! S3 with the crate's `s3` feature (endpoint, region and credentials from
//! the AWS environment; `WEIR_S3_PATH_STYLE`).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_cluster::jobmanager::{InitialRestore, JobManager, JobManagerConfig};
use weir_cluster::state::JobState;
use weir_cluster::taskmanager::TaskManagerConfig;
use weir_cluster::{BuiltJob, JobBuilder, JobSpec};
use weir_core::checkpoint::coordinator::CheckpointConfig;
use weir_core::checkpoint::metadata::RestoredSnapshot;
use weir_core::checkpoint::storage::{CheckpointStorage, LocalStorage};
use weir_rest::{ClusterJob, RestServer};

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

/// The storage at `uri`.
fn storage(uri: &str) -> Result<Arc<dyn CheckpointStorage>, String> {
    if uri.starts_with("s3://") {
        #[cfg(feature = "s3")]
        {
            let config = weir_s3::S3Config::from_uri_and_env(uri)?;
            return Ok(Arc::new(weir_s3::S3Storage::new(config).map_err(|e| e.to_string())?));
        }
        #[cfg(not(feature = "s3"))]
        return Err(format!("{uri}: this binary was built without the weir crate's `s3` feature"));
    }
    if uri.contains("://") && !uri.starts_with("file://") {
        return Err(format!("{uri}: expected a path, file:///path or s3://bucket/prefix"));
    }
    Ok(Arc::new(LocalStorage::new(uri.strip_prefix("file://").unwrap_or(uri))))
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
        RestoredSnapshot::open(storage(uri)?, "").map_err(|e| e.to_string())
    }
}

/// Flags that take no value.
const SWITCHES: [&str; 1] = ["linger"];

/// `--flag value` pairs and switches, then the job's arguments after `--`.
fn flags(args: &[String]) -> Result<(HashMap<String, String>, Vec<String>), String> {
    let mut map = HashMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--" {
            return Ok((map, it.cloned().collect()));
        }
        let key = flag.strip_prefix("--").ok_or_else(|| format!("unexpected argument `{flag}`"))?;
        let value = match SWITCHES.contains(&key) {
            true => "true".to_string(),
            false => it.next().ok_or_else(|| format!("{flag}: needs a value"))?.clone(),
        };
        map.insert(key.to_string(), value);
    }
    Ok((map, Vec::new()))
}

fn duration(flag: &str, s: &str) -> Result<Duration, String> {
    let bad = || format!("--{flag}: `{s}` is not a duration such as 500ms, 10s or 1m");
    let (n, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "ms"), |i| s.split_at(i));
    let n: u64 = n.parse().map_err(|_| bad())?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(bad()),
    })
}

/// Runs the job as its arguments say (see the module's documentation); the
/// exit code is 0 when the job finished, 1 when it failed, 2 for bad arguments.
pub fn main(name: &str, job: impl Fn(&StreamEnv) + Send + Sync + 'static) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let job: Arc<JobFn> = Arc::new(job);
    let result = match args.first().map(String::as_str) {
        None => {
            let env = StreamEnv::new(name);
            job(&env);
            env.execute().map_err(|e| (1, e.to_string()))
        }
        Some("jobmanager") => flags(&args[1..]).map_err(|e| (2, e)).and_then(|(f, a)| jobmanager(name, job, &f, a)),
        Some("taskmanager") => flags(&args[1..]).map_err(|e| (2, e)).and_then(|(f, a)| match a.is_empty() {
            true => taskmanager(job, &f),
            false => Err((2, "taskmanager: the job's arguments go to the jobmanager".into())),
        }),
        Some(other) => Err((2, format!("unknown command `{other}`: expected jobmanager, taskmanager, or none"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("{name}: {message}");
            ExitCode::from(code)
        }
    }
}

fn get<'a>(f: &'a HashMap<String, String>, key: &str, default: &'a str) -> &'a str {
    f.get(key).map_or(default, String::as_str)
}

fn parse<T: std::str::FromStr>(f: &HashMap<String, String>, key: &str, default: &str) -> Result<T, (u8, String)> {
    get(f, key, default).parse().map_err(|_| (2, format!("--{key}: `{}` is not valid", get(f, key, default))))
}

fn jobmanager(name: &str, job: Arc<JobFn>, f: &HashMap<String, String>, args: Vec<String>) -> Result<(), (u8, String)> {
    let known = [
        "job-name",
        "parallelism",
        "checkpoint-dir",
        "checkpoint-interval",
        "savepoint-dir",
        "bind",
        "rpc-port",
        "rest-port",
        "restore",
        "deployment-id",
        "leader-lock",
        "linger",
    ];
    if f.contains_key("leader-lease") {
        return Err((
            2,
            "--leader-lease: a Rust job binary elects no leader through Kubernetes; run one JobManager (jobManager.replicas: 1) or use --leader-lock".into(),
        ));
    }
    if let Some(k) = f.keys().find(|k| !known.contains(&k.as_str())) {
        return Err((2, format!("--{k}: not a jobmanager option (expected one of --{})", known.join(", --"))));
    }
    let definition = Definition {
        checkpoint_dir: f.get("checkpoint-dir").cloned(),
        checkpoint_interval_ms: match f.get("checkpoint-interval") {
            Some(d) => Some(duration("checkpoint-interval", d).map_err(|e| (2, e))?.as_millis() as u64),
            None => None,
        },
        savepoint_dir: f.get("savepoint-dir").cloned(),
        args,
    };
    for (flag, uri) in [("checkpoint-dir", &definition.checkpoint_dir), ("savepoint-dir", &definition.savepoint_dir)] {
        if let Some(uri) = uri {
            storage(uri).map_err(|e| (2, format!("--{flag} {e}")))?;
        }
    }
    if definition.checkpoint_dir.is_some() != definition.checkpoint_interval_ms.is_some() {
        return Err((2, "--checkpoint-dir and --checkpoint-interval go together".into()));
    }
    let name = f.get("job-name").map_or(name, String::as_str);
    let bind = get(f, "bind", "0.0.0.0");
    let rpc: std::net::SocketAddr = format!("{bind}:{}", get(f, "rpc-port", "6123"))
        .parse()
        .map_err(|_| (2, "--bind or --rpc-port is not valid".to_string()))?;
    let rest: std::net::SocketAddr = format!("{bind}:{}", get(f, "rest-port", "8081"))
        .parse()
        .map_err(|_| (2, "--rest-port is not valid".to_string()))?;
    let _leadership = match f.get("leader-lock") {
        Some(path) => Some(
            weir_cluster::leader::acquire(path.as_ref(), &format!("pid {}", std::process::id()))
                .map_err(|e| (1, format!("--leader-lock {path}: {e}")))?,
        ),
        None => None,
    };
    let spec = JobSpec {
        name: name.to_string(),
        definition: serde_json::to_vec(&definition).expect("a definition serializes"),
        parallelism: parse(f, "parallelism", "1")?,
    };
    let mut config = JobManagerConfig::new(spec, rpc);
    config.restore = match f.get("restore").map(String::as_str) {
        None => InitialRestore::LatestIfAny,
        Some("latest") => InitialRestore::Latest,
        Some("none") => InitialRestore::None,
        Some(dir) => InitialRestore::Uri(dir.to_string()),
    };
    config.deployment = f.get("deployment-id").cloned();
    // Lingering is for Kubernetes, which restarts a TaskManager that exits.
    config.release_taskmanagers = !f.contains_key("linger");
    let jm = Arc::new(JobManager::start(config, Arc::new(ClosureBuilder(job))).map_err(|e| (2, e.to_string()))?);
    let server =
        RestServer::start(rest, Arc::new(ClusterJob(jm.clone()))).map_err(|e| (1, format!("--rest-port: {e}")))?;
    eprintln!("{name}: JobManager; TaskManagers register at {}, REST API on http://{}/", jm.rpc_addr(), server.addr);
    while !jm.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    if f.contains_key("linger") {
        // Kubernetes would restart an exited JobManager, and with it the job.
        eprintln!("{name}: job {}; serving its final state until stopped", jm.view().state);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    server.linger(Duration::from_secs(3));
    let view = jm.view();
    match view.state {
        JobState::Finished | JobState::Cancelled => Ok(()),
        state => Err((1, format!("job {state}: {}", view.failure.unwrap_or_default()))),
    }
}

fn taskmanager(job: Arc<JobFn>, f: &HashMap<String, String>) -> Result<(), (u8, String)> {
    let known = ["jobmanager", "slots", "bind", "data-port", "advertise-host"];
    if let Some(k) = f.keys().find(|k| !known.contains(&k.as_str())) {
        return Err((2, format!("--{k}: not a taskmanager option (expected one of --{})", known.join(", --"))));
    }
    let jobmanagers = f.get("jobmanager").ok_or((2, "--jobmanager: required".to_string()))?;
    let config = TaskManagerConfig {
        jobmanagers: jobmanagers.split(',').map(str::to_string).collect(),
        slots: parse(f, "slots", "1")?,
        data_bind: format!("{}:{}", get(f, "bind", "0.0.0.0"), get(f, "data-port", "0"))
            .parse()
            .map_err(|_| (2, "--bind or --data-port is not valid".to_string()))?,
        advertise_host: f.get("advertise-host").cloned(),
        connect_timeout: Duration::from_secs(60),
        id: format!("{}-{}", std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim(), std::process::id()),
    };
    weir_cluster::taskmanager::run(config, Arc::new(ClosureBuilder(job))).map_err(|e| (1, e.to_string()))
}
