//! The `lookup` step: fields added to each row from an outside store, fetched
//! through async I/O (`DataStream::async_wait`), with an optional cache per
//! subtask. The store is a Redis hash (the row's `key` pattern filled in,
//! `HMGET key fields...`) or a PostgreSQL table row (its key columns equal to
//! the row's fields, `SELECT columns ... WHERE key = ...`).
//!
//! Either way the answer is text, parsed as each field's declared type (a
//! value that does not parse fails the attempt, naming the key and field). A
//! key with no hash or row is missing: its row gets nulls, is dropped, or fails
//! the job, as `on_missing` says. Failures and timeouts are retried by the
//! async operator, which fails the job with the reason when the retries run out.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol_str::SmolStr;
use weir::prelude::{AsyncFunction, AsyncOptions, DataStream, OutputTag, ResultFuture};

use crate::config::OnMissing;
use crate::error::PipelineError;
use crate::plan::{LookupSpec, LookupStore};
use crate::value::{FieldType, Row, Value};

/// The answer of a store: the fields' text (`None` for one the store lacks),
/// `None` when the key is missing.
type Answer = Result<Option<Vec<Option<String>>>, String>;

/// Adds the lookup's fields to the rows of `stream`; refused when this build
/// has no client for the lookup's store. With `failed:`, also the rows whose
/// lookup failed for good, as they came.
pub(crate) fn lookup(
    file: &Path,
    key: &str,
    spec: &LookupSpec,
    stream: DataStream<Row>,
) -> Result<(DataStream<Row>, Option<DataStream<Row>>), PipelineError> {
    let store = store_name(spec);
    if !(cfg!(feature = "redis") && store == "redis" || cfg!(feature = "postgres") && store == "postgres") {
        return Err(crate::connectors::not_built(file, key, store));
    }
    #[cfg(feature = "postgres")]
    if let LookupStore::Postgres { url, table, key: columns } = &spec.store {
        let query = postgres_query(table, columns, &spec.fields);
        weir_postgres::lookup::check(url, &query)
            .map_err(|e| PipelineError::new(file, format!("{key}.postgres"), e))?;
    }
    let options = AsyncOptions {
        capacity: spec.capacity,
        timeout: spec.timeout,
        retries: spec.retries,
        retry_delay: Duration::from_millis(100),
        ordered: true,
    };
    let function = LookupFn { spec: Arc::new(spec.clone()), client: None, cache: None };
    if spec.failed.is_none() {
        return Ok((stream.async_wait(options, function), None));
    }
    let tag = OutputTag::new("lookup-failed");
    let rows = stream.async_wait_or_side_output(options, function, &tag);
    let failed = rows.side_output(&tag);
    Ok((rows, Some(failed)))
}

/// The lookup function of one subtask (each clone opens its own connections
/// and keeps its own cache on first use).
#[derive(Clone)]
struct LookupFn {
    spec: Arc<LookupSpec>,
    client: Option<Arc<Client>>,
    cache: Option<Arc<Mutex<Cache>>>,
}

/// A pool of connections to the lookup's store.
enum Client {
    #[cfg(feature = "redis")]
    /// The pool and the hash fields to ask for (made once, not per row).
    Redis(weir_redis::lookup::RedisLookup, Arc<[String]>),
    #[cfg(feature = "postgres")]
    Postgres(weir_postgres::lookup::PostgresLookup),
}

// Without one of the store features, some arms and variables are unused.
#[cfg_attr(
    not(all(feature = "redis", feature = "postgres")),
    allow(unused_variables, unreachable_code, unreachable_patterns)
)]
impl Client {
    fn start(spec: &LookupSpec) -> Result<Self, String> {
        let workers = spec.capacity.min(16);
        let started: Result<Self, weir::core::TaskError> = match &spec.store {
            #[cfg(feature = "redis")]
            LookupStore::Redis { url, .. } => {
                let fields: Arc<[String]> = spec.fields.iter().map(|(n, _)| n.clone()).collect();
                weir_redis::lookup::RedisLookup::start(url, workers).map(|pool| Client::Redis(pool, fields))
            }
            #[cfg(feature = "postgres")]
            LookupStore::Postgres { url, table, key } => {
                let query = postgres_query(table, key, &spec.fields);
                weir_postgres::lookup::PostgresLookup::start(url, query, workers).map(Client::Postgres)
            }
            // A store this build has no client for (refused when the job is built).
            #[allow(unreachable_patterns)]
            _ => return Err("lookup: this build has no client for the store".into()),
        };
        started.map_err(|e| e.to_string())
    }

