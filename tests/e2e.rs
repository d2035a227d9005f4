//! Ferry end to end: whole multi-region clusters on loopback (`ferry_cli::cluster`: per region
//! an embedded DynamoDB with its stream, buffers and DLQs in the SQS emulator, the real enqueue
//! and drain handlers), driven the way applications and failures drive them.
//!
//! Every scenario starts its own cluster and ends by waiting — polling, never sleeping — for
//! convergence: every buffer empty and every region holding the same items, versions included,
//! tombstones read as absent, nothing left unstamped. Then it checks that nothing was lost (each
//! key shows the last write of a region that wrote it; for keys with one writer, exactly its
//! last write) and that the DLQ is empty unless the scenario put poison in.
//!
//! Run: `cargo test -p ferry-e2e --test e2e` (logs: `RUST_LOG=ferry_drain=info,...`).

use ferry_core::buffer::FORMAT_VERSION;
use ferry_core::{AttributeValue, Item, Version};
use ferry_e2e::*;
use ferry_sandbox::FaultMode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const US: usize = 0;
const EU: usize = 1;

fn ledger() -> Arc<Mutex<Ledger>> {
    Arc::new(Mutex::new(Ledger::default()))
}

/// A chain of writes to one key handed from region to region: each write is made only once
/// every region shows the previous one, so each write has seen all earlier ones and the last
/// must survive exactly (causality across regions). Returns the expected final application
/// view (`None`: deleted).
async fn handoff_chain(cluster: &Cluster, pk: &str, steps: usize) -> Option<Item> {
    let apps = apps(cluster);
    let mut expected: Option<Item> = None;
    for step in 0..steps {
        let app = &apps[step % apps.len()];
        let value = item(
            pk,
            [
                ("w", n(&(900_000 + step).to_string())),
                ("by", s(&app.region)),
            ],
        );
        expected = match step % 4 {
            0 => {
                app.put_plain(value.clone()).await;
                Some(value)
            }
            1 => {
                app.put_stamped(value.clone()).await;
                Some(value)
            }
            2 => {
                app.delete_hard(pk).await;
                None
            }
            _ => {
                app.update_plain(pk, "w", n(&(900_000 + step).to_string()))
                    .await;
                Some(item(pk, [("w", n(&(900_000 + step).to_string()))]))
            }
        };
        let want = expected.clone();
        let config = config(cluster);
        eventually(
            CONVERGE_TIMEOUT,
            &format!("{pk} step {step} everywhere"),
            || {
                let apps = apps.clone();
                let want = want.clone();
                let config = config.clone();
                async move {
                    for a in &apps {
                        let got = a.get_raw(pk).await;
                        let visible = got.as_ref().filter(|i| !config.is_tombstone(i));
                        // Stamped, so the next region's write sees a version.
                        if got
                            .as_ref()
                            .is_some_and(|i| version_of(i, &config).is_none())
                        {
                            return None;
                        }
                        if visible.map(|i| app_view(i, &config)) != want {
                            return None;
                        }
                    }
                    Some(())
                }
            },
        )
        .await;
    }
    expected
}

fn assert_final(l: &Look, cluster: &Cluster, pk: &str, want: &Option<Item>) {
    let config = config(cluster);
    for (region, items) in &l.scans {
        let got = items
            .iter()
            .find(|i| pk_of(i) == pk && !config.is_tombstone(i))
            .map(|i| app_view(i, &config));
        assert_eq!(
            &got, want,
            "{region}: {pk} must show the chain's last write"
        );
    }
}

