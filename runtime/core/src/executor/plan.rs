//! The physical plan: which subtasks run in this process, and the channels
//! between them.
//!
//! [`PhysicalPlan::of`] is a pure function of the [`JobGraph`] and of the
//! subtasks to deploy here; the executor then only carries the plan out
//! ([`super::deploy`]: it makes the queues, hands the network its channels
//! and builds the chains). The plan is computed once, before any task starts:
//! nothing here is on the path of a record.
//!
//! ```text
//!  producer subtask j of chain A            consumer subtask k of chain B
//!  ┌──────────────────────────┐  edge e   ┌───────────────────────────────────┐
//!  │ ... -> tail ── outputs[e]├──────────>│ input queue -> gate: channel n    │
//!  │        targets[k]: Local │           │ input.channels[n] = (e, j)        │
//!  │        or Remote (key)   │           │ remote: the network feeds it      │
//!  └──────────────────────────┘           └───────────────────────────────────┘
//! ```
//!
//! * An edge is [`Wiring::Pointwise`] when it is `Forward` between equal
//!   parallelisms (subtask i writes to subtask i only), and
//!   [`Wiring::AllToAll`] otherwise (every producer subtask writes to every
//!   consumer subtask; the writer's partitioning picks one per record).
//! * A consumer's gate numbers its channels edge by edge (the input edges of
//!   the chain's head, in graph order), producer by producer within an edge.
//! * A channel whose other end runs in another process is remote: a producer
//!   writes it through a small queue the network drains
//!   ([`REMOTE_QUEUE_CAPACITY`]); a consumer's queue is fed by the network.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::exchange::remote::ChannelKey;
use crate::graph::{ChainLayout, JobGraph, NodeId};

/// Events a producer may queue for a remote consumer before it blocks; the
/// network layer's credits bound what is in flight beyond that.
pub(crate) const REMOTE_QUEUE_CAPACITY: usize = 8;

/// What this process runs of a job, and how its subtasks are wired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PhysicalPlan {
    /// Every chain of the job (as in [`JobGraph::layout`]), with the subtasks that run here.
    pub chains: Vec<ChainPlan>,
}

/// One chain: its vertices, and those of its subtasks that run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChainPlan {
    /// The chain's vertices, head first.
    pub nodes: Vec<NodeId>,
    pub layout: ChainLayout,
    /// The subtasks that run here, in subtask order.
    pub subtasks: Vec<SubtaskPlan>,
}

/// One subtask of a chain that runs here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SubtaskPlan {
    pub index: usize,
    /// Its number among the job's tasks (as the checkpoint coordinator counts them).
    pub task: usize,
    /// Its input queue and gate; `None` for a chain that starts with a source.
    pub input: Option<InputPlan>,
    /// One exchange per output edge of the chain's tail, in graph order.
    pub outputs: Vec<OutputPlan>,
}

/// A subtask's input queue, and the channels its gate reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InputPlan {
    /// Events the queue holds before its producers block (backpressure).
    pub queue_capacity: usize,
    /// Channel `n` of the gate is `channels[n]`.
    pub channels: Vec<InputChannel>,
}

/// One channel into a gate: the exchange (edge) and producer subtask it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InputChannel {
    pub edge: usize,
    pub producer: usize,
    /// The producer runs in another process: the network feeds this channel.
    pub remote: bool,
}

/// A producer subtask's side of one exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OutputPlan {
    pub edge: usize,
    pub wiring: Wiring,
    /// Records per batch.
    pub batch_size: usize,
    /// The channel to each consumer subtask written to, in subtask order
    /// (all of them, or with pointwise wiring the one of the same index).
    pub targets: Vec<Target>,
}

/// Which consumer subtasks a producer subtask writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wiring {
    /// Subtask i to subtask i (a forward edge between equal parallelisms).
    Pointwise,
    /// Every producer subtask to every consumer subtask.
    AllToAll,
}

/// Where a channel of an exchange goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Onto the input queue of a subtask that runs here, as channel `channel` of its gate.
    Local { chain: usize, subtask: usize, channel: u32 },
    /// To a subtask in another process, through a queue of `capacity` events the network drains.
    Remote { key: ChannelKey, channel: u32, capacity: usize },
}

impl Target {
    /// The channel's number on the consumer's gate.
    pub fn channel(&self) -> u32 {
        match *self {
            Target::Local { channel, .. } | Target::Remote { channel, .. } => channel,
        }
    }
}

impl InputPlan {
    /// The channels of consumer subtask `consumer` fed by the network, with their numbers.
    pub fn remote_channels(&self, consumer: usize) -> impl Iterator<Item = (ChannelKey, u32)> + '_ {
        self.channels.iter().enumerate().filter(|(_, c)| c.remote).map(move |(n, c)| {
            let key = ChannelKey { edge: c.edge as u32, producer: c.producer as u32, consumer: consumer as u32 };
            (key, n as u32)
        })
    }
}

