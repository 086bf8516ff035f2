//! The producing side of an exchange: partitions records onto channels.

use std::sync::Arc;

use crossbeam_channel::TrySendError;

use super::ChannelSender;
use crate::element::{Barrier, Event, Record};
use crate::error::{TaskError, TaskResult};
use crate::keygroup::{key_group, subtask_for_key_group};
use crate::metrics::SubtaskMetrics;
use crate::output::Output;
use crate::time::Timestamp;

/// How records are spread over the downstream subtasks.
pub enum Partitioning<T> {
    /// Subtask i to subtask i (equal parallelism).
    Forward,
    /// Whole batches round-robin over all downstream subtasks.
    Rebalance,
    /// By key group of the key's stable hash.
    Hash { key_hash: Arc<dyn Fn(&T) -> u64 + Send + Sync>, max_parallelism: u32 },
    /// Every record to every downstream subtask.
    Broadcast,
}

impl<T> Clone for Partitioning<T> {
    fn clone(&self) -> Self {
        match self {
            Partitioning::Forward => Partitioning::Forward,
            Partitioning::Rebalance => Partitioning::Rebalance,
            Partitioning::Hash { key_hash, max_parallelism } => {
                Partitioning::Hash { key_hash: key_hash.clone(), max_parallelism: *max_parallelism }
            }
            Partitioning::Broadcast => Partitioning::Broadcast,
        }
    }
}

impl<T> Partitioning<T> {
    pub fn name(&self) -> &'static str {
        match self {
            Partitioning::Forward => "forward",
            Partitioning::Rebalance => "rebalance",
            Partitioning::Hash { .. } => "hash",
            Partitioning::Broadcast => "broadcast",
        }
    }
}

/// Writes one producer subtask's output onto the channels of all consumer subtasks.
pub struct ExchangeWriter<T> {
    partitioning: Partitioning<T>,
    targets: Vec<ChannelSender<T>>,
    buffers: Vec<Vec<Record<T>>>,
    next: usize,
    batch_size: usize,
    metrics: Arc<SubtaskMetrics>,
}

impl<T: Clone + Send + 'static> ExchangeWriter<T> {
    /// `targets[i]` is the channel into consumer subtask `i`.
    pub fn new(
        partitioning: Partitioning<T>,
        targets: Vec<ChannelSender<T>>,
        batch_size: usize,
        metrics: Arc<SubtaskMetrics>,
    ) -> Self {
        assert!(!targets.is_empty(), "an exchange needs at least one target");
        let buffers = (0..targets.len()).map(|_| Vec::new()).collect();
        ExchangeWriter { partitioning, targets, buffers, next: 0, batch_size: batch_size.max(1), metrics }
    }

    fn send(&self, target: usize, event: Event<T>) -> TaskResult {
        let t = &self.targets[target];
        match t.tx.try_send((t.channel, event)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => {
                let began = self.metrics.begin_backpressure();
                let res = t.tx.send(msg).map_err(|_| TaskError::Disconnected);
                self.metrics.end_backpressure(began);
                res
            }
            Err(TrySendError::Disconnected(_)) => Err(TaskError::Disconnected),
        }
    }

    fn send_buffer(&mut self, target: usize) -> TaskResult {
        if self.buffers[target].is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.buffers[target], Vec::with_capacity(self.batch_size));
        SubtaskMetrics::add(&self.metrics.records_out, batch.len() as u64);
        self.send(target, Event::Records(batch))
    }

    fn flush_all(&mut self) -> TaskResult {
        (0..self.targets.len()).try_for_each(|i| self.send_buffer(i))
    }

    fn broadcast_event(&mut self, make: impl Fn() -> Event<T>) -> TaskResult {
        self.flush_all()?;
        (0..self.targets.len()).try_for_each(|i| self.send(i, make()))
    }
}

impl<T: Clone + Send + 'static> Output<T> for ExchangeWriter<T> {
    fn records(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        if batch.is_empty() {
            return Ok(());
        }
        let n = self.targets.len();
        match &self.partitioning {
            _ if n == 1 && self.buffers[0].is_empty() => {
                SubtaskMetrics::add(&self.metrics.records_out, batch.len() as u64);
                self.send(0, Event::Records(batch))
            }
            Partitioning::Forward | Partitioning::Rebalance => {
                let target = self.next % n;
                self.next = self.next.wrapping_add(1);
                SubtaskMetrics::add(&self.metrics.records_out, batch.len() as u64);
                self.send(target, Event::Records(batch))
            }
            Partitioning::Broadcast => {
                for i in 0..n - 1 {
                    SubtaskMetrics::add(&self.metrics.records_out, batch.len() as u64);
                    self.send(i, Event::Records(batch.clone()))?;
                }
                SubtaskMetrics::add(&self.metrics.records_out, batch.len() as u64);
                self.send(n - 1, Event::Records(batch))
            }
            Partitioning::Hash { key_hash, max_parallelism } => {
                let (key_hash, max) = (key_hash.clone(), *max_parallelism);
                for record in batch {
                    let group = key_group(key_hash(&record.value), max);
                    let target = subtask_for_key_group(group, max, n);
                    let buf = &mut self.buffers[target];
                    buf.push(record);
                    if buf.len() >= self.batch_size {
                        self.send_buffer(target)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn watermark(&mut self, watermark: Timestamp) -> TaskResult {
        self.broadcast_event(|| Event::Watermark(watermark))
    }

    fn idle(&mut self, idle: bool) -> TaskResult {
        self.broadcast_event(|| Event::Idle(idle))
    }

    fn barrier(&mut self, barrier: Barrier) -> TaskResult {
        self.broadcast_event(|| Event::Barrier(barrier))
    }

    fn processing_time(&mut self, _now: Timestamp) -> TaskResult {
        Ok(())
    }

    fn flush(&mut self) -> TaskResult {
        self.flush_all()
    }

    fn checkpoint_complete(&mut self, _checkpoint_id: u64) -> TaskResult {
        Ok(())
    }

    fn end(&mut self) -> TaskResult {
        self.broadcast_event(|| Event::End)
    }
}
