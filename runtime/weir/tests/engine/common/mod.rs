//! Helpers shared by the integration tests: sources that emit in a controlled
//! order and stay open on request, sinks that observe where and when records
//! arrive, and access to a running job's metrics.
//!
//! Every helper is a real [`Source`] or [`Sink`] run by the engine; nothing
//! here replaces a part of the engine under test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir::core::executor::ChainMetrics;
use weir::core::metrics::MetricsSnapshot;
use weir::core::operator::sink::Sink;
use weir::core::source::{Source, SourcePoll};
use weir::core::{Data, NO_TIMESTAMP, Record, TaskResult};
use weir::prelude::*;
use weir_workloads::Order;

/// Emits its items one per poll. A source task pushes each poll's records
/// downstream before the next poll, so with a timestamp assigner chained
/// after it every record is followed by the watermark it causes: the order of
/// records and watermarks seen downstream is fully determined.
pub struct OneByOne<T> {
    items: Arc<Vec<T>>,
    next: usize,
}

impl<T: Clone + Send + Sync> Source<T> for OneByOne<T> {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> TaskResult<SourcePoll> {
        let Some(item) = self.items.get(self.next) else {
            return Ok(SourcePoll::Finished);
        };
        out.push(Record::new(NO_TIMESTAMP, item.clone()));
        self.next += 1;
        Ok(SourcePoll::Ready)
    }
}

/// A non-parallel stream of `items`, one record per poll (see [`OneByOne`]).
pub fn one_by_one<T: Data + Sync>(env: &StreamEnv, items: Vec<T>) -> DataStream<T> {
    let items = Arc::new(items);
    env.add_source("one-by-one", move |_| Box::new(OneByOne { items: items.clone(), next: 0 })).set_parallelism(1)
}

/// A flag a test raises to let held-open sources finish, with the deadline
/// after which they give up waiting (and say so).
#[derive(Clone)]
pub struct Release {
    released: Arc<AtomicBool>,
    deadline_hit: Arc<AtomicBool>,
    timeout: Duration,
}

impl Release {
    pub fn new(timeout: Duration) -> Self {
        Release { released: Arc::default(), deadline_hit: Arc::default(), timeout }
    }

    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }

    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    /// True when a source stopped waiting because the timeout passed first.
    pub fn deadline_hit(&self) -> bool {
        self.deadline_hit.load(Ordering::SeqCst)
    }
}

/// Emits `items` one per poll, pausing `pause` after each, then stays open
/// (idle, emitting nothing) until released or until the release times out.
/// Once released it finishes at once, even with items left.
pub struct HeldOpen<T> {
    items: Vec<T>,
    next: usize,
    pause: Duration,
    release: Release,
    started: Option<Instant>,
}

impl<T> HeldOpen<T> {
    pub fn new(items: Vec<T>, pause: Duration, release: Release) -> Self {
        HeldOpen { items, next: 0, pause, release, started: None }
    }
}

impl<T: Clone + Send> Source<T> for HeldOpen<T> {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> TaskResult<SourcePoll> {
        let started = *self.started.get_or_insert_with(Instant::now);
        if self.release.is_released() {
            return Ok(SourcePoll::Finished);
        }
        if let Some(item) = self.items.get(self.next) {
            out.push(Record::new(NO_TIMESTAMP, item.clone()));
            self.next += 1;
            return Ok(if self.pause.is_zero() { SourcePoll::Ready } else { SourcePoll::Idle(self.pause) });
        }
        if started.elapsed() >= self.release.timeout {
            self.release.deadline_hit.store(true, Ordering::SeqCst);
            return Ok(SourcePoll::Finished);
        }
        Ok(SourcePoll::Idle(Duration::from_millis(5)))
    }
}

/// A sink calling `f(subtask index, record)` for every record it receives.
pub struct FnSink<F> {
    subtask: usize,
    f: F,
}

impl<T, F: FnMut(usize, Record<T>) + Send> Sink<T> for FnSink<F> {
    fn write(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        for r in batch {
            (self.f)(self.subtask, r);
        }
        Ok(())
    }
}

/// Ends `stream` in a sink that calls `f(subtask index, record)` per record.
pub fn for_each<T: Data>(
    stream: DataStream<T>,
    name: &str,
    f: impl FnMut(usize, Record<T>) + Clone + Send + Sync + 'static,
) {
    stream.sink(name, move |info| FnSink { subtask: info.index, f: f.clone() });
}

/// Records with the index of the subtask that received them.
pub type BySubtask<T> = Arc<Mutex<Vec<(usize, Record<T>)>>>;

/// Collects `(subtask index, record)` pairs of `stream`.
pub fn collect_by_subtask<T: Data>(stream: DataStream<T>) -> BySubtask<T> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    for_each(stream, "collect-by-subtask", move |i, r| s.lock().unwrap().push((i, r)));
    seen
}

/// The live metrics of the chain (task) that runs `vertex`.
pub fn chain<'a>(chains: &'a [ChainMetrics], vertex: &str) -> &'a ChainMetrics {
    chains
        .iter()
        .find(|c| c.vertices.iter().any(|v| v == vertex))
        .unwrap_or_else(|| panic!("no chain runs a vertex named {vertex}"))
}

