//! What the job's own pods say when its JobManager does not answer.
//!
//! An image that cannot be pulled, a container that exits at start, a
//! security context the image cannot satisfy, a pod no node takes: Kubernetes
//! records each in the pod's status, and the JobManager's silence alone says
//! none of it. When the JobManager does not answer, the observer lists the
//! job's pods ([`PodReader`]: the operator may list pods, nothing more), and
//! [`problems`], a pure function, makes one line of each thing wrong with
//! them, for the StreamJob's `Ready` condition and an event.
//!
//! While an in-place rescale adds TaskManagers, the observer counts those
//! that run ([`taskmanagers_started`]): the rescale is asked for once they do.
//!
//! The operator's containers ask for `FallbackToLogsOnError`: a container
//! that fails leaves the tail of its log as its termination message, so the
//! line carries the process's own error.

use std::fmt;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::crd::StreamJob;

/// The waiting reasons that mean a container will not run as it is.
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "PreCreateHookError",
    "PostStartHookError",
];

/// How much of a container's own message a line keeps (its last characters).
const MESSAGE_CHARS: usize = 300;

/// At most this many problems are reported (the first, by pod name).
pub const MAX_PROBLEMS: usize = 5;

/// One thing wrong with one of the job's pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    pub pod: String,
    pub container: Option<String>,
    /// Kubernetes' word for it (`ImagePullBackOff`, `CrashLoopBackOff`, `Unschedulable`).
    pub reason: String,
    /// What Kubernetes or the process said, if anything.
    pub message: String,
}

impl fmt::Display for PodProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pod {}", self.pod)?;
        if let Some(c) = &self.container {
            write!(f, ", container {c}")?;
        }
        write!(f, ": {}", self.reason)?;
        if !self.message.is_empty() {
            write!(f, " ({})", self.message)?;
        }
        Ok(())
    }
}

/// Everything wrong with `pods` (pods being deleted are not looked at), in
/// pod-name order, at most [`MAX_PROBLEMS`].
pub fn problems(pods: &[Pod]) -> Vec<PodProblem> {
    let mut pods: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    pods.sort_by_key(|p| p.name_any());
    let mut found = Vec::new();
    for pod in pods {
        let name = pod.name_any();
        let Some(status) = &pod.status else { continue };
        if status.phase.as_deref() == Some("Failed") {
            let reason = status.reason.clone().unwrap_or_else(|| "Failed".into());
            found.push(problem(&name, None, reason, status.message.as_deref()));
        }
        let unschedulable =
            status.conditions.iter().flatten().find(|c| {
                c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
            });
        if let Some(c) = unschedulable {
            found.push(problem(&name, None, "Unschedulable".into(), c.message.as_deref()));
        }
        let containers =
            status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
        found.extend(containers.filter_map(|c| container_problem(&name, c)));
    }
    found.truncate(MAX_PROBLEMS);
    found
}

/// How many of `pods` are TaskManagers that run: not being deleted, phase
/// `Running`, every container started and never restarted (its process is
/// up, and registers with the JobManager within moments; one that crashed
/// once is not counted on to).
pub fn taskmanagers_started(pods: &[Pod]) -> i32 {
    let taskmanager = |p: &&Pod| {
        p.labels().get("app.kubernetes.io/component").is_some_and(|c| c == "taskmanager")
            && p.metadata.deletion_timestamp.is_none()
    };
    let runs = |p: &&Pod| {
        let Some(status) = &p.status else { return false };
        let containers = status.container_statuses.as_deref().unwrap_or_default();
        status.phase.as_deref() == Some("Running")
            && !containers.is_empty()
            && containers.iter().all(|c| c.restart_count == 0 && c.state.as_ref().is_some_and(|s| s.running.is_some()))
    };
    pods.iter().filter(taskmanager).filter(runs).count() as i32
}

/// A container that waits for a reason that will not go away by itself,
/// with how it last ended, if it ran.
fn container_problem(pod: &str, c: &ContainerStatus) -> Option<PodProblem> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().filter(|r| STUCK.contains(r))?;
    let mut message = waiting.message.clone().unwrap_or_default();
    if let Some(ended) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
        let said = ended.message.as_deref().map(str::trim).filter(|m| !m.is_empty());
        let last = match said {
            Some(m) => format!("exit code {}: {m}", ended.exit_code),
            None => format!("exit code {}", ended.exit_code),
        };
        message = if message.is_empty() { last } else { format!("{message}; {last}") };
    }
    Some(problem(pod, Some(&c.name), reason.to_string(), Some(&message)))
}

fn problem(pod: &str, container: Option<&str>, reason: String, message: Option<&str>) -> PodProblem {
    let message = message.unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
    let tail = message.char_indices().rev().nth(MESSAGE_CHARS - 1).map_or(0, |(i, _)| i);
    let message = if tail > 0 { format!("…{}", &message[tail..]) } else { message };
    PodProblem { pod: pod.into(), container: container.map(str::to_string), reason, message }
}

/// Lists a job's own pods (what its Deployments made).
pub trait PodReader: Send + Sync {
    fn pods<'a>(&'a self, job: &'a StreamJob) -> BoxFuture<'a, Result<Vec<Pod>, kube::Error>>;
}

/// The pods through the API server, by the labels the operator gives them.
pub struct KubePods(pub Client);

impl PodReader for KubePods {
    fn pods<'a>(&'a self, job: &'a StreamJob) -> BoxFuture<'a, Result<Vec<Pod>, kube::Error>> {
        Box::pin(async move {
            let ns = job.namespace().unwrap_or_else(|| "default".into());
            let api: Api<Pod> = Api::namespaced(self.0.clone(), &ns);
            let selector = crate::resources::selector_of(job);
            Ok(api.list(&ListParams::default().labels(&selector)).await?.items)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str, status: PodStatus) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            status: Some(status),
            ..Default::default()
        }
    }

