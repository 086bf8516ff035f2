//! # weir-workloads: the streams of `bench/WORKLOADS.md`
//!
//! Three deterministic event streams, each event a pure function of its
//! number `n`: [`order`], [`payment`] (the payment of order `n`, when it was
//! paid) and [`bid`]. The benchmarks (`weir bench`), the pipeline files'
//! `datagen` source and the tests run them through [`WorkloadStreams`], which
//! generates them with the engine's splittable [`weir::datagen`] source, so any
//! subtask can produce any range and answers can be checked exactly against
//! the oracles in `bench/oracle/`.
//!
//! ```
//! use weir_workloads::{order, payment, Region};
//! let o = order(42);
//! assert_eq!(o.order_id.to_string(), "ORD-42");
//! assert!(o.amount >= 10 && o.amount <= 1000);
//! if let Some(p) = payment(42) {
//!     assert_eq!((p.order_id, p.amount), (o.order_id, o.amount));
//!     assert!(p.time >= o.time + 1000 && p.time <= o.time + 121_000);
//! }
//! ```
//!
//! This crate is not part of the user API (`weir`): a job depends on it only to
//! run the workloads.

use std::fmt;

use serde::{Deserialize, Serialize};
use weir::core::keygroup::mix64;
use weir::datagen::IntoRateProfile;
use weir::prelude::{DataStream, StreamEnv};

/// `T0` of the workloads: epoch milliseconds of event 0.
pub const T0: i64 = 1_700_000_000_000;
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
    /// Padding of 40 to 99 `x`s. Generated bids borrow it from a static string
    /// (no allocation per bid); deserialized ones own theirs.
    pub extra: std::borrow::Cow<'static, str>,
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
        extra: std::borrow::Cow::Borrowed(&PAD[..(40 + (s >> 24) % 60) as usize]),
    }
}

/// The payment of an order: same id and amount, paid 1 s to about 2 min later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub order_id: OrderId,
    pub amount: i64,
    pub time: i64,
}

/// Whether order number `n` is a re-sent duplicate of the order before it.
#[inline]
pub fn is_resent(n: u64) -> bool {
    n > 0 && (mix64(n) >> 20) % 100 < 2
}

/// The payment of order number `n`, or `None`: re-sent duplicates are not paid
/// again, and one order in twenty is never paid.
#[inline]
pub fn payment(n: u64) -> Option<Payment> {
    if is_resent(n) {
        return None;
    }
    let q = mix64(n ^ 0x2545_F491_4F6C_DD1D);
    if q % 100 < 5 {
        return None;
    }
    let o = order(n);
    Some(Payment { order_id: o.order_id, amount: o.amount, time: o.time + 1000 + ((q >> 8) % 120_000) as i64 })
}

/// Watermark bounds of the streams: no event is later than this behind the newest.
pub mod bounds {
    use std::time::Duration;
    /// Orders are up to 5 s out of order.
    pub const ORDERS: Duration = Duration::from_secs(5);
    /// Payments are up to 126 s out of order (the order's 5 s and the payment's delay).
    pub const PAYMENTS: Duration = Duration::from_secs(126);
    /// Bids are up to 2 s out of order.
    pub const BIDS: Duration = Duration::from_secs(2);
}

/// The workload streams as sources of a job: `count` events (unbounded when
/// `None`) at `rate` over all subtasks: `None` (unthrottled),
/// `Some(events_per_second)`, or a [`RateProfile`](weir::datagen::RateProfile)
/// (steps, a sine: a load that changes, to test an autoscaler with).
pub trait WorkloadStreams {
    /// The `orders` stream.
    fn orders(&self, count: Option<u64>, rate: impl IntoRateProfile) -> DataStream<Order>;
    /// The `payments` of orders `0..count` (about 0.93 per order).
    fn payments(&self, count: Option<u64>, rate: impl IntoRateProfile) -> DataStream<Payment>;
    /// The `bids` stream.
    fn bids(&self, count: Option<u64>, rate: impl IntoRateProfile) -> DataStream<Bid>;
}

impl WorkloadStreams for StreamEnv {
    fn orders(&self, count: Option<u64>, rate: impl IntoRateProfile) -> DataStream<Order> {
        self.datagen("orders", order, count, rate)
    }

    fn payments(&self, count: Option<u64>, rate: impl IntoRateProfile) -> DataStream<Payment> {
        self.datagen("payments", payment, count, rate).flat_map(|p| p)
    }

    fn bids(&self, count: Option<u64>, rate: impl IntoRateProfile) -> DataStream<Bid> {
        self.datagen("bids", bid, count, rate)
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
        let dup = (1..10_000u64).find(|&n| is_resent(n)).unwrap();
        assert_eq!(order(dup), order(dup - 1));
    }

    #[test]
    fn payments_follow_the_workload_definition() {
        let dup = (1..10_000u64).find(|&n| is_resent(n)).unwrap();
        assert_eq!(payment(dup), None, "a re-sent order is not paid again");
        let unpaid = (0..10_000u64).find(|&n| !is_resent(n) && mix64(n ^ 0x2545_F491_4F6C_DD1D) % 100 < 5).unwrap();
        assert_eq!(payment(unpaid), None);
        let paid = (0..100_000).filter_map(payment).count();
        assert!((92_000..94_500).contains(&paid), "about 0.93 payments per order, got {paid} of 100000");
        for n in 0..10_000 {
            if let Some(p) = payment(n) {
                let o = order(n);
                assert_eq!((p.order_id, p.amount), (o.order_id, o.amount));
                assert!((o.time + 1000..o.time + 121_000).contains(&p.time), "payment {n} at {}", p.time);
            }
        }
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
