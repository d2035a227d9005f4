//! Several drain workers on one buffer (`ferry_drain::tick` with the in-process
//! `LocalWorkers`), against moto's SQS and a dynoxide destination behind the fault proxy: they
//! converge (LWW writes commute), and a destination that stops answering stops all of them
//! without burning a receive count; the replay after it uses the full fan-out; a load that
//! starts mid-tick gets its workers within the tick.

mod common;

use common::*;
use ferry_core::{ChangeRecord, Version};
use ferry_drain::{tick, DrainReport, Drainer, LocalWorkers, Ticker};
use ferry_sandbox::{FaultMode, FaultProxy};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ORIGINS: [&str; 2] = ["us-east-1", "ap-southeast-2"];

/// `keys` keys × `versions` versions each, from two origins, shuffled: the newest of a key is
/// version `versions` (from `ORIGINS[versions % 2]`).
fn backlog(prefix: &str, keys: usize, versions: u64, seed: u64) -> Vec<ChangeRecord> {
    let mut records: Vec<_> = (0..keys)
        .flat_map(|k| {
            (1..=versions).map(move |v| {
                let origin = ORIGINS[(v % 2) as usize];
                record(&format!("{prefix}{k}"), 2000 + v, origin, &format!("v{v}"))
            })
        })
        .collect();
    records.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    records
}

/// Every key holds its newest version.
async fn assert_converged(pair: &Pair, prefix: &str, keys: usize, versions: u64) {
    let newest = Version::new(2000 + versions, ORIGINS[(versions % 2) as usize]);
    for k in 0..keys {
        let pk = format!("{prefix}{k}");
        assert_eq!(pair.version_of(&pk).await, Some(newest.clone()), "{pk}");
    }
}

/// A drainer writing through `proxy` with `max_in_flight` puts at once, up to `max_workers`.
async fn drainer(pair: &Pair, proxy: &FaultProxy, in_flight: &str, workers: &str) -> Arc<Drainer> {
    let extra = [
        ("FERRY_MAX_IN_FLIGHT", in_flight),
        ("FERRY_MAX_DRAIN_CONCURRENCY", workers),
        ("FERRY_DRAIN_BUDGET_S", "60"),
        // A loaded machine must not pass for an outage (a refused connection fails at once).
        ("FERRY_DESTINATION_ATTEMPT_TIMEOUT_MS", "10000"),
        ("FERRY_DESTINATION_OPERATION_TIMEOUT_MS", "30000"),
    ];
    let mut d = pair.drainer_via(&proxy.endpoint(), &extra).await;
    d.settings.ping_timeout = Duration::from_secs(2);
    Arc::new(d)
}

/// One tick and every worker it started; the tick's report first.
async fn run_tick(
    d: &Arc<Drainer>,
    ticker: &Ticker,
    budget: Duration,
) -> (DrainReport, Vec<DrainReport>) {
    let local = LocalWorkers::new(d.clone(), |_| {});
    let own = tick(d, ticker, &local, budget).await;
    (own, local.join().await)
}

fn total(own: &DrainReport, workers: &[DrainReport]) -> DrainReport {
    let mut t = own.clone();
    for w in workers {
        t.absorb(w);
    }
    t
}

/// Four workers drain one buffer of 4 000 records (800 keys × 5 versions, shuffled across
/// messages) to the same end state as one worker does: LWW writes commute. Prints both times
/// (the destination is 10 ms further away, so one worker is bound by latency).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_of_one_buffer_converge_like_one() {
    let pair = Pair::new().await;
    let proxy = FaultProxy::start(&pair.region.endpoint()).expect("proxy");
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(5)));
    let (keys, versions) = (800, 5);
    let mut secs = Vec::new();
    for (prefix, workers) in [("one", "1"), ("four", "4")] {
        pair.send_chunked(&backlog(prefix, keys, versions, 7), 40)
            .await;
        let d = drainer(&pair, &proxy, "8", workers).await;
        let t = Instant::now();
        let (own, others) = run_tick(&d, &Ticker::default(), Duration::from_secs(60)).await;
        secs.push(t.elapsed().as_secs_f64());
        assert_eq!(own.workers as usize, 1 + others.len());
        assert_eq!(own.workers.to_string(), workers, "{own:?}");
        let mut sum = total(&own, &others);
        // A message a standard queue delivers twice, or a write cut by the budget, is drained
        // by the next call.
        sum.absorb(&drain_until_empty(&pair, &d, 3).await);
        assert_eq!(sum.dlq(), 0, "{sum:?}");
        assert!(sum.records >= (keys as u64) * versions, "{sum:?}");
        assert_converged(&pair, prefix, keys, versions).await;
    }
    eprintln!(
        "fan-out: 4 000 records, 10 ms RTT added, 8 puts in flight per worker: 1 worker {:.1} s, 4 workers {:.1} s ({:.2}×)",
        secs[0],
        secs[1],
        secs[0] / secs[1]
    );
    assert!(pair.dlq_messages().await.is_empty());
}

