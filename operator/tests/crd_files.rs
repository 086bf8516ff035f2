//! The committed CRD file is what the types generate: regenerate it with
//! `cargo run -p weir-operator -- crd > crds/streamjobs.weir.dev.yaml` when
//! this fails.

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
