//! # weir-kafka: Kafka for the Weir stream engine
//!
//! * [`source::KafkaSource`]: a topic's partitions as splits spread over the
//!   subtasks, offsets in checkpoints, per-partition watermarks and idleness,
//!   bounded or unbounded, consumer lag as the pending-records metric.
//! * [`sink::KafkaSink`]: at-least-once (flushed at every barrier) or
//!   exactly-once (transactions committed when their checkpoint completes).
//!
//! Both are generic over the record type: the caller supplies how a record is
//! decoded or encoded. librdkafka does the protocol work.

pub mod sink;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use rdkafka;

/// Where a partition new to the job starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record still in the partition.
    Earliest,
    /// Only records produced after the job started.
    Latest,
    /// The first record with a timestamp at or after this (epoch ms).
    Timestamp(i64),
    /// The group's committed offset (the earliest where the group has none).
    Committed,
}

/// What can go wrong talking to Kafka, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot reach the brokers: {0}")]
    Unreachable(String),
    #[error("topic `{0}` does not exist")]
    NoTopic(String),
    #[error("topic `{0}`: {1}")]
    Topic(String, String),
}
