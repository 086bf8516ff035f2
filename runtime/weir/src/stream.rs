//! Streams and their transformations: [`DataStream`], [`KeyedStream`], [`WindowedStream`].
//!
//! Every transformation adds a vertex to the job graph and returns the stream
//! it produces. Vertices take the environment's parallelism unless
//! [`DataStream::set_parallelism`] says otherwise; consecutive vertices of equal
//! parallelism joined by a forward edge are chained into one task.

use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_core::exchange::Partitioning;
use weir_core::graph::{NodeId, SubtaskInfo};
use weir_core::keygroup::hash_key;
use weir_core::operator::async_io::{AsyncFunction, AsyncOptions, AsyncWait};
use weir_core::operator::basic::{Filter, FlatMap, Map};
use weir_core::operator::process::{KeyedProcessFunction, KeyedProcessOperator};
use weir_core::operator::side::OutputTag;
use weir_core::operator::sink::{Sink, SinkNode};
use weir_core::operator::watermarks::WatermarkAssigner;
use weir_core::operator::{Operator, OperatorNode};
use weir_core::output::Output;
use weir_core::state::Key;
use weir_core::window::local::{self, LocalAggregate, MergePartials, Partial};
use weir_core::window::{
    AggregateFunction, AggregateWindow, LateData, ProcessWindow, ProcessingTime, ReduceWindow, Window, WindowAssigner,
    WindowFunction, WindowOperator,
};
use weir_core::{Data, Record, TaskResult, Timestamp, WatermarkStrategy};

use crate::env::StreamEnv;
use crate::sinks::{CollectSink, DiscardSink, LineFileSink, PrintSink, json_line};

/// A stream of `T` (possibly the union of several producers).
pub struct DataStream<T> {
    pub(crate) env: StreamEnv,
    pub(crate) nodes: Vec<NodeId>,
    partitioning: Partitioning<T>,
    _t: PhantomData<fn() -> T>,
}

