//! The helper against real wire-protocol DynamoDB emulators on loopback: every test runs on
//! dynoxide (one server per test) and on Amazon's DynamoDB Local (one server per test binary,
//! a table per test), whose expression parser is DynamoDB's own: a merged expression it accepts
//! is one DynamoDB accepts. Every test reads the stored items back raw and checks them attribute
//! by attribute.

use aws_sdk_dynamodb::types::{
    AttributeValue as V, ConditionCheck, Put, ReturnValue, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use ferry_client::{Error, Ferry, Guard, Previous, RequestError, SdkItem, Version};
use ferry_core::{apply_condition, ChangeRecord, Config};
use ferry_sandbox::{DynamoDbLocal, DynamoRegion, TableSpec};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

const LOCAL: &str = "us-east-1";
/// The tests' clock starts here (and moves only when a test moves it), so versions and TTLs can
/// be checked exactly. Near the real time: DynamoDB Local expires items whose TTL is past.
fn t0() -> u64 {
    static T0: OnceLock<u64> = OnceLock::new();
    *T0.get_or_init(|| ferry_core::clock::system_now_ms() / 1000 * 1000)
}

/// Each test body runs once per emulator.
macro_rules! on_both_emulators {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn dynoxide() {
                super::$test(super::Harness::dynoxide().await).await
            }
            #[tokio::test]
            async fn dynamodb_local() {
                super::$test(super::Harness::dynamodb_local(stringify!($test)).await).await
            }
        }
    )*};
}

on_both_emulators!(
    a_put_is_stamped_and_keeps_the_applications_condition,
    a_put_goes_above_a_newer_stored_version_or_is_refused,
    an_update_joins_the_applications_expression,
    a_delete_is_a_tombstone_that_every_read_hides,
    an_update_onto_a_tombstone_brings_the_item_back,
    a_helper_delete_is_not_resurrected_by_a_delayed_older_write,
    transaction_entries_are_stamped,
    if_absent_treats_a_tombstone_as_absent,
    batch_items_are_stamped,
    a_restore_or_copy_is_stamped_and_sealed_anew,
    attribute_writes_version_each_attribute_they_change,
);

/// One DynamoDB Local for the whole binary (it takes seconds to start), started on a thread of
/// its own so that no test's runtime owns it; it dies with the test process.
fn dynamodb_local() -> &'static DynamoDbLocal {
    static SERVER: OnceLock<DynamoDbLocal> = OnceLock::new();
    SERVER.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(DynamoDbLocal::start())
                .expect("DynamoDB Local starts")
        })
        .join()
        .expect("DynamoDB Local start thread")
    })
}

struct Harness {
    /// Keeps a dynoxide server alive for the test.
    _region: Option<DynamoRegion>,
    client: Client,
    table: String,
    ferry: Ferry,
    now: Arc<AtomicU64>,
    config: Config,
}

impl Harness {
    async fn dynoxide() -> Self {
        let region = DynamoRegion::start(LOCAL, 0).expect("dynoxide starts");
        let client = region.client();
        Self::with(Some(region), client, "orders".into()).await
    }

    async fn dynamodb_local(test: &str) -> Self {
        let client = dynamodb_local().client(LOCAL);
        Self::with(None, client, test.to_string()).await
    }

    async fn with(region: Option<DynamoRegion>, client: Client, table: String) -> Self {
        ferry_sandbox::create_table(
            &client,
            &TableSpec::new(&table, "pk").with_ttl_attribute("ttl"),
        )
        .await
        .expect("table");
        let config = Config::new(LOCAL, "pk");
        let now = Arc::new(AtomicU64::new(t0()));
        let clock = now.clone();
        let ferry = Ferry::new(config.clone())
            .expect("config")
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        Harness {
            _region: region,
            client,
            table,
            ferry,
            now,
            config,
        }
    }

    fn set_clock(&self, ms: u64) {
        self.now.store(ms, Ordering::SeqCst);
    }

    /// The stored item, raw (tombstones included).
    async fn raw(&self, pk: &str) -> Option<SdkItem> {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk)))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item
    }

    /// A plain put, as an application without the helper (or a drain) would make it.
    async fn put_raw(&self, item: SdkItem) {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .expect("PutItem");
    }
}

fn s(v: &str) -> V {
    V::S(v.to_string())
}

fn n(v: u64) -> V {
    V::N(v.to_string())
}

fn key(pk: &str) -> SdkItem {
    [("pk".to_string(), s(pk))].into()
}

