//! `weir bench`: the workloads of `bench/WORKLOADS.md`, written against the
//! Rust API, with the Flink baseline's one-line report.
//!
//! Each query ends in a checksum sink that folds `mix(row_hash)` of every
//! output row into a wrapping sum (order-independent), so results compare
//! exactly with the oracle and with Flink.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use weir_workloads::WorkloadStreams;

use weir::core::TaskResult;
use weir::core::checkpoint::coordinator::{CheckpointConfig, CheckpointStats};
use weir::core::executor::{ExecuteOptions, JobHandle};
use weir::core::keygroup::mix64;
use weir::core::operator::sink::Sink;
use weir::prelude::*;
use weir_workloads::{Bid, Order, OrderId, Payment, bounds};

use crate::bench_window_latency::{Arrivals, WatermarkProbe, WindowClock};

/// The workloads `weir bench` runs.
pub const WORKLOADS: &[&str] = &[
    "orders-window",
    "orders-dedup",
    "orders-sliding",
    "orders-payments",
    "q0",
    "q0-rebalance",
    "q0-keyed",
    "q1",
    "q1-lookup",
    "q2",
    "q5",
    "q7",
];

/// Output rows and their checksum, shared by the sink's subtasks; with
/// latency measured, each row's time from its creation at the source.
#[derive(Clone, Default)]
pub struct Checksum {
    rows: Arc<AtomicU64>,
    sum: Arc<AtomicU64>,
    latencies_us: Arc<Mutex<Vec<u32>>>,
    /// Window rows' latencies, when the rows were timed from the watermark that fired them.
    windows: WindowClock,
}

impl Checksum {
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
    pub fn value(&self) -> i64 {
        self.sum.load(Ordering::Relaxed) as i64
    }

