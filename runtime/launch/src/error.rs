//! How a launch fails, and the process's exit code for it.

/// Why a JobManager or TaskManager process could not do its work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchError {
    /// A flag, a file or a job that cannot work as given: exit code 2.
    #[error("{0}")]
    BadInput(String),
    /// The job failed, or something it needs failed while it ran: exit code 1.
    #[error("{0}")]
    Runtime(String),
}

impl LaunchError {
    /// The exit code DESIGN.md gives this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::BadInput(_) => 2,
            LaunchError::Runtime(_) => 1,
        }
    }

    pub(crate) fn bad(message: impl std::fmt::Display) -> Self {
        LaunchError::BadInput(message.to_string())
    }
}
