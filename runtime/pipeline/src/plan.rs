//! A checked pipeline: what [`check`](crate::check::check) proves about a
//! pipeline file, in the form [`build`](crate::build) turns into streams.
//!
//! Every field name is resolved to its index in the schema of the stream at
//! that point, every expression is compiled and typed, every connector's keys
//! are checked and gathered in a spec of its own. A `Plan` is plain data: it
//! holds no stream, opens no file and links no connector, so the operator
//! validates a StreamJob with it on its own machine without touching a path
//! or a broker named in the spec.

use std::path::PathBuf;
use std::time::Duration;

use weir_core::WatermarkStrategy;
use weir_core::window::WindowAssigner;

use crate::config::{KafkaGuarantee, OnError, OnMissing, Outer, PostgresGuarantee, Rate, Workload};
use crate::expr::Expr;
use crate::ops::AggSpec;
use crate::records::Format;
use crate::value::{FieldType, Schema};

/// A pipeline file, checked.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub parallelism: usize,
    pub max_parallelism: u32,
    /// The exchanges' buffer timeout.
    pub buffer_timeout: std::time::Duration,
    /// Two-phase window aggregation (see `weir::prelude::StreamEnv::set_local_aggregation`).
    pub local_aggregation: bool,
    /// Whether the job takes checkpoints.
    pub checkpointing: bool,
    /// Where keyed state lives.
    pub state: StatePlan,
    /// `state.incremental`: incremental checkpoints (unset: the backend's default).
    pub incremental: Option<bool>,
    /// `checkpointing.compression`: how snapshots store keyed state (unset: zstd).
    pub compression: Option<weir_core::checkpoint::compression::Compression>,
    pub source: SourcePlan,
    pub steps: Vec<StepPlan>,
    pub sink: SinkPlan,
}

/// The keyed state backend of a checked pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatePlan {
    Heap,
    /// On disk under `dir`, within `memory` bytes.
    Disk {
        dir: std::path::PathBuf,
        memory: u64,
    },
}

impl Plan {
    /// The schema of the rows that reach the sink.
    pub fn output_schema(&self) -> &Schema {
        &self.sink.schema
    }

    /// Which fields of the source's rows are ever read: by a step, by a sink
    /// (the main one, or a step's `late`, `alerts` or `failed` one), or as
    /// event time. A source may leave the others null instead of making them
    /// (projection pushdown: a datagen order's id is text formatted per
    /// record, and a windowed count never looks at it). Computed backwards,
    /// step by step, from the sink, which reads every field it gets.
    pub fn source_fields_read(&self) -> Vec<bool> {
        let source_width = self.source.schema.fields.len();
        let mut read = vec![true; self.sink.schema.fields.len()];
        for (i, step) in self.steps.iter().enumerate().rev() {
            let width = if i == 0 { source_width } else { self.steps[i - 1].schema.fields.len() };
            if read.len() != step.schema.fields.len() {
                // Not a shape this analysis knows: read everything.
                return vec![true; source_width];
            }
            read = step.kind.fields_read(width, &read);
        }
        if read.len() != source_width {
            return vec![true; source_width];
        }
        if let Some((time, _)) = self.source.event_time {
            read[time] = true;
        }
        read
    }

    /// What a datagen source must make of its rows: the fields something
    /// reads ([`Plan::source_fields_read`]; the others may be null), and how
    /// many leading fields a row must have at all. A row is cut after the
    /// last field read only where nothing could miss the rest: every step
    /// before the first that makes rows of its own (a `select`, a window's
    /// aggregate without a `late` sink) passes its rows on as they are and
    /// keeps none in state (a filter, a dedup), and the source appends no
    /// ingestion time. Anything else gets whole rows: a step that appends a
    /// field (a join, a lookup, the anomaly flag, top-N's bounds) finds it
    /// at its schema's index, and rows held in state restore whole into a
    /// changed pipeline. Shorter rows are less to allocate, write and drop:
    /// q0-q2 read two of a bid's six fields.
    pub fn source_projection(&self) -> Projection {
        let read = self.source_fields_read();
        let whole = read.len();
        let needed = read.iter().rposition(|&r| r).map_or(0, |i| i + 1);
        let cut = !self.source.ingestion_time
            && self.steps.iter().find_map(|step| match &step.kind {
                StepKind::Filter(_) | StepKind::Dedup { .. } => None,
                StepKind::Select(_) | StepKind::Window { output: WindowOutput::Aggregate(_), late: None, .. } => {
                    Some(true)
                }
                _ => Some(false),
            }) == Some(true);
        // (No such step: the sink gets source rows, and reads them whole.)
        Projection { read, width: if cut { needed } else { whole } }
    }
}

