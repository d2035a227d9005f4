//! The drain against real wire-protocol emulators on loopback: moto's SQS (buffer, DLQ) and STS,
//! one dynoxide server per destination region, the sandbox's fault proxy.

mod common;

use common::*;
use ferry_core::{ChangeRecord, Version};
use ferry_drain::{drain, StopReason};
use ferry_sandbox::{FaultMode, FaultProxy};
use rand::seq::SliceRandom;
use std::time::{Duration, Instant};

/// Newer versions are written, older and equal ones are stale, a newer one from another region
/// is a conflict: counted, sampled and logged with the key and both versions.
#[tokio::test]
async fn newer_older_equal_and_conflicting_versions() {
    let pair = Pair::new().await;
    let us = "us-east-1";
    let eu = "eu-west-1";
    pair.put_local(&item("newer", Some(&Version::new(1000, us)), "old"))
        .await;
    pair.put_local(&item("older", Some(&Version::new(3000, us)), "kept"))
        .await;
    pair.put_local(&item("equal", Some(&Version::new(2000, us)), "kept"))
        .await;
    pair.put_local(&item("tie", Some(&Version::new(2000, eu)), "old"))
        .await;
    pair.put_local(&item("conflict", Some(&Version::new(3000, eu)), "kept"))
        .await;
    pair.send(&[
        record("newer", 2000, us, "new"),
        record("older", 2000, us, "lost"),
        record("equal", 2000, us, "lost"),
        // Same ms: "eu-west-1" < "us-east-1", so the record's version is the newer one.
        record("tie", 2000, us, "new"),
        record("conflict", 2000, us, "lost"),
        record("absent", 2000, us, "new"),
    ])
    .await;

    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let drainer = pair.drainer().await;
    let report = drain(&drainer).await;

    assert_eq!(report.records, 6);
    assert_eq!(report.applied, 3, "{report:?}");
    assert_eq!(report.stale, 2);
    assert_eq!(report.conflicts, 1);
    assert_eq!(report.dlq(), 0);
    assert_eq!(report.deleted, 1);
    assert!(report.destination_reachable);
    assert_eq!(report.stop_reason, StopReason::Idle);
    assert_eq!(report.lag_ms.len(), 3);
    assert!(report.lag_p99_ms.is_some());
    for (pk, data) in [
        ("newer", "new"),
        ("older", "kept"),
        ("equal", "kept"),
        ("tie", "new"),
        ("conflict", "kept"),
        ("absent", "new"),
    ] {
        let stored = pair.get(pk).await.expect("item");
        assert_eq!(data_of(&stored), Some(data), "{pk}");
    }
    let sample = &report.conflict_samples[0];
    assert_eq!(sample.key, "pk=S:conflict");
    assert_eq!(sample.winner, "3000@eu-west-1");
    assert_eq!(sample.loser, "2000@us-east-1");
    let logs = capture.text();
    let line = logs
        .lines()
        .find(|l| l.contains("\"conflict\":true"))
        .expect("a conflict log line");
    for needle in ["pk=S:conflict", "3000@eu-west-1", "2000@us-east-1"] {
        assert!(line.contains(needle), "{needle} missing from {line}");
    }
    assert_eq!(pair.depth(&pair.buffer_url).await, (0, 0, 0));
    assert!(pair.dlq_messages().await.is_empty());
}

/// A record for a key whose destination item is unversioned (a local write not stamped yet)
/// waits, re-queued with a growing delay, and lands once the item is stamped.
#[tokio::test]
async fn pending_on_unversioned_item_until_it_is_stamped() {
    let pair = Pair::new().await;
    pair.put_local(&item("p", None, "local")).await;
    pair.send(&[
        record("p", 5000, "us-east-1", "replicated"),
        record("q", 5000, "us-east-1", "x"),
    ])
    .await;
    let drainer = pair.drainer().await;
    let first = drain(&drainer).await;
    assert!(first.pending >= 1, "{first:?}");
    assert!(first.requeued >= 1);
    assert_eq!(first.applied, 1, "the other record is not held hostage");
    assert_eq!(first.dlq(), 0);
    assert_eq!(data_of(&pair.get("p").await.expect("item")), Some("local"));
    let (visible, inflight, delayed) = pair.depth(&pair.buffer_url).await;
    assert_eq!(
        visible + inflight + delayed,
        1,
        "only the re-queued record is left"
    );

    // The destination's enqueue stamps its local write, below the record's version.
    pair.stamp("p", &Version::new(10, "eu-west-1")).await;
    let mut applied = false;
    for _ in 0..4 {
        let report = drain(&drainer).await;
        assert_eq!(report.dlq(), 0);
        if report.applied == 1 {
            applied = true;
            break;
        }
    }
    assert!(applied, "the record lands after the stamp");
    assert_eq!(
        data_of(&pair.get("p").await.expect("item")),
        Some("replicated")
    );
    assert_eq!(
        pair.version_of("p").await,
        Some(Version::new(5000, "us-east-1"))
    );
}

