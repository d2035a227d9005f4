//! What a history's check finds ([`Verdict`]) and what a batch of histories found ([`Summary`]).

use std::collections::BTreeMap;
use std::fmt;

/// The outcome of one history.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Ok,
    /// Regions hold different states for a key.
    Divergent {
        key: String,
        /// Each region's state of the key.
        states: Vec<(String, String)>,
    },
    /// The surviving state does not show what the operation it came from wrote.
    WrongContent {
        key: String,
        shows: String,
        op: usize,
        wrote: String,
    },
    /// The surviving state is the effect of `op`, yet later operations that saw it were lost.
    LostAfter {
        key: String,
        op: usize,
        later: Vec<usize>,
        /// Every operation involved was helper-stamped (no unstamped write, no hard delete).
        helper_only: bool,
    },
    /// The key is absent, but no delete or expiry explains it without losing a later write.
    LostAbsent {
        key: String,
        ops: Vec<usize>,
    },
    /// Attribute mode: the key's state is not the merge of every application write (an
    /// acknowledged attribute write is missing, or one came back).
    LostUpdates {
        key: String,
        /// The attributes that differ from the merge of the writes.
        attributes: Vec<String>,
        shows: String,
        expected: String,
    },
    /// Records are still waiting when nothing else can happen.
    Undelivered {
        queue: String,
        messages: usize,
    },
    /// A core function errored or contradicted itself (e.g. a judge that says stale while the
    /// stored version is older), or the history did not settle.
    Anomaly(String),
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok)
    }

    /// A short name, for counting verdicts (the model's names where there is one).
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Divergent { .. } => "divergent",
            Verdict::WrongContent { .. } => "wrong content",
            Verdict::LostAfter {
                helper_only: true, ..
            } => "lost after (helper)",
            Verdict::LostAfter { .. } => "lost after (plain)",
            Verdict::LostAbsent { .. } => "lost after",
            Verdict::LostUpdates { .. } => "lost updates",
            Verdict::Undelivered { .. } => "undelivered",
            Verdict::Anomaly(_) => "anomaly",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ok => write!(f, "ok"),
            Verdict::Divergent { key, states } => {
                write!(f, "divergent on key {key}:")?;
                for (region, state) in states {
                    write!(f, "\n  {region}: {state}")?;
                }
                Ok(())
            }
            Verdict::WrongContent {
                key,
                shows,
                op,
                wrote,
            } => write!(
                f,
                "wrong content on key {key}: it shows {shows}, the effect of op {op}, which wrote {wrote}"
            ),
            Verdict::LostAfter {
                key, op, later, ..
            } => write!(
                f,
                "lost after on key {key}: op {op} survives, but ops {later:?} came after it"
            ),
            Verdict::LostAbsent { key, ops } => write!(
                f,
                "lost after on key {key}: absent, but no delete or expiry explains it (last ops {ops:?})"
            ),
            Verdict::LostUpdates {
                key,
                attributes,
                shows,
                expected,
            } => write!(
                f,
                "lost updates on key {key}: attributes {attributes:?}; it shows {shows}, the writes merge to {expected}"
            ),
            Verdict::Undelivered { queue, messages } => {
                write!(f, "{messages} messages never delivered on {queue}")
            }
            Verdict::Anomaly(why) => write!(f, "anomaly: {why}"),
        }
    }
}

/// What a batch of histories found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub runs: u64,
    pub failed: u64,
    /// Failing verdicts by name.
    pub verdicts: BTreeMap<&'static str, u64>,
    /// The first failing history: its seed (replay with `run_history(seed, ...)`), its number of
    /// regions and its verdict.
    pub first_failure: Option<(u64, usize, Verdict)>,
    /// The first few failing seeds of each verdict, to replay one of each kind.
    pub examples: BTreeMap<&'static str, Vec<u64>>,
}

/// How many failing seeds [`Summary::examples`] keeps per verdict.
pub const EXAMPLES_PER_VERDICT: usize = 5;

impl Summary {
    /// Adds one history's verdict.
    pub fn record(&mut self, seed: u64, regions: usize, verdict: Verdict) {
        self.runs += 1;
        if !verdict.is_ok() {
            self.failed += 1;
            *self.verdicts.entry(verdict.name()).or_default() += 1;
            let examples = self.examples.entry(verdict.name()).or_default();
            if examples.len() < EXAMPLES_PER_VERDICT {
                examples.push(seed);
            }
            if self.first_failure.is_none() {
                self.first_failure = Some((seed, regions, verdict));
            }
        }
    }

    /// Adds another summary (e.g. from another thread) that ran later seeds.
    pub fn merge(&mut self, other: Summary) {
        self.runs += other.runs;
        self.failed += other.failed;
        for (name, n) in other.verdicts {
            *self.verdicts.entry(name).or_default() += n;
        }
        for (name, seeds) in other.examples {
            let examples = self.examples.entry(name).or_default();
            let room = EXAMPLES_PER_VERDICT.saturating_sub(examples.len());
            examples.extend(seeds.into_iter().take(room));
        }
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "runs={} failed={} {{", self.runs, self.failed)?;
        for (i, (name, n)) in self.verdicts.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "'{name}': {n}")?;
        }
        write!(f, "}}")
    }
}
