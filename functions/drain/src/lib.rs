//! # ferry-drain
//!
//! Applies one buffer queue (source region → destination region) to the destination table with
//! last-writer-wins conditional writes, as `docs/contract.md` specifies. Every decision
//! (unpacking, coalescing, the apply condition, the judgement of a refused write) is
//! `ferry-core`'s; this crate only schedules the I/O around them.
//!
//! One [`drain`] call runs *takes* until its budget is spent:
//!
//! 1. **Ping** the destination unless it answered within `ping_interval`. No answer: return
//!    without receiving — no receive count is burnt and nothing can reach the DLQ while a
//!    region is down. (A throttled ping counts as an answer.)
//! 2. **Receive** up to `take_messages` messages — fewer once a take has shown how many records
//!    a message carries (`take_records` bounds a take's memory) — with a long poll, then
//!    parallel short polls if the first came back full; **unpack** them (an unreadable message
//!    is dead-lettered whole with the reason), **coalesce** per key across the whole take.
//! 3. **Write** each key's winner with `Table::put_if(image, apply_condition(..))` (attribute
//!    mode: merge it into the item, `merge_apply.rs`), at most `max_in_flight` at once. A
//!    refused write is **judged**: stale → done; conflict → done, counted and logged with both
//!    versions; pending → not done. Throttling halves the concurrency and pauses with an
//!    exponential back-off, and the record is retried in the same take. A transport failure (or
//!    a configuration error) halts the take: nothing new is started, and the drain returns
//!    after settling. A record DynamoDB rejects as invalid goes to the DLQ; the rest proceeds.
//! 4. **Settle**: winners not done are put back on the buffer as new messages (packed by the
//!    core), rejected ones are dead-lettered, and only then is each message whose records are
//!    all secured deleted. See [`take`] for the rules and the crate's README for why.
//!
//! The call is a plain `async fn` on a shared [`Drainer`]: the Lambda's `main.rs` calls it once
//! per scheduled event; the local sandbox can call it on a timer, with short budgets, even
//! overlapping (SQS visibility keeps two calls from holding the same message, and every write
//! is idempotent).

pub mod env;
mod merge_apply;
pub mod peer_gate;
pub mod report;
pub mod settings;
mod take;

pub use env::{DrainEnv, EnvError};
pub use peer_gate::PeerGate;
pub use report::{emf_line, percentile, ConflictSample, DrainReport, LagParts, StopReason};
pub use settings::DrainSettings;

use ferry_aws::ATTEMPTS_ATTRIBUTE;
use ferry_aws::{ApplyOutcome, AwsError, Buffer, ErrorKind, ReceivedWithAttributes, Table};
use ferry_core::apply::PendingReason;
use ferry_core::buffer::pack;
use ferry_core::item::describe_key;
use ferry_core::{ChangeRecord, Clock, Config, Judgement, MergeMode, Version};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use take::{Disposition, Outcome, Take};
use tokio::time::Instant;

/// Everything one drain needs: the shared config, the pair's buffer and DLQ (in the source
/// region), the destination table, its pacing and a clock (for lag).
pub struct Drainer {
    pub config: Config,
    pub source_region: String,
    pub destination_region: String,
    pub buffer: Buffer,
    pub dlq: Buffer,
    /// The destination table.
    pub table: Table,
    pub settings: DrainSettings,
    pub clock: Clock,
    /// The destination's published settings, as last checked (start with `Default`).
    pub peer: PeerGate,
}

impl std::fmt::Debug for Drainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drainer")
            .field("source_region", &self.source_region)
            .field("destination_region", &self.destination_region)
            .field("buffer", &self.buffer.queue_url)
            .field("dlq", &self.dlq.queue_url)
            .field("table", &self.table.name)
            .field("settings", &self.settings)
            .finish()
    }
}

/// Drains for `drainer.settings.budget`.
pub async fn drain(drainer: &Drainer) -> DrainReport {
    drain_for(drainer, drainer.settings.budget).await
}

