//! The write concurrency, the throttling back-off and the write-rate cap, kept across the takes
//! of one invocation.

use crate::cap::Cap;
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
    /// The destination's write-rate cap, when one is set.
    pub cap: Option<Cap>,
    /// The cap holds the next write until this.
    cap_until: Option<Instant>,
}

impl Pacing {
    /// `tick_end`: when the invocation's tick ends (the cap's share depends on the time in it).
    pub fn new(s: &DrainSettings, tick_end: Instant) -> Self {
        Pacing {
            max: s.max_in_flight.max(1),
            limit: s.max_in_flight.max(1),
            backoff: s.throttle_backoff,
            initial: s.throttle_backoff,
            max_backoff: s.max_throttle_backoff.max(s.throttle_backoff),
            pause_until: Instant::now(),
            cap: Cap::new(s, tick_end),
            cap_until: None,
        }
    }

    /// Whether the next write may start now as far as the cap goes: its write units (computed
    /// only under a cap) are taken, or it waits until [`Pacing::wake`].
    pub fn admit(&mut self, units: impl FnOnce() -> u32) -> bool {
        let Some(cap) = self.cap.as_mut() else {
            return true;
        };
        self.cap_until = cap.admit(units(), Instant::now());
        self.cap_until.is_none()
    }

    /// When a write held back (by a throttling pause or the cap) may be tried again.
    pub fn wake(&self) -> Instant {
        self.cap_until
            .map_or(self.pause_until, |c| c.max(self.pause_until))
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
