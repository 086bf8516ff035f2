//! Push-based outputs: how an operator hands its results downstream.
//!
//! Inside a task, operators are *chained*: each one is an [`Output`] of the
//! one before it, so a batch flows through the chain by plain (virtual, per
//! batch) calls, without copies or queues. The last link of a chain is an
//! exchange writer ([`crate::exchange`]) that partitions batches onto the
//! channels of the downstream tasks, or a sink.

use crate::element::{Barrier, Record};
use crate::error::TaskResult;
use crate::time::Timestamp;

/// The receiving side of a chain link. Every method may be called many times
/// except [`Output::end`], which is called once, last.
pub trait Output<T>: Send {
    fn records(&mut self, batch: Vec<Record<T>>) -> TaskResult;
    fn watermark(&mut self, watermark: Timestamp) -> TaskResult;
    fn idle(&mut self, idle: bool) -> TaskResult;
    fn barrier(&mut self, barrier: Barrier) -> TaskResult;
    /// Wall-clock time advanced; fire processing-time timers that are due.
    fn processing_time(&mut self, now: Timestamp) -> TaskResult;
    /// Push out anything buffered (the task is about to wait).
    fn flush(&mut self) -> TaskResult;
    /// Checkpoint `checkpoint_id` completed everywhere (transactional sinks commit now).
    /// Not forwarded across tasks: the coordinator tells every task itself.
    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult;
    fn end(&mut self) -> TaskResult;
}

/// Where an operator puts what it emits while handling one call.
///
/// The buffer is handed downstream whole after each call, so the next call
/// starts from an empty one. A buffer that grew by doubling each time (a
/// window firing thousands of rows at a watermark: a dozen reallocations and
/// copies) is instead made at once as large as the last batch its link
/// passed on, the `hint`, when the first record goes in.
pub struct Collector<'a, T> {
    buf: &'a mut Vec<Record<T>>,
    hint: usize,
}

impl<'a, T> Collector<'a, T> {
    pub fn new(buf: &'a mut Vec<Record<T>>) -> Self {
        Collector { buf, hint: 0 }
    }

    /// A collector whose empty buffer is made for `hint` records when it is first written.
    pub fn with_hint(buf: &'a mut Vec<Record<T>>, hint: usize) -> Self {
        Collector { buf, hint }
    }

    /// The buffer emitted records go to.
    pub fn buffer(&mut self) -> &mut Vec<Record<T>> {
        self.reserve_hint();
        self.buf
    }

    #[inline]
    pub fn emit(&mut self, time: Timestamp, value: T) {
        self.emit_record(Record { time, value });
    }

    #[inline]
    pub fn emit_record(&mut self, record: Record<T>) {
        self.reserve_hint();
        self.buf.push(record);
    }

    /// Per record: one test of the capacity; the reservation is out of line.
    #[inline]
    fn reserve_hint(&mut self) {
        if self.buf.capacity() == 0 {
            self.make_buffer();
        }
    }

    #[cold]
    fn make_buffer(&mut self) {
        self.buf.reserve_exact(self.hint);
    }

    /// Emit a whole batch; free when nothing else was emitted in this call.
    pub fn emit_batch(&mut self, mut batch: Vec<Record<T>>) {
        if self.buf.is_empty() {
            std::mem::swap(self.buf, &mut batch);
        } else {
            self.buf.append(&mut batch);
        }
    }
}

/// Sends everything to several outputs (a stream consumed more than once).
pub struct FanOut<T> {
    outputs: Vec<Box<dyn Output<T>>>,
}

impl<T> FanOut<T> {
    pub fn new(outputs: Vec<Box<dyn Output<T>>>) -> Self {
        FanOut { outputs }
    }
}

impl<T: Clone + Send> Output<T> for FanOut<T> {
    fn records(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        let (last, rest) = self.outputs.split_last_mut().expect("fan-out has outputs");
        for o in rest {
            o.records(batch.clone())?;
        }
        last.records(batch)
    }
    fn watermark(&mut self, watermark: Timestamp) -> TaskResult {
        self.outputs.iter_mut().try_for_each(|o| o.watermark(watermark))
    }
    fn idle(&mut self, idle: bool) -> TaskResult {
        self.outputs.iter_mut().try_for_each(|o| o.idle(idle))
    }
    fn barrier(&mut self, barrier: Barrier) -> TaskResult {
        self.outputs.iter_mut().try_for_each(|o| o.barrier(barrier))
    }
    fn processing_time(&mut self, now: Timestamp) -> TaskResult {
        self.outputs.iter_mut().try_for_each(|o| o.processing_time(now))
    }
    fn flush(&mut self) -> TaskResult {
        self.outputs.iter_mut().try_for_each(|o| o.flush())
    }
    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.outputs.iter_mut().try_for_each(|o| o.checkpoint_complete(checkpoint_id))
    }
    fn end(&mut self) -> TaskResult {
        self.outputs.iter_mut().try_for_each(|o| o.end())
    }
}

/// The output of a stream nobody consumes.
pub struct Discard;

impl<T: Send> Output<T> for Discard {
    fn records(&mut self, _: Vec<Record<T>>) -> TaskResult {
        Ok(())
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
        Ok(())
    }
    fn checkpoint_complete(&mut self, _: u64) -> TaskResult {
        Ok(())
    }
    fn end(&mut self) -> TaskResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hinted buffer is made once, at its first record, and never for a
    /// batch handed on whole (which becomes the buffer).
    #[test]
    fn a_hinted_buffer_is_made_at_its_first_record() {
        let mut buf = Vec::new();
        let mut out = Collector::with_hint(&mut buf, 100);
        out.emit(0, 0u64);
        let (at, capacity) = (out.buffer().as_ptr(), out.buffer().capacity());
        assert!(capacity >= 100);
        for i in 1..100 {
            out.emit(i, i as u64);
        }
        assert_eq!(out.buffer().as_ptr(), at, "the buffer grew");

        let mut buf = Vec::new();
        let batch: Vec<Record<u64>> = Vec::with_capacity(8);
        let at = batch.as_ptr();
        Collector::with_hint(&mut buf, 100).emit_batch(batch);
        assert_eq!((buf.as_ptr(), buf.capacity()), (at, 8));
    }
}
