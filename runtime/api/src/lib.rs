//! # weir-api: the contracts between Weir's processes
//!
//! What one Weir process says to another, as types, so that a change to a
//! contract fails to compile instead of failing in a pod:
//!
//! * [`launch`]: the flags of a JobManager and a TaskManager process (the
//!   `weir` binary's and every job binary's), parsed with clap and written
//!   back with [`launch::JobManagerOptions::to_args`], which the operator uses
//!   to build pod arguments.
//! * [`rest`]: the JobManager's REST API, one request or response type per
//!   endpoint, and the job's lifecycle [`JobState`]; the REST server
//!   serialises them, the operator and the CLI read them back.
//! * [`Restore`]: what a JobManager starts its job from.
//! * [`parse_duration`]: the one duration syntax of the command line,
//!   pipeline files and StreamJobs; [`parse_size`], the one size syntax.
//!
//! The crate is deliberately light (serde, clap, humantime): the operator,
//! the CLI and user job binaries all depend on it.

mod duration;
pub mod launch;
pub mod rest;
mod restore;
mod size;

pub use duration::{format_duration, parse_duration};
pub use rest::JobState;
pub use restore::Restore;
pub use size::parse_size;
