//! How one drain invocation paces itself. Every knob has a default fit for a one-minute
//! schedule; tests and the local sandbox shorten them.

use ferry_core::disposition::RetryPolicy;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The drain's knobs. `Default` is for a Lambda on a one-minute schedule (each tick runs 10 s
/// into the next: no gap) with an 80 s timeout.
#[derive(Clone, Debug)]
pub struct DrainSettings {
    /// Wall time one [`crate::drain`] call may take, from its start to its return.
    pub budget: Duration,
    /// The end of the budget kept for settling (re-queue, dead-letter, delete): no write starts
    /// after `budget - settle_reserve`, and a write still running at
    /// `budget - settle_reserve / 2` is abandoned (its record is re-queued; applying twice is
    /// harmless).
    pub settle_reserve: Duration,
    /// Conditional puts in flight at most (the concurrency limit when nothing throttles).
    pub max_in_flight: usize,
    /// Messages taken together (coalesced per key, then applied): one long-poll receive of up to
    /// 10, then, if it came back full, short-poll receives in parallel for the rest. A message
    /// holds up to 1 MiB (about 700 records of 1 KB), all held in memory during the take: 10
    /// messages peak around 60 MiB of RSS in the replay bench.
    pub take_messages: usize,
    /// Records a take aims at, which bounds memory whatever the message sizes: once a take has
    /// shown how many records a message carries, the next asks for only as many messages as
    /// hold about this many records (at least 1, at most `take_messages`). Ten full messages of
    /// 1 KB records are ~7 000 records and, two takes held, 130–170 MiB of RSS; 2 000 keeps the
    /// drain near 50 MiB while one take still feeds `max_in_flight` writes for many rounds.
    pub take_records: usize,
    /// Takes held at once (received and not yet settled). With 2 (the default) the next take
    /// is received while the previous one is applied or settled, so SQS latency is not added
    /// to every record's lag; each take is still settled by the deletion-after-done rule on
    /// its own. 1: strictly receive → apply → settle. Memory grows with it (see
    /// `take_messages`).
    pub takes_in_flight: usize,
    /// Long-poll wait of the first receive of a take, in seconds (≤ 20; also capped by the
    /// budget left). It is also how long a `stop` may wait for an idle receive to return.
    pub receive_wait_s: i32,
    /// Visibility timeout asked for on receive. Must exceed the budget, so a message cannot be
    /// handed to another drain while this one still holds it.
    pub visibility_timeout_s: i32,
    /// How long a record found pending is retried before the DLQ, and how far apart.
    pub retry: RetryPolicy,
    /// First pause after a throttled write; doubles on each further throttling pause, decays
    /// on successes.
    pub throttle_backoff: Duration,
    pub max_throttle_backoff: Duration,
    /// A take starts only if the destination has answered within this long (a successful write
    /// counts); otherwise it is pinged first.
    pub ping_interval: Duration,
    /// How long a ping may take before the destination counts as unreachable.
    pub ping_timeout: Duration,
    /// After writes failed for transport reasons: the pause before the destination is pinged
    /// again (doubling while it keeps failing, up to 10 s). A failed ping ends the call.
    pub transport_pause: Duration,
    /// Cancelling it makes the drain stop taking and writing, settle what it holds and return.
    /// Cancellation-safe: nothing received is dropped.
    pub stop: CancellationToken,
    /// How many conflicts the report keeps as samples (all are counted and logged).
    pub conflict_samples: usize,
    /// Return as soon as a receive (after its long poll) comes back empty, instead of polling
    /// until the budget is spent. Off for the Lambda (it keeps the lag low by polling); on for a
    /// "drain the backlog now" call, the tests and the replay bench.
    pub return_when_idle: bool,
    /// Drain workers a scheduled tick may run for this destination, itself included
    /// (`MaxDrainConcurrency`; [`crate::fanout`]). 1: the tick drains alone.
    pub max_workers: u32,
    /// The buffer's redrive `maxReceiveCount` (`BufferMaxReceiveCount`): a message near it is
    /// renewed rather than left to the redrive policy (`ferry_core::wear`). `None`: unknown,
    /// messages are taken as they come.
    pub max_receive_count: Option<u32>,
    /// The destination's write-rate cap in write units per second, for all its drains together
    /// (`FERRY_MAX_WCU`; `ferry_core::rate`). `None`: no cap, and no bucket is built.
    pub max_wcu: Option<f64>,
    /// The schedule's period (`FERRY_DRAIN_SCHEDULE`): how the cap is split between
    /// overlapping ticks. `None`: unknown (cron), two ticks assumed alive throughout.
    pub period: Option<Duration>,
}

