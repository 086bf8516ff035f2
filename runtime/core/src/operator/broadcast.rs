//! Broadcast state (Flink's `KeyedBroadcastProcessFunction`): a keyed stream
//! connected with a stream that every subtask receives whole, such as rules
//! or a small dimension table.
//!
//! The broadcast side updates the function's broadcast state, one value per
//! subtask that every subtask builds the same way from the same elements;
//! the keyed side reads it, beside its own keyed state and timers. The
//! operator's watermark is the minimum of both inputs', so an event-time
//! timer fires only once every broadcast element up to its time has arrived:
//! the way to make a keyed record meet the rules that were in force at its
//! time, whichever input ran ahead.
//!
//! A checkpoint stores the broadcast state once (subtask 0's: at a barrier
//! every subtask has seen the same broadcast elements), and a restore at any
//! parallelism hands that copy to every subtask.

use super::Operator;
use super::process::{KeyedProcessFunction, KeyedProcessOperator, ProcessContext};
use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::element::{Data, Record};
use crate::error::TaskResult;
use crate::graph::SubtaskInfo;
use crate::operator::co_process::CoInput;
use crate::operator::side::{OutputTag, SideOutputs};
use crate::output::Collector;
use crate::state::{Key, KeyedState, codec};
use crate::time::Timestamp;
use crate::timer::TimeDomain;

/// The user's function over a keyed stream and a broadcast stream.
pub trait KeyedBroadcastProcessFunction<K: Key, A, B, Out>: Send + 'static {
    /// The broadcast state: the same value in every subtask.
    type Broadcast: Data + Default;

    /// Declare keyed state here and keep the handles.
    fn open(&mut self, _state: &mut KeyedState<K>) {}

    /// A record of the keyed input: its key's state and timers through `ctx`,
    /// the broadcast state read-only.
    fn process_element(&mut self, value: A, broadcast: &Self::Broadcast, ctx: &mut ProcessContext<'_, K, Out>);

    /// An element of the broadcast input, which every subtask receives: update
    /// the broadcast state from it, the same way everywhere (deterministically).
    fn process_broadcast_element(
        &mut self,
        value: B,
        broadcast: &mut Self::Broadcast,
        ctx: &mut BroadcastContext<'_, Out>,
    );

    fn on_timer(
        &mut self,
        _time: Timestamp,
        _domain: TimeDomain,
        _broadcast: &Self::Broadcast,
        _ctx: &mut ProcessContext<'_, K, Out>,
    ) {
    }
}

/// What handling a broadcast element may do: emit, and read the time.
pub struct BroadcastContext<'a, Out> {
    time: Timestamp,
    watermark: Timestamp,
    subtask: usize,
    out: &'a mut Vec<Record<Out>>,
    sides: &'a SideOutputs,
}

impl<Out> BroadcastContext<'_, Out> {
    /// The broadcast element's timestamp.
    pub fn timestamp(&self) -> Timestamp {
        self.time
    }

    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// This subtask's index (every subtask handles every broadcast element).
    pub fn subtask(&self) -> usize {
        self.subtask
    }

    /// Emits a result with the element's timestamp.
    pub fn emit(&mut self, value: Out) {
        self.out.push(Record::new(self.time, value));
    }

    /// Emits `value` with the element's timestamp to the side output `tag`.
    pub fn output<X: serde::Serialize>(&mut self, tag: &OutputTag<X>, value: X) {
        self.sides.emit(tag, self.time, &value);
    }
}

/// The function and its broadcast state, as the keyed operator's function.
struct WithBroadcast<F, S, B> {
    function: F,
    broadcast: S,
    _broadcast_input: std::marker::PhantomData<fn(B)>,
}

impl<K, A, B, Out, F> KeyedProcessFunction<K, A, Out> for WithBroadcast<F, F::Broadcast, B>
where
    K: Key,
    B: 'static,
    F: KeyedBroadcastProcessFunction<K, A, B, Out>,
{
    fn open(&mut self, state: &mut KeyedState<K>) {
        self.function.open(state);
    }

    fn process_element(&mut self, value: A, ctx: &mut ProcessContext<'_, K, Out>) {
        self.function.process_element(value, &self.broadcast, ctx);
    }

    fn on_timer(&mut self, time: Timestamp, domain: TimeDomain, ctx: &mut ProcessContext<'_, K, Out>) {
        self.function.on_timer(time, domain, &self.broadcast, ctx);
    }
}

