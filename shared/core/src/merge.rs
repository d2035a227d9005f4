//! Attribute merge mode (`../docs/attribute-merge.md`): every attribute carries its own version in
//! a version map, and replicas merge attribute by attribute (a state-based LWW-map).
//!
//! Pure decisions only: reading an item's state, [`merge`], what enqueue does with a stream
//! record in this mode ([`decide`]), the stamp a local change without versions gets
//! ([`stamp_delta`]), and the conditional `UpdateItem` that merges a state into a stored item
//! ([`plan_merge`]). The adapter (`ferry_aws::merge_apply`) runs the read–merge–write loop.

use crate::codec;
use crate::condition::{values_equal, Condition, Expression};
use crate::config::{Config, MergeMode};
use crate::item::{AttributeValue, Item};
use crate::version::Version;
use std::collections::BTreeMap;

/// A version-map entry is written `"<ts_ms>@<origin>"` (origins are region names: no `@`).
const SEPARATOR: char = '@';

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("version map `{0}` is not a map")]
    NotAMap(String),
    #[error("version map entry for `{name}` is not `<ts_ms>@<origin>`")]
    BadEntry { name: String },
}

/// One item's state in attribute mode.
///
/// Invariant (kept by [`AttrState::normalize`]): every held attribute has an entry, and every
/// entry is newer than the whole-item tombstone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttrState {
    /// The application attributes held (not keys, not Ferry's), each with an entry.
    pub values: BTreeMap<String, AttributeValue>,
    /// Entries of held attributes and of removed ones (attribute tombstones).
    pub versions: BTreeMap<String, Version>,
    /// The whole-item tombstone: the item was deleted at this version.
    pub deleted: Option<Version>,
}

/// An item read as a state: the state, and the application attributes it holds without an entry
/// (local writes not stamped yet), which are not part of the state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Read {
    pub state: AttrState,
    pub unversioned: Vec<String>,
}

impl AttrState {
    /// Reads an item (a stored item or a record's image).
    pub fn read(item: &Item, config: &Config) -> Result<Read, MergeError> {
        let mut state = AttrState::default();
        let pk = &config.key.partition;
        if let Some(map) = item.get(&config.names.versions) {
            let AttributeValue::M(map) = map else {
                return Err(MergeError::NotAMap(config.names.versions.clone()));
            };
            for (name, entry) in map {
                let version = parse_entry(name, entry)?;
                if name == pk {
                    state.deleted = Some(version);
                } else {
                    state.versions.insert(name.clone(), version);
                }
            }
        }
        let mut unversioned = Vec::new();
        for (name, value) in item {
            if config.key.is_key(name) || config.names.is_ferry_attribute(name) {
                continue;
            }
            if state.versions.contains_key(name) {
                state.values.insert(name.clone(), value.clone());
            } else {
                unversioned.push(name.clone());
            }
        }
        unversioned.sort();
        state.normalize();
        Ok(Read { state, unversioned })
    }

    /// Drops what the whole-item tombstone removes: entries not newer than it, with their values.
    pub fn normalize(&mut self) {
        if let Some(d) = &self.deleted {
            self.versions.retain(|_, v| &*v > d);
        }
        let versions = &self.versions;
        self.values.retain(|n, _| versions.contains_key(n));
    }

    /// The newest version in the state (entries and the whole-item tombstone).
    pub fn newest(&self) -> Option<&Version> {
        self.versions.values().chain(self.deleted.iter()).max()
    }

    /// An item is visible while it holds an application attribute.
    pub fn is_visible(&self) -> bool {
        !self.values.is_empty()
    }

    /// The version map as stored: entries, plus the whole-item tombstone under the partition
    /// key's name (keys never carry a version, so that name is free).
    pub fn versions_value(&self, config: &Config) -> AttributeValue {
        let mut map: Item = self
            .versions
            .iter()
            .map(|(n, v)| (n.clone(), entry_value(v)))
            .collect();
        if let Some(d) = &self.deleted {
            map.insert(config.key.partition.clone(), entry_value(d));
        }
        AttributeValue::M(map)
    }

