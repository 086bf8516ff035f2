//! Length-prefixed frames on a byte stream: a `u32` length (little endian),
//! then that many bytes. Both the control protocol and the data plane use it.
//!
//! A hostile or confused peer cannot make a process allocate without bound
//! or hold a thread forever: a frame longer than the reader allows is
//! refused from its length alone, the buffer grows as the frame's bytes
//! arrive (not from the length it announces), and once a frame has begun
//! it must arrive whole within [`FRAME_DEADLINE`] (a peer trickling a byte
//! every few seconds is dropped). The deadline is checked whenever a read
//! returns, so sockets read with it carry a read timeout of [`READ_TICK`].

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Control messages are small; this bounds a malformed one.
pub const MAX_CONTROL_FRAME: usize = 64 << 20;
/// A data frame is one batch of records.
pub const MAX_DATA_FRAME: usize = 256 << 20;
/// How long a frame may take from its first byte to its last.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(30);
/// The read timeout of sockets whose frames are read against a deadline:
/// how late, at most, a deadline is noticed.
pub const READ_TICK: Duration = Duration::from_secs(1);
/// How much the buffer grows ahead of the bytes that arrived.
const GROWTH: usize = 1 << 20;

/// How long a reader waits for a frame.
#[derive(Clone, Copy, Debug)]
pub enum Patience {
    /// For the frame to begin, as long as it takes (an idle connection is
    /// fine); once begun, this long for the rest ([`Patience::IDLE`]: [`FRAME_DEADLINE`]).
    Idle(Duration),
    /// For the whole frame, until this instant (a handshake).
    Until(Instant),
}

impl Patience {
    /// Idle connections are fine; a frame has [`FRAME_DEADLINE`] once begun.
    pub const IDLE: Patience = Patience::Idle(FRAME_DEADLINE);
}

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
    #[error("{0}")]
    TimedOut(String),
}

pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("frame longer than 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)
}

/// Reads one frame into `buf` (reused across calls), waiting as long as it takes for it to begin.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>, max: usize) -> Result<(), FrameError> {
    read_frame_within(r, buf, max, Patience::IDLE)
}