    fn waiting(name: &str, reason: &str, message: Option<&str>, last: Option<(i32, &str)>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: message.map(str::to_string),
                }),
                ..Default::default()
            }),
            last_state: last.map(|(exit_code, message)| ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code,
                    message: Some(message.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn taskmanagers_run_once_every_container_started_and_only_taskmanagers_count() {
        let tm = crate::fixtures::running_taskmanager;
        let mut starting = tm("tm-2");
        let status = starting.status.as_mut().unwrap();
        status.container_statuses = Some(vec![waiting("taskmanager", "ContainerCreating", None, None)]);
        let mut pending = tm("tm-3");
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        let mut going = tm("tm-4");
        going.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut jobmanager = tm("jm");
        jobmanager.metadata.labels.as_mut().unwrap().insert("app.kubernetes.io/component".into(), "jobmanager".into());
        let mut no_status = tm("tm-5");
        no_status.status = None;
        let mut restarted = tm("tm-6");
        restarted.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0].restart_count = 1;
        let pods = [tm("tm-0"), tm("tm-1"), starting, pending, going, jobmanager, no_status, restarted];
        assert_eq!(taskmanagers_started(&pods), 2);
        assert_eq!(taskmanagers_started(&[]), 0);
    }

    #[test]
    fn each_stuck_container_unschedulable_or_failed_pod_is_one_line_naming_pod_and_container() {
        let pods = vec![
            pod(
                "orders-taskmanager-b",
                PodStatus {
                    container_statuses: Some(vec![waiting(
                        "taskmanager",
                        "CrashLoopBackOff",
                        Some("back-off 10s restarting failed container"),
                        Some((2, "weir: --checkpoint-dir s3://nowhere: the bucket does not exist\n")),
                    )]),
                    ..Default::default()
                },
            ),
            pod(
                "orders-jobmanager-a",
                PodStatus {
                    container_statuses: Some(vec![waiting(
                        "jobmanager",
                        "ImagePullBackOff",
                        Some("Back-off pulling image \"weir:missing\""),
                        None,
                    )]),
                    ..Default::default()
                },
            ),
            pod(
                "orders-taskmanager-c",
                PodStatus {
                    conditions: Some(vec![PodCondition {
                        type_: "PodScheduled".into(),
                        status: "False".into(),
                        reason: Some("Unschedulable".into()),
                        message: Some("0/1 nodes are available: 1 Insufficient memory.".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
            ),
            pod(
                "orders-taskmanager-d",
                PodStatus {
                    phase: Some("Running".into()),
                    container_statuses: Some(vec![waiting("taskmanager", "ContainerCreating", None, None)]),
                    ..Default::default()
                },
            ),
        ];
        let lines: Vec<String> = problems(&pods).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "pod orders-jobmanager-a, container jobmanager: ImagePullBackOff (Back-off pulling image \"weir:missing\")",
                "pod orders-taskmanager-b, container taskmanager: CrashLoopBackOff (back-off 10s restarting failed \
                 container; exit code 2: weir: --checkpoint-dir s3://nowhere: the bucket does not exist)",
                "pod orders-taskmanager-c: Unschedulable (0/1 nodes are available: 1 Insufficient memory.)",
            ],
            "a container still being created is no problem"
        );
    }

    #[tokio::test]
    async fn the_pods_are_listed_by_the_jobs_labels_in_its_namespace() {
        let (client, mut verifier) = crate::fixtures::ApiServerVerifier::pair();
        let job = StreamJob::test();
        let server = tokio::spawn(async move {
            let (request, send) = verifier.next().await.expect("a request");
            assert_eq!(request.method(), http::Method::GET);
            assert_eq!(request.uri().path(), "/api/v1/namespaces/weir/pods");
            let query = urlencoding_decode(request.uri().query().unwrap_or_default());
            assert!(
                query.contains(
                    "labelSelector=app.kubernetes.io/instance=orders,app.kubernetes.io/managed-by=weir-operator"
                ),
                "{query}"
            );
            let list = serde_json::json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {},
                "items": [{ "metadata": { "name": "orders-jobmanager-1" } }] });
            let body = kube::client::Body::from(list.to_string().into_bytes());
            send.send_response(http::Response::builder().body(body).unwrap());
        });
        let pods = KubePods(client).pods(&job).await.unwrap();
        assert_eq!(pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["orders-jobmanager-1"]);
        server.await.unwrap();
    }

    fn urlencoding_decode(s: &str) -> String {
        s.replace("%2F", "/").replace("%3D", "=").replace("%2C", ",")
    }

    #[test]
    fn long_messages_keep_their_end_pods_being_deleted_are_skipped_and_few_lines_are_kept() {
        let log = format!("{}the error at the end", "log line ".repeat(200));
        let crashing = |name: &str| {
            pod(
                name,
                PodStatus {
                    container_statuses: Some(vec![waiting("c", "CrashLoopBackOff", None, Some((1, &log)))]),
                    ..Default::default()
                },
            )
        };
        let mut deleted = crashing("a-deleted");
        deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut pods: Vec<Pod> = (0..8).map(|i| crashing(&format!("p{i}"))).collect();
        pods.push(deleted);
        let found = problems(&pods);
        assert_eq!(found.len(), MAX_PROBLEMS);
        assert_eq!(found[0].pod, "p0", "the pod being deleted is not looked at");
        assert!(found[0].message.ends_with("the error at the end"), "{}", found[0].message);
        assert!(found[0].message.chars().count() <= MESSAGE_CHARS + 1, "{}", found[0].message.len());
    }
}
