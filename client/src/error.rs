//! What can go wrong, as types: an application must be able to tell "my own condition failed" from
//! "a newer version is stored" from "DynamoDB is not answering".

use crate::SdkItem;
use aws_sdk_dynamodb::error::SdkError;
use ferry_core::{ConfigError, Version, VersionError};

/// An error of a Ferry helper call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Ferry configuration (attribute names, key, region) is invalid.
    #[error("Ferry configuration: {0}")]
    Config(#[from] ConfigError),
    /// The request cannot be stamped as it is (nothing was sent).
    #[error("request not usable with Ferry: {0}")]
    Request(#[from] RequestError),
    /// [`Guard::RefuseNewer`](crate::Guard::RefuseNewer): the stored item holds a version not
    /// older than this write's, so this write would lose under last-writer-wins. Nothing was
    /// written.
    #[error(
        "refused: the stored item has version {stored}, not older than this write's {attempted}"
    )]
    Refused { stored: Version, attempted: Version },
    /// The application's own condition (or [`PutRequest::if_absent`](crate::PutRequest::if_absent))
    /// failed. `item` is the stored item as DynamoDB returned it (`ALL_OLD`), `None` when there
    /// is none.
    #[error("the request's own condition failed")]
    ConditionFailed { item: Option<SdkItem> },
    /// Every attempt met a different stored item (concurrent writers on one key): nothing was
    /// written; trying again later is safe.
    #[error(
        "the item changed under {attempts} conditional attempts in a row; nothing was written"
    )]
    Contended { attempts: u32 },
    /// The stored item carries a Ferry version that cannot be read (half of it, or a malformed
    /// value): Ferry cannot order a write against it.
    #[error("the stored item's Ferry version is unreadable: {0}")]
    StoredVersion(#[from] VersionError),
    /// Attribute mode: the stored item's version map cannot be read.
    #[error("the stored item's version map is unreadable: {0}")]
    StoredVersionMap(#[from] ferry_core::merge::MergeError),
    /// DynamoDB (or the way to it) failed: transport, throttling, access, validation, ...
    #[error("DynamoDB {operation}: {source}")]
    Dynamo {
        operation: &'static str,
        // Boxed: the SDK's error is large, and Result<_, Error> is on every call path.
        #[source]
        source: Box<aws_sdk_dynamodb::Error>,
    },
}

impl Error {
    /// The SDK's error, when DynamoDB itself failed the call.
    pub fn as_dynamo(&self) -> Option<&aws_sdk_dynamodb::Error> {
        match self {
            Error::Dynamo { source, .. } => Some(source),
            _ => None,
        }
    }

    pub(crate) fn dynamo<E, R>(operation: &'static str, e: SdkError<E, R>) -> Self
    where
        aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
    {
        Error::Dynamo {
            operation,
            source: Box::new(aws_sdk_dynamodb::Error::from(e)),
        }
    }
}

/// Why a request cannot be stamped as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A required part of the request (table name, item, key) is not set.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A key lacks one of the table's key attributes.
    #[error("the key lacks key attribute `{0}`")]
    MissingKeyAttribute(String),
    /// A key holds an attribute that is not one of the table's key attributes (a tombstone must
    /// hold nothing but its key and Ferry's attributes).
    #[error("`{0}` is not a key attribute of the table Ferry is configured for")]
    NotAKeyAttribute(String),
    /// The request already uses a placeholder with the prefix Ferry reserves.
    #[error("placeholder `{0}` uses the prefix Ferry reserves for its own (`#ferry_`, `:ferry_`)")]
    ReservedPlaceholder(String),
    /// A legacy (pre-expression) parameter, which DynamoDB does not allow beside expressions.
    #[error("the legacy parameter {legacy} cannot be combined with expressions; use {instead}")]
    Legacy {
        legacy: &'static str,
        instead: &'static str,
    },
    /// The request writes one of the attributes Ferry owns (the version, the seal, the tombstone
    /// marker or the version map).
    #[error("the request writes `{0}`, an attribute Ferry owns")]
    FerryAttribute(String),
    /// An attribute-mode write ([`Ferry::update_attributes`](crate::Ferry::update_attributes),
    /// [`Ferry::put_attributes`](crate::Ferry::put_attributes)) with the helper configured for
    /// item mode.
    #[error("attribute writes need FERRY_MERGE_MODE=attribute")]
    NotAttributeMode,
    /// An item-versioned write (put, update, delete, transaction entries, stamps) with the
    /// helper configured for attribute mode: use the attribute writes there.
    #[error("FERRY_MERGE_MODE=attribute: write with update_attributes/put_attributes (an item version would be refused as a write of the other mode)")]
    NotItemMode,
    /// A write of a key attribute (keys never change).
    #[error("`{0}` is a key attribute; keys never change")]
    KeyAttribute(String),
    /// The update expression cannot be read.
    #[error("update expression: {0}")]
    UpdateExpression(String),
    /// A projection expression cannot be read.
    #[error("projection expression: {0}")]
    ProjectionExpression(String),
    /// A hard delete never replicates: delete through a tombstone.
    #[error("a hard delete in a transaction is never replicated; use Ferry::tombstone_entry")]
    HardDelete,
    /// A delete's put request must carry no item: the tombstone is the item.
    #[error("a tombstone delete takes the key only; the put request must not carry an item")]
    ItemOnDelete,
    /// [`Ferry::restore`](crate::Ferry::restore) / [`Ferry::copy_to`](crate::Ferry::copy_to):
    /// the put request already carries an item; the image is the item.
    #[error("restore and copy_to take the image; the put request must not carry an item")]
    ItemOnWriteBack,
    /// [`Ferry::restore`](crate::Ferry::restore) / [`Ferry::copy_to`](crate::Ferry::copy_to) of
    /// a tombstone: the image is a deleted key, not an item.
    #[error("the image is a tombstone (a deleted key); restore a deletion with Ferry::delete")]
    TombstoneImage,
    /// A transaction entry holds no operation at all.
    #[error("the transaction entry holds no operation")]
    EmptyEntry,
}
