//! Keyed process functions: value, map and list state kept per key, event-time
//! timers fired in time order as the watermark passes them, processing-time
//! timers fired by the wall clock, and deleted timers that never fire.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{HeldOpen, Release, collect_by_subtask, for_each, one_by_one, pseudo_random, run};
use serde::{Deserialize, Serialize};
use weir::core::time::now_ms;
use weir::core::{MAX_WATERMARK, MIN_WATERMARK};
use weir::prelude::*;
use weir::testing::run_local;

// ---------------------------------------------------------------- state

/// What [`Accounts`] emits per record: the key, the running sum, the count of
/// values per residue mod 4 (sorted), and the last three values.
type Snapshot = (u32, u64, Vec<(u64, u32)>, Vec<u64>);

/// Keeps a value, a map and a list per key; a value divisible by 101 clears the key.
#[derive(Clone, Default)]
struct Accounts {
    sum: Option<ValueState<u64>>,
    by_residue: Option<MapState<u64, u32>>,
    recent: Option<ListState<u64>>,
}

impl KeyedProcessFunction<u32, (u32, u64), Snapshot> for Accounts {
    fn open(&mut self, state: &mut KeyedState<u32>) {
        self.sum = Some(state.value("sum"));
        self.by_residue = Some(state.map("by-residue"));
        self.recent = Some(state.list("recent"));
    }

    fn process_element(&mut self, (key, v): (u32, u64), ctx: &mut ProcessContext<'_, u32, Snapshot>) {
        assert_eq!(*ctx.key(), key, "the context is scoped to the record's key");
        if v % 101 == 0 {
            ctx.clear_state();
            ctx.emit((key, 0, Vec::new(), Vec::new()));
            return;
        }
        let sum = {
            let mut slot = ctx.value(&self.sum.unwrap());
            let sum = slot.get_or_insert(0);
            *sum += v;
            *sum
        };
        let counts = ctx.map(&self.by_residue.unwrap());
        *counts.entry(v % 4).or_default() += 1;
        let mut counts: Vec<_> = counts.iter().map(|(&r, &n)| (r, n)).collect();
        counts.sort();
        let recent = ctx.list(&self.recent.unwrap());
        recent.push(v);
        if recent.len() > 3 {
            recent.remove(0);
        }
        let recent = recent.clone();
        ctx.emit((key, sum, counts, recent));
    }
}

#[test]
fn value_map_and_list_state_are_kept_per_key() {
    let input: Vec<(u32, u64)> =
        pseudo_random(7, 4_000).into_iter().map(|r| ((r % 13) as u32, (r >> 32) % 1_000)).collect();
    let out = {
        let input = input.clone();
        run_local(3, move |env| env.from_collection(input).key_by(|&(k, _)| k).process(Accounts::default()))
    };

    // The same bookkeeping with plain maps, one per key.
    let mut expected: BTreeMap<u32, Vec<Snapshot>> = BTreeMap::new();
    let mut sums: HashMap<u32, u64> = HashMap::new();
    let mut counts: HashMap<u32, BTreeMap<u64, u32>> = HashMap::new();
    let mut recents: HashMap<u32, Vec<u64>> = HashMap::new();
    for &(k, v) in &input {
        let row = if v % 101 == 0 {
            sums.remove(&k);
            counts.remove(&k);
            recents.remove(&k);
            (k, 0, Vec::new(), Vec::new())
        } else {
            let sum = sums.entry(k).or_default();
            *sum += v;
            let c = counts.entry(k).or_default();
            *c.entry(v % 4).or_default() += 1;
            let r = recents.entry(k).or_default();
            r.push(v);
            if r.len() > 3 {
                r.remove(0);
            }
            (k, *sum, c.iter().map(|(&a, &b)| (a, b)).collect(), r.clone())
        };
        expected.entry(k).or_default().push(row);
    }
    assert!(input.iter().any(|(_, v)| v % 101 == 0), "the input should clear some keys");

    // Records of one key arrive in order at one subtask: compare per key, in order.
    let mut actual: BTreeMap<u32, Vec<Snapshot>> = BTreeMap::new();
    for r in out {
        actual.entry(r.value.0).or_default().push(r.value);
    }
    assert_eq!(actual.len(), 13);
    for (k, rows) in &expected {
        assert_eq!(actual.get(k), Some(rows), "state of key {k}");
    }
}

