//! The write-rate cap at a destination (issue #19): what one write costs in DynamoDB write units,
//! a token bucket that spaces writes to a rate, and each drain invocation's share of a cap.
//!
//! A cap of N write units per second holds for a destination's drains together. The drains run
//! as independent invocations (a tick per schedule period and the workers it starts, each
//! another Lambda), so instead of sharing a counter they split the cap statically: each
//! invocation gets `N / max_workers`, divided again by the ticks alive at that moment. A tick
//! runs for its budget, which outlives the schedule's period, so two consecutive ticks overlap
//! during the last `budget − period` of one and the first `budget − period` of the next; in
//! those windows each invocation takes half its share, and the halves of the two ticks sum to
//! at most N. A tick that starts late only leaves part of the cap unused.
//!
//! Everything here is a pure function of its inputs and of the time passed in (ms from any
//! origin the caller keeps fixed): the drain and the CLI hold the bucket and do the waiting.

use crate::item::{AttributeValue, Item};
use std::time::Duration;

/// DynamoDB bills a standard write one unit per started kilobyte of the item.
pub const WRITE_UNIT_BYTES: usize = 1024;

/// The write units one write of `item` costs: its size by DynamoDB's rules in started
/// kilobytes, at least 1. A conditional write that is refused is billed the same, so every
/// attempt counts. (A put that replaces a larger item is billed for the larger one; the drain
/// knows only the new image, and sizes by it.)
pub fn write_units(item: &Item) -> u32 {
    let bytes = item_bytes(item);
    u32::try_from(bytes.div_ceil(WRITE_UNIT_BYTES).max(1)).unwrap_or(u32::MAX)
}

/// An item's size as DynamoDB counts it against its 400 KB limit and for billing: every
/// attribute's name (UTF-8 bytes) plus its value.
pub fn item_bytes(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_bytes(v)).sum()
}

/// A value's size: strings by their UTF-8 bytes, binaries by their bytes, numbers by their
/// significant digits (see [`number_bytes`]), booleans and nulls one byte; a list or map 3
/// bytes plus one per element plus the elements (a map's with their names); a set its members.
pub fn value_bytes(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_bytes(n),
        AttributeValue::B(b) => b.len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_bytes(v))
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_bytes(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(Vec::len).sum(),
    }
}

/// A number's size: one byte per two significant digits (leading and trailing zeros trimmed,
/// sign and exponent not counted), plus one.
pub fn number_bytes(n: &str) -> usize {
    let mantissa = n.split(['e', 'E']).next().unwrap_or("");
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let first = digits.iter().position(|d| *d != b'0');
    let significant = match first {
        None => 1,
        Some(first) => {
            let last = digits.iter().rposition(|d| *d != b'0').unwrap_or(first);
            last - first + 1
        }
    };
    significant.div_ceil(2) + 1
}

/// A rate in units per second that may change with time (ms).
pub trait Rate {
    /// The rate at `t_ms`; always above 0.
    fn per_s(&self, t_ms: u64) -> f64;
    /// The first instant after `t_ms` at which the rate changes, if it ever does.
    fn next_change(&self, _t_ms: u64) -> Option<u64> {
        None
    }
}

/// The same rate at every instant (the CLI's `--max-wcu`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Steady(f64);

impl Steady {
    /// `None` unless `per_s` is a finite rate above 0.
    pub fn new(per_s: f64) -> Option<Steady> {
        (per_s.is_finite() && per_s > 0.0).then_some(Steady(per_s))
    }
}

impl Rate for Steady {
    fn per_s(&self, _: u64) -> f64 {
        self.0
    }
}

/// The burst a bucket may save up: this much time of its rate. One second (DynamoDB itself
/// lets a partition burst on saved-up capacity; a second of the cap is what a replay may put
/// on top of the cap over any window).
pub const BURST: Duration = Duration::from_secs(1);