async fn concurrent_writes(regions: usize, seed: u64) {
    let t = Instant::now();
    let cluster = start(options(regions)).await;
    let ledger = ledger();
    let apps = apps(&cluster);
    Workload::new(seed, 12, 10, 80).run(&apps, &ledger).await;
    let want = handoff_chain(&cluster, "chain", regions * 4).await;
    // A second burst on the same keys after the first has had time to spread.
    Workload::new(seed + 1, 12, 10, 40)
        .run(&apps, &ledger)
        .await;
    let l = assert_converged_without_loss(&cluster, &ledger).await;
    assert_final(&l, &cluster, "chain", &want);
    let enq = cluster.stats.enqueue_totals();
    let stamped: u64 = enq.values().map(|e| e.stamped + e.tombstoned).sum();
    assert!(
        stamped > 0,
        "unstamped writes and hard deletes were stamped"
    );
    eprintln!(
        "{regions} regions: {} writes, {} items, {:?}, {} s",
        lock(&ledger).writes,
        l.comparison.matching,
        cluster.stats.drain_totals(),
        t.elapsed().as_secs_f64()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_regions_concurrent_writes() {
    let _t = timer("two_regions_concurrent_writes");
    concurrent_writes(2, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_regions_concurrent_writes() {
    let _t = timer("three_regions_concurrent_writes");
    concurrent_writes(3, 2).await;
}

/// One region is cut off while applications on both sides keep writing; when it returns,
/// everything it missed and everything it wrote arrives by itself.
#[tokio::test(flavor = "multi_thread")]
async fn outage_with_writes_on_both_sides() {
    let _t = timer("outage_with_writes_on_both_sides");
    let cluster = start(options(2)).await;
    let ledger = ledger();
    let apps = apps(&cluster);
    Workload::new(10, 8, 8, 30)
        .prefix("before")
        .run(&apps, &ledger)
        .await;
    wait_converged(&cluster, CONVERGE_TIMEOUT).await;

    cluster.begin_outage(EU);
    Workload::new(11, 8, 8, 60)
        .prefix("during")
        .run(&apps, &ledger)
        .await;
    Workload::new(12, 8, 8, 30)
        .prefix("before")
        .run(&apps, &ledger)
        .await;
    // The writes into the live region pile up in the buffer to the cut-off one.
    let (us, eu) = (
        cluster.regions[US].name.clone(),
        cluster.regions[EU].name.clone(),
    );
    eventually(
        CONVERGE_TIMEOUT,
        "a backlog towards the cut-off region",
        || async {
            let b = cluster.backlog().await;
            b.iter()
                .any(|(s, d, n)| *s == us && *d == eu && *n > 0)
                .then_some(())
        },
    )
    .await;
    let crossed: Vec<String> = cluster.regions[EU]
        .table(TABLE)
        .scan_all()
        .await
        .expect("scan")
        .iter()
        .map(pk_of)
        .filter(|pk| pk.starts_with(&format!("during-own-{us}")))
        .collect();
    assert!(
        crossed.is_empty(),
        "nothing crosses into a cut-off region: {crossed:?}"
    );
    cluster.end_outage(EU);

    assert_converged_without_loss(&cluster, &ledger).await;
    cluster.shutdown().await;
}

/// An outage several drain periods long, with writes in every region throughout: the drains
/// into the cut-off region find it unreachable period after period without burning receive
/// counts (nothing reaches a DLQ), and everything converges after it returns.
#[tokio::test(flavor = "multi_thread")]
async fn outage_longer_than_drain_period() {
    let _t = timer("outage_longer_than_drain_period");
    let options = options(3);
    let (period, budget) = (options.drain_period, options.drain_budget);
    let cluster = start(options).await;
    let ledger = ledger();
    let apps = apps(&cluster);
    let cut = 2;
    let cut_name = cluster.regions[cut].name.clone();
    cluster.begin_outage(cut);
    let outage = period * 6;
    let began = Instant::now();
    let mut round = 0;
    // Once every invocation that started before the outage is over (two budgets), no drain
    // may hold a message for the cut-off region: drains ping before they receive, so receive
    // counts are not burnt while the destination is down.
    let mut held = Vec::new();
    while began.elapsed() < outage {
        Workload::new(100 + round, 6, 6, 15)
            .prefix(&format!("r{}", round % 3))
            .run(&apps, &ledger)
            .await;
        round += 1;
        if began.elapsed() > budget * 2 {
            for b in cluster.buffers.iter().filter(|b| b.destination == cut_name) {
                held.push(in_flight(&b.buffer).await);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let unreachable = cluster.stats.drain_totals()[&cut_name].unreachable;
    let backlog: u64 = cluster
        .backlog()
        .await
        .iter()
        .filter(|b| b.1 == cut_name)
        .map(|b| b.2)
        .sum();
    cluster.end_outage(cut);
    assert!(
        unreachable >= 2,
        "drains into the cut-off region found it unreachable ({unreachable} times)"
    );
    assert!(
        backlog > 0,
        "writes for the cut-off region waited in its buffers"
    );
    eprintln!("in-flight samples during the outage: {}", held.len());
    assert!(!held.is_empty());
    assert!(
        held.iter().all(|n| *n == 0),
        "messages for the cut-off region were taken while it was down: in flight {held:?}"
    );
    assert_converged_without_loss(&cluster, &ledger).await;
    cluster.shutdown().await;
}

/// Old packed messages sent again, duplicated and out of order, into both buffers: every one
/// ends stale, never regresses an item, never resurrects a deleted one.
#[tokio::test(flavor = "multi_thread")]
async fn duplicates_and_reordering() {
    let _t = timer("duplicates_and_reordering");
    let cluster = start(options(2)).await;
    let config = config(&cluster);
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);

    // Three versions of one key, each replicated before the next.
    let mut versions = Vec::new();
    for w in 1..=3 {
        us.put_stamped(item("dup", [("w", n(&w.to_string()))]))
            .await;
        let raw = us.get_raw("dup").await.expect("just written");
        let v = version_of(&raw, &config).expect("stamped");
        eventually(CONVERGE_TIMEOUT, "dup replicated", || async {
            let got = eu.get_raw("dup").await?;
            (version_of(&got, &config)? == v).then_some(())
        })
        .await;
        versions.push(raw);
    }
    // A key written unstamped (Ferry stamps it), then deleted (Ferry tombstones it).
    eu.put_plain(item("gone", [("w", n("1"))])).await;
    let gone_v1 = eventually(CONVERGE_TIMEOUT, "gone stamped and replicated", || async {
        let here = eu.get_raw("gone").await?;
        let there = us.get_raw("gone").await?;
        (version_of(&here, &config).is_some() && here == there).then_some(here)
    })
    .await;
    eu.delete_hard("gone").await;
    wait_converged(&cluster, CONVERGE_TIMEOUT).await;
    let latest = us.get_raw("dup").await.expect("dup");
    let latest_v = version_of(&latest, &config).expect("versioned");
    let stale_before: u64 = cluster.stats.drain_totals().values().map(|d| d.stale).sum();

    // Replays: newest first, oldest last, duplicates, mixed in one message, both directions.
    let r = |i: &Item, src: &str| record_of(i, src, &config);
    let (usn, eun) = (us.region.clone(), eu.region.clone());
    let mut to_eu = Vec::new();
    to_eu.extend(packed_bodies(&[r(&versions[2], &usn)]));
    to_eu.extend(packed_bodies(&[r(&versions[0], &usn)]));
    to_eu.extend(packed_bodies(&[
        r(&versions[1], &usn),
        r(&versions[0], &usn),
    ]));
    to_eu.extend(packed_bodies(&[
        r(&versions[2], &usn),
        r(&versions[2], &usn),
    ]));
    to_eu.extend(packed_bodies(&[r(&versions[0], &usn)]));
    let mut to_us = Vec::new();
    to_us.extend(packed_bodies(&[r(&gone_v1, &eun), r(&gone_v1, &eun)]));
    // (Never a us-east-1 version to us-east-1: a drain refuses a region's own version, which
    // its stream would forward to every region, `ferry_core::vet`.)
    to_us.extend(packed_bodies(&[r(&gone_v1, &eun)]));
    to_us.extend(packed_bodies(&[r(&gone_v1, &eun)]));
    let injected = 5 + 4;
    send_bodies(&pair(&cluster, &usn, &eun).buffer, &to_eu).await;
    send_bodies(&pair(&cluster, &eun, &usn).buffer, &to_us).await;

    // While they drain, no region ever shows an older version or the deleted key.
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        for a in [us, eu] {
            let got = a.get_raw("dup").await.expect("dup never disappears");
            let v = version_of(&got, &config).expect("versioned");
            assert!(
                v >= latest_v,
                "{}: dup regressed to {v} (was {latest_v})",
                a.region
            );
            assert!(
                a.get("gone").await.is_none(),
                "{}: gone came back",
                a.region
            );
        }
        let backlog: u64 = cluster.backlog().await.iter().map(|b| b.2).sum();
        let stale: u64 = cluster.stats.drain_totals().values().map(|d| d.stale).sum();
        if backlog == 0 && stale > stale_before {
            break;
        }
        assert!(Instant::now() < deadline, "the replays did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let l = wait_converged(&cluster, CONVERGE_TIMEOUT).await;
    for (region, items) in &l.scans {
        let dup = items.iter().find(|i| pk_of(i) == "dup").expect("dup");
        assert_eq!(dup, &latest, "{region}: dup is the latest version, exactly");
        let gone = items.iter().find(|i| pk_of(i) == "gone");
        assert!(
            gone.is_some_and(|g| config.is_tombstone(g)),
            "{region}: gone stays a tombstone: {gone:?}"
        );
    }
    let d = cluster.stats.drain_totals();
    let applied_after: u64 = d.values().map(|t| t.stale + t.applied + t.conflicts).sum();
    eprintln!("replays: {injected} messages; drain totals {d:?}; applied+stale {applied_after}");
    assert_eq!(cluster.dlq_depth().await, 0);
    cluster.shutdown().await;
}

/// Half of every request to every region's table answered with
/// `ProvisionedThroughputExceededException` for the whole run: replication slows down, drops
/// nothing, dead-letters nothing.
#[tokio::test(flavor = "multi_thread")]
async fn throttling_drops_nothing() {
    let _t = timer("throttling_drops_nothing");
    let cluster = start(options(2)).await;
    for r in &cluster.regions {
        r.proxy.set_mode(FaultMode::Throttle { fraction: 0.5 });
    }
    let ledger = ledger();
    Workload::new(20, 10, 15, 120)
        .run(&apps(&cluster), &ledger)
        .await;
    assert_converged_without_loss(&cluster, &ledger).await;
    for r in &cluster.regions {
        let stats = r.proxy.stats();
        assert!(
            stats.throttled > 0,
            "{}: nothing was throttled: {stats:?}",
            r.name
        );
        eprintln!("{}: {stats:?}", r.name);
        r.proxy.set_mode(FaultMode::Pass);
    }
    cluster.shutdown().await;
}

/// Region clocks 10 s apart (more than the replication delay): regions still converge, and a
/// write made after its region saw another still wins over it.
#[tokio::test(flavor = "multi_thread")]
async fn clock_skew_converges() {
    let _t = timer("clock_skew_converges");
    let mut options = options(3);
    options.clock_skew_ms = 10_000;
    let cluster = start(options).await;
    let offsets: Vec<i64> = cluster.regions.iter().map(|r| r.clock_offset_ms).collect();
    assert!(offsets.iter().any(|o| *o > 0) && offsets.iter().any(|o| *o < 0));
    let ledger = ledger();
    let apps = apps(&cluster);
    Workload::new(30, 10, 8, 60).run(&apps, &ledger).await;
    // Hand the key from region to region, the slow clock writing after the fast one.
    let want = handoff_chain(&cluster, "skew-chain", 9).await;
    Workload::new(31, 10, 8, 30).run(&apps, &ledger).await;
    let l = assert_converged_without_loss(&cluster, &ledger).await;
    assert_final(&l, &cluster, "skew-chain", &want);
    cluster.shutdown().await;
}

/// Unreadable messages (a garbage body, a body of an unknown format version) and a record the
/// destination rejects (an item over 400 KB), sent among good records: the good ones are
/// applied, the bad ones land in the DLQ with a `ferry-reason`.
#[tokio::test(flavor = "multi_thread")]
async fn poison_goes_to_the_dlq() {
    let _t = timer("poison_goes_to_the_dlq");
    let cluster = start(options(2)).await;
    let config = config(&cluster);
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);
    // Good records: items the source holds as if another region had written them (a foreign
    // origin: the source's enqueue skips them), so only the injected records carry them over.
    let mut good = Vec::new();
    for i in 0..3 {
        let mut it = item(&format!("good-{i}"), [("w", n(&i.to_string()))]);
        Version::new(ferry_core::clock::system_now_ms(), "zz-elsewhere-1")
            .stamp_into(&mut it, &config.names);
        // Sealed, as a drain's write is.
        ferry_core::digest::seal(&mut it, &config.names);
        us.put_raw(&it).await;
        good.push(it);
    }
    let mut huge = item("too-big", [("blob", s(&"x".repeat(420_000)))]);
    Version::new(ferry_core::clock::system_now_ms(), "zz-elsewhere-1")
        .stamp_into(&mut huge, &config.names);

    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut unknown = b"FRY".to_vec();
    unknown.push(FORMAT_VERSION.wrapping_add(98));
    unknown.extend_from_slice(&[4, 0, 0, 0, 1, 2, 3, 4]);
    let r = |i: &Item| record_of(i, &us.region, &config);
    let mut bodies = Vec::new();
    bodies.extend(packed_bodies(&[r(&good[0])]));
    bodies.push("this is not a Ferry message ✗".to_string());
    bodies.extend(packed_bodies(&[r(&good[1]), r(&huge)]));
    bodies.push(b64.encode(&unknown));
    bodies.extend(packed_bodies(&[r(&good[2])]));
    let p = pair(&cluster, &us.region, &eu.region);
    send_bodies(&p.buffer, &bodies).await;

    eventually(CONVERGE_TIMEOUT, "the good records applied", || async {
        for g in &good {
            if eu.get_raw(&pk_of(g)).await.as_ref() != Some(g) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let dead = dlq_messages(&p.dlq, 3, CONVERGE_TIMEOUT).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|(_, r)| r.clone().expect("every DLQ message carries ferry-reason"))
        .collect();
    eprintln!("DLQ reasons: {reasons:#?}");
    assert_eq!(
        dead.len(),
        3,
        "two unreadable messages and one rejected record"
    );
    assert!(reasons.iter().any(|r| r.contains("base64")), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unknown buffer format version")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("rejected by the destination") && r.contains("too-big")),
        "{reasons:?}"
    );
    // The unreadable messages are kept byte for byte (they can be inspected and redriven).
    assert!(dead
        .iter()
        .any(|(b, _)| b == "this is not a Ferry message ✗"));
    let l = wait_converged(&cluster, CONVERGE_TIMEOUT).await;
    assert!(l
        .scans
        .iter()
        .all(|(_, items)| items.iter().all(|i| pk_of(i) != "too-big")));
    assert_eq!(cluster.dlq_depth().await, 3);
    cluster.shutdown().await;
}

/// An expired item is removed by each region's own TTL process: the source's TTL removal is
/// not replicated (the source's enqueue leaves a local expiry tombstone at the expired version,
/// which is never forwarded), the destination keeps its copy until its own sweep, which leaves
/// the same tombstone there.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_arrives_expired_is_stored_as_its_expiry() {
    let _t = timer("a_version_that_arrives_expired_is_stored_as_its_expiry");
    let mut options = options(2);
    options.ttl_sweeps = false;
    let cluster = start(options).await;
    let config = config(&cluster);
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);
    let past = (ferry_core::clock::system_now_ms() / 1000 - 60).to_string();
    let expired_at = us
        .put_stamped(item("expired", [("ttl", n(&past)), ("w", n("1"))]))
        .await;
    let is_expiry_tombstone = |i: &Item| {
        ferry_core::digest::is_expiry_tombstone(i, &config.names)
            && version_of(i, &config) == Some(expired_at.clone())
    };
    // The destination never holds the expired item: its drain writes the expiry's tombstone.
    let stored = eventually(
        CONVERGE_TIMEOUT,
        "the destination's expiry tombstone",
        || async {
            eu.get_raw("expired")
                .await
                .filter(|i| is_expiry_tombstone(i))
        },
    )
    .await;
    assert_eq!(eu.get("expired").await, None, "{stored:?}");
    // The source's TTL removes its copy: the same tombstone, and the regions are equal.
    let removed = cluster.regions[US].dynamo.sweep_ttl().expect("sweep");
    assert_eq!(removed, 1);
    wait_converged(&cluster, CONVERGE_TIMEOUT).await;
    assert_eq!(us.get_raw("expired").await, Some(stored));
    assert_eq!(cluster.dlq_depth().await, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_expiry_is_not_replicated() {
    let _t = timer("ttl_expiry_is_not_replicated");
    let mut options = options(2);
    options.ttl_sweeps = false;
    let cluster = start(options).await;
    let config = config(&cluster);
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);
    // Due soon, not on arrival (a version that arrives expired is stored as its expiry:
    // `a_version_that_arrives_expired_is_stored_as_its_expiry`).
    let due_s = ferry_core::clock::system_now_ms() / 1000 + 8;
    let expired_at = us
        .put_stamped(item(
            "expiring",
            [("ttl", n(&due_s.to_string())), ("w", n("1"))],
        ))
        .await;
    us.put_plain(item("staying", [("w", n("2"))])).await;
    wait_converged(&cluster, CONVERGE_TIMEOUT).await;
    while ferry_core::clock::system_now_ms() / 1000 <= due_s {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let removed = cluster.regions[US].dynamo.sweep_ttl().expect("sweep");
    assert_eq!(removed, 1, "only the expired item");
    // The removal leaves the source's own expiry tombstone, whose record enqueue skips as TTL.
    let skipped = |c: &Cluster, i: usize| c.stats.enqueue_totals()[&c.regions[i].name].skipped_ttl;
    let tombstoned =
        |c: &Cluster, i: usize| c.stats.enqueue_totals()[&c.regions[i].name].tombstoned;
    eventually(
        CONVERGE_TIMEOUT,
        "enqueue to write and skip the expiry tombstone",
        || async { (tombstoned(&cluster, US) >= 1 && skipped(&cluster, US) >= 1).then_some(()) },
    )
    .await;
    let is_expiry_tombstone = |i: &Item| {
        ferry_core::digest::is_expiry_tombstone(i, &config.names)
            && version_of(i, &config) == Some(expired_at.clone())
    };
    // Everything the source's stream produced is through (buffers empty, twice): the
    // destination still holds its copy, and the source's tombstone stayed local.
    for _ in 0..3 {
        eventually(CONVERGE_TIMEOUT, "empty buffers", || async {
            let b: u64 = cluster.backlog().await.iter().map(|b| b.2).sum();
            (b == 0).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let local = us
        .get_raw("expiring")
        .await
        .expect("the source's expiry tombstone");
    assert!(is_expiry_tombstone(&local), "{local:?}");
    assert_eq!(
        us.get("expiring").await,
        None,
        "a tombstone reads as absent"
    );
    let copy = eu
        .get_raw("expiring")
        .await
        .expect("the destination keeps its copy");
    assert!(
        !config.is_tombstone(&copy),
        "the expiry tombstone is never forwarded"
    );
    assert_eq!(tombstoned(&cluster, EU), 0);

    let removed = cluster.regions[EU].dynamo.sweep_ttl().expect("sweep");
    assert_eq!(removed, 1);
    eventually(
        CONVERGE_TIMEOUT,
        "the destination's expiry tombstone written and skipped too",
        || async { (tombstoned(&cluster, EU) >= 1 && skipped(&cluster, EU) >= 1).then_some(()) },
    )
    .await;
    let l = wait_converged(&cluster, CONVERGE_TIMEOUT).await;
    for (region, items) in &l.scans {
        let left: Vec<&Item> = items.iter().filter(|i| pk_of(i) == "expiring").collect();
        assert!(
            left.len() == 1 && is_expiry_tombstone(left[0]),
            "{region}: {left:?}"
        );
        assert!(items.iter().any(|i| pk_of(i) == "staying"), "{region}");
    }
    // One local tombstone per region, nothing else: the two regions' are the same item.
    assert_eq!((tombstoned(&cluster, US), tombstoned(&cluster, EU)), (1, 1));
    assert_eq!(
        us.get_raw("expiring").await,
        eu.get_raw("expiring").await,
        "every region leaves the same expiry tombstone"
    );
    assert_eq!(cluster.dlq_depth().await, 0);
    cluster.shutdown().await;
}

/// Values that replicators get wrong: 38-digit numbers, extreme exponents, binary with every
/// byte, the three set types, nested maps and lists, empty strings and binaries, unicode.
fn exotic(pk: &str) -> Item {
    use AttributeValue as V;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    item(
        pk,
        [
            ("n38", n("12345678901234567890123456789012345678")),
            ("n38neg", n("-9999999999999999999999999999999999999.9")),
            ("nfrac", n("0.00000000000000000000000000000000000123")),
            ("nmax", n("9.9999999999999999999999999999999999999E+125")),
            ("nmin", n("1E-130")),
            ("nneg", n("-1E-130")),
            ("bin", V::B(all_bytes.clone())),
            ("bin_empty", V::B(Vec::new())),
            ("s_empty", s("")),
            ("s_unicode", s("zß水🍌\u{0}\u{7f}\"\\\n")),
            ("ss", V::Ss(vec!["b".into(), "a".into(), "水".into()])),
            (
                "ns",
                V::Ns(vec![
                    "1".into(),
                    "12345678901234567890123456789012345678".into(),
                    "-0.5".into(),
                ]),
            ),
            ("bs", V::Bs(vec![vec![0], vec![255, 0], all_bytes])),
            ("t", V::Bool(true)),
            ("f", V::Bool(false)),
            ("null", V::Null(true)),
            (
                "nested",
                V::M(
                    [
                        (
                            "list".to_string(),
                            V::L(vec![
                                n("1"),
                                s("x"),
                                V::Null(true),
                                V::Bool(false),
                                V::M(Default::default()),
                                V::L(vec![]),
                                V::B(vec![0, 1]),
                                V::Ns(vec!["7".into()]),
                            ]),
                        ),
                        (
                            "deep".to_string(),
                            V::M(
                                [(
                                    "deeper".to_string(),
                                    V::M(
                                        [(
                                            "n".to_string(),
                                            n("-12345678901234567890123456789012345678"),
                                        )]
                                        .into(),
                                    ),
                                )]
                                .into(),
                            ),
                        ),
                    ]
                    .into(),
                ),
            ),
        ],
    )
}

/// Number spellings DynamoDB may normalise: whatever the source stores, the copy is identical.
fn odd_numbers(pk: &str) -> Item {
    item(
        pk,
        [
            ("neg_zero", n("-0")),
            ("neg_zero_frac", n("-0.000")),
            ("trailing", n("1.500")),
            ("leading", n("007")),
            ("exp", n("1e2")),
            ("plus_exp", n("12.5E+3")),
            (
                "set",
                AttributeValue::Ns(vec!["-0.0".into(), "10".into(), "2.50e1".into()]),
            ),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_values_are_preserved() {
    let _t = timer("exact_values_are_preserved");
    let cluster = start(options(2)).await;
    let config = config(&cluster);
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);
    us.put_stamped(exotic("exotic-stamped")).await;
    eu.put_plain(exotic("exotic-plain")).await;
    us.put_plain(odd_numbers("odd-plain")).await;
    // An item of exotic values updated in place (a MODIFY with exotic old and new images).
    eu.update_plain("exotic-stamped-later", "n38", n("1")).await;
    eu.update_plain(
        "exotic-stamped-later",
        "bs",
        AttributeValue::Bs(vec![vec![1], vec![2]]),
    )
    .await;
    let l = wait_converged(&cluster, CONVERGE_TIMEOUT).await;
    for pk in ["exotic-stamped", "exotic-plain"] {
        for (region, items) in &l.scans {
            let got = items.iter().find(|i| pk_of(i) == pk).expect(pk);
            let want = exotic(pk);
            for (name, v) in &want {
                let g = got
                    .get(name)
                    .unwrap_or_else(|| panic!("{region}: {pk}.{name} missing"));
                assert!(
                    same_value(g, v),
                    "{region}: {pk}.{name}: stored {g:?}, written {v:?}"
                );
            }
            assert_eq!(app_view(got, &config).len(), want.len(), "{region}: {pk}");
            // The 38-digit integer must come back digit for digit.
            assert_eq!(got.get("n38"), want.get("n38"), "{region}: {pk}.n38");
        }
    }
    let odd: Vec<&Item> = l
        .scans
        .iter()
        .map(|(_, items)| items.iter().find(|i| pk_of(i) == "odd-plain").expect("odd"))
        .collect();
    eprintln!("odd numbers as stored: {:?}", app_view(odd[0], &config));
    assert!(odd.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(cluster.dlq_depth().await, 0);
    cluster.shutdown().await;
}

/// Equal as DynamoDB values: numbers by value (a store may respell them), sets as sets (their
/// order is not part of the value). Replicas must still be byte-identical to their source: the
/// convergence check compares items exactly.
fn same_value(a: &AttributeValue, b: &AttributeValue) -> bool {
    use ferry_core::condition::compare_numbers;
    use AttributeValue as V;
    let sorted = |v: &Vec<String>| {
        let mut v = v.clone();
        v.sort();
        v
    };
    let num_eq = |x: &str, y: &str| compare_numbers(x, y) == Some(std::cmp::Ordering::Equal);
    match (a, b) {
        (V::N(x), V::N(y)) => num_eq(x, y),
        (V::Ns(x), V::Ns(y)) => {
            x.len() == y.len() && x.iter().all(|v| y.iter().any(|w| num_eq(v, w)))
        }
        (V::Ss(x), V::Ss(y)) => sorted(x) == sorted(y),
        (V::Bs(x), V::Bs(y)) => {
            let (mut x, mut y) = (x.clone(), y.clone());
            x.sort();
            y.sort();
            x == y
        }
        (V::M(x), V::M(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        (V::L(x), V::L(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_value(v, w)),
        _ => a == b,
    }
}

/// A ~390 KB item (under DynamoDB's 400 KB) replicated intact, both ways: written stamped in
/// one region, then updated unstamped in the other.
#[tokio::test(flavor = "multi_thread")]
async fn large_item_replicates_intact() {
    let _t = timer("large_item_replicates_intact");
    use rand::{Rng, SeedableRng};
    let cluster = start(options(2)).await;
    let config = config(&cluster);
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);
    // Random letters: no compression to hide the size.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let blob: String = (0..385_000)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect();
    let bytes: Vec<u8> = (0..4_000).map(|_| rng.gen()).collect();
    let big = item(
        "big",
        [
            ("blob", s(&blob)),
            ("bytes", AttributeValue::B(bytes.clone())),
        ],
    );
    us.put_stamped(big.clone()).await;
    eventually(CONVERGE_TIMEOUT, "the big item in eu", || async {
        eu.get("big").await.map(|_| ())
    })
    .await;
    eu.update_plain("big", "note", s("updated in eu")).await;
    let l = wait_converged(&cluster, CONVERGE_TIMEOUT).await;
    let mut want = big.clone();
    want.insert("note".into(), s("updated in eu"));
    for (region, items) in &l.scans {
        let got = items.iter().find(|i| pk_of(i) == "big").expect("big");
        assert_eq!(
            app_view(got, &config),
            want,
            "{region}: the big item, intact"
        );
        let v = version_of(got, &config).expect("versioned");
        assert_eq!(v.origin, eu.region, "{region}: the update's version");
    }
    assert_eq!(cluster.dlq_depth().await, 0);
    cluster.shutdown().await;
}

/// Random mixes of everything above, for hunting: not part of the suite (`#[ignore]`). Run with
/// `FERRY_E2E_STRESS_SEEDS=1-20 cargo test -p ferry-e2e --test e2e stress -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn stress_random_mixes() {
    use rand::{Rng, SeedableRng};
    let _t = timer("stress_random_mixes");
    let spec = std::env::var("FERRY_E2E_STRESS_SEEDS").unwrap_or_else(|_| "1-3".into());
    let (a, b) = spec.split_once('-').unwrap_or((&spec, &spec));
    let (a, b): (u64, u64) = (a.parse().expect("seed"), b.parse().expect("seed"));
    for seed in a..=b {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut o = options(rng.gen_range(2..=3));
        o.clock_skew_ms = [0, 0, 3_000, 15_000][rng.gen_range(0..4)];
        o.rtt_ms = [0, 0, 40][rng.gen_range(0..3)];
        let throttle = [0.0, 0.0, 0.3][rng.gen_range(0..3)];
        let outage = rng.gen_bool(0.6).then(|| rng.gen_range(0..o.regions));
        let (shared, own, ops) = (
            rng.gen_range(3..12),
            rng.gen_range(2..8),
            rng.gen_range(60..200),
        );
        eprintln!(
            "seed {seed}: {} regions, skew {} ms, rtt {} ms, throttle {throttle}, outage {outage:?}, \
             {shared} shared / {own} own keys, {ops} writes per region per burst",
            o.regions, o.clock_skew_ms, o.rtt_ms
        );
        let cluster = start(o).await;
        if throttle > 0.0 {
            for r in &cluster.regions {
                r.proxy.set_mode(FaultMode::Throttle { fraction: throttle });
            }
        }
        let ledger = ledger();
        let apps = apps(&cluster);
        Workload::new(seed * 10, shared, own, ops)
            .run(&apps, &ledger)
            .await;
        if let Some(i) = outage {
            cluster.begin_outage(i);
        }
        Workload::new(seed * 10 + 1, shared, own, ops)
            .run(&apps, &ledger)
            .await;
        let want = handoff_chain_during(&cluster, outage.is_none()).await;
        if let Some(i) = outage {
            Workload::new(seed * 10 + 2, shared, own, ops / 2)
                .run(&apps, &ledger)
                .await;
            cluster.end_outage(i);
        }
        Workload::new(seed * 10 + 3, shared, own, ops / 2)
            .run(&apps, &ledger)
            .await;
        let l = assert_converged_without_loss(&cluster, &ledger).await;
        if let Some(want) = want {
            assert_final(&l, &cluster, "chain", &want);
        }
        eprintln!(
            "seed {seed}: ok, {} writes, {} items; enqueue {:?}",
            lock(&ledger).writes,
            l.comparison.matching,
            cluster.stats.enqueue_totals()
        );
        cluster.shutdown().await;
    }
}

/// A hand-off chain, only when every region is reachable (a chain waits for each step to be
/// everywhere).
async fn handoff_chain_during(cluster: &Cluster, all_up: bool) -> Option<Option<Item>> {
    if all_up {
        Some(handoff_chain(cluster, "chain", cluster.regions.len() * 3).await)
    } else {
        None
    }
}
