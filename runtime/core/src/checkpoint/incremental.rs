//! Incremental checkpoints: what a task's chain hands in at a barrier, and the
//! chains of state files its checkpoints build up.
//!
//! With incremental checkpoints on, a task's first checkpoint (and the first
//! after a savepoint, a restore or a failed upload) is full; each later one
//! asks the operators for what changed since their previous snapshot
//! ([`Operator::snapshot_changes`]) and stores only that, in the job's
//! `shared/` directory. The checkpoint's handle for an operator subtask is
//! then its *chain*: the full file and the change files after it, in order,
//! which a restore reads one after the other. Operators that cannot tell
//! what changed hand in full snapshots, which start their chain anew.
//!
//! A chain is started anew (the next checkpoint is full) once its change
//! files together outgrow its full file: a restore then reads at most about
//! twice the state, and retention can let go of the old files. So is it
//! when an operator's changes outgrow what it tracks them within (see
//! [`crate::state::KeyedState::encode_changes`]).
//!
//! A change file is only worth something if the one before it was stored:
//! the uploader keeps the chains, stores one checkpoint of a subtask at a
//! time and in order (a change upload waits for the upload of its base),
//! and declines a checkpoint whose changes follow a snapshot that was not
//! stored (the next is full again), or that is older than what is stored. Which shared files may go is the
//! coordinator's business: those no retained checkpoint names.
//!
//! [`Operator::snapshot_changes`]: crate::operator::Operator::snapshot_changes

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::metadata::{OperatorSnapshot, SubtaskStateHandle};
use crate::element::Barrier;

/// One operator's snapshot at a barrier.
#[derive(Debug)]
pub struct Taken {
    pub uid: String,
    pub snapshot: OperatorSnapshot,
    /// The snapshot holds the changes since the operator's previous one.
    pub changes: bool,
}

/// Collects the snapshots of one task's chain links at a barrier, and for
/// incremental checkpoints keeps what the task's next ones build on.
#[derive(Clone, Default)]
pub struct SnapshotCollector {
    taken: Arc<Mutex<Vec<Taken>>>,
    incremental: Option<Arc<Incremental>>,
}

/// A task's incremental checkpointing.
pub struct Incremental {
    /// Unique to this run of the task: part of every shared file's name.
    pub token: u64,
    /// The next checkpoint is full (the first, and after a savepoint or a failed upload).
    full_next: AtomicBool,
    /// The barrier being snapshotted: its id, whether it takes changes, and
    /// the checkpoint they follow.
    current: Mutex<Current>,
    /// The chains as stored: locked for the whole of one upload.
    pub chains: Mutex<Chains>,
    /// Some chain's change files outgrew its full file (as last stored).
    outgrown: AtomicBool,
    /// Checkpoints shipped to the uploader and not yet stored or refused.
    in_flight: Mutex<BTreeSet<u64>>,
    /// Signalled when one of them is.
    landed: Condvar,
}

/// How long a change upload waits for its base's upload before it gives up
/// (declining its checkpoint): far beyond any checkpoint timeout.
const BASE_WAIT: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Current {
    barrier: Option<u64>,
    changes: bool,
    /// The last checkpoint (not savepoint) this task snapshotted.
    previous: Option<u64>,
}

/// The state files each operator's checkpoints are made of.
#[derive(Debug, Default)]
pub struct Chains {
    /// The checkpoint whose snapshots the chains end with; `None` when
    /// nothing is stored yet, or an upload failed.
    pub last: Option<u64>,
    /// Per operator uid: its full file and the change files after it.
    pub by_uid: HashMap<String, Vec<SubtaskStateHandle>>,
}

impl Incremental {
    /// The next checkpoint must be full: what the chains would build on is
    /// not stored.
    pub fn restart(&self, chains: &mut Chains) {
        chains.last = None;
        chains.by_uid.clear();
        self.full_next.store(true, Ordering::Relaxed);
    }

    /// Notes what the stored chains are made of, for the next checkpoint's choice.
    pub fn stored(&self, chains: &Chains) {
        let outgrown = chains.by_uid.values().any(|chain| {
            let changes: u64 = chain.iter().skip(1).map(|h| h.size).sum();
            chain.first().is_some_and(|full| changes > full.size)
        });
        self.outgrown.store(outgrown, Ordering::Relaxed);
    }

