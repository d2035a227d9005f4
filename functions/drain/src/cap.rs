//! The destination's write-rate cap in one drain invocation (issue #19): its share of the cap
//! (`ferry_core::rate::TickShare`, from the tick's start) in a token bucket that every write
//! waits on before it is sent. Without a cap nothing here is built, and a write costs nothing
//! more than before.

use crate::settings::DrainSettings;
use ferry_aws::env::{Env, VariableError};
use ferry_core::buffer::{pack, pack_at_most, BufferBatch, PackError};
use ferry_core::rate::{parse_cap, schedule_period, Rate, TickShare, TokenBucket};
use ferry_core::ChangeRecord;
use std::time::Duration;
use tokio::time::Instant;

/// One invocation's bucket, and what it counted.
pub(crate) struct Cap {
    bucket: TokenBucket<TickShare>,
    /// The tick's start (its end less the configured budget): the share's time origin.
    tick_start: Instant,
    /// Write units taken so far.
    pub units: u64,
    /// Time a write was ready and the cap held it.
    waited: Duration,
    blocked_since: Option<Instant>,
}

impl Cap {
    /// The cap for an invocation whose tick ends at `tick_end`; `None` without a cap. A tick's
    /// own drain and its workers all end with the tick (`WorkerOrder::until_ms`), so the end
    /// less the configured budget is the tick's start for each of them.
    pub(crate) fn new(s: &DrainSettings, tick_end: Instant) -> Option<Cap> {
        let reserve = s.settle_reserve.min(s.budget / 2);
        let window = s.budget.saturating_sub(reserve);
        let share = TickShare::new(s.max_wcu?, s.max_workers, window, s.period)?;
        let tick_start = tick_end.checked_sub(s.budget).unwrap_or(tick_end);
        // Empty at the tick's start, not at this invocation's: a worker that starts a little
        // late has earned its share since (at most the bucket's one-second burst).
        Some(Cap {
            bucket: TokenBucket::new(share, 0),
            tick_start,
            units: 0,
            waited: Duration::ZERO,
            blocked_since: None,
        })
    }

    /// `None`: the write's `units` are taken, send it. `Some(t)`: hold it and ask again at
    /// `t`. Past the tick's writing window nothing more is let through.
    pub(crate) fn admit(&mut self, units: u32, now: Instant) -> Option<Instant> {
        let t = ms(now.saturating_duration_since(self.tick_start));
        let wait = if t >= self.bucket.rate().window_ms() {
            Some(now + Duration::from_secs(3600))
        } else {
            match self.bucket.take(units, t) {
                0 => None,
                wait => Some(now + Duration::from_millis(wait)),
            }
        };
        match (wait, self.blocked_since) {
            (None, since) => {
                self.units += u64::from(units);
                if let Some(since) = since {
                    self.waited += now.saturating_duration_since(since);
                    self.blocked_since = None;
                }
            }
            (Some(_), None) => self.blocked_since = Some(now),
            (Some(_), Some(_)) => {}
        }
        wait
    }

    /// Units a write spent beyond what it was admitted for (an attribute-mode merge that took
    /// more than one round): taken as a debt that later writes wait off.
    pub(crate) fn spend(&mut self, units: u64, now: Instant) {
        let t = ms(now.saturating_duration_since(self.tick_start));
        self.bucket.spend(units, t);
        self.units += units;
    }

    /// The apply time to report for `records` taken: at least what they take at the full share.
    /// The fan-out sizes a tick by the records a worker took per second of applying; under a
    /// cap a worker is bounded by its share, and part of what it took went back to the buffer
    /// unwritten (`writes_per_take`), so the time it applied alone would overstate it.
    pub(crate) fn busy_ms(&self, records: u64, apply_ms: u64) -> u64 {
        let share = self.bucket.rate().per_s(self.bucket.rate().window_ms() / 2);
        let at_share = (records as f64 / share * 1000.0).ceil() as u64;
        apply_ms.max(at_share)
    }

    /// Time writes waited on the cap, in ms (a wait still under way counts up to `now`).
    pub(crate) fn waited_ms(&self, now: Instant) -> u64 {
        let open = self
            .blocked_since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        ms(self.waited + open)
    }
}

/// Under a cap, a take holds about this long of an invocation's share.
pub(crate) const TAKE_SECONDS: f64 = 2.0;

/// Messages for the next take. Under a cap only what the invocation can write in about
/// [`TAKE_SECONDS`] of its share (one message for the first take, before the records per
/// message are known): the fan-out's workers then share the backlog, rather than one holding
/// messages it cannot write before its tick ends while the others find the buffer empty.
pub(crate) fn messages_for_next_take(s: &DrainSettings, records_per_message: Option<f64>) -> usize {
    let Some(cap) = s.max_wcu else {
        return s.messages_for_next_take(records_per_message);
    };
    if records_per_message.is_none() {
        return 1;
    }
    s.messages_for(take_records(s, cap), records_per_message)
}

/// Records in a capped take: [`TAKE_SECONDS`] of an invocation's share. A record is a write
/// unit or more: sized as one, a take of big items runs longer.
fn take_records(s: &DrainSettings, cap: f64) -> usize {
    let share = cap / f64::from(s.max_workers.max(1));
    ((share * TAKE_SECONDS).ceil() as usize).clamp(1, s.take_records.max(1))
}

