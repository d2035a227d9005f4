//! The drain in attribute merge mode (`docs/attribute-merge.md`): the take's records of each
//! key are merged into one state (never coalesced by picking the newest), and each key's state
//! is merged into the destination item by `ferry_aws`'s read–merge–conditional update (one
//! winner's write; the apply loop is item mode's, in `apply.rs`). Also the check, in both modes,
//! that every record is of the configured mode.

use crate::apply::{Cost, Wrote};
use crate::report::StopReason;
use crate::take::Take;
use crate::Drainer;
use ferry_aws::{AwsError, MergeOutcome, MAX_MERGE_ROUNDS};
use ferry_core::coalesce::merge_per_key;
use ferry_core::conflict::merged_away;
use ferry_core::item::describe_key;
use ferry_core::merge::{image_mode, AttrState, Unversioned};
use ferry_core::{ChangeRecord, MergeMode};

/// Checks every record's mode against the configuration. `Err`: the take must not be applied.
pub(crate) fn check_modes(d: &Drainer, take: &Take) -> Result<(), String> {
    let want = d.config.merge_mode;
    match take
        .records
        .iter()
        .find(|r| image_mode(&r.image, &d.config).is_some_and(|m| m != want))
    {
        None => Ok(()),
        Some(r) => Err(format!(
            "merge mode mismatch: this drain is in {want} mode, but a record for key {} from {} is not; \
             FERRY_MERGE_MODE must be the same in every region",
            describe_key(&r.key),
            r.source_region
        )),
    }
}

/// Attribute mode's coalescing of the take: each key's records merged into its winner
/// ([`ferry_core::coalesce::merge_per_key`]).
pub(crate) fn coalesce_by_merge(d: &Drainer, take: &mut Take) {
    take.winner_of = merge_per_key(&mut take.records, &d.config);
    take.winners = (0..take.records.len())
        .filter(|&i| take.winner_of[i] == i)
        .collect();
}

/// One winner's write in attribute mode: its state merged into the destination item. A record
/// whose own version map cannot be read is poison: nothing is sent and it is dead-lettered.
pub(crate) async fn merge(d: &Drainer, record: &ChangeRecord) -> Result<(Wrote, Cost), AwsError> {
    let incoming = match AttrState::read(&record.image, &d.config) {
        Ok(r) => r.state,
        Err(e) => {
            let reason = format!("unreadable version map: {e}");
            return Ok((Wrote::Unreadable(reason), Cost::default()));
        }
    };
    // The values of the last round's merge that lost to newer ones of another region, for the
    // conflict log (worked out only when there is one).
    let lost = std::sync::Mutex::new(Vec::new());
    let merged = d.table.merge_into(
        &record.key,
        |current| {
            if d.config.conflict_log.is_some() {
                let stored = current.and_then(|i| AttrState::read(i, &d.config).ok());
                let away = stored.map_or_else(Vec::new, |s| merged_away(&s.state, &incoming));
                *lost.lock().unwrap_or_else(|e| e.into_inner()) = away;
            }
            incoming.clone()
        },
        Unversioned::Wait,
        &d.config,
    );
    let cost = |reads: u32, writes: u32| Cost {
        puts: 0,
        reads: u64::from(reads),
        writes: u64::from(writes),
    };
    let outcome = merged.await?;
    let lost = lost.into_inner().unwrap_or_else(|e| e.into_inner());
    let with_lost = |wrote: Wrote| match crate::conflict_log::merge_entry(d, record, &lost) {
        Some(entry) => Wrote::MergedAway {
            wrote: Box::new(wrote),
            entry: Box::new(entry),
        },
        None => wrote,
    };
    Ok(match outcome {
        MergeOutcome::Written { rounds, .. } => (with_lost(Wrote::Written), cost(rounds, rounds)),
        // The last round found nothing to change: a read without a write.
        MergeOutcome::Unchanged { rounds } => (with_lost(Wrote::Stale), cost(rounds, rounds - 1)),
        MergeOutcome::Pending { unversioned } => (
            Wrote::Pending(format!("Unversioned({unversioned:?})")),
            cost(1, 0),
        ),
        MergeOutcome::Contended => (
            Wrote::Pending("Contended".into()),
            cost(MAX_MERGE_ROUNDS, MAX_MERGE_ROUNDS),
        ),
        MergeOutcome::Invalid(reason) => (
            Wrote::Pending(format!("InvalidStoredVersion({reason})")),
            Cost::default(),
        ),
    })
}

/// The apply stage's dispatch on the merge mode: the mode to apply the take in, or `None` for
/// a take holding a record of the other mode (the stop is recorded: nothing may be applied).
pub(crate) fn dispatch(d: &Drainer, take: &mut Take) -> Option<MergeMode> {
    if let Err(why) = check_modes(d, take) {
        tracing::error!(mismatch = true, reason = %why, "merge mode mismatch: stopping");
        d.peer.stop(StopReason::ModeMismatch, why);
        return None;
    }
    if d.config.merge_mode == MergeMode::Attribute {
        coalesce_by_merge(d, take);
    }
    Some(d.config.merge_mode)
}
