//! The distributed runtime, multi-process on loopback: `weir run
//! --taskmanagers 2` with a TaskManager killed by SIGKILL at a random moment,
//! and a leading `weir jobmanager` killed with a standby running, and two
//! JobManagers on one checkpoint directory (a split brain: the older one is
//! fenced). All end with exactly the oracle's committed output; at-least-once
//! checkpoints (barriers tracked, not aligned) across a TaskManager kill lose
//! nothing, their duplicates counted. While the job runs, the REST
//! API, `/metrics` and the dashboard answer. The kill moments come from a
//! seed printed on stderr; WEIR_TEST_SEED replays one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Rng, committed_output, oracle, wait_for, workspace};

const EVENTS: u64 = 150_000;

/// A free port on loopback (bound and released; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The processes whose parent is `pid` and whose command line contains `needle`.
pub fn children(pid: u32, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // The parent pid is the second field after the command name in parentheses.
        let ppid =
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
        let cmdline = std::fs::read_to_string(format!("/proc/{child}/cmdline")).unwrap_or_default();
        if ppid == Some(pid) && cmdline.contains(needle) {
            found.push(child);
        }
    }
    found
}

pub fn sigkill(pid: u32) {
    // SAFETY: kill(2) with a pid this test started; no memory is involved.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

pub fn get(url: &str) -> Result<(u16, String), String> {
    let agent = ureq::Agent::new_with_config(ureq::Agent::config_builder().http_status_as_error(false).build());
    let mut r = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.body_mut().read_to_string().map_err(|e| e.to_string())?))
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn pipeline(name: &str) -> PathBuf {
    workspace().join(format!("examples/workloads/{name}.yaml"))
}

/// Checks the REST API of a running cluster job: the contract's fields, the
/// TaskManagers, Prometheus metrics and the dashboard page.
fn check_rest(port: u16, job: &str) {
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let doc = loop {
        if let Ok((200, body)) = get(&format!("{base}/v1/jobs/{job}")) {
            let doc: Value = serde_json::from_str(&body).unwrap();
            if doc["state"] == "running" && doc["taskmanagers"].as_array().is_some_and(|t| t.len() == 2) {
                break doc;
            }
        }
        assert!(Instant::now() < deadline, "the job never showed as running with 2 TaskManagers");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(doc["id"], job);
    assert_eq!(doc["parallelism"], 4);
    let vertices = doc["vertices"].as_array().unwrap();
    assert!(vertices.len() >= 3, "{doc}");
    for v in vertices {
        for key in ["records_in_per_s", "records_out_per_s", "busy_ms_per_s", "backpressured_ms_per_s", "idle_ms_per_s"]
        {
            assert!(v["metrics"][key].is_number(), "{key} of {v}");
        }
        assert!(v["metrics"].get("pending_records").is_some() && v["metrics"]["current_watermark"].is_number());
    }
    assert!(doc["edges"].as_array().unwrap().iter().any(|e| e["ship_strategy"] == "hash"), "{doc}");
    let (status, metrics) = get(&format!("{base}/metrics")).unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE weir_busy_ms_per_second gauge") && metrics.contains(&format!("job=\"{job}\"")));
    let (status, page) = get(&format!("{base}/")).unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<title>Weir dashboard</title>"));
    assert_eq!(get(&format!("{base}/healthz")).unwrap().0, 200);
    let (status, body) = get(&format!("{base}/v1/jobs/nope")).unwrap();
    assert!(status == 404 && body.contains("no job `nope`"), "{status} {body}");
}

