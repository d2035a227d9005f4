//! The apply stage: each winner of a take written to the destination, at most `pacing.limit` at
//! once, and what became of each. A refused write is judged by the core (stale, conflict,
//! pending); throttling slows the writes down and retries the record in the same take; a
//! transport failure or a configuration error halts the take (nothing new starts).

use crate::merge_apply;
use crate::pacing::Pacing;
use crate::pipeline::{TakeTiming, Times};
use crate::receive::Arrival;
use crate::report::{ConflictSample, DrainReport, LagParts, StopReason};
use crate::take::{Outcome, Take};
use crate::Drainer;
use ferry_aws::{ApplyOutcome, AwsError, ErrorKind};
use ferry_core::apply::PendingReason;
use ferry_core::conflict::Entry;
use ferry_core::item::describe_key;
use ferry_core::rate::write_units;
use ferry_core::{ChangeRecord, Judgement, MergeMode, Version};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::future::Future;
use tokio::time::error::Elapsed;
use tokio::time::Instant;

/// What an apply stage came back with.
pub(crate) struct Applied {
    pub take: Take,
    pub outcomes: Vec<Outcome>,
    pub halt: Option<StopReason>,
    pub pacing: Pacing,
    pub report: DrainReport,
    pub timing: TakeTiming,
}

pub(crate) async fn apply_stage(
    d: &Drainer,
    mut take: Take,
    arrival: Arrival,
    times: Times,
    mut pacing: Pacing,
    mut timing: TakeTiming,
) -> Applied {
    let started = Instant::now();
    let mut report = DrainReport::default();
    let (outcomes, halt, conflicts) = match merge_apply::dispatch(d, &mut take) {
        Some(mode) => apply_take(d, mode, &take, &arrival, times, &mut pacing, &mut report).await,
        // A record of the other mode: nothing is applied, and the pipeline stops.
        None => (
            vec![Outcome::Failed; take.records.len()],
            Some(StopReason::ModeMismatch),
            Vec::new(),
        ),
    };
    // Written by the settle stage, off the apply path.
    take.conflicts = conflicts;
    timing.apply_ms = started.elapsed().as_millis() as u64;
    Applied {
        take,
        outcomes,
        halt,
        pacing,
        report,
        timing,
    }
}

/// Writes the take's winners in `mode`; returns each record's outcome, why the take was halted,
/// if it was, and the conflict log's entries. The mode decides only what one winner's write is
/// and what it costs.
async fn apply_take(
    d: &Drainer,
    mode: MergeMode,
    take: &Take,
    arrival: &Arrival,
    times: Times,
    pacing: &mut Pacing,
    report: &mut DrainReport,
) -> (Vec<Outcome>, Option<StopReason>, Vec<Entry>) {
    let mut writes = Writes::new(d, mode, take, arrival);
    // Under a cap, what the take's share allows; the rest is re-queued in pieces (`cap.rs`).
    writes
        .queue
        .truncate(crate::cap::writes_per_take(&d.settings));
    let mut inflight = FuturesUnordered::new();
    loop {
        writes.check_clock(times);
        if writes.halt.is_none() && Instant::now() >= pacing.pause_until {
            while inflight.len() < pacing.limit {
                let Some(&i) = writes.queue.front() else {
                    break;
                };
                if !pacing.admit(|| write_units(&take.records[i].image)) {
                    break;
                }
                writes.queue.pop_front();
                inflight.push(write(d, mode, take, i, times.put_cut));
            }
        }
        if inflight.is_empty() && (writes.queue.is_empty() || writes.halt.is_some()) {
            break;
        }
        let can_launch =
            writes.halt.is_none() && !writes.queue.is_empty() && inflight.len() < pacing.limit;
        let wake = pacing.wake();
        tokio::select! {
            biased;
            Some((i, result)) = inflight.next(), if !inflight.is_empty() => {
                writes.finished(i, result, pacing, report);
            }
            _ = d.settings.stop.cancelled(), if writes.halt.is_none() => {
                writes.raise(StopReason::Stopped);
            }
            _ = tokio::time::sleep_until(times.apply_end), if writes.halt.is_none() => {
                writes.raise(StopReason::Budget);
            }
            _ = tokio::time::sleep_until(wake), if can_launch && wake > Instant::now() => {}
        }
    }
    // A halt for the budget or a stop is the normal end of the call, not of the take.
    (writes.outcomes, writes.halt, writes.conflicts)
}

