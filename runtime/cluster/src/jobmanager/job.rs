//! The job as the JobManager plans it: its graph built at one parallelism
//! (what scheduling and checkpointing need of it), and the snapshots it may
//! start from.

use std::collections::BTreeMap;

use weir_api::Restore;
use weir_core::checkpoint::coordinator::{CheckpointConfig, JobShape};
use weir_core::checkpoint::metadata::{RestoreError, RestoredSnapshot};
use weir_core::checkpoint::routing::CommandRouter;
use weir_core::graph::ChainLayout;
use weir_core::metrics::MetricsSnapshot;

use super::{JobManagerConfig, JobManagerError};
use crate::protocol::JobSpec;
use crate::{BuiltJob, JobBuilder};

/// The job as built at one parallelism: what scheduling and checkpointing need.
#[derive(Clone)]
pub(super) struct Plan {
    pub layout: Vec<ChainLayout>,
    pub shape: JobShape,
    /// Which tasks each checkpoint command goes to.
    pub router: CommandRouter,
    pub max_parallelism: u32,
    pub checkpointing: Option<CheckpointConfig>,
}

impl Plan {
    /// The plan, with its checkpoints marked as taken by `deployment`.
    pub fn deployed_as(mut self, deployment: Option<String>) -> Plan {
        if let Some(cp) = &mut self.checkpointing {
            cp.deployment = deployment;
        }
        self
    }

    pub fn of(spec: &JobSpec, builder: &dyn JobBuilder) -> Result<Plan, String> {
        let BuiltJob { graph, mut checkpointing } = crate::build(builder, spec)?;
        graph.validate().map_err(|e| e.to_string())?;
        if let Some(cp) = &mut checkpointing {
            cp.parallelism = Some(spec.parallelism);
        }
        let layout = graph.layout();
        Ok(Plan {
            router: CommandRouter::new(&layout),
            layout,
            shape: graph.checkpoint_shape(),
            max_parallelism: graph.max_parallelism,
            checkpointing,
        })
    }

    pub fn empty_metrics(&self) -> Vec<Vec<MetricsSnapshot>> {
        self.layout
            .iter()
            .map(|c| vec![MetricsSnapshot { pending_records: -1, ..Default::default() }; c.parallelism])
            .collect()
    }

    /// The `(chain, subtask)` of task number `task`.
    pub fn task_of(&self, task: usize) -> Option<(usize, usize)> {
        self.layout
            .iter()
            .enumerate()
            .find(|(_, c)| (c.first_task..c.first_task + c.parallelism).contains(&task))
            .map(|(i, c)| (i, task - c.first_task))
    }
}

/// A snapshot to restore: its URI and checkpoint id.
pub(super) type RestorePoint = (String, u64);

/// Where the first attempt starts from: the deployment's own latest
/// checkpoint when it has one (the JobManager was restarted), else what
/// `config.restore` says.
pub(super) fn initial_restore(
    config: &JobManagerConfig,
    builder: &dyn JobBuilder,
    plan: &Plan,
) -> Result<Option<RestorePoint>, JobManagerError> {
    let own = own_latest(config, plan).map_err(JobManagerError::Restore)?;
    let restore = match &config.restore {
        _ if own.is_some() => own,
        Restore::Fresh => None,
        Restore::Snapshot(uri) => Some(
            open(builder, &config.spec, plan, Some(uri), true)
                .map_err(JobManagerError::Restore)?
                .ok_or_else(|| JobManagerError::Restore(format!("{uri}: no snapshot there")))?,
        ),
        Restore::LatestOrFresh if plan.checkpointing.is_none() => None,
        Restore::Latest | Restore::LatestOrFresh => match open(builder, &config.spec, plan, None, true) {
            Ok(Some(r)) => Some(r),
            Ok(None) if config.restore == Restore::LatestOrFresh => None,
            Ok(None) => {
                let cp = plan.checkpointing.as_ref().expect("a checkpointed plan");
                return Err(JobManagerError::Restore(format!(
                    "no completed checkpoint or savepoint under {}",
                    cp.storage.uri(&config.spec.name)
                )));
            }
            Err(e) => return Err(JobManagerError::Restore(e)),
        },
    };
    if let Some(r) = &restore {
        tracing::info!("restoring from {}", r.0);
    }
    Ok(restore)
}

