//! The settle stage: what a take did not finish goes back on the buffer or to the DLQ, then
//! every message whose records are all secured is deleted. The rules (which winner goes where,
//! which message may go) are `take.rs`'s; this file carries them out.

use crate::pipeline::TakeTiming;
use crate::report::DrainReport;
use crate::take::{Disposition, Outcome, Take};
use crate::Drainer;
use ferry_aws::{ATTEMPTS_ATTRIBUTE, FIRST_SENT_ATTRIBUTE};
use ferry_core::buffer::pack;
use ferry_core::item::describe_key;
use ferry_core::ChangeRecord;
use std::collections::BTreeMap;
use tokio::time::Instant;

/// Settles one take; `timing` is `None` for a take handed over without being applied.
pub(crate) async fn settle_stage(
    d: &Drainer,
    take: Take,
    outcomes: Vec<Outcome>,
    timing: Option<TakeTiming>,
    deadline: Instant,
) -> DrainReport {
    let started = Instant::now();
    let mut report = DrainReport::default();
    let mut logging = DrainReport::default();
    // Cancelling is safe anywhere: sends come before deletes. The conflict log's write runs
    // beside the settle, bounded by its own short timeout.
    let settling = async {
        tokio::join!(
            settle(d, &take, &outcomes, &mut report),
            crate::conflict_log::write(d, &take.conflicts, &mut logging),
        )
    };
    if tokio::time::timeout_at(deadline, settling).await.is_err() {
        tracing::warn!(
            messages = take.messages.len(),
            "settle ran out of the invocation's time: what it did not delete comes back after \
             its visibility timeout"
        );
        report.settle_timeouts += 1;
        // Every message not known deleted comes back.
        let messages = (take.messages.len() + take.poison.len()) as u64;
        report.left = messages.saturating_sub(report.deleted);
    }
    report.absorb_counts(&logging);
    let t = timing.unwrap_or(TakeTiming {
        receive_ms: 0,
        wait_ms: 0,
        apply_ms: 0,
    });
    tracing::debug!(
        messages = take.messages.len() + take.poison.len(),
        records = take.records.len(),
        winners = take.winners.len(),
        attempted = timing.is_some(),
        receive_ms = t.receive_ms,
        wait_ms = t.wait_ms,
        apply_ms = t.apply_ms,
        settle_ms = started.elapsed().as_millis() as u64,
        "take"
    );
    report
}

/// Re-queued records share a message when they share attempts, delay and the hour they were
/// first sent in; the message carries the earliest first-sent time of its records.
const FIRST_SENT_BUCKET_MS: u64 = 3_600_000;

/// The winners to re-queue, grouped by (attempts, delay, first-sent hour), and those to
/// dead-letter, with why.
#[derive(Default)]
struct Unfinished {
    requeue: BTreeMap<(u32, i32, u64), Vec<usize>>,
    dead: Vec<(usize, String)>,
}

/// Re-queues and dead-letters what the take did not finish, then deletes every message whose
/// records are all secured. A message that cannot be deleted is left to come back after its
/// visibility timeout.
async fn settle(d: &Drainer, take: &Take, outcomes: &[Outcome], report: &mut DrainReport) {
    // `secured[w]`: winner w is done, or durably back on the buffer or in the DLQ.
    let mut secured = vec![false; take.records.len()];
    let unfinished = sort_out(d, take, outcomes, &mut secured, report);
    // The drain's central rule: sends come before deletes. A crash in between leaves
    // duplicates (harmless: writes are idempotent), never a loss; the other order could
    // delete a message whose records were never put back.
    requeue(d, take, unfinished.requeue, &mut secured, report).await;
    dead_letter_records(d, take, unfinished.dead, &mut secured, report).await;
    let refused_sent = dead_letter_refused(d, take, report).await;
    let mut delete: Vec<&str> = Vec::new();
    let mut left: Vec<&str> = Vec::new();
    for (m, ok) in take
        .messages
        .iter()
        .zip(take.deletable(&secured, &refused_sent))
    {
        if ok {
            delete.push(&m.receipt);
        } else {
            tracing::debug!(message_id = %m.message_id, "message left on the buffer");
            left.push(&m.receipt);
        }
    }
    dead_letter_poison(d, take, &mut delete, &mut left, report).await;
    delete_messages(d, &delete, report).await;
    // Left messages come back when their visibility times out; making them visible at once
    // would only hand them to the next take while SQS is struggling.
    report.left += left.len() as u64;
}

/// Marks the done winners secured and sorts the rest into re-queue and dead-letter; notes the
/// age of the oldest record still pending.
fn sort_out(
    d: &Drainer,
    take: &Take,
    outcomes: &[Outcome],
    secured: &mut [bool],
    report: &mut DrainReport,
) -> Unfinished {
    let mut unfinished = Unfinished::default();
    let now_ms = (d.clock)();
    for (w, disposition) in take.dispositions(outcomes, &d.settings.retry) {
        let first_sent = take.first_sent_of(w);
        if matches!(outcomes[w], Outcome::Pending(_)) {
            let age = now_ms.saturating_sub(first_sent);
            report.pending_age_max_ms = report.pending_age_max_ms.max(Some(age));
        }
        match disposition {
            Disposition::Done => secured[w] = true,
            Disposition::Requeue { attempts, delay_s } => unfinished
                .requeue
                .entry((attempts, delay_s, first_sent / FIRST_SENT_BUCKET_MS))
                .or_default()
                .push(w),
            Disposition::DeadLetter(reason) => unfinished.dead.push((w, reason)),
        }
    }
    unfinished
}