fn item(pk: &str, attrs: &[(&str, V)]) -> SdkItem {
    let mut i = key(pk);
    for (name, v) in attrs {
        i.insert(name.to_string(), v.clone());
    }
    i
}

fn versioned(mut i: SdkItem, v: &Version) -> SdkItem {
    i.insert("ferry_ts".into(), n(v.ts_ms));
    i.insert("ferry_origin".into(), s(&v.origin));
    i
}

/// The item with its seal (`ferry_sum`), as every put and tombstone of the helper writes it.
fn sealed(i: SdkItem) -> SdkItem {
    let mut core = ferry_aws::values::from_sdk(i);
    ferry_core::digest::seal(&mut core, &Config::new(LOCAL, "pk").names);
    ferry_aws::values::into_sdk(core)
}

/// A helper put's item: versioned and sealed.
fn stamped(i: SdkItem, v: &Version) -> SdkItem {
    sealed(versioned(i, v))
}

fn local(ts: u64) -> Version {
    Version::new(ts, LOCAL)
}

/// The TTL a tombstone written at `now_ms` carries: now + the configured lifetime (15 days).
fn tombstone_ttl(now_ms: u64) -> V {
    n(now_ms / 1000 + 15 * 24 * 3600)
}

fn tombstone(pk: &str, v: &Version, now_ms: u64) -> SdkItem {
    let mut i = versioned(key(pk), v);
    i.insert("ferry_deleted".into(), V::Bool(true));
    i.insert("ttl".into(), tombstone_ttl(now_ms));
    sealed(i)
}

async fn a_put_is_stamped_and_keeps_the_applications_condition(h: Harness) {
    // The application's own placeholders (`#p`, `#v`, `:v`) live beside Ferry's.
    let written = h
        .ferry
        .put(
            h.client
                .put_item()
                .table_name(&h.table)
                .set_item(Some(item("a", &[("v", n(1))])))
                .condition_expression("attribute_not_exists(#p) OR #v < :v")
                .expression_attribute_names("#p", "pk")
                .expression_attribute_names("#v", "v")
                .expression_attribute_values(":v", n(5)),
        )
        .send()
        .await
        .expect("put");
    assert_eq!(written.version, local(t0()));
    assert_eq!(written.attempts, 1);
    let first = stamped(item("a", &[("v", n(1))]), &local(t0()));
    assert_eq!(h.raw("a").await, Some(first.clone()));

    // The application's condition fails: its own error, with the stored item, nothing written.
    h.set_clock(t0() + 10);
    let refused = h
        .ferry
        .put(
            h.client
                .put_item()
                .table_name(&h.table)
                .set_item(Some(item("a", &[("v", n(2))])))
                .condition_expression("#v > :v")
                .expression_attribute_names("#v", "v")
                .expression_attribute_values(":v", n(100)),
        )
        .send()
        .await;
    match refused {
        Err(Error::ConditionFailed { item }) => assert_eq!(item, Some(first.clone())),
        other => panic!("expected the application's condition to fail: {other:?}"),
    }
    assert_eq!(h.raw("a").await, Some(first));
}

async fn a_put_goes_above_a_newer_stored_version_or_is_refused(h: Harness) {
    // A foreign version from a region whose clock runs ahead.
    let ahead = Version::new(t0() + 5_000, "eu-west-1");
    let foreign = versioned(item("a", &[("v", s("foreign"))]), &ahead);
    h.put_raw(foreign.clone()).await;

    let put = || {
        h.client
            .put_item()
            .table_name(&h.table)
            .set_item(Some(item("a", &[("v", s("local"))])))
    };
    // The conditional form refuses: this write would lose under LWW.
    match h.ferry.put(put()).refuse_newer().send().await {
        Err(Error::Refused { stored, attempted }) => {
            assert_eq!(stored, ahead);
            assert_eq!(attempted, local(t0()));
        }
        other => panic!("expected a refusal: {other:?}"),
    }
    assert_eq!(h.raw("a").await, Some(foreign));

    // The default form learns the stored version from the failed condition and writes above it.
    let written = h.ferry.put(put()).send().await.expect("put");
    assert_eq!(written.version, local(t0() + 5_001));
    assert_eq!(written.attempts, 2);
    assert_eq!(
        h.raw("a").await,
        Some(stamped(
            item("a", &[("v", s("local"))]),
            &local(t0() + 5_001)
        ))
    );

    // A known previous version: above it in one request.
    let written = h
        .ferry
        .put(put())
        .previous(written.version)
        .send()
        .await
        .expect("put");
    assert_eq!(
        (written.version, written.attempts),
        (local(t0() + 5_002), 1)
    );

    // An item read and put back carries its version: that is the previous one.
    let mut read = h.raw("a").await.expect("item");
    read.insert("v".into(), s("read-modify-write"));
    let written = h
        .ferry
        .put(
            h.client
                .put_item()
                .table_name(&h.table)
                .set_item(Some(read)),
        )
        .send()
        .await
        .expect("put");
    assert_eq!(
        (written.version, written.attempts),
        (local(t0() + 5_003), 1)
    );

    // One-shot requests for the application to send: blind, or with the version condition.
    let blind = h.ferry.put(put()).stamped().expect("stamped");
    assert_eq!(blind.version, local(t0()));
    assert_eq!(blind.request.get_condition_expression(), &None);
    let guarded = h
        .ferry
        .put(put())
        .refuse_newer()
        .stamped()
        .expect("stamped");
    let err = guarded.request.send().await.expect_err("older than stored");
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_conditional_check_failed_exception()));
}

