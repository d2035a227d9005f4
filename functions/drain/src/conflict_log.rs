//! The drain's conflict log, wired: the apply stage builds an entry for each conflict it finds
//! (`ferry_core::conflict::entry`), the settle stage writes a take's entries in one batched,
//! best-effort step (`ferry_aws::ConflictLog`). The log never slows or stops replication: the
//! write is bounded by a short timeout and runs beside the settle, off the apply path; what is
//! left out (the invocation's cap) or lost (the log unavailable) is counted and logged, never
//! an error of the take, never a pending record. A take without conflicts sends nothing.

use crate::report::DrainReport;
use crate::Drainer;
use ferry_aws::conflict_log::Logged;
use ferry_aws::{ConflictLog, Table};
use ferry_core::conflict::{self, Entry, Quota};
use ferry_core::{ChangeRecord, Version};
use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

/// The longest a take's log write may take: the settle (and the next take's receive, which
/// waits for it) is held up at most this long, and only when the take had conflicts.
const WRITE_TIMEOUT: Duration = Duration::from_millis(1500);

tokio::task_local! {
    /// This invocation's quota of entries. Task-local because the pipeline runs every stage of
    /// one invocation in its own task and keeps no state for the log.
    static QUOTA: Cell<Quota>;
}

/// Runs one invocation (`fut`) with a fresh quota of `max_per_invocation` entries.
pub(crate) async fn in_invocation<F: Future>(d: &Drainer, fut: F) -> F::Output {
    let max = d
        .config
        .conflict_log
        .as_ref()
        .map_or(0, |l| l.max_per_invocation);
    QUOTA.scope(Cell::new(Quota::new(max)), fut).await
}

/// The log entry of a conflict found now, when the drain keeps a log.
pub(crate) fn entry(d: &Drainer, record: &ChangeRecord, winner: &Version) -> Option<Entry> {
    let settings = d.config.conflict_log.as_ref()?;
    let now_ms = (d.clock)();
    Some(conflict::entry(
        record,
        winner,
        &d.destination_region,
        now_ms,
        settings,
    ))
}

/// Attribute mode: the log entry of the values of `record` merged away (`lost`), when the drain
/// keeps a log and something was lost.
pub(crate) fn merge_entry(
    d: &Drainer,
    record: &ChangeRecord,
    lost: &[(String, Version)],
) -> Option<Entry> {
    let settings = d.config.conflict_log.as_ref()?;
    let now_ms = (d.clock)();
    conflict::merge_entry(record, lost, &d.destination_region, now_ms, settings)
}

/// Updates this invocation's quota (outside an invocation: a quota of its own, unbounded by
/// others).
fn with_quota<T>(f: impl FnOnce(&mut Quota) -> T, outside: T) -> T {
    QUOTA
        .try_with(|cell| {
            let mut q = cell.get();
            let out = f(&mut q);
            cell.set(q);
            out
        })
        .unwrap_or(outside)
}

/// Writes a take's entries, best-effort, and counts what became of them.
pub(crate) async fn write(d: &Drainer, entries: &[Entry], report: &mut DrainReport) {
    let Some(settings) = d.config.conflict_log.as_ref() else {
        return;
    };
    if entries.is_empty() {
        return;
    }
    let (left_before, granted, unavailable) = with_quota(
        |q| (q.left(), q.take(entries.len()), q.unavailable),
        (entries.len(), entries.len(), false),
    );
    let (to_write, left_out) = entries.split_at(granted);
    if unavailable {
        report.conflict_log_errors += left_out.len() as u64;
    } else if !left_out.is_empty() {
        report.conflicts_unlogged += left_out.len() as u64;
    }
    // Said once per invocation: when this take reached the cap.
    if !unavailable && !left_out.is_empty() && left_before > 0 {
        tracing::warn!(
            left_out = left_out.len(),
            cap = settings.max_per_invocation,
            "conflict log: this invocation's cap is reached; further conflicts are counted, not kept"
        );
    }
    if to_write.is_empty() {
        return;
    }
    // Counted as lost until the write says otherwise: a write cut short stays counted.
    report.conflict_log_errors += to_write.len() as u64;
    let log = ConflictLog::new(Table::new(d.table.client.clone(), settings.table.clone()));
    let (logged, error) = match tokio::time::timeout(WRITE_TIMEOUT, log.write(to_write)).await {
        Ok((logged, e)) => (logged, e.map(|e| e.to_string())),
        Err(_) => (
            Logged::default(),
            Some(format!("no answer within {} ms", WRITE_TIMEOUT.as_millis())),
        ),
    };
    report.conflict_log_errors -= logged.written as u64;
    report.conflicts_logged += logged.written as u64;
    if let Some(error) = error {
        with_quota(|q| q.unavailable = true, ());
        tracing::warn!(
            table = %settings.table,
            lost = to_write.len() - logged.written,
            error = %error,
            "conflict log unavailable: entries lost (counted as ConflictLogErrors); not tried again in this invocation; replication goes on"
        );
    } else if logged.failed > 0 {
        tracing::warn!(table = %settings.table, lost = logged.failed, "conflict log left entries unprocessed: lost");
    }
}
