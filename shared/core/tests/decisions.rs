//! The contract's decisions, one test per case (`docs/contract.md`, with the convergence checker,
//! `shared/check/src/lib.rs`, where the words leave doubt): classify, reconcile's case-4 table,
//! the apply condition and `judge`, coalescing, the version order, and config validation.

// `classify` takes `&EventRecord` (and may take more): keep the borrow that works with both.
#![allow(clippy::needless_borrows_for_generic_args)]

mod common;

use common::{
    config, event, image, item, key, n, s, tombstone_image, v, Identity, FOREIGN, LOCAL,
    TTL_SERVICE,
};
use ferry_core::apply::PendingReason;
use ferry_core::classify::{Clobber, Wrote};
use ferry_core::digest::{
    gap_seal_of, is_expiry_tombstone, is_gap_tombstone, is_sealed, seal, seal_of,
};
use ferry_core::reconcile::{expiry_tombstone, tombstone_item, Stamp};
use ferry_core::{
    apply_condition, classify, coalesce, judge, reconcile, Action, AttributeValue, ChangeRecord,
    Classified, ClassifyError, Condition, Config, ConfigError, Hint, Item, ItemFilter, ItemKey,
    Judgement, Version, VersionError,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

const TS: &str = "ferry_ts";
const ORIGIN: &str = "ferry_origin";
const MARKER: &str = "ferry_deleted";
const TTL: &str = "ttl";
const SUM: &str = "ferry_sum";
/// The stream record's creation time in the test events (1 700 000 000 s).
const CREATED_MS: u64 = 1_700_000_000_000;

fn classify_one(
    name: &str,
    old: Option<&Item>,
    new: Option<&Item>,
    identity: Identity<'_>,
) -> Classified {
    classify_with(&config(), name, old, new, identity).expect("classifies")
}

fn classify_with(
    config: &Config,
    name: &str,
    old: Option<&Item>,
    new: Option<&Item>,
    identity: Identity<'_>,
) -> Result<Classified, ClassifyError> {
    let pk = old
        .or(new)
        .and_then(|i| i.get("pk"))
        .cloned()
        .unwrap_or(s("k"));
    let keys = item(&[("pk", pk)]);
    classify(&event(name, &keys, old, new, identity), config)
}

fn hint_of(c: Classified) -> Hint {
    match c {
        Classified::Reconcile(h) => h,
        other => panic!("expected a case-4 hint, got {other:?}"),
    }
}

// ---------------------------------------------------------------- classify

#[test]
fn case1_replicated_in_is_skipped() {
    let old = image("k", &[("a", n("1"))], Some(&v(100, LOCAL)));
    let new = image("k", &[("a", n("2"))], Some(&v(200, FOREIGN)));
    assert_eq!(
        classify_one("MODIFY", Some(&old), Some(&new), None),
        Classified::ReplicatedIn
    );
    assert_eq!(
        classify_one("INSERT", None, Some(&new), None),
        Classified::ReplicatedIn
    );
    // A sealed drain write is replicated-in too.
    let mut sealed = new.clone();
    seal(&mut sealed, &config().names);
    assert_eq!(
        classify_one("MODIFY", Some(&old), Some(&sealed), None),
        Classified::ReplicatedIn
    );
    // A replicated tombstone too.
    let tomb = tombstone_image("k", &v(200, FOREIGN), "99");
    assert_eq!(
        classify_one("MODIFY", Some(&old), Some(&tomb), None),
        Classified::ReplicatedIn
    );
}

#[test]
fn case2_local_newer_version_is_forwarded() {
    let old = image("k", &[("a", n("1"))], Some(&v(100, FOREIGN)));
    let new = image("k", &[("a", n("2"))], Some(&v(150, LOCAL)));
    assert_eq!(
        classify_one("MODIFY", Some(&old), Some(&new), None),
        Classified::Forward(ChangeRecord {
            key: key("k"),
            image: new.clone(),
            tombstone: false,
            version: v(150, LOCAL),
            source_region: LOCAL.into(),
            written_at_ms: CREATED_MS,
        })
    );
    // INSERT (no old image); a stamp later than the stream's clock sets the write time.
    let future = image("k", &[], Some(&v(CREATED_MS + 5_000, LOCAL)));
    let Classified::Forward(r) = classify_one("INSERT", None, Some(&future), None) else {
        panic!("not forwarded");
    };
    assert_eq!(r.written_at_ms, CREATED_MS + 5_000);
    assert_eq!(r.image, future);
}

#[test]
fn case2_local_helper_tombstone_is_forwarded_as_a_tombstone() {
    let old = image("k", &[("a", n("1"))], Some(&v(100, LOCAL)));
    let tomb = tombstone_image("k", &v(200, LOCAL), "2000000");
    let Classified::Forward(r) = classify_one("MODIFY", Some(&old), Some(&tomb), None) else {
        panic!("a helper tombstone is forwarded");
    };
    assert!(r.tombstone);
    assert_eq!(r.version, v(200, LOCAL));
    assert_eq!(r.image, tomb);
}

#[test]
fn case3_ttl_expiry_is_not_forwarded_and_leaves_an_expiry_hint() {
    // A sealed, versioned item that expires: nothing is forwarded; the key gets a local
    // tombstone at the expired version (the hint's `expired`).
    for origin in [LOCAL, FOREIGN] {
        let old = image("k", &[("a", n("1"))], Some(&v(100, origin)));
        let mut sealed = old.clone();
        seal(&mut sealed, &config().names);
        for old in [old, sealed] {
            assert_eq!(
                classify_one("REMOVE", Some(&old), None, TTL_SERVICE),
                Classified::Reconcile(Hint {
                    key: key("k"),
                    seen: Some(v(100, origin)),
                    new_version: None,
                    changed: vec![],
                    tombstone_ttl: None,
                    expired: Some(v(100, origin)),
                    clobbered: None,
                    wrote: Wrote::Delete,
                }),
                "{origin}"
            );
        }
    }
    // A tombstone expiring is simply gone, wherever it came from.
    let tomb = tombstone_image("k", &v(100, FOREIGN), "5");
    assert_eq!(
        classify_one("REMOVE", Some(&tomb), None, TTL_SERVICE),
        Classified::TtlExpiry
    );
    // An unversioned or unsealed item leaves no tombstone: its own record deals with the key.
    let unversioned = image("k", &[("a", n("1"))], None);
    assert_eq!(
        classify_one("REMOVE", Some(&unversioned), None, TTL_SERVICE),
        Classified::TtlExpiry
    );
    let mut unsealed = image("k", &[("a", n("1"))], Some(&v(100, LOCAL)));
    seal(&mut unsealed, &config().names);
    unsealed.insert("a".into(), n("2"));
    assert_eq!(
        classify_one("REMOVE", Some(&unsealed), None, TTL_SERVICE),
        Classified::TtlExpiry
    );
    // In attribute mode an expiry is skipped as before.
    let mut attribute_mode = config();
    attribute_mode.merge_mode = ferry_core::MergeMode::Attribute;
    let plain = image("k", &[("a", n("1"))], None);
    assert_eq!(
        classify_with(&attribute_mode, "REMOVE", Some(&plain), None, TTL_SERVICE),
        Ok(Classified::TtlExpiry)
    );
    // The expiry tombstone's own record is recognised by its seal and never forwarded.
    let c = config();
    let local_tomb = expiry_tombstone(&key("k"), &v(100, LOCAL), &c);
    assert!(is_expiry_tombstone(&local_tomb, &c.names));
    assert_eq!(
        classify_one("INSERT", None, Some(&local_tomb), None),
        Classified::TtlExpiry
    );
}

#[test]
fn case4_application_delete_is_a_hint_not_a_ttl_expiry() {
    let old = image("k", &[("a", n("1"))], Some(&v(100, LOCAL)));
    let expected = Classified::Reconcile(Hint {
        key: key("k"),
        seen: Some(v(100, LOCAL)),
        new_version: None,
        changed: vec![],
        tombstone_ttl: None,
        expired: None,
        clobbered: None,
        wrote: Wrote::Delete,
    });
    for identity in [
        None,
        Some(("Service", "lambda.amazonaws.com")),
        Some(("AWS", "dynamodb.amazonaws.com")),
    ] {
        assert_eq!(
            classify_one("REMOVE", Some(&old), None, identity),
            expected,
            "{identity:?}"
        );
    }
}

#[test]
fn filtered_keys_are_skipped() {
    let mut c = config();
    c.filter = ItemFilter::PartitionKeyPrefix("user#".into());
    let order = image("order#1", &[], Some(&v(100, LOCAL)));
    let user = image("user#1", &[], Some(&v(100, LOCAL)));
    assert_eq!(
        classify_with(&c, "INSERT", None, Some(&order), None),
        Ok(Classified::Filtered)
    );
    assert!(matches!(
        classify_with(&c, "INSERT", None, Some(&user), None),
        Ok(Classified::Forward(_))
    ));

    c.filter = ItemFilter::HasAttribute("tenant".into());
    let without = image("k", &[("a", n("1"))], Some(&v(100, LOCAL)));
    let with = image("k", &[("tenant", s("t1"))], Some(&v(100, LOCAL)));
    assert_eq!(
        classify_with(&c, "INSERT", None, Some(&without), None),
        Ok(Classified::Filtered)
    );
    assert!(matches!(
        classify_with(&c, "INSERT", None, Some(&with), None),
        Ok(Classified::Forward(_))
    ));
    // A tombstone carries no application attribute but follows the item it deletes.
    let tomb = tombstone_image("k", &v(200, LOCAL), "9");
    assert!(matches!(
        classify_with(&c, "MODIFY", Some(&with), Some(&tomb), None),
        Ok(Classified::Forward(r)) if r.tombstone
    ));
    // A delete is judged on the old image.
    assert_eq!(
        classify_with(&c, "REMOVE", Some(&without), None, None),
        Ok(Classified::Filtered)
    );
}

#[test]
fn case4_unversioned_local_write_is_a_hint() {
    let new = image("k", &[("a", n("1"))], None);
    assert_eq!(
        hint_of(classify_one("INSERT", None, Some(&new), None)),
        Hint {
            key: key("k"),
            seen: None,
            new_version: None,
            changed: vec![("a".into(), Some(n("1"))), ("pk".into(), Some(s("k")))],
            tombstone_ttl: None,
            expired: None,
            clobbered: None,
            wrote: Wrote::Image { ttl: None },
        }
    );
    // An unstamped put over a stamped item: seen is the version it replaced, and the attributes
    // it changed or removed are listed (never the version attributes).
    let old = image(
        "k",
        &[("a", n("1")), ("b", s("x")), ("c", s("same"))],
        Some(&v(100, FOREIGN)),
    );
    let new = image("k", &[("a", n("2")), ("c", s("same"))], None);
    assert_eq!(
        hint_of(classify_one("MODIFY", Some(&old), Some(&new), None)),
        Hint {
            key: key("k"),
            seen: Some(v(100, FOREIGN)),
            new_version: None,
            changed: vec![("a".into(), Some(n("2"))), ("b".into(), None)],
            tombstone_ttl: None,
            expired: None,
            clobbered: None,
            wrote: Wrote::Image { ttl: None },
        }
    );
}

#[test]
fn case4_update_that_kept_the_version_is_a_hint() {
    for origin in [LOCAL, FOREIGN] {
        let old = image("k", &[("a", n("1"))], Some(&v(100, origin)));
        let new = image("k", &[("a", n("2"))], Some(&v(100, origin)));
        assert_eq!(
            hint_of(classify_one("MODIFY", Some(&old), Some(&new), None)),
            Hint {
                key: key("k"),
                seen: Some(v(100, origin)),
                new_version: Some(v(100, origin)),
                changed: vec![("a".into(), Some(n("2")))],
                tombstone_ttl: None,
                expired: None,
                clobbered: None,
                wrote: Wrote::Image { ttl: None },
            },
            "{origin}"
        );
    }
}

#[test]
fn case4_local_stamp_not_newer_than_the_replaced_one_is_a_hint() {
    let old = image("k", &[("a", n("1"))], Some(&v(200, FOREIGN)));
    for new_v in [v(150, LOCAL), v(200, LOCAL)] {
        let new = image("k", &[("a", n("2"))], Some(&new_v));
        let h = hint_of(classify_one("MODIFY", Some(&old), Some(&new), None));
        assert_eq!(
            h.seen,
            Some(v(200, FOREIGN)),
            "seen is the newest of O and N"
        );
        assert_eq!(h.new_version, Some(new_v));
    }
}

#[test]
fn case4_update_of_a_tombstone_carries_the_tombstone_ttl() {
    let tomb = tombstone_image("k", &v(100, FOREIGN), "1234567");
    let mut updated = tomb.clone();
    updated.insert("a".into(), n("1"));
    assert_eq!(
        hint_of(classify_one("MODIFY", Some(&tomb), Some(&updated), None)),
        Hint {
            key: key("k"),
            seen: Some(v(100, FOREIGN)),
            new_version: Some(v(100, FOREIGN)),
            changed: vec![("a".into(), Some(n("1")))],
            tombstone_ttl: Some(n("1234567")),
            expired: None,
            clobbered: None,
            wrote: Wrote::Image {
                ttl: Some(n("1234567")),
            },
        }
    );
}

/// Seals (`docs/contract.md`, "Application writes that carry a version they read"): an
/// application write that carries back a version it read is a case-4 hint, never forwarded or
/// skipped as replicated-in.
#[test]
fn case4_unsealed_new_image_is_a_hint_never_forwarded() {
    let names = config().names;
    // A read-modify-write put of a local item: a newer local version carried over other content
    // (say, a copy of a later state) — without the seal it would be forwarded as it is.
    let old = image("k", &[("a", n("1"))], Some(&v(100, FOREIGN)));
    let mut read = image("k", &[("a", n("1"))], Some(&v(150, LOCAL)));
    seal(&mut read, &names);
    let mut written = read.clone();
    written.insert("a".into(), n("2"));
    assert!(!is_sealed(&written, &names));
    assert_eq!(
        hint_of(classify_one("MODIFY", Some(&old), Some(&written), None)),
        Hint {
            key: key("k"),
            seen: Some(v(150, LOCAL)),
            new_version: Some(v(150, LOCAL)),
            // The seal is not an application attribute: never listed as changed.
            changed: vec![("a".into(), Some(n("2")))],
            tombstone_ttl: None,
            expired: None,
            clobbered: None,
            wrote: Wrote::Image { ttl: None },
        }
    );
    // A foreign version carried back over other content is not replicated-in.
    let mut foreign = image("k", &[("a", n("1"))], Some(&v(300, FOREIGN)));
    seal(&mut foreign, &names);
    foreign.insert("a".into(), n("3"));
    assert!(matches!(
        classify_one("MODIFY", Some(&old), Some(&foreign), None),
        Classified::Reconcile(Hint {
            clobbered: None,
            wrote: Wrote::Image { ttl: None },
            expired: None,
            ..
        })
    ));
    // A copy to another key keeps the seal of the original key: unsealed there.
    let mut copy = read.clone();
    copy.insert("pk".into(), s("k2"));
    let h = hint_of(classify_one("INSERT", None, Some(&copy), None));
    assert_eq!(h.key, key("k2"));
    assert_eq!(h.new_version, Some(v(150, LOCAL)));
    // The same write, sealed, is forwarded (case 2).
    assert!(matches!(
        classify_one("MODIFY", Some(&old), Some(&read), None),
        Classified::Forward(_)
    ));
}

#[test]
fn case4_sealed_foreign_version_over_unversioned_or_lowering_is_a_hint() {
    let names = config().names;
    let mut restored = image("k", &[("a", n("2"))], Some(&v(200, FOREIGN)));
    seal(&mut restored, &names);
    // Over an unversioned item: a drain waits for the stamp, so this is no drain's write.
    let unversioned = image("k", &[("a", n("1"))], None);
    assert_eq!(
        hint_of(classify_one(
            "MODIFY",
            Some(&unversioned),
            Some(&restored),
            None
        )),
        Hint {
            key: key("k"),
            seen: Some(v(200, FOREIGN)),
            new_version: Some(v(200, FOREIGN)),
            changed: vec![("a".into(), Some(n("2")))],
            tombstone_ttl: None,
            expired: None,
            clobbered: None,
            wrote: Wrote::Image { ttl: None },
        }
    );
    // Below the version it replaced: a drain's write only ever raises the version.
    let newer_old = image("k", &[], Some(&v(300, LOCAL)));
    assert_eq!(
        hint_of(classify_one(
            "MODIFY",
            Some(&newer_old),
            Some(&restored),
            None
        )),
        Hint {
            key: key("k"),
            seen: Some(v(300, LOCAL)),
            new_version: Some(v(200, FOREIGN)),
            changed: vec![("a".into(), Some(n("2")))],
            tombstone_ttl: None,
            expired: None,
            clobbered: None,
            wrote: Wrote::Image { ttl: None },
        }
    );
}

/// A drain's (sealed, higher) write over an application's unsealed write-back that was not
/// stamped yet: a hint that carries both, so enqueue can put the application's write back.
#[test]
fn case1_drain_write_over_an_unsealed_item_is_a_clobber_hint() {
    let names = config().names;
    let mut written = image("k", &[("a", n("1"))], Some(&v(100, FOREIGN)));
    seal(&mut written, &names);
    written.insert("a".into(), n("7"));
    let mut by = image("k", &[("a", n("5"))], Some(&v(400, FOREIGN)));
    seal(&mut by, &names);
    assert_eq!(
        hint_of(classify_one("MODIFY", Some(&written), Some(&by), None)),
        Hint {
            key: key("k"),
            seen: Some(v(400, FOREIGN)),
            new_version: Some(v(400, FOREIGN)),
            changed: vec![],
            tombstone_ttl: None,
            expired: None,
            clobbered: Some(Box::new(Clobber {
                written: written.clone(),
                by: by.clone(),
            })),
            wrote: Wrote::Image { ttl: None },
        }
    );
}

#[test]
fn classify_errors_are_typed() {
    let c = config();
    let new = image("k", &[], Some(&v(1, LOCAL)));
    let no_key = event(
        "INSERT",
        &item(&[("other", s("k"))]),
        None,
        Some(&new),
        None,
    );
    assert!(matches!(
        classify(&no_key, &c),
        Err(ClassifyError::MissingKey { attribute, .. }) if attribute == "pk"
    ));
    let odd = event("UPSERT", &key("k"), None, Some(&new), None);
    assert!(matches!(
        classify(&odd, &c),
        Err(ClassifyError::UnknownEvent { name, .. }) if name == "UPSERT"
    ));
    let keys_only = event("MODIFY", &key("k"), None, Some(&new), None);
    assert!(matches!(
        classify(&keys_only, &c),
        Err(ClassifyError::MissingImage { image: "old", .. })
    ));
    let mut half = new.clone();
    half.remove(ORIGIN);
    assert!(matches!(
        classify_with(&c, "INSERT", None, Some(&half), None),
        Err(ClassifyError::BadVersion {
            source: VersionError::Half { .. },
            ..
        })
    ));
    let mut bad_ts = new;
    bad_ts.insert(TS.into(), n("1.5"));
    assert!(matches!(
        classify_with(&c, "INSERT", None, Some(&bad_ts), None),
        Err(ClassifyError::BadVersion {
            source: VersionError::BadTimestamp(_),
            ..
        })
    ));
}

/// A write only the other merge mode makes is a configuration error (issue #10: stop loudly,
/// never a silent divergence): item mode refuses a write of the version map, attribute mode a
/// write of the item version — but not an item version merely kept from before a migration.
#[test]
fn a_write_of_the_other_mode_is_a_mode_mismatch() {
    let item_mode = config();
    let mut attribute_mode = config();
    attribute_mode.merge_mode = ferry_core::MergeMode::Attribute;
    let map = |entry: &str| {
        AttributeValue::M(
            [("a".to_string(), s(entry))]
                .into_iter()
                .collect::<HashMap<_, _>>(),
        )
    };
    // An attribute-mode drain's write lands in an item-mode region.
    let merged = item(&[
        ("pk", s("k")),
        ("a", n("1")),
        ("ferry_versions", map("5@eu-west-1")),
    ]);
    for old in [None, Some(item(&[("pk", s("k")), ("a", n("0"))]))] {
        let name = if old.is_some() { "MODIFY" } else { "INSERT" };
        match classify_with(&item_mode, name, old.as_ref(), Some(&merged), None) {
            Err(e @ ClassifyError::ModeMismatch { .. }) => {
                assert!(e.to_string().contains("merge mode mismatch"), "{e}");
                assert!(e.to_string().contains("ferry_versions"), "{e}");
            }
            other => panic!("expected a mode mismatch, got {other:?}"),
        }
    }
    // An item-mode drain's (or helper's) write lands in an attribute-mode region.
    let versioned = image("k", &[("a", n("1"))], Some(&v(200, FOREIGN)));
    assert!(matches!(
        classify_with(&attribute_mode, "INSERT", None, Some(&versioned), None),
        Err(ClassifyError::ModeMismatch { .. })
    ));
    // An item that kept its item version from before the switch is not one: the application's
    // update changed `a` only (attribute mode then stamps it).
    let mut updated = versioned.clone();
    updated.insert("a".into(), n("2"));
    assert!(matches!(
        classify_with(
            &attribute_mode,
            "MODIFY",
            Some(&versioned),
            Some(&updated),
            None
        ),
        Ok(Classified::StampAttributes(_))
    ));
    // Nor is a version map an item-mode region's update left untouched.
    let mut kept = merged.clone();
    kept.insert("b".into(), n("3"));
    assert!(!matches!(
        classify_with(&item_mode, "MODIFY", Some(&merged), Some(&kept), None),
        Err(ClassifyError::ModeMismatch { .. })
    ));
}

// ---------------------------------------------------------------- reconcile (case 4's table)

const NOW: u64 = 1_000_000;

fn hint(seen: Option<Version>, new_version: Option<Version>) -> Hint {
    Hint {
        key: key("k"),
        seen,
        new_version,
        changed: vec![],
        tombstone_ttl: None,
        expired: None,
        clobbered: None,
        wrote: Wrote::Delete,
    }
}

fn version_is(ver: &Version) -> Vec<Condition> {
    vec![
        Condition::Equals(TS.into(), n(&ver.ts_ms.to_string())),
        Condition::Equals(ORIGIN.into(), s(&ver.origin)),
    ]
}

/// The version as read plus the seal as read (or its absence): what every condition on an
/// existing versioned item pins.
fn pinned(ver: &Version, current: &Item) -> Vec<Condition> {
    let mut c = version_is(ver);
    c.push(seal_pin(current));
    c
}

/// [`pinned`], and the application's attributes as read: what a tombstone, restore or expiry
/// over a sealed item pins (a write-back can carry back its version and seal).
fn pinned_content(ver: &Version, current: &Item) -> Vec<Condition> {
    let mut c = pinned(ver, current);
    let mut names: Vec<&String> = current
        .keys()
        .filter(|n| n.as_str() != "pk" && !config().names.is_ferry_attribute(n))
        .collect();
    names.sort();
    c.extend(
        names
            .into_iter()
            .map(|n| Condition::Equals(n.clone(), current[n].clone())),
    );
    c
}

fn seal_pin(current: &Item) -> Condition {
    match current.get(SUM) {
        Some(sum) => Condition::Equals(SUM.into(), sum.clone()),
        None => Condition::NotExists(SUM.into()),
    }
}

/// The seal a stamp gives `current`: the item as read, at `version`, without `remove`, with
/// `ttl` if any.
fn sealed_after(
    current: &Item,
    version: &Version,
    remove: &[&str],
    ttl: Option<&AttributeValue>,
) -> AttributeValue {
    let names = config().names;
    let mut after = current.clone();
    version.stamp_into(&mut after, &names);
    for r in remove {
        after.remove(*r);
    }
    if let Some(ttl) = ttl {
        after.insert(TTL.into(), ttl.clone());
    }
    seal(&mut after, &names);
    assert!(is_sealed(&after, &names));
    after[SUM].clone()
}

/// Runs reconcile and checks what every action must satisfy: its condition holds on the
/// item it was computed from (else the ALL_OLD loop never ends) and its version is above
/// everything the record saw.
fn run(h: &Hint, current: Option<&Item>, now: u64) -> Action {
    let action = reconcile(h, current, now, &config()).expect("reconciles");
    match &action {
        Action::Nothing => {}
        Action::Stamp(Stamp {
            version, condition, ..
        })
        | Action::Tombstone {
            version, condition, ..
        }
        | Action::Restore {
            version, condition, ..
        } => {
            assert!(condition.holds(current), "{condition:?} on {current:?}");
            assert_eq!(version.origin, LOCAL);
            assert!(version.ts_ms >= now);
            if let Some(seen) = &h.seen {
                assert!(version > seen, "{version} above seen {seen}");
            }
        }
    }
    action
}

#[test]
fn row1_absent_gets_a_tombstone_at_the_floor() {
    let c = config();
    // seen ahead of this region's clock (skew): the floor is seen + 1.
    let h = hint(Some(v(2_000_000, FOREIGN)), None);
    let floor = v(2_000_001, LOCAL);
    let Action::Tombstone {
        item: tomb,
        version,
        condition,
    } = run(&h, None, NOW)
    else {
        panic!("absent → tombstone");
    };
    assert_eq!(version, floor);
    assert_eq!(condition, Condition::NotExists("pk".into()));
    // The record's own delete: sealed as Ferry's gap tombstone, which a write that came after
    // it and that a drain wrote over is put back over.
    let plain = tombstone_item(&key("k"), &floor, NOW, &c);
    let mut gap = plain.clone();
    gap.insert("ferry_sum".into(), gap_seal_of(&gap, &c.names));
    assert_eq!(tomb, gap);
    // A write's record that finds its key emptied since: an ordinary tombstone (the delete may
    // have come after a write that a drain wrote over; it stands).
    let mut write = h.clone();
    write.wrote = Wrote::Image { ttl: None };
    let Action::Tombstone { item, .. } = run(&write, None, NOW) else {
        panic!("absent → tombstone");
    };
    assert_eq!(item, plain);
    let mut names: Vec<&str> = tomb.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ferry_deleted",
            "ferry_origin",
            "ferry_sum",
            "ferry_ts",
            "pk",
            "ttl"
        ]
    );
    assert!(
        is_sealed(&tomb, &c.names),
        "a tombstone Ferry writes is sealed"
    );
    assert_eq!(tomb[MARKER], AttributeValue::Bool(true));
    assert_eq!(tomb["pk"], s("k"));
    assert_eq!(Version::of(&tomb, &c.names), Ok(Some(floor)));
    let AttributeValue::N(ttl) = &tomb[TTL] else {
        panic!("TTL is a number")
    };
    let ttl: u64 = ttl.parse().expect("epoch seconds");
    assert!(
        ttl >= NOW / 1000 + c.tombstone_lifetime_s,
        "outlives every record"
    );
    assert!(
        !condition.holds(Some(&image("k", &[], None))),
        "not over an item"
    );

    // seen behind the clock: the floor is now. No seen at all: now too.
    for seen in [Some(v(500_000, LOCAL)), None] {
        let Action::Tombstone { item, version, .. } = run(&hint(seen, None), None, NOW) else {
            panic!("absent → tombstone");
        };
        assert_eq!(version, v(NOW, LOCAL));
        assert_eq!(
            item[TTL],
            n(&(NOW / 1000 + c.tombstone_lifetime_s).to_string())
        );
    }
}

