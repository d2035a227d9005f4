//! The drain Lambda: reads its environment, builds the clients once per container, and runs
//! one [`ferry_drain::tick`] per scheduled EventBridge event, or one [`ferry_drain::work`] per
//! worker event a tick sent. All the work is in the lib.

use ferry_aws::emf::Metrics;
use ferry_drain::WorkerEvent;
use ferry_drain::{emf_lines, tick, work, DrainEnv, DrainReport, Drainer, StartWorkers, Ticker};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use std::time::Duration;

/// Kept between the drain's return and the Lambda deadline: the report, the EMF line and the
/// runtime's own reply must still go out.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

/// What every invocation shares.
struct Shell {
    drainer: Drainer,
    ticker: Ticker,
    workers: Box<dyn StartWorkers>,
    metrics: Metrics,
}

// One thread: a Lambda below 1 769 MB has at most one vCPU, and the drain is I/O-bound; a single
// thread spares every request two cross-thread wake-ups (the replay bench measures the same).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ferry_aws::logs::init_lambda_logs();
    let env = DrainEnv::from_lookup(|k| std::env::var(k).ok())?;
    let base = ferry_aws::clients::base_config().await;
    let workers = env.workers(&base);
    let metrics = env.metrics.clone();
    let drainer = env.connect(&base, ferry_core::clock::system()).await;
    tracing::info!(drainer = ?drainer, "drain ready");
    let shell = &Shell {
        drainer,
        ticker: Ticker::default(),
        workers,
        metrics,
    };
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move { handle(shell, event).await },
    ))
    .await
}

async fn handle(
    shell: &Shell,
    event: LambdaEvent<serde_json::Value>,
) -> Result<DrainReport, Error> {
    let drainer = &shell.drainer;
    // The configured budget, unless the function's timeout leaves less.
    let now_ms = ferry_core::clock::system_now_ms();
    let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
    let budget = drainer
        .settings
        .budget
        .min(left.saturating_sub(DEADLINE_MARGIN))
        .max(Duration::from_secs(1));
    let report = match WorkerEvent::of(&event.payload) {
        Some(order) => work(drainer, &shell.ticker, order, budget).await,
        None => tick(drainer, &shell.ticker, shell.workers.as_ref(), budget).await,
    };
    // EMF goes to stdout, each line on its own; CloudWatch Logs extracts the metrics.
    let now_ms = ferry_core::clock::system_now_ms();
    for line in emf_lines(&report, &shell.metrics, now_ms) {
        println!("{line}");
    }
    Ok(report)
}
