//! Checkpoint URIs of the command line and pipeline files, opened as storage
//! by the launcher's one opener, with the pipeline's `storage:` settings.

use std::sync::Arc;

use weir::core::checkpoint::storage::CheckpointStorage;
use weir_launch::storage::StorageSettings;
use weir_pipeline::config::Storage;

/// The launcher's settings from a pipeline's `storage:` section.
pub fn settings(storage: Option<&Storage>) -> StorageSettings {
    storage.map_or_else(StorageSettings::default, |s| StorageSettings {
        endpoint: s.endpoint.clone(),
        region: s.region.clone(),
        path_style: s.path_style,
    })
}

/// Opens the storage rooted at `uri`.
pub fn open(uri: &str, storage: Option<&Storage>) -> Result<Arc<dyn CheckpointStorage>, String> {
    weir_launch::storage::open(uri, &settings(storage)).map_err(|e| e.to_string())
}
