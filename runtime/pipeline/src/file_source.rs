//! The `file` source: JSON or CSV lines with declared field types.
//!
//! `path` is a file or a directory (its files, in name order). Files are dealt
//! to subtasks round-robin. A line that does not decode as a record with every
//! declared field of its declared type is *malformed* and goes to
//! [`DeadLetters`] (counted, logged, dead-lettered, or fatal); so does a line
//! that is not valid UTF-8, or longer than `max_line_bytes`
//! ([`DEFAULT_MAX_LINE_BYTES`] unless the source says otherwise). Lines are
//! read into a buffer that never holds more than that: the rest of an
//! over-long line is skipped as it is read, and its dead letter keeps the
//! first [`LONG_LINE_PREVIEW`] bytes.
//!
//! The read position is checkpointed as one entry per file not yet finished:
//! the file and the byte offset of the next line. On restore the entries of
//! all old subtasks are dealt over the new ones, so a restore at another
//! parallelism neither skips nor repeats a line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_core::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use weir_core::source::{Source, SourcePoll};
use weir_core::state::codec;
use weir_core::{NO_TIMESTAMP, Record, TaskError, TaskResult};

use crate::records::{DeadLetters, Format};
use crate::value::{Row, Schema};

/// The longest line read by default (without its line break), in bytes.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
/// How much of an over-long line its dead letter keeps.
pub const LONG_LINE_PREVIEW: usize = 1024;
/// A poll reads at most this many lines, and stops after the line that takes it past
/// [`BATCH_BYTES`].
const BATCH_LINES: usize = 1024;
const BATCH_BYTES: u64 = 1 << 20;

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
    /// The line being read: at most `max_line + 2` bytes (room for `\r\n`).
    line: Vec<u8>,
    max_line: usize,
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
            line: Vec::new(),
            max_line: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// Lines longer than `bytes` (without their line break) are malformed.
    pub fn with_max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }
}

/// Hands line `line_no` of `file` to the dead letters.
fn malformed(letters: &mut DeadLetters, file: &Path, line_no: u64, line: &[u8], error: String) -> TaskResult {
    let mut origin = serde_json::Map::new();
    origin.insert("file".into(), file.display().to_string().into());
    origin.insert("line".into(), line_no.into());
    letters.record(&format!("{}:{line_no}", file.display()), origin, line, error)
}

