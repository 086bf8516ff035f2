//! The JobManager's event loop: one thread owns all of the job's state and
//! takes, in order, what happens: TaskManagers registering, their messages
//! and heartbeats, lost connections ([`Event`]s, on a channel), requests from
//! the handle ([`Request`]s), the answer to a rescale's savepoint, what the
//! storage thread did ([`Done`]), and the clock (heartbeat timeouts, restart
//! delays, the coordinator's timers). It never waits on storage itself.
//!
//! It reaches TaskManagers only through [`TaskManagerLinks`] and reads time
//! only from a [`Clock`], so that tests drive it with fake TaskManagers and a
//! manual clock, without sockets or sleeps. What it does with attempts
//! (deploy, fail over, rescale, savepoints) is in [`super::attempt`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use weir_core::checkpoint::coordinator::{CheckpointStats, TaskReport};
use weir_core::metrics::MAX_GAUGES;
use weir_core::time::Timestamp;

use super::attempt::{Attempt, PendingRescale};
use super::job::{Plan, RestorePoint};
use super::storage::{Done, Preparation, RestoreFrom, StorageWorker};
use super::{ClusterView, JobManagerConfig, TaskManagerView};
use crate::JobBuilder;
use crate::protocol::{ToJobManager, ToTaskManager};
use crate::restart::Restarts;
use crate::state::{JobEvent, JobState};

/// How often the loop looks at the clock when nothing happens.
const TICK: Duration = Duration::from_millis(50);

/// The loop's connections to TaskManagers, by connection number.
pub(super) trait TaskManagerLinks: Send {
    /// Sends `message`; a connection that cannot take it is closed, and its
    /// loss comes back as an [`Event::Disconnected`].
    fn send(&mut self, conn: u64, message: &ToTaskManager);
    /// Closes the connection (its TaskManager is lost).
    fn close(&mut self, conn: u64);
}

/// Where the loop reads time.
pub(super) trait Clock: Send + Sync {
    /// Monotonic time, for heartbeats and restart delays.
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds, for checkpoints.
    fn now_ms(&self) -> Timestamp;
}

/// The system's clocks.
pub(super) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn now_ms(&self) -> Timestamp {
        weir_core::time::now_ms()
    }
}

/// What happens on the connections to TaskManagers.
#[derive(Debug)]
pub(super) enum Event {
    /// A TaskManager registered (a compatible version) on connection `conn`.
    Registered {
        conn: u64,
        id: String,
        slots: usize,
        data_addr: String,
    },
    Message {
        conn: u64,
        message: ToJobManager,
    },
    Disconnected {
        conn: u64,
        why: String,
    },
}

/// What a caller asks of the running JobManager.
pub(super) enum Request {
    Savepoint {
        stop: bool,
        drain: bool,
        reply: Sender<Result<String, String>>,
    },
    /// `accepted` hears at once whether the request can be carried out;
    /// `reply`, the outcome once the job runs at the new parallelism.
    Rescale {
        request: weir_api::rest::RescaleRequest,
        accepted: Sender<Result<(), String>>,
        reply: Sender<Result<String, weir_api::rest::TriggerFailure>>,
    },
    /// End the sources; the job drains and finishes.
    Stop,
    Cancel,
}

/// Everything the loop reaches outside itself: TaskManagers, time, storage.
pub(super) struct Effects {
    pub links: Box<dyn TaskManagerLinks>,
    pub clock: Arc<dyn Clock>,
    pub storage: StorageWorker,
}

/// A registered TaskManager.
pub(super) struct Tm {
    pub id: String,
    pub slots: usize,
    pub data_addr: String,
    pub last_seen: Instant,
}

/// What one turn of the loop took.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Turn {
    /// An event, a request or a savepoint's answer.
    Took,
    /// Nothing within the wait.
    Idle,
    /// The connections' side is gone.
    Closed,
}

