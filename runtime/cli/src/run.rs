//! `weir run`: a pipeline file on a local cluster in this process.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::sync::Mutex;

use weir::core::JobError;
use weir::core::checkpoint::coordinator::{CheckpointConfig, CheckpointMode, CheckpointStatus};
use weir::core::checkpoint::metadata::{RestoreError, RestoredSnapshot, SnapshotKind};
use weir::core::executor::{ChainMetrics, ExecuteOptions, JobHandle};
use weir::prelude::StreamEnv;
use weir_api::launch::FailoverOptions;
use weir_api::{Restore, parse_duration};
use weir_pipeline::compile::{Overrides, compile};
use weir_pipeline::config::{self, PipelineFile, load};

use weir_rest::{JobInfo, LocalJob, RestServer};

use crate::{Failure, storage};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The pipeline file (YAML).
    pub(crate) pipeline: PathBuf,
    /// Parallelism of every vertex (overrides the file's `parallelism`).
    #[arg(long)]
    pub(crate) parallelism: Option<usize>,
    /// Override one key of the pipeline file, e.g. `--set source.count=1000`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub(crate) set: Vec<String>,
    /// Where checkpoints go (file:///path, a path, or s3://bucket/prefix).
    #[arg(long, value_name = "URI")]
    pub(crate) checkpoint_dir: Option<String>,
    /// How often to checkpoint (500ms, 10s, 1m, ...).
    #[arg(long, value_name = "DURATION")]
    pub(crate) checkpoint_interval: Option<String>,
    /// Where savepoints go (default: the checkpoint directory's `{job}/savepoints/`).
    #[arg(long, value_name = "URI", requires = "checkpoint_dir")]
    pub(crate) savepoint_dir: Option<String>,
    /// Resume from `latest` or a checkpoint/savepoint URI (`none`: start fresh, the default).
    #[arg(long, value_name = "latest|URI")]
    pub(crate) restore: Option<Restore>,
    /// Run the TaskManagers as N separate processes on loopback.
    #[arg(long, value_name = "N")]
    pub(crate) taskmanagers: Option<usize>,
    /// Port of the REST API on 127.0.0.1 (default 8081; 0 picks a free port).
    #[arg(long)]
    pub(crate) rest_port: Option<u16>,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    failover: FailoverOptions,
}

fn bad(message: impl std::fmt::Display) -> Failure {
    Failure::BadInput(message.to_string())
}

/// Checkpointing as the file and the flags (`--checkpoint-dir`, `--checkpoint-interval`,
/// `--savepoint-dir`) configure it (flags win).
pub(crate) fn checkpointing(
    dir_flag: Option<&str>,
    interval_flag: Option<&str>,
    savepoint_flag: Option<&str>,
    file: &PipelineFile,
) -> Result<Option<(String, CheckpointConfig)>, Failure> {
    let section = file.checkpointing.as_ref();
    let dir = dir_flag.map(str::to_string).or_else(|| section.and_then(|c| c.dir.clone()));
    let interval = match interval_flag {
        Some(i) => Some(parse_duration(i).map_err(|e| bad(format!("--checkpoint-interval: {e}")))?),
        None => section.map(|c| c.interval.0),
    };
    let (dir, interval) = match (dir, interval) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(bad("--checkpoint-dir: also give --checkpoint-interval (or checkpointing.interval)"));
        }
        (None, Some(_)) => return Err(bad("--checkpoint-interval: also give --checkpoint-dir (or checkpointing.dir)")),
        (Some(d), Some(i)) => (d, i),
    };
    if interval.is_zero() {
        return Err(bad("--checkpoint-interval: must be longer than zero"));
    }
    let storage = storage::open(&dir, file.storage.as_ref()).map_err(|e| bad(format!("checkpoint directory: {e}")))?;
    let mut config = CheckpointConfig::new(storage, interval);
    if let Some(sp) = savepoint_flag.map(str::to_string).or_else(|| section.and_then(|c| c.savepoint_dir.clone())) {
        let storage =
            storage::open(&sp, file.storage.as_ref()).map_err(|e| bad(format!("savepoint directory: {e}")))?;
        config.savepoints = Some(storage);
    }
    if let Some(c) = section {
        config.mode = match c.mode {
            config::CheckpointMode::ExactlyOnce => CheckpointMode::ExactlyOnce,
            config::CheckpointMode::AtLeastOnce => CheckpointMode::AtLeastOnce,
        };
        if let Some(t) = c.timeout {
            config.timeout = t.0;
        }
        if let Some(p) = c.min_pause {
            config.min_pause = p.0;
        }
        if let Some(r) = c.retained {
            config.retained = r as usize;
        }
    }
    Ok(Some((dir, config)))
}

