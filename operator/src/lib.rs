//! # weir-operator: Weir on Kubernetes
//!
//! Each `StreamJob` custom resource ([`crd`]) becomes its own Weir cluster.
//! The operator drives every job through one lifecycle ([`phase`]), taking a
//! savepoint before it rescales or upgrades, and reports honestly in the
//! status what it is doing. A running job is rescaled in place, through the
//! JobManager's rescale API on the TaskManagers there are (more added first
//! when their slots are too few, idle ones removed after:
//! `planner/rescale.rs`); anything else is redeployed.
//!
//! A reconciliation observes (the JobManager through [`jobmanager`]'s typed
//! client, storage through [`snapshots`]), plans ([`planner`], a pure
//! function of the StreamJob and what was observed) and acts
//! ([`controller`]: status first, then objects from [`resources`], savepoints
//! and events).
//!
//! [`autoscaler`] decides, as a pure function of `spec.autoscaler`, the job's
//! metrics over a window and its past rescales, what parallelism each vertex
//! needs (DS2), and reports why. The controller keeps each job's series of
//! samples and decides on it as it observes; the planner reports the decision
//! in `status.autoscaler` and, in `active` mode, rolls it out as a rescale
//! that gives each vertex its own parallelism (`planner/autoscaling.rs` says
//! who owns the parallelism: the user's `spec.parallelism` or the
//! autoscaler's per-vertex choice).

pub mod autoscaler;
pub mod controller;
pub mod crd;
pub mod diff;
#[cfg(test)]
mod fixtures;
pub mod hardening;
pub mod health;
pub mod jobmanager;
pub mod phase;
pub mod planner;
pub mod pods;
pub mod resources;
pub mod snapshots;
pub mod validate;
