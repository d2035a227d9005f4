//! dynoxide regions: isolation, outages, streams as Lambda records, TTL, clock skew.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use ferry_sandbox::{ClientOptions, DynamoRegion, StreamPoller, TableSpec};

const BIG: &str = "12345678901234567890123456789012345678"; // 38 significant digits

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

async fn put(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    extra: &[(&str, AttributeValue)],
) {
    let mut req = client.put_item().table_name(table).item("pk", s(pk));
    for (k, v) in extra {
        req = req.item(*k, v.clone());
    }
    req.send().await.unwrap();
}

fn image(item: &serde_dynamo::Item) -> HashMap<String, AttributeValue> {
    item.clone().into()
}

#[tokio::test]
async fn regions_are_isolated() {
    let a = DynamoRegion::start("us-east-1", 0).unwrap();
    let b = DynamoRegion::start("eu-west-1", 0).unwrap();
    assert_ne!(a.endpoint(), b.endpoint());
    assert!(a.endpoint().starts_with("http://127.0.0.1:"));

    a.create_table(&TableSpec::new("items", "pk"))
        .await
        .unwrap();
    let b_tables = b.client().list_tables().send().await.unwrap();
    assert!(
        b_tables.table_names().is_empty(),
        "table leaked into the other region"
    );

    b.create_table(&TableSpec::new("items", "pk"))
        .await
        .unwrap();
    put(&a.client(), "items", "k1", &[("v", s("from-a"))]).await;
    let got = b
        .client()
        .get_item()
        .table_name("items")
        .key("pk", s("k1"))
        .send()
        .await
        .unwrap();
    assert!(got.item.is_none(), "item leaked into the other region");
}

#[tokio::test]
async fn stop_refuses_connections_and_resume_keeps_data() {
    let mut region = DynamoRegion::start("us-east-1", 0).unwrap();
    let endpoint = region.endpoint();
    region
        .create_table(&TableSpec::new("items", "pk"))
        .await
        .unwrap();
    let client = region.client_with(&ClientOptions::short());
    put(&client, "items", "k1", &[("v", s("kept"))]).await;

    region.stop();
    assert!(!region.is_running());
    let refused = tokio::net::TcpStream::connect(region.addr()).await;
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    // The same client (with a pooled connection) fails at once.
    let started = Instant::now();
    let err = client
        .get_item()
        .table_name("items")
        .key("pk", s("k1"))
        .send()
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "took {:?}",
        started.elapsed()
    );
    let text = format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&err));
    assert!(text.contains("dispatch failure"), "{text}");

    region.resume().unwrap();
    assert_eq!(region.endpoint(), endpoint);
    let got = client
        .get_item()
        .table_name("items")
        .key("pk", s("k1"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.item.unwrap().get("v"), Some(&s("kept")));

    // A second outage cycle works too. A client with a single attempt may hit its stale pooled
    // connection once after an outage (hyper `IncompleteMessage`): the default client retries.
    region.stop();
    region.resume().unwrap();
    put(&region.client(), "items", "k2", &[]).await;
}

#[tokio::test]
async fn stream_records_are_lambda_event_records() {
    let region = DynamoRegion::start("eu-west-1", 0).unwrap();
    let table = region
        .create_table(&TableSpec::new("items", "pk").with_sort_key("sk"))
        .await
        .unwrap();
    let client = region.client();
    client
        .put_item()
        .table_name("items")
        .item("pk", s("k1"))
        .item("sk", s("a"))
        .item("big", n(BIG))
        .item("ts", n("1700000000123"))
        .send()
        .await
        .unwrap();

    let mut poller = StreamPoller::new(&region.endpoint(), region.name(), &table.stream_arn);
    let records = poller.collect(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.event_name, "INSERT");
    assert_eq!(r.aws_region, "eu-west-1");
    assert_eq!(r.event_source.as_deref(), Some("aws:dynamodb"));
    assert_eq!(
        r.event_source_arn.as_deref(),
        Some(table.stream_arn.as_str())
    );
    assert!(r.change.sequence_number.is_some());
    assert!(r.change.old_image.is_empty());
    let new_image = image(&r.change.new_image);
    assert_eq!(
        new_image.get("big"),
        Some(&n(BIG)),
        "38-digit number changed"
    );
    assert_eq!(new_image.get("ts"), Some(&n("1700000000123")));
    let keys = image(&r.change.keys);
    assert_eq!(keys.get("pk"), Some(&s("k1")));
    assert_eq!(keys.get("sk"), Some(&s("a")));
    // Serialized again, the number is still the exact string.
    let json = serde_json::to_value(r).unwrap();
    assert_eq!(json["dynamodb"]["NewImage"]["big"]["N"], BIG);

    // Nothing new: an empty batch. Then an update and a delete arrive in order.
    assert!(poller.next_batch(10).await.unwrap().is_empty());
    client
        .update_item()
        .table_name("items")
        .key("pk", s("k1"))
        .key("sk", s("a"))
        .update_expression("SET v = :v")
        .expression_attribute_values(":v", s("x"))
        .send()
        .await
        .unwrap();
    client
        .delete_item()
        .table_name("items")
        .key("pk", s("k1"))
        .key("sk", s("a"))
        .send()
        .await
        .unwrap();
    let records = poller.collect(2, Duration::from_secs(5)).await.unwrap();
    let names: Vec<&str> = records.iter().map(|r| r.event_name.as_str()).collect();
    assert_eq!(names, ["MODIFY", "REMOVE"]);
    assert_eq!(
        image(&records[0].change.old_image).get("big"),
        Some(&n(BIG))
    );
    assert_eq!(image(&records[0].change.new_image).get("v"), Some(&s("x")));
    assert!(records[1].change.new_image.is_empty());
    assert!(
        records[1].user_identity.is_none(),
        "an application delete has no userIdentity"
    );
}

