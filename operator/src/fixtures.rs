//! Test fixtures (as kube-rs's controller-rs has them): StreamJob builders, a
//! kube [`Client`] whose every request an [`ApiServerVerifier`] checks (method,
//! path, body) and answers in order, and [`TestingJobManager`], a fake
//! [`JobManagerClient`] that answers as it is told and records its calls.
//!
//! The verifier and the fake write into one [`Timeline`], so that a test sees
//! the order of everything the controller did: its writes to the API server
//! and its calls to the JobManager.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};
use weir_api::rest::{
    JobDetails, JobState, LatestCheckpoint, Metrics, RescaleRequest, SavepointRequest, SavepointStatus, TaskManager,
    TriggerResponse, Vertex,
};

use crate::controller::{Context, FINALIZER, MANAGER, StatusPatch};
use crate::crd::{AutoscalerMode, AutoscalerSpec, StreamJob, StreamJobStatus, test_spec};
use crate::jobmanager::{JobManagerClient, JobManagerError};
use crate::planner::{JobView, Observed, plan};

/// The namespace of test jobs.
pub const NAMESPACE: &str = "weir";

/// What happened, in order: the API server's requests and the JobManager's calls.
#[derive(Clone, Default)]
pub struct Timeline(Arc<Mutex<Vec<String>>>);

