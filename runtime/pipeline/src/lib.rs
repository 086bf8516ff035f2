//! # weir-pipeline: declarative Weir jobs
//!
//! A pipeline file (YAML; DESIGN.md, "Pipeline files") names a source, a list
//! of steps and a sink. The way through this crate:
//!
//! 1. [`config`] loads it: YAML, `--set` overrides, typed structs, every
//!    error naming its key.
//! 2. [`check`] plans it, as a pure function: everything that can be checked
//!    before running (fields, types, step order, connector keys) ends in a
//!    [`plan::Plan`] or in the first problem found. No I/O: the operator
//!    validates StreamJobs with this alone (`default-features = false`).
//! 3. `build` (feature `engine`, on by default) turns the plan into streams on
//!    the same engine the Rust API uses, with [`value::Row`]s as records; the
//!    connectors are the features `kafka`, `redis` and `postgres`.
//!    `compile` is the two steps in one.
//!
//! ```
//! use std::path::Path;
//! use weir::prelude::*;
//! use weir_pipeline::{compile::{compile, Overrides}, config::parse};
//!
//! let yaml = r#"
//! name: order-monitor
//! source:
//!   type: datagen
//!   workload: orders
//!   count: 300000
//!   watermark: { field: time, out_of_orderness: 5s }
//! steps:
//!   - key_by: region
//!   - window: { type: tumbling, size: 1m }
//!   - aggregate: { count: count(), amount: sum(amount) }
//! sink: { type: blackhole }
//! "#;
//! let file = parse(Path::new("order-monitor.yaml"), yaml, &[]).unwrap();
//! let env = StreamEnv::new("order-monitor");
//! let compiled = compile(Path::new("order-monitor.yaml"), &file, &env, &Overrides::default()).unwrap();
//! env.execute().unwrap();
//! assert_eq!(compiled.stats.rows_out.load(std::sync::atomic::Ordering::Relaxed), 24);
//! ```
//!
//! Steps: `dedup`, `filter` (an [`expr`] condition), `select` (computed
//! fields), `key_by` + `window` (tumbling, sliding, session) followed by
//! `aggregate` (count, sum, min, max, avg, count_distinct, approx_count_distinct) or `top`,
//! `anomaly` (the seed's 3-sigma flag over a key's last windows), and
//! `external_call` (a per-record latency that bounds each subtask's capacity:
//! a test and benchmark aid for autoscaling). A datagen source's `rate` is
//! constant or a profile (steps, a sine) over the stream's time.

#[cfg(feature = "engine")]
pub mod build;
pub mod check;
#[cfg(feature = "engine")]
pub mod compile;
pub mod config;
#[cfg(feature = "engine")]
mod connectors;
pub mod error;
pub mod expr;
pub mod file_source;
pub mod format;
pub mod keys;
#[cfg(feature = "engine")]
mod lookup;
pub mod ops;
pub mod plan;
pub mod records;
pub mod value;

pub use error::PipelineError;
