//! What the local pipelines did, gathered for the live status, the demo report and its picture.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct EnqueueTotals {
    pub records: u64,
    pub forwarded: u64,
    pub stamped: u64,
    pub tombstoned: u64,
    pub skipped_replicated_in: u64,
    pub skipped_ttl: u64,
    pub filtered: u64,
    pub poison: u64,
    pub failed: u64,
    pub sqs_requests: u64,
}

#[derive(Clone, Debug, Default)]
pub struct DrainTotals {
    pub invocations: u64,
    /// The most drain workers one tick ran (itself included).
    pub workers_max: u32,
    pub messages: u64,
    pub records: u64,
    pub applied: u64,
    pub stale: u64,
    pub conflicts: u64,
    pub pending: u64,
    pub requeued: u64,
    pub dlq: u64,
    pub sqs_requests: u64,
    pub unreachable: u64,
    /// Attribute merge mode's strongly consistent reads and conditional updates.
    pub merge_reads: u64,
    pub merge_writes: u64,
    /// DynamoDB requests (applying records, and destination pings).
    pub dynamodb_requests: u64,
    pub pings: u64,
    /// Invocations stopped on a settings or merge-mode mismatch with the destination.
    pub mismatched: u64,
    /// Invocations that applied a heartbeat (reported `ReplicationLatency`), and the last age.
    pub heartbeats: u64,
    pub replication_latency_ms: Option<u64>,
}

/// One applied record's lag: when it was applied (ms since the run started), into which
/// region, and how long after its source write.
#[derive(Clone, Copy, Debug)]
pub struct LagSample {
    pub at_ms: u64,
    pub written_at_ms: u64,
    pub lag_ms: u64,
    /// Where the lag went (source write → buffer → drain → applied).
    pub parts: Option<ferry_drain::LagParts>,
}

#[derive(Default)]
struct Inner {
    enqueue: BTreeMap<String, EnqueueTotals>,
    /// By destination region.
    drain: BTreeMap<String, DrainTotals>,
    lag: BTreeMap<String, Vec<LagSample>>,
    outages: Vec<(String, u64, Option<u64>)>,
}

pub struct Stats {
    started: Instant,
    started_epoch_ms: u64,
    inner: Mutex<Inner>,
}

impl Stats {
    pub fn new(regions: &[String]) -> Self {
        let mut inner = Inner::default();
        for r in regions {
            inner.enqueue.insert(r.clone(), EnqueueTotals::default());
            inner.drain.insert(r.clone(), DrainTotals::default());
            inner.lag.insert(r.clone(), Vec::new());
        }
        Stats {
            started: Instant::now(),
            started_epoch_ms: ferry_core::clock::system_now_ms(),
            inner: Mutex::new(inner),
        }
    }

    /// Milliseconds since the run started.
    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn started_epoch_ms(&self) -> u64 {
        self.started_epoch_ms
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    pub fn enqueued(&self, region: &str, c: &ferry_enqueue::Counts) {
        self.with(|i| {
            let t = i.enqueue.entry(region.to_string()).or_default();
            t.records += c.records as u64;
            t.forwarded += c.forwarded as u64;
            t.stamped += c.stamped as u64;
            t.tombstoned += c.tombstoned as u64;
            t.skipped_replicated_in += c.skipped_replicated_in as u64;
            t.skipped_ttl += c.skipped_ttl as u64;
            t.filtered += c.filtered as u64;
            t.poison += c.poison as u64;
            t.failed += c.failed as u64;
            t.sqs_requests += c.sqs_requests as u64;
        })
    }

    pub fn drained(&self, destination: &str, update: impl FnOnce(&mut DrainTotals)) {
        self.with(|i| update(i.drain.entry(destination.to_string()).or_default()))
    }

    pub fn lag(&self, destination: &str, samples: impl IntoIterator<Item = LagSample>) {
        self.with(|i| {
            i.lag
                .entry(destination.to_string())
                .or_default()
                .extend(samples)
        })
    }

    pub fn outage(&self, region: &str, begins: bool) {
        let now = self.elapsed_ms();
        self.with(|i| {
            if begins {
                i.outages.push((region.to_string(), now, None));
            } else if let Some(o) = i
                .outages
                .iter_mut()
                .rev()
                .find(|o| o.0 == region && o.2.is_none())
            {
                o.2 = Some(now);
            }
        })
    }

    pub fn enqueue_totals(&self) -> BTreeMap<String, EnqueueTotals> {
        self.with(|i| i.enqueue.clone())
    }

    pub fn drain_totals(&self) -> BTreeMap<String, DrainTotals> {
        self.with(|i| i.drain.clone())
    }

    pub fn lag_samples(&self) -> BTreeMap<String, Vec<LagSample>> {
        self.with(|i| i.lag.clone())
    }

    pub fn outages(&self) -> Vec<(String, u64, Option<u64>)> {
        self.with(|i| i.outages.clone())
    }
}
