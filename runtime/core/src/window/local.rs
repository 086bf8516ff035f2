//! Two-phase (local-global) window aggregation: each subtask upstream of the
//! key exchange combines its records per key and pane ([`LocalAggregate`]),
//! and the exchange carries one [`Partial`] per key and pane instead of every
//! record; the window operator downstream merges the partials
//! ([`MergePartials`]) exactly as it would have added the records.
//!
//! A pane is what the window operator keeps an accumulator for: a tumbling
//! window, or a slice of sliding windows (see [`super::slices`]); a partial is
//! stamped with its pane's last millisecond, which lies in exactly the windows
//! (and the slice) its records lie in, so windows fire with the same results,
//! and a partial is late exactly when its records would have been. Session
//! windows, which merge, are not pre-aggregated.
//!
//! The local side passes a partial on before the first watermark that reaches
//! its pane's last millisecond (so none trails a watermark that could fire a
//! window it lies in; until then no window it lies in can fire, so it keeps
//! combining records of its pane), when its input turns
//! idle (the windows may then fire on other inputs' watermarks), when it holds
//! [`LOCAL_CAPACITY`] of them, and at the end of input. Those it holds at a
//! barrier are in its snapshot, dealt out on restore to any subtask (they
//! carry their key, and the exchange after the local side routes them), so
//! results stay exactly-once. Only functions with a true `merge` (aggregates,
//! reduces) take this path, and only windows without allowed lateness, where
//! a window fires once: with lateness, a batch of late records would fire it
//! again once instead of once each.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::slices::Slicing;
use super::{Window, WindowAssigner, WindowFunction};
use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::element::{Data, Record};
use crate::error::TaskResult;
use crate::metrics::SubtaskMetrics;
use crate::operator::Operator;
use crate::output::Collector;
use crate::state::{Key, KeyMap, codec};
use crate::time::{NO_TIMESTAMP, Timestamp};

/// The partials a local side holds before it passes them all on.
pub const LOCAL_CAPACITY: usize = 16_384;

/// One key's accumulator over one pane, made upstream of the exchange.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Partial<K, Acc> {
    pub key: K,
    pub acc: Acc,
}

/// The pane (window, or slice of sliding windows) a record at `time` is added to.
fn pane_of(assigner: WindowAssigner, slicing: Option<Slicing>, time: Timestamp) -> Window {
    match (slicing, assigner) {
        (Some(s), _) => s.slice_of(time),
        (None, WindowAssigner::Tumbling { size } | WindowAssigner::Sliding { size, .. }) => {
            let start = time.saturating_sub(time.rem_euclid(size));
            Window::new(start, start.saturating_add(size))
        }
        (None, WindowAssigner::Session { gap }) => Window::new(time, time.saturating_add(gap)),
    }
}

/// Whether windows of `assigner` can be pre-aggregated (they do not merge).
pub fn combinable(assigner: WindowAssigner) -> bool {
    !assigner.is_merging()
}

/// The local side: accumulators per (key, pane start), passed on as partials.
pub struct LocalAggregate<K: Key, In, F: WindowFunction<K, In>, KS> {
    assigner: WindowAssigner,
    slicing: Option<Slicing>,
    key_selector: KS,
    function: F,
    panes: KeyMap<(K, Timestamp), (Window, F::Acc)>,
    /// The pane of the last record, when panes tile time: records arrive
    /// mostly in time order, and a division per record was 8 % of a windowed
    /// count's CPU.
    last_pane: Option<Window>,
    /// No held pane ends before this (a lower bound; `Timestamp::MAX` when none is held).
    earliest: Timestamp,
    metrics: Arc<SubtaskMetrics>,
    _in: PhantomData<fn(In)>,
}

impl<K: Key, In, F: WindowFunction<K, In>, KS> LocalAggregate<K, In, F, KS> {
    pub fn new(assigner: WindowAssigner, key_selector: KS, function: F, metrics: Arc<SubtaskMetrics>) -> Self {
        LocalAggregate {
            assigner,
            slicing: Slicing::of(assigner),
            key_selector,
            function,
            panes: KeyMap::default(),
            last_pane: None,
            earliest: Timestamp::MAX,
            metrics,
            _in: PhantomData,
        }
    }

