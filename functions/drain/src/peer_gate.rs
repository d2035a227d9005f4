//! The start-up check that source and destination run the same replication settings
//! (`ferry_core::peer`): before a drain receives anything, the destination table's published
//! settings are compared with this region's, and again every [`RECHECK`]. A mismatch — published,
//! or betrayed later by a record or a stored item of the other merge mode — is kept for the
//! container's life: every later call returns at once, before receiving (so no receive count is
//! burnt and nothing reaches the DLQ), and logs the error again. Fixing the configuration means a
//! redeploy, which starts new containers.

use crate::report::StopReason;
use crate::Drainer;
use ferry_core::peer::{canonical, PeerCheck};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How often a running container re-reads the destination's published settings.
pub const RECHECK: Duration = Duration::from_secs(600);
/// How soon after a failed read it is tried again.
pub const RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct PeerGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    /// When the destination's settings are next read (`None`: before the first call).
    next_check: Option<Instant>,
    /// Why this container has stopped for good.
    mismatch: Option<(StopReason, String)>,
}

impl PeerGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops this container for good (a record or an item of the other mode was seen).
    pub(crate) fn stop(&self, reason: StopReason, why: String) {
        self.lock().mismatch.get_or_insert((reason, why));
    }

    /// The mismatch this container stopped on, if any.
    pub fn mismatch(&self) -> Option<(StopReason, String)> {
        self.lock().mismatch.clone()
    }
}

/// `Some` when the drain must not receive: the destination disagrees (now or before).
/// A destination that cannot be asked (down, no permission, an emulator without tags) is not
/// a mismatch: the call goes on, and the records' shapes are still checked on the way.
pub(crate) async fn check(d: &Drainer) -> Option<(StopReason, String)> {
    let due = {
        let state = d.peer.lock();
        if let Some(m) = &state.mismatch {
            tracing::error!(mismatch = true, reason = %m.1, "replication settings mismatch: this drain stays stopped until redeployed with matching settings");
            return Some(m.clone());
        }
        state.next_check.is_none_or(|t| Instant::now() >= t)
    };
    if !due {
        return None;
    }
    match ferry_aws::peer::check_destination(&d.table, &d.config).await {
        Ok(check) => {
            d.peer.lock().next_check = Some(Instant::now() + RECHECK);
            let reason = match &check {
                PeerCheck::Agrees => {
                    tracing::debug!(destination = %d.destination_region, "destination settings agree");
                    return None;
                }
                PeerCheck::Unpublished => {
                    tracing::warn!(destination = %d.destination_region, settings = %canonical(&d.config), "{check}");
                    return None;
                }
                PeerCheck::ModeDiffers { .. } => StopReason::ModeMismatch,
                PeerCheck::SettingsDiffer { .. } => StopReason::SettingsMismatch,
            };
            let why = format!("{} → {}: {check}", d.source_region, d.destination_region);
            tracing::error!(mismatch = true, reason = %why, settings = %canonical(&d.config), "replication settings mismatch: stopping before receiving anything");
            d.peer.stop(reason, why.clone());
            Some((reason, why))
        }
        Err(e) => {
            // Not every call: a destination that is down would cost each call its timeouts.
            d.peer.lock().next_check = Some(Instant::now() + RETRY);
            tracing::warn!(destination = %d.destination_region, error = %e, "cannot read the destination's published settings; going on (record shapes are still checked)");
            None
        }
    }
}