/// What a source makes of its rows (projection pushdown; see [`Plan::source_projection`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Projection {
    /// Whether field `i` is ever read; a field that is not may be null.
    pub read: Vec<bool>,
    /// How many leading fields a row has; the fields after them are left out.
    pub width: usize,
}

impl Projection {
    /// Every field of `width`, read.
    pub fn whole(width: usize) -> Projection {
        Projection { read: vec![true; width], width }
    }

    /// Whether field `i` is read.
    pub fn reads(&self, i: usize) -> bool {
        self.read.get(i).copied().unwrap_or(true)
    }
}

impl StepKind {
    /// Which of the step's `width` input fields it reads, given which of its
    /// output fields are read after it. A step that passes its input on
    /// (with fields appended, or fewer rows) reads what is read of that
    /// prefix, besides its own fields; a step with a sink of its own reads
    /// everything that sink gets.
    fn fields_read(&self, width: usize, out: &[bool]) -> Vec<bool> {
        let mut read = vec![false; width];
        let passes_on = |read: &mut [bool]| read.iter_mut().zip(out).for_each(|(r, o)| *r |= *o);
        let mark = |read: &mut [bool], fields: &[usize]| fields.iter().for_each(|&i| read[i] = true);
        match self {
            StepKind::Dedup { key, .. } => {
                passes_on(&mut read);
                mark(&mut read, key);
            }
            StepKind::Filter(e) => {
                passes_on(&mut read);
                e.mark_fields(&mut read);
            }
            StepKind::Select(exprs) => exprs.iter().for_each(|e| e.mark_fields(&mut read)),
            StepKind::Window { key, output, late, .. } => {
                mark(&mut read, key.as_deref().unwrap_or_default());
                match output {
                    WindowOutput::Aggregate(specs) => specs.iter().filter_map(|s| s.field).for_each(|i| read[i] = true),
                    WindowOutput::Top { by, .. } => {
                        passes_on(&mut read);
                        by.iter().for_each(|&(i, _)| read[i] = true);
                    }
                }
                if late.is_some() {
                    read.fill(true);
                }
            }
            StepKind::Anomaly { field, key, alerts, .. } => {
                passes_on(&mut read);
                mark(&mut read, key);
                read[*field] = true;
                if alerts.is_some() {
                    read.fill(true);
                }
            }
            StepKind::ExternalCall { .. } => passes_on(&mut read),
            StepKind::Metric { value, labels, .. } => {
                passes_on(&mut read);
                read[*value] = true;
                labels.iter().for_each(|&(_, i)| read[i] = true);
            }
            StepKind::Lookup(spec) => {
                passes_on(&mut read);
                match &spec.store {
                    LookupStore::Redis { key, .. } => key.iter().for_each(|p| {
                        if let Part::Field(i) = p {
                            read[*i] = true;
                        }
                    }),
                    LookupStore::Postgres { key, .. } => key.iter().for_each(|&(_, i)| read[i] = true),
                }
                if spec.failed.is_some() {
                    read.fill(true);
                }
            }
            StepKind::Join { key, .. } => {
                passes_on(&mut read);
                mark(&mut read, key);
            }
        }
        read
    }
}

/// Where the rows come from, and their schema.
#[derive(Clone, Debug)]
pub struct SourcePlan {
    pub kind: SourceKind,
    pub schema: Schema,
    /// The event-time field and how watermarks follow it.
    pub event_time: Option<(usize, WatermarkStrategy)>,
    /// Whether the last field of `schema` is the ingestion time, added by
    /// the source after it decoded the rest.
    pub ingestion_time: bool,
    /// How file and Kafka records are decoded.
    pub format: Format,
    pub on_error: OnError,
    pub dead_letter: Option<PathBuf>,
}

impl SourcePlan {
    /// The fields the source decodes (all of them but an ingestion time).
    pub fn decoded_schema(&self) -> Schema {
        let mut schema = self.schema.clone();
        if self.ingestion_time {
            schema.fields.pop();
        }
        schema
    }
}

