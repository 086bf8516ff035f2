//! `weir bench` against the batch oracles of `bench/WORKLOADS.md`.
//!
//! For every workload, the built `weir` binary runs at parallelism 1, 2 and 4
//! over two event counts (one not a multiple of the datagen block size), and
//! its `outputs=` and `checksum=` must equal what the Python oracle computes
//! from the workload definition alone. The oracle runs once per (workload,
//! size). The oracle directory is `<workspace>/bench/oracle`, or
//! `WEIR_ORACLE_DIR`; when it is missing the tests fail: they never skip.

use std::process::Command;

use crate::common::{Answer, answer_in, field, oracle, text};

const SIZES: [u64; 2] = [120_000, 77_777];
const PARALLELISMS: [usize; 3] = [1, 2, 4];

/// Runs `weir bench` and checks the report line echoes the run's parameters.
fn weir_bench(workload: &str, events: u64, parallelism: usize) -> Answer {
    weir_bench_with(workload, events, parallelism, &[])
}

/// As [`weir_bench`], with further flags.
pub fn weir_bench_with(workload: &str, events: u64, parallelism: usize, flags: &[&str]) -> Answer {
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", workload, "--events", &events.to_string(), "--parallelism", &parallelism.to_string()])
        .args(flags)
        .output()
        .expect("run the weir binary");
    let (stdout, stderr) = text(&output);
    let what = format!("weir bench {workload} --events {events} --parallelism {parallelism}");
    assert!(output.status.success(), "{what} failed ({}):\n{stderr}", output.status);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("query=")).collect();
    assert_eq!(lines.len(), 1, "{what} must print exactly one report line:\n{stdout}");
    let line = lines[0];
    assert_eq!(field(line, "query"), Some(workload), "{line}");
    assert_eq!(field(line, "events"), Some(events.to_string().as_str()), "{line}");
    assert_eq!(field(line, "parallelism"), Some(parallelism.to_string().as_str()), "{line}");
    for key in ["net_ms", "cpu_ms", "events_per_s"] {
        assert!(field(line, key).is_some_and(|v| v.parse::<f64>().is_ok()), "{line} lacks a numeric {key}");
    }
    answer_in(line, &what)
}

fn check_against_oracle(workload: &str) {
    for events in SIZES {
        let expected = oracle(workload, events);
        assert!(expected.outputs > 0, "the oracle of {workload} over {events} events has no rows");
        for parallelism in PARALLELISMS {
            let actual = weir_bench(workload, events, parallelism);
            assert_eq!(actual, expected, "{workload} over {events} events at parallelism {parallelism}");
        }
    }
}

#[test]
fn orders_window_matches_the_oracle() {
    check_against_oracle("orders-window");
}

#[test]
fn orders_dedup_matches_the_oracle() {
    check_against_oracle("orders-dedup");
}

#[test]
fn orders_sliding_by_slices_matches_the_oracle() {
    check_against_oracle("orders-sliding");
}

#[test]
fn orders_payments_interval_join_matches_the_oracle() {
    check_against_oracle("orders-payments");
}

#[test]
fn q0_passthrough_matches_the_oracle() {
    check_against_oracle("q0");
}

/// The exchange's benchmarks (q0 with every record crossing round robin or
/// by key) must still compute q0.
#[test]
fn q0_through_an_exchange_matches_the_q0_oracle() {
    for events in SIZES {
        let expected = oracle("q0", events);
        for workload in ["q0-rebalance", "q0-keyed"] {
            for parallelism in PARALLELISMS {
                let actual = weir_bench(workload, events, parallelism);
                assert_eq!(actual, expected, "{workload} over {events} events at parallelism {parallelism}");
            }
        }
    }
}

#[test]
fn q1_currency_conversion_matches_the_oracle() {
    check_against_oracle("q1");
}

/// q1 with every row fetched through async I/O from a service 1 ms away.
#[test]
fn q1_through_async_lookups_matches_q1s_oracle() {
    let events = 77_777;
    let expected = oracle("q1", events);
    for parallelism in [1, 2] {
        assert_eq!(weir_bench("q1-lookup", events, parallelism), expected, "at parallelism {parallelism}");
    }
}

#[test]
fn q2_selection_matches_the_oracle() {
    check_against_oracle("q2");
}

#[test]
fn q5_hot_items_matches_the_oracle() {
    check_against_oracle("q5");
}

#[test]
fn q7_highest_bid_matches_the_oracle() {
    check_against_oracle("q7");
}

#[test]
fn oracle_reproduces_the_documented_example() {
    // bench/WORKLOADS.md: the first 300,000 orders give 24 rows, checksum -6933334737448946781.
    assert_eq!(oracle("orders-window", 300_000), Answer { outputs: 24, checksum: -6_933_334_737_448_946_781 });
}

#[test]
fn unknown_workload_is_bad_input() {
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "q99", "--events", "10"])
        .output()
        .expect("run the weir binary");
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "exit code for bad input; stderr:\n{stderr}");
    assert!(stderr.contains("q99"), "the error names the unknown workload:\n{stderr}");
}

/// `weir bench QUERY --events N` with `args`: its report line, after checking
/// that it ran and reported a p50 and a p99 latency in order.
fn bench_at_a_rate(query: &str, events: u64, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", query, "--events", &events.to_string()])
        .args(args)
        .output()
        .expect("run the weir binary");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{query} {args:?}: {stderr}");
    let line = stdout.lines().find(|l| l.starts_with("query=")).expect("a report line").to_string();
    let p50 = field(&line, "latency_p50_ms").and_then(|v| v.parse::<f64>().ok());
    let p99 = field(&line, "latency_p99_ms").and_then(|v| v.parse::<f64>().ok());
    assert!(matches!((p50, p99), (Some(a), Some(b)) if 0.0 <= a && a <= b), "latencies in {line}");
    line
}

