//! The job graph: vertices (sources and operators) and the edges between them.
//!
//! The graph is built by the `weir` API with *typed* calls ([`JobGraph::add_source`],
//! [`JobGraph::add_operator`], [`JobGraph::connect`]); internally each vertex keeps
//! a type-erased factory that builds one subtask's chain link, plus a
//! [`StreamType`] object that knows how to make queues, exchange writers and task
//! loops for the vertex's output type. Types are checked when edges are added,
//! and downcasts happen once at deployment, never per record.
//!
//! [`JobGraph::plan`] turns the graph into chains: a vertex is chained into its
//! predecessor (runs in the same task, no queue) when the edge between them is
//! `Forward`, both have the same parallelism, and the edge is the only one on
//! both sides.

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::coordinator::JobShape;
use crate::checkpoint::metadata::RestoredState;
use crate::element::Data;
use crate::error::{JobError, TaskResult};
use crate::exchange::remote::{InboundChannel, OutboundChannel, QueueInbound, QueueOutbound};
use crate::exchange::{ChannelSender, Envelope, ExchangeWriter, Partitioning, input_queue};
use crate::keygroup::DEFAULT_MAX_PARALLELISM;
use crate::metrics::SubtaskMetrics;
use crate::operator::OperatorNode;
use crate::operator::side::{MainOutput, OutputTag, SelectMain, SelectSide, SideOutputs, Tagged};
use crate::output::{Discard, FanOut, Output};
use crate::source::Source;
use crate::task::{InputTask, SourceTask, Task, TaskEnv};

pub type NodeId = usize;
pub(crate) type AnyBox = Box<dyn Any + Send>;

/// Whether subtask `subtask` of `parallelism` answers for what a subtask
/// numbered `owner` left behind in an earlier run (a transactional sink's
/// leftovers on restore): its own number's, and for subtask 0 those of
/// numbers no subtask has at this parallelism. Never another current subtask's.
pub fn answers_for(subtask: usize, parallelism: usize, owner: usize) -> bool {
    owner == subtask || (subtask == 0 && owner >= parallelism)
}

/// What a subtask's factory is told about the subtask it builds.
#[derive(Clone, Debug)]
pub struct SubtaskInfo {
    pub vertex: String,
    /// Stable identity of the vertex: its state in snapshots is filed under it.
    pub uid: String,
    pub index: usize,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub metrics: Arc<SubtaskMetrics>,
    /// The subtask's share of the snapshot the job restores from.
    pub restored: Option<RestoredState>,
    /// Where the chain's links put their snapshots at a barrier.
    pub snapshots: SnapshotCollector,
    /// Whether the job takes checkpoints (sinks become transactional).
    pub checkpointing: bool,
    /// The subtask's place in a watermark alignment group (a source's chain joins one).
    pub alignment: crate::drift::SourceAlignment,
    /// Where the vertex's functions emit side records (detached unless a side
    /// output of the vertex is consumed).
    pub side_outputs: SideOutputs,
    /// Where keyed operators keep their state.
    pub state_backend: crate::state::StateBackend,
}

impl SubtaskInfo {
    /// The key groups this subtask owns.
    pub fn key_groups(&self) -> crate::keygroup::KeyGroupRange {
        crate::keygroup::KeyGroupRange::for_subtask(self.index, self.parallelism, self.max_parallelism)
    }
}

pub use crate::checkpoint::incremental::SnapshotCollector;

/// One chain of the job: vertices run by one task per subtask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainLayout {
    pub vertices: Vec<String>,
    pub uids: Vec<String>,
    pub parallelism: usize,
    pub is_source: bool,
    /// The task index of the chain's subtask 0.
    pub first_task: usize,
    /// The chains this one reads from, and how each partitions its records ("hash", "forward", ...).
    pub inputs: Vec<(usize, String)>,
}

type SourceFactory = Arc<dyn Fn(&SubtaskInfo) -> AnyBox + Send + Sync>;
type LinkFactory = Arc<dyn Fn(&SubtaskInfo, AnyBox) -> TaskResult<AnyBox> + Send + Sync>;

pub(crate) enum NodeKind {
    Source(SourceFactory),
    Operator(LinkFactory),
}

