//! Configuration shared by every region's functions and the CLI: attribute names, key schema,
//! tombstone lifetime, item filter. It must be the same in every region (the filter especially:
//! a record filtered in one region and not in another would leave the regions different).

use crate::conflict::DEFAULT_RETENTION_DAYS;
use crate::item::{AttributeValue, Item};
use std::collections::BTreeSet;

/// SQS keeps a message at most 14 days; a tombstone must outlive any record that can still arrive.
pub const MAX_SQS_RETENTION_S: u64 = 14 * 24 * 3600;

/// Names of the attributes Ferry reads and writes on replicated items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeNames {
    /// Milliseconds since the epoch of the write (a DynamoDB number).
    pub ts: String,
    /// The region that made the write (a string).
    pub origin: String,
    /// Present (BOOL true) on a tombstone: the item reads as absent.
    pub tombstone: String,
    /// The table's TTL attribute (epoch seconds); tombstones set it so they expire.
    pub ttl: String,
    /// Attribute merge mode's version map (attribute name → version). Reserved in both modes:
    /// its presence in an image is what marks a record as one of attribute mode.
    pub versions: String,
    /// The seal of a version Ferry wrote ([`crate::digest`]): an application that writes back a
    /// version it read with other content (or under another key) leaves it unmatched.
    pub sum: String,
}

impl Default for AttributeNames {
    fn default() -> Self {
        AttributeNames {
            ts: "ferry_ts".into(),
            origin: "ferry_origin".into(),
            tombstone: "ferry_deleted".into(),
            ttl: "ttl".into(),
            versions: "ferry_versions".into(),
            sum: "ferry_sum".into(),
        }
    }
}

impl AttributeNames {
    /// True for the attributes Ferry owns (the version, the marker, the TTL, the version map, the
    /// seal).
    pub fn is_ferry_attribute(&self, name: &str) -> bool {
        name == self.sum
            || name == self.ts
            || name == self.origin
            || name == self.tombstone
            || name == self.ttl
            || name == self.versions
    }
}

/// The table's primary key attribute names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySchema {
    pub partition: String,
    pub sort: Option<String>,
}

impl KeySchema {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.partition.as_str()).chain(self.sort.as_deref())
    }

    pub fn is_key(&self, name: &str) -> bool {
        name == self.partition || self.sort.as_deref() == Some(name)
    }
}

/// Which items replicate. Evaluated on the record's key (prefix) or image (attribute), the same way
/// in every region.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ItemFilter {
    #[default]
    All,
    /// The partition key is a string starting with this prefix.
    PartitionKeyPrefix(String),
    /// The item (new image, or old image for a delete) has this attribute.
    HasAttribute(String),
}

impl ItemFilter {
    /// Parses `all`, `pk-prefix:<prefix>` or `has:<attribute>`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let text = text.trim();
        if text.is_empty() || text == "all" {
            return Ok(ItemFilter::All);
        }
        match text.split_once(':') {
            Some(("pk-prefix", p)) if !p.is_empty() => Ok(ItemFilter::PartitionKeyPrefix(p.into())),
            Some(("has", a)) if !a.is_empty() => Ok(ItemFilter::HasAttribute(a.into())),
            _ => Err(ConfigError::BadFilter(text.into())),
        }
    }

    /// Whether the change to this key (with these images) replicates.
    pub fn admits(&self, keys: &Item, schema: &KeySchema, new: &Item, old: &Item) -> bool {
        match self {
            ItemFilter::All => true,
            ItemFilter::PartitionKeyPrefix(prefix) => matches!(
                keys.get(&schema.partition),
                Some(AttributeValue::S(pk)) if pk.starts_with(prefix.as_str())
            ),
            ItemFilter::HasAttribute(name) => {
                let image = if new.is_empty() { old } else { new };
                image.contains_key(name)
            }
        }
    }
}

/// How replicas settle concurrent writes to one item (`../docs/attribute-merge.md`). The same in
/// every region: a drain refuses records of the other mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MergeMode {
    /// Last-writer-wins on the whole item (`docs/contract.md`).
    #[default]
    Item,
    /// Last-writer-wins per attribute: every attribute carries its own version.
    Attribute,
}

