//! # ferry-enqueue
//!
//! The stream-triggered Lambda of the source region (`docs/contract.md`, "What `enqueue` does
//! with each stream record"). The core's `classify` decides every record; this crate only carries
//! the decisions out:
//!
//! - **Forward** (case 2): the batch's change records are packed with the core's `pack` into as
//!   few SQS messages as the limits allow and sent with `SendMessageBatch` to *every*
//!   destination's buffer (all buffers live in the local region). Entries SQS reports as failed
//!   in a 200 answer count as failed.
//! - **Reconcile** (case 4): a strongly consistent read of the current item, the core's
//!   `reconcile`, then the conditional stamp (`UpdateItem` of the version only) or tombstone
//!   (`PutItem`). A failed condition is not an error: the `ALL_OLD` item it returns goes back into
//!   `reconcile` (at most `max_reconcile_attempts` rounds; each round means a newer write).
//! - **Skip**: replicated-in (case 1), TTL expiry (case 3), filtered by `FERRY_FILTER`.
//!
//! ## Why read before reconciling
//! Starting from the record's new image (and letting `ALL_OLD` correct it) would save a read,
//! but the conditions `reconcile` builds pin only what matters *if C was really read*: the
//! version, and for a kept foreign version the changed attributes. A stale C can pass them with
//! a different item underneath. Example: the record's N is a bare tombstone at version v; since
//! then the application wrote attributes onto it, keeping the marker and v. From the stale N,
//! `reconcile` stamps "version = v" without removing the marker — the condition holds, and the
//! item becomes a versioned tombstone that carries data, one of the holes the contract's model
//! check exhibits. The contract's premise is "every write is conditional on C being as read";
//! a consistent `GetItem` makes that true. Case-4 records are the unusual path (applications
//! that stamp through the helper never produce them), so the extra read costs little.
//!
//! ## Order and failure semantics
//! 1. Classify every record (CPU only).
//! 2. Reconcile the case-4 records: keys concurrently (up to [`RECONCILE_CONCURRENCY`]), each
//!    key's records one after another in stream order. A write DynamoDB rejects for the record's
//!    own reasons (`ValidationException`) makes the record poison (below); any other failed
//!    write (transport, throttling, a configuration error — anything but a failed condition) is
//!    that record's failure.
//! 3. Send the forwarded records *before* the first reconcile failure, to every destination.
//!    A failed request or entry makes the first record of that message a failure.
//! 4. Answer `batchItemFailures` with the sequence number of the earliest failure. Everything
//!    before it is done: skipped, written, or in a message every destination's buffer accepted.
//!    Lambda resends from that record; whatever after it was already written or sent is done
//!    again, which is harmless (stamps and tombstones re-reconcile to "nothing", and drains
//!    apply records idempotently).
//!
//! Reconcile writes go first because a failed one must cut the batch *before* the forward
//! sends are decided: sending first and failing a reconcile later would only add duplicates.
//! Order between the two does not matter otherwise: a stamp's or tombstone's own change record
//! arrives later in the stream (case 2), and buffers are unordered queues applied by version.
//! The handler never returns an error for a record; only a payload that is not a stream event
//! at all fails the invocation ([`handle_json`]).
//!
//! ## Poison records
//! A record that can never be processed — it does not decode, it lacks a key attribute or an
//! image (the stream is not `NEW_AND_OLD_IMAGES`), its version or the current item's version is
//! unreadable, its change record cannot fit an SQS message, or DynamoDB rejects its stamp,
//! tombstone or restore as invalid (`ValidationException`, e.g. a stamp that would take an item
//! a few bytes under 400 KB over the limit) — is logged at error level with its sequence number,
//! key and reason (never item values), counted (`Poison` metric), and
//! **skipped**. Why not report it as failed: it would fail identically on every retry, holding
//! every later record of the shard for the whole retry budget, and when Lambda finally gave up
//! it would discard the *retried batch* — good records after the poison included — sending only
//! its metadata (shard and sequence range) to the on-failure destination. Skipping loses only
//! the poison record itself, which no retry could save, and leaves an exact trail: the log line
//! and an alarm on `Poison` > 0. The fix is a new write of that item (e.g. through the helper),
//! whose own record replicates it, or a backfill of the key. The on-failure destination of the
//! template (#6) keeps catching what the handler cannot control (timeouts, crashes, transient
//! failures beyond the retry budget).