/// Drains for `budget` (the Lambda passes what its deadline allows, if that is less).
///
/// The takes are pipelined: while one take is applied and another settled, the next one is
/// already being received, so neither SQS's receive nor its delete latency is added to every
/// record's lag. At most `settings.takes_in_flight` takes are held at once (received and not
/// yet settled; 1 is the strictly sequential receive → apply → settle). Every take is settled
/// by the rules of [`settle`] on its own: a message is deleted only after all its records are
/// done, and not-done records are re-queued before it is deleted.
pub async fn drain_for(drainer: &Drainer, budget: Duration) -> DrainReport {
    let span = tracing::info_span!(
        "drain",
        source = %drainer.source_region,
        destination = %drainer.destination_region,
    );
    tracing::Instrument::instrument(pipeline(drainer, budget), span).await
}

/// What a receive stage came back with.
struct Received {
    /// The ping's outcome, if one was due: `Some(false)` means the destination did not answer
    /// and nothing was received.
    ping: Option<bool>,
    messages: Result<Vec<ReceivedWithAttributes>, AwsError>,
    report: DrainReport,
    started: Instant,
}

/// What an apply stage came back with.
struct Applied {
    take: Take,
    outcomes: Vec<Outcome>,
    halt: Option<StopReason>,
    pacing: Pacing,
    report: DrainReport,
    timing: TakeTiming,
}

/// When a take's messages were sent to the buffer (by message of the take) and received.
struct Arrival {
    sent_at_ms: Vec<u64>,
    received_at_ms: u64,
    receive_ms: u64,
}

#[derive(Clone, Copy)]
struct TakeTiming {
    receive_ms: u64,
    /// How long the received take waited for the previous apply to finish.
    wait_ms: u64,
    apply_ms: u64,
}

