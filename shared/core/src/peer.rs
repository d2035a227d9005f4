//! The settings every region must share, published on each region's table as tags, so that a
//! drain can check its destination before writing anything: a region in the other merge mode
//! (or with other attribute names, key schema, tombstone lifetime or filter) is a configuration
//! error that stops the pipeline loudly instead of diverging quietly (`../docs/attribute-merge.md`,
//! *Mode selection*).
//!
//! Two tags: the merge mode in clear (the mismatch that matters most gets a clear message) and a
//! fingerprint of everything else. A fingerprint because DynamoDB tag values are at most 256
//! characters of a restricted set, while attribute names and filters are free text.

use crate::config::{Config, ItemFilter, MergeMode};

/// The tag holding the merge mode (`item` or `attribute`).
pub const TAG_MERGE_MODE: &str = "ferry:merge-mode";
/// The tag holding [`fingerprint`] of the other shared settings.
pub const TAG_SETTINGS: &str = "ferry:settings";

/// The shared settings in one canonical line (also logged, so two regions' lines can be diffed).
/// The local region and the destinations are not in it: they differ by design.
pub fn canonical(config: &Config) -> String {
    let n = &config.names;
    let filter = match &config.filter {
        ItemFilter::All => "all".to_string(),
        ItemFilter::PartitionKeyPrefix(p) => format!("pk-prefix:{p}"),
        ItemFilter::HasAttribute(a) => format!("has:{a}"),
    };
    // Length-prefixed fields: no name can be confused with a separator.
    let fields: [(&str, &str); 12] = [
        ("mode", config.merge_mode.name()),
        ("pk", &config.key.partition),
        ("sk", config.key.sort.as_deref().unwrap_or("")),
        ("ts", &n.ts),
        ("origin", &n.origin),
        ("tombstone", &n.tombstone),
        ("ttl", &n.ttl),
        ("versions", &n.versions),
        ("sum", &n.sum),
        (
            "tombstone_lifetime_s",
            &config.tombstone_lifetime_s.to_string(),
        ),
        (
            "drain_lag_allowance_s",
            &config.drain_lag_allowance_s.to_string(),
        ),
        ("filter", &filter),
    ];
    let mut out = String::from("v1");
    for (k, v) in fields {
        out.push_str(&format!(" {k}={}:{v}", v.len()));
    }
    out
}

/// `v1-` and 16 hex digits of FNV-1a 64 over [`canonical`]: stable across builds and platforms.
pub fn fingerprint(config: &Config) -> String {
    let mut h = crate::digest::Fnv64::default();
    h.write(canonical(config).as_bytes());
    format!("v1-{:016x}", h.finish())
}

/// The tags a region publishes on its own table.
pub fn tags(config: &Config) -> Vec<(String, String)> {
    vec![
        (
            TAG_MERGE_MODE.to_string(),
            config.merge_mode.name().to_string(),
        ),
        (TAG_SETTINGS.to_string(), fingerprint(config)),
    ]
}

/// True when `published` (a table's tags) already says what [`tags`] would write.
pub fn is_published(config: &Config, published: &[(String, String)]) -> bool {
    tags(config)
        .iter()
        .all(|t| published.iter().any(|p| p == t))
}

/// What a destination's published settings say about this region's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerCheck {
    /// Same merge mode and same fingerprint.
    Agrees,
    /// The destination's table carries no Ferry tags: its pipeline has not started yet (or runs
    /// a Ferry from before this check). Not an error; the records' shapes are still checked.
    Unpublished,
    /// The destination runs the other merge mode (or publishes one this build does not know).
    ModeDiffers { local: MergeMode, peer: String },
    /// Same merge mode, other shared settings.
    SettingsDiffer { local: String, peer: String },
}

impl PeerCheck {
    /// True for the two outcomes that must stop the pipeline.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            PeerCheck::ModeDiffers { .. } | PeerCheck::SettingsDiffer { .. }
        )
    }
}

impl std::fmt::Display for PeerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerCheck::Agrees => f.write_str("the destination publishes the same settings"),
            PeerCheck::Unpublished => f.write_str(
                "the destination's table carries no Ferry settings tags yet (its enqueue has not started)",
            ),
            PeerCheck::ModeDiffers { local, peer } => write!(
                f,
                "merge mode mismatch: this region runs `{local}`, the destination's table says `{peer}` (FERRY_MERGE_MODE must be the same in every region)"
            ),
            PeerCheck::SettingsDiffer { local, peer } => write!(
                f,
                "replication settings mismatch: fingerprint {local} here, {peer} at the destination (key schema, FERRY_ATTR_*, tombstone lifetime, drain lag allowance or filter differ; compare the `settings` lines both regions log)"
            ),
        }
    }
}

