//! The autoscaler in the plan: [`crate::autoscaler`] decides, this part of
//! the planner reports each decision in `status.autoscaler` and, in `active`
//! mode, makes a decided rescale the job's effective parallelism, which the
//! planner then rolls out through its one savepoint-verified rescale (the
//! write-ahead `pendingOperation`), as it would a change of `spec.parallelism`.
//!
//! # Who owns the parallelism
//!
//! * `spec.parallelism` is the user's word, and the autoscaler's starting point.
//! * In `active` mode the autoscaler's choice, `status.autoscaler.parallelism`,
//!   is the effective parallelism. With it the status records the
//!   `spec.parallelism` it was made over (`status.autoscaler.specParallelism`).
//! * A `spec.parallelism` that differs from that record is the user's change
//!   (`kubectl edit` or `apply`, or `kubectl scale`, which writes
//!   `spec.parallelism` through the scale subresource): the user's value wins,
//!   the choice is dropped (an `AutoscalerOverridden` event says so), and the
//!   autoscaler starts over from the new value.
//! * `recommend` and `disabled` (or no `spec.autoscaler`) make no choice: the
//!   job runs at `spec.parallelism`, so turning `active` off returns it there.
//! * A rescale the autoscaler decided that fails (its savepoint, say) leaves
//!   the job as it runs: the choice goes back to the deployed parallelism, the
//!   rescale stays in `recentRescales` with its failure (the budget counts it),
//!   and the next one waits for stabilization and a new window like any other.
//!   No generation is marked failed: the user's spec did not fail.
//! * The autoscaler acts only on a job that runs with nothing else to roll out
//!   (no operation in flight, no spec change pending or aborted): a user's
//!   rollout goes first, and its own decisions wait for the job to run again.
//!
//! An HPA or KEDA may drive `spec.parallelism` through the scale subresource
//! (its `labelSelectorPath` is `status.selector`) while the autoscaler is
//! `disabled`; with both, each change of the other's resets it.

use std::time::Duration;

use weir_api::rest::JobState;

use super::{Action, Planner, deployed_spec};
use crate::autoscaler::{Action as Scaling, Decision, recent_rescales, record_outcome};
use crate::crd::{AutoscalerMode, AutoscalerStatus, DesiredState};
use crate::diff::{ChangeKind, diff};

/// How often a job whose autoscaler is on is looked at (and sampled), so
/// that its metrics window fills: a sample each time, with rates over this
/// long (see [`rate_window`]).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// The span the JobManager's rates cover in each sample: the time since the
/// sample before (`SAMPLE_EVERY`), so that the window's samples are
/// independent and "80% of the samples show pressure" means 80% of the time;
/// rates over the whole metrics window in every sample would smooth pressure
/// away and lag a window behind.
pub fn rate_window(metrics_window: Duration) -> Duration {
    SAMPLE_EVERY.min(metrics_window).max(Duration::from_secs(1))
}

/// What the observer's autoscaler made of the job's metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Evaluation {
    /// The decision on the series of samples, this one included.
    Decided(Decision),
    /// The JobManager's answer has no rates yet (no window covered since its start).
    NoMetrics,
}

