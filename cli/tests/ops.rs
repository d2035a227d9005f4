//! The operator tools against the emulators: a whole sandbox (`Cluster`) in-process, the tools'
//! `run` functions called directly, and the real `ferry` binary for exit codes and `--json`.
//!
//! - backfill into an empty region, interrupted after some segments and resumed (no page is
//!   scanned twice), then verify clean; verify finds planted differences and `--repair` fixes
//!   them; the binary's verify exits 0/1 with `--endpoint-url`, status answers with `--local`,
//!   usage errors exit 2.
//! - during an outage, status shows the backlog (and its age with --peek); a record that a
//!   drain dead-lettered (pending on an unversioned item) is redriven once the cause is fixed
//!   and then applied.
//! - attribute merge mode (`FERRY_MERGE_MODE=attribute`, given to the binary as an operator
//!   would): backfill migrates two regions' item-mode items (re-stamps) so that they agree at
//!   once; verify compares version maps and `--repair` merges every region's state.

use ferry_aws::{Table, WriteOutcome};
use ferry_cli::cluster::{Cluster, ClusterOptions};
use ferry_cli::ops::backfill::{self, BackfillOptions};
use ferry_cli::ops::dlq;
use ferry_cli::ops::status;
use ferry_cli::ops::target::{Target, TargetArgs};
use ferry_cli::ops::verify::{self, VerifyOptions};
use ferry_core::merge::{AttrState, Unversioned};
use ferry_core::MergeMode;
use ferry_core::{AttributeValue, ChangeRecord, Condition, Config, Item, Version};
use ferry_sandbox::{DynamoRegion, TableSpec};
use std::process::Command;
use std::time::{Duration, Instant};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