impl Timeline {
    pub fn push(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push(what.into());
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl StreamJob {
    /// `orders` in namespace `weir` at generation 1, with the final-savepoint
    /// finalizer: a job the controller's Apply branch sees for the first time.
    pub fn test() -> StreamJob {
        let mut job = StreamJob::new("orders", test_spec());
        job.metadata.namespace = Some(NAMESPACE.into());
        job.metadata.uid = Some("0b8e2a41-orders".into());
        job.metadata.generation = Some(1);
        job.metadata.finalizers = Some(vec![FINALIZER.into()]);
        job
    }

    pub fn with_parallelism(mut self, parallelism: i32) -> Self {
        self.spec.parallelism = parallelism;
        self
    }

    pub fn with_autoscaler(mut self, mode: AutoscalerMode) -> Self {
        self.spec.autoscaler = Some(AutoscalerSpec { mode, ..Default::default() });
        self
    }

    /// A new generation of the spec (as the API server counts them).
    pub fn next_generation(mut self) -> Self {
        self.metadata.generation = Some(self.metadata.generation.unwrap_or(0) + 1);
        self
    }

    pub fn with_status(mut self, status: StreamJobStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Deployed at its spec, its JobManager not answering yet: the status the
    /// planner leaves after a first deployment.
    pub fn deploying(self) -> Self {
        let observed = Observed { now: "2026-11-21T12:00:00Z".to_string(), ..Default::default() };
        let status = plan(&self, &observed).status;
        self.with_status(status)
    }

    /// Deployed at its spec and seen running since: the status the planner
    /// leaves after a deployment and a JobManager that answers `running`.
    pub fn running(self) -> Self {
        let now = "2026-11-21T12:00:00Z".to_string();
        let observed = Observed { now: now.clone(), ..Default::default() };
        let deployed = self.clone().with_status(plan(&self, &observed).status);
        let view = JobView::from(&details(&deployed, JobState::Running));
        let observed = Observed { job: Some(view), now, ..Default::default() };
        let status = plan(&deployed, &observed).status;
        self.with_status(status)
    }
}

/// `count` registered TaskManagers of `slots` slots each, `used` slots in all used (the earliest first).
pub fn taskmanagers(count: i32, slots: i32, used: i32) -> Vec<TaskManager> {
    let slots = slots.max(0) as u32;
    let mut left = used.max(0) as u32;
    (1..=count)
        .map(|i| {
            let slots_used = left.min(slots);
            left -= slots_used;
            TaskManager {
                id: format!("tm-{i}"),
                data_address: format!("10.0.0.{i}:6124"),
                slots,
                slots_used,
                last_heartbeat_ms_ago: 300,
            }
        })
        .collect()
}

/// The JobManager's answer for `job` as deployed (its parallelism and
/// deployment, and the TaskManagers it needs) in `state`.
pub fn details(job: &StreamJob, state: JobState) -> JobDetails {
    let status = job.status.clone().unwrap_or_default();
    let deployed = crate::planner::deployed_spec(&status).unwrap_or_else(|| job.spec.clone());
    let slots = deployed.task_manager.slots;
    let count = crate::resources::taskmanagers(deployed.parallelism, slots);
    JobDetails {
        id: job.name_any(),
        name: job.name_any(),
        state,
        parallelism: deployed.parallelism as u32,
        max_parallelism: deployed.max_parallelism as u32,
        start_time: 1_763_726_400_000,
        vertices: Vec::new(),
        metrics_window_ms: 0,
        edges: Vec::new(),
        checkpoints: LatestCheckpoint::default(),
        taskmanagers: taskmanagers(count, slots, deployed.parallelism),
        restarts: 0,
        failure: None,
        restored_from: None,
        deployment: status.deployment,
    }
}

/// The JobManager's answer for a job running since `started` in
/// `deployment`, with rates over 15 s of one vertex: the source `orders` at
/// parallelism 2, reading 700 records/s, `busy` ms of each second, with
/// `pending` records waiting.
pub fn metered(deployment: Option<&str>, started: Timestamp, busy: f64, pending: i64) -> JobDetails {
    let metrics = Metrics {
        records_in_per_s: 700.0,
        records_out_per_s: 700.0,
        busy_ms_per_s: busy,
        idle_ms_per_s: 1000.0 - busy,
        pending_records: Some(pending),
        ..Default::default()
    };
    let orders =
        Vertex { id: "orders".into(), name: "orders".into(), parallelism: 2, chain: 0, metrics, subtasks: vec![] };
    JobDetails {
        id: "orders".into(),
        name: "orders".into(),
        state: JobState::Running,
        parallelism: 2,
        max_parallelism: 128,
        start_time: started.as_millisecond(),
        vertices: vec![orders],
        metrics_window_ms: 15_000,
        edges: Vec::new(),
        checkpoints: LatestCheckpoint::default(),
        taskmanagers: taskmanagers(2, 1, 2),
        restarts: 0,
        failure: None,
        restored_from: None,
        deployment: deployment.map(str::to_string),
    }
}

/// A TaskManager pod of the test job that runs (its container started).
pub fn running_taskmanager(name: &str) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodStatus};
    let labels = [("app.kubernetes.io/component".to_string(), "taskmanager".to_string())].into();
    let running = ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() };
    let container = ContainerStatus { name: "taskmanager".into(), state: Some(running), ..Default::default() };
    Pod {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() },
        status: Some(PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![container]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A fake of the job's pods: lists what it is told (none, unless told),
/// recording each list in the timeline.
pub struct TestingPods {
    pods: Vec<k8s_openapi::api::core::v1::Pod>,
    timeline: Timeline,
}

impl TestingPods {
    pub fn new(pods: Vec<k8s_openapi::api::core::v1::Pod>, timeline: Timeline) -> Self {
        TestingPods { pods, timeline }
    }
}

impl crate::pods::PodReader for TestingPods {
    fn pods<'a>(
        &'a self,
        _job: &'a StreamJob,
    ) -> BoxFuture<'a, Result<Vec<k8s_openapi::api::core::v1::Pod>, kube::Error>> {
        self.timeline.push("kube: list pods");
        let pods = self.pods.clone();
        Box::pin(async move { Ok(pods) })
    }
}

/// A fake JobManager (the Flink operator's `TestingFlinkService`): answers as
/// it is told, records each call in the timeline.
pub struct TestingJobManager {
    /// What `GET /v1/jobs/{job}` answers; `None`: the JobManager does not answer.
    pub job: Mutex<Option<JobDetails>>,
    /// What every savepoint's (and rescale's) status is.
    pub savepoint: Mutex<SavepointStatus>,
    /// The refusal of a rescale, when the JobManager is to refuse one.
    pub refuse_rescale: Mutex<Option<(http::StatusCode, String)>>,
    triggers: AtomicU64,
    timeline: Timeline,
}

