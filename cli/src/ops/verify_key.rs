//! `ferry verify --key '{"pk": "user#1"}'`: one key in every region — "did this key replicate?".
//!
//! Each region's copy is read with a consistent GetItem and described the way the full verify
//! describes a differing key (version, tombstone, absent, unversioned); the comparison is the
//! same (`ferry_core::compare`). `--repair` fixes the key through the full verify's repair (the
//! drain's LWW apply, or the merge in attribute mode).
//!
//! The buffers are never received from: a receive, even with a zero visibility timeout, counts
//! toward the buffer's maxReceiveCount and can push a record to the DLQ. So which records a
//! buffer holds for the key cannot be known; what is reported is how many messages wait in each
//! buffer and its DLQ toward each region (SQS's approximate counts), and whether a difference
//! can still be in flight.

use super::target::Target;
use super::verify::{describe_state, newest, repair, VerifyArgs};
use super::write_cap::WriteCap;
use super::{finish, OpsError, EXIT_FOUND, EXIT_OK};
use ferry_aws::retry::while_throttled;
use ferry_aws::Table;
use ferry_core::compare::{compare, snapshot, Snapshot};
use ferry_core::config::KeySchema;
use ferry_core::item::describe_key;
use ferry_core::{AttributeValue, Config, Item};
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// One region's copy of the key.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KeyCopy {
    /// As the full verify reports it: the version, `tombstone <version>`, `absent`,
    /// `unversioned` (attribute mode: the version map's newest entry).
    pub state: String,
    /// Whether an application reads the item (present and not a tombstone).
    pub visible: bool,
}

/// The messages waiting in the buffer from `source` toward `destination`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Waiting {
    pub source: String,
    pub destination: String,
    /// Visible, in flight and delayed messages (not only this key's: SQS cannot be asked).
    pub messages: Option<u64>,
    /// Messages in its DLQ (records the drain gave up on, this key's perhaps).
    pub dead: Option<u64>,
    /// Why the buffer could not be read (no queues known, access, endpoint down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KeyReport {
    pub table: String,
    pub key: String,
    pub regions: BTreeMap<String, KeyCopy>,
    /// Every region reads the same (tombstones as absent).
    pub same: bool,
    /// Whether the table's item filter (`FERRY_FILTER`) lets this key replicate at all.
    pub replicates: bool,
    /// The regions whose copy differs from the newest versioned one.
    pub behind: Vec<String>,
    /// The buffers toward the regions behind (toward every region when all agree).
    pub buffers: Vec<Waiting>,
    /// What the buffers say about a difference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<String>,
    /// What `--repair` did: `repaired`, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
}

impl KeyReport {
    /// Same everywhere, or made so by `--repair`.
    pub fn clean(&self) -> bool {
        self.same || self.repair.as_deref() == Some("repaired")
    }
}

/// Reads `--key`: a JSON object naming exactly the table's key attributes, each value plain
/// (`"user#1"`, `7`) or typed as DynamoDB writes it (`{"S": "user#1"}`, `{"N": "7"}`,
/// `{"B": "<base64>"}`).
pub fn parse_key(text: &str, schema: &KeySchema) -> Result<Item, String> {
    let doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("--key must be a JSON object ({e})"))?;
    let mut key = Item::new();
    for (name, value) in doc {
        if !schema.is_key(&name) {
            return Err(format!(
                "--key names `{name}`, which is not a key attribute of the table (key: {})",
                schema.names().collect::<Vec<_>>().join(", ")
            ));
        }
        key.insert(name.clone(), key_value(&name, value)?);
    }
    match schema.names().find(|n| !key.contains_key(*n)) {
        Some(missing) => Err(format!("--key lacks the key attribute `{missing}`")),
        None => Ok(key),
    }
}

/// One key attribute's value: a string, a number, or DynamoDB's typed `S`/`N`/`B`.
fn key_value(name: &str, value: serde_json::Value) -> Result<AttributeValue, String> {
    match value {
        serde_json::Value::String(s) => Ok(AttributeValue::S(s)),
        serde_json::Value::Number(n) => Ok(AttributeValue::N(n.to_string())),
        typed @ serde_json::Value::Object(_) => match serde_json::from_value(typed) {
            Ok(v @ (AttributeValue::S(_) | AttributeValue::N(_) | AttributeValue::B(_))) => Ok(v),
            Ok(_) => Err(format!("`{name}`: a key is a string, number or binary")),
            Err(e) => Err(format!("`{name}`: {e}")),
        },
        _ => Err(format!(
            "`{name}`: a key is a string, a number or typed ({{\"S\": …}}, {{\"N\": …}}, {{\"B\": …}})"
        )),
    }
}

