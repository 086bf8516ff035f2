//! The checkpoint coordinator: decides when to snapshot, collects the
//! acknowledgements, and completes, aborts and retains checkpoints.
//!
//! It is a state machine driven by events (a task acknowledged or declined, a
//! source finished, a savepoint was requested, a write to storage ended) and
//! by the clock ([`Coordinator::tick`]); each call returns the [`Command`]s
//! for the tasks. It touches no storage itself: what it wants written or
//! deleted it hands out as [`StorageWork`] ([`Coordinator::take_work`]), for
//! its driver to run where blocking harms nothing, in order, and to answer
//! with [`Coordinator::on_written`]. The executor runs it on a thread of its
//! own and does the work there ([`Coordinator::work_here`]); the JobManager
//! does it on a storage thread beside its event loop, which a slow store must
//! never hold up. Tests drive it directly.
//!
//! A checkpoint's life: `tick` triggers it (at most one in flight, at least
//! `min_pause` after the previous one ended, every `interval`) by sending a
//! barrier to every source task. When every task acknowledged it, `_metadata`
//! is written (last: the checkpoint exists from then on), the `latest`
//! pointer is replaced, old checkpoints beyond `retained` are deleted, and
//! every task is told it completed (transactional sinks commit then). A
//! decline (for instance a failed upload) or the timeout aborts it; the job
//! goes on.
//!
//! Bounded inputs: when every source has finished, the coordinator takes a
//! final checkpoint at once; when it completed, the sources are told to end
//! their streams, so nothing is left uncommitted when the job finishes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::fence;
use super::metadata::{
    CheckpointMetadata, FORMAT, FORMAT_VERSION, LatestPointer, OperatorMetadata, SnapshotKind, SubtaskStateHandle,
};
use super::storage::{CheckpointStorage, StorageError, check_name};
use crate::element::Barrier;
use crate::time::Timestamp;

/// Exactly-once aligns barriers; at-least-once only tracks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CheckpointMode {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
}

/// Checkpointing of one job.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    pub interval: Duration,
    pub mode: CheckpointMode,
    pub timeout: Duration,
    pub min_pause: Duration,
    /// Completed checkpoints to keep (savepoints are never deleted by the job).
    pub retained: usize,
    pub storage: Arc<dyn CheckpointStorage>,
    /// Where savepoints go when not beside the checkpoints (`{dir}/{job}/savepoints/sp-{id}`
    /// under this storage instead). They do not move the `latest` pointer, which
    /// names snapshots relative to the checkpoint directory.
    pub savepoints: Option<Arc<dyn CheckpointStorage>>,
    /// Records a blocked channel may buffer during alignment before the checkpoint is declined.
    pub alignment_budget: usize,
    /// Consecutive failed checkpoints the job survives; one more fails it.
    pub tolerable_failures: usize,
    /// Who deploys the job (an operator) names each deployment: the name is written
    /// in every `_metadata`, so that a JobManager restarted within one deployment
    /// recovers that deployment's own latest checkpoint rather than redoing its
    /// initial restore, and never picks up what an earlier deployment left behind.
    pub deployment: Option<String>,
    /// The job's default parallelism (the one vertices without their own
    /// take), written in every `_metadata` beside each vertex's: with
    /// `deployment`, a JobManager restarted within its deployment runs at the
    /// parallelism of its own latest checkpoint (a rescale's, say), not at the
    /// one its command line started with.
    pub parallelism: Option<usize>,
    /// The fencing token of the JobManager that runs this coordinator (see
    /// [`super::fence`]): checked before every completion, and written in
    /// every `_metadata` and `latest`. `None` (a job in one process) fences nothing.
    pub epoch: Option<u64>,
}

impl CheckpointConfig {
    pub fn new(storage: Arc<dyn CheckpointStorage>, interval: Duration) -> Self {
        CheckpointConfig {
            interval,
            mode: CheckpointMode::ExactlyOnce,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            retained: 3,
            storage,
            savepoints: None,
            alignment_budget: 1_000_000,
            tolerable_failures: 10,
            deployment: None,
            parallelism: None,
            epoch: None,
        }
    }
}

impl CheckpointConfig {
    /// The storage a snapshot of `kind` goes to.
    pub fn storage_for(&self, kind: SnapshotKind) -> &Arc<dyn CheckpointStorage> {
        match (kind, &self.savepoints) {
            (SnapshotKind::Savepoint, Some(elsewhere)) => elsewhere,
            _ => &self.storage,
        }
    }
}

/// The directory of a snapshot, relative to the storage root.
pub fn snapshot_dir(job: &str, id: u64, kind: SnapshotKind) -> String {
    match kind {
        SnapshotKind::Checkpoint => format!("{job}/chk-{id}"),
        SnapshotKind::Savepoint => format!("{job}/savepoints/sp-{id}"),
    }
}

/// What a task tells the coordinator.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum TaskReport {
    /// The task's snapshot for `checkpoint_id` is stored: one handle per stateful operator of its chain.
    Ack {
        task: usize,
        checkpoint_id: u64,
        states: Vec<(String, SubtaskStateHandle)>,
    },
    Decline {
        task: usize,
        checkpoint_id: u64,
        reason: String,
    },
    /// A source task's input is exhausted.
    SourceFinished {
        task: usize,
    },
}

/// What the coordinator tells tasks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// To every source task: inject this barrier (emit the end-of-time watermark first when `drain`).
    /// With `stop` (a stop-with-savepoint), emit nothing after it: the job
    /// ends once the savepoint completes ([`Command::EndOfInput`] follows),
    /// or goes on if it fails ([`Command::Resume`]). What a source read
    /// after the barrier would be processed only to be thrown away (the
    /// job restarts from the savepoint), on the cores the savepoint is
    /// being written with; as Flink's stop-with-savepoint, a synchronous
    /// savepoint.
    Trigger {
        barrier: Barrier,
        drain: bool,
        #[serde(default)]
        stop: bool,
    },
    /// To every task: the checkpoint completed.
    Complete { checkpoint_id: u64 },
    /// To every source task: end the stream now.
    EndOfInput,
    /// To every source task: the stop-with-savepoint `checkpoint_id` failed;
    /// read on after its barrier.
    Resume { checkpoint_id: u64 },
    /// To the job: checkpoints keep failing; fail the job with this reason.
    Fail(String),
}

