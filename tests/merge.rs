//! Attribute merge mode end to end (`docs/attribute-merge.md`, issue #10): two regions update
//! *different* attributes of the same items while cut off from each other. Attribute mode must
//! lose none of those writes and converge; item mode (whole-item LWW) must lose some — the later
//! item wins whole — which is what makes the mode worth its cost.
//!
//! The demo's disjoint workload (`ferry demo --merge … --workload disjoint`) is checked here
//! too, through the library, in both modes.
//!
//! Run: `cargo test -p ferry-e2e --test merge`.

use ferry_aws::{MergeOutcome, Table};
use ferry_core::merge::{write_delta, AttrState, Unversioned};
use ferry_core::{AttributeValue, Config, MergeMode};
use ferry_e2e::*;
use std::time::Duration;

const US: usize = 0;
const EU: usize = 1;
const ITEMS: usize = 20;

/// The application helper of attribute mode: sets one attribute with its own version.
async fn set_attribute(
    table: &Table,
    config: &Config,
    clock: &ferry_core::Clock,
    pk: &str,
    name: &str,
    value: AttributeValue,
) {
    let changes = vec![(name.to_string(), Some(value))];
    let outcome = table
        .merge_into(
            &key(pk),
            |current| {
                write_delta(current, &changes, false, clock(), config)
                    .expect("a readable version map")
            },
            Unversioned::Keep,
            config,
        )
        .await
        .unwrap_or_else(|e| panic!("helper write of {pk}: {e}"));
    assert!(
        matches!(outcome, MergeOutcome::Written { .. }),
        "{pk}: {outcome:?}"
    );
}

/// Writes `name = value` on every item through region `r`'s local endpoint, stamped as the
/// mode's helper stamps.
async fn update_all(cluster: &Cluster, mode: MergeMode, r: usize, name: &str, value: &str) {
    let app = App::of(&cluster.regions[r]);
    for i in 0..ITEMS {
        let pk = format!("item-{i}");
        match mode {
            MergeMode::Attribute => {
                set_attribute(&app.table, &app.config, &app.clock, &pk, name, s(value)).await
            }
            MergeMode::Item => {
                app.update_stamped(&pk, name, s(value)).await;
            }
        }
    }
}

/// Waits until buffers are empty and both regions hold the same visible items, three looks in
/// a row (attribute mode has no item version: `Look::unversioned` is recomputed from the
/// version maps).
async fn converge(cluster: &Cluster, mode: MergeMode) -> Look {
    let config = config(cluster);
    let probe = || async {
        let mut l = look(cluster).await;
        if mode == MergeMode::Attribute {
            l.unversioned = l
                .scans
                .iter()
                .flat_map(|(r, items)| {
                    items
                        .iter()
                        .filter(|i| {
                            AttrState::read(i, &config).map_or(true, |r| !r.unversioned.is_empty())
                        })
                        .map(move |i| (r.clone(), pk_of(i)))
                })
                .collect();
        }
        l
    };
    match poll_converged(Duration::from_secs(40), probe).await {
        Ok(l) => l,
        Err(l) => panic!("{mode} mode: no convergence:\n{}", differences(&l, &config)),
    }
}

