//! The controller: for each StreamJob, observe (the JobManager's REST API
//! through a [`JobManagerClient`], the savepoint in storage), plan
//! ([`crate::planner::plan`], pure), then act: write the status first
//! (write-ahead), then apply objects, trigger savepoints and in-place
//! rescales, scale the TaskManagers and record events.
//! Writes are server-side applies under one field manager. A finalizer gives
//! deletion its final savepoint. A job whose autoscaler is on is sampled on
//! each reconciliation, and the decision on its series ([`Samples`]) is part
//! of what is observed.
//!
//! The tests below check these effects request by request: a kube client
//! whose requests a verifier checks in order, and a fake JobManager
//! (`fixtures.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weir_api::rest::{JobDetails, JobState, RescaleRequest, SavepointRequest, SavepointStatus};

use crate::autoscaler::{AutoscalerConfig, PastRescale};
use crate::crd::{AutoscalerMode, RescaleRefusal, StreamJob, StreamJobStatus};
pub use crate::jobmanager::JobManagerAccess;
use crate::jobmanager::{self, JobManagerClient, JobManagerError};
use crate::planner::{self, Action, Evaluation, JobView, Observed, SavepointView, plan};
use crate::resources::{self, Deploy, Names};
use crate::snapshots;

mod autoscaling;

pub use autoscaling::{Sampled, Samples};

/// The field manager of every write, and the finalizer's name.
pub const MANAGER: &str = "weir-operator";
pub(crate) const FINALIZER: &str = "weir.dev/final-savepoint";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("the JobManager: {0}")]
    JobManager(#[from] JobManagerError),
}

pub struct Context {
    pub client: Client,
    pub metrics: Arc<crate::health::Metrics>,
    pub recorder: Recorder,
    /// The jobs' JobManagers, reached as `--jobmanager-access` says.
    pub jobmanager: Arc<dyn JobManagerClient>,
    /// The autoscalers' series of samples, per StreamJob.
    pub autoscaler: Samples,
    /// The jobs' pods, read when a JobManager does not answer.
    pub pods: Arc<dyn crate::pods::PodReader>,
}

/// Runs the controller on `namespace` (all namespaces when `None`) until the process is stopped.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    access: JobManagerAccess,
    metrics: Arc<crate::health::Metrics>,
) {
    let jobs: Api<StreamJob> = scoped(&client, &namespace);
    let deployments: Api<Deployment> = scoped(&client, &namespace);
    let reporter = Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        jobmanager: jobmanager::client(access, client.clone()),
        pods: Arc::new(crate::pods::KubePods(client.clone())),
        client: client.clone(),
        metrics: metrics.clone(),
        autoscaler: Samples::default(),
    });
    metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    Controller::new(jobs, watcher::Config::default())
        .owns(deployments, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!("reconcile: {e}");
            }
        })
        .await;
}

/// The objects of `namespace`, or of every namespace.
fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy(_job: Arc<StreamJob>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!("{error}; retrying in 5 s");
    Requeue::requeue(Duration::from_secs(5))
}

async fn reconcile(job: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let api: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => apply(&job, &ctx).await,
            Finalizer::Cleanup(job) => cleanup(&job, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()));
    ctx.metrics.reconciled(result.is_ok(), started.elapsed());
    result
}

