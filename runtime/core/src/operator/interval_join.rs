//! Interval joins (Flink's `intervalJoin(...).between(lower, upper)`): every
//! record `a` of the first stream meets every record `b` of the second with
//! the same key whose time lies in `[a.time + lower, a.time + upper]`.
//!
//! Both sides are buffered per key, in keyed state, until the watermark shows
//! that nothing can match them any more: an `a` until the watermark reaches
//! `a.time + upper`, a `b` until it reaches `b.time - lower` (an event-time
//! timer per entry's cleanup time). A joined row carries the later of the two
//! times, so it is never late downstream. A record at or behind the watermark
//! when it arrives is late (the watermark promised no such record; Flink,
//! whose watermarks promise less, drops only those strictly behind): it is
//! counted in `late_records` and joins nothing, as a window drops it. So is a
//! record without a timestamp (no assigner, or a pipeline row whose time field
//! is null): replayed after a restart it would fail the job again and again.
//!
//! Outer interval joins (as in Flink SQL's time-bounded `LEFT`, `RIGHT` and
//! `FULL OUTER JOIN`) also report the records of the kept sides that met
//! nothing, when they expire: [`ProcessJoinFunction::process_unmatched_first`]
//! and `_second`, at the time of the cleanup timer that found them (past the
//! last time anything could have met them, and never behind the watermark
//! the join passes on after it). A side kept by an outer join buffers its
//! records as [`Tracked`] entries, with a flag for whether they met anything;
//! an inner side keeps the plain `(time, record)` pairs it always had, so
//! inner joins' snapshots are unchanged.

use serde::Serialize;

use super::co_process::KeyedCoProcessFunction;
use super::process::ProcessContext;
use super::side::{OutputTag, SideOutputs};
use crate::element::{Data, Record};
use crate::error::JobError;
use crate::state::{Key, KeyedState, ValueState};
use crate::time::{MIN_WATERMARK, NO_TIMESTAMP, Timestamp};
use crate::timer::TimeDomain;

/// The bounds of an interval join, in milliseconds relative to the first
/// stream's record, both inclusive once [`JoinBounds::new`] has folded in
/// exclusive ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinBounds {
    pub lower: i64,
    pub upper: i64,
}

impl JoinBounds {
    /// Bounds `lower..=upper`, with either end made exclusive on request.
    /// Refuses bounds that contain no time at all.
    pub fn new(lower: i64, upper: i64, lower_exclusive: bool, upper_exclusive: bool) -> Result<Self, JobError> {
        if lower > upper {
            return Err(JobError::InvalidGraph(format!(
                "interval join: the lower bound ({lower} ms) is above the upper bound ({upper} ms)"
            )));
        }
        let bounds = JoinBounds {
            lower: if lower_exclusive { lower.saturating_add(1) } else { lower },
            upper: if upper_exclusive { upper.saturating_sub(1) } else { upper },
        };
        if bounds.lower > bounds.upper {
            return Err(JobError::InvalidGraph(format!(
                "interval join: between {lower} and {upper} ms with an exclusive end holds no time at all"
            )));
        }
        Ok(bounds)
    }

    /// Whether a second-stream record at `second` joins a first-stream record at `first`.
    fn contains(&self, first: Timestamp, second: Timestamp) -> bool {
        second >= first.saturating_add(self.lower) && second <= first.saturating_add(self.upper)
    }
}

/// What a join function may do with one joined pair.
pub struct JoinContext<'a, Out> {
    first_time: Timestamp,
    second_time: Timestamp,
    out: &'a mut Vec<Record<Out>>,
    sides: &'a SideOutputs,
}

impl<Out> JoinContext<'_, Out> {
    pub fn first_timestamp(&self) -> Timestamp {
        self.first_time
    }

    pub fn second_timestamp(&self) -> Timestamp {
        self.second_time
    }

    /// The joined row's time: the later of the two records' times.
    pub fn timestamp(&self) -> Timestamp {
        self.first_time.max(self.second_time)
    }

    /// Emits a row at [`JoinContext::timestamp`].
    pub fn emit(&mut self, value: Out) {
        let time = self.timestamp();
        self.out.push(Record::new(time, value));
    }

    /// Emits `value` at [`JoinContext::timestamp`] to the side output `tag`.
    pub fn output<X: serde::Serialize>(&mut self, tag: &OutputTag<X>, value: X) {
        self.sides.emit(tag, self.timestamp(), &value);
    }
}

