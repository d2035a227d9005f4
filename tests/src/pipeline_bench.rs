//! The pipeline bench of issue #8 (`cargo bench -p ferry-e2e --bench pipeline`, `make bench`):
//! stream events of realistic ~1 KB records in Lambda's JSON shape go through the REAL enqueue
//! handler (`ferry_enqueue::handle_json`, as `main.rs` calls it) onto a moto SQS buffer, and the
//! REAL drain (`ferry_drain::drain`) applies them to a dynoxide destination table without a
//! stream (a stream slows dynoxide's writes as it grows; it is not what is measured here).
//!
//! **Whose CPU.** Enqueue and drain each run in a child process of their own (this binary
//! re-executed with `__enqueue` / `__drain`), configured by the same environment variables as
//! the Lambdas, both at once (the drain polls while enqueue sends). Their CPU is `getrusage
//! (RUSAGE_SELF)` of each child (all threads, user + system) from the end of client set-up to
//! the last record; moto runs as its own Python process and dynoxide and the latency proxy in
//! this parent, so none of the emulators' CPU is in the figure. Peak RSS is each child's
//! `VmHWM` (`ru_maxrss` would inherit the parent's high-water mark over `fork` + `exec`).
//!
//! **Scenarios.** `loopback`; `rtt60` (the destination behind the sandbox's fault proxy, 30 ms
//! each way); `naive` (the baseline: one SQS message per record, one `SendMessageBatch` of one
//! entry per record, receive 10, then one conditional `PutItem` at a time and one delete per
//! message; no packing, no coalescing, no concurrency — the same SDK, `Table::put_if`, `pack` of
//! one record). `--instructions` adds a callgrind pass (enqueue, then drain, each under
//! `valgrind --tool=callgrind` with 1 and 3 events; the difference ÷ 2 000 records is the
//! instruction count per record without start-up): it repeats run to run where wall and CPU
//! time on a shared machine do not.
//!
//! ```text
//! cargo bench -p ferry-e2e --bench pipeline -- [--events 20] [--per-event 1000]
//!     [--naive-records 1000] [--scenarios loopback,rtt60,naive] [--in-flight 64]
//!     [--rtt-in-flight 256] [--instructions] [--out out/bench/pipeline.json]
//!     [--scale-records 8000] [--scale-per-event 50] [--scale-in-flight 8]
//!     [--scale-workers 1,2,4] [--sustained-rate 1000] [--sustained-s 180]
//!     [--sustained-keys 1000000] [--tick-s 60]
//! ```
//!
//! The scenarios `scaleout` and `sustained` (issue #16) are `crate::scale_bench`'s.

use ferry_aws::WriteOutcome;
use ferry_core::buffer::{pack, unpack};
use ferry_core::{Config, Item, Version};
use ferry_enqueue::synthetic::{event_json, StreamRecord};
use ferry_enqueue::{decode_event, Plan};
use ferry_measure::synthetic::realistic_item;
use ferry_sandbox::{DynamoRegion, FaultMode, FaultProxy, Moto};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const SOURCE: &str = "us-east-1";
const DESTINATION: &str = "eu-west-1";
/// SQS bills a request per started 64 KiB of payload.
const SQS_CHUNK: usize = 64 * 1024;
/// Give up on a child after this long (a stuck pipeline must fail the bench, not hang it).
pub(crate) const CHILD_DEADLINE: Duration = Duration::from_secs(900);

#[derive(Clone, Debug)]
pub struct Args {
    pub events: usize,
    pub per_event: usize,
    pub naive_records: usize,
    pub scenarios: Vec<String>,
    pub in_flight: usize,
    pub rtt_in_flight: usize,
    pub instructions: bool,
    /// Outage scenarios (`outage<seconds>`): application writes per second, in events of
    /// `outage_per_event` (one a second at the default rate: a 1 s batching window), over
    /// `outage_keys` keys (uniform), `outage_lead_s` of normal operation before the cut.
    pub outage_rate: usize,
    pub outage_per_event: usize,
    pub outage_keys: usize,
    pub outage_lead_s: u64,
    /// The scale-out scenario (`scaleout`, `crate::scale_bench`): records per run, records per
    /// stream event (one message each), puts in flight per worker, and the worker counts.
    pub scale_records: usize,
    pub scale_per_event: usize,
    pub scale_in_flight: usize,
    pub scale_workers: Vec<usize>,
    /// The sustained-load scenario (`sustained`): writes/s, seconds of writing, keys, and the
    /// schedule's period (the budget is `FERRY_DRAIN_BUDGET_S`, 70 s as in the template).
    pub sustained_rate: usize,
    pub sustained_s: u64,
    pub sustained_keys: usize,
    pub tick_s: u64,
    pub out: Option<PathBuf>,
    pub work_dir: PathBuf,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            events: 20,
            per_event: 1000,
            naive_records: 1000,
            scenarios: vec!["loopback".into(), "rtt60".into(), "naive".into()],
            in_flight: 64,
            rtt_in_flight: 256,
            instructions: false,
            outage_rate: 500,
            outage_per_event: 500,
            outage_keys: 10_000,
            outage_lead_s: 20,
            scale_records: 8000,
            scale_per_event: 50,
            scale_in_flight: 8,
            scale_workers: vec![1, 2, 4],
            sustained_rate: 1000,
            sustained_s: 180,
            sustained_keys: 1_000_000,
            tick_s: 60,
            out: None,
            work_dir: std::env::temp_dir().join(format!("ferry-pipeline-{}", std::process::id())),
        }
    }
}

