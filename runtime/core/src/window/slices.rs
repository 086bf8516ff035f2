//! Sliding windows kept by slices.
//!
//! A sliding window of `size` advancing by `slide` is the union of consecutive
//! *slices* of `gcd(size, slide)` milliseconds: every window starts and ends on
//! a slice boundary. So the operator keeps one accumulator per (key, slice), adds
//! each record to exactly one of them, and merges a window's slices when it
//! fires. A record costs one accumulator update whatever `size / slide` is,
//! where assigning it to every window it belongs to costs `size / slide` (360
//! for an hour sliding by ten seconds). This is the slicing of Flink's SQL
//! window aggregates and of Cutty/Scotty (Traub et al., "Efficient Window
//! Aggregation with General Stream Slicing", EDBT 2019).
//!
//! Windows start at multiples of `slide` (aligned to the epoch, as
//! [`WindowAssigner::assign`](super::WindowAssigner::assign) has it), so a
//! window's end `e` satisfies `e ≡ size (mod slide)`. Arithmetic saturates at
//! the ends of the time line: timestamps come from the records.

use super::operator::{Pane, WindowOperator};
use super::{Window, WindowAssigner, WindowFunction};
use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::element::{Data, Record};
use crate::error::{TaskError, TaskResult};
use crate::state::{Key, codec, decode_entries};
use crate::time::{MIN_WATERMARK, Timestamp};

/// The first byte of a key group's sliced window state. Whole-window state
/// (what versions before slicing wrote, and what tumbling and session windows
/// write) is a bincode sequence, which opens with its length as a varint: that
/// first byte is at most 254, so the two never mistake each other.
pub(super) const SLICES_TAG: u8 = 0xff;

/// The slice arithmetic of one sliding assigner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slicing {
    size: i64,
    slide: i64,
    slice: i64,
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Slicing {
    /// Slices for a sliding assigner whose windows overlap; `None` for the others
    /// (a tumbling window is its own single slice, and sessions are not aligned).
    pub(crate) fn of(assigner: WindowAssigner) -> Option<Slicing> {
        match assigner {
            WindowAssigner::Sliding { size, slide } if size > 0 && slide > 0 => {
                let slice = gcd(size, slide);
                (slice < size).then_some(Slicing { size, slide, slice })
            }
            _ => None,
        }
    }

    /// The slice holding `time`.
    pub(crate) fn slice_of(&self, time: Timestamp) -> Window {
        let start = time.saturating_sub(time.rem_euclid(self.slice));
        Window::new(start, start.saturating_add(self.slice))
    }

    /// Whether `end` is the end of a window.
    pub(crate) fn is_window_end(&self, end: Timestamp) -> bool {
        end.rem_euclid(self.slide) == self.size.rem_euclid(self.slide)
    }

    /// The first window end at or after `time`.
    pub(crate) fn end_at_or_after(&self, time: Timestamp) -> Timestamp {
        let ahead = (self.size.rem_euclid(self.slide) - time.rem_euclid(self.slide)).rem_euclid(self.slide);
        time.saturating_add(ahead)
    }

    /// The end of the last window that holds `slice`.
    pub(crate) fn last_end(&self, slice: &Window) -> Timestamp {
        slice.start.saturating_sub(slice.start.rem_euclid(self.slide)).saturating_add(self.size)
    }

    /// The window ending at `end`.
    pub(crate) fn window_ending(&self, end: Timestamp) -> Window {
        Window::new(end.saturating_sub(self.size), end)
    }

    /// The end of the first window holding `slice` that has not fired at `watermark`
    /// (a window fires when the watermark reaches its last millisecond, `end - 1`).
    pub(crate) fn first_unfired_end(&self, slice: &Window, watermark: Timestamp) -> Option<Timestamp> {
        let from = slice.end.max(watermark.checked_add(2)?);
        let end = self.end_at_or_after(from);
        (end <= self.last_end(slice)).then_some(end)
    }

    /// The ends of the windows that hold `slice` and have fired at `watermark`
    /// but are still within `lateness` of it: a record added to the slice
    /// changes their results, so they fire again.
    pub(crate) fn refired_ends(
        &self,
        slice: &Window,
        watermark: Timestamp,
        lateness: i64,
    ) -> impl Iterator<Item = Timestamp> + use<> {
        let first = self.end_at_or_after(slice.end);
        let last = self.last_end(slice).min(watermark.saturating_add(1));
        let slide = self.slide;
        std::iter::successors(Some(first), move |e| e.checked_add(slide))
            .take_while(move |e| *e <= last)
            .filter(move |e| (e - 1).saturating_add(lateness) > watermark)
    }
}

