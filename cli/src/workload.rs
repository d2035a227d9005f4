//! The demo's workload: concurrent writes into every region, and the ledger that judges, after
//! convergence, whether any write that had to survive was lost.
//!
//! Two kinds of keys:
//! - *own* keys, written by one region only: the last write must survive (value or absence);
//! - *shared* keys, written by every region with read-then-write: the surviving write F must not
//!   have been seen by any other write (a write made after its region saw F must win over F —
//!   the contract's causality property). Shared keys are deleted only through versioned
//!   tombstones, so the surviving state always names its write.
//!
//! The *disjoint* workload (attribute merge, `docs/attribute-merge.md`) is different: every
//! region updates only its own attribute ([`own_attribute`]) of the same shared items, so no
//! write has to lose; [`judge_lost_updates`] counts the acknowledged ones that did.

use ferry_core::item::describe_key;
use ferry_core::{AttributeValue, Config, Item, Version};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// The attribute holding the id of the application write that produced the content.
pub const WRITE_ID: &str = "w";
/// A payload attribute, so items have some size.
pub const PAYLOAD: &str = "payload";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// PutItem stamped by the application: version `max(now, previous + 1)`.
    StampedPut,
    /// PutItem without a version: Ferry stamps it.
    PlainPut,
    /// UpdateItem of the value, keeping whatever version and marker the item has.
    Update,
    /// DeleteItem (own keys only): Ferry writes the tombstone.
    HardDelete,
    /// A versioned tombstone put by the application (shared keys' delete).
    Tombstone,
    /// The disjoint workload: UpdateItem `SET` of the region's own attribute, stamped as the
    /// merge mode's helper stamps (attribute mode always; item mode when `stamped`).
    SetOwnAttribute { stamped: bool },
}

/// Which writes the demo makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Stamped and unstamped puts, updates and deletes on own and shared keys.
    Mixed,
    /// Every region updates its own attribute of the same shared items.
    Disjoint,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Mixed => "mixed",
            Workload::Disjoint => "disjoint",
        }
    }
}

/// The attribute region `region` owns in the disjoint workload.
pub fn own_attribute(region: usize) -> String {
    format!("a{region}")
}

/// One planned write.
#[derive(Clone, Debug)]
pub struct Op {
    pub id: u64,
    pub region: usize,
    pub key: String,
    pub shared: bool,
    pub kind: OpKind,
}

/// What the ledger knows of one write once made.
#[derive(Clone, Debug)]
pub struct Made {
    pub op: Op,
    /// The write whose state the region showed when this write read the key.
    pub seen: Option<u64>,
}

/// Generates operations reproducibly from a seed.
pub struct Plan {
    rng: StdRng,
    regions: usize,
    shared_keys: usize,
    own_keys: usize,
    next_id: u64,
}

impl Plan {
    pub fn new(seed: u64, regions: usize, shared_keys: usize, own_keys: usize) -> Self {
        Plan {
            rng: StdRng::seed_from_u64(seed),
            regions,
            shared_keys,
            own_keys,
            next_id: 1,
        }
    }

    pub fn next_op(&mut self) -> Op {
        let region = self.rng.gen_range(0..self.regions);
        let shared = self.rng.gen_bool(0.6);
        let key = if shared {
            format!("shared-{:03}", self.rng.gen_range(0..self.shared_keys))
        } else {
            format!("own-{region}-{:03}", self.rng.gen_range(0..self.own_keys))
        };
        let x: f64 = self.rng.gen();
        let kind = match (shared, x) {
            (_, x) if x < 0.35 => OpKind::StampedPut,
            (_, x) if x < 0.6 => OpKind::PlainPut,
            (_, x) if x < 0.8 => OpKind::Update,
            (false, _) => OpKind::HardDelete,
            (true, _) => OpKind::Tombstone,
        };
        self.numbered(region, key, shared, kind)
    }

