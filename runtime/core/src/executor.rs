//! The local executor: deploys a [`JobGraph`] as threads in this process.
//!
//! Each chain runs as `parallelism` tasks, one thread each. Chains are wired
//! through bounded input queues ([`crate::exchange`]). The [`JobHandle`] can
//! stop the job gracefully (sources end; everything in flight drains), wait for
//! it, and read its metrics while it runs. A task that fails stops the sources
//! too, so the whole job winds down and [`JobHandle::wait`] reports the first
//! real failure rather than its echoes.
//!
//! With [`ExecuteOptions::checkpointing`], a coordinator thread drives
//! checkpoints ([`crate::checkpoint::coordinator`]) and a small pool of
//! uploader threads stores the tasks' snapshots; with
//! [`ExecuteOptions::restore`], every subtask starts from its share of a
//! snapshot, at whatever parallelism the graph now has.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::checkpoint::coordinator::{
    CheckpointConfig, CheckpointStats, Command, Coordinator, SavepointRequest, TaskReport,
};
use crate::checkpoint::metadata::RestoredSnapshot;
use crate::error::{JobError, TaskError, TaskResult};
use crate::exchange::remote::{ChannelKey, Network};
use crate::graph::{AnyBox, JobGraph, NodeId, NodeKind, SnapshotCollector, SubtaskInfo};
use crate::metrics::{MetricsSnapshot, SubtaskMetrics};
use crate::task::{Task, TaskCheckpointing, TaskEnv, UploadJob, upload};
use crate::time::now_ms;

/// How to run a job beyond its graph.
#[derive(Default)]
pub struct ExecuteOptions {
    pub checkpointing: Option<CheckpointConfig>,
    /// Start from this snapshot (checked against the graph before anything runs).
    pub restore: Option<RestoredSnapshot>,
    /// Run only part of the job in this process (the distributed runtime);
    /// all of it when `None`.
    pub placement: Option<Placement>,
}

/// Which subtasks run in this process when a job spans several, and how
/// channels reach the others.
pub struct Placement {
    /// The `(chain, subtask)` pairs that run here (chains as in [`JobGraph::layout`]).
    pub local: HashSet<(usize, usize)>,
    pub network: Arc<dyn Network>,
}

/// The tasks' ends of checkpoint coordination, when the coordinator runs in
/// another process: commands to each local task (by task index), and the
/// tasks' reports.
pub struct Coordination {
    pub controls: BTreeMap<usize, Sender<Command>>,
    pub reports: Receiver<TaskReport>,
}

/// Live metrics of one chain of vertices.
#[derive(Debug)]
pub struct ChainMetrics {
    pub vertices: Vec<String>,
    /// The vertices' stable ids (as in snapshots and the REST API).
    pub uids: Vec<String>,
    /// Whether the chain starts with a source (its `records_in` are events read).
    pub is_source: bool,
    pub parallelism: usize,
    /// The chains this one reads from, with their partitioning.
    pub inputs: Vec<(usize, String)>,
    /// The subtasks that run in this process (all of them unless the job is distributed).
    pub local_subtasks: Vec<usize>,
    /// Their metrics, in the same order.
    pub subtasks: Vec<Arc<SubtaskMetrics>>,
}

impl ChainMetrics {
    /// Sum over subtasks of the counters, maximum of the time metrics, minimum watermark.
    pub fn aggregate(&self) -> MetricsSnapshot {
        MetricsSnapshot::aggregate(self.subtasks.iter().map(|s| s.snapshot()))
    }
}

/// A running job.
pub struct JobHandle {
    name: String,
    threads: Vec<(String, JoinHandle<TaskResult>)>,
    stop: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    /// The first real task failure, as soon as it happens.
    failure: Arc<Mutex<Option<String>>>,
    pub chains: Arc<Vec<ChainMetrics>>,
    coordinator: Option<CoordinatorHandle>,
    coordination: Mutex<Option<Coordination>>,
}

