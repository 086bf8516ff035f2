//! # weir-rest: the JobManager's REST API
//!
//! JSON over HTTP (DESIGN.md, "JobManager REST API"), served beside a running
//! job on a thread of its own:
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/jobs/{job}` | state, parallelism, per-vertex metrics, the latest checkpoint |
//! | `POST /v1/jobs/{job}/savepoints` `{stop?, drain?}` | `202 {trigger_id}` |
//! | `GET /v1/jobs/{job}/savepoints/{trigger_id}` | `{status: in_progress\|completed\|failed, path?, error?}` |
//! | `POST /v1/jobs/{job}/rescale` `{parallelism}` | `202 {trigger_id}`: savepoint, then restart at the new parallelism; its status at `savepoints/{trigger_id}` |
//! | `GET /v1/jobs/{job}/checkpoints` | the checkpoint history |
//! | `GET /v1/jobs` | the jobs here (one) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz` | 200 while the job has not failed (a readiness probe) |
//! | `GET /` | the web dashboard ([`dashboard`]) |
//!
//! The API serves any [`RestJob`]: a job running in this process
//! ([`LocalJob`]) or a cluster's JobManager ([`ClusterJob`]).
//!
//! Rates (records and milliseconds per second) follow Flink's metric
//! semantics: a sampler takes the subtasks' counters every second; per vertex,
//! record rates are summed over subtasks and time rates are the maximum.

pub mod dashboard;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weir_cluster::jobmanager::{JobManager, TaskManagerView};
use weir_core::checkpoint::coordinator::{CheckpointStats, CheckpointStatus};
use weir_core::executor::JobHandle;
use weir_core::metrics::MetricsSnapshot;

/// A savepoint (or rescale) under way: blocks until its outcome (the savepoint's URI).
pub type Pending = Box<dyn FnOnce() -> Result<String, String> + Send>;

/// A job the API can serve.
pub trait RestJob: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// The job now; `None` once it is gone.
    fn status(&self) -> Option<JobStatus>;
    fn savepoint(&self, stop: bool, drain: bool) -> Result<Pending, String>;
    fn rescale(&self, parallelism: usize) -> Result<Pending, String>;
}

/// What the API shows of a job.
#[derive(Clone, Debug)]
pub struct JobStatus {
    pub state: String,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub start_time: i64,
    pub chains: Vec<ChainStatus>,
    pub checkpoints: Vec<CheckpointStats>,
    pub taskmanagers: Vec<TaskManagerView>,
    pub restarts: u32,
    pub failure: Option<String>,
    /// The snapshot the job's current run started from; `None`: a fresh start.
    pub restored_from: Option<String>,
    /// The deployment its JobManager belongs to, when one was named.
    pub deployment: Option<String>,
}

/// One chain of vertices, with the metrics of each of its subtasks.
#[derive(Clone, Debug)]
pub struct ChainStatus {
    /// The chains this one reads from, with their partitioning.
    pub inputs: Vec<(usize, String)>,
    pub vertices: Vec<String>,
    pub uids: Vec<String>,
    pub is_source: bool,
    pub parallelism: usize,
    pub subtasks: Vec<MetricsSnapshot>,
}

/// What the API says about a job running in this process beyond its live handle.
#[derive(Clone, Debug)]
pub struct JobInfo {
    pub name: String,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub start_time: i64,
    /// The snapshot it was started from.
    pub restored_from: Option<String>,
}

/// A job running in this process (`weir run`), held weakly: the API never keeps a finished job alive.
pub struct LocalJob {
    pub job: Weak<JobHandle>,
    pub info: JobInfo,
}

impl RestJob for LocalJob {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn status(&self) -> Option<JobStatus> {
        let job = self.job.upgrade()?;
        let chains = job
            .chains
            .iter()
            .map(|c| ChainStatus {
                inputs: c.inputs.clone(),
                vertices: c.vertices.clone(),
                uids: c.uids.clone(),
                is_source: c.is_source,
                parallelism: c.parallelism,
                subtasks: c.subtasks.iter().map(|m| m.snapshot()).collect(),
            })
            .collect();
        Some(JobStatus {
            state: if job.is_finished() { "finished" } else { "running" }.into(),
            parallelism: self.info.parallelism,
            max_parallelism: self.info.max_parallelism,
            start_time: self.info.start_time,
            chains,
            checkpoints: job.checkpoints(),
            taskmanagers: Vec::new(),
            restarts: 0,
            failure: None,
            restored_from: self.info.restored_from.clone(),
            deployment: None,
        })
    }

