//! Rescaling a running job in place: the JobManager's rescale API
//! (`POST /v1/jobs/{job}/rescale`) stops the job with a savepoint, verifies
//! it in storage (size and CRC of every file) and restarts the tasks from it
//! at the new parallelism on the TaskManagers it has. No pod is recreated:
//! the JobManager Deployment is left as it is (a JobManager restarted within
//! its deployment resumes at the parallelism of the deployment's latest
//! checkpoint, whatever its `--parallelism` says), and only the TaskManager
//! Deployment's replicas change.
//!
//! # The steps, each written to `status.pendingOperation.inPlace` before it acts
//!
//! 1. `add-taskmanagers`, when the registered TaskManagers' slots are fewer
//!    than the new parallelism needs (its largest vertex's: vertices share
//!    slots): the TaskManager Deployment is raised (applied again on every
//!    look, in case an operator stopped before it was), until the added
//!    TaskManagers' containers run or the JobManager reports their slots; at
//!    most [`TASKMANAGERS_WAIT`], then the rescale is aborted and the
//!    Deployment lowered back. The job runs on meanwhile: a pod that takes
//!    minutes (an image pulled, a node added) costs no downtime. Slots count
//!    only on as many TaskManagers as the Deployment has (any beyond are on
//!    their way out).
//! 2. `rescale`: the request is sent (again, by an operator that restarts
//!    before its trigger id was recorded), then its trigger followed as a
//!    savepoint's is, until `completed` (the job runs at the new parallelism)
//!    or `failed`, within `spec.savepoints.timeout`. A rescale that added
//!    TaskManagers lets the JobManager wait [`REGISTRATION_WAIT`] for their
//!    slots (`await_slots_ms`): it is asked for as soon as their containers
//!    run, and the savepoint is taken while they register, not after. Slots
//!    that do not come in time leave the job running on at its former
//!    parallelism from the savepoint; the rescale fails, and the Deployment
//!    is lowered back.
//! 3. Completed: the savepoint is recorded (`reason: rescale`), the new
//!    parallelism becomes the deployed one (`deployedSpec`,
//!    `deployedVertexParallelism`; the deployment keeps its id), and the
//!    TaskManagers beyond what it needs, idle since the JobManager places
//!    subtasks on the fewest, earliest registered first, are removed. That
//!    last step needs no record: on every look at a running job, TaskManagers
//!    registered beyond what the deployed parallelism needs are removed, so an
//!    operator that stopped before it lowered them does it on its next look.
//!
//! A job that no longer runs while TaskManagers are added, or when the
//! JobManager refuses the rescale, is redeployed instead: nothing was done
//! to it yet.
//!
//! A failure or a refusal aborts as a failed savepoint does (the job runs on;
//! the autoscaler's choice goes back and counts against its budget; a user's
//! generation is marked failed and not retried on its own).
//!
//! What is not in place: a job that does not run (nothing to stop with a
//! savepoint: redeployed), a change beyond the parallelism (an upgrade), and a
//! JobManager that does not know the rescale API. That last one is told by
//! its refusal: any status but 409 (Conflict, which a JobManager that
//! understood the request answers) means it did not understand it. A rescale
//! to one parallelism then goes the savepoint-and-redeploy way, which every
//! JobManager has; one with per-vertex parallelism is aborted instead, since
//! a JobManager that old would not know `--vertex-parallelism` either (the
//! redeployed job would not start). A JobManager that knows the rescale API
//! but not `await_slots_ms` refuses a rescale that adds TaskManagers the same
//! way (an unknown field): redeployed too.

use std::time::Duration;

use weir_api::rest::{JobState, RescaleRequest};

use super::{Action, FOLLOW_EVERY, Fate, Planner, deployed_spec, elapsed, parallelism_in_words};
use crate::crd::{
    InPlaceRescale, InPlaceStep, OperationKind, PendingOperation, RescaleRefusal, SavepointReason, SavepointRef,
    StreamJobSpec,
};
use crate::phase::Phase;
use crate::resources::{slots_needed, taskmanagers};

/// How long added TaskManagers may take to run (or register their slots)
/// before the rescale is aborted.
pub const TASKMANAGERS_WAIT: Duration = Duration::from_secs(300);

