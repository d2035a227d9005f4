//! The two properties, checked on a settled history: convergence (every region holds the same
//! items) and causality (the surviving state of each key is the effect of one operation that no
//! operation which had seen it was lost to).

use super::{show, OpId, Region, Sim, Verdict};
use ferry_core::item::Item;

impl Sim<'_> {
    /// The two properties, once everything is delivered and what expired by `limit_ms` is gone.
    pub(super) fn verdict(&mut self, limit_ms: u64) -> Verdict {
        if let Some(undelivered) = self.undelivered() {
            return undelivered;
        }
        let keys = self.keys.clone();
        // 1. Convergence.
        for key in &keys {
            if let Some(divergent) = self.divergence(key) {
                return divergent;
            }
        }
        // 2. Causality, on the (common) final state.
        for key in &keys {
            if let Some(failure) = self.causality(key, limit_ms) {
                return failure;
            }
        }
        Verdict::Ok
    }

    /// The first buffer that still holds messages, if any.
    fn undelivered(&self) -> Option<Verdict> {
        let ((s, d), q) = self.queues.iter().find(|(_, q)| !q.is_empty())?;
        Some(Verdict::Undelivered {
            queue: format!("{} -> {}", self.regions[*s].name, self.regions[*d].name),
            messages: q.len(),
        })
    }

    /// Convergence on `key`: every region holds what the first one does.
    fn divergence(&self, key: &str) -> Option<Verdict> {
        let first = &self.regions[0];
        let differs = |r: &Region| {
            r.table.get(key) != first.table.get(key) && !self.absent_after_expiry(first, r, key)
        };
        if !self.regions[1..].iter().any(differs) {
            return None;
        }
        Some(Verdict::Divergent {
            key: key.to_string(),
            states: self
                .regions
                .iter()
                .map(|r| {
                    let state = r.table.get(key).map_or("absent".into(), show);
                    (r.name.to_string(), state)
                })
                .collect(),
        })
    }

    /// A tombstone and a key the TTL process removed both read as absent: after an app TTL
    /// expired in one region, a tombstone older than the expired version may be left in
    /// another (it lost to that version there). Both read as absent, no record is left that
    /// could tell them apart, and the tombstone expires too.
    fn absent_after_expiry(&self, a: &Region, b: &Region, key: &str) -> bool {
        let config = &self.regions[0].config;
        let expired_here = |r: &Region| {
            !r.table.contains_key(key)
                && r.gone
                    .get(key)
                    .is_some_and(|&op| self.ops[op].content.is_some())
        };
        let reads_absent = |r: &Region| {
            r.table
                .get(key)
                .is_none_or(|item| config.is_tombstone(item))
        };
        reads_absent(a) && reads_absent(b) && (expired_here(a) || expired_here(b))
    }

    /// Causality on `key`: the surviving state is the effect of one operation, shows what it
    /// wrote, and no operation that had seen it was lost to it.
    fn causality(&self, key: &str, limit_ms: u64) -> Option<Verdict> {
        let on_key: Vec<OpId> = (1..self.ops.len())
            .filter(|&o| self.ops[o].key == *key)
            .collect();
        // Only a delete, a tombstone or an expiry leaves the key reading as absent: one
        // causally last must explain it.
        let absence_explained = on_key.is_empty()
            || on_key.iter().any(|&o| {
                let op = &self.ops[o];
                (op.content.is_none() || op.expired_by(limit_ms))
                    && self.later_than(&on_key, o).is_empty()
            });
        let Some(item) = self.regions[0].table.get(key) else {
            return (!absence_explained).then(|| Verdict::LostAbsent {
                key: key.to_string(),
                ops: on_key.iter().rev().take(3).copied().collect(),
            });
        };
        let candidates = self.ops_of(0, key, item);
        if candidates.is_empty() {
            return Some(Verdict::WrongContent {
                key: key.to_string(),
                shows: show(item),
                op: 0,
                wrote: "nothing: no operation made this state".into(),
            });
        }
        let config = &self.regions[0].config;
        let shows = if config.is_tombstone(item) {
            None
        } else {
            let mut view = item.clone();
            view.remove(&config.names.ts);
            view.remove(&config.names.origin);
            view.remove(&config.names.sum);
            Some(view)
        };
        // A tombstone Ferry wrote into an expiry's gap stands for the expiry, which is no
        // operation of its own: it shows absence, and is explained the way absence is.
        let stands_for_expiry = candidates
            .iter()
            .any(|&f| self.ops[f].content.is_some() && self.ops[f].expired_by(limit_ms));
        // The state must be explained by one of the operations it can stand for.
        let mut failure = None;
        for f in candidates {
            match self.unexplained_by(f, key, item, &shows, &on_key, limit_ms) {
                None => return None, // f explains it
                Some(verdict) => {
                    failure.get_or_insert(verdict);
                }
            }
        }
        // A tombstone for an expiry is explained as absence is.
        failure.filter(|_| !(stands_for_expiry && shows.is_none() && absence_explained))
    }

    /// Why operation `f` does not explain `item`, the state of `key` that `shows` what a reader
    /// sees (`None`: absence), or `None` when it does.
    fn unexplained_by(
        &self,
        f: OpId,
        key: &str,
        item: &Item,
        shows: &Option<Item>,
        on_key: &[OpId],
        limit_ms: u64,
    ) -> Option<Verdict> {
        let op = &self.ops[f];
        // An expired write's effect is absence (a tombstone may stand for it).
        let expected = if op.expired_by(limit_ms) {
            None
        } else {
            op.content.clone()
        };
        let later = self.later_than(on_key, f);
        if *shows != expected {
            Some(Verdict::WrongContent {
                key: key.to_string(),
                shows: show(item),
                op: f,
                wrote: expected.as_ref().map_or("absence".into(), show),
            })
        } else if !later.is_empty() {
            let helper_only = f != 0 && op.helper && later.iter().all(|&o| self.ops[o].helper);
            Some(Verdict::LostAfter {
                key: key.to_string(),
                op: f,
                later: later.into_iter().take(3).collect(),
                helper_only,
            })
        } else {
            None
        }
    }

    /// The operations on a key (`on_key`) that had seen `f`'s effect.
    fn later_than(&self, on_key: &[OpId], f: OpId) -> Vec<OpId> {
        on_key
            .iter()
            .copied()
            .filter(|&o| self.ops[o].past.contains(f))
            .collect()
    }
}
