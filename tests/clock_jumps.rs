//! Issue #17: one region's clock jumps while applications keep writing.
//!
//! Two regions, a hand-driven cluster (`ferry_e2e::hand`) whose region clock is the dynoxide
//! server's, the enqueue's, the drain's (drains run in their source region) and the
//! application's (its helper stamps with it). Applications write a seeded workload in rounds,
//! each round followed by an enqueue and a drain of every region. Mid-run region 0's clock
//! jumps; records it wrote while jumped may still wait in its buffer when the clock is put
//! right. Every scenario must converge with every key showing a last write, and nothing in the
//! DLQ. Run: `cargo test -p ferry-e2e --test clock_jumps -- --nocapture`.

use ferry_e2e::hand::HandCluster;
use ferry_e2e::*;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const MINUTE_MS: i64 = 60 * 1000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// A workload round (seeded by `round`) and, if `replicate`, an enqueue and a drain of all.
async fn round(c: &mut HandCluster, ledger: &Arc<Mutex<Ledger>>, round: u64, replicate: bool) {
    let apps = c.apps();
    Workload::new(round, 6, 6, 10).run(&apps, ledger).await;
    for i in 0..c.regions.len() {
        c.enqueue(i, None).await;
    }
    if replicate {
        for b in 0..c.buffers.len() {
            c.drain(b, None).await;
        }
    }
}

/// Region 0's clock jumps by `jump_ms`; with `corrected`, it is put right after a round whose
/// records were enqueued but not drained yet.
async fn jump(name: &str, jump_ms: i64, corrected: bool) {
    let started = Instant::now();
    let mut c = HandCluster::start(&["us-east-1", "eu-west-1"]).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for r in 0..3 {
        round(&mut c, &ledger, r, true).await;
    }
    c.regions[0].dynamo.clock().advance_ms(jump_ms);
    for r in 3..6 {
        round(&mut c, &ledger, r, true).await;
    }
    if corrected {
        round(&mut c, &ledger, 6, false).await;
        c.regions[0].dynamo.clock().advance_ms(-jump_ms);
    }
    for r in 7..10 {
        round(&mut c, &ledger, r, true).await;
    }
    let healed = c.heal(CONVERGE_TIMEOUT).await;
    let dlq = c.dlq_reasons().await;
    let config = c.regions[0].config.clone();
    let (l, divergent) = match healed {
        Ok(l) => (l, 0),
        Err(l) => {
            let n = l.comparison.divergent_keys();
            eprintln!("{name}: no convergence:\n{}", differences(&l, &config));
            (l, n)
        }
    };
    let ledger = lock(&ledger);
    let bad = ledger.judge(&l.scans[0].1, &config);
    eprintln!(
        "{name}: {} writes, {} keys, drained {} records ({} applied); lost {}, divergent {}, \
         DLQ {} {dlq:?}; {:.1} s",
        ledger.writes,
        ledger.last.len(),
        c.drained.records,
        c.drained.applied,
        bad.len(),
        divergent,
        dlq.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(divergent, 0, "{name}: divergent keys");
    assert!(bad.is_empty(), "{name}: writes lost:\n{}", bad.join("\n"));
    assert!(dlq.is_empty(), "{name}: dead-lettered: {dlq:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_back() {
    jump("-60 s", -MINUTE_MS, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_ahead() {
    jump("+1 day", DAY_MS, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_ahead_then_put_right() {
    jump("+1 day, corrected", DAY_MS, true).await;
}
