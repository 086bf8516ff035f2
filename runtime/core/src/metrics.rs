//! Task metrics with Flink's semantics, kept in atomics so that any thread
//! (the REST API, the progress display) can read them while the task runs.
//!
//! Time is split three ways per subtask: *idle* (waiting for input),
//! *backpressured* (waiting for room downstream), and *busy* (the rest).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::time::MIN_WATERMARK;

#[derive(Debug)]
pub struct SubtaskMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub idle_ns: AtomicU64,
    pub backpressured_ns: AtomicU64,
    pub current_watermark: AtomicI64,
    /// Records a window operator dropped (or sent to the late side output) as late.
    pub late_records: AtomicU64,
    /// Records a source subtask has yet to read from its external system
    /// (Kafka consumer lag); -1 when unknown or not a source.
    pub pending_records: AtomicI64,
    /// When the backpressured wait under way began (nanoseconds since `started`, plus one), 0 when none:
    /// a task blocked for seconds shows as backpressured while it waits, not only afterwards.
    backpressure_since: AtomicU64,
    started: Instant,
}

impl Default for SubtaskMetrics {
    fn default() -> Self {
        SubtaskMetrics {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            backpressured_ns: AtomicU64::new(0),
            current_watermark: AtomicI64::new(MIN_WATERMARK),
            late_records: AtomicU64::new(0),
            pending_records: AtomicI64::new(-1),
            backpressure_since: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

impl SubtaskMetrics {
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A wait for room downstream begins; pass the result to [`SubtaskMetrics::end_backpressure`].
    pub fn begin_backpressure(&self) -> Instant {
        let now = Instant::now();
        self.backpressure_since.store(now.duration_since(self.started).as_nanos() as u64 + 1, Relaxed);
        now
    }

    pub fn end_backpressure(&self, began: Instant) {
        self.backpressure_since.store(0, Relaxed);
        self.backpressured_ns.fetch_add(began.elapsed().as_nanos() as u64, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let elapsed_ns = self.started.elapsed().as_nanos() as u64;
        let idle = self.idle_ns.load(Relaxed);
        let ongoing = match self.backpressure_since.load(Relaxed) {
            0 => 0,
            since => elapsed_ns.saturating_sub(since - 1),
        };
        let bp = self.backpressured_ns.load(Relaxed) + ongoing;
        MetricsSnapshot {
            records_in: self.records_in.load(Relaxed),
            records_out: self.records_out.load(Relaxed),
            idle_ns: idle,
            backpressured_ns: bp,
            busy_ns: elapsed_ns.saturating_sub(idle + bp),
            current_watermark: self.current_watermark.load(Relaxed),
            late_records: self.late_records.load(Relaxed),
            pending_records: self.pending_records.load(Relaxed),
        }
    }
}

/// A point-in-time copy of [`SubtaskMetrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricsSnapshot {
    pub records_in: u64,
    pub records_out: u64,
    pub idle_ns: u64,
    pub backpressured_ns: u64,
    pub busy_ns: u64,
    pub current_watermark: i64,
    pub late_records: u64,
    /// -1 when unknown.
    pub pending_records: i64,
}

impl MetricsSnapshot {
    /// A vertex's metrics from its subtasks' (Flink's aggregation): counters
    /// summed, time metrics the maximum, the watermark the minimum, pending
    /// records summed over the subtasks that know theirs (-1 when none does).
    pub fn aggregate(subtasks: impl IntoIterator<Item = MetricsSnapshot>) -> MetricsSnapshot {
        let mut agg = MetricsSnapshot { current_watermark: i64::MAX, pending_records: -1, ..Default::default() };
        for s in subtasks {
            agg.records_in += s.records_in;
            agg.records_out += s.records_out;
            agg.late_records += s.late_records;
            agg.busy_ns = agg.busy_ns.max(s.busy_ns);
            agg.idle_ns = agg.idle_ns.max(s.idle_ns);
            agg.backpressured_ns = agg.backpressured_ns.max(s.backpressured_ns);
            agg.current_watermark = agg.current_watermark.min(s.current_watermark);
            if s.pending_records >= 0 {
                agg.pending_records = agg.pending_records.max(0) + s.pending_records;
            }
        }
        agg
    }
}
