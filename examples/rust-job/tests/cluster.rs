//! The Rust job binary as its own cluster: one JobManager and two
//! TaskManager processes of the same binary give the same per-minute rows as
//! the binary run in one process.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: &str = "300000";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_job_binary_runs_as_jobmanager_and_taskmanagers_with_the_same_answer() {
    let bin = env!("CARGO_BIN_EXE_rust-job");
    // In one process: "<window_start> <count> orders <amount> revenue  <region>" lines.
    let local = Command::new(bin).args([EVENTS, "2"]).output().unwrap();
    assert!(local.status.success());
    let expected: BTreeSet<(i64, i64, i64, String)> = String::from_utf8_lossy(&local.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 6 && f[2] == "orders")
                .then(|| (f[0].parse().unwrap(), f[1].parse().unwrap(), f[3].parse().unwrap(), f[5].to_string()))
        })
        .collect();
    assert!(expected.len() > 10, "{}", String::from_utf8_lossy(&local.stdout));

    let tmp = tempfile::tempdir().unwrap();
    let rpc = free_port().to_string();
    let out = tmp.path().join("out").display().to_string();
    let cp = tmp.path().join("cp").display().to_string();
    let mut jm = Command::new(bin)
        .args(["jobmanager", "--parallelism", "2", "--bind", "127.0.0.1", "--rpc-port", &rpc])
        .args(["--rest-port", &free_port().to_string(), "--checkpoint-dir", &cp, "--checkpoint-interval", "300ms"])
        // The job's own arguments: the TaskManagers get them from the JobManager.
        .args(["--", "--events", EVENTS, "--out", &out])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tms: Vec<_> = (0..2)
        .map(|_| {
            Command::new(bin)
                .args(["taskmanager", "--jobmanager", &format!("127.0.0.1:{rpc}"), "--bind", "127.0.0.1"])
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = jm.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the cluster did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(jm.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    for tm in &mut tms {
        assert!(tm.wait().unwrap().success());
    }
    let mut got = BTreeSet::new();
    for entry in std::fs::read_dir(tmp.path().join("out/minutes")).unwrap() {
        let path = entry.unwrap().path();
        if !path.file_name().unwrap().to_string_lossy().starts_with("part-") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            got.insert((
                row["window_start"].as_i64().unwrap(),
                row["count"].as_i64().unwrap(),
                row["amount"].as_i64().unwrap(),
                row["region"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(got, expected);
}
