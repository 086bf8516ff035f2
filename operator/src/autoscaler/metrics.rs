//! What the autoscaler decides on: the job's graph of vertices, each with a
//! series of metric samples, and the rescales it made before.
//!
//! These are plain values, not HTTP: [`JobMetrics::from_job_details`] reads
//! one sample of every vertex from the JobManager's `GET /v1/jobs/{job}`
//! answer, and [`JobMetrics::append`] keeps a series of them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use weir_api::rest::JobDetails;

/// The job as the autoscaler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobMetrics {
    /// When the job's current run started: like a rescale, it starts a
    /// stabilization period and the scale-down interval.
    pub running_since: Timestamp,
    /// The job's max parallelism: its key groups.
    pub max_parallelism: u32,
    /// In topological order: every vertex after the vertices it reads from.
    pub vertices: Vec<VertexMetrics>,
}

/// A vertex: a task, running a chain of one or more operators, and its samples.
#[derive(Clone, Debug, PartialEq)]
pub struct VertexMetrics {
    pub name: String,
    /// The names of the operators chained in it (`spec.autoscaler` names
    /// operators); empty: just `name`.
    pub operators: Vec<String>,
    /// The uids of the operators chained in it, in the same order: what a
    /// rescale names them by (`JobDetails.vertices[i].id`).
    pub uids: Vec<String>,
    /// The vertices it reads from, by name; a source reads from none.
    pub inputs: Vec<String>,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// Oldest first.
    pub samples: Vec<Sample>,
}

impl VertexMetrics {
    /// The names configuration may know the vertex by.
    pub fn operator_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.operators.iter().map(String::as_str))
    }

    pub fn is_source(&self) -> bool {
        self.inputs.is_empty()
    }
}

/// A vertex's metrics at one time, with Flink's semantics: rates summed over
/// its subtasks, time rates those of its busiest subtask (so that the hot
/// subtask of a skewed vertex governs).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub at: Timestamp,
    /// The vertex's parallelism when it was taken: samples at another
    /// parallelism than the current one are not used.
    pub parallelism: u32,
    /// For a source: records read.
    pub records_in_per_s: f64,
    pub records_out_per_s: f64,
    pub busy_ms_per_s: f64,
    pub backpressured_ms_per_s: f64,
    pub idle_ms_per_s: f64,
    /// Records waiting at a source (Kafka lag, ...); `None` when unknown.
    pub pending_records: Option<f64>,
}

/// A rescale made before, as the autoscaler remembers it.
#[derive(Clone, Debug, PartialEq)]
pub struct PastRescale {
    pub at: Timestamp,
    /// By vertex name.
    pub vertices: BTreeMap<String, VertexRescale>,
}

/// One vertex of a [`PastRescale`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VertexRescale {
    pub from: u32,
    pub to: u32,
    /// Its load (target rate over capacity) when the rescale was decided.
    pub load_before: Option<f64>,
    /// Its load at `to`, from the first evaluation after the rescale that had metrics.
    pub load_after: Option<f64>,
}

impl PastRescale {
    /// The job's parallelism before and after (the largest of its vertices').
    pub fn job_parallelism(&self) -> (u32, u32) {
        let max = |f: fn(&VertexRescale) -> u32| self.vertices.values().map(f).max().unwrap_or(0);
        (max(|v| v.from), max(|v| v.to))
    }

    /// Whether it took some vertex up (the scale-up interval counts from it).
    pub fn is_scale_up(&self) -> bool {
        self.vertices.values().any(|v| v.to > v.from)
    }
}

impl JobMetrics {
    /// One sample of every vertex of `job` (the JobManager's `GET
    /// /v1/jobs/{job}`), taken `at`. A chain of operators is one vertex (its
    /// operators share their metrics), named after them as `a -> b`; its
    /// inputs are the chains its first operator reads from.
    ///
    /// The busy fraction is the busiest subtask's, and the true rate is
    /// computed from it, rather than read from the answer's
    /// `true_processing_rate` (a mean over the subtasks): the hot subtask of
    /// a skewed vertex is what limits it.
    pub fn from_job_details(job: &JobDetails, at: Timestamp) -> JobMetrics {
        let chain_of: BTreeMap<&str, u32> = job.vertices.iter().map(|v| (v.id.as_str(), v.chain)).collect();
        let mut vertices: Vec<VertexMetrics> = Vec::new();
        // The chain of each of `vertices`, in the order of the graph.
        let mut chains: Vec<u32> = Vec::new();
        for v in &job.vertices {
            match chains.iter().position(|c| *c == v.chain) {
                Some(i) => {
                    vertices[i].operators.push(v.name.clone());
                    vertices[i].uids.push(v.id.clone());
                }
                None => {
                    chains.push(v.chain);
                    vertices.push(VertexMetrics {
                        name: String::new(),
                        operators: vec![v.name.clone()],
                        uids: vec![v.id.clone()],
                        inputs: Vec::new(),
                        parallelism: v.parallelism,
                        max_parallelism: job.max_parallelism,
                        samples: vec![sample(v, at)],
                    });
                }
            }
        }
        for v in &mut vertices {
            v.name = v.operators.join(" -> ");
        }
        let index = |uid: &str| chain_of.get(uid).and_then(|c| chains.iter().position(|x| x == c));
        for e in job.edges.iter().filter(|e| e.ship_strategy != "chained") {
            if let (Some(from), Some(to)) = (index(&e.from), index(&e.to)) {
                let name = vertices[from].name.clone();
                if from != to && !vertices[to].inputs.contains(&name) {
                    vertices[to].inputs.push(name);
                }
            }
        }
        let running_since = Timestamp::from_millisecond(job.start_time).unwrap_or(Timestamp::UNIX_EPOCH);
        JobMetrics { running_since, max_parallelism: job.max_parallelism, vertices }
    }

