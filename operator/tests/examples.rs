//! The StreamJob manifests in examples/k8s are valid: they parse as StreamJobs
//! and pass the operator's own validation (the pipeline compiles).

use weir_operator::crd::StreamJob;

#[test]
fn the_example_streamjobs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/k8s");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let job: StreamJob =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: not a StreamJob: {e}", path.display()));
        if let Err(e) = weir_operator::validate::validate(&job.spec) {
            panic!("{}: {e:?}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 1, "no examples in {}", dir.display());
}
