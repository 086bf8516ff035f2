//! Builds a checked [`Plan`] onto a [`StreamEnv`]: the streams of rows that
//! implement each step, the source and the sinks.
//!
//! Building is where a pipeline meets the outside world: a `file` source lists
//! its directory here, and connector sources and sinks exist only in builds
//! with their cargo feature (`kafka`, `redis`, `postgres`; all on by default).
//! Everything else was decided by [`check`](crate::check::check).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use smol_str::{SmolStr, SmolStrBuilder};
use weir::datagen::{IntoRateProfile, RateProfile};
use weir::prelude::{DataStream, JoinContext, ProcessJoinFunction, StreamEnv, WindowedStream};
use weir_core::TaskResult;
use weir_core::metrics::GaugeKey;
use weir_core::operator::basic::Map;
use weir_core::window::{Window, WindowAssigner, WindowFunction};
use weir_workloads::{Bid, Order, OrderId, Payment, WorkloadStreams};

use crate::config::{Outer, Rate, Workload};
use crate::connectors;
use crate::error::PipelineError;
use crate::file_source::{FileSource, list_files};
use crate::keys::{KeyType, RowKey, StepKey, with_key_type};
use crate::ops::{AnomalyFlag, CountRows, DedupRows, ExternalCall, RowAggregates, SelectRows, TopRows};
use crate::plan::{
    JoinHow, Plan, Projection, SinkKind, SinkPlan, SourceKind, SourcePlan, StatePlan, StepKind, WindowOutput,
};
use crate::records::DeadLetters;
use crate::value::{Row, Schema, Value};

/// Counters of a built pipeline, readable while and after it runs.
#[derive(Clone, Default)]
pub struct PipelineStats {
    /// Rows that reached the sink.
    pub rows_out: Arc<AtomicU64>,
    /// Malformed input records skipped.
    pub malformed: Arc<AtomicU64>,
}

/// What building produced, besides the job graph in the environment.
pub struct Compiled {
    pub name: String,
    pub parallelism: usize,
    pub output_schema: Schema,
    /// Where the output goes, for people.
    pub sink_description: String,
    pub stats: PipelineStats,
}

/// Builds `plan` (checked from `file`) into `env`; the job counts into
/// `stats` (shared: a job built again, after a restart or a rescale, goes on
/// counting where the last one left off).
pub fn build(file: &Path, plan: &Plan, env: &StreamEnv, stats: &PipelineStats) -> Result<Compiled, PipelineError> {
    build_to(file, plan, env, stats, None)
}

/// Where a built pipeline's rows go instead of its sink (a benchmark's checksum).
pub type SinkOverride = Box<dyn FnOnce(DataStream<Row>)>;

/// As [`build`]; with `sink`, the rows that would reach the plan's sink go
/// to it instead (side sinks, such as a window's `late`, stay as planned).
pub fn build_to(
    file: &Path,
    plan: &Plan,
    env: &StreamEnv,
    stats: &PipelineStats,
    sink: Option<SinkOverride>,
) -> Result<Compiled, PipelineError> {
    env.set_parallelism(plan.parallelism)
        .set_max_parallelism(plan.max_parallelism)
        .set_buffer_timeout(plan.buffer_timeout)
        .set_local_aggregation(plan.local_aggregation);
    if let StatePlan::Disk { dir, memory } = &plan.state {
        let backend = weir_core::state::StateBackend::disk(dir, *memory)
            .map_err(|e| PipelineError::new(file, "state", e.to_string()))?;
        env.set_state_backend(backend);
    }
    if let Some(c) = plan.compression {
        env.set_snapshot_compression(c);
    }
    if let Some(on) = plan.incremental {
        env.set_incremental_checkpoints(on);
    }
    let stats = stats.clone();
    let mut stream = source(file, "source", &plan.source, &plan.source_projection(), env, &stats)?;
    let mut input = &plan.source.schema;
    for step in &plan.steps {
        stream = self::step(file, step, input, stream, &stats)?;
        input = &step.schema;
        if let Some(p) = step.parallelism {
            stream = stream.set_parallelism(p);
        }
    }
    // Named `map`, as the map it replaced: vertex uids are positions and
    // names, and the sink's state in checkpoints is found by its uid.
    let rows_out = stats.rows_out.clone();
    let counted = stream.transform("map", move |_| CountRows { count: rows_out.clone() });
    match sink {
        Some(sink) => sink(counted),
        None => attach_sink(file, "sink", &plan.sink, counted)?,
    }
    Ok(Compiled {
        name: plan.name.clone(),
        parallelism: plan.parallelism,
        output_schema: plan.output_schema().clone(),
        sink_description: plan.sink.describe(),
        stats,
    })
}

