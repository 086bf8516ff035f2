//! The `file` source: JSON lines with declared field types.
//!
//! `path` is a file or a directory (its files, in name order). Files are dealt
//! to subtasks round-robin. A line that is not a JSON object with every
//! declared field of its declared type is *malformed*: it is counted, the
//! first few are logged with file and line, and it is appended to the
//! dead-letter directory when one is configured; with `on_error: fail` it
//! fails the job instead.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use weir::core::source::{Source, SourcePoll};
use weir::core::{NO_TIMESTAMP, Record, TaskError, TaskResult};

use crate::config::OnError;
use crate::value::{Row, Schema, Value};

/// Log at most this many malformed records per subtask.
const LOG_LIMIT: u64 = 10;

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

pub struct FileSource {
    files: Vec<PathBuf>,
    schema: Arc<Schema>,
    on_error: OnError,
    dead_letter: Option<(PathBuf, Option<File>)>,
    malformed: Arc<AtomicU64>,
    subtask: usize,
    reader: Option<(PathBuf, BufReader<File>, u64)>,
    line: String,
    logged: u64,
}

impl FileSource {
    pub fn new(
        files: Vec<PathBuf>,
        schema: Arc<Schema>,
        on_error: OnError,
        dead_letter: Option<PathBuf>,
        malformed: Arc<AtomicU64>,
        subtask: usize,
    ) -> Self {
        FileSource {
            files,
            schema,
            on_error,
            dead_letter: dead_letter.map(|d| (d, None)),
            malformed,
            subtask,
            reader: None,
            line: String::new(),
            logged: 0,
        }
    }

    fn parse(schema: &Schema, line: &str) -> Result<Row, String> {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        schema
            .fields
            .iter()
            .map(|(name, ty)| match obj.get(name) {
                None => Err(format!("missing field `{name}`")),
                Some(serde_json::Value::Null) => Ok(Value::Null),
                Some(v) => ty.from_json(v).ok_or_else(|| format!("field `{name}`: expected {ty}, got {v}")),
            })
            .collect()
    }

    fn malformed(&mut self, file: &Path, line_no: u64, line: &str, error: String) -> TaskResult {
        if self.on_error == OnError::Fail {
            return Err(TaskError::Operator(format!("{}:{line_no}: malformed record: {error}", file.display())));
        }
        self.malformed.fetch_add(1, Ordering::Relaxed);
        if self.logged < LOG_LIMIT {
            self.logged += 1;
            tracing::warn!("{}:{line_no}: skipping malformed record: {error}", file.display());
        }
        if let Some((dir, out)) = &mut self.dead_letter {
            if out.is_none() {
                std::fs::create_dir_all(&*dir)
                    .map_err(|e| TaskError::io(format!("creating dead-letter directory {}", dir.display()), e))?;
                let path = dir.join(format!("dead-letter-{}.jsonl", self.subtask));
                *out = Some(File::create(&path).map_err(|e| TaskError::io(format!("creating {}", path.display()), e))?);
            }
            let entry = serde_json::json!({"file": file.display().to_string(), "line": line_no, "error": error, "record": line});
            writeln!(out.as_mut().expect("opened"), "{entry}")
                .map_err(|e| TaskError::io(format!("writing dead letter under {}", dir.display()), e))?;
        }
        Ok(())
    }
}

impl Source<Row> for FileSource {
    fn poll(&mut self, out: &mut Vec<Record<Row>>) -> TaskResult<SourcePoll> {
        if self.reader.is_none() {
            let Some(path) = self.files.pop() else { return Ok(SourcePoll::Finished) };
            let f = File::open(&path).map_err(|e| TaskError::io(format!("opening {}", path.display()), e))?;
            self.reader = Some((path, BufReader::with_capacity(1 << 16, f), 0));
        }
        let mut bad = Vec::new();
        let schema = self.schema.clone();
        let (path, reader, line_no) = self.reader.as_mut().expect("opened above");
        let path = path.clone();
        for _ in 0..1024 {
            self.line.clear();
            let n = reader
                .read_line(&mut self.line)
                .map_err(|e| TaskError::io(format!("reading {}", path.display()), e))?;
            if n == 0 {
                self.reader = None;
                break;
            }
            *line_no += 1;
            let text = self.line.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            match Self::parse(&schema, text) {
                Ok(row) => out.push(Record::new(NO_TIMESTAMP, row)),
                Err(e) => bad.push((*line_no, text.to_string(), e)),
            }
        }
        for (line_no, text, error) in bad {
            self.malformed(&path, line_no, &text, error)?;
        }
        Ok(SourcePoll::Ready)
    }
}