async fn an_update_joins_the_applications_expression(h: Harness) {
    h.put_raw(item(
        "a",
        &[
            ("n", n(1)),
            ("scratch", s("x")),
            ("tags", V::Ss(vec!["a".into(), "b".into()])),
        ],
    ))
    .await;
    let update = || {
        h.client
            .update_item()
            .table_name(&h.table)
            .set_key(Some(key("a")))
            .update_expression("set #s = :s remove scratch ADD n :one DELETE tags :t")
            .condition_expression("attribute_not_exists(#s) OR n = :one")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", s("paid"))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":t", V::Ss(vec!["a".into()]))
            .return_values(ReturnValue::AllNew)
    };
    let written = h.ferry.update(update()).send().await.expect("update");
    assert_eq!(
        (written.version.clone(), written.attempts),
        (local(t0()), 1)
    );
    let expected = versioned(
        item(
            "a",
            &[
                ("n", n(2)),
                ("status", s("paid")),
                ("tags", V::Ss(vec!["b".into()])),
            ],
        ),
        &local(t0()),
    );
    assert_eq!(written.output.attributes, Some(expected.clone()));
    assert_eq!(h.raw("a").await, Some(expected.clone()));

    // Now `n` is 2 and `status` exists: the application's condition fails, not Ferry's.
    h.set_clock(t0() + 1);
    match h.ferry.update(update()).send().await {
        Err(Error::ConditionFailed { item }) => assert_eq!(item, Some(expected.clone())),
        other => panic!("expected the application's condition to fail: {other:?}"),
    }

    // An update of a key with no item creates it, stamped (UpdateItem's upsert).
    let written = h
        .ferry
        .update(
            h.client
                .update_item()
                .table_name(&h.table)
                .set_key(Some(key("new")))
                .update_expression("SET v = :v")
                .expression_attribute_values(":v", n(7)),
        )
        .send()
        .await
        .expect("update");
    assert_eq!(
        h.raw("new").await,
        Some(versioned(item("new", &[("v", n(7))]), &written.version))
    );

    // Ferry's attributes are Ferry's.
    let sneaky = h
        .client
        .update_item()
        .table_name(&h.table)
        .set_key(Some(key("a")));
    let sneaky = sneaky
        .update_expression("SET #t = :t")
        .expression_attribute_names("#t", "ferry_ts")
        .expression_attribute_values(":t", n(1));
    assert!(matches!(
        h.ferry.update(sneaky).send().await,
        Err(Error::Request(RequestError::FerryAttribute(a))) if a == "ferry_ts"
    ));
    let clash = h
        .client
        .update_item()
        .table_name(&h.table)
        .set_key(Some(key("a")))
        .update_expression("SET v = :ferry_ts")
        .expression_attribute_values(":ferry_ts", n(1));
    assert!(matches!(
        h.ferry.update(clash).send().await,
        Err(Error::Request(RequestError::ReservedPlaceholder(_)))
    ));
}

