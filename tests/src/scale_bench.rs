//! The scale-out scenarios of issue #16, run by the pipeline bench (`--scenarios
//! scaleout,sustained`; `make bench`), on the stages of [`crate::pipeline_bench`].
//!
//! **`scaleout`**: a destination behind 60 ms of round trip (the sandbox's fault proxy, 30 ms
//! each way), a buffer filled beforehand by the real enqueue, then drained by 1, 2 and 4 drain
//! worker processes at once (each a plain drain, as a Lambda worker is). Each worker keeps
//! `--scale-in-flight` puts in flight (8 by default), so one worker is bound by the round trip,
//! not by CPU, and 4 of them stay within the machine's two cores and dynoxide's write rate. The
//! wall time runs from the workers' start to the buffer's last delete; records/s per worker
//! count, and the ratio to one worker.
//!
//! **`sustained`**: `--sustained-rate` writes/s (1 000) into the source for `--sustained-s`
//! (180 s), through the real enqueue, while one drain process runs as the template runs it: a
//! `ferry_drain::tick` every `--tick-s` (60 s, the schedule) with the budget of
//! `FERRY_DRAIN_BUDGET_S` (70 s), the fan-out up to `FERRY_MAX_DRAIN_CONCURRENCY` (4), the
//! workers tasks of the tick's process as the local sandbox starts them
//! (`FERRY_BENCH_WORKERS=process`: a process each, as Lambda gives each a container). Lag
//! p50/p99 of every applied record and where it went (`LagParts`), the backlog over time, the
//! workers per tick, and converged at the end (every key written is in the destination).

use crate::pipeline_bench::{
    child_env, collect_result, cpu_us, drainer, result_line, stage, stop_on_stdin_eof, Args, Stage,
    CHILD_DEADLINE, SOURCE,
};
use ferry_drain::{DrainReport, Drainer, LocalWorkers, StartWorkers, Ticker, WorkerOrder};
use ferry_sandbox::Moto;
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// 30 ms each way: a cross-region round trip.
const ONE_WAY: Duration = Duration::from_millis(30);

/// The figures of `name` if it is one of this file's scenarios.
pub(crate) async fn scenario(moto: &Moto, args: &Args, name: &str) -> Option<Value> {
    match name {
        "scaleout" => Some(scale_out(moto, args).await),
        "sustained" => Some(sustained(moto, args).await),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The children.

/// A drain worker: drain calls back to back (each returns when a receive comes back empty),
/// until stdin closes.
pub(crate) fn worker_drain_child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stop = stop_on_stdin_eof();
        let mut drainer = drainer().await;
        drainer.settings.return_when_idle = true;
        drainer.settings.receive_wait_s = 1;
        let before = cpu_us();
        let start_ms = ferry_core::clock::system_now_ms();
        let mut total = DrainReport::default();
        while !stop.load(Ordering::SeqCst) {
            total.absorb(&ferry_drain::drain(&drainer).await);
        }
        result_line(
            "worker_drain",
            before,
            start_ms,
            json!({"records": total.records, "applied": total.applied,
                   "dlq_records": total.dlq_records, "requeued": total.requeued}),
        );
    });
}

