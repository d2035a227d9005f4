//! `reconcile`: the contract's case-4 table as one pure function.

use crate::classify::{Clobber, Hint, Wrote};
use crate::condition::Condition;
use crate::config::Config;
use crate::digest::{
    expiry_seal_of, gap_seal_of, is_expiry_tombstone, is_gap_tombstone, is_sealed, seal, seal_of,
};
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
    Stamp(Stamp),
    /// `PutItem` of an application's write that a drain wrote over before it was stamped, back
    /// above the drain's version.
    Restore {
        item: Item,
        version: Version,
        condition: Condition,
    },
    /// `PutItem` of a tombstone.
    Tombstone {
        item: Item,
        version: Version,
        condition: Condition,
    },
}

/// A stamp ([`Action::Stamp`]): what its `UpdateItem` sets and removes, and its condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Stamp {
    pub version: Version,
    pub remove: Vec<String>,
    /// A tombstone that stays one moves its TTL with its version ([`tombstone_ttl`]), so
    /// the TTL of every tombstone follows from its version.
    pub ttl: Option<AttributeValue>,
    /// The seal of the item as the stamp leaves it (read plus the stamp's changes): right as
    /// long as the item is as read, which the condition pins as far as it can; a stamp that
    /// lands on changed content leaves an unsealed item, which is stamped again.
    pub sum: AttributeValue,
    pub condition: Condition,
}

/// The case-4 table: (what the record saw, the current item or its absence, now) → the write.
/// Rows are tried in order; the first that matches applies.
pub fn reconcile(
    hint: &Hint,
    current: Option<&Item>,
    now_ms: u64,
    config: &Config,
) -> Result<Action, VersionError> {
    let floor_ts = hint
        .seen
        .as_ref()
        .map_or(now_ms, |s| now_ms.max(s.ts_ms.saturating_add(1)));
    let floor = Version::new(floor_ts, config.local_region.clone());
    let pk = &config.key.partition;
    if let Some(expired) = &hint.expired {
        return expiry(hint, expired, current, config);
    }
    if let Some(clobber) = &hint.clobbered {
        return restore(clobber, current, floor, now_ms, config);
    }
    let Some(current) = current else {
        return Ok(deleted_since(hint, floor, now_ms, config));
    };
    let Some(cv) = Version::of(current, &config.names)? else {
        // A local write not stamped yet (this one or a later one).
        let condition = [
            vec![
                Condition::Exists(pk.clone()),
                Condition::NotExists(config.names.ts.clone()),
                seal_as_read(current, config),
            ],
            as_read(hint, current, config),
        ]
        .concat();
        return Ok(stamp(hint, current, None, floor, condition, config));
    };
    Ok(Versioned {
        hint,
        current,
        cv,
        floor,
        config,
    }
    .row(now_ms))
}

/// The key is absent: deleted (since). A tombstone above what was seen. Where the delete is this
/// record's own, it came before every write whose record follows, so a drain's write over one of
/// them that enqueue puts back ([`restore`]) goes over it: it is sealed as Ferry's gap tombstone.
fn deleted_since(hint: &Hint, floor: Version, now_ms: u64, config: &Config) -> Action {
    let mut item = tombstone_item(&hint.key, &floor, now_ms, config);
    if hint.wrote == Wrote::Delete {
        item.insert(config.names.sum.clone(), gap_seal_of(&item, &config.names));
    }
    Action::Tombstone {
        item,
        version: floor,
        condition: Condition::NotExists(config.key.partition.clone()),
    }
}

/// The rows for a current item that carries a version.
struct Versioned<'a> {
    hint: &'a Hint,
    current: &'a Item,
    cv: Version,
    floor: Version,
    config: &'a Config,
}

