//! `ferry backfill --from A --to B[,C…]`: bootstrap a new region or re-seed one after a long
//! outage. A parallel scan of the source (`--segments`) stamps every unversioned item in place
//! first (the contract's bootstrap pass: the case-4 stamp for "no version", conditional on the
//! item still being unversioned, so it never overwrites a concurrent write), then applies every
//! versioned item (tombstones too) to each destination through the drain's own LWW apply path
//! — safe while replication runs. Throttling backs off and retries. After every page the
//! checkpoint file records, per segment, the last key done or that the segment is finished;
//! `--resume` continues from there without redoing a finished segment or page.
//!
//! In attribute merge mode (`FERRY_MERGE_MODE=attribute`) the same scan is the migration
//! (`docs/attribute-merge.md`): each item is re-stamped or stamped in the source as
//! `ferry_core::migrate` decides, and its state is merged into every destination through the
//! drain's merge path (`Table::merge_into`).

use super::target::{Target, TargetArgs};
use super::write_cap::{parse_max_wcu, WriteCap};
use super::{finish, progress, rate, OpsError, EXIT_FOUND, EXIT_OK};
use base64::Engine;
use clap::Args;
use ferry_aws::retry::while_throttled;
use ferry_aws::{ApplyOutcome, MergeOutcome, Table, WriteOutcome};
use ferry_core::codec::{decode_item, encode_item};
use ferry_core::item::{describe_key, key_of};
use ferry_core::merge::{AttrState, Unversioned};
use ferry_core::migrate::{self, WriteKind};
use ferry_core::rate::write_units;
use ferry_core::{ChangeRecord, Config, Item, Judgement, MergeMode};
use futures::stream::TryStreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Args, Clone, Debug)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The region whose table is read (and stamped where unversioned).
    #[arg(long)]
    pub from: String,
    /// The regions written, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// Parallel scan segments.
    #[arg(long, default_value_t = 4)]
    pub segments: u32,
    /// Items in flight per segment.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Items per scan page (DynamoDB's 1 MB page when unset).
    #[arg(long)]
    pub page_size: Option<i32>,
    /// The checkpoint file (default `ferry-backfill-<table>-<from>.json` in the current folder).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue the backfill recorded in the checkpoint file.
    #[arg(long)]
    pub resume: bool,
    /// At most N write units per second into each table written (every destination, and the
    /// source where items are stamped), so the backfill leaves a provisioned table's capacity to
    /// its application; 0: no cap.
    #[arg(long, value_name = "N", value_parser = parse_max_wcu)]
    pub max_wcu: Option<f64>,
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    pub json: bool,
}

