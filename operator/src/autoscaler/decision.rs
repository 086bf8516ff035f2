//! What [`super::decide`] answers: per vertex a recommendation and the reason
//! for it, in sentences fit for the status and events, and the one action
//! for the job.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::{AutoscalerMode, AutoscalerRescale, AutoscalerStatus, AutoscalerVertexStatus};

/// The autoscaler's answer for one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub at: Timestamp,
    /// In the order of the job's graph.
    pub vertices: Vec<VertexDecision>,
    pub action: Action,
}

/// What to do with the job.
///
/// Each vertex (a chain of operators) goes to its own recommendation: the
/// job is rescaled when any vertex's recommendation differs from its
/// parallelism, and the others, excluded ones too, keep theirs. The rescale
/// states the whole assignment: `per_vertex` gives every operator of every
/// chain (by its uid, as the JobManager's rescale API and
/// `--vertex-parallelism` name it) its chain's recommendation, and
/// `job_parallelism`, the largest of them, is the job's default (what a
/// vertex the map does not name would run at) and what its slots must cover.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    None,
    Rescale { per_vertex: BTreeMap<String, u32>, job_parallelism: u32 },
}

/// One vertex's recommendation, with the numbers it was made from.
#[derive(Clone, Debug, PartialEq)]
pub struct VertexDecision {
    pub name: String,
    /// The uids of the operators chained in it (what a rescale names).
    pub uids: Vec<String>,
    pub current: u32,
    pub recommended: u32,
    /// Records per second the whole vertex processes when busy all the time.
    pub true_rate: Option<f64>,
    /// Records per second it must take in.
    pub target_rate: Option<f64>,
    /// The busy fraction of its busiest subtask over the window.
    pub utilization: Option<f64>,
    /// The target rate over its capacity at its current parallelism: the busy
    /// fraction it would have (above 1: more than it can do).
    pub load: Option<f64>,
    pub reason: Reason,
}

/// Why a vertex is recommended what it is.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    ScaleUp {
        to: u32,
        load: f64,
    },
    ScaleDown {
        to: u32,
        load: f64,
    },
    WithinBand {
        load: f64,
    },
    /// Nothing is decided so soon after a rescale (or a start).
    Stabilizing {
        until: Timestamp,
    },
    ScaleUpDelayed {
        to: u32,
        until: Timestamp,
    },
    ScaleDownDelayed {
        to: u32,
        until: Timestamp,
    },
    /// `maxRescalesPerHour` rescales were made in the last hour.
    BudgetSpent {
        count: u32,
    },
    Excluded,
    /// It needs `needed` subtasks; `max` is the most it may have.
    BoundedByMax {
        needed: u32,
        max: u32,
    },
    BoundedByMin {
        min: u32,
        load: f64,
    },
    /// A rescale within the last hour showed `parallelism` to be too small.
    TooSmallRecently {
        parallelism: u32,
    },
    /// Its load is below the band, but it is busier than the target (it is catching up).
    AboveTarget {
        busy: f64,
    },
    /// A source busy without a backlog reads what there is: more subtasks would not read more.
    SourceBound {
        busy: f64,
    },
    /// Its load is above the band, but the job shows pressure in only this fraction of the window.
    NotSustained {
        load: f64,
        pressured: f64,
    },
    /// Its load is below the band, but one subtask fewer would put it above the target.
    NoSmallerFits {
        load: f64,
    },
    /// Its load is below the band, but was not all through the scale-down interval.
    RecentlyHigher {
        load: f64,
        peak: f64,
    },
    /// Its load is below the band, but the metrics do not cover the scale-down interval.
    ShortHistory {
        load: f64,
    },
    NoMetrics(Missing),
}

/// Why a vertex has no usable metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Missing {
    NoVertices,
    EmptyWindow,
    WindowNotFull { until: Timestamp },
    NoSamples,
    TooFewSamples { count: usize, span: Duration },
    NoBusyTime,
    UnknownInput { name: String },
    Upstream { name: String },
}

