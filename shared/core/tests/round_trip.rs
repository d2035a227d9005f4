//! Round trip of every DynamoDB attribute type through Ferry's whole data path:
//! stream record (Lambda's DynamoDB JSON) → `classify` → `ChangeRecord` → `buffer::pack` →
//! message body → `buffer::unpack` → `ChangeRecord` → the SDK's `AttributeValue` item.
//!
//! The generators build a model value first and render it three ways, independently: as the
//! DynamoDB JSON Lambda sends, as the `serde_dynamo` item Ferry works on, and as the SDK item a
//! drain writes. Equality is exact: numbers are compared as the strings DynamoDB sent.

// `classify` takes `&EventRecord` (and may take more): keep the borrow that works with both.
#![allow(clippy::needless_borrows_for_generic_args)]

mod common;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as SdkValue;
use base64::Engine;
use common::{config, LOCAL};
use ferry_core::buffer::{pack, unpack, UnpackError};
use ferry_core::codec::DecodeError;
use ferry_core::{classify, AttributeValue, ChangeRecord, Classified, Item, Version};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

type SdkItem = HashMap<String, SdkValue>;

/// A DynamoDB value, as the generators produce it.
#[derive(Clone, Debug)]
enum V {
    S(String),
    N(String),
    B(Vec<u8>),
    Ss(Vec<String>),
    Ns(Vec<String>),
    Bs(Vec<Vec<u8>>),
    M(Vec<(String, V)>),
    L(Vec<V>),
    Null,
    Bool(bool),
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl V {
    /// DynamoDB JSON, as in a Lambda stream event.
    fn json(&self) -> Value {
        match self {
            V::S(s) => json!({ "S": s }),
            V::N(n) => json!({ "N": n }),
            V::B(b) => json!({ "B": b64(b) }),
            V::Ss(v) => json!({ "SS": v }),
            V::Ns(v) => json!({ "NS": v }),
            V::Bs(v) => json!({ "BS": v.iter().map(|b| b64(b)).collect::<Vec<_>>() }),
            V::M(m) => {
                let inner: Map<String, Value> =
                    m.iter().map(|(k, v)| (k.clone(), v.json())).collect();
                json!({ "M": inner })
            }
            V::L(l) => json!({ "L": l.iter().map(V::json).collect::<Vec<_>>() }),
            V::Null => json!({ "NULL": true }),
            V::Bool(b) => json!({ "BOOL": b }),
        }
    }

    /// The value Ferry's core works on.
    fn core(&self) -> AttributeValue {
        match self {
            V::S(s) => AttributeValue::S(s.clone()),
            V::N(n) => AttributeValue::N(n.clone()),
            V::B(b) => AttributeValue::B(b.clone()),
            V::Ss(v) => AttributeValue::Ss(v.clone()),
            V::Ns(v) => AttributeValue::Ns(v.clone()),
            V::Bs(v) => AttributeValue::Bs(v.clone()),
            V::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), v.core())).collect()),
            V::L(l) => AttributeValue::L(l.iter().map(V::core).collect()),
            V::Null => AttributeValue::Null(true),
            V::Bool(b) => AttributeValue::Bool(*b),
        }
    }

    /// The value the SDK writes.
    fn sdk(&self) -> SdkValue {
        match self {
            V::S(s) => SdkValue::S(s.clone()),
            V::N(n) => SdkValue::N(n.clone()),
            V::B(b) => SdkValue::B(Blob::new(b.clone())),
            V::Ss(v) => SdkValue::Ss(v.clone()),
            V::Ns(v) => SdkValue::Ns(v.clone()),
            V::Bs(v) => SdkValue::Bs(v.iter().map(|b| Blob::new(b.clone())).collect()),
            V::M(m) => SdkValue::M(m.iter().map(|(k, v)| (k.clone(), v.sdk())).collect()),
            V::L(l) => SdkValue::L(l.iter().map(V::sdk).collect()),
            V::Null => SdkValue::Null(true),
            V::Bool(b) => SdkValue::Bool(*b),
        }
    }
}

/// Numbers that break lossy pipelines: 38 significant digits, the extremes of DynamoDB's range,
/// negative zero, leading and trailing zeros, both exponent spellings.
const NASTY_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "-0.000",
    "1E+125",
    "-1E-130",
    "1E-130",
    "-1E+125",
    "9.9999999999999999999999999999999999999E+125",
    "-9.9999999999999999999999999999999999999E+125",
    "1.0000000000000000000000000000000000001",
    "12345678901234567890123456789012345678",
    "-12345678901234567890123456789012345678",
    "0.00000000000000000000000000000000000012345678901234567890123456789012345678",
    "12345678901234567890",
    "9007199254740993",
    "007",
    "1.500",
    "100e-2",
    "1e5",
    "0.1",
    "+5",
];

