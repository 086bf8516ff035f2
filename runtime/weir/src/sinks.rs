//! Built-in sinks: collect (tests), print (stdout), JSON-lines files, discard.
//!
//! The file sink writes one part file per subtask, one line per record. While the job runs a part
//! is hidden (`.part-<subtask>.jsonl.inprogress`); when the input ends it is
//! flushed, synced and renamed to `part-<subtask>.jsonl`, so a reader of the
//! directory only ever sees complete files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use weir_core::operator::sink::Sink;
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

/// Writes one line per record into `dir/part-<subtask>.jsonl`; `encode`
/// appends a record's line (without the newline) to a buffer.
pub struct LineFileSink<E> {
    dir: PathBuf,
    subtask: usize,
    encode: E,
    writer: Option<BufWriter<File>>,
    line: Vec<u8>,
}

/// Encodes a record as one line of JSON.
pub fn json_line<T: Serialize>(value: &T, out: &mut Vec<u8>) -> TaskResult {
    serde_json::to_writer(out, value).map_err(|e| TaskError::Operator(format!("encoding a record as JSON: {e}")))
}

impl<E> LineFileSink<E> {
    pub fn new(dir: &Path, subtask: usize, encode: E) -> Self {
        LineFileSink { dir: dir.to_path_buf(), subtask, encode, writer: None, line: Vec::new() }
    }

    fn in_progress(&self) -> PathBuf {
        self.dir.join(format!(".part-{}.jsonl.inprogress", self.subtask))
    }

    fn finished(&self) -> PathBuf {
        self.dir.join(format!("part-{}.jsonl", self.subtask))
    }

    fn writer(&mut self) -> TaskResult<&mut BufWriter<File>> {
        if self.writer.is_none() {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| TaskError::io(format!("creating output directory {}", self.dir.display()), e))?;
            let path = self.in_progress();
            let file = File::create(&path).map_err(|e| TaskError::io(format!("creating {}", path.display()), e))?;
            self.writer = Some(BufWriter::with_capacity(1 << 16, file));
        }
        Ok(self.writer.as_mut().expect("just opened"))
    }
}

impl<T: Send, E: FnMut(&T, &mut Vec<u8>) -> TaskResult + Send> Sink<T> for LineFileSink<E> {
    fn write(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        let mut line = std::mem::take(&mut self.line);
        let path = self.in_progress();
        self.writer()?;
        for r in &batch {
            line.clear();
            (self.encode)(&r.value, &mut line)?;
            line.push(b'\n');
            let w = self.writer.as_mut().expect("opened above");
            w.write_all(&line).map_err(|e| TaskError::io(format!("writing {}", path.display()), e))?;
        }
        self.line = line;
        Ok(())
    }

    fn finish(&mut self) -> TaskResult {
        // Even a subtask that saw no record leaves an (empty) part: the output is complete.
        self.writer()?;
        let (from, to) = (self.in_progress(), self.finished());
        let w = self.writer.take().expect("opened");
        let file = w.into_inner().map_err(|e| TaskError::io(format!("writing {}", from.display()), e.into_error()))?;
        file.sync_all().map_err(|e| TaskError::io(format!("syncing {}", from.display()), e))?;
        std::fs::rename(&from, &to)
            .map_err(|e| TaskError::io(format!("renaming {} to {}", from.display(), to.display()), e))
    }
}
