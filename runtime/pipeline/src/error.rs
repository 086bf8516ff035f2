//! Errors in pipeline files: each names the file, the key and what was expected.

use std::fmt;
use std::path::PathBuf;

/// A pipeline file that cannot run, and why.
#[derive(Debug, thiserror::Error)]
pub struct PipelineError {
    pub file: PathBuf,
    /// Dotted path of the offending key (`steps[2].window.size`), empty for the whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl PipelineError {
    pub fn new(file: impl Into<PathBuf>, key: impl Into<String>, message: impl Into<String>) -> Self {
        PipelineError { file: file.into(), key: key.into(), message: message.into() }
    }
}
