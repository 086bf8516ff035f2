//! Durations as people write them: `500ms`, `10s`, `1m`, `1h`, `1m30s`.

use std::time::Duration;

/// Parses a duration as the command line, pipeline files and StreamJobs
/// write it: a number with a unit (`500ms`, `10s`, `1m`, `1h`, `2d`) or
/// several (`1m 30s`, `1h30m`). The one duration parser of Weir.
///
/// ```
/// use std::time::Duration;
/// use weir_api::parse_duration;
/// assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
/// assert_eq!(parse_duration(" 1m30s "), Ok(Duration::from_secs(90)));
/// assert!(parse_duration("10").unwrap_err().contains("expected a number with a unit"));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("invalid duration `{s}`: expected a number with a unit, such as 500ms, 10s, 1m or 1h"))
}

/// Writes a duration so that [`parse_duration`] reads it back exactly, without
/// spaces (one command-line argument): `1h30m`, `1s500ms`, `0s`.
///
/// ```
/// use std::time::Duration;
/// use weir_api::{format_duration, parse_duration};
/// let d = Duration::from_millis(5_400_250);
/// assert_eq!(format_duration(d), "1h30m250ms");
/// assert_eq!(parse_duration(&format_duration(d)), Ok(d));
/// ```
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    humantime::format_duration(d).to_string().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for ms in [0, 1, 999, 1000, 61_000, 3_600_000, 86_400_000 + 1, 123_456_789] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{}", format_duration(d));
        }
    }
}
