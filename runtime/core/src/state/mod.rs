//! Keyed state: per-key values, maps and lists that an operator keeps between records.
//!
//! A keyed operator owns one [`KeyedState`] for the keys of its key-group
//! range. Functions declare their state once, in `open`, and get back typed
//! handles ([`ValueState`], [`MapState`], [`ListState`]); while handling a
//! record or timer they read and write the state *of the current key* through
//! the handle. Tables live on the heap, one hash map per declared state; a
//! snapshot walks them and files each entry under its key's group.
//!
//! ```
//! use weir_core::state::KeyedState;
//! let mut state: KeyedState<String> = KeyedState::default();
//! let count = state.value::<u64>("count");
//! let key = "east".to_string();
//! *state.value_mut(&count, &key).get_or_insert(0) += 2;
//! assert_eq!(state.value_ref(&count, &key), Some(&2));
//! ```

pub mod backend;
pub mod codec;
mod table;

pub use backend::StateBackend;
pub(crate) use table::{Table, decode_entries};

use std::any::Any;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;

use ahash::AHashMap;

use crate::error::TaskResult;
use crate::keygroup::{hash_key, key_group};

/// The hash map of keyed entries in memory: keyed state's tables, the local
/// window phase's panes, the timers' index.
///
/// Hashed by foldhash (the hasher hashbrown itself defaults to): per-process
/// random seeds, like ahash's, but integers are folded into its state before
/// one multiply where ahash without AES instructions (the portable build)
/// multiplies per write. orders-window on the Rust API, whose key is an enum
/// and a window start: 16 % fewer instructions retired. Only in memory: the
/// hash that places a key in its key group is [`hash_key`]'s, stable across
/// builds.
pub(crate) type KeyMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A set of keys in memory, hashed as [`KeyMap`].
pub(crate) type KeySet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// What keyed state can be keyed by.
pub trait Key: crate::element::Data + Hash + Eq + std::fmt::Debug {}
impl<T: crate::element::Data + Hash + Eq + std::fmt::Debug> Key for T {}

trait StateTable<K>: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn clear_key(&mut self, key: &K);
    fn entries(&self) -> usize;
    /// Every entry encoded per key group, in key-group order, as the caller takes them.
    fn group_blobs(&mut self, max_parallelism: u32) -> TaskResult<table::GroupBlobs<'_>>;
    /// Adds the entries of one encoded key group.
    fn decode_group(&mut self, bytes: &[u8]) -> TaskResult;
    fn track_changes(&mut self);
    fn overflowed(&self) -> bool;
    /// The entries changed since the last snapshot, per key group (`None`: not tracked).
    fn encode_changes(&mut self, max_parallelism: u32) -> TaskResult<Option<BTreeMap<u32, Vec<u8>>>>;
    /// Applies the changes of one key group (on disk: when the restore ends).
    fn decode_changes(&mut self, bytes: &[u8]) -> TaskResult;
    /// The restore is over: applies what it held back.
    fn finish_restore(&mut self) -> TaskResult;
    /// The first error of the table's store since the last call.
    fn take_failure(&mut self) -> Option<String>;
}