impl Default for DrainSettings {
    fn default() -> Self {
        DrainSettings {
            budget: Duration::from_secs(70),
            settle_reserve: Duration::from_secs(5),
            max_in_flight: 64,
            take_messages: 10,
            take_records: 2000,
            takes_in_flight: 2,
            receive_wait_s: 20,
            visibility_timeout_s: 120,
            retry: RetryPolicy::default(),
            throttle_backoff: Duration::from_millis(50),
            max_throttle_backoff: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(3),
            transport_pause: Duration::from_secs(1),
            stop: CancellationToken::new(),
            conflict_samples: 20,
            return_when_idle: false,
            max_workers: 1,
            max_receive_count: None,
            max_wcu: None,
            period: None,
        }
    }
}

impl DrainSettings {
    /// The defaults with another budget; the settle reserve follows (a quarter of the budget,
    /// at most 5 s) and so do the long poll and the visibility timeout.
    pub fn with_budget(budget: Duration) -> Self {
        DrainSettings::default().budget(budget)
    }

    /// Sets the budget and the values that must follow it.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self.settle_reserve = (budget / 4).min(Duration::from_secs(5));
        self.receive_wait_s = self.receive_wait_s.min(budget.as_secs() as i32 / 2);
        let needed = budget.as_secs() as i32 + 30;
        self.visibility_timeout_s = self.visibility_timeout_s.max(needed);
        self
    }

    /// Messages to ask for in the next take, given the records per message seen in the last one
    /// (`None` before the first take: `take_messages`).
    pub fn messages_for_next_take(&self, records_per_message: Option<f64>) -> usize {
        self.messages_for(self.take_records, records_per_message)
    }

    /// Messages to ask for to take about `records` (at least 1, at most `take_messages`).
    pub fn messages_for(&self, records: usize, records_per_message: Option<f64>) -> usize {
        let most = self.take_messages.max(1);
        match records_per_message {
            Some(r) if r > 0.0 => ((records as f64 / r).ceil() as usize).clamp(1, most),
            _ => most,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_take_is_sized_by_the_records_its_messages_carried() {
        let s = DrainSettings::default();
        // Before the first take: as many messages as allowed.
        assert_eq!(s.messages_for_next_take(None), 10);
        // 700 records of 1 KB per message: 3 messages, ~2 100 records.
        assert_eq!(s.messages_for_next_take(Some(700.0)), 3);
        // Messages fatter than the target: still one at a time.
        assert_eq!(s.messages_for_next_take(Some(5000.0)), 1);
        // Small messages: capped by `take_messages`.
        assert_eq!(s.messages_for_next_take(Some(1.0)), 10);
        let wide = DrainSettings {
            take_messages: 100,
            ..DrainSettings::default()
        };
        assert_eq!(wide.messages_for_next_take(Some(40.0)), 50);
        assert_eq!(wide.messages_for_next_take(Some(0.0)), 100);
    }

    #[test]
    fn budget_drags_its_dependents() {
        let s = DrainSettings::with_budget(Duration::from_secs(4));
        assert_eq!(s.settle_reserve, Duration::from_secs(1));
        assert_eq!(s.receive_wait_s, 2);
        assert!(s.visibility_timeout_s as u64 > 4);
        let s = DrainSettings::with_budget(Duration::from_secs(300));
        assert_eq!(s.settle_reserve, Duration::from_secs(5));
        assert_eq!(s.visibility_timeout_s, 330);
    }
}