impl Versioned<'_> {
    fn row(self, now_ms: u64) -> Action {
        let (hint, current, cv, config) = (self.hint, self.current, &self.cv, self.config);
        let local = &config.local_region;
        let seen_at_least = hint.seen.as_ref().is_some_and(|s| *cv <= *s);
        if !is_sealed(current, &config.names) {
            // An application wrote a version it read (kept by an update, or put back) over
            // other content: a local write that is not stamped yet (this record's, or a later
            // one's).
            let condition = [self.pinned(), as_read(hint, current, config)].concat();
            return self.stamp(condition);
        }
        if hint.new_version.as_ref() == Some(cv) {
            return self.kept_version();
        }
        if cv.origin != *local && seen_at_least {
            // An older copy that a drain put into the gap a delete left. (Or one a drain wrote
            // over an application's stale write-back, which carried a version below what it
            // replaced: the drain's own record then puts the write back over this tombstone,
            // [`Clobber`].)
            let condition = [self.pinned(), content_as_read(current, config)].concat();
            let mut item = tombstone_item(&hint.key, &self.floor, now_ms, config);
            item.insert(config.names.sum.clone(), gap_seal_of(&item, &config.names));
            return Action::Tombstone {
                item,
                version: self.floor,
                condition: Condition::and(condition),
            };
        }
        if cv.origin == *local && seen_at_least {
            // A local state stamped below what this record saw: lift it.
            return self.stamp(self.pinned());
        }
        if cv.origin == *local
            && config.is_tombstone(current)
            && config.has_application_attributes(current)
        {
            // A tombstone the application updated, stamped with its marker: an earlier record's
            // stamp read the tombstone before the update and its condition (the version, which
            // the update kept) could not see the new attributes. This record is the update's own
            // (or a later one): make it an item again, above its version.
            let above = Version::new(cv.ts_ms.saturating_add(1), local.clone());
            let version = self.floor.clone().max(above);
            let condition = self.pinned();
            return stamp(hint, current, Some(cv), version, condition, config);
        }
        // Newer than anything seen: that write has its own record.
        Action::Nothing
    }

    /// The current item holds the record's own version.
    fn kept_version(&self) -> Action {
        let (hint, current) = (self.hint, self.current);
        if self.cv.origin == self.config.local_region {
            // The write is still there: give it a version above what it replaced.
            return self.stamp(self.pinned());
        }
        if still_holds(current, &hint.changed) {
            // A foreign version kept by a local write whose values are still there.
            let mut condition = self.pinned();
            condition.extend(hint.changed.iter().map(|(name, value)| match value {
                Some(v) => Condition::Equals(name.clone(), v.clone()),
                None => Condition::NotExists(name.clone()),
            }));
            return self.stamp(condition);
        }
        // A later update (its own record), or an older copy in a delete's gap.
        Action::Nothing
    }

    /// The item as read: its version and its seal (or the absence of one).
    fn pinned(&self) -> Vec<Condition> {
        let names = &self.config.names;
        vec![
            Condition::Equals(names.ts.clone(), self.cv.ts_value()),
            Condition::Equals(names.origin.clone(), self.cv.origin_value()),
            seal_as_read(self.current, self.config),
        ]
    }

    fn stamp(&self, condition: Vec<Condition>) -> Action {
        let floor = self.floor.clone();
        stamp(
            self.hint,
            self.current,
            Some(&self.cv),
            floor,
            condition,
            self.config,
        )
    }
}

