//! The engine's integration tests, in one binary: one link instead of one per
//! file keeps a clean build's time and disk small.

mod common;

mod async_io;
mod broadcast_state;
mod checkpoint_alignment;
mod exchange_backpressure;
mod exchange_partitioning;
mod incremental_checkpoints;
mod process_timers_state;
mod side_outputs;
mod time_watermarks;
mod two_inputs;
mod window_functions;
mod window_lateness;
mod window_local_aggregation;
mod window_session;