fn metrics_key(job: &StreamJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

/// Observe, plan, act.
async fn apply(job: &StreamJob, ctx: &Context) -> Result<Requeue, Error> {
    let observed = observe(job, ctx).await;
    let planned = plan(job, &observed);
    write_status(job, ctx, &planned.status).await?;
    ctx.metrics.phase(metrics_key(job), planned.status.phase.map(|p| format!("{p:?}")));
    let by_autoscaler = planned.status.pending_operation.as_ref().is_some_and(|op| op.by_autoscaler);
    if by_autoscaler && job.status.as_ref().is_none_or(|s| s.pending_operation.is_none()) {
        ctx.metrics.autoscaler_rescaled(&metrics_key(job));
    }
    let mut status = planned.status;
    // The soonest any action asks for; half a minute when none does.
    let mut after: Option<Duration> = None;
    for action in planned.actions {
        if let Some(d) = act(job, ctx, &mut status, action).await? {
            after = Some(after.map_or(d, |a| a.min(d)));
        }
    }
    Ok(Requeue::requeue(after.unwrap_or(Duration::from_secs(30))))
}

/// Carries out one planned action; `status` is the one written, which
/// records what the JobManager answered (a trigger id, a refusal). When to
/// look again, if the action asks.
async fn act(
    job: &StreamJob,
    ctx: &Context,
    status: &mut StreamJobStatus,
    action: Action,
) -> Result<Option<Duration>, Error> {
    match action {
        Action::Apply(deploy) => apply_objects(job, ctx, &deploy).await?,
        Action::Stop => stop(job, ctx).await?,
        Action::TriggerSavepoint { stop } => {
            let trigger = trigger_savepoint(job, ctx, stop).await?;
            if let Some(op) = &mut status.pending_operation {
                op.trigger_id = Some(trigger);
            }
            write_status(job, ctx, status).await?;
            return Ok(Some(crate::planner::FOLLOW_EVERY));
        }
        Action::Rescale(request) => {
            rescale(job, ctx, status, request).await?;
            write_status(job, ctx, status).await?;
            return Ok(Some(crate::planner::FOLLOW_EVERY));
        }
        Action::ScaleTaskManagers(replicas) => scale_taskmanagers(job, ctx, status, replicas).await?,
        Action::DisposeSavepoint(path) => {
            let (storage, scope) = (job.spec.storage.clone(), snapshots::DisposalScope::of(job));
            let outcome = off_runtime(move || snapshots::dispose(&path, &scope, storage.as_ref()).map(|()| path)).await;
            match outcome {
                Ok(path) => tracing::info!("{}: disposed of {path}", job.name_any()),
                Err(snapshots::DisposeError::Refused(refused)) => {
                    tracing::warn!("{}: {refused}", job.name_any());
                    event(job, ctx, true, "SavepointDisposalRefused", &refused.to_string()).await;
                }
                Err(e) => event(job, ctx, true, "SavepointDisposalFailed", &e.to_string()).await,
            }
        }
        Action::Event { warning, reason, note } => event(job, ctx, warning, &reason, &note).await,
        Action::Requeue(d) => return Ok(Some(d)),
    }
    Ok(None)
}

/// Deletion: the final savepoint (when configured and the job runs), recorded in an event.
async fn cleanup(job: &StreamJob, ctx: &Context) -> Result<Requeue, Error> {
    tracing::info!("{}: deleted; final savepoint: {}", job.name_any(), job.spec.savepoint_on_delete);
    ctx.metrics.phase(metrics_key(job), None);
    ctx.autoscaler.forget(&metrics_key(job));
    if job.spec.savepoint_on_delete
        && let Ok(trigger) = trigger_savepoint(job, ctx, true).await
    {
        for _ in 0..120 {
            match savepoint_status(job, ctx, &trigger).await {
                Some(SavepointView::Completed { path, .. }) => {
                    event(job, ctx, false, "FinalSavepoint", &format!("final savepoint at {path}")).await;
                    break;
                }
                Some(SavepointView::Failed(e)) => {
                    event(job, ctx, true, "FinalSavepointFailed", &e).await;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    // The owned objects go with the StreamJob (owner references, garbage collection).
    Ok(Requeue::await_change())
}

async fn observe(job: &StreamJob, ctx: &Context) -> Observed {
    let now = Timestamp::now();
    let config = autoscaler_config(job);
    let answer = match &config {
        // The same answer, with the rates of a sample.
        Some(c) => ctx.jobmanager.job_over(job, planner::rate_window(c.metrics_window)).await,
        None => ctx.jobmanager.job(job).await,
    };
    let details =
        answer.inspect_err(|e| tracing::debug!("{}: the JobManager did not answer: {e}", job.name_any())).ok();
    let autoscaler = match (&config, &details) {
        (Some(config), Some(details)) => evaluate(job, ctx, config, details, now),
        _ => None,
    };
    let job_view = details.as_ref().map(JobView::from);
    // Why it does not answer, as far as the job's pods tell (once it has pods).
    let deployed = job.status.as_ref().is_some_and(|s| s.deployment.is_some());
    let pod_problems = match &details {
        Some(_) => Vec::new(),
        None if !deployed => Vec::new(),
        None => match ctx.pods.pods(job).await {
            Ok(pods) => crate::pods::problems(&pods).iter().map(ToString::to_string).collect(),
            Err(e) => {
                tracing::debug!("{}: cannot list its pods: {e}", job.name_any());
                Vec::new()
            }
        },
    };
    let taskmanagers_started = match adding_taskmanagers(job) {
        false => None,
        true => match ctx.pods.pods(job).await {
            Ok(pods) => Some(crate::pods::taskmanagers_started(&pods)),
            Err(e) => {
                tracing::debug!("{}: cannot list its pods: {e}", job.name_any());
                None
            }
        },
    };
    let trigger = job.status.as_ref().and_then(|s| s.pending_operation.as_ref()).and_then(|o| o.trigger_id.clone());
    let savepoint = match trigger {
        Some(t) => savepoint_status(job, ctx, &t).await,
        None => None,
    };
    // Looked at only while the job is yet to be deployed from it.
    let undeployed = job.status.as_ref().is_none_or(|s| s.deployed_spec.is_none());
    let initial_savepoint_found = match (&job.spec.initial_savepoint, undeployed) {
        (Some(path), true) => {
            let (p, storage) = (path.clone(), job.spec.storage.clone());
            Some(off_runtime(move || snapshots::exists(&p, storage.as_ref())).await)
        }
        _ => None,
    };
    Observed {
        job: job_view,
        savepoint,
        initial_savepoint_found,
        pod_problems,
        taskmanagers_started,
        autoscaler,
        now: now.to_string(),
    }
}

/// Whether the job's pending operation is an in-place rescale adding TaskManagers.
fn adding_taskmanagers(job: &StreamJob) -> bool {
    let op = job.status.as_ref().and_then(|s| s.pending_operation.as_ref());
    op.and_then(|o| o.in_place.as_ref()).is_some_and(|i| i.step == crate::crd::InPlaceStep::AddTaskManagers)
}

/// The job's autoscaler configuration, when it is on (an invalid one is the
/// planner's to report, as an invalid spec).
fn autoscaler_config(job: &StreamJob) -> Option<AutoscalerConfig> {
    let spec = job.spec.autoscaler.as_ref().filter(|a| a.mode != AutoscalerMode::Disabled)?;
    AutoscalerConfig::from_spec(spec, u32::try_from(job.spec.max_parallelism).ok()?).ok()
}

/// The autoscaler's evaluation of the answer, when the current deployment's
/// job runs and no operation is in flight: the samples of a job being stopped
/// or brought up would mislead, and a decision then could not be applied.
fn evaluate(
    job: &StreamJob,
    ctx: &Context,
    config: &AutoscalerConfig,
    details: &JobDetails,
    now: Timestamp,
) -> Option<Evaluation> {
    let status = job.status.clone().unwrap_or_default();
    let current = planner::is_current_deployment(details.deployment.as_deref(), status.deployment.as_deref());
    if !current || details.state != JobState::Running || status.pending_operation.is_some() {
        return None;
    }
    let history: Vec<PastRescale> =
        status.autoscaler.iter().flat_map(|a| &a.recent_rescales).filter_map(PastRescale::from_status).collect();
    let key = metrics_key(job);
    let Sampled { evaluation, fresh } = ctx.autoscaler.evaluate(&key, config, details, &history, now);
    if let (true, Evaluation::Decided(decision)) = (fresh, &evaluation) {
        tracing::debug!("{key}: sampled over {} ms: {decision}", details.metrics_window_ms);
    }
    if let (true, Evaluation::Decided(decision)) = (fresh, &evaluation) {
        ctx.metrics.autoscaler_evaluated(&key, decision.reason());
    }
    Some(evaluation)
}

/// The fate of a triggered savepoint; `None` when the JobManager did not answer.
async fn savepoint_status(job: &StreamJob, ctx: &Context, trigger: &str) -> Option<SavepointView> {
    let status = match ctx.jobmanager.savepoint_status(job, trigger).await {
        Ok(status) => status,
        Err(e) => {
            tracing::debug!("{}: {e}", job.name_any());
            return None;
        }
    };
    Some(match status {
        SavepointStatus::Completed { path } => {
            let (p, storage) = (path.clone(), job.spec.storage.clone());
            let in_storage = off_runtime(move || snapshots::exists(&p, storage.as_ref())).await;
            SavepointView::Completed { path, in_storage }
        }
        SavepointStatus::Failed { error, savepoint: None } => SavepointView::Failed(error),
        SavepointStatus::Failed { error, savepoint: Some(savepoint) } => {
            SavepointView::FailedAfterSavepoint { error, savepoint }
        }
        SavepointStatus::InProgress => SavepointView::InProgress,
    })
}

/// Asks the job's JobManager to rescale the running job in place, and
/// records in the pending operation its trigger id, or its refusal (a 4xx
/// answer: nothing changed, and the planner decides what next); no answer,
/// or `429` (too many triggers under way there), is an error, and the next
/// reconciliation asks again.
async fn rescale(
    job: &StreamJob,
    ctx: &Context,
    status: &mut StreamJobStatus,
    request: RescaleRequest,
) -> Result<(), Error> {
    let answer = ctx.jobmanager.rescale(job, request).await;
    let Some(op) = status.pending_operation.as_mut() else { return Ok(()) };
    match answer {
        Ok(trigger) => op.trigger_id = Some(trigger.trigger_id),
        Err(JobManagerError::Refused { status: code, message, .. })
            if code.is_client_error() && code != http::StatusCode::TOO_MANY_REQUESTS =>
        {
            tracing::warn!("{}: the JobManager refused the rescale: {code}: {message}", job.name_any());
            if let Some(in_place) = op.in_place.as_mut() {
                in_place.refused = Some(RescaleRefusal { status: i32::from(code.as_u16()), message });
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Applies the TaskManager Deployment at `replicas`, built from the spec as
/// deployed (`status`): a change of the spec not rolled out yet stays out of
/// the TaskManagers, whose pod template does not depend on the parallelism.
async fn scale_taskmanagers(
    job: &StreamJob,
    ctx: &Context,
    status: &StreamJobStatus,
    replicas: i32,
) -> Result<(), Error> {
    let mut deployed = job.clone();
    if let Some(spec) = planner::deployed_spec(status) {
        deployed.spec = spec;
    }
    tracing::info!("{}: {replicas} TaskManagers", job.name_any());
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    apply_one::<Deployment>(ctx, &ns, resources::taskmanager(&deployed, replicas)).await
}

/// Asks the job's JobManager for a savepoint; its trigger id.
async fn trigger_savepoint(job: &StreamJob, ctx: &Context, stop: bool) -> Result<String, Error> {
    let request = SavepointRequest { stop, ..Default::default() };
    Ok(ctx.jobmanager.trigger_savepoint(job, request).await?.trigger_id)
}

/// Runs blocking storage work on a thread of its own: not `spawn_blocking`,
/// because the S3 client runs a runtime of its own, which it may not do on a
/// thread that belongs to this one.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.await.expect("the storage thread answers")
}

/// A server-side apply of a StreamJob's status.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusPatch<S> {
    pub api_version: String,
    pub kind: String,
    pub status: S,
}

async fn write_status(job: &StreamJob, ctx: &Context, status: &StreamJobStatus) -> Result<(), Error> {
    let api: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let patch =
        StatusPatch { api_version: StreamJob::api_version(&()).into(), kind: StreamJob::kind(&()).into(), status };
    api.patch_status(&job.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

async fn apply_one<K>(ctx: &Context, ns: &str, object: K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    // The Kubernetes types write their apiVersion and kind themselves.
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&object)).await?;
    Ok(())
}

/// Creates the job's Secret with a random token unless it exists: never
/// replaced, since its running processes hold it.
async fn ensure_auth_secret(ctx: &Context, ns: &str, job: &StreamJob) -> Result<(), Error> {
    let mut token = [0u8; 32];
    getrandom::fill(&mut token).map_err(|e| Error::Finalizer(format!("no randomness for the job's secret: {e}")))?;
    let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), &resources::auth_secret(job, &token)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn apply_objects(job: &StreamJob, ctx: &Context, deploy: &Deploy) -> Result<(), Error> {
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    ensure_auth_secret(ctx, &ns, job).await?;
    apply_one::<ConfigMap>(ctx, &ns, resources::config_map(job)).await?;
    apply_one::<ServiceAccount>(ctx, &ns, resources::service_account(job)).await?;
    apply_one::<Role>(ctx, &ns, resources::role(job)).await?;
    apply_one::<RoleBinding>(ctx, &ns, resources::role_binding(job)).await?;
    apply_one::<NetworkPolicy>(ctx, &ns, resources::network_policy(job)).await?;
    apply_one::<Service>(ctx, &ns, resources::jobmanager_service(job)).await?;
    apply_one::<Deployment>(ctx, &ns, resources::jobmanager(job, deploy)).await?;
    let taskmanagers = deploy.taskmanagers(job.spec.task_manager.slots);
    apply_one::<Deployment>(ctx, &ns, resources::taskmanager(job, taskmanagers)).await?;
    Ok(())
}

/// Removes the job's processes (its Deployments); configuration stays.
async fn stop(job: &StreamJob, ctx: &Context) -> Result<(), Error> {
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let n = Names(&job.name_any());
    for name in [n.jobmanager(), n.taskmanager()] {
        match api.delete(&name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn event(job: &StreamJob, ctx: &Context, warning: bool, reason: &str, note: &str) {
    let e = KubeEvent {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&e, &job.object_ref(&())).await {
        tracing::warn!("recording event {reason}: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{InPlaceStep, OperationKind};
    use crate::fixtures::{Expect, Timeline};
    use crate::phase::Phase;
    use crate::resources::taskmanagers;

    /// The reason of a condition of `status`, with whether it holds.
    fn condition<'a>(status: &'a StreamJobStatus, type_: &str) -> (&'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_}"));
        (c.status.as_str(), c.reason.as_str())
    }

    /// One reconciliation of `job` (its Apply branch: the job carries the
    /// finalizer), with the API server expecting `expected`: when to look
    /// again, and the timeline of what the controller did.
    async fn reconcile_once(
        job: StreamJob,
        ctx: Context,
        verifier: crate::fixtures::ApiServerVerifier,
        timeline: Timeline,
        expected: Vec<Expect>,
    ) -> (Requeue, Vec<String>) {
        let server = verifier.run(job.clone(), expected);
        let requeue = reconcile(Arc::new(job), Arc::new(ctx)).await.expect("the reconciliation succeeds");
        // The context (and every client) is dropped: the verifier sees that no other request came.
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the verifier finishes")
            .expect("every request as expected");
        (requeue, timeline.entries())
    }

    #[tokio::test]
    async fn a_rescale_the_slots_allow_is_written_then_asked_of_the_jobmanager_then_its_trigger_recorded() {
        // At 2 on two TaskManagers of a slot: 1 fits.
        let job = StreamJob::test().running().with_parallelism(1).next_generation();
        let (ctx, verifier, _jobmanager, timeline) = Context::test(&job);
        let expected = vec![
            Expect::status(|s| {
                let op = s.pending_operation.as_ref().expect("the operation is written before anything is done");
                assert_eq!((op.kind, op.generation, op.target_parallelism), (OperationKind::Rescale, 2, Some(1)));
                assert_eq!(op.in_place.as_ref().map(|i| i.step), Some(InPlaceStep::Rescale));
                assert_eq!(op.trigger_id, None, "not asked yet");
                assert_eq!(s.phase, Some(Phase::Rescaling));
            }),
            Expect::status(|s| {
                let op = s.pending_operation.as_ref().expect("still pending");
                assert_eq!(op.trigger_id.as_deref(), Some("rescale-trigger-1"));
            }),
            Expect::Event { reason: "Rescale", warning: false },
        ];
        let (requeue, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        assert_eq!(
            timeline,
            [
                "jobmanager: job",
                "kube: apply status",
                r#"jobmanager: rescale {"parallelism":1}"#,
                "kube: apply status",
                "kube: event Rescale",
            ],
            "no pod touched"
        );
        assert_eq!(requeue, Requeue::requeue(crate::planner::FOLLOW_EVERY), "the rescale is looked at soon");
    }

    #[tokio::test]
    async fn a_rescale_without_the_slots_is_written_then_adds_taskmanagers() {
        // At 2 on two TaskManagers of a slot: 4 needs two more.
        let job = StreamJob::test().running().with_parallelism(4).next_generation();
        let (ctx, verifier, _jobmanager, timeline) = Context::test(&job);
        let n = Names("orders");
        let expected = vec![
            Expect::status(|s| {
                let op = s.pending_operation.as_ref().expect("the operation is written before anything is done");
                let i = op.in_place.as_ref().expect("in place");
                assert_eq!((i.step, i.taskmanagers_before, i.taskmanagers), (InPlaceStep::AddTaskManagers, 2, 4));
            }),
            Expect::apply_with("deployments", n.taskmanager(), |d| {
                assert_eq!(d["spec"]["replicas"], 4, "raised to what 4 subtasks need");
            }),
            Expect::Event { reason: "Rescale", warning: false },
        ];
        let (requeue, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        assert_eq!(
            timeline,
            [
                "jobmanager: job",
                "kube: apply status",
                "kube: apply deployments/orders-taskmanager",
                "kube: event Rescale"
            ],
            "the JobManager's Deployment untouched, the rescale not asked yet"
        );
        assert_eq!(requeue, Requeue::requeue(crate::planner::SLOTS_LOOK_EVERY), "the slots are looked at soon");
    }

    /// The job's status once the planner took the next step, the JobManager answering as `jobmanager` does.
    fn planned(job: &StreamJob, jobmanager: &crate::fixtures::TestingJobManager) -> StreamJobStatus {
        let details = jobmanager.job.lock().unwrap().clone();
        let observed = Observed {
            job: details.as_ref().map(JobView::from),
            now: Timestamp::now().to_string(),
            ..Default::default()
        };
        plan(job, &observed).status
    }

    #[tokio::test]
    async fn taskmanagers_are_raised_again_as_deployed_by_an_operator_that_restarts_while_they_come() {
        let job = StreamJob::test().running().with_parallelism(4).next_generation();
        let (_, _, jobmanager, _) = Context::test(&job);
        // Raised, then the operator restarted; meanwhile the image changed (that upgrade waits its turn).
        let mut job = job.clone().with_status(planned(&job, &jobmanager)).next_generation();
        job.spec.image = "weir:2".into();
        // The JobManager answers as before: the job at 2 on two TaskManagers.
        let (ctx, verifier, _jobmanager, timeline) = Context::test(&job);
        let expected = vec![
            Expect::status(|s| {
                let op = s.pending_operation.as_ref().expect("still pending");
                assert_eq!(op.in_place.as_ref().map(|i| i.step), Some(InPlaceStep::AddTaskManagers));
            }),
            Expect::apply_with("deployments", Names("orders").taskmanager(), |d| {
                assert_eq!(d["spec"]["replicas"], 4);
                let image = &d["spec"]["template"]["spec"]["containers"][0]["image"];
                assert_eq!(image, "weir:latest", "the TaskManagers as deployed, not the new image");
            }),
        ];
        let (requeue, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        assert_eq!(
            timeline,
            ["jobmanager: job", "kube: list pods", "kube: apply status", "kube: apply deployments/orders-taskmanager"],
            "no pod runs yet: the rescale waits, the job runs on"
        );
        assert_eq!(requeue, Requeue::requeue(crate::planner::SLOTS_LOOK_EVERY));
    }

    #[tokio::test]
    async fn the_rescale_is_asked_for_once_the_added_taskmanagers_run() {
        let job = StreamJob::test().running().with_parallelism(4).next_generation();
        let (_, _, jobmanager, _) = Context::test(&job);
        let job = job.clone().with_status(planned(&job, &jobmanager));
        // The JobManager still has two slots; all four TaskManager pods run.
        let (mut ctx, verifier, _jobmanager, timeline) = Context::test(&job);
        let pods = (0..4).map(|i| crate::fixtures::running_taskmanager(&format!("orders-taskmanager-{i}"))).collect();
        ctx.pods = Arc::new(crate::fixtures::TestingPods::new(pods, timeline.clone()));
        let expected = vec![
            Expect::status(|s| {
                let op = s.pending_operation.as_ref().expect("still pending");
                assert_eq!(op.in_place.as_ref().map(|i| i.step), Some(InPlaceStep::Rescale));
            }),
            Expect::apply_with("deployments", Names("orders").taskmanager(), |d| assert_eq!(d["spec"]["replicas"], 4)),
            Expect::status(|s| {
                let op = s.pending_operation.as_ref().expect("still pending");
                assert_eq!(op.trigger_id.as_deref(), Some("rescale-trigger-1"));
            }),
        ];
        let (requeue, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        assert_eq!(
            timeline,
            [
                "jobmanager: job",
                "kube: list pods",
                "kube: apply status",
                "kube: apply deployments/orders-taskmanager",
                r#"jobmanager: rescale {"parallelism":4,"await_slots_ms":30000}"#,
                "kube: apply status",
            ],
            "the savepoint is taken while the TaskManagers register"
        );
        assert_eq!(requeue, Requeue::requeue(crate::planner::FOLLOW_EVERY));
    }

    #[tokio::test]
    async fn a_rescale_the_jobmanager_refuses_is_recorded_for_the_planner_to_decide() {
        let job = StreamJob::test().running().with_parallelism(1).next_generation();
        let (ctx, verifier, jobmanager, timeline) = Context::test(&job);
        let why = "a rescale is already in progress".to_string();
        *jobmanager.refuse_rescale.lock().unwrap() = Some((http::StatusCode::CONFLICT, why.clone()));
        let expected = vec![
            Expect::status(|s| assert!(s.pending_operation.is_some())),
            Expect::status(move |s| {
                let op = s.pending_operation.as_ref().expect("still pending");
                let refused = op.in_place.as_ref().and_then(|i| i.refused.clone());
                assert_eq!(refused, Some(RescaleRefusal { status: 409, message: why }));
                assert_eq!(op.trigger_id, None);
            }),
            Expect::Event { reason: "Rescale", warning: false },
        ];
        let (requeue, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        let asked = r#"jobmanager: rescale {"parallelism":1}"#;
        assert_eq!(
            timeline,
            ["jobmanager: job", "kube: apply status", asked, "kube: apply status", "kube: event Rescale"]
        );
        assert_eq!(requeue, Requeue::requeue(crate::planner::FOLLOW_EVERY), "the planner decides soon");
    }

    #[tokio::test]
    async fn a_completed_rescale_records_its_savepoint_and_removes_the_idle_taskmanagers() {
        let storage = tempfile::tempdir().expect("a directory");
        let savepoint = storage.path().join("sp-1");
        std::fs::create_dir_all(&savepoint).expect("created");
        std::fs::write(savepoint.join("_metadata"), b"{}").expect("written");
        let path = format!("file://{}", savepoint.display());
        // Rescaled 2 -> 1 in place and triggered.
        let job = StreamJob::test().running().with_parallelism(1).next_generation();
        let (_, _, jobmanager, _) = Context::test(&job);
        let mut status = planned(&job, &jobmanager);
        status.pending_operation.as_mut().expect("a rescale").trigger_id = Some("rescale-trigger-1".into());
        let deployment = status.deployment.clone();
        let job = job.with_status(status);
        let (ctx, verifier, jobmanager, timeline) = Context::test(&job);
        // Completed: the job runs at 1, on the first of the two TaskManagers still registered.
        if let Some(answer) = jobmanager.job.lock().unwrap().as_mut() {
            answer.parallelism = 1;
            answer.taskmanagers = crate::fixtures::taskmanagers(2, 1, 1);
        }
        *jobmanager.savepoint.lock().unwrap() = SavepointStatus::Completed { path: path.clone() };
        let expected = vec![
            Expect::status(move |s| {
                assert_eq!((&s.pending_operation, s.phase), (&None, Some(Phase::Running)));
                assert_eq!(crate::planner::deployed_spec(s).map(|d| d.parallelism), Some(1), "what diffs see");
                assert_eq!(s.deployment, deployment, "the same deployment");
                let sp = s.last_savepoint.as_ref().expect("recorded");
                assert_eq!((sp.path.as_str(), sp.reason), (path.as_str(), crate::crd::SavepointReason::Rescale));
                assert_eq!(condition(s, "SnapshotHealthy"), ("True", "SavepointCompleted"));
            }),
            Expect::Event { reason: "Rescaled", warning: false },
            Expect::apply_with("deployments", Names("orders").taskmanager(), |d| {
                assert_eq!(d["spec"]["replicas"], 1, "the idle one goes");
            }),
        ];
        let (requeue, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        assert_eq!(
            timeline,
            [
                "jobmanager: job",
                "jobmanager: savepoint status rescale-trigger-1",
                "kube: apply status",
                "kube: event Rescaled",
                "kube: apply deployments/orders-taskmanager",
            ],
            "no JobManager Deployment applied"
        );
        assert_eq!(requeue, Requeue::requeue(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn an_active_autoscalers_rescale_is_written_ahead_then_taskmanagers_added_for_it() {
        let job = StreamJob::test().with_autoscaler(AutoscalerMode::Active).running();
        let (ctx, verifier, jobmanager, timeline) = Context::test(&job);
        let metrics = ctx.metrics.clone();
        // Five minutes of samples: the source reads flat out at 2 while its lag grows by 300 records/s.
        let deployment = job.status.as_ref().and_then(|s| s.deployment.clone());
        let now = Timestamp::now();
        let ago = |s: i64| now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(s)).unwrap();
        let lagging =
            |lag_since: i64| crate::fixtures::metered(deployment.as_deref(), ago(3600), 1000.0, 300 * lag_since);
        let config = autoscaler_config(&job).expect("on");
        for s in (5..=300).rev().step_by(5) {
            let sampled = ctx.autoscaler.evaluate(&metrics_key(&job), &config, &lagging(300 - s), &[], ago(s));
            assert!(sampled.fresh);
        }
        *jobmanager.job.lock().unwrap() = Some(lagging(300));
        let expected = vec![
            Expect::status(|s| {
                let op = s.pending_operation.as_ref().expect("the rescale is written before anything is done");
                let a = s.autoscaler.as_ref().expect("status.autoscaler");
                assert!(a.decision.as_deref().is_some_and(|d| d.starts_with("scale up to ")), "{:?}", a.decision);
                assert_eq!((op.kind, op.by_autoscaler, op.trigger_id.as_deref()), (OperationKind::Rescale, true, None));
                assert!(op.target_parallelism.is_some_and(|p| p > 2), "{op:?}");
                assert_eq!((a.parallelism, a.spec_parallelism), (op.target_parallelism, Some(2)));
                let chosen: Vec<(&str, i32)> = a.vertex_parallelism.iter().map(|(u, p)| (u.as_str(), *p)).collect();
                assert_eq!(chosen, [("orders", op.target_parallelism.unwrap_or(0))], "per vertex, by uid");
                assert_eq!(op.target_vertex_parallelism, a.vertex_parallelism);
                assert_eq!(a.recent_rescales.len(), 1, "counted against the budget from the start");
                assert_eq!(s.phase, Some(Phase::Rescaling));
                let i = op.in_place.as_ref().expect("in place");
                assert_eq!((i.step, i.taskmanagers_before), (InPlaceStep::AddTaskManagers, 2), "2 slots are too few");
            }),
            Expect::Event { reason: "AutoscalerDecision", warning: false },
            Expect::apply_with("deployments", Names("orders").taskmanager(), |d| {
                assert!(d["spec"]["replicas"].as_i64().is_some_and(|r| r > 2), "{}", d["spec"]["replicas"]);
            }),
            Expect::Event { reason: "Rescale", warning: false },
        ];
        let (requeue, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        assert_eq!(
            timeline,
            [
                "jobmanager: job over 7s500ms",
                "kube: apply status",
                "kube: event AutoscalerDecision",
                "kube: apply deployments/orders-taskmanager",
                "kube: event Rescale",
            ]
        );
        assert_eq!(requeue, Requeue::requeue(crate::planner::SLOTS_LOOK_EVERY), "the slots are looked at soon");
        let text = metrics.render();
        for line in [
            "weir_operator_autoscaler_evaluations_total{namespace=\"weir\",job=\"orders\"} 1\n",
            "weir_operator_autoscaler_decisions_total{namespace=\"weir\",job=\"orders\",reason=\"scale-up\"} 1\n",
            "weir_operator_autoscaler_rescales_total{namespace=\"weir\",job=\"orders\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[tokio::test]
    async fn a_recommending_autoscaler_samples_and_reports_without_acting() {
        let job = StreamJob::test().with_autoscaler(AutoscalerMode::Recommend).running();
        let (ctx, verifier, jobmanager, timeline) = Context::test(&job);
        let deployment = job.status.as_ref().and_then(|s| s.deployment.clone());
        let answer = crate::fixtures::metered(deployment.as_deref(), Timestamp::now(), 700.0, 0);
        *jobmanager.job.lock().unwrap() = Some(answer);
        let expected = vec![
            Expect::status(|s| {
                let a = s.autoscaler.as_ref().expect("status.autoscaler");
                assert_eq!(a.reason.as_deref(), Some("stabilizing"), "{:?}", a.decision);
                assert!(a.last_evaluation.is_some() && s.pending_operation.is_none());
            }),
            Expect::Event { reason: "AutoscalerDecision", warning: false },
        ];
        let (requeue, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        assert_eq!(timeline, ["jobmanager: job over 7s500ms", "kube: apply status", "kube: event AutoscalerDecision"]);
        let every = crate::planner::sample_every(Duration::from_secs(30));
        assert_eq!(requeue, Requeue::requeue(every), "sampled again soon, four times in the default window");
    }

    #[tokio::test]
    async fn a_jobmanager_that_does_not_answer_leaves_the_deployed_objects_alone() {
        // A rescale asked of a running job whose JobManager missed an answer: nothing goes out yet.
        let job = StreamJob::test().running().with_parallelism(4).next_generation();
        let (ctx, verifier, jobmanager, timeline) = Context::test(&job);
        *jobmanager.job.lock().unwrap() = None;
        let expected = vec![Expect::status(|s| {
            assert_eq!(condition(s, "Ready"), ("False", "JobManagerUnreachable"));
            assert_eq!((s.phase, &s.pending_operation), (Some(Phase::Running), &None), "no operation started");
            assert_eq!(s.job, None, "no job state without an answer");
        })];
        let (requeue, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        let looked = ["jobmanager: job", "kube: list pods", "kube: apply status"];
        assert_eq!(timeline, looked, "no savepoint, no object applied");
        assert_eq!(requeue, Requeue::requeue(Duration::from_secs(2)));

        // A running job whose JobManager stops answering: the condition, and one warning event.
        let job = StreamJob::test().running();
        let (ctx, verifier, jobmanager, timeline) = Context::test(&job);
        *jobmanager.job.lock().unwrap() = None;
        let expected = vec![
            Expect::status(|s| assert_eq!(condition(s, "Ready"), ("False", "JobManagerUnreachable"))),
            Expect::Event { reason: "JobManagerUnreachable", warning: true },
        ];
        let (_, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        let looked = ["jobmanager: job", "kube: list pods", "kube: apply status", "kube: event JobManagerUnreachable"];
        assert_eq!(timeline, looked);

        // ... and whose pods say why: the condition names the pod, and an event says it.
        let job = StreamJob::test().deploying();
        let (mut ctx, verifier, jobmanager, timeline) = Context::test(&job);
        *jobmanager.job.lock().unwrap() = None;
        let pulling: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "orders-jobmanager-5f7" },
            "status": { "containerStatuses": [{ "name": "jobmanager", "image": "weir:missing", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"weir:missing\"" } } }] }
        }))
        .unwrap();
        ctx.pods = Arc::new(crate::fixtures::TestingPods::new(vec![pulling], timeline.clone()));
        let expected = vec![
            Expect::status(|s| {
                let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
                assert_eq!(ready.reason, "JobManagerUnreachable");
                assert!(
                    ready.message.contains("pod orders-jobmanager-5f7, container jobmanager: ImagePullBackOff"),
                    "{}",
                    ready.message
                );
            }),
            Expect::Event { reason: "PodsFailing", warning: true },
        ];
        let (_, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        assert_eq!(timeline, ["jobmanager: job", "kube: list pods", "kube: apply status", "kube: event PodsFailing"]);
    }

    #[tokio::test]
    async fn a_new_job_writes_its_status_then_applies_its_objects() {
        let job = StreamJob::test().with_parallelism(4);
        let (ctx, verifier, jobmanager, timeline) = Context::test(&job);
        *jobmanager.job.lock().unwrap() = None;
        let n = Names("orders");
        let expected = vec![
            Expect::status(|s| {
                assert_eq!(s.phase, Some(Phase::Deploying));
                assert_eq!(
                    crate::planner::deployed_spec(s).map(|d| d.parallelism),
                    Some(4),
                    "the spec about to be deployed"
                );
                assert!(s.deployment.as_deref().is_some_and(|d| d.starts_with("1-")), "{:?}", s.deployment);
            }),
            Expect::Create { resource: "secrets", name: n.auth(), exists: false },
            Expect::apply("configmaps", n.config()),
            Expect::apply("serviceaccounts", n.account()),
            Expect::apply("roles", n.account()),
            Expect::apply("rolebindings", n.account()),
            Expect::apply("networkpolicies", n.network()),
            Expect::apply("services", n.jobmanager()),
            Expect::apply("deployments", n.jobmanager()),
            Expect::apply_with("deployments", n.taskmanager(), |d| {
                assert_eq!(d["spec"]["replicas"], taskmanagers(4, 1), "one TaskManager per slot needed");
            }),
            Expect::Event { reason: "Deploying", warning: false },
        ];
        let (requeue, timeline) = reconcile_once(job, ctx, verifier, timeline, expected).await;
        assert_eq!(timeline[..2], ["jobmanager: job", "kube: apply status"], "the status first");
        assert_eq!(timeline.len(), 12, "{timeline:?}");
        assert_eq!(requeue, Requeue::requeue(Duration::from_secs(1)), "until it runs, look often");
    }
}