impl Args {
    /// `defaults` overridden by the command line (unknown arguments, such as cargo's `--bench`,
    /// are ignored).
    pub fn parse(mut self, argv: &[String]) -> Self {
        let value = |name: &str| {
            argv.iter()
                .position(|x| x == name)
                .and_then(|i| argv.get(i + 1))
                .cloned()
        };
        let number = |name: &str, d: usize| value(name).and_then(|v| v.parse().ok()).unwrap_or(d);
        self.events = number("--events", self.events);
        self.per_event = number("--per-event", self.per_event);
        self.naive_records = number("--naive-records", self.naive_records);
        self.in_flight = number("--in-flight", self.in_flight);
        self.rtt_in_flight = number("--rtt-in-flight", self.rtt_in_flight);
        self.instructions |= argv.iter().any(|a| a == "--instructions");
        self.outage_rate = number("--outage-rate", self.outage_rate);
        self.outage_per_event = number("--outage-per-event", self.outage_per_event);
        self.outage_keys = number("--outage-keys", self.outage_keys);
        self.outage_lead_s = number("--outage-lead-s", self.outage_lead_s as usize) as u64;
        self.scale_records = number("--scale-records", self.scale_records);
        self.scale_per_event = number("--scale-per-event", self.scale_per_event);
        self.scale_in_flight = number("--scale-in-flight", self.scale_in_flight);
        if let Some(s) = value("--scale-workers") {
            self.scale_workers = s.split(',').filter_map(|w| w.parse().ok()).collect();
        }
        self.sustained_rate = number("--sustained-rate", self.sustained_rate);
        self.sustained_s = number("--sustained-s", self.sustained_s as usize) as u64;
        self.sustained_keys = number("--sustained-keys", self.sustained_keys);
        self.tick_s = number("--tick-s", self.tick_s as usize) as u64;
        if let Some(s) = value("--scenarios") {
            self.scenarios = s.split(',').map(str::to_string).collect();
        }
        if let Some(o) = value("--out") {
            self.out = Some(PathBuf::from(o));
        }
        self
    }
}

/// The bench binary's (and the smoke test's) `main`: a child role when re-executed, else the
/// whole run. Returns the report.
pub fn main_with(defaults: Args) -> Option<Value> {
    let argv: Vec<String> = std::env::args().collect();
    for (role, child) in [
        ("__enqueue", enqueue_child as fn()),
        ("__drain", drain_child),
        ("__naive_enqueue", naive_enqueue_child),
        ("__naive_drain", naive_drain_child),
        ("__paced_enqueue", paced_enqueue_child),
        ("__continuous_drain", continuous_drain_child),
        ("__worker_drain", crate::scale_bench::worker_drain_child),
        ("__ticking_drain", crate::scale_bench::ticking_drain_child),
        ("__order_worker", crate::scale_bench::order_worker_child),
    ] {
        if argv.iter().any(|a| a == role) {
            child();
            return None;
        }
    }
    let args = defaults.parse(&argv);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(run(&args));
    let _ = std::fs::remove_dir_all(&args.work_dir);
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).expect("out dir");
        }
        std::fs::write(out, serde_json::to_string_pretty(&report).expect("json"))
            .expect("write the report");
        println!("wrote {}", out.display());
    }
    Some(report)
}

// ---------------------------------------------------------------------------------------------
// The children: exactly what the Lambdas do per invocation, minus the runtime API.

pub(crate) fn child_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn enqueue_settings() -> ferry_enqueue::EnqueueEnv {
    ferry_enqueue::EnqueueEnv::from_lookup(|k| std::env::var(k).ok()).expect("enqueue settings")
}

