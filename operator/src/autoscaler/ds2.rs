//! DS2's arithmetic: what a vertex did over the metrics window, its true
//! processing rate, the target rates propagated from the sources through the
//! graph, and the parallelism that serves a target rate at the target
//! utilization.
//!
//! Every rate and time fraction over a window is an interquartile mean (the
//! mean of the middle half of the samples): a stray sample cannot move it,
//! and everyday noise moves it as little as a plain mean would. (The
//! scale-down's look at earlier windows takes their upper quartile instead.)
//! Every division is guarded: a quantity that cannot be known is `None`,
//! never NaN or infinite.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::config::AutoscalerConfig;
use super::decision::Missing;
use super::metrics::{JobMetrics, Sample, VertexMetrics};

/// Fewer samples in a window than this tell nothing sustained.
pub(super) const MIN_SAMPLES: usize = 3;
/// A vertex blocked by its outputs this fraction of the time is backpressured (Flink's 100 ms/s).
pub(super) const BACKPRESSURED: f64 = 0.1;
/// Busy less than this (1 ms/s) is no measure of a true rate.
const MIN_BUSY: f64 = 0.001;

/// What a vertex did over the metrics window.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Observation {
    pub records_in: f64,
    pub records_out: f64,
    /// The busy fraction of its busiest subtask.
    pub busy: f64,
    pub backpressured: f64,
    /// Records per second one subtask processes when busy all the time;
    /// `None` without busy time.
    pub true_rate: Option<f64>,
    pub lag: Option<Lag>,
    /// The fraction of samples that show pressure: busy above the band,
    /// backpressured, or (a source) lag grown since the sample before.
    pub pressured: f64,
}

/// A source's pending records over the window: a least-squares line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Lag {
    /// At the window's last sample (never negative).
    pub records: f64,
    /// Records per second (negative while it is caught up).
    pub growth: f64,
}

/// The samples of `v` in `[from, to]` at its current parallelism, with finite values.
fn window(v: &VertexMetrics, from: Timestamp, to: Timestamp) -> Vec<&Sample> {
    let finite = |s: &Sample| {
        [s.records_in_per_s, s.records_out_per_s, s.busy_ms_per_s, s.backpressured_ms_per_s, s.idle_ms_per_s]
            .iter()
            .chain(s.pending_records.as_ref())
            .all(|x| x.is_finite())
    };
    v.samples.iter().filter(|s| s.at >= from && s.at <= to && s.parallelism == v.parallelism && finite(s)).collect()
}

/// How a window's samples of one metric are summed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Statistic {
    /// The interquartile mean: what the window typically showed.
    Typical,
    /// The upper quartile: what its busier part showed. A scale-down looks at
    /// earlier windows with it, so that a window in which the load fell
    /// part-way does not count as low.
    Busier,
}

impl Statistic {
    fn of(self, values: impl Iterator<Item = f64>) -> Option<f64> {
        match self {
            Statistic::Typical => iqm(values),
            Statistic::Busier => upper_quartile(values),
        }
    }
}

/// What `v` did in `[now - window, now]`, or why that is not known.
pub(super) fn observe(
    v: &VertexMetrics,
    config: &AutoscalerConfig,
    now: Timestamp,
    statistic: Statistic,
) -> Result<Observation, Missing> {
    let window_length = config.metrics_window;
    let from = now.checked_sub(window_length).unwrap_or(Timestamp::MIN);
    let samples = window(v, from, now);
    let span = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => seconds(b.at.duration_since(a.at)),
        _ => return Err(Missing::NoSamples),
    };
    // Half the window at least: a decision "over the window" must have seen most of it.
    if samples.len() < MIN_SAMPLES || span < window_length.as_secs_f64() / 2.0 {
        let span = Duration::try_from_secs_f64(span).unwrap_or_default();
        return Err(Missing::TooFewSamples { count: samples.len(), span });
    }
    let of = |f: fn(&Sample) -> f64| statistic.of(samples.iter().map(|s| f(s))).unwrap_or(0.0);
    let ms = |f: fn(&Sample) -> f64| of(f) / 1000.0;
    let busy = ms(|s| s.busy_ms_per_s).clamp(0.0, 1.0);
    let records_in = of(|s| s.records_in_per_s).max(0.0);
    let true_rate = (busy >= MIN_BUSY && v.parallelism > 0).then(|| records_in / busy / f64::from(v.parallelism));
    let (_, upper) = config.band();
    Ok(Observation {
        records_in,
        records_out: of(|s| s.records_out_per_s).max(0.0),
        busy,
        backpressured: ms(|s| s.backpressured_ms_per_s).clamp(0.0, 1.0),
        true_rate,
        lag: lag(&samples),
        pressured: pressured(&samples, upper),
    })
}