/// A savepoint someone asked for.
pub struct SavepointRequest {
    /// Stop the job once it is taken.
    pub stop: bool,
    /// Before it, let every window and timer fire (end-of-time watermark).
    pub drain: bool,
    pub reply: Sender<Result<String, String>>,
    /// The same request made again while this one was under way (a client retrying): same answer.
    pub also: Vec<Sender<Result<String, String>>>,
}

impl SavepointRequest {
    pub fn new(stop: bool, drain: bool, reply: Sender<Result<String, String>>) -> Self {
        SavepointRequest { stop, drain, reply, also: Vec::new() }
    }

    fn answer(self, result: Result<String, String>) {
        for r in self.also {
            let _ = r.send(result.clone());
        }
        let _ = self.reply.send(result);
    }
}

/// Figures of a finished (completed or failed) checkpoint, for the REST API and the log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckpointStats {
    pub id: u64,
    pub kind: SnapshotKind,
    pub status: CheckpointStatus,
    pub path: String,
    pub triggered_at: Timestamp,
    pub duration_ms: i64,
    /// The state it holds: every file it names, shared ones included.
    pub size_bytes: u64,
    /// What it stored itself: its size less the shared files the checkpoint
    /// before it already named (an incremental checkpoint's own cost).
    pub checkpointed_bytes: u64,
    pub failure: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointStatus {
    Completed,
    Failed,
}

/// Storage work the coordinator wants done, in the order it was handed out.
pub enum StorageWork {
    /// A completed snapshot's `_metadata`, and `latest`: see [`SnapshotWrite`].
    Write(Box<SnapshotWrite>),
    /// A snapshot no longer wanted (aborted, or beyond retention): deleted,
    /// `_metadata` first so that it stops existing before its files go; then
    /// the shared files (paths from the storage root) that only it named.
    Delete { storage: Arc<dyn CheckpointStorage>, dir: String, shared: Vec<String> },
    /// Shared files that no checkpoint names (paths from the storage root).
    DeleteFiles { storage: Arc<dyn CheckpointStorage>, paths: Vec<String> },
}

/// The names of the shared files among `handles`.
fn shared_names<'a>(handles: impl Iterator<Item = &'a SubtaskStateHandle>) -> Vec<String> {
    handles.filter(|h| h.shared).map(|h| h.file.clone()).collect()
}

impl StorageWork {
    /// Does the work; a write's outcome is for [`Coordinator::on_written`].
    pub fn run(self) -> Option<Written> {
        match self {
            StorageWork::Write(w) => {
                let checkpoint_id = w.meta.checkpoint_id;
                Some(Written { checkpoint_id, outcome: w.run() })
            }
            StorageWork::Delete { storage, dir, shared } => {
                let _ = storage.delete(&format!("{dir}/_metadata"));
                match storage.list(&format!("{dir}/")) {
                    Ok(keys) => keys.iter().for_each(|k| {
                        let _ = storage.delete(k);
                    }),
                    Err(e) => tracing::warn!("could not clean up {dir}: {e}"),
                }
                delete_files(storage.as_ref(), &shared);
                None
            }
            StorageWork::DeleteFiles { storage, paths } => {
                delete_files(storage.as_ref(), &paths);
                None
            }
        }
    }
}

fn delete_files(storage: &dyn CheckpointStorage, paths: &[String]) {
    for path in paths {
        if let Err(e) = storage.delete(path) {
            tracing::warn!("could not delete the shared state file {}: {e}", storage.uri(path));
        }
    }
}

/// The write that completes a snapshot: its `_metadata` in `dir`, then
/// (beside the checkpoints) `latest` moved to it; first checking that no
/// newer JobManager leads the job, and never moving `latest` backwards.
pub struct SnapshotWrite {
    /// Where the snapshot is (the savepoint directory, for a savepoint kept apart).
    storage: Arc<dyn CheckpointStorage>,
    /// The checkpoint directory: the fence and `latest` are there.
    checkpoints: Arc<dyn CheckpointStorage>,
    job: String,
    dir: String,
    meta: CheckpointMetadata,
}

impl SnapshotWrite {
    fn run(&self) -> Result<(), WriteFailure> {
        if let Some(epoch) = self.meta.epoch {
            match fence::check(self.checkpoints.as_ref(), &self.job, epoch) {
                Ok(()) => {}
                Err(e @ fence::FenceError::Fenced { .. }) => return Err(WriteFailure::Fenced(e.to_string())),
                Err(e) => return Err(WriteFailure::Failed(e.to_string())),
            }
        }
        let fail = |e: StorageError| WriteFailure::Failed(format!("could not write the metadata: {e}"));
        let storage = &self.storage;
        storage.put(&format!("{}/_metadata", self.dir), &self.meta.to_json()).map_err(fail)?;
        if !Arc::ptr_eq(storage, &self.checkpoints) {
            return Ok(());
        }
        let latest = format!("{}/latest", self.job);
        let current = match storage.get(&latest) {
            Ok(bytes) => serde_json::from_slice::<LatestPointer>(&bytes).ok(),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(fail(e)),
        };
        let (id, epoch) = (self.meta.checkpoint_id, self.meta.epoch);
        if !fence::may_move(current.as_ref(), epoch, id) {
            tracing::warn!("{} stays at a newer snapshot than {id} of {}", storage.uri(&latest), self.job);
            return Ok(());
        }
        let rel = self.dir.strip_prefix(&format!("{}/", self.job)).unwrap_or(&self.dir).to_string();
        let pointer = LatestPointer { path: rel, checkpoint_id: id, kind: self.meta.kind, epoch };
        storage.put(&latest, &serde_json::to_vec(&pointer).expect("serializable")).map_err(fail)
    }
}

