//! Tumbling and sliding event-time windows with each kind of window function
//! (aggregate, reduce, process, a hand-written `WindowFunction`), checked
//! against the same computation done in batch over the generated events.

use std::collections::BTreeMap;
use std::time::Duration;
use weir_workloads::WorkloadStreams;

use crate::common::{Count, CountSum};
use weir::prelude::*;
use weir::testing::run_local;
use weir_workloads::{Order, Region, order};

const ORDERS: u64 = 30_000;
const TEN_SECONDS: i64 = 10_000;

/// The orders stream with event time (5 s bound: no order is ever late).
fn orders(env: &StreamEnv, n: u64) -> DataStream<Order> {
    env.orders(Some(n), None)
        .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5)), |o| o.time)
}

/// The orders of each (region, 10 s window start), in batch.
fn orders_by_window(n: u64) -> BTreeMap<(Region, i64), Vec<Order>> {
    let mut by_window: BTreeMap<(Region, i64), Vec<Order>> = BTreeMap::new();
    for o in (0..n).map(order) {
        by_window.entry((o.region, o.time.div_euclid(TEN_SECONDS) * TEN_SECONDS)).or_default().push(o);
    }
    by_window
}

/// Every result carries its window's last millisecond as its timestamp.
fn assert_stamped_with_window_end<T: std::fmt::Debug>(rows: &[Record<T>], end: impl Fn(&T) -> i64) {
    for r in rows {
        assert_eq!(r.time, end(&r.value) - 1, "result {:?} carries timestamp {}", r.value, r.time);
    }
}

#[test]
fn tumbling_aggregate_counts_and_sums_each_window() {
    let out = run_local(2, |env| {
        orders(env, ORDERS)
            .key_by(|o| o.region)
            .window(WindowAssigner::tumbling(Duration::from_secs(10)))
            .aggregate(CountSum, |&region, w, (count, sum)| (region, w.start, w.end, count, sum))
    });
    assert_stamped_with_window_end(&out, |row| row.2);
    let mut rows: Vec<_> = out.into_iter().map(|r| r.value).collect();
    rows.sort();
    let expected: Vec<_> = orders_by_window(ORDERS)
        .into_iter()
        .map(|((region, start), os)| {
            (region, start, start + TEN_SECONDS, os.len() as u64, os.iter().map(|o| o.amount).sum())
        })
        .collect();
    assert!(expected.len() >= 12, "several windows per region");
    assert_eq!(rows, expected);
}

/// The larger order: higher amount, ties to the smaller id.
fn larger(a: Order, b: &Order) -> Order {
    if (b.amount, std::cmp::Reverse(b.order_id)) > (a.amount, std::cmp::Reverse(a.order_id)) { b.clone() } else { a }
}

