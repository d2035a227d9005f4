//! What one drain invocation did: counts, lag percentiles, conflict samples, and their EMF form.

use ferry_aws::emf::{spread_sample, Metric, Metrics, Unit};
use serde::Serialize;

/// Why a drain returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The budget is spent (the normal end).
    #[default]
    Budget,
    /// A receive came back empty and `return_when_idle` is set (the backlog is drained).
    Idle,
    /// The `stop` token was cancelled.
    Stopped,
    /// The buffer (SQS) failed to answer a receive.
    BufferUnavailable,
    /// The destination failed with an error that is neither transport, throttling nor the
    /// record's fault (access denied, missing table, …): a configuration problem.
    DestinationError,
    /// The destination did not answer the ping, or writes failed for transport reasons.
    DestinationUnreachable,
    /// The destination refused the drain's identity (no or expired credentials, a role that
    /// cannot be assumed, access denied): an access problem, not an outage.
    AccessDenied,
    /// A record of the other merge mode arrived (`docs/attribute-merge.md`): the regions'
    /// configurations disagree. Nothing of the take is applied or dead-lettered; the pipeline
    /// stops here until the configuration is fixed.
    ModeMismatch,
    /// The destination's table publishes other shared settings (key schema, attribute names,
    /// tombstone lifetime, filter): stopped before receiving, like [`StopReason::ModeMismatch`].
    SettingsMismatch,
    /// An operator paused the pair (`ferry pause`): nothing received, the buffer keeps all.
    Paused,
}

/// One applied record's lag, cut where it can be measured from the drain: source write →
/// sent to the buffer (`SentTimestamp`: stream, poller or Lambda trigger, enqueue) → received
/// by the drain → applied (waiting for the previous take, then the conditional put). Times
/// are the drain's clock against SQS's; with clocks skewed between the source and the drain
/// the first two parts shift by the skew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LagParts {
    pub to_buffer: u64,
    pub in_buffer: u64,
    pub in_drain: u64,
    /// The record came back on the buffer at least once because it was pending (its message
    /// carried an attempt count): its `to_buffer` includes its earlier trips and the re-queue
    /// delay.
    pub retried: bool,
}

/// One conflict: a newer version from another region already held the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConflictSample {
    pub key: String,
    pub winner: String,
    pub loser: String,
}

