//! The operators behind pipeline steps, over [`Row`]s: dedup, aggregates,
//! top-N and the 3-sigma anomaly flag.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_core::operator::process::{KeyedProcessFunction, ProcessContext};
use weir_core::state::{KeyedState, ListState, ValueState};
use weir_core::timer::TimeDomain;
use weir_core::window::{AggregateFunction, Window, WindowFunction};
use weir_core::{NO_TIMESTAMP, Timestamp};

use crate::value::{FieldType, Row, Value};

/// A key of a keyed step: the values of its key fields.
pub type RowKey = Vec<Value>;

/// Drops rows whose key was seen before; with a TTL, a key is forgotten that
/// long (in event time) after it was first seen.
#[derive(Clone)]
pub struct DedupRows {
    pub ttl_ms: Option<i64>,
    pub seen: Option<ValueState<()>>,
}

impl KeyedProcessFunction<RowKey, Row, Row> for DedupRows {
    fn open(&mut self, state: &mut KeyedState<RowKey>) {
        self.seen = Some(state.value("seen"));
    }

    fn process_element(&mut self, row: Row, ctx: &mut ProcessContext<'_, RowKey, Row>) {
        let seen = self.seen.expect("opened");
        if ctx.value(&seen).get().is_some() {
            return;
        }
        ctx.value(&seen).set(());
        if let Some(ttl) = self.ttl_ms
            && ctx.timestamp() != NO_TIMESTAMP
        {
            ctx.register_event_time_timer(ctx.timestamp().saturating_add(ttl));
        }
        ctx.emit(row);
    }

    fn on_timer(&mut self, _time: Timestamp, _domain: TimeDomain, ctx: &mut ProcessContext<'_, RowKey, Row>) {
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
            AggKind::Count | AggKind::CountDistinct => FieldType::Int,
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
    Distinct(HashSet<Value>),
}

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

impl AggregateFunction<Row> for RowAggregates {
    type Acc = Vec<Acc>;
    type Result = Vec<Value>;

    fn create(&self) -> Vec<Acc> {
        self.specs
            .iter()
            .map(|s| match s.kind {
                AggKind::Count => Acc::Count(0),
                AggKind::Sum if s.input_type == Some(FieldType::Float) => Acc::SumFloat(0.0),
                AggKind::Sum => Acc::SumInt(0),
                AggKind::Min => Acc::Min(None),
                AggKind::Max => Acc::Max(None),
                AggKind::Avg => Acc::Avg(0.0, 0),
                AggKind::CountDistinct => Acc::Distinct(HashSet::new()),
            })
            .collect()
    }

    fn add(&self, accs: &mut Vec<Acc>, row: &Row) {
        for (acc, spec) in accs.iter_mut().zip(self.specs.iter()) {
            let v = spec.field.map(|i| &row[i]);
            match (acc, v) {
                (Acc::Count(n), _) => *n += 1,
                (Acc::SumInt(s), Some(Value::Int(x))) => *s = s.wrapping_add(*x),
                (Acc::SumFloat(s), Some(v)) => *s += v.as_f64().unwrap_or(0.0),
                (Acc::Min(m), Some(v)) => keep(m, v, std::cmp::Ordering::Less),
                (Acc::Max(m), Some(v)) => keep(m, v, std::cmp::Ordering::Greater),
                (Acc::Avg(s, n), Some(v)) => {
                    if let Some(x) = v.as_f64() {
                        *s += x;
                        *n += 1;
                    }
                }
                (Acc::Distinct(set), Some(v)) if !set.contains(v) => {
                    set.insert(v.clone());
                }
                _ => {}
            }
        }
    }

    fn merge(&self, accs: &mut Vec<Acc>, other: Vec<Acc>) {
        for (a, b) in accs.iter_mut().zip(other) {
            match (a, b) {
                (Acc::Count(x), Acc::Count(y)) => *x += y,
                (Acc::SumInt(x), Acc::SumInt(y)) => *x = x.wrapping_add(y),
                (Acc::SumFloat(x), Acc::SumFloat(y)) => *x += y,
                (Acc::Min(x), Acc::Min(Some(y))) => keep(x, &y, std::cmp::Ordering::Less),
                (Acc::Max(x), Acc::Max(Some(y))) => keep(x, &y, std::cmp::Ordering::Greater),
                (Acc::Avg(s, n), Acc::Avg(s2, n2)) => {
                    *s += s2;
                    *n += n2;
                }
                (Acc::Distinct(x), Acc::Distinct(y)) => x.extend(y),
                _ => {}
            }
        }
    }

    fn result(&self, accs: &Vec<Acc>) -> Vec<Value> {
        accs.iter()
            .map(|a| match a {
                Acc::Count(n) => Value::Int(*n),
                Acc::SumInt(s) => Value::Int(*s),
                Acc::SumFloat(s) => Value::Float(*s),
                Acc::Min(v) | Acc::Max(v) => v.clone().unwrap_or(Value::Null),
                Acc::Avg(_, 0) => Value::Null,
                Acc::Avg(s, n) => Value::Float(s / *n as f64),
                Acc::Distinct(set) => Value::Int(set.len() as i64),
            })
            .collect()
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

impl KeyedProcessFunction<RowKey, Row, Row> for AnomalyFlag {
    fn open(&mut self, state: &mut KeyedState<RowKey>) {
        self.values = Some(state.list("history"));
    }

    fn process_element(&mut self, mut row: Row, ctx: &mut ProcessContext<'_, RowKey, Row>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_compute_and_merge() {
        let specs = vec![
            AggSpec { kind: AggKind::Count, field: None, input_type: None },
            AggSpec { kind: AggKind::Sum, field: Some(0), input_type: Some(FieldType::Int) },
            AggSpec { kind: AggKind::Min, field: Some(0), input_type: Some(FieldType::Int) },
            AggSpec { kind: AggKind::Max, field: Some(1), input_type: Some(FieldType::String) },
            AggSpec { kind: AggKind::Avg, field: Some(0), input_type: Some(FieldType::Int) },
            AggSpec { kind: AggKind::CountDistinct, field: Some(1), input_type: Some(FieldType::String) },
        ];
        let agg = RowAggregates { specs: Arc::new(specs) };
        let rows = [(5, "b"), (1, "a"), (9, "b")].map(|(i, s)| vec![Value::Int(i), Value::Str(s.into())]);
        let mut a = agg.create();
        agg.add(&mut a, &rows[0]);
        let mut b = agg.create();
        agg.add(&mut b, &rows[1]);
        agg.add(&mut b, &rows[2]);
        agg.merge(&mut a, b);
        assert_eq!(
            agg.result(&a),
            vec![
                Value::Int(3),
                Value::Int(15),
                Value::Int(1),
                Value::Str("b".into()),
                Value::Float(5.0),
                Value::Int(2)
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
}
