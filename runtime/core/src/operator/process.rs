//! Keyed process functions (Flink's `KeyedProcessFunction`): the most general
//! keyed operator, with keyed state and event- and processing-time timers.
//!
//! The function sees one record at a time together with a [`ProcessContext`]
//! scoped to the record's key: it reads and writes that key's state, registers
//! timers for it, and emits results. When a timer fires, `on_timer` gets a
//! context scoped to the timer's key.

use std::sync::Arc;

use super::Operator;
use crate::element::{Data, Record};
use crate::error::TaskResult;
use crate::metrics::SubtaskMetrics;
use crate::output::Collector;
use crate::state::{Key, KeyedState, ListState, MapState, ValueSlot, ValueState};
use crate::time::{MIN_WATERMARK, Timestamp};
use crate::timer::{TimeDomain, TimerQueue};

/// A user function over a keyed stream.
pub trait KeyedProcessFunction<K: Key, In, Out>: Send + 'static {
    /// Declare keyed state here and keep the handles.
    fn open(&mut self, _state: &mut KeyedState<K>) {}

    fn process_element(&mut self, value: In, ctx: &mut ProcessContext<'_, K, Out>);

    fn on_timer(&mut self, _time: Timestamp, _domain: TimeDomain, _ctx: &mut ProcessContext<'_, K, Out>) {}
}

/// What a process function may do while handling one record or timer.
pub struct ProcessContext<'a, K: Key, Out> {
    key: &'a K,
    time: Timestamp,
    watermark: Timestamp,
    state: &'a mut KeyedState<K>,
    event_timers: &'a mut TimerQueue<K>,
    processing_timers: &'a mut TimerQueue<K>,
    out: &'a mut Vec<Record<Out>>,
}

impl<'a, K: Key, Out> ProcessContext<'a, K, Out> {
    pub fn key(&self) -> &K {
        self.key
    }

    /// The timestamp of the record (or the time of the timer) being handled.
    pub fn timestamp(&self) -> Timestamp {
        self.time
    }

    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Emits a result with the current timestamp.
    pub fn emit(&mut self, value: Out) {
        self.out.push(Record::new(self.time, value));
    }

    pub fn emit_at(&mut self, time: Timestamp, value: Out) {
        self.out.push(Record::new(time, value));
    }

    pub fn register_event_time_timer(&mut self, time: Timestamp) {
        self.event_timers.register(time, self.key);
    }

    pub fn delete_event_time_timer(&mut self, time: Timestamp) {
        self.event_timers.delete(time, self.key);
    }

    pub fn register_processing_time_timer(&mut self, time: Timestamp) {
        self.processing_timers.register(time, self.key);
    }

    pub fn delete_processing_time_timer(&mut self, time: Timestamp) {
        self.processing_timers.delete(time, self.key);
    }

    /// The current key's slot of a value state.
    pub fn value<V: 'static>(&mut self, h: &ValueState<V>) -> ValueSlot<'_, K, V> {
        self.state.value_mut(h, self.key)
    }

    pub fn map<MK: 'static, MV: 'static>(&mut self, h: &MapState<MK, MV>) -> &mut ahash::AHashMap<MK, MV> {
        self.state.map_mut(h, self.key)
    }

    pub fn list<V: 'static>(&mut self, h: &ListState<V>) -> &mut Vec<V> {
        self.state.list_mut(h, self.key)
    }

    /// Clears all state of the current key.
    pub fn clear_state(&mut self) {
        self.state.clear_key(self.key);
    }
}

/// Runs a [`KeyedProcessFunction`].
pub struct KeyedProcessOperator<K: Key, In, Out, F, KS> {
    function: F,
    key_selector: KS,
    state: KeyedState<K>,
    event_timers: TimerQueue<K>,
    processing_timers: TimerQueue<K>,
    watermark: Timestamp,
    _types: std::marker::PhantomData<fn(In) -> Out>,
    _metrics: Arc<SubtaskMetrics>,
}

impl<K, In, Out, F, KS> KeyedProcessOperator<K, In, Out, F, KS>
where
    K: Key,
    F: KeyedProcessFunction<K, In, Out>,
{
    pub fn new(mut function: F, key_selector: KS, metrics: Arc<SubtaskMetrics>) -> Self {
        let mut state = KeyedState::default();
        function.open(&mut state);
        KeyedProcessOperator {
            function,
            key_selector,
            state,
            event_timers: TimerQueue::default(),
            processing_timers: TimerQueue::default(),
            watermark: MIN_WATERMARK,
            _types: std::marker::PhantomData,
            _metrics: metrics,
        }
    }

    fn fire(&mut self, domain: TimeDomain, upto: Timestamp, out: &mut Collector<'_, Out>) {
        loop {
            let queue = match domain {
                TimeDomain::EventTime => &mut self.event_timers,
                TimeDomain::ProcessingTime => &mut self.processing_timers,
            };
            let Some((time, key)) = queue.pop_due(upto) else {
                return;
            };
            let mut ctx = ProcessContext {
                key: &key,
                time,
                watermark: self.watermark,
                state: &mut self.state,
                event_timers: &mut self.event_timers,
                processing_timers: &mut self.processing_timers,
                out: out.buffer(),
            };
            self.function.on_timer(time, domain, &mut ctx);
        }
    }
}

impl<K, In, Out, F, KS> Operator for KeyedProcessOperator<K, In, Out, F, KS>
where
    K: Key,
    In: Data,
    Out: Data,
    F: KeyedProcessFunction<K, In, Out>,
    KS: Fn(&In) -> K + Send + 'static,
{
    type In = In;
    type Out = Out;

    fn process_batch(&mut self, batch: Vec<Record<In>>, out: &mut Collector<'_, Out>) -> TaskResult {
        let buf = out.buffer();
        for r in batch {
            let key = (self.key_selector)(&r.value);
            let mut ctx = ProcessContext {
                key: &key,
                time: r.time,
                watermark: self.watermark,
                state: &mut self.state,
                event_timers: &mut self.event_timers,
                processing_timers: &mut self.processing_timers,
                out: &mut *buf,
            };
            self.function.process_element(r.value, &mut ctx);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<'_, Out>) -> TaskResult {
        self.watermark = watermark;
        self.fire(TimeDomain::EventTime, watermark, out);
        Ok(())
    }

    fn on_processing_time(&mut self, now: Timestamp, out: &mut Collector<'_, Out>) -> TaskResult {
        self.fire(TimeDomain::ProcessingTime, now, out);
        Ok(())
    }
}
