//! The deterministic `orders` and `bids` event streams of the benchmark
//! workloads (`bench/WORKLOADS.md`), and a splittable, optionally rate-limited
//! source that generates them.
//!
//! Every event is a pure function of its number `n`, so any subtask can
//! produce any range of the stream. The source splits the numbers into blocks
//! of [`BLOCK`] events dealt round-robin to the subtasks: all subtasks move
//! through event time together, which keeps window state small.
//!
//! ```
//! use weir::datagen::{order, Region};
//! let o = order(42);
//! assert_eq!(o.order_id.to_string(), "ORD-42");
//! assert!(o.amount >= 10 && o.amount <= 1000);
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_core::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use weir_core::keygroup::mix64;
use weir_core::source::{Source, SourcePoll};
use weir_core::state::codec;
use weir_core::{NO_TIMESTAMP, Record, TaskResult};

/// `T0` of the workloads: epoch milliseconds of event 0.
pub const T0: i64 = 1_700_000_000_000;
/// Events per block of the datagen split.
pub const BLOCK: u64 = 1024;

/// An order's id, `ORD-<n>`, kept as its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(pub u64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ORD-{}", self.0)
    }
}

impl Serialize for OrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OrderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.strip_prefix("ORD-")
            .and_then(|n| n.parse().ok())
            .map(OrderId)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid order id `{s}`, expected ORD-<number>")))
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($v),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            pub fn as_str(&self) -> &'static str { match self { $($name::$v => $s),* } }
            pub fn index(&self) -> usize { *self as usize }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(
    /// The four regions of the orders stream.
    Region { North = "north", South = "south", East = "east", West = "west" }
);

/// The four channels of the bids stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Channel {
    Google,
    Facebook,
    Baidu,
    Apple,
}

impl Channel {
    pub const ALL: &'static [Channel] = &[Channel::Google, Channel::Facebook, Channel::Baidu, Channel::Apple];
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Google => "Google",
            Channel::Facebook => "Facebook",
            Channel::Baidu => "Baidu",
            Channel::Apple => "Apple",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: OrderId,
    pub region: Region,
    pub amount: i64,
    pub time: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub channel: Channel,
    pub time: i64,
    pub extra: String,
}

/// Order number `n` (a re-sent duplicate repeats order `n - 1` whole).
#[inline]
pub fn order(mut n: u64) -> Order {
    loop {
        let r = mix64(n);
        if n > 0 && (r >> 20) % 100 < 2 {
            n -= 1;
            continue;
        }
        return Order {
            order_id: OrderId(n),
            region: Region::ALL[(r % 4) as usize],
            amount: 10 + ((r >> 8) % 991) as i64,
            time: T0 + n as i64 - ((r >> 32) % 5000) as i64,
        };
    }
}

const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// Bid number `n`.
#[inline]
pub fn bid(n: u64) -> Bid {
    let r = mix64(n);
    let s = mix64(n ^ 0x5851_F42D_4C95_7F2D);
    let block = n / 50;
    let last = 1000 + 3 * block;
    let auction = if r & 1 == 0 { (last / 100) * 100 } else { last - (r >> 1) % 100 };
    Bid {
        auction: auction as i64,
        bidder: (1000 + block - (r >> 16) % (block + 1).min(1000)) as i64,
        price: (100 + (r >> 32) % 100_000) as i64,
        channel: Channel::ALL[(s % 4) as usize],
        time: T0 + (n / 10) as i64 - ((s >> 8) % 2000) as i64,
        extra: PAD[..(40 + (s >> 24) % 60) as usize].to_string(),
    }
}

/// Which part of a generated stream one source subtask produces.
#[derive(Clone, Copy, Debug)]
pub struct DatagenSplit {
    pub subtask: usize,
    pub parallelism: usize,
    /// Events in the whole stream; unbounded when `None`.
    pub count: Option<u64>,
    /// Events per second over all subtasks; unthrottled when `None`.
    pub rate: Option<f64>,
}

/// One lane of a generated stream: blocks `next_block, next_block + stride, ...`,
/// the first of them from `offset`. A subtask starts with one lane; after a
/// restore at another parallelism it may have several, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lane {
    pub next_block: u64,
    pub stride: u64,
    pub offset: u64,
}

