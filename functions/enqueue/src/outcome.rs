//! What one invocation did: Lambda's answer, the counts, and the CloudWatch metrics line.

use aws_lambda_events::streams::DynamoDbEventResponse;
use ferry_aws::emf::{Metric, Metrics, Unit};

/// Counts of one batch. Records from the first failure on are handed back to Lambda and
/// counted only in `failed`, so a resent record is never counted twice as done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records in the event.
    pub records: usize,
    /// Records put on every destination's buffer (case 2).
    pub forwarded: usize,
    /// Stamps written (`UpdateItem` of the version attributes).
    pub stamped: usize,
    /// Tombstones written.
    pub tombstoned: usize,
    /// Case-4 records whose current item needed nothing (a newer write has its own record).
    pub unchanged: usize,
    /// Written here by a drain (case 1).
    pub skipped_replicated_in: usize,
    /// Removed by the table's TTL (case 3).
    pub skipped_ttl: usize,
    /// Excluded by the item filter.
    pub filtered: usize,
    /// Records that can never be processed: logged with their sequence number and skipped.
    pub poison: usize,
    /// Records handed back to Lambda (the first failure and everything after it).
    pub failed: usize,
    /// 1 when the batch stopped at a write of the other merge mode (a configuration error; see
    /// `ferry_core::ClassifyError::ModeMismatch`), else 0. Alarm on it.
    pub mode_mismatch: usize,
    /// `SendMessageBatch` calls made (all destinations).
    pub sqs_requests: usize,
    /// Conditional writes that failed because the item had changed since it was read; each one
    /// fed the returned item back into `reconcile`.
    pub condition_retries: usize,
}

/// The first record that could not be done; Lambda resends from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordFailure {
    /// Its index in the batch.
    pub index: usize,
    pub sequence_number: String,
    /// `pk=S:…` when known. Keys are logged, item values never.
    pub key: Option<String>,
    pub reason: String,
}

/// The result of [`crate::handle`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnqueueOutcome {
    /// What the function returns to Lambda: `batchItemFailures` holds the first failing
    /// record's sequence number, or nothing when the whole batch is done.
    pub response: DynamoDbEventResponse,
    pub counts: Counts,
    pub failure: Option<RecordFailure>,
    /// How old the batch's newest record was when the batch was done (ms).
    pub newest_record_age_ms: Option<u64>,
}

impl EnqueueOutcome {
    /// The sequence number Lambda will resend from, if any.
    pub fn retry_from(&self) -> Option<&str> {
        self.response
            .batch_item_failures
            .first()
            .and_then(|f| f.item_identifier.as_deref())
    }

    /// The CloudWatch embedded-metric-format line (print it to stdout on Lambda; CloudWatch Logs
    /// turns it into metrics without an API call). One value per metric, so one line.
    pub fn metrics_line(&self, metrics: &Metrics, timestamp_ms: u64) -> String {
        let c = &self.counts;
        let count = |name, n: usize| Metric::count(name, n as u64);
        let age = self.newest_record_age_ms.into_iter().collect();
        metrics
            .lines(
                &[
                    count("Records", c.records),
                    count("Forwarded", c.forwarded),
                    count("Stamped", c.stamped),
                    count("Tombstoned", c.tombstoned),
                    count("SkippedReplicatedIn", c.skipped_replicated_in),
                    count("SkippedTtl", c.skipped_ttl),
                    count("Filtered", c.filtered),
                    count("Failed", c.failed),
                    count("Poison", c.poison),
                    count("ModeMismatch", c.mode_mismatch),
                    count("SqsRequests", c.sqs_requests),
                    // Absent rather than 0 without a record: a 0 would pull the age down.
                    Metric::values("NewestRecordAge", Unit::Milliseconds, age),
                ],
                timestamp_ms,
            )
            .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn metrics_line_is_embedded_metric_format() {
        let outcome = EnqueueOutcome {
            counts: Counts {
                records: 5,
                forwarded: 3,
                poison: 1,
                ..Counts::default()
            },
            newest_record_age_ms: Some(1500),
            ..EnqueueOutcome::default()
        };
        let metrics = Metrics::new("Ferry", "orders").property("SourceRegion", "us-east-1");
        let line = outcome.metrics_line(&metrics, 1_732_564_800_000);
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).expect("JSON");
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Ferry");
        assert_eq!(directive["Dimensions"], serde_json::json!([["TableName"]]));
        assert_eq!(v["_aws"]["Timestamp"], 1_732_564_800_000u64);
        // Every declared metric has a value at the top level.
        for m in directive["Metrics"].as_array().expect("metrics") {
            let name = m["Name"].as_str().expect("name");
            assert!(v[name].is_u64(), "{name} has no value");
        }
        assert_eq!(v["Forwarded"], 3);
        assert_eq!(v["Poison"], 1);
        assert_eq!(v["NewestRecordAge"], 1500);
        assert_eq!(v["SourceRegion"], "us-east-1");
        assert_eq!(v["TableName"], "orders");

        let empty = EnqueueOutcome::default().metrics_line(&metrics, 0);
        assert!(!empty.contains("NewestRecordAge"));
    }
}
