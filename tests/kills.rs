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
//! A second test kills a real process: the drain run as its own process (`drain-loop`, wired as
//! the Lambda's main) gets SIGKILL at a seeded moment of each round.
//!
//! `FERRY_KILL_ROUNDS` (default 12 rounds × 4 handlers, about half of them killed) and
//! `FERRY_SIGKILL_ROUNDS` (default 8) run longer; `FERRY_KILL_SEED` picks the seed; `make
//! faults` runs several seeds. Run: `cargo test -p ferry-e2e --test kills -- --nocapture`.

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

/// How long one kind of handler runs, learned from its invocations, so that kills land
/// anywhere in its work (a handler of a few records finishes in milliseconds; a fixed range of
/// delays would mostly miss it).
#[derive(Debug)]
struct Kills {
    /// How long an invocation runs (µs): a moving average of those that finished, stretched
    /// after each kill.
    typical_us: f64,
    kills: u64,
    /// Invocations that finished before their kill came.
    outran: u64,
}

impl Default for Kills {
    fn default() -> Self {
        Kills {
            typical_us: 30_000.0,
            kills: 0,
            outran: 0,
        }
    }
}

impl Kills {
    /// A delay from the invocation's start to somewhere within, or just past, its usual run.
    fn delay(&self, rng: &mut StdRng) -> Duration {
        let end = (self.typical_us * 1.3) as u64 + 1;
        Duration::from_micros(rng.gen_range(0..end))
    }

