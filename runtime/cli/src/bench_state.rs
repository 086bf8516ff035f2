//! `weir bench state`: how checkpoint size, checkpoint time and restore time
//! grow with keyed state.
//!
//! A real job, built with the `weir` API: a bounded source of `K` keys
//! (`K = state_mb MiB / VALUE_BYTES`), keyed by key, into a keyed process
//! function that keeps a [`VALUE_BYTES`]-byte value per key in a `ValueState`
//! (bytes derived from the key, incompressible and never all zero). The job
//! runs with checkpointing but an interval far beyond its run time, so its
//! only checkpoint is the final one, taken when the source has finished, with
//! every key in it.
//!
//! Then the same graph is built again and started from that checkpoint
//! (`RestoredSnapshot::latest`). Each subtask restores its state on its own
//! thread before its first record, so the restore time is the time from the
//! start until every sink subtask has its first record (and the CPU the
//! process spent by then). The
//! restored job gets the same keys again and its function checks each one:
//! found with the expected bytes (restored), found with other bytes
//! (corrupt), or not found (missing). A correct restore has `restored_keys = K`
//! and nothing else. The restored job checkpoints as the first one did, so its
//! final checkpoint (the same state again) is a second checkpoint figure.
//!
//! Storage calls go through a wrapper that times them, so the figures split
//! into storage time (`*_storage_ms`) and the engine's own work (snapshotting,
//! encoding, decoding, building hash tables).
//!
//! With `--rounds R --change-percent P` the first job goes on after its
//! first checkpoint (taken once every key is stored): R times, it changes P %
//! of the keys (a new value, from the key and the round) and waits for the
//! next checkpoint, which then holds that round's changes (what an
//! incremental checkpoint stores). The restored job checks each key against
//! its value after the last round it changed in.
//!
//! The source keeps no position in checkpoints (it replays every key on every
//! run, which the restored job's check needs); the function's state is all
//! the checkpoints hold. The job's snapshots are deleted at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weir::core::checkpoint::coordinator::{CheckpointConfig, CheckpointStats, CheckpointStatus};
use weir::core::checkpoint::metadata::RestoredSnapshot;
use weir::core::checkpoint::storage::{CheckpointStorage, StorageResult};
use weir::core::executor::{ExecuteOptions, JobHandle};
use weir::core::keygroup::mix64;
use weir::core::operator::sink::Sink;
use weir::core::source::{Source, SourcePoll};
use weir::core::{NO_TIMESTAMP, TaskResult};
use weir::prelude::*;

use crate::bench::{cpu_time, peak_rss_kib};

/// Bytes of state per key (the value; the key and the encoding add about 10).
pub const VALUE_BYTES: usize = 1024;
/// Keys per poll of the source.
const BATCH: u64 = 1024;

/// The value key `key` keeps after `version` changes: `VALUE_BYTES` bytes of `mix64` output.
pub fn value_of(key: u64, version: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_BYTES);
    let seed = key.wrapping_mul(VALUE_BYTES as u64 / 8) ^ (u64::from(version) << 40);
    for i in 0..(VALUE_BYTES / 8) as u64 {
        v.extend_from_slice(&mix64(seed.wrapping_add(i)).to_le_bytes());
    }
    v
}

/// The rounds of changes after the first checkpoint: how many, and the share
/// of keys each changes (in hundredths of a percent).
#[derive(Clone, Copy, Debug, Default)]
pub struct Rounds {
    pub rounds: u32,
    pub basis_points: u64,
}

impl Rounds {
    /// Whether round `round` (from 1) changes `key`.
    fn changes(&self, key: u64, round: u32) -> bool {
        mix64(key ^ (u64::from(round) << 48) ^ 0x5eed) % 10_000 < self.basis_points
    }

    /// How many times `key` changed over all rounds: its last version.
    fn version(&self, key: u64) -> u32 {
        (1..=self.rounds).filter(|&r| self.changes(key, r)).count() as u32
    }
}

