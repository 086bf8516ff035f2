//! `weir`: run pipelines and benchmarks on a local Weir cluster.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad input (a pipeline file,
//! a flag or a value at fault, named in one sentence on stderr).

mod alloc;
mod bench;
mod bench_lookup;
mod bench_pipeline;
mod bench_state;
mod bench_window_latency;
mod cluster;
mod datagen;
mod local;
mod run;
mod savepoint;
mod storage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// mimalloc: the engine allocates and frees batches and rows at a high rate
// from many threads; glibc malloc's arena contention costs measurably more.
#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

#[derive(Parser)]
#[command(name = "weir", version, about = "Flink-style stream processing: run pipelines and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file on a local cluster until its input ends or Ctrl-C.
    Run(run::RunArgs),
    /// Run a JobManager: schedule a pipeline onto TaskManagers, coordinate its
    /// checkpoints, restart it when something dies, serve the REST API.
    Jobmanager(weir_api::launch::JobManagerOptions),
    /// Run a TaskManager: offer slots to a JobManager and run the subtasks it deploys.
    Taskmanager(weir_api::launch::TaskManagerOptions),
    /// Take a savepoint of a running job through its REST API, and optionally stop it.
    Savepoint(savepoint::SavepointArgs),
    /// Feed a Kafka topic with a workload stream (orders, payments or bids) as JSON.
    Datagen(datagen::DatagenArgs),
    /// Run one workload of bench/WORKLOADS.md and print the Flink baseline's report line.
    Bench {
        /// orders-window | orders-dedup | orders-sliding | orders-payments | q0 | q1 | q2 | q5 | q7 (q0-rebalance
        /// and q0-keyed: q0 through an exchange), or `state`: checkpoint and
        /// restore --state-mb MiB of keyed state at --checkpoint-dir
        #[arg(required_unless_present = "pipeline", conflicts_with = "pipeline")]
        workload: Option<String>,
        /// Benchmark a pipeline file instead: its datagen sources generate --events
        /// events each, its output rows go to a checksum, only the job is timed.
        #[arg(long, value_name = "FILE")]
        pipeline: Option<std::path::PathBuf>,
        /// Events per source (default 10000000; with --pipeline, the file's `count` by default).
        #[arg(long)]
        events: Option<u64>,
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
        /// Take exactly-once checkpoints to this location (file:///path, a path, or s3://bucket/prefix).
        #[arg(long, value_name = "URI")]
        checkpoint_dir: Option<String>,
        /// How often to checkpoint (500ms, 1s, ...); `state` takes only the final checkpoint without it.
        #[arg(long, value_name = "DURATION", requires = "checkpoint_dir")]
        checkpoint_interval: Option<String>,
        /// `state` only: MiB of keyed state (1 KiB per key).
        #[arg(long, value_name = "MIB")]
        state_mb: Option<u64>,
        /// `state` only: after the first checkpoint, this many rounds of changes, one per checkpoint.
        #[arg(long, value_name = "N", requires = "change_percent")]
        rounds: Option<u32>,
        /// `state` only: the share of keys each round changes.
        #[arg(long, value_name = "PERCENT", requires = "rounds")]
        change_percent: Option<f64>,
        /// `state` only: the parallelism of the job restored from the checkpoint (a rescale; --parallelism by default).
        #[arg(long, value_name = "N")]
        restore_parallelism: Option<usize>,
        /// Events per second of each source (as fast as it can without); with it, q1
        /// reports its rows' latency from creation at the source to the sink, and
        /// orders-window its rows' from the source's emission of the watermark that
        /// fired their window to the sink (latency_p50_ms=, latency_p99_ms=).
        #[arg(long, value_name = "EVENTS_PER_S")]
        rate: Option<f64>,
        /// The longest a record waits in a partly filled batch between tasks (5ms by default).
        #[arg(long, value_name = "DURATION")]
        buffer_timeout: Option<String>,
        /// Send every record across the key exchange, without combining window
        /// aggregates per key first.
        #[arg(long)]
        no_local_aggregation: bool,
        #[command(flatten)]
        state: run::StateArgs,
    },
}

/// Why a command failed: the launcher's error, with its exit codes (2 bad input, 1 runtime).
pub use weir_launch::LaunchError as Failure;

/// What `weir bench` measures.
enum BenchTarget {
    /// A workload of bench/WORKLOADS.md through the Rust API.
    Workload(String),
    /// A pipeline file.
    Pipeline(std::path::PathBuf),
}

/// `weir bench`'s flags as given, before they are checked.
struct BenchFlags {
    events: Option<u64>,
    parallelism: usize,
    checkpoints: Option<(String, String)>,
    rate: Option<f64>,
    buffer_timeout: Option<String>,
    local_aggregation: bool,
    state: run::StateArgs,
}