// ---------------------------------------------------------------- event-time timers

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Log {
    /// A record: key, timestamp, the watermark when it arrived.
    Record(char, i64, Timestamp),
    /// A timer: key, time, the watermark that fired it.
    Timer(char, i64, Timestamp),
}

/// Registers a timer 1 s after each record; a record may delete one timer of its key.
#[derive(Clone)]
struct OneSecondLater;

impl KeyedProcessFunction<char, (char, i64, Option<i64>), Log> for OneSecondLater {
    fn process_element(&mut self, (k, t, delete): (char, i64, Option<i64>), ctx: &mut ProcessContext<'_, char, Log>) {
        let wm = ctx.current_watermark();
        ctx.emit(Log::Record(k, t, wm));
        ctx.register_event_time_timer(t + 1_000);
        if let Some(d) = delete {
            ctx.delete_event_time_timer(d);
        }
    }

    fn on_timer(&mut self, time: i64, domain: TimeDomain, ctx: &mut ProcessContext<'_, char, Log>) {
        assert_eq!(domain, TimeDomain::EventTime);
        assert_eq!(ctx.timestamp(), time);
        let (k, wm) = (*ctx.key(), ctx.current_watermark());
        ctx.emit(Log::Timer(k, time, wm));
    }
}

#[test]
fn event_time_timers_fire_in_time_order_when_the_watermark_passes() {
    let script = vec![
        ('a', 100, None),         // timer a@1100
        ('b', 200, None),         // timer b@1200
        ('a', 300, None),         // timer a@1300
        ('b', 1_250, None),       // timer b@2250; watermark 1249 fires a@1100, b@1200
        ('a', 1_260, Some(1300)), // timer a@2260; deletes a@1300, which never fires
        ('c', 3_000, None),       // timer c@4000; watermark 2999 fires b@2250, a@2260
    ]; // the end of input fires c@4000
    let out = run_local(1, move |env| {
        one_by_one(env, script)
            .assign_timestamps(WatermarkStrategy::monotonic(), |&(_, t, _)| t)
            .key_by(|&(k, _, _)| k)
            .process(OneSecondLater)
    });
    let log: Vec<Log> = out.iter().map(|r| r.value.clone()).collect();
    use Log::{Record as R, Timer as T};
    assert_eq!(
        log,
        vec![
            R('a', 100, MIN_WATERMARK),
            R('b', 200, 99),
            R('a', 300, 199),
            R('b', 1_250, 299),
            T('a', 1_100, 1_249),
            T('b', 1_200, 1_249),
            R('a', 1_260, 1_249),
            R('c', 3_000, 1_259),
            T('b', 2_250, 2_999),
            T('a', 2_260, 2_999),
            T('c', 4_000, MAX_WATERMARK),
        ]
    );
    // A timer's output carries the timer's time.
    for r in &out {
        if let Log::Timer(_, time, _) = r.value {
            assert_eq!(r.time, time);
        }
    }
}

/// Each record registers a timer at a time of its own, and every seventh
/// deletes the timer of the previous record of its key (remembered in state).
#[derive(Clone, Default)]
struct DeleteSome {
    last_timer: Option<ValueState<i64>>,
}

/// `(key, timer time, firing watermark)`.
type Fired = (u32, i64, Timestamp);

fn timer_of(i: u64) -> i64 {
    1_000 + 10 * i as i64 + 5
}

impl KeyedProcessFunction<u32, (u64, u32, i64), Fired> for DeleteSome {
    fn open(&mut self, state: &mut KeyedState<u32>) {
        self.last_timer = Some(state.value("last-timer"));
    }

    fn process_element(&mut self, (i, _, _): (u64, u32, i64), ctx: &mut ProcessContext<'_, u32, Fired>) {
        let h = self.last_timer.unwrap();
        if i % 7 == 0
            && let Some(&previous) = ctx.value(&h).get()
        {
            ctx.delete_event_time_timer(previous);
        }
        ctx.register_event_time_timer(timer_of(i));
        ctx.value(&h).set(timer_of(i));
    }