#[test]
fn row2_unversioned_current_is_stamped() {
    let current = image("k", &[("a", n("1"))], None);
    let h = hint(Some(v(900_000, FOREIGN)), None);
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp(Stamp {
            version: v(NOW, LOCAL),
            remove: vec![],
            ttl: None,
            sum: sealed_after(&current, &v(NOW, LOCAL), &[], None),
            // No version to pin: the seal's absence and the item's attributes as read.
            condition: Condition::And(vec![
                Condition::Exists("pk".into()),
                Condition::NotExists(TS.into()),
                Condition::NotExists(SUM.into()),
                Condition::Equals("a".into(), n("1")),
            ]),
        })
    );
}

#[test]
fn row3_n_version_local_origin_is_stamped() {
    // A local stamp not newer than the one it replaced: still there, lift it above both.
    let mut h = hint(Some(v(950_000, FOREIGN)), Some(v(900_000, LOCAL)));
    h.changed = vec![("a".into(), Some(n("2")))];
    let current = image("k", &[("a", n("3"))], Some(&v(900_000, LOCAL)));
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp(Stamp {
            version: v(NOW, LOCAL),
            remove: vec![],
            ttl: None,
            sum: sealed_after(&current, &v(NOW, LOCAL), &[], None),
            condition: Condition::And(pinned(&v(900_000, LOCAL), &current)),
        }),
        "local origin: stamped whatever the values"
    );
    // A sealed item: its seal as read is pinned.
    let mut sealed = current.clone();
    seal(&mut sealed, &config().names);
    let Action::Stamp(Stamp { condition, .. }) = run(&h, Some(&sealed), NOW) else {
        panic!("stamp");
    };
    assert_eq!(
        condition,
        Condition::And(pinned(&v(900_000, LOCAL), &sealed))
    );
    assert!(matches!(
        pinned(&v(900_000, LOCAL), &sealed)[2],
        Condition::Equals(_, _)
    ));
    // Under skew, the floor is seen + 1.
    let Action::Stamp(Stamp { version, .. }) = run(&h, Some(&current), 10) else {
        panic!("stamp");
    };
    assert_eq!(version, v(950_001, LOCAL));
}

