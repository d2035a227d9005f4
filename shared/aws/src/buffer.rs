//! A buffer queue (SQS): send packed batches, receive, delete, dead-letter.

use crate::error::{classify_sdk_error, AwsError};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageAttributeValue};
use aws_sdk_sqs::Client;
use ferry_core::buffer::BufferBatch;

/// Message attribute holding the number of records in a message (for `ferry status`).
pub const RECORDS_ATTRIBUTE: &str = "ferry-records";
/// Message attribute holding why a message was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "ferry-reason";

#[derive(Clone, Debug)]
pub struct Buffer {
    pub client: Client,
    pub queue_url: String,
}

/// One received message.
#[derive(Clone, Debug)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How many times SQS has handed this message out (1 on first receive).
    pub receive_count: u32,
    /// When it was first sent, ms since the epoch.
    pub sent_at_ms: u64,
}

impl Buffer {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Buffer {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// Sends one packed batch. Returns the indexes of the messages SQS did not take (a 200 can
    /// carry failures); an error means none may be assumed sent.
    pub async fn send_batch(&self, batch: &BufferBatch) -> Result<Vec<usize>, AwsError> {
        // One way to send a batch: the attribute-carrying form, with none and no delay.
        self.send_batch_with(batch, &[], 0).await
    }

    /// Sends one message with a reason attached (to a dead-letter queue), and when its records
    /// were first sent to a buffer ([`crate::FIRST_SENT_ATTRIBUTE`]).
    pub async fn send_with_reason(
        &self,
        body: &str,
        records: usize,
        reason: &str,
        first_sent_ms: u64,
    ) -> Result<(), AwsError> {
        let reason: String = reason.chars().take(900).collect();
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_attributes(RECORDS_ATTRIBUTE, number_attribute(records as u64))
            .message_attributes(REASON_ATTRIBUTE, string_attribute(&reason))
            .message_attributes(crate::FIRST_SENT_ATTRIBUTE, number_attribute(first_sent_ms))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify_sdk_error("SendMessage", &e))
    }

    /// Deletes messages by receipt handle. Returns the receipt handles SQS did not delete.
    pub async fn delete(&self, receipts: &[&str]) -> Result<Vec<String>, AwsError> {
        let mut not_deleted = Vec::new();
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(*r)
                        .build()
                        .ok()
                })
                .collect::<Vec<_>>();
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| classify_sdk_error("DeleteMessageBatch", &e))?;
            for f in out.failed() {
                if let Some(r) = f.id().parse::<usize>().ok().and_then(|i| chunk.get(i)) {
                    not_deleted.push(r.to_string());
                }
            }
        }
        Ok(not_deleted)
    }

    /// Makes a message visible again after `seconds` (0: at once).
    pub async fn release(&self, receipt: &str, seconds: i32) -> Result<(), AwsError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify_sdk_error("ChangeMessageVisibility", &e))
    }
}

fn number_attribute(n: u64) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(n.to_string())
        .build()
        .expect("data_type is set")
}

fn string_attribute(s: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(s)
        .build()
        .expect("data_type is set")
}
