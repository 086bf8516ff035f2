//! One declared state's entries: a hash map on the heap, and with the disk
//! backend an LSM keyspace behind it.
//!
//! With the disk backend the map is a cache of the entries in use. A key is
//! read from disk the first time an operator asks for it (unless the store's
//! filter says it was never written), and every key changed since it was
//! written back is remembered as dirty. When the cache outgrows its share of
//! the memory budget, the dirty entries are written back in sorted batches
//! (a dirty key no longer in the map is a delete) and the cache is emptied.
//! In the LSM a key is its key group (4 bytes, big-endian) followed by its
//! encoding, so entries are ordered by key group.
//!
//! For incremental checkpoints a table also remembers the keys changed since
//! its last snapshot, and encodes their values (or their removal) per key
//! group. It stops once they are more than its cache holds on disk, or half
//! its entries on the heap (a full snapshot is then the cheaper one), until
//! its next full snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::backend::DiskStore;
use super::{Key, KeyMap, KeySet, codec, encode_by_group};
use crate::element::Data;
use crate::error::{TaskError, TaskResult};
use crate::keygroup::{hash_key, key_group};

/// Entries written back at once: sorted and written as new tables of the
/// LSM, as a memtable of about this many entries would be flushed.
const WRITE_BACK_BATCH: usize = 1 << 20;

/// The first byte of a key group's entries as the disk backend snapshots
/// them: in stored-key order, each its key's and its value's encodings with
/// their lengths before them ([`SortedEntries`]). A disk table restores them
/// as they are, with no value decoded and nothing sorted. The heap's blob,
/// bincode's `Vec<(K, V)>`, opens with its length as a varint: never this
/// byte, which no bincode varint starts with.
const SORTED_TAG: u8 = 0xff;

/// The `(key, value)` encodings of a [`SORTED_TAG`] blob (after the tag); a
/// length that does not fit in the blob is an error.
struct SortedEntries<'a>(&'a [u8]);

impl<'a> Iterator for SortedEntries<'a> {
    type Item = TaskResult<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = |bytes: &'a [u8]| {
            let (len, rest) = codec::decode_len(bytes)?;
            (len <= rest.len()).then(|| rest.split_at(len))
        };
        let entry = field(self.0).and_then(|(key, rest)| field(rest).map(|(value, rest)| (key, value, rest)));
        let Some((key, value, rest)) = entry else {
            self.0 = &[];
            return Some(Err(TaskError::Operator(
                "cannot restore keyed state: an entry's length runs past the end of its key group's blob".into(),
            )));
        };
        self.0 = rest;
        Some(Ok((key, value)))
    }
}

/// The entries of one key group's blob, in either form.
pub(crate) fn decode_entries<K: Key, V: Data>(bytes: &[u8]) -> TaskResult<Vec<(K, V)>> {
    match bytes.split_first() {
        Some((&SORTED_TAG, sorted)) => SortedEntries(sorted)
            .map(|entry| {
                let (k, v) = entry?;
                Ok((codec::decode(k, "a key in keyed state")?, codec::decode(v, "keyed state")?))
            })
            .collect(),
        _ => codec::decode(bytes, "keyed state"),
    }
}

/// The entries of one declared state.
pub(crate) struct Table<K, V> {
    pub(super) map: KeyMap<K, V>,
    disk: Option<Box<DiskTable<K>>>,
    /// Keys changed since the last snapshot, when checkpoints are incremental.
    changed: Option<KeySet<K>>,
    /// More keys changed than are worth remembering: the next snapshot is full.
    overflowed: bool,
    /// On disk, the changes restored so far, written at once when the restore
    /// ends ([`Table::finish_restore`]): one set of the LSM's tables for a
    /// whole chain of incremental checkpoints, not one per key group and link.
    restored_changes: Vec<(K, Option<V>)>,
}

/// The fewest entries a table's cache holds before it is written back.
const MIN_CACHED: usize = 64;