/// The drain as the template runs it: a tick every `FERRY_BENCH_TICK_S`, each with the
/// configured budget and fan-out (so consecutive ticks overlap, as on Lambda), until stdin
/// closes (which also stops the drains under way). The workers are tasks of this process
/// (`FERRY_BENCH_WORKERS=task`, the default, as the local sandbox runs them) or processes of
/// their own (`process`: as Lambda runs each in a container, but here every process shares the
/// machine's two cores with the rest, so more of them contend rather than add CPU).
pub(crate) fn ticking_drain_child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stop = stop_on_stdin_eof();
        let period = Duration::from_secs(child_env("FERRY_BENCH_TICK_S").parse().expect("tick"));
        let drainer = Arc::new(drainer().await);
        cancel_on(stop.clone(), drainer.settings.stop.clone());
        let workers = Arc::new(BenchWorkers::new(&drainer));
        let ticker = Arc::new(Ticker::default());
        let before = cpu_us();
        let start_ms = ferry_core::clock::system_now_ms();
        let start = tokio::time::Instant::now();
        let mut ticks = Vec::new();
        for k in 0u32.. {
            if !sleep_until_or_stop(start + period * k, &stop).await {
                break;
            }
            let (drainer, workers, ticker) = (drainer.clone(), workers.clone(), ticker.clone());
            ticks.push(tokio::spawn(async move {
                let budget = drainer.settings.budget;
                let report = ferry_drain::tick(&drainer, &ticker, workers.start(), budget).await;
                (period * k, report)
            }));
        }
        let mut total = DrainReport::default();
        let mut per_tick = Vec::new();
        for handle in ticks {
            let (at, report) = handle.await.expect("tick");
            per_tick.push(json!({"at_s": at.as_secs(), "workers": report.workers,
                                 "records": report.records}));
            total.absorb(&report);
        }
        let worker_cpu_us = workers.finish(&mut total).await;
        let parts = parts_percentiles(&total.lag_parts_ms);
        let mut lags = std::mem::take(&mut total.lag_ms);
        lags.sort_unstable();
        let pct = |p| ferry_drain::percentile(&lags, p);
        result_line(
            "ticking_drain",
            before,
            start_ms,
            json!({"records": total.records, "applied": total.applied, "stale": total.stale,
                   "coalesced": total.coalesced, "dlq_records": total.dlq_records,
                   "requeued": total.requeued, "lag_p50_ms": pct(50.0), "lag_p99_ms": pct(99.0),
                   "lag_max_ms": lags.last(), "lag_parts": parts, "ticks": per_tick,
                   "worker_processes_cpu_us": worker_cpu_us}),
        );
    });
}

/// Where the lag went (`ferry_drain::LagParts`): p50 and p99 of each part.
fn parts_percentiles(parts: &[ferry_drain::LagParts]) -> Value {
    let pct = |f: fn(&ferry_drain::LagParts) -> u64| {
        let mut v: Vec<u64> = parts.iter().map(f).collect();
        v.sort_unstable();
        json!({"p50": ferry_drain::percentile(&v, 50.0), "p99": ferry_drain::percentile(&v, 99.0)})
    };
    json!({"to_buffer_ms": pct(|p| p.to_buffer), "in_buffer_ms": pct(|p| p.in_buffer),
           "in_drain_ms": pct(|p| p.in_drain)})
}

/// A worker's lag parts as three arrays (to the buffer, in it, in the drain).
fn parts_arrays(parts: &[ferry_drain::LagParts]) -> Value {
    let column = |f: fn(&ferry_drain::LagParts) -> u64| parts.iter().map(f).collect::<Vec<_>>();
    json!([
        column(|p| p.to_buffer),
        column(|p| p.in_buffer),
        column(|p| p.in_drain)
    ])
}

fn parts_from_arrays(v: &Value) -> Vec<ferry_drain::LagParts> {
    let column =
        |i: usize| -> Vec<u64> { serde_json::from_value(v[i].clone()).unwrap_or_default() };
    let (a, b, c) = (column(0), column(1), column(2));
    a.iter()
        .zip(&b)
        .zip(&c)
        .map(
            |((&to_buffer, &in_buffer), &in_drain)| ferry_drain::LagParts {
                to_buffer,
                in_buffer,
                in_drain,
                retried: false,
            },
        )
        .collect()
}

/// Cancels `token` once `stop` is set.
fn cancel_on(stop: Arc<AtomicBool>, token: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        token.cancel();
    });
}

/// The ticks' workers, as `FERRY_BENCH_WORKERS` says.
enum BenchWorkers {
    Tasks(LocalWorkers, Arc<Mutex<Vec<DrainReport>>>),
    Processes(ProcessWorkers),
}

impl BenchWorkers {
    fn new(drainer: &Arc<Drainer>) -> Self {
        match std::env::var("FERRY_BENCH_WORKERS").as_deref() {
            Ok("task") => {
                let done = Arc::new(Mutex::new(Vec::<DrainReport>::new()));
                let sink = done.clone();
                let workers = LocalWorkers::new(drainer.clone(), move |r| {
                    sink.lock().expect("reports").push(r.clone())
                });
                BenchWorkers::Tasks(workers, done)
            }
            _ => BenchWorkers::Processes(ProcessWorkers::default()),
        }
    }

