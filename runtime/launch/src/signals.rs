//! Ctrl-C and SIGTERM (Kubernetes stopping a pod).
//!
//! In a container a process is PID 1, and PID 1 ignores a signal it has no
//! handler for: without one, a pod being deleted would run on until the end
//! of its grace period and then be killed. So every process of a cluster
//! handles SIGTERM: a JobManager as [`OnSignal`] says (a standby still
//! waiting for its Lease leaves at once), a TaskManager leaves at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

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

/// What a process gives up before it leaves on a signal: the Lease it leads
/// with, so that a standby takes over at once.
static ON_LEAVING: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

/// Sets what the process gives up before it leaves on a signal.
#[cfg_attr(not(feature = "lease"), allow(dead_code))]
pub(crate) fn on_leaving(give_up: impl Fn() + Send + Sync + 'static) {
    let _ = ON_LEAVING.set(Box::new(give_up));
}

/// Gives up what [`on_leaving`] set, and leaves.
fn give_up_and_exit() -> ! {
    if let Some(give_up) = ON_LEAVING.get() {
        give_up();
    }
    std::process::exit(0);
}

/// The JobManager a signal acts on, once this process runs one.
pub type JobManagerSlot = Arc<OnceLock<Arc<JobManager>>>;

/// Installs the Ctrl-C and SIGTERM handler: the first does what `on` says;
/// the second leaves at once.
pub fn stop_on_signal(program: impl Into<String>, jm: Arc<JobManager>, on: OnSignal) {
    let slot = JobManagerSlot::default();
    let _ = slot.set(jm);
    handle_signals(program, slot, on);
}

/// Installs the Ctrl-C and SIGTERM handler of a JobManager before it runs
/// one: until `slot` holds the JobManager (a standby waiting for its Lease,
/// a JobManager restoring), a signal leaves at once; then as
/// [`stop_on_signal`].
pub fn handle_signals(program: impl Into<String>, slot: JobManagerSlot, on: OnSignal) {
    let program = program.into();
    let stops = AtomicBool::new(false);
    let installed = ctrlc::set_handler(move || {
        if stops.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        let Some(jm) = slot.get() else {
            eprintln!("\n{program}: stopped before running a job");
            give_up_and_exit();
        };
        if jm.is_finished() {
            std::process::exit(0);
        }
        if on == OnSignal::HandOver {
            eprintln!("\n{program}: leaving; a standby JobManager takes the job over from its latest checkpoint");
            give_up_and_exit();
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

/// Installs the Ctrl-C and SIGTERM handler of a TaskManager: it leaves at
/// once. Its tasks end with it; the JobManager recovers them from the latest
/// checkpoint, or is itself stopping the job.
pub fn exit_on_signal(program: impl Into<String>) {
    let program = program.into();
    if let Err(e) = ctrlc::set_handler(move || {
        eprintln!("\n{program}: stopped");
        std::process::exit(0);
    }) {
        tracing::warn!("no Ctrl-C/SIGTERM handler: {e}");
    }
}
