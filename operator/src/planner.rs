//! Observe -> plan -> act: the planner is the middle, a pure function from a
//! StreamJob (its spec and its status) and what the operator observed (the
//! JobManager's answers, the savepoint's fate) to the status to write and the
//! actions to take.
//!
//! The status is written *before* the actions run. An operation that spans
//! reconciliations (savepoint, verify, redeploy; or add TaskManagers,
//! rescale in place) is recorded first as `status.pendingOperation`
//! (write-ahead), so an operator restarted in the middle of one finds it
//! there and carries on from the step it reached.
//!
//! The parallelism rolled out is the job's *effective* one: `spec.parallelism`,
//! or in the autoscaler's `active` mode its per-vertex choice
//! (`planner/autoscaling.rs` says who owns it). Either way a change of it
//! goes through the same rescale: in place while the job runs
//! (`planner/rescale.rs`: the JobManager's rescale API on the TaskManagers
//! there are, more added first when their slots are too few, idle ones
//! removed after), by a savepoint and a redeploy otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use weir_api::rest::{JobDetails, JobState, RescaleRequest};

use crate::crd::{
    DesiredState, OperationKind, PendingOperation, SavepointReason, SavepointRef, StreamJob, StreamJobSpec,
    StreamJobStatus, UpgradeMode,
};
use crate::diff::{ChangeKind, SpecDiff, diff};
use crate::phase::Phase;
use crate::resources::{Deploy, Restore};
use crate::snapshots::DisposalScope;
use crate::validate::{FieldError, validate};

mod autoscaling;
mod rescale;

pub use autoscaling::{Evaluation, SAMPLE_EVERY, rate_window, sample_every};
pub use rescale::{SLOTS_LOOK_EVERY, TASKMANAGERS_WAIT};

/// How often an operation in flight (a savepoint or an in-place rescale the
/// JobManager is making) is looked at. The operation is done only once the
/// operator has seen it done, so this adds up to its own length to every
/// savepoint and rescale: an in-place rescale of 100 MB takes about a second
/// in the JobManager. A look is one request to the JobManager (and, once
/// the snapshot is complete, one to storage).
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// What the observer found (it only reads: the JobManager's REST API, storage).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The job as the JobManager reports it; `None` when it did not answer.
    pub job: Option<JobView>,
    /// The fate of the pending operation's savepoint, once one was triggered.
    pub savepoint: Option<SavepointView>,
    /// Whether `spec.initialSavepoint` is in storage, when the job is yet to be
    /// deployed from it (`None`: not looked at).
    pub initial_savepoint_found: Option<bool>,
    /// What is wrong with the job's pods (one line each, see
    /// [`crate::pods::problems`]), looked at when the JobManager did not answer.
    pub pod_problems: Vec<String>,
    /// How many of the job's TaskManager pods run (every container started,
    /// none being deleted), looked at only while an in-place rescale adds
    /// TaskManagers (see [`crate::pods::taskmanagers_started`]).
    pub taskmanagers_started: Option<i32>,
    /// What the autoscaler made of the job's metrics, when it looked: only
    /// while `spec.autoscaler.mode` is not `disabled` and the current
    /// deployment's job runs with no operation in flight. `None`: it did not
    /// look, and `job` says why (no answer, another deployment's, not running).
    pub autoscaler: Option<Evaluation>,
    /// Now, as an RFC 3339 time (for status fields).
    pub now: String,
}

/// What the planner needs of the JobManager's answer ([`JobDetails`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    pub state: JobState,
    pub parallelism: i32,
    /// The snapshot the job's current run started from.
    pub restored_from: Option<String>,
    /// Why it failed, when it has.
    pub failure: Option<String>,
    /// The latest completed checkpoint of its current run.
    pub last_checkpoint: Option<crate::crd::CheckpointRef>,
    /// The deployment the answering JobManager belongs to.
    pub deployment: Option<String>,
    /// Each vertex's parallelism now, by its uid.
    pub vertices: BTreeMap<String, i32>,
    /// The TaskManagers registered with the JobManager.
    pub taskmanagers: i32,
    /// Their slots, in all.
    pub slots: i32,
}

impl From<&JobDetails> for JobView {
    fn from(d: &JobDetails) -> JobView {
        let int = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        JobView {
            state: d.state,
            parallelism: int(d.parallelism.into()),
            restored_from: d.restored_from.clone(),
            failure: d.failure.clone(),
            last_checkpoint: d.checkpoints.latest.as_ref().and_then(checkpoint_ref),
            deployment: d.deployment.clone(),
            vertices: d.vertices.iter().map(|v| (v.id.clone(), int(v.parallelism.into()))).collect(),
            taskmanagers: int(d.taskmanagers.len() as u64),
            slots: int(d.taskmanagers.iter().map(|t| u64::from(t.slots)).sum()),
        }
    }
}

/// The JobManager's latest completed checkpoint as the status shows it; not a savepoint.
fn checkpoint_ref(latest: &weir_api::rest::CheckpointRef) -> Option<crate::crd::CheckpointRef> {
    if !latest.is_checkpoint() {
        return None;
    }
    let time = k8s_openapi::jiff::Timestamp::from_millisecond(latest.completed_at).ok()?;
    Some(crate::crd::CheckpointRef {
        id: i64::try_from(latest.id).ok()?,
        path: latest.path.clone(),
        time: time.to_string(),
    })
}

/// What became of a pending operation's trigger.
enum Fate {
    Waiting,
    Failed(String),
    /// Failed after its savepoint was taken and verified: the job runs on from `savepoint`.
    FailedAfterSavepoint {
        why: String,
        savepoint: String,
    },
    Completed {
        path: String,
        in_storage: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SavepointView {
    InProgress,
    /// Completed at `path`; `in_storage` says whether the observer found its `_metadata` there.
    Completed {
        path: String,
        in_storage: bool,
    },
    Failed(String),
    /// The operation (a rescale) failed after its savepoint was taken, and
    /// the job runs on from that savepoint: nothing is wrong with snapshots.
    FailedAfterSavepoint {
        error: String,
        savepoint: String,
    },
}

/// What the executor does, in order, after writing the planned status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply every object of the job's cluster for this deployment.
    Apply(Deploy),
    /// Remove the job's processes (its Deployments), keeping its configuration.
    Stop,
    /// Ask the JobManager for a savepoint; with `stop`, the job stops once it is taken.
    /// The executor records the trigger id in `pendingOperation`.
    TriggerSavepoint { stop: bool },
    /// Ask the JobManager to rescale the running job in place. The executor
    /// records the trigger id in `pendingOperation`, or the JobManager's
    /// refusal in its `inPlace.refused`.
    Rescale(RescaleRequest),
    /// Server-side apply the TaskManager Deployment, as deployed, at this
    /// many replicas (their pod template does not depend on the parallelism).
    ScaleTaskManagers(i32),
    /// Delete a savepoint (its `_metadata` first, then its files) from storage.
    DisposeSavepoint(String),
    /// A Kubernetes event on the StreamJob.
    Event { warning: bool, reason: String, note: String },
    /// Look again after this long.
    Requeue(Duration),
}

/// The planner's decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: StreamJobStatus,
    pub actions: Vec<Action>,
}

/// The spec last deployed is kept in the status (as JSON), for diffs.
pub fn deployed_spec(status: &StreamJobStatus) -> Option<StreamJobSpec> {
    status.deployed_spec.as_deref().and_then(|s| serde_json::from_str(s).ok())
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str, now: &str, generation: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            now.parse().unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        ),
    }
}

struct Planner<'a> {
    job: &'a StreamJob,
    observed: &'a Observed,
    generation: i64,
    status: StreamJobStatus,
    actions: Vec<Action>,
    /// The spec as it is rolled out: the user's, at the effective parallelism.
    spec: StreamJobSpec,
    /// The vertices' own effective parallelism, by uid (the autoscaler's choice).
    vertices: BTreeMap<String, i32>,
    /// Whether the autoscaler set the effective parallelism in this plan.
    autoscaler_rescale: bool,
    /// Whether the autoscaler is on (and the spec valid): the job is sampled often.
    autoscaling: bool,
}

