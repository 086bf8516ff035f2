//! The committed CRD files are what the types generate: regenerate them with
//! `cargo run -p weir-operator -- crd > crds/streamjobs.weir.dev.yaml` when
//! this fails.

#[test]
fn committed_crds_are_up_to_date() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let generated = weir_operator::crd::crd_yaml();
    for file in ["crds/streamjobs.weir.dev.yaml"] {
        let committed = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        assert!(
            committed == generated,
            "{file} is stale: run `cargo run -p weir-operator -- crd > {file}` and commit the result"
        );
    }
}
