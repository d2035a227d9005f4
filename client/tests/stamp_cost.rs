//! A write made through the helper costs Ferry no stamp: the real enqueue handler, fed the real
//! stream records of helper writes (dynoxide's stream, moto's SQS for the buffer), forwards each
//! record as it is, and its metrics line says `Stamped: 0, Tombstoned: 0`. The same kinds of
//! writes made without the helper cost a stamp or a tombstone each, and so does a plain
//! write-back of an item read (its seal no longer matches), which the helper's restore avoids.

use aws_lambda_events::event::dynamodb::Event;
use aws_sdk_dynamodb::types::{AttributeValue as V, Put};
use ferry_aws::{Buffer, Table};
use ferry_client::{clock, Ferry, Guard, Previous, SdkItem};
use ferry_core::Config;
use ferry_enqueue::{handle, Destination, EnqueueOutcome, Enqueuer};
use ferry_sandbox::{DynamoRegion, EventRecord, Moto, StreamPoller, TableSpec};
use std::time::Duration;

const LOCAL: &str = "us-east-1";
const DESTINATION: &str = "eu-west-1";
const TABLE: &str = "orders";

fn key(pk: &str) -> SdkItem {
    [("pk".to_string(), V::S(pk.to_string()))].into()
}

fn item(pk: &str, status: &str) -> SdkItem {
    let mut i = key(pk);
    i.insert("status".into(), V::S(status.to_string()));
    i
}

async fn enqueue(records: Vec<EventRecord>, enqueuer: &Enqueuer) -> EnqueueOutcome {
    let mut event = Event::default();
    event.records = records;
    handle(&event, enqueuer).await
}

/// The metrics the function publishes, as CloudWatch would read them.
fn metrics(outcome: &EnqueueOutcome) -> serde_json::Value {
    serde_json::from_str(&outcome.metrics_line(
        &ferry_aws::emf::Metrics::new("Ferry", "orders"),
        clock::system_now_ms(),
    ))
    .expect("metrics line is JSON")
}

#[tokio::test]
async fn helper_writes_cost_no_stamp() {
    let region = DynamoRegion::start(LOCAL, 0).expect("dynoxide starts");
    let table = region
        .create_table(&TableSpec::new(TABLE, "pk").with_ttl_attribute("ttl"))
        .await
        .expect("table");
    let moto = Moto::start().await.expect("moto starts");
    let sqs = moto.sqs_client(LOCAL);
    let buffer = Buffer::create(sqs, &format!("{TABLE}-buffer-{DESTINATION}"), &[])
        .await
        .expect("queue");
    let mut config = Config::new(LOCAL, "pk");
    config.destinations = vec![DESTINATION.to_string()];
    let client = region.client();
    let enqueuer = Enqueuer::new(
        config.clone(),
        Table::new(client.clone(), TABLE),
        vec![Destination {
            region: DESTINATION.to_string(),
            buffer,
        }],
        clock::system(),
    )
    .expect("enqueuer");
    let ferry = Ferry::new(config).expect("config");
    let mut poller = StreamPoller::new(&region.endpoint(), LOCAL, &table.stream_arn);

    // Every kind of helper write: put, update, delete, an update that brings the deleted key
    // back, a conditional put, a transaction with a put and a tombstone, a restore of an item
    // read before that tombstone and a copy of it to another key.
    let put = |i: SdkItem| client.put_item().table_name(TABLE).set_item(Some(i));
    let written = ferry.put(put(item("a", "new"))).send().await.expect("put");
    let written = ferry
        .update(
            client
                .update_item()
                .table_name(TABLE)
                .set_key(Some(key("a")))
                .update_expression("SET #s = :s")
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":s", V::S("paid".into())),
        )
        .previous(written.version)
        .send()
        .await
        .expect("update");
    let deleted = ferry
        .delete(client.put_item().table_name(TABLE), key("a"))
        .previous(written.version)
        .send()
        .await
        .expect("delete");
    let revived = ferry
        .update(
            client
                .update_item()
                .table_name(TABLE)
                .set_key(Some(key("a")))
                .update_expression("SET #s = :s")
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":s", V::S("again".into())),
        )
        .previous(deleted.version)
        .send()
        .await
        .expect("update of the deleted key");
    ferry
        .put(put(item("a", "final")))
        .previous(revived.version)
        .refuse_newer()
        .send()
        .await
        .expect("conditional put");
    ferry
        .put(put(item("c", "to-delete")))
        .send()
        .await
        .expect("put");
    let image = client
        .get_item()
        .table_name(TABLE)
        .set_key(Some(key("c")))
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
        .expect("item");
    let entries = vec![
        ferry
            .put_entry(
                Put::builder()
                    .table_name(TABLE)
                    .set_item(Some(item("b", "new")))
                    .build()
                    .expect("put"),
                &Previous::Absent,
                Guard::RefuseNewer,
            )
            .expect("put entry")
            .request,
        ferry
            .tombstone_entry(TABLE, &key("c"), &Previous::Unknown, Guard::Overwrite)
            .expect("tombstone entry")
            .request,
    ];
    client
        .transact_write_items()
        .set_transact_items(Some(entries))
        .send()
        .await
        .expect("transaction");
    ferry
        .restore(client.put_item().table_name(TABLE), image.clone())
        .expect("restore")
        .send()
        .await
        .expect("restore");
    ferry
        .copy_to(client.put_item().table_name(TABLE), image.clone(), key("e"))
        .expect("copy")
        .send()
        .await
        .expect("copy");

    let records = poller
        .collect(10, Duration::from_secs(10))
        .await
        .expect("stream records");
    assert_eq!(records.len(), 10, "one stream record per helper write");
    let outcome = enqueue(records, &enqueuer).await;
    let c = &outcome.counts;
    assert_eq!(
        (c.forwarded, c.stamped, c.tombstoned, c.failed, c.poison),
        (10, 0, 0, 0, 0),
        "{c:?}"
    );
    let m = metrics(&outcome);
    assert_eq!(
        (&m["Stamped"], &m["Tombstoned"], &m["Forwarded"]),
        (&0.into(), &0.into(), &10.into())
    );

    // Without the helper: an unstamped put costs a stamp, a hard delete a tombstone, and a
    // plain write-back of the image read, changed, a stamp (its seal no longer matches).
    put(item("d", "plain")).send().await.expect("plain put");
    let mut changed = image;
    changed.insert("status".into(), V::S("changed".into()));
    put(changed).send().await.expect("plain write-back");
    client
        .delete_item()
        .table_name(TABLE)
        .set_key(Some(key("b")))
        .send()
        .await
        .expect("hard delete");
    let records = poller
        .collect(3, Duration::from_secs(10))
        .await
        .expect("stream records");
    let outcome = enqueue(records, &enqueuer).await;
    let m = metrics(&outcome);
    assert_eq!(
        (&m["Stamped"], &m["Tombstoned"], &m["Forwarded"]),
        (&2.into(), &1.into(), &0.into())
    );
}