impl<'a> Planner<'a> {
    fn new(job: &'a StreamJob, observed: &'a Observed) -> Planner<'a> {
        let mut p = Planner {
            job,
            observed,
            generation: job.metadata.generation.unwrap_or(0),
            status: job.status.clone().unwrap_or_default(),
            actions: Vec::new(),
            spec: job.spec.clone(),
            vertices: BTreeMap::new(),
            autoscaler_rescale: false,
            autoscaling: false,
        };
        p.settle_parallelism();
        p
    }

    /// The status every plan ends with: what the current deployment's
    /// JobManager says, as it says it (nothing when it did not answer).
    fn finish(mut self) -> Plan {
        self.status.observed_generation = Some(self.generation);
        let current = self.current_job().cloned();
        if let Some(c) = current.as_ref().and_then(|j| j.last_checkpoint.clone()) {
            self.status.last_checkpoint = Some(c);
        }
        self.status.job = current.as_ref().map(|j| crate::crd::JobStatus {
            id: self.job.name_any(),
            state: j.state.to_string(),
            parallelism: j.parallelism,
            start_time: None,
            restored_from: j.restored_from.clone(),
        });
        self.status.selector = Some(crate::resources::taskmanager_selector(self.job));
        self.sample_often();
        Plan { status: self.status, actions: self.actions }
    }

    fn invalid_spec(&mut self, e: &FieldError) {
        // Nothing running is touched for an invalid spec.
        self.set_condition("Ready", false, "InvalidSpec", &e.to_string());
        self.set_condition("Progressing", false, "InvalidSpec", &e.to_string());
        self.event(true, "InvalidSpec", &e.to_string());
    }
}

