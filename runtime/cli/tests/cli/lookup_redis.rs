//! The `lookup` step against a real Redis: every row enriched from its
//! region's hash (nulls for a region without one), through a Redis restart
//! in the middle of the run (the data saved and loaded again), each row once.

use std::time::Duration;

use weir_redis::redis;
use weir_redis::testing::RedisServer;

use crate::common::{committed_rows, spawn_run, stderr_of, wait_for};

const EVENTS: u64 = 6_000;

/// Region -> (manager, target); `west` has no hash.
const REGIONS: [(&str, &str, i64); 3] = [("north", "Nora", 10), ("south", "Sam", 20), ("east", "Eve", 30)];

fn populate(redis: &RedisServer) {
    let mut con = redis.client().get_connection().unwrap();
    for (region, manager, target) in REGIONS {
        let _: () = redis::cmd("HSET")
            .arg(format!("region:{region}"))
            .arg("manager")
            .arg(manager)
            .arg("target")
            .arg(target)
            .query(&mut con)
            .unwrap();
    }
    // Saved, so that the server loads it again when it restarts.
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
}

#[test]
fn lookups_enrich_every_row_once_across_a_redis_restart() {
    let mut redis = RedisServer::start();
    populate(&redis);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: lookup\n\
         source: {{ type: datagen, workload: orders, count: {EVENTS}, rate: 2000 }}\n\
         steps:\n\
         \x20 - lookup:\n\
         \x20     redis: {{ url: \"{}\", key: \"region:{{region}}\" }}\n\
         \x20     fields: {{ manager: string, target: int }}\n\
         \x20     capacity: 20\n\
         \x20     timeout: 500ms\n\
         \x20     retries: 8\n\
         \x20 - select: {{ order_id: order_id, region: region, manager: manager, target: target }}\n\
         sink: {{ type: file, path: out }}\n",
        redis.url()
    );
    std::fs::write(dir.path().join("lookup.yaml"), yaml).unwrap();
    let mut weir = spawn_run(dir.path(), "lookup.yaml", 2);
    // About a second in (the run takes three), Redis goes away for most of a second.
    std::thread::sleep(Duration::from_millis(1000));
    redis.kill();
    std::thread::sleep(Duration::from_millis(700));
    redis.restart();
    let status = wait_for(&mut weir, Duration::from_secs(60)).expect("the job ends within 60 s");
    let stderr = stderr_of(dir.path());
    assert!(status.success(), "{stderr}");

    let rows = committed_rows(&dir.path().join("out"));
    assert_eq!(rows.len() as u64, EVENTS, "every row once");
    for row in &rows {
        let region = row["region"].as_str().unwrap();
        match REGIONS.iter().find(|r| r.0 == region) {
            Some((_, manager, target)) => {
                assert_eq!((row["manager"].as_str(), row["target"].as_i64()), (Some(*manager), Some(*target)), "{row}");
            }
            None => assert!(row["manager"].is_null() && row["target"].is_null(), "no hash for {region}: {row}"),
        }
    }
}