struct CoordinatorHandle {
    requests: Sender<SavepointRequest>,
    /// Dropped when the job ended: wakes the coordinator to exit.
    done: Option<Sender<()>>,
    thread: JoinHandle<()>,
    history: Arc<Mutex<Vec<CheckpointStats>>>,
    /// Why checkpointing failed the job, if it did.
    failure: Arc<Mutex<Option<String>>>,
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

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Deploys `graph` onto threads of this process and starts it.
pub fn execute(graph: JobGraph) -> Result<JobHandle, JobError> {
    execute_with(graph, ExecuteOptions::default())
}

/// Deploys `graph` with checkpointing and/or from a snapshot.
pub fn execute_with(graph: JobGraph, options: ExecuteOptions) -> Result<JobHandle, JobError> {
    graph.validate()?;
    if let Some(snapshot) = &options.restore {
        let parallelisms: Vec<usize> = graph.nodes.iter().map(|n| n.parallelism).collect();
        snapshot
            .check_compatible(graph.max_parallelism, &parallelisms)
            .map_err(|e| JobError::Restore(e.to_string()))?;
    }
    let checkpointing = options.checkpointing.clone();
    let placement = options.placement.as_ref();
    let is_local = |c: usize, i: usize| placement.is_none_or(|p| p.local.contains(&(c, i)));
    let (report_tx, report_rx) = crossbeam_channel::unbounded::<TaskReport>();
    let (upload_tx, upload_rx) = crossbeam_channel::unbounded::<UploadJob>();
    let mut controls: BTreeMap<usize, Sender<Command>> = BTreeMap::new();
    let layout = graph.layout();
    let chains: Vec<Vec<NodeId>> = graph.plan();
    let chain_of: HashMap<NodeId, usize> =
        chains.iter().enumerate().flat_map(|(c, nodes)| nodes.iter().map(move |&n| (n, c))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let cancel = Arc::new(AtomicBool::new(false));
    let failure = Arc::new(Mutex::new(None));
    let cfg = graph.exchange.clone();
    let network_error = |key: ChannelKey, e: String| JobError::Network(format!("channel {key}: {e}"));

    // 1. Input queues of the subtasks that run here, and channel numbers:
    //    (edge, producer subtask, consumer subtask) -> channel.
    let mut queues: HashMap<(usize, usize), (AnyBox, AnyBox)> = HashMap::new();
    let mut channels: HashMap<(usize, usize, usize), u32> = HashMap::new();
    let mut channel_count: HashMap<(usize, usize), u32> = HashMap::new();
    for (c, nodes) in chains.iter().enumerate() {
        let head = nodes[0];
        let p = graph.nodes[head].parallelism;
        let in_edges: Vec<usize> = (0..graph.edges.len()).filter(|&e| graph.edges[e].to == head).collect();
        let Some(&first) = in_edges.first() else {
            continue;
        };
        let ty = graph.nodes[graph.edges[first].from].output.clone();
        for i in 0..p {
            if is_local(c, i) {
                queues.insert((c, i), ty.input_queue(cfg.queue_capacity));
            }
            let mut next = 0;
            for &e in &in_edges {
                for j in producers_of(&graph, e, i) {
                    channels.insert((e, j, i), next);
                    next += 1;
                }
            }
            channel_count.insert((c, i), next);
        }
    }
    // Channels from producers elsewhere into the queues here.
    if let Some(placement) = placement {
        for (e, edge) in graph.edges.iter().enumerate() {
            let (producer_chain, consumer_chain) = (chain_of[&edge.from], chain_of[&edge.to]);
            if producer_chain == consumer_chain {
                continue; // chained: no channel
            }
            let ty = graph.nodes[edge.from].output.clone();
            for k in (0..graph.nodes[edge.to].parallelism).filter(|&k| is_local(consumer_chain, k)) {
                for j in producers_of(&graph, e, k).into_iter().filter(|&j| !is_local(producer_chain, j)) {
                    let (tx, _) = &queues[&(consumer_chain, k)];
                    let key = ChannelKey { edge: e as u32, producer: j as u32, consumer: k as u32 };
                    let inbound = ty.remote_input(tx, channels[&(e, j, k)]);
                    placement.network.register_input(key, inbound).map_err(|m| network_error(key, m))?;
                }
            }
        }
    }

    // 2. Build every local subtask's chain, tail first.
    let mut tasks: Vec<Box<dyn Task>> = Vec::new();
    let mut chain_metrics = Vec::new();
    for (c, nodes) in chains.iter().enumerate() {
        let head = nodes[0];
        let tail = *nodes.last().expect("non-empty chain");
        let p = graph.nodes[head].parallelism;
        let vertex_names = nodes.iter().map(|&n| graph.nodes[n].name.clone()).collect::<Vec<_>>();
        let chain_name = vertex_names.join(" -> ");
        let mut subtask_metrics = Vec::new();
        let mut local_subtasks = Vec::new();
        for i in (0..p).filter(|&i| is_local(c, i)) {
            let metrics = Arc::new(SubtaskMetrics::default());
            subtask_metrics.push(metrics.clone());
            local_subtasks.push(i);
            let snapshots = SnapshotCollector::default();
            let task_index = layout[c].first_task + i;
            let (control_tx, control_rx) = crossbeam_channel::unbounded();
            controls.insert(task_index, control_tx);
            let env = TaskEnv {
                name: format!("{chain_name} ({}/{p})", i + 1),
                index: task_index,
                subtask: i,
                key_groups: crate::keygroup::KeyGroupRange::for_subtask(i, p, graph.max_parallelism),
                metrics: metrics.clone(),
                stop: stop.clone(),
                cancel: cancel.clone(),
                checkpoints: checkpointing.as_ref().map(|cp| TaskCheckpointing {
                    job: graph.name.clone(),
                    control: control_rx,
                    reports: report_tx.clone(),
                    snapshots: snapshots.clone(),
                    uploads: upload_tx.clone(),
                    mode: cp.mode,
                    alignment_budget: cp.alignment_budget,
                }),
            };
            let tail_ty = graph.nodes[tail].output.clone();
            let mut outputs = Vec::new();
            for (e, edge) in graph.edges.iter().enumerate().filter(|(_, ed)| ed.from == tail) {
                let consumer_chain = chain_of[&edge.to];
                let mut targets: Vec<(AnyBox, u32)> = Vec::new();
                for k in consumers_of(&graph, e, i) {
                    let channel = channels[&(e, i, k)];
                    if is_local(consumer_chain, k) {
                        let (tx, _) = &queues[&(consumer_chain, k)];
                        targets.push((tail_ty.clone_sender(tx), channel));
                    } else {
                        let network = &placement.expect("a remote consumer implies a placement").network;
                        let key = ChannelKey { edge: e as u32, producer: i as u32, consumer: k as u32 };
                        let (tx, outbound) = tail_ty.remote_output(REMOTE_QUEUE_CAPACITY);
                        network.open_output(key, outbound).map_err(|m| network_error(key, m))?;
                        targets.push((tx, channel));
                    }
                }
                outputs.push(tail_ty.writer(edge.partitioning.as_ref(), targets, cfg.batch_size, metrics.clone()));
            }
            let mut out = match outputs.len() {
                0 => tail_ty.discard(),
                1 => outputs.pop().expect("one"),
                _ => tail_ty.fan_out(outputs),
            };
            for &n in nodes.iter().rev() {
                let uid = graph.uid(n);
                // On restore every link gets its hook called, with empty state when the
                // snapshot has none for it (recovery actions such as a sink's still run).
                let restored = match &options.restore {
                    Some(s) => {
                        Some(s.state_for(&uid, i, p).map_err(|e| JobError::Restore(e.to_string()))?.unwrap_or_default())
                    }
                    None => None,
                };
                let info = SubtaskInfo {
                    vertex: graph.nodes[n].name.clone(),
                    uid,
                    index: i,
                    parallelism: p,
                    max_parallelism: graph.max_parallelism,
                    metrics: metrics.clone(),
                    restored,
                    snapshots: snapshots.clone(),
                    checkpointing: checkpointing.is_some(),
                };
                let failed = |source: TaskError| JobError::TaskFailed {
                    task: format!("{} ({}/{p})", info.vertex, i + 1),
                    source,
                };
                match &graph.nodes[n].kind {
                    NodeKind::Operator(factory) => out = factory(&info, out).map_err(failed)?,
                    NodeKind::Source(factory) => {
                        let task = graph.nodes[n].output.source_task(factory(&info), out, &info, env.clone());
                        tasks.push(task.map_err(failed)?);
                        out = Box::new(());
                    }
                }
            }
            if !matches!(graph.nodes[head].kind, NodeKind::Source(_)) {
                let (_, rx) = queues.remove(&(c, i)).expect("queue of a chain with inputs");
                let in_edge = graph.edges.iter().find(|e| e.to == head).expect("an input edge");
                let ty = graph.nodes[in_edge.from].output.clone();
                tasks.push(ty.input_task(rx, channel_count[&(c, i)] as usize, out, env));
            }
        }
        chain_metrics.push(ChainMetrics {
            vertices: vertex_names,
            uids: layout[c].uids.clone(),
            is_source: layout[c].is_source,
            parallelism: p,
            inputs: layout[c].inputs.clone(),
            local_subtasks,
            subtasks: subtask_metrics,
        });
    }
    // Drop the queues' original senders: only the writers (and the network's
    // inbound channels) hold senders now, so a queue disconnects exactly when
    // all its producers are gone.
    drop(queues);

    let mut coordinator = None;
    let mut coordination = None;
    if let Some(cfg) = checkpointing {
        let storage = cfg.storage.clone();
        // Uploads run beside processing; two threads keep a slow store from serialising tasks.
        for _ in 0..2 {
            let (rx, cfg) = (upload_rx.clone(), cfg.clone());
            std::thread::Builder::new()
                .name("uploader".into())
                .spawn(move || rx.iter().for_each(|job| upload(job, &cfg)))
                .map_err(|source| JobError::Spawn { task: "uploader".into(), source })?;
        }
        if placement.is_some() {
            // The coordinator is the JobManager's: hand it the tasks' ends.
            coordination = Some(Coordination { controls, reports: report_rx });
        } else {
            let next_id = Coordinator::next_free_id(storage.as_ref(), &graph.name)
                .map_err(|e| JobError::Checkpointing(format!("cannot read the checkpoint directory: {e}")))?;
            let next_id = next_id.max(options.restore.as_ref().map_or(0, |r| r.metadata.checkpoint_id + 1));
            let coordinator_ = Coordinator::new(graph.checkpoint_shape(), cfg, next_id, now_ms());
            let sources = graph.source_tasks();
            coordinator = Some(spawn_coordinator(coordinator_, report_rx, controls, sources, stop.clone())?);
        }
    }
    drop((report_tx, upload_tx));

    // 3. Start.
    let mut threads = Vec::new();
    for task in tasks {
        let name = task.name().to_string();
        let (stop, failure, task_name) = (stop.clone(), failure.clone(), name.clone());
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.run()))
                    .unwrap_or_else(|p| Err(TaskError::Panic(panic_message(&p))));
                if let Err(e) = &result
                    && !e.is_secondary()
                {
                    stop.store(true, Ordering::Relaxed);
                    let mut slot = failure.lock().expect("failure slot poisoned");
                    slot.get_or_insert_with(|| format!("task {task_name} failed: {e}"));
                }
                result
            })
            .map_err(|source| JobError::Spawn { task: name.clone(), source })?;
        threads.push((name, thread));
    }
    Ok(JobHandle {
        name: graph.name.clone(),
        threads,
        stop,
        cancel,
        failure,
        chains: Arc::new(chain_metrics),
        coordinator,
        coordination: Mutex::new(coordination),
    })
}

