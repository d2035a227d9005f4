//! Queue-level calls: creating a buffer and its dead-letter queue (`ferry local up`, the tests,
//! the benches and the examples), finding a queue by name and reading its depth (the operator
//! tools).

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

/// A buffer queue and its dead-letter queue, as [`Buffer::create_pair`] makes them.
#[derive(Clone, Debug)]
pub struct QueuePair {
    pub buffer: Buffer,
    pub dlq: Buffer,
}

impl Buffer {
    /// Creates the queue called `name` with `attributes` (SQS's defaults for the rest).
    pub async fn create(
        client: Client,
        name: &str,
        attributes: &[(QueueAttributeName, &str)],
    ) -> Result<Buffer, AwsError> {
        let mut request = client.create_queue().queue_name(name);
        for (attribute, value) in attributes {
            request = request.attributes(attribute.clone(), *value);
        }
        let out = request
            .send()
            .await
            .map_err(|e| classify_sdk_error("CreateQueue", &e))?;
        Ok(Buffer::new(client, out.queue_url.unwrap_or_default()))
    }

    /// Creates the dead-letter queue `{name}-dlq`, then the buffer `name`, both with
    /// `attributes`. With `max_receive_count`, the buffer hands a message to the dead-letter queue
    /// after that many receives (SQS's redrive policy); without, the two are not linked.
    pub async fn create_pair(
        client: Client,
        name: &str,
        attributes: &[(QueueAttributeName, &str)],
        max_receive_count: Option<u32>,
    ) -> Result<QueuePair, AwsError> {
        let dlq = format!("{name}-dlq");
        Buffer::create_named_pair(client, name, &dlq, attributes, max_receive_count).await
    }

    /// Creates the dead-letter queue `dlq_name`, then the buffer `name` redriving to it (the
    /// template's `<stack>-buffer-<dst>` and `<stack>-dlq-<dst>`).
    pub async fn create_named_pair(
        client: Client,
        name: &str,
        dlq_name: &str,
        attributes: &[(QueueAttributeName, &str)],
        max_receive_count: Option<u32>,
    ) -> Result<QueuePair, AwsError> {
        let dlq = Buffer::create(client.clone(), dlq_name, attributes).await?;
        let mut redrive = None;
        if let Some(n) = max_receive_count {
            let arn = dlq.arn().await?;
            let policy =
                serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": n.to_string()});
            redrive = Some(policy.to_string());
        }
        let mut buffer_attributes = attributes.to_vec();
        if let Some(redrive) = &redrive {
            buffer_attributes.push((QueueAttributeName::RedrivePolicy, redrive));
        }
        let buffer = Buffer::create(client, name, &buffer_attributes).await?;
        Ok(QueuePair { buffer, dlq })
    }

    /// The queue's ARN (empty if SQS returns none).
    pub async fn arn(&self) -> Result<String, AwsError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetQueueAttributes", &e))?;
        Ok(out
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default())
    }

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

    /// How long the queue keeps a message (`MessageRetentionPeriod`, s; SQS's default 4 days
    /// when the attribute is missing).
    pub async fn retention_s(&self) -> Result<u64, AwsError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::MessageRetentionPeriod)
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetQueueAttributes", &e))?;
        Ok(out
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::MessageRetentionPeriod).cloned())
            .and_then(|v| v.parse().ok())
            .unwrap_or(345_600))
    }
}
