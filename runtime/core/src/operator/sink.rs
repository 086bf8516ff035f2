//! Sinks: where a stream leaves the engine.
//!
//! A [`Sink`] receives batches and is told when the input ends. Sinks that
//! buffer (files, network clients) make what they wrote durable in `flush` and
//! `finish`. Transactional sinks (two-phase commit) pre-commit in
//! `snapshot_state` at each checkpoint barrier, returning what they pre-committed
//! as operator state, and commit in `notify_checkpoint_complete`; on restore
//! they commit what the snapshot says was pre-committed and discard the rest.

use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::element::{Barrier, Record};
use crate::error::TaskResult;
use crate::graph::{SnapshotCollector, SubtaskInfo};
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

    /// Pre-commit at a checkpoint barrier.
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }

    /// Commit what was pre-committed for checkpoints up to `checkpoint_id`.
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> TaskResult {
        Ok(())
    }

    fn restore_state(&mut self, _state: RestoredState) -> TaskResult {
        Ok(())
    }
}

/// Runs a [`Sink`] as the last link of a chain.
pub struct SinkNode<S> {
    sink: S,
    uid: String,
    snapshots: SnapshotCollector,
}

impl<S> SinkNode<S> {
    pub fn new<T>(mut sink: S, info: &SubtaskInfo) -> TaskResult<Self>
    where
        S: Sink<T>,
    {
        if let Some(state) = info.restored.clone() {
            sink.restore_state(state)?;
        }
        Ok(SinkNode { sink, uid: info.uid.clone(), snapshots: info.snapshots.clone() })
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
    fn barrier(&mut self, barrier: Barrier) -> TaskResult {
        let snapshot = self.sink.snapshot_state(barrier.checkpoint_id)?;
        self.snapshots.add(&self.uid, snapshot);
        Ok(())
    }
    fn processing_time(&mut self, _: Timestamp) -> TaskResult {
        Ok(())
    }
    fn flush(&mut self) -> TaskResult {
        self.sink.flush()
    }
    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.sink.notify_checkpoint_complete(checkpoint_id)
    }
    fn end(&mut self) -> TaskResult {
        self.sink.finish()
    }
}
