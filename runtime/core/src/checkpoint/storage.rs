//! Where checkpoints and savepoints are kept: a small object-store trait.
//!
//! The engine needs only whole-object writes and reads, ranged reads,
//! listing by prefix and deletion, so the same code runs against a local
//! directory ([`LocalStorage`]) and any S3-compatible service (the `weir-s3`
//! crate). Paths are `/`-separated keys relative to the storage's root. A
//! write is atomic: a reader sees the whole object or none of it (local
//! writes go through a temporary file and a rename; S3 PUTs are atomic).
//!
//! Keys are built from names that come from outside the engine (a job's name,
//! the file names in a `_metadata`, the `latest` pointer), so no key may leave
//! the root: [`check_key`] refuses absolute keys and `..`, `.` and empty
//! components, [`check_name`] also a separator where a single name is
//! expected. Every storage checks each key it is given with [`check_key`];
//! the readers of `_metadata` and `latest` check the names they find with
//! both, to say which file was at fault.

use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// A storage operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: {message}")]
    Failed {
        path: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StorageError {
    pub fn failed(path: impl fmt::Display, message: impl fmt::Display) -> Self {
        StorageError::Failed { path: path.to_string(), message: message.to_string(), source: None }
    }

    pub fn io(path: impl fmt::Display, e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            return StorageError::NotFound { path: path.to_string() };
        }
        StorageError::Failed { path: path.to_string(), message: e.to_string(), source: Some(Box::new(e)) }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

impl StorageError {
    /// `path` refused before any I/O, because it could leave the storage root.
    pub fn unsafe_path(path: impl fmt::Display, e: UnsafePath) -> Self {
        StorageError::Failed { path: path.to_string(), message: e.to_string(), source: Some(Box::new(e)) }
    }
}

/// A key or name that cannot be used under a storage root: it is absolute,
/// has a `..` (or `.`, or empty) component, or a separator where a single
/// name is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{name}` {problem}")]
pub struct UnsafePath {
    /// What the name is (`job name`, `state file`, `path`).
    pub what: &'static str,
    pub name: String,
    pub problem: &'static str,
}

/// Checks a `/`-separated key relative to a storage root (`""` is the root
/// itself; one trailing `/`, as in a listing prefix, is allowed): it must not
/// be absolute, nor have a `..`, `.` or empty component, nor a backslash or a
/// NUL (a separator, or the end of a path, to some systems).
pub fn check_key(what: &'static str, key: &str) -> Result<(), UnsafePath> {
    let refuse = |problem| Err(UnsafePath { what, name: key.to_string(), problem });
    if key.starts_with('/') {
        return refuse("is absolute: expected a path relative to the storage root");
    }
    if key.contains(['\\', '\0']) {
        return refuse("contains a backslash or a NUL character");
    }
    match key.strip_suffix('/').unwrap_or(key) {
        "" => Ok(()),
        inner => match inner.split('/').find(|part| matches!(*part, "" | "." | "..")) {
            Some("..") => refuse("has a `..` component, which would leave the storage root"),
            Some(_) => refuse("has an empty or `.` component"),
            None => Ok(()),
        },
    }
}

/// Checks a single name (a job name, a state file's name): a key of exactly
/// one component, so no separator either.
pub fn check_name(what: &'static str, name: &str) -> Result<(), UnsafePath> {
    check_key(what, name)?;
    let problem = match name {
        "" => "is empty",
        _ if name.contains('/') => "has a separator (`/`) where a single name is expected",
        _ => return Ok(()),
    };
    Err(UnsafePath { what, name: name.to_string(), problem })
}

/// The concatenation of byte slices, read in order without joining them: the
/// body of [`CheckpointStorage::put_parts`] for storages that stream.
pub struct PartsReader<'a> {
    current: &'a [u8],
    rest: std::slice::Iter<'a, &'a [u8]>,
}

impl<'a> PartsReader<'a> {
    pub fn new(parts: &'a [&'a [u8]]) -> Self {
        PartsReader { current: &[], rest: parts.iter() }
    }
}

impl io::Read for PartsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rest.next() {
                Some(part) => self.current = part,
                None => return Ok(0),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = &self.current[n..];
        Ok(n)
    }
}

