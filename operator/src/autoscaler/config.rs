//! `spec.autoscaler` as the autoscaler uses it: durations parsed, bounds
//! resolved against the job's max parallelism, every value checked once, so
//! that [`super::decide`] never meets a bad one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::crd::{AutoscalerMode, AutoscalerSpec};

/// A `spec.autoscaler` that cannot be used, naming the field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("spec.autoscaler.{field}: {message}")]
    Duration { field: &'static str, message: String },
    #[error("spec.autoscaler.{field}: {value} is outside {range}")]
    OutOfRange { field: &'static str, value: f64, range: &'static str },
    #[error("spec.autoscaler.catchUpTime: must be longer than 0s (lag is caught up within it)")]
    ZeroCatchUpTime,
    #[error("spec.autoscaler{at}: minParallelism {min} is above maxParallelism {max}")]
    Bounds { at: String, min: u32, max: u32 },
}

impl ConfigError {
    /// The path of the field at fault (`spec.autoscaler.metricsWindow`).
    pub fn field(&self) -> String {
        match self {
            ConfigError::Duration { field, .. } | ConfigError::OutOfRange { field, .. } => {
                format!("spec.autoscaler.{field}")
            }
            ConfigError::ZeroCatchUpTime => "spec.autoscaler.catchUpTime".into(),
            ConfigError::Bounds { at, .. } => format!("spec.autoscaler{at}"),
        }
    }
}

/// The parallelism bounds of a vertex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

/// [`AutoscalerSpec`] with typed values; see the spec's fields for their meaning.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerConfig {
    pub mode: AutoscalerMode,
    pub target_utilization: f64,
    pub utilization_band: f64,
    pub metrics_window: Duration,
    pub stabilization: Duration,
    pub scale_up_interval: Duration,
    pub scale_down_interval: Duration,
    pub catch_up_time: Duration,
    /// Every vertex's bounds, unless overridden in `vertices`; `max` is at most
    /// the job's max parallelism.
    pub bounds: Bounds,
    /// Per operator name: bounds within `bounds`.
    pub vertices: BTreeMap<String, Bounds>,
    pub excluded_vertices: BTreeSet<String>,
    pub max_rescales_per_hour: u32,
}

impl AutoscalerConfig {
    /// Checks and converts `spec` for a job whose max parallelism (its key
    /// groups) is `job_max_parallelism`.
    pub fn from_spec(spec: &AutoscalerSpec, job_max_parallelism: u32) -> Result<AutoscalerConfig, ConfigError> {
        let duration = |field: &'static str, value: &str| {
            weir_api::parse_duration(value).map_err(|message| ConfigError::Duration { field, message })
        };
        let catch_up_time = duration("catchUpTime", &spec.catch_up_time)?;
        if catch_up_time.is_zero() {
            return Err(ConfigError::ZeroCatchUpTime);
        }
        let bounds =
            bounds("", Some(spec.min_parallelism), spec.max_parallelism, Bounds { min: 1, max: job_max_parallelism })?;
        let vertices = spec
            .vertices
            .iter()
            .map(|(name, v)| Ok((name.clone(), bounds_of(name, v, bounds)?)))
            .collect::<Result<_, ConfigError>>()?;
        Ok(AutoscalerConfig {
            mode: spec.mode,
            target_utilization: in_range("targetUtilization", spec.target_utilization, 0.1, 0.95, "0.1..=0.95")?,
            utilization_band: in_range("utilizationBand", spec.utilization_band, 0.0, 0.5, "0.0..=0.5")?,
            metrics_window: duration("metricsWindow", &spec.metrics_window)?,
            stabilization: duration("stabilization", &spec.stabilization)?,
            scale_up_interval: duration("scaleUpInterval", &spec.scale_up_interval)?,
            scale_down_interval: duration("scaleDownInterval", &spec.scale_down_interval)?,
            catch_up_time,
            bounds,
            vertices,
            excluded_vertices: spec.excluded_vertices.iter().cloned().collect(),
            max_rescales_per_hour: in_range(
                "maxRescalesPerHour",
                f64::from(spec.max_rescales_per_hour),
                1.0,
                60.0,
                "1..=60",
            )? as u32,
        })
    }

    /// The band of loads that keeps a vertex's parallelism: target ± band.
    pub fn band(&self) -> (f64, f64) {
        (self.target_utilization - self.utilization_band, self.target_utilization + self.utilization_band)
    }

    /// The bounds of a vertex that runs `operators`: the tightest of the
    /// overrides naming one of them, else the job-wide bounds.
    pub fn bounds_for<'a>(&self, operators: impl IntoIterator<Item = &'a str>) -> Bounds {
        operators
            .into_iter()
            .filter_map(|o| self.vertices.get(o))
            .fold(self.bounds, |b, o| Bounds { min: b.min.max(o.min).min(o.max.min(b.max)), max: b.max.min(o.max) })
    }

    /// Whether a vertex that runs `operators` is excluded.
    pub fn excludes<'a>(&self, mut operators: impl Iterator<Item = &'a str>) -> bool {
        operators.any(|o| self.excluded_vertices.contains(o))
    }
}

