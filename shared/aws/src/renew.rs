//! Renewing a message SQS has handed out nearly `maxReceiveCount` times (`ferry_core::wear`):
//! a copy goes back on the buffer with the receives so far, and the original is deleted, so the
//! redrive policy never dead-letters it for drains that ended before settling.

use crate::buffer::{Buffer, RECORDS_ATTRIBUTE};
use crate::buffer_attributes::{ReceivedWithAttributes, ATTEMPTS_ATTRIBUTE, FIRST_SENT_ATTRIBUTE};
use crate::error::{AwsError, ErrorKind};
use ferry_core::buffer::BufferMessage;

/// Message attribute holding how many times a message's earlier copies were received.
pub const RECEIVES_ATTRIBUTE: &str = "ferry-receives";

/// The attributes a message carries: what renewing must keep.
pub const CARRIED_ATTRIBUTES: [&str; 4] = [
    ATTEMPTS_ATTRIBUTE,
    FIRST_SENT_ATTRIBUTE,
    RECEIVES_ATTRIBUTE,
    RECORDS_ATTRIBUTE,
];

impl Buffer {
    /// Sends a copy of `m` carrying `receives` (and its attempts and first-sent time), then
    /// deletes `m`. If the delete fails the copy is a duplicate, which the writes absorb.
    pub async fn renew(&self, m: &ReceivedWithAttributes, receives: u32) -> Result<(), AwsError> {
        let copy = vec![BufferMessage {
            body: m.message.body.clone(),
            records: m.number(RECORDS_ATTRIBUTE).unwrap_or(0) as usize,
        }];
        let mut numbers = vec![
            (FIRST_SENT_ATTRIBUTE, m.first_sent_ms()),
            (RECEIVES_ATTRIBUTE, u64::from(receives)),
        ];
        if let Some(attempts) = m.number(ATTEMPTS_ATTRIBUTE) {
            numbers.push((ATTEMPTS_ATTRIBUTE, attempts));
        }
        if !self.send_batch_with(&copy, &numbers, 0).await?.is_empty() {
            return Err(AwsError {
                operation: "SendMessageBatch",
                kind: ErrorKind::Other,
                code: None,
                message: "the renewed copy was not taken".into(),
            });
        }
        self.delete(&[m.message.receipt_handle.as_str()]).await?;
        Ok(())
    }
}