/// Keys `subtask, subtask + parallelism, ...` below `keys`, each with its
/// version; then, when asked for, the rounds of changes, one per checkpoint.
/// No checkpointed position.
struct KeySource {
    next: u64,
    step: u64,
    keys: u64,
    /// 0: every key at `version` (its initial one, or its last for the check);
    /// then the round being sent.
    round: u32,
    rounds: Rounds,
    /// The first job's keys start at version 0; the restored job's at their last.
    check: bool,
    /// Waiting for a checkpoint before the next round.
    waiting: bool,
}

impl Source<(u64, u32)> for KeySource {
    fn poll(&mut self, out: &mut Vec<Record<(u64, u32)>>) -> TaskResult<SourcePoll> {
        if self.waiting {
            return Ok(SourcePoll::Idle(Duration::from_millis(5)));
        }
        let mut n = 0;
        while self.next < self.keys && n < BATCH {
            let key = self.next;
            self.next += self.step;
            let version = match (self.round, self.check) {
                (0, false) => 0,
                (0, true) => self.rounds.version(key),
                (round, _) if self.rounds.changes(key, round) => {
                    (1..=round).filter(|&r| self.rounds.changes(key, r)).count() as u32
                }
                _ => continue,
            };
            out.push(Record::new(NO_TIMESTAMP, (key, version)));
            n += 1;
        }
        if self.next < self.keys {
            return Ok(SourcePoll::Ready);
        }
        if self.check || self.round >= self.rounds.rounds {
            return Ok(SourcePoll::Finished);
        }
        // This pass is sent: the next starts after a checkpoint.
        self.waiting = true;
        self.round += 1;
        self.next %= self.step.max(1);
        Ok(SourcePoll::Idle(Duration::from_millis(5)))
    }

    fn snapshot_state(&mut self) -> TaskResult<weir::core::checkpoint::metadata::OperatorSnapshot> {
        self.waiting = false;
        Ok(Default::default())
    }
}

/// What the function found for a key (the function's output; an index into [`Tally`]).
type Found = u8;
/// No state: stored now.
const MISSING: Found = 0;
/// State with the expected bytes.
const RESTORED: Found = 1;
/// State with other bytes.
const CORRUPT: Found = 2;
/// A round's change, stored.
const CHANGED: Found = 3;

/// Keeps `value_of(key, version)` per key; reports what it found before.
#[derive(Clone, Default)]
struct KeepValue {
    value: Option<ValueState<Vec<u8>>>,
    /// The restored job: a value other than the expected one is corrupt
    /// (the first job replaces it: a round's change).
    check: bool,
}

impl KeyedProcessFunction<u64, (u64, u32), Found> for KeepValue {
    fn open(&mut self, state: &mut KeyedState<u64>) {
        self.value = Some(state.value("value"));
    }

    fn process_element(&mut self, (key, version): (u64, u32), ctx: &mut ProcessContext<'_, u64, Found>) {
        let h = self.value.expect("opened");
        let mut slot = ctx.value(&h);
        let expected = value_of(key, version);
        let found = match slot.get() {
            None => {
                slot.set(expected);
                MISSING
            }
            Some(v) if *v == expected => RESTORED,
            // A round's change: the value before it is replaced.
            Some(_) if !self.check => {
                slot.set(expected);
                CHANGED
            }
            Some(_) => CORRUPT,
        };
        ctx.emit(found);
    }
}

/// Counts of each [`Found`], over all sink subtasks, and when each sink
/// subtask had its first record (with the process's CPU time then).
#[derive(Clone, Default)]
struct Tally(Arc<[AtomicU64; 4]>, Arc<std::sync::Mutex<Vec<(Instant, Duration)>>>);

impl Tally {
    fn get(&self, f: Found) -> u64 {
        self.0[f as usize].load(Ordering::Relaxed)
    }

    /// The last of the sink subtasks' first records: when it came, and the CPU spent by then.
    fn all_started(&self) -> Option<(Instant, Duration)> {
        self.1.lock().expect("a tally").iter().max_by_key(|(at, _)| *at).copied()
    }
}

struct TallySink {
    local: [u64; 4],
    total: Tally,
}

