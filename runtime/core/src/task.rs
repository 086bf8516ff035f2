//! Tasks: the loops that drive one subtask's chain.
//!
//! A [`SourceTask`] polls its source and pushes batches into the chain; an
//! [`InputTask`] takes events from its input queue, merges control elements
//! through an [`InputGate`], and pushes into the chain. Both tick processing
//! time into the chain about every [`TICK`], flush the chain's buffered output
//! before they wait, and stop early when the job is stopped.
//!
//! With checkpointing, tasks also obey the coordinator ([`Command`]s on their
//! control channel) and report to it:
//!
//! * a source task injects a barrier when told: it snapshots its read
//!   position, then passes the barrier down its chain (each link snapshots
//!   before forwarding it);
//! * an input task in exactly-once mode *aligns* barriers: once a channel
//!   delivered barrier n, its further events are held back (up to a budget of
//!   records) until every open channel delivered n; then the chain snapshots,
//!   the barrier goes on, and the held events are replayed in order. A newer
//!   barrier abandons an unfinished alignment; over budget, the checkpoint is
//!   declined. In at-least-once mode nothing is held back. The alignment
//!   itself lives in [`crate::checkpoint::alignment`];
//! * the chain's snapshots are handed to the uploader, which stores them and
//!   acknowledges the checkpoint, while the task goes on processing;
//! * a finished source waits for the final checkpoint before it ends its stream;
//!   the end carries the newest completion its task was told, and a task
//!   whose own notice of it is late (it came through another TaskManager)
//!   takes the end's word for it, so its sinks commit before it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::checkpoint::alignment::{Alignment, Hold};
use crate::checkpoint::coordinator::{CheckpointMode, Command, TaskReport};
use crate::checkpoint::incremental::{Incremental, Shipment};
use crate::checkpoint::metadata::{SnapshotKind, SubtaskStateHandle, state_file_name};
use crate::element::{Barrier, Event};
use crate::error::{TaskError, TaskResult};
use crate::exchange::{Envelope, GateEvent, InputGate};
use crate::graph::SnapshotCollector;
use crate::keygroup::KeyGroupRange;
use crate::metrics::SubtaskMetrics;
use crate::output::Output;
use crate::source::{Source, SourcePoll, SourceWatermark};
use crate::time::{MAX_WATERMARK, MIN_WATERMARK, Timestamp, now_ms};

/// How often processing time advances in an otherwise busy task.
pub const TICK: Duration = Duration::from_millis(50);

/// How long a source that is too far ahead of its alignment group waits before it looks again.
const ALIGNMENT_PAUSE: Duration = Duration::from_millis(1);

/// What every task shares with its job.
#[derive(Clone)]
pub struct TaskEnv {
    pub name: String,
    /// The task's number in the job (for reports to the coordinator).
    pub index: usize,
    pub subtask: usize,
    pub key_groups: KeyGroupRange,
    pub metrics: Arc<SubtaskMetrics>,
    /// Set to end the job's sources at once (a failure elsewhere, or a stop without checkpointing).
    pub stop: Arc<AtomicBool>,
    /// Set to end every task at once, without draining (the job is cancelled or restarted).
    pub cancel: Arc<AtomicBool>,
    pub checkpoints: Option<TaskCheckpointing>,
    /// A source task pauses while this says its watermark is too far ahead.
    pub alignment: crate::drift::SourceAlignment,
}

/// A task's link to the checkpoint coordinator.
#[derive(Clone)]
pub struct TaskCheckpointing {
    pub job: String,
    pub control: Receiver<Command>,
    pub reports: Sender<TaskReport>,
    pub snapshots: SnapshotCollector,
    pub uploads: Sender<UploadJob>,
    pub mode: CheckpointMode,
    pub alignment_budget: usize,
}

/// A task's snapshots for one checkpoint, on their way to storage.
pub struct UploadJob {
    pub job: String,
    pub task: usize,
    pub subtask: usize,
    pub key_groups: KeyGroupRange,
    pub barrier: Barrier,
    pub snapshots: Shipment,
    /// The task's incremental checkpointing, when its checkpoints are.
    pub incremental: Option<Arc<Incremental>>,
    pub reports: Sender<TaskReport>,
}

