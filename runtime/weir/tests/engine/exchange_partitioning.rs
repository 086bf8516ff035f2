//! How records are spread over subtasks: `key_by` keeps a key on one subtask
//! (the owner of its key group), `rebalance` spreads batches, `broadcast`
//! copies every record to every subtask, `union` merges streams, and a job's
//! results do not depend on its parallelism.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use weir_workloads::WorkloadStreams;

use crate::common::{Count, CountSum, collect_by_subtask, run};
use weir::core::keygroup::{DEFAULT_MAX_PARALLELISM, KeyGroupRange, hash_key, key_group};
use weir::prelude::*;
use weir::testing::run_sorted;
use weir_workloads::{Bid, Order, OrderId, Region, bid, order};

/// Passes records through unchanged (a keyed vertex to observe key_by's placement).
#[derive(Clone)]
struct Pass;

impl<K: weir::core::state::Key, T: weir::core::Data> KeyedProcessFunction<K, T, T> for Pass {
    fn process_element(&mut self, value: T, ctx: &mut ProcessContext<'_, K, T>) {
        ctx.emit(value);
    }
}

#[test]
fn key_by_sends_every_record_of_a_key_to_the_owner_of_its_key_group() {
    const N: u64 = 20_000;
    for parallelism in [2, 3, 4] {
        let env = StreamEnv::new("key-by");
        env.set_parallelism(parallelism);
        let seen = collect_by_subtask(env.bids(Some(N), None).key_by(|b| b.auction).process(Pass));
        run(env);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len() as u64, N);
        let mut subtask_of: HashMap<i64, BTreeSet<usize>> = HashMap::new();
        for (subtask, r) in seen.iter() {
            subtask_of.entry(r.value.auction).or_default().insert(*subtask);
        }
        assert!(subtask_of.len() > 100);
        for (auction, subtasks) in &subtask_of {
            assert_eq!(subtasks.len(), 1, "auction {auction} went to subtasks {subtasks:?}");
            // The documented placement: group = hash(key) mod max parallelism,
            // subtask i owns a contiguous range of groups.
            let group = key_group(hash_key(auction), DEFAULT_MAX_PARALLELISM);
            let owner = subtasks.first().copied().unwrap();
            assert!(
                KeyGroupRange::for_subtask(owner, parallelism, DEFAULT_MAX_PARALLELISM).contains(group),
                "auction {auction} (key group {group}) is not owned by subtask {owner} of {parallelism}"
            );
        }
        let used: BTreeSet<usize> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(used.len(), parallelism, "keys spread over every subtask");
    }
}

#[test]
fn rebalance_spreads_batches_over_every_subtask() {
    // One source subtask polls 10 blocks of 1024 events; rebalance deals the
    // batches round-robin over 4 subtasks.
    const N: u64 = 10 * 1_024;
    let env = StreamEnv::new("rebalance");
    let events = env.datagen("numbers", |n| n, Some(N), None);
    env.set_parallelism(4);
    let seen = collect_by_subtask(events.rebalance().map(|n| n * 2));
    run(env);
    let seen = seen.lock().unwrap();
    let mut values: Vec<u64> = seen.iter().map(|(_, r)| r.value).collect();
    values.sort();
    assert_eq!(values, (0..N).map(|n| n * 2).collect::<Vec<_>>(), "every record exactly once");
    let mut per_subtask = [0u64; 4];
    for (s, _) in seen.iter() {
        per_subtask[*s] += 1;
    }
    assert!(per_subtask.iter().all(|&n| n >= 2 * 1_024), "uneven: {per_subtask:?}");
}

#[test]
fn broadcast_copies_every_record_to_every_subtask() {
    let env = StreamEnv::new("broadcast");
    let items: Vec<u32> = (0..500).collect();
    let stream = env.from_collection(items.clone());
    env.set_parallelism(3);
    let seen = collect_by_subtask(stream.broadcast().map(|x| x + 1));
    run(env);
    let seen = seen.lock().unwrap();
    for subtask in 0..3 {
        let mut got: Vec<u32> = seen.iter().filter(|(s, _)| *s == subtask).map(|(_, r)| r.value).collect();
        got.sort();
        assert_eq!(got, items.iter().map(|x| x + 1).collect::<Vec<_>>(), "subtask {subtask}");
    }
}

