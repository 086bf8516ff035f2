//! `S3Storage` against a real S3-compatible server: moto_server (PyPI
//! `moto[server]`, installed by `scripts/test-deps.sh`), started by this test
//! on a free loopback port and killed when the test ends, panics included.
//!
//! Everything runs in one `#[test]`: the server is shared, and the AWS
//! environment variables the SDK's credential chain reads are set once, before
//! any thread could read them.

use std::sync::Arc;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use weir_core::checkpoint::storage::{CheckpointStorage, StorageError, check_storage_contract};
use weir_s3::testing::{MotoServer, free_port};
use weir_s3::{DEFAULT_PART_SIZE, S3Config, S3Storage};

const BUCKET: &str = "weir-checkpoints";

/// A plain SDK client with fixed credentials, for what the storage does not
/// do (creating buckets) and for looking behind its back.
struct Admin {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
}

impl Admin {
    fn new(endpoint: &str) -> Admin {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::from_static("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new("weir-test", "weir-test", None, None, "test"))
            .build();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Admin { runtime, client: aws_sdk_s3::Client::from_conf(config) }
    }

    fn create_bucket(&self, bucket: &str) {
        self.runtime.block_on(self.client.create_bucket().bucket(bucket).send()).unwrap();
    }

    fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self.runtime.block_on(self.client.list_objects_v2().bucket(bucket).send()).unwrap();
        out.contents().iter().filter_map(|o| o.key()).map(str::to_string).collect()
    }

    fn etag(&self, bucket: &str, key: &str) -> String {
        let out = self.runtime.block_on(self.client.head_object().bucket(bucket).key(key).send()).unwrap();
        out.e_tag().unwrap().to_string()
    }

    fn pending_uploads(&self, bucket: &str) -> usize {
        let out = self.runtime.block_on(self.client.list_multipart_uploads().bucket(bucket).send()).unwrap();
        out.uploads().len()
    }
}

/// Deterministic bytes that differ from one offset to the next.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

fn failure_message(e: StorageError) -> String {
    match e {
        StorageError::Failed { .. } => e.to_string(),
        StorageError::NotFound { path } => panic!("expected a failure, got not-found for {path}"),
    }
}

#[test]
fn s3_storage_against_moto_server() {
    let server = MotoServer::start();
    // SAFETY: the only test in this binary, and no other thread exists yet that
    // could read the environment. The SDK's default chain reads these.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "weir-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "weir-test");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ENDPOINT_URL", &server.endpoint);
        // Never ask an instance metadata service (not loopback), never read
        // the profile files of whoever runs the tests.
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/weir-test/aws-config");
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/weir-test/aws-credentials");
        for var in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"] {
            std::env::remove_var(var);
        }
    }
    let admin = Admin::new(&server.endpoint);
    admin.create_bucket(BUCKET);

    keeps_the_contract_under_a_prefix(&server, &admin);
    keeps_the_contract_at_the_bucket_root(&server, &admin);
    uploads_large_objects_in_parts(&server, &admin);
    aborts_a_failed_multipart_upload(&server, &admin);
    maps_missing_objects_to_not_found(&server);
    names_the_uri_and_the_service_error_on_failure(&server);
    takes_the_endpoint_from_aws_endpoint_url();
    serves_many_threads_and_lists_across_pages(&server);
    refuses_to_block_inside_an_async_runtime(&server, &admin);
}

fn keeps_the_contract_under_a_prefix(server: &MotoServer, admin: &Admin) {
    let storage = server.storage(BUCKET, "/contract/checkpoints/");
    check_storage_contract(&storage);
    assert_eq!(storage.uri("job/latest"), format!("s3://{BUCKET}/contract/checkpoints/job/latest"));

    let mut keys = admin.keys(BUCKET);
    keys.sort();
    assert_eq!(keys, ["contract/checkpoints/job/chk-1/_metadata", "contract/checkpoints/job/latest"]);

    // A sibling prefix is a different storage.
    let sibling = server.storage(BUCKET, "contract");
    assert_eq!(sibling.list("checkpoints/job/").unwrap().len(), 2);
    assert!(server.storage(BUCKET, "contract/other").list("").unwrap().is_empty());
}