impl MergeMode {
    /// Parses `item` or `attribute`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        match text.trim() {
            "" | "item" => Ok(MergeMode::Item),
            "attribute" => Ok(MergeMode::Attribute),
            other => Err(ConfigError::BadMergeMode(other.into())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MergeMode::Item => "item",
            MergeMode::Attribute => "attribute",
        }
    }
}

impl std::fmt::Display for MergeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub local_region: String,
    pub key: KeySchema,
    pub names: AttributeNames,
    /// How long a tombstone lives before the table's TTL removes it.
    pub tombstone_lifetime_s: u64,
    /// The longest a record may wait beyond SQS retention before a drain applies it.
    pub drain_lag_allowance_s: u64,
    /// Every other region this one replicates to.
    pub destinations: Vec<String>,
    pub filter: ItemFilter,
    /// Item-level or attribute-level last-writer-wins.
    pub merge_mode: MergeMode,
    /// Where a drain keeps the conflicts it resolves (`None`: it only counts and logs them).
    /// The drain's own setting, not a shared one: left out of the settings fingerprint.
    pub conflict_log: Option<crate::conflict::LogSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("`{0}` is not a region name (lowercase letters, digits and dashes)")]
    BadRegion(String),
    #[error("destination `{0}` is the local region: a region does not replicate to itself")]
    SelfDestination(String),
    #[error("destination `{0}` is listed twice")]
    DuplicateDestination(String),
    #[error("tombstone lifetime {got_s} s is shorter than SQS retention (14 days) plus the drain lag allowance ({allowance_s} s): an older record could arrive after its tombstone expired and resurrect the item")]
    TombstoneLifetimeTooShort { got_s: u64, allowance_s: u64 },
    #[error("attribute name `{0}` is used twice among the key and Ferry's attributes")]
    NameClash(String),
    #[error("item filter `{0}` is not one of: all, pk-prefix:<prefix>, has:<attribute>")]
    BadFilter(String),
    #[error("merge mode `{0}` is not one of: item, attribute")]
    BadMergeMode(String),
    #[error("key type `{0}` is not one of: S, N, B")]
    BadKeyType(String),
    #[error("{name} = `{value}` is not a valid number")]
    BadNumber { name: &'static str, value: String },
}

impl Config {
    /// A config with the defaults: tombstones live 15 days, one day of drain lag allowed.
    pub fn new(local_region: impl Into<String>, partition_key: impl Into<String>) -> Self {
        Config {
            local_region: local_region.into(),
            key: KeySchema {
                partition: partition_key.into(),
                sort: None,
            },
            names: AttributeNames::default(),
            tombstone_lifetime_s: 15 * 24 * 3600,
            drain_lag_allowance_s: 24 * 3600,
            destinations: Vec::new(),
            filter: ItemFilter::All,
            merge_mode: MergeMode::Item,
            conflict_log: None,
        }
    }

