//! Scenarios: a tiny model of a job runs in a loop, the autoscaler decides on
//! the series of samples it produces, and its rescales are applied.
//!
//! The model: a single source reads what arrives (its lag grows when it reads
//! less); a vertex whose subtasks each process `capacity` records per second
//! processes `min(input, p × capacity / skew)` (the hot subtask of a skewed
//! vertex takes `skew` shares of an even split); its hot subtask's busy
//! fraction is what it processes over that; the vertices upstream of the
//! bottleneck are backpressured the rest of the time.

use super::*;
use crate::crd::AutoscalerSpec;

const T0: i64 = 1_800_000_000;
/// Seconds between two samples, and between two decisions.
const SAMPLE_EVERY: f64 = 5.0;
const DECIDE_EVERY: f64 = 15.0;

fn t(seconds: f64) -> Timestamp {
    Timestamp::from_millisecond(T0 * 1000 + (seconds * 1000.0) as i64).unwrap()
}

fn seconds(at: Timestamp) -> f64 {
    (at.as_millisecond() - T0 * 1000) as f64 / 1000.0
}

/// xorshift64: reproducible noise without an RNG crate.
struct XorShift(u64);

impl XorShift {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

#[derive(Clone)]
struct ModelVertex {
    name: &'static str,
    /// Indexes of the vertices it reads from; the first vertex is the source.
    inputs: Vec<usize>,
    /// Records per second one subtask processes, busy all the time.
    capacity: f64,
    /// Records out per record in.
    selectivity: f64,
    /// The hot subtask's input in shares of an even split (1: no skew).
    skew: f64,
}

fn vertex(name: &'static str, inputs: &[usize], capacity: f64, selectivity: f64) -> ModelVertex {
    ModelVertex { name, inputs: inputs.to_vec(), capacity, selectivity, skew: 1.0 }
}

/// source (5000/s per subtask) -> map (300/s per subtask) -> sink (1000/s per subtask, a tenth of the map's output).
fn pipeline() -> Vec<ModelVertex> {
    vec![vertex("source", &[], 5000.0, 1.0), vertex("map", &[0], 300.0, 1.0), vertex("sink", &[1], 1000.0, 0.1)]
}

/// What the model did in one step, without noise.
#[derive(Clone, Debug, Default)]
struct Flow {
    /// Per vertex: busy fraction of the hot subtask, backpressured fraction.
    busy: Vec<f64>,
    backpressured: Vec<f64>,
}

struct Model {
    vertices: Vec<ModelVertex>,
    /// Each vertex's parallelism, as the autoscaler's rescales set it.
    parallelism: Vec<u32>,
    /// Records per second arriving at a time; `None`: the source makes its
    /// records itself, as fast as it can, and reports no lag.
    demand: Box<dyn Fn(f64) -> Option<f64>>,
    lag: f64,
    noise: Option<(XorShift, f64)>,
    /// Seconds a rescale stops the job.
    restart: f64,
    down_until: f64,
    now: f64,
    series: JobMetrics,
    history: Vec<PastRescale>,
    last: Option<Decision>,
    flow: Flow,
    max_lag: f64,
}

impl Model {
    /// The model of `vertices`, each at its own `parallelism`.
    fn new(vertices: Vec<ModelVertex>, parallelism: &[u32], demand: impl Fn(f64) -> Option<f64> + 'static) -> Model {
        Model::with_max(vertices, parallelism, 128, demand)
    }

