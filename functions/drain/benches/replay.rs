//! Replay bench: a backlog of change records (20 000 × ~1 KB by default) on a buffer queue
//! (moto SQS), drained into a dynoxide destination table WITHOUT a stream (a stream slows
//! dynoxide's writes as it grows, which is not what is measured here), once on loopback and once
//! through a fault proxy adding 30 ms each way (60 ms RTT).
//!
//! The drain runs in a child process of its own (this binary re-executed with `__drain`),
//! configured through the same environment variables as the Lambda, so that its CPU time
//! (`getrusage(RUSAGE_SELF)`, all threads) and peak RSS (`ru_maxrss`) are the drain's alone: the
//! emulators, the proxy and the backlog's preparation live in the parent. Peak RSS is the
//! child's `VmHWM` (`/proc/self/status`): `ru_maxrss` is no good here, Linux carries the
//! parent's high-water mark over `fork` + `exec`, so it showed the parent's 150–200 MiB.
//!
//! ```text
//! cargo bench -p ferry-drain --bench replay                       # both scenarios
//! cargo bench -p ferry-drain --bench replay -- --records 5000 --scenarios loopback
//! cargo bench -p ferry-drain --bench replay -- --in-flight 64 --rtt-in-flight 256 \
//!     --take-messages 10 --takes-in-flight 2 --runtime current_thread|multi_thread
//! ```

use ferry_aws::Buffer;
use ferry_core::buffer::pack;
use ferry_core::{AttributeValue, ChangeRecord, Item, Version};
use ferry_sandbox::{DynamoRegion, FaultMode, FaultProxy, Moto};
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SOURCE: &str = "us-east-1";
const DESTINATION: &str = "eu-west-1";

struct Args {
    records: usize,
    size: usize,
    scenarios: Vec<String>,
    in_flight: usize,
    rtt_in_flight: usize,
    take_messages: usize,
    takes_in_flight: usize,
    runtime: String,
}

