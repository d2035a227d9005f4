//! The drain's environment: the shared core settings (`Config::from_lookup`) plus the pair it
//! drains, its endpoints and its pacing. Parsed through a lookup function so it is tested
//! without touching the process environment.

use crate::fanout::{LambdaWorkers, NoWorkers, StartWorkers};
use crate::settings::DrainSettings;
use crate::Drainer;
use aws_config::SdkConfig;
use ferry_aws::emf::{Metrics, RECEIVING_REGION};
use ferry_aws::env::{Env, VariableError};
use ferry_aws::{Buffer, ClientSettings, Function, Table};
use ferry_core::{Clock, Config, ConfigError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Variable(#[from] VariableError),
    #[error("the destination region {0} is the source region: a buffer drains to another region")]
    SameRegion(String),
}

/// Everything `main.rs` reads from the environment.
#[derive(Clone, Debug)]
pub struct DrainEnv {
    pub config: Config,
    /// `FERRY_SOURCE_REGION` (default: the core config's local region). The buffer and the DLQ
    /// live there.
    pub source_region: String,
    /// `FERRY_DESTINATION_REGION`, `FERRY_DESTINATION_TABLE`.
    pub destination_region: String,
    pub destination_table: String,
    /// `FERRY_BUFFER_URL`, `FERRY_DLQ_URL`.
    pub buffer_url: String,
    pub dlq_url: String,
    /// `FERRY_DESTINATION_ROLE_ARN`: assumed (STS) to write a table in another account.
    pub destination_role_arn: Option<String>,
    /// `FERRY_DYNAMODB_ENDPOINT`, `FERRY_SQS_ENDPOINT`, `FERRY_STS_ENDPOINT`: overrides for
    /// emulators and VPC endpoints.
    pub dynamodb_endpoint: Option<String>,
    pub sqs_endpoint: Option<String>,
    pub sts_endpoint: Option<String>,
    /// `FERRY_DESTINATION_CONNECT_TIMEOUT_MS` (1000), `FERRY_DESTINATION_ATTEMPT_TIMEOUT_MS`
    /// (2000), `FERRY_DESTINATION_OPERATION_TIMEOUT_MS` (5000), `FERRY_DESTINATION_MAX_ATTEMPTS`
    /// (3): a hanging destination must fail a write in seconds, not stall the drain.
    pub destination_connect_timeout: Duration,
    pub destination_attempt_timeout: Duration,
    pub destination_operation_timeout: Duration,
    pub destination_max_attempts: u32,
    /// `FERRY_DRAIN_BUDGET_S` (70), `FERRY_MAX_IN_FLIGHT` (64), `FERRY_TAKE_MESSAGES` (10),
    /// `FERRY_TAKE_RECORDS` (2 000: a take's size in records, which bounds memory),
    /// `FERRY_TAKES_IN_FLIGHT` (2: the next take is received while one is applied/settled),
    /// `FERRY_RECEIVE_WAIT_S` (20), `FERRY_VISIBILITY_TIMEOUT_S` (budget + 30, at least 120),
    /// `FERRY_MAX_PENDING_ATTEMPTS` (0, the default: never dead-letter a pending record),
    /// `FERRY_MAX_DRAIN_CONCURRENCY` (1: workers a tick may run, itself included).
    pub settings: DrainSettings,
    /// Where the EMF lines go: `FERRY_METRICS_NAMESPACE` (default `Ferry`), dimensions
    /// `TableName` (`FERRY_TABLE`, the source table; default the destination table's name) and
    /// `ReceivingRegion` (the destination), like Global Tables' `ReplicationLatency`.
    pub metrics: Metrics,
    /// `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda): the function a tick invokes for its workers.
    pub function_name: Option<String>,
}

impl DrainEnv {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let env = Env::new(lookup);
        let config = env.config()?;
        let source_region = env
            .get("FERRY_SOURCE_REGION")
            .unwrap_or(config.local_region.clone());
        let destination_region = env.required("FERRY_DESTINATION_REGION")?;
        if destination_region == source_region {
            return Err(EnvError::SameRegion(destination_region));
        }
        let settings = drain_settings(&env)?;
        let destination_table = env.required("FERRY_DESTINATION_TABLE")?;
        let table = env.get("FERRY_TABLE");
        let metrics = Metrics::from_env(&env, table.as_deref().unwrap_or(&destination_table))
            .dimension(RECEIVING_REGION, &destination_region)
            .property("Function", "drain")
            .property("SourceRegion", &source_region);
        Ok(DrainEnv {
            metrics,
            source_region,
            destination_region,
            destination_table,
            buffer_url: env.required("FERRY_BUFFER_URL")?,
            dlq_url: env.required("FERRY_DLQ_URL")?,
            destination_role_arn: env.get("FERRY_DESTINATION_ROLE_ARN"),
            dynamodb_endpoint: env.get("FERRY_DYNAMODB_ENDPOINT"),
            sqs_endpoint: env.get("FERRY_SQS_ENDPOINT"),
            sts_endpoint: env.get("FERRY_STS_ENDPOINT"),
            destination_connect_timeout: env
                .millis("FERRY_DESTINATION_CONNECT_TIMEOUT_MS", 1000)?,
            destination_attempt_timeout: env
                .millis("FERRY_DESTINATION_ATTEMPT_TIMEOUT_MS", 2000)?,
            destination_operation_timeout: env
                .millis("FERRY_DESTINATION_OPERATION_TIMEOUT_MS", 5000)?,
            destination_max_attempts: env
                .number("FERRY_DESTINATION_MAX_ATTEMPTS", 3)?
                .clamp(1, 10) as u32,
            settings,
            config,
            function_name: env.get("AWS_LAMBDA_FUNCTION_NAME"),
        })
    }

    /// How to reach the destination table (with the role, if any).
    pub fn destination_client_settings(&self) -> ClientSettings {
        ClientSettings {
            region: self.destination_region.clone(),
            dynamodb_endpoint: self.dynamodb_endpoint.clone(),
            sts_endpoint: self.sts_endpoint.clone(),
            role_arn: self.destination_role_arn.clone(),
            connect_timeout: Some(self.destination_connect_timeout),
            attempt_timeout: Some(self.destination_attempt_timeout),
            operation_timeout: Some(self.destination_operation_timeout),
            max_attempts: Some(self.destination_max_attempts),
            ..ClientSettings::new(self.destination_region.clone())
        }
    }

    /// How to reach the buffer and the DLQ (source region). A receive's attempt may last its
    /// whole long poll, so the attempt timeout leaves room for it.
    pub fn buffer_client_settings(&self) -> ClientSettings {
        ClientSettings {
            sqs_endpoint: self.sqs_endpoint.clone(),
            connect_timeout: Some(Duration::from_secs(2)),
            attempt_timeout: Some(Duration::from_secs(
                self.settings.receive_wait_s.max(0) as u64 + 10,
            )),
            ..ClientSettings::new(self.source_region.clone())
        }
    }

    /// How a tick starts its workers: invokes of this same function when running in Lambda with
    /// `FERRY_MAX_DRAIN_CONCURRENCY` above 1; otherwise the tick drains alone.
    pub fn workers(&self, base: &SdkConfig) -> Box<dyn StartWorkers> {
        match &self.function_name {
            Some(name) if self.settings.max_workers > 1 => {
                let client = ClientSettings::new(self.source_region.clone()).lambda(base);
                Box::new(LambdaWorkers(Function::new(client, name.clone())))
            }
            _ => Box::new(NoWorkers),
        }
    }

    /// Builds the clients (the destination's credentials come from the role when one is set)
    /// and the drainer.
    pub async fn connect(self, base: &SdkConfig, clock: Clock) -> Drainer {
        let sqs = self.buffer_client_settings().sqs(base);
        let dynamodb = self.destination_client_settings().dynamodb(base).await;
        Drainer {
            buffer: Buffer::new(sqs.clone(), self.buffer_url),
            dlq: Buffer::new(sqs, self.dlq_url),
            table: Table::new(dynamodb, self.destination_table),
            config: self.config,
            source_region: self.source_region,
            destination_region: self.destination_region,
            settings: self.settings,
            clock,
            peer: Default::default(),
            waits: Default::default(),
        }
    }
}

