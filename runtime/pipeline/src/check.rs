//! Checks a [`PipelineFile`] and plans it: a pure function from the file (and
//! the command line's overrides) to a [`Plan`], or to the first problem found.
//!
//! Everything that can be wrong with a pipeline is found here, before the job
//! starts and without any I/O: unknown keys of the chosen source type,
//! unknown fields, type errors in expressions, steps in an impossible order
//! (an `aggregate` without a `window`, a `window` without event time), and
//! connector keys that do not fit the stream. This is what the operator runs
//! to validate a StreamJob; [`build`](crate::build) turns the plan into streams.
//!
//! ```
//! use std::path::Path;
//! use weir_pipeline::check::{Overrides, check};
//! use weir_pipeline::config::parse;
//!
//! let yaml = "name: x\nsource: { type: datagen, workload: orders }\nsteps: [{ filter: \"amount > 'a'\" }]\nsink: { type: stdout }";
//! let file = parse(Path::new("x.yaml"), yaml, &[]).unwrap();
//! let e = check(Path::new("x.yaml"), &file, &Overrides::default()).unwrap_err();
//! assert_eq!(e.key, "steps[0].filter");
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_core::WatermarkStrategy;
use weir_core::checkpoint::storage::check_name;
use weir_core::keygroup::DEFAULT_MAX_PARALLELISM;
use weir_core::window::WindowAssigner;

use crate::config::{self, JoinType, PipelineFile, SourceType, Step, WindowTime, WindowType, Workload};
use crate::error::PipelineError;
use crate::expr::Expr;
use crate::file_source::DEFAULT_MAX_LINE_BYTES;
use crate::ops::{AggKind, AggSpec};
use crate::plan::{
    JoinHow, KafkaSinkSpec, KafkaSourceSpec, KafkaStart, LookupSpec, LookupStore, Part, Plan, PostgresSinkSpec,
    RedisSinkSpec, SinkKind, SinkPlan, SourceKind, SourcePlan, StatePlan, StepKind, StepPlan, WindowOutput,
};
use crate::records::Format;
use crate::value::{FieldType, Schema};

/// Settings from the command line that override the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub parallelism: Option<usize>,
    /// Whether the job takes checkpoints, when the command line decides it
    /// (otherwise the file's `checkpointing` section does).
    pub checkpointing: Option<bool>,
}

/// What the checks need to know besides the part being checked.
struct Ctx<'a> {
    file: &'a Path,
    /// The job's name (part of consumer groups and transaction ids).
    job: &'a str,
    /// Whether the job takes checkpoints (exactly-once sinks need them).
    checkpointing: bool,
    /// The named sources that `join` steps may join with.
    sources: &'a indexmap::IndexMap<String, config::Source>,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> PipelineError {
        PipelineError::new(self.file, key, message)
    }
}

/// The stream between steps, as far as the checks know it.
struct Cursor {
    schema: Schema,
    event_time: bool,
    /// The key of the last keyed step (for `anomaly`).
    last_key: Option<Vec<usize>>,
}

/// Checks `p` (read from `file`) with `overrides` applied, and plans it.
pub fn check(file: &Path, p: &PipelineFile, overrides: &Overrides) -> Result<Plan, PipelineError> {
    let checkpointing = overrides.checkpointing.unwrap_or(p.checkpointing.is_some());
    let ctx = Ctx { file, job: &p.name, checkpointing, sources: &p.sources };
    if p.name.trim().is_empty() {
        return Err(ctx.err("name", "expected a non-empty job name"));
    }
    // The name is a directory under the checkpoint storage's root: one name, no `..`.
    check_name("job name", &p.name).map_err(|e| ctx.err("name", e.to_string()))?;
    if let Some(c) = &p.checkpointing {
        if c.interval.0.is_zero() {
            return Err(ctx.err("checkpointing.interval", "must be longer than zero"));
        }
        if c.retained == Some(0) {
            return Err(ctx.err("checkpointing.retained", "must keep at least 1 checkpoint"));
        }
    }
    let parallelism = overrides.parallelism.or(p.parallelism).unwrap_or(1);
    let max_parallelism = p.max_parallelism.unwrap_or(DEFAULT_MAX_PARALLELISM);
    if parallelism == 0 {
        return Err(ctx.err("parallelism", "must be at least 1"));
    }
    if max_parallelism == 0 || max_parallelism > 32_768 {
        return Err(ctx.err("max_parallelism", "must be between 1 and 32768"));
    }
    if parallelism > max_parallelism as usize {
        return Err(ctx.err("parallelism", format!("{parallelism} exceeds max_parallelism {max_parallelism}")));
    }
    let buffer_timeout = p.buffer_timeout.map_or(weir_core::graph::DEFAULT_BUFFER_TIMEOUT, |d| d.0);
    if buffer_timeout > MAX_BUFFER_TIMEOUT {
        return Err(ctx.err("buffer_timeout", "must be at most 10s (records would wait that long between steps)"));
    }
    let state = state(&ctx, p.state.as_ref())?;
    let source = source(&ctx, "source", &p.source)?;
    let mut cur = Cursor { schema: source.schema.clone(), event_time: source.event_time.is_some(), last_key: None };
    let mut steps = Vec::new();
    let mut i = 0;
    while i < p.steps.len() {
        let key = format!("steps[{i}].{}", p.steps[i].name());
        let (kind, used) = step(&ctx, &key, &p.steps, i, &mut cur)?;
        let parallelism = step_parallelism(&ctx, p, i..i + used, &kind, max_parallelism)?;
        steps.push(StepPlan { kind, schema: cur.schema.clone(), parallelism });
        i += used;
    }
    let joined = |name: &String| steps.iter().any(|s| matches!(&s.kind, StepKind::Join { with, .. } if with == name));
    if let Some(name) = p.sources.keys().find(|name| !joined(name)) {
        return Err(ctx.err(format!("sources.{name}"), "no join step uses this source"));
    }
    // Dead-letter files are named by subtask: two sources in one directory would overwrite each other's.
    let mut dead_letter_dirs = vec![("source".to_string(), &p.source.dead_letter)];
    dead_letter_dirs.extend(p.sources.iter().map(|(name, s)| (format!("sources.{name}"), &s.dead_letter)));
    for (i, (key, dir)) in dead_letter_dirs.iter().enumerate() {
        if let Some(dir) = dir
            && let Some((first, _)) = dead_letter_dirs[..i].iter().find(|(_, d)| d.as_ref() == Some(dir))
        {
            return Err(ctx.err(
                format!("{key}.dead_letter"),
                format!("`{dir}` is {first}.dead_letter too: each source needs a directory of its own"),
            ));
        }
    }
    let sink = sink(&ctx, "sink", &p.sink, &cur.schema)?;
    Ok(Plan {
        name: p.name.clone(),
        parallelism,
        max_parallelism,
        buffer_timeout,
        local_aggregation: p.local_aggregation.unwrap_or(true),
        checkpointing,
        state,
        incremental: p.state.as_ref().and_then(|s| s.incremental),
        compression: p.checkpointing.as_ref().and_then(|c| c.compression),
        source,
        steps,
        sink,
    })
}

/// The `state` section: `dir` and `memory` belong to the disk backend.
fn state(ctx: &Ctx<'_>, state: Option<&crate::config::State>) -> Result<StatePlan, PipelineError> {
    use crate::config::Backend;
    use weir_core::state::backend::{DEFAULT_MEMORY, MIN_MEMORY};
    let Some(state) = state else { return Ok(StatePlan::Heap) };
    if state.backend == Backend::Heap {
        if state.dir.is_some() {
            return Err(ctx.err("state.dir", "is for `backend: disk` (heap state keeps no files)"));
        }
        if state.memory.is_some() {
            return Err(
                ctx.err("state.memory", "is for `backend: disk` (heap state is bounded by the process's memory)")
            );
        }
        return Ok(StatePlan::Heap);
    }
    let memory = state.memory.map_or(DEFAULT_MEMORY, |m| m.0);
    if memory < MIN_MEMORY {
        return Err(
            ctx.err("state.memory", format!("{memory} bytes is too small: the disk backend needs at least 16MiB"))
        );
    }
    let dir = state.dir.as_ref().map_or_else(weir_core::state::backend::default_dir, std::path::PathBuf::from);
    Ok(StatePlan::Disk { dir, memory })
}