/// The snapshot `--restore` names; never a silent fresh start.
fn restore(
    args: &RunArgs,
    file: &PipelineFile,
    job: &str,
    checkpoints: Option<&(String, CheckpointConfig)>,
) -> Result<Option<RestoredSnapshot>, Failure> {
    let Some(what) = &args.restore else { return Ok(None) };
    let latest = |config: &CheckpointConfig| RestoredSnapshot::latest(config.storage.clone(), job);
    let snapshot = match (what, checkpoints) {
        (Restore::Fresh, _) | (Restore::LatestOrFresh, None) => return Ok(None),
        (Restore::Latest, None) => return Err(bad("--restore latest: needs a checkpoint directory to look in")),
        (Restore::Latest, Some((_, config))) => latest(config),
        (Restore::LatestOrFresh, Some((_, config))) => match latest(config) {
            Err(RestoreError::NoCheckpoint { .. }) => return Ok(None),
            other => other,
        },
        (Restore::Snapshot(uri), _) => {
            let storage = storage::open(uri, file.storage.as_ref()).map_err(|e| bad(format!("--restore: {e}")))?;
            RestoredSnapshot::open(storage, "")
        }
    };
    snapshot.map(Some).map_err(|e| bad(format!("--restore {what}: {e}")))
}

pub fn run(args: RunArgs) -> Result<(), Failure> {
    if args.parallelism == Some(0) {
        return Err(bad("--parallelism: must be at least 1"));
    }
    if let Some(n) = args.taskmanagers {
        return crate::cluster::run_local_cluster(&args, n, &args.failover);
    }

    let file = load(&args.pipeline, &args.set).map_err(bad)?;
    let checkpoints = checkpointing(
        args.checkpoint_dir.as_deref(),
        args.checkpoint_interval.as_deref(),
        args.savepoint_dir.as_deref(),
        &file,
    )?;
    let env = StreamEnv::new(file.name.clone());
    let compiled = compile(
        &args.pipeline,
        &file,
        &env,
        &Overrides { parallelism: args.parallelism, checkpointing: Some(checkpoints.is_some()) },
    )
    .map_err(bad)?;
    let env_max_parallelism = env.max_parallelism();
    let restored = restore(&args, &file, &compiled.name, checkpoints.as_ref())?;
    let plan = env.describe();
    eprintln!(
        "weir: running {} at parallelism {}, output to {}",
        compiled.name, compiled.parallelism, compiled.sink_description
    );
    if let Some((dir, c)) = &checkpoints {
        eprintln!("weir: checkpoints every {:?} to {dir}/{}", c.interval, compiled.name);
    }
    if let Some(r) = &restored {
        eprintln!("weir: restoring from {}", r.uri());
    }
    if !args.quiet {
        eprint!("{plan}");
    }

    let started = Instant::now();
    let restored_from = restored.as_ref().map(|r| r.uri());
    let options =
        ExecuteOptions { checkpointing: checkpoints.map(|(_, c)| c), restore: restored, ..Default::default() };
    let job = env.start_with(options).map_err(|e| match e {
        JobError::Restore(m) => bad(format!("--restore: {m}")),
        e => Failure::Runtime(e.to_string()),
    })?;
    let job = Arc::new(job);
    let info = JobInfo {
        name: compiled.name.clone(),
        parallelism: compiled.parallelism,
        max_parallelism: env_max_parallelism,
        start_time: weir::core::time::now_ms(),
        restored_from,
    };
    let _rest = serve_rest(args.rest_port, &job, info)?;
    install_ctrl_c(job.clone());

    let done = Arc::new(AtomicBool::new(false));
    let progress = (!args.quiet).then(|| {
        let (chains, done, rows) = (job.chains.clone(), done.clone(), compiled.stats.rows_out.clone());
        std::thread::spawn(move || show_progress(&chains, &done, &rows, started))
    });
    let job = wait_for_handle(job);
    if let Some(rest) = &_rest {
        rest.linger(Duration::from_secs(3));
    }
    let checkpoints_taken = job.checkpoints();
    let result = job.wait();
    done.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }
    result.map_err(|e| Failure::Runtime(format!("job {} failed: {e}", compiled.name)))?;

    let rows = compiled.stats.rows_out.load(Ordering::Relaxed);
    let malformed = compiled.stats.malformed.load(Ordering::Relaxed);
    let stopped = STOPS.load(Ordering::Relaxed) > 0;
    eprintln!(
        "weir: {} {} in {:.1} s: {} rows to {}{}",
        compiled.name,
        if stopped { "stopped" } else { "finished" },
        started.elapsed().as_secs_f64(),
        rows,
        compiled.sink_description,
        if malformed > 0 { format!("; {malformed} malformed records skipped") } else { String::new() }
    );
    if let Some(last) = checkpoints_taken.iter().rev().find(|c| c.status == CheckpointStatus::Completed) {
        let kind = if last.kind == SnapshotKind::Savepoint { "savepoint" } else { "checkpoint" };
        eprintln!("weir: last {kind}: {} (resume with --restore latest or --restore {})", last.path, last.path);
    }
    Ok(())
}

