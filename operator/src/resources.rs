//! The Kubernetes objects of one StreamJob's cluster, as pure functions of the
//! StreamJob and what to deploy: a ConfigMap with the pipeline, the job's
//! Secret (mounted into every JobManager and TaskManager, which prove it to
//! each other; the operator sends it to the REST API), a ServiceAccount with a Role for the JobManagers' leader-election Lease, the
//! JobManager Deployment (replicas beyond the first are standbys) and its
//! Service, and the TaskManager Deployment. Every object is owned by the
//! StreamJob (deleting it deletes them) and labelled with the job's name.
//!
//! The TaskManagers' pod template does not depend on the parallelism (only
//! their number does): an in-place rescale changes the TaskManager
//! Deployment's replicas alone, and the JobManager's (whose arguments carry
//! the parallelism a deployment starts at) not at all.

use std::collections::BTreeMap;

use k8s_openapi::DeepMerge;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, Secret, SecretEnvSource,
    SecretVolumeSource, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
pub use weir_api::Restore;
use weir_api::launch::{JobManagerOptions, Process, TaskManagerOptions, VertexParallelism};
use weir_api::parse_duration;

use crate::crd::{StateBackendKind, StreamJob, StreamJobSpec};
use crate::hardening;

/// The JobManager's REST port (DESIGN.md).
pub const REST_PORT: i32 = 8081;
/// The port TaskManagers register at.
pub const RPC_PORT: i32 = 6123;
const CONFIG_DIR: &str = "/etc/weir";
/// Where the job's Secret is mounted (beside, not inside, the ConfigMap's directory).
const AUTH_DIR: &str = "/etc/weir-auth";
/// The key of the job's Secret that holds its secret.
pub const AUTH_KEY: &str = "secret";
/// Where the disk state backend's volume is mounted.
pub const STATE_DIR: &str = "/var/lib/weir/state";

/// What the next deployment of the job runs: decided by the planner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deploy {
    /// The job's parallelism: every vertex's but those in `vertices`.
    pub parallelism: i32,
    /// Vertices' own parallelism, by vertex uid (`--vertex-parallelism`).
    pub vertices: BTreeMap<String, i32>,
    pub restore: Restore,
    /// Names this deployment: a JobManager restarted within it (a pod restart)
    /// recovers the deployment's own latest checkpoint instead of `restore`.
    pub id: String,
}

/// Names of a job's objects.
pub struct Names<'a>(pub &'a str);

impl Names<'_> {
    pub fn config(&self) -> String {
        format!("{}-config", self.0)
    }
    pub fn account(&self) -> String {
        format!("{}-weir", self.0)
    }
    pub fn jobmanager(&self) -> String {
        format!("{}-jobmanager", self.0)
    }
    pub fn taskmanager(&self) -> String {
        format!("{}-taskmanager", self.0)
    }
    /// The job's NetworkPolicy.
    pub fn network(&self) -> String {
        format!("{}-network", self.0)
    }
    /// The job's Secret, which its processes prove to each other.
    pub fn auth(&self) -> String {
        format!("{}-auth", self.0)
    }
    /// The Lease the JobManagers elect their leader with.
    pub fn lease(&self) -> String {
        format!("{}-jobmanager-leader", self.0)
    }
}

impl Deploy {
    /// The TaskManagers it needs at `slots` each.
    pub fn taskmanagers(&self, slots: i32) -> i32 {
        taskmanagers(slots_needed(self.parallelism, &self.vertices), slots)
    }
}

/// TaskManagers needed for `parallelism` subtasks at `slots` per TaskManager.
pub fn taskmanagers(parallelism: i32, slots: i32) -> i32 {
    let slots = slots.max(1);
    (parallelism.max(0) + slots - 1) / slots
}

/// The slots a job needs at `parallelism`, with `vertices` at their own:
/// its largest vertex's parallelism (the subtasks of different vertices
/// share a slot).
pub fn slots_needed(parallelism: i32, vertices: &BTreeMap<String, i32>) -> i32 {
    vertices.values().copied().fold(parallelism, i32::max)
}

