//! Session windows: a record that bridges two sessions merges them into one,
//! with the union of their contents and merged accumulators; lateness is
//! judged on the session a record ends up in, and a session that grows after
//! it fired fires again.
//!
//! Records arrive one per poll (see `common::one_by_one`), so which records
//! are behind the watermark is fixed; expected rows are worked out by hand.

use std::time::Duration;
use weir_workloads::WorkloadStreams;

use crate::common::{Count, metrics_of, one_by_one, run};
use weir::prelude::*;
use weir::testing::run_local;
use weir_workloads::{T0, order};

type Row = (char, i64, i64, Vec<i64>);

/// Sessions with a 1 s gap per key, each as `(key, start, end, sorted times)`
/// with the result's timestamp; and the late-record count.
fn sessions(
    records: Vec<(char, i64)>,
    strategy: WatermarkStrategy,
    lateness: Duration,
) -> (Vec<(Row, Timestamp)>, u64) {
    let env = StreamEnv::new("sessions");
    let rows = one_by_one(&env, records)
        .assign_timestamps(strategy, |&(_, t)| t)
        .key_by(|&(k, _)| k)
        .window(WindowAssigner::session(Duration::from_secs(1)))
        .allowed_lateness(lateness)
        .process(|&k, w, items: &[(char, i64)], emit: &mut dyn FnMut(Row)| {
            let mut times: Vec<i64> = items.iter().map(|&(_, t)| t).collect();
            times.sort();
            emit((k, w.start, w.end, times));
        })
        .collect();
    let metrics = run(env);
    let mut rows: Vec<_> = rows.records().into_iter().map(|r| (r.value, r.time)).collect();
    rows.sort();
    (rows, metrics_of(&metrics, "window").late_records)
}

#[test]
fn a_record_bridging_two_sessions_merges_them_into_one_row() {
    // 1 s bound: the watermark is the highest time - 1001.
    //   a@0, a@500 -> session a [0, 1500).
    //   a@2000     -> a second session [2000, 3000) (2000 > 1500: no overlap).
    //   a@1200     -> [1200, 2200) overlaps both: one session [0, 3000).
    //   b@100, b@5000 -> b's sessions [100, 1100) and [5000, 6000); 5000 moves
    //   the watermark to 3999 and fires a's [0, 3000) and b's first.
    let records = vec![('a', 0), ('b', 100), ('a', 500), ('a', 2_000), ('a', 1_200), ('b', 5_000)];
    let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(1));
    let (rows, late) = sessions(records, strategy, Duration::ZERO);
    assert_eq!(
        rows,
        vec![
            (('a', 0, 3_000, vec![0, 500, 1_200, 2_000]), 2_999),
            (('b', 100, 1_100, vec![100]), 1_099),
            (('b', 5_000, 6_000, vec![5_000]), 5_999),
        ]
    );
    assert_eq!(late, 0);
}

#[test]
fn merged_sessions_merge_their_accumulators() {
    // The same bridging, aggregated incrementally: counts of merged sessions add up.
    let records = vec![('a', 0), ('a', 500), ('a', 2_000), ('a', 2_400), ('a', 1_200), ('a', 9_000)];
    let out = run_local(1, move |env| {
        one_by_one(env, records)
            .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(1)), |&(_, t)| t)
            .key_by(|&(k, _)| k)
            .window(WindowAssigner::session(Duration::from_secs(1)))
            .aggregate(Count, |&k, w, n| (k, w.start, w.end, n))
    });
    let mut rows: Vec<_> = out.into_iter().map(|r| r.value).collect();
    rows.sort();
    assert_eq!(rows, vec![('a', 0, 3_400, 5), ('a', 9_000, 10_000, 1)]);
}

