//! # weir-postgres: a PostgreSQL sink for the Weir stream engine, and table lookups
//!
//! Lookups in a table for async I/O are in [`lookup`]; the rest is the sink.
//!
//! [`PostgresSink`] upserts rows into a table by its key (creating the table
//! when it is missing, with one column per field and the key as primary key).
//!
//! * [`Guarantee::Upsert`]: each subtask writes in a transaction that it
//!   commits when it waits for input and at every barrier. Replays after a
//!   failure rewrite the same rows with the same values: for keyed results
//!   (one row per key and window) the table ends up exactly right.
//! * [`Guarantee::ExactlyOnce`]: two-phase commit. At a barrier the open
//!   transaction is prepared (`PREPARE TRANSACTION`, durable in the server)
//!   under the id `weir:<job>:<sink>:<subtask>:<checkpoint>`, and the
//!   checkpoint records that id with the transaction's id (`txid_current()`);
//!   when the checkpoint completes it is committed (`COMMIT PREPARED`). The
//!   server needs `max_prepared_transactions > 0`.
//!
//! ## Recovery
//!
//! Every subtask of a new run (a restore, or a fresh start) resolves what
//! earlier runs left prepared when its sink is created (`RecoveryPlan`, a
//! pure function, decides):
//!
//! * subtask 0 commits the transactions the restored checkpoint lists (they
//!   belong to it, whichever subtask prepared them: after a rescale the
//!   numbering changed);
//! * each subtask rolls back the unlisted transactions named with its own
//!   subtask number, and subtask 0 also those of numbers beyond the current
//!   parallelism (no subtask of this run has them). Those are provably left
//!   from an earlier run: in this run only subtask `i` prepares under number
//!   `i`, and not before its recovery is done. So a subtask never touches
//!   what another subtask of this run prepared, in particular a transaction
//!   for the checkpoint after the restored one, prepared by a subtask on a
//!   TaskManager that started sooner.
//!
//! A `COMMIT PREPARED` that finds no such transaction (it was committed by an
//! earlier try of the same call, or by recovery; or it was rolled back) counts
//! as committed only when the server says its transaction id committed
//! (`txid_status`); otherwise the rows are lost and the commit, or the
//! restore, fails with an error naming the transaction. (Checkpoints written
//! before transaction ids were recorded cannot be checked that way: a gone
//! transaction of theirs is logged as unverifiable and taken as committed.)
//!
//! A connection that breaks is opened again with backoff for up to
//! [`PostgresSinkConfig::retry_for`]; the rows of the open transaction are kept
//! in memory and written again, so a database that goes away and comes back
//! loses nothing.

use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};
use serde::{Deserialize, Serialize};
use weir_core::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use weir_core::graph::SubtaskInfo;
use weir_core::operator::sink::Sink;
use weir_core::state::codec;
use weir_core::{Record, TaskError, TaskResult};

pub use postgres;

pub mod lookup;
#[cfg(feature = "testing")]
pub mod testing;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    Upsert,
    ExactlyOnce,
}

/// A column's SQL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Boolean,
    BigInt,
    Double,
    Text,
}

impl ColumnType {
    fn sql(self) -> &'static str {
        match self {
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::BigInt => "BIGINT",
            ColumnType::Double => "DOUBLE PRECISION",
            ColumnType::Text => "TEXT",
        }
    }
}

#[derive(Clone, Debug)]
pub struct PostgresSinkConfig {
    /// `postgres://user[:password]@host:port/database`
    pub url: String,
    pub table: String,
    /// The fields of the records, in order.
    pub columns: Vec<(String, ColumnType)>,
    /// The primary key: upserts replace the row with the same key.
    pub key: Vec<String>,
    pub guarantee: Guarantee,
    /// The job's name: part of prepared-transaction ids.
    pub job: String,
    /// How long to keep trying when the database is unreachable.
    pub retry_for: Duration,
}

impl PostgresSinkConfig {
    /// Checks what can be checked without a database.
    pub fn validate(&self) -> Result<(), String> {
        if self.table.is_empty() {
            return Err("expected a table name".into());
        }
        if self.key.is_empty() {
            return Err("expected at least one key field".into());
        }
        for k in &self.key {
            if !self.columns.iter().any(|(c, _)| c == k) {
                let names: Vec<&str> = self.columns.iter().map(|(c, _)| c.as_str()).collect();
                return Err(format!("key field `{k}` is not a field of the rows ({})", names.join(", ")));
            }
        }
        Ok(())
    }
}