impl Sink<Found> for TallySink {
    fn write(&mut self, batch: Vec<Record<Found>>) -> TaskResult {
        if self.local == [0; 4] && !batch.is_empty() {
            self.total.1.lock().expect("a tally").push((Instant::now(), cpu_time()));
        }
        for r in &batch {
            self.local[r.value as usize] += 1;
        }
        Ok(())
    }
    fn finish(&mut self) -> TaskResult {
        for (i, n) in self.local.iter().enumerate() {
            self.total.0[i].fetch_add(*n, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// How the state is kept.
#[derive(Clone)]
pub struct StateSetup {
    pub backend: weir::core::state::StateBackend,
    pub incremental: Option<bool>,
}

/// The job: keys -> key_by -> KeepValue -> tally; `check`: the restored job's.
fn build(
    job: &str,
    keys: u64,
    parallelism: usize,
    rounds: Rounds,
    check: bool,
    setup: &StateSetup,
) -> (StreamEnv, Tally) {
    let env = StreamEnv::new(job);
    env.set_parallelism(parallelism).set_state_backend(setup.backend.clone());
    if let Some(on) = setup.incremental {
        env.set_incremental_checkpoints(on);
    }
    let tally = Tally::default();
    let t = tally.clone();
    env.add_source("keys", move |info| {
        let (next, step) = (info.index as u64, info.parallelism as u64);
        let source = KeySource { next, step, keys, round: 0, rounds, check, waiting: false };
        Box::new(source) as Box<dyn Source<(u64, u32)>>
    })
    .key_by(|&(k, _)| k)
    .process(KeepValue { value: None, check })
    .sink("tally", move |_| TallySink { local: [0; 4], total: t.clone() });
    (env, tally)
}

/// A storage that adds up the time spent in it (all threads together).
#[derive(Debug)]
struct TimedStorage {
    inner: Arc<dyn CheckpointStorage>,
    put_ns: AtomicU64,
    get_ns: AtomicU64,
}

impl TimedStorage {
    fn time<R>(counter: &AtomicU64, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        counter.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }

    /// (put, get) milliseconds since the last call.
    fn take_ms(&self) -> (u64, u64) {
        let ms = |c: &AtomicU64| c.swap(0, Ordering::Relaxed) / 1_000_000;
        (ms(&self.put_ns), ms(&self.get_ns))
    }
}

impl CheckpointStorage for TimedStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> StorageResult<()> {
        Self::time(&self.put_ns, || self.inner.put(path, bytes))
    }
    fn put_parts(&self, path: &str, parts: &[&[u8]]) -> StorageResult<()> {
        Self::time(&self.put_ns, || self.inner.put_parts(path, parts))
    }
    fn put_reader(&self, path: &str, len: u64, body: &mut dyn std::io::Read) -> StorageResult<()> {
        Self::time(&self.put_ns, || self.inner.put_reader(path, len, body))
    }
    fn get(&self, path: &str) -> StorageResult<Vec<u8>> {
        Self::time(&self.get_ns, || self.inner.get(path))
    }
    fn get_range(&self, path: &str, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        Self::time(&self.get_ns, || self.inner.get_range(path, offset, len))
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

/// Waits for the job; its checkpoints.
fn finish(job: JobHandle) -> anyhow::Result<Vec<CheckpointStats>> {
    let (result, checkpoints) = job.wait_with_checkpoints();
    result?;
    Ok(checkpoints)
}

/// The job's last checkpoint, which must have completed.
fn final_checkpoint(checkpoints: &[CheckpointStats], what: &str) -> anyhow::Result<CheckpointStats> {
    let Some(last) = checkpoints.last() else { anyhow::bail!("the {what} job took no checkpoint") };
    if last.status != CheckpointStatus::Completed {
        anyhow::bail!("the {what} job's final checkpoint {} failed: {:?}", last.id, last.failure);
    }
    Ok(last.clone())
}

/// Builds `state_mb` MiB of keyed state, checkpoints it to `storage`, restores it,
/// checks it; returns the report line.
pub fn run(
    state_mb: u64,
    parallelism: (usize, usize),
    storage: Arc<dyn CheckpointStorage>,
    interval: Duration,
    rounds: Rounds,
    setup: &StateSetup,
) -> anyhow::Result<String> {
    let keys = state_mb * 1024 * 1024 / VALUE_BYTES as u64;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let job = format!("bench-state-{state_mb}mb-{stamp}");
    let timed = Arc::new(TimedStorage { inner: storage, put_ns: AtomicU64::new(0), get_ns: AtomicU64::new(0) });
    let storage: Arc<dyn CheckpointStorage> = timed.clone();
    let config = CheckpointConfig::new(storage.clone(), interval);

    // 1. Build the state; the final checkpoint holds all of it.
    let (parallelism, restored_parallelism) = parallelism;
    let (env, tally) = build(&job, keys, parallelism, rounds, false, setup);
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let handle =
        env.start_with(ExecuteOptions { checkpointing: Some(config.clone()), restore: None, ..Default::default() })?;
    let history = finish(handle)?;
    let first = final_checkpoint(&history, "first")?;
    let changes = round_checkpoints(&history, rounds);
    let (run_ms, run_cpu_ms) = (t0.elapsed().as_millis(), (cpu_time() - cpu0).as_millis());
    let (put_ms, _) = timed.take_ms();
    if tally.get(MISSING) != keys || tally.get(RESTORED) + tally.get(CORRUPT) != 0 {
        anyhow::bail!(
            "the first job saw {keys} keys wrongly: {:?}",
            [0, 1, 2, 3].map(|i| tally.0[i].load(Ordering::Relaxed))
        );
    }
    let rss_after_checkpoint = peak_rss_kib();

    // 2. The same job from its final checkpoint: restored once every subtask has its first record.
    let (env, tally) = build(&job, keys, restored_parallelism, rounds, true, setup);
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let snapshot = RestoredSnapshot::latest(storage.clone(), &job)?;
    if snapshot.metadata.checkpoint_id != first.id {
        anyhow::bail!("restoring checkpoint {} instead of {}", snapshot.metadata.checkpoint_id, first.id);
    }
    let handle =
        env.start_with(ExecuteOptions { checkpointing: Some(config), restore: Some(snapshot), ..Default::default() })?;
    let (_, get_ms) = timed.take_ms();
    let second = final_checkpoint(&finish(handle)?, "restored")?;
    let (restored_at, restored_cpu) =
        tally.all_started().ok_or_else(|| anyhow::anyhow!("the restored job had no record"))?;
    let (restore_ms, restore_cpu_ms) = ((restored_at - t0).as_millis(), (restored_cpu - cpu0).as_millis());
    let restored_run_ms = t0.elapsed().as_millis();
    let (put2_ms, _) = timed.take_ms();
    let (restored, missing, corrupt) = (tally.get(RESTORED), tally.get(MISSING), tally.get(CORRUPT));

    // Clean up what this run stored.
    let leftovers = storage.list(&format!("{job}/"))?;
    for key in leftovers.iter().filter(|k| k.ends_with("/_metadata")).chain(&leftovers) {
        storage.delete(key)?;
    }

    let line = format!(
        "state_mb={state_mb} keys={keys} parallelism={parallelism} restored_parallelism={restored_parallelism} run_ms={run_ms} run_cpu_ms={run_cpu_ms} \
         checkpoint_bytes={} checkpoint_ms={} checkpoint_storage_ms={put_ms} \
         restore_ms={restore_ms} restore_cpu_ms={restore_cpu_ms} restore_storage_ms={get_ms} \
         restored_keys={restored} missing_keys={missing} corrupt_keys={corrupt} restored_run_ms={restored_run_ms} \
         checkpoint2_bytes={} checkpoint2_ms={} checkpoint2_storage_ms={put2_ms} \
         peak_rss_mib_after_checkpoint={} peak_rss_mib={}{changes}",
        first.size_bytes,
        first.duration_ms,
        second.size_bytes,
        second.duration_ms,
        rss_after_checkpoint / 1024,
        peak_rss_kib() / 1024,
    );
    if restored != keys || missing != 0 || corrupt != 0 {
        anyhow::bail!("restore lost state: {line}");
    }
    Ok(line)
}

/// The checkpoints of the rounds of changes (those after the largest, the
/// one with every key), as report fields: how many, their largest and mean
/// size, their longest and mean duration, and the largest as a share of the full one.
fn round_checkpoints(history: &[CheckpointStats], rounds: Rounds) -> String {
    if rounds.rounds == 0 {
        return String::new();
    }
    let done: Vec<&CheckpointStats> = history.iter().filter(|c| c.status == CheckpointStatus::Completed).collect();
    let stored = |c: &&CheckpointStats| c.checkpointed_bytes;
    let Some(full) = done.iter().position(|c| c.checkpointed_bytes == done.iter().map(stored).max().unwrap_or(0))
    else {
        return String::new();
    };
    let after = &done[full + 1..];
    let n = after.len().max(1) as u64;
    let max_bytes = after.iter().map(|c| c.checkpointed_bytes).max().unwrap_or(0);
    let mean_bytes = after.iter().map(|c| c.checkpointed_bytes).sum::<u64>() / n;
    let max_ms = after.iter().map(|c| c.duration_ms).max().unwrap_or(0);
    let mean_ms = after.iter().map(|c| c.duration_ms).sum::<i64>() / n as i64;
    let share = 100.0 * max_bytes as f64 / done[full].checkpointed_bytes.max(1) as f64;
    format!(
        " full_checkpoint_bytes={} full_checkpoint_ms={} change_checkpoints={} change_bytes_max={max_bytes} \
         change_bytes_mean={mean_bytes} change_bytes_max_percent={share:.2} change_ms_max={max_ms} change_ms_mean={mean_ms}",
        done[full].checkpointed_bytes,
        done[full].duration_ms,
        after.len()
    )
}

/// `weir bench state`: checks the flags, runs, prints the report line.
pub fn main(
    state_mb: Option<u64>,
    parallelism: (usize, Option<usize>),
    checkpoint_dir: Option<String>,
    checkpoint_interval: Option<String>,
    rounds: Option<(u32, f64)>,
    state: &crate::run::StateArgs,
) -> Result<(), crate::Failure> {
    use crate::Failure::{BadInput, Runtime};
    let state_mb = state_mb.ok_or_else(|| BadInput("bench state: --state-mb is required".into()))?;
    if state_mb == 0 {
        return Err(BadInput("--state-mb: must be at least 1".into()));
    }
    let parallelism = (parallelism.0, parallelism.1.unwrap_or(parallelism.0));
    if parallelism.0 == 0 || parallelism.1 == 0 {
        return Err(BadInput("--parallelism, --restore-parallelism: must be at least 1".into()));
    }
    let dir = checkpoint_dir.ok_or_else(|| BadInput("bench state: --checkpoint-dir is required".into()))?;
    let storage = crate::storage::open(&dir, None).map_err(|e| BadInput(format!("--checkpoint-dir: {e}")))?;
    // Without an interval, only the final checkpoint (the job ends long before a day).
    let interval = match checkpoint_interval {
        Some(i) => weir_api::parse_duration(&i).map_err(|e| BadInput(format!("--checkpoint-interval: {e}")))?,
        None => Duration::from_secs(86_400),
    };
    let rounds = match rounds {
        None => Rounds::default(),
        Some((_, p)) if !(p > 0.0 && p <= 100.0) => {
            return Err(BadInput(format!("--change-percent: {p} is not a share of keys above 0 and at most 100")));
        }
        Some((0, _)) => return Err(BadInput("--rounds: must be at least 1".into())),
        Some((rounds, p)) => Rounds { rounds, basis_points: (p * 100.0).round() as u64 },
    };
    let setup = StateSetup { backend: state.backend()?, incremental: state.incremental() };
    let line = run(state_mb, parallelism, storage, interval, rounds, &setup).map_err(|e| Runtime(format!("{e:#}")))?;
    println!("{line}");
    Ok(())
}
