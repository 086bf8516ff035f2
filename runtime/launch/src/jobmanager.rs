//! A JobManager process: from its flags and a job to a job run to its end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_api::launch::{FailoverOptions, JobManagerOptions, VertexParallelism};
use weir_cluster::jobmanager::{ClusterView, JobManager, JobManagerConfig, JobManagerError};
use weir_cluster::restart::RestartStrategy;
use weir_cluster::state::JobState;
use weir_cluster::{JobBuilder, JobSpec};
use weir_core::checkpoint::coordinator::CheckpointStatus;
use weir_rest::{ClusterJob, RestServer};

use crate::LaunchError;

/// The address `host:port`, or an error naming `flag`.
pub fn socket(host: &str, port: u16, flag: &str) -> Result<SocketAddr, LaunchError> {
    format!("{host}:{port}").parse().map_err(|_| LaunchError::bad(format!("{flag}: `{host}` is not an IP address")))
}

/// The JobManager's settings from its flags, for `spec`.
pub fn config(options: &JobManagerOptions, mut spec: JobSpec) -> Result<JobManagerConfig, LaunchError> {
    let rpc = socket(&options.bind, options.rpc_port, "--bind")?;
    spec.vertex_parallelism.extend(VertexParallelism::map(&options.vertex_parallelism));
    let mut config = JobManagerConfig::new(spec, rpc);
    config.restore = options.restore.clone();
    config.deployment = options.deployment_id.clone();
    // Lingering is for Kubernetes, which restarts a TaskManager that exits.
    config.release_taskmanagers = !options.linger;
    config.secret = crate::secret(options.auth_secret_file.as_deref())?;
    apply_failover(&options.failover, &mut config)?;
    Ok(config)
}

/// Heartbeat timeout and restart strategy from their flags.
pub fn apply_failover(failover: &FailoverOptions, config: &mut JobManagerConfig) -> Result<(), LaunchError> {
    if failover.heartbeat_timeout < Duration::from_secs(2) {
        return Err(LaunchError::bad("--heartbeat-timeout: must be at least 2s (TaskManagers send one every second)"));
    }
    config.heartbeat_timeout = failover.heartbeat_timeout;
    config.restart = RestartStrategy::parse(&failover.restart_strategy)
        .map_err(|e| LaunchError::bad(format!("--restart-strategy: {e}")))?;
    Ok(())
}

/// Starts a JobManager, mapping its errors to exit codes.
pub fn start(config: JobManagerConfig, builder: Arc<dyn JobBuilder>) -> Result<JobManager, LaunchError> {
    let restore = config.restore.clone();
    JobManager::start(config, builder).map_err(|e| match e {
        JobManagerError::Build(m) => LaunchError::BadInput(m),
        JobManagerError::Restore(m) => LaunchError::bad(format!("--restore {restore}: {m}")),
        JobManagerError::Bind { .. } => LaunchError::bad(format!("--rpc-port: {e}")),
        e => LaunchError::Runtime(e.to_string()),
    })
}