/// `"name"` with embedded quotes doubled.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The upsert statement for `config`'s table.
fn upsert_sql(config: &PostgresSinkConfig) -> String {
    let cols: Vec<String> = config.columns.iter().map(|(c, _)| ident(c)).collect();
    let params: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
    let keys: Vec<String> = config.key.iter().map(|k| ident(k)).collect();
    let updates: Vec<String> = config
        .columns
        .iter()
        .filter(|(c, _)| !config.key.contains(c))
        .map(|(c, _)| format!("{0} = EXCLUDED.{0}", ident(c)))
        .collect();
    let action = if updates.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", updates.join(", ")) };
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}",
        ident(&config.table),
        cols.join(", "),
        params.join(", "),
        keys.join(", ")
    )
}

fn create_sql(config: &PostgresSinkConfig) -> String {
    let cols: Vec<String> = config.columns.iter().map(|(c, t)| format!("{} {}", ident(c), t.sql())).collect();
    let keys: Vec<String> = config.key.iter().map(|k| ident(k)).collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))",
        ident(&config.table),
        cols.join(", "),
        keys.join(", ")
    )
}

/// A prepared transaction: a checkpoint entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Prepared {
    checkpoint_id: u64,
    gid: String,
    /// Its transaction id (`txid_current()`), by which the server says whether
    /// it committed once the prepared transaction is gone. `None` in entries
    /// written before the id was recorded.
    txid: Option<i64>,
}

/// A checkpoint entry as written before transaction ids were recorded.
#[derive(Deserialize)]
struct LegacyPrepared {
    checkpoint_id: u64,
    gid: String,
}

impl Prepared {
    /// Decodes an entry of either form: a legacy entry ends where the
    /// transaction id would start, so it never decodes as the current form.
    fn decode(entry: &[u8]) -> TaskResult<Prepared> {
        const WHAT: &str = "a postgres sink's prepared transaction";
        codec::decode::<Prepared>(entry, WHAT).or_else(|_| {
            let legacy = codec::decode::<LegacyPrepared>(entry, WHAT)?;
            Ok(Prepared { checkpoint_id: legacy.checkpoint_id, gid: legacy.gid, txid: None })
        })
    }
}

/// The subtask number in a prepared-transaction id of this sink
/// (`<prefix><subtask>:<checkpoint>`), `None` for ids of another form.
fn gid_subtask(gid: &str, prefix: &str) -> Option<usize> {
    let (subtask, checkpoint) = gid.strip_prefix(prefix)?.split_once(':')?;
    checkpoint.parse::<u64>().ok()?;
    subtask.parse().ok()
}

/// What one subtask's recovery does with the sink's prepared transactions:
/// a pure function of what is prepared, what the restored checkpoint lists,
/// and who the subtask is (see the module docs).
#[derive(Debug, Default, PartialEq, Eq)]
struct RecoveryPlan {
    /// Listed and still prepared: committed (subtask 0).
    commit: Vec<Prepared>,
    /// Listed and no longer prepared: must have committed (subtask 0).
    verify: Vec<Prepared>,
    /// Left by an earlier run of a subtask this one answers for: rolled back.
    roll_back: Vec<String>,
}

impl RecoveryPlan {
    /// `prepared`: the ids of the server's prepared transactions that start
    /// with `prefix` (this job's and sink's); `listed`: the restored
    /// checkpoint's entries; `subtask` of `parallelism`: who recovers.
    fn new(prepared: &[String], listed: &[Prepared], prefix: &str, subtask: usize, parallelism: usize) -> Self {
        let mut plan = RecoveryPlan::default();
        if subtask == 0 {
            let mut seen = std::collections::HashSet::new();
            for p in listed.iter().filter(|p| seen.insert(p.gid.as_str())) {
                if prepared.contains(&p.gid) {
                    plan.commit.push(p.clone());
                } else {
                    plan.verify.push(p.clone());
                }
            }
        }
        for gid in prepared {
            if listed.iter().any(|p| &p.gid == gid) {
                continue;
            }
            match gid_subtask(gid, prefix) {
                Some(owner) if weir_core::graph::answers_for(subtask, parallelism, owner) => {
                    plan.roll_back.push(gid.clone())
                }
                Some(_) => {} // another subtask's: it resolves its own
                None => tracing::warn!("postgres sink: recovery: leaving `{gid}` alone (not an id this sink writes)"),
            }
        }
        plan
    }
}

