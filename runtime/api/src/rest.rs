//! The JobManager's REST API as types: one request or response per endpoint.
//!
//! The REST server (`weir-rest`) serialises these; the operator, the CLI and
//! tests deserialise them. A field renamed here changes the server and every
//! caller at once, and fails to compile where it is used, instead of reading
//! `null` in a pod. The JSON is DESIGN.md's "JobManager REST API", which tests
//! outside this repository read too: every field name and shape below is part
//! of that contract (the tests at the end of this file pin them).
//!
//! | method and path | request | answer |
//! |---|---|---|
//! | `GET /v1/jobs` | | [`JobList`] |
//! | `GET /v1/jobs/{job}[?window=DURATION]` | | [`JobDetails`] |
//! | `GET /v1/jobs/{job}/checkpoints` | | [`CheckpointHistory`] |
//! | `POST /v1/jobs/{job}/savepoints` | [`SavepointRequest`] | `202` [`TriggerResponse`] |
//! | `GET /v1/jobs/{job}/savepoints/{trigger_id}` | | [`SavepointStatus`] |
//! | `POST /v1/jobs/{job}/rescale` | [`RescaleRequest`] | `202` [`TriggerResponse`] |
//! | `GET /healthz` | | [`Health`] |
//! | any, when it fails | | [`ErrorBody`] with a 4xx or 5xx status |
//!
//! [`paths`] builds the paths, so that callers spell them one way.
//!
//! The `POST`s change the job: they must be sent as `Content-Type:
//! application/json` (else `415`), and, when the job has a secret, with
//! `Authorization: Bearer <token>` (else `401`), the token being the
//! secret's text (its hex when it is not printable ASCII). The `GET`s need
//! neither.
//!
//! Answers are read leniently: a field an older JobManager did not send yet
//! (`subtasks`, `deployment`, ...) reads as empty, and fields a newer one adds
//! are ignored. Requests are read strictly (an unknown field is refused).
//!
//! ```
//! use weir_api::rest::{JobState, SavepointStatus};
//!
//! let answer = r#"{"status":"completed","path":"s3://weir/cp/j/savepoints/sp-3"}"#;
//! let status: SavepointStatus = serde_json::from_str(answer).unwrap();
//! assert_eq!(status, SavepointStatus::Completed { path: "s3://weir/cp/j/savepoints/sp-3".into() });
//! assert_eq!(serde_json::to_string(&SavepointStatus::InProgress).unwrap(), r#"{"status":"in_progress"}"#);
//! assert_eq!(JobState::Running.to_string(), "running");
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// The lifecycle of a job on its JobManager, as `state` in the API names it.
///
/// Which state follows which is the JobManager's business: its events
/// implement [`JobTransition`], with the one table of legal transitions
/// (`weir_cluster::state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Not deployed yet (waiting for slots).
    Created,
    Running,
    /// Failed over, or rescaling: waiting for the restart delay and for slots.
    Restarting,
    /// Failed and out of restarts.
    Failed,
    /// Being torn down on request.
    Cancelling,
    Cancelled,
    /// Every task ended: the input was exhausted, or a stop-with-savepoint.
    Finished,
}

impl JobState {
    /// Whether the job is over: nothing moves it out of this state.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Failed | JobState::Cancelled | JobState::Finished)
    }

    /// The state after `event`, or why the event cannot happen now.
    pub fn transition<E: JobTransition>(self, event: E) -> Result<JobState, E::Error> {
        event.apply(self)
    }

    /// The name the API gives the state (`running`, `failed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Created => "created",
            JobState::Running => "running",
            JobState::Restarting => "restarting",
            JobState::Failed => "failed",
            JobState::Cancelling => "cancelling",
            JobState::Cancelled => "cancelled",
            JobState::Finished => "finished",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to a job and moves it from one [`JobState`] to the
/// next: the JobManager's events, which carry the table of legal transitions.
pub trait JobTransition {
    /// Why the event cannot happen in a state.
    type Error;
    /// The state after this event happens to a job in state `from`.
    fn apply(self, from: JobState) -> Result<JobState, Self::Error>;
}

