//! # weir-rest: the JobManager's REST API
//!
//! JSON over HTTP (DESIGN.md, "JobManager REST API"), served beside a running
//! job on a thread of its own. Every request and answer is a type of
//! [`weir_api::rest`], which the operator and the CLI read back:
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/jobs/{job}[?window=60s]` | [`JobDetails`]: state, parallelism, per-vertex and per-subtask metrics (rates over the window, default the last second; at most 15 minutes, never across a restart), the latest checkpoint |
//! | `POST /v1/jobs/{job}/savepoints` `{stop?, drain?}` | `202 {trigger_id}` |
//! | `GET /v1/jobs/{job}/savepoints/{trigger_id}` | `{status: in_progress\|completed\|failed, path?, error?}` |
//! | `POST /v1/jobs/{job}/rescale` `{parallelism}` | `202 {trigger_id}`: savepoint, then restart at the new parallelism; its status at `savepoints/{trigger_id}` |
//! | `GET /v1/jobs/{job}/checkpoints` | the checkpoint history |
//! | `GET /v1/jobs` | the jobs here (one) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz` | 200 while the job has not failed (a readiness probe) |
//! | `GET /` | the web dashboard ([`dashboard`]) |
//!
//! ## Requests that change the job
//!
//! Every request but `GET`, `HEAD` and `OPTIONS` goes through one guard
//! before its handler: when the job has a secret (`--auth-secret-file`), it
//! must carry `Authorization: Bearer <token>` (or the token alone in
//! [`TOKEN_HEADER`], which passes proxies that take `Authorization` for
//! themselves), the token being [`Secret::rest_token`] (derived from the secret, never the secret), else `401`; and its body must be
//! declared `Content-Type: application/json`, else `415`. A browser cannot
//! send that content type to another origin without a CORS preflight, which
//! this server never grants, so a cross-site form post changes nothing.
//! A body over [`MAX_REQUEST_BODY`] is not read (`413`).
//! Read-only endpoints (the job, its checkpoints, a trigger's status,
//! `/metrics`, `/healthz`, the dashboard) stay open.
//!
//! At most [`MAX_TRIGGERS_IN_PROGRESS`] savepoint and rescale triggers are in
//! progress at once (another is refused with `429`), and the outcomes of the
//! last [`FINISHED_TRIGGERS_KEPT`] finished ones are kept. A rescale to a
//! parallelism no job can run at (0, or above the job's max parallelism,
//! its key groups) is refused with `400` before it reaches the JobManager.
//!
//! The API serves a [`RestJob`]: a JobManager's job ([`ClusterJob`]; `weir
//! run` runs one too), or a fixed one in the tests here. It reports a
//! [`JobReport`], from which the handlers build the answers.
//!
//! Rates (records and milliseconds per second) follow Flink's metric
//! semantics: a sampler takes the subtasks' counters every second and turns
//! them into each subtask's rates; per vertex, record rates are summed over
//! subtasks and time rates are the maximum.

pub mod dashboard;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use weir_api::rest::{
    CheckpointHistory, CheckpointRef, Edge, ErrorBody, Health, HealthStatus, JobDetails, JobList, JobState, JobSummary,
    LatestCheckpoint, MAX_METRICS_WINDOW, Metrics, RescaleRequest, SavepointRequest, SavepointStatus, SubtaskMetrics,
    TOKEN_HEADER, TaskManager, TriggerFailure, TriggerResponse, Vertex,
};
use weir_cluster::auth::Secret;
use weir_cluster::jobmanager::{JobManager, TaskManagerView};
use weir_core::checkpoint::coordinator::{CheckpointStats, CheckpointStatus};
use weir_core::checkpoint::metadata::SnapshotKind;
use weir_core::metrics::{GaugeKey, MetricsSnapshot};

/// A savepoint (or rescale) under way: blocks until its outcome (the savepoint's URI).
pub type Pending = Box<dyn FnOnce() -> Result<String, TriggerFailure> + Send>;

/// A job the API can serve.
pub trait RestJob: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// The job now; `None` once it is gone.
    fn status(&self) -> Option<JobReport>;
    fn savepoint(&self, stop: bool, drain: bool) -> Result<Pending, String>;
    /// Starts the rescale `request` states; an `Err` is a refusal (nothing changed).
    fn rescale(&self, request: RescaleRequest) -> Result<Pending, String>;
}

/// What a job reports to the API, from which its answers are built.
#[derive(Clone, Debug)]
pub struct JobReport {
    pub state: JobState,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub start_time: i64,
    pub chains: Vec<ChainReport>,
    pub checkpoints: Vec<CheckpointStats>,
    pub taskmanagers: Vec<TaskManagerView>,
    pub restarts: u32,
    pub failure: Option<String>,
    /// The snapshot the job's current run started from; `None`: a fresh start.
    pub restored_from: Option<String>,
    /// The deployment its JobManager belongs to, when one was named.
    pub deployment: Option<String>,
    /// The job's own gauges (a pipeline's `metric` step), by name and labels.
    pub gauges: Vec<(GaugeKey, f64)>,
}

/// One chain of vertices, with the metrics of each of its subtasks.
#[derive(Clone, Debug)]
pub struct ChainReport {
    /// The chains this one reads from, with their partitioning.
    pub inputs: Vec<(usize, String)>,
    pub vertices: Vec<String>,
    pub uids: Vec<String>,
    pub is_source: bool,
    pub parallelism: usize,
    pub subtasks: Vec<MetricsSnapshot>,
}

/// A cluster's job, through its JobManager.
pub struct ClusterJob(pub Arc<JobManager>);

impl RestJob for ClusterJob {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn status(&self) -> Option<JobReport> {
        let v = self.0.view();
        let chains = v
            .layout
            .iter()
            .zip(v.metrics)
            .map(|(c, subtasks)| ChainReport {
                inputs: c.inputs.clone(),
                vertices: c.vertices.clone(),
                uids: c.uids.clone(),
                is_source: c.is_source,
                parallelism: c.parallelism,
                subtasks,
            })
            .collect();
        Some(JobReport {
            state: v.state,
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
            gauges: v.gauges.into_iter().collect(),
        })
    }

