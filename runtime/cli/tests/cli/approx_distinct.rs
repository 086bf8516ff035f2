//! `approx_count_distinct` in a pipeline file, beside the exact
//! `count_distinct` of the same field: every window's estimate within 2% of
//! the exact count, with sketches merged across the slices of sliding windows
//! and across key groups, and after SIGKILLs and restores at other parallelisms.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{Rng, committed_rows, wait_for};

const EVENTS: u64 = 400_000;

/// Orders per region in 2-minute windows sliding by 30 s: each window merges four slices' sketches.
fn pipeline(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("distinct.yaml");
    let yaml = format!(
        "name: distinct\n\
         source: {{ type: datagen, workload: orders, count: {EVENTS}, watermark: {{ field: time, out_of_orderness: 5s }} }}\n\
         steps:\n\
         \x20 - key_by: region\n\
         \x20 - window: {{ type: sliding, size: 2m, slide: 30s }}\n\
         \x20 - aggregate: {{ exact: count_distinct(order_id), approx: approx_count_distinct(order_id) }}\n\
         sink: {{ type: file, path: {} }}\n",
        dir.join("out").display()
    );
    std::fs::write(&file, yaml).unwrap();
    file
}

fn weir(file: &Path, dir: &Path, parallelism: usize, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(["run", "-q"])
        .arg(file)
        .args(["--parallelism", &parallelism.to_string()])
        .args(["--checkpoint-dir", &dir.join("ck").display().to_string(), "--checkpoint-interval", "100ms"])
        .args(["--rest-port", "0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn int(row: &Value, field: &str) -> i64 {
    row[field].as_i64().unwrap_or_else(|| panic!("row {row} has no integer `{field}`"))
}

/// (region, window_start, exact) of every row, sorted; checks each estimate on the way.
fn checked_rows(dir: &Path) -> Vec<(String, i64, i64)> {
    let mut rows: Vec<(String, i64, i64)> = committed_rows(&dir.join("out"))
        .iter()
        .map(|r| {
            let (exact, approx) = (int(r, "exact"), int(r, "approx"));
            let error = (approx - exact).abs() as f64 / exact as f64;
            assert!(error <= 0.02, "estimate {approx} for {exact} distinct ids: {:.2}% off in {r}", error * 100.0);
            (r["region"].as_str().unwrap().to_string(), int(r, "window_start"), exact)
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn estimates_stay_within_two_percent_through_merges_and_restores() {
    let whole = tempfile::tempdir().unwrap();
    let file = pipeline(whole.path());
    let status = weir(&file, whole.path(), 3, &[]).status().unwrap();
    assert!(status.success());
    let expected = checked_rows(whole.path());
    // ~200 s of event time: about 10 windows per region, most holding 30 000 distinct ids.
    assert!(expected.len() >= 36, "{} rows", expected.len());
    assert!(expected.iter().filter(|r| r.2 > 20_000).count() >= 24, "{expected:?}");

    let crashed = tempfile::tempdir().unwrap();
    let file = pipeline(crashed.path());
    let mut rng = Rng::from_env();
    let mut restore: Vec<&str> = Vec::new();
    let mut kills = 0;
    for parallelism in [2, 4] {
        let mut child =
            weir(&file, crashed.path(), parallelism, &[&["--set", "source.rate=200000"], &restore[..]].concat())
                .spawn()
                .unwrap();
        if wait_for(&mut child, rng.millis(500, 1500)).is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        }
        if crashed.path().join("ck/distinct/latest").exists() {
            restore = vec!["--restore", "latest"];
        }
    }
    assert!(kills > 0 && !restore.is_empty(), "{kills} kills: the test did not exercise recovery");
    let status = weir(&file, crashed.path(), 1, &restore).status().unwrap();
    assert!(status.success());
    assert_eq!(checked_rows(crashed.path()), expected, "the exact counts after crashes and restores");
}
