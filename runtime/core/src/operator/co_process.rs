//! Two-input operators (Flink's `connect`): one operator fed by two streams of
//! different types.
//!
//! Each input's records are tagged with the input they belong to
//! ([`CoInput::First`] or [`CoInput::Second`]) by a map chained to their
//! producer, and the channels of both inputs feed the one input gate of the
//! operator's task. Everything the engine guarantees for one input therefore
//! holds across both, with no second code path:
//!
//! * the operator's watermark is the minimum over the channels of *both*
//!   inputs (an idle channel, or one that ended, does not hold it back);
//! * a checkpoint barrier is aligned across the channels of both inputs
//!   (exactly-once), and an input that ends early leaves the alignment as any
//!   ended channel does;
//! * a keyed two-input operator is a [`KeyedProcessOperator`](super::process::KeyedProcessOperator)
//!   over the tagged records: both inputs share one keyed state per key and
//!   one timer service, snapshotted by key group, so a restore at another
//!   parallelism redistributes them as for one input.
//!
//! [`KeyedCoProcessFunction`] is the user's function; [`CoProcess`] adapts it.

use serde::{Deserialize, Serialize};

use super::process::{KeyedProcessFunction, ProcessContext};
use crate::state::{Key, KeyedState};
use crate::time::Timestamp;
use crate::timer::TimeDomain;

/// A record of a two-input operator, tagged with the input it came in on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoInput<A, B> {
    First(A),
    Second(B),
}

impl<A, B> CoInput<A, B> {
    /// The key of either side, by that side's key selector.
    pub fn key<K>(&self, first: impl FnOnce(&A) -> K, second: impl FnOnce(&B) -> K) -> K {
        match self {
            CoInput::First(a) => first(a),
            CoInput::Second(b) => second(b),
        }
    }
}

/// A function over two keyed streams with the same key type (Flink's
/// `KeyedCoProcessFunction`): each record arrives with a context scoped to its
/// key, through which the function reads and writes that key's state (shared
/// by both inputs), registers event- and processing-time timers, and emits.
pub trait KeyedCoProcessFunction<K: Key, A, B, Out>: Send + 'static {
    /// Declare keyed state here and keep the handles.
    fn open(&mut self, _state: &mut KeyedState<K>) {}

    /// A record of the first input.
    fn process_element1(&mut self, value: A, ctx: &mut ProcessContext<'_, K, Out>);

    /// A record of the second input.
    fn process_element2(&mut self, value: B, ctx: &mut ProcessContext<'_, K, Out>);

    fn on_timer(&mut self, _time: Timestamp, _domain: TimeDomain, _ctx: &mut ProcessContext<'_, K, Out>) {}
}

/// Runs a [`KeyedCoProcessFunction`] as a keyed process function over [`CoInput`]s.
#[derive(Clone, Debug)]
pub struct CoProcess<F>(pub F);

impl<K, A, B, Out, F> KeyedProcessFunction<K, CoInput<A, B>, Out> for CoProcess<F>
where
    K: Key,
    F: KeyedCoProcessFunction<K, A, B, Out>,
{
    fn open(&mut self, state: &mut KeyedState<K>) {
        self.0.open(state);
    }

    fn process_element(&mut self, value: CoInput<A, B>, ctx: &mut ProcessContext<'_, K, Out>) {
        match value {
            CoInput::First(a) => self.0.process_element1(a, ctx),
            CoInput::Second(b) => self.0.process_element2(b, ctx),
        }
    }

    fn on_timer(&mut self, time: Timestamp, domain: TimeDomain, ctx: &mut ProcessContext<'_, K, Out>) {
        self.0.on_timer(time, domain, ctx);
    }
}