/// Runs the scenario in `mode`; returns how many acknowledged attribute writes are missing
/// everywhere after convergence.
async fn lost_updates(mode: MergeMode) -> usize {
    let cluster = start(ClusterOptions {
        merge_mode: mode,
        ..options(2)
    })
    .await;
    update_all(&cluster, mode, US, "name", "seed").await;
    converge(&cluster, mode).await;

    cluster.begin_outage(EU);
    // Disjoint attributes: the address changes in us-east, the contact time in eu-west, later.
    update_all(&cluster, mode, US, "address", "new-address").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    update_all(&cluster, mode, EU, "last_contacted", "today").await;
    cluster.end_outage(EU);

    let l = converge(&cluster, mode).await;
    let mut lost = 0;
    let (_, items) = &l.scans[0];
    for i in 0..ITEMS {
        let pk = format!("item-{i}");
        let it = items.iter().find(|it| pk_of(it) == pk);
        let has = |name: &str, value: &str| it.and_then(|it| it.get(name)) == Some(&s(value));
        lost += usize::from(!has("address", "new-address"))
            + usize::from(!has("last_contacted", "today"));
        assert!(
            has("name", "seed") || mode == MergeMode::Item,
            "{pk}: {it:?}"
        );
    }
    eprintln!("{mode} mode: {lost} of {} attribute writes lost", 2 * ITEMS);
    // The cost per replicated change: item mode writes each record once (one conditional put);
    // attribute mode reads and updates (re-reading after a failed condition).
    let totals = cluster.stats.drain_totals();
    let done: u64 = totals.values().map(|t| t.applied + t.stale).sum();
    let reads: u64 = totals.values().map(|t| t.merge_reads).sum();
    let writes: u64 = totals.values().map(|t| t.merge_writes).sum();
    if mode == MergeMode::Attribute {
        eprintln!(
            "attribute mode cost: {done} records applied or stale, {reads} reads, {writes} updates \
             ({:.2} reads + {:.2} writes per record)",
            reads as f64 / done.max(1) as f64,
            writes as f64 / done.max(1) as f64
        );
        assert!(reads >= done, "every record is read before it is merged");
    }
    assert_eq!(
        cluster.dlq_depth().await,
        0,
        "{mode} mode: nothing dead-lettered"
    );
    cluster.shutdown().await;
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_updates_through_an_outage() {
    let _t = timer("disjoint_updates_through_an_outage");
    let attribute = lost_updates(MergeMode::Attribute).await;
    assert_eq!(attribute, 0, "attribute mode loses no update");
    let item = lost_updates(MergeMode::Item).await;
    // Every eu-west write is later than the us-east one of the same item: each item's address
    // change loses to the later item whole.
    assert_eq!(item, ITEMS, "item mode loses every address change");
}

/// A drain of one mode refuses records of the other: the pair stops, nothing is applied or
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_the_other_mode_stops_the_drain() {
    let _t = timer("a_record_of_the_other_mode_stops_the_drain");
    let cluster = start(ClusterOptions {
        merge_mode: MergeMode::Attribute,
        ..options(2)
    })
    .await;
    // An item-mode record (an item version, no version map), as an item-mode enqueue sends it.
    let config = config(&cluster);
    let version = ferry_core::Version::new(1, cluster.regions[US].name.clone());
    let mut image = item("alien", [("v", n("1"))]);
    version.stamp_into(&mut image, &config.names);
    let record = ferry_core::ChangeRecord {
        key: key("alien"),
        version,
        image,
        tombstone: false,
        source_region: cluster.regions[US].name.clone(),
        written_at_ms: 0,
    };
    let buffer = &cluster
        .buffers
        .iter()
        .find(|b| b.destination == cluster.regions[EU].name)
        .expect("a buffer to eu")
        .buffer;
    for batch in ferry_core::buffer::pack(&[record]).expect("pack") {
        buffer.send_batch(&batch).await.expect("send");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let eu = App::of(&cluster.regions[EU]);
    assert_eq!(
        eu.get_raw("alien").await,
        None,
        "the record of the other mode was not applied"
    );
    assert_eq!(cluster.dlq_depth().await, 0, "nor dead-lettered");
    assert!(
        cluster.backlog().await.iter().any(|(_, _, n)| *n > 0),
        "it stays on the buffer"
    );
    cluster.shutdown().await;
}

/// Regions deployed in different merge modes: each region publishes its settings on its table
/// at start-up, and each drain reads its destination's before receiving anything — so both
/// pairs stop at once, loudly, with nothing applied, nothing received (no receive count burnt),
/// nothing dead-lettered; every write stays in its own region and on its buffer until the
/// configuration is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_in_different_modes_stop_before_replicating() {
    let _t = timer("regions_in_different_modes_stop_before_replicating");
    let cluster = start(ClusterOptions {
        merge_mode: MergeMode::Item,
        merge_mode_overrides: [(EU, MergeMode::Attribute)].into(),
        ..options(2)
    })
    .await;
    update_all(&cluster, MergeMode::Item, US, "address", "us").await;
    update_all(&cluster, MergeMode::Attribute, EU, "last_contacted", "eu").await;
    // Several drain periods (options(2): a drain starts every second or so).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (us, eu) = (App::of(&cluster.regions[US]), App::of(&cluster.regions[EU]));
    for i in 0..ITEMS {
        let pk = format!("item-{i}");
        let here = us
            .get_raw(&pk)
            .await
            .expect("us-east-1 keeps its own write");
        assert!(
            !here.contains_key("last_contacted"),
            "{pk}: nothing came from eu-west-1"
        );
        assert!(
            !here.contains_key(&us.config.names.versions),
            "{pk}: no version map in item mode"
        );
        let there = eu
            .get_raw(&pk)
            .await
            .expect("eu-west-1 keeps its own write");
        assert!(
            !there.contains_key("address"),
            "{pk}: nothing came from us-east-1"
        );
        assert!(
            !there.contains_key(&eu.config.names.ts),
            "{pk}: no item version in attribute mode"
        );
    }
    let totals = cluster.stats.drain_totals();
    for region in [US, EU] {
        let t = &totals[&cluster.regions[region].name];
        assert!(
            t.invocations > 0 && t.mismatched == t.invocations,
            "{region}: {t:?}"
        );
        assert_eq!(
            (t.messages, t.applied, t.dlq),
            (0, 0, 0),
            "{region}: stopped before receiving"
        );
    }
    assert_eq!(cluster.dlq_depth().await, 0, "nothing dead-lettered");
    let backlog = cluster.backlog().await;
    assert!(
        backlog.len() == 2 && backlog.iter().all(|(_, _, n)| *n > 0),
        "every write waits on its buffer (in messages): {backlog:?}"
    );
    cluster.shutdown().await;
}

/// `ferry demo --merge <mode> --workload disjoint --duration 8s --rate 20 --outage 3s`.
async fn disjoint_demo(mode: MergeMode) -> ferry_cli::demo::DemoReport {
    init_tracing();
    let out_dir =
        std::env::temp_dir().join(format!("ferry-merge-demo-{}-{mode}", std::process::id()));
    let report = ferry_cli::demo::run(ferry_cli::demo::DemoOptions {
        regions: 2,
        seed: 1,
        duration_s: 8,
        rate: 20,
        outage_s: 3,
        rtt_ms: 0,
        clock_skew_ms: 0,
        json: true,
        plot: None,
        out_dir: out_dir.clone(),
        converge_timeout_s: 60,
        merge_mode: mode,
        workload: ferry_cli::workload::Workload::Disjoint,
    })
    .await
    .unwrap_or_else(|e| panic!("{mode} demo: {e}"));
    let _ = std::fs::remove_dir_all(&out_dir);
    eprintln!(
        "{mode} demo: {} writes, lost_updates {:?}, {} divergent, {:.2} requests per change",
        report.writes, report.lost_updates, report.divergent_keys, report.requests_per_change
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_counts_lost_updates_in_each_mode() {
    let _t = timer("the_demo_counts_lost_updates_in_each_mode");
    let attribute = disjoint_demo(MergeMode::Attribute).await;
    assert_eq!(attribute.merge_mode, "attribute");
    assert!(attribute.writes > 100, "the workload ran: {attribute:?}");
    assert_eq!(
        attribute.lost_updates,
        Some(0),
        "{:?}",
        attribute.lost_update_examples
    );
    assert_eq!(attribute.divergent_keys, 0);
    assert!(attribute.passed());
    assert_eq!(
        attribute.merge_reads + attribute.merge_writes,
        attribute.apply_requests,
        "attribute mode applies with reads and updates only"
    );
    let item = disjoint_demo(MergeMode::Item).await;
    assert!(
        item.lost_updates.is_some_and(|n| n > 0),
        "item-level LWW loses some disjoint updates: {item:?}"
    );
    assert_eq!(item.divergent_keys, 0);
    assert!(
        item.passed(),
        "item mode's lost updates are reported, not a failure"
    );
}