fn keeps_the_contract_at_the_bucket_root(server: &MotoServer, admin: &Admin) {
    admin.create_bucket("weir-root");
    let storage = server.storage("weir-root", "");
    check_storage_contract(&storage);
    assert_eq!(storage.uri("job/latest"), "s3://weir-root/job/latest");
    assert_eq!(storage.list("").unwrap(), ["job/chk-1/_metadata", "job/latest"]);
}

fn uploads_large_objects_in_parts(server: &MotoServer, admin: &Admin) {
    let storage = server.storage(BUCKET, "multipart");
    let data = pattern(20 * 1024 * 1024 + 123);
    storage.put("job/chk-1/big.state", &data).unwrap();

    // S3's ETag of a multipart object ends with the number of parts.
    let etag = admin.etag(BUCKET, "multipart/job/chk-1/big.state");
    assert!(etag.trim_matches('"').ends_with("-3"), "expected 3 parts of {DEFAULT_PART_SIZE} bytes, ETag {etag}");
    assert_eq!(admin.pending_uploads(BUCKET), 0, "the upload was completed");
    assert!(storage.get("job/chk-1/big.state").unwrap() == data, "read back differs");

    // The same, streamed from a reader (a disk backend's snapshot, read from its local file).
    storage.put_reader("job/chk-1/streamed.state", data.len() as u64, &mut &data[..]).unwrap();
    assert!(storage.get("job/chk-1/streamed.state").unwrap() == data, "streamed read back differs");
    // A body that ends before its announced length fails in the second part, and is aborted.
    let short = storage.put_reader("job/chk-1/short.state", data.len() as u64, &mut &data[..10 << 20]);
    assert!(failure_message(short.unwrap_err()).contains("fill whole buffer"));
    assert_eq!(admin.pending_uploads(BUCKET), 0, "the short upload was aborted");
    assert!(storage.get("job/chk-1/short.state").unwrap_err().is_not_found(), "no partial object");

    // Ranges within, across and at the ends of parts.
    let boundary = DEFAULT_PART_SIZE as u64;
    for (offset, len) in [(boundary - 100, 200), (0, 10), (2 * boundary - 1, 2), (data.len() as u64 - 7, 7), (5, 0)] {
        let got = storage.get_range("job/chk-1/big.state", offset, len).unwrap();
        assert!(got == data[offset as usize..(offset + len) as usize], "range {offset}+{len} differs");
    }

    // A range past the end fails, as for a local file, and is no "not found".
    let end = data.len() as u64;
    let past = storage.get_range("job/chk-1/big.state", end - 10, 20).unwrap_err();
    assert!(failure_message(past).contains("shorter"));
    let beyond = storage.get_range("job/chk-1/big.state", end + 10, 5).unwrap_err();
    assert!(failure_message(beyond).contains("InvalidRange"));

    // A small put replaces the multipart object; an object of exactly one
    // part goes up in one piece.
    storage.put("job/chk-1/big.state", b"small now").unwrap();
    assert_eq!(storage.get("job/chk-1/big.state").unwrap(), b"small now");
    let one_part = pattern(DEFAULT_PART_SIZE);
    storage.put("job/chk-1/edge.state", &one_part).unwrap();
    assert!(!admin.etag(BUCKET, "multipart/job/chk-1/edge.state").contains('-'));
    assert!(storage.get("job/chk-1/edge.state").unwrap() == one_part);
}

fn aborts_a_failed_multipart_upload(server: &MotoServer, admin: &Admin) {
    // Parts under 5 MiB: the server refuses to complete the upload.
    let storage = server.storage(BUCKET, "aborted").with_part_size(1024 * 1024);
    let err = failure_message(storage.put("job/chk-1/big.state", &pattern(3 * 1024 * 1024)).unwrap_err());
    assert!(err.contains("CompleteMultipartUpload failed: EntityTooSmall"), "{err}");
    assert_eq!(admin.pending_uploads(BUCKET), 0, "the failed upload was aborted");
    assert!(storage.get("job/chk-1/big.state").unwrap_err().is_not_found(), "no partial object");
}

