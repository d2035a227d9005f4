//! The one last-writer-wins apply path: a conditional put of the record's image, and, when the
//! destination refuses it, the core's judgement of what it holds. The drain, `ferry backfill`
//! and `ferry verify --repair` all apply through here, so they cannot disagree.

use crate::error::AwsError;
use crate::table::{Table, WriteOutcome};
use ferry_core::{apply_condition, image_to_store, judge, ChangeRecord, Config, Judgement};

/// What applying a record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The record's image is now stored.
    Written,
    /// The condition failed; the core's judgement of the stored item (stale, conflict, pending).
    Judged(Judgement),
}

impl Table {
    /// Applies `record` at `now_ms` with the contract's LWW condition (`ALL_OLD` on failure,
    /// judged by [`ferry_core::judge`]); the image stored is [`ferry_core::image_to_store`]'s.
    pub async fn apply(
        &self,
        record: &ChangeRecord,
        now_ms: u64,
        config: &Config,
    ) -> Result<ApplyOutcome, AwsError> {
        let condition = apply_condition(record, config);
        let image = image_to_store(record, now_ms, config);
        Ok(match self.put_if(&image, &condition).await? {
            WriteOutcome::Written => ApplyOutcome::Written,
            WriteOutcome::ConditionFailed(stored) => {
                ApplyOutcome::Judged(judge(record, stored.as_ref(), config))
            }
        })
    }
}
