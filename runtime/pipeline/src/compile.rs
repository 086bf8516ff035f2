//! Compiles a [`PipelineFile`] onto a [`StreamEnv`]: schema tracking, checks,
//! and the streams of rows that implement each step.
//!
//! Everything that can be wrong with a pipeline is found here, before the job
//! starts: unknown fields, type errors in expressions, steps in an impossible
//! order (an `aggregate` without a `window`, a `window` without event time),
//! and connectors this build does not have.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use smol_str::SmolStr;
use weir::core::window::WindowAssigner;
use weir::core::{TaskResult, WatermarkStrategy};
use weir::datagen::{Bid, Order};
use weir::prelude::{DataStream, StreamEnv};

use crate::config::{self, PipelineFile, SourceType, Step, WindowType, Workload};
use crate::connectors;
use crate::error::PipelineError;
use crate::expr::Expr;
use crate::file_source::{FileSource, list_files};
use crate::ops::{AggKind, AggSpec, AnomalyFlag, DedupRows, RowAggregates, RowKey, TopRows};
use crate::records::{DeadLetters, Format};
use crate::value::{FieldType, Row, Schema, Value};

/// Counters of a compiled pipeline, readable while and after it runs.
#[derive(Clone, Default)]
pub struct PipelineStats {
    /// Rows that reached the sink.
    pub rows_out: Arc<AtomicU64>,
    /// Malformed input records skipped.
    pub malformed: Arc<AtomicU64>,
}

/// What compiling produced, besides the job graph in the environment.
pub struct Compiled {
    pub name: String,
    pub parallelism: usize,
    pub output_schema: Schema,
    /// Where the output goes, for people.
    pub sink_description: String,
    pub stats: PipelineStats,
}

/// Settings from the command line that override the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub parallelism: Option<usize>,
    /// Whether the job takes checkpoints, when the command line decides it
    /// (otherwise the file's `checkpointing` section does).
    pub checkpointing: Option<bool>,
}

pub(crate) struct Ctx<'a> {
    file: &'a Path,
    /// The job's name (part of consumer groups and transaction ids).
    pub(crate) job: &'a str,
    /// Whether the job takes checkpoints (exactly-once sinks need them).
    pub(crate) checkpointing: bool,
}

impl Ctx<'_> {
    pub(crate) fn err(&self, key: impl Into<String>, message: impl Into<String>) -> PipelineError {
        PipelineError::new(self.file, key, message)
    }
}

/// The stream being built and what is known about it.
struct Cursor {
    /// Always present between steps; taken while a step replaces it.
    stream: Option<DataStream<Row>>,
    schema: Schema,
    event_time: bool,
    /// The key of the last keyed step (for `anomaly`).
    last_key: Option<Vec<usize>>,
}

impl Cursor {
    fn take(&mut self) -> DataStream<Row> {
        self.stream.take().expect("a stream between steps")
    }
}

pub(crate) fn resolve(ctx: &Ctx, key: &str, schema: &Schema, names: &[String]) -> Result<Vec<usize>, PipelineError> {
    if names.is_empty() {
        return Err(ctx.err(key, "expected at least one field"));
    }
    names
        .iter()
        .map(|n| {
            schema.index(n).ok_or_else(|| {
                ctx.err(key, format!("unknown field `{n}` (the stream has: {})", schema.names().join(", ")))
            })
        })
        .collect()
}

fn key_of(indices: Arc<Vec<usize>>) -> impl Fn(&Row) -> RowKey + Clone + Send + Sync + 'static {
    move |row: &Row| indices.iter().map(|&i| row[i].clone()).collect()
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

fn order_row(o: Order) -> Row {
    vec![
        Value::Str(SmolStr::new(o.order_id.to_string())),
        Value::Str(SmolStr::new_static(o.region.as_str())),
        Value::Int(o.amount),
        Value::Int(o.time),
    ]
}

fn bid_row(b: Bid) -> Row {
    vec![
        Value::Int(b.auction),
        Value::Int(b.bidder),
        Value::Int(b.price),
        Value::Str(SmolStr::new_static(b.channel.as_str())),
        Value::Int(b.time),
        Value::Str(SmolStr::new(&b.extra)),
    ]
}

