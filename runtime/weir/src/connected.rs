//! Two keyed streams into one operator: [`KeyedStream::connect`] with a
//! [`KeyedCoProcessFunction`], [`KeyedStream::interval_join`], and window
//! joins and co-groups ([`ConnectedKeyedStreams::window`]).
//!
//! Both streams must be keyed by the same key type; records with equal keys
//! from either side meet in the same subtask, with one keyed state and one
//! timer service per key. The operator's watermark is the minimum of both
//! inputs', and checkpoints align across both (see
//! [`weir_core::operator::co_process`]).
//!
//! ```
//! use std::time::Duration;
//! use weir::prelude::*;
//! use weir::testing::run_sorted;
//!
//! // Orders (id, time) joined with the payments (id, time) that came at most 10 ms later.
//! let rows = run_sorted(2, |env| {
//!     let orders = env
//!         .from_collection(vec![(1u32, 100i64), (2, 200)])
//!         .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO), |o| o.1)
//!         .key_by(|o| o.0);
//!     let payments = env
//!         .from_collection(vec![(1u32, 105i64), (2, 260)])
//!         .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO), |p| p.1)
//!         .key_by(|p| p.0);
//!     orders
//!         .interval_join(payments)
//!         .between(0, 10)
//!         .process(|o: &(u32, i64), p: &(u32, i64)| (o.0, p.1 - o.1))
//!         .unwrap()
//! });
//! assert_eq!(rows, vec![(1, 5)]);
//! ```

use std::time::Duration;

use weir_core::operator::OperatorNode;
use weir_core::operator::co_process::{CoInput, CoProcess, KeyedCoProcessFunction};
use weir_core::operator::interval_join::{IntervalJoin, JoinBounds, LateSides, Outer, ProcessJoinFunction, Tracked};
use weir_core::operator::process::{KeyedProcessFunction, KeyedProcessOperator};
use weir_core::operator::side::OutputTag;
use weir_core::state::Key;
use weir_core::window::{CoGroupWindow, LateData, Window, WindowAssigner};
use weir_core::{Data, JobError, Timestamp};

use crate::stream::{DataStream, KeyedStream, WindowedStream};

impl<K: Key, A: Data> KeyedStream<K, A> {
    /// This stream and `other` into one keyed two-input operator.
    pub fn connect<B: Data>(self, other: KeyedStream<K, B>) -> ConnectedKeyedStreams<K, A, B> {
        ConnectedKeyedStreams { first: self, second: other }
    }

    /// Joins each record of this stream with the records of `other` (same key)
    /// whose time lies within bounds relative to its own; set them with
    /// [`IntervalJoinBuilder::between`].
    pub fn interval_join<B: Data>(self, other: KeyedStream<K, B>) -> IntervalJoinBuilder<K, A, B> {
        IntervalJoinBuilder { streams: self.connect(other) }
    }
}

/// Two keyed streams with the same key type, connected.
pub struct ConnectedKeyedStreams<K, A, B> {
    first: KeyedStream<K, A>,
    second: KeyedStream<K, B>,
}

impl<K: Key, A: Data, B: Data> ConnectedKeyedStreams<K, A, B> {
    /// Runs `function` over both streams: `process_element1` for this stream's
    /// records, `process_element2` for the other's.
    pub fn process<Out: Data, F: KeyedCoProcessFunction<K, A, B, Out> + Clone + Sync>(
        self,
        function: F,
    ) -> DataStream<Out> {
        self.add_vertex("co-process", CoProcess(function))
    }

    /// Adds the two-input vertex running `function` over the tagged records of both streams.
    fn add_vertex<Out: Data, F: KeyedProcessFunction<K, CoInput<A, B>, Out> + Clone + Sync>(
        self,
        name: &str,
        function: F,
    ) -> DataStream<Out> {
        let tagged = self.tagged(name);
        let (key, parallelism) = (tagged.key.clone(), tagged.stream.env.parallelism());
        tagged.add_keyed(name, parallelism, move |info, out| {
            let key = key.clone();
            let op = KeyedProcessOperator::new(function.clone(), move |v: &CoInput<A, B>| key(v), info);
            Ok(Box::new(OperatorNode::new(op, out, info)?))
        })
    }

