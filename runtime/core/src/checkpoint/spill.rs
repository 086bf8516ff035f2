//! A snapshot's key groups in a local file, for state larger than memory.
//!
//! An operator hands in its keyed state per key group ([`OperatorSnapshot`]);
//! on the heap backend the blobs are in memory, as the state is. With the
//! disk backend the state may be many times the memory the process may use,
//! so a full snapshot writes each key group, as it is encoded, to an unnamed
//! file in the state store's folder ([`KeyedWriter`]), and the uploader
//! streams that file to storage ([`OperatorSnapshot::store`]). The file has
//! no name (`O_TMPFILE`), so it disappears with its last handle, even when
//! the process is killed.
//!
//! [`OperatorSnapshot`]: super::metadata::OperatorSnapshot
//! [`OperatorSnapshot::store`]: super::metadata::OperatorSnapshot::store

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::compression::Compression;
use super::metadata::OperatorSnapshot;
use crate::error::{TaskError, TaskResult};
use crate::state::StateBackend;

/// Key groups written one after the other to a local file: where each is,
/// how they are stored, and the CRC-32 of the whole.
pub struct Spill {
    file: File,
    /// The folder the file is in (a compressed copy goes beside it).
    dir: PathBuf,
    /// `(key group, offset, length)`, in the order written.
    groups: Vec<(u32, u64, u64)>,
    len: u64,
    crc: crc32fast::Hasher,
    /// How the groups are stored in the file; [`Spill::read_group`] decodes them.
    compression: Compression,
}

impl Spill {
    /// `(key group, offset, length)` of each group in the file.
    pub fn groups(&self) -> &[(u32, u64, u64)] {
        &self.groups
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The CRC-32 of the file's bytes so far, to go on with.
    pub(crate) fn crc(&self) -> crc32fast::Hasher {
        self.crc.clone()
    }

    /// The file from its start (positional reads: readers do not share a cursor).
    pub fn reader(&self) -> impl Read + '_ {
        SpillReader { file: &self.file, at: 0, end: self.len }
    }

    /// Every group read back into memory (tests, and restoring a snapshot in-process).
    pub fn read_groups(&self) -> io::Result<Vec<(u32, Vec<u8>)>> {
        self.each_group().collect()
    }

    /// The groups read back one at a time, in order.
    pub fn each_group(&self) -> impl Iterator<Item = io::Result<(u32, Vec<u8>)>> + '_ {
        (0..self.groups.len()).map(|i| self.read_group(i))
    }

    /// The `i`th group of [`Spill::groups`], as the operator encoded it.
    pub fn read_group(&self, i: usize) -> io::Result<(u32, Vec<u8>)> {
        let (g, stored) = self.read_stored(i)?;
        let blob = self.compression.decompress(stored).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok((g, blob))
    }

    /// The `i`th group as the file holds it.
    fn read_stored(&self, i: usize) -> io::Result<(u32, Vec<u8>)> {
        let (g, offset, len) = self.groups[i];
        let mut blob = vec![0; len as usize];
        self.read_at(offset, &mut blob)?;
        Ok((g, blob))
    }

    /// How the groups are stored in the file.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// A copy beside this file with every group stored as `compression` says
    /// (groups stored otherwise are decoded first).
    pub(crate) fn stored_as(&self, compression: Compression) -> io::Result<Spill> {
        let mut copy = KeyedFile::new(&self.dir, compression)?;
        for i in 0..self.groups.len() {
            let (g, blob) = self.read_group(i)?;
            copy.push(g, &compression.compress(&blob)?)?;
        }
        copy.finish()
    }

    /// Fills `buf` from `offset` of the file.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Copies a stored state file into an unnamed file in `dir`, `chunk` bytes at a
    /// time (`read(offset, len)`), so that a restore of state larger than memory
    /// never holds a whole file. Returns the copy, indexing no group yet, and its CRC-32.
    pub(crate) fn download<E: From<io::Error>>(
        dir: &Path,
        size: u64,
        chunk: u64,
        mut read: impl FnMut(u64, u64) -> Result<Vec<u8>, E>,
    ) -> Result<(Spill, u32), E> {
        let file = tempfile::tempfile_in(dir)?;
        let mut crc = crc32fast::Hasher::new();
        let mut at = 0;
        while at < size {
            let bytes = read(at, chunk.min(size - at))?;
            file.write_all_at(&bytes, at)?;
            crc.update(&bytes);
            at += bytes.len() as u64;
        }
        let crc32 = crc.clone().finalize();
        let dir = dir.to_path_buf();
        Ok((Spill { file, dir, groups: Vec::new(), len: size, crc, compression: Compression::None }, crc32))
    }

    /// Only these `(key group, offset, length)` of the file are read back,
    /// each stored as `compression` says.
    pub(crate) fn with_groups(mut self, groups: Vec<(u32, u64, u64)>, compression: Compression) -> Self {
        self.groups = groups;
        self.compression = compression;
        self
    }
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spill({} key groups, {} bytes)", self.groups.len(), self.len)
    }
}