/// Compiles `p` (read from `file`) into `env`.
pub fn compile(
    file: &Path,
    p: &PipelineFile,
    env: &StreamEnv,
    overrides: &Overrides,
) -> Result<Compiled, PipelineError> {
    let checkpointing = overrides.checkpointing.unwrap_or(p.checkpointing.is_some());
    let ctx = Ctx { file, job: &p.name, checkpointing };
    if p.name.trim().is_empty() || p.name.contains('/') {
        return Err(ctx.err("name", "expected a non-empty job name without `/`"));
    }
    if let Some(c) = &p.checkpointing {
        if c.interval.0.is_zero() {
            return Err(ctx.err("checkpointing.interval", "must be longer than zero"));
        }
        if c.retained == Some(0) {
            return Err(ctx.err("checkpointing.retained", "must keep at least 1 checkpoint"));
        }
    }
    let parallelism = overrides.parallelism.or(p.parallelism).unwrap_or(1);
    let max_parallelism = p.max_parallelism.unwrap_or(weir::core::keygroup::DEFAULT_MAX_PARALLELISM);
    if parallelism == 0 {
        return Err(ctx.err("parallelism", "must be at least 1"));
    }
    if max_parallelism == 0 || max_parallelism > 32_768 {
        return Err(ctx.err("max_parallelism", "must be between 1 and 32768"));
    }
    if parallelism > max_parallelism as usize {
        return Err(ctx.err("parallelism", format!("{parallelism} exceeds max_parallelism {max_parallelism}")));
    }
    env.set_parallelism(parallelism).set_max_parallelism(max_parallelism);
    let stats = PipelineStats::default();

    let mut cur = source(&ctx, p, env, &stats)?;
    let mut i = 0;
    while i < p.steps.len() {
        let key = format!("steps[{i}].{}", p.steps[i].name());
        i += step(&ctx, &key, &p.steps, i, &mut cur)?;
    }
    let (sink_description, output_schema) = sink(&ctx, p, cur, &stats)?;
    Ok(Compiled { name: p.name.clone(), parallelism, output_schema, sink_description, stats })
}

