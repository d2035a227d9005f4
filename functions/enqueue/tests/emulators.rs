//! The real handler against real wire-protocol emulators on loopback: dynoxide as the local
//! region's DynamoDB (and its stream), moto's SQS for the buffers, the sandbox's fault proxy in
//! between where a test needs an outage or a race. Every test reads the queues and the table
//! back and checks exactly what arrived.

use aws_sdk_dynamodb::types::AttributeValue as SdkValue;
use ferry_aws::values::to_sdk;
use ferry_aws::{Buffer, Table};
use ferry_core::buffer::unpack;
use ferry_core::{AttributeValue, ChangeRecord, Config, Item, Version};
use ferry_enqueue::synthetic::{event, event_of, StreamRecord};
use ferry_enqueue::{handle, handle_json, Destination, EnqueueOutcome, Enqueuer};
use ferry_sandbox::{
    dynamodb_client_with, sqs_client_with, wait_until, ClientOptions, DynamoRegion, FaultMode,
    FaultProxy, Moto, StreamPoller, TableSpec,
};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

const LOCAL: &str = "us-east-1";
const DESTINATIONS: [&str; 2] = ["eu-west-1", "ap-southeast-2"];
const TABLE: &str = "ferry-demo";

/// One moto for the whole test binary (it takes seconds to start); every test uses its own
/// queues. Started on a thread of its own so no test's runtime owns it.
fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(Moto::start())
                .expect("moto starts")
        })
        .join()
        .expect("moto start thread")
    })
}

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_new_image(name: &str, i: usize) -> Item {
    let v: serde_json::Value = serde_json::from_str(&fixture(name)).expect("JSON");
    serde_json::from_value(v["Records"][i]["dynamodb"]["NewImage"].clone()).expect("item")
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn key(pk: &str) -> Item {
    [("pk".to_string(), s(pk))].into()
}

fn item(pk: &str, attrs: &[(&str, &str)]) -> Item {
    let mut i = key(pk);
    for (n, v) in attrs {
        i.insert(n.to_string(), s(v));
    }
    i
}

fn stamped(mut i: Item, version: &Version) -> Item {
    version.stamp_into(&mut i, &Default::default());
    i
}

fn now_ms() -> u64 {
    ferry_core::clock::system_now_ms()
}

struct Harness {
    region: DynamoRegion,
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    /// Destination region → buffer queue URL.
    queues: Vec<(String, String)>,
    config: Config,
}

async fn harness(test: &str) -> Harness {
    let region = DynamoRegion::start(LOCAL, 0).expect("dynoxide starts");
    region
        .create_table(&TableSpec::new(TABLE, "pk").with_ttl_attribute("ttl"))
        .await
        .expect("table");
    let sqs = moto().sqs_client(LOCAL);
    let mut queues = Vec::new();
    for d in DESTINATIONS {
        let buffer = Buffer::create(sqs.clone(), &format!("{test}-buffer-{d}"), &[])
            .await
            .expect("queue");
        queues.push((d.to_string(), buffer.queue_url));
    }
    let mut config = Config::new(LOCAL, "pk");
    config.destinations = DESTINATIONS.map(String::from).to_vec();
    Harness {
        ddb: region.client(),
        region,
        sqs,
        queues,
        config,
    }
}

impl Harness {
    fn enqueuer(&self) -> Enqueuer {
        self.enqueuer_with(
            self.config.clone(),
            &self.region.endpoint(),
            ClientOptions::default(),
            None,
        )
    }

    /// An enqueuer whose table client goes to `ddb_endpoint`, and whose buffer client for one
    /// destination goes to another SQS endpoint (a fault proxy in front of moto).
    fn enqueuer_with(
        &self,
        config: Config,
        ddb_endpoint: &str,
        options: ClientOptions,
        sqs_detour: Option<(&str, &str)>,
    ) -> Enqueuer {
        let table = Table::new(dynamodb_client_with(ddb_endpoint, LOCAL, &options), TABLE);
        let buffers = self
            .queues
            .iter()
            .map(|(region, url)| {
                let endpoint = match sqs_detour {
                    Some((r, e)) if r == region => e.to_string(),
                    _ => moto().endpoint(),
                };
                Destination {
                    region: region.clone(),
                    buffer: Buffer::new(sqs_client_with(&endpoint, LOCAL, &options), url),
                }
            })
            .collect();
        Enqueuer::new(config, table, buffers, ferry_core::clock::system()).expect("enqueuer")
    }

    fn table(&self) -> Table {
        Table::new(self.ddb.clone(), TABLE)
    }

    async fn put(&self, item: &Item) {
        self.ddb
            .put_item()
            .table_name(TABLE)
            .set_item(Some(to_sdk(item)))
            .send()
            .await
            .expect("put");
    }

    async fn get(&self, pk: &str) -> Option<Item> {
        self.table().get(&key(pk)).await.expect("get")
    }

    async fn item_count(&self) -> i32 {
        self.ddb
            .scan()
            .table_name(TABLE)
            .send()
            .await
            .expect("scan")
            .count
    }

    /// Every record that arrived on a destination's buffer since the last read, by key.
    /// Messages stay invisible for a minute, so a second read returns only newer messages.
    async fn read_queue(&self, destination: &str) -> BTreeMap<String, Vec<ChangeRecord>> {
        let url = &self
            .queues
            .iter()
            .find(|(r, _)| r == destination)
            .expect("destination")
            .1;
        let buffer = Buffer::new(self.sqs.clone(), url);
        let mut out: BTreeMap<String, Vec<ChangeRecord>> = BTreeMap::new();
        loop {
            let messages = buffer
                .receive_with_attributes(10, 0, Some(60), &[])
                .await
                .expect("receive");
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                for r in unpack(&m.message.body).expect("a Ferry message") {
                    let AttributeValue::S(pk) = &r.key["pk"] else {
                        panic!("string keys only here");
                    };
                    out.entry(pk.clone()).or_default().push(r);
                }
            }
        }
    }

    /// Both destinations received exactly these keys (once each).
    async fn assert_queues_hold(&self, keys: &[&str]) -> BTreeMap<String, ChangeRecord> {
        let mut first = None;
        for d in DESTINATIONS {
            let got = self.read_queue(d).await;
            let names: Vec<&str> = got.keys().map(String::as_str).collect();
            let mut want = keys.to_vec();
            want.sort();
            assert_eq!(names, want, "keys on the buffer for {d}");
            for (k, records) in &got {
                assert_eq!(
                    records.len(),
                    1,
                    "{k} arrived {} times on {d}",
                    records.len()
                );
            }
            let flat: BTreeMap<String, ChangeRecord> =
                got.into_iter().map(|(k, mut v)| (k, v.remove(0))).collect();
            if let Some(first) = &first {
                assert_eq!(first, &flat, "every destination gets the same records");
            }
            first = Some(flat);
        }
        first.unwrap_or_default()
    }
}

