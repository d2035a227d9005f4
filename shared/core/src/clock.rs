//! Time as a value: the decisions take `now_ms` as an argument; the shells pass a [`Clock`] so
//! tests and the local sandbox can skew or freeze it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The machine's clock.
pub fn system() -> Clock {
    Arc::new(system_now_ms)
}

/// The machine's clock offset by `offset_ms` (a region whose clock is skewed).
pub fn skewed(offset_ms: i64) -> Clock {
    Arc::new(move || (system_now_ms() as i64 + offset_ms).max(0) as u64)
}
