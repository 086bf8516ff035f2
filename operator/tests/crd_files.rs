//! The committed CRD files (crds/ and the Helm chart's copy) are what the
//! types generate: regenerate them with
//! `cargo run -p weir-operator -- crd > crds/streamjobs.weir.dev.yaml` (and the
//! same into charts/weir-operator/crds/) when this fails.

#[test]
fn committed_crd_is_up_to_date() {
    let file = "crds/streamjobs.weir.dev.yaml";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == weir_operator::crd::crd_yaml(),
        "{file} is stale: run `cargo run -p weir-operator -- crd > {file}` and commit the result"
    );
}

#[test]
fn the_charts_crd_is_the_committed_one() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let chart =
        std::fs::read_to_string(root.join("charts/weir-operator/crds/streamjobs.weir.dev.yaml")).unwrap_or_default();
    assert!(
        chart == weir_operator::crd::crd_yaml(),
        "charts/weir-operator/crds/streamjobs.weir.dev.yaml is stale: run \
         `cargo run -p weir-operator -- crd > charts/weir-operator/crds/streamjobs.weir.dev.yaml` and commit the result"
    );
}
