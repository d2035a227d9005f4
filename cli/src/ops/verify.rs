//! `ferry verify --regions a,b[,c]`: compares every region's table item by item (exact
//! attribute equality as DynamoDB defines it, versions included, tombstones read as absent).
//!
//! It scales past memory by **hash partitioning**: every region is scanned in parallel
//! (`--segments` per region) and each item is appended to a spill file on disk chosen by
//! `hash(key) % P` (`--partitions`); then partition p of every region is loaded and compared
//! with `ferry_core::compare`, one partition at a time. Memory is about (table size / P) per
//! region; disk holds one copy of every table. A key that differs is read again (consistent
//! GetItem in every region) before it is reported, so replication still in flight during a
//! long scan is not reported as a difference. `--repair` re-applies the newest version of each
//! differing key (tombstones included) to every region through the drain's LWW apply path.
//!
//! In attribute merge mode (`FERRY_MERGE_MODE=attribute`) the comparison is the same: an item
//! without application attributes reads as absent (a key invisible everywhere is not reported:
//! expired copies are legitimate), and equality covers the version map. `--repair` merges every
//! region's state of the key and writes the merge to every region through the drain's merge
//! path (`Table::merge_into`).

use super::target::{Target, TargetArgs};
use super::write_cap::{parse_max_wcu, WriteCap};
use super::{finish, progress, OpsError, EXIT_FOUND, EXIT_OK};
use clap::Args;
use ferry_aws::retry::while_throttled;
use ferry_aws::{ApplyOutcome, MergeOutcome, Table};
use ferry_core::codec::{decode_item, encode_item};
use ferry_core::compare::{compare, Comparison, Snapshot};
use ferry_core::item::{describe_key, key_of};
use ferry_core::merge::{merge_into, AttrState, Unversioned};
use ferry_core::{ChangeRecord, Config, Item, ItemKey, Judgement, MergeMode, Version};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Args, Clone, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The regions to compare, comma-separated (default with --local or --stack: every region of the sandbox or the stacks).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Parallel scan segments per region.
    #[arg(long, default_value_t = 4)]
    pub segments: u32,
    /// Spill partitions: memory is about table size / partitions.
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Where the spill files go (a temporary folder inside it, removed at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Re-apply the newest version of every differing key everywhere (LWW; attribute mode: the
    /// merge of every region's state).
    #[arg(long)]
    pub repair: bool,
    /// With --repair: at most N write units per second into each region's table; 0: no cap.
    #[arg(long, value_name = "N", value_parser = parse_max_wcu, requires = "repair")]
    pub max_wcu: Option<f64>,
    /// Print one JSON object (with every differing key) instead of the human report.
    #[arg(long)]
    pub json: bool,
    /// Check one key instead of the whole table: a JSON object of its key attributes, plain
    /// ('{"pk": "user#1", "sk": 7}') or typed ('{"pk": {"S": "user#1"}}'). Shows the copy in
    /// every region and how many messages wait in the buffers (and DLQs) toward it; they are
    /// counted, never received from (a receive counts toward maxReceiveCount), so which keys
    /// they hold is not read. With --repair, fixes just that key.
    #[arg(long, value_name = "JSON")]
    pub key: Option<String>,
}

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub regions: Vec<String>,
    pub segments: u32,
    pub partitions: u32,
    pub work_dir: Option<PathBuf>,
    pub repair: bool,
    /// `--max-wcu` (`None` or 0: no cap) for the repairs.
    pub max_wcu: Option<f64>,
    pub show_progress: bool,
}

/// One key that differs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Difference {
    pub key: String,
    /// `missing` (absent or a tombstone somewhere, present elsewhere) or `differing`.
    pub kind: String,
    /// Per region: the version held, `absent`, or `unversioned` (attribute mode: the newest
    /// entry and how many, `invisible` for an item without application attributes, and the
    /// attributes held without an entry).
    pub regions: BTreeMap<String, String>,
    /// What `--repair` did: `repaired`, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub table: String,
    pub regions: Vec<String>,
    pub scheme: String,
    /// Items scanned per region (tombstones and filtered items included).
    pub scanned: BTreeMap<String, u64>,
    pub matching: u64,
    /// Per region, keys present elsewhere and absent there.
    pub missing: BTreeMap<String, u64>,
    pub differing: u64,
    /// Keys that differed in the scan and matched when read again (replication in flight).
    pub settled_on_recheck: u64,
    pub differences: Vec<Difference>,
    pub repaired: u64,
    pub unrepaired: u64,
    /// With `--max-wcu`: the write units the repairs took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_units: Option<u64>,
    pub elapsed_s: f64,
}