async fn a_delete_is_a_tombstone_that_every_read_hides(h: Harness) {
    for pk in ["a", "b", "c"] {
        h.ferry
            .put(
                h.client
                    .put_item()
                    .table_name(&h.table)
                    .set_item(Some(item(pk, &[("kind", s("order"))]))),
            )
            .send()
            .await
            .expect("put");
    }
    h.set_clock(t0() + 2_500);
    let deleted = h
        .ferry
        .delete(h.client.put_item().table_name(&h.table), key("b"))
        .previous(local(t0()))
        .send()
        .await
        .expect("delete");
    assert_eq!(
        (deleted.version.clone(), deleted.attempts),
        (local(t0() + 2_500), 1)
    );
    // Exactly the key, the version, the marker and the TTL: nothing of the item is left.
    assert_eq!(
        h.raw("b").await,
        Some(tombstone("b", &local(t0() + 2_500), t0() + 2_500))
    );

    let get = |pk: &str| {
        h.client
            .get_item()
            .table_name(&h.table)
            .set_key(Some(key(pk)))
    };
    assert_eq!(h.ferry.get(get("b")).await.expect("get"), None);
    assert_eq!(h.ferry.get(get("zzz")).await.expect("get"), None);
    assert_eq!(
        h.ferry.get(get("a")).await.expect("get"),
        Some(stamped(item("a", &[("kind", s("order"))]), &local(t0())))
    );
    // With a projection, the marker is read too (and not handed back).
    let projected = get("b")
        .projection_expression("#k")
        .expression_attribute_names("#k", "kind");
    assert_eq!(h.ferry.get(projected).await.expect("get"), None);
    let projected = get("a")
        .projection_expression("#k")
        .expression_attribute_names("#k", "kind");
    assert_eq!(
        h.ferry.get(projected).await.expect("get"),
        Some([("kind".to_string(), s("order"))].into())
    );

    // Scan: server-side filter (composed with the application's), and the page filter.
    let scan = h
        .ferry
        .hide_tombstones_in_scan(
            h.client
                .scan()
                .table_name(&h.table)
                .filter_expression("#k = :k")
                .expression_attribute_names("#k", "kind")
                .expression_attribute_values(":k", s("order")),
        )
        .expect("filter");
    let mut keys: Vec<V> = scan
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|i| i["pk"].clone())
        .collect();
    keys.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(keys, vec![s("a"), s("c")]);
    let raw = h
        .client
        .scan()
        .table_name(&h.table)
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default();
    assert_eq!(raw.len(), 3);
    let visible = h.ferry.visible(raw);
    assert_eq!(visible.len(), 2);
    assert!(visible.iter().all(|i| i["pk"] != s("b")));

    // Query: the tombstone's key matches the key condition, the filter drops it.
    let query = |pk: &str| {
        h.ferry
            .hide_tombstones_in_query(
                h.client
                    .query()
                    .table_name(&h.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(pk)),
            )
            .expect("filter")
    };
    assert_eq!(query("b").send().await.expect("query").count, 0);
    assert_eq!(query("a").send().await.expect("query").count, 1);
    let filter = h.ferry.tombstone_filter();
    assert_eq!(filter.expression, "attribute_not_exists(#ferry_deleted)");
    assert_eq!(filter.names["#ferry_deleted"], "ferry_deleted");

    // The conditional form refuses to delete over a newer version.
    let ahead = Version::new(t0() + 9_000, "eu-west-1");
    h.put_raw(versioned(item("c", &[("kind", s("order"))]), &ahead))
        .await;
    match h
        .ferry
        .delete(h.client.put_item().table_name(&h.table), key("c"))
        .refuse_newer()
        .send()
        .await
    {
        Err(Error::Refused { stored, .. }) => assert_eq!(stored, ahead),
        other => panic!("expected a refusal: {other:?}"),
    }
    // A key must be exactly the table's key.
    let mut bad = key("c");
    bad.insert("kind".into(), s("order"));
    assert!(matches!(
        h.ferry
            .delete(h.client.put_item().table_name(&h.table), bad)
            .send()
            .await,
        Err(Error::Request(RequestError::NotAKeyAttribute(a))) if a == "kind"
    ));
}

