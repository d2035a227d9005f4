//! `disposition`: what becomes of a drained record once its write is over — done, put back on
//! the buffer (with its attempt count and a delivery delay), or dead-lettered with the reason.

/// What became of a record the drain tried to write (or did not get to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Never written (the take was halted first).
    Unattempted,
    Applied,
    Stale,
    Conflict,
    /// Found pending; the reason, for the DLQ once the attempts run out.
    Pending(String),
    /// Its last write was throttled.
    Throttled,
    /// Its write failed for transport or configuration reasons, or was cut at the budget's end.
    Failed,
    /// DynamoDB rejected the item (the record's own fault): the reason.
    Invalid(String),
}

impl Outcome {
    /// The record's version is in the destination, or lost to a newer one there: it is done.
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Stale | Outcome::Conflict)
    }
}

/// What to do with a record once the take's writes are over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    Done,
    /// Put back on the buffer as a new message carrying `attempts`, delivered after `delay_s`.
    Requeue {
        attempts: u32,
        delay_s: i32,
    },
    /// Sent to the DLQ with the reason.
    DeadLetter(String),
}

/// How long a record found pending is retried, and how far apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// A record found pending (the destination item is unversioned, or its version cannot be
    /// read) this many times in a row is dead-lettered with the reason; 0 (the default): never.
    /// Pending is never the record's own fault: it waits for the destination, and the drain
    /// reports the oldest pending record's age (`PendingAge`), which is alarmed on.
    pub max_pending_attempts: u32,
    /// Delivery delay of a re-queued pending record: `base · 2^(attempts−1)`, capped.
    pub pending_delay_base_s: i32,
    pub pending_delay_max_s: i32,
}

impl Default for RetryPolicy {
    /// Retried for ever, at most 15 minutes apart.
    fn default() -> Self {
        RetryPolicy {
            max_pending_attempts: 0,
            pending_delay_base_s: 1,
            pending_delay_max_s: 900,
        }
    }
}

impl RetryPolicy {
    /// Delivery delay of a pending record re-queued for the `attempts`-th time.
    pub fn pending_delay_s(&self, attempts: u32) -> i32 {
        let shift = attempts.saturating_sub(1).min(20);
        let delay = (self.pending_delay_base_s.max(0) as i64) << shift;
        delay.min(self.pending_delay_max_s.max(0) as i64) as i32
    }
}

/// The disposition of a record whose message carried `attempts` (how many times it was already
/// found pending). Only the record's own failures count an attempt or reach the DLQ.
pub fn dispose(outcome: &Outcome, attempts: u32, policy: &RetryPolicy) -> Disposition {
    match outcome {
        o if o.is_done() => Disposition::Done,
        Outcome::Pending(reason) => {
            let attempts = attempts.saturating_add(1);
            if policy.max_pending_attempts > 0 && attempts >= policy.max_pending_attempts {
                Disposition::DeadLetter(format!(
                    "pending {attempts} times (the destination item stayed unwritable by \
                     replication): {reason}"
                ))
            } else {
                Disposition::Requeue {
                    attempts,
                    delay_s: policy.pending_delay_s(attempts),
                }
            }
        }
        Outcome::Invalid(reason) => {
            Disposition::DeadLetter(format!("rejected by the destination: {reason}"))
        }
        // Throttling, transport failures, cuts and records never tried are not the record's
        // fault: its attempt count does not move, and no delay (the next drain pings the
        // destination before taking anything).
        _ => Disposition::Requeue {
            attempts,
            delay_s: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_delay_doubles_and_caps() {
        let p = RetryPolicy::default();
        let delays: Vec<i32> = (1..=12).map(|a| p.pending_delay_s(a)).collect();
        assert_eq!(
            delays,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]
        );
        assert_eq!(
            p.max_pending_attempts, 0,
            "pending is never dead-lettered by default"
        );
        let d = dispose(&Outcome::Pending("unversioned".into()), 1_000_000, &p);
        assert!(matches!(d, Disposition::Requeue { delay_s: 900, .. }));
    }

    #[test]
    fn only_the_records_own_failures_count() {
        let p = RetryPolicy {
            max_pending_attempts: 3,
            pending_delay_base_s: 1,
            pending_delay_max_s: 900,
        };
        let pending = Outcome::Pending("unversioned".into());
        assert_eq!(
            dispose(&pending, 1, &p),
            Disposition::Requeue {
                attempts: 2,
                delay_s: 2
            }
        );
        assert!(
            matches!(dispose(&pending, 2, &p), Disposition::DeadLetter(r) if r.contains("pending 3 times"))
        );
        for not_its_fault in [Outcome::Throttled, Outcome::Failed, Outcome::Unattempted] {
            assert_eq!(
                dispose(&not_its_fault, 9, &p),
                Disposition::Requeue {
                    attempts: 9,
                    delay_s: 0
                }
            );
        }
        let invalid = Outcome::Invalid("ValidationException".into());
        assert!(
            matches!(dispose(&invalid, 0, &p), Disposition::DeadLetter(r) if r.contains("Validation"))
        );
        for done in [Outcome::Applied, Outcome::Stale, Outcome::Conflict] {
            assert_eq!(dispose(&done, 5, &p), Disposition::Done);
        }
    }

    #[test]
    fn zero_max_attempts_never_dead_letters_pending() {
        let p = RetryPolicy {
            max_pending_attempts: 0,
            ..RetryPolicy::default()
        };
        let d = dispose(&Outcome::Pending("x".into()), 1000, &p);
        assert!(matches!(d, Disposition::Requeue { attempts: 1001, .. }));
    }
}
