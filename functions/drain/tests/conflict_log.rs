//! The conflict log as the drain writes it (issue #19), on the emulators: a conflict is kept
//! with both versions and the losing image; a log that is missing loses its entries (counted)
//! while replication goes on and nothing is left pending; the cap per invocation leaves the
//! rest out (counted); without a conflict the log is never written.

mod common;

use common::{data_of, drain_until_empty, item, key, record, Pair, DESTINATION, SOURCE};
use ferry_aws::{ConflictLog, Table};
use ferry_core::conflict::{log_table_name, Entry, EXPIRES_AT, ID};
use ferry_core::Version;
use ferry_drain::DrainReport;
use ferry_sandbox::TableSpec;

/// A pair whose destination has a conflict table (`with_log`), and its drainer's environment.
async fn pair_with_log(with_log: bool) -> (Pair, String) {
    let pair = Pair::new().await;
    let log = log_table_name(&pair.table_name);
    if with_log {
        pair.region
            .create_table(&TableSpec::new(&log, ID).with_ttl_attribute(EXPIRES_AT))
            .await
            .expect("conflict table");
    }
    (pair, log)
}

/// Drains the pair until its buffer is empty, keeping conflicts in `log`, with `extra`
/// settings.
async fn drain_with_log(pair: &Pair, log: &str, extra: &[(&str, &str)]) -> DrainReport {
    let env: Vec<(&str, &str)> = [("FERRY_CONFLICT_TABLE", log)]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let drainer = pair.drainer_via(&pair.region.endpoint(), &env).await;
    drain_until_empty(pair, &drainer, 3).await
}