/// `weir bench q1 --rate` paces the source and reports the rows' latency
/// (source to sink); the answer is the oracle's whatever the buffer timeout.
#[test]
fn q1_at_a_rate_reports_latency_and_the_oracle_answer() {
    let events = 60_000u64;
    let expected = oracle("q1", events);
    for buffer_timeout in ["0ms", "5ms", "100ms"] {
        let args = ["--parallelism", "2", "--rate", "100000", "--buffer-timeout", buffer_timeout];
        let line = bench_at_a_rate("q1", events, &args);
        assert_eq!(answer_in(&line, "q1 at a rate"), expected, "{line}");
    }
}

/// `weir bench orders-window --rate` times each window's row from the
/// watermark that fired it; the answer is the oracle's.
#[test]
fn orders_window_at_a_rate_reports_window_latency_and_the_oracle_answer() {
    let events = 300_000u64;
    let expected = oracle("orders-window", events);
    for parallelism in ["1", "2"] {
        let line = bench_at_a_rate("orders-window", events, &["--parallelism", parallelism, "--rate", "400000"]);
        assert_eq!(answer_in(&line, "orders-window at a rate"), expected, "{line}");
    }
}

#[test]
fn bad_rate_and_buffer_timeout_are_bad_input() {
    for (args, named) in [
        (&["--rate", "0"][..], "--rate"),
        (&["--rate=-5"][..], "--rate"),
        (&["--buffer-timeout", "a while"][..], "--buffer-timeout"),
    ] {
        refuses(&["bench", "q1", "--events", "10"], args, named);
    }
}

/// `weir bench` with `args` then `flags` exits 2 with an error naming `named`.
fn refuses(args: &[&str], flags: &[&str], named: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_weir")).args(args).args(flags).output().expect("run the weir binary");
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{flags:?}: exit code for bad input; stderr:\n{stderr}");
    assert!(stderr.contains(named), "{flags:?}: the error names {named}:\n{stderr}");
}

/// Keyed state on disk (`--state-backend disk`, the smallest memory budget so
/// that the caches are written back and emptied while the job runs): every
/// workload's answer is the oracle's, at parallelism 1, 2 and 4.
#[test]
fn every_workload_matches_the_oracle_with_state_on_disk() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    let flags = ["--state-backend", "disk", "--state-memory", "16MiB", "--state-dir", dir];
    let events = 77_777;
    for workload in ["orders-window", "orders-dedup", "orders-sliding", "orders-payments", "q0", "q1", "q2", "q5", "q7"]
    {
        let expected = oracle(workload, events);
        for parallelism in PARALLELISMS {
            let actual = weir_bench_with(workload, events, parallelism, &flags);
            assert_eq!(actual, expected, "{workload} with state on disk at parallelism {parallelism}");
        }
    }
    let left: Vec<_> = std::fs::read_dir(state.path()).unwrap().collect();
    assert!(left.is_empty(), "the disk backend's folders outlive their processes: {left:?}");
}

#[test]
fn bad_state_flags_are_bad_input() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let not_a_dir = file.path().to_str().unwrap();
    for (args, named) in [
        (&["--state-backend", "rocks"][..], "--state-backend"),
        (&["--state-backend", "disk", "--state-memory", "1MiB"][..], "state.memory"),
        (&["--state-backend", "disk", "--state-memory", "lots"][..], "--state-memory"),
        (&["--state-backend", "heap", "--state-memory", "64MiB"][..], "--state-backend disk"),
        (&["--state-backend", "disk", "--state-dir", not_a_dir][..], not_a_dir),
    ] {
        refuses(&["bench", "orders-dedup", "--events", "10"], args, named);
    }
}

/// `weir bench state` with rounds of changes after the first checkpoint, on
/// disk (incremental by default) and on the heap with `--state-incremental
/// true`: each round's checkpoint stores about the changed share of the
/// state, and the job restored from the last checkpoint (a chain of change
/// files) finds every key at its last value.
#[test]
fn bench_state_rounds_store_only_their_changes_and_restore_every_key() {
    let state = tempfile::tempdir().unwrap();
    let checkpoints = tempfile::tempdir().unwrap();
    let disk = ["--state-backend", "disk", "--state-memory", "16MiB", "--state-dir", state.path().to_str().unwrap()];
    for flags in [&disk[..], &["--state-incremental", "true"][..]] {
        let output = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["bench", "state", "--state-mb", "8", "--parallelism", "2", "--checkpoint-interval", "200ms"])
            .args(["--checkpoint-dir", checkpoints.path().to_str().unwrap()])
            .args(["--rounds", "4", "--change-percent", "2"])
            .args(flags)
            .output()
            .expect("run the weir binary");
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{flags:?}: {stderr}");
        let line = stdout.lines().find(|l| l.starts_with("state_mb=")).expect("a report line");
        let number =
            |key| field(line, key).and_then(|v| v.parse::<f64>().ok()).unwrap_or_else(|| panic!("{key} in {line}"));
        assert_eq!(number("restored_keys"), number("keys"), "{line}");
        assert_eq!((number("missing_keys"), number("corrupt_keys")), (0.0, 0.0), "{line}");
        assert!(number("change_checkpoints") >= 4.0, "{line}");
        // 2 % of the keys change per round; a round's checkpoint stores about that.
        let share = number("change_bytes_max_percent");
        assert!(share > 0.5 && share < 6.0, "a round's checkpoint stored {share} % of the state: {line}");
    }
    refuses(
        &["bench", "state", "--state-mb", "1", "--checkpoint-dir", "/tmp"],
        &["--rounds", "2", "--change-percent", "0"],
        "--change-percent",
    );
}
