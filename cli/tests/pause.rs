//! `ferry pause` / `ferry resume` on a running sandbox (issue #19): a pair paused through a
//! minute of plain-SDK writes applies nothing, keeps every change in its buffer without burning
//! a receive count, shows in `ferry status`, and after `ferry resume` converges with nothing
//! lost — while the other direction keeps replicating throughout.
//!
//! `FERRY_PAUSE_SECONDS` (default 60) sets how long the writes run paused.

use aws_sdk_dynamodb::types::AttributeValue as Sdk;
use ferry_cli::cluster::{Cluster, ClusterOptions};
use ferry_cli::ops::pause::{self, PauseArgs};
use ferry_cli::ops::status;
use ferry_cli::ops::target::{Target, TargetArgs};
use ferry_cli::ops::verify::{self, VerifyOptions};
use std::time::{Duration, Instant};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const TABLE: &str = "ferry-pause";

fn pair_args(pause_note: &str) -> PauseArgs {
    PauseArgs {
        target: TargetArgs::default(),
        from: Some(US.into()),
        to: Some(EU.into()),
        regions: Vec::new(),
        note: pause_note.into(),
        stream: false,
        json: false,
    }
}

async fn put(client: &aws_sdk_dynamodb::Client, pk: &str, n: usize) {
    client
        .put_item()
        .table_name(TABLE)
        .item("pk", Sdk::S(pk.into()))
        .item("n", Sdk::N(n.to_string()))
        .send()
        .await
        .expect("PutItem");
}

async fn has(client: &aws_sdk_dynamodb::Client, pk: &str) -> bool {
    client
        .get_item()
        .table_name(TABLE)
        .key("pk", Sdk::S(pk.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_paused_through_a_minute_of_writes_loses_nothing_after_resume() {
    let seconds: u64 = std::env::var("FERRY_PAUSE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
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
    let target = Target::local(&cluster.state(0, String::new()), &TargetArgs::default())
        .expect("a local target");
    let paused = pause::run(&target, &pair_args("restore drill"), true)
        .await
        .expect("pause");
    assert!(paused.pairs[0].paused);
    assert_eq!(
        paused.pairs[0].in_flight, 0,
        "pause returned while a drain held messages"
    );
    assert!(paused.pairs[0].retention_s > 0);

    let (us, eu) = (
        cluster.regions[0].dynamo.client(),
        cluster.regions[1].dynamo.client(),
    );
    let started = Instant::now();
    let mut written = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        put(&us, &format!("us-{written}"), written).await;
        if written % 10 == 0 {
            put(&eu, &format!("eu-{written}"), written).await;
        }
        written += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Paused: nothing of US's reached EU, the other direction kept going, and the buffer holds
    // the changes without having handed any out.
    assert!(!has(&eu, "us-0").await, "a paused pair applied a record");
    assert!(has(&us, "eu-0").await, "the other direction stopped too");
    let st = status::run(&target, &[], false).await.expect("status");
    let pair = st
        .buffers
        .iter()
        .find(|b| b.source == US && b.destination == EU)
        .expect("the pair");
    let p = pair.paused.as_ref().expect("status shows the pause");
    assert_eq!(p.note, "restore drill");
    assert!(p.for_s.unwrap_or(0) + 5 >= seconds, "{p:?}");
    assert!(p.expires_in_s.unwrap_or(0) > 0, "{p:?}");
    assert!(pair.buffer.total() > 0, "the buffer holds the changes");
    assert_eq!(pair.buffer.in_flight, 0, "a paused drain received");
    assert!(status::render(&st).contains("PAUSED us-east-1 → eu-west-1 (restore drill)"));

    let resumed = pause::run(&target, &pair_args(""), false)
        .await
        .expect("resume");
    assert!(!resumed.pairs[0].paused);
    let resumed_at = Instant::now();
    let deadline = resumed_at + Duration::from_secs(120);
    loop {
        let options = VerifyOptions {
            regions: Vec::new(),
            segments: 1,
            partitions: 4,
            work_dir: None,
            repair: false,
            max_wcu: None,
            show_progress: false,
        };
        let v = verify::run(&target, &options).await.expect("verify");
        let all_there = has(&eu, &format!("us-{}", written - 1)).await;
        if v.differences.is_empty() && v.missing.values().all(|m| *m == 0) && all_there {
            eprintln!(
                "pause: {written} writes over {seconds} s paused, converged {:.1} s after resume",
                resumed_at.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence after resume: {:?}",
            v.differences.iter().take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for n in 0..written {
        assert!(has(&eu, &format!("us-{n}")).await, "us-{n} lost");
    }
}
