//! Built-in sinks: collect (tests), print (stdout), JSON-lines files, discard.
//!
//! The file sink ([`LineFileSink`]) writes part files, one line per record,
//! and becomes transactional when the job takes checkpoints.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use weir_core::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use weir_core::graph::SubtaskInfo;
use weir_core::operator::sink::Sink;
use weir_core::state::codec;
use weir_core::{Record, TaskError, TaskResult};

/// Collects everything into a shared vector.
pub struct CollectSink<T> {
    pub(crate) target: Arc<Mutex<Vec<Record<T>>>>,
}

impl<T: Send> Sink<T> for CollectSink<T> {
    fn write(&mut self, mut batch: Vec<Record<T>>) -> TaskResult {
        self.target.lock().expect("collect sink poisoned").append(&mut batch);
        Ok(())
    }
}

/// Prints each record on standard output through a formatting function.
pub struct PrintSink<F> {
    pub(crate) format: F,
    pub(crate) prefix: String,
}

impl<T, F: Fn(&T) -> String + Send> Sink<T> for PrintSink<F> {
    fn write(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        for r in &batch {
            writeln!(lock, "{}{}", self.prefix, (self.format)(&r.value))
                .map_err(|e| TaskError::io("writing to stdout", e))?;
        }
        Ok(())
    }
}

/// Discards everything.
pub struct DiscardSink;

impl<T: Send> Sink<T> for DiscardSink {
    fn write(&mut self, _batch: Vec<Record<T>>) -> TaskResult {
        Ok(())
    }
}

/// Writes one line per record into part files under a directory; `encode`
/// appends a record's line (without the newline) to a buffer.
///
/// Without checkpointing, subtask `i` writes `.part-<i>.jsonl.inprogress` and
/// renames it to `part-<i>.jsonl` when its input ends.
///
/// With checkpointing the sink is transactional (two-phase commit):
/// * records go to `.inprogress/part-<run>-<i>-<seq>.jsonl`;
/// * at a barrier (pre-commit) the file is synced, closed and moved to
///   `_pending/`, and its name becomes part of the checkpoint;
/// * when the checkpoint completes (commit) it is renamed to `part-...jsonl`
///   in the directory itself, where readers see it;
/// * on restore, subtask 0 commits the parts the checkpoint lists as pending
///   (the crash may have come between completion and commit; a listed part
///   that is neither pending nor committed fails the restore, naming it),
///   and each subtask deletes the other pending and in-progress parts that
///   earlier runs left under its own subtask number (subtask 0 also those of
///   numbers beyond the current parallelism, which no subtask has now): those
///   rows are replayed. A subtask never deletes a file another subtask of its
///   run may be writing or have pre-committed, whichever started first.
///
/// A reader of the directory (ignoring dot-files and `_pending/`) therefore
/// never sees a row twice, nor a row that was rolled back.
pub struct LineFileSink<E> {
    dir: PathBuf,
    subtask: usize,
    parallelism: usize,
    encode: E,
    transactional: bool,
    /// Distinguishes the files of this run from those of earlier runs.
    run: String,
    seq: u64,
    writer: Option<(BufWriter<File>, String)>,
    pending: Vec<PendingPart>,
    line: Vec<u8>,
}

/// A pre-committed part file, waiting for its checkpoint to complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
struct PendingPart {
    checkpoint_id: u64,
    name: String,
}

/// The run and subtask number in a transactional part file's name
/// (`part-<run>-<subtask>-<seq>.jsonl`); `None` for any other name.
fn part_owner(name: &str) -> Option<(&str, usize)> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".jsonl")?;
    let mut fields = stem.split('-');
    let (run, subtask, seq) = (fields.next()?, fields.next()?, fields.next()?);
    let hex = !run.is_empty() && run.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || fields.next().is_some() || seq.parse::<u64>().is_err() {
        return None;
    }
    Some((run, subtask.parse().ok()?))
}

/// Names the files of one sink instance apart from those of every earlier
/// one (hex digits: the time, and a count within the process).
fn run_id() -> String {
    static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}{:03x}", weir_core::time::now_ms(), n % 0x1000)
}

/// Whether subtask `subtask` of `parallelism` (whose own files are those of
/// `run`) deletes a leftover part file `name` on restore: files of earlier
/// runs under its own number, and for subtask 0 those of numbers no subtask
/// has at this parallelism. Never a file of another current subtask.
fn discards_leftover(name: &str, run: &str, subtask: usize, parallelism: usize) -> bool {
    match part_owner(name) {
        Some((r, owner)) => r != run && weir_core::graph::answers_for(subtask, parallelism, owner),
        None => false,
    }
}

