//! Compiles a [`PipelineFile`] onto a [`StreamEnv`]: [`check`] (pure: the
//! file and the command line's overrides to a [`Plan`](crate::plan::Plan)),
//! then [`build`] (the streams, the file listing, the connectors).

use std::path::Path;

use weir::prelude::StreamEnv;

use crate::build::build;
pub use crate::build::{Compiled, PipelineStats};
pub use crate::check::Overrides;
use crate::check::check;
use crate::config::PipelineFile;
use crate::error::PipelineError;

/// Checks `p` (read from `file`) and builds it into `env`, counting into `stats`.
pub fn compile_counted(
    file: &Path,
    p: &PipelineFile,
    env: &StreamEnv,
    overrides: &Overrides,
    stats: &PipelineStats,
) -> Result<Compiled, PipelineError> {
    build(file, &check(file, p, overrides)?, env, stats)
}

/// Checks `p` (read from `file`) and builds it into `env`, with counters of its own.
pub fn compile(
    file: &Path,
    p: &PipelineFile,
    env: &StreamEnv,
    overrides: &Overrides,
) -> Result<Compiled, PipelineError> {
    compile_counted(file, p, env, overrides, &PipelineStats::default())
}
