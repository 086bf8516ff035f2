//! Unit tests of the JobManager's event loop: fake TaskManagers (events on
//! a channel in, recorded messages out) and a manual clock; no socket, no sleep.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use weir_core::checkpoint::coordinator::{CheckpointConfig, Command, TaskReport};
use weir_core::checkpoint::metadata::RestoredSnapshot;
use weir_core::checkpoint::storage::{CheckpointStorage, LocalStorage};
use weir_core::exchange::Partitioning;
use weir_core::graph::JobGraph;
use weir_core::metrics::{Gauge, GaugeKey, MetricsSnapshot};
use weir_core::source::Source;
use weir_core::time::Timestamp;

use weir_api::rest::RescaleRequest;

use super::event_loop::{Clock, Effects, Event, JobLoop, Request, TaskManagerLinks, Turn};
use super::job::Plan;
use super::storage::StorageWorker;
use super::{ClusterView, JobManagerConfig, Reply};
use crate::frame;
use crate::protocol::{Deployment, JobSpec, ToJobManager, ToTaskManager};
use crate::restart::RestartStrategy;
use crate::state::JobState;
use crate::{BuiltJob, JobBuilder};

/// Time that moves only when a test says so.
struct ManualClock {
    start: Instant,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.elapsed.lock().unwrap()
    }

    fn now_ms(&self) -> Timestamp {
        1_700_000_000_000 + self.elapsed.lock().unwrap().as_millis() as Timestamp
    }
}

/// TaskManager links that record what the loop sends (each message a copy,
/// through the wire format) and which connections it closes.
#[derive(Clone, Default)]
struct FakeLinks {
    sent: Arc<Mutex<Vec<(u64, ToTaskManager)>>>,
    closed: Arc<Mutex<Vec<u64>>>,
}

impl TaskManagerLinks for FakeLinks {
    fn send(&mut self, conn: u64, message: &ToTaskManager) {
        let mut wire = Vec::new();
        frame::send(&mut wire, message).unwrap();
        let copy = frame::recv(&mut wire.as_slice(), &mut Vec::new()).unwrap();
        self.sent.lock().unwrap().push((conn, copy));
    }

    fn close(&mut self, conn: u64) {
        self.closed.lock().unwrap().push(conn);
    }
}

/// A checkpoint directory of its own, removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weir-jm-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `numbers` (a source) hash-partitioned into `sum`, both at the spec's
/// parallelism: two chains, tasks `0..p` the sources and `p..2p` the sums.
/// The factories never run: the JobManager only plans.
struct TestJob {
    storage: Option<Arc<LocalStorage>>,
}

impl JobBuilder for TestJob {
    fn build(&self, spec: &JobSpec) -> Result<BuiltJob, String> {
        let mut graph = JobGraph::new(spec.name.clone());
        let unused = |_: &_| -> Box<dyn Source<u64>> { unreachable!("the JobManager runs no task") };
        let numbers = graph.add_source::<u64>("numbers", spec.parallelism, unused);
        let sum = graph.add_operator::<u64, u64>("sum", spec.parallelism, |_, _| unreachable!("no task here"));
        let by_value = Partitioning::Hash { key_hash: Arc::new(|v: &u64| *v), max_parallelism: graph.max_parallelism };
        graph.connect(numbers, sum, by_value).map_err(|e| e.to_string())?;
        let checkpointing = self.storage.clone().map(|s| {
            // Only savepoints and tests' own triggers: no periodic checkpoint gets in the way.
            CheckpointConfig::new(s as Arc<dyn CheckpointStorage>, Duration::from_secs(3600))
        });
        Ok(BuiltJob { graph, checkpointing })
    }

    fn restore(&self, _spec: &JobSpec, uri: &str) -> Result<RestoredSnapshot, String> {
        let storage = self.storage.clone().ok_or("no checkpoint directory")?;
        let dir = uri.strip_prefix(&storage.uri("")).ok_or_else(|| format!("{uri} is elsewhere"))?;
        RestoredSnapshot::open(storage, dir).map_err(|e| e.to_string())
    }
}

/// The event loop with fake TaskManagers around it.
struct Harness {
    job: JobLoop,
    events: Sender<Event>,
    events_rx: Receiver<Event>,
    requests: Sender<Request>,
    requests_rx: Receiver<Request>,
    links: FakeLinks,
    clock: Arc<ManualClock>,
    _dir: TempDir,
}

impl Harness {
    fn new(name: &str, parallelism: usize, restart: RestartStrategy, checkpointing: bool) -> Self {
        let dir = TempDir::new(name);
        let storage = checkpointing.then(|| Arc::new(LocalStorage::new(&dir.0)));
        let builder: Arc<dyn JobBuilder> = Arc::new(TestJob { storage });
        let spec = JobSpec::new(name, Vec::new(), parallelism);
        let mut config = JobManagerConfig::new(spec, "127.0.0.1:0".parse().unwrap());
        config.restart = restart;
        let plan = Plan::of(&config.spec, builder.as_ref()).unwrap();
        let view = Arc::new(Mutex::new(ClusterView::initial(&config, &plan, None)));
        let links = FakeLinks::default();
        let clock = Arc::new(ManualClock { start: Instant::now(), elapsed: Mutex::new(Duration::ZERO) });
        let effects =
            Effects { links: Box::new(links.clone()), clock: clock.clone(), storage: StorageWorker::inline() };
        let job = JobLoop::new(config, builder, plan, None, view, effects);
        let (events, events_rx) = crossbeam_channel::unbounded();
        let (requests, requests_rx) = crossbeam_channel::unbounded();
        Harness { job, events, events_rx, requests, requests_rx, links, clock, _dir: dir }
    }

    /// Lets the loop take everything queued (what its storage work reported
    /// too), then look at the clock once more.
    fn settle(&mut self) {
        while self.job.turn(&self.events_rx, &self.requests_rx, Duration::ZERO) == Turn::Took
            || !self.job.storage.done.is_empty()
        {}
    }