/// Encodes a record as one line of JSON.
pub fn json_line<T: Serialize>(value: &T, out: &mut Vec<u8>) -> TaskResult {
    serde_json::to_writer(out, value).map_err(|e| TaskError::Operator(format!("encoding a record as JSON: {e}")))
}

fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> TaskError {
    move |e| TaskError::io(context, e)
}

fn sync_dir(dir: &Path) -> TaskResult {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(format!("syncing {}", dir.display())))
}

impl<E> LineFileSink<E> {
    pub fn new(dir: &Path, info: &SubtaskInfo, encode: E) -> Self {
        LineFileSink {
            dir: dir.to_path_buf(),
            subtask: info.index,
            parallelism: info.parallelism,
            encode,
            transactional: info.checkpointing,
            run: run_id(),
            seq: 0,
            writer: None,
            pending: Vec::new(),
            line: Vec::new(),
        }
    }

    fn in_progress(&self, name: &str) -> PathBuf {
        if self.transactional {
            self.dir.join(".inprogress").join(name)
        } else {
            self.dir.join(format!(".{name}.inprogress"))
        }
    }

    fn next_name(&self) -> String {
        if self.transactional {
            format!("part-{}-{}-{}.jsonl", self.run, self.subtask, self.seq)
        } else {
            format!("part-{}.jsonl", self.subtask)
        }
    }

    fn open(&mut self) -> TaskResult {
        if self.writer.is_none() {
            let name = self.next_name();
            let path = self.in_progress(&name);
            let parent = path.parent().expect("a file in a directory");
            std::fs::create_dir_all(parent).map_err(io(format!("creating output directory {}", parent.display())))?;
            let file = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
            self.writer = Some((BufWriter::with_capacity(1 << 16, file), name));
        }
        Ok(())
    }

    /// Flushes, syncs and closes the current file; its name, if there was one.
    fn close(&mut self) -> TaskResult<Option<String>> {
        let Some((w, name)) = self.writer.take() else { return Ok(None) };
        let path = self.in_progress(&name);
        let file = w.into_inner().map_err(|e| TaskError::io(format!("writing {}", path.display()), e.into_error()))?;
        file.sync_all().map_err(io(format!("syncing {}", path.display())))?;
        Ok(Some(name))
    }

    fn pending_path(&self, name: &str) -> PathBuf {
        self.dir.join("_pending").join(name)
    }

    /// Commits the pending parts of checkpoints up to `checkpoint_id`.
    fn commit(&mut self, checkpoint_id: u64) -> TaskResult {
        let (ready, waiting): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|p| p.checkpoint_id <= checkpoint_id);
        self.pending = waiting;
        for p in &ready {
            let (from, to) = (self.pending_path(&p.name), self.dir.join(&p.name));
            std::fs::rename(&from, &to).map_err(io(format!("committing {} as {}", from.display(), to.display())))?;
        }
        if !ready.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// After a restore, before this subtask writes: subtask 0 commits what the
    /// snapshot pre-committed; each subtask drops the leftovers it answers
    /// for ([`discards_leftover`]).
    fn recover(&self, pre_committed: &[PendingPart]) -> TaskResult {
        if self.subtask == 0 {
            for p in pre_committed {
                let (from, to) = (self.pending_path(&p.name), self.dir.join(&p.name));
                if from.exists() {
                    std::fs::rename(&from, &to).map_err(io(format!(
                        "committing {} as {}",
                        from.display(),
                        to.display()
                    )))?;
                } else if !to.exists() {
                    return Err(TaskError::Operator(format!(
                        "file sink: the checkpoint lists the pending part file {} (checkpoint {}), which is \
                         neither there nor committed as {}: its rows would be lost",
                        from.display(),
                        p.checkpoint_id,
                        to.display()
                    )));
                }
            }
        }
        for leftovers in [self.dir.join("_pending"), self.dir.join(".inprogress")] {
            let Ok(entries) = std::fs::read_dir(&leftovers) else { continue };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let listed = pre_committed.iter().any(|p| p.name == name);
                if !listed && discards_leftover(name, &self.run, self.subtask, self.parallelism) {
                    std::fs::remove_file(e.path()).map_err(io(format!("discarding {}", e.path().display())))?;
                }
            }
        }
        if self.dir.exists() { sync_dir(&self.dir) } else { Ok(()) }
    }
}