/// The event files, in order.
fn event_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(child_env("FERRY_BENCH_EVENTS"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("events dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn expected_records() -> u64 {
    child_env("FERRY_BENCH_RECORDS").parse().expect("records")
}

/// Prints the child's RESULT line: its counts plus CPU since `before` and peak RSS.
pub(crate) fn result_line(role: &str, before: (i64, i64), start_ms: u64, fields: Value) {
    let after = cpu_us();
    let mut line = json!({
        "role": role,
        "start_ms": start_ms,
        "end_ms": ferry_core::clock::system_now_ms(),
        "user_us": after.0 - before.0,
        "sys_us": after.1 - before.1,
        "cpu_us": (after.0 - before.0) + (after.1 - before.1),
        "peak_rss_kb": peak_rss_kb(),
    });
    if let (Some(l), Value::Object(f)) = (line.as_object_mut(), fields) {
        l.extend(f);
    }
    println!("RESULT {line}");
}

/// The enqueue function's runtime as its `main.rs` builds it (the multi-thread runtime);
/// `FERRY_ENQUEUE_RUNTIME=current_thread` for an A/B run.
fn enqueue_runtime() -> tokio::runtime::Runtime {
    let mut builder = match std::env::var("FERRY_ENQUEUE_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build().expect("runtime")
}

fn enqueue_child() {
    let rt = enqueue_runtime();
    rt.block_on(async {
        let settings = enqueue_settings();
        let base = ferry_aws::clients::base_config().await;
        let enqueuer = ferry_enqueue::connect(&settings, &base, ferry_core::clock::system())
            .await
            .expect("enqueuer");
        let before = cpu_us();
        let start_ms = ferry_core::clock::system_now_ms();
        let (mut forwarded, mut sqs, mut records, mut rss_first) = (0, 0, 0, 0);
        for (i, file) in event_files().iter().enumerate() {
            // The runtime hands the function one payload at a time.
            let payload = std::fs::read_to_string(file).expect("event");
            let outcome = ferry_enqueue::handle_json(&payload, &enqueuer)
                .await
                .expect("a stream event");
            assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
            forwarded += outcome.counts.forwarded;
            sqs += outcome.counts.sqs_requests;
            records += outcome.counts.records;
            if i == 0 {
                rss_first = peak_rss_kb();
            }
        }
        result_line(
            "enqueue",
            before,
            start_ms,
            json!({"records": records, "forwarded": forwarded, "sqs_requests": sqs,
                   "peak_rss_first_batch_kb": rss_first}),
        );
    });
}

pub(crate) async fn drainer() -> ferry_drain::Drainer {
    let env = ferry_drain::DrainEnv::from_lookup(|k| std::env::var(k).ok()).expect("env");
    let base = ferry_aws::clients::base_config().await;
    env.connect(&base, ferry_core::clock::system()).await
}

fn drain_child() {
    // As the function's `main.rs` (current-thread runtime).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut drainer = drainer().await;
        // Calls back to back, each returning when a receive (1 s long poll) comes back empty,
        // until every record is done: the scheduled Lambda's loop with a short poll.
        drainer.settings.return_when_idle = true;
        drainer.settings.receive_wait_s = 1;
        let expected = expected_records();
        let before = cpu_us();
        let start_ms = ferry_core::clock::system_now_ms();
        let t = Instant::now();
        let mut total = ferry_drain::DrainReport::default();
        let mut calls = 0;
        while total.applied + total.stale + total.conflicts < expected {
            assert!(t.elapsed() < CHILD_DEADLINE, "drain stuck: {total:?}");
            let report = ferry_drain::drain(&drainer).await;
            total.absorb(&report);
            calls += 1;
        }
        let rss = peak_rss_kb();
        let report = serde_json::to_value(&total).expect("report");
        result_line(
            "drain",
            before,
            start_ms,
            json!({"records": total.records, "sqs_requests": total.sqs_requests,
                   "receives": total.receives, "dynamodb_requests": total.dynamodb_requests,
                   "calls": calls, "report": report, "peak_rss_kb": rss}),
        );
    });
}

/// The baseline's enqueue: the same decoding and classification, then one message per record,
/// sent one request at a time.
fn naive_enqueue_child() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let settings = enqueue_settings();
        let base = ferry_aws::clients::base_config().await;
        let enqueuer = ferry_enqueue::connect(&settings, &base, ferry_core::clock::system())
            .await
            .expect("enqueuer");
        let buffer = &enqueuer.destinations()[0].buffer;
        let before = cpu_us();
        let start_ms = ferry_core::clock::system_now_ms();
        let (mut sqs, mut records) = (0usize, 0usize);
        for file in event_files() {
            let payload = std::fs::read_to_string(file).expect("event");
            let mut inputs = decode_event(&payload).expect("event");
            let plan = Plan::new(inputs.iter_mut(), enqueuer.config());
            drop(inputs);
            for record in &plan.forwards {
                for batch in pack(std::slice::from_ref(record)).expect("pack") {
                    let failed = buffer.send_batch(&batch).await.expect("send");
                    assert!(failed.is_empty());
                    sqs += 1;
                }
                records += 1;
            }
        }
        result_line(
            "naive_enqueue",
            before,
            start_ms,
            json!({"records": records, "forwarded": records, "sqs_requests": sqs}),
        );
    });
}

/// The baseline's drain: receive 10, then per message one conditional put at a time and one
/// delete.
fn naive_drain_child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let drainer = drainer().await;
        let expected = expected_records();
        let before = cpu_us();
        let start_ms = ferry_core::clock::system_now_ms();
        let t = Instant::now();
        let (mut done, mut sqs, mut receives, mut puts) = (0u64, 0u64, 0u64, 0u64);
        while done < expected {
            assert!(t.elapsed() < CHILD_DEADLINE, "naive drain stuck at {done}");
            let messages = drainer
                .buffer
                .receive_with_attributes(10, 1, Some(120), &[])
                .await
                .expect("receive");
            sqs += 1;
            receives += 1;
            for m in messages {
                for record in unpack(&m.message.body).expect("unpack") {
                    let condition = ferry_core::apply_condition(&record, &drainer.config);
                    match drainer.table.put_if(&record.image, &condition).await {
                        Ok(WriteOutcome::Written) | Ok(WriteOutcome::ConditionFailed(_)) => {
                            done += 1
                        }
                        Err(e) => panic!("naive put: {e}"),
                    }
                    puts += 1;
                }
                let left = drainer
                    .buffer
                    .delete(&[m.message.receipt_handle.as_str()])
                    .await
                    .expect("delete");
                assert!(left.is_empty());
                sqs += 1;
            }
        }
        result_line(
            "naive_drain",
            before,
            start_ms,
            json!({"records": done, "sqs_requests": sqs, "receives": receives,
                   "dynamodb_requests": puts}),
        );
    });
}

/// Set once the parent closes this child's stdin: the outage scenarios' stop signal.
pub(crate) fn stop_on_stdin_eof() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    stop
}

