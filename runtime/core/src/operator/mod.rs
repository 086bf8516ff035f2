//! Operators: the user-visible units of computation, and the chain nodes that run them.
//!
//! An [`Operator`] turns batches of input records into output records. It has
//! one required method; the hooks for watermarks, processing time and the end
//! of input have defaults. [`OperatorNode`] adapts an operator into a link of
//! a task's chain (an [`Output`] of its predecessor): it calls the operator,
//! then passes what it emitted, and the control element itself, downstream.
//!
//! | module | operator |
//! |---|---|
//! | [`basic`] | map, filter, flat_map |
//! | [`async_io`] | requests to outside services, many in flight |
//! | [`watermarks`] | timestamp and watermark assignment, idleness |
//! | [`process`] | keyed process functions: keyed state and timers |
//! | [`co_process`] | two inputs: keyed co-process functions |
//! | [`broadcast`] | a keyed input and a broadcast one: broadcast state |
//! | [`interval_join`] | interval joins of two keyed streams |
//! | [`side`] | side outputs: records beside the main output, by tag |
//! | [`sink`] | sinks: the end of a chain |
//! | [`crate::window`] | event-time windows |

pub mod async_io;
pub mod basic;
pub mod broadcast;
pub mod co_process;
pub mod interval_join;
pub mod process;
pub mod side;
pub mod sink;
pub mod watermarks;

use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::element::{Barrier, Data, Record};
use crate::error::TaskResult;
use crate::graph::{SnapshotCollector, SubtaskInfo};
use crate::output::{Collector, Output};
use crate::time::Timestamp;

/// A one-input operator.
pub trait Operator: Send + 'static {
    type In: Data;
    type Out: Data;

    /// Handles a batch of records.
    fn process_batch(&mut self, batch: Vec<Record<Self::In>>, out: &mut Collector<'_, Self::Out>) -> TaskResult;

    /// The input's watermark advanced to `watermark`; it is passed downstream after this returns.
    fn on_watermark(&mut self, _watermark: Timestamp, _out: &mut Collector<'_, Self::Out>) -> TaskResult {
        Ok(())
    }

    /// Wall-clock time advanced to `now` (for processing-time timers).
    fn on_processing_time(&mut self, _now: Timestamp, _out: &mut Collector<'_, Self::Out>) -> TaskResult {
        Ok(())
    }

    /// The input became idle (`true`: its watermark no longer holds the
    /// operators after it back) or active again; passed downstream after this returns.
    fn on_idle(&mut self, _idle: bool, _out: &mut Collector<'_, Self::Out>) -> TaskResult {
        Ok(())
    }

    /// The input ended (after the final watermark, for bounded inputs).
    fn on_end(&mut self, _out: &mut Collector<'_, Self::Out>) -> TaskResult {
        Ok(())
    }

    /// A checkpoint barrier passed: return a copy of the state (serialized;
    /// the task uploads it while processing goes on). Stateless operators keep the default.
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> TaskResult<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }

    /// For an incremental checkpoint: the keyed state that changed since the
    /// operator's previous snapshot (of either kind), per key group, in a form
    /// its [`Operator::restore_state`] applies over what came before (key
    /// groups' blobs arrive in the order they were taken); operator-state
    /// entries in full. `None` (the default): the operator cannot tell, and a
    /// full [`Operator::snapshot_state`] is taken instead.
    fn snapshot_changes(&mut self, _checkpoint_id: u64) -> TaskResult<Option<OperatorSnapshot>> {
        Ok(None)
    }

    /// Called once, before any record, when the job starts from a snapshot.
    fn restore_state(&mut self, _state: RestoredState) -> TaskResult {
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> TaskResult {
        Ok(())
    }
}

/// The most records an operator's buffer is made for ahead of its first
/// record: beyond it the buffer grows as records come (a final firing of a
/// million windows does not make every later call's buffer that large).
const MAX_HINT: usize = 16 * 1024;

/// The kind of call to an operator that emitted a batch.
#[derive(Clone, Copy)]
enum Call {
    Records,
    Watermark,
    /// Idleness, processing time, the end: rare, and sized as they come.
    Other,
}

/// The length of the last batch each kind of call passed on (at most
/// [`MAX_HINT`]): the size the next such call's buffer is made at (see
/// [`Collector`]). Kept apart because an operator's calls differ: a window
/// emits nothing per batch of records and thousands of rows at a watermark,
/// a dedup the reverse.
#[derive(Default)]
struct Hints {
    records: usize,
    watermark: usize,
}

