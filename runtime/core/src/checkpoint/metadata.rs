//! The checkpoint format: `_metadata` and per-subtask state files.
//!
//! ```text
//! {dir}/{job}/chk-{id}/_metadata             JSON, written last: the checkpoint exists iff it does
//! {dir}/{job}/chk-{id}/{uid}-{subtask}.state  one operator subtask's state
//! {dir}/{job}/shared/{uid}-{subtask}-{id}-{token}.state
//!                                             state files of incremental checkpoints
//! {dir}/{job}/savepoints/sp-{id}/...          the same, for savepoints
//! {dir}/{job}/latest                          JSON pointer to the newest completed one
//! ```
//!
//! An incremental checkpoint (version 3) lists, per operator subtask, a
//! *chain* of state files in `shared/`: a full one and the changes of each
//! checkpoint since, in order. A checkpoint writes only its own changes and
//! names the earlier files again; the coordinator deletes a shared file once
//! no retained checkpoint names it. Savepoints are always full and keep
//! their files in their own directory, so they stay self-contained.
//!
//! A state file is a concatenation of blobs; `_metadata` indexes them: per key
//! group (keyed state) and per redistributable entry (operator state), with
//! the file's size and CRC-32 to detect truncation and corruption, and (since
//! version 4) how its key groups are stored ([`super::compression`]). Paths in
//! `_metadata` are relative to its directory, so a snapshot is self-contained
//! and can be moved. The format is versioned; a reader refuses versions it
//! does not know.
//!
//! Nothing read back is trusted: `_metadata` carries the CRC-32 of its own
//! content (`crc32`, since version 2; version 1 is still read), every offset
//! and length it gives is checked against the state file before the file is
//! sliced, and the names it and `latest` give must stay inside the snapshot's
//! directory ([`check_name`], [`check_key`]).

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::compression::Compression;
use super::spill::Spill;
use super::storage::{CheckpointStorage, PartsReader, StorageError, StorageResult, UnsafePath, check_key, check_name};
use crate::error::{TaskError, TaskResult};
use crate::keygroup::KeyGroupRange;

pub const FORMAT: &str = "weir-checkpoint";
/// The version written. Version 2 added `crc32`, the checksum of `_metadata`
/// itself; version 3 state files shared between checkpoints (`shared`);
/// version 4 compressed key groups (`compression`), which an older reader
/// would take for state that does not decode.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest version still read.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
}

/// The `_metadata` of a completed checkpoint or savepoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    pub format: String,
    pub version: u32,
    pub job: String,
    pub checkpoint_id: u64,
    pub kind: SnapshotKind,
    pub max_parallelism: u32,
    pub triggered_at: i64,
    pub completed_at: i64,
    pub operators: Vec<OperatorMetadata>,
    /// The deployment that took it (see [`CheckpointConfig::deployment`]).
    ///
    /// [`CheckpointConfig::deployment`]: super::coordinator::CheckpointConfig::deployment
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The job's default parallelism when it was taken (see
    /// [`CheckpointConfig::parallelism`]); each vertex's is in `operators`.
    ///
    /// [`CheckpointConfig::parallelism`]: super::coordinator::CheckpointConfig::parallelism
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<usize>,
    /// The fencing token of the JobManager that completed it (see
    /// [`crate::checkpoint::fence`]); absent in snapshots of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// [`CheckpointMetadata::checksum`] when written (version 2 on; set by
    /// [`CheckpointMetadata::to_json`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<u32>,
}

impl CheckpointMetadata {
    /// The CRC-32 of the metadata's compact JSON without `crc32`: of its content,
    /// whatever the layout of the file it was read from.
    pub fn checksum(&self) -> u32 {
        written_checksum(&serde_json::to_value(self).expect("metadata serializes"))
    }

    /// The `_metadata` file: pretty JSON, with its checksum.
    pub fn to_json(&self) -> Vec<u8> {
        let summed = CheckpointMetadata { crc32: Some(self.checksum()), ..self.clone() };
        serde_json::to_vec_pretty(&summed).expect("metadata serializes")
    }

    /// Parses a `_metadata` file read from `uri`: a version this weir reads,
    /// its checksum right (a version 1 file has none), its file names single
    /// names.
    fn parse(bytes: &[u8], uri: &str) -> Result<Self, RestoreError> {
        let corrupt = |reason: String| RestoreError::Corrupt { uri: uri.to_string(), reason };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not valid JSON ({e})")))?;
        let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("").to_string();
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        if format != FORMAT || !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(RestoreError::Incompatible { uri: uri.to_string(), format, version });
        }
        let sum = written_checksum(&value);
        let metadata: CheckpointMetadata = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        match (metadata.crc32, sum) {
            (Some(stored), sum) if stored != sum => {
                let reason = format!("checksum mismatch (it says {stored:08x}, its content sums to {sum:08x})");
                return Err(corrupt(reason));
            }
            (None, _) if version >= 2 => return Err(corrupt(format!("no `crc32`, which version {version} requires"))),
            _ => {}
        }
        let mut handles = metadata.operators.iter().flat_map(|o| &o.subtasks);
        handles
            .try_for_each(|h| check_name("state file", &h.file))
            .map_err(|source| RestoreError::UnsafePath { uri: uri.to_string(), source })?;
        Ok(metadata)
    }
}

/// The checksum of a `_metadata` file as its writer summed it: over the
/// fields it wrote, in its order, without `crc32`. Not over the file parsed and
/// written again: that would add the fields a later version gained (with
/// their defaults) and fail every file an older weir wrote.
fn written_checksum(value: &serde_json::Value) -> u32 {
    let mut unsummed = value.clone();
    if let Some(fields) = unsummed.as_object_mut() {
        fields.shift_remove("crc32");
    }
    crc32fast::hash(&serde_json::to_vec(&unsummed).expect("a JSON value serializes"))
}

/// The name of an operator subtask's state file in its snapshot's directory:
/// one name, whatever characters the operator's uid has.
pub fn state_file_name(uid: &str, subtask: usize) -> String {
    format!("{}-{subtask}.state", file_safe(uid))
}

/// The name of an incremental checkpoint's state file in the job's `shared/`
/// directory: unique to the checkpoint and to the task's run (`token`), so a
/// restarted job never writes over a file an earlier checkpoint names.
pub fn shared_file_name(uid: &str, subtask: usize, checkpoint_id: u64, token: u64) -> String {
    format!("{}-{subtask}-{checkpoint_id}-{token:016x}.state", file_safe(uid))
}

/// The directory of the files shared by a job's incremental checkpoints,
/// relative to the storage root.
pub fn shared_dir(job: &str) -> String {
    format!("{job}/shared")
}