/// Encodes `(key, value)` pairs per key group, each group's blob as bincode
/// encodes the `Vec` of its pairs (their number, then each pair), in one
/// pass: a pair is encoded into its group's buffer as it comes, rather than
/// collected per group and encoded after (the snapshot of a large table
/// spends its time here, on the task's thread, at the barrier).
pub fn encode_by_group<'a, K: Key, V: serde::Serialize + 'a>(
    entries: impl Iterator<Item = (&'a K, V)>,
    max_parallelism: u32,
) -> BTreeMap<u32, Vec<u8>> {
    let mut groups: Vec<(usize, Vec<u8>)> = Vec::new();
    groups.resize_with(max_parallelism as usize, Default::default);
    for (k, v) in entries {
        let (count, body) = &mut groups[key_group(hash_key(k), max_parallelism) as usize];
        *count += 1;
        codec::encode_into(&(k, v), body);
    }
    let encoded = groups.into_iter().enumerate().filter(|(_, (count, _))| *count > 0);
    encoded
        .map(|(g, (count, body))| {
            let mut blob = Vec::with_capacity(body.len() + 9);
            codec::encode_len(count, &mut blob);
            blob.extend_from_slice(&body);
            (g as u32, blob)
        })
        .collect()
}

impl<K: Key, V: crate::element::Data> StateTable<K> for Table<K, V> {
    fn group_blobs(&mut self, max_parallelism: u32) -> TaskResult<table::GroupBlobs<'_>> {
        Table::group_blobs(self, max_parallelism)
    }
    fn decode_group(&mut self, bytes: &[u8]) -> TaskResult {
        Table::decode_group(self, bytes)
    }
    fn track_changes(&mut self) {
        Table::track_changes(self)
    }
    fn overflowed(&self) -> bool {
        Table::overflowed(self)
    }
    fn encode_changes(&mut self, max_parallelism: u32) -> TaskResult<Option<BTreeMap<u32, Vec<u8>>>> {
        Table::encode_changes(self, max_parallelism)
    }
    fn decode_changes(&mut self, bytes: &[u8]) -> TaskResult {
        Table::decode_changes(self, bytes)
    }
    fn finish_restore(&mut self) -> TaskResult {
        Table::finish_restore(self)
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn clear_key(&mut self, key: &K) {
        Table::clear_key(self, key)
    }
    fn entries(&self) -> usize {
        Table::entries(self)
    }
    fn take_failure(&mut self) -> Option<String> {
        Table::take_failure(self)
    }
}

/// Handle to a single value per key.
pub struct ValueState<V> {
    index: usize,
    _v: PhantomData<fn() -> V>,
}
/// Handle to a map per key.
pub struct MapState<MK, MV> {
    index: usize,
    _v: PhantomData<fn() -> (MK, MV)>,
}
/// Handle to a list per key.
pub struct ListState<V> {
    index: usize,
    _v: PhantomData<fn() -> V>,
}

macro_rules! handle_impls {
    ($($t:ident<$($p:ident),*>),*) => {$(
        impl<$($p),*> Clone for $t<$($p),*> { fn clone(&self) -> Self { *self } }
        impl<$($p),*> Copy for $t<$($p),*> {}
        impl<$($p),*> std::fmt::Debug for $t<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($t), "#{}"), self.index)
            }
        }
    )*};
}
handle_impls!(ValueState<V>, MapState<MK, MV>, ListState<V>);

/// All keyed state of one operator subtask.
pub struct KeyedState<K> {
    names: Vec<String>,
    tables: Vec<Box<dyn StateTable<K>>>,
    backend: StateBackend,
    max_parallelism: u32,
    /// Tables remember what changed between snapshots (incremental checkpoints).
    tracking: bool,
    /// Why a table could not be made, reported at the first check.
    failure: Option<String>,
}

impl<K> Default for KeyedState<K> {
    fn default() -> Self {
        KeyedState {
            names: Vec::new(),
            tables: Vec::new(),
            backend: StateBackend::Heap,
            max_parallelism: crate::keygroup::DEFAULT_MAX_PARALLELISM,
            tracking: false,
            failure: None,
        }
    }
}

impl<K: Key> KeyedState<K> {
    /// Keyed state kept by `backend`, keys spread over `max_parallelism` key groups.
    pub fn new(backend: &StateBackend, max_parallelism: u32) -> Self {
        KeyedState { backend: backend.clone(), max_parallelism, ..Self::default() }
    }

