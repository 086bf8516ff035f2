//! Checkpoint and savepoint storage on S3 and S3-compatible services (MinIO,
//! Ceph RGW, moto, ...): [`S3Storage`] implements weir-core's
//! [`CheckpointStorage`] with the official AWS SDK.
//!
//! # Keys
//!
//! A storage is rooted at `s3://{bucket}/{prefix}`, the checkpoint directory
//! of the pipeline (`checkpointing.dir`, `--checkpoint-dir`; split it with
//! [`parse_s3_uri`]). The engine's path `job/chk-7/_metadata` becomes the
//! object key `{prefix}/job/chk-7/_metadata`; [`CheckpointStorage::list`] strips
//! the prefix again, so the engine only ever sees paths relative to the root,
//! exactly as with `LocalStorage`. Keys ending in `/` (the "folders" some
//! consoles create) are not listed. A path that could leave the prefix (`..`,
//! absolute; see weir-core's `check_key`) is refused before any request.
//!
//! # Requests
//!
//! * `put`: one `PutObject` for objects up to the part size
//!   ([`DEFAULT_PART_SIZE`], see [`S3Storage::with_part_size`]), a multipart
//!   upload with CRC32-checked parts for larger ones, aborted if any step
//!   fails. Both are atomic: readers see the old object or the whole new one,
//!   never a part.
//! * `get`, `get_range`: `GetObject`, with a `Range` header for the latter; a
//!   range running past the end of the object is an error, as for local files.
//! * `list`: `ListObjectsV2`, following continuation tokens, sorted.
//! * `delete`: `DeleteObject`; deleting a missing object is not an error.
//!
//! A missing object is [`StorageError::NotFound`]; every other failure is
//! [`StorageError::Failed`] naming the `s3://` URI, the S3 operation and the
//! service's error code and message (or the transport error), with the SDK's
//! error as the source. A missing *bucket* is a failure, not "not found".
//!
//! # Configuration and credentials
//!
//! [`S3Config`] carries what a pipeline's `storage:` key says: the endpoint
//! (for S3-compatible services), the region and path-style addressing.
//! Credentials are never configured here: they come from the AWS SDK's
//! default chain, i.e. the standard environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the
//! shared profile files (`AWS_PROFILE`), Kubernetes web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE`), or the container/instance metadata
//! service. Without an endpoint in the config, `AWS_ENDPOINT_URL` (or
//! `AWS_ENDPOINT_URL_S3`) is honoured; without a region, `AWS_REGION` or the
//! profile's, else `us-east-1`.
//!
//! # Threads
//!
//! The trait is synchronous and the SDK is not: each `S3Storage` owns a small
//! tokio runtime (two worker threads for the HTTP connections) and every
//! method blocks the calling thread on it. The methods take `&self` and may be
//! called from any number of threads at once, but not from inside an async
//! runtime (that is reported as an error; use `spawn_blocking` there).
//!
//! ```no_run
//! use weir_core::checkpoint::storage::CheckpointStorage;
//! use weir_s3::{S3Config, S3Storage};
//!
//! let config = S3Config {
//!     endpoint: Some("http://127.0.0.1:9000".into()),
//!     path_style: true,
//!     ..S3Config::from_uri("s3://weir/checkpoints")?
//! };
//! let storage = S3Storage::new(config)?;
//! storage.put("order-monitor/latest", b"chk-7")?; // s3://weir/checkpoints/order-monitor/latest
//! assert_eq!(storage.list("order-monitor/")?, ["order-monitor/latest"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
#[cfg(feature = "testing")]
pub mod testing;
mod uri;

use std::future::Future;
use std::io::Read;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::upload_part::{UploadPartError, UploadPartOutput};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use weir_core::checkpoint::storage::{CheckpointStorage, PartsReader, StorageError, StorageResult, check_key};

use crate::error::storage_error;
pub use crate::uri::parse_s3_uri;

/// The size of each part of a multipart upload but the last; objects up to
/// this size go up in one request.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's limit on the parts of one upload.
const MAX_PARTS: usize = 10_000;
/// Parts of one multipart upload sent at once (each a copy of up to a part size in memory).
const PARALLEL_PARTS: usize = 4;

