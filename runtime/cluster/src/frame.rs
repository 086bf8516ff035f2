//! Length-prefixed frames on a byte stream: a `u32` length (little endian),
//! then that many bytes. Both the control protocol and the data plane use it.
//!
//! A frame longer than the reader allows is refused before anything is
//! allocated for it: a hostile or confused peer cannot make a process
//! allocate without bound.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Control messages are small; this bounds a malformed one.
pub const MAX_CONTROL_FRAME: usize = 64 << 20;
/// A data frame is one batch of records.
pub const MAX_DATA_FRAME: usize = 256 << 20;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
}

pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("frame longer than 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)
}

/// Reads one frame into `buf` (reused across calls).
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>, max: usize) -> Result<(), FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Closed,
        _ => e.into(),
    })
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_CONTROL_FRAME>()
}

/// Writes one message as a frame.
pub fn send<M: Serialize>(w: &mut impl Write, message: &M) -> io::Result<()> {
    let bytes = bincode::serde::encode_to_vec(message, config()).map_err(io::Error::other)?;
    write_frame(w, &bytes)?;
    w.flush()
}

/// Reads one message.
pub fn recv<M: DeserializeOwned>(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<M, FrameError> {
    read_frame(r, buf, MAX_CONTROL_FRAME)?;
    let (m, used) =
        bincode::serde::decode_from_slice(buf, config()).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != buf.len() {
        return Err(FrameError::Malformed(format!("{} bytes after the message", buf.len() - used)));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_what_is_too_large() {
        let mut wire = Vec::new();
        send(&mut wire, &("hello".to_string(), 7u64)).unwrap();
        write_frame(&mut wire, &[1, 2, 3]).unwrap();
        let mut r = wire.as_slice();
        let mut buf = Vec::new();
        let m: (String, u64) = recv(&mut r, &mut buf).unwrap();
        assert_eq!(m, ("hello".into(), 7));
        assert!(matches!(read_frame(&mut r, &mut buf, 2), Err(FrameError::TooLarge { len: 3, max: 2 })));
        assert!(matches!(read_frame(&mut r, &mut buf, 10), Err(FrameError::Closed)));
        let hostile = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut hostile.as_slice(), &mut buf, MAX_DATA_FRAME),
            Err(FrameError::TooLarge { .. })
        ));
        let garbage = [3, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(matches!(recv::<(String, u64)>(&mut garbage.as_slice(), &mut buf), Err(FrameError::Malformed(_))));
    }
}
