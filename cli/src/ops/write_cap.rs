//! `--max-wcu N` of the operator tools that write (`ferry backfill`, `ferry verify --repair`):
//! at most N write units per second into each table the command writes, through the same token
//! bucket as the drains' cap (`ferry_core::rate`). Without it nothing waits.

use ferry_core::rate::{parse_cap, write_units, Steady, TokenBucket};
use ferry_core::Item;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// clap's parser for `--max-wcu`: a number of write units per second, 0 for no cap.
pub fn parse_max_wcu(text: &str) -> Result<f64, String> {
    parse_cap(text).unwrap_or(Ok(0.0))
}

/// One bucket per region written, all at the same rate.
#[derive(Debug, Default)]
pub struct WriteCap {
    rate: Option<Steady>,
    buckets: Mutex<HashMap<String, TokenBucket<Steady>>>,
    started: Option<Instant>,
    units: AtomicU64,
    waited_ms: AtomicU64,
}

impl WriteCap {
    /// `None`, 0 or less: no cap.
    pub fn new(max_wcu: Option<f64>) -> WriteCap {
        WriteCap {
            rate: max_wcu.and_then(Steady::new),
            started: Some(Instant::now()),
            ..WriteCap::default()
        }
    }

    pub fn is_set(&self) -> bool {
        self.rate.is_some()
    }

    /// Waits until a write of `item` into `region`'s table fits the cap, and takes its units.
    pub async fn take(&self, region: &str, item: &Item) {
        if self.rate.is_some() {
            self.take_units(region, write_units(item)).await;
        }
    }

    /// Waits until `units` fit `region`'s bucket, and takes them.
    pub async fn take_units(&self, region: &str, units: u32) {
        let Some(rate) = self.rate else {
            return;
        };
        loop {
            let wait = {
                let now = self.now_ms();
                let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
                let bucket = buckets
                    .entry(region.to_string())
                    .or_insert_with(|| TokenBucket::new(rate, now));
                bucket.take(units, now)
            };
            if wait == 0 {
                self.units.fetch_add(u64::from(units), Ordering::Relaxed);
                return;
            }
            self.waited_ms.fetch_add(wait, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// Units a write spent beyond what it took (a merge of several rounds): a debt.
    pub fn spend(&self, region: &str, units: u64) {
        let Some(rate) = self.rate else {
            return;
        };
        let now = self.now_ms();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .entry(region.to_string())
            .or_insert_with(|| TokenBucket::new(rate, now))
            .spend(units, now);
        self.units.fetch_add(units, Ordering::Relaxed);
    }

    /// Write units taken so far, and the time writes waited on the cap (ms, summed over the
    /// writes in flight).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.units.load(Ordering::Relaxed),
            self.waited_ms.load(Ordering::Relaxed),
        )
    }

    fn now_ms(&self) -> u64 {
        self.started.map_or(0, |s| {
            s.elapsed().as_millis().min(u128::from(u64::MAX)) as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::AttributeValue;

    #[test]
    fn the_flag_reads_a_rate_and_zero_is_none() {
        assert_eq!(parse_max_wcu("150"), Ok(150.0));
        assert_eq!(parse_max_wcu("0"), Ok(0.0));
        assert!(parse_max_wcu("fast").is_err());
        assert!(!WriteCap::new(Some(0.0)).is_set());
        assert!(!WriteCap::new(None).is_set());
        assert!(WriteCap::new(Some(5.0)).is_set());
    }

    #[tokio::test]
    async fn writes_wait_for_their_units_per_region() {
        let item: Item = [("pk".to_string(), AttributeValue::S("k".into()))].into();
        let cap = WriteCap::new(Some(50.0));
        let started = Instant::now();
        for _ in 0..10 {
            cap.take("eu-west-1", &item).await;
            cap.take("us-west-2", &item).await;
        }
        // 10 units in each region at 50 a second: ~200 ms, both regions at once.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(180), "{took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");
        assert_eq!(cap.totals().0, 20);
        // No cap: nothing waits, nothing is counted.
        let none = WriteCap::new(None);
        none.take("eu-west-1", &item).await;
        assert_eq!(none.totals(), (0, 0));
    }
}
