//! Approximate distinct counts: a HyperLogLog++ sketch per accumulator.
//!
//! An exact distinct count keeps every distinct value, so its state grows with
//! the data ("unique visitors per hour over a hundred million users"). A
//! [`DistinctSketch`] keeps at most 2^15 six-bit registers (24 KiB) whatever it
//! has seen, and far less while it has seen few values: its standard error is
//! 1.04 / sqrt(2^15) = 0.57%, so the 2% bound is 3.5 standard errors. Sketches
//! merge exactly (the merge of two is the sketch of the union), across slices
//! of a sliding window, across key groups and after a restore. Values are
//! hashed with WyHash at a fixed seed, so sketches written by one process merge
//! with those of another.

use std::hash::Hash;

use cardinality_estimator::CardinalityEstimator;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::AggregateFunction;

/// Registers: 2^15 (precision 15, as BigQuery's HLL_COUNT default).
const PRECISION: usize = 15;
/// Bits per register.
const REGISTER_BITS: usize = 6;

/// An approximate set of values of type `T`, for counting its distinct members.
pub struct DistinctSketch<T: Hash + ?Sized>(CardinalityEstimator<T, wyhash::WyHash, PRECISION, REGISTER_BITS>);

impl<T: Hash + ?Sized> DistinctSketch<T> {
    pub fn new() -> Self {
        DistinctSketch(CardinalityEstimator::new())
    }

    #[inline]
    pub fn insert(&mut self, value: &T) {
        self.0.insert(value)
    }

    /// Adds the values of `other`.
    pub fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0)
    }

    /// The estimated number of distinct values inserted.
    pub fn estimate(&self) -> u64 {
        self.0.estimate() as u64
    }
}

impl<T: Hash + ?Sized> Default for DistinctSketch<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Hash + ?Sized> Clone for DistinctSketch<T> {
    fn clone(&self) -> Self {
        DistinctSketch(self.0.clone())
    }
}

impl<T: Hash + ?Sized> std::fmt::Debug for DistinctSketch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DistinctSketch(~{})", self.estimate())
    }
}

impl<T: Hash + ?Sized> Serialize for DistinctSketch<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Decoding checks the representation (its tag and register count): a damaged
/// sketch is an error, not a sketch that misreads memory.
impl<'de, T: Hash + ?Sized> Deserialize<'de> for DistinctSketch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CardinalityEstimator::deserialize(d).map(DistinctSketch)
    }
}

/// `approx_count_distinct(field)`: the approximate number of distinct values of
/// `field(record)` in a window.
#[derive(Clone)]
pub struct ApproxCountDistinct<F>(pub F);

impl<In, T, F> AggregateFunction<In> for ApproxCountDistinct<F>
where
    T: Hash + Send + 'static,
    F: Fn(&In) -> T + Send + Sync + 'static,
{
    type Acc = DistinctSketch<T>;
    type Result = u64;
    fn create(&self) -> DistinctSketch<T> {
        DistinctSketch::new()
    }
    #[inline]
    fn add(&self, acc: &mut DistinctSketch<T>, value: &In) {
        acc.insert(&(self.0)(value))
    }
    fn merge(&self, acc: &mut DistinctSketch<T>, other: DistinctSketch<T>) {
        acc.merge(&other)
    }
    fn result(&self, acc: &DistinctSketch<T>) -> u64 {
        acc.estimate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::codec;

    fn relative_error(estimate: u64, exact: u64) -> f64 {
        (estimate as f64 - exact as f64).abs() / exact as f64
    }

    #[test]
    fn small_counts_are_exact_and_large_ones_within_two_percent() {
        for exact in [1u64, 2, 10, 100, 1_000, 10_000, 100_000, 1_000_000] {
            let mut s = DistinctSketch::<u64>::new();
            // Every value twice: repeats do not count.
            for _ in 0..2 {
                for v in 0..exact {
                    s.insert(&v);
                }
            }
            let e = s.estimate();
            if exact <= 100 {
                assert_eq!(e, exact);
            }
            assert!(relative_error(e, exact) <= 0.02, "{exact} distinct: estimated {e}");
        }
    }

    #[test]
    fn merged_sketches_count_the_union() {
        // Four overlapping parts, as key groups or slices would hold them.
        let parts: Vec<DistinctSketch<String>> = (0..4u64)
            .map(|p| {
                let mut s = DistinctSketch::new();
                for v in p * 50_000..p * 50_000 + 100_000 {
                    s.insert(&format!("user-{v}"));
                }
                s
            })
            .collect();
        let mut union = DistinctSketch::new();
        for p in &parts {
            union.merge(p);
        }
        let exact = 250_000;
        assert!(relative_error(union.estimate(), exact) <= 0.02, "estimated {}", union.estimate());
        // Merging is idempotent: the union again changes nothing.
        let before = union.estimate();
        union.merge(&parts[0]);
        assert_eq!(union.estimate(), before);
    }

    #[test]
    fn a_sketch_survives_its_snapshot_and_a_damaged_one_is_an_error() {
        for n in [0u64, 2, 50, 5_000] {
            let mut s = DistinctSketch::<u64>::new();
            (0..n).for_each(|v| s.insert(&v));
            let back: DistinctSketch<u64> = codec::decode(&codec::encode(&s), "sketch").unwrap();
            assert_eq!(back.estimate(), s.estimate());
        }
        let mut s = DistinctSketch::<u64>::new();
        (0..5_000u64).for_each(|v| s.insert(&v));
        let mut bytes = codec::encode(&s);
        bytes.truncate(bytes.len() / 2);
        assert!(codec::decode::<DistinctSketch<u64>>(&bytes, "sketch").is_err());
        // A large representation tag with too few registers.
        let forged = codec::encode(&(3usize, Some(vec![1u32, 2, 3])));
        assert!(codec::decode::<DistinctSketch<u64>>(&forged, "sketch").is_err());
    }
}
