//! The `weir` command's integration tests, in one binary: one link instead of
//! one per file keeps a clean build's time and disk small. Each test drives
//! the real `weir` executable against real servers.

mod common;

mod approx_distinct;
mod bench_oracle;
mod checkpoint_recovery;
mod cluster_api;
mod cluster_failover;
mod kafka_connectors;
mod late_rows;
mod lookup_postgres;
mod lookup_redis;
mod pipeline_oracle;
mod processing_time;
mod rest_savepoints;
mod run_errors;
mod run_stop;
mod window_join;
