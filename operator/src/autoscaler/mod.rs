//! The autoscaler's decision, a pure function: from `spec.autoscaler`
//! ([`AutoscalerConfig`]), the job's graph with a window of metric samples per
//! vertex ([`JobMetrics`]), the rescales it made before ([`PastRescale`]) and
//! the time, [`decide`] answers what each vertex needs and what to do with the
//! job ([`Decision`]). Nothing here reads a cluster or acts on one.
//!
//! # The method: DS2
//!
//! DS2 (Kalavri et al., "Three steps is all you need", OSDI 2018) sizes every
//! vertex at once from rates measured while the job runs (`ds2.rs`):
//!
//! 1. A vertex's *true processing rate* is what it takes in per second of busy
//!    time: records in / busy fraction, per subtask. The busy fraction is its
//!    busiest subtask's (Flink's aggregation), so a skewed vertex is sized by
//!    its hot subtask.
//! 2. A source's *target rate* is what arrives: what it read plus what its lag
//!    grew by (a least-squares line through the window's pending records),
//!    plus its lag spread over `catchUpTime`. A backpressured source without a
//!    lag metric would read at its true rate.
//! 3. Target rates flow down the graph in topological order: a vertex must take
//!    in the sum of its inputs' targets, and puts out its target times its
//!    selectivity (records out per record in).
//! 4. A vertex needs `ceil(target / (true rate per subtask × targetUtilization))`
//!    subtasks, within its bounds and the job's max parallelism; one extra
//!    subtask is added when it splits the key groups evenly and the needed
//!    number does not (`ds2::even_key_groups` says why).
//!
//! Its *load* is the target rate over its capacity at its current parallelism:
//! the busy fraction it would have serving the target (above 1: it cannot).
//!
//! # The policy
//!
//! * Noise does not flip decisions: every rate and time fraction is an
//!   interquartile mean over the metrics window, a vertex whose load is within
//!   `targetUtilization ± utilizationBand` keeps its parallelism, and a window
//!   must hold at least three samples spanning half of it.
//! * Scale up as soon as pressure is sustained: the load is above the band, and
//!   75% of some vertex's samples over the window show pressure (busy above the
//!   band, backpressured at least 100 ms/s, or a source's lag grown since the
//!   sample before); else [`Reason::NotSustained`]. At most one scale-up per
//!   `scaleUpInterval`.
//! * A source that is busy, not backpressured and without a backlog is
//!   source-bound: it reads what there is, and more subtasks would not read
//!   more. It is not scaled up (a job whose sources read flat out while
//!   everything downstream idles stays as it is).
//! * Scale down only `scaleDownInterval` after the last rescale (or start), when
//!   the load stayed below the band over every window of the last
//!   `scaleDownInterval`, and to what the most demanding of them needed; never
//!   a vertex busier than the target (it is catching up), and never into a
//!   parallelism that a rescale of the last hour showed to be too small,
//!   unless the load has since fallen to at most three quarters of the one it
//!   failed under (a change of load, as a step up and back down, not noise).
//! * Nothing for `stabilization` after a rescale (or start), nor before a whole
//!   window of metrics was taken after it (or after the series' first sample:
//!   an operator that restarts starts a new series); nothing once `maxRescalesPerHour`
//!   rescales were made in the last hour; excluded vertices keep their
//!   parallelism. Each is a [`Reason`], with a sentence for the status.
//! * A vertex with no usable metrics (no samples, no busy time, an input
//!   without a target rate) keeps its parallelism ([`Reason::NoMetrics`]); so
//!   the job is not scaled down, but may be scaled up for another vertex.
//!
//! Each vertex (a chain) is rescaled to its own recommendation, the others
//! keeping theirs: a rescale states every vertex's parallelism, by the uids
//! of its operators ([`Action`]), and slots are shared across vertices, so
//! the job needs as many as its largest vertex's parallelism.
//!
//! # Use
//!
//! The caller keeps a series of samples ([`JobMetrics::from_job_details`] and
//! [`JobMetrics::append`] from the JobManager's answers) and the rescales it
//! made ([`Decision::rescale_record`], [`PastRescale::record_outcome`]), and
//! reports each decision in the status ([`Decision::status`]):
//!
//! ```
//! use k8s_openapi::jiff::Timestamp;
//! use weir_operator::autoscaler::{decide, Action, AutoscalerConfig, JobMetrics, Reason, Sample, VertexMetrics};
//!
//! let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
//! // A source reading 700 records/s at parallelism 2, 70% busy, for five minutes.
//! let samples = (0..60)
//!     .map(|i| Sample {
//!         at: t(5 * i),
//!         parallelism: 2,
//!         records_in_per_s: 700.0,
//!         records_out_per_s: 700.0,
//!         busy_ms_per_s: 700.0,
//!         backpressured_ms_per_s: 0.0,
//!         idle_ms_per_s: 300.0,
//!         pending_records: Some(0.0),
//!     })
//!     .collect();
//! let source = VertexMetrics {
//!     name: "orders".into(),
//!     operators: vec![],
//!     uids: vec!["orders".into()],
//!     inputs: vec![],
//!     parallelism: 2,
//!     max_parallelism: 128,
//!     samples,
//! };
//! let job = JobMetrics { running_since: t(0), max_parallelism: 128, vertices: vec![source] };
//! let decision = decide(&AutoscalerConfig::default(), &job, &[], t(295));
//! assert_eq!(decision.action, Action::None);
//! assert!(matches!(decision.vertices[0].reason, Reason::WithinBand { .. }));
//! assert_eq!(decision.to_string(), "within band");
//! ```

