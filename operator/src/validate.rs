//! What the schema cannot say about a StreamJob: checked before anything is
//! deployed, and reported as a condition naming the field and the reason
//! (nothing running is touched for an invalid spec).

use std::path::Path;

use weir_pipeline::check::{Overrides, check};
use weir_pipeline::config::parse;

use crate::autoscaler::AutoscalerConfig;
use crate::crd::{StateBackendKind, StreamJobSpec};

/// A field of the spec and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), reason: reason.into() }
}

/// Checks `spec`; the first problem found.
pub fn validate(spec: &StreamJobSpec) -> Result<(), FieldError> {
    if spec.parallelism > spec.max_parallelism {
        return Err(field_error(
            "spec.parallelism",
            format!("{} exceeds maxParallelism {}", spec.parallelism, spec.max_parallelism),
        ));
    }
    match weir_api::parse_duration(&spec.checkpointing.interval) {
        Ok(d) if d.is_zero() => return Err(field_error("spec.checkpointing.interval", "must be longer than zero")),
        Ok(_) => {}
        Err(e) => return Err(field_error("spec.checkpointing.interval", e)),
    }
    if let Some(autoscaler) = &spec.autoscaler {
        // Its own check names the field; the reason is the rest of its message.
        let max_parallelism = u32::try_from(spec.max_parallelism).unwrap_or(1);
        AutoscalerConfig::from_spec(autoscaler, max_parallelism).map_err(|e| {
            let (field, message) = (e.field(), e.to_string());
            let reason = message.strip_prefix(&format!("{field}: ")).unwrap_or(&message).to_string();
            field_error(field, reason)
        })?;
    }
    validate_state_backend(spec)?;
    if let Some((field, reason)) = spec.pod_template.as_ref().and_then(crate::hardening::privileges_asked) {
        return Err(field_error(format!("spec.podTemplate.{field}"), reason));
    }
    match (&spec.pipeline, &spec.args) {
        (Some(_), Some(_)) => Err(field_error("spec.args", "give either a pipeline or args, not both")),
        (None, None) => Err(field_error("spec.pipeline", "give a pipeline (or args for a job binary)")),
        (None, Some(_)) => Ok(()),
        (Some(pipeline), None) => validate_pipeline(spec, pipeline),
    }
}

/// `spec.stateBackend`: its sizes, and a disk budget that fits in the
/// TaskManager's memory limit (when it has one the check can read).
fn validate_state_backend(spec: &StreamJobSpec) -> Result<(), FieldError> {
    use weir_core::state::backend::MIN_MEMORY;
    let Some(state) = &spec.state_backend else { return Ok(()) };
    if spec.args.is_some() {
        return Err(field_error(
            "spec.stateBackend",
            "is for pipelines: a job binary chooses its state backend in its code (StreamEnv::set_state_backend)",
        ));
    }
    let size = |field: &str, text: &str| {
        weir_api::parse_size(text).map_err(|e| field_error(format!("spec.stateBackend.{field}"), e))
    };
    if state.kind == StateBackendKind::Heap {
        for (field, given) in [("memory", &state.memory), ("volumeSizeLimit", &state.volume_size_limit)] {
            if given.is_some() {
                return Err(field_error(format!("spec.stateBackend.{field}"), "is for `type: disk`"));
            }
        }
        return Ok(());
    }
    if let Some(limit) = &state.volume_size_limit {
        size("volumeSizeLimit", limit)?;
    }
    let Some(given) = &state.memory else { return Ok(()) };
    let memory = size("memory", given)?;
    if memory < MIN_MEMORY {
        return Err(field_error(
            "spec.stateBackend.memory",
            format!("{given} is too small to work with: the disk backend needs at least 16MiB"),
        ));
    }
    let limits = spec.task_manager.resources.as_ref().and_then(|r| r.limits.as_ref());
    // A limit written in a form sizes do not take (`1.5Gi`) is left to the kubelet.
    let limit = limits.and_then(|l| l.get("memory")).and_then(|q| Some((q, weir_api::parse_size(&q.0).ok()?)));
    if let Some((quantity, _)) = limit.filter(|(_, limit)| memory >= *limit) {
        return Err(field_error(
            "spec.stateBackend.memory",
            format!(
                "{given} does not fit in the TaskManager's memory limit {} (spec.taskManager.resources.limits.memory)",
                quantity.0
            ),
        ));
    }
    Ok(())
}