fn source(ctx: &Ctx, p: &PipelineFile, env: &StreamEnv, stats: &PipelineStats) -> Result<Cursor, PipelineError> {
    use FieldType::*;
    use SourceType::{Datagen, File, Kafka};
    let src = &p.source;
    // Keys that belong to other source types are mistakes, not silent no-ops.
    let set: [(&str, bool, &[SourceType]); 14] = [
        ("workload", src.workload.is_some(), &[Datagen]),
        ("count", src.count.is_some(), &[Datagen]),
        ("rate", src.rate.is_some(), &[Datagen]),
        ("path", src.path.is_some(), &[File]),
        ("format", src.format.is_some(), &[File, Kafka]),
        ("fields", src.fields.is_some(), &[File, Kafka]),
        ("on_error", src.on_error != config::OnError::Skip, &[File, Kafka]),
        ("dead_letter", src.dead_letter.is_some(), &[File, Kafka]),
        ("bootstrap", src.bootstrap.is_some(), &[Kafka]),
        ("topic", src.topic.is_some(), &[Kafka]),
        ("group", src.group.is_some(), &[Kafka]),
        ("start", src.start.is_some(), &[Kafka]),
        ("bounded", src.bounded.is_some(), &[Kafka]),
        ("properties", src.properties.is_some(), &[Kafka]),
    ];
    if let Some((k, _, owners)) = set.iter().find(|(_, present, owners)| *present && !owners.contains(&src.kind)) {
        let owners: Vec<std::string::String> = owners.iter().map(|o| format!("{o:?}").to_lowercase()).collect();
        return Err(ctx.err(format!("source.{k}"), format!("only applies to {} sources", owners.join(" and "))));
    }
    // The schema of the records, and the event-time field when there is a watermark.
    let schema = match src.kind {
        Datagen => match src.workload {
            Some(Workload::Orders) => {
                Schema::new([("order_id", String), ("region", String), ("amount", Int), ("time", Int)])
            }
            Some(Workload::Bids) => Schema::new([
                ("auction", Int),
                ("bidder", Int),
                ("price", Int),
                ("channel", String),
                ("time", Int),
                ("extra", String),
            ]),
            None => return Err(ctx.err("source.workload", "required for datagen sources: orders or bids")),
        },
        File | Kafka => {
            let fields = src.fields.as_ref().filter(|f| !f.is_empty()).ok_or_else(|| {
                ctx.err("source.fields", "required for file and kafka sources: each field of the records with its type")
            })?;
            Schema::new(fields.iter().map(|(n, t)| (n.clone(), *t)))
        }
    };
    let event_time = match &src.watermark {
        None => None,
        Some(w) => {
            let idx = schema.index(&w.field).ok_or_else(|| {
                ctx.err(
                    "source.watermark.field",
                    format!("unknown field `{}` (fields: {})", w.field, schema.names().join(", ")),
                )
            })?;
            if schema.field_type(idx) != Int {
                return Err(
                    ctx.err("source.watermark.field", format!("`{}` must be an int of epoch milliseconds", w.field))
                );
            }
            let mut strategy =
                WatermarkStrategy::bounded_out_of_orderness(w.out_of_orderness.map_or(Duration::ZERO, |d| d.0));
            if let Some(idle) = w.idle_timeout {
                strategy = strategy.with_idle_timeout(idle.0);
            }
            Some((idx, strategy))
        }
    };
    let format = match &src.format {
        None => Format::Json,
        Some(f) => Format::parse(f).map_err(|e| ctx.err("source.format", e))?,
    };
    let dead_letters = {
        let (on_error, dir) = (src.on_error, src.dead_letter.as_ref().map(PathBuf::from));
        let count = stats.malformed.clone();
        move |subtask: usize| DeadLetters::new(on_error, dir.clone(), count.clone(), subtask)
    };
    let mut source_assigns_time = false;
    let stream = match src.kind {
        Datagen => {
            if src.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
                return Err(ctx.err("source.rate", "expected a positive number of events per second"));
            }
            match src.workload.expect("checked above") {
                Workload::Orders => env.orders(src.count, src.rate).map(order_row),
                Workload::Bids => env.bids(src.count, src.rate).map(bid_row),
            }
        }
        File => {
            let path = src.path.as_ref().ok_or_else(|| ctx.err("source.path", "required for file sources"))?;
            let files = list_files(Path::new(path))
                .map_err(|e| ctx.err("source.path", format!("cannot read `{path}`: {e}")))?;
            let shared = Arc::new(schema.clone());
            env.add_source("file", move |info| {
                let mine = files.iter().enumerate().rev().filter(|(k, _)| k % info.parallelism == info.index);
                let mine = mine.map(|(_, f)| f.clone()).collect();
                Box::new(FileSource::new(mine, shared.clone(), format, dead_letters(info.index)))
            })
        }
        Kafka => {
            // Kafka partitions interleave unpredictably: the source keeps a watermark per partition.
            source_assigns_time = true;
            let config = connectors::kafka_source_config(ctx, p)?;
            connectors::kafka_source(env, config, &schema, format, event_time.clone(), dead_letters)
        }
    };
    let mut cur = Cursor { stream: Some(stream), schema, event_time: event_time.is_some(), last_key: None };
    if let Some((idx, strategy)) = event_time
        && !source_assigns_time
    {
        let stream = cur.take();
        cur.stream = Some(stream.assign_timestamps(strategy, move |row: &Row| row[idx].as_int().unwrap_or(i64::MIN)));
    }
    Ok(cur)
}

