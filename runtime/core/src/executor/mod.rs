//! The local executor: deploys a [`JobGraph`] as threads in this process.
//!
//! [`execute_with`] plans and then acts, each step in a module of its own:
//!
//! 1. `plan`: the physical plan, a pure function of the graph and of the
//!    subtasks to deploy here (channels, queue capacities, pointwise or
//!    all-to-all wiring, local queues or the [`Network`] for remote ones);
//! 2. `deploy`: makes the queues, registers the network's channels, builds
//!    every local subtask's chain (restoring its state) into a task;
//! 3. `checkpointing`: the uploaders and the checkpoint coordinator;
//! 4. the task threads start, and a [`JobHandle`] is returned (`handle`).
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

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::checkpoint::coordinator::{CheckpointConfig, Command, TaskReport};
use crate::checkpoint::metadata::RestoredSnapshot;
use crate::error::{JobError, TaskError, TaskResult};
use crate::exchange::remote::Network;
use crate::graph::JobGraph;
use crate::metrics::{MetricsSnapshot, SubtaskMetrics};
use crate::task::Task;

mod checkpointing;
mod deploy;
mod handle;
mod plan;

use checkpointing::{Coordinated, TaskLinks};
use deploy::Deployment;
pub use handle::JobHandle;
use handle::panic_message;
use plan::PhysicalPlan;

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

/// Deploys `graph` onto threads of this process and starts it.
pub fn execute(graph: JobGraph) -> Result<JobHandle, JobError> {
    execute_with(graph, ExecuteOptions::default())
}

/// Deploys `graph` with checkpointing and/or from a snapshot.
pub fn execute_with(graph: JobGraph, options: ExecuteOptions) -> Result<JobHandle, JobError> {
    graph.validate()?;
    check_restore(&graph, options.restore.as_ref())?;
    let plan = PhysicalPlan::of(&graph, options.placement.as_ref().map(|p| &p.local));
    let (stop, cancel) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (reports, report_rx) = crossbeam_channel::unbounded::<TaskReport>();
    let (uploads, upload_rx) = crossbeam_channel::unbounded();
    let deployed = Deployment {
        graph: &graph,
        network: options.placement.as_ref().map(|p| p.network.as_ref()),
        restore: options.restore.as_ref(),
        checkpointing: options.checkpointing.as_ref(),
        stop: stop.clone(),
        cancel: cancel.clone(),
        reports,
        uploads,
    }
    .build(&plan)?;
    let (coordinator, coordination) = match &options.checkpointing {
        None => (None, None),
        Some(config) => {
            let links = TaskLinks { controls: deployed.controls, reports: report_rx, uploads: upload_rx };
            let remote = options.placement.is_some();
            match checkpointing::start(&graph, config, options.restore.as_ref(), remote, links, stop.clone())? {
                Coordinated::Here(handle) => (Some(handle), None),
                Coordinated::Elsewhere(coordination) => (None, Some(coordination)),
            }
        }
    };
    let failure = Arc::new(Mutex::new(None));
    let threads = spawn_tasks(deployed.tasks, &stop, &failure)?;
    Ok(JobHandle {
        name: graph.name.clone(),
        threads,
        stop,
        cancel,
        failure,
        chains: Arc::new(deployed.chains),
        coordinator,
        coordination: Mutex::new(coordination),
    })
}

/// Checks the snapshot to restore from against the graph, before anything runs.
fn check_restore(graph: &JobGraph, restore: Option<&RestoredSnapshot>) -> Result<(), JobError> {
    let Some(snapshot) = restore else { return Ok(()) };
    let parallelisms: Vec<usize> = graph.nodes.iter().map(|n| n.parallelism).collect();
    snapshot.check_compatible(graph.max_parallelism, &parallelisms).map_err(|e| JobError::Restore(e.to_string()))
}

/// Starts one thread per task. A task that fails for a reason of its own
/// stops the sources and records the failure (first one wins).
fn spawn_tasks(
    tasks: Vec<Box<dyn Task>>,
    stop: &Arc<AtomicBool>,
    failure: &Arc<Mutex<Option<String>>>,
) -> Result<Vec<(String, JoinHandle<TaskResult>)>, JobError> {
    let mut threads = Vec::with_capacity(tasks.len());
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
    Ok(threads)
}
