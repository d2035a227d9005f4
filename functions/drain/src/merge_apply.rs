//! The drain in attribute merge mode (`docs/attribute-merge.md`): the take's records of each
//! key are merged into one state (never coalesced by picking the newest), and each key's state
//! is merged into the destination item by `ferry_aws`'s read–merge–conditional update. Also the
//! check, in both modes, that every record is of the configured mode.

use crate::report::{DrainReport, LagParts, StopReason};
use crate::take::{Outcome, Take};
use crate::{Arrival, Drainer, Pacing, Times};
use ferry_aws::{ErrorKind, MergeOutcome};
use ferry_core::item::describe_key;
use ferry_core::merge::{image_mode, merge_into, AttrState, Unversioned};
use ferry_core::MergeMode;
use futures::stream::{self, StreamExt};
use tokio::time::Instant;

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

/// Merges each key's records into its winner's image, so that what is written, and what is
/// re-queued if it is not done, stands for every record of the key. A record whose version map
/// cannot be read is poison of its own: it becomes a winner alone (its write then fails to read
/// it and dead-letters it) and the key's other records are merged without it.
pub(crate) fn coalesce_by_merge(d: &Drainer, take: &mut Take) {
    let states: Vec<Option<AttrState>> = take
        .records
        .iter()
        .map(|r| AttrState::read(&r.image, &d.config).ok().map(|r| r.state))
        .collect();
    if states.iter().any(Option::is_none) {
        // New winners: the first readable record of each key; unreadable ones stand alone.
        let mut first_readable: std::collections::HashMap<usize, usize> = Default::default();
        for (i, state) in states.iter().enumerate() {
            let old = take.winner_of[i];
            take.winner_of[i] = match state {
                None => i,
                Some(_) => *first_readable.entry(old).or_insert(i),
            };
        }
        take.winners = (0..take.records.len())
            .filter(|&i| take.winner_of[i] == i)
            .collect();
    }
    let mut merged: Vec<Option<AttrState>> = vec![None; take.records.len()];
    for (i, state) in states.into_iter().enumerate() {
        let Some(state) = state else { continue };
        let slot = &mut merged[take.winner_of[i]];
        match slot {
            Some(s) => merge_into(s, &state),
            None => *slot = Some(state),
        }
    }
    for (w, state) in merged.into_iter().enumerate() {
        if let Some(state) = state {
            if !take.records[w].image.is_empty() {
                let record = &mut take.records[w];
                record.image = state.to_item(&record.key, &d.config);
                if let Some(newest) = state.newest() {
                    record.version = newest.clone();
                }
            }
        }
    }
}

enum Attempt {
    /// The budget ran out (or a stop came) before the key's turn.
    NotStarted,
    /// The record's own version map cannot be read: poison, dead-lettered with the reason.
    Unreadable(String),
    /// Abandoned at the budget's end.
    Cut,
    Done(Result<MergeOutcome, ferry_aws::AwsError>),
}