    fn savepoint(&self, stop: bool, drain: bool) -> Result<Pending, String> {
        let rx = self.0.savepoint(stop, drain)?;
        let outcome = move || rx.recv().unwrap_or_else(|_| Err("the job ended before the savepoint completed".into()));
        Ok(Box::new(move || outcome().map_err(TriggerFailure::from)))
    }

    fn rescale(&self, request: RescaleRequest) -> Result<Pending, String> {
        let rx = self.0.rescale(request)?;
        Ok(Box::new(move || rx.recv().unwrap_or_else(|_| Err("the job ended before the rescale completed".into()))))
    }
}

/// Per-second rates of one subtask, or of a vertex over its subtasks, between two samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub records_in_per_s: f64,
    pub records_out_per_s: f64,
    pub busy_ms_per_s: f64,
    pub backpressured_ms_per_s: f64,
    pub idle_ms_per_s: f64,
    /// Records in per second of busy time; `None` when never busy.
    pub true_rate: Option<f64>,
}

impl Rates {
    /// A subtask's rates between two samples of its counters `secs` apart.
    fn between(now: &MetricsSnapshot, before: &MetricsSnapshot, secs: f64) -> Rates {
        let per_s = |x: u64, y: u64| x.saturating_sub(y) as f64 / secs;
        // Time shares of a second cannot exceed it (samples are not exactly a second apart).
        let ms_per_s = |x: u64, y: u64| (per_s(x, y) / 1e6).min(1000.0);
        let busy_s = now.busy_ns.saturating_sub(before.busy_ns) as f64 / 1e9;
        let records_in = now.records_in.saturating_sub(before.records_in) as f64;
        Rates {
            records_in_per_s: per_s(now.records_in, before.records_in),
            records_out_per_s: per_s(now.records_out, before.records_out),
            busy_ms_per_s: ms_per_s(now.busy_ns, before.busy_ns),
            backpressured_ms_per_s: ms_per_s(now.backpressured_ns, before.backpressured_ns),
            idle_ms_per_s: ms_per_s(now.idle_ns, before.idle_ns),
            // Under a millisecond of work says nothing about a rate.
            true_rate: (busy_s >= 1e-3).then(|| records_in / busy_s),
        }
    }

    /// A vertex's rates from its subtasks': record rates summed, time rates
    /// the maximum, the true rate the mean of the known ones times the
    /// parallelism (what the vertex takes with every subtask busy).
    pub fn aggregate<'a>(subtasks: impl IntoIterator<Item = &'a Rates>) -> Rates {
        let (mut n, mut known, mut true_sum) = (0usize, 0usize, 0.0);
        let mut agg = Rates::default();
        for s in subtasks {
            n += 1;
            agg.records_in_per_s += s.records_in_per_s;
            agg.records_out_per_s += s.records_out_per_s;
            agg.busy_ms_per_s = agg.busy_ms_per_s.max(s.busy_ms_per_s);
            agg.backpressured_ms_per_s = agg.backpressured_ms_per_s.max(s.backpressured_ms_per_s);
            agg.idle_ms_per_s = agg.idle_ms_per_s.max(s.idle_ms_per_s);
            if let Some(r) = s.true_rate {
                known += 1;
                true_sum += r;
            }
        }
        agg.true_rate = (known > 0).then(|| true_sum / known as f64 * n as f64);
        agg
    }

    /// The API's metrics: these rates, and the counters of `counts`.
    fn with_counts(self, counts: &MetricsSnapshot) -> Metrics {
        Metrics {
            records_in_per_s: self.records_in_per_s,
            records_out_per_s: self.records_out_per_s,
            busy_ms_per_s: self.busy_ms_per_s,
            backpressured_ms_per_s: self.backpressured_ms_per_s,
            idle_ms_per_s: self.idle_ms_per_s,
            pending_records: (counts.pending_records >= 0).then_some(counts.pending_records),
            true_processing_rate: self.true_rate,
            current_watermark: counts.current_watermark,
            records_in: counts.records_in,
            records_out: counts.records_out,
            late_records: counts.late_records,
        }
    }
}

/// One sample of every subtask's counters, per chain.
struct Sample {
    at: Instant,
    counters: Vec<Vec<MetricsSnapshot>>,
}

/// The samples of the job's current run, up to [`MAX_METRICS_WINDOW`] back,
/// from which rates over any window are computed.
#[derive(Default)]
struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Adds a sample. A run that changed shape (a rescale) or whose counters
    /// went back (a restart's new tasks count from zero) starts a new history:
    /// rates never span two runs.
    fn push(&mut self, at: Instant, counters: Vec<Vec<MetricsSnapshot>>) {
        if let Some(last) = self.samples.back()
            && !continues(&last.counters, &counters)
        {
            self.samples.clear();
        }
        self.samples.push_back(Sample { at, counters });
        let keep = MAX_METRICS_WINDOW + Duration::from_secs(2);
        while self.samples.front().is_some_and(|s| at.duration_since(s.at) > keep) {
            self.samples.pop_front();
        }
    }

    /// Per chain, per subtask: the rates over the last `window` (at least the
    /// last two samples), and the span they cover.
    fn rates(&self, window: Duration) -> (Vec<Vec<Rates>>, Duration) {
        let Some(newest) = self.samples.back() else { return (Vec::new(), Duration::ZERO) };
        let oldest = self
            .samples
            .iter()
            .rev()
            .skip(1)
            .take_while(|s| newest.at.duration_since(s.at) <= window + Duration::from_millis(500))
            .last()
            .or_else(|| self.samples.iter().rev().nth(1));
        let Some(oldest) = oldest else { return (Vec::new(), Duration::ZERO) };
        let span = newest.at.duration_since(oldest.at);
        let secs = span.as_secs_f64().max(1e-3);
        let rates = newest
            .counters
            .iter()
            .zip(&oldest.counters)
            .map(|(chain, prev)| chain.iter().zip(prev).map(|(a, b)| Rates::between(a, b, secs)).collect())
            .collect();
        (rates, span)
    }
}

