//! The operators behind pipeline steps, over [`Row`]s: select, dedup,
//! aggregates, top-N, the 3-sigma anomaly flag, the external call's latency,
//! and the count of rows that reach the sink.
//!
//! Stateless ones work on a batch in place, rather than moving each row out
//! of its batch and back.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_core::operator::Operator;
use weir_core::operator::process::{KeyedProcessFunction, ProcessContext};
use weir_core::output::Collector;
use weir_core::state::{Key, KeyedState, ListState, ValueState};
use weir_core::timer::TimeDomain;
use weir_core::window::{AggregateFunction, DistinctSketch, Window, WindowFunction};
use weir_core::{Data, NO_TIMESTAMP, Record, TaskResult, Timestamp};

use crate::keys::StepKey;
use crate::value::{FieldType, Row, Value};

/// `select`: each row replaced by its expressions' values, in its batch,
/// without allocating: the values are made in a spare row, which then
/// changes places with the input row, whose emptied allocation is the
/// spare for the next row.
pub struct SelectRows {
    pub exprs: Arc<Vec<crate::expr::Expr>>,
    spare: Row,
}

impl SelectRows {
    pub fn new(exprs: Arc<Vec<crate::expr::Expr>>) -> Self {
        let spare = Vec::with_capacity(exprs.len());
        SelectRows { exprs, spare }
    }
}

impl Operator for SelectRows {
    type In = Row;
    type Out = Row;
    fn process_batch(&mut self, mut batch: Vec<Record<Row>>, out: &mut Collector<'_, Row>) -> TaskResult {
        for r in &mut batch {
            for e in self.exprs.iter() {
                e.eval_into(&r.value, &mut self.spare);
            }
            std::mem::swap(&mut r.value, &mut self.spare);
            self.spare.clear();
        }
        out.emit_batch(batch);
        Ok(())
    }
}

/// Counts the rows that pass, a batch at a time, and passes them on as they are.
pub struct CountRows {
    pub count: Arc<std::sync::atomic::AtomicU64>,
}

impl Operator for CountRows {
    type In = Row;
    type Out = Row;
    fn process_batch(&mut self, batch: Vec<Record<Row>>, out: &mut Collector<'_, Row>) -> TaskResult {
        self.count.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        out.emit_batch(batch);
        Ok(())
    }
}

/// Drops rows whose key was seen before; with a TTL, a key is forgotten that
/// long (in event time) after it was first seen.
#[derive(Clone)]
pub struct DedupRows {
    pub ttl_ms: Option<i64>,
    pub seen: Option<ValueState<()>>,
}

impl<K: Key> KeyedProcessFunction<K, Row, Row> for DedupRows {
    fn open(&mut self, state: &mut KeyedState<K>) {
        self.seen = Some(state.value("seen"));
    }

    fn process_element(&mut self, row: Row, ctx: &mut ProcessContext<'_, K, Row>) {
        let seen = self.seen.expect("opened");
        if !ctx.value(&seen).set_if_absent(()) {
            return;
        }
        if let Some(ttl) = self.ttl_ms
            && ctx.timestamp() != NO_TIMESTAMP
        {
            ctx.register_event_time_timer(ctx.timestamp().saturating_add(ttl));
        }
        ctx.emit(row);
    }

    fn on_timer(&mut self, _time: Timestamp, _domain: TimeDomain, ctx: &mut ProcessContext<'_, K, Row>) {
        ctx.clear_state();
    }
}

/// One aggregate of an `aggregate` step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    CountDistinct,
    /// `approx_count_distinct`: a HyperLogLog++ sketch (see [`DistinctSketch`]).
    ApproxCountDistinct,
}

#[derive(Clone, Debug)]
pub struct AggSpec {
    pub kind: AggKind,
    /// Input field index (none for `count()`).
    pub field: Option<usize>,
    pub input_type: Option<FieldType>,
}

