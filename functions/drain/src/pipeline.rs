//! The pipeline that ties the stages together: while one take is applied and another settled,
//! the next one is already being received. At most one receive, one apply and one settle run at
//! a time, and at most `takes_in_flight` takes are held (received and not yet settled).
//!
//! [`Pipeline`] holds the stages in flight and what the invocation has learnt so far (is the
//! destination answering, is the call stopping); it starts what may start, waits for the next
//! event and takes it in, until it is stopping and holds nothing.

use crate::apply::{apply_stage, Applied};
use crate::pacing::Pacing;
use crate::peer_gate;
use crate::receive::{receive_stage, take_of, Arrival, Received};
use crate::report::{DrainReport, StopReason};
use crate::settle::settle_stage;
use crate::take::{Outcome, Take};
use crate::Drainer;
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// A take shorter than this would mostly be receive and settle overhead.
const SHORTEST_TAKE: Duration = Duration::from_millis(100);

/// The instants that bound one invocation.
#[derive(Clone, Copy)]
pub(crate) struct Times {
    /// No take and no write starts after this.
    pub apply_end: Instant,
    /// A write still running now is abandoned (and its record re-queued).
    pub put_cut: Instant,
    /// The invocation's end: a settle still running now is abandoned rather than killed with
    /// the Lambda (what it had not deleted comes back after its visibility timeout).
    pub settle_end: Instant,
}

/// How long a take spent in each stage before settling (for the debug log).
#[derive(Clone, Copy)]
pub(crate) struct TakeTiming {
    pub receive_ms: u64,
    /// How long the received take waited for the previous apply to finish.
    pub wait_ms: u64,
    pub apply_ms: u64,
}

/// Runs takes for `budget`, then logs and returns what they did.
pub(crate) async fn run(drainer: &Drainer, budget: Duration) -> DrainReport {
    let start = Instant::now();
    let reserve = drainer.settings.settle_reserve.min(budget / 2);
    let times = Times {
        apply_end: start + budget - reserve,
        put_cut: start + budget - reserve / 2,
        settle_end: start + budget,
    };
    let mut pipeline = Pipeline::new(drainer, times);
    // Boxed: inlining this future into the pipeline's overflows the compiler's layout depth.
    if let Some((reason, _)) = Box::pin(peer_gate::check(drainer)).await {
        let mut report = pipeline.report;
        report.stop_reason = reason;
        report.elapsed_ms = start.elapsed().as_millis() as u64;
        return report;
    }
    let stop_reason = pipeline.until_stopped().await;
    if let Some(cap) = pipeline.pacing.as_ref().and_then(|p| p.cap.as_ref()) {
        pipeline.report.write_units = Some(cap.units);
        pipeline.report.cap_wait_ms = Some(cap.waited_ms(Instant::now()));
        let records = pipeline.report.records;
        pipeline.report.apply_ms = cap.busy_ms(records, pipeline.report.apply_ms);
    }
    let mut report = pipeline.report;
    report.stop_reason = stop_reason;
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    report.compute_lag();
    log_finished(&report);
    report
}

/// One invocation's stages in flight and what it knows so far.
struct Pipeline<'a> {
    drainer: &'a Drainer,
    times: Times,
    /// The counts of every stage finished so far.
    report: DrainReport,
    /// At most this many takes held at once.
    depth: usize,
    /// The write pacing, lent to the apply stage while it runs.
    pacing: Option<Pacing>,
    /// When the destination last answered a ping or a write.
    last_answer: Option<Instant>,
    /// The pause after a transport failure; doubles while failures follow each other.
    transport_pause: Duration,
    /// Records per message in the last take: sizes the next one (`take_records`).
    records_per_message: Option<f64>,
    receiving: Option<BoxFuture<'a, Received>>,
    /// A received take waiting for the apply stage.
    ready: Option<(Take, Instant, Arrival)>,
    applying: Option<BoxFuture<'a, Applied>>,
    to_settle: VecDeque<(Take, Vec<Outcome>, Option<TakeTiming>)>,
    settling: Option<BoxFuture<'a, DrainReport>>,
    /// Once set, nothing new is received and the call returns when the pipeline is empty.
    stopping: Option<StopReason>,
    /// A write failed for transport reasons: take nothing more, settle what is held, then
    /// pause and ping again.
    halted: bool,
    paused_until: Option<Instant>,
}

