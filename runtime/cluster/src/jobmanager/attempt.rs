//! What the event loop does with attempts.
//!
//! An *attempt* is one deployment of the job. Everything an attempt's tasks
//! send carries its number, so that a straggler of a cancelled attempt is
//! recognised and ignored. A failure (a task, a channel, a TaskManager's
//! connection or heartbeat, checkpoints beyond tolerance) cancels the
//! attempt everywhere; the restart strategy says when the next one starts,
//! from the latest completed checkpoint, as soon as there are enough slots.
//! A rescale is a stop-with-savepoint, then an attempt at the new parallelism
//! from that savepoint. What an attempt needs from storage (the fence, its
//! restore point, the next checkpoint id) is read on the storage thread
//! ([`super::storage`]) once it is due; it is deployed when that came back.

use std::collections::{BTreeMap, HashMap, HashSet};

use crossbeam_channel::Sender;
use weir_core::checkpoint::coordinator::{CheckpointConfig, Command, Coordinator, SavepointRequest, Written};

use super::Reply;
use super::event_loop::{JobLoop, Request};
use super::job::Plan;
use super::storage::{Done, NotReady, Preparation, Prepare, Readiness, RestoreFrom};
use crate::protocol::{Deployment, JobSpec, ToTaskManager};
use crate::schedule;
use crate::state::{JobEvent, JobState};
use weir_api::rest::{RescaleRequest, TriggerFailure};

/// One deployment of the job.
pub(super) struct Attempt {
    pub id: u64,
    /// The TaskManagers (by connection) and the `(chain, subtask)` pairs each runs.
    pub assignment: BTreeMap<u64, HashSet<(usize, usize)>>,
    /// The TaskManagers whose tasks all ended.
    pub finished: HashSet<u64>,
    pub coordinator: Option<Coordinator>,
}

/// A rescale under way: first its savepoint, then the redeployment.
pub(super) struct PendingRescale {
    /// The job as it is to run after the rescale, and its plan (checked
    /// before the savepoint); `None` once the job was redeployed at it.
    pub planned: Option<(JobSpec, Plan)>,
    pub savepoint: Reply,
    /// The savepoint, once taken.
    pub path: Option<String>,
    /// Who asked (the same request asked again, by a caller that lost its
    /// first answer, joins the one under way).
    pub replies: Vec<Sender<Result<String, TriggerFailure>>>,
    /// The job as the rescale will run it.
    pub target: JobSpec,
    /// When each step ended, for the log line that says where the time went.
    pub timings: RescaleTimings,
    /// Until when the slots the new parallelism needs may be awaited
    /// (`None`: they were registered when it was asked for).
    pub slots_by: Option<std::time::Instant>,
    /// The job as it ran before, and its plan, once it was planned anew:
    /// what it runs on at when the slots do not come in time.
    pub before: Option<(JobSpec, Plan)>,
}

impl PendingRescale {
    /// Tells everyone who asked how the rescale went.
    fn answer(&self, outcome: Result<String, TriggerFailure>) {
        for reply in &self.replies {
            let _ = reply.send(outcome.clone());
        }
    }
}

/// When a rescale's steps ended.
pub(super) struct RescaleTimings {
    pub requested: std::time::Instant,
    pub savepoint: Option<std::time::Instant>,
    pub stopped: Option<std::time::Instant>,
    pub verified: Option<std::time::Instant>,
    /// When the last TaskManager registered while it waited for slots (if it did).
    pub slots: Option<std::time::Instant>,
}

