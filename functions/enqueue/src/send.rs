//! Forwarding: the batch's change records, packed into SQS messages, sent to every
//! destination's buffer (all in the local region).

use crate::{earliest, Enqueuer, Failure, Packed};

/// What the sends came to: requests made, and the earliest record not taken everywhere.
pub(crate) struct Sent {
    pub requests: usize,
    pub failure: Option<Failure>,
}

/// Sends every batch to every destination, all at once, and finds the earliest record of any
/// message that some destination did not take.
pub(crate) async fn send_all(packed: &Packed, enqueuer: &Enqueuer) -> Sent {
    let sends = enqueuer.buffers.iter().flat_map(|destination| {
        packed
            .batches
            .iter()
            .enumerate()
            .map(move |(b, batch)| async move {
                (destination, b, destination.buffer.send_batch(batch).await)
            })
    });
    let results = futures::future::join_all(sends).await;
    let mut failure = None;
    for (destination, b, result) in &results {
        let firsts = &packed.first_record[*b];
        let (first, reason) = match result {
            Ok(failed) if failed.is_empty() => continue,
            // An index that maps to no message cannot be placed: count the whole batch.
            Ok(failed) => (
                failed
                    .iter()
                    .filter_map(|m| firsts.get(*m).or(firsts.first()))
                    .min()
                    .copied(),
                format!(
                    "the buffer for {} did not take {} of {} messages",
                    destination.region,
                    failed.len(),
                    firsts.len()
                ),
            ),
            Err(e) => (
                firsts.first().copied(),
                format!("the buffer for {}: {e}", destination.region),
            ),
        };
        let Some(first) = first else { continue };
        tracing::warn!(
            destination = destination.region.as_str(),
            first_record = first,
            reason = reason.as_str(),
            "send to a buffer failed"
        );
        failure = earliest(failure, Some((first, reason)));
    }
    Sent {
        requests: results.len(),
        failure,
    }
}
