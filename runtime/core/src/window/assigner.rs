//! Window assigners.

use std::time::Duration;

use crate::time::Timestamp;

/// A half-open time interval `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        Window { start, end }
    }

    /// The last millisecond in the window: results carry this timestamp.
    pub fn max_timestamp(&self) -> Timestamp {
        self.end - 1
    }

    /// Overlapping or touching (session windows that touch merge, as in Flink).
    pub fn intersects(&self, other: &Window) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    pub fn cover(&self, other: &Window) -> Window {
        Window { start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// Which windows a record belongs to. Windows are aligned to the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowAssigner {
    Tumbling { size: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

impl WindowAssigner {
    pub fn tumbling(size: Duration) -> Self {
        WindowAssigner::Tumbling { size: size.as_millis() as i64 }
    }

    pub fn sliding(size: Duration, slide: Duration) -> Self {
        WindowAssigner::Sliding { size: size.as_millis() as i64, slide: slide.as_millis() as i64 }
    }

    pub fn session(gap: Duration) -> Self {
        WindowAssigner::Session { gap: gap.as_millis() as i64 }
    }

    /// Checks the parameters; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            WindowAssigner::Tumbling { size } if size <= 0 => Err("window size must be positive".into()),
            WindowAssigner::Sliding { size, slide } if size <= 0 || slide <= 0 => {
                Err("window size and slide must be positive".into())
            }
            WindowAssigner::Sliding { size, slide } if slide > size => {
                Err(format!("slide ({slide} ms) must not exceed size ({size} ms)"))
            }
            WindowAssigner::Session { gap } if gap <= 0 => Err("session gap must be positive".into()),
            _ => Ok(()),
        }
    }

    pub fn is_merging(&self) -> bool {
        matches!(self, WindowAssigner::Session { .. })
    }

    /// Appends the windows of a record at `time` to `out`.
    #[inline]
    pub fn assign(&self, time: Timestamp, out: &mut Vec<Window>) {
        match *self {
            // Saturating at the ends of the time line: timestamps come from the records.
            WindowAssigner::Tumbling { size } => {
                let start = time.saturating_sub(time.rem_euclid(size));
                out.push(Window::new(start, start.saturating_add(size)));
            }
            WindowAssigner::Sliding { size, slide } => {
                let last_start = time.saturating_sub(time.rem_euclid(slide));
                let mut start = last_start;
                while start > time.saturating_sub(size) {
                    out.push(Window::new(start, start.saturating_add(size)));
                    let Some(next) = start.checked_sub(slide) else { break };
                    start = next;
                }
            }
            WindowAssigner::Session { gap } => out.push(Window::new(time, time.saturating_add(gap))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(a: WindowAssigner, t: i64) -> Vec<Window> {
        let mut v = Vec::new();
        a.assign(t, &mut v);
        v
    }

    #[test]
    fn tumbling_is_aligned_to_the_epoch_also_before_it() {
        let a = WindowAssigner::Tumbling { size: 60_000 };
        assert_eq!(assign(a, 1_700_000_061_234), vec![Window::new(1_700_000_040_000, 1_700_000_100_000)]);
        assert_eq!(assign(a, -1), vec![Window::new(-60_000, 0)]);
        assert_eq!(assign(a, 0), vec![Window::new(0, 60_000)]);
    }

    #[test]
    fn sliding_assigns_size_over_slide_windows() {
        let a = WindowAssigner::Sliding { size: 10_000, slide: 2_000 };
        let w = assign(a, 12_345);
        assert_eq!(w.len(), 5);
        assert_eq!(w[0], Window::new(12_000, 22_000));
        assert_eq!(w[4], Window::new(4_000, 14_000));
        assert!(w.iter().all(|w| w.start <= 12_345 && 12_345 < w.end));
    }

    #[test]
    fn times_at_the_ends_of_the_time_line_saturate_instead_of_overflowing() {
        for a in [
            WindowAssigner::Tumbling { size: 60_000 },
            WindowAssigner::Sliding { size: 10_000, slide: 3_000 },
            WindowAssigner::Session { gap: 1_000 },
        ] {
            for t in [i64::MIN, i64::MIN + 1, i64::MAX - 1, i64::MAX] {
                let windows = assign(a, t);
                assert!(windows.iter().all(|w| w.start <= t && w.start <= w.end), "{a:?} at {t}: {windows:?}");
            }
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(WindowAssigner::Sliding { size: 1000, slide: 2000 }.validate().unwrap_err().contains("slide"));
        assert!(WindowAssigner::Tumbling { size: 0 }.validate().is_err());
    }
}