fn percent(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Reason::*;
        match self {
            ScaleUp { to, load } => write!(f, "scale up to {to}: load {} of its capacity", percent(*load)),
            ScaleDown { to, load } => write!(f, "scale down to {to}: load {} of its capacity", percent(*load)),
            WithinBand { load } => write!(f, "within band: load {}", percent(*load)),
            Stabilizing { until } => write!(f, "stabilizing until {until}"),
            ScaleUpDelayed { to, until } => write!(f, "scale up to {to} delayed until {until} (scaleUpInterval)"),
            ScaleDownDelayed { to, until } => {
                write!(f, "scale down to {to} delayed until {until} (scaleDownInterval)")
            }
            BudgetSpent { count } => write!(f, "budget spent: {count} rescales in the last hour"),
            Excluded => f.write_str("excluded"),
            BoundedByMax { needed, max } => {
                write!(f, "needs {needed} subtasks, bounded by the maximum parallelism {max}")
            }
            BoundedByMin { min, load } => {
                write!(f, "load {} is below the band, at the minimum parallelism {min} already", percent(*load))
            }
            TooSmallRecently { parallelism } => {
                write!(f, "not scaled down: {parallelism} subtasks were too few within the last hour")
            }
            AboveTarget { busy } => write!(f, "not scaled down: busy {} is above the target", percent(*busy)),
            SourceBound { busy } => {
                write!(f, "source-bound: busy {} without a backlog, more subtasks would not read more", percent(*busy))
            }
            NotSustained { load, pressured } => write!(
                f,
                "load {} is above the band, but the job shows pressure in {} of the window only",
                percent(*load),
                percent(*pressured)
            ),
            NoSmallerFits { load } => {
                write!(f, "load {} is below the band, but fewer subtasks would be above the target", percent(*load))
            }
            ShortHistory { load } => write!(
                f,
                "load {} is below the band, but the metrics do not cover the scale-down interval yet",
                percent(*load)
            ),
            RecentlyHigher { load, peak } => write!(
                f,
                "load {} is below the band, but was {} within the scale-down interval",
                percent(*load),
                percent(*peak)
            ),
            NoMetrics(why) => write!(f, "no metrics yet: {why}"),
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::NoVertices => f.write_str("the job has no vertices"),
            Missing::EmptyWindow => f.write_str("the metrics window is 0s"),
            Missing::WindowNotFull { until } => write!(f, "collecting a window of metrics until {until}"),
            Missing::NoSamples => f.write_str("no samples at the current parallelism in the window"),
            Missing::TooFewSamples { count, span } => {
                write!(f, "{count} samples over {} of the window", weir_api::format_duration(*span))
            }
            Missing::NoBusyTime => f.write_str("no busy time, so no true rate"),
            Missing::UnknownInput { name } => write!(f, "its input `{name}` is not a vertex before it"),
            Missing::Upstream { name } => write!(f, "its input `{name}` has no target rate"),
        }
    }
}

impl Reason {
    /// How much a reason says about the job as a whole, most first: the
    /// decision's line names the first.
    fn rank(&self) -> u8 {
        use Reason::*;
        match self {
            Stabilizing { .. } => 0,
            BudgetSpent { .. } => 1,
            NoMetrics(_) => 2,
            ScaleUpDelayed { .. } => 3,
            NotSustained { .. } => 4,
            BoundedByMax { .. } => 5,
            ScaleDownDelayed { .. } => 6,
            TooSmallRecently { .. } => 7,
            AboveTarget { .. } => 8,
            SourceBound { .. } => 9,
            Excluded => 10,
            ScaleUp { .. } | ScaleDown { .. } => 11,
            BoundedByMin { .. } | NoSmallerFits { .. } | RecentlyHigher { .. } | ShortHistory { .. } => 12,
            WithinBand { .. } => 13,
        }
    }

