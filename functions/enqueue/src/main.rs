//! The Lambda entry point: settings from the environment, SDK clients built once, the handler
//! from the library. Nothing here decides anything.

use ferry_aws::{Buffer, ClientSettings, Table};
use ferry_enqueue::{handle_json, Destination, Enqueuer, Settings};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    ferry_aws::logs::init_lambda_logs();
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