fn file_safe(uid: &str) -> String {
    uid.chars().map(|c| if matches!(c, '/' | '\\' | '\0') { '_' } else { c }).collect()
}

/// The state of one operator (vertex), over all its subtasks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperatorMetadata {
    /// Stable identity of the operator in the job graph.
    pub uid: String,
    pub parallelism: usize,
    pub subtasks: Vec<SubtaskStateHandle>,
}

/// Where one operator subtask's state is, and what it holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubtaskStateHandle {
    pub subtask: usize,
    /// File name relative to the snapshot's directory.
    pub file: String,
    pub size: u64,
    pub crc32: u32,
    pub key_group_range: KeyGroupRange,
    /// (key group, offset, length) of each non-empty key group.
    pub key_groups: Vec<(u32, u64, u64)>,
    /// (offset, length) of each redistributable operator-state entry.
    pub entries: Vec<(u64, u64)>,
    /// The file is in the job's `shared/` directory (an incremental
    /// checkpoint's, version 3), not in the snapshot's. Always written: the
    /// handle also travels in bincode, which has no optional fields.
    #[serde(default)]
    pub shared: bool,
    /// How the file's key groups are stored (version 4; before it, as the
    /// operators encoded them). Always written, as `shared`.
    #[serde(default)]
    pub compression: Compression,
}

/// The `latest` pointer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LatestPointer {
    /// Directory of the snapshot relative to the job directory (`chk-17`, `savepoints/sp-3`).
    pub path: String,
    pub checkpoint_id: u64,
    pub kind: SnapshotKind,
    /// The fencing token of the JobManager that moved it here: it never
    /// moves to a snapshot of a lower (epoch, checkpoint id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// What one operator subtask hands in at a barrier.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OperatorSnapshot {
    /// Serialized keyed state per key group (only non-empty groups).
    pub keyed: Vec<(u32, Vec<u8>)>,
    /// Serialized entries that may be redistributed to any subtask on restore
    /// (source splits, a sink's pending transactions).
    pub entries: Vec<Vec<u8>>,
    /// Key groups in a local file rather than in memory (a full snapshot of the
    /// disk backend's state, which may be larger than memory); in the state
    /// file, they come before those of `keyed`.
    pub spill: Option<Arc<Spill>>,
    /// How the blobs of `keyed` are stored (a spill's groups are stored as
    /// it says): as the operator encoded them until the uploader compresses
    /// them ([`OperatorSnapshot::stored_as`]).
    pub compression: Compression,
}

