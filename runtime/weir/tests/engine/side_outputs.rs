//! Side outputs: records a function emits to an `OutputTag` beside its main
//! output, from a keyed process function, a broadcast function and an
//! interval join's late records; with consumers of the main stream added
//! before and after the side output is asked for, watermarks reaching the
//! side stream, and exactly-once side rows after a restore at another
//! parallelism.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weir::core::source::{Source, SourcePoll};
use weir::core::{Data, MAX_WATERMARK, NO_TIMESTAMP, TaskResult};
use weir::prelude::*;
use weir_workloads::{Order, OrderId, WorkloadStreams, bounds, is_resent, order};

use crate::common::{committed_lines, resumed_and_uninterrupted};

/// Passes an order's first copy on by id; its re-sent copies go to the side.
#[derive(Clone)]
struct Dedup {
    seen: Option<ValueState<()>>,
    resent: OutputTag<OrderId>,
}

impl Dedup {
    fn new() -> Self {
        Dedup { seen: None, resent: OutputTag::new("resent") }
    }
}

impl KeyedProcessFunction<OrderId, Order, OrderId> for Dedup {
    fn open(&mut self, state: &mut KeyedState<OrderId>) {
        self.seen = Some(state.value("seen"));
    }

    fn process_element(&mut self, order: Order, ctx: &mut ProcessContext<'_, OrderId, OrderId>) {
        let seen = self.seen.as_ref().expect("opened");
        if ctx.value(seen).get().is_some() {
            ctx.output(&self.resent, order.order_id);
        } else {
            ctx.value(seen).set(());
            ctx.emit(order.order_id);
        }
    }
}

/// Emits, when the watermark passes a record's time, the watermark that fired it.
#[derive(Clone)]
struct FiredAt;

impl KeyedProcessFunction<u64, OrderId, Timestamp> for FiredAt {
    fn process_element(&mut self, _: OrderId, ctx: &mut ProcessContext<'_, u64, Timestamp>) {
        let time = ctx.timestamp();
        ctx.register_event_time_timer(time);
    }

    fn on_timer(&mut self, _: Timestamp, _: TimeDomain, ctx: &mut ProcessContext<'_, u64, Timestamp>) {
        let watermark = ctx.current_watermark();
        ctx.emit(watermark);
    }
}

fn counts<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_process_function_sends_resent_orders_to_a_side_output_every_consumer_sees_its_stream() {
    // Enough per subtask (at parallelism 3) for watermarks mid-stream: a
    // source in bulk emits one per 16 Ki records.
    const EVENTS: u64 = 120_000;
    let expected_firsts: Vec<OrderId> = (0..EVENTS).filter(|&n| !is_resent(n)).map(|n| order(n).order_id).collect();
    let expected_resent = counts((0..EVENTS).filter(|&n| is_resent(n)).map(|n| order(n).order_id));
    assert!(!expected_resent.is_empty(), "the input has re-sent orders");
    for parallelism in [1, 2, 3] {
        let env = StreamEnv::new("side-outputs");
        env.set_parallelism(parallelism);
        let dedup = Dedup::new();
        let resent_tag = dedup.resent.clone();
        let firsts = env
            .orders(Some(EVENTS), None)
            .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(bounds::ORDERS), |o| o.time)
            .key_by(|o| o.order_id)
            .process(dedup);
        // A consumer of the main stream before the side output is asked for, and one after.
        let before = firsts.clone().collect();
        let resent = firsts.side_output(&resent_tag);
        let after = firsts.map(|id| id.0).collect();
        let fired = resent.clone().key_by(|id| id.0).process(FiredAt).collect();
        let resent = resent.collect();
        env.execute().unwrap();

        let mut before = before.values();
        before.sort();
        assert_eq!(before, expected_firsts, "main stream, consumer added first, at parallelism {parallelism}");
        let mut after = after.values();
        after.sort();
        assert_eq!(after, expected_firsts.iter().map(|id| id.0).collect::<Vec<_>>(), "main stream, added after");
        assert_eq!(counts(resent.values()), expected_resent, "side output at parallelism {parallelism}");
        // The side stream carries the vertex's watermarks: timers on it fire
        // as the input goes, not only at its end.
        let fired = fired.values();
        assert_eq!(fired.len(), expected_resent.len(), "one timer per re-sent id");
        assert!(fired.iter().any(|&w| w < MAX_WATERMARK), "no timer on the side stream fired before the end");
    }
}