/// Whether `now` counts on from `before`: the same chains and subtasks, no
/// record counter gone back (a restart's tasks count from zero). Busy time
/// may go back a little and say nothing of a restart: it is the time neither
/// idle nor backpressured, and a blocked send is counted as backpressured only
/// once it ends (a rate over it is clamped at zero).
fn continues(before: &[Vec<MetricsSnapshot>], now: &[Vec<MetricsSnapshot>]) -> bool {
    before.len() == now.len()
        && before.iter().zip(now).all(|(b, n)| {
            b.len() == n.len()
                && b.iter().zip(n).all(|(b, n)| n.records_in >= b.records_in && n.records_out >= b.records_out)
        })
}

struct Shared {
    job: Arc<dyn RestJob>,
    /// What a request that changes the job must carry as its bearer token,
    /// as a [`Secret`] (compared in constant time); `None`: no secret.
    bearer: Option<Secret>,
    /// The sampler's samples of every subtask's counters.
    history: Mutex<History>,
    triggers: Mutex<Triggers>,
}

/// At most this many savepoint and rescale triggers are in progress at once;
/// another is refused (`429`) until one finishes.
pub const MAX_TRIGGERS_IN_PROGRESS: usize = 4;
/// The outcomes of this many finished triggers are kept; older ones are forgotten (`404`).
pub const FINISHED_TRIGGERS_KEPT: usize = 100;

/// The savepoint and rescale triggers: those in progress, and the outcomes
/// of the last [`FINISHED_TRIGGERS_KEPT`] finished ones.
#[derive(Default)]
struct Triggers {
    /// Each trigger's status, and whether its final outcome was read.
    status: HashMap<String, (SavepointStatus, bool)>,
    /// The finished triggers, oldest first.
    finished: VecDeque<String>,
    in_progress: usize,
    /// In-progress triggers of idempotent requests (a rescale, a stop), by
    /// what they ask: the same request again joins the one under way.
    joinable: HashMap<String, String>,
    /// The number of the last trigger.
    last: u64,
    /// Finished triggers whose outcome nobody has read yet.
    unread: usize,
}

impl Triggers {
    /// A new trigger, in progress: its id and `true`; or, for a request
    /// (`joins`: what it asks) the same as one in progress, that one's id and
    /// `false`. Refused when [`MAX_TRIGGERS_IN_PROGRESS`] are in progress already.
    fn open(&mut self, prefix: &str, joins: Option<String>) -> Result<(String, bool), ApiError> {
        if let Some(id) = joins.as_ref().and_then(|what| self.joinable.get(what)) {
            return Ok((id.clone(), false));
        }
        if self.in_progress >= MAX_TRIGGERS_IN_PROGRESS {
            let message = format!(
                "{MAX_TRIGGERS_IN_PROGRESS} savepoint or rescale triggers are in progress already; \
                 try again once one has finished"
            );
            return Err(ApiError(StatusCode::TOO_MANY_REQUESTS, message));
        }
        self.last += 1;
        let id = format!("{prefix}-{}", self.last);
        self.status.insert(id.clone(), (SavepointStatus::InProgress, false));
        self.in_progress += 1;
        if let Some(what) = joins {
            self.joinable.insert(what, id.clone());
        }
        Ok((id, true))
    }

    /// Forgets a trigger that started nothing (the job refused it).
    fn forget(&mut self, id: &str) {
        if self.status.remove(id).is_some() {
            self.in_progress -= 1;
        }
        self.joinable.retain(|_, joined| joined != id);
    }

    /// Records a trigger's outcome; the oldest outcome beyond [`FINISHED_TRIGGERS_KEPT`] is forgotten.
    fn finish(&mut self, id: String, outcome: SavepointStatus) {
        let Some((status, _)) = self.status.get_mut(&id) else { return };
        if *status != SavepointStatus::InProgress {
            return;
        }
        *status = outcome;
        self.in_progress -= 1;
        self.joinable.retain(|_, joined| *joined != id);
        self.unread += 1;
        self.finished.push_back(id);
        while self.finished.len() > FINISHED_TRIGGERS_KEPT {
            let oldest = self.finished.pop_front().expect("more than FINISHED_TRIGGERS_KEPT");
            if let Some((_, false)) = self.status.remove(&oldest) {
                self.unread -= 1;
            }
        }
    }

    /// A trigger's status, if it is known; a final outcome counts as read.
    fn read(&mut self, id: &str) -> Option<SavepointStatus> {
        let (status, read) = self.status.get_mut(id)?;
        if *status != SavepointStatus::InProgress && !*read {
            *read = true;
            self.unread -= 1;
        }
        Some(status.clone())
    }
}

impl Shared {
    /// Per chain: its subtasks' rates over the last `window`, and the span they cover.
    fn rates(&self, window: Duration) -> (Vec<Vec<Rates>>, Duration) {
        self.history.lock().expect("history poisoned").rates(window)
    }

    fn triggers(&self) -> std::sync::MutexGuard<'_, Triggers> {
        self.triggers.lock().expect("triggers poisoned")
    }
}