impl VerifyReport {
    /// Differences left: after `--repair`, those it could not fix.
    pub fn clean(&self) -> bool {
        self.differences.len() as u64 == self.repaired
    }
}

/// The spill partition of a key: FNV-1a over its canonical bytes (stable across runs and
/// machines, unlike std's hasher).
pub fn partition_of(key: &ItemKey, partitions: u32) -> u32 {
    let mut h = ferry_core::digest::Fnv64::default();
    h.write(key.as_bytes());
    (h.finish() % u64::from(partitions.max(1))) as u32
}

/// How one region holds a key, for the report.
pub fn describe_state(item: Option<&Item>, config: &Config) -> String {
    if config.merge_mode == MergeMode::Attribute {
        return describe_attr_state(item, config);
    }
    match item {
        None => "absent".into(),
        Some(i) => {
            let v = match Version::of(i, &config.names) {
                Ok(Some(v)) => v.to_string(),
                Ok(None) => "unversioned".into(),
                Err(e) => format!("bad version ({e})"),
            };
            if config.is_tombstone(i) {
                format!("tombstone {v}")
            } else {
                v
            }
        }
    }
}

/// Attribute mode: `newest <entry> (<n> entries)`, `invisible` when the item holds no
/// application attribute, `unversioned a, b` for attributes without an entry.
fn describe_attr_state(item: Option<&Item>, config: &Config) -> String {
    let Some(item) = item else {
        return "absent".into();
    };
    let read = match AttrState::read(item, config) {
        Ok(r) => r,
        Err(e) => return format!("bad version map ({e})"),
    };
    let s = &read.state;
    let entries = s.versions.len() + usize::from(s.deleted.is_some());
    let mut out = match s.newest() {
        Some(v) => format!("newest {v} ({entries} entries)"),
        None => "no version map".into(),
    };
    if config.is_tombstone(item) {
        out = format!("invisible, {out}");
    }
    if !read.unversioned.is_empty() {
        out += &format!(", unversioned {}", read.unversioned.join(", "));
    }
    out
}

/// The newest versioned state of a key among the regions (tombstones included), with the
/// region holding it.
pub fn newest<'a>(
    states: &[(&'a str, Option<&'a Item>)],
    config: &Config,
) -> Option<(&'a str, &'a Item)> {
    states
        .iter()
        .filter_map(|(r, i)| {
            let i = (*i)?;
            let v = Version::of(i, &config.names).ok()??;
            Some((v, *r, i))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, r, i)| (r, i))
}

/// Adds one partition's comparison to the totals.
pub fn merge(total: &mut VerifyReport, part: &Comparison) {
    total.matching += part.matching as u64;
    for (region, keys) in &part.missing {
        *total.missing.entry(region.clone()).or_default() += keys.len() as u64;
    }
    total.differing += part.differing.len() as u64;
}

struct Spill {
    /// Per partition, the open file.
    files: Vec<Mutex<BufWriter<std::fs::File>>>,
}

fn spill_path(dir: &Path, region: &str, p: u32) -> PathBuf {
    dir.join(format!("{region}.{p}.bin"))
}