fn options(table: &str) -> ClusterOptions {
    ClusterOptions {
        regions: 2,
        table: table.into(),
        partition_key: "pk".into(),
        drain_budget: Duration::from_secs(4),
        drain_period: Duration::from_secs(2),
        ..ClusterOptions::default()
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn item(pk: &str, v: &str) -> Item {
    [("pk".to_string(), s(pk)), ("v".to_string(), s(v))].into()
}

fn target(cluster: &Cluster, table: &str) -> Target {
    let args = TargetArgs {
        tables: vec![table.into()],
        ..TargetArgs::default()
    };
    Target::local(&cluster.state(0, String::new()), &args).expect("a local target")
}

async fn put_new(table: &Table, item: &Item) {
    let out = table
        .put_if(item, &Condition::NotExists("pk".into()))
        .await
        .expect("PutItem");
    assert_eq!(out, WriteOutcome::Written);
}

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
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("FERRY_STATE_DIR");
    c
}

/// Runs the binary; returns its exit code and its stdout parsed as JSON.
async fn run_ferry(mut c: Command) -> (i32, serde_json::Value) {
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .expect("join")
        .expect("running ferry");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    eprintln!(
        "ferry exited {:?}; stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), json)
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_resume_verify_and_repair() {
    let started = Instant::now();
    let cluster = Cluster::start(options("ferry-ops")).await.expect("cluster");
    // A table no pipeline runs on: the source has items, the new region nothing.
    const FRESH: &str = "ops-fresh";
    for r in &cluster.regions {
        r.dynamo
            .create_table(&TableSpec::new(FRESH, "pk").with_ttl_attribute("ttl"))
            .await
            .expect("create table");
    }
    let config = Config::new(US, "pk");
    let us = Table::new(cluster.regions[0].dynamo.client(), FRESH);
    let eu = Table::new(cluster.regions[1].dynamo.client(), FRESH);
    const PLAIN: usize = 120;
    const STAMPED: usize = 30;
    // Versioned, but unsealed: an application put back a version it read over other content.
    const UNSEALED: usize = 6;
    for i in 0..PLAIN {
        put_new(&us, &item(&format!("u-{i}"), &format!("plain {i}"))).await;
    }
    for i in 0..STAMPED {
        let mut it = item(&format!("v-{i}"), &format!("stamped {i}"));
        Version::new(1_700_000_000_000 + i as u64, US).stamp_into(&mut it, &config.names);
        put_new(&us, &it).await;
    }
    for i in 0..UNSEALED {
        let mut it = item(&format!("c-{i}"), &format!("read {i}"));
        Version::new(1_700_000_000_000 + i as u64, EU).stamp_into(&mut it, &config.names);
        ferry_core::digest::seal(&mut it, &config.names);
        it.insert("v".into(), s(&format!("written back {i}")));
        put_new(&us, &it).await;
    }
    let tomb = ferry_core::reconcile::tombstone_item(
        &[("pk".to_string(), s("gone"))].into(),
        // Its TTL follows its version: a current one, or the sandbox's TTL sweep removes it.
        &Version::new(ferry_core::clock::system_now_ms(), US),
        0,
        &config,
    );
    put_new(&us, &tomb).await;
    let total = (PLAIN + STAMPED + UNSEALED + 1) as u64;

    let t = target(&cluster, FRESH);
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("backfill.json");
    let mut opts = BackfillOptions {
        from: US.into(),
        to: vec![EU.into()],
        segments: 8,
        concurrency: 4,
        page_size: Some(4),
        checkpoint: checkpoint.clone(),
        resume: false,
        max_wcu: None,
        show_progress: false,
        stop_after_segments: Some(2),
        interrupted: Default::default(),
    };
    let first = backfill::run(&t, &opts).await.expect("first backfill");
    eprintln!("{}", backfill::render(&first));
    assert!(!first.complete, "the interruption stopped it early");
    assert!(first.segments_finished >= 2 && first.segments_finished < 8);
    assert!(
        checkpoint.exists(),
        "an interrupted backfill keeps its checkpoint"
    );
    // Starting over without --resume is refused: the checkpoint would be lost.
    assert!(backfill::run(
        &t,
        &BackfillOptions {
            stop_after_segments: None,
            ..opts.clone()
        }
    )
    .await
    .is_err());
    opts.resume = true;
    opts.stop_after_segments = None;
    let second = backfill::run(&t, &opts).await.expect("resumed backfill");
    eprintln!("{}", backfill::render(&second));
    assert!(second.complete);
    assert_eq!(second.segments_skipped, first.segments_finished);
    assert_eq!(second.segments_finished + second.segments_skipped, 8);
    assert_eq!(
        first.scanned + second.scanned,
        total,
        "no item scanned twice, none skipped"
    );
    // The unsealed ones are stamped (and sealed) before they are spread, like unversioned ones.
    assert_eq!(first.stamped + second.stamped, (PLAIN + UNSEALED) as u64);
    assert_eq!(first.applied + second.applied, total);
    assert_eq!(first.pending + second.pending, 0);
    assert!(
        !checkpoint.exists(),
        "a complete backfill removes its checkpoint"
    );
    // A second full run, through a path that throttles a quarter of the writes, finds everything
    // already there (stale, nothing stamped), slowed down by the throttling and not failed.
    opts.resume = false;
    opts.page_size = None;
    opts.concurrency = 16;
    let mut throttled_state = cluster.state(0, String::new());
    throttled_state.regions[1].dynamodb = cluster.regions[1].proxy.endpoint();
    let throttled_target = Target::local(
        &throttled_state,
        &TargetArgs {
            tables: vec![FRESH.into()],
            ..TargetArgs::default()
        },
    )
    .expect("target");
    cluster.regions[1]
        .proxy
        .set_mode(ferry_sandbox::FaultMode::Throttle { fraction: 0.25 });
    let again = backfill::run(&throttled_target, &opts).await;
    cluster.regions[1]
        .proxy
        .set_mode(ferry_sandbox::FaultMode::Pass);
    let again = again.expect("a throttled backfill completes");
    eprintln!("{}", backfill::render(&again));
    assert_eq!((again.stamped, again.applied, again.stale), (0, 0, total));
    assert!(again.complete && again.throttled > 0, "{again:?}");
    // And once more under --max-wcu 100: every write (stale ones too) takes its unit, and the
    // run takes as long as the cap says (the bucket starts empty).
    let capped = backfill::run(
        &t,
        &BackfillOptions {
            max_wcu: Some(100.0),
            ..opts.clone()
        },
    )
    .await
    .expect("a capped backfill");
    eprintln!("{}", backfill::render(&capped));
    assert_eq!(capped.write_units, Some(total), "{capped:?}");
    let per_s = total as f64 / capped.elapsed_s;
    assert!(per_s <= 110.0, "{per_s} write units/s under a cap of 100");

    let vopts = VerifyOptions {
        regions: vec![US.into(), EU.into()],
        segments: 3,
        partitions: 4,
        work_dir: Some(dir.path().to_path_buf()),
        repair: false,
        max_wcu: None,
        show_progress: false,
    };
    let clean = verify::run(&t, &vopts).await.expect("verify");
    eprintln!("{}", verify::render(&clean));
    assert!(clean.clean() && clean.differences.is_empty());
    assert_eq!(clean.matching, total - 1, "the tombstone reads as absent");
    for i in 0..UNSEALED {
        let k: Item = [("pk".to_string(), s(&format!("c-{i}")))].into();
        let spread = eu.get(&k).await.unwrap().expect("spread");
        assert_eq!(spread["v"], s(&format!("written back {i}")));
        assert!(ferry_core::digest::is_sealed(&spread, &config.names));
        let v = Version::of(&spread, &config.names).unwrap().unwrap();
        assert_eq!(
            v.origin, US,
            "stamped by the source region, not spread as read"
        );
    }

    // Plant differences: a newer version in eu only, and a key deleted from eu only.
    let mut newer = eu
        .get(
            &item("v-3", "")
                .into_iter()
                .filter(|(k, _)| k == "pk")
                .collect(),
        )
        .await
        .unwrap()
        .unwrap();
    newer.insert("v".into(), s("changed in eu"));
    Version::new(1_800_000_000_000, EU).stamp_into(&mut newer, &config.names);
    eu.client
        .put_item()
        .table_name(FRESH)
        .set_item(Some(ferry_aws::values::to_sdk(&newer)))
        .send()
        .await
        .expect("put");
    eu.client
        .delete_item()
        .table_name(FRESH)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("u-7".into()),
        )
        .send()
        .await
        .expect("delete");

    let found = verify::run(&t, &vopts).await.expect("verify");
    eprintln!("{}", verify::render(&found));
    assert!(!found.clean());
    assert_eq!(found.differing, 1);
    assert_eq!(found.missing.get(EU), Some(&1));
    assert_eq!(found.differences.len(), 2);
    assert!(found
        .differences
        .iter()
        .any(|d| d.key == "pk=S:v-3" && d.kind == "differing"));
    assert!(found
        .differences
        .iter()
        .any(|d| d.key == "pk=S:u-7" && d.regions[EU] == "absent"));

    // The binary says the same: exit 1, every key in --json; with --endpoint-url per region.
    let mut c = ferry();
    c.args([
        "verify",
        "--table",
        FRESH,
        "--regions",
        "us-east-1,eu-west-1",
        "--json",
    ])
    .arg("--endpoint-url")
    .arg(format!(
        "dynamodb:{US}={}",
        cluster.regions[0].dynamo.endpoint()
    ))
    .arg("--endpoint-url")
    .arg(format!(
        "dynamodb:{EU}={}",
        cluster.regions[1].dynamo.endpoint()
    ));
    let (code, json) = run_ferry(c).await;
    assert_eq!(code, 1);
    assert_eq!(
        json["differences"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );

    let repaired = verify::run(
        &t,
        &VerifyOptions {
            repair: true,
            max_wcu: Some(50.0),
            ..vopts.clone()
        },
    )
    .await
    .expect("repair");
    eprintln!("{}", verify::render(&repaired));
    assert_eq!(repaired.repaired, 2);
    assert!(repaired.clean());
    assert!(repaired.write_units >= Some(2), "{repaired:?}");
    // The newest version won everywhere.
    let v3: Item = [("pk".to_string(), s("v-3"))].into();
    assert_eq!(us.get(&v3).await.unwrap().unwrap()["v"], s("changed in eu"));
    let after = verify::run(&t, &vopts).await.expect("verify");
    assert!(after.differences.is_empty());

    // Exit codes: clean 0 (also through --local and the state file), usage errors 2.
    let state_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        state_dir.path().join("state.json"),
        serde_json::to_string(&cluster.state(0, String::new())).unwrap(),
    )
    .unwrap();
    let mut c = ferry();
    c.env("FERRY_STATE_DIR", state_dir.path())
        .args(["verify", "--local", "--table", FRESH, "--json"]);
    let (code, json) = run_ferry(c).await;
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["matching"], serde_json::json!(total - 1));
    let mut c = ferry();
    c.env("FERRY_STATE_DIR", state_dir.path())
        .args(["status", "--local", "--json"]);
    let (code, json) = run_ferry(c).await;
    assert!(code == 0 || code == 1, "status answers");
    assert_eq!(json["buffers"].as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(json["regions"][0]["stream_view_type"], "NEW_AND_OLD_IMAGES");
    let mut c = ferry();
    c.env("FERRY_STATE_DIR", state_dir.path())
        .args(["backfill", "--local", "--from", US, "--to", US, "--json"]);
    assert_eq!(run_ferry(c).await.0, 2);
    let mut c = ferry();
    c.args(["verify", "--regions", "us-east-1,eu-west-1"]);
    assert_eq!(run_ferry(c).await.0, 2, "no --table and no --local");

    cluster.shutdown().await;
    eprintln!(
        "[timing] backfill_resume_verify_and_repair: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_outage_and_dlq_redrive_after_the_fix() {
    let started = Instant::now();
    const TABLE: &str = "ferry-ops2";
    let cluster = Cluster::start(options(TABLE)).await.expect("cluster");
    // The tool looks at eu through the cross-region path (its proxy), as another region would.
    let mut state = cluster.state(0, String::new());
    state.regions[1].dynamodb = cluster.regions[1].proxy.endpoint();
    let t = Target::local(&state, &TargetArgs::default()).expect("target");
    let healthy = status::run(&t, &[], false).await.expect("status");
    eprintln!("{}", status::render(&healthy));
    assert!(healthy.healthy, "{:?}", healthy.problems);
    // Each region's enqueue published its settings at start-up: the same everywhere.
    let fingerprint = ferry_core::peer::fingerprint(&cluster.regions[0].config);
    for r in &healthy.regions {
        assert_eq!(r.merge_mode.as_deref(), Some("item"), "{r:?}");
        assert_eq!(r.settings.as_deref(), Some(fingerprint.as_str()), "{r:?}");
    }

    cluster.begin_outage(1);
    // Let invocations that started before the cut end.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let us = cluster.regions[0].table(TABLE);
    for i in 0..15 {
        put_new(&us, &item(&format!("o-{i}"), "written during the outage")).await;
    }
    let during = eventually("a backlog for eu", || async {
        let r = status::run(&t, &[], true).await.expect("status");
        let b = r.buffers.iter().find(|b| b.destination == EU)?;
        (b.buffer.total() > 0 && b.approx_records.unwrap_or(0) >= 1).then_some(r)
    })
    .await;
    eprintln!("{}", status::render(&during));
    assert!(!during.healthy);
    let b = during.buffers.iter().find(|b| b.destination == EU).unwrap();
    assert!(!b.destination_answers);
    assert!(b.oldest_age_s.is_some());
    assert!(during.problems.iter().any(|p| p.contains("unreachable")));

    // A record the drain cannot apply: eu holds the key unversioned (its own pipeline is
    // stopped, so nothing stamps it), and the drain gives up after one pending attempt.
    let eu_direct = cluster.regions[1].table(TABLE);
    put_new(&eu_direct, &item("poison-1", "plain in eu")).await;
    let config = cluster.regions[0].config.clone();
    let mut image = item("poison-1", "from us");
    let version = Version::new(ferry_core::clock::system_now_ms() + 120_000, US);
    version.stamp_into(&mut image, &config.names);
    let record = ChangeRecord::from_stored(&image, US, &config)
        .unwrap()
        .unwrap();
    let pair = cluster
        .buffers
        .iter()
        .find(|p| p.source == US && p.destination == EU)
        .unwrap()
        .clone();
    for batch in ferry_core::buffer::pack(&[record]).unwrap() {
        assert!(pair.buffer.send_batch(&batch).await.unwrap().is_empty());
    }
    let mut settings = ferry_drain::DrainSettings::with_budget(Duration::from_secs(8));
    settings.retry.max_pending_attempts = 1;
    settings.return_when_idle = true;
    let drainer = ferry_drain::Drainer {
        config: config.clone(),
        source_region: US.into(),
        destination_region: EU.into(),
        buffer: pair.buffer.clone(),
        dlq: pair.dlq.clone(),
        table: eu_direct.clone(),
        settings,
        clock: ferry_core::clock::system(),
        peer: Default::default(),
        waits: Default::default(),
    };
    let report = ferry_drain::drain(&drainer).await;
    assert_eq!(report.dlq_records, 1, "{report:?}");

    let listed = dlq::run(&t, US, EU, dlq::Action::List)
        .await
        .expect("dlq list");
    eprintln!("{}", dlq::render(&listed, false));
    assert_eq!(listed.messages.len(), 1);
    let m = &listed.messages[0];
    assert!(
        m.reason.as_deref().unwrap_or("").contains("pending"),
        "{m:?}"
    );
    assert!(m.keys[0].contains("poison-1"));
    // Listing leaves it there; show gives the image.
    let shown = dlq::run(&t, US, EU, dlq::Action::Show(vec![m.message_id.clone()]))
        .await
        .expect("dlq show");
    assert_eq!(shown.messages.len(), 1);
    assert_eq!(shown.messages[0].images.len(), 1);

    // The fix: eu comes back, its pipeline stamps the item, the record can be judged again.
    cluster.end_outage(1);
    let key: Item = [("pk".to_string(), s("poison-1"))].into();
    eventually("eu stamps its own write", || async {
        let i = eu_direct.get(&key).await.ok()??;
        Version::of(&i, &config.names).ok()?.map(|_| ())
    })
    .await;
    let redriven = dlq::run(
        &t,
        US,
        EU,
        dlq::Action::Redrive {
            all: true,
            ids: vec![],
        },
    )
    .await
    .expect("redrive");
    assert_eq!(redriven.redriven, 1);
    assert_eq!(pair.dlq.depth().await.unwrap().total(), 0);
    eventually("the redriven record applied in eu", || async {
        let i = eu_direct.get(&key).await.ok()??;
        (i.get("v") == Some(&s("from us"))).then_some(())
    })
    .await;
    let after = eventually("the backlog drained", || async {
        let r = status::run(&t, &[], false).await.expect("status");
        r.buffers.iter().all(|b| b.buffer.total() == 0).then_some(r)
    })
    .await;
    eprintln!("{}", status::render(&after));
    assert!(after.healthy, "{:?}", after.problems);
    cluster.shutdown().await;
    eprintln!(
        "[timing] status_and_dlq: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Attribute merge mode: two bare emulators (no pipeline runs on the table), the binary with
// `FERRY_MERGE_MODE=attribute` and an `--endpoint-url` per region.

/// Two fresh regions holding `table` (partition key `pk`, TTL attribute `ttl`).
async fn two_regions(table: &str) -> (DynamoRegion, DynamoRegion, Table, Table) {
    let us = DynamoRegion::start(US, 0).expect("us emulator");
    let eu = DynamoRegion::start(EU, 0).expect("eu emulator");
    for r in [&us, &eu] {
        r.create_table(&TableSpec::new(table, "pk").with_ttl_attribute("ttl"))
            .await
            .expect("create table");
    }
    let (ut, et) = (
        Table::new(us.client(), table),
        Table::new(eu.client(), table),
    );
    (us, eu, ut, et)
}

/// `ferry <verb> --table T` in attribute mode against both emulators, `--json`.
fn ferry_attribute(verb: &str, table: &str, us: &DynamoRegion, eu: &DynamoRegion) -> Command {
    let mut c = ferry();
    c.env("FERRY_MERGE_MODE", "attribute")
        .args([verb, "--table", table, "--json"])
        .arg("--endpoint-url")
        .arg(format!("dynamodb:{US}={}", us.endpoint()))
        .arg("--endpoint-url")
        .arg(format!("dynamodb:{EU}={}", eu.endpoint()));
    c
}

async fn backfill_attribute(
    table: &str,
    (from, to): (&str, &str),
    us: &DynamoRegion,
    eu: &DynamoRegion,
    checkpoint: &std::path::Path,
) -> (i32, serde_json::Value) {
    let mut c = ferry_attribute("backfill", table, us, eu);
    c.args(["--from", from, "--to", to, "--segments", "2"])
        .arg("--checkpoint")
        .arg(checkpoint);
    let (code, json) = run_ferry(c).await;
    eprintln!("backfill {from} → {to}: {json}");
    (code, json)
}

/// The report's counts, in the order the brief of the report lists them.
fn counts(json: &serde_json::Value) -> [u64; 6] {
    [
        "scanned",
        "restamped",
        "stamped",
        "applied",
        "stale",
        "pending",
    ]
    .map(|k| json[k].as_u64().unwrap_or_else(|| panic!("{k} in {json}")))
}

fn key(pk: &str) -> Item {
    [("pk".to_string(), s(pk))].into()
}

fn entry(v: &Version) -> AttributeValue {
    s(&format!("{}@{}", v.ts_ms, v.origin))
}

fn attribute_config() -> Config {
    let mut c = Config::new(US, "pk");
    c.merge_mode = MergeMode::Attribute;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_mode_backfill_migrates_item_mode_regions() {
    let started = Instant::now();
    const TABLE: &str = "ops-migrate";
    let (us, eu, ut, et) = two_regions(TABLE).await;
    let config = attribute_config();
    let names = &config.names;
    // Both regions hold the same item-mode items (converged in item mode), one of them a
    // tombstone; us also holds one item from before Ferry (no version at all). Versions are
    // recent: a tombstone's TTL follows its version.
    const N: usize = 20;
    let base = ferry_core::clock::system_now_ms() - 60_000;
    let version =
        |i: usize| Version::new(base + i as u64, if i.is_multiple_of(2) { US } else { EU });
    let gone = Version::new(base + 500, EU);
    for table in [&ut, &et] {
        for i in 0..N {
            let mut it = item(&format!("m-{i}"), &format!("value {i}"));
            it.insert("name".into(), s(&format!("name {i}")));
            version(i).stamp_into(&mut it, names);
            put_new(table, &it).await;
        }
        let tomb = ferry_core::reconcile::tombstone_item(&key("gone"), &gone, 0, &config);
        put_new(table, &tomb).await;
    }
    put_new(&ut, &item("pre-ferry", "never versioned")).await;
    let n = N as u64;
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("backfill.json");

    // us first: every us item re-stamped (the plain one stamped) and merged into eu, where the
    // visible item-mode items wait (pending) for eu's own re-stamp. eu's tombstone has nothing
    // unversioned: it takes the merge.
    let (code, first) = backfill_attribute(TABLE, (US, EU), &us, &eu, &checkpoint).await;
    assert_eq!(first["merge_mode"], "attribute", "{first}");
    assert_eq!(counts(&first), [n + 2, n + 1, 1, 2, 0, n], "{first}");
    assert_eq!(code, 1, "pending keys: exit 1");
    // Half-way, verify (attribute mode) sees version maps in us and item versions in eu.
    let mut c = ferry_attribute("verify", TABLE, &us, &eu);
    c.args(["--regions", "us-east-1,eu-west-1"]);
    let (code, half) = run_ferry(c).await;
    assert_eq!(code, 1);
    assert_eq!(half["differing"], serde_json::json!(n), "{half}");
    assert_eq!(
        half["matching"],
        serde_json::json!(1),
        "pre-ferry, merged into eu"
    );

    // Then eu: its items re-stamp to exactly what us holds (stale everywhere); the tombstone
    // loses its item version and marker.
    let (code, second) = backfill_attribute(TABLE, (EU, US), &us, &eu, &checkpoint).await;
    assert_eq!(counts(&second), [n + 2, n + 1, 0, 0, n + 2, 0], "{second}");
    assert_eq!(code, 0);
    let (code, again) = backfill_attribute(TABLE, (US, EU), &us, &eu, &checkpoint).await;
    assert_eq!(
        counts(&again),
        [n + 2, 0, 0, 0, n + 2, 0],
        "nothing left: {again}"
    );
    assert_eq!(code, 0);

    let mut c = ferry_attribute("verify", TABLE, &us, &eu);
    c.args(["--regions", "us-east-1,eu-west-1"]);
    let (code, verified) = run_ferry(c).await;
    assert_eq!(code, 0, "{verified}");
    assert_eq!(verified["differences"], serde_json::json!([]));
    assert_eq!(verified["matching"], serde_json::json!(n + 1));

    // Every item carries a version map with the item's version, and no item version.
    for table in [&ut, &et] {
        for i in 0..N {
            let it = table.get(&key(&format!("m-{i}"))).await.unwrap().unwrap();
            let e = entry(&version(i));
            assert_eq!(
                it[&names.versions],
                AttributeValue::M([("v".into(), e.clone()), ("name".into(), e)].into()),
                "{it:?}"
            );
            assert_eq!(it["v"], s(&format!("value {i}")));
            assert!(!it.contains_key(&names.ts) && !it.contains_key(&names.origin));
        }
        let tomb = table.get(&key("gone")).await.unwrap().unwrap();
        assert!(config.is_tombstone(&tomb), "{tomb:?}");
        assert_eq!(
            tomb[&names.versions],
            AttributeValue::M([("pk".into(), entry(&gone))].into())
        );
        assert_eq!(
            tomb[&names.ttl],
            AttributeValue::N((gone.ts_ms / 1000 + config.tombstone_lifetime_s).to_string())
        );
        assert!(!tomb.contains_key(&names.tombstone) && !tomb.contains_key(&names.ts));
        let plain = table.get(&key("pre-ferry")).await.unwrap().unwrap();
        let state = AttrState::read(&plain, &config).unwrap().state;
        assert_eq!(state.versions["v"].origin, US);
        assert!(
            state.versions["v"].ts_ms > base + 60_000,
            "stamped at the backfill's now"
        );
    }
    eprintln!(
        "[timing] attribute_mode_backfill_migrates_item_mode_regions: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_mode_verify_repair_merges_attributes() {
    let started = Instant::now();
    const TABLE: &str = "ops-merge-repair";
    let (us, eu, ut, et) = two_regions(TABLE).await;
    let config = attribute_config();
    let t0 = ferry_core::clock::system_now_ms() - 60_000;
    let at = |dt: u64, origin: &str| Version::new(t0 + dt, origin);
    let state = |attrs: &[(&str, &str, Version)]| {
        let mut st = AttrState::default();
        for (n, v, version) in attrs {
            st.values.insert(n.to_string(), s(v));
            st.versions.insert(n.to_string(), version.clone());
        }
        st
    };
    let store = |table: &Table, pk: &str, st: &AttrState| {
        let item = st.to_item(&key(pk), &config);
        let table = table.clone();
        async move { put_new(&table, &item).await }
    };
    // cust-1: us changed `address`, eu later changed `last_contacted`; both kept `name`.
    let us1 = state(&[
        ("address", "2 New Rd", at(1_000, US)),
        ("last_contacted", "2024-01-01", at(0, US)),
        ("name", "Ada", at(0, US)),
    ]);
    let eu1 = state(&[
        ("address", "1 Old St", at(0, US)),
        ("last_contacted", "2025-06-01", at(2_000, EU)),
        ("name", "Ada", at(0, US)),
    ]);
    store(&ut, "cust-1", &us1).await;
    store(&et, "cust-1", &eu1).await;
    // same-values: equal values, different entries (a difference: the maps are compared).
    store(&ut, "same-values", &state(&[("a", "x", at(0, US))])).await;
    store(&et, "same-values", &state(&[("a", "x", at(5, EU))])).await;
    // ok: identical. gone: deleted in us, already expired in eu (invisible everywhere).
    let ok = state(&[("a", "y", at(0, EU))]);
    store(&ut, "ok", &ok).await;
    store(&et, "ok", &ok).await;
    let deleted = AttrState {
        deleted: Some(at(3_000, US)),
        ..AttrState::default()
    };
    store(&ut, "gone", &deleted).await;
    // unstamped: eu holds a local write without an entry (its enqueue has not stamped it).
    store(&ut, "unstamped", &ok).await;
    let mut local = ok.to_item(&key("unstamped"), &config);
    local.insert("b".into(), s("local write"));
    put_new(&et, &local).await;

    let verify = |repair: bool| {
        let mut c = ferry_attribute("verify", TABLE, &us, &eu);
        c.args(["--regions", "us-east-1,eu-west-1"]);
        if repair {
            c.arg("--repair");
        }
        run_ferry(c)
    };
    let (code, found) = verify(false).await;
    assert_eq!(code, 1);
    assert_eq!(found["matching"], serde_json::json!(1), "{found}");
    assert_eq!(found["differing"], serde_json::json!(3), "{found}");
    let keys: Vec<&str> = found["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys.iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        ["pk=S:cust-1", "pk=S:same-values", "pk=S:unstamped"].into(),
        "the key invisible everywhere is not reported"
    );
    let unstamped = found["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "pk=S:unstamped")
        .unwrap();
    assert_eq!(
        unstamped["regions"][EU],
        format!("newest {}@{EU} (1 entries), unversioned b", t0)
    );

    let (code, repaired) = verify(true).await;
    assert_eq!(code, 1, "unstamped is left for eu's own stamp");
    assert_eq!(repaired["repaired"], serde_json::json!(2), "{repaired}");
    assert_eq!(repaired["unrepaired"], serde_json::json!(1));
    let outcome = |k: &str| {
        repaired["differences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["key"] == k)
            .map(|d| d["repair"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(outcome("pk=S:cust-1"), "repaired");
    assert!(
        outcome("pk=S:unstamped").contains("eu-west-1 holds b without an entry"),
        "{}",
        outcome("pk=S:unstamped")
    );
    // Both changes survive in both regions, with equal version maps.
    let want = state(&[
        ("address", "2 New Rd", at(1_000, US)),
        ("last_contacted", "2025-06-01", at(2_000, EU)),
        ("name", "Ada", at(0, US)),
    ]);
    for table in [&ut, &et] {
        let it = table.get(&key("cust-1")).await.unwrap().unwrap();
        assert_eq!(it["address"], s("2 New Rd"));
        assert_eq!(it["last_contacted"], s("2025-06-01"));
        assert_eq!(AttrState::read(&it, &config).unwrap().state, want);
        assert_eq!(
            it[&config.names.versions],
            want.versions_value(&config),
            "{it:?}"
        );
        let same = table.get(&key("same-values")).await.unwrap().unwrap();
        assert_eq!(
            AttrState::read(&same, &config).unwrap().state.versions["a"],
            at(5, EU)
        );
    }
    // eu's local write was left alone (the merge waits for its stamp, as the drain does).
    let left = et.get(&key("unstamped")).await.unwrap().unwrap();
    assert_eq!(left["b"], s("local write"));
    let plan = ferry_core::merge::plan_merge(
        &key("unstamped"),
        Some(&left),
        &ok,
        Unversioned::Wait,
        &config,
    )
    .unwrap();
    assert!(matches!(plan, ferry_core::merge::MergePlan::Pending { .. }));

    let (code, after) = verify(false).await;
    assert_eq!(code, 1);
    assert_eq!(
        after["differing"],
        serde_json::json!(1),
        "only unstamped: {after}"
    );
    assert_eq!(after["matching"], serde_json::json!(3));
    eprintln!(
        "[timing] attribute_mode_verify_repair_merges_attributes: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The tools take the merge mode the tables publish (`ferry:merge-mode`, set by each region's
/// enqueue at start-up) when `FERRY_MERGE_MODE` is not set, refuse to run against it when it
/// says otherwise, and refuse to work across regions that publish different modes.
#[tokio::test(flavor = "multi_thread")]
async fn the_tools_take_the_mode_the_tables_publish() {
    const TABLE: &str = "ops-published-mode";
    let (us, eu, ut, et) = two_regions(TABLE).await;
    for (table, region) in [(&ut, US), (&et, EU)] {
        let mut c = Config::new(region, "pk");
        c.merge_mode = MergeMode::Attribute;
        ferry_aws::peer::publish_settings(table, &c)
            .await
            .expect("publish");
    }
    let backfill = |mode: Option<&str>| {
        let mut c = ferry_attribute("backfill", TABLE, &us, &eu);
        c.env_remove("FERRY_MERGE_MODE");
        if let Some(m) = mode {
            c.env("FERRY_MERGE_MODE", m);
        }
        c.args(["--from", US, "--to", EU, "--segments", "1"])
            .arg("--checkpoint")
            .arg(std::env::temp_dir().join(format!("ferry-published-{}", std::process::id())));
        c
    };
    let (code, json) = run_ferry(backfill(None)).await;
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["merge_mode"], "attribute", "{json}");
    let (code, _) = run_ferry(backfill(Some("item"))).await;
    assert_eq!(code, 2, "the environment contradicts the table");
    // eu-west-1 now publishes item mode: the regions disagree.
    ferry_aws::peer::publish_settings(&et, &Config::new(EU, "pk"))
        .await
        .expect("publish");
    let (code, _) = run_ferry(backfill(None)).await;
    assert_eq!(code, 2, "regions in different modes");
    let mut verify = ferry_attribute("verify", TABLE, &us, &eu);
    verify
        .env_remove("FERRY_MERGE_MODE")
        .args(["--regions", &format!("{US},{EU}")]);
    let out = tokio::task::spawn_blocking(move || verify.output())
        .await
        .expect("join")
        .expect("running ferry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "verify refuses too: {stderr}");
    assert!(stderr.contains("merge mode mismatch"), "{stderr}");
}

/// `ferry doctor` passes a healthy sandbox, then finds a table planted without a stream or TTL
/// (named per region with `--table REGION=NAME`) and a queue that does not exist (`--stack`
/// names the template's queues, which the sandbox does not have), each with its fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_cluster_and_finds_planted_misconfigurations() {
    use ferry_cli::ops::doctor;
    const TABLE: &str = "ferry-doc";
    const BARE: &str = "ferry-doc-bare";
    let cluster = Cluster::start(options(TABLE)).await.expect("cluster");
    let state = cluster.state(0, String::new());
    let t = Target::local(&state, &TargetArgs::default()).expect("target");
    let healthy = doctor::run(&t, &[]).await.expect("doctor");
    eprintln!("{}", doctor::render(&healthy));
    assert!(healthy.findings.is_empty(), "{:#?}", healthy.findings);

    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    cluster.regions[1]
        .dynamo
        .client()
        .create_table()
        .table_name(BARE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("definition"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .send()
        .await
        .expect("create table");
    let args = TargetArgs {
        tables: vec![TABLE.into(), format!("{EU}={BARE}")],
        ..TargetArgs::default()
    };
    let t = Target::local(&state, &args).expect("target");
    let found = doctor::run(&t, &[]).await.expect("doctor");
    let text = doctor::render(&found);
    eprintln!("{text}");
    assert!(found.findings.iter().all(|f| f.region == EU), "{text}");
    assert!(
        text.contains(&format!("table {BARE}: stream is off")),
        "{text}"
    );
    assert!(text.contains("StreamViewType NEW_AND_OLD_IMAGES"), "{text}");
    assert!(
        text.contains(&format!("table {BARE}: TTL is off")),
        "{text}"
    );

    let args = TargetArgs {
        buffer_name: Some("prod-buffer-{dst}".into()),
        dlq_name: Some("prod-dlq-{dst}".into()),
        ..TargetArgs::default()
    };
    let t = Target::local(&state, &args).expect("target");
    let found = doctor::run(&t, &[]).await.expect("doctor");
    let text = doctor::render(&found);
    eprintln!("{text}");
    assert!(
        text.contains(&format!("{US} queue prod-buffer-{EU}")),
        "the missing queue is named with its region: {text}"
    );
    cluster.shutdown().await;
}
