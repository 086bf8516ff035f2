//! `weir`: run pipelines and benchmarks on a local Weir cluster.

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// mimalloc: the engine allocates and frees batches and rows at a high rate
// from many threads; glibc malloc's arena contention costs measurably more.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "weir", version, about = "Flink-style stream processing: run pipelines and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one workload of bench/WORKLOADS.md and print the Flink baseline's report line.
    Bench {
        /// orders-window | orders-dedup | q0 | q1 | q2 | q5 | q7
        workload: String,
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { workload, events, parallelism } => {
            if !bench::WORKLOADS.contains(&workload.as_str()) {
                eprintln!("weir: unknown workload `{workload}`; expected one of: {}", bench::WORKLOADS.join(", "));
                return ExitCode::from(2);
            }
            if parallelism == 0 {
                eprintln!("weir: --parallelism must be at least 1");
                return ExitCode::from(2);
            }
            match bench::run(&workload, events, parallelism) {
                Ok(r) => {
                    println!("{}", r.line(&workload, events, parallelism));
                    eprintln!("peak_rss_kib={}", bench::peak_rss_kib());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("weir: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