/// The counts of one [`crate::drain`] call.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DrainReport {
    /// False when the ping failed or a write failed for transport reasons.
    pub destination_reachable: bool,
    pub stop_reason: StopReason,
    pub elapsed_ms: u64,
    /// Takes (receive, apply, settle rounds) that received at least one message.
    pub takes: u64,
    /// Messages received.
    pub received: u64,
    /// The highest `ApproximateReceiveCount` among them (1: every message was new).
    pub max_receive_count: u32,
    /// Records unpacked from the messages.
    pub records: u64,
    /// Records superseded by a newer (or equal) version of their key in the same take: never
    /// written, done exactly when their winner is.
    pub coalesced: u64,
    /// Conditional puts that wrote.
    pub applied: u64,
    /// Puts refused because the destination held the same or a newer version of the same origin.
    pub stale: u64,
    /// Puts refused because a newer version from another region won (also logged).
    pub conflicts: u64,
    /// Conflicts kept in the conflict log (`ferry_core::conflict`).
    pub conflicts_logged: u64,
    /// Conflicts the log lost: its write failed or timed out, or it had failed earlier in the
    /// invocation. Replication is not affected.
    pub conflict_log_errors: u64,
    /// Conflicts left out of the log by its cap per invocation (`FERRY_CONFLICT_LOG_MAX`).
    pub conflicts_unlogged: u64,
    /// Records found pending (unversioned destination item, unreadable version, race).
    pub pending: u64,
    /// Records put back on the buffer as new messages (pending, throttled, cut, destination down).
    pub requeued: u64,
    /// Malformed messages moved whole to the DLQ.
    pub dlq_messages: u64,
    /// Messages near their last delivery sent again as fresh copies (`ferry_core::wear`).
    pub renewed: u64,
    /// Records moved to the DLQ (refused by vetting, rejected by DynamoDB, pending too many
    /// times).
    pub dlq_records: u64,
    /// Settles abandoned at the invocation's end (a slow SQS): their messages come back.
    pub settle_timeouts: u64,
    /// Records refused by vetting ([`ferry_core::vet`]): forged, malformed or too old.
    pub refused: u64,
    /// The age (since first sent to a buffer) of the oldest record found pending.
    pub pending_age_max_ms: Option<u64>,
    /// Messages deleted from the buffer.
    pub deleted: u64,
    /// Messages left on the buffer (a settle call to SQS failed); they come back with a
    /// receive count one higher.
    pub left: u64,
    pub transport_failures: u64,
    /// Writes answered with throttling (each one retried or re-queued, never dropped).
    pub throttled: u64,
    pub other_errors: u64,
    /// Writes abandoned at the end of the budget (re-queued).
    pub cut: u64,
    /// Requests to SQS (receive, send, delete, visibility) and to DynamoDB (puts, pings).
    pub sqs_requests: u64,
    pub receives: u64,
    pub dynamodb_requests: u64,
    /// Of those, the destination pings (the rest applied records).
    pub pings: u64,
    /// Attribute merge mode: strongly consistent reads and conditional `UpdateItem`s sent
    /// (a failed condition costs a read and a write and is merged again).
    pub merge_reads: u64,
    pub merge_writes: u64,
    /// Under a write-rate cap (`FERRY_MAX_WCU`): the write units the writes took (every
    /// attempt, by the written image's size) and how long a write was ready and held by the
    /// cap. `None` without a cap.
    pub write_units: Option<u64>,
    pub cap_wait_ms: Option<u64>,
    /// The largest age of the heartbeats this drain applied (`ferry_core::heartbeat::age_ms`):
    /// reported as `ReplicationLatency`, whose alarm treats its absence as breaching.
    pub replication_latency_ms: Option<u64>,
    /// Replication lag of the applied records: apply time − source write time.
    /// Time the apply stage was running (what bounds one worker's rate; sizes the fan-out).
    /// Under a write-rate cap, at least the time the records taken need at the invocation's
    /// share, which is then what bounds it (`cap.rs`).
    pub apply_ms: u64,
    /// Drain workers this call ran for its destination, itself included (a tick's fan-out;
    /// 1 for a worker or a plain drain, 0 when it returned before draining).
    pub workers: u32,
    pub lag_p50_ms: Option<u64>,
    pub lag_p99_ms: Option<u64>,
    pub lag_max_ms: Option<u64>,
    /// Every applied record's lag, in apply order (for a caller aggregating many drains).
    #[serde(skip)]
    pub lag_ms: Vec<u64>,
    /// Where each applied record's lag went, in the same order as `lag_ms`.
    #[serde(skip)]
    pub lag_parts_ms: Vec<LagParts>,
    pub conflict_samples: Vec<ConflictSample>,
}

impl DrainReport {
    /// Records dead-lettered plus malformed messages dead-lettered.
    pub fn dlq(&self) -> u64 {
        self.dlq_records + self.dlq_messages
    }

    /// Adds another report's counts to this one (a caller running drains on a timer, or a test
    /// draining until a backlog is gone). Reachability is the latest report's; lag percentiles
    /// are recomputed over both sets of samples.
    pub fn absorb(&mut self, other: &DrainReport) {
        self.destination_reachable = other.destination_reachable;
        self.stop_reason = other.stop_reason;
        self.elapsed_ms += other.elapsed_ms;
        self.absorb_counts(other);
        self.compute_lag();
    }

