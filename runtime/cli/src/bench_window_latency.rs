//! The latency of window results (issue 17): from the source's emission of
//! the watermark that fires a window to the window's row at the sink.
//!
//! A window fires when the watermark reaching its operator passes the
//! window's last millisecond, and that watermark is the least of its inputs':
//! so the moment that fires a window is when the *last* source subtask emitted
//! a watermark at or past that millisecond. A [`WatermarkProbe`], chained right
//! after the timestamp assigner, notes when each watermark left each source
//! subtask; the sink notes when each window's row arrived; the latencies are
//! worked out after the job, so neither side does more than append to a list
//! on its hot path. Both clocks are this process's ([`crate::bench::stamp_ns`]).

use std::sync::{Arc, Mutex};

use weir::core::operator::Operator;
use weir::core::output::Collector;
use weir::core::{Record, TaskResult, Timestamp};

use crate::bench::stamp_ns;

/// A time in event time (a watermark, a window's last millisecond) and the
/// moment (`stamp_ns`) something happened to it.
type Noted = (Timestamp, u64);

/// What the probes and the sinks noted; shared by the job's subtasks.
#[derive(Clone, Default)]
pub struct WindowClock {
    /// Per source subtask, its watermarks and when each left it, in order.
    emitted: Arc<Mutex<Vec<Vec<Noted>>>>,
    /// Per window row at a sink: its window's last millisecond, and when it arrived.
    arrived: Arc<Mutex<Vec<Noted>>>,
}

impl WindowClock {
    /// Each arrived row's latency, in microseconds; empty when no row arrived.
    pub fn latencies_us(&self) -> Vec<u32> {
        let emitted = self.emitted.lock().unwrap_or_else(|e| e.into_inner());
        let arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        arrived
            .iter()
            .filter_map(|&(last_ms, at)| {
                let fired = fired_at(&emitted, last_ms)?;
                Some((at.saturating_sub(fired) / 1000).min(u32::MAX as u64) as u32)
            })
            .collect()
    }

    /// A sink's rows: `last_ms` of each row's window, noted as it arrives.
    pub fn arrivals(&self) -> Arrivals {
        Arrivals { rows: Vec::new(), clock: self.clone() }
    }
}

/// When the watermark that fires a window ending at `last_ms` had left every
/// source subtask: the latest of each subtask's first watermark at or past it.
/// `None` when some subtask never emitted one (the row came from elsewhere).
fn fired_at(emitted: &[Vec<Noted>], last_ms: Timestamp) -> Option<u64> {
    emitted.iter().try_fold(0, |latest, marks| {
        let first = marks.partition_point(|&(wm, _)| wm < last_ms);
        marks.get(first).map(|&(_, at)| latest.max(at))
    })
}

/// Passes records and watermarks on as they are, noting when each watermark passed.
pub struct WatermarkProbe<T> {
    marks: Vec<Noted>,
    clock: WindowClock,
    _records: std::marker::PhantomData<fn(T)>,
}

impl<T> WatermarkProbe<T> {
    pub fn new(clock: &WindowClock) -> Self {
        WatermarkProbe { marks: Vec::new(), clock: clock.clone(), _records: std::marker::PhantomData }
    }
}

impl<T: weir::core::Data> Operator for WatermarkProbe<T> {
    type In = T;
    type Out = T;

    fn process_batch(&mut self, batch: Vec<Record<T>>, out: &mut Collector<'_, T>) -> TaskResult {
        out.emit_batch(batch);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, _out: &mut Collector<'_, T>) -> TaskResult {
        self.marks.push((watermark, stamp_ns()));
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Collector<'_, T>) -> TaskResult {
        let marks = std::mem::take(&mut self.marks);
        self.clock.emitted.lock().unwrap_or_else(|e| e.into_inner()).push(marks);
        Ok(())
    }
}

/// A sink subtask's window rows, handed to the clock when it finishes.
pub struct Arrivals {
    rows: Vec<Noted>,
    clock: WindowClock,
}

impl Arrivals {
    pub fn note(&mut self, last_ms: Timestamp, at: u64) {
        self.rows.push((last_ms, at));
    }

    pub fn publish(&mut self) {
        let rows = std::mem::take(&mut self.rows);
        self.clock.arrived.lock().unwrap_or_else(|e| e.into_inner()).extend(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_fires_when_the_last_subtask_passed_its_end() {
        let emitted = vec![vec![(10, 100), (59_999, 200), (70_000, 300)], vec![(5, 150), (60_500, 250)]];
        // Subtask 0 passed 59 999 at 200, subtask 1 at 250: the window fired at 250.
        assert_eq!(fired_at(&emitted, 59_999), Some(250));
        assert_eq!(fired_at(&emitted, 5), Some(150), "the first watermark at or past it, per subtask");
        assert_eq!(fired_at(&emitted, 10), Some(250), "subtask 1 passed 10 only at 60 500");
        assert_eq!(fired_at(&emitted, 60_200), Some(300));
        assert_eq!(fired_at(&emitted, 65_000), None, "subtask 1 never reached it");
    }

    #[test]
    fn latencies_are_from_the_firing_watermark_to_the_arrival() {
        let clock = WindowClock::default();
        clock.emitted.lock().unwrap().push(vec![(59_999, 1_000_000), (119_999, 5_000_000)]);
        let mut sink = clock.arrivals();
        sink.note(59_999, 3_000_000);
        sink.note(119_999, 5_500_000);
        sink.publish();
        assert_eq!(clock.latencies_us(), vec![2_000, 500]);
    }
}
