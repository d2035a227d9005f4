//! The write-rate cap on the emulators (issue #19): a backlog built toward eu during an outage
//! is replayed under `FERRY_MAX_WCU` by the sandbox's drains — a fan-out of four workers per
//! tick, ticks overlapping (a 6 s budget every 4 s) — and the write units applied per second
//! hold within 10 % of the cap while the backlog drains; then every item is in eu.
//!
//! `FERRY_CAP_WCU` (default 100) and `FERRY_CAP_ITEMS` (default 3 000) size the run.

use aws_sdk_dynamodb::types::{AttributeValue as Sdk, Select};
use ferry_aws::Table;
use ferry_cli::cluster::{Cluster, ClusterOptions};
use ferry_core::rate::write_units;
use ferry_core::{AttributeValue, Config, Item, Version};
use futures::StreamExt;
use std::time::{Duration, Instant};

const US: &str = "us-east-1";
const TABLE: &str = "ferry-cap";
const PREFIX: &str = "cap-";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A stamped, sealed item of about 900 bytes (one write unit with its version attributes):
/// enqueue forwards it as it is, one record per key.
fn item(i: u64) -> Item {
    let names = Config::new(US, "pk").names;
    let mut it: Item = [
        (
            "pk".to_string(),
            AttributeValue::S(format!("{PREFIX}{i:06}")),
        ),
        ("body".to_string(), AttributeValue::S("x".repeat(850))),
    ]
    .into();
    Version::new(ferry_core::clock::system_now_ms(), US).stamp_into(&mut it, &names);
    ferry_core::digest::seal(&mut it, &names);
    it
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

/// How many of the test's items a region holds (a consistent scan, counted).
async fn count(client: &aws_sdk_dynamodb::Client) -> u64 {
    let mut total = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(TABLE)
            .consistent_read(true)
            .select(Select::Count)
            .filter_expression("begins_with(pk, :p)")
            .expression_attribute_values(":p", Sdk::S(PREFIX.into()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("Scan");
        total += page.count() as u64;
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return total;
        }
    }
}

/// (seconds since the replay began, items applied in eu) every second or so, until all are.
async fn watch_replay(eu: &aws_sdk_dynamodb::Client, total: u64) -> Vec<(f64, u64)> {
    let began = Instant::now();
    let mut samples = Vec::new();
    loop {
        // A scan takes a while under load: its count is of about its middle.
        let before = began.elapsed().as_secs_f64();
        let n = count(eu).await;
        samples.push(((before + began.elapsed().as_secs_f64()) / 2.0, n));
        if n >= total {
            return samples;
        }
        assert!(
            began.elapsed() < Duration::from_secs(300),
            "the replay did not finish: {n} of {total}"
        );
        // Not more often: each scan reads every item, and the emulator is the drains' too.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

/// When `n` items had been applied: interpolated between the samples around it.
fn when(samples: &[(f64, u64)], n: u64) -> f64 {
    let after = samples.iter().position(|(_, c)| *c >= n).unwrap_or(0);
    let (t1, c1) = samples[after];
    let Some(&(t0, c0)) = after.checked_sub(1).and_then(|i| samples.get(i)) else {
        return t1;
    };
    t0 + (t1 - t0) * (n - c0) as f64 / (c1 - c0).max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_under_a_cap_holds_the_cap_and_converges() {
    let cap = knob("FERRY_CAP_WCU", 100);
    let total = knob("FERRY_CAP_ITEMS", 3_000);
    // The sandbox's drains read these from the process (as the Lambda does from its environment);
    // this test binary runs this one test.
    std::env::set_var("FERRY_MAX_WCU", cap.to_string());
    std::env::set_var("FERRY_MAX_DRAIN_CONCURRENCY", "4");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = Cluster::start(ClusterOptions {
        regions: 2,
        table: TABLE.into(),
        partition_key: "pk".into(),
        drain_budget: Duration::from_secs(6),
        drain_period: Duration::from_secs(4),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    let us = cluster.regions[0].table(TABLE);
    let eu = cluster.regions[1].dynamo.client();

    cluster.begin_outage(1);
    // Let the drains that started before the cut end.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let items: Vec<Item> = (0..total).map(item).collect();
    let units: u64 = items.iter().map(|i| u64::from(write_units(i))).sum();
    futures::stream::iter(items.iter().map(|i| put(&us, i)))
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    // Everything enqueued toward eu before the outage ends.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (0, Instant::now());
    loop {
        let waiting: u64 = cluster.backlog().await.iter().map(|(_, _, n)| n).sum();
        if waiting != last.0 {
            last = (waiting, Instant::now());
        } else if waiting > 0 && last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(Instant::now() < deadline, "the backlog never settled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        count(&eu).await,
        0,
        "eu received something during its outage"
    );

    cluster.end_outage(1);
    let samples = watch_replay(&eu, total).await;
    // The replay proper: from 5 % to 95 % of the items applied (the first tick's ping and the
    // last half-empty takes are not the cap's doing).
    let per_item = units as f64 / total as f64;
    let (n0, n1) = (total / 20, total - total / 20);
    let (t0, t1) = (when(&samples, n0), when(&samples, n1));
    let rate = (n1 - n0) as f64 * per_item / (t1 - t0);
    // The rate between samples at least a second apart.
    let mut series = Vec::new();
    let mut from = samples[0];
    for &(t, n) in &samples {
        if t - from.0 >= 0.9 {
            series.push(format!(
                "{:.0}",
                (n - from.1) as f64 * per_item / (t - from.0)
            ));
            from = (t, n);
        }
    }
    eprintln!(
        "write cap: {total} items ({units} write units) replayed under a cap of {cap} WCU/s: \
         {rate:.1} WCU/s from 5 % to 95 % ({:.1} s), all applied {:.1} s after the outage ended; \
         each second or so: {}",
        t1 - t0,
        samples.last().map_or(0.0, |s| s.0),
        series.join(" ")
    );
    let cap = cap as f64;
    assert!(
        (rate - cap).abs() <= cap * 0.10,
        "{rate:.1} WCU/s over the replay, not within 10 % of the cap {cap}"
    );
    // Converged: every item is in eu.
    assert_eq!(count(&eu).await, total);
    cluster.shutdown().await;
}
