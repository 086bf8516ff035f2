//! A pipeline file's window join (`join: { type: window, ... }`) between two
//! file sources: inner and left, right and full outer joins, on tumbling and
//! sliding windows, at parallelism 1 and 3, against a nested loop over the
//! same input; and the same for outer interval joins (`type: interval`,
//! `outer: ...`): every pair in the interval, and each kept side's rows that
//! met none.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{committed_rows, text};

/// A row of the output: (id, o, t, p, paid_at), any of them null.
type Out = (Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// `n` rows (id, number, time) over `keys` ids, 100 ms apart and up to 500 ms out of order.
fn side(seed: u64, n: i64, keys: i64) -> Vec<(i64, i64, i64)> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n).map(|i| ((next() % keys as u64) as i64, i, 1_000 + i * 100 - (next() % 500) as i64)).collect()
}

fn write(path: &Path, name: &str, rows: &[(i64, i64, i64)]) {
    let lines: String = rows.iter().map(|(id, n, t)| format!("{{\"id\":{id},\"{name}\":{n},\"t\":{t}}}\n")).collect();
    std::fs::write(path, lines).unwrap();
}

/// The windows (start) of a record at `t`: tumbling when `slide == size`.
fn starts(t: i64, size: i64, slide: i64) -> Vec<i64> {
    let last = t.div_euclid(slide) * slide;
    (0..).map(|i| last - i * slide).take_while(|&s| s > t - size).collect()
}

/// What the join must give, by grouping both sides per (id, window).
fn expected(orders: &[(i64, i64, i64)], pays: &[(i64, i64, i64)], size: i64, slide: i64, outer: &str) -> Vec<Out> {
    type Group<'a> = (Vec<&'a (i64, i64, i64)>, Vec<&'a (i64, i64, i64)>);
    let mut groups: BTreeMap<(i64, i64), Group> = BTreeMap::new();
    for o in orders {
        for s in starts(o.2, size, slide) {
            groups.entry((o.0, s)).or_default().0.push(o);
        }
    }
    for p in pays {
        for s in starts(p.2, size, slide) {
            groups.entry((p.0, s)).or_default().1.push(p);
        }
    }
    let (left, right) = (matches!(outer, "left" | "full"), matches!(outer, "right" | "full"));
    let mut out = Vec::new();
    for (os, ps) in groups.values() {
        for o in os {
            for p in ps {
                out.push((Some(o.0), Some(o.1), Some(o.2), Some(p.1), Some(p.2)));
            }
        }
        if ps.is_empty() && left {
            out.extend(os.iter().map(|o| (Some(o.0), Some(o.1), Some(o.2), None, None)));
        }
        if os.is_empty() && right {
            out.extend(ps.iter().map(|p| (Some(p.0), None, None, Some(p.1), Some(p.2))));
        }
    }
    out.sort();
    out
}

/// What an interval join of `[lower, upper]` ms must give, by a nested loop.
fn expected_interval(
    orders: &[(i64, i64, i64)],
    pays: &[(i64, i64, i64)],
    lower: i64,
    upper: i64,
    outer: &str,
) -> Vec<Out> {
    let meets = |o: &(i64, i64, i64), p: &(i64, i64, i64)| o.0 == p.0 && p.2 >= o.2 + lower && p.2 <= o.2 + upper;
    let (left, right) = (matches!(outer, "left" | "full"), matches!(outer, "right" | "full"));
    let mut out = Vec::new();
    for o in orders {
        out.extend(
            pays.iter().filter(|p| meets(o, p)).map(|p| (Some(o.0), Some(o.1), Some(o.2), Some(p.1), Some(p.2))),
        );
        if left && !pays.iter().any(|p| meets(o, p)) {
            out.push((Some(o.0), Some(o.1), Some(o.2), None, None));
        }
    }
    for p in pays.iter().filter(|p| right && !orders.iter().any(|o| meets(o, p))) {
        out.push((Some(p.0), None, None, Some(p.1), Some(p.2)));
    }
    out.sort();
    out
}

fn run(dir: &Path, window: &str, outer: &str, parallelism: usize) -> Vec<Out> {
    run_join(dir, &format!("type: window, window: {window}"), outer, parallelism)
}

