//! The scheduled tick and its workers. A tick pings the destination, reads the buffer's depth,
//! asks `ferry_core::fanout::workers` how many drains the backlog needs, has the shell start the
//! extra ones ([`StartWorkers`]: asynchronous invokes of the same Lambda, or tasks in the local
//! sandbox) and then drains like any of them. Every worker is a plain drain: it pings before it
//! receives, so a destination that stops answering stops each of them within a ping interval,
//! and none burns a receive count. While the tick's own drain runs, the tick looks at the
//! buffer every [`grow_every`] of its budget and starts more workers if `ferry_core::fanout::grow` says the
//! backlog needs them. Workers end with the tick's budget (`until_ms`), so a tick's fan-out is
//! gone shortly after the next tick has sized its own: scaling down needs no state. (The budget
//! outlives the schedule's period, so two ticks overlap by a few seconds and no record waits
//! for a tick to start.)

use crate::report::DrainReport;
use crate::{drain_for, Drainer};
use ferry_core::fanout::{grow, workers, Backlog, Destination, FanoutPolicy, Look, Pace};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a tick under way looks at its buffer's depth to grow its fan-out: a tenth of its
/// budget, between 0.5 s and 5 s (a `GetQueueAttributes` each time: ~$0.01 a month per pair).
pub fn grow_every(budget: Duration) -> Duration {
    (budget / 10).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// Starts drain workers for the tick; the shell provides it.
pub trait StartWorkers: Send + Sync {
    /// Starts `count` workers that drain until `order.until_ms` (ms since the epoch); returns
    /// how many were started (a failed start is logged and not counted).
    fn start(&self, order: WorkerOrder, count: u32) -> BoxFuture<'_, u32>;
}

/// No fan-out: the tick drains alone.
pub struct NoWorkers;

impl StartWorkers for NoWorkers {
    fn start(&self, _: WorkerOrder, _: u32) -> BoxFuture<'_, u32> {
        Box::pin(async { 0 })
    }
}

/// A worker's event: `{"ferry_worker": {"until_ms": …}}`. Anything else is a scheduled tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEvent {
    pub ferry_worker: WorkerOrder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerOrder {
    /// The tick's end: a worker that starts late (queued behind throttling) drains only what
    /// is left of it, and one that starts after it does nothing.
    pub until_ms: u64,
    /// Workers of the tick when this one was started, itself included (a worker's pace is
    /// remembered with it).
    #[serde(default)]
    pub workers: u32,
}

impl WorkerEvent {
    /// The worker order in an event, if it is one.
    pub fn of(event: &serde_json::Value) -> Option<WorkerOrder> {
        serde_json::from_value::<WorkerEvent>(event.clone())
            .ok()
            .map(|e| e.ferry_worker)
    }

    pub fn payload(order: WorkerOrder) -> Vec<u8> {
        let event = WorkerEvent {
            ferry_worker: order,
        };
        serde_json::to_vec(&event).unwrap_or_default()
    }
}

/// The longest wait, from the buffer to the write, of the records applied since the last
/// [`Waits::take`]: what a tick's growth weighs beside the buffer's depth. Shared by the drains
/// of one [`Drainer`] (a tick and the local workers it starts).
#[derive(Debug, Default)]
pub struct Waits(AtomicU64);

impl Waits {
    pub fn note(&self, waited_ms: u64) {
        // Stored plus one: zero means no record since the last take.
        self.0
            .fetch_max(waited_ms.saturating_add(1), Ordering::Relaxed);
    }

    pub fn take(&self) -> Option<u64> {
        self.0.swap(0, Ordering::Relaxed).checked_sub(1)
    }
}

/// What a container remembers between invocations, as a tick or as a worker (Lambda hands a
/// tick to any warm container of the function): the last drain's [`Pace`], and when a drain
/// last found the destination silent. Both are forgotten after [`MEMORY`].
#[derive(Debug, Default)]
pub struct Ticker {
    last: Mutex<Option<(Pace, Instant)>>,
    silent_at: Mutex<Option<Instant>>,
}