fn key_of<K: StepKey>(fields: &[usize]) -> impl Fn(&Row) -> K + Clone + Send + Sync + 'static {
    let fields: Arc<[usize]> = fields.into();
    move |row: &Row| K::of(row, &fields)
}

/// An order id as its text, `ORD-<n>` (as `OrderId`'s `Display`), made inline.
fn order_id_text(id: OrderId) -> SmolStr {
    let mut text = SmolStrBuilder::new();
    text.push_str("ORD-");
    text.push_str(itoa::Buffer::new().format(id.0));
    text.finish()
}

/// A text field's value when something reads it, null when nothing does
/// (see [`Plan::source_fields_read`]): the text is not made at all.
fn text_if(read: bool, make: impl FnOnce() -> SmolStr) -> Value {
    if read { Value::Str(make()) } else { Value::Null }
}

/// A row of the first `width` of the given values (at most all of them),
/// each written straight into the row's allocation, and the row's pointer,
/// length and capacity kept in registers until it is returned; the values
/// after them are not made at all. `vec![...]` makes the values on the stack
/// first (a byte of tag and a word of payload each), and a `Vec` pushed to
/// lives in memory; either is then copied with wider loads than the narrow
/// stores that wrote it, which stall: 20 % of the CPU of q0 and q1 through
/// their pipeline files was that copy.
macro_rules! row {
    ($width:expr; $($value:expr),+ $(,)?) => {{
        const N: usize = [$(stringify!($value)),+].len();
        let width = N.min($width);
        let mut row = std::mem::ManuallyDrop::new(Row::with_capacity(width));
        let (ptr, capacity) = (row.as_mut_ptr(), row.capacity());
        let mut written = 0;
        $(
            if written < width {
                // SAFETY: `written < width <= capacity`: each value goes to
                // its own slot of the allocation, none written before.
                // (Should a value's expression panic, the allocation leaks;
                // nothing is dropped twice.)
                unsafe { ptr.add(written).write($value) };
                written += 1;
            }
        )+
        debug_assert_eq!(written, width);
        // SAFETY: the allocation is the row's own, of `capacity`, and its
        // first `width` slots were written above.
        unsafe { Row::from_raw_parts(ptr, width, capacity) }
    }};
}

/// The rows of a datagen workload, as `projection` says: numbers cost
/// nothing to fill in, texts are made only when read, and the fields after
/// the projection's width are left out.
fn workload_rows(
    env: &StreamEnv,
    workload: Workload,
    count: Option<u64>,
    rate: impl IntoRateProfile,
    projection: &Projection,
) -> DataStream<Row> {
    let width = projection.width;
    match workload {
        Workload::Orders => {
            let id = projection.reads(0);
            env.orders(count, rate).map(move |o: Order| {
                row![width;
                    text_if(id, || order_id_text(o.order_id)),
                    Value::Str(SmolStr::new_static(o.region.as_str())),
                    Value::Int(o.amount),
                    Value::Int(o.time),
                ]
            })
        }
        Workload::Payments => {
            let id = projection.reads(0);
            env.payments(count, rate).map(move |p: Payment| {
                row![width; text_if(id, || order_id_text(p.order_id)), Value::Int(p.amount), Value::Int(p.time)]
            })
        }
        Workload::Bids => {
            let extra = projection.reads(5);
            env.bids(count, rate).map(move |b: Bid| {
                row![width;
                    Value::Int(b.auction),
                    Value::Int(b.bidder),
                    Value::Int(b.price),
                    Value::Str(SmolStr::new_static(b.channel.as_str())),
                    Value::Int(b.time),
                    text_if(extra, || match b.extra {
                        // The generator's padding is static: shared, not copied.
                        std::borrow::Cow::Borrowed(s) => SmolStr::new_static(s),
                        std::borrow::Cow::Owned(s) => SmolStr::new(s),
                    }),
                ]
            })
        }
    }
}