fn args() -> Args {
    let mut a = Args {
        records: 20_000,
        size: 1024,
        scenarios: vec!["loopback".into(), "rtt60".into()],
        in_flight: 64,
        rtt_in_flight: 256,
        take_messages: 10,
        takes_in_flight: 2,
        runtime: "current_thread".into(),
    };
    let argv: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        argv.iter()
            .position(|x| x == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    let number =
        |name: &str, default: usize| value(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    a.records = number("--records", a.records);
    a.size = number("--size", a.size);
    a.in_flight = number("--in-flight", a.in_flight);
    a.rtt_in_flight = number("--rtt-in-flight", a.rtt_in_flight);
    a.take_messages = number("--take-messages", a.take_messages);
    a.takes_in_flight = number("--takes-in-flight", a.takes_in_flight);
    if let Some(r) = value("--runtime") {
        a.runtime = r;
    }
    if let Some(s) = value("--scenarios") {
        a.scenarios = s.split(',').map(str::to_string).collect();
    }
    a
}

fn main() {
    if std::env::args().any(|a| a == "__drain") {
        drain_child();
        return;
    }
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(args));
}

/// The measured process: exactly what the Lambda does per invocation, minus the runtime API,
/// on the same runtime flavour as `main.rs` (current thread) unless `FERRY_BENCH_RUNTIME` says
/// `multi_thread`.
fn drain_child() {
    let multi = std::env::var("FERRY_BENCH_RUNTIME").is_ok_and(|v| v == "multi_thread");
    let rt = if multi {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("runtime");
    rt.block_on(async {
        let env = ferry_drain::DrainEnv::from_lookup(|k| std::env::var(k).ok()).expect("env");
        let base = ferry_aws::clients::base_config().await;
        let mut drainer = env.connect(&base, ferry_core::clock::system()).await;
        drainer.settings.return_when_idle = true;
        drainer.settings.receive_wait_s = 0;
        let before = cpu_us();
        let hwm_before = peak_rss_kb();
        let t = Instant::now();
        let report = ferry_drain::drain(&drainer).await;
        let wall = t.elapsed();
        let after = cpu_us();
        let cpu_us = (after.0 - before.0) + (after.1 - before.1);
        let line = serde_json::json!({
            "report": report,
            "wall_ms": wall.as_millis() as u64,
            "user_us": after.0 - before.0,
            "sys_us": after.1 - before.1,
            "cpu_us": cpu_us,
            "peak_rss_kb": peak_rss_kb(),
            "peak_rss_before_kb": hwm_before,
        });
        println!("RESULT {line}");
    });
}

async fn run(args: Args) {
    println!(
        "replay bench: {} records of ~{} B, scenarios {:?}",
        args.records, args.size, args.scenarios
    );
    logic_cost(args.records, args.size);
    let moto = Moto::start().await.expect("moto");
    let mut results = Vec::new();
    for scenario in &args.scenarios {
        let (delay, in_flight) = match scenario.as_str() {
            "loopback" => (None, args.in_flight),
            "rtt60" => (Some(Duration::from_millis(30)), args.rtt_in_flight),
            other => panic!("unknown scenario {other} (loopback, rtt60)"),
        };
        results.push(scenario_run(&moto, &args, scenario, delay, in_flight).await);
    }
    println!();
    println!("| scenario | records | puts in flight | takes in flight | wall s | records/s | CPU µs/record | peak RSS MiB | messages |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!("{r}");
    }
}

async fn scenario_run(
    moto: &Moto,
    args: &Args,
    scenario: &str,
    delay: Option<Duration>,
    in_flight: usize,
) -> String {
    // A fresh destination per scenario: dynoxide slows down as its tables grow.
    let region = DynamoRegion::start(DESTINATION, 0).expect("dynoxide");
    let ddb = region.client();
    let table = format!("replay-{scenario}");
    ferry_sandbox::create_destination_table(&ddb, &table, "pk")
        .await
        .expect("create table");
    let proxy = delay.map(|d| {
        let p = FaultProxy::start(&region.endpoint()).expect("proxy");
        p.set_mode(FaultMode::Delay(d));
        p
    });
    let endpoint = proxy
        .as_ref()
        .map(|p| p.endpoint())
        .unwrap_or_else(|| region.endpoint());

    let sqs = moto.sqs_client(SOURCE);
    let queues = Buffer::create_pair(sqs, &format!("replay-{scenario}"), &[], None)
        .await
        .expect("queue");
    let urls = [queues.buffer.queue_url.clone(), queues.dlq.queue_url];
    let buffer = queues.buffer;
    let t = Instant::now();
    let records = backlog(args.records, args.size);
    let batches = pack(&records).expect("pack");
    let messages: usize = batches.iter().map(Vec::len).sum();
    for batch in &batches {
        let failed = buffer.send_batch(batch).await.expect("send");
        assert!(failed.is_empty(), "SQS refused part of a batch");
    }
    drop(records);
    println!(
        "[{scenario}] backlog of {} records in {messages} messages on the buffer ({:.1} s)",
        args.records,
        t.elapsed().as_secs_f64()
    );

    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe)
        .arg("__drain")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", SOURCE)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("FERRY_PARTITION_KEY", "pk")
        .env("FERRY_DESTINATION_REGION", DESTINATION)
        .env("FERRY_DESTINATION_TABLE", &table)
        .env("FERRY_BUFFER_URL", &urls[0])
        .env("FERRY_DLQ_URL", &urls[1])
        .env("FERRY_SQS_ENDPOINT", moto.endpoint())
        .env("FERRY_DYNAMODB_ENDPOINT", &endpoint)
        .env("FERRY_DRAIN_BUDGET_S", "300")
        .env("FERRY_MAX_IN_FLIGHT", in_flight.to_string())
        .env("FERRY_TAKE_MESSAGES", args.take_messages.to_string())
        .env("FERRY_TAKES_IN_FLIGHT", args.takes_in_flight.to_string())
        .env("FERRY_BENCH_RUNTIME", &args.runtime)
        .stdout(Stdio::piped())
        .spawn()
        .expect("drain child");
    let stdout = child.stdout.take().expect("stdout");
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        match line.strip_prefix("RESULT ") {
            Some(json) => {
                result = Some(serde_json::from_str::<serde_json::Value>(json).expect("json"))
            }
            None => println!("  {line}"),
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "drain child failed: {status}");
    let r = result.expect("a RESULT line");

    // Check the outcome before trusting the figures.
    let stored = ferry_sandbox::count_items(&ddb, &table)
        .await
        .expect("count");
    let report = &r["report"];
    let applied = report["applied"].as_u64().unwrap_or(0);
    assert_eq!(stored, args.records as u64, "every record is in the table");
    assert_eq!(report["dlq_records"].as_u64(), Some(0));
    assert_eq!(report["dlq_messages"].as_u64(), Some(0));
    let wall_ms = r["wall_ms"].as_u64().unwrap_or(1).max(1);
    let cpu_us = r["cpu_us"].as_i64().unwrap_or(0);
    let rate = args.records as f64 * 1000.0 / wall_ms as f64;
    let cpu_per = cpu_us as f64 / args.records as f64;
    let rss_mib = r["peak_rss_kb"].as_i64().unwrap_or(0) as f64 / 1024.0;
    let rss_before_mib = r["peak_rss_before_kb"].as_i64().unwrap_or(0) as f64 / 1024.0;
    println!(
        "[{scenario}] drain process peak RSS (VmHWM) before draining {rss_before_mib:.1} MiB, \
         after {rss_mib:.1} MiB"
    );
    println!(
        "[{scenario}] {} records in {:.2} s: {rate:.0} records/s, {cpu_per:.1} µs CPU/record \
         (user {} ms, sys {} ms), peak RSS {rss_mib:.1} MiB; applied {applied}, requeued {}, \
         throttled {}, transport failures {}, takes {}, SQS requests {}",
        args.records,
        wall_ms as f64 / 1000.0,
        r["user_us"].as_i64().unwrap_or(0) / 1000,
        r["sys_us"].as_i64().unwrap_or(0) / 1000,
        report["requeued"],
        report["throttled"],
        report["transport_failures"],
        report["takes"],
        report["sqs_requests"],
    );
    if let Some(p) = &proxy {
        println!("[{scenario}] proxy: {:?}", p.stats());
    }
    format!(
        "| {scenario} | {} | {in_flight} | {} | {:.2} | {rate:.0} | {cpu_per:.1} | {rss_mib:.1} | {messages} |",
        args.records,
        args.takes_in_flight,
        wall_ms as f64 / 1000.0
    )
}

/// The drain's own work per record, without any I/O: unpack the messages, coalesce, build the
/// condition and its expression, convert the image for the SDK, judge a refused write.
fn logic_cost(records: usize, size: usize) {
    let backlog = backlog(records, size);
    let bodies: Vec<String> = pack(&backlog)
        .expect("pack")
        .into_iter()
        .flatten()
        .map(|m| m.body)
        .collect();
    let config = ferry_core::Config::new(SOURCE, "pk");
    let stored = backlog[0].image.clone();
    let before = ferry_measure::thread_cpu().as_micros() as i64;
    let mut unpacked = Vec::with_capacity(records);
    for body in &bodies {
        unpacked.extend(ferry_core::buffer::unpack(body).expect("unpack"));
    }
    let newest = ferry_core::coalesce::newest_per_key(&unpacked);
    let mut judged_done = 0usize;
    for r in &unpacked {
        let condition = ferry_core::apply_condition(r, &config);
        let expression = condition.to_expression();
        let item = ferry_aws::values::to_sdk(&r.image);
        std::hint::black_box((expression, item));
        judged_done += ferry_core::judge(r, Some(&stored), &config).is_done() as usize;
    }
    let cpu = ferry_measure::thread_cpu().as_micros() as i64 - before;
    assert_eq!(newest.len(), records);
    std::hint::black_box(judged_done);
    println!(
        "drain logic without I/O (unpack, coalesce, condition, SDK item, judge): {:.2} µs CPU/record",
        cpu as f64 / records as f64
    );
}

/// Records of about `size` bytes: a key, the version, and a random alphanumeric payload (it
/// compresses like text, not like zeros).
fn backlog(n: usize, size: usize) -> Vec<ChangeRecord> {
    let mut rng = rand::thread_rng();
    let now = ferry_core::clock::system_now_ms();
    (0..n)
        .map(|i| {
            let key: Item = [("pk".to_string(), AttributeValue::S(format!("r{i:07}")))].into();
            let version = Version::new(now + i as u64, SOURCE);
            let mut image = key.clone();
            let payload: String = (&mut rng)
                .sample_iter(&Alphanumeric)
                .take(size.saturating_sub(80))
                .map(char::from)
                .collect();
            image.insert("payload".into(), AttributeValue::S(payload));
            image.insert("n".into(), AttributeValue::N(i.to_string()));
            version.stamp_into(&mut image, &Default::default());
            ChangeRecord {
                key,
                image,
                tombstone: false,
                version,
                source_region: SOURCE.into(),
                written_at_ms: now,
            }
        })
        .collect()
}

/// `ferry_measure` in the units of this bench's JSON lines.
fn peak_rss_kb() -> i64 {
    ferry_measure::peak_rss_kib().unwrap_or(0) as i64
}

/// (user µs, system µs) of this process.
fn cpu_us() -> (i64, i64) {
    let (user, system) = ferry_measure::process_cpu();
    (user.as_micros() as i64, system.as_micros() as i64)
}
