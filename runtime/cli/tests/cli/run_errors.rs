//! Bad input to `weir run`: a clear sentence naming the file, the key and what
//! was expected, exit code 2, and nothing run. Malformed records in a file
//! source: counted and skipped (or dead-lettered), or fatal when asked.

use std::path::Path;
use std::process::{Command, Output};

fn weir(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).current_dir(cwd).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

const BASE: &str = r#"
name: t
source: { type: datagen, workload: orders, count: 1000, watermark: { field: time, out_of_orderness: 5s } }
steps:
  - key_by: region
  - window: { type: tumbling, size: 1m }
  - aggregate: { count: count() }
sink: { type: file, path: out }
"#;

/// Runs `yaml` and expects exit 2 with every fragment in the message, and no output written.
fn rejects(yaml: &str, fragments: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let o = weir(&["run", "p.yaml"], dir.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.starts_with("weir: p.yaml: "), "{err}");
    for f in fragments {
        assert!(err.contains(f), "expected `{f}` in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    assert!(!dir.path().join("out").exists(), "nothing may run on bad input");
}

#[test]
fn unknown_key() {
    rejects(
        &BASE.replace("count: 1000,", "count: 1000, speed: 3,"),
        &["source", "unknown field `speed`", "expected one of"],
    );
}

#[test]
fn wrong_type() {
    rejects(&BASE.replace("count: 1000", "count: many"), &["source.count", "invalid type", "expected u64"]);
}

#[test]
fn bad_duration() {
    rejects(&BASE.replace("size: 1m", "size: 1 fortnight"), &["steps[1].window.size", "invalid duration", "10s"]);
}

#[test]
fn bad_state_section() {
    rejects(&format!("state: {{ backend: lsm }}\n{BASE}"), &["state.backend", "unknown variant `lsm`", "disk"]);
    rejects(&format!("state: {{ backend: disk, memory: 1MiB }}\n{BASE}"), &["state.memory", "too small", "16MiB"]);
    rejects(&format!("state: {{ backend: disk, memory: plenty }}\n{BASE}"), &["state.memory", "invalid size"]);
    rejects(&format!("state: {{ dir: /var/tmp }}\n{BASE}"), &["state.dir", "backend: disk"]);
    // A state directory that cannot be made: named before anything runs.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let blocked = file.join("state");
    rejects(
        &format!("state: {{ backend: disk, dir: {} }}\n{BASE}", blocked.display()),
        &["state", &blocked.display().to_string(), "cannot be written"],
    );
}

#[test]
fn buffer_timeout_out_of_range() {
    rejects(&format!("buffer_timeout: 20s\n{BASE}"), &["buffer_timeout", "at most 10s"]);
    rejects(&format!("buffer_timeout: soon\n{BASE}"), &["buffer_timeout", "invalid duration"]);
}

#[test]
fn processing_time_windows_out_of_place() {
    rejects(
        &BASE.replace("size: 1m }", "size: 1m, time: processing, allowed_lateness: 5s }"),
        &["steps[1].window.allowed_lateness", "does not apply to processing-time windows"],
    );
    rejects(&BASE.replace("size: 1m }", "size: 1m, time: wall }"), &["steps[1].window.time", "unknown variant `wall`"]);
    rejects(
        &BASE.replace("field: time, out_of_orderness", "field: time, ingestion_time: seen, out_of_orderness"),
        &["source.watermark", "either `field` or `ingestion_time`, not both"],
    );
    rejects(
        &BASE.replace("field: time, out_of_orderness", "ingestion_time: region, out_of_orderness"),
        &["source.watermark.ingestion_time", "`region` is already a field"],
    );
    rejects(
        &BASE.replace("field: time, out_of_orderness", "out_of_orderness"),
        &["source.watermark", "expected `field"],
    );
    rejects(
        &BASE.replace("size: 1m }", "size: 1m, time: processing, late: { type: stdout } }"),
        &["steps[1].window.late", "processing-time windows have no late rows"],
    );
    rejects(
        &BASE.replace("size: 1m }", "size: 1m, late: { type: file, path: \" \" } }"),
        &["steps[1].window.late.path"],
    );
    rejects(
        &BASE.replace(", watermark: { field: time, out_of_orderness: 5s }", ""),
        &["steps[1].window", "windows need event time", "time: processing"],
    );
}

#[test]
fn bad_lookups() {
    let with = |lookup: &str| BASE.replace("steps:\n", &format!("steps:\n  - lookup: {lookup}\n"));
    let ok_redis = "redis: { url: \"redis://127.0.0.1:1\", key: \"c:{region}\" }";
    rejects(
        &with("{ redis: { url: \"http://x\", key: \"c:{region}\" }, fields: { name: string } }"),
        &["steps[0].lookup.redis.url", "expected redis://host:port"],
    );
    rejects(
        &with("{ redis: { url: \"redis://127.0.0.1:1\", key: \"c:{nope}\" }, fields: { name: string } }"),
        &["steps[0].lookup.redis.key", "unknown field `nope`"],
    );
    rejects(
        &with(&format!("{{ {ok_redis}, fields: {{ amount: int }} }}")),
        &["steps[0].lookup.fields.amount", "already has a field"],
    );
    rejects(&with(&format!("{{ {ok_redis}, fields: {{ n: int }}, capacity: 0 }}")), &["steps[0].lookup.capacity"]);
    rejects(
        &with(&format!("{{ {ok_redis}, fields: {{ n: int }}, cache: {{ size: 0, ttl: 1m }} }}")),
        &["steps[0].lookup.cache", "above zero"],
    );
    rejects(&with(&format!("{{ {ok_redis}, fields: {{ n: decimal }} }}")), &["steps[0].lookup.fields", "decimal"]);
    let pg = "postgres: { url: \"postgres://weir@127.0.0.1:1/db\", table: regions, key: { name: region } }";
    rejects(&with("{ fields: { n: int } }"), &["steps[0].lookup", "`redis` or `postgres`"]);
    rejects(&with(&format!("{{ {ok_redis}, {pg}, fields: {{ n: int }} }}")), &["steps[0].lookup", "one store"]);
    rejects(
        &with("{ postgres: { url: \"mysql://x\", table: t, key: { id: region } }, fields: { n: int } }"),
        &["steps[0].lookup.postgres.url", "expected postgres://"],
    );
    rejects(
        &with("{ postgres: { url: \"postgres://x\", table: t, key: { id: nope } }, fields: { n: int } }"),
        &["steps[0].lookup.postgres.key", "unknown field `nope`"],
    );
    rejects(
        &with("{ postgres: { url: \"postgres://x\", table: t, key: {} }, fields: { n: int } }"),
        &["steps[0].lookup.postgres.key", "column: row_field"],
    );
}

#[test]
fn unknown_field_in_expression() {
    rejects(
        &BASE.replace("  - key_by: region", "  - filter: \"amout > 5\"\n  - key_by: region"),
        &["steps[0].filter", "unknown field `amout`"],
    );
}

#[test]
fn impossible_combinations() {
    rejects(
        &BASE.replace("  - window: { type: tumbling, size: 1m }\n", ""),
        &["steps[0].key_by", "followed by a window"],
    );
    rejects(
        &BASE.replace(", watermark: { field: time, out_of_orderness: 5s }", ""),
        &["steps[1].window", "event time"],
    );
    rejects(
        &BASE.replace("size: 1m", "size: 1m, slide: 10s"),
        &["steps[1].window.slide", "does not apply to tumbling"],
    );
    rejects(
        &BASE.replace("type: tumbling, size: 1m", "type: sliding, size: 1m, slide: 2m"),
        &["slide", "must not exceed size"],
    );
    rejects(&BASE.replace("count()", "sum(region)"), &["steps[2].aggregate.count", "numeric"]);
}

#[test]
fn bad_flags_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), BASE).unwrap();
    let o = weir(&["run", "p.yaml", "--set", "source.count=-3"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("source.count"), "{}", stderr(&o));
    let o = weir(&["run", "p.yaml", "--parallelism", "0"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let o = weir(&["run", "missing.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.yaml: cannot read"), "{}", stderr(&o));
    let o = weir(&["bench", "q99"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown workload `q99`"));
    // A benchmark generates its input: a pipeline reading a file is refused, naming the source.
    std::fs::write(dir.path().join("f.yaml"), FILE_SOURCE).unwrap();
    let o = weir(&["bench", "--pipeline", "f.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("f.yaml: source: a benchmark generates its input"), "{}", stderr(&o));
    let o = weir(&["bench", "--pipeline", "missing.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.yaml: cannot read"), "{}", stderr(&o));
}

const FILE_SOURCE: &str = r#"
name: t
source:
  type: file
  path: in.jsonl
  fields: { region: string, amount: int, time: int }
  watermark: { field: time, out_of_orderness: 1s }
  dead_letter: dead
steps:
  - key_by: region
  - window: { type: tumbling, size: 1m }
  - aggregate: { n: count(), total: sum(amount) }
sink: { type: file, path: out }
"#;

const INPUT: &str = r#"{"region":"east","amount":5,"time":1000}
not json at all
{"region":"east","amount":"five","time":2000}
{"region":"west","amount":7}
{"region":"east","amount":6,"time":3000}
"#;

#[test]
fn malformed_records_are_counted_skipped_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), FILE_SOURCE).unwrap();
    std::fs::write(dir.path().join("in.jsonl"), INPUT).unwrap();
    let o = weir(&["run", "-q", "p.yaml"], dir.path());
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("3 malformed records skipped"), "{err}");
    assert!(err.contains("in.jsonl:2: skipping malformed record: not JSON"), "{err}");
    let out = std::fs::read_to_string(dir.path().join("out/part-0.jsonl")).unwrap();
    assert_eq!(out.trim(), r#"{"region":"east","window_start":0,"window_end":60000,"n":2,"total":11}"#);
    let dead = std::fs::read_to_string(dir.path().join("dead/dead-letter-0.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["line"].as_u64().unwrap()).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!(lines[2]["record"], r#"{"region":"west","amount":7}"#);
    assert!(lines[1]["error"].as_str().unwrap().contains("field `amount`: expected int"));
}

#[test]
fn malformed_record_fails_the_job_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), FILE_SOURCE.replace("dead_letter: dead", "on_error: fail")).unwrap();
    std::fs::write(dir.path().join("in.jsonl"), INPUT).unwrap();
    let o = weir(&["run", "-q", "p.yaml"], dir.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("in.jsonl:2: malformed record: not JSON"), "{err}");
}

const KAFKA: &str = r#"
name: t
source:
  type: kafka
  bootstrap: 127.0.0.1:9
  topic: orders
  fields: { order_id: string, region: string, amount: int, time: int }
  watermark: { field: time, out_of_orderness: 5s }
steps:
  - key_by: region
  - window: { type: tumbling, size: 1m }
  - aggregate: { count: count(), amount: sum(amount) }
sink: { type: postgres, url: "postgres://weir@127.0.0.1:9/weir", table: stats, key: [region, window_start] }
"#;

#[test]
fn connector_keys_are_checked_before_anything_runs() {
    rejects(&KAFKA.replace("  topic: orders\n", ""), &["source.topic", "required for kafka sources"]);
    rejects(
        &KAFKA.replace("  topic: orders\n", "  topic: orders\n  start: yesterday\n"),
        &["source.start", "earliest, latest, committed or timestamp"],
    );
    rejects(
        &KAFKA.replace("  topic: orders\n", "  topic: orders\n  format: avro\n"),
        &["source.format", "unknown format `avro`"],
    );
    rejects(
        &KAFKA.replace("  topic: orders\n", "  topic: orders\n  count: 5\n"),
        &["source.count", "only applies to datagen sources"],
    );
    rejects(
        &KAFKA.replace("key: [region, window_start]", "key: [region, minute]"),
        &["sink.key", "unknown field `minute`"],
    );
    rejects(
        &KAFKA.replace("key: [region, window_start] }", "key: region, guarantee: twice }"),
        &["sink", "unknown variant `twice`"],
    );
    rejects(
        &KAFKA.replace("key: [region, window_start] }", "key: [region, window_start], guarantee: exactly-once }"),
        &["sink.guarantee", "exactly-once commits with checkpoints"],
    );
    let redis = r#"sink: { type: redis, url: "redis://127.0.0.1:9", key: "m:{regoin}", field: "{window_start}", value: count }"#;
    let yaml = KAFKA.lines().filter(|l| !l.starts_with("sink:")).collect::<Vec<_>>().join("\n") + "\n" + redis + "\n";
    rejects(&yaml, &["sink.key", "unknown field `regoin`"]);
    rejects(
        &yaml.replace("m:{regoin}", "m:{region}").replace("value: count", "value: total"),
        &["sink.value", "unknown field `total`"],
    );
}
