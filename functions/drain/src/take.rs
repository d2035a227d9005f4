//! The bookkeeping of one take: the messages received together, their records, which record of
//! each key decides it (the core's coalescing), what became of each, and from that, what is
//! re-queued, dead-lettered and deleted. Pure: no I/O, so the rules are unit-tested here.

use ferry_aws::{ReceivedWithAttributes, ATTEMPTS_ATTRIBUTE};
use ferry_core::buffer::{unpack, UnpackError};
use ferry_core::coalesce::winner_of;
use ferry_core::disposition::{dispose, RetryPolicy};
pub(crate) use ferry_core::disposition::{Disposition, Outcome};
use ferry_core::ChangeRecord;
use std::ops::Range;

/// A received message whose records are part of the take.
#[derive(Clone, Debug)]
pub(crate) struct TakenMessage {
    pub message_id: String,
    pub receipt: String,
    /// How many times its records were already found pending (the `ferry-attempts` attribute).
    pub attempts: u32,
    /// When its records were first sent to a buffer (`ferry-first-sent`, or its own send time).
    pub first_sent_ms: u64,
    /// Its records, as a range of [`Take::records`].
    pub records: Range<usize>,
}

/// A received message that cannot be read: it goes to the DLQ whole, with the reason.
#[derive(Clone, Debug)]
pub(crate) struct Poison {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub reason: UnpackError,
}

/// A record that its vetting refused ([`ferry_core::vet`]): it goes to the DLQ on its own, with
/// the reason, and takes no part in coalescing.
#[derive(Clone, Debug)]
pub(crate) struct Refused {
    pub message: usize,
    pub record: ChangeRecord,
    pub reason: String,
}

#[derive(Debug, Default)]
pub(crate) struct Take {
    pub messages: Vec<TakenMessage>,
    pub poison: Vec<Poison>,
    pub refused: Vec<Refused>,
    pub records: Vec<ChangeRecord>,
    /// For each record, the message it came in.
    pub message_of: Vec<usize>,
    /// For each record, the record that decides its key in this take (itself for a winner).
    pub winner_of: Vec<usize>,
    /// The winners, in backlog order: the only records written.
    pub winners: Vec<usize>,
    /// The conflict log's entries for the conflicts its apply found (written when it settles).
    pub conflicts: Vec<ferry_core::conflict::Entry>,
}

impl Take {
    /// Unpacks the messages (unreadable ones become [`Poison`]), sets aside the records `vet`
    /// refuses (given each record and when it was first sent), and coalesces the rest per key
    /// with the core's rule (newest version; ties keep the first).
    pub fn build(
        received: Vec<ReceivedWithAttributes>,
        vet: impl Fn(&ChangeRecord, u64) -> Result<(), String>,
    ) -> Take {
        let mut take = Take::default();
        for r in received {
            let attempts = r
                .number(ATTEMPTS_ATTRIBUTE)
                .map(|n| n.min(u32::MAX as u64) as u32)
                .unwrap_or(0);
            let first_sent_ms = r.first_sent_ms();
            let m = r.message;
            let records = match unpack(&m.body) {
                Ok(records) => records,
                Err(reason) => {
                    take.poison.push(Poison {
                        message_id: m.message_id,
                        receipt: m.receipt_handle,
                        body: m.body,
                        reason,
                    });
                    continue;
                }
            };
            let index = take.messages.len();
            let start = take.records.len();
            for record in records {
                match vet(&record, first_sent_ms) {
                    Ok(()) => {
                        take.records.push(record);
                        take.message_of.push(index);
                    }
                    Err(reason) => take.refused.push(Refused {
                        message: index,
                        record,
                        reason,
                    }),
                }
            }
            take.messages.push(TakenMessage {
                message_id: m.message_id,
                receipt: m.receipt_handle,
                attempts,
                first_sent_ms,
                records: start..take.records.len(),
            });
        }
        take.winner_of = winner_of(&take.records);
        take.winners = (0..take.records.len())
            .filter(|&i| take.winner_of[i] == i)
            .collect();
        take
    }

    pub fn coalesced(&self) -> usize {
        self.records.len() - self.winners.len()
    }

    /// How many times the record was already found pending (its message's count).
    pub fn attempts_of(&self, record: usize) -> u32 {
        self.messages[self.message_of[record]].attempts
    }

    /// When the record was first sent to a buffer.
    pub fn first_sent_of(&self, record: usize) -> u64 {
        self.messages[self.message_of[record]].first_sent_ms
    }

    /// The disposition of each winner (indexed like `outcomes`, by record), from the attempts
    /// its message carried ([`dispose`]).
    pub fn dispositions(
        &self,
        outcomes: &[Outcome],
        policy: &RetryPolicy,
    ) -> Vec<(usize, Disposition)> {
        self.winners
            .iter()
            .map(|&w| (w, dispose(&outcomes[w], self.attempts_of(w), policy)))
            .collect()
    }

