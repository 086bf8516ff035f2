//! The `file` source: JSON or CSV lines with declared field types.
//!
//! `path` is a file or a directory (its files, in name order). Files are dealt
//! to subtasks round-robin. A line that does not decode as a record with every
//! declared field of its declared type is *malformed* and goes to
//! [`DeadLetters`] (counted, logged, dead-lettered, or fatal).
//!
//! The read position is checkpointed as one entry per file not yet finished:
//! the file and the byte offset of the next line. On restore the entries of
//! all old subtasks are dealt over the new ones, so a restore at another
//! parallelism neither skips nor repeats a line.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_core::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use weir_core::source::{Source, SourcePoll};
use weir_core::state::codec;
use weir_core::{NO_TIMESTAMP, Record, TaskError, TaskResult};

use crate::records::{DeadLetters, Format};
use crate::value::{Row, Schema};

/// The files under `path` (a file, or a directory's files in name order).
pub fn list_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        files.sort();
        Ok(files)
    } else {
        File::open(path)?;
        Ok(vec![path.to_path_buf()])
    }
}

/// Where reading a file resumes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct FilePosition {
    path: PathBuf,
    offset: u64,
    line: u64,
}

pub struct FileSource {
    /// Files still to read, the next one last (with where to start in it).
    files: Vec<FilePosition>,
    /// Files read to the end (kept in snapshots: a finished source stays finished).
    done: Vec<FilePosition>,
    schema: Arc<Schema>,
    format: Format,
    dead_letters: DeadLetters,
    reader: Option<(FilePosition, BufReader<File>)>,
    line: String,
}

impl FileSource {
    pub fn new(files: Vec<PathBuf>, schema: Arc<Schema>, format: Format, dead_letters: DeadLetters) -> Self {
        FileSource {
            files: files.into_iter().map(|path| FilePosition { path, offset: 0, line: 0 }).collect(),
            done: Vec::new(),
            schema,
            format,
            dead_letters,
            reader: None,
            line: String::new(),
        }
    }

    fn malformed(&mut self, file: &Path, line_no: u64, line: &str, error: String) -> TaskResult {
        let mut origin = serde_json::Map::new();
        origin.insert("file".into(), file.display().to_string().into());
        origin.insert("line".into(), line_no.into());
        self.dead_letters.record(&format!("{}:{line_no}", file.display()), origin, line.as_bytes(), error)
    }
}

impl Source<Row> for FileSource {
    fn poll(&mut self, out: &mut Vec<Record<Row>>) -> TaskResult<SourcePoll> {
        if self.reader.is_none() {
            let Some(pos) = self.files.pop() else { return Ok(SourcePoll::Finished) };
            let open = |pos: &FilePosition| -> std::io::Result<BufReader<File>> {
                let mut f = File::open(&pos.path)?;
                f.seek(SeekFrom::Start(pos.offset))?;
                Ok(BufReader::with_capacity(1 << 16, f))
            };
            let reader = open(&pos).map_err(|e| TaskError::io(format!("opening {}", pos.path.display()), e))?;
            self.reader = Some((pos, reader));
        }
        let mut bad = Vec::new();
        let schema = self.schema.clone();
        let (pos, reader) = self.reader.as_mut().expect("opened above");
        let path = pos.path.clone();
        let mut finished = false;
        for _ in 0..1024 {
            self.line.clear();
            let n = reader
                .read_line(&mut self.line)
                .map_err(|e| TaskError::io(format!("reading {}", path.display()), e))?;
            if n == 0 {
                finished = true;
                break;
            }
            pos.offset += n as u64;
            pos.line += 1;
            let text = self.line.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            match self.format.decode(&schema, text.as_bytes()) {
                Ok(row) => out.push(Record::new(NO_TIMESTAMP, row)),
                Err(e) => bad.push((pos.line, text.to_string(), e)),
            }
        }
        if finished && let Some((pos, _)) = self.reader.take() {
            self.done.push(pos);
        }
        for (line_no, text, error) in bad {
            self.malformed(&path, line_no, &text, error)?;
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_state(&mut self) -> TaskResult<OperatorSnapshot> {
        let current = self.reader.as_ref().map(|(pos, _)| pos);
        let entries = current.into_iter().chain(self.files.iter().rev()).chain(&self.done).map(codec::encode).collect();
        Ok(OperatorSnapshot { keyed: Vec::new(), entries })
    }

    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        if state.all_entries.is_empty() {
            return Ok(()); // a source new to the job: read its files from the start
        }
        let mut files: Vec<FilePosition> =
            state.entries.iter().map(|e| codec::decode(e, "a file source position")).collect::<TaskResult<_>>()?;
        files.reverse(); // the next file last
        self.files = files;
        self.reader = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnError;
    use crate::value::FieldType;

    fn source(files: Vec<PathBuf>, subtask: usize) -> FileSource {
        let schema = Arc::new(Schema::new([("n", FieldType::Int)]));
        let dead_letters = DeadLetters::new(OnError::Skip, None, Default::default(), subtask);
        FileSource::new(files, schema, Format::Json, dead_letters)
    }

    fn numbers(out: &[Record<Row>]) -> Vec<i64> {
        out.iter().map(|r| r.value[0].as_int().unwrap()).collect()
    }

    #[test]
    fn a_restored_position_resumes_every_file_exactly_at_any_parallelism() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for f in 0..5 {
            let path = dir.path().join(format!("in-{f}.jsonl"));
            let lines: String = (0..3000).map(|i| format!("{{\"n\":{}}}\n", f * 10_000 + i)).collect();
            std::fs::write(&path, lines).unwrap();
            files.push(path);
        }
        // Two subtasks read part of their files, then snapshot.
        let (mut seen, mut entries) = (Vec::new(), Vec::new());
        for i in 0..2 {
            let mine: Vec<PathBuf> =
                files.iter().enumerate().rev().filter(|(k, _)| k % 2 == i).map(|(_, f)| f.clone()).collect();
            let mut s = source(mine, i);
            let mut out = Vec::new();
            for _ in 0..(3 + i) {
                s.poll(&mut out).unwrap();
            }
            seen.extend(numbers(&out));
            entries.extend(s.snapshot_state().unwrap().entries);
        }
        // Three subtasks take over the positions and finish.
        for j in 0..3 {
            let mut s = source(Vec::new(), j);
            let share = entries.iter().enumerate().filter(|(k, _)| k % 3 == j).map(|(_, e)| e.clone()).collect();
            s.restore_state(RestoredState { keyed: vec![], entries: share, all_entries: entries.clone() }).unwrap();
            let mut out = Vec::new();
            while s.poll(&mut out).unwrap() != SourcePoll::Finished {}
            seen.extend(numbers(&out));
        }
        seen.sort();
        let expected: Vec<i64> = (0..5).flat_map(|f| (0..3000).map(move |i| f * 10_000 + i)).collect();
        assert_eq!(seen.len(), expected.len(), "every line exactly once");
        assert_eq!(seen, expected);
    }
}
