//! Keeps a librdkafka mock cluster open for other processes (benchmarks,
//! trying things by hand): prints its bootstrap servers, creates the topics
//! named as `name:partitions` arguments, and runs until stdin closes.
//!
//!     cargo run -p weir-kafka --features testing --example mock_broker -- orders:4

use std::io::Read;

fn main() {
    let kafka = weir_kafka::testing::MockKafka::start(1);
    for arg in std::env::args().skip(1) {
        let (name, partitions) = arg.split_once(':').unwrap_or((&arg, "1"));
        kafka.create_topic(name, partitions.parse().expect("partitions: a number"));
    }
    println!("{}", kafka.bootstrap());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
