//! Buffer calls that carry message attributes and delays: the drain re-queues records that are
//! not done yet with an attempt count (`ferry-attempts`) and a delivery delay, and must read that
//! count back. Kept beside [`crate::buffer`] as an additive extension of [`Buffer`].

use crate::buffer::{Buffer, Received, RECORDS_ATTRIBUTE};
use crate::error::{classify_sdk_error, AwsError, ErrorKind};
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use ferry_core::buffer::BufferBatch;
use std::collections::HashMap;

/// Message attribute holding how many times the drain found the message's records pending
/// (absent: 0). Only the drain writes it, on the messages it re-queues.
pub const ATTEMPTS_ATTRIBUTE: &str = "ferry-attempts";

/// SQS caps a message's delivery delay at 15 minutes.
/// When a record's message was first sent to a buffer (ms since the epoch): carried through
/// every re-queue, dead-lettering and redrive, so a record's age is not reset by SQS
/// (`SentTimestamp` is the latest trip's).
pub const FIRST_SENT_ATTRIBUTE: &str = "ferry-first-sent";

pub const MAX_DELAY_S: i32 = 900;

/// One received message with its (string-valued) message attributes.
#[derive(Clone, Debug)]
pub struct ReceivedWithAttributes {
    pub message: Received,
    /// Message attribute name → its string value (Number attributes arrive as their text).
    pub attributes: HashMap<String, String>,
}

impl ReceivedWithAttributes {
    /// A numeric attribute; absent or unreadable counts as `None` (outside data is not trusted).
    pub fn number(&self, name: &str) -> Option<u64> {
        self.attributes
            .get(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    }

    /// When the message's records were first sent to a buffer: the carried attribute, or this
    /// message's own `SentTimestamp` for a first trip.
    pub fn first_sent_ms(&self) -> u64 {
        self.number(FIRST_SENT_ATTRIBUTE)
            .unwrap_or(self.message.sent_at_ms)
    }
}

impl Buffer {
    /// Long-polls for up to `max` (≤ 10) messages, with the message attributes named in
    /// `attributes` (`["All"]` for every one; none for `&[]`).
    pub async fn receive_with_attributes(
        &self,
        max: i32,
        wait_s: i32,
        visibility_s: Option<i32>,
        attributes: &[&str],
    ) -> Result<Vec<ReceivedWithAttributes>, AwsError> {
        let mut request = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_s.clamp(0, 20))
            .set_visibility_timeout(visibility_s)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp);
        for name in attributes {
            request = request.message_attribute_names(*name);
        }
        let out = request
            .send()
            .await
            .map_err(|e| classify_sdk_error("ReceiveMessage", &e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let system = m.attributes.as_ref();
                let get = |n: MessageSystemAttributeName| {
                    system
                        .and_then(|a| a.get(&n))
                        .and_then(|v| v.parse::<u64>().ok())
                };
                let attributes = m
                    .message_attributes
                    .as_ref()
                    .map(|a| {
                        a.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                Some(ReceivedWithAttributes {
                    message: Received {
                        receive_count: get(MessageSystemAttributeName::ApproximateReceiveCount)
                            .unwrap_or(1) as u32,
                        sent_at_ms: get(MessageSystemAttributeName::SentTimestamp).unwrap_or(0),
                        message_id: m.message_id?,
                        receipt_handle: m.receipt_handle?,
                        body: m.body.unwrap_or_default(),
                    },
                    attributes,
                })
            })
            .collect())
    }

    /// Like [`Buffer::send_batch`], adding numeric message attributes to every message and
    /// delaying their delivery by `delay_s` seconds (clamped to 0–900). Returns the indexes of
    /// the messages SQS did not take; an error means none may be assumed sent.
    pub async fn send_batch_with(
        &self,
        batch: &BufferBatch,
        numbers: &[(&str, u64)],
        delay_s: i32,
    ) -> Result<Vec<usize>, AwsError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let delay_s = delay_s.clamp(0, MAX_DELAY_S);
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .message_attributes(RECORDS_ATTRIBUTE, number(m.records as u64)?);
                for (name, value) in numbers {
                    entry = entry.message_attributes(*name, number(*value)?);
                }
                if delay_s > 0 {
                    entry = entry.delay_seconds(delay_s);
                }
                entry.build().map_err(|e| invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify_sdk_error("SendMessageBatch", &e))?;
        let mut failed: Vec<usize> = out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse().ok())
            .collect();
        failed.sort_unstable();
        Ok(failed)
    }
}

fn number(n: u64) -> Result<MessageAttributeValue, AwsError> {
    MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(n.to_string())
        .build()
        .map_err(|e| invalid(e.to_string()))
}

fn invalid(message: String) -> AwsError {
    AwsError {
        operation: "SendMessageBatch",
        kind: ErrorKind::Invalid,
        code: None,
        message,
    }
}
