//! Shared helpers of Ferry's end-to-end suite (`tests/e2e.rs`) and fidelity checks
//! (`tests/fidelity.rs`).
//!
//! - [`start`]: a multi-region [`Cluster`] with the suite's pacing.
//! - [`App`]: an application writing into one region the way applications do — plain SDK
//!   `PutItem`/`UpdateItem`/`DeleteItem` (unstamped: Ferry stamps them) and writes stamped the
//!   way Ferry's helper stamps them (read, then version `max(now, previous + 1)`; puts sealed,
//!   updates without a seal).
//! - [`Ledger`]: what every region's last write to every key left (the item put, the `ALL_NEW`
//!   of an update, absence for a delete), to judge the converged state: a key written by one
//!   region must show that region's last write; a key written by several must show the last
//!   write of one of them (a region's earlier write was seen by its later one, so it must never
//!   survive it — the contract's causality property).
//! - [`Workload`]: reproducible concurrent writes of every kind (helper-stamped and plain puts,
//!   plain and stamped updates, hard deletes, helper tombstones) to shared and own keys.
//! - [`wait_converged`]: polls until every buffer is empty and every region holds the same
//!   items (versions included, tombstones read as absent, every item versioned), several times
//!   in a row; on timeout it panics with what differs.

pub mod hand;
pub mod pipeline_bench;
pub mod scale_bench;

use aws_sdk_dynamodb::types::AttributeValue as SdkValue;
use ferry_aws::values::{from_sdk, to_sdk};
use ferry_aws::Table;
use ferry_cli::cluster::{BufferPair, Region};
use ferry_core::compare::{compare, snapshot, Comparison};
use ferry_core::{AttributeValue, ChangeRecord, Config, Item, ItemKey, Version};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

pub use ferry_cli::cluster::{Cluster, ClusterOptions};

