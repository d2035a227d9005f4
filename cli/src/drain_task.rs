//! Lambda's schedule, emulated: for each (source, destination) a drain invocation starts every
//! period and runs for its budget (longer than the period, so they overlap: the contract makes
//! overlapping drains safe, and the overlap leaves no gap in which nothing drains). An
//! invocation that finds the destination unreachable returns at once; the next tick tries
//! again. Nothing starts while the source region is cut off.
//!
//! Each invocation is a tick (`ferry_drain::tick`): it starts as many drain workers as the
//! backlog needs, up to `FERRY_MAX_DRAIN_CONCURRENCY` (1, no fan-out, when unset), as tasks of
//! this process (`ferry_drain::LocalWorkers`), the way the Lambda starts
//! them as invocations.

use crate::cluster::BufferPair;
use crate::stats::{LagSample, Stats};
use ferry_aws::Table;
use ferry_core::{Clock, Config};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Drain workers per tick at most unless `FERRY_MAX_DRAIN_CONCURRENCY` says otherwise: one. The
/// sandbox's workers are tasks of one process sharing one moto, whose SQS answers slow down
/// with every concurrent caller; the template's default is 4.
pub const MAX_DRAIN_CONCURRENCY: u32 = 1;

/// Workers per tick at most: `FERRY_MAX_DRAIN_CONCURRENCY`, else [`MAX_DRAIN_CONCURRENCY`].
pub fn max_drain_concurrency() -> u32 {
    std::env::var("FERRY_MAX_DRAIN_CONCURRENCY")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(MAX_DRAIN_CONCURRENCY)
        .clamp(1, 64)
}

pub struct DrainTask {
    pub config: Config,
    pub pair: BufferPair,
    pub table: Table,
    pub clock: Clock,
    /// How long one invocation runs.
    pub budget: Duration,
    /// How often the schedule starts one (shorter than the budget: invocations overlap).
    pub period: Duration,
    pub cut_off: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
}

pub async fn run(task: DrainTask, mut stop: watch::Receiver<bool>) {
    let mut settings = ferry_drain::DrainSettings::with_budget(task.budget);
    // The write-rate cap (`FERRY_MAX_WCU`), split between overlapping ticks by their period.
    settings.max_wcu = ferry_drain::cap::max_wcu_from_process_env();
    settings.period = Some(task.period);
    // As for the Lambda: `FERRY_TAKES_IN_FLIGHT=1` gives the strictly sequential drain
    // (receive → apply → settle), for comparing lag with and without the pipeline.
    if let Some(n) = std::env::var("FERRY_TAKES_IN_FLIGHT")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        settings.takes_in_flight = n.clamp(1, 8);
    }
    settings.max_workers = max_drain_concurrency();
    settings.max_receive_count = Some(crate::cluster::BUFFER_MAX_RECEIVE_COUNT);
    let drainer = Arc::new(ferry_drain::Drainer {
        config: task.config.clone(),
        source_region: task.pair.source.clone(),
        destination_region: task.pair.destination.clone(),
        buffer: task.pair.buffer.clone(),
        dlq: task.pair.dlq.clone(),
        table: task.table.clone(),
        settings,
        clock: task.clock.clone(),
        peer: Default::default(),
        waits: Default::default(),
    });
    let task = Arc::new(task);
    let recorder = task.clone();
    let workers = Arc::new(ferry_drain::LocalWorkers::new(drainer.clone(), move |r| {
        record(&recorder, r)
    }));
    let ticker = Arc::new(ferry_drain::Ticker::default());
    let mut ticks = tokio::time::interval(task.period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if task.cut_off.load(Ordering::SeqCst) {
            continue;
        }
        // Each tick is a new invocation; it runs for its budget, longer than the period, so
        // consecutive invocations overlap and the buffer is never left untended.
        let (drainer, task, mut stop) = (drainer.clone(), task.clone(), stop.clone());
        let (workers, ticker) = (workers.clone(), ticker.clone());
        tokio::spawn(async move {
            let budget = drainer.settings.budget;
            let report = tokio::select! {
                r = ferry_drain::tick(&drainer, &ticker, workers.as_ref(), budget) => r,
                _ = stop.changed() => return,
            };
            record(&task, &report);
        });
    }
}

fn record(task: &DrainTask, report: &ferry_drain::DrainReport) {
    let now = task.stats.elapsed_ms();
    let start = task.stats.started_epoch_ms();
    task.stats.lag(
        &task.pair.destination,
        report.lag_ms.iter().enumerate().map(|(i, &lag)| LagSample {
            at_ms: now,
            written_at_ms: (start + now).saturating_sub(lag),
            lag_ms: lag,
            parts: report.lag_parts_ms.get(i).copied(),
        }),
    );
    task.stats.drained(&task.pair.destination, |t| {
        t.invocations += 1;
        t.workers_max = t.workers_max.max(report.workers);
        t.messages += report.received;
        t.records += report.records;
        t.applied += report.applied;
        t.stale += report.stale;
        t.conflicts += report.conflicts;
        t.pending += report.pending;
        t.requeued += report.requeued;
        t.dlq += report.dlq();
        t.sqs_requests += report.sqs_requests;
        t.unreachable += u64::from(!report.destination_reachable);
        t.merge_reads += report.merge_reads;
        t.merge_writes += report.merge_writes;
        t.dynamodb_requests += report.dynamodb_requests;
        t.pings += report.pings;
        t.mismatched += u64::from(matches!(
            report.stop_reason,
            ferry_drain::StopReason::ModeMismatch | ferry_drain::StopReason::SettingsMismatch
        ));
        if let Some(age) = report.replication_latency_ms {
            t.heartbeats += 1;
            t.replication_latency_ms = Some(age);
        }
    });
}
