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
        .args(if workload == "orders-payments" {
            vec!["--set".to_string(), format!("sources.payments.count={events}")]
        } else {
            vec![]
        })
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
fn orders_sliding() {
    check("orders-sliding", 150_000);
}

#[test]
fn orders_payments() {
    check("orders-payments", 150_000);
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

/// The payments stream (new with the orders-payments join): `weir run` of a
/// `datagen: payments` pipeline writes exactly the payments the oracle's
/// generator makes for the same order numbers, at any parallelism.
#[test]
fn payments_stream_is_the_oracles() {
    let events = 20_011;
    let script = format!(
        "import sys; sys.path.insert(0, {dir:?}); import workloads\n\
         for n in range({events}):\n    p = workloads.payment(n)\n    \
         if p: print(p.order_id, p.amount, p.time)",
        dir = crate::common::oracle_dir().display().to_string()
    );
    let output = Command::new("python3").args(["-c", &script]).output().expect("python3 runs the oracle");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut expected: Vec<String> = String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect();
    expected.sort();
    assert!(expected.len() > 18_000, "about 0.93 payments per order: {}", expected.len());
    for p in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let (file, out) = (dir.path().join("payments.yaml"), dir.path().join("out"));
        let yaml = format!(
            "name: payments\nsource: {{ type: datagen, workload: payments, count: {events} }}\n\
             sink: {{ type: file, path: {} }}\n",
            out.display()
        );
        std::fs::write(&file, yaml).unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["run", "-q"])
            .arg(&file)
            .args(["--parallelism", &p.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "weir run of a payments pipeline at parallelism {p}");
        let mut got = Vec::new();
        for entry in std::fs::read_dir(&out).unwrap() {
            for line in std::fs::read_to_string(entry.unwrap().path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                got.push(format!("{} {} {}", v["order_id"].as_str().unwrap(), v["amount"], v["time"]));
            }
        }
        got.sort();
        assert!(got == expected, "parallelism {p}: {} payments, the oracle has {}", got.len(), expected.len());
    }
}

/// `weir bench --pipeline`: the report line of the file at `workload` over `events` events.
fn bench_pipeline(workload: &str, events: u64, parallelism: usize) -> (u64, String) {
    let file = workspace().join(format!("examples/workloads/{workload}.yaml"));
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "--pipeline"])
        .arg(&file)
        .args(["--events", &events.to_string(), "--parallelism", &parallelism.to_string()])
        .output()
        .unwrap();
    let (stdout, stderr) = crate::common::text(&output);
    assert!(output.status.success(), "weir bench --pipeline {} failed:\n{stderr}", file.display());
    let line = stdout.lines().find(|l| l.starts_with("query=")).expect("a report line");
    let field = |k| crate::common::field(line, k).unwrap_or_else(|| panic!("{line} lacks {k}"));
    assert_eq!(field("query"), workload, "{line}");
    assert_eq!(field("events"), events.to_string(), "{line}");
    (field("outputs").parse().unwrap(), field("checksum").to_string())
}

/// The benchmark of a pipeline file runs the same job as `weir run`: the
/// oracle's number of rows, and the same rows (one checksum) at every parallelism.
#[test]
fn bench_pipeline_runs_the_files_job() {
    let events = 77_777;
    for workload in ["orders-window", "orders-dedup", "q5", "q7", "q1"] {
        let expected = oracle(workload, events);
        let (rows, checksum) = bench_pipeline(workload, events, 1);
        assert_eq!(rows, expected.outputs, "{workload}: rows at parallelism 1");
        for p in [2, 3] {
            assert_eq!(bench_pipeline(workload, events, p), (rows, checksum.clone()), "{workload} at parallelism {p}");
        }
    }
}