    /// The reason as a word that stays while the figures in it change
    /// (`scale-up`, `within-band`, ...): what the status's `reason`, events
    /// and the operator's metrics go by.
    pub fn code(&self) -> &'static str {
        use Reason::*;
        match self {
            ScaleUp { .. } => "scale-up",
            ScaleDown { .. } => "scale-down",
            WithinBand { .. } => "within-band",
            Stabilizing { .. } => "stabilizing",
            ScaleUpDelayed { .. } => "scale-up-delayed",
            ScaleDownDelayed { .. } => "scale-down-delayed",
            BudgetSpent { .. } => "budget-spent",
            Excluded => "excluded",
            BoundedByMax { .. } => "bounded-by-max",
            BoundedByMin { .. } => "bounded-by-min",
            TooSmallRecently { .. } => "too-small-recently",
            AboveTarget { .. } => "above-target",
            SourceBound { .. } => "source-bound",
            NotSustained { .. } => "not-sustained",
            NoSmallerFits { .. } => "no-smaller-fits",
            RecentlyHigher { .. } => "recently-higher",
            ShortHistory { .. } => "short-history",
            NoMetrics(_) => "no-metrics",
        }
    }

    /// Whether the reason is about the job, not the vertex (the line does not name the vertex).
    fn is_job_wide(&self) -> bool {
        matches!(
            self,
            Reason::Stabilizing { .. }
                | Reason::BudgetSpent { .. }
                | Reason::NoMetrics(Missing::NoVertices | Missing::EmptyWindow | Missing::WindowNotFull { .. })
        )
    }
}

impl Decision {
    /// The vertex whose reason says best why the job is not rescaled: one
    /// held back from a scale-up (or without metrics), else one that holds the
    /// job at its parallelism, else any.
    fn telling_vertex(&self) -> Option<&VertexDecision> {
        let current = self.current_parallelism();
        let wants_down =
            |v: &&VertexDecision| matches!(v.reason, Reason::ScaleDown { .. } | Reason::ScaleDownDelayed { .. });
        let held_back = Reason::BoundedByMax { needed: 0, max: 0 }.rank();
        let v = &self.vertices;
        most_telling(v.iter().filter(|v| v.reason.rank() <= held_back))
            .or_else(|| most_telling(v.iter().filter(|v| v.current == current && !wants_down(v))))
            .or_else(|| most_telling(v.iter()))
    }

    /// The decision for `vertices`, with the job's action: see [`Action`].
    pub fn new(at: Timestamp, vertices: Vec<VertexDecision>) -> Decision {
        let job_parallelism = vertices.iter().map(|v| v.recommended).max().unwrap_or(0);
        let changes = vertices.iter().any(|v| v.recommended != v.current && v.recommended > 0);
        let action = if changes {
            let uids = |v: &VertexDecision| v.uids.iter().map(|uid| (uid.clone(), v.recommended)).collect::<Vec<_>>();
            let per_vertex = vertices.iter().flat_map(uids).collect();
            Action::Rescale { per_vertex, job_parallelism }
        } else {
            Action::None
        };
        Decision { at, vertices, action }
    }

    /// Whether the rescale, if any, takes some vertex up (else it only takes vertices down).
    fn scales_up(&self) -> bool {
        self.vertices.iter().any(|v| v.recommended > v.current)
    }

