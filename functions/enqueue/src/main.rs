//! The Lambda entry point: settings from the environment, SDK clients built once, the handler
//! from the library. Nothing here decides anything.

use ferry_enqueue::{handle_json, EnqueueEnv};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    ferry_aws::logs::init_lambda_logs();
    let settings = EnqueueEnv::from_lookup(|k| std::env::var(k).ok())?;

    let base = ferry_aws::clients::base_config().await;
    let enqueuer = ferry_enqueue::connect(&settings, &base, ferry_core::clock::system()).await?;
    tracing::info!(?enqueuer, "enqueue ready");
    enqueuer.publish_settings().await;

    let enqueuer = &enqueuer;
    let settings = &settings;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            // Raw payload: records are decoded one by one, so a malformed one is poison, not an
            // invocation error that would hold the whole shard.
            let outcome = handle_json(event.payload.get(), enqueuer).await?;
            println!(
                "{}",
                outcome.metrics_line(&settings.metrics, enqueuer.now_ms())
            );
            Ok::<_, Error>(outcome.response)
        },
    ))
    .await
}