impl OperatorSnapshot {
    /// A snapshot of entries only (a source's splits, a sink's transactions).
    pub fn of_entries(entries: Vec<Vec<u8>>) -> Self {
        OperatorSnapshot { entries, ..OperatorSnapshot::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty() && self.entries.is_empty() && self.spill.as_ref().is_none_or(|s| s.groups().is_empty())
    }

    /// Every key group in memory as the operator encoded it, those of a
    /// spill read back (restoring in-process, tests).
    pub fn into_keyed(self) -> std::io::Result<Vec<(u32, Vec<u8>)>> {
        let mut keyed = match &self.spill {
            Some(spill) => spill.read_groups()?,
            None => Vec::new(),
        };
        for (g, stored) in self.keyed {
            let blob = self.compression.decompress(stored).map_err(std::io::Error::other)?;
            keyed.push((g, blob));
        }
        Ok(keyed)
    }

    /// The snapshot with its key groups (in memory and in its spill) stored
    /// as `compression` says: the uploader's work, off the task's thread.
    pub fn stored_as(self, compression: Compression) -> std::io::Result<Self> {
        let spill = match self.spill {
            Some(spill) if spill.compression() != compression => Some(Arc::new(spill.stored_as(compression)?)),
            spill => spill,
        };
        let keyed = match self.compression == compression {
            true => self.keyed,
            false => {
                let from = self.compression;
                let stored =
                    |(g, blob)| Ok((g, compression.compress(&from.decompress(blob).map_err(std::io::Error::other)?)?));
                self.keyed.into_iter().map(stored).collect::<std::io::Result<_>>()?
            }
        };
        Ok(OperatorSnapshot { keyed, entries: self.entries, spill, compression })
    }

    /// Lays an in-memory snapshot out as one file; returns the bytes and their index.
    #[cfg(test)]
    pub(crate) fn encode(&self, subtask: usize, file: String, range: KeyGroupRange) -> (Vec<u8>, SubtaskStateHandle) {
        assert!(self.spill.is_none(), "encode is for snapshots in memory");
        (self.parts().concat(), self.handle(subtask, file, range))
    }

    /// The in-memory blobs of the file, in order (after the spill's).
    fn parts(&self) -> Vec<&[u8]> {
        let keyed = self.keyed.iter().map(|(_, blob)| blob.as_slice());
        keyed.chain(self.entries.iter().map(Vec::as_slice)).collect()
    }

    /// Writes the file at `path`: the blobs as they are, without joining them
    /// first (which would copy the state once more), and a spill streamed from
    /// its local file.
    pub fn store(&self, storage: &dyn CheckpointStorage, path: &str) -> StorageResult<()> {
        let parts = self.parts();
        let Some(spill) = &self.spill else { return storage.put_parts(path, &parts) };
        let len = spill.len() + parts.iter().map(|p| p.len() as u64).sum::<u64>();
        storage.put_reader(path, len, &mut spill.reader().chain(PartsReader::new(&parts)))
    }

    /// The index of the file that [`OperatorSnapshot::store`] writes: where each key
    /// group and entry is, the size and the CRC-32.
    pub fn handle(&self, subtask: usize, file: String, range: KeyGroupRange) -> SubtaskStateHandle {
        let (mut crc, mut size, mut key_groups) = match &self.spill {
            Some(spill) => (spill.crc(), spill.len(), spill.groups().to_vec()),
            None => (crc32fast::Hasher::new(), 0u64, Vec::new()),
        };
        key_groups.reserve(self.keyed.len());
        for (kg, blob) in &self.keyed {
            key_groups.push((*kg, size, blob.len() as u64));
            crc.update(blob);
            size += blob.len() as u64;
        }
        let mut entries = Vec::with_capacity(self.entries.len());
        for blob in &self.entries {
            entries.push((size, blob.len() as u64));
            crc.update(blob);
            size += blob.len() as u64;
        }
        let crc32 = crc.finalize();
        debug_assert!(self.spill.as_ref().is_none_or(|s| s.compression() == self.compression || s.groups().is_empty()));
        SubtaskStateHandle {
            subtask,
            file,
            size,
            crc32,
            key_group_range: range,
            key_groups,
            entries,
            shared: false,
            compression: self.compression,
        }
    }
}

/// Why a snapshot cannot be restored. Every variant names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("no completed checkpoint or savepoint under {uri} (no `latest` pointer)")]
    NoCheckpoint { uri: String },
    #[error("{uri} does not exist")]
    Missing { uri: String },
    #[error("{uri} is corrupt: {reason}")]
    Corrupt { uri: String, reason: String },
    #[error(
        "{uri} was written in format `{format}` version {version}; this weir reads `{FORMAT}` versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"
    )]
    Incompatible { uri: String, format: String, version: u32 },
    /// A name in `uri` (a `_metadata`, a `latest` pointer, or the job's name
    /// under a storage root) that would leave the storage root.
    #[error("{uri}: {source}")]
    UnsafePath { uri: String, source: UnsafePath },
    #[error(
        "{uri} was taken with max parallelism {snapshot}, but the job has max parallelism {job}: key groups cannot be remapped, restore refused"
    )]
    MaxParallelism { uri: String, snapshot: u32, job: u32 },
    #[error("{uri}: parallelism {parallelism} exceeds the snapshot's max parallelism {max}")]
    Parallelism { uri: String, parallelism: usize, max: u32 },
    #[error("{uri}: cannot copy it to {dir} to restore it (the disk state backend's folder): {source}")]
    Local {
        uri: String,
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A completed snapshot opened for restoring.
#[derive(Debug, Clone)]
pub struct RestoredSnapshot {
    pub storage: Arc<dyn CheckpointStorage>,
    /// Directory of the snapshot, relative to the storage root.
    pub dir: String,
    pub metadata: CheckpointMetadata,
}

/// One operator subtask's share of a snapshot.
#[derive(Debug, Default, Clone)]
pub struct RestoredState {
    /// Keyed state of the key groups this subtask owns now.
    pub keyed: Vec<(u32, Vec<u8>)>,
    /// The operator-state entries dealt to this subtask (entry k goes to subtask k mod parallelism).
    pub entries: Vec<Vec<u8>>,
    /// Every operator-state entry of the operator (for recovery actions done once, such as
    /// committing a sink's pending transactions).
    pub all_entries: Vec<Vec<u8>>,
    /// Key groups in local copies of the state files instead of `keyed` (a
    /// restore onto the disk backend: [`RestoredSnapshot::state_in`]), read
    /// one at a time by [`RestoredState::take_groups`].
    pub spilled: Vec<Arc<Spill>>,
}

impl RestoredState {
    /// The key groups in the order they were taken (those of `keyed`, then
    /// those of the local copies), each read as it is taken; leaves none behind.
    pub fn take_groups(&mut self) -> impl Iterator<Item = TaskResult<(u32, Vec<u8>)>> + use<> {
        let keyed = std::mem::take(&mut self.keyed).into_iter().map(Ok);
        let spilled = std::mem::take(&mut self.spilled).into_iter().flat_map(|spill| {
            (0..spill.groups().len()).map(move |i| {
                spill.read_group(i).map_err(|e| TaskError::Operator(format!("cannot read restored state back: {e}")))
            })
        });
        keyed.chain(spilled)
    }

    /// The first byte of the first key group (a format's tag), without taking it.
    pub fn first_byte(&self) -> TaskResult<Option<u8>> {
        if let Some((_, blob)) = self.keyed.first() {
            return Ok(blob.first().copied());
        }
        let Some(spill) = self.spilled.iter().find(|s| !s.groups().is_empty()) else { return Ok(None) };
        let (_, blob) =
            spill.read_group(0).map_err(|e| TaskError::Operator(format!("cannot read restored state back: {e}")))?;
        Ok(blob.first().copied())
    }

    /// Whether any key group is restored.
    pub fn has_keyed(&self) -> bool {
        !self.keyed.is_empty() || self.spilled.iter().any(|s| !s.groups().is_empty())
    }
}

fn missing_or(e: StorageError, uri: String) -> RestoreError {
    if e.is_not_found() { RestoreError::Missing { uri } } else { RestoreError::Storage(e) }
}

/// How much of a state file one request reads when it is copied to local
/// disk or verified.
const DOWNLOAD_CHUNK: u64 = 8 << 20;

/// A state file of `size` bytes at `uri` whose read failed: missing, or
/// (a range past its end, most likely) shorter than its handle says.
fn unreadable(e: StorageError, uri: &str, size: u64) -> RestoreError {
    if e.is_not_found() {
        return RestoreError::Missing { uri: uri.to_string() };
    }
    RestoreError::Corrupt {
        uri: uri.to_string(),
        reason: format!("cannot be read whole ({e}); expected {size} bytes (truncated?)"),
    }
}

/// How many ranges of its state files a snapshot's verification reads at once.
const VERIFY_READERS: usize = 4;

/// Why a state file could not be copied to local disk.
enum Fetch {
    Local(std::io::Error),
    Storage(StorageError),
}

impl From<std::io::Error> for Fetch {
    fn from(e: std::io::Error) -> Self {
        Fetch::Local(e)
    }
}

/// Splits the URI of a snapshot's directory into where to root its storage
/// and the snapshot's directory under that root: its parent (the job's
/// directory, whose `shared/` holds an incremental checkpoint's shared
/// files) and its last name. A URI without a path to split stays whole.
///
/// ```
/// use weir_core::checkpoint::metadata::split_snapshot_uri;
/// assert_eq!(split_snapshot_uri("s3://b/ck/job/chk-8/"), ("s3://b/ck/job", "chk-8"));
/// assert_eq!(split_snapshot_uri("/ck/job/chk-8/_metadata"), ("/ck/job", "chk-8"));
/// assert_eq!(split_snapshot_uri("s3://bucket"), ("s3://bucket", ""));
/// ```
pub fn split_snapshot_uri(uri: &str) -> (&str, &str) {
    let trimmed = uri.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/_metadata").unwrap_or(trimmed).trim_end_matches('/');
    let path_start = trimmed.find("://").map_or(0, |i| i + 3);
    match trimmed[path_start..].rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() && !parent.is_empty() && name != ".." && name != "." => {
            (&trimmed[..path_start + parent.len()], name)
        }
        _ => (uri, ""),
    }
}