/// The checked `source.rate` as the engine's profile.
pub fn rate_profile(rate: &Rate) -> RateProfile {
    match rate {
        Rate::Constant(r) => RateProfile::Constant(*r),
        Rate::Steps(steps) => RateProfile::Steps(steps.iter().map(|s| (s.at.0, s.rate)).collect()),
        Rate::Sine(s) => RateProfile::Sine { mean: s.mean, amplitude: s.amplitude, period: s.period.0 },
    }
}

/// Builds the source at `key` (`source`, or `sources.<name>` of a join).
fn source(
    file: &Path,
    key: &str,
    src: &SourcePlan,
    projection: &Projection,
    env: &StreamEnv,
    stats: &PipelineStats,
) -> Result<DataStream<Row>, PipelineError> {
    let dead_letters = {
        let (on_error, dir, count) = (src.on_error, src.dead_letter.clone(), stats.malformed.clone());
        move |subtask: usize| DeadLetters::new(on_error, dir.clone(), count.clone(), subtask)
    };
    let format = src.format;
    let stream = match &src.kind {
        SourceKind::Datagen { workload, count, rate } => match rate.as_ref().map(rate_profile) {
            Some(profile) => workload_rows(env, *workload, *count, profile, projection),
            None => workload_rows(env, *workload, *count, None, projection),
        },
        SourceKind::File { path, max_line_bytes } => {
            let files = list_files(Path::new(path))
                .map_err(|e| PipelineError::new(file, format!("{key}.path"), format!("cannot read `{path}`: {e}")))?;
            let (schema, max_line_bytes) = (Arc::new(src.decoded_schema()), *max_line_bytes);
            env.add_source("file", move |info| {
                let mine = files.iter().enumerate().rev().filter(|(k, _)| k % info.parallelism == info.index);
                let mine = mine.map(|(_, f)| f.clone()).collect();
                let source = FileSource::new(mine, schema.clone(), format, dead_letters(info.index));
                Box::new(source.with_max_line_bytes(max_line_bytes))
            })
        }
        // Kafka partitions interleave unpredictably: the source keeps a watermark
        // per partition, so it assigns event time itself.
        SourceKind::Kafka(spec) => {
            return connectors::kafka_source(file, key, env, spec, src, dead_letters);
        }
    };
    let stream = match src.ingestion_time {
        true => stream.map(|mut row: Row| {
            row.push(Value::Int(weir_core::time::now_ms()));
            row
        }),
        false => stream,
    };
    Ok(match &src.event_time {
        Some((idx, strategy)) => {
            let idx = *idx;
            stream.assign_timestamps(strategy.clone(), move |row: &Row| row[idx].as_int().unwrap_or(i64::MIN))
        }
        None => stream,
    })
}

