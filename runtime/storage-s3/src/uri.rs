//! `s3://bucket/prefix` URIs, as written in `checkpointing.dir`, `--checkpoint-dir`
//! and `--restore`.

/// Splits `s3://bucket/some/prefix` into `("bucket", "some/prefix")`.
///
/// The prefix loses its leading and trailing slashes and may be empty
/// (`s3://bucket` and `s3://bucket/` both name the whole bucket). The error
/// is one sentence that names the URI and what is wrong with it.
///
/// ```
/// use weir_s3::parse_s3_uri;
///
/// assert_eq!(parse_s3_uri("s3://weir/checkpoints/").unwrap(), ("weir".into(), "checkpoints".into()));
/// assert_eq!(parse_s3_uri("s3://weir").unwrap(), ("weir".into(), "".into()));
/// assert!(parse_s3_uri("file:///tmp/chk").is_err());
/// ```
pub fn parse_s3_uri(uri: &str) -> Result<(String, String), String> {
    let rest = uri
        .strip_prefix("s3://")
        .ok_or_else(|| format!("`{uri}` is not an S3 URI: it must look like s3://bucket/prefix"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("`{uri}` names no bucket: it must look like s3://bucket/prefix"));
    }
    check_bucket_name(bucket).map_err(|e| format!("`{uri}`: {e}"))?;
    let prefix = prefix.trim_matches('/');
    if prefix.contains("//") {
        return Err(format!("`{uri}` has an empty path segment (`//`) in its prefix"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// Checks S3's bucket naming rules, so a typo fails here with a clear message
/// instead of as a signing or DNS error from the service.
pub(crate) fn check_bucket_name(bucket: &str) -> Result<(), String> {
    let ok_chars = bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ok_ends = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len()) && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(format!(
            "bucket name `{bucket}` is not valid: S3 bucket names are 3 to 63 lowercase letters, digits, dots \
             and hyphens, beginning and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(uri: &str) -> (String, String) {
        parse_s3_uri(uri).unwrap()
    }

    fn err(uri: &str) -> String {
        parse_s3_uri(uri).unwrap_err()
    }

    #[test]
    fn splits_bucket_and_prefix() {
        assert_eq!(ok("s3://weir/checkpoints"), ("weir".into(), "checkpoints".into()));
        assert_eq!(ok("s3://weir/a/b/c/"), ("weir".into(), "a/b/c".into()));
        assert_eq!(ok("s3://weir.data-1/x"), ("weir.data-1".into(), "x".into()));
    }

    #[test]
    fn a_bare_bucket_has_an_empty_prefix() {
        assert_eq!(ok("s3://weir"), ("weir".into(), "".into()));
        assert_eq!(ok("s3://weir/"), ("weir".into(), "".into()));
    }

    #[test]
    fn rejects_other_schemes() {
        for uri in ["file:///tmp/x", "/tmp/x", "S3://weir/x", "s3:/weir/x", "s3a://weir/x", ""] {
            assert!(err(uri).contains("is not an S3 URI"), "{uri}: {}", err(uri));
        }
    }

    #[test]
    fn rejects_a_missing_bucket() {
        assert!(err("s3://").contains("names no bucket"));
        assert!(err("s3:///checkpoints").contains("names no bucket"));
    }

    #[test]
    fn rejects_invalid_bucket_names() {
        for bucket in ["ab", "Weir", "weir_data", "-weir", "weir-", &"a".repeat(64)] {
            let e = err(&format!("s3://{bucket}/x"));
            assert!(e.contains(&format!("bucket name `{bucket}` is not valid")), "{e}");
        }
    }

    #[test]
    fn rejects_empty_path_segments() {
        assert!(err("s3://weir/a//b").contains("empty path segment"));
    }
}
