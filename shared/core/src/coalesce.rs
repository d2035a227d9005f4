//! Coalescing a backlog: only the newest version of each key needs applying. Applying is a
//! max over versions, so the older ones would be stale anyway; a replay writes each key once.

use crate::item::ItemKey;
use crate::record::ChangeRecord;
use std::collections::HashMap;

/// For each key, the index of its newest record (ties keep the first).
pub fn newest_per_key(records: &[ChangeRecord]) -> HashMap<ItemKey, usize> {
    let mut newest: HashMap<ItemKey, usize> = HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        newest
            .entry(r.item_key())
            .and_modify(|j| {
                if r.version > records[*j].version {
                    *j = i;
                }
            })
            .or_insert(i);
    }
    newest
}

/// For each record, the index of the record that decides its key: the key's newest (ties keep
/// the first), which is the record itself for a winner. The same rule as [`newest_per_key`],
/// with each record's key computed once.
pub fn winner_of(records: &[ChangeRecord]) -> Vec<usize> {
    // Each distinct key gets a dense id on first sight; `winner[id]` is its newest record so far.
    let mut ids: HashMap<ItemKey, usize> = HashMap::with_capacity(records.len());
    let mut winner: Vec<usize> = Vec::with_capacity(records.len());
    let mut id_of: Vec<usize> = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let next = winner.len();
        let id = *ids.entry(r.item_key()).or_insert(next);
        if id == next {
            winner.push(i);
        } else if r.version > records[winner[id]].version {
            winner[id] = i;
        }
        id_of.push(id);
    }
    id_of.into_iter().map(|id| winner[id]).collect()
}

/// The newest record of each key, in backlog order.
pub fn coalesce(records: Vec<ChangeRecord>) -> Vec<ChangeRecord> {
    let winner = winner_of(&records);
    records
        .into_iter()
        .enumerate()
        .filter(|(i, _)| winner[*i] == *i)
        .map(|(_, r)| r)
        .collect()
}