impl TestingJobManager {
    fn unreachable(job: &StreamJob) -> JobManagerError {
        JobManagerError::Timeout {
            url: format!("http://{}-jobmanager.weir.svc:8081", job.name_any()),
            after: std::time::Duration::from_secs(10),
        }
    }
}

impl JobManagerClient for TestingJobManager {
    fn job<'a>(&'a self, job: &'a StreamJob) -> BoxFuture<'a, Result<JobDetails, JobManagerError>> {
        self.timeline.push("jobmanager: job");
        let answer = self.job.lock().unwrap().clone().ok_or_else(|| Self::unreachable(job));
        Box::pin(async move { answer })
    }

    fn job_over<'a>(
        &'a self,
        job: &'a StreamJob,
        window: std::time::Duration,
    ) -> BoxFuture<'a, Result<JobDetails, JobManagerError>> {
        self.timeline.push(format!("jobmanager: job over {}", weir_api::format_duration(window)));
        let answer = self.job.lock().unwrap().clone().ok_or_else(|| Self::unreachable(job));
        Box::pin(async move { answer })
    }

    fn trigger_savepoint<'a>(
        &'a self,
        job: &'a StreamJob,
        request: SavepointRequest,
    ) -> BoxFuture<'a, Result<TriggerResponse, JobManagerError>> {
        self.timeline.push(format!("jobmanager: trigger savepoint (stop: {})", request.stop));
        let n = self.triggers.fetch_add(1, Ordering::Relaxed) + 1;
        let answer = match self.job.lock().unwrap().as_ref() {
            Some(_) => Ok(TriggerResponse { trigger_id: format!("sp-trigger-{n}") }),
            None => Err(Self::unreachable(job)),
        };
        Box::pin(async move { answer })
    }

    fn rescale<'a>(
        &'a self,
        job: &'a StreamJob,
        request: RescaleRequest,
    ) -> BoxFuture<'a, Result<TriggerResponse, JobManagerError>> {
        let body = serde_json::to_string(&request).expect("a request serializes");
        self.timeline.push(format!("jobmanager: rescale {body}"));
        let n = self.triggers.fetch_add(1, Ordering::Relaxed) + 1;
        let url = format!("http://{}-jobmanager.weir.svc:8081/v1/jobs/{}/rescale", job.name_any(), job.name_any());
        let answer = match (self.job.lock().unwrap().as_ref(), self.refuse_rescale.lock().unwrap().clone()) {
            (None, _) => Err(Self::unreachable(job)),
            (Some(_), Some((status, message))) => Err(JobManagerError::Refused { url, status, message }),
            (Some(_), None) => Ok(TriggerResponse { trigger_id: format!("rescale-trigger-{n}") }),
        };
        Box::pin(async move { answer })
    }

    fn savepoint_status<'a>(
        &'a self,
        _job: &'a StreamJob,
        trigger_id: &'a str,
    ) -> BoxFuture<'a, Result<SavepointStatus, JobManagerError>> {
        self.timeline.push(format!("jobmanager: savepoint status {trigger_id}"));
        let answer = self.savepoint.lock().unwrap().clone();
        Box::pin(async move { Ok(answer) })
    }
}