/// A DynamoDB number as a string: sign, up to 38 significant digits padded with leading and
/// trailing zeros, a decimal point anywhere, an exponent in DynamoDB's range.
fn number() -> impl Strategy<Value = String> {
    let built = (
        any::<bool>(),
        "0{0,3}",
        "[1-9][0-9]{0,37}",
        "0{0,4}",
        prop::option::of(any::<prop::sample::Index>()),
        prop::option::of((prop::bool::ANY, prop::bool::ANY, 0u32..=125)),
    )
        .prop_map(|(neg, lead, sig, trail, point, exp)| {
            let digits = format!("{lead}{sig}{trail}");
            let mut s = String::new();
            if neg {
                s.push('-');
            }
            match point {
                Some(i) => {
                    let at = 1 + i.index(digits.len());
                    if at < digits.len() {
                        s.push_str(&digits[..at]);
                        s.push('.');
                        s.push_str(&digits[at..]);
                    } else {
                        s.push_str(&digits);
                    }
                }
                None => s.push_str(&digits),
            }
            if let Some((upper, minus, e)) = exp {
                s.push(if upper { 'E' } else { 'e' });
                s.push(if minus { '-' } else { '+' });
                s.push_str(&e.to_string());
            }
            s
        });
    prop_oneof![
        1 => prop::sample::select(NASTY_NUMBERS).prop_map(str::to_string),
        3 => built,
    ]
}

/// Any Unicode text, control characters and NUL included; may be empty.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn nonempty_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 1..=max).prop_map(String::from_iter)
}

fn bytes(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), min..=max)
}

/// An attribute name: Unicode, never one of the names the pipeline owns.
fn name() -> impl Strategy<Value = String> {
    nonempty_text(8).prop_filter("reserved", |n| !is_reserved(n))
}

fn is_reserved(name: &str) -> bool {
    let c = config();
    c.key.is_key(name) || c.names.is_ferry_attribute(name)
}

fn leaf() -> impl Strategy<Value = V> {
    prop_oneof![
        3 => text(24).prop_map(V::S),
        3 => number().prop_map(V::N),
        2 => bytes(0, 48).prop_map(V::B),
        1 => Just(V::Null),
        1 => any::<bool>().prop_map(V::Bool),
        1 => prop::collection::btree_set(nonempty_text(12), 1..8)
            .prop_map(|s| V::Ss(s.into_iter().collect())),
        1 => prop::collection::btree_set(number(), 1..8)
            .prop_map(|s| V::Ns(s.into_iter().collect())),
        1 => prop::collection::btree_set(bytes(1, 16), 1..6)
            .prop_map(|s| V::Bs(s.into_iter().collect())),
    ]
}

/// A document: maps and lists (empty ones included) a few levels deep.
fn value() -> impl Strategy<Value = V> {
    leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(V::L),
            prop::collection::btree_map(nonempty_text(6), inner, 0..6)
                .prop_map(|m| V::M(m.into_iter().collect())),
        ]
    })
}

/// `wraps` maps/lists around one leaf (`true`: a map).
fn nest(leaf: V, kinds: &[bool]) -> V {
    kinds.iter().rev().fold(leaf, |inner, is_map| {
        if *is_map {
            V::M(vec![("d".to_string(), inner)])
        } else {
            V::L(vec![inner])
        }
    })
}

/// The codec's depth limit (`codec::MAX_DEPTH`): 32 maps/lists around a scalar. DynamoDB itself
/// refuses 32 wraps (its 32 levels count the scalar), so this covers every item it can hold.
const DEEPEST_WRAPS: usize = 32;

fn deep() -> impl Strategy<Value = V> {
    (
        0..=DEEPEST_WRAPS,
        prop::collection::vec(any::<bool>(), DEEPEST_WRAPS),
        leaf(),
    )
        .prop_map(|(depth, kinds, leaf)| nest(leaf, &kinds[..depth]))
}

fn large_set() -> impl Strategy<Value = V> {
    prop_oneof![
        prop::collection::btree_set(nonempty_text(20), 100..400)
            .prop_map(|s| V::Ss(s.into_iter().collect())),
        prop::collection::btree_set(number(), 100..300)
            .prop_map(|s| V::Ns(s.into_iter().collect())),
        prop::collection::btree_set(bytes(1, 32), 100..300)
            .prop_map(|s| V::Bs(s.into_iter().collect())),
    ]
}

fn key_value() -> impl Strategy<Value = V> {
    prop_oneof![
        nonempty_text(20).prop_map(V::S),
        number().prop_map(V::N),
        bytes(1, 20).prop_map(V::B),
    ]
}