/// The longest window rates can be asked over (`GET /v1/jobs/{job}?window=`).
/// The header that may carry the job's token instead of `Authorization:
/// Bearer`, for a client behind a proxy that takes `Authorization` for
/// itself (Kubernetes' service proxy authenticates with it and removes it).
pub const TOKEN_HEADER: &str = "x-weir-token";

pub const MAX_METRICS_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// `GET /v1/jobs`: the jobs this JobManager runs (one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobSummary>,
}

/// One job of a [`JobList`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job's id in paths: its name.
    pub id: String,
    pub name: String,
    pub state: JobState,
}

/// `GET /v1/jobs/{job}`: the job, its vertices with their metrics, the edges
/// between them, its TaskManagers and its latest checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDetails {
    /// The job's id in paths: its name.
    pub id: String,
    pub name: String,
    pub state: JobState,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// When the job started, in epoch milliseconds.
    pub start_time: i64,
    /// Every vertex (operator) of the job, chain by chain, in the order of the graph.
    #[serde(default)]
    pub vertices: Vec<Vertex>,
    /// The span the vertices' rates cover, in milliseconds: the window asked
    /// for (`?window=`), or less when the job's current run is younger (rates
    /// never span a restart); 0 before two samples were taken.
    #[serde(default)]
    pub metrics_window_ms: u64,
    #[serde(default)]
    pub edges: Vec<Edge>,
    #[serde(default)]
    pub checkpoints: LatestCheckpoint,
    #[serde(default)]
    pub taskmanagers: Vec<TaskManager>,
    /// Restarts (failovers and rescales) since the JobManager started.
    #[serde(default)]
    pub restarts: u32,
    /// Why the job failed, once it has.
    #[serde(default)]
    pub failure: Option<String>,
    /// The snapshot the job's current run started from; `None`: a fresh start.
    #[serde(default)]
    pub restored_from: Option<String>,
    /// The deployment the answering JobManager belongs to (`--deployment-id`), when it was given one.
    #[serde(default)]
    pub deployment: Option<String>,
}

/// One vertex of a [`JobDetails`]: an operator, the chain it runs in, and its metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vertex {
    /// The operator's uid.
    pub id: String,
    pub name: String,
    pub parallelism: u32,
    /// The index of the chain (the task) the vertex runs in; vertices of one chain share their metrics.
    pub chain: u32,
    /// Over the chain's subtasks: record rates and counts summed, time rates the
    /// maximum, the watermark the minimum (Flink's aggregation).
    pub metrics: Metrics,
    /// Each subtask's own metrics.
    #[serde(default)]
    pub subtasks: Vec<SubtaskMetrics>,
}

/// The metrics of one subtask of a [`Vertex`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubtaskMetrics {
    /// The subtask's index, from 0.
    pub subtask: u32,
    pub metrics: Metrics,
}

/// Rates (per second, over the window asked for; by default the last
/// second) and counts, of a vertex or of one of its subtasks; the time rates
/// follow Flink's `busyTimeMsPerSecond`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub records_in_per_s: f64,
    pub records_out_per_s: f64,
    /// Milliseconds of each second spent processing (at most 1000).
    pub busy_ms_per_s: f64,
    /// Milliseconds of each second blocked by downstream (at most 1000).
    pub backpressured_ms_per_s: f64,
    /// Milliseconds of each second waiting for input (at most 1000).
    pub idle_ms_per_s: f64,
    /// Records waiting at the source (Kafka lag, a rate-limited datagen's
    /// backlog); `None` when unknown.
    #[serde(default)]
    pub pending_records: Option<i64>,
    /// The true processing rate (DS2): records in per second of busy time,
    /// what the subtask would take if it were busy all the time. Of a vertex:
    /// the mean over its subtasks that were busy, times its parallelism.
    /// `None` when it was never busy over the window.
    #[serde(default)]
    pub true_processing_rate: Option<f64>,
    /// The event-time watermark, in epoch milliseconds.
    pub current_watermark: i64,
    pub records_in: u64,
    pub records_out: u64,
    /// Records that came after their window closed.
    pub late_records: u64,
}