    /// The whole item this state is, with `key`: values, version map, and the TTL of an invisible
    /// item ([`tombstone_ttl`]).
    pub fn to_item(&self, key: &Item, config: &Config) -> Item {
        let mut item = key.clone();
        item.extend(self.values.iter().map(|(n, v)| (n.clone(), v.clone())));
        item.insert(config.names.versions.clone(), self.versions_value(config));
        if let Some(ttl) = tombstone_ttl(self, false, config) {
            item.insert(config.names.ttl.clone(), ttl);
        }
        item
    }
}

/// `"<ts_ms>@<origin>"`.
pub fn entry_value(v: &Version) -> AttributeValue {
    AttributeValue::S(format!("{}{SEPARATOR}{}", v.ts_ms, v.origin))
}

fn parse_entry(name: &str, entry: &AttributeValue) -> Result<Version, MergeError> {
    let bad = || MergeError::BadEntry { name: name.into() };
    let AttributeValue::S(s) = entry else {
        return Err(bad());
    };
    let (ts, origin) = s.split_once(SEPARATOR).ok_or_else(bad)?;
    let ts_ms = ts.parse::<u64>().map_err(|_| bad())?;
    if origin.is_empty() {
        return Err(bad());
    }
    Ok(Version::new(ts_ms, origin))
}

/// The TTL of an item in this mode: set exactly while it is invisible (no application attribute,
/// counting `unversioned_held` ones), to the newest entry's time plus the tombstone lifetime. A
/// function of the state, so every region computes the same.
pub fn tombstone_ttl(
    state: &AttrState,
    unversioned_held: bool,
    config: &Config,
) -> Option<AttributeValue> {
    if state.is_visible() || unversioned_held {
        return None;
    }
    let newest = state.newest()?;
    Some(AttributeValue::N(
        (newest.ts_ms / 1000 + config.tombstone_lifetime_s).to_string(),
    ))
}

/// The LWW-map join: the newer whole-item tombstone; per attribute, the side with the newer
/// entry (value or removal); then what the tombstone removes is dropped. Equal entries are the
/// same write; should their values differ, the larger encoding wins, so the result depends on
/// the inputs alone (commutative, associative, idempotent).
pub fn merge(a: &AttrState, b: &AttrState) -> AttrState {
    let mut out = a.clone();
    merge_into(&mut out, b);
    out
}

/// [`merge`] in place: `into` becomes `merge(into, other)`.
pub fn merge_into(into: &mut AttrState, other: &AttrState) {
    if other.deleted > into.deleted {
        into.deleted = other.deleted.clone();
    }
    for (name, theirs) in &other.versions {
        let their_value = other.values.get(name);
        let take = match into.versions.get(name) {
            None => true,
            Some(ours) if theirs > ours => true,
            Some(ours) if theirs == ours => {
                larger_encoding(their_value, into.values.get(name)) == Some(true)
            }
            Some(_) => false,
        };
        if take {
            into.versions.insert(name.clone(), theirs.clone());
            match their_value {
                Some(v) => into.values.insert(name.clone(), v.clone()),
                None => into.values.remove(name),
            };
        }
    }
    into.normalize();
}

/// `Some(true)` when `a` encodes larger than `b` (absence is smallest), `None` when equal.
fn larger_encoding(a: Option<&AttributeValue>, b: Option<&AttributeValue>) -> Option<bool> {
    let encode = |v: Option<&AttributeValue>| {
        v.map(|v| {
            let mut out = Vec::new();
            codec::put_value(&mut out, v);
            out
        })
    };
    let (a, b) = (encode(a), encode(b));
    (a != b).then_some(a > b)
}

