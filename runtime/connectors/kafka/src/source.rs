//! The Kafka source: a topic's partitions as splits, their offsets in checkpoints.
//!
//! Each subtask reads its partitions through a consumer with a *manual*
//! assignment (no group rebalancing: the job decides who reads what). At the
//! first start, partition `p` goes to subtask `p % parallelism`, starting where
//! [`StartAt`] says; a bounded source also fixes each partition's end offset
//! then, and keeps it in its checkpoints, so a restored bounded job stops at
//! the same place. On restore the partitions and offsets come from the
//! checkpoint alone (never from the group's committed offsets), dealt over the
//! new subtasks, so a restore at another parallelism neither skips nor repeats
//! a record; partitions added to the topic since then start per [`StartAt`].
//!
//! A read position that is no longer in its partition (retention deleted the
//! records a restored checkpoint points at, or those a lagging source had
//! still to read) fails the task with an error naming the topic, partition
//! and offset: librdkafka's `auto.offset.reset` is `error` here, where its
//! default would skip silently to the partition's end. A source whose
//! `properties` set `auto.offset.reset` to `earliest` or `latest` goes on
//! from there instead, as asked. Where a partition starts the first time
//! ([`StartAt`]) is decided by the source itself and does not change.
//!
//! Offsets are committed back to the group after each completed checkpoint,
//! for monitoring tools only. Event time, when configured, is assigned here
//! with one watermark generator per partition ([`SplitWatermarks`]). Consumer
//! lag comes from librdkafka's statistics and is published as the subtask's
//! pending-records metric.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use weir_core::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use weir_core::graph::SubtaskInfo;
use weir_core::metrics::SubtaskMetrics;
use weir_core::source::{Source, SourcePoll, SourceWatermark, SplitWatermarks};
use weir_core::state::codec;
use weir_core::time::now_ms;
use weir_core::{NO_TIMESTAMP, Record, TaskError, TaskResult, Timestamp, WatermarkStrategy};

use crate::{KafkaError, StartAt};

/// How long metadata and offset requests may take before the source gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Records taken per poll of the task.
const BATCH: usize = 1024;

/// Decodes a record's value; the error says what is wrong with it.
pub type Decode<T> = Arc<dyn Fn(&[u8]) -> Result<T, String> + Send + Sync>;
/// A record's event time.
pub type Extract<T> = Arc<dyn Fn(&T) -> Timestamp + Send + Sync>;

/// A record that could not be decoded.
#[derive(Debug)]
pub struct Malformed<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub payload: &'a [u8],
    pub error: String,
}

/// Handles malformed records (count, log, dead-letter, or fail the job).
pub type OnMalformed = Box<dyn FnMut(Malformed<'_>) -> TaskResult + Send>;

/// What the source reads.
#[derive(Clone, Debug)]
pub struct KafkaSourceConfig {
    pub bootstrap: String,
    pub topic: String,
    /// The group offsets are committed to (and read from, for [`StartAt::Committed`]).
    pub group: String,
    pub start: StartAt,
    /// Stop at the end offsets seen when the job first started.
    pub bounded: bool,
    /// Further librdkafka consumer properties (`security.protocol`, ...).
    /// `auto.offset.reset` is `error` unless set here (`earliest` or
    /// `latest`): what happens when a read position is no longer in its
    /// partition.
    pub properties: Vec<(String, String)>,
}

/// One partition's read position: a checkpoint entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionSplit {
    partition: i32,
    /// The offset of the next record to read.
    next: i64,
    /// Bounded: where the partition ends (exclusive).
    end: Option<i64>,
}

impl PartitionSplit {
    fn finished(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }
}

/// Keeps the partitions' high watermarks from librdkafka's statistics (sent
/// every second, during polls), from which the source computes its lag.
struct LagContext {
    topic: String,
    high: std::sync::Mutex<Option<Vec<(i32, i64)>>>,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let high = topic.partitions.values().filter(|p| p.partition >= 0 && p.hi_offset >= 0);
        *self.high.lock().expect("lag poisoned") = Some(high.map(|p| (p.partition, p.hi_offset)).collect());
    }
}

impl ConsumerContext for LagContext {}

