//! Tasks: the loops that drive one subtask's chain.
//!
//! A [`SourceTask`] polls its source and pushes batches into the chain; an
//! [`InputTask`] takes events from its input queue, merges control elements
//! through an [`InputGate`], and pushes into the chain. Both tick processing
//! time into the chain about every [`TICK`], flush the chain's buffered output
//! before they wait, and stop early when the job is stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::element::Event;
use crate::error::{TaskError, TaskResult};
use crate::exchange::{Envelope, GateEvent, InputGate};
use crate::metrics::SubtaskMetrics;
use crate::output::Output;
use crate::source::{Source, SourcePoll};
use crate::time::{MAX_WATERMARK, now_ms};

/// How often processing time advances in an otherwise busy task.
pub const TICK: Duration = Duration::from_millis(50);

/// What every task shares with its job.
#[derive(Clone)]
pub struct TaskEnv {
    pub name: String,
    pub metrics: Arc<SubtaskMetrics>,
    /// Set to stop the job's sources (graceful stop, or a failure elsewhere).
    pub stop: Arc<AtomicBool>,
}

pub trait Task: Send {
    fn name(&self) -> &str;
    fn run(self: Box<Self>) -> TaskResult;
}

pub struct SourceTask<T> {
    source: Box<dyn Source<T>>,
    head: Box<dyn Output<T>>,
    env: TaskEnv,
}

impl<T> SourceTask<T> {
    pub fn new(source: Box<dyn Source<T>>, head: Box<dyn Output<T>>, env: TaskEnv) -> Self {
        SourceTask { source, head, env }
    }
}

impl<T: Send> Task for SourceTask<T> {
    fn name(&self) -> &str {
        &self.env.name
    }

    fn run(mut self: Box<Self>) -> TaskResult {
        let mut batch = Vec::new();
        let mut next_tick = Instant::now() + TICK;
        let finished = loop {
            if self.env.stop.load(Ordering::Relaxed) {
                break false;
            }
            let poll = self.source.poll(&mut batch)?;
            if !batch.is_empty() {
                SubtaskMetrics::add(&self.env.metrics.records_in, batch.len() as u64);
                self.head.records(std::mem::take(&mut batch))?;
            }
            match poll {
                SourcePoll::Ready => {}
                SourcePoll::Idle(wait) => {
                    self.head.flush()?;
                    let started = Instant::now();
                    std::thread::sleep(wait.min(TICK));
                    SubtaskMetrics::add(&self.env.metrics.idle_ns, started.elapsed().as_nanos() as u64);
                }
                SourcePoll::Finished => break true,
            }
            if Instant::now() >= next_tick {
                self.head.processing_time(now_ms())?;
                next_tick = Instant::now() + TICK;
            }
        };
        if finished {
            // A bounded input is exhausted: every window and timer may fire.
            self.head.watermark(MAX_WATERMARK)?;
        }
        self.head.end()
    }
}

pub struct InputTask<T> {
    rx: Receiver<Envelope<T>>,
    gate: InputGate,
    head: Box<dyn Output<T>>,
    env: TaskEnv,
}

impl<T> InputTask<T> {
    pub fn new(rx: Receiver<Envelope<T>>, channels: usize, head: Box<dyn Output<T>>, env: TaskEnv) -> Self {
        InputTask { rx, gate: InputGate::new(channels), head, env }
    }
}

impl<T: Send> Task for InputTask<T> {
    fn name(&self) -> &str {
        &self.env.name
    }

    fn run(mut self: Box<Self>) -> TaskResult {
        let mut next_tick = Instant::now() + TICK;
        let mut gate_events = Vec::new();
        loop {
            let (channel, event) = match self.rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => return Err(TaskError::Disconnected),
                Err(TryRecvError::Empty) => {
                    self.head.flush()?;
                    let started = Instant::now();
                    let wait = next_tick.saturating_duration_since(started);
                    let got = self.rx.recv_timeout(wait);
                    SubtaskMetrics::add(&self.env.metrics.idle_ns, started.elapsed().as_nanos() as u64);
                    match got {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Disconnected) => return Err(TaskError::Disconnected),
                        Err(RecvTimeoutError::Timeout) => {
                            self.head.processing_time(now_ms())?;
                            next_tick = Instant::now() + TICK;
                            continue;
                        }
                    }
                }
            };
            match event {
                Event::Records(batch) => {
                    SubtaskMetrics::add(&self.env.metrics.records_in, batch.len() as u64);
                    self.head.records(batch)?;
                }
                Event::Watermark(w) => self.gate.on_watermark(channel, w, &mut gate_events),
                Event::Idle(idle) => self.gate.on_idle(channel, idle, &mut gate_events),
                Event::Barrier(b) => self.gate.on_barrier(channel, b, &mut gate_events),
                Event::End => self.gate.on_end(channel, &mut gate_events),
            }
            for e in gate_events.drain(..) {
                match e {
                    GateEvent::Watermark(w) => {
                        self.env.metrics.current_watermark.store(w, Ordering::Relaxed);
                        self.head.watermark(w)?;
                    }
                    GateEvent::Idle(idle) => self.head.idle(idle)?,
                    GateEvent::Barrier(b) => self.head.barrier(b)?,
                    GateEvent::End => return self.head.end(),
                }
            }
            if Instant::now() >= next_tick {
                self.head.processing_time(now_ms())?;
                next_tick = Instant::now() + TICK;
            }
        }
    }
}
