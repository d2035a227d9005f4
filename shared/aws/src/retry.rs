//! Throttling slows a tool down and never fails it: retry while DynamoDB or SQS answers
//! "throttled" (after the SDK's own retries), with exponential back-off.

use crate::error::{AwsError, ErrorKind};
use std::future::Future;
use std::time::Duration;

/// The first pause after a throttled answer; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs `op` until it returns anything but a throttling error; `on_throttle` is called on each
/// throttled answer (for counting). Other errors are returned at once.
pub async fn while_throttled<T, F, Fut>(mut op: F, on_throttle: impl Fn()) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let mut pause = FIRST_BACKOFF;
    loop {
        match op().await {
            Err(e) if e.kind == ErrorKind::Throttled => {
                on_throttle();
                tracing::debug!(error = %e, pause_ms = pause.as_millis() as u64, "throttled: backing off");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn error(kind: ErrorKind) -> AwsError {
        AwsError {
            operation: "PutItem",
            kind,
            code: None,
            message: String::new(),
        }
    }

    /// Real time: two throttled answers cost 100 + 200 ms of back-off.
    #[tokio::test]
    async fn retries_throttling_only() {
        let calls = AtomicU32::new(0);
        let throttles = AtomicU32::new(0);
        let out = while_throttled(
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    Err(error(ErrorKind::Throttled))
                } else {
                    Ok(n)
                }
            },
            || {
                throttles.fetch_add(1, Ordering::SeqCst);
            },
        )
        .await;
        assert_eq!(out.ok(), Some(2));
        assert_eq!(throttles.load(Ordering::SeqCst), 2);
        let out: Result<(), _> =
            while_throttled(|| async { Err(error(ErrorKind::Transport)) }, || {}).await;
        assert!(out.is_err_and(|e| e.is_transport()));
    }
}