impl RescaleTimings {
    /// `savepoint 900 ms, savepoint verified 210 ms, tasks stopped 40 ms, redeployed 15 ms`:
    /// each step in the order it ended, with the time since the one before
    /// (the tasks stop while the savepoint is verified).
    fn describe(&self, deployed: std::time::Instant) -> String {
        let mut steps: Vec<(&str, std::time::Instant)> = [
            ("savepoint", self.savepoint),
            ("tasks stopped", self.stopped),
            ("savepoint verified", self.verified),
            ("slots registered", self.slots),
            ("redeployed", Some(deployed)),
        ]
        .into_iter()
        .filter_map(|(what, at)| Some((what, at?)))
        .collect();
        steps.sort_by_key(|&(_, at)| at);
        let mut from = self.requested;
        let mut parts = Vec::new();
        for (what, at) in steps {
            parts.push(format!("{what} {} ms", at.saturating_duration_since(from).as_millis()));
            from = at;
        }
        format!("{} ms: {}", deployed.saturating_duration_since(self.requested).as_millis(), parts.join(", "))
    }
}

impl JobLoop {
    pub(super) fn on_request(&mut self, request: Request) {
        match request {
            Request::Savepoint { stop, drain, reply } => self.savepoint(SavepointRequest::new(stop, drain, reply)),
            Request::Rescale { request, accepted, reply } => {
                let answer = self.start_rescale(request, reply);
                let _ = accepted.send(answer);
            }
            Request::Stop => self.stop_sources(),
            Request::Cancel => {
                if let Some(a) = self.attempt.take() {
                    self.cancel_attempt(&a);
                }
                self.transition(JobEvent::CancelRequested);
                self.transition(JobEvent::Cancelled);
            }
        }
    }

    /// Tells every TaskManager of the running attempt to end its sources. A
    /// job waiting to be deployed (or redeployed) has nothing to drain: it is
    /// cancelled, so that a stop is never lost for having come early.
    fn stop_sources(&mut self) {
        if matches!(self.state, JobState::Created | JobState::Restarting) {
            return self.on_request(Request::Cancel);
        }
        let Some(a) = self.attempt.as_ref().filter(|_| self.state == JobState::Running) else { return };
        let (attempt, conns): (u64, Vec<u64>) = (a.id, a.assignment.keys().copied().collect());
        for conn in conns {
            self.send(conn, &ToTaskManager::StopSources { attempt });
        }
    }

    /// Hands a savepoint request to the running attempt's coordinator.
    fn savepoint(&mut self, request: SavepointRequest) {
        let refuse = |why: String| {
            let _ = request.reply.send(Err(why));
        };
        match self.attempt.as_mut().filter(|_| self.state == JobState::Running) {
            None => refuse(format!("the job is {}, not running", self.state)),
            Some(a) => match a.coordinator.as_mut() {
                None => refuse("savepoints need checkpointing to be configured (a checkpoint directory)".into()),
                Some(c) => c.request_savepoint(request),
            },
        }
    }

    /// Takes the rescale's stop-with-savepoint; the redeployment follows once
    /// every task ended. The new assignment is planned first: a request the
    /// job cannot run at (a vertex it does not have, a parallelism beyond its
    /// key groups, more slots than are registered and no wait for them) is
    /// refused while the job runs on untouched.
    fn start_rescale(
        &mut self,
        request: RescaleRequest,
        reply: Sender<Result<String, TriggerFailure>>,
    ) -> Result<(), String> {
        let (spec, plan) = self.plan_rescale(&request)?;
        if let Some(r) = self.rescale.as_mut() {
            if r.target != spec {
                return Err("another rescale is already in progress".into());
            }
            r.replies.push(reply);
            return Ok(());
        }
        // Already there (a caller asking again after the rescale it lost the answer to):
        // nothing to do, and the snapshot the job runs from is the answer.
        if let (JobState::Running, Some((path, _))) = (self.state, &self.restore)
            && spec == self.config.spec
        {
            let _ = reply.send(Ok(path.clone()));
            return Ok(());
        }
        let Some(c) =
            self.attempt.as_mut().filter(|_| self.state == JobState::Running).and_then(|a| a.coordinator.as_mut())
        else {
            return Err(format!("rescaling needs a running job with checkpointing (the job is {})", self.state));
        };
        let now = self.clock.now();
        // A wait asked for bounds the redeploy whether or not the slots are there now: one may be lost before.
        let slots_by = request.await_slots_ms.map(|ms| now + std::time::Duration::from_millis(ms));
        match slots_by {
            Some(_) => {}
            None if schedule::assign(&plan.layout, &free_slots(&self.tms)).is_some() => {}
            None => {
                return Err(format!(
                    "rescaling to {} needs {} slots and {} are registered: add TaskManagers first, or give `await_slots_ms` to wait for them",
                    describe(&spec),
                    schedule::slots_needed(&plan.layout),
                    self.tms.values().map(|t| t.slots).sum::<usize>()
                ));
            }
        }
        let (tx, savepoint) = crossbeam_channel::bounded(1);
        c.request_savepoint(SavepointRequest::new(true, false, tx));
        let timings = RescaleTimings { requested: now, savepoint: None, stopped: None, verified: None, slots: None };
        self.rescale = Some(PendingRescale {
            target: spec.clone(),
            planned: Some((spec, plan)),
            savepoint,
            path: None,
            replies: vec![reply],
            timings,
            slots_by,
            before: None,
        });
        Ok(())
    }