/// Puts the winners back on the buffer as new messages (packed by the core), carrying their
/// attempt count and delay; a winner is secured once the message holding it is sent.
async fn requeue(
    d: &Drainer,
    take: &Take,
    groups: BTreeMap<(u32, i32, u64), Vec<usize>>,
    secured: &mut [bool],
    report: &mut DrainReport,
) {
    for ((attempts, delay_s, _), winners) in groups {
        let first_sent = winners.iter().map(|&w| take.first_sent_of(w)).min();
        let records: Vec<ChangeRecord> = winners.iter().map(|&w| take.records[w].clone()).collect();
        let batches = match crate::cap::repack(&d.settings, &records) {
            Ok(b) => b,
            Err(e) => {
                // Cannot happen for records that arrived in a message; leave them where they are.
                tracing::error!(error = %e, "re-packing failed: leaving the messages");
                continue;
            }
        };
        let mut next = 0;
        for batch in &batches {
            report.sqs_requests += 1;
            let numbers = [
                (ATTEMPTS_ATTRIBUTE, u64::from(attempts)),
                (FIRST_SENT_ATTRIBUTE, first_sent.unwrap_or_default()),
            ];
            let failed = match d.buffer.send_batch_with(batch, &numbers, delay_s).await {
                Ok(failed) => failed,
                Err(e) => {
                    tracing::warn!(error = %e, "re-queue failed: leaving the messages");
                    (0..batch.len()).collect()
                }
            };
            for (i, message) in batch.iter().enumerate() {
                let sent = failed.binary_search(&i).is_err();
                for &w in &winners[next..next + message.records] {
                    secured[w] = sent;
                }
                if sent {
                    report.requeued += message.records as u64;
                }
                next += message.records;
            }
        }
    }
}

/// Sends each winner to the DLQ on its own, with the reason, its key and its version.
async fn dead_letter_records(
    d: &Drainer,
    take: &Take,
    dead: Vec<(usize, String)>,
    secured: &mut [bool],
    report: &mut DrainReport,
) {
    for (w, reason) in dead {
        let first_sent = take.first_sent_of(w);
        secured[w] = dead_letter(d, &take.records[w], &reason, first_sent, report).await;
    }
}

/// Sends each record that vetting refused to the DLQ; which ones were sent.
async fn dead_letter_refused(d: &Drainer, take: &Take, report: &mut DrainReport) -> Vec<bool> {
    let mut sent = Vec::with_capacity(take.refused.len());
    for r in &take.refused {
        let first_sent = take.messages[r.message].first_sent_ms;
        let reason = format!("refused: {}", r.reason);
        sent.push(dead_letter(d, &r.record, &reason, first_sent, report).await);
        report.refused += 1;
    }
    sent
}

/// Sends one record to the DLQ on its own, with the reason, its key and its version; whether
/// SQS took it.
async fn dead_letter(
    d: &Drainer,
    record: &ChangeRecord,
    reason: &str,
    first_sent_ms: u64,
    report: &mut DrainReport,
) -> bool {
    let key = describe_key(&record.key);
    let reason = format!("{reason}; key {key}; version {}", record.version);
    let body = match pack(std::slice::from_ref(record)) {
        Ok(b) => b.into_iter().flatten().next().map(|m| m.body),
        Err(_) => None,
    };
    let Some(body) = body else { return false };
    report.sqs_requests += 1;
    match d
        .dlq
        .send_with_reason(&body, 1, &reason, first_sent_ms)
        .await
    {
        Ok(()) => {
            tracing::warn!(key = %key, reason = %reason, "record dead-lettered");
            report.dlq_records += 1;
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "dead-lettering failed: leaving the message");
            false
        }
    }
}

/// Sends each unreadable message whole to the DLQ; it is deleted only once that worked.
async fn dead_letter_poison<'t>(
    d: &Drainer,
    take: &'t Take,
    delete: &mut Vec<&'t str>,
    left: &mut Vec<&'t str>,
    report: &mut DrainReport,
) {
    for p in &take.poison {
        let reason = format!("unreadable buffer message {}: {}", p.message_id, p.reason);
        report.sqs_requests += 1;
        match d
            .dlq
            .send_with_reason(&p.body, 0, &reason, (d.clock)())
            .await
        {
            Ok(()) => {
                tracing::warn!(message_id = %p.message_id, reason = %reason, "message dead-lettered");
                report.dlq_messages += 1;
                delete.push(&p.receipt);
            }
            Err(e) => {
                tracing::warn!(error = %e, "dead-lettering failed: leaving the message");
                left.push(&p.receipt);
            }
        }
    }
}

async fn delete_messages(d: &Drainer, delete: &[&str], report: &mut DrainReport) {
    if delete.is_empty() {
        return;
    }
    report.sqs_requests += delete.len().div_ceil(10) as u64;
    match d.buffer.delete(delete).await {
        Ok(not_deleted) => {
            report.deleted += (delete.len() - not_deleted.len()) as u64;
            report.left += not_deleted.len() as u64;
        }
        Err(e) => {
            tracing::warn!(error = %e, "delete failed: the messages will come back (duplicates are harmless)");
            report.left += delete.len() as u64;
        }
    }
}