fn version_of(i: &Item) -> Version {
    Version::of(i, &Default::default())
        .expect("readable version")
        .expect("a version")
}

fn assert_clean(outcome: &EnqueueOutcome) {
    assert!(
        outcome.response.batch_item_failures.is_empty(),
        "unexpected failure: {:?}",
        outcome.failure
    );
    assert_eq!(outcome.counts.failed, 0);
}

#[tokio::test]
async fn forwards_fixtures_exactly_to_every_destination() {
    let h = harness("exact").await;
    let enqueuer = h.enqueuer();
    let names = [
        ("insert.json", "order#1001"),
        ("number-38-digits.json", "ledger#7"),
        ("binary-and-sets.json", "blob#1"),
        ("nested.json", "doc#1"),
    ];
    for (name, _) in names {
        let outcome = handle_json(&fixture(name), &enqueuer).await.expect("event");
        assert_clean(&outcome);
        assert_eq!(outcome.counts.forwarded, 1, "{name}");
        assert_eq!(
            outcome.counts.sqs_requests, 2,
            "one request per destination"
        );
        assert!(outcome.newest_record_age_ms.is_some());
    }
    let arrived = h.assert_queues_hold(&names.map(|(_, k)| k)).await;
    for (name, pk) in names {
        let record = &arrived[pk];
        let image = fixture_new_image(name, 0);
        assert_eq!(record.image, image, "{name}: the image arrives exactly");
        assert_eq!(record.version, version_of(&image));
        assert_eq!(record.source_region, LOCAL);
        assert!(!record.tombstone);
    }
    assert_eq!(
        arrived["ledger#7"].image["balance"],
        AttributeValue::N("12345678901234567890123456789012345678".into())
    );
    // The MODIFY after it replaces the INSERT's version on the buffer too.
    let outcome = handle_json(&fixture("modify.json"), &enqueuer)
        .await
        .expect("event");
    assert_eq!(outcome.counts.forwarded, 1);
    let arrived = h.assert_queues_hold(&["order#1001"]).await;
    assert_eq!(
        arrived["order#1001"].image["status"],
        AttributeValue::S("PAID".into())
    );
    // Forwarding never writes to the table.
    assert_eq!(h.item_count().await, 0);
}