/// What `run` needs besides the target.
#[derive(Clone, Debug)]
pub struct BackfillOptions {
    pub from: String,
    pub to: Vec<String>,
    pub segments: u32,
    pub concurrency: usize,
    pub page_size: Option<i32>,
    pub checkpoint: PathBuf,
    pub resume: bool,
    /// `--max-wcu` (`None` or 0: no cap).
    pub max_wcu: Option<f64>,
    pub show_progress: bool,
    /// Stop (as an interruption would) once this many segments have finished in this run.
    pub stop_after_segments: Option<usize>,
    /// Set (by Ctrl-C) to stop at the next page boundary, checkpoint saved.
    pub interrupted: Arc<AtomicBool>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BackfillReport {
    pub table: String,
    pub from: String,
    pub to: Vec<String>,
    pub segments: u32,
    /// `item` or `attribute` (`FERRY_MERGE_MODE`).
    pub merge_mode: String,
    /// Segments finished by an earlier run (skipped).
    pub segments_skipped: usize,
    /// Segments finished by this run.
    pub segments_finished: usize,
    /// Every segment is finished.
    pub complete: bool,
    pub scanned: u64,
    /// Attribute mode: items of item mode re-stamped in the source from their item version.
    pub restamped: u64,
    /// Unversioned items stamped in the source (attribute mode: items whose attributes without
    /// an entry were stamped).
    pub stamped: u64,
    /// Applications (item × destination) that wrote.
    pub applied: u64,
    /// Applications refused because the destination holds the same or a newer version
    /// (attribute mode: the merge changed nothing).
    pub stale: u64,
    /// Of those, a newer version from another region (shown, as the drain shows them; item
    /// mode only).
    pub conflicts: u64,
    /// Applications refused because the destination item is unversioned (attribute mode: holds
    /// attributes without an entry, or kept changing) — stamp it there first.
    pub pending: u64,
    /// Up to 20 of the pending keys, with their region.
    pub pending_keys: Vec<String>,
    /// Items the configured filter does not replicate, or deleted while being stamped.
    pub skipped: u64,
    pub throttled: u64,
    pub elapsed_s: f64,
    pub scanned_per_s: f64,
    pub stamped_per_s: f64,
    pub applied_per_s: f64,
    pub stale_per_s: f64,
    /// `--max-wcu`, and the write units taken under it (every write attempted, by item size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wcu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_units: Option<u64>,
    /// The checkpoint file, kept while the backfill is incomplete.
    pub checkpoint: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The checkpoint (pure bookkeeping)

/// What a backfill has done, per segment. Written after every page: a page is recorded only
/// once every one of its items is applied everywhere, so resuming never skips an item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub table: String,
    pub from: String,
    pub to: Vec<String>,
    pub segments: u32,
    /// The merge mode it ran in (checkpoints from before the mode existed are item mode's): a
    /// migration must not resume an item-mode backfill, whose finished segments it would skip.
    #[serde(default = "item_mode_name")]
    pub merge_mode: String,
    pub finished: BTreeSet<u32>,
    /// Per unfinished segment, the last key done (base64 of Ferry's item encoding).
    pub resume_after: BTreeMap<u32, String>,
}

fn item_mode_name() -> String {
    MergeMode::Item.name().into()
}

impl Checkpoint {
    pub fn new(
        table: &str,
        from: &str,
        to: &[String],
        segments: u32,
        merge_mode: MergeMode,
    ) -> Checkpoint {
        Checkpoint {
            table: table.into(),
            from: from.into(),
            to: to.to_vec(),
            segments,
            merge_mode: merge_mode.name().into(),
            finished: BTreeSet::new(),
            resume_after: BTreeMap::new(),
        }
    }

    /// A checkpoint can only be resumed by the same backfill.
    pub fn check_same(&self, other: &Checkpoint) -> Result<(), String> {
        let mut mine = self.to.clone();
        let mut theirs = other.to.clone();
        mine.sort();
        theirs.sort();
        if self.table != other.table
            || self.from != other.from
            || mine != theirs
            || self.segments != other.segments
            || self.merge_mode != other.merge_mode
        {
            return Err(format!(
                "the checkpoint is for table {} from {} to {} in {} segments in {} mode; this run is for table {} from {} to {} in {} segments in {} mode",
                self.table, self.from, self.to.join(","), self.segments, self.merge_mode,
                other.table, other.from, other.to.join(","), other.segments, other.merge_mode
            ));
        }
        Ok(())
    }

    /// The segments still to scan, each with the key to start after.
    pub fn starts(&self) -> Result<Vec<(i32, Option<Item>)>, String> {
        (0..self.segments)
            .filter(|s| !self.finished.contains(s))
            .map(|s| {
                let start = match self.resume_after.get(&s) {
                    None => None,
                    Some(text) => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .map_err(|e| format!("checkpoint segment {s}: {e}"))?;
                        Some(
                            decode_item(&bytes)
                                .map_err(|e| format!("checkpoint segment {s}: {e}"))?,
                        )
                    }
                };
                Ok((s as i32, start))
            })
            .collect()
    }