    fn on_timer(&mut self, time: i64, _: TimeDomain, ctx: &mut ProcessContext<'_, u32, Fired>) {
        let (k, wm) = (*ctx.key(), ctx.current_watermark());
        ctx.emit((k, time, wm));
    }
}

#[test]
fn many_timers_fire_once_each_in_order_and_deleted_ones_never() {
    const N: u64 = 600;
    const BOUND: i64 = 60;
    // Record i: key in 0..20, time 10 i + up to 49 (out of order within the bound).
    let input: Vec<(u64, u32, i64)> = pseudo_random(11, N as usize)
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as u64, (r % 20) as u32, 10 * i as i64 + ((r >> 8) % 50) as i64))
        .collect();

    let env = StreamEnv::new("many-timers");
    env.set_parallelism(2);
    let fired = collect_by_subtask(
        one_by_one(&env, input.clone())
            .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(BOUND as u64)), |e| {
                e.2
            })
            .key_by(|e| e.1)
            .process(DeleteSome::default()),
    );
    run(env);
    let fired = fired.lock().unwrap().clone();

    // The model: the watermark a record sees is the previous maximum minus
    // the bound minus 1; the watermarks emitted are those values, then the end
    // of time. A deletion works when the timer has not fired yet.
    let mut max_seen = i64::MIN;
    let mut emitted = Vec::new();
    let mut alive: BTreeMap<i64, u32> = BTreeMap::new();
    let mut last_of_key: HashMap<u32, i64> = HashMap::new();
    for &(i, k, t) in &input {
        let wm = if max_seen == i64::MIN { MIN_WATERMARK } else { max_seen - BOUND - 1 };
        if i % 7 == 0
            && let Some(&previous) = last_of_key.get(&k)
            && previous > wm
        {
            alive.remove(&previous);
        }
        alive.insert(timer_of(i), k);
        last_of_key.insert(k, timer_of(i));
        max_seen = max_seen.max(t);
        if emitted.last() != Some(&(max_seen - BOUND - 1)) {
            emitted.push(max_seen - BOUND - 1);
        }
    }
    emitted.push(MAX_WATERMARK);
    let expected: Vec<Fired> =
        alive.iter().map(|(&time, &k)| (k, time, *emitted.iter().find(|&&w| w >= time).unwrap())).collect();
    assert!(expected.len() < N as usize - 40, "the input should delete some timers");

    let mut actual: Vec<Fired> = fired.iter().map(|(_, r)| r.value).collect();
    actual.sort_by_key(|f| f.1);
    assert_eq!(actual, expected, "which timers fire, and at which watermark");
    for subtask in 0..2 {
        let times: Vec<i64> = fired.iter().filter(|(i, _)| *i == subtask).map(|(_, r)| r.value.1).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "subtask {subtask} fired timers out of order");
    }
}

/// Adds up the values of its key and reports the total when the key's timer fires.
#[derive(Clone, Default)]
struct TotalAtTenSeconds {
    total: Option<ValueState<i64>>,
}

impl KeyedProcessFunction<u8, (u8, i64), (u8, i64)> for TotalAtTenSeconds {
    fn open(&mut self, state: &mut KeyedState<u8>) {
        self.total = Some(state.value("total"));
    }
    fn process_element(&mut self, (_, v): (u8, i64), ctx: &mut ProcessContext<'_, u8, (u8, i64)>) {
        *ctx.value(&self.total.unwrap()).get_or_insert(0) += v;
        // The same timer for every record of a key: it exists once.
        ctx.register_event_time_timer(10_000);
    }
    fn on_timer(&mut self, _: i64, _: TimeDomain, ctx: &mut ProcessContext<'_, u8, (u8, i64)>) {
        let total = ctx.value(&self.total.unwrap()).clear().unwrap_or(0);
        let k = *ctx.key();
        ctx.emit((k, total));
    }
}