    /// Adds the counts, lag samples and conflict samples of `other` (one stage of a take);
    /// leaves reachability, the stop reason, the elapsed time and the lag percentiles alone.
    pub(crate) fn absorb_counts(&mut self, other: &DrainReport) {
        self.takes += other.takes;
        self.received += other.received;
        self.max_receive_count = self.max_receive_count.max(other.max_receive_count);
        self.records += other.records;
        self.coalesced += other.coalesced;
        self.applied += other.applied;
        self.stale += other.stale;
        self.conflicts += other.conflicts;
        self.conflicts_logged += other.conflicts_logged;
        self.conflict_log_errors += other.conflict_log_errors;
        self.conflicts_unlogged += other.conflicts_unlogged;
        self.pending += other.pending;
        self.requeued += other.requeued;
        self.dlq_messages += other.dlq_messages;
        self.renewed += other.renewed;
        self.dlq_records += other.dlq_records;
        self.refused += other.refused;
        self.settle_timeouts += other.settle_timeouts;
        self.pending_age_max_ms = self.pending_age_max_ms.max(other.pending_age_max_ms);
        self.replication_latency_ms = self
            .replication_latency_ms
            .max(other.replication_latency_ms);
        self.deleted += other.deleted;
        self.left += other.left;
        self.transport_failures += other.transport_failures;
        self.throttled += other.throttled;
        self.other_errors += other.other_errors;
        self.cut += other.cut;
        self.sqs_requests += other.sqs_requests;
        self.receives += other.receives;
        self.dynamodb_requests += other.dynamodb_requests;
        self.pings += other.pings;
        self.merge_reads += other.merge_reads;
        self.merge_writes += other.merge_writes;
        self.write_units = add_some(self.write_units, other.write_units);
        self.cap_wait_ms = add_some(self.cap_wait_ms, other.cap_wait_ms);
        self.apply_ms += other.apply_ms;
        self.lag_ms.extend_from_slice(&other.lag_ms);
        self.lag_parts_ms.extend_from_slice(&other.lag_parts_ms);
        self.conflict_samples
            .extend(other.conflict_samples.iter().cloned());
    }

    /// Fills the lag percentiles from [`DrainReport::lag_ms`].
    pub fn compute_lag(&mut self) {
        let mut sorted = self.lag_ms.clone();
        sorted.sort_unstable();
        self.lag_p50_ms = percentile(&sorted, 50.0);
        self.lag_p99_ms = percentile(&sorted, 99.0);
        self.lag_max_ms = sorted.last().copied();
    }
}

/// The sum of two figures that are there only under a cap.
fn add_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

/// Nearest-rank percentile (p in 0–100) of sorted samples; `None` when empty. The one
/// percentile of the workspace: the CLI's demo and status line use it too.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Per-record lags one invocation publishes at most (10 EMF lines): more are thinned to this
/// many evenly spaced ranks, which keeps the invocation's percentiles.
pub const MAX_LAG_VALUES: usize = 1000;

