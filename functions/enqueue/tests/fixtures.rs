//! The fixtures in `<repo>/tests/fixtures/` decode through the handler's path and get the
//! decisions the contract gives them; forwarded values survive packing bit for bit. No emulator
//! needed (the handler's I/O is covered by `emulators.rs`).

use ferry_core::buffer::unpack;
use ferry_core::{AttributeValue, Config, Item};
use ferry_enqueue::{decode_event, Decision, Input, Plan};
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fixture(name: &str) -> String {
    let path = fixture_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config() -> Config {
    let mut c = Config::new("us-east-1", "pk");
    c.destinations = vec!["eu-west-1".into()];
    c
}

fn plan_of(name: &str, config: &Config) -> (Vec<Input>, Plan) {
    let inputs = decode_event(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let plan = Plan::new(inputs.iter().map(Input::as_ref), config);
    (inputs, plan)
}

fn decisions(plan: &Plan) -> Vec<&'static str> {
    plan.slots
        .iter()
        .map(|s| match s.decision {
            Decision::Forward => "forward",
            Decision::Reconcile => "reconcile",
            Decision::ReplicatedIn => "replicated-in",
            Decision::TtlExpiry => "ttl",
            Decision::Filtered => "filtered",
            Decision::Poison(_) => "poison",
            Decision::ModeMismatch(_) => "mode-mismatch",
        })
        .collect()
}

/// The `NewImage` of record `i` of a fixture, read independently of the handler.
fn new_image(name: &str, i: usize) -> Item {
    let v: serde_json::Value = serde_json::from_str(&fixture(name)).expect("JSON");
    serde_json::from_value(v["Records"][i]["dynamodb"]["NewImage"].clone()).expect("an item")
}

#[test]
fn every_fixture_gets_the_contract_decision() {
    let config = config();
    let expected: &[(&str, &[&str])] = &[
        ("insert.json", &["forward"]),
        ("modify.json", &["forward"]),
        ("remove-by-app.json", &["reconcile"]),
        // A TTL removal of a (sealed) version: reconciled into a local expiry tombstone, never
        // forwarded; that tombstone's own record is the TTL skip.
        ("remove-by-ttl.json", &["reconcile"]),
        ("expiry-tombstone.json", &["ttl"]),
        ("replicated-in.json", &["replicated-in"]),
        // A copy of a sealed foreign version under another key: the seal does not match, so it
        // is an application's write to stamp, not a drain's (no replicated-in skip).
        ("copied-version.json", &["reconcile"]),
        ("unstamped-write.json", &["reconcile"]),
        ("kept-version.json", &["reconcile"]),
        ("number-38-digits.json", &["forward"]),
        ("binary-and-sets.json", &["forward"]),
        ("nested.json", &["forward"]),
        (
            "malformed.json",
            &["forward", "poison", "poison", "poison", "forward"],
        ),
        (
            "mixed-batch.json",
            &[
                "forward",
                "reconcile",
                "replicated-in",
                "reconcile",
                "reconcile",
            ],
        ),
    ];
    let mut listed: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        // The folder is shared: other functions' events (e.g. the drain's schedule) live there.
        .filter(|n| fixture(n).contains("\"aws:dynamodb\""))
        .collect();
    listed.sort();
    let mut covered: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    covered.sort();
    assert_eq!(
        listed, covered,
        "every stream fixture has an expectation here"
    );
    for (name, want) in expected {
        let (_, plan) = plan_of(name, &config);
        assert_eq!(decisions(&plan), *want, "{name}");
        for slot in &plan.slots {
            assert!(slot.sequence_number.is_some(), "{name}: sequence number");
        }
    }
}

#[test]
fn malformed_records_say_why_without_values() {
    let (inputs, plan) = plan_of("malformed.json", &config());
    let Input::Undecodable(bad) = &inputs[1] else {
        panic!("record 1 should not decode");
    };
    assert_eq!(
        bad.sequence_number.as_deref(),
        Some("4421585500000000017450440102")
    );
    assert_eq!(bad.key.as_deref(), Some("pk=S:item#bad-number"));
    let reasons: Vec<&str> = plan
        .slots
        .iter()
        .filter_map(|s| match &s.decision {
            Decision::Poison(r) => Some(r.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 3);
    assert!(reasons[0].contains("does not decode"), "{}", reasons[0]);
    assert!(!reasons[0].contains("`5`"), "value leaked: {}", reasons[0]);
    assert!(reasons[1].contains("ferry_origin"), "{}", reasons[1]);
    assert!(reasons[2].contains("`pk` is missing"), "{}", reasons[2]);
    // Poison records are logged with their key when it can be read.
    assert_eq!(plan.key_of(1).as_deref(), Some("pk=S:item#bad-number"));
    assert_eq!(plan.key_of(2).as_deref(), Some("pk=S:item#half-version"));
    assert_eq!(plan.key_of(3), None);
}

/// An attribute-mode stamp's record is logged with its key too (a poison one: a stamp DynamoDB
/// rejects), as item mode's.
#[test]
fn attribute_mode_stamp_records_have_their_key() {
    let mut config = config();
    config.merge_mode = ferry_core::MergeMode::Attribute;
    let (_inputs, plan) = plan_of("unstamped-write.json", &config);
    assert_eq!(plan.stamp_hints.len(), 1);
    assert_eq!(plan.key_of(0).as_deref(), Some("pk=S:profile#42"));
}

#[test]
fn forwarded_values_survive_packing_exactly() {
    let config = config();
    for name in [
        "insert.json",
        "modify.json",
        "number-38-digits.json",
        "binary-and-sets.json",
        "nested.json",
    ] {
        let (_, mut plan) = plan_of(name, &config);
        let packed = plan.pack_forwards(usize::MAX).expect("packs");
        assert_eq!(packed.batches.len(), 1, "{name}");
        let records = unpack(&packed.batches[0][0].body).expect("unpacks");
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.image, new_image(name, 0), "{name}");
        assert_eq!(r.source_region, "us-east-1");
        assert!(!r.tombstone);
    }

    // Spot checks on the values DynamoDB JSON makes easy to get wrong.
    let (_, mut plan) = plan_of("number-38-digits.json", &config);
    let packed = plan.pack_forwards(usize::MAX).expect("packs");
    let image = &unpack(&packed.batches[0][0].body).expect("unpacks")[0].image;
    assert_eq!(
        image["balance"],
        AttributeValue::N("12345678901234567890123456789012345678".into())
    );
    assert_eq!(
        image["tiny"],
        AttributeValue::N("-1.2345678901234567890123456789012345678E-120".into())
    );
    let (_, mut plan) = plan_of("binary-and-sets.json", &config);
    let packed = plan.pack_forwards(usize::MAX).expect("packs");
    let image = &unpack(&packed.batches[0][0].body).expect("unpacks")[0].image;
    let mut raw = vec![0u8, 1, 2, 0x7f, 0x80, 0xfe, 0xff];
    raw.extend_from_slice(b"ferry\x00\n");
    assert_eq!(image["payload"], AttributeValue::B(raw));
    assert_eq!(
        image["scores"],
        AttributeValue::Ns(vec![
            "1".into(),
            "-2.5".into(),
            "12345678901234567890123456789012345678".into(),
            "1E+100".into()
        ])
    );
}

#[test]
fn kept_version_hint_names_the_changed_attributes() {
    let (_, plan) = plan_of("kept-version.json", &config());
    let (_, hint) = &plan.hints[0];
    let changed: Vec<&str> = hint.changed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(changed, ["logins", "nickname"]);
    assert_eq!(hint.new_version, hint.seen);
}

/// The TTL removal of a sealed, versioned item is an expiry hint at its version; the record of
/// the tombstone enqueue writes for it is recognised by its seal.
#[test]
fn ttl_removal_hint_and_its_expiry_tombstone() {
    let config = config();
    let (_, plan) = plan_of("remove-by-ttl.json", &config);
    let (_, hint) = &plan.hints[0];
    let expired = ferry_core::Version::new(1_732_478_400_000, "us-east-1");
    assert_eq!(hint.expired, Some(expired.clone()));
    let tomb = ferry_core::reconcile::expiry_tombstone(&hint.key, &expired, &config);
    assert_eq!(
        tomb,
        new_image("expiry-tombstone.json", 0),
        "the fixture is the tombstone enqueue writes for remove-by-ttl.json"
    );
    assert!(ferry_core::digest::is_expiry_tombstone(
        &tomb,
        &config.names
    ));
}

#[test]
fn filter_counts_from_config() {
    let mut config = config();
    config.filter = ferry_core::ItemFilter::parse("pk-prefix:cart#").expect("filter");
    let (_, plan) = plan_of("mixed-batch.json", &config);
    // A TTL removal is decided before the filter (a sealed version that expires gets its local
    // expiry tombstone whatever the filter); the two non-cart keys are filtered.
    assert_eq!(
        decisions(&plan),
        ["forward", "reconcile", "filtered", "filtered", "reconcile"]
    );
}
