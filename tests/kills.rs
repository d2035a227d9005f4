//! Issue #17: the enqueue and the drain killed at random points of their work.
//!
//! Two regions, a hand-driven cluster (`ferry_e2e::hand`): applications write a seeded workload
//! (stamped and plain puts and updates, hard deletes, tombstones, shared and own keys) in rounds;
//! after each round every handler runs once and is aborted after a seeded delay — mid-stamp,
//! between the sends of a batch, mid-take, mid-apply, between the re-queue send and the delete —
//! exactly as a crash or Lambda's timeout ends it, with no graceful stop. Then the cluster heals:
//! every handler runs to completion, killed stream batches are handed again (Lambda's retry),
//! the killed drains' messages come back after the visibility timeout. It must converge with
//! every key showing a last write (the ledger's judgment) and nothing in the DLQ.
//!
//! `FERRY_KILL_ROUNDS` (default 12 rounds × 4 handlers ≈ 48 kills) runs longer; `FERRY_KILL_SEED`
//! picks the seed. Run: `cargo test -p ferry-e2e --test kills -- --nocapture`.

use ferry_e2e::hand::{Ended, HandCluster};
use ferry_e2e::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A kill delay: mostly within the first few hundred ms of an invocation (where its awaits are),
/// sometimes at once, sometimes later.
fn delay(rng: &mut StdRng) -> Duration {
    match rng.gen_range(0..10) {
        0 => Duration::ZERO,
        1 => Duration::from_millis(rng.gen_range(300..1500)),
        _ => Duration::from_micros(rng.gen_range(0..300_000)),
    }
}

#[derive(Debug, Default)]
struct Tally {
    kills: u64,
    /// Invocations that finished before their kill came.
    outran: u64,
}

impl Tally {
    fn count(&mut self, e: Ended) {
        match e {
            Ended::Killed => self.kills += 1,
            Ended::Completed => self.outran += 1,
            Ended::Idle => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the harness does not finish its heal yet (issue #17): run by hand with --ignored"]
async fn killed_handlers_converge_without_loss() {
    let seed = env_u64("FERRY_KILL_SEED", 17);
    let rounds = env_u64("FERRY_KILL_ROUNDS", 12);
    let started = Instant::now();
    let mut cluster = HandCluster::start(&["us-east-1", "eu-west-1"]).await;
    let apps = cluster.apps();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut enqueue, mut drain) = (Tally::default(), Tally::default());
    for round in 0..rounds {
        Workload::new(seed * 1000 + round, 6, 6, 12)
            .run(&apps, &ledger)
            .await;
        for i in 0..cluster.regions.len() {
            // A kill mid-batch; the batch is handed again at the next call (Lambda's retry).
            enqueue.count(cluster.enqueue(i, Some(delay(&mut rng))).await);
        }
        for b in 0..cluster.buffers.len() {
            drain.count(cluster.drain(b, Some(delay(&mut rng))).await);
        }
    }
    let healed = cluster.heal(CONVERGE_TIMEOUT).await;
    let dlq = cluster.dlq_reasons().await;
    let l = match healed {
        Ok(l) => l,
        Err(l) => panic!(
            "no convergence after the kills:\n{}\nDLQ: {dlq:?}",
            differences(&l, &cluster.regions[0].config)
        ),
    };
    let bad = lock(&ledger).judge(&l.scans[0].1, &cluster.regions[0].config);
    eprintln!(
        "kills: seed {seed}, {rounds} rounds, {} writes, {} keys; enqueue {enqueue:?}, drain \
         {drain:?}; drained {} records ({} applied, {} requeued); lost {}, divergent {}, DLQ {}; \
         {:.1} s",
        lock(&ledger).writes,
        lock(&ledger).last.len(),
        cluster.drained.records,
        cluster.drained.applied,
        cluster.drained.requeued,
        bad.len(),
        l.comparison.divergent_keys(),
        dlq.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(bad.is_empty(), "writes lost:\n{}", bad.join("\n"));
    assert!(dlq.is_empty(), "healthy records dead-lettered: {dlq:?}");
    assert!(
        enqueue.kills + drain.kills >= rounds,
        "too few kills landed"
    );
}
