//! Building SDK clients: one shared config, per-region clients, optional endpoint override
//! (emulators, VPC endpoints) and optional role assumption for a destination in another account.

use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::time::Duration;

/// How to reach one region's services.
#[derive(Clone, Debug, Default)]
pub struct ClientSettings {
    pub region: String,
    /// DynamoDB endpoint override (emulator, VPC endpoint).
    pub dynamodb_endpoint: Option<String>,
    /// SQS endpoint override.
    pub sqs_endpoint: Option<String>,
    /// STS endpoint override (for role assumption against an emulator).
    pub sts_endpoint: Option<String>,
    /// IAM endpoint override (`ferry doctor`'s reads of the drain's role; feature `stack`).
    pub iam_endpoint: Option<String>,
    /// A role to assume for this region's table (a destination in another account).
    pub role_arn: Option<String>,
    /// Per-attempt timeout; a hanging endpoint must fail fast, not stall the function.
    pub attempt_timeout: Option<Duration>,
    pub operation_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    /// SDK retry attempts (standard mode); `None` keeps the SDK's default (3).
    pub max_attempts: Option<u32>,
}

/// The clients of one region.
#[derive(Clone, Debug)]
pub struct Clients {
    pub region: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
}

/// The base config from the default credential chain (environment, profile, Lambda role), with
/// [`https_client`].
pub async fn base_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
}

/// The HTTP(S) client of every Ferry SDK client: the SDK's own hyper/rustls client, with rustls
/// on *ring* rather than the SDK default's aws-lc-rs — the same protocol stack, a much smaller
/// Lambda bootstrap (BENCHMARKS.md, bootstrap sizes). Trusted roots are the system's, as with
/// the default client.
pub fn https_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

impl ClientSettings {
    pub fn new(region: impl Into<String>) -> Self {
        ClientSettings {
            region: region.into(),
            ..Default::default()
        }
    }

    fn timeouts(&self) -> TimeoutConfig {
        let mut t = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout.unwrap_or(Duration::from_millis(3100)));
        if let Some(a) = self.attempt_timeout {
            t = t.operation_attempt_timeout(a);
        }
        if let Some(o) = self.operation_timeout {
            t = t.operation_timeout(o);
        }
        t.build()
    }

    fn retry(&self) -> aws_config::retry::RetryConfig {
        let r = aws_config::retry::RetryConfig::standard();
        match self.max_attempts {
            Some(n) => r.with_max_attempts(n),
            None => r,
        }
    }

    /// The credentials for this region's table: the role, assumed from the base credentials, or
    /// the base credentials themselves.
    pub async fn table_config(&self, base: &SdkConfig) -> SdkConfig {
        let region = Region::new(self.region.clone());
        let Some(role) = &self.role_arn else {
            return base.clone();
        };
        let mut sts_config = base.to_builder().region(region.clone());
        if let Some(e) = &self.sts_endpoint {
            sts_config = sts_config.endpoint_url(e);
        }
        let provider = AssumeRoleProvider::builder(role)
            .session_name("ferry")
            .region(region)
            .configure(&sts_config.build())
            .build()
            .await;
        base.to_builder()
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                provider,
            ))
            .build()
    }

    pub async fn dynamodb(&self, base: &SdkConfig) -> aws_sdk_dynamodb::Client {
        let config = self.table_config(base).await;
        let mut b = aws_sdk_dynamodb::config::Builder::from(&config)
            .region(Region::new(self.region.clone()))
            .timeout_config(self.timeouts())
            .retry_config(self.retry());
        if let Some(e) = &self.dynamodb_endpoint {
            b = b.endpoint_url(e);
        }
        aws_sdk_dynamodb::Client::from_conf(b.build())
    }

    pub fn sqs(&self, base: &SdkConfig) -> aws_sdk_sqs::Client {
        let mut b = aws_sdk_sqs::config::Builder::from(base)
            .region(Region::new(self.region.clone()))
            .timeout_config(self.timeouts())
            .retry_config(self.retry());
        if let Some(e) = &self.sqs_endpoint {
            b = b.endpoint_url(e);
        }
        aws_sdk_sqs::Client::from_conf(b.build())
    }

    pub fn lambda(&self, base: &SdkConfig) -> aws_sdk_lambda::Client {
        let b = aws_sdk_lambda::config::Builder::from(base)
            .region(Region::new(self.region.clone()))
            .timeout_config(self.timeouts())
            .retry_config(self.retry());
        aws_sdk_lambda::Client::from_conf(b.build())
    }

    /// IAM and STS clients with this region's credentials (its role, if any), for reading a
    /// role's policies. IAM is global: the region only picks the partition's endpoint.
    #[cfg(feature = "stack")]
    pub async fn iam(&self, base: &SdkConfig) -> crate::iam::Iam {
        let config = self.table_config(base).await;
        let region = Region::new(self.region.clone());
        // The SDK crates here come without an HTTP client of their own (the lean build).
        let http = base.http_client().is_none().then(https_client);
        let mut iam = aws_sdk_iam::config::Builder::from(&config)
            .region(region.clone())
            .timeout_config(self.timeouts())
            .retry_config(self.retry());
        let mut sts = aws_sdk_sts::config::Builder::from(&config)
            .region(region)
            .timeout_config(self.timeouts())
            .retry_config(self.retry());
        if let Some(h) = http {
            iam = iam.http_client(h.clone());
            sts = sts.http_client(h);
        }
        if let Some(e) = &self.iam_endpoint {
            iam = iam.endpoint_url(e);
        }
        if let Some(e) = &self.sts_endpoint {
            sts = sts.endpoint_url(e);
        }
        crate::iam::Iam {
            iam: aws_sdk_iam::Client::from_conf(iam.build()),
            sts: aws_sdk_sts::Client::from_conf(sts.build()),
        }
    }

    pub async fn clients(&self, base: &SdkConfig) -> Clients {
        Clients {
            region: self.region.clone(),
            dynamodb: self.dynamodb(base).await,
            sqs: self.sqs(base),
        }
    }
}
