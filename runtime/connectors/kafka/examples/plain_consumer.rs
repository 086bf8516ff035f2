//! The baseline of the Kafka source benchmark (docs/benchmarks.md): a plain
//! rdkafka consumer loop that reads every partition of a topic from the
//! beginning to its current end and counts the records, with the fetch
//! settings the source uses. Prints `events=N bytes=B seconds=S`.
//!
//!     plain_consumer BOOTSTRAP TOPIC

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use weir_kafka::rdkafka;

#[derive(serde::Deserialize)]
struct Order {
    order_id: String,
    region: String,
    amount: i64,
    time: i64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bootstrap, topic) = (&args[1], &args[2]);
    let mut config = ClientConfig::new();
    for kv in std::env::var("EXTRA").unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').expect("EXTRA: k=v,k=v");
        config.set(k, v);
    }
    let consumer: BaseConsumer = config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "plain-consumer")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // As the source sets it (see source.rs); PLAIN_DEFAULTS=1 keeps librdkafka's 1 s.
        .set("fetch.queue.backoff.ms", if std::env::var_os("PLAIN_DEFAULTS").is_some() { "1000" } else { "10" })
        .create()
        .expect("a consumer");
    let started = Instant::now();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).expect("offsets");
        remaining += high - low;
        assignment.add_partition_offset(topic, p.id(), Offset::Offset(low)).expect("a partition");
    }
    consumer.assign(&assignment).expect("assign");
    let decode = std::env::var_os("DECODE").is_some();
    let (mut events, mut bytes, mut amounts) = (0i64, 0usize, 0i64);
    let wait = Duration::from_millis(std::env::var("POLL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(100));
    while events < remaining {
        if let Some(Ok(m)) = consumer.poll(wait) {
            let payload = m.payload().unwrap_or_default();
            bytes += payload.len();
            if decode {
                let order: Order = serde_json::from_slice(payload).expect("an order");
                amounts = amounts.wrapping_add(order.amount ^ order.time ^ order.order_id.len() as i64);
                std::hint::black_box(order.region);
            }
            events += 1;
        }
    }
    std::hint::black_box(amounts);
    println!("events={events} bytes={bytes} seconds={:.3}", started.elapsed().as_secs_f64());
}