/// An edge of the job graph: between chains with a partitioning
/// (`forward`, `hash`, `rebalance`, ...), or `chained` inside one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    /// The uid of the vertex the records come from.
    pub from: String,
    pub to: String,
    pub ship_strategy: String,
}

/// The `checkpoints` of a [`JobDetails`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatestCheckpoint {
    /// The newest completed checkpoint or savepoint; `None` before the first.
    #[serde(default)]
    pub latest: Option<CheckpointRef>,
}

/// A completed checkpoint or savepoint: where it is, and when it completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    pub id: u64,
    /// Its directory's URI (`…/chk-7` for a checkpoint, `…/savepoints/sp-3` for a savepoint).
    pub path: String,
    /// Epoch milliseconds.
    pub completed_at: i64,
    /// The state it holds (with an incremental checkpoint's shared files).
    pub size_bytes: u64,
    /// What it stored itself (Flink's "checkpointed data size"): less than
    /// `size_bytes` for an incremental checkpoint.
    #[serde(default)]
    pub checkpointed_bytes: u64,
}

impl CheckpointRef {
    /// Whether it is a checkpoint (`…/chk-N`) rather than a savepoint.
    pub fn is_checkpoint(&self) -> bool {
        self.path.contains("/chk-")
    }
}

/// A TaskManager of a [`JobDetails`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskManager {
    pub id: String,
    /// Where its data plane listens (`host:port`).
    pub data_address: String,
    pub slots: u32,
    pub slots_used: u32,
    pub last_heartbeat_ms_ago: u64,
}

/// `GET /v1/jobs/{job}/checkpoints`: the latest completed snapshot and every
/// finished checkpoint and savepoint, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointHistory {
    #[serde(default)]
    pub latest: Option<CheckpointRef>,
    #[serde(default)]
    pub history: Vec<CheckpointStats>,
}

/// A finished (completed or failed) checkpoint or savepoint of a [`CheckpointHistory`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStats {
    pub id: u64,
    pub kind: SnapshotKind,
    pub status: CheckpointStatus,
    pub path: String,
    /// Epoch milliseconds.
    pub triggered_at: i64,
    pub duration_ms: i64,
    /// The state it holds (with an incremental checkpoint's shared files).
    pub size_bytes: u64,
    /// What it stored itself: less than `size_bytes` for an incremental checkpoint.
    #[serde(default)]
    pub checkpointed_bytes: u64,
    /// Why it failed, when it did.
    #[serde(default)]
    pub failure: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointStatus {
    Completed,
    Failed,
}

/// `POST /v1/jobs/{job}/savepoints`: take a savepoint. No body is the same as `{}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavepointRequest {
    /// Another directory than the job's `savepoints/` (not supported yet: refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Stop the job once the savepoint is taken (Flink's stop-with-savepoint).
    #[serde(default)]
    pub stop: bool,
    /// With `stop`: first let every window and timer fire (end-of-time watermark).
    #[serde(default)]
    pub drain: bool,
}

/// `POST /v1/jobs/{job}/rescale`: a savepoint, then a restart from it at the
/// parallelism asked for.
///
/// The request states the whole assignment, not a change to the last one:
/// `parallelism` is the job's default (the current one when left out), and
/// `vertices` gives vertices their own parallelism by uid (Flink's
/// per-operator `setParallelism`). A vertex not named takes the parallelism
/// its pipeline step or code gives it, else the default; so a request
/// without `vertices` also drops the per-vertex parallelism of an earlier
/// rescale. At least one of the two must be given.
///
/// The slots the new parallelism needs must be registered when the request
/// comes (else it is refused, `409`, and nothing stops), unless
/// `await_slots_ms` says how long they may take: then the savepoint is taken
/// at once, while the TaskManagers the caller is adding start (the
/// operator's in-place rescale does so), and the job waits for the slots at
/// most that long from the request. Slots that do not come in time leave
/// the job running on at its former parallelism from the savepoint, and the
/// rescale answers failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescaleRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub vertices: std::collections::BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub await_slots_ms: Option<u64>,
}