/// A token bucket over a [`Rate`]: writes wait until their units are earned. It starts empty,
/// so an invocation that starts cannot spend what it did not earn, and saves up at most
/// [`BURST`] of its rate. A write larger than the burst is let through when the bucket is full
/// and leaves it in debt, which later writes wait off: the rate holds over time whatever the
/// sizes.
#[derive(Clone, Debug)]
pub struct TokenBucket<R> {
    rate: R,
    tokens: f64,
    at_ms: u64,
}

impl<R: Rate> TokenBucket<R> {
    /// An empty bucket at `now_ms`.
    pub fn new(rate: R, now_ms: u64) -> Self {
        TokenBucket {
            rate,
            tokens: 0.0,
            at_ms: now_ms,
        }
    }

    pub fn rate(&self) -> &R {
        &self.rate
    }

    /// Takes `units` if the bucket holds them (or is full) at `now_ms` and returns 0; otherwise
    /// takes nothing and returns how long to wait (ms, at least 1) before asking again. The
    /// wait is an estimate at the current rate: asking again is what decides.
    pub fn take(&mut self, units: u32, now_ms: u64) -> u64 {
        self.refill(now_ms);
        let rate = self.rate.per_s(self.at_ms);
        let need = f64::from(units).min(burst(rate));
        // A hair of slack: sums of float refills must not leave a write waiting 1 ms for 1e-12.
        if self.tokens + 1e-9 >= need {
            self.tokens -= f64::from(units);
            return 0;
        }
        (((need - self.tokens) / rate * 1000.0).ceil() as u64).max(1)
    }

    /// Takes `units` whatever the bucket holds (a cost learnt only once the write was sent):
    /// a debt that later takes wait off.
    pub fn spend(&mut self, units: u64, now_ms: u64) {
        self.refill(now_ms);
        self.tokens -= units as f64;
    }

    /// Adds what was earned since the last call, segment by segment of the rate, never above
    /// the burst. Time never runs backwards here: an earlier `now_ms` earns nothing.
    fn refill(&mut self, now_ms: u64) {
        while self.at_ms < now_ms {
            let end = match self.rate.next_change(self.at_ms) {
                Some(change) if change > self.at_ms => change.min(now_ms),
                _ => now_ms,
            };
            let rate = self.rate.per_s(self.at_ms);
            let earned = rate * (end - self.at_ms) as f64 / 1000.0;
            self.tokens = (self.tokens + earned).min(burst(rate));
            self.at_ms = end;
        }
    }
}

fn burst(rate: f64) -> f64 {
    rate * BURST.as_secs_f64()
}

/// One drain invocation's share of a destination's cap, by the time since its tick started.
///
/// Ticks are counted by their *writing* windows: a drain writes from its tick's start until
/// its budget less the settle reserve, then only settles. Two ticks' windows overlap when that
/// window outlives the period. A neighbour tick counts as alive from `period / JITTER` before
/// to `period / JITTER` after its window, so a tick started that much late or early still
/// finds the other one halved; one later than that puts at most half a share on top of the
/// cap for the difference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TickShare {
    /// `cap / max_workers`: an invocation's rate while its tick is the only one alive.
    per_invocation: f64,
    /// How long a tick writes (its budget less the settle reserve), ms.
    window_ms: u64,
    /// How often ticks start; `None` when unknown (a cron schedule).
    period_ms: Option<u64>,
    /// The tolerance on a neighbour's start: `period / JITTER`.
    slack_ms: u64,
}

/// See [`TickShare`]: 1.2 s for a one-minute schedule, 80 ms for the sandbox's 4 s.
pub const JITTER: u64 = 50;