/// Two snapshots are equal only when they share the file.
impl PartialEq for Spill {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

struct SpillReader<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for SpillReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.at).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the snapshot's local file ended early"));
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// Where an operator puts its key groups while it takes a full snapshot: in
/// memory, or (the disk backend) in a local file.
pub enum KeyedWriter {
    Memory(Vec<(u32, Vec<u8>)>),
    File(KeyedFile),
}

/// A [`Spill`] being written.
pub struct KeyedFile {
    out: BufWriter<File>,
    spill: Spill,
}

impl KeyedFile {
    /// An unnamed file in `dir`, for groups stored as `compression` says.
    fn new(dir: &Path, compression: Compression) -> io::Result<Self> {
        let file = tempfile::tempfile_in(dir)?;
        let read_handle = file.try_clone()?;
        let spill = Spill {
            file: read_handle,
            dir: dir.to_path_buf(),
            groups: Vec::new(),
            len: 0,
            crc: crc32fast::Hasher::new(),
            compression,
        };
        Ok(KeyedFile { out: BufWriter::with_capacity(1 << 20, file), spill })
    }

    fn push(&mut self, group: u32, stored: &[u8]) -> io::Result<()> {
        self.out.write_all(stored)?;
        let spill = &mut self.spill;
        spill.crc.update(stored);
        spill.groups.push((group, spill.len, stored.len() as u64));
        spill.len += stored.len() as u64;
        Ok(())
    }

    fn finish(mut self) -> io::Result<Spill> {
        self.out.flush()?;
        Ok(self.spill)
    }
}

impl KeyedWriter {
    /// In memory for the heap backend; in a file in the store's folder for the disk backend.
    pub fn for_backend(backend: &StateBackend) -> TaskResult<Self> {
        match backend {
            StateBackend::Heap => Ok(KeyedWriter::Memory(Vec::new())),
            StateBackend::Disk(store) => KeyedWriter::in_file(store.dir()),
        }
    }

    /// Groups written to an unnamed file in `dir`, as the operator encodes
    /// them (the uploader compresses them, off the task's thread).
    pub fn in_file(dir: &Path) -> TaskResult<Self> {
        Ok(KeyedWriter::File(KeyedFile::new(dir, Compression::None).map_err(|e| write_error(dir, e))?))
    }

    /// Adds a key group's blob (groups in any order, each once).
    pub fn push(&mut self, group: u32, blob: Vec<u8>) -> TaskResult {
        match self {
            KeyedWriter::Memory(groups) => groups.push((group, blob)),
            KeyedWriter::File(file) => file.push(group, &blob).map_err(|e| write_error(&file.spill.dir, e))?,
        }
        Ok(())
    }

    /// The snapshot of the groups pushed, its entries still to add.
    pub fn finish(self) -> TaskResult<OperatorSnapshot> {
        match self {
            KeyedWriter::Memory(keyed) => Ok(OperatorSnapshot { keyed, ..OperatorSnapshot::default() }),
            KeyedWriter::File(file) => {
                let dir = file.spill.dir.clone();
                let spill = file.finish().map_err(|e| write_error(&dir, e))?;
                Ok(OperatorSnapshot { spill: Some(Arc::new(spill)), ..OperatorSnapshot::default() })
            }
        }
    }
}

fn write_error(dir: &Path, e: io::Error) -> TaskError {
    TaskError::Operator(format!("disk state: cannot write a snapshot to {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spilled_snapshot_reads_back_and_indexes_as_one_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = [(3u32, b"three".to_vec()), (1, Vec::new()), (7, vec![7; 3 << 20])];
        let (mut memory, mut file) = (KeyedWriter::Memory(Vec::new()), KeyedWriter::in_file(dir.path()).unwrap());
        for (g, blob) in &blobs {
            memory.push(*g, blob.clone()).unwrap();
            file.push(*g, blob.clone()).unwrap();
        }
        let (mut memory, mut file) = (memory.finish().unwrap(), file.finish().unwrap());
        memory.entries.push(b"entry".to_vec());
        file.entries.push(b"entry".to_vec());
        assert!(file.keyed.is_empty() && file.spill.as_ref().unwrap().read_groups().unwrap() == blobs);
        let range = crate::keygroup::KeyGroupRange { start: 0, end: 127 };
        assert_eq!(file.handle(0, "f".into(), range), memory.handle(0, "f".into(), range));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the file has no name");

        let storage = super::super::storage::LocalStorage::new(dir.path().join("store"));
        memory.store(&storage, "memory").unwrap();
        file.store(&storage, "file").unwrap();
        use super::super::storage::CheckpointStorage;
        assert_eq!(storage.get("file").unwrap(), storage.get("memory").unwrap());
        assert_eq!(storage.get("file").unwrap().len() as u64, memory.handle(0, "f".into(), range).size);
    }

    #[test]
    fn a_folder_that_cannot_be_written_is_named() {
        let e = KeyedWriter::in_file(Path::new("/nonexistent/weir")).err().unwrap().to_string();
        assert!(e.contains("/nonexistent/weir"), "{e}");
    }
}
