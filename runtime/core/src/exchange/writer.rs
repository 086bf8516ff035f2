//! The producing side of an exchange: partitions records onto channels.
//!
//! A hash exchange fills one batch per consumer. A watermark must follow the
//! records written before it, and sending it at once would cut every partly
//! filled batch short and wake every consumer for a small batch and a
//! watermark: at full speed that costs more than the records' own work. So,
//! while records arrive in bulk for several consumers, a watermark is *held*
//! per consumer and goes out right behind that consumer's next batch (full,
//! timed out or flushed).
//! Holding a watermark back is always safe (it only promises less, for a
//! while); it waits no longer than a record would, the buffer timeout. A
//! producer that trickles (batches under half full) still sends each
//! watermark at once, so lateness stays exactly per batch where it can be
//! observed record by record.

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
    /// Since when records or held watermarks have waited (none wait when `None`).
    waiting_since: Option<Instant>,
    /// Per consumer, the watermark to send behind its next batch.
    held: Vec<Option<Timestamp>>,
    /// Whether the last records handed over came in bulk (at least half a batch).
    bulk: bool,
    /// The newest checkpoint the chain was told completed: the end of stream carries it.
    completed: Option<u64>,
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
        let held = vec![None; targets.len()];
        ExchangeWriter {
            partitioning,
            targets,
            buffers,
            next: 0,
            batch_size: batch_size.max(1),
            buffer_timeout,
            waiting_since: None,
            held,
            bulk: false,
            completed: None,
            metrics,
        }
    }

    /// After records were buffered: sends every partly filled buffer once the
    /// oldest of them has waited the buffer timeout. (A task with nothing to
    /// do flushes before it waits, so records never wait on an idle producer.)
    fn flush_on_timeout(&mut self) -> TaskResult {
        if self.buffers.iter().all(Vec::is_empty) && self.held.iter().all(Option::is_none) {
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

    /// Sends the target's batch, if it has records, then its held watermark.
    fn send_buffer(&mut self, target: usize) -> TaskResult {
        if !self.buffers[target].is_empty() {
            let batch = std::mem::replace(&mut self.buffers[target], Vec::with_capacity(self.batch_size));
            SubtaskMetrics::add(&self.metrics.records_out, batch.len() as u64);
            self.send(target, Event::Records(batch))?;
        }
        match self.held[target].take() {
            Some(watermark) => self.send(target, Event::Watermark(watermark)),
            None => Ok(()),
        }
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
        self.bulk = batch.len() >= self.batch_size / 2;
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
        if self.bulk && self.targets.len() > 1 && matches!(self.partitioning, Partitioning::Hash { .. }) {
            // Behind each consumer's next batch (see the module's docs); a newer
            // watermark replaces an older one still held, never the other way.
            self.held.iter_mut().for_each(|h| *h = Some(h.map_or(watermark, |held| held.max(watermark))));
            return self.flush_on_timeout();
        }
        self.held.iter_mut().for_each(|h| *h = None); // superseded
        self.broadcast_event(|| Event::Watermark(watermark))
    }

    fn idle(&mut self, idle: bool) -> TaskResult {
        self.broadcast_event(|| Event::Idle(idle))
    }

    fn barrier(&mut self, barrier: Barrier) -> TaskResult {
        self.broadcast_event(|| Event::Barrier(barrier))
    }

    fn processing_time(&mut self, _now: Timestamp) -> TaskResult {
        // A producer busy with input that yields no output still sends what waits.
        self.flush_on_timeout()
    }

    fn flush(&mut self) -> TaskResult {
        self.flush_all()
    }

    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.completed = self.completed.max(Some(checkpoint_id));
        Ok(())
    }

    fn end(&mut self) -> TaskResult {
        let completed = self.completed;
        self.broadcast_event(|| Event::End(completed))
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

    #[test]
    fn the_end_carries_the_newest_completion_the_chain_was_told() {
        let (mut writer, receivers) = two_channels(Duration::ZERO);
        writer.checkpoint_complete(3).unwrap();
        writer.checkpoint_complete(2).unwrap(); // a late, older notice changes nothing
        writer.end().unwrap();
        for rx in &receivers {
            assert!(matches!(rx.try_recv(), Ok((_, Event::End(Some(3))))));
        }
        let (mut writer, receivers) = two_channels(Duration::ZERO);
        writer.end().unwrap();
        assert!(matches!(receivers[0].try_recv(), Ok((_, Event::End(None)))));
    }

    /// Each channel's events, as `R(n)` for a batch of n records and `W(t)`.
    fn events(receivers: &[crossbeam_channel::Receiver<crate::exchange::Envelope<u64>>]) -> Vec<Vec<String>> {
        receivers
            .iter()
            .map(|rx| {
                rx.try_iter()
                    .map(|(_, e)| match e {
                        Event::Records(batch) => format!("R({})", batch.len()),
                        Event::Watermark(t) => format!("W({t})"),
                        _ => "other".to_string(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_watermark_after_bulk_records_rides_behind_each_channels_next_batch() {
        let (mut writer, receivers) = two_channels(Duration::from_secs(3600));
        // Even values to one channel, odd to the other (by key group): 5 and 5.
        let to_first = |v: &u64| subtask_for_key_group(key_group(*v, 128), 128, 2) == 0;
        let first: Vec<u64> = (0..).filter(|v| to_first(v)).take(40).collect();
        let second: Vec<u64> = (0..).filter(|v| !to_first(v)).take(40).collect();
        writer.records(batch(first[..4].iter().chain(&second[..4]).copied())).unwrap();
        writer.watermark(7).unwrap();
        assert_eq!(events(&receivers), vec![Vec::<String>::new(), vec![]], "held while the batches fill");
        writer.records(batch(first[4..12].iter().copied())).unwrap();
        assert_eq!(events(&receivers), vec![vec!["R(10)", "W(7)"], vec![]], "behind the first channel's full batch");
        writer.records(batch(first[12..14].iter().copied())).unwrap(); // under half a batch: a trickle
        writer.watermark(9).unwrap();
        assert_eq!(events(&receivers), vec![vec!["R(4)", "W(9)"], vec!["R(4)", "W(9)"]], "a trickle sends at once");
    }

    #[test]
    fn held_watermarks_go_out_on_flush_and_replace_older_ones() {
        let (mut writer, receivers) = two_channels(Duration::from_secs(3600));
        writer.records(batch(0..8)).unwrap();
        writer.watermark(3).unwrap();
        writer.records(batch(100..108)).unwrap();
        writer.watermark(5).unwrap();
        let before = events(&receivers);
        writer.flush().unwrap();
        let after = events(&receivers);
        let mut records = 0;
        for (b, a) in before.iter().zip(&after) {
            let all: Vec<_> = b.iter().chain(a).cloned().collect();
            records += all
                .iter()
                .filter_map(|e| e.strip_prefix("R(")?.strip_suffix(')')?.parse::<usize>().ok())
                .sum::<usize>();
            assert_eq!(all.last().map(String::as_str), Some("W(5)"), "every channel ends with the newest: {all:?}");
            assert!(!a.contains(&"W(3)".to_string()), "a held W(3) is replaced by W(5): {all:?}");
        }
        assert_eq!(records, 16);
    }

    #[test]
    fn held_watermarks_wait_no_longer_than_the_buffer_timeout() {
        let (mut writer, receivers) = two_channels(Duration::from_millis(20));
        writer.records(batch(0..10)).unwrap();
        let _ = events(&receivers);
        writer.watermark(4).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        writer.processing_time(0).unwrap();
        let got = events(&receivers);
        assert!(got.iter().all(|ch| ch.last().map(String::as_str) == Some("W(4)")), "{got:?}");
    }

    #[test]
    fn a_held_watermark_is_never_replaced_by_an_older_one() {
        let (mut writer, receivers) = two_channels(Duration::from_secs(3600));
        writer.records(batch(0..8)).unwrap();
        writer.watermark(i64::MAX).unwrap();
        writer.watermark(5).unwrap();
        writer.flush().unwrap();
        let got = events(&receivers);
        assert!(got.iter().all(|ch| ch.last().map(String::as_str) == Some("W(9223372036854775807)")), "{got:?}");
    }
}
