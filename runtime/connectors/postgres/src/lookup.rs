//! Lookups in a PostgreSQL table for async I/O: [`PostgresLookup`] runs
//! `SELECT columns FROM table WHERE key = $1 ...` on a few worker threads,
//! each with its own connection and the statement prepared on it, and hands
//! every answer to a callback, so the asking task keeps many lookups in
//! flight (see `weir_core::operator::async_io`).
//!
//! Key values are sent as the types the server infers for the key columns
//! (an `int4` column gets an `i32`), so the lookup uses the table's index;
//! a value that does not fit the column's type is an error naming both.
//! Columns come back as text (`column::text`), for the caller to parse as the
//! types it declared. The key must identify one row: a second matching row is
//! an error, never a silent choice. A connection that fails is dropped and
//! opened again for the next lookup; the failed lookup reports the error, and
//! the async operator's retries and timeout decide what next.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use postgres::types::{ToSql, Type};
use postgres::{Client, Statement};
use weir_core::{TaskError, TaskResult};

use crate::{connection, describe, ident, redacted};

/// A key value of a lookup.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// The row's columns as text (`None` for SQL null), `None` when no row has
/// the key, or why the lookup failed.
pub type Answer = Result<Option<Vec<Option<String>>>, String>;

/// What to do with an answer.
pub type Reply = Box<dyn FnOnce(Answer) + Send>;

/// What a lookup reads: `columns` of the row of `table` whose `key` columns
/// equal the key values, in order.
#[derive(Clone, Debug)]
pub struct LookupQuery {
    pub table: String,
    pub key: Vec<String>,
    pub columns: Vec<String>,
}

impl LookupQuery {
    /// The statement; `casts[i]` names the type key parameter `i` is cast to
    /// from text (for key columns of types sent as text: uuid, numeric, dates,
    /// enums), so the comparison stays on the column's own type and index.
    fn sql(&self, casts: &[Option<String>]) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| format!("{}::text", ident(c))).collect();
        let key: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| match casts.get(i).cloned().flatten() {
                Some(ty) => format!("{} = ${}::text::{ty}", ident(k), i + 1),
                None => format!("{} = ${}", ident(k), i + 1),
            })
            .collect();
        format!("SELECT {} FROM {} WHERE {} LIMIT 2", columns.join(", "), ident(&self.table), key.join(" AND "))
    }
}

/// Whether key values are sent as parameters of type `ty` itself ([`as_type`]);
/// the others go as text and are cast in the statement.
fn sent_as_is(ty: &Type) -> bool {
    let as_is = [Type::INT2, Type::INT4, Type::INT8, Type::FLOAT4, Type::FLOAT8, Type::BOOL];
    as_is.contains(ty) || [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty)
}

struct Lookup {
    key: Vec<Param>,
    reply: Reply,
}

/// A pool of connections doing lookups (see the module docs).
pub struct PostgresLookup {
    tx: Mutex<Sender<Lookup>>,
}

impl PostgresLookup {
    /// Checks the URL and starts `workers` threads; connections open on first use.
    pub fn start(url: &str, query: LookupQuery, workers: usize) -> TaskResult<Self> {
        url.parse::<postgres::Config>()
            .map_err(|e| TaskError::Operator(format!("postgres lookup: invalid url `{}`: {e}", redacted(url))))?;
        let (tx, rx) = channel::<Lookup>();
        let rx = Arc::new(Mutex::new(rx));
        let query = Arc::new(query);
        for i in 0..workers.max(1) {
            let mut worker = Worker { url: url.to_string(), query: query.clone(), client: None, statement: None };
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("postgres-lookup-{i}"))
                .spawn(move || worker.run(&rx))
                .map_err(|e| TaskError::io("starting a postgres lookup thread", e))?;
        }
        Ok(PostgresLookup { tx: Mutex::new(tx) })
    }

    /// Looks up the row with `key`; `reply` gets the answer on a worker thread.
    pub fn get(&self, key: Vec<Param>, reply: Reply) {
        let lookup = Lookup { key, reply };
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(std::sync::mpsc::SendError(lookup)) = tx.send(lookup) {
            (lookup.reply)(Err("postgres lookup: the worker threads are gone".into()));
        }
    }
}

/// One worker thread: its connection and the statement prepared on it.
struct Worker {
    url: String,
    query: Arc<LookupQuery>,
    client: Option<Client>,
    statement: Option<Statement>,
}

impl Worker {
    /// Takes lookups until the pool is dropped.
    fn run(&mut self, rx: &Mutex<Receiver<Lookup>>) {
        loop {
            let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok(Lookup { key, reply }) = next else { return };
            // A connection that broke is opened again (and the statement
            // prepared again) by the next lookup; other errors keep it.
            reply(self.lookup(&key));
        }
    }

