//! Messages near their last delivery (`ferry_core::wear`), set aside before a take is built:
//! renewed as fresh copies, or dead-lettered with the reason once they look like a crash loop.
//! A message whose renewal or dead-lettering fails stays in the take and is drained as usual.

use crate::report::DrainReport;
use crate::Drainer;
use ferry_aws::renew::RECEIVES_ATTRIBUTE;
use ferry_aws::ReceivedWithAttributes;
use ferry_core::wear::{wear, Wear};

/// The messages to take; the worn ones are renewed or dead-lettered, and counted in `report`.
pub(crate) async fn set_aside_worn(
    d: &Drainer,
    messages: Vec<ReceivedWithAttributes>,
    report: &mut DrainReport,
) -> Vec<ReceivedWithAttributes> {
    let max = d.settings.max_receive_count;
    let mut kept = Vec::with_capacity(messages.len());
    for m in messages {
        let carried = m
            .number(RECEIVES_ATTRIBUTE)
            .unwrap_or(0)
            .min(u32::MAX as u64) as u32;
        let set_aside = match wear(m.message.receive_count, carried, max) {
            Wear::Fresh => false,
            Wear::Renew { receives } => renew(d, &m, receives, report).await,
            Wear::DeadLetter(reason) => dead_letter(d, &m, &reason, report).await,
        };
        if !set_aside {
            kept.push(m);
        }
    }
    kept
}

async fn renew(
    d: &Drainer,
    m: &ReceivedWithAttributes,
    receives: u32,
    report: &mut DrainReport,
) -> bool {
    report.sqs_requests += 2;
    match d.buffer.renew(m, receives).await {
        Ok(()) => {
            report.renewed += 1;
            tracing::warn!(
                message_id = %m.message.message_id,
                receives,
                "renewed a message drains kept ending before settling"
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not renew a worn message: draining it as it is");
            false
        }
    }
}

async fn dead_letter(
    d: &Drainer,
    m: &ReceivedWithAttributes,
    reason: &str,
    report: &mut DrainReport,
) -> bool {
    let records = m.number(ferry_aws::buffer::RECORDS_ATTRIBUTE).unwrap_or(0);
    report.sqs_requests += 2;
    let sent = d
        .dlq
        .send_with_reason(&m.message.body, records as usize, reason, m.first_sent_ms())
        .await;
    let gone = match sent {
        Ok(()) => d.buffer.delete(&[m.message.receipt_handle.as_str()]).await,
        Err(e) => Err(e),
    };
    match gone {
        Ok(_) => {
            report.dlq_messages += 1;
            report.dlq_records += records;
            tracing::error!(message_id = %m.message.message_id, reason, "dead-lettered a crash loop");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not dead-letter a worn message: draining it");
            false
        }
    }
}