/// The longest `buffer_timeout` a pipeline may set.
const MAX_BUFFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The parallelism the steps `used` (read as one) carry: the last one given.
fn step_parallelism(
    ctx: &Ctx,
    p: &PipelineFile,
    used: std::ops::Range<usize>,
    kind: &StepKind,
    max_parallelism: u32,
) -> Result<Option<usize>, PipelineError> {
    let given = used.rev().find_map(|j| p.step_parallelism.get(j).copied().flatten().map(|n| (j, n)));
    let Some((j, n)) = given else { return Ok(None) };
    let key = format!("steps[{j}].parallelism");
    if n > max_parallelism as usize {
        return Err(ctx.err(key, format!("{n} exceeds max_parallelism {max_parallelism}")));
    }
    if matches!(kind, StepKind::Window { key: None, .. }) && n != 1 {
        return Err(ctx.err(key, "a window without key_by sees the whole stream in one subtask: it cannot run at more"));
    }
    Ok(Some(n))
}

/// The field indices of `names` in `schema`, the stream's.
fn resolve(ctx: &Ctx, key: &str, schema: &Schema, names: &[String]) -> Result<Vec<usize>, PipelineError> {
    resolve_in(ctx, key, schema, names, "the stream")
}

/// The field indices of `names` in `schema`, the schema of `whose` (for messages).
fn resolve_in(
    ctx: &Ctx,
    key: &str,
    schema: &Schema,
    names: &[String],
    whose: &str,
) -> Result<Vec<usize>, PipelineError> {
    if names.is_empty() {
        return Err(ctx.err(key, "expected at least one field"));
    }
    names
        .iter()
        .map(|n| {
            schema.index(n).ok_or_else(|| {
                ctx.err(key, format!("unknown field `{n}` ({whose} has: {})", schema.names().join(", ")))
            })
        })
        .collect()
}

/// The schema of a workload's rows (bench/WORKLOADS.md).
pub fn workload_schema(workload: Workload) -> Schema {
    use FieldType::*;
    match workload {
        Workload::Orders => Schema::new([("order_id", String), ("region", String), ("amount", Int), ("time", Int)]),
        Workload::Payments => Schema::new([("order_id", String), ("amount", Int), ("time", Int)]),
        Workload::Bids => Schema::new([
            ("auction", Int),
            ("bidder", Int),
            ("price", Int),
            ("channel", String),
            ("time", Int),
            ("extra", String),
        ]),
    }
}

/// Checks the source at `key` (`source`, or `sources.<name>` of a join).
fn source(ctx: &Ctx, key: &str, src: &config::Source) -> Result<SourcePlan, PipelineError> {
    use SourceType::{Datagen, File, Kafka};
    // Keys that belong to other source types are mistakes, not silent no-ops.
    let set: [(&str, bool, &[SourceType]); 15] = [
        ("workload", src.workload.is_some(), &[Datagen]),
        ("count", src.count.is_some(), &[Datagen]),
        ("rate", src.rate.is_some(), &[Datagen]),
        ("path", src.path.is_some(), &[File]),
        ("max_line_bytes", src.max_line_bytes.is_some(), &[File]),
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
        let owners: Vec<String> = owners.iter().map(|o| format!("{o:?}").to_lowercase()).collect();
        return Err(ctx.err(format!("{key}.{k}"), format!("only applies to {} sources", owners.join(" and "))));
    }
    let schema = match src.kind {
        Datagen => workload_schema(src.workload.ok_or_else(|| {
            ctx.err(format!("{key}.workload"), "required for datagen sources: orders, payments or bids")
        })?),
        File | Kafka => {
            let fields = src.fields.as_ref().filter(|f| !f.is_empty()).ok_or_else(|| {
                ctx.err(
                    format!("{key}.fields"),
                    "required for file and kafka sources: each field of the records with its type",
                )
            })?;
            Schema::new(fields.iter().map(|(n, t)| (n.clone(), *t)))
        }
    };
    let mut schema = schema;
    let ingestion_time = match src.watermark.as_ref().and_then(|w| w.ingestion_time.as_ref()) {
        Some(_) if src.kind == Kafka => {
            return Err(ctx.err(
                format!("{key}.watermark.ingestion_time"),
                "kafka sources take event time from a field of the records (per partition)",
            ));
        }
        Some(name) if schema.index(name).is_some() => {
            return Err(ctx.err(format!("{key}.watermark.ingestion_time"), format!("`{name}` is already a field")));
        }
        Some(name) => {
            schema.push(name.clone(), FieldType::Int);
            true
        }
        None => false,
    };
    let event_time = match &src.watermark {
        None => None,
        Some(w) => Some(watermark(ctx, key, w, &schema)?),
    };
    let format = match &src.format {
        None => Format::Json,
        Some(f) => Format::parse(f).map_err(|e| ctx.err(format!("{key}.format"), e))?,
    };
    let kind = match src.kind {
        Datagen => {
            if let Some(r) = &src.rate {
                rate(ctx, key, r)?;
            }
            let workload = src.workload.expect("checked above");
            SourceKind::Datagen { workload, count: src.count, rate: src.rate.clone() }
        }
        File => {
            let path = src.path.clone().ok_or_else(|| ctx.err(format!("{key}.path"), "required for file sources"))?;
            if path.trim().is_empty() {
                return Err(ctx.err(format!("{key}.path"), "expected a file or a directory of files"));
            }
            let max_line_bytes = src.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES);
            if max_line_bytes == 0 {
                return Err(ctx.err(format!("{key}.max_line_bytes"), "expected a number of bytes, at least 1"));
            }
            SourceKind::File { path, max_line_bytes }
        }
        Kafka => SourceKind::Kafka(kafka_source(ctx, key, src)?),
    };
    Ok(SourcePlan {
        kind,
        schema,
        event_time,
        ingestion_time,
        format,
        on_error: src.on_error,
        dead_letter: src.dead_letter.as_ref().map(PathBuf::from),
    })
}

/// Checks a datagen source's rate: what `weir::datagen::RateProfile::validate`
/// checks (that crate is not linked here: the operator checks without the
/// engine), in the file's keys.
fn rate(ctx: &Ctx, key: &str, r: &config::Rate) -> Result<(), PipelineError> {
    let events_per_second = |key: String, r: f64| match r.is_finite() && r >= 0.0 {
        true => Ok(r),
        false => Err(ctx.err(key, "expected a number of events per second, 0 or more")),
    };
    match r {
        config::Rate::Constant(r) if !(r.is_finite() && *r > 0.0) => {
            Err(ctx.err(format!("{key}.rate"), "expected a positive number of events per second"))
        }
        config::Rate::Constant(_) => Ok(()),
        config::Rate::Steps(steps) => {
            let first = steps.first().ok_or_else(|| {
                ctx.err(format!("{key}.rate.steps"), "expected at least one step such as `{ at: 0s, rate: 1000 }`")
            })?;
            if !first.at.0.is_zero() {
                return Err(
                    ctx.err(format!("{key}.rate.steps[0].at"), "the first step must be at 0s (the stream's start)")
                );
            }
            for (i, step) in steps.iter().enumerate() {
                if i > 0 && step.at.0 <= steps[i - 1].at.0 {
                    return Err(ctx.err(format!("{key}.rate.steps[{i}].at"), "steps must be in increasing time"));
                }
                events_per_second(format!("{key}.rate.steps[{i}].rate"), step.rate)?;
            }
            match steps.iter().all(|s| s.rate == 0.0) {
                true => Err(ctx.err(format!("{key}.rate.steps"), "every rate is 0: the source would never produce")),
                false => Ok(()),
            }
        }
        config::Rate::Sine(s) => {
            if events_per_second(format!("{key}.rate.sine.mean"), s.mean)? == 0.0 {
                return Err(ctx.err(format!("{key}.rate.sine.mean"), "expected a positive number of events per second"));
            }
            if events_per_second(format!("{key}.rate.sine.amplitude"), s.amplitude)? > s.mean {
                return Err(
                    ctx.err(format!("{key}.rate.sine.amplitude"), "must not exceed mean (the rate would go negative)")
                );
            }
            match s.period.0.is_zero() {
                true => Err(ctx.err(format!("{key}.rate.sine.period"), "must be longer than zero")),
                false => Ok(()),
            }
        }
    }
}

