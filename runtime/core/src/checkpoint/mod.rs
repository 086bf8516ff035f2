//! Checkpoints: consistent snapshots of a running job, taken by asynchronous
//! barrier snapshots (Chandy-Lamport, as in Flink).
//!
//! * [`storage`]: where snapshots live (a local directory, or S3 via `weir-s3`).

pub mod coordinator;
pub mod metadata;
pub mod storage;