    /// Waits until the upload of checkpoint `base` ended (stored or not).
    /// `false`: it did not within [`BASE_WAIT`].
    pub fn wait_for(&self, base: u64) -> bool {
        let in_flight = self.in_flight.lock().expect("in-flight poisoned");
        let (in_flight, waited) =
            self.landed.wait_timeout_while(in_flight, BASE_WAIT, |f| f.contains(&base)).expect("in-flight poisoned");
        drop(in_flight);
        !waited.timed_out()
    }

    /// The upload of checkpoint `id` ended.
    pub fn landed(&self, id: u64) {
        self.in_flight.lock().expect("in-flight poisoned").remove(&id);
        self.landed.notify_all();
    }
}

/// The snapshots of one barrier, as the uploader gets them.
#[derive(Debug, Default)]
pub struct Shipment {
    pub taken: Vec<Taken>,
    /// The checkpoint the changes in `taken` follow (when some are changes).
    pub base: Option<u64>,
}

impl SnapshotCollector {
    /// A collector for a task whose checkpoints are incremental.
    pub fn incremental() -> Self {
        let incremental = Incremental {
            token: std::collections::hash_map::RandomState::new().hash_one(std::process::id()),
            full_next: AtomicBool::new(true),
            current: Mutex::default(),
            chains: Mutex::default(),
            outgrown: AtomicBool::new(false),
            in_flight: Mutex::default(),
            landed: Condvar::new(),
        };
        SnapshotCollector { taken: Arc::default(), incremental: Some(Arc::new(incremental)) }
    }

    /// Whether the task's checkpoints are incremental: keyed operators then track their changes.
    pub fn is_incremental(&self) -> bool {
        self.incremental.is_some()
    }

    /// Whether the task's checkpoints are incremental, and how.
    pub fn incremental_state(&self) -> Option<&Arc<Incremental>> {
        self.incremental.as_ref()
    }

    /// Whether operators should hand in their changes at `barrier`: decided
    /// once per barrier, the same for every link of the chain.
    pub fn wants_changes(&self, barrier: &Barrier) -> bool {
        let Some(inc) = &self.incremental else { return false };
        let mut current = inc.current.lock().expect("collector poisoned");
        if current.barrier != Some(barrier.checkpoint_id) {
            current.barrier = Some(barrier.checkpoint_id);
            if barrier.is_savepoint {
                // Full, and outside the chain: what follows it cannot be changes since it.
                current.changes = false;
                inc.full_next.store(true, Ordering::Relaxed);
            } else {
                let full = inc.full_next.swap(false, Ordering::Relaxed) || inc.outgrown.load(Ordering::Relaxed);
                current.changes = !full && current.previous.is_some();
            }
        }
        current.changes
    }

    /// A link's full snapshot (nothing is kept when it is empty).
    pub fn add(&self, uid: &str, snapshot: OperatorSnapshot) {
        if !snapshot.is_empty() {
            self.push(Taken { uid: uid.to_string(), snapshot, changes: false });
        }
    }

    /// A link's changes since its previous snapshot (kept even when empty:
    /// its chain still belongs in the checkpoint).
    pub fn add_changes(&self, uid: &str, snapshot: OperatorSnapshot) {
        self.push(Taken { uid: uid.to_string(), snapshot, changes: true });
    }

    fn push(&self, taken: Taken) {
        self.taken.lock().expect("snapshot collector poisoned").push(taken);
    }

    /// The snapshots taken at `barrier`, for the uploader.
    pub fn take(&self, barrier: &Barrier) -> Shipment {
        let taken = std::mem::take(&mut *self.taken.lock().expect("snapshot collector poisoned"));
        let Some(inc) = &self.incremental else { return Shipment { taken, base: None } };
        let mut current = inc.current.lock().expect("collector poisoned");
        let base = current.previous;
        if !barrier.is_savepoint {
            current.previous = Some(barrier.checkpoint_id);
            inc.in_flight.lock().expect("in-flight poisoned").insert(barrier.checkpoint_id);
        }
        Shipment { taken, base }
    }
}

impl std::fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCollector").field("incremental", &self.incremental.is_some()).finish()
    }
}
