//! `weir-operator`: the StreamJob controller's binary.
//!
//! * `weir-operator crd` prints the CustomResourceDefinition (what
//!   `crds/streamjobs.weir.dev.yaml` holds).
//! * `weir-operator run [--namespace NS] [--jobmanager-access service|proxy]`
//!   runs the controller with the in-cluster configuration or `KUBECONFIG`.

use clap::{Parser, Subcommand, ValueEnum};
use weir_operator::controller::{self, JobManagerAccess};

#[derive(Parser)]
#[command(name = "weir-operator", version, about = "The Weir Kubernetes operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Access {
    /// Through each job's Service (the operator runs in the cluster).
    Service,
    /// Through the API server's service proxy (the operator runs outside the cluster).
    Proxy,
}

#[derive(Subcommand)]
enum Command {
    /// Print the StreamJob CustomResourceDefinition (YAML).
    Crd,
    /// Run the controller.
    Run {
        /// Watch only this namespace (all namespaces when absent).
        #[arg(long)]
        namespace: Option<String>,
        /// How to reach JobManagers.
        #[arg(long, value_enum, default_value = "service")]
        jobmanager_access: Access,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Crd => print!("{}", weir_operator::crd::crd_yaml()),
        Command::Run { namespace, jobmanager_access } => {
            let access = match jobmanager_access {
                Access::Service => JobManagerAccess::Service,
                Access::Proxy => JobManagerAccess::Proxy,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let client = kube::Client::try_default().await?;
                controller::run(client, namespace, access).await;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}