fn labels(job: &StreamJob, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "weir".to_string()),
        ("app.kubernetes.io/instance".to_string(), job.name_any()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "weir-operator".to_string()),
    ])
}

/// The label selector of the job's TaskManager pods, as the scale
/// subresource gives it (`status.selector`): `key=value,...`.
pub fn taskmanager_selector(job: &StreamJob) -> String {
    let labels = labels(job, "taskmanager");
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The label selector of all of the job's pods (JobManagers and TaskManagers).
pub fn selector_of(job: &StreamJob) -> String {
    let labels = labels(job, "");
    labels
        .iter()
        .filter(|(k, _)| !k.ends_with("/component"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn meta(job: &StreamJob, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: job.metadata.namespace.clone(),
        labels: Some(labels(job, component)),
        owner_references: owner(job).map(|r| vec![r]),
        ..Default::default()
    }
}

/// The owner reference every object of the job carries.
pub fn owner(job: &StreamJob) -> Option<OwnerReference> {
    job.controller_owner_ref(&())
}

pub fn config_map(job: &StreamJob) -> ConfigMap {
    let mut data = BTreeMap::new();
    if let Some(p) = &job.spec.pipeline {
        data.insert("pipeline.yaml".to_string(), serde_yaml_ng::to_string(p).expect("JSON values serialize as YAML"));
    }
    ConfigMap { metadata: meta(job, Names(&job.name_any()).config(), "config"), data: Some(data), ..Default::default() }
}

/// The job's Secret, holding `token` (the operator makes one at random when
/// the job has none, and never changes it: the running processes hold it).
pub fn auth_secret(job: &StreamJob, token: &str) -> Secret {
    Secret {
        metadata: meta(job, Names(&job.name_any()).auth(), "auth"),
        string_data: Some(BTreeMap::from([(AUTH_KEY.to_string(), token.to_string())])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The job's Secret as a volume, and where each process finds it.
fn auth_volume(job: &StreamJob) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: "auth".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(Names(&job.name_any()).auth()),
            // Readable by the process's user and group only.
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    };
    (
        volume,
        VolumeMount { name: "auth".into(), mount_path: AUTH_DIR.into(), read_only: Some(true), ..Default::default() },
    )
}

fn auth_file() -> Option<std::path::PathBuf> {
    Some(format!("{AUTH_DIR}/{AUTH_KEY}").into())
}

pub fn service_account(job: &StreamJob) -> ServiceAccount {
    ServiceAccount { metadata: meta(job, Names(&job.name_any()).account(), "rbac"), ..Default::default() }
}

/// Least privilege: the job's own Lease, and nothing else.
pub fn role(job: &StreamJob) -> Role {
    let n = Names(&job.name_any());
    Role {
        metadata: meta(job, n.account(), "rbac"),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                resources: Some(vec!["leases".into()]),
                resource_names: Some(vec![n.lease()]),
                verbs: vec!["get".into(), "update".into(), "patch".into()],
                ..Default::default()
            },
            // `create` cannot be limited by name: Kubernetes does not know the name yet.
            PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                resources: Some(vec!["leases".into()]),
                verbs: vec!["create".into()],
                ..Default::default()
            },
        ]),
    }
}

pub fn role_binding(job: &StreamJob) -> RoleBinding {
    let n = Names(&job.name_any());
    RoleBinding {
        metadata: meta(job, n.account(), "rbac"),
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: n.account() },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: n.account(),
            namespace: job.metadata.namespace.clone(),
            ..Default::default()
        }]),
    }
}

fn tcp() -> Option<String> {
    Some("TCP".into())
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Storage settings and credentials, the same in every container.
fn storage_env(job: &StreamJob) -> (Vec<EnvVar>, Vec<EnvFromSource>) {
    let mut vars = vec![field_env("POD_IP", "status.podIP"), field_env("POD_NAME", "metadata.name")];
    let mut from = Vec::new();
    if let Some(s) = &job.spec.storage {
        if let Some(e) = &s.endpoint {
            vars.push(env("AWS_ENDPOINT_URL", e));
        }
        if let Some(r) = &s.region {
            vars.push(env("AWS_REGION", r));
        }
        if s.path_style {
            vars.push(env("WEIR_S3_PATH_STYLE", "true"));
        }
        if let Some(secret) = &s.credentials_secret {
            from.push(EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: secret.clone(), ..Default::default() }),
                ..Default::default()
            });
        }
    }
    (vars, from)
}