    fn event(&mut self, event: Event) {
        self.events.send(event).unwrap();
        self.settle();
    }

    fn register(&mut self, conn: u64, slots: usize) {
        let (id, data_addr) = (format!("tm-{conn}"), format!("10.0.0.{conn}:7000"));
        self.event(Event::Registered { conn, id, slots, data_addr });
    }

    fn message(&mut self, conn: u64, message: ToJobManager) {
        self.event(Event::Message { conn, message });
    }

    fn request(&mut self, request: Request) {
        self.requests.send(request).unwrap();
        self.settle();
    }

    /// Asks for a rescale: `Err` is a refusal, `Ok` the channel its outcome comes on.
    fn rescale(&mut self, request: RescaleRequest) -> Result<super::RescaleReply, String> {
        let ((tx, answer), (accepted, refused)) = (crossbeam_channel::bounded(1), crossbeam_channel::bounded(1));
        self.request(Request::Rescale { request, accepted, reply: tx });
        refused.try_recv().expect("an answer at once").map(|()| answer)
    }

    fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.settle();
    }

    /// What the loop sent since the last look.
    fn sent(&self) -> Vec<(u64, ToTaskManager)> {
        std::mem::take(&mut *self.links.sent.lock().unwrap())
    }

    /// The deployments sent since the last look (anything else sent is dropped).
    fn deployments(&self) -> Vec<(u64, Deployment)> {
        let deploy = |(conn, m)| match m {
            ToTaskManager::Deploy(d) => Some((conn, *d)),
            _ => None,
        };
        self.sent().into_iter().filter_map(deploy).collect()
    }

    /// Deploys the job on TaskManagers `1..=n` with a slot each: the attempt's number.
    fn running_on(&mut self, n: u64) -> u64 {
        (1..=n).for_each(|conn| self.register(conn, 1));
        let deployed = self.deployments();
        assert_eq!(deployed.len(), n as usize, "one deployment per TaskManager");
        assert_eq!(self.job.state, JobState::Running);
        deployed[0].1.attempt
    }

    fn view(&self) -> ClusterView {
        self.job.view.lock().unwrap().clone()
    }
}

fn fixed_delay(delay: Duration, max_attempts: u32) -> RestartStrategy {
    RestartStrategy::FixedDelay { delay, max_attempts }
}

fn reply() -> (Sender<Result<String, String>>, Reply) {
    crossbeam_channel::bounded(1)
}

fn ack(attempt: u64, task: usize, checkpoint_id: u64) -> ToJobManager {
    ToJobManager::Report { attempt, report: TaskReport::Ack { task, checkpoint_id, states: Vec::new() } }
}

/// The checkpoint commands sent, as `(connection, attempt, task, command)`.
fn commands(sent: Vec<(u64, ToTaskManager)>) -> Vec<(u64, u64, usize, Command)> {
    let command = |(conn, m)| match m {
        ToTaskManager::Command { attempt, task, command } => Some((conn, attempt, task, command)),
        _ => None,
    };
    sent.into_iter().filter_map(command).collect()
}

#[test]
fn a_job_waits_for_enough_slots_and_deploys_when_they_register() {
    let mut h = Harness::new("slots", 3, RestartStrategy::default(), false);
    h.register(1, 2);
    assert!(h.sent().is_empty(), "two slots are not enough for parallelism 3");
    assert_eq!(h.job.state, JobState::Created);
    h.register(2, 1);
    let deployed = h.deployments();
    assert_eq!(h.job.state, JobState::Running);
    assert_eq!(deployed.iter().map(|(conn, _)| *conn).collect::<Vec<_>>(), [1, 2]);
    let local = |i: usize| deployed[i].1.local.iter().copied().collect::<HashSet<_>>();
    // Slots are taken from the TaskManagers in turn: 1, 2, then 1 again.
    assert_eq!(local(0), HashSet::from([(0, 0), (1, 0), (0, 2), (1, 2)]));
    assert_eq!(local(1), HashSet::from([(0, 1), (1, 1)]));
    for (_, d) in &deployed {
        assert_eq!((d.attempt, d.spec.parallelism, &d.restore), (deployed[0].1.attempt, 3, &None));
        assert_eq!(d.peers.len(), 6, "every TaskManager learns where every subtask runs");
        assert!(d.peers.contains(&((1, 1), "10.0.0.2:7000".to_string())));
    }
    let view = h.view();
    assert_eq!(view.state, JobState::Running);
    let used: Vec<(String, usize, usize)> =
        view.taskmanagers.iter().map(|t| (t.id.clone(), t.slots, t.slots_used)).collect();
    assert_eq!(used, [("tm-1".to_string(), 2, 2), ("tm-2".to_string(), 1, 1)]);
}

#[test]
fn a_lost_taskmanager_fails_the_attempt_over_and_the_job_is_redeployed_after_the_restart_delay() {
    let mut h = Harness::new("lost", 2, fixed_delay(Duration::from_secs(2), 3), false);
    let first = h.running_on(2);
    h.event(Event::Disconnected { conn: 2, why: "connection closed".into() });
    let sent = h.sent();
    assert!(matches!(sent[..], [(1, ToTaskManager::Cancel { attempt })] if attempt == first), "{sent:?}");
    assert_eq!((h.job.state, h.view().restarts), (JobState::Restarting, 1));
    h.register(3, 1);
    h.advance(Duration::from_millis(1500));
    assert!(h.sent().is_empty(), "not before the restart delay");
    h.advance(Duration::from_millis(600));
    let deployed = h.deployments();
    assert_eq!(deployed.iter().map(|(conn, _)| *conn).collect::<Vec<_>>(), [1, 3]);
    assert!(deployed.iter().all(|(_, d)| d.attempt != first), "a new attempt");
    assert_eq!(h.job.state, JobState::Running);
}

