//! Savepoints in storage, as the operator sees them: whether one is really
//! there (its `_metadata`, written last), and disposing of one. S3 with the
//! job's storage settings and the operator's own credentials, or a local path.

use std::sync::Arc;

use weir_core::checkpoint::storage::CheckpointStorage;
#[cfg(test)]
use weir_core::checkpoint::storage::LocalStorage;
use weir_launch::storage::StorageSettings;

use crate::crd::StorageSpec;

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

/// Deletes the savepoint at `uri`: `_metadata` first, so that a disposal cut
/// short leaves no savepoint that looks whole, then every file. Blocking.
pub fn dispose(uri: &str, storage: Option<&StorageSpec>) -> Result<(), String> {
    let store = open(uri, storage)?;
    let failed = |e: weir_core::checkpoint::storage::StorageError| format!("disposing of {uri}: {e}");
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

    #[test]
    fn a_disposed_savepoint_is_gone_and_another_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        for sp in ["sp-1", "sp-2"] {
            let s = LocalStorage::new(dir.path().join(sp));
            s.put("op-0.state", b"state").unwrap();
            s.put("_metadata", b"{}").unwrap();
        }
        let uri = |sp: &str| format!("file://{}", dir.path().join(sp).display());
        assert!(exists(&uri("sp-1"), None) && exists(&uri("sp-2"), None));
        dispose(&uri("sp-1"), None).unwrap();
        assert!(!exists(&uri("sp-1"), None));
        assert!(LocalStorage::new(dir.path().join("sp-1")).list("").unwrap().is_empty());
        assert!(exists(&uri("sp-2"), None));
        dispose(&uri("sp-1"), None).expect("disposing twice is fine");
    }
}
