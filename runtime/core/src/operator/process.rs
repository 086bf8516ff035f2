//! Keyed process functions (Flink's `KeyedProcessFunction`): the most general
//! keyed operator, with keyed state and event- and processing-time timers.
//!
//! The function sees one record at a time together with a [`ProcessContext`]
//! scoped to the record's key: it reads and writes that key's state, registers
//! timers for it, and emits results. When a timer fires, `on_timer` gets a
//! context scoped to the timer's key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::Operator;
use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::checkpoint::spill::KeyedWriter;
use crate::element::{Data, Record};
use crate::error::TaskResult;
use crate::graph::SubtaskInfo;
use crate::metrics::SubtaskMetrics;
use crate::operator::side::{OutputTag, SideOutputs};
use crate::output::Collector;
use crate::state::codec;
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
    metrics: &'a SubtaskMetrics,
    failure: &'a mut Option<String>,
    sides: &'a SideOutputs,
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

    /// Emits `value` with the current timestamp to the side output `tag`
    /// (read with the stream's `side_output(tag)`; dropped when nobody does).
    pub fn output<X: Serialize>(&mut self, tag: &OutputTag<X>, value: X) {
        self.sides.emit(tag, self.time, &value);
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
    pub fn value<V: Data>(&mut self, h: &ValueState<V>) -> ValueSlot<'_, K, V> {
        self.state.value_mut(h, self.key)
    }

    pub fn map<MK: Key, MV: Data>(&mut self, h: &MapState<MK, MV>) -> &mut ahash::AHashMap<MK, MV> {
        self.state.map_mut(h, self.key)
    }

    pub fn list<V: Data>(&mut self, h: &ListState<V>) -> &mut Vec<V> {
        self.state.list_mut(h, self.key)
    }

    /// Clears all state of the current key.
    pub fn clear_state(&mut self) {
        self.state.clear_key(self.key);
    }

    /// Fails the job with `reason` (as an exception thrown from a Flink
    /// function does): the batch in hand is finished, then the task fails and
    /// the job restarts by its restart strategy. The first reason wins.
    pub fn fail(&mut self, reason: impl Into<String>) {
        if self.failure.is_none() {
            *self.failure = Some(reason.into());
        }
    }

    /// Counts a record dropped because it came after the watermark had passed it
    /// (the `late_records` metric).
    pub fn count_late(&mut self) {
        SubtaskMetrics::add(&self.metrics.late_records, 1);
    }

    /// The state, the key and the output at once, for functions in this crate
    /// that read one state while they emit.
    pub(crate) fn parts(&mut self) -> (&mut KeyedState<K>, &K, &mut Vec<Record<Out>>, &SideOutputs) {
        (self.state, self.key, self.out, self.sides)
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
    max_parallelism: u32,
    _types: std::marker::PhantomData<fn(In) -> Out>,
    metrics: Arc<SubtaskMetrics>,
    /// Set by [`ProcessContext::fail`]; fails the task after the call that set it.
    failure: Option<String>,
    sides: SideOutputs,
    /// The key groups that had timers at the last snapshot (incremental checkpoints).
    timer_groups: BTreeSet<u32>,
}

/// One key group of a process function's snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
struct ProcessGroup<K> {
    #[serde(with = "blobs")]
    tables: Vec<Vec<u8>>,
    event_timers: Vec<(Timestamp, K)>,
    processing_timers: Vec<(Timestamp, K)>,
}