    /// Records a page of `segment` as done: the segment goes on after `next`, or is finished.
    pub fn page_done(&mut self, segment: u32, next: Option<&Item>) {
        match next {
            Some(key) => {
                let text = base64::engine::general_purpose::STANDARD.encode(encode_item(key));
                self.resume_after.insert(segment, text);
            }
            None => {
                self.resume_after.remove(&segment);
                self.finished.insert(segment);
            }
        }
    }

    pub fn is_complete(&self) -> bool {
        self.finished.len() as u32 >= self.segments
    }

    pub fn load(path: &Path) -> Result<Option<Checkpoint>, OpsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| OpsError::Data(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(OpsError::io(path.display().to_string())(e)),
        }
    }

    /// Written to a temporary file and renamed over the old one: never half written.
    pub fn save(&self, path: &Path) -> Result<(), OpsError> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| OpsError::Data(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(OpsError::io(tmp.display().to_string()))?;
        std::fs::rename(&tmp, path).map_err(OpsError::io(path.display().to_string()))
    }
}

// The decision per item is the core's: `ferry_core::backfill::step_for`.
pub use ferry_core::backfill::{step_for, Step};

// ---------------------------------------------------------------------------------------------
// The run

#[derive(Default)]
struct Counts {
    scanned: AtomicU64,
    restamped: AtomicU64,
    stamped: AtomicU64,
    applied: AtomicU64,
    stale: AtomicU64,
    conflicts: AtomicU64,
    pending: AtomicU64,
    skipped: AtomicU64,
    throttled: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

struct Run<'a> {
    config: Config,
    source: Table,
    destinations: Vec<(String, Table)>,
    counts: Counts,
    pending_keys: Mutex<Vec<String>>,
    checkpoint: Mutex<Checkpoint>,
    path: &'a Path,
    options: &'a BackfillOptions,
    finished_now: AtomicU64,
    cap: WriteCap,
}

pub async fn run(target: &Target, options: &BackfillOptions) -> Result<BackfillReport, OpsError> {
    let started = Instant::now();
    check_usage(options)?;
    let (source, config, destinations) = open_tables(target, options).await?;
    let checkpoint = starting_checkpoint(target, options, config.merge_mode)?;
    let starts = checkpoint.starts().map_err(OpsError::Data)?;
    let skipped_segments = checkpoint.finished.len();
    checkpoint.save(&options.checkpoint)?;
    let run = Run {
        config,
        source,
        destinations,
        counts: Counts::default(),
        pending_keys: Mutex::new(Vec::new()),
        checkpoint: Mutex::new(checkpoint),
        path: &options.checkpoint,
        options,
        finished_now: AtomicU64::new(0),
        cap: WriteCap::new(options.max_wcu),
    };
    run.scan(starts, started).await?;
    let complete = run.settle_checkpoint()?;
    Ok(run.report(target, skipped_segments, complete, started))
}

fn check_usage(options: &BackfillOptions) -> Result<(), OpsError> {
    if options.to.contains(&options.from) || options.to.is_empty() {
        return Err(OpsError::Usage(
            "--to must name other regions than --from".into(),
        ));
    }
    if options.segments == 0 || options.segments > 1_000_000 {
        return Err(OpsError::Usage("--segments must be 1..1000000".into()));
    }
    Ok(())
}

/// The source table and its configuration, and every destination table — each answering and
/// replicating with the source's settings.
async fn open_tables(
    target: &Target,
    options: &BackfillOptions,
) -> Result<(Table, Config, Vec<(String, Table)>), OpsError> {
    let mut regions = vec![options.from.clone()];
    regions.extend(options.to.iter().cloned());
    target.regions(&regions)?;
    let source = target.table(&options.from).await;
    let config = target.config(&options.from, &source).await?;
    let mut destinations = Vec::new();
    for d in &options.to {
        let t = target.table(d).await;
        t.ping().await?;
        destinations.push((d.clone(), t));
    }
    super::target::check_peers(&config, &destinations).await?;
    Ok((source, config, destinations))
}

