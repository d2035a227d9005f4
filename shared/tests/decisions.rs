//! The contract's decisions, one test per case (`/work/shared/DESIGN.md`, with
//! `contract_model.py` where the words leave doubt): classify, reconcile's case-4 table, the apply
//! condition and `judge`, coalescing, the version order, and config validation.

// `classify` takes `&EventRecord` (and may take more): keep the borrow that works with both.
#![allow(clippy::needless_borrows_for_generic_args)]

mod common;

use common::{
    config, event, image, item, key, n, s, tombstone_image, v, Identity, FOREIGN, LOCAL,
    TTL_SERVICE,
};
use ferry_core::apply::PendingReason;
use ferry_core::reconcile::tombstone_item;
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
    // A drain writing a foreign version *older* than the one it replaced is still a drain.
    let newer_old = image("k", &[], Some(&v(300, LOCAL)));
    assert_eq!(
        classify_one("MODIFY", Some(&newer_old), Some(&new), None),
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
fn case3_ttl_expiry_is_skipped() {
    let old = image("k", &[("a", n("1"))], Some(&v(100, LOCAL)));
    assert_eq!(
        classify_one("REMOVE", Some(&old), None, TTL_SERVICE),
        Classified::TtlExpiry
    );
    // A tombstone expiring is a TTL expiry too, wherever it came from.
    let tomb = tombstone_image("k", &v(100, FOREIGN), "5");
    assert_eq!(
        classify_one("REMOVE", Some(&tomb), None, TTL_SERVICE),
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
    }
}

fn version_is(ver: &Version) -> Vec<Condition> {
    vec![
        Condition::Equals(TS.into(), n(&ver.ts_ms.to_string())),
        Condition::Equals(ORIGIN.into(), s(&ver.origin)),
    ]
}

/// Runs reconcile and checks what every action must satisfy: its condition holds on the
/// item it was computed from (else the ALL_OLD loop never ends) and its version is above
/// everything the record saw.
fn run(h: &Hint, current: Option<&Item>, now: u64) -> Action {
    let action = reconcile(h, current, now, &config()).expect("reconciles");
    match &action {
        Action::Nothing => {}
        Action::Stamp {
            version, condition, ..
        }
        | Action::Tombstone {
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
    assert_eq!(tomb, tombstone_item(&key("k"), &floor, NOW, &c));
    let mut names: Vec<&str> = tomb.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["ferry_deleted", "ferry_origin", "ferry_ts", "pk", "ttl"]
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
        Action::Stamp {
            version: v(NOW, LOCAL),
            remove: vec![],
            ttl: None,
            condition: Condition::And(vec![
                Condition::Exists("pk".into()),
                Condition::NotExists(TS.into()),
            ]),
        }
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
        Action::Stamp {
            version: v(NOW, LOCAL),
            remove: vec![],
            ttl: None,
            condition: Condition::And(version_is(&v(900_000, LOCAL))),
        },
        "local origin: stamped whatever the values"
    );
    // Under skew, the floor is seen + 1.
    let Action::Stamp { version, .. } = run(&h, Some(&current), 10) else {
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
    let mut expected = version_is(&v(900_000, FOREIGN));
    expected.push(Condition::Equals("a".into(), n("1")));
    expected.push(Condition::NotExists("b".into()));
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp {
            version: v(NOW, LOCAL),
            remove: vec![],
            ttl: None,
            condition: Condition::And(expected),
        }
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
        assert_eq!(
            action,
            Action::Tombstone {
                item: tombstone_item(&key("k"), &v(NOW, LOCAL), NOW, &config()),
                version: v(NOW, LOCAL),
                condition: Condition::And(version_is(&cv)),
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
                Action::Stamp {
                    version: v(NOW, LOCAL),
                    remove: vec![],
                    ttl: None,
                    condition: Condition::And(version_is(&cv)),
                }
            );
        } else {
            assert!(matches!(action, Action::Tombstone { .. }), "foreign: row 5");
        }
    }
    let h = hint(Some(v(900_000, LOCAL)), None);
    let current = image("k", &[], Some(&v(900_000, LOCAL)));
    assert!(
        matches!(run(&h, Some(&current), NOW), Action::Stamp { .. }),
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
    let mut condition = version_is(&cv);
    condition.push(Condition::Equals(MARKER.into(), AttributeValue::Bool(true)));
    condition.push(Condition::Equals(TTL.into(), n("2196000")));
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp {
            version: v(NOW, LOCAL),
            remove: vec![MARKER.into(), TTL.into()],
            ttl: None,
            condition: Condition::And(condition),
        }
    );
    // The application set its own TTL since: only the marker goes.
    current.insert(TTL.into(), n("42"));
    let mut condition = version_is(&cv);
    condition.push(Condition::Equals(MARKER.into(), AttributeValue::Bool(true)));
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp {
            version: v(NOW, LOCAL),
            remove: vec![MARKER.into()],
            ttl: None,
            condition: Condition::And(condition),
        }
    );
}

#[test]
fn lifting_a_plain_tombstone_keeps_it_a_tombstone_and_moves_its_ttl() {
    let current = tombstone_image("k", &v(850_000, LOCAL), "2000");
    let h = hint(Some(v(900_000, FOREIGN)), None);
    let mut condition = version_is(&v(850_000, LOCAL));
    // The TTL as read: one the application set meanwhile is never overwritten.
    condition.push(Condition::Equals(TTL.into(), n("2000")));
    let lifetime = config().tombstone_lifetime_s;
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp {
            version: v(NOW, LOCAL),
            remove: vec![],
            // The TTL follows the tombstone's new version.
            ttl: Some(n(&(NOW / 1000 + lifetime).to_string())),
            condition: Condition::And(condition),
        }
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
    let mut condition = version_is(&lifted);
    condition.push(Condition::Equals(MARKER.into(), AttributeValue::Bool(true)));
    condition.push(Condition::Equals(TTL.into(), tomb_ttl.clone()));
    assert_eq!(
        run(&h, Some(&current), NOW),
        Action::Stamp {
            version: v(2_000_001, LOCAL),
            remove: vec![MARKER.into(), TTL.into()],
            ttl: None,
            condition: Condition::And(condition),
        }
    );
    // With a TTL the application set, only the marker goes.
    current.insert(TTL.into(), n("42"));
    let Action::Stamp { remove, .. } = run(&h, Some(&current), NOW) else {
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
    let Action::Stamp { condition, .. } = run(&h, Some(&read), NOW) else {
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