impl RestoredSnapshot {
    /// Opens the snapshot whose `_metadata` is in `dir` (relative to the storage root).
    pub fn open(storage: Arc<dyn CheckpointStorage>, dir: &str) -> Result<Self, RestoreError> {
        let dir = dir.trim_end_matches('/').trim_end_matches("/_metadata").to_string();
        let path = if dir.is_empty() { "_metadata".to_string() } else { format!("{dir}/_metadata") };
        let uri = storage.uri(&path);
        let bytes = storage.get(&path).map_err(|e| missing_or(e, uri.clone()))?;
        let metadata = CheckpointMetadata::parse(&bytes, &uri)?;
        Ok(RestoredSnapshot { storage, dir, metadata })
    }

    /// Opens the newest completed snapshot of `job` (through its `latest` pointer).
    pub fn latest(storage: Arc<dyn CheckpointStorage>, job: &str) -> Result<Self, RestoreError> {
        check_name("job name", job).map_err(|source| RestoreError::UnsafePath { uri: storage.uri(""), source })?;
        let path = format!("{job}/latest");
        let uri = storage.uri(&path);
        let bytes = storage.get(&path).map_err(|e| {
            if e.is_not_found() {
                RestoreError::NoCheckpoint { uri: storage.uri(job) }
            } else {
                RestoreError::Storage(e)
            }
        })?;
        let pointer: LatestPointer = serde_json::from_slice(&bytes)
            .map_err(|e| RestoreError::Corrupt { uri: uri.clone(), reason: e.to_string() })?;
        check_key("snapshot directory", &pointer.path).map_err(|source| RestoreError::UnsafePath { uri, source })?;
        Self::open(storage, &format!("{job}/{}", pointer.path))
    }

    pub fn uri(&self) -> String {
        self.storage.uri(&self.dir)
    }

    /// Checks that the snapshot fits a job with these settings.
    pub fn check_compatible(&self, max_parallelism: u32, parallelisms: &[usize]) -> Result<(), RestoreError> {
        let m = &self.metadata;
        if m.max_parallelism != max_parallelism {
            return Err(RestoreError::MaxParallelism {
                uri: self.uri(),
                snapshot: m.max_parallelism,
                job: max_parallelism,
            });
        }
        if let Some(&p) = parallelisms.iter().find(|&&p| p > m.max_parallelism as usize) {
            return Err(RestoreError::Parallelism { uri: self.uri(), parallelism: p, max: m.max_parallelism });
        }
        Ok(())
    }

    /// Reads every state file of the snapshot and checks its size and
    /// checksum, so that a damaged snapshot is refused before anything runs
    /// rather than failing every subtask that restores from it. Costs one
    /// read of the whole snapshot, in ranges of [`DOWNLOAD_CHUNK`] (no file
    /// is held whole), [`VERIFY_READERS`] at a time across all its files (a
    /// read from S3 mostly waits, and one stream is slower than the store);
    /// each file's checksum is its ranges' combined in order.
    pub fn verify(&self) -> Result<(), RestoreError> {
        self.verify_in(DOWNLOAD_CHUNK)
    }

