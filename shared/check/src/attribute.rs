//! The convergence checker in attribute merge mode (`../docs/attribute-merge.md`).
//!
//! The same world as item mode's checker (regions with skewed clocks, stream records delivered
//! to the real [`classify`], buffers of real [`pack`]ed bodies that deliver late, out of order
//! and twice, a region cut off for a while), driving this mode's decisions: enqueue's loop guard
//! and [`stamp_delta`], the drain's merge of a take's records per key and [`plan_merge`] with
//! its condition evaluated by [`Condition::holds`] — and an application write may land between a
//! read and its conditional write, so a failed condition is re-read and merged again.
//!
//! Applications: helper updates of one or two attributes (each set or removed, stamped per
//! attribute), helper deletes (whole-item tombstones), unstamped updates of one attribute and
//! hard deletes; with `unstamped_puts`, also unstamped puts (which drop the version map: a known
//! limit). No TTL expiry.
//!
//! Properties, once everything is delivered:
//! 1. *convergence*: every region holds the same items, version maps included, and no
//!    attribute is left without an entry;
//! 2. *no lost update*: every key's state is the LWW-map merge of every application write —
//!    helper writes as stamped, unstamped writes as enqueue stamped exactly the attributes the
//!    application changed. Disjoint-attribute concurrent writes must therefore all survive.

use super::{event_record, key_item, show, CheckOptions, SimRng, StreamEntry, Verdict};
use super::{BASE_EPOCH_MS, REGIONS, SHARED_KEYS};
use ferry_core::buffer::{pack, unpack};
use ferry_core::classify::{classify, Classified};
use ferry_core::coalesce::merge_per_key;
use ferry_core::condition::items_equal;
use ferry_core::config::{Config, MergeMode};
use ferry_core::item::{AttributeValue, Item};
use ferry_core::merge::{
    apply_write, image_mode, merge_into, plan_merge, stamp_delta, tombstone_ttl, AttrState,
    MergePlan, Read, StampHint, Unversioned, MAX_MERGE_ROUNDS,
};
use ferry_core::record::ChangeRecord;
use ferry_core::version::Version;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Application attributes.
const ATTRIBUTES: [&str; 4] = ["w", "x", "y", "z"];
const MAX_SETTLE_ROUNDS: usize = 200;

/// Known-wrong rules of attribute mode, put back to show the checker fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttributeHole {
    /// The drain applies item-level LWW: the incoming state replaces the item whole when its
    /// newest entry is newer.
    ItemLww,
    /// Removals travel without an entry (no attribute tombstones).
    NoAttributeTombstones,
    /// Enqueue stamps every attribute the item holds, not only those the write changed.
    StampAll,
}

impl AttributeHole {
    pub const ALL: [AttributeHole; 3] = [
        AttributeHole::ItemLww,
        AttributeHole::NoAttributeTombstones,
        AttributeHole::StampAll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttributeHole::ItemLww => "item-lww",
            AttributeHole::NoAttributeTombstones => "no-attribute-tombstones",
            AttributeHole::StampAll => "stamp-all",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            AttributeHole::ItemLww => "(attribute mode) the drain replaces the item whole when the record's newest entry is newer",
            AttributeHole::NoAttributeTombstones => "(attribute mode) a removal travels without its entry",
            AttributeHole::StampAll => "(attribute mode) enqueue stamps every attribute, not just the changed ones",
        }
    }

    pub fn parse(name: &str) -> Option<AttributeHole> {
        AttributeHole::ALL.into_iter().find(|h| h.name() == name)
    }
}

impl fmt::Display for AttributeHole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

struct Region {
    name: &'static str,
    config: Config,
    offset_ms: i64,
    table: BTreeMap<String, Item>,
    stream: Vec<StreamEntry>,
    /// Stream index → the application attributes an unstamped write (or hard delete: `None`)
    /// changed: the ground truth a stamp is judged by.
    unstamped: HashMap<usize, Option<Vec<String>>>,
    cursor: usize,
}