mod config;
mod decision;
mod ds2;
mod history;
mod metrics;
mod policy;
#[cfg(test)]
mod tests;

use k8s_openapi::jiff::Timestamp;

pub use config::{AutoscalerConfig, Bounds, ConfigError};
pub use decision::{Action, Decision, Missing, Reason, VertexDecision};
pub use history::{KEPT_RESCALES, recent_rescales, record_outcome};
pub use metrics::{JobMetrics, PastRescale, Sample, VertexMetrics, VertexRescale};

use ds2::{Statistic, assess};
use history::after;
use policy::{Gates, peaks};

/// What `job` needs at `now`, given the rescales made before: see the
/// module's documentation. Whatever `config.mode`: the caller applies the
/// action only when it is `active`.
pub fn decide(config: &AutoscalerConfig, job: &JobMetrics, history: &[PastRescale], now: Timestamp) -> Decision {
    let last_change = history.iter().map(|r| r.at).chain([job.running_since]).max().unwrap_or(job.running_since);
    let stable_from = after(last_change, config.stabilization);
    // A series that started late (the operator restarted) fills its window
    // from its first sample: until then nothing is decided on a part of it.
    let first_sample = job.vertices.iter().filter_map(|v| v.samples.first()).map(|s| s.at).min();
    let full_from = after(first_sample.map_or(stable_from, |s| s.max(stable_from)), config.metrics_window);
    let everywhere = |reason: Reason| {
        let vertices = job.vertices.iter().map(|v| VertexDecision::keep(v, reason.clone())).collect();
        Decision::new(now, vertices)
    };
    if now < stable_from {
        return everywhere(Reason::Stabilizing { until: stable_from });
    }
    if config.metrics_window.is_zero() {
        return everywhere(Reason::NoMetrics(Missing::EmptyWindow));
    }
    if now < full_from {
        return everywhere(Reason::NoMetrics(Missing::WindowNotFull { until: full_from }));
    }
    let assessments = assess(config, job, now, Statistic::Typical);
    let pressure = assessments.iter().filter_map(|a| a.as_ref().ok()).map(|a| a.observed.pressured).fold(0.0, f64::max);
    let peaks = peaks(config, job, &assessments, stable_from, now);
    let gates = Gates {
        now,
        pressure,
        rescales: history::rescales_in_last_hour(history, now),
        scale_up_from: history::last_scale_up(history).map_or(now, |t| after(t, config.scale_up_interval)),
        scale_down_from: after(last_change, config.scale_down_interval),
        history,
    };
    let vertices = job
        .vertices
        .iter()
        .zip(assessments)
        .zip(peaks)
        .map(|((v, a), peak)| gates.vertex(config, v, a, peak))
        .collect();
    Decision::new(now, vertices)
}