    fn with_max(
        vertices: Vec<ModelVertex>,
        parallelism: &[u32],
        max_parallelism: u32,
        demand: impl Fn(f64) -> Option<f64> + 'static,
    ) -> Model {
        assert_eq!(vertices.len(), parallelism.len(), "a parallelism per vertex");
        let series = JobMetrics {
            running_since: t(0.0),
            max_parallelism,
            vertices: vertices
                .iter()
                .zip(parallelism)
                .map(|(v, p)| VertexMetrics {
                    name: v.name.into(),
                    operators: vec![],
                    uids: vec![format!("uid-{}", v.name)],
                    inputs: v.inputs.iter().map(|i| vertices[*i].name.to_string()).collect(),
                    parallelism: *p,
                    max_parallelism,
                    samples: vec![],
                })
                .collect(),
        };
        Model {
            vertices,
            parallelism: parallelism.to_vec(),
            demand: Box::new(demand),
            lag: 0.0,
            noise: None,
            restart: 10.0,
            down_until: 0.0,
            now: 0.0,
            series,
            history: vec![],
            last: None,
            flow: Flow::default(),
            max_lag: 0.0,
        }
    }

    fn noisy(mut self, seed: u64, amplitude: f64) -> Model {
        self.noise = Some((XorShift(seed), amplitude));
        self
    }

    /// Input per record the source reads, per vertex.
    fn gains(&self) -> Vec<f64> {
        let mut gains: Vec<f64> = Vec::new();
        for v in &self.vertices {
            let gain = if v.inputs.is_empty() {
                1.0
            } else {
                v.inputs.iter().map(|i| gains[*i] * self.vertices[*i].selectivity).sum()
            };
            gains.push(gain);
        }
        gains
    }

    fn is_upstream(&self, of: usize, v: usize) -> bool {
        self.vertices[of].inputs.iter().any(|i| *i == v || self.is_upstream(*i, v))
    }

    /// One step of `SAMPLE_EVERY` seconds: the flow, the lag and a sample of every vertex.
    fn step(&mut self) {
        let dt = SAMPLE_EVERY;
        let demand = (self.demand)(self.now);
        if self.now < self.down_until {
            self.lag += demand.unwrap_or(0.0) * dt;
            return;
        }
        let gains = self.gains();
        let capacity: Vec<f64> = (self.vertices.iter().zip(&self.parallelism))
            .map(|(v, p)| f64::from(*p) * v.capacity / v.skew.min(f64::from(*p)))
            .collect();
        let limits: Vec<f64> = capacity.iter().zip(&gains).map(|(c, g)| c / g).collect();
        let (bottleneck, limit) =
            limits.iter().copied().enumerate().min_by(|a, b| a.1.total_cmp(&b.1)).expect("a vertex");
        let available = demand.map_or(f64::INFINITY, |d| d + self.lag / dt);
        let read = available.min(limit);
        if let Some(d) = demand {
            self.lag = (self.lag + (d - read) * dt).max(0.0);
        }
        self.max_lag = self.max_lag.max(self.lag);
        let limited = limit < available;
        let mut flow = Flow::default();
        for (i, v) in self.vertices.iter().enumerate() {
            let input = read * gains[i];
            let busy = (input / capacity[i]).min(1.0);
            let backpressured = if limited && self.is_upstream(bottleneck, i) { 1.0 - busy } else { 0.0 };
            flow.busy.push(busy);
            flow.backpressured.push(backpressured);
            let pending = (v.inputs.is_empty() && demand.is_some()).then_some(self.lag);
            let mut noise = || self.noise.as_mut().map_or(1.0, |(rng, a)| 1.0 + *a * rng.next());
            let sample = Sample {
                at: t(self.now),
                parallelism: self.parallelism[i],
                records_in_per_s: input * noise(),
                records_out_per_s: input * v.selectivity * noise(),
                busy_ms_per_s: (busy * 1000.0 * noise()).min(1000.0),
                backpressured_ms_per_s: backpressured * 1000.0 * noise(),
                idle_ms_per_s: (1.0 - busy - backpressured).max(0.0) * 1000.0,
                pending_records: pending.map(|l| l * noise()),
            };
            let samples = &mut self.series.vertices[i].samples;
            samples.push(sample);
            samples.retain(|s| seconds(s.at) > self.now - 600.0);
        }
        self.flow = flow;
    }