pub(crate) struct Node {
    pub name: String,
    pub parallelism: usize,
    /// A vertex that must run as one subtask (a source that is not split).
    pub non_parallel: bool,
    /// A vertex the API adds around the user's (a local pre-aggregation, a
    /// side output's selector): numbered apart, so that adding one leaves
    /// every other vertex's uid, and so its place in snapshots, as it was.
    pub auxiliary: bool,
    /// The vertex whose parallelism an auxiliary vertex keeps (it reads it one to one).
    pub follows: Option<NodeId>,
    pub kind: NodeKind,
    pub input_type: Option<TypeId>,
    pub output: Arc<dyn StreamType>,
}

pub(crate) struct Edge {
    pub from: NodeId,
    pub to: NodeId,
    pub partitioning: Arc<dyn Any + Send + Sync>,
    pub partitioning_name: &'static str,
    pub forward: bool,
}

/// Tuning of the data path.
#[derive(Clone, Debug)]
pub struct ExchangeConfig {
    /// Records per batch on an exchange.
    pub batch_size: usize,
    /// Batches a task's input queue holds before producers block (backpressure).
    pub queue_capacity: usize,
    /// The longest a record waits in a partly filled batch before the batch
    /// goes out anyway (Flink's buffer timeout, 100 ms there by default). Zero
    /// sends every batch a producer is given at once, full or not.
    pub buffer_timeout: Duration,
}

/// The default [`ExchangeConfig::buffer_timeout`]: a few milliseconds of latency
/// at low rates; at high rates batches fill long before it.
pub const DEFAULT_BUFFER_TIMEOUT: Duration = Duration::from_millis(5);

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig { batch_size: 1024, queue_capacity: 64, buffer_timeout: DEFAULT_BUFFER_TIMEOUT }
    }
}

/// A logical job: what to run, before it is split into parallel subtasks.
pub struct JobGraph {
    pub name: String,
    pub max_parallelism: u32,
    pub exchange: ExchangeConfig,
    /// Where keyed operators keep their state.
    pub state_backend: crate::state::StateBackend,
    /// Whether checkpoints store only what changed since the one before
    /// (see [`crate::checkpoint::incremental`]); unset, they do with the disk
    /// backend and not on the heap (see [`JobGraph::incremental_checkpoints`]).
    pub incremental: Option<bool>,
    /// How snapshots store keyed state (see [`crate::checkpoint::compression`]).
    pub snapshot_compression: crate::checkpoint::compression::Compression,
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<Edge>,
    /// Vertices whose side outputs are consumed, each with the vertex that
    /// now carries its main stream.
    splits: std::collections::HashMap<NodeId, NodeId>,
}

impl JobGraph {
    pub fn new(name: impl Into<String>) -> Self {
        JobGraph {
            name: name.into(),
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            exchange: ExchangeConfig::default(),
            state_backend: Default::default(),
            incremental: None,
            snapshot_compression: crate::checkpoint::compression::Compression::Zstd,
            nodes: Vec::new(),
            edges: Vec::new(),
            splits: Default::default(),
        }
    }

    /// Whether the job's checkpoints are incremental.
    pub fn incremental_checkpoints(&self) -> bool {
        self.incremental.unwrap_or(matches!(self.state_backend, crate::state::StateBackend::Disk(_)))
    }

    pub fn add_source<T: Data>(
        &mut self,
        name: impl Into<String>,
        parallelism: usize,
        factory: impl Fn(&SubtaskInfo) -> Box<dyn Source<T>> + Send + Sync + 'static,
    ) -> NodeId {
        let factory: SourceFactory = Arc::new(move |info| Box::new(factory(info)) as AnyBox);
        self.nodes.push(Node {
            name: name.into(),
            parallelism,
            non_parallel: false,
            auxiliary: false,
            follows: None,
            kind: NodeKind::Source(factory),
            input_type: None,
            output: Arc::new(TypeOf::<T>(PhantomData)),
        });
        self.nodes.len() - 1
    }

    /// Adds an operator vertex. `factory` builds one subtask's link, given the
    /// output it must write to.
    pub fn add_operator<In: Data, Out: Data>(
        &mut self,
        name: impl Into<String>,
        parallelism: usize,
        factory: impl Fn(&SubtaskInfo, Box<dyn Output<Out>>) -> TaskResult<Box<dyn Output<In>>> + Send + Sync + 'static,
    ) -> NodeId {
        let factory: LinkFactory = Arc::new(move |info, out| {
            let out = *out.downcast::<Box<dyn Output<Out>>>().expect("output of the vertex's type");
            Ok(Box::new(factory(info, out)?) as AnyBox)
        });
        self.nodes.push(Node {
            name: name.into(),
            parallelism,
            non_parallel: false,
            auxiliary: false,
            follows: None,
            kind: NodeKind::Operator(factory),
            input_type: Some(TypeId::of::<In>()),
            output: Arc::new(TypeOf::<Out>(PhantomData)),
        });
        self.nodes.len() - 1
    }

