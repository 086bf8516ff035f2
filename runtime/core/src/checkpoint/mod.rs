//! Checkpoints: consistent snapshots of a running job, taken by asynchronous
//! barrier snapshots (Chandy-Lamport, as in Flink).
//!
//! * [`coordinator`]: decides when to snapshot, collects the tasks'
//!   acknowledgements, completes and aborts checkpoints; [`routing`] says
//!   which tasks each of its commands is for.
//! * [`alignment`]: how a task with several inputs lines up a checkpoint's
//!   barriers (and, exactly-once, holds back what comes after them).
//! * [`incremental`]: what a task hands in at a barrier, and the chains of
//!   state files that incremental checkpoints build up.
//! * [`metadata`]: the format of a snapshot, and restoring from one;
//!   [`compression`]: how its key groups are stored.
//! * [`spill`]: a full snapshot of state larger than memory, in a local file until it is stored.
//! * [`fence`]: a deposed JobManager completes no checkpoint over its successor's.
//! * [`storage`]: where snapshots live (a local directory, or S3 via `weir-s3`).

pub mod alignment;
pub mod compression;
pub mod coordinator;
pub mod fence;
pub mod incremental;
pub mod metadata;
pub mod routing;
pub mod spill;
pub mod storage;