    /// The job as `request` would have it run, and its plan.
    fn plan_rescale(&self, request: &RescaleRequest) -> Result<(JobSpec, Plan), String> {
        let max = self.plan.max_parallelism as usize;
        let in_range = |what: String, p: usize| match p {
            0 => Err(format!("{what}: must be at least 1")),
            p if p > max => Err(format!("{what}: {p} is above the max parallelism {max} (the job's key groups)")),
            _ => Ok(p),
        };
        if request.parallelism.is_none() && request.vertices.is_empty() {
            return Err("nothing to rescale to: give `parallelism`, `vertices` or both".into());
        }
        let parallelism = match request.parallelism {
            Some(p) => in_range("parallelism".into(), p as usize)?,
            None => self.config.spec.parallelism,
        };
        let vertex_parallelism = request
            .vertices
            .iter()
            .map(|(uid, &p)| Ok((uid.clone(), in_range(format!("vertices.{uid}"), p as usize)?)))
            .collect::<Result<_, String>>()?;
        let spec = JobSpec { parallelism, vertex_parallelism, ..self.config.spec.clone() };
        let plan = Plan::of(&spec, self.builder.as_ref())?.deployed_as(self.config.deployment.clone());
        Ok((spec, plan))
    }

    pub(super) fn on_rescale_savepoint(&mut self, result: Result<String, String>) {
        let Some(r) = self.rescale.as_mut() else { return };
        match result {
            Ok(path) => {
                // The job now stops; it is redeployed once every task ended
                // and the savepoint is verified in storage. Neither waits
                // for the other: the verification starts now.
                r.path = Some(path.clone());
                r.timings.savepoint = Some(self.clock.now());
                self.from = RestoreFrom::Savepoint(path);
                self.prepare();
            }
            Err(e) => {
                let r = self.rescale.take().expect("a rescale");
                r.answer(Err(format!("the savepoint failed: {e}").into()));
            }
        }
    }

    /// Every TaskManager of the attempt reported its tasks ended.
    pub(super) fn attempt_ended(&mut self) {
        let a = self.attempt.take().expect("an attempt");
        if let Some(c) = &a.coordinator {
            self.history.extend(c.history.iter().cloned());
        }
        match self.rescale.take_if(|r| r.path.is_some()) {
            Some(mut r) => {
                r.timings.stopped = Some(self.clock.now());
                self.rescale_from_savepoint(r)
            }
            None => self.transition(JobEvent::AllTasksEnded),
        }
    }