/// How long what a container saw still describes the buffer.
const MEMORY: Duration = Duration::from_secs(180);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ticker {
    fn last(&self) -> Option<Pace> {
        lock(&self.last)
            .filter(|(_, at)| at.elapsed() < MEMORY)
            .map(|(pace, _)| pace)
    }

    /// The destination as this tick finds it.
    fn destination(&self, answers: bool) -> Destination {
        let mut silent_at = lock(&self.silent_at);
        if !answers {
            *silent_at = Some(Instant::now());
            return Destination::Silent;
        }
        match silent_at.take() {
            Some(at) if at.elapsed() < MEMORY => Destination::Back,
            _ => Destination::Answers,
        }
    }

    /// A drain that lost the destination measured nothing about rates: the pace from before
    /// the outage is kept, and the outage noted.
    fn remember(&self, report: &DrainReport, workers: u32) {
        if !report.destination_reachable {
            *lock(&self.silent_at) = Some(Instant::now());
            return;
        }
        let pace = Pace {
            workers: workers.max(1),
            records: report.records,
            elapsed_ms: report.elapsed_ms,
            busy_ms: report.apply_ms,
            records_per_message: report.records as f64 / report.received.max(1) as f64,
        };
        *lock(&self.last) = Some((pace, Instant::now()));
    }
}

/// One scheduled tick: sizes the fan-out, starts the extra workers, drains for `budget` while
/// growing the fan-out as the backlog asks.
pub async fn tick(
    d: &Drainer,
    ticker: &Ticker,
    start: &dyn StartWorkers,
    budget: Duration,
) -> DrainReport {
    let until_ms = (d.clock)() + budget.as_millis() as u64;
    let (wanted, backlog) = if d.settings.max_workers > 1 {
        fan_out(d, ticker, budget).await
    } else {
        (1, Backlog::default())
    };
    let order = WorkerOrder {
        until_ms,
        workers: wanted,
    };
    let started = if wanted > 1 {
        start.start(order, wanted - 1).await
    } else {
        0
    };
    if wanted > 1 {
        tracing::info!(wanted, started, "tick: drain workers started");
    }
    let draining = CancellationToken::new();
    let drain = async {
        let report = drain_for(d, budget).await;
        draining.cancel();
        report
    };
    let growth = Growth {
        start,
        until_ms,
        running: 1 + started,
        backlog,
        every: grow_every(budget),
        // A worker started later would have too little of the tick left to be worth its
        // receives and settles.
        until: Instant::now() + budget / 2,
    };
    let (mut report, running) = tokio::join!(drain, growth.run(d, &draining));
    report.workers = running;
    ticker.remember(&report, report.workers);
    report
}

/// The fan-out of a tick under way: it grows while the backlog does.
struct Growth<'a> {
    start: &'a dyn StartWorkers,
    /// The tick's end, and its workers'.
    until_ms: u64,
    /// Workers running, the tick's own drain included.
    running: u32,
    /// The backlog at the last look (the first: the tick's own, when it sized the fan-out).
    backlog: Backlog,
    every: Duration,
    /// No worker starts after this (half the tick's budget).
    until: Instant,
}

impl Growth<'_> {
    /// Looks at the buffer every [`grow_every`] until the tick's drain ends; returns the
    /// workers the tick ran in all.
    async fn run(mut self, d: &Drainer, draining: &CancellationToken) -> u32 {
        if d.settings.max_workers <= 1 {
            return self.running;
        }
        // Waits from before this tick say nothing of its load.
        d.waits.take();
        loop {
            let next = Instant::now() + self.every;
            if next >= self.until {
                return self.running;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = draining.cancelled() => return self.running,
            }
            let waited_ms = d.waits.take();
            let Ok(depth) = d.buffer.depth().await else {
                continue;
            };
            let now = Look {
                backlog: Backlog {
                    visible: depth.visible,
                },
                in_flight: depth.in_flight,
                waited_ms,
            };
            let more = grow(now, self.backlog, self.running, &policy(d, Duration::ZERO));
            self.backlog = now.backlog;
            if more > 0 {
                let order = WorkerOrder {
                    until_ms: self.until_ms,
                    workers: self.running + more,
                };
                self.running += self.start.start(order, more).await;
                tracing::info!(
                    visible = now.backlog.visible,
                    in_flight = now.in_flight,
                    waited_ms,
                    running = self.running,
                    "tick: the backlog grows or waits, more workers"
                );
            }
        }
    }
}

fn policy(d: &Drainer, budget: Duration) -> FanoutPolicy {
    FanoutPolicy {
        max_workers: d.settings.max_workers,
        budget_ms: budget.as_millis() as u64,
        ..FanoutPolicy::default()
    }
}

