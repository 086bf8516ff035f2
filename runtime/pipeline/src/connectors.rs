//! Pipeline-file wiring of the external connectors (DESIGN.md, "Connector
//! keys"): the Kafka source, and the Kafka, Redis and PostgreSQL sinks, with
//! their keys checked against the stream's fields before anything runs.

use std::sync::Arc;
use std::time::Duration;

use weir::core::WatermarkStrategy;
use weir::prelude::{DataStream, StreamEnv};
use weir_kafka::StartAt;
use weir_kafka::sink::{Guarantee as KafkaGuarantee, KafkaSink, KafkaSinkConfig};
use weir_kafka::source::{KafkaSource, KafkaSourceConfig};
use weir_postgres::postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use weir_postgres::{ColumnType, Guarantee as PgGuarantee, PostgresSink, PostgresSinkConfig};
use weir_redis::{HashWrite, RedisSink, RedisSinkConfig};

use crate::compile::{Ctx, resolve};
use crate::config::{self, PipelineFile};
use crate::error::PipelineError;
use crate::records::{DeadLetters, Format};
use crate::value::{FieldType, Row, Schema, Value};

/// How long sinks keep retrying an unreachable database before the job fails.
const RETRY_FOR: Duration = Duration::from_secs(120);

pub(crate) fn kafka_source_config(ctx: &Ctx, p: &PipelineFile) -> Result<KafkaSourceConfig, PipelineError> {
    let src = &p.source;
    let required = |v: &Option<String>, key: &str| {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ctx.err(format!("source.{key}"), "required for kafka sources"))
    };
    let start = match &src.start {
        None => StartAt::Earliest,
        Some(s) => s.parse().map_err(|e: String| ctx.err("source.start", e))?,
    };
    Ok(KafkaSourceConfig {
        bootstrap: required(&src.bootstrap, "bootstrap")?,
        topic: required(&src.topic, "topic")?,
        group: src.group.clone().unwrap_or_else(|| format!("weir-{}", p.name)),
        start,
        bounded: src.bounded.unwrap_or(false),
        properties: src.properties.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

pub(crate) fn kafka_source(
    env: &StreamEnv,
    config: KafkaSourceConfig,
    schema: &Schema,
    format: Format,
    event_time: Option<(usize, WatermarkStrategy)>,
    dead_letters: impl Fn(usize) -> DeadLetters + Send + Sync + 'static,
) -> DataStream<Row> {
    let shared = Arc::new(schema.clone());
    let decode: weir_kafka::source::Decode<Row> = Arc::new(move |bytes: &[u8]| format.decode(&shared, bytes));
    let event_time = event_time.map(|(idx, strategy)| {
        let extract: weir_kafka::source::Extract<Row> =
            Arc::new(move |row: &Row| row[idx].as_int().unwrap_or(i64::MIN));
        (extract, strategy)
    });
    env.add_source("kafka", move |info| {
        let mut letters = dead_letters(info.index);
        let on_malformed = Box::new(move |m: weir_kafka::source::Malformed<'_>| {
            let mut origin = serde_json::Map::new();
            origin.insert("topic".into(), m.topic.into());
            origin.insert("partition".into(), m.partition.into());
            origin.insert("offset".into(), m.offset.into());
            let place = format!("{}/{}@{}", m.topic, m.partition, m.offset);
            letters.record(&place, origin, m.payload, m.error)
        });
        Box::new(KafkaSource::new(config.clone(), info, decode.clone(), event_time.clone(), on_malformed))
    })
}

pub(crate) fn kafka_sink(
    ctx: &Ctx,
    key_path: &str,
    sink: &config::Sink,
    stream: DataStream<Row>,
    schema: &Arc<Schema>,
) -> Result<String, PipelineError> {
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
        Some(k) => Some(Arc::new(resolve(ctx, &format!("{key_path}.key"), schema, &k.names())?)),
        None => None,
    };
    let config = KafkaSinkConfig {
        bootstrap: bootstrap.clone(),
        topic: topic.clone(),
        guarantee: match guarantee {
            config::KafkaGuarantee::AtLeastOnce => KafkaGuarantee::AtLeastOnce,
            config::KafkaGuarantee::ExactlyOnce => KafkaGuarantee::ExactlyOnce,
        },
        transactional_id_prefix: transactional_id_prefix.clone().unwrap_or_else(|| format!("weir-{}-{topic}", ctx.job)),
        properties: properties.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let s = schema.clone();
    let encode: weir_kafka::sink::Encode<Row> = Arc::new(move |row: &Row| {
        let mut value = Vec::new();
        s.write_json(row, &mut value);
        let key =
            key.as_ref().map(|k| k.iter().map(|&i| row[i].to_string()).collect::<Vec<_>>().join("|").into_bytes());
        Ok((key, value))
    });
    let description = format!("kafka topic `{topic}` at {bootstrap} ({guarantee:?})");
    stream.try_sink("kafka", move |info| KafkaSink::new(config.clone(), info, encode.clone()));
    Ok(description)
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

/// A `{field}` pattern, compiled against the schema.
enum Part {
    Text(String),
    Field(usize),
}

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

fn expand(parts: &[Part], row: &Row) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Field(i) => out.push_str(&row[*i].to_string()),
        }
    }
    out
}