    /// Which messages may be deleted, given which winners are secured (done, or durably
    /// re-queued or dead-lettered) and which refused records are dead-lettered: a message goes
    /// when every one of its records is decided by a secured winner, and every record of it
    /// that was refused is in the DLQ. A record coalesced away is done exactly when its winner is.
    pub fn deletable(&self, secured: &[bool], refused_sent: &[bool]) -> Vec<bool> {
        let mut refused_left = vec![false; self.messages.len()];
        for (r, sent) in self.refused.iter().zip(refused_sent) {
            refused_left[r.message] |= !sent;
        }
        self.messages
            .iter()
            .zip(refused_left)
            .map(|(m, left)| !left && m.records.clone().all(|r| secured[self.winner_of[r]]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_aws::Received;
    use ferry_core::buffer::pack;
    use ferry_core::{AttributeValue, Item, Version};
    use std::collections::HashMap;

    fn record(pk: &str, ts: u64, origin: &str) -> ChangeRecord {
        let key: Item = [("pk".to_string(), AttributeValue::S(pk.into()))].into();
        let mut image = key.clone();
        Version::new(ts, origin).stamp_into(&mut image, &Default::default());
        ChangeRecord {
            key,
            image,
            tombstone: false,
            version: Version::new(ts, origin),
            source_region: origin.into(),
            written_at_ms: ts,
        }
    }

    fn pass(_: &ChangeRecord, _: u64) -> Result<(), String> {
        Ok(())
    }

    fn message(
        id: &str,
        records: &[ChangeRecord],
        attempts: Option<u32>,
    ) -> ReceivedWithAttributes {
        let body = pack(records).expect("pack")[0][0].body.clone();
        received(id, body, attempts)
    }

    fn received(id: &str, body: String, attempts: Option<u32>) -> ReceivedWithAttributes {
        let mut attributes = HashMap::new();
        if let Some(a) = attempts {
            attributes.insert(ATTEMPTS_ATTRIBUTE.to_string(), a.to_string());
        }
        ReceivedWithAttributes {
            message: Received {
                message_id: id.into(),
                receipt_handle: format!("r-{id}"),
                body,
                receive_count: 1,
                sent_at_ms: 0,
            },
            attributes,
        }
    }

    #[test]
    fn coalesces_across_messages_and_keeps_poison_apart() {
        let take = Take::build(
            vec![
                message("a", &[record("k1", 5, "r1"), record("k2", 1, "r1")], None),
                received("bad", "not a ferry message".into(), None),
                message(
                    "b",
                    &[record("k1", 7, "r2"), record("k2", 1, "r1")],
                    Some(3),
                ),
            ],
            pass,
        );
        assert_eq!(take.messages.len(), 2);
        assert_eq!(take.poison.len(), 1);
        assert_eq!(take.records.len(), 4);
        // k1: the newer record of message b wins; k2: an exact duplicate, the first wins.
        assert_eq!(take.winner_of, vec![2, 1, 2, 1]);
        assert_eq!(take.winners, vec![1, 2]);
        assert_eq!(take.coalesced(), 2);
        assert_eq!(take.attempts_of(2), 3);
    }

    #[test]
    fn a_message_goes_when_the_winners_of_all_its_records_are_secured() {
        let take = Take::build(
            vec![
                message("a", &[record("k1", 5, "r1"), record("k2", 1, "r1")], None),
                message("b", &[record("k1", 7, "r2")], None),
                message("c", &[record("k3", 7, "r2")], None),
            ],
            pass,
        );
        // Winners: k2 (record 1), k1 (record 2), k3 (record 3).
        let mut secured = vec![false; take.records.len()];
        secured[1] = true;
        secured[3] = true;
        // Message a holds a loser of k1 whose winner (in b) is not secured: a must stay.
        assert_eq!(take.deletable(&secured, &[]), vec![false, false, true]);
        secured[2] = true;
        assert_eq!(take.deletable(&secured, &[]), vec![true, true, true]);
    }

    #[test]
    fn each_winner_is_disposed_with_the_attempts_its_message_carried() {
        let policy = RetryPolicy {
            max_pending_attempts: 3,
            ..Default::default()
        };
        let take = Take::build(
            vec![
                message("a", &[record("k1", 5, "r1")], Some(1)),
                message("b", &[record("k2", 5, "r1")], Some(2)),
                message(
                    "c",
                    &[record("k3", 5, "r1"), record("k4", 5, "r1")],
                    Some(9),
                ),
                message("d", &[record("k5", 5, "r1"), record("k6", 5, "r1")], None),
            ],
            pass,
        );
        let outcomes = vec![
            Outcome::Pending("unversioned".into()),
            Outcome::Pending("unversioned".into()),
            Outcome::Throttled,
            Outcome::Failed,
            Outcome::Invalid("ValidationException".into()),
            Outcome::Conflict,
        ];
        let d = take.dispositions(&outcomes, &policy);
        assert_eq!(
            d[0],
            (
                0,
                Disposition::Requeue {
                    attempts: 2,
                    delay_s: 2
                }
            )
        );
        assert!(matches!(&d[1], (1, Disposition::DeadLetter(r)) if r.contains("pending 3 times")));
        assert_eq!(
            d[2],
            (
                2,
                Disposition::Requeue {
                    attempts: 9,
                    delay_s: 0
                }
            )
        );
        assert_eq!(
            d[3],
            (
                3,
                Disposition::Requeue {
                    attempts: 9,
                    delay_s: 0
                }
            )
        );
        assert!(matches!(&d[4], (4, Disposition::DeadLetter(r)) if r.contains("Validation")));
        assert_eq!(d[5], (5, Disposition::Done));
    }

    #[test]
    fn a_refused_record_stays_out_of_coalescing_and_holds_its_message_until_dead_lettered() {
        let forged = record("k1", 99, "r9");
        let take = Take::build(
            vec![
                message("a", &[record("k1", 5, "r1"), forged], None),
                message("b", &[record("k2", 1, "r1")], None),
            ],
            |r, _| match r.version.origin.as_str() {
                "r9" => Err("forged".into()),
                _ => Ok(()),
            },
        );
        // The forged k1@99 would have won k1 and hidden the honest record.
        assert_eq!(take.refused.len(), 1);
        assert_eq!(take.refused[0].message, 0);
        assert_eq!(take.winners, vec![0, 1]);
        let secured = vec![true; take.records.len()];
        assert_eq!(take.deletable(&secured, &[false]), vec![false, true]);
        assert_eq!(take.deletable(&secured, &[true]), vec![true, true]);
    }
}
