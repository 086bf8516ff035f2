//! The JobManager's storage calls, off its event loop.
//!
//! Writing a checkpoint's `_metadata` and moving `latest`, deleting the
//! checkpoints beyond retention, checking the fence, opening (and for a
//! rescale, verifying) the snapshot the next attempt restores from: each
//! takes as long as the store does, seconds on a slow S3. The event loop
//! hands them to one storage thread ([`StorageWorker`]) and takes their
//! outcomes ([`Done`]) like any other event; meanwhile it goes on taking
//! heartbeats, reports and requests.
//!
//! One thread, so the work is done in the order it was handed out. That
//! matters: the next attempt's restore point is read only after every write
//! handed out before it ended, so a checkpoint whose write was out when its
//! attempt failed is either the restore point or was never written.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use weir_core::checkpoint::coordinator::{Coordinator, Written};
use weir_core::checkpoint::fence;

use super::job::{Plan, RestorePoint, open};
use crate::JobBuilder;
use crate::protocol::JobSpec;

/// What the storage thread reports back to the event loop.
#[derive(Debug)]
pub(super) enum Done {
    /// A snapshot's write for attempt `attempt` ended.
    Written { attempt: u64, written: Written },
    /// What the next attempt needs was read (or cannot be): for the request numbered `ticket`.
    Ready { ticket: u64, outcome: Result<Readiness, NotReady> },
}

type Chore = Box<dyn FnOnce() -> Option<Done> + Send>;

/// Runs storage work in order, on a thread of its own (or, for the event
/// loop's unit tests, at once where it is handed out).
pub(super) struct StorageWorker {
    chores: Option<Sender<Chore>>,
    done_tx: Sender<Done>,
    /// Where the outcomes arrive.
    pub done: Receiver<Done>,
}

impl StorageWorker {
    /// A worker on a thread of its own; the thread ends when the worker is
    /// dropped, after the work already handed out.
    pub fn spawn(job: &str) -> std::io::Result<Self> {
        let (chores, chores_rx) = crossbeam_channel::unbounded::<Chore>();
        let (done_tx, done) = crossbeam_channel::unbounded();
        let tx = done_tx.clone();
        std::thread::Builder::new().name(format!("jm-storage-{job}")).spawn(move || {
            for chore in chores_rx {
                if let Some(d) = chore() {
                    let _ = tx.send(d);
                }
            }
        })?;
        Ok(StorageWorker { chores: Some(chores), done_tx, done })
    }

    /// A worker that does each piece of work as it is handed out (its
    /// outcome still arrives on [`Self::done`]): deterministic tests.
    #[cfg(test)]
    pub fn inline() -> Self {
        let (done_tx, done) = crossbeam_channel::unbounded();
        StorageWorker { chores: None, done_tx, done }
    }

    pub fn submit(&self, chore: impl FnOnce() -> Option<Done> + Send + 'static) {
        match &self.chores {
            Some(chores) => {
                // The thread is gone only if a chore panicked: do it here rather than lose it.
                if let Err(e) = chores.send(Box::new(chore))
                    && let Some(d) = (e.0)()
                {
                    let _ = self.done_tx.send(d);
                }
            }
            None => {
                if let Some(d) = chore() {
                    let _ = self.done_tx.send(d);
                }
            }
        }
    }
}

/// Where the next attempt restores from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RestoreFrom {
    /// Where the previous one did (or the start): the job's first attempt,
    /// or a job without checkpointing.
    Kept(Option<RestorePoint>),
    /// The latest completed checkpoint, after the failure `after`; failing that, `fallback`.
    Latest { fallback: Option<RestorePoint>, after: String },
    /// A rescale's savepoint, verified whole before any task restarts from it.
    Savepoint(String),
}

/// Where the loop is with what the next attempt needs from storage.
#[derive(Debug)]
pub(super) enum Preparation {
    /// Not asked for yet (or asked again: what was read is stale).
    Unasked,
    /// Asked for, as request `ticket`.
    Asked(u64),
    /// Read, at that moment.
    Got(Readiness, std::time::Instant),
    /// A rescale's savepoint read (and verified, or found wanting) at that
    /// moment, before the tasks it stopped all ended: taken once they have.
    Held(Result<Readiness, NotReady>, std::time::Instant),
}

/// What the next attempt needs from storage.
#[derive(Debug)]
pub(super) struct Readiness {
    pub restore: Option<RestorePoint>,
    /// The first checkpoint id above every snapshot stored for the job.
    pub next_id: u64,
}

/// Why the next attempt cannot be deployed.
#[derive(Debug)]
pub(super) enum NotReady {
    /// A JobManager of a newer epoch leads the job.
    Deposed(String),
    /// The snapshot to restore from cannot be opened.
    Restore(String),
}

/// The storage reads the next attempt needs, done on the storage thread.
pub(super) struct Prepare {
    pub builder: Arc<dyn JobBuilder>,
    pub spec: JobSpec,
    pub plan: Plan,
    pub epoch: Option<u64>,
    pub from: RestoreFrom,
}

impl Prepare {
    /// The fence first (a deposed JobManager deploys nothing: its tasks'
    /// recovery, a sink's clean-up say, would undo the new leader's work),
    /// then the restore point, then the next free checkpoint id.
    pub fn run(self) -> Result<Readiness, NotReady> {
        let Prepare { builder, spec, plan, epoch, from } = self;
        if let (Some(cp), Some(epoch)) = (&plan.checkpointing, epoch)
            && let Err(e @ fence::FenceError::Fenced { .. }) = fence::check(cp.storage.as_ref(), &spec.name, epoch)
        {
            return Err(NotReady::Deposed(e.to_string()));
        }
        let restore = match from {
            RestoreFrom::Kept(point) => point,
            RestoreFrom::Latest { fallback, .. } => match open(builder.as_ref(), &spec, &plan, None, false) {
                Ok(Some(point)) => Some(point),
                Ok(None) => fallback,
                Err(e) => return Err(NotReady::Restore(format!("the latest checkpoint cannot be restored: {e}"))),
            },
            RestoreFrom::Savepoint(path) => match open(builder.as_ref(), &spec, &plan, Some(&path), true) {
                Ok(Some(point)) => Some(point),
                Ok(None) => return Err(NotReady::Restore(format!("the savepoint {path}: no snapshot there"))),
                Err(e) => return Err(NotReady::Restore(format!("the savepoint {path} cannot be restored: {e}"))),
            },
        };
        let stored = plan
            .checkpointing
            .as_ref()
            .map_or(1, |cp| Coordinator::next_free_id(cp.storage.as_ref(), &spec.name).unwrap_or(1));
        let next_id = stored.max(restore.as_ref().map_or(0, |r| r.1 + 1));
        Ok(Readiness { restore, next_id })
    }
}
