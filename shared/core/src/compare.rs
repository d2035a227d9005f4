//! Comparing regions item by item, as `ferry verify` and the demo do: exact attribute equality
//! as DynamoDB defines it (numbers by value, sets in any order; version included), tombstones
//! read as absent.

use crate::condition::items_equal;
use crate::config::Config;
use crate::item::{key_of, Item, ItemKey};
use std::collections::{BTreeMap, BTreeSet};

/// One region's visible items by key (tombstones left out).
pub type Snapshot = BTreeMap<ItemKey, Item>;

/// Builds a snapshot from scanned items. Items without the key attributes are ignored.
pub fn snapshot(items: impl IntoIterator<Item = Item>, config: &Config) -> Snapshot {
    items
        .into_iter()
        .filter(|i| !config.is_tombstone(i))
        .filter_map(|i| key_of(&i, &config.key).ok().map(|k| (ItemKey::of(&k), i)))
        .collect()
}

/// What differs between regions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comparison {
    /// Keys present and identical everywhere.
    pub matching: usize,
    /// Per region, the keys present elsewhere but absent there.
    pub missing: BTreeMap<String, Vec<ItemKey>>,
    /// Keys present everywhere but not identical.
    pub differing: Vec<ItemKey>,
}

impl Comparison {
    pub fn divergent_keys(&self) -> usize {
        let mut keys: BTreeSet<&ItemKey> = self.differing.iter().collect();
        for k in self.missing.values() {
            keys.extend(k.iter());
        }
        keys.len()
    }

    pub fn is_converged(&self) -> bool {
        self.divergent_keys() == 0
    }
}

/// Compares the snapshots of several regions.
pub fn compare(regions: &[(String, Snapshot)]) -> Comparison {
    let mut all: BTreeSet<&ItemKey> = BTreeSet::new();
    for (_, s) in regions {
        all.extend(s.keys());
    }
    let mut out = Comparison::default();
    for key in all {
        let present: Vec<&Item> = regions.iter().filter_map(|(_, s)| s.get(key)).collect();
        if present.len() < regions.len() {
            for (name, s) in regions {
                if !s.contains_key(key) {
                    out.missing
                        .entry(name.clone())
                        .or_default()
                        .push(key.clone());
                }
            }
        } else if present.windows(2).all(|w| items_equal(w[0], w[1])) {
            out.matching += 1;
        } else {
            out.differing.push(key.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::AttributeValue;

    fn item(pk: &str, v: &str) -> Item {
        [
            ("pk".to_string(), AttributeValue::S(pk.into())),
            ("v".to_string(), AttributeValue::N(v.into())),
        ]
        .into()
    }

    #[test]
    fn finds_missing_and_differing_and_hides_tombstones() {
        let config = Config::new("r1", "pk");
        let mut tomb = item("c", "1");
        tomb.insert(config.names.tombstone.clone(), AttributeValue::Bool(true));
        let a = snapshot([item("a", "1"), item("b", "1"), tomb], &config);
        let b = snapshot([item("a", "1"), item("b", "2")], &config);
        let c = compare(&[("r1".into(), a.clone()), ("r2".into(), b)]);
        assert_eq!(c.matching, 1);
        assert_eq!(c.differing.len(), 1);
        assert!(c.missing.is_empty());
        let c = compare(&[("r1".into(), a), ("r2".into(), Snapshot::new())]);
        assert_eq!(c.missing["r2"].len(), 2);
        assert_eq!(c.divergent_keys(), 2);
    }

    /// Sets come back from DynamoDB in any order and numbers in any spelling of their value:
    /// neither is a difference. A different member or value is, at any depth.
    #[test]
    fn compares_as_dynamodb_does() {
        use AttributeValue::{Ns, Ss, L, M, N};
        let config = Config::new("r1", "pk");
        let with = |v: AttributeValue| {
            let mut i = item("a", "1");
            i.insert("x".into(), v);
            snapshot([i], &config)
        };
        let nested = |set: &[&str], n: &str| {
            M([(
                "inner".to_string(),
                L(vec![
                    Ss(set.iter().map(|s| s.to_string()).collect()),
                    N(n.into()),
                ]),
            )]
            .into())
        };
        let pairs = [
            (
                Ss(vec!["p".into(), "q".into()]),
                Ss(vec!["q".into(), "p".into()]),
                true,
            ),
            (
                Ns(vec!["1".into(), "2.50".into()]),
                Ns(vec!["2.5".into(), "1".into()]),
                true,
            ),
            (N("1E+2".into()), N("100".into()), true),
            (nested(&["p", "q"], "7"), nested(&["q", "p"], "7.0"), true),
            (
                Ss(vec!["p".into(), "q".into()]),
                Ss(vec!["p".into(), "r".into()]),
                false,
            ),
            (nested(&["p", "q"], "7"), nested(&["q", "p"], "8"), false),
            (
                L(vec![N("1".into()), N("2".into())]),
                L(vec![N("2".into()), N("1".into())]),
                false,
            ),
        ];
        for (a, b, same) in pairs {
            let c = compare(&[
                ("r1".into(), with(a.clone())),
                ("r2".into(), with(b.clone())),
            ]);
            assert_eq!(c.is_converged(), same, "{a:?} vs {b:?}");
        }
    }
}