/// The mode a record's image says it belongs to: attribute mode's carry the version map,
/// item mode's the item version. `None`: neither (not a replicated state).
pub fn image_mode(image: &Item, config: &Config) -> Option<MergeMode> {
    if image.contains_key(&config.names.versions) {
        Some(MergeMode::Attribute)
    } else if image.contains_key(&config.names.ts) {
        Some(MergeMode::Item)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Enqueue in attribute mode.

/// A local change that carries no new local entry: the attributes it changed get stamped
/// (or, for a hard delete, the item gets a whole-item tombstone).
#[derive(Clone, Debug, PartialEq)]
pub struct StampHint {
    pub key: Item,
    /// The newest entry in the old and new images: stamps go above it.
    pub seen: Option<Version>,
    /// Application attributes the write changed or left without an entry, with the new value
    /// (`None`: removed).
    pub changed: Vec<(String, Option<AttributeValue>)>,
    /// The write removed the item (an application's hard delete).
    pub deleted: bool,
    /// The old image's tombstones (whole-item and per attribute): an unstamped put drops the
    /// version map, and the stamp puts them back so this region keeps what every other has.
    pub old_tombstones: AttrState,
}

impl StampHint {
    /// Nothing to stamp (e.g. a change to Ferry's attributes only).
    pub fn is_empty(&self) -> bool {
        !self.deleted && self.changed.is_empty()
    }
}

/// What enqueue does with a stream record in attribute mode (after keys, TTL expiry and the
/// filter, which are item mode's).
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Every new entry is foreign: a drain wrote it. The loop guard.
    ReplicatedIn,
    /// A new local entry: forward the full new image. `version` is its newest entry;
    /// `tombstone` says the item is invisible.
    Forward { version: Version, tombstone: bool },
    /// A local change without new entries.
    Stamp(StampHint),
}

/// Classifies one stream record's images in attribute mode.
pub fn decide(
    key: &Item,
    old: Option<&Item>,
    new: Option<&Item>,
    config: &Config,
) -> Result<Decision, MergeError> {
    let read = |i: Option<&Item>| i.map(|i| AttrState::read(i, config)).transpose();
    let (o, n) = (read(old)?, read(new)?);
    let empty = Read::default();
    let (o, n_read) = (o.as_ref().unwrap_or(&empty), n.as_ref());
    if let Some(n) = n_read {
        // Entries this write made new or newer (the whole-item tombstone included). An entry at
        // or below the old image's whole-item tombstone is not new, even where the old image has
        // none for its attribute: a drain never writes one, an application that puts back a
        // copy read before the delete does (and is stamped).
        let above_deleted = |v: &Version| o.state.deleted.as_ref().is_none_or(|od| v > od);
        let older = |name: Option<&String>, v: &Version| match name {
            Some(name) => o.state.versions.get(name).is_none_or(|ov| v > ov) && above_deleted(v),
            None => above_deleted(v),
        };
        let fresh: Vec<&Version> = n
            .state
            .versions
            .iter()
            .filter(|(name, v)| older(Some(name), v))
            .map(|(_, v)| v)
            .chain(n.state.deleted.iter().filter(|d| older(None, d)))
            .collect();
        if fresh.iter().any(|v| v.origin == config.local_region) {
            if let Some(version) = n.state.newest() {
                return Ok(Decision::Forward {
                    version: version.clone(),
                    tombstone: !n.state.is_visible() && n.unversioned.is_empty(),
                });
            }
        }
        if !fresh.is_empty() {
            return Ok(Decision::ReplicatedIn);
        }
    }
    let seen = o
        .state
        .newest()
        .into_iter()
        .chain(n_read.and_then(|n| n.state.newest()))
        .max()
        .cloned();
    let changed = match (new, n_read) {
        (Some(new), Some(n)) => changed_by(old, new, n, config),
        _ => Vec::new(),
    };
    let mut old_tombstones = AttrState {
        deleted: o.state.deleted.clone(),
        ..AttrState::default()
    };
    for (name, v) in &o.state.versions {
        if !o.state.values.contains_key(name) {
            old_tombstones.versions.insert(name.clone(), v.clone());
        }
    }
    Ok(Decision::Stamp(StampHint {
        key: key.clone(),
        seen,
        changed,
        deleted: new.is_none(),
        old_tombstones,
    }))
}

/// What an unstamped write changed, each with its new value (`None`: removed), sorted by name.
fn changed_by(
    old: Option<&Item>,
    new: &Item,
    n: &Read,
    config: &Config,
) -> Vec<(String, Option<AttributeValue>)> {
    let skip = |name: &str| config.key.is_key(name) || config.names.is_ferry_attribute(name);
    let mut changed = crate::classify::diff_by(old.unwrap_or(&Item::new()), new, skip);
    // An unstamped put drops the map (it changes without a new entry): what it wrote without
    // an entry needs one too. An update keeps the map, and the attributes it did not change
    // are earlier writes', stamped by their own records.
    let vm = &config.names.versions;
    let map_dropped = old.and_then(|o| o.get(vm)) != new.get(vm);
    for name in n.unversioned.iter().filter(|_| map_dropped) {
        if !changed.iter().any(|(c, _)| c == name) {
            changed.push((name.clone(), new.get(name).cloned()));
        }
    }
    changed.sort_by(|a, b| a.0.cmp(&b.0));
    changed
}

/// The state a stamp merges into the local item: each changed attribute the current item still
/// holds as the write left it gets the entry `(floor, local)`, `floor = max(now, seen + 1)`; a
/// hard delete becomes a whole-item tombstone at `floor`. An attribute the item no longer holds
/// as written is left out: a later write changed it, and its own record stamps it.
pub fn stamp_delta(
    hint: &StampHint,
    current: Option<&Item>,
    now_ms: u64,
    config: &Config,
) -> AttrState {
    let mut floor_ts = hint
        .seen
        .as_ref()
        .map_or(now_ms, |s| now_ms.max(s.ts_ms.saturating_add(1)));
    if !hint.deleted {
        // Also above what the item holds now for these attributes: only this region's stamps of
        // earlier records can have put it there (a drain waits while an attribute is unversioned),
        // and a stamp below them would be dropped (or lose) and the write never replicate.
        let read = current.and_then(|c| AttrState::read(c, config).ok());
        if let Some(state) = read.map(|r| r.state) {
            let held = hint
                .changed
                .iter()
                .filter_map(|(n, _)| state.versions.get(n));
            if let Some(top) = held.chain(state.deleted.iter()).max() {
                floor_ts = floor_ts.max(top.ts_ms.saturating_add(1));
            }
        }
    }
    let floor = Version::new(floor_ts, config.local_region.clone());
    let mut delta = AttrState::default();
    if hint.deleted {
        delta.deleted = Some(floor);
        return delta;
    }
    if !hint.changed.is_empty() {
        delta.deleted = hint.old_tombstones.deleted.clone();
        for (name, v) in &hint.old_tombstones.versions {
            if current.is_none_or(|c| !c.contains_key(name)) {
                delta.versions.insert(name.clone(), v.clone());
            }
        }
    }
    for (name, value) in &hint.changed {
        let held = current.and_then(|c| c.get(name));
        let still = match (held, value) {
            (Some(h), Some(v)) => values_equal(h, v),
            (None, None) => true,
            _ => false,
        };
        if still {
            delta.versions.insert(name.clone(), floor.clone());
            if let Some(v) = value {
                delta.values.insert(name.clone(), v.clone());
            }
        }
    }
    delta
}

/// What an application helper writes in this mode: each attribute in `changes` (a value, or
/// `None` to remove it) with the entry `(max(now, its current entry + 1, the item tombstone + 1),
/// local)`; `delete` makes a whole-item tombstone above everything the item holds. Merged into
/// the item with [`plan_merge`] ([`Unversioned::Keep`]), like enqueue's stamps.
pub fn write_delta(
    current: Option<&Item>,
    changes: &[(String, Option<AttributeValue>)],
    delete: bool,
    now_ms: u64,
    config: &Config,
) -> Result<AttrState, MergeError> {
    let state = current
        .map(|c| AttrState::read(c, config))
        .transpose()?
        .map(|r| r.state)
        .unwrap_or_default();
    let above = |v: Option<&Version>| v.map_or(now_ms, |v| now_ms.max(v.ts_ms.saturating_add(1)));
    let local = &config.local_region;
    let mut delta = AttrState::default();
    if delete {
        delta.deleted = Some(Version::new(above(state.newest()), local.clone()));
        return Ok(delta);
    }
    for (name, value) in changes {
        let ts = above(state.versions.get(name)).max(above(state.deleted.as_ref()));
        delta
            .versions
            .insert(name.clone(), Version::new(ts, local.clone()));
        if let Some(v) = value {
            delta.values.insert(name.clone(), v.clone());
        }
    }
    Ok(delta)
}

// ---------------------------------------------------------------------------------------------
// Merging a state into a stored item.

/// Read–merge–write rounds before a merge is left for later (each failed round means a newer
/// write got in between). The drain, enqueue's stamps and the checker all use this bound.
pub const MAX_MERGE_ROUNDS: u32 = 8;

/// How [`plan_merge`] treats application attributes the stored item holds without an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unversioned {
    /// The drain: a local write not stamped yet; the record waits (item mode's *pending*).
    Wait,
    /// Enqueue's stamp: later local writes; left as they are (their own records stamp them).
    Keep,
}