#[test]
fn a_timer_exists_once_per_key_and_time_and_sees_its_keys_state() {
    let input: Vec<(u8, i64)> = (0..1_000).map(|i| ((i % 5) as u8, i)).collect();
    let mut expected: BTreeMap<u8, i64> = BTreeMap::new();
    for &(k, v) in &input {
        *expected.entry(k).or_default() += v;
    }
    let rows = weir::testing::run_sorted(2, move |env| {
        env.from_collection(input)
            .assign_timestamps(WatermarkStrategy::monotonic(), |&(_, v)| v)
            .key_by(|&(k, _)| k)
            .process(TotalAtTenSeconds::default())
    });
    assert_eq!(rows, expected.into_iter().collect::<Vec<_>>());
}

// ---------------------------------------------------------------- processing-time timers

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Alarm {
    /// Processing-time timers registered at these times (the first then deleted).
    Registered(i64, i64),
    /// A timer fired: its time, its domain, and whether the clock had reached it.
    Fired(i64, bool, bool),
}

#[derive(Clone)]
struct AlarmClock;

impl KeyedProcessFunction<u8, u8, Alarm> for AlarmClock {
    fn process_element(&mut self, _: u8, ctx: &mut ProcessContext<'_, u8, Alarm>) {
        let now = now_ms();
        let (deleted, kept) = (now + 50, now + 100);
        ctx.register_processing_time_timer(deleted);
        ctx.register_processing_time_timer(kept);
        ctx.delete_processing_time_timer(deleted);
        // An event-time timer far in the future: only the end of input fires it.
        ctx.register_event_time_timer(1 << 50);
        ctx.emit(Alarm::Registered(deleted, kept));
    }

    fn on_timer(&mut self, time: i64, domain: TimeDomain, ctx: &mut ProcessContext<'_, u8, Alarm>) {
        let processing = domain == TimeDomain::ProcessingTime;
        let due = !processing || now_ms() >= time;
        ctx.emit(Alarm::Fired(time, processing, due));
    }
}

#[test]
fn processing_time_timers_fire_while_the_job_runs_and_deleted_ones_do_not() {
    // The source stays open until the sink saw a processing-time timer fire
    // (or 30 s pass), so the timer can only have been fired by the clock.
    let env = StreamEnv::new("processing-time");
    let release = Release::new(Duration::from_secs(30));
    let r = release.clone();
    let alarms = env
        .add_source("one-then-wait", move |_| {
            Box::new(HeldOpen::new(vec![1u8], Duration::ZERO, r.clone())) as Box<dyn weir::core::source::Source<u8>>
        })
        .set_parallelism(1)
        .assign_timestamps(WatermarkStrategy::monotonic(), |_| 0)
        .key_by(|&k| k)
        .process(AlarmClock);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l, r) = (log.clone(), release.clone());
    for_each(alarms, "release-on-alarm", move |_, rec| {
        if matches!(rec.value, Alarm::Fired(_, true, _)) {
            r.release();
        }
        l.lock().unwrap().push(rec.value);
    });
    run(env);

    assert!(!release.deadline_hit(), "no processing-time timer fired within 30 s");
    let log = log.lock().unwrap().clone();
    let Alarm::Registered(_, kept) = log[0] else { panic!("first the registration, got {log:?}") };
    assert_eq!(log[1..], [Alarm::Fired(kept, true, true), Alarm::Fired(1 << 50, false, true)]);
}

// ---------------------------------------------------------------- failing

/// Fails the job on the value 13, as a Flink function that throws.
#[derive(Clone)]
struct FailsOn13;

impl KeyedProcessFunction<u32, u32, u32> for FailsOn13 {
    fn process_element(&mut self, v: u32, ctx: &mut ProcessContext<'_, u32, u32>) {
        if v == 13 {
            ctx.fail(format!("unlucky value {v}"));
            ctx.fail("a second reason does not replace the first");
        } else {
            ctx.emit(v);
        }
    }
}

#[test]
fn a_function_fails_the_job_with_its_reason() {
    let env = StreamEnv::new("fails");
    env.set_parallelism(1);
    env.from_collection(vec![1u32, 13, 2]).key_by(|v| *v).process(FailsOn13).discard();
    let err = env.execute().expect_err("the function failed the job").to_string();
    assert!(err.contains("unlucky value 13") && !err.contains("second reason"), "{err}");
}