    /// The job stopped with the rescale's savepoint: its next attempt runs
    /// at the new parallelism, from the savepoint, once the savepoint is
    /// verified in storage (every state file whole). Never a silent fresh
    /// start: a savepoint that cannot be opened fails the job.
    fn rescale_from_savepoint(&mut self, r: PendingRescale) {
        let path = r.path.clone().expect("a savepoint");
        let (spec, _) = r.planned.as_ref().expect("a rescale not yet redeployed");
        tracing::info!("rescaling to {} from {path}", describe(spec));
        let from = RestoreFrom::Savepoint(path);
        // What was read for this savepoint while the tasks stopped is kept;
        // anything else is read again.
        let early = match std::mem::replace(&mut self.preparation, Preparation::Unasked) {
            p @ (Preparation::Asked(_) | Preparation::Held(..)) if self.from == from => Some(p),
            _ => None,
        };
        self.from = from;
        self.transition(JobEvent::Redeploy);
        self.restart_at = self.clock.now();
        self.rescale = Some(r);
        match early {
            Some(Preparation::Held(outcome, at)) => self.take_readiness(outcome, at),
            Some(asked) => self.preparation = asked,
            None => {}
        }
    }

    /// The rescale's savepoint is verified: the job is planned at the new parallelism.
    fn switch_to_rescaled(&mut self) {
        let Some(r) = self.rescale.as_mut() else { return };
        let Some((spec, plan)) = r.planned.take() else { return };
        r.before = Some((self.config.spec.clone(), self.plan.clone()));
        self.run_as(spec, plan);
    }

    /// The job is to run as `spec` says, planned as `plan`.
    fn run_as(&mut self, spec: JobSpec, plan: Plan) {
        let mut view = self.view.lock().expect("view poisoned");
        view.parallelism = spec.parallelism;
        view.layout = plan.layout.clone();
        view.metrics = plan.empty_metrics();
        drop(view);
        self.config.spec = spec;
        self.plan = plan;
    }

    /// A rescale planned anew whose slots did not come within its wait: the
    /// job runs on as it ran before, from the rescale's savepoint (read
    /// again for the former parallelism), and the rescale answers failed.
    fn give_up_waiting_for_slots(&mut self) {
        let now = self.clock.now();
        let overdue = |r: &PendingRescale| r.before.is_some() && r.slots_by.is_some_and(|by| now >= by);
        let Some(mut r) = self.rescale.take_if(|r| overdue(r)) else { return };
        let (spec, plan) = r.before.take().expect("planned anew");
        let waited = r.slots_by.map_or(0, |by| by.saturating_duration_since(r.timings.requested).as_millis());
        let why = format!(
            "{} of the {} slots that parallelism {} needs were registered within {waited} ms: the job runs on at {} from the savepoint {}",
            self.tms.values().map(|t| t.slots).sum::<usize>(),
            schedule::slots_needed(&self.plan.layout),
            describe(&self.config.spec),
            describe(&spec),
            r.path.as_deref().unwrap_or("taken")
        );
        tracing::warn!("rescale of {} abandoned: {why}", self.config.spec.name);
        r.answer(Err(TriggerFailure { error: why, savepoint: r.path.clone() }));
        self.run_as(spec, plan);
        self.prepare();
    }

    /// The rescale cannot go on: the caller hears `answer`, and the job fails with `failure`.
    fn rescale_failed(&mut self, r: &PendingRescale, answer: String, failure: String) {
        r.answer(Err(answer.into()));
        self.failure = Some(failure);
        self.transition(JobEvent::GaveUp);
    }

    pub(super) fn cancel_attempt(&mut self, a: &Attempt) {
        for &conn in a.assignment.keys() {
            self.send(conn, &ToTaskManager::Cancel { attempt: a.id });
        }
    }

