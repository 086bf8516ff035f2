//! Barrier alignment: how a task with several input channels lines up the
//! barriers of a checkpoint before it snapshots.
//!
//! Two parts, both on the consuming side of an exchange:
//!
//! * a [`BarrierTracker`], which the [`InputGate`] calls: per channel, the
//!   latest barrier it delivered. A barrier goes on once every channel that
//!   has not ended delivered it; a newer barrier abandons (supersedes) an
//!   unfinished one; a straggler of an abandoned or passed checkpoint is
//!   ignored;
//! * an [`Alignment`], which an input task in exactly-once mode keeps: once a
//!   channel delivered the pending barrier its further events are held back,
//!   up to a budget of records, until the barrier goes on. The blocked
//!   channels are a guard (`BlockedChannels`); dropping it releases them, so
//!   that whichever way an alignment ends (the barrier went on, a newer one
//!   superseded it, it went over budget) the held events are replayed, channel
//!   by channel and in order, before anything new is read from the queue.
//!
//! ```text
//!  channel 0: ─ r r B5 r r ─┐              held: [r r]  (channel 0 blocked)
//!  channel 1: ─ r r r r B5 ─┴─> tracker ──> B5 goes on ──> guard dropped: r r replayed
//! ```
//!
//! [`InputGate`]: crate::exchange::InputGate

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use crate::element::{Barrier, Event};
use crate::exchange::Envelope;

/// The barriers each channel of a gate delivered, and the one being aligned.
#[derive(Debug)]
pub struct BarrierTracker {
    /// Per channel, the checkpoint of the latest barrier it delivered.
    seen: Vec<Option<u64>>,
    pending: Option<Barrier>,
    /// The highest checkpoint id whose barrier was seen.
    last: u64,
}

/// What the arrival of a barrier did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BarrierArrival {
    /// The alignment of this (older) checkpoint was abandoned for the new barrier's.
    pub superseded: Option<u64>,
    /// Every open channel has delivered this barrier: it goes on.
    pub aligned: Option<Barrier>,
}

impl BarrierTracker {
    pub fn new(channels: usize) -> Self {
        BarrierTracker { seen: vec![None; channels], pending: None, last: 0 }
    }

    /// `channel` delivered `barrier`; `ended(c)` says whether channel `c` ended.
    pub fn on_barrier(&mut self, channel: u32, barrier: Barrier, ended: impl Fn(usize) -> bool) -> BarrierArrival {
        let id = barrier.checkpoint_id;
        let mut arrival = BarrierArrival::default();
        match self.pending {
            Some(p) if id < p.checkpoint_id => return arrival, // a straggler of an abandoned checkpoint
            Some(p) if id > p.checkpoint_id => {
                arrival.superseded = Some(p.checkpoint_id);
                self.pending = Some(barrier);
            }
            Some(_) => {}
            None if id <= self.last => return arrival, // already passed on, or abandoned
            None => self.pending = Some(barrier),
        }
        self.last = self.last.max(id);
        self.seen[channel as usize] = Some(id);
        arrival.aligned = self.check(ended);
        arrival
    }

    /// A channel ended: the pending barrier may now be aligned without it.
    pub fn on_end(&mut self, ended: impl Fn(usize) -> bool) -> Option<Barrier> {
        self.check(ended)
    }

    /// The checkpoint whose barrier is being aligned, if any.
    pub fn pending_checkpoint(&self) -> Option<u64> {
        self.pending.map(|b| b.checkpoint_id)
    }

    /// Gives up the pending checkpoint (alignment over budget); its late barriers are ignored.
    pub fn abort_pending(&mut self) -> Option<u64> {
        self.pending.take().map(|b| b.checkpoint_id)
    }

    fn check(&mut self, ended: impl Fn(usize) -> bool) -> Option<Barrier> {
        let barrier = self.pending?;
        let id = barrier.checkpoint_id;
        if (0..self.seen.len()).all(|c| ended(c) || self.seen[c] == Some(id)) {
            self.pending = None;
            return Some(barrier);
        }
        None
    }
}

/// Held events on their way back to the task, shared by the guards that release into it.
type Replay<T> = Rc<RefCell<VecDeque<Envelope<T>>>>;

/// What became of an event offered to an [`Alignment`].
#[derive(Debug)]
pub enum Hold<T> {
    /// Its channel is not blocked: the task processes it now.
    Pass(Event<T>),
    /// Held back until its channel is released.
    Held,
    /// Held back, and the held records now exceed the budget: the task gives the checkpoint up.
    OverBudget,
}