/// A record that stays pending for its own sake ends in the DLQ after `max_pending_attempts`,
/// with the reason.
#[tokio::test]
async fn pending_too_many_times_goes_to_the_dlq() {
    let pair = Pair::new().await;
    pair.put_local(&item("stuck", None, "local")).await;
    pair.send(&[record("stuck", 5000, "us-east-1", "replicated")])
        .await;
    let mut drainer = pair.drainer().await;
    drainer.settings.retry.max_pending_attempts = 3;
    drainer.settings.retry.pending_delay_base_s = 0;
    let report = drain(&drainer).await;
    assert_eq!(report.pending, 3, "{report:?}");
    assert_eq!(report.requeued, 2);
    assert_eq!(report.dlq_records, 1);
    let dlq = pair.dlq_messages().await;
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].1.contains("pending 3 times"), "{}", dlq[0].1);
    assert!(dlq[0].1.contains("Unversioned"));
    assert!(dlq[0].1.contains("pk=S:stuck"));
    // The dead-lettered body is a normal buffer message: it can be redriven as it is.
    assert_eq!(
        ferry_core::buffer::unpack(&dlq[0].0)
            .expect("unpacks")
            .len(),
        1
    );
    assert_eq!(pair.depth(&pair.buffer_url).await, (0, 0, 0));
}

/// Duplicates and any order converge to the newest version of every key; a replay of the
/// same backlog changes nothing.
#[tokio::test]
async fn duplicates_and_reordering_converge() {
    let pair = Pair::new().await;
    let origins = ["us-east-1", "ap-southeast-2"];
    let mut records = Vec::new();
    for k in 0..40 {
        for v in 0..5u64 {
            let ts = 1000 + (v * 7 + k * 3) % 11;
            let origin = origins[(k as usize + v as usize) % 2];
            records.push(record(
                &format!("k{k}"),
                ts,
                origin,
                &format!("{ts}@{origin}"),
            ));
        }
    }
    let mut backlog: Vec<_> = records.iter().chain(records.iter()).cloned().collect();
    backlog.shuffle(&mut rand::thread_rng());
    pair.send_chunked(&backlog, 25).await;
    let mut drainer = pair.drainer().await;
    // Small takes, so that duplicates of a key also meet across takes, not only inside one.
    drainer.settings.take_messages = 3;
    let report = drain_until_empty(&pair, &drainer, 3).await;
    assert!(report.records >= 400, "{report:?}");
    assert!(report.coalesced > 0);
    assert_eq!(report.dlq(), 0);
    assert_eq!(report.pending, 0);
    for k in 0..40 {
        let pk = format!("k{k}");
        let newest = records
            .iter()
            .filter(|r| r.item_key() == ferry_core::ItemKey::of(&key(&pk)))
            .map(|r| r.version.clone())
            .max()
            .expect("some");
        let stored = pair.get(&pk).await.expect("item");
        assert_eq!(pair.version_of(&pk).await.as_ref(), Some(&newest));
        assert_eq!(data_of(&stored), Some(newest.to_string().as_str()));
    }
    // Replay: everything is already there.
    pair.send_chunked(&backlog, 100).await;
    let replay = drain_until_empty(&pair, &drainer, 3).await;
    assert_eq!(replay.applied, 0, "{replay:?}");
    assert_eq!(replay.dlq(), 0);
    assert!(replay.stale + replay.conflicts + replay.coalesced >= 400);
}