/// The fraction of `samples` (at least one) that show pressure: busy above
/// `upper`, backpressured, or a lag grown since the sample before.
fn pressured(samples: &[&Sample], upper: f64) -> f64 {
    let grew =
        |(a, b): (&&Sample, &&Sample)| matches!((a.pending_records, b.pending_records), (Some(a), Some(b)) if b > a);
    let first = samples.first().map(|s| (s, s));
    let pressured = first
        .into_iter()
        .chain(samples.iter().zip(samples.iter().skip(1)))
        .filter(|&(before, s)| {
            s.busy_ms_per_s / 1000.0 > upper || s.backpressured_ms_per_s / 1000.0 >= BACKPRESSURED || grew((before, s))
        })
        .count();
    pressured as f64 / samples.len().max(1) as f64
}

fn seconds(d: k8s_openapi::jiff::SignedDuration) -> f64 {
    d.as_secs_f64()
}

/// The mean of the middle half of `values` (all of them when fewer than four).
pub(super) fn iqm(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let quarter = if v.len() >= 4 { v.len() / 4 } else { 0 };
    let middle = &v[quarter..v.len() - quarter];
    Some(middle.iter().sum::<f64>() / middle.len() as f64)
}

/// The value a quarter of `values` are above (nearest rank).
fn upper_quartile(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v.get((v.len() * 3).div_ceil(4).saturating_sub(1)).copied()
}

/// The least-squares line through the samples' pending records, when at least
/// two samples, apart in time, report them.
fn lag(samples: &[&Sample]) -> Option<Lag> {
    let t0 = samples.first()?.at;
    let points: Vec<(f64, f64)> =
        samples.iter().filter_map(|s| Some((seconds(s.at.duration_since(t0)), s.pending_records?))).collect();
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let (mean_t, mean_l) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let var_t: f64 = points.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    if var_t <= 0.0 {
        return None;
    }
    let growth = points.iter().map(|(t, l)| (t - mean_t) * (l - mean_l)).sum::<f64>() / var_t;
    let last_t = points.last()?.0;
    Some(Lag { records: (mean_l + growth * (last_t - mean_t)).max(0.0), growth })
}

/// Records per second a source must read: what arrives (what it read plus
/// what its lag grew by) and its lag spread over `catchUpTime`. Without a lag
/// metric, a backpressured source would read what its true rate allows; one
/// that is not reads what it reads.
pub(super) fn source_demand(o: &Observation, parallelism: u32, catch_up: Duration) -> Option<f64> {
    match o.lag {
        Some(lag) => Some((o.records_in + lag.growth).max(0.0) + lag.records / catch_up.as_secs_f64().max(1.0)),
        None if o.backpressured >= BACKPRESSURED => o.true_rate.map(|r| r * f64::from(parallelism)),
        None => Some(o.records_in),
    }
}

/// The records out per record in, over the window; `None` without input.
pub(super) fn selectivity(o: &Observation) -> Option<f64> {
    (o.records_in > 0.0).then(|| o.records_out / o.records_in)
}

/// The fewest subtasks that take in `target` records per second, each
/// processing at most `true_rate`, at `utilization`; at least 1.
pub(super) fn required_parallelism(target: f64, true_rate: f64, utilization: f64) -> u32 {
    let per_subtask = true_rate * utilization;
    if target <= 0.0 || per_subtask <= 0.0 || !per_subtask.is_finite() {
        return 1;
    }
    // A hair of tolerance, so that exactly 4.0 subtasks computed as 4.000000001 is 4.
    let n = (target / per_subtask - 1e-9).ceil();
    if n >= f64::from(u32::MAX) { u32::MAX } else { (n as u32).max(1) }
}

/// Keyed state is split into `key_groups` key groups, each subtask owning a
/// contiguous range: unless the parallelism divides the key groups, some
/// subtasks own one more than others, and the busiest subtask (which governs
/// a vertex's throughput) does more than its share. So one extra subtask (at
/// most, and within `upper`) is worth an even split: `p + 1` is taken when it
/// divides the key groups and `p` does not.
pub(super) fn even_key_groups(p: u32, key_groups: u32, upper: u32) -> u32 {
    let divides = |n: u32| n > 0 && key_groups.is_multiple_of(n);
    if divides(p) || key_groups == 0 || p >= upper || !divides(p + 1) { p } else { p + 1 }
}

/// DS2's view of one vertex.
#[derive(Clone, Debug)]
pub(super) struct Assessment {
    pub observed: Observation,
    /// Records per second it must take in.
    pub target: f64,
    /// Target over capacity at the current parallelism.
    pub load: f64,
    /// Subtasks it needs, before bounds.
    pub needed: u32,
}

/// Every vertex's assessment, in the graph's order, targets flowing downstream.
pub(super) fn assess(
    config: &AutoscalerConfig,
    job: &JobMetrics,
    now: Timestamp,
    statistic: Statistic,
) -> Vec<Result<Assessment, Missing>> {
    // Each vertex's target output rate, once known.
    let mut outputs: BTreeMap<&str, Option<f64>> = BTreeMap::new();
    let mut assessments = Vec::with_capacity(job.vertices.len());
    for v in &job.vertices {
        let observed = observe(v, config, now, statistic);
        let target = observed.as_ref().map_err(Clone::clone).and_then(|o| target_rate(config, v, o, &outputs));
        let output = match (&observed, &target) {
            (Ok(_), Ok(t)) if *t <= 0.0 => Some(0.0),
            (Ok(o), Ok(t)) => selectivity(o).map(|s| deliverable(config, v, o, *t) * s),
            _ => None,
        };
        outputs.insert(v.name.as_str(), output);
        assessments.push(observed.and_then(|o| assessment(config, v, o, target?)));
    }
    assessments
}

