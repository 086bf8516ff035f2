//! Timers: per-key callbacks at an event time or a processing time.
//!
//! A [`TimerQueue`] holds at most one timer per (time, key). Event-time timers
//! fire when the watermark reaches their time; processing-time timers when the
//! wall clock does. Deleting a timer is O(1): it is forgotten in the set and
//! skipped when its time comes.
//!
//! With the disk backend a queue keeps at most its share of the memory budget
//! in memory: the earliest timers. When it holds more, the later half moves
//! to a keyspace of the store, ordered by time, and every timer at or after
//! the first one there (by time, then key) is registered there from then on.
//! When the timers in memory have all fired, the next ones are read back in
//! order. A window of a hundred million keys, each with its timer, so costs
//! the budget, not a hundred million entries of memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{TaskError, TaskResult};
use crate::state::backend::DiskStore;
use crate::state::{Key, KeySet, StateBackend, codec};
use crate::time::Timestamp;

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

pub struct TimerQueue<K> {
    by_time: BTreeMap<Timestamp, Vec<K>>,
    live: KeySet<(Timestamp, K)>,
    disk: Option<Box<DiskTimers>>,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue { by_time: BTreeMap::new(), live: KeySet::default(), disk: None }
    }
}

/// The later timers of a queue, on disk.
struct DiskTimers {
    store: Arc<DiskStore>,
    /// Made at the first spill: a queue that never held more than its share
    /// takes no part of the store (nor of the tables' caches).
    keyspace: Option<fjall::Keyspace>,
    /// The first stored timer (time, then key, as stored): every timer at or
    /// after it is on disk, every one before it in memory. `None`: none on disk.
    boundary: Option<Vec<u8>>,
    /// The first error of the store, failing the task at its next check.
    failure: Option<String>,
    scratch: Vec<u8>,
}

/// A timer as stored: its time, ordered as bytes (sign bit flipped, big-endian), then its key's encoding.
fn encode_timer<K: Key>(time: Timestamp, key: &K, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
    codec::encode_into(key, out);
}

fn decode_timer<K: Key>(bytes: &[u8]) -> TaskResult<(Timestamp, K)> {
    let Some((time, key)) = bytes.split_first_chunk::<8>() else {
        return Err(TaskError::Operator("disk state: a timer without its time".into()));
    };
    Ok(((u64::from_be_bytes(*time) ^ (1 << 63)) as Timestamp, codec::decode(key, "a timer's key on disk")?))
}

impl<K: Key> TimerQueue<K> {
    /// A queue kept by `backend`: with the disk backend, within its budget.
    pub fn new(backend: &StateBackend) -> Self {
        let StateBackend::Disk(store) = backend else { return Self::default() };
        let disk =
            DiskTimers { store: store.clone(), keyspace: None, boundary: None, failure: None, scratch: Vec::new() };
        TimerQueue { disk: Some(Box::new(disk)), ..Self::default() }
    }

    pub fn register(&mut self, time: Timestamp, key: &K) {
        if let Some(disk) = &mut self.disk
            && let (Some(keyspace), Some(boundary)) = (&disk.keyspace, &disk.boundary)
        {
            encode_timer(time, key, &mut disk.scratch);
            if disk.scratch >= *boundary {
                if let Err(e) = keyspace.insert(&disk.scratch, b"") {
                    disk.fail(format!("cannot write a timer: {e}"));
                }
                return;
            }
        }
        if self.live.insert((time, key.clone())) {
            self.by_time.entry(time).or_default().push(key.clone());
            if self.disk.as_ref().is_some_and(|d| self.live.len() > d.capacity::<K>()) {
                self.spill();
            }
        }
    }

    pub fn delete(&mut self, time: Timestamp, key: &K) {
        if let Some(disk) = &mut self.disk
            && let (Some(keyspace), Some(boundary)) = (&disk.keyspace, &disk.boundary)
        {
            encode_timer(time, key, &mut disk.scratch);
            if disk.scratch >= *boundary {
                if let Err(e) = keyspace.remove(&disk.scratch) {
                    disk.fail(format!("cannot delete a timer: {e}"));
                }
                return;
            }
        }
        self.live.remove(&(time, key.clone()));
    }

    /// The earliest live timer's time.
    pub fn next_time(&mut self) -> Option<Timestamp> {
        // Every timer in memory is before every one on disk.
        self.by_time.keys().next().copied().or_else(|| {
            let boundary = self.disk.as_ref()?.boundary.as_deref()?;
            decode_timer::<K>(boundary).ok().map(|(t, _)| t)
        })
    }

