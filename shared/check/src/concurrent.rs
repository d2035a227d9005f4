//! Several drains of one buffer at once (`CheckOptions::drains` > 1), their steps interleaved
//! with each other's, with application writes, enqueues and cut-offs: a drain *takes* a few
//! visible messages (they are invisible to the others while it holds them, as SQS's visibility
//! timeout, which outlasts a drain, makes them), *applies* its coalesced records one at a time
//! through the same `apply`, and *settles*: a message whose keys are all done is deleted (or,
//! at-least-once, delivered again later), the others come back. A destination or source cut
//! off in the middle halts the take: it settles with what was done, as the real drain does.

use super::{coalesce, unpack, ChangeRecord, ItemKey, Message, Sim};
use rand::Rng;
use std::collections::HashMap;

/// One drain's take in flight.
pub(crate) struct HeldTake {
    s: usize,
    d: usize,
    messages: Vec<Message>,
    message_keys: Vec<Vec<ItemKey>>,
    /// Coalesced puts, then plain deletes (the no-tombstones hole only).
    records: Vec<(ChangeRecord, bool)>,
    next: usize,
    done: HashMap<ItemKey, bool>,
}

impl<'o> Sim<'o> {
    /// One step of one of the drains of `s → d`: a new take while fewer than `drains` are
    /// held, or the next write (or the settle) of a held one. Returns whether a record was done.
    pub(crate) fn concurrent_drain_step(&mut self, s: usize, d: usize) -> bool {
        let held: Vec<usize> = (0..self.held.len())
            .filter(|&i| self.held[i].s == s && self.held[i].d == d)
            .collect();
        if held.len() < self.options.drains && (held.is_empty() || self.rng.gen_bool(0.4)) {
            self.take(s, d);
            return false;
        }
        let i = held[self.rng.gen_range(0..held.len())];
        self.advance(i)
    }

    /// Runs every held take to its end (before a settle or a checkpoint's verdict).
    pub(crate) fn finish_held(&mut self) -> bool {
        let mut progress = false;
        while !self.held.is_empty() {
            let i = self.rng.gen_range(0..self.held.len());
            progress |= self.advance(i);
        }
        progress
    }

    fn take(&mut self, s: usize, d: usize) {
        if self.down[s] || self.down[d] {
            return;
        }
        let now = self.now;
        let Some(queue) = self.queues.get_mut(&(s, d)) else {
            return;
        };
        let mut visible: Vec<usize> = (0..queue.len())
            .filter(|&i| queue[i].visible_at <= now)
            .collect();
        if visible.is_empty() {
            return;
        }
        let n = self.rng.gen_range(1..=3).min(visible.len());
        let mut taken: Vec<usize> = (0..n)
            .map(|_| visible.swap_remove(self.rng.gen_range(0..visible.len())))
            .collect();
        taken.sort_unstable_by(|a, b| b.cmp(a));
        let messages: Vec<Message> = taken.into_iter().map(|i| queue.remove(i)).collect();
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        let mut message_keys = Vec::with_capacity(messages.len());
        for m in &messages {
            match unpack(&m.body) {
                Ok(rs) => {
                    message_keys.push(rs.iter().map(ChangeRecord::item_key).collect());
                    for r in rs {
                        if r.image.is_empty() {
                            deletes.push(r);
                        } else {
                            puts.push(r);
                        }
                    }
                }
                Err(e) => return self.fail(format!("unpack of a body pack produced: {e}")),
            }
        }
        if !deletes.is_empty() && !self.options.has(super::Hole::NoTombstones) {
            return self.fail("a record with an empty image was forwarded".into());
        }
        let name = self.regions[d].name;
        self.trace(|| format!("{name} drain: take {} messages", messages.len()));
        let records = coalesce(puts)
            .into_iter()
            .map(|r| (r, false))
            .chain(deletes.into_iter().map(|r| (r, true)))
            .collect();
        self.held.push(HeldTake {
            s,
            d,
            messages,
            message_keys,
            records,
            next: 0,
            done: HashMap::new(),
        });
    }

    /// The next write of held take `i`, or its settle once every record was tried (or the
    /// destination or source is cut off).
    fn advance(&mut self, i: usize) -> bool {
        let (s, d) = (self.held[i].s, self.held[i].d);
        let next = self.held[i].next;
        if self.down[s] || self.down[d] || next >= self.held[i].records.len() {
            let take = self.held.swap_remove(i);
            self.settle_take(take);
            return false;
        }
        let (record, plain_delete) = self.held[i].records[next].clone();
        self.held[i].next += 1;
        let ok = if plain_delete {
            self.apply_plain_delete(d, &record)
        } else {
            self.apply(d, &record)
        };
        let slot = self.held[i].done.entry(record.item_key()).or_insert(true);
        *slot &= ok;
        ok
    }

    /// Deletes the messages whose keys are all done (unless SQS delivers one again), puts the
    /// others back, visible after a while.
    fn settle_take(&mut self, take: HeldTake) {
        let now = self.now;
        let HeldTake {
            s,
            d,
            messages,
            message_keys,
            done,
            ..
        } = take;
        for (mut m, keys) in messages.into_iter().zip(message_keys) {
            let Some(hidden_for) = self.hidden_for(&keys, &done) else {
                continue;
            };
            m.visible_at = now + hidden_for;
            self.queues.entry((s, d)).or_default().push(m);
        }
    }
}
