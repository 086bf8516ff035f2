//! Late records: dropped and counted, re-firing a window within the allowed
//! lateness, and delivered on the late-data side stream.
//!
//! Every test feeds one record per poll with a monotonic watermark
//! (`watermark = highest timestamp - 1`), so the order of records and
//! watermarks at the window operator, and with it which records are late, is
//! fixed. The expected rows are worked out by hand in the comments.

use std::time::Duration;

use crate::common::{Count, metrics_of, one_by_one, run};
use weir::core::window::AggregateWindow;
use weir::prelude::*;

/// `(window start, count)` rows in emission order with their timestamps, and
/// the late-record count, for one key under 1 s tumbling windows.
fn tumbling(times: &[i64], lateness: Duration) -> (Vec<(i64, u64, Timestamp)>, u64) {
    let env = StreamEnv::new("lateness");
    let rows = one_by_one(&env, times.to_vec())
        .assign_timestamps(WatermarkStrategy::monotonic(), |&t| t)
        .key_by(|_| 0u8)
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .allowed_lateness(lateness)
        .aggregate(Count, |_, w, n| (w.start, n))
        .collect();
    let metrics = run(env);
    let rows = rows.records().into_iter().map(|r| (r.value.0, r.value.1, r.time)).collect();
    (rows, metrics_of(&metrics, "window").late_records)
}

const TIMES: [i64; 7] = [100, 500, 1_500, 200, 2_500, 300, 1_600];

#[test]
fn records_behind_the_watermark_are_dropped_and_counted() {
    // 1500 moves the watermark to 1499: [0, 1000) fires with {100, 500}; 200 is
    // late. 2500 (watermark 2499) fires [1000, 2000) with {1500}; 300 and 1600
    // are late. The end fires [2000, 3000) with {2500}.
    let (rows, late) = tumbling(&TIMES, Duration::ZERO);
    assert_eq!(rows, vec![(0, 2, 999), (1_000, 1, 1_999), (2_000, 1, 2_999)]);
    assert_eq!(late, 3);
}

#[test]
fn allowed_lateness_fires_the_window_again_with_the_update() {
    // With 1 s of allowed lateness:
    //   1500 (wm 1499): [0, 1000) fires with 2.
    //   200: 999 + 1000 > 1499, not late: [0, 1000) fires again with 3.
    //   2500 (wm 2499): [1000, 2000) fires with {1500}; [0, 1000) is dropped (999 + 1000 <= 2499).
    //   300: late now, counted.
    //   1600: within lateness of [1000, 2000): fires again with 2.
    //   end: [2000, 3000) with {2500}; nothing fires twice for the end.
    let (rows, late) = tumbling(&TIMES, Duration::from_secs(1));
    assert_eq!(rows, vec![(0, 2, 999), (0, 3, 999), (1_000, 1, 1_999), (1_000, 2, 1_999), (2_000, 1, 2_999)]);
    assert_eq!(late, 1);
}

#[test]
fn late_records_go_to_the_side_stream_with_their_timestamps() {
    let env = StreamEnv::new("late-side-output");
    let (results, late) = one_by_one(&env, TIMES.to_vec())
        .assign_timestamps(WatermarkStrategy::monotonic(), |&t| t)
        .key_by(|_| 0u8)
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .apply_with_late_data(AggregateWindow::new(Count, |_: &u8, w: &Window, n| (w.start, n)));
    let (results, late) = (results.collect(), late.collect());
    let metrics = run(env);
    let results: Vec<_> = results.records().into_iter().map(|r| (r.value, r.time)).collect();
    assert_eq!(results, vec![((0, 2), 999), ((1_000, 1), 1_999), ((2_000, 1), 2_999)]);
    let late: Vec<_> = late.records().into_iter().map(|r| (r.value, r.time)).collect();
    assert_eq!(late, vec![(200, 200), (300, 300), (1_600, 1_600)]);
    assert_eq!(metrics_of(&metrics, "window").late_records, 3);
}

#[test]
fn side_stream_gets_only_what_the_allowed_lateness_does_not_cover() {
    let env = StreamEnv::new("late-side-output-with-lateness");
    let (results, late) = one_by_one(&env, TIMES.to_vec())
        .assign_timestamps(WatermarkStrategy::monotonic(), |&t| t)
        .key_by(|_| 0u8)
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .allowed_lateness(Duration::from_secs(1))
        .apply_with_late_data(AggregateWindow::new(Count, |_: &u8, w: &Window, n| (w.start, n)));
    let (results, late) = (results.collect(), late.collect());
    run(env);
    assert_eq!(results.values(), vec![(0, 2), (0, 3), (1_000, 1), (1_000, 2), (2_000, 1)]);
    assert_eq!(late.values(), vec![300]);
}

#[test]
fn a_sliding_record_is_late_only_when_all_its_windows_are() {
    // 2 s windows sliding by 1 s.
    //   500: [-1000, 1000) and [0, 2000).
    //   2500 (wm 2499): fires [-1000, 1000) and [0, 2000), 1 each.
    //   1200: [0, 2000) is late, [1000, 3000) is not: counted there only, not late.
    //   100: [-1000, 1000) and [0, 2000) are both late: a late record.
    //   end: [1000, 3000) with {2500, 1200}, [2000, 4000) with {2500}.
    let env = StreamEnv::new("sliding-lateness");
    let rows = one_by_one(&env, vec![500, 2_500, 1_200, 100])
        .assign_timestamps(WatermarkStrategy::monotonic(), |&t| t)
        .key_by(|_| 0u8)
        .window(WindowAssigner::sliding(Duration::from_secs(2), Duration::from_secs(1)))
        .aggregate(Count, |_, w, n| (w.start, n))
        .collect();
    let metrics = run(env);
    let mut rows = rows.values();
    rows.sort();
    assert_eq!(rows, vec![(-1_000, 1), (0, 1), (1_000, 2), (2_000, 1)]);
    assert_eq!(metrics_of(&metrics, "window").late_records, 1);
}

#[test]
fn lateness_is_judged_per_key_window_not_per_key() {
    // Key 'b' has no pane yet when its first record arrives behind the
    // watermark: it is late as well, and does not disturb key 'a'.
    let env = StreamEnv::new("late-new-key");
    let rows = one_by_one(&env, vec![('a', 100), ('a', 1_500), ('b', 900), ('b', 1_700)])
        .assign_timestamps(WatermarkStrategy::monotonic(), |&(_, t)| t)
        .key_by(|&(k, _)| k)
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .aggregate(Count, |&k, w, n| (k, w.start, n))
        .collect();
    let metrics = run(env);
    let mut rows = rows.values();
    rows.sort();
    assert_eq!(rows, vec![('a', 0, 1), ('a', 1_000, 1), ('b', 1_000, 1)]);
    assert_eq!(metrics_of(&metrics, "window").late_records, 1);
}