impl TaskEnv {
    /// Hands the chain's snapshots to the uploader.
    fn ship(&self, barrier: Barrier) -> TaskResult {
        let Some(cp) = &self.checkpoints else { return Ok(()) };
        let job = UploadJob {
            job: cp.job.clone(),
            task: self.index,
            subtask: self.subtask,
            key_groups: self.key_groups,
            barrier,
            snapshots: cp.snapshots.take(&barrier),
            incremental: cp.snapshots.incremental_state().cloned(),
            reports: cp.reports.clone(),
        };
        cp.uploads.send(job).map_err(|_| TaskError::Cancelled)
    }

    fn decline(&self, checkpoint_id: u64, reason: String) {
        if let Some(cp) = &self.checkpoints {
            let _ = cp.reports.send(TaskReport::Decline { task: self.index, checkpoint_id, reason });
        }
    }

    fn control(&self) -> Receiver<Command> {
        self.checkpoints.as_ref().map_or_else(crossbeam_channel::never, |cp| cp.control.clone())
    }
}

pub trait Task: Send {
    fn name(&self) -> &str;
    fn run(self: Box<Self>) -> TaskResult;
}

pub struct SourceTask<T> {
    source: Box<dyn Source<T>>,
    head: Box<dyn Output<T>>,
    uid: String,
    env: TaskEnv,
    /// The last watermark and idleness forwarded for a source that assigns event time itself.
    watermark: (Timestamp, bool),
    /// The stop-with-savepoint whose barrier this source emitted last: it
    /// reads nothing more until the savepoint completes (and the job ends)
    /// or fails (and it resumes).
    held: Option<u64>,
}

impl<T> SourceTask<T> {
    pub fn new(source: Box<dyn Source<T>>, head: Box<dyn Output<T>>, uid: String, env: TaskEnv) -> Self {
        SourceTask { source, head, uid, env, watermark: (MIN_WATERMARK, false), held: None }
    }
}

enum Next {
    Continue,
    End,
}

impl<T: Send> SourceTask<T> {
    /// Forwards the source's own watermark and idleness when they changed.
    fn forward_watermark(&mut self, now: Timestamp) -> TaskResult {
        let (last, idle) = self.watermark;
        match self.source.watermark(now) {
            SourceWatermark::Unmanaged => {}
            // A source paused for alignment is not idle (see the assigner).
            SourceWatermark::Idle if !idle && !self.env.alignment.ahead() => {
                self.watermark.1 = true;
                // Idle, it holds no aligned source back.
                self.env.alignment.publish(MAX_WATERMARK);
                self.head.idle(true)?;
            }
            SourceWatermark::Idle => {}
            SourceWatermark::At(wm) => {
                if idle {
                    self.watermark.1 = false;
                    self.env.alignment.publish(last);
                    self.head.idle(false)?;
                }
                if wm > last {
                    self.watermark.0 = wm;
                    self.env.alignment.publish(wm);
                    self.env.metrics.current_watermark.store(wm, Ordering::Relaxed);
                    self.head.watermark(wm)?;
                }
            }
        }
        Ok(())
    }

    /// Advances processing time (and a source's own watermark) when a tick is due.
    fn tick(&mut self, next_tick: &mut Instant) -> TaskResult {
        if Instant::now() >= *next_tick {
            let now = now_ms();
            self.forward_watermark(now)?;
            self.head.processing_time(now)?;
            *next_tick = Instant::now() + TICK;
        }
        Ok(())
    }

    fn obey(&mut self, command: Command, drained: &mut bool) -> TaskResult<Next> {
        match command {
            Command::Trigger { barrier, drain, stop } => {
                if stop {
                    self.held = Some(barrier.checkpoint_id);
                }
                if drain && !*drained {
                    *drained = true;
                    self.head.watermark(MAX_WATERMARK)?;
                }
                let position = self.source.snapshot_state()?;
                if let Some(cp) = &self.env.checkpoints {
                    cp.snapshots.add(&self.uid, position);
                }
                self.head.barrier(barrier)?;
                self.head.flush()?;
                self.env.ship(barrier)?;
            }
            Command::Complete { checkpoint_id } => {
                self.source.notify_checkpoint_complete(checkpoint_id)?;
                self.head.checkpoint_complete(checkpoint_id)?;
            }
            Command::EndOfInput => return Ok(Next::End),
            Command::Resume { checkpoint_id } => {
                self.held.take_if(|held| *held == checkpoint_id);
            }
            Command::Fail(_) => {} // handled by the executor, never sent to tasks
        }
        Ok(Next::Continue)
    }
}

