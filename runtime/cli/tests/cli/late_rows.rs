//! Late rows of an event-time window to a side sink (`late:` on the window
//! step): exactly the rows too late for every window they belong to, as
//! they came in, and none of them in the windows' counts.

use std::collections::BTreeMap;
use std::process::Command;

use crate::common::{committed_rows, text};

#[test]
fn rows_too_late_for_their_window_go_to_the_late_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let mut late = Vec::new();
    let mut counts: BTreeMap<(String, i64), i64> = BTreeMap::new();
    // Enough lines that a watermark goes out mid-file: a source reading in bulk
    // emits one per 16 Ki records (weir_core's WATERMARK_EVERY).
    for i in 0..40_000i64 {
        let (region, time) = (format!("r{}", i % 3), 100_000 + i * 10);
        lines.push(format!("{{\"region\":\"{region}\",\"amount\":{i},\"time\":{time}}}"));
        *counts.entry((region, time / 10_000 * 10_000)).or_default() += 1;
        // Well after the first watermark: rows of windows long fired.
        if i >= 20_000 && i % 2_000 == 0 {
            let time = 1_000 + i;
            lines.push(format!("{{\"region\":\"late\",\"amount\":{i},\"time\":{time}}}"));
            late.push(("late".to_string(), i, time));
        }
    }
    std::fs::write(dir.path().join("in.jsonl"), lines.join("\n") + "\n").unwrap();
    let yaml = "name: late\n\
                source: { type: file, path: in.jsonl, fields: { region: string, amount: int, time: int }, watermark: { field: time, out_of_orderness: 1s } }\n\
                steps:\n\
                \x20 - key_by: region\n\
                \x20 - window: { type: tumbling, size: 10s, late: { type: file, path: late } }\n\
                \x20 - aggregate: { n: count() }\n\
                sink: { type: file, path: out }\n";
    std::fs::write(dir.path().join("late.yaml"), yaml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-q", "late.yaml", "--parallelism", "1", "--rest-port", "0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");

    let int = |r: &serde_json::Value, k: &str| r[k].as_i64().unwrap_or_else(|| panic!("no `{k}` in {r}"));
    let mut got_late: Vec<(String, i64, i64)> = committed_rows(&dir.path().join("late"))
        .iter()
        .map(|r| (r["region"].as_str().unwrap().to_string(), int(r, "amount"), int(r, "time")))
        .collect();
    got_late.sort();
    late.sort();
    assert_eq!(got_late, late, "the late sink holds exactly the late rows");
    let got: BTreeMap<(String, i64), i64> = committed_rows(&dir.path().join("out"))
        .iter()
        .map(|r| ((r["region"].as_str().unwrap().to_string(), int(r, "window_start")), int(r, "n")))
        .collect();
    assert_eq!(got, counts, "the windows count every row but the late ones");
}