#[test]
fn a_taskmanager_that_misses_its_heartbeats_is_lost_and_without_restarts_the_job_fails() {
    let mut h = Harness::new("heartbeats", 2, RestartStrategy::None, false);
    let attempt = h.running_on(2);
    h.advance(Duration::from_secs(6));
    h.message(1, ToJobManager::Heartbeat { attempt: Some(attempt), metrics: Vec::new(), gauges: Vec::new() });
    h.advance(Duration::from_secs(4));
    assert_eq!(h.job.state, JobState::Running, "silent for 10 s is not yet too long");
    h.advance(Duration::from_secs(1));
    assert_eq!(*h.links.closed.lock().unwrap(), [2]);
    assert_eq!(h.job.state, JobState::Failed);
    let failure = h.view().failure.unwrap();
    assert!(failure.contains("tm-2 lost: no heartbeat for 10s"), "{failure}");
    assert!(h.sent().iter().any(|(conn, m)| *conn == 1 && matches!(m, ToTaskManager::Cancel { .. })));
}

#[test]
fn a_rescale_takes_a_stop_with_savepoint_and_redeploys_at_the_new_parallelism() {
    let mut h = Harness::new("rescale", 1, RestartStrategy::default(), true);
    h.register(1, 2);
    let first = h.deployments()[0].1.attempt;
    let answer = h.rescale(RescaleRequest::to(2)).unwrap();
    let triggered = commands(h.sent());
    let [(1, attempt, 0, Command::Trigger { barrier, drain: false, .. })] = triggered[..] else {
        panic!("a savepoint is triggered at the source: {triggered:?}")
    };
    assert!(barrier.is_savepoint && attempt == first);
    h.message(1, ack(first, 0, barrier.checkpoint_id));
    h.message(1, ack(first, 1, barrier.checkpoint_id));
    let after: Vec<(usize, Command)> = commands(h.sent()).into_iter().map(|(_, _, t, c)| (t, c)).collect();
    assert!(after.contains(&(0, Command::EndOfInput)), "the job stops after its savepoint: {after:?}");
    assert!(answer.is_empty(), "the answer comes once the job runs at the new parallelism");
    h.message(1, ToJobManager::Finished { attempt: first });
    let deployed = h.deployments();
    let d = &deployed[0].1;
    assert_eq!((deployed.len(), d.spec.parallelism, d.local.len()), (1, 2, 4));
    let path = answer.try_recv().unwrap().unwrap();
    assert!(path.contains("rescale/savepoints/sp-"), "{path}");
    assert_eq!(d.restore.as_deref(), Some(path.as_str()));
    let view = h.view();
    assert_eq!((view.state, view.parallelism, view.restored_from), (JobState::Running, 2, Some(path)));
}

/// The savepoint is verified while the tasks it stopped still end: the job
/// is not replanned before they all did, and then deployed at once.
#[test]
fn a_rescales_savepoint_is_verified_while_its_tasks_stop() {
    let mut h = Harness::new("verify-early", 1, RestartStrategy::default(), true);
    h.register(1, 2);
    let first = h.deployments()[0].1.attempt;
    let answer = h.rescale(RescaleRequest::to(2)).unwrap();
    let triggered = commands(h.sent());
    let [(1, _, 0, Command::Trigger { barrier, .. })] = triggered[..] else { panic!("{triggered:?}") };
    h.message(1, ack(first, 0, barrier.checkpoint_id));
    h.message(1, ack(first, 1, barrier.checkpoint_id));
    assert!(
        matches!(h.job.preparation, super::storage::Preparation::Held(Ok(_), _)),
        "read before the tasks end: {:?}",
        h.job.preparation
    );
    let view = h.view();
    assert_eq!((view.state, view.parallelism), (JobState::Running, 1), "not replanned while the tasks stop");
    let rescale = h.job.rescale.as_ref().expect("a rescale under way");
    assert!(rescale.timings.verified.is_some() && rescale.timings.stopped.is_none());
    h.message(1, ToJobManager::Finished { attempt: first });
    let deployed = h.deployments();
    assert_eq!(deployed.len(), 1, "deployed as soon as the tasks ended, with nothing more to read");
    let path = answer.try_recv().unwrap().unwrap();
    assert_eq!(deployed[0].1.restore.as_deref(), Some(path.as_str()));
    assert_eq!((h.job.state, h.view().parallelism), (JobState::Running, 2));
}

/// A TaskManager lost after the savepoint, before its tasks ended: the
/// rescale goes on from the savepoint already read, not from scratch.
#[test]
fn a_rescale_goes_on_from_its_verified_savepoint_when_a_taskmanager_is_lost_while_stopping() {
    let mut h = Harness::new("lost-stopping", 2, RestartStrategy::default(), true);
    h.register(1, 2);
    h.register(2, 2);
    let first = h.deployments()[0].1.attempt;
    let answer = h.rescale(RescaleRequest::to(3)).unwrap();
    let barrier = triggered(&mut h);
    for task in 0..4 {
        h.message(1, ack(first, task, barrier.checkpoint_id));
    }
    assert!(matches!(h.job.preparation, super::storage::Preparation::Held(Ok(_), _)), "{:?}", h.job.preparation);
    h.event(Event::Disconnected { conn: 1, why: "connection closed".into() });
    h.register(3, 2);
    let deployed = h.deployments();
    assert!(!deployed.is_empty(), "redeployed from the savepoint");
    let path = answer.try_recv().unwrap().unwrap();
    assert!(deployed.iter().all(|(_, d)| d.spec.parallelism == 3 && d.restore.as_deref() == Some(path.as_str())));
}

