//! Applying a change record at a destination: the LWW condition and the judgement of a failed one.

use crate::condition::Condition;
use crate::config::{Config, MergeMode};
use crate::item::Item;
use crate::reconcile::expiry_tombstone;
use crate::record::ChangeRecord;
use crate::version::Version;
use std::borrow::Cow;

/// The destination write is a `PutItem` of the record's image under this condition:
/// `attribute_not_exists(pk) OR ts < :ts OR (ts = :ts AND origin < :origin)`.
/// An unversioned stored item fails it (a comparison with a missing attribute is false).
pub fn apply_condition(record: &ChangeRecord, config: &Config) -> Condition {
    let n = &config.names;
    Condition::Or(vec![
        Condition::NotExists(config.key.partition.clone()),
        Condition::LessThan(n.ts.clone(), record.version.ts_value()),
        Condition::And(vec![
            Condition::Equals(n.ts.clone(), record.version.ts_value()),
            Condition::LessThan(n.origin.clone(), record.version.origin_value()),
        ]),
    ])
}

/// The image a destination stores for `record`: the record's own — or, for an item-mode version
/// whose TTL is already due when it arrives, the local tombstone its expiry leaves in every
/// region ([`crate::reconcile::expiry_tombstone`]). Written as an item, it would be removed by
/// the TTL a moment later, and a record that enqueue handles in between would find the key
/// empty and take the expiry for a delete.
pub fn image_to_store<'a>(record: &'a ChangeRecord, now_ms: u64, config: &Config) -> Cow<'a, Item> {
    let expires = config.merge_mode == MergeMode::Item
        && !record.tombstone
        && config.ttl_due(&record.image, now_ms);
    if expires {
        Cow::Owned(expiry_tombstone(&record.key, &record.version, config))
    } else {
        Cow::Borrowed(&record.image)
    }
}

/// What a failed apply condition means, from the item DynamoDB returned (`ALL_OLD`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// The stored version is the record's own or newer from the same origin: done.
    Stale { stored: Version },
    /// A newer version from another region won: done, and logged with both versions.
    Conflict { winner: Version, loser: Version },
    /// Not done; retry later.
    Pending(PendingReason),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingReason {
    /// A local write whose stamp has not happened yet: never judged against it.
    Unversioned,
    /// The stored item carries a version Ferry cannot read.
    InvalidStoredVersion(String),
    /// The stored item carries attribute mode's version map instead of an item version: the
    /// destination runs the other merge mode. A configuration error: the drain stops.
    OtherMode,
    /// The condition failed yet nothing newer is stored (the item vanished or was older in
    /// between): try again.
    Raced,
}

impl Judgement {
    pub fn is_done(&self) -> bool {
        !matches!(self, Judgement::Pending(_))
    }
}

pub fn judge(record: &ChangeRecord, stored: Option<&Item>, config: &Config) -> Judgement {
    let Some(stored) = stored else {
        return Judgement::Pending(PendingReason::Raced);
    };
    match Version::of(stored, &config.names) {
        Err(e) => Judgement::Pending(PendingReason::InvalidStoredVersion(e.to_string())),
        Ok(None) if stored.contains_key(&config.names.versions) => {
            Judgement::Pending(PendingReason::OtherMode)
        }
        Ok(None) => Judgement::Pending(PendingReason::Unversioned),
        Ok(Some(v)) if v < record.version => Judgement::Pending(PendingReason::Raced),
        Ok(Some(v)) if v != record.version && v.origin != record.version.origin => {
            Judgement::Conflict {
                winner: v,
                loser: record.version.clone(),
            }
        }
        Ok(Some(v)) => Judgement::Stale { stored: v },
    }
}