#[test]
fn row3_n_version_foreign_still_holding_the_write_is_stamped() {
    let mut h = hint(Some(v(900_000, FOREIGN)), Some(v(900_000, FOREIGN)));
    h.changed = vec![("a".into(), Some(n("1"))), ("b".into(), None)];
    // DynamoDB's equality: 1.0 = 1.
    let current = image("k", &[("a", n("1.0"))], Some(&v(900_000, FOREIGN)));
    let mut expected = pinned(&v(900_000, FOREIGN), &current);
    expected.push(Condition::Equals("a".into(), n("1")));
    expected.push(Condition::NotExists("b".into()));
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp(Stamp {
            version: v(NOW, LOCAL),
            remove: vec![],
            ttl: None,
            sum: sealed_after(&current, &v(NOW, LOCAL), &[], None),
            condition: Condition::And(expected),
        })
    );
}

#[test]
fn row4_n_version_foreign_other_values_is_nothing() {
    let mut h = hint(Some(v(900_000, FOREIGN)), Some(v(900_000, FOREIGN)));
    h.changed = vec![("a".into(), Some(n("1"))), ("b".into(), None)];
    let changed_since = image("k", &[("a", n("2"))], Some(&v(900_000, FOREIGN)));
    assert_eq!(run(&h, Some(&changed_since), NOW), Action::Nothing);
    let b_back = image(
        "k",
        &[("a", n("1")), ("b", s("x"))],
        Some(&v(900_000, FOREIGN)),
    );
    assert_eq!(run(&h, Some(&b_back), NOW), Action::Nothing);
}

