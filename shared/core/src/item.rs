//! Items as Ferry sees them: DynamoDB's attribute values exactly as the stream delivers them
//! (numbers stay strings, binaries stay bytes), from `serde_dynamo`.

use crate::codec;
use crate::config::KeySchema;
use std::fmt;

pub use serde_dynamo::AttributeValue;

/// One DynamoDB item (or a key): attribute name → value.
pub type Item = std::collections::HashMap<String, AttributeValue>;

/// A primary key in canonical form (attribute names sorted, values in Ferry's binary encoding):
/// hashable and comparable, so backlogs can be coalesced per key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey(Vec<u8>);

impl ItemKey {
    pub fn of(key: &Item) -> Self {
        let mut out = Vec::with_capacity(64);
        let mut put = |name: &String, value: &AttributeValue| {
            codec::put_str(&mut out, name);
            codec::put_value(&mut out, value);
        };
        let mut entries = key.iter();
        // Keys have one or two attributes: sort those without collecting them.
        match (entries.next(), entries.next(), entries.next()) {
            (None, _, _) => {}
            (Some((n, v)), None, _) => put(n, v),
            (Some(a), Some(b), None) => {
                let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
                put(first.0, first.1);
                put(second.0, second.1);
            }
            _ => {
                let mut names: Vec<(&String, &AttributeValue)> = key.iter().collect();
                names.sort_by(|a, b| a.0.cmp(b.0));
                for (n, v) in names {
                    put(n, v);
                }
            }
        }
        ItemKey(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemKey(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The key attributes of an item, or the name of the first one it lacks.
pub fn key_of(item: &Item, schema: &KeySchema) -> Result<Item, String> {
    let mut key = Item::with_capacity(2);
    for name in schema.names() {
        match item.get(name) {
            Some(v) => {
                key.insert(name.to_string(), v.clone());
            }
            None => return Err(name.to_string()),
        }
    }
    Ok(key)
}

/// A short printable form of a key for logs: `pk=S:user#1, sk=N:7`. Keys are not item values:
/// logging them is how a conflict or a poison record is found again.
pub fn describe_key(key: &Item) -> String {
    let mut names: Vec<&String> = key.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let v = match &key[n] {
                AttributeValue::S(s) => format!("S:{s}"),
                AttributeValue::N(s) => format!("N:{s}"),
                AttributeValue::B(b) => format!("B:{} bytes", b.len()),
                other => format!("{other:?}"),
            };
            format!("{n}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
