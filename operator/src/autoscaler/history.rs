//! What past rescales teach: when the last one was (stabilization, the
//! intervals), how many the last hour saw (the budget), and which
//! parallelisms proved too small (never scaled down into again within the
//! hour). Also the way [`PastRescale`]s are kept in `status.autoscaler`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::decision::{Action, Decision};
use super::metrics::{PastRescale, VertexRescale};
use crate::crd::{AutoscalerRescale, AutoscalerVertexRescale};

/// The budget's and the memory's horizon.
pub(super) const HOUR: Duration = Duration::from_secs(3600);

/// `t + d`, or the latest time there is.
pub(super) fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// `t - d`, or the earliest time there is.
pub(super) fn before(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(d).unwrap_or(Timestamp::MIN)
}

/// Rescales in the hour up to `now`.
pub(super) fn rescales_in_last_hour(history: &[PastRescale], now: Timestamp) -> u32 {
    let since = before(now, HOUR);
    history.iter().filter(|r| r.at > since && r.at <= now).count() as u32
}

/// When the last scale-up was.
pub(super) fn last_scale_up(history: &[PastRescale]) -> Option<Timestamp> {
    history.iter().filter(|r| r.is_scale_up()).map(|r| r.at).max()
}

/// A demand at most this share of the one a parallelism failed under is a
/// change of load, not noise: the parallelism may carry it again.
pub(super) const REAL_FALL: f64 = 0.75;

/// The largest parallelism of vertex `name` that a rescale of the last hour
/// showed to be too small, its load above `upper`: the one a scale-up left,
/// or the one a rescale went to and then found too small. `demand` is the
/// vertex's load now in subtasks (load times parallelism): a parallelism
/// counts only while the demand is above [`REAL_FALL`] of the one it failed
/// under, so a load that fell back (a step up and down) can return to it.
pub(super) fn too_small(history: &[PastRescale], name: &str, now: Timestamp, upper: f64, demand: f64) -> Option<u32> {
    let since = before(now, HOUR);
    let failed = |p: u32, load: Option<f64>| {
        load.is_some_and(|l| l > upper && demand > REAL_FALL * l * f64::from(p)).then_some(p)
    };
    history
        .iter()
        .filter(|r| r.at > since)
        .filter_map(|r| r.vertices.get(name))
        .flat_map(|v| [if v.to > v.from { failed(v.from, v.load_before) } else { None }, failed(v.to, v.load_after)])
        .flatten()
        .max()
}

/// How many rescales `status.autoscaler.recentRescales` keeps at least.
pub const KEPT_RESCALES: usize = 10;

/// The rescales to keep in the status (oldest first): the last
/// [`KEPT_RESCALES`], and every one of the last hour, which the budget counts.
pub fn recent_rescales(rescales: Vec<AutoscalerRescale>, now: Timestamp) -> Vec<AutoscalerRescale> {
    let since = before(now, HOUR);
    let first_kept = rescales.len().saturating_sub(KEPT_RESCALES);
    let in_last_hour = |r: &AutoscalerRescale| r.time.parse::<Timestamp>().is_ok_and(|t| t > since);
    rescales.into_iter().enumerate().filter(|(i, r)| *i >= first_kept || in_last_hour(r)).map(|(_, r)| r).collect()
}

/// Notes in the status's rescale the loads `later` measured at its new
/// parallelism ([`PastRescale::record_outcome`]), keeping its summary and failure.
pub fn record_outcome(rescale: &mut AutoscalerRescale, later: &Decision) {
    if let Some(mut past) = PastRescale::from_status(rescale) {
        past.record_outcome(later);
        let summary = std::mem::take(&mut rescale.summary);
        *rescale = AutoscalerRescale { failure: rescale.failure.take(), ..past.to_status(summary) };
    }
}

impl Decision {
    /// What to remember of this decision once its action is applied: every
    /// vertex goes to its own recommendation (see [`Action`]).
    pub fn rescale_record(&self) -> Option<PastRescale> {
        let Action::Rescale { .. } = &self.action else { return None };
        let vertices = self
            .vertices
            .iter()
            .map(|v| {
                let r = VertexRescale { from: v.current, to: v.recommended, load_before: v.load, load_after: None };
                (v.name.clone(), r)
            })
            .collect();
        Some(PastRescale { at: self.at, vertices })
    }
}

impl PastRescale {
    /// Notes each vertex's load at its new parallelism from the first
    /// decision after the rescale that measured it.
    pub fn record_outcome(&mut self, later: &Decision) {
        for v in &later.vertices {
            if let (Some(r), Some(load)) = (self.vertices.get_mut(&v.name), v.load)
                && r.load_after.is_none()
                && v.current == r.to
            {
                r.load_after = Some(load);
            }
        }
    }

    /// As `status.autoscaler.recentRescales` keeps it.
    pub fn to_status(&self, summary: String) -> AutoscalerRescale {
        let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let (from, to) = self.job_parallelism();
        AutoscalerRescale {
            time: self.at.to_string(),
            from: int(from),
            to: int(to),
            summary,
            failure: None,
            vertices: self
                .vertices
                .iter()
                .map(|(name, v)| AutoscalerVertexRescale {
                    name: name.clone(),
                    from: int(v.from),
                    to: int(v.to),
                    load_before: v.load_before,
                    load_after: v.load_after,
                })
                .collect(),
        }
    }