    /// Runs until `until` seconds, deciding every `DECIDE_EVERY` and applying rescales.
    fn run(&mut self, config: &AutoscalerConfig, until: f64) {
        while self.now < until {
            self.step();
            let step = (self.now / SAMPLE_EVERY).round() as u64;
            if step.is_multiple_of((DECIDE_EVERY / SAMPLE_EVERY) as u64) {
                self.decide(config);
            }
            self.now += SAMPLE_EVERY;
        }
    }

    fn decide(&mut self, config: &AutoscalerConfig) {
        let d = decide(config, &self.series, &self.history, t(self.now));
        if let Some(last) = self.history.last_mut() {
            last.record_outcome(&d);
        }
        assert_finite(&d);
        if let Some(record) = d.rescale_record() {
            // Each vertex to its own recommendation.
            for (i, v) in d.vertices.iter().enumerate() {
                self.parallelism[i] = v.recommended;
                self.series.vertices[i].parallelism = v.recommended;
            }
            self.down_until = self.now + self.restart;
            self.history.push(record);
        }
        self.last = Some(d);
    }

    /// The job's parallelism (its largest vertex's) after each rescale, with the time of each.
    fn rescales(&self) -> Vec<(f64, u32)> {
        self.history.iter().map(|r| (seconds(r.at), r.job_parallelism().1)).collect()
    }

