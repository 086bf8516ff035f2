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
/// * on restore, the parts the checkpoint lists as pending are committed
///   (the crash may have come between completion and commit), and every
///   other pending or in-progress file is deleted: those rows are replayed.
///
/// A reader of the directory (ignoring dot-files and `_pending/`) therefore
/// never sees a row twice, nor a row that was rolled back.
pub struct LineFileSink<E> {
    dir: PathBuf,
    subtask: usize,
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
            encode,
            transactional: info.checkpointing,
            run: format!("{:x}", weir_core::time::now_ms()),
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

    /// After a restore, before anything runs: commit what the snapshot pre-committed, drop the rest.
    fn recover(&self, pre_committed: &[PendingPart]) -> TaskResult {
        for p in pre_committed {
            let from = self.pending_path(&p.name);
            if from.exists() {
                let to = self.dir.join(&p.name);
                std::fs::rename(&from, &to).map_err(io(format!(
                    "committing {} as {}",
                    from.display(),
                    to.display()
                )))?;
            }
        }
        for leftovers in [self.dir.join("_pending"), self.dir.join(".inprogress")] {
            let Ok(entries) = std::fs::read_dir(&leftovers) else { continue };
            for e in entries.flatten() {
                std::fs::remove_file(e.path()).map_err(io(format!("discarding {}", e.path().display())))?;
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
        Ok(OperatorSnapshot { keyed: Vec::new(), entries: self.pending.iter().map(codec::encode).collect() })
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.commit(checkpoint_id)
    }

    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        // Recovery of the whole directory happens once, before any subtask runs.
        if self.subtask == 0 {
            let parts: Vec<PendingPart> = state
                .all_entries
                .iter()
                .map(|e| codec::decode(e, "a file sink's pending parts"))
                .collect::<TaskResult<_>>()?;
            self.recover(&parts)?;
        }
        Ok(())
    }
}
