//! Sizes as people write them: `256MiB`, `1GiB`, `512MB`, `4096`.

/// Parses a size in bytes as pipeline files, the command line and StreamJobs
/// write it: a whole number with an optional unit, binary (`KiB`, `MiB`,
/// `GiB`, `TiB`, as Kubernetes' `Mi`, `Gi`) or decimal (`KB`, `MB`, `GB`,
/// `TB`, as Kubernetes' `k`, `M`, `G`). The one size parser of Weir.
///
/// ```
/// use weir_api::parse_size;
/// assert_eq!(parse_size("256MiB"), Ok(256 << 20));
/// assert_eq!(parse_size("1Gi"), Ok(1 << 30));
/// assert_eq!(parse_size(" 2 GB "), Ok(2_000_000_000));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// assert!(parse_size("lots").unwrap_err().contains("invalid size `lots`"));
/// ```
pub fn parse_size(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size `{s}`: expected a whole number with a unit, such as 256MiB, 1GiB or 512MB");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "TiB" | "Ti" => 1 << 40,
        "KB" | "k" | "K" => 1_000,
        "MB" | "M" => 1_000_000,
        "GB" | "G" => 1_000_000_000,
        "TB" | "T" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    n.checked_mul(scale).ok_or_else(|| format!("invalid size `{s}`: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bad_input() {
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("3TB"), Ok(3_000_000_000_000));
        for bad in ["", "MiB", "1.5GiB", "-1MiB", "10 parsecs", "99999999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