/// Runs the join step `how` (its kind and its window or bounds) with `outer`.
fn run_join(dir: &Path, how: &str, outer: &str, parallelism: usize) -> Vec<Out> {
    let (window, out) = (how, dir.join(format!("out-{parallelism}-{outer}-{}", how.len())));
    let outer_key = if outer == "inner" { String::new() } else { format!(", outer: {outer}") };
    let yaml = format!(
        "name: wj\n\
         source: {{ type: file, path: orders.jsonl, fields: {{ id: int, o: int, t: int }}, watermark: {{ field: t, out_of_orderness: 1s }} }}\n\
         sources:\n\
         \x20 pay: {{ type: file, path: pays.jsonl, fields: {{ id: int, p: int, t: int }}, watermark: {{ field: t, out_of_orderness: 1s }} }}\n\
         steps:\n\
         \x20 - join: {{ with: pay, key: id, {window}{outer_key}, fields: {{ p: p, paid_at: t }} }}\n\
         sink: {{ type: file, path: {} }}\n",
        out.display()
    );
    std::fs::write(dir.join("wj.yaml"), yaml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-q", "wj.yaml", "--parallelism", &parallelism.to_string(), "--rest-port", "0"])
        .current_dir(dir)
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert!(output.status.success(), "{window} {outer} at parallelism {parallelism}: {stderr}");
    let field = |r: &Value, k: &str| r[k].as_i64();
    let mut rows: Vec<Out> = committed_rows(&out)
        .iter()
        .map(|r| (field(r, "id"), field(r, "o"), field(r, "t"), field(r, "p"), field(r, "paid_at")))
        .collect();
    rows.sort();
    rows
}

#[test]
fn window_joins_in_pipeline_files_match_a_nested_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (orders, pays) = (side(7, 600, 30), side(11, 400, 30));
    write(&dir.path().join("orders.jsonl"), "o", &orders);
    write(&dir.path().join("pays.jsonl"), "p", &pays);
    let cases = [
        ("{ type: tumbling, size: 2s }", 2_000, 2_000, "inner", 1),
        ("{ type: tumbling, size: 2s }", 2_000, 2_000, "left", 3),
        ("{ type: tumbling, size: 2s }", 2_000, 2_000, "right", 1),
        ("{ type: sliding, size: 3s, slide: 1s }", 3_000, 1_000, "full", 3),
    ];
    for (window, size, slide, outer, parallelism) in cases {
        let want = expected(&orders, &pays, size, slide, outer);
        let one_sided = want.iter().filter(|r| r.1.is_none() || r.3.is_none()).count();
        if outer != "inner" {
            assert!(one_sided > 10, "{window} {outer}: too few unmatched rows to mean anything ({one_sided})");
        }
        assert!(want.len() - one_sided > 100, "{window} {outer}: too few pairs to mean anything");
        assert_eq!(run(dir.path(), window, outer, parallelism), want, "{window} {outer} at parallelism {parallelism}");
    }
}

#[test]
fn outer_interval_joins_in_pipeline_files_match_a_nested_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (orders, pays) = (side(5, 600, 60), side(13, 500, 60));
    write(&dir.path().join("orders.jsonl"), "o", &orders);
    write(&dir.path().join("pays.jsonl"), "p", &pays);
    let cases = [("inner", 1), ("left", 3), ("right", 1), ("full", 3), ("full", 1)];
    for (outer, parallelism) in cases {
        let want = expected_interval(&orders, &pays, -300, 1_500, outer);
        let one_sided = want.iter().filter(|r| r.1.is_none() || r.3.is_none()).count();
        if outer != "inner" {
            assert!(one_sided > 10, "{outer}: too few unmatched rows to mean anything ({one_sided})");
        }
        assert!(want.len() - one_sided > 100, "{outer}: too few pairs to mean anything");
        let got = run_join(dir.path(), "type: interval, between: [-300ms, 1500ms]", outer, parallelism);
        assert_eq!(got, want, "interval {outer} at parallelism {parallelism}");
    }
}