/// A stream may feed several consumers: clone it, and each clone is one more output edge.
impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            env: self.env.clone(),
            nodes: self.nodes.clone(),
            partitioning: self.partitioning.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Data> DataStream<T> {
    pub(crate) fn new(env: StreamEnv, nodes: Vec<NodeId>) -> Self {
        DataStream { env, nodes, partitioning: Partitioning::Forward, _t: PhantomData }
    }

    pub fn env(&self) -> &StreamEnv {
        &self.env
    }

    /// The parallelism of the vertex producing this stream.
    pub fn parallelism(&self) -> usize {
        self.env.graph_mut(|g| g.parallelism(self.nodes[0]))
    }

    /// Sets the parallelism of the vertex that produces this stream.
    pub fn set_parallelism(self, parallelism: usize) -> Self {
        for &n in &self.nodes {
            self.env.set_vertex_parallelism(n, parallelism);
        }
        self
    }

    /// Adds a vertex consuming this stream with this stream's pending partitioning.
    fn add_vertex<Out: Data>(
        &self,
        name: &str,
        parallelism: usize,
        partitioning: Partitioning<T>,
        factory: impl Fn(&SubtaskInfo, Box<dyn Output<Out>>) -> TaskResult<Box<dyn Output<T>>> + Send + Sync + 'static,
    ) -> DataStream<Out> {
        let node = self.env.graph_mut(|g| {
            let node = g.add_operator(name, parallelism, factory);
            for &from in &self.nodes {
                g.connect(from, node, partitioning.clone()).expect("stream types match by construction");
            }
            node
        });
        DataStream::new(self.env.clone(), vec![node])
    }

    /// Adds a one-input [`Operator`] built per subtask by `make`.
    pub fn transform<O: Operator<In = T>>(
        self,
        name: &str,
        make: impl Fn(&SubtaskInfo) -> O + Send + Sync + 'static,
    ) -> DataStream<O::Out> {
        let p = self.env.parallelism();
        self.add_vertex(name, p, self.partitioning.clone(), move |info, out| {
            Ok(Box::new(OperatorNode::new(make(info), out, info)?))
        })
    }

    /// The records the functions of this stream's vertex emitted to `tag`
    /// (Flink's `getSideOutput`): a stream like any other, with the vertex's
    /// watermarks and exactly-once under checkpoints. Asking costs the main
    /// stream one more task (it no longer chains into its consumer); a tag
    /// nobody asks for is dropped where it is emitted.
    pub fn side_output<X: Data>(&self, tag: &OutputTag<X>) -> DataStream<X> {
        let nodes = self.env.graph_mut(|g| {
            self.nodes
                .iter()
                .map(|&n| {
                    g.add_side_output::<T, X>(n, tag.clone())
                        .unwrap_or_else(|e| panic!("side output `{}`: {e}", tag.name()))
                })
                .collect()
        });
        DataStream::new(self.env.clone(), nodes)
    }

    pub fn map<U: Data>(self, f: impl FnMut(T) -> U + Clone + Send + Sync + 'static) -> DataStream<U> {
        self.transform("map", move |_| Map::new(f.clone()))
    }

    pub fn filter(self, f: impl FnMut(&T) -> bool + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.transform("filter", move |_| Filter::new(f.clone()))
    }

    pub fn flat_map<U: Data, I: IntoIterator<Item = U> + 'static>(
        self,
        f: impl FnMut(T) -> I + Clone + Send + Sync + 'static,
    ) -> DataStream<U> {
        self.transform("flat_map", move |_| FlatMap::new(f.clone()))
    }

    /// Asynchronous I/O (Flink's `AsyncDataStream.orderedWait`/`unorderedWait`):
    /// `function` starts a request per record and completes its
    /// [`ResultFuture`](weir_core::operator::async_io::ResultFuture) from any
    /// thread; up to `options.capacity` requests are in flight per subtask,
    /// each with a timeout and retries, and the requests in flight are part of
    /// checkpoints (see [`weir_core::operator::async_io`]).
    pub fn async_wait<U: Data, F: AsyncFunction<T, U> + Clone + Sync>(
        self,
        options: AsyncOptions,
        function: F,
    ) -> DataStream<U> {
        self.transform("async", move |_| AsyncWait::new(function.clone(), options.clone()))
    }

    /// [`DataStream::async_wait`], but an input whose request still fails
    /// after its retries goes to the side output `failed` (read it with
    /// [`DataStream::side_output`]) instead of failing the job.
    pub fn async_wait_or_side_output<U: Data, F: AsyncFunction<T, U> + Clone + Sync>(
        self,
        options: AsyncOptions,
        function: F,
        failed: &OutputTag<T>,
    ) -> DataStream<U> {
        let failed = failed.clone();
        self.transform("async", move |info| {
            AsyncWait::new(function.clone(), options.clone()).failing_to(failed.clone(), info.side_outputs.clone())
        })
    }

    /// Stamps records with their event time and emits watermarks by `strategy`.
    /// Chained to the producer (same parallelism), as Flink does.
    pub fn assign_timestamps(
        self,
        strategy: WatermarkStrategy,
        extract: impl Fn(&T) -> Timestamp + Clone + Send + Sync + 'static,
    ) -> DataStream<T> {
        let p = self.parallelism();
        self.add_vertex("timestamps", p, Partitioning::Forward, move |info, out| {
            Ok(Box::new(WatermarkAssigner::new(&strategy, extract.clone(), out, info.metrics.clone(), &info.alignment)))
        })
    }

    /// Ingestion time (Flink's `TimeCharacteristic.IngestionTime`): stamps
    /// each record with the wall clock as it passes here (chained to the
    /// source) and emits watermarks behind those stamps, so event-time windows
    /// and timers downstream run on when records entered the job. A subtask
    /// that receives nothing for `idle_timeout` is marked idle, so it does not
    /// hold the others' watermarks back.
    pub fn assign_ingestion_time(self, idle_timeout: Duration) -> DataStream<T> {
        let strategy = WatermarkStrategy::monotonic().with_idle_timeout(idle_timeout);
        self.assign_timestamps(strategy, |_| weir_core::time::now_ms())
    }

    /// Partitions by key: records with equal keys go to the same subtask.
    pub fn key_by<K: Key>(self, key: impl Fn(&T) -> K + Send + Sync + 'static) -> KeyedStream<K, T> {
        KeyedStream { stream: self, key: Arc::new(key) }
    }

    /// Wraps every record by `tag` for a two-input vertex: one map per
    /// producer vertex, at its parallelism, so that it chains to it. Returns
    /// the maps, for the caller to connect.
    pub(crate) fn tag<U: Data>(&self, name: &str, tag: fn(T) -> U) -> Vec<NodeId> {
        self.env.graph_mut(|g| {
            let tag_vertex = |g: &mut weir_core::graph::JobGraph, from: NodeId| {
                let node = g.add_operator(name, g.parallelism(from), move |info, out| {
                    Ok(Box::new(OperatorNode::new(Map::new(tag), out, info)?))
                });
                g.connect(from, node, Partitioning::<T>::Forward).expect("stream types match by construction");
                node
            };
            self.nodes.iter().map(|&from| tag_vertex(g, from)).collect()
        })
    }

    /// Both streams as one.
    pub fn union(mut self, other: DataStream<T>) -> DataStream<T> {
        self.nodes.extend(other.nodes);
        self
    }

    /// The next vertex receives whole batches round-robin.
    pub fn rebalance(mut self) -> Self {
        self.partitioning = Partitioning::Rebalance;
        self
    }

    /// Every subtask of the next vertex receives every record.
    pub fn broadcast(mut self) -> Self {
        self.partitioning = Partitioning::Broadcast;
        self
    }

    /// Windows over the whole stream (one subtask, as Flink's `windowAll`).
    pub fn window_all(self, assigner: WindowAssigner) -> WindowedStream<(), T> {
        self.key_by(|_| ()).window(assigner).set_parallelism(1)
    }

    /// Ends the stream in a sink built per subtask.
    pub fn sink<S: Sink<T> + 'static>(self, name: &str, make: impl Fn(&SubtaskInfo) -> S + Send + Sync + 'static) {
        self.try_sink(name, move |info| Ok(make(info)));
    }

    /// A sink whose creation can fail (a connection, a table): the job fails with its error.
    pub fn try_sink<S: Sink<T> + 'static>(
        self,
        name: &str,
        make: impl Fn(&SubtaskInfo) -> weir_core::TaskResult<S> + Send + Sync + 'static,
    ) {
        let p = self.env.parallelism();
        self.add_vertex::<()>(name, p, self.partitioning.clone(), move |info, _out| {
            Ok(Box::new(SinkNode::new(make(info)?, info)?))
        });
    }

    /// Collects every record (with its timestamp); read the result after the job ran.
    pub fn collect(self) -> Collected<T> {
        let target = Arc::new(Mutex::new(Vec::new()));
        let t = target.clone();
        self.sink("collect", move |_| CollectSink { target: t.clone() });
        Collected { target }
    }

    /// Prints each record to standard output with `format`.
    pub fn print_with(self, format: impl Fn(&T) -> String + Clone + Send + Sync + 'static) {
        self.sink("print", move |info| PrintSink {
            format: format.clone(),
            prefix: if info.parallelism > 1 { format!("{}> ", info.index + 1) } else { String::new() },
        });
    }

    /// Prints each record as JSON to standard output.
    pub fn print(self) {
        self.print_with(|v| serde_json::to_string(v).unwrap_or_else(|e| format!("<unprintable: {e}>")));
    }

    /// Writes JSON lines into part files under `dir`.
    pub fn write_json(self, dir: impl AsRef<Path>) {
        let dir = dir.as_ref().to_path_buf();
        self.sink("file", move |info| LineFileSink::new(&dir, info, json_line::<T>));
    }

    /// Writes one line per record, encoded by `encode`, into part files under `dir`.
    pub fn write_lines(
        self,
        dir: impl AsRef<Path>,
        encode: impl FnMut(&T, &mut Vec<u8>) -> weir_core::TaskResult + Clone + Send + Sync + 'static,
    ) {
        let dir = dir.as_ref().to_path_buf();
        self.sink("file", move |info| LineFileSink::new(&dir, info, encode.clone()));
    }

    /// Discards the stream (a sink for benchmarks).
    pub fn discard(self) {
        self.sink("discard", |_| DiscardSink);
    }
}