async fn an_update_onto_a_tombstone_brings_the_item_back(h: Harness) {
    let update = |pk: &str| {
        h.client
            .update_item()
            .table_name(&h.table)
            .set_key(Some(key(pk)))
            .update_expression("SET #s = :s")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", s("back"))
    };
    let delete = |pk: &str| {
        h.ferry
            .delete(h.client.put_item().table_name(&h.table), key(pk))
    };

    // Deleted at t0(), updated later: the marker and the tombstone's TTL are gone.
    delete("a").send().await.expect("delete");
    h.set_clock(t0() + 100);
    let written = h.ferry.update(update("a")).send().await.expect("update");
    assert_eq!(
        (written.version.clone(), written.attempts),
        (local(t0() + 100), 2)
    );
    assert_eq!(
        h.raw("a").await,
        Some(versioned(
            item("a", &[("status", s("back"))]),
            &local(t0() + 100)
        ))
    );

    // A tombstone above the clock (a delete from a region running ahead): above it.
    let ahead = Version::new(t0() + 60_000, "eu-west-1");
    h.put_raw(tombstone("b", &ahead, t0())).await;
    let written = h.ferry.update(update("b")).send().await.expect("update");
    assert_eq!(written.version, local(t0() + 60_001));
    assert_eq!(
        h.raw("b").await,
        Some(versioned(
            item("b", &[("status", s("back"))]),
            &local(t0() + 60_001)
        ))
    );

    // ... unless the update refuses to overwrite a newer version: the delete wins.
    h.put_raw(tombstone("c", &ahead, t0())).await;
    assert!(matches!(
        h.ferry.update(update("c")).refuse_newer().send().await,
        Err(Error::Refused { stored, .. }) if stored == ahead
    ));
    assert_eq!(h.raw("c").await, Some(tombstone("c", &ahead, t0())));

    // The application sets the TTL itself: its value stands, only the marker goes.
    delete("d").send().await.expect("delete");
    let with_ttl = update("d")
        .update_expression("SET #s = :s, #e = :e")
        .expression_attribute_names("#e", "ttl")
        .expression_attribute_values(":e", n(42));
    h.ferry.update(with_ttl).send().await.expect("update");
    assert_eq!(
        h.raw("d").await,
        Some(versioned(
            item("d", &[("status", s("back")), ("ttl", n(42))]),
            // The tombstone holds t0() + 100 from this region: one above it.
            &local(t0() + 101)
        ))
    );

    // Knowing it is a tombstone (read_previous): one request.
    h.set_clock(t0() + 200);
    delete("e").send().await.expect("delete");
    let previous = h
        .ferry
        .read_previous(
            h.client
                .get_item()
                .table_name(&h.table)
                .set_key(Some(key("e"))),
        )
        .await
        .expect("read");
    assert_eq!(
        previous,
        Previous::Tombstone {
            version: Some(local(t0() + 200)),
            ttl: Some(tombstone_ttl(t0() + 200)),
        }
    );
    h.set_clock(t0() + 300);
    let written = h
        .ferry
        .update(update("e"))
        .previous(previous)
        .send()
        .await
        .expect("update");
    assert_eq!(written.attempts, 1);
    assert_eq!(
        h.raw("e").await,
        Some(versioned(
            item("e", &[("status", s("back"))]),
            &local(t0() + 300)
        ))
    );

    // A one-shot stamped update that does not know of the tombstone fails rather than hide
    // the update inside it.
    delete("f").send().await.expect("delete");
    let oneshot = h.ferry.update(update("f")).stamped().expect("stamped");
    assert!(oneshot
        .request
        .send()
        .await
        .expect_err("tombstone")
        .as_service_error()
        .is_some_and(|e| e.is_conditional_check_failed_exception()));
}

async fn a_helper_delete_is_not_resurrected_by_a_delayed_older_write(h: Harness) {
    let table = ferry_aws::Table::new(h.client.clone(), h.table.clone());
    // An older write from another region, still on its way while the key is deleted here.
    let older = Version::new(t0() + 900, "eu-west-1");
    let image = versioned(item("a", &[("status", s("stale"))]), &older);
    let record = ChangeRecord {
        key: ferry_aws::values::from_sdk(key("a")),
        image: ferry_aws::values::from_sdk(image),
        tombstone: false,
        version: older.clone(),
        source_region: "eu-west-1".into(),
        written_at_ms: t0() + 900,
    };
    h.ferry
        .put(
            h.client
                .put_item()
                .table_name(&h.table)
                .set_item(Some(item("a", &[("status", s("new"))]))),
        )
        .send()
        .await
        .expect("put");
    h.set_clock(t0() + 1_000);
    let deleted = h
        .ferry
        .delete(h.client.put_item().table_name(&h.table), key("a"))
        .send()
        .await
        .expect("delete");
    let stone = tombstone("a", &deleted.version, t0() + 1_000);
    assert_eq!(h.raw("a").await, Some(stone.clone()));

    // The drain's apply (ferry-core's condition, ferry-aws's conditional put): refused.
    let outcome = table
        .put_if(&record.image, &apply_condition(&record, &h.config))
        .await
        .expect("put_if");
    match outcome {
        ferry_aws::WriteOutcome::ConditionFailed(Some(stored)) => {
            assert_eq!(stored, ferry_aws::values::from_sdk(stone.clone()));
            assert!(ferry_core::judge(&record, Some(&stored), &h.config).is_done());
        }
        other => panic!("the older record must be refused: {other:?}"),
    }
    assert_eq!(h.raw("a").await, Some(stone));
    assert_eq!(
        h.ferry
            .get(
                h.client
                    .get_item()
                    .table_name(&h.table)
                    .set_key(Some(key("a")))
            )
            .await
            .expect("get"),
        None
    );
}