    fn count(&mut self, ended: Ended, ran: Duration) {
        match ended {
            // Killed every time, a batch would only ever finish in the heal: reach further.
            Ended::Killed => {
                self.kills += 1;
                self.typical_us *= 1.15;
            }
            Ended::Completed => {
                self.outran += 1;
                self.typical_us = 0.7 * self.typical_us + 0.3 * ran.as_micros() as f64;
            }
            Ended::Idle => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_handlers_converge_without_loss() {
    let seed = env_u64("FERRY_KILL_SEED", 17);
    let rounds = env_u64("FERRY_KILL_ROUNDS", 12);
    let started = Instant::now();
    let mut cluster = HandCluster::start(&["us-east-1", "eu-west-1"]).await;
    let apps = cluster.apps();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut enqueue, mut drain) = (Kills::default(), Kills::default());
    for round in 0..rounds {
        Workload::new(seed * 1000 + round, 6, 6, 12)
            .run(&apps, &ledger)
            .await;
        for i in 0..cluster.regions.len() {
            // A kill mid-batch; the batch is handed again at the next call (Lambda's retry).
            let t = Instant::now();
            let ended = cluster.enqueue(i, Some(enqueue.delay(&mut rng))).await;
            enqueue.count(ended, t.elapsed());
        }
        for b in 0..cluster.buffers.len() {
            let t = Instant::now();
            let ended = cluster.drain(b, Some(drain.delay(&mut rng))).await;
            drain.count(ended, t.elapsed());
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
    let ledger = lock(&ledger);
    let bad = ledger.judge(&l.scans[0].1, &cluster.regions[0].config);
    eprintln!(
        "kills: seed {seed}, {rounds} rounds, {} writes, {} keys; enqueue {enqueue:?}, drain \
         {drain:?}; drained {} records ({} applied, {} requeued); lost {}, divergent {}, DLQ {}; \
         {:.1} s",
        ledger.writes,
        ledger.last.len(),
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
        "too few kills landed: {enqueue:?} {drain:?}"
    );
}

/// The drain of us-east-1 → eu-west-1 as its own process (`drain-loop`, wired as the Lambda's
/// main), reaching the hand cluster's emulators over loopback.
fn drain_process(cluster: &HandCluster) -> std::process::Child {
    let pair = &cluster.buffers[0];
    let destination = cluster
        .regions
        .iter()
        .find(|r| r.name == pair.destination)
        .expect("destination");
    std::process::Command::new(env!("CARGO_BIN_EXE_drain-loop"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("AWS_REGION", pair.source.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("FERRY_PARTITION_KEY", PK),
            ("FERRY_SOURCE_REGION", pair.source.as_str()),
            ("FERRY_DESTINATION_REGION", pair.destination.as_str()),
            ("FERRY_DESTINATION_TABLE", TABLE),
            ("FERRY_BUFFER_URL", pair.buffer.queue_url.as_str()),
            ("FERRY_DLQ_URL", pair.dlq.queue_url.as_str()),
            (
                "FERRY_DYNAMODB_ENDPOINT",
                destination.dynamo.endpoint().as_str(),
            ),
            ("FERRY_SQS_ENDPOINT", cluster.moto.endpoint().as_str()),
            ("FERRY_RECEIVE_WAIT_S", "0"),
            (
                "FERRY_BUFFER_MAX_RECEIVE_COUNT",
                ferry_e2e::hand::MAX_RECEIVE_COUNT.to_string().as_str(),
            ),
            ("FERRY_DRAIN_BUDGET_S", "2"),
            (
                "FERRY_VISIBILITY_TIMEOUT_S",
                ferry_e2e::hand::VISIBILITY_S.to_string().as_str(),
            ),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the drain-loop binary starts")
}

/// A real process kill: the drain process gets SIGKILL at a seeded moment of each round — every
/// other round once it holds messages — (the kill counts as "mid-take" when the buffer showed
/// messages in flight at that moment), and starts again the next round, as Lambda starts a new
/// container. Many kills on the same messages climb their receive counts towards the redrive
/// limit: the drain renews them (`ferry_core::wear`), so nothing healthy reaches the DLQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_process_killed_with_sigkill_loses_nothing() {
    let seed = env_u64("FERRY_KILL_SEED", 17);
    let rounds = env_u64("FERRY_SIGKILL_ROUNDS", 8);
    let mut cluster = HandCluster::start(&["us-east-1", "eu-west-1"]).await;
    let apps = cluster.apps();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut kills, mut mid_take) = (0, 0);
    for round in 0..rounds {
        Workload::new(seed * 1000 + round, 8, 6, 16)
            .run(&apps, &ledger)
            .await;
        for i in 0..cluster.regions.len() {
            while cluster.enqueue(i, None).await == Ended::Completed {}
        }
        cluster.drain(1, None).await;
        let mut process = drain_process(&cluster);
        if round % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(20..600))).await;
        } else {
            // Every other round, once the process holds messages: a kill mid-take for sure.
            let holding = Instant::now();
            while holding.elapsed() < Duration::from_secs(3)
                && !cluster.buffers[0]
                    .buffer
                    .depth()
                    .await
                    .is_ok_and(|d| d.in_flight > 0)
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
        }
        let depth = cluster.buffers[0].buffer.depth().await;
        process.kill().expect("SIGKILL");
        process.wait().expect("reaped");
        kills += 1;
        if depth.is_ok_and(|d| d.in_flight > 0) {
            mid_take += 1;
        }
    }
    let healed = cluster.heal(CONVERGE_TIMEOUT).await;
    let dlq = cluster.dlq_reasons().await;
    let l = match healed {
        Ok(l) => l,
        Err(l) => panic!(
            "no convergence after SIGKILLs:\n{}\nDLQ: {dlq:?}",
            differences(&l, &cluster.regions[0].config)
        ),
    };
    let ledger = lock(&ledger);
    let bad = ledger.judge(&l.scans[0].1, &cluster.regions[0].config);
    eprintln!(
        "sigkill: seed {seed}, {rounds} rounds, {} writes, {} keys; {kills} kills, {mid_take} \
         with messages in flight; lost {}, divergent {}, DLQ {}",
        ledger.writes,
        ledger.last.len(),
        bad.len(),
        l.comparison.divergent_keys(),
        dlq.len(),
    );
    assert!(bad.is_empty(), "writes lost:\n{}", bad.join("\n"));
    assert!(dlq.is_empty(), "healthy records dead-lettered: {dlq:?}");
}