impl PhysicalPlan {
    /// The plan of `graph` for the `(chain, subtask)` pairs in `here` (every
    /// subtask when `None`; chains numbered as in [`JobGraph::layout`]).
    pub fn of(graph: &JobGraph, here: Option<&HashSet<(usize, usize)>>) -> PhysicalPlan {
        let wiring = GraphWiring::new(graph, here);
        let chains = graph
            .plan()
            .into_iter()
            .zip(graph.layout())
            .enumerate()
            .map(|(c, (nodes, layout))| {
                let subtasks = (0..layout.parallelism)
                    .filter(|&i| wiring.runs_here(c, i))
                    .map(|i| wiring.subtask(&nodes, &layout, i))
                    .collect();
                ChainPlan { nodes, layout, subtasks }
            })
            .collect();
        PhysicalPlan { chains }
    }
}

/// The graph with what the plan asks of it: where each vertex's chain is,
/// which subtasks run here, how each edge is wired.
struct GraphWiring<'a> {
    graph: &'a JobGraph,
    here: Option<&'a HashSet<(usize, usize)>>,
    chain_of: HashMap<NodeId, usize>,
}

impl<'a> GraphWiring<'a> {
    fn new(graph: &'a JobGraph, here: Option<&'a HashSet<(usize, usize)>>) -> Self {
        let chain_of =
            graph.plan().iter().enumerate().flat_map(|(c, nodes)| nodes.iter().map(move |&n| (n, c))).collect();
        GraphWiring { graph, here, chain_of }
    }

    fn runs_here(&self, chain: usize, subtask: usize) -> bool {
        self.here.is_none_or(|h| h.contains(&(chain, subtask)))
    }

    fn subtask(&self, nodes: &[NodeId], layout: &ChainLayout, i: usize) -> SubtaskPlan {
        let tail = *nodes.last().expect("a chain has a vertex");
        let outputs = (0..self.graph.edges.len())
            .filter(|&e| self.graph.edges[e].from == tail)
            .map(|e| self.output(e, i))
            .collect();
        SubtaskPlan { index: i, task: layout.first_task + i, input: self.input(nodes[0], i), outputs }
    }

    fn wiring(&self, edge: usize) -> Wiring {
        let (e, nodes) = (&self.graph.edges[edge], &self.graph.nodes);
        if e.forward && nodes[e.from].parallelism == nodes[e.to].parallelism {
            Wiring::Pointwise
        } else {
            Wiring::AllToAll
        }
    }

    /// The producer subtasks that write to consumer subtask `k` over `edge`.
    fn producers_of(&self, edge: usize, k: usize) -> Range<usize> {
        match self.wiring(edge) {
            Wiring::Pointwise => k..k + 1,
            Wiring::AllToAll => 0..self.graph.nodes[self.graph.edges[edge].from].parallelism,
        }
    }

    /// The consumer subtasks producer subtask `i` writes to over `edge`.
    fn consumers_of(&self, edge: usize, i: usize) -> Range<usize> {
        match self.wiring(edge) {
            Wiring::Pointwise => i..i + 1,
            Wiring::AllToAll => 0..self.graph.nodes[self.graph.edges[edge].to].parallelism,
        }
    }