async fn transaction_entries_are_stamped(h: Harness) {
    h.put_raw(versioned(item("b", &[("n", n(1))]), &local(t0() - 10)))
        .await;
    h.put_raw(versioned(item("c", &[("n", n(1))]), &local(t0() - 10)))
        .await;
    h.put_raw(item("d", &[])).await;
    let put = Put::builder()
        .table_name(&h.table)
        .set_item(Some(item("a", &[("n", n(1))])))
        .build()
        .expect("put");
    let update = |pk: &str| {
        Update::builder()
            .table_name(&h.table)
            .set_key(Some(key(pk)))
            .update_expression("ADD n :one")
            .expression_attribute_values(":one", n(1))
            .build()
            .expect("update")
    };
    let check = TransactWriteItem::builder()
        .condition_check(
            ConditionCheck::builder()
                .table_name(&h.table)
                .set_key(Some(key("d")))
                .condition_expression("attribute_exists(pk)")
                .build()
                .expect("check"),
        )
        .build();
    let f = &h.ferry;
    let entries = vec![
        f.put_entry(put, &Previous::Absent, Guard::RefuseNewer)
            .expect("put")
            .request,
        f.update_entry(update("b"), &local(t0() - 10).into(), Guard::Overwrite)
            .expect("update")
            .request,
        f.tombstone_entry(
            &h.table,
            &key("c"),
            &local(t0() - 10).into(),
            Guard::Overwrite,
        )
        .expect("tombstone")
        .request,
        f.stamp_entry(check, &Previous::Unknown, Guard::Overwrite)
            .expect("check")
            .0,
    ];
    h.client
        .transact_write_items()
        .set_transact_items(Some(entries))
        .send()
        .await
        .expect("transaction");
    assert_eq!(
        h.raw("a").await,
        Some(stamped(item("a", &[("n", n(1))]), &local(t0())))
    );
    assert_eq!(
        h.raw("b").await,
        Some(versioned(item("b", &[("n", n(2))]), &local(t0())))
    );
    assert_eq!(h.raw("c").await, Some(tombstone("c", &local(t0()), t0())));

    // An update entry onto the tombstone: cancelled unless the caller knows it is one.
    h.set_clock(t0() + 50);
    let unknowing = f
        .update_entry(update("c"), &Previous::Unknown, Guard::Overwrite)
        .expect("update")
        .request;
    let err = h
        .client
        .transact_write_items()
        .transact_items(unknowing)
        .send()
        .await
        .expect_err("cancelled");
    let reasons = match err.as_service_error() {
        Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) => c.cancellation_reasons.clone().unwrap_or_default(),
        other => panic!("expected a cancellation: {other:?}"),
    };
    assert_eq!(reasons[0].code.as_deref(), Some("ConditionalCheckFailed"));
    // The cancellation carries the stored item: what the next attempt needs.
    let previous = f.previous_of(reasons[0].item.as_ref()).expect("previous");
    assert!(matches!(previous, Previous::Tombstone { .. }));
    let knowing = f
        .update_entry(update("c"), &previous, Guard::Overwrite)
        .expect("update")
        .request;
    h.client
        .transact_write_items()
        .transact_items(knowing)
        .send()
        .await
        .expect("transaction");
    assert_eq!(
        h.raw("c").await,
        Some(versioned(item("c", &[("n", n(1))]), &local(t0() + 50)))
    );

    // A hard delete in a transaction is refused.
    let delete = TransactWriteItem::builder()
        .delete(
            aws_sdk_dynamodb::types::Delete::builder()
                .table_name(&h.table)
                .set_key(Some(key("a")))
                .build()
                .expect("delete"),
        )
        .build();
    assert!(matches!(
        f.stamp_entry(delete, &Previous::Unknown, Guard::Overwrite),
        Err(Error::Request(RequestError::HardDelete))
    ));
}