pub struct KafkaSource<T> {
    config: KafkaSourceConfig,
    subtask: usize,
    parallelism: usize,
    metrics: Arc<SubtaskMetrics>,
    /// The checkpoint's splits for this subtask, until the first poll takes them.
    restored: Option<RestoredState>,
    decode: Decode<T>,
    event_time: Option<(Extract<T>, SplitWatermarks<i32>)>,
    on_malformed: OnMalformed,
    consumer: Option<BaseConsumer<LagContext>>,
    splits: BTreeMap<i32, PartitionSplit>,
    /// The positions of the latest snapshot, committed to the group when its checkpoint completes.
    last_snapshot: Option<TopicPartitionList>,
    /// Whether the last poll found nothing (the next one waits a little).
    quiet: bool,
}

impl<T> KafkaSource<T> {
    /// The source of one subtask; it connects on its first poll.
    pub fn new(
        config: KafkaSourceConfig,
        info: &SubtaskInfo,
        decode: Decode<T>,
        event_time: Option<(Extract<T>, WatermarkStrategy)>,
        on_malformed: OnMalformed,
    ) -> Self {
        // A source that assigns its own event time joins its alignment group
        // itself; its task publishes the watermarks it reports.
        if let Some(alignment) = event_time.as_ref().and_then(|(_, s)| s.alignment.as_ref()) {
            info.alignment.join(alignment);
        }
        KafkaSource {
            config,
            subtask: info.index,
            parallelism: info.parallelism,
            metrics: info.metrics.clone(),
            restored: None,
            decode,
            event_time: event_time.map(|(f, s)| (f, SplitWatermarks::new(s))),
            on_malformed,
            consumer: None,
            splits: BTreeMap::new(),
            last_snapshot: None,
            quiet: false,
        }
    }

    fn error(&self, what: impl std::fmt::Display) -> TaskError {
        TaskError::Operator(format!(
            "kafka source (topic `{}` at {}): {what}",
            self.config.topic, self.config.bootstrap
        ))
    }