/// The tables' blobs as byte strings: bincode writes and reads each as one
/// slice instead of byte by byte, in the same bytes as a `Vec<u8>`.
mod blobs {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(tables: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(tables.iter().map(|t| Bytes::new(t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Ok(Vec::<ByteBuf>::deserialize(d)?.into_iter().map(ByteBuf::into_vec).collect())
    }
}

/// The first byte of a key group's changes since the previous snapshot,
/// followed by a [`ProcessGroup`] whose tables hold changes and whose timers
/// replace the group's. A full group is a bare `ProcessGroup`, which opens
/// with the number of tables as a varint: never this byte (a u128 marker).
const CHANGES_TAG: u8 = 0xfe;

impl<K> ProcessGroup<K> {
    fn empty(tables: usize) -> Self {
        ProcessGroup { tables: vec![Vec::new(); tables], event_timers: Vec::new(), processing_timers: Vec::new() }
    }
}

impl<K, In, Out, F, KS> KeyedProcessOperator<K, In, Out, F, KS>
where
    K: Key,
    F: KeyedProcessFunction<K, In, Out>,
{
    pub fn new(mut function: F, key_selector: KS, info: &SubtaskInfo) -> Self {
        let mut state = KeyedState::new(&info.state_backend, info.max_parallelism);
        if info.snapshots.is_incremental() {
            state.track_changes();
        }
        function.open(&mut state);
        KeyedProcessOperator {
            function,
            key_selector,
            state,
            event_timers: TimerQueue::new(&info.state_backend),
            processing_timers: TimerQueue::new(&info.state_backend),
            watermark: MIN_WATERMARK,
            max_parallelism: info.max_parallelism,
            _types: std::marker::PhantomData,
            metrics: info.metrics.clone(),
            failure: None,
            sides: info.side_outputs.clone(),
            timer_groups: BTreeSet::new(),
        }
    }

    /// Every key group's timers, as a snapshot keeps them; notes which groups have some.
    fn timers_by_group(&mut self, groups: &mut BTreeMap<u32, ProcessGroup<K>>) -> TaskResult {
        let (max, tables) = (self.max_parallelism, self.state.table_count());
        // A group whose timers all went since the last snapshot is written with none.
        let before = std::mem::take(&mut self.timer_groups);
        for (g, timers) in self.event_timers.by_group(max)? {
            groups.entry(g).or_insert_with(|| ProcessGroup::empty(tables)).event_timers = timers;
            self.timer_groups.insert(g);
        }
        for (g, timers) in self.processing_timers.by_group(max)? {
            groups.entry(g).or_insert_with(|| ProcessGroup::empty(tables)).processing_timers = timers;
            self.timer_groups.insert(g);
        }
        if self.state.is_tracking() {
            for g in before {
                groups.entry(g).or_insert_with(|| ProcessGroup::empty(tables));
            }
        }
        Ok(())
    }

    /// The function, for operators built around this one.
    pub(crate) fn function_mut(&mut self) -> &mut F {
        &mut self.function
    }

    /// Entries over all of the function's keyed state (a size measure).
    pub fn state_entries(&self) -> usize {
        self.state.entries()
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
                metrics: &self.metrics,
                failure: &mut self.failure,
                sides: &self.sides,
            };
            self.function.on_timer(time, domain, &mut ctx);
        }
    }

    /// The failure a function asked for, as the task's error.
    fn check_failure(&mut self) -> TaskResult {
        let failure = self.failure.take();
        let timers = || self.event_timers.take_failure().or_else(|| self.processing_timers.take_failure());
        match failure.or_else(timers) {
            Some(reason) => Err(crate::error::TaskError::Operator(reason)),
            None => self.state.check(),
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
                metrics: &self.metrics,
                failure: &mut self.failure,
                sides: &self.sides,
            };
            self.function.process_element(r.value, &mut ctx);
        }
        self.check_failure()
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<'_, Out>) -> TaskResult {
        self.watermark = watermark;
        self.fire(TimeDomain::EventTime, watermark, out);
        self.check_failure()
    }

    fn on_processing_time(&mut self, now: Timestamp, out: &mut Collector<'_, Out>) -> TaskResult {
        self.fire(TimeDomain::ProcessingTime, now, out);
        self.check_failure()
    }