/// A request the controller is expected to make of the API server, in order.
pub enum Expect {
    /// A server-side apply of the StreamJob's status; the check sees the status written.
    Status(Box<dyn FnOnce(&StreamJobStatus) + Send>),
    /// A server-side apply of one of the job's objects: its resource (plural), name, and a check of its body.
    Apply { resource: &'static str, name: String, check: Box<dyn FnOnce(&serde_json::Value) + Send> },
    /// An event on the StreamJob.
    Event { reason: &'static str, warning: bool },
    /// The creation of one of the job's objects, answered as created or (`exists`) as already there.
    Create { resource: &'static str, name: String, exists: bool },
}

impl Expect {
    pub fn status(check: impl FnOnce(&StreamJobStatus) + Send + 'static) -> Expect {
        Expect::Status(Box::new(check))
    }

    pub fn apply(resource: &'static str, name: impl Into<String>) -> Expect {
        Expect::apply_with(resource, name, |_| {})
    }

    pub fn apply_with(
        resource: &'static str,
        name: impl Into<String>,
        check: impl FnOnce(&serde_json::Value) + Send + 'static,
    ) -> Expect {
        Expect::Apply { resource, name: name.into(), check: Box::new(check) }
    }
}

/// Checks the requests of a mocked kube [`Client`] and answers them as the API server would.
pub struct ApiServerVerifier {
    handle: Handle<Request<Body>, Response<Body>>,
    timeline: Timeline,
}

impl ApiServerVerifier {
    /// A client whose requests go to the verifier.
    pub fn pair() -> (Client, ApiServerVerifier) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, NAMESPACE), ApiServerVerifier { handle, timeline: Timeline::default() })
    }

    /// The next request, to check and answer by hand; `None` once every client is dropped.
    pub async fn next(&mut self) -> Option<(Request<Body>, SendResponse<Response<Body>>)> {
        self.handle.next_request().await
    }

    /// Checks each request against `expected`, in order, and answers it as the
    /// API server would (`job` is the StreamJob as the API server has it); then
    /// that no other request comes before every client is dropped.
    pub fn run(mut self, job: StreamJob, expected: Vec<Expect>) -> JoinHandle<()> {
        tokio::spawn(async move {
            for (i, expect) in expected.into_iter().enumerate() {
                let Some((request, send)) = self.next().await else {
                    panic!("request {i} was never made");
                };
                let (parts, body) = request.into_parts();
                let body: serde_json::Value = serde_json::from_slice(&body.collect_bytes().await.unwrap())
                    .unwrap_or_else(|e| panic!("request {i} ({} {}): not JSON: {e}", parts.method, parts.uri));
                let (method, path) = (&parts.method, parts.uri.path());
                let answer = match expect {
                    Expect::Status(check) => {
                        let object = job.meta().name.clone().unwrap();
                        assert_eq!(
                            (method, path),
                            (
                                &Method::PATCH,
                                &*format!("/apis/weir.dev/v1alpha1/namespaces/{NAMESPACE}/streamjobs/{object}/status")
                            ),
                            "request {i}"
                        );
                        assert_server_side_apply(&parts, i);
                        let patch: StatusPatch<StreamJobStatus> = serde_json::from_value(body).expect("a status patch");
                        assert_eq!(
                            (patch.api_version.as_str(), patch.kind.as_str()),
                            ("weir.dev/v1alpha1", "StreamJob")
                        );
                        let status = patch.status;
                        check(&status);
                        self.timeline.push("kube: apply status");
                        serde_json::to_vec(&job.clone().with_status(status)).unwrap()
                    }
                    Expect::Apply { resource, name, check } => {
                        let (group, kind) = match resource {
                            "configmaps" => ("api/v1", "ConfigMap"),
                            "serviceaccounts" => ("api/v1", "ServiceAccount"),
                            "services" => ("api/v1", "Service"),
                            "roles" => ("apis/rbac.authorization.k8s.io/v1", "Role"),
                            "rolebindings" => ("apis/rbac.authorization.k8s.io/v1", "RoleBinding"),
                            "networkpolicies" => ("apis/networking.k8s.io/v1", "NetworkPolicy"),
                            "deployments" => ("apis/apps/v1", "Deployment"),
                            other => panic!("no API group known for {other}"),
                        };
                        let expected = format!("/{group}/namespaces/{NAMESPACE}/{resource}/{name}");
                        assert_eq!((method, path), (&Method::PATCH, &*expected), "request {i}");
                        assert_server_side_apply(&parts, i);
                        let object: DynamicObject = serde_json::from_value(body.clone()).expect("an object");
                        let types = object.types.as_ref().map(|t| t.kind.as_str());
                        assert_eq!((types, object.metadata.name.as_deref()), (Some(kind), Some(&*name)), "request {i}");
                        let owners = object.metadata.owner_references.unwrap_or_default();
                        let owner = owners.iter().map(|o| (o.kind.as_str(), o.name.as_str(), o.controller));
                        assert_eq!(
                            owner.collect::<Vec<_>>(),
                            [("StreamJob", &*job.name_any(), Some(true))],
                            "request {i}"
                        );
                        check(&body);
                        self.timeline.push(format!("kube: apply {resource}/{name}"));
                        serde_json::to_vec(&body).unwrap()
                    }
                    Expect::Create { resource, name, exists } => {
                        let expected = format!("/api/v1/namespaces/{NAMESPACE}/{resource}");
                        assert_eq!((method, path), (&Method::POST, &*expected), "request {i}");
                        assert_eq!(body["metadata"]["name"], name.as_str(), "request {i}");
                        self.timeline.push(format!("kube: create {resource}/{name}"));
                        if exists {
                            let conflict = serde_json::json!({
                                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "message": format!("{resource} \"{name}\" already exists"),
                                "reason": "AlreadyExists", "code": 409
                            });
                            let response =
                                Response::builder().status(409).body(Body::from(conflict.to_string().into_bytes()));
                            send.send_response(response.unwrap());
                            continue;
                        }
                        serde_json::to_vec(&body).unwrap()
                    }
                    Expect::Event { reason, warning } => {
                        let expected = format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events");
                        assert_eq!((method, path), (&Method::POST, &*expected), "request {i}");
                        let event: KubeEvent = serde_json::from_value(body.clone()).expect("an event");
                        let type_ = if warning { "Warning" } else { "Normal" };
                        assert_eq!(
                            (event.reason.as_deref(), event.type_.as_deref()),
                            (Some(reason), Some(type_)),
                            "request {i}"
                        );
                        assert_eq!(event.regarding.and_then(|r| r.name), Some(job.name_any()), "request {i}");
                        self.timeline.push(format!("kube: event {reason}"));
                        serde_json::to_vec(&body).unwrap()
                    }
                };
                send.send_response(Response::builder().body(Body::from(answer)).unwrap());
            }
            if let Some((request, _)) = self.next().await {
                panic!("an unexpected request: {} {}", request.method(), request.uri());
            }
        })
    }
}

