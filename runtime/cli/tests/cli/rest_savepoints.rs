//! The REST API beside `weir run`, and savepoints through it: the job's JSON
//! follows the contract, `weir savepoint` takes a savepoint and, with
//! `--stop`, stops the job; restoring from that savepoint at another
//! parallelism finishes with exactly the oracle's output.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{committed_output, oracle, workspace};
use serde_json::Value;

const EVENTS: u64 = 400_000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn weir_run(dir: &Path, port: u16, parallelism: usize, restore: Option<&str>, rate: u64) -> Child {
    weir_run_with(dir, port, parallelism, restore, rate, &[])
}

fn weir_run_with(dir: &Path, port: u16, parallelism: usize, restore: Option<&str>, rate: u64, extra: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(["run", "-q"])
        .arg(workspace().join("examples/workloads/orders-window.yaml"))
        .args(["--parallelism", &parallelism.to_string(), "--rest-port", &port.to_string()])
        .args(["--set", &format!("source.count={EVENTS}"), "--set", &format!("source.rate={rate}")])
        .args(["--set", &format!("sink.path={}", dir.join("out").display())])
        .args(["--checkpoint-dir", &dir.join("ck").display().to_string(), "--checkpoint-interval", "200ms"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(r) = restore {
        cmd.args(["--restore", r]);
    }
    cmd.spawn().unwrap()
}

fn get(url: &str) -> Option<Value> {
    let mut r = ureq::get(url).call().ok()?;
    r.body_mut().read_json().ok()
}

fn wait_for_api(url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = get(url).filter(|v| v["checkpoints"]["latest"].is_object()) {
            return v;
        }
        assert!(Instant::now() < deadline, "{url} did not answer with a completed checkpoint within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn savepoint(port: u16, extra: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["savepoint", "orders-window", "--url", &format!("http://127.0.0.1:{port}")])
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn rest_api_savepoints_and_stop_with_savepoint_then_restore_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut job = weir_run(tmp.path(), port, 2, None, 100_000);
    let base = format!("http://127.0.0.1:{port}/v1/jobs/orders-window");

    let j = wait_for_api(&base);
    assert_eq!(
        (j["id"].as_str(), j["state"].as_str(), j["parallelism"].as_u64()),
        (Some("orders-window"), Some("running"), Some(2))
    );
    assert_eq!(j["max_parallelism"], 128);
    let vertices = j["vertices"].as_array().unwrap();
    assert!(vertices.iter().any(|v| v["name"] == "window" && v["parallelism"] == 2), "{j}");
    for v in vertices {
        for m in [
            "records_in_per_s",
            "records_out_per_s",
            "busy_ms_per_s",
            "backpressured_ms_per_s",
            "idle_ms_per_s",
            "current_watermark",
        ] {
            assert!(v["metrics"].get(m).is_some(), "vertex {} lacks {m}", v["name"]);
        }
    }
    // Rates over a window, with what an autoscaler needs: the true
    // processing rate of every busy vertex, and the source's backlog.
    let vertex = |j: &Value, name: &str| j["vertices"].as_array().unwrap().iter().find(|v| v["name"] == name).cloned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let over = loop {
        let over = get(&format!("{base}?window=10s")).unwrap();
        if over["metrics_window_ms"].as_u64().unwrap() >= 2000
            && vertex(&over, "window").unwrap()["metrics"]["true_processing_rate"].is_number()
        {
            break over;
        }
        assert!(Instant::now() < deadline, "no rates over two samples within 30 s: {over}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(vertex(&over, "window").unwrap()["metrics"]["true_processing_rate"].as_f64().unwrap() > 0.0, "{over}");
    assert!(vertex(&over, "orders").unwrap()["metrics"]["pending_records"].as_i64().unwrap() >= 0, "{over}");
    let bad = ureq::get(&format!("{base}?window=1y")).call();
    assert!(bad.is_err(), "a bad window is refused");
    let latest = &j["checkpoints"]["latest"];
    assert!(latest["path"].as_str().unwrap().contains("/ck/orders-window/chk-"), "{latest}");
    let history = get(&format!("{base}/checkpoints")).unwrap();
    assert!(history["history"].as_array().unwrap().iter().any(|c| c["status"] == "completed"));
    let metrics =
        ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(metrics.contains("weir_records_in_total{job=\"orders-window\",vertex=\"3-window\"}"), "{metrics}");
    assert!(ureq::get(&format!("http://127.0.0.1:{port}/v1/jobs/other")).call().is_err(), "unknown jobs are 404");

    // A savepoint while it runs, then stop with a savepoint (no drain).
    let (code, path, err) = savepoint(port, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(path.contains("/ck/orders-window/savepoints/sp-"), "{path}");
    let (code, stop_path, err) = savepoint(port, &["--stop"]);
    assert_eq!(code, Some(0), "{err}");
    let status = job.wait().unwrap();
    assert!(status.success(), "the stopped job exits cleanly");
    assert!(
        committed_output(&tmp.path().join("out"), "orders-window").outputs < oracle("orders-window", EVENTS).outputs
    );

    // Resume from that savepoint at parallelism 3, to the end.
    let mut resumed = weir_run(tmp.path(), free_port(), 3, Some(&stop_path), 10_000_000);
    assert!(resumed.wait().unwrap().success());
    assert_eq!(committed_output(&tmp.path().join("out"), "orders-window"), oracle("orders-window", EVENTS));
}

#[test]
fn savepoints_go_to_their_own_directory_and_one_that_cannot_be_written_fails_while_the_job_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let sp_dir = tmp.path().join("sp");
    // A file where the job's savepoint directory would be: nothing can be written under it.
    std::fs::create_dir_all(sp_dir.join("orders-window")).unwrap();
    let blocker = sp_dir.join("orders-window/savepoints");
    std::fs::write(&blocker, b"in the way").unwrap();
    let mut job = weir_run_with(tmp.path(), port, 2, None, 20_000, &["--savepoint-dir", &sp_dir.display().to_string()]);
    let base = format!("http://127.0.0.1:{port}/v1/jobs/orders-window");
    wait_for_api(&base);

    let (code, _, err) = savepoint(port, &[]);
    assert_ne!(code, Some(0), "a savepoint that cannot be written fails");
    assert!(err.contains("savepoint") && err.contains("sp/orders-window/savepoints"), "the error names where: {err}");
    let before = get(&base).unwrap()["checkpoints"]["latest"]["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&base).unwrap()["checkpoints"]["latest"]["id"].as_u64().unwrap() <= before {
        assert!(Instant::now() < deadline, "no checkpoint completed after the failed savepoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&base).unwrap()["state"], "running", "the job goes on");

    std::fs::remove_file(&blocker).unwrap();
    let (code, path, err) = savepoint(port, &["--stop"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(path.contains("/sp/orders-window/savepoints/sp-"), "{path}");
    assert!(Path::new(path.trim_start_matches("file://")).join("_metadata").exists(), "{path}");
    assert!(job.wait().unwrap().success());
    let checkpoints = tmp.path().join("ck/orders-window/savepoints");
    assert!(!checkpoints.exists(), "nothing under the checkpoint directory's savepoints/");
}

/// A job whose savepoints complete at once, served by the REST server `weir
/// jobmanager` runs; it counts the savepoints it was asked for.
#[derive(Default)]
struct InstantSavepoints(std::sync::atomic::AtomicUsize);

impl weir_rest::RestJob for InstantSavepoints {
    fn name(&self) -> &str {
        "orders-window"
    }
    fn status(&self) -> Option<weir_rest::JobReport> {
        Some(weir_rest::JobReport {
            state: weir_api::rest::JobState::Running,
            parallelism: 1,
            max_parallelism: 128,
            start_time: 0,
            chains: vec![],
            checkpoints: vec![],
            taskmanagers: vec![],
            restarts: 0,
            failure: None,
            restored_from: None,
            deployment: None,
            gauges: vec![],
        })
    }
    fn savepoint(&self, _stop: bool, _drain: bool) -> Result<weir_rest::Pending, String> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Ok(Box::new(move || Ok(format!("file:///ck/orders-window/savepoints/sp-{n}"))))
    }
    fn rescale(&self, _: weir_api::rest::RescaleRequest) -> Result<weir_rest::Pending, String> {
        Err("not here".into())
    }
}

#[test]
fn weir_savepoint_sends_the_job_secret_from_its_file_as_the_bearer_token() {
    let tmp = tempfile::tempdir().unwrap();
    let secret_file = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (right, wrong) =
        (secret_file("right", "0123456789abcdef-the-job\n"), secret_file("wrong", "0123456789abcdef-guessed"));
    let secret = weir_cluster::auth::Secret::from_file(Path::new(&right)).unwrap();
    let job = std::sync::Arc::new(InstantSavepoints::default());
    let server = weir_rest::RestServer::start("127.0.0.1:0".parse().unwrap(), job.clone(), Some(secret)).unwrap();
    let port = server.addr.port();

    let (code, _, err) = savepoint(port, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("401") && err.contains("needs `Authorization: Bearer <token>`"), "{err}");
    let (code, _, err) = savepoint(port, &["--auth-secret-file", &wrong]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("401") && err.contains("not the job's secret") && !err.contains("guessed"), "{err}");
    let missing = tmp.path().join("absent").display().to_string();
    let (code, _, err) = savepoint(port, &["--auth-secret-file", &missing]);
    assert_eq!(code, Some(2), "an unreadable secret file is bad input: {err}");
    assert!(err.contains("--auth-secret-file") && err.contains("absent"), "{err}");
    assert_eq!(job.0.load(std::sync::atomic::Ordering::SeqCst), 0, "no savepoint was taken");

    let (code, path, err) = savepoint(port, &["--auth-secret-file", &right, "--stop"]);
    assert_eq!((code, path.as_str()), (Some(0), "file:///ck/orders-window/savepoints/sp-1"), "{err}");
}

/// A pipeline's `metric` step: the rows' gauges reach the JobManager's
/// `/metrics` from the TaskManager's subtasks, labelled with the job and the
/// row's fields, one series per region.
#[test]
fn a_metric_step_is_a_gauge_on_the_jobmanagers_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = tmp.path().join("metric.yaml");
    std::fs::write(
        &pipeline,
        "name: metric-job\n\
         source: { type: datagen, workload: orders, count: 2000000, rate: 20000, watermark: { field: time, out_of_orderness: 5s } }\n\
         steps:\n  - key_by: region\n  - window: { type: tumbling, size: 1s }\n  - aggregate: { n: count() }\n  \
         - metric: { name: orders_per_second, value: n, labels: [region] }\n\
         sink: { type: blackhole }\n",
    )
    .unwrap();
    let port = free_port();
    let mut job = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-q", "--parallelism", "2", "--rest-port", &port.to_string()])
        .arg(&pipeline)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let series =
        |text: &str| text.lines().filter(|l| l.starts_with("orders_per_second{job=\"metric-job\",region=\"")).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        if series(&text) == 4 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = job.kill();
    let _ = job.wait();
    assert_eq!(series(&metrics), 4, "a gauge per region within 60 s:\n{metrics}");
    assert!(metrics.contains("# TYPE orders_per_second gauge"), "{metrics}");
    for line in metrics.lines().filter(|l| l.starts_with("orders_per_second{")) {
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        // A second of orders (one per millisecond of event time) split over four regions.
        assert!(value > 0.0 && value <= 1000.0, "{line}");
    }
}