async fn pipeline(drainer: &Drainer, budget: Duration) -> DrainReport {
    let start = Instant::now();
    let s = &drainer.settings;
    let reserve = s.settle_reserve.min(budget / 2);
    let times = Times {
        apply_end: start + budget - reserve,
        put_cut: start + budget - reserve / 2,
    };
    let times = &times;
    let mut report = DrainReport {
        destination_reachable: true,
        ..Default::default()
    };
    // Boxed: inlining this future into the pipeline's overflows the compiler's layout depth.
    if let Some((reason, _)) = Box::pin(peer_gate::check(drainer)).await {
        report.stop_reason = reason;
        report.elapsed_ms = start.elapsed().as_millis() as u64;
        return report;
    }
    let depth = s.takes_in_flight.max(1);
    let mut pacing = Some(Pacing::new(s));
    let mut last_answer: Option<Instant> = None;
    let mut transport_pause = s.transport_pause;
    // Records per message in the last take: sizes the next one (`take_records`).
    let mut records_per_message: Option<f64> = None;
    // The stages in flight. At most one receive, one apply and one settle run at a time.
    let mut receiving: Option<BoxFuture<'_, Received>> = None;
    let mut ready: Option<(Take, Instant, Arrival)> = None;
    let mut applying: Option<BoxFuture<'_, Applied>> = None;
    let mut to_settle: VecDeque<(Take, Vec<Outcome>, Option<TakeTiming>)> = VecDeque::new();
    let mut settling: Option<BoxFuture<'_, DrainReport>> = None;
    // Once set, nothing new is received and the call returns when the pipeline is empty.
    let mut stopping: Option<StopReason> = None;
    // A write failed for transport reasons: take nothing more, settle what is held, then pause
    // and ping again.
    let mut halted = false;
    let mut paused_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stopping.is_none() {
            if s.stop.is_cancelled() {
                stopping = Some(StopReason::Stopped);
            } else if now + Duration::from_millis(100) >= times.apply_end {
                // A take shorter than this would mostly be receive and settle overhead.
                stopping = Some(StopReason::Budget);
            }
        }
        if paused_until.is_some_and(|t| now >= t) {
            paused_until = None;
        }
        // Apply the received take, or, when nothing more is to be written, hand it to the
        // settle stage untouched (its records are re-queued as never attempted).
        if applying.is_none() {
            if let Some((take, received_at, arrival)) = ready.take() {
                if stopping.is_some() || halted {
                    let outcomes = vec![Outcome::Unattempted; take.records.len()];
                    to_settle.push_back((take, outcomes, None));
                } else if let Some(p) = pacing.take() {
                    let timing = TakeTiming {
                        receive_ms: arrival.receive_ms,
                        wait_ms: received_at.elapsed().as_millis() as u64,
                        apply_ms: 0,
                    };
                    applying = Some(Box::pin(apply_stage(
                        drainer, take, arrival, times, p, timing,
                    )));
                } else {
                    ready = Some((take, received_at, arrival));
                }
            }
        }
        if settling.is_none() {
            if let Some((take, outcomes, timing)) = to_settle.pop_front() {
                settling = Some(Box::pin(settle_stage(drainer, take, outcomes, timing)));
            }
        }
        let held = usize::from(ready.is_some())
            + usize::from(applying.is_some())
            + to_settle.len()
            + usize::from(settling.is_some());
        if halted && receiving.is_none() && applying.is_none() && ready.is_none() {
            // Every take received before the failure is settled or on its way: pause, then
            // ping before taking anything. A real outage fails that ping and the drain
            // returns; a passing hiccup costs a pause rather than the rest of the invocation.
            halted = false;
            let resume = Instant::now() + transport_pause;
            if resume + Duration::from_millis(100) >= times.apply_end {
                stopping.get_or_insert(StopReason::DestinationUnreachable);
            } else {
                paused_until = Some(resume);
                transport_pause = (transport_pause * 2).min(Duration::from_secs(10));
            }
        }
        if receiving.is_none()
            && stopping.is_none()
            && !halted
            && paused_until.is_none()
            && ready.is_none()
            && held < depth
        {
            let ping_due = last_answer.is_none_or(|t| now.duration_since(t) >= s.ping_interval);
            let wanted = s.messages_for_next_take(records_per_message);
            receiving = Some(Box::pin(receive_stage(drainer, times, ping_due, wanted)));
        }
        let idle = receiving.is_none()
            && applying.is_none()
            && settling.is_none()
            && ready.is_none()
            && to_settle.is_empty();
        if idle {
            if let Some(reason) = stopping {
                report.stop_reason = reason;
                break;
            }
        }
        let pause = paused_until;
        tokio::select! {
            r = maybe(&mut receiving) => {
                receiving = None;
                report.absorb_counts(&r.report);
                match r.ping {
                    Some(true) => last_answer = Some(Instant::now()),
                    Some(false) => {
                        report.destination_reachable = false;
                        stopping.get_or_insert(StopReason::DestinationUnreachable);
                    }
                    None => {}
                }
                match r.messages {
                    Err(e) => {
                        tracing::error!(error = %e, "buffer receive failed");
                        stopping.get_or_insert(StopReason::BufferUnavailable);
                    }
                    Ok(messages) if messages.is_empty() => {
                        if r.ping != Some(false) && s.return_when_idle {
                            stopping.get_or_insert(StopReason::Idle);
                        }
                    }
                    Ok(messages) => {
                        report.takes += 1;
                        let sent: std::collections::HashMap<String, u64> = messages
                            .iter()
                            .map(|m| (m.message.message_id.clone(), m.message.sent_at_ms))
                            .collect();
                        let count = messages.len();
                        let take = Take::build(messages);
                        records_per_message =
                            Some(take.records.len().max(1) as f64 / count as f64);
                        report.records += take.records.len() as u64;
                        report.coalesced += take.coalesced() as u64;
                        let arrival = Arrival {
                            sent_at_ms: take
                                .messages
                                .iter()
                                .map(|m| sent.get(&m.message_id).copied().unwrap_or(0))
                                .collect(),
                            received_at_ms: (drainer.clock)(),
                            receive_ms: r.started.elapsed().as_millis() as u64,
                        };
                        ready = Some((take, Instant::now(), arrival));
                    }
                }
            }
            a = maybe(&mut applying) => {
                applying = None;
                pacing = Some(a.pacing);
                let answers = |r: &DrainReport| r.applied + r.stale + r.conflicts + r.pending + r.throttled;
                // A write the destination answered is as good a sign of life as a ping.
                if answers(&a.report) > 0 {
                    last_answer = Some(Instant::now());
                }
                report.absorb_counts(&a.report);
                match a.halt {
                    None => transport_pause = s.transport_pause,
                    Some(StopReason::DestinationUnreachable) => {
                        report.destination_reachable = false;
                        last_answer = None;
                        halted = true;
                    }
                    Some(reason) => {
                        stopping.get_or_insert(reason);
                    }
                }
                to_settle.push_back((a.take, a.outcomes, Some(a.timing)));
            }
            r = maybe(&mut settling) => {
                settling = None;
                report.absorb_counts(&r);
            }
            _ = s.stop.cancelled(), if stopping.is_none() => {
                stopping = Some(StopReason::Stopped);
            }
            _ = tokio::time::sleep_until(times.apply_end), if stopping.is_none() => {}
            _ = tokio::time::sleep_until(pause.unwrap_or(times.apply_end)), if pause.is_some() => {}
        }
    }
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    report.compute_lag();
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
    report
}