#[tokio::test]
async fn a_390_kb_item_arrives_whole() {
    let h = harness("large").await;
    // Built here rather than committed as a 520 KB JSON file: incompressible bytes and text,
    // 390 KB of names and values, just under DynamoDB's 400 KB item limit.
    let mut rng = rand::rngs::StdRng::seed_from_u64(390);
    let mut big = item("large#1", &[("kind", "attachment")]);
    let blob: Vec<u8> = (0..200_000).map(|_| rng.gen()).collect();
    let text: String = (0..190_000)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect();
    big.insert("blob".into(), AttributeValue::B(blob));
    big.insert("text".into(), AttributeValue::S(text));
    let big = stamped(big, &Version::new(now_ms(), LOCAL));
    let ev = event(&[StreamRecord::insert("1000", &key("large#1"), &big)]).expect("event");
    let outcome = handle(&ev, &h.enqueuer()).await;
    assert_clean(&outcome);
    assert_eq!(outcome.counts.forwarded, 1);
    assert_eq!(outcome.counts.sqs_requests, 2);
    let arrived = h.assert_queues_hold(&["large#1"]).await;
    assert_eq!(arrived["large#1"].image, big);
}

#[tokio::test]
async fn stamps_and_tombstones_real_stream_records_then_forwards_them() {
    let h = harness("stream").await;
    let enqueuer = h.enqueuer();
    let mut poller = StreamPoller::new(
        &h.region.endpoint(),
        LOCAL,
        &ferry_sandbox::stream_arn_of(&h.ddb, TABLE)
            .await
            .expect("stream"),
    );
    let started = now_ms();
    let v_order = Version::new(started - 1_000, LOCAL);
    let v_profile = Version::new(started - 5_000, LOCAL);
    // An unstamped write, a stamped write the application then hard-deletes, a stamped write
    // then an update that keeps its version, and a drain's write from another region.
    h.put(&item("profile#42", &[("name", "Ada")])).await;
    h.put(&stamped(item("order#1", &[("status", "NEW")]), &v_order))
        .await;
    h.ddb
        .delete_item()
        .table_name(TABLE)
        .key("pk", SdkValue::S("order#1".into()))
        .send()
        .await
        .expect("delete");
    h.put(&stamped(
        item("profile#43", &[("nickname", "amazing")]),
        &v_profile,
    ))
    .await;
    h.ddb
        .update_item()
        .table_name(TABLE)
        .key("pk", SdkValue::S("profile#43".into()))
        .update_expression("SET nickname = :n")
        .expression_attribute_values(":n", SdkValue::S("admiral".into()))
        .send()
        .await
        .expect("update");
    let v_foreign = Version::new(started - 100, "eu-west-1");
    h.put(&stamped(
        item("order#2", &[("status", "SHIPPED")]),
        &v_foreign,
    ))
    .await;

    let records = poller
        .collect(6, Duration::from_secs(10))
        .await
        .expect("stream records");
    assert_eq!(records.len(), 6);
    let outcome = handle(&event_of(records), &enqueuer).await;
    assert_clean(&outcome);
    let c = &outcome.counts;
    assert_eq!(
        (
            c.forwarded,
            c.stamped,
            c.tombstoned,
            c.skipped_replicated_in
        ),
        (2, 2, 1, 1),
        "{c:?}"
    );
    let first = h.assert_queues_hold(&["order#1", "profile#43"]).await;
    assert_eq!(first["order#1"].version, v_order);
    assert_eq!(first["profile#43"].version, v_profile);

    // The unstamped write now carries a local version at or above the time it was stamped.
    let p42 = h.get("profile#42").await.expect("profile#42");
    let v42 = version_of(&p42);
    assert_eq!(v42.origin, LOCAL);
    assert!(v42.ts_ms >= started, "{v42}");
    assert_eq!(p42["name"], s("Ada"));
    // The hard delete became a tombstone above the deleted version, expiring after the lifetime.
    let tomb = h.get("order#1").await.expect("a tombstone");
    let vt = version_of(&tomb);
    assert!(vt > v_order, "{vt}");
    assert_eq!(tomb["ferry_deleted"], AttributeValue::Bool(true));
    let AttributeValue::N(ttl) = &tomb["ttl"] else {
        panic!("tombstone TTL");
    };
    let ttl: u64 = ttl.parse().expect("TTL number");
    let lifetime = h.config.tombstone_lifetime_s;
    assert!((started / 1000 + lifetime..=now_ms() / 1000 + lifetime).contains(&ttl));
    assert!(!tomb.contains_key("status"), "a tombstone holds no data");
    // The kept version was lifted above what the update saw; the update's values stay.
    let p43 = h.get("profile#43").await.expect("profile#43");
    assert!(version_of(&p43) > v_profile);
    assert_eq!(p43["nickname"], s("admiral"));
    // The drain's write was left alone.
    assert_eq!(
        version_of(&h.get("order#2").await.expect("order#2")),
        v_foreign
    );

    // Each of those writes produced its own record: case 2, forwarded as it is.
    let records = poller
        .collect(3, Duration::from_secs(10))
        .await
        .expect("stream records");
    assert_eq!(records.len(), 3);
    let outcome = handle(&event_of(records), &enqueuer).await;
    assert_clean(&outcome);
    assert_eq!(outcome.counts.forwarded, 3);
    assert_eq!(outcome.counts.stamped + outcome.counts.tombstoned, 0);
    let second = h
        .assert_queues_hold(&["order#1", "profile#42", "profile#43"])
        .await;
    assert!(second["order#1"].tombstone);
    assert_eq!(second["order#1"].version, vt);
    assert_eq!(second["order#1"].image, tomb);
    assert_eq!(second["profile#42"].image, p42);
    assert_eq!(second["profile#43"].image, p43);
}