    /// Connects `from`'s output (of type `T`) to `to`'s input.
    /// When `from`'s side outputs are consumed, the edge starts at the vertex
    /// that carries its main stream.
    pub fn connect<T: Data>(
        &mut self,
        from: NodeId,
        to: NodeId,
        partitioning: Partitioning<T>,
    ) -> Result<(), JobError> {
        let from = self.splits.get(&from).copied().unwrap_or(from);
        self.connect_exactly(from, to, partitioning)
    }

    fn connect_exactly<T: Data>(
        &mut self,
        from: NodeId,
        to: NodeId,
        partitioning: Partitioning<T>,
    ) -> Result<(), JobError> {
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        if src.output.element_type() != TypeId::of::<T>() || dst.input_type != Some(TypeId::of::<T>()) {
            return Err(JobError::InvalidGraph(format!(
                "edge {} -> {}: the stream types do not match ({} into a vertex that takes another type)",
                src.name,
                dst.name,
                std::any::type_name::<T>()
            )));
        }
        let forward = matches!(partitioning, Partitioning::Forward);
        let partitioning_name = partitioning.name();
        self.edges.push(Edge { from, to, partitioning: Arc::new(partitioning), partitioning_name, forward });
        Ok(())
    }

    /// Sets a vertex's parallelism (and that of its main stream's and side
    /// outputs' vertices, which read it one to one).
    pub fn set_parallelism(&mut self, node: NodeId, parallelism: usize) {
        self.nodes[node].parallelism = parallelism;
        self.size_followers();
    }

    /// Consumes the side output `tag` of the operator vertex `node` (whose
    /// main output is of type `T`): returns the vertex that produces the side
    /// output's records. The first call splits `node` (see
    /// [`crate::operator::side`]): its consumers, present and future, read its
    /// main stream from a vertex after it.
    pub fn add_side_output<T: Data, X: Data>(&mut self, node: NodeId, tag: OutputTag<X>) -> Result<NodeId, JobError> {
        if !self.splits.contains_key(&node) {
            self.split(node, PhantomData::<T>)?;
        }
        let (name, parallelism) =
            (format!("{}-side-{}", self.nodes[node].name, tag.name()), self.nodes[node].parallelism);
        let side = self.add_operator(name, parallelism, move |info, out| {
            Ok(Box::new(OperatorNode::new(SelectSide::<T, X>::new(tag.clone()), out, info)?))
        });
        self.set_auxiliary_of(side, node);
        self.connect_exactly(node, side, Partitioning::<Tagged<T>>::Forward)?;
        Ok(side)
    }

    /// Makes `node` emit [`Tagged`] records, read by a new vertex that keeps
    /// the main ones and takes over `node`'s outgoing edges.
    fn split<T: Data>(&mut self, node: NodeId, _main: PhantomData<T>) -> Result<(), JobError> {
        let vertex = &self.nodes[node];
        let NodeKind::Operator(factory) = &vertex.kind else {
            return Err(JobError::InvalidGraph(format!("vertex {}: a source has no side outputs", vertex.name)));
        };
        if vertex.output.element_type() != TypeId::of::<T>() {
            return Err(JobError::InvalidGraph(format!(
                "vertex {}: its output is not of type {}",
                vertex.name,
                std::any::type_name::<T>()
            )));
        }
        let inner = factory.clone();
        let tagged: LinkFactory = Arc::new(move |info, out| {
            let out = *out.downcast::<Box<dyn Output<Tagged<T>>>>().expect("output of the vertex's type");
            let sides = SideOutputs::attached();
            let main: Box<dyn Output<T>> = Box::new(MainOutput { out, sides: sides.clone() });
            let info = SubtaskInfo { side_outputs: sides, ..info.clone() };
            inner(&info, Box::new(main))
        });
        let (name, parallelism) = (format!("{}-main", vertex.name), vertex.parallelism);
        self.nodes[node].kind = NodeKind::Operator(tagged);
        self.nodes[node].output = Arc::new(TypeOf::<Tagged<T>>(PhantomData));
        let main = self.add_operator(name, parallelism, |info, out| {
            Ok(Box::new(OperatorNode::new(SelectMain::<T>::default(), out, info)?))
        });
        self.set_auxiliary_of(main, node);
        for edge in self.edges.iter_mut().filter(|e| e.from == node) {
            edge.from = main;
        }
        self.connect_exactly(node, main, Partitioning::<Tagged<T>>::Forward)?;
        self.splits.insert(node, main);
        Ok(())
    }

