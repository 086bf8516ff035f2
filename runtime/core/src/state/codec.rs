//! Encoding of state in snapshots (bincode over serde: compact and fast).
//!
//! Snapshots are read back from storage, so decoding trusts none of their
//! lengths: bincode sizes a string's buffer by the length before it, and a
//! damaged or forged length (2^60, say) must be an error, not an allocation
//! that aborts the process. Decoding runs under a bincode limit on the bytes
//! it may claim (and so allocate): the smallest of 1, 16 or 256 MiB, 4 or 64
//! GiB that is at least `CLAIMS_PER_BYTE` times the input's size. A value
//! never claims more than that many bytes per byte it was encoded in (a small
//! `u128`, one varint byte, claims 16), so the limit refuses nothing that was
//! encoded, and a forged length claims no more than 1 MiB or 256 times the
//! input's size (a blob over 4 GiB is decoded without a limit).

use bincode::error::DecodeError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{TaskError, TaskResult};

/// The most bytes bincode claims for one encoded byte (a small `u128` or `i128`).
const CLAIMS_PER_BYTE: usize = 16;

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("state is serializable")
}

/// As [`encode`], appending to `out` (no allocation when it has room).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard()).expect("state is serializable");
}

/// Decodes what [`encode`] wrote; a damaged or forged blob is an error (never a
/// panic, nor an allocation its size cannot justify) saying `what` it was.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> TaskResult<T> {
    // The limit is a constant of bincode's configuration: the smallest of these that fits.
    let decoded = match bytes.len().saturating_mul(CLAIMS_PER_BYTE) {
        n if n <= 1 << 20 => decode_within::<T, { 1 << 20 }>(bytes),
        n if n <= 1 << 24 => decode_within::<T, { 1 << 24 }>(bytes),
        n if n <= 1 << 28 => decode_within::<T, { 1 << 28 }>(bytes),
        n if n <= 1 << 32 => decode_within::<T, { 1 << 32 }>(bytes),
        n if n <= 1 << 36 => decode_within::<T, { 1 << 36 }>(bytes),
        _ => decode_within::<T, { usize::MAX }>(bytes),
    };
    decoded.map_err(|e| {
        let why = match e {
            DecodeError::LimitExceeded => format!("a length in it is larger than its {} bytes can hold", bytes.len()),
            e => e.to_string(),
        };
        TaskError::Operator(format!("cannot restore {what}: the snapshot does not decode ({why})"))
    })
}

/// Decodes a small value (a header of at most 1 MiB's claims) that [`encode`]
/// wrote at the start of `bytes`, and hands back the bytes after it.
pub fn decode_head<'a, T: DeserializeOwned>(bytes: &'a [u8], what: &str) -> TaskResult<(T, &'a [u8])> {
    let config = bincode::config::standard().with_limit::<{ 1 << 20 }>();
    match bincode::serde::decode_from_slice(bytes, config) {
        Ok((value, used)) => Ok((value, &bytes[used..])),
        Err(e) => Err(TaskError::Operator(format!("cannot restore {what}: the snapshot does not decode ({e})"))),
    }
}

/// Appends `len` as a varint (bincode's: one byte below 251).
pub fn encode_len(len: usize, out: &mut Vec<u8>) {
    bincode::encode_into_std_write(len as u64, out, bincode::config::standard()).expect("a Vec takes every write");
}

/// A varint length that [`encode_len`] wrote at the start of `bytes`, and
/// the bytes after it; `None` when there is none or it is damaged.
pub fn decode_len(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (len, used): (u64, usize) = bincode::decode_from_slice(bytes, bincode::config::standard()).ok()?;
    Some((usize::try_from(len).ok()?, bytes.get(used..)?))
}

fn decode_within<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<T, DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard().with_limit::<LIMIT>()).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_length_is_an_error_not_an_allocation() {
        // A string whose varint length (0xfd: a u64 follows) says 2^60 bytes.
        let mut forged = vec![0xfd];
        forged.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let err = decode::<String>(&forged, "a name").unwrap_err().to_string();
        assert!(err.contains("cannot restore a name") && err.contains("larger than its 9 bytes can hold"), "{err}");
        // The same inside keyed state, and a length just past the 1 MiB floor.
        let mut entries = encode(&vec![("k".to_string(), 1u64)]);
        entries.truncate(1); // one entry, whose key's length is forged
        entries.push(0xfd);
        entries.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<Vec<(String, u64)>>(&entries, "keyed state").is_err());
        let mut big = vec![0xfc];
        big.extend_from_slice(&(2u32 << 20).to_le_bytes());
        assert!(decode::<String>(&big, "a name").unwrap_err().to_string().contains("larger than its 5 bytes"));
    }

    #[test]
    fn whatever_was_encoded_decodes_under_the_limit() {
        // Small u128s claim the most per encoded byte; strings one per byte.
        for n in [0usize, 1, 100, 65_535, 65_536, 300_000] {
            let wide: Vec<u128> = (0..n).map(|i| (i % 100) as u128).collect();
            assert_eq!(decode::<Vec<u128>>(&encode(&wide), "wide").unwrap(), wide, "{n}");
        }
        let text = vec!["x".repeat(3 << 20), String::new(), "é".repeat(10)];
        assert_eq!(decode::<Vec<String>>(&encode(&text), "text").unwrap(), text);
    }
}