#[test]
fn a_rescale_may_give_a_vertex_its_own_parallelism() {
    let mut h = Harness::new("per-vertex", 1, RestartStrategy::default(), true);
    h.register(1, 3);
    let first = h.deployments()[0].1.attempt;
    let sum_at_3 = RescaleRequest { vertices: [("1-sum".to_string(), 3)].into(), ..Default::default() };
    let answer = h.rescale(sum_at_3.clone()).unwrap();
    let [(1, _, 0, Command::Trigger { barrier, .. })] = commands(h.sent())[..] else { panic!("a savepoint") };
    let again = h.rescale(sum_at_3.clone()).unwrap();
    let other = h.rescale(RescaleRequest::to(2)).unwrap_err();
    assert!(other.contains("another rescale is already in progress"), "{other}");
    h.message(1, ack(first, 0, barrier.checkpoint_id));
    h.message(1, ack(first, 1, barrier.checkpoint_id));
    h.message(1, ToJobManager::Finished { attempt: first });
    let deployed = h.deployments();
    let d = &deployed[0].1;
    assert_eq!((d.spec.parallelism, d.spec.vertex_parallelism.get("1-sum")), (1, Some(&3)));
    let mut local = d.local.clone();
    local.sort();
    assert_eq!(local, [(0, 0), (1, 0), (1, 1), (1, 2)], "numbers at 1, sum at 3");
    let path = answer.try_recv().unwrap().unwrap();
    assert_eq!(again.try_recv().unwrap(), Ok(path.clone()), "the request asked again joined the first");
    let view = h.view();
    assert_eq!(view.layout.iter().map(|c| c.parallelism).collect::<Vec<_>>(), [1, 3]);
    // Asked once more, after it completed: the job already runs so, and nothing restarts.
    let done = h.rescale(sum_at_3).unwrap();
    assert_eq!((done.try_recv().unwrap(), h.sent().len()), (Ok(path), 0));
    assert!(h.rescale(RescaleRequest::to(1)).is_ok(), "another assignment is a new rescale");
}

/// A JobManager restarted within its deployment after a rescale resumes at
/// the rescale's parallelism (its own latest checkpoint's), not its flags'.
#[test]
fn a_restarted_jobmanager_resumes_at_the_parallelism_of_its_own_latest_checkpoint() {
    let mut h = Harness::new("resumes", 1, RestartStrategy::default(), true);
    h.job.config.deployment = Some("d-1".into());
    h.register(1, 3);
    let first = h.deployments()[0].1.attempt;
    let sum_at_3 = RescaleRequest { vertices: [("1-sum".to_string(), 3)].into(), ..Default::default() };
    let _answer = h.rescale(sum_at_3).unwrap();
    let [(1, _, 0, Command::Trigger { barrier, .. })] = commands(h.sent())[..] else { panic!("a savepoint") };
    h.message(1, ack(first, 0, barrier.checkpoint_id));
    h.message(1, ack(first, 1, barrier.checkpoint_id));
    h.message(1, ToJobManager::Finished { attempt: first });
    let second = h.deployments()[0].1.attempt;
    // A snapshot at the new parallelism: numbers (task 0) and sum at 3 (tasks 1..=3).
    let (tx, _taken) = reply();
    h.request(Request::Savepoint { stop: false, drain: false, reply: tx });
    let id = h.job.attempt.as_ref().unwrap().coordinator.as_ref().unwrap().in_flight().expect("a checkpoint");
    for task in 0..4 {
        h.message(1, ack(second, task, id));
    }
    let mut flags = h.job.config.clone();
    flags.spec = JobSpec::new("resumes", Vec::new(), 1);
    let plan = Plan::of(&flags.spec, h.job.builder.as_ref()).unwrap().deployed_as(flags.deployment.clone());
    let resumed = super::job::as_last_run(&flags, h.job.builder.as_ref(), &plan).unwrap().expect("another spec");
    assert_eq!((resumed.parallelism, resumed.vertex_parallelism), (1, [("1-sum".to_string(), 3)].into()));
    flags.deployment = Some("d-2".into());
    let elsewhere = Plan::of(&flags.spec, h.job.builder.as_ref()).unwrap().deployed_as(flags.deployment.clone());
    assert!(super::job::as_last_run(&flags, h.job.builder.as_ref(), &elsewhere).unwrap().is_none(), "not its own");
}

#[test]
fn a_rescale_the_job_cannot_run_at_is_refused_before_anything_stops() {
    let mut h = Harness::new("refused", 1, RestartStrategy::default(), true);
    h.running_on(1);
    let unknown = RescaleRequest { vertices: [("9-nope".to_string(), 2)].into(), ..Default::default() };
    let why = h.rescale(unknown).unwrap_err();
    assert!(why.contains("9-nope") && why.contains("0-numbers, 1-sum"), "{why}");
    let too_many = h.rescale(RescaleRequest::to(100_000)).unwrap_err();
    assert!(too_many.contains("above the max parallelism"), "{too_many}");
    assert!(h.rescale(RescaleRequest::default()).unwrap_err().contains("nothing to rescale"));
    assert!(commands(h.sent()).is_empty(), "no savepoint was triggered");
    assert_eq!(h.job.state, JobState::Running);
}