impl Planner<'_> {
    fn autoscaler_mode(&self) -> AutoscalerMode {
        self.job.spec.autoscaler.as_ref().map_or(AutoscalerMode::Disabled, |a| a.mode)
    }

    /// Applies the ownership rule (see the module): keeps the autoscaler's
    /// choice as the effective parallelism while it is `active` and
    /// `spec.parallelism` is the one it was made over; drops it otherwise.
    pub(super) fn settle_parallelism(&mut self) {
        let (mode, spec_parallelism) = (self.autoscaler_mode(), self.job.spec.parallelism);
        let Some(a) = self.status.autoscaler.as_mut() else { return };
        let (Some(chosen), Some(over)) = (a.parallelism, a.spec_parallelism) else { return };
        if mode == AutoscalerMode::Active && over == spec_parallelism {
            self.spec.parallelism = chosen;
            return;
        }
        (a.parallelism, a.spec_parallelism) = (None, None);
        let note = if over != spec_parallelism {
            format!("spec.parallelism changed {over} -> {spec_parallelism}: it wins over the autoscaler's {chosen}")
        } else {
            format!("the autoscaler is {mode:?}: back to spec.parallelism {spec_parallelism} from its {chosen}")
        };
        self.event(false, "AutoscalerOverridden", &note);
    }

    /// Writes `status.autoscaler` (every plan of a valid spec): the decision,
    /// or why there is none; in `active` mode, a decided rescale becomes the
    /// effective parallelism.
    pub(super) fn autoscale(&mut self) {
        let mode = self.autoscaler_mode();
        if mode == AutoscalerMode::Disabled {
            self.autoscaler_off();
            return;
        }
        self.autoscaling = true;
        match self.observed.autoscaler.as_ref() {
            Some(Evaluation::Decided(decision)) if self.not_evaluable().is_none() => self.decided(mode, decision),
            _ => {
                let (reason, line) = self.not_evaluable().unwrap_or(("no-metrics", NO_RATES.into()));
                let a = self.status.autoscaler.get_or_insert_with(AutoscalerStatus::default);
                // The figures and time of the last evaluation stay as they were.
                (a.mode, a.reason, a.decision) = (mode, Some(reason.into()), Some(line));
            }
        }
    }

    /// Why the autoscaler cannot evaluate the job now (a word and a line), if it cannot.
    fn not_evaluable(&self) -> Option<(&'static str, String)> {
        if let Some(op) = &self.status.pending_operation {
            let kind = format!("{:?}", op.kind).to_lowercase();
            return Some(("operation-in-progress", format!("not evaluated: a {kind} operation is in progress")));
        }
        if self.job.spec.state == DesiredState::Suspended {
            return Some(("suspended", "not evaluated: the job is suspended".into()));
        }
        match (&self.observed.job, self.current_job()) {
            (None, _) => Some(("jobmanager-unreachable", "not evaluated: the JobManager does not answer".into())),
            (Some(_), None) => Some(("deploying", "not evaluated: the new deployment's job is not up yet".into())),
            (_, Some(j)) if j.state != JobState::Running => {
                Some(("job-not-running", format!("not evaluated: the job is {}", j.state)))
            }
            _ => None,
        }
    }

    /// Reports `decision`, notes the last rescale's outcome, and in `active`
    /// mode applies its rescale when nothing stands in the way.
    fn decided(&mut self, mode: AutoscalerMode, decision: &Decision) {
        let previous = self.status.autoscaler.take().unwrap_or_default();
        let before = (previous.reason.clone(), recommended(&previous));
        let mut rescales = previous.recent_rescales;
        if let Some(last) = rescales.last_mut() {
            record_outcome(last, decision);
        }
        let mut status = decision.status(mode, Vec::new());
        (status.parallelism, status.spec_parallelism) = (previous.parallelism, previous.spec_parallelism);
        let line = decision.to_string();
        if let (AutoscalerMode::Active, Scaling::Rescale { job_parallelism, .. }) = (mode, &decision.action) {
            let parallelism = i32::try_from(*job_parallelism).unwrap_or(i32::MAX);
            match self.why_not_applied(decision, parallelism, &rescales) {
                Some(why) => status.decision = Some(format!("{line} (not applied: {why})")),
                None => {
                    rescales.extend(decision.rescale_record().map(|r| r.to_status(line.clone())));
                    (status.parallelism, status.spec_parallelism) =
                        (Some(parallelism), Some(self.job.spec.parallelism));
                    self.spec.parallelism = parallelism;
                    self.autoscaler_rescale = true;
                }
            }
        }
        status.recent_rescales = recent_rescales(rescales, decision.at);
        if (status.reason.clone(), recommended(&status)) != before {
            // When the decision changes, not on every evaluation: the figures in the line change each time.
            let warning = matches!(decision.reason(), "budget-spent" | "bounded-by-max");
            self.event(warning, "AutoscalerDecision", status.decision.as_deref().unwrap_or(&line));
        }
        self.status.autoscaler = Some(status);
    }

    /// Why an active autoscaler's rescale is not applied now, if it is not.
    fn why_not_applied(
        &self,
        decision: &Decision,
        parallelism: i32,
        rescales: &[crate::crd::AutoscalerRescale],
    ) -> Option<String> {
        let last = rescales.last().and_then(|r| r.time.parse::<k8s_openapi::jiff::Timestamp>().ok());
        if last.is_some_and(|t| t >= decision.at) {
            // A decision made before the last rescale (the observer's, reused): acted on already.
            return Some("decided before the last rescale".into());
        }
        if self.status.failed_generation == Some(self.generation) {
            return Some(format!("generation {}'s rollout was aborted; a new spec tries again", self.generation));
        }
        let Some(deployed) = deployed_spec(&self.status) else { return Some("nothing is deployed yet".into()) };
        if deployed.parallelism == parallelism {
            return Some(format!("the job is deployed at {parallelism} already"));
        }
        let d = diff(&deployed, &self.spec);
        let quiet = d.kind == ChangeKind::Ignore && !d.restart_requested && !d.savepoint_requested;
        (!quiet).then(|| "a change of the spec is rolled out first".into())
    }

    /// The autoscaler is disabled: nothing to report for a job that never had
    /// one; one that had keeps its rescales (the budget, should it come back).
    fn autoscaler_off(&mut self) {
        if let Some(a) = self.status.autoscaler.as_mut() {
            (a.mode, a.reason, a.decision) =
                (AutoscalerMode::Disabled, Some("disabled".into()), Some("disabled".into()));
            a.vertices.clear();
        }
    }

    /// A rescale the autoscaler decided did not happen: the job runs on as
    /// deployed, and so does its effective parallelism (no retry at once).
    pub(super) fn autoscaler_rescale_failed(&mut self, why: &str) {
        let deployed = deployed_spec(&self.status).map(|d| d.parallelism);
        let Some(a) = self.status.autoscaler.as_mut() else { return };
        if let Some(last) = a.recent_rescales.last_mut() {
            last.failure = Some(why.to_string());
        }
        // A choice the user's spec overrode meanwhile is gone already.
        if a.parallelism.is_some() {
            a.parallelism = deployed;
            self.spec.parallelism = deployed.unwrap_or(self.spec.parallelism);
        }
    }

    /// While the autoscaler is on, a look every [`SAMPLE_EVERY`] at most, so that its window fills.
    pub(super) fn sample_often(&mut self) {
        if !self.autoscaling || self.job.spec.state == DesiredState::Suspended {
            return;
        }
        if !self.actions.iter().any(|a| matches!(a, Action::Requeue(after) if *after <= SAMPLE_EVERY)) {
            self.actions.retain(|a| !matches!(a, Action::Requeue(_)));
            self.actions.push(Action::Requeue(SAMPLE_EVERY));
        }
    }
}