/// The report as CloudWatch Embedded Metric Format lines (dimensions `TableName` and
/// `ReceivingRegion`, see [`crate::DrainEnv`]). Lambda ships stdout lines to CloudWatch Logs,
/// which turns them into metrics without any API call from the function. `ReplicationLatency`
/// carries every applied record's lag as a sample of its own (heartbeats included), so
/// CloudWatch's p50/p99 over any period and any number of drains are true percentiles.
pub fn emf_lines(report: &DrainReport, metrics: &Metrics, timestamp_ms: u64) -> Vec<String> {
    let flag = |name, on: bool| Metric::new(name, Unit::None, u64::from(on));
    let stop = report.stop_reason;
    let lags = spread_sample(&report.lag_ms, MAX_LAG_VALUES);
    let pending_age = report.pending_age_max_ms.into_iter().collect();
    let lines = [
        Metric::count("Applied", report.applied),
        Metric::count("Stale", report.stale),
        Metric::count("Conflicts", report.conflicts),
        Metric::count("ConflictsLogged", report.conflicts_logged),
        Metric::count("ConflictLogErrors", report.conflict_log_errors),
        Metric::count("ConflictsNotLogged", report.conflicts_unlogged),
        Metric::count("Pending", report.pending),
        Metric::count("Requeued", report.requeued),
        Metric::count("Dlq", report.dlq()),
        Metric::count("Throttled", report.throttled),
        Metric::count("TransportFailures", report.transport_failures),
        Metric::count("Received", report.received),
        Metric::count("Refused", report.refused),
        Metric::count("OtherErrors", report.other_errors),
        Metric::count("SettleTimeouts", report.settle_timeouts),
        Metric::count("Workers", report.workers.into()),
        // 1: stopped on an error that is neither transport nor throttling (access denied, a
        // missing table): the drain cannot write, and an alarm fires on it.
        flag("DestinationError", stop == StopReason::DestinationError),
        // 1: stopped because the destination refused the drain's identity (an alarm fires on it).
        flag("AccessDenied", stop == StopReason::AccessDenied),
        // 1: an operator paused the pair (`ferry pause`).
        flag("Paused", stop == StopReason::Paused),
        flag("DestinationReachable", report.destination_reachable),
        // 1: stopped because the destination runs other settings (an alarm fires on it).
        flag(
            "SettingsMismatch",
            matches!(
                stop,
                StopReason::ModeMismatch | StopReason::SettingsMismatch
            ),
        ),
        // Reported only under a write-rate cap: the units used and the time the cap held writes.
        Metric::values(
            "WriteUnits",
            Unit::Count,
            report.write_units.into_iter().collect(),
        ),
        Metric::values(
            "CapWaitMs",
            Unit::Milliseconds,
            report.cap_wait_ms.into_iter().collect(),
        ),
        // Reported only while records are pending.
        Metric::values("PendingAge", Unit::Milliseconds, pending_age),
        // Named like Global Tables' metric: source write to applied, per record.
        Metric::values("ReplicationLatency", Unit::Milliseconds, lags),
    ];
    metrics.lines(&lines, timestamp_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn parse(line: &str) -> serde_json::Value {
        assert!(!line.contains('\n'));
        serde_json::from_str(line).expect("json")
    }

    fn pair() -> Metrics {
        Metrics::new("Ferry", "orders").dimension("ReceivingRegion", "eu-west-1")
    }

    #[test]
    fn emf_declares_every_value() {
        let mut r = DrainReport {
            applied: 3,
            destination_reachable: true,
            lag_ms: vec![5, 9, 100],
            ..Default::default()
        };
        let lines = emf_lines(&r, &pair(), 1_700_000_000_000);
        assert_eq!(lines.len(), 1);
        let v = parse(&lines[0]);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["TableName", "ReceivingRegion"]])
        );
        for m in directive["Metrics"].as_array().expect("metrics") {
            let name = m["Name"].as_str().expect("name");
            assert!(v.get(name).is_some(), "{name} has no value");
        }
        assert_eq!(v["Applied"], 3);
        assert_eq!(v["ReplicationLatency"], serde_json::json!([5, 9, 100]));
        assert_eq!(v["DestinationReachable"], 1);
        assert_eq!(v["SettingsMismatch"], 0);
        assert!(v.get("PendingAge").is_none(), "nothing pending, no figure");
        assert!(
            v.get("LagP99").is_none(),
            "percentiles are CloudWatch's to compute"
        );
        r.stop_reason = StopReason::ModeMismatch;
        r.lag_ms.clear();
        let v = parse(&emf_lines(&r, &pair(), 0)[0]);
        assert_eq!(v["SettingsMismatch"], 1);
        assert!(v.get("ReplicationLatency").is_none(), "nothing applied");
        assert_eq!(v["ReceivingRegion"], "eu-west-1");
    }

    #[test]
    fn emf_lines_carry_every_lag_up_to_the_bound() {
        let mut r = DrainReport {
            lag_ms: (1..=250).collect(),
            ..Default::default()
        };
        let lags = |r: &DrainReport| -> Vec<u64> {
            emf_lines(r, &pair(), 0)
                .iter()
                .flat_map(|l| {
                    let v = parse(l);
                    v["ReplicationLatency"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect::<Vec<_>>())
                        .unwrap_or_default()
                })
                .collect()
        };
        assert_eq!(lags(&r), (1..=250).collect::<Vec<_>>());
        r.lag_ms = (1..=50_000).collect();
        assert_eq!(emf_lines(&r, &pair(), 0).len(), MAX_LAG_VALUES / 100);
        let mut published = lags(&r);
        assert_eq!(published.len(), MAX_LAG_VALUES);
        published.sort_unstable();
        let p99 = percentile(&published, 99.0).expect("p99");
        assert!(p99.abs_diff(49_500) <= 50, "p99 {p99}");
    }
}
