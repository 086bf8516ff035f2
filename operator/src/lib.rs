//! # weir-operator: Weir on Kubernetes
//!
//! Each `StreamJob` custom resource ([`crd`]) becomes its own Weir cluster.
//! The operator drives every job through one lifecycle ([`phase`]), taking a
//! savepoint before it rescales or upgrades, and reports honestly in the
//! status what it is doing.

pub mod controller;
pub mod crd;
pub mod diff;
pub mod health;
pub mod phase;
pub mod planner;
pub mod resources;
pub mod snapshots;
pub mod validate;
