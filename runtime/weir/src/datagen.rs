//! A splittable, optionally rate-limited source of generated events (Flink's
//! `DataGeneratorSource`): [`StreamEnv::datagen`](crate::env::StreamEnv::datagen)
//! turns any pure function of the event number `n` into a parallel stream.
//!
//! Because every event is a function of its number, any subtask can produce
//! any range of the stream. The source splits the numbers into blocks of
//! [`BLOCK`] events dealt round-robin to the subtasks: all subtasks move
//! through event time together, which keeps window state small. Its position
//! is checkpointed and dealt over the new subtasks when a job is restored at
//! another parallelism. The benchmark workloads (`weir-workloads`) are built on it.
//!
//! A source is unthrottled, or paced by a [`RateProfile`] over all its
//! subtasks: a constant rate, steps, or a sine (a load that changes, to test
//! an autoscaler with). Each subtask paces its share of the stream with a pure
//! function of the time since it started ([`DatagenSource::allowed_by`]), and
//! reports what is due and not produced yet as its backlog (`pending_records`).
//! The profile's clock is the stream's: a restored job resumes the profile at
//! the time its stream position was due (see [`RateProfile`]).
//!
//! ```
//! use weir::prelude::*;
//! let env = StreamEnv::new("squares");
//! env.set_parallelism(2);
//! let squares = env.datagen("squares", |n| n * n, Some(10), None).collect();
//! env.execute().unwrap();
//! let mut values = squares.values();
//! values.sort();
//! assert_eq!(values, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! ```

use std::f64::consts::TAU;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_core::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use weir_core::metrics::SubtaskMetrics;
use weir_core::source::{Source, SourcePoll};
use weir_core::state::codec;
use weir_core::{NO_TIMESTAMP, Record, TaskResult};

/// Events per block of the datagen split.
pub const BLOCK: u64 = 1024;

/// How fast a datagen source produces, over all its subtasks, as a function of
/// the stream's time: seconds since the stream's first event was due.
///
/// The profile's clock is the stream's, not the wall clock. A source instance
/// starts at the profile time its stream position was due
/// ([`time_of`](RateProfile::time_of) of it; 0 for a fresh stream), so a job
/// restored or rescaled mid-profile resumes the profile where its stream was
/// instead of replaying it from the start. A backlog at the time of the restore
/// is not carried over: the restored job owes only what falls due after it
/// starts (and nothing, when its stream is past the profile's last event).
///
/// ```
/// use std::time::Duration;
/// use weir::datagen::RateProfile;
/// let steps = RateProfile::Steps(vec![(Duration::ZERO, 1000.0), (Duration::from_secs(120), 3000.0)]);
/// assert_eq!(steps.events_by(130.0), 150_000.0);
/// assert_eq!(steps.time_of(150_000.0), 130.0);
/// let sine = RateProfile::Sine { mean: 2000.0, amplitude: 1000.0, period: Duration::from_secs(600) };
/// assert!((sine.events_by(600.0) - 1_200_000.0).abs() < 1e-6, "a whole period is the mean's");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum RateProfile {
    /// Events per second throughout.
    Constant(f64),
    /// `(from, rate)`: the rate from each time on; the first step at 0, in
    /// increasing time. A rate may be 0: a pause, or the end when it is the last step.
    Steps(Vec<(Duration, f64)>),
    /// `mean + amplitude * sin(2π t / period)`, with `amplitude <= mean` so that
    /// the rate never goes negative.
    Sine { mean: f64, amplitude: f64, period: Duration },
}

/// Why a [`RateProfile`] cannot pace a source.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RateProfileError {
    #[error("rate {0}: expected a finite number of events per second, 0 or more")]
    Rate(f64),
    #[error("the rate is 0 throughout: the source would never produce")]
    NeverProduces,
    #[error("a step profile needs at least one step")]
    NoSteps,
    #[error("the first step must be at 0s (the stream's start), not at {0:?}")]
    FirstStepNotAtZero(Duration),
    #[error("step {0} is not later than the one before it: steps must be in increasing time")]
    StepsNotIncreasing(usize),
    #[error("the amplitude {amplitude} exceeds the mean {mean}: the rate would go negative")]
    AmplitudeExceedsMean { mean: f64, amplitude: f64 },
    #[error("a sine's period must be longer than zero")]
    ZeroPeriod,
    #[error(
        "invalid rate `{0}`: expected events per second (1000), steps:0s=1000,2m=3000 \
         or sine:mean=2000,amplitude=1000,period=10m"
    )]
    Syntax(String),
}

impl From<f64> for RateProfile {
    fn from(rate: f64) -> Self {
        RateProfile::Constant(rate)
    }
}