impl AggSpec {
    pub fn output_type(&self) -> FieldType {
        match self.kind {
            AggKind::Count | AggKind::CountDistinct | AggKind::ApproxCountDistinct => FieldType::Int,
            AggKind::Avg => FieldType::Float,
            AggKind::Sum | AggKind::Min | AggKind::Max => self.input_type.unwrap_or(FieldType::Int),
        }
    }
}

/// The accumulator of one aggregate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Acc {
    Count(i64),
    SumInt(i64),
    SumFloat(f64),
    Min(Option<Value>),
    Max(Option<Value>),
    Avg(f64, i64),
    /// Boxed, as no other accumulator is as large: a set is 48 bytes, and
    /// every accumulator would be 56 (32 boxed) in the windows' panes.
    /// Written as the set itself.
    Distinct(Box<HashSet<Value>>),
    ApproxDistinct(DistinctSketch<Value>),
}

/// The accumulators of a step's aggregates. One is inline: a window keeps an
/// accumulator per key and pane (q5: every auction in every 2 s slice), and
/// one aggregate, a count, is the common case. Written as a `Vec` is.
pub type Accs = smallvec::SmallVec<[Acc; 1]>;

/// All aggregates of a step, as one [`AggregateFunction`] over rows.
#[derive(Clone)]
pub struct RowAggregates {
    pub specs: Arc<Vec<AggSpec>>,
}

fn keep(acc: &mut Option<Value>, v: &Value, want: std::cmp::Ordering) {
    if matches!(v, Value::Null) {
        return;
    }
    let replace = match acc {
        None => true,
        Some(cur) => v.compare(cur) == Some(want),
    };
    if replace {
        *acc = Some(v.clone());
    }
}

/// The value `v` (`None` for `count()`'s no field) added to an accumulator
/// other than a count or an integer sum (which [`RowAggregates::add`] adds
/// itself, and this leaves alone).
fn add_other(acc: &mut Acc, v: Option<&Value>) {
    match (acc, v) {
        (Acc::SumFloat(s), Some(v)) => *s += v.as_f64().unwrap_or(0.0),
        (Acc::Min(m), Some(v)) => keep(m, v, std::cmp::Ordering::Less),
        (Acc::Max(m), Some(v)) => keep(m, v, std::cmp::Ordering::Greater),
        (Acc::Avg(s, n), Some(v)) => {
            if let Some(x) = v.as_f64() {
                *s += x;
                *n += 1;
            }
        }
        // Nulls are not values to count, as in SQL's COUNT(DISTINCT), and as
        // min, max and avg skip them.
        (Acc::Distinct(set), Some(v)) if !matches!(v, Value::Null) && !set.contains(v) => {
            set.insert(v.clone());
        }
        (Acc::ApproxDistinct(sketch), Some(v)) if !matches!(v, Value::Null) => sketch.insert(v),
        _ => {}
    }
}

/// One aggregate's accumulator `b` merged into `a` (of the same aggregate).
fn merge_acc(a: &mut Acc, b: &Acc) {
    match (a, b) {
        (Acc::Count(x), Acc::Count(y)) => *x += y,
        (Acc::SumInt(x), Acc::SumInt(y)) => *x = x.wrapping_add(*y),
        (Acc::SumFloat(x), Acc::SumFloat(y)) => *x += y,
        (Acc::Min(x), Acc::Min(Some(y))) => keep(x, y, std::cmp::Ordering::Less),
        (Acc::Max(x), Acc::Max(Some(y))) => keep(x, y, std::cmp::Ordering::Greater),
        (Acc::Avg(s, n), Acc::Avg(s2, n2)) => {
            *s += s2;
            *n += n2;
        }
        (Acc::Distinct(x), Acc::Distinct(y)) => x.extend(y.iter().cloned()),
        (Acc::ApproxDistinct(x), Acc::ApproxDistinct(y)) => x.merge(y),
        _ => {}
    }
}

