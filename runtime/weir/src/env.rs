//! The stream environment: where a job is assembled and from where it runs.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use weir_core::executor::{self, ExecuteOptions, JobHandle};
use weir_core::graph::{JobGraph, NodeId, SubtaskInfo};
use weir_core::source::Source;
use weir_core::{Data, JobError};

use crate::datagen::{DatagenSource, DatagenSplit};
use crate::sources::CollectionSource;
use crate::stream::DataStream;

pub(crate) struct EnvInner {
    pub graph: JobGraph,
    pub parallelism: usize,
    pub local_aggregation: bool,
}

/// Builds a job (Flink's `StreamExecutionEnvironment`): create sources from
/// it, transform the streams, add sinks, then [`StreamEnv::execute`].
#[derive(Clone)]
pub struct StreamEnv {
    pub(crate) inner: Rc<RefCell<EnvInner>>,
}

impl StreamEnv {
    pub fn new(job_name: impl Into<String>) -> Self {
        StreamEnv {
            inner: Rc::new(RefCell::new(EnvInner {
                graph: JobGraph::new(job_name),
                parallelism: 1,
                local_aggregation: true,
            })),
        }
    }

    /// The default parallelism of every vertex added from now on.
    pub fn set_parallelism(&self, parallelism: usize) -> &Self {
        self.inner.borrow_mut().parallelism = parallelism.max(1);
        self
    }

    pub fn parallelism(&self) -> usize {
        self.inner.borrow().parallelism
    }

    /// The number of key groups: the upper bound of any keyed vertex's parallelism.
    pub fn set_max_parallelism(&self, max: u32) -> &Self {
        self.inner.borrow_mut().graph.max_parallelism = max;
        self
    }

    /// Records per exchanged batch, and batches per input queue (the backpressure bound).
    pub fn set_exchange(&self, batch_size: usize, queue_capacity: usize) -> &Self {
        let mut inner = self.inner.borrow_mut();
        inner.graph.exchange.batch_size = batch_size.max(1);
        inner.graph.exchange.queue_capacity = queue_capacity.max(1);
        self
    }

    /// The longest a record waits in a partly filled exchanged batch (see
    /// [`ExchangeConfig::buffer_timeout`](weir_core::graph::ExchangeConfig)); zero sends
    /// every batch at once.
    pub fn set_buffer_timeout(&self, timeout: std::time::Duration) -> &Self {
        self.inner.borrow_mut().graph.exchange.buffer_timeout = timeout;
        self
    }

    /// Whether window aggregates (`aggregate`, `reduce`) over tumbling and
    /// sliding windows without allowed lateness are combined per key and
    /// pane before the key exchange (see
    /// [`weir_core::window::local`]): on by default. The results are the
    /// same either way; off, every record crosses the exchange.
    pub fn set_local_aggregation(&self, on: bool) -> &Self {
        self.inner.borrow_mut().local_aggregation = on;
        self
    }

    /// Where keyed operators keep their state: on the heap (the default) or
    /// on disk under a memory budget ([`weir_core::state::StateBackend::disk`]).
    pub fn set_state_backend(&self, backend: weir_core::state::StateBackend) -> &Self {
        self.inner.borrow_mut().graph.state_backend = backend;
        self
    }

    /// Whether checkpoints store only the keyed state that changed since the
    /// one before (and name the files of earlier ones), as Flink's incremental
    /// checkpoints: by default on with the disk backend, off on the heap.
    pub fn set_incremental_checkpoints(&self, on: bool) -> &Self {
        self.inner.borrow_mut().graph.incremental = Some(on);
        self
    }

    /// How checkpoints and savepoints store keyed state: zstd (the default;
    /// about a third of the bytes to upload and keep) or as encoded
    /// ([`weir_core::checkpoint::compression::Compression`]), as Flink's
    /// snapshot compression. Snapshots of either kind restore either way.
    pub fn set_snapshot_compression(&self, compression: weir_core::checkpoint::compression::Compression) -> &Self {
        self.inner.borrow_mut().graph.snapshot_compression = compression;
        self
    }