/// The regions whose visible copy differs from the newest versioned copy's region (every region
/// but the agreeing ones when none is versioned: then all of them, if they differ).
pub fn behind(states: &[(&str, Option<&Item>)], config: &Config) -> Vec<String> {
    let views: Vec<(String, Snapshot)> = states
        .iter()
        .map(|(r, i)| (r.to_string(), snapshot(i.cloned(), config)))
        .collect();
    if compare(&views).is_converged() {
        return Vec::new();
    }
    let Some((holder, _)) = newest(states, config) else {
        return views.into_iter().map(|(r, _)| r).collect();
    };
    let Some(reference) = views.iter().find(|(r, _)| r == holder).cloned() else {
        return Vec::new();
    };
    views
        .iter()
        .filter(|view| !compare(&[reference.clone(), (*view).clone()]).is_converged())
        .map(|(r, _)| r.clone())
        .collect()
}

/// Whether the item filter admits the key: by its key, or by any region's copy (the filter
/// may name an attribute). A key absent everywhere has nothing to filter.
pub fn replicates(key: &Item, states: &[(&str, Option<&Item>)], config: &Config) -> bool {
    let none = Item::new();
    let copies: Vec<&Item> = states.iter().filter_map(|(_, i)| *i).collect();
    copies.is_empty()
        || copies
            .iter()
            .any(|i| config.filter.admits(key, &config.key, i, &none))
}

/// What the buffers toward the regions behind say: a difference with messages waiting may
/// still be in flight; one with every buffer empty is not (the drain has nothing left for it).
pub fn in_flight(behind: &[String], buffers: &[Waiting]) -> Option<String> {
    if behind.is_empty() {
        return None;
    }
    let toward: Vec<&Waiting> = buffers
        .iter()
        .filter(|w| behind.contains(&w.destination))
        .collect();
    let waiting: u64 = toward.iter().filter_map(|w| w.messages).sum();
    let unknown = toward.iter().any(|w| w.messages.is_none());
    let dead: Vec<String> = toward
        .iter()
        .filter(|w| w.dead.unwrap_or(0) > 0)
        .map(|w| format!("ferry dlq list --from {} --to {}", w.source, w.destination))
        .collect();
    Some(if waiting > 0 {
        format!(
            "{waiting} message(s) wait in the buffers toward {}: the change may still be in flight (run again in a minute)",
            behind.join(", ")
        )
    } else if unknown || toward.is_empty() {
        "the buffers could not be read: whether the change is in flight is unknown".into()
    } else if !dead.is_empty() {
        format!(
            "nothing waits in the buffers toward {}, but their DLQ holds messages: the change may be there ({})",
            behind.join(", "),
            dead.join("; ")
        )
    } else {
        format!(
            "nothing waits in the buffers toward {}: the change is not in flight (fix the key: --repair)",
            behind.join(", ")
        )
    })
}

/// Reads the key in every region, the buffers toward the regions behind, and repairs with
/// `--repair`.
pub async fn run(
    target: &Target,
    regions: &[String],
    key_text: &str,
    repair_key: bool,
) -> Result<KeyReport, OpsError> {
    let regions = target.regions(regions)?;
    let mut tables: Vec<Table> = Vec::new();
    for r in &regions {
        tables.push(target.table(r).await);
    }
    let first = tables
        .first()
        .ok_or_else(|| OpsError::Usage("verify --key needs a region".into()))?;
    let config = target.config(&regions[0], first).await?;
    let key = parse_key(key_text, &config.key).map_err(OpsError::Usage)?;
    let mut items: Vec<Option<Item>> = Vec::new();
    for t in &tables {
        items.push(while_throttled(|| t.get(&key), || {}).await?);
    }
    let states: Vec<(&str, Option<&Item>)> = regions
        .iter()
        .map(String::as_str)
        .zip(items.iter().map(Option::as_ref))
        .collect();
    let behind = behind(&states, &config);
    let toward = if behind.is_empty() { &regions } else { &behind };
    let buffers = waiting(target, &regions, toward).await;
    let replicates = replicates(&key, &states, &config);
    let repair = match (repair_key && !behind.is_empty(), replicates) {
        (false, _) => None,
        // The full verify skips such keys too: a difference is what the filter asks for.
        (true, false) => Some("not repaired: the item filter leaves this key out".into()),
        // One key, a write per region: no cap to hold it to.
        (true, true) => {
            let cap = WriteCap::default();
            Some(repair(&regions, &tables, &states, &config, &cap).await?)
        }
    };
    Ok(KeyReport {
        table: target.table_name.clone(),
        key: describe_key(&key),
        regions: states
            .iter()
            .map(|(r, i)| {
                let copy = KeyCopy {
                    state: describe_state(*i, &config),
                    visible: i.is_some_and(|i| !config.is_tombstone(i)),
                };
                (r.to_string(), copy)
            })
            .collect(),
        same: behind.is_empty(),
        replicates,
        in_flight: in_flight(&behind, &buffers),
        behind,
        buffers,
        repair,
    })
}