/// A table's part on disk.
struct DiskTable<K> {
    store: Arc<DiskStore>,
    id: u64,
    keyspace: fjall::Keyspace,
    /// Keys changed since they were last written back.
    dirty: KeySet<K>,
    max_parallelism: u32,
    /// Encoded bytes per entry written so far, an estimate of what an entry
    /// owns beyond its inline size.
    written: (u64, u64),
    /// The first error of the store, failing the task at its next check.
    failure: Option<String>,
    scratch: Vec<u8>,
}

impl<K: Key, V: Data> Table<K, V> {
    pub(crate) fn heap() -> Self {
        Table { map: KeyMap::default(), disk: None, changed: None, overflowed: false, restored_changes: Vec::new() }
    }

    pub(super) fn on_disk(store: &Arc<DiskStore>, max_parallelism: u32) -> TaskResult<Self> {
        let (id, keyspace) = store.create_table().map_err(|e| {
            TaskError::Operator(format!("disk state: cannot create a table in {}: {e}", store.dir().display()))
        })?;
        let disk = DiskTable {
            store: store.clone(),
            id,
            keyspace,
            dirty: KeySet::default(),
            max_parallelism,
            written: (0, 0),
            failure: None,
            scratch: Vec::new(),
        };
        Ok(Table {
            map: KeyMap::default(),
            disk: Some(Box::new(disk)),
            changed: None,
            overflowed: false,
            restored_changes: Vec::new(),
        })
    }

    /// A table kept by `backend`: on disk with the disk backend.
    pub(crate) fn new(backend: &super::StateBackend, max_parallelism: u32) -> TaskResult<Self> {
        match backend {
            super::StateBackend::Heap => Ok(Table::heap()),
            super::StateBackend::Disk(store) => Table::on_disk(store, max_parallelism),
        }
    }