/// Applies the take's winners in attribute mode. The same outcomes and halts as item mode's
/// `apply_take`: throttled → re-queued, transport → halt, invalid → DLQ.
pub(crate) async fn apply_take(
    d: &Drainer,
    take: &Take,
    arrival: &Arrival,
    times: &Times,
    pacing: &mut Pacing,
    report: &mut DrainReport,
) -> (Vec<Outcome>, Option<StopReason>) {
    let mut outcomes = vec![Outcome::Unattempted; take.records.len()];
    let mut halt: Option<StopReason> = None;
    let limit = pacing.limit.max(1);
    let results: Vec<(usize, Attempt)> = stream::iter(take.winners.iter().copied())
        .map(|w| async move {
            if Instant::now() >= times.apply_end || d.settings.stop.is_cancelled() {
                return (w, Attempt::NotStarted);
            }
            let record = &take.records[w];
            let incoming = match AttrState::read(&record.image, &d.config) {
                Ok(r) => r.state,
                Err(e) => return (w, Attempt::Unreadable(e.to_string())),
            };
            let merged = d.table.merge_into(
                &record.key,
                |_| incoming.clone(),
                Unversioned::Wait,
                &d.config,
            );
            match tokio::time::timeout_at(times.put_cut, merged).await {
                Ok(result) => (w, Attempt::Done(result)),
                Err(_) => (w, Attempt::Cut),
            }
        })
        .buffer_unordered(limit)
        .collect()
        .await;
    for (w, attempt) in results {
        let record = &take.records[w];
        let result = match attempt {
            Attempt::NotStarted => {
                halt.get_or_insert(StopReason::Budget);
                continue;
            }
            Attempt::Unreadable(reason) => {
                tracing::warn!(key = %describe_key(&record.key), reason = %reason, "unreadable version map: dead-lettering the record");
                outcomes[w] = Outcome::Invalid(format!("unreadable version map: {reason}"));
                continue;
            }
            Attempt::Cut => {
                report.cut += 1;
                outcomes[w] = Outcome::Failed;
                halt.get_or_insert(StopReason::Budget);
                continue;
            }
            Attempt::Done(r) => r,
        };
        match result {
            Ok(MergeOutcome::Written { rounds, .. }) => {
                pacing.on_answer();
                report.merge_reads += u64::from(rounds);
                report.merge_writes += u64::from(rounds);
                report.dynamodb_requests += 2 * u64::from(rounds);
                report.applied += 1;
                outcomes[w] = Outcome::Applied;
                let applied_at = (d.clock)();
                report
                    .lag_ms
                    .push(applied_at.saturating_sub(record.written_at_ms));
                let sent = arrival
                    .sent_at_ms
                    .get(take.message_of[w])
                    .copied()
                    .unwrap_or(0);
                report.lag_parts_ms.push(LagParts {
                    to_buffer: sent.saturating_sub(record.written_at_ms),
                    in_buffer: arrival.received_at_ms.saturating_sub(sent),
                    in_drain: applied_at.saturating_sub(arrival.received_at_ms),
                    retried: take.attempts_of(w) > 0,
                });
            }
            Ok(MergeOutcome::Unchanged { rounds }) => {
                pacing.on_answer();
                report.merge_reads += u64::from(rounds);
                report.merge_writes += u64::from(rounds - 1);
                report.dynamodb_requests += 2 * u64::from(rounds) - 1;
                report.stale += 1;
                outcomes[w] = Outcome::Stale;
            }
            Ok(MergeOutcome::Pending { unversioned }) => {
                report.merge_reads += 1;
                report.dynamodb_requests += 1;
                report.pending += 1;
                outcomes[w] = Outcome::Pending(format!("Unversioned({unversioned:?})"));
            }
            Ok(MergeOutcome::Contended) => {
                let rounds = u64::from(ferry_aws::MAX_MERGE_ROUNDS);
                report.merge_reads += rounds;
                report.merge_writes += rounds;
                report.dynamodb_requests += 2 * rounds;
                report.pending += 1;
                outcomes[w] = Outcome::Pending("Contended".into());
            }
            Ok(MergeOutcome::Invalid(reason)) => {
                report.pending += 1;
                outcomes[w] = Outcome::Pending(format!("InvalidStoredVersion({reason})"));
            }
            Err(e) => match e.kind {
                ErrorKind::Throttled => {
                    report.throttled += 1;
                    pacing.on_throttle(Instant::now());
                    outcomes[w] = Outcome::Throttled;
                }
                ErrorKind::Transport => {
                    report.transport_failures += 1;
                    outcomes[w] = Outcome::Failed;
                    halt = Some(halt.map_or(StopReason::DestinationUnreachable, |h| {
                        h.max(StopReason::DestinationUnreachable)
                    }));
                }
                ErrorKind::Invalid => {
                    let code = e.code.as_deref().unwrap_or("invalid request");
                    outcomes[w] =
                        Outcome::Invalid(format!("{} {code}: {}", e.operation, e.message));
                }
                ErrorKind::Other => {
                    tracing::error!(key = %describe_key(&record.key), error = %e, "destination merge failed: halting");
                    report.other_errors += 1;
                    outcomes[w] = Outcome::Failed;
                    halt = Some(halt.map_or(StopReason::DestinationError, |h| {
                        h.max(StopReason::DestinationError)
                    }));
                }
            },
        }
    }
    (outcomes, halt)
}

/// The apply stage's dispatch on the merge mode: item mode's `apply_take`, attribute mode's,
/// or — for a record of the other mode — nothing applied and the pipeline stopped.
pub(crate) enum Dispatch {
    Item,
    Attribute,
    Refused(Vec<Outcome>, Option<StopReason>),
}

pub(crate) fn dispatch(d: &Drainer, take: &mut Take) -> Dispatch {
    let records = take.records.len();
    let refused = |why: String| {
        tracing::error!(mismatch = true, reason = %why, "merge mode mismatch: stopping");
        d.peer.stop(StopReason::ModeMismatch, why);
        Dispatch::Refused(
            vec![Outcome::Failed; records],
            Some(StopReason::ModeMismatch),
        )
    };
    if let Err(why) = check_modes(d, take) {
        return refused(why);
    }
    match d.config.merge_mode {
        MergeMode::Item => Dispatch::Item,
        MergeMode::Attribute => {
            coalesce_by_merge(d, take);
            Dispatch::Attribute
        }
    }
}