struct Message {
    body: String,
    visible_at: u64,
}

struct Sim<'o> {
    rng: SimRng,
    options: &'o CheckOptions,
    regions: Vec<Region>,
    queues: BTreeMap<(usize, usize), Vec<Message>>,
    down: Vec<bool>,
    now: u64,
    keys: Vec<String>,
    /// Key → the merge of every application write: what every region must end with.
    reference: BTreeMap<String, AttrState>,
    next_value: u64,
    anomaly: Option<String>,
    log: Vec<String>,
    /// The final phase: applications have stopped.
    settling: bool,
}

/// One history in attribute mode, then the two properties.
pub(super) fn run(seed: u64, regions: usize, options: &CheckOptions) -> (Verdict, Vec<String>) {
    let mut sim = Sim::new(seed, regions, options);
    let verdict = sim.run();
    (verdict, sim.log)
}

impl<'o> Sim<'o> {
    fn new(seed: u64, n: usize, options: &'o CheckOptions) -> Self {
        let mut rng = SimRng::new(seed ^ 0xa77e_0000);
        let names: Vec<&'static str> = REGIONS[..n.clamp(2, REGIONS.len())].to_vec();
        let regions = names
            .iter()
            .map(|name| {
                let mut config = Config::new(*name, "pk");
                config.merge_mode = MergeMode::Attribute;
                config.destinations = names
                    .iter()
                    .filter(|d| *d != name)
                    .map(|d| d.to_string())
                    .collect();
                let skew = options.skew_ms as i64;
                Region {
                    name,
                    config,
                    offset_ms: rng.gen_range(-skew..=skew),
                    table: BTreeMap::new(),
                    stream: Vec::new(),
                    unstamped: HashMap::new(),
                    cursor: 0,
                }
            })
            .collect::<Vec<_>>();
        let mut queues = BTreeMap::new();
        for s in 0..regions.len() {
            for d in 0..regions.len() {
                if s != d {
                    queues.insert((s, d), Vec::new());
                }
            }
        }
        let mut keys: Vec<String> = SHARED_KEYS[..options.shared_keys.clamp(1, SHARED_KEYS.len())]
            .iter()
            .map(|k| k.to_string())
            .collect();
        keys.extend(names.iter().map(|n| format!("own-{n}")));
        Sim {
            rng,
            options,
            down: vec![false; regions.len()],
            regions,
            queues,
            now: BASE_EPOCH_MS,
            keys,
            reference: BTreeMap::new(),
            next_value: 1,
            anomaly: None,
            log: Vec::new(),
            settling: false,
        }
    }

    fn has(&self, hole: AttributeHole) -> bool {
        self.options.attribute_holes.contains(&hole)
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        if self.options.trace {
            let t = self.now - BASE_EPOCH_MS;
            self.log.push(format!("{t:>7} {}", line()));
        }
    }

    fn clock(&self, r: usize) -> u64 {
        (self.now as i64 + self.regions[r].offset_ms) as u64
    }

    fn fail(&mut self, why: String) {
        self.anomaly.get_or_insert(why);
    }