impl Planner<'_> {
    fn set_condition(&mut self, type_: &str, ok: bool, reason: &str, message: &str) {
        let c = condition(type_, ok, reason, message, &self.observed.now, self.generation);
        match self.status.conditions.iter_mut().find(|x| x.type_ == type_) {
            // The transition time moves only when the status does.
            Some(old) if old.status == c.status => {
                old.reason = c.reason;
                old.message = c.message;
                old.observed_generation = c.observed_generation;
            }
            Some(old) => *old = c,
            None => self.status.conditions.push(c),
        }
    }

    fn phase(&mut self, to: Phase) {
        let from = self.status.phase.unwrap_or(Phase::Deploying);
        // A refused transition is a planner bug: keep the phase and say so.
        match from.transition(to) {
            Ok(p) => self.status.phase = Some(p),
            Err(e) => self.event(true, "InternalError", &e.to_string()),
        }
    }

    /// The JobManager did not answer: `Ready` says so, with what the job's
    /// pods say is wrong with them (an event too, when that changed).
    fn unreachable(&mut self) {
        let problems = self.observed.pod_problems.join("; ");
        let message = match problems.as_str() {
            "" => "the JobManager did not answer".to_string(),
            _ => format!("the JobManager did not answer; {problems}"),
        };
        let before = self.status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone());
        if !problems.is_empty() && before.as_deref() != Some(&message) {
            self.event(true, "PodsFailing", &problems);
        }
        self.set_condition("Ready", false, "JobManagerUnreachable", &message);
    }

    fn event(&mut self, warning: bool, reason: &str, note: &str) {
        self.actions.push(Action::Event { warning, reason: reason.into(), note: note.into() });
    }

    fn deploy(&mut self, spec: &StreamJobSpec, restore: Restore) {
        let at = parallelism_in_words(spec.parallelism, &self.vertices);
        let note = format!("deploying at parallelism {at} {}", starting_point(&restore));
        // One name per rollout: the generation and the moment.
        let digits: String = self.observed.now.chars().filter(char::is_ascii_digit).take(14).collect();
        let id = format!("{}-{digits}", self.generation);
        self.status.deployed_from = Some(restore.to_string());
        let vertices = self.vertices.clone();
        self.actions.push(Action::Apply(Deploy { parallelism: spec.parallelism, vertices, restore, id: id.clone() }));
        self.status.deployment = Some(id);
        self.status.deployed_at = Some(self.observed.now.clone());
        self.remember_deployed(spec);
        // A rescale or upgrade keeps its phase until the job runs again.
        if !matches!(self.status.phase, Some(Phase::Rescaling | Phase::Upgrading | Phase::RollingBack)) {
            self.phase(Phase::Deploying);
        }
        self.set_condition("Progressing", true, "Deploying", &note);
        self.event(false, "Deploying", &note);
        // Until it runs, look often.
        self.actions.push(Action::Requeue(Duration::from_secs(1)));
    }

    /// `spec` (and the effective vertices' parallelism) as what runs now: what the next change is compared with.
    fn remember_deployed(&mut self, spec: &StreamJobSpec) {
        self.status.deployed_spec = Some(serde_json::to_string(spec).expect("a spec serializes"));
        self.status.deployed_vertex_parallelism = self.vertices.clone();
    }

    /// An operation of `kind` on the effective spec, as it starts now.
    fn new_operation(&self, kind: OperationKind, reason: Option<SavepointReason>) -> PendingOperation {
        PendingOperation {
            kind,
            generation: self.generation,
            target_parallelism: Some(self.spec.parallelism),
            target_vertex_parallelism: self.vertices.clone(),
            in_place: None,
            trigger_id: None,
            restore_from: None,
            reason,
            by_autoscaler: kind == OperationKind::Rescale && self.autoscaler_rescale,
            started_at: self.observed.now.clone(),
        }
    }

    /// Records `op` (write-ahead: the status is written before its first action) and reports it.
    fn begin(&mut self, op: PendingOperation, phase: Phase, note: &str) {
        let kind = op.kind;
        self.status.pending_operation = Some(op);
        self.phase(phase);
        self.set_condition("Progressing", true, &format!("{kind:?}"), note);
        self.event(false, &format!("{kind:?}"), note);
    }

    /// Starts an operation that needs a savepoint: recorded first, then triggered.
    fn start_savepoint_operation(
        &mut self,
        kind: OperationKind,
        reason: Option<SavepointReason>,
        phase: Phase,
        note: &str,
    ) {
        let op = self.new_operation(kind, reason);
        self.actions.push(Action::TriggerSavepoint { stop: op.stops_job() });
        self.begin(op, phase, note);
    }

    /// How long a savepoint may take before its operation is aborted.
    fn savepoint_timeout(&self) -> Duration {
        let spec = self.job.spec.savepoints.as_ref().and_then(|s| s.timeout.as_deref());
        spec.and_then(|t| weir_api::parse_duration(t).ok()).unwrap_or(Duration::from_secs(600))
    }

    /// Records a completed savepoint and disposes of the ones beyond the history
    /// limit, oldest first, never the newest nor the one the job runs from.
    fn record_savepoint(&mut self, sp: SavepointRef) {
        self.status.savepoint_history.push(sp.clone());
        self.status.last_savepoint = Some(sp);
        let limit = self.job.spec.savepoints.as_ref().map_or(5, |s| s.history_limit).max(1) as usize;
        let running_from = self.current_job().and_then(|j| j.restored_from.clone());
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        let newest = self.status.savepoint_history.len() - 1;
        let mut excess = self.status.savepoint_history.len().saturating_sub(limit);
        let mut kept = Vec::new();
        let scope = DisposalScope::of(self.job);
        for (i, sp) in std::mem::take(&mut self.status.savepoint_history).into_iter().enumerate() {
            let protected = i == newest || running_from.as_deref().is_some_and(|r| same(r, &sp.path));
            if excess > 0 && !protected {
                excess -= 1;
                match scope.check(&sp.path) {
                    Ok(()) => {
                        self.actions.push(Action::DisposeSavepoint(sp.path.clone()));
                        let note = format!("{} (beyond the history limit {limit})", sp.path);
                        self.event(false, "SavepointDisposed", &note);
                    }
                    // Not the job's own (an edited status, say): dropped from the history, left in storage.
                    Err(refused) => {
                        let note = format!("{refused}; dropped from the history, nothing deleted");
                        self.event(true, "SavepointDisposalRefused", &note);
                    }
                }
            } else {
                kept.push(sp);
            }
        }
        self.status.savepoint_history = kept;
    }

    /// Carries the pending operation one step further.
    fn continue_operation(&mut self, op: PendingOperation) {
        if op.in_place.is_some() {
            self.continue_in_place(op);
            return;
        }
        if op.trigger_id.is_none() {
            // Recorded but (perhaps) never triggered: trigger now.
            self.actions.push(Action::TriggerSavepoint { stop: op.stops_job() });
            return;
        }
        match self.fate(&op.started_at, "savepoint") {
            Fate::Waiting => {}
            Fate::Failed(why) | Fate::FailedAfterSavepoint { why, .. } => self.abort(&op, &why, true),
            Fate::Completed { path, in_storage: false } => {
                self.abort(&op, &format!("the savepoint was reported at {path} but is not in storage"), true)
            }
            Fate::Completed { path, in_storage: true } => self.savepoint_completed(op, path),
        }
    }

    /// What became of the pending operation's trigger (a savepoint's or a
    /// rescale's, `what`), triggered at `since`; while it is in progress, the
    /// plan looks again soon.
    fn fate(&mut self, since: &str, what: &str) -> Fate {
        self.fate_within(since, what, self.savepoint_timeout())
    }

    /// [`Self::fate`], given `timeout` from `since`.
    fn fate_within(&mut self, since: &str, what: &str, timeout: Duration) -> Fate {
        match &self.observed.savepoint {
            None | Some(SavepointView::InProgress) if elapsed(since, &self.observed.now) > timeout => {
                Fate::Failed(format!("the {what} did not complete within {timeout:?}"))
            }
            None | Some(SavepointView::InProgress) => {
                self.actions.push(Action::Requeue(FOLLOW_EVERY));
                Fate::Waiting
            }
            Some(SavepointView::Failed(e)) => Fate::Failed(format!("the {what} failed: {e}")),
            Some(SavepointView::FailedAfterSavepoint { error, savepoint }) => {
                Fate::FailedAfterSavepoint { why: format!("the {what} failed: {error}"), savepoint: savepoint.clone() }
            }
            Some(SavepointView::Completed { path, in_storage }) => {
                Fate::Completed { path: path.clone(), in_storage: *in_storage }
            }
        }
    }

    /// The operation's savepoint is taken and verified in storage: the operation goes on from it.
    fn savepoint_completed(&mut self, op: PendingOperation, path: String) {
        let reason = op.reason.unwrap_or(match op.kind {
            OperationKind::Rescale => SavepointReason::Rescale,
            OperationKind::Suspend => SavepointReason::Suspend,
            OperationKind::Delete => SavepointReason::Delete,
            OperationKind::Savepoint => SavepointReason::Manual,
            OperationKind::Upgrade | OperationKind::Restart => SavepointReason::Upgrade,
        });
        self.record_savepoint(SavepointRef { path: path.clone(), time: self.observed.now.clone(), reason });
        self.status.pending_operation = None;
        self.set_condition("SnapshotHealthy", true, "SavepointCompleted", &path);
        match op.kind {
            OperationKind::Savepoint => {
                self.phase(Phase::Running);
                let note = format!("{reason:?} savepoint at {path}");
                self.set_condition("Progressing", false, "SavepointCompleted", &note);
                self.event(false, "SavepointCompleted", &note);
            }
            OperationKind::Suspend => {
                self.actions.push(Action::Stop);
                let spec = self.spec.clone();
                self.remember_deployed(&spec);
                self.phase(Phase::Suspended);
                self.set_condition("Progressing", false, "Suspended", &format!("suspended at {path}"));
                self.set_condition("Ready", false, "Suspended", &format!("suspended at {path}"));
                self.event(false, "Suspended", &format!("stopped with a savepoint at {path}"));
            }
            _ => {
                let spec = self.spec.clone();
                self.deploy(&spec, Restore::Snapshot(path));
            }
        }
    }

    /// Aborts the pending operation `op`: the job was not stopped (a
    /// stop-with-savepoint that fails leaves it running), and the operation is
    /// not retried on its own. `snapshot`: its savepoint is what failed.
    fn abort(&mut self, op: &PendingOperation, why: &str, snapshot: bool) {
        self.status.pending_operation = None;
        if op.by_autoscaler {
            // Not the user's generation that failed: the autoscaler's choice.
            self.autoscaler_rescale_failed(why);
        } else if op.kind != OperationKind::Savepoint {
            self.status.failed_generation = Some(op.generation);
        }
        self.phase(Phase::Running);
        let note = format!("{:?} aborted, the job keeps running as deployed: {why}", op.kind);
        if snapshot {
            self.set_condition("SnapshotHealthy", false, "SavepointFailed", why);
        }
        self.set_condition("Progressing", false, "Aborted", &note);
        self.event(true, "Aborted", &note);
    }

    /// No operation in flight: compare what is deployed with what is asked for.
    fn reconcile(&mut self) {
        let spec = self.spec.clone();
        let Some(deployed) = deployed_spec(&self.status) else {
            self.first_deployment(&spec);
            return;
        };
        let mut d = diff(&deployed, &spec);
        if self.status.deployed_vertex_parallelism != self.vertices {
            // The autoscaler's per-vertex choice, not the spec's: a rescale all the same.
            d.fields.push("status.autoscaler.vertexParallelism");
            d.kind = d.kind.max(ChangeKind::Scale);
        }
        if self.status.failed_generation == Some(self.generation) && d.kind > ChangeKind::Ignore {
            // This generation's rollout was aborted; a new spec (or restartNonce) tries again.
            self.observe_running();
            return;
        }
        if deployed.state == DesiredState::Suspended && spec.state == DesiredState::Running {
            let from = self.status.last_savepoint.as_ref().map(|s| s.path.clone());
            self.deploy(&spec, from.map_or(Restore::LatestOrFresh, Restore::Snapshot));
            return;
        }
        if deployed.state == DesiredState::Suspended {
            // Suspended stays quiet (a change to a suspended job applies when it resumes).
            self.phase(Phase::Suspended);
            return;
        }
        if d.state == Some(DesiredState::Suspended) {
            let note = "suspending with a savepoint";
            self.start_savepoint_operation(OperationKind::Suspend, None, Phase::Savepointing, note);
            return;
        }
        match d.kind {
            ChangeKind::Ignore => self.without_rollout(&spec, &d),
            ChangeKind::Scale | ChangeKind::Upgrade => self.roll_out(&spec, &deployed, &d),
        }
    }

    /// Nothing deployed yet: deploy, from `spec.initialSavepoint` when there is one.
    fn first_deployment(&mut self, spec: &StreamJobSpec) {
        if spec.state == DesiredState::Suspended {
            self.phase(Phase::Suspended);
            return;
        }
        if let (Some(path), Some(false)) = (&spec.initial_savepoint, self.observed.initial_savepoint_found) {
            // Never a silent fresh start: wait for it (storage may be back later), and say so.
            let why = format!("spec.initialSavepoint: {path} has no _metadata in storage; nothing is deployed");
            self.set_condition("Ready", false, "SavepointNotFound", &why);
            self.set_condition("Progressing", false, "SavepointNotFound", &why);
            self.event(true, "SavepointNotFound", &why);
            self.actions.push(Action::Requeue(Duration::from_secs(30)));
            return;
        }
        let restore = spec.initial_savepoint.clone().map_or(Restore::Fresh, Restore::Snapshot);
        self.deploy(spec, restore);
    }

    /// A change the job's processes need not see: a restart or a savepoint
    /// asked for, or nothing at all.
    fn without_rollout(&mut self, spec: &StreamJobSpec, d: &SpecDiff) {
        if d.restart_requested {
            self.event(false, "Restarting", "restartNonce changed: restarting from the latest checkpoint");
            self.deploy(spec, Restore::LatestOrFresh);
        } else if d.savepoint_requested {
            self.status.deployed_spec = Some(serde_json::to_string(spec).expect("a spec serializes"));
            let note = "a savepoint was asked for (savepointTriggerNonce)";
            let reason = Some(SavepointReason::Manual);
            self.start_savepoint_operation(OperationKind::Savepoint, reason, Phase::Savepointing, note);
        } else {
            if !d.is_empty() {
                // Nothing to roll out: remember the new spec as deployed.
                self.status.deployed_spec = Some(serde_json::to_string(spec).expect("a spec serializes"));
            }
            self.observe_running();
        }
    }

    /// A change the job's processes see (its parallelism, or more): when the
    /// job runs, a rescale in place, an upgrade through a savepoint (as
    /// `upgradeMode` says); else at once.
    fn roll_out(&mut self, spec: &StreamJobSpec, deployed: &StreamJobSpec, d: &SpecDiff) {
        let running = self.current_job().is_some_and(|j| j.state == JobState::Running);
        if running && self.rollout_in_progress() {
            // The job runs: the rollout that brought it up is over, and the next starts from Running.
            self.phase(Phase::Running);
        } else if self.rollout_in_progress() {
            self.redeploy_before_running(spec, d);
            return;
        } else if !running && !self.not_running_for_real() {
            // A JobManager of a running job that missed one answer: look again before acting.
            self.unreachable();
            self.actions.push(Action::Requeue(Duration::from_secs(2)));
            return;
        } else if !running {
            self.preempt(spec, d);
            return;
        }
        match d.kind {
            ChangeKind::Scale => self.rescale_in_place(deployed),
            _ => self.upgrade(spec, d),
        }
    }

    /// A running job's upgrade, as `upgradeMode` says.
    fn upgrade(&mut self, spec: &StreamJobSpec, d: &SpecDiff) {
        match spec.upgrade_mode {
            UpgradeMode::Savepoint => {
                let note = format!("upgrading ({}) through a savepoint", d.fields.join(", "));
                self.start_savepoint_operation(OperationKind::Upgrade, None, Phase::Upgrading, &note);
            }
            UpgradeMode::LastState => {
                self.phase(Phase::Upgrading);
                self.deploy(spec, Restore::LatestOrFresh);
            }
            UpgradeMode::Stateless => {
                self.phase(Phase::Upgrading);
                self.deploy(spec, Restore::Fresh);
            }
        }
    }

    /// A job that does not run cannot take a savepoint: a new spec preempts
    /// it, from the latest checkpoint (a failing job must not block its fix);
    /// a parallelism change keeps the state whatever `upgradeMode` says.
    fn preempt(&mut self, spec: &StreamJobSpec, d: &SpecDiff) {
        let stateless = d.kind == ChangeKind::Upgrade && spec.upgrade_mode == UpgradeMode::Stateless;
        let restore = if stateless { Restore::Fresh } else { Restore::LatestOrFresh };
        let state = self.current_job().map_or("unreachable".to_string(), |j| j.state.to_string());
        let (fields, from) = (d.fields.join(", "), starting_point(&restore));
        let note = format!("the job is not running ({state}): rolling out {fields} {from}");
        self.event(true, "Preempted", &note);
        // From Running the rollout is a rescale or an upgrade; from Failed, a new deployment.
        if self.status.phase == Some(Phase::Running) {
            self.phase(if d.kind == ChangeKind::Scale { Phase::Rescaling } else { Phase::Upgrading });
        }
        self.deploy(spec, restore);
    }

    /// Whether the current deployment's job is yet to be seen running: a
    /// rollout (with no operation left in flight) brought it up, and it has
    /// not run since.
    fn rollout_in_progress(&self) -> bool {
        matches!(self.status.phase, Some(Phase::Deploying | Phase::Rescaling | Phase::Upgrading | Phase::RollingBack))
    }

    /// A change to a deployment whose job has not run yet (`kubectl scale`
    /// right after an apply, say) is rolled out at once, from what that
    /// deployment restores from, keeping the phase.
    ///
    /// Why not wait until it runs and take a savepoint, as for a running job?
    /// A deployment that never comes up (TaskManagers that find no room, a
    /// JobManager that cannot reach storage) would hold back the very change
    /// that fixes it, and a job that never ran has no state newer than what
    /// its deployment restores from: redeploying from that loses nothing.
    /// Nor from the latest checkpoint, as for a job that ran: a first
    /// deployment from `spec.initialSavepoint` would start without its state.
    /// Flink's operator, too, does not wait for an unhealthy job's savepoint.
    fn redeploy_before_running(&mut self, spec: &StreamJobSpec, d: &SpecDiff) {
        let stateless = d.kind == ChangeKind::Upgrade && spec.upgrade_mode == UpgradeMode::Stateless;
        let restore = match self.status.deployed_from.as_deref().map(str::parse::<Restore>) {
            _ if stateless => Restore::Fresh,
            Some(Ok(from)) => from,
            // A deployment recorded before `deployedFrom` was.
            _ => Restore::LatestOrFresh,
        };
        let (fields, from) = (d.fields.join(", "), starting_point(&restore));
        let note = format!("the job has not run yet: rolling out {fields} at once, {from}");
        self.event(false, "Redeploying", &note);
        self.deploy(spec, restore);
    }

    /// The job as the current deployment's JobManager reports it: right after a
    /// rollout the previous deployment's JobManager may still answer, and what
    /// it says is not about the job as deployed now.
    fn current_job(&self) -> Option<&JobView> {
        let current = self.status.deployment.as_deref();
        self.observed.job.as_ref().filter(|j| is_current_deployment(j.deployment.as_deref(), current))
    }

    /// Whether a job seen not running really is not (so a new spec may go out
    /// without a savepoint): its JobManager says so, or it has not answered since
    /// its deployment, or for a minute. A running job's JobManager that misses
    /// one answer is not enough.
    fn not_running_for_real(&self) -> bool {
        if self.current_job().is_some() {
            return true;
        }
        if self.status.phase != Some(Phase::Running) {
            return true;
        }
        let ready = self.status.conditions.iter().find(|c| c.type_ == "Ready");
        ready.is_some_and(|c| {
            c.reason == "JobManagerUnreachable"
                && elapsed(&c.last_transition_time.0.to_string(), &self.observed.now) > Duration::from_secs(60)
        })
    }

    /// When to look again at a job that does not run: soon while a rollout is
    /// bringing it up, less often otherwise.
    fn retry_after(&self) -> Duration {
        match self.status.phase {
            Some(Phase::Deploying | Phase::Rescaling | Phase::Upgrading | Phase::RollingBack) => Duration::from_secs(1),
            _ => Duration::from_secs(2),
        }
    }

    /// A periodic savepoint, when one is due; otherwise when to look again.
    fn periodic_savepoint(&mut self) {
        let Some(every) = self.job.spec.savepoints.as_ref().and_then(|s| s.periodic.as_deref()) else { return };
        let Ok(every) = weir_api::parse_duration(every) else { return };
        // Since the latest savepoint, or since the deployment when it is newer.
        let since = [self.status.last_savepoint.as_ref().map(|s| s.time.as_str()), self.status.deployed_at.as_deref()]
            .into_iter()
            .flatten()
            .map(|t| elapsed(t, &self.observed.now))
            .min();
        match since {
            Some(age) if age < every => self.actions.push(Action::Requeue((every - age).min(Duration::from_secs(60)))),
            _ => {
                let note = format!("periodic savepoint (every {every:?})");
                let reason = Some(SavepointReason::Periodic);
                self.start_savepoint_operation(OperationKind::Savepoint, reason, Phase::Savepointing, &note);
            }
        }
    }

    /// Steady state: the phase and Ready follow the JobManager's answer.
    fn observe_running(&mut self) {
        match self.current_job().cloned().as_ref() {
            Some(job) if job.state == JobState::Running => {
                self.phase(Phase::Running);
                let note = format!("running at parallelism {}", job.parallelism);
                self.set_condition("Ready", true, "Running", &note);
                // An aborted rollout stays reported as such until the spec changes again.
                if self.status.failed_generation != Some(self.generation) {
                    self.set_condition("Progressing", false, "Stable", &note);
                }
                self.set_condition("Degraded", false, "Running", &note);
                self.remove_idle_taskmanagers(job.taskmanagers);
                self.periodic_savepoint();
            }
            Some(job) if job.state == JobState::Failed => {
                let why = job.failure.clone().unwrap_or_else(|| "no reason given".into());
                let note = format!("the job failed: {why}");
                self.set_condition("Ready", false, "JobFailed", &note);
                self.set_condition("Degraded", true, "JobFailed", &note);
                if self.status.phase == Some(Phase::Failed) {
                    // Seen failed twice, 10 s apart: restart it from its latest checkpoint.
                    self.event(true, "Restarting", &format!("{note}; restarting from the latest checkpoint"));
                    let spec = self.spec.clone();
                    self.deploy(&spec, Restore::LatestOrFresh);
                } else {
                    self.phase(Phase::Failed);
                    self.event(true, "JobFailed", &note);
                    self.actions.push(Action::Requeue(Duration::from_secs(10)));
                }
            }
            Some(job) => {
                let note = format!("the JobManager reports the job as {}", job.state);
                self.set_condition("Ready", false, "JobNotRunning", &note);
                self.actions.push(Action::Requeue(self.retry_after()));
            }
            None => {
                let was = self.status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.clone());
                if was.as_deref() == Some("Running") {
                    // Once when it goes away, not on every retry.
                    self.event(true, "JobManagerUnreachable", "the JobManager of the running job stopped answering");
                }
                self.unreachable();
                self.actions.push(Action::Requeue(self.retry_after()));
            }
        }
    }
}