#[test]
fn union_merges_streams_of_any_parallelism() {
    let out = run_sorted(2, |env| {
        let a = env.from_collection((0..1_000u64).collect());
        let b = env.datagen("generated", |n| 10_000 + n, Some(5_000), None);
        let c = env.from_collection(vec![7u64, 7, 7]).map(|x| x * 100_000);
        a.union(b).union(c).filter(|x| x % 3 != 1)
    });
    let mut expected: Vec<u64> = (0..1_000).chain(10_000..15_000).chain([700_000; 3]).filter(|x| x % 3 != 1).collect();
    expected.sort();
    assert_eq!(out, expected);
}

// ---------------------------------------------------------------- parallelism

/// Drops repeated order ids (keyed value state).
#[derive(Clone, Default)]
struct FirstOnly {
    seen: Option<ValueState<bool>>,
}

impl KeyedProcessFunction<OrderId, Order, Order> for FirstOnly {
    fn open(&mut self, state: &mut KeyedState<OrderId>) {
        self.seen = Some(state.value("seen"));
    }
    fn process_element(&mut self, o: Order, ctx: &mut ProcessContext<'_, OrderId, Order>) {
        let mut slot = ctx.value(&self.seen.unwrap());
        if slot.get().is_none() {
            slot.set(true);
            ctx.emit(o);
        }
    }
}

type RegionWindow = (Region, i64, u64, i64);

/// Dedup, then count and sum per region and 10 s window; and the hottest
/// auction per 2 s of bids (two keyed stages, a window over window results).
fn orders_and_bids(parallelism: usize) -> (Vec<RegionWindow>, Vec<(i64, i64, u64)>) {
    let five = WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5));
    let orders = run_sorted(parallelism, |env| {
        env.orders(Some(40_000), None)
            .assign_timestamps(five.clone(), |o| o.time)
            .key_by(|o| o.order_id)
            .process(FirstOnly::default())
            .key_by(|o| o.region)
            .window(WindowAssigner::tumbling(Duration::from_secs(10)))
            .aggregate(CountSum, |&r, w, (n, sum)| (r, w.start, n, sum))
    });
    let bids = run_sorted(parallelism, |env| {
        env.bids(Some(60_000), None)
            .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(2)), |b: &Bid| b.time)
            .key_by(|b| b.auction)
            .window(WindowAssigner::tumbling(Duration::from_secs(2)))
            .aggregate(Count, |&a, w, n| (w.end, a, n))
            .key_by(|&(end, _, _)| end)
            .window(WindowAssigner::tumbling(Duration::from_secs(2)))
            .reduce(
                |a, b| if (b.2, std::cmp::Reverse(b.1)) > (a.2, std::cmp::Reverse(a.1)) { *b } else { a },
                |_, _, &r| r,
            )
    });
    (orders, bids)
}

#[test]
fn parallelism_one_to_four_give_identical_results() {
    let reference = orders_and_bids(1);

    // The reference against a batch computation of the same.
    let mut seen = BTreeSet::new();
    let mut windows: BTreeMap<(Region, i64), (u64, i64)> = BTreeMap::new();
    for o in (0..40_000).map(order) {
        if seen.insert(o.order_id) {
            let w = windows.entry((o.region, o.time.div_euclid(10_000) * 10_000)).or_default();
            w.0 += 1;
            w.1 += o.amount;
        }
    }
    let expected: Vec<RegionWindow> = windows.into_iter().map(|((r, s), (n, sum))| (r, s, n, sum)).collect();
    assert_eq!(reference.0, expected);
    let mut counts: BTreeMap<(i64, i64), u64> = BTreeMap::new();
    for b in (0..60_000).map(bid) {
        *counts.entry((b.time.div_euclid(2_000) * 2_000 + 2_000, b.auction)).or_default() += 1;
    }
    let mut hottest: BTreeMap<i64, (i64, u64)> = BTreeMap::new();
    for ((end, auction), n) in counts {
        let best = hottest.entry(end).or_insert((auction, n));
        if n > best.1 || (n == best.1 && auction < best.0) {
            *best = (auction, n);
        }
    }
    let expected: Vec<_> = hottest.into_iter().map(|(end, (a, n))| (end, a, n)).collect();
    assert_eq!(reference.1, expected);

    for parallelism in 2..=4 {
        assert!(orders_and_bids(parallelism) == reference, "parallelism {parallelism} differs from parallelism 1");
    }
}
