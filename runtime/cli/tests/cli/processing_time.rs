//! Processing-time windows in a pipeline file (`window: { ..., time:
//! processing }`): a paced source without event time, counted in windows
//! of the wall clock, every record in exactly one window. And ingestion time
//! (`watermark: { ingestion_time: FIELD }`): the rows stamped with the clock
//! at the source, and event-time windows on those stamps.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::{committed_rows, text};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Runs `yaml` with `weir run` at parallelism 2 in `dir`, which it must
/// finish; returns the wall clock (epoch ms) before and after.
fn run_timed(dir: &Path, yaml: &str) -> (i64, i64) {
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    let before = now_ms();
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-q", "p.yaml", "--parallelism", "2", "--rest-port", "0"])
        .current_dir(dir)
        .output()
        .unwrap();
    let after = now_ms();
    let (_, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    (before, after)
}

#[test]
fn processing_time_windows_count_every_record_in_windows_of_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: pt\n\
                source: { type: datagen, workload: orders, count: 3000, rate: 2000 }\n\
                steps:\n\
                \x20 - key_by: region\n\
                \x20 - window: { type: tumbling, size: 500ms, time: processing }\n\
                \x20 - aggregate: { n: count() }\n\
                sink: { type: file, path: out }\n";
    let (before, after) = run_timed(dir.path(), yaml);
    let rows = committed_rows(&dir.path().join("out"));
    let int = |r: &serde_json::Value, k: &str| r[k].as_i64().unwrap_or_else(|| panic!("no `{k}` in {r}"));
    assert_eq!(rows.iter().map(|r| int(r, "n")).sum::<i64>(), 3000, "{rows:?}");
    let mut windows = BTreeSet::new();
    for r in &rows {
        let (start, end) = (int(r, "window_start"), int(r, "window_end"));
        assert_eq!((start % 500, end - start), (0, 500), "{r}");
        assert!(end > before && start <= after, "window [{start}, {end}) is not within the run ({before}..{after})");
        windows.insert(start);
    }
    assert!(windows.len() >= 2, "1.5 s of records over 500 ms windows: {rows:?}");
}

#[test]
fn ingestion_time_adds_the_clock_as_a_field_and_windows_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: it\n\
                source: { type: datagen, workload: orders, count: 2000, rate: 4000, watermark: { ingestion_time: ingested_at } }\n\
                steps:\n\
                \x20 - select: { order_id: order_id, ingested_at: ingested_at }\n\
                sink: { type: file, path: rows }\n";
    let (before, after) = run_timed(dir.path(), yaml);
    let rows = committed_rows(&dir.path().join("rows"));
    assert_eq!(rows.len(), 2000);
    let stamps: Vec<i64> = rows.iter().map(|r| r["ingested_at"].as_i64().expect("an int stamp")).collect();
    assert!(stamps.iter().all(|&t| before <= t && t <= after), "stamps within the run ({before}..{after})");
    let (first, last) = (stamps.iter().min().unwrap(), stamps.iter().max().unwrap());
    assert!(last - first >= 200, "2000 rows at 4000/s are stamped over about half a second: {first}..{last}");
}
