//! Asynchronous I/O (Flink's `AsyncDataStream`): an operator that keeps up to
//! `capacity` requests to an outside service in flight at once instead of
//! waiting for each, with a timeout and retries per request, results in input
//! order or as they complete, and the requests in flight part of the snapshot.
//!
//! The user's [`AsyncFunction`] starts a request for a record and hands the
//! [`ResultFuture`] to whatever does the work (a thread pool, an async client
//! on a runtime of its own); completing it from any thread delivers the
//! result. The operator itself stays on its task's thread:
//!
//! - a record arriving while `capacity` requests are in flight waits for one
//!   to finish (backpressure);
//! - a request that fails or outlives its timeout is started again up to
//!   `retries` times (after `retry_delay`, doubling), then fails the job with
//!   its reason, or, with [`AsyncWait::failing_to`], goes to a side output
//!   in its place: nothing is dropped silently;
//! - `ordered` emits results in the order of their inputs; unordered emits
//!   them as they complete, but never across a watermark: a watermark waits
//!   for every request before it, so no result is late downstream;
//! - a checkpoint snapshots the inputs whose results were not emitted yet, and
//!   a restore starts them again, so results stay exactly-once.
//!
//! Results are emitted when the operator runs: on input, on a watermark and
//! on the task's processing-time tick (50 ms) when the input is quiet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::Operator;
use super::side::{OutputTag, SideOutputs};
use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::element::{Data, Record};
use crate::error::{TaskError, TaskResult};
use crate::output::Collector;
use crate::state::codec;
use crate::time::Timestamp;

/// Starts the request for one record (Flink's `AsyncFunction.asyncInvoke`).
pub trait AsyncFunction<In, Out>: Send + 'static {
    /// Starts the request for `input`; `result` must be completed exactly
    /// once, from any thread. A future dropped without a result counts as a
    /// failed attempt.
    fn invoke(&mut self, input: &In, result: ResultFuture<Out>);
}

impl<In, Out, F: FnMut(&In, ResultFuture<Out>) + Send + 'static> AsyncFunction<In, Out> for F {
    fn invoke(&mut self, input: &In, result: ResultFuture<Out>) {
        self(input, result)
    }
}

/// The handle that completes one attempt of one request.
pub struct ResultFuture<Out> {
    request: (u64, u32),
    tx: Option<Sender<Completion<Out>>>,
}

/// (request, attempt, outcome).
type Completion<Out> = (u64, u32, Result<Vec<Out>, String>);

impl<Out> ResultFuture<Out> {
    /// Delivers the request's rows (none, one or several), or why it failed.
    pub fn complete(mut self, result: Result<Vec<Out>, String>) {
        if let Some(tx) = self.tx.take() {
            // The operator may be gone (the job ended or failed): nothing to deliver to.
            let _ = tx.send((self.request.0, self.request.1, result));
        }
    }
}

impl<Out> Drop for ResultFuture<Out> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((self.request.0, self.request.1, Err("the request was dropped without a result".into())));
        }
    }
}

/// How an [`AsyncWait`] operator runs its requests.
#[derive(Clone, Debug)]
pub struct AsyncOptions {
    /// Requests in flight at most.
    pub capacity: usize,
    /// How long an attempt may take.
    pub timeout: Duration,
    /// Attempts after the first, for failures and timeouts.
    pub retries: u32,
    /// The wait before the first retry; each further retry waits twice as long.
    pub retry_delay: Duration,
    /// Results in the order of their inputs (else as they complete).
    pub ordered: bool,
}

impl Default for AsyncOptions {
    fn default() -> Self {
        AsyncOptions {
            capacity: 100,
            timeout: Duration::from_secs(10),
            retries: 3,
            retry_delay: Duration::from_millis(100),
            ordered: true,
        }
    }
}

/// One input's request.
struct Request<In, Out> {
    input: Record<In>,
    attempt: u32,
    /// When the current attempt times out, or (waiting to retry) starts.
    due: Instant,
    /// Waiting for `due` to start the next attempt.
    backing_off: bool,
    result: Option<Vec<Out>>,
}

/// The asynchronous I/O operator (see the module docs).
pub struct AsyncWait<In, Out, F> {
    function: F,
    options: AsyncOptions,
    /// Requests by sequence number: input order.
    requests: BTreeMap<u64, Request<In, Out>>,
    next: u64,
    tx: Sender<Completion<Out>>,
    rx: Receiver<Completion<Out>>,
    /// Where an input whose request failed for good goes, instead of failing the job.
    failed_to: Option<(OutputTag<In>, SideOutputs)>,
}

impl<In: Data, Out: Data, F: AsyncFunction<In, Out>> AsyncWait<In, Out, F> {
    pub fn new(function: F, mut options: AsyncOptions) -> Self {
        options.capacity = options.capacity.max(1);
        let (tx, rx) = crossbeam_channel::unbounded();
        AsyncWait { function, options, requests: BTreeMap::new(), next: 0, tx, rx, failed_to: None }
    }

    /// Sends each input whose request still fails after its retries to the
    /// side output `tag` (in its place, with no rows) instead of failing the job.
    pub fn failing_to(mut self, tag: OutputTag<In>, sides: SideOutputs) -> Self {
        self.failed_to = Some((tag, sides));
        self
    }

    fn start(&mut self, input: Record<In>) {
        let id = self.next;
        self.next += 1;
        let due = Instant::now() + self.options.timeout;
        let request = Request { input, attempt: 0, due, backing_off: false, result: None };
        let future = ResultFuture { request: (id, 0), tx: Some(self.tx.clone()) };
        self.function.invoke(&request.input.value, future);
        self.requests.insert(id, request);
    }

