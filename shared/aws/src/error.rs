//! One classification of AWS failures, because the drain's and enqueue's reactions depend on it:
//! transport and throttling are retried and never poison anything; invalid input is the record's
//! own fault; an identity failure (no, expired or refused credentials, access denied) is an
//! access problem, not an unreachable endpoint.

use aws_credential_types::provider::error::{CredentialsError, TokenError};
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::error::Error as StdError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused, timeouts, 5xx after the SDK's retries: the endpoint is not answering.
    Transport,
    /// Throttled after the SDK's retries: slow down, retry later.
    Throttled,
    /// The request was rejected for its content (validation, item too large): the record's fault.
    Invalid,
    /// No credentials, credentials that could not be had (SSO session, `credential_process`,
    /// an assumed role) or that were refused, or access denied: who is calling, not the endpoint.
    Identity,
    /// Anything else (missing table or queue, …): a configuration problem.
    Other,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Transport => "no answer (transport)",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Invalid => "rejected request",
            ErrorKind::Identity => "identity (credentials or access)",
            ErrorKind::Other => "error",
        })
    }
}

/// `operation: kind: [code: ]message[ (fix)]`; `message` starts with the region and resource
/// where the caller named them ([`AwsError::context`]).
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {kind}: {}{message}{}", code_prefix(code), fix_suffix(*kind, code.as_deref()))]
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

    pub fn is_identity(&self) -> bool {
        self.kind == ErrorKind::Identity
    }

    /// The same error with where it happened (`"eu-west-1 table orders"`) in front of its message.
    pub fn context(mut self, place: impl std::fmt::Display) -> Self {
        self.message = format!("{place}: {}", self.message);
        self
    }

    /// What to change, where the kind or code says it.
    pub fn fix(&self) -> Option<&'static str> {
        fix_for(self.kind, self.code.as_deref())
    }
}

fn code_prefix(code: &Option<String>) -> String {
    code.as_deref()
        .map(|c| format!("{c}: "))
        .unwrap_or_default()
}

fn fix_suffix(kind: ErrorKind, code: Option<&str>) -> String {
    fix_for(kind, code)
        .map(|f| format!(" (fix: {f})"))
        .unwrap_or_default()
}

/// The usual fix for an error of this kind and code, if there is one to name.
pub fn fix_for(kind: ErrorKind, code: Option<&str>) -> Option<&'static str> {
    match (kind, code) {
        (ErrorKind::Identity, Some(c)) if c.starts_with("Expired") || c == "RequestExpired" => {
            Some("the credentials expired: sign in again (`aws sso login --profile …`) or renew the session")
        }
        (ErrorKind::Identity, Some(c)) if c.starts_with("AccessDenied") => Some(
            "grant this identity the action on the resource (the role's policy), or use --profile / --role-arn for one that has it",
        ),
        (ErrorKind::Identity, Some(_)) => Some(
            "the credentials are not valid in this account/region: check the profile, the access key, or the role's trust policy",
        ),
        (ErrorKind::Identity, None) => Some(
            "no credentials could be loaded: set AWS_PROFILE or --profile (run `aws sso login` for an SSO profile), or check the role to assume",
        ),
        (_, Some("ResourceNotFoundException")) => {
            Some("check the table name and region (--table REGION=NAME, --stack)")
        }
        (_, Some(c)) if c.contains("NonExistentQueue") || c == "QueueDoesNotExist" => {
            Some("check the queue name and region (the stack's outputs, --stack)")
        }
        (ErrorKind::Transport, _) => {
            Some("check the region's endpoint and the network path to it")
        }
        _ => None,
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

/// Answers about who is calling: refused, unknown or expired credentials, or no permission.
const IDENTITY: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "UnrecognizedClient",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "AuthFailure",
    "RequestExpired",
    "AWS.SimpleQueueService.AccessDenied",
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
        SdkError::DispatchFailure(e) => {
            let kind = if e
                .as_connector_error()
                .is_some_and(|c| caused_by_credentials(c))
            {
                ErrorKind::Identity
            } else {
                ErrorKind::Transport
            };
            (kind, None, DisplayErrorContext(err).to_string())
        }
        SdkError::TimeoutError(_) => (ErrorKind::Transport, None, "timed out".to_string()),
        SdkError::ResponseError(_) => (
            ErrorKind::Transport,
            None,
            DisplayErrorContext(err).to_string(),
        ),
        SdkError::ServiceError(e) => {
            let se = e.err();
            let code = se.code().map(str::to_string);
            let message = se.message().unwrap_or_default().to_string();
            let kind = kind_of(code.as_deref(), e.raw().status().is_server_error());
            (kind, code, message)
        }
        other => (
            ErrorKind::Other,
            None,
            DisplayErrorContext(other).to_string(),
        ),
    };
    AwsError {
        operation,
        kind,
        code,
        message,
    }
}