/// Runs a [`KeyedBroadcastProcessFunction`] over the tagged records of both
/// inputs (the keyed side hash-partitioned, the broadcast side to every subtask).
pub struct KeyedBroadcastOperator<K: Key, A, B, Out, F: KeyedBroadcastProcessFunction<K, A, B, Out>, KS> {
    keyed: KeyedProcessOperator<K, A, Out, WithBroadcast<F, F::Broadcast, B>, KS>,
    subtask: usize,
    watermark: Timestamp,
    sides: SideOutputs,
}

impl<K, A, B, Out, F, KS> KeyedBroadcastOperator<K, A, B, Out, F, KS>
where
    K: Key,
    A: Data,
    B: Data,
    Out: Data,
    F: KeyedBroadcastProcessFunction<K, A, B, Out>,
    KS: Fn(&A) -> K + Send + 'static,
{
    pub fn new(function: F, key_selector: KS, info: &SubtaskInfo) -> Self {
        let with =
            WithBroadcast { function, broadcast: F::Broadcast::default(), _broadcast_input: std::marker::PhantomData };
        KeyedBroadcastOperator {
            keyed: KeyedProcessOperator::new(with, key_selector, info),
            subtask: info.index,
            watermark: crate::time::MIN_WATERMARK,
            sides: info.side_outputs.clone(),
        }
    }

    fn broadcast_element(&mut self, record: Record<B>, out: &mut Collector<'_, Out>) {
        let with = self.keyed.function_mut();
        let mut ctx = BroadcastContext {
            time: record.time,
            watermark: self.watermark,
            subtask: self.subtask,
            out: out.buffer(),
            sides: &self.sides,
        };
        with.function.process_broadcast_element(record.value, &mut with.broadcast, &mut ctx);
    }
}

impl<K, A, B, Out, F, KS> Operator for KeyedBroadcastOperator<K, A, B, Out, F, KS>
where
    K: Key,
    A: Data,
    B: Data,
    Out: Data,
    F: KeyedBroadcastProcessFunction<K, A, B, Out>,
    KS: Fn(&A) -> K + Send + 'static,
{
    type In = CoInput<A, B>;
    type Out = Out;

    /// Runs of keyed records go to the keyed operator as batches; each
    /// broadcast element is handled in its place between them.
    fn process_batch(&mut self, batch: Vec<Record<CoInput<A, B>>>, out: &mut Collector<'_, Out>) -> TaskResult {
        let mut keyed = Vec::new();
        for record in batch {
            match record.value {
                CoInput::First(a) => keyed.push(Record::new(record.time, a)),
                CoInput::Second(b) => {
                    if !keyed.is_empty() {
                        self.keyed.process_batch(std::mem::take(&mut keyed), out)?;
                    }
                    self.broadcast_element(Record::new(record.time, b), out);
                }
            }
        }
        if !keyed.is_empty() {
            self.keyed.process_batch(keyed, out)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<'_, Out>) -> TaskResult {
        self.watermark = watermark;
        self.keyed.on_watermark(watermark, out)
    }

    fn on_processing_time(&mut self, now: Timestamp, out: &mut Collector<'_, Out>) -> TaskResult {
        self.keyed.on_processing_time(now, out)
    }

    fn on_end(&mut self, out: &mut Collector<'_, Out>) -> TaskResult {
        self.keyed.on_end(out)
    }

    /// The keyed state by key group, and the broadcast state once (subtask 0's).
    fn snapshot_state(&mut self, checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        let mut snapshot = self.keyed.snapshot_state(checkpoint_id)?;
        if self.subtask == 0 {
            snapshot.entries.push(codec::encode(&self.keyed.function_mut().broadcast));
        }
        Ok(snapshot)
    }

    /// The keyed state's changes, and the broadcast state whole.
    fn snapshot_changes(&mut self, checkpoint_id: u64) -> TaskResult<Option<OperatorSnapshot>> {
        let Some(mut snapshot) = self.keyed.snapshot_changes(checkpoint_id)? else { return Ok(None) };
        if self.subtask == 0 {
            snapshot.entries.push(codec::encode(&self.keyed.function_mut().broadcast));
        }
        Ok(Some(snapshot))
    }

    /// Every subtask takes the one stored copy of the broadcast state.
    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        if let Some(blob) = state.all_entries.first() {
            self.keyed.function_mut().broadcast = codec::decode(blob, "broadcast state")?;
        }
        self.keyed.restore_state(RestoredState {
            keyed: state.keyed,
            spilled: state.spilled,
            ..RestoredState::default()
        })
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.keyed.notify_checkpoint_complete(checkpoint_id)
    }
}