    /// The reason of the decision's line as a word ([`Reason::code`]):
    /// `scale-up` for a rescale that takes some vertex up, `scale-down` for
    /// one that only takes vertices down, else the most telling vertex's reason.
    pub fn reason(&self) -> &'static str {
        match &self.action {
            Action::Rescale { .. } if self.scales_up() => "scale-up",
            Action::Rescale { .. } => "scale-down",
            Action::None => self.telling_vertex().map_or("no-metrics", |v| v.reason.code()),
        }
    }

    /// The job's parallelism it recommends: the largest of its vertices'.
    pub fn recommended_parallelism(&self) -> u32 {
        self.vertices.iter().map(|v| v.recommended).max().unwrap_or(0)
    }

    /// The job's parallelism now (the largest of its vertices').
    pub fn current_parallelism(&self) -> u32 {
        self.vertices.iter().map(|v| v.current).max().unwrap_or(0)
    }

    /// `status.autoscaler` for this decision, with the rescales to report.
    pub fn status(&self, mode: AutoscalerMode, recent_rescales: Vec<AutoscalerRescale>) -> AutoscalerStatus {
        let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        AutoscalerStatus {
            mode,
            // The caller's to keep: what the autoscaler chose is not this decision's.
            parallelism: None,
            spec_parallelism: None,
            last_evaluation: Some(self.at.to_string()),
            decision: Some(self.to_string()),
            reason: Some(self.reason().into()),
            vertex_parallelism: BTreeMap::new(),
            vertices: self
                .vertices
                .iter()
                .map(|v| AutoscalerVertexStatus {
                    name: v.name.clone(),
                    parallelism: int(v.current),
                    recommended: int(v.recommended),
                    true_rate: v.true_rate,
                    target_rate: v.target_rate,
                    utilization: v.utilization,
                    reason: v.reason.to_string(),
                })
                .collect(),
            recent_rescales,
        }
    }
}

impl Decision {
    /// `scale up to 8: map at load 140% of its capacity; sink 4 -> 2`: the
    /// vertex that drives the rescale (the one that goes up the most, else
    /// the one that goes down the most), then the others that change.
    fn fmt_rescale(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let up = self.scales_up();
        let change = |v: &&VertexDecision| v.recommended.abs_diff(v.current);
        let changing = || self.vertices.iter().filter(|v| v.recommended != v.current);
        let Some(driver) = changing().filter(|v| (v.recommended > v.current) == up).max_by_key(change) else {
            return Ok(());
        };
        let direction = if up { "up" } else { "down" };
        write!(f, "scale {direction} to {}", driver.recommended)?;
        match &driver.reason {
            Reason::ScaleUp { load, .. } | Reason::ScaleDown { load, .. } => {
                write!(f, ": {} at load {} of its capacity", driver.name, percent(*load))?
            }
            reason => write!(f, ": {}: {reason}", driver.name)?,
        }
        for v in changing().filter(|v| v.name != driver.name) {
            write!(f, "; {} {} -> {}", v.name, v.current, v.recommended)?;
        }
        Ok(())
    }
}

fn most_telling<'a>(vertices: impl Iterator<Item = &'a VertexDecision>) -> Option<&'a VertexDecision> {
    vertices.min_by_key(|v| v.reason.rank())
}