/// The table every scenario replicates (DynamoDB Local wants ≥ 3 characters).
pub const TABLE: &str = "ferry-e2e";
/// The partition key attribute.
pub const PK: &str = "pk";
/// How long any wait for convergence may take before the scenario fails. Generous: the machine
/// is shared and loaded; a converging run takes seconds.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Logs to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=ferry_drain=debug`).
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// Prints how long a scenario took when dropped (also when it fails); visible with
/// `--nocapture`.
pub struct Timer(&'static str, Instant);

pub fn timer(name: &'static str) -> Timer {
    Timer(name, Instant::now())
}

impl Drop for Timer {
    fn drop(&mut self) {
        eprintln!(
            "[timing] {}: {:.1} s{}",
            self.0,
            self.1.elapsed().as_secs_f64(),
            if std::thread::panicking() {
                " (failed)"
            } else {
                ""
            }
        );
    }
}

/// The suite's cluster options: a short drain schedule (a 2 s period, invocations of 4 s that
/// overlap), so outages end and backlogs drain within seconds.
pub fn options(regions: usize) -> ClusterOptions {
    ClusterOptions {
        regions,
        table: TABLE.into(),
        partition_key: PK.into(),
        drain_budget: Duration::from_secs(4),
        drain_period: Duration::from_secs(2),
        ..ClusterOptions::default()
    }
}

/// Starts a cluster, reporting how long it took (startup cost is part of the suite's budget).
pub async fn start(options: ClusterOptions) -> Cluster {
    init_tracing();
    let t = Instant::now();
    let cluster = Cluster::start(options)
        .await
        .unwrap_or_else(|e| panic!("starting the cluster: {e}"));
    eprintln!(
        "cluster of {} regions up in {} ms",
        cluster.regions.len(),
        t.elapsed().as_millis()
    );
    cluster
}

/// The config Ferry runs with in region `i` (attribute names, key schema).
pub fn config(cluster: &Cluster) -> Config {
    cluster.regions[0].config.clone()
}

// ---------------------------------------------------------------------------------------------
// Values

pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

pub fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The key item of `pk`.
pub fn key(pk: &str) -> Item {
    [(PK.to_string(), s(pk))].into()
}

/// An item: the key plus attributes.
pub fn item(pk: &str, attrs: impl IntoIterator<Item = (&'static str, AttributeValue)>) -> Item {
    let mut i = key(pk);
    i.extend(attrs.into_iter().map(|(k, v)| (k.to_string(), v)));
    i
}

/// The item without Ferry's attributes (version, marker, TTL): what the application wrote.
pub fn app_view(item: &Item, config: &Config) -> Item {
    item.iter()
        .filter(|(k, _)| !config.names.is_ferry_attribute(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The version of an item (panics on a malformed one: Ferry never writes one).
pub fn version_of(item: &Item, config: &Config) -> Option<Version> {
    Version::of(item, &config.names).expect("a readable version")
}

// ---------------------------------------------------------------------------------------------
// The application

/// An application writing into one region through that region's own (local) endpoint: it keeps
/// working while the region is cut off from the others.
#[derive(Clone)]
pub struct App {
    pub region: String,
    pub client: aws_sdk_dynamodb::Client,
    pub table: Table,
    pub clock: ferry_core::Clock,
    pub config: Config,
}

impl App {
    /// An application of `region` writing through `client` into `table`, stamping with
    /// `clock` (unskewed: the system clock).
    pub fn new(region: &str, client: aws_sdk_dynamodb::Client, table: &str, config: Config) -> App {
        App {
            region: region.to_string(),
            table: Table::new(client.clone(), table),
            client,
            clock: ferry_core::clock::system(),
            config,
        }
    }

    pub fn of(region: &Region) -> App {
        App {
            region: region.name.clone(),
            client: region.dynamo.client(),
            table: region.table(TABLE),
            clock: region.clock.clone(),
            config: region.config.clone(),
        }
    }

    /// A strongly consistent read of the raw item (tombstones included).
    pub async fn get_raw(&self, pk: &str) -> Option<Item> {
        self.table
            .get(&key(pk))
            .await
            .unwrap_or_else(|e| panic!("{}: GetItem {pk}: {e}", self.region))
    }

    /// The item as the application sees it (a tombstone reads as absent).
    pub async fn get(&self, pk: &str) -> Option<Item> {
        self.get_raw(pk)
            .await
            .filter(|i| !self.config.is_tombstone(i))
    }

    /// The version the helper gives a new write: `max(now, previous + 1)` at this region.
    async fn next_version(&self, pk: &str) -> Version {
        let previous = self
            .get_raw(pk)
            .await
            .and_then(|i| version_of(&i, &self.config));
        let now = (self.clock)();
        Version::new(
            previous.map_or(now, |p| now.max(p.ts_ms + 1)),
            self.region.clone(),
        )
    }

    /// A `PutItem` stamped (and sealed) the way the helper stamps it. Returns the version.
    pub async fn put_stamped(&self, mut item: Item) -> Version {
        let pk = pk_of(&item);
        let version = self.next_version(&pk).await;
        version.stamp_into(&mut item, &self.config.names);
        ferry_core::digest::seal(&mut item, &self.config.names);
        self.put_raw(&item).await;
        version
    }

    /// A plain, unstamped `PutItem` (Ferry stamps it).
    pub async fn put_plain(&self, item: Item) {
        self.put_raw(&item).await;
    }

    /// A `PutItem` of exactly this item.
    pub async fn put_raw(&self, item: &Item) {
        self.client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(to_sdk(item)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: PutItem {}: {e:?}", self.region, pk_of(item)));
    }

    /// A plain `UpdateItem SET name = value` (keeps whatever version the item has). Returns the
    /// item as the update left it (`ALL_NEW`).
    pub async fn update_plain(&self, pk: &str, name: &str, value: AttributeValue) -> Item {
        let out = self
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(to_sdk(&key(pk))))
            .update_expression("SET #a = :v")
            .expression_attribute_names("#a", name)
            .expression_attribute_values(":v", SdkValue::from(value))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: UpdateItem {pk}: {e:?}", self.region));
        from_sdk(out.attributes.unwrap_or_default())
    }

    /// An `UpdateItem SET name = value` that also stamps a new version, as the helper does.
    /// On a tombstone it also removes the marker and the TTL (the key is an item again). Like
    /// the helper, it removes the seal: the content after an update is DynamoDB's to compute, so
    /// no seal can be written for it, and an item without one is trusted as Ferry's (forwarded
    /// as it is). Returns the item as the update left it (`ALL_NEW`).
    pub async fn update_stamped(&self, pk: &str, name: &str, value: AttributeValue) -> Item {
        let version = self.next_version(pk).await;
        let names = &self.config.names;
        let out = self
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(to_sdk(&key(pk))))
            .update_expression("SET #a = :v, #ts = :ts, #o = :o REMOVE #d, #ttl, #sum")
            .expression_attribute_names("#a", name)
            .expression_attribute_names("#ts", &names.ts)
            .expression_attribute_names("#o", &names.origin)
            .expression_attribute_names("#d", &names.tombstone)
            .expression_attribute_names("#ttl", &names.ttl)
            .expression_attribute_names("#sum", &names.sum)
            .expression_attribute_values(":v", SdkValue::from(value))
            .expression_attribute_values(":ts", SdkValue::from(version.ts_value()))
            .expression_attribute_values(":o", SdkValue::from(version.origin_value()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: UpdateItem {pk}: {e:?}", self.region));
        from_sdk(out.attributes.unwrap_or_default())
    }

    /// A plain `DeleteItem` (Ferry writes the tombstone).
    pub async fn delete_hard(&self, pk: &str) {
        self.client
            .delete_item()
            .table_name(&self.table.name)
            .set_key(Some(to_sdk(&key(pk))))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: DeleteItem {pk}: {e:?}", self.region));
    }

    /// A delete through a versioned tombstone, as the helper deletes.
    pub async fn delete_tombstone(&self, pk: &str) -> Version {
        let version = self.next_version(pk).await;
        let tomb =
            ferry_core::reconcile::tombstone_item(&key(pk), &version, (self.clock)(), &self.config);
        self.put_raw(&tomb).await;
        version
    }
}

pub fn pk_of(item: &Item) -> String {
    match item.get(PK) {
        Some(AttributeValue::S(s)) => s.clone(),
        other => panic!("item without a string {PK}: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The ledger and a random workload

/// One application write in a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    StampedPut,
    PlainPut,
    /// `UpdateItem` of one attribute, unstamped. What it wrote is the item it left (`ALL_NEW`):
    /// on a shared key that depends on what had replicated in before.
    PlainUpdate,
    /// `UpdateItem` of one attribute, stamped by the helper.
    StampedUpdate,
    HardDelete,
    TombstoneDelete,
}

/// What each region's writes left each key as, in that region's own view: the application
/// attributes, `None` for deleted.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// key → region → the state that region's last write produced.
    pub last: BTreeMap<String, BTreeMap<String, Option<Item>>>,
    pub writes: u64,
}

impl Ledger {
    pub fn record(&mut self, pk: &str, region: &str, state: Option<Item>) {
        self.writes += 1;
        self.last
            .entry(pk.to_string())
            .or_default()
            .insert(region.to_string(), state);
    }

    /// The state region `region` holds for `pk` in its own model (for partial updates).
    pub fn state(&self, pk: &str, region: &str) -> Option<Item> {
        self.last
            .get(pk)
            .and_then(|m| m.get(region))
            .cloned()
            .flatten()
    }

    /// Checks the converged state of every key the ledger knows against `items` (one region's
    /// raw scan): it must be the last write of one of the regions that wrote the key — of the
    /// only one, for a key with a single writer. Returns the violations.
    pub fn judge(&self, items: &[Item], config: &Config) -> Vec<String> {
        let visible: HashMap<String, Item> = items
            .iter()
            .filter(|i| !config.is_tombstone(i))
            .map(|i| (pk_of(i), app_view(i, config)))
            .collect();
        let mut bad = Vec::new();
        for (pk, by_region) in &self.last {
            let got = visible.get(pk);
            if !by_region.values().any(|want| want.as_ref() == got) {
                bad.push(format!(
                    "{pk}: holds {got:?}, but the regions' last writes were {by_region:?}"
                ));
            }
        }
        bad
    }
}

/// A reproducible random workload over `shared` keys written by every region and `own` keys per
/// region, `ops` writes per region. Each region writes its keys in `lanes` concurrent lanes
/// (keys split between lanes, so one key's writes stay in order); regions run concurrently.
#[derive(Clone, Debug)]
pub struct Workload {
    pub seed: u64,
    pub shared: usize,
    pub own: usize,
    pub ops: usize,
    pub lanes: usize,
    /// Key prefix, so several workloads in one cluster do not overlap.
    pub prefix: String,
}

impl Workload {
    pub fn new(seed: u64, shared: usize, own: usize, ops: usize) -> Self {
        Workload {
            seed,
            shared,
            own,
            ops,
            lanes: 4,
            prefix: "w".into(),
        }
    }

    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Runs every region's writes concurrently and records them in `ledger`.
    pub async fn run(&self, apps: &[App], ledger: &Arc<Mutex<Ledger>>) {
        let mut tasks = Vec::new();
        for (r, app) in apps.iter().enumerate() {
            let mut rng =
                StdRng::seed_from_u64(self.seed.wrapping_mul(1000).wrapping_add(r as u64));
            let mut lanes: Vec<Vec<(String, Kind, u64)>> = vec![Vec::new(); self.lanes.max(1)];
            for op in 0..self.ops {
                let shared = self.own == 0 || (self.shared > 0 && rng.gen_bool(0.5));
                let (pk, lane) = if shared {
                    let k = rng.gen_range(0..self.shared);
                    (format!("{}-shared-{k}", self.prefix), k % lanes.len())
                } else {
                    let k = rng.gen_range(0..self.own);
                    (
                        format!("{}-own-{}-{k}", self.prefix, app.region),
                        k % lanes.len(),
                    )
                };
                let x: f64 = rng.gen();
                let kind = if shared {
                    match x {
                        x if x < 0.3 => Kind::StampedPut,
                        x if x < 0.6 => Kind::PlainPut,
                        x if x < 0.75 => Kind::PlainUpdate,
                        x if x < 0.8 => Kind::StampedUpdate,
                        x if x < 0.9 => Kind::HardDelete,
                        _ => Kind::TombstoneDelete,
                    }
                } else {
                    match x {
                        x if x < 0.3 => Kind::StampedPut,
                        x if x < 0.55 => Kind::PlainPut,
                        x if x < 0.7 => Kind::PlainUpdate,
                        x if x < 0.8 => Kind::StampedUpdate,
                        x if x < 0.9 => Kind::HardDelete,
                        _ => Kind::TombstoneDelete,
                    }
                };
                let id = (r as u64) << 32 | op as u64;
                lanes[lane].push((pk, kind, id));
            }
            for lane in lanes {
                let app = app.clone();
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    for (pk, kind, id) in lane {
                        write(&app, &pk, kind, id, &ledger).await;
                    }
                }));
            }
        }
        for t in tasks {
            t.await.expect("a workload lane panicked");
        }
    }
}

/// Makes one write and records the state it leaves in the region's own view.
pub async fn write(app: &App, pk: &str, kind: Kind, id: u64, ledger: &Mutex<Ledger>) {
    let own = !pk.contains("-shared-");
    let value = item(pk, [("w", n(&id.to_string())), ("by", s(&app.region))]);
    let before = lock(ledger).state(pk, &app.region);
    let state = match kind {
        Kind::StampedPut => {
            app.put_stamped(value.clone()).await;
            Some(value)
        }
        Kind::PlainPut => {
            app.put_plain(value.clone()).await;
            Some(value)
        }
        Kind::PlainUpdate | Kind::StampedUpdate => {
            // What the update left is what it wrote (for a key with one writer, the region's
            // previous state plus the attribute; checked).
            let all_new = if kind == Kind::PlainUpdate {
                app.update_plain(pk, "u", n(&id.to_string())).await
            } else {
                app.update_stamped(pk, "u", n(&id.to_string())).await
            };
            let state = app_view(&all_new, &app.config);
            if own {
                let mut want = before.unwrap_or_else(|| key(pk));
                want.insert("u".into(), n(&id.to_string()));
                assert_eq!(state, want, "{}: {pk}: the update's result", app.region);
            }
            Some(state)
        }
        Kind::HardDelete => {
            app.delete_hard(pk).await;
            None
        }
        Kind::TombstoneDelete => {
            app.delete_tombstone(pk).await;
            None
        }
    };
    lock(ledger).record(pk, &app.region, state);
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every region's application.
pub fn apps(cluster: &Cluster) -> Vec<App> {
    cluster.regions.iter().map(App::of).collect()
}

// ---------------------------------------------------------------------------------------------
// Convergence

/// What one look at the cluster found.
pub struct Look {
    pub backlog: u64,
    pub comparison: Comparison,
    /// Items without a version (an unstamped write Ferry has not stamped yet), by region.
    pub unversioned: Vec<(String, String)>,
    pub scans: Vec<(String, Vec<Item>)>,
}

impl Look {
    pub fn converged(&self) -> bool {
        self.backlog == 0 && self.comparison.is_converged() && self.unversioned.is_empty()
    }
}

pub async fn look(cluster: &Cluster) -> Look {
    let tables: Vec<(String, Table)> = cluster
        .regions
        .iter()
        .map(|r| (r.name.clone(), r.table(TABLE)))
        .collect();
    let buffers: Vec<&ferry_aws::Buffer> = cluster.buffers.iter().map(|b| &b.buffer).collect();
    look_at(&tables, &buffers, &config(cluster)).await
}

/// One look at any set of regions' tables and the buffers between them.
pub async fn look_at(
    tables: &[(String, Table)],
    buffers: &[&ferry_aws::Buffer],
    config: &Config,
) -> Look {
    let mut backlog = 0;
    for b in buffers {
        backlog += ferry_cli::cluster::queue_depth(b)
            .await
            .unwrap_or(u64::MAX / 4);
    }
    let mut scans = Vec::new();
    for (region, table) in tables {
        let items = table
            .scan_all()
            .await
            .unwrap_or_else(|e| panic!("{region}: scan: {e}"));
        scans.push((region.clone(), items));
    }
    let snaps: Vec<(String, ferry_core::compare::Snapshot)> = scans
        .iter()
        .map(|(r, items)| (r.clone(), snapshot(items.iter().cloned(), config)))
        .collect();
    let unversioned = scans
        .iter()
        .flat_map(|(r, items)| {
            items
                .iter()
                .filter(|i| version_of(i, config).is_none())
                .map(move |i| (r.clone(), pk_of(i)))
        })
        .collect();
    Look {
        backlog,
        comparison: compare(&snaps),
        unversioned,
        scans,
    }
}

/// Polls `probe` until it has converged three looks in a row, half a second apart (so a write
/// still on its way through a stream cannot pass for convergence). `Err(last look)` after
/// `timeout`.
pub async fn poll_converged<F, Fut>(timeout: Duration, mut probe: F) -> Result<Look, Look>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Look>,
{
    let start = Instant::now();
    let mut in_a_row = 0;
    let mut slow_notes = 0;
    loop {
        let l = probe().await;
        if start.elapsed() > Duration::from_secs(10) && !l.converged() && slow_notes < 5 {
            slow_notes += 1;
            eprintln!(
                "still converging after {:.0} s: backlog {}, {} divergent keys, {} unversioned",
                start.elapsed().as_secs_f64(),
                l.backlog,
                l.comparison.divergent_keys(),
                l.unversioned.len()
            );
        }
        if l.converged() {
            in_a_row += 1;
            if in_a_row >= 3 {
                eprintln!("converged in {} ms", start.elapsed().as_millis());
                return Ok(l);
            }
        } else {
            in_a_row = 0;
        }
        if start.elapsed() > timeout {
            return Err(l);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the cluster has converged: every buffer empty, every region holding the same
/// items (versions included, tombstones read as absent), no item left unversioned — three looks
/// in a row. Returns the last look (its scans are the converged state). Panics with what
/// differs after `timeout`.
pub async fn wait_converged(cluster: &Cluster, timeout: Duration) -> Look {
    match poll_converged(timeout, || look(cluster)).await {
        Ok(l) => l,
        Err(l) => panic!(
            "no convergence after {} s:\n{}",
            timeout.as_secs(),
            describe(cluster, &l).await
        ),
    }
}

/// The keys that differ in a look, with each region's item, for a failure message.
pub fn differences(l: &Look, config: &Config) -> String {
    let mut out = format!(
        "backlog: {}\nunversioned items: {:?}\n",
        l.backlog, l.unversioned
    );
    let mut keys: BTreeSet<ItemKey> = l.comparison.differing.iter().cloned().collect();
    for (region, missing) in &l.comparison.missing {
        out.push_str(&format!("{region} misses {} keys\n", missing.len()));
        keys.extend(missing.iter().cloned());
    }
    for k in keys.iter().take(8) {
        out.push_str("key:\n");
        for (region, items) in &l.scans {
            let it = items.iter().find(|i| {
                ferry_core::item::key_of(i, &config.key)
                    .map(|kk| ItemKey::of(&kk) == *k)
                    .unwrap_or(false)
            });
            out.push_str(&format!("  {region}: {it:?}\n"));
        }
    }
    out
}

/// A readable account of a look that did not converge.
pub async fn describe(cluster: &Cluster, l: &Look) -> String {
    let mut out = format!(
        "backlog (source, destination, messages): {:?}\nDLQ messages: {}\n",
        cluster.backlog().await,
        cluster.dlq_depth().await
    );
    out.push_str(&differences(l, &config(cluster)));
    out.push_str(&format!("enqueue: {:?}\n", cluster.stats.enqueue_totals()));
    out.push_str(&format!("drain: {:?}\n", cluster.stats.drain_totals()));
    out
}

/// The standard end of a scenario: converged, the ledger's verdict clean, the DLQ empty.
pub async fn assert_converged_without_loss(cluster: &Cluster, ledger: &Mutex<Ledger>) -> Look {
    let l = wait_converged(cluster, CONVERGE_TIMEOUT).await;
    let config = config(cluster);
    let bad = lock(ledger).judge(&l.scans[0].1, &config);
    assert!(
        bad.is_empty(),
        "{} keys lost a write:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert_eq!(cluster.dlq_depth().await, 0, "the DLQ must stay empty");
    l
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            if start.elapsed() > Duration::from_secs(10) {
                eprintln!("waited {:.1} s for {what}", start.elapsed().as_secs_f64());
            }
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Buffers

/// The buffer pair from `source` to `destination`.
pub fn pair<'a>(cluster: &'a Cluster, source: &str, destination: &str) -> &'a BufferPair {
    cluster
        .buffers
        .iter()
        .find(|b| b.source == source && b.destination == destination)
        .unwrap_or_else(|| panic!("no buffer {source} → {destination}"))
}

/// Messages of a queue received and not yet deleted or released (in flight).
pub async fn in_flight(buffer: &ferry_aws::Buffer) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = buffer
        .client
        .get_queue_attributes()
        .queue_url(&buffer.queue_url)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetQueueAttributes: {e}"));
    out.attributes
        .and_then(|a| a.get(&A::ApproximateNumberOfMessagesNotVisible).cloned())
        .and_then(|v| v.parse().ok())
        .expect("ApproximateNumberOfMessagesNotVisible")
}

/// The change record enqueue would make for an item written at `source`.
pub fn record_of(item: &Item, source: &str, config: &Config) -> ChangeRecord {
    let version = version_of(item, config).expect("a versioned item");
    ChangeRecord {
        key: ferry_core::item::key_of(item, &config.key).expect("a key"),
        image: item.clone(),
        tombstone: config.is_tombstone(item),
        written_at_ms: version.ts_ms,
        version,
        source_region: source.to_string(),
    }
}

/// Sends raw bodies to a queue, one message each (checking SQS took every one).
pub async fn send_bodies(buffer: &ferry_aws::Buffer, bodies: &[String]) {
    let batch: ferry_core::buffer::BufferBatch = bodies
        .iter()
        .map(|b| ferry_core::buffer::BufferMessage {
            body: b.clone(),
            records: 1,
        })
        .collect();
    for chunk in batch.chunks(10) {
        let failed = buffer
            .send_batch(&chunk.to_vec())
            .await
            .unwrap_or_else(|e| panic!("SendMessageBatch: {e}"));
        assert!(failed.is_empty(), "SQS refused messages {failed:?}");
    }
}

/// Packs records into message bodies with the core's `pack`.
pub fn packed_bodies(records: &[ChangeRecord]) -> Vec<String> {
    ferry_core::buffer::pack(records)
        .expect("records fit")
        .into_iter()
        .flatten()
        .map(|m| m.body)
        .collect()
}

/// Every message of a DLQ with its `ferry-reason` attribute (received with a long visibility
/// timeout, so each is seen once). Waits until `expected` have arrived or `timeout` passes.
pub async fn dlq_messages(
    dlq: &ferry_aws::Buffer,
    expected: usize,
    timeout: Duration,
) -> Vec<(String, Option<String>)> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < expected && start.elapsed() < timeout {
        let got = dlq
            .receive_with_attributes(10, 1, Some(300), &[ferry_aws::buffer::REASON_ATTRIBUTE])
            .await
            .unwrap_or_else(|e| panic!("receiving from the DLQ: {e}"));
        for m in got {
            out.push((
                m.message.body.clone(),
                m.attributes
                    .get(ferry_aws::buffer::REASON_ATTRIBUTE)
                    .cloned(),
            ));
        }
    }
    out
}

/// An SDK item from the core's.
pub fn sdk(item: &Item) -> HashMap<String, SdkValue> {
    to_sdk(item)
}

/// Polls until the cluster has converged (as [`wait_converged`]: three looks in a row) or has
/// *settled without converging*: every buffer empty and every region's items unchanged, look
/// after look, for `quiet` — nothing left that could still change them, so waiting longer cannot
/// help. `Err(last look)` then, or after `timeout`. A divergent end is thus reported seconds
/// after it sets in instead of after the whole timeout.
pub async fn wait_converged_or_settled(
    cluster: &Cluster,
    quiet: Duration,
    timeout: Duration,
) -> Result<Look, Look> {
    let start = Instant::now();
    let mut in_a_row = 0;
    // The scans of the last look, and since when they have been unchanged with empty buffers.
    let mut last_scans = Vec::new();
    let mut still_since: Option<Instant> = None;
    loop {
        let l = look(cluster).await;
        if l.converged() {
            in_a_row += 1;
            if in_a_row >= 3 {
                eprintln!("converged in {} ms", start.elapsed().as_millis());
                return Ok(l);
            }
        } else {
            in_a_row = 0;
            if l.backlog != 0 || still_since.is_none() || last_scans != l.scans {
                still_since = (l.backlog == 0).then(Instant::now);
                last_scans = l.scans.clone();
            } else if still_since.is_some_and(|t| t.elapsed() >= quiet) {
                eprintln!(
                    "settled without converging after {} ms: buffers empty, nothing changed for {} s",
                    start.elapsed().as_millis(),
                    quiet.as_secs()
                );
                return Err(l);
            }
        }
        if start.elapsed() > timeout {
            return Err(l);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Pipelines with another configuration

/// A [`Cluster`]'s replication re-run with another configuration (an item filter, say): the
/// cluster's own stream pollers and drains are parked for good (their regions marked cut off:
/// they read and take nothing) and every region gets a new enqueue loop — the real handler on
/// its own reader of the region's stream, which starts at the trim horizon — and new drains,
/// all with the changed [`Config`]. The tables, buffers, proxies, stats and TTL processes stay
/// the cluster's, so [`look`], [`wait_converged`] and [`apps`] work as before. Start it before
/// the first write. An outage is then [`Rewired::begin_outage`] / [`Rewired::end_outage`] (the
/// cluster's own would wake its parked pipeline). Stop it with [`Rewired::shutdown`] before the
/// cluster's.
pub struct Rewired {
    /// Per region: set while it is cut off (its new pipeline waits).
    pub cut_off: Vec<Arc<std::sync::atomic::AtomicBool>>,
    /// Per region, the configuration the new pipeline runs with.
    pub configs: Vec<Config>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Re-runs `cluster`'s replication with every region's config changed by `change` (see
/// [`Rewired`]). The new settings are published on every table before any drain starts.
pub async fn rewire(cluster: &Cluster, change: impl Fn(&mut Config)) -> Rewired {
    use std::sync::atomic::{AtomicBool, Ordering};
    for r in &cluster.regions {
        r.cut_off.store(true, Ordering::SeqCst);
    }
    let configs: Vec<Config> = cluster
        .regions
        .iter()
        .map(|r| {
            let mut c = r.config.clone();
            change(&mut c);
            c.validate().expect("a valid changed config");
            c
        })
        .collect();
    let cut_off: Vec<Arc<AtomicBool>> = cluster
        .regions
        .iter()
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let (stop, _) = tokio::sync::watch::channel(false);
    let tasks = cluster
        .spawn_replication(&configs, &cut_off, &stop)
        .await
        .unwrap_or_else(|e| panic!("rewiring: {e}"));
    Rewired {
        cut_off,
        configs,
        stop,
        tasks,
    }
}

impl Rewired {
    /// Cuts region `i` off: its table refuses the cross-region path, its new pipeline waits.
    pub fn begin_outage(&self, cluster: &Cluster, i: usize) {
        self.cut_off[i].store(true, std::sync::atomic::Ordering::SeqCst);
        cluster.regions[i]
            .proxy
            .set_mode(ferry_sandbox::FaultMode::Refuse);
    }

    pub fn end_outage(&self, cluster: &Cluster, i: usize) {
        let mode = match cluster.options.rtt_ms {
            0 => ferry_sandbox::FaultMode::Pass,
            rtt => ferry_sandbox::FaultMode::Delay(Duration::from_millis(rtt / 2)),
        };
        cluster.regions[i].proxy.set_mode(mode);
        self.cut_off[i].store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops the new pipelines (the cluster's own stay parked).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}
