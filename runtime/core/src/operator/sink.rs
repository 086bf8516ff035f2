//! Sinks: where a stream leaves the engine.
//!
//! A [`Sink`] receives batches and is told when the input ends. Sinks that
//! buffer (files, network clients) make what they wrote durable in `flush` and
//! `finish`. (Transactional sinks also pre-commit at checkpoint barriers and
//! commit when the checkpoint completes; those hooks come with checkpointing.)

use crate::element::{Barrier, Record};
use crate::error::TaskResult;
use crate::output::Output;
use crate::time::Timestamp;

pub trait Sink<T>: Send {
    fn write(&mut self, batch: Vec<Record<T>>) -> TaskResult;

    /// Make buffered output visible (called when the task waits for input).
    fn flush(&mut self) -> TaskResult {
        Ok(())
    }

    /// The input ended: make everything durable.
    fn finish(&mut self) -> TaskResult {
        Ok(())
    }
}

/// Runs a [`Sink`] as the last link of a chain.
pub struct SinkNode<S> {
    sink: S,
}

impl<S> SinkNode<S> {
    pub fn new(sink: S) -> Self {
        SinkNode { sink }
    }
}

impl<T, S: Sink<T>> Output<T> for SinkNode<S> {
    fn records(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        self.sink.write(batch)
    }
    fn watermark(&mut self, _: Timestamp) -> TaskResult {
        Ok(())
    }
    fn idle(&mut self, _: bool) -> TaskResult {
        Ok(())
    }
    fn barrier(&mut self, _: Barrier) -> TaskResult {
        Ok(())
    }
    fn processing_time(&mut self, _: Timestamp) -> TaskResult {
        Ok(())
    }
    fn flush(&mut self) -> TaskResult {
        self.sink.flush()
    }
    fn end(&mut self) -> TaskResult {
        self.sink.finish()
    }
}