impl AggregateFunction<Row> for RowAggregates {
    type Acc = Accs;
    type Result = Vec<Value>;

    fn create(&self) -> Accs {
        self.specs
            .iter()
            .map(|s| match s.kind {
                AggKind::Count => Acc::Count(0),
                AggKind::Sum if s.input_type == Some(FieldType::Float) => Acc::SumFloat(0.0),
                AggKind::Sum => Acc::SumInt(0),
                AggKind::Min => Acc::Min(None),
                AggKind::Max => Acc::Max(None),
                AggKind::Avg => Acc::Avg(0.0, 0),
                AggKind::CountDistinct => Acc::Distinct(Box::default()),
                AggKind::ApproxCountDistinct => Acc::ApproxDistinct(DistinctSketch::new()),
            })
            .collect()
    }

    /// Counts and integer sums, the common aggregates, are added here, in
    /// line in the window's loop; the others in [`add_other`]. Out of line,
    /// matching each accumulator with its value in one `match`, this took 79
    /// instructions per row for orders-window's count and sum.
    #[inline]
    fn add(&self, accs: &mut Accs, row: &Row) {
        for (acc, spec) in accs.iter_mut().zip(self.specs.iter()) {
            match acc {
                Acc::Count(n) => *n += 1,
                Acc::SumInt(s) => {
                    // A null adds nothing (an int field holds ints and nulls).
                    if let Some(Value::Int(x)) = spec.field.map(|i| &row[i]) {
                        *s = s.wrapping_add(*x);
                    }
                }
                acc => add_other(acc, spec.field.map(|i| &row[i])),
            }
        }
    }

    fn merge(&self, accs: &mut Accs, other: Accs) {
        for (a, b) in accs.iter_mut().zip(other) {
            match (a, b) {
                // A set given is moved, not copied.
                (Acc::Distinct(x), Acc::Distinct(y)) => x.extend(*y),
                (a, b) => merge_acc(a, &b),
            }
        }
    }

    /// Merges without a copy of `other` (which may own allocations).
    fn merge_ref(&self, accs: &mut Accs, other: &Accs) {
        for (a, b) in accs.iter_mut().zip(other) {
            merge_acc(a, b);
        }
    }

    fn result(&self, accs: &Accs) -> Vec<Value> {
        let mut values = Vec::with_capacity(accs.len());
        self.result_into(accs, &mut values);
        values
    }
}

impl RowAggregates {
    /// The aggregates' values appended to `row`.
    fn result_into(&self, accs: &Accs, row: &mut Row) {
        row.extend(accs.iter().map(|a| match a {
            Acc::Count(n) => Value::Int(*n),
            Acc::SumInt(s) => Value::Int(*s),
            Acc::SumFloat(s) => Value::Float(*s),
            Acc::Min(v) | Acc::Max(v) => v.clone().unwrap_or(Value::Null),
            Acc::Avg(_, 0) => Value::Null,
            Acc::Avg(s, n) => Value::Float(s / *n as f64),
            Acc::Distinct(set) => Value::Int(set.len() as i64),
            Acc::ApproxDistinct(sketch) => Value::Int(sketch.estimate() as i64),
        }))
    }
}

/// A window step's aggregates, each window's row its key's fields, the
/// window's start and end, then the aggregates' values: made in one
/// allocation (an [`AggregateWindow`](weir_core::window::AggregateWindow)
/// makes the values' vector, then the row).
impl<K: StepKey> WindowFunction<K, Row> for RowAggregates {
    type Acc = Accs;
    type Out = Row;
    fn create(&self) -> Accs {
        AggregateFunction::create(self)
    }
    #[inline]
    fn add(&self, accs: &mut Accs, row: &Row) {
        AggregateFunction::add(self, accs, row)
    }
    fn merge(&self, accs: &mut Accs, other: Accs) {
        AggregateFunction::merge(self, accs, other)
    }
    fn merge_ref(&self, accs: &mut Accs, other: &Accs) {
        AggregateFunction::merge_ref(self, accs, other)
    }
    fn emit(&mut self, key: &K, window: &Window, accs: &Accs, out: &mut dyn FnMut(Row)) {
        let mut row = Vec::with_capacity(key.width() + 2 + accs.len());
        key.append_to(&mut row);
        row.push(Value::Int(window.start));
        row.push(Value::Int(window.end));
        self.result_into(accs, &mut row);
        out(row)
    }
}