    /// The `qs`-quantiles (each 0..=1) of the rows' latencies, in ms; `None`
    /// when none was measured.
    pub fn latencies_ms<const N: usize>(&self, qs: [f64; N]) -> Option<[f64; N]> {
        // Read, not moved: the window rows' latencies are worked out afresh on each call.
        let mut all = self.latencies_us.lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.extend(self.windows.latencies_us());
        if all.is_empty() {
            return None;
        }
        all.sort_unstable();
        Some(qs.map(|q| all[((all.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0))
    }
}

/// The clock of latency stamps: nanoseconds since the first stamp of the process.
pub(crate) fn stamp_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A row with the moment its input was created at the source, for latency.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Stamped<T>(T, u64);

/// Folds `mix(hash(row))` of each row; publishes at the end of input.
struct ChecksumSink<F> {
    hash: F,
    rows: u64,
    sum: u64,
    total: Checksum,
}

impl<F> ChecksumSink<F> {
    fn add<T>(&mut self, row: &T)
    where
        F: Fn(&T) -> i64,
    {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(mix64((self.hash)(row) as u64));
    }
}

impl<T, F: Fn(&T) -> i64 + Send> Sink<T> for ChecksumSink<F> {
    fn write(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        batch.iter().for_each(|r| self.add(&r.value));
        Ok(())
    }
    fn finish(&mut self) -> TaskResult {
        self.total.rows.fetch_add(self.rows, Ordering::Relaxed);
        self.total.sum.fetch_add(self.sum, Ordering::Relaxed);
        Ok(())
    }
}

/// The same, for stamped rows: also records each row's latency.
struct StampedSink<F> {
    rows: ChecksumSink<F>,
    latencies_us: Vec<u32>,
}

impl<T, F: Fn(&T) -> i64 + Send> Sink<Stamped<T>> for StampedSink<F> {
    fn write(&mut self, batch: Vec<Record<Stamped<T>>>) -> TaskResult {
        let now = stamp_ns();
        for r in &batch {
            self.rows.add(&r.value.0);
            self.latencies_us.push((now.saturating_sub(r.value.1) / 1000).min(u32::MAX as u64) as u32);
        }
        Ok(())
    }
    fn finish(&mut self) -> TaskResult {
        let mine = std::mem::take(&mut self.latencies_us);
        self.rows.total.latencies_us.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
        self.rows.finish()
    }
}

/// The same, for window rows: notes when each row's window (by its last
/// millisecond, `last_ms(row)`) arrived, for [`WindowClock`].
struct WindowRowSink<F, L> {
    rows: ChecksumSink<F>,
    last_ms: L,
    arrivals: Arrivals,
}

impl<T, F: Fn(&T) -> i64 + Send, L: Fn(&T) -> Timestamp + Send> Sink<T> for WindowRowSink<F, L> {
    fn write(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        let now = stamp_ns();
        for r in &batch {
            self.rows.add(&r.value);
            self.arrivals.note((self.last_ms)(&r.value), now);
        }
        Ok(())
    }
    fn finish(&mut self) -> TaskResult {
        self.arrivals.publish();
        self.rows.finish()
    }
}

fn sink<F>(hash: &F, total: &Checksum) -> ChecksumSink<F>
where
    F: Clone,
{
    ChecksumSink { hash: hash.clone(), rows: 0, sum: 0, total: total.clone() }
}

fn checksum<T: weir::core::Data>(
    stream: DataStream<T>,
    hash: impl Fn(&T) -> i64 + Clone + Send + Sync + 'static,
) -> Checksum {
    let total = Checksum::default();
    checksum_into(stream, hash, &total);
    total
}

/// Folds `stream`'s rows into `total`.
pub fn checksum_into<T: weir::core::Data>(
    stream: DataStream<T>,
    hash: impl Fn(&T) -> i64 + Clone + Send + Sync + 'static,
    total: &Checksum,
) {
    let t = total.clone();
    stream.sink("checksum", move |_| sink(&hash, &t));
}

/// A per-record query (`rows` of the bids) into the checksum, each row stamped
/// at its bid's creation (in the source's chain, right after it) and its
/// latency taken at the sink, one exchange (a rebalance) away: the latency
/// includes the rest of the source's batch, a thread hop and the sink's queue.
fn stamped_checksum<T: weir::core::Data>(
    bids: DataStream<Bid>,
    rows: impl Fn(DataStream<Stamped<Bid>>) -> DataStream<Stamped<T>>,
    hash: impl Fn(&T) -> i64 + Clone + Send + Sync + 'static,
) -> Checksum {
    let total = Checksum::default();
    let t = total.clone();
    rows(bids.map(|b| Stamped(b, stamp_ns())))
        .rebalance()
        .sink("checksum", move |_| StampedSink { rows: sink(&hash, &t), latencies_us: Vec::new() });
    total
}

/// q1's row of a bid: the auction and the price in dollars.
fn q1_row(b: &Bid) -> (i64, i64) {
    (b.auction, (b.price as f64 * 0.908) as i64)
}

fn q1_hash(&(auction, dol): &(i64, i64)) -> i64 {
    auction.wrapping_mul(31).wrapping_add(dol)
}

/// Count and sum of `amount` per window.
#[derive(Clone)]
pub struct CountSum;

impl AggregateFunction<Order> for CountSum {
    type Acc = (i64, i64);
    type Result = (i64, i64);
    fn create(&self) -> (i64, i64) {
        (0, 0)
    }
    #[inline]
    fn add(&self, acc: &mut (i64, i64), o: &Order) {
        acc.0 += 1;
        acc.1 = acc.1.wrapping_add(o.amount);
    }
    fn merge(&self, acc: &mut (i64, i64), other: (i64, i64)) {
        acc.0 += other.0;
        acc.1 = acc.1.wrapping_add(other.1);
    }
    fn result(&self, acc: &(i64, i64)) -> (i64, i64) {
        *acc
    }
}

/// Counts records per window.
#[derive(Clone)]
pub struct Count;

impl<T> AggregateFunction<T> for Count {
    type Acc = i64;
    type Result = i64;
    fn create(&self) -> i64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut i64, _: &T) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut i64, other: i64) {
        *acc += other;
    }
    fn result(&self, acc: &i64) -> i64 {
        *acc
    }
}

/// Emits each record as it is: a keyed step that does nothing but be one.
#[derive(Clone)]
struct PassOn;

impl KeyedProcessFunction<i64, i64, i64> for PassOn {
    fn process_element(&mut self, value: i64, ctx: &mut ProcessContext<'_, i64, i64>) {
        ctx.emit(value);
    }
}

/// Drops repeated order ids (keyed value state, as the Flink baseline does).
#[derive(Clone, Default)]
pub struct Dedup {
    seen: Option<ValueState<()>>,
}

impl KeyedProcessFunction<OrderId, Order, Order> for Dedup {
    fn open(&mut self, state: &mut KeyedState<OrderId>) {
        self.seen = Some(state.value("seen"));
    }
    fn process_element(&mut self, order: Order, ctx: &mut ProcessContext<'_, OrderId, Order>) {
        let seen = self.seen.expect("opened");
        if ctx.value(&seen).set_if_absent(()) {
            ctx.emit(order);
        }
    }
}

/// The bid that wins a window: highest price, ties to the smaller auction.
fn higher(a: Bid, b: &Bid) -> Bid {
    if b.price > a.price || (b.price == a.price && b.auction < a.auction) { b.clone() } else { a }
}

/// Count and sum of the orders per region and one-minute window, into the checksum.
fn region_counts(orders: DataStream<Order>) -> Checksum {
    region_window_counts(orders, WindowAssigner::tumbling(Duration::from_secs(60)))
}

/// A region's window row: region, window start, count, sum.
type RegionRow = (i64, Timestamp, i64, i64);

/// Count and sum of the orders per region and window.
fn region_window_rows(orders: DataStream<Order>, windows: WindowAssigner) -> DataStream<RegionRow> {
    orders
        .key_by(|o| o.region)
        .window(windows)
        .aggregate(CountSum, |region, w, (count, sum)| (region.index() as i64, w.start, count, sum))
}

fn region_row_hash(&(r, start, count, sum): &RegionRow) -> i64 {
    r.wrapping_mul(31).wrapping_add(start.wrapping_mul(7)).wrapping_add(count.wrapping_mul(3)).wrapping_add(sum)
}

/// Count and sum of the orders per region and window, into the checksum.
fn region_window_counts(orders: DataStream<Order>, windows: WindowAssigner) -> Checksum {
    checksum(region_window_rows(orders, windows), region_row_hash)
}

/// orders-window with each row's latency from the watermark that fired its
/// window (see [`crate::bench_window_latency`]).
fn timed_region_counts(orders: DataStream<Order>) -> Checksum {
    let total = Checksum::default();
    let clock = total.windows.clone();
    let size = Duration::from_secs(60);
    let orders = orders.transform("watermark probe", move |_| WatermarkProbe::new(&clock));
    let t = total.clone();
    let last_ms = move |&(_, start, _, _): &RegionRow| start + size.as_millis() as i64 - 1;
    region_window_rows(orders, WindowAssigner::tumbling(size)).sink("checksum", move |_| WindowRowSink {
        rows: sink(&region_row_hash, &t),
        last_ms,
        arrivals: t.windows.arrivals(),
    });
    total
}

/// Builds `query` over `events` events on `env`, its sources at `rate` events
/// per second when given; returns the checksum it will fill (with latencies:
/// q1 and orders-window with a rate).
pub fn build(env: &StreamEnv, query: &str, events: u64, rate: Option<f64>) -> Option<Checksum> {
    let secs = Duration::from_secs;
    Some(match query {
        "orders-window" | "orders-dedup" => {
            let mut orders = env
                .orders(Some(events), rate)
                .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(bounds::ORDERS), |o| o.time);
            if query == "orders-dedup" {
                orders = orders.key_by(|o| o.order_id).process(Dedup::default());
            } else if rate.is_some() {
                return Some(timed_region_counts(orders));
            }
            region_counts(orders)
        }
        "orders-sliding" => {
            let orders = env
                .orders(Some(events), rate)
                .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(bounds::ORDERS), |o| o.time);
            region_window_counts(orders, WindowAssigner::sliding(secs(3600), secs(10)))
        }
        "orders-payments" => {
            // Both sources in one alignment group: neither runs far ahead of the
            // other, so the join buffers a bounded span of event time.
            let aligned =
                |bound| WatermarkStrategy::bounded_out_of_orderness(bound).with_alignment("orders-payments", secs(5));
            let orders = env
                .orders(Some(events), rate)
                .assign_timestamps(aligned(bounds::ORDERS), |o| o.time)
                .key_by(|o| o.order_id);
            let payments = env
                .payments(Some(events), rate)
                .assign_timestamps(aligned(bounds::PAYMENTS), |p| p.time)
                .key_by(|p| p.order_id);
            let paid = orders
                .interval_join(payments)
                .between(0, 120_000)
                .process(|o: &Order, _: &Payment| o.clone())
                .expect("0 to 2 minutes are valid bounds");
            region_counts(paid)
        }
        "q0" => checksum(env.bids(Some(events), rate).map(|b| b.auction.wrapping_add(b.price)), |&h| h),
        // q0 with every record crossing an exchange, to price it per record
        // (docs/benchmarks.md): round robin, or by key into a keyed step.
        "q0-rebalance" => {
            checksum(env.bids(Some(events), rate).map(|b| b.auction.wrapping_add(b.price)).rebalance(), |&h| h)
        }
        "q0-keyed" => {
            let sums = env.bids(Some(events), rate).map(|b| b.auction.wrapping_add(b.price));
            checksum(sums.key_by(|&h| h).process(PassOn), |&h| h)
        }
        "q1" => match rate {
            None => checksum(env.bids(Some(events), None).map(|b| q1_row(&b)), q1_hash),
            Some(_) => stamped_checksum(
                env.bids(Some(events), rate),
                |bids| bids.map(|Stamped(b, at)| Stamped(q1_row(&b), at)),
                q1_hash,
            ),
        },
        "q1-lookup" => checksum(crate::bench_lookup::q1_rows(env.bids(Some(events), rate), q1_row), q1_hash),
        "q2" => checksum(
            env.bids(Some(events), rate).filter(|b| b.auction % 123 == 0).map(|b| (b.auction, b.price)),
            |&(a, p)| a.wrapping_mul(31).wrapping_add(p),
        ),
        "q5" => {
            let counts = env
                .bids(Some(events), rate)
                .assign_timestamps(
                    WatermarkStrategy::bounded_out_of_orderness(secs(2)).with_alignment("bids", secs(2)),
                    |b| b.time,
                )
                .key_by(|b| b.auction)
                .window(WindowAssigner::sliding(secs(10), secs(2)))
                .aggregate(Count, |&auction, w, count| (w.end, auction, count));
            let hottest = counts.key_by(|&(end, _, _)| end).window(WindowAssigner::tumbling(secs(2))).reduce(
                |a, b| {
                    if b.2 > a.2 || (b.2 == a.2 && b.1 < a.1) { *b } else { a }
                },
                |_, _, &row| row,
            );
            checksum(hottest, |&(end, a, c)| end.wrapping_mul(31).wrapping_add(a.wrapping_mul(7)).wrapping_add(c))
        }
        "q7" => {
            let best = env
                .bids(Some(events), rate)
                .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(secs(2)), |b| b.time)
                .window_all(WindowAssigner::tumbling(secs(10)))
                .reduce(higher, |_, w, b| (w.end, b.auction, b.price));
            checksum(best, |&(end, a, p)| end.wrapping_mul(31).wrapping_add(a.wrapping_mul(7)).wrapping_add(p))
        }
        _ => return None,
    })
}