/// The window of the rates when the caller names none: the last second, as Flink's gauges.
const DEFAULT_WINDOW: Duration = Duration::from_secs(1);

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
    /// With the job's `secret`, a request that changes the job must carry
    /// its [REST token](Secret::rest_token).
    pub fn start(addr: SocketAddr, job: Arc<dyn RestJob>, secret: Option<Secret>) -> std::io::Result<RestServer> {
        let bearer = secret
            .map(|s| Secret::new(s.rest_token().as_bytes(), "the REST bearer token"))
            .transpose()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            job,
            bearer,
            history: Mutex::new(History::default()),
            triggers: Mutex::new(Triggers::default()),
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
        while self.shared.triggers().unread > 0 && Instant::now() < deadline {
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
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(shared)
}

/// The largest request body read (a request is a few fields); a larger one is refused (`413`).
pub const MAX_REQUEST_BODY: usize = 64 << 10;

/// Lets a request that may change the job (any method but `GET`, `HEAD` and
/// `OPTIONS`) through only with the job's bearer token, when it has a
/// secret, and a JSON body.
async fn guard(State(s): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    if let Err(e) = authorize(s.bearer.as_ref(), request.headers()) {
        tracing::warn!("REST API: refused {} {}: {}", request.method(), request.uri().path(), e.1);
        let mut answer = e.into_response();
        answer.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return answer;
    }
    if let Err(e) = json_content_type(request.headers()) {
        return e.into_response();
    }
    next.run(request).await
}

/// Whether `headers` carry `Authorization: Bearer <token>` with the token
/// `bearer` (if any) expects; a refusal says what is missing, never the token.
fn authorize(bearer: Option<&Secret>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(bearer) = bearer else { return Ok(()) };
    let refuse = |why: &str| Err(ApiError(StatusCode::UNAUTHORIZED, why.to_string()));
    if let Some(token) = headers.get(TOKEN_HEADER) {
        return match bearer.matches(token.as_bytes().trim_ascii()) {
            true => Ok(()),
            false => refuse(&format!("the `{TOKEN_HEADER}` header is not the job's secret")),
        };
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return refuse(
            "this job has a secret: a request that changes it needs `Authorization: Bearer <token>` \
             with the job's secret (--auth-secret-file)",
        );
    };
    let value = value.as_bytes().trim_ascii();
    let token = match value.iter().position(|&b| b == b' ') {
        Some(space) if value[..space].eq_ignore_ascii_case(b"bearer") => value[space..].trim_ascii(),
        _ => return refuse("the `Authorization` header is not `Bearer <token>`"),
    };
    match bearer.matches(token) {
        true => Ok(()),
        false => refuse("the bearer token is not the job's secret"),
    }
}

/// Whether `headers` declare a JSON body (`application/json`, or `application/*+json`).
fn json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = given.as_deref().and_then(|t| t.split(';').next()).map(|t| t.trim().to_ascii_lowercase());
    let json = essence
        .as_deref()
        .and_then(|t| t.strip_prefix("application/"))
        .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"));
    if json {
        return Ok(());
    }
    let got = match given {
        None => "none".to_string(),
        Some(t) => format!("`{}`", t.chars().take(100).collect::<String>()),
    };
    let message = format!("a request that changes the job must have `Content-Type: application/json` (got {got})");
    Err(ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, message))
}

/// A request's body, or why it could not be read (one over [`MAX_REQUEST_BODY`]: `413`).
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| ApiError(rejection.status(), rejection.body_text()))
}

/// A JSON body the request's type cannot be read from: its status (400 or 422) and reason.
fn bad_body(rejection: JsonRejection) -> ApiError {
    ApiError(rejection.status(), rejection.body_text())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError(status, message.into()).into_response()
}

/// An error answer: a status and a sentence, as an [`ErrorBody`].
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

/// The job's report, when `name` is this job's and it is still there.
fn the_job(s: &Shared, name: &str) -> Result<JobReport, ApiError> {
    if name != s.job.name() {
        let message = format!("no job `{name}` here; this JobManager runs `{}`", s.job.name());
        return Err(ApiError(StatusCode::NOT_FOUND, message));
    }
    s.job.status().ok_or_else(|| ApiError(StatusCode::GONE, format!("job `{name}` has ended")))
}

/// Samples every subtask's counters once a second.
async fn sample(s: Arc<Shared>) {
    loop {
        let Some(status) = s.job.status() else { return };
        let now: Vec<Vec<MetricsSnapshot>> = status.chains.into_iter().map(|c| c.subtasks).collect();
        s.history.lock().expect("history poisoned").push(Instant::now(), now);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    match s.job.status() {
        Some(st) if st.state != JobState::Failed => {
            Json(Health { status: HealthStatus::Ok, state: st.state }).into_response()
        }
        Some(st) => {
            error(StatusCode::SERVICE_UNAVAILABLE, format!("the job failed: {}", st.failure.unwrap_or_default()))
        }
        None => Json(Health { status: HealthStatus::Ok, state: JobState::Finished }).into_response(),
    }
}

async fn jobs(State(s): State<Arc<Shared>>) -> Response {
    let state = s.job.status().map_or(JobState::Finished, |st| st.state);
    let name = s.job.name().to_string();
    Json(JobList { jobs: vec![JobSummary { id: name.clone(), name, state }] }).into_response()
}

/// A count as the API writes it.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn latest_completed(history: &[CheckpointStats]) -> Option<CheckpointRef> {
    history.iter().rev().find(|c| c.status == CheckpointStatus::Completed).map(|c| CheckpointRef {
        id: c.id,
        path: c.path.clone(),
        completed_at: c.triggered_at + c.duration_ms,
        size_bytes: c.size_bytes,
        checkpointed_bytes: c.checkpointed_bytes,
    })
}

/// The answer of `GET /v1/jobs/{job}`, from the job's report and each subtask's rates.
fn details(name: &str, job: JobReport, (rates, span): (&[Vec<Rates>], Duration)) -> JobDetails {
    let mut vertices = Vec::new();
    let mut edges = Vec::new();
    for (i, chain) in job.chains.iter().enumerate() {
        let subtask_rates = rates.get(i).map_or(&[][..], Vec::as_slice);
        let rate = |k: usize| subtask_rates.get(k).copied().unwrap_or_default();
        let metrics =
            Rates::aggregate(subtask_rates).with_counts(&MetricsSnapshot::aggregate(chain.subtasks.iter().copied()));
        let subtasks: Vec<SubtaskMetrics> = chain
            .subtasks
            .iter()
            .enumerate()
            .map(|(k, counts)| SubtaskMetrics { subtask: count(k), metrics: rate(k).with_counts(counts) })
            .collect();
        for (k, (uid, vertex)) in chain.uids.iter().zip(&chain.vertices).enumerate() {
            if k > 0 {
                edges.push(Edge { from: chain.uids[k - 1].clone(), to: uid.clone(), ship_strategy: "chained".into() });
            } else {
                for (from, strategy) in &chain.inputs {
                    let from = job.chains[*from].uids.last().cloned().unwrap_or_default();
                    edges.push(Edge { from, to: uid.clone(), ship_strategy: strategy.clone() });
                }
            }
            vertices.push(Vertex {
                id: uid.clone(),
                name: vertex.clone(),
                parallelism: count(chain.parallelism),
                chain: count(i),
                metrics: metrics.clone(),
                subtasks: subtasks.clone(),
            });
        }
    }
    JobDetails {
        id: name.to_string(),
        name: name.to_string(),
        state: job.state,
        parallelism: count(job.parallelism),
        max_parallelism: job.max_parallelism,
        start_time: job.start_time,
        vertices,
        metrics_window_ms: span.as_millis() as u64,
        edges,
        checkpoints: LatestCheckpoint { latest: latest_completed(&job.checkpoints) },
        taskmanagers: job.taskmanagers.iter().map(taskmanager).collect(),
        restarts: job.restarts,
        failure: job.failure,
        restored_from: job.restored_from,
        deployment: job.deployment,
    }
}

