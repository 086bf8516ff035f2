//! Savepoints in storage, as the operator sees them: whether one is really
//! there (its `_metadata`, written last), and disposing of one. S3 with the
//! job's storage settings and the operator's own credentials, or a local path.
//!
//! Disposal deletes everything under a path taken from the StreamJob's
//! status, which anyone allowed to write that status can edit. So a path is
//! disposed of only when [`DisposalScope`] (a pure function of the spec)
//! finds it to be one of the job's own snapshot directories, as the
//! JobManager names them: `<dir>/<job>/savepoints/sp-<n>` or
//! `<dir>/<job>/chk-<n>`, `<dir>` the job's configured checkpoint or savepoint
//! directory. Anything else (another bucket, `/etc`, a path with `..`, the
//! job's whole directory, another job's snapshot) is refused with the reason,
//! and nothing is deleted.

use std::sync::Arc;

use weir_core::checkpoint::storage::CheckpointStorage;
#[cfg(test)]
use weir_core::checkpoint::storage::LocalStorage;
use weir_launch::storage::StorageSettings;

use crate::crd::{StorageSpec, StreamJob};

/// A path the operator will not dispose of, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refusing to dispose of `{path}`: {reason}")]
pub struct DisposalRefused {
    pub path: String,
    pub reason: String,
}

/// Why disposing of a savepoint did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DisposeError {
    #[error(transparent)]
    Refused(#[from] DisposalRefused),
    #[error("{0}")]
    Storage(String),
}

/// A location split into where it is (`s3://bucket`, or `file://` for a
/// local path) and the segments of its path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Location {
    place: String,
    segments: Vec<String>,
}

impl Location {
    /// `s3://bucket/a/b`, `file:///a/b` or `/a/b`; a trailing `/` is ignored.
    /// Empty, `.` and `..` segments are refused: nothing here resolves them.
    fn parse(uri: &str) -> Result<Location, String> {
        let uri = uri.trim_end_matches('/');
        let (place, path) = if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("no bucket".into());
            }
            (format!("s3://{bucket}"), key)
        } else if let Some(path) = uri.strip_prefix("file://").or_else(|| uri.starts_with('/').then_some(uri)) {
            let Some(path) = path.strip_prefix('/') else { return Err("not an absolute path".into()) };
            ("file://".to_string(), path)
        } else {
            return Err("neither an s3:// nor a file:// location".into());
        };
        if uri.chars().any(char::is_control) {
            return Err("it contains control characters".into());
        }
        let segments: Vec<String> =
            if path.is_empty() { Vec::new() } else { path.split('/').map(String::from).collect() };
        if let Some(bad) = segments.iter().find(|s| s.is_empty() || *s == "." || *s == "..") {
            return Err(format!("it has a `{bad}` path segment"));
        }
        Ok(Location { place, segments })
    }
}

/// Where the operator may dispose of a job's snapshots: see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisposalScope {
    job: String,
    /// `<dir>/<job>` for each configured directory.
    roots: Vec<Location>,
    /// The configured directories, for messages.
    dirs: Vec<String>,
}

impl DisposalScope {
    /// The scope of `job`: its name, its checkpoint directory and (when set) its savepoint directory.
    pub fn of(job: &StreamJob) -> DisposalScope {
        let name = kube::ResourceExt::name_any(job);
        let savepoints = job.spec.savepoints.as_ref().and_then(|s| s.dir.clone());
        let dirs: Vec<String> = std::iter::once(job.spec.checkpointing.dir.clone()).chain(savepoints).collect();
        let roots = dirs
            .iter()
            .filter_map(|d| Location::parse(d).ok())
            .map(|mut l| {
                l.segments.push(name.clone());
                l
            })
            .collect();
        DisposalScope { job: name, roots, dirs }
    }

