//! The window operator: per key and window state, fired by the watermark.

use std::sync::Arc;

use super::slices::Slicing;
use super::{Window, WindowAssigner, WindowFunction};
use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::checkpoint::spill::KeyedWriter;
use crate::element::{Data, Record};
use crate::error::{TaskError, TaskResult};
use crate::graph::SubtaskInfo;
use crate::metrics::SubtaskMetrics;
use crate::operator::Operator;
use crate::output::Collector;
use crate::state::{Key, StateBackend, Table, decode_entries};
use crate::time::{MIN_WATERMARK, NO_TIMESTAMP, Timestamp};
use crate::timer::TimerQueue;

/// What happens to late records.
pub enum LateData<In, Out> {
    /// Counted in the `late_records` metric and dropped.
    Drop,
    /// Counted, then emitted through this conversion (the side output).
    Emit(Box<dyn Fn(In) -> Out + Send>),
}

/// The state of one window of a key, or of one slice of a key's sliding windows.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Pane<Acc> {
    pub(super) window: Window,
    pub(super) acc: Acc,
    /// Whether the window fired (unused for slices: their windows' progress is the watermark).
    pub(super) fired: bool,
}

pub struct WindowOperator<K: Key, In, F: WindowFunction<K, In>, KS> {
    pub(super) assigner: WindowAssigner,
    /// Set when the panes are the slices of overlapping sliding windows (see
    /// [`super::slices`]); `None` when they are whole windows.
    pub(super) slicing: Option<Slicing>,
    pub(super) allowed_lateness: i64,
    key_selector: KS,
    pub(super) function: F,
    /// Per key, its windows (or slices, sorted by start): on the heap, or
    /// with the disk backend in its LSM behind a bounded cache.
    pub(super) panes: Table<K, Vec<Pane<F::Acc>>>,
    /// Why the disk backend's table could not be made, reported at the first check.
    failure: Option<String>,
    pub(super) timers: TimerQueue<K>,
    pub(super) watermark: Timestamp,
    late: LateData<In, F::Out>,
    metrics: Arc<SubtaskMetrics>,
    pub(super) max_parallelism: u32,
    /// Where snapshots gather the panes' key groups (a local file for the disk backend).
    backend: StateBackend,
    scratch: Vec<Window>,
}

