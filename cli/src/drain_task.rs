//! Lambda's schedule, emulated: one drain per (source, destination) invoked back to back (a
//! new invocation as soon as one ends its budget, a pause when the destination is unreachable),
//! while the source region is not cut off.

use crate::cluster::BufferPair;
use crate::stats::{LagSample, Stats};
use ferry_aws::Table;
use ferry_core::{Clock, Config};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct DrainTask {
    pub config: Config,
    pub pair: BufferPair,
    pub table: Table,
    pub clock: Clock,
    pub budget: Duration,
    pub cut_off: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
}

pub async fn run(task: DrainTask, mut stop: watch::Receiver<bool>) {
    let settings = ferry_drain::DrainSettings::with_budget(task.budget);
    let drainer = ferry_drain::Drainer {
        config: task.config.clone(),
        source_region: task.pair.source.clone(),
        destination_region: task.pair.destination.clone(),
        buffer: task.pair.buffer.clone(),
        dlq: task.pair.dlq.clone(),
        table: task.table.clone(),
        settings,
        clock: task.clock.clone(),
    };
    loop {
        if *stop.borrow() {
            return;
        }
        if task.cut_off.load(Ordering::SeqCst) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let report = tokio::select! {
            r = ferry_drain::drain(&drainer) => r,
            _ = stop.changed() => return,
        };
        let now = task.stats.elapsed_ms();
        let start = task.stats.started_epoch_ms();
        task.stats.lag(
            &task.pair.destination,
            report.lag_ms.iter().map(|&lag| LagSample {
                at_ms: now,
                written_at_ms: (start + now).saturating_sub(lag),
                lag_ms: lag,
            }),
        );
        task.stats.drained(&task.pair.destination, |t| {
            t.invocations += 1;
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
        });
        if !report.destination_reachable {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
