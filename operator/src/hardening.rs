//! What the operator does so that a job's pods hold no more privilege than
//! they need, and reach and are reached by no more than they must: pure
//! functions of the StreamJob, like the rest of [`crate::resources`].
//!
//! * Every container runs as a non-root user (the image's `65532`, unless the
//!   user's pod template names another non-root one) on a read-only root file
//!   system, with every capability dropped, no privilege escalation and the
//!   runtime's default seccomp profile; `/tmp` is an `emptyDir`.
//! * A ServiceAccount token is mounted only where the process talks to the
//!   API server: JobManagers that elect a leader with a Lease.
//! * The user's `podTemplate` is merged over the generated pod, but may not
//!   raise privileges: a template that asks for root, privilege, added
//!   capabilities, host namespaces or host paths is refused by validation,
//!   naming the field ([`privileges_asked`]), and whatever it says, the
//!   rendered pod is held to the rules above ([`enforce`]).
//! * A NetworkPolicy per job ([`network_policy`]) lets only the job's own pods
//!   reach its JobManager's RPC port and its TaskManagers' data ports; the
//!   REST port stays reachable (reads are open, writes need the job's token).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::crd::StreamJob;

/// The user the stock image runs as (its Dockerfile's `USER`).
pub const IMAGE_USER: i64 = 65532;
/// Where processes may write: an `emptyDir`, the root file system being read-only.
const TMP: &str = "/tmp";

/// The pod's security context: non-root, the runtime's default seccomp profile.
pub fn pod_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(IMAGE_USER),
        run_as_group: Some(IMAGE_USER),
        fs_group: Some(IMAGE_USER),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// Each container's: no capability, no escalation, a read-only root file system.
pub fn container_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// The writable `/tmp` every container gets: its volume and mount.
pub fn tmp_volume() -> (Volume, VolumeMount) {
    let volume = Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() };
    (volume, VolumeMount { name: "tmp".into(), mount_path: TMP.into(), ..Default::default() })
}

/// What in a user's pod template would raise the pods' privileges: the field
/// (under `spec.podTemplate`) and why, or `None`.
pub fn privileges_asked(template: &serde_json::Value) -> Option<(String, String)> {
    let spec = &template["spec"];
    for (field, why) in [
        ("hostNetwork", "the host's network namespace"),
        ("hostPID", "the host's process namespace"),
        ("hostIPC", "the host's IPC namespace"),
    ] {
        if spec[field] == true {
            return Some((format!("spec.{field}"), format!("a job's pods may not share {why}")));
        }
    }
    if let Some(found) = root_or_privilege(&spec["securityContext"], "spec.securityContext") {
        return Some(found);
    }
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        if !v["hostPath"].is_null() {
            return Some((format!("spec.volumes[{i}].hostPath"), "a job's pods may not mount host paths".into()));
        }
    }
    for kind in ["containers", "initContainers"] {
        for (i, c) in spec[kind].as_array().into_iter().flatten().enumerate() {
            if let Some(found) = root_or_privilege(&c["securityContext"], &format!("spec.{kind}[{i}].securityContext"))
            {
                return Some(found);
            }
        }
    }
    None
}

/// Root, privilege, escalation or added capabilities in one security context.
fn root_or_privilege(context: &serde_json::Value, at: &str) -> Option<(String, String)> {
    let field = |name: &str| format!("{at}.{name}");
    if context["runAsUser"] == 0 {
        return Some((field("runAsUser"), "a job's processes may not run as root".into()));
    }
    if context["runAsNonRoot"] == false {
        return Some((field("runAsNonRoot"), "a job's processes run as a non-root user".into()));
    }
    if context["privileged"] == true {
        return Some((field("privileged"), "a job's containers may not be privileged".into()));
    }
    if context["allowPrivilegeEscalation"] == true {
        return Some((field("allowPrivilegeEscalation"), "a job's processes may not gain privileges".into()));
    }
    if context["capabilities"]["add"].as_array().is_some_and(|a| !a.is_empty()) {
        return Some((field("capabilities.add"), "a job's containers run with every capability dropped".into()));
    }
    if context["readOnlyRootFilesystem"] == false {
        return Some((field("readOnlyRootFilesystem"), "a job's containers have a read-only root file system".into()));
    }
    None
}

/// Holds a pod, after the user's template was merged in, to the rules above:
/// whatever the template said, no root, privilege or host namespace remains.
pub fn enforce(spec: &mut PodSpec, token: bool) {
    spec.automount_service_account_token = Some(token);
    spec.host_network = None;
    spec.host_pid = None;
    spec.host_ipc = None;
    let pod = spec.security_context.get_or_insert_with(Default::default);
    let wanted = pod_context();
    pod.run_as_non_root = wanted.run_as_non_root;
    if pod.run_as_user.is_none_or(|u| u == 0) {
        pod.run_as_user = wanted.run_as_user;
    }
    if pod.run_as_group.is_none_or(|g| g == 0) {
        pod.run_as_group = wanted.run_as_group;
    }
    pod.fs_group = pod.fs_group.or(wanted.fs_group);
    pod.seccomp_profile = wanted.seccomp_profile;
    if let Some(volumes) = &mut spec.volumes {
        volumes.retain(|v| v.host_path.is_none());
    }
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        enforce_container(c);
    }
}

