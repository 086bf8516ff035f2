//! Shared by the CLI's integration tests: the workloads' exact answers (the
//! Python oracles of `bench/WORKLOADS.md`) and reading a file sink's committed
//! output back into the same (rows, checksum) form.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir::core::keygroup::mix64;

/// The number of output rows and their order-independent checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub outputs: u64,
    pub checksum: i64,
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `WEIR_ORACLE_DIR`, else `<workspace>/bench/oracle`.
pub fn oracle_dir() -> PathBuf {
    match std::env::var_os("WEIR_ORACLE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace().join("bench/oracle"),
    }
}

/// The value of `key=` among the space-separated fields of `line`.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

/// The last `outputs=... checksum=...` line of `text`.
pub fn answer_in(text: &str, what: &str) -> Answer {
    let line = text
        .lines()
        .rev()
        .find(|l| field(l, "outputs").is_some() && field(l, "checksum").is_some())
        .unwrap_or_else(|| panic!("{what} printed no `outputs=... checksum=...` line:\n{text}"));
    let parse =
        |key| field(line, key).unwrap().parse().unwrap_or_else(|e| panic!("{what}: bad {key} in `{line}`: {e}"));
    Answer { outputs: parse("outputs") as u64, checksum: parse("checksum") }
}

pub fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The oracle's answer for `workload` over `events` events. Fails (never skips) without the oracle.
pub fn oracle(workload: &str, events: u64) -> Answer {
    let dir = oracle_dir();
    let (script, args): (&str, Vec<String>) = match workload {
        "orders-window" => ("orders.py", vec![events.to_string()]),
        "orders-dedup" => ("orders.py", vec![events.to_string(), "--dedup".into()]),
        "orders-sliding" => ("orders.py", vec![events.to_string(), "--sliding".into()]),
        "orders-payments" => ("payments.py", vec![events.to_string()]),
        query => ("bids.py", vec![query.to_string(), events.to_string()]),
    };
    let path = dir.join(script);
    assert!(
        path.is_file(),
        "oracle script {} not found: set WEIR_ORACLE_DIR to the directory holding orders.py and bids.py",
        path.display()
    );
    let output = Command::new("python3")
        .arg(&path)
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("could not run python3 {}: {e}", path.display()));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "oracle {} {args:?} failed ({}):\n{stderr}", path.display(), output.status);
    answer_in(&stdout, &format!("oracle {script} {args:?}"))
}

fn int(row: &Value, field: &str) -> i64 {
    row[field].as_i64().unwrap_or_else(|| panic!("row {row} has no integer `{field}`"))
}

/// The row hash of WORKLOADS.md, from the fields a workload pipeline writes.
pub fn row_hash(workload: &str, r: &Value) -> i64 {
    let w = i64::wrapping_mul;
    match workload {
        "orders-window" | "orders-dedup" | "orders-sliding" | "orders-payments" => {
            let region = ["north", "south", "east", "west"].iter().position(|x| r["region"] == *x).unwrap() as i64;
            w(region, 31)
                .wrapping_add(w(int(r, "window_start"), 7))
                .wrapping_add(w(int(r, "count"), 3))
                .wrapping_add(int(r, "sum"))
        }
        "q0" => int(r, "auction").wrapping_add(int(r, "price")),
        "q1" => w(int(r, "auction"), 31).wrapping_add(int(r, "dol_price")),
        "q2" => w(int(r, "auction"), 31).wrapping_add(int(r, "price")),
        "q5" => w(int(r, "window_end"), 31).wrapping_add(w(int(r, "auction"), 7)).wrapping_add(int(r, "count")),
        "q7" => w(int(r, "window_end"), 31).wrapping_add(w(int(r, "auction"), 7)).wrapping_add(int(r, "price")),
        _ => unreachable!("unknown workload {workload}"),
    }
}

/// The answer of output rows (as JSON objects) of `workload`.
pub fn answer_of(rows: impl IntoIterator<Item = Value>, workload: &str) -> Answer {
    let (mut outputs, mut sum) = (0u64, 0u64);
    for row in rows {
        outputs += 1;
        sum = sum.wrapping_add(mix64(row_hash(workload, &row) as u64));
    }
    Answer { outputs, checksum: sum as i64 }
}

/// What a reader of a file sink's directory sees: the `part-*` files at its
/// top level (hidden in-progress files and `_pending/` are not output).
pub fn committed_output(dir: &Path, workload: &str) -> Answer {
    answer_of(committed_rows(dir), workload)
}

/// The rows of the `part-*` files of a file sink's directory (none if it does not exist).
pub fn committed_rows(dir: &Path) -> Vec<Value> {
    let mut rows = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return rows };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("part-") || !path.is_file() {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let row: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: bad line {line}: {e}", path.display()));
            rows.push(row);
        }
    }
    rows
}

/// A small deterministic generator for kill moments, seeded from
/// WEIR_TEST_SEED (printed, so that a run can be replayed) or the clock.
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Rng {
        let seed = std::env::var("WEIR_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("kill moments from WEIR_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

/// The child's exit status, or `None` if it is still running after `limit`.
pub fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// `weir run -q FILE --parallelism P --rest-port 0` in `dir`, its stderr to a
/// file there (read it with [`stderr_of`]): a pipe nobody reads while the job
/// runs would block it once full.
pub fn spawn_run(dir: &Path, file: &str, parallelism: usize) -> Child {
    let stderr = std::fs::File::create(dir.join("weir-stderr.log")).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-q", file, "--parallelism", &parallelism.to_string(), "--rest-port", "0"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// What the last [`spawn_run`] in `dir` wrote to stderr.
pub fn stderr_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("weir-stderr.log")).unwrap_or_default()
}
