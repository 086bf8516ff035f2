//! `weir run`: a pipeline file on a local cluster in this process.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weir::core::executor::ChainMetrics;
use weir::prelude::StreamEnv;
use weir_pipeline::compile::{Overrides, compile};
use weir_pipeline::config::{load, parse_duration};

use crate::Failure;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The pipeline file (YAML).
    pipeline: PathBuf,
    /// Parallelism of every vertex (overrides the file's `parallelism`).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Override one key of the pipeline file, e.g. `--set source.count=1000`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    set: Vec<String>,
    /// Where checkpoints go (file:///path, a path, or s3://bucket/prefix).
    #[arg(long, value_name = "URI")]
    checkpoint_dir: Option<String>,
    /// How often to checkpoint (500ms, 10s, 1m, ...).
    #[arg(long, value_name = "DURATION")]
    checkpoint_interval: Option<String>,
    /// Resume from `latest` or a checkpoint/savepoint URI.
    #[arg(long, value_name = "latest|URI")]
    restore: Option<String>,
    /// Run the TaskManagers as N separate processes on loopback.
    #[arg(long, value_name = "N")]
    taskmanagers: Option<usize>,
    /// Port of the REST API and dashboard (8081 when they are served).
    #[arg(long)]
    rest_port: Option<u16>,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
}

fn unavailable(flag: &str, what: &str) -> Failure {
    Failure::BadInput(format!("{flag}: {what} is not available in this version of weir yet"))
}

pub fn run(args: RunArgs) -> Result<(), Failure> {
    if let Some(interval) = &args.checkpoint_interval {
        parse_duration(interval).map_err(|e| Failure::BadInput(format!("--checkpoint-interval: {e}")))?;
    }
    if args.checkpoint_dir.is_some() || args.checkpoint_interval.is_some() {
        return Err(unavailable("--checkpoint-dir/--checkpoint-interval", "checkpointing"));
    }
    if args.restore.is_some() {
        return Err(unavailable("--restore", "restoring from a checkpoint"));
    }
    if args.taskmanagers.is_some() {
        return Err(unavailable("--taskmanagers", "running TaskManagers as separate processes"));
    }
    if args.parallelism == Some(0) {
        return Err(Failure::BadInput("--parallelism: must be at least 1".into()));
    }
    if args.rest_port.is_some() {
        return Err(unavailable("--rest-port", "the REST API"));
    }

    let file = load(&args.pipeline, &args.set).map_err(|e| Failure::BadInput(e.to_string()))?;
    let env = StreamEnv::new(file.name.clone());
    let compiled = compile(&args.pipeline, &file, &env, &Overrides { parallelism: args.parallelism })
        .map_err(|e| Failure::BadInput(e.to_string()))?;
    let plan = env.describe();
    eprintln!(
        "weir: running {} at parallelism {}, output to {}",
        compiled.name, compiled.parallelism, compiled.sink_description
    );
    if !args.quiet {
        eprint!("{plan}");
    }

    let started = Instant::now();
    let job = env.start().map_err(|e| Failure::Runtime(e.to_string()))?;
    install_ctrl_c(job.stop_flag());

    let done = Arc::new(AtomicBool::new(false));
    let progress = (!args.quiet).then(|| {
        let (chains, done, rows) = (job.chains.clone(), done.clone(), compiled.stats.rows_out.clone());
        std::thread::spawn(move || show_progress(&chains, &done, &rows, started))
    });
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
    Ok(())
}

static STOPS: AtomicUsize = AtomicUsize::new(0);

/// First Ctrl-C: stop the sources and let the job drain. Second: leave at once.
fn install_ctrl_c(stop: Arc<AtomicBool>) {
    let _ = ctrlc::set_handler(move || {
        if STOPS.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\nweir: stopping (Ctrl-C again to abort)");
            stop.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
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
