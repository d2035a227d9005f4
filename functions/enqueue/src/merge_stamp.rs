//! Attribute merge mode's case 4 (`docs/attribute-merge.md`): a local change without new
//! version entries gets entries for exactly the attributes it changed (or, for a hard delete, a
//! whole-item tombstone), merged into the current item by `ferry_aws`'s read–merge–conditional
//! update — the drain's write, with the item's unversioned attributes kept.

use crate::reconcile::{rejected, Reconciled};
use crate::{earliest, Enqueuer};
use ferry_aws::MergeOutcome;
use ferry_core::merge::{stamp_delta, StampHint, Unversioned};

/// Stamps each hint in stream order. The first failure cuts the batch (Lambda resends from it);
/// an unreadable version map is poison, as item mode's unreadable version, and so is a stamp
/// DynamoDB rejects as invalid ([`rejected`]).
pub(crate) async fn stamp_all(hints: &[(usize, StampHint)], enqueuer: &Enqueuer) -> Reconciled {
    let mut report = Reconciled::default();
    let config = enqueuer.config();
    for (index, hint) in hints {
        if hint.is_empty() {
            report.unchanged += 1;
            continue;
        }
        let now = enqueuer.now_ms();
        let result = enqueuer
            .table()
            .merge_into(
                &hint.key,
                |current| stamp_delta(hint, current, now, config),
                Unversioned::Keep,
                config,
            )
            .await;
        match result {
            Ok(MergeOutcome::Written { rounds, .. }) => {
                report.condition_retries += rounds as usize - 1;
                if hint.deleted {
                    report.tombstoned += 1;
                } else {
                    report.stamped += 1;
                }
            }
            Ok(MergeOutcome::Unchanged { rounds }) => {
                report.condition_retries += rounds as usize - 1;
                report.unchanged += 1;
            }
            Ok(MergeOutcome::Invalid(reason)) => report.poison.push((
                *index,
                format!("the current item's version map is unreadable: {reason}"),
            )),
            Ok(MergeOutcome::Pending { .. }) | Ok(MergeOutcome::Contended) => {
                report.failure = earliest(
                    report.failure.take(),
                    Some((*index, "stamp contended: retried by the stream".into())),
                );
                break;
            }
            // DynamoDB refused the stamp for the record's own reasons: poison, as in item mode.
            Err(e) => match rejected(&e) {
                Some(reason) => report.poison.push((*index, reason)),
                None => {
                    report.failure = earliest(report.failure.take(), Some((*index, e.to_string())));
                    break;
                }
            },
        }
    }
    report
}