/// A destination that refuses connections: the drain returns at once without receiving (no
/// receive count burnt, nothing in the DLQ), and everything is applied once it is back. The
/// same when it goes down in the middle of a take: what was not written is re-queued as new
/// messages and the old ones deleted, so again no message is ever received twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_destination_burns_no_receive_count_and_dead_letters_nothing() {
    let mut pair = Pair::new().await;
    let records: Vec<_> = (0..30)
        .map(|i| record(&format!("o{i}"), 2000, "us-east-1", "x"))
        .collect();
    pair.send_chunked(&records, 10).await;
    let drainer = pair.drainer().await;
    pair.region.stop();
    for _ in 0..2 {
        let t = Instant::now();
        let report = drain(&drainer).await;
        assert!(!report.destination_reachable);
        assert_eq!(report.stop_reason, StopReason::DestinationUnreachable);
        assert_eq!(
            report.receives, 0,
            "no receive while the destination is down"
        );
        assert_eq!(report.received, 0);
        assert!(t.elapsed() < Duration::from_secs(2), "returns at once");
    }
    assert_eq!(pair.depth(&pair.buffer_url).await, (3, 0, 0));
    pair.region.resume().expect("resume");
    let report = drain_until_empty(&pair, &drainer, 2).await;
    assert!(report.destination_reachable);
    assert_eq!(report.applied, 30, "{report:?}");
    assert_eq!(report.max_receive_count, 1, "no receive count burnt");
    assert!(pair.dlq_messages().await.is_empty());

    // Down in the middle of a take: slow writes through a proxy that then refuses.
    let proxy = FaultProxy::start(&pair.region.endpoint()).expect("proxy");
    let records: Vec<_> = (0..200)
        .map(|i| record(&format!("m{i}"), 2000, "us-east-1", "x"))
        .collect();
    pair.send_chunked(&records, 50).await;
    let mut drainer = pair.drainer_via(&proxy.endpoint(), &[]).await;
    drainer.settings.max_in_flight = 4;
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(20)));
    let flip = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        proxy.set_mode(FaultMode::Refuse);
    };
    let (report, ()) = tokio::join!(drain(&drainer), flip);
    assert!(!report.destination_reachable, "{report:?}");
    assert!(report.transport_failures >= 1);
    assert!(report.applied > 0 && report.applied < 200);
    // Every record not written is re-queued; the next take's receive, already in flight when
    // the writes failed, may take the re-queued records back once, and re-queues them again
    // untouched (never attempted: same attempt count, new messages, no receive count burnt).
    assert!(report.requeued >= 200 - report.applied, "{report:?}");
    assert!(report.requeued <= 2 * (200 - report.applied), "{report:?}");
    assert_eq!(
        report.deleted, report.received,
        "old messages deleted after the re-queue"
    );
    assert_eq!(report.dlq(), 0);
    // Down: nothing more is received.
    let down = drain(&drainer).await;
    assert_eq!(down.receives, 0);
    proxy.set_mode(FaultMode::Pass);
    let after = drain_until_empty(&pair, &drainer, 3).await;
    assert_eq!(
        after.max_receive_count, 1,
        "every message received once: {after:?}"
    );
    assert_eq!(after.dlq(), 0);
    // A write cut by the refusal may have landed before its answer was lost: it is stale now.
    assert_eq!(
        report.applied + after.applied + after.stale,
        200,
        "{after:?}"
    );
    for i in 0..200 {
        assert!(pair.get(&format!("m{i}")).await.is_some(), "m{i}");
    }
    assert!(pair.dlq_messages().await.is_empty());
}

