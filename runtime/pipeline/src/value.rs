//! Rows and values: the records of declarative pipelines.
//!
//! A pipeline's records are [`Row`]s: a vector of [`Value`]s whose names and
//! types are fixed when the pipeline is compiled ([`Schema`]), so expressions
//! and aggregates address fields by index and are type-checked before anything
//! runs.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// One field value.
#[derive(Debug, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(SmolStr),
}

impl Clone for Value {
    /// A value that owns nothing is copied whole. The derived clone copied a
    /// `SmolStr` field by field through the stack at an odd offset (the enum's
    /// tag lives in the string's), two store-forwarding stalls per clone:
    /// 19-24 % of orders-window's CPU through its pipeline file, where every
    /// row's key clones its region's name.
    #[inline]
    fn clone(&self) -> Value {
        match self {
            // Shares the allocation (a reference count).
            Value::Str(s) if s.is_heap_allocated() => Value::Str(s.clone()),
            // SAFETY: every other value holds only `Copy` data: null, a bool, a
            // number, or a string inline or `&'static` (a `SmolStr` that is not
            // heap-allocated; its own `clone` reads those bitwise the same
            // way), so the copy and the original own nothing to drop twice.
            _ => unsafe { std::ptr::read(self) },
        }
    }
}

/// A record of a pipeline: values in the order of its [`Schema`].
///
/// A `Vec`, one allocation per row, on purpose: rows held inline (a
/// `SmallVec` of six values, 152 bytes) were measured 1.5x faster on a
/// windowed count, where the allocation dominated, but up to 1.3x slower
/// where whole rows travel (q7's top bids, q0's pass-through), since every
/// step moves each row, and a `Vec` is 24 bytes to move (bench/before-after.sh,
/// MODE=run). Keys, which are made per row and dropped at once, are inline
/// ([`RowKey`](crate::keys::RowKey)).
pub type Row = Vec<Value>;

impl PartialEq for Value {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => state.write_u8(*b as u8 + 1),
            Value::Int(i) => state.write_i64(*i),
            Value::Float(f) => state.write_u64(f.to_bits()),
            Value::Str(s) => s.as_str().hash(state),
        }
    }
}

impl Value {
    /// The type of this value; `None` for null, which has every type.
    pub fn field_type(&self) -> Option<FieldType> {
        match self {
            Value::Null => None,
            Value::Bool(_) => Some(FieldType::Bool),
            Value::Int(_) => Some(FieldType::Int),
            Value::Float(_) => Some(FieldType::Float),
            Value::Str(_) => Some(FieldType::String),
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Total order within a type (for min, max and sorting); `None` across types.
    pub fn compare(&self, other: &Value) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (a, b) => Some(a.as_f64()?.total_cmp(&b.as_f64()?)),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
            Value::Str(s) => s.as_str().into(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// The type of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Bool,
    Int,
    Float,
    #[serde(alias = "str")]
    String,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::String => "string",
        })
    }
}

impl FieldType {
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Int | FieldType::Float)
    }

    /// Reads a JSON value as this type (ints widen to floats); `None` if it is not one.
    pub fn from_json(self, v: &serde_json::Value) -> Option<Value> {
        Some(match self {
            FieldType::Bool => Value::Bool(v.as_bool()?),
            FieldType::Int => Value::Int(v.as_i64()?),
            FieldType::Float => Value::Float(v.as_f64()?),
            FieldType::String => Value::Str(SmolStr::new(v.as_str()?)),
        })
    }
}

/// Field names and types of a stream of rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Schema {
    pub fields: Vec<(String, FieldType)>,
}

impl Schema {
    pub fn new(fields: impl IntoIterator<Item = (impl Into<String>, FieldType)>) -> Self {
        Schema { fields: fields.into_iter().map(|(n, t)| (n.into(), t)).collect() }
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|(n, _)| n == name)
    }

    pub fn field_type(&self, index: usize) -> FieldType {
        self.fields[index].1
    }

    pub fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn push(&mut self, name: impl Into<String>, ty: FieldType) {
        self.fields.push((name.into(), ty));
    }

    /// Writes `row` as a JSON object with this schema's names.
    pub fn write_json(&self, row: &Row, out: &mut Vec<u8>) {
        let mut map = serde_json::Map::with_capacity(row.len());
        for ((name, _), v) in self.fields.iter().zip(row) {
            map.insert(name.clone(), v.to_json());
        }
        serde_json::to_writer(out, &map).expect("writing JSON to memory cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clones equal their originals, and both live and drop on their own,
    /// for every kind of value: a string inline, static, and on the heap.
    #[test]
    fn a_clone_equals_its_original_and_outlives_it() {
        let long = "a string longer than twenty-three bytes, so on the heap";
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Float(-0.0),
            Value::Str(SmolStr::new("inline")),
            Value::Str(SmolStr::new_static("static")),
            Value::Str(SmolStr::new(long)),
        ];
        for v in values {
            let copy = v.clone();
            assert_eq!(copy, v);
            drop(v);
            let again = copy.clone();
            assert_eq!(again, copy);
            if let Value::Str(s) = &again {
                assert!(["inline", "static", long].contains(&s.as_str()), "{s}");
            }
        }
    }
}
