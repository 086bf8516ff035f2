//! Compiles a [`PipelineFile`] onto a [`StreamEnv`]: [`check`] (pure: the
//! file and the command line's overrides to a [`Plan`](crate::plan::Plan)),
//! then [`build`] (the streams, the file listing, the connectors).

use std::path::Path;

use weir::prelude::StreamEnv;

pub use crate::build::{Compiled, PipelineStats, SinkOverride};
use crate::build::{build, build_to};
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

/// As [`compile`], the rows that would reach the file's sink going to `sink`
/// instead (`weir bench --pipeline` folds them into a checksum).
pub fn compile_to(
    file: &Path,
    p: &PipelineFile,
    env: &StreamEnv,
    overrides: &Overrides,
    sink: SinkOverride,
) -> Result<Compiled, PipelineError> {
    build_to(file, &check(file, p, overrides)?, env, &PipelineStats::default(), Some(sink))
}