/// Reads the next line of `reader` into `buf` without its line break, keeping at
/// most `max + 2` bytes of it: a longer line is read to its end, so that reading
/// goes on after it, but not kept. Returns the bytes the line took in the input
/// (0 at its end) and whether the line is longer than `max`.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<(u64, bool)> {
    buf.clear();
    let (mut taken, mut cut) = (0u64, false);
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let end = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..end.map_or(available.len(), |i| i + 1)];
        let keep = chunk.len().min(max.saturating_add(2).saturating_sub(buf.len()));
        buf.extend_from_slice(&chunk[..keep]);
        cut |= keep < chunk.len();
        let n = chunk.len();
        reader.consume(n);
        taken += n as u64;
        if end.is_some() || n == 0 {
            break;
        }
    }
    if !cut {
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
    }
    Ok((taken, cut || buf.len() > max))
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
        let FileSource { reader, done, schema, format, dead_letters, line, max_line, .. } = self;
        let (pos, file) = reader.as_mut().expect("opened above");
        let (start, mut finished) = (pos.offset, false);
        for _ in 0..BATCH_LINES {
            let (n, too_long) = read_line(file, line, *max_line)
                .map_err(|e| TaskError::io(format!("reading {}", pos.path.display()), e))?;
            if n == 0 {
                finished = true;
                break;
            }
            pos.offset += n;
            pos.line += 1;
            let decoded = if too_long {
                Err(format!("a line of {n} bytes is longer than the limit of {max_line} bytes"))
            } else {
                match std::str::from_utf8(line) {
                    Ok(text) if text.trim().is_empty() => continue,
                    Ok(text) => format.decode(schema, text.as_bytes()),
                    Err(e) => Err(format!("not valid UTF-8 ({e})")),
                }
            };
            match decoded {
                Ok(row) => out.push(Record::new(NO_TIMESTAMP, row)),
                Err(error) => {
                    let kept = if too_long { &line[..LONG_LINE_PREVIEW.min(line.len())] } else { &line[..] };
                    malformed(dead_letters, &pos.path, pos.line, kept, error)?;
                }
            }
            if pos.offset - start >= BATCH_BYTES {
                break;
            }
        }
        if finished && let Some((pos, _)) = reader.take() {
            done.push(pos);
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_state(&mut self) -> TaskResult<OperatorSnapshot> {
        let current = self.reader.as_ref().map(|(pos, _)| pos);
        let entries = current.into_iter().chain(self.files.iter().rev()).chain(&self.done).map(codec::encode).collect();
        Ok(OperatorSnapshot::of_entries(entries))
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
    fn invalid_utf8_and_over_long_lines_are_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let mut input = b"{\"n\":1}\n{\"n\":\"\xff\xfe\"}\n{\"n\":2}\r\n".to_vec();
        input.extend(format!("{{\"n\":3,\"pad\":\"{}\"}}\n", "x".repeat(10 << 20)).bytes());
        input.extend(b"{\"n\":4}\n\xc3\n{\"n\":5}");
        std::fs::write(&path, &input).unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let letters = DeadLetters::new(OnError::Skip, Some(dir.path().join("dead")), count.clone(), 0);
        let schema = Arc::new(Schema::new([("n", FieldType::Int)]));
        let mut s = FileSource::new(vec![path.clone()], schema, Format::Json, letters);
        let mut out = Vec::new();
        while s.poll(&mut out).unwrap() != SourcePoll::Finished {
            assert!(s.line.capacity() < 4 << 20, "a line is never buffered whole");
        }
        assert_eq!(numbers(&out), [1, 2, 4, 5]);
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 3);
        let dead = std::fs::read_to_string(dir.path().join("dead/dead-letter-0.jsonl")).unwrap();
        let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let lines: Vec<u64> = dead.iter().map(|d| d["line"].as_u64().unwrap()).collect();
        assert_eq!(lines, [2, 4, 6]);
        assert!(dead[0]["error"].as_str().unwrap().starts_with("not valid UTF-8"), "{}", dead[0]);
        let long = dead[1]["error"].as_str().unwrap();
        assert_eq!(long, format!("a line of {} bytes is longer than the limit of 1048576 bytes", (10 << 20) + 17));
        assert_eq!(dead[1]["record"].as_str().unwrap().len(), LONG_LINE_PREVIEW);
        assert_eq!(s.done[0].offset, input.len() as u64, "the position is after every line");
    }

    #[test]
    fn lines_are_read_across_buffer_boundaries_within_their_limit() {
        let input = b"ab\r\nabcd\n\nabcde\r\nxyz\r\n\rtail";
        let mut reader = BufReader::with_capacity(3, &input[..]);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            let (n, too_long) = read_line(&mut reader, &mut buf, 4).unwrap();
            if n == 0 {
                break;
            }
            lines.push((n, too_long, String::from_utf8_lossy(&buf).into_owned()));
            assert!(buf.len() <= 6, "at most the limit and a line break");
        }
        let expected = [(4, false, "ab"), (5, false, "abcd"), (1, false, ""), (7, true, "abcde\r")];
        let expected = expected.into_iter().chain([(5, false, "xyz"), (5, true, "\rtail")]);
        let expected: Vec<_> = expected.map(|(n, long, text)| (n, long, text.to_string())).collect();
        assert_eq!(lines, expected);
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
            s.restore_state(RestoredState { entries: share, all_entries: entries.clone(), ..Default::default() })
                .unwrap();
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
