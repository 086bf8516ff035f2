//! The external connectors of pipeline files (DESIGN.md, "Connector keys"):
//! the Kafka source, and the Kafka, Redis and PostgreSQL sinks, built from the
//! specs [`check`](crate::check::check) made.
//!
//! Each connector is behind a cargo feature of this crate (`kafka`, `redis`,
//! `postgres`). A build without one refuses a pipeline that uses it, naming the
//! key and the feature, when the job is built.

use std::path::Path;
#[cfg(any(feature = "redis", feature = "postgres"))]
use std::time::Duration;

use weir::prelude::{DataStream, StreamEnv};

use crate::error::PipelineError;
use crate::plan::{KafkaSinkSpec, KafkaSourceSpec, PostgresSinkSpec, RedisSinkSpec, SourcePlan};
use crate::records::DeadLetters;
use crate::value::{Row, Schema};

/// How long sinks keep retrying an unreachable database before the job fails.
#[cfg(any(feature = "redis", feature = "postgres"))]
const RETRY_FOR: Duration = Duration::from_secs(120);

/// The error of a pipeline that uses a connector this build does not have.
#[allow(dead_code)] // unused when every connector is compiled in
pub(crate) fn not_built(file: &Path, key: &str, connector: &str) -> PipelineError {
    PipelineError::new(
        file,
        format!("{key}.type"),
        format!("this build of weir has no {connector} connector (cargo feature `{connector}` of weir-pipeline)"),
    )
}

#[cfg(feature = "kafka")]
pub(crate) fn kafka_source(
    _file: &Path,
    _key: &str,
    env: &StreamEnv,
    spec: &KafkaSourceSpec,
    src: &SourcePlan,
    dead_letters: impl Fn(usize) -> DeadLetters + Send + Sync + 'static,
) -> Result<DataStream<Row>, PipelineError> {
    use std::sync::Arc;

    use weir_kafka::StartAt;
    use weir_kafka::source::{KafkaSource, KafkaSourceConfig};

    use crate::plan::KafkaStart;

    let config = KafkaSourceConfig {
        bootstrap: spec.bootstrap.clone(),
        topic: spec.topic.clone(),
        group: spec.group.clone(),
        start: match spec.start {
            KafkaStart::Earliest => StartAt::Earliest,
            KafkaStart::Latest => StartAt::Latest,
            KafkaStart::Committed => StartAt::Committed,
            KafkaStart::Timestamp(ms) => StartAt::Timestamp(ms),
        },
        bounded: spec.bounded,
        properties: spec.properties.clone(),
    };
    let (schema, format) = (Arc::new(src.decoded_schema()), src.format);
    let decode: weir_kafka::source::Decode<Row> = Arc::new(move |bytes: &[u8]| format.decode(&schema, bytes));
    let event_time = src.event_time.clone().map(|(idx, strategy)| {
        let extract: weir_kafka::source::Extract<Row> =
            Arc::new(move |row: &Row| row[idx].as_int().unwrap_or(i64::MIN));
        (extract, strategy)
    });
    Ok(env.add_source("kafka", move |info| {
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
    }))
}

#[cfg(not(feature = "kafka"))]
pub(crate) fn kafka_source(
    file: &Path,
    key: &str,
    _env: &StreamEnv,
    _spec: &KafkaSourceSpec,
    _src: &SourcePlan,
    _dead_letters: impl Fn(usize) -> DeadLetters + Send + Sync + 'static,
) -> Result<DataStream<Row>, PipelineError> {
    Err(not_built(file, key, "kafka"))
}