    /// `key`'s entry, read from disk when it is there.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        self.load(key);
        self.map.get(key)
    }

    /// `key`'s entry to change, read from disk when it is there.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.load(key);
        if self.map.contains_key(key) {
            self.touch(key);
        }
        self.map.get_mut(key)
    }

    /// `key`'s entry to change, made with `V::default()` when it has none.
    pub(crate) fn entry(&mut self, key: &K) -> &mut V
    where
        V: Default,
    {
        self.load(key);
        self.touch(key);
        if !self.map.contains_key(key) {
            self.map.insert(key.clone(), V::default());
        }
        self.map.get_mut(key).expect("just inserted")
    }

    /// Entries held in memory (all of them on the heap).
    pub(crate) fn in_memory(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    /// Adds decoded entries of a snapshot (on disk: written straight to the LSM).
    pub(crate) fn restore_entries(&mut self, entries: Vec<(K, V)>) -> TaskResult {
        match &mut self.disk {
            Some(disk) => disk.ingest(entries),
            None => {
                self.map.extend(entries);
                Ok(())
            }
        }
    }

    /// Makes `key`'s entry, when it has one, present in the map (and room for it).
    #[inline]
    pub(super) fn load(&mut self, key: &K) {
        let Some(disk) = &mut self.disk else { return };
        if self.map.contains_key(key) || disk.dirty.contains(key) {
            return;
        }
        if self.map.len() + disk.dirty.len() >= disk.capacity::<V>() {
            disk.write_back(&self.map);
            self.map.clear();
        }
        if let Some(value) = disk.read::<V>(key) {
            self.map.insert(key.clone(), value);
        }
    }

    /// Notes that `key`'s entry is about to change.
    #[inline]
    pub(super) fn touch(&mut self, key: &K) {
        if let Some(disk) = &mut self.disk
            && !disk.dirty.contains(key)
        {
            disk.dirty.insert(key.clone());
        }
        if let Some(changed) = &mut self.changed
            && !self.overflowed
            && !changed.contains(key)
        {
            changed.insert(key.clone());
            let most = match &self.disk {
                Some(disk) => disk.capacity::<V>(),
                None => (self.map.len() / 2).max(1024),
            };
            if changed.len() > most {
                self.overflowed = true;
                *changed = KeySet::default();
            }
        }
    }

    /// Changes are tracked but too many were made to remember them.
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// From now on, remember the keys changed between snapshots.
    pub(super) fn track_changes(&mut self) {
        self.changed.get_or_insert_with(KeySet::default);
    }

    /// Removes `key`'s entry.
    pub(crate) fn clear_key(&mut self, key: &K) {
        self.touch(key);
        self.map.remove(key);
    }

    /// Entries in the table (with the disk backend, an estimate).
    pub(super) fn entries(&self) -> usize {
        match &self.disk {
            None => self.map.len(),
            Some(disk) => disk.keyspace.approximate_len() + disk.dirty.len(),
        }
    }

    pub(crate) fn take_failure(&mut self) -> Option<String> {
        self.disk.as_mut().and_then(|d| d.failure.take())
    }

    /// Every entry, encoded per key group, in key-group order. On disk, the
    /// cache is written back first and the groups are read from the LSM one
    /// at a time as the caller takes them, so a snapshot of state larger than
    /// memory never holds more than a group of it.
    pub(crate) fn group_blobs(&mut self, max_parallelism: u32) -> TaskResult<GroupBlobs<'_>> {
        if let Some(changed) = &mut self.changed {
            changed.clear();
            self.overflowed = false;
        }
        let Some(disk) = &mut self.disk else {
            return Ok(Box::new(encode_by_group(self.map.iter(), max_parallelism).into_iter().map(Ok)));
        };
        disk.write_back(&self.map);
        if let Some(failure) = disk.failure.take() {
            return Err(TaskError::Operator(failure));
        }
        Ok(Box::new(DiskGroups {
            entries: disk.keyspace.iter(),
            current: None,
            dir: disk.store.dir().to_path_buf(),
            failed: false,
        }))
    }

    /// The keys changed since the last snapshot, per key group: each with its
    /// value now, or `None` when it has none (`None` for the whole: changes
    /// are not tracked).
    pub(super) fn encode_changes(&mut self, max_parallelism: u32) -> TaskResult<Option<BTreeMap<u32, Vec<u8>>>> {
        if self.overflowed {
            return Ok(None);
        }
        let Some(changed) = self.changed.as_mut().map(std::mem::take) else { return Ok(None) };
        let mut entries: Vec<(K, Option<V>)> = Vec::with_capacity(changed.len());
        for key in changed {
            let value = match (self.map.get(&key), &mut self.disk) {
                (Some(v), _) => Some(v.clone()),
                (None, None) => None,
                // Removed in the cache and not yet written back, or written back and evicted.
                (None, Some(disk)) if disk.dirty.contains(&key) => None,
                (None, Some(disk)) => disk.read::<V>(&key),
            };
            entries.push((key, value));
        }
        if let Some(failure) = self.disk.as_mut().and_then(|d| d.failure.take()) {
            return Err(TaskError::Operator(failure));
        }
        Ok(Some(encode_by_group(entries.iter().map(|(k, v)| (k, v)), max_parallelism)))
    }

    /// Applies the changes of one key group that [`Table::encode_changes`] encoded.
    pub(super) fn decode_changes(&mut self, bytes: &[u8]) -> TaskResult {
        let entries: Vec<(K, Option<V>)> = codec::decode(bytes, "keyed state changes")?;
        match &mut self.disk {
            None => {
                for (k, v) in entries {
                    match v {
                        Some(v) => self.map.insert(k, v),
                        None => self.map.remove(&k),
                    };
                }
            }
            Some(_) => {
                for (k, _) in &entries {
                    self.map.remove(k);
                }
                self.restored_changes.extend(entries);
            }
        }
        Ok(())
    }

    /// Writes the changes restored on disk (see `restored_changes`).
    pub(super) fn finish_restore(&mut self) -> TaskResult {
        match &mut self.disk {
            Some(disk) if !self.restored_changes.is_empty() => disk.apply(std::mem::take(&mut self.restored_changes)),
            _ => Ok(()),
        }
    }

    pub(super) fn decode_group(&mut self, bytes: &[u8]) -> TaskResult {
        // Changes restored before a full group are older than it.
        self.finish_restore()?;
        match (&mut self.disk, bytes.split_first()) {
            (Some(disk), Some((&SORTED_TAG, sorted))) => disk.ingest_sorted(SortedEntries(sorted)),
            (Some(disk), _) => disk.ingest(decode_entries::<K, V>(bytes)?),
            (None, _) => {
                self.map.extend(decode_entries::<K, V>(bytes)?);
                Ok(())
            }
        }
    }
}

