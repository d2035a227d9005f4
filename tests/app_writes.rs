//! Issue #15: applications that know nothing of Ferry, writing with a plain SDK client.
//!
//! Ordinary code does read-modify-write — `GetItem`, change a field, `PutItem` of the whole item —
//! and so writes back the `ferry_ts`/`ferry_origin` (and any other Ferry attribute) it read. It
//! copies items to new keys, puts back copies it read earlier, removes attributes with a plain
//! `UpdateItem`, and sets its own TTLs. Each scenario below does one of these with nothing but
//! `aws_sdk_dynamodb` calls (no Ferry helper: the writes are `GetItem`/`PutItem`/`DeleteItem`/
//! `UpdateItem` of what the application read or made), with one region cut off in the middle so
//! that records queue up and replay. Each then waits until the cluster has converged — or has
//! settled without converging (buffers empty, nothing changing: then it fails at once instead of
//! after the whole timeout) — and checks:
//!
//! - every region holds the same items, Ferry's attributes included, tombstones read as absent,
//!   nothing left unstamped, the DLQ empty;
//! - every key shows the application's last write (its application attributes), or is absent
//!   where that last write was a delete (or an item whose TTL expired).
//!
//! Run: `cargo test -p ferry-e2e --test app_writes` (logs: `RUST_LOG=ferry_enqueue=debug,...`).

use aws_sdk_dynamodb::types::AttributeValue as SdkValue;
use ferry_aws::values::from_sdk;
use ferry_core::{Item, ItemFilter, Version};
use ferry_e2e::*;
use std::collections::HashMap;
use std::time::Duration;

const US: usize = 0;
const EU: usize = 1;
const AP: usize = 2;

/// How long the cluster must sit still (buffers empty, items unchanged) before a divergent state
/// counts as final. Several drain periods, many enqueue polls.
const QUIET: Duration = Duration::from_secs(8);

/// An item as the SDK reads and writes it.
type Raw = HashMap<String, SdkValue>;

// ---------------------------------------------------------------------------------------------
// The application: plain SDK calls, no Ferry helper

