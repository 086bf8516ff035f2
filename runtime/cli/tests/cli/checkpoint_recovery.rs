//! Exactly-once through crashes: `weir run` with exactly-once checkpoints is
//! killed with SIGKILL at random moments and restarted with `--restore latest`
//! at a different parallelism each time (2 -> 3 -> 1 -> 4 -> 2), and in the
//! end the file sink's committed output equals the oracle exactly: nothing
//! lost, nothing twice. On a local directory and on an S3-compatible server
//! (moto_server, started here), with keyed state on the heap, on disk, and
//! moving between the two. The kill moments come from a seed printed on
//! stderr; set WEIR_TEST_SEED to replay one.
//!
//! Also: `--restore` never starts from empty state silently, a corrupt
//! checkpoint is an error naming its path, and failing checkpoint storage
//! aborts checkpoints (and past a tolerance, the job) without wrong output.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Answer, Rng, committed_output, oracle, wait_for, workspace};
use weir_s3::testing::MotoServer;

struct Scenario<'a> {
    workload: &'static str,
    /// Whether a completed checkpoint exists (its `latest` pointer), asked of the storage itself.
    has_checkpoint: Box<dyn Fn() -> bool + 'a>,
    events: u64,
    /// Events per second: slow enough that a run is killed several times before it ends.
    rate: u64,
    checkpoint_dir: String,
    out: PathBuf,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    /// Which runs (by parallelism) keep keyed state on disk, the others on the heap.
    on_disk: fn(usize) -> bool,
}

impl Scenario<'_> {
    fn command(&self, parallelism: usize, restore: bool) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.args(["run", "-q"])
            .arg(workspace().join(format!("examples/workloads/{}.yaml", self.workload)))
            .args(["--parallelism", &parallelism.to_string()])
            .args(["--set", &format!("source.count={}", self.events)])
            .args(["--set", &format!("source.rate={}", self.rate)])
            .args(self.second_source().into_iter().flat_map(|name| {
                // A second source (the join's) of the same count and rate.
                let set = |what: &str, v: u64| ["--set".to_string(), format!("sources.{name}.{what}={v}")];
                set("count", self.events).into_iter().chain(set("rate", self.rate))
            }))
            .args(["--set", &format!("sink.path={}", self.out.display())])
            .args(["--checkpoint-dir", &self.checkpoint_dir, "--checkpoint-interval", "100ms"])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::options().create(true).append(true).open(&self.log).unwrap());
        if restore {
            cmd.args(["--restore", "latest"]);
        }
        if (self.on_disk)(parallelism) {
            let dir = self.log.with_file_name("state");
            cmd.args(["--state-backend", "disk", "--state-memory", "16MiB", "--state-dir"]).arg(dir);
        }
        cmd
    }

    fn second_source(&self) -> Option<&'static str> {
        (self.workload == "orders-payments").then_some("payments")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs the scenario through a series of SIGKILLs and restores; returns the committed output and the kill count.
fn crash_and_recover(s: &Scenario, rng: &mut Rng) -> (Answer, usize) {
    let mut kills = 0;
    let mut restore = false;
    for parallelism in [2, 3, 1, 4] {
        let mut child = s.command(parallelism, restore).spawn().unwrap();
        match wait_for(&mut child, rng.millis(300, 1300)) {
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
            Some(status) => assert!(status.success(), "run at parallelism {parallelism} failed:\n{}", s.log_text()),
        }
        // Killed before its first checkpoint completed, a run leaves nothing to restore;
        // `--restore latest` would then (rightly) refuse, so only restore once there is one.
        restore = restore || (s.has_checkpoint)();
    }
    let mut child = s.command(2, restore).spawn().unwrap();
    // Only a hang fails here: a test build's join on disk takes over a minute
    // alone, and twice that beside the rest of the suite.
    let Some(status) = wait_for(&mut child, Duration::from_secs(360)) else {
        // Not left running behind the failed test.
        let _ = child.kill();
        let _ = child.wait();
        panic!("the final run did not finish in 360 s:\n{}", s.log_text());
    };
    assert!(status.success(), "the final run failed:\n{}", s.log_text());
    (committed_output(&s.out, s.workload), kills)
}

/// Where a scenario keeps its checkpoints: the URI, the environment to reach it,
/// and how to tell whether a completed checkpoint exists there.
type Location<'a> = (String, Vec<(&'static str, String)>, Box<dyn Fn() -> bool + 'a>);

