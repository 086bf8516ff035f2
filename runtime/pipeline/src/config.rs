//! The pipeline file format (DESIGN.md, "Pipeline files"), as typed structs.
//!
//! Loading goes YAML text -> YAML value -> `--set` overrides applied by dotted
//! path -> typed [`PipelineFile`], through `serde_path_to_error` so that every
//! error names the key at fault. Unknown keys are errors everywhere.

use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use crate::error::PipelineError;
use crate::value::FieldType;

/// A duration written as `500ms`, `10s`, `1m`, `1h` (or combinations such as `1m 30s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

use weir_api::parse_duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub name: String,
    pub parallelism: Option<usize>,
    pub max_parallelism: Option<u32>,
    /// The longest a record waits in a partly filled batch between steps (Flink's
    /// `execution.buffer-timeout`); 0 sends every batch at once.
    pub buffer_timeout: Option<Dur>,
    /// Whether window aggregates are combined per key before the key
    /// exchange (true by default; the results are the same either way).
    pub local_aggregation: Option<bool>,
    pub checkpointing: Option<Checkpointing>,
    pub storage: Option<Storage>,
    /// Where keyed state lives (`state: { backend: disk, dir: ..., memory: 256MiB }`).
    pub state: Option<State>,
    pub source: Source,
    /// Further sources, by name, for `join` steps to join the stream with.
    #[serde(default)]
    pub sources: IndexMap<String, Source>,
    #[serde(default)]
    pub steps: Vec<Step>,
    pub sink: Sink,
    /// The `parallelism` each step may carry beside its key (`- window: {...}`
    /// then `parallelism: 4`), as Flink's per-operator `setParallelism`; one
    /// entry per step. Taken out of the steps before they are read.
    #[serde(skip)]
    pub step_parallelism: Vec<Option<usize>>,
}

/// A size written as `256MiB`, `1GiB`, `512MB` (see [`weir_api::parse_size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        weir_api::parse_size(&s).map(Size).map_err(serde::de::Error::custom)
    }
}

/// `state`: the keyed state backend.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    #[serde(default)]
    pub backend: Backend,
    /// Where the disk backend keeps its files (a folder of its own is made under it).
    pub dir: Option<String>,
    /// The disk backend's memory budget.
    pub memory: Option<Size>,
    /// Whether checkpoints store only what changed since the one before
    /// (default: with the disk backend, yes; on the heap, no).
    pub incremental: Option<bool>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    #[default]
    Heap,
    Disk,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpointing {
    pub interval: Dur,
    #[serde(default)]
    pub mode: CheckpointMode,
    pub dir: Option<String>,
    /// Where savepoints go, when not under `dir`.
    pub savepoint_dir: Option<String>,
    pub timeout: Option<Dur>,
    pub min_pause: Option<Dur>,
    pub retained: Option<u32>,
    /// How snapshots store keyed state: `zstd` (the default) or `none`.
    pub compression: Option<weir_core::checkpoint::compression::Compression>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointMode {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// The int field of epoch milliseconds that is the rows' event time...
    pub field: Option<String>,
    /// ...or ingestion time: a field of this name is added to the rows, set to
    /// the wall clock as the source reads them, and is their event time.
    pub ingestion_time: Option<String>,
    pub out_of_orderness: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    /// Pause this source while its watermark is further ahead of its group's
    /// slowest than `max_drift` (sources feeding one join, typically).
    pub alignment: Option<Alignment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alignment {
    pub group: String,
    pub max_drift: Dur,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Orders,
    Payments,
    Bids,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Count, log and skip the record (and write it to the dead-letter file, if any).
    #[default]
    Skip,
    /// Fail the job.
    Fail,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    Datagen,
    File,
    Kafka,
}

/// The source. One struct for all types (rather than a tagged enum) so that
/// errors inside it keep their full key path; [`crate::compile`] checks that
/// only the keys of the chosen `type` are set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(rename = "type")]
    pub kind: SourceType,
    pub watermark: Option<WatermarkConfig>,
    // datagen
    pub workload: Option<Workload>,
    pub count: Option<u64>,
    pub rate: Option<Rate>,
    // file
    pub path: Option<String>,
    /// The longest line, in bytes (without its line break); longer ones are malformed.
    pub max_line_bytes: Option<usize>,
    // file and kafka
    pub format: Option<String>,
    pub fields: Option<IndexMap<String, FieldType>>,
    #[serde(default)]
    pub on_error: OnError,
    pub dead_letter: Option<String>,
    // kafka
    pub bootstrap: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub start: Option<String>,
    pub bounded: Option<bool>,
    /// Further librdkafka consumer properties.
    pub properties: Option<IndexMap<String, String>>,
}

/// `source.rate`: events per second over all subtasks, constant (a number) or
/// a profile over the stream's time, `{ steps: [{ at: 0s, rate: 1000 }, ...] }`
/// or `{ sine: { mean: 2000, amplitude: 1000, period: 10m } }`.
#[derive(Clone, Debug, PartialEq)]
pub enum Rate {
    Constant(f64),
    Steps(Vec<RateStep>),
    Sine(Sine),
}

/// One step of a rate profile: the rate from `at` on.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateStep {
    pub at: Dur,
    pub rate: f64,
}

