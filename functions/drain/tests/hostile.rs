//! Hostile buffer input (issue #17): whoever can send to a buffer cannot make the drain write
//! what the record's own fields contradict, nor bring back a record older than tombstones live.
//! Each refused record goes to the DLQ with the reason; the rest of its message applies.

mod common;

use common::*;
use ferry_aws::{ATTEMPTS_ATTRIBUTE, FIRST_SENT_ATTRIBUTE};
use ferry_core::buffer::pack;
use ferry_core::vet::max_ahead_ms;
use ferry_core::{AttributeValue, Version};
use ferry_drain::drain;

#[tokio::test]
async fn forged_records_go_to_the_dlq_with_the_reason_and_the_rest_applies() {
    let pair = Pair::new().await;
    let now = ferry_core::clock::system_now_ms();
    let honest = record("honest", 5000, SOURCE, "ok");
    // An origin set to the destination: its stream would forward it to every region.
    let spreads = record("spreads", 5000, DESTINATION, "forged");
    // A key that is not its image's key.
    let mut other_key = record("claimed", 5000, SOURCE, "forged");
    other_key
        .image
        .insert("pk".into(), AttributeValue::S("victim".into()));
    // A version far ahead of every clock: it would win every write for a year.
    let ahead = now + 365 * 24 * 3600 * 1000;
    let future = record("future", ahead, SOURCE, "forged");
    // A version that is not its image's.
    let mut relabelled = record("relabelled", 5000, SOURCE, "forged");
    relabelled.version = Version::new(9000, SOURCE);
    pair.send(&[honest, spreads, other_key, future, relabelled])
        .await;

    let report = drain(&pair.drainer().await).await;
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(report.refused, 4, "{report:?}");
    assert_eq!(
        data_of(&pair.get("honest").await.expect("applied")),
        Some("ok")
    );
    for pk in ["spreads", "claimed", "victim", "future", "relabelled"] {
        assert!(pair.get(pk).await.is_none(), "{pk} written");
    }
    let dlq = pair.dlq_messages().await;
    assert_eq!(dlq.len(), 4);
    let reasons: Vec<&str> = dlq.iter().map(|(_, r)| r.as_str()).collect();
    assert!(
        reasons.iter().all(|r| r.starts_with("refused: ")),
        "{reasons:?}"
    );
    for want in [
        "origin is the destination region",
        "is not its image's key",
        &format!(
            "(at most {} s)",
            max_ahead_ms(&ferry_core::Config::new(DESTINATION, "pk")) / 1000
        ),
        "is not its image's",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want}: {reasons:?}"
        );
    }
    assert_eq!(pair.depth(&pair.buffer_url).await, (0, 0, 0));
}

#[tokio::test]
async fn a_record_first_sent_longer_ago_than_tombstones_live_is_not_applied() {
    let pair = Pair::new().await;
    let config = ferry_core::Config::new(DESTINATION, "pk");
    let limit_ms = (config.tombstone_lifetime_s - config.drain_lag_allowance_s) * 1000;
    let first_sent = ferry_core::clock::system_now_ms() - limit_ms - 3_600_000;
    let old = record("old", 5000, SOURCE, "stale");
    for batch in pack(&[old]).expect("pack") {
        let numbers = [(FIRST_SENT_ATTRIBUTE, first_sent), (ATTEMPTS_ATTRIBUTE, 3)];
        let failed = pair.buffer().send_batch_with(&batch, &numbers, 0).await;
        assert!(failed.expect("send").is_empty());
    }
    let report = drain(&pair.drainer().await).await;
    assert_eq!((report.applied, report.refused), (0, 1), "{report:?}");
    assert!(
        pair.get("old").await.is_none(),
        "an expired tombstone's key came back"
    );
    // The DLQ copy keeps its first-sent time: a redrive cannot make it young again.
    let m = pair
        .dlq_buffer()
        .receive_with_attributes(10, 0, Some(0), &[FIRST_SENT_ATTRIBUTE])
        .await
        .expect("receive");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].first_sent_ms(), first_sent);
    let dlq = pair.dlq_messages().await;
    assert!(dlq[0].1.contains("ferry backfill"), "{}", dlq[0].1);
}

#[tokio::test]
async fn a_pending_record_keeps_its_first_sent_time_when_re_queued_and_is_never_dead_lettered() {
    let pair = Pair::new().await;
    pair.put_local(&item("stuck", None, "local")).await;
    pair.send(&[record("stuck", 5000, SOURCE, "replicated")])
        .await;
    let mut drainer = pair.drainer().await;
    drainer.settings.retry.pending_delay_base_s = 0;
    // Long enough for many rounds; the record stays pending all along.
    drainer.settings = drainer.settings.budget(std::time::Duration::from_secs(3));
    drainer.settings.return_when_idle = false;
    let report = drain(&drainer).await;
    assert!(report.pending >= 2, "{report:?}");
    assert_eq!(report.dlq_records, 0, "pending is never the record's fault");
    assert!(report.pending_age_max_ms.is_some(), "{report:?}");
    let back = pair
        .buffer()
        .receive_with_attributes(10, 0, Some(0), &[FIRST_SENT_ATTRIBUTE])
        .await
        .expect("receive");
    assert_eq!(back.len(), 1, "re-queued");
    let first = back[0].number(FIRST_SENT_ATTRIBUTE).expect("carried");
    assert!(first > 0 && first <= back[0].message.sent_at_ms, "{first}");
}