#[test]
fn a_savepoint_request_is_routed_to_the_source_tasks_and_answered() {
    let mut h = Harness::new("savepoint", 2, RestartStrategy::default(), true);
    let (tx, early) = reply();
    h.request(Request::Savepoint { stop: false, drain: false, reply: tx });
    assert!(early.try_recv().unwrap().unwrap_err().contains("not running"));
    let attempt = h.running_on(2);
    let (tx, answer) = reply();
    h.request(Request::Savepoint { stop: false, drain: false, reply: tx });
    // Task i of a chain runs on TaskManager i + 1 (one slot each); tasks 0 and 1 are the sources.
    let triggers: Vec<(u64, usize)> = commands(h.sent()).iter().map(|(conn, _, task, _)| (*conn, *task)).collect();
    assert_eq!(triggers, [(1, 0), (2, 1)]);
    let id = h.job.attempt.as_ref().unwrap().coordinator.as_ref().unwrap().in_flight().unwrap();
    for (conn, task) in [(1, 0), (2, 1), (1, 2), (2, 3)] {
        h.message(conn, ack(attempt, task, id));
    }
    let uri = answer.try_recv().unwrap().unwrap();
    assert!(uri.contains(&format!("savepoint/savepoints/sp-{id}")), "{uri}");
    let completions: Vec<(u64, usize)> = commands(h.sent())
        .into_iter()
        .filter(|(_, _, _, c)| *c == Command::Complete { checkpoint_id: id })
        .map(|(conn, _, task, _)| (conn, task))
        .collect();
    assert_eq!(completions, [(1, 0), (2, 1), (1, 2), (2, 3)], "every task hears of the completion");
    assert_eq!(h.job.state, JobState::Running, "a savepoint without stop leaves the job running");
}

#[test]
fn reports_are_taken_only_from_the_taskmanager_that_runs_the_task() {
    let mut h = Harness::new("forged", 2, RestartStrategy::default(), true);
    let attempt = h.running_on(2);
    h.register(3, 1); // registered, but with no part in the attempt
    let (tx, answer) = reply();
    h.request(Request::Savepoint { stop: false, drain: false, reply: tx });
    h.sent();
    let id = h.job.attempt.as_ref().unwrap().coordinator.as_ref().unwrap().in_flight().unwrap();
    // TaskManager 2 runs tasks 1 and 3: its acks for TaskManager 1's tasks, and
    // anything from TaskManager 3, are forgeries.
    for (conn, task) in [(2, 0), (2, 2), (3, 0), (3, 2), (2, 1), (2, 3)] {
        h.message(conn, ack(attempt, task, id));
    }
    h.message(3, ToJobManager::Failed { attempt, reason: "forged".into() });
    h.message(3, ToJobManager::Finished { attempt });
    let metrics = vec![(0, 0, MetricsSnapshot { records_in: 7, ..Default::default() })];
    h.message(2, ToJobManager::Heartbeat { attempt: Some(attempt), metrics, gauges: Vec::new() });
    assert!(answer.try_recv().is_err(), "no savepoint completed on forged acks");
    assert_eq!((h.job.state, h.view().restarts, h.view().metrics[0][0].records_in), (JobState::Running, 0, 0));
    for (conn, task) in [(1, 0), (1, 2)] {
        h.message(conn, ack(attempt, task, id));
    }
    assert!(answer.try_recv().unwrap().is_ok(), "the owners' acks complete it");
}

#[test]
fn a_jobmanager_deposed_by_a_newer_epoch_stops_the_job_and_completes_nothing() {
    let mut h = Harness::new("deposed", 1, RestartStrategy::default(), true);
    let storage = h.job.plan.checkpointing.as_ref().unwrap().storage.clone();
    h.job.config.epoch = Some(100);
    weir_core::checkpoint::fence::claim(storage.as_ref(), "deposed", 100).unwrap();
    let attempt = h.running_on(1);
    // Another JobManager took the job over (its lease, then its claim).
    weir_core::checkpoint::fence::claim(storage.as_ref(), "deposed", 200).unwrap();
    let (tx, answer) = reply();
    h.request(Request::Savepoint { stop: false, drain: false, reply: tx });
    let id = h.job.attempt.as_ref().unwrap().coordinator.as_ref().unwrap().in_flight().unwrap();
    h.message(1, ack(attempt, 0, id));
    h.message(1, ack(attempt, 1, id));
    assert!(answer.try_recv().unwrap().unwrap_err().contains("fenced"));
    assert_eq!(h.job.state, JobState::Failed, "no restart: the job is the other JobManager's now");
    assert!(h.view().failure.unwrap().contains("newer epoch (200"), "{:?}", h.view().failure);
    assert!(storage.list("deposed/").unwrap().iter().all(|k| !k.ends_with("_metadata")), "nothing completed");
    assert!(h.sent().iter().any(|(_, m)| matches!(m, ToTaskManager::Cancel { .. })), "its tasks are cancelled");
}

#[test]
fn a_deposed_jobmanager_does_not_redeploy_after_a_failure() {
    let mut h = Harness::new("deposed-restart", 1, fixed_delay(Duration::from_secs(1), 5), true);
    let storage = h.job.plan.checkpointing.as_ref().unwrap().storage.clone();
    h.job.config.epoch = Some(100);
    let attempt = h.running_on(1);
    weir_core::checkpoint::fence::claim(storage.as_ref(), "deposed-restart", 200).unwrap();
    h.message(1, ToJobManager::Failed { attempt, reason: "a task failed".into() });
    h.sent();
    h.advance(Duration::from_secs(2));
    assert!(h.deployments().is_empty(), "nothing deployed: its sinks' recovery would undo the new leader's work");
    assert_eq!(h.job.state, JobState::Failed);
    assert!(h.view().failure.unwrap().contains("fenced"));
}

/// A checkpoint storage that calls `before` before each `_metadata` write
/// (to make it slow on the harness's clock, or hold it until a test lets it go).
struct BeforeMetadata {
    inner: Arc<dyn CheckpointStorage>,
    before: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for BeforeMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BeforeMetadata({:?})", self.inner)
    }
}

impl CheckpointStorage for BeforeMetadata {
    fn put(&self, path: &str, bytes: &[u8]) -> weir_core::checkpoint::storage::StorageResult<()> {
        if path.ends_with("_metadata") {
            (self.before)();
        }
        self.inner.put(path, bytes)
    }
    fn get(&self, path: &str) -> weir_core::checkpoint::storage::StorageResult<Vec<u8>> {
        self.inner.get(path)
    }
    fn get_range(&self, path: &str, offset: u64, len: u64) -> weir_core::checkpoint::storage::StorageResult<Vec<u8>> {
        self.inner.get_range(path, offset, len)
    }
    fn list(&self, prefix: &str) -> weir_core::checkpoint::storage::StorageResult<Vec<String>> {
        self.inner.list(prefix)
    }
    fn delete(&self, path: &str) -> weir_core::checkpoint::storage::StorageResult<()> {
        self.inner.delete(path)
    }
    fn uri(&self, path: &str) -> String {
        self.inner.uri(path)
    }
}

