//! The flags of JobManager and TaskManager processes: one contract for the
//! `weir` binary (pipeline files), every Rust job binary (`weir::cluster`),
//! and the operator that writes them into pods.
//!
//! The structs are clap argument groups, parsed by the processes, and
//! [`JobManagerOptions::to_args`] / [`TaskManagerOptions::to_args`] write them
//! back as arguments. A test parses what `to_args` writes: a flag renamed on
//! one side cannot drift from the other.
//!
//! ```
//! use clap::Parser;
//! use weir_api::Restore;
//! use weir_api::launch::JobManagerOptions;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     jobmanager: JobManagerOptions,
//! }
//!
//! let options = JobManagerOptions {
//!     parallelism: Some(4),
//!     checkpoint_interval: Some(std::time::Duration::from_secs(3600)),
//!     restore: Restore::Snapshot("s3://weir/savepoints/sp-7".into()),
//!     ..JobManagerOptions::default()
//! };
//! let args = options.to_args();
//! assert_eq!(args, ["--parallelism", "4", "--checkpoint-interval", "1h", "--restore", "s3://weir/savepoints/sp-7"]);
//! let parsed = Cli::try_parse_from(std::iter::once("jobmanager".to_string()).chain(args)).unwrap();
//! assert_eq!(parsed.jobmanager, options);
//! ```

use std::path::PathBuf;
use std::time::Duration;

use crate::{Restore, format_duration, parse_duration};

/// A cluster process and its flags: `jobmanager ...` or `taskmanager ...`, as
/// a job binary's command line and a pod's arguments say it.
#[derive(clap::Parser, Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Process {
    /// Run a JobManager: schedule the job onto TaskManagers, coordinate its
    /// checkpoints, restart it when something dies, serve the REST API.
    Jobmanager(JobManagerOptions),
    /// Run a TaskManager: offer slots to a JobManager and run the subtasks it deploys.
    Taskmanager(TaskManagerOptions),
}

impl Process {
    /// The command and its flags, as arguments.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Process::Jobmanager(o) => std::iter::once("jobmanager".to_string()).chain(o.to_args()).collect(),
            Process::Taskmanager(o) => std::iter::once("taskmanager".to_string()).chain(o.to_args()).collect(),
        }
    }
}

/// One vertex's own parallelism: `UID=N` on a command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VertexParallelism {
    pub uid: String,
    pub parallelism: usize,
}

impl VertexParallelism {
    /// The flags' pairs as a map (a uid given twice: the last one wins, as for any repeated flag).
    pub fn map(pairs: &[VertexParallelism]) -> std::collections::BTreeMap<String, usize> {
        pairs.iter().map(|v| (v.uid.clone(), v.parallelism)).collect()
    }
}

impl std::str::FromStr for VertexParallelism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (uid, n) = s.rsplit_once('=').ok_or_else(|| format!("`{s}`: expected UID=N, e.g. window=4"))?;
        let parallelism = match n.trim().parse::<usize>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("`{s}`: the parallelism must be a whole number of at least 1, not `{n}`")),
        };
        if uid.trim().is_empty() {
            return Err(format!("`{s}`: no vertex uid before `=`"));
        }
        Ok(VertexParallelism { uid: uid.trim().to_string(), parallelism })
    }
}

impl std::fmt::Display for VertexParallelism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.uid, self.parallelism)
    }
}

/// How a JobManager watches its TaskManagers and restarts a failed job.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct FailoverOptions {
    /// A TaskManager silent for this long is lost (its tasks restart elsewhere).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// none | fixed-delay:<delay>:<attempts> | exponential:<initial>:<max>:<attempts|unlimited>
    /// (exponential: times 1.5 per failure, ±10 % jitter, reset after an hour without failure)
    #[arg(long, value_name = "STRATEGY", default_value = FailoverOptions::DEFAULT_RESTART_STRATEGY)]
    pub restart_strategy: String,
}

impl FailoverOptions {
    pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Flink's default: exponential delay without a limit on restarts (weir_cluster::restart).
    pub const DEFAULT_RESTART_STRATEGY: &str = "exponential:1s:1m:unlimited";

    /// The flags that say this (none for the defaults).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.heartbeat_timeout != Self::DEFAULT_HEARTBEAT_TIMEOUT {
            args.extend(["--heartbeat-timeout".to_string(), format_duration(self.heartbeat_timeout)]);
        }
        if self.restart_strategy != Self::DEFAULT_RESTART_STRATEGY {
            args.extend(["--restart-strategy".to_string(), self.restart_strategy.clone()]);
        }
        args
    }
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions {
            heartbeat_timeout: Self::DEFAULT_HEARTBEAT_TIMEOUT,
            restart_strategy: Self::DEFAULT_RESTART_STRATEGY.to_string(),
        }
    }
}

