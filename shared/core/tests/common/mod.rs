//! Helpers shared by the ferry-core integration tests: a config, item builders, and stream
//! records built the way Lambda delivers them (DynamoDB JSON deserialized into
//! `aws_lambda_events`' `EventRecord`).
#![allow(dead_code)]

use aws_lambda_events::event::dynamodb::EventRecord;
use ferry_core::{AttributeValue, Config, Item, Version};
use serde_json::{json, Value};

pub const LOCAL: &str = "r1";
pub const FOREIGN: &str = "r2";

/// The local region `r1`, partition key `pk`, default attribute names, one destination.
pub fn config() -> Config {
    let mut c = Config::new(LOCAL, "pk");
    c.destinations = vec![FOREIGN.to_string()];
    c.validate().expect("the test config is valid");
    c
}

pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

pub fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn item(pairs: &[(&str, AttributeValue)]) -> Item {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub fn key(pk: &str) -> Item {
    item(&[("pk", s(pk))])
}

/// `pk` plus the given attributes, stamped with `version` if any.
pub fn image(pk: &str, attrs: &[(&str, AttributeValue)], version: Option<&Version>) -> Item {
    let mut i = key(pk);
    for (k, v) in attrs {
        i.insert(k.to_string(), v.clone());
    }
    if let Some(v) = version {
        v.stamp_into(&mut i, &config().names);
    }
    i
}

/// A helper tombstone image: key, version, marker, TTL.
pub fn tombstone_image(pk: &str, version: &Version, ttl: &str) -> Item {
    let names = config().names;
    let mut i = image(pk, &[], Some(version));
    i.insert(names.tombstone.clone(), AttributeValue::Bool(true));
    i.insert(names.ttl.clone(), n(ttl));
    i
}

pub fn v(ts: u64, origin: &str) -> Version {
    Version::new(ts, origin)
}

/// An item as DynamoDB JSON (serde_dynamo's serializer).
pub fn item_json(item: &Item) -> Value {
    serde_json::to_value(serde_dynamo::Item::from(item.clone())).expect("item serializes")
}

/// Who made the change: `None` for an application, or `(type, principalId)`.
pub type Identity<'a> = Option<(&'a str, &'a str)>;

pub const TTL_SERVICE: Identity<'static> = Some(("Service", "dynamodb.amazonaws.com"));

/// A stream record as Lambda delivers it (the JSON of a DynamoDB stream event record).
pub fn event_json(
    name: &str,
    keys: &Item,
    old: Option<&Item>,
    new: Option<&Item>,
    identity: Identity<'_>,
    created_s: f64,
) -> Value {
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": created_s,
        "Keys": item_json(keys),
        "SequenceNumber": "4421584500000000017450439091",
        "SizeBytes": 26,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    });
    if let Some(old) = old {
        dynamodb["OldImage"] = item_json(old);
    }
    if let Some(new) = new {
        dynamodb["NewImage"] = item_json(new);
    }
    let mut record = json!({
        "eventID": "c81e728d9d4c2f636f067f89cc14862c",
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024-01-01T00:00:00.000",
        "dynamodb": dynamodb,
    });
    if let Some((type_, principal)) = identity {
        record["userIdentity"] = json!({ "type": type_, "principalId": principal });
    }
    record
}

pub fn event(
    name: &str,
    keys: &Item,
    old: Option<&Item>,
    new: Option<&Item>,
    identity: Identity<'_>,
) -> EventRecord {
    serde_json::from_value(event_json(name, keys, old, new, identity, 1_700_000_000.0))
        .expect("a Lambda-shaped stream record deserializes")
}
