//! The helper itself: Ferry's configuration and a clock; every request goes through it.

use crate::error::Error;
use crate::{SdkItem, SdkValue};
use ferry_core::clock::{self, Clock};
use ferry_core::{AttributeValue, Config, Item, Version};
use std::sync::Arc;

/// Attempts of a conditional write before [`Error::Contended`]; each failed attempt means the
/// stored item changed (or showed a version above the clock's), so five is plenty.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Ferry's helper for an application's own DynamoDB requests in one region.
///
/// Holds the same [`Config`] the functions read (attribute names, key schema, tombstone
/// lifetime, local region) and a clock. Cheap to clone; holds no AWS client: requests come in as
/// the SDK's own fluent builders, made from the application's client.
#[derive(Clone)]
pub struct Ferry {
    pub(crate) config: Arc<Config>,
    clock: Clock,
    pub(crate) max_attempts: u32,
}

impl std::fmt::Debug for Ferry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ferry")
            .field("config", &self.config)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// What a writer knows of the stored item before writing. It sets the new version above the
/// known one (`max(now, previous + 1)`), and lets an update bring a deleted key back in one
/// request. [`Previous::Unknown`] is always safe: [`PutRequest::send`](crate::PutRequest::send)
/// and the other `send`s learn the stored state from a failed condition and try again above it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Previous {
    /// Nothing is known: the version comes from the clock.
    #[default]
    Unknown,
    /// There is no item under the key.
    Absent,
    /// A live item (its version `None` when it was written without a stamp).
    Item { version: Option<Version> },
    /// A tombstone (the key reads as absent): its version, and the TTL value it holds.
    Tombstone {
        version: Option<Version>,
        ttl: Option<SdkValue>,
    },
}

impl Previous {
    /// The stored version, if known.
    pub fn version(&self) -> Option<&Version> {
        match self {
            Previous::Item { version } | Previous::Tombstone { version, .. } => version.as_ref(),
            Previous::Unknown | Previous::Absent => None,
        }
    }
}

impl From<Version> for Previous {
    fn from(version: Version) -> Self {
        Previous::Item {
            version: Some(version),
        }
    }
}

impl From<Option<Version>> for Previous {
    /// `None`: the writer read the key and found nothing (or nothing versioned).
    fn from(version: Option<Version>) -> Self {
        match version {
            Some(v) => Previous::from(v),
            None => Previous::Absent,
        }
    }
}

impl Ferry {
    /// A helper for `config`'s region, on the machine's clock. The configuration is validated.
    pub fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        Ok(Ferry {
            config: Arc::new(config),
            clock: clock::system(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        })
    }

    /// The configuration from the environment, exactly as the functions read it
    /// ([`Config::from_lookup`]): `FERRY_LOCAL_REGION` (else `AWS_REGION`), `FERRY_PARTITION_KEY`,
    /// `FERRY_SORT_KEY`, `FERRY_ATTR_*`, `FERRY_TOMBSTONE_LIFETIME_S`, ...
    pub fn from_env() -> Result<Self, Error> {
        Self::new(Config::from_lookup(|k| std::env::var(k).ok())?)
    }

    /// Another clock (tests, a deliberately skewed region in the local sandbox).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Bounds the conditional attempts of one `send` (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Milliseconds since the epoch on this helper's clock.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// A fresh version for a write: `max(now, previous + 1)` ms, the local region as origin.
    /// Strictly above `previous`, so the write wins over what it replaces everywhere.
    pub fn next_version(&self, previous: Option<&Version>) -> Version {
        let now = self.now_ms();
        let ts = previous.map_or(now, |p| now.max(p.ts_ms.saturating_add(1)));
        Version::new(ts, self.config.local_region.clone())
    }

    /// The Ferry version an item carries (`None`: none).
    pub fn version_of(&self, item: &SdkItem) -> Result<Option<Version>, Error> {
        let names = &self.config.names;
        // Only the two version attributes are converted: items can be large.
        let mut core = Item::with_capacity(2);
        for name in [&names.ts, &names.origin] {
            if let Some(v) = item.get(name) {
                core.insert(name.clone(), AttributeValue::from(v.clone()));
            }
        }
        Ok(Version::of(&core, names)?)
    }

    /// True if the item is a tombstone: it reads as absent. The same test as the functions'
    /// and the verify tool's ([`Config::is_tombstone`]).
    pub fn is_tombstone(&self, item: &SdkItem) -> bool {
        matches!(
            item.get(&self.config.names.tombstone),
            Some(SdkValue::Bool(true))
        )
    }

    /// What an item read from the table (`None`: no item) tells a later write.
    pub fn previous_of(&self, item: Option<&SdkItem>) -> Result<Previous, Error> {
        let Some(item) = item else {
            return Ok(Previous::Absent);
        };
        let version = self.version_of(item)?;
        Ok(if self.is_tombstone(item) {
            Previous::Tombstone {
                version,
                ttl: item.get(&self.config.names.ttl).cloned(),
            }
        } else {
            Previous::Item { version }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ferry_at(now: u64) -> Ferry {
        Ferry::new(Config::new("us-east-1", "pk"))
            .unwrap()
            .with_clock(Arc::new(move || now))
    }

    #[test]
    fn next_version_is_above_previous_and_the_clock() {
        let f = ferry_at(1_000);
        assert_eq!(f.next_version(None), Version::new(1_000, "us-east-1"));
        assert_eq!(
            f.next_version(Some(&Version::new(5_000, "eu-west-1"))),
            Version::new(5_001, "us-east-1")
        );
        assert_eq!(
            f.next_version(Some(&Version::new(10, "zz"))),
            Version::new(1_000, "us-east-1")
        );
        assert_eq!(
            f.next_version(Some(&Version::new(u64::MAX, "a"))).ts_ms,
            u64::MAX
        );
    }

    #[test]
    fn previous_of_items() {
        let f = ferry_at(1);
        let n = &f.config().names;
        let mut item: SdkItem = [
            ("pk".to_string(), SdkValue::S("a".into())),
            (n.ts.clone(), SdkValue::N("7".into())),
            (n.origin.clone(), SdkValue::S("eu-west-1".into())),
        ]
        .into();
        assert_eq!(
            f.previous_of(Some(&item)).unwrap(),
            Previous::from(Version::new(7, "eu-west-1"))
        );
        item.insert(n.tombstone.clone(), SdkValue::Bool(true));
        item.insert(n.ttl.clone(), SdkValue::N("99".into()));
        assert_eq!(
            f.previous_of(Some(&item)).unwrap(),
            Previous::Tombstone {
                version: Some(Version::new(7, "eu-west-1")),
                ttl: Some(SdkValue::N("99".into()))
            }
        );
        item.remove(&n.origin);
        assert!(matches!(
            f.previous_of(Some(&item)),
            Err(Error::StoredVersion(_))
        ));
        assert_eq!(f.previous_of(None).unwrap(), Previous::Absent);
    }
}
