//! Queue-level calls for the operator tools: finding a queue by name and reading its depth.

use crate::buffer::Buffer;
use crate::error::{classify_sdk_error, AwsError};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;

/// SQS's approximate message counts of one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    /// Ready to be received.
    pub visible: u64,
    /// Received and neither deleted nor released yet.
    pub in_flight: u64,
    /// Sent with a delivery delay that has not passed (the drain's re-queued pending records).
    pub delayed: u64,
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

impl Buffer {
    /// The queue called `name` (in the region `client` is configured for).
    pub async fn by_name(client: Client, name: &str) -> Result<Buffer, AwsError> {
        let out = client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetQueueUrl", &e))?;
        Ok(Buffer::new(client, out.queue_url.unwrap_or_default()))
    }

    /// Visible, in-flight and delayed messages. SQS has no "age of the oldest message"
    /// attribute (that is a CloudWatch metric): see `ferry status --peek`.
    pub async fn depth(&self) -> Result<QueueDepth, AwsError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetQueueAttributes", &e))?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |n: QueueAttributeName| {
            attrs
                .get(&n)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}
