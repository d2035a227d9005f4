//! The change record: what travels on a buffer from a source region to a destination.

use crate::item::{Item, ItemKey};
use crate::version::Version;

/// One versioned item state, ready to be applied anywhere with last-writer-wins.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeRecord {
    /// The primary key attributes.
    pub key: Item,
    /// The full new image, version attributes included. For a tombstone it is the tombstone item
    /// (key, version, marker, TTL): applying it is a put like any other, which is what lets a
    /// delete win or lose by version.
    pub image: Item,
    /// The image is a tombstone (the key reads as absent).
    pub tombstone: bool,
    pub version: Version,
    /// The region whose stream produced the record (also the buffer's source).
    pub source_region: String,
    /// When the source write happened (the stream record's creation time), in ms since the epoch:
    /// replication lag is measured from here.
    pub written_at_ms: u64,
}

impl ChangeRecord {
    pub fn item_key(&self) -> ItemKey {
        ItemKey::of(&self.key)
    }

    /// Encoded size in bytes, as it sits inside a buffer message before compression.
    pub fn encoded_len(&self) -> usize {
        let mut out = Vec::new();
        crate::codec::put_record(&mut out, self);
        out.len()
    }
}

/// Why a stored item cannot be re-applied elsewhere.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoredItemError {
    #[error("item lacks key attribute `{0}`")]
    MissingKey(String),
    #[error(transparent)]
    Version(#[from] crate::version::VersionError),
}

impl ChangeRecord {
    /// The record that re-applies a stored item in another region (backfill, verify's repair):
    /// its image and version as stored, a tombstone staying a tombstone. `Ok(None)` for an
    /// unversioned item: it must be stamped first (the contract's bootstrap pass).
    pub fn from_stored(
        item: &Item,
        source_region: &str,
        config: &crate::config::Config,
    ) -> Result<Option<ChangeRecord>, StoredItemError> {
        let Some(version) = Version::of(item, &config.names)? else {
            return Ok(None);
        };
        let key = crate::item::key_of(item, &config.key).map_err(StoredItemError::MissingKey)?;
        Ok(Some(ChangeRecord {
            key,
            image: item.clone(),
            tombstone: config.is_tombstone(item),
            written_at_ms: version.ts_ms,
            version,
            source_region: source_region.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::item::AttributeValue;

    #[test]
    fn from_stored_needs_a_version_and_a_key() {
        let config = Config::new("r1", "pk");
        let mut item: Item = [("pk".to_string(), AttributeValue::S("a".into()))].into();
        assert_eq!(ChangeRecord::from_stored(&item, "r1", &config), Ok(None));
        Version::new(5, "r2").stamp_into(&mut item, &config.names);
        let r = ChangeRecord::from_stored(&item, "r1", &config)
            .unwrap()
            .unwrap();
        assert_eq!(r.version, Version::new(5, "r2"));
        assert_eq!(r.key.len(), 1);
        assert!(!r.tombstone);
        item.remove("pk");
        assert_eq!(
            ChangeRecord::from_stored(&item, "r1", &config),
            Err(StoredItemError::MissingKey("pk".into()))
        );
    }
}
