//! The function's environment: its configuration, read through a lookup (so tests need no
//! process-wide environment).

use ferry_aws::emf::Metrics;
use ferry_aws::env::{Env, VariableError};
use ferry_core::{Config, ConfigError};
use std::collections::BTreeSet;
use std::time::Duration;

/// Default bound on `reconcile` rounds for one record (each extra round means the item changed
/// between the read and the conditional write, i.e. a newer write with its own record).
pub const DEFAULT_MAX_RECONCILE_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Variable(#[from] VariableError),
    #[error("FERRY_BUFFERS entry `{0}` is not `region=queue_url`")]
    BadBuffer(String),
    #[error("FERRY_BUFFERS names region `{0}` twice")]
    DuplicateBuffer(String),
    #[error("FERRY_BUFFERS regions {buffers:?} do not match FERRY_DESTINATIONS {destinations:?}: every destination needs exactly one buffer")]
    DestinationsMismatch {
        destinations: Vec<String>,
        buffers: Vec<String>,
    },
}

/// Everything `main` needs to build the clients and the [`crate::Enqueuer`].
#[derive(Clone, Debug, PartialEq)]
pub struct EnqueueEnv {
    /// The core's shared settings (`Config::from_lookup`).
    pub config: Config,
    /// `FERRY_TABLE`: the local table.
    pub table: String,
    /// `FERRY_BUFFERS`: destination region → buffer queue URL (queues in the local region).
    pub buffers: Vec<(String, String)>,
    /// `FERRY_DYNAMODB_ENDPOINT`, `FERRY_SQS_ENDPOINT`: overrides for emulators.
    pub dynamodb_endpoint: Option<String>,
    pub sqs_endpoint: Option<String>,
    /// `FERRY_MAX_RECONCILE_ATTEMPTS` (default 5).
    pub max_reconcile_attempts: u32,
    /// `FERRY_ATTEMPT_TIMEOUT_MS` (default 3000) and `FERRY_OPERATION_TIMEOUT_MS` (default
    /// 10000): a hanging endpoint must fail the call well before the function's own timeout, so
    /// the handler can still answer with `batchItemFailures` instead of being killed.
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    /// Where the EMF lines go: `FERRY_METRICS_NAMESPACE` (default `Ferry`), dimension
    /// `TableName`.
    pub metrics: Metrics,
}

impl EnqueueEnv {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let env = Env::new(lookup);
        let config = env.config()?;
        let table = env.required("FERRY_TABLE")?;
        let buffers = parse_buffers(&env.get("FERRY_BUFFERS").unwrap_or_default())?;
        check_destinations(&config, &buffers)?;
        Ok(EnqueueEnv {
            metrics: Metrics::from_env(&env, &table)
                .property("Function", "enqueue")
                .property("SourceRegion", &config.local_region),
            table,
            buffers,
            dynamodb_endpoint: env.get("FERRY_DYNAMODB_ENDPOINT"),
            sqs_endpoint: env.get("FERRY_SQS_ENDPOINT"),
            max_reconcile_attempts: env
                .number(
                    "FERRY_MAX_RECONCILE_ATTEMPTS",
                    DEFAULT_MAX_RECONCILE_ATTEMPTS.into(),
                )?
                .clamp(1, 100) as u32,
            attempt_timeout: env.millis("FERRY_ATTEMPT_TIMEOUT_MS", 3000)?,
            operation_timeout: env.millis("FERRY_OPERATION_TIMEOUT_MS", 10_000)?,
            config,
        })
    }
}

/// Parses `region=queue_url,region=queue_url` (whitespace around entries ignored).
pub fn parse_buffers(text: &str) -> Result<Vec<(String, String)>, EnvError> {
    let mut seen = BTreeSet::new();
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (region, url) = entry
                .split_once('=')
                .map(|(r, u)| (r.trim(), u.trim()))
                .filter(|(r, u)| !r.is_empty() && !u.is_empty())
                .ok_or_else(|| EnvError::BadBuffer(entry.to_string()))?;
            if !seen.insert(region.to_string()) {
                return Err(EnvError::DuplicateBuffer(region.to_string()));
            }
            Ok((region.to_string(), url.to_string()))
        })
        .collect()
}

