//! The local executor: deploys a [`JobGraph`] as threads in this process.
//!
//! Each chain runs as `parallelism` tasks, one thread each. Chains are wired
//! through bounded input queues ([`crate::exchange`]). The [`JobHandle`] can
//! stop the job gracefully (sources end; everything in flight drains), wait for
//! it, and read its metrics while it runs. A task that fails stops the sources
//! too, so the whole job winds down and [`JobHandle::wait`] reports the first
//! real failure rather than its echoes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::error::{JobError, TaskError, TaskResult};
use crate::graph::{AnyBox, JobGraph, NodeId, NodeKind, SubtaskInfo};
use crate::metrics::{MetricsSnapshot, SubtaskMetrics};
use crate::task::{Task, TaskEnv};

/// Live metrics of one chain of vertices.
#[derive(Debug)]
pub struct ChainMetrics {
    pub vertices: Vec<String>,
    /// Whether the chain starts with a source (its `records_in` are events read).
    pub is_source: bool,
    pub subtasks: Vec<Arc<SubtaskMetrics>>,
}

impl ChainMetrics {
    /// Sum over subtasks of the counters, maximum of the time metrics, minimum watermark.
    pub fn aggregate(&self) -> MetricsSnapshot {
        let mut agg = MetricsSnapshot { current_watermark: i64::MAX, ..Default::default() };
        for s in self.subtasks.iter().map(|s| s.snapshot()) {
            agg.records_in += s.records_in;
            agg.records_out += s.records_out;
            agg.late_records += s.late_records;
            agg.busy_ns = agg.busy_ns.max(s.busy_ns);
            agg.idle_ns = agg.idle_ns.max(s.idle_ns);
            agg.backpressured_ns = agg.backpressured_ns.max(s.backpressured_ns);
            agg.current_watermark = agg.current_watermark.min(s.current_watermark);
        }
        agg
    }
}

/// A running job.
pub struct JobHandle {
    name: String,
    threads: Vec<(String, JoinHandle<TaskResult>)>,
    stop: Arc<AtomicBool>,
    pub chains: Arc<Vec<ChainMetrics>>,
}

impl JobHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the sources; the job then drains and finishes.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A flag that stops the job when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|(_, t)| t.is_finished())
    }

    /// Waits until every task ended; the first real failure, if any.
    pub fn wait(self) -> Result<(), JobError> {
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
        match first.or(echo) {
            Some(e) => Err(e),
            None => Ok(()),
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
    graph.validate()?;
    let chains = graph.plan();
    let chain_of: HashMap<NodeId, usize> =
        chains.iter().enumerate().flat_map(|(c, nodes)| nodes.iter().map(move |&n| (n, c))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = graph.exchange.clone();

    // 1. Input queues, and channel numbers: (edge, producer subtask, consumer subtask) -> channel.
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
            queues.insert((c, i), ty.input_queue(cfg.queue_capacity));
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

    // 2. Build every subtask's chain, tail first.
    let mut tasks: Vec<Box<dyn Task>> = Vec::new();
    let mut chain_metrics = Vec::new();
    for (c, nodes) in chains.iter().enumerate() {
        let head = nodes[0];
        let tail = *nodes.last().expect("non-empty chain");
        let p = graph.nodes[head].parallelism;
        let vertex_names = nodes.iter().map(|&n| graph.nodes[n].name.clone()).collect::<Vec<_>>();
        let chain_name = vertex_names.join(" -> ");
        let mut subtask_metrics = Vec::new();
        for i in 0..p {
            let metrics = Arc::new(SubtaskMetrics::default());
            subtask_metrics.push(metrics.clone());
            let tail_ty = graph.nodes[tail].output.clone();
            let mut outputs = Vec::new();
            for (e, edge) in graph.edges.iter().enumerate().filter(|(_, ed)| ed.from == tail) {
                let consumer_chain = chain_of[&edge.to];
                let targets: Vec<(AnyBox, u32)> = consumers_of(&graph, e, i)
                    .into_iter()
                    .map(|k| {
                        let (tx, _) = &queues[&(consumer_chain, k)];
                        (tail_ty.clone_sender(tx), channels[&(e, i, k)])
                    })
                    .collect();
                outputs.push(tail_ty.writer(edge.partitioning.as_ref(), targets, cfg.batch_size, metrics.clone()));
            }
            let mut out = match outputs.len() {
                0 => tail_ty.discard(),
                1 => outputs.pop().expect("one"),
                _ => tail_ty.fan_out(outputs),
            };
            for &n in nodes.iter().rev() {
                let info = SubtaskInfo {
                    vertex: graph.nodes[n].name.clone(),
                    index: i,
                    parallelism: p,
                    max_parallelism: graph.max_parallelism,
                    metrics: metrics.clone(),
                };
                match &graph.nodes[n].kind {
                    NodeKind::Operator(factory) => out = factory(&info, out),
                    NodeKind::Source(factory) => {
                        let env = TaskEnv {
                            name: format!("{chain_name} ({}/{p})", i + 1),
                            metrics: metrics.clone(),
                            stop: stop.clone(),
                        };
                        tasks.push(graph.nodes[n].output.source_task(factory(&info), out, env));
                        out = Box::new(());
                    }
                }
            }
            if !matches!(graph.nodes[head].kind, NodeKind::Source(_)) {
                let (_, rx) = queues.remove(&(c, i)).expect("queue of a chain with inputs");
                let in_edge = graph.edges.iter().find(|e| e.to == head).expect("an input edge");
                let ty = graph.nodes[in_edge.from].output.clone();
                let env = TaskEnv {
                    name: format!("{chain_name} ({}/{p})", i + 1),
                    metrics: metrics.clone(),
                    stop: stop.clone(),
                };
                tasks.push(ty.input_task(rx, channel_count[&(c, i)] as usize, out, env));
            }
        }
        let is_source = matches!(graph.nodes[head].kind, NodeKind::Source(_));
        chain_metrics.push(ChainMetrics { vertices: vertex_names, is_source, subtasks: subtask_metrics });
    }
    // Drop the queues' original senders: only the writers hold senders now, so a
    // queue disconnects exactly when all its producers are gone.
    drop(queues);

    // 3. Start.
    let mut threads = Vec::new();
    for task in tasks {
        let name = task.name().to_string();
        let stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.run()))
                    .unwrap_or_else(|p| Err(TaskError::Panic(panic_message(&p))));
                if result.as_ref().is_err_and(|e| !e.is_secondary()) {
                    stop.store(true, Ordering::Relaxed);
                }
                result
            })
            .map_err(|source| JobError::Spawn { task: name.clone(), source })?;
        threads.push((name, thread));
    }
    Ok(JobHandle { name: graph.name.clone(), threads, stop, chains: Arc::new(chain_metrics) })
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