/// A key group's sliced state (after its tag): the operator's watermark when
/// it was taken (windows ending at or before it have fired), then each key's
/// slices as the panes' table encodes a key group (the heap's bincode, or
/// the disk backend's sorted entries).
#[allow(clippy::type_complexity)]
fn decode_sliced_group<K: Key, Acc: crate::element::Data>(
    bytes: &[u8],
) -> TaskResult<(Timestamp, Vec<(K, Vec<Pane<Acc>>)>)> {
    let (watermark, entries) = codec::decode_head(bytes, "sliced window contents")?;
    Ok((watermark, decode_entries(entries)?))
}

impl<K, In, F, KS> WindowOperator<K, In, F, KS>
where
    K: Key,
    In: Data,
    F: WindowFunction<K, In>,
    KS: Fn(&In) -> K + Send + 'static,
{
    /// Adds a record to its key's slice, scheduling the slice's first window
    /// and firing again the windows it updates that fired within the allowed lateness.
    pub(super) fn add_to_slice(&mut self, s: Slicing, key: K, record: Record<In>, out: &mut Vec<Record<F::Out>>) {
        let slice = s.slice_of(record.time);
        let (watermark, lateness) = (self.watermark, self.allowed_lateness);
        if self.is_late(&s.window_ending(s.last_end(&slice))) {
            return self.on_late(record, out);
        }
        let panes = self.panes.entry(&key);
        // Records mostly arrive in time order, so the slice is mostly the last one.
        let at = match panes.last() {
            Some(last) if last.window.start == slice.start => panes.len() - 1,
            _ => match panes.binary_search_by_key(&slice.start, |p| p.window.start) {
                Ok(at) => at,
                Err(at) => {
                    panes.insert(at, Pane { window: slice, acc: self.function.create(), fired: false });
                    schedule_slice(&mut self.timers, s, &key, &slice, watermark, lateness);
                    at
                }
            },
        };
        self.function.add(&mut panes[at].acc, &record.value);
        for end in s.refired_ends(&slice, watermark, lateness) {
            fire_window(&mut self.function, s, &key, panes, end, out);
        }
    }

    /// Advances the watermark: fires the windows it passed, in time order, and
    /// drops the slices no window needs any more.
    pub(super) fn fire_slices(&mut self, s: Slicing, watermark: Timestamp, out: &mut Vec<Record<F::Out>>) {
        self.watermark = self.watermark.max(watermark);
        let lateness = self.allowed_lateness;
        while let Some((time, key)) = self.timers.pop_due(watermark) {
            let Some(panes) = self.panes.get_mut(&key) else {
                continue;
            };
            let end = time.saturating_add(1);
            if s.is_window_end(end) {
                fire_window(&mut self.function, s, &key, panes, end, out);
            }
            // Slices are sorted by start, so by the end of their last window too.
            let done = panes.partition_point(|p| (s.last_end(&p.window) - 1).saturating_add(lateness) <= time);
            panes.drain(..done);
            // The key's next window, if a slice of it is here; later slices
            // scheduled their own first windows when they were made.
            let next = s.end_at_or_after(time.saturating_add(2));
            let window = s.window_ending(next);
            let first = panes.partition_point(|p| p.window.start < window.start);
            if panes.get(first).is_some_and(|p| p.window.start < window.end) {
                self.timers.register(next - 1, &key);
            }
            if panes.is_empty() {
                self.panes.clear_key(&key);
            }
        }
    }

    pub(super) fn snapshot_slices(&mut self) -> TaskResult<OperatorSnapshot> {
        let header = codec::encode(&self.watermark);
        self.write_groups(|entries| [&[SLICES_TAG][..], &header, &entries].concat())
    }

    /// Restores sliced state, or hands back state of whole windows (written
    /// before slicing existed) for the caller to restore as such.
    pub(super) fn restore_slices(&mut self, s: Slicing, state: RestoredState) -> TaskResult<Option<RestoredState>> {
        let mut state = state;
        if state.has_keyed() && state.first_byte()? != Some(SLICES_TAG) {
            return Ok(Some(state));
        }
        let mut restored_watermark = None::<Timestamp>;
        for group in state.take_groups() {
            let (_, blob) = group?;
            let Some((&SLICES_TAG, blob)) = blob.split_first() else { return Err(mixed_state()) };
            let (watermark, entries) = decode_sliced_group::<K, F::Acc>(blob)?;
            restored_watermark = Some(restored_watermark.map_or(watermark, |w| w.min(watermark)));
            let mut entries = entries;
            for (key, panes) in &mut entries {
                panes.sort_by_key(|p| p.window.start);
                for p in panes.iter() {
                    schedule_slice(&mut self.timers, s, key, &p.window, watermark, self.allowed_lateness);
                }
            }
            self.panes.restore_entries(entries)?;
        }
        // Records after the snapshot meet the watermark they would have met
        // without the restart, so they are judged late, or fire the windows
        // they update again, as they would have been.
        self.watermark = self.watermark.max(restored_watermark.unwrap_or(MIN_WATERMARK));
        Ok(None)
    }
}

