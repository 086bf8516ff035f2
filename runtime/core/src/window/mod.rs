//! Event-time windows: tumbling, sliding and session windows over a keyed stream.
//!
//! A [`WindowAssigner`] puts each record into one or more [`Window`]s. The
//! [`WindowOperator`] keeps, per key and window, the state of a
//! [`WindowFunction`] (an incremental accumulator, or the buffered elements for
//! a full-window function), and fires a window when the watermark reaches its
//! last millisecond (`end - 1`), emitting the result with that timestamp.
//!
//! Lateness follows Flink: a record whose every window satisfies
//! `window.max_timestamp() + allowed_lateness <= watermark` is *late* and is
//! dropped, or sent to the late-data side output (for session windows, the
//! window judged is the session the record would join). A record that arrives after
//! its window fired but within the allowed lateness fires the window again
//! with the updated result. Session windows merge when a record bridges them.
//!
//! Aggregates over tumbling and sliding windows are combined upstream of the
//! key exchange first ([`local`]), so the exchange carries a partial per key
//! and pane instead of every record.

mod assigner;
mod distinct;
mod function;
pub mod local;
mod operator;
mod processing;
mod slices;

pub use assigner::{Window, WindowAssigner};
pub use distinct::{ApproxCountDistinct, DistinctSketch};
pub use function::{AggregateFunction, AggregateWindow, CoGroupWindow, ProcessWindow, ReduceWindow, WindowFunction};
pub use operator::{LateData, WindowOperator};
pub use processing::ProcessingTime;
