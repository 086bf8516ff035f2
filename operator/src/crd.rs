//! The `StreamJob` custom resource (`weir.dev/v1alpha1`): its spec, as users
//! write it, and its status, as the operator reports it.
//!
//! The OpenAPI schema is generated from these types: every range, enum and
//! required field here is enforced by the API server before the operator ever
//! sees a StreamJob. What a schema cannot say (a pipeline that does not
//! compile, a savepoint path that does not exist) becomes a condition on the
//! status instead.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration as pipeline files write it: `500ms`, `10s`, `1m`, `6h`, `1d`.
const DURATION: &str = r"^([0-9]+(ms|s|m|h|d) *)+$";
/// A checkpoint or savepoint location: `s3://bucket/prefix` or `file:///path`.
const LOCATION: &str = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.*)$";

fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

fn optional_free_form(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = free_form(g);
    s.insert("nullable".into(), true.into());
    s
}

/// An optional [`SavepointReason`]: nullable, its values without `null` among
/// them (which the generated schema would list, and the API server refuses).
fn optional_reason(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = schemars::schema_for!(SavepointReason);
    s.remove("$schema");
    s.remove("title");
    s.insert("nullable".into(), true.into());
    s
}

/// A stream-processing job and the cluster (a JobManager and TaskManagers) that runs it.
// Printer columns repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "StreamJob",
    namespaced,
    shortname = "sj",
    status = "StreamJobStatus",
    scale(
        spec_replicas_path = ".spec.parallelism",
        status_replicas_path = ".status.job.parallelism",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Parallelism", type_ = "integer", json_path = ".spec.parallelism"),
    printcolumn(name = "Job", type_ = "string", json_path = ".status.job.state"),
    printcolumn(name = "Last Savepoint", type_ = "string", json_path = ".status.lastSavepoint.path"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobSpec {
    /// The container image: the stock `weir` image for pipelines, or a user job's image.
    #[schemars(length(min = 1))]
    pub image: String,
    /// A pipeline file (the format of `weir run`), inline. Exactly one of `pipeline` and `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_free_form")]
    pub pipeline: Option<serde_json::Value>,
    /// A user job binary's arguments (the binary is the image's entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Parallelism of every vertex (`kubectl scale` changes it). With
    /// `autoscaler.mode: active`, where the autoscaler starts from: its
    /// per-vertex choice (`status.autoscaler.vertexParallelism`) holds until
    /// this changes. A running job is rescaled in place when it can be.
    #[schemars(range(min = 1, max = 32768))]
    pub parallelism: i32,
    /// The most the job can ever be rescaled to; fixed for the life of its state.
    #[serde(default = "default_max_parallelism")]
    #[schemars(range(min = 1, max = 32768))]
    pub max_parallelism: i32,
    #[serde(default)]
    pub job_manager: JobManagerSpec,
    #[serde(default)]
    pub task_manager: TaskManagerSpec,
    pub checkpointing: CheckpointingSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoints: Option<SavepointsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// How a change other than parallelism is rolled out.
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,
    /// Start the job (the first time) from this savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = LOCATION))]
    pub initial_savepoint: Option<String>,
    #[serde(default)]
    pub state: DesiredState,
    /// Change it to take a savepoint now.
    #[serde(default)]
    pub savepoint_trigger_nonce: i64,
    /// Change it to restart the job (from its latest checkpoint).
    #[serde(default)]
    pub restart_nonce: i64,
    /// Take a final savepoint when the StreamJob is deleted.
    #[serde(default = "yes")]
    pub savepoint_on_delete: bool,
    /// Merged into the generated pods (a PodTemplateSpec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_free_form")]
    pub pod_template: Option<serde_json::Value>,
    /// Rescale the job on its backpressure and lag metrics (DS2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerSpec>,
    /// Where the job keeps its keyed state: over the pipeline's own `state`
    /// section. Absent: as the pipeline says (the heap by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_backend: Option<StateBackendSpec>,
}

/// A size as pipeline files write it: `256MiB`, `1GiB`, `512MB` (or `256Mi`).
const SIZE: &str = r"^[0-9]+ *(B|KiB|MiB|GiB|TiB|Ki|Mi|Gi|Ti|KB|MB|GB|TB|k|K|M|G|T)?$";

/// `spec.stateBackend`: the pipeline's `state` section, set on the StreamJob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateBackendSpec {
    /// `heap`: hash maps in the TaskManagers' memory (fastest, bounded by it);
    /// `disk`: an LSM tree on a volume of each TaskManager's, within `memory`.
    #[serde(rename = "type", default)]
    pub kind: StateBackendKind,
    /// The disk backend's memory budget per TaskManager process (256MiB when
    /// absent, at least 16MiB); keep it inside the TaskManager's memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SIZE))]
    pub memory: Option<String>,
    /// Whether checkpoints store only the keyed state changed since the one
    /// before (by default: with `disk`, yes; on the heap, no).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<bool>,
    /// The size limit of the disk backend's volume (an emptyDir on each
    /// TaskManager, such as `20Gi`): the node evicts a pod that writes more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SIZE))]
    pub volume_size_limit: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StateBackendKind {
    #[default]
    Heap,
    Disk,
}

impl StateBackendKind {
    /// As pipeline files write it.
    pub fn as_str(self) -> &'static str {
        match self {
            StateBackendKind::Heap => "heap",
            StateBackendKind::Disk => "disk",
        }
    }
}

impl Default for TaskManagerSpec {
    fn default() -> Self {
        TaskManagerSpec { slots: 1, resources: None }
    }
}

fn default_max_parallelism() -> i32 {
    128
}

fn yes() -> bool {
    true
}

fn one() -> i32 {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobManagerSpec {
    /// More than one: standbys, one leader elected through a Lease.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for JobManagerSpec {
    fn default() -> Self {
        JobManagerSpec { replicas: 1, resources: None }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskManagerSpec {
    /// Subtask slots per TaskManager: there are ceil(p / slots) TaskManagers,
    /// p the largest vertex parallelism (vertices share slots).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub slots: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointingSpec {
    #[schemars(regex(pattern = DURATION))]
    pub interval: String,
    #[serde(default)]
    pub mode: CheckpointMode,
    /// Where checkpoints go (`s3://bucket/prefix`).
    #[schemars(regex(pattern = LOCATION))]
    pub dir: String,
    /// Completed checkpoints kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub retained: Option<i32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointMode {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointsSpec {
    /// Where savepoints go (default: the checkpoint directory's `savepoints/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = LOCATION))]
    pub dir: Option<String>,
    /// Take one this often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION))]
    pub periodic: Option<String>,
    /// Savepoints kept (older ones are disposed of, never the latest restore point).
    #[serde(default = "five")]
    #[schemars(range(min = 1, max = 1000))]
    pub history_limit: i32,
    /// A savepoint not completed within this long aborts its operation (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION))]
    pub timeout: Option<String>,
}

fn five() -> i32 {
    5
}

/// When and how far the operator rescales the job on its metrics.
// `autoscaler::AutoscalerConfig::from_spec` turns it into typed durations; the
// ranges here are enforced by the API server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerSpec {
    #[serde(default)]
    pub mode: AutoscalerMode,
    /// The busy fraction each vertex is sized for (0.7: 70% of each second processing).
    #[serde(default = "default_target_utilization")]
    #[schemars(range(min = 0.1, max = 0.95))]
    pub target_utilization: f64,
    /// A vertex whose load is within `targetUtilization` ± this keeps its parallelism.
    #[serde(default = "default_utilization_band")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub utilization_band: f64,
    /// The metrics a decision is made on: the samples of this long before it.
    /// Pressure in three quarters of it is sustained, so the default (30 s)
    /// acts on a load step within about 40 s, and the rescale follows in place.
    #[serde(default = "thirty_seconds")]
    #[schemars(regex(pattern = DURATION))]
    pub metrics_window: String,
    /// After a rescale (or a start), nothing is decided for this long.
    #[serde(default = "sixty_seconds")]
    #[schemars(regex(pattern = DURATION))]
    pub stabilization: String,
    /// The least time between two scale-ups.
    #[serde(default = "sixty_seconds")]
    #[schemars(regex(pattern = DURATION))]
    pub scale_up_interval: String,
    /// A scale-down comes at least this long after the last rescale, once the
    /// load stayed below the band this long.
    #[serde(default = "ten_minutes")]
    #[schemars(regex(pattern = DURATION))]
    pub scale_down_interval: String,
    /// The time within which a source's lag (pending records) is to be caught up.
    #[serde(default = "five_minutes")]
    #[schemars(regex(pattern = DURATION))]
    pub catch_up_time: String,
    /// The fewest subtasks of any vertex.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 32768))]
    pub min_parallelism: i32,
    /// The most subtasks of any vertex: at most the job's `maxParallelism` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32768))]
    pub max_parallelism: Option<i32>,
    /// Bounds of single vertices, by operator name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vertices: BTreeMap<String, VertexBoundsSpec>,
    /// Operators (by name) the autoscaler leaves at their parallelism.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_vertices: Vec<String>,
    /// Rescales in any hour; once spent, the status says so and nothing is rescaled.
    #[serde(default = "six")]
    #[schemars(range(min = 1, max = 60))]
    pub max_rescales_per_hour: i32,
}

impl Default for AutoscalerSpec {
    fn default() -> Self {
        AutoscalerSpec {
            mode: AutoscalerMode::default(),
            target_utilization: default_target_utilization(),
            utilization_band: default_utilization_band(),
            metrics_window: thirty_seconds(),
            stabilization: sixty_seconds(),
            scale_up_interval: sixty_seconds(),
            scale_down_interval: ten_minutes(),
            catch_up_time: five_minutes(),
            min_parallelism: 1,
            max_parallelism: None,
            vertices: BTreeMap::new(),
            excluded_vertices: Vec::new(),
            max_rescales_per_hour: six(),
        }
    }
}

fn default_target_utilization() -> f64 {
    0.7
}

fn default_utilization_band() -> f64 {
    0.1
}

fn thirty_seconds() -> String {
    "30s".into()
}

fn sixty_seconds() -> String {
    "60s".into()
}

fn five_minutes() -> String {
    "5m".into()
}

fn ten_minutes() -> String {
    "10m".into()
}

fn six() -> i32 {
    6
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AutoscalerMode {
    /// Nothing is evaluated.
    #[default]
    Disabled,
    /// Decisions are reported in `status.autoscaler`, never applied.
    Recommend,
    /// Decisions are applied: each vertex rescaled to its own parallelism,
    /// in place when the TaskManagers' slots allow (TaskManagers are added
    /// first when they do not), through a savepoint verified in storage.
    Active,
}

/// The parallelism bounds of one vertex.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VertexBoundsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32768))]
    pub min_parallelism: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32768))]
    pub max_parallelism: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// An S3-compatible endpoint (`http://minio:9000`); AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default)]
    pub path_style: bool,
    /// A Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Stop with a savepoint, redeploy from it.
    #[default]
    Savepoint,
    /// Redeploy from the latest checkpoint in storage.
    LastState,
    /// Redeploy without state.
    Stateless,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredState {
    #[default]
    Running,
    /// Stopped with a savepoint; `running` again resumes from it.
    Suspended,
}

/// What the operator observed and is doing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::phase::Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded, SnapshotHealthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobStatus>,
    /// Written before an operation acts (write-ahead), cleared when it is done:
    /// a restarted operator resumes from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_operation: Option<PendingOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<SavepointRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub savepoint_history: Vec<SavepointRef>,
    /// The spec running now (JSON), what the next change is compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_spec: Option<String>,
    /// The name of the deployment running now (its JobManager's `--deployment-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// When that deployment was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
    /// What that deployment restores from, as `--restore` names it (`none`,
    /// `latest-or-none`, a snapshot's URI): a redeploy before its job ever ran
    /// starts from the same state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_from: Option<String>,
    /// The label selector of the job's TaskManager pods (the scale
    /// subresource's, for an HPA or KEDA when the autoscaler is disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// A generation whose rollout was aborted (a failed savepoint): not retried
    /// until the spec changes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_generation: Option<i64>,
    /// The autoscaler's last evaluation and its recent rescales.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
    /// The vertices' own parallelism running now, by vertex uid (the
    /// autoscaler's choice); a vertex not named runs at `deployedSpec`'s
    /// parallelism. What the next rescale is compared with, as `deployedSpec`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployed_vertex_parallelism: BTreeMap<String, i32>,
}