/// Exactly-once alignment of one input task. It lives on the task's thread
/// (the guards share the replay queue with it).
pub struct Alignment<T> {
    channels: usize,
    /// Records the blocked channels may hold back.
    budget: usize,
    replay: Replay<T>,
    blocked: Option<BlockedChannels<T>>,
}

impl<T> Alignment<T> {
    pub fn new(channels: usize, budget: usize) -> Self {
        Alignment { channels, budget, replay: Rc::default(), blocked: None }
    }

    /// The next released event to process again, before anything new from the queue.
    pub fn next_replayed(&self) -> Option<Envelope<T>> {
        self.replay.borrow_mut().pop_front()
    }

    /// Holds `event` back when `channel` is blocked; passes it on otherwise.
    pub fn hold(&mut self, channel: u32, event: Event<T>) -> Hold<T> {
        let Some(blocked) = self.blocked.as_mut().filter(|b| b.blocked[channel as usize]) else {
            return Hold::Pass(event);
        };
        blocked.hold(channel, event);
        if blocked.records > self.budget { Hold::OverBudget } else { Hold::Held }
    }

    /// Blocks `channel`, which delivered the barrier of `checkpoint_id` (the
    /// pending one). An alignment of an older checkpoint is over: its guard is
    /// dropped, releasing its channels, before this one blocks.
    pub fn block(&mut self, channel: u32, checkpoint_id: u64) {
        if self.blocked.as_ref().is_some_and(|b| b.checkpoint_id != checkpoint_id) {
            self.blocked = None;
        }
        let (channels, replay) = (self.channels, &self.replay);
        let blocked = self.blocked.get_or_insert_with(|| BlockedChannels::new(checkpoint_id, channels, replay.clone()));
        blocked.blocked[channel as usize] = true;
    }

    /// The alignment is over (its barrier went on, or it was given up): every channel is released.
    pub fn release(&mut self) {
        self.blocked = None;
    }

    pub fn is_blocked(&self, channel: u32) -> bool {
        self.blocked.as_ref().is_some_and(|b| b.blocked[channel as usize])
    }
}

/// The channels that delivered one checkpoint's barrier, and what they
/// delivered since. A guard: dropping it releases the channels, their held
/// events going to the replay queue channel by channel, in order.
struct BlockedChannels<T> {
    checkpoint_id: u64,
    blocked: Vec<bool>,
    held: Vec<VecDeque<Event<T>>>,
    /// Records held back so far.
    records: usize,
    replay: Replay<T>,
}

impl<T> BlockedChannels<T> {
    fn new(checkpoint_id: u64, channels: usize, replay: Replay<T>) -> Self {
        BlockedChannels {
            checkpoint_id,
            blocked: vec![false; channels],
            held: (0..channels).map(|_| VecDeque::new()).collect(),
            records: 0,
            replay,
        }
    }

    fn hold(&mut self, channel: u32, event: Event<T>) {
        if let Event::Records(batch) = &event {
            self.records += batch.len();
        }
        self.held[channel as usize].push_back(event);
    }
}

