//! The randomized convergence checker: random histories over N simulated regions, driven by the
//! core's own decisions, checked for the contract's two properties.
//!
//! Everything that decides something is the production code: [`classify`] reads real
//! `aws_lambda_events` stream records built from the simulated streams, [`reconcile`] and its
//! conditions write back through [`Condition::holds`], enqueue [`pack`]s real buffer bodies and the
//! drain [`unpack`]s them, [`coalesce`]s what it received, writes under [`apply_condition`] and
//! asks [`judge`] about every failed condition. What is simulated is the world around them:
//! - each region's table follows DynamoDB's rules: a put replaces the item, an `UpdateItem` sets
//!   and removes attributes (creating the item if absent), a comparison with a missing attribute is
//!   false, a write that changes nothing leaves no stream record, every other write appends one
//!   with its old and new images, and the TTL process removes expired items with a REMOVE whose
//!   user identity is the DynamoDB service;
//! - applications: helper-stamped puts (some blind: the clock alone), unstamped puts, updates that
//!   keep whatever version and tombstone marker the item has, hard deletes, helper tombstones;
//!   some writes carry a TTL that expires during the run;
//! - enqueue runs late behind the application, and its reads and conditional writes are separate
//!   steps with application writes and drains in between (so reconcile's conditions matter);
//! - buffers (one per source and destination) hold packed bodies, deliver them late, out of order
//!   and more than once; a region is cut off for a while; region clocks are skewed.
//!
//! It is the executable statement of `docs/contract.md`: its history shape, its two properties,
//! and the known-wrong rules ([`Hole`]). A hole is put
//! back here, as a mutation of the core's output or a small re-implementation of the wrong rule —
//! never as a switch inside the production functions.
//!
//! Properties, once every message is delivered and every stream record processed:
//! 1. *convergence*: every region holds the same items (tombstones included), attribute for
//!    attribute;
//! 2. *causality*: for every key, the surviving state is the effect of one application operation
//!    F, shows exactly what F wrote (absence for a delete, a tombstone or an expired write), and no
//!    operation that had seen F's effect (directly or through later states) was lost to it.
//!    Concurrent writes may lose: that is last-writer-wins.
//!
//! To know which operation made a state, application writes carry an `op` number attribute (it
//! travels with the item like any application attribute); tombstones carry no application
//! attribute, so the checker keeps a side table from (key, version) to the operation a tombstone
//! stands for: the helper's delete, or for a tombstone Ferry wrote, the local delete (or expiry)
//! that left the key absent.

mod app_writes;
mod attribute;
mod concurrent;
mod properties;
mod verdict;
pub use attribute::AttributeHole;
pub use verdict::{Summary, Verdict, EXAMPLES_PER_VERDICT};

use aws_lambda_events::event::dynamodb::{EventRecord, StreamViewType, UserIdentity};
use ferry_core::apply::{apply_condition, image_to_store, judge, Judgement};
use ferry_core::buffer::{pack, unpack};
use ferry_core::classify::{classify, Classified, Hint, Wrote};
use ferry_core::coalesce::coalesce;
use ferry_core::condition::Condition;
use ferry_core::config::Config;
use ferry_core::config::MergeMode;
use ferry_core::digest::{is_expiry_tombstone, seal};
use ferry_core::item::{AttributeValue, Item, ItemKey};
use ferry_core::reconcile::{reconcile, tombstone_item, Action, Stamp};
use ferry_core::record::ChangeRecord;
use ferry_core::version::Version;
use rand::{Rng, RngCore};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

/// The simulated clocks start here (2026-01-01T00:00:00Z), so versions and TTLs look real.
pub const BASE_EPOCH_MS: u64 = 1_767_225_600_000;
/// The table's partition key.
const PK: &str = "pk";
/// Application attributes. `op` identifies the application operation that wrote the state.
const OP: &str = "op";
const VAL: &str = "val";
const EXTRA: &str = "extra";
/// Regions, in the order a history uses them (2 or 3 of them).
const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];
/// Keys every region may write (the first `shared_keys` of them); each region also has a key
/// of its own.
const SHARED_KEYS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
/// Share of helper puts stamped by the clock alone, without the item's previous version.
const BLIND: f64 = 0.5;
/// Enqueue retries a write-back at most this often per record: each retry means a newer write
/// happened, so the loop ends; hitting the bound is a failure.
const MAX_RECONCILE_ATTEMPTS: u32 = 16;
/// The final phase gives up (a failure) after this many rounds without settling.
const MAX_SETTLE_ROUNDS: usize = 100_000;

/// Known-wrong rules that can be put back, to show that the checker fails when the rules are
/// wrong. Names and meanings are `docs/contract.md`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hole {
    /// A replicated record overwrites an unversioned item instead of waiting (pending).
    UnversionedOldest,
    /// An application's hard delete is forwarded as a plain delete, not made a tombstone.
    NoTombstones,
    /// The first contract: a write-back only onto the exact version seen; a tombstone versioned
    /// by enqueue's clock replaces anything older.
    FirstContract,
    /// A write-back onto a tombstone the application updated keeps the tombstone marker.
    KeepTombMarker,
    /// Write-backs and tombstones are stamped with the clock alone, not above what was seen.
    NoFloor,
    /// Only the write a record is about is stamped; later local states stamped below what the
    /// record saw are not lifted.
    NoLift,
    /// The rules before application writes were considered: a foreign version that differs from
    /// the old image's is replicated-in, whatever it replaced and whatever content it carries.
    ForeignIsReplicated,
    /// Ferry writes no seal: an application's write-back of a version it read is taken for a
    /// version Ferry wrote.
    NoSeal,
    /// A drain's write over an unstamped application write stands (the write is not put back).
    NoRestore,
    /// A TTL expiry leaves the key empty (no local tombstone at the expired version).
    NoExpiryTombstone,
    /// A `has:` filter admits only records whose images hold the attribute: enqueue's stamp of a
    /// `REMOVE` of it does not replicate.
    FilterDropsStamps,
    /// The tombstone a delete's own record writes into its emptied key is an application's
    /// delete, not Ferry's gap tombstone: a later write that a drain wrote over is not put back.
    DeleteTombstoneStands,
}

impl Hole {
    pub const ALL: [Hole; 12] = [
        Hole::UnversionedOldest,
        Hole::NoTombstones,
        Hole::FirstContract,
        Hole::KeepTombMarker,
        Hole::NoFloor,
        Hole::NoLift,
        Hole::ForeignIsReplicated,
        Hole::NoSeal,
        Hole::NoRestore,
        Hole::NoExpiryTombstone,
        Hole::FilterDropsStamps,
        Hole::DeleteTombstoneStands,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hole::UnversionedOldest => "unversioned-oldest",
            Hole::NoTombstones => "no-tombstones",
            Hole::FirstContract => "first-contract",
            Hole::KeepTombMarker => "keep-tomb-marker",
            Hole::NoFloor => "no-floor",
            Hole::NoLift => "no-lift",
            Hole::ForeignIsReplicated => "foreign-is-replicated",
            Hole::NoSeal => "no-seal",
            Hole::NoRestore => "no-restore",
            Hole::NoExpiryTombstone => "no-expiry-tombstone",
            Hole::FilterDropsStamps => "filter-drops-stamps",
            Hole::DeleteTombstoneStands => "delete-tombstone-stands",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Hole::UnversionedOldest => {
                "let a replicated record overwrite an unversioned item instead of waiting (pending)"
            }
            Hole::NoTombstones => "forward an application's hard delete as a plain delete",
            Hole::FirstContract => {
                "write-back only onto the exact version seen; tombstone over anything older than now"
            }
            Hole::KeepTombMarker => {
                "a write-back onto a tombstone the application updated keeps the tombstone marker"
            }
            Hole::NoFloor => {
                "stamp write-backs and tombstones with the clock alone, not above the versions the record saw"
            }
            Hole::NoLift => {
                "stamp only the write a record is about; leave later local states below what the record saw"
            }
            Hole::ForeignIsReplicated => {
                "take any write of a foreign version that differs from the old one for replicated-in"
            }
            Hole::NoSeal => "write no seal: a write-back of a version read passes for Ferry's",
            Hole::NoRestore => {
                "let a drain's write over an unstamped application write stand (no restore)"
            }
            Hole::NoExpiryTombstone => "leave the key empty after a TTL expiry (no local tombstone)",
            Hole::FilterDropsStamps => {
                "a has: filter drops the stamp of a plain REMOVE of the filter attribute"
            }
            Hole::DeleteTombstoneStands => {
                "a delete's record seals the tombstone it writes into the emptied key as an application's"
            }
        }
    }

    pub fn parse(name: &str) -> Option<Hole> {
        Hole::ALL.into_iter().find(|h| h.name() == name)
    }
}

