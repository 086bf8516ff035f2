//! Checkpointing of a job run by the executor: the uploader threads that
//! store the tasks' snapshots, and the coordinator, on a thread of its own
//! for a job that runs here, or handed over (as a [`Coordination`]) to the
//! JobManager of a distributed job.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::Coordination;
use super::handle::CoordinatorHandle;
use crate::checkpoint::compression::Compression;
use crate::checkpoint::coordinator::TaskReport;
use crate::checkpoint::coordinator::{CheckpointConfig, CheckpointStats, Command, Coordinator, SavepointRequest};
use crate::checkpoint::metadata::RestoredSnapshot;
use crate::checkpoint::routing::CommandRouter;
use crate::error::JobError;
use crate::graph::JobGraph;
use crate::task::{UploadJob, upload};
use crate::time::now_ms;

/// The tasks' ends of checkpointing, as the deployment left them.
pub(super) struct TaskLinks {
    pub controls: BTreeMap<usize, Sender<Command>>,
    pub reports: Receiver<TaskReport>,
    pub uploads: Receiver<UploadJob>,
}

/// Where the coordinator of a checkpointed job runs.
pub(super) enum Coordinated {
    /// Here, on its own thread.
    Here(CoordinatorHandle),
    /// In the JobManager, which gets the tasks' ends.
    Elsewhere(Coordination),
}

/// Starts the uploaders, and the coordinator unless `remote` (a distributed job's is the JobManager's).
pub(super) fn start(
    graph: &JobGraph,
    config: &CheckpointConfig,
    restore: Option<&RestoredSnapshot>,
    remote: bool,
    links: TaskLinks,
    stop: Arc<AtomicBool>,
) -> Result<Coordinated, JobError> {
    spawn_uploaders(links.uploads, config, graph.snapshot_compression)?;
    let TaskLinks { controls, reports, .. } = links;
    if remote {
        return Ok(Coordinated::Elsewhere(Coordination { controls, reports }));
    }
    let next_id = Coordinator::next_free_id(config.storage.as_ref(), &graph.name)
        .map_err(|e| JobError::Checkpointing(format!("cannot read the checkpoint directory: {e}")))?;
    let next_id = next_id.max(restore.map_or(0, |r| r.metadata.checkpoint_id + 1));
    let coordinator = Coordinator::new(graph.checkpoint_shape(), config.clone(), next_id, now_ms());
    let router = CommandRouter::new(&graph.layout());
    spawn_coordinator(CoordinatorLoop::new(coordinator, router, controls, stop), reports).map(Coordinated::Here)
}

/// Uploads (and their compression) run beside processing; two threads keep
/// a slow store from serialising tasks.
fn spawn_uploaders(
    uploads: Receiver<UploadJob>,
    config: &CheckpointConfig,
    compression: Compression,
) -> Result<(), JobError> {
    for _ in 0..2 {
        let (rx, cfg) = (uploads.clone(), config.clone());
        std::thread::Builder::new()
            .name("uploader".into())
            .spawn(move || rx.iter().for_each(|job| upload(job, &cfg, compression)))
            .map_err(|source| JobError::Spawn { task: "uploader".into(), source })?;
    }
    Ok(())
}

/// The coordinator of a job that runs here, with its tasks' control channels.
struct CoordinatorLoop {
    coordinator: Coordinator,
    router: CommandRouter,
    controls: BTreeMap<usize, Sender<Command>>,
    stop: Arc<AtomicBool>,
    /// The checkpoints so far, for the handle.
    history: Arc<Mutex<Vec<CheckpointStats>>>,
    /// Why checkpointing failed the job, if it did.
    failure: Arc<Mutex<Option<String>>>,
}

impl CoordinatorLoop {
    fn new(
        coordinator: Coordinator,
        router: CommandRouter,
        controls: BTreeMap<usize, Sender<Command>>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let (history, failure) = (Arc::default(), Arc::default());
        CoordinatorLoop { coordinator, router, controls, stop, history, failure }
    }

    /// Completion goes to every task; triggers and end-of-input to the sources;
    /// a failure stops the job and is what `wait` reports.
    fn dispatch(&self, commands: Vec<Command>) {
        let routed = self.router.route(commands, |task, command| {
            if let Some(control) = self.controls.get(&task) {
                let _ = control.send(command.clone());
            }
        });
        if let Err(reason) = routed {
            tracing::error!("{reason}");
            self.failure.lock().expect("failure slot poisoned").get_or_insert(reason);
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Publishes the history when it grew.
    fn publish(&self) {
        let mut history = self.history.lock().expect("history poisoned");
        if history.len() != self.coordinator.history.len() {
            *history = self.coordinator.history.clone();
        }
    }

    /// Sleeps until the next trigger or timeout is due, or something arrives; no polling.
    fn run(mut self, reports: Receiver<TaskReport>, requests: Receiver<SavepointRequest>, done: Receiver<()>) {
        let mut reports_open = true;
        loop {
            let mut commands = self.coordinator.tick(now_ms());
            // This thread is the coordinator's own: its storage work is done here.
            commands.extend(self.coordinator.work_here(now_ms()));
            self.dispatch(commands);
            self.publish();
            let wait = (self.coordinator.next_wakeup(now_ms()) - now_ms()).clamp(0, 60_000) as u64;
            let reports_rx = if reports_open { reports.clone() } else { crossbeam_channel::never() };
            crossbeam_channel::select! {
                recv(reports_rx) -> r => match r {
                    Ok(report) => {
                        let mut commands = self.coordinator.on_report(report, now_ms());
                        commands.extend(self.coordinator.work_here(now_ms()));
                        self.dispatch(commands);
                    }
                    Err(_) => reports_open = false, // every task and upload is gone
                },
                recv(requests) -> r => {
                    if let Ok(r) = r {
                        self.coordinator.request_savepoint(r);
                    }
                }
                recv(done) -> _ => break,
                default(Duration::from_millis(wait)) => {}
            }
        }
        *self.history.lock().expect("history poisoned") = self.coordinator.history.clone();
    }
}

fn spawn_coordinator(
    coordinator: CoordinatorLoop,
    reports: Receiver<TaskReport>,
) -> Result<CoordinatorHandle, JobError> {
    let (requests, request_rx) = crossbeam_channel::unbounded::<SavepointRequest>();
    let (done, done_rx) = crossbeam_channel::bounded::<()>(0);
    let (history, failure) = (coordinator.history.clone(), coordinator.failure.clone());
    let thread = std::thread::Builder::new()
        .name("coordinator".into())
        .spawn(move || coordinator.run(reports, request_rx, done_rx))
        .map_err(|source| JobError::Spawn { task: "coordinator".into(), source })?;
    Ok(CoordinatorHandle { requests, done: Some(done), thread, history, failure })
}
