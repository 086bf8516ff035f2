//! `weir-operator`: the StreamJob controller's binary.
//!
//! * `weir-operator crd` prints the CustomResourceDefinition (what
//!   `crds/streamjobs.weir.dev.yaml` holds).
//! * `weir-operator run [--namespace NS] [--jobmanager-access service|proxy]
//!   [--metrics-addr ADDR] [--leader-lease NAME]` runs the controller with the
//!   in-cluster configuration or `KUBECONFIG`, serving /healthz, /readyz and
//!   /metrics, and with a Lease, as one of several replicas of which one leads.

use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;

use weir_operator::controller::{self, JobManagerAccess};
use weir_operator::health::{self, Metrics};

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
        /// Where /healthz, /readyz and /metrics are served.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: std::net::SocketAddr,
        /// Run several replicas, one leading, elected with this Lease (in POD_NAMESPACE, else the client's namespace).
        #[arg(long, value_name = "NAME")]
        leader_lease: Option<String>,
        /// How long the leader's Lease holds without renewal.
        #[arg(long, value_name = "SECONDS", default_value_t = 15)]
        lease_duration_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Crd => print!("{}", weir_operator::crd::crd_yaml()),
        Command::Run { namespace, jobmanager_access, metrics_addr, leader_lease, lease_duration_secs } => {
            let access = match jobmanager_access {
                Access::Service => JobManagerAccess::Service,
                Access::Proxy => JobManagerAccess::Proxy,
            };
            let metrics = Arc::new(Metrics::default());
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                // Served from the start: a standby is alive and ready (it can take
                // over), and `weir_operator_leading` says which replica leads.
                let server = tokio::spawn(health::serve(metrics_addr, metrics.clone()));
                // In a container the operator is PID 1, which ignores a SIGTERM it does
                // not handle. It leaves at once, leading or not: what it was doing is
                // written ahead in the StreamJobs' status, for the next leader, and
                // its Lease is given up so that a standby takes over at once.
                let leading: Arc<std::sync::OnceLock<weir_lease::Leader>> = Arc::default();
                let leaving = leading.clone();
                tokio::spawn(async move {
                    terminated().await;
                    tracing::info!("stopping on SIGTERM");
                    if let Some(leader) = leaving.get() {
                        leader.release(std::time::Duration::from_secs(2));
                    }
                    std::process::exit(0);
                });
                if let Some(lease) = leader_lease {
                    let identity = weir_launch::identity();
                    let duration = std::time::Duration::from_secs(lease_duration_secs.max(1));
                    metrics.standing_by.store(true, std::sync::atomic::Ordering::Relaxed);
                    let leader = tokio::task::spawn_blocking(move || {
                        weir_lease::Election::new(&lease, identity, duration)?.lead()
                    })
                    .await?
                    .map_err(|e| anyhow::anyhow!("--leader-lease: {e}"))?;
                    let _ = leading.set(leader);
                    metrics.standing_by.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                let client = kube::Client::try_default().await?;
                tokio::select! {
                    () = controller::run(client, namespace, access, metrics) => {}
                    served = server => served?.map_err(|e| anyhow::anyhow!("--metrics-addr {metrics_addr}: {e}"))?,
                }
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!("no SIGTERM handler: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
