//! The conflict log's decisions: what a drain keeps of a conflict it resolved (a replicated
//! record that lost to another region's newer version), under which id and until when, how an
//! entry is stored as a DynamoDB item, how many one invocation may write, how `ferry conflicts
//! show` compares the two sides, and what `ferry conflicts reapply` writes. Pure: the drain
//! (`functions/drain/src/conflict_log.rs`), `ferry_aws::conflict_log` and the CLI do the I/O.

use crate::config::Config;
use crate::digest::Fnv64;
use crate::item::{describe_key, AttributeValue, Item, ItemKey};
use crate::merge::AttrState;
use crate::record::ChangeRecord;
use crate::version::Version;
use std::collections::BTreeSet;

/// How long an entry is kept unless the deployment says otherwise.
pub const DEFAULT_RETENTION_DAYS: u64 = 14;
/// Entries one drain invocation writes at most; the rest are counted, not written, so a storm
/// of conflicts costs a bounded number of writes.
pub const DEFAULT_MAX_PER_INVOCATION: usize = 100;
/// DynamoDB's item size limit.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Kept free for the entry's own attributes (ids, versions, regions, the key twice).
const METADATA_BYTES: usize = 8 * 1024;

/// The log's attribute names (the table's partition key is [`ID`], its TTL [`EXPIRES_AT`]).
pub const ID: &str = "id";
pub const EXPIRES_AT: &str = "expires_at";
const KEY: &str = "key";
const KEY_TEXT: &str = "key_text";
const WINNER_TS: &str = "winner_ts";
const WINNER_ORIGIN: &str = "winner_origin";
const LOSER_TS: &str = "loser_ts";
const LOSER_ORIGIN: &str = "loser_origin";
const SOURCE_REGION: &str = "source_region";
const REGION: &str = "region";
const DETECTED_AT: &str = "detected_at";
const TOMBSTONE: &str = "loser_tombstone";
const IMAGE: &str = "loser_image";
const IMAGE_SIZE: &str = "loser_image_bytes";
const MERGED_AWAY: &str = "merged_away";

/// Where a drain keeps conflicts and for how long (`FERRY_CONFLICT_TABLE`,
/// `FERRY_CONFLICT_RETENTION_DAYS`, `FERRY_CONFLICT_LOG_MAX`). Not a replication setting: it
/// is not part of the settings fingerprint, and a region without it replicates the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// The conflict table in the destination region.
    pub table: String,
    pub retention_s: u64,
    pub max_per_invocation: usize,
}

impl LogSettings {
    pub fn new(table: impl Into<String>) -> Self {
        LogSettings {
            table: table.into(),
            retention_s: DEFAULT_RETENTION_DAYS * 86_400,
            max_per_invocation: DEFAULT_MAX_PER_INVOCATION,
        }
    }
}

/// The conflict table's name for a replicated table: the same scheme in every region (the
/// template's `ConflictTable`, the sandbox's), so a drain finds its destination's.
pub fn log_table_name(table: &str) -> String {
    format!("{table}-ferry-conflicts")
}

/// One resolved conflict.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub id: String,
    pub key: Item,
    /// The version that holds the key (from another region).
    pub winner: Version,
    /// The replicated version that lost.
    pub loser: Version,
    /// The region whose buffer carried the losing record.
    pub source_region: String,
    /// Where the conflict was found: the destination, whose log holds the entry.
    pub region: String,
    pub detected_at_ms: u64,
    /// Epoch seconds: the table's TTL removes the entry after this.
    pub expires_at_s: u64,
    /// The loser was a delete.
    pub loser_tombstone: bool,
    /// The losing image as replicated; `None` when it was too big to keep beside the metadata.
    pub loser_image: Option<Item>,
    /// The losing image's size (DynamoDB's rules).
    pub loser_image_bytes: usize,
    /// Attribute merge mode: the attributes whose values lost (empty in item mode).
    pub merged_away: Vec<String>,
}

/// The id of a conflict: the same for the same key and versions, so a record delivered twice
/// logs one entry.
pub fn entry_id(key: &Item, winner: &Version, loser: &Version) -> String {
    let mut h = Fnv64::default();
    h.write(ItemKey::of(key).as_bytes());
    for v in [winner, loser] {
        h.write(&v.ts_ms.to_le_bytes());
        h.write(&(v.origin.len() as u64).to_le_bytes());
        h.write(v.origin.as_bytes());
    }
    format!("{:016x}", h.finish())
}

/// When an entry made at `now_ms` expires (epoch seconds).
pub fn expires_at_s(now_ms: u64, retention_s: u64) -> u64 {
    (now_ms / 1000).saturating_add(retention_s)
}