    /// Takes in one completion; a failure is retried or fails the job.
    fn complete(&mut self, (id, attempt, result): Completion<Out>) -> TaskResult {
        let Some(request) = self.requests.get_mut(&id) else { return Ok(()) };
        if request.attempt != attempt || request.backing_off || request.result.is_some() {
            return Ok(()); // an attempt that timed out, answering late
        }
        match result {
            Ok(rows) => {
                request.result = Some(rows);
                Ok(())
            }
            Err(reason) => self.failed(id, reason),
        }
    }

    fn failed(&mut self, id: u64, reason: String) -> TaskResult {
        let options = &self.options;
        let request = self.requests.get_mut(&id).expect("a request in flight");
        if request.attempt >= options.retries {
            let why = format!("async request failed after {} attempt(s): {reason}", request.attempt + 1);
            let Some((tag, sides)) = &self.failed_to else { return Err(TaskError::Operator(why)) };
            tracing::warn!("{why}; the input goes to side output `{}`", tag.name());
            sides.emit(tag, request.input.time, &request.input.value);
            request.result = Some(Vec::new());
            return Ok(());
        }
        tracing::debug!(attempt = request.attempt + 1, "async request failed, retrying: {reason}");
        request.backing_off = true;
        request.due = Instant::now() + options.retry_delay.saturating_mul(1 << request.attempt.min(16));
        request.attempt += 1;
        Ok(())
    }

    /// Times out attempts past their due time and starts the retries that are due.
    fn check_due(&mut self) -> TaskResult {
        let now = Instant::now();
        let due: Vec<u64> =
            self.requests.iter().filter(|(_, r)| r.result.is_none() && r.due <= now).map(|(&id, _)| id).collect();
        for id in due {
            let request = self.requests.get_mut(&id).expect("listed");
            if request.backing_off {
                request.backing_off = false;
                request.due = now + self.options.timeout;
                let future = ResultFuture { request: (id, request.attempt), tx: Some(self.tx.clone()) };
                self.function.invoke(&request.input.value, future);
            } else {
                let timeout = self.options.timeout;
                self.failed(id, format!("timed out after {timeout:?}"))?;
            }
        }
        Ok(())
    }

    /// Takes in what completed, without waiting; then emits what may go.
    fn poll(&mut self, out: &mut Collector<'_, Out>) -> TaskResult {
        while let Ok(c) = self.rx.try_recv() {
            self.complete(c)?;
        }
        self.check_due()?;
        self.emit(out);
        Ok(())
    }

    /// Waits for the next completion or due time, then polls.
    fn wait(&mut self, out: &mut Collector<'_, Out>) -> TaskResult {
        let next_due = self.requests.values().filter(|r| r.result.is_none()).map(|r| r.due).min();
        let wait = next_due.map_or(self.options.timeout, |d| d.saturating_duration_since(Instant::now()));
        match self.rx.recv_timeout(wait) {
            Ok(c) => self.complete(c)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => unreachable!("the operator holds a sender"),
        }
        self.poll(out)
    }

    fn emit(&mut self, out: &mut Collector<'_, Out>) {
        let ready: Vec<u64> = match self.options.ordered {
            true => self.requests.iter().map_while(|(&id, r)| r.result.is_some().then_some(id)).collect(),
            false => self.requests.iter().filter(|(_, r)| r.result.is_some()).map(|(&id, _)| id).collect(),
        };
        for id in ready {
            let request = self.requests.remove(&id).expect("listed");
            let time = request.input.time;
            for row in request.result.expect("ready") {
                out.emit(time, row);
            }
        }
    }

    /// Waits until every request has been answered and emitted.
    fn drain(&mut self, out: &mut Collector<'_, Out>) -> TaskResult {
        self.poll(out)?;
        while !self.requests.is_empty() {
            self.wait(out)?;
        }
        Ok(())
    }
}

impl<In: Data, Out: Data, F: AsyncFunction<In, Out>> Operator for AsyncWait<In, Out, F> {
    type In = In;
    type Out = Out;

    /// Completions are taken in when the requests fill the capacity (waiting
    /// for one) and after the batch, not per record.
    fn process_batch(&mut self, batch: Vec<Record<In>>, out: &mut Collector<'_, Out>) -> TaskResult {
        for record in batch {
            while self.requests.len() >= self.options.capacity {
                self.wait(out)?;
            }
            self.start(record);
        }
        self.poll(out)
    }

    /// Every request before the watermark is answered and emitted first, so
    /// none of their rows is late downstream.
    fn on_watermark(&mut self, _watermark: Timestamp, out: &mut Collector<'_, Out>) -> TaskResult {
        self.drain(out)
    }

    fn on_processing_time(&mut self, _now: Timestamp, out: &mut Collector<'_, Out>) -> TaskResult {
        self.poll(out)
    }

    fn on_end(&mut self, out: &mut Collector<'_, Out>) -> TaskResult {
        self.drain(out)
    }

    /// The inputs of every request not emitted yet, one entry each (so a
    /// restore at another parallelism deals them out).
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        let entries = self.requests.values().map(|r| codec::encode(&r.input)).collect();
        Ok(OperatorSnapshot::of_entries(entries))
    }

    /// Starts the requests of the snapshot again, in their order.
    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        for entry in &state.entries {
            let input: Record<In> = codec::decode(entry, "an async request's input")?;
            self.start(input);
        }
        Ok(())
    }
}
