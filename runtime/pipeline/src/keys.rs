//! The keys of keyed steps (dedup, window, anomaly, join): the values of a
//! row's key fields, in a type chosen when the pipeline is built.
//!
//! A key of one `int` field is an [`IntKey`], 16 bytes compared as a number;
//! a key of one `string` field a [`StrKey`], 16 bytes too (a text of up to
//! 15 bytes inline, a longer one boxed), compared as text; any other key is
//! a [`RowKey`] of values ([`KeyType::of`] chooses). All three hash and
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

/// A key of a keyed step: the values of its key fields, for the keys that
/// are not one `int` or `string` field (those have their own types). A
/// one-field key is its value, so keying a row allocates nothing, and a key
/// is 24 bytes, a value's size.
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
        // As `Value::Int` and `Value::Null` hash (a test holds them equal),
        // written out: `Value::hash`, a match over every type with a string's
        // bytes among them, is not always inlined.
        match self.0 {
            Some(i) => state.write_i64(i),
            None => state.write_u8(0),
        }
    }
}

impl Serialize for IntKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_one(self.value(), serializer)
    }
}

impl<'de> Deserialize<'de> for IntKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<IntKey, D::Error> {
        deserialize_one(deserializer, "int", |value| match value {
            Value::Int(i) => Some(IntKey(Some(*i))),
            Value::Null => Some(IntKey(None)),
            _ => None,
        })
    }
}

/// A key of one value written as a sequence of it, as a `Vec<Value>` is.
fn serialize_one<S: serde::Serializer>(value: Value, serializer: S) -> Result<S::Ok, S::Error> {
    // A slice, not an array: an array is written as a tuple, without its length.
    std::slice::from_ref(&value).serialize(serializer)
}

/// A key of one value read as [`serialize_one`] wrote it: `key` of the
/// value, which refuses with `None` a value not of the field's type (`what`)
/// nor null.
fn deserialize_one<'de, D: serde::Deserializer<'de>, K>(
    deserializer: D,
    what: &str,
    key: impl FnOnce(&Value) -> Option<K>,
) -> Result<K, D::Error> {
    let values = RowKey::deserialize(deserializer)?;
    let one = match &values {
        RowKey::One(value) => key(value),
        RowKey::Many(_) => None,
    };
    one.ok_or_else(|| {
        serde::de::Error::custom(format_args!(
            "a key of one {what} field is one {what} value or null, not {:?}",
            &*values
        ))
    })
}

/// The length of a [`StrKey`]'s inline text, 0 to [`INLINE`]: a byte whose
/// other values tell the key's other forms apart, so that a key is 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InlineLen {
    L0,
    L1,
    L2,
    L3,
    L4,
    L5,
    L6,
    L7,
    L8,
    L9,
    L10,
    L11,
    L12,
    L13,
    L14,
    L15,
}

/// The longest text a [`StrKey`] holds inline.
pub const INLINE: usize = 15;

const INLINE_LENS: [InlineLen; INLINE + 1] = {
    use InlineLen::*;
    [L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15]
};

/// The key of one `string` field, 16 bytes where a [`RowKey`] is 24: a text
/// of up to [`INLINE`] bytes (an order id, a region) held inline, a longer
/// one boxed, or null (the only other value a `string` field holds).
/// Compared and hashed as text, with no value's type to look at first;
/// keyed state holds one per key (orders-dedup: every order id).
///
/// A text has one form (inline exactly when it fits, the unused bytes zero),
/// so keys are equal when their forms are.
#[derive(Clone, Eq)]
pub enum StrKey {
    Null,
    Inline(InlineLen, [u8; INLINE]),
    /// Boxed so that the key stays 16 bytes (a `SmolStr` is 24).
    Long(Box<SmolStr>),
}

impl StrKey {
    /// The key of `text`.
    #[inline]
    pub fn new(text: &SmolStr) -> StrKey {
        let bytes = text.as_bytes();
        match INLINE_LENS.get(bytes.len()) {
            Some(&len) => StrKey::Inline(len, inline_bytes(bytes)),
            None => StrKey::Long(Box::new(text.clone())),
        }
    }

    /// An inline key's 16 bytes (its length and its text) as one number:
    /// two keys are equal when their numbers are. `None` for the other forms.
    #[inline]
    fn inline_word(&self) -> Option<u128> {
        match self {
            // SAFETY: an inline key's fields, a byte and 15 bytes, are all of
            // its 16 bytes (a test holds the key to 16), so every byte read is
            // initialised; any 16 bytes are a `u128`.
            StrKey::Inline(..) => Some(unsafe { std::mem::transmute_copy::<StrKey, u128>(self) }),
            _ => None,
        }
    }

    /// The key's text; `None` when it is null.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            StrKey::Null => None,
            // Valid: the bytes are a whole `str`'s ([`StrKey::new`]).
            StrKey::Inline(len, bytes) => std::str::from_utf8(&bytes[..*len as usize]).ok(),
            StrKey::Long(text) => Some(text),
        }
    }

    fn value(&self) -> Value {
        match self {
            StrKey::Long(text) => Value::Str((**text).clone()),
            // An inline text fits a `SmolStr` inline: nothing is allocated.
            short => short.as_str().map_or(Value::Null, |s| Value::Str(SmolStr::new(s))),
        }
    }
}