pub mod env;
pub mod input;
mod merge_stamp;
pub mod outcome;
pub mod plan;
mod reconcile;
mod send;
pub mod synthetic;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::streams::DynamoDbBatchItemFailure;
use ferry_aws::{Buffer, Table};
use ferry_core::{Clock, Config};
use reconcile::{reconcile_all, Reconciled};
use send::{send_all, Sent};

pub use env::{EnqueueEnv, EnvError, DEFAULT_MAX_RECONCILE_ATTEMPTS};
pub use input::{decode_event, Input, InputRef, PayloadError, Undecodable};
pub use outcome::{Counts, EnqueueOutcome, RecordFailure};
pub use plan::{Decision, Packed, Plan, PlanInput};

/// At most this many keys are reconciled at once (each is a read and one or more writes).
pub const RECONCILE_CONCURRENCY: usize = 16;

/// One destination region and its buffer queue (in the local region).
#[derive(Clone, Debug)]
pub struct Destination {
    pub region: String,
    pub buffer: Buffer,
}

/// What the handler works with: settings, the local table, every destination's buffer, a clock.
/// Built once per Lambda instance.
pub struct Enqueuer {
    config: Config,
    table: Table,
    buffers: Vec<Destination>,
    clock: Clock,
    max_reconcile_attempts: u32,
}

impl std::fmt::Debug for Enqueuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueuer")
            .field("local_region", &self.config.local_region)
            .field("table", &self.table.name)
            .field(
                "buffers",
                &self
                    .buffers
                    .iter()
                    .map(|d| (&d.region, &d.buffer.queue_url))
                    .collect::<Vec<_>>(),
            )
            .field("max_reconcile_attempts", &self.max_reconcile_attempts)
            .finish()
    }
}

impl Enqueuer {
    /// Checks that the buffers match `config.destinations` one to one (a missing buffer would
    /// silently leave a region behind).
    pub fn new(
        config: Config,
        table: Table,
        buffers: Vec<Destination>,
        clock: Clock,
    ) -> Result<Self, EnvError> {
        let regions: Vec<(String, ())> = buffers.iter().map(|d| (d.region.clone(), ())).collect();
        env::check_destinations(&config, &regions)?;
        Ok(Enqueuer {
            config,
            table,
            buffers,
            clock,
            max_reconcile_attempts: DEFAULT_MAX_RECONCILE_ATTEMPTS,
        })
    }

