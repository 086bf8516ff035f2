//! The handle of a running job: stop, cancel, savepoints, metrics, and
//! waiting for the end (which reports the first real failure, not its echoes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::{ChainMetrics, Coordination};
use crate::checkpoint::coordinator::{CheckpointStats, SavepointRequest};
use crate::error::{JobError, TaskError, TaskResult};

/// A running job.
pub struct JobHandle {
    pub(super) name: String,
    pub(super) threads: Vec<(String, JoinHandle<TaskResult>)>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) cancel: Arc<AtomicBool>,
    /// The first real task failure, as soon as it happens.
    pub(super) failure: Arc<Mutex<Option<String>>>,
    pub chains: Arc<Vec<ChainMetrics>>,
    pub(super) coordinator: Option<CoordinatorHandle>,
    pub(super) coordination: Mutex<Option<Coordination>>,
}

/// The coordinator thread of a job checkpointed in this process.
pub(super) struct CoordinatorHandle {
    pub requests: Sender<SavepointRequest>,
    /// Dropped when the job ended: wakes the coordinator to exit.
    pub done: Option<Sender<()>>,
    pub thread: JoinHandle<()>,
    pub history: Arc<Mutex<Vec<CheckpointStats>>>,
    /// Why checkpointing failed the job, if it did.
    pub failure: Arc<Mutex<Option<String>>>,
}

impl JobHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Ends the sources at once; what is in flight drains and the job finishes
    /// (without a final savepoint: see [`JobHandle::savepoint`] for that).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Ends every task at once, wherever it is (the job is being restarted or
    /// torn down); nothing drains, and no further checkpoint is taken.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The first task failure so far, while the other tasks may still run.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure slot poisoned").clone()
    }

    /// The tasks' ends of checkpoint coordination, once (distributed jobs with checkpointing).
    pub fn take_coordination(&self) -> Option<Coordination> {
        self.coordination.lock().expect("coordination poisoned").take()
    }

    /// A flag that stops the job when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn is_checkpointing(&self) -> bool {
        self.coordinator.is_some()
    }

    /// Takes a savepoint; with `stop`, the job ends right after it (with `drain`,
    /// every window and timer fires first). The receiver gets the savepoint's URI.
    pub fn savepoint(&self, stop: bool, drain: bool) -> Result<Receiver<Result<String, String>>, JobError> {
        let c = self.coordinator.as_ref().ok_or_else(|| {
            JobError::InvalidGraph("savepoints need checkpointing to be configured (a checkpoint directory)".into())
        })?;
        let (reply, rx) = crossbeam_channel::bounded(1);
        c.requests
            .send(SavepointRequest::new(stop, drain, reply))
            .map_err(|_| JobError::InvalidGraph("the job has already finished".into()))?;
        Ok(rx)
    }

    /// Completed and failed checkpoints so far.
    pub fn checkpoints(&self) -> Vec<CheckpointStats> {
        self.coordinator.as_ref().map(|c| c.history.lock().expect("history poisoned").clone()).unwrap_or_default()
    }

    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|(_, t)| t.is_finished())
    }

    /// Waits until every task ended; the first real failure, if any.
    pub fn wait(self) -> Result<(), JobError> {
        self.wait_with_checkpoints().0
    }

    /// [`JobHandle::wait`], and every checkpoint the job took (completed and failed).
    pub fn wait_with_checkpoints(self) -> (Result<(), JobError>, Vec<CheckpointStats>) {
        let mut first: Option<JobError> = None;
        let mut echo: Option<JobError> = None;
        for (task, t) in self.threads {
            let result = t.join().unwrap_or_else(|p| Err(TaskError::Panic(panic_message(&p))));
            if let Err(source) = result {
                let slot = if source.is_secondary() { &mut echo } else { &mut first };
                if slot.is_none() {
                    *slot = Some(JobError::TaskFailed { task, source });
                }
            }
        }
        let mut checkpoints = Vec::new();
        if let Some(mut c) = self.coordinator {
            drop(c.done.take());
            let _ = c.thread.join();
            checkpoints = c.history.lock().expect("history poisoned").clone();
            if let Some(reason) = c.failure.lock().expect("failure slot poisoned").take() {
                return (Err(JobError::Checkpointing(reason)), checkpoints);
            }
        }
        match first.or(echo) {
            Some(e) => (Err(e), checkpoints),
            None => (Ok(()), checkpoints),
        }
    }
}

pub(super) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
