//! Sources: where records enter a job.
//!
//! A source subtask is polled in a loop by its task; each poll appends up to
//! about one batch of records. Sources are split across subtasks by whoever
//! builds them (each subtask gets its own instance with its share).
//!
//! Event time is usually assigned after the source (a watermark assigner
//! chained to it). A source that reads several splits whose records interleave
//! unpredictably (Kafka partitions) assigns it itself instead: it stamps its
//! records and reports a watermark per subtask through [`Source::watermark`],
//! the minimum over its splits' watermarks, kept by [`SplitWatermarks`]. A
//! split that stays quiet for the idle timeout stops holding the others back.

use std::time::Duration;

use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::element::Record;
use crate::error::TaskResult;
use crate::time::{MIN_WATERMARK, Timestamp, WatermarkGenerator, WatermarkStrategy};

/// What a poll found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePoll {
    /// Records were appended (or may be: poll again at once).
    Ready,
    /// Nothing available now; poll again within this long.
    Idle(Duration),
    /// The source is exhausted (a bounded source's end).
    Finished,
}

/// A source subtask. Its read position is operator state: `snapshot_state`
/// returns it as redistributable entries (one per split), and on restore the
/// entries of all old subtasks are dealt over the new ones, so a source
/// restores at any parallelism.
pub trait Source<T>: Send {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> TaskResult<SourcePoll>;

    /// The read position, taken between two polls.
    fn snapshot_state(&mut self) -> TaskResult<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }

    /// Replaces the initial assignment with the restored splits.
    fn restore_state(&mut self, _state: RestoredState) -> TaskResult {
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> TaskResult {
        Ok(())
    }

    /// The watermark of a source that assigns event time itself, asked after
    /// every poll and at each processing-time tick (`now`).
    fn watermark(&mut self, _now: Timestamp) -> SourceWatermark {
        SourceWatermark::Unmanaged
    }
}

/// What a source says of its own event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceWatermark {
    /// The source does not assign event time (a downstream assigner may).
    Unmanaged,
    /// No record before this time is still to come from this subtask.
    At(Timestamp),
    /// Every split is quiet: downstream operators should not wait for this subtask.
    Idle,
}

/// Per-split watermarks (Flink's per-partition watermarking): each split has
/// its own bounded-out-of-orderness generator, and the subtask's watermark is
/// the minimum over the splits that are neither finished nor idle. It never
/// goes back: a split that wakes up from idleness behind it has its records
/// judged against the watermark already emitted.
#[derive(Debug)]
pub struct SplitWatermarks<S> {
    strategy: WatermarkStrategy,
    /// A subtask has few splits, and records come in runs from one split:
    /// a vector with the last one found beats hashing every record.
    splits: Vec<(S, SplitClock)>,
    last: usize,
    emitted: Timestamp,
}

#[derive(Debug)]
struct SplitClock {
    generator: WatermarkGenerator,
    last_record_at: Timestamp,
}

impl<S: PartialEq> SplitWatermarks<S> {
    pub fn new(strategy: WatermarkStrategy) -> Self {
        SplitWatermarks { strategy, splits: Vec::new(), last: 0, emitted: MIN_WATERMARK }
    }

    /// Starts tracking `split` (at `now`, so that its idle timeout starts now).
    pub fn add(&mut self, split: S, now: Timestamp) {
        if !self.splits.iter().any(|(s, _)| *s == split) {
            let generator = self.strategy.generator();
            self.splits.push((split, SplitClock { generator, last_record_at: now }));
        }
    }

    /// A finished split no longer holds the watermark back.
    pub fn remove(&mut self, split: &S) {
        self.splits.retain(|(s, _)| s != split);
        self.last = 0;
    }

    #[inline]
    pub fn observe(&mut self, split: &S, time: Timestamp, now: Timestamp) {
        if self.splits.get(self.last).is_none_or(|(s, _)| s != split) {
            match self.splits.iter().position(|(s, _)| s == split) {
                Some(i) => self.last = i,
                None => return,
            }
        }
        let clock = &mut self.splits[self.last].1;
        clock.generator.observe(time);
        clock.last_record_at = now;
    }

    /// The subtask's watermark at `now`.
    pub fn current(&mut self, now: Timestamp) -> SourceWatermark {
        let idle_ms = self.strategy.idle_timeout.map(|d| d.as_millis() as i64);
        let mut min: Option<Timestamp> = None;
        for (_, clock) in &mut self.splits {
            if idle_ms.is_some_and(|idle| now - clock.last_record_at >= idle) {
                continue;
            }
            clock.generator.advance();
            let wm = clock.generator.current();
            min = Some(min.map_or(wm, |m| m.min(wm)));
        }
        match min {
            // No split (more subtasks than partitions), or all quiet.
            None => SourceWatermark::Idle,
            Some(wm) => {
                self.emitted = self.emitted.max(wm);
                SourceWatermark::At(self.emitted)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_active_split_holds_the_watermark() {
        let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(10))
            .with_idle_timeout(Duration::from_millis(100));
        let mut w = SplitWatermarks::new(strategy);
        w.add(0, 0);
        w.add(1, 0);
        w.observe(&0, 1000, 0);
        // Split 1 has seen nothing yet: it holds everything back.
        assert_eq!(w.current(1), SourceWatermark::At(MIN_WATERMARK));
        w.observe(&1, 500, 1);
        assert_eq!(w.current(2), SourceWatermark::At(489));
        // Split 1 goes quiet: after the idle timeout split 0 alone decides.
        w.observe(&0, 2000, 150);
        assert_eq!(w.current(150), SourceWatermark::At(1989));
        // Split 1 wakes up behind: the watermark does not go back.
        w.observe(&1, 600, 160);
        assert_eq!(w.current(160), SourceWatermark::At(1989));
        // Both quiet: the subtask is idle.
        assert_eq!(w.current(1000), SourceWatermark::Idle);
        // A finished split stops counting.
        w.remove(&0);
        w.remove(&1);
        assert_eq!(w.current(1000), SourceWatermark::Idle);
    }
}