/// What the autoscaler saw and decided last, per vertex.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    pub mode: AutoscalerMode,
    /// The parallelism the autoscaler chose (`active` mode), the largest of
    /// `vertexParallelism`: the job's default parallelism (and what its
    /// slots must cover), until `spec.parallelism` changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    /// Each vertex's parallelism the autoscaler chose, by vertex uid (every
    /// operator of a chain at its chain's): the job's effective parallelism,
    /// until `spec.parallelism` changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vertex_parallelism: BTreeMap<String, i32>,
    /// The `spec.parallelism` that choice was made over: when the spec's
    /// differs, the user changed it, and the user's value wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_parallelism: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation: Option<String>,
    /// One line: `scale up to 8: ...`, `within band`, `stabilizing until ...`,
    /// `budget spent: 6 rescales in the last hour`, `no metrics yet: ...`,
    /// `not evaluated: ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The decision's reason as a word that does not change with the figures
    /// (`scale-up`, `within-band`, `budget-spent`, `deploying`, ...): what
    /// events and the operator's metrics count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vertices: Vec<AutoscalerVertexStatus>,
    /// The last ten rescales, and every one of the last hour (the budget counts them), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_rescales: Vec<AutoscalerRescale>,
}

/// One vertex (a chain of operators) as the autoscaler saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerVertexStatus {
    pub name: String,
    /// Its parallelism now.
    pub parallelism: i32,
    pub recommended: i32,
    /// Records per second the whole vertex would process were it busy all the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_rate: Option<f64>,
    /// Records per second it must take in (its sources' demand, lag included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    /// The busy fraction of its busiest subtask, over the metrics window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<f64>,
    pub reason: String,
}

