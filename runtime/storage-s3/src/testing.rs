//! A real S3-compatible server for tests: moto_server (PyPI `moto[server]`,
//! installed by `scripts/test-deps.sh`), started on a free loopback port and
//! killed when dropped, panics included. Enabled by the `testing` feature.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use crate::S3Config;

/// The credentials the test server is used with (moto accepts any).
pub const ACCESS_KEY: &str = "weir-test";
pub const SECRET_KEY: &str = "weir-test";
pub const REGION: &str = "us-east-1";

/// A running moto_server; killed on drop.
pub struct MotoServer {
    child: Child,
    pub endpoint: String,
    log: PathBuf,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl MotoServer {
    /// Starts the server; panics with the way to install it when it is missing.
    pub fn start() -> MotoServer {
        let bin = moto_server_path();
        assert!(
            bin.is_file(),
            "moto_server is not installed at {}: run `bash scripts/test-deps.sh` first \
             (or point WEIR_MOTO_SERVER at a moto_server binary)",
            bin.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("weir-moto-{}-{port}.log", std::process::id()));
        let out = File::create(&log).expect("create the moto_server log");
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = MotoServer { child, endpoint: format!("http://127.0.0.1:{port}"), log };
        server.wait_until_it_answers(port);
        server
    }

    fn wait_until_it_answers(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll moto_server") {
                panic!("moto_server exited with {status} before answering:\n{}", self.log_text());
            }
            if answers_http(port) {
                return;
            }
            assert!(Instant::now() < deadline, "moto_server did not answer within 60 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A storage configuration for `bucket`/`prefix` on this server.
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint.clone()),
            region: None,
            path_style: true,
        }
    }

    /// A storage on this server.
    pub fn storage(&self, bucket: &str, prefix: &str) -> crate::S3Storage {
        crate::S3Storage::new(self.config(bucket, prefix)).expect("a storage on the test server")
    }

    /// The environment a process needs to reach this server through the AWS default chain.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }

    /// A plain SDK client with fixed credentials, for what the storage does not do.
    pub fn client(&self) -> (tokio::runtime::Runtime, aws_sdk_s3::Client) {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::from_static(REGION))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .build();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        (runtime, aws_sdk_s3::Client::from_conf(config))
    }

    /// Whether `key` exists in `bucket` (asked with the server's own credentials).
    pub fn exists(&self, bucket: &str, key: &str) -> bool {
        let (runtime, client) = self.client();
        runtime.block_on(client.head_object().bucket(bucket).key(key).send()).is_ok()
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (runtime, client) = self.client();
        runtime.block_on(client.create_bucket().bucket(bucket).send()).expect("create the test bucket");
    }
}

/// `$WEIR_MOTO_SERVER`, else where scripts/test-deps.sh installs it.
pub fn moto_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_MOTO_SERVER") {
        return path.into();
    }
    let cache = match std::env::var_os("WEIR_TEST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/weir-test"),
    };
    cache.join("venv/bin/moto_server")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local address").port()
}

fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0; 5];
    stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_ok()
        && stream.read_exact(&mut head).is_ok()
        && &head == b"HTTP/"
}