impl<T: Send> Task for SourceTask<T> {
    fn name(&self) -> &str {
        &self.env.name
    }

    fn run(mut self: Box<Self>) -> TaskResult {
        let mut batch = Vec::new();
        let mut next_tick = Instant::now() + TICK;
        let control = self.env.control();
        let (mut finished, mut drained) = (false, false);
        loop {
            loop {
                match control.try_recv() {
                    Ok(cmd) => {
                        if let Next::End = self.obey(cmd, &mut drained)? {
                            return self.head.end();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(TaskError::Cancelled),
                }
            }
            if self.env.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            if self.env.stop.load(Ordering::Relaxed) {
                break;
            }
            if finished || self.held.is_some() {
                // Waiting for the final checkpoint (or a stop), or for a
                // stop-with-savepoint to complete.
                let started = Instant::now();
                if let Ok(cmd) = control.recv_timeout(TICK)
                    && let Next::End = self.obey(cmd, &mut drained)?
                {
                    return self.head.end();
                }
                SubtaskMetrics::add(&self.env.metrics.idle_ns, started.elapsed().as_nanos() as u64);
                continue;
            }
            if self.env.alignment.ahead() {
                // Too far ahead of its alignment group: wait, still obeying commands.
                self.head.flush()?;
                let started = Instant::now();
                std::thread::sleep(ALIGNMENT_PAUSE);
                SubtaskMetrics::add(&self.env.metrics.idle_ns, started.elapsed().as_nanos() as u64);
                // Resumed: poll before the next tick, so the source does not look idle.
                if self.env.alignment.ahead() {
                    self.tick(&mut next_tick)?;
                }
                continue;
            }
            let poll = self.source.poll(&mut batch)?;
            if !batch.is_empty() {
                SubtaskMetrics::add(&self.env.metrics.records_in, batch.len() as u64);
                self.head.records(std::mem::take(&mut batch))?;
                self.forward_watermark(now_ms())?;
            }
            match poll {
                SourcePoll::Ready => {}
                SourcePoll::Idle(wait) => {
                    self.head.flush()?;
                    let started = Instant::now();
                    std::thread::sleep(wait.min(TICK));
                    SubtaskMetrics::add(&self.env.metrics.idle_ns, started.elapsed().as_nanos() as u64);
                }
                SourcePoll::Finished => {
                    self.env.alignment.publish(MAX_WATERMARK);
                    // A bounded input is exhausted: every window and timer may fire.
                    if !drained {
                        drained = true;
                        self.head.watermark(MAX_WATERMARK)?;
                    }
                    self.head.flush()?;
                    match &self.env.checkpoints {
                        Some(cp) => {
                            finished = true;
                            let _ = cp.reports.send(TaskReport::SourceFinished { task: self.env.index });
                        }
                        None => break,
                    }
                }
            }
            self.tick(&mut next_tick)?;
        }
        self.head.end()
    }
}

pub struct InputTask<T> {
    rx: Receiver<Envelope<T>>,
    gate: InputGate,
    head: Box<dyn Output<T>>,
    env: TaskEnv,
    /// The newest checkpoint the chain was told completed.
    completed: Option<u64>,
}

impl<T> InputTask<T> {
    pub fn new(rx: Receiver<Envelope<T>>, channels: usize, head: Box<dyn Output<T>>, env: TaskEnv) -> Self {
        InputTask { rx, gate: InputGate::new(channels), head, env, completed: None }
    }
}

/// Whether the task goes on after an event.
enum Step {
    Continue,
    /// Every channel ended: the chain has ended too.
    Ended,
}

impl<T: Send> InputTask<T> {
    fn aligned(&self) -> bool {
        self.env.checkpoints.as_ref().is_some_and(|cp| cp.mode == CheckpointMode::ExactlyOnce)
    }

    fn obey(&mut self, command: Command) -> TaskResult {
        if let Command::Complete { checkpoint_id } = command {
            self.completed = self.completed.max(Some(checkpoint_id));
            self.head.checkpoint_complete(checkpoint_id)?;
        }
        Ok(())
    }

    /// The next event: held-back events first, then the queue; `None` on a tick.
    fn next_event(
        &mut self,
        alignment: &Alignment<T>,
        control: &Receiver<Command>,
        next_tick: Instant,
    ) -> TaskResult<Option<Envelope<T>>> {
        if let Some(e) = alignment.next_replayed() {
            return Ok(Some(e));
        }
        match self.rx.try_recv() {
            Ok(m) => return Ok(Some(m)),
            Err(TryRecvError::Disconnected) => return Err(TaskError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        self.head.flush()?;
        let started = Instant::now();
        let wait = next_tick.saturating_duration_since(started);
        let got = crossbeam_channel::select! {
            recv(self.rx) -> m => Some(m.map_err(|_| TaskError::Disconnected)?),
            recv(control) -> c => {
                if let Ok(c) = c {
                    self.obey(c)?;
                }
                None
            }
            default(wait) => None,
        };
        SubtaskMetrics::add(&self.env.metrics.idle_ns, started.elapsed().as_nanos() as u64);
        Ok(got)
    }

    /// Feeds one event from `channel` to the chain or the gate, unless the
    /// alignment holds it back; what the gate makes of it lands in `gate_events`.
    fn on_event(
        &mut self,
        channel: u32,
        event: Event<T>,
        alignment: &mut Alignment<T>,
        gate_events: &mut Vec<GateEvent>,
    ) -> TaskResult {
        let event = match alignment.hold(channel, event) {
            Hold::Pass(event) => event,
            Hold::Held => return Ok(()),
            Hold::OverBudget => {
                if let Some(id) = self.gate.abort_pending() {
                    let budget = self.env.checkpoints.as_ref().map_or(usize::MAX, |cp| cp.alignment_budget);
                    self.env.decline(id, format!("alignment held back more than {budget} records"));
                    alignment.release();
                }
                return Ok(());
            }
        };
        match event {
            Event::Records(batch) => {
                SubtaskMetrics::add(&self.env.metrics.records_in, batch.len() as u64);
                self.head.records(batch)?;
            }
            Event::Watermark(w) => self.gate.on_watermark(channel, w, gate_events),
            Event::Idle(idle) => self.gate.on_idle(channel, idle, gate_events),
            Event::Barrier(b) => {
                self.gate.on_barrier(channel, b, gate_events);
                // A superseded alignment is released as this channel blocks for the newer one.
                if self.aligned() && self.gate.pending_checkpoint() == Some(b.checkpoint_id) {
                    alignment.block(channel, b.checkpoint_id);
                }
            }
            Event::End(completed) => self.gate.on_end(channel, completed, gate_events),
        }
        Ok(())
    }

    /// Passes on what the gate decided: watermarks, idleness, aligned barriers, the end.
    fn pass_on(&mut self, gate_events: &mut Vec<GateEvent>, alignment: &mut Alignment<T>) -> TaskResult<Step> {
        for e in gate_events.drain(..) {
            match e {
                GateEvent::Watermark(w) => {
                    self.env.metrics.current_watermark.store(w, Ordering::Relaxed);
                    self.head.watermark(w)?;
                }
                GateEvent::Idle(idle) => self.head.idle(idle)?,
                GateEvent::Barrier(b) => {
                    self.head.barrier(b)?;
                    self.env.ship(b)?;
                    alignment.release();
                }
                GateEvent::Superseded(id) => {
                    self.env.decline(id, "superseded by a newer checkpoint before alignment finished".into());
                }
                GateEvent::End(completed) => {
                    // The coordinator's notice of a completion the end proves
                    // may still be on its way: a task that ended would miss it,
                    // and its sinks would not commit what they pre-committed.
                    if let Some(id) = completed.filter(|&id| Some(id) > self.completed) {
                        self.obey(Command::Complete { checkpoint_id: id })?;
                    }
                    self.head.end()?;
                    return Ok(Step::Ended);
                }
            }
        }
        Ok(Step::Continue)
    }
}

impl<T: Send> Task for InputTask<T> {
    fn name(&self) -> &str {
        &self.env.name
    }

    fn run(mut self: Box<Self>) -> TaskResult {
        let mut next_tick = Instant::now() + TICK;
        let mut gate_events = Vec::new();
        let control = self.env.control();
        let budget = self.env.checkpoints.as_ref().map_or(usize::MAX, |cp| cp.alignment_budget);
        let mut alignment = Alignment::new(self.gate.channels(), budget);
        loop {
            if self.env.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            while let Ok(cmd) = control.try_recv() {
                self.obey(cmd)?;
            }
            if Instant::now() >= next_tick {
                self.head.processing_time(now_ms())?;
                next_tick = Instant::now() + TICK;
            }
            let Some((channel, event)) = self.next_event(&alignment, &control, next_tick)? else { continue };
            self.on_event(channel, event, &mut alignment, &mut gate_events)?;
            if let Step::Ended = self.pass_on(&mut gate_events, &mut alignment)? {
                return Ok(());
            }
        }
    }
}

/// Stores snapshots (their key groups as `compression` says) and
/// acknowledges them; runs on the executor's uploader threads.
pub fn upload(
    job: UploadJob,
    config: &crate::checkpoint::coordinator::CheckpointConfig,
    compression: crate::checkpoint::compression::Compression,
) {
    let id = job.barrier.checkpoint_id;
    let reports = job.reports.clone();
    let task = job.task;
    let outcome = match job.incremental.clone() {
        Some(inc) if !job.barrier.is_savepoint => {
            let outcome = upload_incremental(job, &inc, config, compression);
            inc.landed(id);
            outcome
        }
        _ => upload_full(job, config, compression),
    };
    let _ = reports.send(match outcome {
        Ok(states) => TaskReport::Ack { task, checkpoint_id: id, states },
        Err(reason) => TaskReport::Decline { task, checkpoint_id: id, reason },
    });
}

/// A snapshot whose every file is its own, in its directory.
fn upload_full(
    job: UploadJob,
    config: &crate::checkpoint::coordinator::CheckpointConfig,
    compression: crate::checkpoint::compression::Compression,
) -> Result<Vec<(String, SubtaskStateHandle)>, String> {
    use crate::checkpoint::coordinator::snapshot_dir;
    let id = job.barrier.checkpoint_id;
    let kind = if job.barrier.is_savepoint { SnapshotKind::Savepoint } else { SnapshotKind::Checkpoint };
    let storage = config.storage_for(kind);
    let dir = snapshot_dir(&job.job, id, kind);
    let mut states = Vec::with_capacity(job.snapshots.taken.len());
    for taken in job.snapshots.taken {
        let file = state_file_name(&taken.uid, job.subtask);
        let snapshot = taken.snapshot.stored_as(compression).map_err(|e| compress_error(&taken.uid, e))?;
        let handle = snapshot.handle(job.subtask, file.clone(), job.key_groups);
        snapshot.store(storage.as_ref(), &format!("{dir}/{file}")).map_err(|e| e.to_string())?;
        drop(snapshot);
        states.push((taken.uid, handle));
    }
    Ok(states)
}

/// A checkpoint of a task with incremental checkpoints: new files go to the
/// job's `shared/` directory and each operator's handles are its chain. One
/// checkpoint of the task at a time (the chains stay locked throughout).
fn upload_incremental(
    job: UploadJob,
    inc: &Incremental,
    config: &crate::checkpoint::coordinator::CheckpointConfig,
    compression: crate::checkpoint::compression::Compression,
) -> Result<Vec<(String, SubtaskStateHandle)>, String> {
    use crate::checkpoint::metadata::{shared_dir, shared_file_name};
    let id = job.barrier.checkpoint_id;
    let Shipment { taken, base } = job.snapshots;
    let changes = taken.iter().any(|t| t.changes);
    if let Some(base) = base.filter(|_| changes)
        && !inc.wait_for(base)
    {
        return Err(format!("the upload of checkpoint {base}, whose changes it follows, did not end"));
    }
    let mut chains = inc.chains.lock().expect("chains poisoned");
    if chains.last.is_some_and(|last| last >= id) {
        // A late upload of an abandoned checkpoint: what is stored is newer, and stays.
        return Err(format!("checkpoint {} is stored already, which is newer", chains.last.unwrap_or_default()));
    }
    if changes && chains.last != base {
        inc.restart(&mut chains);
        return Err(format!(
            "its changes follow checkpoint {base:?}, whose files were not stored; the next checkpoint is full"
        ));
    }
    let storage = &config.storage;
    let dir = shared_dir(&job.job);
    let mut kept = std::collections::HashMap::new();
    for t in taken {
        let mut chain = chains.by_uid.remove(&t.uid).unwrap_or_default();
        if !t.changes {
            chain.clear();
        }
        // Every snapshot has the operator-state entries in full: only the newest piece gives them.
        chain.iter_mut().for_each(|h| h.entries.clear());
        if !t.changes || !t.snapshot.is_empty() {
            let file = shared_file_name(&t.uid, job.subtask, id, inc.token);
            let stored = t.snapshot.stored_as(compression).map_err(|e| compress_error(&t.uid, e));
            let stored = stored.and_then(|snapshot| {
                let mut handle = snapshot.handle(job.subtask, file.clone(), job.key_groups);
                handle.shared = true;
                snapshot.store(storage.as_ref(), &format!("{dir}/{file}")).map_err(|e| e.to_string())?;
                Ok(handle)
            });
            match stored {
                Ok(handle) => chain.push(handle),
                Err(e) => {
                    inc.restart(&mut chains);
                    return Err(e);
                }
            }
        }
        kept.insert(t.uid, chain);
    }
    // An operator that handed in nothing has no state left: its chain ends here.
    chains.by_uid = kept;
    chains.last = Some(id);
    inc.stored(&chains);
    let mut states: Vec<_> =
        chains.by_uid.iter().flat_map(|(uid, chain)| chain.iter().map(|h| (uid.clone(), h.clone()))).collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(states)
}

fn compress_error(uid: &str, e: std::io::Error) -> String {
    format!("cannot compress the state of {uid} before storing it: {e}")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::element::Record;

    /// A source that never ends: one record per poll, numbered.
    struct Counting(i64);

    impl Source<i64> for Counting {
        fn poll(&mut self, out: &mut Vec<Record<i64>>) -> TaskResult<SourcePoll> {
            self.0 += 1;
            out.push(Record { time: self.0, value: self.0 });
            Ok(SourcePoll::Ready)
        }
    }

    /// What reached the chain: records, and a barrier as the record count then
    /// (negated id); besides, the checkpoint completions and the end, in order.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<i64>>>, Arc<Mutex<Vec<String>>>);

    impl Seen {
        fn barriers(&self) -> usize {
            self.0.lock().unwrap().iter().filter(|&&v| v < 0).count()
        }
        /// Records after the last barrier.
        fn after_last_barrier(&self) -> usize {
            self.0.lock().unwrap().iter().rev().take_while(|&&v| v >= 0).count()
        }
    }

    impl Output<i64> for Seen {
        fn records(&mut self, batch: Vec<Record<i64>>) -> TaskResult {
            self.0.lock().unwrap().extend(batch.iter().map(|r| r.value));
            Ok(())
        }
        fn watermark(&mut self, _: Timestamp) -> TaskResult {
            Ok(())
        }
        fn idle(&mut self, _: bool) -> TaskResult {
            Ok(())
        }
        fn barrier(&mut self, barrier: Barrier) -> TaskResult {
            self.0.lock().unwrap().push(-(barrier.checkpoint_id as i64));
            Ok(())
        }
        fn processing_time(&mut self, _: Timestamp) -> TaskResult {
            Ok(())
        }
        fn flush(&mut self) -> TaskResult {
            Ok(())
        }
        fn checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
            self.1.lock().unwrap().push(format!("complete {checkpoint_id}"));
            Ok(())
        }
        fn end(&mut self) -> TaskResult {
            self.1.lock().unwrap().push("end".into());
            Ok(())
        }
    }

    /// A checkpointing task's environment, the sender of its commands, and
    /// the receiver of its uploads.
    fn checkpointing(name: &str) -> (TaskEnv, Sender<Command>, Receiver<UploadJob>) {
        let (control_tx, control) = crossbeam_channel::unbounded();
        let (reports, _) = crossbeam_channel::unbounded();
        let (uploads, uploads_rx) = crossbeam_channel::unbounded();
        let checkpoints = TaskCheckpointing {
            job: "j".into(),
            control,
            reports,
            snapshots: SnapshotCollector::default(),
            uploads,
            mode: CheckpointMode::ExactlyOnce,
            alignment_budget: 1000,
        };
        let env = TaskEnv {
            name: name.into(),
            index: 0,
            subtask: 0,
            key_groups: KeyGroupRange::for_subtask(0, 1, 8),
            metrics: Arc::default(),
            stop: Arc::default(),
            cancel: Arc::default(),
            checkpoints: Some(checkpoints),
            alignment: Default::default(),
        };
        (env, control_tx, uploads_rx)
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// After a stop-with-savepoint's barrier a source reads nothing, until
    /// the savepoint fails (it reads on) or completes (its stream ends).
    #[test]
    fn a_source_reads_nothing_after_a_stop_with_savepoints_barrier() {
        let (env, control_tx, uploads_rx) = checkpointing("source");
        let seen = Seen::default();
        let task = Box::new(SourceTask::new(Box::new(Counting(0)), Box::new(seen.clone()), "src".into(), env));
        let running = std::thread::spawn(move || task.run());
        let trigger = |id, stop| Command::Trigger {
            barrier: Barrier { checkpoint_id: id, triggered_at: 0, is_savepoint: stop },
            drain: false,
            stop,
        };
        // A periodic checkpoint holds nothing.
        wait_until("records", || seen.after_last_barrier() > 0);
        control_tx.send(trigger(1, false)).unwrap();
        wait_until("records after checkpoint 1", || seen.barriers() == 1 && seen.after_last_barrier() > 0);
        // A stop-with-savepoint: nothing after its barrier.
        control_tx.send(trigger(2, true)).unwrap();
        wait_until("the savepoint's barrier", || seen.barriers() == 2);
        assert!(uploads_rx.recv_timeout(Duration::from_secs(30)).is_ok() && uploads_rx.recv().is_ok());
        std::thread::sleep(3 * TICK);
        assert_eq!(seen.after_last_barrier(), 0, "read after a stop-with-savepoint's barrier");
        // Another savepoint's failure does not resume it; its own does.
        control_tx.send(Command::Resume { checkpoint_id: 1 }).unwrap();
        std::thread::sleep(3 * TICK);
        assert_eq!(seen.after_last_barrier(), 0, "resumed by another checkpoint's failure");
        control_tx.send(Command::Resume { checkpoint_id: 2 }).unwrap();
        wait_until("records after the failed savepoint", || seen.after_last_barrier() > 0);
        // Held again, then the savepoint completes: the stream ends.
        control_tx.send(trigger(3, true)).unwrap();
        wait_until("the second savepoint's barrier", || seen.barriers() == 3);
        control_tx.send(Command::Complete { checkpoint_id: 3 }).unwrap();
        control_tx.send(Command::EndOfInput).unwrap();
        running.join().unwrap().unwrap();
        assert_eq!(seen.after_last_barrier(), 0);
    }

    /// The end of its input proves a checkpoint completed whose notice has
    /// not come (it comes another way): the chain is told before it ends,
    /// once, and not again when the notice came first.
    #[test]
    fn an_input_task_commits_the_completion_its_inputs_end_carries() {
        let barrier = |id| Event::Barrier(Barrier { checkpoint_id: id, triggered_at: 0, is_savepoint: false });
        let run = |completed_first: bool| {
            let (env, control_tx, _uploads) = checkpointing("sink");
            let (tx, rx) = crossbeam_channel::unbounded();
            let seen = Seen::default();
            let task = Box::new(InputTask::new(rx, 2, Box::new(seen.clone()), env));
            if completed_first {
                control_tx.send(Command::Complete { checkpoint_id: 2 }).unwrap();
            }
            for channel in 0..2 {
                tx.send((channel, Event::Records(vec![Record::new(1, 1)]))).unwrap();
                tx.send((channel, barrier(2))).unwrap();
            }
            tx.send((0, Event::End(Some(2)))).unwrap();
            tx.send((1, Event::End(Some(1)))).unwrap();
            task.run().unwrap();
            seen.1.lock().unwrap().clone()
        };
        assert_eq!(run(false), ["complete 2", "end"]);
        assert_eq!(run(true), ["complete 2", "end"]);
    }
}