    fn run(&mut self) -> Verdict {
        for _ in 0..self.options.steps {
            self.now += self.rng.gen_range(0..30);
            let x: f64 = self.rng.gen();
            if x < 0.35 {
                let r = self.rng.gen_range(0..self.regions.len());
                self.app_op(r);
            } else if x < 0.6 {
                let r = self.rng.gen_range(0..self.regions.len());
                self.enqueue(r);
            } else if x < 0.95 {
                let pairs: Vec<(usize, usize)> = self.queues.keys().copied().collect();
                let (s, d) = pairs[self.rng.gen_range(0..pairs.len())];
                self.drain(s, d);
            } else {
                let r = self.rng.gen_range(0..self.regions.len());
                self.down[r] = !self.down[r];
            }
            if let Some(a) = self.anomaly.take() {
                return Verdict::Anomaly(a);
            }
        }
        self.down.iter_mut().for_each(|d| *d = false);
        self.settling = true;
        let mut rounds = 0;
        loop {
            self.now += 1000;
            let mut busy = false;
            for r in 0..self.regions.len() {
                while self.enqueue(r) {
                    busy = true;
                }
            }
            let pairs: Vec<(usize, usize)> = self.queues.keys().copied().collect();
            for (s, d) in pairs {
                while self.drain(s, d) {
                    busy = true;
                }
            }
            if let Some(a) = self.anomaly.take() {
                return Verdict::Anomaly(a);
            }
            if !busy {
                break;
            }
            rounds += 1;
            if rounds > MAX_SETTLE_ROUNDS {
                let mut stuck = Vec::new();
                for r in &self.regions {
                    for (k, item) in &r.table {
                        if let Ok(read) = AttrState::read(item, &r.config) {
                            if !read.unversioned.is_empty() {
                                stuck.push(format!("{} {k}: {}", r.name, show(item)));
                            }
                        }
                    }
                }
                return Verdict::Anomaly(format!(
                    "the history did not settle; unversioned: {stuck:?}"
                ));
            }
        }
        for ((s, d), q) in &self.queues {
            if !q.is_empty() {
                return Verdict::Undelivered {
                    queue: format!("{}->{}", self.regions[*s].name, self.regions[*d].name),
                    messages: q.len(),
                };
            }
        }
        self.judge()
    }