/// An object store holding checkpoints.
pub trait CheckpointStorage: Send + Sync + fmt::Debug {
    /// Writes `bytes` at `path`, replacing any object there, atomically.
    fn put(&self, path: &str, bytes: &[u8]) -> StorageResult<()>;
    /// Writes the concatenation of `parts` at `path`, as [`CheckpointStorage::put`] does.
    /// Storages override it to write the parts as they are: a snapshot's file is many
    /// blobs, and joining them first would copy (and hold) the whole state once more.
    fn put_parts(&self, path: &str, parts: &[&[u8]]) -> StorageResult<()> {
        self.put(path, &parts.concat())
    }
    /// Writes the `len` bytes `body` reads at `path`, as [`CheckpointStorage::put`] does.
    /// Storages override it to stream: a disk backend's snapshot is read from a local
    /// file because it may be larger than the memory the process may use.
    fn put_reader(&self, path: &str, len: u64, body: &mut dyn io::Read) -> StorageResult<()> {
        let mut bytes = Vec::with_capacity(len as usize);
        body.read_to_end(&mut bytes).map_err(|e| StorageError::io(self.uri(path), e))?;
        self.put(path, &bytes)
    }
    fn get(&self, path: &str) -> StorageResult<Vec<u8>>;
    /// `len` bytes from `offset`.
    fn get_range(&self, path: &str, offset: u64, len: u64) -> StorageResult<Vec<u8>>;
    /// Keys under `prefix` (recursively), sorted.
    fn list(&self, prefix: &str) -> StorageResult<Vec<String>>;
    /// Deletes `path`; deleting what does not exist is not an error.
    fn delete(&self, path: &str) -> StorageResult<()>;
    /// A URI naming `path` for people (`file:///...`, `s3://bucket/...`).
    fn uri(&self, path: &str) -> String;
}

/// Checkpoints in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage under `root`, made absolute (so that its `file://` URIs are too).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        LocalStorage { root: std::path::absolute(&root).unwrap_or(root) }
    }

    /// Where `path` is, once [`check_key`] allowed it.
    fn full(&self, path: &str) -> StorageResult<PathBuf> {
        check_key("path", path).map_err(|e| StorageError::unsafe_path(self.uri(path), e))?;
        Ok(self.root.join(path))
    }
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(".tmp-") {
            continue;
        }
        let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

impl LocalStorage {
    /// Writes what `fill` writes at `path` through a temporary file renamed into
    /// place, both made durable.
    fn write_atomically(
        &self,
        path: &str,
        fill: &mut dyn FnMut(&mut std::fs::File) -> io::Result<()>,
    ) -> StorageResult<()> {
        let full = self.full(path)?;
        if path.is_empty() || path.ends_with('/') {
            return Err(StorageError::failed(self.uri(path), "not an object's path (empty, or ending in `/`)"));
        }
        let dir = full.parent().expect("a file path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(self.uri(path), e))?;
        let tmp =
            dir.join(format!(".tmp-{}-{}", std::process::id(), full.file_name().expect("file name").to_string_lossy()));
        let mut write = || -> io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            fill(&mut f)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &full)?;
            // Make the rename itself durable.
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            StorageError::io(self.uri(path), e)
        })
    }
}

impl CheckpointStorage for LocalStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> StorageResult<()> {
        self.put_parts(path, &[bytes])
    }

    fn put_parts(&self, path: &str, parts: &[&[u8]]) -> StorageResult<()> {
        self.write_atomically(path, &mut |f| parts.iter().try_for_each(|part| f.write_all(part)))
    }

    fn put_reader(&self, path: &str, len: u64, body: &mut dyn io::Read) -> StorageResult<()> {
        self.write_atomically(path, &mut |f| {
            let copied = io::copy(body, f)?;
            if copied != len {
                let short = format!("the body gave {copied} bytes where {len} were announced");
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, short));
            }
            Ok(())
        })
    }

    fn get(&self, path: &str) -> StorageResult<Vec<u8>> {
        std::fs::read(self.full(path)?).map_err(|e| StorageError::io(self.uri(path), e))
    }

    fn get_range(&self, path: &str, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let full = self.full(path)?;
        let read = || -> io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(&full)?;
            // The buffer is sized by the range, so the range is checked against the file first.
            let size = f.metadata()?.len();
            if offset.checked_add(len).is_none_or(|end| end > size) {
                let range = format!("{len} bytes at offset {offset} run past the end of its {size} bytes");
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, range));
            }
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = vec![0; len as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        read().map_err(|e| StorageError::io(self.uri(path), e))
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<String>> {
        let dir = self.full(prefix)?;
        let mut out = Vec::new();
        match walk(&dir, prefix.trim_end_matches('/'), &mut out) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(self.uri(prefix), e)),
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, path: &str) -> StorageResult<()> {
        let full = self.full(path)?;
        match std::fs::remove_file(&full) {
            Ok(()) => {
                // Directories are only a local artefact of keys: drop them once empty.
                let mut dir = full.parent();
                while let Some(d) = dir.filter(|d| *d != self.root) {
                    if std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(self.uri(path), e)),
        }
    }

    fn uri(&self, path: &str) -> String {
        format!("file://{}", self.root.join(path).display())
    }
}