/// What merging a state into the stored item takes.
#[derive(Clone, Debug, PartialEq)]
pub enum MergePlan {
    /// The merge changes nothing: stale, no write.
    Unchanged,
    /// The stored item holds unversioned attributes (with [`Unversioned::Wait`]).
    Pending {
        unversioned: Vec<String>,
    },
    Write(Box<MergeWrite>),
}

/// An `UpdateItem`: set `set`, remove `remove`, under `condition` (the version map as read, and
/// every attribute written still as read; `attribute_not_exists(pk)` for an absent item).
#[derive(Clone, Debug, PartialEq)]
pub struct MergeWrite {
    pub key: Item,
    /// Winning attributes, the merged version map, and the TTL when it changes.
    pub set: Vec<(String, AttributeValue)>,
    pub remove: Vec<String>,
    pub condition: Condition,
    /// The merged state.
    pub merged: AttrState,
    /// Application attributes the write sets or removes.
    pub changed_attributes: usize,
}

/// `incoming` merged into the stored state. Equal entries are the same write: what is stored
/// stays. (They differ only when an unstamped write changed a value under its old entry; its
/// own stamp settles it. Writing the other value here would look like a local change to this
/// region's enqueue.)
fn merge_keeping_stored(stored: &AttrState, incoming: &AttrState) -> AttrState {
    let mut merged = merge(stored, incoming);
    for (name, v) in &stored.versions {
        if merged.versions.get(name) == Some(v) {
            match stored.values.get(name) {
                Some(value) => merged.values.insert(name.clone(), value.clone()),
                None => merged.values.remove(name),
            };
        }
    }
    merged
}