fn taskmanager(t: &TaskManagerView) -> TaskManager {
    TaskManager {
        id: t.id.clone(),
        data_address: t.data_address.clone(),
        slots: count(t.slots),
        slots_used: count(t.slots_used),
        last_heartbeat_ms_ago: t.last_heartbeat_ms_ago,
    }
}

fn checkpoint_stats(c: &CheckpointStats) -> weir_api::rest::CheckpointStats {
    use weir_api::rest::{CheckpointStatus as Status, SnapshotKind as Kind};
    weir_api::rest::CheckpointStats {
        id: c.id,
        kind: match c.kind {
            SnapshotKind::Checkpoint => Kind::Checkpoint,
            SnapshotKind::Savepoint => Kind::Savepoint,
        },
        status: match c.status {
            CheckpointStatus::Completed => Status::Completed,
            CheckpointStatus::Failed => Status::Failed,
        },
        path: c.path.clone(),
        triggered_at: c.triggered_at,
        duration_ms: c.duration_ms,
        size_bytes: c.size_bytes,
        checkpointed_bytes: c.checkpointed_bytes,
        failure: c.failure.clone(),
    }
}

async fn job(State(s): State<Arc<Shared>>, Path(name): Path<String>, RawQuery(query): RawQuery) -> Response {
    let window = match window(query.as_deref()) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    match the_job(&s, &name) {
        Ok(job) => {
            let (rates, span) = s.rates(window);
            Json(details(&name, job, (&rates, span))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The `window` of a query string (`window=60s`), at most [`MAX_METRICS_WINDOW`].
fn window(query: Option<&str>) -> Result<Duration, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let mut window = DEFAULT_WINDOW;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("window", value)) => {
                window = weir_api::parse_duration(value).map_err(|e| bad(format!("`window`: {e}")))?;
                if window.is_zero() || window > MAX_METRICS_WINDOW {
                    let max = weir_api::format_duration(MAX_METRICS_WINDOW);
                    return Err(bad(format!("`window`: {value} is not between 1ms and {max}")));
                }
            }
            _ => return Err(bad(format!("unknown query parameter `{pair}`; expected window=DURATION"))),
        }
    }
    Ok(window)
}

async fn checkpoints(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match the_job(&s, &name) {
        Ok(job) => {
            let history = &job.checkpoints;
            let answer = CheckpointHistory {
                latest: latest_completed(history),
                history: history.iter().map(checkpoint_stats).collect(),
            };
            Json(answer).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn trigger_savepoint(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    the_job(&s, &name)?;
    let request = match read_body(body)?.trim_ascii() {
        [] => SavepointRequest::default(),
        json => Json::<SavepointRequest>::from_bytes(json).map_err(bad_body)?.0,
    };
    if request.dir.is_some() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "`dir`: savepoints go under the job's checkpoint directory (savepoints/sp-N); another directory is not supported yet".into(),
        ));
    }
    // A stop asked again (a caller that lost its answer) joins the one under way.
    let joins = request.stop.then(|| format!("stop drain={}", request.drain));
    trigger(&s, "sp-trigger", joins, || s.job.savepoint(request.stop, request.drain))
}

async fn rescale(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let job = the_job(&s, &name)?;
    let request = match read_body(body)?.trim_ascii() {
        [] => {
            let expected = "expected a JSON body {\"parallelism\": N, \"vertices\": {UID: N}}";
            return Err(ApiError(StatusCode::BAD_REQUEST, expected.into()));
        }
        json => Json::<RescaleRequest>::from_bytes(json).map_err(bad_body)?.0,
    };
    request.check(job.max_parallelism).map_err(|why| ApiError(StatusCode::BAD_REQUEST, why))?;
    // The same rescale asked again (an operator that restarted) joins the one under way.
    let joins = Some(format!("rescale {request:?}"));
    trigger(&s, "rescale-trigger", joins, || s.job.rescale(request))
}

/// Opens a trigger and `start`s what it follows; answers `202 {trigger_id}`
/// and waits for the outcome beside the server. A request that `joins` one
/// in progress gets that one's id and starts nothing. Refused (`429`) when
/// too many are in progress, before anything starts; a refusal of `start`
/// (`409`) leaves no trigger.
fn trigger(
    s: &Arc<Shared>,
    prefix: &str,
    joins: Option<String>,
    start: impl FnOnce() -> Result<Pending, String>,
) -> Result<Response, ApiError> {
    let (trigger_id, new) = s.triggers().open(prefix, joins)?;
    if !new {
        return Ok((StatusCode::ACCEPTED, Json(TriggerResponse { trigger_id })).into_response());
    }
    let pending = match start() {
        Ok(pending) => pending,
        Err(e) => {
            s.triggers().forget(&trigger_id);
            return Err(ApiError(StatusCode::CONFLICT, e));
        }
    };
    let (shared, id) = (s.clone(), trigger_id.clone());
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(pending))
            .unwrap_or_else(|_| Err("the savepoint's outcome was lost (its waiter panicked)".into()));
        let status = match outcome {
            Ok(path) => SavepointStatus::Completed { path },
            Err(failure) => failure.into(),
        };
        shared.triggers().finish(id, status);
    });
    Ok((StatusCode::ACCEPTED, Json(TriggerResponse { trigger_id })).into_response())
}