#[test]
fn row5_foreign_copy_at_or_below_seen_gets_a_tombstone() {
    // A hard delete saw (900 000, r1); a drain then put an older copy into the gap.
    let h = hint(Some(v(900_000, LOCAL)), None);
    for cv in [v(800_000, FOREIGN), v(900_000, "r0")] {
        let current = image("k", &[("a", n("1"))], Some(&cv));
        let action = run(&h, Some(&current), NOW);
        // Sealed as a gap's: a drain's record that shows the copy was written over an
        // application's write puts that write back over it.
        let mut item = tombstone_item(&key("k"), &v(NOW, LOCAL), NOW, &config());
        item.insert(SUM.into(), gap_seal_of(&item, &config().names));
        assert!(is_gap_tombstone(&item, &config().names));
        assert_eq!(
            action,
            Action::Tombstone {
                item,
                version: v(NOW, LOCAL),
                condition: Condition::And(pinned_content(&cv, &current)),
            },
            "{cv}"
        );
    }
    // Equal to seen counts (≤).
    let h = hint(Some(v(900_000, FOREIGN)), None);
    let current = image("k", &[], Some(&v(900_000, FOREIGN)));
    assert!(matches!(
        run(&h, Some(&current), NOW),
        Action::Tombstone { .. }
    ));
}