/// All of the job's state on the JobManager.
pub(super) struct JobLoop {
    pub config: JobManagerConfig,
    pub builder: Arc<dyn JobBuilder>,
    pub plan: Plan,
    pub state: JobState,
    pub tms: BTreeMap<u64, Tm>,
    pub attempt: Option<Attempt>,
    /// Not before this may the next attempt be deployed.
    pub restart_at: Instant,
    /// What the running attempt restored from (the last one's, between attempts).
    pub restore: Option<RestorePoint>,
    /// Where the next attempt is to restore from.
    pub from: RestoreFrom,
    /// Where the loop is with reading what the next attempt needs.
    pub preparation: Preparation,
    /// The last number a request to the storage thread was given.
    pub tickets: u64,
    /// Where storage calls are made.
    pub storage: StorageWorker,
    /// The checkpoints of earlier attempts.
    pub history: Vec<CheckpointStats>,
    pub rescale: Option<PendingRescale>,
    pub restarts: Restarts,
    pub failure: Option<String>,
    pub view: Arc<Mutex<ClusterView>>,
    pub deployed_at: Instant,
    pub links: Box<dyn TaskManagerLinks>,
    pub clock: Arc<dyn Clock>,
}

impl JobLoop {
    pub fn new(
        config: JobManagerConfig,
        builder: Arc<dyn JobBuilder>,
        plan: Plan,
        restore: Option<RestorePoint>,
        view: Arc<Mutex<ClusterView>>,
        effects: Effects,
    ) -> Self {
        let Effects { links, clock, storage } = effects;
        let now = clock.now();
        JobLoop {
            restarts: Restarts::new(config.restart.clone()),
            config,
            builder,
            plan,
            state: JobState::Created,
            tms: BTreeMap::new(),
            attempt: None,
            restart_at: now,
            from: RestoreFrom::Kept(restore.clone()),
            preparation: Preparation::Unasked,
            tickets: 0,
            storage,
            restore,
            history: Vec::new(),
            rescale: None,
            failure: None,
            view,
            deployed_at: now,
            links,
            clock,
        }
    }

    /// Runs the job until it is over.
    pub fn run(mut self, events: Receiver<Event>, requests: Receiver<Request>) {
        while !self.state.is_terminal() {
            if self.turn(&events, &requests, TICK) == Turn::Closed {
                break;
            }
        }
        // The job is over: the TaskManagers may go (or idle, see `release_taskmanagers`).
        if self.config.release_taskmanagers {
            for conn in self.tms.keys().copied().collect::<Vec<_>>() {
                self.links.send(conn, &ToTaskManager::Shutdown);
            }
        }
        self.publish();
        tracing::info!("job {} {}", self.config.spec.name, self.state);
    }

    /// Takes what comes first within `wait`, then looks at the clock:
    /// heartbeats, the coordinator's timers, a deployment that is due.
    pub fn turn(&mut self, events: &Receiver<Event>, requests: &Receiver<Request>, wait: Duration) -> Turn {
        let never = crossbeam_channel::never();
        let savepoint = self.rescale.as_ref().filter(|r| r.path.is_none()).map_or(&never, |r| &r.savepoint).clone();
        let done = self.storage.done.clone();
        let took = crossbeam_channel::select! {
            recv(events) -> e => match e {
                Ok(e) => {
                    self.on_event(e);
                    Turn::Took
                }
                Err(_) => return Turn::Closed,
            },
            recv(requests) -> r => {
                if let Ok(r) = r {
                    self.on_request(r);
                }
                Turn::Took
            }
            recv(savepoint) -> r => {
                self.on_rescale_savepoint(r.unwrap_or_else(|_| Err("the savepoint was abandoned".into())));
                Turn::Took
            }
            recv(done) -> d => {
                match d {
                    Ok(Done::Written { attempt, written }) => self.on_written(attempt, written),
                    Ok(Done::Ready { ticket, outcome }) => self.on_ready(ticket, outcome),
                    Err(_) => {} // the worker keeps a sender: never
                }
                Turn::Took
            }
            default(wait) => Turn::Idle,
        };
        // What queued up while the loop was busy counts before heartbeats
        // are judged: a TaskManager whose heartbeats wait in the queue is not
        // silent.
        while let Ok(e) = events.try_recv() {
            self.on_event(e);
        }
        self.check_heartbeats();
        self.tick_coordinator();
        self.maybe_deploy();
        self.publish();
        took
    }