/// Reads one frame into `buf` (reused across calls) with `patience`.
pub fn read_frame_within(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    max: usize,
    patience: Patience,
) -> Result<(), FrameError> {
    let mut clock = FrameClock { patience, began: None };
    let mut len = [0u8; 4];
    clock.fill(r, &mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    buf.clear();
    while buf.len() < len {
        let (filled, to) = (buf.len(), len.min(buf.len() + GROWTH));
        buf.resize(to, 0);
        clock.fill(r, &mut buf[filled..to])?;
    }
    Ok(())
}

/// When the frame being read began, and what the reader is patient for.
struct FrameClock {
    patience: Patience,
    began: Option<Instant>,
}

impl FrameClock {
    /// Fills `dst` from `r`, or says why not.
    fn fill(&mut self, r: &mut impl Read, dst: &mut [u8]) -> Result<(), FrameError> {
        let mut at = 0;
        while at < dst.len() {
            match r.read(&mut dst[at..]) {
                Ok(0) => return Err(FrameError::Closed),
                Ok(n) => {
                    at += n;
                    self.began.get_or_insert_with(Instant::now);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
                Err(e) => return Err(e.into()),
            }
            self.check()?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), FrameError> {
        match (self.patience, self.began) {
            (Patience::Until(deadline), _) if Instant::now() >= deadline => {
                Err(FrameError::TimedOut("the peer did not complete the handshake in time".into()))
            }
            (Patience::Idle(limit), Some(began)) if began.elapsed() > limit => Err(FrameError::TimedOut(format!(
                "a frame took longer than {limit:?} to arrive (a peer too slow or trickling)"
            ))),
            _ => Ok(()),
        }
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_CONTROL_FRAME>()
}

/// The most a small message (a handshake's, before the peer is known) may
/// claim to need when decoded: a forged length inside it allocates no more.
pub const MAX_SMALL_MESSAGE: usize = 64 << 10;

fn small_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_SMALL_MESSAGE>()
}

/// Writes one message as a frame.
pub fn send<M: Serialize>(w: &mut impl Write, message: &M) -> io::Result<()> {
    let bytes = bincode::serde::encode_to_vec(message, config()).map_err(io::Error::other)?;
    write_frame(w, &bytes)?;
    w.flush()
}

/// Reads one message, waiting as long as it takes for it to begin.
pub fn recv<M: DeserializeOwned>(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<M, FrameError> {
    recv_within(r, buf, MAX_CONTROL_FRAME, Patience::IDLE)
}

/// Reads one message of at most `max` bytes with `patience`.
pub fn recv_within<M: DeserializeOwned>(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    max: usize,
    patience: Patience,
) -> Result<M, FrameError> {
    read_frame_within(r, buf, max, patience)?;
    let decoded = match max <= MAX_SMALL_MESSAGE {
        true => bincode::serde::decode_from_slice(buf, small_config()),
        false => bincode::serde::decode_from_slice(buf, config()),
    };
    let (m, used) = decoded.map_err(|e| FrameError::Malformed(e.to_string()))?;
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

    #[test]
    fn a_small_message_claiming_a_large_length_is_refused_before_anything_is_allocated() {
        // A string whose (varint) length says 32 MiB, in a 5-byte frame read as a handshake's.
        let forged = [5, 0, 0, 0, 252, 0, 0, 0, 2];
        let deadline = Patience::Until(Instant::now() + Duration::from_secs(1));
        let e = recv_within::<String>(&mut forged.as_slice(), &mut Vec::new(), MAX_SMALL_MESSAGE, deadline);
        assert!(matches!(&e, Err(FrameError::Malformed(m)) if m.contains("Limit")), "{e:?}");
    }

    /// Gives its bytes one at a time, `pause` apart; then times out, as a socket with a read timeout does.
    struct Trickle {
        bytes: std::collections::VecDeque<u8>,
        pause: Duration,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.pause);
            match self.bytes.pop_front() {
                Some(b) if !out.is_empty() => {
                    out[0] = b;
                    Ok(1)
                }
                _ => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    #[test]
    fn a_frame_that_trickles_past_its_deadline_is_dropped_but_an_idle_connection_is_not() {
        let bytes = [100u8, 0, 0, 0].into_iter().chain([1; 100]).collect();
        let mut slow = Trickle { bytes, pause: Duration::from_millis(20) };
        let mut buf = Vec::new();
        let e = read_frame_within(&mut slow, &mut buf, 1 << 20, Patience::Idle(Duration::from_millis(300)));
        assert!(matches!(&e, Err(FrameError::TimedOut(m)) if m.contains("trickling")), "{e:?}");
        // Idle before the frame begins: only a handshake's deadline ends that.
        let mut idle = Trickle { bytes: Default::default(), pause: Duration::from_millis(20) };
        let deadline = Instant::now() + Duration::from_millis(200);
        let e = read_frame_within(&mut idle, &mut buf, 16, Patience::Until(deadline));
        assert!(matches!(&e, Err(FrameError::TimedOut(m)) if m.contains("handshake")), "{e:?}");
    }

    #[test]
    fn the_buffer_grows_with_the_bytes_that_arrive_not_with_the_length_announced() {
        let mut wire = (200u32 << 20).to_le_bytes().to_vec();
        wire.extend_from_slice(&[7; 10]);
        let mut buf = Vec::new();
        assert!(matches!(read_frame(&mut wire.as_slice(), &mut buf, MAX_DATA_FRAME), Err(FrameError::Closed)));
        assert!(buf.capacity() <= 2 * GROWTH, "{} bytes reserved for 10 that came", buf.capacity());
    }
}