    /// Every key group, a group at a time as the tables read them, with its
    /// timers; with the disk backend into a local file ([`KeyedWriter`]).
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        let mut timers: BTreeMap<u32, ProcessGroup<K>> = BTreeMap::new();
        self.timers_by_group(&mut timers)?;
        let mut out = KeyedWriter::for_backend(self.state.backend())?;
        let n = self.state.table_count();
        self.state.for_each_group(self.max_parallelism, |g, tables| {
            // Groups that have timers but no state come in their place.
            while let Some(entry) = timers.first_entry().filter(|e| *e.key() < g) {
                let (tg, group) = entry.remove_entry();
                out.push(tg, codec::encode(&group))?;
            }
            let mut group = timers.remove(&g).unwrap_or_else(|| ProcessGroup::empty(n));
            group.tables = tables;
            out.push(g, codec::encode(&group))
        })?;
        for (g, group) in timers {
            out.push(g, codec::encode(&group))?;
        }
        out.finish()
    }

    /// The tables' changed entries per key group, and the timers of every
    /// group that has or had some (timers are kept whole: they live in memory).
    fn snapshot_changes(&mut self, _checkpoint_id: u64) -> TaskResult<Option<OperatorSnapshot>> {
        let Some(changes) = self.state.encode_changes(self.max_parallelism)? else { return Ok(None) };
        let mut groups: BTreeMap<u32, ProcessGroup<K>> = BTreeMap::new();
        for (g, tables) in changes {
            groups.insert(g, ProcessGroup { tables, event_timers: Vec::new(), processing_timers: Vec::new() });
        }
        self.timers_by_group(&mut groups)?;
        let keyed = groups.into_iter().map(|(g, pg)| {
            let mut blob = vec![CHANGES_TAG];
            codec::encode_into(&pg, &mut blob);
            (g, blob)
        });
        Ok(Some(OperatorSnapshot { keyed: keyed.collect(), ..OperatorSnapshot::default() }))
    }

    /// Key groups' blobs in the order they were taken: a full one, then
    /// changes applied over it (whose timers replace the group's).
    fn restore_state(&mut self, mut state: RestoredState) -> TaskResult {
        // Per group: its event-time and processing-time timers, the last blob's.
        let mut timers: BTreeMap<u32, [Vec<(Timestamp, K)>; 2]> = BTreeMap::new();
        for group in state.take_groups() {
            let (g, blob) = group?;
            let group: ProcessGroup<K> = match blob.split_first() {
                Some((&CHANGES_TAG, changes)) => {
                    let group: ProcessGroup<K> = codec::decode(changes, "a process function's state changes")?;
                    self.state.decode_changes(&group.tables)?;
                    group
                }
                _ => {
                    let group: ProcessGroup<K> = codec::decode(&blob, "a process function's state")?;
                    self.state.decode_group(&group.tables)?;
                    group
                }
            };
            timers.insert(g, [group.event_timers, group.processing_timers]);
        }
        self.state.finish_restore()?;
        for (g, [event, processing]) in timers {
            if !event.is_empty() || !processing.is_empty() {
                self.timer_groups.insert(g);
            }
            event.iter().for_each(|(t, k)| self.event_timers.register(*t, k));
            processing.iter().for_each(|(t, k)| self.processing_timers.register(*t, k));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checkpoints written before the tables were byte strings restore: the
    /// bytes are the same either way.
    #[test]
    fn tables_as_byte_strings_are_the_bytes_of_vectors() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Before {
            tables: Vec<Vec<u8>>,
            event_timers: Vec<(Timestamp, u64)>,
            processing_timers: Vec<(Timestamp, u64)>,
        }
        let tables = vec![vec![], (0..=255).collect(), vec![7; 70_000]];
        let before = Before { tables: tables.clone(), event_timers: vec![(5, 9)], processing_timers: vec![] };
        let now = ProcessGroup::<u64> { tables, event_timers: vec![(5, 9)], processing_timers: vec![] };
        assert_eq!(codec::encode(&before), codec::encode(&now));
        let read: ProcessGroup<u64> = codec::decode(&codec::encode(&before), "a group").unwrap();
        assert_eq!(read.tables, before.tables);
        assert!(codec::decode::<ProcessGroup<u64>>(&codec::encode(&before)[..40], "a cut group").is_err());
    }
}