/// A rescale the autoscaler made, with what it saw before and after.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerRescale {
    pub time: String,
    /// The job's parallelism before.
    pub from: i32,
    /// The job's parallelism after.
    pub to: i32,
    /// The decision's line.
    pub summary: String,
    /// Why the rescale did not happen (its savepoint failed, say): the job
    /// stayed at `from`, and the rescale still counts against the budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vertices: Vec<AutoscalerVertexRescale>,
}

/// One vertex of a rescale: its load (target rate over capacity at its
/// parallelism) before, and once measured, after.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerVertexRescale {
    pub name: String,
    pub from: i32,
    pub to: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_before: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_after: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub id: String,
    /// The JobManager's job state (created, running, restarting, failing, failed, ...).
    pub state: String,
    pub parallelism: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// The savepoint or checkpoint the job's current run started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingOperation {
    pub kind: OperationKind,
    /// The spec generation the operation rolls out.
    pub generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_parallelism: Option<i32>,
    /// The vertices' own parallelism the rescale goes to, by vertex uid (the
    /// autoscaler's choice); the others go to `targetParallelism`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_vertex_parallelism: BTreeMap<String, i32>,
    /// A rescale in place (the JobManager's rescale API, no pod recreated),
    /// and the step it reached; none: a savepoint, then a redeploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place: Option<InPlaceRescale>,
    /// The savepoint's (or the rescale's) trigger id at the JobManager, once triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
    /// The savepoint (or checkpoint) the new deployment restores from, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    /// Why the savepoint is taken, for a plain savepoint (manual or periodic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_reason")]
    pub reason: Option<SavepointReason>,
    /// A rescale the autoscaler decided (not a spec change): when it fails,
    /// the autoscaler's choice goes back to what runs, and no generation is
    /// marked failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_autoscaler: bool,
    pub started_at: String,
}

