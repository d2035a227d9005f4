//! The write-rate cap (`ferry_core::rate`): write units by DynamoDB's size rules, the token
//! bucket, each drain invocation's share of the cap, and the schedule's period.

use ferry_core::item::{AttributeValue, Item};
use ferry_core::rate::{
    drain_time, item_bytes, number_bytes, parse_cap, schedule_period, write_units, Rate, Steady,
    TickShare, TokenBucket,
};
use ferry_core::Version;
use std::time::Duration;

fn item(pairs: &[(&str, AttributeValue)]) -> Item {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

#[test]
fn a_write_costs_a_unit_per_started_kilobyte_of_names_and_values() {
    // "pk" + "k1" = 4 bytes: one unit, the least a write costs.
    assert_eq!(write_units(&item(&[("pk", s("k1"))])), 1);
    // Exactly 1 024 bytes: still one; one byte more: two.
    let body = |n: usize| s(&"x".repeat(n));
    let at = |n| item(&[("pk", s("k1")), ("body", body(n))]);
    assert_eq!(item_bytes(&at(1024 - 8)), 1024);
    assert_eq!(write_units(&at(1024 - 8)), 1);
    assert_eq!(write_units(&at(1024 - 7)), 2);
    // DynamoDB's largest item: 400 units.
    assert_eq!(write_units(&at(400 * 1024 - 8)), 400);
}

#[test]
fn sizes_follow_dynamodbs_rules_for_every_type() {
    assert_eq!(number_bytes("0"), 2);
    assert_eq!(number_bytes("7"), 2);
    assert_eq!(number_bytes("123"), 3);
    // Sign, point, exponent and the zeros around the significant digits do not count.
    assert_eq!(number_bytes("-0012.3400"), 3);
    assert_eq!(number_bytes("1000000"), 2);
    assert_eq!(number_bytes("1.5E+10"), 2);
    // 38 significant digits: 19 bytes + 1.
    assert_eq!(number_bytes(&"9".repeat(38)), 20);
    let nested = item(&[
        ("b", AttributeValue::B(vec![0; 10])),
        ("t", AttributeValue::Bool(true)),
        ("z", AttributeValue::Null(true)),
        // 3 + (1 + "a" + 1 byte "x") + (1 + "n" + 2 bytes for 5)
        (
            "m",
            AttributeValue::M(item(&[("a", s("x")), ("n", AttributeValue::N("5".into()))])),
        ),
        // 3 + (1 + 2) + (1 + 1)
        (
            "l",
            AttributeValue::L(vec![s("ab"), AttributeValue::Bool(false)]),
        ),
        ("ss", AttributeValue::Ss(vec!["ab".into(), "c".into()])),
        ("ns", AttributeValue::Ns(vec!["12".into(), "345".into()])),
        ("bs", AttributeValue::Bs(vec![vec![1, 2], vec![3]])),
    ]);
    let expected = (1 + 10)
        + (1 + 1)
        + (1 + 1)
        + (1 + 3 + 3 + 4)
        + (1 + 3 + 3 + 2)
        + (2 + 3)
        + (2 + 2 + 3)
        + (2 + 3);
    assert_eq!(item_bytes(&nested), expected);
}

#[test]
fn a_bucket_starts_empty_and_spaces_writes_to_its_rate() {
    let mut b = TokenBucket::new(Steady::new(10.0).expect("rate"), 0);
    // Nothing earned yet: a unit is 100 ms away.
    assert_eq!(b.take(1, 0), 100);
    assert_eq!(b.take(1, 100), 0);
    assert_eq!(b.take(1, 100), 100);
    // Idle for a minute: at most a second of the rate is saved up.
    let mut t = 60_000;
    let mut burst = 0;
    while b.take(1, t) == 0 {
        burst += 1;
    }
    assert_eq!(burst, 10);
    // Then exactly the rate: 100 units over the next 10 s.
    let mut taken = 0;
    while t < 70_000 {
        match b.take(1, t) {
            0 => taken += 1,
            wait => t += wait,
        }
    }
    assert!((99..=101).contains(&taken), "{taken}");
}

#[test]
fn a_write_above_the_burst_goes_when_the_bucket_is_full_and_leaves_a_debt() {
    let mut b = TokenBucket::new(Steady::new(10.0).expect("rate"), 0);
    // 50 units at 10/s: waits until the bucket is full (1 s), then goes.
    assert_eq!(b.take(50, 0), 1000);
    assert_eq!(b.take(50, 1000), 0);
    // The 40-unit debt plus the next unit: 4.1 s at the rate.
    assert_eq!(b.take(1, 1000), 4100);
    assert_eq!(b.take(1, 5100), 0);
}

#[test]
fn invalid_rates_build_nothing() {
    assert!(Steady::new(0.0).is_none());
    assert!(Steady::new(-5.0).is_none());
    assert!(Steady::new(f64::NAN).is_none());
    assert!(TickShare::new(0.0, 4, Duration::from_secs(70), None).is_none());
}

#[test]
fn overlapping_ticks_halve_their_share_at_both_ends() {
    // The default schedule: a tick a minute, each writing for 65 s (a 70 s budget less the
    // 5 s settle reserve); a neighbour counts from 1.2 s (a fiftieth of the period) around it.
    let minute = Some(Duration::from_secs(60));
    let share = TickShare::new(400.0, 4, Duration::from_secs(65), minute).expect("share");
    for (t, alive) in [
        (0, 2),
        (6_199, 2),
        (6_200, 1),
        (58_799, 1),
        (58_800, 2),
        (64_999, 2),
        (80_000, 2),
    ] {
        assert_eq!(share.ticks_alive(t), alive, "at {t} ms");
    }
    assert_eq!(share.per_s(5_000), 50.0);
    assert_eq!(share.per_s(30_000), 100.0);
    assert_eq!(share.next_change(0), Some(6_200));
    assert_eq!(share.next_change(6_200), Some(58_800));
    assert_eq!(share.next_change(58_800), None);
    // Writing windows well inside the period: the whole share throughout.
    let alone = TickShare::new(400.0, 4, Duration::from_secs(45), minute).expect("share");
    assert!((0..45_000).step_by(500).all(|t| alone.ticks_alive(t) == 1));
    assert_eq!(alone.next_change(0), None);
    // A cron schedule: two ticks assumed alive throughout.
    let cron = TickShare::new(400.0, 4, Duration::from_secs(65), None).expect("share");
    assert_eq!(cron.per_s(30_000), 50.0);
    // A window over two periods: three ticks alive at its ends.
    let long = TickShare::new(300.0, 1, Duration::from_secs(150), minute).expect("share");
    assert_eq!(long.ticks_alive(0), 3);
    assert_eq!(long.ticks_alive(35_000), 2);
    assert_eq!(long.ticks_alive(60_000), 3);
    assert_eq!(long.ticks_alive(100_000), 2);
    assert_eq!(long.ticks_alive(125_000), 3);
}

/// Every unit taken, at its absolute time (ms), by `workers` invocations of each tick that
/// starts at `starts`, each writing as fast as its bucket lets it for its whole window.
fn replay(cap: f64, workers: u32, window_ms: u64, period_ms: u64, starts: &[u64]) -> Vec<u64> {
    let window = Duration::from_millis(window_ms);
    let period = Some(Duration::from_millis(period_ms));
    let share = TickShare::new(cap, workers, window, period).expect("share");
    let mut taken = Vec::new();
    for &start in starts {
        for _ in 0..workers {
            let mut bucket = TokenBucket::new(share, 0);
            let mut t = 0;
            while t < window_ms {
                match bucket.take(1, t) {
                    0 => taken.push(start + t),
                    wait => t += wait,
                }
            }
        }
    }
    taken.sort_unstable();
    taken
}

/// Units per second in each whole `window_ms` between `from_ms` and `to_ms`.
fn rates(taken: &[u64], from_ms: u64, to_ms: u64, window_ms: u64) -> Vec<f64> {
    (from_ms..to_ms)
        .step_by(window_ms as usize)
        .filter(|w| w + window_ms <= to_ms)
        .map(|w| {
            let n = taken
                .iter()
                .filter(|t| (w..w + window_ms).contains(*t))
                .count();
            n as f64 * 1000.0 / window_ms as f64
        })
        .collect()
}

fn mean(taken: &[u64], from_ms: u64, to_ms: u64) -> f64 {
    rates(taken, from_ms, to_ms, to_ms - from_ms)[0]
}

#[test]
fn the_invocations_of_overlapping_ticks_together_hold_the_cap() {
    // Five ticks a minute apart, writing 65 s each, four workers each: 150 units/s in all.
    let starts: Vec<u64> = (0..5).map(|k| k * 60_000).collect();
    let taken = replay(150.0, 4, 65_000, 60_000, &starts);
    // From the second tick's start to the last's, every instant has its ticks: the cap is
    // used but for the slack around each tick's start (2 % of the time at half).
    let m = mean(&taken, 60_000, 240_000);
    assert!((145.0..=150.0).contains(&m), "{m} units/s");
    // No second, overlaps included, goes over the cap (a unit or two of rounding).
    for r in rates(&taken, 0, 305_000, 1000) {
        assert!(r <= 152.0, "{r} units/s over 1 s");
    }
}

#[test]
fn the_sandboxs_short_ticks_hold_the_cap_too() {
    // The local sandbox: a tick every 4 s with a 6 s budget, so writing for 4.5 s.
    let starts: Vec<u64> = (0..20).map(|k| k * 4_000).collect();
    let taken = replay(150.0, 4, 4_500, 4_000, &starts);
    let m = mean(&taken, 4_000, 76_000);
    assert!((145.0..=150.0).contains(&m), "{m} units/s");
    for r in rates(&taken, 0, 80_000, 1000) {
        assert!(r <= 152.0, "{r} units/s over 1 s");
    }
}

#[test]
fn a_tick_late_within_the_slack_leaves_part_of_the_cap_unused_never_more() {
    // The second tick starts 1 s late (the slack is 1.2 s), the third on time.
    let taken = replay(150.0, 4, 65_000, 60_000, &[0, 61_000, 120_000]);
    for r in rates(&taken, 0, 185_000, 1000) {
        assert!(r <= 152.0, "{r} units/s over 1 s");
    }
}

#[test]
fn schedule_expressions_give_their_period() {
    let p = |e| schedule_period(e).expect(e);
    assert_eq!(p("rate(1 minute)"), Some(Duration::from_secs(60)));
    assert_eq!(p(" rate(5 minutes) "), Some(Duration::from_secs(300)));
    assert_eq!(p("rate(2 hours)"), Some(Duration::from_secs(7200)));
    assert_eq!(p("rate(1 day)"), Some(Duration::from_secs(86_400)));
    assert_eq!(p("rate(4 seconds)"), Some(Duration::from_secs(4)));
    assert_eq!(p("cron(0/5 * * * ? *)"), None);
    for bad in [
        "",
        "rate(0 minutes)",
        "rate(minute)",
        "rate(1 fortnight)",
        "every minute",
        "rate(1 minute",
    ] {
        assert!(schedule_period(bad).is_err(), "{bad}");
    }
}

#[test]
fn caps_parse_and_zero_means_none() {
    assert_eq!(parse_cap("150"), Some(Ok(150.0)));
    assert_eq!(parse_cap(" 12.5 "), Some(Ok(12.5)));
    assert_eq!(parse_cap("0"), None);
    assert_eq!(parse_cap(""), None);
    assert!(matches!(parse_cap("-3"), Some(Err(_))));
    assert!(matches!(parse_cap("lots"), Some(Err(_))));
    assert!(matches!(parse_cap("inf"), Some(Err(_))));
    assert_eq!(drain_time(1500, 150.0), Some(Duration::from_secs(10)));
    assert_eq!(drain_time(1500, 0.0), None);
}

#[test]
fn a_capped_requeue_packs_small_messages_in_order() {
    use ferry_core::buffer::{pack, pack_at_most, unpack};
    use ferry_core::ChangeRecord;
    let records: Vec<ChangeRecord> = (0..250)
        .map(|i| {
            let key = item(&[("pk", s(&format!("k{i}")))]);
            let mut image = key.clone();
            image.insert("body".into(), s(&"x".repeat(900)));
            ChangeRecord {
                key,
                image,
                tombstone: false,
                version: Version::new(1_700_000_000_000 + i, "us-east-1"),
                source_region: "us-east-1".into(),
                written_at_ms: 1_700_000_000_000 + i,
            }
        })
        .collect();
    // All of them fit one message; 75 at most a message make four, in one send.
    assert_eq!(pack(&records).expect("pack").concat().len(), 1);
    let batches = pack_at_most(&records, 75).expect("pack");
    assert_eq!(batches.len(), 1);
    let sizes: Vec<usize> = batches[0].iter().map(|m| m.records).collect();
    assert_eq!(sizes, [75, 75, 75, 25]);
    let back: Vec<ChangeRecord> = batches[0]
        .iter()
        .flat_map(|m| unpack(&m.body).expect("unpack"))
        .collect();
    assert_eq!(back, records);
}
