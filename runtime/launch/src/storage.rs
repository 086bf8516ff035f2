//! Checkpoint and savepoint URIs, opened as storage: the one opener of the
//! CLI, job binaries and the operator.
//!
//! A URI is a plain path, `file:///path`, or `s3://bucket/prefix` (with the
//! `s3` feature). S3's endpoint, region and path-style addressing come from
//! the [`StorageSettings`] where they say so (a pipeline's `storage:`, a
//! StreamJob's `spec.storage`), else from the environment (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `WEIR_S3_PATH_STYLE`); credentials only ever come from the
//! environment or profile.

use std::sync::Arc;

use weir_core::checkpoint::storage::{CheckpointStorage, LocalStorage};

/// S3 settings that override the environment's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageSettings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
}

/// A URI that names no storage this build can open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorageUriError {
    #[error("`{0}` is not a checkpoint location: expected a path, file:///path or s3://bucket/prefix")]
    NotALocation(String),
    #[error("`{0}`: this binary was built without S3 support (the `s3` feature)")]
    NoS3(String),
    #[error("`{uri}`: {reason}")]
    S3 { uri: String, reason: String },
}

/// Opens the storage rooted at `uri` (a trailing `/` is ignored).
pub fn open(uri: &str, settings: &StorageSettings) -> Result<Arc<dyn CheckpointStorage>, StorageUriError> {
    let given = uri.trim();
    if given.starts_with("s3://") {
        return open_s3(given.trim_end_matches('/'), settings);
    }
    let path = given.strip_prefix("file://").unwrap_or(given);
    if path.is_empty() || path.contains("://") {
        return Err(StorageUriError::NotALocation(uri.to_string()));
    }
    let path = match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    Ok(Arc::new(LocalStorage::new(path)))
}

#[cfg(feature = "s3")]
fn open_s3(uri: &str, settings: &StorageSettings) -> Result<Arc<dyn CheckpointStorage>, StorageUriError> {
    let failed = |reason: String| StorageUriError::S3 { uri: uri.to_string(), reason };
    let mut config = weir_s3::S3Config::from_uri_and_env(uri).map_err(failed)?;
    if let Some(endpoint) = &settings.endpoint {
        config.endpoint = Some(endpoint.clone());
    }
    if let Some(region) = &settings.region {
        config.region = Some(region.clone());
    }
    if let Some(path_style) = settings.path_style {
        config.path_style = path_style;
    }
    Ok(Arc::new(weir_s3::S3Storage::new(config).map_err(|e| failed(e.to_string()))?))
}

#[cfg(not(feature = "s3"))]
fn open_s3(uri: &str, _settings: &StorageSettings) -> Result<Arc<dyn CheckpointStorage>, StorageUriError> {
    Err(StorageUriError::NoS3(uri.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_file_uris_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().display().to_string();
        open(&plain, &StorageSettings::default()).unwrap().put("a", b"1").unwrap();
        for uri in [format!("file://{plain}"), format!("{plain}/"), format!("file://{plain}/")] {
            let store = open(&uri, &StorageSettings::default()).unwrap();
            assert_eq!(store.get("a").unwrap(), b"1", "{uri}");
        }
    }

    #[test]
    fn other_schemes_are_refused_by_name() {
        for uri in ["hdfs://nn/ck", "", "file://"] {
            match open(uri, &StorageSettings::default()) {
                Err(e) => assert_eq!(e, StorageUriError::NotALocation(uri.to_string())),
                Ok(_) => panic!("`{uri}` opened"),
            }
        }
    }
}