    /// Read back from the status; `None` when its time does not parse.
    pub fn from_status(r: &AutoscalerRescale) -> Option<PastRescale> {
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        let vertices: BTreeMap<String, VertexRescale> = r
            .vertices
            .iter()
            .map(|v| {
                let rescale = VertexRescale {
                    from: count(v.from),
                    to: count(v.to),
                    load_before: v.load_before,
                    load_after: v.load_after,
                };
                (v.name.clone(), rescale)
            })
            .collect();
        Some(PastRescale { at: r.time.parse().ok()?, vertices })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rescale(minutes_ago: i64, from: u32, to: u32, before: Option<f64>, after: Option<f64>) -> PastRescale {
        let at = Timestamp::from_second(1_800_000_000 - minutes_ago * 60).unwrap();
        let v = VertexRescale { from, to, load_before: before, load_after: after };
        PastRescale { at, vertices: [("map".to_string(), v)].into() }
    }

    #[test]
    fn the_last_hour_remembers_what_was_too_small() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let up_from_4 = rescale(50, 4, 8, Some(1.2), None);
        let down_to_6_then_hot = rescale(20, 8, 6, Some(0.3), Some(0.95));
        let old = rescale(70, 10, 16, Some(1.5), None);
        let high = f64::INFINITY;
        assert_eq!(too_small(std::slice::from_ref(&up_from_4), "map", now, 0.8, high), Some(4));
        assert_eq!(too_small(&[up_from_4.clone(), down_to_6_then_hot.clone()], "map", now, 0.8, high), Some(6));
        assert_eq!(too_small(std::slice::from_ref(&old), "map", now, 0.8, high), None, "older than an hour");
        assert_eq!(too_small(&[rescale(10, 4, 8, Some(0.75), Some(0.5))], "map", now, 0.8, high), None);
        assert_eq!(too_small(std::slice::from_ref(&up_from_4), "sink", now, 0.8, high), None);
        // 4 failed under a demand of 4.8 subtasks: above 3.6 it still counts, below it the load fell back.
        assert_eq!(too_small(std::slice::from_ref(&up_from_4), "map", now, 0.8, 3.7), Some(4));
        assert_eq!(too_small(std::slice::from_ref(&up_from_4), "map", now, 0.8, 3.5), None);
        // 6 failed under 5.7 (three quarters: 4.3): at a demand of 4 only 4 still counts.
        assert_eq!(too_small(&[up_from_4.clone(), down_to_6_then_hot.clone()], "map", now, 0.8, 4.0), Some(4));
        assert_eq!(rescales_in_last_hour(&[old, up_from_4.clone(), down_to_6_then_hot.clone()], now), 2);
        assert_eq!(last_scale_up(&[up_from_4.clone(), down_to_6_then_hot]), Some(up_from_4.at));
    }

    #[test]
    fn the_status_keeps_the_last_ten_rescales_and_all_of_the_last_hour() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let minutes_ago = |m: i64| rescale(m, 4, 8, None, None).to_status(format!("{m} minutes ago"));
        // Twelve within the hour: all kept; three older than the hour beyond the last ten: dropped.
        let rescales: Vec<_> =
            [200, 190, 180].into_iter().chain((0..12).map(|i| 55 - i * 4)).map(minutes_ago).collect();
        let kept: Vec<String> = recent_rescales(rescales, now).into_iter().map(|r| r.summary).collect();
        assert_eq!(kept.len(), 12, "{kept:?}");
        assert_eq!(kept[0], "55 minutes ago");
        let old: Vec<_> = (0..15).map(|i| minutes_ago(300 - i)).collect();
        let kept = recent_rescales(old, now);
        assert_eq!((kept.len(), kept[0].summary.as_str()), (KEPT_RESCALES, "295 minutes ago"));
    }

    #[test]
    fn the_outcome_is_noted_in_the_status_once_and_a_failure_stays() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let mut status = rescale(5, 4, 8, Some(1.25), None).to_status("scale up to 8".into());
        status.failure = Some("the savepoint failed".into());
        let measured = |current, load| {
            let v = crate::autoscaler::VertexDecision {
                name: "map".into(),
                uids: vec!["map".into()],
                current,
                recommended: current,
                true_rate: None,
                target_rate: None,
                utilization: None,
                load: Some(load),
                reason: crate::autoscaler::Reason::WithinBand { load },
            };
            Decision::new(at, vec![v])
        };
        record_outcome(&mut status, &measured(4, 1.3));
        assert_eq!(status.vertices[0].load_after, None, "still at 4: not the rescale's outcome");
        record_outcome(&mut status, &measured(8, 0.7));
        record_outcome(&mut status, &measured(8, 0.5));
        assert_eq!(status.vertices[0].load_after, Some(0.7), "the first measure at 8");
        assert_eq!(
            (status.summary.as_str(), status.failure.as_deref()),
            ("scale up to 8", Some("the savepoint failed"))
        );
    }

    #[test]
    fn a_rescale_survives_the_status() {
        let r = rescale(5, 4, 8, Some(1.25), Some(0.7));
        let status = r.to_status("scale up to 8".into());
        assert_eq!((status.from, status.to, status.time.as_str()), (4, 8, "2027-01-15T07:55:00Z"));
        assert_eq!(PastRescale::from_status(&status), Some(r));
        assert_eq!(PastRescale::from_status(&AutoscalerRescale { time: "soon".into(), ..status }), None);
    }
}
