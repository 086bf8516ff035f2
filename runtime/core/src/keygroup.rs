//! Key groups: the unit in which keyed state is partitioned and rescaled.
//!
//! A key's group is `hash(key) mod max_parallelism`; subtask `i` of an operator
//! with parallelism `p` owns the contiguous range of groups
//! `[ceil(i * max / p), ceil((i + 1) * max / p))` (Flink's assignment), so a
//! snapshot taken at one parallelism can be restored at any other up to
//! `max_parallelism`. The hash is Weir's own ([`KeyHasher`]): it must never
//! change between versions or processes, or restored state would land on the
//! wrong subtask.

use std::hash::{Hash, Hasher};

/// The default maximum parallelism (number of key groups).
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// A stable, fast 64-bit hasher for keys (FxHash-style folding, SplitMix finaliser).
#[derive(Default, Clone, Copy, Debug)]
pub struct KeyHasher {
    state: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyHasher {
    #[inline]
    fn fold(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.fold(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.fold(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.fold(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.fold(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.fold(i);
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.fold(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.fold(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        mix64(self.state)
    }
}

/// The SplitMix64 finaliser.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stable hash of a key.
#[inline]
pub fn hash_key<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = KeyHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// The key group of a key hash: `hash % max_parallelism`, as a mask when
/// that is a power of two (the default, 128). A hash exchange computes this
/// and [`subtask_for_key_group`] for every record, and the two 64-bit
/// divisions were most of its cost (docs/benchmarks.md, "The exchange").
#[inline]
pub fn key_group(hash: u64, max_parallelism: u32) -> u32 {
    match max_parallelism.is_power_of_two() {
        true => (hash & (max_parallelism as u64 - 1)) as u32,
        false => (hash % max_parallelism as u64) as u32,
    }
}

/// The subtask that owns a key group: `group * parallelism / max_parallelism`
/// (a shift when `max_parallelism` is a power of two).
#[inline]
pub fn subtask_for_key_group(group: u32, max_parallelism: u32, parallelism: usize) -> usize {
    let scaled = group as usize * parallelism;
    match max_parallelism.is_power_of_two() {
        true => scaled >> max_parallelism.trailing_zeros(),
        false => scaled / max_parallelism as usize,
    }
}

/// A contiguous range of key groups, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyGroupRange {
    pub start: u32,
    pub end: u32,
}

impl KeyGroupRange {
    /// The key groups subtask `index` of `parallelism` owns.
    pub fn for_subtask(index: usize, parallelism: usize, max_parallelism: u32) -> Self {
        let max = max_parallelism as usize;
        let start = (index * max).div_ceil(parallelism);
        let end = ((index + 1) * max).div_ceil(parallelism);
        KeyGroupRange { start: start as u32, end: end as u32 }
    }

    pub fn contains(&self, group: u32) -> bool {
        (self.start..self.end).contains(&group)
    }

    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The mask and the shift are the division they stand for.
    #[test]
    fn key_groups_and_their_subtasks_are_the_divisions() {
        let hashes = (0..20_000u64).map(mix64).chain([0, 1, u64::MAX, u64::MAX - 1, 1 << 63]);
        let hashes: Vec<u64> = hashes.collect();
        for max in [1u32, 2, 3, 100, 128, 129, 1000, 1024, 32768, u32::MAX / 2 + 1, u32::MAX] {
            for &h in &hashes {
                let group = key_group(h, max);
                assert_eq!(group as u64, h % max as u64, "{h} over {max}");
                for p in [1usize, 2, 3, 7, 64, 128] {
                    let p = p.min(max as usize);
                    assert_eq!(
                        subtask_for_key_group(group, max, p),
                        group as usize * p / max as usize,
                        "{group} {max} {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned values: a change here re-homes every key of every savepoint.
        assert_eq!(hash_key("east"), 0xeae6_4325_14f8_075d);
        assert_eq!(hash_key(&"east".to_string()), hash_key("east"));
        assert_eq!(hash_key(&42u64), 0x1fbb_8ac5_2a8b_7f5e);
        assert_eq!(hash_key("ORD-123456789"), 0xa0f8_1186_7ccf_2c55);
    }

    proptest! {
        #[test]
        fn ranges_partition_all_groups(p in 1usize..=128, max in 1u32..=512) {
            prop_assume!(p as u32 <= max);
            let mut next = 0;
            for i in 0..p {
                let r = KeyGroupRange::for_subtask(i, p, max);
                prop_assert_eq!(r.start, next);
                prop_assert!(!r.is_empty());
                next = r.end;
            }
            prop_assert_eq!(next, max);
        }

        #[test]
        fn owner_of_a_group_has_it_in_its_range(p in 1usize..=64, max in 64u32..=256, g in 0u32..64) {
            let owner = subtask_for_key_group(g, max, p);
            prop_assert!(KeyGroupRange::for_subtask(owner, p, max).contains(g));
        }
    }
}
