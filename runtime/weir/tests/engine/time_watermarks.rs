//! Event time through the public API: how watermarks are generated, combined
//! over several inputs, ended, and kept moving past idle inputs.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Count, HeldOpen, Release, for_each, metrics_of, one_by_one, run};
use weir::core::source::{Source, SourcePoll};
use weir::core::{MIN_WATERMARK, NO_TIMESTAMP, TaskResult};
use weir::prelude::*;
use weir::testing::run_local;

/// Emits, for each record, the record's timestamp and the watermark the
/// operator had when the record arrived.
#[derive(Clone)]
struct WatermarkLog;

impl KeyedProcessFunction<u8, i64, (i64, Timestamp)> for WatermarkLog {
    fn process_element(&mut self, t: i64, ctx: &mut ProcessContext<'_, u8, (i64, Timestamp)>) {
        let wm = ctx.current_watermark();
        ctx.emit((t, wm));
    }
}

/// What each record saw, in arrival order.
fn watermarks_seen(strategy: WatermarkStrategy, times: &[i64]) -> Vec<(i64, Timestamp)> {
    let times = times.to_vec();
    let out = run_local(1, move |env| {
        one_by_one(env, times).assign_timestamps(strategy, |&t| t).key_by(|_| 0u8).process(WatermarkLog)
    });
    out.into_iter().map(|r| r.value).collect()
}

/// The watermark record `i` must see: nothing before the first record, then
/// the highest timestamp so far minus the bound minus 1.
fn expected_watermarks(bound: i64, times: &[i64]) -> Vec<(i64, Timestamp)> {
    let mut max_seen = None::<i64>;
    times
        .iter()
        .map(|&t| {
            let wm = max_seen.map_or(MIN_WATERMARK, |m| m - bound - 1);
            max_seen = Some(max_seen.map_or(t, |m| m.max(t)));
            (t, wm)
        })
        .collect()
}

#[test]
fn bounded_out_of_orderness_trails_the_highest_timestamp_by_the_bound() {
    let times = [1_000, 1_200, 900, 1_500, 1_100, 3_000, 2_500, 2_999, 4_000, 3_100];
    let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(300));
    let seen = watermarks_seen(strategy, &times);
    assert_eq!(seen, expected_watermarks(300, &times));
    // Out-of-order records never move the watermark back.
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "{seen:?}");
}

#[test]
fn monotonic_watermark_is_the_last_timestamp_minus_one() {
    let times = [10, 20, 20, 35, 100, 101];
    let seen = watermarks_seen(WatermarkStrategy::monotonic(), &times);
    assert_eq!(seen, expected_watermarks(0, &times));
    assert_eq!(seen[5], (101, 99));
}

/// Counts per 1 s tumbling window of `times` (one key), with the late-record count.
fn tumbling_counts(strategy: WatermarkStrategy, times: &[i64]) -> (Vec<(i64, u64, Timestamp)>, u64) {
    let env = StreamEnv::new("tumbling-counts");
    let rows = one_by_one(&env, times.to_vec())
        .assign_timestamps(strategy, |&t| t)
        .key_by(|_| 0u8)
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .aggregate(Count, |_, w, n| (w.start, n))
        .collect();
    let metrics = run(env);
    let mut out: Vec<_> = rows.records().into_iter().map(|r| (r.value.0, r.value.1, r.time)).collect();
    out.sort();
    (out, metrics_of(&metrics, "window").late_records)
}

#[test]
fn monotonic_drops_out_of_order_records_that_a_bound_keeps() {
    let times = [100, 400, 1_200, 900, 1_500, 2_100, 1_999];
    // Monotonic: 1200 moves the watermark to 1199, so [0, 1000) fires with
    // {100, 400} and 900 is late; 2100 fires [1000, 2000) with {1200, 1500}
    // and 1999 is late; the end of input fires [2000, 3000) with {2100}.
    let (rows, late) = tumbling_counts(WatermarkStrategy::monotonic(), &times);
    assert_eq!(rows, vec![(0, 2, 999), (1_000, 2, 1_999), (2_000, 1, 2_999)]);
    assert_eq!(late, 2);
    // A 1 s bound keeps the watermark at most at 2100 - 1001 = 1099: nothing is late.
    let (rows, late) = tumbling_counts(WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(1)), &times);
    assert_eq!(rows, vec![(0, 3, 999), (1_000, 3, 1_999), (2_000, 1, 2_999)]);
    assert_eq!(late, 0);
}

