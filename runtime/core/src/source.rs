//! Sources: where records enter a job.
//!
//! A source subtask is polled in a loop by its task; each poll appends up to
//! about one batch of records. Sources are split across subtasks by whoever
//! builds them (each subtask gets its own instance with its share).

use std::time::Duration;

use crate::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use crate::element::Record;
use crate::error::TaskResult;

/// What a poll found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePoll {
    /// Records were appended (or may be: poll again at once).
    Ready,
    /// Nothing available now; poll again within this long.
    Idle(Duration),
    /// The source is exhausted (a bounded source's end).
    Finished,
}

/// A source subtask. Its read position is operator state: `snapshot_state`
/// returns it as redistributable entries (one per split), and on restore the
/// entries of all old subtasks are dealt over the new ones, so a source
/// restores at any parallelism.
pub trait Source<T>: Send {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> TaskResult<SourcePoll>;

    /// The read position, taken between two polls.
    fn snapshot_state(&mut self) -> TaskResult<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }

    /// Replaces the initial assignment with the restored splits.
    fn restore_state(&mut self, _state: RestoredState) -> TaskResult {
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> TaskResult {
        Ok(())
    }
}