const NO_RATES: &str = "no metrics yet: the JobManager reports no rates over a window yet";

/// The job's parallelism a status's vertices recommend.
fn recommended(status: &AutoscalerStatus) -> Option<i32> {
    status.vertices.iter().map(|v| v.recommended).max()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{applied, at, condition, job, observed, running, step};
    use super::super::{Observed, Plan, SavepointView};
    use super::*;
    use crate::autoscaler::{Missing, Reason, VertexDecision};
    use crate::crd::{AutoscalerSpec, OperationKind, StreamJobSpec, StreamJobStatus};
    use crate::phase::Phase;
    use crate::resources::Restore;

    const NOW: &str = "2026-11-21T12:00:00Z";

    fn mode(mode: AutoscalerMode) -> impl Fn(&mut StreamJobSpec) + Copy {
        move |s: &mut StreamJobSpec| s.autoscaler = Some(AutoscalerSpec { mode, ..Default::default() })
    }

    /// The decision on a job of one vertex, `orders`, at `current`, made `at`.
    fn decision(at: &str, current: u32, recommended: u32, reason: Reason) -> Decision {
        let load = match &reason {
            Reason::ScaleUp { load, .. } | Reason::ScaleDown { load, .. } | Reason::WithinBand { load } => Some(*load),
            _ => None,
        };
        let v = VertexDecision {
            name: "orders".into(),
            current,
            recommended,
            true_rate: Some(1000.0),
            target_rate: Some(1400.0),
            utilization: Some(0.98),
            load,
            reason,
        };
        Decision::new(at.parse().unwrap(), vec![v])
    }

    fn scale_up(at: &str, from: u32, to: u32) -> Decision {
        decision(at, from, to, Reason::ScaleUp { to, load: 1.4 })
    }

    /// The JobManager answers `running` at `parallelism`; the autoscaler decided `d`.
    fn deciding(parallelism: i32, d: Decision) -> Observed {
        let mut o = at(observed(Some((JobState::Running, parallelism)), None), &d.at.to_string());
        o.autoscaler = Some(Evaluation::Decided(d));
        o
    }

    fn events(p: &Plan) -> Vec<(&str, &str)> {
        let e = p.actions.iter().filter_map(|a| match a {
            Action::Event { reason, note, .. } => Some((reason.as_str(), note.as_str())),
            _ => None,
        });
        e.collect()
    }

    fn autoscaler(p: &Plan) -> &AutoscalerStatus {
        p.status.autoscaler.as_ref().expect("status.autoscaler")
    }

    #[test]
    fn recommend_writes_the_decision_and_changes_nothing() {
        let recommend = mode(AutoscalerMode::Recommend);
        let status = running(recommend);
        let p = step(&job(Some(status), 1, recommend), &deciding(2, scale_up(NOW, 2, 4)));
        let a = autoscaler(&p);
        assert_eq!((a.mode, a.last_evaluation.as_deref()), (AutoscalerMode::Recommend, Some(NOW)));
        assert_eq!(a.decision.as_deref(), Some("scale up to 4: orders at load 140% of its capacity"));
        assert_eq!((a.reason.as_deref(), a.parallelism), (Some("scale-up"), None), "no choice is made");
        let v = &a.vertices[0];
        assert_eq!((v.name.as_str(), v.parallelism, v.recommended, v.true_rate), ("orders", 2, 4, Some(1000.0)));
        assert_eq!(a.recent_rescales, vec![], "nothing was rescaled");
        assert_eq!((applied(&p), &p.status.pending_operation, p.status.phase), (None, &None, Some(Phase::Running)));
        assert!(!p.actions.iter().any(|a| matches!(a, Action::TriggerSavepoint { .. })), "{:?}", p.actions);
        assert_eq!(events(&p), [("AutoscalerDecision", "scale up to 4: orders at load 140% of its capacity")]);
        assert!(p.actions.contains(&Action::Requeue(SAMPLE_EVERY)), "sampled often: {:?}", p.actions);
        // The same decision with other figures a requeue later: no second event.
        let later = decision("2026-11-21T12:00:15Z", 2, 4, Reason::ScaleUp { to: 4, load: 1.5 });
        let p = step(&job(Some(p.status), 1, recommend), &deciding(2, later));
        assert_eq!(autoscaler(&p).last_evaluation.as_deref(), Some("2026-11-21T12:00:15Z"));
        assert_eq!(events(&p), [], "{:?}", p.actions);
    }

    /// A job running at 2 that an active autoscaler rescaled to 4: its status.
    fn rescaled_to_4() -> StreamJobStatus {
        let active = mode(AutoscalerMode::Active);
        let p = step(&job(Some(running(active)), 1, active), &deciding(2, scale_up(NOW, 2, 4)));
        let sp = "s3://weir/checkpoints/j/savepoints/sp-1".to_string();
        let mut done = at(observed(Some((JobState::Running, 2)), None), "2026-11-21T12:00:10Z");
        done.savepoint = Some(SavepointView::Completed { path: sp, in_storage: true });
        let p = step(&job(Some(p.status), 1, active), &done);
        let up = at(observed(Some((JobState::Running, 4)), None), "2026-11-21T12:00:30Z");
        step(&job(Some(p.status), 1, active), &up).status
    }

    #[test]
    fn active_rescales_through_the_write_ahead_savepoint_path() {
        let active = mode(AutoscalerMode::Active);
        let p = step(&job(Some(running(active)), 1, active), &deciding(2, scale_up(NOW, 2, 4)));
        let op = p.status.pending_operation.clone().expect("written before the savepoint is triggered");
        assert_eq!((op.kind, op.target_parallelism, op.by_autoscaler), (OperationKind::Rescale, Some(4), true));
        assert_eq!(op.generation, 1, "no new generation: the spec did not change");
        assert!(p.actions.contains(&Action::TriggerSavepoint { stop: true }), "{:?}", p.actions);
        assert_eq!(p.status.phase, Some(Phase::Rescaling));
        let a = autoscaler(&p);
        assert_eq!((a.parallelism, a.spec_parallelism), (Some(4), Some(2)));
        let r = &a.recent_rescales[0];
        assert_eq!((r.from, r.to, r.time.as_str(), r.vertices[0].load_before), (2, 4, NOW, Some(1.4)));
        assert!(events(&p).contains(&("Rescale", "the autoscaler: rescaling 2 -> 4 through a savepoint")));
        // The savepoint, verified: redeployed at 4 from it; then running at 4.
        let sp = "s3://weir/checkpoints/j/savepoints/sp-1".to_string();
        let mut done = observed(Some((JobState::Running, 2)), None);
        done.savepoint = Some(SavepointView::Completed { path: sp.clone(), in_storage: true });
        let p = step(&job(Some(p.status), 1, active), &done);
        assert_eq!(applied(&p), Some((4, Restore::Snapshot(sp))));
        let status = rescaled_to_4();
        assert_eq!((status.phase, deployed_spec(&status).map(|d| d.parallelism)), (Some(Phase::Running), Some(4)));
        // Evaluated at 4: the rescale's outcome is noted, and nothing more is rolled out.
        let within = decision("2026-11-21T12:05:00Z", 4, 4, Reason::WithinBand { load: 0.72 });
        let p = step(&job(Some(status), 1, active), &deciding(4, within));
        assert_eq!((applied(&p), &p.status.pending_operation), (None, &None), "{:?}", p.actions);
        assert_eq!(autoscaler(&p).recent_rescales[0].vertices[0].load_after, Some(0.72));
        assert_eq!(autoscaler(&p).parallelism, Some(4));
    }

    #[test]
    fn a_change_of_spec_parallelism_wins_over_the_autoscalers_choice() {
        // `kubectl scale --replicas 3`: spec.parallelism 2 -> 3 at generation 2.
        let scaled = |s: &mut StreamJobSpec| {
            mode(AutoscalerMode::Active)(s);
            s.parallelism = 3;
        };
        let p = step(&job(Some(rescaled_to_4()), 2, scaled), &observed(Some((JobState::Running, 4)), None));
        let a = autoscaler(&p);
        assert_eq!((a.parallelism, a.spec_parallelism), (None, None), "the choice is dropped");
        let op = p.status.pending_operation.clone().expect("a rescale");
        assert_eq!((op.kind, op.target_parallelism, op.by_autoscaler), (OperationKind::Rescale, Some(3), false));
        let overridden = events(&p).into_iter().find(|(r, _)| *r == "AutoscalerOverridden");
        assert_eq!(overridden.map(|e| e.1), Some("spec.parallelism changed 2 -> 3: it wins over the autoscaler's 4"));
        // The autoscaler starts over from the user's value: its next choice is made over 3.
        let mut status = p.status;
        status.pending_operation = None;
        status.deployed_spec = Some(serde_json::to_string(&job(None, 2, scaled).spec).unwrap());
        let p = step(&job(Some(status), 2, scaled), &deciding(3, scale_up("2026-11-21T12:10:00Z", 3, 5)));
        let a = autoscaler(&p);
        assert_eq!((a.parallelism, a.spec_parallelism), (Some(5), Some(3)));
        assert_eq!(p.status.pending_operation.as_ref().and_then(|o| o.target_parallelism), Some(5));
    }

    #[test]
    fn turning_the_autoscaler_off_returns_the_job_to_spec_parallelism() {
        let disabled = mode(AutoscalerMode::Disabled);
        let offs: [&dyn Fn(&mut StreamJobSpec); 2] = [&disabled, &|s: &mut StreamJobSpec| s.autoscaler = None];
        for off in offs {
            let p = step(&job(Some(rescaled_to_4()), 2, off), &observed(Some((JobState::Running, 4)), None));
            let op = p.status.pending_operation.clone().expect("a rescale");
            assert_eq!((op.kind, op.target_parallelism, op.by_autoscaler), (OperationKind::Rescale, Some(2), false));
            let a = autoscaler(&p);
            assert_eq!(
                (a.mode, a.parallelism, a.decision.as_deref()),
                (AutoscalerMode::Disabled, None, Some("disabled"))
            );
            assert_eq!(a.recent_rescales.len(), 1, "the rescales stay (the budget, should it come back)");
            assert!(!p.actions.contains(&Action::Requeue(SAMPLE_EVERY)), "no more sampling: {:?}", p.actions);
        }
        // Recommend makes no choice either.
        let recommend = mode(AutoscalerMode::Recommend);
        let p = step(&job(Some(rescaled_to_4()), 2, recommend), &observed(Some((JobState::Running, 4)), None));
        assert_eq!(p.status.pending_operation.and_then(|o| o.target_parallelism), Some(2));
    }

    #[test]
    fn no_decision_to_apply_is_no_action_and_a_reason() {
        let active = mode(AutoscalerMode::Active);
        let status = running(active);
        let quiet = |p: &Plan| {
            assert_eq!((applied(p), &p.status.pending_operation), (None, &None), "{:?}", p.actions);
            assert_eq!(autoscaler(p).parallelism, None);
        };
        // The budget spent: a warning, once.
        let spent = decision(NOW, 2, 2, Reason::BudgetSpent { count: 6 });
        let p = step(&job(Some(status.clone()), 1, active), &deciding(2, spent));
        quiet(&p);
        assert_eq!(autoscaler(&p).reason.as_deref(), Some("budget-spent"));
        assert_eq!(autoscaler(&p).decision.as_deref(), Some("budget spent: 6 rescales in the last hour"));
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a, Action::Event { warning: true, reason, .. } if reason == "AutoscalerDecision"))
        );
        // A window not full yet.
        let until = "2026-11-21T12:01:00Z".parse().unwrap();
        let filling = decision(NOW, 2, 2, Reason::NoMetrics(Missing::WindowNotFull { until }));
        let p = step(&job(Some(status.clone()), 1, active), &deciding(2, filling));
        quiet(&p);
        assert_eq!(autoscaler(&p).reason.as_deref(), Some("no-metrics"));
        // No rates in the JobManager's answer yet, a JobManager that does not answer, a job not running.
        let mut no_rates = observed(Some((JobState::Running, 2)), None);
        no_rates.autoscaler = Some(Evaluation::NoMetrics);
        let cases = [
            (no_rates, "no-metrics", NO_RATES),
            (observed(None, None), "jobmanager-unreachable", "not evaluated: the JobManager does not answer"),
            (
                observed(Some((JobState::Restarting, 2)), None),
                "job-not-running",
                "not evaluated: the job is restarting",
            ),
        ];
        for (o, reason, line) in cases {
            let p = step(&job(Some(status.clone()), 1, active), &o);
            quiet(&p);
            let a = autoscaler(&p);
            assert_eq!((a.reason.as_deref(), a.decision.as_deref()), (Some(reason), Some(line)));
            assert!(events(&p).iter().all(|(r, _)| *r != "AutoscalerDecision"), "{:?}", p.actions);
        }
    }

    #[test]
    fn a_failed_autoscaler_rescale_is_reported_counted_and_not_retried() {
        let active = mode(AutoscalerMode::Active);
        let d = scale_up(NOW, 2, 4);
        let p = step(&job(Some(running(active)), 1, active), &deciding(2, d.clone()));
        let mut failed = observed(Some((JobState::Running, 2)), None);
        failed.savepoint = Some(SavepointView::Failed("storage unreachable".into()));
        let p = step(&job(Some(p.status), 1, active), &failed);
        assert_eq!((p.status.phase, applied(&p)), (Some(Phase::Running), None), "the job runs on at 2");
        assert_eq!(p.status.failed_generation, None, "the user's generation did not fail");
        let a = autoscaler(&p);
        assert_eq!(a.parallelism, Some(2), "back to what runs");
        assert_eq!(a.recent_rescales.len(), 1, "it counts against the budget");
        assert_eq!(a.recent_rescales[0].failure.as_deref(), Some("the savepoint failed: storage unreachable"));
        assert_eq!(condition(&p.status, "SnapshotHealthy"), ("False", "SavepointFailed"));
        // The observer's decision, given again a reconciliation later: not applied again.
        let p = step(&job(Some(p.status), 1, active), &deciding(2, d));
        assert_eq!((applied(&p), &p.status.pending_operation), (None, &None), "{:?}", p.actions);
        let line = autoscaler(&p).decision.clone().unwrap();
        assert!(line.ends_with("(not applied: decided before the last rescale)"), "{line}");
        assert_eq!(autoscaler(&p).recent_rescales.len(), 1);
        // A new decision (decide() holds it back for stabilization and a window first): applied.
        let p = step(&job(Some(p.status), 1, active), &deciding(2, scale_up("2026-11-21T12:03:00Z", 2, 4)));
        assert_eq!(p.status.pending_operation.map(|o| (o.target_parallelism, o.by_autoscaler)), Some((Some(4), true)));
    }

    #[test]
    fn a_change_of_spec_autoscaler_alone_redeploys_nothing() {
        let status = running(mode(AutoscalerMode::Recommend));
        let tuned = |s: &mut StreamJobSpec| {
            s.autoscaler =
                Some(AutoscalerSpec { mode: AutoscalerMode::Active, target_utilization: 0.6, ..Default::default() })
        };
        let p = step(&job(Some(status), 2, tuned), &observed(Some((JobState::Running, 2)), None));
        assert_eq!((applied(&p), &p.status.pending_operation), (None, &None), "{:?}", p.actions);
        let deployed = deployed_spec(&p.status).unwrap();
        assert_eq!(deployed.autoscaler.map(|a| a.target_utilization), Some(0.6), "remembered as deployed");
        assert_eq!(autoscaler(&p).mode, AutoscalerMode::Active);
    }

    #[test]
    fn the_scale_subresource_finds_the_taskmanagers_in_status_selector() {
        let p = step(&job(None, 1, |_| {}), &observed(None, None));
        let selector = p.status.selector.expect("status.selector");
        assert!(selector.contains("app.kubernetes.io/instance=orders"), "{selector}");
        assert!(selector.contains("app.kubernetes.io/component=taskmanager"), "{selector}");
    }
}