#[test]
fn end_of_bounded_input_fires_every_window() {
    // A one-hour bound keeps every watermark below the first window's end, so
    // only the end-of-input watermark can fire the windows.
    let times: Vec<i64> = (0..10_000).step_by(7).collect();
    let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(3_600));
    let (rows, late) = tumbling_counts(strategy.clone(), &times);
    let mut expected = std::collections::BTreeMap::<i64, u64>::new();
    for t in &times {
        *expected.entry(t - t % 1_000).or_default() += 1;
    }
    let expected: Vec<_> = expected.into_iter().map(|(start, n)| (start, n, start + 999)).collect();
    assert_eq!(expected.len(), 10);
    assert_eq!(rows, expected);
    assert_eq!(late, 0);

    // Session windows too: gaps of 3 s separate three sessions.
    let times = vec![0, 500, 900, 5_000, 5_100, 9_000];
    let out = run_local(1, move |env| {
        one_by_one(env, times)
            .assign_timestamps(strategy, |&t| t)
            .key_by(|_| 0u8)
            .window(WindowAssigner::session(Duration::from_secs(1)))
            .aggregate(Count, |_, w, n| (w.start, w.end, n))
    });
    let mut rows: Vec<_> = out.into_iter().map(|r| r.value).collect();
    rows.sort();
    assert_eq!(rows, vec![(0, 1_900, 3), (5_000, 6_100, 2), (9_000, 10_000, 1)]);
}

/// A source that emits `(source, time)` for `times`, one per poll with a
/// pause after each, and publishes the highest time it emitted *before* the
/// record leaves the poll (so before any watermark that record causes).
struct Published {
    source: u8,
    times: Vec<i64>,
    next: usize,
    pause: Duration,
    highest: Arc<AtomicI64>,
}

impl Source<(u8, i64)> for Published {
    fn poll(&mut self, out: &mut Vec<weir::core::Record<(u8, i64)>>) -> TaskResult<SourcePoll> {
        let Some(&t) = self.times.get(self.next) else {
            return Ok(SourcePoll::Finished);
        };
        self.highest.fetch_max(t, Ordering::SeqCst);
        out.push(weir::core::Record::new(NO_TIMESTAMP, (self.source, t)));
        self.next += 1;
        Ok(SourcePoll::Idle(self.pause))
    }
}

/// Fast input 0 carries 100 records per second of event time over [0, 20 s)
/// and ends at once; slow input 1 crawls over [0, 21 s]. The window of input 0
/// `[s, e)` may only fire once the slow input's watermark reached `e - 1`,
/// which takes a record of its at `e` or later: the sink checks that against
/// what the slow input had published when the result arrived.
fn check_slowest_input_holds_back_windows(parallel_source: bool) {
    let env = StreamEnv::new("min-watermark");
    let slow_highest = Arc::new(AtomicI64::new(i64::MIN));
    let fast: Vec<i64> = (0..20_000).step_by(10).collect();
    let slow: Vec<i64> = (0..=21_000).step_by(500).collect();
    let monotonic = WatermarkStrategy::monotonic();
    let both = if parallel_source {
        // One parallel source: subtask 0 is fast, subtask 1 is slow.
        env.set_parallelism(2);
        let h = slow_highest.clone();
        env.add_source("two-speeds", move |info| {
            // Only the slow subtask publishes its progress.
            let (times, pause, highest) = if info.index == 0 {
                (fast.clone(), Duration::ZERO, Arc::new(AtomicI64::new(i64::MIN)))
            } else {
                (slow.clone(), Duration::from_millis(3), h.clone())
            };
            Box::new(Published { source: info.index as u8, times, next: 0, pause, highest })
                as Box<dyn Source<(u8, i64)>>
        })
        .assign_timestamps(monotonic, |&(_, t)| t)
    } else {
        // The union of two sources.
        let fast = env.from_collection(fast.into_iter().map(|t| (0u8, t)).collect());
        let h = slow_highest.clone();
        let slow = env
            .add_source("slow", move |_| {
                Box::new(Published {
                    source: 1,
                    times: slow.clone(),
                    next: 0,
                    pause: Duration::from_millis(3),
                    highest: h.clone(),
                }) as Box<dyn Source<(u8, i64)>>
            })
            .set_parallelism(1);
        fast.assign_timestamps(monotonic.clone(), |&(_, t)| t).union(slow.assign_timestamps(monotonic, |&(_, t)| t))
    };
    let results = both
        .key_by(|&(source, _)| source)
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .aggregate(Count, |&source, w, n| (source, w.start, w.end, n));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let (a, h) = (arrivals.clone(), slow_highest.clone());
    for_each(results, "check", move |_, r| a.lock().unwrap().push((r.value, h.load(Ordering::SeqCst))));
    run(env);

    let arrivals = arrivals.lock().unwrap().clone();
    let mut fast_windows: Vec<_> = arrivals.iter().filter(|((s, ..), _)| *s == 0).map(|(row, _)| *row).collect();
    fast_windows.sort();
    let expected: Vec<_> = (0..20).map(|i| (0u8, i * 1_000, i * 1_000 + 1_000, 100u64)).collect();
    assert_eq!(fast_windows, expected, "every window of the fast input fires once, complete");
    for ((source, _, end, _), slow_highest) in &arrivals {
        if *source == 0 {
            assert!(
                *slow_highest >= *end,
                "window ending at {end} fired when the slow input had only reached {slow_highest}"
            );
        }
    }
}