/// Compares this region's config with the tags of a destination's table.
pub fn check_peer(config: &Config, published: &[(String, String)]) -> PeerCheck {
    let get = |name: &str| {
        published
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match (get(TAG_MERGE_MODE), get(TAG_SETTINGS)) {
        (None, None) => PeerCheck::Unpublished,
        (mode, settings) => {
            let mode = mode.unwrap_or("");
            if MergeMode::parse(mode).ok() != Some(config.merge_mode) || mode.is_empty() {
                return PeerCheck::ModeDiffers {
                    local: config.merge_mode,
                    peer: mode.to_string(),
                };
            }
            let local = fingerprint(config);
            match settings {
                Some(peer) if peer == local => PeerCheck::Agrees,
                peer => PeerCheck::SettingsDiffer {
                    local,
                    peer: peer.unwrap_or("").to_string(),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(region: &str) -> Config {
        Config::new(region, "pk")
    }

    #[test]
    fn regions_with_the_same_settings_agree() {
        let here = config("us-east-1");
        let there = {
            let mut c = config("eu-west-1");
            c.destinations = vec!["us-east-1".into()];
            c
        };
        assert_eq!(fingerprint(&here), fingerprint(&there));
        assert_eq!(check_peer(&here, &tags(&there)), PeerCheck::Agrees);
        assert!(is_published(&there, &tags(&here)));
        assert_eq!(fingerprint(&here).len(), 19);
    }

    #[test]
    fn an_untagged_table_is_unpublished_not_a_mismatch() {
        let here = config("us-east-1");
        let other = vec![("team".to_string(), "payments".to_string())];
        assert_eq!(check_peer(&here, &other), PeerCheck::Unpublished);
        assert!(!check_peer(&here, &other).is_mismatch());
        assert!(!is_published(&here, &other));
    }

    #[test]
    fn the_other_merge_mode_is_a_mismatch() {
        let here = config("us-east-1");
        let mut there = config("eu-west-1");
        there.merge_mode = MergeMode::Attribute;
        let check = check_peer(&here, &tags(&there));
        assert_eq!(
            check,
            PeerCheck::ModeDiffers {
                local: MergeMode::Item,
                peer: "attribute".into()
            }
        );
        assert!(check.is_mismatch());
        assert!(check.to_string().contains("merge mode mismatch"));
        // A mode this build does not know, or a half-published pair, is a mismatch too.
        let odd = vec![(TAG_MERGE_MODE.to_string(), "crdt".to_string())];
        assert!(check_peer(&here, &odd).is_mismatch());
        let half = vec![(TAG_SETTINGS.to_string(), fingerprint(&here))];
        assert!(check_peer(&here, &half).is_mismatch());
    }

    #[test]
    fn every_shared_setting_changes_the_fingerprint() {
        let base = config("us-east-1");
        let variants: [fn(&mut Config); 11] = [
            |c| c.key.partition = "id".into(),
            |c| c.key.sort = Some("sk".into()),
            |c| c.names.ts = "v_ts".into(),
            |c| c.names.origin = "v_origin".into(),
            |c| c.names.tombstone = "gone".into(),
            |c| c.names.ttl = "expires".into(),
            |c| c.names.versions = "vmap".into(),
            |c| c.tombstone_lifetime_s += 1,
            |c| c.drain_lag_allowance_s += 1,
            |c| c.filter = ItemFilter::PartitionKeyPrefix("eu#".into()),
            |c| c.filter = ItemFilter::HasAttribute("eu#".into()),
        ];
        let mut seen = std::collections::BTreeSet::from([fingerprint(&base)]);
        for change in variants {
            let mut c = base.clone();
            change(&mut c);
            let f = fingerprint(&c);
            assert!(seen.insert(f), "{}", canonical(&c));
            assert!(matches!(
                check_peer(&base, &tags(&c)),
                PeerCheck::SettingsDiffer { .. }
            ));
        }
        // Field boundaries cannot be shifted: ts `a b` + origin `c` ≠ ts `a` + origin `b c`.
        let mut x = base.clone();
        x.names.ts = "a origin=1:b".into();
        let mut y = base.clone();
        y.names.ts = "a".into();
        y.names.origin = "b".into();
        assert_ne!(canonical(&x), canonical(&y));
    }
}
