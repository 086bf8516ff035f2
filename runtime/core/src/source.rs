//! Sources: where records enter a job.
//!
//! A source subtask is polled in a loop by its task; each poll appends up to
//! about one batch of records. Sources are split across subtasks by whoever
//! builds them (each subtask gets its own instance with its share).

use std::time::Duration;

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

pub trait Source<T>: Send {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> TaskResult<SourcePoll>;
}
