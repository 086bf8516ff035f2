//! `weir-operator`: the StreamJob controller's binary.
//!
//! `weir-operator crd` prints the CustomResourceDefinition (what
//! `crds/streamjobs.weir.dev.yaml` holds).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weir-operator", version, about = "The Weir Kubernetes operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the StreamJob CustomResourceDefinition (YAML).
    Crd,
}

fn main() {
    match Cli::parse().command {
        Command::Crd => print!("{}", weir_operator::crd::crd_yaml()),
    }
}