    /// The input edges of `head`, in graph order.
    fn input_edges(&self, head: NodeId) -> impl Iterator<Item = usize> + '_ {
        (0..self.graph.edges.len()).filter(move |&e| self.graph.edges[e].to == head)
    }

    /// The gate of consumer subtask `k` of the chain headed by `head`: edge by edge, producer by producer.
    fn input(&self, head: NodeId, k: usize) -> Option<InputPlan> {
        let channels: Vec<InputChannel> = self
            .input_edges(head)
            .flat_map(|e| {
                let producer_chain = self.chain_of[&self.graph.edges[e].from];
                self.producers_of(e, k).map(move |j| InputChannel {
                    edge: e,
                    producer: j,
                    remote: !self.runs_here(producer_chain, j),
                })
            })
            .collect();
        (!channels.is_empty()).then_some(InputPlan { queue_capacity: self.graph.exchange.queue_capacity, channels })
    }

    /// The number of the channel from producer `j` over `edge` on consumer `k`'s gate.
    fn channel(&self, edge: usize, j: usize, k: usize) -> u32 {
        let head = self.graph.edges[edge].to;
        let before: usize =
            self.input_edges(head).take_while(|&e| e != edge).map(|e| self.producers_of(e, k).len()).sum();
        let offset = j - self.producers_of(edge, k).start;
        (before + offset) as u32
    }

    /// Producer subtask `i`'s side of `edge`.
    fn output(&self, edge: usize, i: usize) -> OutputPlan {
        let consumer_chain = self.chain_of[&self.graph.edges[edge].to];
        let targets = self
            .consumers_of(edge, i)
            .map(|k| {
                let channel = self.channel(edge, i, k);
                if self.runs_here(consumer_chain, k) {
                    Target::Local { chain: consumer_chain, subtask: k, channel }
                } else {
                    let key = ChannelKey { edge: edge as u32, producer: i as u32, consumer: k as u32 };
                    Target::Remote { key, channel, capacity: REMOTE_QUEUE_CAPACITY }
                }
            })
            .collect();
        OutputPlan { edge, wiring: self.wiring(edge), batch_size: self.graph.exchange.batch_size, targets }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::exchange::Partitioning;
    use crate::source::Source;

    fn source(g: &mut JobGraph, name: &str, parallelism: usize) -> NodeId {
        g.add_source::<u64>(name, parallelism, |_| -> Box<dyn Source<u64>> { unreachable!("a plan builds nothing") })
    }

    fn operator(g: &mut JobGraph, name: &str, parallelism: usize) -> NodeId {
        g.add_operator::<u64, u64>(name, parallelism, |_, _| unreachable!("a plan builds nothing"))
    }

    fn forward() -> Partitioning<u64> {
        Partitioning::Forward
    }

    fn hash() -> Partitioning<u64> {
        Partitioning::Hash { key_hash: Arc::new(|v: &u64| *v), max_parallelism: 128 }
    }

    fn local(chain: usize, subtask: usize, channel: u32) -> Target {
        Target::Local { chain, subtask, channel }
    }

    fn from(edge: usize, producer: usize) -> InputChannel {
        InputChannel { edge, producer, remote: false }
    }

    fn subtask_plan(plan: &PhysicalPlan, chain: usize, index: usize) -> &SubtaskPlan {
        plan.chains[chain].subtasks.iter().find(|s| s.index == index).expect("the subtask runs here")
    }

    #[test]
    fn a_forward_edge_between_equal_parallelisms_is_chained_and_needs_no_channel() {
        let mut g = JobGraph::new("chained");
        let (s, m) = (source(&mut g, "source", 2), operator(&mut g, "map", 2));
        g.connect(s, m, forward()).unwrap();
        let plan = PhysicalPlan::of(&g, None);
        assert_eq!(plan.chains.len(), 1);
        assert_eq!(plan.chains[0].nodes, vec![s, m]);
        for (i, sub) in plan.chains[0].subtasks.iter().enumerate() {
            assert_eq!((sub.index, sub.task, &sub.input, &sub.outputs), (i, i, &None, &vec![]));
        }
    }

    #[test]
    fn forward_edges_out_of_a_fan_out_are_pointwise() {
        let mut g = JobGraph::new("fan-out");
        let s = source(&mut g, "source", 2);
        let (a, b) = (operator(&mut g, "a", 2), operator(&mut g, "b", 2));
        g.connect(s, a, forward()).unwrap();
        g.connect(s, b, forward()).unwrap();
        let plan = PhysicalPlan::of(&g, None);
        assert_eq!(plan.chains.iter().map(|c| c.nodes.clone()).collect::<Vec<_>>(), [[s], [a], [b]]);
        let producer = subtask_plan(&plan, 0, 1);
        assert_eq!(producer.input, None, "a source chain has no gate");
        assert_eq!(producer.outputs.len(), 2);
        for (edge, out) in producer.outputs.iter().enumerate() {
            assert_eq!((out.edge, out.wiring, out.batch_size), (edge, Wiring::Pointwise, g.exchange.batch_size));
            assert_eq!(out.targets, [local(edge + 1, 1, 0)]);
        }
        let consumer = subtask_plan(&plan, 1, 1);
        assert_eq!((consumer.task, consumer.outputs.len()), (3, 0), "tasks count chain by chain");
        let input = consumer.input.as_ref().unwrap();
        assert_eq!((input.queue_capacity, &input.channels[..]), (g.exchange.queue_capacity, &[from(0, 1)][..]));
    }

    #[test]
    fn hash_exchanges_are_all_to_all_at_any_parallelisms() {
        for (p, q) in [(2, 3), (3, 2), (2, 2)] {
            let mut g = JobGraph::new("hash");
            let (s, k) = (source(&mut g, "source", p), operator(&mut g, "keyed", q));
            g.connect(s, k, hash()).unwrap();
            let plan = PhysicalPlan::of(&g, None);
            for j in 0..p {
                let out = &subtask_plan(&plan, 0, j).outputs[0];
                assert_eq!(out.wiring, Wiring::AllToAll);
                let expected: Vec<Target> = (0..q).map(|k| local(1, k, j as u32)).collect();
                assert_eq!(out.targets, expected, "producer {j} of {p} writes to every one of {q} consumers");
            }
            for k in 0..q {
                let sub = subtask_plan(&plan, 1, k);
                assert_eq!(sub.task, p + k);
                let expected: Vec<InputChannel> = (0..p).map(|j| from(0, j)).collect();
                assert_eq!(sub.input.as_ref().unwrap().channels, expected);
            }
        }
    }

    #[test]
    fn a_forward_edge_between_unequal_parallelisms_is_all_to_all() {
        let mut g = JobGraph::new("widen");
        let (s, m) = (source(&mut g, "source", 1), operator(&mut g, "map", 3));
        g.connect(s, m, forward()).unwrap();
        let plan = PhysicalPlan::of(&g, None);
        assert_eq!(plan.chains.len(), 2);
        let out = &subtask_plan(&plan, 0, 0).outputs[0];
        assert_eq!((out.wiring, out.targets.len()), (Wiring::AllToAll, 3));
    }

    #[test]
    fn a_gate_numbers_its_channels_edge_by_edge_then_producer_by_producer() {
        let mut g = JobGraph::new("join");
        let (left, right) = (source(&mut g, "left", 2), source(&mut g, "right", 3));
        let join = operator(&mut g, "join", 2);
        g.connect(left, join, hash()).unwrap();
        g.connect(right, join, hash()).unwrap();
        let plan = PhysicalPlan::of(&g, None);
        let channels = &subtask_plan(&plan, 2, 1).input.as_ref().unwrap().channels;
        assert_eq!(channels, &[from(0, 0), from(0, 1), from(1, 0), from(1, 1), from(1, 2)]);
        // The producers' targets agree with the gate's numbering.
        assert_eq!(subtask_plan(&plan, 0, 1).outputs[0].targets, [local(2, 0, 1), local(2, 1, 1)]);
        assert_eq!(subtask_plan(&plan, 1, 2).outputs[0].targets, [local(2, 0, 4), local(2, 1, 4)]);
    }

    #[test]
    fn a_deployed_subset_plans_its_own_subtasks_and_reaches_the_others_over_the_network() {
        let mut g = JobGraph::new("spread");
        let (s, k) = (source(&mut g, "source", 2), operator(&mut g, "keyed", 2));
        g.connect(s, k, hash()).unwrap();
        let here = HashSet::from([(0, 0), (1, 1)]);
        let plan = PhysicalPlan::of(&g, Some(&here));
        assert_eq!(plan.chains[0].subtasks.iter().map(|s| s.index).collect::<Vec<_>>(), [0]);
        assert_eq!(plan.chains[1].subtasks.iter().map(|s| (s.index, s.task)).collect::<Vec<_>>(), [(1, 3)]);
        let key = ChannelKey { edge: 0, producer: 0, consumer: 0 };
        let remote = Target::Remote { key, channel: 0, capacity: REMOTE_QUEUE_CAPACITY };
        assert_eq!(plan.chains[0].subtasks[0].outputs[0].targets, [remote, local(1, 1, 0)]);
        let input = plan.chains[1].subtasks[0].input.as_ref().unwrap();
        assert_eq!(input.channels, [from(0, 0), InputChannel { edge: 0, producer: 1, remote: true }]);
        let fed = ChannelKey { edge: 0, producer: 1, consumer: 1 };
        assert_eq!(input.remote_channels(1).collect::<Vec<_>>(), [(fed, 1)]);
    }

    #[test]
    fn a_pointwise_edge_across_processes_is_one_remote_channel() {
        let mut g = JobGraph::new("split");
        let s = source(&mut g, "source", 2);
        let (a, b) = (operator(&mut g, "a", 2), operator(&mut g, "b", 2));
        g.connect(s, a, forward()).unwrap();
        g.connect(s, b, forward()).unwrap();
        let here = HashSet::from([(0, 1), (1, 0), (2, 1)]);
        let plan = PhysicalPlan::of(&g, Some(&here));
        let outputs = &plan.chains[0].subtasks[0].outputs;
        let key = ChannelKey { edge: 0, producer: 1, consumer: 1 };
        assert_eq!(outputs[0].targets, [Target::Remote { key, channel: 0, capacity: REMOTE_QUEUE_CAPACITY }]);
        assert_eq!(outputs[1].targets, [local(2, 1, 0)]);
        let a0 = plan.chains[1].subtasks[0].input.as_ref().unwrap();
        assert_eq!(a0.channels, [InputChannel { edge: 0, producer: 0, remote: true }]);
    }
}
