//! Encoding of state in snapshots (bincode over serde: compact and fast).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{TaskError, TaskResult};

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("state is serializable")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> TaskResult<T> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| TaskError::Operator(format!("cannot restore {what}: the snapshot does not decode ({e})")))
}