/// CPU time of this process so far (user + system).
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads nothing else.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Peak resident set size of this process, in KiB.
pub fn peak_rss_kib() -> u64 {
    // SAFETY: as above.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    usage.ru_maxrss as u64
}

/// What one benchmark run measured.
pub struct BenchResult {
    pub net: Duration,
    pub cpu: Duration,
    pub checksum: Checksum,
    pub checkpoints: Vec<CheckpointStats>,
}

/// How a benchmark runs beside its workload.
pub struct BenchOptions {
    pub parallelism: usize,
    pub checkpointing: Option<CheckpointConfig>,
    /// Events per second of each source (as fast as it can when `None`).
    pub rate: Option<f64>,
    pub buffer_timeout: Option<Duration>,
    /// Two-phase window aggregation (on unless `--no-local-aggregation`).
    pub local_aggregation: bool,
    /// Where keyed state lives (`--state-backend`).
    pub state: crate::run::StateArgs,
}

pub fn run(
    query: &str,
    events: u64,
    options: BenchOptions,
    state: weir::core::state::StateBackend,
) -> anyhow::Result<BenchResult> {
    let BenchOptions { parallelism, checkpointing, rate, buffer_timeout, local_aggregation, state: flags } = options;
    let env = StreamEnv::new(format!("bench-{query}"));
    env.set_parallelism(parallelism).set_local_aggregation(local_aggregation).set_state_backend(state);
    if let Some(on) = flags.incremental() {
        env.set_incremental_checkpoints(on);
    }
    if let Some(timeout) = buffer_timeout {
        env.set_buffer_timeout(timeout);
    }
    let Some(checksum) = build(&env, query, events, rate) else {
        anyhow::bail!("unknown workload `{query}`; expected one of: {}", WORKLOADS.join(", "));
    };
    execute(env, checksum, checkpointing)
}

