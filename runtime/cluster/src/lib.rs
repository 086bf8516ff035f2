//! # weir-cluster: the distributed runtime
//!
//! A job runs on a cluster of one **JobManager** and any number of
//! **TaskManagers**, each a process of its own (the same binary, by
//! subcommand):
//!
//! ```text
//!            control (TCP, framed bincode)            data (TCP, one connection per channel,
//!   ┌──────────────┐  register, heartbeat,  ┌─────────────┐  credit-based flow control)  ┌─────────────┐
//!   │ JobManager   │  reports ────────────> │ TaskManager │ ───── batches of records ──> │ TaskManager │
//!   │ scheduler,   │ <──── deploy, cancel,  │  executor + │ <──────────── credits ────── │  executor + │
//!   │ coordinator, │       checkpoint cmds  │ data server │                              │ data server │
//!   │ restarts     │                        └─────────────┘                              └─────────────┘
//!   └──────────────┘
//! ```
//!
//! * [`jobmanager`]: builds the job's graph to plan it, waits for enough
//!   slots, deploys an *attempt* (each TaskManager gets its subtasks, all
//!   restoring from the same snapshot), drives checkpoints with the engine's
//!   coordinator, and fails over when a TaskManager or a task is lost:
//!   cancel everything, wait as the [`restart`] strategy says, redeploy from
//!   the latest completed checkpoint. Rescale is a savepoint and a
//!   redeployment at the new parallelism.
//! * [`taskmanager`]: runs its subtasks with the engine's executor; channels
//!   to other processes go through the [`data`] plane.
//! * [`protocol`] and [`frame`]: the messages, with a versioned handshake;
//!   malformed or hostile input closes the connection with a clear log line,
//!   and never takes the process down.
//! * [`auth`]: every connection, control or data, opens with a mutual proof
//!   of the job's secret (when it has one); [`gate`] bounds the connections
//!   a listener serves at once.
//! * [`schedule`], [`restart`], [`state`]: the pure parts (slot assignment,
//!   restart delays, the job's lifecycle), tested without any socket.
//! * [`leader`]: one leading JobManager among several (a lock file).
//!
//! Every process builds the job's graph itself from the [`protocol::JobSpec`],
//! through a [`JobBuilder`]: for pipeline files, the CLI's; for a Rust job
//! binary, the job's own code.

pub mod auth;
pub mod data;
pub mod frame;
pub mod gate;
pub mod jobmanager;
pub mod leader;
pub mod protocol;
pub mod restart;
pub mod schedule;
pub mod state;
pub mod taskmanager;

use weir_core::checkpoint::coordinator::CheckpointConfig;
use weir_core::checkpoint::metadata::RestoredSnapshot;
use weir_core::graph::JobGraph;

pub use protocol::JobSpec;

/// A job's graph, and its checkpointing when it has any.
pub struct BuiltJob {
    pub graph: JobGraph,
    pub checkpointing: Option<CheckpointConfig>,
}

/// The job of `spec` as every process of the cluster builds it: the
/// builder's graph, with the vertices `spec.vertex_parallelism` names at
/// their own parallelism.
pub fn build(builder: &dyn JobBuilder, spec: &JobSpec) -> Result<BuiltJob, String> {
    let mut built = builder.build(spec)?;
    built.graph.override_parallelism(&spec.vertex_parallelism).map_err(|e| e.to_string())?;
    Ok(built)
}

/// Builds a job in any process of the cluster.
pub trait JobBuilder: Send + Sync + 'static {
    /// The graph of `spec`, at `spec.parallelism` (the cluster applies
    /// `spec.vertex_parallelism` to it: see [`build`]).
    fn build(&self, spec: &JobSpec) -> Result<BuiltJob, String>;
    /// Opens the snapshot at `uri` (a directory URI, as [`RestoredSnapshot::uri`] gives).
    fn restore(&self, spec: &JobSpec, uri: &str) -> Result<RestoredSnapshot, String>;
}