    /// Connects, decides the splits, and assigns them.
    fn start(&mut self) -> TaskResult {
        let c = &self.config;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &c.bootstrap)
            .set("group.id", &c.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("statistics.interval.ms", "1000")
            // librdkafka postpones a partition's next fetch by this much once its
            // local queue is full (default 1 s): a job that drains the queue
            // quickly would sit idle for most of that second.
            .set("fetch.queue.backoff.ms", "10")
            // A position outside its partition (records deleted by retention) is an
            // error the task fails with, not a silent skip to the end (librdkafka's
            // default); the properties below may choose `earliest` or `latest`.
            .set("auto.offset.reset", "error")
            .set("client.id", format!("weir-{}-{}", c.group, self.subtask));
        for (k, v) in &c.properties {
            config.set(k, v);
        }
        let context = LagContext { topic: c.topic.clone(), high: Default::default() };
        let consumer: BaseConsumer<LagContext> =
            config.create_with_context(context).map_err(|e| self.error(format!("cannot create a consumer: {e}")))?;
        let partitions = partitions(&consumer, &c.topic).map_err(|e| self.error(e))?;

        // Splits from the checkpoint (when there is one that knows this source)...
        let restored = self.restored.take().filter(|r| !r.all_entries.is_empty());
        let mut known = Vec::new();
        if let Some(r) = &restored {
            for e in &r.entries {
                let split: PartitionSplit = codec::decode(e, "a kafka partition position")?;
                self.splits.insert(split.partition, split);
            }
            for e in &r.all_entries {
                known.push(codec::decode::<PartitionSplit>(e, "a kafka partition position")?.partition);
            }
        }
        // ...and partitions it does not know (all of them at a first start), per `start`.
        let new: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !known.contains(p) && *p as usize % self.parallelism == self.subtask)
            .collect();
        for p in new {
            let split = self.initial_split(&consumer, p)?;
            self.splits.insert(p, split);
        }
        let now = now_ms();
        let mut assignment = TopicPartitionList::new();
        for split in self.splits.values().filter(|s| !s.finished()) {
            assignment
                .add_partition_offset(&c.topic, split.partition, Offset::Offset(split.next))
                .map_err(|e| self.error(e))?;
            if let Some((_, w)) = &mut self.event_time {
                w.add(split.partition, now);
            }
        }
        consumer.assign(&assignment).map_err(|e| self.error(format!("cannot assign partitions: {e}")))?;
        tracing::info!(
            "kafka source {}/{}: partitions {:?} of `{}`",
            self.subtask + 1,
            self.parallelism,
            self.splits.keys().collect::<Vec<_>>(),
            c.topic
        );
        self.consumer = Some(consumer);
        Ok(())
    }

    /// Where a partition new to the job starts (and, bounded, ends).
    fn initial_split(&self, consumer: &BaseConsumer<LagContext>, partition: i32) -> TaskResult<PartitionSplit> {
        let topic = &self.config.topic;
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| self.error(format!("cannot read the offsets of partition {partition}: {e}")))?;
        let next = match self.config.start {
            StartAt::Earliest => low,
            StartAt::Latest => high,
            StartAt::Timestamp(ms) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, partition, Offset::Offset(ms)).map_err(|e| self.error(e))?;
                let found = consumer
                    .offsets_for_times(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| self.error(format!("cannot look up offsets for time {ms}: {e}")))?;
                match found.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => high, // nothing at or after that time yet
                }
            }
            StartAt::Committed => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, partition);
                let committed = consumer
                    .committed_offsets(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| self.error(format!("cannot read the group's committed offsets: {e}")))?;
                match committed.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= low => o,
                    _ => low, // no commit (or it expired): from the beginning
                }
            }
        };
        tracing::debug!("kafka source: partition {partition} of `{topic}`: offsets {low}..{high}, starting at {next}");
        Ok(PartitionSplit { partition, next, end: self.config.bounded.then_some(high) })
    }

    /// librdkafka found a read position outside its partition and, with
    /// `auto.offset.reset=error`, stopped fetching it. Its error does not say
    /// which partition (rdkafka drops that): the splits whose position lies
    /// outside their partition's offsets now are the ones.
    fn out_of_range(&self, consumer: &BaseConsumer<LagContext>, e: &rdkafka::error::KafkaError) -> TaskError {
        let topic = &self.config.topic;
        let outside: Vec<String> = self
            .splits
            .values()
            .filter(|s| !s.finished())
            .filter_map(|s| {
                let (low, high) = consumer.fetch_watermarks(topic, s.partition, REQUEST_TIMEOUT).ok()?;
                let (p, next) = (s.partition, s.next);
                if next < low {
                    Some(format!(
                        "partition {p}: offset {next} was deleted (by retention?); the partition now holds offsets {low}..{high}"
                    ))
                } else if next > high {
                    Some(format!("partition {p}: offset {next} is beyond the partition's end ({high})"))
                } else {
                    None
                }
            })
            .collect();
        let what = if outside.is_empty() {
            let at: Vec<String> = self.splits.values().map(|s| format!("{}@{}", s.partition, s.next)).collect();
            format!("a read position is no longer in its partition (positions {})", at.join(", "))
        } else {
            outside.join("; ")
        };
        self.error(format!(
            "{what} ({e}). Failing rather than skipping records; set `auto.offset.reset: earliest` (or `latest`) \
             in the source's properties to go on from the oldest (or newest) record instead"
        ))
    }

    fn positions(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for s in self.splits.values() {
            let _ = tpl.add_partition_offset(&self.config.topic, s.partition, Offset::Offset(s.next));
        }
        tpl
    }
}

/// The partitions of `topic`, or an error naming why there are none.
fn partitions<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let metadata =
        consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT).map_err(|e| KafkaError::Unreachable(e.to_string()))?;
    let t = metadata.topics().iter().find(|t| t.name() == topic).ok_or_else(|| KafkaError::NoTopic(topic.into()))?;
    if let Some(e) = t.error() {
        return Err(KafkaError::Topic(topic.into(), rdkafka::error::RDKafkaErrorCode::from(e).to_string()));
    }
    if t.partitions().is_empty() {
        return Err(KafkaError::NoTopic(topic.into()));
    }
    let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ps.sort_unstable();
    Ok(ps)
}

