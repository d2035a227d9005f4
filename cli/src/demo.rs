//! `ferry demo`: Ferry's main job on one machine. Starts a local sandbox, writes concurrently
//! into every region (stamped and unstamped puts, updates, deletes, shared keys so conflicts
//! happen), cuts one region off in the middle, brings it back, waits for convergence, verifies
//! every region item by item, and reports.
//!
//! `--workload disjoint` (with `--merge item|attribute`) instead has every region update its own
//! attribute of the same shared items and counts the acknowledged attribute writes lost
//! everywhere (`lost_updates`): item mode loses some, attribute mode must lose none
//! (`docs/attribute-merge.md`).

use crate::cluster::{Cluster, ClusterOptions, Region};
use crate::plot::{self, Picture, Series};
use crate::stats::{LagSample, Stats};
use crate::workload::{
    judge_losses, judge_lost_updates, own_attribute, seen_write, Ledger, LossReport, Made, Op,
    OpKind, Plan, Workload, PAYLOAD, WRITE_ID,
};
use aws_sdk_dynamodb::types::AttributeValue as SdkValue;
use ferry_aws::values::to_sdk;
use ferry_aws::MergeOutcome;
use ferry_core::compare::{compare, snapshot};
use ferry_core::merge::{write_delta, Unversioned};
use ferry_core::{AttributeValue, Config, Item, MergeMode, Version};
use ferry_drain::percentile;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub regions: usize,
    pub seed: u64,
    pub duration_s: u64,
    pub rate: u64,
    pub outage_s: u64,
    pub rtt_ms: u64,
    pub clock_skew_ms: i64,
    pub json: bool,
    pub plot: Option<PathBuf>,
    pub out_dir: PathBuf,
    pub converge_timeout_s: u64,
    pub merge_mode: MergeMode,
    pub workload: Workload,
}

/// Where the normal-operation lag went, measured by the drain for each applied record.
#[derive(Clone, Debug, Serialize, Default)]
pub struct LagBreakdown {
    /// Source write → on the buffer (stream, poller, enqueue).
    pub to_buffer: Percentiles,
    /// On the buffer → received by a drain.
    pub in_buffer: Percentiles,
    /// Received → applied (waiting for the previous take, then the conditional put).
    pub in_drain: Percentiles,
    /// Applied records that had been re-queued as pending (their key's local write was not
    /// stamped yet: ≥ 1 s delay by design), and the lag of all the others.
    pub retried: u64,
    pub lag_without_retried: Percentiles,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    pub regions: Vec<String>,
    pub seed: u64,
    pub duration_s: u64,
    pub rate: u64,
    pub rtt_ms: u64,
    pub clock_skew_ms: i64,
    pub merge_mode: String,
    pub workload: Workload,
    pub writes: u64,
    pub write_errors: u64,
    pub replicated: u64,
    pub conflicts: u64,
    /// Conflicts kept in the regions' conflict logs (`ferry conflicts list`), and a few of them.
    pub conflicts_logged: u64,
    pub conflict_examples: Vec<String>,
    pub stale: u64,
    pub stamps: u64,
    pub tombstones: u64,
    pub lost: u64,
    pub lost_examples: Vec<String>,
    /// The disjoint workload: acknowledged attribute writes whose final value no region holds
    /// (`None` for the mixed workload, which `lost` judges).
    pub lost_updates: Option<u64>,
    pub lost_update_examples: Vec<String>,
    pub divergent_keys: u64,
    pub items: u64,
    pub dlq: u64,
    pub lag_ms: Percentiles,
    pub lag_breakdown_ms: LagBreakdown,
    pub outage_region: String,
    pub outage_s: u64,
    pub backlog_peak: u64,
    pub converge_s: f64,
    pub settle_s: f64,
    pub sqs_requests_per_1000_records: f64,
    /// What applying a replicated change cost at the destination: records done (applied, stale
    /// or conflicting), the DynamoDB requests the drains spent on them (pings left out), and
    /// the ratio. Item mode: one conditional put each; attribute mode: a read and an update.
    pub changes_done: u64,
    pub apply_requests: u64,
    pub merge_reads: u64,
    pub merge_writes: u64,
    pub requests_per_change: f64,
    /// The most drain workers one tick ran for a destination, and the cap.
    pub drain_workers_max: u32,
    pub drain_workers_cap: u32,
    pub plot: Option<String>,
}

