//! Channels whose other end is in another process (the distributed runtime).
//!
//! The core knows no sockets. When a job is deployed over several processes,
//! the executor hands the network layer (a [`Network`], implemented by the
//! `weir-cluster` crate) one type-erased end per channel that crosses a
//! process boundary:
//!
//! * a producer's channel to a remote consumer becomes an [`OutboundChannel`]:
//!   the producer's [`super::ExchangeWriter`] writes to a bounded queue as
//!   usual, and the network layer pulls the queue's events as encoded frames;
//! * a consumer's channel from a remote producer becomes an
//!   [`InboundChannel`]: the network layer hands it each frame, which it
//!   decodes and puts on the consumer's input queue, blocking while the queue
//!   is full. Only then does the network layer grant the producer a new
//!   credit, so a slow consumer backpressures a remote producer exactly as it
//!   does a local one.
//!
//! Frames are the events of [`crate::element::Event`] in bincode: a batch of
//! records is one frame. A frame that does not decode is an error naming the
//! channel, never a panic.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use super::Envelope;
use crate::element::{Barrier, Data, Event, Record};
use crate::time::Timestamp;

/// Identifies one channel of a job: the edge (its index in the job graph),
/// and the producer and consumer subtasks it joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelKey {
    pub edge: u32,
    pub producer: u32,
    pub consumer: u32,
}

impl std::fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "edge {} ({} -> {})", self.edge, self.producer, self.consumer)
    }
}

/// What the executor needs from the network layer.
pub trait Network: Send + Sync {
    /// A local producer's channel to `key.consumer`, which runs elsewhere:
    /// the network layer pulls `events` and delivers them there.
    fn open_output(&self, key: ChannelKey, events: Box<dyn OutboundChannel>) -> Result<(), String>;
    /// A local consumer's channel from `key.producer`, which runs elsewhere:
    /// frames arriving for `key` go to `sink`.
    fn register_input(&self, key: ChannelKey, sink: Box<dyn InboundChannel>) -> Result<(), String>;
}

/// The next frame of an outbound channel.
pub enum Outbound {
    Frame(Vec<u8>),
    /// The channel's last frame (end of stream) was `Frame` before this; nothing follows.
    Closed,
    /// Nothing within the timeout.
    Empty,
}

/// The producing side of a channel that crosses processes.
pub trait OutboundChannel: Send {
    /// The next event, encoded; waits up to `timeout`.
    fn next(&mut self, timeout: Duration) -> Outbound;
}

/// Whether a delivered frame was the channel's end of stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    More,
    End,
}

/// The consuming side of a channel that crosses processes.
pub trait InboundChannel: Send {
    /// Decodes `frame` and puts it on the consumer's queue (blocking while full).
    fn deliver(&mut self, frame: &[u8]) -> Result<Delivered, String>;
}

#[derive(Serialize, Deserialize)]
enum Wire<T> {
    Records(Vec<Record<T>>),
    Watermark(Timestamp),
    Idle(bool),
    Barrier(Barrier),
    End(Option<u64>),
}

fn config() -> impl bincode::config::Config {
    // A hostile length prefix must not make the receiver allocate without bound.
    bincode::config::standard().with_limit::<{ 256 << 20 }>()
}

/// Encodes one event as a frame.
pub fn encode<T: Data>(event: Event<T>) -> Vec<u8> {
    let wire = match event {
        Event::Records(r) => Wire::Records(r),
        Event::Watermark(w) => Wire::Watermark(w),
        Event::Idle(i) => Wire::Idle(i),
        Event::Barrier(b) => Wire::Barrier(b),
        Event::End(completed) => Wire::End(completed),
    };
    bincode::serde::encode_to_vec(&wire, config()).expect("records are serializable")
}

/// Decodes one frame; the error says what is wrong with it.
pub fn decode<T: Data>(frame: &[u8]) -> Result<Event<T>, String> {
    let (wire, used): (Wire<T>, usize) =
        bincode::serde::decode_from_slice(frame, config()).map_err(|e| format!("malformed frame: {e}"))?;
    if used != frame.len() {
        return Err(format!("malformed frame: {} bytes after the event", frame.len() - used));
    }
    Ok(match wire {
        Wire::Records(r) => Event::Records(r),
        Wire::Watermark(w) => Event::Watermark(w),
        Wire::Idle(i) => Event::Idle(i),
        Wire::Barrier(b) => Event::Barrier(b),
        Wire::End(completed) => Event::End(completed),
    })
}

/// An outbound channel reading a producer's bounded queue.
pub(crate) struct QueueOutbound<T> {
    pub rx: Receiver<Envelope<T>>,
    pub ended: bool,
}

impl<T: Data> OutboundChannel for QueueOutbound<T> {
    fn next(&mut self, timeout: Duration) -> Outbound {
        if self.ended {
            return Outbound::Closed;
        }
        match self.rx.recv_timeout(timeout) {
            Ok((_, event)) => {
                self.ended = matches!(event, Event::End(_));
                Outbound::Frame(encode(event))
            }
            Err(RecvTimeoutError::Timeout) => Outbound::Empty,
            // The producer is gone without ending its stream (it failed or was cancelled).
            Err(RecvTimeoutError::Disconnected) => Outbound::Closed,
        }
    }
}

/// An inbound channel feeding a consumer's input queue as channel `channel`.
pub(crate) struct QueueInbound<T> {
    pub tx: Sender<Envelope<T>>,
    pub channel: u32,
}

impl<T: Data> InboundChannel for QueueInbound<T> {
    fn deliver(&mut self, frame: &[u8]) -> Result<Delivered, String> {
        let event = decode::<T>(frame)?;
        let end = matches!(event, Event::End(_));
        self.tx.send((self.channel, event)).map_err(|_| "the consuming task is gone".to_string())?;
        Ok(if end { Delivered::End } else { Delivered::More })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let events = vec![
            Event::Records(vec![Record::new(5, ("a".to_string(), 1u64)), Record::new(7, ("b".into(), 2))]),
            Event::Watermark(42),
            Event::Idle(true),
            Event::Barrier(Barrier { checkpoint_id: 3, triggered_at: 9, is_savepoint: true }),
            Event::End(None),
            Event::End(Some(7)),
        ];
        for e in events {
            let shown = format!("{e:?}");
            let back = decode::<(String, u64)>(&encode(e)).unwrap();
            assert_eq!(format!("{back:?}"), shown);
        }
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(decode::<u64>(&[]).unwrap_err().contains("malformed frame"));
        assert!(decode::<u64>(&[9, 9, 9]).unwrap_err().contains("malformed frame"));
        // A record batch claiming 2^60 records in a few bytes.
        assert!(decode::<u64>(&[0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let mut good = encode(Event::<u64>::Watermark(1));
        good.push(0);
        assert!(decode::<u64>(&good).unwrap_err().contains("after the event"));
    }
}
