//! Exchanges: how batches move between tasks.
//!
//! Every task with inputs owns one bounded queue of `(channel, Event)` pairs;
//! each upstream subtask writes to it as one numbered *channel*. The queue's
//! bound (in batches) is what turns a slow consumer into backpressure on its
//! producers instead of growing memory: a full queue blocks the producer, and
//! the time it waits is counted as backpressure.
//!
//! The writing side is an [`ExchangeWriter`] at the end of the producer's chain,
//! which partitions records ([`Partitioning`]); the reading side is an
//! [`InputGate`], which merges the channels' watermarks, idleness, barriers and
//! ends into one ordered stream for the consumer's chain.
//!
//! Across processes (the distributed runtime) a channel's queue is fed by a
//! network reader that grants the remote writer credits for free buffers; the
//! queue and the gate stay the same ([`remote`]).

mod gate;
pub mod remote;
mod writer;

pub use gate::{GateEvent, InputGate};
pub use writer::{ExchangeWriter, Partitioning};

use crossbeam_channel::{Receiver, Sender};

use crate::element::Event;

/// A message on a task's input queue: the channel it came from and the event.
pub type Envelope<T> = (u32, Event<T>);

/// The producing end of one channel.
pub struct ChannelSender<T> {
    pub tx: Sender<Envelope<T>>,
    pub channel: u32,
}

/// Creates a task's input queue holding at most `capacity` events.
pub fn input_queue<T>(capacity: usize) -> (Sender<Envelope<T>>, Receiver<Envelope<T>>) {
    crossbeam_channel::bounded(capacity)
}