    /// Whether `path` is one of the job's own snapshot directories.
    pub fn check(&self, path: &str) -> Result<(), DisposalRefused> {
        let refuse = |reason: String| DisposalRefused { path: path.to_string(), reason };
        let at =
            Location::parse(path).map_err(|why| refuse(format!("not a location the operator disposes of ({why})")))?;
        let snapshot = |name: &str, prefix: &str| {
            name.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let mut under = self.roots.iter().filter(|r| r.place == at.place && at.segments.starts_with(&r.segments));
        let Some(first) = under.next() else {
            return Err(refuse(format!(
                "not under job `{}`'s own directory in its checkpoint or savepoint directories ({})",
                self.job,
                self.dirs.join(", ")
            )));
        };
        let is_snapshot = |root: &Location| match &at.segments[root.segments.len()..] {
            [dir, name] => dir == "savepoints" && snapshot(name, "sp-"),
            [name] => snapshot(name, "chk-"),
            _ => false,
        };
        if is_snapshot(first) || under.any(is_snapshot) {
            return Ok(());
        }
        Err(refuse(format!(
            "under job `{}`'s directory but not one of its snapshots (savepoints/sp-<n> or chk-<n>)",
            self.job
        )))
    }
}

/// The storage rooted at a savepoint's directory: the launcher's opener,
/// with the job's storage settings.
fn open(uri: &str, storage: Option<&StorageSpec>) -> Result<Arc<dyn CheckpointStorage>, String> {
    let settings = storage.map_or_else(StorageSettings::default, |s| StorageSettings {
        endpoint: s.endpoint.clone(),
        region: s.region.clone(),
        path_style: Some(s.path_style),
    });
    weir_launch::storage::open(uri, &settings).map_err(|e| e.to_string())
}

/// Whether the savepoint at `uri` has its `_metadata` in storage. Blocking.
pub fn exists(uri: &str, storage: Option<&StorageSpec>) -> bool {
    match open(uri, storage) {
        Ok(store) => store.get("_metadata").is_ok(),
        Err(e) => {
            tracing::warn!("checking {uri} in storage: {e}");
            false
        }
    }
}

/// Deletes the savepoint at `uri`, when `scope` allows it (nothing is
/// touched otherwise): `_metadata` first, so that a disposal cut short leaves
/// no savepoint that looks whole, then every file. Blocking.
pub fn dispose(uri: &str, scope: &DisposalScope, storage: Option<&StorageSpec>) -> Result<(), DisposeError> {
    scope.check(uri)?;
    let store = open(uri, storage).map_err(DisposeError::Storage)?;
    let failed =
        |e: weir_core::checkpoint::storage::StorageError| DisposeError::Storage(format!("disposing of {uri}: {e}"));
    match store.delete("_metadata") {
        Err(e) if !e.is_not_found() => return Err(failed(e)),
        _ => {}
    }
    for key in store.list("").map_err(failed)? {
        store.delete(&key).map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `orders` with its checkpoints under `checkpoints` and, when given, savepoints under `savepoints`.
    fn job(checkpoints: &str, savepoints: Option<&str>) -> StreamJob {
        let mut job = StreamJob::test();
        job.spec.checkpointing.dir = checkpoints.into();
        job.spec.savepoints = savepoints.map(|dir| crate::crd::SavepointsSpec {
            dir: Some(dir.into()),
            periodic: None,
            history_limit: 5,
            timeout: None,
        });
        job
    }

    #[test]
    fn a_disposed_savepoint_is_gone_and_another_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let sp_dir = |sp: &str| dir.path().join("orders/savepoints").join(sp);
        for sp in ["sp-1", "sp-2"] {
            let s = LocalStorage::new(sp_dir(sp));
            s.put("op-0.state", b"state").unwrap();
            s.put("_metadata", b"{}").unwrap();
        }
        let scope = DisposalScope::of(&job(&format!("file://{}", dir.path().display()), None));
        let uri = |sp: &str| format!("file://{}", sp_dir(sp).display());
        assert!(exists(&uri("sp-1"), None) && exists(&uri("sp-2"), None));
        dispose(&uri("sp-1"), &scope, None).unwrap();
        assert!(!exists(&uri("sp-1"), None));
        assert!(LocalStorage::new(sp_dir("sp-1")).list("").unwrap().is_empty());
        assert!(exists(&uri("sp-2"), None));
        dispose(&uri("sp-1"), &scope, None).expect("disposing twice is fine");
    }

    #[test]
    fn only_the_jobs_own_snapshots_in_its_configured_directories_may_be_disposed_of() {
        let scope = DisposalScope::of(&job("s3://weir/checkpoints", Some("s3://weir-sp/keep/")));
        for ok in [
            "s3://weir/checkpoints/orders/savepoints/sp-7",
            "s3://weir/checkpoints/orders/savepoints/sp-7/",
            "s3://weir-sp/keep/orders/savepoints/sp-12",
            "s3://weir/checkpoints/orders/chk-3",
        ] {
            assert_eq!(scope.check(ok), Ok(()), "{ok}");
        }
        for (foreign, why) in [
            ("s3://other-bucket/checkpoints/orders/savepoints/sp-7", "not under job `orders`'s own directory"),
            ("s3://weir/checkpoints-old/orders/savepoints/sp-7", "not under"),
            ("s3://weir/checkpoints/payments/savepoints/sp-7", "not under"),
            ("/etc", "not under"),
            ("file:///etc/passwd", "not under"),
            ("s3://weir/checkpoints/orders/savepoints/../../payments/savepoints/sp-1", "`..` path segment"),
            ("s3://weir/checkpoints/orders/savepoints/sp-7/..", "`..` path segment"),
            ("s3://weir/checkpoints/orders//savepoints/sp-7", "`` path segment"),
            ("s3://weir/checkpoints/orders/./savepoints/sp-7", "`.` path segment"),
            ("s3://weir/checkpoints/orders", "not one of its snapshots"),
            ("s3://weir/checkpoints/orders/savepoints", "not one of its snapshots"),
            ("s3://weir/checkpoints/orders/savepoints/sp-", "not one of its snapshots"),
            ("s3://weir/checkpoints/orders/savepoints/sp-7/op-0.state", "not one of its snapshots"),
            ("s3://weir/checkpoints/orders/latest", "not one of its snapshots"),
            ("http://weir/checkpoints/orders/savepoints/sp-7", "neither an s3:// nor a file://"),
            ("s3:///checkpoints/orders/savepoints/sp-7", "no bucket"),
            ("relative/orders/savepoints/sp-7", "neither an s3:// nor a file://"),
        ] {
            let refused = scope.check(foreign).unwrap_err();
            assert_eq!(refused.path, foreign);
            assert!(refused.reason.contains(why), "{foreign}: {}", refused.reason);
        }
        let local = DisposalScope::of(&job("file:///var/lib/weir/cp", None));
        assert_eq!(local.check("file:///var/lib/weir/cp/orders/savepoints/sp-1"), Ok(()));
        assert_eq!(local.check("/var/lib/weir/cp/orders/savepoints/sp-1"), Ok(()), "a plain path is local too");
        assert!(local.check("s3://var/lib/weir/cp/orders/savepoints/sp-1").is_err(), "another kind of storage");
    }

    #[test]
    fn a_refused_disposal_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("elsewhere/orders/savepoints/sp-1");
        let s = LocalStorage::new(other.clone());
        s.put("_metadata", b"{}").unwrap();
        let scope = DisposalScope::of(&job(&format!("file://{}", dir.path().join("cp").display()), None));
        let uri = format!("file://{}", other.display());
        let e = dispose(&uri, &scope, None).unwrap_err();
        assert!(matches!(&e, DisposeError::Refused(r) if r.path == uri), "{e}");
        assert!(exists(&uri, None), "still there");
    }
}