/// Holds leadership (a lock file or a Kubernetes Lease) while it lives.
enum Leadership {
    None,
    Lock(#[allow(dead_code)] weir_cluster::leader::Leadership),
}

fn lead(program: &str, options: &JobManagerOptions, rpc: SocketAddr) -> Result<Leadership, LaunchError> {
    if let Some(lease) = &options.leader_lease {
        elect(lease, options.lease_duration)?;
        eprintln!("{program}: leading (holding the Lease {lease})");
    }
    match &options.leader_lock {
        Some(path) => {
            let who = format!("pid {} rpc {rpc}", std::process::id());
            let held = weir_cluster::leader::acquire(path, &who)
                .map_err(|e| LaunchError::bad(format!("--leader-lock {}: {e}", path.display())))?;
            eprintln!("{program}: leading (holding {})", path.display());
            Ok(Leadership::Lock(held))
        }
        None => Ok(Leadership::None),
    }
}

#[cfg(feature = "lease")]
fn elect(lease: &str, duration: Duration) -> Result<(), LaunchError> {
    let election = weir_lease::Election::new(lease, crate::identity(), duration)
        .map_err(|e| LaunchError::bad(format!("--leader-lease: {e}")))?;
    let leader = election.lead().map_err(|e| LaunchError::Runtime(format!("--leader-lease: {e}")))?;
    crate::signals::on_leaving(move || leader.release(Duration::from_secs(2)));
    Ok(())
}

#[cfg(not(feature = "lease"))]
fn elect(_lease: &str, _duration: Duration) -> Result<(), LaunchError> {
    Err(LaunchError::bad(
        "--leader-lease: this binary was built without Kubernetes leader election (the `lease` feature)",
    ))
}

/// Runs a JobManager for `spec` as `options` say until its job ends (or,
/// with `--linger`, until the process is stopped). `program` prefixes messages.
pub fn run(
    program: &str,
    options: &JobManagerOptions,
    spec: JobSpec,
    builder: Arc<dyn JobBuilder>,
) -> Result<(), LaunchError> {
    let rest_addr = socket(&options.bind, options.rest_port, "--bind")?;
    let (name, parallelism) = (spec.name.clone(), spec.parallelism);
    let config = config(options, spec)?;
    let config_secret = config.secret.clone();
    let standbys = options.leader_lease.is_some() || options.leader_lock.is_some();
    let on_signal = if standbys { crate::OnSignal::HandOver } else { crate::OnSignal::Stop };
    let signalled = crate::signals::JobManagerSlot::default();
    crate::signals::handle_signals(program, signalled.clone(), on_signal);
    let _leadership = lead(program, options, config.rpc_bind)?;
    eprintln!(
        "{program}: JobManager for {name} at parallelism {parallelism}, TaskManagers register at {}",
        config.rpc_bind
    );
    let started = Instant::now();
    let jm = Arc::new(start(config, builder)?);
    let rest = RestServer::start(rest_addr, Arc::new(ClusterJob(jm.clone())), config_secret)
        .map_err(|e| LaunchError::bad(format!("--rest-port {}: {e}", options.rest_port)))?;
    eprintln!("{program}: REST API and dashboard on http://{}/", rest.addr);
    let _ = signalled.set(jm.clone());
    let view = wait(&jm, &rest);
    let result = finish(program, &view, started, "");
    if options.linger {
        // Kubernetes would restart an exited JobManager, and with it the job.
        eprintln!("{program}: job {}; serving its final state until stopped", view.state);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    result
}

/// Waits for the job to end, then lets the REST API answer a little longer.
pub fn wait(jm: &JobManager, rest: &RestServer) -> ClusterView {
    while !jm.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    rest.linger(Duration::from_secs(3));
    jm.view()
}

/// Reports how the job ended (`detail`: what else the caller knows of it, such
/// as the rows written); an error unless it finished or was cancelled.
pub fn finish(program: &str, view: &ClusterView, started: Instant, detail: &str) -> Result<(), LaunchError> {
    let events: u64 = view
        .layout
        .iter()
        .zip(&view.metrics)
        .filter(|(c, _)| c.is_source)
        .flat_map(|(_, m)| m.iter().map(|s| s.records_in))
        .sum();
    eprintln!(
        "{program}: {} {} in {:.1} s: {events} events read, {detail}{} restarts",
        view.name,
        view.state,
        started.elapsed().as_secs_f64(),
        view.restarts
    );
    if let Some(last) = view.checkpoints.iter().rev().find(|c| c.status == CheckpointStatus::Completed) {
        eprintln!("{program}: last snapshot: {} (resume with --restore latest or --restore {})", last.path, last.path);
    }
    match view.state {
        JobState::Finished | JobState::Cancelled => Ok(()),
        _ => Err(LaunchError::Runtime(format!(
            "job {} {}: {}",
            view.name,
            view.state,
            view.failure.clone().unwrap_or_else(|| "no reason recorded".into())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec::new("j", Vec::new(), 2)
    }

    #[test]
    fn the_config_follows_the_flags() {
        let options = JobManagerOptions {
            restore: weir_api::Restore::Latest,
            deployment_id: Some("7".into()),
            linger: true,
            rpc_port: 7123,
            bind: "127.0.0.1".into(),
            failover: FailoverOptions { heartbeat_timeout: Duration::from_secs(4), restart_strategy: "none".into() },
            ..JobManagerOptions::default()
        };
        let c = config(&options, spec()).unwrap();
        assert_eq!(c.restore, weir_api::Restore::Latest);
        assert_eq!(c.deployment.as_deref(), Some("7"));
        assert!(!c.release_taskmanagers, "a lingering JobManager keeps its TaskManagers");
        assert_eq!(c.rpc_bind, "127.0.0.1:7123".parse().unwrap());
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(4));
        assert_eq!(c.restart, RestartStrategy::None);
    }

    #[test]
    fn bad_flags_are_bad_input_naming_the_flag() {
        let short = JobManagerOptions {
            failover: FailoverOptions { heartbeat_timeout: Duration::from_secs(1), ..FailoverOptions::default() },
            ..JobManagerOptions::default()
        };
        let e = config(&short, spec()).unwrap_err();
        assert!(matches!(&e, LaunchError::BadInput(m) if m.starts_with("--heartbeat-timeout")), "{e}");
        let strategy = JobManagerOptions {
            failover: FailoverOptions { restart_strategy: "sometimes".into(), ..FailoverOptions::default() },
            ..JobManagerOptions::default()
        };
        assert!(config(&strategy, spec()).unwrap_err().to_string().starts_with("--restart-strategy"));
        let host = JobManagerOptions { bind: "not a host".into(), ..JobManagerOptions::default() };
        assert_eq!(config(&host, spec()).unwrap_err().exit_code(), 2);
    }
}