    /// Removes and returns the earliest timer at or before `upto`, if any.
    pub fn pop_due(&mut self, upto: Timestamp) -> Option<(Timestamp, K)> {
        loop {
            let Some(mut entry) = self.by_time.first_entry() else {
                // Memory is empty: the next timers, if any are due, are on disk.
                if self.read_back(upto) {
                    continue;
                }
                return None;
            };
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

    /// Live timers in memory, and an estimate of those on disk.
    pub fn len(&self) -> usize {
        let on_disk = self.disk.as_ref().and_then(|d| d.keyspace.as_ref());
        self.live.len() + on_disk.map_or(0, |k| k.approximate_len())
    }

    /// The live timers, by key group of their key (with the disk backend,
    /// read from disk too: an error of the store fails the snapshot).
    pub fn by_group(&mut self, max_parallelism: u32) -> TaskResult<BTreeMap<u32, Vec<(Timestamp, K)>>> {
        let mut out: BTreeMap<u32, Vec<(Timestamp, K)>> = Default::default();
        let mut add = |t: Timestamp, k: K| {
            let g = crate::keygroup::key_group(crate::keygroup::hash_key(&k), max_parallelism);
            out.entry(g).or_default().push((t, k));
        };
        for (t, k) in &self.live {
            add(*t, k.clone());
        }
        if let Some(disk) = &mut self.disk {
            if let Some(failure) = disk.failure.take() {
                return Err(TaskError::Operator(failure));
            }
            if let (Some(keyspace), Some(_)) = (&disk.keyspace, &disk.boundary) {
                for guard in keyspace.iter() {
                    let (k, _) = guard.into_inner().map_err(|e| disk.read_error(e))?;
                    let (t, k) = decode_timer(&k)?;
                    add(t, k);
                }
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.disk.as_ref().is_none_or(|d| d.boundary.is_none())
    }

    /// The first error of the queue's store since the last call.
    pub fn take_failure(&mut self) -> Option<String> {
        self.disk.as_mut().and_then(|d| d.failure.take())
    }

    /// Moves the later half of the timers in memory to disk.
    fn spill(&mut self) {
        let Some(disk) = &mut self.disk else { return };
        let keyspace = match &disk.keyspace {
            Some(keyspace) => keyspace.clone(),
            None => match disk.store.create_table() {
                Ok((_, keyspace)) => disk.keyspace.insert(keyspace).clone(),
                Err(e) => {
                    // Kept in memory; the task fails at its next check.
                    disk.fail(format!("cannot create a timer queue: {e}"));
                    return;
                }
            },
        };
        let mut timers: Vec<(Vec<u8>, Timestamp, K)> = Vec::with_capacity(self.live.len());
        for (t, k) in self.live.drain() {
            let mut bytes = Vec::new();
            encode_timer(t, &k, &mut bytes);
            timers.push((bytes, t, k));
        }
        timers.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let later = timers.split_off(timers.len() / 2);
        for (bytes, _, _) in &later {
            if let Err(e) = keyspace.insert(bytes, b"") {
                disk.fail(format!("cannot write a timer: {e}"));
                break;
            }
        }
        disk.boundary = later.into_iter().next().map(|(bytes, _, _)| bytes).or(disk.boundary.take());
        self.by_time.clear();
        for (_, t, k) in timers {
            self.by_time.entry(t).or_default().push(k.clone());
            self.live.insert((t, k));
        }
    }

    /// With memory empty: reads the earliest timers on disk back into memory,
    /// when the first of them is due at `upto`. Whether it read any.
    fn read_back(&mut self, upto: Timestamp) -> bool {
        let Some(disk) = &mut self.disk else { return false };
        let (Some(keyspace), Some(boundary)) = (disk.keyspace.clone(), &disk.boundary) else { return false };
        match decode_timer::<K>(boundary) {
            Ok((first, _)) if first <= upto => {}
            Ok(_) => return false,
            Err(e) => {
                disk.fail(e.to_string());
                return false;
            }
        }
        let most = (disk.capacity::<K>() / 2).max(1);
        let mut read: Vec<fjall::Slice> = Vec::with_capacity(most);
        let mut next = None;
        // From the boundary: what is before it was read back and deleted, and
        // an iterator from the start would step over its tombstones every time.
        for guard in keyspace.range(boundary.clone()..) {
            match guard.key() {
                Ok(k) if read.len() < most => read.push(k),
                Ok(k) => {
                    next = Some(k.to_vec());
                    break;
                }
                Err(e) => {
                    let e = disk.read_error(e);
                    disk.fail(e.to_string());
                    return false;
                }
            }
        }
        for bytes in &read {
            let decoded = decode_timer::<K>(bytes);
            if let Err(e) = keyspace.remove(bytes.clone()) {
                disk.fail(format!("cannot delete a timer: {e}"));
                return false;
            }
            match decoded {
                Ok((t, k)) => {
                    if self.live.insert((t, k.clone())) {
                        self.by_time.entry(t).or_default().push(k);
                    }
                }
                Err(e) => {
                    disk.fail(e.to_string());
                    return false;
                }
            }
        }
        disk.boundary = next;
        !read.is_empty()
    }
}

impl DiskTimers {
    /// Timers the queue keeps in memory before it moves half of them to disk.
    fn capacity<K>(&self) -> usize {
        // A set slot and a list slot per timer, and hash table overhead.
        let per_timer = (2 * size_of::<(Timestamp, K)>() + 16) as u64;
        (self.store.cache_share() / per_timer).max(64) as usize
    }

    fn fail(&mut self, reason: String) {
        self.failure.get_or_insert_with(|| format!("disk state: {}: {reason}", self.store.dir().display()));
    }

    fn read_error(&self, e: fjall::Error) -> TaskError {
        TaskError::Operator(format!("disk state: cannot read timers in {}: {e}", self.store.dir().display()))
    }
}

impl Drop for DiskTimers {
    fn drop(&mut self) {
        if let Some(keyspace) = self.keyspace.take() {
            self.store.drop_table(keyspace);
        }
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

    /// On disk at the smallest budget, with far more timers than it keeps in
    /// memory: registrations, deletions and firings interleaved give the
    /// heap's timers, time after time, and snapshot the same timers.
    #[test]
    fn disk_timers_fire_as_the_heaps_do() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = StateBackend::disk(tmp.path(), crate::state::backend::MIN_MEMORY).unwrap();
        let mut heap = TimerQueue::<u64>::default();
        let mut disk = TimerQueue::<u64>::new(&backend);
        // A fixed, scattered sequence (no generator needed): a multiplicative hash of i.
        let scatter = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        let mut watermark = -1i64;
        for round in 0..3u64 {
            for i in 0..450_000u64 {
                let time = watermark + 1 + (scatter(i + round * 1_000_003) % 50_000) as i64;
                let key = scatter(i ^ (round << 32)) % 60_000;
                heap.register(time, &key);
                disk.register(time, &key);
                if i % 5 == 0 {
                    heap.delete(time, &key);
                    disk.delete(time, &key);
                }
            }
            let most = disk.disk.as_ref().unwrap().capacity::<u64>();
            assert!(disk.live.len() <= most && disk.live.len() < heap.len(), "{} of {}", disk.live.len(), heap.len());
            let (mut a, mut b) = (heap.by_group(128).unwrap(), disk.by_group(128).unwrap());
            a.values_mut().chain(b.values_mut()).for_each(|v| v.sort_unstable());
            assert_eq!(a, b, "round {round}: the snapshots differ");
            // Fire the first part of the timers, also registering some due at once.
            for step in 0..4 {
                watermark += 4_000;
                let (mut fired_heap, mut fired_disk) = (Vec::new(), Vec::new());
                while let Some(t) = heap.pop_due(watermark) {
                    fired_heap.push(t);
                }
                while let Some(t) = disk.pop_due(watermark) {
                    fired_disk.push(t);
                }
                fired_heap.sort_unstable();
                fired_disk.sort_unstable();
                assert_eq!(fired_heap, fired_disk, "round {round} step {step}");
                assert!(fired_disk.windows(2).all(|w| w[0] != w[1]), "a timer fired twice");
                heap.register(watermark + 1, &7);
                disk.register(watermark + 1, &7);
            }
            assert_eq!(heap.next_time(), disk.next_time());
        }
        let (mut rest_heap, mut rest_disk) = (Vec::new(), Vec::new());
        while let Some(t) = heap.pop_due(Timestamp::MAX) {
            rest_heap.push(t);
        }
        while let Some(t) = disk.pop_due(Timestamp::MAX) {
            rest_disk.push(t);
        }
        assert!(rest_disk.windows(2).all(|w| w[0].0 <= w[1].0), "timers fire in time order");
        rest_heap.sort_unstable();
        rest_disk.sort_unstable();
        assert_eq!(rest_heap, rest_disk);
        assert!(disk.is_empty() && disk.take_failure().is_none());
    }
}