/// Winners one take writes at most: without a cap, all. Under a cap, a capped take's records:
/// a message far larger (enqueue packs up to a thousand records) is written in part and the
/// rest re-queued at once, in pieces the other workers take, instead of being held until the
/// tick ends.
pub(crate) fn writes_per_take(s: &DrainSettings) -> usize {
    s.max_wcu.map_or(usize::MAX, |cap| take_records(s, cap))
}

/// Packs records to put back on the buffer. Under a cap, in messages of a capped take's
/// records: an invocation re-queues most of a big message it could not write before its tick
/// ended, and the pieces are what lets every worker of the next tick have its share.
pub(crate) fn repack(
    s: &DrainSettings,
    records: &[ChangeRecord],
) -> Result<Vec<BufferBatch>, PackError> {
    match s.max_wcu {
        None => pack(records),
        Some(cap) => pack_at_most(records, take_records(s, cap)),
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// `FERRY_MAX_WCU` (unset or 0: no cap) and `FERRY_DRAIN_SCHEDULE` (the template's
/// `DrainSchedule`; unset or cron: the period is unknown) into the settings.
pub(crate) fn read_env<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    settings: &mut DrainSettings,
) -> Result<(), VariableError> {
    let cap = env.parsed(
        "FERRY_MAX_WCU",
        "a number of write units per second (0: no cap)",
        |v| match parse_cap(v) {
            None => Some(None),
            Some(Ok(cap)) => Some(Some(cap)),
            Some(Err(_)) => None,
        },
    )?;
    settings.max_wcu = cap.flatten();
    let period = env.parsed(
        "FERRY_DRAIN_SCHEDULE",
        "a schedule expression: rate(N minutes) or cron(...)",
        |v| schedule_period(v).ok(),
    )?;
    settings.period = period.flatten();
    Ok(())
}

/// The cap from the process environment's `FERRY_MAX_WCU`, for the local sandbox's drains: a
/// value that is not a number is reported and ignored.
pub fn max_wcu_from_process_env() -> Option<f64> {
    let value = std::env::var("FERRY_MAX_WCU").ok()?;
    match parse_cap(&value)? {
        Ok(cap) => Some(cap),
        Err(e) => {
            tracing::warn!(error = %e, "FERRY_MAX_WCU ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<DrainSettings, VariableError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = Env::new(move |k: &str| map.get(k).cloned());
        let mut settings = DrainSettings::default();
        read_env(&env, &mut settings).map(|()| settings)
    }

    #[test]
    fn the_cap_and_the_schedule_come_from_the_environment() {
        let s = read(&[]).expect("unset");
        assert_eq!((s.max_wcu, s.period), (None, None));
        let s = read(&[
            ("FERRY_MAX_WCU", "150"),
            ("FERRY_DRAIN_SCHEDULE", "rate(1 minute)"),
        ])
        .expect("valid");
        assert_eq!(s.max_wcu, Some(150.0));
        assert_eq!(s.period, Some(Duration::from_secs(60)));
        let s = read(&[
            ("FERRY_MAX_WCU", "0"),
            ("FERRY_DRAIN_SCHEDULE", "cron(0 * * * ? *)"),
        ])
        .expect("valid");
        assert_eq!((s.max_wcu, s.period), (None, None));
        assert!(matches!(
            read(&[("FERRY_MAX_WCU", "-1")]),
            Err(VariableError::Bad {
                name: "FERRY_MAX_WCU",
                ..
            })
        ));
        assert!(matches!(
            read(&[("FERRY_DRAIN_SCHEDULE", "every minute")]),
            Err(VariableError::Bad {
                name: "FERRY_DRAIN_SCHEDULE",
                ..
            })
        ));
    }

    #[test]
    fn a_capped_take_holds_what_its_share_writes_in_two_seconds() {
        let free = DrainSettings::default();
        assert_eq!(messages_for_next_take(&free, None), 10);
        assert_eq!(messages_for_next_take(&free, Some(100.0)), 10);
        let capped = DrainSettings {
            max_wcu: Some(150.0),
            max_workers: 4,
            ..DrainSettings::default()
        };
        // 37.5 units/s each: 75 records a take.
        assert_eq!(messages_for_next_take(&capped, None), 1);
        assert_eq!(messages_for_next_take(&capped, Some(100.0)), 1);
        assert_eq!(messages_for_next_take(&capped, Some(10.0)), 8);
        assert_eq!(messages_for_next_take(&capped, Some(1.0)), 10);
    }

    #[test]
    fn no_cap_builds_no_bucket_and_a_cap_spaces_the_writes() {
        let start = Instant::now();
        let end = start + Duration::from_secs(50);
        assert!(Cap::new(&DrainSettings::default(), end).is_none());
        let s = DrainSettings {
            max_wcu: Some(10.0),
            period: Some(Duration::from_secs(60)),
            ..DrainSettings::default()
        };
        // A 50 s budget on a one-minute schedule: no overlap, the whole 10 units/s.
        let s = s.budget(Duration::from_secs(50));
        let mut cap = Cap::new(&s, end).expect("a cap");
        let mut now = start;
        let mut admitted = 0;
        while now < start + Duration::from_secs(10) {
            match cap.admit(1, now) {
                None => admitted += 1,
                Some(at) => now = at,
            }
        }
        assert!((99..=101).contains(&admitted), "{admitted}");
        assert_eq!(cap.units, admitted);
        // Each unit waited its tenth of a second.
        let waited = cap.waited_ms(now);
        assert!((9_800..=10_000).contains(&waited), "{waited}");
        // Past the tick's writing window (its budget less the settle reserve) nothing goes.
        let late = end - Duration::from_secs(4);
        assert!(cap.admit(1, late).is_some());
    }
}
