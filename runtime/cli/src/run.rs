//! `weir run`'s flags, the checkpointing they configure, and the progress
//! line shown while the job runs (the run itself: `local`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir::core::checkpoint::coordinator::{CheckpointConfig, CheckpointMode};
use weir_api::launch::FailoverOptions;
use weir_api::{Restore, parse_duration};
use weir_cluster::jobmanager::JobManager;
use weir_pipeline::config::{self, PipelineFile};

use crate::{Failure, storage};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The pipeline file (YAML).
    pub(crate) pipeline: PathBuf,
    /// Parallelism of every vertex (overrides the file's `parallelism`).
    #[arg(long)]
    pub(crate) parallelism: Option<usize>,
    /// A vertex's own parallelism by its uid (repeat for more), over the step's `parallelism`.
    #[arg(long, value_name = "UID=N")]
    pub(crate) vertex_parallelism: Vec<weir_api::launch::VertexParallelism>,
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
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) failover: FailoverOptions,
    /// The job's secret (a file): the TaskManagers prove it to the JobManager
    /// and each other, and REST requests that change the job must carry it.
    #[arg(long, value_name = "PATH")]
    pub(crate) auth_secret_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) state: StateArgs,
}

/// Where keyed state lives, for `weir run` and `weir bench` (a pipeline
/// file's `state` section, which these override).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StateArgs {
    /// Keep keyed state on the heap (the default) or on local disk, in an LSM
    /// tree under --state-dir within --state-memory.
    #[arg(long, value_name = "heap|disk", value_parser = ["heap", "disk"])]
    pub state_backend: Option<String>,
    /// The disk backend's folder (a folder of its own is made in it; the system's temporary folder by default).
    #[arg(long, value_name = "PATH", requires = "state_backend")]
    pub state_dir: Option<String>,
    /// The disk backend's memory budget (256MiB by default).
    #[arg(long, value_name = "SIZE", requires = "state_backend")]
    pub state_memory: Option<String>,
    /// Whether checkpoints store only the keyed state changed since the one
    /// before (by default: with the disk backend, yes; on the heap, no).
    #[arg(long, value_name = "true|false")]
    pub state_incremental: Option<bool>,
}

impl StateArgs {
    /// The flags as `--set` overrides of the pipeline file's `state` section.
    pub fn overrides(&self) -> Vec<String> {
        let settings = [("backend", &self.state_backend), ("dir", &self.state_dir), ("memory", &self.state_memory)];
        let incremental = self.state_incremental.map(|on| format!("state.incremental={on}"));
        let settings = settings.iter().filter_map(|(key, value)| value.as_ref().map(|v| format!("state.{key}={v}")));
        settings.chain(incremental).collect()
    }

    /// `--state-incremental`, for jobs built through the Rust API.
    pub fn incremental(&self) -> Option<bool> {
        self.state_incremental
    }

    /// The backend the flags choose, for jobs built through the Rust API.
    pub fn backend(&self) -> Result<weir::core::state::StateBackend, Failure> {
        use weir::core::state::{StateBackend, backend::DEFAULT_MEMORY};
        if self.state_backend.as_deref() != Some("disk") {
            if self.state_dir.is_some() || self.state_memory.is_some() {
                return Err(bad("--state-dir and --state-memory are for --state-backend disk"));
            }
            return Ok(StateBackend::Heap);
        }
        let memory = match &self.state_memory {
            Some(m) => weir_api::parse_size(m).map_err(|e| bad(format!("--state-memory: {e}")))?,
            None => DEFAULT_MEMORY,
        };
        let dir = self.state_dir.as_ref().map_or_else(weir::core::state::backend::default_dir, PathBuf::from);
        StateBackend::disk(&dir, memory).map_err(|e| bad(format!("--state-backend disk: {e}")))
    }
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

pub fn run(args: RunArgs) -> Result<(), Failure> {
    if args.parallelism == Some(0) {
        return Err(bad("--parallelism: must be at least 1"));
    }
    crate::local::run(&args)
}

/// The progress line: events read (from the TaskManagers' heartbeats) and
/// rows written, every half second on a terminal, every 5 s in a log.
pub(crate) struct Progress {
    done: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Progress {
    pub fn start(jm: Arc<JobManager>, rows: Arc<AtomicU64>, started: Instant) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::spawn(move || show_progress(&jm, &flag, &rows, started));
        Progress { done, thread }
    }

    pub fn stop(self) {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn show_progress(jm: &JobManager, done: &AtomicBool, rows: &AtomicU64, started: Instant) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty { Duration::from_millis(500) } else { Duration::from_secs(5) };
    let mut last = (Instant::now(), 0u64);
    let mut shown = false;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.0.elapsed() < every || started.elapsed() < Duration::from_secs(2) {
            continue;
        }
        let view = jm.view();
        let sources = view.layout.iter().zip(&view.metrics).filter(|(c, _)| c.is_source);
        let events: u64 = sources.flat_map(|(_, m)| m.iter().map(|s| s.records_in)).sum();
        let rate = events.saturating_sub(last.1) as f64 / last.0.elapsed().as_secs_f64();
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