/// Of `target`, what `v` can process at the most subtasks it may have
/// (excluded: the ones it has): the vertices downstream of one that cannot
/// keep up need not be sized for more than it passes on.
fn deliverable(config: &AutoscalerConfig, v: &VertexMetrics, o: &Observation, target: f64) -> f64 {
    let most = if config.excludes(v.operator_names()) {
        v.parallelism
    } else {
        config.bounds_for(v.operator_names()).max.min(v.max_parallelism)
    };
    o.true_rate.map_or(target, |rate| target.min(rate * f64::from(most)))
}

/// What `v` must take in: its demand if a source, else its inputs' outputs.
fn target_rate(
    config: &AutoscalerConfig,
    v: &VertexMetrics,
    o: &Observation,
    outputs: &BTreeMap<&str, Option<f64>>,
) -> Result<f64, Missing> {
    if v.is_source() {
        return source_demand(o, v.parallelism, config.catch_up_time).ok_or(Missing::NoBusyTime);
    }
    v.inputs.iter().try_fold(0.0, |sum, name| match outputs.get(name.as_str()) {
        None => Err(Missing::UnknownInput { name: name.clone() }),
        Some(None) => Err(Missing::Upstream { name: name.clone() }),
        Some(Some(rate)) => Ok(sum + rate),
    })
}

fn assessment(
    config: &AutoscalerConfig,
    v: &VertexMetrics,
    observed: Observation,
    target: f64,
) -> Result<Assessment, Missing> {
    let (load, needed) = match observed.true_rate {
        // Nothing to take in: the fewest subtasks do, whatever their rate.
        _ if target <= 0.0 => (0.0, 1),
        Some(rate) if rate > 0.0 => (
            target / (rate * f64::from(v.parallelism.max(1))),
            required_parallelism(target, rate, config.target_utilization),
        ),
        _ => return Err(Missing::NoBusyTime),
    };
    Ok(Assessment { observed, target, load, needed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interquartile_mean_ignores_stray_samples() {
        assert_eq!(iqm([1.0, 2.0, 3.0].into_iter()), Some(2.0));
        assert_eq!(iqm([10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 1000.0, 0.0].into_iter()), Some(10.0));
        assert_eq!(iqm([f64::NAN].into_iter()), None);
        assert_eq!(iqm(std::iter::empty()), None);
        assert_eq!(upper_quartile([4.0, 1.0, 3.0, 2.0].into_iter()), Some(3.0));
        assert_eq!(upper_quartile([1.0].into_iter()), Some(1.0));
        assert_eq!(upper_quartile(std::iter::empty()), None);
    }

    #[test]
    fn required_parallelism_is_the_least_that_serves_the_target() {
        assert_eq!(required_parallelism(2800.0, 1000.0, 0.7), 4);
        assert_eq!(required_parallelism(2801.0, 1000.0, 0.7), 5);
        assert_eq!(required_parallelism(0.0, 1000.0, 0.7), 1);
        assert_eq!(required_parallelism(100.0, 0.0, 0.7), 1);
        assert_eq!(required_parallelism(1e300, 1e-300, 0.7), u32::MAX);
    }

    #[test]
    fn one_extra_subtask_buys_an_even_split_of_key_groups() {
        assert_eq!(even_key_groups(7, 128, 128), 8);
        assert_eq!(even_key_groups(5, 128, 128), 5, "6 does not divide 128, 8 is three more");
        assert_eq!(even_key_groups(15, 128, 128), 16);
        assert_eq!(even_key_groups(15, 128, 15), 15, "never above the upper bound");
        assert_eq!(even_key_groups(6, 120, 120), 6);
        assert_eq!(even_key_groups(7, 120, 120), 8);
        assert_eq!(even_key_groups(9, 120, 120), 10);
    }

    #[test]
    fn lag_is_a_line_through_its_samples() {
        let t = |s| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let sample = |s: i64, lag: f64| Sample {
            at: t(s),
            parallelism: 1,
            records_in_per_s: 0.0,
            records_out_per_s: 0.0,
            busy_ms_per_s: 0.0,
            backpressured_ms_per_s: 0.0,
            idle_ms_per_s: 0.0,
            pending_records: Some(lag),
        };
        let samples: Vec<Sample> = (0..7).map(|i| sample(i * 10, 1000.0 + 50.0 * (i * 10) as f64)).collect();
        let lag = lag(&samples.iter().collect::<Vec<_>>()).unwrap();
        assert!((lag.growth - 50.0).abs() < 1e-9 && (lag.records - 4000.0).abs() < 1e-6, "{lag:?}");
        assert_eq!(super::lag(&samples[..1].iter().collect::<Vec<_>>()), None);
    }
}