/// What the pipeline waits for.
enum Event {
    Received(Received),
    Applied(Box<Applied>),
    Settled(DrainReport),
    /// The `stop` token was cancelled.
    Stopped,
    /// The apply time ended or a pause is over.
    Woke,
}

impl<'a> Pipeline<'a> {
    fn new(drainer: &'a Drainer, times: Times) -> Self {
        let s = &drainer.settings;
        Pipeline {
            drainer,
            times,
            report: DrainReport {
                destination_reachable: true,
                ..Default::default()
            },
            depth: s.takes_in_flight.max(1),
            pacing: Some(Pacing::new(s, times.settle_end)),
            last_answer: None,
            transport_pause: s.transport_pause,
            records_per_message: None,
            receiving: None,
            ready: None,
            applying: None,
            to_settle: VecDeque::new(),
            settling: None,
            stopping: None,
            halted: false,
            paused_until: None,
        }
    }

    /// Runs the stages until the call is stopping and every take held is settled.
    async fn until_stopped(&mut self) -> StopReason {
        loop {
            let now = Instant::now();
            self.check_clock(now);
            self.start_apply();
            self.start_settle();
            self.pause_after_halt();
            self.start_receive(now);
            if self.is_empty() {
                if let Some(reason) = self.stopping {
                    return reason;
                }
            }
            match self.next_event().await {
                Event::Received(r) => self.on_received(r),
                Event::Applied(a) => self.on_applied(*a),
                Event::Settled(r) => {
                    self.settling = None;
                    self.report.absorb_counts(&r);
                }
                Event::Stopped => self.stopping = Some(StopReason::Stopped),
                Event::Woke => {}
            }
        }
    }

