//! `ferry conflicts list|show|reapply`: the conflicts the drains resolved, as each region's
//! conflict log keeps them (`ferry_core::conflict`, written by the drain that found them in its
//! destination region). `list` scans the logs; `show` puts the winner, read live from the
//! table, beside the loser, attribute by attribute; `reapply` writes the loser's content back
//! as a new, newer version through the application helper's stamped write (`ferry-client`), in
//! the region whose log holds the conflict. From there it replicates like any write. Nothing
//! is ever re-applied by itself: it is the operator's decision.

use super::target::{Target, TargetArgs};
use super::verify::describe_state;
use super::verify_key::parse_key;
use super::{finish, OpsError, EXIT_OK};
use crate::duration::parse_duration;
use clap::{Args, Subcommand};
use ferry_aws::values::to_sdk;
use ferry_aws::{ConflictLog, Table};
use ferry_core::conflict::{self, Entry, Reapply};
use ferry_core::item::describe_key;
use ferry_core::{AttributeValue, Config};
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The regions whose conflict logs are read, comma-separated (default with --local or
    /// --stack: every region).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Print JSON instead of the human report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Clone, Debug)]
pub enum ConflictsCommand {
    /// The conflicts kept in each region's log (newest first): key, both versions, both regions.
    List {
        #[command(flatten)]
        log: LogArgs,
        /// Only this key: a JSON object of its key attributes, as for `verify --key`.
        #[arg(long, value_name = "JSON")]
        key: Option<String>,
        /// Only the conflicts found within this long (e.g. 30m, 1h).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
    },
    /// One conflict: the winner (read live from the table) and the loser side by side.
    Show {
        #[command(flatten)]
        log: LogArgs,
        /// The conflict's id (from `list`).
        id: String,
    },
    /// Writes the loser's content back as a new, newer version where the conflict was found;
    /// it then replicates to every region like any write.
    Reapply {
        #[command(flatten)]
        log: LogArgs,
        /// The conflict's id (from `list`).
        id: String,
    },
}

/// One conflict as the operator sees it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ConflictView {
    pub id: String,
    /// Where it was found (the log that holds it).
    pub region: String,
    pub key: String,
    pub winner: String,
    pub winner_region: String,
    pub loser: String,
    pub loser_region: String,
    pub detected_at_ms: u64,
    pub age_s: u64,
    /// The loser was a delete.
    pub loser_tombstone: bool,
    /// False when the losing image was too big to keep: shown, not re-appliable.
    pub reappliable: bool,
    /// Attribute merge mode: the attributes whose values lost.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merged_away: Vec<String>,
}

