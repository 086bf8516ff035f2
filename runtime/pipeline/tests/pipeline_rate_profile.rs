//! A datagen source under a rate profile, through a whole pipeline: the
//! emitted count follows the profile. Only bounds that a loaded machine
//! cannot break are asserted against the clock (a job can be slower than its
//! profile, never faster); the pacing itself is asserted on the source's
//! allowance as a pure function of an injected elapsed time.
#![cfg(feature = "engine")]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir::datagen::{DatagenSource, DatagenSplit, RateProfile};
use weir::prelude::StreamEnv;
use weir_pipeline::build::rate_profile;
use weir_pipeline::check::{Overrides, check};
use weir_pipeline::compile::compile;
use weir_pipeline::config::{load, parse};
use weir_pipeline::plan::SourceKind;

/// 1500 orders over 2 subtasks: 1000/s for half a second, then 2000/s: one second in all.
const STEPPED: &str = r#"
name: stepped
parallelism: 2
source:
  type: datagen
  workload: orders
  count: 1500
  rate: { steps: [{ at: 0s, rate: 1000 }, { at: 500ms, rate: 2000 }] }
steps:
  - external_call: { per_record: 100us }
sink: { type: blackhole }
"#;

fn profile_of(yaml: &str) -> RateProfile {
    let file = parse(Path::new("p.yaml"), yaml, &[]).unwrap();
    let plan = check(Path::new("p.yaml"), &file, &Overrides::default()).unwrap();
    let SourceKind::Datagen { rate: Some(rate), .. } = &plan.source.kind else { panic!("a paced datagen source") };
    rate_profile(rate)
}

#[test]
fn a_step_profile_paces_each_subtask_by_its_share() {
    let profile = profile_of(STEPPED);
    let split = DatagenSplit { subtask: 1, parallelism: 2, count: Some(1500), rate: Some(profile) };
    let source = DatagenSource::new(weir_workloads::order, split);
    let allowed = [0.0, 0.25, 0.5, 0.75, 1.0].map(|s| source.allowed_by(Duration::from_secs_f64(s)).unwrap());
    assert_eq!(allowed, [0, 125, 250, 500, 750], "half of 1000/s, then half of 2000/s");
}

#[test]
fn a_pipeline_with_a_step_profile_emits_no_faster_than_the_profile() {
    let profile = profile_of(STEPPED);
    let file = parse(Path::new("p.yaml"), STEPPED, &[]).unwrap();
    let env = StreamEnv::new("stepped");
    let compiled = compile(Path::new("p.yaml"), &file, &env, &Overrides::default()).unwrap();
    let started = Instant::now();
    let job = env.start().unwrap();
    let mut samples = 0;
    while !job.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
        let rows = compiled.stats.rows_out.load(Ordering::Relaxed);
        // Read before the clock: the sources started after `started`, so by now they may
        // have emitted at most what the profile has due (and one event each at once).
        let due = profile.events_by(started.elapsed().as_secs_f64());
        assert!(rows as f64 <= due + 2.0, "{rows} rows after {:?}: ahead of the profile's {due}", started.elapsed());
        samples += 1;
    }
    job.wait().unwrap();
    assert_eq!(compiled.stats.rows_out.load(Ordering::Relaxed), 1500, "every order, unchanged by external_call");
    // Each subtask's 750th order is due once 1498 and a bit are due over both.
    let least = Duration::from_secs_f64(profile.time_of(1498.0));
    assert!(
        started.elapsed() >= least,
        "1500 orders at the profile's pace take {least:?}, not {:?}",
        started.elapsed()
    );
    assert!(samples > 0, "the job (a second long at least) was sampled while it ran");
}

#[test]
fn the_autoscaling_example_checks() {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "..", "examples", "autoscaling-load.yaml"].iter().collect();
    let file = load(&path, &[]).unwrap();
    let plan = check(&path, &file, &Overrides::default()).unwrap();
    let SourceKind::Datagen { rate: Some(rate), .. } = &plan.source.kind else { panic!("a paced datagen source") };
    assert_eq!(rate_profile(rate).events_by(120.0), 60_000.0, "500/s for the first two minutes");
}

/// The pipeline's check (which runs without the engine, in the operator) and the
/// engine's `RateProfile::validate` state the same rules: they must agree.
#[test]
fn the_pipeline_check_and_the_engine_agree_on_valid_rates() {
    for rate in [
        "1000",
        "0",
        "-1",
        "{ steps: [{ at: 0s, rate: 5 }, { at: 1m, rate: 0 }] }",
        "{ steps: [] }",
        "{ steps: [{ at: 1s, rate: 5 }] }",
        "{ steps: [{ at: 0s, rate: 5 }, { at: 0s, rate: 6 }] }",
        "{ steps: [{ at: 0s, rate: 5 }, { at: 1s, rate: -6 }] }",
        "{ steps: [{ at: 0s, rate: 0 }] }",
        "{ sine: { mean: 10, amplitude: 10, period: 1s } }",
        "{ sine: { mean: 10, amplitude: 11, period: 1s } }",
        "{ sine: { mean: 10, amplitude: -1, period: 1s } }",
        "{ sine: { mean: 0, amplitude: 0, period: 1s } }",
        "{ sine: { mean: 10, amplitude: 1, period: 0s } }",
    ] {
        let yaml =
            format!("name: j\nsource: {{ type: datagen, workload: bids, rate: {rate} }}\nsink: {{ type: stdout }}");
        let file = parse(Path::new("p.yaml"), &yaml, &[]).unwrap();
        let checked = check(Path::new("p.yaml"), &file, &Overrides::default()).is_ok();
        let validated = rate_profile(file.source.rate.as_ref().unwrap()).validate().is_ok();
        assert_eq!(checked, validated, "{rate}");
    }
}