    fn start(&self) -> &dyn StartWorkers {
        match self {
            BenchWorkers::Tasks(w, _) => w,
            BenchWorkers::Processes(w) => w,
        }
    }

    /// Stops and waits for every worker; adds their reports to `total`. The CPU of worker
    /// processes (tasks' CPU is this process's).
    async fn finish(&self, total: &mut DrainReport) -> i64 {
        match self {
            BenchWorkers::Tasks(workers, done) => {
                workers.join().await;
                for r in done.lock().expect("reports").iter() {
                    total.absorb(r);
                }
                0
            }
            BenchWorkers::Processes(workers) => workers.finish(total),
        }
    }
}

/// Starts each worker as a process of its own (`__order_worker`), as Lambda runs each in a
/// container of its own; closing their stdin stops them.
#[derive(Default)]
struct ProcessWorkers {
    running: Mutex<Vec<(ChildStdin, std::thread::JoinHandle<Value>)>>,
}

impl StartWorkers for ProcessWorkers {
    fn start(&self, order: WorkerOrder, count: u32) -> BoxFuture<'_, u32> {
        let mut running = self.running.lock().expect("workers");
        for _ in 0..count {
            let mut child = Command::new(std::env::current_exe().expect("exe"))
                .arg("__order_worker")
                .env("FERRY_BENCH_ORDER", json!(order).to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("worker process");
            let stdin = child.stdin.take().expect("stdin");
            running.push((stdin, collect_result(child, "order_worker".into())));
        }
        Box::pin(async move { count })
    }
}

impl ProcessWorkers {
    fn finish(&self, total: &mut DrainReport) -> i64 {
        let running = std::mem::take(&mut *self.running.lock().expect("workers"));
        let mut cpu_us = 0;
        for (stdin, result) in running {
            drop(stdin);
            let r = result.join().expect("worker");
            let count = |k: &str| r[k].as_u64().unwrap_or(0);
            total.absorb(&DrainReport {
                records: count("records"),
                applied: count("applied"),
                stale: count("stale"),
                coalesced: count("coalesced"),
                dlq_records: count("dlq_records"),
                requeued: count("requeued"),
                lag_ms: serde_json::from_value(r["lag_ms"].clone()).unwrap_or_default(),
                lag_parts_ms: parts_from_arrays(&r["lag_parts_ms"]),
                ..DrainReport::default()
            });
            cpu_us += r["cpu_us"].as_i64().unwrap_or(0);
        }
        cpu_us
    }
}

/// A worker the tick started (`FERRY_BENCH_ORDER`): one `ferry_drain::work`, as the drain
/// function runs a worker event, until its order ends or stdin closes.
pub(crate) fn order_worker_child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stop = stop_on_stdin_eof();
        let order: WorkerOrder =
            serde_json::from_str(&child_env("FERRY_BENCH_ORDER")).expect("order");
        let drainer = drainer().await;
        cancel_on(stop, drainer.settings.stop.clone());
        let before = cpu_us();
        let start_ms = ferry_core::clock::system_now_ms();
        let budget = drainer.settings.budget;
        let report = ferry_drain::work(&drainer, &Ticker::default(), order, budget).await;
        result_line(
            "order_worker",
            before,
            start_ms,
            json!({"records": report.records, "applied": report.applied, "stale": report.stale,
                   "coalesced": report.coalesced, "dlq_records": report.dlq_records,
                   "requeued": report.requeued, "lag_ms": report.lag_ms,
                   "lag_parts_ms": parts_arrays(&report.lag_parts_ms)}),
        );
    });
}