    /// Reads the shared settings through `lookup` (the environment, in the functions):
    /// `FERRY_LOCAL_REGION` (else `AWS_REGION`), `FERRY_PARTITION_KEY`, `FERRY_SORT_KEY`,
    /// `FERRY_DESTINATIONS` (comma-separated regions), `FERRY_ATTR_TS`, `FERRY_ATTR_ORIGIN`,
    /// `FERRY_ATTR_TOMBSTONE`, `FERRY_ATTR_TTL`, `FERRY_TOMBSTONE_LIFETIME_S`,
    /// `FERRY_DRAIN_LAG_ALLOWANCE_S`, `FERRY_FILTER`, `FERRY_MERGE_MODE` (`item` or `attribute`),
    /// `FERRY_ATTR_VERSIONS`, `FERRY_ATTR_SUM`; the drain's conflict log: `FERRY_CONFLICT_TABLE`
    /// (unset: no log), `FERRY_CONFLICT_RETENTION_DAYS` (14), `FERRY_CONFLICT_LOG_MAX` (100
    /// entries per invocation). The result is validated.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let region = get("FERRY_LOCAL_REGION")
            .or_else(|| get("AWS_REGION"))
            .ok_or(ConfigError::Empty("FERRY_LOCAL_REGION"))?;
        let pk = get("FERRY_PARTITION_KEY").ok_or(ConfigError::Empty("FERRY_PARTITION_KEY"))?;
        let mut config = Config::new(region.trim(), pk.trim());
        config.key.sort = get("FERRY_SORT_KEY").map(|s| s.trim().to_string());
        if let Some(d) = get("FERRY_DESTINATIONS") {
            config.destinations = d
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        let defaults = AttributeNames::default();
        config.names = AttributeNames {
            ts: get("FERRY_ATTR_TS").unwrap_or(defaults.ts),
            origin: get("FERRY_ATTR_ORIGIN").unwrap_or(defaults.origin),
            tombstone: get("FERRY_ATTR_TOMBSTONE").unwrap_or(defaults.tombstone),
            ttl: get("FERRY_ATTR_TTL").unwrap_or(defaults.ttl),
            versions: get("FERRY_ATTR_VERSIONS").unwrap_or(defaults.versions),
            sum: get("FERRY_ATTR_SUM").unwrap_or(defaults.sum),
        };
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::BadNumber { name, value: v }),
            }
        };
        config.tombstone_lifetime_s =
            number("FERRY_TOMBSTONE_LIFETIME_S", config.tombstone_lifetime_s)?;
        config.drain_lag_allowance_s =
            number("FERRY_DRAIN_LAG_ALLOWANCE_S", config.drain_lag_allowance_s)?;
        if let Some(f) = get("FERRY_FILTER") {
            config.filter = ItemFilter::parse(&f)?;
        }
        if let Some(m) = get("FERRY_MERGE_MODE") {
            config.merge_mode = MergeMode::parse(&m)?;
        }
        if let Some(table) = get("FERRY_CONFLICT_TABLE") {
            let mut log = crate::conflict::LogSettings::new(table.trim());
            let days = number("FERRY_CONFLICT_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)?;
            log.retention_s = days.clamp(1, 36_500) * 86_400;
            log.max_per_invocation =
                number("FERRY_CONFLICT_LOG_MAX", log.max_per_invocation as u64)? as usize;
            config.conflict_log = Some(log);
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_region(&self.local_region, "local region")?;
        let mut seen = BTreeSet::new();
        for d in &self.destinations {
            check_region(d, "destination region")?;
            if *d == self.local_region {
                return Err(ConfigError::SelfDestination(d.clone()));
            }
            if !seen.insert(d) {
                return Err(ConfigError::DuplicateDestination(d.clone()));
            }
        }
        if self.key.partition.is_empty() {
            return Err(ConfigError::Empty("partition key name"));
        }
        let n = &self.names;
        let mut names = BTreeSet::new();
        for name in self.key.names().chain([
            n.ts.as_str(),
            n.origin.as_str(),
            n.tombstone.as_str(),
            n.ttl.as_str(),
            n.versions.as_str(),
            n.sum.as_str(),
        ]) {
            if name.is_empty() {
                return Err(ConfigError::Empty("attribute name"));
            }
            if !names.insert(name) {
                return Err(ConfigError::NameClash(name.into()));
            }
        }
        let allowance_s = MAX_SQS_RETENTION_S + self.drain_lag_allowance_s;
        if self.tombstone_lifetime_s < allowance_s {
            return Err(ConfigError::TombstoneLifetimeTooShort {
                got_s: self.tombstone_lifetime_s,
                allowance_s,
            });
        }
        Ok(())
    }

    /// True if the item is a tombstone (reads as absent). In attribute mode: an item without any
    /// application attribute (`../docs/attribute-merge.md`, visibility).
    pub fn is_tombstone(&self, item: &Item) -> bool {
        match self.merge_mode {
            MergeMode::Item => matches!(
                item.get(&self.names.tombstone),
                Some(AttributeValue::Bool(true))
            ),
            MergeMode::Attribute => !self.has_application_attributes(item),
        }
    }

    /// The item without Ferry's attributes: what an application wrote (its key included).
    pub fn application_view(&self, item: &Item) -> Item {
        item.iter()
            .filter(|(n, _)| !self.names.is_ferry_attribute(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// Whether the item's TTL attribute (epoch seconds) is due at `now_ms`.
    pub fn ttl_due(&self, item: &Item, now_ms: u64) -> bool {
        item.get(&self.names.ttl)
            .is_some_and(|ttl| self.ttl_value_due(ttl, now_ms))
    }

    /// Whether a TTL attribute's value (epoch seconds) is due at `now_ms`.
    pub fn ttl_value_due(&self, ttl: &AttributeValue, now_ms: u64) -> bool {
        match ttl {
            AttributeValue::N(ttl) => ttl
                .parse::<u64>()
                .is_ok_and(|s| s.saturating_mul(1000) <= now_ms),
            _ => false,
        }
    }

    /// True if the item holds anything besides its key and Ferry's attributes.
    pub fn has_application_attributes(&self, item: &Item) -> bool {
        item.keys()
            .any(|k| !self.key.is_key(k) && !self.names.is_ferry_attribute(k))
    }
}

fn check_region(region: &str, what: &'static str) -> Result<(), ConfigError> {
    if region.is_empty() {
        return Err(ConfigError::Empty(what));
    }
    let ok = region
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadRegion(region.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_environment() {
        let c = Config::from_lookup(lookup(&[
            ("AWS_REGION", "us-east-1"),
            ("FERRY_PARTITION_KEY", "pk"),
            ("FERRY_SORT_KEY", "sk"),
            ("FERRY_DESTINATIONS", "eu-west-1, ap-southeast-2"),
            ("FERRY_FILTER", "pk-prefix:user#"),
        ]))
        .unwrap();
        assert_eq!(c.local_region, "us-east-1");
        assert_eq!(c.key.sort.as_deref(), Some("sk"));
        assert_eq!(c.destinations, vec!["eu-west-1", "ap-southeast-2"]);
        assert_eq!(c.filter, ItemFilter::PartitionKeyPrefix("user#".into()));
    }

    #[test]
    fn rejects_bad_settings() {
        let base = [("AWS_REGION", "us-east-1"), ("FERRY_PARTITION_KEY", "pk")];
        let with = |extra: (&str, &str)| {
            let mut v = base.to_vec();
            v.push(extra);
            Config::from_lookup(lookup(&v))
        };
        assert_eq!(
            Config::from_lookup(lookup(&[("FERRY_PARTITION_KEY", "pk")])),
            Err(ConfigError::Empty("FERRY_LOCAL_REGION"))
        );
        assert!(matches!(
            with(("FERRY_TOMBSTONE_LIFETIME_S", "86400")),
            Err(ConfigError::TombstoneLifetimeTooShort { .. })
        ));
        assert_eq!(
            with(("FERRY_ATTR_TS", "pk")),
            Err(ConfigError::NameClash("pk".into()))
        );
        assert_eq!(
            with(("FERRY_DESTINATIONS", "us-east-1")),
            Err(ConfigError::SelfDestination("us-east-1".into()))
        );
        assert!(matches!(
            with(("FERRY_FILTER", "prefix=x")),
            Err(ConfigError::BadFilter(_))
        ));
        assert!(matches!(
            with(("FERRY_DESTINATIONS", "EU West")),
            Err(ConfigError::BadRegion(_))
        ));
        assert_eq!(
            with(("FERRY_MERGE_MODE", "attributes")),
            Err(ConfigError::BadMergeMode("attributes".into()))
        );
        assert_eq!(
            with(("FERRY_MERGE_MODE", "attribute")).map(|c| c.merge_mode),
            Ok(MergeMode::Attribute)
        );
        assert_eq!(
            with(("FERRY_ATTR_VERSIONS", "ttl")),
            Err(ConfigError::NameClash("ttl".into()))
        );
    }
}
