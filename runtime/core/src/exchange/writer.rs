//! The producing side of an exchange: partitions records onto channels.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// How long a record may wait in a partly filled buffer.
    buffer_timeout: Duration,
    /// Since when records have waited in the buffers (none wait when `None`).
    waiting_since: Option<Instant>,
    metrics: Arc<SubtaskMetrics>,
}

impl<T: Clone + Send + 'static> ExchangeWriter<T> {
    /// `targets[i]` is the channel into consumer subtask `i`; batches hold up
    /// to `batching.0` records and wait at most `batching.1` to fill.
    pub fn new(
        partitioning: Partitioning<T>,
        targets: Vec<ChannelSender<T>>,
        (batch_size, buffer_timeout): (usize, Duration),
        metrics: Arc<SubtaskMetrics>,
    ) -> Self {
        assert!(!targets.is_empty(), "an exchange needs at least one target");
        let buffers = (0..targets.len()).map(|_| Vec::new()).collect();
        ExchangeWriter {
            partitioning,
            targets,
            buffers,
            next: 0,
            batch_size: batch_size.max(1),
            buffer_timeout,
            waiting_since: None,
            metrics,
        }
    }

    /// After records were buffered: sends every partly filled buffer once the
    /// oldest of them has waited the buffer timeout. (A task with nothing to
    /// do flushes before it waits, so records never wait on an idle producer.)
    fn flush_on_timeout(&mut self) -> TaskResult {
        if self.buffers.iter().all(Vec::is_empty) {
            self.waiting_since = None;
            return Ok(());
        }
        if self.buffer_timeout.is_zero() {
            return self.flush_all();
        }
        let now = Instant::now();
        match self.waiting_since {
            None => self.waiting_since = Some(now),
            Some(since) if now.duration_since(since) >= self.buffer_timeout => self.flush_all()?,
            Some(_) => {}
        }
        Ok(())
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
        self.waiting_since = None;
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
                self.flush_on_timeout()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::input_queue;

    /// A writer hashing `u64`s (by value) over two channels that hold batches of
    /// ten, and the two channels' receivers.
    fn two_channels(
        buffer_timeout: Duration,
    ) -> (ExchangeWriter<u64>, Vec<crossbeam_channel::Receiver<crate::exchange::Envelope<u64>>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..2u32)
            .map(|channel| {
                let (tx, rx) = input_queue(16);
                (ChannelSender { tx, channel }, rx)
            })
            .unzip();
        let partitioning = Partitioning::Hash { key_hash: Arc::new(|v: &u64| *v), max_parallelism: 128 };
        let writer =
            ExchangeWriter::new(partitioning, senders, (10, buffer_timeout), Arc::new(SubtaskMetrics::default()));
        (writer, receivers)
    }

    fn sent(receivers: &[crossbeam_channel::Receiver<crate::exchange::Envelope<u64>>]) -> usize {
        receivers
            .iter()
            .flat_map(|rx| rx.try_iter())
            .map(|(_, e)| match e {
                Event::Records(batch) => batch.len(),
                _ => 0,
            })
            .sum()
    }

    fn batch(values: impl Iterator<Item = u64>) -> Vec<Record<u64>> {
        values.map(|v| Record::new(0, v)).collect()
    }

    #[test]
    fn partly_filled_batches_wait_for_the_buffer_timeout_then_go_out() {
        let (mut writer, receivers) = two_channels(Duration::from_millis(50));
        writer.records(batch(0..4)).unwrap();
        assert_eq!(sent(&receivers), 0, "four records fill no batch of ten and the timeout has not passed");
        std::thread::sleep(Duration::from_millis(60));
        writer.records(batch(4..6)).unwrap();
        assert_eq!(sent(&receivers), 6, "past the timeout, the next records send every partly filled batch");
        writer.records(batch(6..7)).unwrap();
        assert_eq!(sent(&receivers), 0, "the clock starts again with the next buffered record");
        writer.flush().unwrap();
        assert_eq!(sent(&receivers), 1);
    }

    #[test]
    fn a_zero_buffer_timeout_sends_at_once() {
        let (mut writer, receivers) = two_channels(Duration::ZERO);
        writer.records(batch(0..3)).unwrap();
        assert_eq!(sent(&receivers), 3);
    }

    #[test]
    fn full_batches_go_out_whatever_the_timeout() {
        let (mut writer, receivers) = two_channels(Duration::from_secs(3600));
        writer.records(batch(0..100)).unwrap();
        let n = sent(&receivers);
        assert!((82..=100).contains(&n), "full batches of ten leave at once, the partly filled rest waits: {n} sent");
        writer.flush().unwrap();
        assert_eq!(n + sent(&receivers), 100);
    }
}