fn enforce_container(c: &mut Container) {
    let wanted = container_context();
    let context = c.security_context.get_or_insert_with(Default::default);
    if context.run_as_user == Some(0) {
        context.run_as_user = None;
    }
    context.run_as_non_root = wanted.run_as_non_root;
    context.privileged = wanted.privileged;
    context.allow_privilege_escalation = wanted.allow_privilege_escalation;
    context.read_only_root_filesystem = wanted.read_only_root_filesystem;
    context.capabilities = wanted.capabilities;
    context.seccomp_profile = wanted.seccomp_profile;
}

/// The job's NetworkPolicy: its pods take connections from each other on
/// any port (the JobManager's RPC, the TaskManagers' data channels), and
/// from anywhere on the REST port only, whose reads are open (Prometheus,
/// dashboards, the operator through the API server's proxy) and whose writes
/// need the job's token.
pub fn network_policy(job: &StreamJob, meta: ObjectMeta) -> NetworkPolicy {
    let own = LabelSelector {
        match_labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "weir".to_string()),
            ("app.kubernetes.io/instance".to_string(), job.name_any()),
        ])),
        ..Default::default()
    };
    let rest = NetworkPolicyPort {
        port: Some(IntOrString::Int(crate::resources::REST_PORT)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(own.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer { pod_selector: Some(own), ..Default::default() }]),
                    ports: None,
                },
                NetworkPolicyIngressRule { from: None, ports: Some(vec![rest]) },
            ]),
            egress: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_that_asks_for_privilege_is_named() {
        let asked = |t: serde_json::Value| privileges_asked(&t).map(|(field, _)| field);
        assert_eq!(asked(json!({ "metadata": { "labels": { "team": "a" } } })), None);
        assert_eq!(asked(json!({ "spec": { "hostNetwork": true } })).as_deref(), Some("spec.hostNetwork"));
        assert_eq!(
            asked(json!({ "spec": { "securityContext": { "runAsUser": 0 } } })).as_deref(),
            Some("spec.securityContext.runAsUser")
        );
        assert_eq!(
            asked(json!({ "spec": { "containers": [{ "name": "jobmanager", "securityContext": { "privileged": true } }] } }))
                .as_deref(),
            Some("spec.containers[0].securityContext.privileged")
        );
        assert_eq!(
            asked(json!({ "spec": { "containers": [{ "name": "x", "securityContext": { "capabilities": { "add": ["NET_ADMIN"] } } }] } }))
                .as_deref(),
            Some("spec.containers[0].securityContext.capabilities.add")
        );
        assert_eq!(
            asked(json!({ "spec": { "volumes": [{ "name": "h", "hostPath": { "path": "/" } }] } })).as_deref(),
            Some("spec.volumes[0].hostPath")
        );
        // A non-root user of one's own is fine.
        assert_eq!(asked(json!({ "spec": { "securityContext": { "runAsUser": 1000 } } })), None);
    }

    #[test]
    fn enforcing_takes_back_whatever_a_merged_template_raised() {
        let mut spec: PodSpec = serde_json::from_value(json!({
            "hostNetwork": true,
            "securityContext": { "runAsUser": 0 },
            "volumes": [{ "name": "h", "hostPath": { "path": "/" } }, { "name": "tmp", "emptyDir": {} }],
            "containers": [{ "name": "jobmanager", "securityContext": {
                "privileged": true, "allowPrivilegeEscalation": true, "capabilities": { "add": ["SYS_ADMIN"] }, "runAsUser": 0
            } }]
        }))
        .unwrap();
        enforce(&mut spec, false);
        assert_eq!((spec.host_network, spec.automount_service_account_token), (None, Some(false)));
        let pod = spec.security_context.as_ref().unwrap();
        assert_eq!((pod.run_as_user, pod.run_as_non_root), (Some(IMAGE_USER), Some(true)));
        assert_eq!(spec.volumes.as_ref().unwrap().len(), 1, "no host path left");
        let c = spec.containers[0].security_context.as_ref().unwrap();
        assert_eq!((c.privileged, c.allow_privilege_escalation, c.run_as_user), (Some(false), Some(false), None));
        assert_eq!(c.capabilities, container_context().capabilities);
        assert_eq!(c.read_only_root_filesystem, Some(true));
    }
}