    /// The disjoint workload's next write: a random region sets its own attribute of a random
    /// shared key; in item mode half the updates are stamped by the application.
    pub fn next_disjoint_op(&mut self) -> Op {
        let region = self.rng.gen_range(0..self.regions);
        let key = format!("shared-{:03}", self.rng.gen_range(0..self.shared_keys));
        let stamped = self.rng.gen_bool(0.5);
        self.numbered(region, key, true, OpKind::SetOwnAttribute { stamped })
    }

    /// The write with the next id: ids count every write of the run from 1, in plan order.
    fn numbered(&mut self, region: usize, key: String, shared: bool, kind: OpKind) -> Op {
        let id = self.next_id;
        self.next_id += 1;
        Op {
            id,
            region,
            key,
            shared,
            kind,
        }
    }

    pub fn payload(&mut self, bytes: usize) -> String {
        (0..bytes)
            .map(|_| char::from(b'a' + self.rng.gen_range(0..26u8)))
            .collect()
    }
}

/// Every write made, and the versions of the tombstones the workload wrote itself.
#[derive(Default)]
pub struct Ledger {
    pub made: Vec<Made>,
    /// (key, version) of an application tombstone → the write that made it.
    pub tombstones: HashMap<(String, Version), u64>,
    /// The disjoint workload's acknowledged writes: (key, attribute, write id), in the order
    /// they were acknowledged.
    pub attribute_writes: Vec<(String, String, u64)>,
}

/// What the key showed a read: the write behind the current state, if any.
pub fn seen_write(
    ledger: &Ledger,
    key: &str,
    current: Option<&Item>,
    config: &Config,
) -> Option<u64> {
    let item = current?;
    if let Some(AttributeValue::N(w)) = item.get(WRITE_ID) {
        return w.parse().ok();
    }
    let v = Version::of(item, &config.names).ok().flatten()?;
    if let Some(op) = ledger.tombstones.get(&(key.to_string(), v.clone())) {
        return Some(*op);
    }
    // Ferry may lift a local tombstone to a higher version of the same origin (the case-4
    // "lift" row): it is still that tombstone, the newest one of that origin below it.
    ledger
        .tombstones
        .iter()
        .filter(|((k, tv), _)| k == key && tv.origin == v.origin && *tv <= v)
        .max_by(|a, b| a.0 .1.cmp(&b.0 .1))
        .map(|(_, op)| *op)
}

/// The verdict on a converged final state.
#[derive(Clone, Debug, Default)]
pub struct LossReport {
    pub lost: usize,
    /// A few human-readable examples.
    pub examples: Vec<String>,
}

/// Judges the final state (the raw items of one region, tombstones included).
pub fn judge_losses(ledger: &Ledger, final_items: &[Item], config: &Config) -> LossReport {
    let key_name = &config.key.partition;
    let mut by_key: HashMap<String, &Item> = HashMap::new();
    for item in final_items {
        if let Some(AttributeValue::S(k)) = item.get(key_name) {
            by_key.insert(k.clone(), item);
        }
    }
    let mut ops_by_key: HashMap<&str, Vec<&Made>> = HashMap::new();
    for m in &ledger.made {
        ops_by_key.entry(m.op.key.as_str()).or_default().push(m);
    }
    let seen_of: HashMap<u64, Option<u64>> =
        ledger.made.iter().map(|m| (m.op.id, m.seen)).collect();
    let saw = |mut w: u64, target: u64| -> bool {
        // Follows what each write saw back in time; ids only grow, so this ends.
        while let Some(Some(prev)) = seen_of.get(&w) {
            if *prev == target {
                return true;
            }
            w = *prev;
        }
        false
    };
    let mut report = LossReport::default();
    let note = |report: &mut LossReport, text: String| {
        report.lost += 1;
        if report.examples.len() < 5 {
            report.examples.push(text);
        }
    };
    for (key, ops) in ops_by_key {
        let item = by_key.get(key).copied();
        let visible = item.filter(|i| !config.is_tombstone(i));
        if !ops[0].op.shared {
            let Some(last) = ops.iter().max_by_key(|m| m.op.id) else {
                continue;
            };
            let ok = match last.op.kind {
                OpKind::HardDelete | OpKind::Tombstone => visible.is_none(),
                _ => {
                    visible.and_then(|i| i.get(WRITE_ID))
                        == Some(&AttributeValue::N(last.op.id.to_string()))
                }
            };
            if !ok {
                note(
                    &mut report,
                    format!("{key}: the last write w{} did not survive", last.op.id),
                );
            }
            continue;
        }
        let Some(survivor) = seen_write(ledger, key, item, config) else {
            let key_item: Item = [(key_name.clone(), AttributeValue::S(key.to_string()))].into();
            note(
                &mut report,
                format!(
                    "{}: no write explains the final state",
                    describe_key(&key_item)
                ),
            );
            continue;
        };
        for m in ops {
            if m.op.id != survivor && saw(m.op.id, survivor) {
                note(
                    &mut report,
                    format!("{key}: w{} had seen w{survivor} and lost to it", m.op.id),
                );
            }
        }
    }
    report
}