impl fmt::Display for Hole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How histories are made.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckOptions {
    /// Known-wrong rules put back (empty: the contract as written).
    pub holes: Vec<Hole>,
    /// Each region's clock is off by a uniform amount in `[-skew_ms, skew_ms]`.
    pub skew_ms: u64,
    /// Random steps before the final phase delivers everything.
    pub steps: usize,
    /// Share of application puts that carry a TTL expiring during the run (0 to 3 s ahead).
    pub ttl_share: f64,
    /// How many keys every region writes (1 to 8): fewer keys, more contention.
    pub shared_keys: usize,
    /// Share of application operations on the region's own key (written nowhere else).
    pub own_key_share: f64,
    /// Per step, the chance of a quiet moment in which everything is delivered and the properties
    /// are checked before the history goes on.
    pub checkpoint_share: f64,
    /// Share of receives after which SQS delivers a finished message again (at-least-once).
    pub duplicate_share: f64,
    /// Keep a readable log of the history (for replaying a failing seed).
    pub trace: bool,
    /// A write-back keeps the floor it computed when it read the item, however much later its
    /// conditional write lands. Off, the floor is computed right before the write (from the item
    /// as read then). On, it shows a gap in the contract: the conditions of the absent and
    /// unversioned rows do not pin the item as read, so a version that came and went in between
    /// can be undercut.
    pub stale_write_backs: bool,
    /// The TTL process may expire an item while records about its key are still on their way
    /// (its own, or older ones). Off, an item expires only once its key is quiet everywhere: the
    /// contract's assumption made explicit (an application's TTL, like a tombstone's lifetime,
    /// outlasts the longest time a record can wait). On, it shows why the assumption is needed:
    /// an expiry leaves no tombstone, so a record arriving after it resurrects the key in that
    /// region only.
    pub early_ttl: bool,
    /// Item-level histories (the contract of `docs/contract.md`) or attribute merge mode's
    /// (`docs/attribute-merge.md`), which [`attribute`] checks.
    pub merge_mode: MergeMode,
    /// Attribute mode's known-wrong rules put back.
    pub attribute_holes: Vec<AttributeHole>,
    /// Attribute mode: applications also replace items with unstamped puts, which drop the
    /// version map. On, it shows a known limit (`docs/attribute-merge.md`): a helper write of the
    /// same item in the same region before enqueue's stamp can let an older record back in.
    pub unstamped_puts: bool,
    /// Share of application operations that are plain writes of what an application read:
    /// write-backs of the image last read (with a new value), copies read before a delete put
    /// back, copies to another key, and (with `filter_removes`) `REMOVE`s of the filter attribute.
    pub app_writes: f64,
    /// Histories replicate by a `has:rep` filter; every application write sets `rep`, and some
    /// plain updates `REMOVE` it (the removal must replicate).
    pub filter_removes: bool,
    /// Some write-backs put the image back exactly as read: the contract's residual (a
    /// byte-identical restore into a key deleted before its tombstone landed is taken for a
    /// replayed copy). Off by default; on, it measures the residual's rate.
    pub identical_restores: bool,
    /// Drains of each buffer running at once, their takes, writes and settles interleaved
    /// (item mode; 1: each drain step is a whole take).
    pub drains: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            holes: Vec::new(),
            skew_ms: 60,
            steps: 240,
            ttl_share: 0.15,
            shared_keys: 3,
            own_key_share: 0.3,
            duplicate_share: 0.15,
            checkpoint_share: 0.01,
            trace: false,
            stale_write_backs: true,
            early_ttl: true,
            merge_mode: MergeMode::Item,
            attribute_holes: Vec::new(),
            unstamped_puts: false,
            app_writes: 0.25,
            filter_removes: true,
            identical_restores: false,
            drains: 1,
        }
    }
}

impl CheckOptions {
    pub fn with_holes(holes: &[Hole]) -> Self {
        CheckOptions {
            holes: holes.to_vec(),
            ..CheckOptions::default()
        }
    }

    fn has(&self, hole: Hole) -> bool {
        self.holes.contains(&hole)
    }
}

/// The number of regions a seed's history uses: 2 or 3, alternating, so a seed alone replays it.
pub fn regions_for(seed: u64) -> usize {
    2 + (seed % 2) as usize
}

/// Runs the histories of seeds `seed .. seed + runs` (each with [`regions_for`] regions).
pub fn check(runs: u64, seed: u64, options: &CheckOptions) -> Summary {
    let mut summary = Summary::default();
    for s in seed..seed.saturating_add(runs) {
        let regions = regions_for(s);
        summary.record(s, regions, run_history(s, regions, options));
    }
    summary
}

/// Runs seeds from `seed` until one fails or `max_runs` have passed: for tests that a hole is
/// found, without paying for the histories after the first failure.
pub fn find_failure(max_runs: u64, seed: u64, options: &CheckOptions) -> Summary {
    let mut summary = Summary::default();
    for s in seed..seed.saturating_add(max_runs) {
        let regions = regions_for(s);
        summary.record(s, regions, run_history(s, regions, options));
        if summary.failed > 0 {
            break;
        }
    }
    summary
}

/// One random history over `regions` regions (2 or 3), then the two properties.
pub fn run_history(seed: u64, regions: usize, options: &CheckOptions) -> Verdict {
    if options.merge_mode == MergeMode::Attribute {
        return attribute::run(seed, regions, options).0;
    }
    Sim::new(seed, regions, options).run().0
}

/// Like [`run_history`], with the history's log (what happened, step by step) for replaying a
/// failing seed.
pub fn trace_history(seed: u64, regions: usize, options: &CheckOptions) -> (Verdict, Vec<String>) {
    let options = CheckOptions {
        trace: true,
        ..options.clone()
    };
    if options.merge_mode == MergeMode::Attribute {
        return attribute::run(seed, regions, &options);
    }
    Sim::new(seed, regions, &options).run()
}

// ---------------------------------------------------------------------------------------------
// The simulated world.

/// xoshiro256** seeded through SplitMix64: a history is a function of its seed alone (on every
/// platform and `rand` version), and it is cheap in debug builds, where the tests run.
struct SimRng([u64; 4]);

impl SimRng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        SimRng([next(), next(), next(), next()])
    }
}

impl RngCore for SimRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

type OpId = usize;

/// What tells tombstones of a key apart: their version and TTL. (Under clock skew two tombstones
/// can share a version; whether that matters is for the properties to say.)
type TombId = (String, Version, Option<String>);

/// A set of operation ids (the operations a write causally follows).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Past(Vec<u64>);

impl Past {
    fn insert(&mut self, op: OpId) {
        let (word, bit) = (op / 64, op % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    fn union(&mut self, other: &Past) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (word, bits) in self.0.iter_mut().zip(&other.0) {
            *word |= bits;
        }
    }

    fn contains(&self, op: OpId) -> bool {
        self.0
            .get(op / 64)
            .is_some_and(|w| w & (1 << (op % 64)) != 0)
    }
}

/// One application operation.
#[derive(Clone, Debug)]
struct Op {
    key: String,
    /// What a reader sees after it: the item without Ferry's version (and, for an update of a
    /// tombstone, without the marker and its TTL: the stamp makes it an item again), or `None`
    /// for a delete or a helper tombstone.
    content: Option<Item>,
    /// The operations whose effect this one saw (transitively).
    past: Past,
    /// Helper-stamped (a stamped put or a helper tombstone), not a plain write.
    helper: bool,
    /// The state it wrote carries an application TTL: it expires at this time (ms).
    expires_at: Option<u64>,
}

impl Op {
    /// Its state carries an application TTL that expired by `limit_ms`.
    fn expired_by(&self, limit_ms: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= limit_ms)
    }
}