    /// The pane a record at `time` is added to; see [`pane_of`].
    #[inline]
    fn pane_of(&mut self, time: Timestamp) -> Window {
        match self.last_pane {
            Some(last) if last.start <= time && time < last.end => last,
            _ => {
                let pane = pane_of(self.assigner, self.slicing, time);
                if !self.assigner.is_merging() {
                    self.last_pane = Some(pane);
                }
                pane
            }
        }
    }

    fn pass_on(&mut self, out: &mut Collector<'_, Partial<K, F::Acc>>) {
        self.earliest = Timestamp::MAX;
        for ((key, _), (pane, acc)) in self.panes.drain() {
            out.emit(pane.max_timestamp(), Partial { key, acc });
        }
    }

    /// Passes on the partials of panes that end at or before `watermark`.
    fn pass_on_due(&mut self, watermark: Timestamp, out: &mut Collector<'_, Partial<K, F::Acc>>) {
        if watermark < self.earliest {
            return;
        }
        for ((key, _), (pane, acc)) in self.panes.extract_if(|_, (pane, _)| pane.max_timestamp() <= watermark) {
            out.emit(pane.max_timestamp(), Partial { key, acc });
        }
        self.earliest = self.panes.values().map(|(pane, _)| pane.max_timestamp()).min().unwrap_or(Timestamp::MAX);
    }
}