fn check<'a>(workload: &'static str, dir: impl FnOnce(&Path) -> Location<'a>) {
    run_scenario(workload, dir, |_| false, 1_000_000, 300_000)
}

/// As [`check`], with keyed state on disk in the runs `on_disk` picks; a
/// smaller and slower input, as a test build's disk path is several times
/// slower than a release build's.
fn check_on_disk<'a>(workload: &'static str, dir: impl FnOnce(&Path) -> Location<'a>, on_disk: fn(usize) -> bool) {
    run_scenario(workload, dir, on_disk, 400_000, 120_000)
}

fn run_scenario<'a>(
    workload: &'static str,
    dir: impl FnOnce(&Path) -> Location<'a>,
    on_disk: fn(usize) -> bool,
    events: u64,
    rate: u64,
) {
    let tmp = tempfile::tempdir().unwrap();
    let (checkpoint_dir, env, has_checkpoint) = dir(tmp.path());
    let s = Scenario {
        workload,
        has_checkpoint,
        events,
        rate,
        checkpoint_dir,
        out: tmp.path().join("out"),
        env,
        log: tmp.path().join("weir.log"),
        on_disk,
    };
    let mut rng = Rng::from_env();
    let (got, kills) = crash_and_recover(&s, &mut rng);
    assert!(kills >= 2, "only {kills} runs were killed before finishing: the test did not exercise recovery");
    assert_eq!(got, oracle(workload, events), "committed output after {kills} crashes vs the oracle\n{}", s.log_text());
}

fn local(workload: &'static str) -> impl FnOnce(&Path) -> Location<'static> {
    move |tmp| {
        let dir = tmp.join("checkpoints");
        let latest = dir.join(workload).join("latest");
        (dir.display().to_string(), Vec::new(), Box::new(move || latest.exists()))
    }
}

#[test]
fn orders_window_survives_crashes_on_local_files() {
    check("orders-window", local("orders-window"));
}

#[test]
fn orders_dedup_survives_crashes_on_local_files() {
    check("orders-dedup", local("orders-dedup"));
}

/// Sliced sliding windows: slices, and the watermark windows fired up to, restored at other parallelisms.
#[test]
fn orders_sliding_survives_crashes_on_local_files() {
    check("orders-sliding", local("orders-sliding"));
}

/// Two sources and an interval join: both sides' buffers, the sources'
/// positions and the windows after the join, restored at other parallelisms.
#[test]
fn orders_payments_survives_crashes_on_local_files() {
    check("orders-payments", local("orders-payments"));
}

/// Keyed state on disk through the same crashes; every run's snapshot is
/// written from the disk backend and restored into it at another parallelism.
#[test]
fn orders_dedup_survives_crashes_with_state_on_disk() {
    check_on_disk("orders-dedup", local("orders-dedup"), |_| true);
}

/// The two backends write the same snapshots: runs alternate between disk
/// (parallelism 2 and 4) and heap (3 and 1), each restoring what the other wrote.
#[test]
fn orders_payments_survives_crashes_moving_between_heap_and_disk() {
    check_on_disk("orders-payments", local("orders-payments"), |p| p % 2 == 0);
}

/// Window contents on disk: the sliced windows' snapshots alternate between
/// the disk backend's sorted entries (parallelism 2 and 4) and the heap's.
#[test]
fn orders_sliding_survives_crashes_moving_between_heap_and_disk() {
    check_on_disk("orders-sliding", local("orders-sliding"), |p| p % 2 == 0);
}

#[test]
fn both_survive_crashes_on_s3() {
    let server = MotoServer::start();
    server.create_bucket("weir");
    for (workload, on_disk) in [("orders-window", false), ("orders-dedup", true)] {
        let prefix = format!("{workload}-checkpoints");
        let latest = format!("{prefix}/{workload}/latest");
        let server = &server;
        let location = |_: &Path| -> Location<'_> {
            (format!("s3://weir/{prefix}"), server.env(), Box::new(move || server.exists("weir", &latest)))
        };
        match on_disk {
            true => check_on_disk(workload, location, |_| true),
            false => check(workload, location),
        }
    }
}

fn weir(args: &[&str], cwd: &Path) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_weir")).args(args).current_dir(cwd).output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn pipeline(dir: &Path) -> PathBuf {
    let p = dir.join("p.yaml");
    std::fs::write(
        &p,
        "name: j\nsource: { type: datagen, workload: orders, count: 50000, watermark: { field: time, out_of_orderness: 5s } }\n\
         steps:\n  - key_by: region\n  - window: { type: tumbling, size: 1m }\n  - aggregate: { count: count(), sum: sum(amount) }\n\
         sink: { type: file, path: out }\n",
    )
    .unwrap();
    p
}