    /// Adds `newer`'s samples to this series and forgets samples older than
    /// `keep` before the newest; a job whose graph or run changed starts over.
    pub fn append(&mut self, newer: JobMetrics, keep: Duration) {
        let same_graph = self.running_since == newer.running_since
            && self.vertices.len() == newer.vertices.len()
            && self.vertices.iter().zip(&newer.vertices).all(|(a, b)| a.name == b.name && a.inputs == b.inputs);
        if !same_graph {
            *self = newer;
            return;
        }
        for (mine, theirs) in self.vertices.iter_mut().zip(newer.vertices) {
            mine.parallelism = theirs.parallelism;
            mine.max_parallelism = theirs.max_parallelism;
            mine.samples.extend(theirs.samples);
            let newest = mine.samples.last().map(|s| s.at);
            if let Some(oldest) = newest.and_then(|t| t.checked_sub(keep).ok()) {
                mine.samples.retain(|s| s.at >= oldest);
            }
        }
        self.max_parallelism = newer.max_parallelism;
    }
}

/// The sample a vertex's metrics make.
fn sample(v: &weir_api::rest::Vertex, at: Timestamp) -> Sample {
    let m = &v.metrics;
    // The vertex's busy time is its busiest subtask's already; the subtasks'
    // own are looked at too, lest an older JobManager have averaged them.
    let busy = v.subtasks.iter().map(|s| s.metrics.busy_ms_per_s).fold(m.busy_ms_per_s, f64::max);
    Sample {
        at,
        parallelism: v.parallelism,
        records_in_per_s: m.records_in_per_s,
        records_out_per_s: m.records_out_per_s,
        busy_ms_per_s: busy,
        backpressured_ms_per_s: m.backpressured_ms_per_s,
        idle_ms_per_s: m.idle_ms_per_s,
        pending_records: m.pending_records.map(|p| p as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::rest::{Edge, JobState, Metrics, SubtaskMetrics, Vertex};

    fn vertex(id: &str, chain: u32, busy: f64, subtask_busy: &[f64]) -> Vertex {
        let metrics =
            Metrics { records_in_per_s: 100.0, busy_ms_per_s: busy, pending_records: Some(7), ..Default::default() };
        let subtasks = subtask_busy
            .iter()
            .enumerate()
            .map(|(i, b)| SubtaskMetrics {
                subtask: i as u32,
                metrics: Metrics { busy_ms_per_s: *b, ..Default::default() },
            })
            .collect();
        Vertex { id: id.into(), name: id.into(), parallelism: 2, chain, metrics, subtasks }
    }

    fn details() -> JobDetails {
        let edge = |from: &str, to: &str, s: &str| Edge { from: from.into(), to: to.into(), ship_strategy: s.into() };
        serde_json::from_value::<JobDetails>(serde_json::json!({
            "id": "j", "name": "j", "state": JobState::Running, "parallelism": 2, "max_parallelism": 64,
            "start_time": 1_800_000_000_000_i64,
        }))
        .map(|mut d| {
            d.vertices = vec![
                vertex("src", 0, 300.0, &[]),
                vertex("parse", 0, 300.0, &[]),
                vertex("window", 1, 400.0, &[400.0, 900.0]),
            ];
            d.edges = vec![edge("src", "parse", "chained"), edge("parse", "window", "hash")];
            d
        })
        .unwrap()
    }

    #[test]
    fn a_chain_is_one_vertex_and_edges_join_chains() {
        let at = Timestamp::from_second(1_800_000_100).unwrap();
        let job = JobMetrics::from_job_details(&details(), at);
        let names: Vec<(&str, &[String])> =
            job.vertices.iter().map(|v| (v.name.as_str(), v.inputs.as_slice())).collect();
        assert_eq!(names, [("src -> parse", &[][..]), ("window", &["src -> parse".to_string()][..])]);
        assert_eq!(job.vertices[0].operators, ["src", "parse"]);
        assert_eq!(job.vertices[0].uids, ["src", "parse"]);
        assert_eq!(job.vertices[1].uids, ["window"]);
        assert_eq!(job.vertices[1].samples[0].busy_ms_per_s, 900.0, "the busiest subtask governs");
        assert_eq!(job.vertices[0].samples[0].pending_records, Some(7.0));
        assert_eq!((job.max_parallelism, job.running_since.as_second()), (64, 1_800_000_000));
    }

    #[test]
    fn a_series_keeps_its_window_and_starts_over_on_a_new_run() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let mut series = JobMetrics::from_job_details(&details(), t(0));
        for s in 1..=10 {
            series.append(JobMetrics::from_job_details(&details(), t(s * 10)), Duration::from_secs(30));
        }
        let times: Vec<i64> = series.vertices[1].samples.iter().map(|s| s.at.as_second() - 1_800_000_000).collect();
        assert_eq!(times, [70, 80, 90, 100]);
        let mut restarted = details();
        restarted.start_time += 5_000;
        series.append(JobMetrics::from_job_details(&restarted, t(110)), Duration::from_secs(30));
        assert_eq!(series.vertices[1].samples.len(), 1);
    }
}