fn step(
    file: &Path,
    step: &crate::plan::StepPlan,
    input: &Schema,
    stream: DataStream<Row>,
    stats: &PipelineStats,
) -> Result<DataStream<Row>, PipelineError> {
    Ok(match &step.kind {
        StepKind::Dedup { key, ttl_ms } => {
            let dedup = DedupRows { ttl_ms: *ttl_ms, seen: None };
            with_key_type!(input, key, K => stream.key_by(key_of::<K>(key)).process(dedup))
        }
        StepKind::Filter(e) => {
            let e = e.clone();
            stream.filter(move |row| e.matches(row))
        }
        StepKind::Select(exprs) => {
            // Named `map` (its name before it worked in place), for the uids after it.
            let exprs = Arc::new(exprs.clone());
            stream.transform("map", move |_| SelectRows::new(exprs.clone()))
        }
        StepKind::Window { key, assigner, lateness, processing_time, output, late } => {
            let window = WindowStep { assigner: *assigner, lateness: *lateness, processing_time: *processing_time };
            match key {
                Some(key) => with_key_type!(input, key, K => window.build::<K>(file, stream, Some(key), output, late)?),
                None => window.build::<RowKey>(file, stream, None, output, late)?,
            }
        }
        StepKind::Anomaly { field, key, history, sigma, only_anomalies, alerts } => {
            let flag = AnomalyFlag {
                field: *field,
                history: *history,
                sigma: *sigma,
                only_anomalies: *only_anomalies,
                values: None,
            };
            let stream = with_key_type!(input, key, K => stream.key_by(key_of::<K>(key)).process(flag));
            if let Some(alerts) = alerts {
                // The flagged rows also go to the alerts sink; every row goes on.
                let anomaly = step.schema.index("anomaly").expect("anomaly adds the field");
                let flagged = stream.clone().filter(move |row: &Row| matches!(row[anomaly], Value::Bool(true)));
                attach_sink(file, "alerts", alerts, flagged)?;
                tracing::info!("anomaly alerts go to {}", alerts.describe());
            }
            stream
        }
        StepKind::Lookup(spec) => {
            let (rows, failed) = crate::lookup::lookup(file, "steps (lookup)", spec, stream)?;
            if let (Some(failed), Some(sink)) = (failed, &spec.failed) {
                attach_sink(file, "steps (lookup).failed", sink, failed)?;
            }
            rows
        }
        StepKind::ExternalCall { per_record } => {
            let per_record = *per_record;
            stream.transform("external_call", move |_| ExternalCall::new(per_record))
        }
        StepKind::Metric { name, value, labels } => {
            let (name, value, labels) = (name.clone(), *value, Arc::new(labels.clone()));
            stream.transform("metric", move |info| {
                let (metrics, name, labels) = (info.metrics.clone(), name.clone(), labels.clone());
                Map::new(move |row: Row| {
                    if let Some(v) = row[value].as_f64() {
                        let labels = labels.iter().map(|(l, i)| (l.clone(), row[*i].to_string())).collect();
                        metrics.set_gauge(GaugeKey { name: name.clone(), labels }, v);
                    }
                    row
                })
            })
        }
        StepKind::Join { with, other, key, other_key, how, fields } => {
            let env = stream.env().clone();
            // The other side's rows are read whole (no projection is worked out for them).
            let whole = Projection::whole(other.schema.fields.len());
            let other_schema = &other.schema;
            let other = source(file, &format!("sources.{with}"), other, &whole, &env, stats)?;
            let joined = Joined {
                fields: fields.as_slice().into(),
                key: key.as_slice().into(),
                other_key: other_key.as_slice().into(),
            };
            // Both sides keyed by one type: their own when their key fields' types agree.
            let join = Join { file, with, key, other_key, how: how.clone(), joined };
            match KeyType::of(input, key) == KeyType::of(other_schema, other_key) {
                true => with_key_type!(input, key, K => join.build::<K>(stream, other)?),
                false => join.build::<RowKey>(stream, other)?,
            }
        }
    })
}

/// A join step, built with its key type.
struct Join<'a> {
    file: &'a Path,
    with: &'a str,
    key: &'a [usize],
    other_key: &'a [usize],
    how: JoinHow,
    joined: Joined,
}

