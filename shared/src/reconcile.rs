//! `reconcile`: the contract's case-4 table as one pure function.

use crate::classify::Hint;
use crate::condition::Condition;
use crate::config::Config;
use crate::item::{AttributeValue, Item};
use crate::version::{Version, VersionError};

/// What enqueue writes to the local table for a case-4 record. Every write carries the condition
/// "the current item is as read"; when it fails, the `ALL_OLD` item goes back into [`reconcile`].
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing to write: a newer write is there with its own record, or a later record deals
    /// with the key.
    Nothing,
    /// `UpdateItem` that sets only the version (and removes the attributes in `remove`: the
    /// tombstone marker, and its TTL, when the application wrote to a deleted key).
    Stamp {
        version: Version,
        remove: Vec<String>,
        /// A tombstone that stays one moves its TTL with its version ([`tombstone_ttl`]), so
        /// the TTL of every tombstone follows from its version.
        ttl: Option<AttributeValue>,
        condition: Condition,
    },
    /// `PutItem` of a tombstone.
    Tombstone {
        item: Item,
        version: Version,
        condition: Condition,
    },
}

/// The case-4 table: (what the record saw, the current item or its absence, now) → the write.
/// Rows are tried in order; the first that matches applies.
pub fn reconcile(
    hint: &Hint,
    current: Option<&Item>,
    now_ms: u64,
    config: &Config,
) -> Result<Action, VersionError> {
    let local = &config.local_region;
    let floor_ts = hint
        .seen
        .as_ref()
        .map_or(now_ms, |s| now_ms.max(s.ts_ms + 1));
    let floor = Version::new(floor_ts, local.clone());
    let pk = &config.key.partition;

    let Some(current) = current else {
        // Absent: deleted (since). A tombstone above what was seen.
        return Ok(tombstone(
            hint,
            floor,
            Condition::NotExists(pk.clone()),
            now_ms,
            config,
        ));
    };
    let Some(cv) = Version::of(current, &config.names)? else {
        // A local write not stamped yet (this one or a later one).
        return Ok(stamp(
            hint,
            current,
            None,
            floor,
            vec![
                Condition::Exists(pk.clone()),
                Condition::NotExists(config.names.ts.clone()),
            ],
            config,
        ));
    };
    let version_is = |v: &Version| {
        vec![
            Condition::Equals(config.names.ts.clone(), v.ts_value()),
            Condition::Equals(config.names.origin.clone(), v.origin_value()),
        ]
    };
    let seen_at_least = hint.seen.as_ref().is_some_and(|s| cv <= *s);

    if hint.new_version.as_ref() == Some(&cv) {
        if cv.origin == *local {
            // The write is still there: give it a version above what it replaced.
            return Ok(stamp(
                hint,
                current,
                Some(&cv),
                floor,
                version_is(&cv),
                config,
            ));
        }
        if still_holds(current, &hint.changed) {
            // A foreign version kept by a local update whose values are still there.
            let mut condition = version_is(&cv);
            condition.extend(hint.changed.iter().map(|(name, value)| match value {
                Some(v) => Condition::Equals(name.clone(), v.clone()),
                None => Condition::NotExists(name.clone()),
            }));
            return Ok(stamp(hint, current, Some(&cv), floor, condition, config));
        }
        // A later update (its own record), or an older copy in a delete's gap.
        return Ok(Action::Nothing);
    }
    if cv.origin != *local && seen_at_least {
        // An older copy that a drain put into the gap a delete left.
        return Ok(tombstone(
            hint,
            floor,
            Condition::and(version_is(&cv)),
            now_ms,
            config,
        ));
    }
    if cv.origin == *local && seen_at_least {
        // A local state stamped below what this record saw: lift it.
        return Ok(stamp(
            hint,
            current,
            Some(&cv),
            floor,
            version_is(&cv),
            config,
        ));
    }
    if cv.origin == *local
        && config.is_tombstone(current)
        && config.has_application_attributes(current)
    {
        // A tombstone the application updated, stamped with its marker: an earlier record's stamp
        // read the tombstone before the update and its condition (the version, which the update
        // kept) could not see the new attributes. This record is the update's own (or a later
        // one): make it an item again, above its version.
        let version = floor.max(Version::new(cv.ts_ms.saturating_add(1), local.clone()));
        return Ok(stamp(
            hint,
            current,
            Some(&cv),
            version,
            version_is(&cv),
            config,
        ));
    }
    // Newer than anything seen: that write has its own record.
    Ok(Action::Nothing)
}