/// One item a stream could carry: key, version, application attributes.
#[derive(Clone, Debug)]
struct Case {
    pk: V,
    ts: u64,
    attrs: Vec<(String, V)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        key_value(),
        prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 1u64..=1 << 45],
        prop::collection::btree_map(name(), value(), 0..10),
        prop::option::of(deep()),
        prop::option::of(large_set()),
    )
        .prop_map(|(pk, ts, attrs, deep, set)| {
            let mut attrs: BTreeMap<String, V> = attrs;
            if let Some(d) = deep {
                attrs.insert("deep".into(), d);
            }
            if let Some(s) = set {
                attrs.insert("set".into(), s);
            }
            Case {
                pk,
                ts,
                attrs: attrs.into_iter().collect(),
            }
        })
}

impl Case {
    fn version(&self) -> Version {
        Version::new(self.ts, LOCAL)
    }

    fn all(&self) -> Vec<(String, V)> {
        let names = config().names;
        let mut all = vec![
            ("pk".to_string(), self.pk.clone()),
            (names.ts.clone(), V::N(self.ts.to_string())),
            (names.origin.clone(), V::S(LOCAL.to_string())),
        ];
        all.extend(self.attrs.iter().cloned());
        all
    }

    fn core_item(&self) -> Item {
        self.all()
            .iter()
            .map(|(k, v)| (k.clone(), v.core()))
            .collect()
    }

    fn sdk_item(&self) -> SdkItem {
        self.all()
            .iter()
            .map(|(k, v)| (k.clone(), v.sdk()))
            .collect()
    }

    /// The INSERT stream record Lambda would deliver for this item, as JSON.
    fn event_json(&self, seq: usize) -> Value {
        let image: Map<String, Value> = self
            .all()
            .iter()
            .map(|(k, v)| (k.clone(), v.json()))
            .collect();
        json!({
            "eventID": format!("id-{seq}"),
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_700_000_000,
                "Keys": { "pk": self.pk.json() },
                "NewImage": image,
                "SequenceNumber": format!("{}", 1000 + seq),
                "SizeBytes": 100,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        })
    }
}

fn to_sdk(item: &Item) -> SdkItem {
    serde_dynamo::Item::from(item.clone()).into()
}

/// The whole path for a batch of items; returns the records as they came out of the buffer.
fn through_pipeline(cases: &[Case]) -> Vec<ChangeRecord> {
    let config = config();
    let mut sent = Vec::new();
    for (seq, c) in cases.iter().enumerate() {
        let record: aws_lambda_events::event::dynamodb::EventRecord =
            serde_json::from_value(c.event_json(seq)).expect("Lambda's JSON deserializes");
        assert_eq!(
            record.change.new_image.inner(),
            &c.core_item(),
            "the stream image is the item exactly"
        );
        let classified = classify(&record, &config).expect("classifies");
        let Classified::Forward(r) = classified else {
            panic!("a local, newly stamped INSERT is forwarded, got {classified:?}");
        };
        assert_eq!(r.image, c.core_item());
        assert_eq!(r.key, [("pk".to_string(), c.pk.core())].into());
        assert_eq!(r.version, c.version());
        assert_eq!(r.source_region, LOCAL);
        assert!(!r.tombstone);
        assert_eq!(r.written_at_ms, c.ts.max(1_700_000_000_000));
        sent.push(r);
    }
    let batches = pack(&sent).expect("packs");
    let mut received = Vec::new();
    for m in batches.iter().flatten() {
        let records = unpack(&m.body).expect("unpacks");
        assert_eq!(records.len(), m.records);
        received.extend(records);
    }
    assert_eq!(received, sent, "same records, same order");
    received
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn stream_image_to_sdk_item_is_exact(cases in prop::collection::vec(case(), 1..4)) {
        let received = through_pipeline(&cases);
        for (r, c) in received.iter().zip(&cases) {
            prop_assert_eq!(to_sdk(&r.image), c.sdk_item());
            prop_assert_eq!(to_sdk(&r.key), [("pk".to_string(), c.pk.sdk())].into());
        }
    }

    #[test]
    fn numbers_survive_as_strings(numbers in prop::collection::vec(number(), 1..40)) {
        let attrs: Vec<(String, V)> = numbers
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("n{i}"), V::N(n.clone())))
            .collect();
        let c = Case { pk: V::S("numbers".into()), ts: 1, attrs };
        let out = &through_pipeline(std::slice::from_ref(&c))[0];
        let sdk = to_sdk(&out.image);
        for (i, n) in numbers.iter().enumerate() {
            prop_assert_eq!(sdk.get(&format!("n{i}")), Some(&SdkValue::N(n.clone())));
        }
    }
}