/// How long the JobManager waits, the job stopped, for the slots of added
/// TaskManagers whose containers run (`await_slots_ms`): a process that
/// started registers within a second; one that does not in half a minute
/// will not, and the job runs on as it was.
pub const REGISTRATION_WAIT: Duration = Duration::from_secs(30);

/// How often the JobManager is asked for its slots (and the pods listed)
/// while added TaskManagers start: the rescale waits for this look, so it is
/// short (a look is one request to the JobManager, a list of the job's pods
/// and an unchanged apply of the Deployment).
pub const SLOTS_LOOK_EVERY: Duration = FOLLOW_EVERY;

/// The status of the refusal of a JobManager that understood the rescale (and cannot make it).
const CONFLICT: i32 = 409;

impl Planner<'_> {
    /// A running job's rescale to the effective parallelism, in place:
    /// recorded with its first step, which the same plan acts on.
    pub(super) fn rescale_in_place(&mut self, deployed: &StreamJobSpec) {
        let per_taskmanager = deployed.task_manager.slots;
        let slots = slots_needed(self.spec.parallelism, &self.vertices);
        let before =
            taskmanagers(slots_needed(deployed.parallelism, &self.status.deployed_vertex_parallelism), per_taskmanager);
        let registered = self.registered_slots(before, per_taskmanager);
        let (step, raised) = if registered >= slots {
            (InPlaceStep::Rescale, before)
        } else {
            (InPlaceStep::AddTaskManagers, before.max(taskmanagers(slots, per_taskmanager)))
        };
        let mut op = self.new_operation(OperationKind::Rescale, None);
        op.in_place = Some(InPlaceRescale {
            step,
            since: self.observed.now.clone(),
            slots,
            taskmanagers_before: before,
            taskmanagers: raised,
            refused: None,
        });
        let by = if self.autoscaler_rescale { "the autoscaler: " } else { "" };
        let from = parallelism_in_words(deployed.parallelism, &self.status.deployed_vertex_parallelism);
        let to = parallelism_in_words(self.spec.parallelism, &self.vertices);
        let first = match step {
            InPlaceStep::Rescale => String::new(),
            InPlaceStep::AddTaskManagers => {
                format!(", adding TaskManagers first ({before} -> {raised}: {registered} of {slots} slots registered)")
            }
        };
        self.act_on_step(&op);
        self.begin(op, Phase::Rescaling, &format!("{by}rescaling {from} -> {to} in place{first}"));
    }

    /// Carries an in-place rescale one step further.
    pub(super) fn continue_in_place(&mut self, op: PendingOperation) {
        let Some(in_place) = op.in_place.clone() else { return };
        if let Some(refusal) = &in_place.refused {
            match self.current_job().filter(|j| j.state != JobState::Running) {
                Some(j) => self.redeploy_instead(format!("the job stopped running ({})", j.state)),
                None => self.refused(op.clone(), refusal),
            }
            return;
        }
        match in_place.step {
            InPlaceStep::AddTaskManagers => self.await_taskmanagers(op, &in_place),
            InPlaceStep::Rescale if op.trigger_id.is_none() => {
                // Recorded but (perhaps) never sent, or its answer never recorded: send it (again).
                let timeout = self.savepoint_timeout();
                if elapsed(&in_place.since, &self.observed.now) > timeout {
                    let why = format!("the JobManager did not accept the rescale within {timeout:?}");
                    self.abort_in_place(&op, &why, false);
                } else {
                    self.act_on_step(&op);
                }
            }
            InPlaceStep::Rescale => match self.fate_within(&in_place.since, "rescale", self.rescale_timeout(&op)) {
                Fate::Waiting => self.keep_taskmanagers_raised(&in_place),
                Fate::Failed(why) => self.abort_in_place(&op, &why, true),
                Fate::FailedAfterSavepoint { why, savepoint } => {
                    // The job runs on from it, at its former parallelism.
                    let reason = SavepointReason::Rescale;
                    self.record_savepoint(SavepointRef { path: savepoint, time: self.observed.now.clone(), reason });
                    self.abort_in_place(&op, &why, false);
                }
                Fate::Completed { path, in_storage } => self.rescaled(&op, path, in_storage),
            },
        }
    }

    /// What the step `op` is at does now.
    fn act_on_step(&mut self, op: &PendingOperation) {
        let Some(in_place) = &op.in_place else { return };
        match in_place.step {
            InPlaceStep::AddTaskManagers => {
                self.actions.push(Action::ScaleTaskManagers(in_place.taskmanagers));
                self.actions.push(Action::Requeue(SLOTS_LOOK_EVERY));
            }
            InPlaceStep::Rescale => {
                self.keep_taskmanagers_raised(in_place);
                self.actions.push(Action::Rescale(rescale_request(op)));
                self.actions.push(Action::Requeue(FOLLOW_EVERY));
            }
        }
    }

    /// How long the rescale `op` may take once asked for: a savepoint's
    /// time, and the JobManager's wait for the slots of TaskManagers it adds.
    fn rescale_timeout(&self, op: &PendingOperation) -> Duration {
        let waits = rescale_request(op).await_slots_ms.map_or(Duration::ZERO, Duration::from_millis);
        self.savepoint_timeout() + waits
    }

    /// Applies the raised TaskManager Deployment again while the rescale
    /// waits (an unchanged apply when it was): an operator that stopped
    /// between recording the step and raising it raises it now.
    fn keep_taskmanagers_raised(&mut self, in_place: &InPlaceRescale) {
        if in_place.taskmanagers > in_place.taskmanagers_before {
            self.actions.push(Action::ScaleTaskManagers(in_place.taskmanagers));
        }
    }

    /// Nothing was done to the job yet and it no longer runs: the rescale
    /// goes out as any change to a job that does not run.
    fn redeploy_instead(&mut self, note: String) {
        self.event(true, "RescaleInPlaceDropped", &format!("{note}: the rescale is rolled out by a redeploy"));
        // Back to where it started (Rescaling without an operation would be a redeploy not yet running).
        self.status.pending_operation = None;
        self.phase(Phase::Running);
        self.reconcile();
    }

    /// Step 1: the TaskManagers were raised; once their containers run (or
    /// their slots are registered), step 2.
    fn await_taskmanagers(&mut self, mut op: PendingOperation, in_place: &InPlaceRescale) {
        if let Some(j) = self.current_job().filter(|j| j.state != JobState::Running) {
            let note = format!("the job stopped running ({}) while TaskManagers were added", j.state);
            return self.redeploy_instead(note);
        }
        let per_taskmanager = deployed_spec(&self.status).map_or(1, |d| d.task_manager.slots);
        let registered = self.registered_slots(in_place.taskmanagers, per_taskmanager);
        let started = self.observed.taskmanagers_started.unwrap_or(0);
        if registered >= in_place.slots || started >= in_place.taskmanagers {
            let mut next = in_place.clone();
            (next.step, next.since) = (InPlaceStep::Rescale, self.observed.now.clone());
            op.in_place = Some(next);
            let note = match registered >= in_place.slots {
                true => format!("{registered} slots registered: rescaling in place"),
                false => format!(
                    "{started} TaskManagers run ({registered} of {} slots registered): rescaling in place, the JobManager waits for the rest",
                    in_place.slots
                ),
            };
            self.set_condition("Progressing", true, "Rescale", &note);
            self.status.pending_operation = Some(op.clone());
            self.act_on_step(&op);
        } else if elapsed(&in_place.since, &self.observed.now) > TASKMANAGERS_WAIT {
            let (before, raised, slots) = (in_place.taskmanagers_before, in_place.taskmanagers, in_place.slots);
            let why = format!(
                "{registered} of the {slots} slots needed were registered within {TASKMANAGERS_WAIT:?} of adding TaskManagers ({before} -> {raised})"
            );
            self.abort_in_place(&op, &why, false);
        } else {
            self.act_on_step(&op);
        }
    }

    /// The JobManager did not take the rescale: a JobManager that does not
    /// know the API gets a savepoint and a redeploy (see the module); any
    /// other refusal aborts.
    fn refused(&mut self, mut op: PendingOperation, refusal: &RescaleRefusal) {
        let understood = refusal.status == CONFLICT;
        if !understood && op.target_vertex_parallelism.is_empty() {
            let note = format!(
                "the JobManager does not know the rescale API ({}: {}): rescaling through a savepoint and a redeploy",
                refusal.status, refusal.message
            );
            self.event(false, "Rescale", &note);
            self.set_condition("Progressing", true, "Rescale", &note);
            (op.in_place, op.trigger_id, op.started_at) = (None, None, self.observed.now.clone());
            self.actions.push(Action::TriggerSavepoint { stop: op.stops_job() });
            self.status.pending_operation = Some(op);
            return;
        }
        let why = if understood {
            format!("the JobManager refused the rescale: {}", refusal.message)
        } else {
            format!(
                "the JobManager does not know per-vertex rescales ({}: {}); its image is older than the operator",
                refusal.status, refusal.message
            )
        };
        self.abort_in_place(&op, &why, false);
    }

    /// Aborts the in-place rescale `op`, lowering TaskManagers it added back.
    fn abort_in_place(&mut self, op: &PendingOperation, why: &str, snapshot: bool) {
        if let Some(in_place) = op.in_place.as_ref().filter(|i| i.taskmanagers > i.taskmanagers_before) {
            self.actions.push(Action::ScaleTaskManagers(in_place.taskmanagers_before));
        }
        self.abort(op, why, snapshot);
    }

    /// Step 3: the job runs at the new parallelism from the savepoint at
    /// `path`: recorded, and the TaskManagers it leaves idle removed.
    fn rescaled(&mut self, op: &PendingOperation, path: String, in_storage: bool) {
        let sp = SavepointRef { path: path.clone(), time: self.observed.now.clone(), reason: SavepointReason::Rescale };
        self.record_savepoint(sp);
        // What runs now: the spec as deployed (a change made since waits its turn) at the new parallelism.
        let mut deployed = deployed_spec(&self.status).unwrap_or_else(|| self.spec.clone());
        deployed.parallelism = op.target_parallelism.unwrap_or(deployed.parallelism);
        self.status.deployed_spec = Some(serde_json::to_string(&deployed).expect("a spec serializes"));
        self.status.deployed_vertex_parallelism = op.target_vertex_parallelism.clone();
        self.status.pending_operation = None;
        self.phase(Phase::Running);
        if in_storage {
            self.set_condition("SnapshotHealthy", true, "SavepointCompleted", &path);
        } else {
            // The JobManager verified it before restarting from it; the operator cannot see it (its access to storage?).
            let why = format!("the rescale's savepoint {path} is not in storage as the operator sees it");
            self.set_condition("SnapshotHealthy", false, "SavepointNotFound", &why);
            self.event(true, "SavepointNotFound", &why);
        }
        let to = parallelism_in_words(deployed.parallelism, &op.target_vertex_parallelism);
        let note = format!("rescaled in place to {to} from the savepoint {path}");
        self.set_condition("Progressing", false, "Rescaled", &note);
        self.event(false, "Rescaled", &note);
        let deployed_taskmanagers = op.in_place.as_ref().map_or(0, |i| i.taskmanagers.max(i.taskmanagers_before));
        self.remove_idle_taskmanagers(deployed_taskmanagers);
    }

    /// The slots the JobManager reports registered, of at most `taskmanagers`
    /// of `per_taskmanager` slots (those the Deployment has): any beyond are
    /// on their way out (removed idle a moment ago), and are not counted on.
    fn registered_slots(&self, taskmanagers: i32, per_taskmanager: i32) -> i32 {
        let registered = self.current_job().map_or(0, |j| j.slots);
        registered.min(taskmanagers.saturating_mul(per_taskmanager.max(1)))
    }

    /// Lowers the TaskManager Deployment to what the deployed parallelism
    /// needs when `taskmanagers` (deployed, or registered) are more: the
    /// JobManager places subtasks on the fewest TaskManagers, earliest
    /// registered first, so the surplus (the newest pods) runs nothing.
    pub(super) fn remove_idle_taskmanagers(&mut self, taskmanagers: i32) {
        let needed = self.taskmanagers_needed();
        if taskmanagers > needed {
            self.actions.push(Action::ScaleTaskManagers(needed));
        }
    }

    /// The TaskManagers the deployed parallelism needs; a vertex of the
    /// running job that runs at more (its code pins it there) counts too.
    fn taskmanagers_needed(&self) -> i32 {
        let deployed = deployed_spec(&self.status).unwrap_or_else(|| self.spec.clone());
        let mut slots = slots_needed(deployed.parallelism, &self.status.deployed_vertex_parallelism);
        if let Some(job) = self.current_job().filter(|j| j.state == JobState::Running) {
            slots = job.vertices.values().copied().fold(slots, i32::max);
        }
        taskmanagers(slots, deployed.task_manager.slots)
    }
}