#[test]
fn restore_never_starts_from_empty_state_silently() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path());
    let (code, err) = weir(
        &["run", "p.yaml", "--checkpoint-dir", "ck", "--checkpoint-interval", "1s", "--restore", "latest"],
        tmp.path(),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--restore latest") && err.contains("no completed checkpoint") && err.contains("ck/j"),
        "{err}"
    );
    let (code, err) = weir(&["run", "p.yaml", "--restore", "latest"], tmp.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs a checkpoint directory"), "{err}");
    let (code, err) = weir(&["run", "p.yaml", "--restore", "file:///nowhere/chk-3"], tmp.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nowhere/chk-3/_metadata does not exist"), "{err}");
    assert!(!tmp.path().join("out").exists(), "nothing ran");
}

/// Runs `p.yaml` slowly until its latest checkpoint holds window state, then kills it.
fn crash_with_window_state(dir: &Path) -> PathBuf {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "run",
            "-q",
            "p.yaml",
            "--set",
            "source.rate=50000",
            "--checkpoint-dir",
            "ck",
            "--checkpoint-interval",
            "100ms",
        ])
        .current_dir(dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        assert!(Instant::now() < deadline, "no checkpoint with window state within 30 s");
        let found = std::fs::read_to_string(dir.join("ck/j/latest")).ok().and_then(|latest| {
            let chk: serde_json::Value = serde_json::from_str(&latest).ok()?;
            let chk_dir = dir.join("ck/j").join(chk["path"].as_str()?);
            std::fs::read_dir(chk_dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains("window"))
        });
        if let Some(state) = found {
            break state;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    state
}

#[test]
fn corrupt_and_incompatible_checkpoints_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path());
    // Without a local phase, whose partials reach the window only as their pane
    // closes: the window itself then holds keyed state between checkpoints.
    let yaml = std::fs::read_to_string(&p).unwrap().replace("name: j\n", "name: j\nlocal_aggregation: false\n");
    std::fs::write(&p, yaml).unwrap();
    let state = crash_with_window_state(tmp.path());
    let restore =
        ["run", "-q", "p.yaml", "--checkpoint-dir", "ck", "--checkpoint-interval", "1s", "--restore", "latest"];
    // Truncate the window's state file.
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
    let (code, err) = weir(&restore, tmp.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&state.display().to_string()) && err.contains("truncated"), "{err}");
    // A different max parallelism is refused.
    std::fs::write(&state, &bytes).unwrap();
    let mut rescaled = restore.to_vec();
    rescaled.extend(["--set", "max_parallelism=64"]);
    let (code, err) = weir(&rescaled, tmp.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("max parallelism 128") && err.contains("64") && err.contains("refused"), "{err}");
    // A newer format version is refused, naming the file.
    let meta = state.parent().unwrap().join("_metadata");
    let original = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(
        &meta,
        original
            .replace(&format!("\"version\": {}", weir::core::checkpoint::metadata::FORMAT_VERSION), "\"version\": 99"),
    )
    .unwrap();
    let (code, err) = weir(&restore, tmp.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("_metadata") && err.contains("version 99"), "{err}");
    // So is a `_metadata` changed after it was written: its checksum no longer matches.
    std::fs::write(&meta, original.replace("\"kind\": \"checkpoint\"", "\"kind\": \"savepoint\"")).unwrap();
    let (code, err) = weir(&restore, tmp.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&meta.display().to_string()) && err.contains("is corrupt: checksum mismatch"), "{err}");
    // Intact again, the restore works and the job finishes with the oracle's output.
    std::fs::write(&meta, original).unwrap();
    let (code, err) = weir(&restore, tmp.path());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(committed_output(&tmp.path().join("out"), "orders-window"), oracle("orders-window", 50_000));
}

#[test]
fn an_unusable_checkpoint_directory_is_an_error_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path());
    std::fs::create_dir_all(tmp.path().join("ck")).unwrap();
    std::fs::write(tmp.path().join("ck/j"), b"not a directory").unwrap();
    let (code, err) =
        weir(&["run", "-q", "p.yaml", "--checkpoint-dir", "ck", "--checkpoint-interval", "50ms"], tmp.path());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot read the checkpoint directory") && err.contains("ck/j"), "{err}");
    assert!(!tmp.path().join("out").exists(), "nothing ran");
}