#[test]
fn row6_local_state_at_or_below_seen_is_lifted() {
    let h = hint(Some(v(900_000, FOREIGN)), None);
    for cv in [v(850_000, LOCAL), v(900_000, "r0")] {
        let origin_local = cv.origin == LOCAL;
        let current = image("k", &[("a", n("1"))], Some(&cv));
        let action = run(&h, Some(&current), NOW);
        if origin_local {
            assert_eq!(
                action,
                Action::Stamp(Stamp {
                    version: v(NOW, LOCAL),
                    remove: vec![],
                    ttl: None,
                    sum: sealed_after(&current, &v(NOW, LOCAL), &[], None),
                    condition: Condition::And(pinned(&cv, &current)),
                })
            );
        } else {
            assert!(matches!(action, Action::Tombstone { .. }), "foreign: row 5");
        }
    }
    let h = hint(Some(v(900_000, LOCAL)), None);
    let current = image("k", &[], Some(&v(900_000, LOCAL)));
    assert!(
        matches!(run(&h, Some(&current), NOW), Action::Stamp(_)),
        "equal counts"
    );
}

#[test]
fn row7_anything_newer_than_seen_is_nothing() {
    let h = hint(Some(v(900_000, LOCAL)), Some(v(900_000, LOCAL)));
    for cv in [v(900_001, FOREIGN), v(950_000, LOCAL), v(900_000, "r9")] {
        let current = image("k", &[("a", n("1"))], Some(&cv));
        assert_eq!(run(&h, Some(&current), NOW), Action::Nothing, "{cv}");
    }
    let h = hint(Some(v(900_000, LOCAL)), None);
    let current = image("k", &[], Some(&v(2_000_000, FOREIGN)));
    assert_eq!(run(&h, Some(&current), NOW), Action::Nothing);
}

#[test]
fn stamp_onto_an_updated_tombstone_removes_the_marker_and_its_ttl() {
    let cv = v(900_000, LOCAL);
    let mut current = tombstone_image("k", &cv, "2196000");
    current.insert("a".into(), n("1"));
    let mut h = hint(Some(cv.clone()), Some(cv.clone()));
    h.changed = vec![("a".into(), Some(n("1")))];
    h.tombstone_ttl = Some(n("2196000"));
    let mut condition = pinned(&cv, &current);
    condition.push(Condition::Equals(MARKER.into(), AttributeValue::Bool(true)));
    condition.push(Condition::Equals(TTL.into(), n("2196000")));
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp(Stamp {
            version: v(NOW, LOCAL),
            remove: vec![MARKER.into(), TTL.into()],
            ttl: None,
            sum: sealed_after(&current, &v(NOW, LOCAL), &[MARKER, TTL], None),
            condition: Condition::And(condition),
        })
    );
    // The application set its own TTL since: only the marker goes.
    current.insert(TTL.into(), n("42"));
    let mut condition = pinned(&cv, &current);
    condition.push(Condition::Equals(MARKER.into(), AttributeValue::Bool(true)));
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp(Stamp {
            version: v(NOW, LOCAL),
            remove: vec![MARKER.into()],
            ttl: None,
            sum: sealed_after(&current, &v(NOW, LOCAL), &[MARKER], None),
            condition: Condition::And(condition),
        })
    );
}

#[test]
fn lifting_a_plain_tombstone_keeps_it_a_tombstone_and_moves_its_ttl() {
    let current = tombstone_image("k", &v(850_000, LOCAL), "2000");
    let h = hint(Some(v(900_000, FOREIGN)), None);
    let mut condition = pinned(&v(850_000, LOCAL), &current);
    // The TTL as read: one the application set meanwhile is never overwritten.
    condition.push(Condition::Equals(TTL.into(), n("2000")));
    let lifetime = config().tombstone_lifetime_s;
    let new_ttl = n(&(NOW / 1000 + lifetime).to_string());
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp(Stamp {
            version: v(NOW, LOCAL),
            remove: vec![],
            // The TTL follows the tombstone's new version.
            ttl: Some(new_ttl.clone()),
            sum: sealed_after(&current, &v(NOW, LOCAL), &[], Some(&new_ttl)),
            condition: Condition::And(condition),
        })
    );
}

/// A stamp read a plain tombstone, an application update landed on it before the stamp's write
/// (the update kept the version, so the stamp's condition held) and the stamp lifted it with its
/// marker. The update's own record finds a local tombstone holding application attributes,
/// newer than anything it saw: it makes it an item again, above its version, and the TTL goes
/// too, because it is the one a tombstone at that version carries.
#[test]
fn an_updated_tombstone_lifted_with_its_marker_is_revived_by_a_later_record() {
    let lifted = v(2_000_000, LOCAL);
    let tomb_ttl = tombstone_item(&key("k"), &lifted, 0, &config())[TTL].clone();
    let AttributeValue::N(tomb_ttl_text) = &tomb_ttl else {
        panic!("a numeric TTL");
    };
    let mut current = tombstone_image("k", &lifted, tomb_ttl_text);
    current.insert("a".into(), n("1"));
    // The update's record saw the tombstone at its version before the lift.
    let before = v(850_000, LOCAL);
    let mut h = hint(Some(before.clone()), Some(before));
    h.changed = vec![("a".into(), Some(n("1")))];
    let mut condition = pinned(&lifted, &current);
    condition.push(Condition::Equals(MARKER.into(), AttributeValue::Bool(true)));
    condition.push(Condition::Equals(TTL.into(), tomb_ttl.clone()));
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp(Stamp {
            version: v(2_000_001, LOCAL),
            remove: vec![MARKER.into(), TTL.into()],
            ttl: None,
            sum: sealed_after(&current, &v(2_000_001, LOCAL), &[MARKER, TTL], None),
            condition: Condition::And(condition),
        })
    );
    // With a TTL the application set, only the marker goes.
    current.insert(TTL.into(), n("42"));
    let Action::Stamp(Stamp { remove, .. }) = run(&h, Some(&current), NOW) else {
        panic!("stamp");
    };
    assert_eq!(remove, vec![MARKER.to_string()]);
    // A foreign tombstone holding attributes is its origin's to revive.
    let foreign = tombstone_image("k", &v(2_000_000, FOREIGN), tomb_ttl_text);
    let mut foreign = foreign;
    foreign.insert("a".into(), n("1"));
    assert_eq!(run(&h, Some(&foreign), NOW), Action::Nothing);
}

#[test]
fn a_failed_condition_feeds_all_old_back_in() {
    // Row 3 stamps; meanwhile a newer local write lands; its ALL_OLD item leads to nothing.
    let h = hint(Some(v(900_000, LOCAL)), Some(v(900_000, LOCAL)));
    let read = image("k", &[("a", n("1"))], Some(&v(900_000, LOCAL)));
    let Action::Stamp(Stamp { condition, .. }) = run(&h, Some(&read), NOW) else {
        panic!("stamp");
    };
    let all_old = image("k", &[("a", n("2"))], Some(&v(990_000, LOCAL)));
    assert!(!condition.holds(Some(&all_old)));
    assert_eq!(run(&h, Some(&all_old), NOW), Action::Nothing);
    // Or the item was deleted in between: now it is row 1.
    assert!(!condition.holds(None));
    assert!(matches!(run(&h, None, NOW), Action::Tombstone { .. }));
}

#[test]
fn reconcile_refuses_a_half_version() {
    let mut current = image("k", &[], Some(&v(1, LOCAL)));
    current.remove(ORIGIN);
    assert_eq!(
        reconcile(&hint(None, None), Some(&current), NOW, &config()),
        Err(VersionError::Half {
            present: TS.into(),
            missing: ORIGIN.into()
        })
    );
}

