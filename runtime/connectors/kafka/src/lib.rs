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

use std::str::FromStr;

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

impl FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            "committed" => Ok(StartAt::Committed),
            other => match other.strip_prefix("timestamp:").map(|t| t.trim().parse::<i64>()) {
                Some(Ok(ms)) if ms >= 0 => Ok(StartAt::Timestamp(ms)),
                _ => Err(format!(
                    "unknown start `{other}`; expected earliest, latest, committed or timestamp:<epoch ms>"
                )),
            },
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse_and_name_the_choices() {
        assert_eq!("earliest".parse(), Ok(StartAt::Earliest));
        assert_eq!("timestamp:1700000000000".parse(), Ok(StartAt::Timestamp(1_700_000_000_000)));
        let e = "yesterday".parse::<StartAt>().unwrap_err();
        assert!(e.contains("earliest, latest, committed or timestamp"), "{e}");
    }
}
