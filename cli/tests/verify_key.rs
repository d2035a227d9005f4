//! `ferry verify --key` on the emulators (issue #19, "did this key replicate?"): a difference
//! planted for one key on a table no pipeline runs (a newer version written in eu directly) is
//! found (exit 1, both versions shown, us behind, the buffer toward us counted and idle),
//! `--repair --key` fixes that key and no other, and `verify --key` then exits 0. On the
//! pipeline's table, a write held up by an outage of eu shows as in flight (messages waiting
//! toward eu) until the outage ends and the key is the same everywhere.

use ferry_aws::Table;
use ferry_cli::cluster::{Cluster, ClusterOptions};
use ferry_cli::ops::target::{Target, TargetArgs};
use ferry_cli::ops::verify_key;
use ferry_core::{AttributeValue, Config, Item, Version};
use ferry_sandbox::TableSpec;
use std::process::Command;
use std::time::{Duration, Instant};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const FRESH: &str = "verify-key";

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn stamped(pk: &str, v: &str, version: Version) -> Item {
    let mut i: Item = [("pk".to_string(), s(pk)), ("v".to_string(), s(v))].into();
    version.stamp_into(&mut i, &Config::new(US, "pk").names);
    i
}

async fn put(table: &Table, item: &Item) {
    table
        .client
        .put_item()
        .table_name(&table.name)
        .set_item(Some(ferry_aws::values::to_sdk(item)))
        .send()
        .await
        .expect("PutItem");
}