impl Join<'_> {
    /// The joined rows of `stream` and `other`, both keyed by `K`.
    fn build<K: StepKey>(
        self,
        stream: DataStream<Row>,
        other: DataStream<Row>,
    ) -> Result<DataStream<Row>, PipelineError> {
        let Join { file, with, key, other_key, how, joined } = self;
        let error = |e: String| PipelineError::new(file, format!("steps (join with {with})"), e);
        let (stream, other) = (stream.key_by(key_of::<K>(key)), other.key_by(key_of::<K>(other_key)));
        Ok(match how {
            JoinHow::Interval { lower, upper, outer: None, .. } => stream
                .interval_join(other)
                .between(lower, upper)
                .process(move |row: &Row, other: &Row| joined.pair(row, other))
                .map_err(|e| error(e.to_string()))?,
            JoinHow::Interval { lower, upper, outer: Some(outer), width } => stream
                .interval_join(other)
                .between(lower, upper)
                .outer(match outer {
                    Outer::Left => weir::prelude::Outer::Left,
                    Outer::Right => weir::prelude::Outer::Right,
                    Outer::Full => weir::prelude::Outer::Full,
                })
                .process(OuterRows { joined, width })
                .map_err(|e| error(e.to_string()))?,
            JoinHow::Window { assigner, lateness, outer: None, .. } => stream
                .connect(other)
                .window(assigner)
                .allowed_lateness(lateness)
                .join(move |row: &Row, other: &Row| joined.pair(row, other)),
            JoinHow::Window { assigner, lateness, outer: Some(outer), width } => {
                stream.connect(other).window(assigner).allowed_lateness(lateness).co_group(
                    move |_: &K, _: &Window, rows: &[Row], others: &[Row], out: &mut dyn FnMut(Row)| {
                        joined.outer(outer, width, rows, others, out)
                    },
                )
            }
        })
    }
}

/// A window step's assigner and timing, built with its key type.
struct WindowStep {
    assigner: WindowAssigner,
    lateness: Duration,
    processing_time: bool,
}

impl WindowStep {
    /// The step's window rows, keyed by `K` of the `key` fields (none: the
    /// whole stream in one subtask, Flink's windowAll).
    fn build<K: StepKey>(
        &self,
        file: &Path,
        stream: DataStream<Row>,
        key: Option<&[usize]>,
        output: &WindowOutput,
        late: &Option<Box<SinkPlan>>,
    ) -> Result<DataStream<Row>, PipelineError> {
        let keyed = stream.key_by(key_of::<K>(key.unwrap_or_default()));
        let mut windowed = keyed.window(self.assigner).allowed_lateness(self.lateness);
        if self.processing_time {
            windowed = windowed.processing_time();
        }
        if key.is_none() {
            windowed = windowed.set_parallelism(1);
        }
        match output {
            WindowOutput::Aggregate(specs) => {
                let agg = RowAggregates { specs: Arc::new(specs.clone()) };
                window_rows(file, windowed, agg, late.as_deref())
            }
            WindowOutput::Top { n, by, add_window_start, add_window_end } => {
                let top = TopRows {
                    n: *n,
                    by: Arc::new(by.clone()),
                    add_window_start: *add_window_start,
                    add_window_end: *add_window_end,
                };
                window_rows(file, windowed, top, late.as_deref())
            }
        }
    }
}

/// The rows `function` makes of each window; the late rows, when the step
/// has a `late` sink, go there.
fn window_rows<K: StepKey, F: WindowFunction<K, Row, Out = Row> + Clone + Sync>(
    file: &Path,
    windowed: WindowedStream<K, Row>,
    function: F,
    late: Option<&SinkPlan>,
) -> Result<DataStream<Row>, PipelineError> {
    let Some(late) = late else { return Ok(windowed.apply_combinable(function)) };
    let (rows, late_rows) = windowed.apply_with_late_data(function);
    attach_sink(file, "late", late, late_rows)?;
    tracing::info!("late rows go to {}", late.describe());
    Ok(rows)
}

