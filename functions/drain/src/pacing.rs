//! The write concurrency and the throttling back-off, kept across the takes of one invocation.

use crate::settings::DrainSettings;
use std::time::Duration;
use tokio::time::Instant;

/// Multiplicative decrease (at most once per pause, so a burst of throttled answers to writes
/// sent together counts once), additive increase on every answered write.
pub(crate) struct Pacing {
    max: usize,
    /// How many writes may be in flight now.
    pub limit: usize,
    backoff: Duration,
    initial: Duration,
    max_backoff: Duration,
    /// No write starts before this.
    pub pause_until: Instant,
}

impl Pacing {
    pub fn new(s: &DrainSettings) -> Self {
        Pacing {
            max: s.max_in_flight.max(1),
            limit: s.max_in_flight.max(1),
            backoff: s.throttle_backoff,
            initial: s.throttle_backoff,
            max_backoff: s.max_throttle_backoff.max(s.throttle_backoff),
            pause_until: Instant::now(),
        }
    }

    pub fn on_answer(&mut self) {
        self.limit = (self.limit + 1).min(self.max);
        self.backoff = self.backoff.mul_f64(0.9).max(self.initial);
    }

    pub fn on_throttle(&mut self, now: Instant) {
        if now >= self.pause_until {
            self.limit = (self.limit / 2).max(1);
            self.pause_until = now + self.backoff;
            self.backoff = (self.backoff * 2).min(self.max_backoff);
        }
    }
}
