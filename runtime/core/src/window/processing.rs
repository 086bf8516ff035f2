//! Processing-time windows: the window operator on the wall clock.
//!
//! [`ProcessingTime`] wraps a [`super::WindowOperator`]: each record is
//! stamped with the wall clock as it arrives, and the task's processing-time
//! ticks stand in for the watermark, so a window fires about one tick (50 ms)
//! after its end on the clock, whatever the records' event times and the
//! stream's watermark say. Nothing is ever late. The end of the input (the
//! final watermark) fires the windows still open, so a bounded job emits
//! everything it counted; other watermarks pass on untouched, as in Flink.

use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::element::Record;
use crate::error::TaskResult;
use crate::operator::Operator;
use crate::output::Collector;
use crate::time::{MAX_WATERMARK, MIN_WATERMARK, Timestamp, now_ms};

/// A window operator driven by processing time (see the module docs).
pub struct ProcessingTime<O> {
    inner: O,
    /// The latest time the inner operator was told has passed: records are
    /// stamped after it, so they never land in a window that fired.
    passed: Timestamp,
}

impl<O: Operator> ProcessingTime<O> {
    pub fn new(inner: O) -> Self {
        ProcessingTime { inner, passed: MIN_WATERMARK }
    }

    fn advance(&mut self, now: Timestamp, out: &mut Collector<'_, O::Out>) -> TaskResult {
        if now <= self.passed {
            return Ok(()); // the clock went back, or nothing new has passed
        }
        self.passed = now;
        self.inner.on_watermark(now, out)
    }
}

impl<O: Operator> Operator for ProcessingTime<O> {
    type In = O::In;
    type Out = O::Out;

    fn process_batch(&mut self, mut batch: Vec<Record<O::In>>, out: &mut Collector<'_, O::Out>) -> TaskResult {
        let now = now_ms().max(self.passed.saturating_add(1));
        for record in &mut batch {
            record.time = now;
        }
        self.inner.process_batch(batch, out)
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<'_, O::Out>) -> TaskResult {
        match watermark {
            MAX_WATERMARK => self.advance(MAX_WATERMARK, out),
            _ => Ok(()),
        }
    }

    fn on_processing_time(&mut self, now: Timestamp, out: &mut Collector<'_, O::Out>) -> TaskResult {
        self.advance(now, out)?;
        self.inner.on_processing_time(now, out)
    }

    fn on_end(&mut self, out: &mut Collector<'_, O::Out>) -> TaskResult {
        self.inner.on_end(out)
    }

    fn snapshot_state(&mut self, checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        self.inner.snapshot_state(checkpoint_id)
    }

    /// Windows restored from a snapshot are on the clock of the run that took
    /// it: those that ended since fire at the first tick.
    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        self.inner.restore_state(state)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.inner.notify_checkpoint_complete(checkpoint_id)
    }
}