/// The longest a rescale may wait for its slots ([`RescaleRequest::await_slots_ms`]).
pub const MAX_AWAIT_SLOTS_MS: u64 = 3_600_000;

impl RescaleRequest {
    /// Every vertex at `parallelism` (save those their pipeline or code pins).
    pub fn to(parallelism: u32) -> RescaleRequest {
        RescaleRequest { parallelism: Some(parallelism), ..Default::default() }
    }

    /// The same request, waiting up to `wait` for the slots it needs.
    pub fn awaiting_slots(self, wait: std::time::Duration) -> RescaleRequest {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).min(MAX_AWAIT_SLOTS_MS);
        RescaleRequest { await_slots_ms: Some(ms), ..self }
    }

    /// Why no job of `max_parallelism` key groups can run as this request
    /// asks, if so: it names nothing to rescale to, or a parallelism of 0
    /// or above `max_parallelism` (a subtask without a key group), or a wait
    /// for slots beyond [`MAX_AWAIT_SLOTS_MS`]. Whether
    /// the vertices exist and the job can rescale now is the JobManager's
    /// to say.
    pub fn check(&self, max_parallelism: u32) -> Result<(), String> {
        if self.parallelism.is_none() && self.vertices.is_empty() {
            return Err("nothing to rescale to: give `parallelism`, `vertices` or both".into());
        }
        let in_range = |what: &dyn fmt::Display, p: u32| match p {
            0 => Err(format!("{what}: must be at least 1")),
            p if p > max_parallelism => {
                Err(format!("{what}: {p} is above the max parallelism {max_parallelism} (the job's key groups)"))
            }
            _ => Ok(()),
        };
        if let Some(p) = self.parallelism {
            in_range(&"parallelism", p)?;
        }
        if let Some(ms) = self.await_slots_ms.filter(|&ms| ms > MAX_AWAIT_SLOTS_MS) {
            return Err(format!("await_slots_ms: {ms} is above the longest wait, {MAX_AWAIT_SLOTS_MS} (an hour)"));
        }
        self.vertices.iter().try_for_each(|(uid, &p)| in_range(&format_args!("vertices.{uid}"), p))
    }
}

/// The `202` answer to a savepoint or a rescale: follow it at
/// `GET /v1/jobs/{job}/savepoints/{trigger_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerResponse {
    pub trigger_id: String,
}

/// `GET /v1/jobs/{job}/savepoints/{trigger_id}`: how a savepoint (or a rescale) went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SavepointStatus {
    InProgress,
    /// Taken: its directory's URI.
    Completed {
        path: String,
    },
    /// Not taken, or (a rescale) taken but not deployed from: see [`TriggerFailure`].
    Failed {
        error: String,
        /// The savepoint a rescale took before it failed, when it did: the job runs on from it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        savepoint: Option<String>,
    },
}

/// Why a savepoint or a rescale did not complete, and the savepoint it took
/// first, if it did: a rescale whose slots never came leaves the job running
/// on at its former parallelism from its savepoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerFailure {
    pub error: String,
    pub savepoint: Option<String>,
}

impl From<String> for TriggerFailure {
    /// A failure before any savepoint was taken.
    fn from(error: String) -> TriggerFailure {
        TriggerFailure { error, savepoint: None }
    }
}

impl From<&str> for TriggerFailure {
    fn from(error: &str) -> TriggerFailure {
        error.to_string().into()
    }
}

impl From<TriggerFailure> for SavepointStatus {
    fn from(f: TriggerFailure) -> SavepointStatus {
        SavepointStatus::Failed { error: f.error, savepoint: f.savepoint }
    }
}

/// `GET /healthz` while the job has not failed (after it failed: `503` and an [`ErrorBody`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub state: JobState,
}