/// The outage scenarios' enqueue: one event of `FERRY_BENCH_PER_EVENT` records every
/// `per_event / FERRY_BENCH_RATE` seconds, keys drawn uniformly from `FERRY_BENCH_KEYS`, until
/// stdin closes. Events are generated here (not measured: this scenario is about replay).
fn paced_enqueue_child() {
    use rand::Rng;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let stop = stop_on_stdin_eof();
        let number = |k: &str| -> usize { child_env(k).parse().expect(k) };
        let (rate, per_event, keys) = (
            number("FERRY_BENCH_RATE"),
            number("FERRY_BENCH_PER_EVENT"),
            number("FERRY_BENCH_KEYS"),
        );
        let settings = enqueue_settings();
        let base = ferry_aws::clients::base_config().await;
        let enqueuer = ferry_enqueue::connect(&settings, &base, ferry_core::clock::system())
            .await
            .expect("enqueuer");
        let mut rng = StdRng::seed_from_u64(30);
        let period = Duration::from_secs_f64(per_event as f64 / rate.max(1) as f64);
        let start = tokio::time::Instant::now();
        let start_ms = ferry_core::clock::system_now_ms();
        let before = cpu_us();
        let (mut records, mut late, mut sqs) = (0usize, 0usize, 0usize);
        let mut written = std::collections::HashSet::new();
        let mut e = 0u32;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let due = start + period * e;
            if tokio::time::Instant::now() > due + period {
                late += 1;
            }
            tokio::time::sleep_until(due).await;
            let picks: Vec<usize> = (0..per_event).map(|_| rng.gen_range(0..keys)).collect();
            written.extend(picks.iter().copied());
            let payload = event_payload(
                &mut rng,
                per_event,
                |j| picks[j],
                ferry_core::clock::system_now_ms(),
            );
            let outcome = ferry_enqueue::handle_json(&payload, &enqueuer)
                .await
                .expect("a stream event");
            assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
            records += outcome.counts.records;
            sqs += outcome.counts.sqs_requests;
            e += 1;
        }
        result_line(
            "paced_enqueue",
            before,
            start_ms,
            json!({"records": records, "keys": written.len(), "late_events": late,
                   "sqs_requests": sqs}),
        );
    });
}

/// The outage scenarios' drain: calls of `FERRY_DRAIN_BUDGET_S` back to back, as a schedule
/// would run them; after a call that found the destination down, the next starts 1 s later.
/// Until stdin closes.
fn continuous_drain_child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stop = stop_on_stdin_eof();
        let mut drainer = drainer().await;
        drainer.settings.receive_wait_s = 1;
        let before = cpu_us();
        let start_ms = ferry_core::clock::system_now_ms();
        let mut total = ferry_drain::DrainReport::default();
        let (mut calls, mut unreachable) = (0, 0);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let report = ferry_drain::drain(&drainer).await;
            calls += 1;
            if !report.destination_reachable {
                unreachable += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            total.absorb(&report);
        }
        let report = serde_json::to_value(&total).expect("report");
        result_line(
            "continuous_drain",
            before,
            start_ms,
            json!({"records": total.records, "sqs_requests": total.sqs_requests,
                   "receives": total.receives, "calls": calls,
                   "unreachable_calls": unreachable, "report": report}),
        );
    });
}

// ---------------------------------------------------------------------------------------------
// The parent: emulators, events, children, checks, figures.

/// A scenario's destination, buffer and events, ready for the children.
pub(crate) struct Stage {
    pub(crate) name: String,
    pub(crate) records: usize,
    _source: DynamoRegion,
    pub(crate) destination: DynamoRegion,
    pub(crate) proxy: Option<FaultProxy>,
    pub(crate) table: String,
    pub(crate) env: Vec<(String, String)>,
    /// What enqueue will send: messages, body bytes, SQS's billed 64 KiB chunks of the sends,
    /// and the chunks beyond the first of every message (what its receive is billed extra).
    messages: usize,
    body_bytes: usize,
    send_chunks: usize,
    message_extra_chunks: usize,
}