    /// Asks the store for `row`'s fields; `reply` gets the answer on another thread.
    fn ask(&self, spec: &LookupSpec, row: &Row, reply: Box<dyn FnOnce(Answer) + Send>) {
        match (self, &spec.store) {
            #[cfg(feature = "redis")]
            (Client::Redis(pool, fields), LookupStore::Redis { key, .. }) => {
                pool.hmget(
                    crate::connectors::expand(key, row),
                    fields.clone(),
                    Box::new(move |answer| reply(answer.map(|v| (!v.iter().all(Option::is_none)).then_some(v)))),
                );
            }
            #[cfg(feature = "postgres")]
            (Client::Postgres(pool), LookupStore::Postgres { key, .. }) => {
                use weir_postgres::lookup::Param;
                let params = key
                    .iter()
                    .map(|&(_, i)| match &row[i] {
                        Value::Null => Param::Null,
                        Value::Bool(b) => Param::Bool(*b),
                        Value::Int(n) => Param::Int(*n),
                        Value::Float(f) => Param::Float(*f),
                        Value::Str(s) => Param::Text(s.to_string()),
                    })
                    .collect();
                pool.get(params, reply);
            }
            // A client is started for its own store only.
            _ => reply(Err("lookup: the client does not match the store".into())),
        }
    }
}

/// What a PostgreSQL lookup reads: `fields` of the row of `table` whose key columns match.
#[cfg(feature = "postgres")]
fn postgres_query(
    table: &str,
    key: &[(String, usize)],
    fields: &[(String, FieldType)],
) -> weir_postgres::lookup::LookupQuery {
    weir_postgres::lookup::LookupQuery {
        table: table.to_string(),
        key: key.iter().map(|(column, _)| column.clone()).collect(),
        columns: fields.iter().map(|(name, _)| name.clone()).collect(),
    }
}

/// The row's key in the store, as text: the cache's key and the messages'.
fn key_text(spec: &LookupSpec, row: &Row) -> String {
    match &spec.store {
        LookupStore::Redis { key, .. } => crate::connectors::expand(key, row),
        LookupStore::Postgres { key, .. } => {
            let values: Vec<String> = key.iter().map(|&(ref column, i)| format!("{column}={:?}", row[i])).collect();
            values.join(", ")
        }
    }
}

impl AsyncFunction<Row, Row> for LookupFn {
    fn invoke(&mut self, row: &Row, result: ResultFuture<Row>) {
        let key = key_text(&self.spec, row);
        if self.cache.is_none() {
            self.cache = self.spec.cache.map(|(size, ttl)| Arc::new(Mutex::new(Cache::new(size, ttl))));
        }
        if let Some(found) = self.cache.as_ref().and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).get(&key)) {
            return result.complete(finish(&self.spec, &key, row, found));
        }
        let client = match &self.client {
            Some(client) => client.clone(),
            None => match Client::start(&self.spec) {
                Ok(client) => self.client.insert(Arc::new(client)).clone(),
                Err(e) => return result.complete(Err(e)),
            },
        };
        let (spec, cache, row2) = (self.spec.clone(), self.cache.clone(), row.clone());
        client.ask(
            &self.spec,
            row,
            Box::new(move |answer| {
                let found = answer.and_then(|values| parse(&spec, &key, values));
                if let (Ok(found), Some(cache)) = (&found, &cache) {
                    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), found.clone());
                }
                result.complete(found.and_then(|found| finish(&spec, &key, &row2, found)));
            }),
        );
    }
}