impl Default for AutoscalerConfig {
    /// The defaults of `spec.autoscaler` for a job of max parallelism 128.
    fn default() -> Self {
        AutoscalerConfig::from_spec(&AutoscalerSpec::default(), 128).expect("the defaults are valid")
    }
}

fn in_range(field: &'static str, value: f64, min: f64, max: f64, range: &'static str) -> Result<f64, ConfigError> {
    // `contains` is false for NaN, which a hand-made spec could carry past the API server.
    if (min..=max).contains(&value) { Ok(value) } else { Err(ConfigError::OutOfRange { field, value, range }) }
}

/// `min` and `max` (when given) within `outer`, or why not.
fn bounds(at: &str, min: Option<i32>, max: Option<i32>, outer: Bounds) -> Result<Bounds, ConfigError> {
    let clamp = |v: i32| u32::try_from(v).unwrap_or(1).clamp(outer.min, outer.max);
    let b = Bounds { min: min.map_or(outer.min, clamp), max: max.map_or(outer.max, clamp) };
    if b.min > b.max {
        return Err(ConfigError::Bounds { at: at.to_string(), min: b.min, max: b.max });
    }
    Ok(b)
}

fn bounds_of(name: &str, v: &crate::crd::VertexBoundsSpec, outer: Bounds) -> Result<Bounds, ConfigError> {
    bounds(&format!(".vertices.{name}"), v.min_parallelism, v.max_parallelism, outer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = AutoscalerConfig::default();
        assert_eq!(c.mode, AutoscalerMode::Disabled);
        assert_eq!((c.target_utilization, c.utilization_band), (0.7, 0.1));
        let s = Duration::from_secs;
        assert_eq!(
            (c.metrics_window, c.stabilization, c.scale_up_interval, c.scale_down_interval, c.catch_up_time),
            (s(30), s(60), s(60), s(600), s(300))
        );
        assert_eq!((c.bounds, c.max_rescales_per_hour), (Bounds { min: 1, max: 128 }, 6));
    }

    #[test]
    fn a_user_spec_reads_with_its_defaults() {
        let spec: AutoscalerSpec = serde_yaml_ng::from_str(
            "{ mode: active, maxParallelism: 500, vertices: { window: { maxParallelism: 8 } }, excludedVertices: [sink] }",
        )
        .unwrap();
        let c = AutoscalerConfig::from_spec(&spec, 32).unwrap();
        assert_eq!(c.mode, AutoscalerMode::Active);
        assert_eq!(c.bounds.max, 32, "never above the job's max parallelism");
        assert_eq!(c.bounds_for(["source", "window"]), Bounds { min: 1, max: 8 });
        assert_eq!(c.bounds_for(["source"]), Bounds { min: 1, max: 32 });
        assert!(c.excludes(["map", "sink"].into_iter()) && !c.excludes(["map"].into_iter()));
    }

    #[test]
    fn a_bad_value_is_refused_naming_its_field() {
        let with = |f: fn(&mut AutoscalerSpec)| {
            let mut spec = AutoscalerSpec::default();
            f(&mut spec);
            AutoscalerConfig::from_spec(&spec, 128).unwrap_err().to_string()
        };
        assert_eq!(
            with(|s| s.metrics_window = "1x".into()),
            "spec.autoscaler.metricsWindow: invalid duration `1x`: expected a number with a unit, such as 500ms, 10s, 1m or 1h"
        );
        assert!(with(|s| s.scale_down_interval = "soon".into()).starts_with("spec.autoscaler.scaleDownInterval: "));
        // Each message starts with the field it names.
        let mut bad = AutoscalerSpec::default();
        bad.vertices
            .insert("map".into(), crate::crd::VertexBoundsSpec { min_parallelism: Some(9), max_parallelism: Some(3) });
        for spec in [AutoscalerSpec { catch_up_time: "0s".into(), ..Default::default() }, bad] {
            let e = AutoscalerConfig::from_spec(&spec, 128).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{}: ", e.field())), "{e}");
        }
        assert_eq!(
            with(|s| s.target_utilization = 0.99),
            "spec.autoscaler.targetUtilization: 0.99 is outside 0.1..=0.95"
        );
        assert!(with(|s| s.utilization_band = f64::NAN).starts_with("spec.autoscaler.utilizationBand: NaN"));
        assert!(with(|s| s.catch_up_time = "0s".into()).starts_with("spec.autoscaler.catchUpTime: must be longer"));
        assert_eq!(
            with(|s| {
                s.min_parallelism = 4;
                s.max_parallelism = Some(2);
            }),
            "spec.autoscaler: minParallelism 4 is above maxParallelism 2"
        );
        assert_eq!(
            with(|s| {
                s.vertices.insert(
                    "map".into(),
                    crate::crd::VertexBoundsSpec { min_parallelism: Some(9), max_parallelism: Some(3) },
                );
            }),
            "spec.autoscaler.vertices.map: minParallelism 9 is above maxParallelism 3"
        );
    }
}