async fn if_absent_treats_a_tombstone_as_absent(h: Harness) {
    let create = |v: &str| {
        h.ferry
            .put(
                h.client
                    .put_item()
                    .table_name(&h.table)
                    .set_item(Some(item("a", &[("v", s(v))]))),
            )
            .if_absent()
    };
    create("first").send().await.expect("created");
    h.set_clock(t0() + 1);
    assert!(matches!(
        create("second").send().await,
        Err(Error::ConditionFailed { item: Some(_) })
    ));
    h.ferry
        .delete(h.client.put_item().table_name(&h.table), key("a"))
        .send()
        .await
        .expect("delete");
    h.set_clock(t0() + 2);
    create("again")
        .send()
        .await
        .expect("created over the tombstone");
    assert_eq!(
        h.raw("a").await,
        Some(stamped(item("a", &[("v", s("again"))]), &local(t0() + 2)))
    );
}

async fn batch_items_are_stamped(h: Harness) {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    h.put_raw(versioned(item("b", &[("v", n(1))]), &local(t0() + 40)))
        .await;
    let mut a = item("a", &[("v", n(1))]);
    let va = h.ferry.stamp(&mut a, &Previous::Unknown).expect("stamp");
    let stone = h
        .ferry
        .tombstone_item(&key("b"), &local(t0() + 40).into())
        .expect("tombstone");
    let write = |i: SdkItem| {
        WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .set_item(Some(i))
                    .build()
                    .expect("put"),
            )
            .build()
    };
    h.client
        .batch_write_item()
        .request_items(&h.table, vec![write(a), write(stone.request)])
        .send()
        .await
        .expect("batch");
    assert_eq!(va, local(t0()));
    assert_eq!(
        h.raw("a").await,
        Some(stamped(item("a", &[("v", n(1))]), &local(t0())))
    );
    assert_eq!(stone.version, local(t0() + 41));
    assert_eq!(
        h.raw("b").await,
        Some(tombstone("b", &local(t0() + 41), t0()))
    );
    let mut marked = item("c", &[("ferry_deleted", V::Bool(true))]);
    assert!(matches!(
        h.ferry.stamp(&mut marked, &Previous::Unknown),
        Err(Error::Request(RequestError::FerryAttribute(_)))
    ));
}

async fn a_restore_or_copy_is_stamped_and_sealed_anew(h: Harness) {
    let put = || h.client.put_item().table_name(&h.table);
    let written = h
        .ferry
        .put(put().set_item(Some(item("a", &[("v", s("one"))]))))
        .send()
        .await
        .expect("put");
    let image = h.raw("a").await.expect("item");
    assert_eq!(
        image,
        stamped(item("a", &[("v", s("one"))]), &written.version)
    );

    // An update leaves no seal: the item's new content is DynamoDB's to compute.
    h.set_clock(t0() + 10);
    h.ferry
        .update(
            h.client
                .update_item()
                .table_name(&h.table)
                .set_key(Some(key("a")))
                .update_expression("SET v = :v")
                .expression_attribute_values(":v", s("two")),
        )
        .send()
        .await
        .expect("update");
    assert_eq!(
        h.raw("a").await,
        Some(versioned(item("a", &[("v", s("two"))]), &local(t0() + 10)))
    );

    // Deleted, then restored from the image read before: nothing of the image's version or seal
    // comes back; the restore is a new version above the tombstone, sealed anew.
    h.set_clock(t0() + 20);
    h.ferry
        .delete(put(), key("a"))
        .send()
        .await
        .expect("delete");
    let restored = h
        .ferry
        .restore(put(), image.clone())
        .expect("restore")
        .send()
        .await
        .expect("restore");
    assert_eq!(restored.version, local(t0() + 21));
    assert_eq!(
        h.raw("a").await,
        Some(stamped(item("a", &[("v", s("one"))]), &local(t0() + 21)))
    );

    // A copy under another key, stamped by the clock.
    let copied = h
        .ferry
        .copy_to(put(), image, key("b"))
        .expect("copy")
        .send()
        .await
        .expect("copy");
    assert_eq!(copied.version, local(t0() + 20));
    assert_eq!(
        h.raw("b").await,
        Some(stamped(item("b", &[("v", s("one"))]), &local(t0() + 20)))
    );
}

/// Applications spawn these futures onto multi-threaded runtimes.
#[test]
fn requests_are_send() {
    fn send<T: Send>(_: &T) {}
    let client = Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .build(),
    );
    let ferry = Ferry::new(Config::new(LOCAL, "pk")).expect("config");
    send(&ferry);
    send(&ferry.put(client.put_item()).send());
    send(&ferry.update(client.update_item()).send());
    send(&ferry.delete(client.put_item(), key("a")).send());
    send(&ferry.get(client.get_item()));
    send(&ferry.read_previous(client.get_item()));
}

