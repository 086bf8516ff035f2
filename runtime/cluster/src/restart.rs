//! Restart strategies: how long to wait before a failed job runs again, and
//! when to give up. Pure: the JobManager feeds it failures and the clock.
//!
//! The default is Flink's (since 1.19): exponential delay from 1 s, times 1.5
//! after each failure up to 1 min, ±10 % jitter, back to 1 s once the job ran
//! an hour without failing, and no limit on the number of restarts. A
//! long-running job thus survives any number of failures spread over its
//! life (TaskManagers lost one at a time over weeks), while a job that fails
//! again at once backs off to one attempt a minute instead of hammering what
//! it depends on.

use std::time::Duration;

/// How a failed job is restarted (Flink's `fixed-delay` and `exponential-delay`).
#[derive(Clone, Debug, PartialEq)]
pub enum RestartStrategy {
    /// Wait `delay` before each restart; give up after `max_attempts` restarts
    /// over the job's whole life.
    FixedDelay { delay: Duration, max_attempts: u32 },
    /// Wait `initial`, growing by `multiplier` up to `max` after each failure,
    /// each delay varied at random by up to `jitter` (a fraction) of itself. A
    /// job that ran for `reset_after` without failing starts over at
    /// `initial`, with its attempts counted from zero again: `max_attempts`
    /// (`None`: unlimited) limits restarts between two resets, not over the
    /// job's life.
    Exponential {
        initial: Duration,
        max: Duration,
        multiplier: f64,
        max_attempts: Option<u32>,
        reset_after: Duration,
        jitter: f64,
    },
    /// Never restart: the first failure fails the job.
    None,
}

/// What `exponential:` leaves unsaid, and the default: Flink's
/// `exponential-delay` defaults.
const MULTIPLIER: f64 = 1.5;
const RESET_AFTER: Duration = Duration::from_secs(3600);
const JITTER: f64 = 0.1;

impl Default for RestartStrategy {
    /// `exponential:1s:1m:unlimited` (the `--restart-strategy` default).
    fn default() -> Self {
        RestartStrategy::Exponential {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: MULTIPLIER,
            max_attempts: None,
            reset_after: RESET_AFTER,
            jitter: JITTER,
        }
    }
}

impl RestartStrategy {
    /// Parses `none`, `fixed-delay:<delay>:<attempts>` or
    /// `exponential:<initial>:<max>:<attempts>` (delays as `500ms`, `10s`,
    /// `1m`; exponential attempts may be `unlimited`). Exponential delays grow
    /// by 1.5, vary by ±10 % and reset after an hour without failure.
    pub fn parse(s: &str) -> Result<Self, String> {
        use weir_api::parse_duration;
        let parts: Vec<&str> = s.split(':').collect();
        let attempts = |a: &str| a.parse::<u32>().map_err(|_| format!("`{a}` is not a number of attempts"));
        match parts.as_slice() {
            ["none"] => Ok(RestartStrategy::None),
            ["fixed-delay", delay, n] => {
                Ok(RestartStrategy::FixedDelay { delay: parse_duration(delay)?, max_attempts: attempts(n)? })
            }
            ["exponential", initial, max, n] => Ok(RestartStrategy::Exponential {
                initial: parse_duration(initial)?,
                max: parse_duration(max)?,
                multiplier: MULTIPLIER,
                max_attempts: if *n == "unlimited" { None } else { Some(attempts(n)?) },
                reset_after: RESET_AFTER,
                jitter: JITTER,
            }),
            _ => Err(format!(
                "`{s}`: expected none, fixed-delay:<delay>:<attempts> or exponential:<initial>:<max>:<attempts|unlimited>"
            )),
        }
    }
}

/// The restarts of one job so far.
#[derive(Debug)]
pub struct Restarts {
    strategy: RestartStrategy,
    /// Restarts over the job's life (what the REST API reports).
    total: u32,
    /// Restarts since the last reset (what a limit counts).
    since_reset: u32,
    next_delay: Duration,
    /// A xorshift state for the jitter.
    random: u64,
}

impl Restarts {
    pub fn new(strategy: RestartStrategy) -> Self {
        use std::hash::{BuildHasher, Hasher};
        // std's per-process random keys: jobs restarting together spread out.
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Self::with_seed(strategy, seed)
    }

    fn with_seed(strategy: RestartStrategy, seed: u64) -> Self {
        let next_delay = match &strategy {
            RestartStrategy::Exponential { initial, .. } => *initial,
            RestartStrategy::FixedDelay { delay, .. } => *delay,
            RestartStrategy::None => Duration::ZERO,
        };
        Restarts { strategy, total: 0, since_reset: 0, next_delay, random: seed | 1 }
    }

    /// Restarts so far, over the job's life.
    pub fn attempts(&self) -> u32 {
        self.total
    }

