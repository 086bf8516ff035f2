//! Timers: per-key callbacks at an event time or a processing time.
//!
//! A [`TimerQueue`] holds at most one timer per (time, key). Event-time timers
//! fire when the watermark reaches their time; processing-time timers when the
//! wall clock does. Deleting a timer is O(1): it is forgotten in the set and
//! skipped when its time comes.

use std::collections::BTreeMap;

use ahash::AHashSet;

use crate::state::Key;
use crate::time::Timestamp;

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

pub struct TimerQueue<K> {
    by_time: BTreeMap<Timestamp, Vec<K>>,
    live: AHashSet<(Timestamp, K)>,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue { by_time: BTreeMap::new(), live: AHashSet::default() }
    }
}

impl<K: Key> TimerQueue<K> {
    pub fn register(&mut self, time: Timestamp, key: &K) {
        if self.live.insert((time, key.clone())) {
            self.by_time.entry(time).or_default().push(key.clone());
        }
    }

    pub fn delete(&mut self, time: Timestamp, key: &K) {
        self.live.remove(&(time, key.clone()));
    }

    /// The earliest live timer's time.
    pub fn next_time(&mut self) -> Option<Timestamp> {
        self.by_time.keys().next().copied()
    }

    /// Removes and returns the earliest timer at or before `upto`, if any.
    pub fn pop_due(&mut self, upto: Timestamp) -> Option<(Timestamp, K)> {
        loop {
            let mut entry = self.by_time.first_entry()?;
            let time = *entry.key();
            if time > upto {
                return None;
            }
            let key = entry.get_mut().pop();
            if entry.get().is_empty() {
                entry.remove();
            }
            if let Some(key) = key {
                let probe = (time, key);
                if self.live.remove(&probe) {
                    return Some(probe);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// The live timers, by key group of their key.
    pub fn by_group(&self, max_parallelism: u32) -> std::collections::BTreeMap<u32, Vec<(Timestamp, K)>> {
        let mut out: std::collections::BTreeMap<u32, Vec<(Timestamp, K)>> = Default::default();
        for (t, k) in &self.live {
            let g = crate::keygroup::key_group(crate::keygroup::hash_key(k), max_parallelism);
            out.entry(g).or_default().push((*t, k.clone()));
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_time_order_once_and_skips_deleted() {
        let mut q = TimerQueue::<String>::default();
        q.register(30, &"a".into());
        q.register(10, &"b".into());
        q.register(10, &"b".into()); // same timer twice: once
        q.register(20, &"c".into());
        q.delete(20, &"c".into());
        assert_eq!(q.pop_due(25), Some((10, "b".to_string())));
        assert_eq!(q.pop_due(25), None);
        assert_eq!(q.pop_due(100), Some((30, "a".to_string())));
        assert!(q.is_empty());
    }
}
