//! Reads `ferry doctor` needs beyond the drain's and the tools' own: a table's TTL setting.

use crate::error::{classify_sdk_error, AwsError};
use crate::table::Table;
use aws_sdk_dynamodb::types::TimeToLiveStatus;

impl Table {
    /// The attribute TTL is enabled (or being enabled) on; `None` when TTL is off.
    pub async fn ttl_attribute(&self) -> Result<Option<String>, AwsError> {
        let out = self
            .client
            .describe_time_to_live()
            .table_name(&self.name)
            .send()
            .await
            .map_err(|e| classify_sdk_error("DescribeTimeToLive", &e))?;
        Ok(out.time_to_live_description.and_then(|d| {
            matches!(
                d.time_to_live_status,
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            )
            .then_some(d.attribute_name)
            .flatten()
        }))
    }
}