impl PendingOperation {
    /// Whether the job stops once the operation's savepoint is taken: all but a plain savepoint.
    pub fn stops_job(&self) -> bool {
        self.kind != OperationKind::Savepoint
    }
}

/// A rescale through the JobManager's rescale API: the job stops with a
/// savepoint, which the JobManager verifies in storage, and its tasks restart
/// from it at the new parallelism on the TaskManagers there are. Its steps:
/// TaskManagers added (when their slots are too few), the rescale asked for
/// (`triggerId` once accepted) and followed until the job runs at the new
/// parallelism; then TaskManagers left idle are removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceRescale {
    pub step: InPlaceStep,
    /// When the step began.
    pub since: String,
    /// The slots the new parallelism needs: its largest vertex's parallelism.
    pub slots: i32,
    /// The TaskManager replicas before the rescale: what an abort goes back to.
    pub taskmanagers_before: i32,
    /// The TaskManager replicas during the rescale (more than before when slots were added).
    pub taskmanagers: i32,
    /// The JobManager's refusal of the rescale, as the executor recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RescaleRefusal>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InPlaceStep {
    /// The TaskManager Deployment was raised to `taskmanagers`: waiting for
    /// their containers to run, or the JobManager to report their slots (a
    /// bounded wait), while the job runs on.
    #[serde(rename = "add-taskmanagers")]
    AddTaskManagers,
    /// The rescale is asked of the JobManager (waiting for the slots of the
    /// TaskManagers added, which run, while its savepoint is taken), then
    /// followed by its `triggerId`.
    Rescale,
}

