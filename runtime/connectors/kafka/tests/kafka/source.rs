//! The Kafka source against librdkafka's mock cluster, driven directly:
//! start positions, bounded end offsets, offsets in snapshots (restored at
//! another parallelism without loss or repetition), offsets committed to the
//! group after a checkpoint, and consumer lag as the pending-records metric.
//! Where the mock broker falls short of a real one, the test says so.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir_core::checkpoint::metadata::RestoredState;
use weir_core::graph::{SnapshotCollector, SubtaskInfo};
use weir_core::source::{Source, SourcePoll};
use weir_core::{Record, TaskResult};
use weir_kafka::StartAt;
use weir_kafka::rdkafka;
use weir_kafka::source::{Decode, KafkaSource, KafkaSourceConfig, OnMalformed};
use weir_kafka::testing::MockKafka;

fn info(index: usize, parallelism: usize) -> SubtaskInfo {
    SubtaskInfo {
        vertex: "kafka".into(),
        uid: "0-kafka".into(),
        index,
        parallelism,
        max_parallelism: 128,
        metrics: Default::default(),
        restored: None,
        snapshots: SnapshotCollector::default(),
        checkpointing: true,
        alignment: Default::default(),
        side_outputs: Default::default(),
        state_backend: Default::default(),
    }
}

/// Produces `values` to `topic`, each with a timestamp, to partition `value % partitions`.
fn produce(kafka: &MockKafka, topic: &str, partitions: i32, values: impl Iterator<Item = i64>, timestamp: i64) {
    let producer: BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", kafka.bootstrap()).create().unwrap();
    for v in values {
        let payload = v.to_string();
        let record = BaseRecord::<(), _>::to(topic)
            .payload(&payload)
            .partition((v % partitions as i64) as i32)
            .timestamp(timestamp);
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn config(kafka: &MockKafka, start: StartAt, bounded: bool) -> KafkaSourceConfig {
    KafkaSourceConfig {
        bootstrap: kafka.bootstrap(),
        topic: "numbers".into(),
        group: "g".into(),
        start,
        bounded,
        properties: Vec::new(),
    }
}

fn source(config: KafkaSourceConfig, info: &SubtaskInfo) -> KafkaSource<i64> {
    let decode: Decode<i64> =
        Arc::new(|b: &[u8]| std::str::from_utf8(b).map_err(|e| e.to_string())?.parse().map_err(|e| format!("{e}")));
    let on_malformed: OnMalformed = Box::new(|m| -> TaskResult { panic!("malformed: {m:?}") });
    KafkaSource::new(config, info, decode, None, on_malformed)
}

/// Polls until finished (bounded), `want` values, or 20 s.
fn drain(s: &mut KafkaSource<i64>, want: usize) -> Vec<i64> {
    drain_for(s, want, Duration::from_secs(20))
}

fn drain_for(s: &mut KafkaSource<i64>, want: usize, limit: Duration) -> Vec<i64> {
    let mut out: Vec<Record<i64>> = Vec::new();
    let deadline = Instant::now() + limit;
    while out.len() < want && Instant::now() < deadline {
        if s.poll(&mut out).unwrap() == SourcePoll::Finished {
            break;
        }
    }
    let mut v: Vec<i64> = out.into_iter().map(|r| r.value).collect();
    v.sort_unstable();
    v
}

#[test]
fn bounded_reading_restores_at_another_parallelism_without_loss_or_repetition() {
    let kafka = MockKafka::start(1);
    kafka.create_topic("numbers", 4);
    produce(&kafka, "numbers", 4, 0..4000, 1_000);
    // Two subtasks read part of their partitions and snapshot.
    let (mut seen, mut entries) = (Vec::new(), Vec::new());
    for i in 0..2 {
        let mut s = source(config(&kafka, StartAt::Earliest, true), &info(i, 2));
        seen.extend(drain(&mut s, 700));
        entries.extend(s.snapshot_state().unwrap().entries);
    }
    assert_eq!(entries.len(), 4, "one entry per partition");
    // Records produced after the first start are beyond the bounded end.
    produce(&kafka, "numbers", 4, 4000..4100, 1_000);
    for j in 0..3 {
        let mut s = source(config(&kafka, StartAt::Earliest, true), &info(j, 3));
        let share = entries.iter().enumerate().filter(|(k, _)| k % 3 == j).map(|(_, e)| e.clone()).collect();
        s.restore_state(RestoredState { entries: share, all_entries: entries.clone(), ..Default::default() }).unwrap();
        seen.extend(drain(&mut s, usize::MAX));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..4000).collect::<Vec<_>>(), "every record once, none past the end offsets");
}

#[test]
fn start_positions_commits_and_lag() {
    let kafka = MockKafka::start(1);
    kafka.create_topic("numbers", 2);
    produce(&kafka, "numbers", 2, 0..100, 1_000);
    produce(&kafka, "numbers", 2, 100..200, 5_000);

    // timestamp: the mock cannot look offsets up by time (librdkafka's mock answers
    // -1, "no such record", to every ListOffsets by timestamp; a real broker gives the
    // first offset at or after it). The source reads "none" as: start at the end.
    let mut s = source(config(&kafka, StartAt::Timestamp(5_000), true), &info(0, 1));
    assert_eq!(drain(&mut s, usize::MAX), Vec::<i64>::new());

    // latest: nothing of what is there; then what comes.
    let mut s = source(config(&kafka, StartAt::Latest, false), &info(0, 1));
    assert_eq!(drain_for(&mut s, 1, Duration::from_secs(2)), Vec::<i64>::new());
    produce(&kafka, "numbers", 2, 200..210, 9_000);
    assert_eq!(drain(&mut s, 10), (200..210).collect::<Vec<_>>());

    // earliest, part way; a completed checkpoint commits the position to the group...
    let info0 = info(0, 1);
    let mut s = source(config(&kafka, StartAt::Earliest, false), &info0);
    let first = drain(&mut s, 50);
    assert!(first.len() >= 50, "{first:?}");
    s.snapshot_state().unwrap();
    s.notify_checkpoint_complete(1).unwrap();
    // ...and the lag shows as pending records once librdkafka's statistics arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while info0.metrics.pending_records.load(Ordering::Relaxed) < 0 && Instant::now() < deadline {
        drain_for(&mut s, usize::MAX, Duration::from_millis(200)); // statistics arrive during polls
    }
    let pending = info0.metrics.pending_records.load(Ordering::Relaxed);
    assert!(pending >= 0, "no lag reported");
    drop(s);
    // committed: a new job of the group resumes where the checkpoint committed.
    std::thread::sleep(Duration::from_millis(500)); // the commit was asynchronous
    let mut s = source(config(&kafka, StartAt::Committed, true), &info(0, 1));
    let rest = drain(&mut s, usize::MAX);
    let mut all = [first, rest].concat();
    all.sort_unstable();
    assert_eq!(all, (0..210).collect::<Vec<_>>(), "committed offsets resume without loss or repetition");
}