impl Spill {
    fn create(dir: &Path, region: &str, partitions: u32) -> Result<Spill, OpsError> {
        let files = (0..partitions)
            .map(|p| {
                let path = spill_path(dir, region, p);
                std::fs::File::create(&path)
                    .map(|f| Mutex::new(BufWriter::new(f)))
                    .map_err(OpsError::io(path.display().to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Spill { files })
    }

    fn append(&self, p: u32, item: &Item) -> Result<(), OpsError> {
        let bytes = encode_item(item);
        let mut f = self.files[p as usize]
            .lock()
            .map_err(|_| OpsError::Data("spill lock poisoned".into()))?;
        f.write_all(&(bytes.len() as u32).to_le_bytes())
            .and_then(|_| f.write_all(&bytes))
            .map_err(OpsError::io("writing a spill file"))
    }

    fn flush(&self) -> Result<(), OpsError> {
        for f in &self.files {
            f.lock()
                .map_err(|_| OpsError::Data("spill lock poisoned".into()))?
                .flush()
                .map_err(OpsError::io("writing a spill file"))?;
        }
        Ok(())
    }
}

/// Reads one spill file back: key → item (tombstones included).
fn load(path: &Path, config: &Config) -> Result<BTreeMap<ItemKey, Item>, OpsError> {
    let f = std::fs::File::open(path).map_err(OpsError::io(path.display().to_string()))?;
    let mut r = BufReader::new(f);
    let mut out = BTreeMap::new();
    let mut len = [0u8; 4];
    loop {
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(OpsError::io(path.display().to_string())(e)),
        }
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        r.read_exact(&mut buf)
            .map_err(OpsError::io(path.display().to_string()))?;
        let item = decode_item(&buf).map_err(|e| OpsError::Data(format!("spill file: {e}")))?;
        if let Ok(key) = key_of(&item, &config.key) {
            out.insert(ItemKey::of(&key), item);
        }
    }
}

fn visible(full: &BTreeMap<ItemKey, Item>, config: &Config) -> Snapshot {
    full.iter()
        .filter(|(_, i)| !config.is_tombstone(i))
        .map(|(k, i)| (k.clone(), i.clone()))
        .collect()
}

pub async fn run(target: &Target, options: &VerifyOptions) -> Result<VerifyReport, OpsError> {
    let started = Instant::now();
    let verification = Verification::open(target, options).await?;
    let scanned = verification.scan().await?;
    let partitions = verification.partitions;
    let mut report = VerifyReport {
        table: target.table_name.clone(),
        regions: verification.regions.clone(),
        scheme: format!(
            "hash-partitioned spill: every region scanned in {} segments into {} partitions on disk by FNV-1a(key) % {}, compared partition by partition; differing keys re-read before reporting",
            options.segments.max(1), partitions, partitions
        ),
        scanned,
        ..Default::default()
    };
    for p in 0..partitions {
        verification.compare_partition(p, &mut report).await?;
    }
    verification.bar.finish_and_clear();
    let cap = &verification.cap;
    report.write_units = cap.is_set().then(|| cap.totals().0);
    report.elapsed_s = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    Ok(report)
}

/// One verification under way: the regions' tables, the spill folder and the progress bar.
struct Verification<'a> {
    options: &'a VerifyOptions,
    regions: Vec<String>,
    tables: Vec<Table>,
    config: Config,
    partitions: u32,
    /// Removed when the verification ends.
    dir: tempfile::TempDir,
    bar: indicatif::ProgressBar,
    /// `--max-wcu` on the repairs' writes.
    cap: WriteCap,
}

impl<'a> Verification<'a> {
    /// Opens every region's table, checks that they replicate with the same settings, and makes
    /// the spill folder.
    async fn open(target: &Target, options: &'a VerifyOptions) -> Result<Self, OpsError> {
        let regions = target.regions(&options.regions)?;
        if regions.len() < 2 {
            return Err(OpsError::Usage("verify needs at least two regions".into()));
        }
        let partitions = options.partitions.clamp(1, 4096);
        let mut tables = Vec::new();
        for r in &regions {
            tables.push(target.table(r).await);
        }
        let config = target.config(&regions[0], &tables[0]).await?;
        let peers: Vec<(String, Table)> = regions[1..]
            .iter()
            .cloned()
            .zip(tables[1..].iter().cloned())
            .collect();
        super::target::check_peers(&config, &peers).await?;
        let dir = match &options.work_dir {
            Some(d) => tempfile::Builder::new()
                .prefix("ferry-verify-")
                .tempdir_in(d),
            None => tempfile::Builder::new().prefix("ferry-verify-").tempdir(),
        }
        .map_err(OpsError::io("creating the spill folder"))?;
        let bar = progress(
            options.show_progress,
            None,
            "{spinner} verify [{elapsed_precise}] {msg}",
        );
        Ok(Verification {
            options,
            regions,
            tables,
            config,
            partitions,
            dir,
            bar,
            cap: WriteCap::new(options.max_wcu),
        })
    }