#[cfg(feature = "kafka")]
pub(crate) fn kafka_sink(
    _file: &Path,
    _key: &str,
    spec: &KafkaSinkSpec,
    stream: DataStream<Row>,
    schema: std::sync::Arc<Schema>,
) -> Result<(), PipelineError> {
    use std::sync::Arc;

    use weir_kafka::sink::{Guarantee, KafkaSink, KafkaSinkConfig};

    use crate::config::KafkaGuarantee;

    let config = KafkaSinkConfig {
        bootstrap: spec.bootstrap.clone(),
        topic: spec.topic.clone(),
        guarantee: match spec.guarantee {
            KafkaGuarantee::AtLeastOnce => Guarantee::AtLeastOnce,
            KafkaGuarantee::ExactlyOnce => Guarantee::ExactlyOnce,
        },
        transactional_id_prefix: spec.transactional_id_prefix.clone(),
        properties: spec.properties.clone(),
    };
    let key = spec.key.clone();
    let encode: weir_kafka::sink::Encode<Row> = Arc::new(move |row: &Row| {
        let mut value = Vec::new();
        schema.write_json(row, &mut value);
        let key =
            key.as_ref().map(|k| k.iter().map(|&i| row[i].to_string()).collect::<Vec<_>>().join("|").into_bytes());
        Ok((key, value))
    });
    stream.try_sink("kafka", move |info| KafkaSink::new(config.clone(), info, encode.clone()));
    Ok(())
}

#[cfg(not(feature = "kafka"))]
pub(crate) fn kafka_sink(
    file: &Path,
    key: &str,
    _spec: &KafkaSinkSpec,
    _stream: DataStream<Row>,
    _schema: std::sync::Arc<Schema>,
) -> Result<(), PipelineError> {
    Err(not_built(file, key, "kafka"))
}

#[cfg(feature = "redis")]
pub(crate) fn redis_sink(
    _file: &Path,
    _key: &str,
    spec: &RedisSinkSpec,
    stream: DataStream<Row>,
) -> Result<(), PipelineError> {
    use std::sync::Arc;

    use weir_redis::{HashWrite, RedisSink, RedisSinkConfig};

    let (key, field, value) = (spec.key.clone(), spec.field.clone(), spec.value.clone());
    let to_write: weir_redis::ToWrite<Row> = Arc::new(move |row: &Row| HashWrite {
        key: expand(&key, row),
        field: expand(&field, row),
        value: expand(&value, row),
    });
    let config = RedisSinkConfig { url: spec.url.clone(), ttl: spec.ttl, retry_for: RETRY_FOR };
    stream.try_sink("redis", move |_| RedisSink::new(config.clone(), to_write.clone()));
    Ok(())
}

#[cfg(not(feature = "redis"))]
pub(crate) fn redis_sink(
    file: &Path,
    key: &str,
    _spec: &RedisSinkSpec,
    _stream: DataStream<Row>,
) -> Result<(), PipelineError> {
    Err(not_built(file, key, "redis"))
}

/// A pattern's text with its fields' values of `row`.
pub(crate) fn expand(parts: &[crate::plan::Part], row: &Row) -> String {
    use crate::plan::Part;
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Field(i) => out.push_str(&row[*i].to_string()),
        }
    }
    out
}

#[cfg(feature = "postgres")]
pub(crate) fn postgres_sink(
    _file: &Path,
    _key: &str,
    spec: &PostgresSinkSpec,
    stream: DataStream<Row>,
) -> Result<(), PipelineError> {
    use weir_postgres::{ColumnType, Guarantee, PostgresSink, PostgresSinkConfig};

    use crate::config::PostgresGuarantee;
    use crate::value::{FieldType, Value};

    let columns = spec
        .columns
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
        url: spec.url.clone(),
        table: spec.table.clone(),
        columns,
        key: spec.key.clone(),
        guarantee: match spec.guarantee {
            PostgresGuarantee::Upsert => Guarantee::Upsert,
            PostgresGuarantee::ExactlyOnce => Guarantee::ExactlyOnce,
        },
        job: spec.job.clone(),
        retry_for: RETRY_FOR,
    };
    stream.try_sink("postgres", move |info| PostgresSink::<Row, Value>::new(config.clone(), info));
    Ok(())
}

#[cfg(not(feature = "postgres"))]
pub(crate) fn postgres_sink(
    file: &Path,
    key: &str,
    _spec: &PostgresSinkSpec,
    _stream: DataStream<Row>,
) -> Result<(), PipelineError> {
    Err(not_built(file, key, "postgres"))
}

/// Values bind as the column types the sink creates (ints widen to floats).
#[cfg(feature = "postgres")]
mod to_sql {
    use weir_postgres::postgres::types::{IsNull, ToSql, Type, to_sql_checked};

    use crate::value::Value;

    impl ToSql for Value {
        fn to_sql(
            &self,
            ty: &Type,
            out: &mut bytes::BytesMut,
        ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
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
}