#[tokio::test]
async fn fixture_hints_stamp_and_tombstone_the_table() {
    let h = harness("hints").await;
    let enqueuer = h.enqueuer();
    // The table holds what the records' writes left.
    h.put(&fixture_new_image("unstamped-write.json", 0)).await;
    h.put(&fixture_new_image("kept-version.json", 0)).await;
    let started = now_ms();

    for (name, stamped_n, tombstoned_n) in [
        ("unstamped-write.json", 1, 0),
        ("kept-version.json", 1, 0),
        ("remove-by-app.json", 0, 1),
    ] {
        let outcome = handle_json(&fixture(name), &enqueuer).await.expect("event");
        assert_clean(&outcome);
        assert_eq!(
            (outcome.counts.stamped, outcome.counts.tombstoned),
            (stamped_n, tombstoned_n),
            "{name}"
        );
        assert_eq!(outcome.counts.sqs_requests, 0, "{name}: nothing to forward");
    }
    let p42 = h.get("profile#42").await.expect("stamped");
    assert_eq!(version_of(&p42).origin, LOCAL);
    assert!(version_of(&p42).ts_ms >= started);
    let p43 = h.get("profile#43").await.expect("stamped");
    assert!(version_of(&p43).ts_ms >= started);
    assert_eq!(p43["nickname"], s("admiral"));
    let tomb = h.get("order#1001").await.expect("tombstone");
    assert_eq!(tomb["ferry_deleted"], AttributeValue::Bool(true));
    // Above the deleted version (and above now: the floor is max(now, seen + 1)).
    assert!(version_of(&tomb).ts_ms >= started);

    // Handling the same records again (a Lambda retry) changes nothing.
    for name in [
        "unstamped-write.json",
        "kept-version.json",
        "remove-by-app.json",
    ] {
        let outcome = handle_json(&fixture(name), &enqueuer).await.expect("event");
        assert_clean(&outcome);
        assert_eq!(outcome.counts.stamped + outcome.counts.tombstoned, 0);
        assert_eq!(outcome.counts.unchanged, 1, "{name}");
    }
    assert_eq!(h.get("profile#42").await, Some(p42));
    assert_eq!(h.get("order#1001").await, Some(tomb));
}