/// How many workers the tick runs, itself included, and the backlog it found.
async fn fan_out(d: &Drainer, ticker: &Ticker, budget: Duration) -> (u32, Backlog) {
    if crate::pause_gate::paused(d).await.is_some() {
        return (1, Backlog::default());
    }
    let answers = d.peer.mismatch().is_none()
        && matches!(
            tokio::time::timeout(d.settings.ping_timeout, d.table.ping()).await,
            Ok(Ok(()))
        );
    let destination = ticker.destination(answers);
    let visible = match d.buffer.depth().await {
        Ok(depth) => depth.visible,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the buffer's depth: the tick drains alone");
            return (1, Backlog::default());
        }
    };
    let last = ticker.last();
    let backlog = Backlog { visible };
    let n = workers(backlog, last, destination, &policy(d, budget));
    tracing::debug!(visible, ?destination, ?last, workers = n, "tick: fan-out");
    (n, backlog)
}

/// One worker: a drain for what is left of its tick's budget (at most the configured one).
pub async fn work(
    d: &Drainer,
    ticker: &Ticker,
    order: WorkerOrder,
    budget: Duration,
) -> DrainReport {
    let left = Duration::from_millis(order.until_ms.saturating_sub((d.clock)()));
    let budget = budget.min(left);
    if budget < Duration::from_secs(1) {
        tracing::info!(
            until_ms = order.until_ms,
            "worker started after its tick: nothing to do"
        );
        return DrainReport::default();
    }
    let mut report = drain_for(d, budget).await;
    report.workers = 1;
    ticker.remember(&report, order.workers);
    report
}

/// Starts workers as asynchronous invokes of this same function (`lambda:InvokeFunction`,
/// `InvocationType=Event`).
pub struct LambdaWorkers(pub ferry_aws::Function);

impl StartWorkers for LambdaWorkers {
    fn start(&self, order: WorkerOrder, count: u32) -> BoxFuture<'_, u32> {
        Box::pin(async move {
            let payload = WorkerEvent::payload(order);
            let starts = (0..count).map(|_| self.0.start(&payload));
            let mut started = 0;
            for r in futures::future::join_all(starts).await {
                match r {
                    Ok(()) => started += 1,
                    Err(e) => tracing::warn!(error = %e, "a drain worker did not start"),
                }
            }
            started
        })
    }
}

/// Starts workers as tasks of this process, all on one shared [`Drainer`] (the local sandbox,
/// the tests): they share its peer gate, and each pings the destination as a Lambda worker does.
pub struct LocalWorkers {
    drainer: Arc<Drainer>,
    /// The workers' own memory (a Lambda worker has its container's).
    ticker: Arc<Ticker>,
    on_done: Arc<dyn Fn(&DrainReport) + Send + Sync>,
    running: Mutex<Vec<tokio::task::JoinHandle<DrainReport>>>,
}

impl LocalWorkers {
    /// `on_done` sees each worker's report as it returns.
    pub fn new(
        drainer: Arc<Drainer>,
        on_done: impl Fn(&DrainReport) + Send + Sync + 'static,
    ) -> Self {
        LocalWorkers {
            drainer,
            ticker: Arc::default(),
            on_done: Arc::new(on_done),
            running: Mutex::new(Vec::new()),
        }
    }

    /// Waits for every worker started so far; returns their reports.
    pub async fn join(&self) -> Vec<DrainReport> {
        let running = std::mem::take(&mut *lock(&self.running));
        let mut reports = Vec::new();
        for handle in running {
            match handle.await {
                Ok(report) => reports.push(report),
                Err(e) => tracing::error!(error = %e, "a drain worker panicked"),
            }
        }
        reports
    }
}

impl StartWorkers for LocalWorkers {
    fn start(&self, order: WorkerOrder, count: u32) -> BoxFuture<'_, u32> {
        let mut running = lock(&self.running);
        running.retain(|h| !h.is_finished());
        for _ in 0..count {
            let (drainer, ticker) = (self.drainer.clone(), self.ticker.clone());
            let on_done = self.on_done.clone();
            running.push(tokio::spawn(async move {
                let budget = drainer.settings.budget;
                let report = work(&drainer, &ticker, order, budget).await;
                on_done(&report);
                report
            }));
        }
        Box::pin(async move { count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_events_are_told_from_ticks() {
        let order = WorkerOrder {
            until_ms: 1234,
            workers: 3,
        };
        let event: serde_json::Value =
            serde_json::from_slice(&WorkerEvent::payload(order)).expect("json");
        assert_eq!(WorkerEvent::of(&event), Some(order));
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/scheduled-event.json"
        );
        let text = std::fs::read_to_string(path).expect("fixture");
        let scheduled: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(WorkerEvent::of(&scheduled), None);
    }
}
