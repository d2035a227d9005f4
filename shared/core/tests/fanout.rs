//! How a tick sizes its fan-out (`ferry_core::fanout::workers`) and grows it while it runs
//! (`ferry_core::fanout::grow`).

use ferry_core::fanout::{grow, workers, Backlog, Destination, FanoutPolicy, Look, Pace};
use Destination::{Answers, Back, Silent};

fn policy(max_workers: u32) -> FanoutPolicy {
    FanoutPolicy {
        max_workers,
        ..FanoutPolicy::default()
    }
}

fn backlog(visible: u64) -> Backlog {
    Backlog { visible }
}

/// A look that sees `visible` messages and nothing else.
fn look(visible: u64) -> Look {
    Look {
        backlog: backlog(visible),
        ..Look::default()
    }
}

/// One worker applying 500 records/s while busy, over a 50 s tick.
fn pace(workers: u32, records: u64, busy_ms: u64, records_per_message: f64) -> Pace {
    Pace {
        workers,
        records,
        elapsed_ms: 50_000,
        busy_ms,
        records_per_message,
    }
}

#[test]
fn an_empty_buffer_needs_only_the_tick() {
    assert_eq!(workers(backlog(0), None, Answers, &policy(8)), 1);
    let idle = pace(1, 0, 0, 1.0);
    assert_eq!(workers(backlog(0), Some(idle), Answers, &policy(8)), 1);
}

#[test]
fn without_a_last_tick_the_backlog_decides() {
    let p = policy(8);
    assert_eq!(workers(backlog(1), None, Answers, &p), 1);
    assert_eq!(workers(backlog(20), None, Answers, &p), 1);
    assert_eq!(workers(backlog(21), None, Answers, &p), 2);
    assert_eq!(workers(backlog(70), None, Answers, &p), 4);
    assert_eq!(workers(backlog(100_000), None, Answers, &p), 8, "capped");
}

#[test]
fn a_destination_that_does_not_answer_gets_no_extra_worker() {
    let busy = pace(4, 25_000, 50_000, 100.0);
    assert_eq!(workers(backlog(100_000), Some(busy), Silent, &policy(8)), 1);
    assert_eq!(workers(backlog(100_000), None, Silent, &policy(8)), 1);
}

#[test]
fn the_cap_holds_and_a_cap_of_one_is_one() {
    assert_eq!(workers(backlog(100_000), None, Answers, &policy(1)), 1);
    assert_eq!(workers(backlog(100_000), None, Answers, &policy(0)), 1);
    let busy = pace(1, 25_000, 50_000, 700.0);
    assert_eq!(
        workers(backlog(100_000), Some(busy), Answers, &policy(16)),
        16
    );
}

#[test]
fn steady_arrivals_keep_as_many_workers_as_they_need() {
    // 1 000 records/s arriving, 4 workers each taking 250/s, busy half the time (500/s when
    // busy): 1 000 / (500 × 0.7) → 3 workers cover it, with nothing queued.
    let p = policy(8);
    let last = pace(4, 12_500, 25_000, 50.0);
    assert_eq!(workers(backlog(0), Some(last), Answers, &p), 3);
    // The same arrivals with a backlog of 2 000 messages × 50 records (100 000 records) on
    // top: (50 000 + 100 000) / (25 000 × 0.7) → 9, capped at 8.
    assert_eq!(workers(backlog(2_000), Some(last), Answers, &p), 8);
}

#[test]
fn fewer_as_the_backlog_shrinks() {
    let p = policy(8);
    // A saturated tick (busy all along) with a backlog left: scale up.
    let saturated = pace(2, 25_000, 50_000, 100.0);
    let up = workers(backlog(1_000), Some(saturated), Answers, &p);
    assert!(up > 2, "{up}");
    // The next tick drained it and idled most of the time: back down.
    let relaxed = pace(up, 2_500, 5_000, 100.0);
    let down = workers(backlog(0), Some(relaxed), Answers, &p);
    assert!(down < up, "{down} < {up}");
    // Trickle: one worker.
    let trickle = pace(down, 100, 200, 1.0);
    assert_eq!(workers(backlog(0), Some(trickle), Answers, &p), 1);
}