/// The `status` of a [`Health`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// The body of every error answer: one sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// The API's paths, one way to spell each.
pub mod paths {
    /// `GET`: [`JobList`](super::JobList).
    pub const JOBS: &str = "/v1/jobs";
    /// `GET`: [`Health`](super::Health).
    pub const HEALTH: &str = "/healthz";

    /// `GET`: [`JobDetails`](super::JobDetails).
    pub fn job(job: &str) -> String {
        format!("{JOBS}/{job}")
    }

    /// `GET`: [`JobDetails`](super::JobDetails) with rates over `window`
    /// (at most [`MAX_METRICS_WINDOW`](super::MAX_METRICS_WINDOW)).
    pub fn job_over(job: &str, window: std::time::Duration) -> String {
        format!("{JOBS}/{job}?window={}", crate::format_duration(window))
    }

    /// `GET`: [`CheckpointHistory`](super::CheckpointHistory).
    pub fn checkpoints(job: &str) -> String {
        format!("{JOBS}/{job}/checkpoints")
    }

    /// `POST`: [`SavepointRequest`](super::SavepointRequest).
    pub fn savepoints(job: &str) -> String {
        format!("{JOBS}/{job}/savepoints")
    }

    /// `GET`: [`SavepointStatus`](super::SavepointStatus).
    pub fn savepoint(job: &str, trigger_id: &str) -> String {
        format!("{JOBS}/{job}/savepoints/{trigger_id}")
    }

