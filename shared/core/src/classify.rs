//! `classify`: what enqueue does with one stream record (the contract's cases 1–4).

use crate::config::{Config, ItemFilter, MergeMode};
use crate::item::{AttributeValue, Item};
use crate::merge::{MergeError, StampHint};
use crate::record::ChangeRecord;
use crate::version::{Version, VersionError};

// Reading a stream record (`aws_lambda_events`' `EventRecord`) and deciding its case: behind the
// `stream` feature, which applications linking ferry-client do not need.
#[cfg(feature = "stream")]
mod stream;
#[cfg(feature = "stream")]
pub use stream::{classify, is_ttl_removal, ClassifyInput};

/// The decision for one stream record.
#[derive(Clone, Debug, PartialEq)]
pub enum Classified {
    /// Case 1: written here by a drain (a foreign version that this write set). The loop guard.
    ReplicatedIn,
    /// Case 2: a local write carrying a new local version: send it to every destination.
    Forward(ChangeRecord),
    /// Case 3: the table's TTL removed the item (or this is the local tombstone it left, see
    /// [`Hint::expired`]); every region expires its own copy.
    TtlExpiry,
    /// The item filter excludes this key.
    Filtered,
    /// Case 4: a local change that cannot be forwarded as it is; the record is a hint to make the
    /// key's current item carry a version above everything the record saw ([`crate::reconcile`]).
    Reconcile(Hint),
    /// Attribute mode's case 4: a local change without new entries; the attributes it changed
    /// get stamped ([`crate::merge::stamp_delta`]).
    StampAttributes(StampHint),
}

/// What a case-4 record saw, which is all `reconcile` needs besides the current item.
#[derive(Clone, Debug, PartialEq)]
pub struct Hint {
    pub key: Item,
    /// The newest version in the old and new images.
    pub seen: Option<Version>,
    /// The new image's version (`None` for a delete or an unstamped write).
    pub new_version: Option<Version>,
    /// Every non-version attribute that differs between the old and new images, with the new
    /// image's value (`None`: the write removed it). Empty for a delete.
    pub changed: Vec<(String, Option<AttributeValue>)>,
    /// The TTL value of a tombstone in the old or new image: a stamp that turns an updated
    /// tombstone back into an item removes the TTL only if it still holds this value.
    pub tombstone_ttl: Option<AttributeValue>,
    /// The record is the TTL process removing an item at this version: the key gets a local
    /// tombstone at it, so that no older record recreates the item here.
    pub expired: Option<Version>,
    /// The record is a drain's write over an application's write that was not stamped yet.
    pub clobbered: Option<Box<Clobber>>,
    /// What the record did to the key: deleted it, or wrote an image (with its TTL).
    pub wrote: Wrote,
}

/// What a case-4 record did to its key.
#[derive(Clone, Debug, PartialEq)]
pub enum Wrote {
    /// Deleted it (an application's delete: the TTL's are [`Hint::expired`]).
    Delete,
    /// Wrote an image, whose TTL attribute (if any) is `ttl`: a write found emptied since was
    /// removed by a later record, unless its own TTL may have removed it.
    Image { ttl: Option<AttributeValue> },
}

/// A drain wrote a replicated version over an application's write that carried a version it had
/// read (unsealed: not stamped yet). The application's write is the later one where it was
/// made; like an unversioned write, which a drain waits for, it must not be lost to an older
/// concurrent version: enqueue puts it back above the drain's ([`crate::reconcile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Clobber {
    /// The application's write (the record's old image).
    pub written: Item,
    /// What the drain wrote over it (the record's new image).
    pub by: Item,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClassifyError {
    #[error("sequence {sequence}: key attribute `{attribute}` is missing")]
    MissingKey { sequence: String, attribute: String },
    #[error("sequence {sequence}, key {key}: {source}")]
    BadVersion {
        sequence: String,
        key: String,
        source: VersionError,
    },
    #[error("sequence {sequence}, key {key}: {source}")]
    BadVersionMap {
        sequence: String,
        key: String,
        source: MergeError,
    },
    /// The application wrote an attribute under the name of the other merge mode's version (a
    /// value that mode never writes): that record's own fault, not a configuration error.
    #[error("sequence {sequence}, key {key}: the application wrote `{attribute}`, a name Ferry reserves ({reason}); rename the attribute or set FERRY_ATTR_* to another name in every region")]
    ReservedAttribute {
        sequence: String,
        key: String,
        attribute: String,
        reason: String,
    },
    /// The table's stream carries less than both images: a configuration error that no record
    /// of it can be replicated from (the view of an existing stream cannot be changed).
    #[error("sequence {sequence}: the stream's view is {view}; Ferry needs NEW_AND_OLD_IMAGES (enable a new stream with both images)")]
    StreamView { sequence: String, view: String },
    #[error("sequence {sequence}: unknown event name `{name}`")]
    UnknownEvent { sequence: String, name: String },
    /// The write set what only the other merge mode writes: a region, drain or helper runs the
    /// other mode against this table. A configuration error, not a bad record: the caller must
    /// stop (enqueue fails the batch from here) rather than skip it.
    #[error("sequence {sequence}, key {key}: merge mode mismatch: this region runs `{local}` mode but the write {what}; FERRY_MERGE_MODE must be the same in every region and in the helper")]
    ModeMismatch {
        sequence: String,
        key: String,
        local: MergeMode,
        what: String,
    },
    #[error("sequence {sequence}, key {key}: the {image} image is missing; the stream must be NEW_AND_OLD_IMAGES")]
    MissingImage {
        sequence: String,
        key: String,
        image: &'static str,
    },
}

pub(crate) fn admits(config: &Config, keys: &Item, new: &Item, old: &Item) -> bool {
    // The heartbeat must cross every pipeline, whatever the filter lets through.
    if crate::heartbeat::is_sentinel_key(&config.key, keys, &config.local_region) {
        return true;
    }
    match &config.filter {
        // Tombstones carry no application attribute: they follow the item they delete.
        ItemFilter::HasAttribute(_) if config.is_tombstone(new) || config.is_tombstone(old) => true,
        ItemFilter::HasAttribute(name) => {
            new.contains_key(name) || old.contains_key(name) || is_stamp(old, new, config)
        }
        filter => filter.admits(keys, &config.key, new, old),
    }
}

/// A write that changed only Ferry's attributes: enqueue's stamp of an earlier write. Enqueue
/// stamps only writes the filter admitted, so the stamp's record carries on what that write
/// started (a plain `REMOVE` of the filter attribute replicates the removal).
fn is_stamp(old: &Item, new: &Item, config: &Config) -> bool {
    let local_version = Version::of(new, &config.names)
        .ok()
        .flatten()
        .is_some_and(|v| v.origin == config.local_region);
    !old.is_empty() && local_version && config.application_view(old) == config.application_view(new)
}

/// Attributes (but those `skip` names) whose value differs between `old` and `new`, with the new
/// value (`None`: removed), sorted by name.
pub(crate) fn diff_by(
    old: &Item,
    new: &Item,
    skip: impl Fn(&str) -> bool,
) -> Vec<(String, Option<AttributeValue>)> {
    let mut changed: Vec<(String, Option<AttributeValue>)> = new
        .iter()
        .filter(|(n, v)| !skip(n) && old.get(*n) != Some(*v))
        .map(|(n, v)| (n.clone(), Some(v.clone())))
        .chain(
            old.keys()
                .filter(|n| !skip(n) && !new.contains_key(*n))
                .map(|n| (n.clone(), None)),
        )
        .collect();
    changed.sort_by(|a, b| a.0.cmp(&b.0));
    changed
}
