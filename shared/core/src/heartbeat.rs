//! The end-to-end heartbeat: every region writes one sentinel item into its own table every
//! minute, the ordinary pipeline replicates it (stream → enqueue → buffer → drain), and each
//! drain reports the sentinel's age when it applies it, per pair, as `ReplicationLatency`.
//! A pipeline that stops anywhere stops that metric, and its alarm treats missing data as
//! breaching (`docs/operations.md#replication-latency`).
//!
//! The sentinel is written unstamped, like any application write: enqueue stamps it in either
//! merge mode, so the heartbeat also proves the stamping path. Its key is reserved per region
//! and per key type ([`sentinel_key`]); it carries one attribute, [`MARKER`], the writer's clock
//! in ms. Applications hide it with `attribute_not_exists(ferry_heartbeat)` in a filter
//! expression (or by skipping the reserved key values).

use crate::config::{Config, ConfigError, KeySchema};
use crate::item::{AttributeValue, Item};
use crate::record::ChangeRecord;

/// The sentinel's one attribute besides its key: when the writer wrote it (ms since the epoch).
pub const MARKER: &str = "ferry_heartbeat";

/// The reserved string (and byte) prefix of a sentinel key; the region follows it.
pub const KEY_PREFIX: &str = "~ferry~heartbeat~";

/// The integer part of a sentinel's number key; the fraction encodes the region. A number no
/// application derives from a count or a time (2^53 + 1 is not even a double).
const NUMBER_KEY_INTEGER: &str = "-9007199254740993";

/// A key attribute's DynamoDB type, as the table's attribute definitions declare it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyType {
    #[default]
    S,
    N,
    B,
}

impl KeyType {
    /// Parses `S`, `N` or `B` (empty: `S`).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        match text.trim() {
            "" | "S" => Ok(KeyType::S),
            "N" => Ok(KeyType::N),
            "B" => Ok(KeyType::B),
            other => Err(ConfigError::BadKeyType(other.into())),
        }
    }

    fn of(value: &AttributeValue) -> Option<Self> {
        match value {
            AttributeValue::S(_) => Some(KeyType::S),
            AttributeValue::N(_) => Some(KeyType::N),
            AttributeValue::B(_) => Some(KeyType::B),
            _ => None,
        }
    }
}

/// The types of the table's partition and sort key (the sort key's is ignored without one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyTypes {
    pub partition: KeyType,
    pub sort: KeyType,
}

/// The sentinel's value for one key attribute of type `t`, reserved for `region`.
fn reserved_value(t: KeyType, region: &str) -> AttributeValue {
    match t {
        KeyType::S => AttributeValue::S(format!("{KEY_PREFIX}{region}")),
        // Already in DynamoDB's canonical form (no exponent, no leading or trailing zero), so
        // it reads back exactly as written; 34 significant digits of the 38 allowed.
        KeyType::N => AttributeValue::N(format!(
            "{NUMBER_KEY_INTEGER}.{:016}1",
            fnv1a(region) % 10_000_000_000_000_000
        )),
        KeyType::B => AttributeValue::B(format!("{KEY_PREFIX}{region}").into_bytes()),
    }
}

/// FNV-1a (64 bit): a fixed, dependency-free hash, the same in every build and region.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The key of `region`'s sentinel in a table with this schema and these key types.
pub fn sentinel_key(schema: &KeySchema, types: KeyTypes, region: &str) -> Item {
    let mut key = Item::with_capacity(2);
    key.insert(
        schema.partition.clone(),
        reserved_value(types.partition, region),
    );
    if let Some(sort) = &schema.sort {
        key.insert(sort.clone(), reserved_value(types.sort, region));
    }
    key
}

/// The item `region`'s heartbeat writer puts at `now_ms`: the sentinel key and [`MARKER`],
/// nothing else (no version: enqueue stamps it like an application's write).
pub fn sentinel(schema: &KeySchema, types: KeyTypes, region: &str, now_ms: u64) -> Item {
    let mut item = sentinel_key(schema, types, region);
    item.insert(MARKER.into(), AttributeValue::N(now_ms.to_string()));
    item
}

/// Whether `key` is `region`'s sentinel key (its types read off the key's own values).
pub fn is_sentinel_key(schema: &KeySchema, key: &Item, region: &str) -> bool {
    let type_of = |name: &str| key.get(name).and_then(KeyType::of);
    let Some(partition) = type_of(&schema.partition) else {
        return false;
    };
    let sort = match &schema.sort {
        None => KeyType::S,
        Some(name) => match type_of(name) {
            Some(t) => t,
            None => return false,
        },
    };
    key.len() == schema.names().count()
        && *key == sentinel_key(schema, KeyTypes { partition, sort }, region)
}

/// Whether the item is the sentinel of one of `regions` (the key decides; the marker is
/// not required, so a tombstone of a deleted sentinel counts too).
pub fn is_sentinel_of_any<'a>(
    schema: &KeySchema,
    item: &Item,
    regions: impl IntoIterator<Item = &'a str>,
) -> bool {
    match crate::item::key_of(item, schema) {
        Ok(key) => regions
            .into_iter()
            .any(|r| is_sentinel_key(schema, &key, r)),
        Err(_) => false,
    }
}

/// The heartbeat's age when a drain applies `record` at `now_ms`: `Some` only for the record
/// source region's own live sentinel carrying a readable [`MARKER`]. The writer's clock against
/// the drain's: skew between them shifts the figure by the skew (never below 0).
pub fn age_ms(config: &Config, record: &ChangeRecord, now_ms: u64) -> Option<u64> {
    if record.tombstone || !is_sentinel_key(&config.key, &record.key, &record.source_region) {
        return None;
    }
    match record.image.get(MARKER) {
        Some(AttributeValue::N(written)) => written
            .parse::<u64>()
            .ok()
            .map(|w| now_ms.saturating_sub(w)),
        _ => None,
    }
}