/// A drain's write over an unstamped application write: while the key still holds what the
/// drain wrote (or its content lifted to a local version, or a tombstone), put the application's
/// write back above it. Anything else is a newer write with its own record.
fn restore(
    clobber: &Clobber,
    current: Option<&Item>,
    floor: Version,
    now_ms: u64,
    config: &Config,
) -> Result<Action, VersionError> {
    let names = &config.names;
    let Some(by) = Version::of(&clobber.by, names)? else {
        return Ok(Action::Nothing);
    };
    let pinned = match current {
        None if config.ttl_due(&clobber.by, now_ms)
            && crate::classify::admits(
                config,
                &clobber.written,
                &clobber.written,
                &Item::new(),
            ) =>
        {
            let item = restored(clobber, floor.clone(), config);
            let condition = Condition::NotExists(config.key.partition.clone());
            return Ok(Action::Restore {
                item,
                version: floor,
                condition,
            });
        }
        Some(current) if is_sealed(current, names) => current,
        _ => return Ok(Action::Nothing),
    };
    let Some(cv) = Version::of(pinned, names)? else {
        return Ok(Action::Nothing);
    };
    // Still the drain's write, or the drain's content lifted to a local version — or gone
    // since by the TTL, or under the tombstone the application write's own record left here,
    // taking the drain's write for a copy in a delete's gap ([`reconcile`]'s foreign row). The
    // drain's version never saw the application's write. An application's delete since stands.
    // (A tombstone since is not the drain's lifted: it reads the same as an application's delete.)
    let lifted = !config.is_tombstone(pinned)
        && config.application_view(pinned) == config.application_view(&clobber.by);
    let over_the_drain = cv == by || (cv > by && lifted);
    let gap = is_gap_tombstone(pinned, names) && config.is_tombstone(pinned);
    let gone_since =
        (gap && cv.origin == config.local_region) || is_expiry_tombstone(pinned, names);
    if !over_the_drain && !gone_since {
        return Ok(Action::Nothing);
    }
    let current = pinned;
    if !crate::classify::admits(config, current, &clobber.written, current) {
        // Put back, it would not replicate: the regions would differ.
        return Ok(Action::Nothing);
    }
    let version = floor.max(Version::new(
        cv.ts_ms.saturating_add(1),
        config.local_region.clone(),
    ));
    let item = restored(clobber, version.clone(), config);
    let mut condition = vec![
        Condition::Equals(names.ts.clone(), cv.ts_value()),
        Condition::Equals(names.origin.clone(), cv.origin_value()),
    ];
    condition.push(seal_as_read(current, config));
    condition.extend(content_as_read(current, config));
    Ok(Action::Restore {
        item,
        version,
        condition: Condition::And(condition),
    })
}

/// The application's write as [`restore`] puts it back: at `version`, sealed, and an item again
/// if it was an update of a tombstone (as its stamp would have made it).
fn restored(clobber: &Clobber, version: Version, config: &Config) -> Item {
    let names = &config.names;
    let mut item = clobber.written.clone();
    if config.is_tombstone(&item) && config.has_application_attributes(&item) {
        item.remove(&names.tombstone);
        let carried = Version::of(&item, names).ok().flatten();
        if carried.is_some_and(|v| item.get(&names.ttl) == Some(&tombstone_ttl(&v, 0, config))) {
            item.remove(&names.ttl);
        }
    }
    version.stamp_into(&mut item, names);
    seal(&mut item, names);
    item
}

/// The item's seal as read (or its absence): what every write-back pins besides the version.
fn seal_as_read(current: &Item, config: &Config) -> Condition {
    let sum = &config.names.sum;
    match current.get(sum) {
        Some(value) => Condition::Equals(sum.clone(), value.clone()),
        None => Condition::NotExists(sum.clone()),
    }
}

/// An expiry's row: a local tombstone at the expired version where the key is empty, where a
/// drain has put an older (or the same) version into the gap the expiry left, or where an older
/// tombstone stands (every region that expires the same versions ends with the same tombstone);
/// anything else is a newer write with its own record.
fn expiry(
    hint: &Hint,
    expired: &Version,
    current: Option<&Item>,
    config: &Config,
) -> Result<Action, VersionError> {
    let names = &config.names;
    let condition = match current {
        None => Condition::NotExists(config.key.partition.clone()),
        Some(current) => {
            // A drain's older copy, or an older tombstone (an earlier expiry's, or one decided
            // before the expired version came that landed after it went).
            let older_copy = is_sealed(current, names)
                && Version::of(current, names)?.is_some_and(|cv| {
                    cv <= *expired
                        && (cv.origin != config.local_region || config.is_tombstone(current))
                });
            let (Some(sum), true) = (current.get(&names.sum), older_copy) else {
                return Ok(Action::Nothing);
            };
            let cv = Version::of(current, names)?.unwrap_or_else(|| expired.clone());
            let pins = vec![
                Condition::Equals(names.ts.clone(), cv.ts_value()),
                Condition::Equals(names.origin.clone(), cv.origin_value()),
                Condition::Equals(names.sum.clone(), sum.clone()),
            ];
            Condition::And([pins, content_as_read(current, config)].concat())
        }
    };
    Ok(Action::Tombstone {
        item: expiry_tombstone(&hint.key, expired, config),
        version: expired.clone(),
        condition,
    })
}

