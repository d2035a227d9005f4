//! The conflict log's decisions (`ferry_core::conflict`, issue #19), without I/O: the entry a
//! drain keeps of a conflict, its id and expiry, its stored form, what a too-big image becomes,
//! the cap per invocation, `show`'s comparison and what `reapply` writes.

mod common;

use common::{config, image, key, n, s, tombstone_image, v, FOREIGN, LOCAL};
use ferry_core::conflict::{
    compare, entry, entry_id, expires_at_s, item_size, log_table_name, merge_entry, merged_away,
    reapply, selected, Entry, LogSettings, NotReappliable, Quota, Reapply, MAX_ITEM_BYTES,
};
use ferry_core::merge::AttrState;
use ferry_core::{judge, AttributeValue, ChangeRecord, Judgement, Version};

const NOW_MS: u64 = 1_700_000_000_123;

fn settings() -> LogSettings {
    LogSettings::new(log_table_name("orders"))
}

/// A record from `FOREIGN` carrying `status`, at `version`.
fn record(pk: &str, status: &str, version: Version) -> ChangeRecord {
    ChangeRecord {
        key: key(pk),
        image: image(pk, &[("status", s(status))], Some(&version)),
        tombstone: false,
        version,
        source_region: FOREIGN.into(),
        written_at_ms: NOW_MS - 50,
    }
}

