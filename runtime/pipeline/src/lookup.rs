//! The `lookup` step: fields added to each row from a Redis hash, fetched
//! through async I/O (`DataStream::async_wait`), with an optional cache per
//! subtask.
//!
//! A row's key is its `key` pattern filled in; the answer is `HMGET key
//! fields...`, each value parsed as its declared type (a value that does not
//! parse fails the attempt, naming the key and field). A key with none of the
//! fields is missing: its row gets nulls, is dropped, or fails the job, as
//! `on_missing` says. Failures and timeouts are retried by the async
//! operator, which fails the job with the reason when the retries run out.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol_str::SmolStr;
use weir::prelude::{AsyncFunction, AsyncOptions, DataStream, ResultFuture};
use weir_redis::lookup::RedisLookup;

use crate::config::OnMissing;
use crate::connectors::expand;
use crate::plan::LookupSpec;
use crate::value::{FieldType, Row, Value};

/// Adds the lookup's fields to the rows of `stream`.
pub fn lookup(spec: &LookupSpec, stream: DataStream<Row>) -> DataStream<Row> {
    let options = AsyncOptions {
        capacity: spec.capacity,
        timeout: spec.timeout,
        retries: spec.retries,
        retry_delay: Duration::from_millis(100),
        ordered: true,
    };
    let function = RedisLookupFn {
        spec: Arc::new(spec.clone()),
        fields: spec.fields.iter().map(|(n, _)| n.clone()).collect(),
        pool: None,
        cache: None,
    };
    stream.async_wait(options, function)
}

/// The lookup function of one subtask (each clone opens its own connections
/// and keeps its own cache on first use).
#[derive(Clone)]
struct RedisLookupFn {
    spec: Arc<LookupSpec>,
    fields: Arc<[String]>,
    pool: Option<Arc<RedisLookup>>,
    cache: Option<Arc<Mutex<Cache>>>,
}

impl AsyncFunction<Row, Row> for RedisLookupFn {
    fn invoke(&mut self, row: &Row, result: ResultFuture<Row>) {
        let key = expand(&self.spec.key, row);
        if self.cache.is_none() {
            self.cache = self.spec.cache.map(|(size, ttl)| Arc::new(Mutex::new(Cache::new(size, ttl))));
        }
        if let Some(found) = self.cache.as_ref().and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).get(&key)) {
            return result.complete(finish(&self.spec, &key, row, found));
        }
        let pool = match &self.pool {
            Some(pool) => pool.clone(),
            None => match RedisLookup::start(&self.spec.url, self.spec.capacity.min(16)) {
                Ok(pool) => self.pool.insert(Arc::new(pool)).clone(),
                Err(e) => return result.complete(Err(e.to_string())),
            },
        };
        let (spec, cache, row) = (self.spec.clone(), self.cache.clone(), row.clone());
        pool.hmget(
            key.clone(),
            self.fields.clone(),
            Box::new(move |answer| {
                let found = answer.and_then(|values| parse(&spec, &key, values));
                if let (Ok(found), Some(cache)) = (&found, &cache) {
                    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), found.clone());
                }
                result.complete(found.and_then(|found| finish(&spec, &key, &row, found)));
            }),
        );
    }
}

/// The hash's values as the declared types; `None` when the key has none of the fields.
fn parse(spec: &LookupSpec, key: &str, values: Vec<Option<String>>) -> Result<Option<Vec<Value>>, String> {
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
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
        value.ok_or_else(|| format!("redis lookup: field `{name}` of `{key}` is `{text}`, expected {ty}"))
    });
    parsed.collect::<Result<Vec<_>, _>>().map(Some)
}

/// The rows the lookup emits for `row`.
fn finish(spec: &LookupSpec, key: &str, row: &Row, found: Option<Vec<Value>>) -> Result<Vec<Row>, String> {
    let added = match (found, spec.on_missing) {
        (Some(values), _) => values,
        (None, OnMissing::Null) => vec![Value::Null; spec.fields.len()],
        (None, OnMissing::Drop) => return Ok(Vec::new()),
        (None, OnMissing::Fail) => return Err(format!("redis lookup: no hash `{key}` (on_missing: fail)")),
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
    fn get(&mut self, key: &str) -> Option<Option<Vec<Value>>> {
        match self.entries.get(key) {
            Some((at, found)) if at.elapsed() < self.ttl => Some(found.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: String, found: Option<Vec<Value>>) {
        while self.entries.len() >= self.size {
            let Some(oldest) = self.order.pop_front() else { break };
            self.entries.remove(&oldest);
        }
        if self.entries.insert(key.clone(), (Instant::now(), found)).is_none() {
            self.order.push_back(key);
        }
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
    }
}
