//! Two-phase (local-global) window aggregation: aggregates and reduces over
//! tumbling and sliding windows give the same rows with the local phase as
//! without it (with late records dropped alike at parallelism 1, where
//! lateness is deterministic), the plan has the local phase only where it
//! applies, the user's vertices keep their uids, and a job stopped after
//! three checkpoints and resumed at another parallelism gives the rows of an
//! uninterrupted run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use weir::prelude::*;
use weir::testing::run_sorted;
use weir_workloads::{Order, Region, WorkloadStreams, order};

use crate::common::{CountSum, committed_lines, resumed_and_uninterrupted};

type Row = (Region, i64, u64, i64);

/// Orders per region in `assigner`'s windows, by aggregate or by reduce, with
/// or without the local phase, under a watermark `bound` behind the orders.
fn windows(parallelism: usize, local: bool, assigner: WindowAssigner, by_reduce: bool, bound: u64) -> Vec<Row> {
    run_sorted(parallelism, move |env| {
        env.set_local_aggregation(local);
        let orders = env
            .orders(Some(40_000), None)
            .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(bound)), |o| o.time);
        match by_reduce {
            false => {
                orders.key_by(|o| o.region).window(assigner).aggregate(CountSum, |&r, w, (c, s)| (r, w.start, c, s))
            }
            true => orders
                .map(|o: Order| (o.region, 1u64, o.amount))
                .key_by(|v| v.0)
                .window(assigner)
                .reduce(|a, b| (a.0, a.1 + b.1, a.2 + b.2), |&r, w, v| (r, w.start, v.1, v.2)),
        }
    })
}

/// The rows over all orders, in batch (no order is late under a 5 s bound).
fn expected(assigner: WindowAssigner) -> Vec<Row> {
    let mut rows: BTreeMap<(Region, i64), (u64, i64)> = BTreeMap::new();
    for o in (0..40_000).map(order) {
        let mut windows = Vec::new();
        assigner.assign(o.time, &mut windows);
        for w in windows {
            let row = rows.entry((o.region, w.start)).or_default();
            row.0 += 1;
            row.1 += o.amount;
        }
    }
    rows.into_iter().map(|((r, start), (c, s))| (r, start, c, s)).collect()
}

const TUMBLING: WindowAssigner = WindowAssigner::Tumbling { size: 10_000 };
const SLIDING: WindowAssigner = WindowAssigner::Sliding { size: 30_000, slide: 10_000 };

#[test]
fn the_local_phase_changes_no_row_at_any_parallelism() {
    for assigner in [TUMBLING, SLIDING] {
        let want = expected(assigner);
        for (parallelism, by_reduce) in [(1, false), (2, true), (3, false)] {
            let got = windows(parallelism, true, assigner, by_reduce, 5_000);
            assert_eq!(got, want, "{assigner:?} at parallelism {parallelism} (reduce: {by_reduce})");
        }
    }
}

#[test]
fn late_records_are_dropped_alike_with_and_without_the_local_phase() {
    for assigner in [TUMBLING, SLIDING] {
        // A 1 s bound under disorder of up to 5 s: some orders come after their windows fired.
        let (with, without) = (windows(1, true, assigner, false, 1_000), windows(1, false, assigner, false, 1_000));
        let all: u64 = expected(assigner).iter().map(|r| r.2).sum();
        assert!(without.iter().map(|r| r.2).sum::<u64>() < all, "some orders are late");
        assert_eq!(with, without, "{assigner:?}");
    }
}

#[test]
fn the_plan_has_a_local_phase_only_where_it_applies_and_user_vertices_keep_their_uids() {
    let plan = |local: bool, window: fn(KeyedStream<Region, Order>) -> WindowedStream<Region, Order>| {
        let env = StreamEnv::new("plan");
        env.set_parallelism(2).set_local_aggregation(local);
        let keyed = env
            .orders(Some(10), None)
            .assign_timestamps(WatermarkStrategy::monotonic(), |o| o.time)
            .key_by(|o| o.region);
        window(keyed).aggregate(CountSum, |&r, _, (c, _)| (r, c)).discard();
        let described = env.describe();
        let uids: Vec<String> = env.into_graph().unwrap().operators().into_keys().collect();
        (described, uids)
    };
    let (local, local_uids) = plan(true, |k| k.window(TUMBLING));
    assert!(local.contains("local-aggregate"), "{local}");
    let (global, global_uids) = plan(false, |k| k.window(TUMBLING));
    assert!(!global.contains("local-aggregate"), "{global}");
    let user: Vec<&String> = local_uids.iter().filter(|u| !u.contains("local-aggregate")).collect();
    assert_eq!(user, global_uids.iter().collect::<Vec<_>>(), "the user's vertices keep their uids");
    let (lateness, _) = plan(true, |k| k.window(TUMBLING).allowed_lateness(Duration::from_secs(1)));
    assert!(!lateness.contains("local-aggregate"), "a window that may fire again is not pre-aggregated: {lateness}");
    let (sessions, _) = plan(true, |k| k.window(WindowAssigner::Session { gap: 1000 }));
    assert!(!sessions.contains("local-aggregate"), "sessions merge: {sessions}");
}

const JOB: &str = "local-aggregation-resume";

fn job(env: &StreamEnv, out: &Path, rate: Option<f64>) {
    env.orders(Some(40_000), rate)
        .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5)), |o| o.time)
        .key_by(|o| o.region)
        .window(SLIDING)
        .aggregate(CountSum, |&r, w, (c, s)| (r.as_str().to_string(), w.start, c, s))
        .write_json(out);
}

#[test]
fn a_resumed_job_with_a_local_phase_gives_the_rows_of_an_uninterrupted_one() {
    let (resumed, expected) = resumed_and_uninterrupted(JOB, 10_000.0, job, committed_lines);
    assert!(expected.len() > 20, "rows: {}", expected.len());
    assert!(expected.values().all(|&n| n == 1));
    assert_eq!(resumed, expected);
}

#[test]
fn records_without_event_time_belong_to_no_window_with_or_without_the_local_phase() {
    for local in [true, false] {
        let out = run_sorted(2, move |env| {
            env.set_local_aggregation(local);
            // No timestamp assigner: the records have no event time.
            env.from_collection((0..100u32).collect())
                .key_by(|v| v % 3)
                .window(TUMBLING)
                .reduce(|a, b| a + b, |&k, _, &sum| (k, sum))
        });
        assert!(out.is_empty(), "local: {local}: {out:?}");
    }
}

#[test]
fn a_partitioning_pending_before_the_key_is_the_same_with_or_without_the_local_phase() {
    let totals = |local: bool| {
        run_sorted(2, move |env| {
            env.set_local_aggregation(local);
            env.from_collection((0..1000i64).collect())
                .assign_timestamps(WatermarkStrategy::monotonic(), |v| *v)
                .broadcast()
                .key_by(|v| v % 3)
                .window(TUMBLING)
                .reduce(|a, b| a + b, |&k, _, &sum| (k, sum))
        })
    };
    let without = totals(false);
    assert_eq!(without.iter().map(|r| r.1).sum::<i64>(), 499_500, "key_by routes by key whatever was pending");
    assert_eq!(totals(true), without);
}