/// A destination that accepts connections and never answers: the ping times out and the drain
/// returns without receiving; when it starts hanging mid-take, writes time out, the drain stops
/// and returns within its budget, and everything lands after it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_destination_times_out_within_the_budget() {
    let pair = Pair::new().await;
    let proxy = FaultProxy::start(&pair.region.endpoint()).expect("proxy");
    let records: Vec<_> = (0..120)
        .map(|i| record(&format!("h{i}"), 2000, "us-east-1", "x"))
        .collect();
    pair.send_chunked(&records, 40).await;
    let mut drainer = pair.drainer_via(&proxy.endpoint(), &[]).await;
    drainer.settings.max_in_flight = 4;

    proxy.set_mode(FaultMode::Blackhole);
    let t = Instant::now();
    let report = drain(&drainer).await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(!report.destination_reachable);
    assert_eq!(report.receives, 0);

    proxy.set_mode(FaultMode::Delay(Duration::from_millis(20)));
    let hang = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.set_mode(FaultMode::Blackhole);
    };
    let t = Instant::now();
    let (report, ()) = tokio::join!(drain(&drainer), hang);
    let budget = drainer.settings.budget;
    assert!(
        t.elapsed() <= budget + Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert!(report.applied > 0, "{report:?}");
    assert!(report.transport_failures >= 1);
    assert!(!report.destination_reachable);
    assert_eq!(report.dlq(), 0);
    // Re-queued at least once each (twice when the receive in flight took them back).
    assert!(report.requeued + report.applied >= 120, "{report:?}");
    assert!(report.requeued <= 2 * (120 - report.applied), "{report:?}");

    proxy.set_mode(FaultMode::Pass);
    let after = drain_until_empty(&pair, &drainer, 3).await;
    assert_eq!(
        report.applied + after.applied + after.stale,
        120,
        "{after:?}"
    );
    assert_eq!(after.dlq(), 0);

    // SDK timeouts far beyond the budget: the drain's own cut ends the hung writes.
    let records: Vec<_> = (0..60)
        .map(|i| record(&format!("c{i}"), 2000, "us-east-1", "x"))
        .collect();
    pair.send_chunked(&records, 30).await;
    let mut patient = pair
        .drainer_via(
            &proxy.endpoint(),
            &[
                ("FERRY_DRAIN_BUDGET_S", "2"),
                ("FERRY_DESTINATION_ATTEMPT_TIMEOUT_MS", "60000"),
                ("FERRY_DESTINATION_OPERATION_TIMEOUT_MS", "60000"),
            ],
        )
        .await;
    patient.settings.max_in_flight = 4;
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(20)));
    let hang = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.set_mode(FaultMode::Blackhole);
    };
    let t = Instant::now();
    let (report, ()) = tokio::join!(drain(&patient), hang);
    assert!(
        t.elapsed() <= Duration::from_millis(2300),
        "{:?}",
        t.elapsed()
    );
    assert!(report.cut > 0, "{report:?}");
    assert_eq!(report.dlq(), 0);
    assert_eq!(report.requeued + report.applied, 60);
    proxy.set_mode(FaultMode::Pass);
    let after = drain_until_empty(&pair, &drainer, 3).await;
    assert_eq!(
        report.applied + after.applied + after.stale,
        60,
        "{after:?}"
    );
    assert!(pair.dlq_messages().await.is_empty());
}

/// Throttling slows the drain down and never drops a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_slows_down_and_drops_nothing() {
    let records: Vec<_> = (0..100)
        .map(|i| record(&format!("t{i}"), 2000, "us-east-1", "x"))
        .collect();
    drain_throttled(&records, &[], 0.5).await;
}

/// The same in attribute merge mode: a throttled read or update is retried in the take after
/// the pause, like item mode's put; nothing is lost or dead-lettered. (A merge is two requests,
/// so a fifth of them throttled fails about as many merges as half of item mode's puts.)
#[tokio::test]
async fn throttling_slows_attribute_merges_and_drops_nothing() {
    let records: Vec<_> = (0..100)
        .map(|i| attribute_record(&format!("t{i}"), "data", 2000))
        .collect();
    drain_throttled(&records, &[("FERRY_MERGE_MODE", "attribute")], 0.2).await;
}

/// Drains `records` (one per key) through a proxy that throttles `fraction` of the requests.
async fn drain_throttled(records: &[ChangeRecord], env: &[(&str, &str)], fraction: f64) {
    let pair = Pair::new().await;
    let proxy = FaultProxy::start(&pair.region.endpoint()).expect("proxy");
    pair.send_chunked(records, 25).await;
    let drainer = pair.drainer_via(&proxy.endpoint(), env).await;
    proxy.set_mode(FaultMode::Throttle { fraction });
    let mut total = ferry_drain::DrainReport::default();
    for _ in 0..8 {
        let r = drain(&drainer).await;
        assert_eq!(r.dlq(), 0, "{r:?}");
        assert!(
            r.destination_reachable,
            "a throttled ping is an answer: {r:?}"
        );
        total.absorb(&r);
        if pair.depth(&pair.buffer_url).await == (0, 0, 0) {
            break;
        }
    }
    assert_eq!(total.applied, records.len() as u64, "{total:?}");
    assert!(total.throttled > 0);
    assert!(proxy.stats().throttled > 0);
    for r in records {
        let stored = pair
            .table()
            .get(&r.key)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored.get("data"), r.image.get("data"), "{:?}", r.key);
    }
    assert!(pair.dlq_messages().await.is_empty());
    assert_eq!(pair.depth(&pair.buffer_url).await, (0, 0, 0));
}