#[tokio::test]
async fn a_failed_condition_feeds_the_returned_item_back_into_reconcile() {
    let h = harness("race").await;
    let proxy = FaultProxy::start(&h.region.endpoint()).expect("proxy");
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(200)));
    let enqueuer = h.enqueuer_with(
        h.config.clone(),
        &proxy.endpoint(),
        ClientOptions::default(),
        None,
    );
    // An application deleted race#1 (the record), and re-created it, unstamped, between
    // enqueue's read (absent: tombstone, if absent) and its write.
    let old = stamped(
        item("race#1", &[("v", "old")]),
        &Version::new(now_ms() - 10_000, LOCAL),
    );
    let ev = event(&[StreamRecord::remove("2000", &key("race#1"), &old)]).expect("event");
    let task = tokio::spawn(async move { handle(&ev, &enqueuer).await });
    // The GetItem has been answered upstream; its answer and the conditional write are still
    // each delayed 200 ms by the proxy.
    wait_until(Duration::from_secs(5), || async {
        proxy.stats().forwarded >= 1
    })
    .await
    .expect("the read went through");
    h.put(&item("race#1", &[("v", "re-created")])).await;
    let outcome = task.await.expect("handler task");
    assert_clean(&outcome);
    assert_eq!(outcome.counts.condition_retries, 1);
    assert_eq!((outcome.counts.stamped, outcome.counts.tombstoned), (1, 0));
    let stored = h.get("race#1").await.expect("the item");
    assert_eq!(stored["v"], s("re-created"), "never a tombstone over it");
    assert!(!stored.contains_key("ferry_deleted"));
    assert_eq!(version_of(&stored).origin, LOCAL);
}

#[tokio::test]
async fn sqs_refusing_reports_the_first_unsent_record_not_an_error() {
    let h = harness("refuse").await;
    let proxy = FaultProxy::start(&moto().endpoint()).expect("proxy");
    proxy.set_mode(FaultMode::Refuse);
    let enqueuer = h.enqueuer_with(
        h.config.clone(),
        &h.region.endpoint(),
        ClientOptions::short(),
        Some(("ap-southeast-2", &proxy.endpoint())),
    );
    h.put(&item("k#1", &[("v", "unstamped")])).await;
    let v = Version::new(now_ms(), LOCAL);
    let records = [
        StreamRecord::ttl_remove("3000", &key("session#1"), &item("session#1", &[])),
        StreamRecord::insert("3001", &key("k#1"), &item("k#1", &[("v", "unstamped")])),
        StreamRecord::insert(
            "3002",
            &key("a#1"),
            &stamped(item("a#1", &[("n", "1")]), &v),
        ),
        StreamRecord::insert(
            "3003",
            &key("a#2"),
            &stamped(item("a#2", &[("n", "2")]), &v),
        ),
    ];
    let outcome = handle(&event(&records).expect("event"), &enqueuer).await;
    assert_eq!(outcome.retry_from(), Some("3002"), "{:?}", outcome.failure);
    let failure = outcome.failure.as_ref().expect("a failure");
    assert_eq!(failure.index, 2);
    assert_eq!(failure.key.as_deref(), Some("pk=S:a#1"));
    assert!(
        failure.reason.contains("ap-southeast-2"),
        "{}",
        failure.reason
    );
    let c = &outcome.counts;
    assert_eq!(
        (c.skipped_ttl, c.stamped, c.forwarded, c.failed),
        (1, 1, 0, 2),
        "{c:?}"
    );
    // Everything before the failure is done: the stamp is in the table.
    assert_eq!(version_of(&h.get("k#1").await.expect("k#1")).origin, LOCAL);
    // The healthy destination took the batch: a partial send, resent below, harmless.
    assert_eq!(h.read_queue("eu-west-1").await.len(), 2);
    assert!(h.read_queue("ap-southeast-2").await.is_empty());

    // Lambda resends from the reported record once SQS answers again.
    proxy.set_mode(FaultMode::Pass);
    let outcome = handle(&event(&records[2..]).expect("event"), &enqueuer).await;
    assert_clean(&outcome);
    assert_eq!(outcome.counts.forwarded, 2);
    let ap = h.read_queue("ap-southeast-2").await;
    assert_eq!(ap.keys().collect::<Vec<_>>(), ["a#1", "a#2"]);
    assert_eq!(ap["a#1"][0].version, v);
}

