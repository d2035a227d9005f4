//! Attribute merge mode's write (`docs/attribute-merge.md`): a strongly consistent read, the
//! core's pure merge ([`plan_merge`]), and an `UpdateItem` of the winning attributes and the
//! version map under the condition that what was read is unchanged. A failed condition is a
//! concurrent write: read and merge again, a bounded number of times — never an error.

use crate::error::AwsError;
use crate::table::{Table, WriteOutcome};
use ferry_core::merge::{plan_merge, AttrState, MergePlan, MergeWrite, Unversioned};
use ferry_core::{Config, Item};

pub use ferry_core::merge::MAX_MERGE_ROUNDS;

/// What merging a state into a table's item came to.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeOutcome {
    /// Written after `rounds` attempts (1: no concurrent write got in between).
    Written {
        rounds: u32,
        changed_attributes: usize,
    },
    /// Nothing to change: stale (or nothing to stamp). A read, no write.
    Unchanged { rounds: u32 },
    /// The item holds attributes without versions (with [`Unversioned::Wait`]): retry later.
    Pending { unversioned: Vec<String> },
    /// Every round's condition failed: retry later.
    Contended,
    /// The stored item's version map cannot be read.
    Invalid(String),
}

impl Table {
    /// `UpdateItem` setting `set` and removing `remove` under `condition`.
    pub async fn update_if(&self, write: &MergeWrite) -> Result<WriteOutcome, AwsError> {
        let parts = write.update_parts();
        self.update_with(
            &write.key,
            parts.update_expression,
            parts.condition_expression,
            parts.expression,
        )
        .await
    }

    /// Merges into the item at `key` the state `incoming` computes from the current item (the
    /// drain's is the record's state whatever the item; enqueue's stamp depends on the item).
    /// Each round reads strongly consistent, so a round never works from a stale item.
    pub async fn merge_into(
        &self,
        key: &Item,
        incoming: impl Fn(Option<&Item>) -> AttrState,
        unversioned: Unversioned,
        config: &Config,
    ) -> Result<MergeOutcome, AwsError> {
        for round in 1..=MAX_MERGE_ROUNDS {
            let current = self.get(key).await?;
            let state = incoming(current.as_ref());
            let plan = match plan_merge(key, current.as_ref(), &state, unversioned, config) {
                Ok(plan) => plan,
                Err(e) => return Ok(MergeOutcome::Invalid(e.to_string())),
            };
            let write = match plan {
                MergePlan::Unchanged => return Ok(MergeOutcome::Unchanged { rounds: round }),
                MergePlan::Pending { unversioned } => {
                    return Ok(MergeOutcome::Pending { unversioned })
                }
                MergePlan::Write(write) => write,
            };
            match self.update_if(&write).await? {
                WriteOutcome::Written => {
                    return Ok(MergeOutcome::Written {
                        rounds: round,
                        changed_attributes: write.changed_attributes,
                    })
                }
                WriteOutcome::ConditionFailed(_) => continue,
            }
        }
        Ok(MergeOutcome::Contended)
    }
}
