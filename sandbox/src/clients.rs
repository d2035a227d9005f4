//! AWS SDK clients pointed at sandbox endpoints: static test credentials, an endpoint override,
//! `BehaviorVersion::latest()`, and timeouts/retries that tests can shorten.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};

/// Timeouts and retries of a sandbox SDK client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed for one attempt (request + response); `None` for no limit.
    pub attempt_timeout: Option<Duration>,
    /// Time allowed for a whole operation including retries; `None` for no limit.
    pub operation_timeout: Option<Duration>,
    /// Attempts per operation (1 = no retry).
    pub max_attempts: u32,
}

impl Default for ClientOptions {
    /// Close to the SDK's defaults but bounded: 1 s connect, 10 s per attempt, 30 s per
    /// operation, 3 attempts.
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Some(Duration::from_secs(10)),
            operation_timeout: Some(Duration::from_secs(30)),
            max_attempts: 3,
        }
    }
}

impl ClientOptions {
    /// Short timeouts for fault tests: 250 ms connect, 500 ms per attempt, 1.5 s per operation,
    /// a single attempt.
    pub fn short() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_millis(250),
            attempt_timeout: Some(Duration::from_millis(500)),
            operation_timeout: Some(Duration::from_millis(1500)),
            max_attempts: 1,
        }
    }

    /// The same options with another attempt count.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }
}

/// The static credentials every sandbox client uses (`test`/`test`).
pub fn test_credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "ferry-sandbox")
}

/// An `SdkConfig` for any AWS SDK client talking to `endpoint` (an `http://127.0.0.1:PORT` URL)
/// as `region`.
pub fn sdk_config(endpoint: &str, region: &str, options: &ClientOptions) -> SdkConfig {
    let mut timeouts = TimeoutConfig::builder().connect_timeout(options.connect_timeout);
    if let Some(t) = options.attempt_timeout {
        timeouts = timeouts.operation_attempt_timeout(t);
    }
    if let Some(t) = options.operation_timeout {
        timeouts = timeouts.operation_timeout(t);
    }
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(test_credentials()))
        .timeout_config(timeouts.build())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(options.max_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(500)),
        )
        .build()
}

/// A DynamoDB client for `endpoint` as `region`, with [`ClientOptions::default`].
pub fn dynamodb_client(endpoint: &str, region: &str) -> aws_sdk_dynamodb::Client {
    dynamodb_client_with(endpoint, region, &ClientOptions::default())
}

/// A DynamoDB client for `endpoint` as `region`, with the given options.
pub fn dynamodb_client_with(
    endpoint: &str,
    region: &str,
    options: &ClientOptions,
) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config(endpoint, region, options))
}

/// A DynamoDB Streams client for `endpoint` as `region`, with the given options.
pub fn streams_client_with(
    endpoint: &str,
    region: &str,
    options: &ClientOptions,
) -> aws_sdk_dynamodbstreams::Client {
    aws_sdk_dynamodbstreams::Client::new(&sdk_config(endpoint, region, options))
}

/// An SQS client for `endpoint` as `region`, with the given options.
pub fn sqs_client_with(
    endpoint: &str,
    region: &str,
    options: &ClientOptions,
) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config(endpoint, region, options))
}