/// A source producing `generate(n)` for its share of event numbers.
pub struct DatagenSource<T, G> {
    generate: G,
    split: DatagenSplit,
    lanes: std::collections::VecDeque<Lane>,
    emitted: u64,
    started: Option<Instant>,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T, G: Fn(u64) -> T> DatagenSource<T, G> {
    pub fn new(generate: G, split: DatagenSplit) -> Self {
        let lane = Lane { next_block: split.subtask as u64, stride: split.parallelism as u64, offset: 0 };
        DatagenSource { generate, split, lanes: [lane].into(), emitted: 0, started: None, _t: std::marker::PhantomData }
    }

    fn exhausted(&self, lane: &Lane) -> bool {
        self.split.count.is_some_and(|count| lane.next_block * BLOCK + lane.offset >= count)
    }
}

impl<T: Send, G: Fn(u64) -> T + Send> Source<T> for DatagenSource<T, G> {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> TaskResult<SourcePoll> {
        while let Some(lane) = self.lanes.front() {
            if !self.exhausted(lane) {
                break;
            }
            self.lanes.pop_front();
        }
        let Some(mut lane) = self.lanes.pop_front() else { return Ok(SourcePoll::Finished) };
        let first = lane.next_block * BLOCK + lane.offset;
        let mut end = (lane.next_block + 1) * BLOCK;
        if let Some(count) = self.split.count {
            end = end.min(count);
        }
        if let Some(rate) = self.split.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            let per_subtask = rate / self.split.parallelism as f64;
            let allowed = (started.elapsed().as_secs_f64() * per_subtask) as u64 + 1;
            if self.emitted >= allowed {
                self.lanes.push_front(lane);
                return Ok(SourcePoll::Idle(Duration::from_millis(10)));
            }
            end = end.min(first + (allowed - self.emitted));
        }
        out.reserve(end.saturating_sub(first) as usize);
        out.extend((first..end).map(|n| Record::new(NO_TIMESTAMP, (self.generate)(n))));
        self.emitted += end - first;
        if end == (lane.next_block + 1) * BLOCK {
            lane.next_block += lane.stride;
            lane.offset = 0;
        } else {
            lane.offset = end - lane.next_block * BLOCK;
        }
        // Lanes take turns block by block, so they move through event time together.
        self.lanes.push_back(lane);
        Ok(SourcePoll::Ready)
    }

    fn snapshot_state(&mut self) -> TaskResult<OperatorSnapshot> {
        let entries = self.lanes.iter().filter(|l| !self.exhausted(l)).map(codec::encode).collect();
        Ok(OperatorSnapshot { keyed: Vec::new(), entries })
    }

    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        self.lanes = state.entries.iter().map(|e| codec::decode(e, "a datagen position")).collect::<TaskResult<_>>()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_follow_the_workload_definition() {
        // Order 0 from the definition: r = mix(0).
        let r = mix64(0);
        let o = order(0);
        assert_eq!(o.region, Region::ALL[(r % 4) as usize]);
        assert_eq!(o.time, T0 - ((r >> 32) % 5000) as i64);
        // A duplicate repeats the previous order whole.
        let dup = (1..10_000u64).find(|&n| (mix64(n) >> 20) % 100 < 2).unwrap();
        assert_eq!(order(dup), order(dup - 1));
    }

    #[test]
    fn splits_cover_every_event_once() {
        for p in 1..=4 {
            let mut seen = Vec::new();
            for i in 0..p {
                let split = DatagenSplit { subtask: i, parallelism: p, count: Some(5_000), rate: None };
                let mut s = DatagenSource::new(|n| n, split);
                let mut out = Vec::new();
                while s.poll(&mut out).unwrap() != SourcePoll::Finished {}
                seen.extend(out.into_iter().map(|r| r.value));
            }
            seen.sort();
            assert_eq!(seen, (0..5_000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_restored_position_continues_exactly_at_any_parallelism() {
        // Run 3 subtasks part of the way, snapshot, restore the lanes onto 2, and finish.
        let count = 20_000;
        let mut seen = Vec::new();
        let mut entries = Vec::new();
        for i in 0..3 {
            let mut s =
                DatagenSource::new(|n| n, DatagenSplit { subtask: i, parallelism: 3, count: Some(count), rate: None });
            let mut out = Vec::new();
            for _ in 0..(i + 2) {
                s.poll(&mut out).unwrap();
            }
            seen.extend(out.into_iter().map(|r| r.value));
            entries.extend(s.snapshot_state().unwrap().entries);
        }
        for j in 0..2 {
            let mut s =
                DatagenSource::new(|n| n, DatagenSplit { subtask: j, parallelism: 2, count: Some(count), rate: None });
            let mine = entries.iter().enumerate().filter(|(k, _)| k % 2 == j).map(|(_, e)| e.clone()).collect();
            s.restore_state(RestoredState { keyed: vec![], entries: mine, all_entries: vec![] }).unwrap();
            let mut out = Vec::new();
            while s.poll(&mut out).unwrap() != SourcePoll::Finished {}
            seen.extend(out.into_iter().map(|r| r.value));
        }
        seen.sort();
        assert_eq!(seen, (0..count).collect::<Vec<_>>());
    }

    #[test]
    fn order_ids_serialize_as_strings() {
        let json = serde_json::to_string(&order(42)).unwrap();
        assert!(json.starts_with(r#"{"order_id":"ORD-42","region":"#), "{json}");
        let back: Order = serde_json::from_str(&json).unwrap();
        assert_eq!(back, order(42));
        assert!(serde_json::from_str::<OrderId>(r#""X-1""#).unwrap_err().to_string().contains("invalid order id"));
    }
}
