//! SQS's own faults, between the drain and its buffer (the sandbox's fault proxy in front of
//! moto): per-entry send and delete failures, invalid receipt handles, SQS throttling, answers
//! slower than the visibility timeout, and a settle that runs into the invocation's deadline.
//! Every scenario drives records through the fault, heals it, drains to empty and checks:
//! every key holds its winner, nothing reached the DLQ, and no message's receive count climbed
//! towards the redrive limit.

mod common;

use common::*;
use ferry_aws::Buffer;
use ferry_core::buffer::pack;
use ferry_core::ChangeRecord;
use ferry_drain::{drain, DrainReport, Drainer};
use ferry_sandbox::{FaultMode, FaultProxy, Slow, SqsAction, SqsFaults};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The buffer's redrive policy: SQS dead-letters a message received this many times.
const MAX_RECEIVE_COUNT: u32 = 10;
/// The drains' visibility timeout: short, so what a fault left on the buffer comes back soon.
const VISIBILITY_S: i32 = 3;

/// A pair whose buffer has a redrive policy, and a fault proxy in front of its SQS.
async fn bench() -> (Pair, FaultProxy) {
    let mut pair = Pair::new().await;
    let name = format!("redrive-{}", pair.table_name);
    let queues = Buffer::create_pair(pair.sqs.clone(), &name, &[], Some(MAX_RECEIVE_COUNT))
        .await
        .expect("queues");
    pair.buffer_url = queues.buffer.queue_url;
    pair.dlq_url = queues.dlq.queue_url;
    let proxy = FaultProxy::start(&moto().endpoint()).expect("proxy");
    (pair, proxy)
}

/// A drainer whose SQS calls go through `proxy`.
async fn drainer_through(pair: &Pair, proxy: &FaultProxy, budget_s: &str) -> Drainer {
    let sqs = proxy.endpoint();
    let extra = [
        ("FERRY_SQS_ENDPOINT", sqs.as_str()),
        ("FERRY_DRAIN_BUDGET_S", budget_s),
    ];
    let mut drainer = pair.drainer_via(&pair.region.endpoint(), &extra).await;
    drainer.settings.visibility_timeout_s = VISIBILITY_S;
    drainer.settings.retry.pending_delay_max_s = 1;
    drainer
}

/// Three versions of each of `keys` keys, shuffled into messages of three records.
fn records(keys: usize) -> (Vec<ChangeRecord>, BTreeMap<String, String>) {
    let base = ferry_core::clock::system_now_ms() - 60_000;
    let mut out = Vec::new();
    let mut winners = BTreeMap::new();
    for round in 0..3u64 {
        for k in 0..keys {
            let pk = format!("k{k}");
            let data = format!("k{k}-v{round}");
            out.push(record(&pk, base + round * 1000 + k as u64, SOURCE, &data));
            winners.insert(pk, data);
        }
    }
    out.reverse();
    (out, winners)
}

fn faults(f: impl FnOnce(&mut SqsFaults)) -> FaultMode {
    let mut faults = SqsFaults::default();
    f(&mut faults);
    FaultMode::Sqs(faults)
}

/// Runs `runs` drains under the fault now set.
async fn drain_under_fault(drainer: &Drainer, runs: usize) -> DrainReport {
    let mut total = DrainReport::default();
    for _ in 0..runs {
        total.absorb(&drain(drainer).await);
    }
    total
}

