//! Stream elements: what flows between operators.
//!
//! Records travel in batches (`Vec<Record<T>>`), never one by one, so that the
//! per-element cost of a channel hop or a virtual call is paid once per batch.
//! Control elements (watermarks, idleness, checkpoint barriers, end of stream)
//! travel in the same ordered stream as the records, which is what makes event
//! time and aligned exactly-once snapshots possible.

use serde::{Serialize, de::DeserializeOwned};

use crate::time::Timestamp;

/// What a stream may carry: owned, sendable, and serializable (records cross
/// process boundaries and live in snapshots).
pub trait Data: Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Serialize + DeserializeOwned + 'static> Data for T {}

/// A record with its event timestamp ([`crate::time::NO_TIMESTAMP`] when none
/// has been assigned yet).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record<T> {
    pub time: Timestamp,
    pub value: T,
}

impl<T> Record<T> {
    pub fn new(time: Timestamp, value: T) -> Self {
        Record { time, value }
    }
}

/// A checkpoint barrier: separates the records before snapshot `id` from those after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Barrier {
    pub checkpoint_id: u64,
    /// Wall-clock milliseconds when the coordinator triggered the checkpoint.
    pub triggered_at: i64,
    pub is_savepoint: bool,
}

/// One element of a stream between two tasks.
#[derive(Debug)]
pub enum Event<T> {
    Records(Vec<Record<T>>),
    /// No record with a timestamp at or below this will follow on this channel.
    Watermark(Timestamp),
    /// The channel became idle (`true`) or active again (`false`); idle
    /// channels do not hold back the minimum watermark.
    Idle(bool),
    Barrier(Barrier),
    /// The channel ends: its producer finished. It carries the newest
    /// checkpoint its producer was told completed, if any: the end proves
    /// that completion to the consumer, whose own notice of it comes another
    /// way (from the JobManager, while the end came through other
    /// TaskManagers) and may come too late for a task that has ended. A
    /// bounded job's final checkpoint is committed on it.
    End(Option<u64>),
}