/// One winner's write, abandoned at `put_cut` (`Err`: cut).
type WriteResult = Result<Result<(Wrote, Cost), AwsError>, Elapsed>;

/// Writes record `i` of the take in `mode`.
fn write<'a>(
    d: &'a Drainer,
    mode: MergeMode,
    take: &'a Take,
    i: usize,
    put_cut: Instant,
) -> impl Future<Output = (usize, WriteResult)> + 'a {
    let record = &take.records[i];
    let write = async move {
        match mode {
            MergeMode::Item => put(d, record).await,
            MergeMode::Attribute => merge_apply::merge(d, record).await,
        }
    };
    async move { (i, tokio::time::timeout_at(put_cut, write).await) }
}

/// One take's writes in progress.
struct Writes<'a> {
    d: &'a Drainer,
    mode: MergeMode,
    take: &'a Take,
    arrival: &'a Arrival,
    /// What became of each record so far (only winners are written).
    outcomes: Vec<Outcome>,
    /// The winners still to be written; a throttled one goes to the back again.
    queue: VecDeque<usize>,
    /// Why the take was halted, if it was.
    halt: Option<StopReason>,
    /// The conflict log's entries for the conflicts found (none without a log).
    conflicts: Vec<Entry>,
}

impl<'a> Writes<'a> {
    fn new(d: &'a Drainer, mode: MergeMode, take: &'a Take, arrival: &'a Arrival) -> Self {
        Writes {
            d,
            mode,
            take,
            arrival,
            outcomes: vec![Outcome::Unattempted; take.records.len()],
            queue: take.winners.iter().copied().collect(),
            halt: None,
            conflicts: Vec::new(),
        }
    }

    /// Halts keep the most serious reason (the enum's order).
    fn raise(&mut self, reason: StopReason) {
        self.halt = Some(self.halt.map_or(reason, |h| h.max(reason)));
    }

    /// Halts on a stop or at the end of the apply time.
    fn check_clock(&mut self, times: Times) {
        if self.halt.is_none() {
            if self.d.settings.stop.is_cancelled() {
                self.raise(StopReason::Stopped);
            } else if Instant::now() >= times.apply_end {
                self.raise(StopReason::Budget);
            }
        }
    }

    /// Counts a finished write's cost and records what became of it.
    fn finished(
        &mut self,
        i: usize,
        result: WriteResult,
        pacing: &mut Pacing,
        report: &mut DrainReport,
    ) {
        let now = Instant::now();
        let (cost, answered) = match &result {
            // A record refused before anything was sent is no answer of the destination.
            Ok(Ok((wrote, cost))) => (*cost, !matches!(wrote, Wrote::Unreadable(_))),
            _ => (Cost::unanswered(self.mode), false),
        };
        cost.count(report);
        if let (Some(cap), true) = (pacing.cap.as_mut(), cost.writes > 1) {
            // A merge of several rounds: each round's write is billed.
            let units = write_units(&self.take.records[i].image);
            cap.spend(u64::from(units) * (cost.writes - 1), now);
        }
        if answered {
            pacing.on_answer();
        }
        match result {
            Err(_) => {
                report.cut += 1;
                self.outcomes[i] = Outcome::Failed;
                self.raise(StopReason::Budget);
            }
            Ok(Ok((wrote, _))) => self.wrote(i, wrote, report),
            Ok(Err(e)) => self.failed(i, e, now, pacing, report),
        }
    }

