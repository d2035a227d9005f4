//! The heartbeat's decisions (`ferry_core::heartbeat`): the sentinel's key for every key schema,
//! recognising it, its age, and that it crosses any item filter and is stamped like an
//! application's write.

// `classify` takes `&EventRecord` (and may take more): keep the borrow that works with both.
#![allow(clippy::needless_borrows_for_generic_args)]

mod common;

use common::{config, event, item, n, s, v, FOREIGN, LOCAL};
use ferry_core::heartbeat::{
    age_ms, is_sentinel_key, is_sentinel_of_any, sentinel, sentinel_key, KeyType, KeyTypes, MARKER,
};
use ferry_core::{
    classify, AttributeValue, ChangeRecord, Classified, Config, ConfigError, ItemFilter, KeySchema,
};

const ALL_TYPES: [KeyType; 3] = [KeyType::S, KeyType::N, KeyType::B];

fn schemas() -> Vec<KeySchema> {
    vec![
        KeySchema {
            partition: "pk".into(),
            sort: None,
        },
        KeySchema {
            partition: "pk".into(),
            sort: Some("sk".into()),
        },
    ]
}

fn every_layout() -> Vec<(KeySchema, KeyTypes)> {
    let mut out = Vec::new();
    for schema in schemas() {
        for partition in ALL_TYPES {
            for sort in ALL_TYPES {
                out.push((schema.clone(), KeyTypes { partition, sort }));
            }
        }
    }
    out
}

fn type_of(value: &AttributeValue) -> KeyType {
    match value {
        AttributeValue::S(_) => KeyType::S,
        AttributeValue::N(_) => KeyType::N,
        AttributeValue::B(_) => KeyType::B,
        other => panic!("not a key type: {other:?}"),
    }
}

#[test]
fn the_sentinel_key_fits_every_key_schema_and_names_its_region() {
    for (schema, types) in every_layout() {
        let key = sentinel_key(&schema, types, LOCAL);
        assert_eq!(key.len(), schema.names().count(), "{schema:?}");
        assert_eq!(type_of(&key["pk"]), types.partition);
        if schema.sort.is_some() {
            assert_eq!(type_of(&key["sk"]), types.sort);
        }
        assert!(
            is_sentinel_key(&schema, &key, LOCAL),
            "{schema:?} {types:?}"
        );
        assert!(
            !is_sentinel_key(&schema, &key, FOREIGN),
            "{schema:?} {types:?}"
        );
        assert_ne!(key, sentinel_key(&schema, types, FOREIGN));
    }
}

#[test]
fn a_number_key_is_canonical_and_within_dynamodbs_precision() {
    let schema = &schemas()[0];
    let types = KeyTypes {
        partition: KeyType::N,
        sort: KeyType::S,
    };
    for region in ["us-east-1", "eu-west-1", "ap-southeast-2", "r1"] {
        let AttributeValue::N(text) = &sentinel_key(schema, types, region)["pk"] else {
            panic!("a number");
        };
        let digits = text.chars().filter(char::is_ascii_digit).count();
        assert!(digits <= 38, "{text}: {digits} digits");
        assert!(
            !text.contains(['e', 'E', '+']) && !text.ends_with('0'),
            "{text}"
        );
        assert!(text.parse::<f64>().is_ok(), "{text}");
    }
}

#[test]
fn application_keys_are_not_sentinels() {
    let schema = &schemas()[1];
    for key in [
        item(&[("pk", s("user#1")), ("sk", s("a"))]),
        item(&[("pk", n("-9007199254740993")), ("sk", n("1"))]),
        item(&[("pk", s("~ferry~heartbeat~r1"))]),
        item(&[
            ("pk", s("~ferry~heartbeat~r1")),
            ("sk", s("~ferry~heartbeat~r2")),
        ]),
    ] {
        assert!(!is_sentinel_key(schema, &key, LOCAL), "{key:?}");
    }
}

#[test]
fn the_sentinel_is_an_unstamped_item_carrying_the_writers_clock() {
    let c = config();
    let item = sentinel(&c.key, KeyTypes::default(), LOCAL, 1_234);
    assert_eq!(item.get(MARKER), Some(&n("1234")));
    assert_eq!(item.len(), 2, "key and marker only: {item:?}");
    assert!(ferry_core::Version::of(&item, &c.names)
        .expect("readable")
        .is_none());
    assert!(is_sentinel_of_any(&c.key, &item, [FOREIGN, LOCAL]));
    assert!(!is_sentinel_of_any(&c.key, &item, [FOREIGN]));
    assert!(!is_sentinel_of_any(&c.key, &common::key("k"), [LOCAL]));
}