    /// Writes an item (or removes it) in region `r` and appends the stream record; a write that
    /// changes nothing leaves no record.
    fn write(&mut self, r: usize, key: &str, new: Option<Item>) -> Option<usize> {
        let at_ms = self.clock(r);
        let region = &mut self.regions[r];
        let old = region.table.get(key).cloned();
        let same = match (&old, &new) {
            (Some(a), Some(b)) => items_equal(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return None;
        }
        match &new {
            Some(item) => region.table.insert(key.to_string(), item.clone()),
            None => region.table.remove(key),
        };
        region.stream.push(StreamEntry {
            key: key.to_string(),
            old,
            new,
            by_ttl: false,
            at_ms,
        });
        Some(region.stream.len() - 1)
    }

    fn fresh_value(&mut self) -> AttributeValue {
        self.next_value += 1;
        AttributeValue::N(self.next_value.to_string())
    }

    /// One application operation at `r`, on an own or a shared key: the helper's update or
    /// delete, an unstamped update or put, or a hard delete.
    fn app_op(&mut self, r: usize) {
        let key = self.pick_key(r);
        let config = self.regions[r].config.clone();
        let current = self.regions[r].table.get(&key).cloned();
        let read = match current
            .as_ref()
            .map(|c| AttrState::read(c, &config))
            .transpose()
        {
            Ok(read) => read.unwrap_or_default(),
            Err(e) => return self.fail(format!("app read: {e}")),
        };
        let now = self.clock(r);
        let x: f64 = self.rng.gen();
        if x < 0.55 {
            self.helper_update(r, &key, current, &read, now, &config);
        } else if x < 0.65 {
            self.helper_delete(r, &key, &read, now, &config);
        } else if x < 0.8 {
            self.unstamped_update(r, &key, current, &config);
        } else if x < 0.9 && self.options.unstamped_puts {
            self.unstamped_put(r, &key, current.as_ref(), &config);
        } else if current.is_some() {
            self.hard_delete(r, &key);
        }
    }

    /// The key an application writes: its region's own key, or one of the shared keys.
    fn pick_key(&mut self, r: usize) -> String {
        let own = format!("own-{}", self.regions[r].name);
        if self.rng.gen_bool(self.options.own_key_share) {
            own
        } else {
            let shared = self.keys.len() - self.regions.len();
            self.keys[self.rng.gen_range(0..shared)].clone()
        }
    }

    /// The helper: one or two attributes set or removed, each stamped above its entry.
    fn helper_update(
        &mut self,
        r: usize,
        key: &str,
        current: Option<Item>,
        read: &Read,
        now: u64,
        config: &Config,
    ) {
        let name = self.regions[r].name;
        let mut delta = AttrState::default();
        for _ in 0..self.rng.gen_range(1..=2) {
            let attribute = ATTRIBUTES[self.rng.gen_range(0..ATTRIBUTES.len())].to_string();
            let floor = above(now, read.state.versions.get(&attribute))
                .max(above(now, read.state.deleted.as_ref()));
            delta
                .versions
                .insert(attribute.clone(), Version::new(floor, name));
            if self.rng.gen_bool(0.8) {
                let v = self.fresh_value();
                delta.values.insert(attribute, v);
            } else {
                delta.values.remove(&attribute);
            }
        }
        let mut item = current.unwrap_or_else(|| key_item(key));
        let mut state = read.state.clone();
        merge_into(&mut state, &delta);
        for n in delta.versions.keys() {
            match state.values.get(n) {
                Some(v) => item.insert(n.clone(), v.clone()),
                None => item.remove(n),
            };
        }
        item.insert(config.names.versions.clone(), state.versions_value(config));
        // The helper keeps the TTL a function of the state, as every writer in this mode.
        let unversioned_left = read
            .unversioned
            .iter()
            .any(|n| !delta.versions.contains_key(n));
        match tombstone_ttl(&state, unversioned_left, config) {
            Some(ttl) => item.insert(config.names.ttl.clone(), ttl),
            None => item.remove(&config.names.ttl),
        };
        self.trace(|| format!("{name} helper update {key}: {}", show(&item)));
        self.record_reference(key, &delta);
        self.write(r, key, Some(item));
    }

    /// The helper's delete: a whole-item tombstone above everything the item holds.
    fn helper_delete(&mut self, r: usize, key: &str, read: &Read, now: u64, config: &Config) {
        let name = self.regions[r].name;
        let delta = AttrState {
            deleted: Some(Version::new(above(now, read.state.newest()), name)),
            ..AttrState::default()
        };
        let mut state = read.state.clone();
        merge_into(&mut state, &delta);
        self.trace(|| format!("{name} helper delete {key}"));
        self.record_reference(key, &delta);
        self.write(r, key, Some(state.to_item(&key_item(key), config)));
    }

    /// An unstamped update of one attribute: the version map is kept as it is.
    fn unstamped_update(&mut self, r: usize, key: &str, current: Option<Item>, config: &Config) {
        let name = self.regions[r].name;
        let attribute = ATTRIBUTES[self.rng.gen_range(0..ATTRIBUTES.len())].to_string();
        let mut item = current.unwrap_or_else(|| key_item(key));
        let value = self.fresh_value();
        item.insert(attribute.clone(), value);
        item.remove(&config.names.ttl);
        self.trace(|| format!("{name} unstamped update {key}: {}", show(&item)));
        if let Some(i) = self.write(r, key, Some(item)) {
            self.regions[r].unstamped.insert(i, Some(vec![attribute]));
        }
    }

    /// An unstamped put: the item is replaced, its version map with it.
    fn unstamped_put(&mut self, r: usize, key: &str, current: Option<&Item>, config: &Config) {
        let name = self.regions[r].name;
        let mut item = key_item(key);
        let attribute = ATTRIBUTES[self.rng.gen_range(0..ATTRIBUTES.len())].to_string();
        let value = self.fresh_value();
        item.insert(attribute, value);
        // It writes its attributes and removes every other one.
        let mut changed: Vec<String> = item.keys().filter(|n| *n != "pk").cloned().collect();
        for n in current.iter().flat_map(|c| c.keys()) {
            if n != "pk" && !config.names.is_ferry_attribute(n) && !changed.contains(n) {
                changed.push(n.clone());
            }
        }
        self.trace(|| format!("{name} unstamped put {key}: {}", show(&item)));
        if let Some(i) = self.write(r, key, Some(item)) {
            self.regions[r].unstamped.insert(i, Some(changed));
        }
    }

    /// The application's hard delete (of an item that exists).
    fn hard_delete(&mut self, r: usize, key: &str) {
        let name = self.regions[r].name;
        self.trace(|| format!("{name} hard delete {key}"));
        if let Some(i) = self.write(r, key, None) {
            self.regions[r].unstamped.insert(i, None);
        }
    }

    fn record_reference(&mut self, key: &str, delta: &AttrState) {
        merge_into(self.reference.entry(key.to_string()).or_default(), delta);
    }

    /// Enqueue processes up to three stream records: forwards are packed together (so a message
    /// can carry several states of one key), stamps are written.
    fn enqueue(&mut self, r: usize) -> bool {
        let mut forwards: Vec<ChangeRecord> = Vec::new();
        let mut any = false;
        for _ in 0..3 {
            let region = &self.regions[r];
            let Some(entry) = region.stream.get(region.cursor).cloned() else {
                break;
            };
            let index = region.cursor;
            self.regions[r].cursor += 1;
            any = true;
            let event = event_record(&entry, index, self.regions[r].name);
            let config = self.regions[r].config.clone();
            match classify(&event, &config) {
                Err(e) => return self.fail_true(format!("classify: {e}")),
                Ok(Classified::Forward(record)) => {
                    if image_mode(&record.image, &config) != Some(MergeMode::Attribute) {
                        return self.fail_true("a forwarded image without a version map".into());
                    }
                    forwards.push(record);
                }
                Ok(Classified::StampAttributes(hint)) => {
                    if let Err(e) = self.stamp_attributes(r, &entry.key, index, &hint, &config) {
                        return self.fail_true(e);
                    }
                }
                Ok(Classified::ReplicatedIn) | Ok(Classified::TtlExpiry) => {}
                Ok(other) => return self.fail_true(format!("unexpected decision {other:?}")),
            }
        }
        if let Err(e) = self.send(r, &forwards) {
            return self.fail_true(e);
        }
        any
    }

    /// Stamps the attributes stream record `index` changed without a stamp, by read–merge–
    /// conditional write rounds until one holds.
    fn stamp_attributes(
        &mut self,
        r: usize,
        key: &str,
        index: usize,
        hint: &StampHint,
        config: &Config,
    ) -> Result<(), String> {
        let truth = self.regions[r].unstamped.get(&index).cloned();
        if hint.is_empty() {
            return Ok(());
        }
        for _ in 0..MAX_MERGE_ROUNDS {
            let current = self.regions[r].table.get(key).cloned();
            let mut delta = stamp_delta(hint, current.as_ref(), self.clock(r), config);
            if self.has(AttributeHole::StampAll) {
                stamp_all(&mut delta, current.as_ref(), config);
            }
            if delta == AttrState::default() {
                break;
            }
            if self.merge_write(r, key, current, &delta, Unversioned::Keep)? {
                self.record_reference(key, &application_share(delta, truth.as_ref()));
                break;
            }
        }
        Ok(())
    }

    /// Puts forwarded records on every other region's buffer, as packed bodies.
    fn send(&mut self, r: usize, forwards: &[ChangeRecord]) -> Result<(), String> {
        if forwards.is_empty() {
            return Ok(());
        }
        let batches = pack(forwards).map_err(|e| format!("pack: {e}"))?;
        for d in 0..self.regions.len() {
            if d == r {
                continue;
            }
            for m in batches.iter().flatten() {
                let delay = self.rng.gen_range(0..200);
                let visible_at = self.now + delay;
                if let Some(q) = self.queues.get_mut(&(r, d)) {
                    q.push(Message {
                        body: m.body.clone(),
                        visible_at,
                    });
                }
            }
        }
        Ok(())
    }

    fn fail_true(&mut self, why: String) -> bool {
        self.fail(why);
        true
    }

    /// One read–merge–conditional write. An application write may land between the read and the
    /// write. Ok(true): done (written or nothing to write); Ok(false): the condition failed.
    /// Pending is an error for [`Unversioned::Keep`] and handled by the caller for `Wait`.
    fn merge_write(
        &mut self,
        r: usize,
        key: &str,
        read: Option<Item>,
        incoming: &AttrState,
        rule: Unversioned,
    ) -> Result<bool, String> {
        let config = self.regions[r].config.clone();
        let plan = if self.has(AttributeHole::ItemLww) && rule == Unversioned::Wait {
            let current = read
                .as_ref()
                .map(|c| AttrState::read(c, &config))
                .transpose()
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            if incoming.newest() > current.state.newest() && current.unversioned.is_empty() {
                let item = incoming.to_item(&key_item(key), &config);
                self.write(r, key, Some(item));
            }
            return Ok(true);
        } else {
            plan_merge(&key_item(key), read.as_ref(), incoming, rule, &config)
                .map_err(|e| e.to_string())?
        };
        match plan {
            MergePlan::Unchanged => Ok(true),
            MergePlan::Pending { .. } => Err("pending".into()),
            MergePlan::Write(w) => {
                if !self.settling && self.rng.gen_bool(0.2) {
                    self.app_op(r); // a write between the read and the conditional write
                }
                let now = self.regions[r].table.get(key).cloned();
                if !w.condition.holds(now.as_ref()) {
                    let name = self.regions[r].name;
                    self.trace(|| format!("{name} merge {key}: condition failed, again"));
                    return Ok(false);
                }
                let item = apply_write(now.as_ref(), &w);
                let name = self.regions[r].name;
                self.trace(|| format!("{name} merge {key}: {}", show(&item)));
                self.write(r, key, Some(item));
                Ok(true)
            }
        }
    }

    /// Receives one visible message on (s, d), merges its records per key and applies each.
    fn drain(&mut self, s: usize, d: usize) -> bool {
        if self.down[d] {
            return false;
        }
        let now = self.now;
        let Some(q) = self.queues.get(&(s, d)) else {
            return false;
        };
        let visible: Vec<usize> = (0..q.len()).filter(|&i| q[i].visible_at <= now).collect();
        if visible.is_empty() {
            return false;
        }
        let i = visible[self.rng.gen_range(0..visible.len())];
        let body = self.queues[&(s, d)][i].body.clone();
        let mut records = match unpack(&body) {
            Ok(r) => r,
            Err(e) => return self.fail_true(format!("unpack: {e}")),
        };
        let config = self.regions[d].config.clone();
        for record in &mut records {
            if image_mode(&record.image, &config) != Some(MergeMode::Attribute) {
                return self.fail_true("a record of the other mode".into());
            }
            if self.has(AttributeHole::NoAttributeTombstones) {
                let Ok(read) = AttrState::read(&record.image, &config) else {
                    return self.fail_true("record state".into());
                };
                let mut state = read.state;
                let values = state.values.clone();
                state.versions.retain(|n, _| values.contains_key(n));
                record.image = state.to_item(&record.key, &config);
            }
        }
        // The drain's own coalescing: each key's records merged into its winner.
        let winner = merge_per_key(&mut records, &config);
        let mut per_key: Vec<(String, AttrState)> = Vec::new();
        for (w, record) in records.iter().enumerate().filter(|&(i, _)| winner[i] == i) {
            let key = match record.key.get("pk") {
                Some(AttributeValue::S(k)) => k.clone(),
                other => return self.fail_true(format!("bad key {other:?}")),
            };
            match AttrState::read(&record.image, &config) {
                Ok(r) => per_key.push((key, r.state)),
                Err(e) => return self.fail_true(format!("record {w} state: {e}")),
            }
        }
        let mut done = true;
        for (key, incoming) in per_key {
            let mut applied = false;
            for _ in 0..MAX_MERGE_ROUNDS {
                let current = self.regions[d].table.get(&key).cloned();
                match self.merge_write(d, &key, current, &incoming, Unversioned::Wait) {
                    Ok(true) => {
                        applied = true;
                        break;
                    }
                    Ok(false) => continue,
                    Err(e) if e == "pending" => break,
                    Err(e) => return self.fail_true(e),
                }
            }
            done &= applied;
        }
        let q = self.queues.get_mut(&(s, d)).expect("the queue exists");
        if !done {
            // Pending: back on the buffer, later (the drain's re-queue).
            q[i].visible_at = now + 500;
        } else if self.rng.gen::<f64>() >= self.options.duplicate_share {
            q.remove(i);
        }
        true
    }

    fn judge(&mut self) -> Verdict {
        let keys: Vec<String> = self.keys.clone();
        for key in &keys {
            let first = self.regions[0].table.get(key);
            for r in &self.regions[1..] {
                let same = match (first, r.table.get(key)) {
                    (Some(a), Some(b)) => items_equal(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    return Verdict::Divergent {
                        key: key.clone(),
                        states: self
                            .regions
                            .iter()
                            .map(|r| {
                                (
                                    r.name.to_string(),
                                    r.table.get(key).map_or("absent".into(), show),
                                )
                            })
                            .collect(),
                    };
                }
            }
            let config = &self.regions[0].config;
            let read = match first.map(|i| AttrState::read(i, config)).transpose() {
                Ok(r) => r.unwrap_or_default(),
                Err(e) => return Verdict::Anomaly(format!("final state of {key}: {e}")),
            };
            if !read.unversioned.is_empty() {
                return Verdict::Anomaly(format!(
                    "{key}: attributes {:?} never stamped",
                    read.unversioned
                ));
            }
            let want = self.reference.get(key).cloned().unwrap_or_default();
            let lost: Vec<String> = ATTRIBUTES
                .iter()
                .filter(|a| {
                    want.values.get(**a) != read.state.values.get(**a)
                        || want.versions.get(**a) != read.state.versions.get(**a)
                })
                .map(|a| a.to_string())
                .collect();
            if !lost.is_empty() || want.deleted != read.state.deleted {
                return Verdict::LostUpdates {
                    key: key.clone(),
                    attributes: lost,
                    shows: first.map_or("absent".into(), show),
                    expected: show(&want.to_item(&key_item(key), config)),
                };
            }
        }
        Verdict::Ok
    }
}

/// A stamp `now` or just above `v`, whichever is later.
fn above(now: u64, v: Option<&Version>) -> u64 {
    v.map_or(now, |v| now.max(v.ts_ms + 1))
}

/// The stamp-all hole: every application attribute the item holds is stamped with the newest
/// version the stamp sets, not just the changed ones.
fn stamp_all(delta: &mut AttrState, current: Option<&Item>, config: &Config) {
    let floor = delta.versions.values().max().cloned();
    if let (Some(floor), Some(c)) = (floor, current) {
        for (n, v) in c {
            if n != "pk" && !config.names.is_ferry_attribute(n) {
                delta.versions.insert(n.clone(), floor.clone());
                delta.values.insert(n.clone(), v.clone());
            }
        }
    }
}

/// The application's share of a stamp, which joins the reference: the attributes its unstamped
/// write changed (all of them for a hard delete, `Some(None)`), none when the stream record was
/// not an application's (`None`).
fn application_share(mut stamp: AttrState, truth: Option<&Option<Vec<String>>>) -> AttrState {
    match truth {
        Some(Some(changed)) => {
            stamp.versions.retain(|n, _| changed.contains(n));
            stamp.values.retain(|n, _| changed.contains(n));
        }
        Some(None) => {}
        None => stamp = AttrState::default(),
    }
    stamp
}
