//! The Lambda entry point: settings from the environment, SDK clients built once, the handler
//! from the library. Nothing here decides anything.

use ferry_enqueue::{handle_json, Settings};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let settings = Settings::from_lookup(|k| std::env::var(k).ok())?;

    let base = ferry_aws::clients::base_config().await;
    let enqueuer = ferry_enqueue::connect(&settings, &base, ferry_core::clock::system()).await?;
    tracing::info!(?enqueuer, "enqueue ready");

    let enqueuer = &enqueuer;
    let settings = &settings;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            // Raw payload: records are decoded one by one, so a malformed one is poison, not an
            // invocation error that would hold the whole shard.
            let outcome = handle_json(event.payload.get(), enqueuer).await?;
            println!(
                "{}",
                outcome.metrics_line(
                    &settings.metrics_namespace,
                    &settings.config.local_region,
                    enqueuer.now_ms(),
                )
            );
            Ok::<_, Error>(outcome.response)
        },
    ))
    .await
}

/// JSON lines on stdout (CloudWatch Logs), levels from `RUST_LOG` (default `info`). `RUST_LOG`
/// is read as a `tracing_subscriber::filter::Targets` list (`info,ferry_aws=debug`): the full
/// `EnvFilter` syntax would bring regex into the bootstrap.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_target(false)
                .with_ansi(false)
                .with_filter(filter),
        )
        .init();
}