/// The entry for `record`, which lost to `winner` at `region` (item mode). The image is left
/// out when it would not fit one log item.
pub fn entry(
    record: &ChangeRecord,
    winner: &Version,
    region: &str,
    now_ms: u64,
    settings: &LogSettings,
) -> Entry {
    let size = item_size(&record.image);
    let fits = size + 2 * item_size(&record.key) + METADATA_BYTES <= MAX_ITEM_BYTES;
    Entry {
        id: entry_id(&record.key, winner, &record.version),
        key: record.key.clone(),
        winner: winner.clone(),
        loser: record.version.clone(),
        source_region: record.source_region.clone(),
        region: region.to_string(),
        detected_at_ms: now_ms,
        expires_at_s: expires_at_s(now_ms, settings.retention_s),
        loser_tombstone: record.tombstone,
        loser_image: fits.then(|| record.image.clone()),
        loser_image_bytes: size,
        merged_away: Vec::new(),
    }
}

/// Attribute merge mode: the attributes of `incoming` whose value lost to a newer entry of
/// another region in `stored` (or to its newer whole-item delete), with the winning version.
/// An older entry of the same region is a stale write, not a conflict.
pub fn merged_away(stored: &AttrState, incoming: &AttrState) -> Vec<(String, Version)> {
    incoming
        .versions
        .iter()
        .filter_map(|(name, theirs)| {
            let ours = [stored.versions.get(name), stored.deleted.as_ref()]
                .into_iter()
                .flatten()
                .max()?;
            (ours > theirs && ours.origin != theirs.origin).then(|| (name.clone(), ours.clone()))
        })
        .collect()
}

/// Attribute mode's entry for `record`, whose values of the attributes `lost` were merged away
/// (`None`: nothing lost). The winner is the newest version that beat them; the image is the
/// record's, shown by `show`, not re-applied (its other attributes did win).
pub fn merge_entry(
    record: &ChangeRecord,
    lost: &[(String, Version)],
    region: &str,
    now_ms: u64,
    settings: &LogSettings,
) -> Option<Entry> {
    let winner = lost.iter().map(|(_, v)| v).max()?;
    let mut e = entry(record, winner, region, now_ms, settings);
    e.merged_away = lost.iter().map(|(n, _)| n.clone()).collect();
    Some(e)
}

/// An item's size by DynamoDB's rules (names and values in bytes; a number about one byte per
/// two digits; three bytes per list or map plus one per element).
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(n, v)| n.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(n, v)| n.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        AttributeValue::Ss(ss) => ss.iter().map(String::len).sum(),
        AttributeValue::Ns(ns) => ns.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(bs) => bs.iter().map(Vec::len).sum(),
    }
}

impl Entry {
    /// Whether `reapply` can write the loser back: its image was kept, or it was a delete.
    pub fn reappliable(&self) -> bool {
        self.merged_away.is_empty() && (self.loser_tombstone || self.loser_image.is_some())
    }

    /// The entry as the log stores it.
    pub fn to_item(&self) -> Item {
        let s = |v: &str| AttributeValue::S(v.to_string());
        let n = |v: u64| AttributeValue::N(v.to_string());
        let mut item: Item = [
            (ID, s(&self.id)),
            (KEY, AttributeValue::M(self.key.clone())),
            (KEY_TEXT, s(&describe_key(&self.key))),
            (WINNER_TS, n(self.winner.ts_ms)),
            (WINNER_ORIGIN, s(&self.winner.origin)),
            (LOSER_TS, n(self.loser.ts_ms)),
            (LOSER_ORIGIN, s(&self.loser.origin)),
            (SOURCE_REGION, s(&self.source_region)),
            (REGION, s(&self.region)),
            (DETECTED_AT, n(self.detected_at_ms)),
            (EXPIRES_AT, n(self.expires_at_s)),
            (TOMBSTONE, AttributeValue::Bool(self.loser_tombstone)),
            (IMAGE_SIZE, n(self.loser_image_bytes as u64)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(image) = &self.loser_image {
            item.insert(IMAGE.into(), AttributeValue::M(image.clone()));
        }
        if !self.merged_away.is_empty() {
            item.insert(
                MERGED_AWAY.into(),
                AttributeValue::Ss(self.merged_away.clone()),
            );
        }
        item
    }

    /// Reads a stored entry; the name of the first attribute missing or malformed otherwise.
    pub fn from_item(item: &Item) -> Result<Entry, EntryError> {
        let bad = |name: &str| EntryError(name.to_string());
        let s = |name: &str| match item.get(name) {
            Some(AttributeValue::S(v)) => Ok(v.clone()),
            _ => Err(bad(name)),
        };
        let n = |name: &str| match item.get(name) {
            Some(AttributeValue::N(v)) => v.parse::<u64>().map_err(|_| bad(name)),
            _ => Err(bad(name)),
        };
        let map = |name: &str| match item.get(name) {
            Some(AttributeValue::M(m)) => Ok(Some(m.clone())),
            None => Ok(None),
            _ => Err(bad(name)),
        };
        Ok(Entry {
            id: s(ID)?,
            key: map(KEY)?.ok_or_else(|| bad(KEY))?,
            winner: Version::new(n(WINNER_TS)?, s(WINNER_ORIGIN)?),
            loser: Version::new(n(LOSER_TS)?, s(LOSER_ORIGIN)?),
            source_region: s(SOURCE_REGION)?,
            region: s(REGION)?,
            detected_at_ms: n(DETECTED_AT)?,
            expires_at_s: n(EXPIRES_AT)?,
            loser_tombstone: matches!(item.get(TOMBSTONE), Some(AttributeValue::Bool(true))),
            loser_image: map(IMAGE)?,
            loser_image_bytes: n(IMAGE_SIZE).unwrap_or(0) as usize,
            merged_away: match item.get(MERGED_AWAY) {
                Some(AttributeValue::Ss(v)) => v.clone(),
                _ => Vec::new(),
            },
        })
    }
}

/// A stored entry that cannot be read: the attribute at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("conflict log entry: attribute `{0}` is missing or malformed")]
pub struct EntryError(pub String);

/// Whether `list` shows an entry: its key is `key` (when given) and it was found at or after
/// `since_ms` (when given).
pub fn selected(entry: &Entry, key: Option<&Item>, since_ms: Option<u64>) -> bool {
    key.is_none_or(|k| ItemKey::of(k) == ItemKey::of(&entry.key))
        && since_ms.is_none_or(|t| entry.detected_at_ms >= t)
}

/// How many of the conflicts found an invocation may still write, and whether the log failed
/// in it (then nothing more is tried: a log that is down must not cost every take a timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    left: usize,
    pub unavailable: bool,
}

impl Quota {
    pub fn new(max: usize) -> Self {
        Quota {
            left: max,
            unavailable: false,
        }
    }