impl<T: Send, E: FnMut(&T, &mut Vec<u8>) -> TaskResult + Send> Sink<T> for LineFileSink<E> {
    fn write(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        if batch.is_empty() {
            return Ok(());
        }
        self.open()?;
        let mut line = std::mem::take(&mut self.line);
        let (w, name) = self.writer.as_mut().expect("opened above");
        for r in &batch {
            line.clear();
            (self.encode)(&r.value, &mut line)?;
            line.push(b'\n');
            w.write_all(&line).map_err(|e| TaskError::io(format!("writing part file {name}"), e))?;
        }
        self.line = line;
        Ok(())
    }

    fn finish(&mut self) -> TaskResult {
        if self.transactional {
            // Everything up to the final checkpoint is committed; anything after it
            // (a job stopped without a savepoint) stays uncommitted.
            self.close()?;
            return Ok(());
        }
        // Even a subtask that saw no record leaves an (empty) part: the output is complete.
        self.open()?;
        let name = self.close()?.expect("opened");
        let (from, to) = (self.in_progress(&name), self.dir.join(&name));
        std::fs::rename(&from, &to).map_err(io(format!("renaming {} to {}", from.display(), to.display())))
    }

    fn snapshot_state(&mut self, checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        if !self.transactional {
            return Ok(OperatorSnapshot::default());
        }
        if let Some(name) = self.close()? {
            let from = self.in_progress(&name);
            let to = self.pending_path(&name);
            let parent = to.parent().expect("a file in a directory");
            std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
            std::fs::rename(&from, &to).map_err(io(format!("pre-committing {}", from.display())))?;
            sync_dir(parent)?;
            self.pending.push(PendingPart { checkpoint_id, name });
            self.seq += 1;
        }
        Ok(OperatorSnapshot::of_entries(self.pending.iter().map(codec::encode).collect()))
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.commit(checkpoint_id)
    }

    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        let parts: Vec<PendingPart> = state
            .all_entries
            .iter()
            .map(|e| codec::decode(e, "a file sink's pending parts"))
            .collect::<TaskResult<_>>()?;
        self.recover(&parts)
    }
}

#[cfg(test)]
mod tests {
    use weir_core::graph::SnapshotCollector;

    use super::*;

    type FileSink = LineFileSink<fn(&i64, &mut Vec<u8>) -> TaskResult>;

    fn sink(dir: &Path, index: usize, parallelism: usize) -> FileSink {
        let info = SubtaskInfo {
            vertex: "file".into(),
            uid: "3-file".into(),
            index,
            parallelism,
            max_parallelism: 128,
            metrics: Default::default(),
            restored: None,
            snapshots: SnapshotCollector::default(),
            checkpointing: true,
            alignment: Default::default(),
            side_outputs: Default::default(),
            state_backend: Default::default(),
        };
        LineFileSink::new(dir, &info, json_line::<i64> as fn(&i64, &mut Vec<u8>) -> TaskResult)
    }

    fn write(s: &mut FileSink, values: &[i64]) {
        s.write(values.iter().map(|&v| Record::new(0, v)).collect()).unwrap();
    }

    /// The restored checkpoint as every subtask sees it.
    fn restore(s: &mut FileSink, entries: &[Vec<u8>]) -> TaskResult {
        s.restore_state(RestoredState { all_entries: entries.to_vec(), ..Default::default() })
    }