    fn lookup(&mut self, key: &[Param]) -> Answer {
        // `column = NULL` holds for no row.
        if key.contains(&Param::Null) {
            return Ok(None);
        }
        let query = self.query.clone();
        let (table, url) = (&query.table, redacted(&self.url));
        let failed = |e: postgres::Error| format!("postgres lookup in `{table}` ({url}): {}", describe(&e));
        let (client, new) = connection(&mut self.client, &self.url, connect).map_err(failed)?;
        if new || self.statement.is_none() {
            self.statement = Some(prepare(client, &query).map_err(failed)?);
        }
        let statement = self.statement.as_ref().expect("prepared above");
        let params = params(&query, statement, key)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
        let rows = client.query(statement, &refs).map_err(failed)?;
        match rows.as_slice() {
            [] => Ok(None),
            [row] => (0..query.columns.len())
                .map(|i| row.try_get::<_, Option<String>>(i).map_err(failed))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(format!(
                "postgres lookup: more than one row of `{table}` has ({}) = ({}); the key must identify one row",
                query.key.join(", "),
                key.iter().map(show).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// Checks the lookup against the server before the job runs: an error naming
/// what is missing when the server says the table, a column or a type does
/// not exist; `Ok` when the statement prepares, and also when the server
/// cannot be reached now (the lookups then retry, as at run time).
pub fn check(url: &str, query: &LookupQuery) -> Result<(), String> {
    use postgres::error::SqlState;
    let Ok(mut client) = connect(url) else { return Ok(()) };
    match prepare(&mut client, query) {
        Err(e)
            if e.code().is_some_and(|c| {
                [SqlState::UNDEFINED_TABLE, SqlState::UNDEFINED_COLUMN, SqlState::UNDEFINED_OBJECT].contains(c)
            }) =>
        {
            Err(format!("postgres lookup in `{}` ({}): {}", query.table, redacted(url), describe(&e)))
        }
        _ => Ok(()),
    }
}

/// Lookups give up on a server that does not answer: connecting, and each query.
fn connect(url: &str) -> Result<Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(5));
    }
    config.options("-c statement_timeout=10000");
    config.keepalives(true).keepalives_idle(std::time::Duration::from_secs(30));
    config.connect(postgres::NoTls)
}

/// Prepares the lookup, casting from text the key parameters whose column
/// types are not sent as they are.
fn prepare(client: &mut Client, query: &LookupQuery) -> Result<Statement, postgres::Error> {
    let statement = client.prepare(&query.sql(&[]))?;
    let casts: Vec<Option<String>> = statement
        .params()
        .iter()
        .map(|ty| (!sent_as_is(ty)).then(|| format!("{}.{}", ident(ty.schema()), ident(ty.name()))))
        .collect();
    match casts.iter().any(Option::is_some) {
        true => client.prepare(&query.sql(&casts)),
        false => Ok(statement),
    }
}

/// The key values as the types the server gave the statement's parameters.
fn params(query: &LookupQuery, statement: &Statement, key: &[Param]) -> Result<Vec<Box<dyn ToSql + Sync>>, String> {
    statement
        .params()
        .iter()
        .zip(key)
        .zip(&query.key)
        .map(|((ty, value), column)| {
            as_type(ty, value).ok_or_else(|| {
                format!(
                    "postgres lookup: key `{}` does not fit column `{column}` of `{}` (type {ty})",
                    show(value),
                    query.table
                )
            })
        })
        .collect()
}

/// `value` as a parameter of SQL type `ty`, if it fits.
fn as_type(ty: &Type, value: &Param) -> Option<Box<dyn ToSql + Sync>> {
    Some(match (ty, value) {
        (&Type::INT2, Param::Int(i)) => Box::new(i16::try_from(*i).ok()?),
        (&Type::INT4, Param::Int(i)) => Box::new(i32::try_from(*i).ok()?),
        (&Type::INT8, Param::Int(i)) => Box::new(*i),
        (&Type::FLOAT4, Param::Float(f)) => Box::new(*f as f32),
        (&Type::FLOAT4, Param::Int(i)) => Box::new(*i as f32),
        (&Type::FLOAT8, Param::Float(f)) => Box::new(*f),
        (&Type::FLOAT8, Param::Int(i)) => Box::new(*i as f64),
        (&Type::BOOL, Param::Bool(b)) => Box::new(*b),
        (&Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME, v) => Box::new(show(v)),
        _ => return None,
    })
}

fn show(value: &Param) -> String {
    match value {
        Param::Null => "null".into(),
        Param::Bool(b) => b.to_string(),
        Param::Int(i) => i.to_string(),
        Param::Float(f) => f.to_string(),
        Param::Text(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_quotes_names_and_asks_for_two_rows_to_catch_a_key_that_is_not_unique() {
        let query = LookupQuery {
            table: "cus\"tomers".into(),
            key: vec!["id".into(), "shop".into()],
            columns: vec!["name".into()],
        };
        assert_eq!(query.sql(&[]), r#"SELECT "name"::text FROM "cus""tomers" WHERE "id" = $1 AND "shop" = $2 LIMIT 2"#);
        assert_eq!(
            query.sql(&[Some(r#""public"."uuid""#.into()), None]),
            r#"SELECT "name"::text FROM "cus""tomers" WHERE "id" = $1::text::"public"."uuid" AND "shop" = $2 LIMIT 2"#,
            "a key column of another type compares as its own type, cast from text"
        );
    }

    #[test]
    fn key_values_take_the_column_type_or_are_refused() {
        assert!(as_type(&Type::INT4, &Param::Int(7)).is_some());
        assert!(as_type(&Type::INT2, &Param::Int(70_000)).is_none(), "out of smallint's range");
        assert!(as_type(&Type::INT8, &Param::Text("7".into())).is_none());
        assert!(as_type(&Type::TEXT, &Param::Int(7)).is_some(), "any value as text");
        assert!(as_type(&Type::UUID, &Param::Text("x".into())).is_none());
    }
}