    pub fn parallelism(&self, node: NodeId) -> usize {
        self.nodes[node].parallelism
    }

    /// Pins `node` to one subtask: it cannot be split (a source that reads
    /// one collection), and [`JobGraph::override_parallelism`] refuses more.
    pub fn set_non_parallel(&mut self, node: NodeId) {
        self.nodes[node].parallelism = 1;
        self.nodes[node].non_parallel = true;
    }

    /// Gives the vertices named by uid their own parallelism (a restore or a
    /// rescale that sizes vertices one by one); a uid the graph does not have
    /// is an error naming the ones it has.
    pub fn override_parallelism(
        &mut self,
        vertices: &std::collections::BTreeMap<String, usize>,
    ) -> Result<(), JobError> {
        for (uid, &parallelism) in vertices {
            let Some(node) = (0..self.nodes.len()).find(|&n| &self.uid(n) == uid) else {
                let known: Vec<String> = (0..self.nodes.len()).map(|n| self.uid(n)).collect();
                return Err(JobError::InvalidGraph(format!(
                    "vertex `{uid}`: the job has no such vertex (its vertices: {})",
                    known.join(", ")
                )));
            };
            if self.nodes[node].non_parallel && parallelism != 1 {
                return Err(JobError::InvalidGraph(format!(
                    "vertex `{uid}`: runs as one subtask (it cannot be split), not {parallelism}"
                )));
            }
            self.nodes[node].parallelism = parallelism;
        }
        self.size_followers();
        Ok(())
    }

    pub fn vertex_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// Marks `node` auxiliary (see [`Node::auxiliary`]), sized as `follows`
    /// whenever that vertex is.
    pub fn set_auxiliary_of(&mut self, node: NodeId, follows: NodeId) {
        self.nodes[node].auxiliary = true;
        self.nodes[node].follows = Some(follows);
        self.nodes[node].parallelism = self.nodes[follows].parallelism;
    }

    /// Gives every auxiliary vertex its leader's parallelism (in graph order,
    /// so a follower of a follower is right too).
    fn size_followers(&mut self) {
        for n in 0..self.nodes.len() {
            if let Some(leader) = self.nodes[n].follows {
                self.nodes[n].parallelism = self.nodes[leader].parallelism;
            }
        }
    }

    /// The stable identity of a vertex: its position among the user's
    /// vertices and its name (`3-window`); an auxiliary vertex's is the
    /// position of the user's vertices before it and its own among the
    /// auxiliary ones since (`3.0-local-aggregate`).
    pub fn uid(&self, node: NodeId) -> String {
        let before = &self.nodes[..node];
        let ordinal = before.iter().filter(|n| !n.auxiliary).count();
        let name = &self.nodes[node].name;
        match self.nodes[node].auxiliary {
            false => format!("{ordinal}-{name}"),
            true => {
                let since = before.iter().rev().take_while(|n| n.auxiliary).count();
                format!("{ordinal}.{since}-{name}")
            }
        }
    }

    /// Every vertex's uid and parallelism.
    pub fn operators(&self) -> std::collections::BTreeMap<String, usize> {
        (0..self.nodes.len()).map(|n| (self.uid(n), self.nodes[n].parallelism)).collect()
    }

    /// A readable plan: the chains (tasks) with their parallelism, and the exchanges between them.
    pub fn describe(&self) -> String {
        let chains = self.plan();
        let chain_of = |n: NodeId| chains.iter().position(|c| c.contains(&n)).expect("planned");
        let mut s = String::new();
        for (i, chain) in chains.iter().enumerate() {
            let names: Vec<&str> = chain.iter().map(|&n| self.nodes[n].name.as_str()).collect();
            s.push_str(&format!("  task {i} x{}: {}\n", self.nodes[chain[0]].parallelism, names.join(" -> ")));
            let tail = *chain.last().expect("non-empty");
            for e in self.edges.iter().filter(|e| e.from == tail) {
                s.push_str(&format!("    --{}--> task {}\n", e.partitioning_name, chain_of(e.to)));
            }
        }
        s
    }