#[derive(Clone, Debug)]
pub enum SourceKind {
    Datagen {
        workload: Workload,
        count: Option<u64>,
        /// Events per second over all subtasks, constant or a profile; unthrottled when `None`.
        rate: Option<Rate>,
    },
    /// A file or a directory of files, as given (not looked at until the job is built).
    File {
        path: String,
        /// Lines longer than this (without their line break) are malformed.
        max_line_bytes: usize,
    },
    Kafka(KafkaSourceSpec),
}

/// Where a partition new to the job starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaStart {
    Earliest,
    Latest,
    Committed,
    /// The first record at or after this timestamp (epoch ms).
    Timestamp(i64),
}

impl std::str::FromStr for KafkaStart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(KafkaStart::Earliest),
            "latest" => Ok(KafkaStart::Latest),
            "committed" => Ok(KafkaStart::Committed),
            other => match other.strip_prefix("timestamp:").map(|t| t.trim().parse::<i64>()) {
                Some(Ok(ms)) if ms >= 0 => Ok(KafkaStart::Timestamp(ms)),
                _ => Err(format!(
                    "unknown start `{other}`; expected earliest, latest, committed or timestamp:<epoch ms>"
                )),
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct KafkaSourceSpec {
    pub bootstrap: String,
    pub topic: String,
    pub group: String,
    pub start: KafkaStart,
    pub bounded: bool,
    pub properties: Vec<(String, String)>,
}

/// One step of the pipeline, with the schema of its output.
#[derive(Clone, Debug)]
pub struct StepPlan {
    pub kind: StepKind,
    pub schema: Schema,
    /// The step's own parallelism (`parallelism:` beside its key); `None`: the job's.
    pub parallelism: Option<usize>,
}

#[derive(Clone, Debug)]
pub enum StepKind {
    /// Drops rows whose key was seen (within `ttl_ms` of event time, when set).
    Dedup {
        key: Vec<usize>,
        ttl_ms: Option<i64>,
    },
    Filter(Expr),
    /// One expression per output field.
    Select(Vec<Expr>),
    /// A window over the rows of each key (of the whole stream, in one subtask, without a key).
    Window {
        key: Option<Vec<usize>>,
        assigner: WindowAssigner,
        lateness: Duration,
        /// On the wall clock instead of event time.
        processing_time: bool,
        output: WindowOutput,
        /// The sink of late rows (with the window's input schema).
        late: Option<Box<SinkPlan>>,
    },
    /// The 3-sigma flag over a key's last values.
    Anomaly {
        field: usize,
        key: Vec<usize>,
        history: usize,
        sigma: f64,
        only_anomalies: bool,
        /// A second sink for the flagged rows.
        alerts: Option<Box<SinkPlan>>,
    },
    /// Rows pass unchanged; each subtask spends at least `per_record` on each, asleep.
    ExternalCall {
        per_record: Duration,
    },
    /// Rows pass unchanged; each sets the gauge `name`, labelled by the
    /// `labels` fields (label name, field index), to its `value` field.
    Metric {
        name: String,
        value: usize,
        labels: Vec<(String, usize)>,
    },
    /// Fields added from an outside store, looked up asynchronously.
    Lookup(Box<LookupSpec>),
    /// A join with another source: each row meets the other side's rows with
    /// an equal key as `how` says, and goes on with `fields` of the other row
    /// appended.
    Join {
        with: String,
        other: Box<SourcePlan>,
        key: Vec<usize>,
        other_key: Vec<usize>,
        how: JoinHow,
        fields: Vec<usize>,
    },
}

/// A checked lookup step.
#[derive(Clone, Debug)]
pub struct LookupSpec {
    pub store: LookupStore,
    /// The hash fields or table columns, added to the row in this order.
    pub fields: Vec<(String, FieldType)>,
    pub capacity: usize,
    pub timeout: Duration,
    pub retries: u32,
    /// (entries, time to live) of the per-subtask cache.
    pub cache: Option<(usize, Duration)>,
    pub on_missing: OnMissing,
    /// Where rows whose lookup failed go (the job fails without it).
    pub failed: Option<Box<SinkPlan>>,
}

/// Where a lookup step looks.
#[derive(Clone, Debug)]
pub enum LookupStore {
    /// The hash whose key is the pattern filled in from the row.
    Redis { url: String, key: Vec<Part> },
    /// The row of `table` whose key columns equal the row's fields (column, field index).
    Postgres { url: String, table: String, key: Vec<(String, usize)> },
}

/// How a join step's rows meet.
#[derive(Clone, Debug, PartialEq)]
pub enum JoinHow {
    /// The other side's rows whose time is within `lower..=upper` ms of the
    /// row's; with `outer`, the kept sides' rows that met none too, once the
    /// watermark passes the last time one could (their missing side null, as
    /// for window joins). `width` is the stream row's.
    Interval { lower: i64, upper: i64, outer: Option<Outer>, width: usize },
    /// The other side's rows in the same window, when it fires; with `outer`,
    /// unmatched rows too, their missing side null (but for the key, which a
    /// row of the other side alone fills in). `width` is the stream row's.
    Window { assigner: WindowAssigner, lateness: Duration, outer: Option<Outer>, width: usize },
}

/// What a window emits when it fires.
#[derive(Clone, Debug)]
pub enum WindowOutput {
    /// The key's fields, `window_start`, `window_end`, then one field per aggregate.
    Aggregate(Vec<AggSpec>),
    /// The best `n` rows by `by` (field index, descending).
    Top { n: usize, by: Vec<(usize, bool)>, add_window_start: bool, add_window_end: bool },
}

/// Where rows go, and the schema of those rows.
#[derive(Clone, Debug)]
pub struct SinkPlan {
    pub kind: SinkKind,
    pub schema: Schema,
}

#[derive(Clone, Debug)]
pub enum SinkKind {
    Stdout,
    /// A directory of `part-*.jsonl` files.
    File {
        path: String,
    },
    Blackhole,
    Kafka(KafkaSinkSpec),
    Redis(RedisSinkSpec),
    Postgres(PostgresSinkSpec),
}

impl SinkPlan {
    /// Where the output goes, for people.
    pub fn describe(&self) -> String {
        match &self.kind {
            SinkKind::Stdout => "standard output".to_string(),
            SinkKind::File { path } => format!("{path}/part-*.jsonl"),
            SinkKind::Blackhole => "nowhere (blackhole)".to_string(),
            SinkKind::Kafka(k) => format!("kafka topic `{}` at {} ({:?})", k.topic, k.bootstrap, k.guarantee),
            SinkKind::Redis(r) => {
                format!("redis at {}: HSET {} {} <{}>", r.url, r.key_text, r.field_text, r.value_text)
            }
            SinkKind::Postgres(p) => format!("postgres table `{}` ({:?})", p.table, p.guarantee),
        }
    }
}

#[derive(Clone, Debug)]
pub struct KafkaSinkSpec {
    pub bootstrap: String,
    pub topic: String,
    pub guarantee: KafkaGuarantee,
    /// The message key: these fields joined by `|`.
    pub key: Option<Vec<usize>>,
    pub transactional_id_prefix: String,
    pub properties: Vec<(String, String)>,
}

/// Text with `{field}` placeholders, resolved against the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Field(usize),
}

#[derive(Clone, Debug)]
pub struct RedisSinkSpec {
    pub url: String,
    pub key: Vec<Part>,
    pub field: Vec<Part>,
    pub value: Vec<Part>,
    pub ttl: Option<Duration>,
    /// The patterns as written, for people.
    pub key_text: String,
    pub field_text: String,
    pub value_text: String,
}

#[derive(Clone, Debug)]
pub struct PostgresSinkSpec {
    pub url: String,
    pub table: String,
    /// Every field of the rows, as columns.
    pub columns: Vec<(String, FieldType)>,
    pub key: Vec<String>,
    pub guarantee: PostgresGuarantee,
    /// The job's name (exactly-once commits are recorded under it).
    pub job: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_start_positions_parse_and_name_the_choices() {
        assert_eq!("earliest".parse(), Ok(KafkaStart::Earliest));
        assert_eq!("timestamp:1700000000000".parse(), Ok(KafkaStart::Timestamp(1_700_000_000_000)));
        let e = "yesterday".parse::<KafkaStart>().unwrap_err();
        assert!(e.contains("earliest, latest, committed or timestamp"), "{e}");
    }
}
