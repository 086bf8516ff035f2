//! The seed's order monitor, written in Rust against the `weir` crate.
//!
//! Re-sent orders are dropped (keyed value state, forgotten by an event-time
//! timer after 10 minutes); orders are counted per region and minute (late
//! orders come out of a side output); and a 3-sigma alert fires when a
//! minute deviates from the region's previous ten (keyed list state).
//!
//! ```text
//! cargo run --release -p rust-job -- [EVENTS] [PARALLELISM]
//! ```
//!
//! The same binary runs the job on a cluster, as its JobManager and its
//! TaskManagers (`weir::cluster`), and so as a StreamJob on Kubernetes
//! (`examples/k8s/order-monitor-rust.yaml`); the results then go to JSON files
//! under `--out` (default `./out/order-monitor-rust`), for `--events` orders
//! (the job's arguments, after `--`, reach every process):
//!
//! ```text
//! rust-job jobmanager --parallelism 2 --checkpoint-dir /tmp/cp --checkpoint-interval 1s -- --events 1000000 --out /tmp/out
//! rust-job taskmanager --jobmanager 127.0.0.1:6123 --slots 2
//! ```

use std::time::Duration;
use weir_workloads::WorkloadStreams;

use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir_workloads::{Order, OrderId, Region};

/// Orders and revenue of one region in one minute.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RegionMinute {
    region: Region,
    window_start: i64,
    count: i64,
    amount: i64,
}

#[derive(Clone)]
struct CountAmount;

impl AggregateFunction<Order> for CountAmount {
    type Acc = (i64, i64);
    type Result = (i64, i64);
    fn create(&self) -> (i64, i64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (i64, i64), o: &Order) {
        acc.0 += 1;
        acc.1 += o.amount;
    }
    fn merge(&self, acc: &mut (i64, i64), other: (i64, i64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn result(&self, acc: &(i64, i64)) -> (i64, i64) {
        *acc
    }
}

/// Drops re-sent orders: the first order id wins; the id is forgotten 10
/// minutes of event time later (a timer clears the key's state).
#[derive(Clone, Default)]
struct Dedup {
    seen: Option<ValueState<()>>,
}

impl KeyedProcessFunction<OrderId, Order, Order> for Dedup {
    fn open(&mut self, state: &mut KeyedState<OrderId>) {
        self.seen = Some(state.value("seen"));
    }
    fn process_element(&mut self, order: Order, ctx: &mut ProcessContext<'_, OrderId, Order>) {
        let seen = self.seen.expect("opened");
        if ctx.value(&seen).set_if_absent(()) {
            ctx.register_event_time_timer(ctx.timestamp() + 600_000);
            ctx.emit(order);
        }
    }
    fn on_timer(&mut self, _: Timestamp, _: TimeDomain, ctx: &mut ProcessContext<'_, OrderId, Order>) {
        ctx.clear_state();
    }
}

/// The 3-sigma rule over each region's last ten minutes.
#[derive(Clone, Default)]
struct Anomalies {
    history: Option<ListState<i64>>,
}

impl KeyedProcessFunction<Region, RegionMinute, String> for Anomalies {
    fn open(&mut self, state: &mut KeyedState<Region>) {
        self.history = Some(state.list("history"));
    }
    fn process_element(&mut self, m: RegionMinute, ctx: &mut ProcessContext<'_, Region, String>) {
        let history = ctx.list(&self.history.expect("opened"));
        let alert = (history.len() >= 3).then(|| {
            let n = history.len() as f64;
            let mean = history.iter().sum::<i64>() as f64 / n;
            let sd = (history.iter().map(|&c| (c as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            ((m.count as f64 - mean).abs() > 3.0 * sd).then(|| {
                format!(
                    "ALERT {} minute {}: {} orders, {:.0} +- {:.0} expected",
                    m.region, m.window_start, m.count, mean, sd
                )
            })
        });
        history.push(m.count);
        if history.len() > 10 {
            history.remove(0);
        }
        if let Some(alert) = alert.flatten() {
            ctx.emit(alert);
        }
    }
}

/// The job: dedup, then orders per region and minute, then alerts.
fn monitor(env: &StreamEnv, events: u64) -> (DataStream<RegionMinute>, DataStream<String>, DataStream<Order>) {
    let orders = env
        .orders(Some(events), None)
        .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5)), |o| o.time)
        .key_by(|o| o.order_id)
        .process(Dedup::default());
    let (minutes, late) =
        orders.key_by(|o| o.region).window(WindowAssigner::tumbling(Duration::from_secs(60))).apply_with_late_data(
            weir::core::window::AggregateWindow::new(CountAmount, |region: &Region, w: &Window, (count, amount)| {
                RegionMinute { region: *region, window_start: w.start, count, amount }
            }),
        );
    let alerts = minutes.clone().key_by(|m: &RegionMinute| m.region).process(Anomalies::default());
    (minutes, alerts, late)
}

/// `--events N` and `--out DIR`: the job's arguments on a cluster.
fn cluster_options(args: &[String]) -> Result<(u64, std::path::PathBuf), String> {
    let (mut events, mut out) = (3_000_000, std::path::PathBuf::from("./out/order-monitor-rust"));
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag}: needs a value"))?;
        match flag.as_str() {
            "--events" => events = value.parse().map_err(|_| format!("--events: `{value}` is not a number"))?,
            "--out" => out = value.into(),
            _ => return Err(format!("{flag}: unknown (expected --events or --out)")),
        }
    }
    Ok((events, out))
}

fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    if let Some("jobmanager" | "taskmanager") = std::env::args().nth(1).as_deref() {
        return Ok(weir::cluster::main("order-monitor-rust", move |env| {
            // Checked before the cluster starts: the JobManager builds the job first.
            let (events, out) = cluster_options(&weir::cluster::job_args()).unwrap_or_else(|e| {
                eprintln!("order-monitor-rust: {e}");
                std::process::exit(2)
            });
            let (minutes, alerts, late) = monitor(env, events);
            minutes.write_json(out.join("minutes"));
            alerts.write_json(out.join("alerts"));
            late.write_json(out.join("late"));
        }));
    }
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().map_or(Ok(3_000_000), |a| a.parse())?;
    let parallelism: usize = args.next().map_or(Ok(2), |a| a.parse())?;

    let env = StreamEnv::new("order-monitor-rust");
    env.set_parallelism(parallelism);
    let (minutes, alerts, late) = monitor(&env, events);
    let alerts = alerts.collect();
    let per_minute = minutes.collect();
    let late = late.collect();
    env.execute()?;

    let mut rows = per_minute.values();
    rows.sort_by_key(|m| (m.window_start, m.region));
    for m in &rows {
        println!("{} {:>5} orders {:>9} revenue  {}", m.window_start, m.count, m.amount, m.region);
    }
    for a in alerts.values() {
        println!("{a}");
    }
    println!("{} region-minutes, {} late orders", rows.len(), late.values().len());
    Ok(std::process::ExitCode::SUCCESS)
}
