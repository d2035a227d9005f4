//! The fault proxy in front of a dynoxide region.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use ferry_sandbox::{
    dynamodb_client_with, ClientOptions, DynamoRegion, FaultMode, FaultProxy, TableSpec,
};

async fn setup() -> (DynamoRegion, FaultProxy) {
    let region = DynamoRegion::start("us-east-1", 0).unwrap();
    region
        .create_table(&TableSpec::new("items", "pk"))
        .await
        .unwrap();
    let proxy = FaultProxy::start(&region.endpoint()).unwrap();
    (region, proxy)
}

fn client(proxy: &FaultProxy, options: &ClientOptions) -> aws_sdk_dynamodb::Client {
    dynamodb_client_with(&proxy.endpoint(), "us-east-1", options)
}

async fn get(
    client: &aws_sdk_dynamodb::Client,
) -> Result<
    (),
    aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::get_item::GetItemError>,
> {
    client
        .get_item()
        .table_name("items")
        .key("pk", AttributeValue::S("k".into()))
        .send()
        .await
        .map(|_| ())
}

fn describe<E: std::error::Error>(e: &E) -> String {
    format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(e))
}

#[tokio::test]
async fn pass_forwards_and_counts() {
    let (_region, proxy) = setup().await;
    assert!(proxy.endpoint().starts_with("http://127.0.0.1:"));
    let c = client(&proxy, &ClientOptions::short());
    c.put_item()
        .table_name("items")
        .item("pk", AttributeValue::S("k".into()))
        .send()
        .await
        .unwrap();
    get(&c).await.unwrap();
    assert_eq!(proxy.stats().forwarded, 2);
    assert_eq!(proxy.stats().throttled, 0);
}

#[tokio::test]
async fn refuse_closes_new_and_open_connections() {
    let (_region, proxy) = setup().await;
    let c = client(&proxy, &ClientOptions::short());
    get(&c).await.unwrap(); // leaves a pooled keep-alive connection

    proxy.set_mode(FaultMode::Refuse);
    let started = Instant::now();
    let err = get(&c).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        describe(&err).contains("dispatch failure") || describe(&err).contains("io error"),
        "{}",
        describe(&err)
    );
    // A fresh client (a new connection) is refused as well.
    let fresh = client(&proxy, &ClientOptions::short());
    assert!(get(&fresh).await.is_err());
    assert!(proxy.stats().refused >= 2, "{:?}", proxy.stats());

    proxy.set_mode(FaultMode::Pass);
    get(&c).await.unwrap();
}

#[tokio::test]
async fn blackhole_makes_the_sdk_time_out() {
    let (_region, proxy) = setup().await;
    let c = client(&proxy, &ClientOptions::short());
    get(&c).await.unwrap();

    proxy.set_mode(FaultMode::Blackhole);
    let started = Instant::now();
    let err = get(&c).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let text = describe(&err).to_lowercase();
    assert!(
        text.contains("timeout") || text.contains("timed out"),
        "{text}"
    );
    assert!(proxy.stats().blackholed >= 1);

    proxy.set_mode(FaultMode::Pass);
    get(&c).await.unwrap();
}

#[tokio::test]
async fn delay_adds_twice_the_delay_per_round_trip() {
    let (_region, proxy) = setup().await;
    let c = client(&proxy, &ClientOptions::default());
    get(&c).await.unwrap(); // warm the connection

    proxy.set_mode(FaultMode::Delay(Duration::from_millis(150)));
    let started = Instant::now();
    get(&c).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "took {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");

    proxy.set_mode(FaultMode::Pass);
    let started = Instant::now();
    get(&c).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn throttle_answers_like_dynamodb() {
    let (_region, proxy) = setup().await;
    let c = client(&proxy, &ClientOptions::short());

    proxy.set_mode(FaultMode::Throttle { fraction: 1.0 });
    let err = get(&c).await.unwrap_err();
    let service = err.as_service_error().expect("a service error");
    assert!(
        service.is_provisioned_throughput_exceeded_exception(),
        "{}",
        describe(&err)
    );
    assert_eq!(proxy.stats().throttled, 1);
    assert_eq!(proxy.stats().forwarded, 0);

    // The SDK's standard retries see throttling as retryable.
    let retrying = client(&proxy, &ClientOptions::short().with_max_attempts(3));
    assert!(get(&retrying).await.is_err());
    assert_eq!(proxy.stats().throttled, 4);

    proxy.set_mode(FaultMode::Throttle { fraction: 0.5 });
    let mut failed = 0;
    for _ in 0..40 {
        if get(&c).await.is_err() {
            failed += 1;
        }
    }
    assert!((5..=35).contains(&failed), "{failed} of 40 throttled");
    let stats = proxy.stats();
    assert_eq!(stats.throttled, 4 + failed);
    assert_eq!(stats.forwarded, 40 - failed);
}

#[tokio::test]
async fn only_loopback_upstreams() {
    assert!(FaultProxy::start("http://192.0.2.1:80").is_err());
    assert!(FaultProxy::start("http://localhost:9").is_ok());
}