/// Where an [`S3Storage`] keeps its objects, and how to reach the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// The key prefix every path is placed under (`checkpoints`, `a/b`); may be
    /// empty. Leading and trailing slashes do not matter.
    pub prefix: String,
    /// The service's URL, e.g. `http://127.0.0.1:9000`; `None` for AWS itself
    /// or whatever `AWS_ENDPOINT_URL` says.
    pub endpoint: Option<String>,
    /// `None`: the region from the environment or profile, else `us-east-1`.
    pub region: Option<String>,
    /// Address buckets as `{endpoint}/{bucket}/{key}` instead of
    /// `{bucket}.{endpoint}/{key}`; most S3-compatible servers need this.
    pub path_style: bool,
}

impl S3Config {
    /// The bucket and prefix of an `s3://bucket/prefix` URI, the rest defaulted.
    pub fn from_uri(uri: &str) -> Result<S3Config, String> {
        let (bucket, prefix) = parse_s3_uri(uri)?;
        Ok(S3Config { bucket, prefix, ..S3Config::default() })
    }

    /// [`S3Config::from_uri`], with path-style addressing as the environment
    /// says: `WEIR_S3_PATH_STYLE=true|false`, else on exactly when an endpoint
    /// is set (`AWS_ENDPOINT_URL`: S3-compatible servers want path-style).
    /// The endpoint, region and credentials come from the environment as usual.
    pub fn from_uri_and_env(uri: &str) -> Result<S3Config, String> {
        let mut config = S3Config::from_uri(uri)?;
        config.path_style = match std::env::var("WEIR_S3_PATH_STYLE").as_deref() {
            Ok("true") => true,
            Ok("false") => false,
            Ok(other) => return Err(format!("WEIR_S3_PATH_STYLE: `{other}` is neither true nor false")),
            Err(_) => std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        };
        Ok(config)
    }
}

/// Checkpoints in an S3 bucket, under a key prefix. See the [crate docs](crate).
#[derive(Debug)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    /// The key prefix with a trailing `/`, or empty.
    root: String,
    part_size: usize,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Storage {
    /// Builds the client and its runtime (two threads). Reads the region,
    /// endpoint and credential settings; credentials themselves are fetched
    /// on the first request, and nothing is sent to S3 here, so a wrong
    /// endpoint or missing credentials show on first use. (Without a region in
    /// `config`, the environment or the profile, the SDK asks the instance
    /// metadata service for one.)
    pub fn new(config: S3Config) -> StorageResult<S3Storage> {
        let prefix = config.prefix.trim_matches('/');
        let root = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        let root_uri = format!("s3://{}/{root}", config.bucket);
        uri::check_bucket_name(&config.bucket).map_err(|e| StorageError::failed(&root_uri, e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-s3")
            .enable_all()
            .build()
            .map_err(|e| StorageError::io(&root_uri, e))?;

        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk_config = block_on(&runtime, &root_uri, loader.load())?;
        let mut s3_config = aws_sdk_s3::config::Builder::from(&sdk_config).force_path_style(config.path_style);
        if sdk_config.region().is_none() {
            s3_config = s3_config.region(Region::from_static("us-east-1"));
        }
        let client = Client::from_conf(s3_config.build());
        Ok(S3Storage { client, bucket: config.bucket, root, part_size: DEFAULT_PART_SIZE, runtime: Some(runtime) })
    }

    /// Uploads objects larger than `bytes` in parts of `bytes` (the last one
    /// smaller; larger parts when an object would need more than S3's 10,000).
    /// Larger parts mean fewer requests for big savepoints, smaller ones less
    /// to resend when a request fails. S3 and most compatible services refuse
    /// parts under 5 MiB (but the last) when the upload completes; then the
    /// upload is aborted and `put` fails.
    pub fn with_part_size(mut self, bytes: usize) -> S3Storage {
        self.part_size = bytes.max(1);
        self
    }

    /// The object key of `path`, once [`check_key`] allowed it.
    fn key(&self, path: &str) -> StorageResult<String> {
        check_key("path", path).map_err(|e| StorageError::unsafe_path(self.uri(path), e))?;
        Ok(format!("{}{path}", self.root))
    }

    fn block_on<F: Future>(&self, uri: &str, fut: F) -> StorageResult<F::Output> {
        block_on(self.runtime.as_ref().expect("the runtime lives until drop"), uri, fut)
    }

    async fn put_object(&self, uri: &str, key: &str, bytes: Vec<u8>) -> StorageResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| storage_error(uri, "PutObject", e))?;
        Ok(())
    }

    /// A multipart upload of the concatenation of `parts` (`len` bytes); aborted (so no
    /// parts linger and cost) if any step fails.
    async fn put_multipart(&self, uri: &str, key: &str, body: &mut dyn Read, len: u64) -> StorageResult<()> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| storage_error(uri, "CreateMultipartUpload", e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StorageError::failed(uri, "CreateMultipartUpload answered without an upload id"))?;

        let part_size = (self.part_size as u64).max(len.div_ceil(MAX_PARTS as u64));
        let upload = async {
            // Up to PARALLEL_PARTS parts in flight: one request at a time leaves the
            // connection idle for a round trip per part, and one stream is slower than
            // several on S3 itself. (Dropping the set on an error cancels the others.)
            let mut in_flight = tokio::task::JoinSet::new();
            let mut done_parts = Vec::new();
            // Read a part at a time as the upload needs it: a body may be larger than memory.
            let chunks = (0..len.div_ceil(part_size)).map(|i| {
                let size = part_size.min(len - i * part_size);
                let mut chunk = vec![0; size as usize];
                body.read_exact(&mut chunk).map_err(|e| StorageError::io(uri, e))?;
                Ok::<_, StorageError>(chunk)
            });
            for (i, chunk) in chunks.enumerate() {
                let chunk = chunk?;
                if in_flight.len() >= PARALLEL_PARTS
                    && let Some(done) = in_flight.join_next().await
                {
                    done_parts.push(completed(done, uri)?);
                }
                let part_number = i as i32 + 1;
                let request = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(ByteStream::from(chunk));
                in_flight.spawn(async move {
                    let out = request.send().await;
                    (part_number, out)
                });
            }
            while let Some(done) = in_flight.join_next().await {
                done_parts.push(completed(done, uri)?);
            }
            done_parts.sort_by_key(|p| p.part_number());
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done_parts)).build())
                .send()
                .await
                .map_err(|e| storage_error(uri, "CompleteMultipartUpload", e))?;
            Ok(())
        };
        let Err(err) = upload.await else { return Ok(()) };
        let aborted =
            self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(upload_id).send().await;
        match aborted {
            Ok(_) => Err(err),
            Err(abort) => {
                let abort = storage_error(uri, "AbortMultipartUpload", abort);
                Err(error::with_note(
                    err,
                    format!("aborting upload {upload_id} failed too: {}", error::message(&abort)),
                ))
            }
        }
    }
}

