//! `weir bench --pipeline FILE`: a pipeline file measured the way `weir bench`
//! measures its Rust API workloads, so the two paths sit side by side in
//! `docs/benchmarks.md`.
//!
//! The file is compiled exactly as `weir run` compiles it (the same checks,
//! the same operators), with three differences that a benchmark needs: every
//! datagen source generates `--events` events (at `--rate` when given), the
//! rows that would reach the file's sink are folded into a checksum instead,
//! and only the job is timed (no local cluster, REST server or progress
//! display around it). The checksum is the rows' own (each field's stable
//! hash), so it compares runs of pipeline files, not a pipeline with the Rust
//! API's row types; `outputs=` compares with both.

use std::path::Path;

use weir::core::keygroup::hash_key;
use weir::prelude::StreamEnv;
use weir_pipeline::compile::{Overrides, compile_to};
use weir_pipeline::config::{self, Dur, Rate, SourceType};
use weir_pipeline::value::{Row, Value};

use crate::Failure;
use crate::bench::{BenchOptions, BenchResult, Checksum, checksum_into, execute};

/// What a pipeline benchmark ran and measured.
pub struct PipelineBench {
    /// The pipeline's `name`, the report's `query=`.
    pub name: String,
    /// Events of the main source (each datagen source generates as many).
    pub events: u64,
    pub result: BenchResult,
}

/// A row's checksum term, folded over its fields as the Rust API's queries
/// fold their tuples (`a * 31 + b`): a number is its value (a float its
/// bits), anything else its stable hash. The sink is not what is measured,
/// so it costs what the Rust API's costs.
fn row_hash(row: &Row) -> i64 {
    row.iter().fold(0i64, |h, v| {
        let term = match v {
            Value::Int(i) => *i,
            Value::Float(f) => f.to_bits() as i64,
            other => hash_key(other) as i64,
        };
        h.wrapping_mul(31).wrapping_add(term)
    })
}

/// Benchmarks the pipeline at `path`; `events` overrides its datagen sources' counts.
pub fn run(path: &Path, events: Option<u64>, options: BenchOptions) -> Result<PipelineBench, Failure> {
    let bad = |m: String| Failure::BadInput(m);
    let mut file = config::load(path, &options.state.overrides()).map_err(|e| bad(e.to_string()))?;
    let where_ = path.display();
    let sources = std::iter::once(("source".to_string(), &mut file.source))
        .chain(file.sources.iter_mut().map(|(name, s)| (format!("sources.{name}"), s)));
    for (key, source) in sources {
        if source.kind != SourceType::Datagen {
            return Err(bad(format!(
                "{where_}: {key}: a benchmark generates its input: `weir bench --pipeline` needs datagen sources"
            )));
        }
        if let Some(n) = events {
            source.count = Some(n);
        }
        if let Some(r) = options.rate {
            source.rate = Some(Rate::Constant(r));
        }
    }
    let Some(events) = file.source.count else {
        return Err(bad(format!("{where_}: source.count: a benchmark needs a bounded source (or --events)")));
    };
    if let Some(timeout) = options.buffer_timeout {
        file.buffer_timeout = Some(Dur(timeout));
    }
    if !options.local_aggregation {
        file.local_aggregation = Some(false);
    }
    let env = StreamEnv::new(format!("bench-{}", file.name));
    let overrides =
        Overrides { parallelism: Some(options.parallelism), checkpointing: Some(options.checkpointing.is_some()) };
    let total = Checksum::default();
    let into = total.clone();
    compile_to(path, &file, &env, &overrides, Box::new(move |rows| checksum_into(rows, row_hash, &into)))
        .map_err(|e| bad(e.to_string()))?;
    let result = execute(env, total, options.checkpointing).map_err(|e| Failure::Runtime(format!("{e:#}")))?;
    Ok(PipelineBench { name: file.name, events, result })
}