/// The output of `f` if there is one in flight; never, otherwise (a disabled `select!` arm).
async fn maybe<T>(f: &mut Option<BoxFuture<'_, T>>) -> T {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Pings the destination if that is due (and receives nothing if it does not answer), then
/// receives one take.
async fn receive_stage(d: &Drainer, times: &Times, ping_due: bool, wanted: usize) -> Received {
    let started = Instant::now();
    let mut report = DrainReport::default();
    let mut ping = None;
    if ping_due {
        report.dynamodb_requests += 1;
        report.pings += 1;
        let timeout = d
            .settings
            .ping_timeout
            .min(times.apply_end.saturating_duration_since(started));
        let answered = match tokio::time::timeout(timeout, d.table.ping()).await {
            // A throttled ping is an answer: the destination is up, only busy.
            Ok(Ok(())) => true,
            Ok(Err(e)) if e.kind == ErrorKind::Throttled => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "destination not answering: not receiving");
                false
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = timeout.as_millis() as u64,
                    "destination ping timed out: not receiving"
                );
                false
            }
        };
        ping = Some(answered);
        if !answered {
            return Received {
                ping,
                messages: Ok(Vec::new()),
                report,
                started,
            };
        }
    }
    let messages = receive_take(d, times, wanted, &mut report).await;
    Received {
        ping,
        messages,
        report,
        started,
    }
}

