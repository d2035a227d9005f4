//! The operator's pause (`ferry pause`, `ferry_core::pause`), read from the buffer's tag at the
//! start of every invocation. A paused pair receives nothing: its buffer keeps every change, no
//! receive count is burnt, and `ferry resume` lets the next tick replay the backlog with the
//! full fan-out.

use crate::Drainer;
use ferry_core::pause::Pause;

/// The pair's pause, if any. A mark that cannot be read does not stop replication: pausing is
/// an operator's tool, and a role without `sqs:ListQueueTags` must not become an outage.
pub(crate) async fn paused(d: &Drainer) -> Option<Pause> {
    match d.buffer.pause().await {
        Ok(pause) => pause,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the buffer's pause mark: draining");
            None
        }
    }
}