/// Attribute writes acknowledged to the application whose final value — the last acknowledged
/// write per (key, attribute); only the owning region writes one — is held by no region
/// (`regions`: each region's items after convergence).
pub fn judge_lost_updates(ledger: &Ledger, regions: &[Vec<Item>], config: &Config) -> LossReport {
    let mut last: HashMap<(&str, &str), u64> = HashMap::new();
    for (key, attribute, id) in &ledger.attribute_writes {
        let slot = last.entry((key.as_str(), attribute.as_str())).or_default();
        *slot = (*slot).max(*id);
    }
    let key_name = &config.key.partition;
    let holds = |key: &str, attribute: &str, id: u64| {
        regions.iter().flatten().any(|item| {
            item.get(key_name) == Some(&AttributeValue::S(key.to_string()))
                && item.get(attribute) == Some(&AttributeValue::N(id.to_string()))
        })
    };
    let mut lost: Vec<((&str, &str), u64)> = last
        .into_iter()
        .filter(|((key, attribute), id)| !holds(key, attribute, *id))
        .collect();
    lost.sort_unstable();
    LossReport {
        lost: lost.len(),
        examples: lost
            .iter()
            .take(5)
            .map(|((key, attribute), id)| {
                format!("{key}: {attribute} = w{id} acknowledged, missing everywhere")
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, attrs: &[(&str, u64)]) -> Item {
        let mut i: Item = [("pk".to_string(), AttributeValue::S(key.into()))].into();
        for (a, v) in attrs {
            i.insert(a.to_string(), AttributeValue::N(v.to_string()));
        }
        i
    }

    #[test]
    fn a_lost_update_is_the_last_acknowledged_value_held_nowhere() {
        let config = Config::new("us-east-1", "pk");
        let ledger = Ledger {
            attribute_writes: vec![
                ("k".into(), "a0".into(), 1),
                ("k".into(), "a1".into(), 2),
                ("k".into(), "a0".into(), 3),
                ("j".into(), "a1".into(), 4),
            ],
            ..Ledger::default()
        };
        // k.a0 holds an older write (lost), k.a1 survives, j is held by the second region only.
        let regions = vec![
            vec![item("k", &[("a0", 1), ("a1", 2)])],
            vec![item("k", &[("a0", 1), ("a1", 2)]), item("j", &[("a1", 4)])],
        ];
        let report = judge_lost_updates(&ledger, &regions, &config);
        assert_eq!(report.lost, 1, "{:?}", report.examples);
        assert!(report.examples[0].starts_with("k: a0 = w3"));
        let all = vec![vec![
            item("k", &[("a0", 3), ("a1", 2)]),
            item("j", &[("a1", 4)]),
        ]];
        assert_eq!(judge_lost_updates(&ledger, &all, &config).lost, 0);
    }
}