/// Opens `uri`, or the latest snapshot when `None` (`Ok(None)`: there is none),
/// and checks that it fits the plan; with `verify`, also that its state
/// files are whole (one read of the whole snapshot). Verified: what the job
/// first starts from, and a rescale's savepoint before tasks restart from it
/// (on the storage thread, see [`super::storage`]). Not verified: the
/// checkpoints a failover restarts from, which this JobManager just took.
pub(super) fn open(
    builder: &dyn JobBuilder,
    spec: &JobSpec,
    plan: &Plan,
    uri: Option<&str>,
    verify: bool,
) -> Result<Option<RestorePoint>, String> {
    let snapshot = match uri {
        Some(uri) => builder.restore(spec, uri)?,
        None => {
            let Some(cp) = &plan.checkpointing else {
                return Err("restoring needs a checkpoint directory".into());
            };
            match RestoredSnapshot::latest(cp.storage.clone(), &spec.name) {
                Ok(s) => s,
                Err(RestoreError::NoCheckpoint { .. }) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let parallelisms: Vec<usize> = plan.shape.operators.values().copied().collect();
    snapshot.check_compatible(plan.max_parallelism, &parallelisms).map_err(|e| e.to_string())?;
    if verify {
        snapshot.verify().map_err(|e| e.to_string())?;
    }
    Ok(Some((snapshot.uri(), snapshot.metadata.checkpoint_id)))
}

/// The latest checkpoint, when this deployment took it.
fn own_latest_snapshot(config: &JobManagerConfig, plan: &Plan) -> Result<Option<RestoredSnapshot>, String> {
    let (Some(deployment), Some(cp)) = (&config.deployment, &plan.checkpointing) else { return Ok(None) };
    let latest = match RestoredSnapshot::latest(cp.storage.clone(), &config.spec.name) {
        Ok(s) => s,
        Err(RestoreError::NoCheckpoint { .. }) => return Ok(None),
        Err(e) => return Err(format!("looking for deployment {deployment}'s own checkpoints: {e}")),
    };
    Ok((latest.metadata.deployment.as_deref() == Some(deployment)).then_some(latest))
}

/// The job as this deployment last ran it, when that differs from `config`:
/// a JobManager restarted within its deployment after a rescale resumes at
/// the parallelism its own latest checkpoint was taken at (its default, and
/// the vertices that had their own), not at the one its flags say.
pub(super) fn as_last_run(
    config: &JobManagerConfig,
    builder: &dyn JobBuilder,
    plan: &Plan,
) -> Result<Option<JobSpec>, JobManagerError> {
    let Some(latest) = own_latest_snapshot(config, plan).map_err(JobManagerError::Restore)? else { return Ok(None) };
    let Some(parallelism) = latest.metadata.parallelism else { return Ok(None) };
    let taken: BTreeMap<&str, usize> =
        latest.metadata.operators.iter().map(|o| (o.uid.as_str(), o.parallelism)).collect();
    let at_default = JobSpec { parallelism, vertex_parallelism: BTreeMap::new(), ..config.spec.clone() };
    let shape = Plan::of(&at_default, builder).map_err(JobManagerError::Build)?.shape;
    let vertex_parallelism: BTreeMap<String, usize> = shape
        .operators
        .iter()
        .filter_map(|(uid, &p)| taken.get(uid.as_str()).filter(|&&t| t != p).map(|&t| (uid.clone(), t)))
        .collect();
    let spec = JobSpec { vertex_parallelism, ..at_default };
    Ok((spec != config.spec).then_some(spec))
}

/// The latest checkpoint when this deployment took it: the JobManager was
/// restarted within its deployment, and recovers where it left off.
fn own_latest(config: &JobManagerConfig, plan: &Plan) -> Result<Option<RestorePoint>, String> {
    let Some(latest) = own_latest_snapshot(config, plan)? else { return Ok(None) };
    let deployment = config.deployment.as_deref().unwrap_or_default();
    tracing::info!("deployment {deployment} restarted: recovering from its own latest checkpoint");
    let parallelisms: Vec<usize> = plan.shape.operators.values().copied().collect();
    latest.check_compatible(plan.max_parallelism, &parallelisms).map_err(|e| e.to_string())?;
    latest.verify().map_err(|e| e.to_string())?;
    Ok(Some((latest.uri(), latest.metadata.checkpoint_id)))
}
