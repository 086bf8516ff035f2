//! Ctrl-C and SIGTERM (Kubernetes stopping a pod) on a JobManager.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use weir_cluster::jobmanager::JobManager;

/// First Ctrl-C or SIGTERM: a savepoint and stop (with checkpointing; cancel
/// if the savepoint fails), else stop the sources and let the job drain; once
/// the job has ended, leave. Second: leave at once.
pub fn stop_on_signal(program: impl Into<String>, jm: Arc<JobManager>) {
    let program = program.into();
    let stops = AtomicBool::new(false);
    let installed = ctrlc::set_handler(move || {
        if stops.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        if jm.is_finished() {
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