impl DemoReport {
    /// The demo's verdict: nothing lost, nothing divergent. Item mode's lost updates under the
    /// disjoint workload are the point of that run (reported, not a failure).
    pub fn passed(&self) -> bool {
        let updates_ok = self.merge_mode == MergeMode::Item.name()
            || self.lost_updates == Some(0)
            || self.lost_updates.is_none();
        self.lost == 0 && self.divergent_keys == 0 && updates_ok
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{0}")]
    Aws(#[from] ferry_aws::AwsError),
    #[error("{0}")]
    Plot(#[from] plot::PlotError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

/// Prints the demo's progress: on stdout, or on stderr when stdout carries the JSON report.
#[derive(Clone, Copy)]
struct Narrator {
    json: bool,
}

impl Narrator {
    fn say(self, s: &str) {
        if !self.json {
            println!("{s}");
        } else {
            eprintln!("{s}");
        }
    }
}

/// Runs the whole demo (the module's documentation says what it does) and returns its report.
pub async fn run(options: DemoOptions) -> Result<DemoReport, DemoError> {
    check_combination(&options)?;
    let narrator = Narrator { json: options.json };
    let cluster = Arc::new(start_cluster(&options, narrator).await?);
    let played = play(&cluster, &options, narrator).await?;
    let report = played.report(&cluster, &options).await?;
    if let Ok(c) = Arc::try_unwrap(cluster) {
        c.shutdown().await;
    }
    Ok(report)
}

/// What the scenario left behind to report on.
struct Played {
    names: Vec<String>,
    outage_region: String,
    config: Config,
    ledger: Ledger,
    write_errors: u64,
    /// When the cut-off region came back.
    returned: Instant,
    workload_end: Instant,
    convergence: Convergence,
    sampler: Sampler,
}

/// The scenario: the workload with the outage in it, then the wait for convergence.
async fn play(
    cluster: &Arc<Cluster>,
    options: &DemoOptions,
    narrator: Narrator,
) -> Result<Played, DemoError> {
    let names: Vec<String> = cluster.regions.iter().map(|r| r.name.clone()).collect();
    let mut outage = OutageSchedule::new(options, &names);
    let sampler = Sampler::spawn(cluster.clone(), &names);
    narrator.say(&format!(
        "{} workload, {} merge: {} writes/s for {} s into every region; {} goes dark at {} s \
         for {} s",
        options.workload.name(),
        options.merge_mode,
        options.rate,
        options.duration_s,
        outage.name,
        outage.begins_after.as_secs(),
        options.outage_s
    ));
    let (ledger, write_errors) = drive_workload(cluster, options, &mut outage, narrator).await;
    let returned = outage.complete(cluster, narrator).await;
    let workload_end = Instant::now();
    narrator.say("workload done; waiting for every region to converge");

    let config = cluster.regions[0].config.clone();
    let timeout = Duration::from_secs(options.converge_timeout_s);
    let convergence = Convergence::wait(cluster, &config, timeout).await?;
    sampler.stop();
    Ok(Played {
        names,
        outage_region: outage.name,
        config,
        ledger,
        write_errors,
        returned,
        workload_end,
        convergence,
        sampler,
    })
}

impl Played {
    /// Verifies every region item by item, judges the losses, and gathers the figures and the
    /// picture.
    async fn report(
        self,
        cluster: &Cluster,
        options: &DemoOptions,
    ) -> Result<DemoReport, DemoError> {
        let (comparison, raw) = compare_regions(cluster, &self.config).await?;
        let (losses, lost_updates) = judge(options.workload, &self.ledger, &raw, &self.config);
        let dlq = cluster.dlq_depth().await;
        let window = OutageWindow::recorded(&cluster.stats);
        let totals = PipelineTotals::of(&cluster.stats, options.regions);
        let normal = normal_lag_samples(&cluster.stats, window, self.convergence.replay_done);
        let series = self.sampler.series();
        let plot_path = draw_picture(options, &self.outage_region, &series, window)?;
        let (conflicts_logged, conflict_examples) = logged_conflicts(cluster).await;
        let (returned, workload_end) = (self.returned, self.workload_end);
        Ok(DemoReport {
            regions: self.names,
            seed: options.seed,
            duration_s: options.duration_s,
            rate: options.rate,
            rtt_ms: options.rtt_ms,
            clock_skew_ms: options.clock_skew_ms,
            merge_mode: options.merge_mode.name().to_string(),
            workload: options.workload,
            writes: (self.ledger.made.len() + self.ledger.attribute_writes.len()) as u64,
            write_errors: self.write_errors,
            replicated: totals.applied,
            conflicts: totals.conflicts,
            conflicts_logged,
            conflict_examples,
            stale: totals.stale,
            stamps: totals.stamps,
            tombstones: totals.tombstones,
            lost: losses.lost as u64,
            lost_examples: losses.examples,
            lost_updates: lost_updates.as_ref().map(|l| l.lost as u64),
            lost_update_examples: lost_updates.map(|l| l.examples).unwrap_or_default(),
            divergent_keys: comparison.divergent_keys() as u64,
            items: comparison.matching as u64,
            dlq,
            lag_ms: percentiles(normal.iter().map(|l| l.lag_ms).collect()),
            lag_breakdown_ms: breakdown(&normal),
            outage_region: self.outage_region,
            outage_s: options.outage_s,
            backlog_peak: backlog_peak(&series),
            converge_s: replay_seconds(&series, window.end_ms).unwrap_or_else(|| {
                self.convergence
                    .replay_done
                    .map(|r| r.saturating_duration_since(returned).as_secs_f64())
                    .unwrap_or(f64::NAN)
            }),
            settle_s: self
                .convergence
                .settled
                .map(|s| s.saturating_duration_since(workload_end).as_secs_f64())
                .unwrap_or(f64::NAN),
            sqs_requests_per_1000_records: totals.sqs_requests_per_1000_records(),
            changes_done: totals.changes_done,
            apply_requests: totals.apply_requests,
            merge_reads: totals.merge_reads,
            merge_writes: totals.merge_writes,
            requests_per_change: totals.apply_requests as f64 / totals.changes_done.max(1) as f64,
            drain_workers_max: totals.workers_max,
            drain_workers_cap: crate::drain_task::max_drain_concurrency(),
            plot: Some(plot_path.display().to_string()),
        })
    }
}

/// Conflicts shown as examples in the report.
const CONFLICT_EXAMPLES: usize = 3;

/// How many conflicts the regions' logs hold, and the newest few, as `ferry conflicts list`
/// reads them (a log that cannot be read counts none).
async fn logged_conflicts(cluster: &Cluster) -> (u64, Vec<String>) {
    let name = ferry_core::conflict::log_table_name(&cluster.options.table);
    let mut entries = Vec::new();
    for region in &cluster.regions {
        let log = ferry_aws::ConflictLog::new(region.table(&name));
        if let Ok(read) = log.scan().await {
            entries.extend(read.into_iter().flatten());
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.detected_at_ms));
    let examples = entries
        .iter()
        .take(CONFLICT_EXAMPLES)
        .map(|e| {
            format!(
                "{} {}: {} beat {} (ferry conflicts show {})",
                e.region,
                ferry_core::item::describe_key(&e.key),
                e.winner,
                e.loser,
                e.id
            )
        })
        .collect();
    (entries.len() as u64, examples)
}

/// The loss verdicts: the mixed workload's lost writes, or the disjoint workload's lost
/// attribute updates.
fn judge(
    workload: Workload,
    ledger: &Ledger,
    raw: &[Vec<Item>],
    config: &Config,
) -> (LossReport, Option<LossReport>) {
    match workload {
        Workload::Mixed => (judge_losses(ledger, &raw[0], config), None),
        Workload::Disjoint => (
            LossReport::default(),
            Some(judge_lost_updates(ledger, raw, config)),
        ),
    }
}

/// Refuses option combinations the demo cannot run.
fn check_combination(options: &DemoOptions) -> Result<(), DemoError> {
    if options.merge_mode == MergeMode::Attribute && options.workload == Workload::Mixed {
        // Its stamped puts and tombstones carry item versions, which an attribute-mode drain
        // refuses (a mode mismatch stops the pipeline).
        return Err(DemoError::Usage(
            "--merge attribute needs --workload disjoint (the mixed workload writes item-mode \
             versions)"
                .into(),
        ));
    }
    Ok(())
}

/// Starts the local sandbox and says where its endpoints are.
async fn start_cluster(options: &DemoOptions, narrator: Narrator) -> Result<Cluster, DemoError> {
    narrator.say(&format!(
        "starting a local sandbox: {} regions, rtt {} ms, clock skew {} ms",
        options.regions, options.rtt_ms, options.clock_skew_ms
    ));
    let cluster = Cluster::start(ClusterOptions {
        regions: options.regions,
        rtt_ms: options.rtt_ms,
        clock_skew_ms: options.clock_skew_ms,
        merge_mode: options.merge_mode,
        ..ClusterOptions::default()
    })
    .await?;
    for line in cluster.endpoint_lines() {
        narrator.say(&line);
    }
    Ok(cluster)
}

/// The outage of the last region: cut off a third of the way into the workload, back
/// `outage_s` later.
struct OutageSchedule {
    region: usize,
    name: String,
    begins_after: Duration,
    length: Duration,
    began: Option<Instant>,
    ended: Option<Instant>,
}

impl OutageSchedule {
    fn new(options: &DemoOptions, names: &[String]) -> Self {
        let region = options.regions - 1;
        OutageSchedule {
            region,
            name: names[region].clone(),
            begins_after: Duration::from_secs(options.duration_s / 3),
            length: Duration::from_secs(options.outage_s),
            began: None,
            ended: None,
        }
    }

    /// Between two writes: begins or ends the outage when its time has come.
    fn advance(&mut self, cluster: &Cluster, since_start: Duration, narrator: Narrator) {
        if self.began.is_none() && since_start >= self.begins_after {
            cluster.begin_outage(self.region);
            self.began = Some(Instant::now());
            narrator.say(&format!("{} is cut off", self.name));
        }
        if let (Some(began), None) = (self.began, self.ended) {
            if began.elapsed() >= self.length {
                self.end(cluster, narrator);
            }
        }
    }

    /// After the workload, which a short run ends before the outage does: begins it if it has
    /// not begun, waits out the rest of it and ends it. Returns when the region came back.
    async fn complete(&mut self, cluster: &Cluster, narrator: Narrator) -> Instant {
        if self.began.is_none() {
            cluster.begin_outage(self.region);
            self.began = Some(Instant::now());
        }
        if self.ended.is_none() {
            let left = self
                .length
                .saturating_sub(self.began.map(|s| s.elapsed()).unwrap_or_default());
            tokio::time::sleep(left).await;
            self.end(cluster, narrator);
        }
        self.ended.unwrap_or_else(Instant::now)
    }

    fn end(&mut self, cluster: &Cluster, narrator: Narrator) {
        cluster.end_outage(self.region);
        self.ended = Some(Instant::now());
        narrator.say(&format!("{} is back", self.name));
    }
}

/// Backlog and lag per region, sampled twice a second, for the picture and the backlog peak.
struct Sampler {
    series: Arc<Mutex<Vec<Series>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn spawn(cluster: Arc<Cluster>, names: &[String]) -> Sampler {
        let series = Arc::new(Mutex::new(
            names
                .iter()
                .map(|n| Series {
                    region: n.clone(),
                    ..Default::default()
                })
                .collect(),
        ));
        let task = tokio::spawn(sample_until_stopped(cluster, series.clone()));
        Sampler { series, task }
    }

    fn stop(&self) {
        self.task.abort();
    }

    fn series(&self) -> Vec<Series> {
        lock(&self.series).clone()
    }
}

async fn sample_until_stopped(cluster: Arc<Cluster>, series: Arc<Mutex<Vec<Series>>>) {
    // Per region, the lag samples already summarised: each window takes only the new ones.
    let mut seen_lag = vec![0usize; cluster.regions.len()];
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = cluster.stats.elapsed_ms() as f64 / 1000.0;
        let backlog = cluster.backlog().await;
        let lags = cluster.stats.lag_samples();
        for (i, series) in lock(&series).iter_mut().enumerate() {
            let into: u64 = backlog
                .iter()
                .filter(|b| b.1 == series.region)
                .map(|b| b.2)
                .sum();
            series.backlog.push((t, into as f64));
            if let Some(samples) = lags.get(&series.region) {
                let mut window: Vec<u64> =
                    samples[seen_lag[i]..].iter().map(|l| l.lag_ms).collect();
                seen_lag[i] = samples.len();
                if !window.is_empty() {
                    window.sort_unstable();
                    series
                        .lag_ms
                        .push((t, percentile(&window, 99.0).unwrap_or(0) as f64));
                }
            }
        }
    }
}

/// A lock that outlives a panicked holder: the demo's shared records stay readable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes `rate` operations a second for `duration_s` into every region, beginning and ending
/// the outage on its schedule. Returns the ledger of acknowledged writes and the failed count.
async fn drive_workload(
    cluster: &Arc<Cluster>,
    options: &DemoOptions,
    outage: &mut OutageSchedule,
    narrator: Narrator,
) -> (Ledger, u64) {
    let mut plan = Plan::new(options.seed, options.regions, 40, 20);
    let mut writers = Writers::new(cluster.clone());
    let start = Instant::now();
    for n in 0..options.rate * options.duration_s {
        let due = Duration::from_micros(n * 1_000_000 / options.rate.max(1));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        outage.advance(cluster, start.elapsed(), narrator);
        let op = match options.workload {
            Workload::Mixed => plan.next_op(),
            Workload::Disjoint => plan.next_disjoint_op(),
        };
        let payload = plan.payload(200);
        writers.start(op, payload).await;
    }
    writers.finish().await
}

/// The workload's writes in flight: at most 32 at once, and one at a time per key.
struct Writers {
    cluster: Arc<Cluster>,
    table: String,
    ledger: Arc<Mutex<Ledger>>,
    errors: Arc<AtomicU64>,
    limit: Arc<Semaphore>,
    key_locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    in_flight: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn new(cluster: Arc<Cluster>) -> Writers {
        Writers {
            table: cluster.options.table.clone(),
            cluster,
            ledger: Arc::new(Mutex::new(Ledger::default())),
            errors: Arc::new(AtomicU64::new(0)),
            limit: Arc::new(Semaphore::new(32)),
            key_locks: HashMap::new(),
            in_flight: Vec::new(),
        }
    }

    /// Starts one write once a slot and its key are free.
    async fn start(&mut self, op: Op, payload: String) {
        let permit = self.limit.clone().acquire_owned().await;
        // Writes to one key run one at a time, in order, so "the last write" means what it says.
        let key_lock = self
            .key_locks
            .entry(op.key.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
            .lock_owned()
            .await;
        let cluster = self.cluster.clone();
        let ledger = self.ledger.clone();
        let errors = self.errors.clone();
        let table = self.table.clone();
        self.in_flight.push(tokio::spawn(async move {
            let _permit = permit;
            let _key_lock = key_lock;
            let region = &cluster.regions[op.region];
            if let Err(e) = execute(&op, &payload, region, &table, &ledger).await {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "write failed");
            }
        }));
    }

    /// Waits for every write; the ledger and how many writes failed.
    async fn finish(self) -> (Ledger, u64) {
        for t in self.in_flight {
            let _ = t.await;
        }
        let ledger = match Arc::try_unwrap(self.ledger) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(shared) => std::mem::take(&mut *lock(&shared)),
        };
        (ledger, self.errors.load(Ordering::Relaxed))
    }
}

/// When every buffer was first found empty, and when every region was found equal twice in a
/// row (converged).
struct Convergence {
    replay_done: Option<Instant>,
    settled: Option<Instant>,
}

impl Convergence {
    async fn wait(
        cluster: &Cluster,
        config: &Config,
        timeout: Duration,
    ) -> Result<Convergence, DemoError> {
        let mut found = Convergence {
            replay_done: None,
            settled: None,
        };
        let mut equal_in_a_row = 0;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let backlog: u64 = cluster.backlog().await.iter().map(|b| b.2).sum();
            if backlog == 0 && found.replay_done.is_none() {
                found.replay_done = Some(Instant::now());
            }
            if backlog == 0 {
                let (cmp, _) = compare_regions(cluster, config).await?;
                if cmp.is_converged() {
                    equal_in_a_row += 1;
                    if equal_in_a_row >= 2 {
                        found.settled = Some(Instant::now());
                        break;
                    }
                } else {
                    equal_in_a_row = 0;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(found)
    }
}

/// The outage as the stats recorded it, in ms since the start (an outage still open ends where
/// it began; no outage is `0..0`).
#[derive(Clone, Copy)]
struct OutageWindow {
    start_ms: u64,
    end_ms: u64,
}

impl OutageWindow {
    fn recorded(stats: &Stats) -> Self {
        let (start_ms, end_ms) = stats
            .outages()
            .first()
            .map(|o| (o.1, o.2.unwrap_or(o.1)))
            .unwrap_or((0, 0));
        OutageWindow { start_ms, end_ms }
    }
}

/// The lag samples of normal operation: records written outside the outage and its replay.
fn normal_lag_samples(
    stats: &Stats,
    outage: OutageWindow,
    replay_done: Option<Instant>,
) -> Vec<LagSample> {
    let replay_end_ms = replay_done
        .map(|r| stats.elapsed_ms() - r.elapsed().as_millis() as u64)
        .unwrap_or(u64::MAX);
    let started = stats.started_epoch_ms();
    stats
        .lag_samples()
        .values()
        .flatten()
        .filter(|l| {
            let w = l.written_at_ms.saturating_sub(started);
            !(w + 1000 >= outage.start_ms && w <= replay_end_ms.max(outage.end_ms))
        })
        .copied()
        .collect()
}

/// What the enqueue and drain functions counted, summed over every region.
struct PipelineTotals {
    applied: u64,
    conflicts: u64,
    stale: u64,
    stamps: u64,
    tombstones: u64,
    /// Records put on buffers (each forwarded record goes to every other region).
    records: u64,
    sqs_requests: u64,
    changes_done: u64,
    apply_requests: u64,
    merge_reads: u64,
    merge_writes: u64,
    workers_max: u32,
}

impl PipelineTotals {
    fn of(stats: &Stats, regions: usize) -> Self {
        let enq = stats.enqueue_totals();
        let dr = stats.drain_totals();
        PipelineTotals {
            applied: dr.values().map(|d| d.applied).sum(),
            conflicts: dr.values().map(|d| d.conflicts).sum(),
            stale: dr.values().map(|d| d.stale).sum(),
            stamps: enq.values().map(|e| e.stamped).sum(),
            tombstones: enq.values().map(|e| e.tombstoned).sum(),
            records: enq.values().map(|e| e.forwarded).sum::<u64>() * (regions as u64 - 1),
            sqs_requests: enq.values().map(|e| e.sqs_requests).sum::<u64>()
                + dr.values().map(|d| d.sqs_requests).sum::<u64>(),
            changes_done: dr.values().map(|d| d.applied + d.stale + d.conflicts).sum(),
            apply_requests: dr
                .values()
                .map(|d| d.dynamodb_requests.saturating_sub(d.pings))
                .sum(),
            merge_reads: dr.values().map(|d| d.merge_reads).sum(),
            merge_writes: dr.values().map(|d| d.merge_writes).sum(),
            workers_max: dr.values().map(|d| d.workers_max).max().unwrap_or(0),
        }
    }

    fn sqs_requests_per_1000_records(&self) -> f64 {
        if self.records > 0 {
            self.sqs_requests as f64 * 1000.0 / self.records as f64
        } else {
            0.0
        }
    }
}

fn backlog_peak(series: &[Series]) -> u64 {
    series
        .iter()
        .flat_map(|s| s.backlog.iter().map(|p| p.1 as u64))
        .max()
        .unwrap_or(0)
}

/// Draws lag and backlog over time with the outage shaded; returns where the picture went.
fn draw_picture(
    options: &DemoOptions,
    outage_region: &str,
    series: &[Series],
    outage: OutageWindow,
) -> Result<PathBuf, DemoError> {
    std::fs::create_dir_all(&options.out_dir)?;
    let path = options
        .plot
        .clone()
        .unwrap_or_else(|| options.out_dir.join("demo.svg"));
    plot::draw(
        &Picture {
            title: format!(
                "Ferry demo: {} regions, {} writes/s, {} cut off for {} s",
                options.regions, options.rate, outage_region, options.outage_s
            ),
            series,
            outage: Some((
                outage.start_ms as f64 / 1000.0,
                outage.end_ms as f64 / 1000.0,
            )),
            outage_region: Some(outage_region.to_string()),
        },
        &path,
    )?;
    Ok(path)
}

/// Scans every region and compares; also returns every region's raw items (tombstones
/// included) for the loss verdicts.
async fn compare_regions(
    cluster: &Cluster,
    config: &Config,
) -> Result<(ferry_core::compare::Comparison, Vec<Vec<Item>>), DemoError> {
    let mut snaps = Vec::new();
    let mut raw = Vec::new();
    for r in &cluster.regions {
        let items = r.table(&cluster.options.table).scan_all().await?;
        snaps.push((r.name.clone(), snapshot(items.clone(), config)));
        raw.push(items);
    }
    Ok((compare(&snaps), raw))
}

/// The key attributes of the workload's item `key`.
fn key_item(config: &Config, key: &str) -> Item {
    [(
        config.key.partition.clone(),
        AttributeValue::S(key.to_string()),
    )]
    .into()
}

/// A write the demo's application could not make.
fn write_failed(message: String) -> ferry_aws::AwsError {
    ferry_aws::AwsError {
        operation: "demo write",
        kind: ferry_aws::ErrorKind::Other,
        code: None,
        message,
    }
}

/// The disjoint workload's write: `SET` of the region's own attribute to the write's id, as an
/// application in the region's merge mode writes it — attribute mode through the helper's
/// per-attribute stamp (`write_delta`, merged in with the drain's read–merge–update), item mode
/// as a stamped (`max(now, previous + 1)`) or plain UpdateItem. Acknowledged writes go in the
/// ledger.
async fn set_own_attribute(
    op: &Op,
    stamped: bool,
    region: &Region,
    table: &str,
    ledger: &Mutex<Ledger>,
) -> Result<(), ferry_aws::AwsError> {
    let attribute = own_attribute(op.region);
    let key = key_item(&region.config, &op.key);
    match region.config.merge_mode {
        MergeMode::Attribute => merge_own_attribute(op, &attribute, &key, region, table).await?,
        MergeMode::Item => {
            update_own_attribute(op, &attribute, &key, stamped, region, table).await?
        }
    }
    lock(ledger)
        .attribute_writes
        .push((op.key.clone(), attribute, op.id));
    Ok(())
}

/// Attribute mode: the helper's per-attribute stamp, merged in with the drain's
/// read–merge–update.
async fn merge_own_attribute(
    op: &Op,
    attribute: &str,
    key: &Item,
    region: &Region,
    table: &str,
) -> Result<(), ferry_aws::AwsError> {
    let config = &region.config;
    let changes = vec![(
        attribute.to_string(),
        Some(AttributeValue::N(op.id.to_string())),
    )];
    // An unreadable version map ends the write (the closure cannot return an error).
    let bad_map = Mutex::new(None);
    let outcome = region
        .table(table)
        .merge_into(
            key,
            |current| {
                write_delta(current, &changes, false, (region.clock)(), config).unwrap_or_else(
                    |e| {
                        *lock(&bad_map) = Some(e.to_string());
                        Default::default()
                    },
                )
            },
            Unversioned::Keep,
            config,
        )
        .await?;
    if let Some(e) = bad_map.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(write_failed(e));
    }
    if !matches!(outcome, MergeOutcome::Written { .. }) {
        return Err(write_failed(format!("{}: {outcome:?}", op.key)));
    }
    Ok(())
}

/// Item mode: a plain UpdateItem, or a stamped one as the helper updates.
async fn update_own_attribute(
    op: &Op,
    attribute: &str,
    key: &Item,
    stamped: bool,
    region: &Region,
    table: &str,
) -> Result<(), ferry_aws::AwsError> {
    let client = region.dynamo.client();
    let mut update = client
        .update_item()
        .table_name(table)
        .set_key(Some(to_sdk(key)))
        .expression_attribute_names("#a", attribute)
        .expression_attribute_values(":a", SdkValue::N(op.id.to_string()));
    update = if stamped {
        let current = region.table(table).get(key).await?;
        let fresh = version_above(current.as_ref(), (region.clock)(), region);
        let names = &region.config.names;
        // As the helper updates: the seal goes (no seal can be written for content
        // DynamoDB computes; without one, the fresh version is forwarded as it is).
        update
            .update_expression("SET #a = :a, #ts = :ts, #o = :o REMOVE #sum")
            .expression_attribute_names("#ts", &names.ts)
            .expression_attribute_names("#o", &names.origin)
            .expression_attribute_names("#sum", &names.sum)
            .expression_attribute_values(":ts", SdkValue::from(fresh.ts_value()))
            .expression_attribute_values(":o", SdkValue::from(fresh.origin_value()))
    } else {
        update.update_expression("SET #a = :a")
    };
    update
        .send()
        .await
        .map_err(|e| write_failed(e.to_string()))?;
    Ok(())
}

/// The version a stamped write of `region` takes at `now` (its clock): above the stored item's.
fn version_above(current: Option<&Item>, now: u64, region: &Region) -> Version {
    let previous = current.and_then(|c| Version::of(c, &region.config.names).ok().flatten());
    Version::new(
        previous.map_or(now, |p| now.max(p.ts_ms.saturating_add(1))),
        region.name.clone(),
    )
}

/// Makes one application write the way an application would, with the plain SDK client, and
/// records it in the ledger.
async fn execute(
    op: &Op,
    payload: &str,
    region: &Region,
    table: &str,
    ledger: &Mutex<Ledger>,
) -> Result<(), ferry_aws::AwsError> {
    if let OpKind::SetOwnAttribute { stamped } = op.kind {
        return set_own_attribute(op, stamped, region, table, ledger).await;
    }
    let config = &region.config;
    let client = region.dynamo.client();
    let key = key_item(config, &op.key);
    let current = region.table(table).get(&key).await?;
    let seen = seen_write(&lock(ledger), &op.key, current.as_ref(), config);
    let now = (region.clock)();
    let fresh = version_above(current.as_ref(), now, region);
    let mut item = key.clone();
    item.insert(WRITE_ID.into(), AttributeValue::N(op.id.to_string()));
    item.insert(PAYLOAD.into(), AttributeValue::S(payload.to_string()));
    match op.kind {
        OpKind::StampedPut => {
            // Stamped and sealed, as the helper puts.
            fresh.stamp_into(&mut item, &config.names);
            ferry_core::digest::seal(&mut item, &config.names);
            put(&client, table, &item).await?;
        }
        OpKind::PlainPut => put(&client, table, &item).await?,
        OpKind::Update => {
            client
                .update_item()
                .table_name(table)
                .set_key(Some(to_sdk(&key)))
                .update_expression("SET #w = :w, #p = :p")
                .expression_attribute_names("#w", WRITE_ID)
                .expression_attribute_names("#p", PAYLOAD)
                .expression_attribute_values(":w", SdkValue::N(op.id.to_string()))
                .expression_attribute_values(":p", SdkValue::S(payload.to_string()))
                .send()
                .await
                .map_err(|e| write_failed(e.to_string()))?;
        }
        OpKind::HardDelete => {
            client
                .delete_item()
                .table_name(table)
                .set_key(Some(to_sdk(&key)))
                .send()
                .await
                .map_err(|e| write_failed(e.to_string()))?;
        }
        OpKind::SetOwnAttribute { .. } => unreachable!("written by set_own_attribute"),
        OpKind::Tombstone => {
            let tomb = ferry_core::reconcile::tombstone_item(&key, &fresh, now, config);
            put(&client, table, &tomb).await?;
            lock(ledger)
                .tombstones
                .insert((op.key.clone(), fresh.clone()), op.id);
        }
    }
    lock(ledger).made.push(Made {
        op: op.clone(),
        seen,
    });
    Ok(())
}

/// A plain PutItem, as an application without Ferry's helper writes.
async fn put(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    item: &Item,
) -> Result<(), ferry_aws::AwsError> {
    client
        .put_item()
        .table_name(table)
        .set_item(Some(to_sdk(item)))
        .send()
        .await
        .map_err(|e| write_failed(e.to_string()))?;
    Ok(())
}

/// The report a person reads at a glance.
pub fn render(r: &DemoReport) -> String {
    let verdict = verdict(r);
    let mut out = String::new();
    out.push_str(&format!(
        "\n== Ferry demo: {verdict} ==\n\
         regions            {}\n\
         mode               {} merge, {} workload\n\
         writes             {} ({} writes/s for {} s, seed {}; {} failed at the client)\n\
         replicated         {} records applied ({} stale, {} conflicts, {} in the conflict log)\n\
         Ferry stamps       {} stamps, {} tombstones for unstamped writes and hard deletes\n\
         lag (normal)       p50 {} ms, p95 {} ms, p99 {} ms (rtt {} ms, clock skew {} ms)\n\
         lag, where         p50/p99 ms: write→buffer {}/{}, in buffer {}/{}, drain→applied {}/{}\n\
         lag, not retried   p50 {} ms, p99 {} ms ({} records were pending once, ≥ 1 s by design)\n\
         outage             {} cut off for {} s; backlog peak {} messages\n\
         replay             buffers empty {:.1} s after it came back\n\
         converged          {:.1} s after the workload ended\n\
         verified           {} items identical in every region; {} divergent keys\n\
         lost writes        {}\n\
         lost updates       {}\n\
         DLQ                {} messages\n\
         SQS requests       {:.1} per 1 000 replicated records\n\
         apply cost         {:.2} DynamoDB requests per replicated change ({} changes; {} \
         merge reads, {} merge updates)\n",
        r.regions.join(", "),
        r.merge_mode,
        r.workload.name(),
        r.writes,
        r.rate,
        r.duration_s,
        r.seed,
        r.write_errors,
        r.replicated,
        r.stale,
        r.conflicts,
        r.conflicts_logged,
        r.stamps,
        r.tombstones,
        r.lag_ms.p50,
        r.lag_ms.p95,
        r.lag_ms.p99,
        r.rtt_ms,
        r.clock_skew_ms,
        r.lag_breakdown_ms.to_buffer.p50,
        r.lag_breakdown_ms.to_buffer.p99,
        r.lag_breakdown_ms.in_buffer.p50,
        r.lag_breakdown_ms.in_buffer.p99,
        r.lag_breakdown_ms.in_drain.p50,
        r.lag_breakdown_ms.in_drain.p99,
        r.lag_breakdown_ms.lag_without_retried.p50,
        r.lag_breakdown_ms.lag_without_retried.p99,
        r.lag_breakdown_ms.retried,
        r.outage_region,
        r.outage_s,
        r.backlog_peak,
        r.converge_s,
        r.settle_s,
        r.items,
        r.divergent_keys,
        r.lost,
        lost_updates_line(r.lost_updates),
        r.dlq,
        r.sqs_requests_per_1000_records,
        r.requests_per_change,
        r.changes_done,
        r.merge_reads,
        r.merge_writes,
    ));
    out.push_str(&render_details(r));
    out
}

/// The lines under the table: the fan-out, examples of what was lost or in conflict, the
/// picture.
fn render_details(r: &DemoReport) -> String {
    let mut out = format!(
        "drain workers      up to {} per tick and destination (cap {})\n",
        r.drain_workers_max, r.drain_workers_cap
    );
    for e in r.lost_examples.iter().chain(&r.lost_update_examples) {
        out.push_str(&format!("  lost: {e}\n"));
    }
    out.extend(
        r.conflict_examples
            .iter()
            .map(|e| format!("  conflict: {e}\n")),
    );
    if let Some(p) = &r.plot {
        out.push_str(&format!("picture            {p}\n"));
    }
    out
}

/// The headline: converged or not, and whether item-level LWW lost updates on the way.
fn verdict(r: &DemoReport) -> &'static str {
    match (r.passed(), r.lost_updates) {
        (true, Some(n)) if n > 0 => "CONVERGED, updates lost (item-level LWW)",
        (true, _) => "CONVERGED, nothing lost",
        (false, _) => "FAILED",
    }
}

fn lost_updates_line(lost_updates: Option<u64>) -> String {
    lost_updates.map_or("not measured (mixed workload)".to_string(), |n| {
        format!("{n} acknowledged attribute writes missing everywhere")
    })
}

fn percentiles(mut v: Vec<u64>) -> Percentiles {
    v.sort_unstable();
    Percentiles {
        p50: percentile(&v, 50.0).unwrap_or(0),
        p95: percentile(&v, 95.0).unwrap_or(0),
        p99: percentile(&v, 99.0).unwrap_or(0),
    }
}

fn breakdown(samples: &[crate::stats::LagSample]) -> LagBreakdown {
    let parts: Vec<ferry_drain::LagParts> = samples.iter().filter_map(|l| l.parts).collect();
    LagBreakdown {
        to_buffer: percentiles(parts.iter().map(|p| p.to_buffer).collect()),
        in_buffer: percentiles(parts.iter().map(|p| p.in_buffer).collect()),
        in_drain: percentiles(parts.iter().map(|p| p.in_drain).collect()),
        retried: parts.iter().filter(|p| p.retried).count() as u64,
        lag_without_retried: percentiles(
            samples
                .iter()
                .filter(|l| !l.parts.is_some_and(|p| p.retried))
                .map(|l| l.lag_ms)
                .collect(),
        ),
    }
}

/// Seconds from the outage's end to the first sample with every buffer empty.
fn replay_seconds(series: &[Series], outage_end_ms: u64) -> Option<f64> {
    let end = outage_end_ms as f64 / 1000.0;
    let first = series.first()?;
    first
        .backlog
        .iter()
        .enumerate()
        .filter(|(_, p)| p.0 >= end)
        .find(|(i, _)| {
            series
                .iter()
                .all(|s| s.backlog.get(*i).is_some_and(|p| p.1 == 0.0))
        })
        .map(|(_, p)| p.0 - end)
}
