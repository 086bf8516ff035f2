//! Every workload of bench/WORKLOADS.md as a pipeline file (examples/workloads),
//! run by `weir run` into the file sink, read back, and compared with the
//! Python oracle's exact row count and checksum at parallelism 1, 2 and 4.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use weir::core::keygroup::mix64;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn oracle_dir() -> PathBuf {
    let dir = std::env::var_os("WEIR_ORACLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/bench/oracle"));
    assert!(
        dir.join("orders.py").exists(),
        "the benchmark oracle is missing at {} (set WEIR_ORACLE_DIR)",
        dir.display()
    );
    dir
}

/// (rows, checksum) from the oracle.
fn oracle(workload: &str, events: u64) -> (u64, i64) {
    let dir = oracle_dir();
    let mut cmd = Command::new("python3");
    match workload {
        "orders-window" => cmd.arg(dir.join("orders.py")).arg(events.to_string()),
        "orders-dedup" => cmd.arg(dir.join("orders.py")).arg(events.to_string()).arg("--dedup"),
        q => cmd.arg(dir.join("bids.py")).arg(q).arg(events.to_string()),
    };
    let out = cmd.output().expect("running python3");
    assert!(out.status.success(), "oracle failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().last().unwrap();
    let field = |name: &str| last.split_whitespace().find_map(|kv| kv.strip_prefix(name)).unwrap().to_string();
    (field("outputs=").parse().unwrap(), field("checksum=").parse().unwrap())
}

fn int(row: &Value, field: &str) -> i64 {
    row[field].as_i64().unwrap_or_else(|| panic!("row {row} has no integer `{field}`"))
}

/// The row hash of WORKLOADS.md, from the fields the pipeline wrote.
fn row_hash(workload: &str, r: &Value) -> i64 {
    let w = i64::wrapping_mul;
    match workload {
        "orders-window" | "orders-dedup" => {
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
        _ => unreachable!(),
    }
}

fn run_pipeline(workload: &str, events: u64, parallelism: usize, out: &Path) -> (u64, i64) {
    let file = workspace().join(format!("examples/workloads/{workload}.yaml"));
    let status = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-q"])
        .arg(&file)
        .args(["--parallelism", &parallelism.to_string()])
        .args(["--set", &format!("source.count={events}")])
        .args(["--set", &format!("sink.path={}", out.display())])
        .status()
        .unwrap();
    assert!(status.success(), "weir run {} failed", file.display());
    let (mut rows, mut sum) = (0u64, 0u64);
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.starts_with('.'), "an in-progress file was left behind: {name}");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            rows += 1;
            sum = sum.wrapping_add(mix64(row_hash(workload, &row) as u64));
        }
    }
    (rows, sum as i64)
}

fn check(workload: &str, events: u64) {
    let expected = oracle(workload, events);
    for p in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let got = run_pipeline(workload, events, p, &dir.path().join("out"));
        assert_eq!(got, expected, "{workload} over {events} events at parallelism {p}: (rows, checksum)");
    }
}

#[test]
fn orders_window() {
    check("orders-window", 150_000);
}

#[test]
fn orders_dedup() {
    check("orders-dedup", 150_000);
}

#[test]
fn q0() {
    check("q0", 30_011);
}

#[test]
fn q1() {
    check("q1", 30_011);
}

#[test]
fn q2() {
    check("q2", 90_000);
}

#[test]
fn q5() {
    check("q5", 150_000);
}

#[test]
fn q7() {
    check("q7", 150_000);
}
