//! The Kafka sink: at-least-once or exactly-once output to a topic.
//!
//! **At-least-once**: an idempotent producer; every barrier flushes it and
//! fails the checkpoint if any record was not acknowledged, so a completed
//! checkpoint covers every record before its barrier.
//!
//! **Exactly-once** (two-phase commit with Kafka transactions): subtask `i`
//! owns the transactional id `<prefix>-<i>`. Records go into an open
//! transaction; at a barrier the sink flushes it (*pre-commit*) and puts its
//! records in the checkpoint; when the checkpoint completes it commits. Records
//! that arrive while a pre-committed transaction waits for its checkpoint are
//! held and sent into the next transaction. Each transaction also commits the
//! checkpoint id as the offset of a marker group named after the transactional
//! id (`send_offsets_to_transaction`), atomically with the records.
//!
//! librdkafka cannot resume another producer's transaction, so recovery does
//! not commit a lingering transaction: it fences it (`init_transactions` on its
//! transactional id aborts it), reads the marker group, and when the marker is
//! older than the restored checkpoint, sends that checkpoint's records again in
//! a new transaction. Readers with `isolation.level=read_committed` thus see
//! every record exactly once. The state holds one checkpoint interval of the
//! sink's output per subtask, which suits the aggregated streams such sinks
//! usually receive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use weir_core::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use weir_core::graph::SubtaskInfo;
use weir_core::operator::sink::Sink;
use weir_core::state::codec;
use weir_core::{Record, TaskError, TaskResult};

/// How long flushes and transaction calls may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The delivery guarantee of a [`KafkaSink`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    pub bootstrap: String,
    pub topic: String,
    pub guarantee: Guarantee,
    /// Exactly-once: subtask `i` uses the transactional id `<prefix>-<i>`.
    pub transactional_id_prefix: String,
    /// Further librdkafka producer properties.
    pub properties: Vec<(String, String)>,
}

/// Encodes a record as a Kafka message: (key, value).
pub type Encode<T> = Arc<dyn Fn(&T) -> TaskResult<(Option<Vec<u8>>, Vec<u8>)> + Send + Sync>;

type Message = (Option<Vec<u8>>, Vec<u8>);

/// Remembers the first delivery failure (reported at the next flush).
#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<Option<String>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.lock().expect("deliveries poisoned").get_or_insert_with(|| e.to_string());
        }
    }
}

impl Deliveries {
    fn take(&self) -> Option<String> {
        self.0.lock().expect("deliveries poisoned").take()
    }
}

/// A pre-committed transaction: a checkpoint entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingTxn {
    transactional_id: String,
    /// 0: nothing pending (the entry only names the transactional id, so that
    /// whoever restores it fences it).
    checkpoint_id: u64,
    records: Vec<Message>,
}

pub struct KafkaSink<T> {
    config: KafkaSinkConfig,
    encode: Encode<T>,
    producer: ThreadedProducer<Deliveries>,
    deliveries: Deliveries,
    transactional_id: String,
    /// Exactly-once: the marker group's consumer (for its group metadata).
    marker: Option<BaseConsumer>,
    /// Records in the open transaction (exactly-once).
    current: Vec<Message>,
    /// The pre-committed transaction waiting for its checkpoint.
    pending: Option<PendingTxn>,
    /// Records that arrived while `pending` waits.
    held: Vec<Message>,
}

fn error(config: &KafkaSinkConfig, what: impl std::fmt::Display) -> TaskError {
    TaskError::Operator(format!("kafka sink (topic `{}` at {}): {what}", config.topic, config.bootstrap))
}

fn producer(config: &KafkaSinkConfig, transactional_id: Option<&str>) -> KafkaResult<ThreadedProducer<Deliveries>> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id).set("transaction.timeout.ms", "900000");
    }
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c.create_with_context(Deliveries::default())
}

fn marker_consumer(config: &KafkaSinkConfig, group: &str) -> KafkaResult<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
}

impl<T> KafkaSink<T> {
    pub fn new(config: KafkaSinkConfig, info: &SubtaskInfo, encode: Encode<T>) -> TaskResult<Self> {
        let exactly_once = config.guarantee == Guarantee::ExactlyOnce;
        if exactly_once && !info.checkpointing {
            return Err(error(&config, "exactly-once needs checkpointing (or use guarantee: at-least-once)"));
        }
        let transactional_id = format!("{}-{}", config.transactional_id_prefix, info.index);
        let producer = producer(&config, exactly_once.then_some(transactional_id.as_str()))
            .map_err(|e| error(&config, format!("cannot create a producer: {e}")))?;
        let deliveries = Deliveries::clone(producer.context());
        let mut sink = KafkaSink {
            encode,
            deliveries,
            transactional_id,
            marker: None,
            current: Vec::new(),
            pending: None,
            held: Vec::new(),
            producer,
            config,
        };
        if exactly_once {
            // Fences earlier producers with this id and aborts what they left open.
            sink.producer.init_transactions(TIMEOUT).map_err(|e| sink.error(format!("init_transactions: {e}")))?;
            let marker = marker_consumer(&sink.config, &sink.transactional_id)
                .map_err(|e| sink.error(format!("cannot create the marker consumer: {e}")))?;
            sink.marker = Some(marker);
            if let Some(state) = &info.restored {
                sink.recover(state)?;
            }
            sink.producer.begin_transaction().map_err(|e| sink.error(format!("begin_transaction: {e}")))?;
            let resend = std::mem::take(&mut sink.held);
            for m in resend {
                sink.send(m)?;
            }
        }
        Ok(sink)
    }