/// Merges `incoming` into the stored item (`current`, read strongly consistent).
pub fn plan_merge(
    key: &Item,
    current: Option<&Item>,
    incoming: &AttrState,
    unversioned: Unversioned,
    config: &Config,
) -> Result<MergePlan, MergeError> {
    let read = current.map(|c| AttrState::read(c, config)).transpose()?;
    let read = read.unwrap_or_default();
    if unversioned == Unversioned::Wait && !read.unversioned.is_empty() {
        return Ok(MergePlan::Pending {
            unversioned: read.unversioned,
        });
    }
    let merged = merge_keeping_stored(&read.state, incoming);
    let stored = |name: &str| current.and_then(|c| c.get(name));
    let mut set: Vec<(String, AttributeValue)> = merged
        .values
        .iter()
        .filter(|(n, v)| !stored(n).is_some_and(|s| values_equal(s, v)))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut remove: Vec<String> = read
        .state
        .values
        .keys()
        .filter(|n| !merged.values.contains_key(*n))
        .cloned()
        .collect();
    let changed_attributes = set.len() + remove.len();
    let mut condition = Vec::new();
    for name in set.iter().map(|(n, _)| n).chain(remove.iter()) {
        condition.push(match stored(name) {
            Some(v) => Condition::Equals(name.clone(), v.clone()),
            None => Condition::NotExists(name.clone()),
        });
    }
    let map_changed =
        merged.versions != read.state.versions || merged.deleted != read.state.deleted;
    let vm = &config.names.versions;
    if map_changed {
        set.push((vm.clone(), merged.versions_value(config)));
    }
    let ttl = tombstone_ttl(&merged, !read.unversioned.is_empty(), config);
    let ttl_name = &config.names.ttl;
    match (&ttl, stored(ttl_name)) {
        (Some(want), Some(have)) if values_equal(want, have) => {}
        (Some(want), _) => set.push((ttl_name.clone(), want.clone())),
        (None, Some(_)) => remove.push(ttl_name.clone()),
        (None, None) => {}
    }
    if set.is_empty() && remove.is_empty() {
        return Ok(MergePlan::Unchanged);
    }
    let condition = match current {
        None => Condition::NotExists(config.key.partition.clone()),
        Some(c) => {
            condition.push(match c.get(vm) {
                Some(map) => Condition::Equals(vm.clone(), map.clone()),
                None => Condition::NotExists(vm.clone()),
            });
            condition.insert(0, Condition::Exists(config.key.partition.clone()));
            Condition::and(condition)
        }
    };
    Ok(MergePlan::Write(Box::new(MergeWrite {
        key: key.clone(),
        set,
        remove,
        condition,
        merged,
        changed_attributes,
    })))
}

