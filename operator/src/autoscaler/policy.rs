//! The policy around DS2's numbers: when a vertex's load calls for a
//! rescale, and what holds one back (sustained pressure, source-bound
//! sources, the intervals, the budget, the scale-down interval's peak, the
//! parallelisms found too small). See the module above for the rules.

use k8s_openapi::jiff::Timestamp;

use super::config::AutoscalerConfig;
use super::decision::{Missing, Reason, VertexDecision};
use super::ds2::{self, Assessment, Statistic, assess};
use super::history;
use super::metrics::{JobMetrics, PastRescale, VertexMetrics};

/// From this fraction of a window's samples on, pressure is sustained: 3 of the
/// 4 samples a window holds (`planner::autoscaling::sample_every`), so a load
/// step is acted on three quarters of a window after it, not a whole one.
const SUSTAINED: f64 = 0.75;

/// A vertex's most demanding window within the scale-down interval.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Peak {
    needed: u32,
    load: f64,
}

/// Per vertex, the peak of the windows of the last `scaleDownInterval` (after
/// stabilization; each but the current one at its upper quartile), `None`
/// when one of them has no metrics: a vertex is scaled down only when its
/// load stayed below the band all that time, and to what its peak needed, so
/// that a noisy window, or a load that dipped for a minute, does not take
/// subtasks the next minutes need (Flink's autoscaler, too, applies the
/// largest recommendation of its scale-down interval).
pub(super) fn peaks(
    config: &AutoscalerConfig,
    job: &JobMetrics,
    now_assessed: &[Result<Assessment, Missing>],
    stable_from: Timestamp,
    now: Timestamp,
) -> Vec<Option<Peak>> {
    let window = config.metrics_window;
    let oldest = history::before(now, config.scale_down_interval).max(stable_from);
    let ends = (1..).map_while(|i| {
        let end = history::before(now, window.checked_mul(i)?);
        (history::before(end, window) >= oldest).then_some(end)
    });
    let earlier: Vec<_> = ends.map(|end| assess(config, job, end, Statistic::Busier)).collect();
    (0..job.vertices.len())
        .map(|i| {
            let mut windows = std::iter::once(&now_assessed[i]).chain(earlier.iter().map(|w| &w[i]));
            windows.try_fold(Peak::default(), |p, a| {
                let a = a.as_ref().ok()?;
                Some(Peak { needed: p.needed.max(a.needed), load: p.load.max(a.load) })
            })
        })
        .collect()
}

/// What holds a rescale back at the job's level.
pub(super) struct Gates<'a> {
    pub now: Timestamp,
    /// The largest fraction of pressured samples of any vertex.
    pub pressure: f64,
    /// Rescales in the last hour.
    pub rescales: u32,
    pub scale_up_from: Timestamp,
    pub scale_down_from: Timestamp,
    pub history: &'a [PastRescale],
}

