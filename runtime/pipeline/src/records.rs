//! Record formats of sources (JSON objects and CSV lines with declared field
//! types), and what happens to records that do not fit ([`DeadLetters`]).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use smol_str::SmolStr;
use weir::core::{TaskError, TaskResult};

use crate::config::OnError;
use crate::value::{FieldType, Row, Schema, Value};

/// Log at most this many malformed records per subtask.
const LOG_LIMIT: u64 = 10;

/// How a source's records are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A JSON object with every declared field.
    Json,
    /// Comma-separated values, the declared fields in order (no header).
    Csv,
}

impl Format {
    pub fn parse(name: &str) -> Result<Format, String> {
        match name {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(format!("unknown format `{other}`; expected json or csv")),
        }
    }

    /// Decodes one record into a row of `schema`; the error says what is wrong.
    pub fn decode(self, schema: &Schema, bytes: &[u8]) -> Result<Row, String> {
        match self {
            Format::Json => decode_json(schema, bytes),
            Format::Csv => decode_csv(schema, bytes),
        }
    }
}

fn decode_json(schema: &Schema, bytes: &[u8]) -> Result<Row, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
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

fn decode_csv(schema: &Schema, bytes: &[u8]) -> Result<Row, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes);
    let record = match reader.records().next() {
        Some(r) => r.map_err(|e| format!("not CSV: {e}"))?,
        None => return Err("an empty record".into()),
    };
    if record.len() != schema.fields.len() {
        return Err(format!(
            "expected {} values ({}), got {}",
            schema.fields.len(),
            schema.names().join(","),
            record.len()
        ));
    }
    schema
        .fields
        .iter()
        .zip(record.iter())
        .map(|((name, ty), text)| {
            if text.is_empty() && *ty != FieldType::String {
                return Ok(Value::Null);
            }
            let bad = || format!("field `{name}`: expected {ty}, got `{text}`");
            Ok(match ty {
                FieldType::Bool => Value::Bool(text.parse().map_err(|_| bad())?),
                FieldType::Int => Value::Int(text.trim().parse().map_err(|_| bad())?),
                FieldType::Float => Value::Float(text.trim().parse().map_err(|_| bad())?),
                FieldType::String => Value::Str(SmolStr::new(text)),
            })
        })
        .collect()
}

/// Malformed records of one source subtask: counted, the first few logged,
/// each appended to `<dir>/dead-letter-<subtask>.jsonl` when a dead-letter
/// directory is configured; or, with `on_error: fail`, the job fails.
pub struct DeadLetters {
    on_error: OnError,
    dir: Option<PathBuf>,
    out: Option<File>,
    count: Arc<AtomicU64>,
    logged: u64,
    subtask: usize,
}

impl DeadLetters {
    pub fn new(on_error: OnError, dir: Option<PathBuf>, count: Arc<AtomicU64>, subtask: usize) -> Self {
        DeadLetters { on_error, dir, out: None, count, logged: 0, subtask }
    }

    /// Handles one malformed record. `place` says where it was, for people
    /// (`in.jsonl:2`, `orders/3@1200`); `origin` says it for the dead-letter entry.
    pub fn record(
        &mut self,
        place: &str,
        origin: serde_json::Map<String, serde_json::Value>,
        record: &[u8],
        error: String,
    ) -> TaskResult {
        if self.on_error == OnError::Fail {
            return Err(TaskError::Operator(format!("{place}: malformed record: {error}")));
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        if self.logged < LOG_LIMIT {
            self.logged += 1;
            tracing::warn!("{place}: skipping malformed record: {error}");
        }
        if let Some(dir) = &self.dir {
            if self.out.is_none() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| TaskError::io(format!("creating dead-letter directory {}", dir.display()), e))?;
                let path = dir.join(format!("dead-letter-{}.jsonl", self.subtask));
                self.out =
                    Some(File::create(&path).map_err(|e| TaskError::io(format!("creating {}", path.display()), e))?);
            }
            let mut entry = origin;
            entry.insert("error".into(), error.into());
            entry.insert("record".into(), String::from_utf8_lossy(record).into_owned().into());
            writeln!(self.out.as_mut().expect("opened"), "{}", serde_json::Value::Object(entry))
                .map_err(|e| TaskError::io(format!("writing dead letter under {}", dir.display()), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new([
            ("id", FieldType::String),
            ("n", FieldType::Int),
            ("x", FieldType::Float),
            ("ok", FieldType::Bool),
        ])
    }

    #[test]
    fn json_and_csv_decode_to_the_same_row() {
        let j = Format::Json.decode(&schema(), br#"{"id":"a,b","n":3,"x":1.5,"ok":true,"extra":1}"#).unwrap();
        let c = Format::Csv.decode(&schema(), b"\"a,b\",3,1.5,true").unwrap();
        assert_eq!(j, c);
    }

    #[test]
    fn errors_name_the_field_and_what_was_expected() {
        let e = Format::Csv.decode(&schema(), b"a,three,1.5,true").unwrap_err();
        assert_eq!(e, "field `n`: expected int, got `three`");
        let e = Format::Csv.decode(&schema(), b"a,3").unwrap_err();
        assert!(e.starts_with("expected 4 values (id,n,x,ok), got 2"), "{e}");
        let e = Format::Json.decode(&schema(), br#"{"id":"a","n":"3","x":1,"ok":true}"#).unwrap_err();
        assert_eq!(e, "field `n`: expected int, got \"3\"");
        assert!(Format::Json.decode(&schema(), b"[1]").unwrap_err().contains("not a JSON object"));
    }
}