/// Four workers are draining when the destination starts refusing connections: every one of
/// them returns within seconds, re-queues what it held and dead-letters nothing; a tick while
/// it is down starts no worker and receives nothing; the tick after it comes back runs the
/// full fan-out, and everything lands with no message received more than twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_stops_every_worker_and_the_replay_uses_the_full_fan_out() {
    let pair = Pair::new().await;
    let proxy = FaultProxy::start(&pair.region.endpoint()).expect("proxy");
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(5)));
    let (keys, versions) = (1000, 4);
    pair.send_chunked(&backlog("o", keys, versions, 11), 40)
        .await;
    let d = drainer(&pair, &proxy, "2", "4").await;
    let ticker = Ticker::default();
    let mut sum = DrainReport::default();

    // A short healthy tick: it measures the workers' pace and leaves a backlog. (How many it
    // runs rests on SQS's approximate depth: several.)
    let (own, others) = run_tick(&d, &ticker, Duration::from_secs(4)).await;
    assert!(own.workers >= 2, "{own:?}");
    sum.absorb(&total(&own, &others));

    // The outage, in the middle of the next tick.
    let cut = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.set_mode(FaultMode::Refuse);
        Instant::now()
    };
    let (ticked, cut_at) = tokio::join!(run_tick(&d, &ticker, Duration::from_secs(40)), cut);
    let stopped_after = cut_at.elapsed();
    let (own, others) = ticked;
    assert!(
        stopped_after < Duration::from_secs(15),
        "every worker returned {stopped_after:?} after the cut"
    );
    for r in std::iter::once(&own).chain(&others) {
        assert_eq!(r.dlq(), 0, "{r:?}");
        assert_eq!(r.deleted + r.left, r.received, "{r:?}");
    }
    sum.absorb(&total(&own, &others));

    // Down: the tick starts no worker and receives nothing.
    let (down, none) = run_tick(&d, &ticker, Duration::from_secs(10)).await;
    assert_eq!(
        (down.workers, none.len(), down.receives),
        (1, 0, 0),
        "{down:?}"
    );

    // Back: the replay runs the full fan-out.
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(5)));
    let (own, others) = run_tick(&d, &ticker, Duration::from_secs(60)).await;
    assert_eq!(own.workers, 4, "{own:?}");
    sum.absorb(&total(&own, &others));
    // Messages a worker held when the cut came may still be invisible (or re-queued with a
    // delay): poll until the buffer is empty.
    let deadline = Instant::now() + Duration::from_secs(240);
    while pair.depth(&pair.buffer_url).await != (0, 0, 0) {
        assert!(
            Instant::now() < deadline,
            "the buffer never emptied: {sum:?}"
        );
        let r = ferry_drain::drain(&d).await;
        if r.received == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        sum.absorb(&r);
    }
    assert_eq!(sum.dlq(), 0, "{sum:?}");
    // Re-queued records travel in new messages; only a standard queue's occasional second
    // delivery counts twice.
    assert!(sum.max_receive_count <= 2, "{sum:?}");
    assert!(pair.dlq_messages().await.is_empty());
    assert_converged(&pair, "o", keys, versions).await;
}

/// A tick starts on an empty buffer (one drain is all it needs) and a load arrives a second
/// later: the tick's looks at the buffer see the backlog grow and start workers within the
/// tick, not at the next one; everything lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_starts_mid_tick_gets_workers_within_the_tick() {
    let pair = Pair::new().await;
    let proxy = FaultProxy::start(&pair.region.endpoint()).expect("proxy");
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(5)));
    let mut d = drainer(&pair, &proxy, "8", "4").await;
    // As the Lambda runs: polling through the budget, not returning when the buffer is empty.
    Arc::get_mut(&mut d)
        .expect("one owner")
        .settings
        .return_when_idle = false;
    let (keys, versions) = (600, 5);
    let load = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        pair.send_chunked(&backlog("mid", keys, versions, 11), 20)
            .await;
    };
    let local = LocalWorkers::new(d.clone(), |_| {});
    let ticker = Ticker::default();
    let budget = Duration::from_secs(15);
    let (own, ()) = tokio::join!(tick(&d, &ticker, &local, budget), load);
    let others = local.join().await;
    drop(local);
    assert!(own.workers > 1, "the tick grew its fan-out: {own:?}");
    assert_eq!(own.workers as usize, 1 + others.len());
    let mut sum = total(&own, &others);
    Arc::get_mut(&mut d)
        .expect("one owner")
        .settings
        .return_when_idle = true;
    sum.absorb(&drain_until_empty(&pair, &d, 3).await);
    assert_eq!(sum.dlq(), 0, "{sum:?}");
    assert_converged(&pair, "mid", keys, versions).await;
    eprintln!("mid-tick load: the tick ran {} workers in all", own.workers);
}