/// Compiles the step at `i` (and the steps it consumes); returns how many steps it used.
fn step(ctx: &Ctx, key: &str, steps: &[Step], i: usize, cur: &mut Cursor) -> Result<usize, PipelineError> {
    match &steps[i] {
        Step::Dedup(d) => {
            let fields = resolve(ctx, &format!("{key}.key"), &cur.schema, &d.key.names())?;
            if d.ttl.is_some() && !cur.event_time {
                return Err(ctx.err(format!("{key}.ttl"), "a TTL needs event time: add source.watermark"));
            }
            let f = DedupRows { ttl_ms: d.ttl.map(|t| ms(t.0)), seen: None };
            cur.stream = Some(cur.take().key_by(key_of(Arc::new(fields.clone()))).process(f));
            cur.last_key = Some(fields);
            Ok(1)
        }
        Step::Filter(src) => {
            let e = Expr::compile(src, &cur.schema).map_err(|m| ctx.err(key, m))?;
            if !matches!(e.result_type(), Some(FieldType::Bool) | None) {
                return Err(ctx.err(
                    key,
                    format!(
                        "a filter must be a condition, this expression is of type {}",
                        e.result_type().expect("some")
                    ),
                ));
            }
            cur.stream = Some(cur.take().filter(move |row| e.matches(row)));
            Ok(1)
        }
        Step::Select(fields) => {
            if fields.is_empty() {
                return Err(ctx.err(key, "expected at least one `name: expression`"));
            }
            let mut schema = Schema::default();
            let mut exprs = Vec::new();
            for (name, src) in fields {
                let e = Expr::compile(src, &cur.schema).map_err(|m| ctx.err(format!("{key}.{name}"), m))?;
                let ty =
                    e.result_type().ok_or_else(|| ctx.err(format!("{key}.{name}"), "expression is always null"))?;
                schema.push(name.clone(), ty);
                exprs.push(e);
            }
            let exprs = Arc::new(exprs);
            cur.stream = Some(cur.take().map(move |row: Row| exprs.iter().map(|e| e.eval(&row)).collect::<Row>()));
            cur.schema = schema;
            cur.last_key = None;
            Ok(1)
        }
        Step::KeyBy(f) => {
            let fields = resolve(ctx, key, &cur.schema, &f.names())?;
            match steps.get(i + 1) {
                Some(Step::Window(_)) => {
                    window(ctx, &format!("steps[{}].window", i + 1), steps, i + 1, cur, Some(fields)).map(|n| n + 1)
                }
                _ => Err(ctx.err(key, "a key_by must be followed by a window step")),
            }
        }
        Step::Window(_) => window(ctx, key, steps, i, cur, None),
        Step::Aggregate(_) | Step::Top(_) => Err(ctx.err(key, "must follow a window step")),
        Step::Anomaly(a) => {
            let field = resolve(ctx, &format!("{key}.field"), &cur.schema, std::slice::from_ref(&a.field))?[0];
            if !cur.schema.field_type(field).is_numeric() {
                return Err(ctx.err(format!("{key}.field"), format!("`{}` must be numeric", a.field)));
            }
            let keys = match (&a.key, &cur.last_key) {
                (Some(k), _) => resolve(ctx, &format!("{key}.key"), &cur.schema, &k.names())?,
                (None, Some(k)) => k.clone(),
                (None, None) => {
                    return Err(
                        ctx.err(format!("{key}.key"), "no key: set `key`, or put the step after a keyed window")
                    );
                }
            };
            if a.history < 2 {
                return Err(ctx.err(format!("{key}.history"), "needs at least 2 previous values"));
            }
            if a.sigma.is_nan() || a.sigma <= 0.0 {
                return Err(ctx.err(format!("{key}.sigma"), "must be positive"));
            }
            let f = AnomalyFlag {
                field,
                history: a.history,
                sigma: a.sigma,
                only_anomalies: a.only_anomalies,
                values: None,
            };
            cur.stream = Some(cur.take().key_by(key_of(Arc::new(keys))).process(f));
            for (n, t) in [("mean", FieldType::Float), ("stddev", FieldType::Float), ("anomaly", FieldType::Bool)] {
                if cur.schema.index(n).is_some() {
                    return Err(ctx.err(key, format!("the stream already has a field `{n}`, which anomaly adds")));
                }
                cur.schema.push(n, t);
            }
            if let Some(alerts) = &a.alerts {
                // The flagged rows also go to the alerts sink; every row goes on.
                let stream = cur.take();
                let flag = cur.schema.index("anomaly").expect("added above");
                let flagged = stream.clone().filter(move |row: &Row| matches!(row[flag], Value::Bool(true)));
                let schema = Arc::new(cur.schema.clone());
                let to = attach_sink(ctx, &format!("{key}.alerts"), alerts, flagged, &schema)?;
                tracing::info!("anomaly alerts go to {to}");
                cur.stream = Some(stream);
            }
            Ok(1)
        }
    }
}