/// `n` keys held by a newer eu version, and a losing us record for each plus one record that
/// applies.
async fn plant_conflicts(pair: &Pair, n: usize) {
    let mut records = Vec::new();
    for i in 0..n {
        let pk = format!("c{i}");
        pair.put_local(&item(
            &pk,
            Some(&Version::new(3000, DESTINATION)),
            "eu wins",
        ))
        .await;
        records.push(record(&pk, 2000, SOURCE, "us loses"));
    }
    records.push(record("plain", 2000, SOURCE, "applied"));
    pair.send(&records).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_is_kept_with_both_versions_and_the_losing_image() {
    let (pair, log) = pair_with_log(true).await;
    plant_conflicts(&pair, 1).await;
    let report = drain_with_log(&pair, &log, &[]).await;
    assert_eq!((report.conflicts, report.applied), (1, 1), "{report:?}");
    assert_eq!(report.conflicts_logged, 1, "{report:?}");
    assert_eq!(
        (report.conflict_log_errors, report.conflicts_unlogged),
        (0, 0)
    );
    let entries = ConflictLog::new(Table::new(pair.ddb.clone(), log))
        .scan()
        .await
        .expect("scan the log");
    let entries: Vec<Entry> = entries.into_iter().map(|e| e.expect("readable")).collect();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.key, key("c0"));
    assert_eq!(e.winner, Version::new(3000, DESTINATION));
    assert_eq!(e.loser, Version::new(2000, SOURCE));
    assert_eq!(
        (e.source_region.as_str(), e.region.as_str()),
        (SOURCE, DESTINATION)
    );
    assert_eq!(e.loser_image.as_ref().and_then(data_of), Some("us loses"));
    assert!(e.reappliable());
    assert_eq!(data_of(&pair.get("c0").await.expect("c0")), Some("eu wins"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_log_loses_entries_but_never_replication() {
    let (pair, log) = pair_with_log(false).await;
    plant_conflicts(&pair, 3).await;
    let report = drain_with_log(&pair, &log, &[]).await;
    assert_eq!((report.conflicts, report.applied), (3, 1), "{report:?}");
    assert_eq!(report.conflicts_logged, 0);
    assert_eq!(
        report.conflict_log_errors, 3,
        "every entry counted as lost: {report:?}"
    );
    assert_eq!(
        (report.pending, report.requeued, report.dlq()),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!(
        pair.depth(&pair.buffer_url).await,
        (0, 0, 0),
        "every message deleted"
    );
    assert_eq!(
        data_of(&pair.get("plain").await.expect("plain")),
        Some("applied")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cap_leaves_the_rest_out_and_no_conflict_costs_nothing() {
    let (pair, log) = pair_with_log(true).await;
    plant_conflicts(&pair, 5).await;
    let report = drain_with_log(&pair, &log, &[("FERRY_CONFLICT_LOG_MAX", "2")]).await;
    assert_eq!(report.conflicts, 5, "{report:?}");
    assert_eq!(
        (report.conflicts_logged, report.conflicts_unlogged),
        (2, 3),
        "{report:?}"
    );
    let logged = ConflictLog::new(Table::new(pair.ddb.clone(), log))
        .scan()
        .await
        .expect("scan");
    assert_eq!(logged.len(), 2);

    // No conflict, no request: a log that is configured but missing is never tried (a write
    // would have failed and been counted).
    let (pair, log) = pair_with_log(false).await;
    let records: Vec<_> = (0..20)
        .map(|i| record(&format!("k{i}"), 2000, SOURCE, "applied"))
        .collect();
    pair.send(&records).await;
    let report = drain_with_log(&pair, &log, &[]).await;
    assert_eq!((report.applied, report.conflicts), (20, 0), "{report:?}");
    assert_eq!(
        report.conflicts_logged + report.conflict_log_errors + report.conflicts_unlogged,
        0,
        "{report:?}"
    );
}

/// An attribute-mode image of `pk`: each `(attribute, value, version)` with its map entry.
fn attribute_image(pk: &str, attrs: &[(&str, &str, &str)]) -> ferry_core::Item {
    use ferry_core::AttributeValue as V;
    let mut image = key(pk);
    let mut map = ferry_core::Item::new();
    for (name, value, version) in attrs {
        image.insert(name.to_string(), V::S(value.to_string()));
        map.insert(name.to_string(), V::S(version.to_string()));
    }
    image.insert("ferry_versions".into(), V::M(map));
    image
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_merge_logs_the_values_it_merged_away() {
    let (pair, log) = pair_with_log(true).await;
    // eu holds a newer status and an older note than us's record.
    pair.put_local(&attribute_image(
        "a",
        &[
            ("status", "eu status", "3000@eu-west-1"),
            ("note", "eu note", "500@eu-west-1"),
        ],
    ))
    .await;
    let record = ferry_core::ChangeRecord {
        key: key("a"),
        image: attribute_image(
            "a",
            &[
                ("status", "us status", "2000@us-east-1"),
                ("note", "us note", "2000@us-east-1"),
            ],
        ),
        tombstone: false,
        version: Version::new(2000, SOURCE),
        source_region: SOURCE.into(),
        written_at_ms: ferry_core::clock::system_now_ms(),
    };
    pair.send(&[record]).await;
    let report = drain_with_log(&pair, &log, &[("FERRY_MERGE_MODE", "attribute")]).await;
    assert_eq!(
        (report.applied, report.conflicts_logged),
        (1, 1),
        "{report:?}"
    );
    let entries = ConflictLog::new(Table::new(pair.ddb.clone(), log))
        .scan()
        .await
        .expect("scan the log");
    let e = entries[0].clone().expect("readable");
    assert_eq!(e.merged_away, ["status"], "the note won, the status lost");
    assert_eq!(e.winner, Version::new(3000, DESTINATION));
    assert!(!e.reappliable());
    let stored = pair.get("a").await.expect("a");
    assert_eq!(
        stored["note"],
        ferry_core::AttributeValue::S("us note".into())
    );
    assert_eq!(
        stored["status"],
        ferry_core::AttributeValue::S("eu status".into())
    );
}