impl<K, In, F, KS> WindowOperator<K, In, F, KS>
where
    K: Key,
    In: Data,
    F: WindowFunction<K, In>,
    KS: Fn(&In) -> K + Send + 'static,
{
    pub fn new(
        assigner: WindowAssigner,
        allowed_lateness: i64,
        key_selector: KS,
        function: F,
        late: LateData<In, F::Out>,
        info: &SubtaskInfo,
    ) -> Self {
        let mut failure = None;
        let panes = Table::new(&info.state_backend, info.max_parallelism).unwrap_or_else(|e| {
            failure = Some(e.to_string());
            Table::heap()
        });
        let timers = TimerQueue::new(&info.state_backend);
        WindowOperator {
            assigner,
            slicing: Slicing::of(assigner),
            allowed_lateness: allowed_lateness.max(0),
            key_selector,
            function,
            panes,
            failure,
            timers,
            watermark: MIN_WATERMARK,
            late,
            metrics: info.metrics.clone(),
            max_parallelism: info.max_parallelism,
            backend: info.state_backend.clone(),
            scratch: Vec::new(),
        }
    }

    /// Number of open (key, window) panes held in memory (all of them on the
    /// heap backend): the operator's state size.
    pub fn open_panes(&self) -> usize {
        self.panes.in_memory().map(|(_, panes)| panes.len()).sum()
    }

    /// The panes' key groups, each made by `encode` of the table's blob, a
    /// group at a time (on disk, read from the LSM into a local file).
    pub(super) fn write_groups(&mut self, encode: impl Fn(Vec<u8>) -> Vec<u8>) -> TaskResult<OperatorSnapshot> {
        self.check()?;
        let mut out = KeyedWriter::for_backend(&self.backend)?;
        for group in self.panes.group_blobs(self.max_parallelism)? {
            let (g, blob) = group?;
            out.push(g, encode(blob))?;
        }
        out.finish()
    }

    /// The first error of the disk backend's store, which fails the task:
    /// window contents that were not written are never checkpointed.
    pub(super) fn check(&mut self) -> TaskResult {
        let failure = self.failure.take().or_else(|| self.panes.take_failure());
        match failure.or_else(|| self.timers.take_failure()) {
            Some(reason) => Err(TaskError::Operator(reason)),
            None => Ok(()),
        }
    }

    #[inline]
    pub(super) fn is_late(&self, window: &Window) -> bool {
        window.max_timestamp().saturating_add(self.allowed_lateness) <= self.watermark
    }

    fn register_timers(timers: &mut TimerQueue<K>, key: &K, window: &Window, lateness: i64) {
        timers.register(window.max_timestamp(), key);
        if lateness > 0 {
            timers.register(window.max_timestamp().saturating_add(lateness), key);
        }
    }

    pub(super) fn fire(function: &mut F, key: &K, pane: &mut Pane<F::Acc>, out: &mut Vec<Record<F::Out>>) {
        let time = pane.window.max_timestamp();
        function.emit(key, &pane.window, &pane.acc, &mut |o| out.push(Record::new(time, o)));
        pane.fired = true;
    }

    pub(super) fn on_late(&mut self, record: Record<In>, out: &mut Vec<Record<F::Out>>) {
        SubtaskMetrics::add(&self.metrics.late_records, 1);
        if let LateData::Emit(convert) = &self.late {
            out.push(Record::new(record.time, convert(record.value)));
        }
    }

    fn add_aligned(&mut self, key: K, record: Record<In>, out: &mut Vec<Record<F::Out>>) {
        self.scratch.clear();
        self.assigner.assign(record.time, &mut self.scratch);
        let mut accepted = false;
        let lateness = self.allowed_lateness;
        let watermark = self.watermark;
        if self.panes.get(&key).is_none() && self.scratch.iter().all(|w| self.is_late(w)) {
            return self.on_late(record, out);
        }
        let panes = self.panes.entry(&key);
        for w in &self.scratch {
            if w.max_timestamp().saturating_add(lateness) <= watermark {
                continue;
            }
            accepted = true;
            let idx = match panes.iter().position(|p| p.window == *w) {
                Some(i) => i,
                None => {
                    panes.push(Pane { window: *w, acc: self.function.create(), fired: false });
                    Self::register_timers(&mut self.timers, &key, w, lateness);
                    panes.len() - 1
                }
            };
            let pane = &mut panes[idx];
            self.function.add(&mut pane.acc, &record.value);
            if pane.window.max_timestamp() <= watermark {
                // Late but within the allowed lateness: fire again with the update.
                Self::fire(&mut self.function, &key, pane, out);
            }
        }
        if !accepted {
            if panes.is_empty() {
                self.panes.clear_key(&key);
            }
            self.on_late(record, out);
        }
    }

    fn add_merging(&mut self, key: K, record: Record<In>, out: &mut Vec<Record<F::Out>>) {
        self.scratch.clear();
        self.assigner.assign(record.time, &mut self.scratch);
        let mut merged = self.scratch[0];
        // Lateness is judged on the session the record ends up in (as Flink
        // does): a record behind the watermark may still join an open session.
        if let Some(panes) = self.panes.get(&key) {
            while let Some(p) = panes.iter().find(|p| p.window.intersects(&merged) && merged.cover(&p.window) != merged)
            {
                merged = merged.cover(&p.window);
            }
        }
        if self.is_late(&merged) {
            return self.on_late(record, out);
        }
        let panes = self.panes.entry(&key);
        let mut acc: Option<F::Acc> = None;
        while let Some(i) = panes.iter().position(|p| p.window.intersects(&merged)) {
            let old = panes.swap_remove(i);
            match acc.as_mut() {
                None => acc = Some(old.acc),
                Some(a) => self.function.merge(a, old.acc),
            }
        }
        let mut acc = acc.unwrap_or_else(|| self.function.create());
        self.function.add(&mut acc, &record.value);
        // Timers of the windows merged away are left in the queue; firing
        // looks at the panes, so they find nothing and are harmless.
        Self::register_timers(&mut self.timers, &key, &merged, self.allowed_lateness);
        // The session has not fired with this content: it fires below when
        // the watermark already passed its end, or else when the watermark does
        // (also when a part of it fired before it grew).
        panes.push(Pane { window: merged, acc, fired: false });
        if merged.max_timestamp() <= self.watermark {
            let pane = panes.last_mut().expect("just pushed");
            Self::fire(&mut self.function, &key, pane, out);
        }
    }
}

