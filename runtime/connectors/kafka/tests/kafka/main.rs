//! The Kafka connector's integration tests against librdkafka's mock cluster,
//! in one binary.

mod source;
mod transactions;