    /// [`Self::verify`] in ranges of `chunk` bytes.
    fn verify_in(&self, chunk: u64) -> Result<(), RestoreError> {
        let mut files = Vec::new();
        for h in self.metadata.operators.iter().flat_map(|o| &o.subtasks).filter(|h| h.size > 0) {
            let path = self.path_of(h)?;
            let file = StateFile { uri: self.storage.uri(&path), size: h.size, base: h.size, bytes: Vec::new() };
            file.check_handle(h)?;
            files.push((h, path, file.uri));
        }
        // Every range of every file, in order: (file, offset).
        let ranges: Vec<(usize, u64)> = files
            .iter()
            .enumerate()
            .flat_map(|(f, (h, ..))| (0..h.size.div_ceil(chunk)).map(move |c| (f, c * chunk)))
            .collect();
        let next = AtomicUsize::new(0);
        // A reader takes the next range not yet taken; on a failure, the others stop.
        let read = || -> Result<Vec<(usize, crc32fast::Hasher)>, RestoreError> {
            let mut read = Vec::new();
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(f, at)) = ranges.get(r) else { return Ok(read) };
                let (h, path, uri) = &files[f];
                match self.verify_range(h, path, uri, at, chunk) {
                    Ok(crc) => read.push((r, crc)),
                    Err(e) => {
                        next.store(ranges.len(), Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        };
        let mut crcs = std::thread::scope(|scope| {
            let readers: Vec<_> = (0..VERIFY_READERS.min(ranges.len())).map(|_| scope.spawn(read)).collect();
            let stopped = || RestoreError::Corrupt { uri: self.uri(), reason: "its verification stopped short".into() };
            let mut crcs = Vec::with_capacity(ranges.len());
            for reader in readers {
                crcs.extend(reader.join().unwrap_or_else(|_| Err(stopped()))?);
            }
            Ok::<_, RestoreError>(crcs)
        })?;
        crcs.sort_by_key(|&(r, _)| r);
        let mut whole: Vec<crc32fast::Hasher> = files.iter().map(|_| crc32fast::Hasher::new()).collect();
        for (r, crc) in &crcs {
            whole[ranges[*r].0].combine(crc);
        }
        for ((h, _, uri), crc) in files.iter().zip(whole) {
            if crc.finalize() != h.crc32 {
                return Err(RestoreError::Corrupt { uri: uri.clone(), reason: "checksum mismatch".into() });
            }
        }
        Ok(())
    }

    /// The checksum of the range of file `h` (at `path`) from `at`: `chunk`
    /// bytes, or what is left of the file.
    fn verify_range(
        &self,
        h: &SubtaskStateHandle,
        path: &str,
        uri: &str,
        at: u64,
        chunk: u64,
    ) -> Result<crc32fast::Hasher, RestoreError> {
        let want = chunk.min(h.size - at);
        let bytes = self.storage.get_range(path, at, want).map_err(|e| unreadable(e, uri, h.size))?;
        if bytes.len() as u64 != want {
            return Err(RestoreError::Corrupt {
                uri: uri.to_string(),
                reason: format!("{} bytes, expected {} (truncated?)", at + bytes.len() as u64, h.size),
            });
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes);
        Ok(crc)
    }

    /// Reads a state file, checked against its handle: its size, its checksum,
    /// and that every range the handle gives lies inside it.
    fn read_file(&self, h: &SubtaskStateHandle) -> Result<StateFile, RestoreError> {
        let path = self.path_of(h)?;
        let uri = self.storage.uri(&path);
        let bytes = self.storage.get(&path).map_err(|e| missing_or(e, uri.clone()))?;
        if bytes.len() as u64 != h.size {
            return Err(RestoreError::Corrupt {
                uri,
                reason: format!("{} bytes, expected {} (truncated?)", bytes.len(), h.size),
            });
        }
        if crc32fast::hash(&bytes) != h.crc32 {
            return Err(RestoreError::Corrupt { uri, reason: "checksum mismatch".into() });
        }
        let file = StateFile::whole(uri, bytes);
        file.check_handle(h)?;
        Ok(file)
    }

    /// Copies a state file into `dir`, checked against its handle as
    /// [`RestoredSnapshot::read_file`] checks it; returns the copy and the
    /// file's entries (operator state, small) in memory.
    fn download(&self, h: &SubtaskStateHandle, dir: &Path) -> Result<(Spill, StateFile), RestoreError> {
        let path = self.path_of(h)?;
        let uri = self.storage.uri(&path);
        let local = |e: std::io::Error| RestoreError::Local { uri: uri.clone(), dir: dir.to_path_buf(), source: e };
        let fetched = Spill::download(dir, h.size, DOWNLOAD_CHUNK, |offset, len| {
            self.storage.get_range(&path, offset, len).map_err(Fetch::Storage)
        });
        let (copy, crc32) = fetched.map_err(|e| match e {
            Fetch::Local(e) => local(e),
            Fetch::Storage(e) => unreadable(e, &uri, h.size),
        })?;
        if crc32 != h.crc32 {
            return Err(RestoreError::Corrupt { uri, reason: "checksum mismatch".into() });
        }
        let mut file = StateFile { uri: uri.clone(), size: h.size, base: h.size, bytes: Vec::new() };
        file.check_handle(h)?;
        // The entries (operator state, small) follow the key groups: read into memory.
        file.base = h.entries.iter().map(|&(off, _)| off).min().unwrap_or(h.size);
        file.bytes = vec![0; (h.size - file.base) as usize];
        copy.read_at(file.base, &mut file.bytes).map_err(local)?;
        Ok((copy, file))
    }

    /// Where a state file is, relative to the storage root: in the snapshot's
    /// directory, or for a shared file in the `shared/` directory beside it.
    fn path_of(&self, h: &SubtaskStateHandle) -> Result<String, RestoreError> {
        let join = |dir: &str| if dir.is_empty() { h.file.clone() } else { format!("{dir}/{}", h.file) };
        if !h.shared {
            return Ok(join(&self.dir));
        }
        match self.dir.rsplit_once('/') {
            Some((job, _)) => Ok(join(&format!("{job}/shared"))),
            None if !self.dir.is_empty() => Ok(join("shared")),
            // Opened where it lies: the job's directory, and its shared files, are out of reach.
            None => Err(RestoreError::Missing {
                uri: format!(
                    "{} (a file this incremental checkpoint shares with others, in the `shared/` directory beside it; \
                     open the checkpoint from its job's directory, or restore from a savepoint)",
                    self.storage.uri(&format!("../shared/{}", h.file))
                ),
            }),
        }
    }

    /// The state of operator `uid` for subtask `index` of `parallelism`
    /// (`None` when the snapshot has no state for the operator).
    pub fn state_for(
        &self,
        uid: &str,
        index: usize,
        parallelism: usize,
    ) -> Result<Option<RestoredState>, RestoreError> {
        self.state_in(uid, index, parallelism, None)
    }

    /// [`RestoredSnapshot::state_for`]; with `local`, each state file with key
    /// groups the subtask needs is copied into that folder (checked as it
    /// streams) and its groups are read from there as the operator takes them,
    /// so that state larger than memory is restored within the memory budget.
    pub fn state_in(
        &self,
        uid: &str,
        index: usize,
        parallelism: usize,
        local: Option<&Path>,
    ) -> Result<Option<RestoredState>, RestoreError> {
        let Some(op) = self.metadata.operators.iter().find(|o| o.uid == uid) else { return Ok(None) };
        let range = KeyGroupRange::for_subtask(index, parallelism, self.metadata.max_parallelism);
        let mut state = RestoredState::default();
        let mut entry_no = 0usize;
        for h in &op.subtasks {
            let needs_keyed = h.key_groups.iter().any(|(kg, _, _)| range.contains(*kg));
            if !needs_keyed && h.entries.is_empty() {
                continue;
            }
            let mut groups = h.key_groups.iter().filter(|(kg, _, _)| range.contains(*kg)).copied();
            let file = match local.filter(|_| needs_keyed) {
                Some(dir) => {
                    let (copy, file) = self.download(h, dir)?;
                    state.spilled.push(Arc::new(copy.with_groups(groups.collect(), h.compression)));
                    file
                }
                None => {
                    let file = self.read_file(h)?;
                    for (kg, off, len) in groups.by_ref() {
                        let blob = h.compression.decompress(file.blob(off, len)?.to_vec()).map_err(|reason| {
                            RestoreError::Corrupt { uri: file.uri.clone(), reason: format!("key group {kg}: {reason}") }
                        })?;
                        state.keyed.push((kg, blob));
                    }
                    file
                }
            };
            for &(off, len) in &h.entries {
                let entry = file.blob(off, len)?.to_vec();
                if entry_no % parallelism == index {
                    state.entries.push(entry.clone());
                }
                state.all_entries.push(entry);
                entry_no += 1;
            }
        }
        Ok(Some(state))
    }
}

/// A state file read back (whole, or from `base` on), and where it came from.
struct StateFile {
    uri: String,
    size: u64,
    base: u64,
    bytes: Vec<u8>,
}

impl StateFile {
    /// A whole file read into memory.
    fn whole(uri: String, bytes: Vec<u8>) -> Self {
        StateFile { uri, size: bytes.len() as u64, base: 0, bytes }
    }

    /// Every range `h` gives (its key groups', its entries') inside the file.
    fn check_handle(&self, h: &SubtaskStateHandle) -> Result<(), RestoreError> {
        let ranges = h.key_groups.iter().map(|&(_, off, len)| (off, len)).chain(h.entries.iter().copied());
        ranges.map(|(off, len)| self.check(off, len)).try_for_each(|r| r.map(drop))
    }

    /// The range of `len` bytes at `off`, or an error naming the file and the
    /// range when they are not all inside it.
    fn check(&self, off: u64, len: u64) -> Result<std::ops::Range<u64>, RestoreError> {
        match off.checked_add(len) {
            Some(end) if end <= self.size => Ok(off..end),
            _ => Err(RestoreError::Corrupt {
                uri: self.uri.clone(),
                reason: format!(
                    "`_metadata` gives the range of {len} bytes at offset {off}, outside the file's {} bytes",
                    self.size
                ),
            }),
        }
    }

    /// The `len` bytes at `off`, which must be in the part read into memory.
    fn blob(&self, off: u64, len: u64) -> Result<&[u8], RestoreError> {
        let range = self.check(off, len)?;
        let start = range.start.checked_sub(self.base);
        let slice = start.and_then(|s| self.bytes.get(s as usize..(range.end - self.base) as usize));
        slice.ok_or_else(|| RestoreError::Corrupt {
            uri: self.uri.clone(),
            reason: format!("`_metadata` gives an entry at offset {off}, among the key groups"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::storage::LocalStorage;

    fn write_snapshot(storage: &dyn CheckpointStorage, dir: &str, parallelism: usize) -> CheckpointMetadata {
        write_snapshot_as(storage, dir, parallelism, Compression::None)
    }

    /// A snapshot of one operator whose key group `kg` holds `kg{kg}`, stored as `compression` says.
    fn write_snapshot_as(
        storage: &dyn CheckpointStorage,
        dir: &str,
        parallelism: usize,
        compression: Compression,
    ) -> CheckpointMetadata {
        let mut subtasks = Vec::new();
        for i in 0..parallelism {
            let range = KeyGroupRange::for_subtask(i, parallelism, 8);
            let snap = OperatorSnapshot {
                keyed: (range.start..range.end).map(|kg| (kg, format!("kg{kg}").into_bytes())).collect(),
                entries: vec![format!("entry-of-{i}").into_bytes()],
                spill: None,
                compression: Compression::None,
            }
            .stored_as(compression)
            .unwrap();
            let (bytes, handle) = snap.encode(i, format!("op-{i}.state"), range);
            storage.put(&format!("{dir}/op-{i}.state"), &bytes).unwrap();
            subtasks.push(handle);
        }
        let meta = CheckpointMetadata {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            job: "j".into(),
            checkpoint_id: 3,
            kind: SnapshotKind::Checkpoint,
            max_parallelism: 8,
            triggered_at: 0,
            completed_at: 1,
            operators: vec![OperatorMetadata { uid: "op".into(), parallelism, subtasks }],
            deployment: None,
            parallelism: None,
            epoch: None,
            crc32: None,
        };
        storage.put(&format!("{dir}/_metadata"), &meta.to_json()).unwrap();
        meta
    }

    #[test]
    fn encode_parts_and_handle_agree() {
        let snap = OperatorSnapshot {
            keyed: vec![(1, b"one".to_vec()), (5, Vec::new()), (6, b"six".to_vec())],
            entries: vec![b"e0".to_vec(), b"entry-1".to_vec()],
            spill: None,
            compression: Compression::None,
        };
        let range = KeyGroupRange::for_subtask(0, 1, 8);
        let (bytes, handle) = snap.encode(0, "f".into(), range);
        assert_eq!(bytes, b"onesixe0entry-1");
        assert_eq!(snap.parts().concat(), bytes);
        assert_eq!(handle.size, bytes.len() as u64);
        assert_eq!(handle.key_groups, vec![(1, 0, 3), (5, 3, 0), (6, 3, 3)]);
        assert_eq!(handle.entries, vec![(6, 2), (8, 7)]);
        assert_eq!(handle.crc32, crc32fast::hash(&bytes));
    }

    #[test]
    fn rescaling_redistributes_key_groups_and_entries() {
        rescales_key_groups_and_entries_stored_as(Compression::None);
    }

    #[test]
    fn rescaling_redistributes_compressed_key_groups() {
        rescales_key_groups_and_entries_stored_as(Compression::Zstd);
    }

    fn rescales_key_groups_and_entries_stored_as(compression: Compression) {
        let tmp = tempdir();
        let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalStorage::new(&tmp));
        let meta = write_snapshot_as(storage.as_ref(), "j/chk-3", 2, compression);
        assert!(meta.operators[0].subtasks.iter().all(|h| h.compression == compression));
        // Also opened where it lies, as a relocated savepoint is (the storage rooted at the snapshot).
        let here: Arc<dyn CheckpointStorage> = Arc::new(LocalStorage::new(tmp.join("j/chk-3")));
        let relocated = RestoredSnapshot::open(here, "").unwrap();
        assert_eq!(relocated.state_for("op", 0, 1).unwrap().unwrap().keyed.len(), 8);
        let snap = RestoredSnapshot::open(storage, "j/chk-3").unwrap();
        // From 2 subtasks to 3: every key group lands exactly once, entries are dealt round-robin.
        let mut groups = Vec::new();
        let mut entries = Vec::new();
        let local = tmp.join("local");
        std::fs::create_dir_all(&local).unwrap();
        for i in 0..3 {
            let s = snap.state_for("op", i, 3).unwrap().unwrap();
            // Copied to local disk first (the disk backend's restore): the same groups and entries.
            let mut copied = snap.state_in("op", i, 3, Some(&local)).unwrap().unwrap();
            assert!(copied.keyed.is_empty() && copied.has_keyed());
            assert_eq!(copied.first_byte().unwrap(), s.keyed[0].1.first().copied());
            assert_eq!(copied.take_groups().collect::<TaskResult<Vec<_>>>().unwrap(), s.keyed);
            assert!(!copied.has_keyed(), "taken");
            assert_eq!((&copied.entries, &copied.all_entries), (&s.entries, &s.all_entries));
            let range = KeyGroupRange::for_subtask(i, 3, 8);
            assert!(s.keyed.iter().all(|(kg, b)| range.contains(*kg) && b == format!("kg{kg}").as_bytes()));
            groups.extend(s.keyed.into_iter().map(|(kg, _)| kg));
            entries.extend(s.entries);
            assert_eq!(s.all_entries.len(), 2);
        }
        groups.sort();
        assert_eq!(groups, (0..8).collect::<Vec<_>>());
        assert_eq!(entries.len(), 2);
        assert!(snap.state_for("other", 0, 1).unwrap().is_none());
        std::fs::remove_dir_all(tmp).unwrap();
    }

    /// Files are verified several at a time: a damaged one among many is
    /// named, whichever reader finds it; whole ones pass.
    #[test]
    fn verification_names_the_one_damaged_file_among_many() {
        let tmp = tempdir();
        let local = LocalStorage::new(&tmp);
        let storage: Arc<dyn CheckpointStorage> = Arc::new(local.clone());
        write_snapshot(&local, "j/chk-3", 7);
        let snap = RestoredSnapshot::open(storage, "j/chk-3").unwrap();
        snap.verify().unwrap();
        for damaged in [0, 4, 6] {
            let path = format!("j/chk-3/op-{damaged}.state");
            let bytes = local.get(&path).unwrap();
            local.put(&path, &bytes[..bytes.len() - 1]).unwrap();
            let err = snap.verify().unwrap_err().to_string();
            assert!(err.contains(&format!("op-{damaged}.state is corrupt")) && err.contains("truncated"), "{err}");
            local.delete(&path).unwrap();
            let err = snap.verify().unwrap_err();
            assert!(matches!(err, RestoreError::Missing { .. }) && err.to_string().contains(&path), "{err}");
            local.put(&path, &bytes).unwrap();
        }
        snap.verify().unwrap();
        // In ranges of 3 bytes: each file's checksum is combined from many, read in any order.
        snap.verify_in(3).unwrap();
        let path = "j/chk-3/op-4.state";
        let bytes = local.get(path).unwrap();
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        local.put(path, &flipped).unwrap();
        let err = snap.verify_in(3).unwrap_err().to_string();
        assert!(err.contains("op-4.state is corrupt: checksum mismatch"), "{err}");
        local.put(path, &bytes[..bytes.len() - 4]).unwrap();
        let err = snap.verify_in(3).unwrap_err().to_string();
        assert!(err.contains("op-4.state is corrupt") && err.contains("truncated"), "{err}");
        local.put(path, &bytes).unwrap();
        snap.verify_in(3).unwrap();
        std::fs::remove_dir_all(tmp).unwrap();
    }

    #[test]
    fn bad_snapshots_are_named_errors() {
        let tmp = tempdir();
        let local = LocalStorage::new(&tmp);
        let storage: Arc<dyn CheckpointStorage> = Arc::new(local.clone());
        let err = RestoredSnapshot::latest(storage.clone(), "j").unwrap_err();
        assert!(matches!(err, RestoreError::NoCheckpoint { .. }), "{err}");
        let err = RestoredSnapshot::open(storage.clone(), "j/chk-9").unwrap_err();
        assert!(err.to_string().ends_with("j/chk-9/_metadata does not exist"), "{err}");

        write_snapshot(&local, "j/chk-3", 1);
        // Truncated state file.
        let bytes = local.get("j/chk-3/op-0.state").unwrap();
        local.put("j/chk-3/op-0.state", &bytes[..bytes.len() - 2]).unwrap();
        let snap = RestoredSnapshot::open(storage.clone(), "j/chk-3").unwrap();
        let copies = tmp.join("copies");
        std::fs::create_dir_all(&copies).unwrap();
        let copied = || snap.state_in("op", 0, 1, Some(&copies)).unwrap_err().to_string();
        for err in
            [snap.state_for("op", 0, 1).unwrap_err().to_string(), copied(), snap.verify().unwrap_err().to_string()]
        {
            assert!(err.contains("op-0.state is corrupt") && err.contains("truncated"), "{err}");
        }
        local.put("j/chk-3/op-0.state", &bytes).unwrap();
        snap.verify().unwrap();
        let mut flipped = bytes.clone();
        flipped[0] ^= 1;
        local.put("j/chk-3/op-0.state", &flipped).unwrap();
        assert!(snap.verify().unwrap_err().to_string().contains("checksum mismatch"));
        assert!(copied().contains("op-0.state is corrupt: checksum mismatch"), "{}", copied());
        local.put("j/chk-3/op-0.state", &bytes).unwrap();
        // A folder the copy cannot be written to is named.
        let err = snap.state_in("op", 0, 1, Some(&tmp.join("no-such-folder"))).unwrap_err();
        assert!(matches!(err, RestoreError::Local { .. }) && err.to_string().contains("no-such-folder"), "{err}");
        assert_eq!(std::fs::read_dir(&copies).unwrap().count(), 0, "copies have no name");
        // Incompatible version, truncated metadata.
        let meta = local.get("j/chk-3/_metadata").unwrap();
        let newer = String::from_utf8(meta.clone())
            .unwrap()
            .replace(&format!("\"version\": {FORMAT_VERSION}"), "\"version\": 77");
        local.put("j/chk-3/_metadata", newer.as_bytes()).unwrap();
        let err = RestoredSnapshot::open(storage.clone(), "j/chk-3").unwrap_err().to_string();
        let reads = format!("reads `weir-checkpoint` versions 1 to {FORMAT_VERSION}");
        assert!(err.contains("version 77") && err.contains(&reads), "{err}");
        local.put("j/chk-3/_metadata", &meta[..meta.len() / 2]).unwrap();
        let err = RestoredSnapshot::open(storage.clone(), "j/chk-3").unwrap_err().to_string();
        assert!(err.contains("_metadata is corrupt"), "{err}");
        // Max parallelism changes are refused.
        local.put("j/chk-3/_metadata", &meta).unwrap();
        let snap = RestoredSnapshot::open(storage, "j/chk-3").unwrap();
        let err = snap.check_compatible(16, &[2]).unwrap_err().to_string();
        assert!(err.contains("max parallelism 8") && err.contains("restore refused"), "{err}");
        assert!(snap.check_compatible(8, &[9]).is_err());
        snap.check_compatible(8, &[8]).unwrap();
        std::fs::remove_dir_all(tmp).unwrap();
    }

    /// Rewrites `dir`'s `_metadata` through `edit`, with a checksum that matches again.
    fn rewrite(storage: &dyn CheckpointStorage, dir: &str, edit: impl FnOnce(&mut CheckpointMetadata)) {
        let path = format!("{dir}/_metadata");
        let mut meta: CheckpointMetadata = serde_json::from_slice(&storage.get(&path).unwrap()).unwrap();
        edit(&mut meta);
        storage.put(&path, &meta.to_json()).unwrap();
    }

    #[test]
    fn metadata_carries_its_own_checksum() {
        let tmp = tempdir();
        let local = LocalStorage::new(&tmp);
        let storage: Arc<dyn CheckpointStorage> = Arc::new(local.clone());
        let meta = write_snapshot(&local, "j/chk-3", 1);
        let written = String::from_utf8(local.get("j/chk-3/_metadata").unwrap()).unwrap();
        assert!(written.contains(&format!("\"crc32\": {}", meta.checksum())), "{written}");
        // A changed value is caught, though the file is still valid JSON of the right shape.
        let changed = written.replace("\"completed_at\": 1", "\"completed_at\": 2");
        local.put("j/chk-3/_metadata", changed.as_bytes()).unwrap();
        let err = RestoredSnapshot::open(storage.clone(), "j/chk-3").unwrap_err();
        assert!(matches!(err, RestoreError::Corrupt { .. }), "{err}");
        let err = err.to_string();
        assert!(err.contains("j/chk-3/_metadata is corrupt: checksum mismatch"), "{err}");
        // Its layout is not part of it.
        let compact = serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(&written).unwrap()).unwrap();
        local.put("j/chk-3/_metadata", &compact).unwrap();
        RestoredSnapshot::open(storage.clone(), "j/chk-3").unwrap();
        // Version 2 requires it; version 1, written before it existed, is still read.
        let unsummed = CheckpointMetadata { crc32: None, ..meta };
        local.put("j/chk-3/_metadata", &serde_json::to_vec(&unsummed).unwrap()).unwrap();
        let err = RestoredSnapshot::open(storage.clone(), "j/chk-3").unwrap_err().to_string();
        assert!(
            err.contains(&format!("_metadata is corrupt: no `crc32`, which version {FORMAT_VERSION} requires")),
            "{err}"
        );
        let v1 = CheckpointMetadata { version: 1, ..unsummed };
        local.put("j/chk-3/_metadata", &serde_json::to_vec(&v1).unwrap()).unwrap();
        let snap = RestoredSnapshot::open(storage, "j/chk-3").unwrap();
        assert_eq!(snap.state_for("op", 0, 1).unwrap().unwrap().keyed.len(), 8);
        std::fs::remove_dir_all(tmp).unwrap();
    }

    #[test]
    fn snapshots_an_older_weir_wrote_still_open() {
        let tmp = tempdir();
        let local = LocalStorage::new(&tmp);
        let storage: Arc<dyn CheckpointStorage> = Arc::new(local.clone());
        write_snapshot(&local, "j/chk-3", 2);
        let current: serde_json::Value = serde_json::from_slice(&local.get("j/chk-3/_metadata").unwrap()).unwrap();
        // As versions 3 and 2 wrote them: without the fields added since, summed as they were.
        for (version, added) in [(3, &["compression"][..]), (2, &["compression", "shared"][..])] {
            let mut old = current.clone();
            old["version"] = version.into();
            for op in old["operators"].as_array_mut().unwrap() {
                for h in op["subtasks"].as_array_mut().unwrap() {
                    added.iter().for_each(|f| assert!(h.as_object_mut().unwrap().shift_remove(*f).is_some()));
                }
            }
            assert!(old.as_object_mut().unwrap().shift_remove("crc32").is_some());
            old["crc32"] = crc32fast::hash(&serde_json::to_vec(&old).unwrap()).into();
            local.put("j/chk-3/_metadata", &serde_json::to_vec_pretty(&old).unwrap()).unwrap();
            let snap = RestoredSnapshot::open(storage.clone(), "j/chk-3").unwrap_or_else(|e| panic!("v{version}: {e}"));
            assert_eq!(snap.metadata.version, version);
            let s = snap.state_for("op", 0, 1).unwrap().unwrap();
            let expected: Vec<_> = (0..8).map(|kg| (kg, format!("kg{kg}").into_bytes())).collect();
            assert_eq!(s.keyed, expected, "v{version}");
            // Its checksum still guards it.
            old["completed_at"] = 2.into();
            local.put("j/chk-3/_metadata", &serde_json::to_vec_pretty(&old).unwrap()).unwrap();
            let err = RestoredSnapshot::open(storage.clone(), "j/chk-3").unwrap_err().to_string();
            assert!(err.contains("checksum mismatch"), "v{version}: {err}");
        }
        std::fs::remove_dir_all(tmp).unwrap();
    }

    #[test]
    fn ranges_outside_a_state_file_are_named_errors() {
        let tmp = tempdir();
        let local = LocalStorage::new(&tmp);
        let storage: Arc<dyn CheckpointStorage> = Arc::new(local.clone());
        write_snapshot(&local, "j/chk-3", 1);
        type Edit = fn(&mut SubtaskStateHandle);
        let edits: [(Edit, &str); 3] = [
            (|h| h.key_groups[2].1 = 1 << 40, "range of 3 bytes at offset 1099511627776"),
            (|h| h.key_groups[0].2 = u64::MAX, "range of 18446744073709551615 bytes at offset 0"),
            (|h| h.entries[0] = (h.size - 1, 2), "range of 2 bytes at offset"),
        ];
        for (edit, range) in edits {
            write_snapshot(&local, "j/chk-3", 1);
            rewrite(&local, "j/chk-3", |m| edit(&mut m.operators[0].subtasks[0]));
            let snap = RestoredSnapshot::open(storage.clone(), "j/chk-3").unwrap();
            let copied = snap.state_in("op", 0, 1, Some(&tmp)).unwrap_err();
            for err in [snap.state_for("op", 0, 1).unwrap_err(), copied, snap.verify().unwrap_err()] {
                assert!(matches!(err, RestoreError::Corrupt { .. }), "{err}");
                let err = err.to_string();
                assert!(err.contains("j/chk-3/op-0.state is corrupt") && err.contains(range), "{err}");
                assert!(err.contains("outside the file's"), "{err}");
            }
        }
        std::fs::remove_dir_all(tmp).unwrap();
    }

    #[test]
    fn names_from_metadata_and_latest_stay_in_the_snapshot() {
        let tmp = tempdir();
        let local = LocalStorage::new(tmp.join("root"));
        let storage: Arc<dyn CheckpointStorage> = Arc::new(local.clone());
        std::fs::write(tmp.join("secret.state"), b"outside").unwrap();
        write_snapshot(&local, "j/chk-3", 1);
        for file in ["../../../secret.state", "/etc/passwd", "sub/op-0.state", ".."] {
            rewrite(&local, "j/chk-3", |m| m.operators[0].subtasks[0].file = file.into());
            let err = RestoredSnapshot::open(storage.clone(), "j/chk-3").unwrap_err();
            assert!(matches!(err, RestoreError::UnsafePath { .. }), "{err}");
            let err = err.to_string();
            assert!(err.contains("j/chk-3/_metadata: state file `") && err.contains(file), "{err}");
        }
        for path in ["../../etc", "/etc", "chk-3/../../x"] {
            let pointer =
                LatestPointer { path: path.into(), checkpoint_id: 3, kind: SnapshotKind::Checkpoint, epoch: None };
            local.put("j/latest", &serde_json::to_vec(&pointer).unwrap()).unwrap();
            let err = RestoredSnapshot::latest(storage.clone(), "j").unwrap_err();
            assert!(matches!(err, RestoreError::UnsafePath { .. }), "{err}");
            let err = err.to_string();
            assert!(err.contains("j/latest: snapshot directory `") && err.contains(path), "{err}");
        }
        for job in ["..", "../j", "a/b", ""] {
            let err = RestoredSnapshot::latest(storage.clone(), job).unwrap_err();
            assert!(err.to_string().contains(&format!("job name `{job}`")), "{err}");
        }
        assert_eq!(state_file_name("3-sink/out\\x", 2), "3-sink_out_x-2.state");
        std::fs::remove_dir_all(tmp).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "weir-meta-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