/// An attribute-mode record: `attr` set, with its entry `ts@us-east-1` in the version map.
fn attribute_record(pk: &str, attr: &str, ts: u64) -> ChangeRecord {
    use ferry_core::AttributeValue;
    let mut image = key(pk);
    image.insert(attr.into(), AttributeValue::S(format!("{attr}-value")));
    image.insert(
        "ferry_versions".into(),
        AttributeValue::M(
            [(
                attr.to_string(),
                AttributeValue::S(format!("{ts}@us-east-1")),
            )]
            .into_iter()
            .collect(),
        ),
    );
    ChangeRecord {
        key: key(pk),
        image,
        tombstone: false,
        version: Version::new(ts, "us-east-1"),
        source_region: "us-east-1".into(),
        written_at_ms: ferry_core::clock::system_now_ms(),
    }
}

/// Unreadable messages and a record DynamoDB rejects go to the DLQ with the reason; the rest of
/// the batch is applied and every message is deleted.
#[tokio::test]
async fn poison_among_good_messages() {
    let pair = Pair::new().await;
    let good: Vec<_> = (0..10)
        .map(|i| record(&format!("g{i}"), 2000, "us-east-1", "x"))
        .collect();
    pair.send(&good).await;
    pair.send_raw("this is not a ferry message").await;
    // The right magic with a format this drain does not know.
    let future_format = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b"FRY\x09payload")
    };
    pair.send_raw(&future_format).await;
    let mut more: Vec<_> = (10..20)
        .map(|i| record(&format!("g{i}"), 2000, "us-east-1", "x"))
        .collect();
    // Over DynamoDB's 400 KB item limit: rejected (ValidationException).
    more[4].image.insert(
        "big".into(),
        ferry_core::AttributeValue::S("x".repeat(410 * 1024)),
    );
    pair.send(&more).await;

    let report = drain(&pair.drainer().await).await;
    assert_eq!(report.applied, 19, "{report:?}");
    assert_eq!(report.dlq_messages, 2);
    assert_eq!(report.dlq_records, 1);
    assert_eq!(report.deleted, 4);
    assert_eq!(pair.depth(&pair.buffer_url).await, (0, 0, 0));
    let dlq = pair.dlq_messages().await;
    assert_eq!(dlq.len(), 3);
    let reasons: Vec<&str> = dlq.iter().map(|(_, r)| r.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not base64") || r.contains("bad magic")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unknown buffer format version 9")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("ValidationException") && r.contains("pk=S:g14")),
        "{reasons:?}"
    );
    assert!(dlq.iter().any(|(b, _)| b == "this is not a ferry message"));
}

/// Cross-account: with a role ARN the destination's credentials come from STS `AssumeRole`
/// (moto's), not from the base credentials; the drain writes with them, and cannot write at all
/// when STS does not answer (so its client really goes through the role).
#[tokio::test]
async fn destination_role_is_assumed_through_sts() {
    use aws_sdk_dynamodb::config::ProvideCredentials;
    let pair = Pair::new().await;
    let moto = moto().endpoint();
    let role = "arn:aws:iam::210987654321:role/ferry-destination-writer";
    let extra = [
        ("FERRY_DESTINATION_ROLE_ARN", role),
        ("FERRY_STS_ENDPOINT", moto.as_str()),
    ];
    let map = pair.env(&pair.region.endpoint(), &extra);
    let env = ferry_drain::DrainEnv::from_lookup(move |k| map.get(k).cloned()).expect("env");
    let base = base_config().await;
    let settings = env.destination_client_settings();
    assert_eq!(settings.role_arn.as_deref(), Some(role));
    let config = settings.table_config(&base).await;
    let credentials = config
        .credentials_provider()
        .expect("a provider")
        .provide_credentials()
        .await
        .expect("AssumeRole answered");
    assert_ne!(
        credentials.access_key_id(),
        "test",
        "not the base credentials"
    );
    assert!(
        credentials.session_token().is_some(),
        "temporary credentials"
    );

    pair.send(&[record("x", 2000, "us-east-1", "x")]).await;
    let drainer = pair.drainer_via(&pair.region.endpoint(), &extra).await;
    let report = drain(&drainer).await;
    assert_eq!(report.applied, 1, "{report:?}");

    // STS down: no credentials, so no ping answer, so nothing is received.
    let dead_sts = format!(
        "http://127.0.0.1:{}",
        ferry_sandbox::free_port().expect("port")
    );
    pair.send(&[record("y", 2000, "us-east-1", "y")]).await;
    let drainer = pair
        .drainer_via(
            &pair.region.endpoint(),
            &[
                ("FERRY_DESTINATION_ROLE_ARN", role),
                ("FERRY_STS_ENDPOINT", dead_sts.as_str()),
            ],
        )
        .await;
    let report = drain(&drainer).await;
    assert!(!report.destination_reachable, "{report:?}");
    assert_eq!(report.receives, 0);
    assert!(pair.get("y").await.is_none());
}