impl<K> Drop for DiskTable<K> {
    fn drop(&mut self) {
        self.store.drop_table(self.keyspace.clone());
    }
}

impl<K: Key> DiskTable<K> {
    /// Entries the cache may hold before it is written back and emptied.
    fn capacity<V>(&self) -> usize {
        // Until a write-back has measured what entries own, the cache holds few:
        // guessing low let a cache of 1 KiB values grow to six times its budget.
        let Some(owned) = self.written.0.checked_div(self.written.1) else { return MIN_CACHED };
        // Map slot, dirty-set slot, hash table overhead, and what the entry owns.
        let per_entry = (size_of::<(K, V)>() + size_of::<K>() + 16) as u64 + owned;
        (self.store.cache_share() / per_entry).max(MIN_CACHED as u64) as usize
    }

    /// `key` as it is stored: key group, then the key's encoding (in `scratch`).
    fn encode_key(&mut self, key: &K) {
        self.scratch.clear();
        self.scratch.extend_from_slice(&key_group(hash_key(key), self.max_parallelism).to_be_bytes());
        codec::encode_into(key, &mut self.scratch);
    }

    fn read<V: Data>(&mut self, key: &K) -> Option<V> {
        self.encode_key(key);
        if !self.store.maybe_on_disk.contains(&(self.id, &self.scratch[..])) {
            return None;
        }
        match self.keyspace.get(&self.scratch) {
            Ok(None) => None,
            Ok(Some(bytes)) => match codec::decode(&bytes, "keyed state on disk") {
                Ok(v) => Some(v),
                Err(e) => self.fail(format!("disk state: {e}")),
            },
            Err(e) => self.fail(format!("disk state: cannot read {}: {e}", self.store.dir().display())),
        }
    }

    fn fail<T>(&mut self, reason: String) -> Option<T> {
        self.failure.get_or_insert(reason);
        None
    }

    /// Writes the dirty entries to the LSM (a dirty key no longer in the map is a removal).
    fn write_back<V: Data>(&mut self, map: &KeyMap<K, V>) {
        let dirty = std::mem::take(&mut self.dirty);
        let mut keys = dirty.iter().peekable();
        while keys.peek().is_some() {
            let chunk = keys.by_ref().take(WRITE_BACK_BATCH).map(|k| (k, map.get(k)));
            if let Err(e) = self.write_sorted(chunk, true) {
                self.fail::<()>(format!("disk state: cannot write to {}: {e}", self.store.dir().display()));
                return;
            }
        }
    }

    fn ingest<V: Data>(&mut self, entries: Vec<(K, V)>) -> TaskResult {
        self.apply(entries.into_iter().map(|(k, v)| (k, Some(v))).collect())
    }

    /// Writes a disk snapshot's entries of one key group to the LSM as they
    /// are. Each key is decoded (its key group, which leads the stored key,
    /// comes from it, and a damaged key is an error); the values are not.
    /// Keys out of order are an error, as the LSM's ingestion needs them sorted.
    fn ingest_sorted(&mut self, entries: SortedEntries<'_>) -> TaskResult {
        let write_error = |e: fjall::Error| {
            TaskError::Operator(format!("disk state: cannot restore into {}: {e}", self.store.dir().display()))
        };
        let mut ingestion = self.keyspace.start_ingestion().map_err(write_error)?;
        let mut last: Vec<u8> = Vec::new();
        for entry in entries {
            let (key, value) = entry?;
            let k: K = codec::decode(key, "a key in keyed state")?;
            self.scratch.clear();
            self.scratch.extend_from_slice(&key_group(hash_key(&k), self.max_parallelism).to_be_bytes());
            self.scratch.extend_from_slice(key);
            if !last.is_empty() && self.scratch <= last {
                return Err(TaskError::Operator(
                    "cannot restore keyed state: the disk snapshot's keys are out of order".into(),
                ));
            }
            self.store.maybe_on_disk.insert(&(self.id, &self.scratch[..]));
            ingestion.write(&self.scratch, value).map_err(write_error)?;
            std::mem::swap(&mut last, &mut self.scratch);
        }
        ingestion.finish().map_err(write_error)
    }