/// The depth of every buffer from another region toward each region of `toward`; a buffer that
/// cannot be read is reported, not fatal (the table's answer stands on its own).
async fn waiting(target: &Target, regions: &[String], toward: &[String]) -> Vec<Waiting> {
    let mut out = Vec::new();
    for destination in toward {
        for source in regions.iter().filter(|s| *s != destination) {
            let depths = match target.queues(source, destination).await {
                Ok((buffer, dlq)) => match (buffer.depth().await, dlq.depth().await) {
                    (Ok(b), Ok(d)) => Ok((b.total(), d.total())),
                    (Err(e), _) | (_, Err(e)) => Err(OpsError::from(e)),
                },
                Err(e) => Err(e),
            };
            out.push(Waiting {
                source: source.clone(),
                destination: destination.clone(),
                messages: depths.as_ref().ok().map(|d| d.0),
                dead: depths.as_ref().ok().map(|d| d.1),
                error: depths.err().map(|e| e.to_string()),
            });
        }
    }
    out
}

pub async fn main(args: VerifyArgs, key: String) -> ExitCode {
    let json = args.json;
    let result = async {
        let target = Target::connect(&args.target).await?;
        run(&target, &args.regions, &key, args.repair).await
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

pub fn render(r: &KeyReport) -> String {
    let verdict = if r.same {
        "the same everywhere"
    } else {
        "differs"
    };
    let mut out = format!("verify {} key {}: {verdict}\n", r.table, r.key);
    for (region, copy) in &r.regions {
        let mark = if r.behind.contains(region) {
            "  ← behind"
        } else {
            ""
        };
        out += &format!("  {region:<16} {}{mark}\n", copy.state);
    }
    for w in &r.buffers {
        let depth = match (&w.messages, &w.error) {
            (Some(n), _) => format!("{n} message(s) waiting, {} in its DLQ", w.dead.unwrap_or(0)),
            (None, Some(e)) => format!("unreadable ({e})"),
            (None, None) => "unknown".into(),
        };
        out += &format!("  buffer {} → {}: {depth}\n", w.source, w.destination);
    }
    if !r.replicates {
        out += "  the item filter (FERRY_FILTER) leaves this key out: it does not replicate\n";
    }
    if let Some(note) = &r.in_flight {
        out += &format!("  {note}\n");
    }
    if let Some(rep) = &r.repair {
        out += &format!("  repair: {rep}\n");
    }
    out += "  (buffers are counted, never received from: which keys they hold is not read)\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::Version;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn with_sort() -> KeySchema {
        KeySchema {
            partition: "pk".into(),
            sort: Some("sk".into()),
        }
    }

    #[test]
    fn keys_are_read_plain_or_typed() {
        let config = Config::new("r1", "pk");
        assert_eq!(
            parse_key(r#"{"pk": "user#1"}"#, &config.key),
            Ok([("pk".to_string(), s("user#1"))].into())
        );
        assert_eq!(
            parse_key(r#"{"pk": {"S": "user#1"}}"#, &config.key),
            Ok([("pk".to_string(), s("user#1"))].into())
        );
        let both = parse_key(r#"{"pk": "a", "sk": 7}"#, &with_sort()).unwrap();
        assert_eq!(both["sk"], AttributeValue::N("7".into()));
        let typed = parse_key(r#"{"pk": {"B": "AAE="}, "sk": {"N": "7"}}"#, &with_sort());
        assert_eq!(typed.unwrap()["pk"], AttributeValue::B(vec![0, 1]));
    }

    #[test]
    fn keys_that_do_not_fit_the_table_are_refused() {
        let config = Config::new("r1", "pk");
        let err = |text: &str, schema: &KeySchema| parse_key(text, schema).unwrap_err();
        assert!(err(r#"{"pk": "a"}"#, &with_sort()).contains("lacks the key attribute `sk`"));
        assert!(err(r#"{"pk": "a", "v": 1}"#, &config.key).contains("`v`"));
        assert!(err(r#"{"pk": true}"#, &config.key).contains("`pk`"));
        assert!(err(r#"{"pk": {"SS": ["a"]}}"#, &config.key).contains("`pk`"));
        assert!(err(r#"["a"]"#, &config.key).contains("JSON object"));
        assert!(err("pk=a", &config.key).contains("JSON object"));
    }

    fn copy(v: &str, ts: u64, origin: &str) -> Item {
        let mut i: Item = [("pk".to_string(), s("k")), ("v".to_string(), s(v))].into();
        Version::new(ts, origin).stamp_into(&mut i, &Default::default());
        i
    }

    #[test]
    fn the_regions_behind_are_those_unlike_the_newest_copy() {
        let config = Config::new("r1", "pk");
        let old = copy("a", 5, "r1");
        let new = copy("b", 9, "r2");
        let states = [("r1", Some(&old)), ("r2", Some(&new)), ("r3", Some(&old))];
        assert_eq!(behind(&states, &config), vec!["r1", "r3"]);
        assert_eq!(behind(&[("r1", Some(&new)), ("r2", None)], &config), ["r2"]);
        assert!(behind(&[("r1", Some(&old)), ("r2", Some(&old))], &config).is_empty());
        // A tombstone reads as absent: a deleted key is the same everywhere.
        let mut tomb = copy("a", 9, "r2");
        tomb.insert(config.names.tombstone.clone(), AttributeValue::Bool(true));
        assert!(behind(&[("r1", Some(&tomb)), ("r2", None)], &config).is_empty());
        // A newer tombstone: the region still showing the item is behind.
        assert_eq!(
            behind(&[("r1", Some(&old)), ("r2", Some(&tomb))], &config),
            ["r1"]
        );
        // Nothing versioned: every region is suspect.
        let plain: Item = [("pk".to_string(), s("k"))].into();
        assert_eq!(
            behind(&[("r1", Some(&plain)), ("r2", None)], &config),
            ["r1", "r2"]
        );
    }

    #[test]
    fn a_filtered_key_does_not_replicate() {
        let mut config = Config::new("r1", "pk");
        config.filter = ferry_core::config::ItemFilter::PartitionKeyPrefix("user#".into());
        let k: Item = [("pk".to_string(), s("k"))].into();
        let c = copy("a", 5, "r1");
        assert!(!replicates(&k, &[("r1", Some(&c)), ("r2", None)], &config));
        assert!(replicates(&k, &[("r1", None), ("r2", None)], &config));
        config.filter = ferry_core::config::ItemFilter::HasAttribute("v".into());
        assert!(replicates(&k, &[("r1", Some(&c)), ("r2", None)], &config));
        assert!(!replicates(&k, &[("r1", Some(&k)), ("r2", None)], &config));
    }

    fn waiting(source: &str, destination: &str, messages: Option<u64>) -> Waiting {
        Waiting {
            source: source.into(),
            destination: destination.into(),
            messages,
            dead: Some(0),
            error: None,
        }
    }

    #[test]
    fn the_buffers_say_whether_a_difference_can_be_in_flight() {
        let behind = vec!["r2".to_string()];
        assert_eq!(in_flight(&[], &[waiting("r1", "r2", Some(3))]), None);
        let busy = in_flight(
            &behind,
            &[waiting("r1", "r2", Some(3)), waiting("r2", "r1", Some(9))],
        );
        assert!(busy.unwrap().starts_with("3 message(s)"));
        let idle = in_flight(&behind, &[waiting("r1", "r2", Some(0))]).unwrap();
        assert!(idle.contains("not in flight"), "{idle}");
        let mut dead = waiting("r1", "r2", Some(0));
        dead.dead = Some(2);
        let dead = in_flight(&behind, &[dead]).unwrap();
        assert!(dead.contains("ferry dlq list --from r1 --to r2"), "{dead}");
        let unknown = in_flight(&behind, &[waiting("r1", "r2", None)]).unwrap();
        assert!(unknown.contains("unknown"), "{unknown}");
    }
}
