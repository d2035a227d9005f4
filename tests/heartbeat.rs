//! The end-to-end heartbeat (`ferry_core::heartbeat`, issue #17 finding 7): a region's sentinel,
//! written on a timer, crosses the ordinary pipeline and the pair's drain reports its age as
//! `ReplicationLatency`; with the source's pipeline stopped (a disabled stream trigger, a
//! parked drain) the figure stops while the writer goes on, which is what the alarm's missing
//! data catches; and it comes back when the pipeline does.
//!
//! Run: `cargo test -p ferry-e2e --test heartbeat` (about half a minute).

use ferry_aws::heartbeat::beat;
use ferry_core::heartbeat::{is_sentinel_of_any, sentinel_key, KeyTypes, MARKER};
use ferry_e2e::*;
use std::time::Duration;

const US: usize = 0;
const EU: usize = 1;

/// Heartbeats applied into `region`'s table so far, by the drains' reports.
fn heartbeats(cluster: &ferry_cli::cluster::Cluster, region: usize) -> (u64, Option<u64>) {
    let totals = cluster.stats.drain_totals();
    totals
        .get(&cluster.regions[region].name)
        .map(|t| (t.heartbeats, t.replication_latency_ms))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_reports_replication_latency_and_stops_with_the_pipeline() {
    let _t = timer("heartbeat_reports_replication_latency_and_stops_with_the_pipeline");
    let cluster = start(options(2)).await;
    let config = cluster.regions[US].config.clone();
    let table = cluster.regions[US].table(TABLE);
    let clock = cluster.regions[US].clock.clone();
    // The writer: every second here (every minute on AWS), straight into the local table.
    let writer = {
        let (table, config) = (table.clone(), config.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = beat(&table, &config, KeyTypes::default(), clock()).await {
                    eprintln!("heartbeat write failed: {e}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let (_, age) = eventually(CONVERGE_TIMEOUT, "a heartbeat reported into eu", || async {
        let (n, age) = heartbeats(&cluster, EU);
        (n > 0).then_some((n, age))
    })
    .await;
    let age = age.expect("an age with every heartbeat");
    assert!(age < CONVERGE_TIMEOUT.as_millis() as u64, "age {age} ms");
    // The sentinel arrived as a replicated item, and the application view can tell it apart.
    let key = sentinel_key(&config.key, KeyTypes::default(), &cluster.regions[US].name);
    let copy = eventually(CONVERGE_TIMEOUT, "the sentinel in eu", || async {
        let items = cluster.regions[EU].table(TABLE).scan_all().await.ok()?;
        items
            .into_iter()
            .find(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))
    })
    .await;
    assert!(copy.contains_key(MARKER) && copy.contains_key(&config.names.ts));
    let names: Vec<&str> = cluster.regions.iter().map(|r| r.name.as_str()).collect();
    assert!(is_sentinel_of_any(
        &config.key,
        &copy,
        names.iter().copied()
    ));

    // Stop us's pipeline (its enqueue and its drains park, as with a disabled trigger): once
    // the invocations under way have ended, no drain reports a heartbeat, though beats go on.
    cluster.begin_outage(US);
    let settle = cluster.options.drain_budget + cluster.options.drain_period * 2;
    tokio::time::sleep(settle).await;
    let (stopped_at, _) = heartbeats(&cluster, EU);
    tokio::time::sleep(cluster.options.drain_period * 4).await;
    assert_eq!(
        heartbeats(&cluster, EU).0,
        stopped_at,
        "a stopped pipeline reports no ReplicationLatency"
    );

    cluster.end_outage(US);
    eventually(
        CONVERGE_TIMEOUT,
        "heartbeats again after the pipeline restarts",
        || async { (heartbeats(&cluster, EU).0 > stopped_at).then_some(()) },
    )
    .await;
    writer.abort();
    cluster.shutdown().await;
}