/// Serves the REST API while the job runs. The default port may be taken (another
/// job on this machine): then the job runs without it; an explicit port must work.
fn serve_rest(port: Option<u16>, job: &Arc<JobHandle>, info: JobInfo) -> Result<Option<RestServer>, Failure> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(8081)));
    match RestServer::start(addr, Arc::new(LocalJob { job: Arc::downgrade(job), info })) {
        Ok(server) => {
            eprintln!("weir: REST API on http://{}/v1/jobs/{}", server.addr, job.name());
            Ok(Some(server))
        }
        Err(e) if port.is_none() => {
            eprintln!("weir: REST API not served: {addr}: {e} (choose a port with --rest-port)");
            Ok(None)
        }
        Err(e) => Err(bad(format!("--rest-port {}: {e}", addr.port()))),
    }
}

/// The job handle back from the Ctrl-C handler's shared ownership, once every task ended.
fn wait_for_handle(mut job: Arc<JobHandle>) -> JobHandle {
    loop {
        if job.is_finished() {
            HANDLE_SLOT.lock().expect("slot").take();
        }
        match Arc::try_unwrap(job) {
            Ok(j) => return j,
            Err(shared) => {
                job = shared;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

static STOPS: AtomicUsize = AtomicUsize::new(0);

static HANDLE_SLOT: Mutex<Option<Arc<JobHandle>>> = Mutex::new(None);

/// First Ctrl-C: with checkpointing, take a savepoint and stop; without, stop
/// the sources and let the job drain. Second Ctrl-C: leave at once.
fn install_ctrl_c(job: Arc<JobHandle>) {
    *HANDLE_SLOT.lock().expect("slot") = Some(job);
    let _ = ctrlc::set_handler(move || {
        if STOPS.fetch_add(1, Ordering::SeqCst) > 0 {
            std::process::exit(130);
        }
        let Some(job) = HANDLE_SLOT.lock().expect("slot").take() else { return };
        if !job.is_checkpointing() {
            eprintln!("\nweir: stopping (Ctrl-C again to abort)");
            job.stop();
            return;
        }
        eprintln!("\nweir: taking a savepoint, then stopping (Ctrl-C again to abort)");
        match job.savepoint(true, false).map(|rx| rx.recv()) {
            Ok(Ok(Ok(uri))) => eprintln!("weir: savepoint written to {uri}"),
            Ok(Ok(Err(e))) => {
                eprintln!("weir: {e}; stopping without a savepoint");
                job.stop();
            }
            _ => job.stop(),
        }
    });
}

fn show_progress(chains: &[ChainMetrics], done: &AtomicBool, rows: &std::sync::atomic::AtomicU64, started: Instant) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty { Duration::from_millis(500) } else { Duration::from_secs(5) };
    let mut last = (Instant::now(), 0u64);
    let mut shown = false;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.0.elapsed() < every || started.elapsed() < Duration::from_secs(2) {
            continue;
        }
        let events: u64 = chains.iter().filter(|c| c.is_source).map(|c| c.aggregate().records_in).sum();
        let rate = (events - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), events);
        let line = format!(
            "  {:>7.1} s  {} events in ({}/s)  {} rows out",
            started.elapsed().as_secs_f64(),
            human(events as f64),
            human(rate),
            rows.load(Ordering::Relaxed)
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        shown = true;
    }
    if shown && tty {
        eprintln!();
    }
}

fn human(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}
