//! Backpressure: a slow consumer behind a small exchange queue blocks its
//! producer (counted as backpressured time) instead of letting records pile
//! up; the records in flight never exceed what the queues can hold.
//!
//! "In flight" is counted with atomics: the source adds a batch when it
//! produces it, the sink subtracts it once it has handled it. No assertion
//! is about throughput; the one time bound is generous (the sink alone sleeps
//! longer than it).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::common::chain;
use weir::core::Record;
use weir::core::operator::sink::Sink;
use weir::core::source::{Source, SourcePoll};
use weir::core::{NO_TIMESTAMP, TaskResult};
use weir::prelude::*;

#[derive(Clone, Default)]
struct InFlight {
    now: Arc<AtomicI64>,
    max: Arc<AtomicI64>,
    consumed: Arc<AtomicI64>,
}

/// Produces `total` numbers, `per_poll` at a time, as fast as it may.
struct Eager {
    next: u64,
    total: u64,
    per_poll: u64,
    in_flight: InFlight,
}

impl Source<u64> for Eager {
    fn poll(&mut self, out: &mut Vec<Record<u64>>) -> TaskResult<SourcePoll> {
        if self.next >= self.total {
            return Ok(SourcePoll::Finished);
        }
        let end = (self.next + self.per_poll).min(self.total);
        let now = self.in_flight.now.fetch_add((end - self.next) as i64, Ordering::SeqCst) + (end - self.next) as i64;
        self.in_flight.max.fetch_max(now, Ordering::SeqCst);
        out.extend((self.next..end).map(|n| Record::new(NO_TIMESTAMP, n)));
        self.next = end;
        Ok(SourcePoll::Ready)
    }
}

/// Sleeps per batch, then counts the batch as consumed.
struct Slow {
    pause: Duration,
    in_flight: InFlight,
}

impl Sink<u64> for Slow {
    fn write(&mut self, batch: Vec<Record<u64>>) -> TaskResult {
        std::thread::sleep(self.pause);
        let n = batch.len() as i64;
        self.in_flight.now.fetch_sub(n, Ordering::SeqCst);
        self.in_flight.consumed.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }
}

struct Observed {
    in_flight: InFlight,
    /// The source's backpressured time, sampled while the job ran, then at the end.
    backpressure_ns: Vec<u64>,
}

/// Runs `eager source -> [keyed pass-through] -> slow sink` and samples the
/// source task's backpressure metric every 50 ms while the job runs.
fn run_slow_job(keyed: bool, consumers: usize, batch: usize, capacity: usize, total: u64, per_poll: u64) -> Observed {
    let env = StreamEnv::new("backpressure");
    env.set_exchange(batch, capacity);
    let in_flight = InFlight::default();
    let f = in_flight.clone();
    let source = env
        .add_source("eager", move |_| {
            Box::new(Eager { next: 0, total, per_poll, in_flight: f.clone() }) as Box<dyn Source<u64>>
        })
        .set_parallelism(1);
    env.set_parallelism(consumers);
    let stream = if keyed { source.key_by(|n| n % 7).process(Pass) } else { source.rebalance() };
    let f = in_flight.clone();
    stream.sink("slow", move |_| Slow { pause: Duration::from_millis(2), in_flight: f.clone() });

    let handle = env.start().expect("job starts");
    let chains = handle.chains.clone();
    let mut backpressure_ns = Vec::new();
    while !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        backpressure_ns.push(chain(&chains, "eager").aggregate().backpressured_ns);
    }
    handle.wait().expect("job succeeds");
    backpressure_ns.push(chain(&chains, "eager").aggregate().backpressured_ns);
    Observed { in_flight, backpressure_ns }
}

#[derive(Clone)]
struct Pass;

impl KeyedProcessFunction<u64, u64, u64> for Pass {
    fn process_element(&mut self, v: u64, ctx: &mut ProcessContext<'_, u64, u64>) {
        ctx.emit(v);
    }
}

fn assert_backpressure_grew(o: &Observed) {
    let bp = &o.backpressure_ns;
    let last = *bp.last().unwrap();
    assert!(bp.windows(2).all(|w| w[0] <= w[1]), "backpressured time went backwards: {bp:?}");
    assert!(
        bp.windows(2).filter(|w| w[0] < w[1]).count() >= 2,
        "backpressured time did not grow while running: {bp:?}"
    );
    // The sink sleeps at least 2 ms per batch for 300+ batches; the producer
    // waits for most of that. 100 ms is far below.
    assert!(last >= 100_000_000, "the producer was backpressured only {} ms", last / 1_000_000);
}

#[test]
fn a_slow_sink_backpressures_the_source_and_bounds_records_in_flight() {
    // Rebalance forwards the source's batches whole: the queue holds at most
    // 2 batches of 16, the sink works on one, the source holds the one it
    // waits to send: 4 batches.
    let (capacity, per_poll, total) = (2, 16, 6_000);
    let o = run_slow_job(false, 1, 16, capacity, total, per_poll);
    let bound = (capacity as i64 + 2) * per_poll as i64;
    let max = o.in_flight.max.load(Ordering::SeqCst);
    assert_eq!(o.in_flight.consumed.load(Ordering::SeqCst), total as i64, "every record arrives");
    assert_eq!(o.in_flight.now.load(Ordering::SeqCst), 0);
    assert!(max <= bound, "{max} records in flight, more than the queues hold ({bound})");
    assert!(max > per_poll as i64, "the queue never filled: {max} in flight");
    assert_backpressure_grew(&o);
}

#[test]
fn keyed_exchange_to_several_slow_subtasks_stays_bounded() {
    // Hash partitioning cuts batches of 8 per consumer: each of the 2 input
    // queues holds 3 batches and its subtask works on one; the writer buffers
    // up to 7 per consumer; the source holds its own batch of 32.
    let (consumers, batch, capacity, per_poll, total) = (2, 8, 3, 32, 5_000);
    let o = run_slow_job(true, consumers, batch, capacity, total, per_poll);
    let bound = (consumers * (capacity + 1) * batch + consumers * (batch - 1)) as i64 + per_poll as i64;
    let max = o.in_flight.max.load(Ordering::SeqCst);
    assert_eq!(o.in_flight.consumed.load(Ordering::SeqCst), total as i64, "every record arrives");
    assert!(max <= bound, "{max} records in flight, more than the queues hold ({bound})");
    assert!(max > per_poll as i64, "the queues never filled: {max} in flight");
    assert_backpressure_grew(&o);
}
