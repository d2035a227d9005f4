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

/// The newest record of each key, in backlog order.
pub fn coalesce(records: Vec<ChangeRecord>) -> Vec<ChangeRecord> {
    let newest = newest_per_key(&records);
    let mut keep: Vec<usize> = newest.into_values().collect();
    keep.sort_unstable();
    let mut slots: Vec<Option<ChangeRecord>> = records.into_iter().map(Some).collect();
    keep.into_iter().filter_map(|i| slots[i].take()).collect()
}
