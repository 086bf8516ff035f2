//! librdkafka's mock cluster, for tests of this crate and of crates that use it.
//!
//! The mock speaks the real Kafka protocol on loopback ports. Its known
//! limits (TESTING.md): `read_committed` readers are not isolated from
//! aborted transactions, offsets sent in a transaction do not show as the
//! group's committed offsets, and topics are created on the cluster itself.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

pub struct MockKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl MockKafka {
    /// A cluster of `brokers` brokers on loopback.
    pub fn start(brokers: i32) -> Self {
        MockKafka { cluster: MockCluster::new(brokers).expect("starting librdkafka's mock cluster") }
    }

    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.cluster.create_topic(topic, partitions, 1).expect("creating a topic on the mock cluster");
    }

    /// Every record value of `topic` from the beginning, read until `quiet` passes without one.
    pub fn read_all(&self, topic: &str, quiet: Duration) -> Vec<Vec<u8>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", format!("read-all-{}", std::process::id()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("a consumer");
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
        let mut assignment = rdkafka::TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                assignment.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning).expect("a partition");
            }
        }
        consumer.assign(&assignment).expect("assign");
        let mut out = Vec::new();
        let mut last = std::time::Instant::now();
        while last.elapsed() < quiet {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(m.payload().unwrap_or_default().to_vec());
                last = std::time::Instant::now();
            }
        }
        out
    }
}
