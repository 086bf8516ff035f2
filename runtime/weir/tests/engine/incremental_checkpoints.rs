//! Incremental checkpoints: a job whose keyed state changes a little between
//! checkpoints builds chains of more than 20 change files, every retained
//! checkpoint keeps every file it names (and retention deletes the others),
//! the job resumes exactly from the last one at another parallelism (on the
//! heap and on disk, from state files stored with and without compression),
//! and a missing shared file fails the restore naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::core::checkpoint::compression::Compression;
use weir::core::checkpoint::coordinator::{CheckpointConfig, CheckpointStatus};
use weir::core::checkpoint::metadata::{CheckpointMetadata, RestoredSnapshot};
use weir::core::checkpoint::storage::{CheckpointStorage, LocalStorage};
use weir::core::executor::ExecuteOptions;
use weir::core::state::StateBackend;
use weir::prelude::*;
use weir_workloads::{Order, WorkloadStreams};

use crate::common::{committed_lines, resume_from_latest};

const JOB: &str = "incremental";
const KEYS: u64 = 20_000;
const EVENTS: u64 = 160_000;

/// Counts orders per key (order id modulo [`KEYS`]), emitting (key, count);
/// a key is cleared at its seventh order, so restores must apply removals.
#[derive(Clone, Default)]
struct CountUpToSeven {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, Order, (u64, u64)> for CountUpToSeven {
    fn open(&mut self, state: &mut KeyedState<u64>) {
        self.count = Some(state.value("count"));
    }

