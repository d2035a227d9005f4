//! # ferry-client
//!
//! Using Ferry from an application: a small helper over the plain `aws-sdk-dynamodb` client an
//! application already has. It works on the SDK's own fluent builders (and transaction entry
//! types), so the application keeps its client, table, conditions and placeholders; Ferry adds
//! what the replication contract (`docs/contract.md`) asks of a write:
//!
//! - **Stamped writes** ([`Ferry::put`], [`Ferry::update`], [`Ferry::put_entry`],
//!   [`Ferry::update_entry`], item maps with [`Ferry::stamp`]): the version attributes
//!   `(ts, origin)` set to `max(now, previous + 1)` and the local region; puts and tombstones
//!   are also sealed (see [Sealing](#sealing)). A stamped write is forwarded as it is: Ferry
//!   spends no stamp on it, and it is ordered by the application's own clock.
//! - **Write-backs of an item read** ([`Ferry::restore`], [`Ferry::copy_to`],
//!   [`Ferry::strip_ferry_attributes`]): Ferry's attributes of the image are dropped and the
//!   write is stamped and sealed anew, so it never carries back an old version.
//! - **A conditional form** ([`Guard::RefuseNewer`]) that refuses to overwrite a newer version.
//! - **Updates bring a deleted key back**: the tombstone marker and the tombstone's TTL value
//!   are removed, so the update is not hidden in an invisible item.
//! - **Deletes as tombstones** ([`Ferry::delete`], [`Ferry::tombstone_entry`],
//!   [`Ferry::tombstone_item`]), never hard deletes, which could not replicate.
//! - **Reads that treat a tombstone as absent** ([`Ferry::get`], [`Ferry::visible`],
//!   [`Ferry::hide_tombstones_in_query`], [`Ferry::hide_tombstones_in_scan`],
//!   [`Ferry::tombstone_filter`]).
//!
//! In attribute merge mode (`FERRY_MERGE_MODE=attribute`, `docs/attribute-merge.md`) writes go
//! through [`Ferry::update_attributes`] and [`Ferry::put_attributes`] instead: every attribute
//! written gets its own version, so concurrent writes of different attributes in different
//! regions all survive.
//!
//! Attribute names, key schema, tombstone lifetime and the local region come from ferry-core's
//! [`Config`], the one the functions read ([`Ferry::from_env`] reads the same variables).
//!
//! ```no_run
//! use aws_sdk_dynamodb::types::AttributeValue;
//! use ferry_client::{Ferry, Error};
//!
//! # async fn demo(client: aws_sdk_dynamodb::Client) -> Result<(), Error> {
//! let ferry = Ferry::from_env()?; // FERRY_LOCAL_REGION, FERRY_PARTITION_KEY, ...
//! let key = || [("pk".to_string(), AttributeValue::S("order#1".into()))].into();
//!
//! // A put, stamped; the application's own condition is kept and ANDed with Ferry's.
//! let written = ferry
//!     .put(client.put_item().table_name("orders").set_item(Some(key()))
//!         .item("status", AttributeValue::S("new".into())))
//!     .send()
//!     .await?;
//!
//! // An update above the version just written.
//! ferry
//!     .update(client.update_item().table_name("orders").set_key(Some(key()))
//!         .update_expression("SET #s = :s")
//!         .expression_attribute_names("#s", "status")
//!         .expression_attribute_values(":s", AttributeValue::S("paid".into())))
//!     .previous(written.version)
//!     .send()
//!     .await?;
//!
//! // A delete is a tombstone; a get then sees no item.
//! ferry.delete(client.put_item().table_name("orders"), key()).send().await?;
//! let item = ferry.get(client.get_item().table_name("orders").set_key(Some(key()))).await?;
//! assert!(item.is_none());
//! # Ok(()) }
//! ```
//!
//! ## How `send` picks the version and handles a failed condition
//! Every `send` is one conditional request per attempt, with `ALL_OLD` on a failed condition:
//! 1. The version is `max(now, known + 1)` ([`Ferry::next_version`]), `known` being the
//!    [`Previous`] the caller passed, else the version the put item itself carries (an item read,
//!    changed and put back), else nothing.
//! 2. Ferry's condition, ANDed with the application's: the stored version is older than this
//!    one, or there is none (`attribute_not_exists(ts) OR ts < :ts OR (ts = :ts AND origin <
//!    :origin)`, the destination's rule). An unversioned stored item is a local write whose stamp
//!    has not happened yet, so an application write after it may replace it.
//! 3. When the condition fails, the returned item says which part failed (evaluated here with
//!    DynamoDB's rules): Ferry's part with [`Guard::Overwrite`] → try again above the stored
//!    version ("the helper reads it", at no cost when the clock is ahead, which is the usual
//!    case); with [`Guard::RefuseNewer`] → [`Error::Refused`]; only the application's part →
//!    [`Error::ConditionFailed`] with the stored item.
//!
//! Whatever `send` writes is above what it replaced, so the stream record is forwarded as it is
//! (case 2 of the contract) and Ferry never has to stamp it.
//!
//! ## Sealing
//! Every put the helper makes ([`Ferry::put`], [`Ferry::put_entry`], [`Ferry::stamp`],
//! [`Ferry::restore`], [`Ferry::copy_to`]) and every tombstone carries, besides its version, the
//! seal `ferry_sum` (`FERRY_ATTR_SUM`): `ferry_core::digest::seal_of` the item as written. Ferry's
//! attributes the item already carries (an item read, changed and put back) are dropped first
//! ([`Ferry::strip_ferry_attributes`]; the version it carried still counts as `known`). Enqueue
//! forwards such a write as it is. A plain write that carries back a version and seal it read
//! over other content no longer matches its seal, and Ferry stamps it (one more write).
//!
//! An update ([`Ferry::update`], [`Ferry::update_entry`]) cannot be sealed: the item's content
//! after it is DynamoDB's to compute. It therefore removes `ferry_sum` in the same request. An
//! item without a seal is trusted as sealed, and that is right here: the update's version is
//! fresh and local, and `send` writes it above the stored one, so enqueue forwards it as it is
//! (case 2) and last-writer-wins orders it by the application's clock, as for a put. (A one-shot
//! [`UpdateRequest::stamped`] or transaction entry without [`Guard::RefuseNewer`] that lands below
//! the stored version is stamped by Ferry, as any such write is.) Keeping the old seal instead
//! would leave every update unsealed: a stamp per update, ordered by Ferry's clock. The price:
//! until the key's next sealed write (a helper put or tombstone, an enqueue stamp), a plain write
//! that carries back its version over other content or under another key is taken for Ferry's
//! own, the contract's known limit for items written before seals existed. Write such items back
//! with [`Ferry::restore`] / [`Ferry::copy_to`], never as read.
//!
//! ## Updates onto a deleted key
//! A tombstone is an item to DynamoDB: a plain update of a deleted key would write the
//! application's attributes next to the marker, an item every reader treats as absent. A stamped
//! update therefore carries `attribute_not_exists(marker)`. When that fails and the stored item is
//! a tombstone, the next attempt brings the key back: `REMOVE marker, ttl` conditioned on the
//! marker and the TTL still holding the values just seen. UpdateItem cannot remove an attribute
//! only if it holds a value, so the value is pinned by the condition instead; if anything changed
//! in between, the condition fails and the loop looks again. When the application's update sets
//! or removes the TTL attribute itself, its action stands and Ferry removes only the marker.
//! The TTL a tombstone holds is taken as the tombstone's own: the helper cannot tell it from a
//! TTL an application wrote onto the deleted key without the helper, before Ferry stamped that
//! write. Removing it is the safe side (the item lives on rather than expiring).
//!
//! ## Transactions
//! A transaction cannot try again inside itself, so each entry is stamped once, from what the
//! caller knows ([`Previous`], e.g. from [`Ferry::read_previous`]): the version is
//! `max(now, known + 1)`. A stamped update carries `attribute_not_exists(marker)` unless
//! `previous` says the key is a tombstone, in which case it brings the key back pinned to that
//! tombstone. When the stored item is not what the caller knew, the transaction is cancelled
//! (`ConditionalCheckFailed` for that entry, with the stored item: entries ask for `ALL_OLD`
//! unless the application chose otherwise); read again ([`Ferry::previous_of`] on the returned
//! item) and retry the transaction.
//!
//! Replication is per item: the transaction is atomic only in the region that ran it (see the
//! contract's known limits). A hard `Delete` entry never replicates: use
//! [`Ferry::tombstone_entry`].

mod attribute;
mod error;
mod expr;
mod ferry;
mod read;
mod restore;
mod transact;
mod write;

pub use attribute::AttributesWritten;
pub use error::{Error, RequestError};
pub use ferry::{Ferry, Previous, DEFAULT_MAX_ATTEMPTS};
pub use read::Filter;
pub use write::{DeleteRequest, Guard, PutRequest, Stamped, UpdateRequest, Written};

pub use ferry_core::clock::{self, Clock};
pub use ferry_core::{Config, Version};

/// An attribute value as the SDK has it.
pub type SdkValue = aws_sdk_dynamodb::types::AttributeValue;
/// An item (or a key) as the SDK has it.
pub type SdkItem = std::collections::HashMap<String, SdkValue>;