fn maps_missing_objects_to_not_found(server: &MotoServer) {
    let storage = server.storage(BUCKET, "missing");
    let uri = format!("s3://{BUCKET}/missing/job/chk-1/_metadata");
    for result in [
        storage.get("job/chk-1/_metadata"),
        storage.get_range("job/chk-1/_metadata", 0, 10),
        storage.get_range("job/chk-1/_metadata", 0, 0),
    ] {
        match result.unwrap_err() {
            StorageError::NotFound { path } => assert_eq!(path, uri),
            e => panic!("expected not-found, got {e}"),
        }
    }
    storage.delete("job/chk-1/_metadata").unwrap();
    assert!(storage.list("job/").unwrap().is_empty());
}

fn names_the_uri_and_the_service_error_on_failure(server: &MotoServer) {
    // A missing bucket is misconfiguration, not a missing checkpoint.
    let storage = server.storage("weir-no-such-bucket", "chk");
    let get = failure_message(storage.get("job/latest").unwrap_err());
    assert!(get.starts_with("s3://weir-no-such-bucket/chk/job/latest: GetObject failed: NoSuchBucket"), "{get}");
    assert!(get.contains("HTTP 404"), "{get}");
    let list = failure_message(storage.list("job/").unwrap_err());
    assert!(list.contains("s3://weir-no-such-bucket/chk/job/") && list.contains("NoSuchBucket"), "{list}");
    let put = failure_message(storage.put("job/latest", b"x").unwrap_err());
    assert!(put.contains("PutObject failed: NoSuchBucket"), "{put}");
    let big = failure_message(storage.put("job/big", &pattern(DEFAULT_PART_SIZE + 1)).unwrap_err());
    assert!(big.contains("CreateMultipartUpload failed: NoSuchBucket"), "{big}");

    // Nothing listening: the transport error, not just "dispatch failure".
    let closed = S3Config { endpoint: Some(format!("http://127.0.0.1:{}", free_port())), ..server.config(BUCKET, "x") };
    let err = failure_message(S3Storage::new(closed).unwrap().get("job/latest").unwrap_err());
    assert!(err.starts_with(&format!("s3://{BUCKET}/x/job/latest: GetObject failed: dispatch failure")), "{err}");
    assert!(err.to_lowercase().contains("connect"), "{err}");

    let invalid = S3Storage::new(server.config("Not_A_Bucket", "")).unwrap_err();
    assert!(failure_message(invalid).contains("bucket name `Not_A_Bucket` is not valid"));
}

fn takes_the_endpoint_from_aws_endpoint_url() {
    let config = S3Config { bucket: BUCKET.into(), prefix: "from-env".into(), path_style: true, ..S3Config::default() };
    let storage = S3Storage::new(config).unwrap();
    storage.put("job/latest", b"chk-3").unwrap();
    assert_eq!(storage.get("job/latest").unwrap(), b"chk-3");
}

fn serves_many_threads_and_lists_across_pages(server: &MotoServer) {
    // 1040 objects: more than one ListObjectsV2 page (1000 keys).
    const THREADS: usize = 8;
    const PER_THREAD: usize = 130;
    let storage = Arc::new(server.storage(BUCKET, "threads"));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let storage = Arc::clone(&storage);
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let path = format!("job/chk-1/op-{t}/part-{i:04}");
                    storage.put(&path, path.as_bytes()).unwrap();
                    assert_eq!(storage.get(&path).unwrap(), path.as_bytes());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut expected: Vec<String> =
        (0..THREADS).flat_map(|t| (0..PER_THREAD).map(move |i| format!("job/chk-1/op-{t}/part-{i:04}"))).collect();
    expected.sort();
    let listed = storage.list("job/").unwrap();
    assert_eq!(listed.len(), expected.len(), "all pages listed");
    assert!(listed == expected, "listed keys differ from those written");
    assert_eq!(storage.list("job/chk-1/op-3/").unwrap().len(), PER_THREAD);
}

fn refuses_to_block_inside_an_async_runtime(server: &MotoServer, admin: &Admin) {
    let storage = server.storage(BUCKET, "async");
    admin.runtime.block_on(async move {
        let err = storage.get("job/latest").unwrap_err();
        assert!(failure_message(err).contains("inside an async runtime"));
        drop(storage); // and dropping it there does not panic
    });
}