    /// Cancels the attempt and restarts the job as the strategy allows.
    pub(super) fn fail_over(&mut self, reason: String) {
        tracing::warn!("job {} failed: {reason}", self.config.spec.name);
        if let Some(a) = self.attempt.take() {
            self.cancel_attempt(&a);
            if let Some(c) = &a.coordinator {
                self.history.extend(c.history.iter().cloned());
            }
        }
        if let Some(r) = self.rescale.take() {
            match r.path {
                // The savepoint is taken but the job not yet redeployed from
                // it: the job had stopped anyway, and the rescale goes on
                // from the savepoint (never from an older restore point).
                Some(_) if r.planned.is_some() && self.state == JobState::Running => {
                    return self.rescale_from_savepoint(r);
                }
                // Redeployed from the savepoint: restarts go on from it.
                Some(_) => self.rescale = Some(r),
                None => {
                    r.answer(Err(format!("the job failed during the rescale: {reason}").into()));
                }
            }
        }
        if self.state == JobState::Cancelling {
            return;
        }
        let ran = self.clock.now().duration_since(self.deployed_at);
        match self.restarts.on_failure(ran) {
            Some(delay) => self.restart_after(delay, reason),
            None => {
                self.failure = Some(reason);
                self.transition(JobEvent::GaveUp);
            }
        }
    }

    /// A JobManager of a newer epoch leads the job (see
    /// [`weir_core::checkpoint::fence`]): this one stops its attempt and
    /// fails the job here, without a restart, completing nothing more.
    fn deposed(&mut self, why: String) {
        tracing::error!("job {}: {why}", self.config.spec.name);
        if let Some(a) = self.attempt.take() {
            self.cancel_attempt(&a);
            if let Some(c) = &a.coordinator {
                self.history.extend(c.history.iter().cloned());
            }
        }
        if let Some(r) = self.rescale.take() {
            r.answer(Err(why.clone().into()));
        }
        self.failure = Some(why);
        self.transition(JobEvent::GaveUp);
    }

    /// Schedules the next attempt: from the latest completed checkpoint;
    /// failing that, from where the job started (a rescale's savepoint, while
    /// the rescale is not yet deployed).
    fn restart_after(&mut self, delay: std::time::Duration, reason: String) {
        if !matches!(self.from, RestoreFrom::Savepoint(_)) || self.rescale.is_none() {
            self.from = match self.plan.checkpointing {
                Some(_) => RestoreFrom::Latest { fallback: self.restore.clone(), after: reason },
                None => RestoreFrom::Kept(self.restore.clone()),
            };
        }
        self.preparation = Preparation::Unasked;
        tracing::info!("restarting in {delay:?} (restart {})", self.restarts.attempts());
        self.restart_at = self.clock.now() + delay;
        self.transition(JobEvent::FailedOver);
    }

    /// Deploys the next attempt once it is due, what it needs from storage
    /// was read (not long ago), and there are enough slots.
    pub(super) fn maybe_deploy(&mut self) {
        if !matches!(self.state, JobState::Created | JobState::Restarting) || self.clock.now() < self.restart_at {
            return;
        }
        let (readiness, read_at) = match std::mem::replace(&mut self.preparation, Preparation::Unasked) {
            Preparation::Got(r, at) if self.clock.now().saturating_duration_since(at) <= READ_IS_FRESH => (r, at),
            Preparation::Asked(ticket) => return self.preparation = Preparation::Asked(ticket),
            Preparation::Held(outcome, at) => return self.take_readiness(outcome, at),
            Preparation::Unasked | Preparation::Got(..) => return self.prepare(),
        };
        let Some(assignment) = schedule::assign(&self.plan.layout, &free_slots(&self.tms)) else {
            // Kept as old as it is: read again once it is not fresh (the fence above all).
            self.preparation = Preparation::Got(readiness, read_at);
            self.give_up_waiting_for_slots();
            return;
        };
        self.restore = readiness.restore;
        self.from = RestoreFrom::Kept(self.restore.clone());
        let id = attempt_id();
        let coordinator = self.coordinator(readiness.next_id);
        tracing::info!(
            "deploying attempt {id} of {} at parallelism {} on {} TaskManagers, from {}",
            self.config.spec.name,
            self.config.spec.parallelism,
            assignment.len(),
            self.restore.as_ref().map_or("the start", |r| r.0.as_str())
        );
        self.deploy(id, &assignment);
        self.attempt = Some(Attempt { id, assignment, finished: HashSet::new(), coordinator });
        self.deployed_at = self.clock.now();
        {
            let mut view = self.view.lock().expect("view poisoned");
            view.metrics = self.plan.empty_metrics();
            view.restored_from = self.restore.as_ref().map(|r| r.0.clone());
        }
        self.transition(JobEvent::Deployed);
        if let Some(r) = self.rescale.take_if(|r| r.path.is_some()) {
            tracing::info!("rescaled to {} in {}", describe(&self.config.spec), r.timings.describe(self.clock.now()));
            let path = r.path.clone().expect("a savepoint");
            r.answer(Ok(path));
        }
    }

