//! # weir-core: the stream-processing engine at the heart of Weir
//!
//! This crate runs dataflow jobs; it knows no connector (Kafka, S3, databases
//! live in their own crates behind the traits here). Users write jobs against
//! the `weir` crate, which builds a [`graph::JobGraph`] with this crate's parts.
//!
//! ## How data flows
//!
//! ```text
//!  source task (one thread per subtask)          input task (one thread per subtask)
//!  ┌───────────────────────────────────┐  queue  ┌────────────────────────────────────┐
//!  │ Source -> WatermarkAssigner -> Map│ ──────> │ InputGate -> WindowOperator -> Sink│
//!  │        (chained: plain calls)     │ batches │   (min watermark over channels)    │
//!  │          -> ExchangeWriter ───────┼─hash───>│                                    │
//!  └───────────────────────────────────┘         └────────────────────────────────────┘
//! ```
//!
//! * [`element`]: records travel in batches, interleaved with watermarks,
//!   idleness markers, checkpoint barriers and end-of-stream, in order.
//! * [`output`]: operators in one task are *chained*; each is the
//!   [`output::Output`] of its predecessor.
//! * [`exchange`]: between tasks, bounded queues carry batches; a full queue
//!   blocks the producer (backpressure). Records are partitioned forward,
//!   round-robin, by key group ([`keygroup`]) or broadcast.
//! * [`time`]: event time and watermarks; [`drift`]: watermark alignment
//!   of sources; [`timer`]: per-key timers.
//! * [`operator`]: the operator trait, basic operators, keyed process
//!   functions with keyed [`state`], sinks; [`window`]: event-time windows.
//! * [`graph`] and [`executor`]: the logical job, its chaining, and its
//!   deployment onto threads; [`task`]: the loops that drive each subtask.
//!
//! The `weir` crate's `weir::testing::run_local` runs a small job end to end;
//! its documentation shows examples.

pub mod checkpoint;
pub mod drift;
pub mod element;
pub mod error;
pub mod exchange;
pub mod executor;
pub mod graph;
pub mod keygroup;
pub mod metrics;
pub mod operator;
pub mod output;
pub mod source;
pub mod state;
pub mod task;
pub mod time;
pub mod timer;
pub mod window;

pub use element::{Barrier, Data, Event, Record};
pub use error::{JobError, TaskError, TaskResult};
pub use time::{MAX_WATERMARK, MIN_WATERMARK, NO_TIMESTAMP, Timestamp, WatermarkStrategy};
