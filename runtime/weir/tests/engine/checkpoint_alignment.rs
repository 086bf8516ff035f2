//! Checkpoints inside the engine: exactly-once snapshots of jobs with many
//! inputs, a slow input, inputs that end early, alignments that go over
//! budget, and checkpoint storage that fails. Every test compares the
//! transactional file sink's committed output with an uninterrupted run's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use weir_workloads::WorkloadStreams;

use weir::core::checkpoint::coordinator::{CheckpointConfig, CheckpointStatus};
use weir::core::checkpoint::metadata::RestoredSnapshot;
use weir::core::checkpoint::storage::{CheckpointStorage, LocalStorage, StorageError, StorageResult};
use weir::core::executor::{ExecuteOptions, JobHandle};
use weir::core::{JobError, Timestamp};
use weir::prelude::*;
use weir_workloads::Order;

const JOB: &str = "alignment";

/// Three inputs: a fast one, a slow (rate-limited) one, and a short one that ends early;
/// keyed one-minute windows over their union; the committed rows go to `out`.
fn build(env: &StreamEnv, out: &Path, fast: u64, slow_rate: f64) {
    let wm = || WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5));
    let time = |o: &Order| o.time;
    let a = env.orders(Some(fast), None).assign_timestamps(wm(), time);
    let b = env
        .datagen("slow", |n| weir_workloads::order(n + 10_000_000), Some(20_000), Some(slow_rate))
        .assign_timestamps(wm(), time);
    let c =
        env.datagen("short", |n| weir_workloads::order(n + 20_000_000), Some(500), None).assign_timestamps(wm(), time);
    a.union(b)
        .union(c)
        .key_by(|o| o.region)
        .window(WindowAssigner::tumbling(Duration::from_secs(60)))
        .aggregate(Count, |region, w, n: i64| (region.to_string(), w.start, n))
        .write_json(out);
}

#[derive(Clone)]
struct Count;

impl AggregateFunction<Order> for Count {
    type Acc = i64;
    type Result = i64;
    fn create(&self) -> i64 {
        0
    }
    fn add(&self, acc: &mut i64, _: &Order) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut i64, other: i64) {
        *acc += other;
    }
    fn result(&self, acc: &i64) -> i64 {
        *acc
    }
}

type Rows = BTreeMap<(String, Timestamp), i64>;

/// The committed rows of a file sink directory; a row twice is a failure.
fn committed(dir: &Path) -> Rows {
    let mut rows = Rows::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("part-") {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let (region, start, n): (String, Timestamp, i64) = serde_json::from_str(line).unwrap();
            assert!(rows.insert((region.clone(), start), n).is_none(), "row ({region}, {start}) committed twice");
        }
    }
    rows
}

fn env(parallelism: usize) -> StreamEnv {
    let env = StreamEnv::new(JOB);
    env.set_parallelism(parallelism);
    env
}

/// The rows of an uninterrupted run without checkpoints.
fn expected(fast: u64) -> Rows {
    let tmp = tempfile::tempdir().unwrap();
    let e = env(2);
    build(&e, &tmp.path().join("out"), fast, 1e9);
    e.execute().unwrap();
    committed(&tmp.path().join("out"))
}

fn config(storage: Arc<dyn CheckpointStorage>, interval_ms: u64) -> CheckpointConfig {
    let mut c = CheckpointConfig::new(storage, Duration::from_millis(interval_ms));
    c.retained = 2;
    c
}

fn wait(job: JobHandle) -> (Result<(), JobError>, Vec<weir::core::checkpoint::coordinator::CheckpointStats>) {
    job.wait_with_checkpoints()
}

#[test]
fn a_job_stopped_midway_resumes_exactly_from_its_checkpoint_at_another_parallelism() {
    let fast = 400_000;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalStorage::new(tmp.path().join("ck")));

    // First run: many inputs, one slow, one that ends at once; stopped hard once checkpoints exist.
    let e = env(2);
    build(&e, &out, fast, 20_000.0);
    let history = crate::common::stop_after_three_checkpoints(e, config(storage.clone(), 30));
    assert!(history.iter().any(|c| c.status == CheckpointStatus::Completed), "{history:?}");

    // Second run from the latest checkpoint, at parallelism 3, to the end.
    let restore = RestoredSnapshot::latest(storage.clone(), JOB).unwrap();
    let e = env(3);
    build(&e, &out, fast, 1e9);
    let job = e
        .start_with(ExecuteOptions {
            checkpointing: Some(config(storage, 30)),
            restore: Some(restore),
            ..Default::default()
        })
        .unwrap();
    wait(job).0.unwrap();
    assert_eq!(committed(&out), expected(fast));
}

