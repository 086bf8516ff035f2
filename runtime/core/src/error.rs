//! Errors of the engine core.

use std::fmt;

/// Why a task (one parallel instance of an operator chain) stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A downstream task went away (it failed, or the job is being cancelled).
    #[error("downstream task is gone")]
    Disconnected,
    /// The job is being cancelled.
    #[error("cancelled")]
    Cancelled,
    /// An I/O operation of an operator failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An operator reported an error of its own.
    #[error("{0}")]
    Operator(String),
    /// User code panicked.
    #[error("panicked: {0}")]
    Panic(String),
}

impl TaskError {
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        TaskError::Io { context: context.to_string(), source }
    }

    /// True for errors that are only an echo of a failure elsewhere.
    pub fn is_secondary(&self) -> bool {
        matches!(self, TaskError::Disconnected | TaskError::Cancelled)
    }
}

/// Why a job could not be built or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid job graph: {0}")]
    InvalidGraph(String),
    #[error("task {task} failed: {source}")]
    TaskFailed {
        task: String,
        #[source]
        source: TaskError,
    },
    /// Checkpoints kept failing beyond the tolerance.
    #[error("checkpointing failed: {0}")]
    Checkpointing(String),
    /// The job cannot start from the requested snapshot.
    #[error("cannot restore: {0}")]
    Restore(String),
    /// A channel to or from another process could not be set up.
    #[error("network: {0}")]
    Network(String),
    #[error("could not start task thread {task}: {source}")]
    Spawn {
        task: String,
        #[source]
        source: std::io::Error,
    },
}

pub type TaskResult<T = ()> = Result<T, TaskError>;