/// How a [`SnapshotWrite`] ended.
#[derive(Debug)]
pub struct Written {
    pub checkpoint_id: u64,
    pub outcome: Result<(), WriteFailure>,
}

/// Why a snapshot could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteFailure {
    /// A JobManager of a newer epoch leads the job (see [`super::fence`]).
    Fenced(String),
    /// Storage failed; the checkpoint is aborted and the job goes on.
    Failed(String),
}

impl std::fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteFailure::Fenced(why) | WriteFailure::Failed(why) => f.write_str(why),
        }
    }
}

struct Pending {
    barrier: Barrier,
    kind: SnapshotKind,
    triggered_at: Timestamp,
    acks: HashMap<usize, Vec<(String, SubtaskStateHandle)>>,
    request: Option<SavepointRequest>,
    is_final: bool,
}

/// What the coordinator needs to know about the job it checkpoints.
#[derive(Clone, Debug)]
pub struct JobShape {
    pub name: String,
    pub max_parallelism: u32,
    /// uid -> parallelism of every operator.
    pub operators: BTreeMap<String, usize>,
    /// Number of tasks (all must acknowledge a checkpoint).
    pub tasks: usize,
    /// Number of source tasks.
    pub sources: usize,
}

pub struct Coordinator {
    job: String,
    config: CheckpointConfig,
    max_parallelism: u32,
    /// uid -> parallelism of every operator.
    operators: BTreeMap<String, usize>,
    tasks: usize,
    sources: usize,
    next_id: u64,
    pending: Option<Pending>,
    last_trigger: Timestamp,
    last_end: Timestamp,
    retained: VecDeque<u64>,
    /// The shared files (names in the job's `shared/` directory) each retained checkpoint names.
    shared_files: HashMap<u64, HashSet<String>>,
    /// Shared files stored for checkpoints that did not complete: deleted at
    /// the next completion unless it names them (a task's chain went on from them).
    orphans: HashSet<String>,
    finished_sources: HashSet<usize>,
    final_done: bool,
    requests: VecDeque<SavepointRequest>,
    stopping: bool,
    consecutive_failures: usize,
    pub history: Vec<CheckpointStats>,
    /// Why this coordinator may complete no more checkpoints (a newer
    /// JobManager leads the job: see [`super::fence`]).
    fenced: Option<String>,
    /// The checkpoint every task acknowledged, while its `_metadata` is written.
    writing: Option<Writing>,
    /// Storage work not yet handed out.
    work: Vec<StorageWork>,
}

/// A checkpoint whose `_metadata` is being written.
struct Writing {
    pending: Pending,
    size_bytes: u64,
    checkpointed_bytes: u64,
    /// The shared files it names.
    shared: HashSet<String>,
}

impl Coordinator {
    /// `next_id` must exceed every snapshot id already stored for the job.
    pub fn new(shape: JobShape, config: CheckpointConfig, next_id: u64, now: Timestamp) -> Self {
        Coordinator {
            job: shape.name,
            config,
            max_parallelism: shape.max_parallelism,
            operators: shape.operators,
            tasks: shape.tasks,
            sources: shape.sources,
            next_id,
            pending: None,
            last_trigger: now,
            last_end: now,
            retained: VecDeque::new(),
            shared_files: HashMap::new(),
            orphans: HashSet::new(),
            finished_sources: HashSet::new(),
            final_done: false,
            requests: VecDeque::new(),
            stopping: false,
            consecutive_failures: 0,
            history: Vec::new(),
            fenced: None,
            writing: None,
            work: Vec::new(),
        }
    }

    /// Why this coordinator completes no more checkpoints, once a JobManager
    /// of a newer epoch claimed the job: its JobManager must stop.
    pub fn fenced(&self) -> Option<&str> {
        self.fenced.as_deref()
    }

    /// The first id above every snapshot stored for `job`.
    ///
    /// `job` must be a single name (see [`check_name`]): it is refused here, before
    /// the job runs, rather than when its first checkpoint is written.
    pub fn next_free_id(storage: &dyn CheckpointStorage, job: &str) -> Result<u64, StorageError> {
        check_name("job name", job).map_err(|e| StorageError::unsafe_path(storage.uri(""), e))?;
        let mut max = 0;
        for key in storage.list(&format!("{job}/"))? {
            for part in key.split('/') {
                if let Some(id) = part.strip_prefix("chk-").or_else(|| part.strip_prefix("sp-")) {
                    max = max.max(id.parse::<u64>().unwrap_or(0));
                }
            }
        }
        Ok(max + 1)
    }

    pub fn request_savepoint(&mut self, request: SavepointRequest) {
        // A stop-with-savepoint asked for again while one is queued or under way
        // gets that one's answer: a second one could never be taken (the job stops).
        if request.stop {
            let pending = self.pending.as_mut().and_then(|p| p.request.as_mut()).filter(|r| r.stop);
            if let Some(same) = pending.or_else(|| self.requests.iter_mut().find(|r| r.stop)) {
                same.also.push(request.reply);
                return;
            }
        }
        self.requests.push_back(request);
    }

    /// The checkpoint under way: triggered, or being written.
    pub fn in_flight(&self) -> Option<u64> {
        self.pending.as_ref().or(self.writing.as_ref().map(|w| &w.pending)).map(|p| p.barrier.checkpoint_id)
    }

    /// The storage work to do, in order (see [`StorageWork`]).
    pub fn take_work(&mut self) -> Vec<StorageWork> {
        std::mem::take(&mut self.work)
    }

    /// Does the storage work here, until there is none; for a driver on a
    /// thread of its own. Returns the commands the writes' outcomes led to.
    pub fn work_here(&mut self, now: Timestamp) -> Vec<Command> {
        let mut commands = Vec::new();
        while !self.work.is_empty() {
            for work in self.take_work() {
                if let Some(written) = work.run() {
                    commands.extend(self.on_written(written, now));
                }
            }
        }
        commands
    }

