//! The controller: for each StreamJob, observe (the JobManager's REST API,
//! the savepoint in storage), plan ([`crate::planner::plan`], pure), then act:
//! write the status first (write-ahead), then apply objects, trigger
//! savepoints and record events. Writes are server-side applies under one
//! field manager. A finalizer gives deletion its final savepoint.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::crd::{StreamJob, StreamJobStatus};
use crate::planner::{Action, JobView, Observed, SavepointView, plan};
use crate::resources::{self, Deploy, Names, REST_PORT};
use crate::snapshots;

/// The field manager of every write, and the finalizer's name.
pub const MANAGER: &str = "weir-operator";
const FINALIZER: &str = "weir.dev/final-savepoint";

/// How the operator reaches JobManagers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobManagerAccess {
    /// Through the job's Service (the operator runs in the cluster).
    Service,
    /// Through the API server's service proxy (the operator runs outside).
    Proxy,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("the JobManager: {0}")]
    JobManager(String),
}

pub struct Context {
    pub client: Client,
    pub metrics: Arc<crate::health::Metrics>,
    pub recorder: Recorder,
    pub access: JobManagerAccess,
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
        client: client.clone(),
        access,
        metrics: metrics.clone(),
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
    let mut status = planned.status;
    let mut requeue = Requeue::requeue(Duration::from_secs(30));
    for action in planned.actions {
        match action {
            Action::Apply(deploy) => apply_objects(job, ctx, &deploy).await?,
            Action::Stop => stop(job, ctx).await?,
            Action::TriggerSavepoint { stop } => {
                let trigger = trigger_savepoint(job, ctx, stop).await?;
                if let Some(op) = &mut status.pending_operation {
                    op.trigger_id = Some(trigger);
                }
                write_status(job, ctx, &status).await?;
                requeue = Requeue::requeue(Duration::from_secs(1));
            }
            Action::DisposeSavepoint(path) => {
                let storage = job.spec.storage.clone();
                let outcome = off_runtime(move || snapshots::dispose(&path, storage.as_ref()).map(|()| path)).await;
                match outcome {
                    Ok(path) => tracing::info!("{}: disposed of {path}", job.name_any()),
                    Err(e) => event(job, ctx, true, "SavepointDisposalFailed", &e).await,
                }
            }
            Action::Event { warning, reason, note } => event(job, ctx, warning, &reason, &note).await,
            Action::Requeue(after) => requeue = Requeue::requeue(after),
        }
    }
    Ok(requeue)
}

/// Deletion: the final savepoint (when configured and the job runs), recorded in an event.
async fn cleanup(job: &StreamJob, ctx: &Context) -> Result<Requeue, Error> {
    tracing::info!("{}: deleted; final savepoint: {}", job.name_any(), job.spec.savepoint_on_delete);
    ctx.metrics.phase(metrics_key(job), None);
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

fn jobmanager_path(job: &StreamJob, ctx: &Context, path: &str) -> String {
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let service = Names(&job.name_any()).jobmanager();
    match ctx.access {
        JobManagerAccess::Proxy => format!("/api/v1/namespaces/{ns}/services/{service}:rest/proxy{path}"),
        JobManagerAccess::Service => format!("http://{service}.{ns}.svc:{REST_PORT}{path}"),
    }
}

/// A JobManager REST call; `None` when it did not answer.
async fn jobmanager<T: DeserializeOwned>(
    job: &StreamJob,
    ctx: &Context,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<T, Error> {
    let url = jobmanager_path(job, ctx, path);
    let body = body.map(|b| serde_json::to_vec(&b).expect("JSON")).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| Error::JobManager(e.to_string()))?;
    let call = async {
        match ctx.access {
            JobManagerAccess::Proxy => {
                ctx.client.request_text(request).await.map_err(|e| Error::JobManager(e.to_string()))
            }
            JobManagerAccess::Service => {
                let (parts, body) = request.into_parts();
                let agent = ureq::Agent::new_with_defaults();
                let url = parts.uri.to_string();
                tokio::task::spawn_blocking(move || {
                    let response = if parts.method == http::Method::POST {
                        agent.post(&url).header("content-type", "application/json").send(&body[..])
                    } else {
                        agent.get(&url).call()
                    };
                    response.and_then(|mut r| r.body_mut().read_to_string())
                })
                .await
                .map_err(|e| Error::JobManager(e.to_string()))?
                .map_err(|e| Error::JobManager(e.to_string()))
            }
        }
    };
    // A JobManager that does not answer must not hold up the reconciliation.
    let text = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| Error::JobManager(format!("{url}: no answer within 10 s")))??;
    serde_json::from_str(&text).map_err(|e| Error::JobManager(format!("{url}: {e}: {text}")))
}

