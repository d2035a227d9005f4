//! `vet`: whether a record taken from a buffer may be applied at all. The buffer's queue policy
//! decides who may send; this decides what a record may say. A record that fails goes to the
//! DLQ with the reason, and nothing else of its message is lost.

use crate::config::{Config, MergeMode};
use crate::item::{describe_key, key_of};
use crate::record::ChangeRecord;
use crate::version::Version;

/// How far a version's timestamp may run ahead of the drain's clock: as far as a record may
/// be old, the tombstone lifetime minus the drain lag allowance (14 days by default). A region
/// whose clock jumped ahead already holds its own versions, and every later write to those keys
/// anywhere stamps above them, so refusing them elsewhere would split the regions for good;
/// beyond this window a timestamp is no clock's (`u64::MAX`, a forged year ahead).
pub fn max_ahead_ms(config: &Config) -> u64 {
    record_window_s(config).saturating_mul(1000)
}

/// How long a record stays applicable, either way from the drain's clock.
fn record_window_s(config: &Config) -> u64 {
    config
        .tombstone_lifetime_s
        .saturating_sub(config.drain_lag_allowance_s)
}

/// Why a record is not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("its key {key} is not its image's key ({image_key})")]
    KeyMismatch { key: String, image_key: String },
    #[error("its version {version} is not its image's ({image})")]
    VersionMismatch { version: Version, image: String },
    #[error("its tombstone flag ({flag}) disagrees with its image")]
    TombstoneMismatch { flag: bool },
    #[error(
        "its version's origin is the destination region {origin}: a drain never gives a region \
         its own versions, and its stream would forward this one to every region"
    )]
    OriginIsDestination { origin: String },
    #[error("its version {version} is {ahead_s} s ahead of the drain's clock (at most {max_s} s)")]
    FromTheFuture {
        version: Version,
        ahead_s: u64,
        max_s: u64,
    },
    #[error(
        "first sent {age_h} h ago, past the {limit_h} h within which every tombstone that should \
         beat it is sure to be kept: applying it could bring back a deleted item (re-seed the key \
         with `ferry backfill` if it is still wanted)"
    )]
    TooOld { age_h: u64, limit_h: u64 },
}

/// Vets a record drained into `destination` at `now_ms`, first sent to a buffer at
/// `first_sent_ms` (carried through every re-queue and DLQ trip).
pub fn vet(
    record: &ChangeRecord,
    destination: &str,
    first_sent_ms: u64,
    now_ms: u64,
    config: &Config,
) -> Result<(), Refusal> {
    let image_key = key_of(&record.image, &config.key).map_err(|missing| Refusal::KeyMismatch {
        key: describe_key(&record.key),
        image_key: format!("no `{missing}`"),
    })?;
    if image_key != record.key {
        return Err(Refusal::KeyMismatch {
            key: describe_key(&record.key),
            image_key: describe_key(&image_key),
        });
    }
    if config.merge_mode == MergeMode::Item {
        item_mode(record, destination, config)?;
    }
    let ahead = record.version.ts_ms.saturating_sub(now_ms);
    if ahead > max_ahead_ms(config) {
        return Err(Refusal::FromTheFuture {
            version: record.version.clone(),
            ahead_s: ahead / 1000,
            max_s: max_ahead_ms(config) / 1000,
        });
    }
    let limit_s = record_window_s(config);
    let age_s = now_ms.saturating_sub(first_sent_ms) / 1000;
    if age_s > limit_s {
        return Err(Refusal::TooOld {
            age_h: age_s / 3600,
            limit_h: limit_s / 3600,
        });
    }
    Ok(())
}