    fn savepoint(&self, stop: bool, drain: bool) -> Result<Pending, String> {
        let job = self.job.upgrade().ok_or("the job has ended")?;
        let rx = job.savepoint(stop, drain).map_err(|e| e.to_string())?;
        Ok(Box::new(move || rx.recv().unwrap_or_else(|_| Err("the job ended before the savepoint completed".into()))))
    }

    fn rescale(&self, _parallelism: usize) -> Result<Pending, String> {
        Err("this job runs in one process (weir run without --taskmanagers): rescale it by stopping it with a savepoint and running it again with --restore and --parallelism".into())
    }
}

/// A cluster's job, through its JobManager.
pub struct ClusterJob(pub Arc<JobManager>);

impl RestJob for ClusterJob {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn status(&self) -> Option<JobStatus> {
        let v = self.0.view();
        let chains = v
            .layout
            .iter()
            .zip(v.metrics)
            .map(|(c, subtasks)| ChainStatus {
                inputs: c.inputs.clone(),
                vertices: c.vertices.clone(),
                uids: c.uids.clone(),
                is_source: c.is_source,
                parallelism: c.parallelism,
                subtasks,
            })
            .collect();
        Some(JobStatus {
            state: v.state.to_string(),
            parallelism: v.parallelism,
            max_parallelism: v.max_parallelism,
            start_time: v.start_time,
            chains,
            checkpoints: v.checkpoints,
            taskmanagers: v.taskmanagers,
            restarts: v.restarts,
            failure: v.failure,
            restored_from: v.restored_from,
            deployment: v.deployment,
        })
    }

    fn savepoint(&self, stop: bool, drain: bool) -> Result<Pending, String> {
        let rx = self.0.savepoint(stop, drain)?;
        Ok(Box::new(move || rx.recv().unwrap_or_else(|_| Err("the job ended before the savepoint completed".into()))))
    }

    fn rescale(&self, parallelism: usize) -> Result<Pending, String> {
        let rx = self.0.rescale(parallelism)?;
        Ok(Box::new(move || rx.recv().unwrap_or_else(|_| Err("the job ended before the rescale completed".into()))))
    }
}

/// Per-second rates of one vertex, from the last two samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VertexRates {
    pub records_in_per_s: f64,
    pub records_out_per_s: f64,
    pub busy_ms_per_s: f64,
    pub backpressured_ms_per_s: f64,
    pub idle_ms_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum SavepointStatus {
    InProgress,
    Completed { path: String },
    Failed { error: String },
}

struct Shared {
    job: Arc<dyn RestJob>,
    /// Rates per chain, refreshed by the sampler.
    rates: Mutex<Vec<VertexRates>>,
    /// Each trigger's status, and whether its final outcome was read.
    savepoints: Mutex<HashMap<String, (SavepointStatus, bool)>>,
    next_trigger: AtomicU64,
    /// Finished savepoint triggers whose outcome nobody has read yet.
    unread: AtomicU64,
}

/// A running REST server; stops when dropped.
pub struct RestServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Drop for RestServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl RestServer {
    /// Binds `addr` (port 0 picks a free one) and serves the API of `job`.
    pub fn start(addr: SocketAddr, job: Arc<dyn RestJob>) -> std::io::Result<RestServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            job,
            rates: Mutex::new(Vec::new()),
            savepoints: Mutex::new(HashMap::new()),
            next_trigger: AtomicU64::new(1),
            unread: AtomicU64::new(0),
        });
        let lingering = shared.clone();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("rest".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("REST API: {e}"),
                };
                tokio::spawn(sample(shared.clone()));
                let app = router(shared);
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = serve.await {
                    tracing::error!("REST API: {e}");
                }
            })
        })?;
        Ok(RestServer { addr, shutdown: Some(shutdown), thread: Some(thread), shared: lingering })
    }

    /// Keeps serving, up to `max`, until every finished savepoint's outcome was read
    /// (a stop-with-savepoint ends the job right away; its caller still wants the path).
    pub fn linger(&self, max: Duration) {
        let deadline = Instant::now() + max;
        while self.shared.unread.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(dashboard::PAGE) }))
        .route("/healthz", get(healthz))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{job}", get(job))
        .route("/v1/jobs/{job}/rescale", post(rescale))
        .route("/v1/jobs/{job}/checkpoints", get(checkpoints))
        .route("/v1/jobs/{job}/savepoints", post(trigger_savepoint))
        .route("/v1/jobs/{job}/savepoints/{trigger}", get(savepoint_status))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError(status, message.into()).into_response()
}