/// Row 6: an unsealed current item (an application carried back a version it read) is stamped
/// like an unversioned one, pinning its version, its seal as read and the values as read.
#[test]
fn row6_unsealed_current_is_stamped() {
    let names = config().names;
    let mut current = image("k", &[("a", n("1"))], Some(&v(800_000, FOREIGN)));
    seal(&mut current, &names);
    let read_seal = current[SUM].clone();
    current.insert("a".into(), n("2"));
    let mut h = hint(Some(v(900_000, LOCAL)), None);
    h.changed = vec![("a".into(), Some(n("2")))];
    // Foreign and at or below seen: sealed, that would be row 8's tombstone.
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp(Stamp {
            version: v(NOW, LOCAL),
            remove: vec![],
            ttl: None,
            sum: sealed_after(&current, &v(NOW, LOCAL), &[], None),
            condition: Condition::And(vec![
                Condition::Equals(TS.into(), n("800000")),
                Condition::Equals(ORIGIN.into(), s(FOREIGN)),
                Condition::Equals(SUM.into(), read_seal),
                Condition::Equals("a".into(), n("2")),
            ]),
        })
    );
}

/// An expiry's hint: a local tombstone at the expired version, sealed as an expiry's, where the
/// key is empty or holds an older sealed copy; nothing over a newer write.
#[test]
fn expiry_hint_leaves_a_local_tombstone_at_the_expired_version() {
    let c = config();
    let expired = v(800_000, LOCAL);
    let mut h = hint(Some(expired.clone()), None);
    h.expired = Some(expired.clone());
    let tomb = expiry_tombstone(&key("k"), &expired, &c);
    assert!(is_expiry_tombstone(&tomb, &c.names));
    assert!(is_sealed(&tomb, &c.names));
    assert_eq!(tomb[MARKER], AttributeValue::Bool(true));
    assert_eq!(Version::of(&tomb, &c.names), Ok(Some(expired.clone())));
    assert_ne!(
        tomb[SUM],
        seal_of(&tomb, &c.names),
        "an expiry's seal, not a version's"
    );
    assert_eq!(
        reconcile(&h, None, NOW, &c),
        Ok(Action::Tombstone {
            item: tomb.clone(),
            version: expired.clone(),
            condition: Condition::NotExists("pk".into()),
        })
    );
    // A drain put an older (or the same) foreign copy into the gap the expiry left.
    let mut older = image("k", &[("a", n("1"))], Some(&v(700_000, FOREIGN)));
    seal(&mut older, &c.names);
    let Ok(Action::Tombstone {
        item, condition, ..
    }) = reconcile(&h, Some(&older), NOW, &c)
    else {
        panic!("an older copy gets the expiry tombstone");
    };
    assert_eq!(item, tomb);
    assert!(condition.holds(Some(&older)));
    assert_eq!(
        condition,
        Condition::And(pinned_content(&v(700_000, FOREIGN), &older))
    );
    // A newer write has its own record.
    let mut newer = image("k", &[("a", n("1"))], Some(&v(900_000, FOREIGN)));
    seal(&mut newer, &c.names);
    assert_eq!(reconcile(&h, Some(&newer), NOW, &c), Ok(Action::Nothing));
    // So does an unsealed one (an application's write-back).
    let mut unsealed = older.clone();
    unsealed.insert("a".into(), n("9"));
    assert_eq!(reconcile(&h, Some(&unsealed), NOW, &c), Ok(Action::Nothing));
}

/// A drain wrote over an application's unstamped write-back: while the key still holds the
/// drain's write, the application's write is put back above it, sealed.
#[test]
fn clobber_hint_restores_the_application_write_above_the_drain() {
    let c = config();
    let mut written = image("k", &[("a", n("1"))], Some(&v(100_000, FOREIGN)));
    seal(&mut written, &c.names);
    written.insert("a".into(), n("7"));
    let mut by = image("k", &[("a", n("5"))], Some(&v(2_000_000, FOREIGN)));
    seal(&mut by, &c.names);
    let mut h = hint(Some(v(2_000_000, FOREIGN)), Some(v(2_000_000, FOREIGN)));
    h.clobbered = Some(Box::new(Clobber {
        written: written.clone(),
        by: by.clone(),
    }));
    let Action::Restore {
        item,
        version,
        condition,
    } = run(&h, Some(&by), NOW)
    else {
        panic!("restore");
    };
    assert_eq!(version, v(2_000_001, LOCAL));
    assert_eq!(item["a"], n("7"));
    assert_eq!(Version::of(&item, &c.names), Ok(Some(version.clone())));
    assert!(is_sealed(&item, &c.names));
    assert_eq!(
        condition,
        Condition::And(pinned_content(&v(2_000_000, FOREIGN), &by))
    );
    // The drain's version and seal carried back over new content: not the drain's write.
    let mut carried = by.clone();
    carried.insert("a".into(), n("9"));
    assert!(!condition.holds(Some(&carried)));
    // A later local write since has its own record.
    let mut later = image("k", &[("a", n("8"))], Some(&v(2_500_000, LOCAL)));
    seal(&mut later, &c.names);
    assert_eq!(run(&h, Some(&later), NOW), Action::Nothing);
}

/// What a drain's write over an application's write-back may be restored over: the drain's own
/// write, the gap tombstone the write-back's record left here, an expiry's tombstone — never an
/// application's delete since (a tombstone above the drain's version that reads the same).
#[test]
fn clobber_hint_restores_over_a_gap_or_expiry_tombstone_but_not_a_later_delete() {
    let c = config();
    let mut written = image("k", &[("a", n("1"))], Some(&v(100_000, FOREIGN)));
    seal(&mut written, &c.names);
    written.insert("a".into(), n("7"));
    let mut by = tombstone_image("k", &v(2_000_000, FOREIGN), "90000");
    seal(&mut by, &c.names);
    let mut h = hint(Some(v(2_000_000, FOREIGN)), Some(v(2_000_000, FOREIGN)));
    h.clobbered = Some(Box::new(Clobber {
        written: written.clone(),
        by: by.clone(),
    }));
    let later = v(2_500_000, LOCAL);
    let delete = tombstone_item(&key("k"), &later, NOW, &c);
    assert_eq!(
        run(&h, Some(&delete), NOW),
        Action::Nothing,
        "a later delete"
    );
    let mut gap = delete.clone();
    gap.insert(SUM.into(), gap_seal_of(&gap, &c.names));
    assert!(matches!(run(&h, Some(&gap), NOW), Action::Restore { .. }));
    let expiry = expiry_tombstone(&key("k"), &v(2_000_000, FOREIGN), &c);
    assert!(matches!(
        run(&h, Some(&expiry), NOW),
        Action::Restore { .. }
    ));
}

/// A version whose TTL is due when it arrives is stored as the tombstone its expiry leaves in
/// every region; a drain's such write over an application's write-back still restores it.
#[test]
fn a_version_expired_on_arrival_is_stored_as_its_expiry() {
    let c = config();
    let ver = v(2_000_000, FOREIGN);
    let mut record = change(&ver);
    record.image.insert(TTL.into(), n("1999"));
    seal(&mut record.image, &c.names);
    let stored = ferry_core::image_to_store(&record, 1_999_000, &c);
    assert_eq!(*stored, expiry_tombstone(&key("k"), &ver, &c));
    let early = ferry_core::image_to_store(&record, 1_998_999, &c);
    assert_eq!(*early, record.image, "not due yet");
    let mut tomb = record.clone();
    tomb.tombstone = true;
    assert_eq!(
        *ferry_core::image_to_store(&tomb, 1_999_000, &c),
        tomb.image
    );

    let mut written = image("k", &[("a", n("1"))], Some(&v(100, FOREIGN)));
    seal(&mut written, &c.names);
    written.insert("a".into(), n("7"));
    let expired = expiry_tombstone(&key("k"), &ver, &c);
    assert!(matches!(
        classify_one("MODIFY", Some(&written), Some(&expired), None),
        Classified::Reconcile(Hint {
            clobbered: Some(_),
            ..
        })
    ));
    assert_eq!(
        classify_one("INSERT", None, Some(&expired), None),
        Classified::TtlExpiry
    );
}