#[test]
fn union_watermark_is_the_minimum_over_its_inputs() {
    check_slowest_input_holds_back_windows(false);
}

#[test]
fn parallel_upstream_watermark_is_the_minimum_over_subtasks() {
    check_slowest_input_holds_back_windows(true);
}

/// Source subtask 0 keeps emitting `t = 0, 100, 200, ...` (10 ms apart, so
/// it never goes idle); subtask 1 emits nothing. Both stay open until the
/// sink saw the first window's result, or until `timeout`.
fn first_window_with_an_empty_subtask(strategy: WatermarkStrategy, timeout: Duration) -> (Release, Vec<(i64, u64)>) {
    let env = StreamEnv::new("idle-subtask");
    env.set_parallelism(2);
    let release = Release::new(timeout);
    let r = release.clone();
    let ticking: Vec<i64> = (0..100_000).map(|i| i * 100).collect();
    let rows = env
        .add_source("ticking-and-empty", move |info| {
            let items = if info.index == 0 { ticking.clone() } else { Vec::new() };
            Box::new(HeldOpen::new(items, Duration::from_millis(10), r.clone())) as Box<dyn Source<i64>>
        })
        .assign_timestamps(strategy, |&t| t)
        .key_by(|_| 0u8)
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .aggregate(Count, |_, w, n| (w.start, n));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, r) = (seen.clone(), release.clone());
    for_each(rows, "release-on-first-window", move |_, rec| {
        s.lock().unwrap().push(rec.value);
        r.release();
    });
    run(env);
    let seen = seen.lock().unwrap().clone();
    (release, seen)
}

#[test]
fn idle_timeout_keeps_an_empty_subtask_from_holding_back_windows() {
    let strategy = WatermarkStrategy::monotonic().with_idle_timeout(Duration::from_millis(100));
    let (release, seen) = first_window_with_an_empty_subtask(strategy, Duration::from_secs(30));
    assert!(!release.deadline_hit(), "no window fired while the empty subtask was open: {seen:?}");
    assert_eq!(seen.first(), Some(&(0, 10)), "[0, 1000) holds t = 0, 100, ..., 900");
}

#[test]
fn without_idle_timeout_an_empty_subtask_holds_back_windows() {
    // The control experiment for the test above: the empty subtask's
    // watermark stays at the minimum, so nothing fires until it ends.
    let (release, _) = first_window_with_an_empty_subtask(WatermarkStrategy::monotonic(), Duration::from_millis(1_500));
    assert!(release.deadline_hit(), "a window fired although an input without an idle timeout had no watermark");
}