/// The checkpoint to start from: the saved one with `--resume` (if it is of the same
/// backfill), a fresh one when none is saved; a saved one without `--resume` is refused.
fn starting_checkpoint(
    target: &Target,
    options: &BackfillOptions,
    merge_mode: MergeMode,
) -> Result<Checkpoint, OpsError> {
    let fresh = Checkpoint::new(
        &target.table_name,
        &options.from,
        &options.to,
        options.segments,
        merge_mode,
    );
    match Checkpoint::load(&options.checkpoint)? {
        Some(saved) if options.resume => {
            saved.check_same(&fresh).map_err(OpsError::Usage)?;
            Ok(saved)
        }
        Some(_) => Err(OpsError::Usage(format!(
            "checkpoint {} exists: pass --resume to continue that backfill, or remove it",
            options.checkpoint.display()
        ))),
        None => Ok(fresh),
    }
}

impl Run<'_> {
    /// Scans the source from the checkpoint's starts, every item stamped where needed and
    /// applied, the checkpoint saved after every page.
    async fn scan(
        &self,
        starts: Vec<(i32, Option<Item>)>,
        started: Instant,
    ) -> Result<(), OpsError> {
        let options = self.options;
        let estimate = self.source.describe().await.ok().and_then(|d| d.item_count);
        let bar = progress(
            options.show_progress,
            estimate.filter(|n| *n > 0).map(|n| n as u64),
            "{spinner} backfill [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        );
        let scan = self.source.scan_parallel(
            options.segments as i32,
            starts,
            options.page_size,
            |segment, page| {
                let bar = &bar;
                async move {
                    let n = page.items.len() as u64;
                    futures::stream::iter(page.items.into_iter().map(Ok::<Item, OpsError>))
                        .map_ok(|item| self.item(item))
                        .try_buffer_unordered(options.concurrency.max(1))
                        .try_collect::<Vec<()>>()
                        .await?;
                    add(&self.counts.scanned, n);
                    bar.inc(n);
                    bar.set_message(self.line(started));
                    self.page_done(segment as u32, page.next.as_ref())
                }
            },
            || add(&self.counts.throttled, 1),
        );
        let result = scan.await;
        bar.finish_and_clear();
        result
    }

    /// Whether every segment is finished; a finished backfill's checkpoint file is removed.
    fn settle_checkpoint(&self) -> Result<bool, OpsError> {
        let checkpoint = self
            .checkpoint
            .lock()
            .map(|c| c.clone())
            .map_err(|_| OpsError::Data("checkpoint lock poisoned".into()))?;
        let complete = checkpoint.is_complete();
        if complete {
            std::fs::remove_file(self.path)
                .map_err(OpsError::io(self.path.display().to_string()))?;
        }
        Ok(complete)
    }

    fn report(
        &self,
        target: &Target,
        segments_skipped: usize,
        complete: bool,
        started: Instant,
    ) -> BackfillReport {
        let options = self.options;
        let elapsed_s = started.elapsed().as_secs_f64();
        let c = &self.counts;
        BackfillReport {
            table: target.table_name.clone(),
            from: options.from.clone(),
            to: options.to.clone(),
            segments: options.segments,
            merge_mode: self.config.merge_mode.name().into(),
            segments_skipped,
            segments_finished: get(&self.finished_now) as usize,
            complete,
            scanned: get(&c.scanned),
            restamped: get(&c.restamped),
            stamped: get(&c.stamped),
            applied: get(&c.applied),
            stale: get(&c.stale),
            conflicts: get(&c.conflicts),
            pending: get(&c.pending),
            pending_keys: self
                .pending_keys
                .lock()
                .map(|k| k.clone())
                .unwrap_or_default(),
            skipped: get(&c.skipped),
            throttled: get(&c.throttled),
            elapsed_s: (elapsed_s * 100.0).round() / 100.0,
            scanned_per_s: rate(get(&c.scanned), elapsed_s),
            stamped_per_s: rate(get(&c.stamped), elapsed_s),
            applied_per_s: rate(get(&c.applied), elapsed_s),
            stale_per_s: rate(get(&c.stale), elapsed_s),
            checkpoint: (!complete).then(|| options.checkpoint.display().to_string()),
            max_wcu: options.max_wcu.filter(|_| self.cap.is_set()),
            write_units: self.cap.is_set().then(|| self.cap.totals().0),
        }
    }

    fn line(&self, started: Instant) -> String {
        let s = started.elapsed().as_secs_f64();
        let c = &self.counts;
        format!(
            "scanned {} ({}/s) restamped {} stamped {} applied {} ({}/s) stale {} pending {}",
            get(&c.scanned),
            rate(get(&c.scanned), s),
            get(&c.restamped),
            get(&c.stamped),
            get(&c.applied),
            rate(get(&c.applied), s),
            get(&c.stale),
            get(&c.pending)
        )
    }

    /// Records the page; `Ok(false)` stops the segment (an interruption asked for by tests).
    fn page_done(&self, segment: u32, next: Option<&Item>) -> Result<bool, OpsError> {
        let mut c = self
            .checkpoint
            .lock()
            .map_err(|_| OpsError::Data("checkpoint lock poisoned".into()))?;
        c.page_done(segment, next);
        c.save(self.path)?;
        if next.is_none() {
            add(&self.finished_now, 1);
        }
        let stop = self.options.interrupted.load(Ordering::SeqCst)
            || self
                .options
                .stop_after_segments
                .is_some_and(|k| get(&self.finished_now) as usize >= k);
        Ok(!stop)
    }

    /// Stamps the item if it is unversioned, then applies it to every destination.
    async fn item(&self, item: Item) -> Result<(), OpsError> {
        if self.config.merge_mode == MergeMode::Attribute {
            return self.item_attribute(item).await;
        }
        let mut current = Some(item);
        // Each failed stamp condition means a newer write; a handful of rounds settles any key.
        for _ in 0..16 {
            let now = ferry_core::clock::system_now_ms();
            match step_for(current.as_ref(), now, &self.config).map_err(OpsError::Data)? {
                Step::Skip => {
                    add(&self.counts.skipped, 1);
                    return Ok(());
                }
                Step::Apply(record) => return self.apply(&record).await,
                Step::Stamp { key, stamp } => {
                    if let Some(item) = &current {
                        self.cap.take(&self.options.from, item).await;
                    }
                    let outcome = while_throttled(
                        || self.source.stamp_if(&key, &stamp, &self.config),
                        || add(&self.counts.throttled, 1),
                    )
                    .await?;
                    current = match outcome {
                        WriteOutcome::Written => {
                            add(&self.counts.stamped, 1);
                            // Read back what is stored now (the stamp, or a write after it).
                            while_throttled(
                                || self.source.get(&key),
                                || add(&self.counts.throttled, 1),
                            )
                            .await?
                        }
                        WriteOutcome::ConditionFailed(stored) => stored,
                    };
                }
            }
        }
        Err(OpsError::Data(
            "an item kept changing while being stamped".into(),
        ))
    }

    /// Attribute mode: re-stamps or stamps the item in the source where it needs it, then
    /// merges its state into every destination.
    async fn item_attribute(&self, item: Item) -> Result<(), OpsError> {
        let mut current = Some(item);
        // As in item mode: each failed condition is a newer write, so a few rounds settle a key.
        for _ in 0..16 {
            let Some(item) = current else {
                // Deleted meanwhile (a hard delete: enqueue makes its tombstone).
                add(&self.counts.skipped, 1);
                return Ok(());
            };
            let key = key_of(&item, &self.config.key)
                .map_err(|k| OpsError::Data(format!("item lacks key attribute `{k}`")))?;
            if !self
                .config
                .filter
                .admits(&key, &self.config.key, &item, &Item::new())
            {
                add(&self.counts.skipped, 1);
                return Ok(());
            }
            let now = ferry_core::clock::system_now_ms();
            let step = migrate::step(&item, now, &self.config)
                .map_err(|e| OpsError::Data(format!("{}: {e}", describe_key(&key))))?;
            let (kind, write) = match step {
                migrate::Step::Empty => {
                    add(&self.counts.skipped, 1);
                    return Ok(());
                }
                migrate::Step::Ready(state) => return self.merge_everywhere(&key, &state).await,
                migrate::Step::Write { kind, write } => (kind, write),
            };
            self.cap.take(&self.options.from, &item).await;
            let outcome = while_throttled(
                || self.source.update_if(&write),
                || add(&self.counts.throttled, 1),
            )
            .await?;
            current = match outcome {
                WriteOutcome::Written => {
                    add(
                        match kind {
                            WriteKind::Restamp => &self.counts.restamped,
                            WriteKind::Stamp => &self.counts.stamped,
                        },
                        1,
                    );
                    // The state written; a write after it is stamped and sent by enqueue.
                    return self.merge_everywhere(&key, &write.merged).await;
                }
                WriteOutcome::ConditionFailed(stored) => stored,
            };
        }
        Err(OpsError::Data(
            "an item kept changing while being stamped".into(),
        ))
    }

    /// The drain's merge of `state` into each destination; a destination holding attributes
    /// without an entry (not stamped in its own region yet) is pending, as in the drain.
    async fn merge_everywhere(&self, key: &Item, state: &AttrState) -> Result<(), OpsError> {
        for (region, table) in &self.destinations {
            // A merge writes the item whole; each further round is billed too.
            let units = self
                .cap
                .is_set()
                .then(|| write_units(&state.to_item(key, &self.config)));
            self.cap.take_units(region, units.unwrap_or(1)).await;
            let outcome = while_throttled(
                || table.merge_into(key, |_| state.clone(), Unversioned::Wait, &self.config),
                || add(&self.counts.throttled, 1),
            )
            .await?;
            if let (Some(units), MergeOutcome::Written { rounds, .. }) = (units, &outcome) {
                self.cap.spend(
                    region,
                    u64::from(units) * u64::from(rounds.saturating_sub(1)),
                );
            }
            let reason = match outcome {
                MergeOutcome::Written { .. } => {
                    add(&self.counts.applied, 1);
                    continue;
                }
                MergeOutcome::Unchanged { .. } => {
                    add(&self.counts.stale, 1);
                    continue;
                }
                MergeOutcome::Pending { unversioned } => {
                    format!("unversioned {}", unversioned.join(", "))
                }
                MergeOutcome::Contended => "kept changing".to_string(),
                MergeOutcome::Invalid(e) => {
                    return Err(OpsError::Data(format!(
                        "{region}: {}: {e}",
                        describe_key(key)
                    )))
                }
            };
            self.pending(region, key, &reason);
        }
        Ok(())
    }

    fn pending(&self, region: &str, key: &Item, reason: &str) {
        add(&self.counts.pending, 1);
        if let Ok(mut keys) = self.pending_keys.lock() {
            if keys.len() < 20 {
                keys.push(format!("{region}: {} ({reason})", describe_key(key)));
            }
        }
    }

    async fn apply(&self, record: &ChangeRecord) -> Result<(), OpsError> {
        for (region, table) in &self.destinations {
            self.cap.take(region, &record.image).await;
            let outcome = while_throttled(
                || table.apply(record, ferry_core::clock::system_now_ms(), &self.config),
                || add(&self.counts.throttled, 1),
            )
            .await?;
            match outcome {
                ApplyOutcome::Written => add(&self.counts.applied, 1),
                ApplyOutcome::Judged(Judgement::Stale { .. }) => add(&self.counts.stale, 1),
                ApplyOutcome::Judged(Judgement::Conflict { .. }) => {
                    add(&self.counts.stale, 1);
                    add(&self.counts.conflicts, 1);
                }
                ApplyOutcome::Judged(Judgement::Pending(reason)) => {
                    self.pending(region, &record.key, &format!("{reason:?}"))
                }
            }
        }
        Ok(())
    }
}

