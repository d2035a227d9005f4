//! The Lambda entry point: settings from the environment, SDK clients built once, the handler
//! from the library. Nothing here decides anything.

use ferry_aws::{Buffer, ClientSettings, Table};
use ferry_enqueue::{handle_json, Destination, Enqueuer, Settings};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let settings = Settings::from_lookup(|k| std::env::var(k).ok())?;

    let mut clients = ClientSettings::new(settings.config.local_region.clone());
    clients.dynamodb_endpoint = settings.dynamodb_endpoint.clone();
    clients.sqs_endpoint = settings.sqs_endpoint.clone();
    clients.attempt_timeout = Some(settings.attempt_timeout);
    clients.operation_timeout = Some(settings.operation_timeout);
    let base = ferry_aws::clients::base_config().await;
    let table = Table::new(clients.dynamodb(&base).await, settings.table.clone());
    // Every buffer lives in the local region: one SQS client serves them all.
    let sqs = clients.sqs(&base);
    let buffers = settings
        .buffers
        .iter()
        .map(|(region, url)| Destination {
            region: region.clone(),
            buffer: Buffer::new(sqs.clone(), url.clone()),
        })
        .collect();
    let enqueuer = Enqueuer::new(
        settings.config.clone(),
        table,
        buffers,
        ferry_core::clock::system(),
    )?
    .with_max_reconcile_attempts(settings.max_reconcile_attempts);
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