/// Makes the rows of one joined pair (Flink's `ProcessJoinFunction`). A
/// closure `|a, b| row` is one: it emits one row per pair.
pub trait ProcessJoinFunction<A, B, Out>: Send + 'static {
    fn process_element(&mut self, first: &A, second: &B, ctx: &mut JoinContext<'_, Out>);

    /// A record of the first side that met nothing (left and full outer joins only).
    fn process_unmatched_first(&mut self, _first: &A, _ctx: &mut JoinContext<'_, Out>) {}

    /// A record of the second side that met nothing (right and full outer joins only).
    fn process_unmatched_second(&mut self, _second: &B, _ctx: &mut JoinContext<'_, Out>) {}
}

impl<A, B, Out, F: FnMut(&A, &B) -> Out + Send + 'static> ProcessJoinFunction<A, B, Out> for F {
    fn process_element(&mut self, first: &A, second: &B, ctx: &mut JoinContext<'_, Out>) {
        ctx.emit(self(first, second));
    }
}

/// Which sides' unmatched records an outer interval join reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outer {
    Left,
    Right,
    Full,
}

/// A buffered record of one side.
pub trait Entry<V>: Data {
    fn new(time: Timestamp, value: V) -> Self;
    fn time(&self) -> Timestamp;
    fn value(&self) -> &V;
    /// Whether it met a record of the other side (always, for a side whose
    /// unmatched records nobody asks for).
    fn matched(&self) -> bool;
    fn set_matched(&mut self);
}

/// An inner side's entry: the time and the record.
impl<V: Data> Entry<V> for (Timestamp, V) {
    fn new(time: Timestamp, value: V) -> Self {
        (time, value)
    }
    fn time(&self) -> Timestamp {
        self.0
    }
    fn value(&self) -> &V {
        &self.1
    }
    fn matched(&self) -> bool {
        true
    }
    fn set_matched(&mut self) {}
}

/// An outer side's entry: the time, the record, and whether it met anything.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Tracked<V> {
    time: Timestamp,
    value: V,
    matched: bool,
}

impl<V: Data> Entry<V> for Tracked<V> {
    fn new(time: Timestamp, value: V) -> Self {
        Tracked { time, value, matched: false }
    }
    fn time(&self) -> Timestamp {
        self.time
    }
    fn value(&self) -> &V {
        &self.value
    }
    fn matched(&self) -> bool {
        self.matched
    }
    fn set_matched(&mut self) {
        self.matched = true;
    }
}

/// One key's buffered records of both sides, with their times, and the time
/// of the key's one cleanup timer.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Buffers<EA, EB> {
    first: Vec<EA>,
    second: Vec<EB>,
    timer: Timestamp,
}

/// What expiring a key's records found: the earliest time at which another
/// can go (none: nothing is left), and the unmatched ones that went.
struct Expired<EA, EB> {
    next: Option<Timestamp>,
    firsts: Vec<EA>,
    seconds: Vec<EB>,
}

impl<EA, EB> Buffers<EA, EB> {
    fn new() -> Self {
        Buffers { first: Vec::new(), second: Vec::new(), timer: NO_TIMESTAMP }
    }

    /// Drops the records nothing can match once the watermark is at `watermark`.
    fn expire<A, B>(&mut self, bounds: JoinBounds, watermark: Timestamp) -> Expired<EA, EB>
    where
        EA: Entry<A>,
        EB: Entry<B>,
    {
        let first_cleanup = |t: Timestamp| t.saturating_add(bounds.upper);
        let second_cleanup = |t: Timestamp| t.saturating_sub(bounds.lower);
        let firsts = self.first.extract_if(.., |e| first_cleanup(e.time()) <= watermark).filter(|e| !e.matched());
        let firsts = firsts.collect();
        let seconds = self.second.extract_if(.., |e| second_cleanup(e.time()) <= watermark).filter(|e| !e.matched());
        let seconds = seconds.collect();
        let next = self.first.iter().map(|e| first_cleanup(e.time()));
        let next = next.chain(self.second.iter().map(|e| second_cleanup(e.time()))).min();
        Expired { next, firsts, seconds }
    }
}