impl ConflictView {
    pub fn of(e: &Entry, now_ms: u64) -> Self {
        ConflictView {
            id: e.id.clone(),
            region: e.region.clone(),
            key: describe_key(&e.key),
            winner: e.winner.to_string(),
            winner_region: e.winner.origin.clone(),
            loser: e.loser.to_string(),
            loser_region: e.loser.origin.clone(),
            detected_at_ms: e.detected_at_ms,
            age_s: now_ms.saturating_sub(e.detected_at_ms) / 1000,
            loser_tombstone: e.loser_tombstone,
            reappliable: e.reappliable(),
            merged_away: e.merged_away.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ListReport {
    pub conflicts: Vec<ConflictView>,
    /// Entries that could not be read (their id if known, and why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// Regions whose log could not be read, and why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
}

/// One attribute in `show`: the values as JSON (`null`: the side lacks it).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    pub name: String,
    pub winner: serde_json::Value,
    pub loser: serde_json::Value,
    pub differs: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShowReport {
    pub conflict: ConflictView,
    /// What the key holds now in the conflict's region (its version, or absent / tombstone).
    pub current: String,
    pub rows: Vec<Row>,
    /// Why the loser cannot be re-applied, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_reappliable: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReapplyReport {
    pub conflict: ConflictView,
    /// `put` (the loser's image) or `delete` (the loser was a delete).
    pub wrote: String,
    /// The new version written, in the conflict's region.
    pub version: String,
}

/// The conflict log of `region`.
async fn log_in(target: &Target, region: &str) -> Result<ConflictLog, OpsError> {
    let name = target.conflict_table_in(region).map_err(OpsError::Usage)?;
    let table = target.table(region).await;
    Ok(ConflictLog::new(Table::new(table.client, name)))
}

/// Every region's entries, filtered by key and age.
pub async fn list(
    target: &Target,
    regions: &[String],
    key: Option<&str>,
    since: Option<Duration>,
) -> Result<ListReport, OpsError> {
    let regions = target.regions(regions)?;
    let now = ferry_core::clock::system_now_ms();
    let key = match (key, regions.first()) {
        (Some(text), Some(first)) => {
            let table = target.table(first).await;
            let config = target.config(first, &table).await?;
            Some(parse_key(text, &config.key).map_err(OpsError::Usage)?)
        }
        _ => None,
    };
    let since_ms = since.map(|d| now.saturating_sub(d.as_millis() as u64));
    let mut report = ListReport::default();
    for region in &regions {
        let read = async {
            log_in(target, region)
                .await?
                .scan()
                .await
                .map_err(OpsError::from)
        };
        match read.await {
            Ok(entries) => {
                for e in entries {
                    match e {
                        Ok(e) if conflict::selected(&e, key.as_ref(), since_ms) => {
                            report.conflicts.push(ConflictView::of(&e, now))
                        }
                        Ok(_) => {}
                        Err(why) => report.unreadable.push(format!("{region}: {why}")),
                    }
                }
            }
            Err(e) => {
                report.errors.insert(region.clone(), e.to_string());
            }
        }
    }
    if !report.errors.is_empty() && report.errors.len() == regions.len() {
        let all: Vec<String> = report
            .errors
            .iter()
            .map(|(r, e)| format!("{r}: {e}"))
            .collect();
        return Err(OpsError::Data(format!(
            "no conflict log could be read: {}",
            all.join("; ")
        )));
    }
    report.conflicts.sort_by(|a, b| {
        b.detected_at_ms
            .cmp(&a.detected_at_ms)
            .then(a.id.cmp(&b.id))
    });
    Ok(report)
}

/// The entry `id` from the first region's log that holds it, with that region's table.
async fn find(target: &Target, regions: &[String], id: &str) -> Result<(Entry, Table), OpsError> {
    let mut errors = Vec::new();
    for region in target.regions(regions)? {
        let found = async {
            log_in(target, &region)
                .await?
                .get(id)
                .await
                .map_err(OpsError::from)
        };
        match found.await {
            Ok(Some(Ok(entry))) => return Ok((entry, target.table(&region).await)),
            Ok(Some(Err(why))) => return Err(OpsError::Data(format!("{region}: {id}: {why}"))),
            Ok(None) => {}
            Err(e) => errors.push(format!("{region}: {e}")),
        }
    }
    let also = if errors.is_empty() {
        String::new()
    } else {
        format!(" (logs not read: {})", errors.join("; "))
    };
    Err(OpsError::Usage(format!(
        "no conflict `{id}` in the logs (list them: ferry conflicts list){also}"
    )))
}

/// A value as `show` prints it: strings and numbers plain, the rest as DynamoDB JSON.
fn json_of(v: Option<&AttributeValue>) -> serde_json::Value {
    match v {
        None => serde_json::Value::Null,
        Some(AttributeValue::S(s)) => serde_json::Value::String(s.clone()),
        Some(AttributeValue::N(n)) => serde_json::from_str(n).unwrap_or(serde_json::json!(n)),
        Some(AttributeValue::Bool(b)) => serde_json::Value::Bool(*b),
        Some(other) => serde_json::to_value(other).unwrap_or_default(),
    }
}

/// One conflict with the winner as the table holds it now.
pub async fn show(target: &Target, regions: &[String], id: &str) -> Result<ShowReport, OpsError> {
    let (entry, table) = find(target, regions, id).await?;
    let config = target.config(&entry.region, &table).await?;
    let current = table.get(&entry.key).await?;
    // A delete's loser reads as absent; an image not kept shows no attributes.
    let rows = conflict::compare(current.as_ref(), entry.loser_image.as_ref(), &config)
        .into_iter()
        .map(|r| Row {
            differs: r.differs(),
            winner: json_of(r.winner.as_ref()),
            loser: json_of(r.loser.as_ref()),
            name: r.name,
        })
        .collect();
    Ok(ShowReport {
        conflict: ConflictView::of(&entry, ferry_core::clock::system_now_ms()),
        current: describe_state(current.as_ref(), &config),
        rows,
        not_reappliable: conflict::reapply(&entry).err().map(|e| e.to_string()),
    })
}

/// Writes the loser back in the conflict's region, stamped above what the key holds now.
pub async fn reapply(
    target: &Target,
    regions: &[String],
    id: &str,
) -> Result<ReapplyReport, OpsError> {
    let (entry, table) = find(target, regions, id).await?;
    let write = conflict::reapply(&entry).map_err(|e| OpsError::Usage(e.to_string()))?;
    let config = target.config(&entry.region, &table).await?;
    let version = write_back(&table, config, write.clone()).await?;
    Ok(ReapplyReport {
        conflict: ConflictView::of(&entry, ferry_core::clock::system_now_ms()),
        wrote: match write {
            Reapply::Put(_) => "put".into(),
            Reapply::Delete(_) => "delete".into(),
        },
        version: version.to_string(),
    })
}

/// The helper's stamped write of `write` into `table` (its region is `config`'s).
async fn write_back(
    table: &Table,
    config: Config,
    write: Reapply,
) -> Result<ferry_core::Version, OpsError> {
    let helper = ferry_client::Ferry::new(config).map_err(|e| OpsError::Data(e.to_string()))?;
    let put = table.client.put_item().table_name(&table.name);
    let written = match write {
        Reapply::Put(image) => {
            let request = helper
                .restore(put, to_sdk(&image))
                .map_err(|e| OpsError::Data(e.to_string()))?;
            request.send().await
        }
        Reapply::Delete(key) => helper.delete(put, to_sdk(&key)).send().await,
    };
    written
        .map(|w| w.version)
        .map_err(|e| OpsError::Data(format!("{}: {e}", table.name)))
}

pub async fn main(command: ConflictsCommand) -> ExitCode {
    match command {
        ConflictsCommand::List { log, key, since } => {
            let result = async {
                let target = Target::connect(&log.target).await?;
                list(&target, &log.regions, key.as_deref(), since).await
            }
            .await;
            finish("conflicts list", log.json, result, render_list, |r| {
                if r.errors.is_empty() {
                    EXIT_OK
                } else {
                    super::EXIT_ERROR
                }
            })
        }
        ConflictsCommand::Show { log, id } => {
            let result = async {
                let target = Target::connect(&log.target).await?;
                show(&target, &log.regions, &id).await
            }
            .await;
            finish("conflicts show", log.json, result, render_show, |_| EXIT_OK)
        }
        ConflictsCommand::Reapply { log, id } => {
            let result = async {
                let target = Target::connect(&log.target).await?;
                reapply(&target, &log.regions, &id).await
            }
            .await;
            finish(
                "conflicts reapply",
                log.json,
                result,
                render_reapply,
                |_| EXIT_OK,
            )
        }
    }
}

fn headline(c: &ConflictView) -> String {
    format!(
        "{}  {}  {}  winner {} ({})  loser {} ({}){}{}  {} s ago\n",
        c.id,
        c.region,
        c.key,
        c.winner,
        c.winner_region,
        c.loser,
        c.loser_region,
        if c.loser_tombstone { " a delete" } else { "" },
        if c.reappliable {
            ""
        } else {
            "  NOT RE-APPLIABLE"
        },
        c.age_s
    )
}

pub fn render_list(r: &ListReport) -> String {
    let mut out = format!("{} conflict(s)\n", r.conflicts.len());
    for c in &r.conflicts {
        out += &format!("  {}", headline(c));
    }
    for u in &r.unreadable {
        out += &format!("  unreadable: {u}\n");
    }
    for (region, e) in &r.errors {
        out += &format!("  {region}: log not read: {e}\n");
    }
    out
}

pub fn render_show(r: &ShowReport) -> String {
    let c = &r.conflict;
    let mut out = headline(c);
    out += &format!("  the key holds now: {}\n", r.current);
    let width = r
        .rows
        .iter()
        .map(|row| row.name.len())
        .max()
        .unwrap_or(0)
        .max(9);
    out += &format!(
        "  {:width$}  {:30}  {}\n",
        "attribute", "winner (now)", "loser"
    );
    for row in &r.rows {
        let mark = if row.differs { "*" } else { " " };
        out += &format!(
            "{mark} {:width$}  {:30}  {}\n",
            row.name,
            row.winner.to_string(),
            row.loser
        );
    }
    match &r.not_reappliable {
        Some(why) => out += &format!("  {why}\n"),
        None => out += &format!("  re-apply the loser: ferry conflicts reapply {}\n", c.id),
    }
    out
}

pub fn render_reapply(r: &ReapplyReport) -> String {
    format!(
        "conflict {}: the loser's {} written in {} as version {}; it replicates like any write\n",
        r.conflict.id, r.wrote, r.conflict.region, r.version
    )
}