/// Runs the job to completion; returns its metrics, aggregated per chain on request.
pub fn run(env: StreamEnv) -> Arc<Vec<ChainMetrics>> {
    let handle = env.start().expect("job starts");
    let chains = handle.chains.clone();
    handle.wait().expect("job succeeds");
    chains
}

/// Aggregated metrics of the chain running `vertex`.
pub fn metrics_of(chains: &[ChainMetrics], vertex: &str) -> MetricsSnapshot {
    chain(chains, vertex).aggregate()
}

/// Counts records per window: the aggregate most tests use.
#[derive(Clone)]
pub struct Count;

impl<T> AggregateFunction<T> for Count {
    type Acc = u64;
    type Result = u64;
    fn create(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _: &T) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
}

/// A small deterministic pseudo-random sequence (SplitMix64) for test inputs.
pub fn pseudo_random(seed: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| weir::core::keygroup::mix64(seed.wrapping_mul(0x9E37_79B9).wrapping_add(i))).collect()
}

/// Count and sum of `amount` per window.
#[derive(Clone)]
pub struct CountSum;

impl AggregateFunction<Order> for CountSum {
    type Acc = (u64, i64);
    type Result = (u64, i64);
    fn create(&self) -> (u64, i64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (u64, i64), o: &Order) {
        acc.0 += 1;
        acc.1 += o.amount;
    }
    fn merge(&self, acc: &mut (u64, i64), other: (u64, i64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn result(&self, acc: &(u64, i64)) -> (u64, i64) {
        *acc
    }
}

/// The exact-resume check of a job writing exactly-once output: builds it
/// with `build(env, output directory, source rate)` at parallelism 2 with its
/// sources at `rate` and checkpoints every 30 ms, stops it hard after three
/// checkpoints, resumes it unthrottled at parallelism 3 from the latest one,
/// and runs it again uninterrupted at 2. Returns what `read` finds in the
/// resumed output and in the uninterrupted one, to compare.
pub fn resumed_and_uninterrupted<R>(
    job: &str,
    rate: f64,
    build: impl Fn(&StreamEnv, &std::path::Path, Option<f64>),
    read: impl Fn(&std::path::Path) -> R,
) -> (R, R) {
    use weir::core::checkpoint::storage::{CheckpointStorage, LocalStorage};
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalStorage::new(tmp.path().join("ck")));
    let checkpointing = || {
        let mut c =
            weir::core::checkpoint::coordinator::CheckpointConfig::new(storage.clone(), Duration::from_millis(30));
        c.retained = 2;
        c
    };
    let env = |parallelism| {
        let env = StreamEnv::new(job);
        env.set_parallelism(parallelism);
        env
    };
    let (out, uninterrupted) = (tmp.path().join("out"), tmp.path().join("uninterrupted"));
    let e = env(2);
    build(&e, &out, Some(rate));
    stop_after_three_checkpoints(e, checkpointing());
    let e = env(3);
    build(&e, &out, None);
    resume_from_latest(e, job, checkpointing());
    let e = env(2);
    build(&e, &uninterrupted, None);
    e.execute().expect("the uninterrupted job succeeds");
    (read(&out), read(&uninterrupted))
}

/// Runs `env` to its end from the latest snapshot of `job` in the storage of
/// `checkpointing`, taking checkpoints on the way.
pub fn resume_from_latest(
    env: StreamEnv,
    job: &str,
    checkpointing: weir::core::checkpoint::coordinator::CheckpointConfig,
) {
    let restore = weir::core::checkpoint::metadata::RestoredSnapshot::latest(checkpointing.storage.clone(), job)
        .expect("a snapshot to resume from");
    let options = weir::core::executor::ExecuteOptions {
        checkpointing: Some(checkpointing),
        restore: Some(restore),
        ..Default::default()
    };
    let job = env.start_with(options).expect("job starts");
    job.wait_with_checkpoints().0.expect("the resumed job succeeds");
}

/// Starts `env` with `checkpointing`, stops it hard once three checkpoints
/// have completed (failing if it ends first), and waits for it to stop.
pub fn stop_after_three_checkpoints(
    env: StreamEnv,
    checkpointing: weir::core::checkpoint::coordinator::CheckpointConfig,
) -> Vec<weir::core::checkpoint::coordinator::CheckpointStats> {
    use weir::core::checkpoint::coordinator::CheckpointStatus;
    let options = weir::core::executor::ExecuteOptions { checkpointing: Some(checkpointing), ..Default::default() };
    let job = env.start_with(options).expect("job starts");
    while job.checkpoints().iter().filter(|c| c.status == CheckpointStatus::Completed).nth(2).is_none() {
        assert!(!job.is_finished(), "the job ended before three checkpoints completed");
        std::thread::sleep(Duration::from_millis(5));
    }
    job.stop();
    let (result, history) = job.wait_with_checkpoints();
    result.expect("the stopped job ends cleanly");
    history
}

/// How many times each line was committed to the `part-` files of `dir` (an
/// exactly-once file sink's output; a line twice is a duplicate).
pub fn committed_lines(dir: &std::path::Path) -> std::collections::BTreeMap<String, usize> {
    let mut lines = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with("part-") {
            for line in std::fs::read_to_string(e.path()).unwrap().lines() {
                *lines.entry(line.to_string()).or_default() += 1;
            }
        }
    }
    lines
}