#[test]
fn finished_input_and_idle_input_do_not_hold_back_windows() {
    // Input 0 is bounded and ends at once (its last watermark is the end of
    // time); input 1 never emits and is marked idle. Nothing is left that
    // could hold the windows back, so they fire while input 1 is still open.
    let env = StreamEnv::new("ended-and-idle");
    let release = Release::new(Duration::from_secs(30));
    let strategy = WatermarkStrategy::monotonic().with_idle_timeout(Duration::from_millis(100));
    let bounded =
        env.from_collection((0..3_000).step_by(10).collect::<Vec<i64>>()).assign_timestamps(strategy.clone(), |&t| t);
    let r = release.clone();
    let idle = env
        .add_source("idle", move |_| {
            Box::new(HeldOpen::<i64>::new(Vec::new(), Duration::ZERO, r.clone())) as Box<dyn Source<i64>>
        })
        .set_parallelism(1)
        .assign_timestamps(strategy, |&t| t);
    let rows = bounded
        .union(idle)
        .key_by(|_| 0u8)
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .aggregate(Count, |_, w, n| (w.start, n));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, r) = (seen.clone(), release.clone());
    for_each(rows, "release-on-last-window", move |_, rec| {
        let mut s = s.lock().unwrap();
        s.push(rec.value);
        if s.len() == 3 {
            r.release();
        }
    });
    run(env);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert!(!release.deadline_hit(), "windows were held back by an idle input after the other one ended: {seen:?}");
    assert_eq!(seen, vec![(0, 100), (1_000, 100), (2_000, 100)]);
}

/// (key, window start, window end, count, row time, wall clock at the sink).
type ClockRow = (u32, i64, i64, u64, Timestamp, Timestamp);

#[test]
fn processing_time_windows_fire_on_the_clock_while_the_source_is_open() {
    const ITEMS: u32 = 60;
    let release = Release::new(Duration::from_secs(30));
    let env = StreamEnv::new("processing-time");
    env.set_parallelism(2);
    let r = release.clone();
    // One subtask emits a record every 10 ms; neither assigns timestamps or
    // emits a watermark before it ends, which it does only once released.
    let counts = env
        .add_source("slow", move |info| {
            let items: Vec<u32> = if info.index == 0 { (0..ITEMS).collect() } else { Vec::new() };
            Box::new(HeldOpen::new(items, Duration::from_millis(10), r.clone())) as Box<dyn Source<u32>>
        })
        .key_by(|&i| i % 2)
        .window(WindowAssigner::tumbling(Duration::from_millis(100)))
        .processing_time()
        .aggregate(Count, |&k, w, n| (k, w.start, w.end, n));
    let seen: Arc<Mutex<Vec<ClockRow>>> = Arc::default();
    let (s, r) = (seen.clone(), release.clone());
    for_each(counts, "release-when-all-counted", move |_, rec| {
        let (k, start, end, n) = rec.value;
        let mut seen = s.lock().unwrap();
        seen.push((k, start, end, n, rec.time, weir::core::time::now_ms()));
        if seen.iter().map(|r| r.3).sum::<u64>() == ITEMS as u64 {
            r.release();
        }
    });
    run(env);
    assert!(!release.deadline_hit(), "the windows did not count every record within 30 s of processing time");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.iter().map(|r| r.3).sum::<u64>(), ITEMS as u64, "{seen:?}");
    let windows: std::collections::BTreeSet<i64> = seen.iter().map(|r| r.1).collect();
    assert!(windows.len() >= 2, "600 ms of records over 100 ms windows: {seen:?}");
    for &(_, start, end, _, time, arrived) in &seen {
        assert_eq!((start % 100, end - start, time), (0, 100, end - 1), "{seen:?}");
        assert!(arrived >= end - 1, "a window fired before its end on the clock: {seen:?}");
    }
}

#[test]
fn ingestion_time_stamps_records_with_the_clock_and_windows_follow_it() {
    let before = weir::core::time::now_ms();
    let rows = run_local(2, |env| {
        env.from_collection((0..50u32).collect())
            .assign_ingestion_time(Duration::from_millis(200))
            .key_by(|&i| i % 3)
            .window(WindowAssigner::tumbling(Duration::from_secs(3600)))
            .aggregate(Count, |&k, w, n| (k, w.start, n))
    });
    let after = weir::core::time::now_ms();
    let total: u64 = rows.iter().map(|r| r.value.2).sum();
    assert_eq!(total, 50, "{rows:?}");
    for r in &rows {
        let hour = r.value.1;
        assert!(hour <= after && hour + 3_600_000 > before, "window {hour} is not this hour ({before}..{after})");
    }
}