/// Events a producer may queue for a remote consumer before it blocks; the
/// network layer's credits bound what is in flight beyond that.
const REMOTE_QUEUE_CAPACITY: usize = 8;

fn spawn_coordinator(
    mut coordinator: Coordinator,
    reports: Receiver<TaskReport>,
    controls: BTreeMap<usize, Sender<Command>>,
    sources: Vec<usize>,
    stop: Arc<AtomicBool>,
) -> Result<CoordinatorHandle, JobError> {
    let (requests, request_rx) = crossbeam_channel::unbounded::<SavepointRequest>();
    let (done, done_rx) = crossbeam_channel::bounded::<()>(0);
    let history = Arc::new(Mutex::new(Vec::new()));
    let failure = Arc::new(Mutex::new(None));
    let (h, f) = (history.clone(), failure.clone());
    let thread = std::thread::Builder::new()
        .name("coordinator".into())
        .spawn(move || {
            // Completion goes to every task; triggers and end-of-input to the sources;
            // a failure stops the job and is what `wait` reports.
            let dispatch = |commands: Vec<Command>| {
                for cmd in commands {
                    let targets: Vec<&Sender<Command>> = match &cmd {
                        Command::Complete { .. } => controls.values().collect(),
                        Command::Trigger { .. } | Command::EndOfInput => {
                            sources.iter().filter_map(|s| controls.get(s)).collect()
                        }
                        Command::Fail(reason) => {
                            tracing::error!("{reason}");
                            f.lock().expect("failure slot poisoned").get_or_insert_with(|| reason.clone());
                            stop.store(true, Ordering::Relaxed);
                            Vec::new()
                        }
                    };
                    for t in targets {
                        let _ = t.send(cmd.clone());
                    }
                }
            };
            // Sleep until the next trigger or timeout is due, or something arrives; no polling.
            let mut reports_open = true;
            loop {
                dispatch(coordinator.tick(now_ms()));
                {
                    let mut hist = h.lock().expect("history poisoned");
                    if hist.len() != coordinator.history.len() {
                        *hist = coordinator.history.clone();
                    }
                }
                let wait = (coordinator.next_wakeup(now_ms()) - now_ms()).clamp(0, 60_000) as u64;
                let reports_rx = if reports_open { reports.clone() } else { crossbeam_channel::never() };
                crossbeam_channel::select! {
                    recv(reports_rx) -> r => match r {
                        Ok(report) => dispatch(coordinator.on_report(report, now_ms())),
                        Err(_) => reports_open = false, // every task and upload is gone
                    },
                    recv(request_rx) -> r => {
                        if let Ok(r) = r {
                            coordinator.request_savepoint(r);
                        }
                    }
                    recv(done_rx) -> _ => break,
                    default(Duration::from_millis(wait)) => {}
                }
            }
            *h.lock().expect("history poisoned") = coordinator.history.clone();
        })
        .map_err(|source| JobError::Spawn { task: "coordinator".into(), source })?;
    Ok(CoordinatorHandle { requests, done: Some(done), thread, history, failure })
}

fn is_pointwise(graph: &JobGraph, edge: usize) -> bool {
    let e = &graph.edges[edge];
    e.forward && graph.nodes[e.from].parallelism == graph.nodes[e.to].parallelism
}

/// The consumer subtasks producer subtask `i` writes to over `edge`.
fn consumers_of(graph: &JobGraph, edge: usize, i: usize) -> Vec<usize> {
    if is_pointwise(graph, edge) { vec![i] } else { (0..graph.nodes[graph.edges[edge].to].parallelism).collect() }
}

/// The producer subtasks that write to consumer subtask `k` over `edge`.
fn producers_of(graph: &JobGraph, edge: usize, k: usize) -> Vec<usize> {
    if is_pointwise(graph, edge) { vec![k] } else { (0..graph.nodes[graph.edges[edge].from].parallelism).collect() }
}
