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
