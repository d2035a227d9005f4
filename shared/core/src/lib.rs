//! Ferry's replication core: every decision of the replication contract (`docs/contract.md`)
//! as a pure function. No I/O and no AWS client here: the functions and the CLI call these, and
//! the convergence checker (`ferry-check`) drives the very same functions over simulated regions.
//!
//! Data flows one way: stream record → [`classify`] → [`ChangeRecord`] → [`buffer::pack`] →
//! buffer message → [`buffer::unpack`] → [`coalesce`] → [`apply::apply_condition`] / [`apply::judge`].
//! Local writes that cannot be forwarded as they are go through [`reconcile`].

pub mod apply;
pub mod backfill;
pub mod buffer;
pub mod classify;
pub mod clock;
pub mod coalesce;
pub mod codec;
pub mod compare;
pub mod condition;
pub mod config;
pub mod conflict;
pub mod digest;
pub mod disposition;
pub mod fanout;
pub mod heartbeat;
pub mod item;
pub mod merge;
pub mod migrate;
pub mod pause;
pub mod peer;
pub mod rate;
pub mod reconcile;
pub mod record;
pub mod version;
pub mod vet;
pub mod wear;

pub use apply::{apply_condition, image_to_store, judge, Judgement};
#[cfg(feature = "stream")]
pub use classify::{classify, ClassifyInput};
pub use classify::{Classified, ClassifyError, Hint};
pub use clock::Clock;
pub use coalesce::coalesce;
pub use condition::Condition;
pub use config::{AttributeNames, Config, ConfigError, ItemFilter, KeySchema, MergeMode};
pub use item::{AttributeValue, Item, ItemKey};
pub use reconcile::{reconcile, Action};
pub use record::ChangeRecord;
pub use version::{Version, VersionError};