impl<T> Drop for BlockedChannels<T> {
    fn drop(&mut self) {
        let mut replay = self.replay.borrow_mut();
        for (c, held) in self.held.iter_mut().enumerate() {
            replay.extend(held.drain(..).map(|e| (c as u32, e)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::Record;

    fn b(id: u64) -> Barrier {
        Barrier { checkpoint_id: id, triggered_at: 0, is_savepoint: false }
    }

    fn aligned(id: u64) -> BarrierArrival {
        BarrierArrival { superseded: None, aligned: Some(b(id)) }
    }

    fn records(values: &[u64]) -> Event<u64> {
        Event::Records(values.iter().map(|&v| Record::new(0, v)).collect())
    }

    fn shown(hold: Hold<u64>) -> String {
        format!("{hold:?}")
    }

    fn replayed(a: &Alignment<u64>) -> Vec<(u32, String)> {
        std::iter::from_fn(|| a.next_replayed()).map(|(c, e)| (c, format!("{e:?}"))).collect()
    }

    #[test]
    fn a_barrier_goes_on_once_every_open_channel_delivered_it() {
        let mut t = BarrierTracker::new(3);
        let mut ended = [false; 3];
        let none = BarrierArrival::default();
        assert_eq!(t.on_barrier(0, b(1), |c| ended[c]), none);
        assert_eq!(t.on_barrier(0, b(1), |c| ended[c]), none, "a duplicate is ignored");
        assert_eq!(t.pending_checkpoint(), Some(1));
        ended[2] = true;
        assert_eq!(t.on_end(|c| ended[c]), None);
        assert_eq!(t.on_barrier(1, b(1), |c| ended[c]), aligned(1));
        assert_eq!(t.pending_checkpoint(), None);
        assert_eq!(t.on_barrier(1, b(1), |c| ended[c]), none, "a passed checkpoint's barrier is ignored");
    }

    #[test]
    fn a_newer_barrier_supersedes_an_unfinished_one_whose_stragglers_are_ignored() {
        let mut t = BarrierTracker::new(2);
        let open = |_| false;
        assert_eq!(t.on_barrier(0, b(2), open), BarrierArrival::default());
        assert_eq!(t.on_barrier(1, b(3), open), BarrierArrival { superseded: Some(2), aligned: None });
        assert_eq!(t.on_barrier(0, b(2), open), BarrierArrival::default());
        assert_eq!(t.on_barrier(0, b(3), open), aligned(3));
    }

    #[test]
    fn an_ended_channel_can_complete_the_alignment() {
        let mut t = BarrierTracker::new(2);
        assert_eq!(t.on_barrier(0, b(1), |_| false), BarrierArrival::default());
        assert_eq!(t.on_end(|c| c == 1), Some(b(1)));
    }

    #[test]
    fn an_aborted_checkpoints_late_barriers_are_ignored() {
        let mut t = BarrierTracker::new(2);
        t.on_barrier(0, b(4), |_| false);
        assert_eq!(t.abort_pending(), Some(4));
        assert_eq!(t.abort_pending(), None);
        assert_eq!(t.on_barrier(1, b(4), |_| false), BarrierArrival::default());
        assert_eq!(t.on_barrier(1, b(5), |_| false), BarrierArrival::default());
        assert_eq!(t.pending_checkpoint(), Some(5));
    }

    #[test]
    fn blocked_channels_are_held_back_and_replayed_in_order_once_released() {
        let mut a = Alignment::new(3, 100);
        assert_eq!(shown(a.hold(0, records(&[1]))), shown(Hold::Pass(records(&[1]))), "nothing blocked yet");
        a.block(2, 7);
        a.block(0, 7);
        assert_eq!(shown(a.hold(0, records(&[2, 3]))), shown(Hold::Held));
        assert_eq!(shown(a.hold(2, Event::Watermark(5))), shown(Hold::Held));
        assert_eq!(shown(a.hold(1, records(&[4]))), shown(Hold::Pass(records(&[4]))), "an unblocked channel goes on");
        assert_eq!(shown(a.hold(0, Event::End(None))), shown(Hold::Held));
        assert!(replayed(&a).is_empty(), "held until released");
        a.release();
        assert!(!a.is_blocked(0) && !a.is_blocked(2));
        let expected = [(0, format!("{:?}", records(&[2, 3]))), (0, "End(None)".into()), (2, "Watermark(5)".into())];
        assert_eq!(replayed(&a), expected, "channel by channel, in order");
    }

    #[test]
    fn blocking_for_a_newer_checkpoint_releases_the_older_alignment_first() {
        let mut a = Alignment::new(2, 100);
        a.block(0, 1);
        assert_eq!(shown(a.hold(0, records(&[1]))), shown(Hold::Held));
        a.block(1, 2); // checkpoint 1 was superseded
        assert!(!a.is_blocked(0) && a.is_blocked(1));
        assert_eq!(replayed(&a), [(0, format!("{:?}", records(&[1])))]);
        assert_eq!(shown(a.hold(0, records(&[2]))), shown(Hold::Pass(records(&[2]))));
    }

    #[test]
    fn holding_more_records_than_the_budget_is_reported() {
        let mut a = Alignment::new(2, 3);
        a.block(1, 1);
        assert_eq!(shown(a.hold(1, records(&[1, 2]))), shown(Hold::Held));
        assert_eq!(shown(a.hold(1, Event::Watermark(1))), shown(Hold::Held), "only records count");
        assert_eq!(shown(a.hold(1, records(&[3, 4]))), shown(Hold::OverBudget));
        a.release();
        assert_eq!(replayed(&a).len(), 3);
    }

    #[test]
    fn dropping_the_alignment_drops_its_guard_which_releases_what_it_held() {
        let mut a = Alignment::new(1, 10);
        a.block(0, 1);
        assert_eq!(shown(a.hold(0, records(&[1]))), shown(Hold::Held));
        let replay = a.replay.clone();
        drop(a);
        assert_eq!(replay.borrow().len(), 1, "the guard released into the queue as it went");
    }
}