    fn reason(&self, vertex: &str) -> &Reason {
        let d = self.last.as_ref().expect("a decision");
        &d.vertices.iter().find(|v| v.name == vertex).expect("the vertex").reason
    }
}

fn assert_finite(d: &Decision) {
    for v in &d.vertices {
        for x in [v.true_rate, v.target_rate, v.utilization, v.load].into_iter().flatten() {
            assert!(x.is_finite() && x >= 0.0, "{}: {x} in {d:?}", v.name);
        }
    }
}

fn config(f: impl FnOnce(&mut AutoscalerSpec)) -> AutoscalerConfig {
    let mut spec = AutoscalerSpec { mode: crate::crd::AutoscalerMode::Active, ..Default::default() };
    f(&mut spec);
    AutoscalerConfig::from_spec(&spec, 128).unwrap()
}

fn in_band(busy: f64) -> bool {
    (0.6..=0.8).contains(&busy)
}

#[test]
fn a_step_up_converges_within_two_rescales() {
    // 780/s: the map is 65% busy at 4 subtasks; three times that from 5 minutes on.
    let mut m = Model::new(pipeline(), &[1, 4, 1], |s| Some(if s < 300.0 { 780.0 } else { 2340.0 }));
    let c = config(|_| {});
    m.run(&c, 300.0);
    assert!(m.history.is_empty() && in_band(m.flow.busy[1]), "steady before the step");
    m.run(&c, 3600.0);
    let rescales = m.rescales();
    assert!((1..=2).contains(&rescales.len()), "{rescales:?}");
    assert!(
        rescales[0].0 <= 300.0 + 60.0 + 2.0 * DECIDE_EVERY,
        "scaled up as soon as the window shows it: {rescales:?}"
    );
    assert!(in_band(m.flow.busy[1]), "map busy {} at {:?}", m.flow.busy[1], m.parallelism);
    assert!(m.flow.backpressured.iter().all(|b| *b == 0.0) && m.lag < 1.0, "{:?} lag {}", m.flow, m.lag);
    // Each vertex sized on its own: the source reads 2340/s at 1 subtask of 5000/s, the sink needs 4 of 1000/s.
    assert_eq!((m.parallelism[0], m.parallelism[2]), (1, 4), "{:?}", m.parallelism);
}

#[test]
fn a_step_down_scales_down_after_the_interval_and_not_below_need() {
    // 2340/s at 12 subtasks (65%), a third of it from 5 minutes on.
    let mut m = Model::new(pipeline(), &[1, 12, 4], |s| Some(if s < 300.0 { 2340.0 } else { 780.0 }));
    let c = config(|_| {});
    m.run(&c, 290.0);
    assert!(in_band(m.flow.busy[1]) && m.history.is_empty());
    // The interval less a quarter of a window (the upper quartile of the oldest window).
    m.run(&c, 300.0 + 600.0 - 15.0);
    assert!(m.history.is_empty(), "the load was higher within the scale-down interval: {:?}", m.rescales());
    assert!(matches!(m.reason("map"), Reason::RecentlyHigher { .. }), "{}", m.reason("map"));
    m.run(&c, 3600.0);
    let rescales = m.rescales();
    assert_eq!(rescales.len(), 1, "straight to what is needed: {rescales:?}");
    assert!((885.0..=960.0).contains(&rescales[0].0), "{rescales:?}");
    assert_eq!(m.parallelism, [1, 4, 2], "780/s needs 4 subtasks of 300/s at 70% (and the sink 2 of 1000/s)");
    assert!(in_band(m.flow.busy[1]) && m.flow.backpressured.iter().all(|b| *b == 0.0), "{:?}", m.flow);
}

#[test]
fn a_diurnal_load_does_not_oscillate() {
    // Between 780/s and 2340/s over a day, with 10% noise.
    let day = 86_400.0;
    let demand = move |s: f64| Some(1560.0 - 780.0 * (2.0 * std::f64::consts::PI * s / day).cos());
    let mut m = Model::new(pipeline(), &[1, 4, 2], demand).noisy(7, 0.1);
    let c = config(|_| {});
    m.run(&c, day);
    let rescales = m.rescales();
    assert!(rescales.len() >= 4, "the load triples and comes back: {rescales:?}");
    for (i, (at, _)) in rescales.iter().enumerate() {
        let in_hour = rescales[i..].iter().take_while(|(b, _)| b - at < 3600.0).count();
        assert!(in_hour <= 6, "{in_hour} rescales in the hour from {at}: {rescales:?}");
    }
    let directions: Vec<bool> = m.history.iter().map(PastRescale::is_scale_up).collect();
    let turns = directions.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(turns <= 2, "up through the day's peak, down after it: {rescales:?}");
    assert!(m.max_lag < 60.0 * 2340.0, "the job kept up: lag at most {}", m.max_lag);
}

#[test]
fn a_skewed_vertex_is_sized_by_its_hot_subtask() {
    // The map's hot subtask takes twice its share: at 8 subtasks it is 70% busy at 840/s.
    let mut vertices = pipeline();
    vertices[1].skew = 2.0;
    let mut m = Model::new(vertices, &[1, 8, 1], |s| Some(if s < 300.0 { 840.0 } else { 1680.0 }));
    m.run(&config(|_| {}), 3600.0);
    // An even split would have looked 35% busy at 8 and asked for 8 subtasks at most.
    assert!(m.parallelism[1] >= 16, "{:?}", m.rescales());
    assert!(in_band(m.flow.busy[1]) && m.flow.backpressured.iter().all(|b| *b == 0.0), "{:?}", m.flow);
}

#[test]
fn a_source_bound_job_does_not_scale() {
    // The source makes 500/s per subtask as fast as it can; the map downstream is half idle.
    let vertices = vec![vertex("source", &[], 500.0, 1.0), vertex("map", &[0], 2000.0, 1.0)];
    let mut m = Model::new(vertices, &[4, 2], |_| None).noisy(3, 0.1);
    m.run(&config(|_| {}), 3600.0);
    assert_eq!(m.rescales(), []);
    assert!(matches!(m.reason("source"), Reason::SourceBound { .. }), "{}", m.reason("source"));
    assert!(m.flow.busy[0] == 1.0 && m.flow.busy[1] < 0.6, "{:?}", m.flow);
}

#[test]
fn noisy_metrics_under_a_steady_load_do_not_rescale() {
    let mut m = Model::new(pipeline(), &[1, 4, 2], |_| Some(840.0)).noisy(42, 0.2);
    m.run(&config(|_| {}), 2.0 * 3600.0);
    assert_eq!(m.rescales(), []);
    assert!(matches!(m.reason("map"), Reason::WithinBand { .. } | Reason::AboveTarget { .. }), "{}", m.reason("map"));
}

#[test]
fn a_spent_budget_holds_back_a_needed_scale_up() {
    let mut m = Model::new(pipeline(), &[1, 4, 1], |_| Some(2340.0));
    // Six rescales in the 55 minutes before the start, the last at 4 subtasks.
    m.history = (0..6)
        .map(|i| {
            let v = VertexRescale { from: 3 + i % 2, to: 4 - i % 2, load_before: None, load_after: None };
            PastRescale { at: t(-3300.0 + 600.0 * f64::from(i)), vertices: [("map".to_string(), v)].into() }
        })
        .collect();
    let c = config(|_| {});
    m.run(&c, 290.0);
    assert_eq!(m.rescales().len(), 6, "nothing added");
    assert_eq!(m.reason("map"), &Reason::BudgetSpent { count: 6 });
    assert_eq!(m.last.as_ref().unwrap().to_string(), "budget spent: 6 rescales in the last hour");
    m.run(&c, 400.0);
    assert_eq!(m.rescales().len(), 7, "the first of them left the hour at 300s");
    assert!(m.rescales()[6].1 > 4);
}

#[test]
fn an_excluded_vertex_keeps_its_parallelism() {
    let mut m = Model::new(pipeline(), &[1, 4, 2], |s| Some(if s < 300.0 { 780.0 } else { 2340.0 }));
    m.run(&config(|s| s.excluded_vertices = vec!["map".into()]), 1800.0);
    // The others are sized for what the map lets through, the map not at all.
    assert!(m.history.iter().all(|r| r.vertices["map"].to == 4), "{:?}", m.history);
    assert_eq!(m.parallelism[1], 4);
    assert_eq!(m.reason("map"), &Reason::Excluded);
    let map = &m.last.as_ref().unwrap().vertices[1];
    assert!(map.utilization == Some(1.0) && map.recommended == 4, "reported all the same: {map:?}");
}

#[test]
fn a_vertex_busier_than_the_target_is_never_scaled_down() {
    // A source catching up over the last ten minutes: it reads 2000/s while
    // 400/s arrive, its lag falling from 1.06M to 100k; busy 90%, its load at
    // the target rate (400/s + its lag over an hour) looks low.
    let job = |busy: f64| JobMetrics {
        running_since: t(-3600.0),
        max_parallelism: 128,
        vertices: vec![VertexMetrics {
            name: "source".into(),
            operators: vec![],
            uids: vec!["source".into()],
            inputs: vec![],
            parallelism: 8,
            max_parallelism: 128,
            samples: (0..=120)
                .map(|i| Sample {
                    at: t(-600.0 + 5.0 * f64::from(i)),
                    parallelism: 8,
                    records_in_per_s: 2000.0,
                    records_out_per_s: 2000.0,
                    busy_ms_per_s: busy * 1000.0,
                    backpressured_ms_per_s: 0.0,
                    idle_ms_per_s: (1.0 - busy) * 1000.0,
                    pending_records: Some(100_000.0 + 1600.0 * (600.0 - 5.0 * f64::from(i))),
                })
                .collect(),
        }],
    };
    let c = config(|s| s.catch_up_time = "1h".into());
    let d = decide(&c, &job(0.9), &[], t(0.0));
    assert_eq!(d.action, Action::None);
    assert!(matches!(d.vertices[0].reason, Reason::AboveTarget { busy } if (busy - 0.9).abs() < 1e-9), "{d:?}");
    // The same at 50% busy is scaled down.
    let d = decide(&c, &job(0.5), &[], t(0.0));
    assert!(matches!(d.vertices[0].reason, Reason::ScaleDown { to: 2, .. }), "{}", d.vertices[0].reason);
}

#[test]
fn never_above_the_max_parallelism() {
    let heavy = |_| Some(10.0 * 780.0);
    let mut m = Model::with_max(pipeline(), &[1, 4, 1], 16, heavy);
    m.run(&config(|_| {}), 1800.0);
    assert_eq!(m.rescales().iter().map(|r| r.1).max(), Some(16));
    assert!(matches!(m.reason("map"), Reason::BoundedByMax { max: 16, .. }), "{}", m.reason("map"));
    let mut m = Model::new(pipeline(), &[1, 4, 1], heavy);
    m.run(&config(|s| s.max_parallelism = Some(10)), 1800.0);
    assert_eq!(m.rescales().iter().map(|r| r.1).max(), Some(10));
}

#[test]
fn rescales_prefer_an_even_split_of_key_groups() {
    // 1350/s on 5 subtasks of 300/s: 90% busy, needs 7 at 70%: 8 divides the 128 key groups.
    let mut m = Model::new(pipeline(), &[1, 5, 1], |_| Some(1350.0));
    m.run(&config(|_| {}), 600.0);
    assert_eq!(m.rescales().first().map(|r| r.1), Some(8));
    // 1020/s on 4: 85% busy, needs 5; 8 would be three more, so 5 it is.
    let mut m = Model::new(pipeline(), &[1, 4, 1], |_| Some(1020.0));
    m.run(&config(|_| {}), 600.0);
    assert_eq!(m.rescales().first().map(|r| r.1), Some(5));
}

#[test]
fn missing_metrics_are_reported_never_guessed() {
    let c = config(|_| {});
    let mut m = Model::new(pipeline(), &[4, 4, 4], |_| Some(780.0));
    // No samples at all.
    let d = decide(&c, &m.series, &[], t(300.0));
    assert_eq!((&d.action, &d.vertices[0].reason), (&Action::None, &Reason::NoMetrics(Missing::NoSamples)));
    assert_eq!(d.to_string(), "no metrics yet: source: no samples at the current parallelism in the window");
    // Right after the start: stabilizing, then collecting a window.
    m.run(&c, 300.0);
    let d = decide(&c, &m.series, &[], t(30.0));
    assert_eq!(d.vertices[1].reason, Reason::Stabilizing { until: t(60.0) });
    let d = decide(&c, &m.series, &[], t(75.0));
    assert_eq!(d.vertices[1].reason, Reason::NoMetrics(Missing::WindowNotFull { until: t(90.0) }));
    // A zero-length window.
    let d = decide(&config(|s| s.metrics_window = "0s".into()), &m.series, &[], t(300.0));
    assert_eq!(d.vertices[1].reason, Reason::NoMetrics(Missing::EmptyWindow));
    // The map reports no busy time (its true rate is unknown): the sink downstream still has a target.
    for s in &mut m.series.vertices[1].samples {
        s.busy_ms_per_s = 0.0;
    }
    let d = decide(&c, &m.series, &[], t(295.0));
    assert_eq!(d.vertices[1].reason, Reason::NoMetrics(Missing::NoBusyTime));
    assert!(matches!(d.vertices[2].reason, Reason::ScaleDown { .. } | Reason::ScaleDownDelayed { .. }));
    assert_finite(&d);
    // Samples that are not numbers are left out, and too few are left.
    for s in &mut m.series.vertices[0].samples {
        s.records_in_per_s = f64::NAN;
    }
    let d = decide(&c, &m.series, &[], t(295.0));
    assert!(matches!(d.vertices[0].reason, Reason::NoMetrics(Missing::NoSamples)), "{}", d.vertices[0].reason);
    assert_eq!(d.vertices[2].reason, Reason::NoMetrics(Missing::Upstream { name: "map".into() }));
    assert_eq!(d.action, Action::None);
}

#[test]
fn a_series_started_late_waits_for_a_whole_window() {
    // An operator restarted at 600 s starts a new series of a job running since 0.
    let c = config(|_| {});
    let mut m = Model::new(pipeline(), &[1, 4, 1], |_| Some(780.0));
    m.run(&c, 600.0);
    for v in &mut m.series.vertices {
        v.samples.clear();
    }
    m.run(&c, 615.0);
    let d = decide(&c, &m.series, &[], t(615.0));
    assert_eq!(d.vertices[1].reason, Reason::NoMetrics(Missing::WindowNotFull { until: t(630.0) }));
    assert_eq!(d.to_string(), "no metrics yet: collecting a window of metrics until 2027-01-15T08:10:30Z");
    m.run(&c, 635.0);
    let d = decide(&c, &m.series, &[], t(635.0));
    assert!(matches!(d.vertices[1].reason, Reason::WithinBand { .. }), "{}", d.vertices[1].reason);
}

#[test]
fn a_graph_with_an_unknown_input_is_reported() {
    let mut m = Model::new(pipeline(), &[1, 4, 1], |_| Some(780.0));
    m.run(&config(|_| {}), 300.0);
    m.series.vertices[2].inputs = vec!["nowhere".into()];
    let d = decide(&config(|_| {}), &m.series, &[], t(295.0));
    assert_eq!(d.vertices[2].reason, Reason::NoMetrics(Missing::UnknownInput { name: "nowhere".into() }));
}

/// The map at 8 subtasks of 300/s under `rate` for 1700 s, half an hour
/// after it was scaled up from 4 at `load_before` (and measured `load_after` at 8).
fn run_after_scaling_up_from_4(rate: f64, load_before: f64, load_after: f64) -> Model {
    let mut m = Model::new(pipeline(), &[1, 8, 1], move |_| Some(rate));
    let v = VertexRescale { from: 4, to: 8, load_before: Some(load_before), load_after: Some(load_after) };
    m.history = vec![PastRescale { at: t(-1800.0), vertices: [("map".to_string(), v)].into() }];
    m.series.running_since = t(-1800.0);
    m.run(&config(|_| {}), 1700.0);
    m
}

#[test]
fn a_parallelism_found_too_small_is_not_returned_to_within_the_hour() {
    // Scaled up from 4 (load 85%) half an hour ago; the load has since fallen a little.
    let m = run_after_scaling_up_from_4(810.0, 0.85, 0.4);
    // 810/s needs 4 subtasks of 300/s at 70%; 4 was too small under a demand of 3.4 subtasks
    // and 2.7 is more than three quarters of it, so 5 (and no further within the hour).
    assert_eq!(m.rescales().last().map(|r| r.1), Some(5), "{:?}", m.rescales());
    assert!(m.rescales().iter().all(|r| r.1 >= 5), "{:?}", m.rescales());
}

#[test]
fn a_load_that_fell_back_returns_to_the_parallelism_it_left() {
    // Scaled up from 4 (load 120%, a demand of 4.8 subtasks) half an hour
    // ago; the load is now 600/s, a demand of 2: a change of load, not noise.
    let m = run_after_scaling_up_from_4(600.0, 1.2, 0.75);
    // 600/s needs 3 subtasks of 300/s at 70% (4, for key groups that divide evenly).
    assert_eq!(m.rescales().get(1).map(|r| r.1), Some(4), "{:?}", m.rescales());
}

#[test]
fn a_decision_fills_the_status() {
    let mut m = Model::new(pipeline(), &[4, 4, 4], |_| Some(840.0));
    m.run(&config(|_| {}), 300.0);
    let d = m.last.clone().unwrap();
    let status = d.status(crate::crd::AutoscalerMode::Recommend, vec![]);
    // The source and the sink would do with fewer subtasks: not before the scale-down interval.
    assert_eq!(status.decision.as_deref(), Some("within band"));
    assert!(status.vertices[0].reason.starts_with("scale down to 1 delayed until 2027-01-15T08:10:00Z"));
    let map = &status.vertices[1];
    assert_eq!((map.name.as_str(), map.parallelism, map.recommended), ("map", 4, 4));
    assert!(
        (map.true_rate.unwrap() - 1200.0).abs() < 1e-6 && (map.target_rate.unwrap() - 840.0).abs() < 1e-6,
        "{map:?}"
    );
    assert!(map.reason.starts_with("within band: load 70%"), "{}", map.reason);
}
