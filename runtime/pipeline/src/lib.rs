//! # weir-pipeline: declarative Weir jobs
//!
//! A pipeline file (YAML; DESIGN.md, "Pipeline files") names a source, a list
//! of steps and a sink. This crate loads it ([`config`]), applies command-line
//! overrides, checks everything that can be checked before running (fields,
//! types, step order, connectors), and compiles it onto the same engine the
//! Rust API uses ([`compile`]), with [`value::Row`]s as records.
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
//! `aggregate` (count, sum, min, max, avg, count_distinct) or `top`, and
//! `anomaly` (the seed's 3-sigma flag over a key's last windows).

pub mod compile;
pub mod config;
mod connectors;
pub mod error;
pub mod expr;
pub mod file_source;
pub mod format;
pub mod ops;
pub mod records;
pub mod value;

pub use error::PipelineError;