/// What [`DataStream::collect`] gathered.
#[derive(Clone)]
pub struct Collected<T> {
    target: Arc<Mutex<Vec<Record<T>>>>,
}

impl<T: Clone> Collected<T> {
    pub fn records(&self) -> Vec<Record<T>> {
        self.target.lock().expect("collect sink poisoned").clone()
    }

    pub fn values(&self) -> Vec<T> {
        self.records().into_iter().map(|r| r.value).collect()
    }
}

/// A stream partitioned by key.
pub struct KeyedStream<K, T> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key: Arc<dyn Fn(&T) -> K + Send + Sync>,
}

impl<K: Key, T: Data> KeyedStream<K, T> {
    fn hash_partitioning(&self) -> Partitioning<T> {
        let key = self.key.clone();
        let max_parallelism = self.stream.env.graph_mut(|g| g.max_parallelism);
        Partitioning::Hash { key_hash: Arc::new(move |v| hash_key(&key(v))), max_parallelism }
    }

    pub(crate) fn add_keyed<Out: Data>(
        &self,
        name: &str,
        parallelism: usize,
        factory: impl Fn(&SubtaskInfo, Box<dyn Output<Out>>) -> TaskResult<Box<dyn Output<T>>> + Send + Sync + 'static,
    ) -> DataStream<Out> {
        self.stream.add_vertex(name, parallelism, self.hash_partitioning(), factory)
    }

