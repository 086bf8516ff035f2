//! `weir datagen`: feeds a Kafka topic with a workload stream of
//! bench/WORKLOADS.md as JSON, keyed by order id (or auction), so that a
//! duplicate lands in the partition of its original.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use weir::datagen::RateProfile;
use weir_kafka::rdkafka::ClientConfig;
use weir_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use weir_kafka::rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use weir_workloads::{bid, order, payment};

use crate::Failure;

#[derive(clap::Args)]
pub struct DatagenArgs {
    /// orders | payments | bids (payments: those of order numbers --from.., about 0.93 per order)
    #[arg(long)]
    workload: String,
    /// Kafka bootstrap servers (host:port[,host:port]).
    #[arg(long, value_name = "BOOTSTRAP")]
    kafka: String,
    #[arg(long)]
    topic: String,
    /// How many events (forever when absent).
    #[arg(long)]
    count: Option<u64>,
    /// The first event number (to continue an earlier run).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Events per second, or a profile: steps:0s=1000,2m=3000 or
    /// sine:mean=2000,amplitude=1000,period=10m (as fast as possible when absent).
    #[arg(long, value_name = "RATE")]
    rate: Option<RateProfile>,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
}

pub fn datagen(args: DatagenArgs) -> Result<(), Failure> {
    // Event n's key and JSON value; `None` for an order number without a payment.
    let encode: fn(u64) -> Option<(String, Vec<u8>)> = match args.workload.as_str() {
        "orders" => |n| {
            let o = order(n);
            Some((o.order_id.to_string(), serde_json::to_vec(&o).expect("JSON")))
        },
        "payments" => |n| {
            let p = payment(n)?;
            Some((p.order_id.to_string(), serde_json::to_vec(&p).expect("JSON")))
        },
        "bids" => |n| {
            let b = bid(n);
            Some((b.auction.to_string(), serde_json::to_vec(&b).expect("JSON")))
        },
        other => {
            return Err(Failure::BadInput(format!(
                "--workload: unknown workload `{other}`; expected orders, payments or bids"
            )));
        }
    };
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "60000")
        .create()
        .map_err(|e| Failure::BadInput(format!("--kafka: {e}")))?;
    let unreachable = |e: KafkaError| Failure::Runtime(format!("cannot reach Kafka at {}: {e}", args.kafka));
    let metadata = producer.client().fetch_metadata(Some(&args.topic), Duration::from_secs(10)).map_err(unreachable)?;
    if metadata.topics().iter().all(|t| t.name() != args.topic || t.error().is_some() || t.partitions().is_empty()) {
        return Err(Failure::Runtime(format!(
            "topic `{}` does not exist at {}: create it first",
            args.topic, args.kafka
        )));
    }
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_report = started;
    let end = args.count.map(|c| args.from + c);
    // The profile's clock is the stream's: `--from N` continues a profile where event N was due.
    let profile_start = args.rate.as_ref().map_or(0.0, |r| r.time_of(args.from as f64));
    let mut n = args.from;
    while end.is_none_or(|e| n < e) {
        if let Some(rate) = &args.rate {
            let Some(due) = due_after(rate, profile_start, n).and_then(|d| started.checked_add(d)) else {
                if !args.quiet {
                    eprintln!("weir datagen: the rate profile ends before event number {n}");
                }
                break;
            };
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let Some((key, value)) = encode(n) else {
            n += 1;
            continue;
        };
        let mut record = BaseRecord::to(&args.topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(Failure::Runtime(format!("producing to `{}`: {e}", args.topic))),
            }
        }
        n += 1;
        if progress && last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprint!("\r{} events to `{}` ({:.0}/s)   ", n - args.from, args.topic, (n - args.from) as f64 / secs);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| Failure::Runtime(format!("flushing to `{}`: {e}", args.topic)))?;
    if progress {
        eprintln!();
    }
    if !args.quiet {
        eprintln!(
            "weir datagen: {} {} events (numbers {}..{n}) to `{}` at {} in {:.1}s",
            n - args.from,
            args.workload,
            args.from,
            args.topic,
            args.kafka,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// When event `n` is due, counted from the start of a run whose first event
/// was due at `profile_start` (stream time); `None` when never (the profile
/// ends at a rate of 0 before it).
fn due_after(rate: &RateProfile, profile_start: f64, n: u64) -> Option<Duration> {
    let after = rate.time_of(n as f64) - profile_start;
    Duration::try_from_secs_f64(after.max(0.0)).ok().filter(|_| after.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_due_by_the_profile_from_where_the_run_starts() {
        let constant: RateProfile = "200".parse().unwrap();
        assert_eq!(due_after(&constant, constant.time_of(1000.0), 1100), Some(Duration::from_millis(500)));
        let steps: RateProfile = "steps:0s=100,10s=1000,20s=0".parse().unwrap();
        assert_eq!(due_after(&steps, 0.0, 0), Some(Duration::ZERO));
        assert_eq!(due_after(&steps, 0.0, 1500), Some(Duration::from_millis(10_500)));
        // `--from 1000` (10 s into the profile): the 1000/s step at once, not the start's 100/s.
        let from = steps.time_of(1000.0);
        assert_eq!(due_after(&steps, from, 1500), Some(Duration::from_millis(500)));
        assert_eq!(due_after(&steps, from, 11_000), Some(Duration::from_secs(10)), "the last event");
        assert_eq!(due_after(&steps, from, 11_001), None, "never due: the run ends");
        assert_eq!(due_after(&steps, steps.time_of(20_000.0), 20_001), None, "started past the end");
    }
}
