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
//!    key's records one after another in stream order. A failed write (transport, throttling,
//!    anything but a failed condition) is that record's failure.
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
//! unreadable, or its change record cannot fit an SQS message — is logged at error level with
//! its sequence number, key and reason (never item values), counted (`Poison` metric), and
//! **skipped**. Why not report it as failed: it would fail identically on every retry, holding
//! every later record of the shard for the whole retry budget, and when Lambda finally gave up
//! it would discard the *retried batch* — good records after the poison included — sending only
//! its metadata (shard and sequence range) to the on-failure destination. Skipping loses only
//! the poison record itself, which no retry could save, and leaves an exact trail: the log line
//! and an alarm on `Poison` > 0. The fix is a new write of that item (e.g. through the helper),
//! whose own record replicates it, or a backfill of the key. The on-failure destination of the
//! template (#6) keeps catching what the handler cannot control (timeouts, crashes, transient
//! failures beyond the retry budget).

pub mod input;
mod merge_stamp;
pub mod outcome;
pub mod plan;
pub mod settings;
pub mod synthetic;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::streams::DynamoDbBatchItemFailure;
use ferry_aws::{Buffer, Table, WriteOutcome};
use ferry_core::{reconcile, Action, Clock, Config, Hint, ItemKey, Version};
use futures::stream::{self, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use input::{decode_event, Input, InputRef, PayloadError, Undecodable};
pub use outcome::{Counts, EnqueueOutcome, RecordFailure};
pub use plan::{Decision, Packed, Plan, PlanInput};
pub use settings::{Settings, SetupError, DEFAULT_MAX_RECONCILE_ATTEMPTS};

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
    ) -> Result<Self, SetupError> {
        let regions: Vec<(String, ())> = buffers.iter().map(|d| (d.region.clone(), ())).collect();
        settings::check_destinations(&config, &regions)?;
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
    settings: &Settings,
    base: &aws_config::SdkConfig,
    clock: Clock,
) -> Result<Enqueuer, SetupError> {
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
    // A write of the other merge mode stops the batch there: nothing after it is done.
    let mismatch = plan
        .slots
        .iter()
        .enumerate()
        .find_map(|(i, s)| match &s.decision {
            Decision::ModeMismatch(reason) => Some((i, reason.clone())),
            _ => None,
        });
    if let Some((index, reason)) = &mismatch {
        tracing::error!(
            mismatch = true,
            sequence_number = plan.slots[*index].sequence_number.as_deref().unwrap_or("-"),
            reason = reason.as_str(),
            "merge mode mismatch: failing the batch from this record until the configuration is fixed"
        );
        plan.hints.retain(|(i, _)| i < index);
        plan.stamp_hints.retain(|(i, _)| i < index);
    }

    let mut reconciled = reconcile_all(&plan.hints, enqueuer).await;
    reconciled.absorb(merge_stamp::stamp_all(&plan.stamp_hints, enqueuer).await);
    for (index, reason) in &reconciled.poison {
        plan.slots[*index].decision = Decision::Poison(reason.clone());
    }
    let mut failure = earliest(reconciled.failure.clone(), mismatch.clone());

    // Only what comes before the first failure needs sending; what comes after is resent.
    let before = failure.as_ref().map_or(records, |f| f.0);
    let mut sqs_requests = 0;
    match plan.pack_forwards(before) {
        Ok(packed) => {
            let sent = send_all(&packed, enqueuer).await;
            sqs_requests = sent.requests;
            failure = earliest(failure, sent.failure);
        }
        Err(reason) => {
            let first = plan.forward_index.first().copied().filter(|&i| i < before);
            failure = earliest(failure, first.map(|i| (i, reason)));
        }
    }

    let done = failure.as_ref().map_or(records, |f| f.0);
    let mut counts = Counts {
        records,
        stamped: reconciled.stamped,
        tombstoned: reconciled.tombstoned,
        unchanged: reconciled.unchanged,
        condition_retries: reconciled.condition_retries,
        failed: records - done,
        mode_mismatch: usize::from(mismatch.as_ref().is_some_and(|m| m.0 == done)),
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

    let mut outcome = EnqueueOutcome {
        counts,
        newest_record_age_ms: plan
            .newest_created_ms
            .map(|t| enqueuer.now_ms().saturating_sub(t.max(0) as u64)),
        ..EnqueueOutcome::default()
    };
    if let Some((index, reason)) = failure {
        // Forward and Reconcile slots always carry a sequence number (Plan makes records
        // without one poison), and only those can fail.
        let sequence_number = plan.slots[index]
            .sequence_number
            .clone()
            .unwrap_or_default();
        let key = plan.key_of(index);
        tracing::warn!(
            sequence_number = sequence_number.as_str(),
            key = key.as_deref().unwrap_or("-"),
            reason = reason.as_str(),
            retried_records = records - index,
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
    outcome
}

#[derive(Default)]
struct Reconciled {
    stamped: usize,
    tombstoned: usize,
    unchanged: usize,
    condition_retries: usize,
    poison: Vec<(usize, String)>,
    failure: Option<Failure>,
}

impl Reconciled {
    fn absorb(&mut self, other: Reconciled) {
        self.stamped += other.stamped;
        self.tombstoned += other.tombstoned;
        self.unchanged += other.unchanged;
        self.condition_retries += other.condition_retries;
        self.poison.extend(other.poison);
        self.failure = earliest(self.failure.take(), other.failure);
    }
}

enum Done {
    Stamped(Version),
    Tombstoned(Version),
    Unchanged,
    Poison(String),
}

async fn reconcile_all(hints: &[(usize, Hint)], enqueuer: &Enqueuer) -> Reconciled {
    // Records of one key run in stream order; distinct keys are independent.
    // Groups hold positions in `hints`, not references: a closure over borrowed groups makes
    // the handler's future not provably `Send` (it could not be spawned).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<ItemKey, usize> = HashMap::new();
    for (position, (_, hint)) in hints.iter().enumerate() {
        let g = *group_of.entry(ItemKey::of(&hint.key)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(position);
    }
    // Once a record has failed, later records need no work: Lambda resends them.
    let failed_at = AtomicUsize::new(usize::MAX);
    let reports: Vec<Reconciled> = stream::iter(groups)
        .map(|group| reconcile_group(group, hints, enqueuer, &failed_at))
        .buffer_unordered(RECONCILE_CONCURRENCY)
        .collect()
        .await;
    let mut total = Reconciled::default();
    for r in reports {
        total.stamped += r.stamped;
        total.tombstoned += r.tombstoned;
        total.unchanged += r.unchanged;
        total.condition_retries += r.condition_retries;
        total.poison.extend(r.poison);
        total.failure = earliest(total.failure, r.failure);
    }
    total
}

async fn reconcile_group(
    group: Vec<usize>,
    hints: &[(usize, Hint)],
    enqueuer: &Enqueuer,
    failed_at: &AtomicUsize,
) -> Reconciled {
    let mut report = Reconciled::default();
    for (index, hint) in group.into_iter().map(|p| &hints[p]) {
        if *index > failed_at.load(Ordering::SeqCst) {
            break;
        }
        match reconcile_one(hint, enqueuer, &mut report.condition_retries).await {
            Ok(Done::Stamped(version)) => {
                report.stamped += 1;
                tracing::debug!(index, %version, "stamped");
            }
            Ok(Done::Tombstoned(version)) => {
                report.tombstoned += 1;
                tracing::debug!(index, %version, "tombstoned");
            }
            Ok(Done::Unchanged) => report.unchanged += 1,
            Ok(Done::Poison(reason)) => report.poison.push((*index, reason)),
            Err(reason) => {
                failed_at.fetch_min(*index, Ordering::SeqCst);
                report.failure = Some((*index, reason));
                break;
            }
        }
    }
    report
}

/// One case-4 record: read C, write what `reconcile` says under its condition, and on a failed
/// condition go again from the item DynamoDB returned. Err: the record is not done.
async fn reconcile_one(
    hint: &Hint,
    enqueuer: &Enqueuer,
    condition_retries: &mut usize,
) -> Result<Done, String> {
    let config = &enqueuer.config;
    let table = &enqueuer.table;
    let mut current = table.get(&hint.key).await.map_err(|e| e.to_string())?;
    for _ in 0..enqueuer.max_reconcile_attempts {
        let action = match reconcile(hint, current.as_ref(), enqueuer.now_ms(), config) {
            Ok(action) => action,
            // The stored item's version cannot be read; no retry changes that until the item
            // itself is rewritten (which has its own record).
            Err(e) => {
                return Ok(Done::Poison(format!(
                    "the current item's version is unreadable: {e}"
                )))
            }
        };
        let written = match &action {
            Action::Nothing => return Ok(Done::Unchanged),
            Action::Stamp {
                version,
                remove,
                ttl,
                sum,
                condition,
            } => {
                table
                    .stamp_if(
                        &hint.key,
                        version,
                        remove,
                        ttl.as_ref(),
                        sum,
                        condition,
                        config,
                    )
                    .await
            }
            Action::Tombstone {
                item, condition, ..
            }
            | Action::Restore {
                item, condition, ..
            } => table.put_if(item, condition).await,
        }
        .map_err(|e| e.to_string())?;
        match (written, action) {
            (WriteOutcome::Written, Action::Stamp { version, .. })
            | (WriteOutcome::Written, Action::Restore { version, .. }) => {
                return Ok(Done::Stamped(version))
            }
            (WriteOutcome::Written, Action::Tombstone { version, .. }) => {
                return Ok(Done::Tombstoned(version))
            }
            (WriteOutcome::Written, Action::Nothing) => return Ok(Done::Unchanged),
            (WriteOutcome::ConditionFailed(stored), _) => {
                *condition_retries += 1;
                current = stored;
            }
        }
    }
    Err(format!(
        "the item changed under {} conditional writes in a row; retrying later",
        enqueuer.max_reconcile_attempts
    ))
}

struct Sent {
    requests: usize,
    failure: Option<Failure>,
}

/// Sends every batch to every destination, all at once, and finds the earliest record of any
/// message that some destination did not take.
async fn send_all(packed: &Packed, enqueuer: &Enqueuer) -> Sent {
    let sends = enqueuer.buffers.iter().flat_map(|destination| {
        packed
            .batches
            .iter()
            .enumerate()
            .map(move |(b, batch)| async move {
                (destination, b, destination.buffer.send_batch(batch).await)
            })
    });
    let results = futures::future::join_all(sends).await;
    let mut failure = None;
    for (destination, b, result) in &results {
        let firsts = &packed.first_record[*b];
        let (first, reason) = match result {
            Ok(failed) if failed.is_empty() => continue,
            // An index that maps to no message cannot be placed: count the whole batch.
            Ok(failed) => (
                failed
                    .iter()
                    .filter_map(|m| firsts.get(*m).or(firsts.first()))
                    .min()
                    .copied(),
                format!(
                    "the buffer for {} did not take {} of {} messages",
                    destination.region,
                    failed.len(),
                    firsts.len()
                ),
            ),
            Err(e) => (
                firsts.first().copied(),
                format!("the buffer for {}: {e}", destination.region),
            ),
        };
        let Some(first) = first else { continue };
        tracing::warn!(
            destination = destination.region.as_str(),
            first_record = first,
            reason = reason.as_str(),
            "send to a buffer failed"
        );
        failure = earliest(failure, Some((first, reason)));
    }
    Sent {
        requests: results.len(),
        failure,
    }
}