/// The version map entry `"<ts>@<origin>"` (`docs/attribute-merge.md`).
fn entry(ts: u64, origin: &str) -> V {
    s(&format!("{ts}@{origin}"))
}

fn version_map(entries: &[(&str, V)]) -> V {
    V::M(
        entries
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
    )
}

async fn attribute_writes_version_each_attribute_they_change(h: Harness) {
    let mut config = h.config.clone();
    config.merge_mode = ferry_core::MergeMode::Attribute;
    let now = h.now.clone();
    let ferry = Ferry::new(config)
        .expect("config")
        .with_clock(Arc::new(move || now.load(Ordering::SeqCst)));
    let t = t0();
    let set = |name: &str, v: V| vec![(name.to_string(), Some(v))];

    // An update versions exactly the attribute it sets; a later one leaves the first's entry.
    let w = ferry
        .update_attributes(&h.client, &h.table, key("a"), set("address", s("x")))
        .await
        .expect("update");
    assert_eq!(w.changed_attributes, 1);
    h.set_clock(t + 5);
    ferry
        .update_attributes(
            &h.client,
            &h.table,
            key("a"),
            set("last_contacted", s("today")),
        )
        .await
        .expect("update");
    let stored = h.raw("a").await.expect("item");
    assert_eq!(
        stored,
        item(
            "a",
            &[
                ("address", s("x")),
                ("last_contacted", s("today")),
                (
                    "ferry_versions",
                    version_map(&[
                        ("address", entry(t, LOCAL)),
                        ("last_contacted", entry(t + 5, LOCAL))
                    ])
                ),
            ]
        )
    );

    // A put sets its attributes and removes the others, each removal an attribute tombstone.
    h.set_clock(t + 6);
    ferry
        .put_attributes(&h.client, &h.table, item("a", &[("name", s("n"))]))
        .await
        .expect("put");
    assert_eq!(
        h.raw("a").await.expect("item"),
        item(
            "a",
            &[
                ("name", s("n")),
                (
                    "ferry_versions",
                    version_map(&[
                        ("address", entry(t + 6, LOCAL)),
                        ("last_contacted", entry(t + 6, LOCAL)),
                        ("name", entry(t + 6, LOCAL)),
                    ])
                ),
            ]
        )
    );

    // An entry ahead of the clock (another region's): the write goes above it, so it wins.
    h.put_raw(item(
        "b",
        &[
            ("name", s("theirs")),
            (
                "ferry_versions",
                version_map(&[("name", entry(t + 100, "eu-west-1"))]),
            ),
        ],
    ))
    .await;
    ferry
        .update_attributes(&h.client, &h.table, key("b"), set("name", s("ours")))
        .await
        .expect("update");
    let b = h.raw("b").await.expect("item");
    assert_eq!(b.get("name"), Some(&s("ours")));
    assert_eq!(
        b.get("ferry_versions"),
        Some(&version_map(&[("name", entry(t + 101, LOCAL))]))
    );

    // Refused before anything is sent: keys, Ferry's attributes, the helper in item mode.
    for (name, want) in [
        ("pk", RequestError::KeyAttribute("pk".into())),
        (
            "ferry_versions",
            RequestError::FerryAttribute("ferry_versions".into()),
        ),
    ] {
        let e = ferry
            .update_attributes(&h.client, &h.table, key("c"), set(name, s("v")))
            .await
            .expect_err("refused");
        assert!(
            matches!(e, Error::Request(ref r) if *r == want),
            "{name}: {e}"
        );
    }
    let e = h
        .ferry
        .update_attributes(&h.client, &h.table, key("c"), set("x", s("v")))
        .await
        .expect_err("item mode");
    assert!(
        matches!(e, Error::Request(RequestError::NotAttributeMode)),
        "{e}"
    );
    // And the reverse: item-versioned writes with the helper in attribute mode.
    let put = ferry
        .put(
            h.client
                .put_item()
                .table_name(&h.table)
                .set_item(Some(key("c"))),
        )
        .send()
        .await
        .expect_err("attribute mode");
    assert!(
        matches!(put, Error::Request(RequestError::NotItemMode)),
        "{put}"
    );
    let update = ferry
        .update(
            h.client
                .update_item()
                .table_name(&h.table)
                .set_key(Some(key("c")))
                .update_expression("SET x = :v")
                .expression_attribute_values(":v", s("v")),
        )
        .send()
        .await
        .expect_err("attribute mode");
    assert!(
        matches!(update, Error::Request(RequestError::NotItemMode)),
        "{update}"
    );
    assert_eq!(h.raw("c").await, None);
}