// ---------------------------------------------------------------- apply condition and judge

fn change(ver: &Version) -> ChangeRecord {
    ChangeRecord {
        key: key("k"),
        image: image("k", &[("a", n("1"))], Some(ver)),
        tombstone: false,
        version: ver.clone(),
        source_region: ver.origin.clone(),
        written_at_ms: ver.ts_ms,
    }
}

#[test]
fn apply_condition_is_the_contracts_expression() {
    let c = apply_condition(&change(&v(500, FOREIGN)), &config());
    assert_eq!(
        c,
        Condition::Or(vec![
            Condition::NotExists("pk".into()),
            Condition::LessThan(TS.into(), n("500")),
            Condition::And(vec![
                Condition::Equals(TS.into(), n("500")),
                Condition::LessThan(ORIGIN.into(), s(FOREIGN)),
            ]),
        ])
    );
    let e = c.to_expression();
    assert_eq!(
        e.text,
        "(attribute_not_exists(#n0)) OR (#n1 < :v0) OR ((#n1 = :v1) AND (#n2 < :v2))"
    );
    assert_eq!(e.names["#n0"], "pk");
    assert_eq!(e.names["#n1"], TS);
    assert_eq!(e.names["#n2"], ORIGIN);
}

#[test]
fn apply_condition_admits_only_older_or_absent() {
    let rec = change(&v(500, "r2"));
    let c = apply_condition(&rec, &config());
    let at = |ver: &Version| image("k", &[], Some(ver));
    assert!(c.holds(None), "absent");
    assert!(c.holds(Some(&at(&v(499, "r9")))), "older ts");
    assert!(c.holds(Some(&at(&v(500, "r1")))), "same ts, smaller origin");
    assert!(!c.holds(Some(&at(&v(500, "r2")))), "itself: idempotent");
    assert!(!c.holds(Some(&at(&v(500, "r3")))), "same ts, larger origin");
    assert!(!c.holds(Some(&at(&v(501, "r0")))), "newer");
    assert!(
        !c.holds(Some(&image("k", &[], None))),
        "unversioned: pending"
    );
    // Numbers compare by value, not as text: 99 < 500 although "99" > "500".
    assert!(c.holds(Some(&at(&v(99, "r9")))));
}

#[test]
fn judge_stale_when_the_stored_version_is_ours_or_newer_from_the_same_origin() {
    let rec = change(&v(500, LOCAL));
    for stored in [v(500, LOCAL), v(700, LOCAL)] {
        let j = judge(&rec, Some(&image("k", &[], Some(&stored))), &config());
        assert_eq!(
            j,
            Judgement::Stale {
                stored: stored.clone()
            }
        );
        assert!(j.is_done());
    }
}

#[test]
fn judge_conflict_names_both_versions() {
    let rec = change(&v(500, LOCAL));
    for winner in [v(700, FOREIGN), v(500, FOREIGN)] {
        let j = judge(&rec, Some(&image("k", &[], Some(&winner))), &config());
        assert_eq!(
            j,
            Judgement::Conflict {
                winner: winner.clone(),
                loser: v(500, LOCAL)
            }
        );
        assert!(j.is_done());
    }
}

#[test]
fn judge_pending_on_an_unversioned_item() {
    let rec = change(&v(500, LOCAL));
    let j = judge(&rec, Some(&image("k", &[("a", n("1"))], None)), &config());
    assert_eq!(j, Judgement::Pending(PendingReason::Unversioned));
    assert!(!j.is_done());
}

/// An item with attribute mode's version map and no item version is not "a local write not
/// stamped yet": the destination runs the other mode, which the drain must stop on.
#[test]
fn judge_names_a_destination_in_the_other_mode() {
    let rec = change(&v(500, LOCAL));
    let mut merged = image("k", &[("a", n("1"))], None);
    merged.insert(
        "ferry_versions".into(),
        AttributeValue::M([("a".to_string(), s("5@eu-west-1"))].into_iter().collect()),
    );
    let j = judge(&rec, Some(&merged), &config());
    assert_eq!(j, Judgement::Pending(PendingReason::OtherMode));
    assert!(!j.is_done());
}

#[test]
fn judge_pending_when_nothing_newer_is_stored() {
    let rec = change(&v(500, LOCAL));
    assert_eq!(
        judge(&rec, None, &config()),
        Judgement::Pending(PendingReason::Raced)
    );
    let older = image("k", &[], Some(&v(400, FOREIGN)));
    assert_eq!(
        judge(&rec, Some(&older), &config()),
        Judgement::Pending(PendingReason::Raced)
    );
    let mut bad = image("k", &[], Some(&v(400, FOREIGN)));
    bad.insert(TS.into(), s("yesterday"));
    assert!(matches!(
        judge(&rec, Some(&bad), &config()),
        Judgement::Pending(PendingReason::InvalidStoredVersion(_))
    ));
}

fn version() -> impl Strategy<Value = Version> {
    (
        0u64..6,
        prop::sample::select(vec!["r1", "r2", "r10", "eu-west-1", "us-east-1", "a"]),
    )
        .prop_map(|(ts, o)| Version::new(ts, o))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The DynamoDB condition and the version order agree, and a refused write is judged
    /// from what refused it.
    #[test]
    fn apply_condition_agrees_with_the_version_order(
        rec in version(),
        stored in prop::option::of(prop::option::of(version())),
    ) {
        let config = config();
        let record = change(&rec);
        let item = stored.as_ref().map(|s| image("k", &[], s.as_ref()));
        let holds = apply_condition(&record, &config).holds(item.as_ref());
        let expected = match &stored {
            None => true,
            Some(None) => false,
            Some(Some(sv)) => *sv < rec,
        };
        prop_assert_eq!(holds, expected);
        if !holds {
            let j = judge(&record, item.as_ref(), &config);
            match stored {
                Some(Some(sv)) if sv.origin != rec.origin => {
                    prop_assert_eq!(j, Judgement::Conflict { winner: sv, loser: rec })
                }
                Some(Some(sv)) => prop_assert_eq!(j, Judgement::Stale { stored: sv }),
                _ => prop_assert_eq!(j, Judgement::Pending(PendingReason::Unversioned)),
            }
        }
    }
}

// ---------------------------------------------------------------- coalesce