    /// Writes restored entries (`None`: the key's entry is removed) straight to the LSM.
    fn apply<V: Data>(&mut self, entries: Vec<(K, Option<V>)>) -> TaskResult {
        for chunk in entries.chunks(WRITE_BACK_BATCH) {
            self.write_sorted(chunk.iter().map(|(k, v)| (k, v.as_ref())), false).map_err(|e| {
                TaskError::Operator(format!("disk state: cannot restore into {}: {e}", self.store.dir().display()))
            })?;
        }
        Ok(())
    }

    /// Encodes `entries` into one buffer, sorts them by stored key and writes
    /// them as new tables of the LSM (fjall's ingestion: no memtable, no
    /// journal, which the store does not need: it never outlives the
    /// process). A key given twice keeps its last entry. `estimate`: count
    /// the entries' sizes for [`DiskTable::capacity`].
    fn write_sorted<'a, V: Data>(
        &mut self,
        entries: impl Iterator<Item = (&'a K, Option<&'a V>)>,
        estimate: bool,
    ) -> fjall::Result<()>
    where
        K: 'a,
    {
        // (first 16 bytes of the key, start in `arena`, key length, value length or REMOVED):
        // most keys (a key group and a number) fit the prefix, which compares as one integer.
        const REMOVED: usize = usize::MAX;
        let (mut arena, mut index) = (Vec::new(), Vec::new());
        for (k, v) in entries {
            let start = arena.len();
            arena.extend_from_slice(&key_group(hash_key(k), self.max_parallelism).to_be_bytes());
            codec::encode_into(k, &mut arena);
            let key_len = arena.len() - start;
            let mut prefix = [0u8; 16];
            let head = key_len.min(16);
            prefix[..head].copy_from_slice(&arena[start..start + head]);
            let value_len = v.map_or(REMOVED, |v| {
                codec::encode_into(v, &mut arena);
                arena.len() - start - key_len
            });
            index.push((u128::from_be_bytes(prefix), start, key_len, value_len));
        }
        let key = |e: &(u128, usize, usize, usize)| &arena[e.1..e.1 + e.2];
        // Among equal keys, the one given last (the greatest start) sorts last.
        index.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| key(a).cmp(key(b))).then(a.1.cmp(&b.1)));
        let mut ingestion = self.keyspace.start_ingestion()?;
        for (i, &(_, start, key_len, value_len)) in index.iter().enumerate() {
            let key = &arena[start..start + key_len];
            if index.get(i + 1).is_some_and(|n| &arena[n.1..n.1 + n.2] == key) {
                continue;
            }
            if value_len == REMOVED {
                ingestion.write_tombstone(key)?;
                continue;
            }
            self.store.maybe_on_disk.insert(&(self.id, key));
            if estimate {
                self.written.0 += (key_len + value_len) as u64;
                self.written.1 += 1;
            }
            ingestion.write(key, &arena[start + key_len..start + key_len + value_len])?;
        }
        ingestion.finish()
    }
}

/// A table's key groups, each encoded as one blob, in key-group order.
pub(crate) type GroupBlobs<'a> = Box<dyn Iterator<Item = TaskResult<(u32, Vec<u8>)>> + 'a>;

/// Every entry on disk, per key group, as [`SORTED_TAG`] blobs: the stored
/// bytes copied in the LSM's order, nothing decoded, a group at a time.
struct DiskGroups {
    entries: fjall::Iter,
    /// The group being gathered.
    current: Option<(u32, Vec<u8>)>,
    dir: std::path::PathBuf,
    failed: bool,
}

