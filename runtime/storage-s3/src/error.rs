//! From the SDK's errors to [`StorageError`]: a missing object becomes
//! `NotFound`, anything else `Failed` with a message that names the object's
//! `s3://` URI, the operation, and what the service said (its error code and
//! message, HTTP status and request id) or why no answer came (connection
//! refused, timeout, credentials), with the SDK error attached as the source.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use weir_core::checkpoint::storage::StorageError;

/// Maps the failure of S3 operation `operation` (`"GetObject"`, ...) on the
/// object named `uri`.
pub(crate) fn storage_error<E>(uri: &str, operation: &str, err: SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    if is_not_found(err.code(), status) {
        return StorageError::NotFound { path: uri.to_string() };
    }
    let message = match (&err, err.code()) {
        (SdkError::ServiceError(_), Some(code)) => {
            let mut m = format!("{operation} failed: {code}");
            if let Some(text) = err.message() {
                m.push_str(&format!(": {text}"));
            }
            m.push_str(&details(status, err.request_id()));
            m
        }
        // No error code: a bodiless answer (HEAD), a transport failure or a
        // client-side one. The context chain says which.
        _ => format!("{operation} failed: {}{}", DisplayErrorContext(&err), details(status, err.request_id())),
    };
    StorageError::Failed { path: uri.to_string(), message, source: Some(Box::new(err)) }
}

/// Whether an error means "no such object".
///
/// `NoSuchKey` is what GET says; a HEAD answer has no body, so its 404 comes
/// without a code (or the SDK's generic `NotFound`). Other 404 codes, above all
/// `NoSuchBucket`, are misconfiguration and must not look like a missing
/// checkpoint, or `--restore latest` would quietly start afresh.
pub(crate) fn is_not_found(code: Option<&str>, status: Option<u16>) -> bool {
    match code {
        Some("NoSuchKey" | "NotFound") => true,
        Some(_) => false,
        None => status == Some(404),
    }
}

/// What went wrong, without the path.
pub(crate) fn message(e: &StorageError) -> String {
    match e {
        StorageError::NotFound { .. } => "not found".to_string(),
        StorageError::Failed { message, .. } => message.clone(),
    }
}

/// `e` with `note` appended to its message.
pub(crate) fn with_note(e: StorageError, note: String) -> StorageError {
    match e {
        StorageError::Failed { path, message, source } => {
            StorageError::Failed { path, message: format!("{message}; {note}"), source }
        }
        StorageError::NotFound { path } => {
            StorageError::Failed { message: format!("not found; {note}"), path, source: None }
        }
    }
}

fn details(status: Option<u16>, request_id: Option<&str>) -> String {
    match (status, request_id) {
        (Some(s), Some(id)) => format!(" (HTTP {s}, request id {id})"),
        (Some(s), None) => format!(" (HTTP {s})"),
        (None, Some(id)) => format!(" (request id {id})"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_is_not_found() {
        assert!(is_not_found(Some("NoSuchKey"), Some(404)));
        assert!(is_not_found(Some("NotFound"), Some(404)));
        assert!(is_not_found(None, Some(404)));
    }

    #[test]
    fn a_missing_bucket_or_other_failure_is_not_not_found() {
        assert!(!is_not_found(Some("NoSuchBucket"), Some(404)));
        assert!(!is_not_found(Some("NoSuchUpload"), Some(404)));
        assert!(!is_not_found(Some("AccessDenied"), Some(403)));
        assert!(!is_not_found(None, Some(500)));
        assert!(!is_not_found(None, None));
    }
}