    /// `POST`: [`RescaleRequest`](super::RescaleRequest).
    pub fn rescale(job: &str) -> String {
        format!("{JOBS}/{job}/rescale")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metrics(busy: f64) -> Metrics {
        Metrics {
            records_in_per_s: 10.0,
            records_out_per_s: 20.0,
            busy_ms_per_s: busy,
            backpressured_ms_per_s: 0.0,
            idle_ms_per_s: 1000.0 - busy,
            pending_records: None,
            true_processing_rate: Some(busy / 10.0),
            current_watermark: 1_700_000_000_000,
            records_in: 100,
            records_out: 200,
            late_records: 0,
        }
    }

    fn details() -> JobDetails {
        JobDetails {
            id: "orders".into(),
            name: "orders".into(),
            state: JobState::Running,
            parallelism: 2,
            max_parallelism: 128,
            start_time: 1_700_000_000_000,
            vertices: vec![Vertex {
                id: "source".into(),
                name: "datagen".into(),
                parallelism: 2,
                chain: 0,
                metrics: metrics(600.0),
                subtasks: vec![
                    SubtaskMetrics { subtask: 0, metrics: metrics(600.0) },
                    SubtaskMetrics { subtask: 1, metrics: metrics(400.0) },
                ],
            }],
            metrics_window_ms: 60_000,
            edges: vec![Edge { from: "source".into(), to: "window".into(), ship_strategy: "hash".into() }],
            checkpoints: LatestCheckpoint {
                latest: Some(CheckpointRef {
                    id: 7,
                    path: "file:///cp/orders/chk-7".into(),
                    completed_at: 5,
                    size_bytes: 9,
                    checkpointed_bytes: 4,
                }),
            },
            taskmanagers: vec![TaskManager {
                id: "tm-1".into(),
                data_address: "10.0.0.1:6124".into(),
                slots: 2,
                slots_used: 2,
                last_heartbeat_ms_ago: 300,
            }],
            restarts: 1,
            failure: None,
            restored_from: Some("file:///cp/orders/savepoints/sp-1".into()),
            deployment: None,
        }
    }

    /// The job's document as DESIGN.md and the REST server's `json!` gave it,
    /// key for key and in the same order, plus the per-subtask metrics.
    #[test]
    fn job_details_keep_every_field_name_and_shape() {
        let m = |busy: f64| {
            json!({
                "records_in_per_s": 10.0, "records_out_per_s": 20.0, "busy_ms_per_s": busy,
                "backpressured_ms_per_s": 0.0, "idle_ms_per_s": 1000.0 - busy, "pending_records": null,
                "true_processing_rate": busy / 10.0,
                "current_watermark": 1_700_000_000_000_i64, "records_in": 100, "records_out": 200, "late_records": 0,
            })
        };
        let expected = json!({
            "id": "orders", "name": "orders", "state": "running", "parallelism": 2, "max_parallelism": 128,
            "start_time": 1_700_000_000_000_i64,
            "vertices": [{
                "id": "source", "name": "datagen", "parallelism": 2, "chain": 0, "metrics": m(600.0),
                "subtasks": [{ "subtask": 0, "metrics": m(600.0) }, { "subtask": 1, "metrics": m(400.0) }],
            }],
            "metrics_window_ms": 60_000,
            "edges": [{ "from": "source", "to": "window", "ship_strategy": "hash" }],
            "checkpoints": { "latest": { "id": 7, "path": "file:///cp/orders/chk-7", "completed_at": 5, "size_bytes": 9, "checkpointed_bytes": 4 } },
            "taskmanagers": [{
                "id": "tm-1", "data_address": "10.0.0.1:6124", "slots": 2, "slots_used": 2, "last_heartbeat_ms_ago": 300,
            }],
            "restarts": 1, "failure": null, "restored_from": "file:///cp/orders/savepoints/sp-1", "deployment": null,
        });
        let actual = serde_json::to_value(details()).unwrap();
        assert_eq!(actual, expected);
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&actual), keys(&expected), "the keys in the order the server always wrote them");
        assert_eq!(serde_json::from_value::<JobDetails>(actual).unwrap(), details());
    }

    #[test]
    fn an_older_jobmanagers_answer_reads_with_empty_defaults() {
        let old = json!({
            "id": "orders", "name": "orders", "state": "restarting", "parallelism": 2, "max_parallelism": 128,
            "start_time": 0, "checkpoints": { "latest": null }, "something_newer": [1, 2],
        });
        let d: JobDetails = serde_json::from_value(old).unwrap();
        assert_eq!(
            (d.state, d.vertices.len(), d.checkpoints.latest, d.deployment),
            (JobState::Restarting, 0, None, None)
        );
    }

    #[test]
    fn the_other_answers_keep_their_shapes() {
        let cases = [
            (
                serde_json::to_value(JobList {
                    jobs: vec![JobSummary { id: "j".into(), name: "j".into(), state: JobState::Finished }],
                }),
                json!({ "jobs": [{ "id": "j", "name": "j", "state": "finished" }] }),
            ),
            (
                serde_json::to_value(CheckpointHistory {
                    latest: None,
                    history: vec![CheckpointStats {
                        id: 3,
                        kind: SnapshotKind::Savepoint,
                        status: CheckpointStatus::Failed,
                        path: "file:///cp/j/savepoints/sp-3".into(),
                        triggered_at: 10,
                        duration_ms: 4,
                        size_bytes: 0,
                        checkpointed_bytes: 0,
                        failure: Some("disk full".into()),
                    }],
                }),
                json!({ "latest": null, "history": [{
                    "id": 3, "kind": "savepoint", "status": "failed", "path": "file:///cp/j/savepoints/sp-3",
                    "triggered_at": 10, "duration_ms": 4, "size_bytes": 0, "checkpointed_bytes": 0, "failure": "disk full",
                }] }),
            ),
            (
                serde_json::to_value(TriggerResponse { trigger_id: "sp-trigger-1".into() }),
                json!({ "trigger_id": "sp-trigger-1" }),
            ),
            (serde_json::to_value(SavepointStatus::InProgress), json!({ "status": "in_progress" })),
            (
                serde_json::to_value(SavepointStatus::Completed { path: "s3://b/sp-1".into() }),
                json!({ "status": "completed", "path": "s3://b/sp-1" }),
            ),
            (
                serde_json::to_value(SavepointStatus::Failed { error: "timed out".into(), savepoint: None }),
                json!({ "status": "failed", "error": "timed out" }),
            ),
            (
                serde_json::to_value(SavepointStatus::from(TriggerFailure {
                    error: "no slots".into(),
                    savepoint: Some("s3://b/sp-1".into()),
                })),
                json!({ "status": "failed", "error": "no slots", "savepoint": "s3://b/sp-1" }),
            ),
            (
                serde_json::to_value(Health { status: HealthStatus::Ok, state: JobState::Running }),
                json!({ "status": "ok", "state": "running" }),
            ),
            (
                serde_json::to_value(ErrorBody { error: "no job `x` here".into() }),
                json!({ "error": "no job `x` here" }),
            ),
        ];
        for (actual, expected) in cases {
            assert_eq!(actual.unwrap(), expected);
        }
    }

    #[test]
    fn requests_read_as_the_server_always_read_them() {
        let empty: SavepointRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, SavepointRequest::default());
        let stop: SavepointRequest = serde_json::from_str(r#"{"stop": true, "drain": true, "dir": null}"#).unwrap();
        assert_eq!(stop, SavepointRequest { dir: None, stop: true, drain: true });
        assert!(serde_json::from_str::<SavepointRequest>(r#"{"stpo": true}"#).is_err(), "a typo is refused");
        assert_eq!(
            serde_json::to_value(SavepointRequest { stop: true, ..Default::default() }).unwrap(),
            json!({ "stop": true, "drain": false })
        );
        let rescale: RescaleRequest = serde_json::from_str(r#"{"parallelism": 3}"#).unwrap();
        assert_eq!(rescale, RescaleRequest::to(3));
        let per_vertex: RescaleRequest = serde_json::from_str(r#"{"vertices": {"window": 4}}"#).unwrap();
        assert_eq!((per_vertex.parallelism, per_vertex.vertices.get("window")), (None, Some(&4)));
        assert_eq!(serde_json::to_string(&RescaleRequest::to(2)).unwrap(), r#"{"parallelism":2}"#);
        assert!(serde_json::from_str::<RescaleRequest>(r#"{"parallelism": -1}"#).is_err());
        let waiting = RescaleRequest::to(2).awaiting_slots(std::time::Duration::from_secs(300));
        assert_eq!(serde_json::to_string(&waiting).unwrap(), r#"{"parallelism":2,"await_slots_ms":300000}"#);
    }

    #[test]
    fn a_rescale_no_job_can_run_is_refused_naming_why() {
        assert_eq!(RescaleRequest::to(1).check(128), Ok(()));
        assert_eq!(RescaleRequest::to(128).check(128), Ok(()));
        let window_at = |p| RescaleRequest { vertices: [("window".to_string(), p)].into(), ..Default::default() };
        assert_eq!(window_at(4).check(128), Ok(()));
        for (request, says) in [
            (RescaleRequest::default(), "nothing to rescale to"),
            (RescaleRequest::to(0), "parallelism: must be at least 1"),
            (RescaleRequest::to(129), "parallelism: 129 is above the max parallelism 128 (the job's key groups)"),
            (window_at(0), "vertices.window: must be at least 1"),
            (window_at(u32::MAX), "vertices.window: 4294967295 is above the max parallelism 128"),
            (
                RescaleRequest { await_slots_ms: Some(MAX_AWAIT_SLOTS_MS + 1), ..RescaleRequest::to(2) },
                "await_slots_ms: 3600001 is above the longest wait",
            ),
        ] {
            let why = request.check(128).unwrap_err();
            assert!(why.contains(says), "{request:?}: {why}");
        }
    }

    #[test]
    fn job_states_are_named_as_design_md_names_them() {
        let all = [
            JobState::Created,
            JobState::Running,
            JobState::Restarting,
            JobState::Failed,
            JobState::Cancelling,
            JobState::Cancelled,
            JobState::Finished,
        ];
        for s in all {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.to_string()));
            assert_eq!(serde_json::from_value::<JobState>(json!(s.as_str())).unwrap(), s);
            assert_eq!(s.is_terminal(), matches!(s, JobState::Failed | JobState::Cancelled | JobState::Finished));
        }
        assert_eq!(paths::savepoint("j", "sp-trigger-1"), "/v1/jobs/j/savepoints/sp-trigger-1");
    }
}
