//! `classify` proper: one DynamoDB stream record (`aws_lambda_events`' `EventRecord`) read and
//! its case decided. The only part of the core that needs `aws_lambda_events`, so it sits behind
//! the `stream` feature.

use super::{admits, diff_by, Classified, ClassifyError, Clobber, Hint, Wrote};
use crate::config::{Config, MergeMode};
use crate::digest::{is_expiry_tombstone, is_sealed};
use crate::item::{describe_key, key_of, Item};
use crate::merge;
use crate::record::ChangeRecord;
use crate::version::{Version, VersionError};
use aws_lambda_events::event::dynamodb::{EventRecord, StreamViewType};

/// A stream record as [`classify`] takes it: borrowed (`&EventRecord`: a forwarded image is
/// cloned), owned (`EventRecord`) or mutably borrowed (`&mut EventRecord`): then a forwarded image
/// is moved out of the record instead of deep-cloned (for a `&mut`, the record's new image is left
/// empty and the rest of it untouched, so the caller can still read its keys after an error).
pub trait ClassifyInput {
    fn record(&self) -> &EventRecord;
    /// The new image, moved out where the record is owned or mutably borrowed.
    fn into_new_image(self) -> Item;
}

impl ClassifyInput for &EventRecord {
    fn record(&self) -> &EventRecord {
        self
    }
    fn into_new_image(self) -> Item {
        self.change.new_image.inner().clone()
    }
}

impl ClassifyInput for &mut EventRecord {
    fn record(&self) -> &EventRecord {
        self
    }
    fn into_new_image(self) -> Item {
        std::mem::take(self.change.new_image.inner_mut())
    }
}

impl ClassifyInput for EventRecord {
    fn record(&self) -> &EventRecord {
        self
    }
    fn into_new_image(self) -> Item {
        self.change.new_image.into_inner()
    }
}

/// Decides one stream record's case. `config.local_region` is the region whose stream this is
/// (never the record's `awsRegion`, which emulators fill with their own name).
///
/// Takes the record by reference, by value or by `&mut` ([`ClassifyInput`]); the decision is the
/// same, only a forwarded image is moved instead of cloned when the record is not just borrowed.
pub fn classify(record: impl ClassifyInput, config: &Config) -> Result<Classified, ClassifyError> {
    let forward = match decide(record.record(), config)? {
        Decided::Done(classified) => return Ok(classified),
        Decided::Forward(forward) => forward,
    };
    let image = record.into_new_image();
    Ok(Classified::Forward(ChangeRecord {
        key: forward.key,
        image,
        tombstone: forward.tombstone,
        version: forward.version,
        source_region: config.local_region.clone(),
        written_at_ms: forward.written_at_ms,
    }))
}

/// Everything of a forwarded record but its image (which the caller moves or clones).
struct Forward {
    key: Item,
    tombstone: bool,
    version: Version,
    written_at_ms: u64,
}

enum Decided {
    Done(Classified),
    Forward(Forward),
}

fn decide(record: &EventRecord, config: &Config) -> Result<Decided, ClassifyError> {
    use Decided::Done;
    let change = &record.change;
    // Half the picture misreplicates (an INSERT would pass, a MODIFY could not be judged).
    if let Some(view) = &change.stream_view_type {
        if !matches!(view, StreamViewType::NewAndOldImages) {
            return Err(ClassifyError::StreamView {
                sequence: sequence(record),
                view: view.to_string(),
            });
        }
    }
    let key = key_of(&change.keys, &config.key).map_err(|attribute| ClassifyError::MissingKey {
        sequence: sequence(record),
        attribute,
    })?;
    let (old, new) = images(record, &key)?;
    let empty = Item::new();
    if new.is_none() && is_ttl_removal(record) {
        // Not gated by the filter: a versioned item Ferry sealed has replicated (an item that
        // left a `has:` filter keeps its last replicated state everywhere).
        return expiry(&key, old, config).map_err(bad_version(record, &key));
    }
    let unstamped_old = old.is_some_and(|o| is_unstamped(o, config));
    if new.is_some_and(|n| is_expiry_tombstone(n, &config.names)) && !unstamped_old {
        // The local tombstone of an expiry: this region's alone. (Over an application's write
        // not stamped yet, it is a drain's, below, which put a version expired on arrival.)
        return Ok(Done(Classified::TtlExpiry));
    }
    let (new_or_empty, old_or_empty) = (new.unwrap_or(&empty), old.unwrap_or(&empty));
    if !admits(config, &change.keys, new_or_empty, old_or_empty) {
        return Ok(Done(Classified::Filtered));
    }
    if let Some((attribute, reason)) = reserved_misuse(new, config) {
        return Err(ClassifyError::ReservedAttribute {
            sequence: sequence(record),
            key: describe_key(&key),
            attribute,
            reason,
        });
    }
    if let Some(what) = other_mode_write(old, new, config) {
        return Err(ClassifyError::ModeMismatch {
            sequence: sequence(record),
            key: describe_key(&key),
            local: config.merge_mode,
            what,
        });
    }
    match config.merge_mode {
        MergeMode::Attribute => attribute_mode(record, key, old, new, config),
        MergeMode::Item => item_mode(record, key, old, new, config),
    }
}