impl<K, In, F, KS> Operator for WindowOperator<K, In, F, KS>
where
    K: Key,
    In: Data,
    F: WindowFunction<K, In>,
    KS: Fn(&In) -> K + Send + 'static,
{
    type In = In;
    type Out = F::Out;

    fn process_batch(&mut self, batch: Vec<Record<In>>, out: &mut Collector<'_, F::Out>) -> TaskResult {
        let out = out.buffer();
        let merging = self.assigner.is_merging();
        for record in batch {
            // Without event time (no assigner, a pipeline row whose time is
            // null) a record belongs to no window: it is late for all of them.
            if record.time == NO_TIMESTAMP {
                self.on_late(record, out);
                continue;
            }
            let key = (self.key_selector)(&record.value);
            if merging {
                self.add_merging(key, record, out);
            } else if let Some(slicing) = self.slicing {
                self.add_to_slice(slicing, key, record, out);
            } else {
                self.add_aligned(key, record, out);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<'_, F::Out>) -> TaskResult {
        let out = out.buffer();
        if let Some(slicing) = self.slicing {
            self.fire_slices(slicing, watermark, out);
            return self.check();
        }
        self.watermark = watermark;
        let lateness = self.allowed_lateness;
        while let Some((time, key)) = self.timers.pop_due(watermark) {
            let Some(panes) = self.panes.get_mut(&key) else {
                continue;
            };
            for pane in panes.iter_mut() {
                if pane.window.max_timestamp() <= time && !pane.fired {
                    Self::fire(&mut self.function, &key, pane, out);
                }
            }
            panes.retain(|p| p.window.max_timestamp().saturating_add(lateness) > time);
            if panes.is_empty() {
                self.panes.clear_key(&key);
            }
        }
        self.check()
    }

    /// Window contents per key group; timers are derived from them on restore.
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        if self.slicing.is_some() {
            return self.snapshot_slices();
        }
        self.write_groups(|blob| blob)
    }

    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        let (mut state, handed_back) = match self.slicing {
            Some(slicing) => match self.restore_slices(slicing, state)? {
                None => return Ok(()),
                // Whole windows, from a version that did not slice: kept as they are.
                Some(windows) => {
                    self.slicing = None;
                    (windows, true)
                }
            },
            None => (state, false),
        };
        for group in state.take_groups() {
            let (_, blob) = group?;
            // Versions before slicing kept whole windows on the heap only, whose
            // blobs never open with the slices' tag: one that does is sliced.
            if handed_back && blob.first() == Some(&super::slices::SLICES_TAG) {
                return Err(super::slices::mixed_state());
            }
            let entries: Vec<(K, Vec<Pane<F::Acc>>)> = decode_entries(&blob)?;
            for (key, panes) in &entries {
                for p in panes {
                    Self::register_timers(&mut self.timers, key, &p.window, self.allowed_lateness);
                }
            }
            self.panes.restore_entries(entries)?;
        }
        Ok(())
    }
}
