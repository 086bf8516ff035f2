//! Broadcast state: rules broadcast to every subtask, read by a keyed
//! function that applies, to each record, the rule in force at its time
//! (deterministic through event-time timers under the minimum watermark of
//! both inputs), at several parallelisms and after a restore at another
//! parallelism that finds the rules only in the snapshot.

use std::collections::BTreeMap;
use std::path::Path;

use weir::core::Data;
use weir::core::state::Key;
use weir::prelude::*;
use weir::testing::run_sorted;
use weir_workloads::{Order, WorkloadStreams, bounds};

use crate::common::{committed_lines, pseudo_random, resumed_and_uninterrupted};

/// A rule: from this time on, amounts at or above the threshold pass.
type Rule = (Timestamp, i64);

/// Holds each keyed record until the watermark reaches its time (so every
/// rule up to then has arrived), then emits (id, whether it passes the rule in
/// force at its time).
#[derive(Clone)]
struct Threshold<T> {
    held: Option<ListState<(Timestamp, T)>>,
}

impl<T> Default for Threshold<T> {
    fn default() -> Self {
        Threshold { held: None }
    }
}

/// What a record contributes: its id and amount.
trait Item: Data {
    fn id(&self) -> String;
    fn amount(&self) -> i64;
}

impl<K: Key, T: Item> KeyedBroadcastProcessFunction<K, T, Rule, (String, bool)> for Threshold<T> {
    type Broadcast = BTreeMap<Timestamp, i64>;

    fn open(&mut self, state: &mut KeyedState<K>) {
        self.held = Some(state.list("held"));
    }

    fn process_element(&mut self, value: T, _: &Self::Broadcast, ctx: &mut ProcessContext<'_, K, (String, bool)>) {
        let time = ctx.timestamp();
        ctx.list(self.held.as_ref().expect("opened")).push((time, value));
        ctx.register_event_time_timer(time);
    }

    fn process_broadcast_element(
        &mut self,
        rule: Rule,
        rules: &mut Self::Broadcast,
        _: &mut BroadcastContext<'_, (String, bool)>,
    ) {
        rules.insert(rule.0, rule.1);
    }

    fn on_timer(
        &mut self,
        time: Timestamp,
        _: TimeDomain,
        rules: &Self::Broadcast,
        ctx: &mut ProcessContext<'_, K, (String, bool)>,
    ) {
        let held = std::mem::take(ctx.list(self.held.as_ref().expect("opened")));
        let (due, later): (Vec<_>, Vec<_>) = held.into_iter().partition(|(t, _)| *t <= time);
        *ctx.list(self.held.as_ref().expect("opened")) = later;
        for (t, item) in due {
            let threshold = rules.range(..=t).next_back().map_or(i64::MAX, |(_, &th)| th);
            ctx.emit((item.id(), item.amount() >= threshold));
        }
    }
}

/// (key, id, time, amount).
type Row = (u32, u32, Timestamp, i64);

impl Item for Row {
    fn id(&self) -> String {
        self.1.to_string()
    }
    fn amount(&self) -> i64 {
        self.3
    }
}

impl Item for Order {
    fn id(&self) -> String {
        self.order_id.to_string()
    }
    fn amount(&self) -> i64 {
        self.amount
    }
}

fn decide(rules: &[Rule], time: Timestamp, amount: i64) -> bool {
    let threshold = rules.iter().filter(|r| r.0 <= time).max_by_key(|r| r.0).map_or(i64::MAX, |r| r.1);
    amount >= threshold
}

#[test]
fn every_subtask_applies_the_rule_in_force_at_each_records_time() {
    let rules: Vec<Rule> = vec![(0, 500), (3_000, 900), (6_000, 100)];
    let r = pseudo_random(9, 2000);
    let rows: Vec<Row> = (0..2000u32)
        .map(|i| ((r[i as usize] % 13) as u32, i, i as i64 * 5, (r[i as usize] >> 8) as i64 % 1000))
        .collect();
    let mut expected: Vec<(String, bool)> =
        rows.iter().map(|row| (row.1.to_string(), decide(&rules, row.2, row.3))).collect();
    expected.sort();
    assert!(expected.iter().any(|e| e.1) && expected.iter().any(|e| !e.1), "both outcomes occur");
    for parallelism in [1, 3] {
        let (rows, rules) = (rows.clone(), rules.clone());
        let out = run_sorted(parallelism, move |env| {
            let rules = env.from_collection(rules).assign_timestamps(WatermarkStrategy::monotonic(), |r| r.0);
            env.from_collection(rows)
                .assign_timestamps(WatermarkStrategy::monotonic(), |r| r.2)
                .key_by(|r| r.0)
                .connect_broadcast(rules)
                .process(Threshold::<Row>::default())
        });
        assert_eq!(out, expected, "at parallelism {parallelism}");
    }
}

const JOB: &str = "broadcast-rules";

/// Orders (at `rate`) against three rules spread over their first 30 seconds of event time.
fn rules_job(env: &StreamEnv, out: &Path, events: u64, rate: Option<f64>) {
    let t0 = weir_workloads::T0;
    let rules: Vec<Rule> = vec![(t0 - 10_000, 300), (t0 + 10_000, 700), (t0 + 20_000, 100)];
    let rules = env.from_collection(rules).assign_timestamps(WatermarkStrategy::monotonic(), |r| r.0);
    env.orders(Some(events), rate)
        .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(bounds::ORDERS), |o| o.time)
        .key_by(|o| o.region)
        .connect_broadcast(rules)
        .process(Threshold::<Order>::default())
        .write_json(out);
}

/// How many times each (order id, decision) was committed (some orders are re-sent).
fn committed(dir: &Path) -> BTreeMap<(String, bool), usize> {
    let mut rows = BTreeMap::new();
    for (line, n) in committed_lines(dir) {
        *rows.entry(serde_json::from_str(&line).unwrap()).or_default() += n;
    }
    rows
}

#[test]
fn broadcast_state_is_restored_to_every_subtask_at_another_parallelism() {
    // The rules source finishes at once: the resumed job has its rules from the snapshot only.
    let (resumed, expected) =
        resumed_and_uninterrupted(JOB, 10_000.0, |env, out, rate| rules_job(env, out, 40_000, rate), committed);
    assert!(expected.keys().any(|k| k.1) && expected.keys().any(|k| !k.1), "both outcomes occur");
    assert_eq!(resumed, expected);
}