#[tokio::test]
async fn poller_resumes_after_an_outage_without_loss_or_duplicates() {
    let mut region = DynamoRegion::start("us-east-1", 0).unwrap();
    let table = region
        .create_table(&TableSpec::new("items", "pk"))
        .await
        .unwrap();
    let client = region.client();
    for i in 0..5 {
        put(&client, "items", &format!("k{i}"), &[]).await;
    }
    let mut poller = StreamPoller::new(&region.endpoint(), region.name(), &table.stream_arn)
        .request_timeout(Duration::from_millis(500));
    let first = poller.next_batch(3).await.unwrap();
    assert_eq!(first.len(), 3);

    region.stop();
    let err = poller.next_batch(10).await.unwrap_err();
    assert!(err.is_transport(), "{err}");
    region.resume().unwrap();

    put(&client, "items", "k5", &[]).await;
    let rest = poller.collect(3, Duration::from_secs(5)).await.unwrap();
    let keys: Vec<String> = first
        .iter()
        .chain(rest.iter())
        .map(|r| match image(&r.change.keys).get("pk") {
            Some(AttributeValue::S(k)) => k.clone(),
            other => panic!("unexpected key {other:?}"),
        })
        .collect();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4", "k5"]);
}

#[tokio::test]
async fn ttl_sweep_emits_a_service_remove() {
    let region = DynamoRegion::start("us-east-1", 0).unwrap();
    let table = region
        .create_table(&TableSpec::new("items", "pk").with_ttl_attribute("expires_at"))
        .await
        .unwrap();
    let client = region.client();
    let past = (region.now_ms() / 1000 - 10).to_string();
    let future = (region.now_ms() / 1000 + 3600).to_string();
    put(&client, "items", "old", &[("expires_at", n(&past))]).await;
    put(&client, "items", "young", &[("expires_at", n(&future))]).await;

    assert_eq!(region.sweep_ttl().unwrap(), 1);

    let mut poller = StreamPoller::new(&region.endpoint(), region.name(), &table.stream_arn);
    let records = poller.collect(3, Duration::from_secs(5)).await.unwrap();
    let remove = records.iter().find(|r| r.event_name == "REMOVE").unwrap();
    assert_eq!(image(&remove.change.keys).get("pk"), Some(&s("old")));
    let identity = remove
        .user_identity
        .as_ref()
        .expect("TTL REMOVE has a userIdentity");
    assert_eq!(identity.type_, "Service");
    assert_eq!(identity.principal_id, "dynamodb.amazonaws.com");
    assert_eq!(
        image(&remove.change.old_image).get("expires_at"),
        Some(&n(&past))
    );
}

#[tokio::test]
async fn region_clocks_are_skewed() {
    let ahead = DynamoRegion::start("ahead", 3_600_000).unwrap();
    let exact = DynamoRegion::start("exact", 0).unwrap();
    let skew = ahead.now_ms() - exact.now_ms();
    assert!((3_599_000..=3_601_000).contains(&skew), "skew {skew}");

    // Due in 30 minutes of real time: only the region an hour ahead expires it.
    let due = (exact.now_ms() / 1000 + 1800).to_string();
    for region in [&ahead, &exact] {
        region
            .create_table(&TableSpec::new("items", "pk"))
            .await
            .unwrap();
        put(&region.client(), "items", "k", &[("expires_at", n(&due))]).await;
    }
    assert_eq!(ahead.sweep_ttl().unwrap(), 1);
    assert_eq!(exact.sweep_ttl().unwrap(), 0);

    // The clock can be moved later.
    exact.clock().advance_ms(3_600_000);
    assert_eq!(exact.sweep_ttl().unwrap(), 1);
}