    fn all_sources_finished(&self) -> bool {
        self.finished_sources.len() == self.sources
    }

    /// When [`Coordinator::tick`] next has something to do (a trigger or a timeout),
    /// so that its driver can sleep until then instead of polling.
    pub fn next_wakeup(&self, now: Timestamp) -> Timestamp {
        if self.writing.is_some() {
            return now + 60_000; // the write's outcome wakes the driver
        }
        if self.superseded().is_some() {
            return now;
        }
        if let Some(p) = &self.pending {
            return p.triggered_at + self.config.timeout.as_millis() as i64;
        }
        if self.consecutive_failures > self.config.tolerable_failures || !self.requests.is_empty() {
            return now;
        }
        if self.stopping || (self.final_done && self.all_sources_finished()) {
            return now + 60_000; // nothing more to trigger; reports and requests still wake the driver
        }
        if self.all_sources_finished() {
            return now;
        }
        (self.last_trigger + self.config.interval.as_millis() as i64)
            .max(self.last_end + self.config.min_pause.as_millis() as i64)
    }

    /// Advances time: triggers, or times out, a checkpoint.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Command> {
        if let Some(fail) = self.too_many_failures() {
            return vec![fail];
        }
        if self.writing.is_some() {
            return Vec::new(); // one checkpoint at a time, until its write ended
        }
        let mut resume = Vec::new();
        if let Some(id) = self.superseded() {
            // A periodic checkpoint: its sources were never held.
            resume.extend(self.abort_as(id, "superseded by a stop-with-savepoint".into(), false, now));
        }
        if let Some(p) = &self.pending {
            if now - p.triggered_at >= self.config.timeout.as_millis() as i64 {
                let id = p.barrier.checkpoint_id;
                resume.extend(self.abort(id, format!("timed out after {:?}", self.config.timeout), now));
            } else {
                return Vec::new();
            }
        }
        if !resume.is_empty() || self.stopping || (self.final_done && self.all_sources_finished()) {
            return resume;
        }
        let paused = now - self.last_end >= self.config.min_pause.as_millis() as i64;
        if let Some(request) = self.requests.pop_front() {
            return self.trigger(SnapshotKind::Savepoint, Some(request), false, now);
        }
        if self.all_sources_finished() {
            return self.trigger(SnapshotKind::Checkpoint, None, true, now);
        }
        if paused && now - self.last_trigger >= self.config.interval.as_millis() as i64 {
            return self.trigger(SnapshotKind::Checkpoint, None, false, now);
        }
        Vec::new()
    }

    fn trigger(
        &mut self,
        kind: SnapshotKind,
        request: Option<SavepointRequest>,
        is_final: bool,
        now: Timestamp,
    ) -> Vec<Command> {
        let id = self.next_id;
        self.next_id += 1;
        self.last_trigger = now;
        let barrier = Barrier { checkpoint_id: id, triggered_at: now, is_savepoint: kind == SnapshotKind::Savepoint };
        let drain = request.as_ref().is_some_and(|r| r.stop && r.drain);
        let stop = request.as_ref().is_some_and(|r| r.stop);
        self.stopping |= stop;
        self.pending = Some(Pending { barrier, kind, triggered_at: now, acks: HashMap::new(), request, is_final });
        vec![Command::Trigger { barrier, drain, stop }]
    }

    pub fn on_report(&mut self, report: TaskReport, now: Timestamp) -> Vec<Command> {
        match report {
            TaskReport::SourceFinished { task } => {
                self.finished_sources.insert(task);
                Vec::new()
            }
            TaskReport::Decline { checkpoint_id, reason, task } => {
                if self.in_flight() == Some(checkpoint_id) {
                    return self
                        .abort(checkpoint_id, format!("task {task} declined: {reason}"), now)
                        .into_iter()
                        .collect();
                }
                Vec::new()
            }
            TaskReport::Ack { task, checkpoint_id, states } => {
                let Some(p) = self.pending.as_mut().filter(|p| p.barrier.checkpoint_id == checkpoint_id) else {
                    // An aborted checkpoint's straggler: its shared files may be no one's.
                    self.orphans.extend(shared_names(states.iter().map(|(_, h)| h)));
                    return Vec::new();
                };
                p.acks.insert(task, states);
                if p.acks.len() < self.tasks {
                    return Vec::new();
                }
                let p = self.pending.take().expect("checked above");
                self.complete(p, now)
            }
        }
    }

    fn too_many_failures(&self) -> Option<Command> {
        (self.consecutive_failures > self.config.tolerable_failures).then(|| {
            let last = self.history.last().and_then(|h| h.failure.clone()).unwrap_or_default();
            Command::Fail(format!("{} checkpoints in a row failed; the last: {last}", self.consecutive_failures))
        })
    }

    /// The periodic checkpoint in flight when a stop-with-savepoint (a
    /// rescale, an upgrade, a stop) waits: it is abandoned for the savepoint,
    /// which then starts at once instead of queueing behind it (the tasks'
    /// alignment lets a newer barrier supersede an older one). Not once all
    /// its acknowledgements are in, nor a final checkpoint.
    fn superseded(&self) -> Option<u64> {
        let p = self.pending.as_ref().filter(|p| p.kind == SnapshotKind::Checkpoint && !p.is_final)?;
        self.requests.iter().any(|r| r.stop).then_some(p.barrier.checkpoint_id)
    }

    /// Aborts checkpoint `id` as a failure; a stop-with-savepoint's sources
    /// are told to read on (the command returned).
    #[must_use]
    fn abort(&mut self, id: u64, reason: String, now: Timestamp) -> Option<Command> {
        self.abort_as(id, reason, true, now)
    }

    /// Aborts checkpoint `id`; `failed`: it counts against the tolerance of failures.
    fn abort_as(&mut self, id: u64, reason: String, failed: bool, now: Timestamp) -> Option<Command> {
        let p = self.pending.take_if(|p| p.barrier.checkpoint_id == id)?;
        self.orphans.extend(shared_names(p.acks.values().flatten().map(|(_, h)| h)));
        if failed {
            self.consecutive_failures += 1;
            tracing::warn!("checkpoint {id} of {} aborted: {reason}", self.job);
        } else {
            tracing::info!("checkpoint {id} of {} abandoned: {reason}", self.job);
        }
        self.last_end = now;
        let dir = snapshot_dir(&self.job, id, p.kind);
        self.delete_dir(&dir, p.kind);
        self.history.push(CheckpointStats {
            id,
            kind: p.kind,
            status: CheckpointStatus::Failed,
            path: self.config.storage_for(p.kind).uri(&dir),
            triggered_at: p.triggered_at,
            duration_ms: now - p.triggered_at,
            size_bytes: 0,
            checkpointed_bytes: 0,
            failure: Some(reason.clone()),
        });
        let r = p.request?;
        let stop = r.stop;
        self.stopping = false;
        r.answer(Err(format!("savepoint {id} failed: {reason}")));
        stop.then_some(Command::Resume { checkpoint_id: id })
    }

    /// Every task acknowledged: hands out the write of the snapshot's
    /// `_metadata`; the checkpoint completes when it ended ([`Self::on_written`]).
    fn complete(&mut self, p: Pending, now: Timestamp) -> Vec<Command> {
        let id = p.barrier.checkpoint_id;
        let dir = snapshot_dir(&self.job, id, p.kind);
        // Every vertex, stateless ones too: `_metadata` records the parallelism each ran at.
        let mut by_uid: BTreeMap<String, Vec<SubtaskStateHandle>> =
            self.operators.keys().map(|uid| (uid.clone(), Vec::new())).collect();
        for (uid, handle) in p.acks.into_values().flatten() {
            by_uid.entry(uid).or_default().push(handle);
        }
        // What this checkpoint stored: its own files, not the shared ones it names again.
        let before = self.retained.back().and_then(|id| self.shared_files.get(id));
        let handles = || by_uid.values().flatten();
        let size_bytes = handles().map(|h| h.size).sum();
        let checkpointed_bytes =
            handles().filter(|h| !(h.shared && before.is_some_and(|b| b.contains(&h.file)))).map(|h| h.size).sum();
        let operators = by_uid
            .into_iter()
            .map(|(uid, mut subtasks)| {
                subtasks.sort_by_key(|h| h.subtask);
                let parallelism = self.operators.get(&uid).copied().unwrap_or(subtasks.len());
                OperatorMetadata { uid, parallelism, subtasks }
            })
            .collect();
        let meta = CheckpointMetadata {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            job: self.job.clone(),
            checkpoint_id: id,
            kind: p.kind,
            max_parallelism: self.max_parallelism,
            triggered_at: p.triggered_at,
            completed_at: now,
            operators,
            deployment: self.config.deployment.clone(),
            parallelism: self.config.parallelism,
            epoch: self.config.epoch,
            crc32: None,
        };
        let shared = meta.operators.iter().flat_map(|o| &o.subtasks).filter(|h| h.shared);
        let shared = shared.map(|h| h.file.clone()).collect();
        let storage = self.config.storage_for(p.kind).clone();
        let checkpoints = self.config.storage.clone();
        let job = self.job.clone();
        self.work.push(StorageWork::Write(Box::new(SnapshotWrite { storage, checkpoints, job, dir, meta })));
        self.writing =
            Some(Writing { pending: Pending { acks: HashMap::new(), ..p }, size_bytes, checkpointed_bytes, shared });
        Vec::new()
    }

    /// A snapshot's write ended: the checkpoint completed (every task is
    /// told), or it is aborted (the job goes on), or this coordinator is
    /// fenced (its JobManager must stop).
    pub fn on_written(&mut self, written: Written, now: Timestamp) -> Vec<Command> {
        let id = written.checkpoint_id;
        let Some(w) = self.writing.take_if(|w| w.pending.barrier.checkpoint_id == id) else { return Vec::new() };
        match written.outcome {
            Ok(()) => self.completed(w, now),
            Err(failure) => {
                if let WriteFailure::Fenced(why) = &failure {
                    self.fenced = Some(why.clone());
                }
                self.orphans.extend(w.shared);
                self.pending = Some(w.pending);
                self.abort(id, failure.to_string(), now).into_iter().collect()
            }
        }
    }

    fn completed(&mut self, w: Writing, now: Timestamp) -> Vec<Command> {
        let Writing { pending: p, size_bytes, checkpointed_bytes, shared } = w;
        let id = p.barrier.checkpoint_id;
        let dir = snapshot_dir(&self.job, id, p.kind);
        let storage = self.config.storage_for(p.kind);
        self.last_end = now;
        self.consecutive_failures = 0;
        let uri = storage.uri(&dir);
        tracing::info!("{:?} {id} of {} completed in {} ms: {uri}", p.kind, self.job, now - p.triggered_at);
        self.history.push(CheckpointStats {
            id,
            kind: p.kind,
            status: CheckpointStatus::Completed,
            path: uri.clone(),
            triggered_at: p.triggered_at,
            duration_ms: now - p.triggered_at,
            size_bytes,
            checkpointed_bytes,
            failure: None,
        });
        if p.kind == SnapshotKind::Checkpoint {
            self.retained.push_back(id);
            self.shared_files.insert(id, shared);
            while self.retained.len() > self.config.retained.max(1) {
                let old = self.retained.pop_front().expect("non-empty");
                self.discard(old);
            }
            self.delete_orphans();
        }
        let mut commands = vec![Command::Complete { checkpoint_id: id }];
        if let Some(r) = p.request {
            let stop = r.stop;
            r.answer(Ok(uri));
            if stop {
                commands.push(Command::EndOfInput);
            }
        }
        if p.is_final {
            self.final_done = true;
            commands.push(Command::EndOfInput);
        }
        commands
    }

    /// Deletes a snapshot (as [`StorageWork::Delete`]).
    fn delete_dir(&mut self, dir: &str, kind: SnapshotKind) {
        let storage = self.config.storage_for(kind).clone();
        self.work.push(StorageWork::Delete { storage, dir: dir.to_string(), shared: Vec::new() });
    }

    /// Deletes the shared files of checkpoints that did not complete, but for
    /// those a retained checkpoint names. None can be named later: a task's
    /// chain goes on only from what its last stored snapshot named, which the
    /// checkpoint just completed names.
    fn delete_orphans(&mut self) {
        let named = |f: &String| self.shared_files.values().any(|kept| kept.contains(f));
        let dir = crate::checkpoint::metadata::shared_dir(&self.job);
        let orphans = std::mem::take(&mut self.orphans);
        let mut shared: Vec<String> = orphans.into_iter().filter(|f| !named(f)).map(|f| format!("{dir}/{f}")).collect();
        if !shared.is_empty() {
            shared.sort();
            self.work.push(StorageWork::DeleteFiles { storage: self.config.storage.clone(), paths: shared });
        }
    }

    /// Deletes a checkpoint beyond retention, and the shared files that no
    /// retained checkpoint names any more. A checkpoint in flight names none
    /// of those: a task's chain only grows from what its last stored
    /// snapshot named, and every task's is in the newest retained checkpoint.
    fn discard(&mut self, old: u64) {
        let files = self.shared_files.remove(&old).unwrap_or_default();
        let dir = crate::checkpoint::metadata::shared_dir(&self.job);
        let mut shared: Vec<String> = files
            .into_iter()
            .filter(|f| !self.shared_files.values().any(|kept| kept.contains(f)))
            .map(|f| format!("{dir}/{f}"))
            .collect();
        shared.sort();
        let storage = self.config.storage.clone();
        let dir = snapshot_dir(&self.job, old, SnapshotKind::Checkpoint);
        self.work.push(StorageWork::Delete { storage, dir, shared });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::metadata::RestoredSnapshot;
    use crate::checkpoint::storage::LocalStorage;
    use crate::keygroup::KeyGroupRange;

    fn setup(tasks: usize, sources: usize) -> (Coordinator, Arc<LocalStorage>, std::path::PathBuf) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weir-coord-{}-{n}", std::process::id()));
        let storage = Arc::new(LocalStorage::new(&dir));
        let mut cfg = CheckpointConfig::new(storage.clone(), Duration::from_millis(100));
        cfg.retained = 2;
        cfg.timeout = Duration::from_millis(1000);
        let operators = BTreeMap::from([("op".to_string(), tasks)]);
        let shape = JobShape { name: "j".into(), max_parallelism: 8, operators, tasks, sources };
        (Coordinator::new(shape, cfg, 1, 0), storage, dir)
    }

    fn handle(storage: &LocalStorage, id: u64, task: usize) -> (String, SubtaskStateHandle) {
        let snap = crate::checkpoint::metadata::OperatorSnapshot {
            keyed: vec![(task as u32, vec![task as u8])],
            ..Default::default()
        };
        let (bytes, h) = snap.encode(task, format!("op-{task}.state"), KeyGroupRange::for_subtask(task, 2, 8));
        storage.put(&format!("j/chk-{id}/op-{task}.state"), &bytes).unwrap();
        ("op".into(), h)
    }

    /// Acknowledges for `task`, and does the storage work that led to.
    fn ack(c: &mut Coordinator, s: &LocalStorage, id: u64, task: usize, now: i64) -> Vec<Command> {
        let mut commands =
            c.on_report(TaskReport::Ack { task, checkpoint_id: id, states: vec![handle(s, id, task)] }, now);
        commands.extend(c.work_here(now));
        commands
    }

    #[test]
    fn a_checkpoint_completes_only_once_its_write_ended_and_nothing_is_triggered_meanwhile() {
        let (mut c, s, dir) = setup(1, 1);
        c.tick(100);
        let acked = c.on_report(TaskReport::Ack { task: 0, checkpoint_id: 1, states: vec![handle(&s, 1, 0)] }, 110);
        assert!(acked.is_empty(), "not complete before its _metadata is written: {acked:?}");
        assert!(s.get("j/chk-1/_metadata").unwrap_err().is_not_found(), "the coordinator wrote nothing itself");
        assert_eq!(c.in_flight(), Some(1));
        assert!(c.tick(5_000).is_empty(), "no trigger and no timeout while the write is out");
        let work = c.take_work();
        assert!(matches!(&work[..], [StorageWork::Write(_)]));
        let written = work.into_iter().next().unwrap().run().unwrap();
        assert_eq!(c.on_written(written, 5_010), vec![Command::Complete { checkpoint_id: 1 }]);
        assert_eq!(RestoredSnapshot::latest(s.clone(), "j").unwrap().metadata.checkpoint_id, 1);
        // A write that failed aborts the checkpoint; the job goes on with the next one.
        assert!(matches!(c.tick(10_000)[..], [Command::Trigger { barrier: Barrier { checkpoint_id: 2, .. }, .. }]));
        c.on_report(TaskReport::Ack { task: 0, checkpoint_id: 2, states: vec![handle(&s, 2, 0)] }, 10_010);
        assert_eq!(c.take_work().len(), 1);
        let failed = Written { checkpoint_id: 2, outcome: Err(WriteFailure::Failed("disk full".into())) };
        assert!(c.on_written(failed, 10_020).is_empty());
        assert_eq!(c.in_flight(), None);
        assert!(c.history[1].failure.as_deref() == Some("disk full"), "{:?}", c.history[1]);
        assert!(c.fenced().is_none());
        c.work_here(10_030);
        assert!(s.list("j/chk-2/").unwrap().is_empty(), "the aborted checkpoint is cleaned up");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_deposed_jobmanagers_coordinator_completes_nothing_over_its_successors() {
        let (mut old, s, dir) = setup(1, 1);
        old.config.epoch = Some(100);
        fence::claim(s.as_ref(), "j", 100).unwrap();
        old.tick(100);
        assert_eq!(ack(&mut old, &s, 1, 0, 110), vec![Command::Complete { checkpoint_id: 1 }]);
        let latest = RestoredSnapshot::latest(s.clone(), "j").unwrap();
        assert_eq!((latest.metadata.checkpoint_id, latest.metadata.epoch), (1, Some(100)));
        // A new leader claims the job and completes checkpoint 2.
        let (mut new, _, _) = setup(1, 1);
        new.config = CheckpointConfig { epoch: Some(200), ..old.config.clone() };
        new.next_id = 2;
        fence::claim(s.as_ref(), "j", 200).unwrap();
        new.tick(100);
        assert_eq!(ack(&mut new, &s, 2, 0, 120), vec![Command::Complete { checkpoint_id: 2 }]);
        // The old one wakes up with checkpoint 3: fenced, nothing written.
        old.next_id = 3;
        old.tick(1000);
        assert!(ack(&mut old, &s, 3, 0, 1010).is_empty());
        assert!(old.fenced().is_some_and(|why| why.contains("fenced")), "{:?}", old.fenced());
        assert!(
            s.get("j/chk-3/_metadata").unwrap_err().is_not_found(),
            "no _metadata for the deposed one's checkpoint"
        );
        let latest = RestoredSnapshot::latest(s.clone(), "j").unwrap();
        assert_eq!((latest.metadata.checkpoint_id, latest.metadata.epoch), (2, Some(200)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn triggers_on_interval_one_at_a_time_and_completes_on_all_acks() {
        let (mut c, s, dir) = setup(2, 1);
        assert!(c.tick(50).is_empty());
        let cmds = c.tick(100);
        assert!(matches!(
            cmds[..],
            [Command::Trigger { barrier: Barrier { checkpoint_id: 1, .. }, drain: false, stop: false }]
        ));
        assert!(c.tick(250).is_empty(), "one in flight");
        assert!(ack(&mut c, &s, 1, 0, 260).is_empty());
        assert_eq!(ack(&mut c, &s, 1, 1, 270), vec![Command::Complete { checkpoint_id: 1 }]);
        let latest = RestoredSnapshot::latest(s.clone(), "j").unwrap();
        assert_eq!(latest.metadata.checkpoint_id, 1);
        assert_eq!(latest.metadata.operators[0].subtasks.len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sleeps_until_the_next_trigger_or_timeout() {
        let (mut c, s, dir) = setup(1, 1);
        assert_eq!(c.next_wakeup(10), 100, "the interval after the start");
        c.tick(100);
        assert_eq!(c.next_wakeup(120), 1100, "in flight: until its timeout");
        ack(&mut c, &s, 1, 0, 150);
        assert_eq!(c.next_wakeup(160), 200, "the interval after the last trigger");
        c.on_report(TaskReport::SourceFinished { task: 0 }, 170);
        assert_eq!(c.next_wakeup(170), 170, "the final checkpoint at once");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn retains_the_last_n_and_keeps_ids_increasing() {
        let (mut c, s, dir) = setup(1, 1);
        for id in 1..=4 {
            c.tick(id as i64 * 1000);
            ack(&mut c, &s, id, 0, id as i64 * 1000 + 1);
        }
        let kept: HashSet<String> =
            s.list("j/").unwrap().into_iter().filter_map(|k| k.split('/').nth(1).map(String::from)).collect();
        assert_eq!(kept, HashSet::from(["chk-3".to_string(), "chk-4".to_string(), "latest".to_string()]));
        assert_eq!(Coordinator::next_free_id(s.as_ref(), "j").unwrap(), 5);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn decline_and_timeout_abort_without_stopping_the_job() {
        let (mut c, s, dir) = setup(2, 1);
        c.tick(100);
        ack(&mut c, &s, 1, 0, 110);
        c.on_report(TaskReport::Decline { task: 1, checkpoint_id: 1, reason: "upload failed".into() }, 120);
        c.work_here(120);
        assert_eq!(c.in_flight(), None);
        assert!(s.list("j/chk-1/").unwrap().is_empty(), "an aborted checkpoint leaves nothing");
        assert!(RestoredSnapshot::latest(s.clone(), "j").is_err());
        assert_eq!(c.history[0].status, CheckpointStatus::Failed);
        // The next one goes ahead; a straggler ack of the aborted one is ignored.
        assert!(matches!(c.tick(250)[..], [Command::Trigger { barrier: Barrier { checkpoint_id: 2, .. }, .. }]));
        assert!(ack(&mut c, &s, 1, 1, 260).is_empty());
        // Checkpoint 2 times out at 1250; the same tick goes on with checkpoint 3.
        let cmds = c.tick(1300);
        assert!(c.history[1].failure.as_ref().unwrap().contains("timed out"));
        assert!(matches!(cmds[..], [Command::Trigger { barrier: Barrier { checkpoint_id: 3, .. }, .. }]));
        // Past the tolerance (2 here), the job is failed with the last reason.
        c.config.tolerable_failures = 2;
        c.on_report(TaskReport::Decline { task: 0, checkpoint_id: 3, reason: "disk full".into() }, 1310);
        let cmds = c.tick(1320);
        assert!(
            matches!(&cmds[..], [Command::Fail(m)] if m.contains("3 checkpoints in a row") && m.contains("disk full")),
            "{cmds:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn final_checkpoint_when_all_sources_finished_then_end_of_input() {
        let (mut c, s, dir) = setup(1, 2);
        c.on_report(TaskReport::SourceFinished { task: 0 }, 10);
        assert!(c.tick(20).is_empty());
        c.on_report(TaskReport::SourceFinished { task: 1 }, 30);
        let cmds = c.tick(31);
        assert!(matches!(cmds[..], [Command::Trigger { .. }]), "final checkpoint at once: {cmds:?}");
        assert_eq!(ack(&mut c, &s, 1, 0, 40), vec![Command::Complete { checkpoint_id: 1 }, Command::EndOfInput]);
        assert!(c.tick(10_000).is_empty(), "nothing after the final checkpoint");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_stop_with_savepoint_does_not_wait_behind_a_checkpoint_in_flight() {
        let (mut c, s, dir) = setup(1, 1);
        c.config.tolerable_failures = 0;
        assert!(matches!(c.tick(100)[..], [Command::Trigger { barrier: Barrier { checkpoint_id: 1, .. }, .. }]));
        // A savepoint that does not stop waits its turn.
        let (tx, _keep) = crossbeam_channel::bounded(1);
        c.request_savepoint(SavepointRequest::new(false, false, tx));
        assert_eq!(c.next_wakeup(150), 1100, "until the checkpoint's timeout");
        assert!(c.tick(150).is_empty());
        // A stop-with-savepoint (a rescale) abandons the checkpoint: the savepoints start at once.
        let (tx, _stop) = crossbeam_channel::bounded(1);
        c.request_savepoint(SavepointRequest::new(true, false, tx));
        assert_eq!(c.next_wakeup(160), 160, "at once");
        let cmds = c.tick(160);
        assert!(
            matches!(
                cmds[..],
                [Command::Trigger { barrier: Barrier { checkpoint_id: 2, is_savepoint: true, .. }, .. }]
            ),
            "{cmds:?}"
        );
        assert_eq!(c.history[0].failure.as_deref(), Some("superseded by a stop-with-savepoint"));
        assert!(ack(&mut c, &s, 1, 0, 170).is_empty(), "a straggler of the abandoned checkpoint");
        assert_eq!(c.consecutive_failures, 0, "abandoning is no failure: no Fail at a tolerance of none");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A stop-with-savepoint holds its sources after the barrier; if it
    /// fails (declined, timed out), they are told to read on, and only then.
    #[test]
    fn a_failed_stop_with_savepoint_resumes_its_sources() {
        let (mut c, _s, dir) = setup(2, 1);
        let (tx, rx) = crossbeam_channel::bounded(1);
        c.request_savepoint(SavepointRequest::new(true, false, tx));
        assert!(matches!(
            c.tick(1)[..],
            [Command::Trigger { barrier: Barrier { checkpoint_id: 1, .. }, stop: true, .. }]
        ));
        let decline = TaskReport::Decline { task: 1, checkpoint_id: 1, reason: "upload failed".into() };
        assert_eq!(c.on_report(decline, 5), vec![Command::Resume { checkpoint_id: 1 }]);
        assert!(rx.recv().unwrap().unwrap_err().contains("upload failed"));
        // The job goes on: periodic checkpoints again, which hold nothing.
        assert!(matches!(
            c.tick(2000)[..],
            [Command::Trigger { barrier: Barrier { checkpoint_id: 2, .. }, stop: false, .. }]
        ));
        let decline = TaskReport::Decline { task: 1, checkpoint_id: 2, reason: "upload failed".into() };
        assert!(c.on_report(decline, 2005).is_empty(), "nothing to resume after a checkpoint");
        // A stop-with-savepoint that times out resumes them too.
        let (tx, rx) = crossbeam_channel::bounded(1);
        c.request_savepoint(SavepointRequest::new(true, false, tx));
        assert!(matches!(
            c.tick(2010)[..],
            [Command::Trigger { barrier: Barrier { checkpoint_id: 3, .. }, stop: true, .. }]
        ));
        assert_eq!(c.tick(2010 + 1000), vec![Command::Resume { checkpoint_id: 3 }]);
        assert!(rx.recv().unwrap().unwrap_err().contains("timed out"));
        // A savepoint that does not stop holds nothing.
        let (tx, _rx) = crossbeam_channel::bounded(1);
        c.request_savepoint(SavepointRequest::new(false, false, tx));
        assert!(matches!(
            c.tick(5000)[..],
            [Command::Trigger { barrier: Barrier { checkpoint_id: 4, .. }, stop: false, .. }]
        ));
        assert!(c.tick(7000).iter().all(|c| !matches!(c, Command::Resume { .. })));
        let _ = std::fs::remove_dir_all(dir); // nothing was stored
    }

    #[test]
    fn stop_with_savepoint() {
        let (mut c, s, dir) = setup(1, 1);
        let (tx, rx) = crossbeam_channel::bounded(1);
        c.request_savepoint(SavepointRequest::new(true, true, tx));
        let cmds = c.tick(1);
        assert!(matches!(
            cmds[..],
            [Command::Trigger { barrier: Barrier { is_savepoint: true, .. }, drain: true, stop: true }]
        ));
        let (uid, h) = handle(&s, 1, 0);
        s.put("j/savepoints/sp-1/op-0.state", &s.get("j/chk-1/op-0.state").unwrap()).unwrap();
        // The same stop asked for again while it is under way (a retrying client) gets the same answer.
        let (again, again_rx) = crossbeam_channel::bounded(1);
        c.request_savepoint(SavepointRequest::new(true, false, again));
        assert!(c.on_report(TaskReport::Ack { task: 0, checkpoint_id: 1, states: vec![(uid, h)] }, 5).is_empty());
        assert_eq!(c.work_here(6), vec![Command::Complete { checkpoint_id: 1 }, Command::EndOfInput]);
        assert!(rx.recv().unwrap().unwrap().ends_with("j/savepoints/sp-1"));
        assert!(again_rx.recv().unwrap().unwrap().ends_with("j/savepoints/sp-1"));
        assert_eq!(RestoredSnapshot::latest(s.clone(), "j").unwrap().metadata.kind, SnapshotKind::Savepoint);
        assert!(c.tick(10_000).is_empty(), "stopping: no more checkpoints");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