fn backlog() -> impl Strategy<Value = Vec<ChangeRecord>> {
    prop::collection::vec((0u8..5, version()), 0..40).prop_map(|entries| {
        entries
            .into_iter()
            .map(|(k, ver)| {
                // The same (key, version) is the same record: a duplicate delivery.
                let mut r = change(&ver);
                r.key = key(&format!("k{k}"));
                r.image = image(&format!("k{k}"), &[("v", s(&ver.to_string()))], Some(&ver));
                r
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn coalesce_keeps_the_newest_record_per_key(records in backlog()) {
        let mut newest: HashMap<ItemKey, Version> = HashMap::new();
        for r in &records {
            let e = newest.entry(r.item_key()).or_insert_with(|| r.version.clone());
            if r.version > *e {
                *e = r.version.clone();
            }
        }
        let out = coalesce(records.clone());
        prop_assert_eq!(out.len(), newest.len(), "one record per key");
        for r in &out {
            prop_assert_eq!(Some(&r.version), newest.get(&r.item_key()));
        }
        // In backlog order: each kept record's position in the input increases.
        let positions: Vec<usize> = out
            .iter()
            .map(|r| records.iter().position(|x| x == r).expect("kept from the input"))
            .collect();
        prop_assert!(positions.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn coalesce_does_not_depend_on_delivery_order(
        (records, shuffled) in backlog().prop_flat_map(|r| (Just(r.clone()), Just(r).prop_shuffle()))
    ) {
        let by_key = |rs: Vec<ChangeRecord>| -> BTreeMap<ItemKey, ChangeRecord> {
            rs.into_iter().map(|r| (r.item_key(), r)).collect()
        };
        prop_assert_eq!(by_key(coalesce(records)), by_key(coalesce(shuffled)));
    }
}

// ---------------------------------------------------------------- version order

#[test]
fn version_ties_are_broken_by_origin_as_a_string() {
    assert!(v(1, "zz") < v(2, "aa"), "time first");
    assert!(v(5, "eu-west-1") < v(5, "us-east-1"));
    assert!(v(5, "r10") < v(5, "r2"), "string order, not numeric");
    assert!(v(5, "R9") < v(5, "r1"), "byte order");
    assert!(v(9, "a") < v(10, "a"), "numeric time, not text");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn version_order_is_total_antisymmetric_and_transitive(
        a in version(), b in version(), c in version(),
    ) {
        // Exactly one of <, =, >.
        let relations = [a < b, a == b, a > b].iter().filter(|x| **x).count();
        prop_assert_eq!(relations, 1);
        if a <= b && b <= a {
            prop_assert_eq!(&a, &b);
        }
        if a <= b && b <= c {
            prop_assert!(a <= c);
        }
        // The contract's order: time, then origin compared as a string.
        let expected = a.ts_ms.cmp(&b.ts_ms).then_with(|| a.origin.as_bytes().cmp(b.origin.as_bytes()));
        prop_assert_eq!(a.cmp(&b), expected);
    }

    #[test]
    fn version_survives_its_attributes(ts in any::<u64>(), origin in "[a-z0-9-]{1,20}") {
        let names = config().names;
        let ver = Version::new(ts, origin);
        let mut it = Item::new();
        ver.stamp_into(&mut it, &names);
        prop_assert_eq!(Version::of(&it, &names), Ok(Some(ver)));
    }
}

// ---------------------------------------------------------------- config

fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn config_defaults_are_valid() {
    let c = Config::new("us-east-1", "pk");
    assert_eq!(c.validate(), Ok(()));
    assert!(c.tombstone_lifetime_s >= 14 * 24 * 3600 + c.drain_lag_allowance_s);
}

#[test]
fn config_rejects_an_empty_region() {
    assert_eq!(
        Config::new("", "pk").validate(),
        Err(ConfigError::Empty("local region"))
    );
    assert_eq!(
        Config::from_lookup(lookup(&[
            ("FERRY_PARTITION_KEY", "pk"),
            ("AWS_REGION", " ")
        ])),
        Err(ConfigError::Empty("FERRY_LOCAL_REGION"))
    );
    let mut c = Config::new("us-east-1", "pk");
    c.destinations = vec![String::new()];
    assert_eq!(c.validate(), Err(ConfigError::Empty("destination region")));
    assert_eq!(
        Config::new("US_EAST_1", "pk").validate(),
        Err(ConfigError::BadRegion("US_EAST_1".into()))
    );
}

#[test]
fn config_rejects_a_tombstone_lifetime_shorter_than_retention_plus_lag() {
    let mut c = Config::new("us-east-1", "pk");
    c.drain_lag_allowance_s = 3_600;
    let allowance_s = 14 * 24 * 3600 + 3_600;
    c.tombstone_lifetime_s = allowance_s - 1;
    assert_eq!(
        c.validate(),
        Err(ConfigError::TombstoneLifetimeTooShort {
            got_s: allowance_s - 1,
            allowance_s
        })
    );
    c.tombstone_lifetime_s = allowance_s;
    assert_eq!(c.validate(), Ok(()), "exactly retention + lag is enough");
    // 14 days alone is not enough once a lag is allowed.
    assert!(matches!(
        Config::from_lookup(lookup(&[
            ("AWS_REGION", "us-east-1"),
            ("FERRY_PARTITION_KEY", "pk"),
            ("FERRY_TOMBSTONE_LIFETIME_S", "1209600"),
        ])),
        Err(ConfigError::TombstoneLifetimeTooShort {
            got_s: 1_209_600,
            ..
        })
    ));
    assert!(matches!(
        Config::from_lookup(lookup(&[
            ("AWS_REGION", "us-east-1"),
            ("FERRY_PARTITION_KEY", "pk"),
            ("FERRY_TOMBSTONE_LIFETIME_S", "two weeks"),
        ])),
        Err(ConfigError::BadNumber {
            name: "FERRY_TOMBSTONE_LIFETIME_S",
            ..
        })
    ));
}

#[test]
fn config_rejects_a_key_named_like_a_ferry_attribute() {
    for name in [TS, ORIGIN, MARKER, TTL] {
        assert_eq!(
            Config::new("us-east-1", name).validate(),
            Err(ConfigError::NameClash(name.into())),
            "partition key {name}"
        );
        let mut c = Config::new("us-east-1", "pk");
        c.key.sort = Some(name.into());
        assert_eq!(
            c.validate(),
            Err(ConfigError::NameClash(name.into())),
            "sort key {name}"
        );
    }
    let mut c = Config::new("us-east-1", "pk");
    c.key.sort = Some("pk".into());
    assert_eq!(c.validate(), Err(ConfigError::NameClash("pk".into())));
    let mut c = Config::new("us-east-1", "pk");
    c.names.ttl = c.names.ts.clone();
    assert_eq!(c.validate(), Err(ConfigError::NameClash(TS.into())));
    assert_eq!(
        Config::new("us-east-1", "").validate(),
        Err(ConfigError::Empty("partition key name"))
    );
}

#[test]
fn config_rejects_duplicate_and_self_destinations() {
    let mut c = Config::new("us-east-1", "pk");
    c.destinations = vec!["eu-west-1".into(), "ap-south-1".into(), "eu-west-1".into()];
    assert_eq!(
        c.validate(),
        Err(ConfigError::DuplicateDestination("eu-west-1".into()))
    );
    c.destinations = vec!["eu-west-1".into(), "us-east-1".into()];
    assert_eq!(
        c.validate(),
        Err(ConfigError::SelfDestination("us-east-1".into()))
    );
    assert_eq!(
        Config::from_lookup(lookup(&[
            ("AWS_REGION", "us-east-1"),
            ("FERRY_PARTITION_KEY", "pk"),
            ("FERRY_DESTINATIONS", "eu-west-1,eu-west-1"),
        ])),
        Err(ConfigError::DuplicateDestination("eu-west-1".into()))
    );
}

#[test]
fn config_rejects_a_bad_filter() {
    for bad in [
        "pk-prefix:",
        "has:",
        "prefix=user#",
        "everything",
        "pk-prefix",
    ] {
        assert_eq!(
            ItemFilter::parse(bad),
            Err(ConfigError::BadFilter(bad.into())),
            "{bad}"
        );
    }
    assert_eq!(ItemFilter::parse("all"), Ok(ItemFilter::All));
    assert_eq!(ItemFilter::parse(""), Ok(ItemFilter::All));
    assert_eq!(
        ItemFilter::parse("pk-prefix:user#"),
        Ok(ItemFilter::PartitionKeyPrefix("user#".into()))
    );
    assert_eq!(
        ItemFilter::parse("has:tenant"),
        Ok(ItemFilter::HasAttribute("tenant".into()))
    );
    assert_eq!(
        Config::from_lookup(lookup(&[
            ("AWS_REGION", "us-east-1"),
            ("FERRY_PARTITION_KEY", "pk"),
            ("FERRY_FILTER", "tenant=acme"),
        ])),
        Err(ConfigError::BadFilter("tenant=acme".into()))
    );
}

/// A version at `u64::MAX` (an application wrote it, or a forged record reached the table)
/// saturates: no decision overflows, and nothing ends below what was seen.
#[test]
fn a_version_at_u64_max_saturates() {
    let c = config();
    let top = Version::new(u64::MAX, FOREIGN);
    let h = hint(Some(top.clone()), None);
    // (Nothing is above it: the tombstone ties it, and loses on origin — the version is refused
    // by every drain anyway, `ferry_core::vet`.)
    let action = reconcile(&h, None, NOW, &c).expect("decided");
    let Action::Tombstone { version, .. } = action else {
        panic!("absent → tombstone: {action:?}");
    };
    assert_eq!(version.ts_ms, u64::MAX);
    let ttl = ferry_core::reconcile::tombstone_ttl(&top, NOW, &c);
    let expected = u64::MAX / 1000 + c.tombstone_lifetime_s;
    assert_eq!(ttl, AttributeValue::N(expected.to_string()));
}