    fn register<V: crate::element::Data>(&mut self, name: &str) -> usize {
        assert!(!self.names.iter().any(|n| n == name), "keyed state `{name}` declared twice");
        self.names.push(name.to_string());
        let mut table = match &self.backend {
            StateBackend::Heap => Table::<K, V>::heap(),
            StateBackend::Disk(store) => Table::on_disk(store, self.max_parallelism).unwrap_or_else(|e| {
                self.failure.get_or_insert(e.to_string());
                Table::heap()
            }),
        };
        if self.tracking {
            table.track_changes();
        }
        self.tables.push(Box::new(table));
        self.tables.len() - 1
    }

    pub fn value<V: crate::element::Data>(&mut self, name: &str) -> ValueState<V> {
        ValueState { index: self.register::<V>(name), _v: PhantomData }
    }

    pub fn map<MK: Key, MV: crate::element::Data>(&mut self, name: &str) -> MapState<MK, MV> {
        MapState { index: self.register::<AHashMap<MK, MV>>(name), _v: PhantomData }
    }

    pub fn list<V: crate::element::Data>(&mut self, name: &str) -> ListState<V> {
        ListState { index: self.register::<Vec<V>>(name), _v: PhantomData }
    }

    fn table_mut<V: 'static>(&mut self, index: usize) -> &mut Table<K, V> {
        self.tables[index].as_any_mut().downcast_mut().expect("state handle of another operator")
    }

    /// The value of `key`, read from disk when the backend keeps it there.
    pub fn value_ref<V: crate::element::Data>(&mut self, h: &ValueState<V>, key: &K) -> Option<&V> {
        let table = self.table_mut::<V>(h.index);
        table.load(key);
        table.map.get(key)
    }

    /// The value slot of `key`: `None` when unset; setting it to `None` clears it.
    pub fn value_mut<'a, V: crate::element::Data>(&'a mut self, h: &ValueState<V>, key: &'a K) -> ValueSlot<'a, K, V> {
        let table = self.table_mut::<V>(h.index);
        table.load(key);
        ValueSlot { table, key }
    }

    pub fn map_mut<MK: Key, MV: crate::element::Data>(
        &mut self,
        h: &MapState<MK, MV>,
        key: &K,
    ) -> &mut AHashMap<MK, MV> {
        let table = self.table_mut::<AHashMap<MK, MV>>(h.index);
        table.load(key);
        table.touch(key);
        if !table.map.contains_key(key) {
            table.map.insert(key.clone(), AHashMap::default());
        }
        table.map.get_mut(key).expect("just inserted")
    }

    pub fn list_mut<V: crate::element::Data>(&mut self, h: &ListState<V>, key: &K) -> &mut Vec<V> {
        let table = self.table_mut::<Vec<V>>(h.index);
        table.load(key);
        table.touch(key);
        if !table.map.contains_key(key) {
            table.map.insert(key.clone(), Vec::new());
        }
        table.map.get_mut(key).expect("just inserted")
    }

    /// Drops empty maps and lists of `key` (so that reading state never grows it).
    pub fn compact_key<MK: Key, MV: crate::element::Data>(&mut self, h: &MapState<MK, MV>, key: &K) {
        let table = self.table_mut::<AHashMap<MK, MV>>(h.index);
        if table.map.get(key).is_some_and(|m| m.is_empty()) {
            table.clear_key(key);
        }
    }

    /// Clears every state of `key`.
    pub fn clear_key(&mut self, key: &K) {
        self.tables.iter_mut().for_each(|t| t.clear_key(key));
    }

    /// Number of declared states.
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// Number of entries over all tables (a size metric; an estimate on disk).
    pub fn entries(&self) -> usize {
        self.tables.iter().map(|t| t.entries()).sum()
    }

    /// The first error of the state's store (a disk that cannot be read or
    /// written), which fails the task: state that was not written is never
    /// checkpointed.
    pub fn check(&mut self) -> TaskResult {
        let failure = self.failure.take().or_else(|| self.tables.iter_mut().find_map(|t| t.take_failure()));
        match failure {
            Some(reason) => Err(crate::error::TaskError::Operator(reason)),
            None => Ok(()),
        }
    }

    /// Every table encoded per key group: group -> one blob per table (empty when the table has nothing there).
    pub fn encode_groups(&mut self, max_parallelism: u32) -> TaskResult<BTreeMap<u32, Vec<Vec<u8>>>> {
        let mut out = BTreeMap::new();
        self.for_each_group(max_parallelism, |g, blobs| {
            out.insert(g, blobs);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`KeyedState::encode_groups`] a group at a time, in key-group order:
    /// `f` gets each group's blobs as the tables read them (on disk, from the
    /// LSM), so the whole state is never in memory at once.
    pub fn for_each_group(
        &mut self,
        max_parallelism: u32,
        mut f: impl FnMut(u32, Vec<Vec<u8>>) -> TaskResult,
    ) -> TaskResult {
        self.check()?;
        let n = self.tables.len();
        let mut tables =
            self.tables.iter_mut().map(|t| t.group_blobs(max_parallelism)).collect::<TaskResult<Vec<_>>>()?;
        let mut heads = tables.iter_mut().map(|t| t.next().transpose()).collect::<TaskResult<Vec<_>>>()?;
        while let Some(g) = heads.iter().flatten().map(|(g, _)| *g).min() {
            let mut blobs = vec![Vec::new(); n];
            for (i, head) in heads.iter_mut().enumerate() {
                if let Some((_, blob)) = head.take_if(|(hg, _)| *hg == g) {
                    blobs[i] = blob;
                    *head = tables[i].next().transpose()?;
                }
            }
            f(g, blobs)?;
        }
        Ok(())
    }

    pub fn backend(&self) -> &StateBackend {
        &self.backend
    }

    /// Each table's blobs per key group, gathered as group -> one blob per table.
    fn encode_each(
        &mut self,
        encode: impl Fn(&mut Box<dyn StateTable<K>>) -> TaskResult<BTreeMap<u32, Vec<u8>>>,
    ) -> TaskResult<BTreeMap<u32, Vec<Vec<u8>>>> {
        let mut out: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        let n = self.tables.len();
        for (i, table) in self.tables.iter_mut().enumerate() {
            for (g, blob) in encode(table)? {
                out.entry(g).or_insert_with(|| vec![Vec::new(); n])[i] = blob;
            }
        }
        Ok(out)
    }

    /// From now on, every table remembers the keys changed between snapshots,
    /// for [`KeyedState::encode_changes`].
    pub fn track_changes(&mut self) {
        self.tracking = true;
        self.tables.iter_mut().for_each(|t| t.track_changes());
    }

    pub fn is_tracking(&self) -> bool {
        self.tracking
    }

    /// What changed since the last snapshot (full or of changes), per key group:
    /// one blob per table (empty when the table changed nothing there).
    /// `None` unless changes are tracked, and when a table had more changes
    /// than it keeps track of: take a full snapshot instead.
    pub fn encode_changes(&mut self, max_parallelism: u32) -> TaskResult<Option<BTreeMap<u32, Vec<Vec<u8>>>>> {
        if !self.tracking || self.tables.iter().any(|t| t.overflowed()) {
            return Ok(None);
        }
        self.check()?;
        let out = self.encode_each(|table| Ok(table.encode_changes(max_parallelism)?.unwrap_or_default()))?;
        self.check()?;
        Ok(Some(out))
    }

    /// Applies one key group's changes, made by [`KeyedState::encode_changes`],
    /// over what was restored before them.
    pub fn decode_changes(&mut self, blobs: &[Vec<u8>]) -> TaskResult {
        self.decode_each(blobs, |table, blob| table.decode_changes(blob))
    }

    /// Ends a restore (of [`KeyedState::decode_group`] and
    /// [`KeyedState::decode_changes`] calls): call it before the state is used.
    pub fn finish_restore(&mut self) -> TaskResult {
        self.tables.iter_mut().try_for_each(|t| t.finish_restore())
    }

    /// Hands each table its blob of a key group (but empty ones).
    fn decode_each(
        &mut self,
        blobs: &[Vec<u8>],
        decode: impl Fn(&mut Box<dyn StateTable<K>>, &[u8]) -> TaskResult,
    ) -> TaskResult {
        self.check_tables(blobs.len())?;
        for (table, blob) in self.tables.iter_mut().zip(blobs) {
            if !blob.is_empty() {
                decode(table, blob)?;
            }
        }
        Ok(())
    }

    fn check_tables(&self, in_snapshot: usize) -> TaskResult {
        if in_snapshot != self.tables.len() {
            return Err(crate::error::TaskError::Operator(format!(
                "cannot restore keyed state: the snapshot has {in_snapshot} states, the function declares {} ({})",
                self.tables.len(),
                self.names.join(", ")
            )));
        }
        Ok(())
    }

    /// Restores one key group from the blobs [`KeyedState::encode_groups`] made.
    pub fn decode_group(&mut self, blobs: &[Vec<u8>]) -> TaskResult {
        self.decode_each(blobs, |table, blob| table.decode_group(blob))
    }
}

/// A key's slot in a [`ValueState`].
pub struct ValueSlot<'a, K, V> {
    table: &'a mut Table<K, V>,
    key: &'a K,
}