/// A source whose records are their payloads' lengths (any payload decodes).
fn lengths(config: KafkaSourceConfig, info: &SubtaskInfo) -> KafkaSource<i64> {
    let decode: Decode<i64> = Arc::new(|b: &[u8]| Ok(b.len() as i64));
    let on_malformed: OnMalformed = Box::new(|m| -> TaskResult { panic!("malformed: {m:?}") });
    KafkaSource::new(config, info, decode, None, on_malformed)
}

#[test]
fn a_restored_offset_that_retention_deleted_fails_the_source_unless_a_reset_policy_is_set() {
    let kafka = MockKafka::start(1);
    kafka.create_topic("numbers", 1);
    produce(&kafka, "numbers", 1, 0..10, 1_000);
    let mut s = lengths(config(&kafka, StartAt::Earliest, false), &info(0, 1));
    assert_eq!(drain(&mut s, 10).len(), 10);
    let entries = s.snapshot_state().unwrap().entries;
    drop(s);

    // Retention: the mock keeps at most 5 MB per partition and drops the oldest
    // record batches beyond that. 6 MB more push offset 10 out.
    let producer: BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", kafka.bootstrap()).create().unwrap();
    let big = vec![b'x'; 600_000];
    for _ in 0..10 {
        producer.send(BaseRecord::<(), _>::to("numbers").payload(&big).partition(0)).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    let restored = || RestoredState { entries: entries.clone(), all_entries: entries.clone(), ..Default::default() };

    // The default: the task fails, naming topic, partition and offset.
    let mut s = lengths(config(&kafka, StartAt::Earliest, false), &info(0, 1));
    s.restore_state(restored()).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        match s.poll(&mut out) {
            Err(e) => break e.to_string(),
            Ok(_) => assert!(Instant::now() < deadline, "no error; read {} records instead", out.len()),
        }
    };
    assert!(out.is_empty(), "nothing was read past the hole");
    assert!(error.contains("`numbers`") && error.contains("partition 0: offset 10 was deleted"), "{error}");

    // An explicit policy is followed: `earliest` goes on from the oldest record kept.
    let mut c = config(&kafka, StartAt::Earliest, false);
    c.properties.push(("auto.offset.reset".into(), "earliest".into()));
    let mut s = lengths(c, &info(0, 1));
    s.restore_state(restored()).unwrap();
    let read = drain(&mut s, 1);
    assert!(!read.is_empty() && read.iter().all(|&len| len == 600_000), "{read:?}");
}
