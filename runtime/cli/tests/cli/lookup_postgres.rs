//! The `lookup` step against a real PostgreSQL: every row enriched from two
//! tables (one keyed by text, one by an `int4` column the row's integer must
//! be sent as), nulls for keys without a row, through a server crash and
//! restart in the middle of the run, each row once; key columns of other
//! types cast from text; and a lookup in a table or of a column that is not
//! there is refused before the job runs, naming it.

use std::time::Duration;

use weir_postgres::testing::PgServer;

use crate::common::{committed_rows, spawn_run, stderr_of, wait_for};

const EVENTS: u64 = 6_000;

/// Region -> (manager, target); `west` has no row.
const REGIONS: [(&str, &str, i32); 3] = [("north", "Nora", 10), ("south", "Sam", 20), ("east", "Eve", 30)];

/// The band of an amount: amounts 10..=1000, banded by hundreds, but for 500..=599.
fn band(amount: i64) -> Option<String> {
    (!(500..600).contains(&amount)).then(|| format!("band-{}", amount / 100))
}

fn populate(pg: &PgServer) {
    let mut client = pg.client();
    client
        .batch_execute(
            "CREATE TABLE regions (name text PRIMARY KEY, manager text, target int4);
             CREATE TABLE bands (amount int4 PRIMARY KEY, band varchar(20));",
        )
        .unwrap();
    for (name, manager, target) in REGIONS {
        client.execute("INSERT INTO regions VALUES ($1, $2, $3)", &[&name, &manager, &target]).unwrap();
    }
    for amount in 10..=1000i32 {
        if let Some(band) = band(amount as i64) {
            client.execute("INSERT INTO bands VALUES ($1, $2)", &[&amount, &band]).unwrap();
        }
    }
}

fn pipeline(url: &str, bands_table: &str) -> String {
    format!(
        "name: lookup\n\
         source: {{ type: datagen, workload: orders, count: {EVENTS}, rate: 2000 }}\n\
         steps:\n\
         \x20 - lookup:\n\
         \x20     postgres: {{ url: \"{url}\", table: regions, key: {{ name: region }} }}\n\
         \x20     fields: {{ manager: string, target: int }}\n\
         \x20     capacity: 20\n\
         \x20     timeout: 500ms\n\
         \x20     retries: 8\n\
         \x20 - lookup:\n\
         \x20     postgres: {{ url: \"{url}\", table: {bands_table}, key: {{ amount: amount }} }}\n\
         \x20     fields: {{ band: string }}\n\
         \x20     cache: {{ size: 100, ttl: 10s }}\n\
         \x20     timeout: 500ms\n\
         \x20     retries: 8\n\
         \x20 - select: {{ order_id: order_id, region: region, amount: amount, manager: manager, target: target, band: band }}\n\
         sink: {{ type: file, path: out }}\n"
    )
}

fn run(dir: &std::path::Path, yaml: &str) -> std::process::Child {
    std::fs::write(dir.join("lookup.yaml"), yaml).unwrap();
    spawn_run(dir, "lookup.yaml", 2)
}

#[test]
fn lookups_enrich_every_row_once_across_a_postgres_crash() {
    let mut pg = PgServer::start();
    populate(&pg);
    let dir = tempfile::tempdir().unwrap();
    let mut weir = run(dir.path(), &pipeline(&pg.url(), "bands"));
    // About a second in (the run takes three), the server crashes and is down for most of a second.
    std::thread::sleep(Duration::from_millis(1000));
    pg.kill();
    std::thread::sleep(Duration::from_millis(700));
    pg.restart();
    let status = wait_for(&mut weir, Duration::from_secs(60)).expect("the job ends within 60 s");
    let stderr = stderr_of(dir.path());
    assert!(status.success(), "{stderr}");

    let rows = committed_rows(&dir.path().join("out"));
    assert_eq!(rows.len() as u64, EVENTS, "every row once");
    for row in &rows {
        let region = row["region"].as_str().unwrap();
        match REGIONS.iter().find(|r| r.0 == region) {
            Some((_, manager, target)) => {
                let found = (row["manager"].as_str(), row["target"].as_i64());
                assert_eq!(found, (Some(*manager), Some(*target as i64)), "{row}");
            }
            None => assert!(row["manager"].is_null() && row["target"].is_null(), "no row for {region}: {row}"),
        }
        let amount = row["amount"].as_i64().unwrap();
        assert_eq!(row["band"].as_str().map(str::to_string), band(amount), "{row}");
    }
    assert!(rows.iter().any(|r| r["band"].is_null()), "some amounts have no band");
}