/// The interval join as a keyed two-input function.
///
/// Both sides of a key live in one state entry, so a record costs one lookup.
/// A key has one cleanup timer at a time, set when its first record comes, at
/// that record's cleanup time; when it fires, what has expired goes and the
/// timer is set again for the earliest of what is left. A record may so
/// outstay its own cleanup time until the key's timer fires, by at most the
/// length of the join's interval (and the watermark's disorder), but never
/// joins wrongly: what has expired can meet no record that is not late.
///
/// `EA` and `EB` are the sides' [`Entry`] types: [`Tracked`] for a side whose
/// unmatched records an outer join reports, `(Timestamp, record)` otherwise.
pub struct IntervalJoin<A, B, F, EA = (Timestamp, A), EB = (Timestamp, B)> {
    bounds: JoinBounds,
    function: F,
    buffers: Option<ValueState<Buffers<EA, EB>>>,
    late: LateSides<A, B>,
}

/// Where each side's late records go (Flink's `sideOutputLeftLateData` and
/// `sideOutputRightLateData`): counted and dropped when untagged.
pub struct LateSides<A, B> {
    pub first: Option<OutputTag<A>>,
    pub second: Option<OutputTag<B>>,
}

impl<A, B> Default for LateSides<A, B> {
    fn default() -> Self {
        LateSides { first: None, second: None }
    }
}

impl<A, B> Clone for LateSides<A, B> {
    fn clone(&self) -> Self {
        LateSides { first: self.first.clone(), second: self.second.clone() }
    }
}

impl<A, B, F: Clone, EA, EB> Clone for IntervalJoin<A, B, F, EA, EB> {
    fn clone(&self) -> Self {
        IntervalJoin {
            bounds: self.bounds,
            function: self.function.clone(),
            buffers: self.buffers,
            late: self.late.clone(),
        }
    }
}

impl<A, B, F, EA, EB> IntervalJoin<A, B, F, EA, EB> {
    /// A join whose sides buffer `EA` and `EB` entries: both plain for an
    /// inner join; [`Tracked`] for each side an outer join keeps.
    pub fn new(bounds: JoinBounds, function: F) -> Self {
        IntervalJoin { bounds, function, buffers: None, late: LateSides::default() }
    }

    /// Sends late records to these side outputs instead of dropping them.
    pub fn with_late_sides(mut self, late: LateSides<A, B>) -> Self {
        self.late = late;
        self
    }
}

/// Cleanup timers go off on whole seconds of event time: the timer service
/// then holds one entry per second with all its keys instead of one per
/// millisecond, and a record outstays its cleanup time by less than a second.
const TIMER_GRANULARITY: Timestamp = 1000;

fn timer_at(cleanup: Timestamp) -> Timestamp {
    match cleanup.checked_rem_euclid(TIMER_GRANULARITY) {
        Some(0) | None => cleanup,
        Some(r) => cleanup.saturating_add(TIMER_GRANULARITY - r),
    }
}

/// The record in hand when it may take part: it has a time, and the watermark
/// has not passed it. One that may not is counted as late and goes to the
/// side's late output if it has one.
fn admit<K: Key, Out, V: Serialize>(
    value: V,
    late: Option<&OutputTag<V>>,
    ctx: &mut ProcessContext<'_, K, Out>,
) -> Option<V> {
    let time = ctx.timestamp();
    let watermark = ctx.current_watermark();
    if time == NO_TIMESTAMP || (watermark != MIN_WATERMARK && time <= watermark) {
        ctx.count_late();
        if let Some(tag) = late {
            ctx.output(tag, value);
        }
        return None;
    }
    Some(value)
}

/// Joins the record in hand: `join` meets it with the other side's buffered
/// records and files it on its own side, in the key's one state entry; a key
/// new to the state gets its cleanup timer at `cleanup`.
fn on_record<K: Key, EA: Data, EB: Data, Out>(
    handle: ValueState<Buffers<EA, EB>>,
    ctx: &mut ProcessContext<'_, K, Out>,
    cleanup: Timestamp,
    join: impl FnOnce(&mut Buffers<EA, EB>, &mut Vec<Record<Out>>, &SideOutputs),
) {
    // A cleanup time the watermark has passed (a join with `lower > 0` or
    // `upper < 0`) goes at the next watermark, and what it reports is stamped
    // after the watermark already passed on.
    let cleanup = cleanup.max(ctx.current_watermark().saturating_add(1));
    let (state, key, out, sides) = ctx.parts();
    let mut slot = state.value_mut(&handle, key);
    let buffers = slot.get_or_insert_with(Buffers::new);
    join(buffers, out, sides);
    if buffers.timer == NO_TIMESTAMP {
        let timer = timer_at(cleanup);
        buffers.timer = timer;
        ctx.register_event_time_timer(timer);
    }
}