#[test]
fn checkpoints_complete_after_an_input_ended_and_under_a_slow_input() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalStorage::new(tmp.path().join("ck")));
    let e = env(2);
    build(&e, &out, 50_000, 40_000.0); // the slow input takes about half a second
    let job = e
        .start_with(ExecuteOptions { checkpointing: Some(config(storage, 20)), restore: None, ..Default::default() })
        .unwrap();
    let (result, history) = wait(job);
    result.unwrap();
    let completed = history.iter().filter(|c| c.status == CheckpointStatus::Completed).count();
    assert!(completed >= 3, "the short input ended at once, yet checkpoints must go on completing: {history:?}");
    assert_eq!(committed(&out), expected(50_000));
}

#[test]
fn alignment_over_budget_declines_checkpoints_without_losing_or_repeating_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalStorage::new(tmp.path().join("ck")));
    let mut cfg = config(storage, 5);
    cfg.alignment_budget = 1; // any held-back batch is over budget
    cfg.tolerable_failures = usize::MAX;
    let e = env(2);
    build(&e, &out, 200_000, 40_000.0);
    let job = e.start_with(ExecuteOptions { checkpointing: Some(cfg), restore: None, ..Default::default() }).unwrap();
    let (result, history) = wait(job);
    result.unwrap();
    let declined = history.iter().filter(|c| c.failure.as_deref().is_some_and(|f| f.contains("alignment"))).count();
    assert!(declined > 0, "some alignments went over budget: {history:?}");
    assert_eq!(committed(&out), expected(200_000));
}

/// Local storage whose state-file writes fail for chosen checkpoint ids (a fault
/// injector for the store, not a stand-in for the engine under test).
#[derive(Debug)]
struct Flaky {
    inner: LocalStorage,
    failed: AtomicUsize,
    /// Writes into `chk-N/` fail when `N % fail_every == 0`.
    fail_every: u64,
}

impl Flaky {
    fn new(root: &Path, fail_every: u64) -> Flaky {
        Flaky { inner: LocalStorage::new(root), failed: AtomicUsize::new(0), fail_every }
    }
}

impl CheckpointStorage for Flaky {
    fn put(&self, path: &str, bytes: &[u8]) -> StorageResult<()> {
        let id = path.split('/').find_map(|p| p.strip_prefix("chk-")).and_then(|id| id.parse::<u64>().ok());
        if id.is_some_and(|id| id % self.fail_every == 0) && path.ends_with(".state") {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Err(StorageError::failed(self.inner.uri(path), "injected upload failure"));
        }
        self.inner.put(path, bytes)
    }
    fn get(&self, path: &str) -> StorageResult<Vec<u8>> {
        self.inner.get(path)
    }
    fn get_range(&self, path: &str, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        self.inner.get_range(path, offset, len)
    }
    fn list(&self, prefix: &str) -> StorageResult<Vec<String>> {
        self.inner.list(prefix)
    }
    fn delete(&self, path: &str) -> StorageResult<()> {
        self.inner.delete(path)
    }
    fn uri(&self, path: &str) -> String {
        self.inner.uri(path)
    }
}

#[test]
fn a_failed_upload_aborts_that_checkpoint_not_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let flaky = Flaky::new(&tmp.path().join("ck"), 3);
    let e = env(2);
    build(&e, &out, 100_000, 40_000.0);
    let job = e
        .start_with(ExecuteOptions {
            checkpointing: Some(config(Arc::new(flaky), 20)),
            restore: None,
            ..Default::default()
        })
        .unwrap();
    let (result, history) = wait(job);
    result.unwrap();
    assert!(
        history.iter().any(|c| c.failure.as_deref().is_some_and(|f| f.contains("injected upload failure"))),
        "{history:?}"
    );
    assert!(history.iter().any(|c| c.status == CheckpointStatus::Completed), "{history:?}");
    assert_eq!(committed(&out), expected(100_000));
}

#[test]
fn storage_that_always_fails_fails_the_job_past_the_tolerance() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let broken = Flaky::new(&tmp.path().join("ck"), 1);
    let mut cfg = config(Arc::new(broken), 10);
    cfg.tolerable_failures = 3;
    let e = env(1);
    build(&e, &out, 100_000, 40_000.0);
    let job = e.start_with(ExecuteOptions { checkpointing: Some(cfg), restore: None, ..Default::default() }).unwrap();
    let err = wait(job).0.unwrap_err().to_string();
    assert!(err.contains("checkpointing failed") && err.contains("injected upload failure"), "{err}");
    assert!(committed(&out).is_empty(), "nothing may be committed without a checkpoint");
}