    /// Asks the storage thread for what the next attempt needs: the job as
    /// it will run (a rescale's, before its savepoint is verified).
    fn prepare(&mut self) {
        self.tickets += 1;
        let ticket = self.tickets;
        let (spec, plan) = match self.rescale.as_ref().and_then(|r| r.planned.as_ref()) {
            Some((spec, plan)) => (spec.clone(), plan.clone()),
            None => (self.config.spec.clone(), self.plan.clone()),
        };
        let prepare =
            Prepare { builder: self.builder.clone(), spec, plan, epoch: self.config.epoch, from: self.from.clone() };
        self.preparation = Preparation::Asked(ticket);
        self.storage.submit(move || Some(Done::Ready { ticket, outcome: prepare.run() }));
    }

    /// What the next attempt needs came back from storage (or cannot).
    pub(super) fn on_ready(&mut self, ticket: u64, outcome: Result<Readiness, NotReady>) {
        if !matches!(self.preparation, Preparation::Asked(t) if t == ticket) {
            return; // asked again since, or the job moved on
        }
        self.preparation = Preparation::Unasked;
        let now = self.clock.now();
        if let Some(r) = self.rescale.as_mut().filter(|r| r.planned.is_some() && outcome.is_ok()) {
            r.timings.verified = Some(now);
        }
        if self.attempt.is_some() {
            // A rescale's savepoint, read while its tasks still stop: held
            // until they all ended (the job is planned anew only then).
            self.preparation = Preparation::Held(outcome, now);
            return;
        }
        self.take_readiness(outcome, now);
    }

    /// What the next attempt needs, read at `at`: the job is deployed with
    /// it (a rescale's, at its new parallelism), or fails for want of it.
    fn take_readiness(&mut self, outcome: Result<Readiness, NotReady>, at: std::time::Instant) {
        match outcome {
            Ok(readiness) => {
                self.switch_to_rescaled();
                self.preparation = Preparation::Got(readiness, at);
                self.maybe_deploy();
            }
            Err(NotReady::Deposed(why)) => self.deposed(why),
            Err(NotReady::Restore(e)) => match self.rescale.take_if(|r| r.planned.is_some()) {
                Some(r) => {
                    let to = r.planned.as_ref().map(|(spec, _)| describe(spec)).unwrap_or_default();
                    let why = format!("rescale to {to}: {e}");
                    self.rescale_failed(&r, why.clone(), why);
                }
                None => {
                    self.failure = Some(match &self.from {
                        RestoreFrom::Latest { after, .. } => format!("{after}; and {e}"),
                        _ => e,
                    });
                    self.transition(JobEvent::GaveUp);
                }
            },
        }
    }

    /// A snapshot's write ended: the coordinator of `attempt` takes it, if
    /// that attempt still runs (else the next attempt reads what it left).
    pub(super) fn on_written(&mut self, attempt: u64, written: Written) {
        let now = self.clock.now_ms();
        let coordinator = self.attempt.as_mut().filter(|a| a.id == attempt).and_then(|a| a.coordinator.as_mut());
        let Some(c) = coordinator else { return };
        let commands = c.on_written(written, now);
        self.dispatch(commands);
    }

