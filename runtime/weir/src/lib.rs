//! # weir: Flink-style stream processing in Rust
//!
//! Write a job as transformations of streams, in the spirit of Flink's
//! DataStream API; Weir runs it in parallel with event time, watermarks,
//! windows, keyed state and timers.
//!
//! ```
//! use std::time::Duration;
//! use weir::prelude::*;
//! use weir_workloads::WorkloadStreams;
//!
//! // Orders per region and minute, from the generated `orders` stream.
//! let env = StreamEnv::new("order-monitor");
//! env.set_parallelism(2);
//! let counts = env
//!     .orders(Some(300_000), None) // the `orders` stream of bench/WORKLOADS.md, from weir-workloads
//!     .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5)), |o| o.time)
//!     .key_by(|o| o.region)
//!     .window(WindowAssigner::tumbling(Duration::from_secs(60)))
//!     .aggregate(CountSum, |region, window, (count, sum)| (region.to_string(), window.start, count, sum))
//!     .collect();
//! env.execute().unwrap();
//! assert_eq!(counts.values().len(), 24);
//! # #[derive(Clone)] struct CountSum;
//! # impl AggregateFunction<weir_workloads::Order> for CountSum {
//! #     type Acc = (i64, i64); type Result = (i64, i64);
//! #     fn create(&self) -> (i64, i64) { (0, 0) }
//! #     fn add(&self, a: &mut (i64, i64), o: &weir_workloads::Order) { a.0 += 1; a.1 += o.amount; }
//! #     fn merge(&self, a: &mut (i64, i64), b: (i64, i64)) { a.0 += b.0; a.1 += b.1; }
//! #     fn result(&self, a: &(i64, i64)) -> (i64, i64) { *a }
//! # }
//! ```
//!
//! * [`StreamEnv`](env::StreamEnv) assembles a job and runs it.
//! * [`DataStream`](stream::DataStream): `map`, `filter`, `flat_map`,
//!   `assign_timestamps`, `key_by`, `union`, `rebalance`, `broadcast`, sinks,
//!   and `side_output` (what its functions emitted to an [`OutputTag`](prelude::OutputTag)).
//! * [`KeyedStream`](stream::KeyedStream): `process` (keyed state and timers), `window`,
//!   and with a second keyed stream `connect` (a keyed co-process function)
//!   and `interval_join` ([`connected`]).
//! * [`WindowedStream`](stream::WindowedStream): `aggregate`, `reduce`,
//!   `process`, `allowed_lateness`, late data as a side output.
//! * [`datagen`]: a parallel source of generated events (the benchmark
//!   workloads of `bench/WORKLOADS.md` are built on it, in `weir-workloads`).
//! * [`testing::run_local`]: run a small job and get its output.
//! * [`cluster::main`]: the same binary as JobManager and TaskManagers.

pub mod broadcast;
pub mod cluster;
pub mod connected;
pub mod datagen;
pub mod env;
pub mod sinks;
pub mod sources;
pub mod stream;
pub mod testing;

pub use weir_core as core;

/// Everything a job usually needs.
pub mod prelude {
    pub use crate::broadcast::BroadcastConnectedStreams;
    pub use crate::connected::{CoWindowedStreams, ConnectedKeyedStreams, IntervalJoinBuilder, IntervalJoined};
    pub use crate::env::StreamEnv;
    pub use crate::stream::{Collected, DataStream, KeyedStream, WindowedStream};
    pub use weir_core::operator::async_io::{AsyncFunction, AsyncOptions, ResultFuture};
    pub use weir_core::operator::broadcast::{BroadcastContext, KeyedBroadcastProcessFunction};
    pub use weir_core::operator::co_process::{CoInput, KeyedCoProcessFunction};
    pub use weir_core::operator::interval_join::{JoinContext, Outer, ProcessJoinFunction};
    pub use weir_core::operator::process::{KeyedProcessFunction, ProcessContext};
    pub use weir_core::operator::side::OutputTag;
    pub use weir_core::state::{KeyedState, ListState, MapState, ValueState};
    pub use weir_core::timer::TimeDomain;
    pub use weir_core::window::{
        AggregateFunction, ApproxCountDistinct, DistinctSketch, Window, WindowAssigner, WindowFunction,
    };
    pub use weir_core::{Record, Timestamp, WatermarkStrategy};
}
