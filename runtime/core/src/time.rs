//! Event time: timestamps, watermarks and watermark strategies.
//!
//! A watermark `w` on a channel promises that no record with `time <= w` follows.
//! Sources (or an assigner chained after them) derive watermarks from the
//! records they see; every operator input takes the minimum over its active
//! channels ([`crate::exchange::InputGate`]). Bounded inputs end with
//! [`MAX_WATERMARK`], so every window fires.

use std::time::Duration;

/// Milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// The timestamp of a record that has none.
pub const NO_TIMESTAMP: Timestamp = i64::MIN;
/// The watermark before any was seen.
pub const MIN_WATERMARK: Timestamp = i64::MIN;
/// The watermark at the end of time: emitted when a bounded input is exhausted.
pub const MAX_WATERMARK: Timestamp = i64::MAX;

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> Timestamp {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// How watermarks are derived from the timestamps a source task sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatermarkStrategy {
    /// Records may arrive up to this much later than the newest one seen.
    pub out_of_orderness: Duration,
    /// A source subtask that produced nothing for this long is marked idle.
    pub idle_timeout: Option<Duration>,
    /// Sources of this group pause while their watermark is further ahead of
    /// the group's slowest than the drift ([`crate::drift`]).
    pub alignment: Option<crate::drift::WatermarkAlignment>,
}

impl WatermarkStrategy {
    /// Watermark = highest timestamp seen - bound - 1 (Flink's `forBoundedOutOfOrderness`).
    pub fn bounded_out_of_orderness(bound: Duration) -> Self {
        WatermarkStrategy { out_of_orderness: bound, idle_timeout: None, alignment: None }
    }

    /// Timestamps never decrease (`forMonotonousTimestamps`).
    pub fn monotonic() -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO)
    }

    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Aligns this source with the others of `group`: it pauses while its
    /// watermark is more than `max_drift` ahead of the group's lowest (Flink's
    /// `withWatermarkAlignment`). A source that may have no data for long
    /// needs an idle timeout too, or it holds the group back.
    pub fn with_alignment(mut self, group: impl Into<String>, max_drift: Duration) -> Self {
        self.alignment = Some(crate::drift::WatermarkAlignment { group: group.into(), max_drift });
        self
    }

    pub fn generator(&self) -> WatermarkGenerator {
        WatermarkGenerator {
            bound: self.out_of_orderness.as_millis() as i64,
            max_seen: MIN_WATERMARK,
            emitted: MIN_WATERMARK,
        }
    }
}

/// Tracks the highest timestamp and says when a new watermark is due.
#[derive(Clone, Debug)]
pub struct WatermarkGenerator {
    bound: i64,
    max_seen: Timestamp,
    emitted: Timestamp,
}

impl WatermarkGenerator {
    #[inline]
    pub fn observe(&mut self, time: Timestamp) {
        if time > self.max_seen {
            self.max_seen = time;
        }
    }

    /// The new watermark, if it advanced since the last call that returned one.
    pub fn advance(&mut self) -> Option<Timestamp> {
        if self.max_seen == MIN_WATERMARK {
            return None;
        }
        let wm = self.allowed();
        (wm > self.emitted).then(|| {
            self.emitted = wm;
            wm
        })
    }

    pub fn current(&self) -> Timestamp {
        self.emitted
    }

    /// The watermark the records seen so far allow, emitted or not.
    pub fn candidate(&self) -> Timestamp {
        if self.max_seen == MIN_WATERMARK {
            return self.emitted;
        }
        self.emitted.max(self.allowed())
    }

    /// The bound below the largest timestamp seen.
    fn allowed(&self) -> Timestamp {
        self.max_seen.saturating_sub(self.bound).saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_watermark_trails_the_max_by_bound_plus_one() {
        let mut g = WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5)).generator();
        assert_eq!(g.advance(), None);
        g.observe(10_000);
        assert_eq!(g.advance(), Some(4_999));
        g.observe(9_000); // out of order: no regression
        assert_eq!(g.advance(), None);
        g.observe(10_001);
        assert_eq!(g.advance(), Some(5_000));
    }

    #[test]
    fn monotonic_watermark_is_last_timestamp_minus_one() {
        let mut g = WatermarkStrategy::monotonic().generator();
        g.observe(7);
        assert_eq!(g.advance(), Some(6));
    }
}
