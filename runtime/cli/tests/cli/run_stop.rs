//! Ctrl-C on `weir run`: without checkpointing the sources stop and what
//! was read drains (the windows the watermark had passed are in the output,
//! whole); with checkpointing a savepoint is taken first, and the job resumed
//! from it ends with exactly the oracle's output.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{committed_output, oracle, oracle_dir, wait_for, workspace};

const EVENTS: u64 = 300_000;

fn weir_run(dir: &Path, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-q"])
        .arg(workspace().join("examples/workloads/orders-window.yaml"))
        .args(["--parallelism", "1", "--rest-port", &port.to_string()])
        .args(["--set", &format!("source.count={EVENTS}"), "--set", "source.rate=40000"])
        .args(["--set", &format!("sink.path={}", dir.join("out").display())])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until the job runs and its source has read `events` (as its
/// TaskManager's heartbeats tell the JobManager), however loaded the machine.
fn reading(port: u16, events: u64) {
    let url = format!("http://127.0.0.1:{port}/v1/jobs/orders-window");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Option<Value> = ureq::get(&url).call().ok().and_then(|mut r| r.body_mut().read_json().ok());
        if let Some(job) = job
            && job["state"] == "running"
            && job["vertices"][0]["metrics"]["records_in"].as_u64().unwrap_or(0) >= events
        {
            return;
        }
        assert!(Instant::now() < deadline, "the job did not start reading within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn interrupt(child: &Child) {
    // SAFETY: kill(2) with a pid this test started; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// Waits for the run to end by itself; its stderr.
fn ends(mut child: Child) -> String {
    let status = wait_for(&mut child, Duration::from_secs(120)).expect("the run ends");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    err
}

/// The rows of a file sink's directory, as `(region, window_start, count, sum)`.
fn rows_in(dir: &Path) -> BTreeSet<(String, i64, i64, i64)> {
    let mut rows = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("part-") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                rows.insert(row(&serde_json::from_str(line).unwrap()));
            }
        }
    }
    rows
}

fn row(v: &Value) -> (String, i64, i64, i64) {
    let int = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{v} has no integer {k}"));
    (v["region"].as_str().unwrap().to_string(), int("window_start"), int("count"), int("sum"))
}

/// The oracle's rows of orders-window over `events` events.
fn oracle_rows(events: u64) -> BTreeSet<(String, i64, i64, i64)> {
    let out = Command::new("python3")
        .arg(oracle_dir().join("orders.py"))
        .args([&events.to_string(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = String::from_utf8(out.stdout).unwrap().lines().next().unwrap().to_string();
    serde_json::from_str::<Vec<Value>>(&first).unwrap().iter().map(row).collect()
}

#[test]
fn ctrl_c_without_checkpointing_stops_the_sources_and_what_was_read_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = weir_run(tmp.path(), port, &[]);
    // A third of the stream: event time has passed the first windows by then.
    reading(port, EVENTS / 3);
    interrupt(&child);
    let err = ends(child);
    assert!(err.contains("stopping the sources") && err.contains("finished"), "{err}");
    // The windows the watermark passed before the stop fired, each whole
    // (the stream is at most 5 s out of order): exactly the oracle's first rows.
    let got = rows_in(&tmp.path().join("out"));
    let last = got.iter().map(|r| r.1).max().expect("some window fired before the stop");
    let expected: BTreeSet<_> = oracle_rows(EVENTS).into_iter().filter(|r| r.1 <= last).collect();
    assert_eq!(got, expected, "{err}");
    assert!(got.len() < oracle("orders-window", EVENTS).outputs as usize, "stopped part-way\n{err}");
}

#[test]
fn ctrl_c_with_checkpointing_takes_a_savepoint_and_the_resumed_job_ends_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let checkpoints = ["--checkpoint-dir", "ck", "--checkpoint-interval", "10s"];
    let port = free_port();
    let child = weir_run(tmp.path(), port, &checkpoints);
    reading(port, 1);
    interrupt(&child);
    let err = ends(child);
    assert!(err.contains("savepoint written to") && err.contains("/ck/orders-window/savepoints/sp-"), "{err}");
    assert!(
        committed_output(&tmp.path().join("out"), "orders-window").outputs < oracle("orders-window", EVENTS).outputs
    );
    let mut resume = checkpoints.to_vec();
    resume.extend(["--restore", "latest", "--set", "source.rate=10000000"]);
    let err = ends(weir_run(tmp.path(), free_port(), &resume));
    assert!(err.contains("restoring from"), "{err}");
    assert_eq!(committed_output(&tmp.path().join("out"), "orders-window"), oracle("orders-window", EVENTS), "{err}");
}