/// An error answer: a status and a sentence, as `{"error": ...}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// The job's status, when `name` is this job's and it is still there.
fn the_job(s: &Shared, name: &str) -> Result<JobStatus, ApiError> {
    if name != s.job.name() {
        let message = format!("no job `{name}` here; this JobManager runs `{}`", s.job.name());
        return Err(ApiError(StatusCode::NOT_FOUND, message));
    }
    s.job.status().ok_or_else(|| ApiError(StatusCode::GONE, format!("job `{name}` has ended")))
}

/// Samples every subtask's counters once a second and turns them into rates.
async fn sample(s: Arc<Shared>) {
    let mut last: Option<(Instant, Vec<Vec<MetricsSnapshot>>)> = None;
    loop {
        let Some(status) = s.job.status() else { return };
        let now: Vec<Vec<MetricsSnapshot>> = status.chains.into_iter().map(|c| c.subtasks).collect();
        let t = Instant::now();
        if let Some((t0, before)) = &last {
            let secs = t.duration_since(*t0).as_secs_f64().max(1e-3);
            let rates = now
                .iter()
                .zip(before)
                .map(|(chain, prev)| {
                    let mut r = VertexRates::default();
                    for (a, b) in chain.iter().zip(prev) {
                        let per_s = |x: u64, y: u64| x.saturating_sub(y) as f64 / secs;
                        r.records_in_per_s += per_s(a.records_in, b.records_in);
                        r.records_out_per_s += per_s(a.records_out, b.records_out);
                        r.busy_ms_per_s = r.busy_ms_per_s.max(per_s(a.busy_ns, b.busy_ns) / 1e6);
                        r.backpressured_ms_per_s =
                            r.backpressured_ms_per_s.max(per_s(a.backpressured_ns, b.backpressured_ns) / 1e6);
                        r.idle_ms_per_s = r.idle_ms_per_s.max(per_s(a.idle_ns, b.idle_ns) / 1e6);
                    }
                    // Time shares of a second cannot exceed it (samples are not exactly a second apart).
                    r.busy_ms_per_s = r.busy_ms_per_s.min(1000.0);
                    r.backpressured_ms_per_s = r.backpressured_ms_per_s.min(1000.0);
                    r.idle_ms_per_s = r.idle_ms_per_s.min(1000.0);
                    r
                })
                .collect();
            *s.rates.lock().expect("rates poisoned") = rates;
        }
        last = Some((t, now));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    match s.job.status() {
        Some(st) if st.state != "failed" => Json(json!({ "status": "ok", "state": st.state })).into_response(),
        Some(st) => {
            error(StatusCode::SERVICE_UNAVAILABLE, format!("the job failed: {}", st.failure.unwrap_or_default()))
        }
        None => Json(json!({ "status": "ok", "state": "finished" })).into_response(),
    }
}

async fn jobs(State(s): State<Arc<Shared>>) -> Response {
    let state = s.job.status().map_or("finished".to_string(), |st| st.state);
    Json(json!({ "jobs": [{ "id": s.job.name(), "name": s.job.name(), "state": state }] })).into_response()
}

fn latest_completed(history: &[CheckpointStats]) -> Value {
    history.iter().rev().find(|c| c.status == CheckpointStatus::Completed).map_or(Value::Null, |c| {
        json!({ "id": c.id, "path": c.path, "completed_at": c.triggered_at + c.duration_ms, "size_bytes": c.size_bytes })
    })
}

async fn job(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let job = match the_job(&s, &name) {
        Ok(j) => j,
        Err(e) => return e.into_response(),
    };
    let rates = s.rates.lock().expect("rates poisoned").clone();
    let mut vertices = Vec::new();
    let mut edges = Vec::new();
    for (i, chain) in job.chains.iter().enumerate() {
        let agg = MetricsSnapshot::aggregate(chain.subtasks.iter().copied());
        let r = rates.get(i).cloned().unwrap_or_default();
        for (uid, name) in chain.uids.iter().zip(&chain.vertices) {
            match vertices.last().and_then(|v: &Value| v["id"].as_str()).filter(|_| uid != &chain.uids[0]) {
                Some(prev) => edges.push(json!({ "from": prev, "to": uid, "ship_strategy": "chained" })),
                None => {
                    for (from, strategy) in &chain.inputs {
                        let from = job.chains[*from].uids.last().cloned().unwrap_or_default();
                        edges.push(json!({ "from": from, "to": uid, "ship_strategy": strategy }));
                    }
                }
            }
            vertices.push(json!({
                "id": uid,
                "name": name,
                "parallelism": chain.parallelism,
                "chain": i,
                "metrics": {
                    "records_in_per_s": r.records_in_per_s,
                    "records_out_per_s": r.records_out_per_s,
                    "busy_ms_per_s": r.busy_ms_per_s,
                    "backpressured_ms_per_s": r.backpressured_ms_per_s,
                    "idle_ms_per_s": r.idle_ms_per_s,
                    "pending_records": (agg.pending_records >= 0).then_some(agg.pending_records),
                    "current_watermark": agg.current_watermark,
                    "records_in": agg.records_in,
                    "records_out": agg.records_out,
                    "late_records": agg.late_records,
                },
            }));
        }
    }
    Json(json!({
        "id": name,
        "name": name,
        "state": job.state,
        "parallelism": job.parallelism,
        "max_parallelism": job.max_parallelism,
        "start_time": job.start_time,
        "vertices": vertices,
        "edges": edges,
        "checkpoints": { "latest": latest_completed(&job.checkpoints) },
        "taskmanagers": job.taskmanagers,
        "restarts": job.restarts,
        "failure": job.failure,
        "restored_from": job.restored_from,
        "deployment": job.deployment,
    }))
    .into_response()
}

async fn checkpoints(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match the_job(&s, &name) {
        Ok(job) => {
            let history = job.checkpoints;
            Json(json!({ "latest": latest_completed(&history), "history": history })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavepointRequest {
    dir: Option<String>,
    #[serde(default)]
    stop: bool,
    #[serde(default)]
    drain: bool,
}

async fn trigger_savepoint(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Option<Json<SavepointRequest>>,
) -> Response {
    if let Err(e) = the_job(&s, &name) {
        return e.into_response();
    }
    let request = body.map(|Json(r)| r).unwrap_or_default();
    if request.dir.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "`dir`: savepoints go under the job's checkpoint directory (savepoints/sp-N); another directory is not supported yet",
        );
    }
    match s.job.savepoint(request.stop, request.drain) {
        Ok(pending) => track(&s, "sp-trigger", pending),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RescaleRequest {
    parallelism: usize,
}

async fn rescale(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Option<Json<RescaleRequest>>,
) -> Response {
    if let Err(e) = the_job(&s, &name) {
        return e.into_response();
    }
    let Some(Json(request)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected a JSON body {\"parallelism\": N}");
    };
    match s.job.rescale(request.parallelism) {
        Ok(pending) => track(&s, "rescale-trigger", pending),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

/// Records a trigger, waits for its outcome beside the server, and answers `202 {trigger_id}`.
fn track(s: &Arc<Shared>, prefix: &str, pending: Pending) -> Response {
    let trigger_id = format!("{prefix}-{}", s.next_trigger.fetch_add(1, Ordering::Relaxed));
    s.savepoints.lock().expect("savepoints poisoned").insert(trigger_id.clone(), (SavepointStatus::InProgress, false));
    let (shared, id) = (s.clone(), trigger_id.clone());
    std::thread::spawn(move || {
        let status = match pending() {
            Ok(path) => SavepointStatus::Completed { path },
            Err(error) => SavepointStatus::Failed { error },
        };
        shared.unread.fetch_add(1, Ordering::Relaxed);
        shared.savepoints.lock().expect("savepoints poisoned").insert(id, (status, false));
    });
    (StatusCode::ACCEPTED, Json(json!({ "trigger_id": trigger_id }))).into_response()
}

async fn savepoint_status(State(s): State<Arc<Shared>>, Path((name, trigger)): Path<(String, String)>) -> Response {
    if name != s.job.name() {
        return error(StatusCode::NOT_FOUND, format!("no job `{name}` here"));
    }
    let mut savepoints = s.savepoints.lock().expect("savepoints poisoned");
    let entry = savepoints.get_mut(&trigger);
    if let Some((status, read)) = entry
        && !matches!(status, SavepointStatus::InProgress)
        && !*read
    {
        *read = true;
        s.unread.fetch_sub(1, Ordering::Relaxed);
    }
    match savepoints.get(&trigger).map(|(status, _)| status) {
        None => error(StatusCode::NOT_FOUND, format!("no savepoint trigger `{trigger}`")),
        Some(SavepointStatus::InProgress) => Json(json!({ "status": "in_progress" })).into_response(),
        Some(SavepointStatus::Completed { path }) => {
            Json(json!({ "status": "completed", "path": path })).into_response()
        }
        Some(SavepointStatus::Failed { error }) => Json(json!({ "status": "failed", "error": error })).into_response(),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let Some(job) = s.job.status() else { return error(StatusCode::GONE, "the job has ended") };
    let rates = s.rates.lock().expect("rates poisoned").clone();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in samples {
            out.push_str(&format!("{name}{{{labels}}} {v}\n"));
        }
    };
    let job_name = s.job.name();
    let per_vertex = |f: &dyn Fn(usize) -> f64| -> Vec<(String, f64)> {
        job.chains
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                let v = f(i);
                c.uids.iter().map(move |uid| (format!("job=\"{job_name}\",vertex=\"{uid}\""), v)).collect::<Vec<_>>()
            })
            .collect()
    };
    let aggs: Vec<MetricsSnapshot> =
        job.chains.iter().map(|c| MetricsSnapshot::aggregate(c.subtasks.iter().copied())).collect();
    let rate = |i: usize, f: fn(&VertexRates) -> f64| rates.get(i).map_or(0.0, f);
    family("weir_records_in_total", "counter", "Records received.", per_vertex(&|i| aggs[i].records_in as f64));
    family("weir_records_out_total", "counter", "Records sent.", per_vertex(&|i| aggs[i].records_out as f64));
    family(
        "weir_late_records_total",
        "counter",
        "Late records dropped or sent aside.",
        per_vertex(&|i| aggs[i].late_records as f64),
    );
    family(
        "weir_busy_ms_per_second",
        "gauge",
        "Busy time (max over subtasks).",
        per_vertex(&|i| rate(i, |r| r.busy_ms_per_s)),
    );
    family(
        "weir_backpressured_ms_per_second",
        "gauge",
        "Time blocked by downstream (max over subtasks).",
        per_vertex(&|i| rate(i, |r| r.backpressured_ms_per_s)),
    );
    family(
        "weir_idle_ms_per_second",
        "gauge",
        "Time waiting for input (max over subtasks).",
        per_vertex(&|i| rate(i, |r| r.idle_ms_per_s)),
    );
    family(
        "weir_current_watermark_ms",
        "gauge",
        "Current event-time watermark.",
        per_vertex(&|i| aggs[i].current_watermark as f64),
    );
    let history = &job.checkpoints;
    let count = |st| history.iter().filter(|c| c.status == st).count() as f64;
    family(
        "weir_checkpoints_total",
        "counter",
        "Checkpoints by outcome.",
        vec![
            (format!("job=\"{job_name}\",status=\"completed\""), count(CheckpointStatus::Completed)),
            (format!("job=\"{job_name}\",status=\"failed\""), count(CheckpointStatus::Failed)),
        ],
    );
    if let Some(c) = history.iter().rev().find(|c| c.status == CheckpointStatus::Completed) {
        family(
            "weir_last_checkpoint_duration_ms",
            "gauge",
            "Duration of the latest completed checkpoint.",
            vec![(format!("job=\"{job_name}\""), c.duration_ms as f64)],
        );
        family(
            "weir_last_checkpoint_size_bytes",
            "gauge",
            "Size of the latest completed checkpoint.",
            vec![(format!("job=\"{job_name}\""), c.size_bytes as f64)],
        );
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