/// Whether the current item still holds what the write set, compared as DynamoDB's condition
/// will compare it (sets unordered, numbers by value), so the row and its condition agree.
fn still_holds(current: &Item, changed: &[(String, Option<AttributeValue>)]) -> bool {
    changed.iter().all(|(name, value)| {
        let check = match value {
            Some(v) => Condition::Equals(name.clone(), v.clone()),
            None => Condition::NotExists(name.clone()),
        };
        check.holds(Some(current))
    })
}

fn stamp(
    hint: &Hint,
    current: &Item,
    current_version: Option<&Version>,
    version: Version,
    mut condition: Vec<Condition>,
    config: &Config,
) -> Action {
    let names = &config.names;
    let mut remove = Vec::new();
    let mut ttl = None;
    if config.is_tombstone(current) && !config.has_application_attributes(current) {
        // Lifting a tombstone: its TTL follows its new version. Pinned as read, so that a TTL an
        // application set meanwhile is never overwritten (the write fails and is decided again).
        ttl = Some(tombstone_ttl(&version, 0, config));
        condition.push(match current.get(&names.ttl) {
            Some(read) => Condition::Equals(names.ttl.clone(), read.clone()),
            None => Condition::NotExists(names.ttl.clone()),
        });
    } else if config.is_tombstone(current) {
        // The application wrote to a deleted key: it is an item again.
        remove.push(names.tombstone.clone());
        condition.push(Condition::Equals(
            names.tombstone.clone(),
            AttributeValue::Bool(true),
        ));
        // The TTL goes too if it is still the tombstone's own: the one this record saw, or the
        // one the current tombstone was written with (a TTL follows from its version, so this
        // holds when the current item is a later tombstone than the record's).
        let own_ttl = current_version.map(|cv| tombstone_ttl(cv, 0, config));
        if let Some(ttl) = current.get(&names.ttl) {
            if hint.tombstone_ttl.as_ref() == Some(ttl) || own_ttl.as_ref() == Some(ttl) {
                remove.push(names.ttl.clone());
                condition.push(Condition::Equals(names.ttl.clone(), ttl.clone()));
            }
        }
    }
    Action::Stamp {
        version,
        remove,
        ttl,
        condition: Condition::and(condition),
    }
}

fn tombstone(
    hint: &Hint,
    version: Version,
    condition: Condition,
    now_ms: u64,
    config: &Config,
) -> Action {
    Action::Tombstone {
        item: tombstone_item(&hint.key, &version, now_ms, config),
        version,
        condition,
    }
}

/// A tombstone: the key, the version, the marker, and the TTL set to [`tombstone_ttl`].
pub fn tombstone_item(key: &Item, version: &Version, now_ms: u64, config: &Config) -> Item {
    let mut item = key.clone();
    version.stamp_into(&mut item, &config.names);
    item.insert(config.names.tombstone.clone(), AttributeValue::Bool(true));
    item.insert(
        config.names.ttl.clone(),
        tombstone_ttl(version, now_ms, config),
    );
    item
}

/// A tombstone's TTL: the lifetime after its version's time, or after now if the version is
/// older (a tombstone must outlive every record that can still arrive). Tying it to the version
/// lets a stamp that revives an updated tombstone tell the tombstone's TTL from one the
/// application set, even when the record it handles saw another tombstone.
pub fn tombstone_ttl(version: &Version, now_ms: u64, config: &Config) -> AttributeValue {
    let from_ms = version.ts_ms.max(now_ms);
    AttributeValue::N((from_ms / 1000 + config.tombstone_lifetime_s).to_string())
}
