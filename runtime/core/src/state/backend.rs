//! Where keyed state lives: on the heap (the default) or on local disk under a
//! memory budget.
//!
//! The disk backend keeps each keyed state table, and each window operator's
//! contents, in an LSM tree ([`fjall`]) with a bounded cache of the entries in
//! use in front of it. The LSM is a working copy, never the durable one:
//! checkpoints and savepoints still carry every entry, filed by key group, in
//! a form either backend restores, so a job can move between backends through
//! any snapshot. One store serves every subtask of a process; it lives in a
//! folder of its own under the configured directory, removed when the process
//! no longer needs it.
//!
//! The memory budget is split between the tables' caches (half), the LSM's
//! block cache (a quarter), its write buffers (an eighth, shared by the tables
//! as they are created) and a Bloom filter of
//! the keys that may be on disk (an eighth), so that a key never written, the
//! common case of a deduplication, costs no read at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The smallest memory budget the disk backend works with.
pub const MIN_MEMORY: u64 = 16 << 20;

/// The memory budget when none is given.
pub const DEFAULT_MEMORY: u64 = 256 << 20;

/// The disk backend's folder when none is given: `weir-state` in the system's temporary folder.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("weir-state")
}

/// Why the disk backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StateBackendError {
    #[error("state.dir {path}: cannot be written: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state.memory {given} bytes is too small to work with: the disk backend needs at least {MIN_MEMORY} (16MiB)"
    )]
    Memory { given: u64 },
    #[error("state.dir {path}: cannot open the state store: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: fjall::Error,
    },
}

/// Where a job keeps its keyed state.
#[derive(Clone, Default)]
pub enum StateBackend {
    /// Hash maps on the heap: fastest, bounded by memory.
    #[default]
    Heap,
    /// An LSM tree on local disk behind a bounded cache.
    Disk(Arc<DiskStore>),
}

impl std::fmt::Debug for StateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateBackend::Heap => f.write_str("Heap"),
            StateBackend::Disk(store) => write!(f, "Disk({}, {} bytes)", store.dir.display(), store.memory),
        }
    }
}

impl StateBackend {
    /// Opens a disk backend in a new folder under `dir` (created when missing)
    /// with `memory` bytes to spend; errors name the setting at fault.
    pub fn disk(dir: &Path, memory: u64) -> Result<Self, StateBackendError> {
        Ok(StateBackend::Disk(Arc::new(DiskStore::open(dir, memory)?)))
    }

    pub fn is_disk(&self) -> bool {
        matches!(self, StateBackend::Disk(_))
    }
}

/// A process's LSM store, shared by the keyed state tables of all its subtasks.
pub struct DiskStore {
    pub(super) db: fjall::Database,
    /// Keys that may be on disk, as `(table id, encoded key)`.
    pub(super) maybe_on_disk: fastbloom::AtomicBloomFilter<ahash::RandomState>,
    dir: PathBuf,
    memory: u64,
    next_table: AtomicU64,
    live_tables: AtomicUsize,
}

/// Tells apart the folders of the stores one process opens.
static STORES: AtomicU64 = AtomicU64::new(0);

impl DiskStore {
    fn open(dir: &Path, memory: u64) -> Result<Self, StateBackendError> {
        if memory < MIN_MEMORY {
            return Err(StateBackendError::Memory { given: memory });
        }
        let folder = dir.join(format!("weir-state-{}-{}", std::process::id(), STORES.fetch_add(1, Ordering::Relaxed)));
        let dir_error = |source| StateBackendError::Dir { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        // A probe write: an unwritable folder is an error now, not at the first eviction.
        let probe = dir.join(format!(".weir-probe-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(dir_error)?;
        let _ = std::fs::remove_file(&probe);
        let db = fjall::Database::builder(&folder)
            .cache_size(memory / 4)
            // Durability comes from checkpoints; the journal need not reach the disk.
            .manual_journal_persist(true)
            // One background worker: with more, fjall's first worker hands
            // every compaction request back to the queue and takes it again
            // while another compacts, a busy loop that cost as much CPU as
            // the compaction itself (a third of a 100 M-key dedup's CPU).
            .worker_threads(1)
            .temporary(true)
            .open()
            .map_err(|source| StateBackendError::Store { path: folder.clone(), source })?;
        let filter_bits = (memory / 8 * 8) as usize;
        Ok(DiskStore {
            db,
            maybe_on_disk: fastbloom::AtomicBloomFilter::with_num_bits(filter_bits)
                // The keys are Weir's own encodings: a fast hash, not a keyed one, will do.
                .hasher(ahash::RandomState::with_seeds(1, 2, 3, 4))
                .expected_items(filter_bits / 10),
            dir: folder,
            memory,
            next_table: AtomicU64::new(0),
            live_tables: AtomicUsize::new(0),
        })
    }

    /// Creates the keyspace of a new table: its id and handle.
    pub(crate) fn create_table(&self) -> Result<(u64, fjall::Keyspace), fjall::Error> {
        let id = self.next_table.fetch_add(1, Ordering::Relaxed);
        let tables = self.live_tables.fetch_add(1, Ordering::Relaxed) as u64 + 1;
        let memtable = (self.memory / 8 / tables).max(1 << 20);
        // Filters and indexes in partitions at every level: a point read
        // loads one small partition of a table's filter into the block cache,
        // not the whole filter (megabytes for a table of millions of keys,
        // which a cache within the budget cannot keep: at a hundred million
        // keys, reads of whole filters ran at gigabytes per second).
        let options = || {
            fjall::KeyspaceCreateOptions::default()
                .max_memtable_size(memtable)
                .filter_block_partitioning_policy(fjall::config::PartitioningPolicy::all(true))
                .index_block_partitioning_policy(fjall::config::PartitioningPolicy::all(true))
        };
        let keyspace = self.db.keyspace(&format!("t{id}"), options)?;
        Ok((id, keyspace))
    }

    /// Drops a table's keyspace and its files.
    pub(crate) fn drop_table(&self, keyspace: fjall::Keyspace) {
        self.live_tables.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = self.db.delete_keyspace(keyspace) {
            tracing::warn!("disk state: could not drop a table's keyspace: {e}");
        }
    }

    /// The bytes one table's cache may hold now.
    pub(crate) fn cache_share(&self) -> u64 {
        self.memory / 2 / self.live_tables.load(Ordering::Relaxed).max(1) as u64
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