#[test]
fn a_slow_metadata_write_does_not_make_taskmanagers_whose_heartbeats_queued_up_look_lost() {
    let mut h = Harness::new("slow-storage", 2, RestartStrategy::default(), true);
    let cp = h.job.plan.checkpointing.as_mut().unwrap();
    let delay = h.job.config.heartbeat_timeout * 2;
    let clock = h.clock.clone();
    cp.storage = Arc::new(BeforeMetadata { inner: cp.storage.clone(), before: Box::new(move || clock.advance(delay)) });
    let attempt = h.running_on(2);
    let (tx, answer) = reply();
    h.request(Request::Savepoint { stop: false, drain: false, reply: tx });
    let id = h.job.attempt.as_ref().unwrap().coordinator.as_ref().unwrap().in_flight().unwrap();
    for (conn, task) in [(1, 0), (2, 1), (1, 2)] {
        h.message(conn, ack(attempt, task, id));
    }
    // The last ack, then the heartbeats both TaskManagers sent while its metadata was written.
    for (conn, message) in [
        (2, ack(attempt, 3, id)),
        (1, ToJobManager::Heartbeat { attempt: Some(attempt), metrics: Vec::new(), gauges: Vec::new() }),
        (2, ToJobManager::Heartbeat { attempt: Some(attempt), metrics: Vec::new(), gauges: Vec::new() }),
    ] {
        h.events.send(Event::Message { conn, message }).unwrap();
    }
    h.settle();
    assert!(answer.try_recv().unwrap().is_ok(), "the savepoint completed");
    assert_eq!((h.job.state, h.view().restarts), (JobState::Running, 0), "no TaskManager taken for lost");
}

#[test]
fn savepoints_need_checkpointing() {
    let mut h = Harness::new("no-checkpoints", 1, RestartStrategy::default(), false);
    h.running_on(1);
    let (tx, answer) = reply();
    h.request(Request::Savepoint { stop: true, drain: false, reply: tx });
    assert!(answer.try_recv().unwrap().unwrap_err().contains("checkpointing to be configured"));
    assert!(h.rescale(RescaleRequest::to(2)).unwrap_err().contains("with checkpointing"));
}

#[test]
fn stragglers_of_a_cancelled_attempt_are_ignored() {
    let mut h = Harness::new("stragglers", 1, fixed_delay(Duration::ZERO, 5), true);
    let old = h.running_on(1);
    h.message(1, ToJobManager::Failed { attempt: old, reason: "a task failed".into() });
    h.register(2, 1); // TaskManager 1's slot is free again too: the next attempt goes there, first.
    let new = h.deployments()[0].1.attempt;
    assert_ne!(new, old);
    let restarts = h.view().restarts;
    let metrics = vec![(0, 0, MetricsSnapshot { records_in: 42, ..Default::default() })];
    let key = GaugeKey { name: "orders".into(), labels: vec![("region".into(), "north".into())] };
    let gauges = vec![(0, 0, vec![Gauge { key: key.clone(), value: 7.0 }])];
    h.message(1, ToJobManager::Heartbeat { attempt: Some(old), metrics: metrics.clone(), gauges: gauges.clone() });
    h.message(1, ToJobManager::Failed { attempt: old, reason: "late news".into() });
    h.message(1, ack(old, 0, 1));
    h.message(1, ToJobManager::Finished { attempt: old });
    assert!(h.sent().is_empty(), "nothing is cancelled, nothing redeployed");
    let view = h.view();
    assert_eq!((h.job.state, view.restarts, view.metrics[0][0].records_in), (JobState::Running, restarts, 0));
    assert!(h.job.current(new));
    assert!(view.gauges.is_empty(), "a cancelled attempt's gauges are ignored");
    h.message(1, ToJobManager::Heartbeat { attempt: Some(new), metrics, gauges });
    assert_eq!(h.view().metrics[0][0].records_in, 42, "the current attempt's metrics count");
    assert_eq!(h.view().gauges.get(&key), Some(&7.0), "and so do its gauges");
}

#[test]
fn checkpoints_failing_beyond_tolerance_fail_the_attempt_over() {
    let mut h = Harness::new("tolerance", 1, fixed_delay(Duration::from_secs(1), 5), true);
    h.job.plan.checkpointing.as_mut().unwrap().tolerable_failures = 0;
    let attempt = h.running_on(1);
    let (tx, answer) = reply();
    h.request(Request::Savepoint { stop: false, drain: false, reply: tx });
    let id = h.job.attempt.as_ref().unwrap().coordinator.as_ref().unwrap().in_flight().unwrap();
    let decline = TaskReport::Decline { task: 1, checkpoint_id: id, reason: "disk full".into() };
    h.message(1, ToJobManager::Report { attempt, report: decline });
    assert!(answer.try_recv().unwrap().unwrap_err().contains("disk full"));
    assert_eq!(h.job.state, JobState::Restarting, "one failed checkpoint is beyond a tolerance of none");
    let cancelled =
        h.sent().into_iter().any(|(_, m)| matches!(m, ToTaskManager::Cancel { attempt: a } if a == attempt));
    assert!(cancelled);
}