impl Iterator for DiskGroups {
    type Item = TaskResult<(u32, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let Some(guard) = self.entries.next() else { return self.current.take().map(Ok) };
            let entry = guard
                .into_inner()
                .map_err(|e| TaskError::Operator(format!("disk state: cannot read {}: {e}", self.dir.display())));
            let (k, v) = match entry {
                Ok(entry) => entry,
                Err(e) => return self.fail(e),
            };
            let Some((g, key)) = k.split_first_chunk::<4>() else {
                return self.fail(TaskError::Operator("disk state: a key without its key group".into()));
            };
            let g = u32::from_be_bytes(*g);
            let append = |blob: &mut Vec<u8>| {
                codec::encode_len(key.len(), blob);
                blob.extend_from_slice(key);
                codec::encode_len(v.len(), blob);
                blob.extend_from_slice(&v);
            };
            match &mut self.current {
                Some((current, blob)) if *current == g => append(blob),
                _ => {
                    let mut blob = vec![SORTED_TAG];
                    append(&mut blob);
                    if let Some(finished) = self.current.replace((g, blob)) {
                        return Some(Ok(finished));
                    }
                }
            }
        }
    }
}

impl DiskGroups {
    fn fail(&mut self, e: TaskError) -> Option<TaskResult<(u32, Vec<u8>)>> {
        self.failed = true;
        Some(Err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{KeyedState, StateBackend};

    const MAX: u32 = 128;

    fn disk(dir: &std::path::Path) -> KeyedState<u64> {
        KeyedState::new(&StateBackend::disk(dir, super::super::backend::MIN_MEMORY).unwrap(), MAX)
    }

    /// Far more entries than the smallest budget's cache holds: values, maps
    /// and lists are written back, evicted, read again, cleared and
    /// snapshotted; the snapshot equals the heap backend's for the same
    /// operations, and restores into either backend.
    #[test]
    fn disk_state_evicts_reads_back_and_snapshots_as_the_heap() {
        let tmp = tempfile::tempdir().unwrap();
        let n = 300_000u64;
        let mut states = [KeyedState::<u64>::new(&StateBackend::Heap, MAX), disk(tmp.path())];
        for state in &mut states {
            let count = state.value::<u64>("count");
            let tags = state.map::<u32, String>("tags");
            let seen = state.list::<u64>("seen");
            for round in 0..2 {
                for k in 0..n {
                    *state.value_mut(&count, &k).get_or_insert(0) += k + round;
                    if k % 7 == 0 {
                        state.map_mut(&tags, &k).insert(round as u32, format!("r{round}"));
                        state.list_mut(&seen, &k).push(round);
                    }
                }
            }
            for k in (0..n).step_by(3) {
                state.clear_key(&k);
            }
            for k in [1u64, 2, 7, 14, 299_999] {
                let expected = if k % 3 == 0 { None } else { Some(2 * k + 1) };
                assert_eq!(state.value_ref(&count, &k).copied(), expected, "key {k}");
            }
            assert_eq!(state.map_mut(&tags, &7).len(), 2);
            state.compact_key(&tags, &8);
            state.check().unwrap();
        }
        let heap = states[0].encode_groups(MAX).unwrap();
        let on_disk = states[1].encode_groups(MAX).unwrap();
        assert_eq!(heap.len(), on_disk.len());
        for (g, blobs) in &heap {
            let decoded = |b: &Vec<Vec<u8>>| -> Vec<std::collections::BTreeMap<u64, u64>> {
                let values: Vec<(u64, u64)> =
                    if b[0].is_empty() { vec![] } else { super::decode_entries(&b[0]).unwrap() };
                vec![values.into_iter().collect()]
            };
            assert_eq!(decoded(blobs), decoded(&on_disk[g]), "key group {g}");
        }
        // The disk snapshot restores into both backends.
        let restored_dir = tempfile::tempdir().unwrap();
        for mut state in [KeyedState::<u64>::new(&StateBackend::Heap, MAX), disk(restored_dir.path())] {
            let count = state.value::<u64>("count");
            let _ = state.map::<u32, String>("tags");
            let _ = state.list::<u64>("seen");
            for blobs in on_disk.values() {
                state.decode_group(blobs).unwrap();
            }
            assert_eq!(state.value_ref(&count, &10).copied(), Some(21));
            assert_eq!(state.value_ref(&count, &9), None);
        }
    }

    /// `set_if_absent` sets a key once, on both backends, and knows a key
    /// whose entry was written back to disk and evicted: 300 K entries of
    /// about 40 bytes are more than one table's cache holds at the smallest
    /// budget (half of 16 MiB, about 210 K entries).
    #[test]
    fn set_if_absent_sets_once_whether_the_key_is_in_memory_or_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let n = 300_000u64;
        for mut state in [KeyedState::<u64>::new(&StateBackend::Heap, MAX), disk(tmp.path())] {
            let seen = state.value::<u64>("seen");
            for round in 0..2 {
                for k in 0..n {
                    let set = state.value_mut(&seen, &k).set_if_absent(round);
                    assert_eq!(set, round == 0, "key {k} in round {round}");
                }
            }
            for k in [0u64, 1, 99_999, n - 1] {
                assert_eq!(state.value_ref(&seen, &k).copied(), Some(0), "key {k} kept its first value");
            }
            state.clear_key(&5);
            assert!(state.value_mut(&seen, &5).set_if_absent(7), "a cleared key is absent");
            state.check().unwrap();
        }
    }

    /// A disk snapshot's blob whose entries are out of order, or whose
    /// lengths run past its end, is an error on both backends (no panic).
    #[test]
    fn a_damaged_disk_snapshot_is_an_error() {
        use super::{SORTED_TAG, SortedEntries};
        let tmp = tempfile::tempdir().unwrap();
        let mut source = disk(tmp.path());
        let count = source.value::<u64>("count");
        for k in 0..2000u64 {
            *source.value_mut(&count, &k).get_or_insert(0) = k;
        }
        let groups = source.encode_groups(MAX).unwrap();
        let blob = groups.values().map(|b| b[0].clone()).max_by_key(Vec::len).unwrap();
        assert_eq!(blob[0], SORTED_TAG);
        let entries: Vec<(&[u8], &[u8])> = SortedEntries(&blob[1..]).collect::<Result<_, _>>().unwrap();
        assert!(entries.len() > 2, "{entries:?}");
        let sorted = |entries: &[(&[u8], &[u8])]| {
            let mut b = vec![SORTED_TAG];
            for (k, v) in entries {
                super::codec::encode_len(k.len(), &mut b);
                b.extend_from_slice(k);
                super::codec::encode_len(v.len(), &mut b);
                b.extend_from_slice(v);
            }
            b
        };
        assert_eq!(sorted(&entries), blob);
        let restore = |blob: Vec<u8>, on_disk: bool| {
            let dir = tempfile::tempdir().unwrap();
            let mut state = if on_disk { disk(dir.path()) } else { KeyedState::new(&StateBackend::Heap, MAX) };
            let _ = state.value::<u64>("count");
            state.decode_group(&[blob]).map_err(|e| e.to_string())
        };
        for on_disk in [false, true] {
            restore(blob.clone(), on_disk).expect("the blob restores");
            let cut = restore(blob[..blob.len() - 3].to_vec(), on_disk).unwrap_err();
            assert!(cut.contains("runs past the end"), "{cut}");
        }
        let mut swapped = entries.clone();
        swapped.swap(0, 1);
        let err = restore(sorted(&swapped), true).unwrap_err();
        assert!(err.contains("out of order"), "{err}");
    }

    #[test]
    fn a_store_removes_its_folder_and_refuses_a_tiny_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = StateBackend::disk(tmp.path(), 64 << 20).unwrap();
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        drop(backend);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the store's folder is removed");
        let err = StateBackend::disk(tmp.path(), 1 << 20).unwrap_err().to_string();
        assert!(err.contains("state.memory") && err.contains("16MiB"), "{err}");
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = StateBackend::disk(&file.join("x"), 64 << 20).unwrap_err().to_string();
        assert!(err.contains("state.dir") && err.contains("cannot be written"), "{err}");
    }
}
