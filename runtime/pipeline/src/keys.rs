//! The keys of keyed steps (dedup, window, anomaly, join): the values of a
//! row's key fields, in a type chosen when the pipeline is built.
//!
//! A key of one `int` field is an [`IntKey`], 16 bytes compared as a number;
//! a key of one `string` field a [`StrKey`], compared as text; any other key
//! is a [`RowKey`] of values ([`KeyType::of`] chooses). All three hash and
//! encode exactly as the `Vec<Value>` keys of earlier versions did (the key's
//! length, then its values), so a checkpoint's key groups and entries restore
//! into any of them, whichever built the job that took it; the key types
//! differ in what the hot path does per row (no value's type to match, a
//! number compared as a number) and in what state holds per key.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use weir_core::state::Key;

use crate::value::{FieldType, Row, Schema, Value};

/// Which type keys a step's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Int,
    Str,
    Row,
}

impl KeyType {
    /// The key type of rows of `input` keyed by their `key` fields.
    pub fn of(input: &Schema, key: &[usize]) -> KeyType {
        match key {
            [i] if input.fields[*i].1 == FieldType::Int => KeyType::Int,
            [i] if input.fields[*i].1 == FieldType::String => KeyType::Str,
            _ => KeyType::Row,
        }
    }
}

/// `$body` with `$k` the key type of rows of `$input` keyed by their `$key`
/// fields ([`KeyType::of`]): one expression built for each type.
macro_rules! with_key_type {
    ($input:expr, $key:expr, $k:ident => $body:expr) => {
        match $crate::keys::KeyType::of($input, $key) {
            $crate::keys::KeyType::Int => {
                type $k = $crate::keys::IntKey;
                $body
            }
            $crate::keys::KeyType::Str => {
                type $k = $crate::keys::StrKey;
                $body
            }
            $crate::keys::KeyType::Row => {
                type $k = $crate::keys::RowKey;
                $body
            }
        }
    };
}
pub(crate) use with_key_type;

/// What a keyed step keys its rows by.
pub trait StepKey: Key + Clone + Sync {
    /// The key of `row`, from its fields at `fields`.
    fn of(row: &Row, fields: &[usize]) -> Self;
    /// The key's values appended to `row` (a window's row starts with them).
    fn append_to(&self, row: &mut Row);
    /// How many values the key has.
    fn width(&self) -> usize;
}

/// A key of a keyed step: the values of its key fields. A one-field key
/// (the common case) is its value, so keying a row allocates nothing, and
/// keys held in state by the million are 24 bytes each, a value's size (a
/// `SmallVec` of one value was 32: orders-dedup keeps every order id).
///
/// It hashes and encodes exactly as the `Vec<Value>` keys were (a length,
/// then the values): checkpoints taken with those restore into the same key
/// groups and decode as keys of this type.
#[derive(Debug)]
pub enum RowKey {
    One(Value),
    /// Any other number of values; always another number than one, so that
    /// a key has one form.
    Many(Box<[Value]>),
}

impl RowKey {
    #[inline]
    pub fn one(value: Value) -> RowKey {
        RowKey::One(value)
    }

    pub fn from_values(values: impl IntoIterator<Item = Value>) -> RowKey {
        let mut values = values.into_iter();
        match (values.next(), values.next()) {
            (None, _) => RowKey::default(),
            (Some(v), None) => RowKey::One(v),
            (Some(a), Some(b)) => RowKey::Many([a, b].into_iter().chain(values).collect()),
        }
    }
}

impl Default for RowKey {
    /// No values: the key of a step without key fields.
    fn default() -> RowKey {
        RowKey::Many(Box::default())
    }
}

impl Clone for RowKey {
    #[inline]
    fn clone(&self) -> RowKey {
        match self {
            RowKey::One(v) => RowKey::One(v.clone()),
            RowKey::Many(values) => RowKey::Many(values.clone()),
        }
    }
}

impl std::ops::Deref for RowKey {
    type Target = [Value];
    #[inline]
    fn deref(&self) -> &[Value] {
        match self {
            RowKey::One(v) => std::slice::from_ref(v),
            RowKey::Many(values) => values,
        }
    }
}

impl PartialEq for RowKey {
    #[inline]
    fn eq(&self, other: &RowKey) -> bool {
        match (self, other) {
            (RowKey::One(a), RowKey::One(b)) => a == b,
            _ => **self == **other,
        }
    }
}