fn watermark(
    ctx: &Ctx,
    key: &str,
    w: &config::WatermarkConfig,
    schema: &Schema,
) -> Result<(usize, WatermarkStrategy), PipelineError> {
    let field = match (&w.field, &w.ingestion_time) {
        (Some(field), None) => field,
        (None, Some(added)) => added,
        (Some(_), Some(_)) => {
            return Err(ctx.err(format!("{key}.watermark"), "either `field` or `ingestion_time`, not both"));
        }
        (None, None) => {
            return Err(ctx.err(
                format!("{key}.watermark"),
                "expected `field: <int field of epoch ms>` or `ingestion_time: <name of a field to add>`",
            ));
        }
    };
    let idx = schema.index(field).ok_or_else(|| {
        ctx.err(
            format!("{key}.watermark.field"),
            format!("unknown field `{field}` (fields: {})", schema.names().join(", ")),
        )
    })?;
    if schema.field_type(idx) != FieldType::Int {
        return Err(
            ctx.err(format!("{key}.watermark.field"), format!("`{field}` must be an int of epoch milliseconds"))
        );
    }
    let mut strategy = WatermarkStrategy::bounded_out_of_orderness(w.out_of_orderness.map_or(Duration::ZERO, |d| d.0));
    if let Some(idle) = w.idle_timeout {
        strategy = strategy.with_idle_timeout(idle.0);
    }
    if let Some(a) = &w.alignment {
        if a.group.trim().is_empty() {
            return Err(ctx.err(format!("{key}.watermark.alignment.group"), "expected a group name"));
        }
        strategy = strategy.with_alignment(a.group.clone(), a.max_drift.0);
    }
    Ok((idx, strategy))
}

