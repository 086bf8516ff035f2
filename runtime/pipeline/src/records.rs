//! Record formats of sources (JSON objects and CSV lines with declared field
//! types), and what happens to records that do not fit ([`DeadLetters`]).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use smol_str::SmolStr;
use weir_core::{TaskError, TaskResult};

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

/// Decodes a JSON object straight into a row (no intermediate JSON value):
/// each key is looked up in the schema, each value read as a scalar and
/// converted to the field's type; other keys are skipped.
fn decode_json(schema: &Schema, bytes: &[u8]) -> Result<Row, String> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let row = RowSeed(schema).deserialize(&mut de).map_err(|e| match e.classify() {
        // Every value is accepted as a scalar: only the top level can be of the wrong type.
        serde_json::error::Category::Data => "not a JSON object".to_string(),
        _ => format!("not JSON: {e}"),
    })?;
    de.end().map_err(|e| format!("not JSON: {e}"))?;
    row.into_iter()
        .zip(&schema.fields)
        .map(|(v, (name, ty))| {
            let v = v.ok_or_else(|| format!("missing field `{name}`"))?;
            v.convert(*ty).ok_or_else(|| format!("field `{name}`: expected {ty}, got {v}"))
        })
        .collect()
}

/// A JSON scalar as read, before conversion to a field type.
enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer beyond i64, or a number with a fraction or exponent.
    Float(f64),
    Str(std::borrow::Cow<'a, str>),
    /// An object or array (never a valid field value).
    Composite(&'static str),
}

impl Scalar<'_> {
    fn convert(&self, ty: FieldType) -> Option<Value> {
        Some(match (self, ty) {
            (Scalar::Null, _) => Value::Null,
            (Scalar::Bool(b), FieldType::Bool) => Value::Bool(*b),
            (Scalar::Int(i), FieldType::Int) => Value::Int(*i),
            (Scalar::Int(i), FieldType::Float) => Value::Float(*i as f64),
            (Scalar::Float(f), FieldType::Float) => Value::Float(*f),
            (Scalar::Str(s), FieldType::String) => Value::Str(SmolStr::new(s.as_ref())),
            _ => return None,
        })
    }
}

impl std::fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Null => f.write_str("null"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{}", serde_json::Value::from(s.as_ref())),
            Scalar::Composite(what) => f.write_str(what),
        }
    }
}

struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Scalar<'de>, E> {
        Ok(i64::try_from(u).map_or(Scalar::Float(u as f64), Scalar::Int))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Float(x))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(s.into()))
    }
    fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(s.to_string().into()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        Ok(Scalar::Composite("an object"))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Scalar::Composite("an array"))
    }
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// Reads an object's fields into the schema's slots.
struct RowSeed<'s>(&'s Schema);

impl<'de> serde::de::DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Vec<Option<Scalar<'de>>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowSeed<'_> {
    type Value = Vec<Option<Scalar<'de>>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots: Vec<Option<Scalar<'de>>> = (0..self.0.fields.len()).map(|_| None).collect();
        while let Some(slot) = map.next_key_seed(FieldSlot(self.0))? {
            match slot {
                Some(i) => slots[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(slots)
    }
}

/// A key, as the index of its field (without allocating the key).
struct FieldSlot<'s>(&'s Schema);

impl<'de> serde::de::DeserializeSeed<'de> for FieldSlot<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldSlot<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.fields.iter().position(|(n, _)| n == key))
    }
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