#[tokio::test]
async fn dynamodb_down_cuts_the_batch_at_the_reconcile_after_sending_what_came_before() {
    let mut h = harness("ddbdown").await;
    let enqueuer = h.enqueuer_with(
        h.config.clone(),
        &h.region.endpoint(),
        ClientOptions::short(),
        None,
    );
    let v = Version::new(now_ms(), LOCAL);
    let records = [
        StreamRecord::insert(
            "4000",
            &key("a#1"),
            &stamped(item("a#1", &[("n", "1")]), &v),
        ),
        StreamRecord::insert("4001", &key("k#1"), &item("k#1", &[("v", "unstamped")])),
        StreamRecord::insert(
            "4002",
            &key("a#2"),
            &stamped(item("a#2", &[("n", "2")]), &v),
        ),
    ];
    h.region.stop();
    let outcome = handle(&event(&records).expect("event"), &enqueuer).await;
    h.region.resume().expect("resume");
    assert_eq!(outcome.retry_from(), Some("4001"), "{:?}", outcome.failure);
    assert_eq!(
        (outcome.counts.forwarded, outcome.counts.failed),
        (1, 2),
        "{:?}",
        outcome.counts
    );
    // The record before the failure was really sent, to every destination; the one after it
    // was left for the resend.
    h.assert_queues_hold(&["a#1"]).await;
}

#[tokio::test]
async fn poison_records_are_skipped_without_blocking_the_batch() {
    let h = harness("poison").await;
    let enqueuer = h.enqueuer();
    let outcome = handle_json(&fixture("malformed.json"), &enqueuer)
        .await
        .expect("a stream event");
    assert_clean(&outcome);
    assert_eq!((outcome.counts.poison, outcome.counts.forwarded), (3, 2));
    h.assert_queues_hold(&["item#m1", "item#m2"]).await;

    // A change record too large for any SQS message (DynamoDB itself would refuse the item; the
    // handler must still not choke on it).
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let huge: Vec<u8> = (0..1_200_000).map(|_| rng.gen()).collect();
    let v = Version::new(now_ms(), LOCAL);
    let mut big = stamped(item("huge#1", &[]), &v);
    big.insert("blob".into(), AttributeValue::B(huge));
    let records = [
        StreamRecord::insert("5000", &key("g#1"), &stamped(item("g#1", &[]), &v)),
        StreamRecord::insert("5001", &key("huge#1"), &big),
        StreamRecord::insert("5002", &key("g#2"), &stamped(item("g#2", &[]), &v)),
    ];
    let outcome = handle(&event(&records).expect("event"), &enqueuer).await;
    assert_clean(&outcome);
    assert_eq!((outcome.counts.poison, outcome.counts.forwarded), (1, 2));
    h.assert_queues_hold(&["g#1", "g#2"]).await;

    // A valid hint whose current item carries a version no one can order (written so by an
    // application): poison too, and the item is left as it is.
    let mut unreadable = item("bad#1", &[("v", "x")]);
    unreadable.insert("ferry_ts".into(), s("yesterday"));
    unreadable.insert("ferry_origin".into(), s(LOCAL));
    h.put(&unreadable).await;
    let old = stamped(
        item("bad#1", &[("v", "w")]),
        &Version::new(now_ms() - 1_000, LOCAL),
    );
    let records = [
        StreamRecord::remove("6000", &key("bad#1"), &old),
        StreamRecord::insert("6001", &key("g#3"), &stamped(item("g#3", &[]), &v)),
    ];
    let outcome = handle(&event(&records).expect("event"), &enqueuer).await;
    assert_clean(&outcome);
    assert_eq!((outcome.counts.poison, outcome.counts.forwarded), (1, 1));
    assert_eq!(h.get("bad#1").await, Some(unreadable));
    h.assert_queues_hold(&["g#3"]).await;
}