fn kafka_source(ctx: &Ctx, at: &str, src: &config::Source) -> Result<KafkaSourceSpec, PipelineError> {
    let required = |v: &Option<String>, key: &str| {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ctx.err(format!("{at}.{key}"), "required for kafka sources"))
    };
    let start = match &src.start {
        None => KafkaStart::Earliest,
        Some(s) => s.parse().map_err(|e: String| ctx.err(format!("{at}.start"), e))?,
    };
    Ok(KafkaSourceSpec {
        bootstrap: required(&src.bootstrap, "bootstrap")?,
        topic: required(&src.topic, "topic")?,
        group: src.group.clone().unwrap_or_else(|| format!("weir-{}", ctx.job)),
        start,
        bounded: src.bounded.unwrap_or(false),
        properties: src.properties.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

/// Checks the step at `i` (and the steps it consumes) against the stream so
/// far, and updates `cur` to the stream after it; returns the planned step and
/// how many steps of the file it used.
fn step(ctx: &Ctx, key: &str, steps: &[Step], i: usize, cur: &mut Cursor) -> Result<(StepKind, usize), PipelineError> {
    match &steps[i] {
        Step::Dedup(d) => {
            let fields = resolve(ctx, &format!("{key}.key"), &cur.schema, &d.key.names())?;
            if d.ttl.is_some() && !cur.event_time {
                return Err(ctx.err(format!("{key}.ttl"), "a TTL needs event time: add source.watermark"));
            }
            cur.last_key = Some(fields.clone());
            Ok((StepKind::Dedup { key: fields, ttl_ms: d.ttl.map(|t| t.0.as_millis() as i64) }, 1))
        }
        Step::Filter(src) => {
            let e = Expr::compile(src, &cur.schema).map_err(|m| ctx.err(key, m))?;
            if let Some(ty) = e.result_type().filter(|t| *t != FieldType::Bool) {
                return Err(ctx.err(key, format!("a filter must be a condition, this expression is of type {ty}")));
            }
            Ok((StepKind::Filter(e), 1))
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
            cur.schema = schema;
            cur.last_key = None;
            Ok((StepKind::Select(exprs), 1))
        }
        Step::KeyBy(f) => {
            let fields = resolve(ctx, key, &cur.schema, &f.names())?;
            match steps.get(i + 1) {
                Some(Step::Window(_)) => {
                    let (kind, used) =
                        window(ctx, &format!("steps[{}].window", i + 1), steps, i + 1, cur, Some(fields))?;
                    Ok((kind, used + 1))
                }
                _ => Err(ctx.err(key, "a key_by must be followed by a window step")),
            }
        }
        Step::Window(_) => window(ctx, key, steps, i, cur, None),
        Step::Aggregate(_) | Step::Top(_) => Err(ctx.err(key, "must follow a window step")),
        Step::Anomaly(a) => anomaly(ctx, key, a, cur).map(|kind| (kind, 1)),
        // Rows pass unchanged: the schema, the event time and the last key stay.
        Step::ExternalCall(c) if c.per_record.0.is_zero() => {
            Err(ctx.err(format!("{key}.per_record"), "must be longer than zero"))
        }
        Step::ExternalCall(c) => Ok((StepKind::ExternalCall { per_record: c.per_record.0 }, 1)),
        Step::Lookup(l) => lookup(ctx, key, l, cur).map(|spec| (StepKind::Lookup(Box::new(spec)), 1)),
        Step::Join(j) => join(ctx, key, j, cur).map(|kind| (kind, 1)),
        Step::Metric(m) => metric(ctx, key, m, cur).map(|kind| (kind, 1)),
    }
}

/// Checks a metric step: a Prometheus name that is not Weir's own, a numeric
/// value field, label fields with names Prometheus takes (and not `job`, which
/// names the job).
fn metric(ctx: &Ctx, key: &str, m: &config::Metric, cur: &Cursor) -> Result<StepKind, PipelineError> {
    let prometheus_name = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !prometheus_name(&m.name) || m.name.starts_with("__") {
        return Err(ctx.err(
            format!("{key}.name"),
            format!("`{}` is not a metric name: letters, digits and _, not starting with a digit", m.name),
        ));
    }
    if m.name.starts_with("weir_") {
        return Err(ctx.err(format!("{key}.name"), "names starting with weir_ are Weir's own metrics"));
    }
    let value = resolve(ctx, &format!("{key}.value"), &cur.schema, std::slice::from_ref(&m.value))?[0];
    if !cur.schema.field_type(value).is_numeric() {
        return Err(ctx.err(
            format!("{key}.value"),
            format!("`{}` is a {}: a gauge needs a number", m.value, cur.schema.field_type(value)),
        ));
    }
    let mut labels = Vec::new();
    for (i, name) in m.labels.iter().enumerate() {
        let at = format!("{key}.labels[{i}]");
        if !prometheus_name(name) || name.starts_with("__") || name == "job" {
            return Err(ctx.err(
                at,
                format!("`{name}` cannot be a label name (letters, digits and _; not job, which names the job)"),
            ));
        }
        labels.push((name.clone(), resolve(ctx, &at, &cur.schema, std::slice::from_ref(name))?[0]));
    }
    Ok(StepKind::Metric { name: m.name.clone(), value, labels })
}

/// Checks a join step: the other source, keys of the same types on both
/// sides, event time on both, bounds that hold some time or a window, and the
/// fields it adds.
fn join(ctx: &Ctx, key: &str, j: &config::Join, cur: &mut Cursor) -> Result<StepKind, PipelineError> {
    let other_src = ctx.sources.get(&j.with).ok_or_else(|| {
        let names: Vec<&str> = ctx.sources.keys().map(String::as_str).collect();
        let names = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        ctx.err(format!("{key}.with"), format!("no source `{}` under `sources` (it has: {names})", j.with))
    })?;
    let at = format!("sources.{}", j.with);
    let other = source(ctx, &at, other_src)?;
    if !cur.event_time {
        return Err(ctx.err(key, "a join needs event time on the stream: add source.watermark"));
    }
    if other.event_time.is_none() {
        return Err(ctx.err(format!("{at}.watermark"), "a join needs event time on both sides"));
    }
    let this_key = resolve(ctx, &format!("{key}.key"), &cur.schema, &j.key.names())?;
    let other_at = if j.other_key.is_some() { format!("{key}.other_key") } else { format!("{key}.key") };
    let other_names = j.other_key.as_ref().unwrap_or(&j.key).names();
    let whose = format!("`{}`", j.with);
    let other_key = resolve_in(ctx, &other_at, &other.schema, &other_names, &whose)?;
    if this_key.len() != other_key.len() {
        return Err(ctx.err(
            other_at,
            format!("the key has {} fields on the stream and {} on `{}`", this_key.len(), other_key.len(), j.with),
        ));
    }
    for (&a, &b) in this_key.iter().zip(&other_key) {
        let (ta, tb) = (cur.schema.field_type(a), other.schema.field_type(b));
        if ta != tb {
            let (na, nb) = (&cur.schema.fields[a].0, &other.schema.fields[b].0);
            return Err(ctx.err(
                other_at,
                format!("key `{na}` is {ta} on the stream but `{nb}` is {tb} on `{}`: expected the same type", j.with),
            ));
        }
    }
    let how = join_how(ctx, key, j, cur.schema.fields.len())?;
    let picked: Vec<(String, usize)> = match &j.fields {
        Some(fields) => fields
            .iter()
            .map(|(name, field)| {
                let at = format!("{key}.fields.{name}");
                Ok((name.clone(), resolve_in(ctx, &at, &other.schema, std::slice::from_ref(field), &whose)?[0]))
            })
            .collect::<Result<_, PipelineError>>()?,
        None => (other.schema.fields.iter().enumerate())
            .map(|(i, (name, _))| match cur.schema.index(name) {
                Some(_) => (format!("{}_{name}", j.with), i),
                None => (name.clone(), i),
            })
            .collect(),
    };
    for (name, i) in &picked {
        if cur.schema.index(name).is_some() {
            return Err(match j.fields {
                Some(_) => ctx.err(format!("{key}.fields.{name}"), format!("the stream already has a field `{name}`")),
                None => ctx.err(
                    key,
                    format!("the stream already has a field `{name}`: name the fields to add with `fields: {{ name: field }}`"),
                ),
            });
        }
        cur.schema.push(name.clone(), other.schema.field_type(*i));
    }
    cur.last_key = None;
    Ok(StepKind::Join {
        with: j.with.clone(),
        other: Box::new(other),
        key: this_key,
        other_key,
        how,
        fields: picked.into_iter().map(|(_, i)| i).collect(),
    })
}

/// How a join step's rows meet: `between` for interval joins, `window` for
/// window joins (either may be `outer`); the keys of the other kind are refused.
fn join_how(ctx: &Ctx, key: &str, j: &config::Join, width: usize) -> Result<JoinHow, PipelineError> {
    let refuse = |given: bool, name: &str, kind: &str| match given {
        true => Err(ctx.err(format!("{key}.{name}"), format!("does not apply to {kind} joins"))),
        false => Ok(()),
    };
    match j.kind {
        JoinType::Interval => {
            refuse(j.window.is_some(), "window", "interval")?;
            let [lower, upper] = j
                .between
                .ok_or_else(|| ctx.err(format!("{key}.between"), "required for interval joins: `[lower, upper]`"))?;
            let bounds = weir_core::operator::interval_join::JoinBounds::new(lower.0, upper.0, false, false)
                .map_err(|e| ctx.err(format!("{key}.between"), e.to_string()))?;
            Ok(JoinHow::Interval { lower: bounds.lower, upper: bounds.upper, outer: j.outer, width })
        }
        JoinType::Window => {
            refuse(j.between.is_some(), "between", "window")?;
            let w = j.window.as_ref().ok_or_else(|| {
                ctx.err(format!("{key}.window"), "required for window joins: `{ type: tumbling, size: 1m }`")
            })?;
            if w.time == Some(WindowTime::Processing) {
                return Err(ctx.err(format!("{key}.window.time"), "window joins run on event time only"));
            }
            let assigner = assigner(ctx, &format!("{key}.window"), w)?;
            let lateness = w.allowed_lateness.map_or(Duration::ZERO, |d| d.0);
            Ok(JoinHow::Window { assigner, lateness, outer: j.outer, width })
        }
    }
}

/// Checks a lookup step: the store's URL, the key pattern's fields, fields to
/// add that the row does not have yet, and limits that can work.
fn lookup(ctx: &Ctx, key: &str, l: &config::Lookup, cur: &mut Cursor) -> Result<LookupSpec, PipelineError> {
    let store = match (&l.redis, &l.postgres) {
        (Some(redis), None) => {
            redis_url(ctx, &format!("{key}.redis.url"), &redis.url)?;
            let parts = pattern(ctx, &format!("{key}.redis.key"), &redis.key, &cur.schema)?;
            LookupStore::Redis { url: redis.url.clone(), key: parts }
        }
        (None, Some(pg)) => {
            postgres_url(ctx, &format!("{key}.postgres.url"), &pg.url)?;
            if pg.table.trim().is_empty() {
                return Err(ctx.err(format!("{key}.postgres.table"), "expected a table name"));
            }
            if pg.key.is_empty() {
                return Err(ctx.err(format!("{key}.postgres.key"), "expected `column: row_field` for each key column"));
            }
            let fields: Vec<String> = pg.key.values().cloned().collect();
            let indices = resolve(ctx, &format!("{key}.postgres.key"), &cur.schema, &fields)?;
            let key_columns = pg.key.keys().cloned().zip(indices).collect();
            LookupStore::Postgres { url: pg.url.clone(), table: pg.table.clone(), key: key_columns }
        }
        _ => return Err(ctx.err(key, "expected one store to look in: `redis` or `postgres`")),
    };
    if l.fields.is_empty() {
        return Err(ctx.err(format!("{key}.fields"), "expected at least one `field: type` to add"));
    }
    for name in l.fields.keys() {
        if cur.schema.index(name).is_some() {
            return Err(ctx.err(format!("{key}.fields.{name}"), format!("the row already has a field `{name}`")));
        }
    }
    let capacity = l.capacity.unwrap_or(100);
    if !(1..=10_000).contains(&capacity) {
        return Err(ctx.err(format!("{key}.capacity"), "expected 1 to 10000 lookups in flight"));
    }
    let timeout = l.timeout.map_or(Duration::from_secs(1), |d| d.0);
    if timeout.is_zero() {
        return Err(ctx.err(format!("{key}.timeout"), "must be longer than zero"));
    }
    let cache = match &l.cache {
        Some(c) if c.size == 0 || c.ttl.0.is_zero() => {
            return Err(ctx.err(format!("{key}.cache"), "size and ttl must be above zero (leave `cache` out for none)"));
        }
        Some(c) => Some((c.size, c.ttl.0)),
        None => None,
    };
    let failed = match &l.failed {
        Some(failed) => Some(Box::new(sink(ctx, &format!("{key}.failed"), failed, &cur.schema)?)),
        None => None,
    };
    for (name, ty) in &l.fields {
        cur.schema.push(name.clone(), *ty);
    }
    Ok(LookupSpec {
        store,
        fields: l.fields.iter().map(|(n, t)| (n.clone(), *t)).collect(),
        capacity,
        timeout,
        retries: l.retries.unwrap_or(5),
        cache,
        on_missing: l.on_missing.unwrap_or(config::OnMissing::Null),
        failed,
    })
}

fn anomaly(ctx: &Ctx, key: &str, a: &config::Anomaly, cur: &mut Cursor) -> Result<StepKind, PipelineError> {
    let field = resolve(ctx, &format!("{key}.field"), &cur.schema, std::slice::from_ref(&a.field))?[0];
    if !cur.schema.field_type(field).is_numeric() {
        return Err(ctx.err(format!("{key}.field"), format!("`{}` must be numeric", a.field)));
    }
    let keys = match (&a.key, &cur.last_key) {
        (Some(k), _) => resolve(ctx, &format!("{key}.key"), &cur.schema, &k.names())?,
        (None, Some(k)) => k.clone(),
        (None, None) => {
            return Err(ctx.err(format!("{key}.key"), "no key: set `key`, or put the step after a keyed window"));
        }
    };
    if a.history < 2 {
        return Err(ctx.err(format!("{key}.history"), "needs at least 2 previous values"));
    }
    if a.sigma.is_nan() || a.sigma <= 0.0 {
        return Err(ctx.err(format!("{key}.sigma"), "must be positive"));
    }
    for (n, t) in [("mean", FieldType::Float), ("stddev", FieldType::Float), ("anomaly", FieldType::Bool)] {
        if cur.schema.index(n).is_some() {
            return Err(ctx.err(key, format!("the stream already has a field `{n}`, which anomaly adds")));
        }
        cur.schema.push(n, t);
    }
    // The flagged rows also go to the alerts sink; every row goes on.
    let alerts = match &a.alerts {
        Some(alerts) => Some(Box::new(sink(ctx, &format!("{key}.alerts"), alerts, &cur.schema)?)),
        None => None,
    };
    Ok(StepKind::Anomaly {
        field,
        key: keys,
        history: a.history,
        sigma: a.sigma,
        only_anomalies: a.only_anomalies,
        alerts,
    })
}

/// The window's assigner from its type and durations.
fn assigner(ctx: &Ctx, key: &str, w: &config::Window) -> Result<WindowAssigner, PipelineError> {
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
    assigner.validate().map_err(|m| ctx.err(key, m))?;
    Ok(assigner)
}

fn window(
    ctx: &Ctx,
    key: &str,
    steps: &[Step],
    i: usize,
    cur: &mut Cursor,
    keys: Option<Vec<usize>>,
) -> Result<(StepKind, usize), PipelineError> {
    let Step::Window(w) = &steps[i] else { unreachable!("called on a window step") };
    let processing_time = w.time == Some(WindowTime::Processing);
    if processing_time && w.allowed_lateness.is_some() {
        return Err(ctx.err(format!("{key}.allowed_lateness"), "does not apply to processing-time windows"));
    }
    if !cur.event_time && !processing_time {
        return Err(ctx.err(
            key,
            "windows need event time: add `watermark: { field: ..., out_of_orderness: ... }` to the source, \
             or make it a processing-time window with `time: processing`",
        ));
    }
    let assigner = assigner(ctx, key, w)?;
    let lateness = w.allowed_lateness.map_or(Duration::ZERO, |d| d.0);
    let late = match &w.late {
        Some(_) if processing_time => {
            return Err(ctx.err(format!("{key}.late"), "processing-time windows have no late rows"));
        }
        Some(late) => Some(Box::new(sink(ctx, &format!("{key}.late"), late, &cur.schema)?)),
        None => None,
    };
    let next_key = format!("steps[{}]", i + 1);
    let output = match steps.get(i + 1) {
        Some(Step::Aggregate(aggs)) => {
            aggregate(ctx, &format!("{next_key}.aggregate"), aggs, cur, keys.as_deref().unwrap_or_default())?
        }
        Some(Step::Top(t)) => {
            let output = top(ctx, &format!("{next_key}.top"), t, cur)?;
            cur.last_key = keys.clone();
            output
        }
        _ => return Err(ctx.err(key, "a window must be followed by an aggregate or a top step")),
    };
    Ok((StepKind::Window { key: keys, assigner, lateness, processing_time, output, late }, 2))
}

fn aggregate(
    ctx: &Ctx,
    key: &str,
    aggs: &indexmap::IndexMap<String, String>,
    cur: &mut Cursor,
    key_fields: &[usize],
) -> Result<WindowOutput, PipelineError> {
    if aggs.is_empty() {
        return Err(ctx.err(key, "expected at least one `name: function(field)`"));
    }
    let mut schema = Schema::default();
    for &k in key_fields {
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
    cur.schema = schema;
    cur.last_key = Some((0..key_fields.len()).collect());
    Ok(WindowOutput::Aggregate(specs))
}

fn top(ctx: &Ctx, key: &str, t: &config::Top, cur: &mut Cursor) -> Result<WindowOutput, PipelineError> {
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
                return Err(ctx.err(format!("{key}.by[{j}]"), format!("unknown order `{o}`; expected asc or desc")));
            }
        };
        let idx = resolve(ctx, &format!("{key}.by[{j}]"), &cur.schema, &[field.to_string()])?[0];
        by.push((idx, desc));
    }
    let add_window_start = cur.schema.index("window_start").is_none();
    let add_window_end = cur.schema.index("window_end").is_none();
    if add_window_start {
        cur.schema.push("window_start", FieldType::Int);
    }
    if add_window_end {
        cur.schema.push("window_end", FieldType::Int);
    }
    if t.n > 1 {
        cur.schema.push("rank", FieldType::Int);
    }
    Ok(WindowOutput::Top { n: t.n, by, add_window_start, add_window_end })
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
        "approx_count_distinct" => AggKind::ApproxCountDistinct,
        other => {
            return Err(format!(
                "unknown aggregate `{other}`; expected count, sum, min, max, avg, count_distinct or approx_count_distinct"
            ));
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

/// Checks the sink at `key` for rows of `schema`.
fn sink(ctx: &Ctx, key: &str, sink: &config::Sink, schema: &Schema) -> Result<SinkPlan, PipelineError> {
    let kind = match sink {
        config::Sink::Stdout {} => SinkKind::Stdout,
        config::Sink::File { path } => {
            if path.trim().is_empty() {
                return Err(ctx.err(format!("{key}.path"), "expected a directory for the part files"));
            }
            SinkKind::File { path: path.clone() }
        }
        config::Sink::Blackhole {} => SinkKind::Blackhole,
        config::Sink::Kafka { .. } => SinkKind::Kafka(kafka_sink(ctx, key, sink, schema)?),
        config::Sink::Redis { .. } => SinkKind::Redis(redis_sink(ctx, key, sink, schema)?),
        config::Sink::Postgres { .. } => SinkKind::Postgres(postgres_sink(ctx, key, sink, schema)?),
    };
    Ok(SinkPlan { kind, schema: schema.clone() })
}

fn kafka_sink(ctx: &Ctx, key_path: &str, sink: &config::Sink, schema: &Schema) -> Result<KafkaSinkSpec, PipelineError> {
    let config::Sink::Kafka { bootstrap, topic, guarantee, key, transactional_id_prefix, properties } = sink else {
        unreachable!("called for kafka sinks")
    };
    if topic.trim().is_empty() {
        return Err(ctx.err(format!("{key_path}.topic"), "expected a topic name"));
    }
    if *guarantee == config::KafkaGuarantee::ExactlyOnce {
        needs_checkpoints(ctx, key_path)?;
    }
    let key = match key {
        Some(k) => Some(resolve(ctx, &format!("{key_path}.key"), schema, &k.names())?),
        None => None,
    };
    Ok(KafkaSinkSpec {
        bootstrap: bootstrap.clone(),
        topic: topic.clone(),
        guarantee: *guarantee,
        key,
        transactional_id_prefix: transactional_id_prefix.clone().unwrap_or_else(|| format!("weir-{}-{topic}", ctx.job)),
        properties: properties.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

/// Exactly-once output commits with checkpoints: without them it would never commit.
fn needs_checkpoints(ctx: &Ctx, key_path: &str) -> Result<(), PipelineError> {
    if ctx.checkpointing {
        return Ok(());
    }
    Err(ctx.err(
        format!("{key_path}.guarantee"),
        "exactly-once commits with checkpoints: add a `checkpointing` section (or --checkpoint-dir and \
         --checkpoint-interval), or choose another guarantee",
    ))
}

/// A `{field}` pattern, resolved against the schema.
fn pattern(ctx: &Ctx, key: &str, text: &str, schema: &Schema) -> Result<Vec<Part>, PipelineError> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let close = rest[open..].find('}').ok_or_else(|| ctx.err(key, format!("unclosed `{{` in `{text}`")))?;
        let name = &rest[open + 1..open + close];
        parts.push(Part::Field(resolve(ctx, key, schema, &[name.to_string()])?[0]));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

fn redis_sink(ctx: &Ctx, key_path: &str, sink: &config::Sink, schema: &Schema) -> Result<RedisSinkSpec, PipelineError> {
    let config::Sink::Redis { url, key, field, value, ttl } = sink else { unreachable!("called for redis sinks") };
    redis_url(ctx, &format!("{key_path}.url"), url)?;
    let key_parts = pattern(ctx, &format!("{key_path}.key"), key, schema)?;
    let field_parts = pattern(ctx, &format!("{key_path}.field"), field, schema)?;
    // A field name, or a pattern such as `{count}/{sum}`.
    let value_parts = if value.contains('{') {
        pattern(ctx, &format!("{key_path}.value"), value, schema)?
    } else {
        vec![Part::Field(resolve(ctx, &format!("{key_path}.value"), schema, std::slice::from_ref(value))?[0])]
    };
    Ok(RedisSinkSpec {
        url: url.clone(),
        key: key_parts,
        field: field_parts,
        value: value_parts,
        ttl: ttl.map(|t| t.0),
        key_text: key.clone(),
        field_text: field.clone(),
        value_text: value.clone(),
    })
}

/// A Redis URL (of a sink or a lookup), at `key`.
fn redis_url(ctx: &Ctx, key: &str, url: &str) -> Result<(), PipelineError> {
    match url.starts_with("redis://") || url.starts_with("rediss://") {
        true => Ok(()),
        false => Err(ctx.err(key, format!("expected redis://host:port, got `{url}`"))),
    }
}

/// A PostgreSQL URL (of a sink or a lookup), at `key`.
fn postgres_url(ctx: &Ctx, key: &str, url: &str) -> Result<(), PipelineError> {
    match url.starts_with("postgres://") || url.starts_with("postgresql://") {
        true => Ok(()),
        false => Err(ctx.err(key, "expected postgres://user@host:port/database")),
    }
}

fn postgres_sink(
    ctx: &Ctx,
    key_path: &str,
    sink: &config::Sink,
    schema: &Schema,
) -> Result<PostgresSinkSpec, PipelineError> {
    let config::Sink::Postgres { url, table, key, guarantee } = sink else { unreachable!("called for postgres sinks") };
    postgres_url(ctx, &format!("{key_path}.url"), url)?;
    if table.trim().is_empty() {
        return Err(ctx.err(format!("{key_path}.table"), "expected a table name"));
    }
    if *guarantee == config::PostgresGuarantee::ExactlyOnce {
        needs_checkpoints(ctx, key_path)?;
    }
    resolve(ctx, &format!("{key_path}.key"), schema, &key.names())?;
    Ok(PostgresSinkSpec {
        url: url.clone(),
        table: table.clone(),
        columns: schema.fields.clone(),
        key: key.names(),
        guarantee: *guarantee,
        job: ctx.job.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn plan(yaml: &str) -> Result<Plan, PipelineError> {
        let file = parse(Path::new("p.yaml"), yaml, &[]).expect("parses");
        check(Path::new("p.yaml"), &file, &Overrides::default())
    }

    #[test]
    fn a_file_source_is_planned_without_looking_at_the_path() {
        let p =
            plan("name: j\nsource: { type: file, path: /nowhere/at/all, fields: { a: int } }\nsink: { type: stdout }")
                .unwrap();
        assert!(matches!(&p.source.kind, SourceKind::File { path, .. } if path == "/nowhere/at/all"));
    }

    #[test]
    fn a_file_sources_line_limit_is_checked() {
        let file_source = |extra: &str| {
            plan(&format!(
                "name: j\nsource: {{ type: file, path: in, fields: {{ a: int }}{extra} }}\nsink: {{ type: stdout }}"
            ))
        };
        let max = |p: Plan| match p.source.kind {
            SourceKind::File { max_line_bytes, .. } => max_line_bytes,
            _ => unreachable!("a file source"),
        };
        assert_eq!(max(file_source("").unwrap()), DEFAULT_MAX_LINE_BYTES);
        assert_eq!(max(file_source(", max_line_bytes: 4096").unwrap()), 4096);
        let e = file_source(", max_line_bytes: 0").unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("source.max_line_bytes", "expected a number of bytes, at least 1")
        );
        let e =
            plan("name: j\nsource: { type: datagen, workload: orders, max_line_bytes: 10 }\nsink: { type: stdout }")
                .unwrap_err();
        assert_eq!((e.key.as_str(), e.message.as_str()), ("source.max_line_bytes", "only applies to file sources"));
    }

    #[test]
    fn job_names_are_one_name_under_the_checkpoint_root() {
        for (name, problem) in [("..", "`..` component"), ("'../../etc'", "`..` component"), ("a/b", "separator")] {
            let e =
                plan(&format!("name: {name}\nsource: {{ type: datagen, workload: orders }}\nsink: {{ type: stdout }}"))
                    .unwrap_err();
            assert_eq!(e.key, "name");
            assert!(e.message.starts_with("job name `") && e.message.contains(problem), "{e}");
        }
    }

    #[test]
    fn a_deep_expression_is_a_pipeline_error() {
        let deep = format!("{}amount > 1{}", "(".repeat(30_000), ")".repeat(30_000));
        let e = plan(&format!(
            "name: j\nsource: {{ type: datagen, workload: orders }}\nsteps:\n  - filter: '{deep}'\nsink: {{ type: stdout }}"
        ))
        .unwrap_err();
        assert_eq!(e.key, "steps[0].filter");
        assert!(
            e.to_string().starts_with("p.yaml: steps[0].filter: at column 65: expression nests deeper than 64"),
            "{e}"
        );
    }

    #[test]
    fn the_plan_tracks_the_schema_through_the_steps() {
        let p = plan(
            "name: j\nsource: { type: datagen, workload: orders, watermark: { field: time, out_of_orderness: 5s } }\n\
             steps:\n  - filter: amount > 100\n  - key_by: region\n  - window: { type: tumbling, size: 1m }\n  \
             - aggregate: { n: count(), total: sum(amount) }\n  - anomaly: { field: total }\nsink: { type: blackhole }",
        )
        .unwrap();
        assert_eq!(p.steps.len(), 3, "filter, key_by + window + aggregate, anomaly");
        assert!(matches!(&p.steps[1].kind, StepKind::Window { key: Some(k), .. } if k == &[1]));
        assert_eq!(
            p.output_schema().names(),
            ["region", "window_start", "window_end", "n", "total", "mean", "stddev", "anomaly"]
        );
        assert!(matches!(&p.steps[2].kind, StepKind::Anomaly { key, .. } if key == &[0]));
    }

    /// The source fields `yaml`'s plan reads, by name (orders: order_id, region, amount, time).
    fn read(yaml: &str) -> Vec<String> {
        let p = plan(yaml).unwrap();
        let names = p.source.schema.names();
        p.source_fields_read().iter().zip(names).filter(|(r, _)| **r).map(|(_, n)| n.to_string()).collect()
    }

    #[test]
    fn only_the_fields_something_reads_are_read_from_the_source() {
        let src =
            "name: j\nsource: { type: datagen, workload: orders, watermark: { field: time, out_of_orderness: 5s } }\n";
        // A windowed count reads its key, its aggregates' fields and event time; never the order id.
        let window = "  - key_by: region\n  - window: { type: tumbling, size: 1m }\n";
        let counted = format!("{src}steps:\n{window}  - aggregate: {{ n: count(), total: sum(amount) }}\n");
        assert_eq!(read(&format!("{counted}sink: {{ type: blackhole }}")), ["region", "amount", "time"]);
        // ... unless its late rows go to a sink, which gets them whole.
        let late = format!(
            "{src}steps:\n  - key_by: region\n  - window: {{ type: tumbling, size: 1m, late: {{ type: stdout }} }}\n  - aggregate: {{ n: count() }}\n"
        );
        assert_eq!(read(&format!("{late}sink: {{ type: blackhole }}")), ["order_id", "region", "amount", "time"]);
        // A filter passes its rows on: the sink reads them whole.
        let filtered = format!("{src}steps:\n  - filter: amount > 100\nsink: {{ type: blackhole }}");
        assert_eq!(read(&filtered), ["order_id", "region", "amount", "time"]);
        // A select reads only its expressions' fields, whatever comes after it.
        let selected = format!(
            "{src}steps:\n  - select: {{ cents: amount * 100, r: upper(region) }}\nsink: {{ type: blackhole }}"
        );
        assert_eq!(read(&selected), ["region", "amount", "time"]);
        // Dedup and top-N pass rows on (top-N adds the window's bounds).
        let dedup = format!(
            "{src}steps:\n  - dedup: {{ key: order_id }}\n{window}  - aggregate: {{ n: count() }}\nsink: {{ type: blackhole }}"
        );
        assert_eq!(read(&dedup), ["order_id", "region", "time"]);
        let top = format!(
            "{src}steps:\n{window}  - top: {{ n: 2, by: [amount] }}\n  - select: {{ r: region, s: window_start }}\nsink: {{ type: blackhole }}"
        );
        assert_eq!(read(&top), ["region", "amount", "time"]);
        // The anomaly flag reads its field and passes the rest on to a select.
        let anomaly = format!(
            "{counted}  - anomaly: {{ field: total }}\n  - select: {{ a: anomaly }}\nsink: {{ type: blackhole }}"
        );
        assert_eq!(read(&anomaly), ["region", "amount", "time"]);
    }

    /// How many leading fields a datagen source's rows of `yaml`'s plan have.
    fn width(yaml: &str) -> usize {
        let p = plan(yaml).unwrap();
        let projection = p.source_projection();
        assert_eq!(projection.read, p.source_fields_read());
        projection.width
    }

    #[test]
    fn rows_are_cut_after_their_last_field_read_only_where_nothing_misses_the_rest() {
        let bids = "name: j\nsource: { type: datagen, workload: bids }\n";
        let sink = "sink: { type: blackhole }";
        // q0-q2: auction and price (0 and 2) of auction, bidder, price, channel, time, extra.
        assert_eq!(width(&format!("{bids}steps:\n  - select: {{ a: auction, p: price }}\n{sink}")), 3);
        let filtered = format!("{bids}steps:\n  - filter: auction % 2 == 0\n  - select: {{ p: price * 2 }}\n{sink}");
        assert_eq!(width(&filtered), 3);
        let deduped = format!("{bids}steps:\n  - dedup: {{ key: bidder }}\n  - select: {{ a: auction }}\n{sink}");
        assert_eq!(width(&deduped), 2);
        // A window's aggregate makes rows of its own: up to event time (4).
        let timed =
            "name: j\nsource: { type: datagen, workload: bids, watermark: { field: time, out_of_orderness: 1s } }\n";
        let counted = "  - key_by: auction\n  - window: { type: tumbling, size: 10s }\n  - aggregate: { n: count() }\n";
        assert_eq!(width(&format!("{timed}steps:\n{counted}{sink}")), 5);
        // Whole rows wherever a step or a sink could miss a field left out.
        assert_eq!(width(&format!("{bids}steps:\n  - filter: auction > 3\n{sink}")), 6, "the sink reads every field");
        let top =
            "  - window: { type: tumbling, size: 10s }\n  - top: { n: 1, by: [price] }\n  - select: { a: auction }\n";
        assert_eq!(width(&format!("{timed}steps:\n{top}{sink}")), 6, "top-N keeps rows and appends bounds");
        let late = "  - key_by: auction\n  - window: { type: tumbling, size: 10s, late: { type: stdout } }\n  - aggregate: { n: count() }\n";
        assert_eq!(width(&format!("{timed}steps:\n{late}{sink}")), 6, "late rows go to a sink");
        let ingested = "name: j\nsource: { type: datagen, workload: bids, watermark: { ingestion_time: at, out_of_orderness: 1s } }\n";
        assert_eq!(
            width(&format!("{ingested}steps:\n  - select: {{ a: auction }}\n{sink}")),
            7,
            "ingestion time is appended"
        );
        let anomaly = format!(
            "{bids}steps:\n  - anomaly: {{ field: price, key: auction }}\n  - select: {{ a: anomaly }}\n{sink}"
        );
        assert_eq!(width(&anomaly), 6, "the anomaly flag appends a field");
    }

    #[test]
    fn connector_keys_are_checked_against_the_stream() {
        let e = plan(
            "name: j\nsource: { type: datagen, workload: payments }\n\
             sink: { type: redis, url: 'redis://127.0.0.1:1', key: 'p:{region}', field: '{time}', value: amount }",
        )
        .unwrap_err();
        assert_eq!(e.key, "sink.key");
        assert!(e.message.contains("unknown field `region`"), "{e}");
        let e = plan(
            "name: j\nsource: { type: kafka, bootstrap: b, topic: t, start: yesterday, fields: { a: int } }\n\
             sink: { type: stdout }",
        )
        .unwrap_err();
        assert_eq!((e.key.as_str(), e.message.contains("unknown start `yesterday`")), ("source.start", true));
    }

    #[test]
    fn exactly_once_sinks_need_checkpoints() {
        let e = plan(
            "name: j\nsource: { type: datagen, workload: orders }\n\
             sink: { type: kafka, bootstrap: b, topic: t, guarantee: exactly-once }",
        )
        .unwrap_err();
        assert_eq!(e.key, "sink.guarantee");
    }

    fn datagen_with_rate(rate: &str) -> Result<Plan, PipelineError> {
        plan(&format!("name: j\nsource: {{ type: datagen, workload: orders, rate: {rate} }}\nsink: {{ type: stdout }}"))
    }

    #[test]
    fn rate_profiles_are_planned() {
        let p = datagen_with_rate("{ steps: [{ at: 0s, rate: 1000 }, { at: 2m, rate: 0 }, { at: 3m, rate: 3000 }] }")
            .unwrap();
        let SourceKind::Datagen { rate: Some(config::Rate::Steps(steps)), .. } = &p.source.kind else { panic!() };
        assert_eq!(
            steps.iter().map(|s| (s.at.0.as_secs(), s.rate)).collect::<Vec<_>>(),
            [(0, 1000.0), (120, 0.0), (180, 3000.0)]
        );
        let p = datagen_with_rate("{ sine: { mean: 2000, amplitude: 2000, period: 10m } }").unwrap();
        assert!(
            matches!(&p.source.kind, SourceKind::Datagen { rate: Some(config::Rate::Sine(s)), .. } if s.period.0.as_secs() == 600)
        );
        let p = datagen_with_rate("2500").unwrap();
        assert!(
            matches!(&p.source.kind, SourceKind::Datagen { rate: Some(config::Rate::Constant(r)), .. } if *r == 2500.0)
        );
    }

    #[test]
    fn bad_rate_profiles_name_the_key() {
        for (rate, key, message) in [
            ("0", "source.rate", "expected a positive number of events per second"),
            ("-5", "source.rate", "expected a positive number of events per second"),
            ("{ steps: [] }", "source.rate.steps", "expected at least one step"),
            ("{ steps: [{ at: 1s, rate: 5 }] }", "source.rate.steps[0].at", "the first step must be at 0s"),
            (
                "{ steps: [{ at: 0s, rate: 5 }, { at: 2m, rate: 5 }, { at: 1m, rate: 5 }] }",
                "source.rate.steps[2].at",
                "steps must be in increasing time",
            ),
            ("{ steps: [{ at: 0s, rate: 5 }, { at: 0s, rate: 5 }] }", "source.rate.steps[1].at", "increasing time"),
            ("{ steps: [{ at: 0s, rate: 5 }, { at: 1m, rate: -1 }] }", "source.rate.steps[1].rate", "0 or more"),
            ("{ steps: [{ at: 0s, rate: 0 }] }", "source.rate.steps", "would never produce"),
            (
                "{ sine: { mean: 100, amplitude: 150, period: 1m } }",
                "source.rate.sine.amplitude",
                "must not exceed mean",
            ),
            ("{ sine: { mean: 100, amplitude: -1, period: 1m } }", "source.rate.sine.amplitude", "0 or more"),
            ("{ sine: { mean: 0, amplitude: 0, period: 1m } }", "source.rate.sine.mean", "positive"),
            ("{ sine: { mean: 100, amplitude: 50, period: 0s } }", "source.rate.sine.period", "longer than zero"),
        ] {
            let e = datagen_with_rate(rate).unwrap_err();
            assert_eq!(e.key, key, "{rate}: {e}");
            assert!(e.message.contains(message), "{rate}: {e}");
        }
    }

    #[test]
    fn an_external_call_passes_the_stream_through() {
        let p = plan(
            "name: j\nsource: { type: datagen, workload: orders, watermark: { field: time } }\n\
             steps:\n  - external_call: { per_record: 200us }\n  - key_by: region\n  \
             - window: { type: tumbling, size: 1m }\n  - aggregate: { n: count() }\nsink: { type: blackhole }",
        )
        .unwrap();
        assert!(matches!(p.steps[0].kind, StepKind::ExternalCall { per_record } if per_record.as_micros() == 200));
        assert_eq!(p.steps[0].schema.names(), ["order_id", "region", "amount", "time"]);
        let e = plan(
            "name: j\nsource: { type: datagen, workload: orders }\nsteps: [{ external_call: { per_record: 0s } }]\n\
             sink: { type: stdout }",
        )
        .unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("steps[0].external_call.per_record", "must be longer than zero")
        );
    }

    #[test]
    fn a_metric_step_names_a_gauge_its_value_and_labels_and_passes_rows_on() {
        let yaml = |metric: &str| {
            format!(
                "name: j\nsource: {{ type: datagen, workload: orders, watermark: {{ field: time }} }}\n\
                 steps:\n  - key_by: region\n  - window: {{ type: tumbling, size: 1m }}\n  \
                 - aggregate: {{ n: count() }}\n  - metric: {metric}\nsink: {{ type: blackhole }}"
            )
        };
        let p = plan(&yaml("{ name: orders, value: n, labels: [region] }")).unwrap();
        assert!(matches!(&p.steps[1].kind, StepKind::Metric { name, value: 3, labels }
            if name == "orders" && labels == &[("region".to_string(), 0)]));
        assert_eq!(p.steps[1].schema.names(), ["region", "window_start", "window_end", "n"]);
        for (metric, key, message) in [
            ("{ name: 9lives, value: n }", "steps[3].metric.name", "not a metric name"),
            ("{ name: weir_orders, value: n }", "steps[3].metric.name", "Weir's own"),
            ("{ name: orders, value: region }", "steps[3].metric.value", "a gauge needs a number"),
            ("{ name: orders, value: count }", "steps[3].metric.value", "count"),
            ("{ name: orders, value: n, labels: [job] }", "steps[3].metric.labels[0]", "not job"),
            ("{ name: orders, value: n, labels: [city] }", "steps[3].metric.labels[0]", "city"),
        ] {
            let e = plan(&yaml(metric)).unwrap_err();
            assert!(e.key.starts_with(key), "{metric}: {e}");
            assert!(e.message.contains(message), "{metric}: {e}");
        }
    }

    #[test]
    fn a_step_may_carry_its_own_parallelism_beside_its_key() {
        let yaml = |window: &str, key_by: &str| {
            format!(
                "name: j\nsource: {{ type: datagen, workload: orders, watermark: {{ field: time }} }}\n\
                 steps:\n  - filter: \"amount > 10\"\n    parallelism: 2\n{key_by}  \
                 - window: {{ type: tumbling, size: 1m }}\n    {window}\n  - aggregate: {{ n: count() }}\n\
                 sink: {{ type: blackhole }}"
            )
        };
        let p = plan(&yaml("parallelism: 4", "  - key_by: region\n")).unwrap();
        let own: Vec<Option<usize>> = p.steps.iter().map(|s| s.parallelism).collect();
        assert_eq!(own, [Some(2), Some(4)], "the filter, then key_by + window + aggregate as one");
        for (window, key_by, key, message) in [
            ("parallelism: 0", "  - key_by: region\n", "steps[2].parallelism", "at least 1"),
            ("parallelism: two", "  - key_by: region\n", "steps[2].parallelism", "at least 1"),
            ("parallelism: 999", "  - key_by: region\n", "steps[2].parallelism", "exceeds max_parallelism 128"),
            ("parallelism: 3", "", "steps[1].parallelism", "without key_by"),
        ] {
            let text = yaml(window, key_by);
            let file = parse(Path::new("p.yaml"), &text, &[]);
            let e = file.and_then(|f| check(Path::new("p.yaml"), &f, &Overrides::default())).unwrap_err();
            assert_eq!(e.key, key, "{window}: {e}");
            assert!(e.message.contains(message), "{window}: {e}");
        }
    }

    /// Orders joined with payments (or with another `sources` entry), then `steps`.
    fn joined(join: &str, other: &str) -> String {
        format!(
            "name: j\nsource: {{ type: datagen, workload: orders, watermark: {{ field: time, out_of_orderness: 5s }} }}\n\
             sources:\n  pay: {other}\n\
             steps:\n  - join: {join}\n\
             sink: {{ type: blackhole }}"
        )
    }

    const PAYMENTS: &str = "{ type: datagen, workload: payments, watermark: { field: time, out_of_orderness: 126s } }";

    #[test]
    fn a_join_adds_the_other_sides_fields_and_keeps_event_time() {
        let p = plan(&joined("{ with: pay, type: interval, key: order_id, between: [0s, 2m] }", PAYMENTS)).unwrap();
        assert_eq!(
            p.output_schema().names(),
            ["order_id", "region", "amount", "time", "pay_order_id", "pay_amount", "pay_time"],
            "every field of the other side, a taken name prefixed with the source's"
        );
        let StepKind::Join { key, other_key, how, fields, .. } = &p.steps[0].kind else { panic!() };
        assert_eq!((key.as_slice(), other_key.as_slice()), (&[0][..], &[0][..]));
        assert_eq!(how, &JoinHow::Interval { lower: 0, upper: 120_000, outer: None, width: 4 });
        assert_eq!(fields, &[0, 1, 2]);
        let p = plan(&joined(
            "{ with: pay, type: interval, key: order_id, between: [\"-5s\", 1m], fields: { paid_at: time } }",
            PAYMENTS,
        ))
        .unwrap();
        assert_eq!(p.output_schema().names(), ["order_id", "region", "amount", "time", "paid_at"]);
        let StepKind::Join { how, .. } = &p.steps[0].kind else { panic!() };
        assert_eq!(how, &JoinHow::Interval { lower: -5_000, upper: 60_000, outer: None, width: 4 });
    }

    #[test]
    fn a_window_join_takes_a_window_and_an_outer_side() {
        let p = plan(&joined(
            "{ with: pay, type: window, key: order_id, window: { type: sliding, size: 2m, slide: 1m }, outer: left }",
            PAYMENTS,
        ))
        .unwrap();
        assert_eq!(
            p.output_schema().names(),
            ["order_id", "region", "amount", "time", "pay_order_id", "pay_amount", "pay_time"]
        );
        let StepKind::Join { how, .. } = &p.steps[0].kind else { panic!() };
        let assigner = WindowAssigner::sliding(Duration::from_secs(120), Duration::from_secs(60));
        let expected =
            JoinHow::Window { assigner, lateness: Duration::ZERO, outer: Some(config::Outer::Left), width: 4 };
        assert_eq!(how, &expected);
    }

    #[test]
    fn bad_joins_are_refused_naming_the_key_and_what_was_expected() {
        let bids = "{ type: datagen, workload: bids, watermark: { field: time } }";
        let unwatermarked = "{ type: datagen, workload: payments }";
        for (join, other, key, message) in [
            (
                "{ with: nope, type: interval, key: order_id, between: [0s, 1m] }",
                PAYMENTS,
                "steps[0].join.with",
                "no source `nope` under `sources` (it has: pay)",
            ),
            (
                "{ with: pay, type: interval, key: order_id, other_key: auction, between: [0s, 1m] }",
                bids,
                "steps[0].join.other_key",
                "key `order_id` is string on the stream but `auction` is int on `pay`",
            ),
            (
                "{ with: pay, type: interval, key: order_id, between: [1m, 0s] }",
                PAYMENTS,
                "steps[0].join.between",
                "lower bound (60000 ms) is above the upper bound (0 ms)",
            ),
            (
                "{ with: pay, type: interval, key: order_id }",
                PAYMENTS,
                "steps[0].join.between",
                "required for interval joins",
            ),
            (
                "{ with: pay, type: interval, key: order_id, between: [0s, 1m] }",
                unwatermarked,
                "sources.pay.watermark",
                "event time on both sides",
            ),
            (
                "{ with: pay, type: interval, key: customer, between: [0s, 1m] }",
                PAYMENTS,
                "steps[0].join.key",
                "unknown field `customer`",
            ),
            (
                "{ with: pay, type: interval, key: order_id, between: [0s, 1m], fields: { region: amount } }",
                PAYMENTS,
                "steps[0].join.fields.region",
                "already has a field `region`",
            ),
            (
                "{ with: pay, type: interval, key: order_id, between: [0s, 1m], fields: { x: nope } }",
                PAYMENTS,
                "steps[0].join.fields.x",
                "unknown field `nope`",
            ),
            (
                "{ with: pay, type: window, key: order_id }",
                PAYMENTS,
                "steps[0].join.window",
                "required for window joins",
            ),
            (
                "{ with: pay, type: window, key: order_id, window: { type: tumbling, size: 1m }, between: [0s, 1m] }",
                PAYMENTS,
                "steps[0].join.between",
                "does not apply to window joins",
            ),
            (
                "{ with: pay, type: window, key: order_id, window: { type: tumbling, gap: 1m } }",
                PAYMENTS,
                "steps[0].join.window.gap",
                "does not apply to tumbling windows",
            ),
        ] {
            let e = plan(&joined(join, other)).unwrap_err();
            assert_eq!(e.key, key, "{join}: {e}");
            assert!(e.message.contains(message), "{join}: {e}");
        }
        let middle = "{ with: pay, type: window, key: order_id, window: { type: tumbling, size: 1m }, outer: middle }";
        let e = parse(Path::new("p.yaml"), &joined(middle, PAYMENTS), &[]).unwrap_err();
        assert_eq!(e.key, "steps[0].join.outer", "{e}");
        assert!(e.message.contains("unknown variant `middle`, expected one of `left`, `right`, `full`"), "{e}");
        let e =
            plan(&joined("{ with: pay, type: interval, key: order_id, other_key: id, between: [0s, 1m] }", PAYMENTS))
                .unwrap_err();
        assert!(e.message.contains("unknown field `id` (`pay` has: order_id, amount, time)"), "{e}");
        let twice = "name: j\nsource: { type: datagen, workload: orders, watermark: { field: time } }\n\
                     sources:\n  pay: { type: datagen, workload: payments, watermark: { field: time } }\n\
                     steps:\n  - join: { with: pay, type: interval, key: order_id, between: [0s, 1m] }\n  \
                     - join: { with: pay, type: interval, key: order_id, between: [0s, 1m] }\nsink: { type: blackhole }";
        let e = plan(twice).unwrap_err();
        assert_eq!(e.key, "steps[1].join", "{e}");
        assert!(e.message.contains("already has a field `pay_order_id`: name the fields to add"), "{e}");
        let files = |dir: &str| {
            format!(
                "name: j\nsource: {{ type: file, path: a, fields: {{ k: string, t: int }}, dead_letter: bad, watermark: {{ field: t }} }}\n\
                 sources:\n  b: {{ type: file, path: b, fields: {{ k: string, t: int }}, dead_letter: {dir}, watermark: {{ field: t }} }}\n\
                 steps:\n  - join: {{ with: b, type: interval, key: k, between: [0s, 1s] }}\nsink: {{ type: blackhole }}"
            )
        };
        assert!(plan(&files("bad-b")).is_ok());
        let e = plan(&files("bad")).unwrap_err();
        assert_eq!(e.key, "sources.b.dead_letter", "{e}");
        assert!(e.message.contains("is source.dead_letter too"), "{e}");
        let unused = "name: j\nsource: { type: datagen, workload: orders }\nsources:\n  pay: { type: datagen, workload: payments }\nsink: { type: blackhole }";
        let e = plan(unused).unwrap_err();
        assert_eq!((e.key.as_str(), e.message.as_str()), ("sources.pay", "no join step uses this source"));
        let e = plan(&joined(
            "{ with: pay, type: interval, key: order_id, between: [0s, 1m] }",
            "{ type: datagen, workload: payments, count: 5, path: x }",
        ))
        .unwrap_err();
        assert_eq!((e.key.as_str(), e.message.as_str()), ("sources.pay.path", "only applies to file sources"));
    }
}