    pub fn local_aggregation(&self) -> bool {
        self.inner.borrow().local_aggregation
    }

    /// A source built per subtask by `factory`.
    pub fn add_source<T: Data>(
        &self,
        name: &str,
        factory: impl Fn(&SubtaskInfo) -> Box<dyn Source<T>> + Send + Sync + 'static,
    ) -> DataStream<T> {
        let p = self.parallelism();
        let node = self.inner.borrow_mut().graph.add_source(name, p, factory);
        DataStream::new(self.clone(), vec![node])
    }

    /// A non-parallel source emitting `items` in order, without timestamps.
    pub fn from_collection<T: Data + Sync>(&self, items: Vec<T>) -> DataStream<T> {
        let items = Arc::new(items);
        let stream = self.add_source("collection", move |_| Box::new(CollectionSource::new(items.clone())));
        self.graph_mut(|g| g.set_non_parallel(stream.nodes[0]));
        stream
    }

    /// A generated stream: `generate(n)` for n in `0..count` (or forever), split over subtasks,
    /// at `rate` over all subtasks: `None` (unthrottled), `Some(events_per_second)`, or a
    /// [`RateProfile`](crate::datagen::RateProfile) such as steps or a sine.
    ///
    /// # Panics
    ///
    /// When the rate profile is invalid (see [`RateProfile::validate`](crate::datagen::RateProfile::validate)):
    /// a mistake in the job's code, found when the job is assembled.
    pub fn datagen<T: Data, G: Fn(u64) -> T + Send + Sync + Clone + 'static>(
        &self,
        name: &str,
        generate: G,
        count: Option<u64>,
        rate: impl crate::datagen::IntoRateProfile,
    ) -> DataStream<T> {
        let rate = rate.into_rate_profile();
        if let Some(Err(e)) = rate.as_ref().map(|p| p.validate()) {
            panic!("datagen source `{name}`: {e}");
        }
        self.add_source(name, move |info| {
            let split = DatagenSplit { subtask: info.index, parallelism: info.parallelism, count, rate: rate.clone() };
            Box::new(DatagenSource::new(generate.clone(), split).with_metrics(info.metrics.clone()))
        })
    }

    pub(crate) fn graph_mut<R>(&self, f: impl FnOnce(&mut JobGraph) -> R) -> R {
        f(&mut self.inner.borrow_mut().graph)
    }

    pub(crate) fn set_vertex_parallelism(&self, node: NodeId, parallelism: usize) {
        self.graph_mut(|g| g.set_parallelism(node, parallelism.max(1)));
    }

    /// The plan: tasks, their parallelism, and the exchanges between them.
    pub fn describe(&self) -> String {
        self.inner.borrow().graph.describe()
    }

    /// Starts the job on threads of this process.
    pub fn start(self) -> Result<JobHandle, JobError> {
        self.start_with(ExecuteOptions::default())
    }

    /// Starts the job with checkpointing and/or from a snapshot.
    pub fn start_with(self, options: ExecuteOptions) -> Result<JobHandle, JobError> {
        executor::execute_with(self.into_graph()?, options)
    }

    /// The job's graph, to run elsewhere (the distributed runtime builds it in every process).
    pub fn into_graph(self) -> Result<JobGraph, JobError> {
        let inner = Rc::try_unwrap(self.inner)
            .map_err(|_| {
                JobError::InvalidGraph("streams of this job are still in use; drop them before starting".into())
            })?
            .into_inner();
        Ok(inner.graph)
    }

    /// The job's name (its id in storage paths and URLs).
    pub fn job_name(&self) -> String {
        self.inner.borrow().graph.name.clone()
    }

    /// The job's max parallelism.
    pub fn max_parallelism(&self) -> u32 {
        self.inner.borrow().graph.max_parallelism
    }

    /// Runs the job to completion (bounded sources) on threads of this process.
    pub fn execute(self) -> Result<(), JobError> {
        self.start()?.wait()
    }
}