    /// Both streams as one keyed stream of tagged records: a map chained to
    /// each producer wraps its records as [`CoInput::First`] or [`CoInput::Second`].
    fn tagged(self, name: &str) -> KeyedStream<K, CoInput<A, B>> {
        let env = self.first.stream.env.clone();
        let inputs: Vec<_> = self
            .first
            .stream
            .tag(&format!("{name}-first"), CoInput::<A, B>::First)
            .into_iter()
            .chain(self.second.stream.tag(&format!("{name}-second"), CoInput::<A, B>::Second))
            .collect();
        let (first_key, second_key) = (self.first.key.clone(), self.second.key.clone());
        DataStream::new(env, inputs).key_by(move |v: &CoInput<A, B>| v.key(|a| first_key(a), |b| second_key(b)))
    }

    /// Groups both streams into the same event-time windows per key, for a
    /// window join or a co-group (Flink's `join(...).window(...)` and
    /// `coGroup(...).window(...)`).
    pub fn window(self, assigner: WindowAssigner) -> CoWindowedStreams<K, A, B> {
        CoWindowedStreams { windowed: self.tagged("window-join").window(assigner) }
    }
}

/// Two keyed streams in the same windows; finish with [`CoWindowedStreams::join`]
/// (inner) or [`CoWindowedStreams::co_group`] (anything, outer joins included).
///
/// Both sides' records are kept in the window until it fires, as in Flink; a
/// record late for every window it belongs to is counted and dropped.
pub struct CoWindowedStreams<K, A, B> {
    windowed: WindowedStream<K, CoInput<A, B>>,
}

impl<K: Key, A: Data, B: Data> CoWindowedStreams<K, A, B> {
    /// The parallelism of the window vertex (the environment's by default).
    pub fn set_parallelism(mut self, parallelism: usize) -> Self {
        self.windowed = self.windowed.set_parallelism(parallelism);
        self
    }

    /// Keeps both sides' records this long past the window's end; a record in
    /// that time fires the window again over everything it holds.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.windowed = self.windowed.allowed_lateness(lateness);
        self
    }

    /// Windows on the wall clock instead of event time (see
    /// [`WindowedStream::processing_time`]).
    pub fn processing_time(mut self) -> Self {
        self.windowed = self.windowed.processing_time();
        self
    }

    /// Per key and window, `process` gets the records of both sides (either
    /// may be empty) and emits; rows carry the window's last millisecond as
    /// their time.
    pub fn co_group<Out: Data>(
        self,
        process: impl FnMut(&K, &Window, &[A], &[B], &mut dyn FnMut(Out)) + Clone + Send + Sync + 'static,
    ) -> DataStream<Out> {
        self.windowed.build("co-group", CoGroupWindow::new(process), || LateData::Drop)
    }

    /// The inner window join: `join(a, b)` for every pair of records with the
    /// same key in the same window.
    pub fn join<Out: Data>(
        self,
        mut join: impl FnMut(&A, &B) -> Out + Clone + Send + Sync + 'static,
    ) -> DataStream<Out> {
        let pairs = move |_: &K, _: &Window, first: &[A], second: &[B], out: &mut dyn FnMut(Out)| {
            for a in first {
                for b in second {
                    out(join(a, b));
                }
            }
        };
        self.windowed.build("window-join", CoGroupWindow::new(pairs), || LateData::Drop)
    }
}

/// An interval join waiting for its bounds.
pub struct IntervalJoinBuilder<K, A, B> {
    streams: ConnectedKeyedStreams<K, A, B>,
}