/// The JobManager's answer to a rescale it did not accept: nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RescaleRefusal {
    /// Its HTTP status: 409 for a rescale it understood and cannot make; any
    /// other for a request it does not know (an older JobManager).
    pub status: i32,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    Rescale,
    Upgrade,
    Suspend,
    Savepoint,
    Restart,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRef {
    pub id: i64,
    pub path: String,
    pub time: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRef {
    pub path: String,
    pub time: String,
    pub reason: SavepointReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SavepointReason {
    Manual,
    Rescale,
    Upgrade,
    Periodic,
    Suspend,
    Delete,
}

/// The CRD as YAML, as `weir-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let header = "# Generated by `weir-operator crd` from operator/src/crd.rs: do not edit.\n";
    format!("{header}{}", serde_yaml_ng::to_string(&StreamJob::crd()).expect("a CRD serializes"))
}

/// A small valid spec for tests: a bounded datagen pipeline at parallelism 2.
#[cfg(test)]
pub(crate) fn test_spec() -> StreamJobSpec {
    serde_yaml_ng::from_str(
        "image: weir:latest\n\
         pipeline: { name: j, source: { type: datagen, workload: orders, count: 1000 }, sink: { type: stdout } }\n\
         parallelism: 2\n\
         checkpointing: { interval: 10s, dir: s3://weir/checkpoints }\n",
    )
    .expect("a valid spec")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: { name: order-monitor }
spec:
  image: weir:latest
  pipeline: { name: order-monitor, source: { type: datagen, workload: orders }, sink: { type: stdout } }
  parallelism: 4
  checkpointing: { interval: 10s, dir: s3://weir/checkpoints }
"#;

    #[test]
    fn defaults_fill_what_a_user_leaves_out() {
        let job: StreamJob = serde_yaml_ng::from_str(EXAMPLE).unwrap();
        let s = &job.spec;
        assert_eq!((s.parallelism, s.max_parallelism), (4, 128));
        assert_eq!((s.job_manager.replicas, s.task_manager.slots), (1, 1));
        assert_eq!(s.upgrade_mode, UpgradeMode::Savepoint);
        assert_eq!(s.state, DesiredState::Running);
        assert!(s.savepoint_on_delete);
    }

    #[test]
    fn the_schema_carries_ranges_enums_and_required_fields() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(StreamJob::crd()).unwrap();
        let version = &crd["spec"]["versions"][0];
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let required: Vec<&str> = spec["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(required, ["checkpointing", "image", "parallelism"]);
        assert_eq!(spec["properties"]["parallelism"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(
            spec["properties"]["upgradeMode"]["enum"],
            serde_json::json!(["savepoint", "last-state", "stateless"])
        );
        assert_eq!(spec["properties"]["pipeline"]["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(version["subresources"]["scale"]["specReplicasPath"], ".spec.parallelism");
        assert_eq!(version["subresources"]["scale"]["labelSelectorPath"], ".status.selector", "for an HPA or KEDA");
        assert!(version["subresources"]["status"].is_object());
        assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["sj"]));
    }

    #[test]
    fn an_autoscaler_is_optional_and_its_defaults_fill_in() {
        let job: StreamJob = serde_yaml_ng::from_str(EXAMPLE).unwrap();
        assert_eq!(job.spec.autoscaler, None);
        let with = format!("{EXAMPLE}  autoscaler: {{ mode: recommend, excludedVertices: [sink] }}\n");
        let spec = serde_yaml_ng::from_str::<StreamJob>(&with).unwrap().spec.autoscaler.unwrap();
        let defaults = AutoscalerSpec {
            mode: AutoscalerMode::Recommend,
            excluded_vertices: vec!["sink".into()],
            ..Default::default()
        };
        assert_eq!(spec, defaults);
        assert_eq!(
            (spec.target_utilization, spec.scale_down_interval.as_str(), spec.max_rescales_per_hour),
            (0.7, "10m", 6)
        );
    }

    #[test]
    fn the_schema_bounds_the_autoscaler() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(StreamJob::crd()).unwrap();
        let version = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        let a = &version["spec"]["properties"]["autoscaler"]["properties"];
        let range = |f: &str| (a[f]["minimum"].as_f64(), a[f]["maximum"].as_f64());
        assert_eq!(range("targetUtilization"), (Some(0.1), Some(0.95)));
        assert_eq!(range("utilizationBand"), (Some(0.0), Some(0.5)));
        assert_eq!(range("maxRescalesPerHour"), (Some(1.0), Some(60.0)));
        assert_eq!(range("minParallelism"), (Some(1.0), Some(32768.0)));
        for f in ["metricsWindow", "stabilization", "scaleUpInterval", "scaleDownInterval", "catchUpTime"] {
            assert_eq!(a[f]["pattern"], DURATION, "{f}");
        }
        assert_eq!(a["mode"]["enum"], serde_json::json!(["disabled", "recommend", "active"]));
        let status = &version["status"]["properties"]["autoscaler"]["properties"];
        assert_eq!(status["vertices"]["items"]["properties"]["trueRate"]["type"], "number");
    }

    /// The API server refuses a CRD whose enums list `null` (optional enums must say `nullable`).
    #[test]
    fn no_enum_lists_null() {
        use kube::CustomResourceExt;
        fn walk(v: &serde_json::Value, at: &str) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(values) = m.get("enum").and_then(|e| e.as_array()) {
                        assert!(values.iter().all(|x| !x.is_null()), "the enum at {at} lists null");
                    }
                    m.iter().for_each(|(k, x)| walk(x, &format!("{at}.{k}")));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, at)),
                _ => {}
            }
        }
        walk(&serde_json::to_value(StreamJob::crd()).unwrap(), "");
    }
}