async fn run(args: &Args) -> Value {
    println!(
        "pipeline bench: {} events of {} records of ~1 KB (naive: {} records), scenarios {:?}",
        args.events, args.per_event, args.naive_records, args.scenarios
    );
    let moto = Moto::start().await.expect("moto");
    let mut scenarios = serde_json::Map::new();
    for name in &args.scenarios {
        let load_before = ferry_measure::load_1min();
        let started = ferry_core::clock::system_now_ms();
        if let Some(seconds) = name.strip_prefix("outage").and_then(|s| s.parse().ok()) {
            let mut figures = outage(&moto, args, name, seconds).await;
            figures["load_1min"] = json!([load_before, ferry_measure::load_1min()]);
            figures["started_ms"] = json!(started);
            scenarios.insert(name.clone(), figures);
            continue;
        }
        if let Some(mut figures) = crate::scale_bench::scenario(&moto, args, name).await {
            figures["load_1min"] = json!([load_before, ferry_measure::load_1min()]);
            figures["started_ms"] = json!(started);
            scenarios.insert(name.clone(), figures);
            continue;
        }
        let (delay, in_flight, naive) = match name.as_str() {
            "loopback" => (None, args.in_flight, false),
            "rtt60" => (Some(Duration::from_millis(30)), args.rtt_in_flight, false),
            "naive" => (None, 1, true),
            other => panic!(
                "unknown scenario {other} (loopback, rtt60, naive, outage<seconds>, scaleout, sustained)"
            ),
        };
        let records = if naive {
            args.naive_records
        } else {
            args.events * args.per_event
        };
        let per_event = args.per_event.min(records.max(1));
        let events = records.div_ceil(per_event);
        let stage = stage(&moto, args, name, delay, in_flight, events, per_event).await;
        let roles = if naive {
            ["__naive_enqueue", "__naive_drain"]
        } else {
            ["__enqueue", "__drain"]
        };
        let (enq, drn) = run_children(&stage, roles, false, None).await;
        let mut figures = figures(&stage, &enq, &drn, in_flight, delay);
        figures["load_1min"] = json!([load_before, ferry_measure::load_1min()]);
        figures["started_ms"] = json!(started);
        print_scenario(&figures);
        scenarios.insert(name.clone(), figures);
    }
    let mut report = json!({ "scenarios": scenarios });
    if let (Some(f), Some(n)) = (
        report["scenarios"].get("loopback").cloned(),
        report["scenarios"].get("naive").cloned(),
    ) {
        let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) if b > 0.0 => json!(a / b),
            _ => Value::Null,
        };
        let ratios = json!({
            "throughput_ferry_over_naive": ratio(&f["records_per_s"], &n["records_per_s"]),
            "cpu_per_record_naive_over_ferry": ratio(&n["cpu_us_per_record"], &f["cpu_us_per_record"]),
            "sqs_requests_naive_over_ferry": ratio(&n["sqs_requests_per_1000_records"], &f["sqs_requests_per_1000_records"]),
        });
        println!("ferry vs naive (loopback): {ratios}");
        report["ferry_vs_naive"] = ratios;
    }
    if args.instructions {
        report["instructions"] = instructions(&moto, args).await;
    }
    report
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn stage(
    moto: &Moto,
    args: &Args,
    name: &str,
    delay: Option<Duration>,
    in_flight: usize,
    events: usize,
    per_event: usize,
) -> Stage {
    let source = DynamoRegion::start(SOURCE, 0).expect("dynoxide");
    // A fresh destination per scenario: dynoxide slows down as its tables grow.
    let destination = DynamoRegion::start(DESTINATION, 0).expect("dynoxide");
    let table = format!("pipeline-{name}");
    ferry_sandbox::create_destination_table(&destination.client(), &table, "pk")
        .await
        .expect("create table");
    let proxy = delay.map(|d| {
        let p = FaultProxy::start(&destination.endpoint()).expect("proxy");
        p.set_mode(FaultMode::Delay(d));
        p
    });
    let dest_endpoint = proxy
        .as_ref()
        .map(|p| p.endpoint())
        .unwrap_or_else(|| destination.endpoint());
    let sqs = moto.sqs_client(SOURCE);
    let queues = ferry_aws::Buffer::create_pair(sqs, &format!("pipeline-{name}"), &[], None)
        .await
        .expect("queue");
    let urls = [queues.buffer.queue_url, queues.dlq.queue_url];
    // The events, written before the children start (their generation is not measured).
    let events_dir = args.work_dir.join(name);
    std::fs::create_dir_all(&events_dir).expect("work dir");
    let mut config = Config::new(SOURCE, "pk");
    config.destinations = vec![DESTINATION.into()];
    let mut rng = StdRng::seed_from_u64(8);
    let now = ferry_core::clock::system_now_ms();
    let (mut messages, mut body_bytes, mut send_chunks, mut message_extra_chunks) = (0, 0, 0, 0);
    let naive = name == "naive";
    for e in 0..events {
        let first = e * per_event;
        let payload = event_payload(&mut rng, per_event, |j| first + j, now + first as u64);
        // What enqueue will send for it (the same classification and packing).
        let mut inputs = decode_event(&payload).expect("event");
        let mut plan = Plan::new(inputs.iter_mut(), &config);
        let batches: Vec<Vec<usize>> = if naive {
            plan.forwards
                .iter()
                .flat_map(|r| pack(std::slice::from_ref(r)).expect("pack"))
                .map(|b| b.iter().map(|m| m.body.len()).collect())
                .collect()
        } else {
            plan.pack_forwards(usize::MAX)
                .expect("pack")
                .batches
                .iter()
                .map(|b| b.iter().map(|m| m.body.len()).collect())
                .collect()
        };
        for b in batches {
            messages += b.len();
            body_bytes += b.iter().sum::<usize>();
            send_chunks += b.iter().sum::<usize>().div_ceil(SQS_CHUNK).max(1);
            message_extra_chunks += b
                .iter()
                .map(|m| m.div_ceil(SQS_CHUNK).saturating_sub(1))
                .sum::<usize>();
        }
        std::fs::write(events_dir.join(format!("event-{e:04}.json")), payload).expect("event");
    }
    let env = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", SOURCE.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        (
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("warn".into()),
        ),
        ("FERRY_PARTITION_KEY", "pk".to_string()),
        // enqueue
        ("FERRY_TABLE", "pipeline-source".to_string()),
        ("FERRY_DESTINATIONS", DESTINATION.to_string()),
        ("FERRY_BUFFERS", format!("{DESTINATION}={}", urls[0])),
        ("FERRY_SQS_ENDPOINT", moto.endpoint()),
        // drain (its FERRY_DYNAMODB_ENDPOINT is the destination's; enqueue never touches its
        // own table for helper-stamped records, which are all forwarded)
        ("FERRY_DESTINATION_REGION", DESTINATION.to_string()),
        ("FERRY_DESTINATION_TABLE", table.clone()),
        ("FERRY_BUFFER_URL", urls[0].clone()),
        ("FERRY_DLQ_URL", urls[1].clone()),
        ("FERRY_DYNAMODB_ENDPOINT", dest_endpoint),
        ("FERRY_DRAIN_BUDGET_S", "50".to_string()),
        ("FERRY_MAX_IN_FLIGHT", in_flight.to_string()),
        ("FERRY_BENCH_EVENTS", events_dir.display().to_string()),
        ("FERRY_BENCH_RECORDS", (events * per_event).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    // The caller's own FERRY_* settings (FERRY_TAKE_MESSAGES=2 …) override these, for A/B runs.
    .chain(
        std::env::vars().filter(|(k, _)| k.starts_with("FERRY_") && !k.starts_with("FERRY_BENCH_")),
    )
    .collect();
    Stage {
        name: name.to_string(),
        records: events * per_event,
        _source: source,
        destination,
        proxy,
        table,
        env,
        messages,
        body_bytes,
        send_chunks,
        message_extra_chunks,
    }
}