/// A server-side apply under the operator's field manager, forced.
fn assert_server_side_apply(parts: &http::request::Parts, i: usize) {
    let query = parts.uri.query().unwrap_or_default();
    assert!(query.contains(&format!("fieldManager={MANAGER}")) && query.contains("force=true"), "request {i}: {query}");
    assert_eq!(parts.headers[http::header::CONTENT_TYPE], "application/apply-patch+yaml", "request {i}");
}

impl Context {
    /// A controller context whose API server is a verifier and whose JobManager
    /// is a fake (answering `running` for `job`), sharing one timeline.
    pub fn test(job: &StreamJob) -> (Context, ApiServerVerifier, Arc<TestingJobManager>, Timeline) {
        let (client, verifier) = ApiServerVerifier::pair();
        let timeline = verifier.timeline.clone();
        let jobmanager = Arc::new(TestingJobManager {
            job: Mutex::new(Some(details(job, JobState::Running))),
            savepoint: Mutex::new(SavepointStatus::InProgress),
            refuse_rescale: Mutex::new(None),
            triggers: AtomicU64::new(0),
            timeline: timeline.clone(),
        });
        let reporter = Reporter { controller: MANAGER.into(), instance: None };
        let ctx = Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Arc::default(),
            jobmanager: jobmanager.clone(),
            autoscaler: crate::controller::Samples::default(),
            pods: Arc::new(TestingPods::new(Vec::new(), timeline.clone())),
        };
        (ctx, verifier, jobmanager, timeline)
    }
}
