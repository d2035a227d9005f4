//! `ferry backfill`'s decision per source item: replicate a sealed version as it is, or give an
//! unversioned (or unsealed) item its first version the way enqueue would (`docs/contract.md`,
//! "Backfill"). Pure: the CLI scans, calls [`step_for`] and writes.

use crate::classify::{Hint, Wrote};
use crate::item::{describe_key, key_of};
use crate::reconcile::Stamp;
use crate::{reconcile, Action, ChangeRecord, Config, Item};

/// What to do with one scanned (or re-read) source item.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Versioned: apply it everywhere.
    Apply(ChangeRecord),
    /// Unversioned: the contract's bootstrap stamp (conditional on it still being unversioned).
    Stamp { key: Item, stamp: Stamp },
    /// Gone (deleted meanwhile), or not replicated by the item filter.
    Skip,
}

/// The step for the source's current item (`None`: absent). `now_ms` is the source's clock:
/// a stamp gets the version `(now, source)`, as enqueue's stamp of an unversioned write does.
pub fn step_for(current: Option<&Item>, now_ms: u64, config: &Config) -> Result<Step, String> {
    let Some(item) = current else {
        return Ok(Step::Skip);
    };
    let key = key_of(item, &config.key).map_err(|k| format!("item lacks key attribute `{k}`"))?;
    if !config.filter.admits(&key, &config.key, item, &Item::new()) {
        return Ok(Step::Skip);
    }
    // An unsealed version is an application's write-back, not a version to spread: stamp it.
    let sealed = crate::digest::is_sealed(item, &config.names);
    if let Some(record) = ChangeRecord::from_stored(item, &config.local_region, config)
        .map_err(|e| format!("{}: {e}", describe_key(&key)))?
        .filter(|_| sealed)
    {
        return Ok(Step::Apply(record));
    }
    // The hint of a write nobody has seen: reconcile's "no version" row (or the unsealed one).
    let hint = Hint {
        key: key.clone(),
        seen: None,
        new_version: None,
        changed: Vec::new(),
        tombstone_ttl: None,
        expired: None,
        clobbered: None,
        wrote: Wrote::Image {
            ttl: item.get(&config.names.ttl).cloned(),
        },
    };
    match reconcile(&hint, Some(item), now_ms, config)
        .map_err(|e| format!("{}: {e}", describe_key(&key)))?
    {
        Action::Stamp(stamp) => Ok(Step::Stamp { key, stamp }),
        other => Err(format!(
            "{}: unexpected bootstrap action {other:?}",
            describe_key(&key)
        )),
    }
}