impl Eq for RowKey {}

impl std::hash::Hash for RowKey {
    /// As the slice of its values (its length, then each value): as a `Vec<Value>` hashes.
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl Serialize for RowKey {
    /// As a sequence of its values, as a `Vec<Value>` is written.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RowKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RowKey, D::Error> {
        let values = smallvec::SmallVec::<[Value; 1]>::deserialize(deserializer)?;
        Ok(RowKey::from_values(values))
    }
}

impl StepKey for RowKey {
    #[inline]
    fn of(row: &Row, fields: &[usize]) -> RowKey {
        match *fields {
            [i] => RowKey::one(row[i].clone()),
            [] => RowKey::default(),
            _ => RowKey::from_values(fields.iter().map(|&i| row[i].clone())),
        }
    }
    fn append_to(&self, row: &mut Row) {
        row.extend_from_slice(self);
    }
    fn width(&self) -> usize {
        self.len()
    }
}

/// The key of one `int` field: its value, or `None` for null (the only
/// other value an `int` field holds). Keyed state holds one per key (q5
/// keys bids by auction), 16 bytes where a [`RowKey`] is 24, compared and
/// hashed as a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntKey(pub Option<i64>);

impl StepKey for IntKey {
    #[inline]
    fn of(row: &Row, fields: &[usize]) -> IntKey {
        debug_assert_eq!(fields.len(), 1, "an int key has one field");
        match row[fields[0]] {
            Value::Int(i) => IntKey(Some(i)),
            ref other => {
                debug_assert!(matches!(other, Value::Null), "an int field holds {other:?}");
                IntKey(None)
            }
        }
    }
    fn append_to(&self, row: &mut Row) {
        row.push(self.value());
    }
    fn width(&self) -> usize {
        1
    }
}

impl IntKey {
    fn value(&self) -> Value {
        self.0.map_or(Value::Null, Value::Int)
    }
}

impl Hash for IntKey {
    /// As the one-value slice it stands for: its length, then the value.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // A slice writes its length with `write_length_prefix`, which is
        // `write_usize` in every hasher (overriding it is not stable Rust).
        state.write_usize(1);
        match self.0 {
            Some(i) => Value::Int(i).hash(state),
            None => Value::Null.hash(state),
        }
    }
}

impl Serialize for IntKey {
    /// As a sequence of its one value, as a `Vec<Value>` is written.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A slice, not an array: an array is written as a tuple, without its length.
        std::slice::from_ref(&self.value()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for IntKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<IntKey, D::Error> {
        match RowKey::deserialize(deserializer)? {
            RowKey::One(Value::Int(i)) => Ok(IntKey(Some(i))),
            RowKey::One(Value::Null) => Ok(IntKey(None)),
            other => Err(serde::de::Error::custom(format_args!(
                "a key of one int field is an int or null, not {:?}",
                &*other
            ))),
        }
    }
}

/// The key of one `string` field: its text, or `None` for null (the only
/// other value a `string` field holds). As large as a [`RowKey`], but
/// compared and hashed as text, with no value's type to look at first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrKey(pub Option<SmolStr>);

impl StepKey for StrKey {
    #[inline]
    fn of(row: &Row, fields: &[usize]) -> StrKey {
        debug_assert_eq!(fields.len(), 1, "a string key has one field");
        match &row[fields[0]] {
            Value::Str(s) => StrKey(Some(s.clone())),
            other => {
                debug_assert!(matches!(other, Value::Null), "a string field holds {other:?}");
                StrKey(None)
            }
        }
    }
    fn append_to(&self, row: &mut Row) {
        row.push(self.value());
    }
    fn width(&self) -> usize {
        1
    }
}

impl StrKey {
    fn value(&self) -> Value {
        self.0.clone().map_or(Value::Null, Value::Str)
    }
}

impl Hash for StrKey {
    /// As the one-value slice it stands for (see [`IntKey`]'s).
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(1);
        match &self.0 {
            // As `Value::Str` hashes.
            Some(s) => s.as_str().hash(state),
            None => Value::Null.hash(state),
        }
    }
}

