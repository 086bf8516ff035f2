//! Asynchronous I/O (`DataStream::async_wait`): results in input order or as
//! they complete, never behind a watermark, bounded by the capacity, retried
//! after failures, timeouts and dropped futures, a job failed with the
//! reason once retries run out, and requests in flight resumed exactly from
//! a checkpoint at another parallelism.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use std::sync::mpsc::Sender;
use weir::prelude::*;
use weir::testing::run_local;
use weir_workloads::{Order, WorkloadStreams, bounds};

use crate::common::{Count, resumed_and_uninterrupted};

/// An answer due after a delay.
type Work = (Duration, Box<dyn FnOnce() + Send>);

/// A stand-in for an outside service: one thread answers each request when
/// its delay has passed, on a thread other than the task's, with as many
/// requests pending at once as are sent.
fn service() -> &'static Mutex<Sender<Work>> {
    static SERVICE: OnceLock<Mutex<Sender<Work>>> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Work>();
        std::thread::spawn(move || {
            let mut due: Vec<(Instant, Box<dyn FnOnce() + Send>)> = Vec::new();
            loop {
                let now = Instant::now();
                let (ready, waiting): (Vec<_>, Vec<_>) = due.into_iter().partition(|(at, _)| *at <= now);
                due = waiting;
                ready.into_iter().for_each(|(_, answer)| answer());
                let wait = due.iter().map(|(at, _)| at.saturating_duration_since(now)).min();
                match rx.recv_timeout(wait.unwrap_or(Duration::from_secs(3600))) {
                    Ok((delay, answer)) => due.push((Instant::now() + delay, answer)),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        });
        Mutex::new(tx)
    })
}

fn later(delay: Duration, answer: impl FnOnce() + Send + 'static) {
    service().lock().unwrap().send((delay, Box::new(answer))).unwrap();
}

fn options(capacity: usize, ordered: bool) -> AsyncOptions {
    AsyncOptions {
        capacity,
        timeout: Duration::from_secs(5),
        retries: 2,
        retry_delay: Duration::from_millis(1),
        ordered,
    }
}

/// Doubles each number after a delay that varies (so answers overtake each
/// other), counting the requests in flight at once.
#[derive(Clone)]
struct Doubler {
    active: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl AsyncFunction<u64, u64> for Doubler {
    fn invoke(&mut self, n: &u64, result: ResultFuture<u64>) {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let (n, active) = (*n, self.active.clone());
        later(Duration::from_micros(n * 7919 % 3000), move || {
            active.fetch_sub(1, Ordering::SeqCst);
            result.complete(Ok(vec![n * 2]));
        });
    }
}

fn doubler() -> Doubler {
    Doubler { active: Arc::default(), most: Arc::default() }
}

#[test]
fn ordered_results_keep_the_input_order_with_many_requests_in_flight() {
    let f = doubler();
    let most = f.most.clone();
    let out = run_local(1, move |env| env.from_collection((0..2000u64).collect()).async_wait(options(16, true), f));
    let values: Vec<u64> = out.into_iter().map(|r| r.value).collect();
    assert_eq!(values, (0..2000).map(|n| n * 2).collect::<Vec<_>>());
    let most = most.load(Ordering::SeqCst);
    assert!((2..=16).contains(&most), "requests in flight at once: {most}, capacity 16");
}

#[test]
fn unordered_results_are_complete_and_never_behind_a_watermark() {
    for parallelism in [1, 3] {
        let f = doubler();
        let out = run_local(parallelism, move |env| {
            env.from_collection((0..3000u64).collect())
                .assign_timestamps(WatermarkStrategy::monotonic(), |&n| n as i64)
                .async_wait(options(32, false), f)
                .key_by(|_| 0u8)
                .window(WindowAssigner::tumbling(Duration::from_millis(100)))
                .aggregate(Count, |_, w, n| (w.start, n))
        });
        // A result emitted behind a watermark would be dropped as late by the window.
        let counts: BTreeMap<i64, u64> = out.into_iter().map(|r| r.value).collect();
        assert_eq!(counts.len(), 30, "at parallelism {parallelism}: {counts:?}");
        assert!(counts.values().all(|&n| n == 100), "at parallelism {parallelism}: {counts:?}");
    }
}

/// Fails, times out (never answers) or drops the first attempt of some
/// numbers; answers the others, and every retry.
#[derive(Clone, Default)]
struct Flaky {
    attempts: Arc<Mutex<HashMap<u64, u32>>>,
    parked: Arc<Mutex<Vec<ResultFuture<u64>>>>,
}

impl AsyncFunction<u64, u64> for Flaky {
    fn invoke(&mut self, n: &u64, result: ResultFuture<u64>) {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let a = attempts.entry(*n).or_default();
            *a += 1;
            *a
        };
        let n = *n;
        match (n % 10, attempt) {
            (1, 1) => result.complete(Err(format!("{n}: the service is busy"))),
            (2, 1) => self.parked.lock().unwrap().push(result), // never answered: times out
            (3, 1) => drop(result),
            _ => later(Duration::ZERO, move || result.complete(Ok(vec![n]))),
        }
    }
}