/// Checks the pipeline as `weir run` would before building it, at the spec's
/// parallelism: a pure check that touches no path and no broker of the spec
/// (they are the cluster's, not the operator's).
fn validate_pipeline(spec: &StreamJobSpec, pipeline: &serde_json::Value) -> Result<(), FieldError> {
    let text = serde_yaml_ng::to_string(pipeline).map_err(|e| field_error("spec.pipeline", e.to_string()))?;
    let origin = Path::new("spec.pipeline");
    let in_pipeline = |e: weir_pipeline::PipelineError| match e.key.as_str() {
        "" => field_error("spec.pipeline", e.message),
        key => field_error(format!("spec.pipeline.{key}"), e.message),
    };
    // With spec.stateBackend's settings over the file's, as the processes read it.
    let file = parse(origin, &text, &crate::resources::state_settings(spec)).map_err(in_pipeline)?;
    // A StreamJob always checkpoints (spec.checkpointing is required).
    let overrides = Overrides { parallelism: Some(spec.parallelism as usize), checkpointing: Some(true) };
    check(origin, &file, &overrides).map_err(in_pipeline)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::test_spec;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    #[test]
    fn a_valid_spec_passes() {
        assert_eq!(validate(&test_spec()), Ok(()));
    }

    #[test]
    fn a_pod_template_may_not_raise_privileges() {
        let mut spec = test_spec();
        spec.pod_template = Some(serde_json::json!({ "spec": { "securityContext": { "runAsUser": 0 } } }));
        let e = validate(&spec).unwrap_err();
        assert_eq!(e.field, "spec.podTemplate.spec.securityContext.runAsUser");
        assert!(e.reason.contains("root"), "{e}");
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let mut s = test_spec();
        s.parallelism = 200;
        assert_eq!(validate(&s).unwrap_err().to_string(), "spec.parallelism: 200 exceeds maxParallelism 128");

        let mut s = test_spec();
        s.args = Some(vec!["my-job".into()]);
        assert_eq!(validate(&s).unwrap_err().field, "spec.args");
        (s.pipeline, s.job_manager.replicas) = (None, 2);
        assert_eq!(validate(&s), Ok(()), "a job binary elects its JobManager leader with a Lease too");

        let mut s = test_spec();
        s.checkpointing.interval = "1h".into();
        assert_eq!(validate(&s), Ok(()));
        s.checkpointing.interval = "hourly".into();
        let e = validate(&s).unwrap_err();
        assert_eq!(e.field, "spec.checkpointing.interval");
        assert!(e.reason.contains("invalid duration `hourly`"), "{e}");

        let mut s = test_spec();
        s.pipeline.as_mut().unwrap()["source"]["cuont"] = 5.into();
        let e = validate(&s).unwrap_err();
        assert_eq!(e.field, "spec.pipeline.source.cuont");
        assert!(e.reason.contains("unknown field `cuont`"), "{e}");

        let mut s = test_spec();
        s.pipeline.as_mut().unwrap()["steps"] = serde_json::json!([{ "filter": "amount > 'x' +" }]);
        let e = validate(&s).unwrap_err();
        assert_eq!(e.field, "spec.pipeline.steps[0].filter", "{e}");
    }

    #[test]
    fn a_bad_autoscaler_is_refused_naming_its_field() {
        let mut s = test_spec();
        s.autoscaler =
            Some(crate::crd::AutoscalerSpec { mode: crate::crd::AutoscalerMode::Active, ..Default::default() });
        assert_eq!(validate(&s), Ok(()));
        s.autoscaler.as_mut().unwrap().metrics_window = "a minute".into();
        let e = validate(&s).unwrap_err();
        assert_eq!(e.field, "spec.autoscaler.metricsWindow");
        assert!(e.reason.starts_with("invalid duration `a minute`"), "{e}");
        let a = s.autoscaler.as_mut().unwrap();
        (a.metrics_window, a.min_parallelism, a.max_parallelism) = ("60s".into(), 8, Some(4));
        assert_eq!(
            validate(&s).unwrap_err().to_string(),
            "spec.autoscaler: minParallelism 8 is above maxParallelism 4"
        );
    }

    #[test]
    fn a_state_backend_is_checked_naming_its_field() {
        use crate::crd::StateBackendSpec;
        let disk = |memory: &str| StateBackendSpec {
            kind: StateBackendKind::Disk,
            memory: Some(memory.into()),
            ..Default::default()
        };
        let mut s = test_spec();
        s.state_backend = Some(disk("64MiB"));
        assert_eq!(validate(&s), Ok(()));
        s.state_backend = Some(disk("8MiB"));
        assert_eq!(
            validate(&s).unwrap_err().to_string(),
            "spec.stateBackend.memory: 8MiB is too small to work with: the disk backend needs at least 16MiB"
        );
        s.state_backend = Some(disk("lots"));
        assert!(validate(&s).unwrap_err().to_string().starts_with("spec.stateBackend.memory: invalid size `lots`"));
        // The budget must fit in the TaskManager's memory limit.
        s.state_backend = Some(disk("1GiB"));
        let limits = BTreeMap::from([("memory".to_string(), Quantity("512Mi".into()))]);
        s.task_manager.resources = Some(ResourceRequirements { limits: Some(limits), ..Default::default() });
        assert_eq!(
            validate(&s).unwrap_err().to_string(),
            "spec.stateBackend.memory: 1GiB does not fit in the TaskManager's memory limit 512Mi \
             (spec.taskManager.resources.limits.memory)"
        );
        s.state_backend = Some(disk("256MiB"));
        assert_eq!(validate(&s), Ok(()));
        // Disk settings on the heap, and a job binary, are refused.
        s.state_backend = Some(StateBackendSpec { volume_size_limit: Some("1Gi".into()), ..Default::default() });
        assert_eq!(validate(&s).unwrap_err().field, "spec.stateBackend.volumeSizeLimit");
        s.state_backend = Some(StateBackendSpec::default());
        assert_eq!(validate(&s), Ok(()));
        (s.pipeline, s.args) = (None, Some(vec!["--min-amount".into(), "5".into()]));
        assert_eq!(validate(&s).unwrap_err().field, "spec.stateBackend");
        // Over the pipeline's own section: a heap backend where the file sets a disk folder.
        let mut s = test_spec();
        s.pipeline.as_mut().unwrap()["state"] = serde_json::json!({ "backend": "disk", "dir": "/data" });
        assert_eq!(validate(&s), Ok(()));
        s.state_backend = Some(StateBackendSpec::default());
        let e = validate(&s).unwrap_err();
        assert_eq!(e.field, "spec.pipeline.state.dir", "{e}");
        s.state_backend = Some(disk("64MiB"));
        assert_eq!(validate(&s), Ok(()), "the operator's folder replaces the file's");
    }

    #[test]
    fn a_file_source_validates_without_the_operator_reading_the_path() {
        // The path is on the cluster's volumes, not on the operator's machine.
        let mut s = test_spec();
        s.pipeline.as_mut().unwrap()["source"] = serde_json::json!({
            "type": "file", "path": "/data/in/does-not-exist-here",
            "fields": { "order_id": "string", "region": "string", "amount": "int", "time": "int" },
            "watermark": { "field": "time", "out_of_orderness": "5s" },
        });
        assert_eq!(validate(&s), Ok(()));
    }
}