impl Serialize for StrKey {
    /// As a sequence of its one value, as a `Vec<Value>` is written.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        std::slice::from_ref(&self.value()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StrKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<StrKey, D::Error> {
        match RowKey::deserialize(deserializer)? {
            RowKey::One(Value::Str(s)) => Ok(StrKey(Some(s))),
            RowKey::One(Value::Null) => Ok(StrKey(None)),
            other => Err(serde::de::Error::custom(format_args!(
                "a key of one string field is a string or null, not {:?}",
                &*other
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::keygroup::hash_key;
    use weir_core::state::codec;

    /// Keys were vectors: checkpoints taken then must restore into the same
    /// key groups and decode as keys now.
    #[test]
    fn keys_hash_and_encode_as_the_vectors_they_were() {
        assert_eq!(std::mem::size_of::<RowKey>(), std::mem::size_of::<Value>());
        for values in [vec![Value::Str("us-east".into())], vec![Value::Int(7), Value::Null], vec![]] {
            let key = RowKey::from_values(values.iter().cloned());
            assert_eq!(&*key, &values[..]);
            assert!(matches!(key, RowKey::One(_)) == (values.len() == 1), "one form per key: {key:?}");
            assert_eq!(hash_key(&key), hash_key(&values), "{values:?}");
            assert_eq!(codec::encode(&key), codec::encode(&values), "{values:?}");
            let decoded: RowKey = codec::decode(&codec::encode(&values), "a key").unwrap();
            assert_eq!(decoded, key);
        }
    }

    /// An int key restores from a checkpoint whose keys were values, and
    /// the other way round: same key groups, same bytes.
    #[test]
    fn int_keys_hash_and_encode_as_row_keys() {
        assert_eq!(std::mem::size_of::<IntKey>(), 16);
        for v in [Some(0), Some(-7), Some(i64::MAX), Some(1_000_123), None] {
            let key = IntKey(v);
            let row_key = RowKey::one(key.value());
            assert_eq!(hash_key(&key), hash_key(&row_key), "{v:?}");
            // The state tables' hasher sees the same words too.
            let ahash = ahash::RandomState::with_seeds(1, 2, 3, 4);
            assert_eq!(ahash.hash_one(key), ahash.hash_one(&row_key), "{v:?}");
            assert_eq!(codec::encode(&key), codec::encode(&row_key), "{v:?}");
            let decoded: IntKey = codec::decode(&codec::encode(&row_key), "a key").unwrap();
            assert_eq!(decoded, key);
            let row = vec![Value::Str("x".into()), key.value()];
            assert_eq!(IntKey::of(&row, &[1]), key);
            assert_eq!(*RowKey::of(&row, &[1]), [key.value()]);
        }
        for other in [vec![Value::Str("7".into())], vec![Value::Int(1), Value::Int(2)], vec![]] {
            let err = codec::decode::<IntKey>(&codec::encode(&other), "a key").unwrap_err();
            assert!(err.to_string().contains("a key of one int field"), "{err}");
        }
    }

    #[test]
    fn string_keys_hash_and_encode_as_row_keys() {
        let long = "a region whose name is too long to be inline";
        for v in [Some("us-east"), Some(""), Some(long), None] {
            let key = StrKey(v.map(SmolStr::new));
            let row_key = RowKey::one(key.value());
            assert_eq!(hash_key(&key), hash_key(&row_key), "{v:?}");
            let ahash = ahash::RandomState::with_seeds(1, 2, 3, 4);
            assert_eq!(ahash.hash_one(&key), ahash.hash_one(&row_key), "{v:?}");
            assert_eq!(codec::encode(&key), codec::encode(&row_key), "{v:?}");
            let decoded: StrKey = codec::decode(&codec::encode(&row_key), "a key").unwrap();
            assert_eq!(decoded, key);
            let row = vec![key.value(), Value::Int(3)];
            assert_eq!(StrKey::of(&row, &[0]), key);
        }
        let err = codec::decode::<StrKey>(&codec::encode(&vec![Value::Int(7)]), "a key").unwrap_err();
        assert!(err.to_string().contains("a key of one string field"), "{err}");
    }

    #[test]
    fn one_int_or_string_field_has_its_own_key_type() {
        use FieldType::*;
        let schema = Schema::new([("n", Int), ("s", String), ("f", Float), ("b", Bool)]);
        assert_eq!(KeyType::of(&schema, &[0]), KeyType::Int);
        assert_eq!(KeyType::of(&schema, &[1]), KeyType::Str);
        for other in [&[2][..], &[3], &[0, 1], &[]] {
            assert_eq!(KeyType::of(&schema, other), KeyType::Row, "{other:?}");
        }
    }
}
