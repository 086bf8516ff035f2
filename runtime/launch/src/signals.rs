//! Ctrl-C and SIGTERM (Kubernetes stopping a pod) on a JobManager.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use weir_cluster::jobmanager::JobManager;

/// What a JobManager does on its first Ctrl-C or SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnSignal {
    /// A savepoint and stop (with checkpointing; cancel if the savepoint
    /// fails), else stop the sources and let the job drain; once the job
    /// has ended, leave.
    Stop,
    /// Leave at once and leave the job running: this JobManager is one of
    /// several electing a leader (`--leader-lease`, `--leader-lock`), so the job outlives any
    /// one of them. A standby takes the Lease over and recovers the latest
    /// checkpoint, as after a crash. (Stopping the job is the operator's
    /// business, through the REST API, before it removes the pods.)
    HandOver,
}

/// Installs the Ctrl-C and SIGTERM handler: the first does what `on` says;
/// the second leaves at once.
pub fn stop_on_signal(program: impl Into<String>, jm: Arc<JobManager>, on: OnSignal) {
    let program = program.into();
    let stops = AtomicBool::new(false);
    let installed = ctrlc::set_handler(move || {
        if stops.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        if jm.is_finished() {
            std::process::exit(0);
        }
        if on == OnSignal::HandOver {
            eprintln!("\n{program}: leaving; a standby JobManager takes the job over from its latest checkpoint");
            std::process::exit(0);
        }
        if !jm.is_checkpointing() {
            eprintln!("\n{program}: stopping the sources; the job drains (Ctrl-C again to abort)");
            jm.stop();
            return;
        }
        eprintln!("\n{program}: taking a savepoint, then stopping (Ctrl-C again to abort)");
        match jm.savepoint(true, false).map(|rx| rx.recv()) {
            Ok(Ok(Ok(uri))) => eprintln!("{program}: savepoint written to {uri}"),
            Ok(Ok(Err(e))) => {
                eprintln!("{program}: {e}; cancelling");
                jm.cancel();
            }
            _ => jm.cancel(),
        }
    });
    if let Err(e) = installed {
        tracing::warn!("no Ctrl-C/SIGTERM handler: {e}");
    }
}