/// At most this many attributes pin an unstamped item as read ([`as_read`]).
const PINNED_ATTRIBUTES: usize = 16;

/// Conditions that an unstamped item is still the one read: an unversioned or unsealed item has
/// no version of its own to pin, so a stamp decided now could land, seconds later, on a later
/// write and version it below what came in between. Pinned: the attributes the record's write
/// changed (or, for a delete's record, the item's own), as read, up to [`PINNED_ATTRIBUTES`].
/// A later write that changed none of them is caught by its seal instead: the stamp seals the
/// content as read, so it leaves such an item unsealed, and it is stamped again.
fn as_read(hint: &Hint, current: &Item, config: &Config) -> Vec<Condition> {
    if hint.changed.is_empty() {
        return content_as_read(current, config);
    }
    pinned(current, hint.changed.iter().map(|(n, _)| n).collect())
}

/// Conditions that a sealed item's content is still the one read. Its version and seal do not
/// tell it from an application's write-back that carried both back with new values (the seal
/// only tells once read): a tombstone, restore or expiry decided on the read must not land on
/// that write. Pinned: the application's attributes, as read, up to [`PINNED_ATTRIBUTES`].
fn content_as_read(current: &Item, config: &Config) -> Vec<Condition> {
    let names = current
        .keys()
        .filter(|n| !config.key.is_key(n) && !config.names.is_ferry_attribute(n))
        .collect();
    pinned(current, names)
}

fn pinned(current: &Item, mut names: Vec<&String>) -> Vec<Condition> {
    names.sort();
    names
        .into_iter()
        .take(PINNED_ATTRIBUTES)
        .map(|n| match current.get(n) {
            Some(v) => Condition::Equals(n.clone(), v.clone()),
            None => Condition::NotExists(n.clone()),
        })
        .collect()
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
    let mut after = current.clone();
    version.stamp_into(&mut after, names);
    for name in &remove {
        after.remove(name);
    }
    if let Some(ttl) = &ttl {
        after.insert(names.ttl.clone(), ttl.clone());
    }
    // An expiry's tombstone lifted stays Ferry's, not an application's delete: a drain's write
    // it replaced may still be put back over it ([`restore`]).
    let sum = if is_expiry_tombstone(current, names) && config.is_tombstone(&after) {
        gap_seal_of(&after, names)
    } else {
        seal_of(&after, names)
    };
    Action::Stamp(Stamp {
        sum,
        version,
        remove,
        ttl,
        condition: Condition::and(condition),
    })
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
    seal(&mut item, &config.names);
    item
}

/// The local tombstone of an expiry: a tombstone at the expired version, sealed as an expiry's
/// so that it is never forwarded (an expiry costs no replicated write). Its TTL follows from the
/// version alone, so every region that expires the item leaves the same tombstone; it outlives
/// every older record, which all left their regions within the stream's day of the version.
pub fn expiry_tombstone(key: &Item, version: &Version, config: &Config) -> Item {
    let mut item = tombstone_item(key, version, 0, config);
    item.remove(&config.names.sum);
    let sum = expiry_seal_of(&item, &config.names);
    item.insert(config.names.sum.clone(), sum);
    item
}

/// A tombstone's TTL: the lifetime after its version's time, or after now if the version is
/// older (a tombstone must outlive every record that can still arrive). Tying it to the version
/// lets a stamp that revives an updated tombstone tell the tombstone's TTL from one the
/// application set, even when the record it handles saw another tombstone.
pub fn tombstone_ttl(version: &Version, now_ms: u64, config: &Config) -> AttributeValue {
    let from_ms = version.ts_ms.max(now_ms);
    AttributeValue::N(
        (from_ms / 1000)
            .saturating_add(config.tombstone_lifetime_s)
            .to_string(),
    )
}