/// The flags of a JobManager process (`weir jobmanager`, `my-job jobmanager`).
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct JobManagerOptions {
    /// The pipeline file (YAML); the `weir` binary's jobs only.
    #[arg(long, value_name = "PATH")]
    pub pipeline: Option<PathBuf>,
    /// Override one key of the pipeline file, e.g. `--set source.count=1000`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// The job's name (overrides the pipeline's `name` or the binary's).
    #[arg(long)]
    pub job_name: Option<String>,
    /// The job's parallelism (default: the pipeline's, else 1).
    #[arg(long)]
    pub parallelism: Option<usize>,
    /// A vertex's own parallelism, by its uid (repeat for more vertices); over
    /// what the pipeline step or the job's code gives it.
    #[arg(long, value_name = "UID=N")]
    pub vertex_parallelism: Vec<VertexParallelism>,
    /// Where checkpoints go: a path, file:///path or s3://bucket/prefix.
    #[arg(long, value_name = "URI")]
    pub checkpoint_dir: Option<String>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub checkpoint_interval: Option<Duration>,
    /// Where savepoints go (default: the checkpoint directory's `{job}/savepoints/`).
    #[arg(long, value_name = "URI")]
    pub savepoint_dir: Option<String>,
    /// `latest`, `none`, or a snapshot's URI. Default: the latest completed
    /// checkpoint if there is one (a restarted JobManager recovers its job).
    #[arg(long, value_name = "latest|none|URI", default_value = "latest-or-none", hide_default_value = true)]
    pub restore: Restore,
    /// Names this deployment of the job (an operator gives each rollout its own):
    /// checkpoints carry the name, and a JobManager restarted within the same
    /// deployment recovers its latest checkpoint instead of doing `--restore` again.
    #[arg(long, value_name = "NAME")]
    pub deployment_id: Option<String>,
    /// The address to listen on (REST API and TaskManagers).
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: String,
    #[arg(long, default_value_t = 8081)]
    pub rest_port: u16,
    #[arg(long, default_value_t = 6123)]
    pub rpc_port: u16,
    /// After the job ends, keep serving its final state (REST API) until stopped,
    /// instead of exiting: under Kubernetes an exit would restart the JobManager.
    #[arg(long)]
    pub linger: bool,
    /// Lead only while holding this lock file; a standby waits on it.
    #[arg(long, value_name = "PATH")]
    pub leader_lock: Option<PathBuf>,
    /// Elect the leader with this Kubernetes Lease (in POD_NAMESPACE, else the client's namespace).
    #[arg(long, value_name = "NAME", conflicts_with = "leader_lock")]
    pub leader_lease: Option<String>,
    /// How long a leader's Lease holds without renewal (a standby takes over after it).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    #[command(flatten)]
    pub failover: FailoverOptions,
    /// The job's secret (a file, such as a mounted Kubernetes Secret): every
    /// TaskManager must prove it, and REST requests that change the job must
    /// carry it as `Authorization: Bearer`.
    #[arg(long, value_name = "PATH")]
    pub auth_secret_file: Option<PathBuf>,
    /// A job binary's own arguments, after `--` (every process of the job sees them).
    #[arg(last = true, value_name = "JOB ARGS")]
    pub job_args: Vec<String>,
}

impl JobManagerOptions {
    pub const DEFAULT_BIND: &str = "0.0.0.0";
    pub const DEFAULT_REST_PORT: u16 = 8081;
    pub const DEFAULT_RPC_PORT: u16 = 6123;
    pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

