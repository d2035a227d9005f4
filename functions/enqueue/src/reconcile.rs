//! Item mode's case 4: a local change without a version of its own gets one. For each record,
//! a strongly consistent read of the current item, the core's `reconcile`, then the conditional
//! stamp or tombstone it decides (see the crate docs for why the read comes first).

use crate::{earliest, Enqueuer, Failure, RECONCILE_CONCURRENCY};
use ferry_aws::{AwsError, ErrorKind, WriteOutcome};
use ferry_core::reconcile::Stamp;
use ferry_core::{reconcile, Action, Hint, ItemKey, Version};
use futures::stream::{self, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the case-4 writes of a batch came to.
#[derive(Default)]
pub(crate) struct Reconciled {
    pub stamped: usize,
    pub tombstoned: usize,
    pub unchanged: usize,
    pub condition_retries: usize,
    /// Records found to be poison: (batch index, reason).
    pub poison: Vec<(usize, String)>,
    pub failure: Option<Failure>,
}

impl Reconciled {
    pub fn absorb(&mut self, other: Reconciled) {
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

/// Reconciles every hint: keys concurrently, each key's records in stream order.
pub(crate) async fn reconcile_all(hints: &[(usize, Hint)], enqueuer: &Enqueuer) -> Reconciled {
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
        total.absorb(r);
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
/// condition go again from the item DynamoDB returned. A write DynamoDB rejects for the record's
/// own reasons makes it poison ([`rejected`]). Err: the record is not done.
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
            Action::Stamp(stamp) => table.stamp_if(&hint.key, stamp, config).await,
            Action::Tombstone {
                item, condition, ..
            }
            | Action::Restore {
                item, condition, ..
            } => table.put_if(item, condition).await,
        };
        let written = match written {
            Ok(written) => written,
            Err(e) => return rejected(&e).map(Done::Poison).ok_or_else(|| e.to_string()),
        };
        match (written, action) {
            (WriteOutcome::Written, Action::Stamp(Stamp { version, .. }))
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

/// Why a failed write makes its record poison: DynamoDB refused the stamp, tombstone or restore
/// for the record's own reasons (`ErrorKind::Invalid`: a `ValidationException`, e.g. a stamp that
/// would take the item over 400 KB). No retry changes that, so the record is skipped like an
/// undecodable one instead of holding the shard until the stream gives the batch up. `None`:
/// the stream retries it — transport and throttling, a configuration error (access denied, a
/// missing table: no one record's fault), and a refused read (a key the table's own stream gave
/// can only be refused if the configured key schema is wrong).
pub(crate) fn rejected(e: &AwsError) -> Option<String> {
    let write = matches!(e.operation, "PutItem" | "UpdateItem");
    (write && e.kind == ErrorKind::Invalid).then(|| {
        let code = e.code.as_deref().unwrap_or("invalid request");
        format!(
            "DynamoDB rejected the {}: {code}: {}",
            e.operation, e.message
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(operation: &'static str, kind: ErrorKind, code: &str) -> AwsError {
        AwsError {
            operation,
            kind,
            code: Some(code.into()),
            message: "Item size to update has exceeded the maximum allowed size".into(),
        }
    }

    #[test]
    fn a_write_rejected_as_invalid_is_poison_with_its_reason() {
        for operation in ["UpdateItem", "PutItem"] {
            let e = error(operation, ErrorKind::Invalid, "ValidationException");
            let reason = rejected(&e).expect("poison");
            assert!(reason.contains(operation), "{reason}");
            assert!(reason.contains("ValidationException"), "{reason}");
            assert!(reason.contains("maximum allowed size"), "{reason}");
        }
    }

    #[test]
    fn transport_throttling_configuration_and_reads_are_retried() {
        for (operation, kind, code) in [
            (
                "UpdateItem",
                ErrorKind::Throttled,
                "ProvisionedThroughputExceededException",
            ),
            ("PutItem", ErrorKind::Throttled, "ThrottlingException"),
            ("UpdateItem", ErrorKind::Transport, "InternalServerError"),
            ("PutItem", ErrorKind::Other, "AccessDeniedException"),
            ("UpdateItem", ErrorKind::Other, "ResourceNotFoundException"),
            ("GetItem", ErrorKind::Invalid, "ValidationException"),
        ] {
            assert_eq!(
                rejected(&error(operation, kind, code)),
                None,
                "{operation} {code}"
            );
        }
    }
}