/// Whether a failure to send came from resolving credentials (the SDK reports those as
/// dispatch failures: nothing was sent), found anywhere in its chain of sources.
pub fn caused_by_credentials(e: &(dyn StdError + 'static)) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(cause) = next {
        if cause.is::<CredentialsError>() || cause.is::<TokenError>() {
            return true;
        }
        next = cause.source();
    }
    false
}

/// The kind of a service error, from its code and whether the status was a 5xx.
pub fn kind_of(code: Option<&str>, server_error: bool) -> ErrorKind {
    match code {
        Some(c) if THROTTLING.contains(&c) => ErrorKind::Throttled,
        Some(c) if IDENTITY.contains(&c) => ErrorKind::Identity,
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
            kind_of(Some("ResourceNotFoundException"), false),
            ErrorKind::Other
        );
        assert_eq!(
            kind_of(Some("InternalServerError"), true),
            ErrorKind::Transport
        );
        assert_eq!(kind_of(None, true), ErrorKind::Transport);
    }

    #[test]
    fn identity_answers_are_their_own_kind() {
        for code in [
            "AccessDeniedException",
            "AccessDenied",
            "UnrecognizedClientException",
            "ExpiredTokenException",
            "ExpiredToken",
            "InvalidClientTokenId",
        ] {
            assert_eq!(kind_of(Some(code), false), ErrorKind::Identity, "{code}");
        }
    }

    fn error(kind: ErrorKind, code: Option<&str>) -> AwsError {
        AwsError {
            operation: "PutItem",
            kind,
            code: code.map(str::to_string),
            message: "refused".into(),
        }
    }

    #[test]
    fn an_error_names_where_and_the_fix() {
        let e = error(ErrorKind::Identity, Some("ExpiredTokenException"))
            .context("eu-west-1 table orders");
        let text = e.to_string();
        assert!(text.starts_with("PutItem: identity (credentials or access): ExpiredTokenException: eu-west-1 table orders: refused"), "{text}");
        assert!(text.contains("aws sso login"), "{text}");
        let e = error(ErrorKind::Identity, Some("AccessDeniedException"));
        assert!(e.to_string().contains("role's policy"), "{e}");
        let e = error(
            ErrorKind::Other,
            Some("AWS.SimpleQueueService.NonExistentQueue"),
        );
        assert!(
            e.to_string().contains("check the queue name and region"),
            "{e}"
        );
        assert_eq!(
            error(ErrorKind::Invalid, Some("ValidationException")).fix(),
            None
        );
    }

    /// A client whose credentials provider fails, against an address nothing listens on: the
    /// failure is who is calling (nothing was sent), not the endpoint.
    #[tokio::test]
    async fn a_credentials_failure_is_identity_not_transport() {
        use aws_credential_types::provider::{future, ProvideCredentials};
        #[derive(Debug)]
        struct NoCredentials;
        impl ProvideCredentials for NoCredentials {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
                    "the SSO session has expired",
                )))
            }
        }
        let e = describe(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            NoCredentials,
        ))
        .await;
        assert_eq!(e.kind, ErrorKind::Identity, "{e}");
        assert!(e.to_string().contains("the SSO session has expired"), "{e}");
        assert!(e.to_string().contains("--profile"), "{e}");
        let e = describe(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::for_tests(),
        ))
        .await;
        assert_eq!(e.kind, ErrorKind::Transport, "{e}");
    }

    /// A role that cannot be assumed (STS not answering here) is an identity failure of the
    /// table's calls: a drain with a wrong cross-account role is not "destination unreachable".
    #[tokio::test]
    async fn a_role_that_cannot_be_assumed_is_identity() {
        let mut s = crate::ClientSettings::new("eu-west-1");
        s.role_arn = Some("arn:aws:iam::123456789012:role/ferry-drain".into());
        s.sts_endpoint = Some(closed_endpoint());
        s.dynamodb_endpoint = Some(closed_endpoint());
        s.max_attempts = Some(1);
        let base = base(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::for_tests(),
        ))
        .await;
        let client = s.dynamodb(&base).await;
        let e = crate::Table::new(client, "orders")
            .ping()
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Identity, "{e}");
    }

    fn closed_endpoint() -> String {
        // Bound then dropped: a loopback port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        format!("http://127.0.0.1:{port}")
    }

    async fn base(
        credentials: aws_sdk_dynamodb::config::SharedCredentialsProvider,
    ) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .http_client(crate::clients::https_client())
            .credentials_provider(credentials)
            .load()
            .await
    }

    async fn describe(
        credentials: aws_sdk_dynamodb::config::SharedCredentialsProvider,
    ) -> AwsError {
        let mut s = crate::ClientSettings::new("eu-west-1");
        s.dynamodb_endpoint = Some(closed_endpoint());
        s.max_attempts = Some(1);
        let client = s.dynamodb(&base(credentials).await).await;
        match crate::Table::new(client, "orders").ping().await {
            Ok(()) => panic!("a closed port answered"),
            Err(e) => e,
        }
    }
}
