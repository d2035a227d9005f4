//! Coalescing a backlog: only the newest version of each key needs applying. Applying is a
//! max over versions, so the older ones would be stale anyway; a replay writes each key once.

use crate::config::Config;
use crate::item::ItemKey;
use crate::merge::{merge_into, AttrState};
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
/// Attribute mode's coalescing: the records of each key are merged into one state, written
/// into the key's winner (its image and its newest entry as its version), so that what is
/// applied — and re-queued if it is not done — stands for every record of the key. A record
/// whose version map cannot be read is poison of its own: it stands alone (its write then fails
/// to read it, and it is dead-lettered), and the key's other records are merged without it.
/// Returns, for each record, the index of the record that stands for it.
pub fn merge_per_key(records: &mut [ChangeRecord], config: &Config) -> Vec<usize> {
    let states: Vec<Option<AttrState>> = records
        .iter()
        .map(|r| AttrState::read(&r.image, config).ok().map(|r| r.state))
        .collect();
    let mut winner = winner_of(records);
    if states.iter().any(Option::is_none) {
        // The first readable record of each key stands for it; unreadable ones stand alone.
        let mut first_readable: HashMap<usize, usize> = HashMap::new();
        for (i, state) in states.iter().enumerate() {
            let old = winner[i];
            winner[i] = match state {
                None => i,
                Some(_) => *first_readable.entry(old).or_insert(i),
            };
        }
    }
    let mut merged: Vec<Option<AttrState>> = vec![None; records.len()];
    for (i, state) in states.into_iter().enumerate() {
        let Some(state) = state else { continue };
        match &mut merged[winner[i]] {
            Some(into) => merge_into(into, &state),
            slot => *slot = Some(state),
        }
    }
    for (w, state) in merged.into_iter().enumerate() {
        let Some(state) = state else { continue };
        let record = &mut records[w];
        if !record.image.is_empty() {
            record.image = state.to_item(&record.key, config);
            if let Some(newest) = state.newest() {
                record.version = newest.clone();
            }
        }
    }
    winner
}
