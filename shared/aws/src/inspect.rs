//! Reads `ferry doctor` needs beyond the drain's and the tools' own: a table's TTL setting, a
//! queue's size limit, retention and policy.

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

/// What `ferry doctor` judges of a queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueSettings {
    pub max_message_size: Option<u64>,
    pub retention_s: Option<u64>,
    /// The access policy (JSON), if the queue has one.
    pub policy: Option<String>,
}

impl crate::buffer::Buffer {
    /// The queue's size limit, retention and policy.
    pub async fn settings(&self) -> Result<QueueSettings, AwsError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(A::MaximumMessageSize)
            .attribute_names(A::MessageRetentionPeriod)
            .attribute_names(A::Policy)
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetQueueAttributes", &e))?;
        let attributes = out.attributes.unwrap_or_default();
        let number = |a: &A| attributes.get(a).and_then(|v| v.parse().ok());
        Ok(QueueSettings {
            max_message_size: number(&A::MaximumMessageSize),
            retention_s: number(&A::MessageRetentionPeriod),
            policy: attributes.get(&A::Policy).cloned(),
        })
    }
}
