// The handler's CPU path without the network, per record: decode Lambda's event JSON, classify
// every record, pack the forwarded ones into SQS messages. Also prints how many
// `SendMessageBatch` requests 1 000 forwarded 1 KB records take per destination.
//
// `cargo bench -p ferry-enqueue --bench enqueue_path`

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use ferry_core::{AttributeValue, Config, Item, Version};
use ferry_enqueue::synthetic::{event_json, StreamRecord};
use ferry_enqueue::{decode_event, Input, Plan};
use ferry_measure::synthetic::{item_size, realistic_item};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A ~1 KB item that does not compress at all (a random binary).
fn incompressible_item(rng: &mut StdRng, i: usize, version: &Version) -> Item {
    let mut item: Item = Item::new();
    item.insert("pk".into(), AttributeValue::S(format!("blob#{i:08}")));
    item.insert(
        "data".into(),
        AttributeValue::B((0..990).map(|_| rng.gen()).collect()),
    );
    version.stamp_into(&mut item, &Default::default());
    item
}

fn event_of(n: usize, make: fn(&mut StdRng, usize, &Version) -> Item) -> (String, usize) {
    let mut rng = StdRng::seed_from_u64(42);
    let version = Version::new(1_732_564_800_000, "us-east-1");
    let mut size = 0;
    let records: Vec<StreamRecord> = (0..n)
        .map(|i| {
            let item = make(&mut rng, i, &version);
            size += item_size(&item);
            let key: Item = [("pk".to_string(), item["pk"].clone())].into();
            StreamRecord::insert(
                &format!("{}", 4_421_584_500_000_000_017_450_439_091u128 + i as u128),
                &key,
                &item,
            )
            .created_at(1_732_564_800_000 + i as u64)
        })
        .collect();
    (event_json(&records).to_string(), size / n)
}

fn config() -> Config {
    let mut c = Config::new("us-east-1", "pk");
    c.destinations = vec!["eu-west-1".into(), "ap-southeast-2".into()];
    c
}

/// What the handler does before its first network call, end to end.
fn cpu_path(payload: &str, config: &Config) -> usize {
    let mut inputs = decode_event(payload).expect("a stream event");
    // As `handle_json`: the records are moved from, then dropped before the network.
    let mut plan = Plan::new(inputs.iter_mut(), config);
    drop(inputs);
    let packed = plan.pack_forwards(usize::MAX).expect("packs");
    packed.batches.len()
}

fn report_requests() {
    let config = config();
    for (label, make) in [
        (
            "realistic",
            realistic_item as fn(&mut StdRng, usize, &Version) -> Item,
        ),
        ("incompressible", incompressible_item),
    ] {
        let (payload, avg) = event_of(1000, make);
        let mut inputs = decode_event(&payload).expect("event");
        let mut plan = Plan::new(inputs.iter_mut(), &config);
        let packed = plan.pack_forwards(usize::MAX).expect("packs");
        let messages: usize = packed.batches.iter().map(Vec::len).sum();
        let body_bytes: usize = packed.batches.iter().flatten().map(|m| m.body.len()).sum();
        println!(
            "{label}: 1000 records of {avg} B (item size; event JSON {} KB) -> {} SendMessageBatch request(s) per destination, {messages} message(s), {} KB of bodies",
            payload.len() / 1024,
            packed.batches.len(),
            body_bytes / 1024
        );
    }
}

/// Per-record CPU time of the whole path, median and best of 30 runs (a batch's drop included).
fn report_cpu_time() {
    let config = config();
    for (label, make) in [
        (
            "realistic",
            realistic_item as fn(&mut StdRng, usize, &Version) -> Item,
        ),
        ("incompressible", incompressible_item),
    ] {
        for n in [100usize, 1000] {
            let (payload, _) = event_of(n, make);
            let mut runs: Vec<u128> = (0..30)
                .map(|_| {
                    let start = ferry_measure::thread_cpu().as_nanos();
                    black_box(cpu_path(black_box(&payload), &config));
                    ferry_measure::thread_cpu().as_nanos() - start
                })
                .collect();
            runs.sort_unstable();
            let per = |ns: u128| ns as f64 / n as f64 / 1000.0;
            println!(
                "CPU time, {label}, batch of {n}: median {:.2} µs/record, best {:.2} µs/record",
                per(runs[runs.len() / 2]),
                per(runs[0])
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    report_requests();
    report_cpu_time();
    let config = config();
    let mut group = c.benchmark_group("enqueue_cpu_path");
    for (label, make) in [
        (
            "realistic",
            realistic_item as fn(&mut StdRng, usize, &Version) -> Item,
        ),
        ("incompressible", incompressible_item),
    ] {
        for n in [100usize, 1000] {
            let (payload, _) = event_of(n, make);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("decode+classify+pack/{label}"), n),
                &payload,
                |b, payload| b.iter(|| cpu_path(black_box(payload), &config)),
            );
        }
    }
    // The stages apart, on realistic 1 KB records, batch of 1000.
    let (payload, _) = event_of(1000, realistic_item);
    group.throughput(Throughput::Elements(1000));
    group.bench_function("stage/decode", |b| {
        b.iter(|| decode_event(black_box(&payload)).expect("event").len())
    });
    let inputs = decode_event(&payload).expect("event");
    group.bench_function("stage/classify", |b| {
        // As the handler: images move out of the decoded records, which are then dropped.
        b.iter_batched(
            || inputs.clone(),
            |mut inputs| Plan::new(black_box(&mut inputs).iter_mut(), &config),
            BatchSize::LargeInput,
        )
    });
    let plan = Plan::new(inputs.iter().map(Input::as_ref), &config);
    group.bench_function("stage/pack", |b| {
        // The core's pack, as `Plan::pack_forwards` calls it (without cloning the plan).
        b.iter(|| {
            ferry_core::buffer::pack(black_box(&plan.forwards))
                .expect("packs")
                .len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