async fn apply_stage(
    d: &Drainer,
    mut take: Take,
    arrival: Arrival,
    times: &Times,
    mut pacing: Pacing,
    mut timing: TakeTiming,
) -> Applied {
    let started = Instant::now();
    let mut report = DrainReport::default();
    let (outcomes, halt) = match merge_apply::dispatch(d, &mut take) {
        Some(mode) => apply_take(d, mode, &take, &arrival, times, &mut pacing, &mut report).await,
        // A record of the other mode: nothing is applied, and the pipeline stops.
        None => (
            vec![Outcome::Failed; take.records.len()],
            Some(StopReason::ModeMismatch),
        ),
    };
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

async fn settle_stage(
    d: &Drainer,
    take: Take,
    outcomes: Vec<Outcome>,
    timing: Option<TakeTiming>,
) -> DrainReport {
    let started = Instant::now();
    let mut report = DrainReport::default();
    settle(d, &take, &outcomes, &mut report).await;
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

/// The instants that bound one invocation.
struct Times {
    /// No take and no write starts after this.
    apply_end: Instant,
    /// A write still running now is abandoned (and its record re-queued).
    put_cut: Instant,
}

/// Receives one take of `wanted` messages: a long poll for up to 10 and, if it came back full,
/// short polls in parallel for the rest. A receive call is never abandoned once sent
/// (the messages it took would stay invisible and come back with a burnt receive count), so
/// its long poll is bounded instead, by `receive_wait_s` and the budget left.
async fn receive_take(
    d: &Drainer,
    times: &Times,
    wanted: usize,
    report: &mut DrainReport,
) -> Result<Vec<ReceivedWithAttributes>, AwsError> {
    let s = &d.settings;
    let left_s = times
        .apply_end
        .saturating_duration_since(Instant::now())
        .as_secs() as i32;
    let wait_s = s.receive_wait_s.min(left_s - 1).max(0);
    let visibility = Some(s.visibility_timeout_s);
    let attributes = [ATTEMPTS_ATTRIBUTE];
    report.sqs_requests += 1;
    report.receives += 1;
    let first = wanted.clamp(1, 10);
    let mut messages = d
        .buffer
        .receive_with_attributes(first as i32, wait_s, visibility, &attributes)
        .await?;
    let more = wanted.saturating_sub(10).div_ceil(10);
    if messages.len() == first && more > 0 {
        let extra = futures::future::join_all((0..more).map(|_| {
            d.buffer
                .receive_with_attributes(10, 0, visibility, &attributes)
        }))
        .await;
        report.sqs_requests += more as u64;
        report.receives += more as u64;
        for r in extra {
            match r {
                Ok(m) => messages.extend(m),
                // The first receive worked: go on with what came back.
                Err(e) => tracing::warn!(error = %e, "extra receive failed"),
            }
        }
    }
    if wait_s == 0 && messages.is_empty() && !s.return_when_idle {
        // No long poll left to wait in: do not spin on an empty queue.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report.received += messages.len() as u64;
    for m in &messages {
        report.max_receive_count = report.max_receive_count.max(m.message.receive_count);
    }
    Ok(messages)
}

/// The write concurrency and throttling back-off, kept across the takes of one invocation:
/// multiplicative decrease (at most once per pause, so a burst of throttled answers to writes
/// sent together counts once), additive increase on every answered write.
struct Pacing {
    max: usize,
    limit: usize,
    backoff: Duration,
    initial: Duration,
    max_backoff: Duration,
    pause_until: Instant,
}

impl Pacing {
    fn new(s: &DrainSettings) -> Self {
        Pacing {
            max: s.max_in_flight.max(1),
            limit: s.max_in_flight.max(1),
            backoff: s.throttle_backoff,
            initial: s.throttle_backoff,
            max_backoff: s.max_throttle_backoff.max(s.throttle_backoff),
            pause_until: Instant::now(),
        }
    }

    fn on_answer(&mut self) {
        self.limit = (self.limit + 1).min(self.max);
        self.backoff = self.backoff.mul_f64(0.9).max(self.initial);
    }

    fn on_throttle(&mut self, now: Instant) {
        if now >= self.pause_until {
            self.limit = (self.limit / 2).max(1);
            self.pause_until = now + self.backoff;
            self.backoff = (self.backoff * 2).min(self.max_backoff);
        }
    }
}

/// What one winner's write came to, in either merge mode.
enum Wrote {
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
}

/// The DynamoDB requests one write made, as the report counts them.
#[derive(Clone, Copy, Default)]
struct Cost {
    /// Item mode's conditional put.
    puts: u64,
    /// Attribute mode's merge rounds: a read each, and a write unless nothing changed.
    reads: u64,
    writes: u64,
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
    let wrote = match d.table.apply(record, &d.config).await? {
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

/// Writes the take's winners in `mode`; returns each record's outcome and why the take was
/// halted, if it was. The mode decides only what one winner's write is and what it costs.
async fn apply_take(
    d: &Drainer,
    mode: MergeMode,
    take: &Take,
    arrival: &Arrival,
    times: &Times,
    pacing: &mut Pacing,
    report: &mut DrainReport,
) -> (Vec<Outcome>, Option<StopReason>) {
    let mut outcomes = vec![Outcome::Unattempted; take.records.len()];
    let mut queue: VecDeque<usize> = take.winners.iter().copied().collect();
    let mut inflight = FuturesUnordered::new();
    let mut halt: Option<StopReason> = None;
    let write = |i: usize| {
        let record = &take.records[i];
        let write = async move {
            match mode {
                MergeMode::Item => put(d, record).await,
                MergeMode::Attribute => merge_apply::merge(d, record).await,
            }
        };
        async move { (i, tokio::time::timeout_at(times.put_cut, write).await) }
    };
    // Halts keep the most serious reason (the enum's order).
    let raise = |halt: &mut Option<StopReason>, reason: StopReason| {
        *halt = Some(halt.map_or(reason, |h| h.max(reason)));
    };
    loop {
        if halt.is_none() {
            if d.settings.stop.is_cancelled() {
                raise(&mut halt, StopReason::Stopped);
            } else if Instant::now() >= times.apply_end {
                raise(&mut halt, StopReason::Budget);
            }
        }
        if halt.is_none() && Instant::now() >= pacing.pause_until {
            while inflight.len() < pacing.limit {
                let Some(i) = queue.pop_front() else { break };
                inflight.push(write(i));
            }
        }
        if inflight.is_empty() && (queue.is_empty() || halt.is_some()) {
            break;
        }
        let can_launch = halt.is_none() && !queue.is_empty() && inflight.len() < pacing.limit;
        let wake = pacing.pause_until;
        tokio::select! {
            biased;
            Some((i, result)) = inflight.next(), if !inflight.is_empty() => {
                let now = Instant::now();
                let record = &take.records[i];
                let (cost, answered) = match &result {
                    // A record refused before anything was sent is no answer of the destination.
                    Ok(Ok((wrote, cost))) => (*cost, !matches!(wrote, Wrote::Unreadable(_))),
                    _ => (Cost::unanswered(mode), false),
                };
                cost.count(report);
                if answered {
                    pacing.on_answer();
                }
                match result {
                    Err(_) => {
                        report.cut += 1;
                        outcomes[i] = Outcome::Failed;
                        raise(&mut halt, StopReason::Budget);
                    }
                    Ok(Ok((Wrote::Written, _))) => {
                        report.applied += 1;
                        outcomes[i] = Outcome::Applied;
                        let applied_at = (d.clock)();
                        report.lag_ms.push(applied_at.saturating_sub(record.written_at_ms));
                        let sent = arrival.sent_at_ms.get(take.message_of[i]).copied().unwrap_or(0);
                        let received = arrival.received_at_ms;
                        report.lag_parts_ms.push(LagParts {
                            to_buffer: sent.saturating_sub(record.written_at_ms),
                            in_buffer: received.saturating_sub(sent),
                            in_drain: applied_at.saturating_sub(received),
                            retried: take.attempts_of(i) > 0,
                        });
                    }
                    Ok(Ok((Wrote::Stale, _))) => {
                        report.stale += 1;
                        outcomes[i] = Outcome::Stale;
                    }
                    Ok(Ok((Wrote::Conflict { winner, loser }, _))) => {
                        conflict(d, record, winner, loser, report);
                        outcomes[i] = Outcome::Conflict;
                    }
                    Ok(Ok((Wrote::Pending(reason), _))) => {
                        report.pending += 1;
                        tracing::debug!(key = %describe_key(&record.key), reason = %reason, "pending");
                        outcomes[i] = Outcome::Pending(reason);
                    }
                    Ok(Ok((Wrote::OtherMode(why), _))) => {
                        tracing::error!(mismatch = true, reason = %why, "merge mode mismatch: stopping");
                        d.peer.stop(StopReason::ModeMismatch, why);
                        outcomes[i] = Outcome::Failed;
                        raise(&mut halt, StopReason::ModeMismatch);
                    }
                    Ok(Ok((Wrote::Unreadable(reason), _))) => {
                        tracing::warn!(key = %describe_key(&record.key), reason = %reason, "unreadable record: dead-lettering it");
                        outcomes[i] = Outcome::Invalid(reason);
                    }
                    Ok(Err(e)) => match e.kind {
                        ErrorKind::Throttled => {
                            report.throttled += 1;
                            pacing.on_throttle(now);
                            outcomes[i] = Outcome::Throttled;
                            // Retried in this take once the pause is over; re-queued if the
                            // take ends first.
                            queue.push_back(i);
                        }
                        ErrorKind::Transport => {
                            if report.transport_failures == 0 {
                                tracing::warn!(error = %e, "destination write failed for transport reasons: halting");
                            }
                            report.transport_failures += 1;
                            outcomes[i] = Outcome::Failed;
                            raise(&mut halt, StopReason::DestinationUnreachable);
                        }
                        ErrorKind::Invalid => {
                            tracing::warn!(key = %describe_key(&record.key), error = %e, "destination rejected the record: dead-lettering it");
                            let code = e.code.as_deref().unwrap_or("invalid request");
                            outcomes[i] = Outcome::Invalid(format!("{} {code}: {}", e.operation, e.message));
                        }
                        ErrorKind::Other => {
                            tracing::error!(key = %describe_key(&record.key), error = %e, "destination write failed: halting");
                            report.other_errors += 1;
                            outcomes[i] = Outcome::Failed;
                            raise(&mut halt, StopReason::DestinationError);
                        }
                    },
                }
            }
            _ = d.settings.stop.cancelled(), if halt.is_none() => {
                raise(&mut halt, StopReason::Stopped);
            }
            _ = tokio::time::sleep_until(times.apply_end), if halt.is_none() => {
                raise(&mut halt, StopReason::Budget);
            }
            _ = tokio::time::sleep_until(wake), if can_launch && wake > Instant::now() => {}
        }
    }
    // A halt for the budget or a stop is the normal end of the call, not of the take.
    (outcomes, halt)
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

/// Re-queues and dead-letters what the take did not finish, then deletes every message whose
/// records are all secured. Sends come before deletes: a crash in between leaves duplicates
/// (harmless, writes are idempotent), never a loss. A message that cannot be deleted is left
/// to come back after its visibility timeout.
async fn settle(d: &Drainer, take: &Take, outcomes: &[Outcome], report: &mut DrainReport) {
    let mut secured = vec![false; take.records.len()];
    let mut requeue: BTreeMap<(u32, i32), Vec<usize>> = BTreeMap::new();
    let mut dead: Vec<(usize, String)> = Vec::new();
    for (w, disposition) in take.dispositions(outcomes, &d.settings) {
        match disposition {
            Disposition::Done => secured[w] = true,
            Disposition::Requeue { attempts, delay_s } => {
                requeue.entry((attempts, delay_s)).or_default().push(w)
            }
            Disposition::DeadLetter(reason) => dead.push((w, reason)),
        }
    }
    for ((attempts, delay_s), winners) in requeue {
        let records: Vec<ChangeRecord> = winners.iter().map(|&w| take.records[w].clone()).collect();
        let batches = match pack(&records) {
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
            let numbers = [(ATTEMPTS_ATTRIBUTE, u64::from(attempts))];
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
    for (w, reason) in dead {
        let record = &take.records[w];
        let key = describe_key(&record.key);
        let reason = format!("{reason}; key {key}; version {}", record.version);
        let body = match pack(std::slice::from_ref(record)) {
            Ok(b) => b.into_iter().flatten().next().map(|m| m.body),
            Err(_) => None,
        };
        let Some(body) = body else { continue };
        report.sqs_requests += 1;
        match d.dlq.send_with_reason(&body, 1, &reason).await {
            Ok(()) => {
                tracing::warn!(key = %key, reason = %reason, "record dead-lettered");
                report.dlq_records += 1;
                secured[w] = true;
            }
            Err(e) => tracing::warn!(error = %e, "dead-lettering failed: leaving the message"),
        }
    }
    let mut delete: Vec<&str> = Vec::new();
    let mut left: Vec<&str> = Vec::new();
    for (m, ok) in take.messages.iter().zip(take.deletable(&secured)) {
        if ok {
            delete.push(&m.receipt);
        } else {
            tracing::debug!(message_id = %m.message_id, "message left on the buffer");
            left.push(&m.receipt);
        }
    }
    for p in &take.poison {
        let reason = format!("unreadable buffer message {}: {}", p.message_id, p.reason);
        report.sqs_requests += 1;
        match d.dlq.send_with_reason(&p.body, 0, &reason).await {
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
    if !delete.is_empty() {
        report.sqs_requests += delete.len().div_ceil(10) as u64;
        match d.buffer.delete(&delete).await {
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
    // Left messages come back when their visibility times out; making them visible at once
    // would only hand them to the next take while SQS is struggling.
    report.left += left.len() as u64;
}
