//! Checkpoint URIs of the command line and pipeline files, opened as storage.
//!
//! `file:///path`, a plain path, or `s3://bucket/prefix` (with the pipeline's
//! `storage:` settings for endpoint, region and path-style addressing; the
//! credentials come from the AWS environment or profile only).

use std::sync::Arc;

use weir::core::checkpoint::storage::{CheckpointStorage, LocalStorage};
use weir_pipeline::config::Storage as StorageSettings;
use weir_s3::{S3Config, S3Storage};

/// Opens the storage rooted at `uri`.
pub fn open(uri: &str, settings: Option<&StorageSettings>) -> Result<Arc<dyn CheckpointStorage>, String> {
    if uri.starts_with("s3://") {
        let mut config = S3Config::from_uri_and_env(uri)?;
        if let Some(s) = settings {
            config.endpoint = s.endpoint.clone();
            config.region = s.region.clone();
            config.path_style = s.path_style.unwrap_or(false);
        }
        return Ok(Arc::new(S3Storage::new(config).map_err(|e| e.to_string())?));
    }
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    if path.is_empty() || uri.contains("://") && !uri.starts_with("file://") {
        return Err(format!(
            "`{uri}` is not a checkpoint location: expected file:///path, a path, or s3://bucket/prefix"
        ));
    }
    Ok(Arc::new(LocalStorage::new(path)))
}