#[test]
fn a_stop_ends_the_sources_of_the_running_attempt_and_the_job_finishes_once_they_drained() {
    let mut early = Harness::new("stop-early", 2, RestartStrategy::default(), false);
    early.request(Request::Stop);
    assert_eq!(early.job.state, JobState::Cancelled, "nothing runs yet to drain: a stop ends the job");
    early.register(1, 2);
    assert!(early.deployments().is_empty(), "and nothing is deployed after it");
    let mut h = Harness::new("stop", 2, RestartStrategy::default(), false);
    let attempt = h.running_on(2);
    h.request(Request::Stop);
    let mut stopped: Vec<(u64, u64)> = h
        .sent()
        .into_iter()
        .filter_map(|(conn, m)| match m {
            ToTaskManager::StopSources { attempt } => Some((conn, attempt)),
            _ => None,
        })
        .collect();
    stopped.sort();
    assert_eq!(stopped, [(1, attempt), (2, attempt)], "every TaskManager of the attempt");
    assert_eq!(h.job.state, JobState::Running, "the job drains");
    h.message(1, ToJobManager::Finished { attempt });
    h.message(2, ToJobManager::Finished { attempt });
    assert_eq!(h.job.state, JobState::Finished);
}

impl Harness {
    /// Storage calls on a thread of their own (as in a JobManager), with
    /// `_metadata` writes held until the returned gate lets each through.
    fn with_gated_storage(&mut self) -> Sender<()> {
        let (open, gate) = crossbeam_channel::unbounded();
        let cp = self.job.plan.checkpointing.as_mut().unwrap();
        let wait = move || {
            let _ = gate.recv();
        };
        cp.storage = Arc::new(BeforeMetadata { inner: cp.storage.clone(), before: Box::new(wait) });
        self.job.storage = StorageWorker::spawn("test").unwrap();
        open
    }