async fn savepoint_status(State(s): State<Arc<Shared>>, Path((name, trigger)): Path<(String, String)>) -> Response {
    if name != s.job.name() {
        return error(StatusCode::NOT_FOUND, format!("no job `{name}` here"));
    }
    match s.triggers().read(&trigger) {
        None => error(StatusCode::NOT_FOUND, format!("no savepoint trigger `{trigger}`")),
        Some(status) => Json(status).into_response(),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let Some(job) = s.job.status() else { return error(StatusCode::GONE, "the job has ended") };
    let rates: Vec<Rates> = s.rates(DEFAULT_WINDOW).0.iter().map(Rates::aggregate).collect();
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
    let rate = |i: usize, f: fn(&Rates) -> f64| rates.get(i).map_or(0.0, f);
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
        "weir_true_processing_rate",
        "gauge",
        "Records in per second of busy time, with every subtask busy (DS2's true rate; 0 when never busy).",
        per_vertex(&|i| rates.get(i).and_then(|r| r.true_rate).unwrap_or(0.0)),
    );
    family(
        "weir_pending_records",
        "gauge",
        "Records waiting at the source (Kafka lag, a rate-limited datagen's backlog); -1 when unknown.",
        per_vertex(&|i| aggs[i].pending_records as f64),
    );
    family(
        "weir_current_watermark_ms",
        "gauge",
        "Current event-time watermark.",
        per_vertex(&|i| aggs[i].current_watermark as f64),
    );
    family(
        "weir_restarts_total",
        "counter",
        "Restarts of the job (failovers) since its JobManager started.",
        vec![(format!("job=\"{job_name}\""), job.restarts as f64)],
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
            "State held by the latest completed checkpoint.",
            vec![(format!("job=\"{job_name}\""), c.size_bytes as f64)],
        );
        family(
            "weir_last_checkpoint_checkpointed_bytes",
            "gauge",
            "What the latest completed checkpoint stored itself (less than its size when incremental).",
            vec![(format!("job=\"{job_name}\""), c.checkpointed_bytes as f64)],
        );
    }
    render_gauges(&mut out, job_name, &job.gauges);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The job's own gauges, one family per name, each sample with the job's
/// name and its own labels (values escaped as the text format wants).
fn render_gauges(out: &mut String, job_name: &str, gauges: &[(GaugeKey, f64)]) {
    let mut last: Option<&str> = None;
    for (key, value) in gauges {
        if last != Some(key.name.as_str()) {
            out.push_str(&format!("# HELP {0} The job's own gauge ({0}).\n# TYPE {0} gauge\n", key.name));
            last = Some(&key.name);
        }
        let mut labels = format!("job=\"{}\"", escape_label(job_name));
        for (name, v) in &key.labels {
            labels.push_str(&format!(",{name}=\"{}\"", escape_label(v)));
        }
        out.push_str(&format!("{}{{{labels}}} {value}\n", key.name));
    }
}