    /// The chains (tasks) the job runs as, in deployment order. A task's
    /// index in the job is its chain's `first_task` plus its subtask index.
    pub fn layout(&self) -> Vec<ChainLayout> {
        let mut first_task = 0;
        let plan = self.plan();
        let chain_of = |n: NodeId| plan.iter().position(|c| c.contains(&n)).expect("planned");
        plan.iter()
            .map(|nodes| {
                let head = &self.nodes[nodes[0]];
                let inputs = self
                    .edges
                    .iter()
                    .filter(|e| e.to == nodes[0] && !nodes.contains(&e.from))
                    .map(|e| (chain_of(e.from), e.partitioning_name.to_string()))
                    .collect();
                let chain = ChainLayout {
                    vertices: nodes.iter().map(|&n| self.nodes[n].name.clone()).collect(),
                    uids: nodes.iter().map(|&n| self.uid(n)).collect(),
                    parallelism: head.parallelism,
                    is_source: matches!(head.kind, NodeKind::Source(_)),
                    first_task,
                    inputs,
                };
                first_task += chain.parallelism;
                chain
            })
            .collect()
    }

    /// The consumer chain (index in [`JobGraph::layout`]) of every edge.
    pub fn edge_chains(&self) -> Vec<usize> {
        let chains = self.plan();
        self.edges.iter().map(|e| chains.iter().position(|c| c.contains(&e.to)).expect("planned")).collect()
    }

    /// The task indices of the source tasks.
    pub fn source_tasks(&self) -> Vec<usize> {
        self.layout().iter().filter(|c| c.is_source).flat_map(|c| c.first_task..c.first_task + c.parallelism).collect()
    }

    /// What the checkpoint coordinator needs to know about the job.
    pub fn checkpoint_shape(&self) -> JobShape {
        let layout = self.layout();
        JobShape {
            name: self.name.clone(),
            max_parallelism: self.max_parallelism,
            operators: self.operators(),
            tasks: layout.iter().map(|c| c.parallelism).sum(),
            sources: layout.iter().filter(|c| c.is_source).map(|c| c.parallelism).sum(),
        }
    }

    pub fn validate(&self) -> Result<(), JobError> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.parallelism == 0 {
                return Err(JobError::InvalidGraph(format!("vertex {}: parallelism must be at least 1", n.name)));
            }
            if n.non_parallel && n.parallelism != 1 {
                return Err(JobError::InvalidGraph(format!(
                    "vertex {}: runs as one subtask (it cannot be split), not {}",
                    n.name, n.parallelism
                )));
            }
            if n.parallelism > self.max_parallelism as usize {
                return Err(JobError::InvalidGraph(format!(
                    "vertex {}: parallelism {} exceeds max parallelism {}",
                    n.name, n.parallelism, self.max_parallelism
                )));
            }
            if matches!(n.kind, NodeKind::Operator(_)) && !self.edges.iter().any(|e| e.to == i) {
                return Err(JobError::InvalidGraph(format!("vertex {} has no input", n.name)));
            }
        }
        Ok(())
    }

    /// Splits the graph into chains (lists of vertices run by one task each).
    pub(crate) fn plan(&self) -> Vec<Vec<NodeId>> {
        let n = self.nodes.len();
        let outs = |v: NodeId| self.edges.iter().filter(move |e| e.from == v);
        let ins = |v: NodeId| self.edges.iter().filter(move |e| e.to == v);
        let mut next: Vec<Option<NodeId>> = vec![None; n];
        let mut chained_in = vec![false; n];
        for (v, next_of_v) in next.iter_mut().enumerate() {
            let mut o = outs(v);
            if let (Some(e), None) = (o.next(), o.next())
                && e.forward
                && self.nodes[e.to].parallelism == self.nodes[v].parallelism
                && ins(e.to).count() == 1
            {
                *next_of_v = Some(e.to);
                chained_in[e.to] = true;
            }
        }
        (0..n)
            .filter(|&v| !chained_in[v])
            .map(|head| {
                let mut chain = vec![head];
                while let Some(nx) = next[*chain.last().expect("non-empty")] {
                    chain.push(nx);
                }
                chain
            })
            .collect()
    }
}