/// The rows a join step emits: the stream's row with the picked `fields` of
/// the other side's appended.
#[derive(Clone)]
struct Joined {
    fields: Arc<[usize]>,
    /// The key's fields in the stream's rows and in the other side's.
    key: Arc<[usize]>,
    other_key: Arc<[usize]>,
}

impl Joined {
    fn pair(&self, row: &Row, other: &Row) -> Row {
        let mut out = Vec::with_capacity(row.len() + self.fields.len());
        out.extend_from_slice(row);
        out.extend(self.fields.iter().map(|&i| other[i].clone()));
        out
    }

    /// A row of the stream without a match: the other side's fields null.
    fn left_only(&self, row: &Row) -> Row {
        let mut out = Vec::with_capacity(row.len() + self.fields.len());
        out.extend_from_slice(row);
        out.resize(row.len() + self.fields.len(), Value::Null);
        out
    }

    /// A row of the other side without a match: the stream's fields null but
    /// for its key, which equals the other row's.
    fn right_only(&self, width: usize, other: &Row) -> Row {
        let mut out = vec![Value::Null; width];
        for (&k, &o) in self.key.iter().zip(self.other_key.iter()) {
            out[k] = other[o].clone();
        }
        out.extend(self.fields.iter().map(|&i| other[i].clone()));
        out
    }

    /// One key's window of an outer join: every pair, and the unmatched rows
    /// of the sides `outer` keeps (a side is unmatched when the other is empty).
    fn outer(&self, outer: Outer, width: usize, rows: &[Row], others: &[Row], out: &mut dyn FnMut(Row)) {
        match (rows.is_empty(), others.is_empty()) {
            (false, false) => rows.iter().for_each(|r| others.iter().for_each(|o| out(self.pair(r, o)))),
            (false, true) if outer != Outer::Right => rows.iter().for_each(|r| out(self.left_only(r))),
            (true, false) if outer != Outer::Left => others.iter().for_each(|o| out(self.right_only(width, o))),
            _ => {}
        }
    }
}

/// An outer interval join's rows: pairs, and unmatched rows with the other side null.
#[derive(Clone)]
struct OuterRows {
    joined: Joined,
    width: usize,
}

impl ProcessJoinFunction<Row, Row, Row> for OuterRows {
    fn process_element(&mut self, row: &Row, other: &Row, ctx: &mut JoinContext<'_, Row>) {
        ctx.emit(self.joined.pair(row, other));
    }
    fn process_unmatched_first(&mut self, row: &Row, ctx: &mut JoinContext<'_, Row>) {
        ctx.emit(self.joined.left_only(row));
    }
    fn process_unmatched_second(&mut self, other: &Row, ctx: &mut JoinContext<'_, Row>) {
        ctx.emit(self.joined.right_only(self.width, other));
    }
}

/// Sends `stream` to `sink` (configured at `key`, for errors).
fn attach_sink(file: &Path, key: &str, sink: &SinkPlan, stream: DataStream<Row>) -> Result<(), PipelineError> {
    let schema = Arc::new(sink.schema.clone());
    match &sink.kind {
        SinkKind::Stdout => stream.print_with(move |row| crate::format::readable(&schema, row)),
        SinkKind::File { path } => stream.write_lines(path, move |row: &Row, out: &mut Vec<u8>| -> TaskResult {
            schema.write_json(row, out);
            Ok(())
        }),
        SinkKind::Blackhole => stream.discard(),
        SinkKind::Kafka(spec) => connectors::kafka_sink(file, key, spec, stream, schema)?,
        SinkKind::Redis(spec) => connectors::redis_sink(file, key, spec, stream)?,
        SinkKind::Postgres(spec) => connectors::postgres_sink(file, key, spec, stream)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_read_as_their_display() {
        for n in [0, 42, 1_000_000_007, u64::MAX] {
            assert_eq!(order_id_text(OrderId(n)), OrderId(n).to_string());
        }
    }
}