impl<K: Key, A: Data, B: Data> IntervalJoinBuilder<K, A, B> {
    /// A record `a` of the first stream meets the records `b` of the second
    /// with `a.time + lower <= b.time <= a.time + upper` (milliseconds; either
    /// may be negative). Both ends are inclusive unless made exclusive.
    pub fn between(self, lower: i64, upper: i64) -> IntervalJoined<K, A, B> {
        IntervalJoined {
            streams: self.streams,
            lower,
            upper,
            lower_exclusive: false,
            upper_exclusive: false,
            late: LateSides::default(),
            outer: None,
        }
    }
}

/// An interval join with its bounds; finish it with [`IntervalJoined::process`].
pub struct IntervalJoined<K, A, B> {
    streams: ConnectedKeyedStreams<K, A, B>,
    lower: i64,
    upper: i64,
    lower_exclusive: bool,
    upper_exclusive: bool,
    late: LateSides<A, B>,
    outer: Option<Outer>,
}

impl<K: Key, A: Data, B: Data> IntervalJoined<K, A, B> {
    /// Makes the join outer (Flink SQL's time-bounded `LEFT`, `RIGHT` or
    /// `FULL OUTER JOIN`): the function's `process_unmatched_first` (and/or
    /// `_second`) gets each record of the kept sides that met nothing, once the
    /// watermark shows nothing can, at the time of that cleanup (see
    /// [`weir_core::operator::interval_join`]). A closure `|a, b| row`
    /// emits nothing for them: implement [`ProcessJoinFunction`].
    pub fn outer(mut self, outer: Outer) -> Self {
        self.outer = Some(outer);
        self
    }

    /// Records of the first stream that come after the watermark passed them
    /// go to the side output `tag` of the joined stream instead of being
    /// dropped (Flink's `sideOutputLeftLateData`).
    pub fn side_output_left_late_data(mut self, tag: &OutputTag<A>) -> Self {
        self.late.first = Some(tag.clone());
        self
    }

    /// The same for late records of the second stream (`sideOutputRightLateData`).
    pub fn side_output_right_late_data(mut self, tag: &OutputTag<B>) -> Self {
        self.late.second = Some(tag.clone());
        self
    }

    /// `b.time` must be strictly above `a.time + lower`.
    pub fn lower_bound_exclusive(mut self) -> Self {
        self.lower_exclusive = true;
        self
    }

    /// `b.time` must be strictly below `a.time + upper`.
    pub fn upper_bound_exclusive(mut self) -> Self {
        self.upper_exclusive = true;
        self
    }

    /// Makes the rows of every joined pair with `function` (a closure
    /// `|a, b| row` emits one row per pair, at the later of the two times).
    /// Bounds that hold no time (lower above upper) are refused here.
    pub fn process<Out: Data, F: ProcessJoinFunction<A, B, Out> + Clone + Sync>(
        self,
        function: F,
    ) -> Result<DataStream<Out>, JobError> {
        let bounds = JoinBounds::new(self.lower, self.upper, self.lower_exclusive, self.upper_exclusive)?;
        let (streams, late) = (self.streams, self.late);
        Ok(match self.outer {
            None => {
                let join = IntervalJoin::<A, B, F>::new(bounds, function).with_late_sides(late);
                streams.add_vertex("interval-join", CoProcess(join))
            }
            Some(Outer::Left) => {
                let join = IntervalJoin::<A, B, F, Tracked<A>, (Timestamp, B)>::new(bounds, function);
                streams.add_vertex("interval-join", CoProcess(join.with_late_sides(late)))
            }
            Some(Outer::Right) => {
                let join = IntervalJoin::<A, B, F, (Timestamp, A), Tracked<B>>::new(bounds, function);
                streams.add_vertex("interval-join", CoProcess(join.with_late_sides(late)))
            }
            Some(Outer::Full) => {
                let join = IntervalJoin::<A, B, F, Tracked<A>, Tracked<B>>::new(bounds, function);
                streams.add_vertex("interval-join", CoProcess(join.with_late_sides(late)))
            }
        })
    }
}