#[test]
fn a_taskmanager_killed_mid_run_leaves_exactly_the_oracles_output() {
    let mut rng = Rng::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let (out, log) = (tmp.path().join("out"), tmp.path().join("run.log"));
    let port = free_port();
    let mut run = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-q"])
        .arg(pipeline("orders-window"))
        .args(["--taskmanagers", "2", "--parallelism", "4", "--rest-port", &port.to_string()])
        .args(["--set", &format!("source.count={EVENTS}"), "--set", "source.rate=20000"])
        .args(["--set", &format!("sink.path={}", out.display())])
        .args(["--checkpoint-dir", &tmp.path().join("cp").display().to_string(), "--checkpoint-interval", "200ms"])
        .args(["--restart-strategy", "fixed-delay:200ms:5"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    check_rest(port, "orders-window");
    std::thread::sleep(rng.millis(200, 3000));
    let tms = children(run.id(), "taskmanager");
    assert_eq!(tms.len(), 2, "two TaskManager processes: {tms:?}\n{}", log_of(&log));
    sigkill(tms[(rng.millis(0, 2).as_millis() % 2) as usize]);
    let status = wait_for(&mut run, Duration::from_secs(180)).expect("the job finishes");
    let log = log_of(&log);
    assert!(status.success(), "the run failed:\n{log}");
    assert!(
        log.contains("exited") && log.contains("starting a new one"),
        "the killed TaskManager was replaced:\n{log}"
    );
    assert!(log.contains(" restarts") && !log.contains(" 0 restarts"), "the job restarted:\n{log}");
    assert_eq!(committed_output(&out, "orders-window"), oracle("orders-window", EVENTS), "{log}");
}

struct Stop(Vec<Child>);

impl Drop for Stop {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_standby_jobmanager_takes_over_when_the_leader_dies() {
    let mut rng = Rng::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let lock = tmp.path().join("leader.lock");
    let (rpc, rest) = ([free_port(), free_port()], [free_port(), free_port()]);
    let log = |name: &str| std::fs::File::create(tmp.path().join(name)).unwrap();
    // As the operator deploys them: a fresh start (`--restore none`) named as one
    // deployment, so the standby recovers the leader's checkpoints, not the start.
    let command = |i: usize, deployment: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
        c.arg("jobmanager")
            .args(["--pipeline", &pipeline("orders-window").display().to_string(), "--parallelism", "4"])
            .args(["--set", &format!("source.count={EVENTS}"), "--set", "source.rate=20000"])
            .args(["--set", &format!("sink.path={}", out.display())])
            .args(["--checkpoint-dir", &tmp.path().join("cp").display().to_string(), "--checkpoint-interval", "200ms"])
            .args(["--bind", "127.0.0.1", "--rpc-port", &rpc[i].to_string(), "--rest-port", &rest[i].to_string()])
            .args(["--restore", "none", "--deployment-id", deployment])
            .stdout(Stdio::null());
        c
    };
    let jobmanager = |i: usize| {
        command(i, "rollout-1")
            .args(["--leader-lock", &lock.display().to_string()])
            .stderr(log(&format!("jm{i}.log")))
            .spawn()
            .unwrap()
    };
    let mut leader = jobmanager(0);
    // The first one leads before the standby starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&lock).unwrap_or_default().contains(&leader.id().to_string()) {
        assert!(Instant::now() < deadline, "the first JobManager never led");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut standby = jobmanager(1);
    let addresses = format!("127.0.0.1:{},127.0.0.1:{}", rpc[0], rpc[1]);
    let taskmanagers: Vec<Child> = (0..2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_weir"))
                .args(["taskmanager", "--jobmanager", &addresses, "--slots", "2", "--bind", "127.0.0.1"])
                .args(["--id", &format!("tm-{i}")])
                .stdout(Stdio::null())
                .stderr(log(&format!("tm{i}.log")))
                .spawn()
                .unwrap()
        })
        .collect();
    let mut guard = Stop(taskmanagers);
    std::thread::sleep(rng.millis(1000, 3500));
    leader.kill().unwrap(); // SIGKILL
    leader.wait().unwrap();
    let logs = || {
        ["jm0.log", "jm1.log", "tm0.log", "tm1.log"]
            .iter()
            .map(|f| format!("--- {f}\n{}", log_of(&tmp.path().join(f))))
            .collect::<String>()
    };
    let status = wait_for(&mut standby, Duration::from_secs(180)).expect("the standby finishes the job");
    assert!(status.success(), "the standby failed:\n{}", logs());
    for tm in &mut guard.0 {
        let status = wait_for(tm, Duration::from_secs(20)).expect("TaskManagers shut down with the job");
        assert!(status.success(), "{}", logs());
    }
    assert!(log_of(&tmp.path().join("jm1.log")).contains("leading"), "{}", logs());
    assert_eq!(committed_output(&out, "orders-window"), oracle("orders-window", EVENTS), "{}", logs());

    // A JobManager of this deployment restarted later recovers; one of the next
    // deployment starts as it is told (fresh), whatever the directory holds.
    for (deployment, restored) in [("rollout-1", true), ("rollout-2", false)] {
        // Stopped at the end of each round (the next one takes its ports).
        let _jm = Stop(vec![command(0, deployment).stderr(log("jm-again.log")).spawn().unwrap()]);
        let url = format!("http://127.0.0.1:{}/v1/jobs/orders-window", rest[0]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let doc = loop {
            if let Ok((200, body)) = get(&url) {
                break serde_json::from_str::<Value>(&body).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{deployment}: no REST answer\n{}",
                log_of(&tmp.path().join("jm-again.log"))
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let from = doc["restored_from"].as_str().unwrap_or_default().to_string();
        assert_eq!(from.contains("/chk-"), restored, "{deployment}: restored from {from:?}: {doc}");
    }
}

#[test]
fn of_two_jobmanagers_on_one_checkpoint_directory_the_older_is_fenced_and_the_output_stays_exact() {
    const EVENTS: u64 = 300_000;
    let mut rng = Rng::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let (out, cp) = (tmp.path().join("out"), tmp.path().join("cp"));
    let (rpc, rest) = ([free_port(), free_port()], [free_port(), free_port()]);
    let log = |name: &str| std::fs::File::create(tmp.path().join(name)).unwrap();
    // Neither knows of the other (no leader lock): a split brain, as after a
    // network partition, with a TaskManager each.
    let start = |i: usize| {
        let jm = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("jobmanager")
            .args(["--pipeline", &pipeline("orders-window").display().to_string(), "--parallelism", "2"])
            .args(["--set", &format!("source.count={EVENTS}"), "--set", "source.rate=20000"])
            .args(["--set", &format!("sink.path={}", out.display())])
            .args(["--checkpoint-dir", &cp.display().to_string(), "--checkpoint-interval", "200ms"])
            .args(["--bind", "127.0.0.1", "--rpc-port", &rpc[i].to_string(), "--rest-port", &rest[i].to_string()])
            .stdout(Stdio::null())
            .stderr(log(&format!("jm{i}.log")))
            .spawn()
            .unwrap();
        let tm = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["taskmanager", "--jobmanager", &format!("127.0.0.1:{}", rpc[i]), "--slots", "2"])
            .args(["--bind", "127.0.0.1", "--id", &format!("tm-{i}")])
            .stdout(Stdio::null())
            .stderr(log(&format!("tm{i}.log")))
            .spawn()
            .unwrap();
        (jm, tm)
    };
    let logs = || {
        ["jm0.log", "jm1.log", "tm0.log", "tm1.log"]
            .iter()
            .map(|f| format!("--- {f}\n{}", log_of(&tmp.path().join(f))))
            .collect::<String>()
    };
    let (mut old, old_tm) = start(0);
    let _old_tm = Stop(vec![old_tm]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cp.join("orders-window/latest").exists() {
        assert!(Instant::now() < deadline, "the first JobManager completed no checkpoint:\n{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(rng.millis(0, 2000));
    let (mut new, new_tm) = start(1);
    let _new_tm = Stop(vec![new_tm]);
    let status = wait_for(&mut old, Duration::from_secs(60)).expect("the older JobManager stops");
    assert!(!status.success(), "the older JobManager must fail:\n{}", logs());
    assert!(log_of(&tmp.path().join("jm0.log")).contains("fenced"), "{}", logs());
    let status = wait_for(&mut new, Duration::from_secs(180)).expect("the newer JobManager finishes the job");
    assert!(status.success(), "{}", logs());
    assert_eq!(committed_output(&out, "orders-window"), oracle("orders-window", EVENTS), "{}", logs());
}

/// The rows of a file sink's committed output, each with how often it is there.
fn committed_rows(dir: &Path) -> std::collections::HashMap<String, usize> {
    let mut rows = std::collections::HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("part-") && entry.path().is_file() {
            for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
                *rows.entry(line.to_string()).or_default() += 1;
            }
        }
    }
    rows
}

#[test]
fn at_least_once_checkpoints_lose_nothing_across_a_taskmanager_kill_and_count_their_duplicates() {
    const EVENTS: u64 = 200_000;
    let mut rng = Rng::from_env();
    let tmp = tempfile::tempdir().unwrap();
    // The select at 3 behind sources at 2: each of its subtasks reads two
    // channels, whose barriers at-least-once tracks without holding either back.
    let pipeline = |mode: &str, out: &Path| {
        let path = tmp.path().join(format!("{mode}.yaml"));
        std::fs::write(
            &path,
            format!(
                "name: alo\nparallelism: 2\nsource: {{ type: datagen, workload: bids, count: {EVENTS} }}\n\
                 steps:\n  - select: {{ auction: auction, price: price }}\n    parallelism: 3\n\
                 sink: {{ type: file, path: {} }}\n\
                 checkpointing: {{ mode: {mode}, interval: 200ms, dir: {} }}\n",
                out.display(),
                tmp.path().join(format!("cp-{mode}")).display()
            ),
        )
        .unwrap();
        path
    };
    // The reference: exactly-once, nothing killed, the oracle's answer.
    let exact = tmp.path().join("exact");
    let status = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-q"])
        .arg(pipeline("exactly-once", &exact))
        .args(["--rest-port", "0"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(committed_output(&exact, "q0"), oracle("q0", EVENTS));
    let reference = committed_rows(&exact);

    let (out, log) = (tmp.path().join("out"), tmp.path().join("run.log"));
    let mut run = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-q"])
        .arg(pipeline("at-least-once", &out))
        .args(["--taskmanagers", "2", "--rest-port", "0", "--set", "source.rate=25000"])
        .args(["--restart-strategy", "fixed-delay:200ms:5"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(rng.millis(1500, 5000));
    let tms = children(run.id(), "taskmanager");
    assert_eq!(tms.len(), 2, "two TaskManager processes: {tms:?}\n{}", log_of(&log));
    sigkill(tms[(rng.millis(0, 2).as_millis() % 2) as usize]);
    let status = wait_for(&mut run, Duration::from_secs(180)).expect("the job finishes");
    let log = log_of(&log);
    assert!(status.success(), "the run failed:\n{log}");
    assert!(!log.contains(" 0 restarts"), "the job restarted:\n{log}");
    let rows = committed_rows(&out);
    let lost: Vec<&String> =
        reference.iter().filter(|(r, n)| rows.get(*r).copied().unwrap_or(0) < **n).map(|(r, _)| r).collect();
    assert!(lost.is_empty(), "{} rows lost, such as {:?}\n{log}", lost.len(), lost.first());
    assert!(rows.keys().all(|r| reference.contains_key(r)), "a row that no event gives");
    let (total, expected): (usize, usize) = (rows.values().sum(), reference.values().sum());
    eprintln!("at-least-once across a TaskManager kill: {} rows, {} duplicates", total, total - expected);
}