fn record(key_region: &str, source: &str, marker: Option<AttributeValue>) -> ChangeRecord {
    let c = config();
    let key = sentinel_key(&c.key, KeyTypes::default(), key_region);
    let mut image = key.clone();
    if let Some(m) = marker {
        image.insert(MARKER.into(), m);
    }
    let version = v(1_000, source);
    version.stamp_into(&mut image, &c.names);
    ChangeRecord {
        key,
        image,
        tombstone: false,
        version,
        source_region: source.into(),
        written_at_ms: 1_000,
    }
}

#[test]
fn its_age_is_the_drains_clock_minus_the_writers_for_the_sources_own_sentinel_only() {
    let c = config();
    assert_eq!(
        age_ms(&c, &record(LOCAL, LOCAL, Some(n("1000"))), 4_500),
        Some(3_500)
    );
    // A writer ahead of the drain's clock: never negative.
    assert_eq!(
        age_ms(&c, &record(LOCAL, LOCAL, Some(n("9000"))), 4_500),
        Some(0)
    );
    // Another region's sentinel, an unreadable marker, no marker, a tombstone: no figure.
    assert_eq!(
        age_ms(&c, &record(FOREIGN, LOCAL, Some(n("1000"))), 4_500),
        None
    );
    assert_eq!(
        age_ms(&c, &record(LOCAL, LOCAL, Some(s("soon"))), 4_500),
        None
    );
    assert_eq!(age_ms(&c, &record(LOCAL, LOCAL, None), 4_500), None);
    let mut tomb = record(LOCAL, LOCAL, Some(n("1000")));
    tomb.tombstone = true;
    assert_eq!(age_ms(&c, &tomb, 4_500), None);
    // An application item with a marker-named attribute is no heartbeat.
    let mut app = record(LOCAL, LOCAL, Some(n("1000")));
    app.key = common::key("k");
    assert_eq!(age_ms(&c, &app, 4_500), None);
}

#[test]
fn the_sentinel_crosses_any_item_filter_and_is_stamped_like_an_application_write() {
    let mut c: Config = config();
    let written = sentinel(&c.key, KeyTypes::default(), LOCAL, 1_000);
    let keys = sentinel_key(&c.key, KeyTypes::default(), LOCAL);
    let mut stamped = written.clone();
    v(2_000, LOCAL).stamp_into(&mut stamped, &c.names);
    ferry_core::digest::seal(&mut stamped, &c.names);
    for filter in [
        ItemFilter::All,
        ItemFilter::PartitionKeyPrefix("user#".into()),
        ItemFilter::HasAttribute("tenant".into()),
    ] {
        c.filter = filter.clone();
        let put = classify(&event("INSERT", &keys, None, Some(&written), None), &c);
        assert!(
            matches!(put, Ok(Classified::Reconcile(_))),
            "{filter:?}: {put:?}"
        );
        let stamp = classify(
            &event("MODIFY", &keys, Some(&written), Some(&stamped), None),
            &c,
        );
        assert!(
            matches!(&stamp, Ok(Classified::Forward(r)) if r.image.get(MARKER) == Some(&n("1000"))),
            "{filter:?}: {stamp:?}"
        );
    }
    // Another region's sentinel follows the filter like any item (it only ever arrives
    // replicated-in, which is skipped anyway).
    c.filter = ItemFilter::PartitionKeyPrefix("user#".into());
    let foreign = sentinel_key(&c.key, KeyTypes::default(), FOREIGN);
    let mut theirs = sentinel(&c.key, KeyTypes::default(), FOREIGN, 1_000);
    v(2_000, FOREIGN).stamp_into(&mut theirs, &c.names);
    ferry_core::digest::seal(&mut theirs, &c.names);
    assert!(!matches!(
        classify(&event("INSERT", &foreign, None, Some(&theirs), None), &c),
        Ok(Classified::Forward(_))
    ));
}

#[test]
fn key_types_parse_as_the_template_names_them() {
    assert_eq!(KeyType::parse("S"), Ok(KeyType::S));
    assert_eq!(KeyType::parse(""), Ok(KeyType::S));
    assert_eq!(KeyType::parse(" N "), Ok(KeyType::N));
    assert_eq!(KeyType::parse("B"), Ok(KeyType::B));
    assert_eq!(
        KeyType::parse("SS"),
        Err(ConfigError::BadKeyType("SS".into()))
    );
}
