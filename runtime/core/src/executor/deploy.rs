//! Carries out a [`PhysicalPlan`]: makes the input queues, hands the network
//! its channels, and builds each local subtask's chain into a task, restoring
//! its links' state.
//!
//! Everything type-specific goes through the vertices' `StreamType` objects,
//! so the downcasts happen here, once per subtask, never per record.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crossbeam_channel::Sender;

use super::ChainMetrics;
use super::plan::{ChainPlan, PhysicalPlan, SubtaskPlan, Target};
use crate::checkpoint::coordinator::{CheckpointConfig, Command, TaskReport};
use crate::checkpoint::metadata::{RestoredSnapshot, RestoredState};
use crate::drift::{AlignmentGroups, SourceAlignment};
use crate::error::{JobError, TaskError};
use crate::exchange::remote::{ChannelKey, Network};
use crate::graph::{AnyBox, JobGraph, NodeKind, SnapshotCollector, SubtaskInfo};
use crate::metrics::SubtaskMetrics;
use crate::task::{Task, TaskCheckpointing, TaskEnv, UploadJob};

/// What every subtask of the job is built with.
pub(super) struct Deployment<'a> {
    pub graph: &'a JobGraph,
    /// The channels to other processes (a distributed job only).
    pub network: Option<&'a dyn Network>,
    pub restore: Option<&'a RestoredSnapshot>,
    pub checkpointing: Option<&'a CheckpointConfig>,
    pub stop: Arc<AtomicBool>,
    pub cancel: Arc<AtomicBool>,
    /// The tasks' reports to the checkpoint coordinator.
    pub reports: Sender<TaskReport>,
    /// The tasks' snapshots, to the uploaders.
    pub uploads: Sender<UploadJob>,
}

/// The job's tasks in this process, ready to start.
#[derive(Default)]
pub(super) struct Deployed {
    pub tasks: Vec<Box<dyn Task>>,
    pub chains: Vec<ChainMetrics>,
    /// The checkpoint commands' way into each task (by task number), with checkpointing.
    pub controls: BTreeMap<usize, Sender<Command>>,
}

/// The input queues of the subtasks that run here, by `(chain, subtask)`:
/// `(Sender<Envelope<T>>, Receiver<Envelope<T>>)`, both boxed; the receiver
/// is taken by the subtask's task, the sender stays until every chain is
/// built (a producer may come after its consumer in the plan).
type Queues = HashMap<(usize, usize), (AnyBox, Option<AnyBox>)>;

fn network_error(key: ChannelKey, e: String) -> JobError {
    JobError::Network(format!("channel {key}: {e}"))
}

