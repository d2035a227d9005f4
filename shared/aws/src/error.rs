//! One classification of AWS failures, because the drain's and enqueue's reactions depend on it:
//! transport and throttling are retried and never poison anything; invalid input is the record's
//! own fault.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused, timeouts, 5xx after the SDK's retries: the endpoint is not answering.
    Transport,
    /// Throttled after the SDK's retries: slow down, retry later.
    Throttled,
    /// The request was rejected for its content (validation, item too large): the record's fault.
    Invalid,
    /// Anything else (access denied, missing table, …): a configuration problem.
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{operation}: {kind:?}: {message}")]
pub struct AwsError {
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub code: Option<String>,
    pub message: String,
}

impl AwsError {
    pub fn is_transport(&self) -> bool {
        self.kind == ErrorKind::Transport
    }
}

const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestThrottled",
    "KMSThrottlingException",
    // Another request (a transaction) holds the item for a moment: retried like throttling.
    "TransactionConflictException",
];

const INVALID: &[&str] = &[
    "ValidationException",
    "InvalidParameterValue",
    "InvalidMessageContents",
    "InvalidParameterValueException",
    "ItemCollectionSizeLimitExceededException",
    "AWS.SimpleQueueService.BatchRequestTooLong",
];

pub fn classify_sdk_error<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (kind, code, message) = match err {
        SdkError::DispatchFailure(e) => (ErrorKind::Transport, None, format!("{e:?}")),
        SdkError::TimeoutError(_) => (ErrorKind::Transport, None, "timed out".to_string()),
        SdkError::ResponseError(e) => (ErrorKind::Transport, None, format!("{e:?}")),
        SdkError::ServiceError(e) => {
            let se = e.err();
            let code = se.code().map(str::to_string);
            let message = se.message().unwrap_or_default().to_string();
            let kind = kind_of(code.as_deref(), e.raw().status().is_server_error());
            (kind, code, message)
        }
        other => (ErrorKind::Other, None, format!("{other}")),
    };
    AwsError {
        operation,
        kind,
        code,
        message,
    }
}

/// The kind of a service error, from its code and whether the status was a 5xx.
pub fn kind_of(code: Option<&str>, server_error: bool) -> ErrorKind {
    match code {
        Some(c) if THROTTLING.contains(&c) => ErrorKind::Throttled,
        Some(c) if INVALID.contains(&c) => ErrorKind::Invalid,
        _ if server_error => ErrorKind::Transport,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_conflict_is_retried_like_throttling() {
        let kind = kind_of(Some("TransactionConflictException"), false);
        assert_eq!(kind, ErrorKind::Throttled);
    }

    #[test]
    fn kinds_by_code_then_status() {
        assert_eq!(
            kind_of(Some("ValidationException"), false),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind_of(Some("AccessDeniedException"), false),
            ErrorKind::Other
        );
        assert_eq!(
            kind_of(Some("InternalServerError"), true),
            ErrorKind::Transport
        );
        assert_eq!(kind_of(None, true), ErrorKind::Transport);
    }
}
