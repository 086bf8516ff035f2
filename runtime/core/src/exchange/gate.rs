//! The consuming side of an exchange: merges the channels of one task input.
//!
//! The gate keeps, per channel, the last watermark, whether the channel is
//! idle, and whether it ended. The task's watermark is the minimum over the
//! channels that are neither idle nor ended; it never goes backwards. The task
//! ends when every channel ended.
//!
//! Barriers go through the gate's [`BarrierTracker`] (barrier alignment lives
//! in [`crate::checkpoint::alignment`]): a barrier is passed on once every
//! channel that has not ended delivered it.

use crate::checkpoint::alignment::BarrierTracker;
use crate::element::Barrier;
use crate::time::{MIN_WATERMARK, Timestamp};

#[derive(Clone, Copy, Debug)]
struct ChannelState {
    watermark: Timestamp,
    idle: bool,
    ended: bool,
}

/// What the gate tells the task to pass on after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum GateEvent {
    Watermark(Timestamp),
    Idle(bool),
    /// Every open channel delivered this barrier.
    Barrier(Barrier),
    /// A newer barrier arrived before this checkpoint's barrier completed: it is abandoned.
    Superseded(u64),
    /// Every channel ended; the newest checkpoint completion any of them
    /// carried ([`crate::element::Event::End`]).
    End(Option<u64>),
}

#[derive(Debug)]
pub struct InputGate {
    channels: Vec<ChannelState>,
    watermark: Timestamp,
    idle: bool,
    barriers: BarrierTracker,
    /// The newest checkpoint completion the ended channels carried.
    completed: Option<u64>,
}

impl InputGate {
    pub fn new(channels: usize) -> Self {
        let state = ChannelState { watermark: MIN_WATERMARK, idle: false, ended: false };
        InputGate {
            channels: vec![state; channels],
            watermark: MIN_WATERMARK,
            idle: false,
            barriers: BarrierTracker::new(channels),
            completed: None,
        }
    }

    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Recomputes the combined watermark and idleness, pushing what changed.
    fn recompute(&mut self, out: &mut Vec<GateEvent>) {
        let mut min: Option<Timestamp> = None;
        let mut any_active = false;
        for c in self.channels.iter().filter(|c| !c.ended && !c.idle) {
            any_active = true;
            min = Some(min.map_or(c.watermark, |m| m.min(c.watermark)));
        }
        let all_ended = self.channels.iter().all(|c| c.ended);
        let idle = !any_active && !all_ended;
        if !idle && self.idle {
            // Active again: say so before any watermark that follows from it.
            self.idle = false;
            out.push(GateEvent::Idle(false));
        }
        if let Some(min) = min {
            if min > self.watermark {
                self.watermark = min;
                out.push(GateEvent::Watermark(min));
            }
        } else if !all_ended {
            // Every open channel is idle: pass on the highest watermark any
            // channel reached, ended ones included (a bounded input's last
            // watermark is the end of time; an idle input must not hide it).
            let max_idle = self.channels.iter().map(|c| c.watermark).max();
            if let Some(w) = max_idle
                && w > self.watermark
            {
                self.watermark = w;
                out.push(GateEvent::Watermark(w));
            }
        }
        if idle && !self.idle {
            self.idle = true;
            out.push(GateEvent::Idle(true));
        }
    }

    pub fn on_watermark(&mut self, channel: u32, watermark: Timestamp, out: &mut Vec<GateEvent>) {
        let c = &mut self.channels[channel as usize];
        c.watermark = c.watermark.max(watermark);
        c.idle = false;
        self.recompute(out);
    }

    pub fn on_idle(&mut self, channel: u32, idle: bool, out: &mut Vec<GateEvent>) {
        self.channels[channel as usize].idle = idle;
        self.recompute(out);
    }

    /// Channel `channel` ended, carrying the checkpoint completion `completed`.
    pub fn on_end(&mut self, channel: u32, completed: Option<u64>, out: &mut Vec<GateEvent>) {
        self.channels[channel as usize].ended = true;
        self.completed = self.completed.max(completed);
        self.recompute(out);
        if let Some(barrier) = self.barriers.on_end(|c| self.channels[c].ended) {
            out.push(GateEvent::Barrier(barrier));
        }
        if self.channels.iter().all(|c| c.ended) {
            out.push(GateEvent::End(self.completed));
        }
    }

    pub fn on_barrier(&mut self, channel: u32, barrier: Barrier, out: &mut Vec<GateEvent>) {
        let arrival = self.barriers.on_barrier(channel, barrier, |c| self.channels[c].ended);
        out.extend(arrival.superseded.map(GateEvent::Superseded));
        out.extend(arrival.aligned.map(GateEvent::Barrier));
    }