/// One stream record as DynamoDB keeps it.
#[derive(Clone, Debug)]
struct StreamEntry {
    key: String,
    old: Option<Item>,
    new: Option<Item>,
    /// Removed by the table's TTL process.
    by_ttl: bool,
    /// The region's clock when the write happened.
    at_ms: u64,
}

/// A case-4 write-back between its read and its conditional write.
#[derive(Clone, Debug)]
struct Inflight {
    hint: Hint,
    /// The item as read (or as `ALL_OLD` returned it).
    read: Option<Item>,
    /// The record has a new image (a put or update, not a delete).
    about_write: bool,
    action: Action,
    attempts: u32,
}

/// One message on a buffer.
#[derive(Clone, Debug)]
struct Message {
    body: String,
    /// The keys it carries: the simulator's bookkeeping (the drain reads only the body).
    keys: Vec<String>,
    /// Not received before this time (delivery delay).
    visible_at: u64,
}

struct Region {
    name: &'static str,
    config: Config,
    /// This region's clock minus the true time.
    offset_ms: i64,
    table: BTreeMap<String, Item>,
    stream: Vec<StreamEntry>,
    /// The next stream record enqueue processes.
    cursor: usize,
    inflight: Option<Inflight>,
    /// Key → the operation whose effect left it absent here (a hard delete, or an expired write).
    gone: HashMap<String, OpId>,
    /// Key → the last application hard delete here.
    deleted: HashMap<String, OpId>,
    /// Key → the item an application here last read of it, and what that read saw.
    reads: HashMap<String, (Item, Past)>,
}

struct Sim<'o> {
    rng: SimRng,
    options: &'o CheckOptions,
    regions: Vec<Region>,
    /// (source, destination) → messages.
    queues: BTreeMap<(usize, usize), Vec<Message>>,
    down: Vec<bool>,
    /// Regions whose enqueue is not running for now.
    stalled: Vec<bool>,
    /// True time, ms since the epoch.
    now: u64,
    ops: Vec<Op>,
    /// A tombstone's identity → the operation it stands for.
    tomb_ops: HashMap<TombId, Vec<OpId>>,
    /// (key, op) → the identical restores of the state op wrote: the same state, written again.
    restores: HashMap<(String, OpId), Vec<OpId>>,
    keys: Vec<String>,
    anomaly: Option<String>,
    log: Vec<String>,
    /// Takes held by concurrent drains (`CheckOptions::drains`).
    held: Vec<concurrent::HeldTake>,
}

fn key_item(key: &str) -> Item {
    Item::from([(PK.to_string(), AttributeValue::S(key.to_string()))])
}