/// An unstamped item `margin` bytes below DynamoDB's 400 KB item limit (409,600 bytes; names
/// and values count: pk + its value + blob + its bytes), of incompressible bytes.
fn near_the_limit(pk: &str, margin: usize) -> Item {
    let blob_len = 400 * 1024 - margin - ("pk".len() + pk.len() + "blob".len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(margin as u64);
    let mut big = item(pk, &[]);
    big.insert(
        "blob".into(),
        AttributeValue::B((0..blob_len).map(|_| rng.gen()).collect()),
    );
    big
}

/// A stamp DynamoDB rejects for the record's own reasons is poison like an undecodable record:
/// an unstamped item within 20 bytes of the 400 KB item limit cannot take its version, and no
/// retry changes that. The stamp's `UpdateItem` fails with `ValidationException` (dynoxide holds
/// the finished item to the limit, as DynamoDB does); the record is counted and skipped, the item
/// is left as it is, and the records after it are done — instead of the shard being held until
/// the stream gives the batch up.
#[tokio::test]
async fn a_stamp_dynamodb_rejects_as_invalid_is_poison_and_the_shard_moves_on() {
    let h = harness("rejected").await;
    let enqueuer = h.enqueuer();
    let big = near_the_limit("big#1", 20);
    h.put(&big).await;
    let v = Version::new(now_ms(), LOCAL);
    let records = [
        StreamRecord::insert("8000", &key("g#1"), &stamped(item("g#1", &[]), &v)),
        StreamRecord::insert("8001", &key("big#1"), &big),
        StreamRecord::insert("8002", &key("g#2"), &stamped(item("g#2", &[]), &v)),
    ];
    let outcome = handle(&event(&records).expect("event"), &enqueuer).await;
    assert_clean(&outcome);
    let c = &outcome.counts;
    assert_eq!(
        (c.poison, c.stamped, c.forwarded, c.failed),
        (1, 0, 2, 0),
        "{c:?}"
    );
    assert!(outcome
        .metrics_line(&ferry_aws::emf::Metrics::new("Ferry", "orders"), 0)
        .contains("\"Poison\":1"));
    assert_eq!(
        h.get("big#1").await,
        Some(big.clone()),
        "the item is left as it is"
    );
    h.assert_queues_hold(&["g#1", "g#2"]).await;

    // Attribute merge mode's stamp (the version map) is refused the same way: poison too.
    let mut config = h.config.clone();
    config.merge_mode = ferry_core::MergeMode::Attribute;
    let merging = h.enqueuer_with(config, &h.region.endpoint(), ClientOptions::default(), None);
    let ev = event(&[StreamRecord::insert("9000", &key("big#1"), &big)]).expect("event");
    let outcome = handle(&ev, &merging).await;
    assert_clean(&outcome);
    assert_eq!((outcome.counts.poison, outcome.counts.stamped), (1, 0));
    assert_eq!(h.get("big#1").await, Some(big));
}

/// The issue's case: an unstamped item 40 bytes below the 400 KB limit. Ferry's stamp (version,
/// origin, seal) needs more than 40 bytes, so it cannot fit either: poison, the item untouched,
/// its neighbours forwarded, nothing else lost.
#[tokio::test]
async fn an_item_40_bytes_below_the_limit_cannot_take_its_stamp_and_is_poison() {
    let h = harness("rejected-40").await;
    let enqueuer = h.enqueuer();
    let big = near_the_limit("big#40", 40);
    h.put(&big).await;
    let v = Version::new(now_ms(), LOCAL);
    let records = [
        StreamRecord::insert("8100", &key("g#40a"), &stamped(item("g#40a", &[]), &v)),
        StreamRecord::insert("8101", &key("big#40"), &big),
        StreamRecord::insert("8102", &key("g#40b"), &stamped(item("g#40b", &[]), &v)),
    ];
    let outcome = handle(&event(&records).expect("event"), &enqueuer).await;
    assert_clean(&outcome);
    let c = &outcome.counts;
    assert_eq!(
        (c.poison, c.stamped, c.forwarded, c.failed),
        (1, 0, 2, 0),
        "{c:?}"
    );
    assert_eq!(
        h.get("big#40").await,
        Some(big),
        "the item is left as it is"
    );
    h.assert_queues_hold(&["g#40a", "g#40b"]).await;
}

/// A write of the other merge mode (here: an attribute-mode drain's merge landing in an
/// item-mode region) is a configuration error, not poison: the batch fails from that record —
/// what came before is sent, nothing after it is done, the stream keeps retrying it — and it is
/// counted for an alarm. And at start-up the enqueuer publishes its settings on its table, for
/// the other regions' drains to check.
#[tokio::test]
async fn a_write_of_the_other_mode_fails_the_batch_from_there() {
    let h = harness("mode-mismatch").await;
    let enqueuer = h.enqueuer();
    let v = Version::new(now_ms(), LOCAL);
    let mut merged = item("am#1", &[("a", "1")]);
    merged.insert(
        "ferry_versions".into(),
        AttributeValue::M([("a".to_string(), s("5@eu-west-1"))].into_iter().collect()),
    );
    let records = [
        StreamRecord::insert("7000", &key("ok#1"), &stamped(item("ok#1", &[]), &v)),
        StreamRecord::insert("7001", &key("am#1"), &merged),
        StreamRecord::insert("7002", &key("ok#2"), &stamped(item("ok#2", &[]), &v)),
    ];
    let outcome = handle(&event(&records).expect("event"), &enqueuer).await;
    assert_eq!(outcome.retry_from(), Some("7001"));
    let failure = outcome.failure.as_ref().expect("a failure");
    assert!(
        failure.reason.contains("merge mode mismatch"),
        "{}",
        failure.reason
    );
    assert_eq!(
        (
            outcome.counts.forwarded,
            outcome.counts.failed,
            outcome.counts.mode_mismatch,
            outcome.counts.poison
        ),
        (1, 2, 1, 0)
    );
    assert!(outcome
        .metrics_line(&ferry_aws::emf::Metrics::new("Ferry", "orders"), 0)
        .contains("\"ModeMismatch\":1"));
    h.assert_queues_hold(&["ok#1"]).await;

    // Published settings: the tags another region's drain reads.
    enqueuer.publish_settings().await;
    let arn = h.table().arn().await.expect("arn");
    let tags = h.table().tags(&arn).await.expect("tags");
    assert_eq!(
        ferry_core::peer::check_peer(&h.config, &tags),
        ferry_core::peer::PeerCheck::Agrees
    );
    let mut attribute = h.config.clone();
    attribute.merge_mode = ferry_core::MergeMode::Attribute;
    assert!(ferry_core::peer::check_peer(&attribute, &tags).is_mismatch());
}

#[tokio::test]
async fn skips_ttl_replicated_in_and_filtered_records() {
    let h = harness("skips").await;
    let enqueuer = h.enqueuer();
    // A TTL removal sends nothing; it leaves this region's own tombstone at the expired version
    // (exactly the INSERT of `expiry-tombstone.json`), whose record is then skipped as TTL.
    let outcome = handle_json(&fixture("remove-by-ttl.json"), &enqueuer)
        .await
        .expect("event");
    assert_clean(&outcome);
    let c = &outcome.counts;
    assert_eq!(
        (c.skipped_ttl, c.tombstoned, c.forwarded, c.sqs_requests),
        (0, 1, 0, 0),
        "{c:?}"
    );
    assert_eq!(
        h.get("session#9f2c41").await,
        Some(fixture_new_image("expiry-tombstone.json", 0)),
        "the local expiry tombstone"
    );
    let outcome = handle_json(&fixture("expiry-tombstone.json"), &enqueuer)
        .await
        .expect("event");
    assert_clean(&outcome);
    assert_eq!(outcome.counts.skipped_ttl, 1);
    assert_eq!(outcome.counts.sqs_requests, 0);
    let outcome = handle_json(&fixture("replicated-in.json"), &enqueuer)
        .await
        .expect("event");
    assert_clean(&outcome);
    assert_eq!(outcome.counts.skipped_replicated_in, 1);
    assert_eq!(outcome.counts.sqs_requests, 0);
    assert_eq!(
        h.item_count().await,
        1,
        "no write for a skipped record (the expiry tombstone aside)"
    );
    h.assert_queues_hold(&[]).await;

    let mut config = h.config.clone();
    config.filter = ferry_core::ItemFilter::parse("pk-prefix:cart#").expect("filter");
    let filtered = h.enqueuer_with(config, &h.region.endpoint(), ClientOptions::default(), None);
    let outcome = handle_json(&fixture("mixed-batch.json"), &filtered)
        .await
        .expect("event");
    assert_clean(&outcome);
    let c = &outcome.counts;
    assert_eq!(
        (
            c.records,
            c.forwarded,
            c.skipped_ttl,
            c.filtered,
            c.tombstoned
        ),
        (5, 1, 0, 2, 2),
        "{c:?}"
    );
    h.assert_queues_hold(&["cart#5150"]).await;
    assert!(
        h.get("cart#4040").await.is_some(),
        "the hard delete's tombstone"
    );
    // The TTL removal is decided before the filter: its expiry tombstone (local, never sent).
    let expired = h.get("session#77aa").await.expect("the expiry tombstone");
    assert!(ferry_core::digest::is_expiry_tombstone(
        &expired,
        &h.config.names
    ));
    assert!(h.get("profile#44").await.is_none(), "filtered: not touched");
}

#[tokio::test]
async fn an_empty_batch_does_nothing() {
    let h = harness("empty").await;
    let outcome = handle_json(r#"{"Records":[]}"#, &h.enqueuer())
        .await
        .expect("event");
    assert_clean(&outcome);
    assert_eq!(outcome.counts, Default::default());
    assert_eq!(outcome.newest_record_age_ms, None);
    assert!(handle_json(r#"{"not":"a stream event"}"#, &h.enqueuer())
        .await
        .is_err());
}