/// A shared test of the [`CheckpointStorage`] contract, for every implementation.
pub fn check_storage_contract(s: &dyn CheckpointStorage) {
    s.put("job/chk-1/a.state", b"hello world").unwrap();
    s.put("job/chk-1/_metadata", b"{}").unwrap();
    s.put("job/latest", b"chk-1").unwrap();
    assert_eq!(s.get("job/chk-1/a.state").unwrap(), b"hello world");
    assert_eq!(s.get_range("job/chk-1/a.state", 6, 5).unwrap(), b"world");
    // A range past the end is an error, whatever its length (nothing is sized by it first).
    assert!(s.get_range("job/chk-1/a.state", 6, 1 << 60).is_err());
    assert!(s.get_range("job/chk-1/a.state", u64::MAX, 2).is_err());
    s.put("job/latest", b"chk-2").unwrap();
    assert_eq!(s.get("job/latest").unwrap(), b"chk-2", "put replaces");
    s.put_parts("job/parts", &[b"one ", b"", b"two"]).unwrap();
    assert_eq!(s.get("job/parts").unwrap(), b"one two");
    s.put_parts("job/parts", &[]).unwrap();
    assert_eq!(s.get("job/parts").unwrap(), b"", "put_parts replaces");
    // A streamed body, and one shorter than announced, which writes nothing.
    s.put_reader("job/parts", 7, &mut PartsReader::new(&[b"thr", b"", b"ee ", b"4"])).unwrap();
    assert_eq!(s.get("job/parts").unwrap(), b"three 4");
    assert!(s.put_reader("job/short", 8, &mut PartsReader::new(&[b"seven b"])).is_err());
    assert!(s.get("job/short").unwrap_err().is_not_found(), "a short body leaves no object");
    s.delete("job/parts").unwrap();
    assert_eq!(s.list("job/chk-1/").unwrap(), vec!["job/chk-1/_metadata", "job/chk-1/a.state"]);
    assert_eq!(s.list("job/").unwrap().len(), 3);
    assert!(s.list("nothing-here/").unwrap().is_empty());
    assert!(s.get("job/chk-9/_metadata").unwrap_err().is_not_found());
    s.delete("job/chk-1/a.state").unwrap();
    s.delete("job/chk-1/a.state").unwrap();
    assert!(s.get("job/chk-1/a.state").unwrap_err().is_not_found());
    assert!(s.uri("job/latest").ends_with("job/latest"));
    // No key leaves the root: refused before any I/O, naming the key.
    for key in ["../outside", "job/../../outside", "/etc/passwd", "job//latest", "job/./latest", "job\\..\\x"] {
        let refused = |e: StorageError| {
            let e = e.to_string();
            assert!(e.contains(&format!("path `{key}")), "{key}: {e}");
        };
        refused(s.put(key, b"x").unwrap_err());
        refused(s.put_parts(key, &[b"x"]).unwrap_err());
        refused(s.get(key).unwrap_err());
        refused(s.get_range(key, 0, 1).unwrap_err());
        refused(s.delete(key).unwrap_err());
        refused(s.list(&format!("{key}/")).unwrap_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names_stay_under_the_root() {
        for key in ["", "job/", "job/chk-1/_metadata", "savepoints/sp-3", "a..b/.hidden"] {
            check_key("path", key).unwrap();
        }
        let problem = |r: Result<(), UnsafePath>| r.unwrap_err().problem;
        assert!(problem(check_key("path", "../../etc")).contains("`..` component"));
        assert!(problem(check_key("path", "chk-1/../../x")).contains("`..` component"));
        assert!(problem(check_key("path", "/etc/passwd")).contains("absolute"));
        assert!(problem(check_key("path", "a//b")).contains("empty or `.`"));
        assert!(problem(check_key("path", "./a")).contains("empty or `.`"));
        assert!(problem(check_key("path", "a\\b")).contains("backslash"));
        check_name("job name", "orders-window").unwrap();
        let e = check_name("job name", "..").unwrap_err();
        assert_eq!(e.to_string(), "job name `..` has a `..` component, which would leave the storage root");
        assert!(problem(check_name("job name", "a/b")).contains("where a single name is expected"));
        assert!(problem(check_name("job name", "a/")).contains("where a single name is expected"));
        assert!(problem(check_name("job name", "")).contains("empty"));
    }

    #[test]
    fn parts_read_as_their_concatenation_whatever_the_buffer() {
        use std::io::Read;
        let parts: [&[u8]; 5] = [b"abc", b"", b"defgh", b"i", b""];
        for size in [1, 2, 3, 4, 100] {
            let (mut reader, mut out, mut buf) = (PartsReader::new(&parts), Vec::new(), vec![0; size]);
            loop {
                match reader.read(&mut buf).unwrap() {
                    0 => break,
                    n => out.extend_from_slice(&buf[..n]),
                }
            }
            assert_eq!(out, b"abcdefghi", "buffer of {size}");
        }
        assert_eq!(PartsReader::new(&[]).read(&mut [0; 4]).unwrap(), 0);
    }

    #[test]
    fn local_storage_keeps_the_contract() {
        let dir = std::env::temp_dir().join(format!("weir-storage-{}", std::process::id()));
        let local = LocalStorage::new(&dir);
        check_storage_contract(&local);
        // The root and prefixes are no objects (a write of the root would start in its parent).
        assert!(local.put("", b"x").is_err() && local.put("job/", b"x").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