impl<K, In, F, KS> Operator for LocalAggregate<K, In, F, KS>
where
    K: Key,
    In: Data,
    F: WindowFunction<K, In>,
    KS: Fn(&In) -> K + Send + 'static,
{
    type In = In;
    type Out = Partial<K, F::Acc>;

    fn process_batch(&mut self, batch: Vec<Record<In>>, out: &mut Collector<'_, Self::Out>) -> TaskResult {
        // By reference: a record is read, never kept, and may be large to move.
        for r in &batch {
            if r.time == NO_TIMESTAMP {
                // Late for every window, as the window operator has it; no partial can carry it.
                SubtaskMetrics::add(&self.metrics.late_records, 1);
                continue;
            }
            let pane = self.pane_of(r.time);
            self.earliest = self.earliest.min(pane.max_timestamp());
            let key = (self.key_selector)(&r.value);
            let function = &self.function;
            let (_, acc) = self.panes.entry((key, pane.start)).or_insert_with(|| (pane, function.create()));
            self.function.add(acc, &r.value);
        }
        if self.panes.len() >= LOCAL_CAPACITY {
            self.pass_on(out);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<'_, Self::Out>) -> TaskResult {
        self.pass_on_due(watermark, out);
        Ok(())
    }

    /// An idle input no longer holds the windows downstream back: what it
    /// holds must reach them before they fire on the other inputs' watermarks.
    fn on_idle(&mut self, idle: bool, out: &mut Collector<'_, Self::Out>) -> TaskResult {
        if idle {
            self.pass_on(out);
        }
        Ok(())
    }

    fn on_end(&mut self, out: &mut Collector<'_, Self::Out>) -> TaskResult {
        self.pass_on(out);
        Ok(())
    }

    fn snapshot_state(&mut self, _checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        if self.panes.is_empty() {
            return Ok(OperatorSnapshot::default());
        }
        let held: Vec<(&K, &Window, &F::Acc)> = self.panes.iter().map(|((k, _), (w, acc))| (k, w, acc)).collect();
        Ok(OperatorSnapshot::of_entries(vec![codec::encode(&held)]))
    }

    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        for blob in state.entries {
            let held: Vec<(K, Window, F::Acc)> = codec::decode(&blob, "a local aggregate's partials")?;
            for (key, pane, acc) in held {
                match self.panes.get_mut(&(key.clone(), pane.start)) {
                    Some((_, mine)) => self.function.merge(mine, acc),
                    None => {
                        self.earliest = self.earliest.min(pane.max_timestamp());
                        self.panes.insert((key, pane.start), (pane, acc));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The global side's window function: merges partials with `F`'s `merge`,
/// and emits what `F` emits.
pub struct MergePartials<F, In> {
    pub function: F,
    _in: PhantomData<fn(In)>,
}

impl<F: Clone, In> Clone for MergePartials<F, In> {
    fn clone(&self) -> Self {
        MergePartials { function: self.function.clone(), _in: PhantomData }
    }
}

impl<F, In> MergePartials<F, In> {
    pub fn new(function: F) -> Self {
        MergePartials { function, _in: PhantomData }
    }
}

impl<K, In, F> WindowFunction<K, Partial<K, F::Acc>> for MergePartials<F, In>
where
    K: Key,
    In: 'static,
    F: WindowFunction<K, In>,
{
    type Acc = F::Acc;
    type Out = F::Out;
    fn create(&self) -> F::Acc {
        self.function.create()
    }
    fn add(&self, acc: &mut F::Acc, partial: &Partial<K, F::Acc>) {
        self.function.merge_ref(acc, &partial.acc)
    }
    fn merge(&self, acc: &mut F::Acc, other: F::Acc) {
        self.function.merge(acc, other)
    }
    fn merge_ref(&self, acc: &mut F::Acc, other: &F::Acc) {
        self.function.merge_ref(acc, other)
    }
    fn emit(&mut self, key: &K, window: &Window, acc: &F::Acc, out: &mut dyn FnMut(F::Out)) {
        self.function.emit(key, window, acc, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::ReduceWindow;

    type Sum = ReduceWindow<fn(i64, &i64) -> i64, fn(&u8, &Window, &i64) -> i64, i64>;

    fn local() -> LocalAggregate<u8, i64, Sum, fn(&i64) -> u8> {
        let sum: Sum = ReduceWindow::new(|a, b| a + b, |_, _, v| *v);
        LocalAggregate::new(WindowAssigner::Tumbling { size: 10 }, |v| (*v % 2) as u8, sum, Default::default())
    }

    fn partials(out: Vec<Record<Partial<u8, Option<i64>>>>) -> Vec<(i64, u8, Option<i64>)> {
        let mut v: Vec<_> = out.into_iter().map(|r| (r.time, r.value.key, r.value.acc)).collect();
        v.sort();
        v
    }

    #[test]
    fn partials_are_passed_on_when_the_watermark_reaches_their_pane_and_held_ones_survive_a_snapshot() {
        let mut op = local();
        let mut out = Vec::new();
        let records = |vs: &[(i64, i64)]| vs.iter().map(|&(t, v)| Record::new(t, v)).collect::<Vec<_>>();
        op.process_batch(records(&[(1, 1), (2, 3), (3, 2), (15, 5)]), &mut Collector::new(&mut out)).unwrap();
        assert!(out.is_empty(), "held until the watermark");
        op.on_watermark(3, &mut Collector::new(&mut out)).unwrap();
        assert!(out.is_empty(), "no window they lie in can fire at 3: they keep combining");
        op.process_batch(records(&[(4, 10)]), &mut Collector::new(&mut out)).unwrap();
        op.on_watermark(9, &mut Collector::new(&mut out)).unwrap();
        assert_eq!(partials(std::mem::take(&mut out)), vec![(9, 0, Some(12)), (9, 1, Some(4))], "the pane [0, 10)");
        op.process_batch(records(&[(14, 7), (21, 2)]), &mut Collector::new(&mut out)).unwrap();
        let snapshot = op.snapshot_state(1).unwrap();
        let mut restored = local();
        restored.restore_state(RestoredState { entries: snapshot.entries, ..Default::default() }).unwrap();
        restored.process_batch(records(&[(15, 1)]), &mut Collector::new(&mut out)).unwrap();
        restored.on_watermark(19, &mut Collector::new(&mut out)).unwrap();
        assert_eq!(partials(std::mem::take(&mut out)), vec![(19, 1, Some(13))], "held and restored, merged with new");
        restored.on_end(&mut Collector::new(&mut out)).unwrap();
        assert_eq!(partials(out), vec![(29, 0, Some(2))], "the rest at the end");
    }

    #[test]
    fn a_partial_lies_in_exactly_the_windows_and_slice_of_its_records() {
        let sliding = WindowAssigner::Sliding { size: 10_000, slide: 4_000 };
        let slicing = Slicing::of(sliding);
        for t in [-7_001, -1, 0, 1_999, 2_000, 12_345, 19_999] {
            let pane = pane_of(sliding, slicing, t);
            let (mut of_record, mut of_partial) = (Vec::new(), Vec::new());
            sliding.assign(t, &mut of_record);
            sliding.assign(pane.max_timestamp(), &mut of_partial);
            assert_eq!(of_record, of_partial, "at {t}");
            assert_eq!(slicing.unwrap().slice_of(pane.max_timestamp()), pane);
        }
        let tumbling = WindowAssigner::Tumbling { size: 60_000 };
        let pane = pane_of(tumbling, None, 61_234);
        let mut of_partial = Vec::new();
        tumbling.assign(pane.max_timestamp(), &mut of_partial);
        assert_eq!(of_partial, vec![pane]);
    }
}