    /// Settles until `done` holds (the storage thread answers in real time).
    fn until(&mut self, what: &str, mut done: impl FnMut(&mut Harness) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.settle();
            if done(self) {
                return;
            }
            assert!(Instant::now() < deadline, "still waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Deploys on `n` TaskManagers with the storage thread answering.
    fn running_on_threaded(&mut self, n: u64) -> u64 {
        (1..=n).for_each(|conn| self.register(conn, 1));
        let mut deployed = Vec::new();
        self.until("the deployment", |h| {
            deployed.extend(h.deployments());
            !deployed.is_empty()
        });
        assert_eq!(deployed.len(), n as usize, "one deployment per TaskManager");
        deployed[0].1.attempt
    }
}

#[test]
fn a_metadata_write_that_hangs_holds_up_neither_heartbeats_nor_requests() {
    let mut h = Harness::new("hanging-storage", 2, RestartStrategy::default(), true);
    let open = h.with_gated_storage();
    let attempt = h.running_on_threaded(2);
    let (tx, answer) = reply();
    h.request(Request::Savepoint { stop: false, drain: false, reply: tx });
    let id = h.job.attempt.as_ref().unwrap().coordinator.as_ref().unwrap().in_flight().unwrap();
    h.sent();
    for (conn, task) in [(1, 0), (2, 1), (1, 2), (2, 3)] {
        h.message(conn, ack(attempt, task, id)); // the last: the write is out, and hangs
    }
    // Far longer than the heartbeat timeout passes; the loop takes every heartbeat meanwhile.
    for _ in 0..4 {
        h.clock.advance(h.job.config.heartbeat_timeout / 2);
        for conn in [1, 2] {
            h.message(
                conn,
                ToJobManager::Heartbeat { attempt: Some(attempt), metrics: Vec::new(), gauges: Vec::new() },
            );
        }
    }
    let (tx, other) = reply();
    h.request(Request::Savepoint { stop: false, drain: false, reply: tx });
    assert_eq!((h.job.state, h.view().restarts), (JobState::Running, 0), "no TaskManager taken for lost");
    assert!(answer.try_recv().is_err() && other.try_recv().is_err(), "nothing completes before its write");
    assert!(commands(h.sent()).is_empty(), "no completion and no new barrier while the write is out");
    open.send(()).unwrap();
    h.until("the savepoint", |_| !answer.is_empty());
    assert!(answer.try_recv().unwrap().is_ok(), "the savepoint completed once written");
    let sent = commands(h.sent());
    assert!(sent.iter().any(|(_, _, _, c)| *c == Command::Complete { checkpoint_id: id }), "{sent:?}");
}

#[test]
fn a_failover_while_a_write_is_out_restores_from_what_that_write_left() {
    let mut h = Harness::new("write-then-restore", 1, fixed_delay(Duration::ZERO, 5), true);
    let open = h.with_gated_storage();
    let attempt = h.running_on_threaded(1);
    let (tx, _answer) = reply();
    h.request(Request::Savepoint { stop: false, drain: false, reply: tx });
    let id = h.job.attempt.as_ref().unwrap().coordinator.as_ref().unwrap().in_flight().unwrap();
    h.message(1, ack(attempt, 0, id));
    h.message(1, ack(attempt, 1, id));
    // The attempt fails while the savepoint's _metadata is being written.
    h.message(1, ToJobManager::Failed { attempt, reason: "a task failed".into() });
    assert_eq!(h.job.state, JobState::Restarting);
    h.sent();
    open.send(()).unwrap();
    // Its write ends first, then the next attempt's restore point is read: the snapshot it wrote.
    let mut deployed = Vec::new();
    h.until("the redeployment", |h| {
        deployed.extend(h.deployments());
        !deployed.is_empty()
    });
    assert_eq!(deployed.len(), 1, "redeployed");
    let restore = deployed[0].1.restore.clone().expect("a restore point");
    assert!(restore.ends_with(&format!("chk-{id}")) || restore.ends_with(&format!("sp-{id}")), "{restore}");
}

/// Stops the job of the first attempt with the savepoint the rescale
/// triggered: every task acknowledges it, then the TaskManager reports its
/// tasks ended.
fn stop_with_savepoint(h: &mut Harness, conn: u64, attempt: u64, tasks: usize) {
    let barrier = triggered(h);
    for task in 0..tasks {
        h.message(conn, ack(attempt, task, barrier.checkpoint_id));
    }
    h.message(conn, ToJobManager::Finished { attempt });
}

/// The barrier of the checkpoint triggered since the last look.
fn triggered(h: &mut Harness) -> weir_core::element::Barrier {
    let trigger = |(_, _, _, c)| match c {
        Command::Trigger { barrier, .. } => Some(barrier),
        _ => None,
    };
    commands(h.sent()).into_iter().find_map(trigger).expect("a savepoint triggered")
}

/// Lets `by` pass in steps of a second, TaskManagers `conns` heartbeating
/// (idle: no attempt runs on them) all along.
fn advance_alive(h: &mut Harness, conns: &[u64], by: Duration) {
    for _ in 0..by.as_secs() {
        for &conn in conns {
            h.message(conn, ToJobManager::Heartbeat { attempt: None, metrics: Vec::new(), gauges: Vec::new() });
        }
        h.advance(Duration::from_secs(1));
    }
}

#[test]
fn a_rescale_beyond_the_registered_slots_is_refused_unless_it_may_wait_for_them() {
    let mut h = Harness::new("too-few", 1, RestartStrategy::default(), true);
    h.running_on(1);
    let why = h.rescale(RescaleRequest::to(2)).unwrap_err();
    assert!(why.contains("needs 2 slots and 1 are registered") && why.contains("await_slots_ms"), "{why}");
    assert!(commands(h.sent()).is_empty(), "no savepoint was triggered");
    assert_eq!(h.job.state, JobState::Running);
}

/// The operator adds TaskManagers and asks for the rescale at once: the
/// savepoint is taken while they start, and the job is redeployed as soon
/// as their slots are registered.
#[test]
fn a_rescale_awaiting_slots_takes_its_savepoint_at_once_and_deploys_when_they_register() {
    let mut h = Harness::new("await-slots", 1, RestartStrategy::default(), true);
    let first = h.running_on(1);
    let answer = h.rescale(RescaleRequest::to(2).awaiting_slots(Duration::from_secs(60))).unwrap();
    stop_with_savepoint(&mut h, 1, first, 2);
    assert!(h.deployments().is_empty(), "one slot of two: not deployed");
    assert_eq!((h.job.state, h.view().parallelism), (JobState::Restarting, 2));
    advance_alive(&mut h, &[1], Duration::from_secs(30));
    assert!(answer.is_empty() && h.deployments().is_empty(), "still waiting within the minute");
    h.register(2, 1);
    let deployed = h.deployments();
    assert_eq!(deployed.len(), 2, "one subtask on each TaskManager");
    let path = answer.try_recv().unwrap().unwrap();
    assert!(deployed.iter().all(|(_, d)| d.spec.parallelism == 2 && d.restore.as_deref() == Some(path.as_str())));
    assert_eq!(h.job.state, JobState::Running);
}

/// Slots that do not come in time: the job runs on at its former
/// parallelism, from the rescale's savepoint, and the rescale failed.
#[test]
fn a_rescale_whose_slots_do_not_come_in_time_runs_the_job_on_as_it_was_from_the_savepoint() {
    let mut h = Harness::new("no-slots", 1, RestartStrategy::default(), true);
    let first = h.running_on(1);
    let answer = h.rescale(RescaleRequest::to(3).awaiting_slots(Duration::from_secs(60))).unwrap();
    stop_with_savepoint(&mut h, 1, first, 2);
    h.register(2, 1);
    assert!(h.deployments().is_empty(), "two slots of three: not deployed");
    advance_alive(&mut h, &[1, 2], Duration::from_secs(61));
    let failed = answer.try_recv().unwrap().unwrap_err();
    let why = failed.error;
    assert!(why.contains("2 of the 3 slots that parallelism 3 needs") && why.contains("runs on at 1"), "{why}");
    let deployed = h.deployments();
    assert_eq!(deployed.len(), 1, "at parallelism 1, on one TaskManager: {deployed:?}");
    let d = &deployed[0].1;
    let restored = d.restore.clone().expect("restored");
    assert!(d.spec.parallelism == 1 && restored.contains("/savepoints/sp-"), "{restored}");
    assert!(why.contains(&restored), "the savepoint is named: {why}");
    assert_eq!(failed.savepoint, Some(restored), "and said to be the one the job runs from");
    let view = h.view();
    assert_eq!((view.state, view.parallelism), (JobState::Running, 1));
    assert!(h.rescale(RescaleRequest::to(2)).is_ok(), "a new rescale may be asked for");
}

/// A wait asked for bounds the redeploy even when the slots were there at
/// the request: a TaskManager lost before the redeploy does not leave the
/// job stopped for ever.
#[test]
fn a_rescale_that_fit_when_asked_for_still_gives_up_waiting_for_a_slot_lost_since() {
    let mut h = Harness::new("lost-slot", 1, RestartStrategy::default(), true);
    let first = h.running_on(1);
    h.register(2, 1);
    let answer = h.rescale(RescaleRequest::to(2).awaiting_slots(Duration::from_secs(20))).unwrap();
    let barrier = triggered(&mut h); // the two slots were there
    h.message(1, ack(first, 0, barrier.checkpoint_id));
    h.message(1, ack(first, 1, barrier.checkpoint_id));
    h.event(Event::Disconnected { conn: 2, why: "connection closed".into() });
    h.message(1, ToJobManager::Finished { attempt: first });
    assert!(h.deployments().is_empty(), "one slot of two: waiting");
    advance_alive(&mut h, &[1], Duration::from_secs(21));
    let why = answer.try_recv().unwrap().unwrap_err().error;
    assert!(why.contains("1 of the 2 slots that parallelism 2 needs were registered within 20000 ms"), "{why}");
    let deployed = h.deployments();
    assert_eq!((deployed.len(), deployed[0].1.spec.parallelism), (1, 1), "running on at 1: {deployed:?}");
}