impl TickShare {
    /// `None` unless `cap` is a finite rate above 0. `period: None` (a cron schedule, whose
    /// ticks may fall anywhere) assumes two ticks alive at every instant: the template reserves
    /// the drain twice `MaxDrainConcurrency` invocations, so no more can ever run at once.
    pub fn new(
        cap: f64,
        max_workers: u32,
        window: Duration,
        period: Option<Duration>,
    ) -> Option<TickShare> {
        Steady::new(cap)?;
        let period_ms = period.map(|p| p.as_millis() as u64).filter(|p| *p > 0);
        Some(TickShare {
            per_invocation: cap / f64::from(max_workers.max(1)),
            window_ms: (window.as_millis() as u64).max(1),
            period_ms,
            slack_ms: period_ms.map_or(0, |p| p / JITTER),
        })
    }

    /// How long the tick writes (ms from its start): no write is due a share after it.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Ticks alive at `t_ms` after this tick started, this one included (at least 1): those
    /// started at `k·period` with `t − window − slack < k·period ≤ t + slack`.
    pub fn ticks_alive(&self, t_ms: u64) -> u64 {
        let Some(p) = self.period_ms else {
            return 2;
        };
        let t = t_ms.min(self.window_ms - 1) as i64;
        let (p, w, j) = (p as i64, self.window_ms as i64, self.slack_ms as i64);
        ((t + j).div_euclid(p) - (t - w - j).div_euclid(p)).max(1) as u64
    }
}

impl Rate for TickShare {
    fn per_s(&self, t_ms: u64) -> f64 {
        self.per_invocation / self.ticks_alive(t_ms) as f64
    }

    /// The count of ticks alive changes where a neighbour's window (widened by the slack)
    /// starts, `k·period − slack`, or ends, `window + slack − k·period`.
    fn next_change(&self, t_ms: u64) -> Option<u64> {
        let p = self.period_ms?;
        let (w, j) = (self.window_ms, self.slack_ms);
        if t_ms >= w {
            return None;
        }
        let next_start = ((t_ms + j) / p + 1) * p - j;
        let back = (w + j - t_ms - 1) / p;
        let next_end = (back >= 1).then(|| w + j - back * p);
        let next = next_end.map_or(next_start, |e| e.min(next_start));
        (next < w).then_some(next)
    }
}

/// Why a schedule expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a schedule expression: rate(N minute|minutes|hour|hours|day|days|second|seconds) or cron(...)")]
pub struct ScheduleError(pub String);

/// The period of an EventBridge schedule expression: `rate(1 minute)` → 60 s; `cron(...)` →
/// `None` (its ticks need not be evenly spaced). Seconds are accepted for the local sandbox.
pub fn schedule_period(expression: &str) -> Result<Option<Duration>, ScheduleError> {
    let e = expression.trim();
    let bad = || ScheduleError(expression.to_string());
    if e.starts_with("cron(") && e.ends_with(')') {
        return Ok(None);
    }
    let inner = e
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(bad)?;
    let mut words = inner.split_whitespace();
    let (Some(n), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    let n: u64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let seconds = match unit {
        "second" | "seconds" => 1,
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3_600,
        "day" | "days" => 86_400,
        _ => return Err(bad()),
    };
    Ok(Some(Duration::from_secs(n.saturating_mul(seconds))))
}

/// A cap as given by an operator (`FERRY_MAX_WCU`, `--max-wcu`): a number of write units per
/// second; 0 or nothing means no cap.
pub fn parse_cap(text: &str) -> Option<Result<f64, String>> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    match t.parse::<f64>() {
        Ok(0.0) => None,
        Ok(v) if v.is_finite() && v > 0.0 => Some(Ok(v)),
        _ => Some(Err(format!(
            "`{t}` is not a number of write units per second (0: no cap)"
        ))),
    }
}

/// How long a backlog of `units` takes to drain at `cap` units per second, if nothing else
/// arrives: the lag the cap costs the oldest change still waiting (what `ferry status` shows).
pub fn drain_time(units: u64, cap: f64) -> Option<Duration> {
    Steady::new(cap).map(|_| Duration::from_secs_f64(units as f64 / cap))
}