/// The stop token ends a drain early, cleanly; two drains running at once share a backlog
/// without losing or dead-lettering anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_token_and_overlapping_drains() {
    let pair = Pair::new().await;
    let mut drainer = pair.drainer().await;
    drainer.settings.budget = Duration::from_secs(20);
    drainer.settings.return_when_idle = false;
    let stop = drainer.settings.stop.clone();
    let t = Instant::now();
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    };
    let (report, ()) = tokio::join!(drain(&drainer), cancel);
    assert_eq!(report.stop_reason, StopReason::Stopped);
    // Well before the 20 s budget; generous, because a loaded CI machine stretches everything.
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());

    let records: Vec<_> = (0..300)
        .map(|i| record(&format!("v{i}"), 2000, "us-east-1", "x"))
        .collect();
    pair.send_chunked(&records, 10).await;
    let mut one = pair.drainer().await;
    one.settings.take_messages = 5;
    let mut two = pair.drainer().await;
    two.settings.take_messages = 5;
    let (a, b) = tokio::join!(drain(&one), drain(&two));
    let mut total = a.clone();
    total.absorb(&b);
    total.absorb(&drain_until_empty(&pair, &one, 3).await);
    // Under load a write may time out (its record is re-queued, and stale when retried if it had
    // landed) and a standard queue (moto's too, under concurrent receives) may deliver a message
    // twice: counts vary, but each key is applied at most once and none is lost.
    assert!(total.applied <= 300 && total.records >= 300, "{total:?}");
    assert_eq!(total.dlq(), 0);
    assert!(a.received > 0 && b.received > 0, "both took a share");
    assert!(total.max_receive_count <= 2, "{total:?}");
    for i in 0..300 {
        let item = pair.get(&format!("v{i}")).await;
        assert_eq!(item.as_ref().and_then(data_of), Some("x"), "v{i}");
    }
}

