//! The controller's part of the autoscaler: the series of metric samples of
//! each StreamJob, kept in memory, and the decision on it.
//!
//! Each reconciliation of a job whose autoscaler is on reads the job with
//! rates over the time since the sample before
//! ([`crate::planner::sample_every`]), adds that sample to the job's series
//! ([`JobMetrics::append`]) and decides ([`decide`]) on the series and the
//! rescales in `status.autoscaler`. A series belongs to one deployment of one
//! StreamJob (`namespace/name`): a new deployment, or a new run of the job,
//! starts a new one. So does an operator that restarts: its first decisions
//! then report the window not full, until the new series covers one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use weir_api::rest::JobDetails;

use crate::autoscaler::{AutoscalerConfig, Decision, JobMetrics, PastRescale, decide};
use crate::planner::{Evaluation, sample_every};

/// A decision younger than half the sampling period ([`sample_every`]) is
/// given again rather than made anew: a reconciliation that its own status
/// write set off (the watch sees the status change) must plan the same
/// status, or the two would feed each other without end.
fn decide_at_most_every(config: &AutoscalerConfig) -> Duration {
    sample_every(config.metrics_window) / 2
}

/// The series of every StreamJob whose autoscaler is on.
#[derive(Default)]
pub struct Samples {
    series: Mutex<HashMap<String, Series>>,
}

struct Series {
    /// The deployment the samples are of.
    deployment: Option<String>,
    metrics: JobMetrics,
    /// The last decision on them.
    decision: Decision,
}

/// An evaluation, and whether it is new (not given again).
#[derive(Debug, PartialEq)]
pub struct Sampled {
    pub evaluation: Evaluation,
    pub fresh: bool,
}

impl Samples {
    /// Adds the sample in `details` (an answer with rates over a window, from
    /// a running job) to the series of `job` (`namespace/name`) and decides on
    /// it, given the rescales made before.
    pub fn evaluate(
        &self,
        job: &str,
        config: &AutoscalerConfig,
        details: &JobDetails,
        history: &[PastRescale],
        now: Timestamp,
    ) -> Sampled {
        if details.metrics_window_ms == 0 || details.vertices.is_empty() {
            return Sampled { evaluation: Evaluation::NoMetrics, fresh: false };
        }
        let mut all = self.series.lock().expect("series poisoned");
        let series = all.get_mut(job).filter(|s| s.deployment == details.deployment);
        let at_most_every = decide_at_most_every(config);
        let recent = |at: Timestamp| now >= at && at.checked_add(at_most_every).is_ok_and(|until| now < until);
        if let Some(s) = &series
            && recent(s.decision.at)
        {
            return Sampled { evaluation: Evaluation::Decided(s.decision.clone()), fresh: false };
        }
        let sample = JobMetrics::from_job_details(details, now);
        let decision = match series {
            Some(s) => {
                // Enough for the scale-down interval's windows, which a scale-down looks back over.
                s.metrics.append(sample, config.scale_down_interval + config.metrics_window + at_most_every);
                s.decision = decide(config, &s.metrics, history, now);
                s.decision.clone()
            }
            None => {
                let decision = decide(config, &sample, history, now);
                let series =
                    Series { deployment: details.deployment.clone(), metrics: sample, decision: decision.clone() };
                all.insert(job.to_string(), series);
                decision
            }
        };
        Sampled { evaluation: Evaluation::Decided(decision), fresh: true }
    }

    /// Forgets the series of a StreamJob that is gone.
    pub fn forget(&self, job: &str) {
        self.series.lock().expect("series poisoned").remove(job);
    }

    /// How many samples the series of `job` holds in its first vertex.
    #[cfg(test)]
    pub fn len(&self, job: &str) -> usize {
        let all = self.series.lock().expect("series poisoned");
        all.get(job).and_then(|s| s.metrics.vertices.first()).map_or(0, |v| v.samples.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AutoscalerSpec;

    const T0: i64 = 1_800_000_000;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(T0 + s).unwrap()
    }

    fn answer(deployment: &str) -> JobDetails {
        crate::fixtures::metered(Some(deployment), t(0), 700.0, 0)
    }

    fn config() -> AutoscalerConfig {
        let spec = AutoscalerSpec { mode: crate::crd::AutoscalerMode::Recommend, ..Default::default() };
        AutoscalerConfig::from_spec(&spec, 128).unwrap()
    }

    #[test]
    fn a_series_fills_per_deployment_and_a_decision_is_not_made_twice_within_seconds() {
        let samples = Samples::default();
        let (c, key) = (config(), "weir/orders");
        let mut decisions = Vec::new();
        for s in (300..=420).step_by(8) {
            let sampled = samples.evaluate(key, &c, &answer("1-a"), &[], t(s));
            assert!(sampled.fresh, "{s}");
            decisions.push(sampled.evaluation);
        }
        assert_eq!(samples.len(key), 16);
        // The first decisions wait for a window of samples (the series started at 300 s, not at the job's start).
        let Evaluation::Decided(first) = &decisions[0] else { panic!("{:?}", decisions[0]) };
        assert_eq!(first.to_string(), "no metrics yet: collecting a window of metrics until 2027-01-15T08:05:30Z");
        let Some(Evaluation::Decided(last)) = decisions.last() else { panic!() };
        assert_eq!(last.to_string(), "within band");
        // Seconds later (a reconciliation its own status write set off): the same decision, not a new one.
        let again = samples.evaluate(key, &c, &answer("1-a"), &[], t(422));
        assert_eq!(again, Sampled { evaluation: Evaluation::Decided(last.clone()), fresh: false });
        assert_eq!(samples.len(key), 16);
        // A new deployment: a new series.
        assert!(samples.evaluate(key, &c, &answer("2-b"), &[], t(426)).fresh);
        assert_eq!(samples.len(key), 1);
        // No rates yet: nothing sampled.
        let mut empty = answer("2-b");
        empty.metrics_window_ms = 0;
        let none = samples.evaluate(key, &c, &empty, &[], t(450));
        assert_eq!(none, Sampled { evaluation: Evaluation::NoMetrics, fresh: false });
        assert_eq!(samples.len(key), 1);
        samples.forget(key);
        assert_eq!(samples.len(key), 0);
    }
}