/// A part upload's number and outcome.
type PartOutcome = (i32, Result<UploadPartOutput, SdkError<UploadPartError, HttpResponse>>);

/// A finished part upload as the completion request lists it.
fn completed(done: Result<PartOutcome, tokio::task::JoinError>, uri: &str) -> StorageResult<CompletedPart> {
    let (part_number, out) = done.map_err(|e| StorageError::failed(uri, format!("UploadPart task failed: {e}")))?;
    let out = out.map_err(|e| storage_error(uri, &format!("UploadPart (part {part_number})"), e))?;
    Ok(CompletedPart::builder()
        .part_number(part_number)
        .set_e_tag(out.e_tag)
        .set_checksum_crc32(out.checksum_crc32)
        .build())
}

impl Drop for S3Storage {
    /// Lets go of the runtime without waiting for its threads, so that
    /// dropping the storage inside async code (a REST handler holding the
    /// last reference, say) does not panic.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `fut` to completion on `runtime`, from a thread outside any async
/// runtime (where blocking would stall other tasks and tokio would panic).
fn block_on<F: Future>(runtime: &tokio::runtime::Runtime, uri: &str, fut: F) -> StorageResult<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(StorageError::failed(
            uri,
            "S3Storage blocks and was called from inside an async runtime; call it from a plain thread \
             or through tokio::task::spawn_blocking",
        ));
    }
    Ok(runtime.block_on(fut))
}

impl CheckpointStorage for S3Storage {
    fn put(&self, path: &str, bytes: &[u8]) -> StorageResult<()> {
        self.put_parts(path, &[bytes])
    }

    fn put_parts(&self, path: &str, parts: &[&[u8]]) -> StorageResult<()> {
        let len = parts.iter().map(|p| p.len() as u64).sum::<u64>();
        self.put_reader(path, len, &mut PartsReader::new(parts))
    }