    /// Bounds the `reconcile` rounds per record (at least 1).
    pub fn with_max_reconcile_attempts(mut self, attempts: u32) -> Self {
        self.max_reconcile_attempts = attempts.max(1);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Publishes this region's shared settings on the local table (`ferry_core::peer`), where
    /// every other region's drain checks them before writing here. Called once at start-up; a
    /// failure (no permission, an emulator without tags) is logged, not fatal: the drains then
    /// see an unpublished table and rely on the records' shapes.
    pub async fn publish_settings(&self) {
        match ferry_aws::peer::publish_settings(&self.table, &self.config).await {
            Ok(wrote) => tracing::info!(
                wrote,
                settings = %ferry_core::peer::canonical(&self.config),
                fingerprint = %ferry_core::peer::fingerprint(&self.config),
                "settings published on the local table"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot publish the settings on the local table; other regions' drains cannot check them")
            }
        }
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn destinations(&self) -> &[Destination] {
        &self.buffers
    }

    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }
}

/// Builds the SDK clients and the [`Enqueuer`] from the function's settings: what `main.rs` does
/// once per Lambda instance (the pipeline bench does the same).
pub async fn connect(
    settings: &EnqueueEnv,
    base: &aws_config::SdkConfig,
    clock: Clock,
) -> Result<Enqueuer, EnvError> {
    let mut clients = ferry_aws::ClientSettings::new(settings.config.local_region.clone());
    clients.dynamodb_endpoint = settings.dynamodb_endpoint.clone();
    clients.sqs_endpoint = settings.sqs_endpoint.clone();
    clients.attempt_timeout = Some(settings.attempt_timeout);
    clients.operation_timeout = Some(settings.operation_timeout);
    let table = Table::new(clients.dynamodb(base).await, settings.table.clone());
    // Every buffer lives in the local region: one SQS client serves them all.
    let sqs = clients.sqs(base);
    let buffers = settings
        .buffers
        .iter()
        .map(|(region, url)| Destination {
            region: region.clone(),
            buffer: Buffer::new(sqs.clone(), url.clone()),
        })
        .collect();
    Ok(
        Enqueuer::new(settings.config.clone(), table, buffers, clock)?
            .with_max_reconcile_attempts(settings.max_reconcile_attempts),
    )
}

/// Processes one stream batch (see the crate docs for the order and the failure semantics).
/// Never fails: a record that cannot be done now is reported in `batchItemFailures`.
pub async fn handle(event: &Event, enqueuer: &Enqueuer) -> EnqueueOutcome {
    let plan = Plan::new(event.records.iter().map(InputRef::Record), &enqueuer.config);
    run(plan, enqueuer).await
}

/// Like [`handle`], from Lambda's raw JSON payload: each record is decoded on its own, so a
/// malformed record is poison instead of failing the invocation. Err only when the payload is
/// not a stream event at all.
pub async fn handle_json(
    payload: &str,
    enqueuer: &Enqueuer,
) -> Result<EnqueueOutcome, PayloadError> {
    let mut inputs = decode_event(payload)?;
    // The records are the handler's own: forwarded images move into the change records.
    let plan = Plan::new(inputs.iter_mut(), &enqueuer.config);
    drop(inputs);
    Ok(run(plan, enqueuer).await)
}

/// The first failure seen so far: (batch index, reason).
type Failure = (usize, String);

fn earliest(a: Option<Failure>, b: Option<Failure>) -> Option<Failure> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

async fn run(mut plan: Plan, enqueuer: &Enqueuer) -> EnqueueOutcome {
    let records = plan.slots.len();
    let mismatch = stop_at_mode_mismatch(&mut plan);
    let reconciled = reconcile_case_4(&mut plan, enqueuer).await;
    let mut failure = earliest(reconciled.failure.clone(), mismatch.clone());
    // Only what comes before the first failure needs sending; what comes after is resent.
    let before = failure.as_ref().map_or(records, |f| f.0);
    let sent = forward(&mut plan, before, enqueuer).await;
    failure = earliest(failure, sent.failure);
    let done = failure.as_ref().map_or(records, |f| f.0);
    let mode_mismatch = usize::from(mismatch.as_ref().is_some_and(|m| m.0 == done));
    let counts = count(&plan, done, &reconciled, mode_mismatch, sent.requests);
    let mut outcome = EnqueueOutcome {
        counts,
        newest_record_age_ms: plan
            .newest_created_ms
            .map(|t| enqueuer.now_ms().saturating_sub(t.max(0) as u64)),
        ..EnqueueOutcome::default()
    };
    if let Some(failure) = failure {
        hand_back(&plan, failure, &mut outcome);
    }
    log_batch(&outcome);
    outcome
}

/// A write of the other merge mode stops the batch there: nothing after it is done, so the
/// case-4 work after it is dropped. The first such record, as a failure.
fn stop_at_mode_mismatch(plan: &mut Plan) -> Option<Failure> {
    let (index, reason) = plan
        .slots
        .iter()
        .enumerate()
        .find_map(|(i, s)| match &s.decision {
            Decision::ModeMismatch(reason) => Some((i, reason.clone())),
            _ => None,
        })?;
    tracing::error!(
        mismatch = true,
        sequence_number = plan.slots[index].sequence_number.as_deref().unwrap_or("-"),
        reason = reason.as_str(),
        "merge mode mismatch: failing the batch from this record until the configuration is fixed"
    );
    plan.hints.retain(|(i, _)| *i < index);
    plan.stamp_hints.retain(|(i, _)| *i < index);
    Some((index, reason))
}

/// The case-4 records of both merge modes written; a record found poison on the way becomes
/// poison in the plan.
async fn reconcile_case_4(plan: &mut Plan, enqueuer: &Enqueuer) -> Reconciled {
    let mut reconciled = reconcile_all(&plan.hints, enqueuer).await;
    reconciled.absorb(merge_stamp::stamp_all(&plan.stamp_hints, enqueuer).await);
    for (index, reason) in &reconciled.poison {
        plan.slots[*index].decision = Decision::Poison(reason.clone());
    }
    reconciled
}

/// Sends the forwarded records before `before` to every destination. Records that cannot be
/// packed fail from the first forwarded one.
async fn forward(plan: &mut Plan, before: usize, enqueuer: &Enqueuer) -> Sent {
    match plan.pack_forwards(before) {
        Ok(packed) => send_all(&packed, enqueuer).await,
        Err(reason) => {
            let first = plan.forward_index.first().copied().filter(|&i| i < before);
            Sent {
                requests: 0,
                failure: first.map(|i| (i, reason)),
            }
        }
    }
}

/// The batch's counts; the records from `done` on are handed back, counted only as failed.
/// Logs each poison record skipped.
fn count(
    plan: &Plan,
    done: usize,
    reconciled: &Reconciled,
    mode_mismatch: usize,
    sqs_requests: usize,
) -> Counts {
    let records = plan.slots.len();
    let mut counts = Counts {
        records,
        stamped: reconciled.stamped,
        tombstoned: reconciled.tombstoned,
        unchanged: reconciled.unchanged,
        condition_retries: reconciled.condition_retries,
        failed: records - done,
        mode_mismatch,
        sqs_requests,
        ..Counts::default()
    };
    for (index, slot) in plan.slots.iter().enumerate().take(done) {
        match &slot.decision {
            Decision::Forward => counts.forwarded += 1,
            Decision::Reconcile => {}
            Decision::ReplicatedIn => counts.skipped_replicated_in += 1,
            Decision::TtlExpiry => counts.skipped_ttl += 1,
            Decision::Filtered => counts.filtered += 1,
            // Only ever at or after the first failure, which this loop stops before.
            Decision::ModeMismatch(_) => {}
            Decision::Poison(reason) => {
                counts.poison += 1;
                tracing::error!(
                    sequence_number = slot.sequence_number.as_deref().unwrap_or("-"),
                    key = plan.key_of(index).as_deref().unwrap_or("-"),
                    reason = reason.as_str(),
                    "poison record skipped"
                );
            }
        }
    }
    counts
}

/// Hands the batch back to Lambda from the first failure: its sequence number goes into
/// `batchItemFailures`.
fn hand_back(plan: &Plan, (index, reason): Failure, outcome: &mut EnqueueOutcome) {
    // Forward and Reconcile slots always carry a sequence number (Plan makes records without
    // one poison), and only those can fail.
    let sequence_number = plan.slots[index]
        .sequence_number
        .clone()
        .unwrap_or_default();
    let key = plan.key_of(index);
    tracing::warn!(
        sequence_number = sequence_number.as_str(),
        key = key.as_deref().unwrap_or("-"),
        reason = reason.as_str(),
        retried_records = plan.slots.len() - index,
        "record failed; the stream resends the batch from it"
    );
    let mut item = DynamoDbBatchItemFailure::default();
    item.item_identifier = Some(sequence_number.clone());
    outcome.response.batch_item_failures.push(item);
    outcome.failure = Some(RecordFailure {
        index,
        sequence_number,
        key,
        reason,
    });
}

fn log_batch(outcome: &EnqueueOutcome) {
    let c = &outcome.counts;
    tracing::info!(
        records = c.records,
        forwarded = c.forwarded,
        stamped = c.stamped,
        tombstoned = c.tombstoned,
        unchanged = c.unchanged,
        skipped_replicated_in = c.skipped_replicated_in,
        skipped_ttl = c.skipped_ttl,
        filtered = c.filtered,
        poison = c.poison,
        failed = c.failed,
        sqs_requests = c.sqs_requests,
        condition_retries = c.condition_retries,
        newest_record_age_ms = outcome.newest_record_age_ms,
        "enqueue batch"
    );
}
