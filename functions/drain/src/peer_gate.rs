//! The start-up check that source and destination run the same replication settings
//! (`ferry_core::peer`): before a drain receives anything, the destination table's published
//! settings are compared with this region's, and again every [`RECHECK`].
//!
//! A mismatch stops every call before it receives (so no receive count is burnt and nothing
//! reaches the DLQ), with the error logged each time. It lifts by itself once the configuration
//! is fixed — a region switched mode or redeployed publishes its new settings, and containers of
//! the other regions must not stay stopped after a rolling change: a *published* mismatch is
//! re-read at every call; a mismatch *seen in the data* (a record or a stored item of the other
//! mode, which the tags may not show yet) holds for [`HOLD`] before the tags are asked again.

use crate::report::StopReason;
use crate::Drainer;
use ferry_core::peer::{canonical, PeerCheck};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How often a running drain re-reads the destination's published settings.
pub const RECHECK: Duration = Duration::from_secs(600);
/// How soon after a failed read it is tried again.
pub const RETRY: Duration = Duration::from_secs(30);
/// How long a mismatch seen in the data stops the drain before it is tried again.
pub const HOLD: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct PeerGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    /// When the destination's settings are next read (`None`: before the first call).
    next_check: Option<Instant>,
    /// Why the drain is stopped, and until when at least.
    mismatch: Option<Mismatch>,
}

#[derive(Clone, Debug)]
struct Mismatch {
    reason: StopReason,
    why: String,
    until: Instant,
}

impl PeerGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the drain for [`HOLD`]: a record or an item of the other mode was seen.
    pub(crate) fn stop(&self, reason: StopReason, why: String) {
        let until = Instant::now() + HOLD;
        self.lock()
            .mismatch
            .get_or_insert(Mismatch { reason, why, until });
    }

    /// The mismatch the drain is stopped on, if any.
    pub fn mismatch(&self) -> Option<(StopReason, String)> {
        self.lock()
            .mismatch
            .as_ref()
            .map(|m| (m.reason, m.why.clone()))
    }
}

/// `Some` when the drain must not receive: the destination disagrees. A destination that
/// cannot be asked (down, no permission, an emulator without tags) is not a mismatch: the call
/// goes on, and the records' shapes are still checked on the way.
pub(crate) async fn check(d: &Drainer) -> Option<(StopReason, String)> {
    let now = Instant::now();
    {
        let state = d.peer.lock();
        match &state.mismatch {
            Some(m) if now < m.until => {
                tracing::error!(mismatch = true, reason = %m.why, "replication settings mismatch: still stopped");
                return Some((m.reason, m.why.clone()));
            }
            // An expired mismatch is re-judged by the tags now.
            Some(_) => {}
            None if state.next_check.is_some_and(|t| now < t) => return None,
            None => {}
        }
    }
    match ferry_aws::peer::check_destination(&d.table, &d.config).await {
        Ok(check) => {
            let reason = match &check {
                PeerCheck::Agrees | PeerCheck::Unpublished => {
                    let mut state = d.peer.lock();
                    if let Some(m) = state.mismatch.take() {
                        tracing::warn!(was = %m.why, "the destination's settings agree now: resuming");
                    }
                    state.next_check = Some(Instant::now() + RECHECK);
                    if check == PeerCheck::Unpublished {
                        tracing::warn!(destination = %d.destination_region, settings = %canonical(&d.config), "{check}");
                    }
                    return None;
                }
                PeerCheck::ModeDiffers { .. } => StopReason::ModeMismatch,
                PeerCheck::SettingsDiffer { .. } => StopReason::SettingsMismatch,
            };
            let why = format!("{} → {}: {check}", d.source_region, d.destination_region);
            tracing::error!(mismatch = true, reason = %why, settings = %canonical(&d.config), "replication settings mismatch: stopping before receiving anything");
            // Re-read at the next call: a fix must be picked up as soon as it is published.
            d.peer.lock().mismatch = Some(Mismatch {
                reason,
                why: why.clone(),
                until: Instant::now(),
            });
            Some((reason, why))
        }
        Err(e) => {
            let mut state = d.peer.lock();
            // Not every call: a destination that is down would cost each call its timeouts.
            state.next_check = Some(Instant::now() + RETRY);
            tracing::warn!(destination = %d.destination_region, error = %e, "cannot read the destination's published settings; going on (record shapes are still checked)");
            // A mismatch that cannot be re-judged keeps the drain stopped.
            state.mismatch.as_ref().map(|m| (m.reason, m.why.clone()))
        }
    }
}
