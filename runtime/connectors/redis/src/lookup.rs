//! Lookups in Redis hashes for async I/O: [`RedisLookup`] runs `HMGET key
//! fields...` on a few worker threads, each with its own connection, and
//! hands every answer to a callback, so the asking task keeps many lookups in
//! flight (see `weir_core::operator::async_io`). A connection that fails is
//! dropped and opened again for the next lookup; the failed lookup reports
//! the error, and the async operator's retries and timeout decide what next.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_core::{TaskError, TaskResult};

use crate::redacted;

/// The values of the asked fields (`None` for a field the hash lacks; all
/// `None` when there is no such key), or why the lookup failed.
pub type Answer = Result<Vec<Option<String>>, String>;

/// What to do with an answer.
pub type Reply = Box<dyn FnOnce(Answer) + Send>;

struct Lookup {
    key: String,
    fields: Arc<[String]>,
    reply: Reply,
}

/// A pool of connections doing `HMGET`s (see the module docs).
pub struct RedisLookup {
    tx: Mutex<Sender<Lookup>>,
}

impl RedisLookup {
    /// Checks the URL and starts `workers` threads; connections open on first use.
    pub fn start(url: &str, workers: usize) -> TaskResult<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| TaskError::Operator(format!("redis lookup: invalid url `{}`: {e}", redacted(url))))?;
        let (tx, rx) = channel::<Lookup>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let (client, rx, url) = (client.clone(), rx.clone(), redacted(url));
            std::thread::Builder::new()
                .name(format!("redis-lookup-{i}"))
                .spawn(move || work(&client, &rx, &url))
                .map_err(|e| TaskError::io("starting a redis lookup thread", e))?;
        }
        Ok(RedisLookup { tx: Mutex::new(tx) })
    }

    /// Looks up `fields` of the hash at `key`; `reply` gets the answer on a worker thread.
    pub fn hmget(&self, key: String, fields: Arc<[String]>, reply: Reply) {
        let lookup = Lookup { key, fields, reply };
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(std::sync::mpsc::SendError(lookup)) = tx.send(lookup) {
            (lookup.reply)(Err("redis lookup: the worker threads are gone".into()));
        }
    }
}

/// A worker: takes lookups until the pool is dropped.
fn work(client: &redis::Client, rx: &Mutex<Receiver<Lookup>>, url: &str) {
    let mut connection: Option<redis::Connection> = None;
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(Lookup { key, fields, reply }) = next else { return };
        let answer =
            query(client, &mut connection, &key, &fields).map_err(|e| format!("redis lookup ({url}) of `{key}`: {e}"));
        if answer.is_err() {
            connection = None; // opened again for the next lookup
        }
        reply(answer);
    }
}

fn query(
    client: &redis::Client,
    connection: &mut Option<redis::Connection>,
    key: &str,
    fields: &[String],
) -> redis::RedisResult<Vec<Option<String>>> {
    let c = match connection {
        Some(c) => c,
        None => {
            let c = client.get_connection_with_timeout(Duration::from_secs(2))?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            connection.insert(c)
        }
    };
    redis::cmd("HMGET").arg(key).arg(fields).query(c)
}