    /// Stops on a cancelled token or when too little time is left; ends a pause that is over.
    fn check_clock(&mut self, now: Instant) {
        if self.stopping.is_none() {
            if self.drainer.settings.stop.is_cancelled() {
                self.stopping = Some(StopReason::Stopped);
            } else if now + SHORTEST_TAKE >= self.times.apply_end {
                self.stopping = Some(StopReason::Budget);
            }
        }
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
        }
    }

    /// Applies the received take, or, when nothing more is to be written, hands it to the
    /// settle stage untouched (its records are re-queued as never attempted).
    fn start_apply(&mut self) {
        if self.applying.is_some() {
            return;
        }
        let Some((take, received_at, arrival)) = self.ready.take() else {
            return;
        };
        if self.stopping.is_some() || self.halted {
            let outcomes = vec![Outcome::Unattempted; take.records.len()];
            self.to_settle.push_back((take, outcomes, None));
        } else if let Some(pacing) = self.pacing.take() {
            let timing = TakeTiming {
                receive_ms: arrival.receive_ms,
                wait_ms: received_at.elapsed().as_millis() as u64,
                apply_ms: 0,
            };
            let stage = apply_stage(self.drainer, take, arrival, self.times, pacing, timing);
            self.applying = Some(Box::pin(stage));
        } else {
            self.ready = Some((take, received_at, arrival));
        }
    }

    fn start_settle(&mut self) {
        if self.settling.is_none() {
            if let Some((take, outcomes, timing)) = self.to_settle.pop_front() {
                let stage =
                    settle_stage(self.drainer, take, outcomes, timing, self.times.settle_end);
                self.settling = Some(Box::pin(stage));
            }
        }
    }

    /// Once every take received before a transport failure is settled or on its way: pause,
    /// then ping before taking anything. A real outage fails that ping and the drain returns;
    /// a passing hiccup costs a pause rather than the rest of the invocation.
    fn pause_after_halt(&mut self) {
        if !self.halted
            || self.receiving.is_some()
            || self.applying.is_some()
            || self.ready.is_some()
        {
            return;
        }
        self.halted = false;
        let resume = Instant::now() + self.transport_pause;
        if resume + SHORTEST_TAKE >= self.times.apply_end {
            self.stopping
                .get_or_insert(StopReason::DestinationUnreachable);
        } else {
            self.paused_until = Some(resume);
            self.transport_pause = (self.transport_pause * 2).min(Duration::from_secs(10));
        }
    }

    /// Starts receiving the next take when nothing stands in the way and fewer than `depth`
    /// takes are held.
    fn start_receive(&mut self, now: Instant) {
        let held = usize::from(self.ready.is_some())
            + usize::from(self.applying.is_some())
            + self.to_settle.len()
            + usize::from(self.settling.is_some());
        if self.receiving.is_some()
            || self.stopping.is_some()
            || self.halted
            || self.paused_until.is_some()
            || self.ready.is_some()
            || held >= self.depth
        {
            return;
        }
        let s = &self.drainer.settings;
        let ping_due = self
            .last_answer
            .is_none_or(|t| now.duration_since(t) >= s.ping_interval);
        let wanted = crate::cap::messages_for_next_take(s, self.records_per_message);
        let stage = receive_stage(self.drainer, self.times, ping_due, wanted);
        self.receiving = Some(Box::pin(stage));
    }

    fn is_empty(&self) -> bool {
        self.receiving.is_none()
            && self.applying.is_none()
            && self.settling.is_none()
            && self.ready.is_none()
            && self.to_settle.is_empty()
    }

    async fn next_event(&mut self) -> Event {
        let pause = self.paused_until;
        let apply_end = self.times.apply_end;
        let drainer = self.drainer;
        let stop = &drainer.settings.stop;
        let stopping = self.stopping.is_some();
        tokio::select! {
            r = maybe(&mut self.receiving) => Event::Received(r),
            a = maybe(&mut self.applying) => Event::Applied(Box::new(a)),
            r = maybe(&mut self.settling) => Event::Settled(r),
            _ = stop.cancelled(), if !stopping => Event::Stopped,
            _ = tokio::time::sleep_until(apply_end), if !stopping => Event::Woke,
            _ = tokio::time::sleep_until(pause.unwrap_or(apply_end)), if pause.is_some() => Event::Woke,
        }
    }

    fn on_received(&mut self, r: Received) {
        self.receiving = None;
        self.report.absorb_counts(&r.report);
        if r.paused {
            self.stopping.get_or_insert(StopReason::Paused);
        }
        match r.ping {
            Some(true) => self.last_answer = Some(Instant::now()),
            Some(false) if r.denied => {
                self.stopping.get_or_insert(StopReason::AccessDenied);
            }
            Some(false) => {
                self.report.destination_reachable = false;
                self.stopping
                    .get_or_insert(StopReason::DestinationUnreachable);
            }
            None => {}
        }
        match r.messages {
            Err(e) => {
                tracing::error!(error = %e, "buffer receive failed");
                self.stopping.get_or_insert(StopReason::BufferUnavailable);
            }
            Ok(messages) if messages.is_empty() => {
                if r.ping != Some(false) && self.drainer.settings.return_when_idle {
                    self.stopping.get_or_insert(StopReason::Idle);
                }
            }
            Ok(messages) => {
                self.report.takes += 1;
                let count = messages.len();
                let (take, arrival) = take_of(self.drainer, messages, r.started);
                self.records_per_message = Some(take.records.len().max(1) as f64 / count as f64);
                self.report.records += take.records.len() as u64;
                self.report.coalesced += take.coalesced() as u64;
                self.ready = Some((take, Instant::now(), arrival));
            }
        }
    }

    fn on_applied(&mut self, a: Applied) {
        self.applying = None;
        self.pacing = Some(a.pacing);
        let r = &a.report;
        // A write the destination answered is as good a sign of life as a ping.
        if r.applied + r.stale + r.conflicts + r.pending + r.throttled > 0 {
            self.last_answer = Some(Instant::now());
        }
        self.report.absorb_counts(&a.report);
        self.report.apply_ms += a.timing.apply_ms;
        match a.halt {
            None => self.transport_pause = self.drainer.settings.transport_pause,
            Some(StopReason::DestinationUnreachable) => {
                self.report.destination_reachable = false;
                self.last_answer = None;
                self.halted = true;
            }
            Some(reason) => {
                self.stopping.get_or_insert(reason);
            }
        }
        self.to_settle
            .push_back((a.take, a.outcomes, Some(a.timing)));
    }
}

/// The output of `f` if there is one in flight; never, otherwise (a disabled `select!` arm).
async fn maybe<T>(f: &mut Option<BoxFuture<'_, T>>) -> T {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn log_finished(report: &DrainReport) {
    tracing::info!(
        stop_reason = ?report.stop_reason,
        destination_reachable = report.destination_reachable,
        received = report.received,
        records = report.records,
        applied = report.applied,
        stale = report.stale,
        conflicts = report.conflicts,
        pending = report.pending,
        requeued = report.requeued,
        dlq = report.dlq(),
        throttled = report.throttled,
        transport_failures = report.transport_failures,
        lag_p50_ms = report.lag_p50_ms,
        lag_p99_ms = report.lag_p99_ms,
        elapsed_ms = report.elapsed_ms,
        "drain finished"
    );
}