fn window(
    ctx: &Ctx,
    key: &str,
    steps: &[Step],
    i: usize,
    cur: &mut Cursor,
    keys: Option<Vec<usize>>,
) -> Result<usize, PipelineError> {
    let Step::Window(w) = &steps[i] else { unreachable!("called on a window step") };
    if !cur.event_time {
        return Err(ctx.err(
            key,
            "windows need event time: add `watermark: { field: ..., out_of_orderness: ... }` to the source",
        ));
    }
    let need = |d: Option<config::Dur>, name: &str| {
        d.map(|d| d.0).ok_or_else(|| {
            ctx.err(format!("{key}.{name}"), format!("required for {:?} windows", w.kind).to_lowercase())
        })
    };
    let forbid = |d: Option<config::Dur>, name: &str| match d {
        Some(_) => {
            Err(ctx.err(format!("{key}.{name}"), format!("does not apply to {:?} windows", w.kind).to_lowercase()))
        }
        None => Ok(()),
    };
    let assigner = match w.kind {
        WindowType::Tumbling => {
            forbid(w.slide, "slide")?;
            forbid(w.gap, "gap")?;
            WindowAssigner::tumbling(need(w.size, "size")?)
        }
        WindowType::Sliding => {
            forbid(w.gap, "gap")?;
            WindowAssigner::sliding(need(w.size, "size")?, need(w.slide, "slide")?)
        }
        WindowType::Session => {
            forbid(w.size, "size")?;
            forbid(w.slide, "slide")?;
            WindowAssigner::session(need(w.gap, "gap")?)
        }
    };
    let lateness = w.allowed_lateness;
    assigner.validate().map_err(|m| ctx.err(key, m))?;
    let lateness = lateness.map_or(Duration::ZERO, |d| d.0);
    let next_key = format!("steps[{}]", i + 1);
    let key_fields = keys.clone().unwrap_or_default();
    let keyed = cur.take().key_by(key_of(Arc::new(key_fields.clone()))).window(assigner).allowed_lateness(lateness);
    // Without a key_by, one subtask sees the whole stream (Flink's windowAll).
    let windowed = if keys.is_some() { keyed } else { keyed.set_parallelism(1) };
    match steps.get(i + 1) {
        Some(Step::Aggregate(aggs)) => {
            let key = format!("{next_key}.aggregate");
            if aggs.is_empty() {
                return Err(ctx.err(key, "expected at least one `name: function(field)`"));
            }
            let mut schema = Schema::default();
            for &k in &key_fields {
                schema.push(cur.schema.fields[k].0.clone(), cur.schema.field_type(k));
            }
            schema.push("window_start", FieldType::Int);
            schema.push("window_end", FieldType::Int);
            let mut specs = Vec::new();
            for (name, src) in aggs {
                let spec = parse_aggregate(src, &cur.schema).map_err(|m| ctx.err(format!("{key}.{name}"), m))?;
                if schema.index(name).is_some() {
                    return Err(ctx.err(format!("{key}.{name}"), format!("`{name}` is already a field of the output")));
                }
                schema.push(name.clone(), spec.output_type());
                specs.push(spec);
            }
            let agg = RowAggregates { specs: Arc::new(specs) };
            cur.stream = Some(windowed.aggregate(agg, |k: &RowKey, w, values: Vec<Value>| {
                let mut row = k.clone();
                row.reserve(2 + values.len());
                row.push(Value::Int(w.start));
                row.push(Value::Int(w.end));
                row.extend(values);
                row
            }));
            cur.schema = schema;
            cur.last_key = Some((0..key_fields.len()).collect());
            Ok(2)
        }
        Some(Step::Top(t)) => {
            let key = format!("{next_key}.top");
            if t.n == 0 {
                return Err(ctx.err(format!("{key}.n"), "must be at least 1"));
            }
            if t.by.is_empty() {
                return Err(ctx.err(format!("{key}.by"), "expected at least one sort key such as `count desc`"));
            }
            let mut by = Vec::new();
            for (j, spec) in t.by.iter().enumerate() {
                let mut parts = spec.split_whitespace();
                let field = parts.next().unwrap_or("");
                let desc = match parts.next() {
                    None | Some("asc") => false,
                    Some("desc") => true,
                    Some(o) => {
                        return Err(
                            ctx.err(format!("{key}.by[{j}]"), format!("unknown order `{o}`; expected asc or desc"))
                        );
                    }
                };
                let idx = resolve(ctx, &format!("{key}.by[{j}]"), &cur.schema, &[field.to_string()])?[0];
                by.push((idx, desc));
            }
            let mut schema = cur.schema.clone();
            let add_start = schema.index("window_start").is_none();
            let add_end = schema.index("window_end").is_none();
            if add_start {
                schema.push("window_start", FieldType::Int);
            }
            if add_end {
                schema.push("window_end", FieldType::Int);
            }
            if t.n > 1 {
                schema.push("rank", FieldType::Int);
            }
            let top = TopRows { n: t.n, by: Arc::new(by), add_window_start: add_start, add_window_end: add_end };
            cur.stream = Some(windowed.apply(top));
            cur.schema = schema;
            cur.last_key = keys;
            Ok(2)
        }
        _ => Err(ctx.err(key, "a window must be followed by an aggregate or a top step")),
    }
}