/// Key columns of types not sent as they are (an enum, a uuid) are compared
/// as their own types, the row's text cast in the statement.
#[test]
fn keys_of_other_column_types_are_cast_from_text() {
    let pg = PgServer::start();
    pg.client()
        .batch_execute(
            "CREATE TYPE region AS ENUM ('north', 'south', 'east', 'west');
             CREATE TABLE region_codes (name region PRIMARY KEY, code int4);
             INSERT INTO region_codes VALUES ('north', 1), ('south', 2), ('east', 3);",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: lookup\n\
         source: {{ type: datagen, workload: orders, count: 2000 }}\n\
         steps:\n\
         \x20 - lookup:\n\
         \x20     postgres: {{ url: \"{}\", table: region_codes, key: {{ name: region }} }}\n\
         \x20     fields: {{ code: int }}\n\
         sink: {{ type: file, path: out }}\n",
        pg.url()
    );
    let mut weir = run(dir.path(), &yaml);
    let status = wait_for(&mut weir, Duration::from_secs(60)).expect("the job ends within 60 s");
    let stderr = stderr_of(dir.path());
    assert!(status.success(), "{stderr}");
    let rows = committed_rows(&dir.path().join("out"));
    assert_eq!(rows.len(), 2000);
    for row in &rows {
        let code = ["north", "south", "east"].iter().position(|r| *r == row["region"]).map(|i| i as i64 + 1);
        assert_eq!(row["code"].as_i64(), code, "{row}");
    }
}

#[test]
fn a_lookup_in_a_missing_table_or_column_is_refused_before_the_job_runs() {
    let pg = PgServer::start();
    populate(&pg);
    let dir = tempfile::tempdir().unwrap();
    let missing_table = pipeline(&pg.url(), "no_such_table");
    let missing_column = pipeline(&pg.url(), "bands")
        .replace("fields: { band: string }", "fields: { colour: string }")
        .replace("band: band", "band: colour");
    for (yaml, missing) in [(missing_table, "no_such_table"), (missing_column, "colour")] {
        let mut weir = run(dir.path(), &yaml);
        let status = wait_for(&mut weir, Duration::from_secs(60)).expect("weir ends within 60 s");
        let stderr = stderr_of(dir.path());
        assert_eq!(status.code(), Some(2), "bad input: {stderr}");
        assert!(stderr.contains("steps (lookup).postgres") && stderr.contains(missing), "{stderr}");
        assert!(stderr.contains("does not exist"), "{stderr}");
        assert!(!dir.path().join("out").exists(), "nothing ran");
    }
}

/// With `failed:`, a row whose lookup still fails after the retries (here:
/// a region's name can never be an `int4` key) goes to that sink as it came,
/// and the job goes on.
#[test]
fn rows_whose_lookup_fails_go_to_the_failed_sink() {
    let pg = PgServer::start();
    populate(&pg);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: lookup\n\
         source: {{ type: datagen, workload: orders, count: 500 }}\n\
         steps:\n\
         \x20 - lookup:\n\
         \x20     postgres: {{ url: \"{}\", table: bands, key: {{ amount: region }} }}\n\
         \x20     fields: {{ band: string }}\n\
         \x20     retries: 1\n\
         \x20     failed: {{ type: file, path: failed }}\n\
         sink: {{ type: file, path: out }}\n",
        pg.url()
    );
    let mut weir = run(dir.path(), &yaml);
    let status = wait_for(&mut weir, Duration::from_secs(60));
    if status.is_none() {
        weir.kill().unwrap();
        weir.wait().unwrap();
    }
    let stderr = stderr_of(dir.path());
    assert!(status.is_some_and(|s| s.success()), "{stderr}");
    assert!(committed_rows(&dir.path().join("out")).is_empty());
    let failed = committed_rows(&dir.path().join("failed"));
    assert_eq!(failed.len(), 500, "every row, as it came");
    assert!(failed.iter().all(|r| r.get("band").is_none() && r["region"].is_string()), "{:?}", failed.first());
}
