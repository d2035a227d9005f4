//! The heartbeat Lambda: on every scheduled tick, one unconditional `PutItem` of this region's
//! sentinel (`ferry_core::heartbeat`) into the local table. The ordinary pipeline carries it
//! to every peer, whose drain reports its age as `ReplicationLatency`. Settings: the shared
//! ones (`Config::from_lookup`), `FERRY_TABLE`, `FERRY_PARTITION_KEY_TYPE`,
//! `FERRY_SORT_KEY_TYPE`, `FERRY_METRICS_NAMESPACE`, and `FERRY_DYNAMODB_ENDPOINT` for the
//! emulators.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use ferry_aws::emf::{Metric, Metrics};
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
    let name = env.required("FERRY_TABLE")?;
    let metrics = Metrics::from_env(&env, &name).property("Function", "heartbeat");
    let table = Table::new(clients.dynamodb(&base).await, name);
    let (table, config, metrics) = (&table, &config, &metrics);
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<EventBridgeEvent>| async move {
            let now_ms = ferry_core::clock::system_now_ms();
            // An error fails the invocation: the missing beat is what the peers' alarms report.
            beat(table, config, types, now_ms).await?;
            tracing::info!(written_ms = now_ms, "heartbeat written");
            // The same EMF as the other functions: a beat written (its absence is in Errors).
            for line in metrics.lines(&[Metric::count("Heartbeats", 1)], now_ms) {
                println!("{line}");
            }
            Ok::<_, Error>(())
        },
    ))
    .await
}