fn store_name(spec: &LookupSpec) -> &'static str {
    match spec.store {
        LookupStore::Redis { .. } => "redis",
        LookupStore::Postgres { .. } => "postgres",
    }
}

/// The store's values as the declared types; `None` when the key is missing.
fn parse(spec: &LookupSpec, key: &str, values: Option<Vec<Option<String>>>) -> Result<Option<Vec<Value>>, String> {
    let Some(values) = values else { return Ok(None) };
    let parsed = values.into_iter().zip(&spec.fields).map(|(v, (name, ty))| {
        let Some(text) = v else { return Ok(Value::Null) };
        let value = match ty {
            FieldType::String => Some(Value::Str(SmolStr::new(&text))),
            FieldType::Int => text.trim().parse().ok().map(Value::Int),
            FieldType::Float => text.trim().parse().ok().map(Value::Float),
            FieldType::Bool => match text.trim() {
                "true" | "1" => Some(Value::Bool(true)),
                "false" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
        };
        value
            .ok_or_else(|| format!("{} lookup: field `{name}` of `{key}` is `{text}`, expected {ty}", store_name(spec)))
    });
    parsed.collect::<Result<Vec<_>, _>>().map(Some)
}

/// The rows the lookup emits for `row`.
fn finish(spec: &LookupSpec, key: &str, row: &Row, found: Option<Vec<Value>>) -> Result<Vec<Row>, String> {
    let added = match (found, spec.on_missing) {
        (Some(values), _) => values,
        (None, OnMissing::Null) => vec![Value::Null; spec.fields.len()],
        (None, OnMissing::Drop) => return Ok(Vec::new()),
        (None, OnMissing::Fail) => {
            let what = match spec.store {
                LookupStore::Redis { .. } => "hash",
                LookupStore::Postgres { .. } => "row with",
            };
            return Err(format!("{} lookup: no {what} `{key}` (on_missing: fail)", store_name(spec)));
        }
    };
    let mut out = Vec::with_capacity(row.len() + added.len());
    out.extend_from_slice(row);
    out.extend(added);
    Ok(vec![out])
}

/// Answers by key, at most `size`, each for `ttl`; the oldest go first when full.
struct Cache {
    entries: HashMap<String, (Instant, Option<Vec<Value>>)>,
    order: VecDeque<String>,
    size: usize,
    ttl: Duration,
}

impl Cache {
    fn new(size: usize, ttl: Duration) -> Self {
        Cache { entries: HashMap::new(), order: VecDeque::new(), size, ttl }
    }

    /// The answer for `key` if it is fresh (`Some(None)`: known to be missing).
    /// An expired answer stays until [`Cache::insert`] replaces it (or it is
    /// the oldest when the cache is full), so `order` holds every key once.
    fn get(&mut self, key: &str) -> Option<Option<Vec<Value>>> {
        match self.entries.get(key) {
            Some((at, found)) if at.elapsed() < self.ttl => Some(found.clone()),
            _ => None,
        }
    }

    fn insert(&mut self, key: String, found: Option<Vec<Value>>) {
        if let Some(entry) = self.entries.get_mut(&key) {
            *entry = (Instant::now(), found);
            return;
        }
        while self.entries.len() >= self.size {
            let Some(oldest) = self.order.pop_front() else { break };
            self.entries.remove(&oldest);
        }
        self.entries.insert(key.clone(), (Instant::now(), found));
        self.order.push_back(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_at_most_its_size_for_its_ttl() {
        let mut cache = Cache::new(2, Duration::from_millis(50));
        cache.insert("a".into(), Some(vec![Value::Int(1)]));
        cache.insert("b".into(), None);
        assert_eq!(cache.get("a"), Some(Some(vec![Value::Int(1)])));
        assert_eq!(cache.get("b"), Some(None), "a missing key is remembered too");
        cache.insert("c".into(), None);
        assert_eq!(cache.get("a"), None, "the oldest went when the cache was full");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("c"), None, "past its ttl");
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(60));
            assert_eq!(cache.get("c"), None, "expired");
            cache.insert("c".into(), None);
        }
        assert_eq!(cache.order.len(), 2, "a key answered again is kept once");
    }
}