/// The JobManager's command line: the job, its checkpointing, and where to
/// restore from, written from the processes' own typed flags.
pub fn jobmanager_args(job: &StreamJob, deploy: &Deploy) -> Vec<String> {
    let s = &job.spec;
    let options = JobManagerOptions {
        pipeline: s.args.is_none().then(|| format!("{CONFIG_DIR}/pipeline.yaml").into()),
        job_name: Some(job.name_any()),
        parallelism: Some(deploy.parallelism.max(1) as usize),
        vertex_parallelism: deploy
            .vertices
            .iter()
            .map(|(uid, p)| VertexParallelism { uid: uid.clone(), parallelism: (*p).max(1) as usize })
            .collect(),
        checkpoint_dir: Some(s.checkpointing.dir.clone()),
        // Validated before anything is deployed (validate.rs).
        checkpoint_interval: parse_duration(&s.checkpointing.interval).ok(),
        savepoint_dir: s.savepoints.as_ref().and_then(|sp| sp.dir.clone()),
        restore: deploy.restore.clone(),
        deployment_id: Some(deploy.id.clone()),
        rest_port: REST_PORT as u16,
        rpc_port: RPC_PORT as u16,
        // The pod's own address (POD_IP comes from the downward API).
        bind: "$(POD_IP)".into(),
        // An exit would make Kubernetes restart the JobManager and rerun the job.
        linger: true,
        leader_lease: (s.job_manager.replicas > 1).then(|| Names(&job.name_any()).lease()),
        // A job binary's own arguments (weir::cluster hands them to the job).
        job_args: s.args.clone().unwrap_or_default(),
        auth_secret_file: auth_file(),
        set: state_settings(s),
        ..JobManagerOptions::default()
    };
    Process::Jobmanager(options).to_args()
}

/// `spec.stateBackend` as settings of the pipeline's `state` section (which
/// the JobManager hands to every TaskManager with the pipeline). The disk
/// backend's folder is the operator's: the state volume.
pub(crate) fn state_settings(spec: &StreamJobSpec) -> Vec<String> {
    let Some(state) = &spec.state_backend else { return Vec::new() };
    let mut sets = vec![format!("state.backend={}", state.kind.as_str())];
    if state.kind == StateBackendKind::Disk {
        sets.push(format!("state.dir={STATE_DIR}"));
    }
    sets.extend(state.memory.as_ref().map(|m| format!("state.memory={m}")));
    sets.extend(state.incremental.map(|on| format!("state.incremental={on}")));
    sets
}

/// The disk state backend's volume: an emptyDir (the state is rebuilt from
/// checkpoints on a new pod), limited to `volumeSizeLimit`.
fn state_volume(job: &StreamJob) -> Option<(Volume, VolumeMount)> {
    let state = job.spec.state_backend.as_ref().filter(|s| s.kind == StateBackendKind::Disk)?;
    let empty_dir =
        EmptyDirVolumeSource { size_limit: state.volume_size_limit.clone().map(Quantity), ..Default::default() };
    let volume = Volume { name: "state".into(), empty_dir: Some(empty_dir), ..Default::default() };
    Some((volume, VolumeMount { name: "state".into(), mount_path: STATE_DIR.into(), ..Default::default() }))
}

/// The TaskManager's command line.
pub fn taskmanager_args(job: &StreamJob) -> Vec<String> {
    let mut options = TaskManagerOptions::new(vec![format!("{}:{RPC_PORT}", Names(&job.name_any()).jobmanager())]);
    options.slots = job.spec.task_manager.slots.max(1) as usize;
    // Listen on the pod's own address, which is also what other TaskManagers reach it at.
    options.bind = "$(POD_IP)".into();
    options.auth_secret_file = auth_file();
    Process::Taskmanager(options).to_args()
}

