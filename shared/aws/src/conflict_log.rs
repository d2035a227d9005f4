//! The conflict log's table (`ferry_core::conflict`): the drain's batched write of the entries a
//! take found, and the reads of `ferry conflicts` (a scan for `list`, a read by id for `show`
//! and `reapply`). What an entry holds, and its item form, are the core's.

use crate::error::{classify_sdk_error, AwsError};
use crate::table::Table;
use crate::values::to_sdk;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use ferry_core::conflict::{Entry, EntryError, ID};
use ferry_core::{AttributeValue, Item};

/// `BatchWriteItem` takes at most 25 puts.
const BATCH: usize = 25;

/// One region's conflict table.
#[derive(Clone, Debug)]
pub struct ConflictLog {
    pub table: Table,
}

/// What a write came to: entries written, and entries not written (an error, or left
/// unprocessed by DynamoDB; the log is best-effort, so neither is retried).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Logged {
    pub written: usize,
    pub failed: usize,
}

/// A stored entry as read: readable, or the reason it is not.
pub type Read = Result<Entry, EntryError>;

impl ConflictLog {
    pub fn new(table: Table) -> Self {
        ConflictLog { table }
    }

    /// Writes `entries` with `BatchWriteItem`, 25 at a time (an entry's id is its key: a
    /// conflict written twice is one entry). The first error stops the write; it is returned
    /// with the counts, the entries not sent counted as failed.
    pub async fn write(&self, entries: &[Entry]) -> (Logged, Option<AwsError>) {
        let mut logged = Logged::default();
        for (n, chunk) in entries.chunks(BATCH).enumerate() {
            match self.write_batch(chunk).await {
                Ok(unprocessed) => {
                    logged.written += chunk.len() - unprocessed;
                    logged.failed += unprocessed;
                }
                Err(e) => {
                    logged.failed += entries.len() - n * BATCH;
                    return (logged, Some(e));
                }
            }
        }
        (logged, None)
    }

    /// One `BatchWriteItem`; the number of puts DynamoDB left unprocessed.
    async fn write_batch(&self, entries: &[Entry]) -> Result<usize, AwsError> {
        let mut requests = Vec::with_capacity(entries.len());
        for e in entries {
            let put = PutRequest::builder()
                .set_item(Some(to_sdk(&e.to_item())))
                .build()
                .map_err(|b| AwsError {
                    operation: "BatchWriteItem",
                    kind: crate::error::ErrorKind::Invalid,
                    code: None,
                    message: b.to_string(),
                })?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        let out = self
            .table
            .client
            .batch_write_item()
            .request_items(&self.table.name, requests)
            .send()
            .await
            .map_err(|e| classify_sdk_error("BatchWriteItem", &e))?;
        Ok(out
            .unprocessed_items
            .and_then(|mut u| u.remove(&self.table.name))
            .map_or(0, |left| left.len()))
    }

    /// The entry `id`, if the log holds it.
    pub async fn get(&self, id: &str) -> Result<Option<Read>, AwsError> {
        let key: Item = [(ID.to_string(), AttributeValue::S(id.to_string()))].into();
        let item = self.table.get(&key).await?;
        Ok(item.map(|i| Entry::from_item(&i)))
    }

    /// Every entry the log holds (a scan: the log is small by design, bounded by its cap per
    /// invocation and its retention).
    pub async fn scan(&self) -> Result<Vec<Read>, AwsError> {
        let items = self.table.scan_all().await?;
        Ok(items.iter().map(Entry::from_item).collect())
    }
}