impl<K, A, B, Out, F, EA, EB> KeyedCoProcessFunction<K, A, B, Out> for IntervalJoin<A, B, F, EA, EB>
where
    K: Key,
    A: Data,
    B: Data,
    F: ProcessJoinFunction<A, B, Out>,
    EA: Entry<A>,
    EB: Entry<B>,
{
    fn open(&mut self, state: &mut KeyedState<K>) {
        self.buffers = Some(state.value("interval-join"));
    }

    fn process_element1(&mut self, value: A, ctx: &mut ProcessContext<'_, K, Out>) {
        let Some(value) = admit(value, self.late.first.as_ref(), ctx) else {
            return;
        };
        let (time, bounds, function) = (ctx.timestamp(), self.bounds, &mut self.function);
        on_record(self.buffers.expect("opened"), ctx, time.saturating_add(bounds.upper), |buffers, out, sides| {
            let mut entry = EA::new(time, value);
            for b in buffers.second.iter_mut().filter(|b| bounds.contains(time, b.time())) {
                let mut ctx = JoinContext { first_time: time, second_time: b.time(), out: &mut *out, sides };
                function.process_element(entry.value(), b.value(), &mut ctx);
                b.set_matched();
                entry.set_matched();
            }
            buffers.first.push(entry);
        });
    }

    fn process_element2(&mut self, value: B, ctx: &mut ProcessContext<'_, K, Out>) {
        let Some(value) = admit(value, self.late.second.as_ref(), ctx) else {
            return;
        };
        let (time, bounds, function) = (ctx.timestamp(), self.bounds, &mut self.function);
        on_record(self.buffers.expect("opened"), ctx, time.saturating_sub(bounds.lower), |buffers, out, sides| {
            let mut entry = EB::new(time, value);
            for a in buffers.first.iter_mut().filter(|a| bounds.contains(a.time(), time)) {
                let mut ctx = JoinContext { first_time: a.time(), second_time: time, out: &mut *out, sides };
                function.process_element(a.value(), entry.value(), &mut ctx);
                a.set_matched();
                entry.set_matched();
            }
            buffers.second.push(entry);
        });
    }

    /// Drops the key's records that nothing can match any more (reporting
    /// the unmatched ones of an outer join's kept sides, at the timer's
    /// time), and sets the timer again for the rest.
    fn on_timer(&mut self, time: Timestamp, domain: TimeDomain, ctx: &mut ProcessContext<'_, K, Out>) {
        if domain != TimeDomain::EventTime {
            return;
        }
        let (watermark, bounds, function) = (ctx.current_watermark(), self.bounds, &mut self.function);
        let (state, key, out, sides) = ctx.parts();
        let mut slot = state.value_mut(&self.buffers.expect("opened"), key);
        let Some(buffers) = slot.get_mut() else { return };
        let expired = buffers.expire::<A, B>(bounds, watermark);
        let timer = expired.next.map(timer_at);
        match timer {
            None => drop(slot.clear()),
            Some(timer) => buffers.timer = timer,
        }
        for a in &expired.firsts {
            let mut ctx = JoinContext { first_time: time, second_time: time, out: &mut *out, sides };
            function.process_unmatched_first(a.value(), &mut ctx);
        }
        for b in &expired.seconds {
            let mut ctx = JoinContext { first_time: time, second_time: time, out: &mut *out, sides };
            function.process_unmatched_second(b.value(), &mut ctx);
        }
        if let Some(timer) = timer {
            ctx.register_event_time_timer(timer);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::metadata::RestoredState;
    use crate::graph::{SnapshotCollector, SubtaskInfo};
    use crate::metrics::SubtaskMetrics;
    use crate::operator::Operator;
    use crate::operator::co_process::{CoInput, CoProcess};
    use crate::operator::process::KeyedProcessOperator;
    use crate::output::Collector;

    type Side = (u8, String);
    type In = CoInput<Side, Side>;
    type Pair = fn(&Side, &Side) -> String;
    type Join = KeyedProcessOperator<u8, In, String, CoProcess<IntervalJoin<Side, Side, Pair>>, fn(&In) -> u8>;

    fn info(metrics: Arc<SubtaskMetrics>) -> SubtaskInfo {
        SubtaskInfo {
            vertex: "interval-join".into(),
            uid: "2-interval-join".into(),
            index: 0,
            parallelism: 1,
            max_parallelism: 128,
            metrics,
            restored: None,
            snapshots: SnapshotCollector::default(),
            checkpointing: true,
            alignment: Default::default(),
            side_outputs: Default::default(),
            state_backend: Default::default(),
        }
    }

    fn join(lower: i64, upper: i64, metrics: Arc<SubtaskMetrics>) -> Join {
        let pair: Pair = |a, b| format!("{}+{}", a.1, b.1);
        let key: fn(&In) -> u8 = |v| v.key(|a| a.0, |b| b.0);
        let bounds = JoinBounds::new(lower * S, upper * S, false, false).unwrap();
        KeyedProcessOperator::new(CoProcess(IntervalJoin::new(bounds, pair)), key, &info(metrics))
    }

    /// The tests' unit of time, in ms: whole seconds, as cleanup timers go off on them.
    const S: i64 = 1000;

    /// Feeds records and watermarks (times in seconds); returns what came out, with times.
    fn feed(op: &mut Join, steps: Vec<Result<(i64, In), i64>>) -> crate::error::TaskResult<Vec<(i64, String)>> {
        let mut out = Vec::new();
        for step in steps {
            match step {
                Ok((time, v)) => op.process_batch(vec![Record::new(time, v)], &mut Collector::new(&mut out))?,
                Err(watermark) => op.on_watermark(watermark * S, &mut Collector::new(&mut out))?,
            }
        }
        Ok(out.into_iter().map(|r| (r.time / S, r.value)).collect())
    }

    fn first(time: i64, key: u8, name: &str) -> Result<(i64, In), i64> {
        Ok((time * S, CoInput::First((key, name.to_string()))))
    }

    fn second(time: i64, key: u8, name: &str) -> Result<(i64, In), i64> {
        Ok((time * S, CoInput::Second((key, name.to_string()))))
    }

    #[test]
    fn cleanup_timers_go_off_on_whole_seconds() {
        assert_eq!([timer_at(1), timer_at(1000), timer_at(1001), timer_at(-1)], [1000, 1000, 2000, 0]);
        assert_eq!(timer_at(i64::MAX), i64::MAX);
    }

    #[test]
    fn pairs_meet_in_either_order_at_the_later_time_and_only_within_the_bounds() {
        let metrics = Arc::new(SubtaskMetrics::default());
        let mut op = join(0, 10, metrics);
        let out = feed(
            &mut op,
            vec![
                second(105, 1, "p1"), // before its order
                first(100, 1, "o1"),
                second(110, 1, "p2"), // the upper end, inclusive
                second(111, 1, "late-pay"),
                first(100, 2, "o2"), // another key: meets nothing
                second(99, 1, "early-pay"),
            ],
        )
        .unwrap();
        assert_eq!(out, vec![(105, "o1+p1".to_string()), (110, "o1+p2".to_string())]);
    }

    #[test]
    fn the_watermark_drops_what_nothing_can_match_and_late_records_are_counted() {
        let metrics = Arc::new(SubtaskMetrics::default());
        let mut op = join(0, 10, metrics.clone());
        feed(&mut op, vec![first(100, 1, "o1"), second(105, 1, "p1"), second(115, 1, "p9"), Err(109)]).unwrap();
        assert_eq!(op.state_entries(), 1, "key 1 waits: o1 may still meet payments up to 110");
        let out = feed(&mut op, vec![second(110, 1, "p2"), Err(110)]).unwrap();
        assert_eq!(out, vec![(110, "o1+p2".to_string())]);
        assert_eq!(op.state_entries(), 1, "o1 and the payments up to 110 went; p9 may still meet orders from 105 on");
        let out = feed(&mut op, vec![first(111, 1, "o2"), Err(114)]).unwrap();
        assert_eq!(out, vec![(115, "o2+p9".to_string())]);
        feed(&mut op, vec![Err(121)]).unwrap();
        assert_eq!(op.state_entries(), 0, "the timer set again for what was left fired");
        let out = feed(&mut op, vec![second(121, 1, "at-the-watermark"), first(120, 1, "behind")]).unwrap();
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(metrics.late_records.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(op.state_entries(), 0, "late records are not kept");
    }

    #[test]
    fn a_record_without_event_time_is_counted_as_late_and_joins_nothing() {
        let metrics = Arc::new(SubtaskMetrics::default());
        let mut op = join(0, 10, metrics.clone());
        let untimed = Ok((crate::time::NO_TIMESTAMP, CoInput::First((1, "o1".to_string()))));
        let out = feed(&mut op, vec![untimed, second(5, 1, "p1")]).unwrap();
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(metrics.late_records.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn buffered_records_survive_a_snapshot_and_restore() {
        let mut op = join(0, 10, Arc::new(SubtaskMetrics::default()));
        feed(&mut op, vec![first(100, 1, "o1"), Err(50)]).unwrap();
        let snapshot = op.snapshot_state(1).unwrap();
        let mut restored = join(0, 10, Arc::new(SubtaskMetrics::default()));
        restored.restore_state(RestoredState { keyed: snapshot.into_keyed().unwrap(), ..Default::default() }).unwrap();
        let out = feed(&mut restored, vec![Err(50), second(107, 1, "p1"), Err(110)]).unwrap();
        assert_eq!(out, vec![(107, "o1+p1".to_string())]);
        assert_eq!(restored.state_entries(), 0, "the restored cleanup timer fired");
    }

    /// Pairs as `a+b`, unmatched records as `a+-` and `-+b`.
    #[derive(Clone)]
    struct Outer;

    impl ProcessJoinFunction<Side, Side, String> for Outer {
        fn process_element(&mut self, a: &Side, b: &Side, ctx: &mut JoinContext<'_, String>) {
            ctx.emit(format!("{}+{}", a.1, b.1));
        }
        fn process_unmatched_first(&mut self, a: &Side, ctx: &mut JoinContext<'_, String>) {
            ctx.emit(format!("{}+-", a.1));
        }
        fn process_unmatched_second(&mut self, b: &Side, ctx: &mut JoinContext<'_, String>) {
            ctx.emit(format!("-+{}", b.1));
        }
    }

    type OuterJoin<EA, EB> =
        KeyedProcessOperator<u8, In, String, CoProcess<IntervalJoin<Side, Side, Outer, EA, EB>>, fn(&In) -> u8>;

    fn outer_join<EA: Entry<Side>, EB: Entry<Side>>() -> OuterJoin<EA, EB> {
        let key: fn(&In) -> u8 = |v| v.key(|a| a.0, |b| b.0);
        let bounds = JoinBounds::new(0, 10 * S, false, false).unwrap();
        KeyedProcessOperator::new(CoProcess(IntervalJoin::new(bounds, Outer)), key, &info(Default::default()))
    }

    fn outer_run<EA: Entry<Side>, EB: Entry<Side>>(op: &mut OuterJoin<EA, EB>) -> Vec<(i64, String)> {
        let steps = vec![
            first(100, 1, "o1"),
            second(105, 1, "p1"),
            second(107, 1, "p2"), // a second payment: o1 is matched once more, p2 too
            first(101, 2, "o2"),  // never paid
            second(103, 3, "p3"), // pays no order
            Err(109),
            Err(125),
        ];
        let mut out = Vec::new();
        for step in steps {
            match step {
                Ok((time, v)) => op.process_batch(vec![Record::new(time, v)], &mut Collector::new(&mut out)).unwrap(),
                Err(w) => op.on_watermark(w * S, &mut Collector::new(&mut out)).unwrap(),
            }
        }
        let mut out: Vec<(i64, String)> = out.into_iter().map(|r| (r.time / S, r.value)).collect();
        out.sort();
        out
    }

    #[test]
    fn outer_joins_report_each_kept_sides_unmatched_records_once_at_their_cleanup_timer() {
        let pairs = [(105, "o1+p1".to_string()), (107, "o1+p2".to_string())];
        let mut left = outer_join::<Tracked<Side>, (Timestamp, Side)>();
        let mut expected = [pairs.to_vec(), vec![(111, "o2+-".to_string())]].concat();
        expected.sort();
        assert_eq!(outer_run(&mut left), expected, "left outer: o2 when its cleanup timer fires");
        let mut right = outer_join::<(Timestamp, Side), Tracked<Side>>();
        let mut expected = [pairs.to_vec(), vec![(103, "-+p3".to_string())]].concat();
        expected.sort();
        assert_eq!(outer_run(&mut right), expected, "right outer: p3 expires as soon as the watermark passes it");
        let mut full = outer_join::<Tracked<Side>, Tracked<Side>>();
        let mut expected = [pairs.to_vec(), vec![(111, "o2+-".to_string()), (103, "-+p3".to_string())]].concat();
        expected.sort();
        assert_eq!(outer_run(&mut full), expected);
        assert_eq!(full.state_entries(), 0, "everything expired");
    }

    #[test]
    fn unmatched_rows_of_a_join_whose_interval_lies_ahead_are_never_behind_the_watermark() {
        let key: fn(&In) -> u8 = |v| v.key(|a| a.0, |b| b.0);
        let bounds = JoinBounds::new(5 * S, 10 * S, false, false).unwrap();
        let join = IntervalJoin::<Side, Side, Outer, (Timestamp, Side), Tracked<Side>>::new(bounds, Outer);
        let mut op = KeyedProcessOperator::new(CoProcess(join), key, &info(Default::default()));
        let mut out = Vec::new();
        op.on_watermark(100 * S, &mut Collector::new(&mut out)).unwrap();
        // Its cleanup time (103 - 5) is behind the watermark already.
        op.process_batch(vec![Record::new(103 * S, CoInput::Second((1, "p".into())))], &mut Collector::new(&mut out))
            .unwrap();
        op.on_watermark(102 * S, &mut Collector::new(&mut out)).unwrap();
        let out: Vec<(i64, String)> = out.into_iter().map(|r| (r.time, r.value)).collect();
        assert_eq!(out, vec![(101 * S, "-+p".to_string())], "stamped after the watermark 100 s, not at 98 s");
    }

    #[test]
    fn an_outer_joins_unmatched_flags_survive_a_snapshot() {
        let mut op = outer_join::<Tracked<Side>, Tracked<Side>>();
        let mut out = Vec::new();
        for (t, v) in [(100, CoInput::First((1, "o1".into()))), (102, CoInput::Second((1, "p1".into())))] {
            op.process_batch(vec![Record::new(t * S, v)], &mut Collector::new(&mut out)).unwrap();
        }
        op.process_batch(vec![Record::new(101 * S, CoInput::First((1, "o2".into())))], &mut Collector::new(&mut out))
            .unwrap();
        let snapshot = op.snapshot_state(1).unwrap();
        let mut restored = outer_join::<Tracked<Side>, Tracked<Side>>();
        restored.restore_state(RestoredState { keyed: snapshot.into_keyed().unwrap(), ..Default::default() }).unwrap();
        let mut out = Vec::new();
        restored.on_watermark(200 * S, &mut Collector::new(&mut out)).unwrap();
        let out: Vec<String> = out.into_iter().map(|r| r.value).collect();
        assert!(out.is_empty(), "o1, o2 and p1 all met something before the snapshot: {out:?}");
    }

    #[test]
    fn bounds_fold_exclusive_ends_and_refuse_empty_intervals() {
        assert_eq!(JoinBounds::new(0, 10, false, false).unwrap(), JoinBounds { lower: 0, upper: 10 });
        assert_eq!(JoinBounds::new(-5, 5, true, true).unwrap(), JoinBounds { lower: -4, upper: 4 });
        let err = JoinBounds::new(10, 0, false, false).unwrap_err().to_string();
        assert!(err.contains("lower bound (10 ms) is above the upper bound (0 ms)"), "{err}");
        assert!(JoinBounds::new(3, 3, false, false).is_ok());
        assert!(JoinBounds::new(3, 3, true, false).is_err());
    }

    #[test]
    fn containment_is_relative_to_the_first_record() {
        let b = JoinBounds::new(-2, 3, false, false).unwrap();
        assert!(b.contains(100, 98) && b.contains(100, 103));
        assert!(!b.contains(100, 97) && !b.contains(100, 104));
    }
}