/// A replay after an outage of `seconds` under a steady write rate, at 60 ms RTT: the
/// destination is cut (the proxy refuses connections) `outage_lead_s` into the run and comes
/// back `seconds` later; writes go on throughout, until the buffer is back to its normal depth.
async fn outage(moto: &Moto, args: &Args, name: &str, seconds: u64) -> Value {
    let delay = Duration::from_millis(30);
    let per_event = args.outage_per_event.max(1);
    let mut stage = stage(
        moto,
        args,
        name,
        Some(delay),
        args.rtt_in_flight,
        0,
        per_event,
    )
    .await;
    stage.env.extend(
        [
            ("FERRY_BENCH_RATE", args.outage_rate.to_string()),
            ("FERRY_BENCH_PER_EVENT", per_event.to_string()),
            ("FERRY_BENCH_KEYS", args.outage_keys.to_string()),
            // Short calls: the schedule's granularity, and quick to stop.
            ("FERRY_DRAIN_BUDGET_S", "5".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let buffer_url = stage
        .env
        .iter()
        .find(|(k, _)| k == "FERRY_BUFFER_URL")
        .map(|(_, v)| v.clone())
        .expect("buffer url");
    let buffer = ferry_aws::Buffer::new(moto.sqs_client(SOURCE), buffer_url);
    let proxy = stage.proxy.as_ref().expect("proxy");
    let spawn = |role: &str| {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .arg(role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(stage.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("child");
        let stdin = child.stdin.take().expect("stdin");
        (stdin, collect_result(child, role.to_string()))
    };
    println!(
        "[{name}] {} writes/s in events of {per_event} over {} keys; cut after {} s for {seconds} s (60 ms RTT, {} puts in flight)",
        args.outage_rate, args.outage_keys, args.outage_lead_s, args.rtt_in_flight
    );
    let (drain_stdin, drain_result) = spawn("__continuous_drain");
    let (enqueue_stdin, enqueue_result) = spawn("__paced_enqueue");
    let start = Instant::now();
    let cut_at = Duration::from_secs(args.outage_lead_s);
    let back_at = cut_at + Duration::from_secs(seconds);
    let (mut cut, mut back) = (false, false);
    let (mut normal_depth, mut peak_depth) = (0u64, 0u64);
    let mut converged: Option<Duration> = None;
    let mut timeline = Vec::new();
    loop {
        let t = start.elapsed();
        if !cut && t >= cut_at {
            proxy.set_mode(FaultMode::Refuse);
            cut = true;
            println!("[{name}] destination cut off at {:.1} s", t.as_secs_f64());
        }
        if cut && !back && t >= back_at {
            proxy.set_mode(FaultMode::Delay(delay));
            back = true;
            println!("[{name}] destination back at {:.1} s", t.as_secs_f64());
        }
        let depth = ferry_cli::cluster::queue_depth(&buffer).await.unwrap_or(0);
        timeline.push((t.as_secs_f64(), depth));
        if !cut {
            normal_depth = normal_depth.max(depth);
        } else {
            peak_depth = peak_depth.max(depth);
        }
        if back && converged.is_none() && depth <= normal_depth.max(2) {
            converged = Some(t - back_at);
            println!(
                "[{name}] back to normal depth ({depth} messages) {:.1} s after the return",
                (t - back_at).as_secs_f64()
            );
        }
        if converged.is_some_and(|c| t >= back_at + c + Duration::from_secs(5)) {
            break;
        }
        assert!(
            t < back_at + CHILD_DEADLINE,
            "[{name}] no convergence within {CHILD_DEADLINE:?} of the return"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(enqueue_stdin);
    let enq = enqueue_result.join().expect("enqueue");
    // Let the drain take what is left, then stop it.
    let t = Instant::now();
    while ferry_cli::cluster::queue_depth(&buffer).await.unwrap_or(1) > 0 {
        assert!(
            t.elapsed() < CHILD_DEADLINE,
            "[{name}] buffer never empties"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(drain_stdin);
    let drn = drain_result.join().expect("drain");
    let stored = ferry_sandbox::count_items(&stage.destination.client(), &stage.table)
        .await
        .expect("count");
    assert_eq!(
        Some(stored),
        enq["keys"].as_u64(),
        "[{name}] every key written is in the destination"
    );
    let r = &drn["report"];
    assert_eq!(r["dlq_records"].as_u64(), Some(0), "nothing dead-lettered");
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let converge_s = converged.map(|c| c.as_secs_f64()).unwrap_or(f64::NAN);
    let backlog_records = peak_depth as f64 * per_event as f64;
    let rtt_s = 2.0 * delay.as_secs_f64();
    let records = num(r, "records");
    let figures = json!({
        "outage_s": seconds,
        "write_rate": args.outage_rate,
        "records_per_event": per_event,
        "keys": args.outage_keys,
        "rtt_ms": rtt_s * 1000.0,
        "puts_in_flight": args.rtt_in_flight,
        "backlog_peak_messages": peak_depth,
        "backlog_peak_records": backlog_records,
        "normal_depth_messages": normal_depth,
        "converge_s": converge_s,
        // The backlog went down at (applied rate − write rate).
        "replay_applied_rate": args.outage_rate as f64 + backlog_records / converge_s,
        "replay_rate_limit_in_flight_over_rtt": args.rtt_in_flight as f64 / rtt_s,
        "records_written": num(&enq, "records"),
        "records_drained": records,
        "coalesced": num(r, "coalesced"),
        "coalesced_share": num(r, "coalesced") / records.max(1.0),
        "applied": num(r, "applied"),
        "stale": num(r, "stale"),
        "late_events": num(&enq, "late_events"),
        "drain_calls": num(&drn, "calls"),
        "drain_unreachable_calls": num(&drn, "unreachable_calls"),
        "sqs_requests_per_1000_records": (num(&enq, "sqs_requests") + num(&drn, "sqs_requests")) * 1000.0 / num(&enq, "records").max(1.0),
        "timeline": timeline,
    });
    println!(
        "[{name}] backlog peak {peak_depth} messages (~{backlog_records:.0} records), normal {normal_depth}; converged {converge_s:.1} s after the return; replay ~{:.0} records/s applied (limit {:.0} = {} in flight ÷ {:.0} ms); coalescing saved {:.1} % of puts",
        figures["replay_applied_rate"].as_f64().unwrap_or(0.0),
        figures["replay_rate_limit_in_flight_over_rtt"].as_f64().unwrap_or(0.0),
        args.rtt_in_flight,
        rtt_s * 1000.0,
        100.0 * figures["coalesced_share"].as_f64().unwrap_or(0.0),
    );
    figures
}

/// One stream event of `n` realistic ~1 KB INSERTs in Lambda's JSON shape: record `j` is the
/// item of key number `key(j)`, helper-stamped at `version_ms + j` in the source region (so
/// enqueue forwards it).
fn event_payload(
    rng: &mut StdRng,
    n: usize,
    key: impl Fn(usize) -> usize,
    version_ms: u64,
) -> String {
    let records: Vec<StreamRecord> = (0..n)
        .map(|j| {
            let item = realistic_item(rng, key(j), &Version::new(version_ms + j as u64, SOURCE));
            let k: Item = [("pk".to_string(), item["pk"].clone())].into();
            StreamRecord::insert(&format!("{:021}", version_ms as usize + j), &k, &item)
                .created_at(version_ms)
                .in_region(SOURCE)
        })
        .collect();
    event_json(&records).to_string()
}

/// Runs the enqueue and the drain child (at once, or one after the other when `sequential`),
/// each under callgrind when `callgrind` names an output prefix; checks the destination.
async fn run_children(
    stage: &Stage,
    roles: [&str; 2],
    sequential: bool,
    callgrind: Option<&Path>,
) -> (Value, Value) {
    let spawn = |role: &str| {
        let exe = std::env::current_exe().expect("exe");
        let mut cmd = match callgrind {
            Some(prefix) => {
                let mut c = Command::new("valgrind");
                c.arg("--tool=callgrind")
                    .arg(format!(
                        "--callgrind-out-file={}.{}",
                        prefix.display(),
                        role.trim_start_matches('_')
                    ))
                    .arg("--quiet")
                    .arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.arg(role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(stage.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped());
        if callgrind.is_some() {
            // Under valgrind every request is ~50× slower on the client side.
            cmd.env("FERRY_DESTINATION_ATTEMPT_TIMEOUT_MS", "120000")
                .env("FERRY_DESTINATION_OPERATION_TIMEOUT_MS", "300000")
                .env("FERRY_ATTEMPT_TIMEOUT_MS", "120000")
                .env("FERRY_OPERATION_TIMEOUT_MS", "300000");
        }
        cmd.spawn().expect("child")
    };
    let (enq, drn) = if sequential {
        let e = collect_result(spawn(roles[0]), roles[0].into())
            .join()
            .expect("enqueue");
        let d = collect_result(spawn(roles[1]), roles[1].into())
            .join()
            .expect("drain");
        (e, d)
    } else {
        let d = collect_result(spawn(roles[1]), roles[1].into());
        let e = collect_result(spawn(roles[0]), roles[0].into());
        (e.join().expect("enqueue"), d.join().expect("drain"))
    };
    // Check the outcome before trusting the figures.
    let stored = ferry_sandbox::count_items(&stage.destination.client(), &stage.table)
        .await
        .expect("count");
    assert_eq!(
        stored, stage.records as u64,
        "[{}] every record is in the table",
        stage.name
    );
    if let Some(r) = drn.get("report") {
        assert_eq!(r["dlq_records"].as_u64(), Some(0), "nothing dead-lettered");
        assert_eq!(r["dlq_messages"].as_u64(), Some(0), "nothing dead-lettered");
    }
    (enq, drn)
}

fn figures(
    stage: &Stage,
    enq: &Value,
    drn: &Value,
    in_flight: usize,
    delay: Option<Duration>,
) -> Value {
    let n = stage.records as f64;
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let wall_ms = (num(drn, "end_ms") - num(enq, "start_ms")).max(1.0);
    let cpu_enq = num(enq, "cpu_us");
    let cpu_drn = num(drn, "cpu_us");
    let sends = num(enq, "sqs_requests");
    let receives = num(drn, "receives");
    let drain_sqs = num(drn, "sqs_requests");
    let requests = sends + drain_sqs;
    // Billed: a request per started 64 KiB of its payload. Sends as packed; a receive as one
    // request plus the chunks beyond the first of each message it returned (exact when no
    // receive returns two partly filled messages); deletes as one.
    let billed = stage.send_chunks as f64 + drain_sqs + stage.message_extra_chunks as f64;
    json!({
        "records": stage.records,
        "rtt_ms": delay.map(|d| d.as_millis() as u64 * 2).unwrap_or(0),
        "puts_in_flight": in_flight,
        "wall_s": wall_ms / 1000.0,
        "records_per_s": n * 1000.0 / wall_ms,
        "cpu_us_per_record": (cpu_enq + cpu_drn) / n,
        "enqueue": {
            "cpu_us_per_record": cpu_enq / n,
            "peak_rss_mib": num(enq, "peak_rss_kb") / 1024.0,
            "peak_rss_first_batch_mib": num(enq, "peak_rss_first_batch_kb") / 1024.0,
            "wall_s": (num(enq, "end_ms") - num(enq, "start_ms")) / 1000.0,
            "raw": enq,
        },
        "drain": {
            "cpu_us_per_record": cpu_drn / n,
            "peak_rss_mib": num(drn, "peak_rss_kb") / 1024.0,
            "raw": drn,
        },
        "peak_rss_mib": num(enq, "peak_rss_kb").max(num(drn, "peak_rss_kb")) / 1024.0,
        "messages": stage.messages,
        "message_body_bytes_per_record": stage.body_bytes as f64 / n,
        "sqs_requests": {
            "send": sends,
            "receive": receives,
            "delete_and_other": drain_sqs - receives,
        },
        "sqs_requests_per_1000_records": requests * 1000.0 / n,
        "sqs_billed_requests_per_1000_records": billed * 1000.0 / n,
        "proxy": stage.proxy.as_ref().map(|p| format!("{:?}", p.stats())),
    })
}

fn print_scenario(f: &Value) {
    println!(
        "  {} records in {:.2} s: {:.0} records/s; CPU {:.1} µs/record (enqueue {:.1}, drain {:.1}); \
         peak RSS enqueue {:.1} MiB, drain {:.1} MiB; SQS {:.2} requests per 1 000 records \
         ({}), billed ~{:.1}",
        f["records"],
        f["wall_s"].as_f64().unwrap_or(0.0),
        f["records_per_s"].as_f64().unwrap_or(0.0),
        f["cpu_us_per_record"].as_f64().unwrap_or(0.0),
        f["enqueue"]["cpu_us_per_record"].as_f64().unwrap_or(0.0),
        f["drain"]["cpu_us_per_record"].as_f64().unwrap_or(0.0),
        f["enqueue"]["peak_rss_mib"].as_f64().unwrap_or(0.0),
        f["drain"]["peak_rss_mib"].as_f64().unwrap_or(0.0),
        f["sqs_requests_per_1000_records"].as_f64().unwrap_or(0.0),
        f["sqs_requests"],
        f["sqs_billed_requests_per_1000_records"]
            .as_f64()
            .unwrap_or(0.0),
    );
}

/// Instructions per record under callgrind: enqueue then drain (one after the other, so the
/// drain does not idle-poll), with 1 and with 3 events; the difference cancels start-up.
async fn instructions(moto: &Moto, args: &Args) -> Value {
    let mut totals = Vec::new();
    for events in [1usize, 3] {
        let name = format!("callgrind{events}");
        let stage = stage(
            moto,
            args,
            &name,
            None,
            args.in_flight,
            events,
            args.per_event,
        )
        .await;
        let load = ferry_measure::load_1min();
        let prefix = args.work_dir.join(format!("cg{events}"));
        let t = Instant::now();
        run_children(&stage, ["__enqueue", "__drain"], true, Some(&prefix)).await;
        let read =
            |role: &str| callgrind_total(&PathBuf::from(format!("{}.{role}", prefix.display())));
        let (e, d) = (read("enqueue"), read("drain"));
        println!(
            "  callgrind, {events} event(s): enqueue {e} instructions, drain {d} ({:.0} s)",
            t.elapsed().as_secs_f64()
        );
        totals.push((e, d, load, ferry_measure::load_1min()));
    }
    let records = 2.0 * args.per_event as f64;
    let per = |a: u64, b: u64| (b as f64 - a as f64) / records;
    let (e, d) = (per(totals[0].0, totals[1].0), per(totals[0].1, totals[1].1));
    println!("  instructions per record (callgrind, start-up cancelled): enqueue {e:.0}, drain {d:.0}, total {:.0}", e + d);
    json!({
        "enqueue_per_record": e,
        "drain_per_record": d,
        "total_per_record": e + d,
        "method": "valgrind --tool=callgrind, whole child process; (I(3 events) - I(1 event)) / 2000 records",
        "totals_and_load": totals
            .iter()
            .map(|t| json!({"enqueue": t.0, "drain": t.1, "load_1min": [t.2, t.3]}))
            .collect::<Vec<_>>(),
    })
}

/// The `totals:` (or `summary:`) line of a callgrind output file: instructions executed.
fn callgrind_total(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).expect("callgrind output");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A thread echoing a child's output (prefixed with its role) and returning its RESULT line.
pub(crate) fn collect_result(
    mut child: std::process::Child,
    role: String,
) -> std::thread::JoinHandle<Value> {
    std::thread::spawn(move || {
        let stdout = child.stdout.take().expect("stdout");
        let mut result = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            match line.strip_prefix("RESULT ") {
                Some(j) => result = Some(serde_json::from_str::<Value>(j).expect("json")),
                None => println!("  [{role}] {line}"),
            }
        }
        let status = child.wait().expect("wait");
        assert!(status.success(), "{role} child failed: {status}");
        result.unwrap_or_else(|| panic!("{role}: no RESULT line"))
    })
}

/// `ferry_measure` in the units of the children's RESULT lines.
pub(crate) fn peak_rss_kb() -> i64 {
    ferry_measure::peak_rss_kib().unwrap_or(0) as i64
}

/// (user µs, system µs) of this process, all threads.
pub(crate) fn cpu_us() -> (i64, i64) {
    let (user, system) = ferry_measure::process_cpu();
    (user.as_micros() as i64, system.as_micros() as i64)
}