pub(crate) fn redis_sink(
    ctx: &Ctx,
    key_path: &str,
    sink: &config::Sink,
    stream: DataStream<Row>,
    schema: &Arc<Schema>,
) -> Result<String, PipelineError> {
    let config::Sink::Redis { url, key, field, value, ttl } = sink else { unreachable!("called for redis sinks") };
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err(ctx.err(format!("{key_path}.url"), format!("expected redis://host:port, got `{url}`")));
    }
    let key_parts = pattern(ctx, &format!("{key_path}.key"), key, schema)?;
    let field_parts = pattern(ctx, &format!("{key_path}.field"), field, schema)?;
    // A field name, or a pattern such as `{count}/{sum}`.
    let value_parts = if value.contains('{') {
        pattern(ctx, &format!("{key_path}.value"), value, schema)?
    } else {
        vec![Part::Field(resolve(ctx, &format!("{key_path}.value"), schema, std::slice::from_ref(value))?[0])]
    };
    let to_write: weir_redis::ToWrite<Row> = Arc::new(move |row: &Row| HashWrite {
        key: expand(&key_parts, row),
        field: expand(&field_parts, row),
        value: expand(&value_parts, row),
    });
    let config = RedisSinkConfig { url: url.clone(), ttl: ttl.map(|t| t.0), retry_for: RETRY_FOR };
    let description = format!("redis at {url}: HSET {key} {field} <{value}>");
    stream.try_sink("redis", move |_| RedisSink::new(config.clone(), to_write.clone()));
    Ok(description)
}

pub(crate) fn postgres_sink(
    ctx: &Ctx,
    key_path: &str,
    sink: &config::Sink,
    stream: DataStream<Row>,
    schema: &Arc<Schema>,
) -> Result<String, PipelineError> {
    let config::Sink::Postgres { url, table, key, guarantee } = sink else { unreachable!("called for postgres sinks") };
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(ctx.err(format!("{key_path}.url"), "expected postgres://user@host:port/database"));
    }
    if table.trim().is_empty() {
        return Err(ctx.err(format!("{key_path}.table"), "expected a table name"));
    }
    if *guarantee == config::PostgresGuarantee::ExactlyOnce {
        needs_checkpoints(ctx, key_path)?;
    }
    resolve(ctx, &format!("{key_path}.key"), schema, &key.names())?;
    let columns = schema
        .fields
        .iter()
        .map(|(n, t)| {
            let ty = match t {
                FieldType::Bool => ColumnType::Boolean,
                FieldType::Int => ColumnType::BigInt,
                FieldType::Float => ColumnType::Double,
                FieldType::String => ColumnType::Text,
            };
            (n.clone(), ty)
        })
        .collect();
    let config = PostgresSinkConfig {
        url: url.clone(),
        table: table.clone(),
        columns,
        key: key.names(),
        guarantee: match guarantee {
            config::PostgresGuarantee::Upsert => PgGuarantee::Upsert,
            config::PostgresGuarantee::ExactlyOnce => PgGuarantee::ExactlyOnce,
        },
        job: ctx.job.to_string(),
        retry_for: RETRY_FOR,
    };
    config.validate().map_err(|e| ctx.err(format!("{key_path}.key"), e))?;
    let description = format!("postgres table `{table}` ({guarantee:?})");
    stream.try_sink("postgres", move |info| PostgresSink::<Row, Value>::new(config.clone(), info));
    Ok(description)
}

/// Values bind as the column types the sink creates (ints widen to floats).
impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Bool(b) => b.to_sql(ty, out),
            Value::Int(i) if *ty == Type::FLOAT8 => (*i as f64).to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Float(f) => f.to_sql(ty, out),
            Value::Str(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [Type::BOOL, Type::INT8, Type::INT4, Type::FLOAT8, Type::TEXT, Type::VARCHAR].contains(ty)
    }

    to_sql_checked!();
}
