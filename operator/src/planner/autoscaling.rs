//! The autoscaler in the plan: [`crate::autoscaler`] decides, this part of
//! the planner reports each decision in `status.autoscaler` and, in `active`
//! mode, makes a decided rescale the job's effective parallelism, which the
//! planner then rolls out through its one rescale (the write-ahead
//! `pendingOperation`: in place while the job runs, `planner/rescale.rs`), as
//! it would a change of `spec.parallelism`.
//!
//! # Who owns the parallelism
//!
//! * `spec.parallelism` is the user's word, and the autoscaler's starting
//!   point: every vertex runs at it until the autoscaler chooses.
//! * In `active` mode the autoscaler's choice is the effective parallelism:
//!   each vertex's own, `status.autoscaler.vertexParallelism` (by vertex uid,
//!   every operator of a chain at its chain's recommendation), and the
//!   largest of them, `status.autoscaler.parallelism`, as the job's default.
//!   With it the status records the `spec.parallelism` it was made over
//!   (`status.autoscaler.specParallelism`). It is rolled out as a rescale
//!   that names every vertex (a `RescaleRequest` with `vertices`; a redeploy
//!   passes them as `--vertex-parallelism`), in place when the job runs.
//! * A `spec.parallelism` that differs from that record is the user's change
//!   (`kubectl edit` or `apply`, or `kubectl scale`, which writes
//!   `spec.parallelism` through the scale subresource): the user's value wins,
//!   the choice is dropped (an `AutoscalerOverridden` event says so), every
//!   vertex goes back to `spec.parallelism` (a rescale, in place when the job
//!   runs, that names no vertex), and the autoscaler starts over from there.
//! * `recommend` and `disabled` (or no `spec.autoscaler`) make no choice: the
//!   job runs at `spec.parallelism`, so turning `active` off returns it there.
//! * A rescale the autoscaler decided that fails (its savepoint, say, or the
//!   TaskManagers it needs not coming up) leaves the job as it runs: the
//!   choice goes back to the deployed parallelism, the
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

use std::collections::BTreeMap;
use std::time::Duration;

use weir_api::rest::JobState;

use super::{Action, Planner, deployed_spec, parallelism_in_words};
use crate::autoscaler::{Action as Scaling, Decision, recent_rescales, record_outcome};
use crate::crd::{AutoscalerMode, AutoscalerStatus, DesiredState};
use crate::diff::{ChangeKind, diff};

/// The longest time between two looks at (and samples of) a job whose
/// autoscaler is on: with a metrics window of 60 s, four samples to decide
/// on (the default window, 30 s, is sampled every 7.5 s).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// The shortest: a look costs the JobManager a request and the API server a status write.
const SAMPLE_AT_LEAST_EVERY: Duration = Duration::from_secs(2);

/// How often a job whose autoscaler is on is looked at, and sampled, so
/// that its metrics window fills: four samples a window (a decision needs
/// three over half the window at least), between 2 s and [`SAMPLE_EVERY`].
pub fn sample_every(metrics_window: Duration) -> Duration {
    (metrics_window / 4).clamp(SAMPLE_AT_LEAST_EVERY, SAMPLE_EVERY)
}