/// Item mode's image carries the record's version and tombstone marker itself.
fn item_mode(record: &ChangeRecord, destination: &str, config: &Config) -> Result<(), Refusal> {
    let image = Version::of(&record.image, &config.names);
    if image.as_ref().ok().and_then(Option::as_ref) != Some(&record.version) {
        return Err(Refusal::VersionMismatch {
            version: record.version.clone(),
            image: match image {
                Ok(Some(v)) => v.to_string(),
                Ok(None) => "none".into(),
                Err(e) => e.to_string(),
            },
        });
    }
    if config.is_tombstone(&record.image) != record.tombstone {
        return Err(Refusal::TombstoneMismatch {
            flag: record.tombstone,
        });
    }
    if record.version.origin == destination {
        return Err(Refusal::OriginIsDestination {
            origin: destination.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{AttributeValue, Item};

    const NOW: u64 = 1_800_000_000_000;
    const DEST: &str = "eu-west-1";

    fn config() -> Config {
        Config::new(DEST, "pk")
    }

    fn record(pk: &str, version: Version) -> ChangeRecord {
        let c = config();
        let key: Item = [("pk".to_string(), AttributeValue::S(pk.into()))].into();
        let mut image = key.clone();
        image.insert("data".into(), AttributeValue::S("x".into()));
        version.stamp_into(&mut image, &c.names);
        ChangeRecord {
            key,
            image,
            tombstone: false,
            version,
            source_region: "us-east-1".into(),
            written_at_ms: NOW,
        }
    }

    fn vetted(r: &ChangeRecord) -> Result<(), Refusal> {
        vet(r, DEST, NOW - 1000, NOW, &config())
    }

    #[test]
    fn an_honest_record_passes() {
        assert_eq!(vetted(&record("a", Version::new(NOW, "us-east-1"))), Ok(()));
        // A backfill's old version, sent just now, passes too.
        assert_eq!(
            vetted(&record("a", Version::new(5, "ap-southeast-2"))),
            Ok(())
        );
    }

    #[test]
    fn forged_records_are_refused_with_the_reason() {
        let v = Version::new(NOW, "us-east-1");
        let mut other_key = record("a", v.clone());
        other_key
            .key
            .insert("pk".into(), AttributeValue::S("b".into()));
        assert!(matches!(
            vetted(&other_key),
            Err(Refusal::KeyMismatch { .. })
        ));

        let mut other_version = record("a", v.clone());
        other_version.version = Version::new(NOW + 1, "us-east-1");
        assert!(matches!(
            vetted(&other_version),
            Err(Refusal::VersionMismatch { .. })
        ));

        let mut flag = record("a", v.clone());
        flag.tombstone = true;
        assert_eq!(
            vetted(&flag),
            Err(Refusal::TombstoneMismatch { flag: true })
        );

        let spreads = record("a", Version::new(NOW, DEST));
        assert!(matches!(
            vetted(&spreads),
            Err(Refusal::OriginIsDestination { .. })
        ));

        let max_ahead = max_ahead_ms(&config());
        let future = record("a", Version::new(NOW + max_ahead + 1000, "us-east-1"));
        let e = vetted(&future).unwrap_err();
        assert!(e.to_string().contains("ahead of the drain's clock"), "{e}");
        let at_max = record("a", Version::new(u64::MAX, "us-east-1"));
        assert!(matches!(
            vetted(&at_max),
            Err(Refusal::FromTheFuture { .. })
        ));
        // Skew is fine, and so is a source whose clock jumped a day ahead: its region holds
        // those versions already.
        assert_eq!(
            vetted(&record("a", Version::new(NOW + 5_000, "us-east-1"))),
            Ok(())
        );
        let a_day = 24 * 3600 * 1000;
        assert_eq!(
            vetted(&record("a", Version::new(NOW + a_day, "us-east-1"))),
            Ok(())
        );
        assert_eq!(
            vetted(&record("a", Version::new(NOW + max_ahead, "us-east-1"))),
            Ok(())
        );
    }

    #[test]
    fn a_record_first_sent_longer_ago_than_tombstones_live_is_refused() {
        let c = config();
        let limit_ms = (c.tombstone_lifetime_s - c.drain_lag_allowance_s) * 1000;
        let r = record("a", Version::new(NOW - limit_ms - 10_000_000, "us-east-1"));
        assert_eq!(vet(&r, DEST, NOW - limit_ms + 1000, NOW, &c), Ok(()));
        let e = vet(&r, DEST, NOW - limit_ms - 10_000_000, NOW, &c).unwrap_err();
        assert!(matches!(e, Refusal::TooOld { .. }), "{e}");
        assert!(e.to_string().contains("ferry backfill"));
    }
}