/// A sine rate profile: `mean + amplitude * sin(2π t / period)`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sine {
    pub mean: f64,
    pub amplitude: f64,
    pub period: Dur,
}

/// The profile forms of [`Rate`], one key each (as steps are).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RateProfileForm {
    Steps(Vec<RateStep>),
    Sine(Sine),
}

/// A number, or a map read as [`RateProfileForm`] through the same
/// deserializer, so that errors inside a profile keep their key path
/// (`source.rate.steps[1].at`).
impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl<'de> serde::de::Visitor<'de> for RateVisitor {
            type Value = Rate;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("events per second, `{ steps: [{ at: 0s, rate: N }, ...] }` or `{ sine: { mean, amplitude, period } }`")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Rate, E> {
                Ok(Rate::Constant(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Rate, E> {
                Ok(Rate::Constant(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Rate, E> {
                Ok(Rate::Constant(v as f64))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Rate, A::Error> {
                Ok(match RateProfileForm::deserialize(serde::de::value::MapAccessDeserializer::new(map))? {
                    RateProfileForm::Steps(steps) => Rate::Steps(steps),
                    RateProfileForm::Sine(sine) => Rate::Sine(sine),
                })
            }
        }
        d.deserialize_any(RateVisitor)
    }
}

/// A key: one field name or a list of them.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum Fields {
    One(String),
    Many(Vec<String>),
}

impl Fields {
    pub fn names(&self) -> Vec<String> {
        match self {
            Fields::One(f) => vec![f.clone()],
            Fields::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Dedup(Dedup),
    Filter(String),
    Select(IndexMap<String, String>),
    KeyBy(Fields),
    Window(Window),
    Aggregate(IndexMap<String, String>),
    Top(Top),
    Anomaly(Anomaly),
    ExternalCall(ExternalCall),
    Join(Join),
    Lookup(Lookup),
    Metric(Metric),
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Dedup(_) => "dedup",
            Step::Filter(_) => "filter",
            Step::Select(_) => "select",
            Step::KeyBy(_) => "key_by",
            Step::Window(_) => "window",
            Step::Aggregate(_) => "aggregate",
            Step::Top(_) => "top",
            Step::Anomaly(_) => "anomaly",
            Step::ExternalCall(_) => "external_call",
            Step::Join(_) => "join",
            Step::Lookup(_) => "lookup",
            Step::Metric(_) => "metric",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dedup {
    pub key: Fields,
    /// Forget a key this long (event time) after it was first seen; forever when absent.
    pub ttl: Option<Dur>,
}

/// A join of the stream with a source of `sources` (flat, like [`Source`],
/// to keep key paths in errors).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// The other side: a name under `sources`.
    pub with: String,
    #[serde(rename = "type")]
    pub kind: JoinType,
    /// The key: these fields of the stream...
    pub key: Fields,
    /// ...equal to these of the other side (the same names when absent).
    pub other_key: Option<Fields>,
    /// `interval`: the other side's time relative to the stream's row, both
    /// ends inclusive: `[0s, 2m]`, `["-5s", 5s]`.
    pub between: Option<[SignedDur; 2]>,
    /// `window`: the windows both sides' rows meet in, as on a window step.
    pub window: Option<Window>,
    /// `window`: also the rows without a match in their window, from the stream
    /// (`left`), the other side (`right`) or both (`full`); inner when absent.
    pub outer: Option<Outer>,
    /// The other side's fields to add, `new_name: field`; when absent, all of
    /// them, a name the stream already has taking the prefix `<with>_`.
    pub fields: Option<IndexMap<String, String>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JoinType {
    /// Each row meets the other side's rows of the same key within `between` of its time.
    Interval,
    /// Rows of both sides with the same key in the same window meet when the window fires.
    Window,
}

/// Which unmatched rows an outer window join keeps.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outer {
    Left,
    Right,
    Full,
}

/// Enriches each row from an outside store, asynchronously: many lookups in
/// flight at once, each with a timeout and retries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    /// A Redis hash per row: `{ url: redis://host:port, key: "customer:{customer_id}" }`.
    pub redis: Option<RedisLookup>,
    /// A table row per row: `{ url: postgres://..., table: customers, key: { id: customer_id } }`.
    pub postgres: Option<PostgresLookup>,
    /// The hash fields (or table columns) to add to the row, with their
    /// types: `{ name: string, tier: int }`.
    pub fields: IndexMap<String, FieldType>,
    /// Lookups in flight per subtask (100).
    pub capacity: Option<usize>,
    /// How long one attempt may take (1s).
    pub timeout: Option<Dur>,
    /// Attempts after the first, 100 ms apart and doubling (5).
    pub retries: Option<u32>,
    /// Answers kept per subtask, by key: `{ size: 10000, ttl: 1m }`; none when absent.
    pub cache: Option<LookupCache>,
    /// A row whose key is not there: `null` (its fields null, the default),
    /// `drop` it, or `fail` the job.
    pub on_missing: Option<OnMissing>,
    /// Where a row goes, as it came, when its lookup still fails after the
    /// retries; without it the job fails with the reason.
    pub failed: Option<Box<Sink>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisLookup {
    pub url: String,
    /// The key of the row's hash: text with `{field}`s of the row.
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresLookup {
    pub url: String,
    pub table: String,
    /// The table's key columns, each with the row field it must equal: `{ id: customer_id }`.
    pub key: IndexMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupCache {
    pub size: usize,
    pub ttl: Dur,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    Null,
    Drop,
    Fail,
}

/// A duration that may be negative: `-5s`, `2m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedDur(pub i64);

impl<'de> Deserialize<'de> for SignedDur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let (sign, magnitude) = match s.trim().strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, s.trim()),
        };
        let d = parse_duration(magnitude).map_err(serde::de::Error::custom)?;
        let ms = i64::try_from(d.as_millis()).map_err(|_| serde::de::Error::custom(format!("`{s}` is too long")))?;
        Ok(SignedDur(sign * ms))
    }
}

/// A stand-in for a synchronous call to another service per record (a test
/// and benchmark aid): rows pass unchanged, each subtask spends `per_record`
/// on each of them, asleep.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalCall {
    pub per_record: Dur,
}

/// A gauge for Prometheus: each row sets `name{job, <labels>...}` to its
/// `value` (the JobManager's `/metrics`); rows pass unchanged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    /// A numeric field of the row.
    pub value: String,
    /// Fields whose values label the gauge (one series per distinct values).
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WindowType {
    Tumbling,
    Sliding,
    Session,
}

/// A window step (flat, like [`Source`], to keep key paths in errors).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    #[serde(rename = "type")]
    pub kind: WindowType,
    pub size: Option<Dur>,
    pub slide: Option<Dur>,
    pub gap: Option<Dur>,
    pub allowed_lateness: Option<Dur>,
    /// `event` (the default: the watermark fires windows) or `processing`
    /// (the wall clock does, as records arrive).
    pub time: Option<WindowTime>,
    /// Where rows too late for every window they belong to go (Flink's
    /// `sideOutputLateData`), as they came in; counted and dropped without it.
    pub late: Option<Box<Sink>>,
}

/// What a window's time is.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WindowTime {
    Event,
    Processing,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Top {
    #[serde(default = "one")]
    pub n: usize,
    /// Sort keys, best first: `count desc`, `auction` (ascending).
    pub by: Vec<String>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anomaly {
    /// The numeric field to watch.
    pub field: String,
    /// How many previous windows of the key form the baseline.
    #[serde(default = "ten")]
    pub history: usize,
    /// Flag values more than this many standard deviations from the baseline mean.
    #[serde(default = "three")]
    pub sigma: f64,
    /// Key of the series; by default the key of the preceding window.
    pub key: Option<Fields>,
    /// Emit only the flagged rows.
    #[serde(default)]
    pub only_anomalies: bool,
    /// A second sink that receives the flagged rows (the main path gets every row).
    pub alerts: Option<Box<Sink>>,
}

fn ten() -> usize {
    10
}

fn three() -> f64 {
    3.0
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Sink {
    Stdout {},
    File {
        path: String,
    },
    Blackhole {},
    Kafka {
        bootstrap: String,
        topic: String,
        #[serde(default)]
        guarantee: KafkaGuarantee,
        /// The message key: these fields, joined by `|` (no key when absent).
        key: Option<Fields>,
        /// Exactly-once: transactional ids are `<prefix>-<subtask>` (default `weir-<job>-<topic>`).
        transactional_id_prefix: Option<String>,
        /// Further librdkafka producer properties.
        properties: Option<IndexMap<String, String>>,
    },
    Redis {
        url: String,
        /// The hash's key, a pattern such as `order_monitor:{region}`.
        key: String,
        /// The field within the hash, a pattern such as `{window_start}`.
        field: String,
        /// The field of the row whose value is stored.
        value: String,
        /// Expire keys this long after their last write.
        ttl: Option<Dur>,
    },
    Postgres {
        url: String,
        table: String,
        key: Fields,
        #[serde(default)]
        guarantee: PostgresGuarantee,
    },
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaGuarantee {
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresGuarantee {
    #[default]
    Upsert,
    ExactlyOnce,
}

/// Reads `path`, applies `--set` overrides, and checks the file's shape.
pub fn load(path: &Path, overrides: &[String]) -> Result<PipelineFile, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::new(path, "", format!("cannot read: {e}")))?;
    parse(path, &text, overrides)
}

/// Parses pipeline text (`path` is only used in messages).
pub fn parse(path: &Path, text: &str, overrides: &[String]) -> Result<PipelineFile, PipelineError> {
    let mut doc: Yaml =
        serde_yaml_ng::from_str(text).map_err(|e| PipelineError::new(path, "", format!("not valid YAML: {e}")))?;
    if !doc.is_mapping() {
        return Err(PipelineError::new(path, "", "expected a mapping with name, source, steps and sink"));
    }
    for o in overrides {
        apply_override(&mut doc, o).map_err(|m| PipelineError::new(path, o.split('=').next().unwrap_or(""), m))?;
    }
    let step_parallelism = take_step_parallelism(&mut doc).map_err(|(key, m)| PipelineError::new(path, key, m))?;
    // Through JSON: its deserializer reads `- dedup: {...}` (a one-key map) as the
    // enum variant `dedup`, where the YAML value deserializer expects a YAML tag.
    let doc = serde_json::to_value(&doc).map_err(|e| PipelineError::new(path, "", format!("unsupported YAML: {e}")))?;
    let mut file: PipelineFile = serde_path_to_error::deserialize(doc).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        PipelineError::new(path, key, e.into_inner().to_string())
    })?;
    file.step_parallelism = step_parallelism;
    Ok(file)
}

/// Takes each step's `parallelism` out of it (so the step reads as the
/// one-key map of its kind), checking that it is a whole number of at least 1.
fn take_step_parallelism(doc: &mut Yaml) -> Result<Vec<Option<usize>>, (String, String)> {
    let Some(steps) = doc.get_mut("steps").and_then(Yaml::as_sequence_mut) else { return Ok(Vec::new()) };
    let mut taken = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter_mut().enumerate() {
        let value = match step.as_mapping_mut() {
            Some(map) if map.len() > 1 => map.remove("parallelism"),
            _ => None,
        };
        let parallelism = match value {
            None => None,
            Some(v) => match v.as_u64() {
                Some(p) if p >= 1 => Some(p as usize),
                _ => return Err((format!("steps[{i}].parallelism"), "must be a whole number of at least 1".into())),
            },
        };
        taken.push(parallelism);
    }
    Ok(taken)
}

/// Applies `a.b[2].c=value` (value parsed as YAML) to the document.
fn apply_override(doc: &mut Yaml, assignment: &str) -> Result<(), String> {
    let (path, value) =
        assignment.split_once('=').ok_or_else(|| format!("--set `{assignment}`: expected PATH=VALUE"))?;
    let value: Yaml = serde_yaml_ng::from_str(value).map_err(|e| format!("--set value `{value}`: {e}"))?;
    let mut node = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => {
                let idx = rest.trim_end_matches(']').parse::<usize>().map_err(|_| format!("bad index in `{part}`"))?;
                (n, Some(idx))
            }
            None => (*part, None),
        };
        if name.is_empty() {
            return Err(format!("--set `{path}`: empty key"));
        }
        let last = i == parts.len() - 1 && index.is_none();
        let map = node.as_mapping_mut().ok_or_else(|| format!("--set `{path}`: `{name}` is not inside a mapping"))?;
        if last {
            map.insert(Yaml::String(name.into()), value);
            return Ok(());
        }
        node = map.entry(Yaml::String(name.into())).or_insert_with(|| Yaml::Mapping(Default::default()));
        if let Some(idx) = index {
            let seq = node.as_sequence_mut().ok_or_else(|| format!("--set `{path}`: `{name}` is not a list"))?;
            let len = seq.len();
            node = seq.get_mut(idx).ok_or_else(|| format!("--set `{path}`: `{name}` has {len} entries"))?;
            if i == parts.len() - 1 {
                *node = value;
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: order-monitor
parallelism: 2
source:
  type: datagen
  workload: orders
  count: 1000
  watermark: { field: time, out_of_orderness: 5s }
steps:
  - dedup: { key: order_id, ttl: 10m }
  - key_by: region
  - window: { type: tumbling, size: 1m }
  - aggregate: { count: count(), amount: sum(amount) }
sink: { type: file, path: ./out/x }
"#;

    fn err(text: &str, overrides: &[&str]) -> String {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        parse(Path::new("p.yaml"), text, &o).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_design_example() {
        let p = parse(Path::new("p.yaml"), GOOD, &[]).unwrap();
        assert_eq!(p.steps.len(), 4);
        assert_eq!((p.source.kind, p.source.count), (SourceType::Datagen, Some(1000)));
        let Step::Aggregate(a) = &p.steps[3] else { panic!() };
        assert_eq!(a.keys().collect::<Vec<_>>(), vec!["count", "amount"]);
    }

    #[test]
    fn overrides_apply_by_dotted_path() {
        let o = vec!["source.count=42".to_string(), "steps[2].window.size=10s".to_string()];
        let p = parse(Path::new("p.yaml"), GOOD, &o).unwrap();
        assert_eq!(p.source.count, Some(42));
        let Step::Window(w) = &p.steps[2] else { panic!() };
        assert_eq!(w.size, Some(Dur(Duration::from_secs(10))));
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let e = err(GOOD, &["source.cuont=5"]);
        assert!(e.starts_with("p.yaml: source"), "{e}");
        assert!(e.contains("unknown field `cuont`"), "{e}");
        let e = err(GOOD, &["steps[2].window.size=1x"]);
        assert!(e.contains("steps[2].window.size: invalid duration `1x`"), "{e}");
        let e = err(GOOD, &["source.watermark.out_of_orderness=soon"]);
        assert!(e.contains("source.watermark.out_of_orderness: invalid duration `soon`"), "{e}");
        let e = err(GOOD, &["parallelism=two"]);
        assert!(e.contains("parallelism") && e.contains("invalid type"), "{e}");
        let e = err(GOOD, &["source.type=carrier-pigeon"]);
        assert!(e.contains("unknown variant `carrier-pigeon`"), "{e}");
        let e = err("name: x\n", &[]);
        assert!(e.contains("missing field `source`"), "{e}");
        let e = err("[1, 2]", &[]);
        assert!(e.contains("expected a mapping"), "{e}");
    }

    #[test]
    fn a_rate_is_a_number_or_a_profile_with_errors_at_their_keys() {
        let rate = |r: &str| parse(Path::new("p.yaml"), GOOD, &[format!("source.rate={r}")]).map(|p| p.source.rate);
        assert_eq!(rate("1500").unwrap(), Some(Rate::Constant(1500.0)));
        assert_eq!(rate("2.5").unwrap(), Some(Rate::Constant(2.5)));
        let steps = rate("{ steps: [{ at: 0s, rate: 1000 }, { at: 2m, rate: 3000 }] }").unwrap();
        let at = |s| Dur(Duration::from_secs(s));
        assert_eq!(
            steps,
            Some(Rate::Steps(vec![RateStep { at: at(0), rate: 1000.0 }, RateStep { at: at(120), rate: 3000.0 }]))
        );
        let sine = rate("{ sine: { mean: 2000, amplitude: 1000, period: 10m } }").unwrap();
        assert_eq!(sine, Some(Rate::Sine(Sine { mean: 2000.0, amplitude: 1000.0, period: at(600) })));
        for (r, expected) in [
            (
                "{ steps: [{ at: 0s, rate: 1 }, { at: soon, rate: 2 }] }",
                "source.rate.steps[1].at: invalid duration `soon`",
            ),
            (
                "{ steps: [{ at: 0s, rate: 1, ramp: 2 }] }",
                "source.rate.steps[0].ramp: unknown field `ramp`, expected `at` or `rate`",
            ),
            ("{ steps: [{ rate: 1 }] }", "source.rate.steps[0]: missing field `at`"),
            ("{ sine: { mean: 1, amplitude: 1 } }", "source.rate.sine: missing field `period`"),
            ("{ ramp: { from: 1 } }", "source.rate.ramp: unknown variant `ramp`, expected `steps` or `sine`"),
            ("fast", "source.rate: invalid type: string \"fast\", expected events per second"),
        ] {
            let e = rate(r).unwrap_err().to_string();
            assert!(e.contains(expected), "{r}: {e}");
        }
    }
}