impl Hints {
    fn of(&self, call: Call) -> usize {
        match call {
            Call::Records => self.records,
            Call::Watermark => self.watermark,
            Call::Other => 0,
        }
    }

    fn set(&mut self, call: Call, len: usize) {
        match call {
            Call::Records => self.records = len.min(MAX_HINT),
            Call::Watermark => self.watermark = len.min(MAX_HINT),
            Call::Other => {}
        }
    }
}

/// Runs an [`Operator`] as a link of a chain.
pub struct OperatorNode<O: Operator> {
    op: O,
    out: Box<dyn Output<O::Out>>,
    buf: Vec<Record<O::Out>>,
    hints: Hints,
    uid: String,
    snapshots: SnapshotCollector,
    /// The state to restore when the job starts from a snapshot: given to
    /// the operator on its task's thread before anything else, so that the
    /// subtasks of a process decode and write their state side by side (as
    /// Flink's tasks restore theirs), not one after another while deploying.
    restore: Option<RestoredState>,
}

impl<O: Operator> OperatorNode<O> {
    /// Wraps `op` for the subtask `info`, whose state it restores when the job starts from a snapshot.
    pub fn new(op: O, out: Box<dyn Output<O::Out>>, info: &SubtaskInfo) -> TaskResult<Self> {
        Ok(OperatorNode {
            op,
            out,
            buf: Vec::new(),
            hints: Hints::default(),
            uid: info.uid.clone(),
            snapshots: info.snapshots.clone(),
            restore: info.restored.clone(),
        })
    }

    /// Restores the operator's state if it has not been yet.
    fn restored(&mut self) -> TaskResult {
        match self.restore.take() {
            Some(state) => self.op.restore_state(state),
            None => Ok(()),
        }
    }

    /// The collector of one call, over the node's buffer.
    fn collector(&mut self, call: Call) -> (&mut O, Collector<'_, O::Out>) {
        (&mut self.op, Collector::with_hint(&mut self.buf, self.hints.of(call)))
    }

    fn pass_on(&mut self, call: Call) -> TaskResult {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.buf);
        self.hints.set(call, batch.len());
        self.out.records(batch)
    }
}

impl<O: Operator> Output<O::In> for OperatorNode<O> {
    fn records(&mut self, batch: Vec<Record<O::In>>) -> TaskResult {
        self.restored()?;
        let (op, mut out) = self.collector(Call::Records);
        op.process_batch(batch, &mut out)?;
        self.pass_on(Call::Records)
    }

    fn watermark(&mut self, watermark: Timestamp) -> TaskResult {
        self.restored()?;
        let (op, mut out) = self.collector(Call::Watermark);
        op.on_watermark(watermark, &mut out)?;
        self.pass_on(Call::Watermark)?;
        self.out.watermark(watermark)
    }

    fn idle(&mut self, idle: bool) -> TaskResult {
        self.restored()?;
        let (op, mut out) = self.collector(Call::Other);
        op.on_idle(idle, &mut out)?;
        self.pass_on(Call::Other)?;
        self.out.idle(idle)
    }

    fn barrier(&mut self, barrier: Barrier) -> TaskResult {
        self.restored()?;
        let id = barrier.checkpoint_id;
        let changes = if self.snapshots.wants_changes(&barrier) { self.op.snapshot_changes(id)? } else { None };
        match changes {
            Some(snapshot) => self.snapshots.add_changes(&self.uid, snapshot),
            None => self.snapshots.add(&self.uid, self.op.snapshot_state(id)?),
        }
        self.out.barrier(barrier)
    }

    fn processing_time(&mut self, now: Timestamp) -> TaskResult {
        self.restored()?;
        let (op, mut out) = self.collector(Call::Other);
        op.on_processing_time(now, &mut out)?;
        self.pass_on(Call::Other)?;
        self.out.processing_time(now)
    }

    fn flush(&mut self) -> TaskResult {
        self.restored()?;
        self.out.flush()
    }

    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.restored()?;
        self.op.notify_checkpoint_complete(checkpoint_id)?;
        self.out.checkpoint_complete(checkpoint_id)
    }

    fn end(&mut self) -> TaskResult {
        self.restored()?;
        let (op, mut out) = self.collector(Call::Other);
        op.on_end(&mut out)?;
        self.pass_on(Call::Other)?;
        self.out.end()
    }
}