#[test]
fn more_backlog_never_means_fewer_workers() {
    let p = policy(32);
    let lasts = [
        None,
        Some(pace(1, 100, 200, 1.0)),
        Some(pace(3, 30_000, 40_000, 300.0)),
        Some(pace(8, 5_000, 50_000, 2.0)),
    ];
    for last in lasts {
        let mut before = 0;
        for visible in [0, 1, 5, 20, 21, 100, 1_000, 10_000, 1_000_000] {
            let w = workers(backlog(visible), last, Answers, &p);
            assert!(w >= before, "{visible}: {w} < {before} ({last:?})");
            assert!((1..=32).contains(&w));
            before = w;
        }
    }
}

#[test]
fn a_destination_back_from_an_outage_replays_with_the_whole_fan_out() {
    let p = policy(6);
    let before = pace(2, 1_000, 5_000, 3.0);
    // A handful of re-queued messages, packed full: the whole fan-out all the same.
    assert_eq!(workers(backlog(3), Some(before), Back, &p), 6);
    assert_eq!(workers(backlog(3), None, Back, &p), 6);
    // Nothing waiting: nothing to replay.
    assert_eq!(workers(backlog(0), Some(before), Back, &p), 1);
}

#[test]
fn a_tick_under_way_doubles_its_workers_while_the_backlog_grows() {
    let p = policy(8);
    // A load that starts mid-tick: 1 → 2 → 4 → 8 workers over three looks.
    assert_eq!(grow(look(3), backlog(0), 1, &p), 1);
    assert_eq!(grow(look(6), backlog(3), 2, &p), 2);
    assert_eq!(grow(look(9), backlog(6), 4, &p), 4);
    // At the cap, nothing more; near it, only up to it.
    assert_eq!(grow(look(50), backlog(9), 8, &p), 0);
    assert_eq!(grow(look(50), backlog(9), 6, &p), 2);
}

#[test]
fn a_steady_or_shrinking_backlog_adds_no_worker_unless_it_is_deep() {
    let p = policy(8);
    // What a steady load leaves between receives, or a backlog being worked off.
    assert_eq!(grow(look(1), backlog(0), 1, &p), 0);
    assert_eq!(grow(look(5), backlog(5), 1, &p), 0);
    assert_eq!(grow(look(30), backlog(40), 2, &p), 0);
    // A backlog that stands deeper than the workers' share: more of them.
    assert_eq!(grow(look(45), backlog(45), 2, &p), 2);
    // One worker allowed: never more.
    assert_eq!(grow(look(1_000), backlog(0), 1, &policy(1)), 0);
}

#[test]
fn a_worker_that_holds_the_backlog_in_flight_while_its_records_wait_gets_company() {
    // One worker receives every message as it arrives (nothing visible) but applies slower
    // than they come: the wait since the buffer is the only sign.
    let p = policy(8);
    let held = |in_flight, waited_ms| Look {
        backlog: backlog(0),
        in_flight,
        waited_ms: Some(waited_ms),
    };
    assert_eq!(grow(held(6, 2_500), backlog(0), 1, &p), 1);
    assert_eq!(grow(held(6, 2_500), backlog(0), 2, &p), 2);
    assert_eq!(grow(held(6, 2_500), backlog(0), 8, &p), 0, "at the cap");
    assert_eq!(grow(held(6, 900), backlog(0), 1, &p), 0, "within the goal");
    assert_eq!(
        grow(held(0, 2_500), backlog(0), 1, &p),
        0,
        "a slow write with nothing left on the buffer: another worker would find nothing"
    );
    let nothing_applied = Look {
        waited_ms: None,
        ..held(6, 0)
    };
    assert_eq!(grow(nothing_applied, backlog(0), 1, &p), 0);
}
