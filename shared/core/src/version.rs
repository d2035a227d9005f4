//! Versions: `(ts_ms, origin)`, totally ordered by time, then by origin as a string.

use crate::config::AttributeNames;
use crate::item::{AttributeValue, Item};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The version of one item state. The derived order is the contract's order: `ts_ms` first,
/// then `origin` compared as a string, so two different versions never tie.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub ts_ms: u64,
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version attribute `{0}` is not a non-negative integer number of milliseconds")]
    BadTimestamp(String),
    #[error("version attribute `{0}` is not a non-empty string")]
    BadOrigin(String),
    #[error("item has `{present}` but not `{missing}`: a version needs both")]
    Half { present: String, missing: String },
}

impl Version {
    pub fn new(ts_ms: u64, origin: impl Into<String>) -> Self {
        Version {
            ts_ms,
            origin: origin.into(),
        }
    }

    /// The version an item carries, `None` when it carries none. A half or malformed version is an
    /// error: it cannot be ordered, and guessing would break convergence.
    pub fn of(item: &Item, names: &AttributeNames) -> Result<Option<Version>, VersionError> {
        let ts = item.get(&names.ts);
        let origin = item.get(&names.origin);
        match (ts, origin) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(VersionError::Half {
                present: names.ts.clone(),
                missing: names.origin.clone(),
            }),
            (None, Some(_)) => Err(VersionError::Half {
                present: names.origin.clone(),
                missing: names.ts.clone(),
            }),
            (Some(ts), Some(origin)) => {
                let ts_ms = match ts {
                    AttributeValue::N(n) => n
                        .parse::<u64>()
                        .map_err(|_| VersionError::BadTimestamp(names.ts.clone()))?,
                    _ => return Err(VersionError::BadTimestamp(names.ts.clone())),
                };
                let origin = match origin {
                    AttributeValue::S(s) if !s.is_empty() => s.clone(),
                    _ => return Err(VersionError::BadOrigin(names.origin.clone())),
                };
                Ok(Some(Version { ts_ms, origin }))
            }
        }
    }

    /// Writes this version's two attributes into an item.
    pub fn stamp_into(&self, item: &mut Item, names: &AttributeNames) {
        item.insert(names.ts.clone(), self.ts_value());
        item.insert(names.origin.clone(), self.origin_value());
    }

    pub fn ts_value(&self) -> AttributeValue {
        AttributeValue::N(self.ts_ms.to_string())
    }

    pub fn origin_value(&self) -> AttributeValue {
        AttributeValue::S(self.origin.clone())
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.ts_ms, self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_time_then_origin() {
        assert!(Version::new(1, "z") < Version::new(2, "a"));
        assert!(Version::new(2, "eu-west-1") < Version::new(2, "us-east-1"));
        assert_eq!(Version::new(2, "a"), Version::new(2, "a"));
    }

    #[test]
    fn reads_and_rejects() {
        let names = AttributeNames::default();
        let mut item = Item::new();
        assert_eq!(Version::of(&item, &names), Ok(None));
        Version::new(17, "r1").stamp_into(&mut item, &names);
        assert_eq!(Version::of(&item, &names), Ok(Some(Version::new(17, "r1"))));
        item.insert(names.ts.clone(), AttributeValue::N("1.5".into()));
        assert!(Version::of(&item, &names).is_err());
        item.remove(&names.ts);
        assert!(matches!(
            Version::of(&item, &names),
            Err(VersionError::Half { .. })
        ));
    }
}