/// The decision's line: the action and the vertex that drives it (then the
/// other vertices it rescales), or the most telling reason why nothing is done.
impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Action::Rescale { .. } = &self.action {
            return self.fmt_rescale(f);
        }
        match self.telling_vertex() {
            None => write!(f, "{}", Reason::NoMetrics(Missing::NoVertices)),
            Some(v) if matches!(v.reason, Reason::WithinBand { .. }) => f.write_str("within band"),
            Some(v) if v.reason.is_job_wide() => write!(f, "{}", v.reason),
            Some(VertexDecision { name, reason: Reason::NoMetrics(why), .. }) => {
                write!(f, "no metrics yet: {name}: {why}")
            }
            Some(v) => write!(f, "{}: {}", v.name, v.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vertex(name: &str, current: u32, recommended: u32, reason: Reason) -> VertexDecision {
        VertexDecision {
            name: name.into(),
            uids: vec![format!("1-{name}")],
            current,
            recommended,
            true_rate: None,
            target_rate: None,
            utilization: None,
            load: None,
            reason,
        }
    }

    #[test]
    fn the_line_names_the_action_or_the_most_telling_reason() {
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        let line = |vs: Vec<VertexDecision>| Decision::new(t, vs).to_string();
        let within = || Reason::WithinBand { load: 0.7 };
        assert_eq!(line(vec![vertex("a", 4, 4, within()), vertex("b", 4, 4, within())]), "within band");
        assert_eq!(
            line(vec![vertex("a", 4, 4, within()), vertex("b", 4, 8, Reason::ScaleUp { to: 8, load: 1.4 })]),
            "scale up to 8: b at load 140% of its capacity"
        );
        assert_eq!(
            line(vec![vertex("a", 4, 4, within()), vertex("b", 4, 4, Reason::BudgetSpent { count: 6 })]),
            "budget spent: 6 rescales in the last hour"
        );
        assert_eq!(
            line(vec![vertex("a", 4, 4, Reason::NoMetrics(Missing::NoBusyTime)), vertex("b", 4, 4, within())]),
            "no metrics yet: a: no busy time, so no true rate"
        );
        assert_eq!(line(vec![vertex("a", 4, 4, Reason::Excluded), vertex("b", 4, 4, within())]), "a: excluded");
        assert_eq!(
            line(vec![vertex("a", 4, 4, Reason::Stabilizing { until: t })]),
            "stabilizing until 2027-01-15T08:00:00Z"
        );
        assert_eq!(line(vec![]), "no metrics yet: the job has no vertices");
    }

    #[test]
    fn the_reason_is_a_word_that_outlives_the_figures() {
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        let reason = |vs: Vec<VertexDecision>| Decision::new(t, vs).reason();
        let within = |load| Reason::WithinBand { load };
        assert_eq!(reason(vec![vertex("a", 4, 4, within(0.65))]), reason(vec![vertex("a", 4, 4, within(0.75))]));
        assert_eq!(reason(vec![vertex("a", 4, 4, within(0.7))]), "within-band");
        assert_eq!(reason(vec![vertex("a", 4, 8, Reason::ScaleUp { to: 8, load: 1.4 })]), "scale-up");
        assert_eq!(reason(vec![vertex("a", 4, 2, Reason::ScaleDown { to: 2, load: 0.2 })]), "scale-down");
        let spent = vec![vertex("a", 4, 4, within(0.7)), vertex("b", 4, 4, Reason::BudgetSpent { count: 6 })];
        assert_eq!(reason(spent), "budget-spent", "the line's reason");
        assert_eq!(reason(vec![]), "no-metrics");
    }

    #[test]
    fn each_vertex_goes_to_its_own_recommendation() {
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        let down = |to| Reason::ScaleDown { to, load: 0.2 };
        let d = Decision::new(t, vec![vertex("a", 8, 2, down(2)), vertex("b", 8, 4, down(4))]);
        assert_eq!(
            d.action,
            Action::Rescale { per_vertex: [("1-a".into(), 2), ("1-b".into(), 4)].into(), job_parallelism: 4 }
        );
        assert_eq!(d.to_string(), "scale down to 2: a at load 20% of its capacity; b 8 -> 4");
        // A vertex at its parallelism no longer holds the others there: it keeps its own.
        let d = Decision::new(t, vec![vertex("a", 8, 2, down(2)), vertex("b", 8, 8, Reason::Excluded)]);
        assert_eq!(
            d.action,
            Action::Rescale { per_vertex: [("1-a".into(), 2), ("1-b".into(), 8)].into(), job_parallelism: 8 }
        );
        assert_eq!(
            (d.reason(), d.to_string().as_str()),
            ("scale-down", "scale down to 2: a at load 20% of its capacity")
        );
        // One up and one down: a scale-up, driven by the vertex that goes up.
        let up = Reason::ScaleUp { to: 12, load: 1.5 };
        let d = Decision::new(t, vec![vertex("a", 8, 2, down(2)), vertex("b", 8, 12, up)]);
        assert_eq!(
            (d.reason(), d.to_string().as_str()),
            ("scale-up", "scale up to 12: b at load 150% of its capacity; a 8 -> 2")
        );
        let d = Decision::new(
            t,
            vec![vertex("a", 8, 8, Reason::Excluded), vertex("b", 8, 8, Reason::WithinBand { load: 0.7 })],
        );
        assert_eq!(d.action, Action::None);
        let status = d.status(AutoscalerMode::Recommend, vec![]);
        assert_eq!((status.vertices[0].recommended, status.vertices[0].reason.as_str()), (8, "excluded"));
        assert_eq!(status.decision.as_deref(), Some("a: excluded"));
    }
}