/// A parallelism with the vertices' own, in words: `4`, or `4 (2-window: 4, 1-source: 1)`.
fn parallelism_in_words(parallelism: i32, vertices: &BTreeMap<String, i32>) -> String {
    if vertices.is_empty() {
        return parallelism.to_string();
    }
    let each: Vec<String> = vertices.iter().map(|(uid, p)| format!("{uid}: {p}")).collect();
    format!("{parallelism} ({})", each.join(", "))
}

/// Where a deployment starts from, in words.
fn starting_point(restore: &Restore) -> String {
    match restore {
        Restore::Snapshot(from) => format!("from {from}"),
        Restore::LatestOrFresh => "from the latest checkpoint, if any".into(),
        Restore::Latest => "from the latest checkpoint".into(),
        Restore::Fresh => "without state".into(),
    }
}

/// Whether a JobManager of deployment `answering` speaks for the `current`
/// one; either unknown (an older JobManager, an older status): it does.
pub fn is_current_deployment(answering: Option<&str>, current: Option<&str>) -> bool {
    match (answering, current) {
        (Some(answering), Some(current)) => answering == current,
        _ => true,
    }
}

/// Time from `from` to `to` (RFC 3339); zero when either does not parse or `to` is earlier.
fn elapsed(from: &str, to: &str) -> Duration {
    use k8s_openapi::jiff::Timestamp;
    match (from.parse::<Timestamp>(), to.parse::<Timestamp>()) {
        (Ok(a), Ok(b)) if b > a => Duration::from_millis(b.duration_since(a).as_millis().max(0) as u64),
        _ => Duration::ZERO,
    }
}