/// The best `n` rows of each window by a list of sort keys.
#[derive(Clone)]
pub struct TopRows {
    pub n: usize,
    /// (field index, descending)
    pub by: Arc<Vec<(usize, bool)>>,
    pub add_window_start: bool,
    pub add_window_end: bool,
}

impl TopRows {
    fn better(&self, a: &Row, b: &Row) -> bool {
        for &(i, desc) in self.by.iter() {
            match a[i].compare(&b[i]) {
                Some(std::cmp::Ordering::Equal) | None => continue,
                Some(o) => return if desc { o.is_gt() } else { o.is_lt() },
            }
        }
        false
    }
}

impl<K> WindowFunction<K, Row> for TopRows {
    type Acc = Vec<Row>;
    type Out = Row;

    fn create(&self) -> Vec<Row> {
        Vec::with_capacity(self.n + 1)
    }

    fn add(&self, acc: &mut Vec<Row>, row: &Row) {
        if acc.len() == self.n && !self.better(row, acc.last().expect("n >= 1")) {
            return;
        }
        let pos = acc.iter().position(|r| self.better(row, r)).unwrap_or(acc.len());
        acc.insert(pos, row.clone());
        acc.truncate(self.n);
    }

    fn merge(&self, acc: &mut Vec<Row>, other: Vec<Row>) {
        for r in &other {
            WindowFunction::<K, Row>::add(self, acc, r);
        }
    }

    fn emit(&mut self, _key: &K, window: &Window, acc: &Vec<Row>, out: &mut dyn FnMut(Row)) {
        for (rank, row) in acc.iter().enumerate() {
            let mut row = row.clone();
            if self.add_window_start {
                row.push(Value::Int(window.start));
            }
            if self.add_window_end {
                row.push(Value::Int(window.end));
            }
            if self.n > 1 {
                row.push(Value::Int(rank as i64 + 1));
            }
            out(row);
        }
    }
}

/// Flags values more than `sigma` standard deviations from the mean of the
/// key's previous `history` values (the seed's 3-sigma rule). Appends `mean`,
/// `stddev` (null until two values were seen) and `anomaly`.
#[derive(Clone)]
pub struct AnomalyFlag {
    pub field: usize,
    pub history: usize,
    pub sigma: f64,
    pub only_anomalies: bool,
    pub values: Option<ListState<f64>>,
}