/// A [`MergeWrite`] as `UpdateItem` parameters (the adapter and the application helper send
/// the same request).
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateParts {
    pub update_expression: String,
    pub condition_expression: String,
    /// Placeholders of both expressions (values empty when nothing needs one).
    pub expression: Expression,
}

impl MergeWrite {
    pub fn update_parts(&self) -> UpdateParts {
        let mut expr = Expression::default();
        let condition_expression = self.condition.render(&mut expr);
        let mut update = Vec::new();
        if !self.set.is_empty() {
            let sets: Vec<String> = self
                .set
                .iter()
                .map(|(n, v)| format!("{} = {}", expr.name(n), expr.value(v)))
                .collect();
            update.push(format!("SET {}", sets.join(", ")));
        }
        if !self.remove.is_empty() {
            let names: Vec<String> = self.remove.iter().map(|n| expr.name(n)).collect();
            update.push(format!("REMOVE {}", names.join(", ")));
        }
        UpdateParts {
            update_expression: update.join(" "),
            condition_expression,
            expression: expr,
        }
    }
}

/// Applies a [`MergeWrite`] to an item as DynamoDB's `UpdateItem` would (the convergence
/// checker's table; the adapter sends the real request).
pub fn apply_write(current: Option<&Item>, write: &MergeWrite) -> Item {
    let mut item = current.cloned().unwrap_or_else(|| write.key.clone());
    for (n, v) in &write.set {
        item.insert(n.clone(), v.clone());
    }
    for n in &write.remove {
        item.remove(n);
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> Config {
        let mut c = Config::new("r1", "pk");
        c.merge_mode = MergeMode::Attribute;
        c
    }

    fn key() -> Item {
        [("pk".to_string(), AttributeValue::S("k".into()))].into()
    }

    fn v(ts: u64, origin: &str) -> Version {
        Version::new(ts, origin)
    }

    fn n(x: u64) -> AttributeValue {
        AttributeValue::N(x.to_string())
    }

    /// One write: an attribute set (value) or removed (None) at a version; or a whole-item delete.
    #[derive(Clone, Debug)]
    enum Write {
        Set(String, Version, Option<u64>),
        Delete(Version),
    }

    fn state_of(writes: &[Write]) -> AttrState {
        let mut s = AttrState::default();
        for w in writes {
            let mut d = AttrState::default();
            match w {
                Write::Set(name, version, value) => {
                    d.versions.insert(name.clone(), version.clone());
                    if let Some(x) = value {
                        d.values.insert(name.clone(), n(*x));
                    }
                }
                Write::Delete(version) => d.deleted = Some(version.clone()),
            }
            merge_into(&mut s, &d);
        }
        s
    }

    /// Writes over a small world: names a–c, times 0–5, two origins, and values that are a
    /// function of the version or free (equal versions with different values: the tie-break).
    fn write() -> impl Strategy<Value = Write> {
        let version = (0u64..6, prop_oneof![Just("r1"), Just("r2")]).prop_map(|(t, o)| v(t, o));
        prop_oneof![
            4 => (prop_oneof![Just("a"), Just("b"), Just("c")], version.clone(), proptest::option::of(0u64..3))
                .prop_map(|(name, version, value)| Write::Set(name.into(), version, value)),
            1 => version.prop_map(Write::Delete),
        ]
    }

    fn state() -> impl Strategy<Value = AttrState> {
        proptest::collection::vec(write(), 0..6).prop_map(|w| state_of(&w))
    }

    /// States of one consistent world: a version's value (or removal) is a function of the
    /// attribute and the version, as it is when each version is one write.
    fn consistent_state() -> impl Strategy<Value = AttrState> {
        proptest::collection::vec(write(), 0..6).prop_map(|writes| {
            let writes: Vec<Write> = writes
                .into_iter()
                .map(|w| match w {
                    Write::Set(name, version, _) => {
                        let code = version.ts_ms * 10
                            + u64::from(name.as_bytes()[0])
                            + u64::from(version.origin == "r2");
                        let value = (code % 4 != 0).then_some(code);
                        Write::Set(name, version, value)
                    }
                    delete => delete,
                })
                .collect();
            state_of(&writes)
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in state(), b in state()) {
            prop_assert_eq!(merge(&a, &b), merge(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in state(), b in state(), c in state()) {
            prop_assert_eq!(merge(&merge(&a, &b), &c), merge(&a, &merge(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in state(), b in state()) {
            prop_assert_eq!(merge(&a, &a), a.clone());
            let ab = merge(&a, &b);
            prop_assert_eq!(merge(&ab, &b), ab);
        }

        /// Any delivery order, with duplicates, merges to the same state.
        #[test]
        fn order_and_duplicates_do_not_matter(
            states in proptest::collection::vec(state(), 1..6),
            order in proptest::collection::vec(0usize..100, 1..15),
        ) {
            let all = states.iter().fold(AttrState::default(), |s, x| merge(&s, x));
            // Every state at least once, in a scrambled order, some more than once.
            let mut delivered: Vec<&AttrState> = order.iter().map(|i| &states[i % states.len()]).collect();
            delivered.extend(states.iter().rev());
            let got = delivered.iter().fold(AttrState::default(), |s, x| merge(&s, x));
            prop_assert_eq!(got, all);
        }

        /// Storing a state and reading it back gives the state.
        #[test]
        fn item_round_trip(a in state()) {
            let c = config();
            let read = AttrState::read(&a.to_item(&key(), &c), &c).unwrap();
            prop_assert_eq!(read.state, a);
            prop_assert!(read.unversioned.is_empty());
        }

        /// Merging into a stored item and applying the write gives the merged state; merging the
        /// same state again changes nothing.
        #[test]
        fn plan_merge_writes_the_merge(a in consistent_state(), b in consistent_state()) {
            let c = config();
            let stored = (a != AttrState::default()).then(|| a.to_item(&key(), &c));
            let after = match plan_merge(&key(), stored.as_ref(), &b, Unversioned::Wait, &c).unwrap() {
                MergePlan::Unchanged => stored.clone().unwrap_or_else(key),
                MergePlan::Write(w) => {
                    prop_assert!(w.condition.holds(stored.as_ref()));
                    apply_write(stored.as_ref(), &w)
                }
                MergePlan::Pending { .. } => unreachable!("a stored state has no unversioned attribute"),
            };
            prop_assert_eq!(AttrState::read(&after, &c).unwrap().state, merge(&a, &b));
            prop_assert_eq!(
                plan_merge(&key(), Some(&after), &b, Unversioned::Wait, &c).unwrap(),
                MergePlan::Unchanged
            );
        }
    }

    #[test]
    fn disjoint_updates_both_survive_and_a_delete_removes_older_ones() {
        let a = state_of(&[Write::Set("address".into(), v(10, "r1"), Some(1))]);
        let b = state_of(&[Write::Set("last_contacted".into(), v(20, "r2"), Some(2))]);
        let m = merge(&a, &b);
        assert_eq!(m.values.len(), 2);
        let deleted = merge(&m, &state_of(&[Write::Delete(v(15, "r2"))]));
        assert_eq!(
            deleted.values.keys().collect::<Vec<_>>(),
            vec!["last_contacted"]
        );
        assert!(!deleted.versions.contains_key("address"));
        let removed = merge(
            &m,
            &state_of(&[Write::Set("address".into(), v(11, "r2"), None)]),
        );
        assert_eq!(removed.versions["address"], v(11, "r2"));
        assert!(!removed.values.contains_key("address"));
        // An older set does not bring a removed attribute back.
        assert_eq!(merge(&removed, &a), removed);
    }

    #[test]
    fn the_drain_waits_for_unversioned_attributes_and_the_stamp_keeps_them() {
        let c = config();
        let mut stored =
            state_of(&[Write::Set("a".into(), v(5, "r1"), Some(1))]).to_item(&key(), &c);
        stored.insert("b".into(), n(7));
        let incoming = state_of(&[Write::Set("a".into(), v(9, "r2"), Some(2))]);
        assert!(matches!(
            plan_merge(&key(), Some(&stored), &incoming, Unversioned::Wait, &c),
            Ok(MergePlan::Pending { .. })
        ));
        let delete = state_of(&[Write::Delete(v(9, "r1"))]);
        let MergePlan::Write(w) =
            plan_merge(&key(), Some(&stored), &delete, Unversioned::Keep, &c).unwrap()
        else {
            panic!("a delete of a versioned attribute writes");
        };
        let after = apply_write(Some(&stored), &w);
        assert!(!after.contains_key("a"));
        assert_eq!(after.get("b"), Some(&n(7)));
        assert!(!after.contains_key(&c.names.ttl), "visible: no TTL");
    }

    #[test]
    fn a_copy_put_back_over_a_tombstone_is_stamped_not_taken_for_a_drain_write() {
        let c = config();
        let before = state_of(&[Write::Set("a".into(), v(5, "r2"), Some(1))]);
        let copy = before.to_item(&key(), &c);
        let deleted = merge(&before, &state_of(&[Write::Delete(v(9, "r1"))])).to_item(&key(), &c);
        let mut restored = copy.clone();
        restored.insert("a".into(), n(2));
        let Ok(Decision::Stamp(hint)) = decide(&key(), Some(&deleted), Some(&restored), &c) else {
            panic!("a restore of a copy read before the delete is the application's write");
        };
        assert_eq!(hint.changed, vec![("a".to_string(), Some(n(2)))]);
        let delta = stamp_delta(&hint, Some(&restored), 1, &c);
        assert!(delta.versions["a"] > v(9, "r1"), "stamped above the delete");
        // A drain's entry above the tombstone is still a replicated write.
        let revived = merge(
            &AttrState::read(&deleted, &c).unwrap().state,
            &state_of(&[Write::Set("a".into(), v(12, "r2"), Some(3))]),
        )
        .to_item(&key(), &c);
        assert_eq!(
            decide(&key(), Some(&deleted), Some(&revived), &c),
            Ok(Decision::ReplicatedIn)
        );
    }

    #[test]
    fn decide_follows_the_loop_guard_per_attribute() {
        let c = config();
        let o = state_of(&[Write::Set("a".into(), v(5, "r1"), Some(1))]).to_item(&key(), &c);
        let foreign = merge(
            &AttrState::read(&o, &c).unwrap().state,
            &state_of(&[Write::Set("b".into(), v(6, "r2"), Some(2))]),
        )
        .to_item(&key(), &c);
        assert_eq!(
            decide(&key(), Some(&o), Some(&foreign), &c),
            Ok(Decision::ReplicatedIn)
        );
        let local = merge(
            &AttrState::read(&foreign, &c).unwrap().state,
            &state_of(&[Write::Set("a".into(), v(7, "r1"), Some(3))]),
        )
        .to_item(&key(), &c);
        assert_eq!(
            decide(&key(), Some(&foreign), Some(&local), &c),
            Ok(Decision::Forward {
                version: v(7, "r1"),
                tombstone: false
            })
        );
        // An unstamped update of `a`: stamp exactly `a`, above what was seen.
        let mut unstamped = local.clone();
        unstamped.insert("a".into(), n(4));
        let Ok(Decision::Stamp(hint)) = decide(&key(), Some(&local), Some(&unstamped), &c) else {
            panic!("an unstamped write is a stamp hint");
        };
        assert_eq!(hint.changed, vec![("a".to_string(), Some(n(4)))]);
        let delta = stamp_delta(&hint, Some(&unstamped), 1, &c);
        assert_eq!(delta.versions["a"], v(8, "r1"));
        // The application changed `a` again since: its own record stamps it.
        let mut later = unstamped.clone();
        later.insert("a".into(), n(5));
        assert_eq!(
            stamp_delta(&hint, Some(&later), 1, &c),
            AttrState::default()
        );
        // A hard delete: a whole-item tombstone.
        let Ok(Decision::Stamp(hint)) = decide(&key(), Some(&local), None, &c) else {
            panic!("a hard delete is a stamp hint");
        };
        assert!(hint.deleted);
        assert_eq!(
            stamp_delta(&hint, None, 100, &c).deleted,
            Some(v(100, "r1"))
        );
    }
}