/// A label value in Prometheus' text format: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::rest::{JobList, paths};

    fn snapshot(records_in: u64, busy_ns: u64, pending_records: i64) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in,
            records_out: records_in,
            busy_ns,
            current_watermark: 42,
            pending_records,
            ..Default::default()
        }
    }

    /// A source chain of one vertex at parallelism 2, hashed into a chain of two vertices.
    fn report() -> JobReport {
        JobReport {
            state: JobState::Running,
            parallelism: 2,
            max_parallelism: 128,
            start_time: 1_700_000_000_000,
            chains: vec![
                ChainReport {
                    inputs: vec![],
                    vertices: vec!["datagen".into()],
                    uids: vec!["source".into()],
                    is_source: true,
                    parallelism: 2,
                    subtasks: vec![snapshot(100, 0, 7), snapshot(50, 0, -1)],
                },
                ChainReport {
                    inputs: vec![(0, "hash".into())],
                    vertices: vec!["window".into(), "sink".into()],
                    uids: vec!["window".into(), "sink".into()],
                    is_source: false,
                    parallelism: 2,
                    subtasks: vec![snapshot(80, 0, -1), snapshot(70, 0, -1)],
                },
            ],
            checkpoints: vec![
                CheckpointStats {
                    id: 1,
                    kind: SnapshotKind::Checkpoint,
                    status: CheckpointStatus::Completed,
                    path: "file:///cp/j/chk-1".into(),
                    triggered_at: 1000,
                    duration_ms: 20,
                    size_bytes: 300,
                    checkpointed_bytes: 120,
                    failure: None,
                },
                CheckpointStats {
                    id: 2,
                    kind: SnapshotKind::Checkpoint,
                    status: CheckpointStatus::Failed,
                    path: "file:///cp/j/chk-2".into(),
                    triggered_at: 2000,
                    duration_ms: 5,
                    size_bytes: 0,
                    checkpointed_bytes: 0,
                    failure: Some("a TaskManager was lost".into()),
                },
            ],
            taskmanagers: vec![],
            restarts: 0,
            failure: None,
            restored_from: None,
            deployment: Some("3-20261121120000".into()),
            gauges: vec![(
                GaugeKey { name: "orders".into(), labels: vec![("region".into(), "north \"x\"".into())] },
                7.0,
            )],
        }
    }

    #[test]
    fn details_carry_per_subtask_metrics_and_aggregate_them_per_vertex() {
        let busy = |ms: f64| Rates { busy_ms_per_s: ms, records_in_per_s: ms / 10.0, ..Default::default() };
        let rates = vec![vec![busy(300.0), busy(700.0)], vec![busy(100.0)]];
        let d = details("j", report(), (&rates, Duration::from_secs(1)));
        assert_eq!(d.metrics_window_ms, 1000);
        let ids: Vec<(&str, u32)> = d.vertices.iter().map(|v| (v.id.as_str(), v.chain)).collect();
        assert_eq!(ids, [("source", 0), ("window", 1), ("sink", 1)]);
        let edges: Vec<(&str, &str, &str)> =
            d.edges.iter().map(|e| (e.from.as_str(), e.to.as_str(), e.ship_strategy.as_str())).collect();
        assert_eq!(edges, [("source", "window", "hash"), ("window", "sink", "chained")]);

        let source = &d.vertices[0];
        assert_eq!((source.metrics.busy_ms_per_s, source.metrics.records_in_per_s), (700.0, 100.0), "max, sum");
        assert_eq!((source.metrics.records_in, source.metrics.pending_records), (150, Some(7)));
        let per_subtask: Vec<(u32, f64, Option<i64>)> =
            source.subtasks.iter().map(|s| (s.subtask, s.metrics.busy_ms_per_s, s.metrics.pending_records)).collect();
        assert_eq!(per_subtask, [(0, 300.0, Some(7)), (1, 700.0, None)]);
        // A subtask not sampled yet (the second of the window chain) shows no rates, and its counts.
        let window = &d.vertices[1].subtasks;
        assert_eq!((window[1].metrics.busy_ms_per_s, window[1].metrics.records_in), (0.0, 70));

        assert_eq!(d.checkpoints.latest.as_ref().map(|c| (c.id, c.completed_at)), Some((1, 1020)));
        assert_eq!(d.deployment.as_deref(), Some("3-20261121120000"));
    }

    #[test]
    fn rates_between_samples_are_per_second_and_time_shares_at_most_a_second() {
        let (before, now) = (snapshot(100, 0, -1), snapshot(300, 3_000_000_000, -1));
        let r = Rates::between(&now, &before, 2.0);
        assert_eq!((r.records_in_per_s, r.busy_ms_per_s), (100.0, 1000.0));
        assert_eq!(Rates::between(&before, &now, 1.0).records_in_per_s, 0.0, "a counter reset is no negative rate");
    }

    #[test]
    fn the_true_rate_is_records_per_busy_second_and_a_vertex_has_its_subtasks_mean_times_parallelism() {
        // 400 records in 2 s, busy half of it: 400 records per busy second.
        let r = Rates::between(&snapshot(500, 1_000_000_000, -1), &snapshot(100, 0, -1), 2.0);
        assert_eq!((r.records_in_per_s, r.busy_ms_per_s, r.true_rate), (200.0, 500.0, Some(400.0)));
        assert_eq!(Rates::between(&snapshot(9, 0, -1), &snapshot(0, 0, -1), 1.0).true_rate, None, "never busy");
        let known = |t| Rates { true_rate: t, ..Default::default() };
        let vertex = Rates::aggregate(&[known(Some(100.0)), known(Some(300.0)), known(None)]);
        assert_eq!(vertex.true_rate, Some(600.0), "mean 200 of the busy ones, times 3 subtasks");
        assert_eq!(Rates::aggregate(&[known(None)]).true_rate, None);
    }

    #[test]
    fn rates_are_over_the_window_asked_for_and_never_span_a_restart() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let sample = |records: u64| vec![vec![snapshot(records, records * 1_000_000, -1)]];
        let mut h = History::default();
        assert_eq!(h.rates(Duration::from_secs(60)).1, Duration::ZERO, "no samples, no rates");
        // 100 records/s for 10 s, then 1000 records/s for 2 s.
        for s in 0..=10 {
            h.push(at(s), sample(s * 100));
        }
        h.push(at(11), sample(2000));
        h.push(at(12), sample(3000));
        let rate = |h: &History, w: u64| {
            (h.rates(Duration::from_secs(w)).0[0][0].records_in_per_s, h.rates(Duration::from_secs(w)).1)
        };
        assert_eq!(rate(&h, 1), (1000.0, Duration::from_secs(1)));
        assert_eq!(rate(&h, 4), ((3000.0 - 800.0) / 4.0, Duration::from_secs(4)));
        assert_eq!(rate(&h, 600), (250.0, Duration::from_secs(12)), "no more history than there is");
        // A restart: the new tasks count from zero; the old run's samples are gone.
        h.push(at(13), sample(50));
        assert_eq!(h.rates(Duration::from_secs(60)).1, Duration::ZERO);
        h.push(at(14), sample(250));
        assert_eq!(rate(&h, 60), (200.0, Duration::from_secs(1)));
        // Busy time that went back (a blocked send accounted as backpressure once it ended) is no restart.
        h.push(at(15), vec![vec![snapshot(450, 1_000, -1)]]);
        assert_eq!(rate(&h, 60), (200.0, Duration::from_secs(2)), "the history goes on");
        assert_eq!(h.rates(Duration::from_secs(1)).0[0][0].busy_ms_per_s, 0.0, "clamped at zero");
        // A rescale: another shape.
        h.push(at(16), vec![vec![snapshot(0, 0, -1), snapshot(0, 0, -1)]]);
        assert!(h.rates(Duration::from_secs(60)).0.is_empty());
    }

    #[test]
    fn a_bad_window_is_refused_naming_it() {
        assert_eq!(window(None).unwrap(), DEFAULT_WINDOW);
        assert_eq!(window(Some("window=1m30s")).unwrap(), Duration::from_secs(90));
        for (query, says) in [("window=soon", "`window`"), ("window=16m", "between"), ("size=3", "unknown query")] {
            let e = window(Some(query)).unwrap_err();
            assert!(e.0 == StatusCode::BAD_REQUEST && e.1.contains(says), "{query}: {}", e.1);
        }
    }

    #[test]
    fn triggers_are_capped_in_progress_and_only_the_last_outcomes_are_kept() {
        let mut t = Triggers::default();
        let open: Vec<String> = (0..MAX_TRIGGERS_IN_PROGRESS).map(|_| t.open("sp-trigger", None).unwrap().0).collect();
        assert_eq!(open[0], "sp-trigger-1");
        assert_eq!(t.open("sp-trigger", None).unwrap_err().0, StatusCode::TOO_MANY_REQUESTS);
        t.forget(&open[3]);
        assert_eq!(t.read(&open[3]), None, "a trigger the job refused is gone");
        let done = |n: usize| SavepointStatus::Completed { path: format!("sp-{n}") };
        t.finish(open[0].clone(), done(0));
        t.finish(open[0].clone(), SavepointStatus::Failed { error: "twice".into(), savepoint: None });
        assert_eq!((t.read(&open[0]), t.unread), (Some(done(0)), 0), "the first outcome stands, and was read");
        // Many more finish, unread: the oldest outcomes go, and with them their unread count.
        let mut last = String::new();
        for n in 1..=FINISHED_TRIGGERS_KEPT + 10 {
            last = t.open("sp-trigger", None).unwrap().0;
            t.finish(last.clone(), done(n));
        }
        assert_eq!(
            (t.finished.len(), t.status.len(), t.unread),
            (FINISHED_TRIGGERS_KEPT, FINISHED_TRIGGERS_KEPT + 2, 100)
        );
        assert_eq!(t.read(&open[0]), None, "forgotten");
        assert_eq!(t.read(&last), Some(done(FINISHED_TRIGGERS_KEPT + 10)));
        assert_eq!((t.unread, t.in_progress), (99, 2));
        assert_eq!(t.read(&open[1]), Some(SavepointStatus::InProgress), "in progress is never forgotten");
    }

    #[test]
    fn the_same_idempotent_request_joins_the_trigger_under_way_without_a_place_of_its_own() {
        let mut t = Triggers::default();
        let what = || Some("rescale RescaleRequest { parallelism: Some(3) }".to_string());
        let (first, new) = t.open("rescale-trigger", what()).unwrap();
        assert!(new);
        for _ in 0..2 * MAX_TRIGGERS_IN_PROGRESS {
            assert_eq!(t.open("rescale-trigger", what()).unwrap(), (first.clone(), false), "an operator asking again");
        }
        assert_eq!(t.in_progress, 1);
        t.finish(first.clone(), SavepointStatus::Completed { path: "sp-1".into() });
        let (again, new) = t.open("rescale-trigger", what()).unwrap();
        assert!(new && again != first, "once finished, the same request is a new rescale");
    }

    /// A job whose report never changes; its savepoints complete at once, rescales are refused.
    struct FixedJob;

    impl RestJob for FixedJob {
        fn name(&self) -> &str {
            "j"
        }
        fn status(&self) -> Option<JobReport> {
            Some(report())
        }
        fn savepoint(&self, stop: bool, _drain: bool) -> Result<Pending, String> {
            Ok(Box::new(move || if stop { Ok("file:///cp/j/savepoints/sp-1".into()) } else { Err("disk full".into()) }))
        }
        fn rescale(&self, request: RescaleRequest) -> Result<Pending, String> {
            Err(format!("cannot rescale to {}", request.parallelism.unwrap_or(0)))
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).build().into()
    }

    fn get<T: serde::de::DeserializeOwned>(server: &RestServer, path: &str) -> (u16, T) {
        let mut r = agent().get(format!("http://{}{path}", server.addr)).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_json().unwrap())
    }

    fn post<T: serde::de::DeserializeOwned>(server: &RestServer, path: &str, body: &impl serde::Serialize) -> (u16, T) {
        let mut r = agent().post(format!("http://{}{path}", server.addr)).send_json(body).unwrap();
        (r.status().as_u16(), r.body_mut().read_json().unwrap())
    }

    fn until_done(server: &RestServer, trigger: &TriggerResponse) -> SavepointStatus {
        for _ in 0..200 {
            let (status, answer) = get::<SavepointStatus>(server, &paths::savepoint("j", &trigger.trigger_id));
            assert_eq!(status, 200);
            if answer != SavepointStatus::InProgress {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the savepoint never finished");
    }

    #[test]
    fn every_endpoint_answers_with_its_type() {
        let server = RestServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(FixedJob), None).unwrap();

        let (status, list) = get::<JobList>(&server, paths::JOBS);
        assert_eq!((status, list.jobs[0].id.as_str(), list.jobs[0].state), (200, "j", JobState::Running));
        let (status, health) = get::<Health>(&server, paths::HEALTH);
        assert_eq!((status, health), (200, Health { status: HealthStatus::Ok, state: JobState::Running }));
        let (status, job) = get::<JobDetails>(&server, &paths::job("j"));
        assert_eq!((status, job.vertices.len(), job.vertices[0].subtasks.len()), (200, 3, 2));
        let (status, over) = get::<JobDetails>(&server, &paths::job_over("j", Duration::from_secs(60)));
        assert_eq!((status, over.vertices.len()), (200, 3));
        let (status, error) = get::<ErrorBody>(&server, &format!("{}?window=forever", paths::job("j")));
        assert!(status == 400 && error.error.contains("`window`"), "{error:?}");
        let (status, history) = get::<CheckpointHistory>(&server, &paths::checkpoints("j"));
        assert_eq!((status, history.history.len()), (200, 2));
        assert_eq!(history.history[1].failure.as_deref(), Some("a TaskManager was lost"));
        assert_eq!(history.latest, job.checkpoints.latest);

        let (status, error) = get::<ErrorBody>(&server, &paths::job("other"));
        assert_eq!(status, 404);
        assert!(error.error.contains("this JobManager runs `j`"), "{error:?}");

        let stop = SavepointRequest { stop: true, ..Default::default() };
        let (status, trigger) = post::<TriggerResponse>(&server, &paths::savepoints("j"), &stop);
        assert_eq!(status, 202);
        assert_eq!(
            until_done(&server, &trigger),
            SavepointStatus::Completed { path: "file:///cp/j/savepoints/sp-1".into() }
        );
        let (status, trigger) = post::<TriggerResponse>(&server, &paths::savepoints("j"), &SavepointRequest::default());
        assert_eq!(status, 202);
        assert_eq!(
            until_done(&server, &trigger),
            SavepointStatus::Failed { error: "disk full".into(), savepoint: None }
        );
        let elsewhere = SavepointRequest { dir: Some("file:///elsewhere".into()), ..Default::default() };
        let (status, _) = post::<ErrorBody>(&server, &paths::savepoints("j"), &elsewhere);
        assert_eq!(status, 400);
        let (status, error) = get::<ErrorBody>(&server, &paths::savepoint("j", "sp-trigger-99"));
        assert_eq!((status, error.error.as_str()), (404, "no savepoint trigger `sp-trigger-99`"));

        let (status, error) = post::<ErrorBody>(&server, &paths::rescale("j"), &RescaleRequest::to(3));
        assert_eq!((status, error.error.as_str()), (409, "cannot rescale to 3"));
    }

    #[test]
    fn the_jobs_own_gauges_render_one_family_per_name_with_escaped_labels() {
        let mut out = String::new();
        let two = vec![
            (GaugeKey { name: "orders".into(), labels: vec![("region".into(), "north \"x\"\\".into())] }, 7.0),
            (GaugeKey { name: "orders".into(), labels: vec![("region".into(), "south".into())] }, 2.5),
        ];
        render_gauges(&mut out, "monitor", &two);
        assert_eq!(
            out,
            "# HELP orders The job's own gauge (orders).\n# TYPE orders gauge\n\
             orders{job=\"monitor\",region=\"north \\\"x\\\"\\\\\"} 7\n\
             orders{job=\"monitor\",region=\"south\"} 2.5\n"
        );
    }
}