    /// Entries still allowed in this invocation.
    pub fn left(&self) -> usize {
        self.left
    }

    /// How many of `wanted` entries to write; the rest are left out.
    pub fn take(&mut self, wanted: usize) -> usize {
        if self.unavailable {
            return 0;
        }
        let granted = wanted.min(self.left);
        self.left -= granted;
        granted
    }
}

/// One attribute of `show`'s side-by-side view.
#[derive(Clone, Debug, PartialEq)]
pub struct AttributeRow {
    pub name: String,
    /// `None`: the side does not have it (or reads as absent: a tombstone, no item).
    pub winner: Option<AttributeValue>,
    pub loser: Option<AttributeValue>,
}

impl AttributeRow {
    pub fn differs(&self) -> bool {
        self.winner != self.loser
    }
}

/// Winner and loser attribute by attribute, names sorted, Ferry's own attributes left out: what
/// the application reads on each side (a tombstone or a missing item has no attributes).
pub fn compare(winner: Option<&Item>, loser: Option<&Item>, config: &Config) -> Vec<AttributeRow> {
    let view = |i: Option<&Item>| match i {
        Some(i) if !config.is_tombstone(i) => config.application_view(i),
        _ => Item::new(),
    };
    let (w, l) = (view(winner), view(loser));
    let names: BTreeSet<&String> = w.keys().chain(l.keys()).collect();
    names
        .into_iter()
        .map(|name| AttributeRow {
            name: name.clone(),
            winner: w.get(name).cloned(),
            loser: l.get(name).cloned(),
        })
        .collect()
}

/// What `reapply` writes: the loser's content as a new write, stamped above whatever the key
/// holds (the helper's `restore` / `delete`), never its old version.
#[derive(Clone, Debug, PartialEq)]
pub enum Reapply {
    /// The losing image as kept: the helper's `restore` removes Ferry's attributes from it
    /// (an item's own TTL stays) and stamps and seals it anew.
    Put(Item),
    /// The loser was a delete: a tombstone of the key.
    Delete(Item),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReappliable {
    #[error("conflict {0}: the losing image ({1} bytes) was too big to keep in the log; it cannot be re-applied")]
    ImageNotKept(String, usize),
    #[error("conflict {0}: an attribute merge's lost values are shown, not re-applied (write them with the helper)")]
    Merged(String),
}

/// The write that re-applies `entry`'s loser.
pub fn reapply(entry: &Entry) -> Result<Reapply, NotReappliable> {
    if !entry.merged_away.is_empty() {
        return Err(NotReappliable::Merged(entry.id.clone()));
    }
    if entry.loser_tombstone {
        return Ok(Reapply::Delete(entry.key.clone()));
    }
    match &entry.loser_image {
        Some(image) => Ok(Reapply::Put(image.clone())),
        None => Err(NotReappliable::ImageNotKept(
            entry.id.clone(),
            entry.loser_image_bytes,
        )),
    }
}
