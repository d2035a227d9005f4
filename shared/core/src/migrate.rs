//! Switching a table from item mode to attribute mode (`../docs/attribute-merge.md`, *Mode
//! selection and migration*): what the backfill does with each scanned item. Pure; `ferry
//! backfill` sends the writes ([`MergeWrite`], an `UpdateItem`) and applies the resulting state
//! to the other regions with the drain's merge.
//!
//! - An **item-mode item** (it holds the item version) gets an entry `(item ts, item origin)` for
//!   each application attribute; an item-mode tombstone becomes a whole-item tombstone at its
//!   version. The item version (and the tombstone marker) goes. Nothing here depends on the
//!   region or the clock, so regions that agreed in item mode agree at once.
//! - **Application attributes without an entry** (a pre-Ferry item, a write during the switch)
//!   get `(max(now, newest entry + 1), local)`, as enqueue's stamps do.
//!
//! Every write is conditional on the item as read (its version, its map, the attributes it
//! stamps); a failed condition means a concurrent write: read again and decide again.

use crate::condition::{values_equal, Condition};
use crate::config::{Config, MergeMode};
use crate::item::{key_of, AttributeValue, Item};
use crate::merge::{
    merge_into, plan_merge, tombstone_ttl, AttrState, MergeError, MergePlan, MergeWrite, Read,
    Unversioned,
};
use crate::version::{Version, VersionError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    #[error("the merge mode is item: re-stamping is the migration to attribute mode")]
    NotAttributeMode,
    #[error("item lacks key attribute `{0}`")]
    MissingKey(String),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// What a [`Step::Write`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// An item of item mode, re-stamped from its item version.
    Restamp,
    /// Application attributes without an entry, stamped at `(max(now, newest + 1), local)`.
    Stamp,
}

/// The backfill's step for one stored item, in attribute mode.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Already in attribute form: nothing to write; this state is what other regions get.
    Ready(AttrState),
    /// A conditional `UpdateItem` of the item; `write.merged` is its state afterwards.
    Write {
        kind: WriteKind,
        write: Box<MergeWrite>,
    },
    /// Nothing to replicate: no application attribute and no version of either mode.
    Empty,
}

/// Decides the step for `item` (as read from the table) at `now_ms` on the local clock.
pub fn step(item: &Item, now_ms: u64, config: &Config) -> Result<Step, MigrateError> {
    if config.merge_mode != MergeMode::Attribute {
        return Err(MigrateError::NotAttributeMode);
    }
    let key = key_of(item, &config.key).map_err(MigrateError::MissingKey)?;
    let read = AttrState::read(item, config)?;
    // The item version, with or without a map: a drain of attribute mode may have merged into an
    // item-mode item (a tombstone has no unversioned attribute to make it wait) before this
    // region's backfill got to it. The item version is folded in either way.
    if let Some(version) = Version::of(item, &config.names)? {
        let write = restamp(key, item, read, &version, config);
        return Ok(Step::Write {
            kind: WriteKind::Restamp,
            write: Box::new(write),
        });
    }
    if !read.unversioned.is_empty() {
        return stamp(key, item, read, now_ms, config);
    }
    if item.contains_key(&config.names.versions) {
        Ok(Step::Ready(read.state))
    } else {
        Ok(Step::Empty)
    }
}

fn is_application(name: &str, config: &Config) -> bool {
    !config.key.is_key(name) && !config.names.is_ferry_attribute(name)
}