#[test]
fn sessions_of_generated_orders_match_a_batch_computation() {
    // Orders per region with a 3 ms gap: many sessions, many merges, at
    // parallelism 2, against sessions computed in batch from the sorted times.
    const N: u64 = 20_000;
    let gap = 3;
    let out = run_local(2, move |env| {
        env.orders(Some(N), None)
            .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5)), |o| o.time)
            .key_by(|o| o.region)
            .window(WindowAssigner::session(Duration::from_millis(gap as u64)))
            .aggregate(Count, |&region, w, n| (region, w.start, w.end, n))
    });
    let mut rows: Vec<_> = out.into_iter().map(|r| r.value).collect();
    rows.sort();
    let mut times: Vec<_> = (0..N).map(order).map(|o| (o.region, o.time)).collect();
    times.sort();
    let mut expected: Vec<(weir_workloads::Region, i64, i64, u64)> = Vec::new();
    for (region, t) in times {
        match expected.last_mut() {
            // Touching sessions merge: a record at the previous end joins it.
            Some((r, _, end, n)) if *r == region && t <= *end => {
                *end = (*end).max(t + gap);
                *n += 1;
            }
            _ => expected.push((region, t, t + gap, 1)),
        }
    }
    assert!(expected.len() > 100 && expected.iter().any(|s| s.3 > 2), "the input should make many merged sessions");
    assert!(expected.iter().all(|s| s.1 >= T0 - 5_000));
    assert_eq!(rows, expected);
}

#[test]
fn a_record_behind_the_watermark_joins_a_session_that_is_still_open() {
    // Monotonic watermark (highest - 1):
    //   a@1000, a@1900 -> session [1000, 2900), watermark 1899.
    //   a@850: its own window [850, 1850) ends before the watermark, but it
    //   overlaps the open session; merged, [850, 2900) is not late (as Flink
    //   judges lateness on the merged window).
    //   a@-500: [-500, 500) overlaps nothing and is late.
    let records = vec![('a', 1_000), ('a', 1_900), ('a', 850), ('a', -500)];
    let (rows, late) = sessions(records, WatermarkStrategy::monotonic(), Duration::ZERO);
    assert_eq!(rows, vec![(('a', 850, 2_900, vec![850, 1_000, 1_900]), 2_899)]);
    assert_eq!(late, 1);
}

#[test]
fn a_fired_session_that_grows_within_the_allowed_lateness_fires_again() {
    // Monotonic watermark, 5 s allowed lateness:
    //   a@0 -> [0, 1000). a@1500 -> [1500, 2500), watermark 1499: [0, 1000) fires.
    //   a@800 -> [800, 1800) bridges both: [0, 2500), which ends after the
    //   watermark, so it fires when the watermark passes 2499 (at the end).
    //   a@2000 -> inside [0, 2500), nothing new fires yet.
    //   a@2700 -> [2700, 3700) merges too: [0, 3700).
    let records = vec![('a', 0), ('a', 1_500), ('a', 800), ('a', 2_000), ('a', 2_700)];
    let (rows, late) = sessions(records, WatermarkStrategy::monotonic(), Duration::from_secs(5));
    assert_eq!(
        rows,
        vec![(('a', 0, 1_000, vec![0]), 999), (('a', 0, 3_700, vec![0, 800, 1_500, 2_000, 2_700]), 3_699)]
    );
    assert_eq!(late, 0);
}

#[test]
fn a_late_record_inside_a_fired_session_fires_it_again_at_once() {
    // 5 s allowed lateness: a@0, a@500 -> [0, 1500); a@3000 (watermark 2999)
    // fires it with {0, 500}; a@700 joins it, making it [0, 1700), which
    // ended before the watermark: it fires again with {0, 500, 700} right
    // away; a@3100 extends [3000, 4000) to [3000, 4100).
    let records = vec![('a', 0), ('a', 500), ('a', 3_000), ('a', 700), ('a', 3_100)];
    let (rows, late) = sessions(records, WatermarkStrategy::monotonic(), Duration::from_secs(5));
    assert_eq!(
        rows,
        vec![
            (('a', 0, 1_500, vec![0, 500]), 1_499),
            (('a', 0, 1_700, vec![0, 500, 700]), 1_699),
            (('a', 3_000, 4_100, vec![3_000, 3_100]), 4_099),
        ]
    );
    assert_eq!(late, 0);
}