    /// The arguments that say these options, after the `jobmanager` command
    /// (defaults are left out; the job's arguments come last, after `--`).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |name: &str, value: String| args.extend([format!("--{name}"), value]);
        if let Some(p) = &self.pipeline {
            flag("pipeline", p.display().to_string());
        }
        for s in &self.set {
            flag("set", s.clone());
        }
        if let Some(name) = &self.job_name {
            flag("job-name", name.clone());
        }
        if let Some(p) = self.parallelism {
            flag("parallelism", p.to_string());
        }
        for v in &self.vertex_parallelism {
            flag("vertex-parallelism", v.to_string());
        }
        if let Some(dir) = &self.checkpoint_dir {
            flag("checkpoint-dir", dir.clone());
        }
        if let Some(interval) = self.checkpoint_interval {
            flag("checkpoint-interval", format_duration(interval));
        }
        if let Some(dir) = &self.savepoint_dir {
            flag("savepoint-dir", dir.clone());
        }
        if let Some(restore) = self.restore.flag_value() {
            flag("restore", restore);
        }
        if let Some(id) = &self.deployment_id {
            flag("deployment-id", id.clone());
        }
        if self.bind != Self::DEFAULT_BIND {
            flag("bind", self.bind.clone());
        }
        if self.rest_port != Self::DEFAULT_REST_PORT {
            flag("rest-port", self.rest_port.to_string());
        }
        if self.rpc_port != Self::DEFAULT_RPC_PORT {
            flag("rpc-port", self.rpc_port.to_string());
        }
        if let Some(lock) = &self.leader_lock {
            flag("leader-lock", lock.display().to_string());
        }
        if let Some(lease) = &self.leader_lease {
            flag("leader-lease", lease.clone());
        }
        if self.lease_duration != Self::DEFAULT_LEASE_DURATION {
            flag("lease-duration", format_duration(self.lease_duration));
        }
        if self.linger {
            args.push("--linger".to_string());
        }
        args.extend(self.failover.to_args());
        if let Some(path) = &self.auth_secret_file {
            args.extend(["--auth-secret-file".to_string(), path.display().to_string()]);
        }
        if !self.job_args.is_empty() {
            args.push("--".to_string());
            args.extend(self.job_args.iter().cloned());
        }
        args
    }
}

impl Default for JobManagerOptions {
    fn default() -> Self {
        JobManagerOptions {
            pipeline: None,
            set: Vec::new(),
            job_name: None,
            parallelism: None,
            vertex_parallelism: Vec::new(),
            checkpoint_dir: None,
            checkpoint_interval: None,
            savepoint_dir: None,
            restore: Restore::default(),
            deployment_id: None,
            bind: Self::DEFAULT_BIND.to_string(),
            rest_port: Self::DEFAULT_REST_PORT,
            rpc_port: Self::DEFAULT_RPC_PORT,
            linger: false,
            leader_lock: None,
            leader_lease: None,
            lease_duration: Self::DEFAULT_LEASE_DURATION,
            failover: FailoverOptions::default(),
            auth_secret_file: None,
            job_args: Vec::new(),
        }
    }
}

/// The flags of a TaskManager process (`weir taskmanager`, `my-job taskmanager`).
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct TaskManagerOptions {
    /// The JobManagers' RPC addresses (host:port, comma-separated): the leading one is used.
    #[arg(long, value_delimiter = ',', required = true)]
    pub jobmanager: Vec<String>,
    /// Subtask slots (one subtask of each vertex per slot).
    #[arg(long, default_value_t = 1)]
    pub slots: usize,
    /// The address the data server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: String,
    /// The data server's port (0: any free one).
    #[arg(long, default_value_t = 0)]
    pub data_port: u16,
    /// The host other TaskManagers reach this one at (default: the address it reaches the JobManager from).
    #[arg(long)]
    pub advertise_host: Option<String>,
    /// How long to look for a JobManager before giving up.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// A name for logs and the dashboard (default: the pod's name, or host and process id).
    #[arg(long)]
    pub id: Option<String>,
    /// The job's secret (a file): proven to the JobManager and the other
    /// TaskManagers, and required of them.
    #[arg(long, value_name = "PATH")]
    pub auth_secret_file: Option<PathBuf>,
}

impl TaskManagerOptions {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

    /// Options for a TaskManager of these JobManagers, otherwise the defaults.
    pub fn new(jobmanagers: Vec<String>) -> Self {
        TaskManagerOptions {
            jobmanager: jobmanagers,
            slots: 1,
            bind: JobManagerOptions::DEFAULT_BIND.to_string(),
            data_port: 0,
            advertise_host: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            id: None,
            auth_secret_file: None,
        }
    }