    fn put_reader(&self, path: &str, len: u64, body: &mut dyn Read) -> StorageResult<()> {
        let (uri, key) = (self.uri(path), self.key(path)?);
        self.block_on(&uri, async {
            if len > self.part_size as u64 {
                return self.put_multipart(&uri, &key, body, len).await;
            }
            let mut bytes = vec![0; len as usize];
            body.read_exact(&mut bytes).map_err(|e| StorageError::io(&uri, e))?;
            self.put_object(&uri, &key, bytes).await
        })?
    }

    fn get(&self, path: &str) -> StorageResult<Vec<u8>> {
        let (uri, key) = (self.uri(path), self.key(path)?);
        self.block_on(&uri, async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| storage_error(&uri, "GetObject", e))?;
            read_body(&uri, "GetObject", out.content_length, out.body).await
        })?
    }

    fn get_range(&self, path: &str, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        let (uri, key) = (self.uri(path), self.key(path)?);
        let Some(end) = offset.checked_add(len) else {
            return Err(StorageError::failed(&uri, format!("range of {len} bytes at offset {offset} overflows")));
        };
        self.block_on(&uri, async {
            if len == 0 {
                // HTTP cannot ask for an empty range; still report a missing object.
                self.client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| storage_error(&uri, "HeadObject", e))?;
                return Ok(Vec::new());
            }
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .range(format!("bytes={offset}-{}", end - 1))
                .send()
                .await
                .map_err(|e| storage_error(&uri, "GetObject", e))?;
            let bytes = read_body(&uri, "GetObject", out.content_length, out.body).await?;
            if bytes.len() as u64 != len {
                return Err(StorageError::failed(
                    &uri,
                    format!("asked for {len} bytes at offset {offset} but got {}: the object is shorter", bytes.len()),
                ));
            }
            Ok(bytes)
        })?
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<String>> {
        let (uri, key) = (self.uri(prefix), self.key(prefix)?);
        self.block_on(&uri, async {
            let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(key).into_paginator().send();
            let mut keys = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| storage_error(&uri, "ListObjectsV2", e))?;
                for key in page.contents().iter().filter_map(|o| o.key()) {
                    match key.strip_prefix(&self.root) {
                        Some(path) if !path.ends_with('/') => keys.push(path.to_string()),
                        _ => {}
                    }
                }
            }
            keys.sort();
            Ok(keys)
        })?
    }

    fn delete(&self, path: &str) -> StorageResult<()> {
        let (uri, key) = (self.uri(path), self.key(path)?);
        self.block_on(&uri, async {
            match self.client.delete_object().bucket(&self.bucket).key(&key).send().await {
                Ok(_) => Ok(()),
                Err(e) => match storage_error(&uri, "DeleteObject", e) {
                    StorageError::NotFound { .. } => Ok(()),
                    e => Err(e),
                },
            }
        })?
    }

    fn uri(&self, path: &str) -> String {
        format!("s3://{}/{}{path}", self.bucket, self.root)
    }
}

/// The body, chunk by chunk into one buffer of the announced length: collecting the
/// chunks first and copying them out would hold (and copy) a large object twice.
async fn read_body(
    uri: &str,
    operation: &str,
    content_length: Option<i64>,
    mut body: ByteStream,
) -> StorageResult<Vec<u8>> {
    // Capped, so that a wrong header cannot make a huge allocation up front.
    let mut bytes = Vec::with_capacity(content_length.unwrap_or(0).clamp(0, 1 << 32) as usize);
    loop {
        match body.try_next().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => return Ok(bytes),
            Err(e) => {
                return Err(StorageError::Failed {
                    path: uri.to_string(),
                    message: format!(
                        "{operation} failed while reading the body: {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    ),
                    source: Some(Box::new(e)),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_prefix_are_refused_before_any_request() {
        // Nothing listens on port 1: a request would fail differently (and slowly).
        let config = S3Config {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            path_style: true,
            ..S3Config::from_uri("s3://weir/checkpoints").unwrap()
        };
        let s = S3Storage::new(config).unwrap();
        for key in ["../other-prefix/x", "j/../../x", "/x", "j//latest"] {
            let refused = |e: StorageError| {
                let e = e.to_string();
                let (uri, path) = (format!("s3://weir/checkpoints/{key}"), format!("path `{key}"));
                assert!(e.starts_with(&uri) && e.contains(&path), "{e}");
            };
            refused(s.put(key, b"x").unwrap_err());
            refused(s.get(key).unwrap_err());
            refused(s.get_range(key, 0, 1).unwrap_err());
            refused(s.delete(key).unwrap_err());
            refused(s.list(&format!("{key}/")).unwrap_err());
        }
    }
}