/// The judgement a destination holding `stored` makes of `r`, as the drain sees it.
fn conflict_of(r: &ChangeRecord, stored: &ferry_core::Item) -> Version {
    match judge(r, Some(stored), &config()) {
        Judgement::Conflict { winner, loser } => {
            assert_eq!(loser, r.version);
            winner
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn an_entry_keeps_both_versions_both_regions_the_time_and_the_losing_image() {
    let stored = image("a", &[("status", s("paid"))], Some(&v(2000, LOCAL)));
    let r = record("a", "cancelled", v(1000, FOREIGN));
    let winner = conflict_of(&r, &stored);
    let e = entry(&r, &winner, LOCAL, NOW_MS, &settings());
    assert_eq!(e.winner, v(2000, LOCAL));
    assert_eq!(e.loser, v(1000, FOREIGN));
    assert_eq!(
        (e.source_region.as_str(), e.region.as_str()),
        (FOREIGN, LOCAL)
    );
    assert_eq!(e.detected_at_ms, NOW_MS);
    assert_eq!(e.key, key("a"));
    assert_eq!(e.loser_image.as_ref(), Some(&r.image));
    assert!(e.reappliable());
    // Default retention: 14 days from the detection, in epoch seconds (the table's TTL).
    assert_eq!(e.expires_at_s, NOW_MS / 1000 + 14 * 86_400);
    assert_eq!(expires_at_s(NOW_MS, 3600), NOW_MS / 1000 + 3600);
}

#[test]
fn the_id_is_the_same_for_the_same_conflict_and_differs_otherwise() {
    let (w, l) = (v(2000, LOCAL), v(1000, FOREIGN));
    let id = entry_id(&key("a"), &w, &l);
    assert_eq!(id.len(), 16);
    assert_eq!(
        id,
        entry_id(&key("a"), &w, &l),
        "a record delivered twice: one entry"
    );
    assert_ne!(id, entry_id(&key("b"), &w, &l));
    assert_ne!(id, entry_id(&key("a"), &v(2001, LOCAL), &l));
    assert_ne!(id, entry_id(&key("a"), &w, &v(1000, "r3")));
    // The detection time is not part of it.
    let r = record("a", "x", l.clone());
    assert_eq!(
        entry(&r, &w, LOCAL, 1, &settings()).id,
        entry(&r, &w, LOCAL, 2, &settings()).id
    );
}

#[test]
fn an_entry_round_trips_through_its_stored_form() {
    let r = record("a", "cancelled", v(1000, FOREIGN));
    let e = entry(&r, &v(2000, LOCAL), LOCAL, NOW_MS, &settings());
    let stored = e.to_item();
    assert_eq!(stored["id"], s(&e.id));
    assert_eq!(stored["expires_at"], n(&e.expires_at_s.to_string()));
    assert_eq!(stored["key_text"], s("pk=S:a"));
    assert_eq!(Entry::from_item(&stored), Ok(e.clone()));
    let mut broken = stored.clone();
    broken.remove("winner_ts");
    assert_eq!(
        Entry::from_item(&broken).unwrap_err().0,
        "winner_ts",
        "the attribute at fault is named"
    );
}

#[test]
fn an_image_too_big_for_one_log_item_is_left_out_and_not_reappliable() {
    let mut r = record("big", "x", v(1000, FOREIGN));
    r.image.insert(
        "blob".into(),
        AttributeValue::B(vec![7; MAX_ITEM_BYTES - 1024]),
    );
    assert!(item_size(&r.image) > MAX_ITEM_BYTES - 2048);
    let e = entry(&r, &v(2000, LOCAL), LOCAL, NOW_MS, &settings());
    assert_eq!(e.loser_image, None);
    assert!(e.loser_image_bytes >= MAX_ITEM_BYTES - 1024);
    assert!(!e.reappliable());
    let stored = e.to_item();
    assert!(!stored.contains_key("loser_image"));
    let back = Entry::from_item(&stored).expect("readable");
    assert!(!back.reappliable());
    assert!(matches!(
        reapply(&back),
        Err(NotReappliable::ImageNotKept(_, bytes)) if bytes == e.loser_image_bytes
    ));
    // Just under the limit it is kept.
    let mut r = record("fits", "x", v(1000, FOREIGN));
    r.image
        .insert("blob".into(), AttributeValue::B(vec![7; 300 * 1024]));
    assert!(entry(&r, &v(2000, LOCAL), LOCAL, NOW_MS, &settings())
        .loser_image
        .is_some());
}

#[test]
fn reapply_writes_the_losers_content_or_its_delete_never_its_version() {
    let r = record("a", "cancelled", v(1000, FOREIGN));
    let e = entry(&r, &v(2000, LOCAL), LOCAL, NOW_MS, &settings());
    // The image as kept; the helper's restore strips Ferry's attributes and stamps anew.
    assert_eq!(reapply(&e), Ok(Reapply::Put(r.image.clone())));
    let deleted = ChangeRecord {
        image: tombstone_image("a", &v(1000, FOREIGN), "99"),
        tombstone: true,
        ..r
    };
    let e = entry(&deleted, &v(2000, LOCAL), LOCAL, NOW_MS, &settings());
    assert!(e.loser_tombstone && e.reappliable());
    assert_eq!(reapply(&e), Ok(Reapply::Delete(key("a"))));
    let mut merged = e.clone();
    merged.merged_away = vec!["status".into()];
    assert!(matches!(reapply(&merged), Err(NotReappliable::Merged(_))));
}

#[test]
fn show_compares_what_the_application_reads_attribute_by_attribute() {
    let c = config();
    let winner = image(
        "a",
        &[("status", s("paid")), ("total", n("10"))],
        Some(&v(2000, LOCAL)),
    );
    let loser = image(
        "a",
        &[("status", s("cancelled")), ("note", s("late"))],
        Some(&v(1000, FOREIGN)),
    );
    let rows = compare(Some(&winner), Some(&loser), &c);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["note", "pk", "status", "total"],
        "Ferry's attributes left out"
    );
    let differs: Vec<&str> = rows
        .iter()
        .filter(|r| r.differs())
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(differs, ["note", "status", "total"]);
    assert_eq!(rows[0].winner, None);
    assert_eq!(rows[0].loser, Some(s("late")));
    // A deleted winner (or no item) reads as absent.
    let gone = tombstone_image("a", &v(3000, LOCAL), "99");
    let rows = compare(Some(&gone), Some(&loser), &c);
    assert!(rows.iter().all(|r| r.winner.is_none() && r.loser.is_some()));
    assert!(compare(None, None, &c).is_empty());
}

#[test]
fn the_quota_caps_an_invocation_and_stops_after_a_failure() {
    let mut q = Quota::new(5);
    assert_eq!(q.take(3), 3);
    assert_eq!(q.take(3), 2, "the cap: the rest are left out");
    assert_eq!(q.take(1), 0);
    let mut q = Quota::new(100);
    q.unavailable = true;
    assert_eq!(
        q.take(1),
        0,
        "a log that failed is not tried again in the invocation"
    );
    assert_eq!(Quota::new(0).take(4), 0, "no log: nothing is written");
}

#[test]
fn list_selects_by_key_and_age() {
    let r = record("a", "x", v(1000, FOREIGN));
    let e = entry(&r, &v(2000, LOCAL), LOCAL, NOW_MS, &settings());
    assert!(selected(&e, None, None));
    assert!(selected(&e, Some(&key("a")), Some(NOW_MS - 1)));
    assert!(!selected(&e, Some(&key("b")), None));
    assert!(!selected(&e, None, Some(NOW_MS + 1)));
}

#[test]
fn the_log_is_configured_by_the_drains_environment_only() {
    let base = |extra: &[(&str, &str)]| {
        let vars: Vec<(String, String)> =
            [("FERRY_LOCAL_REGION", LOCAL), ("FERRY_PARTITION_KEY", "pk")]
                .iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        ferry_core::Config::from_lookup(move |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    };
    assert_eq!(base(&[]).expect("valid").conflict_log, None);
    let c = base(&[
        ("FERRY_CONFLICT_TABLE", "orders-ferry-conflicts"),
        ("FERRY_CONFLICT_RETENTION_DAYS", "3"),
    ])
    .expect("valid");
    let log = c.conflict_log.clone().expect("a log");
    assert_eq!(log.table, "orders-ferry-conflicts");
    assert_eq!(log.retention_s, 3 * 86_400);
    assert_eq!(log.max_per_invocation, 100);
    // Not a shared setting: the fingerprint peers compare is the same with or without it.
    assert_eq!(
        ferry_core::peer::fingerprint(&c),
        ferry_core::peer::fingerprint(&base(&[]).expect("valid"))
    );
}

/// An attribute-mode state: `(name, value, version)` entries.
fn attrs(entries: &[(&str, &str, Version)]) -> AttrState {
    let mut st = AttrState::default();
    for (name, value, version) in entries {
        st.values.insert(name.to_string(), s(value));
        st.versions.insert(name.to_string(), version.clone());
    }
    st
}

#[test]
fn attribute_merge_records_the_values_it_merged_away() {
    let stored = attrs(&[
        ("status", "paid", v(3000, LOCAL)),
        ("note", "mine", v(500, LOCAL)),
        ("total", "10", v(2500, FOREIGN)),
    ]);
    let incoming = attrs(&[
        ("status", "cancelled", v(2000, FOREIGN)), // lost to a newer write of another region
        ("note", "theirs", v(2000, FOREIGN)),      // won
        ("total", "9", v(1000, FOREIGN)),          // older, same region: stale, no conflict
        ("fresh", "x", v(2000, FOREIGN)),          // nothing stored: won
    ]);
    let lost = merged_away(&stored, &incoming);
    assert_eq!(lost, vec![("status".to_string(), v(3000, LOCAL))]);
    // A newer whole-item delete of another region beats every older value.
    let deleted = AttrState {
        deleted: Some(v(5000, LOCAL)),
        ..AttrState::default()
    };
    let names: Vec<String> = merged_away(&deleted, &incoming)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["fresh", "note", "status", "total"]);

    let r = record("a", "cancelled", v(2000, FOREIGN));
    let e = merge_entry(&r, &lost, LOCAL, NOW_MS, &settings()).expect("an entry");
    assert_eq!(
        (e.winner.clone(), e.loser.clone()),
        (v(3000, LOCAL), v(2000, FOREIGN))
    );
    assert_eq!(e.merged_away, ["status"]);
    assert!(
        !e.reappliable(),
        "shown, not re-applied: its other attributes won"
    );
    assert_eq!(Entry::from_item(&e.to_item()), Ok(e));
    assert_eq!(merge_entry(&r, &[], LOCAL, NOW_MS, &settings()), None);
}