    /// The checkpoint whose barrier is being aligned, if any.
    pub fn pending_checkpoint(&self) -> Option<u64> {
        self.barriers.pending_checkpoint()
    }

    /// Gives up the pending checkpoint (alignment over budget); its late barriers are ignored.
    pub fn abort_pending(&mut self) -> Option<u64> {
        self.barriers.abort_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MAX_WATERMARK;

    fn run(gate: &mut InputGate, f: impl FnOnce(&mut InputGate, &mut Vec<GateEvent>)) -> Vec<GateEvent> {
        let mut out = Vec::new();
        f(gate, &mut out);
        out
    }

    #[test]
    fn watermark_is_the_minimum_over_channels() {
        let mut g = InputGate::new(2);
        assert_eq!(run(&mut g, |g, o| g.on_watermark(0, 10, o)), vec![]);
        assert_eq!(run(&mut g, |g, o| g.on_watermark(1, 5, o)), vec![GateEvent::Watermark(5)]);
        assert_eq!(run(&mut g, |g, o| g.on_watermark(1, 20, o)), vec![GateEvent::Watermark(10)]);
        // Never backwards.
        assert_eq!(run(&mut g, |g, o| g.on_watermark(0, 3, o)), vec![]);
    }

    #[test]
    fn idle_channels_do_not_hold_back_the_watermark() {
        let mut g = InputGate::new(2);
        run(&mut g, |g, o| g.on_watermark(0, 100, o));
        assert_eq!(run(&mut g, |g, o| g.on_idle(1, true, o)), vec![GateEvent::Watermark(100)]);
        // All idle: the gate itself becomes idle.
        assert_eq!(run(&mut g, |g, o| g.on_idle(0, true, o)), vec![GateEvent::Idle(true)]);
        assert_eq!(
            run(&mut g, |g, o| g.on_watermark(1, 150, o)),
            vec![GateEvent::Idle(false), GateEvent::Watermark(150)]
        );
    }

    #[test]
    fn ended_channels_count_as_past_every_watermark() {
        let mut g = InputGate::new(2);
        run(&mut g, |g, o| g.on_watermark(0, 7, o));
        assert_eq!(run(&mut g, |g, o| g.on_end(1, None, o)), vec![GateEvent::Watermark(7)]);
        assert_eq!(run(&mut g, |g, o| g.on_end(0, None, o)), vec![GateEvent::End(None)]);
    }

    #[test]
    fn the_end_carries_the_newest_completion_any_channel_carried() {
        let mut g = InputGate::new(3);
        assert_eq!(run(&mut g, |g, o| g.on_end(0, Some(4), o)), vec![]);
        assert_eq!(run(&mut g, |g, o| g.on_end(2, Some(5), o)), vec![]);
        assert_eq!(run(&mut g, |g, o| g.on_end(1, None, o)), vec![GateEvent::End(Some(5))]);
    }

    #[test]
    fn an_ended_channels_last_watermark_passes_once_the_others_are_idle() {
        let mut g = InputGate::new(2);
        run(&mut g, |g, o| g.on_watermark(0, MAX_WATERMARK, o));
        assert_eq!(run(&mut g, |g, o| g.on_end(0, None, o)), vec![]);
        assert_eq!(
            run(&mut g, |g, o| g.on_idle(1, true, o)),
            vec![GateEvent::Watermark(MAX_WATERMARK), GateEvent::Idle(true)]
        );
    }

    /// The alignment itself is tested in `checkpoint::alignment`; this is the gate's part.
    #[test]
    fn barrier_passes_once_all_open_channels_delivered_it() {
        let b = |id| Barrier { checkpoint_id: id, triggered_at: 0, is_savepoint: false };
        let mut g = InputGate::new(3);
        assert_eq!(run(&mut g, |g, o| g.on_barrier(0, b(1), o)), vec![]);
        assert_eq!(run(&mut g, |g, o| g.on_barrier(0, b(1), o)), vec![]); // duplicate ignored
        assert_eq!(run(&mut g, |g, o| g.on_end(2, None, o)), vec![]);
        assert_eq!(run(&mut g, |g, o| g.on_barrier(1, b(1), o)), vec![GateEvent::Barrier(b(1))]);
        // A newer barrier supersedes an unfinished one; the older one's late arrival is ignored.
        assert_eq!(run(&mut g, |g, o| g.on_barrier(0, b(2), o)), vec![]);
        assert_eq!(run(&mut g, |g, o| g.on_barrier(1, b(3), o)), vec![GateEvent::Superseded(2)]);
        assert_eq!(run(&mut g, |g, o| g.on_barrier(0, b(2), o)), vec![]);
        assert_eq!(run(&mut g, |g, o| g.on_barrier(0, b(3), o)), vec![GateEvent::Barrier(b(3))]);
    }
}
