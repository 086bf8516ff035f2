//! # weir-redis: a Redis sink for the Weir stream engine
//!
//! [`RedisSink`] writes each record as one hash field (`HSET key field value`),
//! the shape of the seed's dashboard (`order_monitor:<region>` -> window start
//! -> count), optionally with a time to live on the key. Each batch goes out
//! as one pipeline and is acknowledged before the sink takes more, so a
//! completed checkpoint covers everything before its barrier (at-least-once).
//! The writes are idempotent, and a replay after a failure rewrites the same
//! fields with the same values: the hash ends up exactly as without the failure.
//!
//! A connection that breaks is opened again with backoff, for up to
//! [`RedisSinkConfig::retry_for`], and the batch is sent again.
//!
//! [`lookup::RedisLookup`] reads hashes for the async lookups of pipelines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_core::operator::sink::Sink;
use weir_core::{Record, TaskError, TaskResult};

pub mod lookup;
#[cfg(feature = "testing")]
pub mod testing;

pub use redis;

/// One hash field to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashWrite {
    pub key: String,
    pub field: String,
    pub value: String,
}

/// Turns a record into its hash write.
pub type ToWrite<T> = Arc<dyn Fn(&T) -> HashWrite + Send + Sync>;

#[derive(Clone, Debug)]
pub struct RedisSinkConfig {
    /// `redis://[user:password@]host:port[/db]`
    pub url: String,
    /// Expire written keys this long after their last write.
    pub ttl: Option<Duration>,
    /// How long to keep trying when Redis is unreachable.
    pub retry_for: Duration,
}

pub struct RedisSink<T> {
    config: RedisSinkConfig,
    client: redis::Client,
    connection: Option<redis::Connection>,
    to_write: ToWrite<T>,
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_string(),
    }
}

impl<T> RedisSink<T> {
    /// Checks the URL and connects.
    pub fn new(config: RedisSinkConfig, to_write: ToWrite<T>) -> TaskResult<Self> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| TaskError::Operator(format!("redis sink: invalid url `{}`: {e}", redacted(&config.url))))?;
        let mut sink = RedisSink { config, client, connection: None, to_write };
        sink.with_retry("connecting", |_| Ok(()))?;
        Ok(sink)
    }

    fn error(&self, what: impl std::fmt::Display) -> TaskError {
        TaskError::Operator(format!("redis sink ({}): {what}", redacted(&self.config.url)))
    }

    /// Runs `f` on a connection, reconnecting with backoff while the connection is what fails.
    fn with_retry(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<()>,
    ) -> TaskResult {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let result = match &mut self.connection {
                Some(c) => f(c),
                None => match self.client.get_connection_with_timeout(Duration::from_secs(5)) {
                    Ok(c) => f(self.connection.insert(c)),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if is_connection_error(&e) && started.elapsed() < self.config.retry_for => {
                    tracing::warn!("{}; retrying in {delay:?}", self.error(format!("{what}: {e}")));
                    self.connection = None;
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(self.error(format!("{what}: {e}"))),
            }
        }
    }
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl<T: Send> Sink<T> for RedisSink<T> {
    fn write(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for r in &batch {
            let w = (self.to_write)(&r.value);
            pipe.hset(&w.key, &w.field, &w.value).ignore();
            if let Some(ttl) = self.config.ttl {
                pipe.pexpire(&w.key, ttl.as_millis() as i64).ignore();
            }
        }
        self.with_retry("writing", |c| pipe.query::<()>(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redacted("redis://user:pw@127.0.0.1:6379/0"), "redis://***@127.0.0.1:6379/0");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
