//! `ferry conflicts` end to end on the sandbox (issue #19): conflicting plain SDK puts of one
//! key in two regions (as the demo's workload writes), made while eu is cut off so neither sees
//! the other's first; the drain into eu finds us's write older and logs the conflict there.
//! `ferry conflicts list` shows it with both versions, `show` puts the two side by side,
//! `reapply` writes us's content back as a new version in eu, and it wins in every region.

use ferry_cli::cluster::{Cluster, ClusterOptions};
use ferry_cli::ops::conflicts;
use ferry_cli::ops::target::{Target, TargetArgs};
use ferry_core::{AttributeValue, Item};
use std::process::Command;
use std::time::{Duration, Instant};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const TABLE: &str = "ferry-conflicts-e2e";

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A plain put, as an application without the helper writes (enqueue stamps it).
async fn plain_put(cluster: &Cluster, region: usize, v: &str) {
    let item: Item = [("pk".to_string(), s("k")), ("v".to_string(), s(v))].into();
    let t = cluster.regions[region].table(TABLE);
    t.client
        .put_item()
        .table_name(TABLE)
        .set_item(Some(ferry_aws::values::to_sdk(&item)))
        .send()
        .await
        .expect("PutItem");
}

/// `ferry conflicts ARGS --json` against both regions' emulated DynamoDB.
async fn ferry(cluster: &Cluster, args: &[&str]) -> (i32, serde_json::Value) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("FERRY_STATE_DIR")
        .arg("conflicts")
        .args(args)
        .args([
            "--table",
            TABLE,
            "--regions",
            "us-east-1,eu-west-1",
            "--json",
        ]);
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
        "ferry conflicts {args:?} exited {:?}: {stdout} {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

/// `v` of key `k` in every region.
async fn values(cluster: &Cluster) -> Vec<Option<AttributeValue>> {
    let key: Item = [("pk".to_string(), s("k"))].into();
    let mut out = Vec::new();
    for r in &cluster.regions {
        let item = r.table(TABLE).get(&key).await.expect("GetItem");
        out.push(item.and_then(|i| i.get("v").cloned()));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_is_listed_shown_and_reapplied_until_the_loser_wins_everywhere() {
    let started = Instant::now();
    let cluster = Cluster::start(ClusterOptions {
        regions: 2,
        table: TABLE.into(),
        partition_key: "pk".into(),
        drain_budget: Duration::from_secs(4),
        drain_period: Duration::from_secs(2),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    cluster.begin_outage(1);
    // Let the drain invocations that started before the cut end.
    tokio::time::sleep(Duration::from_secs(5)).await;
    plain_put(&cluster, 0, "from us").await;
    plain_put(&cluster, 1, "from eu").await;
    // us's write is stamped now; eu's when eu's pipeline is back: eu's is the newer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.end_outage(1);

    let t = Target::local(&cluster.state(0, String::new()), &TargetArgs::default())
        .expect("a local target");
    let regions = [US.to_string(), EU.to_string()];
    let listed = eventually("the conflict in eu's log", || async {
        let r = conflicts::list(&t, &regions, Some(r#"{"pk": "k"}"#), None)
            .await
            .expect("conflicts list");
        (!r.conflicts.is_empty()).then_some(r)
    })
    .await;
    eprintln!("{}", conflicts::render_list(&listed));
    let c = &listed.conflicts[0];
    assert_eq!((c.region.as_str(), c.key.as_str()), (EU, "pk=S:k"));
    assert_eq!(
        (c.winner_region.as_str(), c.loser_region.as_str()),
        (EU, US)
    );
    assert!(c.reappliable && !c.loser_tombstone);
    let id = c.id.clone();
    let shown = conflicts::show(&t, &regions, &id)
        .await
        .expect("conflicts show");
    eprintln!("{}", conflicts::render_show(&shown));
    assert!(shown.rows.iter().any(|r| r.name == "v" && r.differs));
    eventually("every region reads eu's write", || async {
        let v = values(&cluster).await;
        v.iter()
            .all(|x| x.as_ref() == Some(&s("from eu")))
            .then_some(())
    })
    .await;

    // The binary: list (both versions), show (side by side, the winner read live), reapply.
    let (code, json) = ferry(&cluster, &["list", "--since", "1h"]).await;
    assert_eq!(code, 0, "{json}");
    let first = &json["conflicts"][0];
    assert_eq!(first["id"], id.as_str());
    assert_eq!(first["winner"], c.winner.as_str());
    assert_eq!(first["loser"], c.loser.as_str());
    let (code, json) = ferry(&cluster, &["show", &id]).await;
    assert_eq!(code, 0, "{json}");
    let rows = json["rows"].as_array().expect("rows");
    let v = rows.iter().find(|r| r["name"] == "v").expect("attribute v");
    assert_eq!(
        v["winner"], "from eu",
        "the winner as the table holds it now"
    );
    assert_eq!(v["loser"], "from us");
    assert_eq!(v["differs"], true);
    let (code, json) = ferry(&cluster, &["show", "no-such-id"]).await;
    assert_eq!(code, 2, "{json}");
    let (code, json) = ferry(&cluster, &["reapply", &id]).await;
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["wrote"], "put");
    assert!(json["version"]
        .as_str()
        .unwrap_or_default()
        .ends_with("@eu-west-1"));

    eventually("every region reads us's content", || async {
        let v = values(&cluster).await;
        v.iter()
            .all(|x| x.as_ref() == Some(&s("from us")))
            .then_some(())
    })
    .await;
    cluster.shutdown().await;
    eprintln!(
        "[timing] conflicts e2e: {:.1} s",
        started.elapsed().as_secs_f64()
    );
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