/// The span the JobManager's rates cover in each sample: the time since the
/// sample before ([`sample_every`]), so that the window's samples are
/// independent and "75% of the samples show pressure" means 75% of the time;
/// rates over the whole metrics window in every sample would smooth pressure
/// away and lag a window behind.
pub fn rate_window(metrics_window: Duration) -> Duration {
    sample_every(metrics_window)
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
            self.vertices = a.vertex_parallelism.clone();
            return;
        }
        (a.parallelism, a.spec_parallelism) = (None, None);
        a.vertex_parallelism.clear();
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
        status.vertex_parallelism = previous.vertex_parallelism;
        let line = decision.to_string();
        if let (AutoscalerMode::Active, Scaling::Rescale { job_parallelism, per_vertex }) = (mode, &decision.action) {
            let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
            let parallelism = int(*job_parallelism);
            let vertices: BTreeMap<String, i32> = per_vertex.iter().map(|(uid, p)| (uid.clone(), int(*p))).collect();
            match self.why_not_applied(decision, parallelism, &vertices, &rescales) {
                Some(why) => status.decision = Some(format!("{line} (not applied: {why})")),
                None => {
                    rescales.extend(decision.rescale_record().map(|r| r.to_status(line.clone())));
                    (status.parallelism, status.spec_parallelism) =
                        (Some(parallelism), Some(self.job.spec.parallelism));
                    status.vertex_parallelism = vertices.clone();
                    self.spec.parallelism = parallelism;
                    self.vertices = vertices;
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
        vertices: &BTreeMap<String, i32>,
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
        if deployed.parallelism == parallelism && self.status.deployed_vertex_parallelism == *vertices {
            return Some(format!("the job is deployed at {} already", parallelism_in_words(parallelism, vertices)));
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
        let deployed_vertices = self.status.deployed_vertex_parallelism.clone();
        let Some(a) = self.status.autoscaler.as_mut() else { return };
        if let Some(last) = a.recent_rescales.last_mut() {
            last.failure = Some(why.to_string());
        }
        // A choice the user's spec overrode meanwhile is gone already.
        if a.parallelism.is_some() {
            a.parallelism = deployed;
            a.vertex_parallelism = deployed_vertices.clone();
            self.spec.parallelism = deployed.unwrap_or(self.spec.parallelism);
            self.vertices = deployed_vertices;
        }
    }

    /// While the autoscaler is on, a look every [`sample_every`] at most, so that its window fills.
    pub(super) fn sample_often(&mut self) {
        if !self.autoscaling || self.job.spec.state == DesiredState::Suspended {
            return;
        }
        let window = self.job.spec.autoscaler.as_ref().and_then(|a| weir_api::parse_duration(&a.metrics_window).ok());
        let every = sample_every(window.unwrap_or(4 * SAMPLE_EVERY));
        if !self.actions.iter().any(|a| matches!(a, Action::Requeue(after) if *after <= every)) {
            self.actions.retain(|a| !matches!(a, Action::Requeue(_)));
            self.actions.push(Action::Requeue(every));
        }
    }
}

const NO_RATES: &str = "no metrics yet: the JobManager reports no rates over a window yet";

/// What a status's vertices recommend, each.
fn recommended(status: &AutoscalerStatus) -> Vec<i32> {
    status.vertices.iter().map(|v| v.recommended).collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{applied, at, condition, job, observed, refused, running, slots, step};
    use super::super::{Observed, Plan, SavepointView};
    use super::*;
    use crate::autoscaler::{Missing, Reason, VertexDecision};
    use crate::crd::{AutoscalerSpec, OperationKind, StreamJobSpec, StreamJobStatus};
    use crate::phase::Phase;
    use weir_api::rest::RescaleRequest;

    const NOW: &str = "2026-11-21T12:00:00Z";

    fn mode(mode: AutoscalerMode) -> impl Fn(&mut StreamJobSpec) + Copy {
        move |s: &mut StreamJobSpec| s.autoscaler = Some(AutoscalerSpec { mode, ..Default::default() })
    }

    /// A vertex (a chain of the operators `uids`) of a decision.
    fn vertex(name: &str, uids: &[&str], current: u32, recommended: u32, reason: Reason) -> VertexDecision {
        let load = match &reason {
            Reason::ScaleUp { load, .. } | Reason::ScaleDown { load, .. } | Reason::WithinBand { load } => Some(*load),
            _ => None,
        };
        VertexDecision {
            name: name.into(),
            uids: uids.iter().map(|u| u.to_string()).collect(),
            current,
            recommended,
            true_rate: Some(1000.0),
            target_rate: Some(1400.0),
            utilization: Some(0.98),
            load,
            reason,
        }
    }

    /// The decision on a job of one vertex, `orders`, at `current`, made `at`.
    fn decision(at: &str, current: u32, recommended: u32, reason: Reason) -> Decision {
        Decision::new(at.parse().unwrap(), vec![vertex("orders", &["1-orders"], current, recommended, reason)])
    }

    /// The decision on a job of two vertices at 2, made `at`: the source
    /// `orders` within band, the chain `enrich -> sink` scaled up to 4.
    fn two_vertices(at: &str) -> Decision {
        let source = vertex("orders", &["1-orders"], 2, 2, Reason::WithinBand { load: 0.7 });
        let chain = vertex("enrich -> sink", &["2-enrich", "3-sink"], 2, 4, Reason::ScaleUp { to: 4, load: 1.4 });
        Decision::new(at.parse().unwrap(), vec![source, chain])
    }

    /// The assignment [`two_vertices`] rescales to.
    fn per_vertex() -> BTreeMap<String, i32> {
        [("1-orders".to_string(), 2), ("2-enrich".to_string(), 4), ("3-sink".to_string(), 4)].into()
    }

    fn scale_up(at: &str, from: u32, to: u32) -> Decision {
        decision(at, from, to, Reason::ScaleUp { to, load: 1.4 })
    }

    /// The JobManager answers `running` at `parallelism` (on as many slots); the autoscaler decided `d`.
    fn deciding(parallelism: i32, d: Decision) -> Observed {
        let mut o = at(observed(Some((JobState::Running, parallelism)), None), &d.at.to_string());
        o.autoscaler = Some(Evaluation::Decided(d));
        o
    }

    /// The JobManager answers `running` at `parallelism` on 4 TaskManagers of
    /// a slot, at `now`, with the rescale's trigger `fate`.
    fn on_4_slots(parallelism: i32, fate: Option<SavepointView>, now: &str) -> Observed {
        at(slots(observed(Some((JobState::Running, parallelism)), fate), 4), now)
    }

    /// `spec` with TaskManagers of 4 slots: at 2, the one TaskManager has room for 4.
    fn four_slots(spec: impl Fn(&mut StreamJobSpec) + Copy) -> impl Fn(&mut StreamJobSpec) + Copy {
        move |s: &mut StreamJobSpec| {
            spec(s);
            s.task_manager.slots = 4;
        }
    }

    /// The JobManager answers `running` at `parallelism` on one TaskManager of 4 slots (as [`four_slots`]).
    fn on_one_of_4(parallelism: i32, fate: Option<SavepointView>, now: &str) -> Observed {
        let mut o = at(observed(Some((JobState::Running, parallelism)), fate), now);
        if let Some(j) = &mut o.job {
            (j.taskmanagers, j.slots) = (1, 4);
        }
        o
    }

    fn done() -> Option<SavepointView> {
        Some(SavepointView::Completed { path: "s3://weir/checkpoints/j/savepoints/sp-1".into(), in_storage: true })
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

    /// Four samples a window, so that a short window fills too (a decision
    /// needs three over half of it), never more often than every 2 s.
    #[test]
    fn a_job_is_sampled_four_times_a_window() {
        let s = Duration::from_secs;
        let every: Vec<Duration> = [60, 15, 4, 600].map(|w| sample_every(s(w))).into();
        assert_eq!(every, [s(15), Duration::from_millis(3750), s(2), s(15)]);
        let short = |s: &mut StreamJobSpec| {
            let window = "15s".to_string();
            s.autoscaler =
                Some(AutoscalerSpec { mode: AutoscalerMode::Recommend, metrics_window: window, ..Default::default() })
        };
        let p = step(&job(Some(running(short)), 1, short), &deciding(2, scale_up(NOW, 2, 4)));
        assert!(p.actions.contains(&Action::Requeue(Duration::from_millis(3750))), "{:?}", p.actions);
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
        let every = sample_every(Duration::from_secs(30));
        assert!(p.actions.contains(&Action::Requeue(every)), "sampled four times a default window: {:?}", p.actions);
        // The same decision with other figures a requeue later: no second event.
        let later = decision("2026-11-21T12:00:15Z", 2, 4, Reason::ScaleUp { to: 4, load: 1.5 });
        let p = step(&job(Some(p.status), 1, recommend), &deciding(2, later));
        assert_eq!(autoscaler(&p).last_evaluation.as_deref(), Some("2026-11-21T12:00:15Z"));
        assert_eq!(events(&p), [], "{:?}", p.actions);
    }

    /// A job running at 2 that an active autoscaler rescaled to 4 (in place,
    /// two TaskManagers added first): its status.
    fn rescaled_to_4() -> StreamJobStatus {
        let active = mode(AutoscalerMode::Active);
        let p = step(&job(Some(running(active)), 1, active), &deciding(2, scale_up(NOW, 2, 4)));
        assert_eq!(p.actions.iter().filter(|a| matches!(a, Action::ScaleTaskManagers(4))).count(), 1);
        let p = step(&job(Some(p.status), 1, active), &on_4_slots(2, None, "2026-11-21T12:00:10Z"));
        let p = step(&job(Some(p.status), 1, active), &on_4_slots(4, done(), "2026-11-21T12:00:20Z"));
        step(&job(Some(p.status), 1, active), &on_4_slots(4, None, "2026-11-21T12:00:30Z")).status
    }

    #[test]
    fn active_rescales_each_vertex_in_place_to_its_own_parallelism() {
        let active = four_slots(mode(AutoscalerMode::Active));
        let mut o = on_one_of_4(2, None, NOW);
        o.autoscaler = Some(Evaluation::Decided(two_vertices(NOW)));
        let p = step(&job(Some(running(active)), 1, active), &o);
        let op = p.status.pending_operation.clone().expect("written before the rescale is asked for");
        assert_eq!((op.kind, op.target_parallelism, op.by_autoscaler), (OperationKind::Rescale, Some(4), true));
        assert_eq!((op.generation, &op.target_vertex_parallelism), (1, &per_vertex()), "no new generation");
        assert_eq!(op.in_place.map(|i| i.step), Some(crate::crd::InPlaceStep::Rescale), "4 slots are there");
        let request = RescaleRequest {
            parallelism: Some(4),
            vertices: [("1-orders".to_string(), 2), ("2-enrich".to_string(), 4), ("3-sink".to_string(), 4)].into(),
            ..Default::default()
        };
        assert!(p.actions.contains(&Action::Rescale(request)), "every uid of a chain at its chain's: {:?}", p.actions);
        assert_eq!(p.status.phase, Some(Phase::Rescaling));
        let a = autoscaler(&p);
        assert_eq!((a.parallelism, a.spec_parallelism, &a.vertex_parallelism), (Some(4), Some(2), &per_vertex()));
        let r = &a.recent_rescales[0];
        assert_eq!((r.from, r.to, r.time.as_str()), (2, 4, NOW));
        let each: Vec<(&str, i32, i32)> = r.vertices.iter().map(|v| (v.name.as_str(), v.from, v.to)).collect();
        assert_eq!(each, [("enrich -> sink", 2, 4), ("orders", 2, 2)], "each vertex to its own");
        let line = "the autoscaler: rescaling 2 -> 4 (1-orders: 2, 2-enrich: 4, 3-sink: 4) in place";
        assert!(events(&p).contains(&("Rescale", line)), "{:?}", events(&p));
        // Completed: the per-vertex parallelism is what runs, in the same deployment.
        let p = step(&job(Some(p.status), 1, active), &on_one_of_4(4, done(), "2026-11-21T12:00:20Z"));
        assert_eq!((applied(&p), &p.status.pending_operation, p.status.phase), (None, &None, Some(Phase::Running)));
        assert_eq!(p.status.deployed_vertex_parallelism, per_vertex());
        assert_eq!(deployed_spec(&p.status).map(|d| d.parallelism), Some(4));
        // Evaluated again within band: the rescale's outcome is noted, and nothing more is rolled out.
        let within = decision("2026-11-21T12:05:00Z", 4, 4, Reason::WithinBand { load: 0.72 });
        let mut o = on_one_of_4(4, None, "2026-11-21T12:05:00Z");
        o.autoscaler = Some(Evaluation::Decided(within));
        let p = step(&job(Some(p.status), 1, active), &o);
        assert_eq!((applied(&p), &p.status.pending_operation), (None, &None), "{:?}", p.actions);
        assert_eq!((autoscaler(&p).parallelism, &autoscaler(&p).vertex_parallelism), (Some(4), &per_vertex()));
    }

    #[test]
    fn an_upgrade_redeploys_at_the_autoscalers_per_vertex_parallelism() {
        let active = four_slots(mode(AutoscalerMode::Active));
        let mut o = on_one_of_4(2, None, NOW);
        o.autoscaler = Some(Evaluation::Decided(two_vertices(NOW)));
        let p = step(&job(Some(running(active)), 1, active), &o);
        let p = step(&job(Some(p.status), 1, active), &on_one_of_4(4, done(), "2026-11-21T12:00:20Z"));
        // A new image (upgradeMode savepoint): the redeploy carries each vertex's parallelism.
        let upgraded = |s: &mut StreamJobSpec| (active(s), s.image = "weir:2".into()).1;
        let p = step(&job(Some(p.status), 2, upgraded), &on_one_of_4(4, None, "2026-11-21T12:01:00Z"));
        assert_eq!(p.status.pending_operation.as_ref().map(|o| o.kind), Some(OperationKind::Upgrade));
        let p = step(&job(Some(p.status), 2, upgraded), &on_one_of_4(4, done(), "2026-11-21T12:01:10Z"));
        let deployed = p.actions.iter().find_map(|a| match a {
            Action::Apply(d) => Some((d.parallelism, d.vertices.clone(), d.taskmanagers(1))),
            _ => None,
        });
        assert_eq!(deployed, Some((4, per_vertex(), 4)), "4 TaskManagers of a slot needed: {:?}", p.actions);
    }

    #[test]
    fn a_change_of_spec_parallelism_wins_over_the_autoscalers_choice() {
        // `kubectl scale --replicas 3`: spec.parallelism 2 -> 3 at generation 2.
        let scaled = |s: &mut StreamJobSpec| {
            mode(AutoscalerMode::Active)(s);
            s.parallelism = 3;
        };
        let p = step(&job(Some(rescaled_to_4()), 2, scaled), &on_4_slots(4, None, "2026-11-21T12:01:00Z"));
        let a = autoscaler(&p);
        assert_eq!((a.parallelism, a.spec_parallelism, a.vertex_parallelism.len()), (None, None, 0), "dropped");
        let op = p.status.pending_operation.clone().expect("a rescale");
        assert_eq!((op.kind, op.target_parallelism, op.by_autoscaler), (OperationKind::Rescale, Some(3), false));
        assert!(
            p.actions.contains(&Action::Rescale(RescaleRequest::to(3))),
            "in place, no vertex named: {:?}",
            p.actions
        );
        let overridden = events(&p).into_iter().find(|(r, _)| *r == "AutoscalerOverridden");
        assert_eq!(overridden.map(|e| e.1), Some("spec.parallelism changed 2 -> 3: it wins over the autoscaler's 4"));
        let p = step(&job(Some(p.status), 2, scaled), &on_4_slots(3, done(), "2026-11-21T12:01:10Z"));
        assert_eq!(
            (deployed_spec(&p.status).map(|d| d.parallelism), p.status.deployed_vertex_parallelism.len()),
            (Some(3), 0)
        );
        assert!(p.actions.contains(&Action::ScaleTaskManagers(3)), "the idle one goes: {:?}", p.actions);
        // The autoscaler starts over from the user's value: its next choice is made over 3.
        let mut o = on_4_slots(3, None, "2026-11-21T12:10:00Z");
        o.autoscaler = Some(Evaluation::Decided(scale_up("2026-11-21T12:10:00Z", 3, 4)));
        let p = step(&job(Some(p.status), 2, scaled), &o);
        let a = autoscaler(&p);
        assert_eq!((a.parallelism, a.spec_parallelism), (Some(4), Some(3)));
        assert_eq!(p.status.pending_operation.as_ref().and_then(|o| o.target_parallelism), Some(4));
    }

    #[test]
    fn turning_the_autoscaler_off_returns_the_job_to_spec_parallelism() {
        let disabled = mode(AutoscalerMode::Disabled);
        let offs: [&dyn Fn(&mut StreamJobSpec); 2] = [&disabled, &|s: &mut StreamJobSpec| s.autoscaler = None];
        for off in offs {
            let p = step(&job(Some(rescaled_to_4()), 2, off), &on_4_slots(4, None, "2026-11-21T12:01:00Z"));
            let op = p.status.pending_operation.clone().expect("a rescale");
            assert_eq!((op.kind, op.target_parallelism, op.by_autoscaler), (OperationKind::Rescale, Some(2), false));
            assert!(p.actions.contains(&Action::Rescale(RescaleRequest::to(2))), "{:?}", p.actions);
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
        let p = step(&job(Some(rescaled_to_4()), 2, recommend), &on_4_slots(4, None, "2026-11-21T12:01:00Z"));
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
        let active = four_slots(mode(AutoscalerMode::Active));
        let d = scale_up(NOW, 2, 4);
        let mut o = on_one_of_4(2, None, NOW);
        o.autoscaler = Some(Evaluation::Decided(d.clone()));
        let p = step(&job(Some(running(active)), 1, active), &o);
        assert!(p.actions.iter().any(|a| matches!(a, Action::Rescale(_))), "{:?}", p.actions);
        let failed = on_one_of_4(2, Some(SavepointView::Failed("storage unreachable".into())), NOW);
        let p = step(&job(Some(p.status), 1, active), &failed);
        assert_eq!((p.status.phase, applied(&p)), (Some(Phase::Running), None), "the job runs on at 2");
        assert_eq!(p.status.failed_generation, None, "the user's generation did not fail");
        let a = autoscaler(&p);
        assert_eq!((a.parallelism, a.vertex_parallelism.len()), (Some(2), 0), "back to what runs");
        assert_eq!(a.recent_rescales.len(), 1, "it counts against the budget");
        assert_eq!(a.recent_rescales[0].failure.as_deref(), Some("the rescale failed: storage unreachable"));
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

    /// A JobManager too old for per-vertex parallelism (it cannot read `vertices`):
    /// aborted and counted, never redeployed with flags it would not know.
    #[test]
    fn a_per_vertex_rescale_a_jobmanager_does_not_understand_is_aborted_and_counted() {
        let active = four_slots(mode(AutoscalerMode::Active));
        let mut o = on_one_of_4(2, None, NOW);
        o.autoscaler = Some(Evaluation::Decided(two_vertices(NOW)));
        let p = step(&job(Some(running(active)), 1, active), &o);
        let p = step(&job(Some(refused(p.status, 422)), 1, active), &on_one_of_4(2, None, NOW));
        assert_eq!((p.status.pending_operation.clone(), p.status.phase), (None, Some(Phase::Running)));
        assert!(!p.actions.iter().any(|a| matches!(a, Action::TriggerSavepoint { .. } | Action::Apply(_))));
        let a = autoscaler(&p);
        assert_eq!((a.parallelism, a.vertex_parallelism.len()), (Some(2), 0));
        let failure = a.recent_rescales[0].failure.clone().unwrap_or_default();
        assert!(failure.contains("does not know per-vertex rescales (422"), "{failure}");
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