impl<K: Key, V: crate::element::Data> ValueSlot<'_, K, V> {
    pub fn get(&self) -> Option<&V> {
        self.table.map.get(self.key)
    }

    pub fn set(&mut self, value: V) {
        self.table.touch(self.key);
        match self.table.map.get_mut(self.key) {
            Some(v) => *v = value,
            None => {
                self.table.map.insert(self.key.clone(), value);
            }
        }
    }

    /// Sets the value if the key has none, and says whether it did: one probe
    /// of the table where `get` then `set` take three (a dedup's whole work).
    pub fn set_if_absent(&mut self, value: V) -> bool {
        use std::collections::hash_map::Entry;
        match self.table.map.entry(self.key.clone()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(value);
                self.table.touch(self.key);
                true
            }
        }
    }

    pub fn clear(&mut self) -> Option<V> {
        self.table.touch(self.key);
        self.table.map.remove(self.key)
    }

    pub fn get_mut(&mut self) -> Option<&mut V> {
        self.table.touch(self.key);
        self.table.map.get_mut(self.key)
    }

    pub fn get_or_insert_with(&mut self, default: impl FnOnce() -> V) -> &mut V {
        self.table.touch(self.key);
        if !self.table.map.contains_key(self.key) {
            self.table.map.insert(self.key.clone(), default());
        }
        self.table.map.get_mut(self.key).expect("just inserted")
    }

    pub fn get_or_insert(&mut self, default: V) -> &mut V {
        self.get_or_insert_with(|| default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_groups_blob_is_the_vec_of_its_pairs() {
        let entries: Vec<(String, u64)> = (0..5_000u64).map(|i| (format!("key-{i}"), i * 7)).collect();
        for max_parallelism in [1, 7, 128] {
            let blobs = encode_by_group(entries.iter().map(|(k, v)| (k, v)), max_parallelism);
            let mut expected: BTreeMap<u32, Vec<(&String, &u64)>> = BTreeMap::new();
            for (k, v) in &entries {
                expected.entry(key_group(hash_key(k), max_parallelism)).or_default().push((k, v));
            }
            assert_eq!(blobs.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
            for (g, pairs) in expected {
                assert_eq!(blobs[&g], codec::encode(&pairs), "group {g} of {max_parallelism}");
                let decoded: Vec<(String, u64)> = codec::decode(&blobs[&g], "a group").unwrap();
                assert_eq!(decoded.len(), pairs.len());
            }
        }
    }
}
