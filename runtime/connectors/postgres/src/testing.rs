//! A real PostgreSQL server on loopback, for tests: `initdb` into a temporary
//! directory and `postgres` on a free port, stopped when dropped.
//!
//! Uses Debian's server binaries (`/usr/lib/postgresql/<version>/bin`, or the
//! directory in `WEIR_PG_BIN`). PostgreSQL refuses to run as root; as root the
//! server runs as the `postgres` user the package creates.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: Option<(u32, u32)>,
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("WEIR_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("postgres").exists()).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().expect("PostgreSQL server binaries (apt-get install postgresql, or set WEIR_PG_BIN)")
}

fn id(flag: &str) -> u32 {
    let out = Command::new("id").args([flag, "postgres"]).output().expect("running id");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("the postgres user (apt-get install postgresql)")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgServer {
    /// Initialises a cluster (user `weir`, trust authentication on loopback) and starts it.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("weir-pg").tempdir().expect("a temporary directory");
        let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let user = is_root.then(|| (id("-u"), id("-g")));
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the data directory");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.args(["-A", "trust", "-U", "weir", "-E", "UTF8", "--no-sync", "-D"]).arg(&data);
        let out = as_user(&mut initdb, user).output().expect("running initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut server = PgServer { child: None, port: free_port(), dir, bin, user };
        server.run();
        server
    }

    fn run(&mut self) {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("a log file");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.path().display()))
            .args(["-c", "max_prepared_transactions=64", "-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(as_user(&mut cmd, self.user).spawn().expect("starting postgres"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while postgres::Client::connect(&self.url(), postgres::NoTls).is_err() {
            assert!(Instant::now() < deadline, "postgres did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://weir@127.0.0.1:{}/postgres", self.port)
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).expect("connecting to the test server")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server at once (as a crash would), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: immediate shutdown, no checkpoint (crash recovery on the next start).
            let _ = Command::new("kill").args(["-QUIT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}