#[test]
fn tumbling_reduce_keeps_the_largest_order_of_each_window() {
    let out = run_local(3, |env| {
        orders(env, ORDERS)
            .key_by(|o| o.region)
            .window(WindowAssigner::tumbling(Duration::from_secs(10)))
            .reduce(larger, |&region, w, o| (region, w.start, w.end, o.order_id.0, o.amount))
    });
    assert_stamped_with_window_end(&out, |row| row.2);
    let mut rows: Vec<_> = out.into_iter().map(|r| r.value).collect();
    rows.sort();
    let expected: Vec<_> = orders_by_window(ORDERS)
        .into_iter()
        .map(|((region, start), os)| {
            let best = os.into_iter().reduce(|a, b| larger(a, &b)).unwrap();
            (region, start, start + TEN_SECONDS, best.order_id.0, best.amount)
        })
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn tumbling_process_sees_every_element_of_its_window() {
    let out = run_local(2, |env| {
        orders(env, ORDERS).key_by(|o| o.region).window(WindowAssigner::tumbling(Duration::from_secs(10))).process(
            |&region, w, orders: &[Order], emit: &mut dyn FnMut((Region, i64, i64, Vec<u64>))| {
                let mut ids: Vec<u64> = orders.iter().map(|o| o.order_id.0).collect();
                ids.sort();
                emit((region, w.start, w.end, ids));
            },
        )
    });
    assert_stamped_with_window_end(&out, |row| row.2);
    let mut rows: Vec<_> = out.into_iter().map(|r| r.value).collect();
    rows.sort();
    let expected: Vec<_> = orders_by_window(ORDERS)
        .into_iter()
        .map(|((region, start), os)| {
            let mut ids: Vec<u64> = os.iter().map(|o| o.order_id.0).collect();
            ids.sort();
            (region, start, start + TEN_SECONDS, ids)
        })
        .collect();
    assert_eq!(rows, expected);
}

/// A numbered event: its number, a key, and an event time that runs up to 1.5 s out of order.
fn event(n: u64) -> (u64, u8, i64) {
    let r = weir::core::keygroup::mix64(n);
    (n, (r % 3) as u8, n as i64 - (r >> 40) as i64 % 1_500)
}

#[test]
fn sliding_puts_each_record_into_size_over_slide_windows() {
    const N: u64 = 12_000;
    let out = run_local(2, |env| {
        env.datagen("events", event, Some(N), None)
            .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(1_500)), |e| e.2)
            .key_by(|e| e.1)
            .window(WindowAssigner::sliding(Duration::from_secs(2), Duration::from_millis(500)))
            .process(|&key, w, events: &[(u64, u8, i64)], emit: &mut dyn FnMut((u8, i64, i64, Vec<u64>))| {
                let mut ns: Vec<u64> = events.iter().map(|e| e.0).collect();
                ns.sort();
                emit((key, w.start, w.end, ns));
            })
    });
    assert_stamped_with_window_end(&out, |row| row.2);
    let mut rows: Vec<_> = out.into_iter().map(|r| r.value).collect();
    rows.sort();

    // In batch: the windows [s, s + 2000) with s a multiple of 500 holding t.
    let mut expected: BTreeMap<(u8, i64), Vec<u64>> = BTreeMap::new();
    for (n, key, t) in (0..N).map(event) {
        let mut start = t.div_euclid(500) * 500;
        while start > t - 2_000 {
            expected.entry((key, start)).or_default().push(n);
            start -= 500;
        }
    }
    let expected: Vec<_> = expected
        .into_iter()
        .map(|((k, s), mut ns)| {
            ns.sort();
            (k, s, s + 2_000, ns)
        })
        .collect();
    assert_eq!(rows, expected);

    // And directly: every event is in exactly size / slide = 4 windows.
    let mut windows_per_event = vec![0u32; N as usize];
    for (_, _, _, ns) in &rows {
        for &n in ns {
            windows_per_event[n as usize] += 1;
        }
    }
    assert!(windows_per_event.iter().all(|&c| c == 4), "an event is not in exactly 4 windows");
}

#[test]
fn window_all_reduces_the_whole_stream_in_one_subtask() {
    let out = run_local(3, |env| {
        orders(env, ORDERS)
            .window_all(WindowAssigner::tumbling(Duration::from_secs(10)))
            .reduce(larger, |_, w, o| (w.start, o.order_id.0, o.amount))
    });
    let mut rows: Vec<_> = out.into_iter().map(|r| r.value).collect();
    rows.sort();
    let mut best: BTreeMap<i64, Order> = BTreeMap::new();
    for o in (0..ORDERS).map(order) {
        let start = o.time.div_euclid(TEN_SECONDS) * TEN_SECONDS;
        let b = match best.remove(&start) {
            None => o,
            Some(b) => larger(b, &o),
        };
        best.insert(start, b);
    }
    let expected: Vec<_> = best.into_iter().map(|(s, o)| (s, o.order_id.0, o.amount)).collect();
    assert_eq!(rows, expected);
}

/// A hand-written window function: emits the smallest (`false`) and the largest (`true`) amount as two rows.
#[derive(Clone)]
struct MinMax;