/// `bytes` (at most [`INLINE`] of them) followed by zeros. Copied a word
/// at a time, two overlapping copies for the lengths between two word sizes:
/// `copy_from_slice` of a length known only at run time calls `memcpy`, a
/// tenth of the cost of an orders-window key.
#[inline]
fn inline_bytes(bytes: &[u8]) -> [u8; INLINE] {
    let n = bytes.len();
    debug_assert!(n <= INLINE);
    let mut out = [0; INLINE];
    if n >= 8 {
        out[..8].copy_from_slice(&bytes[..8]);
        out[n - 8..n].copy_from_slice(&bytes[n - 8..]);
    } else if n >= 4 {
        out[..4].copy_from_slice(&bytes[..4]);
        out[n - 4..n].copy_from_slice(&bytes[n - 4..]);
    } else {
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = *b;
        }
    }
    out
}

impl PartialEq for StrKey {
    /// As the derived comparison, inline keys compared as one number (the
    /// derived one compared the 15 bytes through `bcmp`).
    #[inline]
    fn eq(&self, other: &StrKey) -> bool {
        match (self.inline_word(), other.inline_word()) {
            (Some(a), Some(b)) => a == b,
            _ => match (self, other) {
                (StrKey::Null, StrKey::Null) => true,
                (StrKey::Long(a), StrKey::Long(b)) => a == b,
                _ => false,
            },
        }
    }
}

impl std::fmt::Debug for StrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StrKey({:?})", self.as_str())
    }
}

impl StepKey for StrKey {
    #[inline]
    fn of(row: &Row, fields: &[usize]) -> StrKey {
        debug_assert_eq!(fields.len(), 1, "a string key has one field");
        match &row[fields[0]] {
            Value::Str(s) => StrKey::new(s),
            other => {
                debug_assert!(matches!(other, Value::Null), "a string field holds {other:?}");
                StrKey::Null
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

impl Hash for StrKey {
    /// As the one-value slice it stands for (see [`IntKey`]'s).
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(1);
        // As `Value::Str` hashes: as a `str`, its bytes and then 0xff (what
        // `Hasher::write_str` does, which no stable hasher can override).
        let bytes = match self {
            StrKey::Null => return Value::Null.hash(state),
            StrKey::Inline(len, bytes) => &bytes[..*len as usize],
            StrKey::Long(text) => text.as_bytes(),
        };
        state.write(bytes);
        state.write_u8(0xff);
    }
}

impl Serialize for StrKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_one(self.value(), serializer)
    }
}

impl<'de> Deserialize<'de> for StrKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<StrKey, D::Error> {
        deserialize_one(deserializer, "string", |value| match value {
            Value::Str(s) => Some(StrKey::new(s)),
            Value::Null => Some(StrKey::Null),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

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
            let tables = foldhash::fast::FixedState::with_seed(1);
            assert_eq!(tables.hash_one(key), tables.hash_one(&row_key), "{v:?}");
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
        assert_eq!(std::mem::size_of::<StrKey>(), 16);
        let long = "a region whose name is too long to be inline";
        for v in [Some("us-east"), Some(""), Some("ORD-12345678901"), Some("ORD-123456789012"), Some(long), None] {
            let key = v.map_or(StrKey::Null, |v| StrKey::new(&SmolStr::new(v)));
            assert_eq!(key.as_str(), v);
            assert_eq!(matches!(key, StrKey::Long(_)), v.is_some_and(|v| v.len() > INLINE), "{v:?}");
            let row_key = RowKey::one(key.value());
            assert_eq!(hash_key(&key), hash_key(&row_key), "{v:?}");
            let tables = foldhash::fast::FixedState::with_seed(1);
            assert_eq!(tables.hash_one(&key), tables.hash_one(&row_key), "{v:?}");
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
    fn string_keys_are_equal_exactly_when_their_texts_are() {
        let alphabet = "abcdefghijklmnopqrstuvwxyz";
        let mut texts: Vec<Option<String>> = vec![None];
        for n in 0..=INLINE + 2 {
            texts.push(Some(alphabet[..n].to_string()));
            // The same length, differing only in the last byte.
            if n > 0 {
                texts.push(Some(format!("{}Z", &alphabet[..n - 1])));
            }
        }
        let keys: Vec<StrKey> =
            texts.iter().map(|t| t.as_deref().map_or(StrKey::Null, |t| StrKey::new(&t.into()))).collect();
        for (a, ka) in texts.iter().zip(&keys) {
            assert_eq!(ka.as_str(), a.as_deref(), "the text survives");
            for (b, kb) in texts.iter().zip(&keys) {
                assert_eq!(ka == kb, a == b, "{a:?} and {b:?}");
            }
        }
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