/// `'text'`, with embedded quotes doubled.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

pub struct PostgresSink<T, V> {
    config: PostgresSinkConfig,
    subtask: usize,
    parallelism: usize,
    /// The ids of this sink's prepared transactions start with this.
    gid_prefix: String,
    /// Writes rows (and prepares).
    client: Option<Client>,
    /// Commits and rolls back prepared transactions: a session with a
    /// transaction open cannot.
    control: Option<Client>,
    statement: String,
    /// `statement` prepared on the current `client` connection.
    upsert: Option<Statement>,
    /// Rows written in the open transaction (written again after a reconnect).
    open: Vec<T>,
    in_transaction: bool,
    prepared: Vec<Prepared>,
    _values: std::marker::PhantomData<fn() -> V>,
}

impl<T, V> PostgresSink<T, V>
where
    T: AsRef<[V]> + Clone,
    V: ToSql + Sync,
{
    /// Connects (creating the table when missing) and, for exactly-once,
    /// resolves the prepared transactions earlier runs left that this
    /// subtask answers for (see the module docs).
    pub fn new(config: PostgresSinkConfig, info: &SubtaskInfo) -> TaskResult<Self> {
        config.validate().map_err(|e| TaskError::Operator(format!("postgres sink: {e}")))?;
        if config.guarantee == Guarantee::ExactlyOnce && !info.checkpointing {
            return Err(TaskError::Operator(
                "postgres sink: exactly-once needs checkpointing (or use guarantee: upsert)".into(),
            ));
        }
        let gid_prefix = format!("weir:{}:{}:", config.job, info.uid);
        let mut sink = PostgresSink {
            statement: upsert_sql(&config),
            upsert: None,
            subtask: info.index,
            parallelism: info.parallelism,
            gid_prefix,
            client: None,
            control: None,
            open: Vec::new(),
            in_transaction: false,
            prepared: Vec::new(),
            config,
            _values: std::marker::PhantomData,
        };
        sink.with_retry("connecting", |s| s.client().map(|_| ()))?;
        if sink.subtask == 0 {
            let create = create_sql(&sink.config);
            sink.with_retry("creating the table", |s| s.client()?.batch_execute(&create))?;
            sink.check_columns()?;
        }
        if sink.config.guarantee == Guarantee::ExactlyOnce {
            let listed = match &info.restored {
                Some(r) => r.all_entries.iter().map(|e| Prepared::decode(e)).collect::<TaskResult<Vec<_>>>()?,
                None => Vec::new(),
            };
            sink.recover(&listed)?;
        }
        Ok(sink)
    }

    fn error(&self, what: impl std::fmt::Display) -> TaskError {
        TaskError::Operator(format!(
            "postgres sink (table `{}` at {}): {what}",
            self.config.table,
            redacted(&self.config.url)
        ))
    }

    fn client(&mut self) -> Result<&mut Client, postgres::Error> {
        let (client, new) = connection(&mut self.client, &self.config.url, open)?;
        if new {
            self.upsert = None; // prepared on the connection that broke
        }
        Ok(client)
    }

    fn control(&mut self) -> Result<&mut Client, postgres::Error> {
        Ok(connection(&mut self.control, &self.config.url, open)?.0)
    }

    /// The upsert, prepared once per connection.
    fn upsert(&mut self) -> Result<Statement, postgres::Error> {
        let (client, new) = connection(&mut self.client, &self.config.url, open)?;
        if new || self.upsert.is_none() {
            self.upsert = Some(client.prepare(&self.statement)?);
        }
        Ok(self.upsert.clone().expect("prepared above"))
    }

    /// Runs `f`, reconnecting with backoff while the connection is what fails.
    fn with_retry<R>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut Self) -> Result<R, postgres::Error>,
    ) -> TaskResult<R> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match f(self) {
                Ok(r) => return Ok(r),
                Err(e) if is_connection_error(&e) && started.elapsed() < self.config.retry_for => {
                    tracing::warn!("{}; retrying in {delay:?}", self.error(format!("{what}: {}", describe(&e))));
                    self.client = None;
                    self.control = None;
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                    // A lost connection took the open transaction with it: write its rows again.
                    if self.in_transaction {
                        self.in_transaction = false;
                        if let Err(e) = self.replay_open() {
                            tracing::warn!("{}", self.error(format!("writing the open transaction again: {e}")));
                        }
                    }
                }
                Err(e) => return Err(self.error(format!("{what}: {}", describe(&e)))),
            }
        }
    }

    fn replay_open(&mut self) -> Result<(), postgres::Error> {
        let rows = std::mem::take(&mut self.open);
        let result = self.write_rows(&rows);
        self.open = rows;
        result
    }

    fn write_rows(&mut self, rows: &[T]) -> Result<(), postgres::Error> {
        let upsert = self.upsert()?;
        let begin = !self.in_transaction;
        let client = self.client()?;
        if begin {
            client.batch_execute("BEGIN")?;
        }
        for row in rows {
            let params: Vec<&(dyn ToSql + Sync)> = row.as_ref().iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            client.execute(&upsert, &params)?;
        }
        self.in_transaction = true;
        Ok(())
    }

    /// A table that exists already must have every column.
    fn check_columns(&mut self) -> TaskResult {
        let table = self.config.table.clone();
        let rows = self.with_retry("reading the table's columns", |s| {
            s.client()?.query("SELECT column_name FROM information_schema.columns WHERE table_name = $1", &[&table])
        })?;
        let have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        for (c, _) in &self.config.columns {
            if !have.contains(c) {
                return Err(self.error(format!(
                    "the table exists without the column `{c}` (it has: {}); drop it or choose another table",
                    have.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Resolves what earlier runs left prepared: see [`RecoveryPlan`].
    fn recover(&mut self, listed: &[Prepared]) -> TaskResult {
        let rows = self.with_retry("listing prepared transactions", |s| {
            s.control()?.query("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()", &[])
        })?;
        let prefix = self.gid_prefix.clone();
        let prepared: Vec<String> =
            rows.iter().map(|r| r.get::<_, String>(0)).filter(|g| g.starts_with(&prefix)).collect();
        let plan = RecoveryPlan::new(&prepared, listed, &prefix, self.subtask, self.parallelism);
        for p in &plan.commit {
            tracing::info!("postgres sink: recovery: committing `{}` (checkpoint {})", p.gid, p.checkpoint_id);
            self.commit_prepared(p)?;
        }
        for p in &plan.verify {
            self.check_committed(p)?;
        }
        for gid in &plan.roll_back {
            tracing::info!("postgres sink: recovery: rolling back `{gid}`, left by an earlier run");
            let sql = format!("ROLLBACK PREPARED {}", literal(gid));
            self.with_retry("rolling back a prepared transaction", |s| match s.control()?.batch_execute(&sql) {
                // Gone already (an earlier try of this call): what was wanted.
                Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_OBJECT) => Ok(()),
                other => other,
            })?;
        }
        Ok(())
    }

    /// Commits a prepared transaction. One that is no longer there counts as
    /// committed only when the server says so ([`Self::check_committed`]).
    fn commit_prepared(&mut self, p: &Prepared) -> TaskResult {
        let sql = format!("COMMIT PREPARED {}", literal(&p.gid));
        let gone =
            self.with_retry("committing a prepared transaction", |s| match s.control()?.batch_execute(&sql) {
                Ok(()) => Ok(false),
                Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_OBJECT) => Ok(true),
                Err(e) => Err(e),
            })?;
        if gone { self.check_committed(p) } else { Ok(()) }
    }

    /// A prepared transaction that is gone: fine when its transaction
    /// committed (an earlier try of the commit, or a recovery, did it); an
    /// error naming it when it was rolled back or the server cannot tell,
    /// since then its rows are lost.
    fn check_committed(&mut self, p: &Prepared) -> TaskResult {
        let Some(txid) = p.txid else {
            tracing::warn!(
                "postgres sink: prepared transaction `{}` (checkpoint {}) is gone; its checkpoint predates \
                 transaction ids in checkpoints, so whether it committed cannot be checked: taken as committed",
                p.gid,
                p.checkpoint_id
            );
            return Ok(());
        };
        let asked = self.with_retry("asking whether a transaction committed", |s| {
            s.control()?.query_one("SELECT txid_status($1)", &[&txid]).map(|r| r.get::<_, Option<String>>(0))
        });
        let status = match asked {
            Ok(status) => status,
            // A transaction id beyond the server's own (a restore into another
            // server, or a database restored from a backup): it cannot tell.
            Err(e) if e.to_string().contains("in the future") => None,
            Err(e) => return Err(e),
        };
        match status.as_deref() {
            Some("committed") => {
                tracing::debug!("postgres sink: `{}` was committed already", p.gid);
                Ok(())
            }
            Some("aborted") => Err(self.error(format!(
                "prepared transaction `{}` of checkpoint {} is gone and was rolled back, not committed: the rows \
                 it held are lost (did something else roll it back?)",
                p.gid, p.checkpoint_id
            ))),
            // The server forgot (its commit log was truncated: an old savepoint),
            // or it is another server: only a rollback is proof of a loss.
            other => {
                tracing::warn!(
                    "postgres sink: prepared transaction `{}` (checkpoint {}) is gone and the server cannot tell \
                     whether its transaction {txid} committed ({}): taken as committed",
                    p.gid,
                    p.checkpoint_id,
                    other.unwrap_or("no status")
                );
                Ok(())
            }
        }
    }

    /// Ends the open transaction: commit (upsert) or prepare (exactly-once).
    fn end_transaction(&mut self, checkpoint_id: Option<u64>) -> TaskResult {
        if !self.in_transaction {
            return Ok(());
        }
        match (self.config.guarantee, checkpoint_id) {
            (Guarantee::ExactlyOnce, Some(id)) => {
                let gid = format!("{}{}:{id}", self.gid_prefix, self.subtask);
                let sql = format!("PREPARE TRANSACTION {}", literal(&gid));
                let txid = self.with_retry("preparing the transaction", |s| {
                    if !s.in_transaction {
                        s.replay_open()?;
                    }
                    let client = s.client()?;
                    let txid: i64 = client.query_one("SELECT txid_current()", &[])?.get(0);
                    client.batch_execute(&sql)?;
                    Ok(txid)
                })?;
                self.prepared.push(Prepared { checkpoint_id: id, gid, txid: Some(txid) });
            }
            (Guarantee::ExactlyOnce, None) => return Ok(()), // only checkpoints end transactions
            (Guarantee::Upsert, _) => {
                self.with_retry("committing", |s| {
                    if !s.in_transaction {
                        s.replay_open()?;
                    }
                    s.client()?.batch_execute("COMMIT")
                })?;
            }
        }
        self.in_transaction = false;
        self.open.clear();
        Ok(())
    }
}

/// The connection in `slot`, opened (again) by `open` when there is none or it broke; `true` when it is new.
fn connection<'a>(
    slot: &'a mut Option<Client>,
    url: &str,
    open: fn(&str) -> Result<Client, postgres::Error>,
) -> Result<(&'a mut Client, bool), postgres::Error> {
    let new = slot.as_ref().is_none_or(Client::is_closed);
    if new {
        *slot = Some(open(url)?);
    }
    Ok((slot.as_mut().expect("connected above"), new))
}

/// How the sink connects.
fn open(url: &str) -> Result<Client, postgres::Error> {
    Client::connect(url, NoTls)
}

fn is_connection_error(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    e.is_closed()
        || e.code().is_none() && std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || e.code().is_some_and(|c| {
            [SqlState::ADMIN_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW, SqlState::CRASH_SHUTDOWN].contains(c)
                || c.code().starts_with("08")
        })
}

fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

impl<T, V> Sink<T> for PostgresSink<T, V>
where
    T: AsRef<[V]> + Clone + Send,
    V: ToSql + Sync,
{
    fn write(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        let rows: Vec<T> = batch.into_iter().map(|r| r.value).collect();
        let result = self.with_retry("writing rows", |s| {
            if !s.in_transaction && !s.open.is_empty() {
                s.replay_open()?;
            }
            s.write_rows(&rows)
        });
        self.open.extend(rows);
        result
    }

    fn flush(&mut self) -> TaskResult {
        self.end_transaction(None)
    }

    fn finish(&mut self) -> TaskResult {
        // Exactly-once: what the final checkpoint did not cover stays uncommitted.
        if self.config.guarantee == Guarantee::Upsert {
            self.end_transaction(None)?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        self.end_transaction(Some(checkpoint_id))?;
        Ok(OperatorSnapshot::of_entries(self.prepared.iter().map(codec::encode).collect()))
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.prepared).into_iter().partition(|p| p.checkpoint_id <= checkpoint_id);
        self.prepared = waiting;
        for p in &ready {
            self.commit_prepared(p)?;
        }
        Ok(())
    }

    fn restore_state(&mut self, _state: RestoredState) -> TaskResult {
        Ok(()) // resolved in `new`, before the subtask writes anything
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PostgresSinkConfig {
        PostgresSinkConfig {
            url: "postgres://weir:secret@127.0.0.1:5432/weir".into(),
            table: "order_stats".into(),
            columns: vec![
                ("region".into(), ColumnType::Text),
                ("window_start".into(), ColumnType::BigInt),
                ("count".into(), ColumnType::BigInt),
            ],
            key: vec!["region".into(), "window_start".into()],
            guarantee: Guarantee::ExactlyOnce,
            job: "j".into(),
            retry_for: Duration::from_secs(1),
        }
    }

    #[test]
    fn statements_quote_identifiers_and_update_only_non_key_columns() {
        let c = config();
        assert_eq!(
            upsert_sql(&c),
            "INSERT INTO \"order_stats\" (\"region\", \"window_start\", \"count\") VALUES ($1, $2, $3) \
             ON CONFLICT (\"region\", \"window_start\") DO UPDATE SET \"count\" = EXCLUDED.\"count\""
        );
        assert_eq!(
            create_sql(&c),
            "CREATE TABLE IF NOT EXISTS \"order_stats\" (\"region\" TEXT, \"window_start\" BIGINT, \"count\" BIGINT, \
             PRIMARY KEY (\"region\", \"window_start\"))"
        );
    }

    fn prepared(gid: &str, checkpoint_id: u64) -> Prepared {
        Prepared { checkpoint_id, gid: gid.into(), txid: Some(checkpoint_id as i64 + 1000) }
    }

    const PREFIX: &str = "weir:j:2-sink:";

    #[test]
    fn recovery_commits_what_the_checkpoint_lists_and_rolls_back_only_the_subtasks_own_leftovers() {
        let gids = |names: &[&str]| names.iter().map(|n| format!("{PREFIX}{n}")).collect::<Vec<_>>();
        // Restored from checkpoint 5 at parallelism 2 (the job ran at 3 before).
        let listed = vec![prepared(&format!("{PREFIX}0:5"), 5), prepared(&format!("{PREFIX}2:5"), 5)];
        let on_server = gids(&["0:5", "1:6", "0:6", "2:6", "1:4"]);
        let zero = RecoveryPlan::new(&on_server, &listed, PREFIX, 0, 2);
        assert_eq!(zero.commit, [listed[0].clone()]);
        assert_eq!(zero.verify, [listed[1].clone()], "listed but gone: committed before, to be checked");
        // Its own leftover, and the one of subtask 2, which this run does not have:
        // never subtask 1's, whatever their checkpoints (1:6 may be this run's next one).
        assert_eq!(zero.roll_back, gids(&["0:6", "2:6"]));
        let one = RecoveryPlan::new(&on_server, &listed, PREFIX, 1, 2);
        assert_eq!((one.commit.len(), one.verify.len()), (0, 0), "only subtask 0 commits");
        assert_eq!(one.roll_back, gids(&["1:6", "1:4"]));
        // After a rescale up, subtask 2 exists again and answers for its own number.
        let two = RecoveryPlan::new(&on_server, &[], PREFIX, 2, 3);
        assert_eq!(two.roll_back, gids(&["2:6"]));
        assert_eq!(RecoveryPlan::new(&on_server, &[], PREFIX, 0, 3).roll_back, gids(&["0:5", "0:6"]));
        // Ids of another form (another sink whose uid extends this one's) are left alone.
        let other = vec![format!("{PREFIX}x:1:2"), format!("{PREFIX}1"), "weir:j:2-sink".to_string()];
        assert_eq!(RecoveryPlan::new(&other, &[], PREFIX, 0, 1), RecoveryPlan::default());
    }

    #[test]
    fn entries_without_a_transaction_id_still_restore() {
        let legacy = codec::encode(&(7u64, "weir:j:2-sink:0:7".to_string()));
        assert_eq!(
            Prepared::decode(&legacy).unwrap(),
            Prepared { checkpoint_id: 7, gid: "weir:j:2-sink:0:7".into(), txid: None }
        );
        let current = prepared("weir:j:2-sink:0:8", 8);
        assert_eq!(Prepared::decode(&codec::encode(&current)).unwrap(), current);
        assert!(Prepared::decode(b"\xff").is_err());
    }

    #[test]
    fn a_key_must_be_a_field_and_passwords_stay_out_of_messages() {
        let mut c = config();
        c.key = vec!["regoin".into()];
        let e = c.validate().unwrap_err();
        assert!(e.contains("`regoin`") && e.contains("region, window_start, count"), "{e}");
        assert_eq!(redacted(&c.url), "postgres://weir@127.0.0.1:5432/weir");
    }
}