impl WindowFunction<Region, Order> for MinMax {
    type Acc = Option<(i64, i64)>;
    type Out = (Region, i64, bool, i64);
    fn create(&self) -> Self::Acc {
        None
    }
    fn add(&self, acc: &mut Self::Acc, o: &Order) {
        *acc = Some(acc.map_or((o.amount, o.amount), |(lo, hi)| (lo.min(o.amount), hi.max(o.amount))));
    }
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
        if let Some((lo, hi)) = other {
            *acc = Some(acc.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
    }
    fn emit(&mut self, region: &Region, w: &Window, acc: &Self::Acc, out: &mut dyn FnMut(Self::Out)) {
        if let Some((lo, hi)) = acc {
            out((*region, w.start, false, *lo));
            out((*region, w.start, true, *hi));
        }
    }
}

#[test]
fn apply_runs_a_hand_written_window_function() {
    let out = run_local(2, |env| {
        orders(env, ORDERS).key_by(|o| o.region).window(WindowAssigner::tumbling(Duration::from_secs(10))).apply(MinMax)
    });
    let mut rows: Vec<_> = out.into_iter().map(|r| r.value).collect();
    rows.sort();
    let mut expected = Vec::new();
    for ((region, start), os) in orders_by_window(ORDERS) {
        expected.push((region, start, true, os.iter().map(|o| o.amount).max().unwrap()));
        expected.push((region, start, false, os.iter().map(|o| o.amount).min().unwrap()));
    }
    expected.sort();
    assert_eq!(rows, expected);
}

#[test]
fn windows_are_aligned_to_the_epoch_also_before_it() {
    // Event times around 0 (and below it): windows are [-1000, 0), [0, 1000), ...
    let times = vec![-1_500, -1, 0, 999, 1_000, -1_000];
    let out = run_local(1, move |env| {
        env.from_collection(times)
            .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(10)), |&t| t)
            .key_by(|_| 0u8)
            .window(WindowAssigner::tumbling(Duration::from_secs(1)))
            .aggregate(Count, |_, w, n| (w.start, w.end, n))
    });
    let mut rows: Vec<_> = out.into_iter().map(|r| r.value).collect();
    rows.sort();
    assert_eq!(rows, vec![(-2_000, -1_000, 1), (-1_000, 0, 2), (0, 1_000, 2), (1_000, 2_000, 1)]);
}

/// `ApproxCountDistinct` over sliding windows (sketches of six 10 s slices
/// merged per window, at parallelism 2): within 2% of the exact distinct count.
#[test]
fn approximate_distinct_counts_are_within_two_percent_of_the_exact_ones() {
    const N: u64 = 200_000;
    let out = run_local(2, |env| {
        orders(env, N)
            .key_by(|o| o.region)
            .window(WindowAssigner::sliding(Duration::from_secs(60), Duration::from_secs(10)))
            .aggregate(ApproxCountDistinct(|o: &Order| o.order_id), |&region, w, estimate| (region, w.start, estimate))
    });
    let mut exact: BTreeMap<(Region, i64), std::collections::HashSet<u64>> = BTreeMap::new();
    for o in (0..N).map(order) {
        let mut start = o.time.div_euclid(TEN_SECONDS) * TEN_SECONDS;
        while start > o.time - 60_000 {
            exact.entry((o.region, start)).or_default().insert(o.order_id.0);
            start -= TEN_SECONDS;
        }
    }
    assert_eq!(out.len(), exact.len());
    for r in &out {
        let (region, start, estimate) = r.value;
        let distinct = exact[&(region, start)].len() as f64;
        let error = (estimate as f64 - distinct).abs() / distinct;
        assert!(error <= 0.02, "{region:?} window at {start}: estimated {estimate} for {distinct}");
    }
    assert!(exact.values().filter(|ids| ids.len() > 10_000).count() >= 20, "large windows");
}