    /// What a reader of the directory sees.
    fn committed(dir: &Path) -> Vec<i64> {
        let mut values: Vec<i64> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
            .flat_map(|e| {
                std::fs::read_to_string(e.path()).unwrap().lines().map(|l| l.parse().unwrap()).collect::<Vec<_>>()
            })
            .collect();
        values.sort_unstable();
        values
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |d| d.count())
    }

    #[test]
    fn part_names_say_whose_they_are_and_recovery_discards_only_what_the_subtask_answers_for() {
        assert_eq!(part_owner("part-18c3a00b-2-7.jsonl"), Some(("18c3a00b", 2)));
        for other in ["part-0.jsonl", "part-x-1-2.jsonl", "part-ab-1-2-3.jsonl", "part-ab-1-2.json", "notes.txt"] {
            assert_eq!(part_owner(other), None, "{other}");
        }
        let (name, run) = ("part-aa-1-0.jsonl", "bb");
        assert!(discards_leftover(name, run, 1, 2), "its own number, an earlier run");
        assert!(!discards_leftover(name, "aa", 1, 2), "its own run");
        assert!(!discards_leftover(name, run, 0, 2), "another current subtask's");
        assert!(discards_leftover("part-aa-2-0.jsonl", run, 0, 2), "a number beyond the parallelism: subtask 0");
        assert!(!discards_leftover("part-aa-2-0.jsonl", run, 1, 2));
        assert!(!discards_leftover("unknown.jsonl", run, 0, 1), "files of another form stay");
    }

    #[test]
    fn recovery_leaves_the_files_of_another_subtask_alone() {
        let dir = tempfile::tempdir().unwrap();
        // Run 1, two subtasks: checkpoint 5 completes, the run dies before the commit.
        let (mut a0, mut a1) = (sink(dir.path(), 0, 2), sink(dir.path(), 1, 2));
        write(&mut a0, &[1, 2]);
        write(&mut a1, &[3]);
        let mut entries = a0.snapshot_state(5).unwrap().entries;
        entries.extend(a1.snapshot_state(5).unwrap().entries);
        drop((a0, a1));

        // Run 2 from checkpoint 5. Subtask 1's TaskManager is quicker: it
        // recovers, pre-commits checkpoint 6 and is writing the next part...
        let mut b1 = sink(dir.path(), 1, 2);
        restore(&mut b1, &entries).unwrap();
        write(&mut b1, &[4]);
        b1.snapshot_state(6).unwrap();
        write(&mut b1, &[5]);
        // ...when subtask 0 recovers: it commits checkpoint 5 and deletes nothing of subtask 1's.
        let mut b0 = sink(dir.path(), 0, 2);
        restore(&mut b0, &entries).unwrap();
        assert_eq!(committed(dir.path()), [1, 2, 3]);
        assert_eq!((files(&dir.path().join("_pending")), files(&dir.path().join(".inprogress"))), (1, 1));
        b0.snapshot_state(6).unwrap();
        b1.notify_checkpoint_complete(6).unwrap();
        b0.notify_checkpoint_complete(6).unwrap();
        b1.snapshot_state(7).unwrap();
        b1.notify_checkpoint_complete(7).unwrap();
        assert_eq!(committed(dir.path()), [1, 2, 3, 4, 5], "nothing lost");
    }

    #[test]
    fn a_pending_part_the_checkpoint_lists_that_is_missing_fails_the_restore_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = sink(dir.path(), 0, 1);
        write(&mut a, &[1]);
        let first = a.snapshot_state(1).unwrap().entries;
        a.notify_checkpoint_complete(1).unwrap();
        write(&mut a, &[2]);
        let second = a.snapshot_state(2).unwrap().entries;
        drop(a);
        let part = std::fs::read_dir(dir.path().join("_pending")).unwrap().flatten().next().unwrap();
        std::fs::remove_file(part.path()).unwrap();
        let e = restore(&mut sink(dir.path(), 0, 1), &second).unwrap_err().to_string();
        let name = part.file_name().to_string_lossy().to_string();
        assert!(e.contains(&name) && e.contains("checkpoint 2") && e.contains("lost"), "{e}");
        // A listed part that was committed already is fine: a restore after the commit.
        restore(&mut sink(dir.path(), 0, 1), &first).unwrap();
        assert_eq!(committed(dir.path()), [1]);
    }

    #[test]
    fn after_a_rescale_down_each_leftover_is_discarded_by_the_subtask_that_answers_for_it() {
        let dir = tempfile::tempdir().unwrap();
        // Run 1 at parallelism 3: checkpoint 1 completes; subtasks 1 and 2
        // pre-commit checkpoint 2, which never completes, and write on.
        let mut run1: Vec<FileSink> = (0..3).map(|i| sink(dir.path(), i, 3)).collect();
        let mut entries = Vec::new();
        for (i, s) in run1.iter_mut().enumerate() {
            write(s, &[i as i64 * 10]);
            entries.extend(s.snapshot_state(1).unwrap().entries);
        }
        for (i, s) in run1.iter_mut().enumerate().skip(1) {
            write(s, &[i as i64 * 10 + 1]);
            s.snapshot_state(2).unwrap();
            write(s, &[i as i64 * 10 + 2]);
        }
        for s in &mut run1 {
            s.close().unwrap(); // the in-progress parts stay behind, as a crash leaves them
        }
        drop(run1);
        let count = |sub: &str| files(&dir.path().join(sub));
        assert_eq!((count("_pending"), count(".inprogress")), (5, 2));

        // Run 2 at parallelism 2 from checkpoint 1: subtask 1 drops only its own leftovers.
        let mut b1 = sink(dir.path(), 1, 2);
        restore(&mut b1, &entries).unwrap();
        assert_eq!((count("_pending"), count(".inprogress")), (4, 1));
        // Subtask 0 commits what checkpoint 1 lists (subtask 2's part too) and drops subtask 2's leftovers.
        let mut b0 = sink(dir.path(), 0, 2);
        restore(&mut b0, &entries).unwrap();
        assert_eq!((count("_pending"), count(".inprogress")), (0, 0));
        assert_eq!(committed(dir.path()), [0, 10, 20]);
    }
}
