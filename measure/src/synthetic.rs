//! Synthetic application items for benches and tests: a realistic ~1 KB item (≈ 50 values of
//! every common type) and DynamoDB's item-size rule. Deterministic for a seeded `StdRng`, so the
//! figures of every bench that uses them are comparable.

use ferry_core::{AttributeValue, Item, Version};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

const WORDS: &[&str] = &[
    "ferry",
    "region",
    "table",
    "stream",
    "order",
    "paid",
    "shipped",
    "customer",
    "the",
    "a",
    "of",
    "and",
    "to",
    "delivery",
    "warehouse",
    "express",
    "standard",
    "discount",
    "coupon",
    "return",
    "refund",
    "item",
    "basket",
    "account",
    "premium",
    "review",
    "stars",
    "great",
];

fn alnum(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect()
}

fn words(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| *WORDS.choose(rng).unwrap_or(&"x"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// DynamoDB's item size: attribute names plus values (numbers counted as their text).
pub fn item_size(item: &Item) -> usize {
    fn value(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
            AttributeValue::B(b) => b.len(),
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::M(m) => 3 + item_size(m),
            AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value(v)).sum::<usize>(),
            AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().map(String::len).sum(),
            AttributeValue::Bs(v) => v.iter().map(Vec::len).sum(),
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// A ~1 KB application item (≈ 50 values): names, an address, some free text, counters, a
/// string set, a map, a list of maps; stamped with `version`. The benches' realistic record.
pub fn realistic_item(rng: &mut StdRng, i: usize, version: &Version) -> Item {
    let s = |v: String| AttributeValue::S(v);
    let n = |v: u64| AttributeValue::N(v.to_string());
    let mut item: Item = Item::new();
    item.insert("pk".into(), s(format!("user#{i:08}")));
    item.insert(
        "name".into(),
        s(format!("{} {}", alnum(rng, 7), alnum(rng, 9))),
    );
    item.insert(
        "email".into(),
        s(format!("{}@{}.example.com", alnum(rng, 10), alnum(rng, 6))),
    );
    item.insert(
        "address".into(),
        s(format!(
            "{} {} Street, {}",
            rng.gen_range(1..999),
            alnum(rng, 12),
            alnum(rng, 8)
        )),
    );
    item.insert("bio".into(), s(words(rng, 60)));
    item.insert(
        "tags".into(),
        AttributeValue::Ss((0..5).map(|k| format!("{}-{k}", words(rng, 1))).collect()),
    );
    for c in ["logins", "orders", "points", "balance_cents", "last_seen"] {
        item.insert(c.into(), n(rng.gen_range(0..10_000_000_000)));
    }
    item.insert(
        "prefs".into(),
        AttributeValue::M(
            [
                ("lang", s("en-GB".into())),
                ("tz", s("Europe/London".into())),
                ("newsletter", AttributeValue::Bool(rng.gen())),
                ("theme", s(words(rng, 1))),
                ("currency", s("EUR".into())),
                ("notes", s(words(rng, 12))),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ),
    );
    item.insert(
        "history".into(),
        AttributeValue::L(
            (0..5)
                .map(|_| {
                    AttributeValue::M(
                        [
                            (
                                "at".to_string(),
                                n(1_732_564_800_000 + rng.gen_range(0..1_000_000)),
                            ),
                            ("action".to_string(), s(words(rng, 2))),
                            ("ref".to_string(), s(alnum(rng, 16))),
                        ]
                        .into(),
                    )
                })
                .collect(),
        ),
    );
    version.stamp_into(&mut item, &Default::default());
    item
}