/// With the fault healed: drains until the buffer is empty, waiting out the visibility of
/// what the fault left in flight (at most a minute).
async fn heal_and_drain(pair: &Pair, proxy: &FaultProxy, drainer: &Drainer) -> DrainReport {
    proxy.set_mode(FaultMode::Pass);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut total = DrainReport::default();
    loop {
        total.absorb(&drain(drainer).await);
        if pair.depth(&pair.buffer_url).await == (0, 0, 0) {
            return total;
        }
        assert!(
            Instant::now() < deadline,
            "the buffer is not empty a minute after the heal: {:?}, {total:?}",
            pair.depth(&pair.buffer_url).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Nothing lost, nothing healthy dead-lettered, no receive count near the redrive limit.
async fn assert_converged(
    pair: &Pair,
    winners: &BTreeMap<String, String>,
    reports: &[&DrainReport],
) {
    for (pk, data) in winners {
        let item = pair.get(pk).await;
        assert_eq!(
            item.as_ref().and_then(data_of),
            Some(data.as_str()),
            "{pk} lost its winner"
        );
    }
    let dlq = pair.dlq_messages().await;
    assert!(dlq.is_empty(), "dead-lettered: {dlq:?}");
    for r in reports {
        assert_eq!(r.dlq(), 0, "{r:?}");
        assert!(
            r.max_receive_count <= MAX_RECEIVE_COUNT / 2,
            "a receive count climbed to {}: {r:?}",
            r.max_receive_count
        );
    }
}

fn outcome(name: &str, fault: &DrainReport, healed: &DrainReport) {
    eprintln!(
        "scenario {name}: under fault {{records {}, applied {}, requeued {}, deleted {}, left {}, \
         settle_timeouts {}, max_receive_count {}}}; healed {{records {}, applied {}, stale {}, \
         deleted {}, max_receive_count {}}}",
        fault.records,
        fault.applied,
        fault.requeued,
        fault.deleted,
        fault.left,
        fault.settle_timeouts,
        fault.max_receive_count,
        healed.records,
        healed.applied,
        healed.stale,
        healed.deleted,
        healed.max_receive_count
    );
}

#[tokio::test]
async fn delete_entries_failing_leave_messages_that_come_back() {
    let (pair, proxy) = bench().await;
    let (records, winners) = records(12);
    pair.send_chunked(&records, 3).await;
    let drainer = drainer_through(&pair, &proxy, "4").await;

    proxy.set_mode(faults(|f| f.delete_entries = 0.5));
    let under = drain_under_fault(&drainer, 1).await;
    assert!(under.left > 0, "some deletes failed: {under:?}");
    assert_eq!(under.applied, 12, "{under:?}");
    let healed = heal_and_drain(&pair, &proxy, &drainer).await;
    outcome("delete_entries 0.5", &under, &healed);
    assert_converged(&pair, &winners, &[&under, &healed]).await;
    assert!(proxy.stats().failed_entries > 0);
}

#[tokio::test]
async fn invalid_receipt_handles_leave_messages_that_come_back() {
    let (pair, proxy) = bench().await;
    let (records, winners) = records(9);
    pair.send_chunked(&records, 3).await;
    let drainer = drainer_through(&pair, &proxy, "4").await;

    proxy.set_mode(faults(|f| f.invalid_receipts = 1.0));
    let under = drain_under_fault(&drainer, 1).await;
    assert_eq!(under.deleted, 0, "{under:?}");
    assert_eq!(under.left, under.received, "{under:?}");
    let healed = heal_and_drain(&pair, &proxy, &drainer).await;
    outcome("invalid_receipts 1.0", &under, &healed);
    assert_converged(&pair, &winners, &[&under, &healed]).await;
    assert_eq!(
        healed.applied, 0,
        "every winner was already written: {healed:?}"
    );
}

#[tokio::test]
async fn requeue_entries_failing_leave_the_pending_records_on_the_buffer() {
    let (pair, proxy) = bench().await;
    let (records, winners) = records(8);
    // Unversioned destination items: every record is pending and re-queued until stamped.
    for k in 0..8 {
        pair.put_local(&item(&format!("k{k}"), None, "local")).await;
    }
    pair.send_chunked(&records, 3).await;
    let drainer = drainer_through(&pair, &proxy, "3").await;

    proxy.set_mode(faults(|f| f.send_entries = 1.0));
    let under = drain_under_fault(&drainer, 1).await;
    assert_eq!(under.requeued, 0, "{under:?}");
    assert!(under.pending > 0 && under.left > 0, "{under:?}");
    proxy.set_mode(faults(|f| f.send_entries = 0.5));
    let half = drain_under_fault(&drainer, 2).await;
    let mut under_all = under.clone();
    under_all.absorb(&half);
    // The destination stamps its items with an old version: the records now win.
    for k in 0..8 {
        let v = ferry_core::Version::new(1, "eu-west-1");
        pair.stamp(&format!("k{k}"), &v).await;
    }
    let healed = heal_and_drain(&pair, &proxy, &drainer).await;
    outcome("send_entries 1.0 then 0.5 on re-queue", &under_all, &healed);
    assert_converged(&pair, &winners, &[&under_all, &healed]).await;
}

#[tokio::test]
async fn sqs_throttling_loses_nothing() {
    let (pair, proxy) = bench().await;
    let (records, winners) = records(12);
    pair.send_chunked(&records, 3).await;
    let drainer = drainer_through(&pair, &proxy, "4").await;

    proxy.set_mode(faults(|f| f.throttle = 0.4));
    let under = drain_under_fault(&drainer, 2).await;
    assert!(proxy.stats().throttled > 0);
    let healed = heal_and_drain(&pair, &proxy, &drainer).await;
    outcome("throttle 0.4", &under, &healed);
    assert_converged(&pair, &winners, &[&under, &healed]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_slower_than_the_visibility_timeout_hands_the_take_to_a_second_drain() {
    let (pair, proxy) = bench().await;
    let (records, winners) = records(6);
    pair.send_chunked(&records, 3).await;
    // The first drain's receives answer after the messages are visible again.
    let slow = Slow {
        action: Some(SqsAction::ReceiveMessage),
        before: Duration::ZERO,
        after: Duration::from_secs(VISIBILITY_S as u64 + 1),
    };
    proxy.set_mode(faults(|f| f.slow = Some(slow)));
    let first = drainer_through(&pair, &proxy, "8").await;
    let mut second = pair.drainer().await;
    second.settings.visibility_timeout_s = VISIBILITY_S;

    let first_run = tokio::spawn(async move { drain(&first).await });
    // The second drain goes straight to SQS once the first has received.
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.stats().held == 0 {
        assert!(Instant::now() < deadline, "the first drain never received");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(VISIBILITY_S as u64 * 1000 + 300)).await;
    let second_report = drain(&second).await;
    let first_report = first_run.await.expect("first drain");
    assert!(second_report.received > 0, "{second_report:?}");
    assert!(first_report.received > 0, "{first_report:?}");

    let healed = heal_and_drain(&pair, &proxy, &second).await;
    let mut both = first_report.clone();
    both.absorb(&second_report);
    outcome("receive slower than the visibility timeout", &both, &healed);
    assert_converged(&pair, &winners, &[&first_report, &second_report, &healed]).await;
}

#[tokio::test]
async fn a_slow_sqs_cannot_keep_settle_past_the_invocation_deadline() {
    let (pair, proxy) = bench().await;
    let (records, winners) = records(6);
    pair.send_chunked(&records, 3).await;
    let budget = Duration::from_secs(3);
    let drainer = drainer_through(&pair, &proxy, "3").await;

    // Deletes hang far longer than the invocation (an SQS attempt may take 30 s).
    let slow = Slow {
        action: Some(SqsAction::DeleteMessageBatch),
        before: Duration::from_secs(120),
        after: Duration::ZERO,
    };
    proxy.set_mode(faults(|f| f.slow = Some(slow)));
    let started = Instant::now();
    let under = drain(&drainer).await;
    let took = started.elapsed();
    assert!(under.settle_timeouts >= 1, "{under:?}");
    assert_eq!(under.deleted, 0, "{under:?}");
    assert_eq!(
        under.left, under.received,
        "what settle abandoned is left: {under:?}"
    );
    // Generous for a loaded machine, far below the 120 s the delete would have taken.
    assert!(took < budget + Duration::from_secs(10), "took {took:?}");

    let healed = heal_and_drain(&pair, &proxy, &drainer).await;
    outcome("delete slower than the deadline", &under, &healed);
    assert_converged(&pair, &winners, &[&under, &healed]).await;
    assert!(healed.max_receive_count <= 2, "{healed:?}");
}

/// Receives every message of the buffer, without settling, until each was handed out `n` times:
/// what `n` drains killed before their settle leave behind.
async fn receive_unsettled(buffer: &Buffer, messages: usize, n: u32) {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    while counts.len() < messages || counts.values().any(|c| *c < n) {
        for m in buffer
            .receive_with_attributes(10, 0, Some(0), &[])
            .await
            .expect("receive")
        {
            counts.insert(m.message.message_id, m.message.receive_count);
        }
    }
    assert!(counts.values().all(|c| *c == n), "{counts:?}");
}

/// Drains that end before settling (killed, out of time, out of memory) leave a message at its
/// last delivery before the redrive limit: the drain that gets it renews it and applies its
/// records (from the copy), and
/// nothing reaches the DLQ. A message received five times the limit across its renewals is a
/// crash loop: dead-lettered, saying so, not left to the redrive policy's silence.
#[tokio::test]
async fn worn_messages_are_renewed_and_a_crash_loop_is_dead_lettered_with_its_reason() {
    let (pair, proxy) = bench().await;
    let (records, winners) = records(3);
    pair.send_chunked(&records, 3).await;
    receive_unsettled(&pair.buffer(), 3, MAX_RECEIVE_COUNT - 1).await;
    let mut drainer = drainer_through(&pair, &proxy, "3").await;
    drainer.settings.max_receive_count = Some(MAX_RECEIVE_COUNT);
    let healed = heal_and_drain(&pair, &proxy, &drainer).await;
    assert_eq!(healed.renewed, 3, "{healed:?}");
    for (pk, data) in &winners {
        assert_eq!(
            pair.get(pk).await.as_ref().and_then(data_of),
            Some(data.as_str())
        );
    }
    assert!(pair.dlq_messages().await.is_empty());

    // A copy that already carries 45 receives: the drain's, its tenth, makes 55 ≥ 5 × 10.
    let looping = pack(&[record("loop", 1, SOURCE, "x")]).expect("pack");
    let carried = [(ferry_aws::renew::RECEIVES_ATTRIBUTE, 45u64)];
    let failed = pair
        .buffer()
        .send_batch_with(&looping[0], &carried, 0)
        .await;
    assert_eq!(failed.expect("send"), Vec::<usize>::new());
    receive_unsettled(&pair.buffer(), 1, MAX_RECEIVE_COUNT - 1).await;
    let looped = heal_and_drain(&pair, &proxy, &drainer).await;
    assert_eq!((looped.dlq_messages, looped.applied), (1, 0), "{looped:?}");
    let dlq = pair.dlq_messages().await;
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].1.contains("received 55 times"), "{dlq:?}");
}