/// The re-stamp of an item holding the item version `version`.
fn restamp(key: Item, item: &Item, read: Read, version: &Version, config: &Config) -> MergeWrite {
    let names = &config.names;
    let marked = matches!(item.get(&names.tombstone), Some(AttributeValue::Bool(true)));
    let mut from_item = AttrState::default();
    if marked || (read.unversioned.is_empty() && read.state.values.is_empty()) {
        // A tombstone (or an item of nothing but its key, which this mode cannot show): deleted
        // at its version, so nothing older comes back. Its unversioned attributes go with it.
        from_item.deleted = Some(version.clone());
    } else {
        for name in &read.unversioned {
            from_item.versions.insert(name.clone(), version.clone());
            if let Some(v) = item.get(name) {
                from_item.values.insert(name.clone(), v.clone());
            }
        }
    }
    let mut merged = read.state;
    merge_into(&mut merged, &from_item);

    let mut dropped: Vec<String> = item
        .keys()
        .filter(|n| is_application(n, config) && !merged.values.contains_key(*n))
        .cloned()
        .collect();
    dropped.sort();
    let mut set = vec![(names.versions.clone(), merged.versions_value(config))];
    let mut remove = vec![names.ts.clone(), names.origin.clone()];
    if item.contains_key(&names.tombstone) {
        remove.push(names.tombstone.clone());
    }
    remove.extend(dropped.iter().cloned());
    match (tombstone_ttl(&merged, false, config), item.get(&names.ttl)) {
        (Some(want), Some(have)) if values_equal(&want, have) => {}
        (Some(want), _) => set.push((names.ttl.clone(), want)),
        (None, Some(_)) => remove.push(names.ttl.clone()),
        (None, None) => {}
    }

    let as_read = |name: &String| match item.get(name) {
        Some(v) => Condition::Equals(name.clone(), v.clone()),
        None => Condition::NotExists(name.clone()),
    };
    let mut condition = vec![
        Condition::Exists(config.key.partition.clone()),
        Condition::Equals(names.ts.clone(), version.ts_value()),
        Condition::Equals(names.origin.clone(), version.origin_value()),
        as_read(&names.tombstone),
        as_read(&names.versions),
    ];
    // The attributes that get the item version or go, as read: an item-mode update that kept
    // the version (not stamped yet) must not get it.
    let mut pinned: Vec<&String> = read.unversioned.iter().chain(&dropped).collect();
    pinned.sort();
    pinned.dedup();
    condition.extend(pinned.into_iter().map(as_read));
    MergeWrite {
        key,
        set,
        remove,
        condition: Condition::And(condition),
        changed_attributes: dropped.len(),
        merged,
    }
}