    /// A checkpoint coordinator for the next attempt, with checkpointing.
    fn coordinator(&self, next_id: u64) -> Option<Coordinator> {
        let cfg = self.plan.checkpointing.as_ref()?;
        let cfg = CheckpointConfig { epoch: self.config.epoch, ..cfg.clone() };
        Some(Coordinator::new(self.plan.shape.clone(), cfg, next_id, self.clock.now_ms()))
    }

    /// Sends each TaskManager its share of attempt `id`.
    fn deploy(&mut self, id: u64, assignment: &BTreeMap<u64, HashSet<(usize, usize)>>) {
        let peers: Vec<((usize, usize), String)> = assignment
            .iter()
            .flat_map(|(conn, set)| set.iter().map(|&s| (s, self.tms[conn].data_addr.clone())))
            .collect();
        for (conn, set) in assignment {
            let deployment = Deployment {
                attempt: id,
                spec: self.config.spec.clone(),
                restore: self.restore.as_ref().map(|r| r.0.clone()),
                local: set.iter().copied().collect(),
                peers: peers.clone(),
            };
            self.send(*conn, &ToTaskManager::Deploy(Box::new(deployment)));
        }
    }

    pub(super) fn tick_coordinator(&mut self) {
        let now = self.clock.now_ms();
        let commands = match self.attempt.as_mut().and_then(|a| a.coordinator.as_mut()) {
            Some(c) => c.tick(now),
            None => return,
        };
        self.dispatch(commands);
    }

    /// Sends the coordinator's commands to the TaskManagers of the tasks
    /// they are for, and its storage work to the storage thread.
    pub(super) fn dispatch(&mut self, commands: Vec<Command>) {
        if let Some(a) = self.attempt.as_mut() {
            let attempt = a.id;
            for work in a.coordinator.as_mut().map(|c| c.take_work()).unwrap_or_default() {
                self.storage.submit(move || work.run().map(|written| Done::Written { attempt, written }));
            }
        }
        let coordinator = self.attempt.as_ref().and_then(|a| a.coordinator.as_ref());
        if let Some(why) = coordinator.and_then(|c| c.fenced()).map(str::to_string) {
            return self.deposed(why);
        }
        let Some(a) = self.attempt.as_ref().filter(|_| !commands.is_empty()) else { return };
        let owner: HashMap<(usize, usize), u64> =
            a.assignment.iter().flat_map(|(conn, set)| set.iter().map(move |&s| (s, *conn))).collect();
        let attempt = a.id;
        let (plan, tms, links) = (&self.plan, &self.tms, &mut self.links);
        let routed = plan.router.route(commands, |task, command| {
            let Some(conn) = plan.task_of(task).and_then(|s| owner.get(&s)).copied() else { return };
            if tms.contains_key(&conn) {
                links.send(conn, &ToTaskManager::Command { attempt, task, command: command.clone() });
            }
        });
        if let Err(reason) = routed {
            self.fail_over(format!("checkpointing: {reason}"));
        }
    }
}

/// How long what was read for the next attempt (the fence above all) may
/// wait for slots before it is read again.
const READ_IS_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// A new attempt's id: random, so that no one outside can guess the next
/// (every message of an attempt carries it).
fn attempt_id() -> u64 {
    // getrandom fails only where the system has no randomness at all: then
    // the clock, which is still unique per attempt.
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    })
}

/// A job's parallelism as a log line says it: `3`, or `3 (window at 4)`.
fn describe(spec: &JobSpec) -> String {
    if spec.vertex_parallelism.is_empty() {
        return spec.parallelism.to_string();
    }
    let own: Vec<String> = spec.vertex_parallelism.iter().map(|(uid, p)| format!("{uid} at {p}")).collect();
    format!("{} ({})", spec.parallelism, own.join(", "))
}

/// Every registered TaskManager's slots, by connection, in registration order.
fn free_slots(tms: &BTreeMap<u64, super::event_loop::Tm>) -> Vec<(u64, usize)> {
    tms.iter().map(|(c, t)| (*c, t.slots)).collect()
}