/// The pacing knobs (`FERRY_DRAIN_BUDGET_S` and the rest listed on [`DrainEnv::settings`]).
fn drain_settings<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<DrainSettings, VariableError> {
    let budget = env
        .parsed(
            "FERRY_DRAIN_BUDGET_S",
            "a number of seconds in (0, 900]",
            |v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 900.0)
                    .map(Duration::from_secs_f64)
            },
        )?
        .unwrap_or(Duration::from_secs(70));
    let mut settings = DrainSettings::with_budget(budget);
    settings.max_in_flight = env.number("FERRY_MAX_IN_FLIGHT", 64)?.clamp(1, 4096) as usize;
    settings.take_messages = env.number("FERRY_TAKE_MESSAGES", 10)?.clamp(1, 1000) as usize;
    settings.take_records = env
        .number("FERRY_TAKE_RECORDS", settings.take_records as u64)?
        .max(1) as usize;
    settings.takes_in_flight = env.number("FERRY_TAKES_IN_FLIGHT", 2)?.clamp(1, 8) as usize;
    settings.receive_wait_s = env
        .number("FERRY_RECEIVE_WAIT_S", settings.receive_wait_s as u64)?
        .min(20) as i32;
    settings.visibility_timeout_s = env
        .number(
            "FERRY_VISIBILITY_TIMEOUT_S",
            settings.visibility_timeout_s as u64,
        )?
        .min(43_200) as i32;
    settings.retry.max_pending_attempts = env
        .number("FERRY_MAX_PENDING_ATTEMPTS", 0)?
        .min(u32::MAX as u64) as u32;
    settings.max_workers = env.number("FERRY_MAX_DRAIN_CONCURRENCY", 1)?.clamp(1, 1000) as u32;
    let max_receive_count = env.number("FERRY_BUFFER_MAX_RECEIVE_COUNT", 0)?;
    settings.max_receive_count =
        (max_receive_count > 0).then(|| max_receive_count.min(1000) as u32);
    // `FERRY_MAX_WCU`, `FERRY_DRAIN_SCHEDULE`: the write-rate cap and how ticks share it.
    crate::cap::read_env(env, &mut settings)?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(extra: &[(&str, &str)]) -> Result<DrainEnv, EnvError> {
        let mut map: HashMap<String, String> = [
            ("AWS_REGION", "us-east-1"),
            ("FERRY_PARTITION_KEY", "pk"),
            ("FERRY_DESTINATION_REGION", "eu-west-1"),
            ("FERRY_DESTINATION_TABLE", "orders"),
            ("FERRY_BUFFER_URL", "http://q/buffer"),
            ("FERRY_DLQ_URL", "http://q/dlq"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            map.insert(k.to_string(), v.to_string());
        }
        DrainEnv::from_lookup(move |k| map.get(k).cloned())
    }

    #[test]
    fn reads_the_pair_and_its_pacing() {
        let e = env(&[
            ("FERRY_DRAIN_BUDGET_S", "12.5"),
            ("FERRY_MAX_IN_FLIGHT", "128"),
            (
                "FERRY_DESTINATION_ROLE_ARN",
                "arn:aws:iam::210987654321:role/ferry",
            ),
            ("FERRY_DYNAMODB_ENDPOINT", "http://127.0.0.1:8000"),
        ])
        .expect("valid");
        assert_eq!(e.source_region, "us-east-1");
        assert_eq!(e.settings.budget, Duration::from_millis(12_500));
        assert_eq!(e.settings.max_in_flight, 128);
        let d = e.destination_client_settings();
        assert_eq!(d.region, "eu-west-1");
        assert_eq!(
            d.role_arn.as_deref(),
            Some("arn:aws:iam::210987654321:role/ferry")
        );
        assert_eq!(
            d.dynamodb_endpoint.as_deref(),
            Some("http://127.0.0.1:8000")
        );
        assert_eq!(e.buffer_client_settings().region, "us-east-1");
        assert!(e.settings.visibility_timeout_s >= 43);
    }

    #[test]
    fn metrics_name_the_table_and_the_receiving_region() {
        let e = env(&[]).expect("valid");
        assert_eq!(e.metrics.namespace, "Ferry");
        let dims = |e: &DrainEnv| e.metrics.dimensions.clone();
        assert_eq!(
            dims(&e),
            vec![
                ("TableName", "orders".to_string()),
                ("ReceivingRegion", "eu-west-1".to_string())
            ]
        );
        let e = env(&[
            ("FERRY_TABLE", "orders-us"),
            ("FERRY_METRICS_NAMESPACE", "Shop/Ferry"),
        ])
        .expect("valid");
        assert_eq!(e.metrics.namespace, "Shop/Ferry");
        assert_eq!(dims(&e)[0], ("TableName", "orders-us".to_string()));
    }

    #[test]
    fn rejects_what_cannot_work() {
        assert!(matches!(
            env(&[("FERRY_DESTINATION_REGION", "us-east-1")]),
            Err(EnvError::SameRegion(_))
        ));
        assert!(matches!(
            env(&[("FERRY_DRAIN_BUDGET_S", "-1")]),
            Err(EnvError::Variable(VariableError::Bad { .. }))
        ));
        assert!(matches!(
            env(&[("FERRY_MAX_IN_FLIGHT", "many")]),
            Err(EnvError::Variable(VariableError::Bad { .. }))
        ));
        assert!(matches!(
            env(&[("FERRY_DLQ_URL", " ")]),
            Err(EnvError::Variable(VariableError::Missing("FERRY_DLQ_URL")))
        ));
    }
}