/// A rule is a threshold; a negative one is refused, to a side output.
#[derive(Clone)]
struct Rules {
    refused: OutputTag<(usize, i64)>,
}

impl KeyedBroadcastProcessFunction<u32, (u32, i64), i64, (u32, bool)> for Rules {
    type Broadcast = Option<i64>;

    fn process_element(&mut self, v: (u32, i64), rule: &Option<i64>, ctx: &mut ProcessContext<'_, u32, (u32, bool)>) {
        ctx.emit((v.0, rule.is_some_and(|r| v.1 >= r)));
    }

    fn process_broadcast_element(
        &mut self,
        rule: i64,
        current: &mut Option<i64>,
        ctx: &mut BroadcastContext<'_, (u32, bool)>,
    ) {
        match rule < 0 {
            true => ctx.output(&self.refused, (ctx.subtask(), rule)),
            false => *current = Some(rule),
        }
    }
}

#[test]
fn a_broadcast_function_refuses_rules_to_a_side_output_from_every_subtask() {
    for parallelism in [1, 3] {
        let env = StreamEnv::new("refused-rules");
        env.set_parallelism(parallelism);
        let refused = OutputTag::<(usize, i64)>::new("refused");
        let rules = env.from_collection(vec![5i64, -1, 7, -20]);
        let decided = env
            .from_collection((0..100u32).map(|i| (i, i as i64 % 10)).collect())
            .key_by(|v| v.0)
            .connect_broadcast(rules)
            .process(Rules { refused: refused.clone() });
        let refused = decided.side_output(&refused).collect();
        let decided = decided.collect();
        env.execute().unwrap();
        assert_eq!(decided.values().len(), 100);
        let mut refused = refused.values();
        refused.sort();
        let expected: Vec<(usize, i64)> = (0..parallelism).flat_map(|s| [(s, -20), (s, -1)]).collect();
        assert_eq!(refused, expected, "every subtask refuses every bad rule, at parallelism {parallelism}");
    }
}

/// Emits its stages' items one per poll, each stage once its gate is open, then ends.
struct Staged<T> {
    stages: Vec<(Gate, Vec<T>)>,
    stage: usize,
    next: usize,
}

type Gate = Arc<AtomicBool>;

impl<T: Clone + Send> Source<T> for Staged<T> {
    fn poll(&mut self, out: &mut Vec<weir::core::Record<T>>) -> TaskResult<SourcePoll> {
        let Some((gate, items)) = self.stages.get(self.stage) else { return Ok(SourcePoll::Finished) };
        if !gate.load(Ordering::SeqCst) {
            return Ok(SourcePoll::Idle(Duration::from_millis(2)));
        }
        match items.get(self.next) {
            Some(item) => {
                out.push(weir::core::Record::new(NO_TIMESTAMP, item.clone()));
                self.next += 1;
            }
            None => (self.stage, self.next) = (self.stage + 1, 0),
        }
        Ok(SourcePoll::Ready)
    }
}

fn staged<T: Data + Sync>(env: &StreamEnv, name: &str, stages: Vec<(Gate, Vec<T>)>) -> DataStream<T> {
    env.add_source(name, move |_| Box::new(Staged { stages: stages.clone(), stage: 0, next: 0 })).set_parallelism(1)
}