/// Decides the status to write and the actions to take for `job`.
pub fn plan(job: &StreamJob, observed: &Observed) -> Plan {
    let mut p = Planner::new(job, observed);
    let valid = validate(&job.spec);
    if valid.is_ok() {
        // First: in active mode a decision sets the parallelism the rest rolls out.
        p.autoscale();
    }
    match (p.status.pending_operation.clone(), valid) {
        // An operation in flight finishes (or aborts) before anything new starts.
        (Some(op), _) => p.continue_operation(op),
        (None, Err(e)) => p.invalid_spec(&e),
        (None, Ok(())) => p.reconcile(),
    }
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::test_spec;

    pub(super) fn job(
        status: Option<StreamJobStatus>,
        generation: i64,
        change: impl FnOnce(&mut StreamJobSpec),
    ) -> StreamJob {
        let mut spec = test_spec();
        change(&mut spec);
        let mut j = StreamJob::new("orders", spec);
        j.metadata.generation = Some(generation);
        j.status = status;
        j
    }

    pub(super) fn observed(job: Option<(JobState, i32)>, savepoint: Option<SavepointView>) -> Observed {
        let view = |(state, parallelism)| JobView {
            state,
            parallelism,
            restored_from: None,
            failure: None,
            last_checkpoint: None,
            deployment: None,
            vertices: BTreeMap::new(),
            // The TaskManagers of the test spec (a slot each) at the job's parallelism.
            taskmanagers: parallelism,
            slots: parallelism,
        };
        Observed {
            job: job.map(view),
            savepoint,
            initial_savepoint_found: None,
            pod_problems: Vec::new(),
            taskmanagers_started: None,
            autoscaler: None,
            now: "2026-11-21T12:00:00Z".into(),
        }
    }

    pub(super) fn condition<'a>(s: &'a StreamJobStatus, type_: &str) -> (&'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    /// The deployment a plan applies: its parallelism and where it restores from.
    pub(super) fn applied(p: &Plan) -> Option<(i32, Restore)> {
        p.actions.iter().find_map(|a| match a {
            Action::Apply(d) => Some((d.parallelism, d.restore.clone())),
            _ => None,
        })
    }

    /// Runs the plan and pretends the executor did its part: a triggered savepoint (or rescale) gets an id.
    pub(super) fn step(job: &StreamJob, obs: &Observed) -> Plan {
        let mut plan = plan(job, obs);
        let refused =
            plan.actions.iter().find(|a| matches!(a, Action::Event { reason, .. } if reason == "InternalError"));
        assert!(refused.is_none(), "the plan asked for a refused phase change: {refused:?}");
        if plan.actions.iter().any(|a| matches!(a, Action::TriggerSavepoint { .. } | Action::Rescale(_)))
            && let Some(op) = &mut plan.status.pending_operation
        {
            op.trigger_id = Some("t1".into());
        }
        plan
    }

    #[test]
    fn the_jobmanagers_answer_becomes_the_view_with_its_latest_checkpoint_only() {
        let mut details: JobDetails = serde_json::from_value(serde_json::json!({
            "id": "orders", "name": "orders", "state": "failed", "parallelism": 3, "max_parallelism": 128,
            "start_time": 0, "failure": "a TaskManager was lost", "deployment": "2-20261121120000",
            "checkpoints": { "latest": { "id": 7, "path": "s3://weir/cp/orders/chk-7", "completed_at": 1_763_726_400_000_i64, "size_bytes": 10 } },
        }))
        .unwrap();
        let view = JobView::from(&details);
        assert_eq!(
            (view.state, view.parallelism, view.failure.as_deref()),
            (JobState::Failed, 3, Some("a TaskManager was lost"))
        );
        assert_eq!(view.deployment.as_deref(), Some("2-20261121120000"));
        let checkpoint = view.last_checkpoint.unwrap();
        assert_eq!((checkpoint.id, checkpoint.time.as_str()), (7, "2025-11-21T12:00:00Z"));
        // A savepoint is the latest snapshot: not a checkpoint for the status.
        details.checkpoints.latest.as_mut().unwrap().path = "s3://weir/cp/orders/savepoints/sp-8".into();
        assert_eq!(JobView::from(&details).last_checkpoint, None);
    }

    #[test]
    fn a_new_job_deploys_then_reports_ready() {
        let p = step(&job(None, 1, |_| {}), &observed(None, None));
        assert_eq!(applied(&p), Some((2, Restore::Fresh)));
        assert_eq!(p.status.phase, Some(Phase::Deploying));
        let p = step(&job(Some(p.status), 1, |_| {}), &observed(Some((JobState::Running, 2)), None));
        assert_eq!(p.status.phase, Some(Phase::Running));
        assert_eq!(condition(&p.status, "Ready"), ("True", "Running"));
        assert!(p.actions.is_empty(), "{:?}", p.actions);
    }

    /// `o` with the job's TaskManagers registering `slots` slots in all (a slot each).
    pub(super) fn slots(mut o: Observed, slots: i32) -> Observed {
        if let Some(j) = &mut o.job {
            (j.taskmanagers, j.slots) = (slots, slots);
        }
        o
    }

    /// `o` with the job's TaskManager one of `slots` slots.
    pub(super) fn one_taskmanager(mut o: Observed, slots: i32) -> Observed {
        if let Some(j) = &mut o.job {
            (j.taskmanagers, j.slots) = (1, slots);
        }
        o
    }

    /// `status` once the executor recorded the JobManager's refusal (`code`) of the rescale in place.
    pub(super) fn refused(mut status: StreamJobStatus, code: i32) -> StreamJobStatus {
        let op = status.pending_operation.as_mut().expect("a pending operation");
        op.trigger_id = None;
        let in_place = op.in_place.as_mut().expect("a rescale in place");
        in_place.refused = Some(crate::crd::RescaleRefusal { status: code, message: "no such route".into() });
        status
    }

    /// A JobManager without the rescale API (404): the rescale goes through a
    /// stop-with-savepoint, verified in storage, and a redeploy from it.
    #[test]
    fn a_rescale_the_jobmanager_cannot_make_in_place_goes_through_a_verified_savepoint_and_a_redeploy() {
        // A TaskManager of 4 slots runs the job at 2: room for 3.
        let four_slots = |s: &mut StreamJobSpec| s.task_manager.slots = 4;
        let scaled = |status| job(Some(status), 2, move |s| (four_slots(s), s.parallelism = 3).1);
        let up = || one_taskmanager(observed(Some((JobState::Running, 2)), None), 4);
        // 1. In place first: recorded (write-ahead) and asked for.
        let p = step(&scaled(running(four_slots)), &up());
        assert!(p.actions.contains(&Action::Rescale(RescaleRequest::to(3))), "{:?}", p.actions);
        // 2. Refused as unknown: the savepoint way, recorded and triggered.
        let p = step(&scaled(refused(p.status, 404)), &up());
        assert_eq!(p.status.phase, Some(Phase::Rescaling));
        let op = p.status.pending_operation.clone().unwrap();
        assert_eq!((op.kind, op.target_parallelism, op.generation), (OperationKind::Rescale, Some(3), 2));
        assert_eq!(op.in_place, None);
        assert!(p.actions.contains(&Action::TriggerSavepoint { stop: true }));
        // 3. A restarted operator finds the operation and waits for the savepoint.
        let p = step(&scaled(p.status), &observed(Some((JobState::Running, 2)), Some(SavepointView::InProgress)));
        assert_eq!(p.actions, vec![Action::Requeue(FOLLOW_EVERY)]);
        // 4. Completed and found in storage: redeploy at 3 from it.
        let sp = "s3://weir/checkpoints/j/savepoints/sp-9".to_string();
        let done = Some(SavepointView::Completed { path: sp.clone(), in_storage: true });
        let p = step(&scaled(p.status), &observed(None, done));
        assert_eq!(applied(&p), Some((3, Restore::Snapshot(sp.clone()))));
        assert_eq!(p.status.phase, Some(Phase::Rescaling), "rescaling until the job runs at 3");
        assert_eq!(p.status.pending_operation, None);
        assert_eq!(p.status.last_savepoint.as_ref().unwrap().reason, SavepointReason::Rescale);
        // 5. Running at the new parallelism.
        let p = step(&scaled(p.status), &observed(Some((JobState::Running, 3)), None));
        assert_eq!(p.status.phase, Some(Phase::Running));
        assert_eq!(deployed_spec(&p.status).unwrap().parallelism, 3);
    }

    /// The bug: `kubectl scale` on a job still deploying gave the event
    /// `InternalError: a StreamJob cannot go from Deploying to Rescaling`
    /// (`step` fails on any refused phase change).
    #[test]
    fn a_parallelism_change_while_deploying_redeploys_at_once_from_what_the_deployment_started_from() {
        let sp = "s3://weir/savepoints/sp-1".to_string();
        let from_savepoint = |s: &mut StreamJobSpec| s.initial_savepoint = Some("s3://weir/savepoints/sp-1".into());
        type Start = fn(&mut StreamJobSpec);
        let cases: [(Start, Restore); 2] = [(|_| {}, Restore::Fresh), (from_savepoint, Restore::Snapshot(sp.clone()))];
        for (start, restore) in cases {
            let deploying = step(&job(None, 1, start), &observed(None, None)).status;
            assert_eq!(deploying.phase, Some(Phase::Deploying));
            let scaled = |status| {
                job(Some(status), 2, |s| {
                    start(s);
                    s.parallelism = 4;
                })
            };
            // Its JobManager not answering yet, or answering that the job waits for slots.
            for answer in [None, Some((JobState::Created, 2))] {
                let p = step(&scaled(deploying.clone()), &observed(answer, None));
                assert_eq!(applied(&p), Some((4, restore.clone())), "from what the deployment started from");
                assert_eq!((p.status.phase, &p.status.pending_operation), (Some(Phase::Deploying), &None));
                assert!(p.actions.iter().any(|a| matches!(a, Action::Event { reason, .. } if reason == "Redeploying")));
            }
            // Seen running in the same look as the change: the rollout is over, and the rescale is made in place.
            let p = step(&scaled(deploying), &observed(Some((JobState::Running, 2)), None));
            assert_eq!(p.status.phase, Some(Phase::Rescaling));
            assert_eq!(
                p.status.pending_operation.map(|o| (o.kind, o.target_parallelism)),
                Some((OperationKind::Rescale, Some(4)))
            );
        }
    }

    #[test]
    fn a_parallelism_change_before_a_rescaled_job_runs_keeps_the_rescales_savepoint() {
        let four_slots = |s: &mut StreamJobSpec| s.task_manager.slots = 4;
        let scaled = |status, generation, parallelism| {
            job(Some(status), generation, move |s| (four_slots(s), s.parallelism = parallelism).1)
        };
        // A JobManager without the rescale API: a savepoint, then a redeploy at 3 from it.
        let up = one_taskmanager(observed(Some((JobState::Running, 2)), None), 4);
        let p = step(&scaled(running(four_slots), 2, 3), &up);
        let p = step(&scaled(refused(p.status, 404), 2, 3), &up);
        let sp = "s3://weir/checkpoints/j/savepoints/sp-9".to_string();
        let done = Some(SavepointView::Completed { path: sp.clone(), in_storage: true });
        let p = step(&scaled(p.status, 2, 3), &observed(None, done));
        assert_eq!((applied(&p), p.status.phase), (Some((3, Restore::Snapshot(sp.clone()))), Some(Phase::Rescaling)));
        // Scaled again before the job runs at 3: at once, from the same savepoint.
        let p = step(&scaled(p.status, 3, 5), &observed(None, None));
        assert_eq!((applied(&p), p.status.phase), (Some((5, Restore::Snapshot(sp))), Some(Phase::Rescaling)));
    }

    #[test]
    fn a_parallelism_change_of_a_failed_job_redeploys_from_its_latest_checkpoint() {
        let p = step(&job(Some(running(|_| {})), 1, |_| {}), &observed(Some((JobState::Failed, 2)), None));
        assert_eq!(p.status.phase, Some(Phase::Failed));
        let p = step(&job(Some(p.status), 2, |s| s.parallelism = 4), &observed(Some((JobState::Failed, 2)), None));
        assert_eq!((applied(&p), p.status.phase), (Some((4, Restore::LatestOrFresh)), Some(Phase::Deploying)));
    }

    #[test]
    fn a_failed_or_missing_savepoint_aborts_and_leaves_the_old_job_running() {
        let deployed = step(&job(None, 1, |_| {}), &observed(None, None)).status;
        let running = step(&job(Some(deployed), 1, |_| {}), &observed(Some((JobState::Running, 2)), None)).status;
        let upgraded = |status| job(Some(status), 2, |s| s.image = "weir:2".into());
        for fate in [
            SavepointView::Failed("storage unreachable".into()),
            SavepointView::Completed { path: "s3://weir/x".into(), in_storage: false },
        ] {
            let p = step(&upgraded(running.clone()), &observed(Some((JobState::Running, 2)), None));
            assert_eq!(p.status.phase, Some(Phase::Upgrading));
            let p = step(&upgraded(p.status), &observed(Some((JobState::Running, 2)), Some(fate)));
            assert!(!p.actions.iter().any(|a| matches!(a, Action::Apply(_) | Action::Stop)), "{:?}", p.actions);
            assert_eq!(p.status.phase, Some(Phase::Running));
            assert_eq!(condition(&p.status, "SnapshotHealthy"), ("False", "SavepointFailed"));
            assert!(p.actions.iter().any(|a| matches!(a, Action::Event { warning: true, .. })));
            // The same generation is not retried on its own...
            let again = step(&upgraded(p.status.clone()), &observed(Some((JobState::Running, 2)), None));
            assert!(again.status.pending_operation.is_none());
            assert_eq!(condition(&again.status, "Progressing"), ("False", "Aborted"), "the abort stays reported");
            // ...a new spec is.
            let newer = job(Some(p.status), 3, |s| s.image = "weir:3".into());
            assert!(step(&newer, &observed(Some((JobState::Running, 2)), None)).status.pending_operation.is_some());
        }
    }

    #[test]
    fn the_previous_deployments_jobmanager_answering_is_not_the_new_job_running() {
        let status = running(|_| {});
        let p = step(
            &job(Some(status), 2, |s| s.upgrade_mode = UpgradeMode::LastState),
            &observed(Some((JobState::Running, 2)), None),
        );
        let p = step(
            &job(Some(p.status), 3, |s| {
                s.upgrade_mode = UpgradeMode::LastState;
                s.image = "weir:2".into();
            }),
            &observed(Some((JobState::Running, 2)), None),
        );
        assert_eq!(p.status.phase, Some(Phase::Upgrading));
        let upgraded = |status| {
            job(Some(status), 3, |s| {
                s.upgrade_mode = UpgradeMode::LastState;
                s.image = "weir:2".into();
            })
        };
        let mut old = observed(Some((JobState::Running, 2)), None);
        old.job.as_mut().unwrap().deployment = Some("1-20261121120000".into());
        let p = step(&upgraded(p.status), &old);
        assert_eq!((p.status.phase, p.status.job.clone()), (Some(Phase::Upgrading), None), "still upgrading");
        let mut new = observed(Some((JobState::Running, 2)), None);
        new.job.as_mut().unwrap().deployment = p.status.deployment.clone();
        assert_eq!(step(&upgraded(p.status), &new).status.phase, Some(Phase::Running));
    }

    #[test]
    fn last_state_and_stateless_upgrades_redeploy_at_once() {
        let deployed = step(&job(None, 1, |_| {}), &observed(None, None)).status;
        let running = step(&job(Some(deployed), 1, |_| {}), &observed(Some((JobState::Running, 2)), None)).status;
        for (mode, from) in [(UpgradeMode::LastState, Restore::LatestOrFresh), (UpgradeMode::Stateless, Restore::Fresh)]
        {
            let upgraded = |status| {
                job(Some(status), 2, |s| {
                    s.image = "weir:2".into();
                    s.upgrade_mode = mode;
                })
            };
            let p = step(&upgraded(running.clone()), &observed(Some((JobState::Running, 2)), None));
            assert_eq!(applied(&p), Some((2, from)));
            assert_eq!(p.status.phase, Some(Phase::Upgrading));
            let p = step(&upgraded(p.status), &observed(Some((JobState::Running, 2)), None));
            assert_eq!(p.status.phase, Some(Phase::Running));
        }
    }

    #[test]
    fn suspend_stops_with_a_savepoint_and_resume_restores_it() {
        let deployed = step(&job(None, 1, |_| {}), &observed(None, None)).status;
        let running = step(&job(Some(deployed), 1, |_| {}), &observed(Some((JobState::Running, 2)), None)).status;
        let suspend = |status| job(Some(status), 2, |s| s.state = DesiredState::Suspended);
        let p = step(&suspend(running), &observed(Some((JobState::Running, 2)), None));
        assert_eq!(p.status.pending_operation.as_ref().unwrap().kind, OperationKind::Suspend);
        let sp = "s3://weir/sp-1".to_string();
        let p = step(
            &suspend(p.status),
            &observed(None, Some(SavepointView::Completed { path: sp.clone(), in_storage: true })),
        );
        assert_eq!(p.actions[0], Action::Stop);
        assert_eq!(p.status.phase, Some(Phase::Suspended));
        // Suspended stays quiet...
        let suspended = p.status;
        let p = step(&suspend(suspended.clone()), &observed(None, None));
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.status.phase, Some(Phase::Suspended));
        // ...until running again: from the savepoint.
        let p = step(&job(Some(suspended), 3, |_| {}), &observed(None, None));
        assert_eq!(applied(&p), Some((2, Restore::Snapshot(sp))));
    }

    #[test]
    fn an_invalid_spec_sets_a_condition_and_touches_nothing() {
        let deployed = step(&job(None, 1, |_| {}), &observed(None, None)).status;
        let p = step(&job(Some(deployed), 2, |s| s.parallelism = 500), &observed(Some((JobState::Running, 2)), None));
        assert_eq!(condition(&p.status, "Ready"), ("False", "InvalidSpec"));
        let msg = &p.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap().message;
        assert!(msg.contains("spec.parallelism"), "{msg}");
        assert!(p.actions.iter().all(|a| matches!(a, Action::Event { warning: true, .. })), "{:?}", p.actions);
        assert_eq!(p.status.observed_generation, Some(2));
    }

    /// A job deployed at generation 1 and running, as the planner leaves it.
    pub(super) fn running(change: impl Fn(&mut StreamJobSpec) + Copy) -> StreamJobStatus {
        let deployed = step(&job(None, 1, change), &observed(None, None)).status;
        step(&job(Some(deployed), 1, change), &observed(Some((JobState::Running, 2)), None)).status
    }

    pub(super) fn at(mut o: Observed, now: &str) -> Observed {
        o.now = now.into();
        o
    }

    #[test]
    fn the_nonces_take_a_savepoint_without_stopping_and_restart_from_the_latest_checkpoint() {
        let status = running(|_| {});
        let asked = |status| job(Some(status), 2, |s| s.savepoint_trigger_nonce = 1);
        let p = step(&asked(status.clone()), &observed(Some((JobState::Running, 2)), None));
        assert!(p.actions.contains(&Action::TriggerSavepoint { stop: false }), "{:?}", p.actions);
        assert_eq!(p.status.phase, Some(Phase::Savepointing));
        let sp = "s3://weir/checkpoints/j/savepoints/sp-4".to_string();
        let done = Some(SavepointView::Completed { path: sp.clone(), in_storage: true });
        let p = step(&asked(p.status), &observed(Some((JobState::Running, 2)), done));
        assert_eq!(applied(&p), None, "the job keeps running: {:?}", p.actions);
        assert_eq!(p.status.phase, Some(Phase::Running));
        assert_eq!(
            p.status.last_savepoint.as_ref().map(|s| (s.path.as_str(), s.reason)),
            Some((sp.as_str(), SavepointReason::Manual))
        );
        let p = step(&asked(p.status), &observed(Some((JobState::Running, 2)), None));
        assert!(p.status.pending_operation.is_none(), "the same nonce is not taken again");

        let p = step(&job(Some(status), 2, |s| s.restart_nonce = 1), &observed(Some((JobState::Running, 2)), None));
        assert_eq!(applied(&p), Some((2, Restore::LatestOrFresh)));
    }

    #[test]
    fn periodic_savepoints_keep_the_history_limit_and_never_dispose_of_what_the_job_runs_from() {
        let periodic = |s: &mut StreamJobSpec| {
            s.savepoints = Some(crate::crd::SavepointsSpec {
                dir: None,
                periodic: Some("1h".into()),
                history_limit: 2,
                timeout: None,
            })
        };
        let mut status = running(periodic);
        let base = "s3://weir/checkpoints/orders/savepoints/sp-";
        // The job runs from the first savepoint taken: it stays however old.
        let mut running_from = observed(Some((JobState::Running, 2)), None);
        running_from.job.as_mut().unwrap().restored_from = Some(format!("{base}1/"));
        let mut disposed = Vec::new();
        for (i, hour) in [(1, 13), (2, 14), (3, 15), (4, 16)] {
            let now = format!("2026-11-21T{hour}:00:00Z");
            // Not yet due half an hour later.
            let early = step(
                &job(Some(status.clone()), 1, periodic),
                &at(running_from.clone(), &format!("2026-11-21T{}:30:00Z", hour - 1)),
            );
            assert!(early.status.pending_operation.is_none() || i == 1, "{i}: {:?}", early.status.pending_operation);
            let p = step(&job(Some(status), 1, periodic), &at(running_from.clone(), &now));
            assert!(p.actions.contains(&Action::TriggerSavepoint { stop: false }), "{i}: {:?}", p.actions);
            assert_eq!(p.status.pending_operation.as_ref().unwrap().reason, Some(SavepointReason::Periodic));
            let mut done = running_from.clone();
            done.savepoint = Some(SavepointView::Completed { path: format!("{base}{i}"), in_storage: true });
            let p = step(&job(Some(p.status), 1, periodic), &at(done, &now));
            disposed.extend(p.actions.iter().filter_map(|a| match a {
                Action::DisposeSavepoint(path) => Some(path.clone()),
                _ => None,
            }));
            status = p.status;
        }
        assert_eq!(disposed, [format!("{base}2"), format!("{base}3")]);
        let kept: Vec<&str> = status.savepoint_history.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(kept, [format!("{base}1"), format!("{base}4")]);
    }

    #[test]
    fn savepoints_outside_the_jobs_own_directories_are_never_disposed_of() {
        let periodic = |s: &mut StreamJobSpec| {
            s.savepoints = Some(crate::crd::SavepointsSpec {
                dir: None,
                periodic: Some("1h".into()),
                history_limit: 1,
                timeout: None,
            })
        };
        let mut status = running(periodic);
        // The history, edited: another bucket, a system path, a path that climbs out.
        let edited = [
            "s3://other-bucket/prod/savepoints/sp-1",
            "/etc",
            "s3://weir/checkpoints/orders/savepoints/../../payments",
        ];
        let time = "2026-11-21T12:00:00Z".to_string();
        status.savepoint_history = edited
            .iter()
            .map(|p| SavepointRef { path: p.to_string(), time: time.clone(), reason: SavepointReason::Periodic })
            .collect();
        let now = "2026-11-21T13:00:00Z";
        let p = step(&job(Some(status), 1, periodic), &at(observed(Some((JobState::Running, 2)), None), now));
        assert!(p.actions.contains(&Action::TriggerSavepoint { stop: false }), "{:?}", p.actions);
        let mut done = observed(Some((JobState::Running, 2)), None);
        let own = "s3://weir/checkpoints/orders/savepoints/sp-9";
        done.savepoint = Some(SavepointView::Completed { path: own.into(), in_storage: true });
        let p = step(&job(Some(p.status), 1, periodic), &at(done, now));
        assert!(!p.actions.iter().any(|a| matches!(a, Action::DisposeSavepoint(_))), "{:?}", p.actions);
        let refused: Vec<&str> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Event { warning: true, reason, note } if reason == "SavepointDisposalRefused" => {
                    Some(note.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(refused.len(), 3, "{:?}", p.actions);
        for (note, path) in refused.iter().zip(edited) {
            assert!(note.contains(path) && note.contains("nothing deleted"), "{note}");
        }
        let kept: Vec<&str> = p.status.savepoint_history.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(kept, [own]);
    }

    #[test]
    fn a_failed_job_restarts_from_its_latest_checkpoint_after_a_pause() {
        let status = running(|_| {});
        let p = step(&job(Some(status), 1, |_| {}), &observed(Some((JobState::Failed, 2)), None));
        assert_eq!((p.status.phase, applied(&p)), (Some(Phase::Failed), None));
        assert_eq!(condition(&p.status, "Degraded"), ("True", "JobFailed"));
        assert!(p.actions.contains(&Action::Requeue(Duration::from_secs(10))));
        let p = step(&job(Some(p.status), 1, |_| {}), &observed(Some((JobState::Failed, 2)), None));
        assert_eq!(applied(&p), Some((2, Restore::LatestOrFresh)));
    }

    #[test]
    fn a_new_spec_preempts_a_job_that_does_not_run_and_a_slow_savepoint_times_out() {
        let status = running(|_| {});
        let p = step(
            &job(Some(status.clone()), 2, |s| s.parallelism = 4),
            &observed(Some((JobState::Restarting, 2)), None),
        );
        assert_eq!(applied(&p), Some((4, Restore::LatestOrFresh)), "no savepoint from a job that does not run");
        // A running job's JobManager that misses one answer: nothing yet...
        let p = step(&job(Some(status.clone()), 2, |s| s.parallelism = 4), &observed(None, None));
        assert_eq!((applied(&p), p.status.pending_operation.is_some()), (None, false), "{:?}", p.actions);
        // ...a minute without an answer: the new spec goes out from the latest checkpoint.
        let p = step(&job(Some(p.status), 2, |s| s.parallelism = 4), &at(observed(None, None), "2026-11-21T12:01:30Z"));
        assert_eq!(applied(&p), Some((4, Restore::LatestOrFresh)));

        // An upgrade's savepoint that takes longer than `savepoints.timeout` (10 minutes): aborted.
        let upgraded = |s: &mut StreamJobSpec| s.image = "weir:2".into();
        let p = step(&job(Some(status), 2, upgraded), &observed(Some((JobState::Running, 2)), None));
        assert!(p.status.pending_operation.is_some());
        let late = at(observed(Some((JobState::Running, 2)), Some(SavepointView::InProgress)), "2026-11-21T12:11:00Z");
        let p = step(&job(Some(p.status), 2, upgraded), &late);
        assert_eq!((p.status.phase, applied(&p)), (Some(Phase::Running), None));
        assert_eq!(condition(&p.status, "Progressing"), ("False", "Aborted"));
        let msg = &p.status.conditions.iter().find(|c| c.type_ == "SnapshotHealthy").unwrap().message;
        assert!(msg.contains("did not complete within"), "{msg}");
    }

    #[test]
    fn an_initial_savepoint_missing_from_storage_deploys_nothing_and_says_so() {
        let from = |s: &mut StreamJobSpec| s.initial_savepoint = Some("s3://weir/savepoints/sp-1".into());
        let mut missing = observed(None, None);
        missing.initial_savepoint_found = Some(false);
        let p = step(&job(None, 1, from), &missing);
        assert_eq!(applied(&p), None);
        assert_eq!(condition(&p.status, "Ready"), ("False", "SavepointNotFound"));
        assert!(p.actions.contains(&Action::Requeue(Duration::from_secs(30))), "retried later: {:?}", p.actions);
        missing.initial_savepoint_found = Some(true);
        let p = step(&job(Some(p.status), 1, from), &missing);
        assert_eq!(applied(&p), Some((2, Restore::Snapshot("s3://weir/savepoints/sp-1".into()))));
    }
}
