// The core's whole per-record decision path, enqueue and drain together, without I/O and
// without Lambda's JSON decoding (measured apart in `functions/enqueue/benches/enqueue_path.rs`):
//
//   enqueue: classify every stream record → pack the forwarded change records into SQS messages
//   drain:   unpack every message → coalesce per key → apply condition for every winner → judge
//            (against the stored item a failed condition would return; done here for every
//            winner, although a drain only judges refused writes)
//
// on realistic ~1 KB items (≈ 50 values: strings, a string set, numbers, a map, a list of maps)
// in batches of 1 000 helper-stamped local INSERTs, every one forwarded. Dropping everything the
// path built (stream records included) is part of the measured time.
//
// `cargo bench -p ferry-core --bench core_path`
// quick figures only: `cargo bench -p ferry-core --bench core_path -- --test`
//
// The printed lines are this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), median and best of
// 30 runs: on a shared 2-core machine wall time measures the neighbours' builds as much as this
// code. criterion's figures below them are CPU time too (`iter_custom`).

use aws_lambda_events::event::dynamodb::{EventRecord, StreamViewType};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ferry_core::buffer::{pack, unpack};
use ferry_core::coalesce::winner_of;
use ferry_core::{apply_condition, classify, judge, Classified, Config, Item};
use ferry_core::{ChangeRecord, Judgement, Version};
use ferry_measure::synthetic::{item_size, realistic_item};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::{Duration, UNIX_EPOCH};

const BATCH: usize = 1000;

/// A helper-stamped local INSERT, as Lambda delivers it (decoded).
fn insert(i: usize, item: Item) -> EventRecord {
    let mut record = EventRecord::default();
    record.aws_region = "us-east-1".into();
    record.event_id = format!("event-{i}");
    record.event_name = "INSERT".into();
    record.event_source = Some("aws:dynamodb".into());
    record.event_version = Some("1.1".into());
    let key: Item = [("pk".to_string(), item["pk"].clone())].into();
    record.change.keys = key.into();
    record.change.new_image = item.into();
    record.change.sequence_number = Some(format!(
        "{}",
        4_421_584_500_000_000_017_450_439_091u128 + i as u128
    ));
    record.change.stream_view_type = Some(StreamViewType::NewAndOldImages);
    record.change.approximate_creation_date_time =
        (UNIX_EPOCH + Duration::from_millis(1_732_564_800_000 + i as u64)).into();
    record
}

fn batch() -> (Vec<EventRecord>, usize) {
    let mut rng = StdRng::seed_from_u64(42);
    let version = Version::new(1_732_564_800_000, "us-east-1");
    let mut size = 0;
    let records = (0..BATCH)
        .map(|i| {
            let item = realistic_item(&mut rng, i, &version);
            size += item_size(&item);
            insert(i, item)
        })
        .collect();
    (records, size / BATCH)
}

fn config() -> Config {
    let mut c = Config::new("us-east-1", "pk");
    c.destinations = vec!["eu-west-1".into()];
    c
}

/// Enqueue: the forwarded change records, packed into message bodies.
fn enqueue(records: Vec<EventRecord>, config: &Config) -> (Vec<ChangeRecord>, Vec<String>) {
    let mut forwards = Vec::with_capacity(records.len());
    for record in records {
        if let Ok(Classified::Forward(change)) = classify(record, config) {
            forwards.push(change);
        }
    }
    let bodies = pack(&forwards)
        .expect("packs")
        .into_iter()
        .flatten()
        .map(|m| m.body)
        .collect();
    (forwards, bodies)
}

/// Drain: unpack, coalesce (as the drain does), condition and judgement for every winner. Returns how many judged done.
fn drain(bodies: &[String], config: &Config) -> (Vec<ChangeRecord>, usize) {
    let mut records = Vec::new();
    for body in bodies {
        records.extend(unpack(body).expect("unpacks"));
    }
    let winner = winner_of(&records);
    let mut done = 0;
    for (w, record) in records.iter().enumerate() {
        if winner[w] != w {
            continue;
        }
        black_box(apply_condition(record, config));
        // The item a refused write returns: the record's own image (a duplicate delivery).
        done += matches!(
            judge(record, Some(&record.image), config),
            Judgement::Stale { .. }
        ) as usize;
    }
    (records, done)
}

/// Stage times of one run of the whole path, per record.
#[derive(Clone, Copy, Default)]
struct Stages {
    classify: Duration,
    pack: Duration,
    unpack: Duration,
    apply: Duration,
    drop: Duration,
}

impl Stages {
    fn total(&self) -> Duration {
        self.classify + self.pack + self.unpack + self.apply + self.drop
    }
}

fn run_once(input: Vec<EventRecord>, config: &Config) -> Stages {
    let t0 = ferry_measure::thread_cpu();
    let mut forwards = Vec::with_capacity(input.len());
    for record in input {
        if let Ok(Classified::Forward(change)) = classify(record, config) {
            forwards.push(change);
        }
    }
    let t1 = ferry_measure::thread_cpu();
    let bodies: Vec<String> = pack(&forwards)
        .expect("packs")
        .into_iter()
        .flatten()
        .map(|m| m.body)
        .collect();
    let t2 = ferry_measure::thread_cpu();
    let mut records = Vec::new();
    for body in &bodies {
        records.extend(unpack(body).expect("unpacks"));
    }
    let t3 = ferry_measure::thread_cpu();
    let winner = winner_of(&records);
    let mut done = 0;
    for (w, record) in records.iter().enumerate() {
        if winner[w] != w {
            continue;
        }
        black_box(apply_condition(record, config));
        done += judge(record, Some(&record.image), config).is_done() as usize;
    }
    assert_eq!(done, BATCH);
    let t4 = ferry_measure::thread_cpu();
    drop(black_box((forwards, bodies, records, winner)));
    let t5 = ferry_measure::thread_cpu();
    Stages {
        classify: t1 - t0,
        pack: t2 - t1,
        unpack: t3 - t2,
        apply: t4 - t3,
        drop: t5 - t4,
    }
}

fn report() {
    let config = config();
    let (input, avg) = batch();
    let (_, bodies) = enqueue(input.clone(), &config);
    let body_bytes: usize = bodies.iter().map(String::len).sum();
    println!(
        "{BATCH} realistic records of {avg} B (DynamoDB item size) -> {} message(s), {} KB of bodies",
        bodies.len(),
        body_bytes / 1024
    );
    let mut runs: Vec<Stages> = (0..30).map(|_| run_once(input.clone(), &config)).collect();
    runs.sort_by_key(Stages::total);
    let us = |d: Duration| d.as_secs_f64() * 1e6 / BATCH as f64;
    let median = runs[runs.len() / 2];
    for (label, s) in [("median", median), ("best", runs[0])] {
        println!(
            "CPU µs/record, {label} of 30: total {:.2} = classify {:.2} + pack {:.2} | unpack {:.2} + coalesce/condition/judge {:.2} | drop {:.2}",
            us(s.total()),
            us(s.classify),
            us(s.pack),
            us(s.unpack),
            us(s.apply),
            us(s.drop)
        );
    }
}

fn bench(c: &mut Criterion) {
    report();
    let config = config();
    let (input, _) = batch();
    let mut group = c.benchmark_group("core_path");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("enqueue+drain/realistic/1000 (thread CPU)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let records = input.clone();
                let start = ferry_measure::thread_cpu();
                let (forwards, bodies) = enqueue(black_box(records), &config);
                let (records, done) = drain(&bodies, &config);
                drop(black_box((forwards, bodies, records, done)));
                total += ferry_measure::thread_cpu() - start;
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