    /// Scans every region in parallel into its spill files; the items scanned per region.
    async fn scan(&self) -> Result<BTreeMap<String, u64>, OpsError> {
        let scanned: Vec<AtomicU64> = self.regions.iter().map(|_| AtomicU64::new(0)).collect();
        let scans = (0..self.regions.len()).map(|i| self.scan_region(i, &scanned));
        futures::future::try_join_all(scans).await?;
        Ok(self
            .regions
            .iter()
            .zip(&scanned)
            .map(|(r, n)| (r.clone(), n.load(Ordering::Relaxed)))
            .collect())
    }

    /// Appends every replicated item of region `i` to the spill file of its key's partition.
    async fn scan_region(&self, i: usize, scanned: &[AtomicU64]) -> Result<(), OpsError> {
        let config = &self.config;
        let spill = Spill::create(self.dir.path(), &self.regions[i], self.partitions)?;
        let segments = self.options.segments.max(1) as i32;
        let starts = (0..segments).map(|s| (s, None)).collect();
        self.tables[i]
            .scan_parallel(
                segments,
                starts,
                None,
                |_, page| {
                    let spill = &spill;
                    async move {
                        for item in &page.items {
                            let Ok(key) = key_of(item, &config.key) else {
                                continue;
                            };
                            if !config.filter.admits(&key, &config.key, item, &Item::new()) {
                                continue;
                            }
                            // Rewritten every minute: copies differ while the next one travels.
                            let regions = self.regions.iter().map(String::as_str);
                            if ferry_core::heartbeat::is_sentinel_of_any(&config.key, item, regions)
                            {
                                continue;
                            }
                            spill
                                .append(partition_of(&ItemKey::of(&key), self.partitions), item)?;
                        }
                        scanned[i].fetch_add(page.items.len() as u64, Ordering::Relaxed);
                        self.show_scanned(scanned);
                        Ok::<bool, OpsError>(true)
                    }
                },
                || {},
            )
            .await?;
        spill.flush()
    }

    fn show_scanned(&self, scanned: &[AtomicU64]) {
        let counts: Vec<String> = self
            .regions
            .iter()
            .zip(scanned)
            .map(|(r, n)| format!("{r} {}", n.load(Ordering::Relaxed)))
            .collect();
        self.bar
            .set_message(format!("scanned {}", counts.join(", ")));
    }

    /// Compares partition `p` of every region, re-reads each key that differs, and adds what
    /// is confirmed to the report.
    async fn compare_partition(&self, p: u32, report: &mut VerifyReport) -> Result<(), OpsError> {
        let config = &self.config;
        self.bar
            .set_message(format!("comparing partition {}/{}", p + 1, self.partitions));
        let mut full = Vec::new();
        for r in &self.regions {
            full.push(load(&spill_path(self.dir.path(), r, p), config)?);
        }
        let snapshots: Vec<(String, Snapshot)> = self
            .regions
            .iter()
            .zip(&full)
            .map(|(r, f)| (r.clone(), visible(f, config)))
            .collect();
        let part = compare(&snapshots);
        let mut divergent: BTreeSet<ItemKey> = part.differing.iter().cloned().collect();
        for keys in part.missing.values() {
            divergent.extend(keys.iter().cloned());
        }
        // Re-read each divergent key everywhere: the scan is not a snapshot in time.
        let mut confirmed = Comparison {
            matching: part.matching,
            ..Default::default()
        };
        for k in divergent {
            let Some(key) = full
                .iter()
                .find_map(|f| f.get(&k))
                .and_then(|i| key_of(i, &config.key).ok())
            else {
                continue;
            };
            self.recheck_key(&key, report, &mut confirmed).await?;
        }
        merge(report, &confirmed);
        Ok(())
    }

