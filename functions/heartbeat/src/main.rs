//! The heartbeat Lambda: on every scheduled tick, one unconditional `PutItem` of this region's
//! sentinel (`ferry_core::heartbeat`) into the local table. The ordinary pipeline carries it
//! to every peer, whose drain reports its age as `ReplicationLatency`. Settings: the shared
//! ones (`Config::from_lookup`), `FERRY_TABLE`, `FERRY_PARTITION_KEY_TYPE`,
//! `FERRY_SORT_KEY_TYPE`, and `FERRY_DYNAMODB_ENDPOINT` for the emulators.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use ferry_aws::env::Env;
use ferry_aws::heartbeat::{beat, key_types};
use ferry_aws::{ClientSettings, Table};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ferry_aws::logs::init_lambda_logs();
    let env = Env::new(|k: &str| std::env::var(k).ok());
    let config = env.config()?;
    let types = key_types(&env)?;
    let mut clients = ClientSettings::new(config.local_region.clone());
    clients.dynamodb_endpoint = env.get("FERRY_DYNAMODB_ENDPOINT");
    let base = ferry_aws::clients::base_config().await;
    let table = Table::new(clients.dynamodb(&base).await, env.required("FERRY_TABLE")?);
    let (table, config) = (&table, &config);
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<EventBridgeEvent>| async move {
            let now_ms = ferry_core::clock::system_now_ms();
            // An error fails the invocation: the missing beat is what the peers' alarms report.
            beat(table, config, types, now_ms).await?;
            tracing::info!(written_ms = now_ms, "heartbeat written");
            Ok::<_, Error>(())
        },
    ))
    .await
}
