//! The seal of a version: a short digest of the whole item Ferry wrote, kept on the item.
//!
//! A drain only ever writes images exactly as forwarded, and enqueue forwards only sealed images,
//! so every version a drain writes is sealed. An application that writes back a version it read
//! (a read-modify-write put, a restore of an older copy, a copy to another key) carries the seal
//! it read over content (or a key) it does not match: that write is the application's, not a
//! drain's, and Ferry treats it as a local write still to be stamped (`docs/contract.md`).
//!
//! What stays ambiguous is a byte-identical write-back: the same content, version and seal as
//! an earlier state. It matches, and reads as that earlier state replayed.

use crate::condition::normalize_number;
use crate::config::AttributeNames;
use crate::item::{AttributeValue, Item};

/// FNV-1a 64: small, stable across builds and platforms. Not a defence against forgery (an
/// application can write anything, Ferry's attributes included); it tells writers apart.
#[derive(Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }

    /// A length-prefixed field: no value can be confused with the next one.
    fn field(&mut self, tag: u8, bytes: &[u8]) {
        self.write(&[tag]);
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

/// The seal an item should carry: FNV-1a 64 over a canonical encoding of every attribute but the
/// seal itself (names sorted, numbers by value, sets unordered, maps by key), as `v1-` and 16
/// hex digits. The same for the item as written and as any stream or read returns it.
pub fn seal_of(item: &Item, names: &AttributeNames) -> AttributeValue {
    AttributeValue::S(format!("{VERSION_SEAL}{:016x}", hash_item(item, names)))
}

/// The seal of a tombstone that enqueue leaves where the TTL process removed an item: a state of
/// this region alone (never forwarded), told apart from every other version by its seal.
pub fn expiry_seal_of(item: &Item, names: &AttributeNames) -> AttributeValue {
    AttributeValue::S(format!("{EXPIRY_SEAL}{:016x}", hash_item(item, names)))
}

/// True for the local tombstone of an expiry ([`expiry_seal_of`]), as enqueue wrote it.
pub fn is_expiry_tombstone(item: &Item, names: &AttributeNames) -> bool {
    item.get(&names.sum) == Some(&expiry_seal_of(item, names))
}

/// The seal of a tombstone that enqueue writes over a drain's copy that it takes for an older
/// version fallen into a delete's gap: a replicated tombstone like any other, which enqueue can
/// tell from an application's delete when a drain's record shows that the copy was in fact
/// written over an application's write (`reconcile::restore`).
pub fn gap_seal_of(item: &Item, names: &AttributeNames) -> AttributeValue {
    AttributeValue::S(format!("{GAP_SEAL}{:016x}", hash_item(item, names)))
}

/// True for a tombstone enqueue wrote over a copy in a delete's gap ([`gap_seal_of`]).
pub fn is_gap_tombstone(item: &Item, names: &AttributeNames) -> bool {
    item.get(&names.sum) == Some(&gap_seal_of(item, names))
}

const VERSION_SEAL: &str = "v1-";
const EXPIRY_SEAL: &str = "x1-";
const GAP_SEAL: &str = "g1-";

fn hash_item(item: &Item, names: &AttributeNames) -> u64 {
    let mut h = Fnv64::default();
    let mut attributes: Vec<(&String, &AttributeValue)> =
        item.iter().filter(|(n, _)| **n != names.sum).collect();
    attributes.sort_by(|a, b| a.0.cmp(b.0));
    h.write(&(attributes.len() as u64).to_le_bytes());
    for (name, value) in attributes {
        h.field(b'a', name.as_bytes());
        hash_value(&mut h, value);
    }
    h.finish()
}

/// Sets the item's seal to match its content (call after every other change to the item).
pub fn seal(item: &mut Item, names: &AttributeNames) {
    let sum = seal_of(item, names);
    item.insert(names.sum.clone(), sum);
}

/// False when the item carries a seal that does not match it: an application wrote a version
/// it read over other content or under another key. An item without a seal is taken as sealed:
/// it was written before seals existed (or carries no version at all).
pub fn is_sealed(item: &Item, names: &AttributeNames) -> bool {
    let Some(AttributeValue::S(sum)) = item.get(&names.sum) else {
        return !item.contains_key(&names.sum);
    };
    let hash = || format!("{:016x}", hash_item(item, names));
    [VERSION_SEAL, EXPIRY_SEAL, GAP_SEAL]
        .iter()
        .find_map(|prefix| sum.strip_prefix(prefix))
        .is_some_and(|hex| hex == hash())
}

fn hash_value(h: &mut Fnv64, value: &AttributeValue) {
    use AttributeValue::*;
    match value {
        S(s) => h.field(b's', s.as_bytes()),
        N(n) => h.field(b'n', number(n).as_bytes()),
        B(b) => h.field(b'b', b),
        Bool(b) => h.field(b'o', &[u8::from(*b)]),
        Null(_) => h.field(b'z', &[]),
        L(list) => {
            h.field(b'l', &(list.len() as u64).to_le_bytes());
            list.iter().for_each(|v| hash_value(h, v));
        }
        M(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            h.field(b'm', &(entries.len() as u64).to_le_bytes());
            for (name, v) in entries {
                h.field(b'a', name.as_bytes());
                hash_value(h, v);
            }
        }
        Ss(set) => hash_set(h, b'S', set.iter().map(|s| s.as_bytes().to_vec())),
        Ns(set) => hash_set(h, b'N', set.iter().map(|n| number(n).into_bytes())),
        Bs(set) => hash_set(h, b'B', set.iter().cloned()),
    }
}

fn hash_set(h: &mut Fnv64, tag: u8, members: impl Iterator<Item = Vec<u8>>) {
    let mut members: Vec<Vec<u8>> = members.collect();
    members.sort();
    members.dedup();
    h.field(tag, &(members.len() as u64).to_le_bytes());
    for m in members {
        h.field(b'e', &m);
    }
}

/// A number by value: `1`, `1.0` and `10E-1` are one number to DynamoDB, which may hand back a
/// number in another form than it was written in. Unparseable text is hashed as it is.
fn number(n: &str) -> String {
    match normalize_number(n) {
        Some((_, digits, _)) if digits.is_empty() => "0".into(),
        Some((negative, digits, exponent)) => {
            format!("{}{digits}e{exponent}", if negative { "-" } else { "" })
        }
        None => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn a_sealed_item_stays_sealed_in_any_equal_form() {
        let names = AttributeNames::default();
        let mut a = item(&[
            ("pk", AttributeValue::S("k".into())),
            ("n", AttributeValue::N("1.50".into())),
            ("ss", AttributeValue::Ss(vec!["b".into(), "a".into()])),
        ]);
        seal(&mut a, &names);
        assert!(is_sealed(&a, &names));
        let mut b = a.clone();
        b.insert("n".into(), AttributeValue::N("15E-1".into()));
        b.insert(
            "ss".into(),
            AttributeValue::Ss(vec!["a".into(), "b".into()]),
        );
        assert!(is_sealed(&b, &names), "numbers by value, sets unordered");
    }

    #[test]
    fn a_changed_value_or_key_breaks_the_seal() {
        let names = AttributeNames::default();
        let mut a = item(&[
            ("pk", AttributeValue::S("k".into())),
            ("v", AttributeValue::S("x".into())),
        ]);
        seal(&mut a, &names);
        let mut changed = a.clone();
        changed.insert("v".into(), AttributeValue::S("y".into()));
        assert!(!is_sealed(&changed, &names));
        let mut moved = a.clone();
        moved.insert("pk".into(), AttributeValue::S("k2".into()));
        assert!(!is_sealed(&moved, &names));
        let mut unsealed = a.clone();
        unsealed.remove("ferry_sum");
        assert!(is_sealed(&unsealed, &names), "no seal: taken as sealed");
    }

    #[test]
    fn values_of_different_types_differ() {
        let names = AttributeNames::default();
        let s = item(&[("a", AttributeValue::S("1".into()))]);
        let n = item(&[("a", AttributeValue::N("1".into()))]);
        assert_ne!(seal_of(&s, &names), seal_of(&n, &names));
    }
}
