//! A splittable, optionally rate-limited source of generated events (Flink's
//! `DataGeneratorSource`): [`StreamEnv::datagen`](crate::env::StreamEnv::datagen)
//! turns any pure function of the event number `n` into a parallel stream.
//!
//! Because every event is a function of its number, any subtask can produce
//! any range of the stream. The source splits the numbers into blocks of
//! [`BLOCK`] events dealt round-robin to the subtasks: all subtasks move
//! through event time together, which keeps window state small. Its position
//! is checkpointed and dealt over the new subtasks when a job is restored at
//! another parallelism. The benchmark workloads (`weir-workloads`) are built on it.
//!
//! ```
//! use weir::prelude::*;
//! let env = StreamEnv::new("squares");
//! env.set_parallelism(2);
//! let squares = env.datagen("squares", |n| n * n, Some(10), None).collect();
//! env.execute().unwrap();
//! let mut values = squares.values();
//! values.sort();
//! assert_eq!(values, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_core::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use weir_core::metrics::SubtaskMetrics;
use weir_core::source::{Source, SourcePoll};
use weir_core::state::codec;
use weir_core::{NO_TIMESTAMP, Record, TaskResult};

/// Events per block of the datagen split.
pub const BLOCK: u64 = 1024;

/// Which part of a generated stream one source subtask produces.
#[derive(Clone, Copy, Debug)]
pub struct DatagenSplit {
    pub subtask: usize,
    pub parallelism: usize,
    /// Events in the whole stream; unbounded when `None`.
    pub count: Option<u64>,
    /// Events per second over all subtasks; unthrottled when `None`.
    pub rate: Option<f64>,
}

/// One lane of a generated stream: blocks `next_block, next_block + stride, ...`,
/// the first of them from `offset`. A subtask starts with one lane; after a
/// restore at another parallelism it may have several, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lane {
    pub next_block: u64,
    pub stride: u64,
    pub offset: u64,
}