/// Runs the job built in `env` to its end, timing it; its rows go to `checksum`.
pub fn execute(
    env: StreamEnv,
    checksum: Checksum,
    checkpointing: Option<CheckpointConfig>,
) -> anyhow::Result<BenchResult> {
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let job = env.start_with(ExecuteOptions { checkpointing, restore: None, ..Default::default() })?;
    let checkpoints = wait_collecting(job)?;
    Ok(BenchResult { net: t0.elapsed(), cpu: cpu_time() - cpu0, checksum, checkpoints })
}

fn wait_collecting(job: JobHandle) -> anyhow::Result<Vec<CheckpointStats>> {
    let (result, checkpoints) = job.wait_with_checkpoints();
    result?;
    Ok(checkpoints)
}

impl BenchResult {
    /// The Flink baseline's line format.
    pub fn line(&self, query: &str, events: u64, parallelism: usize) -> String {
        let net_ms = self.net.as_millis().max(1);
        format!(
            "query={query} events={events} parallelism={parallelism} net_ms={net_ms} cpu_ms={} events_per_s={:.0} outputs={} checksum={}",
            self.cpu.as_millis(),
            events as f64 * 1000.0 / net_ms as f64,
            self.checksum.rows(),
            self.checksum.value()
        ) + &self.latencies()
    }

    /// ` latency_p50_ms=... latency_p99_ms=...` when latency was measured.
    fn latencies(&self) -> String {
        match self.checksum.latencies_ms([0.5, 0.99]) {
            Some([p50, p99]) => format!(" latency_p50_ms={p50:.3} latency_p99_ms={p99:.3}"),
            None => String::new(),
        }
    }
}
