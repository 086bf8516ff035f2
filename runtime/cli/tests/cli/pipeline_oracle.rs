//! Every workload of bench/WORKLOADS.md as a pipeline file (examples/workloads),
//! run by `weir run` into the file sink, read back, and compared with the
//! Python oracle's exact row count and checksum at parallelism 1, 2 and 4.

use std::path::Path;
use std::process::Command;

use crate::common::{Answer, committed_output, oracle, workspace};

fn run_pipeline(workload: &str, events: u64, parallelism: usize, out: &Path) -> Answer {
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
    let in_progress =
        std::fs::read_dir(out).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.'));
    assert_eq!(in_progress.count(), 0, "an in-progress file was left behind");
    committed_output(out, workload)
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