impl<T: Send> Source<T> for KafkaSource<T> {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> TaskResult<SourcePoll> {
        if self.consumer.is_none() {
            self.start()?;
        }
        if self.splits.values().all(PartitionSplit::finished) {
            if self.config.bounded {
                self.metrics.pending_records.store(0, Ordering::Relaxed);
                return Ok(SourcePoll::Finished);
            }
            return Ok(SourcePoll::Idle(Duration::from_millis(50))); // no partition for this subtask
        }
        let consumer = self.consumer.as_ref().expect("started above");
        let now = now_ms();
        let mut finished = Vec::new();
        for i in 0..BATCH {
            let wait = if i == 0 && self.quiet { Duration::from_millis(20) } else { Duration::ZERO };
            let Some(message) = consumer.poll(wait) else {
                self.quiet = i == 0;
                break;
            };
            self.quiet = false;
            let m = match message {
                Ok(m) => m,
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) => {
                    return Err(self.out_of_range(consumer, &e));
                }
                Err(e) => {
                    // librdkafka retries on its own; a persistent problem shows in the logs and the lag.
                    tracing::warn!("kafka source (topic `{}`): {e}", self.config.topic);
                    break;
                }
            };
            let (partition, offset) = (m.partition(), m.offset());
            let Some(split) = self.splits.get_mut(&partition) else { continue };
            if split.finished() || offset < split.next {
                continue;
            }
            split.next = offset + 1;
            if split.finished() {
                finished.push(partition);
            }
            let payload = m.payload().unwrap_or_default();
            match (self.decode)(payload) {
                Ok(value) => {
                    let time = match &mut self.event_time {
                        Some((extract, w)) => {
                            let t = extract(&value);
                            w.observe(&partition, t, now);
                            t
                        }
                        None => NO_TIMESTAMP,
                    };
                    out.push(Record::new(time, value));
                }
                Err(error) => {
                    let topic = self.config.topic.as_str();
                    (self.on_malformed)(Malformed { topic, partition, offset, payload, error })?;
                }
            }
        }
        if let Some(high) = consumer.context().high.lock().expect("lag poisoned").take() {
            // Records between each unfinished split's position and its partition's end.
            let lag: i64 = self
                .splits
                .values()
                .filter(|s| !s.finished())
                .map(|s| {
                    let end = high.iter().find(|(p, _)| *p == s.partition).map_or(s.next, |(_, h)| *h);
                    (s.end.unwrap_or(i64::MAX).min(end) - s.next).max(0)
                })
                .sum();
            self.metrics.pending_records.store(lag, Ordering::Relaxed);
        }
        if !finished.is_empty() {
            // Stop fetching the partitions that reached their end. Pausing leaves the
            // others' fetch state alone (a new assignment would reset it all).
            let mut done = TopicPartitionList::new();
            for p in &finished {
                done.add_partition(&self.config.topic, *p);
                if let Some((_, w)) = &mut self.event_time {
                    w.remove(p);
                }
            }
            consumer.pause(&done).map_err(|e| self.error(e))?;
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_state(&mut self) -> TaskResult<OperatorSnapshot> {
        if self.consumer.is_none() {
            // Not started yet: the position is still the restored one (or none).
            let entries = self.restored.as_ref().map_or_else(Vec::new, |r| r.entries.clone());
            return Ok(OperatorSnapshot::of_entries(entries));
        }
        self.last_snapshot = Some(self.positions());
        Ok(OperatorSnapshot::of_entries(self.splits.values().map(codec::encode).collect()))
    }

    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        self.restored = Some(state);
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> TaskResult {
        // One checkpoint is in flight at a time: the newest snapshot is the completed one.
        let (Some(consumer), Some(positions)) = (&self.consumer, self.last_snapshot.take()) else { return Ok(()) };
        if let Err(e) = consumer.commit(&positions, CommitMode::Async) {
            tracing::warn!("kafka source (topic `{}`): committing offsets for monitoring: {e}", self.config.topic);
        }
        Ok(())
    }

    fn watermark(&mut self, now: Timestamp) -> SourceWatermark {
        match &mut self.event_time {
            Some((_, w)) if self.consumer.is_some() => w.current(now),
            _ => SourceWatermark::Unmanaged,
        }
    }
}