fn sequence(record: &EventRecord) -> String {
    record.change.sequence_number.clone().unwrap_or_default()
}

fn bad_version<'a>(
    record: &'a EventRecord,
    key: &'a Item,
) -> impl Fn(VersionError) -> ClassifyError + 'a {
    move |source| ClassifyError::BadVersion {
        sequence: sequence(record),
        key: describe_key(key),
        source,
    }
}

/// The record's old and new images, as its event name says it has them.
fn images<'r>(
    record: &'r EventRecord,
    key: &Item,
) -> Result<(Option<&'r Item>, Option<&'r Item>), ClassifyError> {
    let (has_old, has_new) = match record.event_name.as_str() {
        "INSERT" => (false, true),
        "MODIFY" => (true, true),
        "REMOVE" => (true, false),
        other => {
            return Err(ClassifyError::UnknownEvent {
                sequence: sequence(record),
                name: other.to_string(),
            })
        }
    };
    let image = |has: bool, image: &'r Item, name: &'static str| match has {
        false => Ok(None),
        true if image.is_empty() => Err(ClassifyError::MissingImage {
            sequence: sequence(record),
            key: describe_key(key),
            image: name,
        }),
        true => Ok(Some(image)),
    };
    let change = &record.change;
    Ok((
        image(has_old, change.old_image.inner(), "old")?,
        image(has_new, change.new_image.inner(), "new")?,
    ))
}

fn attribute_mode(
    record: &EventRecord,
    key: Item,
    old: Option<&Item>,
    new: Option<&Item>,
    config: &Config,
) -> Result<Decided, ClassifyError> {
    use Decided::Done;
    let decision =
        merge::decide(&key, old, new, config).map_err(|source| ClassifyError::BadVersionMap {
            sequence: sequence(record),
            key: describe_key(&key),
            source,
        })?;
    Ok(match decision {
        merge::Decision::ReplicatedIn => Done(Classified::ReplicatedIn),
        merge::Decision::Stamp(hint) => Done(Classified::StampAttributes(hint)),
        merge::Decision::Forward { version, tombstone } => {
            forwarded(record, key, version, tombstone)
        }
    })
}

/// Case 2: forward the local write at `version`; its lag counts from the record's creation.
fn forwarded(record: &EventRecord, key: Item, version: Version, tombstone: bool) -> Decided {
    Decided::Forward(Forward {
        key,
        tombstone,
        written_at_ms: created_ms(record).max(version.ts_ms),
        version,
    })
}

/// Item mode's cases 1, 2 and 4, from the images' versions and seals.
fn item_mode(
    record: &EventRecord,
    key: Item,
    old: Option<&Item>,
    new: Option<&Item>,
    config: &Config,
) -> Result<Decided, ClassifyError> {
    let version = |image: Option<&Item>| match image {
        None => Ok(None),
        Some(i) => Version::of(i, &config.names).map_err(bad_version(record, &key)),
    };
    let vo = version(old)?;
    let vn = version(new)?;
    if let (Some(new), Some(vn)) = (new, vn.as_ref()) {
        if is_sealed(new, &config.names) {
            if vn.origin != config.local_region && is_drain_write(old, vo.as_ref(), vn) {
                let decided = replicated_in(key, old, vo.as_ref(), new, vn, config);
                return Ok(Decided::Done(decided));
            }
            if vn.origin == config.local_region && vo.as_ref().is_none_or(|vo| vn > vo) {
                let tombstone = config.is_tombstone(new);
                return Ok(forwarded(record, key, vn.clone(), tombstone));
            }
        }
    }
    let hint = hint_of(key, old, new, vo, vn, config);
    Ok(Decided::Done(Classified::Reconcile(hint)))
}

/// Case 4: what the record saw, for [`crate::reconcile`].
fn hint_of(
    key: Item,
    old: Option<&Item>,
    new: Option<&Item>,
    vo: Option<Version>,
    vn: Option<Version>,
    config: &Config,
) -> Hint {
    let seen = vo.iter().chain(vn.iter()).max().cloned();
    let changed = match new {
        None => Vec::new(),
        Some(new) => {
            let n = &config.names;
            let is_version = |a: &str| a == n.ts || a == n.origin || a == n.sum;
            diff_by(old.unwrap_or(&Item::new()), new, is_version)
        }
    };
    let tombstone_ttl = [old, new]
        .into_iter()
        .flatten()
        .find(|i| config.is_tombstone(i))
        .and_then(|i| i.get(&config.names.ttl).cloned());
    Hint {
        key,
        seen,
        new_version: vn,
        changed,
        tombstone_ttl,
        expired: None,
        clobbered: None,
        wrote: wrote(new, config),
    }
}

fn wrote(new: Option<&Item>, config: &Config) -> Wrote {
    match new {
        None => Wrote::Delete,
        Some(new) => Wrote::Image {
            ttl: new.get(&config.names.ttl).cloned(),
        },
    }
}