    fn process_element(&mut self, _: Order, ctx: &mut ProcessContext<'_, u64, (u64, u64)>) {
        let key = *ctx.key();
        let mut slot = ctx.value(self.count.as_ref().expect("opened"));
        let n = *slot.get_or_insert(0) + 1;
        if n == 7 {
            slot.clear();
        } else {
            slot.set(n);
        }
        ctx.emit((key, n));
    }
}

fn build(env: &StreamEnv, out: &Path, rate: Option<f64>) {
    env.orders(Some(EVENTS), rate).key_by(|o| o.order_id.0 % KEYS).process(CountUpToSeven::default()).write_json(out);
}

fn env(parallelism: usize, backend: &StateBackend, compression: Compression) -> StreamEnv {
    let env = StreamEnv::new(JOB);
    env.set_parallelism(parallelism).set_state_backend(backend.clone()).set_incremental_checkpoints(true);
    env.set_snapshot_compression(compression);
    env
}

fn checkpointing(storage: &Arc<dyn CheckpointStorage>) -> CheckpointConfig {
    let mut c = CheckpointConfig::new(storage.clone(), Duration::from_millis(30));
    c.retained = 3;
    c
}

fn metadata(storage: &dyn CheckpointStorage, id: u64) -> CheckpointMetadata {
    serde_json::from_slice(&storage.get(&format!("{JOB}/chk-{id}/_metadata")).unwrap()).unwrap()
}

/// The longest chain of state files an operator subtask has in the checkpoint.
fn longest_chain(meta: &CheckpointMetadata) -> usize {
    let mut chains: BTreeMap<(&str, usize), usize> = BTreeMap::new();
    for op in &meta.operators {
        for h in op.subtasks.iter().filter(|h| h.shared) {
            *chains.entry((op.uid.as_str(), h.subtask)).or_default() += 1;
        }
    }
    chains.into_values().max().unwrap_or(0)
}

/// Runs the job throttled until a completed checkpoint has a chain of more
/// than 20 change files after its full file; stops it there. Returns the
/// completed checkpoints' ids and what each stored.
fn run_until_a_long_chain(
    storage: &Arc<dyn CheckpointStorage>,
    backend: &StateBackend,
    compression: Compression,
    out: &Path,
) -> Vec<(u64, u64)> {
    let e = env(2, backend, compression);
    // Slow enough that on a busy machine too, where a checkpoint takes a
    // good part of a second, twenty of them change less than the state holds
    // (else the chain starts anew before it is long, as it should).
    build(&e, out, Some(2_000.0));
    let options = ExecuteOptions { checkpointing: Some(checkpointing(storage)), ..Default::default() };
    let job = e.start_with(options).expect("job starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(!job.is_finished(), "the job ended before a chain of 21 files was built");
        assert!(Instant::now() < deadline, "no chain of 21 files within two minutes");
        let done: Vec<u64> =
            job.checkpoints().iter().filter(|c| c.status == CheckpointStatus::Completed).map(|c| c.id).collect();
        if let Some(meta) = done.last().map(|&id| metadata(storage.as_ref(), id)) {
            let handles = meta.operators.iter().flat_map(|o| &o.subtasks);
            assert!(handles.filter(|h| !h.key_groups.is_empty()).all(|h| h.compression == compression));
            if longest_chain(&meta) > 21 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    job.stop();
    let (result, history) = job.wait_with_checkpoints();
    result.expect("the stopped job ends cleanly");
    let completed: Vec<_> = history.iter().filter(|c| c.status == CheckpointStatus::Completed).collect();
    // Each holds the whole state (its size) whatever it stored itself: most hold far more.
    assert!(completed.iter().all(|c| c.checkpointed_bytes <= c.size_bytes), "{completed:?}");
    let holding_more = completed.iter().filter(|c| c.size_bytes > 2 * c.checkpointed_bytes).count();
    assert!(holding_more * 2 > completed.len(), "sizes count only what was stored: {completed:?}");
    completed.iter().map(|c| (c.id, c.checkpointed_bytes)).collect()
}

/// Every retained checkpoint's files are all there and whole; a shared file
/// that none names was written after the last of them (a checkpoint cut short).
fn check_retention(storage: &Arc<dyn CheckpointStorage>, completed: &[(u64, u64)]) {
    let retained: Vec<u64> = completed.iter().rev().take(3).map(|c| c.0).collect();
    let mut named = BTreeSet::new();
    for &id in &retained {
        let snapshot = RestoredSnapshot::open(storage.clone(), &format!("{JOB}/chk-{id}")).unwrap();
        snapshot.verify().unwrap_or_else(|e| panic!("retained checkpoint {id} lost a file: {e}"));
        named.extend(
            snapshot.metadata.operators.iter().flat_map(|o| &o.subtasks).filter(|h| h.shared).map(|h| h.file.clone()),
        );
    }
    let newest = retained[0];
    let shared = storage.list(&format!("{JOB}/shared/")).unwrap();
    let mut deleted_nothing_needed = 0;
    for path in &shared {
        let file = path.rsplit('/').next().unwrap();
        if named.contains(file) {
            deleted_nothing_needed += 1;
            continue;
        }
        // {uid}-{subtask}-{checkpoint}-{token}.state
        let id: u64 = file.rsplit('-').nth(1).and_then(|s| s.parse().ok()).expect("a shared file's name");
        assert!(id > newest, "{file} is named by no retained checkpoint and should have been deleted");
    }
    assert_eq!(deleted_nothing_needed, named.len(), "every named file is in shared/");
    for (id, _) in completed.iter().filter(|c| !retained.contains(&c.0)) {
        assert!(storage.get(&format!("{JOB}/chk-{id}/_metadata")).is_err(), "chk-{id} is beyond retention");
    }
}

/// Runs until a long chain stored as `first`, resumes at parallelism 3
/// storing as `then`, and compares with an uninterrupted run.
fn resumes_exactly_from_a_long_chain(backend: impl Fn(&Path) -> StateBackend, first: Compression, then: Compression) {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalStorage::new(tmp.path().join("ck")));
    let (out, uninterrupted) = (tmp.path().join("out"), tmp.path().join("uninterrupted"));
    let completed = run_until_a_long_chain(&storage, &backend(&tmp.path().join("state-1")), first, &out);
    check_retention(&storage, &completed);
    // Most checkpoints store a small part of the state: its changes.
    let mut sizes: Vec<u64> = completed.iter().map(|c| c.1).collect();
    sizes.sort();
    let (median, full) = (sizes[sizes.len() / 2], sizes[sizes.len() - 1]);
    assert!(median * 5 < full, "checkpoints stored {median} bytes (median), the largest {full}: {completed:?}");

    let e = env(3, &backend(&tmp.path().join("state-2")), then);
    build(&e, &out, None);
    resume_from_latest(e, JOB, checkpointing(&storage));
    let e = env(2, &StateBackend::Heap, Compression::default());
    build(&e, &uninterrupted, None);
    e.execute().expect("the uninterrupted job succeeds");
    let (resumed, expected) = (committed_lines(&out), committed_lines(&uninterrupted));
    assert_eq!(expected.values().sum::<usize>(), EVENTS as usize);
    assert!(resumed == expected, "the resumed job's output differs from the uninterrupted one's");
}

#[test]
fn a_chain_of_twenty_incremental_checkpoints_restores_exactly_on_the_heap() {
    resumes_exactly_from_a_long_chain(|_| StateBackend::Heap, Compression::None, Compression::Zstd);
}

#[test]
fn a_chain_of_twenty_incremental_checkpoints_restores_exactly_on_disk() {
    let disk = |dir: &Path| {
        std::fs::create_dir_all(dir).unwrap();
        StateBackend::disk(dir, weir::core::state::backend::MIN_MEMORY).unwrap()
    };
    resumes_exactly_from_a_long_chain(disk, Compression::Zstd, Compression::None);
}

#[test]
fn a_missing_shared_file_fails_the_restore_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let local = LocalStorage::new(tmp.path().join("ck"));
    let storage: Arc<dyn CheckpointStorage> = Arc::new(local.clone());
    let completed = run_until_a_long_chain(&storage, &StateBackend::Heap, Compression::Zstd, &tmp.path().join("out"));
    let id = completed.last().unwrap().0;
    let meta = metadata(&local, id);
    let gone = meta.operators.iter().flat_map(|o| &o.subtasks).find(|h| h.shared).unwrap().file.clone();
    local.delete(&format!("{JOB}/shared/{gone}")).unwrap();
    let snapshot = RestoredSnapshot::latest(storage.clone(), JOB).unwrap();
    let err = snapshot.verify().unwrap_err().to_string();
    assert!(err.contains(&format!("{JOB}/shared/{gone} does not exist")), "{err}");
    // The job refuses to start from it rather than restoring part of its state.
    let e = env(2, &StateBackend::Heap, Compression::Zstd);
    build(&e, &tmp.path().join("out2"), None);
    let options = ExecuteOptions { restore: Some(snapshot), ..Default::default() };
    let err = match e.start_with(options) {
        Ok(job) => job.wait_with_checkpoints().0.unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&gone), "{err}");
}
