//! Restart strategies: how long to wait before a failed job runs again, and
//! when to give up. Pure: the JobManager feeds it failures and the clock.

use std::time::Duration;

/// How a failed job is restarted (Flink's `fixed-delay` and `exponential-delay`).
#[derive(Clone, Debug, PartialEq)]
pub enum RestartStrategy {
    /// Wait `delay` before each restart; give up after `max_attempts` restarts.
    FixedDelay { delay: Duration, max_attempts: u32 },
    /// Wait `initial`, doubling (by `multiplier`) up to `max` after each
    /// failure; give up after `max_attempts` restarts. A job that ran for
    /// `reset_after` without failing starts over at `initial`.
    Exponential { initial: Duration, max: Duration, multiplier: f64, max_attempts: u32, reset_after: Duration },
    /// Never restart: the first failure fails the job.
    None,
}

impl Default for RestartStrategy {
    fn default() -> Self {
        RestartStrategy::FixedDelay { delay: Duration::from_secs(1), max_attempts: 10 }
    }
}

impl RestartStrategy {
    /// Parses `none`, `fixed-delay:<delay>:<attempts>` or
    /// `exponential:<initial>:<max>:<attempts>` (delays as `500ms`, `10s`, `1m`).
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
                multiplier: 2.0,
                max_attempts: attempts(n)?,
                reset_after: Duration::from_secs(600),
            }),
            _ => Err(format!(
                "`{s}`: expected none, fixed-delay:<delay>:<attempts> or exponential:<initial>:<max>:<attempts>"
            )),
        }
    }
}

/// The restarts of one job so far.
#[derive(Debug)]
pub struct Restarts {
    strategy: RestartStrategy,
    attempts: u32,
    next_delay: Duration,
}

impl Restarts {
    pub fn new(strategy: RestartStrategy) -> Self {
        let next_delay = match &strategy {
            RestartStrategy::Exponential { initial, .. } => *initial,
            RestartStrategy::FixedDelay { delay, .. } => *delay,
            RestartStrategy::None => Duration::ZERO,
        };
        Restarts { strategy, attempts: 0, next_delay }
    }

    /// Restarts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// A failure after the job ran for `ran`: how long to wait before the
    /// restart, or `None` when the strategy gives up.
    pub fn on_failure(&mut self, ran: Duration) -> Option<Duration> {
        match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { delay, max_attempts } => {
                if self.attempts >= *max_attempts {
                    return None;
                }
                self.attempts += 1;
                Some(*delay)
            }
            RestartStrategy::Exponential { initial, max, multiplier, max_attempts, reset_after } => {
                if ran >= *reset_after {
                    self.attempts = 0;
                    self.next_delay = *initial;
                }
                if self.attempts >= *max_attempts {
                    return None;
                }
                self.attempts += 1;
                let delay = self.next_delay;
                self.next_delay = self.next_delay.mul_f64(*multiplier).min(*max);
                Some(delay)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RestartStrategy, String> {
        RestartStrategy::parse(s)
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
    fn exponential_doubles_up_to_its_max_and_resets_after_a_long_run() {
        let mut r = Restarts::new(parse("exponential:1s:3s:10").unwrap());
        let delays: Vec<_> = (0..4).map(|_| r.on_failure(Duration::ZERO).unwrap().as_secs()).collect();
        assert_eq!(delays, [1, 2, 3, 3]);
        assert_eq!(r.on_failure(Duration::from_secs(3600)), Some(Duration::from_secs(1)));
    }

    #[test]
    fn none_never_restarts_and_bad_strategies_are_named() {
        assert_eq!(Restarts::new(parse("none").unwrap()).on_failure(Duration::ZERO), None);
        assert!(parse("fixed-delay:1s").unwrap_err().contains("fixed-delay:1s"));
        assert!(parse("fixed-delay:1s:many").unwrap_err().contains("many"));
        assert!(parse("fixed-delay:soon:3").unwrap_err().contains("invalid duration `soon`"));
        assert!(parse("exponential:1m30s:1h:5").is_ok(), "delays take every duration form");
    }
}