/// `GetItem` (strongly consistent): the item exactly as stored, Ferry's attributes included.
async fn sdk_get(app: &App, pk: &str) -> Option<Raw> {
    app.client
        .get_item()
        .table_name(&app.table.name)
        .key(PK, SdkValue::S(pk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: GetItem {pk}: {e:?}", app.region))
        .item
}

/// `GetItem` of an item the scenario knows is there.
async fn sdk_read(app: &App, pk: &str) -> Raw {
    sdk_get(app, pk)
        .await
        .unwrap_or_else(|| panic!("{}: {pk} must be there to be read", app.region))
}

/// `PutItem` of exactly this item.
async fn sdk_put(app: &App, item: &Raw) {
    app.client
        .put_item()
        .table_name(&app.table.name)
        .set_item(Some(item.clone()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: PutItem {:?}: {e:?}", app.region, item.get(PK)));
}

/// `DeleteItem`.
async fn sdk_delete(app: &App, pk: &str) {
    app.client
        .delete_item()
        .table_name(&app.table.name)
        .key(PK, SdkValue::S(pk.into()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: DeleteItem {pk}: {e:?}", app.region));
}

/// `UpdateItem REMOVE attr`.
async fn sdk_remove_attribute(app: &App, pk: &str, attr: &str) {
    app.client
        .update_item()
        .table_name(&app.table.name)
        .key(PK, SdkValue::S(pk.into()))
        .update_expression("REMOVE #a")
        .expression_attribute_names("#a", attr)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: UpdateItem {pk} REMOVE {attr}: {e:?}", app.region));
}

/// A new item: the key and string attributes.
fn fresh(pk: &str, attrs: &[(&str, &str)]) -> Raw {
    let mut i: Raw = [(PK.to_string(), SdkValue::S(pk.into()))].into();
    for (k, v) in attrs {
        i.insert(k.to_string(), SdkValue::S(v.to_string()));
    }
    i
}

/// `item` with one field changed, the rest — Ferry's attributes included — as read.
fn with(item: &Raw, name: &str, value: SdkValue) -> Raw {
    let mut i = item.clone();
    i.insert(name.to_string(), value);
    i
}

fn text(v: &str) -> SdkValue {
    SdkValue::S(v.to_string())
}

/// What the application attributes of a write are (the key included).
fn app_part(item: &Raw, cluster: &Cluster) -> Item {
    app_view(&from_sdk(item.clone()), &config(cluster))
}

fn version_in(item: &Raw, cluster: &Cluster) -> Option<Version> {
    version_of(&from_sdk(item.clone()), &config(cluster))
}

// ---------------------------------------------------------------------------------------------
// Waiting and judging

/// Waits until `pk` in `app`'s region is stamped and shows `want`'s application attributes;
/// returns its version.
async fn shows(cluster: &Cluster, app: &App, pk: &str, want: &Raw) -> Version {
    let want = app_part(want, cluster);
    let config = config(cluster);
    eventually(
        CONVERGE_TIMEOUT,
        &format!("{pk} in {} showing {want:?}", app.region),
        || async {
            let got = app.get(pk).await?;
            (app_view(&got, &config) == want)
                .then(|| version_of(&got, &config))
                .flatten()
        },
    )
    .await
}

/// Waits until the buffer from `source` to `destination` holds something: what the live side
/// wrote waits for the cut-off one (the outage is real).
async fn backlog_towards(cluster: &Cluster, source: usize, destination: usize) {
    let (s, d) = (
        cluster.regions[source].name.clone(),
        cluster.regions[destination].name.clone(),
    );
    eventually(
        CONVERGE_TIMEOUT,
        &format!("a backlog from {s} to {d}"),
        || async {
            let b = cluster.backlog().await;
            b.iter()
                .any(|(bs, bd, n)| *bs == s && *bd == d && *n > 0)
                .then_some(())
        },
    )
    .await;
}

/// A region's view of a key: its application attributes and version, `None` for absent.
type View = Option<(Item, Option<Version>)>;

/// Each region's view of `pk` in a look: its application attributes and version, `None` where
/// it reads as absent.
fn views(l: &Look, cluster: &Cluster, pk: &str) -> Vec<(String, View)> {
    let config = config(cluster);
    l.scans
        .iter()
        .map(|(region, items)| {
            let got = items
                .iter()
                .find(|i| pk_of(i) == pk && !config.is_tombstone(i))
                .map(|i| (app_view(i, &config), version_of(i, &config)));
            (region.clone(), got)
        })
        .collect()
}

/// The end of every scenario: the cluster converges (every region holds the same items, Ferry's
/// attributes included, tombstones read as absent, nothing unstamped, buffers empty), every key
/// of `want` shows the application's last write in every region (`None`: absent), and the DLQ
/// is empty. Fails as soon as the cluster has settled without converging.
async fn assert_end(cluster: &Cluster, want: &[(&str, Option<Item>)]) {
    let settled = wait_converged_or_settled(cluster, QUIET, CONVERGE_TIMEOUT).await;
    let l = match &settled {
        Ok(l) | Err(l) => l,
    };
    let mut wrong = Vec::new();
    for (pk, expected) in want {
        for (region, got) in views(l, cluster, pk) {
            if got.as_ref().map(|g| &g.0) != expected.as_ref() {
                wrong.push(format!(
                    "  {pk} in {region}: holds {got:?}\n    the application's last write: {expected:?}"
                ));
            }
        }
    }
    if settled.is_err() {
        panic!(
            "the regions did not converge (they settled apart, or the wait timed out):\n{}\n\
             keys not showing the application's last write ({}):\n{}",
            describe(cluster, l).await,
            wrong.len(),
            wrong.join("\n")
        );
    }
    assert!(
        wrong.is_empty(),
        "converged, but {} region views of a key lost the application's last write:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(cluster.dlq_depth().await, 0, "the DLQ must stay empty");
}

// ---------------------------------------------------------------------------------------------
// The scenarios

/// Case 1: a read-modify-write whose read went stale. The application in us-east-1 reads a key,
/// a newer version written in eu-west-1 replicates into us-east-1, then the application puts its
/// copy with one field changed — carrying the older version it read. Its put is the key's last
/// write: every region must end with it. Three keys, whose first version was written in
/// eu-west-1, in us-east-1 itself, and in ap-southeast-2; eu-west-1 is cut off from just before
/// the puts until the end.
#[tokio::test(flavor = "multi_thread")]
async fn stale_read_modify_write_after_a_newer_version_arrived() {
    let _t = timer("stale_read_modify_write_after_a_newer_version_arrived");
    let cluster = start(options(3)).await;
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);
    let keys = [("stale-eu", EU), ("stale-us", US), ("stale-ap", AP)];
    for (pk, by) in keys {
        sdk_put(
            &apps[by],
            &fresh(pk, &[("note", "v1"), ("by", &apps[by].region)]),
        )
        .await;
    }
    wait_converged(&cluster, CONVERGE_TIMEOUT).await;

    // The application reads its copies in us-east-1...
    let mut reads = Vec::new();
    for (pk, _) in keys {
        reads.push(sdk_read(us, pk).await);
    }
    // ... a newer version of each is written in eu-west-1 and reaches us-east-1 ...
    for ((pk, _), read) in keys.iter().zip(&reads) {
        let v2 = fresh(pk, &[("note", "v2, newer, from eu"), ("by", &eu.region)]);
        sdk_put(eu, &v2).await;
        let landed = shows(&cluster, us, pk, &v2).await;
        let read = version_in(read, &cluster);
        assert!(
            read.as_ref().is_some_and(|r| landed > *r),
            "{pk}: the version that landed ({landed}) is newer than the one read ({read:?})"
        );
    }
    // ... eu-west-1 is cut off, and the application puts back what it read, one field changed.
    cluster.begin_outage(EU);
    let mut want = Vec::new();
    for ((pk, _), read) in keys.iter().zip(&reads) {
        let put = with(read, "note", text("the application's edit in us-east-1"));
        sdk_put(us, &put).await;
        want.push((*pk, Some(app_part(&put, &cluster))));
    }
    let during_us = fresh("during-us", &[("note", "written in us during the outage")]);
    let during_eu = fresh("during-eu", &[("note", "written in eu during the outage")]);
    sdk_put(us, &during_us).await;
    sdk_put(eu, &during_eu).await;
    backlog_towards(&cluster, US, EU).await;
    cluster.end_outage(EU);

    want.push(("during-us", Some(app_part(&during_us, &cluster))));
    want.push(("during-eu", Some(app_part(&during_eu, &cluster))));
    assert_end(&cluster, &want).await;
    cluster.shutdown().await;
}

/// Case 2: a copy read before a delete, put back after it with one field changed (an undo, a
/// restore from a cache). us-east-1 reads three keys, deletes them, and puts each copy back —
/// two while us-east-1 is cut off (the delete and the put-back reach its stream together), one
/// after the delete's tombstone had reached every region. Keys first written in eu-west-1 and in
/// us-east-1 itself. The put-back is each key's last write.
#[tokio::test(flavor = "multi_thread")]
async fn copy_read_before_a_delete_put_back() {
    let _t = timer("copy_read_before_a_delete_put_back");
    let cluster = start(options(2)).await;
    let config = config(&cluster);
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);
    let keys = [
        ("restore-eu", EU),
        ("restore-us", US),
        ("restore-late-eu", EU),
    ];
    for (pk, by) in keys {
        sdk_put(
            &apps[by],
            &fresh(pk, &[("note", "v1"), ("by", &apps[by].region)]),
        )
        .await;
    }
    wait_converged(&cluster, CONVERGE_TIMEOUT).await;
    let mut reads = HashMap::new();
    for (pk, _) in keys {
        reads.insert(pk, sdk_read(us, pk).await);
    }

    // One key deleted now, its tombstone everywhere before the copy comes back.
    sdk_delete(us, "restore-late-eu").await;
    eventually(
        CONVERGE_TIMEOUT,
        "restore-late-eu's tombstone everywhere",
        || async {
            for a in &apps {
                let raw = a.get_raw("restore-late-eu").await?;
                if !config.is_tombstone(&raw) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    cluster.begin_outage(US);
    sdk_delete(us, "restore-eu").await;
    sdk_delete(us, "restore-us").await;
    let mut want = Vec::new();
    for (pk, _) in keys {
        let put = with(&reads[pk], "note", text("restored in us-east-1, edited"));
        sdk_put(us, &put).await;
        want.push((pk, Some(app_part(&put, &cluster))));
    }
    let during_eu = fresh("during-eu", &[("note", "written in eu during the outage")]);
    sdk_put(eu, &during_eu).await;
    backlog_towards(&cluster, EU, US).await;
    cluster.end_outage(US);

    want.push(("during-eu", Some(app_part(&during_eu, &cluster))));
    assert_end(&cluster, &want).await;
    cluster.shutdown().await;
}

/// Case 3: an item copied to a new key — everything it read, Ferry's attributes included, under
/// another key, once as it is and once with a field changed — and the original deleted (a
/// rename). The original was written in eu-west-1; us-east-1 copies and deletes while eu-west-1
/// is cut off. The copies must exist everywhere, the original nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn copy_to_a_new_key_and_delete_the_original() {
    let _t = timer("copy_to_a_new_key_and_delete_the_original");
    let cluster = start(options(2)).await;
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);
    let original = fresh("original", &[("note", "written in eu"), ("by", &eu.region)]);
    sdk_put(eu, &original).await;
    wait_converged(&cluster, CONVERGE_TIMEOUT).await;

    cluster.begin_outage(EU);
    let read = sdk_read(us, "original").await;
    let copy = with(&read, PK, text("copy"));
    let edited = with(
        &with(&read, PK, text("copy-edited")),
        "note",
        text("copied in us-east-1, edited"),
    );
    sdk_put(us, &copy).await;
    sdk_put(us, &edited).await;
    sdk_delete(us, "original").await;
    let during_eu = fresh("during-eu", &[("note", "written in eu during the outage")]);
    sdk_put(eu, &during_eu).await;
    backlog_towards(&cluster, US, EU).await;
    cluster.end_outage(EU);

    assert_end(
        &cluster,
        &[
            ("original", None),
            ("copy", Some(app_part(&copy, &cluster))),
            ("copy-edited", Some(app_part(&edited, &cluster))),
            ("during-eu", Some(app_part(&during_eu, &cluster))),
        ],
    )
    .await;
    cluster.shutdown().await;
}

/// Case 4: with the item filter `has:rep` (only items holding `rep` replicate), the application
/// takes `rep` off replicated items: one with a plain `UpdateItem REMOVE rep`, one with a
/// read-modify-write put of the item without it (and a field changed). The removal is the
/// item's last write: no region may keep `rep`. eu-west-1 writes while us-east-1 is cut off.
#[tokio::test(flavor = "multi_thread")]
async fn filter_attribute_removed_by_a_plain_write() {
    let _t = timer("filter_attribute_removed_by_a_plain_write");
    let cluster = start(options(2)).await;
    let rewired = rewire(&cluster, |c| {
        c.filter = ItemFilter::HasAttribute("rep".into());
    })
    .await;
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);
    let by_update = fresh("unrep-update", &[("rep", "yes"), ("note", "written in us")]);
    let by_put = fresh("unrep-put", &[("rep", "yes"), ("note", "written in us")]);
    let kept = fresh("kept", &[("rep", "yes"), ("note", "written in us")]);
    for i in [&by_update, &by_put, &kept] {
        sdk_put(us, i).await;
    }
    wait_converged(&cluster, CONVERGE_TIMEOUT).await;

    rewired.begin_outage(&cluster, US);
    sdk_remove_attribute(eu, "unrep-update", "rep").await;
    let mut put = sdk_read(eu, "unrep-put").await;
    put.remove("rep");
    put.insert("note".into(), text("rewritten in eu without rep"));
    sdk_put(eu, &put).await;
    let during_eu = fresh("during-eu", &[("rep", "yes"), ("note", "written in eu")]);
    sdk_put(eu, &during_eu).await;
    backlog_towards(&cluster, EU, US).await;
    rewired.end_outage(&cluster, US);

    let mut without = app_part(&by_update, &cluster);
    without.remove("rep");
    assert_end(
        &cluster,
        &[
            ("unrep-update", Some(without)),
            ("unrep-put", Some(app_part(&put, &cluster))),
            ("kept", Some(app_part(&kept, &cluster))),
            ("during-eu", Some(app_part(&during_eu, &cluster))),
        ],
    )
    .await;
    rewired.shutdown().await;
    cluster.shutdown().await;
}

/// Case 5: an application TTL shorter than the replication delay. eu-west-1, cut off, writes v1
/// of a key (stamped at write time, as a stamping application or Ferry's helper does: its
/// record waits in eu-west-1's stream). us-east-1 then writes v2 — a read-modify-write with a
/// TTL already due — which Ferry stamps above v1, and us-east-1's TTL process expires it. When
/// eu-west-1 returns, v1 arrives in us-east-1's empty key, v2 in eu-west-1, whose TTL process
/// expires it too. v2 was the last write and it expired: the key must read as absent
/// everywhere (an expired item never comes back as an older version).
#[tokio::test(flavor = "multi_thread")]
async fn app_ttl_expired_before_an_older_version_arrived() {
    let _t = timer("app_ttl_expired_before_an_older_version_arrived");
    let mut options = options(2);
    options.ttl_sweeps = false; // each region's TTL process is run by hand below
    let cluster = start(options).await;
    let config = config(&cluster);
    let apps = apps(&cluster);
    let (us, eu) = (&apps[US], &apps[EU]);
    let v0 = fresh("short", &[("note", "v0 from us")]);
    sdk_put(us, &v0).await;
    wait_converged(&cluster, CONVERGE_TIMEOUT).await;

    cluster.begin_outage(EU);
    let v1 = eu
        .put_stamped(item("short", [("note", s("v1 from eu, stamped"))]))
        .await;
    eventually(CONVERGE_TIMEOUT, "a clock past v1", || async {
        (ferry_core::clock::system_now_ms() > v1.ts_ms + 1).then_some(())
    })
    .await;
    let read = sdk_read(us, "short").await;
    let read_version = version_in(&read, &cluster).expect("v0 stamped");
    let due = (ferry_core::clock::system_now_ms() / 1000 - 60).to_string();
    let v2 = with(
        &with(&read, "note", text("v2 from us, expires at once")),
        "ttl",
        SdkValue::N(due),
    );
    sdk_put(us, &v2).await;
    // Ferry stamps v2 above what it replaced (and above v1), and queues it for eu-west-1.
    let v2_version = eventually(CONVERGE_TIMEOUT, "v2 stamped in us", || async {
        let got = us.get_raw("short").await?;
        version_of(&got, &config).filter(|v| *v > read_version)
    })
    .await;
    assert!(v2_version > v1, "v2 ({v2_version}) is newer than v1 ({v1})");
    backlog_towards(&cluster, US, EU).await;
    // us-east-1's TTL process expires v2 before v1 can arrive.
    let removed = cluster.regions[US].dynamo.sweep_ttl().expect("sweep");
    assert_eq!(removed, 1, "v2 expired in us-east-1");
    let skipped = || cluster.stats.enqueue_totals()[&cluster.regions[US].name].skipped_ttl;
    eventually(CONVERGE_TIMEOUT, "us enqueue to see the expiry", || async {
        (skipped() >= 1).then_some(())
    })
    .await;
    // Expired: gone, or the local tombstone the expiry leaves at v2's version.
    let left = us.get_raw("short").await;
    assert!(
        left.as_ref().is_none_or(|i| config.is_tombstone(i)),
        "expired in us-east-1: {left:?}"
    );

    cluster.end_outage(EU);
    // From now on every region's TTL process runs (every 300 ms).
    let dbs: Vec<_> = cluster
        .regions
        .iter()
        .map(|r| r.dynamo.database().clone())
        .collect();
    let sweeper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for db in &dbs {
                let _ = db.sweep_ttl();
            }
        }
    });
    assert_end(&cluster, &[("short", None)]).await;
    sweeper.abort();
    cluster.shutdown().await;
}