/// Mean and population standard deviation.
pub fn mean_stddev(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

impl<K: Key> KeyedProcessFunction<K, Row, Row> for AnomalyFlag {
    fn open(&mut self, state: &mut KeyedState<K>) {
        self.values = Some(state.list("history"));
    }

    fn process_element(&mut self, mut row: Row, ctx: &mut ProcessContext<'_, K, Row>) {
        let h = self.values.expect("opened");
        let x = row[self.field].as_f64();
        let history = ctx.list(&h);
        let (mean, stddev, anomaly) = if history.len() >= 2 {
            let (mean, sd) = mean_stddev(history);
            let flagged = x.is_some_and(|x| (x - mean).abs() > self.sigma * sd);
            (Value::Float(mean), Value::Float(sd), flagged)
        } else {
            (Value::Null, Value::Null, false)
        };
        if let Some(x) = x {
            history.push(x);
            if history.len() > self.history {
                history.remove(0);
            }
        }
        if self.only_anomalies && !anomaly {
            return;
        }
        row.extend([mean, stddev, Value::Bool(anomaly)]);
        ctx.emit(row);
    }
}

/// The `external_call` step: a stand-in for a synchronous call to another
/// service per record (an enrichment lookup, say), so that a job's capacity
/// is bound per subtask, `1 / per_record` records per second, rather than by
/// the machine's cores: a test and benchmark aid for autoscaling.
///
/// Records pass unchanged. The time owed accumulates and is slept once it
/// reaches [`ExternalCall::SLEEP_AT`] (a sleep of microseconds would mostly
/// be the scheduler's overshoot): no CPU burns, and the sleep happens inside
/// the task's processing, so the task's metrics count it as *busy*, as a
/// synchronous call would be, and the true processing rate reflects it.
pub struct ExternalCall<T> {
    per_record: Duration,
    /// Owed and not slept yet; negative when a sleep overshot, which the next
    /// records pay back (down to `-SLEEP_AT`: a thread descheduled for long
    /// does not earn a burst).
    owed_ns: i128,
    _t: PhantomData<fn(T)>,
}

impl<T> ExternalCall<T> {
    /// The smallest sleep.
    pub const SLEEP_AT: Duration = Duration::from_millis(1);

    pub fn new(per_record: Duration) -> Self {
        ExternalCall { per_record, owed_ns: 0, _t: PhantomData }
    }

    /// Sleeps what is owed, when it is at least `at`.
    fn pay(&mut self, at: Duration) {
        if self.owed_ns < at.as_nanos() as i128 || self.owed_ns <= 0 {
            return;
        }
        let started = Instant::now();
        std::thread::sleep(Duration::from_nanos(self.owed_ns.min(u64::MAX as i128) as u64));
        let credit = -(Self::SLEEP_AT.as_nanos() as i128);
        self.owed_ns = (self.owed_ns - started.elapsed().as_nanos() as i128).max(credit);
    }
}

impl<T: Data> Operator for ExternalCall<T> {
    type In = T;
    type Out = T;

    fn process_batch(&mut self, batch: Vec<Record<T>>, out: &mut Collector<'_, T>) -> TaskResult {
        self.owed_ns += self.per_record.as_nanos() as i128 * batch.len() as i128;
        self.pay(Self::SLEEP_AT);
        out.emit_batch(batch);
        Ok(())
    }

    /// The last records pay what they owe too.
    fn on_end(&mut self, _out: &mut Collector<'_, T>) -> TaskResult {
        self.pay(Duration::ZERO);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boxed set encodes as the set did (checkpoints restore), and keeps
    /// accumulators, held per key and pane, at 32 bytes.
    #[test]
    fn accumulators_are_small_and_encode_as_before() {
        use weir_core::state::codec;
        assert!(std::mem::size_of::<Acc>() <= 32, "{} bytes", std::mem::size_of::<Acc>());
        let set: HashSet<Value> = [Value::Int(3), Value::Str("eu".into())].into_iter().collect();
        assert_eq!(codec::encode(&Box::new(set.clone())), codec::encode(&set));
        let decoded: Acc =
            codec::decode(&codec::encode(&Acc::Distinct(Box::new(set.clone()))), "an accumulator").unwrap();
        assert!(matches!(decoded, Acc::Distinct(d) if *d == set));
    }

    #[test]
    fn aggregates_compute_and_merge() {
        let specs = vec![
            AggSpec { kind: AggKind::Count, field: None, input_type: None },
            AggSpec { kind: AggKind::Sum, field: Some(0), input_type: Some(FieldType::Int) },
            AggSpec { kind: AggKind::Min, field: Some(0), input_type: Some(FieldType::Int) },
            AggSpec { kind: AggKind::Max, field: Some(1), input_type: Some(FieldType::String) },
            AggSpec { kind: AggKind::Avg, field: Some(0), input_type: Some(FieldType::Int) },
            AggSpec { kind: AggKind::CountDistinct, field: Some(1), input_type: Some(FieldType::String) },
            AggSpec { kind: AggKind::Sum, field: Some(2), input_type: Some(FieldType::Float) },
        ];
        let agg = RowAggregates { specs: Arc::new(specs) };
        let row = |i: i64, s: &str, f: f64| vec![Value::Int(i), Value::Str(s.into()), Value::Float(f)];
        // A row of nulls is counted by `count()` and skipped by the others.
        let rows = [row(5, "b", 0.5), row(1, "a", 1.25), vec![Value::Null; 3], row(9, "b", 2.0)];
        let mut a = AggregateFunction::create(&agg);
        AggregateFunction::add(&agg, &mut a, &rows[0]);
        let mut b = AggregateFunction::create(&agg);
        for r in &rows[1..] {
            AggregateFunction::add(&agg, &mut b, r);
        }
        AggregateFunction::merge(&agg, &mut a, b);
        assert_eq!(
            AggregateFunction::result(&agg, &a),
            vec![
                Value::Int(4),
                Value::Int(15),
                Value::Int(1),
                Value::Str("b".into()),
                Value::Float(5.0),
                Value::Int(2),
                Value::Float(3.75),
            ]
        );
    }

    #[test]
    fn top_keeps_the_best_n_with_ties_broken_by_later_keys() {
        let top =
            TopRows { n: 2, by: Arc::new(vec![(1, true), (0, false)]), add_window_start: false, add_window_end: true };
        let mut acc = WindowFunction::<(), Row>::create(&top);
        for (a, c) in [(7, 3), (5, 3), (9, 1), (4, 2), (6, 3)] {
            WindowFunction::<(), Row>::add(&top, &mut acc, &vec![Value::Int(a), Value::Int(c)]);
        }
        let mut out = Vec::new();
        let mut t = top.clone();
        WindowFunction::<(), Row>::emit(&mut t, &(), &Window::new(0, 10), &acc, &mut |r| out.push(r));
        let ints = |r: &Row| r.iter().map(|v| v.as_int().unwrap()).collect::<Vec<_>>();
        assert_eq!(out.iter().map(ints).collect::<Vec<_>>(), vec![vec![5, 3, 10, 1], vec![6, 3, 10, 2]]);
    }

    #[test]
    fn three_sigma() {
        let (m, sd) = mean_stddev(&[10.0, 12.0, 11.0, 9.0, 13.0]);
        assert_eq!(m, 11.0);
        assert!((sd - 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn an_external_call_owes_time_per_record_and_sleeps_it_in_chunks() {
        let mut call = ExternalCall::<u64>::new(Duration::from_micros(100));
        let mut buf = Vec::new();
        let batch = |range: std::ops::Range<u64>| range.map(|n| Record::new(NO_TIMESTAMP, n)).collect::<Vec<_>>();
        // 5 records owe 500us: below a millisecond, nothing is slept yet.
        call.process_batch(batch(0..5), &mut Collector::new(&mut buf)).unwrap();
        assert_eq!(call.owed_ns, 500_000);
        let started = Instant::now();
        let mut n = 5;
        while n < 1000 {
            let end = (n + 7).min(1000);
            call.process_batch(batch(n..end), &mut Collector::new(&mut buf)).unwrap();
            n = end;
        }
        call.on_end(&mut Collector::new(&mut buf)).unwrap();
        // A lower bound only: a loaded machine makes it longer, never shorter.
        // (The 500us owed before `started` is slept after it.)
        assert!(started.elapsed() >= Duration::from_millis(100), "1000 records at 100us took {:?}", started.elapsed());
        assert_eq!(buf.iter().map(|r| r.value).collect::<Vec<_>>(), (0..1000).collect::<Vec<_>>(), "rows unchanged");
    }
}