#[test]
fn nasty_numbers_and_empty_values_come_back_verbatim() {
    let mut attrs: Vec<(String, V)> = NASTY_NUMBERS
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("n{i:02}"), V::N(n.to_string())))
        .collect();
    attrs.push((
        "ns".into(),
        V::Ns(NASTY_NUMBERS.iter().map(|n| n.to_string()).collect()),
    ));
    attrs.push(("empty_s".into(), V::S(String::new())));
    attrs.push(("empty_b".into(), V::B(Vec::new())));
    attrs.push(("empty_m".into(), V::M(Vec::new())));
    attrs.push(("empty_l".into(), V::L(Vec::new())));
    attrs.push(("ünï©ødé 🚢".into(), V::S("\u{0}\u{7f}\u{10ffff}☃".into())));
    let c = Case {
        pk: V::N("-0".into()),
        ts: u64::MAX,
        attrs,
    };
    let out = &through_pipeline(std::slice::from_ref(&c))[0];
    let sdk = to_sdk(&out.image);
    assert_eq!(sdk, c.sdk_item());
    assert_eq!(
        sdk["n11"],
        SdkValue::N("12345678901234567890123456789012345678".into())
    );
    assert_eq!(sdk["n04"], SdkValue::N("1E+125".into()));
    assert_eq!(sdk["n05"], SdkValue::N("-1E-130".into()));
    assert_eq!(sdk["n01"], SdkValue::N("-0".into()));
    assert_eq!(sdk["n15"], SdkValue::N("9007199254740993".into()));
    assert_eq!(sdk["empty_s"], SdkValue::S(String::new()));
    assert_eq!(sdk["empty_b"], SdkValue::B(Blob::new(Vec::new())));
    assert_eq!(sdk["pk"], SdkValue::N("-0".into()));
    assert_eq!(
        sdk["ferry_ts"],
        SdkValue::N("18446744073709551615".into()),
        "a u64 timestamp is not rounded"
    );
}

#[test]
fn deepest_document_round_trips_and_one_level_more_is_refused() {
    let leaf = V::N("1E+125".into());
    for kinds in [
        vec![true; DEEPEST_WRAPS],
        vec![false; DEEPEST_WRAPS],
        (0..DEEPEST_WRAPS).map(|i| i % 2 == 0).collect(),
    ] {
        let c = Case {
            pk: V::S("deep".into()),
            ts: 7,
            attrs: vec![("doc".into(), nest(leaf.clone(), &kinds))],
        };
        let out = &through_pipeline(std::slice::from_ref(&c))[0];
        assert_eq!(to_sdk(&out.image), c.sdk_item());
    }
    // One wrap more than the codec reads: DynamoDB cannot hold it, so a drain must refuse it
    // with a typed error (it does not get this far: the stream never carries such an item).
    let too_deep = ChangeRecord {
        key: common::key("deep"),
        image: Item::from([(
            "doc".to_string(),
            nest(leaf, &[true; DEEPEST_WRAPS + 1]).core(),
        )]),
        tombstone: false,
        version: Version::new(1, LOCAL),
        source_region: LOCAL.into(),
        written_at_ms: 1,
    };
    let batches = pack(&[too_deep]).expect("packs");
    assert_eq!(
        unpack(&batches[0][0].body),
        Err(UnpackError::Decode(DecodeError::TooDeep))
    );
}

#[test]
fn sets_keep_their_members_and_order() {
    let ss: Vec<String> = (0..1000).rev().map(|i| format!("member-{i:04}")).collect();
    let ns: Vec<String> = (0..500).map(|i| format!("{i}.{i}E-{}", i % 130)).collect();
    let bs: Vec<Vec<u8>> = (0..300u16).map(|i| i.to_be_bytes().to_vec()).collect();
    let c = Case {
        pk: V::B(vec![0, 255, 0]),
        ts: 42,
        attrs: vec![
            ("ss".into(), V::Ss(ss.clone())),
            ("ns".into(), V::Ns(ns.clone())),
            ("bs".into(), V::Bs(bs.clone())),
        ],
    };
    let out = &through_pipeline(std::slice::from_ref(&c))[0];
    let sdk = to_sdk(&out.image);
    assert_eq!(sdk["ss"], SdkValue::Ss(ss));
    assert_eq!(sdk["ns"], SdkValue::Ns(ns));
    assert_eq!(
        sdk["bs"],
        SdkValue::Bs(bs.into_iter().map(Blob::new).collect())
    );
    let members: BTreeSet<&String> = match &out.image["ss"] {
        AttributeValue::Ss(v) => v.iter().collect(),
        other => panic!("not a string set: {other:?}"),
    };
    assert_eq!(members.len(), 1000);
}