/// A TTL removal: every region expires its own copy, nothing is forwarded. An item-mode version
/// that Ferry wrote leaves a local tombstone at it ([`crate::reconcile`]); an unversioned or
/// unsealed item has its own record still to deal with it, and a tombstone expires for good.
fn expiry(key: &Item, old: Option<&Item>, config: &Config) -> Result<Decided, VersionError> {
    let names = &config.names;
    let Some(old) = old.filter(|o| {
        config.merge_mode == MergeMode::Item && !config.is_tombstone(o) && is_sealed(o, names)
    }) else {
        return Ok(Decided::Done(Classified::TtlExpiry));
    };
    let Some(version) = Version::of(old, names)? else {
        return Ok(Decided::Done(Classified::TtlExpiry));
    };
    Ok(Decided::Done(Classified::Reconcile(Hint {
        key: key.clone(),
        seen: Some(version.clone()),
        new_version: None,
        changed: Vec::new(),
        tombstone_ttl: None,
        expired: Some(version),
        clobbered: None,
        wrote: Wrote::Delete,
    })))
}

/// An application's write that enqueue has not stamped yet (unversioned, or carrying a version
/// it read): a drain's write over it is never the loop guard's alone.
fn is_unstamped(item: &Item, config: &Config) -> bool {
    config.merge_mode == MergeMode::Item
        && !config.is_tombstone(item)
        && (!is_sealed(item, &config.names)
            || Version::of(item, &config.names).is_ok_and(|v| v.is_none()))
}

/// A drain's write: skipped (the loop guard), unless it overwrote an application's write-back
/// that enqueue had not stamped yet, which is then put back ([`Clobber`]).
fn replicated_in(
    key: Item,
    old: Option<&Item>,
    vo: Option<&Version>,
    new: &Item,
    vn: &Version,
    config: &Config,
) -> Classified {
    let Some(written) = old.filter(|o| !is_sealed(o, &config.names)) else {
        return Classified::ReplicatedIn;
    };
    Classified::Reconcile(Hint {
        key,
        seen: vo.into_iter().chain([vn]).max().cloned(),
        new_version: Some(vn.clone()),
        changed: Vec::new(),
        tombstone_ttl: None,
        expired: None,
        clobbered: Some(Box::new(Clobber {
            written: written.clone(),
            by: new.clone(),
        })),
        wrote: wrote(Some(new), config),
    })
}

/// Whether a write of the sealed foreign version `vn` over `old` can be a drain's. A drain writes
/// into an absent key or over an older version, never over an unversioned item (it waits for the
/// stamp) and never lowering the version: anything else carrying a foreign version is an
/// application writing back a version it read.
fn is_drain_write(old: Option<&Item>, vo: Option<&Version>, vn: &Version) -> bool {
    match (old, vo) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(_), Some(vo)) => vn > vo,
    }
}

/// A REMOVE made by the table's TTL process, not by an application.
pub fn is_ttl_removal(record: &EventRecord) -> bool {
    record.event_name == "REMOVE"
        && record
            .user_identity
            .as_ref()
            .is_some_and(|u| u.type_ == "Service" && u.principal_id == "dynamodb.amazonaws.com")
}

/// What the write did that only the other mode's writers do, if anything: in item mode, set or
/// change the version map; in attribute mode, set or change the item version. (An attribute-mode
/// item may still hold an item version from before a migration: only a write that changes it
/// betrays an item-mode writer.)
fn other_mode_write(old: Option<&Item>, new: Option<&Item>, config: &Config) -> Option<String> {
    let new = new?;
    let changed = |name: &str| {
        new.get(name)
            .is_some_and(|v| old.and_then(|o| o.get(name)) != Some(v))
    };
    let n = &config.names;
    match config.merge_mode {
        MergeMode::Item => changed(&n.versions)
            .then(|| format!("set the version map `{}` (attribute mode)", n.versions)),
        MergeMode::Attribute => (changed(&n.ts) || changed(&n.origin))
            .then(|| format!("set the item version `{}`/`{}` (item mode)", n.ts, n.origin)),
    }
}

/// An attribute under the name of the other mode's version holding what that mode never
/// writes: the application's own attribute, so the record is poison, not a mode mismatch
/// (which would hold the whole shard).
fn reserved_misuse(new: Option<&Item>, config: &Config) -> Option<(String, String)> {
    let new = new?;
    let n = &config.names;
    match config.merge_mode {
        MergeMode::Item if new.contains_key(&n.versions) => merge::AttrState::read(new, config)
            .err()
            .map(|e| (n.versions.clone(), format!("not a version map: {e}"))),
        MergeMode::Attribute if new.contains_key(&n.ts) || new.contains_key(&n.origin) => {
            Version::of(new, n).err().map(|e| {
                let name = if new.contains_key(&n.ts) {
                    &n.ts
                } else {
                    &n.origin
                };
                (name.clone(), format!("not an item version: {e}"))
            })
        }
        _ => None,
    }
}

/// When the stream record's write happened, in ms since the epoch.
fn created_ms(record: &EventRecord) -> u64 {
    record
        .change
        .approximate_creation_date_time
        .timestamp_millis()
        .max(0) as u64
}