/// The rescale `op` asks the JobManager for: the whole assignment, waiting
/// for the slots of the TaskManagers it adds (see the module).
fn rescale_request(op: &PendingOperation) -> RescaleRequest {
    let count = |p: i32| u32::try_from(p.max(1)).unwrap_or(1);
    let request = RescaleRequest {
        parallelism: op.target_parallelism.map(count),
        vertices: op.target_vertex_parallelism.iter().map(|(uid, p)| (uid.clone(), count(*p))).collect(),
        await_slots_ms: None,
    };
    match &op.in_place {
        Some(i) if i.taskmanagers > i.taskmanagers_before => request.awaiting_slots(REGISTRATION_WAIT),
        _ => request,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{applied, at, condition, job, observed, refused, running, slots, step};
    use super::super::{Observed, Plan, SavepointView, deployed_spec};
    use super::*;
    use crate::crd::{StreamJob, StreamJobStatus};
    use crate::resources::Restore;

    const SP: &str = "s3://weir/checkpoints/j/savepoints/sp-9";

    /// The job as the JobManager reports it: running at `parallelism`, with
    /// `taskmanagers` registered (a slot each, as the test spec has it).
    fn reporting(parallelism: i32, taskmanagers: i32) -> Observed {
        slots(observed(Some((JobState::Running, parallelism)), None), taskmanagers)
    }

    /// `o` with the rescale's trigger reported completed (its savepoint found in storage).
    fn completed(mut o: Observed) -> Observed {
        o.savepoint = Some(SavepointView::Completed { path: SP.into(), in_storage: true });
        o
    }

    fn scaled(status: StreamJobStatus, parallelism: i32) -> StreamJob {
        job(Some(status), 2, move |s| s.parallelism = parallelism)
    }

    fn in_place(p: &Plan) -> InPlaceRescale {
        let op = p.status.pending_operation.as_ref().expect("a pending operation");
        op.in_place.clone().expect("in place")
    }

    fn scaled_taskmanagers(p: &Plan) -> Vec<i32> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::ScaleTaskManagers(n) => Some(*n),
                _ => None,
            })
            .collect()
    }

    fn rescales(p: &Plan) -> Vec<RescaleRequest> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Rescale(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_rescale_is_made_in_place_when_the_registered_slots_suffice_and_an_operator_restart_carries_on() {
        // Four slots registered (a TaskManager of four), the job at 2: 3 fits.
        let four_slots = |s: &mut StreamJobSpec| s.task_manager.slots = 4;
        let scaled = |status| job(Some(status), 2, move |s| (four_slots(s), s.parallelism = 3).1);
        let deployed = running(four_slots);
        let one_taskmanager = |parallelism| {
            let mut o = slots(observed(Some((JobState::Running, parallelism)), None), 4);
            o.job.as_mut().unwrap().taskmanagers = 1;
            o
        };
        let up = || one_taskmanager(2);
        // 1. Recorded (write-ahead) with its step, and asked for in the same plan.
        let p = step(&scaled(deployed.clone()), &up());
        let op = p.status.pending_operation.clone().expect("recorded");
        assert_eq!((op.kind, op.target_parallelism, op.generation), (OperationKind::Rescale, Some(3), 2));
        let i = in_place(&p);
        assert_eq!((i.step, i.slots, i.taskmanagers_before, i.taskmanagers), (InPlaceStep::Rescale, 3, 1, 1));
        assert_eq!(rescales(&p), [RescaleRequest::to(3)]);
        assert_eq!((applied(&p), scaled_taskmanagers(&p)), (None, vec![]), "no pod is touched: {:?}", p.actions);
        assert_eq!(p.status.phase, Some(Phase::Rescaling));
        // 2. An operator restarted before the trigger id was recorded: asks again.
        let mut lost = p.status.clone();
        lost.pending_operation.as_mut().unwrap().trigger_id = None;
        assert_eq!(rescales(&step(&scaled(lost.clone()), &up())), [RescaleRequest::to(3)]);
        // ...but not past the savepoint timeout: aborted then.
        let p2 = step(&scaled(lost), &at(up(), "2026-11-21T12:10:30Z"));
        assert_eq!((p2.status.pending_operation.clone(), p2.status.phase), (None, Some(Phase::Running)));
        assert_eq!(condition(&p2.status, "Progressing"), ("False", "Aborted"));
        // 3. Triggered: followed until it completes.
        let mut following = up();
        following.savepoint = Some(SavepointView::InProgress);
        let p = step(&scaled(p.status), &following);
        assert_eq!(p.actions, [Action::Requeue(FOLLOW_EVERY)]);
        // 4. Completed: the job runs at 3 from the verified savepoint.
        let deployment = p.status.deployment.clone();
        let p = step(&scaled(p.status), &completed(one_taskmanager(3)));
        assert_eq!((applied(&p), scaled_taskmanagers(&p)), (None, vec![]), "{:?}", p.actions);
        assert_eq!((p.status.pending_operation.clone(), p.status.phase), (None, Some(Phase::Running)));
        let sp = p.status.last_savepoint.clone().expect("recorded");
        assert_eq!((sp.path.as_str(), sp.reason), (SP, SavepointReason::Rescale));
        assert_eq!(p.status.savepoint_history.len(), 1);
        assert_eq!(deployed_spec(&p.status).map(|d| d.parallelism), Some(3), "what diffs see");
        assert_eq!(p.status.deployment, deployment, "the same deployment");
        assert_eq!(condition(&p.status, "Progressing"), ("False", "Rescaled"));
        // 5. Nothing more to do.
        let p = step(&scaled(p.status), &one_taskmanager(3));
        assert_eq!((applied(&p), &p.status.pending_operation), (None, &None), "{:?}", p.actions);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
    }

    /// The request of a rescale to 4 that adds TaskManagers: it waits for their slots.
    fn to_4_adding() -> RescaleRequest {
        RescaleRequest::to(4).awaiting_slots(REGISTRATION_WAIT)
    }

    /// `o` with `n` of the job's TaskManager pods running.
    fn started(mut o: Observed, n: i32) -> Observed {
        o.taskmanagers_started = Some(n);
        o
    }

    #[test]
    fn taskmanagers_are_added_first_when_the_slots_do_not_suffice_and_an_operator_restart_carries_on() {
        // The job at 2 on two TaskManagers of a slot; 4 needs two more.
        let p = step(&scaled(running(|_| {}), 4), &reporting(2, 2));
        let i = in_place(&p);
        assert_eq!((i.step, i.slots, i.taskmanagers_before, i.taskmanagers), (InPlaceStep::AddTaskManagers, 4, 2, 4));
        assert_eq!((scaled_taskmanagers(&p), rescales(&p)), (vec![4], vec![]), "raised, not yet asked");
        assert_eq!(p.status.phase, Some(Phase::Rescaling));
        // A restarted operator (or the next look), three pods running: raised again (idempotent), waits.
        let p = step(&scaled(p.status, 4), &started(at(reporting(2, 3), "2026-11-21T12:00:20Z"), 3));
        assert_eq!((scaled_taskmanagers(&p), rescales(&p)), (vec![4], vec![]));
        assert_eq!(in_place(&p).step, InPlaceStep::AddTaskManagers);
        // All four registered: the rescale is asked for.
        let p = step(&scaled(p.status, 4), &at(reporting(2, 4), "2026-11-21T12:00:40Z"));
        let i = in_place(&p);
        assert_eq!((i.step, i.since.as_str()), (InPlaceStep::Rescale, "2026-11-21T12:00:40Z"));
        assert_eq!((scaled_taskmanagers(&p), rescales(&p)), (vec![4], vec![to_4_adding()]));
        // Completed: four are needed, none is removed.
        let p = step(&scaled(p.status, 4), &completed(reporting(4, 4)));
        assert_eq!((scaled_taskmanagers(&p), &p.status.pending_operation), (vec![], &None));
        assert_eq!(deployed_spec(&p.status).map(|d| d.parallelism), Some(4));
    }

    /// The savepoint is taken while the added TaskManagers register, not after.
    #[test]
    fn the_rescale_is_asked_for_once_the_added_taskmanagers_run_and_the_jobmanager_waits_for_their_slots() {
        let p = step(&scaled(running(|_| {}), 4), &reporting(2, 2));
        // All four pods run, two of them not yet registered.
        let p = step(&scaled(p.status, 4), &started(at(reporting(2, 2), "2026-11-21T12:00:02Z"), 4));
        assert_eq!(in_place(&p).step, InPlaceStep::Rescale);
        assert_eq!((scaled_taskmanagers(&p), rescales(&p)), (vec![4], vec![to_4_adding()]));
        assert_eq!(to_4_adding().await_slots_ms, Some(30_000));
        // Followed: the Deployment stays raised while the JobManager waits for the slots.
        let mut following = reporting(2, 3);
        following.savepoint = Some(SavepointView::InProgress);
        let p = step(&scaled(p.status, 4), &following);
        assert_eq!((scaled_taskmanagers(&p), rescales(&p)), (vec![4], vec![]));
        // Past the savepoint timeout alone, within it and the wait for the slots: still followed.
        let p = step(&scaled(p.status, 4), &at(following, "2026-11-21T12:10:30Z"));
        assert_eq!((p.status.phase, in_place(&p).step), (Some(Phase::Rescaling), InPlaceStep::Rescale));
        // The JobManager gave up waiting: the job runs on at 2 from the savepoint, the rescale failed.
        let mut gave_up = at(reporting(2, 3), "2026-11-21T12:10:40Z");
        let why = "3 of the 4 slots that parallelism 4 needs were registered within 30000 ms: the job runs on at 2";
        gave_up.savepoint = Some(SavepointView::FailedAfterSavepoint { error: why.into(), savepoint: SP.into() });
        let p = step(&scaled(p.status, 4), &gave_up);
        assert_eq!(scaled_taskmanagers(&p), [2], "back to what the job needs");
        assert_eq!((p.status.pending_operation.clone(), p.status.phase), (None, Some(Phase::Running)));
        assert_eq!(p.status.failed_generation, Some(2), "not retried until the spec changes");
        let c = p.status.conditions.iter().find(|c| c.type_ == "Progressing").unwrap();
        assert!(c.message.contains(why), "{}", c.message);
        // The savepoint was taken, and the job runs from it: recorded, and snapshots are not said to fail.
        let sp = p.status.last_savepoint.clone().expect("recorded");
        assert_eq!((sp.path.as_str(), sp.reason), (SP, SavepointReason::Rescale));
        assert!(!p.status.conditions.iter().any(|c| c.type_ == "SnapshotHealthy" && c.status == "False"));
    }

    #[test]
    fn taskmanagers_that_do_not_come_abort_the_rescale_and_are_removed() {
        let p = step(&scaled(running(|_| {}), 4), &reporting(2, 2));
        let late = started(at(reporting(2, 3), "2026-11-21T12:05:30Z"), 3);
        let p = step(&scaled(p.status, 4), &late);
        assert_eq!(scaled_taskmanagers(&p), [2], "back to what the job needs");
        assert_eq!((p.status.pending_operation.clone(), p.status.phase), (None, Some(Phase::Running)));
        assert_eq!(p.status.failed_generation, Some(2), "not retried until the spec changes");
        let c = p.status.conditions.iter().find(|c| c.type_ == "Progressing").unwrap();
        assert!(c.message.contains("3 of the 4 slots needed were registered within 300s"), "{}", c.message);
        let again = step(&scaled(p.status, 4), &at(reporting(2, 2), "2026-11-21T12:06:00Z"));
        assert_eq!((again.status.pending_operation.clone(), rescales(&again)), (None, vec![]), "{:?}", again.actions);
    }

    #[test]
    fn a_scale_down_removes_the_idle_taskmanagers_once_the_job_runs_at_the_new_parallelism() {
        let at_4 = running(|s| s.parallelism = 4);
        let p = step(&scaled(at_4, 2), &reporting(4, 4));
        assert_eq!((in_place(&p).step, rescales(&p)), (InPlaceStep::Rescale, vec![RescaleRequest::to(2)]));
        assert_eq!(scaled_taskmanagers(&p), Vec::<i32>::new(), "all four stay until the job runs at 2");
        let p = step(&scaled(p.status, 2), &completed(reporting(2, 4)));
        assert_eq!(scaled_taskmanagers(&p), [2], "the two idle ones go");
        let done = p.status;
        // An operator stopped before it lowered them: the next look at the running job does.
        let p = step(&scaled(done.clone(), 2), &reporting(2, 4));
        assert_eq!((scaled_taskmanagers(&p), &p.status.pending_operation), (vec![2], &None));
        // Once they are gone, nothing more.
        let p = step(&scaled(done.clone(), 2), &reporting(2, 2));
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        // Scaled up again at once, the two removed still registered: not counted on.
        let p = step(&job(Some(done), 3, |s| s.parallelism = 4), &reporting(2, 4));
        assert_eq!((in_place(&p).step, scaled_taskmanagers(&p)), (InPlaceStep::AddTaskManagers, vec![4]));
    }

    #[test]
    fn a_failed_or_refused_rescale_in_place_aborts_and_is_not_retried() {
        let rescaling = || step(&scaled(running(|_| {}), 1), &reporting(2, 2)).status;
        // Failed (its savepoint, or the restart from it).
        let mut failed = reporting(2, 2);
        failed.savepoint = Some(SavepointView::Failed("the savepoint failed: storage unreachable".into()));
        let p = step(&scaled(rescaling(), 1), &failed);
        assert_eq!((p.status.pending_operation.clone(), p.status.phase), (None, Some(Phase::Running)));
        assert_eq!(p.status.failed_generation, Some(2));
        assert_eq!(condition(&p.status, "SnapshotHealthy"), ("False", "SavepointFailed"));
        assert!(
            p.actions.iter().any(|a| matches!(a, Action::Event { warning: true, reason, .. } if reason == "Aborted"))
        );
        let again = step(&scaled(p.status, 1), &reporting(2, 2));
        assert_eq!((again.status.pending_operation.clone(), rescales(&again)), (None, vec![]), "not retried");
        assert_eq!(condition(&again.status, "Progressing"), ("False", "Aborted"), "the abort stays reported");
        // Refused by a JobManager that understood it (409): aborted, nothing triggered.
        let p = step(&scaled(refused(rescaling(), 409), 1), &reporting(2, 2));
        assert_eq!((p.status.pending_operation.clone(), p.status.failed_generation), (None, Some(2)));
        assert!(!p.actions.iter().any(|a| matches!(a, Action::TriggerSavepoint { .. } | Action::Rescale(_))));
        let c = p.status.conditions.iter().find(|c| c.type_ == "Progressing").unwrap();
        assert!(c.message.contains("the JobManager refused the rescale: no such route"), "{}", c.message);
    }

    #[test]
    fn a_job_that_stops_running_while_taskmanagers_are_added_is_redeployed() {
        let p = step(&scaled(running(|_| {}), 4), &reporting(2, 2));
        assert_eq!(in_place(&p).step, InPlaceStep::AddTaskManagers);
        let stopped = step(&scaled(p.status.clone(), 4), &observed(Some((JobState::Restarting, 2)), None));
        assert_eq!(applied(&stopped), Some((4, Restore::LatestOrFresh)), "a job that does not run gets no savepoint");
        // Or by the time the JobManager refused the rescale (nothing was done to it either).
        let asked = step(&scaled(p.status, 4), &started(reporting(2, 2), 4)).status;
        let p = step(&scaled(refused(asked, 409), 4), &observed(Some((JobState::Restarting, 2)), None));
        assert_eq!(applied(&p), Some((4, Restore::LatestOrFresh)), "a job that does not run gets no savepoint");
        assert_eq!((p.status.pending_operation.clone(), p.status.phase), (None, Some(Phase::Rescaling)));
    }

    #[test]
    fn the_request_states_the_whole_assignment() {
        let op = PendingOperation {
            kind: OperationKind::Rescale,
            generation: 1,
            target_parallelism: Some(6),
            target_vertex_parallelism: [("1-source".to_string(), 1), ("2-window".to_string(), 6)].into(),
            in_place: None,
            trigger_id: None,
            restore_from: None,
            reason: None,
            by_autoscaler: true,
            started_at: "2026-11-21T12:00:00Z".into(),
        };
        let request = rescale_request(&op);
        assert_eq!(request.parallelism, Some(6));
        assert_eq!(request.vertices, [("1-source".to_string(), 1), ("2-window".to_string(), 6)].into());
        let user = PendingOperation { target_vertex_parallelism: Default::default(), ..op };
        assert_eq!(rescale_request(&user), RescaleRequest::to(6));
    }
}