/// The stamp of the application attributes an item holds without an entry.
fn stamp(
    key: Item,
    item: &Item,
    read: Read,
    now_ms: u64,
    config: &Config,
) -> Result<Step, MigrateError> {
    let floor_ts = read
        .state
        .newest()
        .map_or(now_ms, |v| now_ms.max(v.ts_ms.saturating_add(1)));
    let floor = Version::new(floor_ts, config.local_region.clone());
    let mut delta = AttrState::default();
    for name in &read.unversioned {
        delta.versions.insert(name.clone(), floor.clone());
        if let Some(v) = item.get(name) {
            delta.values.insert(name.clone(), v.clone());
        }
    }
    // Above every entry, so the stamp always changes the map: the plan is a write.
    let MergePlan::Write(mut write) =
        plan_merge(&key, Some(item), &delta, Unversioned::Keep, config)?
    else {
        return Ok(Step::Ready(read.state));
    };
    // The merge's condition pins the map; the entries must also land on the values read (an
    // unstamped write does not change the map).
    let mut parts = match write.condition {
        Condition::And(parts) => parts,
        other => vec![other],
    };
    parts.extend(
        read.unversioned
            .iter()
            .filter_map(|n| item.get(n).map(|v| Condition::Equals(n.clone(), v.clone()))),
    );
    write.condition = Condition::And(parts);
    Ok(Step::Write {
        kind: WriteKind::Stamp,
        write,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::items_equal;
    use crate::merge::apply_write;
    use proptest::prelude::*;

    fn config(region: &str) -> Config {
        let mut c = Config::new(region, "pk");
        c.merge_mode = MergeMode::Attribute;
        c
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn v(ts: u64, origin: &str) -> Version {
        Version::new(ts, origin)
    }

    fn item_mode(attrs: &[(&str, &str)], version: &Version, c: &Config) -> Item {
        let mut i: Item = [("pk".to_string(), s("k"))].into();
        for (n, x) in attrs {
            i.insert(n.to_string(), s(x));
        }
        version.stamp_into(&mut i, &c.names);
        i
    }

    fn tombstone(extra: &[(&str, &str)], version: &Version, ttl: u64, c: &Config) -> Item {
        let mut i = item_mode(extra, version, c);
        i.insert(c.names.tombstone.clone(), AttributeValue::Bool(true));
        i.insert(c.names.ttl.clone(), AttributeValue::N(ttl.to_string()));
        i
    }

    /// The write of a step, checked to hold on the item it was planned from, applied.
    fn written(item: &Item, now: u64, c: &Config) -> (WriteKind, Item, AttrState) {
        match step(item, now, c).unwrap() {
            Step::Write { kind, write } => {
                assert!(write.condition.holds(Some(item)), "{write:?}");
                (kind, apply_write(Some(item), &write), write.merged)
            }
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn an_item_mode_item_gets_its_version_on_every_attribute() {
        let c = config("r1");
        let mut item = item_mode(&[("address", "x"), ("name", "n")], &v(50, "r2"), &c);
        item.insert(c.names.ttl.clone(), AttributeValue::N("99".into()));
        let (kind, after, merged) = written(&item, 1_000, &c);
        assert_eq!(kind, WriteKind::Restamp);
        let read = AttrState::read(&after, &c).unwrap();
        assert!(read.unversioned.is_empty());
        assert_eq!(read.state, merged);
        assert_eq!(read.state.versions["address"], v(50, "r2"));
        assert_eq!(read.state.versions["name"], v(50, "r2"));
        assert_eq!(read.state.deleted, None);
        assert_eq!(after["address"], s("x"));
        assert_eq!(
            after[&c.names.versions],
            AttributeValue::M(
                [
                    ("address".to_string(), s("50@r2")),
                    ("name".to_string(), s("50@r2"))
                ]
                .into()
            )
        );
        for gone in [&c.names.ts, &c.names.origin, &c.names.ttl] {
            assert!(!after.contains_key(gone), "{gone} left");
        }
        // Done once: the next pass finds it ready, with the same state.
        assert_eq!(step(&after, 2_000, &c).unwrap(), Step::Ready(merged));
    }

    #[test]
    fn the_restamp_is_conditional_on_the_item_as_read() {
        let c = config("r1");
        let item = item_mode(&[("a", "1")], &v(50, "r2"), &c);
        let Step::Write { write, .. } = step(&item, 1_000, &c).unwrap() else {
            panic!("a write");
        };
        let mut newer = item.clone();
        v(60, "r1").stamp_into(&mut newer, &c.names);
        assert!(!write.condition.holds(Some(&newer)), "a newer version");
        let mut unstamped = item.clone();
        unstamped.insert("a".into(), s("2"));
        assert!(
            !write.condition.holds(Some(&unstamped)),
            "a kept-version update"
        );
        let mut mapped = item.clone();
        mapped.insert(c.names.versions.clone(), AttributeValue::M(Item::new()));
        assert!(!write.condition.holds(Some(&mapped)), "a map appeared");
        assert!(!write.condition.holds(None), "deleted meanwhile");
        // A later attribute is not pinned: it stays unversioned and is stamped on its own.
        let mut added = item.clone();
        added.insert("b".into(), s("new"));
        assert!(write.condition.holds(Some(&added)));
        let after = apply_write(Some(&added), &write);
        assert_eq!(
            AttrState::read(&after, &c).unwrap().unversioned,
            vec!["b".to_string()]
        );
    }

    #[test]
    fn an_item_mode_tombstone_becomes_a_whole_item_tombstone() {
        let c = config("r1");
        let tomb = tombstone(&[("leftover", "x")], &v(7_000_000, "r2"), 5, &c);
        let (kind, after, merged) = written(&tomb, 1_000, &c);
        assert_eq!(kind, WriteKind::Restamp);
        assert_eq!(merged.deleted, Some(v(7_000_000, "r2")));
        assert!(c.is_tombstone(&after), "invisible: {after:?}");
        assert_eq!(
            after[&c.names.versions],
            AttributeValue::M([("pk".to_string(), s("7000000@r2"))].into())
        );
        assert_eq!(
            after[&c.names.ttl],
            AttributeValue::N((7_000 + c.tombstone_lifetime_s).to_string())
        );
        for gone in [&c.names.ts, &c.names.origin, &c.names.tombstone] {
            assert!(!after.contains_key(gone), "{gone} left");
        }
        assert!(!after.contains_key("leftover"));
        assert_eq!(step(&after, 2_000, &c).unwrap(), Step::Ready(merged));
    }

    #[test]
    fn a_tombstone_a_drain_merged_into_keeps_the_newer_entries() {
        // eu's drain merged a newer `a` into eu's item-mode tombstone before eu's backfill ran.
        let c = config("eu");
        let mut mixed = tombstone(&[], &v(100, "us"), 5, &c);
        mixed.insert("a".into(), s("new"));
        mixed.insert(
            c.names.versions.clone(),
            AttributeValue::M([("a".to_string(), s("200@us"))].into()),
        );
        let (_, after, merged) = written(&mixed, 1, &c);
        assert_eq!(merged.deleted, Some(v(100, "us")));
        assert_eq!(merged.versions["a"], v(200, "us"));
        assert_eq!(after["a"], s("new"));
        assert!(!c.is_tombstone(&after));
        assert!(!after.contains_key(&c.names.ttl), "visible: no TTL");
        assert!(!after.contains_key(&c.names.tombstone));
    }

    #[test]
    fn unversioned_attributes_are_stamped_above_every_entry() {
        let c = config("r1");
        let plain: Item = [("pk".to_string(), s("k")), ("a".to_string(), s("1"))].into();
        let (kind, after, _) = written(&plain, 1_000, &c);
        assert_eq!(kind, WriteKind::Stamp);
        let read = AttrState::read(&after, &c).unwrap();
        assert_eq!(read.state.versions["a"], v(1_000, "r1"));
        assert_eq!(after["a"], s("1"));
        // A write during the switch, next to entries newer than the local clock.
        let mut partly = after.clone();
        partly.insert(
            c.names.versions.clone(),
            AttributeValue::M([("a".to_string(), s("5000@r2"))].into()),
        );
        partly.insert("b".into(), s("2"));
        let Step::Write { write, .. } = step(&partly, 1_000, &c).unwrap() else {
            panic!("a stamp");
        };
        assert_eq!(write.merged.versions["b"], v(5_001, "r1"));
        assert_eq!(write.merged.versions["a"], v(5_000, "r2"));
        assert!(write.condition.holds(Some(&partly)));
        let mut changed = partly.clone();
        changed.insert("b".into(), s("3"));
        assert!(
            !write.condition.holds(Some(&changed)),
            "the entry goes on the value read"
        );
        let after = apply_write(Some(&partly), &write);
        assert!(matches!(step(&after, 1_000, &c), Ok(Step::Ready(_))));
    }

    #[test]
    fn what_needs_nothing_or_cannot_be_done() {
        let c = config("r1");
        let key_only: Item = [("pk".to_string(), s("k"))].into();
        assert_eq!(step(&key_only, 1, &c), Ok(Step::Empty));
        let no_key: Item = [("a".to_string(), s("1"))].into();
        assert_eq!(
            step(&no_key, 1, &c),
            Err(MigrateError::MissingKey("pk".into()))
        );
        let mut item_config = c.clone();
        item_config.merge_mode = MergeMode::Item;
        assert_eq!(
            step(&key_only, 1, &item_config),
            Err(MigrateError::NotAttributeMode)
        );
        let mut half = key_only.clone();
        half.insert(c.names.ts.clone(), AttributeValue::N("5".into()));
        assert!(matches!(step(&half, 1, &c), Err(MigrateError::Version(_))));
    }

    /// An item-mode item over a small world: attributes a–c, a version, maybe the tombstone
    /// marker (with leftovers), maybe a TTL.
    #[derive(Clone, Debug)]
    struct ItemMode {
        attrs: Vec<(String, String)>,
        version: Version,
        tombstone: bool,
        ttl: Option<u64>,
    }

    impl ItemMode {
        fn item(&self, c: &Config) -> Item {
            let mut i: Item = [("pk".to_string(), s("k"))].into();
            for (n, x) in &self.attrs {
                i.insert(n.clone(), s(x));
            }
            self.version.stamp_into(&mut i, &c.names);
            if self.tombstone {
                i.insert(c.names.tombstone.clone(), AttributeValue::Bool(true));
            }
            if let Some(t) = self.ttl {
                i.insert(c.names.ttl.clone(), AttributeValue::N(t.to_string()));
            }
            i
        }
    }

    fn attrs() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::btree_map(
            prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(String::from),
            prop_oneof![Just("x"), Just("y")].prop_map(String::from),
            0..4,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    fn item_mode_item() -> impl Strategy<Value = ItemMode> {
        (
            attrs(),
            (0u64..3_000_000, prop_oneof![Just("r1"), Just("r2")]),
            any::<bool>(),
            proptest::option::of(0u64..10),
        )
            .prop_map(|(attrs, (ts, o), tombstone, ttl)| ItemMode {
                attrs,
                version: v(ts, o),
                tombstone,
                ttl,
            })
    }

    /// Runs steps until the item is ready (each write checked against its condition).
    fn migrate(mut item: Item, now: u64, c: &Config) -> (Item, AttrState, usize) {
        for writes in 0..4 {
            match step(&item, now, c).unwrap() {
                Step::Ready(state) => return (item, state, writes),
                Step::Empty => return (item, AttrState::default(), writes),
                Step::Write { write, .. } => {
                    assert!(write.condition.holds(Some(&item)));
                    item = apply_write(Some(&item), &write);
                }
            }
        }
        panic!("not ready after 4 writes: {item:?}");
    }

    proptest! {
        /// One write re-stamps; the next pass finds nothing to do, and reads the same state.
        #[test]
        fn restamping_twice_is_a_no_op(x in item_mode_item(), now in 0u64..5_000_000) {
            let c = config("r1");
            let (after, state, writes) = migrate(x.item(&c), now, &c);
            prop_assert_eq!(writes, 1);
            prop_assert_eq!(step(&after, now + 1, &c).unwrap(), Step::Ready(state.clone()));
            prop_assert!(!after.contains_key(&c.names.ts) && !after.contains_key(&c.names.origin));
            prop_assert!(!after.contains_key(&c.names.tombstone));
            // Every entry is the item's version.
            for entry in state.versions.values().chain(state.deleted.iter()) {
                prop_assert_eq!(entry, &x.version);
            }
        }

        /// Two regions that agreed in item mode (the same version and attributes, or tombstones
        /// at the same version whatever their leftovers and TTL) hold equal items once each has
        /// re-stamped with its own clock and region.
        #[test]
        fn regions_that_agreed_restamp_to_equal_items(
            x in item_mode_item(),
            leftovers in attrs(),
            ttl in proptest::option::of(0u64..10),
            now1 in 0u64..5_000_000,
            now2 in 0u64..5_000_000,
        ) {
            let (c1, c2) = (config("r1"), config("r2"));
            let y = if x.tombstone {
                ItemMode { attrs: leftovers, ttl, ..x.clone() }
            } else {
                x.clone()
            };
            let (a, sa, _) = migrate(x.item(&c1), now1, &c1);
            let (b, sb, _) = migrate(y.item(&c2), now2, &c2);
            prop_assert_eq!(sa, sb);
            prop_assert!(items_equal(&a, &b), "{:?} vs {:?}", a, b);
        }

        /// An item-mode tombstone re-stamps to an invisible item that expires by the rule.
        #[test]
        fn a_tombstone_restamps_invisible(x in item_mode_item()) {
            let c = config("r1");
            let x = ItemMode { tombstone: true, ..x };
            let (after, state, _) = migrate(x.item(&c), 1, &c);
            prop_assert!(c.is_tombstone(&after));
            prop_assert_eq!(state.deleted, Some(x.version.clone()));
            prop_assert_eq!(
                after.get(&c.names.ttl),
                Some(&AttributeValue::N((x.version.ts_ms / 1000 + c.tombstone_lifetime_s).to_string()))
            );
        }

        /// Pre-Ferry items: one stamp at the local clock, then ready.
        #[test]
        fn unversioned_items_stamp_once(a in attrs(), now in 0u64..5_000_000) {
            let c = config("r1");
            let mut item: Item = [("pk".to_string(), s("k"))].into();
            item.extend(a.iter().map(|(n, x)| (n.clone(), s(x))));
            let (after, state, writes) = migrate(item, now, &c);
            prop_assert_eq!(writes, usize::from(!a.is_empty()));
            prop_assert_eq!(state.values.len(), a.len());
            for entry in state.versions.values() {
                prop_assert_eq!(entry, &v(now, "r1"));
            }
            prop_assert_eq!(step(&after, now + 5, &c).unwrap(), if a.is_empty() { Step::Empty } else { Step::Ready(state) });
        }
    }
}