    /// Reads a key that differed in the scan again in every region: one that now matches
    /// counts as settled; one that still differs is reported (and repaired with `--repair`).
    async fn recheck_key(
        &self,
        key: &Item,
        report: &mut VerifyReport,
        confirmed: &mut Comparison,
    ) -> Result<(), OpsError> {
        let config = &self.config;
        let mut now: Vec<Option<Item>> = Vec::new();
        for t in &self.tables {
            now.push(while_throttled(|| t.get(key), || {}).await?);
        }
        let single: Vec<(String, Snapshot)> = self
            .regions
            .iter()
            .zip(&now)
            .map(|(r, i)| (r.clone(), ferry_core::compare::snapshot(i.clone(), config)))
            .collect();
        let again = compare(&single);
        if again.is_converged() {
            report.settled_on_recheck += 1;
            confirmed.matching += 1;
            return Ok(());
        }
        let kind = if again.differing.is_empty() {
            "missing"
        } else {
            "differing"
        };
        for (r, keys) in &again.missing {
            confirmed
                .missing
                .entry(r.clone())
                .or_default()
                .extend(keys.iter().cloned());
        }
        confirmed.differing.extend(again.differing.iter().cloned());
        let states: Vec<(&str, Option<&Item>)> = self
            .regions
            .iter()
            .map(String::as_str)
            .zip(now.iter().map(Option::as_ref))
            .collect();
        let mut d = Difference {
            key: describe_key(key),
            kind: kind.into(),
            regions: states
                .iter()
                .map(|(r, i)| (r.to_string(), describe_state(*i, config)))
                .collect(),
            repair: None,
        };
        if self.options.repair {
            let cap = &self.cap;
            let outcome = repair(&self.regions, &self.tables, &states, config, cap).await?;
            if outcome == "repaired" {
                report.repaired += 1;
            } else {
                report.unrepaired += 1;
            }
            d.repair = Some(outcome);
        }
        report.differences.push(d);
        Ok(())
    }
}

/// Applies the newest versioned state of a key to every region (LWW; attribute mode: the merge
/// of every region's state), then checks that every region now reads the same.
pub(super) async fn repair(
    regions: &[String],
    tables: &[Table],
    states: &[(&str, Option<&Item>)],
    config: &Config,
    cap: &WriteCap,
) -> Result<String, OpsError> {
    if config.merge_mode == MergeMode::Attribute {
        return repair_attributes(regions, tables, states, config, cap).await;
    }
    let Some((holder, item)) = newest(states, config) else {
        return Ok(
            "not repaired: no region holds a versioned copy (stamp them first: ferry backfill)"
                .into(),
        );
    };
    let record = ChangeRecord::from_stored(item, holder, config)
        .map_err(|e| OpsError::Data(e.to_string()))?
        .ok_or_else(|| OpsError::Data("newest copy lost its version".into()))?;
    let mut pending = Vec::new();
    for (region, table) in regions.iter().zip(tables) {
        if region == holder {
            continue;
        }
        cap.take(region, &record.image).await;
        match while_throttled(
            || table.apply(&record, ferry_core::clock::system_now_ms(), config),
            || {},
        )
        .await?
        {
            ApplyOutcome::Written | ApplyOutcome::Judged(Judgement::Stale { .. }) => {}
            ApplyOutcome::Judged(Judgement::Conflict { .. }) => {}
            ApplyOutcome::Judged(Judgement::Pending(reason)) => {
                pending.push(format!("{region} ({reason:?})"))
            }
        }
    }
    if !pending.is_empty() {
        return Ok(format!(
            "not repaired: unversioned in {} (stamp it there first)",
            pending.join(", ")
        ));
    }
    recheck(regions, tables, &record.key, config).await
}

/// Attribute mode's repair: the merge of every region's state (as read by the re-check) written
/// to every region with the drain's read–merge–conditional write. A region holding attributes
/// without an entry waits for its own stamp, as the drain does.
async fn repair_attributes(
    regions: &[String],
    tables: &[Table],
    states: &[(&str, Option<&Item>)],
    config: &Config,
    cap: &WriteCap,
) -> Result<String, OpsError> {
    let Some(key) = states
        .iter()
        .find_map(|(_, i)| *i)
        .and_then(|i| key_of(i, &config.key).ok())
    else {
        return Ok("not repaired: no region holds the key".into());
    };
    let mut merged = AttrState::default();
    for (region, item) in states {
        if let Some(item) = item {
            let read = AttrState::read(item, config)
                .map_err(|e| OpsError::Data(format!("{region}: {}: {e}", describe_key(&key))))?;
            merge_into(&mut merged, &read.state);
        }
    }
    let mut pending = Vec::new();
    for (region, table) in regions.iter().zip(tables) {
        if cap.is_set() {
            cap.take(region, &merged.to_item(&key, config)).await;
        }
        let outcome = while_throttled(
            || table.merge_into(&key, |_| merged.clone(), Unversioned::Wait, config),
            || {},
        )
        .await?;
        match outcome {
            MergeOutcome::Written { .. } | MergeOutcome::Unchanged { .. } => {}
            MergeOutcome::Pending { unversioned } => pending.push(format!(
                "{region} holds {} without an entry (stamp it there first: ferry backfill from {region})",
                unversioned.join(", ")
            )),
            MergeOutcome::Contended => pending.push(format!("{region} kept changing")),
            MergeOutcome::Invalid(e) => pending.push(format!("{region}: {e}")),
        }
    }
    if !pending.is_empty() {
        return Ok(format!("not repaired: {}", pending.join("; ")));
    }
    recheck(regions, tables, &key, config).await
}

/// Reads the key in every region again: `repaired` if they now agree.
async fn recheck(
    regions: &[String],
    tables: &[Table],
    key: &Item,
    config: &Config,
) -> Result<String, OpsError> {
    let mut after = Vec::new();
    for (r, t) in regions.iter().zip(tables) {
        let i = while_throttled(|| t.get(key), || {}).await?;
        after.push((r.clone(), ferry_core::compare::snapshot(i, config)));
    }
    Ok(if compare(&after).is_converged() {
        "repaired".into()
    } else {
        "not repaired: a newer write arrived meanwhile (run verify again)".into()
    })
}

pub async fn main(args: VerifyArgs) -> ExitCode {
    if let Some(key) = args.key.clone() {
        return super::verify_key::main(args, key).await;
    }
    let json = args.json;
    let result = async {
        let target = Target::connect(&args.target).await?;
        run(
            &target,
            &VerifyOptions {
                regions: args.regions,
                segments: args.segments,
                partitions: args.partitions,
                work_dir: args.work_dir,
                repair: args.repair,
                max_wcu: args.max_wcu,
                show_progress: !json,
            },
        )
        .await
    }
    .await;
    finish("verify", json, result, render, |r| {
        if r.clean() {
            EXIT_OK
        } else {
            EXIT_FOUND
        }
    })
}

pub fn render(r: &VerifyReport) -> String {
    let mut out = format!(
        "verify {} across {} in {:.1} s: {}\n",
        r.table,
        r.regions.join(", "),
        r.elapsed_s,
        if r.differences.is_empty() {
            "identical".to_string()
        } else {
            format!("{} differing keys", r.differences.len())
        }
    );
    for (region, n) in &r.scanned {
        out += &format!("  scanned in {region:<16} {n}\n");
    }
    out += &format!("  matching                  {}\n", r.matching);
    for (region, n) in &r.missing {
        out += &format!("  missing in {region:<14} {n}\n");
    }
    out += &format!("  differing                 {}\n", r.differing);
    if r.settled_on_recheck > 0 {
        out += &format!(
            "  settled on re-read        {} (replication in flight during the scan)\n",
            r.settled_on_recheck
        );
    }
    for d in r.differences.iter().take(20) {
        let states: Vec<String> = d.regions.iter().map(|(r, s)| format!("{r}={s}")).collect();
        out += &format!("  {} {}: {}", d.kind, d.key, states.join(" "));
        if let Some(rep) = &d.repair {
            out += &format!(" → {rep}");
        }
        out.push('\n');
    }
    if r.differences.len() > 20 {
        out += &format!("  … {} more (--json lists all)\n", r.differences.len() - 20);
    }
    if r.repaired + r.unrepaired > 0 {
        out += &format!(
            "  repaired {} of {}\n",
            r.repaired,
            r.repaired + r.unrepaired
        );
    }
    if let Some(units) = r.write_units {
        out += &format!("  repairs took {units} write units under --max-wcu\n");
    }
    out += &format!("  ({})\n", r.scheme);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::AttributeValue;

    fn item(pk: &str, v: Option<(u64, &str)>) -> Item {
        let mut i: Item = [("pk".to_string(), AttributeValue::S(pk.into()))].into();
        if let Some((ts, o)) = v {
            Version::new(ts, o).stamp_into(&mut i, &Default::default());
        }
        i
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let keys: Vec<ItemKey> = (0..1000)
            .map(|i| ItemKey::of(&item(&format!("k{i}"), None)))
            .collect();
        let mut counts = [0u32; 8];
        for k in &keys {
            let p = partition_of(k, 8);
            assert_eq!(p, partition_of(k, 8));
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
        assert_eq!(partition_of(&keys[0], 1), 0);
    }

    #[test]
    fn newest_counts_tombstones_and_ignores_unversioned() {
        let config = Config::new("r1", "pk");
        let a = item("k", Some((5, "r1")));
        let mut tomb = item("k", Some((7, "r2")));
        tomb.insert(config.names.tombstone.clone(), AttributeValue::Bool(true));
        let plain = item("k", None);
        let states = [
            ("r1", Some(&a)),
            ("r2", Some(&tomb)),
            ("r3", Some(&plain)),
            ("r4", None),
        ];
        assert_eq!(newest(&states, &config), Some(("r2", &tomb)));
        assert_eq!(describe_state(Some(&tomb), &config), "tombstone 7@r2");
        assert_eq!(describe_state(Some(&plain), &config), "unversioned");
        assert_eq!(describe_state(None, &config), "absent");
        assert_eq!(newest(&[("r3", Some(&plain))], &config), None);
    }

    #[test]
    fn attribute_mode_compares_maps_and_hides_invisible_keys() {
        let mut config = Config::new("r1", "pk");
        config.merge_mode = MergeMode::Attribute;
        let with = |pk: &str, attrs: &[(&str, &str)], map: &[(&str, &str)]| {
            let mut i = item(pk, None);
            for (n, v) in attrs {
                i.insert(n.to_string(), AttributeValue::S(v.to_string()));
            }
            let map: Item = map
                .iter()
                .map(|(n, v)| (n.to_string(), AttributeValue::S(v.to_string())))
                .collect();
            i.insert(config.names.versions.clone(), AttributeValue::M(map));
            i
        };
        let keyed = |items: Vec<Item>| -> BTreeMap<ItemKey, Item> {
            items
                .into_iter()
                .map(|i| (ItemKey::of(&key_of(&i, &config.key).unwrap()), i))
                .collect()
        };
        // k1: same values, different entries; k2: deleted in r1, expired (gone) in r2;
        // k3: the same everywhere.
        let r1 = keyed(vec![
            with("k1", &[("a", "x")], &[("a", "5@r1")]),
            with("k2", &[], &[("pk", "9@r1")]),
            with("k3", &[("a", "y")], &[("a", "3@r2")]),
        ]);
        let r2 = keyed(vec![
            with("k1", &[("a", "x")], &[("a", "6@r2")]),
            with("k3", &[("a", "y")], &[("a", "3@r2")]),
        ]);
        let c = compare(&[
            ("r1".to_string(), visible(&r1, &config)),
            ("r2".to_string(), visible(&r2, &config)),
        ]);
        assert_eq!(c.matching, 1);
        assert_eq!(c.differing.len(), 1);
        assert!(c.missing.is_empty(), "an invisible key is not reported");
        let k1 = &r1[&c.differing[0]];
        assert_eq!(k1["pk"], AttributeValue::S("k1".into()));
        assert_eq!(describe_state(Some(k1), &config), "newest 5@r1 (1 entries)");
        let k2 = r1.values().find(|i| config.is_tombstone(i)).unwrap();
        assert_eq!(
            describe_state(Some(k2), &config),
            "invisible, newest 9@r1 (1 entries)"
        );
        let mut unstamped = k1.clone();
        unstamped.insert("b".into(), AttributeValue::S("z".into()));
        assert_eq!(
            describe_state(Some(&unstamped), &config),
            "newest 5@r1 (1 entries), unversioned b"
        );
    }

    #[test]
    fn merge_adds_partitions() {
        let mut total = VerifyReport::default();
        let k = ItemKey::of(&item("k", None));
        let part = Comparison {
            matching: 3,
            missing: [("r2".to_string(), vec![k.clone()])].into(),
            differing: vec![k],
        };
        merge(&mut total, &part);
        merge(&mut total, &part);
        assert_eq!(total.matching, 6);
        assert_eq!(total.missing["r2"], 2);
        assert_eq!(total.differing, 2);
    }
}