    /// The arguments that say these options, after the `taskmanager` command.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["--jobmanager".to_string(), self.jobmanager.join(",")];
        let mut flag = |name: &str, value: String| args.extend([format!("--{name}"), value]);
        if self.slots != 1 {
            flag("slots", self.slots.to_string());
        }
        if self.bind != JobManagerOptions::DEFAULT_BIND {
            flag("bind", self.bind.clone());
        }
        if self.data_port != 0 {
            flag("data-port", self.data_port.to_string());
        }
        if let Some(host) = &self.advertise_host {
            flag("advertise-host", host.clone());
        }
        if self.connect_timeout != Self::DEFAULT_CONNECT_TIMEOUT {
            flag("connect-timeout", format_duration(self.connect_timeout));
        }
        if let Some(id) = &self.id {
            flag("id", id.clone());
        }
        if let Some(path) = &self.auth_secret_file {
            flag("auth-secret-file", path.display().to_string());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    use Process as Cli;

    fn parse(command: &str, args: Vec<String>) -> Cli {
        let argv = ["weir".to_string(), command.to_string()].into_iter().chain(args);
        let process = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{command}: {e}"));
        let again = Cli::try_parse_from(std::iter::once("weir".to_string()).chain(process.to_args())).unwrap();
        assert_eq!(again, process, "Process::to_args writes the command too");
        process
    }

    #[test]
    fn a_vertex_parallelism_names_what_is_wrong() {
        let v: VertexParallelism = "window=4".parse().unwrap();
        assert_eq!((v.uid.as_str(), v.parallelism, v.to_string()), ("window", 4, "window=4".to_string()));
        assert!("window".parse::<VertexParallelism>().unwrap_err().contains("expected UID=N"));
        assert!("window=0".parse::<VertexParallelism>().unwrap_err().contains("at least 1"));
        assert!("=2".parse::<VertexParallelism>().unwrap_err().contains("no vertex uid"));
        let both = ["a=1".parse().unwrap(), "a=2".parse().unwrap()];
        assert_eq!(VertexParallelism::map(&both).get("a"), Some(&2));
    }

    #[test]
    fn defaults_need_no_flags() {
        let Cli::Jobmanager(jm) = parse("jobmanager", vec![]) else { unreachable!() };
        assert_eq!(jm, JobManagerOptions::default());
        assert!(JobManagerOptions::default().to_args().is_empty());
        let Cli::Taskmanager(tm) = parse("taskmanager", vec!["--jobmanager".into(), "a:1".into()]) else {
            unreachable!()
        };
        assert_eq!(tm, TaskManagerOptions::new(vec!["a:1".into()]));
    }

    #[test]
    fn every_jobmanager_option_reads_back_what_to_args_writes() {
        let all = JobManagerOptions {
            pipeline: Some("/etc/weir/pipeline.yaml".into()),
            set: vec!["source.count=10".into(), "name=x".into()],
            job_name: Some("orders".into()),
            parallelism: Some(5),
            vertex_parallelism: vec!["window=3".parse().unwrap(), "sink=1".parse().unwrap()],
            checkpoint_dir: Some("s3://weir/checkpoints".into()),
            checkpoint_interval: Some(Duration::from_secs(90)),
            savepoint_dir: Some("s3://weir/savepoints".into()),
            restore: Restore::Fresh,
            deployment_id: Some("3-20261121120000".into()),
            bind: "$(POD_IP)".into(),
            rest_port: 18081,
            rpc_port: 16123,
            linger: true,
            leader_lock: None,
            leader_lease: Some("orders-jobmanager-leader".into()),
            lease_duration: Duration::from_secs(30),
            failover: FailoverOptions {
                heartbeat_timeout: Duration::from_secs(20),
                restart_strategy: "exponential:1s:1m:20".into(),
            },
            auth_secret_file: Some("/etc/weir/auth/secret".into()),
            job_args: vec!["--min-amount".into(), "100".into()],
        };
        for restore in [Restore::Fresh, Restore::Latest, Restore::LatestOrFresh, Restore::Snapshot("/sp/1".into())] {
            let options = JobManagerOptions { restore, ..all.clone() };
            let Cli::Jobmanager(back) = parse("jobmanager", options.to_args()) else { unreachable!() };
            assert_eq!(back, options);
        }
        let lock = JobManagerOptions { leader_lease: None, leader_lock: Some("/run/jm.lock".into()), ..all };
        let Cli::Jobmanager(back) = parse("jobmanager", lock.to_args()) else { unreachable!() };
        assert_eq!(back, lock);
    }

    #[test]
    fn every_taskmanager_option_reads_back_what_to_args_writes() {
        let tm = TaskManagerOptions {
            jobmanager: vec!["jm-0:6123".into(), "jm-1:6123".into()],
            slots: 4,
            bind: "$(POD_IP)".into(),
            data_port: 6124,
            advertise_host: Some("10.0.0.7".into()),
            connect_timeout: Duration::from_secs(120),
            id: Some("tm-a".into()),
            auth_secret_file: Some("/etc/weir/auth/secret".into()),
        };
        let Cli::Taskmanager(back) = parse("taskmanager", tm.to_args()) else { unreachable!() };
        assert_eq!(back, tm);
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let argv = ["weir", "jobmanager", "--checkpoint-interval", "10"];
        let e = Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains("--checkpoint-interval") && e.contains("expected a number with a unit"), "{e}");
        let argv = ["weir", "taskmanager", "--jobmanager", "a:1", "--connect-timeout", "soon"];
        let e = Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains("--connect-timeout") && e.contains("invalid duration `soon`"), "{e}");
    }
}