/// Every configured destination has exactly one buffer and no buffer goes elsewhere: a missing
/// buffer would silently leave a region behind.
pub fn check_destinations<T>(config: &Config, buffers: &[(String, T)]) -> Result<(), EnvError> {
    let destinations: BTreeSet<&str> = config.destinations.iter().map(String::as_str).collect();
    let regions: BTreeSet<&str> = buffers.iter().map(|(r, _)| r.as_str()).collect();
    if destinations != regions || regions.len() != buffers.len() {
        return Err(EnvError::DestinationsMismatch {
            destinations: config.destinations.clone(),
            buffers: buffers.iter().map(|(r, _)| r.clone()).collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("AWS_REGION", "us-east-1"),
        ("FERRY_PARTITION_KEY", "pk"),
        ("FERRY_TABLE", "orders"),
        ("FERRY_DESTINATIONS", "eu-west-1,ap-southeast-2"),
        (
            "FERRY_BUFFERS",
            "eu-west-1=https://sqs.us-east-1.amazonaws.com/1/to-eu , ap-southeast-2=https://sqs.us-east-1.amazonaws.com/1/to-ap",
        ),
    ];

    fn with(extra: &[(&str, &str)]) -> Result<EnqueueEnv, EnvError> {
        let mut pairs: Vec<(&str, &str)> = BASE.to_vec();
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            pairs.push((k, v));
        }
        EnqueueEnv::from_lookup(env(&pairs))
    }

    #[test]
    fn reads_the_environment() {
        let s = with(&[("FERRY_SQS_ENDPOINT", "http://127.0.0.1:5000")]).expect("valid");
        assert_eq!(s.table, "orders");
        assert_eq!(s.config.local_region, "us-east-1");
        assert_eq!(
            s.buffers,
            vec![
                (
                    "eu-west-1".to_string(),
                    "https://sqs.us-east-1.amazonaws.com/1/to-eu".to_string()
                ),
                (
                    "ap-southeast-2".to_string(),
                    "https://sqs.us-east-1.amazonaws.com/1/to-ap".to_string()
                ),
            ]
        );
        assert_eq!(s.sqs_endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(s.dynamodb_endpoint, None);
        assert_eq!(s.max_reconcile_attempts, DEFAULT_MAX_RECONCILE_ATTEMPTS);
        assert_eq!(s.metrics.namespace, "Ferry");
        assert_eq!(
            s.metrics.dimensions,
            vec![("TableName", "orders".to_string())]
        );
        let named = with(&[("FERRY_METRICS_NAMESPACE", "Orders")]).expect("valid");
        assert_eq!(named.metrics.namespace, "Orders");
    }

    #[test]
    fn rejects_what_would_lose_a_region() {
        assert!(matches!(
            with(&[("FERRY_BUFFERS", "eu-west-1=https://q/1")]),
            Err(EnvError::DestinationsMismatch { .. })
        ));
        assert!(matches!(
            with(&[("FERRY_BUFFERS", "eu-west-1=a,eu-west-1=b,ap-southeast-2=c")]),
            Err(EnvError::DuplicateBuffer(_))
        ));
        assert!(matches!(
            with(&[("FERRY_BUFFERS", "eu-west-1")]),
            Err(EnvError::BadBuffer(_))
        ));
        assert_eq!(
            with(&[("FERRY_TABLE", " ")]),
            Err(EnvError::Variable(VariableError::Missing("FERRY_TABLE")))
        );
        assert!(matches!(
            with(&[("FERRY_FILTER", "nonsense")]),
            Err(EnvError::Config(ConfigError::BadFilter(_)))
        ));
        assert!(matches!(
            with(&[("FERRY_ATTEMPT_TIMEOUT_MS", "soon")]),
            Err(EnvError::Variable(VariableError::Bad { .. }))
        ));
    }
}