/// The operation whose write an item is (the history's `op` attribute).
fn op_of(item: &Item) -> Option<usize> {
    match item.get(OP) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn key_string(key: &Item) -> String {
    match key.get(PK) {
        Some(AttributeValue::S(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

impl<'o> Sim<'o> {
    fn new(seed: u64, regions: usize, options: &'o CheckOptions) -> Self {
        let n = regions.clamp(2, REGIONS.len());
        let mut rng = SimRng::new(seed);
        let skew = options.skew_ms as i64;
        let regions: Vec<Region> = REGIONS[..n]
            .iter()
            .map(|&name| {
                let mut config = Config::new(name, PK);
                if options.filter_removes {
                    config.filter =
                        ferry_core::config::ItemFilter::HasAttribute(app_writes::REP.into());
                }
                config.destinations = REGIONS[..n]
                    .iter()
                    .filter(|d| **d != name)
                    .map(|d| d.to_string())
                    .collect();
                Region {
                    name,
                    config,
                    offset_ms: rng.gen_range(-skew..=skew),
                    table: BTreeMap::new(),
                    stream: Vec::new(),
                    cursor: 0,
                    inflight: None,
                    gone: HashMap::new(),
                    deleted: HashMap::new(),
                    reads: HashMap::new(),
                }
            })
            .collect();
        let mut queues = BTreeMap::new();
        for s in 0..n {
            for d in 0..n {
                if s != d {
                    queues.insert((s, d), Vec::new());
                }
            }
        }
        let shared = options.shared_keys.clamp(1, SHARED_KEYS.len());
        let mut keys: Vec<String> = SHARED_KEYS[..shared]
            .iter()
            .map(|k| k.to_string())
            .collect();
        keys.extend(REGIONS[..n].iter().map(|r| format!("own-{r}")));
        Sim {
            rng,
            options,
            regions,
            queues,
            down: vec![false; n],
            stalled: vec![false; n],
            now: BASE_EPOCH_MS + 1000,
            // Op 0: a tombstone no application delete asked for.
            ops: vec![Op {
                key: String::new(),
                content: None,
                past: Past::default(),
                helper: false,
                expires_at: None,
            }],
            tomb_ops: HashMap::new(),
            restores: HashMap::new(),
            keys,
            anomaly: None,
            log: Vec::new(),
            held: Vec::new(),
        }
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        if self.options.trace {
            let t = self.now - BASE_EPOCH_MS;
            self.log.push(format!("t={t} {}", line()));
        }
    }

    fn fail(&mut self, why: String) {
        if self.anomaly.is_none() {
            self.trace(|| format!("ANOMALY {why}"));
            self.anomaly = Some(why);
        }
    }

    fn clock(&self, r: usize) -> u64 {
        (self.now as i64 + self.regions[r].offset_ms).max(0) as u64
    }

    fn version(&mut self, r: usize, item: &Item) -> Option<Version> {
        match Version::of(item, &self.regions[r].config.names) {
            Ok(v) => v,
            Err(e) => {
                self.fail(format!(
                    "unreadable version in {}: {e}",
                    self.regions[r].name
                ));
                None
            }
        }
    }

    fn run(mut self) -> (Verdict, Vec<String>) {
        let n = self.regions.len();
        let queue_ids: Vec<(usize, usize)> = self.queues.keys().copied().collect();
        for _ in 0..self.options.steps {
            self.now += self.rng.gen_range(0..=30);
            let x: f64 = self.rng.gen();
            if x < 0.33 {
                let r = self.rng.gen_range(0..n);
                self.app_op(r);
            } else if x < 0.58 {
                let r = self.rng.gen_range(0..n);
                self.enqueue_step(r);
            } else if x < 0.92 {
                let (s, d) = queue_ids[self.rng.gen_range(0..queue_ids.len())];
                if self.options.drains > 1 {
                    self.concurrent_drain_step(s, d);
                } else {
                    self.drain_step(s, d, false);
                }
            } else if x < 0.95 {
                let r = self.rng.gen_range(0..n);
                let limit = self.clock(r);
                self.ttl_sweep(r, limit, 0.7);
            } else if x < 0.975 {
                let r = self.rng.gen_range(0..n);
                self.down[r] = !self.down[r];
                let (name, down) = (self.regions[r].name, self.down[r]);
                self.trace(|| format!("{name} {}", if down { "cut off" } else { "back" }));
            } else {
                // Enqueue falls behind (throttled, erroring, a slow batch) or catches up.
                let r = self.rng.gen_range(0..n);
                self.stalled[r] = !self.stalled[r];
                let (name, stalled) = (self.regions[r].name, self.stalled[r]);
                self.trace(|| {
                    format!(
                        "{name} enqueue {}",
                        if stalled { "stalls" } else { "resumes" }
                    )
                });
            }
            if let Some(why) = self.anomaly.take() {
                return (Verdict::Anomaly(why), self.log);
            }
            if self.rng.gen_bool(self.options.checkpoint_share) {
                // A quiet moment: everything delivered, the properties must hold already (a
                // later write could otherwise hide the damage before the end).
                let limit = (0..n).map(|r| self.clock(r)).max().unwrap_or(self.now);
                self.trace(|| "checkpoint".into());
                let verdict = self
                    .settle(limit)
                    .unwrap_or_else(|| self.verdict(self.ttl_limit(limit)));
                if let Some(why) = self.anomaly.take() {
                    return (Verdict::Anomaly(why), self.log);
                }
                if !verdict.is_ok() {
                    return (verdict, self.log);
                }
            }
        }
        // App TTLs are seconds, tombstones' are days: a day later only the former have expired.
        let horizon = self.now + 24 * 3600 * 1000;
        let verdict = self
            .settle(horizon)
            .unwrap_or_else(|| self.verdict(self.ttl_limit(horizon)));
        let verdict = match self.anomaly.take() {
            Some(why) => Verdict::Anomaly(why),
            None => verdict,
        };
        (verdict, self.log)
    }

    /// Ends cut-offs and stalls, lets every pipeline run until nothing changes, then lets every
    /// region's TTL process remove what has expired by `limit_ms`.
    /// What the TTL process has removed once a settle is over: whatever is due by `limit_ms`, or
    /// by any region's clock now (a drain stores a version that arrives expired as its expiry,
    /// and time runs on for the TTL elsewhere).
    fn ttl_limit(&self, limit_ms: u64) -> u64 {
        (0..self.regions.len())
            .map(|r| self.clock(r))
            .fold(limit_ms, u64::max)
    }

    fn settle(&mut self, limit_ms: u64) -> Option<Verdict> {
        self.down.iter_mut().for_each(|d| *d = false);
        self.stalled.iter_mut().for_each(|d| *d = false);
        self.finish_held();
        let queue_ids: Vec<(usize, usize)> = self.queues.keys().copied().collect();
        for _ in 0..MAX_SETTLE_ROUNDS {
            self.now += 1;
            let mut progress = false;
            for r in 0..self.regions.len() {
                progress |= self.enqueue_step(r);
            }
            for &(s, d) in &queue_ids {
                progress |= self.drain_step(s, d, true);
            }
            if self.anomaly.is_some() {
                return None;
            }
            if !progress {
                let limit = self.ttl_limit(limit_ms);
                let mut swept = false;
                for r in 0..self.regions.len() {
                    swept |= self.ttl_sweep(r, limit, 1.0);
                }
                if !swept {
                    return None;
                }
            }
        }
        Some(Verdict::Anomaly(format!(
            "did not settle in {MAX_SETTLE_ROUNDS} rounds"
        )))
    }

    // --- the tables ------------------------------------------------------------------------

    /// A write as DynamoDB does it: the new state (or absence), and a stream record with both
    /// images unless nothing changed.
    fn write(&mut self, r: usize, key: &str, mut new: Option<Item>, by_ttl: bool) {
        if self.options.has(Hole::NoSeal) {
            // The hole: no version seal (an expiry's local tombstone keeps its own mark).
            let sum = &self.regions[r].config.names.sum;
            if let Some(item) = new.as_mut() {
                if matches!(item.get(sum), Some(AttributeValue::S(v)) if v.starts_with("v1-")) {
                    item.remove(sum);
                }
            }
        }
        let at_ms = self.clock(r);
        let region = &mut self.regions[r];
        let old = match &new {
            Some(item) => region.table.insert(key.to_string(), item.clone()),
            None => region.table.remove(key),
        };
        if old == new {
            return;
        }
        region.stream.push(StreamEntry {
            key: key.to_string(),
            old,
            new,
            by_ttl,
            at_ms,
        });
    }

    /// The operations whose effect a stored state can be: the one that wrote it, or for a
    /// tombstone Ferry wrote, each delete or expiry it can stand for. Empty: no operation made it.
    fn ops_of(&self, r: usize, key: &str, item: &Item) -> Vec<OpId> {
        if let Some(AttributeValue::N(op)) = item.get(OP) {
            let Ok(op) = op.parse::<OpId>() else {
                return Vec::new();
            };
            let restores = self.restores.get(&(key.to_string(), op));
            return std::iter::once(op)
                .chain(restores.into_iter().flatten().copied())
                .collect();
        }
        if self.regions[r].config.is_tombstone(item) {
            if let Some(ops) = self
                .tomb_id(r, key, item)
                .and_then(|id| self.tomb_ops.get(&id))
            {
                return ops.clone();
            }
        }
        Vec::new()
    }

    fn tomb_id(&self, r: usize, key: &str, item: &Item) -> Option<TombId> {
        let names = &self.regions[r].config.names;
        let version = Version::of(item, names).ok().flatten()?;
        let ttl = item.get(&names.ttl).map(|t| format!("{t:?}"));
        // An expiry's tombstone is this region's alone: the same one elsewhere was written
        // there, for what happened there.
        let key = if is_expiry_tombstone(item, names) {
            format!("{key}@{}", self.regions[r].name)
        } else {
            key.to_string()
        };
        Some((key, version, ttl))
    }

    /// What an operation in region `r` on `key` causally follows: the operation of the state it
    /// sees (or of the delete or expiry that left the key absent), and everything that one saw.
    fn seen_by(&self, r: usize, key: &str) -> Past {
        let ops = match self.regions[r].table.get(key) {
            Some(item) => self.ops_of(r, key, item),
            None => self.regions[r].gone.get(key).copied().into_iter().collect(),
        };
        let mut past = Past::default();
        for op in ops {
            past.union(&self.ops[op].past);
            past.insert(op);
        }
        past
    }

    /// Records which operations a tombstone about to be written in region `r` can stand for. A
    /// tombstone identical to an earlier one (same version and TTL: the same floor reached twice
    /// within a second) is the same state; it now stands for the later operations.
    fn register_tombstone(&mut self, r: usize, key: &str, tombstone: &Item, ops: Vec<OpId>) {
        match self.tomb_id(r, key, tombstone) {
            Some(slot) => {
                self.tomb_ops.insert(slot, ops);
            }
            None => self.fail(format!("a tombstone of key {key} without a version")),
        }
    }

    // --- applications --------------------------------------------------------------------

    fn app_op(&mut self, r: usize) {
        let shared = self.options.shared_keys.clamp(1, SHARED_KEYS.len());
        let key = if self.rng.gen_bool(self.options.own_key_share) {
            format!("own-{}", self.regions[r].name)
        } else {
            SHARED_KEYS[self.rng.gen_range(0..shared)].to_string()
        };
        let now = self.clock(r);
        let name = self.regions[r].name;
        let cur = self.regions[r].table.get(&key).cloned();
        let cur_version = cur.as_ref().and_then(|c| self.version(r, c));
        let past = self.seen_by(r, &key);
        let op = self.ops.len();
        self.remember_read(r, &key, cur.as_ref(), &past);
        if self.rng.gen_bool(self.options.app_writes) && self.plain_app_write(r, &key, past.clone())
        {
            return;
        }
        let config = self.regions[r].config.clone();
        let names = &config.names;
        // A helper stamps above the version it read, unless it is blind (the clock alone).
        let helper_ts = |blind: bool| match &cur_version {
            Some(v) if !blind => now.max(v.ts_ms + 1),
            _ => now,
        };
        let x: f64 = self.rng.gen();
        let (new, helper, what) = if x < 0.25 {
            let blind = self.rng.gen_bool(BLIND);
            let mut item = self.fresh_item(&key, op, now);
            Version::new(helper_ts(blind), name).stamp_into(&mut item, names);
            seal(&mut item, names);
            (
                item,
                true,
                if blind {
                    "blind helper put"
                } else {
                    "helper put"
                },
            )
        } else if x < 0.45 {
            (self.fresh_item(&key, op, now), false, "unstamped put")
        } else if x < 0.65 {
            // An update keeps whatever the item has: its version, a tombstone marker, a TTL.
            let mut item = cur.clone().unwrap_or_else(|| key_item(&key));
            item.insert(VAL.into(), AttributeValue::S(format!("v{op}")));
            self.mark_replicated(&mut item);
            item.insert(OP.into(), AttributeValue::N(op.to_string()));
            match self.rng.gen_range(0..4) {
                0 => {
                    item.insert(
                        EXTRA.into(),
                        AttributeValue::N(self.rng.gen_range(0..3).to_string()),
                    );
                }
                1 => {
                    item.remove(EXTRA);
                }
                _ => {}
            }
            (item, false, "update")
        } else if x < 0.85 {
            if cur.as_ref().is_none_or(|c| !self.replicates(c)) {
                return;
            }
            self.hard_delete(r, &key, past, "hard delete");
            return;
        } else {
            let version = Version::new(helper_ts(false), name);
            let item = tombstone_item(&key_item(&key), &version, now, &config);
            self.register_tombstone(r, &key, &item, vec![op]);
            (item, true, "helper tombstone")
        };
        self.commit_write(r, &key, new, past, helper, what);
    }

    /// An application's hard delete of `key` in region `r` as the next operation.
    fn hard_delete(&mut self, r: usize, key: &str, past: Past, what: &str) {
        let op = self.ops.len();
        self.ops.push(Op {
            key: key.to_string(),
            content: None,
            past,
            helper: false,
            expires_at: None,
        });
        self.regions[r].gone.insert(key.to_string(), op);
        self.regions[r].deleted.insert(key.to_string(), op);
        let name = self.regions[r].name;
        self.trace(|| format!("{name} op {op}: {what} {key}"));
        self.write(r, key, None, false);
    }

    /// An application write of `new` to `key` in region `r` as the next operation: what a reader
    /// sees after it is recorded, then the table is written.
    fn commit_write(
        &mut self,
        r: usize,
        key: &str,
        new: Item,
        past: Past,
        helper: bool,
        what: &str,
    ) {
        let op = self.ops.len();
        let name = self.regions[r].name;
        let config = &self.regions[r].config;
        let names = &config.names;
        let is_tombstone = config.is_tombstone(&new);
        let content = if is_tombstone && !config.has_application_attributes(&new) {
            None
        } else {
            let mut view = new.clone();
            view.remove(&names.ts);
            view.remove(&names.origin);
            view.remove(&names.sum);
            if is_tombstone {
                // The application updated a deleted key: the stamp makes it an item again.
                view.remove(&names.tombstone);
                view.remove(&names.ttl);
            }
            Some(view)
        };
        let expires_at = match content.as_ref().and_then(|c| c.get(&names.ttl)) {
            Some(AttributeValue::N(ttl)) => ttl.parse::<u64>().ok().map(|s| s * 1000),
            _ => None,
        };
        self.ops.push(Op {
            key: key.to_string(),
            content,
            past,
            helper,
            expires_at,
        });
        self.trace(|| format!("{name} op {op}: {what} {key} -> {}", show(&new)));
        self.write(r, key, Some(new), false);
    }

    /// A put's item: the key, the op, a value, sometimes an extra attribute and a TTL.
    fn fresh_item(&mut self, key: &str, op: OpId, now: u64) -> Item {
        let mut item = key_item(key);
        self.mark_replicated(&mut item);
        item.insert(OP.into(), AttributeValue::N(op.to_string()));
        item.insert(VAL.into(), AttributeValue::S(format!("v{op}")));
        if self.rng.gen_bool(0.3) {
            item.insert(
                EXTRA.into(),
                AttributeValue::N(self.rng.gen_range(0..3).to_string()),
            );
        }
        if self.rng.gen_bool(self.options.ttl_share) {
            let ttl_s = now / 1000 + self.rng.gen_range(0..=3);
            item.insert("ttl".into(), AttributeValue::N(ttl_s.to_string()));
        }
        item
    }

    /// The TTL process: removes items whose TTL (epoch seconds) is at or before `limit_ms`, each
    /// with probability `share` (DynamoDB deletes expired items late, in no particular order).
    fn ttl_sweep(&mut self, r: usize, limit_ms: u64, share: f64) -> bool {
        let ttl_name = self.regions[r].config.names.ttl.clone();
        let expired: Vec<String> = self.regions[r]
            .table
            .iter()
            .filter(|(_, item)| match item.get(&ttl_name) {
                Some(AttributeValue::N(ttl)) => ttl
                    .parse::<u64>()
                    .is_ok_and(|s| s.saturating_mul(1000) <= limit_ms),
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut swept = false;
        for key in expired {
            if share < 1.0 && !self.rng.gen_bool(share) {
                continue;
            }
            if !self.options.early_ttl && !self.quiet(&key) {
                continue;
            }
            let item = self.regions[r].table.get(&key).cloned();
            // The expiry is the effect of the write that set the TTL.
            if let Some(op) = item.as_ref().and_then(op_of) {
                self.regions[r].gone.insert(key.clone(), op);
            }
            let name = self.regions[r].name;
            self.trace(|| format!("{name} TTL expires {key}"));
            self.write(r, &key, None, true);
            swept = true;
        }
        swept
    }

    /// Nothing about `key` is still on its way anywhere: no message for it on any buffer, no
    /// stream record for it that an enqueue has yet to process, no write-back in flight. An item
    /// expires only then: the contract's assumption (an application's TTL, like a tombstone's
    /// lifetime, outlasts the longest time a record can wait) means that by the time an item
    /// expires, it has reached every region and every older record has been applied.
    fn quiet(&self, key: &str) -> bool {
        let buffered = self
            .queues
            .values()
            .any(|q| q.iter().any(|m| m.keys.iter().any(|k| k == key)));
        let unprocessed = self.regions.iter().any(|region| {
            region.stream[region.cursor..].iter().any(|e| e.key == key)
                || region
                    .inflight
                    .as_ref()
                    .is_some_and(|i| key_string(&i.hint.key) == key)
        });
        !buffered && !unprocessed
    }

    // --- enqueue ---------------------------------------------------------------------------

    /// One enqueue invocation: finishes a write-back in flight, or processes the next few stream
    /// records. Returns whether anything happened.
    fn enqueue_step(&mut self, r: usize) -> bool {
        if self.stalled[r] {
            return false;
        }
        if let Some(inflight) = self.regions[r].inflight.take() {
            self.write_back(r, inflight);
            return true;
        }
        let region = &self.regions[r];
        if region.cursor >= region.stream.len() {
            return false;
        }
        let batch = self.rng.gen_range(1..=4);
        let mut forwards: Vec<ChangeRecord> = Vec::new();
        for _ in 0..batch {
            let region = &self.regions[r];
            let Some(entry) = region.stream.get(region.cursor).cloned() else {
                break;
            };
            let seq = region.cursor;
            self.regions[r].cursor += 1;
            let event = event_record(&entry, seq, self.regions[r].name);
            let classified = match classify(&event, &self.regions[r].config) {
                Ok(c) => old_classify(c, &entry, &self.regions[r].config, self.options),
                Err(e) => {
                    self.fail(format!("classify: {e}"));
                    return true;
                }
            };
            match self.enqueue_record(r, &entry, classified, &mut forwards) {
                Then::NextRecord => {}
                Then::EndBatch => break,
                Then::Abandon => return true,
            }
        }
        self.send(r, &forwards);
        true
    }

    /// What enqueue does with one classified stream record: a forward joins `forwards`, a hint
    /// is reconciled.
    fn enqueue_record(
        &mut self,
        r: usize,
        entry: &StreamEntry,
        classified: Classified,
        forwards: &mut Vec<ChangeRecord>,
    ) -> Then {
        let name = self.regions[r].name;
        match classified {
            Classified::ReplicatedIn | Classified::TtlExpiry => {}
            Classified::Filtered if !self.options.filter_removes => {
                self.fail("classify filtered a record under filter All".into())
            }
            Classified::Filtered => {}
            Classified::StampAttributes(_) => {
                self.fail("an attribute-mode hint in an item-mode history".into())
            }
            Classified::Forward(record) => {
                self.trace(|| format!("{name} enqueue: forward {} {}", entry.key, record.version));
                forwards.push(record);
            }
            Classified::Reconcile(hint)
                if entry.new.is_none() && self.options.has(Hole::NoTombstones) =>
            {
                // The hole: the delete travels as a plain delete (an empty image).
                forwards.push(ChangeRecord {
                    key: hint.key.clone(),
                    image: Item::new(),
                    tombstone: true,
                    version: hint.seen.clone().unwrap_or_else(|| Version::new(0, "")),
                    source_region: name.to_string(),
                    written_at_ms: entry.at_ms,
                });
            }
            Classified::Reconcile(hint) => return self.enqueue_hint(r, entry, hint),
        }
        Then::NextRecord
    }

    /// A case-4 hint: decided, and when there is something to write, the write-back starts (the
    /// rest of the batch waits for it).
    fn enqueue_hint(&mut self, r: usize, entry: &StreamEntry, hint: Hint) -> Then {
        let name = self.regions[r].name;
        let about_write = entry.new.is_some();
        let current = self.regions[r].table.get(&entry.key).cloned();
        let Some(action) = self.decide(r, &hint, about_write, current.as_ref()) else {
            return Then::Abandon;
        };
        self.trace(|| {
            format!(
                "{name} enqueue: hint {} seen {:?} new {:?} current {} -> {}",
                entry.key,
                hint.seen.as_ref().map(|v| v.to_string()),
                hint.new_version.as_ref().map(|v| v.to_string()),
                current.as_ref().map_or("absent".into(), show),
                show_action(&action)
            )
        });
        if action == Action::Nothing {
            return Then::NextRecord;
        }
        let inflight = Inflight {
            hint,
            read: current,
            about_write,
            action,
            attempts: 0,
        };
        // The conditional write now, or later with other writes in between.
        if self.rng.gen_bool(0.5) {
            self.write_back(r, inflight);
        } else {
            self.regions[r].inflight = Some(inflight);
        }
        Then::EndBatch
    }

    /// The case-4 decision: the core's `reconcile`, with the switched-on holes applied to it.
    fn decide(
        &mut self,
        r: usize,
        hint: &Hint,
        about_write: bool,
        current: Option<&Item>,
    ) -> Option<Action> {
        let now = self.clock(r);
        let holes = self.options;
        let config = &self.regions[r].config;
        let mut action = if holes.has(Hole::FirstContract) {
            first_contract(hint, about_write, current, now, config)
        } else {
            reconcile(hint, current, now, config)
        };
        if let Ok(Action::Stamp(_)) = &action {
            if holes.has(Hole::NoLift) {
                let cv = current.and_then(|c| Version::of(c, &config.names).ok().flatten());
                let lifts = match &cv {
                    // Only the unstamped write this record is about gets stamped.
                    None => !(about_write && hint.new_version.is_none()),
                    // A local state below what was seen, other than the record's own version.
                    Some(cv) => hint.new_version.as_ref() != Some(cv),
                };
                if lifts {
                    action = Ok(Action::Nothing);
                }
            }
        }
        let local = config.local_region.clone();
        let names = config.names.clone();
        match action {
            Err(e) => {
                self.fail(format!("reconcile: {e}"));
                None
            }
            Ok(mut action) => {
                if holes.has(Hole::NoFloor) {
                    let clock_only = Version::new(now, local);
                    match &mut action {
                        Action::Stamp(Stamp { version, .. }) => *version = clock_only,
                        Action::Tombstone { item, version, .. }
                        | Action::Restore { item, version, .. } => {
                            clock_only.stamp_into(item, &names);
                            seal(item, &names);
                            *version = clock_only;
                        }
                        Action::Nothing => {}
                    }
                }
                let own_delete = hint.wrote == Wrote::Delete && hint.expired.is_none();
                if holes.has(Hole::DeleteTombstoneStands) && current.is_none() && own_delete {
                    if let Action::Tombstone { item, .. } = &mut action {
                        seal(item, &names);
                    }
                }
                if holes.has(Hole::KeepTombMarker) {
                    if let Action::Stamp(Stamp { remove, .. }) = &mut action {
                        remove.clear();
                    }
                }
                Some(action)
            }
        }
    }

    /// The conditional write of a write-back; on a failed condition the stored item (`ALL_OLD`)
    /// goes back into the decision.
    fn write_back(&mut self, r: usize, mut inflight: Inflight) {
        let key = key_string(&inflight.hint.key);
        loop {
            if !self.options.stale_write_backs {
                // Decided right before the write, from the item as read: the floor is now's.
                let read = inflight.read.clone();
                let Some(action) =
                    self.decide(r, &inflight.hint, inflight.about_write, read.as_ref())
                else {
                    return;
                };
                inflight.action = action;
            }
            let current = self.regions[r].table.get(&key).cloned();
            let condition = match &inflight.action {
                Action::Nothing => return,
                Action::Stamp(Stamp { condition, .. })
                | Action::Tombstone { condition, .. }
                | Action::Restore { condition, .. } => condition,
            };
            if condition.holds(current.as_ref()) {
                self.write_action(r, &key, inflight.action, inflight.about_write, current);
                return;
            }
            match self.after_failed_condition(r, &key, inflight, current) {
                Some(again) => inflight = again,
                None => return,
            }
        }
    }

    /// A write-back's action, its condition held on `current`.
    fn write_action(
        &mut self,
        r: usize,
        key: &str,
        action: Action,
        about_write: bool,
        current: Option<Item>,
    ) {
        let name = self.regions[r].name;
        match action {
            Action::Nothing => {}
            Action::Stamp(Stamp {
                version,
                remove,
                ttl,
                sum,
                ..
            }) => {
                // UpdateItem: sets the version, removes the listed attributes.
                let old_ops = current
                    .as_ref()
                    .filter(|c| !c.contains_key(OP))
                    .map(|c| self.ops_of(r, key, c))
                    .unwrap_or_default();
                let mut item = current.unwrap_or_else(|| key_item(key));
                version.stamp_into(&mut item, &self.regions[r].config.names);
                for attribute in &remove {
                    item.remove(attribute);
                }
                if let Some(ttl) = ttl {
                    item.insert(self.regions[r].config.names.ttl.clone(), ttl);
                }
                item.insert(self.regions[r].config.names.sum.clone(), sum);
                // A stamped tombstone still stands for what it stood for.
                if !old_ops.is_empty() && self.regions[r].config.is_tombstone(&item) {
                    self.register_tombstone(r, key, &item, old_ops);
                }
                self.trace(|| format!("{name} write-back: stamp {key} at {version}"));
                self.write(r, key, Some(item), false);
            }
            Action::Restore { item, version, .. } => {
                self.trace(|| format!("{name} write-back: restore {key} at {version}"));
                self.write(r, key, Some(item), false);
            }
            Action::Tombstone { item, version, .. } => {
                self.write_tombstone(r, key, item, version, about_write)
            }
        }
    }

    /// A write-back's tombstone. It stands for what left the key absent here (the model's rule:
    /// the last local delete, or here also an expiry); a delete's record may also make it stand
    /// for the last hard delete, when an expiry came after. Op 0: no application delete asked
    /// for it.
    fn write_tombstone(
        &mut self,
        r: usize,
        key: &str,
        item: Item,
        version: Version,
        about_write: bool,
    ) {
        let region = &self.regions[r];
        let name = region.name;
        let mut ops: Vec<OpId> = region.gone.get(key).copied().into_iter().collect();
        if !about_write {
            ops.extend(region.deleted.get(key).filter(|d| !ops.contains(d)));
        }
        if ops.is_empty() {
            ops.push(0);
        }
        self.trace(|| format!("{name} write-back: tombstone {key} at {version} (ops {ops:?})"));
        self.register_tombstone(r, key, &item, ops);
        self.write(r, key, Some(item), false);
    }

    /// A write-back whose condition failed on `current`: decided again from it, up to
    /// [`MAX_RECONCILE_ATTEMPTS`] times. Returns the write-back to try again at once, or `None`
    /// when it is done, failed, or left for a later enqueue invocation.
    fn after_failed_condition(
        &mut self,
        r: usize,
        key: &str,
        mut inflight: Inflight,
        current: Option<Item>,
    ) -> Option<Inflight> {
        let name = self.regions[r].name;
        inflight.attempts += 1;
        if inflight.attempts > MAX_RECONCILE_ATTEMPTS {
            self.fail(format!(
                "write-back for key {key} in {name} failed its condition {} times",
                inflight.attempts
            ));
            return None;
        }
        let action = self.decide(r, &inflight.hint, inflight.about_write, current.as_ref())?;
        self.trace(|| {
            format!(
                "{name} write-back: condition failed on {}, now {}",
                current.as_ref().map_or("absent".into(), show),
                show_action(&action)
            )
        });
        inflight.action = action;
        inflight.read = current;
        if inflight.action == Action::Nothing {
            return None;
        }
        if !self.rng.gen_bool(0.5) {
            self.regions[r].inflight = Some(inflight);
            return None;
        }
        Some(inflight)
    }

    /// Puts forwarded records on every destination's buffer, as packed bodies.
    fn send(&mut self, r: usize, records: &[ChangeRecord]) {
        if records.is_empty() {
            return;
        }
        let batches = match pack(records) {
            Ok(b) => b,
            Err(e) => {
                self.fail(format!("pack: {e}"));
                return;
            }
        };
        let destinations: Vec<usize> = (0..self.regions.len()).filter(|d| *d != r).collect();
        let mut first = 0;
        for message in batches.into_iter().flatten() {
            let keys: Vec<String> = records[first..first + message.records]
                .iter()
                .map(|rec| key_string(&rec.key))
                .collect();
            first += message.records;
            for &d in &destinations {
                let visible_at = self.now + self.rng.gen_range(0..=100);
                if let Some(q) = self.queues.get_mut(&(r, d)) {
                    q.push(Message {
                        body: message.body.clone(),
                        keys: keys.clone(),
                        visible_at,
                    });
                }
            }
        }
    }

    // --- drain -----------------------------------------------------------------------------

    /// One drain receive on buffer `s → d`: a few visible messages, unpacked and coalesced, each
    /// newest record written under the LWW condition. A message is deleted once every key it
    /// carries is done (applied, stale or conflict); a pending key keeps its message for a later
    /// receive. A deleted message may still come again (at-least-once). Returns whether any
    /// record was done.
    fn drain_step(&mut self, s: usize, d: usize, settling: bool) -> bool {
        if self.down[s] || self.down[d] {
            return false;
        }
        let now = self.now;
        let Some(queue) = self.queues.get(&(s, d)) else {
            return false;
        };
        let mut visible: Vec<usize> = (0..queue.len())
            .filter(|&i| settling || queue[i].visible_at <= now)
            .collect();
        if visible.is_empty() {
            return false;
        }
        let take = self.rng.gen_range(1..=3).min(visible.len());
        let mut taken = Vec::with_capacity(take);
        for _ in 0..take {
            taken.push(visible.swap_remove(self.rng.gen_range(0..visible.len())));
        }
        // Unpack every taken message; remember which keys each carries.
        let mut records = Vec::new();
        let mut message_keys: Vec<Vec<ItemKey>> = Vec::with_capacity(taken.len());
        for &i in &taken {
            let body = &self.queues[&(s, d)][i].body;
            match unpack(body) {
                Ok(rs) => {
                    message_keys.push(rs.iter().map(ChangeRecord::item_key).collect());
                    records.extend(rs);
                }
                Err(e) => {
                    self.fail(format!("unpack of a body pack produced: {e}"));
                    return false;
                }
            }
        }
        let (deletes, puts): (Vec<ChangeRecord>, Vec<ChangeRecord>) =
            records.into_iter().partition(|rec| rec.image.is_empty());
        if !deletes.is_empty() && !self.options.has(Hole::NoTombstones) {
            self.fail("a record with an empty image was forwarded".into());
            return false;
        }
        let mut done: HashMap<ItemKey, bool> = HashMap::new();
        let mut progress = false;
        for record in coalesce(puts) {
            let ok = self.apply(d, &record);
            progress |= ok;
            done.insert(record.item_key(), ok);
        }
        for record in deletes {
            let ok = self.apply_plain_delete(d, &record);
            progress |= ok;
            let slot = done.entry(record.item_key()).or_insert(true);
            *slot &= ok;
        }
        self.finish_messages(s, d, now, &taken, &message_keys, &done);
        progress
    }

    /// After a receive: deletes the taken messages whose keys are all done (unless SQS delivers
    /// them again); keeps the others hidden for a while (the visibility timeout).
    fn finish_messages(
        &mut self,
        s: usize,
        d: usize,
        now: u64,
        taken: &[usize],
        message_keys: &[Vec<ItemKey>],
        done: &HashMap<ItemKey, bool>,
    ) {
        let mut finished: Vec<usize> = Vec::new();
        for (&i, keys) in taken.iter().zip(message_keys) {
            let Some(hidden_for) = self.hidden_for(keys, done) else {
                finished.push(i);
                continue;
            };
            if let Some(q) = self.queues.get_mut(&(s, d)) {
                q[i].visible_at = now + hidden_for;
            }
        }
        finished.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(q) = self.queues.get_mut(&(s, d)) {
            for i in finished {
                q.remove(i);
            }
        }
    }

    /// How long a taken message stays hidden before it is delivered again, or `None` when it is
    /// deleted for good (every key done, no duplicate delivery drawn).
    fn hidden_for(&mut self, keys: &[ItemKey], done: &HashMap<ItemKey, bool>) -> Option<u64> {
        let all_done = keys.iter().all(|k| done.get(k).copied().unwrap_or(false));
        if !all_done {
            // Pending: it comes back after the visibility timeout.
            Some(self.rng.gen_range(20..=200))
        } else if self.rng.gen_bool(self.options.duplicate_share) {
            // Delivered again, possibly much later (a lost delete, another receiver).
            Some(self.rng.gen_range(0..=1500))
        } else {
            None
        }
    }

    /// Applies one record at `d`; true when it is done.
    fn apply(&mut self, d: usize, record: &ChangeRecord) -> bool {
        let key = key_string(&record.key);
        let name = self.regions[d].name;
        let current = self.regions[d].table.get(&key).cloned();
        let condition = apply_condition(record, &self.regions[d].config);
        if condition.holds(current.as_ref()) {
            self.trace(|| format!("{name} drain: apply {key} {}", record.version));
            let now = self.clock(d);
            let image = image_to_store(record, now, &self.regions[d].config).into_owned();
            if image != record.image {
                // Stored as its expiry: the effect of the write that set the TTL, as a sweep's.
                if let Some(op) = op_of(&record.image) {
                    self.regions[d].gone.insert(key.clone(), op);
                    self.register_tombstone(d, &key, &image, vec![op]);
                }
            }
            self.write(d, &key, Some(image), false);
            return true;
        }
        let judgement = judge(record, current.as_ref(), &self.regions[d].config);
        let stored = current.as_ref().and_then(|c| self.version(d, c));
        match judgement {
            Judgement::Stale { stored: s } | Judgement::Conflict { winner: s, .. } => {
                if stored.as_ref() != Some(&s) || s < record.version {
                    self.fail(format!(
                        "judge says {s} beats {} on key {key}, but the stored version is {stored:?}",
                        record.version
                    ));
                }
                self.trace(|| format!("{name} drain: {key} {} loses to {s}", record.version));
                true
            }
            Judgement::Pending(ferry_core::apply::PendingReason::Unversioned)
                if self.options.has(Hole::UnversionedOldest) =>
            {
                // The hole: the unversioned item is taken for the oldest and overwritten.
                self.trace(|| format!("{name} drain: overwrite unversioned {key}"));
                self.write(d, &key, Some(record.image.clone()), false);
                true
            }
            Judgement::Pending(ferry_core::apply::PendingReason::Unversioned) => {
                if stored.is_some() {
                    self.fail(format!("judge says pending on versioned item of key {key}"));
                }
                self.trace(|| format!("{name} drain: {key} {} pending", record.version));
                false
            }
            Judgement::Pending(reason) => {
                self.fail(format!(
                    "judge says {reason:?} for {key} {} over {:?} in a world without races",
                    record.version,
                    current.as_ref().map(show)
                ));
                false
            }
        }
    }

    /// The no-tombstones hole's drain side (as the model does it): delete whatever is not newer.
    fn apply_plain_delete(&mut self, d: usize, record: &ChangeRecord) -> bool {
        let key = key_string(&record.key);
        let Some(current) = self.regions[d].table.get(&key).cloned() else {
            return true;
        };
        let cv = self.version(d, &current);
        if cv.is_none() && !self.options.has(Hole::UnversionedOldest) {
            return false;
        }
        let unconditional = record.version.origin.is_empty();
        if cv.is_none_or(|cv| unconditional || cv <= record.version) {
            let name = self.regions[d].name;
            self.trace(|| format!("{name} drain: plain delete {key}"));
            self.write(d, &key, None, false);
        }
        true
    }
}

/// What an enqueue invocation does after one stream record.
enum Then {
    /// Goes on with the next record of its batch.
    NextRecord,
    /// Ends the batch (a write-back is under way) and sends what it forwarded so far.
    EndBatch,
    /// Stops at once, sending nothing: the history has failed.
    Abandon,
}

/// The classify-side holes put back: the decision the rules before application writes made.
fn old_classify(
    classified: Classified,
    entry: &StreamEntry,
    config: &Config,
    options: &CheckOptions,
) -> Classified {
    let names = &config.names;
    let version = |i: &Option<Item>| {
        i.as_ref()
            .and_then(|i| Version::of(i, names).ok().flatten())
    };
    let (vo, vn) = (version(&entry.old), version(&entry.new));
    let foreign_changed = vn
        .as_ref()
        .is_some_and(|v| v.origin != config.local_region && vn != vo);
    match classified {
        Classified::Reconcile(hint) if hint.clobbered.is_some() => {
            if options.has(Hole::NoRestore) || options.has(Hole::ForeignIsReplicated) {
                Classified::ReplicatedIn
            } else {
                Classified::Reconcile(hint)
            }
        }
        Classified::Reconcile(hint) if hint.expired.is_some() => {
            if options.has(Hole::NoExpiryTombstone) {
                Classified::TtlExpiry
            } else {
                Classified::Reconcile(hint)
            }
        }
        Classified::Reconcile(_) if options.has(Hole::ForeignIsReplicated) && foreign_changed => {
            Classified::ReplicatedIn
        }
        Classified::Forward(record) if options.has(Hole::FilterDropsStamps) => {
            let empty = Item::new();
            let (new, old) = (
                entry.new.as_ref().unwrap_or(&empty),
                entry.old.as_ref().unwrap_or(&empty),
            );
            let keys = key_item(&entry.key);
            if config.is_tombstone(new)
                || config.is_tombstone(old)
                || config.filter.admits(&keys, &config.key, new, old)
                || config.filter.admits(&keys, &config.key, old, old)
            {
                Classified::Forward(record)
            } else {
                Classified::Filtered
            }
        }
        other => other,
    }
}

/// The first contract's case 4 (the `first-contract` hole), as the model states it: a delete
/// leaves a tombstone at the floor over an absent key or anything older than the floor; any other
/// record stamps the item only if it still holds the exact version the record's write left.
fn first_contract(
    hint: &Hint,
    about_write: bool,
    current: Option<&Item>,
    now: u64,
    config: &Config,
) -> Result<Action, ferry_core::version::VersionError> {
    let floor_ts = hint.seen.as_ref().map_or(now, |s| now.max(s.ts_ms + 1));
    let floor = Version::new(floor_ts, config.local_region.clone());
    let cv = match current {
        Some(c) => Version::of(c, &config.names)?,
        None => None,
    };
    let names = &config.names;
    if !about_write {
        let replaces = current.is_none() || cv.as_ref().is_some_and(|cv| *cv < floor);
        if !replaces {
            return Ok(Action::Nothing);
        }
        let item = tombstone_item(&hint.key, &floor, now, config);
        let condition = Condition::Or(vec![
            Condition::NotExists(config.key.partition.clone()),
            Condition::LessThan(names.ts.clone(), floor.ts_value()),
            Condition::And(vec![
                Condition::Equals(names.ts.clone(), floor.ts_value()),
                Condition::LessThan(names.origin.clone(), floor.origin_value()),
            ]),
        ]);
        return Ok(Action::Tombstone {
            item,
            version: floor,
            condition,
        });
    }
    if current.is_none() || cv != hint.new_version {
        return Ok(Action::Nothing);
    }
    let condition = match &cv {
        None => Condition::And(vec![
            Condition::Exists(config.key.partition.clone()),
            Condition::NotExists(names.ts.clone()),
        ]),
        Some(v) => Condition::And(vec![
            Condition::Equals(names.ts.clone(), v.ts_value()),
            Condition::Equals(names.origin.clone(), v.origin_value()),
        ]),
    };
    let mut after = current.cloned().unwrap_or_default();
    floor.stamp_into(&mut after, names);
    Ok(Action::Stamp(Stamp {
        sum: ferry_core::digest::seal_of(&after, names),
        version: floor,
        remove: Vec::new(),
        ttl: None,
        condition,
    }))
}

/// The stream record Lambda would deliver for a simulated write.
fn event_record(entry: &StreamEntry, seq: usize, region: &str) -> EventRecord {
    let mut record = EventRecord::default();
    record.aws_region = region.to_string();
    record.event_id = format!("{region}-{seq}");
    record.event_name = match (&entry.old, &entry.new) {
        (None, Some(_)) => "INSERT",
        (Some(_), Some(_)) => "MODIFY",
        _ => "REMOVE",
    }
    .to_string();
    record.event_source = Some("aws:dynamodb".into());
    record.event_version = Some("1.1".into());
    record.change.keys = key_item(&entry.key).into();
    if let Some(new) = &entry.new {
        record.change.new_image = new.clone().into();
    }
    if let Some(old) = &entry.old {
        record.change.old_image = old.clone().into();
    }
    record.change.sequence_number = Some(format!("{:021}", seq + 1));
    record.change.stream_view_type = Some(StreamViewType::NewAndOldImages);
    // Streams give the creation time to the second.
    record.change.approximate_creation_date_time =
        (UNIX_EPOCH + Duration::from_secs(entry.at_ms / 1000)).into();
    if entry.by_ttl {
        let mut identity = UserIdentity::default();
        identity.type_ = "Service".into();
        identity.principal_id = "dynamodb.amazonaws.com".into();
        record.user_identity = Some(identity);
    }
    record
}

/// A compact, ordered rendering of an item for logs and verdicts.
fn show(item: &Item) -> String {
    let names = ferry_core::config::AttributeNames::default();
    let mut parts: Vec<String> = Vec::new();
    if let Ok(Some(v)) = Version::of(item, &names) {
        parts.push(format!(
            "v={}@{}",
            v.ts_ms.saturating_sub(BASE_EPOCH_MS),
            v.origin
        ));
    }
    let mut attributes: Vec<(&String, &AttributeValue)> = item
        .iter()
        .filter(|(n, _)| **n != names.ts && **n != names.origin && n.as_str() != PK)
        .collect();
    attributes.sort_by(|a, b| a.0.cmp(b.0));
    for (name, value) in attributes {
        let value = match value {
            AttributeValue::S(s) => s.clone(),
            AttributeValue::N(n) => n.clone(),
            AttributeValue::Bool(b) => b.to_string(),
            other => format!("{other:?}"),
        };
        parts.push(format!("{name}={value}"));
    }
    format!("{{{}}}", parts.join(" "))
}

fn show_action(action: &Action) -> String {
    let base = |v: &Version| format!("{}@{}", v.ts_ms.saturating_sub(BASE_EPOCH_MS), v.origin);
    match action {
        Action::Nothing => "nothing".into(),
        Action::Stamp(Stamp {
            version, remove, ..
        }) => format!("stamp at {} removing {remove:?}", base(version)),
        Action::Tombstone { version, .. } => format!("tombstone at {}", base(version)),
        Action::Restore { version, .. } => format!("restore at {}", base(version)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_history() {
        let options = CheckOptions::default();
        let (a, log_a) = trace_history(7, 3, &options);
        let (b, log_b) = trace_history(7, 3, &options);
        assert_eq!(a, b);
        assert_eq!(log_a, log_b);
        assert!(log_a.len() > 50, "a history does things: {}", log_a.len());
    }

    #[test]
    fn hole_names_round_trip() {
        for hole in Hole::ALL {
            assert_eq!(Hole::parse(hole.name()), Some(hole));
        }
        assert_eq!(Hole::parse("nope"), None);
    }

    #[test]
    fn past_sets() {
        let mut p = Past::default();
        p.insert(3);
        p.insert(200);
        assert!(p.contains(3) && p.contains(200));
        assert!(!p.contains(4) && !p.contains(1000));
    }
}