/// The job's NetworkPolicy (see [`hardening`]).
pub fn network_policy(job: &StreamJob) -> NetworkPolicy {
    hardening::network_policy(job, meta(job, Names(&job.name_any()).network(), "network"))
}

/// A pod of the job: `container` with `volumes`, the user's template merged
/// over it, then held to the job's security rules ([`hardening::enforce`]).
fn pod(job: &StreamJob, component: &str, mut container: Container, mut volumes: Vec<Volume>) -> PodTemplateSpec {
    let (tmp, tmp_mount) = hardening::tmp_volume();
    volumes.push(tmp);
    container.volume_mounts.get_or_insert_with(Vec::new).push(tmp_mount);
    container.security_context = Some(hardening::container_context());
    // A container that fails leaves the tail of its log as its termination
    // message: what the operator reports of it (see `crate::pods`).
    container.termination_message_policy = Some("FallbackToLogsOnError".into());
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(job, component)),
            annotations: (component == "jobmanager").then(scrape_annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(Names(&job.name_any()).account()),
            containers: vec![container],
            volumes: Some(volumes),
            security_context: Some(hardening::pod_context()),
            ..Default::default()
        }),
    };
    // The user's pod template goes over the generated one (containers merge by name).
    if let Some(user) = job.spec.pod_template.clone().and_then(|v| serde_json::from_value::<PodTemplateSpec>(v).ok()) {
        template.merge_from(user);
    }
    // Only JobManagers that elect a leader talk to the API server.
    let token = component == "jobmanager" && job.spec.job_manager.replicas > 1;
    if let Some(spec) = template.spec.as_mut() {
        hardening::enforce(spec, token);
    }
    template
}

/// How Prometheus finds a JobManager's `/metrics` (on its REST port; the
/// TaskManagers' figures reach it through their heartbeats): the
/// `prometheus.io/*` annotations that `kubernetes_sd_configs` relabelling
/// conventionally reads (docs/monitoring.md). A pod template may override them.
fn scrape_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), REST_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ])
}