    pub fn transition(&mut self, event: JobEvent) {
        match self.state.transition(event) {
            Ok(next) => {
                if next != self.state {
                    tracing::info!("job {}: {} -> {next}", self.config.spec.name, self.state);
                }
                self.state = next;
            }
            Err(e) => tracing::error!("job {}: {e}", self.config.spec.name),
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Registered { conn, id, slots, data_addr } => {
                tracing::info!("TaskManager {id} registered: {slots} slots, data at {data_addr}");
                self.tms.insert(conn, Tm { id, slots, data_addr, last_seen: self.clock.now() });
                if let Some(r) = self.rescale.as_mut().filter(|r| r.slots_by.is_some()) {
                    r.timings.slots = Some(self.clock.now());
                }
            }
            Event::Disconnected { conn, why } => self.lose(conn, &why),
            Event::Message { conn, message } => {
                if let Some(tm) = self.tms.get_mut(&conn) {
                    tm.last_seen = self.clock.now();
                }
                self.on_message(conn, message);
            }
        }
    }

    /// Whether `attempt` is the running attempt (anything else is a straggler).
    pub fn current(&self, attempt: u64) -> bool {
        self.attempt.as_ref().is_some_and(|a| a.id == attempt)
    }

    /// The `(chain, subtask)` pairs the TaskManager on `conn` runs in the current attempt.
    fn runs(&self, conn: u64) -> Option<&HashSet<(usize, usize)>> {
        self.attempt.as_ref().and_then(|a| a.assignment.get(&conn))
    }

    /// Whether a message about `attempt` from `conn` may be taken: it is for
    /// the current attempt (anything else is a straggler, ignored quietly)
    /// and `conn` runs some of it (anything else is forged, and logged).
    fn takes_part(&self, conn: u64, attempt: u64, what: &str) -> bool {
        if !self.current(attempt) {
            return false;
        }
        if self.runs(conn).is_none() {
            tracing::warn!("{} sent {what} for an attempt it has no part in: ignored", self.who(conn));
            return false;
        }
        true
    }

    fn who(&self, conn: u64) -> String {
        self.tms.get(&conn).map_or_else(|| format!("connection {conn}"), |t| format!("TaskManager {}", t.id))
    }