/// A source producing `generate(n)` for its share of event numbers.
pub struct DatagenSource<T, G> {
    generate: G,
    split: DatagenSplit,
    lanes: std::collections::VecDeque<Lane>,
    /// The part of the whole stream this subtask's lanes make (what its part of
    /// `rate` is): 1/parallelism, until a restore deals lanes unevenly.
    share: f64,
    emitted: u64,
    started: Option<Instant>,
    /// Where a rate-limited source reports its backlog (`pending_records`).
    metrics: Option<Arc<SubtaskMetrics>>,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T, G: Fn(u64) -> T> DatagenSource<T, G> {
    pub fn new(generate: G, split: DatagenSplit) -> Self {
        let lane = Lane { next_block: split.subtask as u64, stride: split.parallelism as u64, offset: 0 };
        DatagenSource {
            generate,
            split,
            lanes: [lane].into(),
            share: lane.share(),
            emitted: 0,
            started: None,
            metrics: None,
            _t: std::marker::PhantomData,
        }
    }

    /// Reports the backlog under a rate to `metrics`: the events due by now
    /// and not produced yet (a downstream that cannot keep up makes it grow,
    /// as a consumer's lag on a Kafka topic).
    pub fn with_metrics(mut self, metrics: Arc<SubtaskMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn report_backlog(&self, backlog: u64) {
        if let Some(m) = &self.metrics {
            m.pending_records.store(i64::try_from(backlog).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }

    fn past(lane: &Lane, count: Option<u64>) -> bool {
        count.is_some_and(|count| lane.position() >= count)
    }
}

impl Lane {
    /// The number of the next event of this lane.
    pub fn position(&self) -> u64 {
        self.next_block * BLOCK + self.offset
    }

    /// The part of the stream's blocks this lane has.
    pub fn share(&self) -> f64 {
        1.0 / self.stride.max(1) as f64
    }

    /// The same blocks as `k` lanes, for spreading one lane over more subtasks.
    pub fn split(&self, k: u64) -> impl Iterator<Item = Lane> + '_ {
        (0..k).map(move |i| Lane {
            next_block: self.next_block + i * self.stride,
            stride: self.stride * k,
            offset: if i == 0 { self.offset } else { 0 },
        })
    }
}

impl<T: Send, G: Fn(u64) -> T + Send> Source<T> for DatagenSource<T, G> {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> TaskResult<SourcePoll> {
        // The lane furthest behind goes first: lanes restored at different positions
        // then move through event time together, and the one watermark of this
        // subtask never runs ahead of a lagging lane (the per-split watermark rule).
        // Exhausted lanes stay, so that a finished source's snapshot says so.
        let count = self.split.count;
        let open = (0..self.lanes.len()).filter(|&i| !Self::past(&self.lanes[i], count));
        let Some(behind) = open.min_by_key(|&i| self.lanes[i].position()) else {
            self.report_backlog(0);
            return Ok(SourcePoll::Finished);
        };
        let mut lane = self.lanes.remove(behind).expect("index in range");
        let first = lane.next_block * BLOCK + lane.offset;
        let mut end = (lane.next_block + 1) * BLOCK;
        if let Some(count) = self.split.count {
            end = end.min(count);
        }
        if let Some(rate) = self.split.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            let per_subtask = rate * self.share;
            let allowed = (started.elapsed().as_secs_f64() * per_subtask) as u64 + 1;
            if self.emitted >= allowed {
                self.report_backlog(0);
                self.lanes.push_front(lane);
                return Ok(SourcePoll::Idle(Duration::from_millis(10)));
            }
            end = end.min(first + (allowed - self.emitted));
            self.report_backlog(allowed - self.emitted - (end - first));
        }
        out.reserve(end.saturating_sub(first) as usize);
        out.extend((first..end).map(|n| Record::new(NO_TIMESTAMP, (self.generate)(n))));
        self.emitted += end - first;
        if end == (lane.next_block + 1) * BLOCK {
            lane.next_block += lane.stride;
            lane.offset = 0;
        } else {
            lane.offset = end - lane.next_block * BLOCK;
        }
        self.lanes.push_back(lane);
        Ok(SourcePoll::Ready)
    }

    fn snapshot_state(&mut self) -> TaskResult<OperatorSnapshot> {
        let entries = self.lanes.iter().map(codec::encode).collect();
        Ok(OperatorSnapshot { keyed: Vec::new(), entries })
    }

    /// Deals the lanes of all old subtasks over the new ones; when there are fewer
    /// lanes than subtasks, each lane is first split so that every subtask gets work.
    /// Every subtask computes the same list, so the deal is consistent.
    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        if state.all_entries.is_empty() {
            return Ok(()); // a source new to the job (nothing of it in the snapshot): start afresh
        }
        let all: Vec<Lane> =
            state.all_entries.iter().map(|e| codec::decode(e, "a datagen position")).collect::<TaskResult<_>>()?;
        let p = self.split.parallelism;
        let k = if all.is_empty() { 1 } else { p.div_ceil(all.len()) as u64 };
        let lanes: Vec<Lane> = all.iter().flat_map(|l| l.split(k).collect::<Vec<_>>()).collect();
        self.lanes =
            lanes.into_iter().enumerate().filter(|(i, _)| i % p == self.split.subtask).map(|(_, l)| l).collect();
        // Paced by what it has: a subtask dealt two lanes of four runs at half the rate.
        self.share = self.lanes.iter().map(Lane::share).sum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_every_event_once() {
        for p in 1..=4 {
            let mut seen = Vec::new();
            for i in 0..p {
                let split = DatagenSplit { subtask: i, parallelism: p, count: Some(5_000), rate: None };
                let mut s = DatagenSource::new(|n| n, split);
                let mut out = Vec::new();
                while s.poll(&mut out).unwrap() != SourcePoll::Finished {}
                seen.extend(out.into_iter().map(|r| r.value));
            }
            seen.sort();
            assert_eq!(seen, (0..5_000).collect::<Vec<_>>());
        }
    }

    /// Events generated before the snapshot plus those after restoring at `p`: each exactly once?
    fn restored_run(p: usize, count: u64) -> (usize, usize, bool) {
        let split = |subtask, parallelism| DatagenSplit { subtask, parallelism, count: Some(count), rate: None };
        let (mut seen, mut lanes) = (Vec::new(), Vec::new());
        for i in 0..3 {
            let mut s = DatagenSource::new(|n| n, split(i, 3));
            let mut out = Vec::new();
            for _ in 0..(i + 2) {
                s.poll(&mut out).unwrap();
            }
            seen.extend(out.into_iter().map(|r| r.value));
            lanes.extend(s.snapshot_state().unwrap().entries);
        }
        let mut every_subtask_works = true;
        for j in 0..p {
            let mut s = DatagenSource::new(|n| n, split(j, p));
            s.restore_state(RestoredState { keyed: vec![], entries: vec![], all_entries: lanes.clone() }).unwrap();
            let mut out = Vec::new();
            while s.poll(&mut out).unwrap() != SourcePoll::Finished {}
            every_subtask_works &= !out.is_empty();
            seen.extend(out.into_iter().map(|r| r.value));
        }
        seen.sort();
        let total = seen.len();
        seen.dedup();
        let missing = (0..count).filter(|n| seen.binary_search(n).is_err()).count();
        (total - seen.len(), missing, every_subtask_works)
    }

    #[test]
    fn a_restored_position_continues_exactly_at_any_parallelism() {
        // 3 subtasks part of the way, then restored onto fewer and onto more subtasks.
        for p in [1, 2, 3, 7] {
            let (duplicates, missing, all_work) = restored_run(p, 20_000);
            assert_eq!((duplicates, missing), (0, 0), "(duplicates, missing) restoring at parallelism {p}");
            assert!(all_work, "every subtask gets work restoring at parallelism {p}");
        }
    }

    /// After a restore at another parallelism the subtasks' rates follow the lanes they
    /// were dealt: together they keep the configured rate, and all lanes end together.
    #[test]
    fn restored_subtasks_share_the_rate_by_their_lanes() {
        let split = |subtask, parallelism| DatagenSplit { subtask, parallelism, count: None, rate: Some(9_000.0) };
        let lanes: Vec<Vec<u8>> =
            (0..2).flat_map(|i| DatagenSource::new(|n| n, split(i, 2)).snapshot_state().unwrap().entries).collect();
        let shares: Vec<f64> = (0..3)
            .map(|j| {
                let mut s = DatagenSource::new(|n| n, split(j, 3));
                s.restore_state(RestoredState { keyed: vec![], entries: vec![], all_entries: lanes.clone() }).unwrap();
                s.share
            })
            .collect();
        // 2 lanes split into 4, dealt 2, 1, 1.
        assert_eq!(shares, [0.5, 0.25, 0.25]);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_rate_limited_source_reports_its_backlog() {
        let metrics = Arc::new(SubtaskMetrics::default());
        let split = DatagenSplit { subtask: 0, parallelism: 1, count: None, rate: Some(100_000.0) };
        let mut s = DatagenSource::new(|n| n, split).with_metrics(metrics.clone());
        let backlog = || metrics.pending_records.load(Ordering::Relaxed);
        let mut out = Vec::new();
        s.poll(&mut out).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.poll(&mut out).unwrap();
        // 10k events due after 100 ms, at most a block of them produced per poll.
        assert!(backlog() > 5_000, "a slow reader leaves a backlog: {}", backlog());
        while s.poll(&mut out).unwrap() == SourcePoll::Ready {}
        assert_eq!(backlog(), 0, "caught up: the source waits for the rate");
    }

    #[test]
    fn a_finished_source_stays_finished_and_a_new_one_starts_afresh() {
        let split = DatagenSplit { subtask: 0, parallelism: 1, count: Some(3000), rate: None };
        let mut done = DatagenSource::new(|n| n, split);
        let mut out = Vec::new();
        while done.poll(&mut out).unwrap() != SourcePoll::Finished {}
        let snapshot = done.snapshot_state().unwrap();
        assert!(!snapshot.entries.is_empty(), "a finished source's snapshot records that it finished");
        let mut restored = DatagenSource::new(|n| n, split);
        restored.restore_state(RestoredState { all_entries: snapshot.entries, ..Default::default() }).unwrap();
        assert_eq!(restored.poll(&mut Vec::new()).unwrap(), SourcePoll::Finished);
        let mut fresh = DatagenSource::new(|n| n, split);
        fresh.restore_state(RestoredState::default()).unwrap();
        let mut out = Vec::new();
        fresh.poll(&mut out).unwrap();
        assert_eq!(out.len(), BLOCK as usize, "no state for it in the snapshot: it starts from the beginning");
    }

    #[test]
    fn lanes_at_different_positions_advance_together() {
        // One subtask with lanes far apart emits from the one behind first.
        let mut s = DatagenSource::new(|n| n, DatagenSplit { subtask: 0, parallelism: 1, count: None, rate: None });
        let lanes = [Lane { next_block: 50, stride: 2, offset: 0 }, Lane { next_block: 1, stride: 2, offset: 0 }];
        let all_entries = lanes.iter().map(codec::encode).collect();
        s.restore_state(RestoredState { keyed: vec![], entries: vec![], all_entries }).unwrap();
        let mut out = Vec::new();
        for _ in 0..24 {
            s.poll(&mut out).unwrap();
        }
        assert!(out.iter().all(|r| r.value < 50 * BLOCK), "the lane ahead waits until the lane behind caught up");
        for _ in 0..10 {
            s.poll(&mut out).unwrap();
        }
        assert!(out.iter().any(|r| r.value >= 50 * BLOCK));
    }
}
