//! The receive stage: ping the destination (and read the pair's pause mark) when that is due,
//! then take messages from the buffer. Nothing is received from a destination that does not
//! answer or a pair an operator paused, so no receive count is burnt and nothing can reach the
//! DLQ while a region is down.

use crate::pause_gate;
use crate::pipeline::Times;
use crate::report::DrainReport;
use crate::take::Take;
use crate::Drainer;
use ferry_aws::renew::CARRIED_ATTRIBUTES;
use ferry_aws::{AwsError, ReceivedWithAttributes};
use ferry_core::vet::vet;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// What a receive stage came back with.
pub(crate) struct Received {
    /// The ping's outcome, if one was due: `Some(false)` means the destination did not answer
    /// and nothing was received.
    pub ping: Option<bool>,
    /// The ping failed on who the drain is (credentials, access), not on the destination.
    pub denied: bool,
    /// An operator paused the pair (read with each ping): nothing was received.
    pub paused: bool,
    pub messages: Result<Vec<ReceivedWithAttributes>, AwsError>,
    pub report: DrainReport,
    pub started: Instant,
}

/// When a take's messages were sent to the buffer (by message of the take) and received.
pub(crate) struct Arrival {
    pub sent_at_ms: Vec<u64>,
    pub received_at_ms: u64,
    pub receive_ms: u64,
}

/// Pings the destination if that is due (and receives nothing if it does not answer), then
/// receives one take.
pub(crate) async fn receive_stage(
    d: &Drainer,
    times: Times,
    ping_due: bool,
    wanted: usize,
) -> Received {
    let started = Instant::now();
    let mut report = DrainReport::default();
    let mut ping = None;
    if ping_due {
        let (answer, pause) = futures::join!(
            ping_destination(d, times, started, &mut report),
            pause_gate::paused(d)
        );
        ping = Some(answer.is_ok());
        if answer.is_err() || pause.is_some() {
            if let Some(p) = &pause {
                tracing::info!(since_ms = ?p.since_ms, note = %p.note, "paused: not receiving");
            }
            return Received {
                ping,
                denied: answer == Err(true),
                paused: pause.is_some(),
                messages: Ok(Vec::new()),
                report,
                started,
            };
        }
    }
    let messages = receive_take(d, times, wanted, &mut report).await;
    // A long poll may return well after the mark was last read: read it again, and a take
    // that arrives paused is put back untouched.
    let long = started.elapsed() >= d.settings.ping_interval;
    let paused = long
        && matches!(&messages, Ok(m) if !m.is_empty())
        && pause_gate::paused(d).await.is_some();
    Received {
        ping,
        denied: false,
        paused,
        messages,
        report,
        started,
    }
}

/// Whether the destination answers, within `ping_timeout` and the budget left; `Err(true)`
/// when it refused the drain's identity.
async fn ping_destination(
    d: &Drainer,
    times: Times,
    started: Instant,
    report: &mut DrainReport,
) -> Result<(), bool> {
    report.dynamodb_requests += 1;
    report.pings += 1;
    let timeout = d
        .settings
        .ping_timeout
        .min(times.apply_end.saturating_duration_since(started));
    match tokio::time::timeout(timeout, d.table.ping()).await {
        // (A throttled ping is an answer: `Table::ping` says Ok.)
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.is_identity() => {
            tracing::error!(error = %e, "destination refused the drain's identity: not receiving");
            Err(true)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "destination not answering: not receiving");
            Err(false)
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "destination ping timed out: not receiving"
            );
            Err(false)
        }
    }
}

/// Receives one take of `wanted` messages: a long poll for up to 10 and, if it came back full,
/// short polls in parallel for the rest. A receive call is never abandoned once sent
/// (the messages it took would stay invisible and come back with a burnt receive count), so
/// its long poll is bounded instead, by `receive_wait_s` and the budget left.
async fn receive_take(
    d: &Drainer,
    times: Times,
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
    let attributes = CARRIED_ATTRIBUTES;
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
    Ok(crate::wear::set_aside_worn(d, messages, report).await)
}

/// Builds the take from received messages (unpacked and coalesced) and notes when each of its
/// messages was sent and when the take was received.
pub(crate) fn take_of(
    d: &Drainer,
    messages: Vec<ReceivedWithAttributes>,
    started: Instant,
) -> (Take, Arrival) {
    let sent: HashMap<String, u64> = messages
        .iter()
        .map(|m| (m.message.message_id.clone(), m.message.sent_at_ms))
        .collect();
    let now_ms = (d.clock)();
    let take = Take::build(messages, |record, first_sent_ms| {
        vet(
            record,
            &d.destination_region,
            first_sent_ms,
            now_ms,
            &d.config,
        )
        .map_err(|refusal| refusal.to_string())
    });
    let arrival = Arrival {
        sent_at_ms: take
            .messages
            .iter()
            .map(|m| sent.get(&m.message_id).copied().unwrap_or(0))
            .collect(),
        received_at_ms: now_ms,
        receive_ms: started.elapsed().as_millis() as u64,
    };
    (take, arrival)
}