#[test]
fn failures_timeouts_and_dropped_requests_are_retried() {
    let f = Flaky::default();
    let attempts = f.attempts.clone();
    let out = run_local(2, move |env| {
        let opts = AsyncOptions { timeout: Duration::from_millis(50), ..options(8, true) };
        env.from_collection((0..200u64).collect()).async_wait(opts, f)
    });
    let mut values: Vec<u64> = out.into_iter().map(|r| r.value).collect();
    values.sort();
    assert_eq!(values, (0..200).collect::<Vec<_>>(), "every number once");
    let attempts = attempts.lock().unwrap();
    for n in 0..200u64 {
        let expected = if (1..=3).contains(&(n % 10)) { 2 } else { 1 };
        assert_eq!(attempts[&n], expected, "attempts for {n}");
    }
}

#[test]
fn a_request_that_keeps_failing_fails_the_job_with_its_reason() {
    let env = StreamEnv::new("async-failing");
    env.from_collection((0..100u64).collect())
        .async_wait(options(4, true), |n: &u64, result: ResultFuture<u64>| {
            let n = *n;
            later(Duration::ZERO, move || {
                result.complete(if n == 77 { Err("no customer 77".into()) } else { Ok(vec![n]) })
            })
        })
        .discard();
    let err = env.execute().expect_err("the job fails").to_string();
    assert!(err.contains("async request failed after 3 attempt(s): no customer 77"), "{err}");
}

const JOB: &str = "async-orders";

/// Orders (as fast as `rate` allows) through an async lookup that answers
/// after 5 ms (about 50 requests in flight per subtask at 10,000 orders a
/// second), then into exactly-once part files.
fn enrich(env: &StreamEnv, out: &Path, events: u64, rate: Option<f64>) {
    env.orders(Some(events), rate)
        .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(bounds::ORDERS), |o| o.time)
        .async_wait(options(50, false), |o: &Order, result: ResultFuture<(String, i64)>| {
            let row = (o.order_id.to_string(), o.amount * 2);
            later(Duration::from_millis(5), move || result.complete(Ok(vec![row])))
        })
        .write_json(out);
}

/// How many times each row was committed (the orders stream re-sends some orders).
fn committed(dir: &Path) -> BTreeMap<(String, i64), usize> {
    let mut rows = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with("part-") {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let row: (String, i64) = serde_json::from_str(line).unwrap();
            *rows.entry(row).or_default() += 1;
        }
    }
    rows
}

#[test]
fn requests_in_flight_resume_exactly_from_a_checkpoint_at_another_parallelism() {
    let (resumed, expected) =
        resumed_and_uninterrupted(JOB, 20_000.0, |env, out, rate| enrich(env, out, 40_000, rate), committed);
    assert!(expected.len() > 30_000, "{}", expected.len());
    assert_eq!(resumed, expected);
}
