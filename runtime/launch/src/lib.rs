//! # weir-launch: the one launcher of JobManager and TaskManager processes
//!
//! The `weir` binary (pipeline files) and every Rust job binary
//! (`weir::cluster::main`) start their processes here, from the same typed
//! flags ([`weir_api::launch`]), so the two cannot drift: a job binary has
//! every flag a pipeline JobManager has. An adapter supplies only what
//! differs, the job: a [`JobSpec`](weir_cluster::JobSpec) and a
//! [`JobBuilder`](weir_cluster::JobBuilder) that builds it in every process.
//!
//! ```text
//! adapter (weir CLI, weir::cluster)      this crate
//!   flags: JobManagerOptions  ───────▶  jobmanager::run: sockets, leader lock or Lease,
//!   JobSpec + JobBuilder                  restore, failover, REST, Ctrl-C/SIGTERM, exit
//!   flags: TaskManagerOptions ───────▶  taskmanager::run
//! ```
//!
//! Also here, one of each: [`storage::open`] (checkpoint URIs: a path,
//! `file://`, `s3://` with the `s3` feature), [`identity`] (the process's name
//! in a cluster), [`secret`] (the job's secret from its file), and [`LaunchError`] with the exit codes of DESIGN.md (2 for
//! bad input, 1 for a runtime failure).

mod error;
pub mod jobmanager;
mod signals;
pub mod storage;
pub mod taskmanager;

pub use error::LaunchError;
pub use signals::{OnSignal, exit_on_signal, stop_on_signal};

use std::path::Path;

use weir_cluster::auth::Secret;

/// The job's secret from `--auth-secret-file`, if given.
pub fn secret(path: Option<&Path>) -> Result<Option<Secret>, LaunchError> {
    path.map(|p| Secret::from_file(p).map_err(|e| LaunchError::bad(format!("--auth-secret-file: {e}")))).transpose()
}

/// This process's name in a cluster: the pod's (`POD_NAME`) or host's name
/// and the process id. TaskManager ids and Lease holders use it.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "weir".to_string());
    format!("{host}-{}", std::process::id())
}