fn deployment(job: &StreamJob, component: &str, name: String, replicas: i32, template: PodTemplateSpec) -> Deployment {
    Deployment {
        metadata: meta(job, name, component),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels(job, component)), ..Default::default() },
            // Never two generations of a job's processes at once: old pods go before new ones start.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() }),
            template,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn jobmanager(job: &StreamJob, deploy: &Deploy) -> Deployment {
    let (vars, from) = storage_env(job);
    let mut container = Container {
        name: "jobmanager".into(),
        image: Some(job.spec.image.clone()),
        args: Some(jobmanager_args(job, deploy)),
        env: Some(vars),
        env_from: (!from.is_empty()).then_some(from),
        ports: Some(vec![
            ContainerPort { name: Some("rest".into()), container_port: REST_PORT, ..Default::default() },
            ContainerPort { name: Some("rpc".into()), container_port: RPC_PORT, ..Default::default() },
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::String("rest".into()),
                ..Default::default()
            }),
            period_seconds: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (auth, auth_mount) = auth_volume(job);
    let (mut volumes, mut mounts) = (vec![auth], vec![auth_mount]);
    if job.spec.pipeline.is_some() {
        volumes.push(Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource { name: Names(&job.name_any()).config(), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(VolumeMount { name: "config".into(), mount_path: CONFIG_DIR.into(), ..Default::default() });
    }
    // The JobManager builds the job's graph too, which opens the backend's store (empty).
    if let Some((volume, mount)) = state_volume(job) {
        volumes.push(volume);
        mounts.push(mount);
    }
    container.volume_mounts = Some(mounts);
    let template = pod(job, "jobmanager", container, volumes);
    deployment(job, "jobmanager", Names(&job.name_any()).jobmanager(), job.spec.job_manager.replicas, template)
}

/// The TaskManager Deployment at `replicas`.
pub fn taskmanager(job: &StreamJob, replicas: i32) -> Deployment {
    let (vars, from) = storage_env(job);
    let (auth, auth_mount) = auth_volume(job);
    let (mut volumes, mut mounts) = (vec![auth], vec![auth_mount]);
    if let Some((volume, mount)) = state_volume(job) {
        volumes.push(volume);
        mounts.push(mount);
    }
    let container = Container {
        name: "taskmanager".into(),
        image: Some(job.spec.image.clone()),
        args: Some(taskmanager_args(job)),
        env: Some(vars),
        env_from: (!from.is_empty()).then_some(from),
        resources: job.spec.task_manager.resources.clone(),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let template = pod(job, "taskmanager", container, volumes);
    deployment(job, "taskmanager", Names(&job.name_any()).taskmanager(), replicas, template)
}

/// The JobManagers' Service: REST for the operator and people, RPC for the TaskManagers.
///
/// With several JobManagers it still reaches only the leader, by readiness:
/// a standby waits for the Lease before it starts anything, so it serves no
/// REST and fails its readiness probe, and a Service's endpoints are its
/// ready pods. No label to set, so the JobManagers need no permission on pods.
pub fn jobmanager_service(job: &StreamJob) -> Service {
    let selector = labels(job, "jobmanager");
    Service {
        metadata: meta(job, Names(&job.name_any()).jobmanager(), "jobmanager"),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![
                ServicePort {
                    name: Some("rest".into()),
                    port: REST_PORT,
                    protocol: tcp(),
                    target_port: Some(IntOrString::String("rest".into())),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("rpc".into()),
                    port: RPC_PORT,
                    protocol: tcp(),
                    target_port: Some(IntOrString::String("rpc".into())),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{StorageSpec, test_spec};

    fn job() -> StreamJob {
        let mut job = StreamJob::new("orders", test_spec());
        job.metadata.namespace = Some("prod".into());
        job.metadata.uid = Some("1234".into());
        job
    }

    #[test]
    fn every_object_is_owned_by_the_job_and_labelled_with_it() {
        let j = job();
        let d = Deploy { parallelism: 2, vertices: BTreeMap::new(), restore: Restore::Fresh, id: "1".into() };
        let metas = [
            config_map(&j).metadata,
            service_account(&j).metadata,
            role(&j).metadata,
            role_binding(&j).metadata,
            jobmanager(&j, &d).metadata,
            taskmanager(&j, d.taskmanagers(1)).metadata,
            jobmanager_service(&j).metadata,
        ];
        for m in metas {
            let owner = &m.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.controller),
                ("StreamJob", "orders", Some(true))
            );
            assert_eq!(m.namespace.as_deref(), Some("prod"));
            assert_eq!(m.labels.unwrap()["app.kubernetes.io/instance"], "orders");
        }
    }

    #[test]
    fn a_disk_state_backend_reaches_the_pipeline_and_gets_a_volume_on_every_pod() {
        use crate::crd::StateBackendSpec;
        use clap::Parser;
        use weir_pipeline::plan::StatePlan;
        let mut j = job();
        let d = Deploy { parallelism: 2, vertices: BTreeMap::new(), restore: Restore::Fresh, id: "1".into() };
        assert_eq!(state_settings(&j.spec), Vec::<String>::new(), "absent: the pipeline's own section holds");
        assert!(state_volume(&j).is_none());
        j.spec.state_backend = Some(StateBackendSpec {
            kind: StateBackendKind::Disk,
            memory: Some("64MiB".into()),
            incremental: Some(false),
            volume_size_limit: Some("5Gi".into()),
        });
        // The settings, applied to the pipeline as every process applies them, give that backend.
        let text = serde_yaml_ng::to_string(j.spec.pipeline.as_ref().unwrap()).unwrap();
        let origin = std::path::Path::new("spec.pipeline");
        let file = weir_pipeline::config::parse(origin, &text, &state_settings(&j.spec)).expect("the settings parse");
        let overrides = weir_pipeline::check::Overrides { parallelism: Some(2), checkpointing: Some(true) };
        let plan = weir_pipeline::check::check(origin, &file, &overrides).expect("the pipeline checks");
        assert_eq!(plan.state, StatePlan::Disk { dir: STATE_DIR.into(), memory: 64 << 20 });
        assert_eq!(plan.incremental, Some(false));
        let Process::Jobmanager(o) =
            Process::try_parse_from(std::iter::once("weir".to_string()).chain(jobmanager_args(&j, &d)))
                .expect("the jobmanager's arguments parse")
        else {
            panic!("a jobmanager's arguments")
        };
        assert_eq!(o.set, state_settings(&j.spec));
        for (what, pod) in [("jobmanager", jobmanager(&j, &d)), ("taskmanager", taskmanager(&j, 2))] {
            let spec = pod.spec.unwrap().template.spec.unwrap();
            let volume = spec.volumes.iter().flatten().find(|v| v.name == "state").expect(what);
            assert_eq!(volume.empty_dir.as_ref().unwrap().size_limit, Some(Quantity("5Gi".into())), "{what}");
            let mounts = spec.containers[0].volume_mounts.iter().flatten();
            assert!(mounts.clone().any(|m| m.name == "state" && m.mount_path == STATE_DIR), "{what}");
        }
        // On the heap: the backend is set, no folder and no volume.
        j.spec.state_backend = Some(StateBackendSpec::default());
        assert_eq!(state_settings(&j.spec), ["state.backend=heap"]);
        assert!(state_volume(&j).is_none());
    }

    #[test]
    fn the_scale_selector_selects_the_taskmanager_pods_only() {
        let j = job();
        let d = Deploy { parallelism: 2, vertices: BTreeMap::new(), restore: Restore::Fresh, id: "1".into() };
        let selector = taskmanager_selector(&j);
        assert!(selector.contains("app.kubernetes.io/instance=orders"), "{selector}");
        let selected: BTreeMap<String, String> = selector
            .split(',')
            .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).expect("key=value"))
            .collect();
        let pod_labels = |d: Deployment| d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        let matches = |labels: &BTreeMap<String, String>| selected.iter().all(|(k, v)| labels.get(k) == Some(v));
        assert!(matches(&pod_labels(taskmanager(&j, 2))));
        assert!(!matches(&pod_labels(jobmanager(&j, &d))), "not the JobManager's pods");
    }

    #[test]
    fn taskmanagers_cover_the_parallelism_and_the_jobmanager_restores_what_it_is_told() {
        // The pods' arguments as the weir binary and job binaries parse them.
        let parse = |args: Vec<String>| {
            use clap::Parser;
            Process::try_parse_from(std::iter::once("weir".to_string()).chain(args)).expect("the processes parse it")
        };
        let jm = |j: &StreamJob, d: &Deploy| match parse(jobmanager_args(j, d)) {
            Process::Jobmanager(o) => o,
            Process::Taskmanager(_) => panic!("a jobmanager's arguments"),
        };
        let mut j = job();
        j.spec.task_manager.slots = 2;
        j.spec.checkpointing.interval = "1h".into();
        let sp = "s3://weir/checkpoints/orders/savepoints/sp-7";
        let d = Deploy {
            parallelism: 5,
            vertices: BTreeMap::new(),
            restore: Restore::Snapshot(sp.into()),
            id: "3-20261121120000".into(),
        };
        assert_eq!(d.taskmanagers(j.spec.task_manager.slots), 3);
        assert_eq!(taskmanager(&j, 3).spec.unwrap().replicas, Some(3));
        let o = jm(&j, &d);
        assert_eq!(o.pipeline, Some("/etc/weir/pipeline.yaml".into()));
        assert_eq!((o.job_name.as_deref(), o.parallelism), (Some("orders"), Some(5)));
        assert_eq!(o.checkpoint_interval, Some(std::time::Duration::from_secs(3600)), "1h reaches the JobManager");
        assert_eq!(o.restore, Restore::Snapshot(sp.into()));
        assert_eq!(o.deployment_id.as_deref(), Some("3-20261121120000"));
        assert!(o.linger, "a finished job's JobManager stays up");
        assert_eq!(o.bind, "$(POD_IP)", "it listens on the pod's address");
        assert_eq!(o.leader_lease, None, "one JobManager needs no election");
        assert_eq!(o.vertex_parallelism, [], "no vertex of its own");
        let vertices = BTreeMap::from([("2-window".to_string(), 6), ("1-source".to_string(), 1)]);
        let per_vertex = Deploy { parallelism: 2, vertices, ..d.clone() };
        assert_eq!(per_vertex.taskmanagers(2), 3, "the largest vertex's parallelism, in slots the vertices share");
        let o = jm(&j, &per_vertex);
        assert_eq!(o.parallelism, Some(2));
        let flags = VertexParallelism::map(&o.vertex_parallelism);
        assert_eq!(flags, BTreeMap::from([("1-source".to_string(), 1), ("2-window".to_string(), 6)]));
        for restore in [Restore::Fresh, Restore::LatestOrFresh] {
            assert_eq!(jm(&j, &Deploy { restore: restore.clone(), ..d.clone() }).restore, restore);
        }
        j.spec.job_manager.replicas = 2;
        assert_eq!(jm(&j, &d).leader_lease.as_deref(), Some("orders-jobmanager-leader"));
        let mut binary = j.clone();
        (binary.spec.pipeline, binary.spec.args) = (None, Some(vec!["--min-amount".into(), "100".into()]));
        let o = jm(&binary, &d);
        assert_eq!((o.pipeline, o.job_args), (None, vec!["--min-amount".to_string(), "100".to_string()]));
        let Process::Taskmanager(tm) = parse(taskmanager_args(&j)) else { panic!("a taskmanager's arguments") };
        assert_eq!(
            (tm.jobmanager, tm.slots, tm.bind.as_str()),
            (vec!["orders-jobmanager:6123".to_string()], 2, "$(POD_IP)")
        );
        let cm = config_map(&j);
        assert!(cm.data.unwrap()["pipeline.yaml"].contains("workload: orders"));
    }

    #[test]
    fn storage_credentials_come_from_the_secret_and_the_pod_template_is_merged() {
        let mut j = job();
        j.spec.storage = Some(StorageSpec {
            endpoint: Some("http://minio:9000".into()),
            region: None,
            path_style: true,
            credentials_secret: Some("s3-creds".into()),
        });
        j.spec.pod_template = Some(serde_json::json!({
            "metadata": { "annotations": { "team": "orders" } },
            "spec": { "nodeSelector": { "pool": "streaming" } }
        }));
        let d = Deploy { parallelism: 1, vertices: BTreeMap::new(), restore: Restore::Fresh, id: "1".into() };
        let pod = jobmanager(&j, &d).spec.unwrap().template;
        let spec = pod.spec.unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "s3-creds");
        let env: Vec<&str> = c.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        assert!(env.contains(&"AWS_ENDPOINT_URL") && env.contains(&"POD_IP"), "{env:?}");
        assert_eq!(spec.node_selector.unwrap()["pool"], "streaming");
        assert_eq!(pod.metadata.unwrap().annotations.unwrap()["team"], "orders");
        assert_eq!(spec.service_account_name.as_deref(), Some("orders-weir"));
    }

    #[test]
    fn prometheus_finds_the_jobmanagers_metrics_by_their_annotations() {
        let j = job();
        let d = Deploy { parallelism: 1, vertices: BTreeMap::new(), restore: Restore::Fresh, id: "1".into() };
        let jm = jobmanager(&j, &d).spec.unwrap().template.metadata.unwrap().annotations.unwrap();
        assert_eq!(
            (jm["prometheus.io/scrape"].as_str(), jm["prometheus.io/port"].as_str(), jm["prometheus.io/path"].as_str()),
            ("true", &*REST_PORT.to_string(), "/metrics")
        );
        let tm = taskmanager(&j, 1).spec.unwrap().template.metadata.unwrap().annotations.unwrap_or_default();
        assert!(!tm.contains_key("prometheus.io/scrape"), "TaskManagers report through the JobManager");
    }

    #[test]
    fn the_service_reaches_the_jobmanagers_by_readiness_which_only_the_leader_passes() {
        let mut j = job();
        j.spec.job_manager.replicas = 3;
        let d = Deploy { parallelism: 1, vertices: BTreeMap::new(), restore: Restore::Fresh, id: "1".into() };
        let jm = jobmanager(&j, &d);
        let pod_labels = jm.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
        let selector = jobmanager_service(&j).spec.unwrap().selector.unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "{selector:?} selects {pod_labels:?}");
        assert!(!selector.contains_key("weir.dev/leader"), "no label that nothing sets");
        let c = &jm.spec.unwrap().template.spec.unwrap().containers[0];
        let probe = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("a readiness probe");
        assert_eq!(probe.port, IntOrString::String("rest".into()), "served only once leading");
        assert!(jobmanager_args(&j, &d).iter().any(|a| a == "--leader-lease"));
    }

    #[test]
    fn pods_run_unprivileged_and_only_leader_electing_jobmanagers_get_a_token() {
        let mut j = job();
        j.spec.pod_template = Some(serde_json::json!({ "spec": { "containers": [
            { "name": "taskmanager", "securityContext": { "privileged": true } }
        ] } }));
        let d = Deploy { parallelism: 1, vertices: BTreeMap::new(), restore: Restore::Fresh, id: "1".into() };
        for (replicas, token) in [(1, false), (3, true)] {
            j.spec.job_manager.replicas = replicas;
            let jm = jobmanager(&j, &d).spec.unwrap().template.spec.unwrap();
            assert_eq!(jm.automount_service_account_token, Some(token), "{replicas} JobManagers");
        }
        for deployment in [jobmanager(&j, &d), taskmanager(&j, 2)] {
            let spec = deployment.spec.unwrap().template.spec.unwrap();
            assert_eq!(spec.security_context.as_ref().unwrap().run_as_non_root, Some(true));
            let c = &spec.containers[0];
            assert_eq!(c.security_context.as_ref(), Some(&hardening::container_context()), "{}", c.name);
            assert!(c.volume_mounts.iter().flatten().any(|m| m.mount_path == "/tmp"), "a writable /tmp");
        }
        let tm = taskmanager(&j, 2).spec.unwrap().template.spec.unwrap();
        assert_eq!(tm.automount_service_account_token, Some(false));
        let policy = network_policy(&j).spec.unwrap();
        let own = policy.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(own["app.kubernetes.io/instance"], "orders");
        let rules = policy.ingress.unwrap();
        assert_eq!(rules.len(), 2, "the job's own pods on any port, anyone on the REST port");
        assert!(rules[0].ports.is_none() && rules[0].from.as_ref().unwrap()[0].pod_selector.is_some());
        let rest = rules[1].ports.as_ref().unwrap();
        assert_eq!((rules[1].from.as_ref(), rest.len()), (None, 1), "the REST port only, from anywhere");
        assert_eq!(rest[0].port, Some(IntOrString::Int(REST_PORT)));
    }

    #[test]
    fn every_process_mounts_the_jobs_secret_and_is_told_where_it_is() {
        let j = job();
        let secret = auth_secret(&j, "0123abcd");
        assert_eq!(secret.metadata.name.as_deref(), Some("orders-auth"));
        assert_eq!(secret.string_data.unwrap()[AUTH_KEY], "0123abcd");
        let d = Deploy { parallelism: 1, vertices: BTreeMap::new(), restore: Restore::Fresh, id: "1".into() };
        for deployment in [jobmanager(&j, &d), taskmanager(&j, 2)] {
            let spec = deployment.spec.unwrap().template.spec.unwrap();
            let c = &spec.containers[0];
            let args = c.args.clone().unwrap().join(" ");
            assert!(args.contains("--auth-secret-file /etc/weir-auth/secret"), "{args}");
            let mount = c.volume_mounts.iter().flatten().find(|m| m.name == "auth").expect("the auth mount");
            assert_eq!((mount.mount_path.as_str(), mount.read_only), (AUTH_DIR, Some(true)));
            let volume = spec.volumes.iter().flatten().find(|v| v.name == "auth").expect("the auth volume");
            assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("orders-auth"));
        }
    }

    #[test]
    fn the_lease_role_is_least_privilege() {
        let rules = role(&job()).rules.unwrap();
        assert!(rules.iter().all(|r| r.resources.as_deref() == Some(&["leases".to_string()][..])));
        assert_eq!(rules[0].resource_names.as_deref(), Some(&["orders-jobmanager-leader".to_string()][..]));
    }
}