impl Deployment<'_> {
    /// Builds every subtask of `plan`, chain by chain.
    pub fn build(&self, plan: &PhysicalPlan) -> Result<Deployed, JobError> {
        let mut queues = self.open_queues(plan)?;
        let groups = AlignmentGroups::default();
        let mut deployed = Deployed::default();
        for (c, chain) in plan.chains.iter().enumerate() {
            let mut subtasks = Vec::with_capacity(chain.subtasks.len());
            for subtask in &chain.subtasks {
                let metrics = Arc::new(SubtaskMetrics::default());
                // Only sources pause for alignment: other chains join no group.
                let alignment =
                    if chain.layout.is_source { SourceAlignment::new(&groups) } else { SourceAlignment::default() };
                let shared = Shared { metrics: metrics.clone(), alignment };
                let task = self.subtask(c, chain, subtask, shared, &mut queues, &mut deployed.controls)?;
                deployed.tasks.push(task);
                subtasks.push(metrics);
            }
            deployed.chains.push(ChainMetrics {
                vertices: chain.layout.vertices.clone(),
                uids: chain.layout.uids.clone(),
                is_source: chain.layout.is_source,
                parallelism: chain.layout.parallelism,
                inputs: chain.layout.inputs.clone(),
                local_subtasks: chain.subtasks.iter().map(|s| s.index).collect(),
                subtasks,
            });
        }
        // Drop the queues' original senders: only the writers (and the network's
        // inbound channels) hold senders now, so a queue disconnects exactly when
        // all its producers are gone.
        drop(queues);
        Ok(deployed)
    }

    /// The input queue of every subtask here that has one; the channels into
    /// them from producers elsewhere are registered with the network.
    fn open_queues(&self, plan: &PhysicalPlan) -> Result<Queues, JobError> {
        let mut queues = Queues::new();
        for (c, chain) in plan.chains.iter().enumerate() {
            for subtask in &chain.subtasks {
                let Some(input) = &subtask.input else { continue };
                let ty = &self.graph.nodes[self.graph.edges[input.channels[0].edge].from].output;
                let (tx, rx) = ty.input_queue(input.queue_capacity);
                for (key, channel) in input.remote_channels(subtask.index) {
                    let network = self.network.expect("a remote channel implies a placement");
                    let ty = &self.graph.nodes[self.graph.edges[key.edge as usize].from].output;
                    let inbound = ty.remote_input(&tx, channel);
                    network.register_input(key, inbound).map_err(|m| network_error(key, m))?;
                }
                queues.insert((c, subtask.index), (tx, Some(rx)));
            }
        }
        Ok(queues)
    }

    /// One subtask's task: its outputs, its chain's links tail first, and the
    /// loop that drives them (its source's, or its input queue's).
    fn subtask(
        &self,
        c: usize,
        chain: &ChainPlan,
        subtask: &SubtaskPlan,
        shared: Shared,
        queues: &mut Queues,
        controls: &mut BTreeMap<usize, Sender<Command>>,
    ) -> Result<Box<dyn Task>, JobError> {
        let snapshots = match self.checkpointing.is_some() && self.graph.incremental_checkpoints() {
            true => SnapshotCollector::incremental(),
            false => SnapshotCollector::default(),
        };
        let env = self.task_env(chain, subtask, &shared, &snapshots, controls);
        let out = self.outputs(chain, subtask, &shared.metrics, queues)?;
        let link = |n| self.subtask_info(n, chain, subtask, &shared, &snapshots);
        match self.links(chain, subtask, out, link, env.clone())? {
            Built::Source(task) => Ok(task),
            Built::Head(head) => {
                let input = subtask.input.as_ref().expect("a chain without a source has an input");
                let rx = queues.get_mut(&(c, subtask.index)).and_then(|q| q.1.take());
                let rx = rx.expect("queue of a chain with inputs");
                let ty = &self.graph.nodes[self.graph.edges[input.channels[0].edge].from].output;
                Ok(ty.input_task(rx, input.channels.len(), head, env))
            }
        }
    }

    fn task_env(
        &self,
        chain: &ChainPlan,
        subtask: &SubtaskPlan,
        shared: &Shared,
        snapshots: &SnapshotCollector,
        controls: &mut BTreeMap<usize, Sender<Command>>,
    ) -> TaskEnv {
        let (p, i) = (chain.layout.parallelism, subtask.index);
        let checkpoints = self.checkpointing.map(|cp| {
            let (control_tx, control) = crossbeam_channel::unbounded();
            controls.insert(subtask.task, control_tx);
            TaskCheckpointing {
                job: self.graph.name.clone(),
                control,
                reports: self.reports.clone(),
                snapshots: snapshots.clone(),
                uploads: self.uploads.clone(),
                mode: cp.mode,
                alignment_budget: cp.alignment_budget,
            }
        });
        TaskEnv {
            name: format!("{} ({}/{p})", chain.layout.vertices.join(" -> "), i + 1),
            index: subtask.task,
            subtask: i,
            key_groups: crate::keygroup::KeyGroupRange::for_subtask(i, p, self.graph.max_parallelism),
            metrics: shared.metrics.clone(),
            stop: self.stop.clone(),
            cancel: self.cancel.clone(),
            checkpoints,
            alignment: shared.alignment.clone(),
        }
    }

    /// The output of the chain's tail: a writer per exchange (fanned out when
    /// there are several), or nothing for a chain that ends in a sink.
    fn outputs(
        &self,
        chain: &ChainPlan,
        subtask: &SubtaskPlan,
        metrics: &Arc<SubtaskMetrics>,
        queues: &Queues,
    ) -> Result<AnyBox, JobError> {
        let ty = &self.graph.nodes[*chain.nodes.last().expect("a chain has a vertex")].output;
        let mut outputs = Vec::with_capacity(subtask.outputs.len());
        for output in &subtask.outputs {
            let mut targets = Vec::with_capacity(output.targets.len());
            for target in &output.targets {
                let sender = match *target {
                    Target::Local { chain, subtask, .. } => ty.clone_sender(&queues[&(chain, subtask)].0),
                    Target::Remote { key, capacity, .. } => {
                        let network = self.network.expect("a remote consumer implies a placement");
                        let (tx, outbound) = ty.remote_output(capacity);
                        network.open_output(key, outbound).map_err(|m| network_error(key, m))?;
                        tx
                    }
                };
                targets.push((sender, target.channel()));
            }
            let partitioning = self.graph.edges[output.edge].partitioning.as_ref();
            outputs.push(ty.writer(
                partitioning,
                targets,
                (output.batch_size, self.graph.exchange.buffer_timeout),
                metrics.clone(),
            ));
        }
        Ok(match outputs.len() {
            0 => ty.discard(),
            1 => outputs.pop().expect("one"),
            _ => ty.fan_out(outputs),
        })
    }

    /// Builds the chain's links tail first, each writing to the next; a chain
    /// that starts with a source becomes its source task.
    fn links(
        &self,
        chain: &ChainPlan,
        subtask: &SubtaskPlan,
        mut out: AnyBox,
        info: impl Fn(usize) -> Result<SubtaskInfo, JobError>,
        env: TaskEnv,
    ) -> Result<Built, JobError> {
        let p = chain.layout.parallelism;
        for &n in chain.nodes.iter().rev() {
            let info = info(n)?;
            let failed = |source: TaskError| JobError::TaskFailed {
                task: format!("{} ({}/{p})", info.vertex, subtask.index + 1),
                source,
            };
            match &self.graph.nodes[n].kind {
                NodeKind::Operator(factory) => out = factory(&info, out).map_err(failed)?,
                NodeKind::Source(factory) => {
                    let task = self.graph.nodes[n].output.source_task(factory(&info), out, &info, env);
                    return Ok(Built::Source(task.map_err(failed)?));
                }
            }
        }
        Ok(Built::Head(out))
    }

    /// What vertex `n`'s factory is told about the subtask, its restored state included.
    fn subtask_info(
        &self,
        n: usize,
        chain: &ChainPlan,
        subtask: &SubtaskPlan,
        shared: &Shared,
        snapshots: &SnapshotCollector,
    ) -> Result<SubtaskInfo, JobError> {
        let (uid, i, p) = (self.graph.uid(n), subtask.index, chain.layout.parallelism);
        Ok(SubtaskInfo {
            vertex: self.graph.nodes[n].name.clone(),
            restored: self.restored(&uid, i, p)?,
            uid,
            index: i,
            parallelism: p,
            max_parallelism: self.graph.max_parallelism,
            metrics: shared.metrics.clone(),
            snapshots: snapshots.clone(),
            checkpointing: self.checkpointing.is_some(),
            alignment: shared.alignment.clone(),
            side_outputs: Default::default(),
            state_backend: self.graph.state_backend.clone(),
        })
    }

    /// On restore every link gets its hook called, with empty state when the
    /// snapshot has none for it (recovery actions such as a sink's still run).
    fn restored(&self, uid: &str, i: usize, p: usize) -> Result<Option<RestoredState>, JobError> {
        let Some(snapshot) = self.restore else { return Ok(None) };
        // On disk, state files are copied into the store's folder and read a key group at a time.
        let local = match &self.graph.state_backend {
            crate::state::StateBackend::Disk(store) => Some(store.dir()),
            crate::state::StateBackend::Heap => None,
        };
        let state = snapshot.state_in(uid, i, p, local).map_err(|e| JobError::Restore(e.to_string()))?;
        Ok(Some(state.unwrap_or_default()))
    }
}

/// What the task of a subtask and the links of its chain share.
struct Shared {
    metrics: Arc<SubtaskMetrics>,
    alignment: SourceAlignment,
}

/// A chain built up to its head.
enum Built {
    /// The chain starts with a source: its task.
    Source(Box<dyn Task>),
    /// The head link's input (`Box<dyn Output<T>>`), for the input task.
    Head(AnyBox),
}