    /// A write the destination answered (or a record refused before sending).
    fn wrote(&mut self, i: usize, wrote: Wrote, report: &mut DrainReport) {
        let take = self.take;
        let record = &take.records[i];
        self.outcomes[i] = match wrote {
            Wrote::Written => {
                self.applied(i, report);
                Outcome::Applied
            }
            Wrote::Stale => {
                report.stale += 1;
                Outcome::Stale
            }
            Wrote::Conflict { winner, loser } => {
                self.conflicts
                    .extend(crate::conflict_log::entry(self.d, record, &winner));
                conflict(self.d, record, winner, loser, report);
                Outcome::Conflict
            }
            Wrote::Pending(reason) => {
                report.pending += 1;
                tracing::debug!(key = %describe_key(&record.key), reason = %reason, "pending");
                Outcome::Pending(reason)
            }
            Wrote::OtherMode(why) => {
                tracing::error!(mismatch = true, reason = %why, "merge mode mismatch: stopping");
                self.d.peer.stop(StopReason::ModeMismatch, why);
                self.raise(StopReason::ModeMismatch);
                Outcome::Failed
            }
            Wrote::Unreadable(reason) => {
                tracing::warn!(key = %describe_key(&record.key), reason = %reason, "unreadable record: dead-lettering it");
                Outcome::Invalid(reason)
            }
            Wrote::MergedAway { wrote, entry } => {
                tracing::debug!(key = %describe_key(&record.key), attributes = ?entry.merged_away, winner = %entry.winner, "attribute merge: values lost to newer writes of another region");
                self.conflicts.push(*entry);
                return self.wrote(i, *wrote, report);
            }
        };
    }

    /// Counts an applied record and where its lag went.
    fn applied(&self, i: usize, report: &mut DrainReport) {
        let record = &self.take.records[i];
        report.applied += 1;
        let applied_at = (self.d.clock)();
        report
            .lag_ms
            .push(applied_at.saturating_sub(record.written_at_ms));
        let heartbeat = ferry_core::heartbeat::age_ms(&self.d.config, record, applied_at);
        report.replication_latency_ms = report.replication_latency_ms.max(heartbeat);
        let sent = self
            .arrival
            .sent_at_ms
            .get(self.take.message_of[i])
            .copied()
            .unwrap_or(0);
        let received = self.arrival.received_at_ms;
        if sent > 0 {
            self.d.waits.note(applied_at.saturating_sub(sent));
        }
        report.lag_parts_ms.push(LagParts {
            to_buffer: sent.saturating_sub(record.written_at_ms),
            in_buffer: received.saturating_sub(sent),
            in_drain: applied_at.saturating_sub(received),
            retried: self.take.attempts_of(i) > 0,
        });
    }

    /// A write that failed: throttled (retried in this take), transport (halts), invalid
    /// (dead-lettered), identity or anything else (a configuration error: halts).
    fn failed(
        &mut self,
        i: usize,
        e: AwsError,
        now: Instant,
        pacing: &mut Pacing,
        report: &mut DrainReport,
    ) {
        let take = self.take;
        let key = || describe_key(&take.records[i].key);
        self.outcomes[i] = match e.kind {
            ErrorKind::Throttled => {
                report.throttled += 1;
                pacing.on_throttle(now);
                // Retried in this take once the pause is over; re-queued if the take ends first.
                self.queue.push_back(i);
                Outcome::Throttled
            }
            ErrorKind::Transport => {
                if report.transport_failures == 0 {
                    tracing::warn!(error = %e, "destination write failed for transport reasons: halting");
                }
                report.transport_failures += 1;
                self.raise(StopReason::DestinationUnreachable);
                Outcome::Failed
            }
            ErrorKind::Invalid => {
                tracing::warn!(key = %key(), error = %e, "destination rejected the record: dead-lettering it");
                let code = e.code.as_deref().unwrap_or("invalid request");
                Outcome::Invalid(format!("{} {code}: {}", e.operation, e.message))
            }
            ErrorKind::Identity => {
                tracing::error!(key = %key(), error = %e, "destination refused the drain's identity: halting");
                report.other_errors += 1;
                self.raise(StopReason::AccessDenied);
                Outcome::Failed
            }
            ErrorKind::Other => {
                tracing::error!(key = %key(), error = %e, "destination write failed: halting");
                report.other_errors += 1;
                self.raise(StopReason::DestinationError);
                Outcome::Failed
            }
        };
    }
}

