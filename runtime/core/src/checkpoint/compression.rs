//! Compression of keyed state in snapshot files.
//!
//! A state file is a concatenation of blobs indexed by `_metadata`; with
//! compression, each key group's blob is one zstd frame of its own, so a
//! restore at another parallelism still reads (and decompresses) only the
//! key groups it needs. Operator-state entries (a source's splits, a sink's
//! transactions) stay as they are: they are small. The handle of each state
//! file says how its key groups are stored ([`SubtaskStateHandle::compression`]),
//! so the files of one incremental chain may differ, and files written before
//! compression existed read as they always did.
//!
//! Compression runs on the uploader threads, beside processing, never in a
//! task at its barrier. A blob read back is not trusted: a frame that does
//! not decode, or decodes to another size than its header gives, is an error
//! naming the file, and decoding allocates only as the output really grows.
//!
//! [`SubtaskStateHandle::compression`]: super::metadata::SubtaskStateHandle::compression

use std::io::Read as _;

use serde::{Deserialize, Serialize};

/// How a state file's key groups are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// As the operator encoded them (every snapshot before format version 4).
    #[default]
    None,
    /// Each key group one zstd frame (level 1: fast, about 3x on keyed state).
    Zstd,
}

/// zstd's fastest regular level: a snapshot is written while the job runs on
/// the same cores, and level 1 already packs keyed state about 3x.
const ZSTD_LEVEL: i32 = 1;

/// The output reserved up front when decoding, at most this many times the
/// frame's size: a forged size in a frame's header allocates no more.
const RESERVE_RATIO: usize = 8;

impl Compression {
    /// The setting's name in pipeline files and errors.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }

    /// `blob` stored this way.
    pub fn compress(self, blob: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(blob.to_vec()),
            Compression::Zstd => zstd::bulk::compress(blob, ZSTD_LEVEL),
        }
    }

    /// A blob stored this way, as the operator encoded it; an error says why
    /// it does not decode.
    pub fn decompress(self, stored: Vec<u8>) -> Result<Vec<u8>, String> {
        match self {
            Compression::None => Ok(stored),
            Compression::Zstd => unzstd(&stored),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One zstd frame decoded, its size checked against the one its header gives.
fn unzstd(frame: &[u8]) -> Result<Vec<u8>, String> {
    let declared = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) => Some(n),
        Ok(None) => None,
        Err(_) => return Err(format!("a key group of {} bytes is not a zstd frame", frame.len())),
    };
    let reserve = declared.unwrap_or(0).min((frame.len() * RESERVE_RATIO) as u64) as usize;
    let mut out = Vec::with_capacity(reserve);
    let mut decoder = zstd::stream::read::Decoder::with_buffer(frame).map_err(|e| e.to_string())?.single_frame();
    match declared {
        // One byte more than declared is enough to tell a frame that lies about its size.
        Some(n) => decoder.take(n.saturating_add(1)).read_to_end(&mut out),
        None => decoder.read_to_end(&mut out),
    }
    .map_err(|e| format!("a key group of {} bytes does not decompress: {e}", frame.len()))?;
    match declared {
        Some(n) if out.len() as u64 != n => {
            Err(format!("a key group decompresses to {} bytes where its frame says {n}", out.len()))
        }
        _ => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_come_back_as_they_were() {
        let blobs = [Vec::new(), b"x".to_vec(), (0..200_000u32).flat_map(|i| (i % 1000).to_le_bytes()).collect()];
        for c in [Compression::None, Compression::Zstd] {
            for blob in &blobs {
                assert_eq!(&c.decompress(c.compress(blob).unwrap()).unwrap(), blob, "{c}");
            }
        }
        let big = &blobs[2];
        assert!(Compression::Zstd.compress(big).unwrap().len() < big.len() / 3);
    }

    #[test]
    fn a_damaged_frame_is_an_error_not_a_panic() {
        let blob: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 777).to_le_bytes()).collect();
        let frame = Compression::Zstd.compress(&blob).unwrap();
        let not_zstd = Compression::Zstd.decompress(b"bincode, not zstd".to_vec()).unwrap_err();
        assert!(not_zstd.contains("not a zstd frame"), "{not_zstd}");
        let cut = Compression::Zstd.decompress(frame[..frame.len() / 2].to_vec()).unwrap_err();
        assert!(cut.contains("does not decompress"), "{cut}");
        for at in [frame.len() / 3, frame.len() / 2, frame.len() - 2] {
            let mut flipped = frame.clone();
            flipped[at] ^= 0x5a;
            // Either refused, or (a flip zstd cannot see) some bytes: never a panic.
            let _ = Compression::Zstd.decompress(flipped);
        }
    }

    #[test]
    fn a_frame_that_lies_about_its_size_is_refused() {
        let frame = Compression::Zstd.compress(&[7u8; 4096]).unwrap();
        // The frame header's content size, written as a 2-byte field after the
        // descriptor for this size: claim 10 bytes fewer.
        let mut lying = frame.clone();
        let at = 5;
        let size = u16::from_le_bytes([lying[at], lying[at + 1]]);
        assert_eq!(size as usize + 256, 4096, "the size field is where this test expects it");
        lying[at..at + 2].copy_from_slice(&(size - 10).to_le_bytes());
        let e = Compression::Zstd.decompress(lying).unwrap_err();
        assert!(e.contains("decompress") || e.contains("says"), "{e}");
    }
}