pub fn default_checkpoint(table: &str, from: &str) -> PathBuf {
    PathBuf::from(format!("ferry-backfill-{table}-{from}.json"))
}

pub async fn main(args: BackfillArgs) -> ExitCode {
    let json = args.json;
    // Ctrl-C stops at the next page boundary with the checkpoint saved; a second one quits.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
                eprintln!("interrupted: finishing the pages in flight and saving the checkpoint (Ctrl-C again to quit now; --resume redoes those pages)");
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    let result = async {
        let target = Target::connect(&args.target).await?;
        let options = BackfillOptions {
            checkpoint: args
                .checkpoint
                .clone()
                .unwrap_or_else(|| default_checkpoint(&target.table_name, &args.from)),
            from: args.from,
            to: args.to,
            segments: args.segments,
            concurrency: args.concurrency,
            page_size: args.page_size,
            resume: args.resume,
            max_wcu: args.max_wcu,
            show_progress: !json,
            stop_after_segments: None,
            interrupted,
        };
        run(&target, &options).await
    }
    .await;
    finish("backfill", json, result, render, |r| {
        if r.complete && r.pending == 0 {
            EXIT_OK
        } else {
            EXIT_FOUND
        }
    })
}

pub fn render(r: &BackfillReport) -> String {
    let mut out = format!(
        "backfill {} from {} to {} ({} mode): {} in {:.1} s\n",
        r.table,
        r.from,
        r.to.join(","),
        r.merge_mode,
        if r.complete { "complete" } else { "INCOMPLETE" },
        r.elapsed_s
    );
    out += &format!(
        "  segments  {} finished now, {} earlier, of {}\n",
        r.segments_finished, r.segments_skipped, r.segments
    );
    if r.merge_mode == MergeMode::Attribute.name() {
        out += &format!(
            "  restamped {:>9}  (item-mode items, from their item version)\n",
            r.restamped
        );
    }
    for (name, n, per_s) in [
        ("scanned", r.scanned, r.scanned_per_s),
        ("stamped", r.stamped, r.stamped_per_s),
        ("applied", r.applied, r.applied_per_s),
        ("stale", r.stale, r.stale_per_s),
    ] {
        out += &format!("  {name:<9} {n:>9}  ({per_s}/s)\n");
    }
    out += &format!(
        "  conflicts {:>9}\n  pending   {:>9}\n  skipped   {:>9}\n  throttled {:>9}\n",
        r.conflicts, r.pending, r.skipped, r.throttled
    );
    if let (Some(cap), Some(units)) = (r.max_wcu, r.write_units) {
        out += &format!(
            "  capped    {units:>9} write units at most {cap} per second per table ({}/s overall)\n",
            rate(units, r.elapsed_s)
        );
    }
    for k in &r.pending_keys {
        out += &format!("  pending: {k}\n");
    }
    if r.pending > 0 {
        out += "  pending keys are unversioned in the destination: stamp them there (backfill from that region, or let its enqueue catch up), then run again\n";
    }
    if let Some(c) = &r.checkpoint {
        out += &format!("  checkpoint {c}: continue with --resume\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::reconcile::Stamp;
    use ferry_core::{AttributeValue, Version};

    fn item(pk: &str) -> Item {
        [
            ("pk".to_string(), AttributeValue::S(pk.into())),
            ("v".to_string(), AttributeValue::N("1".into())),
        ]
        .into()
    }

    #[test]
    fn checkpoint_records_pages_and_finished_segments() {
        let to = vec!["b".to_string()];
        let mut c = Checkpoint::new("t", "a", &to, 3, MergeMode::Item);
        assert_eq!(c.starts().unwrap().len(), 3);
        c.page_done(1, Some(&item("k7")));
        c.page_done(2, None);
        let starts = c.starts().unwrap();
        assert_eq!(starts.len(), 2);
        assert_eq!(starts[0], (0, None));
        assert_eq!(starts[1].0, 1);
        assert_eq!(starts[1].1.as_ref(), Some(&item("k7")));
        c.page_done(1, None);
        c.page_done(0, None);
        assert!(c.is_complete());
        assert!(c.resume_after.is_empty());
        // Round trip through JSON, and only the same backfill may resume it.
        let back: Checkpoint = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let same = |t, f, n, m| c.check_same(&Checkpoint::new(t, f, &to, n, m));
        assert!(same("t", "a", 3, MergeMode::Item).is_ok());
        assert!(same("t", "a", 4, MergeMode::Item).is_err());
        assert!(same("t", "c", 3, MergeMode::Item).is_err());
        assert!(
            same("t", "a", 3, MergeMode::Attribute).is_err(),
            "a migration does not resume an item-mode backfill"
        );
        // A checkpoint written before the mode was recorded is item mode's.
        let mut old = serde_json::to_value(&c).unwrap();
        old.as_object_mut().unwrap().remove("merge_mode");
        let old: Checkpoint = serde_json::from_value(old).unwrap();
        assert_eq!(old.merge_mode, "item");
    }

    #[test]
    fn unversioned_items_are_stamped_conditionally_versioned_ones_applied() {
        let config = Config::new("us-east-1", "pk");
        let plain = item("a");
        match step_for(Some(&plain), 1_000, &config).unwrap() {
            Step::Stamp {
                stamp: Stamp {
                    version, condition, ..
                },
                ..
            } => {
                assert_eq!(version, Version::new(1_000, "us-east-1"));
                // Never overwrites a concurrent write: only while still unversioned.
                assert!(condition.holds(Some(&plain)));
                let mut stamped = plain.clone();
                Version::new(999, "eu-west-1").stamp_into(&mut stamped, &config.names);
                assert!(!condition.holds(Some(&stamped)));
                assert!(!condition.holds(None));
            }
            other => panic!("{other:?}"),
        }
        let mut versioned = item("b");
        Version::new(5, "eu-west-1").stamp_into(&mut versioned, &config.names);
        match step_for(Some(&versioned), 1_000, &config).unwrap() {
            Step::Apply(r) => {
                assert_eq!(r.version, Version::new(5, "eu-west-1"));
                assert_eq!(r.image, versioned);
            }
            other => panic!("{other:?}"),
        }
        // Sealed, it is spread as it is.
        let mut sealed = versioned.clone();
        ferry_core::digest::seal(&mut sealed, &config.names);
        assert!(matches!(
            step_for(Some(&sealed), 1_000, &config).unwrap(),
            Step::Apply(r) if r.image == sealed
        ));
        // Unsealed (an application carried the version back over other content): stamped and
        // sealed first, never spread as it is.
        let mut unsealed = sealed.clone();
        unsealed.insert("v".into(), AttributeValue::S("changed".into()));
        match step_for(Some(&unsealed), 1_000, &config).unwrap() {
            Step::Stamp {
                stamp:
                    Stamp {
                        version,
                        sum,
                        condition,
                        ..
                    },
                ..
            } => {
                assert_eq!(version, Version::new(1_000, "us-east-1"));
                assert!(condition.holds(Some(&unsealed)));
                assert!(!condition.holds(Some(&sealed)), "pins the content as read");
                let mut after = unsealed.clone();
                version.stamp_into(&mut after, &config.names);
                after.insert(config.names.sum.clone(), sum);
                assert!(ferry_core::digest::is_sealed(&after, &config.names));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(step_for(None, 1_000, &config).unwrap(), Step::Skip);
        let mut filtered = config.clone();
        filtered.filter = ferry_core::ItemFilter::PartitionKeyPrefix("user#".into());
        assert_eq!(
            step_for(Some(&plain), 1_000, &filtered).unwrap(),
            Step::Skip
        );
    }
}
