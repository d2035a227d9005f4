//! Applications that know nothing of Ferry, writing the way ordinary code does: a put of an item
//! as it was read (Ferry's attributes included) with a new value, after other writes may have
//! landed; a copy read before a delete put back; a copy to another key (sometimes a rename: the
//! original is deleted after); a plain `REMOVE` of the attribute a `has:` filter replicates by.
//! Optionally, byte-identical restores: an image put back exactly as read (the contract's
//! residual, `docs/contract.md`).

use super::{key_item, Past, Sim, OP, VAL};
use ferry_core::item::{AttributeValue, Item};

/// The attribute the histories' `has:` filter replicates by; every application write sets it,
/// except the plain `REMOVE` of it.
pub(super) const REP: &str = "rep";

/// Of the plain application writes: a write-back of the image last read, a copy to another key,
/// and (under the filter) a `REMOVE` of the filter attribute; the rest of the share.
const WRITE_BACK: f64 = 0.55;
const COPY: f64 = 0.3;

impl Sim<'_> {
    /// Remembers what an application in region `r` reads of `key` before it writes: an item
    /// (tombstones read as absent), and what that read saw.
    pub(super) fn remember_read(&mut self, r: usize, key: &str, cur: Option<&Item>, past: &Past) {
        let config = &self.regions[r].config;
        if let Some(item) = cur.filter(|c| !config.is_tombstone(c)) {
            self.regions[r]
                .reads
                .insert(key.to_string(), (item.clone(), past.clone()));
        }
    }

    /// One plain application write to `key` in region `r`, if one applies. `past` is what the
    /// region's current state of the key had seen: a write made here follows it, whatever copy
    /// the application writes.
    pub(super) fn plain_app_write(&mut self, r: usize, key: &str, past: Past) -> bool {
        let x: f64 = self.rng.gen();
        if x < WRITE_BACK {
            self.write_back_read(r, key, past)
        } else if x < WRITE_BACK + COPY {
            self.copy_to(r, key, past)
        } else {
            self.remove_filter_attribute(r, key, past)
        }
    }

    /// Puts back the image last read of `key` (a read-modify-write whose read was stale, or a
    /// copy read before a delete): with a new value, or with the identical-restores option now
    /// and then exactly as read.
    fn write_back_read(&mut self, r: usize, key: &str, mut past: Past) -> bool {
        let Some((read, read_past)) = self.regions[r].reads.get(key).cloned() else {
            return false;
        };
        past.union(&read_past);
        let op = self.ops.len();
        if self.options.identical_restores && self.rng.gen_bool(0.3) {
            if let Some(AttributeValue::N(was)) = read.get(OP) {
                if let Ok(was) = was.parse() {
                    self.restores
                        .entry((key.to_string(), was))
                        .or_default()
                        .push(op);
                }
            }
            self.commit_write(r, key, read, past, false, "identical restore");
            return true;
        }
        let mut item = read;
        item.insert(OP.into(), AttributeValue::N(op.to_string()));
        item.insert(VAL.into(), AttributeValue::S(format!("v{op}")));
        self.mark_replicated(&mut item);
        self.commit_write(r, key, item, past, false, "write-back of a read");
        true
    }

    /// Copies an item read of another key to `key` (Ferry's attributes as read), and half the
    /// time deletes the original: a rename.
    fn copy_to(&mut self, r: usize, key: &str, mut past: Past) -> bool {
        let mut sources: Vec<&String> = self.regions[r]
            .reads
            .keys()
            .filter(|k| k.as_str() != key)
            .collect();
        sources.sort();
        if sources.is_empty() {
            return false;
        }
        let source = sources[self.rng.gen_range(0..sources.len())].clone();
        let Some((read, read_past)) = self.regions[r].reads.get(&source).cloned() else {
            return false;
        };
        past.union(&read_past);
        let op = self.ops.len();
        let mut item = read;
        item.extend(key_item(key));
        item.insert(OP.into(), AttributeValue::N(op.to_string()));
        self.mark_replicated(&mut item);
        self.commit_write(r, key, item, past, false, &format!("copy of {source}"));
        let original = self.regions[r].table.get(&source).cloned();
        if self.rng.gen_bool(0.5) && original.as_ref().is_some_and(|o| self.replicates(o)) {
            let delete_past = self.seen_by(r, &source);
            self.hard_delete(r, &source, delete_past, "rename: delete");
        }
        true
    }

    /// A plain `UpdateItem REMOVE` of the filter attribute: the item keeps whatever version it
    /// has, and leaves the filter.
    fn remove_filter_attribute(&mut self, r: usize, key: &str, past: Past) -> bool {
        if !self.options.filter_removes {
            return false;
        }
        let Some(mut item) = self.regions[r].table.get(key).cloned() else {
            return false;
        };
        if self.regions[r].config.is_tombstone(&item) || item.remove(REP).is_none() {
            return false;
        }
        let op = self.ops.len();
        item.insert(OP.into(), AttributeValue::N(op.to_string()));
        self.commit_write(r, key, item, past, false, "REMOVE rep");
        true
    }

    /// Under the filter, every application write but the `REMOVE` carries the filter attribute.
    pub(super) fn mark_replicated(&self, item: &mut Item) {
        if self.options.filter_removes {
            item.insert(REP.into(), AttributeValue::N("1".into()));
        }
    }

    /// Whether a change to this item replicates (its delete, above all): under the filter, an
    /// item that left it is this region's alone.
    pub(super) fn replicates(&self, item: &Item) -> bool {
        !self.options.filter_removes || item.contains_key(REP)
    }
}

use rand::Rng;