/// What one winner's write came to, in either merge mode.
pub(crate) enum Wrote {
    Written,
    Stale,
    /// A newer version from another region holds the key: done, counted and logged.
    Conflict {
        winner: Version,
        loser: Version,
    },
    /// Not done; retried later. The reason as the outcome records it.
    Pending(String),
    /// The destination item is of the other merge mode: why. The drain stops.
    OtherMode(String),
    /// The record itself cannot be written (nothing was sent): dead-lettered with the reason.
    Unreadable(String),
    /// Attribute mode: `wrote` (written or stale), and some of the record's values lost to
    /// newer ones of another region (the conflict log's entry).
    MergedAway {
        wrote: Box<Wrote>,
        entry: Box<Entry>,
    },
}

/// The DynamoDB requests one write made, as the report counts them.
#[derive(Clone, Copy, Default)]
pub(crate) struct Cost {
    /// Item mode's conditional put.
    pub puts: u64,
    /// Attribute mode's merge rounds: a read each, and a write unless nothing changed.
    pub reads: u64,
    pub writes: u64,
}

impl Cost {
    const PUT: Cost = Cost {
        puts: 1,
        reads: 0,
        writes: 0,
    };

    /// A write that failed or was cut: item mode's put was sent; a merge's rounds are unknown
    /// and counted as none.
    fn unanswered(mode: MergeMode) -> Cost {
        match mode {
            MergeMode::Item => Cost::PUT,
            MergeMode::Attribute => Cost::default(),
        }
    }

    fn count(self, report: &mut DrainReport) {
        report.merge_reads += self.reads;
        report.merge_writes += self.writes;
        report.dynamodb_requests += self.puts + self.reads + self.writes;
    }
}

/// One winner's write in item mode: the one LWW apply path (ferry-aws), shared with the
/// operator tools.
async fn put(d: &Drainer, record: &ChangeRecord) -> Result<(Wrote, Cost), AwsError> {
    let wrote = match d.table.apply(record, (d.clock)(), &d.config).await? {
        ApplyOutcome::Written => Wrote::Written,
        ApplyOutcome::Judged(Judgement::Stale { .. }) => Wrote::Stale,
        ApplyOutcome::Judged(Judgement::Conflict { winner, loser }) => {
            Wrote::Conflict { winner, loser }
        }
        ApplyOutcome::Judged(Judgement::Pending(PendingReason::OtherMode)) => Wrote::OtherMode(format!(
            "merge mode mismatch: this drain is in item mode, but the destination item {} holds attribute mode's version map `{}`; FERRY_MERGE_MODE must be the same in every region",
            describe_key(&record.key),
            d.config.names.versions
        )),
        ApplyOutcome::Judged(Judgement::Pending(reason)) => Wrote::Pending(format!("{reason:?}")),
    };
    Ok((wrote, Cost::PUT))
}

/// A conflict: counted, logged with both versions and sampled in the report.
fn conflict(
    d: &Drainer,
    record: &ChangeRecord,
    winner: Version,
    loser: Version,
    report: &mut DrainReport,
) {
    report.conflicts += 1;
    let key = describe_key(&record.key);
    tracing::warn!(
        conflict = true,
        key = %key,
        winner = %winner,
        loser = %loser,
        "conflict: a newer version from another region already holds the key"
    );
    if report.conflict_samples.len() < d.settings.conflict_samples {
        report.conflict_samples.push(ConflictSample {
            key,
            winner: winner.to_string(),
            loser: loser.to_string(),
        });
    }
}