/// Waits (at most 20 s) until `done` holds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_interval_join_sends_each_sides_late_records_to_its_side_output() {
    type Row = (u32, i64);
    // (key, time): both sides' records at 1..=8 s first (the join's watermark
    // then reaches 7999), then records of each side that it has passed.
    let on_time = |offset: i64| (1..=8).map(move |s| ((s % 2) as u32, s * 1000 + offset)).collect::<Vec<Row>>();
    let gates: Vec<Gate> = (0..4).map(|i| Arc::new(AtomicBool::new(i == 0))).collect();
    let env = StreamEnv::new("interval-join-late");
    env.set_parallelism(2);
    let (late_first, late_second) = (OutputTag::<Row>::new("late-first"), OutputTag::<Row>::new("late-second"));
    let first =
        staged(&env, "first", vec![(gates[0].clone(), on_time(0)), (gates[2].clone(), vec![(0, 500), (1, 2500)])]);
    let second = staged(&env, "second", vec![(gates[1].clone(), on_time(100)), (gates[3].clone(), vec![(1, 300)])]);
    let joined = first
        .assign_timestamps(WatermarkStrategy::monotonic(), |r| r.1)
        .key_by(|r| r.0)
        .interval_join(second.assign_timestamps(WatermarkStrategy::monotonic(), |r| r.1).key_by(|r| r.0))
        .between(0, 500)
        .side_output_left_late_data(&late_first)
        .side_output_right_late_data(&late_second)
        .process(|a: &Row, b: &Row| (a.1, b.1))
        .unwrap();
    let late_firsts = joined.side_output(&late_first).collect();
    let late_seconds = joined.side_output(&late_second).collect();
    let joined = joined.collect();
    let job = env.start().unwrap();
    gates[1].store(true, Ordering::SeqCst);
    // Once the last on-time pair is out, the watermark behind it follows at once.
    wait_until("the on-time pairs", || joined.values().len() == 8);
    std::thread::sleep(Duration::from_millis(100));
    gates[2].store(true, Ordering::SeqCst);
    wait_until("the first side's late records", || late_firsts.values().len() == 2);
    gates[3].store(true, Ordering::SeqCst);
    job.wait().unwrap();
    let mut joined = joined.values();
    joined.sort();
    assert_eq!(joined, (1..=8).map(|s| (s * 1000, s * 1000 + 100)).collect::<Vec<_>>());
    let mut late = late_firsts.values();
    late.sort();
    assert_eq!(late, vec![(0, 500), (1, 2500)], "the first side's records behind the watermark");
    assert_eq!(late_seconds.values(), vec![(1, 300)], "the second side's record behind the watermark");
}

const JOB: &str = "side-output-resume";

fn dedup_job(env: &StreamEnv, out: &Path, rate: Option<f64>) {
    let dedup = Dedup::new();
    let tag = dedup.resent.clone();
    let firsts = env
        .orders(Some(40_000), rate)
        .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(bounds::ORDERS), |o| o.time)
        .key_by(|o| o.order_id)
        .process(dedup);
    firsts.side_output(&tag).write_json(out.join("resent"));
    firsts.write_json(out.join("firsts"));
}

/// How many times each line was committed, per output.
fn committed(dir: &Path) -> BTreeMap<(String, String), usize> {
    let per_output = |output: &'static str| {
        committed_lines(&dir.join(output)).into_iter().map(move |(line, n)| ((output.to_string(), line), n))
    };
    per_output("firsts").chain(per_output("resent")).collect()
}

#[test]
fn side_output_rows_are_exactly_once_after_a_restore_at_another_parallelism() {
    let (resumed, expected) = resumed_and_uninterrupted(JOB, 10_000.0, dedup_job, committed);
    assert!(expected.keys().any(|k| k.0 == "resent"), "the side output has rows");
    assert_eq!(resumed, expected);
}

#[test]
fn a_split_vertex_resized_by_uid_takes_its_main_and_side_selectors_along() {
    let env = StreamEnv::new("resize");
    env.set_parallelism(2);
    let dedup = Dedup::new();
    let tag = dedup.resent.clone();
    let firsts = env
        .orders(Some(10), None)
        .assign_timestamps(WatermarkStrategy::monotonic(), |o| o.time)
        .key_by(|o| o.order_id)
        .process(dedup);
    firsts.side_output(&tag).discard();
    firsts.discard();
    let mut graph = env.into_graph().unwrap();
    let process = graph.operators().into_keys().find(|u| u.ends_with("-process")).expect("a process vertex");
    graph.override_parallelism(&BTreeMap::from([(process.clone(), 3)])).unwrap();
    let sized = graph.operators();
    let selectors: Vec<(&String, &usize)> = sized.iter().filter(|(u, _)| u.contains("-process-")).collect();
    assert_eq!(selectors.len(), 2, "{sized:?}");
    assert!(selectors.iter().all(|(_, p)| **p == 3), "{sized:?}");
}