/// The destination runs the other merge mode. Published on its table (its enqueue does that at
/// start-up): the drain stops before receiving anything, every call, and nothing is applied,
/// received or dead-lettered. Not published, but an item there holds attribute mode's version
/// map: the drain stops at that item and stays stopped. Other shared settings that differ stop
/// it the same way. An unpublished destination of the same mode drains normally.
#[tokio::test]
async fn a_destination_in_the_other_mode_stops_the_drain_before_anything_is_lost() {
    use ferry_core::peer::tags;
    use ferry_core::{AttributeValue, Config, MergeMode};
    let us = "us-east-1";

    // 1. Published mismatch.
    let pair = Pair::new().await;
    pair.send(&[record("a", 2000, us, "x"), record("b", 2000, us, "y")])
        .await;
    let mut theirs = Config::new("eu-west-1", "pk");
    theirs.merge_mode = MergeMode::Attribute;
    let table = pair.table();
    let arn = table.arn().await.expect("arn");
    table.tag(&arn, &tags(&theirs)).await.expect("tag");
    let drainer = pair.drainer().await;
    for _ in 0..2 {
        let report = drain(&drainer).await;
        assert_eq!(report.stop_reason, StopReason::ModeMismatch, "{report:?}");
        assert_eq!((report.received, report.applied, report.dlq()), (0, 0, 0));
    }
    let (reason, why) = drainer.peer.mismatch().expect("stopped");
    assert_eq!(reason, StopReason::ModeMismatch);
    assert!(why.contains("`attribute`"), "{why}");
    assert_eq!(
        pair.depth(&pair.buffer_url).await.0,
        1,
        "the message waits, never received"
    );
    assert_eq!(pair.get("a").await, None);

    // Same mode, other attribute names: a settings mismatch (re-read at every call).
    let mut renamed = Config::new("eu-west-1", "pk");
    renamed.names.ts = "version_ms".into();
    table.tag(&arn, &tags(&renamed)).await.expect("tag");
    let report = drain(&drainer).await;
    assert_eq!(
        report.stop_reason,
        StopReason::SettingsMismatch,
        "{report:?}"
    );
    assert_eq!(report.received, 0);

    // The destination is fixed (it publishes agreeing settings): the same drainer resumes at
    // its next call — no redeploy — and the backlog drains.
    table
        .tag(&arn, &tags(&Config::new("eu-west-1", "pk")))
        .await
        .expect("tag");
    let report = drain(&drainer).await;
    assert!(drainer.peer.mismatch().is_none());
    assert_eq!(
        (report.applied, report.stop_reason),
        (2, StopReason::Idle),
        "{report:?}"
    );

    // 2. Unpublished, but the destination item is one of attribute mode.
    let pair = Pair::new().await;
    let mut merged = item("m", None, "theirs");
    merged.insert(
        "ferry_versions".into(),
        AttributeValue::M(
            [("data".to_string(), AttributeValue::S("5@eu-west-1".into()))]
                .into_iter()
                .collect(),
        ),
    );
    pair.put_local(&merged).await;
    pair.send(&[record("m", 2000, us, "ours")]).await;
    let drainer = pair.drainer().await;
    let report = drain(&drainer).await;
    assert_eq!(report.stop_reason, StopReason::ModeMismatch, "{report:?}");
    assert_eq!((report.applied, report.dlq()), (0, 0));
    assert_eq!(
        pair.get("m").await,
        Some(merged),
        "the item is left as it is"
    );
    // Stopped (for `peer_gate::HOLD`): the next call takes nothing (the record waits).
    let again = drain(&drainer).await;
    assert_eq!(
        (again.stop_reason, again.received),
        (StopReason::ModeMismatch, 0)
    );
    let (visible, inflight, delayed) = pair.depth(&pair.buffer_url).await;
    assert_eq!(visible + inflight + delayed, 1, "nothing lost");
    assert!(pair.dlq_messages().await.is_empty());
}

/// Attribute mode: a record whose own version map cannot be read is poison — it alone goes to
/// the DLQ with the reason — while the other records of the same key are merged and applied.
#[tokio::test]
async fn an_unreadable_version_map_dead_letters_that_record_alone() {
    use ferry_core::AttributeValue;
    let pair = Pair::new().await;
    let with_entry = |pk: &str, attr: &str, entry: AttributeValue| {
        let mut image = key(pk);
        image.insert(attr.into(), AttributeValue::S(format!("{attr}-value")));
        image.insert(
            "ferry_versions".into(),
            AttributeValue::M([(attr.to_string(), entry)].into_iter().collect()),
        );
        ChangeRecord {
            key: key(pk),
            image,
            tombstone: false,
            version: Version::new(2000, "us-east-1"),
            source_region: "us-east-1".into(),
            written_at_ms: ferry_core::clock::system_now_ms(),
        }
    };
    let good = |pk: &str, attr: &str, ts: u64| {
        with_entry(pk, attr, AttributeValue::S(format!("{ts}@us-east-1")))
    };
    // One message: key x's three records (one unreadable), and key y.
    pair.send(&[
        good("x", "a", 1000),
        with_entry("x", "b", AttributeValue::N("12".into())),
        good("x", "c", 3000),
        good("y", "a", 1000),
    ])
    .await;
    let drainer = pair
        .drainer_via(
            &pair.region.endpoint(),
            &[("FERRY_MERGE_MODE", "attribute")],
        )
        .await;
    let report = drain(&drainer).await;
    assert_eq!((report.applied, report.dlq()), (2, 1), "{report:?}");
    assert_ne!(report.stop_reason, StopReason::ModeMismatch);
    let x = pair.get("x").await.expect("x");
    assert!(
        x.contains_key("a") && x.contains_key("c") && !x.contains_key("b"),
        "{x:?}"
    );
    assert!(pair.get("y").await.is_some());
    let dead = pair.dlq_messages().await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].1.contains("unreadable version map"),
        "{:?}",
        dead[0]
    );
    assert_eq!(pair.depth(&pair.buffer_url).await, (0, 0, 0));
}
