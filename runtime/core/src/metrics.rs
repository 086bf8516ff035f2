//! Task metrics with Flink's semantics, kept in atomics so that any thread
//! (the REST API, the progress display) can read them while the task runs.
//!
//! Time is split three ways per subtask: *idle* (waiting for input),
//! *backpressured* (waiting for room downstream), and *busy* (the rest).
//!
//! Beside these, a job may set gauges of its own ([`Gauge`]: a pipeline's
//! `metric` step, say): the latest value per name and labels, at most
//! [`MAX_GAUGES`] per subtask.

use std::collections::BTreeMap;
use std::sync::Mutex;
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
    /// The job's own gauges, by name and labels.
    gauges: Mutex<BTreeMap<GaugeKey, f64>>,
    /// Gauges not kept because the subtask had [`MAX_GAUGES`] already.
    pub gauges_dropped: AtomicU64,
}

/// At most this many gauges per subtask: labels taken from the data (a
/// region, a customer id) could otherwise grow without bound, and every
/// heartbeat carries them.
pub const MAX_GAUGES: usize = 1000;

/// A gauge's identity: its name and its labels, in order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct GaugeKey {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

/// A gauge's latest value.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gauge {
    pub key: GaugeKey,
    pub value: f64,
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
            gauges: Mutex::new(BTreeMap::new()),
            gauges_dropped: AtomicU64::new(0),
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

    /// Sets a gauge of the job's own; a new one beyond [`MAX_GAUGES`] is
    /// dropped (and counted in `gauges_dropped`).
    pub fn set_gauge(&self, key: GaugeKey, value: f64) {
        let mut gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        let len = gauges.len();
        match gauges.get_mut(&key) {
            Some(v) => *v = value,
            None if len < MAX_GAUGES => {
                gauges.insert(key, value);
            }
            None => Self::add(&self.gauges_dropped, 1),
        }
    }

    /// The job's own gauges, in order.
    pub fn gauges(&self) -> Vec<Gauge> {
        let gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        gauges.iter().map(|(key, &value)| Gauge { key: key.clone(), value }).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> GaugeKey {
        GaugeKey { name: "orders".into(), labels: vec![("region".into(), format!("r{i}"))] }
    }

    #[test]
    fn gauges_keep_the_latest_value_and_stop_growing_at_the_bound() {
        let m = SubtaskMetrics::default();
        m.set_gauge(key(0), 1.0);
        m.set_gauge(key(0), 2.0);
        assert_eq!(m.gauges(), vec![Gauge { key: key(0), value: 2.0 }]);
        for i in 1..MAX_GAUGES + 10 {
            m.set_gauge(key(i), i as f64);
        }
        assert_eq!((m.gauges().len(), m.gauges_dropped.load(Relaxed)), (MAX_GAUGES, 10));
        m.set_gauge(key(0), 3.0);
        assert_eq!(m.gauges()[0], Gauge { key: key(0), value: 3.0 }, "a kept gauge still moves");
    }
}