/// Sleeps until `due`; false if `stop` was set first.
async fn sleep_until_or_stop(due: tokio::time::Instant, stop: &AtomicBool) -> bool {
    while tokio::time::Instant::now() < due {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let step = due.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(step.min(Duration::from_millis(100))).await;
    }
    !stop.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// Starts `role` with the stage's environment plus `extra`; its stdin (close it to stop it)
/// and its RESULT line.
fn spawn(
    stage: &Stage,
    role: &str,
    extra: &[(&str, String)],
) -> (ChildStdin, std::thread::JoinHandle<Value>) {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg(role)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(stage.env.iter().map(|(k, v)| (k, v)))
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let stdin = child.stdin.take().expect("stdin");
    (stdin, collect_result(child, role.to_string()))
}

fn env_value(stage: &Stage, key: &str) -> String {
    stage
        .env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{key} in the stage"))
}

fn buffer_of(moto: &Moto, stage: &Stage) -> ferry_aws::Buffer {
    ferry_aws::Buffer::new(
        moto.sqs_client(SOURCE),
        env_value(stage, "FERRY_BUFFER_URL"),
    )
}

/// Every key written is in the destination, once, and nothing was dead-lettered.
async fn check_converged(stage: &Stage, keys: u64, dlq_records: u64) {
    let stored = ferry_sandbox::count_items(&stage.destination.client(), &stage.table)
        .await
        .expect("count");
    assert_eq!(
        stored, keys,
        "[{}] every key written is in the destination",
        stage.name
    );
    assert_eq!(dlq_records, 0, "[{}] nothing dead-lettered", stage.name);
}

/// The buffer filled, then drained by each worker count in turn.
async fn scale_out(moto: &Moto, args: &Args) -> Value {
    let per_event = args.scale_per_event.max(1);
    let events = args.scale_records.div_ceil(per_event).max(1);
    let records = events * per_event;
    println!(
        "[scaleout] {records} records in messages of {per_event}, 60 ms RTT, {} puts in flight per worker, workers {:?}",
        args.scale_in_flight, args.scale_workers
    );
    let mut rows = Vec::new();
    for &n in &args.scale_workers {
        let name = format!("scale{n}");
        let stage = stage(
            moto,
            args,
            &name,
            Some(ONE_WAY),
            args.scale_in_flight,
            events,
            per_event,
        )
        .await;
        let buffer = buffer_of(moto, &stage);
        // Fill the buffer first: only the drain is timed.
        let (enq_in, enq) = spawn(&stage, "__enqueue", &[]);
        drop(enq_in);
        enq.join().expect("enqueue");
        let load = ferry_measure::load_1min();
        let start = Instant::now();
        let children: Vec<_> = (0..n)
            .map(|_| spawn(&stage, "__worker_drain", &[]))
            .collect();
        while ferry_cli::cluster::queue_depth(&buffer).await.unwrap_or(1) > 0 {
            assert!(
                start.elapsed() < CHILD_DEADLINE,
                "[{name}] buffer never empties"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let wall = start.elapsed().as_secs_f64();
        let results: Vec<Value> = children
            .into_iter()
            .map(|(stdin, result)| {
                drop(stdin);
                result.join().expect("worker")
            })
            .collect();
        let sum = |k: &str| {
            results
                .iter()
                .map(|r| r[k].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        check_converged(&stage, records as u64, sum("dlq_records")).await;
        let rate = records as f64 / wall;
        println!(
            "[{name}] {n} worker(s): {records} records in {wall:.1} s = {rate:.0} records/s (load {load:.1})"
        );
        rows.push(json!({"workers": n, "wall_s": wall, "records_per_s": rate,
                         "cpu_us_per_record": sum("cpu_us") as f64 / records as f64,
                         "requeued": sum("requeued"), "load_1min": load}));
    }
    let one = rows
        .iter()
        .find(|r| r["workers"] == 1)
        .and_then(|r| r["records_per_s"].as_f64());
    for row in &mut rows {
        if let (Some(one), Some(rate)) = (one, row["records_per_s"].as_f64()) {
            row["ratio_to_one"] = json!(rate / one);
            let n = row["workers"].as_f64().unwrap_or(1.0);
            println!(
                "[scaleout] {n} workers: {:.2}x one worker (target >= {:.1}x)",
                rate / one,
                0.8 * n
            );
        }
    }
    json!({"records": records, "records_per_message": per_event, "rtt_ms": 60,
           "puts_in_flight_per_worker": args.scale_in_flight, "runs": rows})
}

/// Writes at a steady rate for a while with the drain ticking as the template runs it.
async fn sustained(moto: &Moto, args: &Args) -> Value {
    let per_event = args.sustained_rate.max(1);
    let stage = stage(moto, args, "sustained", Some(ONE_WAY), 64, 0, per_event).await;
    let buffer = buffer_of(moto, &stage);
    let extra = [
        ("FERRY_BENCH_RATE", args.sustained_rate.to_string()),
        ("FERRY_BENCH_PER_EVENT", per_event.to_string()),
        ("FERRY_BENCH_KEYS", args.sustained_keys.to_string()),
        ("FERRY_BENCH_TICK_S", args.tick_s.to_string()),
        (
            "FERRY_MAX_DRAIN_CONCURRENCY",
            env_or("FERRY_MAX_DRAIN_CONCURRENCY", "4"),
        ),
        ("FERRY_MAX_IN_FLIGHT", env_or("FERRY_MAX_IN_FLIGHT", "64")),
        ("FERRY_DRAIN_BUDGET_S", env_or("FERRY_DRAIN_BUDGET_S", "70")),
        ("FERRY_BENCH_WORKERS", env_or("FERRY_BENCH_WORKERS", "task")),
    ];
    println!(
        "[sustained] {} writes/s for {} s over {} keys, 60 ms RTT; a tick every {} s: {:?}",
        args.sustained_rate,
        args.sustained_s,
        args.sustained_keys,
        args.tick_s,
        &extra[4..]
    );
    let (drain_in, drain) = spawn(&stage, "__ticking_drain", &extra);
    let (enq_in, enq) = spawn(&stage, "__paced_enqueue", &extra);
    let start = Instant::now();
    let mut timeline = Vec::new();
    let mut enqueue = Some((enq_in, enq));
    let mut enq = Value::Null;
    loop {
        let t = start.elapsed();
        if t >= Duration::from_secs(args.sustained_s) {
            if let Some((stdin, result)) = enqueue.take() {
                // Writes stop; wait for the last event's send before watching the buffer empty.
                drop(stdin);
                enq = tokio::task::spawn_blocking(move || result.join())
                    .await
                    .expect("join")
                    .expect("enqueue");
            }
        }
        let depth = ferry_cli::cluster::queue_depth(&buffer).await.unwrap_or(0);
        timeline.push(json!([(t.as_secs_f64() * 10.0).round() / 10.0, depth]));
        if enqueue.is_none() && depth == 0 {
            break;
        }
        assert!(
            t < Duration::from_secs(args.sustained_s) + CHILD_DEADLINE,
            "[sustained] the buffer never empties"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let wall = start.elapsed().as_secs_f64();
    drop(drain_in);
    let drn = drain.join().expect("drain");
    let keys = enq["keys"].as_u64().unwrap_or(0);
    check_converged(&stage, keys, drn["dlq_records"].as_u64().unwrap_or(1)).await;
    let peak = timeline
        .iter()
        .filter_map(|p| p[1].as_u64())
        .max()
        .unwrap_or(0);
    println!(
        "[sustained] {} records written, lag p50 {} ms, p99 {} ms, max {} ms (parts {}); backlog peak {peak} messages; empty {wall:.0} s after the start; ticks {}",
        enq["records"], drn["lag_p50_ms"], drn["lag_p99_ms"], drn["lag_max_ms"], drn["lag_parts"], drn["ticks"]
    );
    json!({"write_rate": args.sustained_rate, "seconds": args.sustained_s, "rtt_ms": 60,
           "tick_s": args.tick_s, "settings": extra.iter().skip(4).map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
           "records_written": enq["records"], "keys": keys, "late_events": enq["late_events"],
           "lag_p50_ms": drn["lag_p50_ms"], "lag_p99_ms": drn["lag_p99_ms"],
           "lag_max_ms": drn["lag_max_ms"], "lag_parts": drn["lag_parts"],
           "backlog_peak_messages": peak,
           "empty_after_s": wall, "ticks": drn["ticks"], "converged": true,
           // The drain process only: the enqueue child also generates the items it sends.
           "drain_cpu_us_per_record": (drn["cpu_us"].as_f64().unwrap_or(0.0) + drn["worker_processes_cpu_us"].as_f64().unwrap_or(0.0)) / drn["records"].as_f64().unwrap_or(1.0).max(1.0),
           "backlog_timeline": timeline})
}

/// The caller's own setting (an A/B run), else the template's default.
fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}