impl RateProfile {
    /// Checks what the math relies on: rates finite and not negative, steps
    /// from 0 in increasing time, a sine that never goes negative, and some
    /// rate above 0.
    pub fn validate(&self) -> Result<(), RateProfileError> {
        let rate = |r: f64| if r.is_finite() && r >= 0.0 { Ok(r) } else { Err(RateProfileError::Rate(r)) };
        match self {
            RateProfile::Constant(r) if rate(*r)? == 0.0 => Err(RateProfileError::NeverProduces),
            RateProfile::Constant(_) => Ok(()),
            RateProfile::Steps(steps) => {
                let (first, _) = steps.first().ok_or(RateProfileError::NoSteps)?;
                if !first.is_zero() {
                    return Err(RateProfileError::FirstStepNotAtZero(*first));
                }
                if let Some(i) = (1..steps.len()).find(|&i| steps[i].0 <= steps[i - 1].0) {
                    return Err(RateProfileError::StepsNotIncreasing(i));
                }
                for &(_, r) in steps {
                    rate(r)?;
                }
                match steps.iter().all(|&(_, r)| r == 0.0) {
                    true => Err(RateProfileError::NeverProduces),
                    false => Ok(()),
                }
            }
            RateProfile::Sine { mean, amplitude, period } => {
                if rate(*mean)? == 0.0 {
                    return Err(RateProfileError::NeverProduces);
                }
                if rate(*amplitude)? > *mean {
                    return Err(RateProfileError::AmplitudeExceedsMean { mean: *mean, amplitude: *amplitude });
                }
                match period.is_zero() {
                    true => Err(RateProfileError::ZeroPeriod),
                    false => Ok(()),
                }
            }
        }
    }

    /// Events due by `t` seconds of stream time: the integral of the rate from 0 to `t`.
    ///
    /// Total for any input, valid or not, so that pacing never panics or
    /// loops; only on [`validate`](Self::validate)d profiles is it monotone,
    /// with [`time_of`](Self::time_of) its inverse.
    pub fn events_by(&self, t: f64) -> f64 {
        if t.is_nan() || t <= 0.0 {
            return 0.0;
        }
        match self {
            RateProfile::Constant(r) => positive(*r) * t,
            RateProfile::Steps(steps) => {
                let mut due = 0.0;
                for (start, end, rate) in segments(steps) {
                    if t <= start {
                        break;
                    }
                    // 0 * infinity would be NaN: a paused segment adds nothing, however long.
                    if rate > 0.0 {
                        due += rate * (end.min(t) - start);
                    }
                }
                due
            }
            RateProfile::Sine { mean, amplitude, period } => {
                let p = period.as_secs_f64();
                if p == 0.0 {
                    return mean * t; // an infinitely fast wave averages out
                }
                let w = TAU / p;
                mean * t + amplitude / w * (1.0 - (w * t).cos())
            }
        }
    }

    /// The inverse of [`events_by`](Self::events_by): the earliest stream time
    /// by which `events` events are due; 0 for 0 events, and `f64::INFINITY`
    /// for more events than the profile ever produces (it ends with a rate of 0).
    pub fn time_of(&self, events: f64) -> f64 {
        if events.is_nan() || events <= 0.0 {
            return 0.0;
        }
        match self {
            RateProfile::Constant(r) if *r > 0.0 => events / r,
            RateProfile::Constant(_) => f64::INFINITY,
            RateProfile::Steps(steps) => {
                let mut before = 0.0; // due at the start of the segment
                for (start, end, rate) in segments(steps) {
                    if rate > 0.0 {
                        let within = rate * (end - start);
                        if before + within >= events {
                            return start + (events - before) / rate;
                        }
                        before += within;
                    }
                }
                f64::INFINITY
            }
            RateProfile::Sine { mean, amplitude, period } => self.sine_time_of(*mean, *amplitude, *period, events),
        }
    }