impl Gates<'_> {
    /// The decision for `v`, from its assessment and its peak.
    pub(super) fn vertex(
        &self,
        config: &AutoscalerConfig,
        v: &VertexMetrics,
        a: Result<Assessment, Missing>,
        peak: Option<Peak>,
    ) -> VertexDecision {
        let (a, mut d) = match a {
            Ok(a) => {
                let mut d = VertexDecision::keep(v, Reason::WithinBand { load: a.load });
                d.true_rate = a.observed.true_rate.map(|r| r * f64::from(v.parallelism));
                d.target_rate = Some(a.target);
                d.utilization = Some(a.observed.busy);
                d.load = Some(a.load);
                (a, d)
            }
            Err(_) if config.excludes(v.operator_names()) => return VertexDecision::keep(v, Reason::Excluded),
            Err(why) => return VertexDecision::keep(v, Reason::NoMetrics(why)),
        };
        // Excluded, it is reported all the same.
        if config.excludes(v.operator_names()) {
            d.reason = Reason::Excluded;
            return d;
        }
        let (lower, upper) = config.band();
        (d.recommended, d.reason) = if a.load > upper {
            self.scale_up(config, v, &a)
        } else if a.load < lower {
            self.scale_down(config, v, &a, peak)
        } else {
            (v.parallelism, Reason::WithinBand { load: a.load })
        };
        d
    }

    fn budget_spent(&self, config: &AutoscalerConfig) -> Option<Reason> {
        (self.rescales >= config.max_rescales_per_hour).then_some(Reason::BudgetSpent { count: self.rescales })
    }

    fn scale_up(&self, config: &AutoscalerConfig, v: &VertexMetrics, a: &Assessment) -> (u32, Reason) {
        let current = v.parallelism;
        let o = &a.observed;
        let backlog = o.lag.is_some_and(|l| l.records >= 1.0 || l.growth > 0.0);
        if v.is_source() && o.backpressured < ds2::BACKPRESSURED && !backlog {
            return (current, Reason::SourceBound { busy: o.busy });
        }
        if self.pressure < SUSTAINED {
            return (current, Reason::NotSustained { load: a.load, pressured: self.pressure });
        }
        let bounds = config.bounds_for(v.operator_names());
        let max = bounds.max.min(v.max_parallelism).max(1);
        let to = ds2::even_key_groups(a.needed.clamp(bounds.min.min(max), max), v.max_parallelism, max);
        let bounded = Reason::BoundedByMax { needed: a.needed, max };
        if to <= current {
            return (current, bounded);
        }
        if let Some(spent) = self.budget_spent(config) {
            return (current, spent);
        }
        if self.now < self.scale_up_from {
            return (current, Reason::ScaleUpDelayed { to, until: self.scale_up_from });
        }
        (to, if a.needed > max { bounded } else { Reason::ScaleUp { to, load: a.load } })
    }

    fn scale_down(
        &self,
        config: &AutoscalerConfig,
        v: &VertexMetrics,
        a: &Assessment,
        peak: Option<Peak>,
    ) -> (u32, Reason) {
        let current = v.parallelism;
        if a.observed.busy > config.target_utilization {
            return (current, Reason::AboveTarget { busy: a.observed.busy });
        }
        let Some(peak) = peak else { return (current, Reason::ShortHistory { load: a.load }) };
        let bounds = config.bounds_for(v.operator_names());
        let max = bounds.max.min(v.max_parallelism).max(1);
        let (lower, upper) = config.band();
        if peak.load >= lower {
            return (current, Reason::RecentlyHigher { load: a.load, peak: peak.load });
        }
        let demand = peak.load * f64::from(current);
        let too_small = history::too_small(self.history, &v.name, self.now, upper, demand);
        // The peak includes the current window.
        let needed = peak.needed;
        let want = needed.clamp(bounds.min.min(max), max).max(too_small.map_or(0, |p| p + 1));
        let to = ds2::even_key_groups(want, v.max_parallelism, max);
        if to >= current {
            let reason = match too_small {
                Some(p) if p + 1 >= current => Reason::TooSmallRecently { parallelism: p },
                _ if needed <= bounds.min => Reason::BoundedByMin { min: bounds.min, load: a.load },
                _ => Reason::NoSmallerFits { load: a.load },
            };
            return (current, reason);
        }
        if let Some(spent) = self.budget_spent(config) {
            return (current, spent);
        }
        if self.now < self.scale_down_from {
            return (current, Reason::ScaleDownDelayed { to, until: self.scale_down_from });
        }
        (to, Reason::ScaleDown { to, load: a.load })
    }
}

impl VertexDecision {
    /// `v` kept at its parallelism, for `reason`, with no numbers.
    pub(super) fn keep(v: &VertexMetrics, reason: Reason) -> VertexDecision {
        VertexDecision {
            name: v.name.clone(),
            uids: v.uids.clone(),
            current: v.parallelism,
            recommended: v.parallelism,
            true_rate: None,
            target_rate: None,
            utilization: None,
            load: None,
            reason,
        }
    }
}