    /// Runs a keyed process function: per-key state and timers.
    pub fn process<Out: Data, F: KeyedProcessFunction<K, T, Out> + Clone + Sync>(self, function: F) -> DataStream<Out> {
        let key = self.key.clone();
        let p = self.stream.env.parallelism();
        self.add_keyed("process", p, move |info, out| {
            let key = key.clone();
            let op = KeyedProcessOperator::new(function.clone(), move |v: &T| key(v), info);
            Ok(Box::new(OperatorNode::new(op, out, info)?))
        })
    }

    /// Groups the keyed stream into event-time windows.
    pub fn window(self, assigner: WindowAssigner) -> WindowedStream<K, T> {
        WindowedStream { keyed: self, assigner, allowed_lateness: 0, parallelism: None, processing_time: false }
    }
}

/// A keyed stream grouped into windows; finish it with a window function.
pub struct WindowedStream<K, T> {
    keyed: KeyedStream<K, T>,
    assigner: WindowAssigner,
    allowed_lateness: i64,
    parallelism: Option<usize>,
    processing_time: bool,
}

/// Internal: a window operator's output when late data goes to a side output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WindowOrLate<O, T> {
    Result(O),
    Late(T),
}

impl<K: Key, T: Data> WindowedStream<K, T> {
    /// The parallelism of the window vertex (the environment's by default).
    pub fn set_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = Some(parallelism.max(1));
        self
    }

    /// Keeps window state this long past the window's end; records arriving
    /// in that time fire the window again with the updated result.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = lateness.as_millis() as i64;
        self
    }

    /// Windows on the wall clock instead of event time (Flink's
    /// `TumblingProcessingTimeWindows` and the like): a record counts in the
    /// windows of the moment it reaches the window operator, and a window
    /// fires as the clock passes its end, whatever the watermark (see
    /// [`ProcessingTime`]). The lowest latency, at the price of results that
    /// depend on when records arrive.
    pub fn processing_time(mut self) -> Self {
        self.processing_time = true;
        self
    }

    pub(crate) fn build<F, Out>(self, name: &str, function: F, late: fn() -> LateData<T, Out>) -> DataStream<Out>
    where
        F: WindowFunction<K, T, Out = Out> + Clone + Sync,
        Out: Data,
    {
        if let Err(e) = self.assigner.validate() {
            panic!("invalid window: {e}");
        }
        let key = self.keyed.key.clone();
        let (assigner, lateness, processing_time) = (self.assigner, self.allowed_lateness, self.processing_time);
        let p = self.parallelism.unwrap_or_else(|| self.keyed.stream.env.parallelism());
        self.keyed.add_keyed(name, p, move |info, out| {
            let key = key.clone();
            let op = WindowOperator::new(assigner, lateness, move |v: &T| key(v), function.clone(), late(), info);
            Ok(match processing_time {
                true => Box::new(OperatorNode::new(ProcessingTime::new(op), out, info)?),
                false => Box::new(OperatorNode::new(op, out, info)?),
            })
        })
    }

    /// Applies a window function; late records are counted and dropped.
    pub fn apply<F: WindowFunction<K, T> + Clone + Sync>(self, function: F) -> DataStream<F::Out> {
        self.build("window", function, || LateData::Drop)
    }

    /// Applies a window function and returns the late records as a second stream.
    pub fn apply_with_late_data<F: WindowFunction<K, T> + Clone + Sync>(
        self,
        function: F,
    ) -> (DataStream<F::Out>, DataStream<T>) {
        let both = self.build("window", WithLate(function), || LateData::Emit(Box::new(WindowOrLate::Late)));
        let p = both.parallelism();
        let results = both.add_vertex("window-results", p, Partitioning::Forward, |info, out| {
            Ok(Box::new(OperatorNode::new(
                FlatMap::new(|e: WindowOrLate<F::Out, T>| match e {
                    WindowOrLate::Result(o) => Some(o),
                    WindowOrLate::Late(_) => None,
                }),
                out,
                info,
            )?))
        });
        let late = both.add_vertex("late-data", p, Partitioning::Forward, |info, out| {
            Ok(Box::new(OperatorNode::new(
                FlatMap::new(|e: WindowOrLate<F::Out, T>| match e {
                    WindowOrLate::Late(v) => Some(v),
                    WindowOrLate::Result(_) => None,
                }),
                out,
                info,
            )?))
        });
        (results, late)
    }

    /// Incremental aggregation; `finish` builds the output from key, window and result.
    /// Combined per key before the key exchange where it can be (see
    /// [`StreamEnv::set_local_aggregation`]).
    pub fn aggregate<A, Out>(
        self,
        aggregate: A,
        finish: impl FnMut(&K, &Window, A::Result) -> Out + Clone + Send + Sync + 'static,
    ) -> DataStream<Out>
    where
        A: AggregateFunction<T> + Clone + Sync,
        Out: Data,
    {
        self.apply_combinable(AggregateWindow::new(aggregate, finish))
    }

    /// Keeps one value per window by `reduce`; `finish` builds the output.
    /// Combined per key before the key exchange where it can be.
    pub fn reduce<Out: Data>(
        self,
        reduce: impl Fn(T, &T) -> T + Clone + Send + Sync + 'static,
        finish: impl FnMut(&K, &Window, &T) -> Out + Clone + Send + Sync + 'static,
    ) -> DataStream<Out> {
        self.apply_combinable(ReduceWindow::new(reduce, finish))
    }

    /// Applies a window function whose `merge` combines accumulators exactly
    /// (an aggregate, a reduce, a top-N), in two phases when the job allows
    /// it: a local aggregate chained before the key exchange, and the window
    /// operator merging its partials (see [`StreamEnv::set_local_aggregation`]).
    pub fn apply_combinable<F: WindowFunction<K, T> + Clone + Sync>(self, function: F) -> DataStream<F::Out> {
        let eligible = self.keyed.stream.env.local_aggregation()
            && local::combinable(self.assigner)
            && self.allowed_lateness == 0
            && !self.processing_time;
        if !eligible {
            return self.apply(function);
        }
        let (assigner, upstream) = (self.assigner, self.keyed.stream.clone());
        let (key, local_function) = (self.keyed.key.clone(), function.clone());
        // Chained to its input, one subtask per upstream subtask, whatever
        // partitioning was pending (the key exchange comes after it).
        let p = upstream.parallelism();
        let partials = upstream.add_vertex("local-aggregate", p, Partitioning::Forward, move |info, out| {
            let key = key.clone();
            let local =
                LocalAggregate::new(assigner, move |v: &T| key(v), local_function.clone(), info.metrics.clone());
            Ok(Box::new(OperatorNode::new(local, out, info)?))
        });
        let follows = upstream.nodes[0];
        partials.env.graph_mut(|g| partials.nodes.iter().for_each(|&n| g.set_auxiliary_of(n, follows)));
        let keyed = partials.key_by(|p: &Partial<K, F::Acc>| p.key.clone());
        let global = WindowedStream {
            keyed,
            assigner,
            allowed_lateness: 0,
            parallelism: self.parallelism,
            processing_time: false,
        };
        global.build("window", MergePartials::new(function), || LateData::Drop)
    }

    /// Buffers the window's elements and calls `process` over all of them when it fires.
    pub fn process<Out: Data>(
        self,
        process: impl FnMut(&K, &Window, &[T], &mut dyn FnMut(Out)) + Clone + Send + Sync + 'static,
    ) -> DataStream<Out> {
        self.apply(ProcessWindow::new(process))
    }
}

/// Wraps a window function's results for [`WindowedStream::apply_with_late_data`].
#[derive(Clone)]
struct WithLate<F>(F);

impl<K, T: Data, F: WindowFunction<K, T>> WindowFunction<K, T> for WithLate<F> {
    type Acc = F::Acc;
    type Out = WindowOrLate<F::Out, T>;
    fn create(&self) -> F::Acc {
        self.0.create()
    }
    fn add(&self, acc: &mut F::Acc, value: &T) {
        self.0.add(acc, value)
    }
    fn merge(&self, acc: &mut F::Acc, other: F::Acc) {
        self.0.merge(acc, other)
    }
    fn emit(&mut self, key: &K, window: &Window, acc: &F::Acc, out: &mut dyn FnMut(Self::Out)) {
        self.0.emit(key, window, acc, &mut |o| out(WindowOrLate::Result(o)))
    }
}