    /// Bisection between the bounds the wave allows: `events_by(t)` is within
    /// `2 |amplitude| / ω` of `mean * t`. A fixed number of halvings (or fewer,
    /// once the bounds are adjacent floats) ends it for every input.
    fn sine_time_of(&self, mean: f64, amplitude: f64, period: Duration, events: f64) -> f64 {
        if mean.is_nan() || mean <= 0.0 {
            return f64::INFINITY;
        }
        let p = period.as_secs_f64();
        let wobble = if p == 0.0 { 0.0 } else { 2.0 * amplitude.abs() * p / TAU };
        let (mut lo, mut hi) = (((events - wobble) / mean).max(0.0), (events + wobble) / mean);
        for _ in 0..128 {
            let mid = lo + (hi - lo) / 2.0;
            if mid <= lo || mid >= hi {
                break;
            }
            if self.events_by(mid) >= events {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// Events due in the `secs` seconds after stream time `from`; nothing after
    /// a time past everything the profile produces.
    fn events_after(&self, from: f64, secs: f64) -> f64 {
        match self {
            _ if !from.is_finite() => 0.0,
            // Exactly the constant rate of old, wherever in the stream it starts.
            RateProfile::Constant(r) => positive(*r) * secs,
            _ => self.events_by(from + secs) - self.events_by(from),
        }
    }
}

/// A rate, with what is not a positive number as 0.
fn positive(rate: f64) -> f64 {
    if rate > 0.0 { rate } else { 0.0 }
}

/// The steps as `(start, end, rate)` in seconds, the last one without end.
/// Out-of-order steps (unvalidated) make empty segments rather than negative ones.
fn segments(steps: &[(Duration, f64)]) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
    steps.iter().enumerate().map(|(i, &(at, rate))| {
        let start = at.as_secs_f64();
        let end = steps.get(i + 1).map_or(f64::INFINITY, |next| next.0.as_secs_f64().max(start));
        (start, end, positive(rate))
    })
}

/// A rate on the command line (`weir datagen --rate`): `1000` (events per
/// second), `steps:0s=1000,2m=3000` or `sine:mean=2000,amplitude=1000,period=10m`;
/// validated.
impl FromStr for RateProfile {
    type Err = RateProfileError;

    fn from_str(s: &str) -> Result<Self, RateProfileError> {
        let syntax = || RateProfileError::Syntax(s.to_string());
        let number = |t: &str| t.trim().parse::<f64>().map_err(|_| syntax());
        let duration = |t: &str| weir_api::parse_duration(t).map_err(|_| syntax());
        let profile = if let Some(steps) = s.trim().strip_prefix("steps:") {
            let step = |step: &str| {
                let (at, rate) = step.split_once('=').ok_or_else(syntax)?;
                Ok((duration(at)?, number(rate)?))
            };
            RateProfile::Steps(steps.split(',').map(step).collect::<Result<_, RateProfileError>>()?)
        } else if let Some(sine) = s.trim().strip_prefix("sine:") {
            let (mut mean, mut amplitude, mut period) = (None, None, None);
            for field in sine.split(',') {
                match field.split_once('=').map(|(k, v)| (k.trim(), v)).ok_or_else(syntax)? {
                    ("mean", v) => mean = Some(number(v)?),
                    ("amplitude", v) => amplitude = Some(number(v)?),
                    ("period", v) => period = Some(duration(v)?),
                    _ => return Err(syntax()),
                }
            }
            RateProfile::Sine {
                mean: mean.ok_or_else(syntax)?,
                amplitude: amplitude.ok_or_else(syntax)?,
                period: period.ok_or_else(syntax)?,
            }
        } else {
            RateProfile::Constant(number(s)?)
        };
        profile.validate()?;
        Ok(profile)
    }
}

/// What the `rate` of [`StreamEnv::datagen`](crate::env::StreamEnv::datagen)
/// (and of the workload streams) takes: `None` (unthrottled),
/// `Some(events_per_second)`, a number, or a [`RateProfile`].
///
/// Deliberately not implemented for `Option<RateProfile>`: a bare `None` then
/// has one possible type (`Option<f64>`), so calls written before profiles
/// existed, such as `env.datagen("n", |n| n, Some(10), None)`, compile unchanged.
pub trait IntoRateProfile {
    fn into_rate_profile(self) -> Option<RateProfile>;
}

impl IntoRateProfile for Option<f64> {
    fn into_rate_profile(self) -> Option<RateProfile> {
        self.map(RateProfile::Constant)
    }
}

impl IntoRateProfile for f64 {
    fn into_rate_profile(self) -> Option<RateProfile> {
        Some(RateProfile::Constant(self))
    }
}

impl IntoRateProfile for RateProfile {
    fn into_rate_profile(self) -> Option<RateProfile> {
        Some(self)
    }
}

/// Which part of a generated stream one source subtask produces.
#[derive(Clone, Debug)]
pub struct DatagenSplit {
    pub subtask: usize,
    pub parallelism: usize,
    /// Events in the whole stream; unbounded when `None`.
    pub count: Option<u64>,
    /// Events per second over all subtasks; unthrottled when `None`.
    pub rate: Option<RateProfile>,
}

/// One lane of a generated stream: blocks `next_block, next_block + stride, ...`,
/// the first of them from `offset`. A subtask starts with one lane; after a
/// restore at another parallelism it may have several, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lane {
    pub next_block: u64,
    pub stride: u64,
    pub offset: u64,
}

/// A source producing `generate(n)` for its share of event numbers.
pub struct DatagenSource<T, G> {
    generate: G,
    split: DatagenSplit,
    lanes: std::collections::VecDeque<Lane>,
    /// The part of the whole stream this subtask's lanes make (what its part of
    /// `rate` is): 1/parallelism, until a restore deals lanes unevenly.
    share: f64,
    /// The stream time (of the rate profile) this instance starts at: 0 when
    /// fresh; after a restore, when the stream's position was due.
    profile_start: f64,
    emitted: u64,
    started: Option<Instant>,
    /// Where a rate-limited source reports its backlog (`pending_records`).
    metrics: Option<Arc<SubtaskMetrics>>,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T, G: Fn(u64) -> T> DatagenSource<T, G> {
    pub fn new(generate: G, split: DatagenSplit) -> Self {
        let lane = Lane { next_block: split.subtask as u64, stride: split.parallelism as u64, offset: 0 };
        DatagenSource {
            generate,
            split,
            lanes: [lane].into(),
            share: lane.share(),
            profile_start: 0.0,
            emitted: 0,
            started: None,
            metrics: None,
            _t: std::marker::PhantomData,
        }
    }

    /// Reports the backlog under a rate to `metrics`: the events due by now
    /// and not produced yet (a downstream that cannot keep up makes it grow,
    /// as a consumer's lag on a Kafka topic).
    pub fn with_metrics(mut self, metrics: Arc<SubtaskMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How many events this instance may have produced `elapsed` after it
    /// started (`None`: unthrottled): its share of what the rate profile has
    /// due from the stream time it started at, rounded up (the first event
    /// goes at once). A pure function of `elapsed`, which the source reads
    /// from the clock.
    pub fn allowed_by(&self, elapsed: Duration) -> Option<u64> {
        let profile = self.split.rate.as_ref()?;
        let due = self.share * profile.events_after(self.profile_start, elapsed.as_secs_f64());
        // `as` saturates (an infinite rate) and NaN never passes `> 0`.
        Some(if due > 0.0 { due.ceil() as u64 } else { 0 })
    }

    fn report_backlog(&self, backlog: u64) {
        if let Some(m) = &self.metrics {
            m.pending_records.store(i64::try_from(backlog).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }

    fn past(lane: &Lane, count: Option<u64>) -> bool {
        count.is_some_and(|count| lane.position() >= count)
    }
}

impl Lane {
    /// The number of the next event of this lane.
    pub fn position(&self) -> u64 {
        self.next_block * BLOCK + self.offset
    }

    /// The part of the stream's blocks this lane has.
    pub fn share(&self) -> f64 {
        1.0 / self.stride.max(1) as f64
    }

    /// The same blocks as `k` lanes, for spreading one lane over more subtasks.
    pub fn split(&self, k: u64) -> impl Iterator<Item = Lane> + '_ {
        (0..k).map(move |i| Lane {
            next_block: self.next_block + i * self.stride,
            stride: self.stride * k,
            offset: if i == 0 { self.offset } else { 0 },
        })
    }
}

impl<T: Send, G: Fn(u64) -> T + Send> Source<T> for DatagenSource<T, G> {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> TaskResult<SourcePoll> {
        // The lane furthest behind goes first: lanes restored at different positions
        // then move through event time together, and the one watermark of this
        // subtask never runs ahead of a lagging lane (the per-split watermark rule).
        // Exhausted lanes stay, so that a finished source's snapshot says so.
        let count = self.split.count;
        let open = (0..self.lanes.len()).filter(|&i| !Self::past(&self.lanes[i], count));
        let Some(behind) = open.min_by_key(|&i| self.lanes[i].position()) else {
            self.report_backlog(0);
            return Ok(SourcePoll::Finished);
        };
        let mut lane = self.lanes.remove(behind).expect("index in range");
        let first = lane.next_block * BLOCK + lane.offset;
        let mut end = (lane.next_block + 1) * BLOCK;
        if let Some(count) = self.split.count {
            end = end.min(count);
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        if let Some(allowed) = self.allowed_by(started.elapsed()) {
            if self.emitted >= allowed {
                self.report_backlog(0);
                self.lanes.push_front(lane);
                return Ok(SourcePoll::Idle(Duration::from_millis(10)));
            }
            end = end.min(first + (allowed - self.emitted));
            self.report_backlog(allowed - self.emitted - (end - first));
        }
        out.reserve(end.saturating_sub(first) as usize);
        out.extend((first..end).map(|n| Record::new(NO_TIMESTAMP, (self.generate)(n))));
        self.emitted += end - first;
        if end == (lane.next_block + 1) * BLOCK {
            lane.next_block += lane.stride;
            lane.offset = 0;
        } else {
            lane.offset = end - lane.next_block * BLOCK;
        }
        self.lanes.push_back(lane);
        Ok(SourcePoll::Ready)
    }

    fn snapshot_state(&mut self) -> TaskResult<OperatorSnapshot> {
        let entries = self.lanes.iter().map(codec::encode).collect();
        Ok(OperatorSnapshot::of_entries(entries))
    }

    /// Deals the lanes of all old subtasks over the new ones; when there are fewer
    /// lanes than subtasks, each lane is first split so that every subtask gets work.
    /// Every subtask computes the same list, so the deal is consistent.
    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        if state.all_entries.is_empty() {
            return Ok(()); // a source new to the job (nothing of it in the snapshot): start afresh
        }
        let all: Vec<Lane> =
            state.all_entries.iter().map(|e| codec::decode(e, "a datagen position")).collect::<TaskResult<_>>()?;
        let p = self.split.parallelism;
        let k = if all.is_empty() { 1 } else { p.div_ceil(all.len()) as u64 };
        let lanes: Vec<Lane> = all.iter().flat_map(|l| l.split(k).collect::<Vec<_>>()).collect();
        self.lanes =
            lanes.into_iter().enumerate().filter(|(i, _)| i % p == self.split.subtask).map(|(_, l)| l).collect();
        // Paced by what it has: a subtask dealt two lanes of four runs at half the rate.
        self.share = self.lanes.iter().map(Lane::share).sum();
        // All lanes move through the stream together, so the one furthest behind
        // (the same for every subtask) is where the stream, and its profile, was.
        let position = all.iter().map(Lane::position).min().unwrap_or(0);
        self.profile_start = self.split.rate.as_ref().map_or(0.0, |p| p.time_of(position as f64));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_every_event_once() {
        for p in 1..=4 {
            let mut seen = Vec::new();
            for i in 0..p {
                let split = DatagenSplit { subtask: i, parallelism: p, count: Some(5_000), rate: None };
                let mut s = DatagenSource::new(|n| n, split);
                let mut out = Vec::new();
                while s.poll(&mut out).unwrap() != SourcePoll::Finished {}
                seen.extend(out.into_iter().map(|r| r.value));
            }
            seen.sort();
            assert_eq!(seen, (0..5_000).collect::<Vec<_>>());
        }
    }

    /// Events generated before the snapshot plus those after restoring at `p`: each exactly once?
    fn restored_run(p: usize, count: u64) -> (usize, usize, bool) {
        let split = |subtask, parallelism| DatagenSplit { subtask, parallelism, count: Some(count), rate: None };
        let (mut seen, mut lanes) = (Vec::new(), Vec::new());
        for i in 0..3 {
            let mut s = DatagenSource::new(|n| n, split(i, 3));
            let mut out = Vec::new();
            for _ in 0..(i + 2) {
                s.poll(&mut out).unwrap();
            }
            seen.extend(out.into_iter().map(|r| r.value));
            lanes.extend(s.snapshot_state().unwrap().entries);
        }
        let mut every_subtask_works = true;
        for j in 0..p {
            let mut s = DatagenSource::new(|n| n, split(j, p));
            s.restore_state(RestoredState { all_entries: lanes.clone(), ..Default::default() }).unwrap();
            let mut out = Vec::new();
            while s.poll(&mut out).unwrap() != SourcePoll::Finished {}
            every_subtask_works &= !out.is_empty();
            seen.extend(out.into_iter().map(|r| r.value));
        }
        seen.sort();
        let total = seen.len();
        seen.dedup();
        let missing = (0..count).filter(|n| seen.binary_search(n).is_err()).count();
        (total - seen.len(), missing, every_subtask_works)
    }

    #[test]
    fn a_restored_position_continues_exactly_at_any_parallelism() {
        // 3 subtasks part of the way, then restored onto fewer and onto more subtasks.
        for p in [1, 2, 3, 7] {
            let (duplicates, missing, all_work) = restored_run(p, 20_000);
            assert_eq!((duplicates, missing), (0, 0), "(duplicates, missing) restoring at parallelism {p}");
            assert!(all_work, "every subtask gets work restoring at parallelism {p}");
        }
    }

    /// After a restore at another parallelism the subtasks' rates follow the lanes they
    /// were dealt: together they keep the configured rate, and all lanes end together.
    #[test]
    fn restored_subtasks_share_the_rate_by_their_lanes() {
        let split =
            |subtask, parallelism| DatagenSplit { subtask, parallelism, count: None, rate: Some(9_000.0.into()) };
        let lanes: Vec<Vec<u8>> =
            (0..2).flat_map(|i| DatagenSource::new(|n| n, split(i, 2)).snapshot_state().unwrap().entries).collect();
        let shares: Vec<f64> = (0..3)
            .map(|j| {
                let mut s = DatagenSource::new(|n| n, split(j, 3));
                s.restore_state(RestoredState { all_entries: lanes.clone(), ..Default::default() }).unwrap();
                s.share
            })
            .collect();
        // 2 lanes split into 4, dealt 2, 1, 1.
        assert_eq!(shares, [0.5, 0.25, 0.25]);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_rate_limited_source_reports_its_backlog() {
        let metrics = Arc::new(SubtaskMetrics::default());
        let split = DatagenSplit { subtask: 0, parallelism: 1, count: None, rate: Some(100_000.0.into()) };
        let mut s = DatagenSource::new(|n| n, split).with_metrics(metrics.clone());
        let backlog = || metrics.pending_records.load(Ordering::Relaxed);
        let mut out = Vec::new();
        s.poll(&mut out).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.poll(&mut out).unwrap();
        // 10k events due after 100 ms, at most a block of them produced per poll.
        assert!(backlog() > 5_000, "a slow reader leaves a backlog: {}", backlog());
        while s.poll(&mut out).unwrap() == SourcePoll::Ready {}
        assert_eq!(backlog(), 0, "caught up: the source waits for the rate");
    }

    #[test]
    fn a_finished_source_stays_finished_and_a_new_one_starts_afresh() {
        let split = DatagenSplit { subtask: 0, parallelism: 1, count: Some(3000), rate: None };
        let mut done = DatagenSource::new(|n| n, split.clone());
        let mut out = Vec::new();
        while done.poll(&mut out).unwrap() != SourcePoll::Finished {}
        let snapshot = done.snapshot_state().unwrap();
        assert!(!snapshot.entries.is_empty(), "a finished source's snapshot records that it finished");
        let mut restored = DatagenSource::new(|n| n, split.clone());
        restored.restore_state(RestoredState { all_entries: snapshot.entries, ..Default::default() }).unwrap();
        assert_eq!(restored.poll(&mut Vec::new()).unwrap(), SourcePoll::Finished);
        let mut fresh = DatagenSource::new(|n| n, split);
        fresh.restore_state(RestoredState::default()).unwrap();
        let mut out = Vec::new();
        fresh.poll(&mut out).unwrap();
        assert_eq!(out.len(), BLOCK as usize, "no state for it in the snapshot: it starts from the beginning");
    }

    #[test]
    fn lanes_at_different_positions_advance_together() {
        // One subtask with lanes far apart emits from the one behind first.
        let mut s = DatagenSource::new(|n| n, DatagenSplit { subtask: 0, parallelism: 1, count: None, rate: None });
        let lanes = [Lane { next_block: 50, stride: 2, offset: 0 }, Lane { next_block: 1, stride: 2, offset: 0 }];
        let all_entries = lanes.iter().map(codec::encode).collect();
        s.restore_state(RestoredState { all_entries, ..Default::default() }).unwrap();
        let mut out = Vec::new();
        for _ in 0..24 {
            s.poll(&mut out).unwrap();
        }
        assert!(out.iter().all(|r| r.value < 50 * BLOCK), "the lane ahead waits until the lane behind caught up");
        for _ in 0..10 {
            s.poll(&mut out).unwrap();
        }
        assert!(out.iter().any(|r| r.value >= 50 * BLOCK));
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// 100/s for 10 s, a pause of 10 s, 300/s for 10 s, then nothing: 4000 events in all.
    fn pause_and_end() -> RateProfile {
        RateProfile::Steps(vec![(secs(0.0), 100.0), (secs(10.0), 0.0), (secs(20.0), 300.0), (secs(30.0), 0.0)])
    }

    fn sine() -> RateProfile {
        RateProfile::Sine { mean: 2000.0, amplitude: 1000.0, period: secs(600.0) }
    }

    #[test]
    fn profiles_integrate_in_closed_form() {
        assert_eq!(RateProfile::Constant(250.0).events_by(4.0), 1000.0);
        let steps = pause_and_end();
        for (t, due) in [(0.0, 0.0), (5.0, 500.0), (10.0, 1000.0), (15.0, 1000.0), (25.0, 2500.0), (99.0, 4000.0)] {
            assert_eq!(steps.events_by(t), due, "steps at {t}s");
        }
        // A quarter period of the sine: the mean's share plus amplitude * period / 2π.
        let quarter = 2000.0 * 150.0 + 1000.0 * 600.0 / TAU;
        assert!((sine().events_by(150.0) - quarter).abs() < 1e-6);
        assert!((sine().events_by(600.0) - 1_200_000.0).abs() < 1e-6, "a whole period is the mean's");
        for p in [RateProfile::Constant(1.0), pause_and_end(), sine()] {
            assert_eq!((p.events_by(-1.0), p.events_by(f64::NAN)), (0.0, 0.0), "{p:?} before the start");
        }
    }

    #[test]
    fn time_of_inverts_events_by_and_caps_what_is_never_reached() {
        for p in [RateProfile::Constant(123.0), pause_and_end(), sine()] {
            for t in [0.5, 3.0, 9.99, 21.0, 29.5, 150.0, 449.0] {
                let due = p.events_by(t);
                if due < 4000.0 || !matches!(p, RateProfile::Steps(_)) {
                    assert!((p.time_of(due) - t).abs() < 1e-6, "{p:?}: time_of(events_by({t}))");
                }
            }
        }
        let steps = pause_and_end();
        assert_eq!(steps.time_of(1000.0), 10.0, "the earliest time: before the pause, not after it");
        assert_eq!(steps.time_of(1030.0), 20.1);
        assert_eq!(steps.time_of(4000.0), 30.0, "the last event the profile produces");
        assert_eq!(steps.time_of(4000.5), f64::INFINITY, "beyond it: never");
        for p in [RateProfile::Constant(123.0), pause_and_end(), sine()] {
            assert_eq!((p.time_of(0.0), p.time_of(-5.0), p.time_of(f64::NAN)), (0.0, 0.0, 0.0), "{p:?}");
            assert_eq!(p.time_of(f64::INFINITY), f64::INFINITY, "{p:?}");
            assert!(p.time_of(1e300).is_finite() || matches!(p, RateProfile::Steps(_)));
        }
    }

    /// Pacing never panics or loops, whatever a caller put in the enum.
    #[test]
    fn invalid_profiles_still_terminate() {
        let bad = [
            RateProfile::Constant(f64::NAN),
            RateProfile::Constant(-1.0),
            RateProfile::Steps(vec![]),
            RateProfile::Steps(vec![(secs(5.0), 10.0), (secs(1.0), -3.0), (secs(2.0), f64::NAN)]),
            RateProfile::Sine { mean: 1.0, amplitude: 5.0, period: secs(1.0) },
            RateProfile::Sine { mean: -1.0, amplitude: 0.0, period: secs(1.0) },
            RateProfile::Sine { mean: 10.0, amplitude: 5.0, period: Duration::ZERO },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?} is invalid");
            for events in [0.0, 1.0, 1e6, 1e300, f64::INFINITY, f64::NAN] {
                let t = p.time_of(events);
                assert!(!t.is_nan() && t >= 0.0, "{p:?}: time_of({events}) = {t}");
                let _ = p.events_by(t);
            }
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        use RateProfileError as E;
        let cases = [
            (RateProfile::Constant(0.0), E::NeverProduces),
            (RateProfile::Constant(-2.0), E::Rate(-2.0)),
            (RateProfile::Steps(vec![]), E::NoSteps),
            (RateProfile::Steps(vec![(secs(1.0), 5.0)]), E::FirstStepNotAtZero(secs(1.0))),
            (RateProfile::Steps(vec![(secs(0.0), 5.0), (secs(2.0), 1.0), (secs(2.0), 3.0)]), E::StepsNotIncreasing(2)),
            (RateProfile::Steps(vec![(secs(0.0), 5.0), (secs(1.0), -1.0)]), E::Rate(-1.0)),
            (RateProfile::Steps(vec![(secs(0.0), 0.0), (secs(1.0), 0.0)]), E::NeverProduces),
            (
                RateProfile::Sine { mean: 10.0, amplitude: 11.0, period: secs(1.0) },
                E::AmplitudeExceedsMean { mean: 10.0, amplitude: 11.0 },
            ),
            (RateProfile::Sine { mean: 10.0, amplitude: 1.0, period: Duration::ZERO }, E::ZeroPeriod),
        ];
        for (p, e) in cases {
            assert_eq!(p.validate(), Err(e), "{p:?}");
        }
        assert_eq!(pause_and_end().validate(), Ok(()), "a pause and an end at rate 0 are fine");
        assert_eq!(sine().validate(), Ok(()));
    }

    #[test]
    fn profiles_parse_from_the_command_line() {
        assert_eq!("1000".parse(), Ok(RateProfile::Constant(1000.0)));
        assert_eq!(
            "steps:0s=1000,2m=3000".parse(),
            Ok(RateProfile::Steps(vec![(secs(0.0), 1000.0), (secs(120.0), 3000.0)]))
        );
        assert_eq!("sine:mean=2000,amplitude=1000,period=10m".parse(), Ok(sine()));
        for bad in ["fast", "steps:0s", "steps:0s=1,soon=2", "sine:mean=2000,period=10m", "sine:mean=1,amp=1,period=1s"]
        {
            assert_eq!(bad.parse::<RateProfile>(), Err(RateProfileError::Syntax(bad.into())), "{bad}");
        }
        assert_eq!("steps:1s=5".parse::<RateProfile>(), Err(RateProfileError::FirstStepNotAtZero(secs(1.0))));
        assert_eq!("-3".parse::<RateProfile>(), Err(RateProfileError::Rate(-3.0)));
    }

    fn paced(subtask: usize, parallelism: usize, rate: RateProfile) -> DatagenSource<u64, fn(u64) -> u64> {
        let split = DatagenSplit { subtask, parallelism, count: None, rate: Some(rate) };
        DatagenSource::new(|n| n, split)
    }

    /// The allowance as a pure function of the elapsed time: no clock in the test.
    #[test]
    fn the_allowance_follows_the_profile() {
        let steps = RateProfile::Steps(vec![(secs(0.0), 1000.0), (secs(1.0), 3000.0)]);
        let s = paced(0, 2, steps);
        let allowed: Vec<_> = [0.0, 0.5, 1.0, 2.0].map(|e| s.allowed_by(secs(e)).unwrap()).into();
        assert_eq!(allowed, [0, 250, 500, 2000], "half of 1000/s for 1 s, then half of 3000/s");
        // The constant rate as before: its share, the first event at once.
        let c = paced(1, 2, RateProfile::Constant(1000.0));
        assert_eq!([1e-6, 1.0, 10.0].map(|e| c.allowed_by(secs(e)).unwrap()), [1, 500, 5000]);
        let unthrottled =
            DatagenSource::new(|n| n, DatagenSplit { subtask: 0, parallelism: 1, count: None, rate: None });
        assert_eq!(unthrottled.allowed_by(secs(1.0)), None);
    }

    /// A job restored mid-profile goes on from where its stream was, not from the profile's start.
    #[test]
    fn a_restored_source_resumes_the_profile_at_its_stream_position() {
        let profile = RateProfile::Steps(vec![(secs(0.0), 1000.0), (secs(10.0), 5000.0), (secs(20.0), 0.0)]);
        let restore = |lanes: &[Lane], subtask, parallelism| {
            let mut s = paced(subtask, parallelism, profile.clone());
            let all_entries = lanes.iter().map(codec::encode).collect();
            s.restore_state(RestoredState { all_entries, ..Default::default() }).unwrap();
            s
        };
        // Two lanes at events 20_480 and 21_504: the stream was at 20_480, 2.096 s into the 5000/s step.
        let lanes = [Lane { next_block: 20, stride: 2, offset: 0 }, Lane { next_block: 21, stride: 2, offset: 0 }];
        let s = restore(&lanes, 0, 1);
        assert!((s.profile_start - 12.096).abs() < 1e-9, "{}", s.profile_start);
        assert_eq!(s.allowed_by(secs(1.0)), Some(5000), "5000/s, not the 1000/s of the profile's start");
        assert_eq!(s.allowed_by(secs(100.0)), Some(60_000 - 20_480), "then only what the profile has left");
        // Rescaled to 3: every subtask resumes at the same stream time, at its share.
        let shares: Vec<_> = (0..3).map(|j| restore(&lanes, j, 3)).collect();
        assert!(shares.iter().all(|s| s.profile_start == 12.096));
        let total: u64 = shares.iter().map(|s| s.allowed_by(secs(1.0)).unwrap()).sum();
        assert!((5000..=5003).contains(&total), "{total}");
        // Beyond everything the profile produces: nothing more, rather than a replay.
        let past = restore(&[Lane { next_block: 100, stride: 1, offset: 0 }], 0, 1);
        assert_eq!((past.profile_start, past.allowed_by(secs(60.0))), (f64::INFINITY, Some(0)));
    }

    #[test]
    fn a_source_under_a_profile_reports_its_backlog() {
        for profile in [RateProfile::Steps(vec![(secs(0.0), 1000.0), (secs(0.5), 100_000.0)]), sine()] {
            let metrics = Arc::new(SubtaskMetrics::default());
            let mut s = paced(0, 1, profile.clone()).with_metrics(metrics.clone());
            let backlog = || metrics.pending_records.load(Ordering::Relaxed);
            // Started a second ago (backdated instead of slept): due is what the profile has in 1 s.
            s.started = Some(Instant::now() - secs(1.0));
            let mut out = Vec::new();
            s.poll(&mut out).unwrap();
            let due = profile.events_by(1.0) as i64;
            assert!(backlog() >= due - out.len() as i64 - 1, "{profile:?}: backlog {} of {due} due", backlog());
            while s.poll(&mut out).unwrap() == SourcePoll::Ready {}
            assert_eq!(backlog(), 0, "{profile:?}: caught up, the source waits for the profile");
        }
    }
}