async fn observe(job: &StreamJob, ctx: &Context) -> Observed {
    let name = job.name_any();
    let view = jobmanager::<serde_json::Value>(job, ctx, "GET", &format!("/v1/jobs/{name}"), None).await.ok();
    let job_view = view.and_then(|v| {
        Some(JobView {
            state: v["state"].as_str()?.to_string(),
            parallelism: v["parallelism"].as_i64()? as i32,
            restored_from: v["restored_from"].as_str().map(str::to_string),
            failure: v["failure"].as_str().map(str::to_string),
            last_checkpoint: checkpoint_ref(&v["checkpoints"]["latest"]),
            deployment: v["deployment"].as_str().map(str::to_string),
        })
    });
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
    Observed { job: job_view, savepoint, initial_savepoint_found, now: k8s_openapi::jiff::Timestamp::now().to_string() }
}

/// The JobManager's latest completed checkpoint (not a savepoint), as the status shows it.
fn checkpoint_ref(latest: &serde_json::Value) -> Option<crate::crd::CheckpointRef> {
    let path = latest["path"].as_str().filter(|p| p.contains("/chk-"))?;
    let time = k8s_openapi::jiff::Timestamp::from_millisecond(latest["completed_at"].as_i64()?).ok()?;
    Some(crate::crd::CheckpointRef { id: latest["id"].as_i64()?, path: path.to_string(), time: time.to_string() })
}

async fn savepoint_status(job: &StreamJob, ctx: &Context, trigger: &str) -> Option<SavepointView> {
    let path = format!("/v1/jobs/{}/savepoints/{trigger}", job.name_any());
    let v = jobmanager::<serde_json::Value>(job, ctx, "GET", &path, None).await.ok()?;
    Some(match v["status"].as_str()? {
        "completed" => {
            let path = v["path"].as_str()?.to_string();
            let (p, storage) = (path.clone(), job.spec.storage.clone());
            let in_storage = off_runtime(move || snapshots::exists(&p, storage.as_ref())).await;
            SavepointView::Completed { path, in_storage }
        }
        "failed" => SavepointView::Failed(v["error"].as_str().unwrap_or("unknown").to_string()),
        _ => SavepointView::InProgress,
    })
}

async fn trigger_savepoint(job: &StreamJob, ctx: &Context, stop: bool) -> Result<String, Error> {
    let path = format!("/v1/jobs/{}/savepoints", job.name_any());
    let v: serde_json::Value = jobmanager(job, ctx, "POST", &path, Some(json!({ "stop": stop }))).await?;
    v["trigger_id"].as_str().map(str::to_string).ok_or_else(|| Error::JobManager(format!("no trigger_id in {v}")))
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

async fn write_status(job: &StreamJob, ctx: &Context, status: &StreamJobStatus) -> Result<(), Error> {
    let api: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let patch = json!({ "apiVersion": "weir.dev/v1alpha1", "kind": "StreamJob", "status": status });
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
    let name = object.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(&object).expect("objects serialize");
    value["apiVersion"] = K::api_version(&Default::default()).into();
    value["kind"] = K::kind(&Default::default()).into();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&value)).await?;
    Ok(())
}

async fn apply_objects(job: &StreamJob, ctx: &Context, deploy: &Deploy) -> Result<(), Error> {
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    apply_one::<ConfigMap>(ctx, &ns, resources::config_map(job)).await?;
    apply_one::<ServiceAccount>(ctx, &ns, resources::service_account(job)).await?;
    apply_one::<Role>(ctx, &ns, resources::role(job)).await?;
    apply_one::<RoleBinding>(ctx, &ns, resources::role_binding(job)).await?;
    apply_one::<Service>(ctx, &ns, resources::jobmanager_service(job)).await?;
    apply_one::<Deployment>(ctx, &ns, resources::jobmanager(job, deploy)).await?;
    apply_one::<Deployment>(ctx, &ns, resources::taskmanager(job, deploy)).await?;
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