    fn error(&self, what: impl std::fmt::Display) -> TaskError {
        error(&self.config, what)
    }

    /// The checkpoint id last committed by `transactional_id`'s transactions (0: none).
    fn committed_marker(&self, transactional_id: &str) -> TaskResult<u64> {
        let consumer = marker_consumer(&self.config, transactional_id).map_err(|e| self.error(e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.config.topic, 0);
        let committed = consumer
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| self.error(format!("reading the commit marker of `{transactional_id}`: {e}")))?;
        Ok(match committed.find_partition(&self.config.topic, 0).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o > 0 => o as u64,
            _ => 0,
        })
    }

    /// Resolves the transactions of the checkpoint restored from: fence each
    /// one's producer, and send its records again unless its marker says it
    /// committed.
    fn recover(&mut self, state: &RestoredState) -> TaskResult {
        for e in &state.entries {
            let txn: PendingTxn = codec::decode(e, "a kafka sink transaction")?;
            if txn.transactional_id != self.transactional_id {
                let other = producer(&self.config, Some(&txn.transactional_id)).map_err(|e| self.error(e))?;
                other
                    .init_transactions(TIMEOUT)
                    .map_err(|e| self.error(format!("fencing `{}`: {e}", txn.transactional_id)))?;
            }
            if txn.records.is_empty() {
                continue;
            }
            let marker = self.committed_marker(&txn.transactional_id)?;
            if marker >= txn.checkpoint_id {
                continue; // committed before the job died
            }
            tracing::info!(
                "kafka sink: transaction `{}` of checkpoint {} was not committed; sending its {} records again",
                txn.transactional_id,
                txn.checkpoint_id,
                txn.records.len()
            );
            self.held.extend(txn.records);
        }
        Ok(())
    }

    fn send(&mut self, (key, value): Message) -> TaskResult {
        let mut record = BaseRecord::to(&self.config.topic).payload(&value);
        if let Some(k) = &key {
            record = record.key(k);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5)); // backpressure: librdkafka's queue is full
                }
                Err((e, _)) => return Err(self.error(format!("cannot send: {e}"))),
            }
        }
        if self.marker.is_some() {
            self.current.push((key, value));
        }
        Ok(())
    }

    fn flush(&mut self) -> TaskResult {
        self.producer.flush(TIMEOUT).map_err(|e| self.error(format!("flush: {e}")))?;
        match self.deliveries.take() {
            Some(e) => Err(self.error(format!("a record was not delivered: {e}"))),
            None => Ok(()),
        }
    }

    /// Pre-commit: the open transaction's records are all acknowledged, and
    /// the marker offset is part of it.
    fn pre_commit(&mut self, checkpoint_id: u64) -> TaskResult {
        self.flush()?;
        let marker = self.marker.as_ref().expect("exactly-once");
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&self.config.topic, 0, Offset::Offset(checkpoint_id as i64))
            .map_err(|e| self.error(e))?;
        let group = marker.group_metadata().ok_or_else(|| self.error("the marker consumer has no group metadata"))?;
        self.producer
            .send_offsets_to_transaction(&offsets, &group, TIMEOUT)
            .map_err(|e| self.error(format!("send_offsets_to_transaction: {e}")))?;
        Ok(())
    }
}

impl<T: Send> Sink<T> for KafkaSink<T> {
    fn write(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        for r in &batch {
            let message = (self.encode)(&r.value)?;
            if self.pending.is_some() {
                self.held.push(message);
            } else {
                self.send(message)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> TaskResult {
        // Exactly-once output is committed by the final checkpoint; this only drains the queue.
        self.flush()
    }

    fn snapshot_state(&mut self, checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        if self.marker.is_none() {
            self.flush()?;
            return Ok(OperatorSnapshot::default());
        }
        if let Some(mut pending) = self.pending.take() {
            // The previous checkpoint never completed: its transaction, still
            // open, takes the held records and now belongs to this checkpoint.
            for m in std::mem::take(&mut self.held) {
                self.send(m)?;
            }
            pending.records.append(&mut self.current);
            pending.checkpoint_id = checkpoint_id;
            self.pending = Some(pending);
        } else {
            let records = std::mem::take(&mut self.current);
            let transactional_id = self.transactional_id.clone();
            self.pending = Some(PendingTxn { transactional_id, checkpoint_id, records });
        }
        self.pre_commit(checkpoint_id)?;
        Ok(OperatorSnapshot::of_entries(vec![codec::encode(self.pending.as_ref().expect("set"))]))
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        if self.pending.as_ref().is_none_or(|p| p.checkpoint_id > checkpoint_id) {
            return Ok(());
        }
        self.pending = None;
        self.producer.commit_transaction(TIMEOUT).map_err(|e| self.error(format!("commit_transaction: {e}")))?;
        self.producer.begin_transaction().map_err(|e| self.error(format!("begin_transaction: {e}")))?;
        for m in std::mem::take(&mut self.held) {
            self.send(m)?;
        }
        Ok(())
    }
}

impl<T> Drop for KafkaSink<T> {
    fn drop(&mut self) {
        if self.marker.is_some() && self.pending.is_none() {
            // Not covered by any checkpoint: roll back now rather than at the transaction timeout.
            let _ = self.producer.abort_transaction(Duration::from_secs(5));
        }
    }
}
