//! Writes in attribute merge mode (`FERRY_MERGE_MODE=attribute`, `docs/attribute-merge.md`):
//! every attribute a write sets or removes gets its own version in the item's version map, so a
//! concurrent write of *another* attribute in another region survives the merge.
//!
//! DynamoDB cannot merge attribute by attribute in one request, so a write here is the drain's
//! read–merge–write: a strongly consistent `GetItem`, the core's [`write_delta`] (each changed
//! attribute versioned `max(now, its entry + 1, the item tombstone + 1)`, local origin) merged
//! with [`plan_merge`], and an `UpdateItem` conditioned on what was read. A failed condition is a
//! concurrent write: read and merge again, up to the helper's attempts. That is why these take
//! the application's client and table rather than one request builder.

use crate::error::{Error, RequestError};
use crate::ferry::Ferry;
use crate::{SdkItem, SdkValue};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::Client;
use ferry_core::merge::{plan_merge, write_delta, MergePlan, Unversioned};
use ferry_core::{AttributeValue, Item, MergeMode};

/// What an attribute-mode write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributesWritten {
    /// Conditional attempts (1: nothing got in between the read and the write).
    pub attempts: u32,
    /// Application attributes set or removed.
    pub changed_attributes: usize,
}

fn to_core(item: &SdkItem) -> Item {
    item.iter()
        .map(|(k, v)| (k.clone(), AttributeValue::from(v.clone())))
        .collect()
}

fn to_sdk(item: Item) -> SdkItem {
    item.into_iter()
        .map(|(k, v)| (k, SdkValue::from(v)))
        .collect()
}

impl Ferry {
    /// `UpdateItem` in attribute mode: sets (`Some`) or removes (`None`) each named attribute,
    /// each with its own new version.
    pub async fn update_attributes(
        &self,
        client: &Client,
        table: &str,
        key: SdkItem,
        changes: Vec<(String, Option<SdkValue>)>,
    ) -> Result<AttributesWritten, Error> {
        let changes: Vec<(String, Option<AttributeValue>)> = changes
            .into_iter()
            .map(|(n, v)| (n, v.map(AttributeValue::from)))
            .collect();
        self.check_attributes(changes.iter().map(|(n, _)| n.as_str()))?;
        self.merge_write(client, table, &key, |_| changes.clone())
            .await
    }

    /// `PutItem` in attribute mode: the item's attributes are set, and every other application
    /// attribute the stored item holds is removed — each with its own new version (a plain
    /// `PutItem` would replace the version map, see the known limits).
    pub async fn put_attributes(
        &self,
        client: &Client,
        table: &str,
        item: SdkItem,
    ) -> Result<AttributesWritten, Error> {
        let config = &self.config;
        let mut key = SdkItem::new();
        for name in config.key.names() {
            let value = item
                .get(name)
                .ok_or_else(|| RequestError::MissingKeyAttribute(name.to_string()))?;
            key.insert(name.to_string(), value.clone());
        }
        let set: Vec<(String, Option<AttributeValue>)> = item
            .iter()
            .filter(|(n, _)| !config.key.is_key(n))
            .map(|(n, v)| (n.clone(), Some(AttributeValue::from(v.clone()))))
            .collect();
        self.check_attributes(set.iter().map(|(n, _)| n.as_str()))?;
        self.merge_write(client, table, &key, |current| {
            let mut changes = set.clone();
            let gone = current.into_iter().flat_map(|c| c.keys()).filter(|n| {
                !config.key.is_key(n)
                    && !config.names.is_ferry_attribute(n)
                    && !item.contains_key(*n)
            });
            changes.extend(gone.map(|n| (n.clone(), None)));
            changes
        })
        .await
    }

    /// Attribute mode only; never a key attribute or one of Ferry's.
    fn check_attributes<'a>(&self, names: impl Iterator<Item = &'a str>) -> Result<(), Error> {
        if self.config.merge_mode != MergeMode::Attribute {
            return Err(RequestError::NotAttributeMode.into());
        }
        for name in names {
            if self.config.names.is_ferry_attribute(name) {
                return Err(RequestError::FerryAttribute(name.to_string()).into());
            }
            if self.config.key.is_key(name) {
                return Err(RequestError::KeyAttribute(name.to_string()).into());
            }
        }
        Ok(())
    }

    /// The read–merge–conditional-update loop; `changes` computes the write from the item read.
    async fn merge_write(
        &self,
        client: &Client,
        table: &str,
        key: &SdkItem,
        changes: impl Fn(Option<&Item>) -> Vec<(String, Option<AttributeValue>)>,
    ) -> Result<AttributesWritten, Error> {
        let config = &self.config;
        let core_key = to_core(key);
        for attempt in 1..=self.max_attempts {
            let read = client
                .get_item()
                .table_name(table)
                .set_key(Some(key.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| Error::dynamo("GetItem", e))?;
            let current = read.item.as_ref().map(to_core);
            let delta = write_delta(
                current.as_ref(),
                &changes(current.as_ref()),
                false,
                self.now_ms(),
                config,
            )?;
            let write = match plan_merge(
                &core_key,
                current.as_ref(),
                &delta,
                Unversioned::Keep,
                config,
            )? {
                MergePlan::Write(write) => write,
                // Nothing to change (no attributes given); Keep never waits.
                MergePlan::Unchanged | MergePlan::Pending { .. } => {
                    return Ok(AttributesWritten {
                        attempts: attempt,
                        changed_attributes: 0,
                    })
                }
            };
            let parts = write.update_parts();
            let values = to_sdk(parts.expression.values.into_iter().collect());
            let result = client
                .update_item()
                .table_name(table)
                .set_key(Some(key.clone()))
                .update_expression(parts.update_expression)
                .condition_expression(parts.condition_expression)
                .set_expression_attribute_names(Some(parts.expression.names))
                .set_expression_attribute_values((!values.is_empty()).then_some(values))
                .send()
                .await;
            match result {
                Ok(_) => {
                    return Ok(AttributesWritten {
                        attempts: attempt,
                        changed_attributes: write.changed_attributes,
                    })
                }
                Err(e) => match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                        tracing::debug!(
                            attempt,
                            "the item changed since it was read; merging again"
                        );
                    }
                    _ => return Err(Error::dynamo("UpdateItem", e)),
                },
            }
        }
        Err(Error::Contended {
            attempts: self.max_attempts,
        })
    }
}
