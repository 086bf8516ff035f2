//! What a spec change asks of the operator, as a pure function of the spec
//! deployed last and the spec now (Flink's operator calls it the diff type):
//! the largest kind of change wins.

use crate::crd::{DesiredState, StreamJobSpec};

/// Kinds of change, from the least to the most disruptive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Nothing the running job needs to know about (savepoint retention, say).
    Ignore,
    /// Only the parallelism: savepoint, then redeploy at the new parallelism from it.
    Scale,
    /// Anything the job's processes see: redeploy per `upgradeMode`.
    Upgrade,
}

/// The difference between two specs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecDiff {
    pub kind: ChangeKind,
    /// The changed fields (their paths), for events and status messages.
    pub fields: Vec<&'static str>,
    /// `running` <-> `suspended`, when it changed.
    pub state: Option<DesiredState>,
    /// `savepointTriggerNonce` changed.
    pub savepoint_requested: bool,
    /// `restartNonce` changed.
    pub restart_requested: bool,
}

impl SpecDiff {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Classifies the change from `old` (deployed) to `new`.
pub fn diff(old: &StreamJobSpec, new: &StreamJobSpec) -> SpecDiff {
    let mut d = SpecDiff {
        kind: ChangeKind::Ignore,
        fields: Vec::new(),
        state: None,
        savepoint_requested: false,
        restart_requested: false,
    };
    let mut changed = |field: &'static str, kind: ChangeKind, differs: bool| {
        if differs {
            d.fields.push(field);
            d.kind = d.kind.max(kind);
        }
    };
    use ChangeKind::*;
    changed("spec.parallelism", Scale, old.parallelism != new.parallelism);
    changed("spec.image", Upgrade, old.image != new.image);
    changed("spec.pipeline", Upgrade, old.pipeline != new.pipeline);
    changed("spec.args", Upgrade, old.args != new.args);
    changed("spec.maxParallelism", Upgrade, old.max_parallelism != new.max_parallelism);
    changed("spec.jobManager", Upgrade, old.job_manager != new.job_manager);
    changed("spec.taskManager", Upgrade, old.task_manager != new.task_manager);
    changed("spec.checkpointing", Upgrade, old.checkpointing != new.checkpointing);
    changed("spec.storage", Upgrade, old.storage != new.storage);
    changed("spec.podTemplate", Upgrade, old.pod_template != new.pod_template);
    // Where savepoints go is the JobManager's to know; the rest is the operator's.
    let dir = |s: &StreamJobSpec| s.savepoints.as_ref().and_then(|sp| sp.dir.clone());
    changed("spec.savepoints.dir", Upgrade, dir(old) != dir(new));
    // No `savepoints` section is the same as an empty one (history limit 5).
    let rest = |s: &StreamJobSpec| {
        s.savepoints.as_ref().map_or((None, 5, None), |sp| (sp.periodic.clone(), sp.history_limit, sp.timeout.clone()))
    };
    changed("spec.savepoints", Ignore, rest(old) != rest(new));
    changed("spec.upgradeMode", Ignore, old.upgrade_mode != new.upgrade_mode);
    changed("spec.savepointOnDelete", Ignore, old.savepoint_on_delete != new.savepoint_on_delete);
    changed("spec.initialSavepoint", Ignore, old.initial_savepoint != new.initial_savepoint);
    changed("spec.state", Ignore, old.state != new.state);
    changed("spec.savepointTriggerNonce", Ignore, old.savepoint_trigger_nonce != new.savepoint_trigger_nonce);
    changed("spec.restartNonce", Ignore, old.restart_nonce != new.restart_nonce);
    // The autoscaler is the operator's: its parallelism reaches the job as `parallelism`.
    changed("spec.autoscaler", Ignore, old.autoscaler != new.autoscaler);
    d.state = (old.state != new.state).then_some(new.state);
    d.savepoint_requested = old.savepoint_trigger_nonce != new.savepoint_trigger_nonce;
    d.restart_requested = old.restart_nonce != new.restart_nonce;
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::test_spec;

    #[test]
    fn the_largest_kind_of_change_wins() {
        let old = test_spec();
        type Case = (fn(&mut StreamJobSpec), ChangeKind, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (|_| {}, ChangeKind::Ignore, vec![]),
            (|s| s.parallelism = 3, ChangeKind::Scale, vec!["spec.parallelism"]),
            (|s| s.image = "weir:2".into(), ChangeKind::Upgrade, vec!["spec.image"]),
            (
                |s| {
                    s.parallelism = 8;
                    s.image = "weir:2".into();
                },
                ChangeKind::Upgrade,
                vec!["spec.parallelism", "spec.image"],
            ),
            (|s| s.task_manager.slots = 4, ChangeKind::Upgrade, vec!["spec.taskManager"]),
            (
                |s| {
                    s.savepoints = Some(crate::crd::SavepointsSpec {
                        dir: Some("s3://other/savepoints".into()),
                        periodic: None,
                        history_limit: 5,
                        timeout: None,
                    })
                },
                ChangeKind::Upgrade,
                vec!["spec.savepoints.dir"],
            ),
            (
                |s| {
                    s.savepoints = Some(crate::crd::SavepointsSpec {
                        dir: None,
                        periodic: Some("6h".into()),
                        history_limit: 5,
                        timeout: None,
                    })
                },
                ChangeKind::Ignore,
                vec!["spec.savepoints"],
            ),
            (|s| s.restart_nonce += 1, ChangeKind::Ignore, vec!["spec.restartNonce"]),
            (|s| s.state = DesiredState::Suspended, ChangeKind::Ignore, vec!["spec.state"]),
            (
                |s| {
                    s.autoscaler = Some(crate::crd::AutoscalerSpec {
                        mode: crate::crd::AutoscalerMode::Active,
                        target_utilization: 0.6,
                        ..Default::default()
                    })
                },
                ChangeKind::Ignore,
                vec!["spec.autoscaler"],
            ),
        ];
        for (change, kind, fields) in cases {
            let mut new = old.clone();
            change(&mut new);
            let d = diff(&old, &new);
            assert_eq!((d.kind, d.fields.clone()), (kind, fields), "{d:?}");
        }
        let mut new = old.clone();
        new.state = DesiredState::Suspended;
        new.savepoint_trigger_nonce = 7;
        let d = diff(&old, &new);
        assert_eq!((d.state, d.savepoint_requested, d.restart_requested), (Some(DesiredState::Suspended), true, false));
    }
}