/// `ferry verify --key KEY --table FRESH --json` against both emulators' DynamoDB.
async fn ferry_key(cluster: &Cluster, key: &str) -> (i32, serde_json::Value) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("FERRY_STATE_DIR")
        .args(["verify", "--table", FRESH, "--key", key, "--json"])
        .args(["--regions", "us-east-1,eu-west-1"]);
    for (region, r) in [US, EU].iter().zip(&cluster.regions) {
        c.arg("--endpoint-url")
            .arg(format!("dynamodb:{region}={}", r.dynamo.endpoint()));
    }
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .expect("join")
        .expect("running ferry");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "ferry exited {:?}: {stdout} {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_key_finds_and_repairs_a_planted_difference() {
    let started = Instant::now();
    let cluster = Cluster::start(ClusterOptions {
        regions: 2,
        table: "ferry-verify-key".into(),
        partition_key: "pk".into(),
        drain_budget: Duration::from_secs(4),
        drain_period: Duration::from_secs(2),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    for r in &cluster.regions {
        r.dynamo
            .create_table(&TableSpec::new(FRESH, "pk").with_ttl_attribute("ttl"))
            .await
            .expect("create table");
    }
    let us = Table::new(cluster.regions[0].dynamo.client(), FRESH);
    let eu = Table::new(cluster.regions[1].dynamo.client(), FRESH);
    let old = Version::new(1_700_000_000_000, US);
    put(&us, &stamped("k1", "first", old.clone())).await;
    put(&eu, &stamped("k1", "first", old.clone())).await;
    // Another key that differs: repairing k1 must leave it alone.
    put(&us, &stamped("k2", "us only", old.clone())).await;
    let t = Target::local(
        &cluster.state(0, String::new()),
        &TargetArgs {
            tables: vec![FRESH.into()],
            ..TargetArgs::default()
        },
    )
    .expect("a local target");
    let regions = [US.to_string(), EU.to_string()];
    let same = verify_key::run(&t, &regions, r#"{"pk": "k1"}"#, false)
        .await
        .expect("verify --key");
    eprintln!("{}", verify_key::render(&same));
    assert!(same.same && same.clean() && same.in_flight.is_none());

    // Plant: a newer version of k1 written in eu only, bypassing replication.
    put(
        &eu,
        &stamped("k1", "changed in eu", Version::new(1_800_000_000_000, EU)),
    )
    .await;
    let found = verify_key::run(&t, &regions, r#"{"pk": {"S": "k1"}}"#, false)
        .await
        .expect("verify --key");
    eprintln!("{}", verify_key::render(&found));
    assert!(!found.same && !found.clean());
    assert_eq!(found.behind, [US]);
    assert_eq!(found.regions[US].state, "1700000000000@us-east-1");
    assert_eq!(found.regions[EU].state, "1800000000000@eu-west-1");
    // The sandbox's buffer toward us is counted (its pipeline is idle), not received from.
    assert_eq!(found.buffers.len(), 1, "{:?}", found.buffers);
    let toward_us = &found.buffers[0];
    assert_eq!(toward_us.source, EU);
    assert_eq!((toward_us.messages, toward_us.dead), (Some(0), Some(0)));
    let note = found.in_flight.as_deref().unwrap_or_default();
    assert!(note.contains("not in flight"), "{note}");

    // The binary: exit 1 with both versions; the buffers unreadable with DynamoDB endpoints only.
    let (code, json) = ferry_key(&cluster, r#"{"pk": "k1"}"#).await;
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["regions"][EU]["state"], "1800000000000@eu-west-1");
    assert_eq!(json["regions"][US]["state"], "1700000000000@us-east-1");
    assert!(json["buffers"][0]["error"].is_string(), "{json}");

    let repaired = verify_key::run(&t, &regions, r#"{"pk": "k1"}"#, true)
        .await
        .expect("verify --key --repair");
    eprintln!("{}", verify_key::render(&repaired));
    assert_eq!(repaired.repair.as_deref(), Some("repaired"));
    assert!(repaired.clean());
    let k1: Item = [("pk".to_string(), s("k1"))].into();
    let now_us = us.get(&k1).await.expect("get").expect("k1 in us");
    assert_eq!(now_us["v"], s("changed in eu"), "the newest version won");
    let k2: Item = [("pk".to_string(), s("k2"))].into();
    assert!(
        eu.get(&k2).await.expect("get").is_none(),
        "only k1 was repaired"
    );

    let (code, json) = ferry_key(&cluster, r#"{"pk": "k1"}"#).await;
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["same"], true);
    let (code, _) = ferry_key(&cluster, r#"{"sk": "k1"}"#).await;
    assert_eq!(
        code, 2,
        "a key that does not fit the table is a usage error"
    );

    held_in_flight_until_the_outage_ends(&cluster, &regions).await;
    cluster.shutdown().await;
    eprintln!(
        "[timing] verify_key_finds_and_repairs_a_planted_difference: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn held_in_flight_until_the_outage_ends(cluster: &Cluster, regions: &[String]) {
    let t = Target::local(&cluster.state(0, String::new()), &TargetArgs::default())
        .expect("a local target");
    cluster.begin_outage(1);
    // Let drain invocations that started before the cut end.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let us = cluster.regions[0].table("ferry-verify-key");
    let plain: Item = [("pk".to_string(), s("held")), ("v".to_string(), s("x"))].into();
    put(&us, &plain).await;
    let key = r#"{"pk": "held"}"#;
    let held = eventually("the write waiting toward eu", || async {
        let r = verify_key::run(&t, regions, key, false)
            .await
            .expect("verify --key");
        let waiting = r.buffers.iter().any(|w| w.messages.unwrap_or(0) > 0);
        (r.behind == [EU] && waiting).then_some(r)
    })
    .await;
    eprintln!("{}", verify_key::render(&held));
    assert_eq!(held.regions[EU].state, "absent");
    assert!(
        held.regions[US].state.ends_with("@us-east-1"),
        "stamped by us's enqueue"
    );
    let note = held.in_flight.as_deref().unwrap_or_default();
    assert!(note.contains("may still be in flight"), "{note}");
    cluster.end_outage(1);
    let after = eventually("the key the same everywhere", || async {
        let r = verify_key::run(&t, regions, key, false)
            .await
            .expect("verify --key");
        r.same.then_some(r)
    })
    .await;
    eprintln!("{}", verify_key::render(&after));
}

/// Polls `probe` until it answers (generous: the machine is shared).
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