    fn on_message(&mut self, conn: u64, message: ToJobManager) {
        match message {
            ToJobManager::Register { .. } => {}
            ToJobManager::Heartbeat { attempt, metrics, gauges } => {
                let Some(runs) = attempt.filter(|&a| self.current(a)).and_then(|_| self.runs(conn)) else { return };
                let mut view = self.view.lock().expect("view poisoned");
                for (c, i, m) in metrics.into_iter().filter(|(c, i, _)| runs.contains(&(*c, *i))) {
                    if let Some(slot) = view.metrics.get_mut(c).and_then(|chain| chain.get_mut(i)) {
                        *slot = m;
                    }
                }
                for (_, _, g) in gauges.into_iter().filter(|(c, i, _)| runs.contains(&(*c, *i))) {
                    for gauge in g.into_iter().take(MAX_GAUGES) {
                        // A bound on the job's gauges too: subtasks come and go with rescales.
                        if view.gauges.len() < 10 * MAX_GAUGES || view.gauges.contains_key(&gauge.key) {
                            view.gauges.insert(gauge.key, gauge.value);
                        }
                    }
                }
            }
            ToJobManager::Report { attempt, report } => {
                if !self.takes_part(conn, attempt, "a checkpoint report") {
                    return;
                }
                let task = reported_task(&report);
                if !self.plan.task_of(task).is_some_and(|s| self.runs(conn).is_some_and(|r| r.contains(&s))) {
                    tracing::warn!("{} reported on task {task}, which it does not run: ignored", self.who(conn));
                    return;
                }
                let now = self.clock.now_ms();
                let commands = match self.attempt.as_mut().and_then(|a| a.coordinator.as_mut()) {
                    Some(c) => c.on_report(report, now),
                    None => Vec::new(),
                };
                self.dispatch(commands);
            }
            ToJobManager::Failed { attempt, reason } => {
                if self.takes_part(conn, attempt, "a failure") {
                    let who = self.who(conn);
                    self.fail_over(format!("{who}: {reason}"));
                }
            }
            ToJobManager::Finished { attempt } => {
                if !self.takes_part(conn, attempt, "the end of its tasks") {
                    return;
                }
                let a = self.attempt.as_mut().expect("current attempt");
                a.finished.insert(conn);
                if a.finished.len() == a.assignment.len() {
                    self.attempt_ended();
                }
            }
        }
    }

    /// A TaskManager is gone; the attempt fails over if it ran some of it.
    fn lose(&mut self, conn: u64, why: &str) {
        let Some(tm) = self.tms.remove(&conn) else { return };
        self.links.close(conn);
        tracing::warn!("TaskManager {} lost: {why}", tm.id);
        if self.attempt.as_ref().is_some_and(|a| a.assignment.contains_key(&conn)) {
            self.fail_over(format!("TaskManager {} lost: {why}", tm.id));
        }
    }

    fn check_heartbeats(&mut self) {
        let (timeout, now) = (self.config.heartbeat_timeout, self.clock.now());
        let silent: Vec<u64> =
            self.tms.iter().filter(|(_, t)| now.duration_since(t.last_seen) > timeout).map(|(c, _)| *c).collect();
        for conn in silent {
            self.lose(conn, &format!("no heartbeat for {timeout:?}"));
        }
    }

    /// Sends `message` to a registered TaskManager.
    pub fn send(&mut self, conn: u64, message: &ToTaskManager) {
        if self.tms.contains_key(&conn) {
            self.links.send(conn, message);
        }
    }

    /// Refreshes what the REST API shows.
    pub fn publish(&self) {
        let mut view = self.view.lock().expect("view poisoned");
        view.state = self.state;
        view.restarts = self.restarts.attempts();
        view.failure = self.failure.clone();
        // The history only grows: copy it out when it did, not on every tick.
        let current = self.attempt.as_ref().and_then(|a| a.coordinator.as_ref()).map_or(&[][..], |c| &c.history[..]);
        if view.checkpoints.len() != self.history.len() + current.len() {
            view.checkpoints = self.history.iter().chain(current).cloned().collect();
        }
        let used: HashMap<u64, usize> = self
            .attempt
            .as_ref()
            .map(|a| {
                a.assignment.iter().map(|(c, s)| (*c, s.iter().map(|x| x.1).collect::<HashSet<_>>().len())).collect()
            })
            .unwrap_or_default();
        let now = self.clock.now();
        view.taskmanagers = self
            .tms
            .iter()
            .map(|(conn, t)| TaskManagerView {
                id: t.id.clone(),
                data_address: t.data_addr.clone(),
                slots: t.slots,
                slots_used: used.get(conn).copied().unwrap_or(0),
                last_heartbeat_ms_ago: now.duration_since(t.last_seen).as_millis() as u64,
            })
            .collect();
    }
}

/// The task a checkpoint report is about.
fn reported_task(report: &TaskReport) -> usize {
    match report {
        TaskReport::Ack { task, .. } | TaskReport::Decline { task, .. } | TaskReport::SourceFinished { task } => *task,
    }
}