    /// A uniform sample of [-1, 1].
    fn unit(&mut self) -> f64 {
        // xorshift64*
        self.random ^= self.random >> 12;
        self.random ^= self.random << 25;
        self.random ^= self.random >> 27;
        let bits = self.random.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11; // 53 bits
        bits as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// A failure after the job ran for `ran`: how long to wait before the
    /// restart, or `None` when the strategy gives up.
    pub fn on_failure(&mut self, ran: Duration) -> Option<Duration> {
        let delay = match self.strategy.clone() {
            RestartStrategy::None => return None,
            RestartStrategy::FixedDelay { delay, max_attempts } => {
                if self.since_reset >= max_attempts {
                    return None;
                }
                delay
            }
            RestartStrategy::Exponential { initial, max, multiplier, max_attempts, reset_after, jitter } => {
                if ran >= reset_after {
                    self.since_reset = 0;
                    self.next_delay = initial;
                }
                if max_attempts.is_some_and(|m| self.since_reset >= m) {
                    return None;
                }
                let base = self.next_delay.min(max);
                self.next_delay = base.mul_f64(multiplier.max(1.0)).min(max);
                let varied = base.as_secs_f64() * (1.0 + jitter.clamp(0.0, 1.0) * self.unit());
                Duration::from_secs_f64(varied.max(0.0)).min(max)
            }
        };
        self.since_reset += 1;
        self.total += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RestartStrategy, String> {
        RestartStrategy::parse(s)
    }

    /// `s` without its jitter, for exact delays.
    fn steady(s: &str) -> Restarts {
        let mut strategy = parse(s).unwrap();
        if let RestartStrategy::Exponential { jitter, .. } = &mut strategy {
            *jitter = 0.0;
        }
        Restarts::with_seed(strategy, 7)
    }

    #[test]
    fn fixed_delay_gives_up_after_its_attempts() {
        let mut r = Restarts::new(parse("fixed-delay:200ms:2").unwrap());
        assert_eq!(r.on_failure(Duration::ZERO), Some(Duration::from_millis(200)));
        assert_eq!(r.on_failure(Duration::ZERO), Some(Duration::from_millis(200)));
        assert_eq!(r.on_failure(Duration::ZERO), None);
        assert_eq!(r.attempts(), 2);
    }

    #[test]
    fn exponential_grows_up_to_its_max_and_resets_after_a_long_run() {
        let mut r = steady("exponential:1s:3s:10");
        let delays: Vec<_> = (0..5).map(|_| r.on_failure(Duration::ZERO).unwrap().as_millis()).collect();
        assert_eq!(delays, [1000, 1500, 2250, 3000, 3000]);
        assert_eq!(r.on_failure(Duration::from_secs(3600)), Some(Duration::from_secs(1)), "an hour up: from the start");
        assert_eq!(r.on_failure(Duration::from_secs(3599)), Some(Duration::from_millis(1500)), "not quite an hour");
        assert_eq!(r.attempts(), 7, "the job's restarts count on across resets");
    }

    #[test]
    fn an_attempt_limit_counts_the_failures_since_the_last_reset() {
        // Three failures in a row are allowed, a fourth is one too many...
        let mut r = steady("exponential:1s:1m:3");
        for _ in 0..3 {
            assert!(r.on_failure(Duration::from_secs(60)).is_some());
        }
        assert_eq!(r.on_failure(Duration::from_secs(60)), None);
        // ...unless the job ran an hour before it: then it is the first again.
        let mut r = steady("exponential:1s:1m:3");
        for _ in 0..3 {
            r.on_failure(Duration::from_secs(60));
        }
        for _ in 0..3 {
            assert_eq!(r.on_failure(Duration::from_secs(2 * 3600)), Some(Duration::from_secs(1)));
        }
        assert_eq!(r.attempts(), 6);
    }

    #[test]
    fn the_default_survives_thirty_taskmanager_losses_over_a_long_run() {
        assert_eq!(parse(weir_api::launch::FailoverOptions::DEFAULT_RESTART_STRATEGY), Ok(RestartStrategy::default()));
        // 30 failures, each after 2 to 59 minutes of running (never an hour: no reset),
        // and 30 more in a row right away: the job is restarted every time.
        let mut r = Restarts::new(RestartStrategy::default());
        for i in 0..60u64 {
            let ran = if i < 30 { Duration::from_secs(120 + i * 113 % 3420) } else { Duration::ZERO };
            let delay = r.on_failure(ran).unwrap_or_else(|| panic!("gave up at failure {}", i + 1));
            assert!(delay <= Duration::from_secs(60), "{delay:?}");
        }
        assert_eq!(r.attempts(), 60);
        // The delays of a crash loop level off at the max; jitter keeps them within 10 %.
        let delay = r.on_failure(Duration::ZERO).unwrap();
        assert!(delay >= Duration::from_secs(54) && delay <= Duration::from_secs(60), "{delay:?}");
        // After a stable hour the next restart is quick again.
        let delay = r.on_failure(Duration::from_secs(3600)).unwrap();
        assert!(delay >= Duration::from_millis(900) && delay <= Duration::from_millis(1100), "{delay:?}");
    }

    #[test]
    fn jitter_varies_delays_within_its_fraction() {
        let mut r = Restarts::with_seed(RestartStrategy::default(), 42);
        let first: Vec<Duration> = (0..200).map(|_| r.on_failure(Duration::from_secs(3600)).unwrap()).collect();
        assert!(first.iter().all(|d| *d >= Duration::from_millis(900) && *d <= Duration::from_millis(1100)));
        assert!(
            first.iter().any(|d| *d < Duration::from_millis(980))
                && first.iter().any(|d| *d > Duration::from_millis(1020))
        );
    }

    #[test]
    fn none_never_restarts_and_bad_strategies_are_named() {
        assert_eq!(Restarts::new(parse("none").unwrap()).on_failure(Duration::ZERO), None);
        assert!(parse("fixed-delay:1s").unwrap_err().contains("fixed-delay:1s"));
        assert!(parse("fixed-delay:1s:many").unwrap_err().contains("many"));
        assert!(parse("fixed-delay:1s:unlimited").unwrap_err().contains("unlimited"), "a fixed delay has a limit");
        assert!(parse("fixed-delay:soon:3").unwrap_err().contains("invalid duration `soon`"));
        assert!(parse("exponential:1m30s:1h:5").is_ok(), "delays take every duration form");
        assert!(matches!(
            parse("exponential:1s:1m:unlimited"),
            Ok(RestartStrategy::Exponential { max_attempts: None, .. })
        ));
    }
}