/// Sliced key groups beside whole windows' (each restore path refuses the other's).
pub(super) fn mixed_state() -> TaskError {
    TaskError::Operator(
        "window state mixes sliced and whole-window key groups; it was not written by one version".into(),
    )
}

/// Registers the timers of a new slice: its first window that has not fired
/// yet, and, with allowed lateness, the moment its last window's lateness ends.
fn schedule_slice<K: Key>(
    timers: &mut crate::timer::TimerQueue<K>,
    s: Slicing,
    key: &K,
    slice: &Window,
    watermark: Timestamp,
    lateness: i64,
) {
    if let Some(end) = s.first_unfired_end(slice, watermark) {
        timers.register(end - 1, key);
    }
    if lateness > 0 {
        timers.register((s.last_end(slice) - 1).saturating_add(lateness), key);
    }
}

/// Emits the window ending at `end` from the key's slices, if any holds data.
fn fire_window<K: Key, In, F: WindowFunction<K, In>>(
    function: &mut F,
    s: Slicing,
    key: &K,
    panes: &[Pane<F::Acc>],
    end: Timestamp,
    out: &mut Vec<Record<F::Out>>,
) {
    let window = s.window_ending(end);
    let from = panes.partition_point(|p| p.window.start < window.start);
    let to = panes.partition_point(|p| p.window.start < window.end);
    let time = window.max_timestamp();
    let mut emit = |o| out.push(Record::new(time, o));
    match &panes[from..to] {
        [] => {}
        [one] => function.emit(key, &window, &one.acc, &mut emit),
        several => {
            let mut acc = function.create();
            for p in several {
                function.merge_ref(&mut acc, &p.acc);
            }
            function.emit(key, &window, &acc, &mut emit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MIN_WATERMARK;

    fn hour_by_ten_seconds() -> Slicing {
        Slicing::of(WindowAssigner::Sliding { size: 3_600_000, slide: 10_000 }).unwrap()
    }

    /// The windows a record at `time` is in, by the assigner, as ends.
    fn assigned_ends(a: WindowAssigner, time: i64) -> Vec<i64> {
        let mut v = Vec::new();
        a.assign(time, &mut v);
        let mut ends: Vec<i64> = v.iter().map(|w| w.end).collect();
        ends.sort();
        ends
    }

    #[test]
    fn the_slice_is_the_gcd_of_size_and_slide() {
        assert_eq!(hour_by_ten_seconds().slice, 10_000);
        assert_eq!(Slicing::of(WindowAssigner::Sliding { size: 10_000, slide: 4_000 }).unwrap().slice, 2_000);
        assert_eq!(Slicing::of(WindowAssigner::Sliding { size: 10_000, slide: 10_000 }), None);
        assert_eq!(Slicing::of(WindowAssigner::Tumbling { size: 10_000 }), None);
    }

    #[test]
    fn a_slices_windows_are_the_assigners_windows_of_its_records() {
        for (size, slide) in [(10_000, 2_000), (10_000, 4_000), (7, 3), (3_600_000, 10_000)] {
            let a = WindowAssigner::Sliding { size, slide };
            let s = Slicing::of(a).unwrap();
            for time in [-10_001, -1, 0, 1, 1_999, 2_000, 12_345, 1_700_000_061_234] {
                let slice = s.slice_of(time);
                assert!(slice.start <= time && time < slice.end);
                let first = s.end_at_or_after(slice.end);
                let ends: Vec<i64> = std::iter::successors(Some(first), |e| Some(e + slide))
                    .take_while(|e| *e <= s.last_end(&slice))
                    .collect();
                assert_eq!(ends, assigned_ends(a, time), "size {size} slide {slide} time {time}");
                assert!(ends.iter().all(|e| s.is_window_end(*e)));
                assert_eq!(s.first_unfired_end(&slice, MIN_WATERMARK), Some(first));
            }
        }
    }

    #[test]
    fn windows_that_fired_are_not_scheduled_again_and_refire_within_lateness() {
        let s = Slicing::of(WindowAssigner::Sliding { size: 10_000, slide: 2_000 }).unwrap();
        let slice = s.slice_of(5_500); // [4000, 6000): windows ending 6000..=14000
        assert_eq!(s.first_unfired_end(&slice, 7_999), Some(10_000));
        assert_eq!(s.first_unfired_end(&slice, 13_999), None);
        assert_eq!(s.refired_ends(&slice, 7_999, 0).count(), 0);
        assert_eq!(s.refired_ends(&slice, 7_999, 3_000).collect::<Vec<_>>(), vec![6_000, 8_000]);
        assert_eq!(s.refired_ends(&slice, 7_999, 1_000).collect::<Vec<_>>(), vec![8_000]);
    }

    #[test]
    fn the_ends_of_the_time_line_saturate() {
        let s = hour_by_ten_seconds();
        let slice = s.slice_of(i64::MAX);
        assert_eq!(slice.end, i64::MAX);
        assert_eq!(s.first_unfired_end(&slice, i64::MAX), None);
        let slice = s.slice_of(i64::MIN + 5);
        assert!(s.first_unfired_end(&slice, MIN_WATERMARK).is_some());
    }
}

/// The sliced operator against the same operator keeping whole windows (the
/// assigner's path): the same rows at every step, with allowed lateness, late
/// records, and restores from snapshots in between.
#[cfg(test)]
mod equivalence {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::graph::{SnapshotCollector, SubtaskInfo};
    use crate::metrics::SubtaskMetrics;
    use crate::operator::Operator;
    use crate::output::Collector;
    use crate::time::MAX_WATERMARK;
    use crate::window::{AggregateFunction, AggregateWindow, LateData};

    /// Count and sum of the values.
    struct CountSum;

    impl AggregateFunction<(u32, i64)> for CountSum {
        type Acc = (i64, i64);
        type Result = (i64, i64);
        fn create(&self) -> (i64, i64) {
            (0, 0)
        }
        fn add(&self, acc: &mut (i64, i64), value: &(u32, i64)) {
            *acc = (acc.0 + 1, acc.1 + value.1);
        }
        fn merge(&self, acc: &mut (i64, i64), other: (i64, i64)) {
            *acc = (acc.0 + other.0, acc.1 + other.1);
        }
        fn result(&self, acc: &(i64, i64)) -> (i64, i64) {
            *acc
        }
    }

    /// A window's row, or a late record (window bounds `None`).
    type Row = (u32, Option<(i64, i64)>, i64, i64);
    type Finish = fn(&u32, &Window, (i64, i64)) -> Row;
    type Op = WindowOperator<u32, (u32, i64), AggregateWindow<CountSum, Finish, Row>, fn(&(u32, i64)) -> u32>;

    fn operator(assigner: WindowAssigner, lateness: i64, sliced: bool) -> Op {
        operator_on(assigner, lateness, sliced, &crate::state::StateBackend::Heap)
    }

    fn operator_on(assigner: WindowAssigner, lateness: i64, sliced: bool, backend: &crate::state::StateBackend) -> Op {
        let info = SubtaskInfo {
            vertex: "window".into(),
            uid: "1-window".into(),
            index: 0,
            parallelism: 1,
            max_parallelism: 128,
            metrics: Arc::new(SubtaskMetrics::default()),
            restored: None,
            snapshots: SnapshotCollector::default(),
            checkpointing: true,
            alignment: Default::default(),
            side_outputs: Default::default(),
            state_backend: backend.clone(),
        };
        let finish: Finish = |k, w, (count, sum)| (*k, Some((w.start, w.end)), count, sum);
        let late = LateData::Emit(Box::new(|(k, v): (u32, i64)| (k, None, 0, v)));
        let key: fn(&(u32, i64)) -> u32 = |v| v.0;
        let mut op = WindowOperator::new(assigner, lateness, key, AggregateWindow::new(CountSum, finish), late, &info);
        if !sliced {
            op.slicing = None;
        }
        assert_eq!(op.slicing.is_some(), sliced, "{assigner:?}");
        op
    }

    #[derive(Clone, Debug)]
    enum Step {
        Record {
            time: i64,
            key: u32,
            value: i64,
        },
        /// Advance the watermark by this much.
        Watermark(i64),
        /// Snapshot, then restore into a new operator (which sees the last watermark again).
        Restore,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0i64..40_000, 0u32..4, -5i64..100).prop_map(|(time, key, value)| Step::Record { time, key, value }),
            2 => (0i64..6_000).prop_map(Step::Watermark),
            1 => Just(Step::Restore),
        ]
    }

    fn run(op: &mut Op, f: impl FnOnce(&mut Op, &mut Collector<'_, Row>)) -> Vec<Row> {
        let mut out = Vec::new();
        f(op, &mut Collector::new(&mut out));
        let mut rows: Vec<Row> = out.into_iter().map(|r| r.value).collect();
        rows.sort();
        rows
    }

    fn restored(op: &mut Op, assigner: WindowAssigner, lateness: i64, sliced: bool) -> Op {
        let snapshot = op.snapshot_state(1).unwrap();
        let mut new = operator(assigner, lateness, sliced);
        new.restore_state(RestoredState { keyed: snapshot.into_keyed().unwrap(), ..Default::default() }).unwrap();
        new
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn slices_emit_what_whole_windows_emit(
            shape in prop_oneof![Just((10_000i64, 2_000i64)), Just((10_000, 4_000)), Just((9_000, 6_000)), Just((7_000, 1_000))],
            lateness in prop_oneof![Just(0i64), Just(3_000), Just(10_000)],
            steps in proptest::collection::vec(step(), 1..120),
        ) {
            let assigner = WindowAssigner::Sliding { size: shape.0, slide: shape.1 };
            let mut sliced = operator(assigner, lateness, true);
            let mut whole = operator(assigner, lateness, false);
            let mut watermark: i64 = -1_000;
            for step in steps.into_iter().chain([Step::Watermark(MAX_WATERMARK)]) {
                let (a, b) = match step {
                    Step::Record { time, key, value } => {
                        let batch = || vec![Record::new(time, (key, value))];
                        (
                            run(&mut sliced, |op, out| op.process_batch(batch(), out).unwrap()),
                            run(&mut whole, |op, out| op.process_batch(batch(), out).unwrap()),
                        )
                    }
                    Step::Watermark(by) => {
                        watermark = watermark.saturating_add(by);
                        (
                            run(&mut sliced, |op, out| op.on_watermark(watermark, out).unwrap()),
                            run(&mut whole, |op, out| op.on_watermark(watermark, out).unwrap()),
                        )
                    }
                    Step::Restore => {
                        sliced = restored(&mut sliced, assigner, lateness, true);
                        whole = restored(&mut whole, assigner, lateness, false);
                        prop_assert!(sliced.slicing.is_some());
                        (
                            run(&mut sliced, |op, out| op.on_watermark(watermark, out).unwrap()),
                            run(&mut whole, |op, out| op.on_watermark(watermark, out).unwrap()),
                        )
                    }
                };
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(sliced.open_panes(), 0);
        }
    }

    #[test]
    fn whole_windows_from_before_slicing_restore_as_such() {
        let assigner = WindowAssigner::Sliding { size: 10_000, slide: 2_000 };
        let mut before = operator(assigner, 0, false);
        run(&mut before, |op, out| op.process_batch(vec![Record::new(5_500, (1, 7))], out).unwrap());
        let mut after = restored(&mut before, assigner, 0, true);
        assert!(after.slicing.is_none(), "the whole windows are kept");
        let rows = run(&mut after, |op, out| op.on_watermark(MAX_WATERMARK, out).unwrap());
        assert_eq!(rows.len(), 5);
        assert!(rows.iter().all(|r| r.2 == 1 && r.3 == 7));
    }

    #[test]
    fn a_restored_operator_judges_lateness_by_the_watermark_of_its_snapshot() {
        let assigner = WindowAssigner::Sliding { size: 10_000, slide: 2_000 };
        let mut before = operator(assigner, 0, true);
        run(&mut before, |op, out| op.process_batch(vec![Record::new(15_000, (1, 7))], out).unwrap());
        run(&mut before, |op, out| op.on_watermark(20_000, out).unwrap());
        let mut after = restored(&mut before, assigner, 0, true);
        // Every window of time 1000 ended by 10 000: late, before any new watermark.
        let rows = run(&mut after, |op, out| op.process_batch(vec![Record::new(1_000, (1, 5))], out).unwrap());
        assert_eq!(rows, vec![(1, None, 0, 5)]);
        // The windows of 15 000 that fired before the snapshot do not fire again.
        let rows = run(&mut after, |op, out| op.on_watermark(MAX_WATERMARK, out).unwrap());
        assert_eq!(rows.iter().map(|r| r.1.unwrap().1).collect::<Vec<_>>(), vec![22_000, 24_000]);
    }

    /// With the disk backend at its smallest budget and far more keys than
    /// its cache holds, windows are written back, evicted and read again:
    /// every row equals the heap's, also after each backend restores the
    /// other's snapshot (tumbling, sliced and session windows, with late data).
    #[test]
    fn windows_on_disk_emit_what_windows_on_the_heap_emit() {
        use crate::state::StateBackend;
        let tmp = tempfile::tempdir().unwrap();
        let disk = StateBackend::disk(tmp.path(), crate::state::backend::MIN_MEMORY).unwrap();
        // Three more tables in the store, as other operators' would be: each table's share of the
        // cache (and each timer queue's) is a quarter, so the windows and timers of 60 K keys overflow it.
        let _others: Vec<crate::state::Table<u32, u32>> =
            (0..3).map(|_| crate::state::Table::new(&disk, 128).unwrap()).collect();
        let shapes = [
            (WindowAssigner::Tumbling { size: 4_000 }, false),
            (WindowAssigner::Sliding { size: 8_000, slide: 2_000 }, true),
            (WindowAssigner::Session { gap: 500 }, false),
        ];
        let keys = 60_000u32;
        for (assigner, sliced) in shapes {
            let mut heap = operator_on(assigner, 1_000, sliced, &StateBackend::Heap);
            let mut on_disk = operator_on(assigner, 1_000, sliced, &disk);
            let mut rows = 0;
            for round in 0..4i64 {
                let batch = || -> Vec<Record<(u32, i64)>> {
                    // Some keys twice, some behind the watermark (late, or within the lateness).
                    let time = |k: u32| round * 3_000 + i64::from(k % 2_000) - 600;
                    (0..keys).chain(0..keys / 3).map(|k| Record::new(time(k), (k, i64::from(k % 7)))).collect()
                };
                let a = run(&mut heap, |op, out| op.process_batch(batch(), out).unwrap());
                let b = run(&mut on_disk, |op, out| op.process_batch(batch(), out).unwrap());
                assert_eq!(a, b, "{assigner:?} round {round}");
                assert!(on_disk.open_panes() < heap.open_panes(), "{assigner:?}: the cache holds every window");
                let watermark = round * 3_000 + 1_000;
                let a = run(&mut heap, |op, out| op.on_watermark(watermark, out).unwrap());
                let b = run(&mut on_disk, |op, out| op.on_watermark(watermark, out).unwrap());
                rows += a.len();
                assert_eq!(a, b, "{assigner:?} watermark {watermark}");
                if round == 1 {
                    let (from_heap, from_disk) = (heap.snapshot_state(1).unwrap(), on_disk.snapshot_state(1).unwrap());
                    heap = operator_on(assigner, 1_000, sliced, &StateBackend::Heap);
                    on_disk = operator_on(assigner, 1_000, sliced, &disk);
                    heap.restore_state(RestoredState { keyed: from_disk.into_keyed().unwrap(), ..Default::default() })
                        .unwrap();
                    on_disk
                        .restore_state(RestoredState { keyed: from_heap.into_keyed().unwrap(), ..Default::default() })
                        .unwrap();
                    let a = run(&mut heap, |op, out| op.on_watermark(watermark, out).unwrap());
                    let b = run(&mut on_disk, |op, out| op.on_watermark(watermark, out).unwrap());
                    assert_eq!(a, b);
                }
            }
            let a = run(&mut heap, |op, out| op.on_watermark(MAX_WATERMARK, out).unwrap());
            let b = run(&mut on_disk, |op, out| op.on_watermark(MAX_WATERMARK, out).unwrap());
            assert_eq!(a.len(), b.len());
            assert_eq!(a, b, "{assigner:?} at the end");
            assert!(rows + a.len() > keys as usize, "{assigner:?}: {rows} rows");
            assert!(on_disk.check().is_ok());
        }
    }

    #[test]
    fn whole_window_state_never_opens_with_the_slices_tag() {
        for n in [0usize, 1, 250, 251, 300, 70_000] {
            let entries: Vec<(u8, Vec<u8>)> = vec![(0, Vec::new()); n];
            assert_ne!(codec::encode(&entries)[0], SLICES_TAG, "{n} entries");
        }
    }

    #[test]
    fn damaged_sliced_state_is_an_error_naming_it() {
        let assigner = WindowAssigner::Sliding { size: 10_000, slide: 2_000 };
        let mut op = operator(assigner, 0, true);
        let err = op
            .restore_state(RestoredState { keyed: vec![(3, vec![SLICES_TAG, 0xff, 0xff])], ..Default::default() })
            .unwrap_err();
        assert!(err.to_string().contains("sliced window contents"), "{err}");
    }
}