fn bench(target: BenchTarget, flags: BenchFlags) -> Result<(), Failure> {
    let BenchFlags { events, parallelism, checkpoints, rate, buffer_timeout, local_aggregation, state } = flags;
    if let BenchTarget::Workload(workload) = &target
        && !bench::WORKLOADS.contains(&workload.as_str())
    {
        return Err(Failure::BadInput(format!(
            "unknown workload `{workload}`; expected one of: {}",
            bench::WORKLOADS.join(", ")
        )));
    }
    if parallelism == 0 {
        return Err(Failure::BadInput("--parallelism: must be at least 1".into()));
    }
    if events == Some(0) {
        return Err(Failure::BadInput("--events: must be at least 1".into()));
    }
    let checkpointing = match checkpoints {
        None => None,
        Some((dir, interval)) => {
            let interval = weir_api::parse_duration(&interval)
                .map_err(|e| Failure::BadInput(format!("--checkpoint-interval: {e}")))?;
            let storage = storage::open(&dir, None).map_err(|e| Failure::BadInput(format!("--checkpoint-dir: {e}")))?;
            Some(weir::core::checkpoint::coordinator::CheckpointConfig::new(storage, interval))
        }
    };
    if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(Failure::BadInput("--rate: must be a positive number of events per second".into()));
    }
    let buffer_timeout = buffer_timeout
        .map(|t| weir_api::parse_duration(&t).map_err(|e| Failure::BadInput(format!("--buffer-timeout: {e}"))))
        .transpose()?;
    let options = bench::BenchOptions { parallelism, checkpointing, rate, buffer_timeout, local_aggregation, state };
    let (r, name, events) = match target {
        BenchTarget::Workload(workload) => {
            let events = events.unwrap_or(10_000_000);
            let backend = options.state.backend()?;
            let r = bench::run(&workload, events, options, backend).map_err(|e| Failure::Runtime(format!("{e:#}")))?;
            (r, workload, events)
        }
        BenchTarget::Pipeline(path) => {
            let b = bench_pipeline::run(&path, events, options)?;
            (b.result, b.name, b.events)
        }
    };
    println!("{}", r.line(&name, events, parallelism));
    eprintln!("peak_rss_kib={}", bench::peak_rss_kib());
    for c in &r.checkpoints {
        eprintln!(
            "checkpoint id={} status={:?} duration_ms={} size_bytes={} checkpointed_bytes={}{}",
            c.id,
            c.status,
            c.duration_ms,
            c.size_bytes,
            c.checkpointed_bytes,
            c.failure.as_ref().map(|f| format!(" failure={f:?}")).unwrap_or_default()
        );
    }
    Ok(())
}

/// Warnings, but not the disk state store's about files it could not clean up
/// after its folder was removed at exit (its errors reach Weir as results).
const DEFAULT_LOG: &str = "warn,lsm_tree=error,fjall=error";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| DEFAULT_LOG.into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Jobmanager(args) => cluster::jobmanager(args),
        Command::Taskmanager(args) => cluster::taskmanager(args),
        Command::Savepoint(args) => savepoint::savepoint(args),
        Command::Datagen(args) => datagen::datagen(args),
        Command::Bench {
            workload: Some(workload),
            parallelism,
            checkpoint_dir,
            checkpoint_interval,
            state_mb,
            rounds,
            change_percent,
            restore_parallelism,
            state,
            ..
        } if workload == "state" => {
            let (rounds, parallelism) = (rounds.zip(change_percent), (parallelism, restore_parallelism));
            bench_state::main(state_mb, parallelism, checkpoint_dir, checkpoint_interval, rounds, &state)
        }
        Command::Bench { state_mb: Some(_), .. }
        | Command::Bench { rounds: Some(_), .. }
        | Command::Bench { restore_parallelism: Some(_), .. } => {
            Err(Failure::BadInput("--state-mb, --rounds, --restore-parallelism: only for `weir bench state`".into()))
        }
        Command::Bench { checkpoint_dir: Some(_), checkpoint_interval: None, .. } => {
            Err(Failure::BadInput("--checkpoint-dir needs --checkpoint-interval".into()))
        }
        Command::Bench {
            workload,
            pipeline,
            events,
            parallelism,
            checkpoint_dir,
            checkpoint_interval,
            rate,
            buffer_timeout,
            no_local_aggregation,
            state,
            ..
        } => {
            let checkpoints = checkpoint_dir.zip(checkpoint_interval);
            // clap requires exactly one of the two.
            let target = match (workload, pipeline) {
                (_, Some(path)) => Ok(BenchTarget::Pipeline(path)),
                (Some(workload), None) => Ok(BenchTarget::Workload(workload)),
                (None, None) => Err(Failure::BadInput("name a workload or --pipeline FILE".into())),
            };
            target.and_then(|target| {
                let flags = BenchFlags {
                    events,
                    parallelism,
                    checkpoints,
                    rate,
                    buffer_timeout,
                    local_aggregation: !no_local_aggregation,
                    state,
                };
                bench(target, flags)
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