fn parse_aggregate(src: &str, schema: &Schema) -> Result<AggSpec, String> {
    let src = src.trim();
    let (name, rest) = src.split_once('(').ok_or_else(|| format!("expected `function(field)`, got `{src}`"))?;
    let arg = rest.strip_suffix(')').ok_or_else(|| format!("missing `)` in `{src}`"))?.trim();
    let kind = match name.trim() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" => AggKind::Avg,
        "count_distinct" => AggKind::CountDistinct,
        other => {
            return Err(format!("unknown aggregate `{other}`; expected count, sum, min, max, avg or count_distinct"));
        }
    };
    if kind == AggKind::Count {
        if !arg.is_empty() && arg != "*" {
            return Err("count takes no field: `count()`".into());
        }
        return Ok(AggSpec { kind, field: None, input_type: None });
    }
    let field =
        schema.index(arg).ok_or_else(|| format!("unknown field `{arg}` (fields: {})", schema.names().join(", ")))?;
    let ty = schema.field_type(field);
    if matches!(kind, AggKind::Sum | AggKind::Avg) && !ty.is_numeric() {
        return Err(format!("{} needs a numeric field; `{arg}` is {ty}", name.trim()));
    }
    Ok(AggSpec { kind, field: Some(field), input_type: Some(ty) })
}

fn sink(
    ctx: &Ctx,
    p: &PipelineFile,
    mut cur: Cursor,
    stats: &PipelineStats,
) -> Result<(String, Schema), PipelineError> {
    let rows_out = stats.rows_out.clone();
    let counted = cur.take().map(move |r: Row| {
        rows_out.fetch_add(1, Ordering::Relaxed);
        r
    });
    let description = attach_sink(ctx, "sink", &p.sink, counted, &Arc::new(cur.schema.clone()))?;
    Ok((description, cur.schema))
}

/// Sends `stream` to `sink` (configured at `key`); returns where the output goes, for people.
fn attach_sink(
    ctx: &Ctx,
    key: &str,
    sink: &config::Sink,
    stream: DataStream<Row>,
    schema: &Arc<Schema>,
) -> Result<String, PipelineError> {
    Ok(match sink {
        config::Sink::Stdout {} => {
            let s = schema.clone();
            stream.print_with(move |row| crate::format::readable(&s, row));
            "standard output".to_string()
        }
        config::Sink::File { path } => {
            if path.trim().is_empty() {
                return Err(ctx.err(format!("{key}.path"), "expected a directory for the part files"));
            }
            let s = schema.clone();
            stream.write_lines(path, move |row: &Row, out: &mut Vec<u8>| -> TaskResult {
                s.write_json(row, out);
                Ok(())
            });
            format!("{path}/part-*.jsonl")
        }
        config::Sink::Blackhole {} => {
            stream.discard();
            "nowhere (blackhole)".to_string()
        }
        config::Sink::Kafka { .. } => connectors::kafka_sink(ctx, key, sink, stream, schema)?,
        config::Sink::Redis { .. } => connectors::redis_sink(ctx, key, sink, stream, schema)?,
        config::Sink::Postgres { .. } => connectors::postgres_sink(ctx, key, sink, stream, schema)?,
    })
}