/// Type-erased operations on a stream of one element type.
pub(crate) trait StreamType: Send + Sync {
    fn element_type(&self) -> TypeId;
    /// `(Sender<Envelope<T>>, Receiver<Envelope<T>>)`, both boxed.
    fn input_queue(&self, capacity: usize) -> (AnyBox, AnyBox);
    fn clone_sender(&self, sender: &AnyBox) -> AnyBox;
    /// A `Box<dyn Output<T>>` writing to `targets` (senders with their channel numbers).
    fn writer(
        &self,
        partitioning: &(dyn Any + Send + Sync),
        targets: Vec<(AnyBox, u32)>,
        batching: (usize, Duration),
        metrics: Arc<SubtaskMetrics>,
    ) -> AnyBox;
    fn fan_out(&self, outputs: Vec<AnyBox>) -> AnyBox;
    fn discard(&self) -> AnyBox;
    /// A channel to a consumer in another process: the sender a writer writes
    /// to (a queue of `capacity` events), and the encoded end the network pulls.
    fn remote_output(&self, capacity: usize) -> (AnyBox, Box<dyn OutboundChannel>);
    /// A channel from a producer in another process into the input queue `sender`.
    fn remote_input(&self, sender: &AnyBox, channel: u32) -> Box<dyn InboundChannel>;
    fn source_task(&self, source: AnyBox, head: AnyBox, info: &SubtaskInfo, env: TaskEnv) -> TaskResult<Box<dyn Task>>;
    fn input_task(&self, receiver: AnyBox, channels: usize, head: AnyBox, env: TaskEnv) -> Box<dyn Task>;
}

struct TypeOf<T>(PhantomData<fn() -> T>);

type Sender<T> = crossbeam_channel::Sender<Envelope<T>>;
type Receiver<T> = crossbeam_channel::Receiver<Envelope<T>>;

impl<T: Data> StreamType for TypeOf<T> {
    fn element_type(&self) -> TypeId {
        TypeId::of::<T>()
    }

    fn input_queue(&self, capacity: usize) -> (AnyBox, AnyBox) {
        let (tx, rx) = input_queue::<T>(capacity);
        (Box::new(tx), Box::new(rx))
    }

    fn clone_sender(&self, sender: &AnyBox) -> AnyBox {
        Box::new(sender.downcast_ref::<Sender<T>>().expect("sender type").clone())
    }

    fn writer(
        &self,
        partitioning: &(dyn Any + Send + Sync),
        targets: Vec<(AnyBox, u32)>,
        batching: (usize, Duration),
        metrics: Arc<SubtaskMetrics>,
    ) -> AnyBox {
        let partitioning = partitioning.downcast_ref::<Partitioning<T>>().expect("partitioning type").clone();
        let targets = targets
            .into_iter()
            .map(|(tx, channel)| ChannelSender { tx: *tx.downcast::<Sender<T>>().expect("sender type"), channel })
            .collect();
        let out: Box<dyn Output<T>> = Box::new(ExchangeWriter::new(partitioning, targets, batching, metrics));
        Box::new(out)
    }

    fn remote_output(&self, capacity: usize) -> (AnyBox, Box<dyn OutboundChannel>) {
        let (tx, rx) = input_queue::<T>(capacity);
        (Box::new(tx), Box::new(QueueOutbound { rx, ended: false }))
    }

    fn remote_input(&self, sender: &AnyBox, channel: u32) -> Box<dyn InboundChannel> {
        let tx = sender.downcast_ref::<Sender<T>>().expect("sender type").clone();
        Box::new(QueueInbound { tx, channel })
    }

    fn fan_out(&self, outputs: Vec<AnyBox>) -> AnyBox {
        let outputs = outputs.into_iter().map(|o| *o.downcast::<Box<dyn Output<T>>>().expect("output type")).collect();
        let out: Box<dyn Output<T>> = Box::new(FanOut::new(outputs));
        Box::new(out)
    }

    fn discard(&self) -> AnyBox {
        let out: Box<dyn Output<T>> = Box::new(Discard);
        Box::new(out)
    }

    fn source_task(&self, source: AnyBox, head: AnyBox, info: &SubtaskInfo, env: TaskEnv) -> TaskResult<Box<dyn Task>> {
        let mut source = *source.downcast::<Box<dyn Source<T>>>().expect("source type");
        if let Some(state) = info.restored.clone() {
            source.restore_state(state)?;
        }
        let head = *head.downcast::<Box<dyn Output<T>>>().expect("output type");
        Ok(Box::new(SourceTask::new(source, head, info.uid.clone(), env)))
    }

    fn input_task(&self, receiver: AnyBox, channels: usize, head: AnyBox, env: TaskEnv) -> Box<dyn Task> {
        let rx = *receiver.downcast::<Receiver<T>>().expect("receiver type");
        let head = *head.downcast::<Box<dyn Output<T>>>().expect("output type");
        Box::new(InputTask::new(rx, channels, head, env))
    }
}
