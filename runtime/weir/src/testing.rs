//! Helpers for tests and documentation examples.

use weir_core::{Data, Record};

use crate::env::StreamEnv;
use crate::stream::DataStream;

/// Builds a job with `build`, runs it to completion on this process, and
/// returns every record of the stream `build` returned, with timestamps.
///
/// ```
/// let out = weir::testing::run_local(1, |env| env.from_collection(vec![1, 2, 3]).map(|x| x * 10));
/// let mut values: Vec<i32> = out.into_iter().map(|r| r.value).collect();
/// values.sort();
/// assert_eq!(values, vec![10, 20, 30]);
/// ```
pub fn run_local<T: Data>(parallelism: usize, build: impl FnOnce(&StreamEnv) -> DataStream<T>) -> Vec<Record<T>> {
    let env = StreamEnv::new("test");
    env.set_parallelism(parallelism);
    let collected = build(&env).collect();
    env.execute().expect("job failed");
    collected.records()
}

/// Like [`run_local`], returning only the values, sorted.
pub fn run_sorted<T: Data + Ord>(parallelism: usize, build: impl FnOnce(&StreamEnv) -> DataStream<T>) -> Vec<T> {
    let mut v: Vec<T> = run_local(parallelism, build).into_iter().map(|r| r.value).collect();
    v.sort();
    v
}
