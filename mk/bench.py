#!/usr/bin/env python3
"""`make bench` (issue #8): runs Ferry's performance report on this machine against loopback
emulators and writes out/bench/report.json (every figure with its command, date, machine and
load average) and out/bench/report.md (the markdown that BENCHMARKS.md carries between its
`bench:begin` / `bench:end` markers; `--update` writes it there).

Steps (each a command of this repository, run as printed):
  1. the pipeline bench (tests/src/pipeline_bench.rs): steady replication on loopback and at
     60 ms RTT, the naive baseline, replay after outages, and (full run) callgrind's instruction
     count per record;
  1b. the scale-out (1, 2, 4 drain workers at 60 ms RTT) and sustained-load (1 000 writes/s for
     3 minutes, the drain ticking as the template runs it) scenarios (tests/src/scale_bench.rs);
  2. lag at a steady rate with and without 60 ms RTT: `ferry demo --json` (bench-profile build);
  3. the arm64 bootstraps' sizes (`make lambda-build`; QUICK=1 reads the last build's files);
  4. the cost and capacity model, computed here from the measured figures and the list prices
     below.

Python standard library only; no figure is invented here: everything derived says how.
"""

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import time

# AWS list prices, us-east-1, as published in 2025 (checked when this file was written; re-check
# before quoting a total).
PRICES = {
    "as_of": "2025 (AWS list prices, us-east-1)",
    "sqs_standard_per_million_requests": 0.40,
    "sqs_billing_chunk_bytes": 65536,
    "lambda_arm64_per_gb_s": 0.0000133334,
    "lambda_per_million_requests": 0.20,
    "dynamodb_on_demand_per_million_wru": 0.625,
    "inter_region_transfer_per_gb": 0.02,
}
# Lambda gives a function a full vCPU at 1 769 MB and a proportional share below it.
LAMBDA_MB_PER_VCPU = 1769
# The template's defaults (template.yaml): both functions 256 MB, a drain tick every minute for
# 70 s (each overlaps the next by 10 s, so a drain is always polling).
ENQUEUE_MB = 256
DRAIN_MB = 256
DRAIN_BUDGET_S = 70

TARGETS = {
    "records_per_s": 3200,
    "records_per_s_rtt60": 2800,
    "cpu_us_per_record": 27,
    "peak_rss_mib": 46,
    "sqs_requests_per_1000": 10,
    "lag_p50_ms": 300,
    "lag_p99_ms": 1000,
    "cost_share_of_wru": 0.05,
    "bootstrap_bytes": 8_000_000,
}

OUT = "out/bench"


def load1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def now_iso():
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine():
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1).strip() if m else "?"
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "rustc": rustc,
        "commit": commit + ("+dirty" if dirty else ""),
    }


def scale_markdown(p, steps, w):
    """The scale-out and sustained-load scenarios (issue #16), if they ran."""
    so, su = p.get("scaleout"), p.get("sustained")
    cmd = steps.get("scale", {}).get("command", "").replace(os.path.abspath(OUT), OUT)
    if so:
        w("")
        w(f"**Scale-out** (`{cmd}`): {fmt(so['records'])} records in messages of "
          f"{so['records_per_message']}, filled by the real enqueue, then drained by N drain "
          f"processes at once, the destination behind 60 ms RTT, {so['puts_in_flight_per_worker']} "
          "puts in flight per worker (one worker is bound by the round trip); wall time from the "
          "workers' start to the buffer's last delete:")
        w("")
        w("| workers | records/s | × one worker | target | drain CPU µs/record | load |")
        w("|---|---|---|---|---|---|")
        for run in so["runs"]:
            n, ratio = run["workers"], run.get("ratio_to_one")
            target = f"≥ {0.8 * n:.1f}× {verdict(ratio is not None and ratio >= 0.8 * n)}" if n > 1 else ""
            w(f"| {n} | **{fmt(run['records_per_s'])}** | {fmt(ratio, 2)} | {target} | "
              f"{fmt(run['cpu_us_per_record'], 1)} | {run['load_1min']:.1f} |")
    if su:
        workers = [t["workers"] for t in su["ticks"]]
        w("")
        w(f"**Sustained load** (same command): {su['write_rate']} writes/s for {su['seconds']} s "
          f"through the real enqueue, the destination behind 60 ms RTT, the drain as the template "
          f"runs it (a tick every {su['tick_s']} s; {', '.join(f'{k}={v}' for k, v in su['settings'])}; "
          "workers as tasks of one process):")
        w("")
        w("| records written | lag p50 / p99 / max ms | backlog peak (messages) | workers per tick | buffer empty after | converged | load |")
        w("|---|---|---|---|---|---|---|")
        w(f"| {fmt(su['records_written'])} | **{su['lag_p50_ms']} / {su['lag_p99_ms']}** / {su['lag_max_ms']} | "
          f"{su['backlog_peak_messages']} | {workers} | {fmt(su['empty_after_s'])} s | "
          f"{'yes' if su['converged'] else 'no'} | {su['load_1min'][0]:.1f} → {su['load_1min'][1]:.1f} |")
        w("")
        w(f"- lag p99 ≤ 2 s {verdict(su['lag_p99_ms'] is not None and su['lag_p99_ms'] <= 2000)}; "
          "the backlog over time is `backlog_timeline` in the raw report.")


def step(name, cmd, steps, env=None):
    """Runs one command, streaming its output; records command, date, load and duration."""
    print(f"\n== {name}: {cmd}", flush=True)
    record = {"step": name, "command": cmd, "date": now_iso(), "load_1min_before": load1()}
    t = time.time()
    p = subprocess.Popen(cmd, shell=True, env={**os.environ, **(env or {})},
                         stdout=subprocess.PIPE, stderr=None, text=True)
    lines = []
    for line in p.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    rc = p.wait()
    record.update(seconds=round(time.time() - t, 1), load_1min_after=load1(), rc=rc)
    steps.append(record)
    if rc != 0:
        sys.exit(f"{name} failed ({rc}): {cmd}")
    return "".join(lines)


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", "target")


def last_json_line(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line")


def cost(pipeline):
    """$ per million replicated 1 KB writes beyond the destination's own WRU, per destination."""
    s = pipeline["scenarios"]["loopback"]
    billed_per_1000 = s["sqs_billed_requests_per_1000_records"]
    sqs = billed_per_1000 * 1000 * PRICES["sqs_standard_per_million_requests"] / 1e6
    # CPU-bound: billed duration = CPU time / the vCPU share of the memory size, so GB-s per
    # CPU-second is 1769/1024 for any size up to 1769 MB.
    gb_s_per_cpu_s = LAMBDA_MB_PER_VCPU / 1024
    cpu_s = {k: s[k]["cpu_us_per_record"] * 1e6 / 1e6 for k in ("enqueue", "drain")}
    gb_s = {k: v * gb_s_per_cpu_s for k, v in cpu_s.items()}
    lambda_compute = sum(gb_s.values()) * PRICES["lambda_arm64_per_gb_s"]
    # One enqueue invocation per stream batch (1 000 records in the bench's events); drain
    # invocations are per schedule tick, not per record (the fixed cost below).
    invocations = 1e6 / 1000
    lambda_requests = invocations * PRICES["lambda_per_million_requests"] / 1e6
    total = sqs + lambda_compute + lambda_requests
    wru = PRICES["dynamodb_on_demand_per_million_wru"]
    idle_gb_s_month = DRAIN_BUDGET_S * 60 * 24 * 30 * DRAIN_MB / 1024
    return {
        "prices": PRICES,
        "assumptions": [
            "figures from the loopback pipeline scenario (20 events of 1 000 records, realistic ~1 KB items)",
            "SQS: billed requests per 1 000 records = sends counted per started 64 KiB of each batch, "
            "receives as one request plus the chunks beyond the first of each message, deletes as one",
            f"Lambda: CPU-bound, billed duration = measured CPU time ÷ the memory size's vCPU share "
            f"(1 vCPU at {LAMBDA_MB_PER_VCPU} MB), i.e. {gb_s_per_cpu_s:.4f} GB-s per CPU-second at any size "
            f"≤ {LAMBDA_MB_PER_VCPU} MB; waiting on I/O overlaps with work and is not added",
            "enqueue invoked once per 1 000-record stream batch (StreamBatchSize 1000); the drain's "
            "invocations are per schedule tick (fixed cost, below)",
            "cross-region data transfer of the item is not included: every cross-region replicator "
            "pays it, Global Tables included",
        ],
        "sqs_billed_requests_per_1000_records": billed_per_1000,
        "lambda_gb_s_per_million_records": {**gb_s, "total": sum(gb_s.values())},
        "usd_per_million": {
            "sqs": sqs,
            "lambda_compute": lambda_compute,
            "lambda_requests": lambda_requests,
            "total": total,
        },
        "share_of_destination_wru_price": total / wru,
        "fixed_drain_idle_usd_per_month_per_pair": idle_gb_s_month * PRICES["lambda_arm64_per_gb_s"]
        + 43200 * PRICES["lambda_per_million_requests"] / 1e6,
        "fixed_drain_idle_note": f"each buffer's drain runs every minute for up to {DRAIN_BUDGET_S} s "
        f"at {DRAIN_MB} MB (template defaults), long-polling when idle",
    }


def capacity(pipeline, c):
    """100 000 writes/s per region, 3 regions: every write goes to 2 other regions."""
    s = pipeline["scenarios"]["loopback"]
    rate, regions = 100_000, 3
    fanout = regions - 1
    enq_cpu = s["enqueue"]["cpu_us_per_record"] / 1e6
    drn_cpu = s["drain"]["cpu_us_per_record"] / 1e6
    # enqueue runs once per record for all destinations; the bench had one destination, and a
    # second buffer adds one send of the same packed messages (counted as 10 % more CPU).
    enq_vcpu = rate * enq_cpu * 1.1
    drn_vcpu = rate * fanout * drn_cpu  # per region: it drains what the 2 others send it
    shards = math.ceil(rate / 1000)  # a stream shard takes ≤ 1 000 writes/s
    sqs_req_s = rate * fanout * s["sqs_requests_per_1000_records"] / 1000
    wcu = rate + rate * fanout  # local writes + replicated-in writes, 1 KB each
    partitions = math.ceil(wcu / 1000)
    per_month = rate * regions * 3600 * 24 * 30 * fanout / 1e6  # million replicated writes
    ferry_usd = per_month * c["usd_per_million"]["total"]
    wru_usd = per_month * PRICES["dynamodb_on_demand_per_million_wru"]
    return {
        "assumptions": [
            f"{rate} writes/s of ~1 KB in each of {regions} regions, every write replicated to the {fanout} others",
            "per-record CPU as measured on loopback (this machine's x86 cores; arm64 Lambda cores not measured)",
            "drain CPU per record is per destination; enqueue's per source record (+10 % for the second buffer's sends)",
            "a DynamoDB stream shard carries ≤ 1 000 writes/s; a partition ≤ 1 000 WCU/s",
            "drains scale by running several per buffer: a tick starts as many workers as the backlog needs and more "
            "while it grows, up to the template's MaxDrainConcurrency per destination (the drain function reserves "
            "twice that, for two overlapping ticks); the table sizes it at DrainMemoryMB 1769 (1 vCPU); "
            "SQS standard queues have no practical throughput limit",
        ],
        "per_region": {
            "enqueue_vcpu": enq_vcpu,
            "enqueue_concurrency_min_shards": shards,
            "drain_vcpu": drn_vcpu,
            "drain_concurrency_at_1_vcpu_each": math.ceil(drn_vcpu),
            "sqs_requests_per_s": sqs_req_s,
            "dynamodb_wcu_per_s": wcu,
            "dynamodb_partitions_min": partitions,
        },
        "per_month_all_regions": {
            "million_replicated_writes": per_month,
            "ferry_usd": ferry_usd,
            "destination_wru_usd": wru_usd,
        },
    }


def fmt(v, digits=0):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:,.{digits}f}".replace(",", " ")


def verdict(ok):
    return "**met**" if ok else "**missed**"


def markdown(r):
    m, p = r["machine"], r["pipeline"]["scenarios"]
    steps = {s["step"]: s for s in r["steps"]}
    out = []
    w = out.append
    w(f"Measured {r['date']} by `make bench{' QUICK=1' if r['quick'] else ''}` on {m['cores']} cores "
      f"({m['cpu']}), {m['memory_gib']} GiB, {m['rustc']}, commit {m['commit']}. Load average "
      "(1 min) is given beside each figure: the machine is shared, and wall-clock figures at a "
      "load above ~2 measure the neighbours too. Raw figures: `out/bench/report.json`.")
    w("")
    ps = steps["pipeline"]
    w(f"**Steady replication** (`{ps['command']}`): realistic ~1 KB items as Lambda stream events, the "
      "real enqueue handler → moto SQS → the real drain → a dynoxide table without a stream; "
      "enqueue and drain in child processes of their own (CPU = their `getrusage`, emulators "
      "excluded; RSS = their `VmHWM`).")
    w("")
    w("| scenario | records | records/s | CPU µs/record (enqueue + drain) | peak RSS MiB (enqueue / drain) | SQS requests per 1 000 (send / receive / delete+other) | billed SQS requests per 1 000 | load |")
    w("|---|---|---|---|---|---|---|---|")
    for name in ("loopback", "rtt60", "naive"):
        s = p.get(name)
        if not s:
            continue
        q = s["sqs_requests"]
        n = s["records"] / 1000
        label = {"loopback": "loopback, 64 puts in flight", "rtt60": f"60 ms RTT, {s['puts_in_flight']} puts in flight",
                 "naive": "naive baseline (loopback)"}[name]
        w(f"| {label} | {fmt(s['records'])} | **{fmt(s['records_per_s'])}** | **{fmt(s['cpu_us_per_record'], 1)}** "
          f"({fmt(s['enqueue']['cpu_us_per_record'], 1)} + {fmt(s['drain']['cpu_us_per_record'], 1)}) | "
          f"{fmt(s['enqueue']['peak_rss_mib'], 1)} / {fmt(s['drain']['peak_rss_mib'], 1)} | "
          f"**{fmt(s['sqs_requests_per_1000_records'], 2)}** ({fmt(q['send']/n, 2)} / {fmt(q['receive']/n, 2)} / {fmt(q['delete_and_other']/n, 2)}) | "
          f"{fmt(s['sqs_billed_requests_per_1000_records'], 1)} | {s['load_1min'][0]:.1f} → {s['load_1min'][1]:.1f} |")
    w("")
    lb, rt = p.get("loopback"), p.get("rtt60")
    if lb:
        peak = max(lb["enqueue"]["peak_rss_mib"], lb["drain"]["peak_rss_mib"])
        w(f"Targets: ≥ 3 200 records/s {verdict(lb['records_per_s'] >= 3200)}; "
          f"≤ 27 µs CPU/record {verdict(lb['cpu_us_per_record'] <= 27)}; "
          f"≤ 46 MB peak RSS {verdict(peak * 1.048576 <= 46)} ({fmt(peak * 1.048576, 1)} MB); "
          + (f"≥ 2 800 records/s at 60 ms RTT {verdict(rt['records_per_s'] >= 2800)}; " if rt else "")
          + f"≤ 10 SQS requests per 1 000 records {verdict(lb['sqs_requests_per_1000_records'] <= 10)}.")
    fv = r["pipeline"].get("ferry_vs_naive")
    if fv:
        w("")
        w(f"Ferry ÷ naive (loopback): throughput **{fmt(fv['throughput_ferry_over_naive'], 1)}×**, "
          f"CPU per record **{fmt(fv['cpu_per_record_naive_over_ferry'], 1)}× less**, SQS requests "
          f"**{fmt(fv['sqs_requests_naive_over_ferry'], 0)}× fewer**.")
    ins = r["pipeline"].get("instructions")
    if ins:
        w("")
        w(f"**Instructions per record** (callgrind, repeatable run to run; start-up cancelled: "
          f"(I(3 000 records) − I(1 000)) ÷ 2 000): enqueue **{fmt(ins['enqueue_per_record'])}**, "
          f"drain **{fmt(ins['drain_per_record'])}**, total **{fmt(ins['total_per_record'])}**.")
    outs = [k for k in p if k.startswith("outage")]
    if outs:
        w("")
        w("**Replay after an outage** (same command): paced writes through the real enqueue, the "
          "destination behind the 60 ms RTT proxy and cut off (connections refused); drain calls "
          "of 5 s back to back (1 s pause after one that found the destination down).")
        w("")
        w("| outage | write rate | backlog peak | converged after return | applied rate during replay | limit (in flight ÷ RTT) | coalesced | load |")
        w("|---|---|---|---|---|---|---|---|")
        for k in sorted(outs, key=lambda k: p[k]["outage_s"]):
            o = p[k]
            w(f"| {o['outage_s']} s | {o['write_rate']}/s in events of {o['records_per_event']}, {fmt(o['keys'])} keys | "
              f"{o['backlog_peak_messages']} messages (~{fmt(o['backlog_peak_records'])} records) | "
              f"**{fmt(o['converge_s'], 1)} s** | {fmt(o['replay_applied_rate'])} records/s | "
              f"{fmt(o['replay_rate_limit_in_flight_over_rtt'])} records/s | "
              f"{fmt(100 * o['coalesced_share'], 1)} % of {fmt(o['records_drained'])} records | "
              f"{o['load_1min'][0]:.1f} → {o['load_1min'][1]:.1f} |")
        w("")
        w("Applied rate during replay = write rate + backlog peak ÷ time to converge (the backlog "
          "fell at applied − written). Converged = the buffer back at its pre-outage depth.")
    scale_markdown(p, steps, w)
    lag = r.get("lag")
    if lag:
        w("")
        w("**Lag** (source write → applied in the destination), `ferry demo` at its default steady rate "
          "(40 writes/s, 2 regions), normal operation only:")
        w("")
        w("| run | p50 / p95 / p99 ms | p50 write→buffer / in buffer / drain ms | SQS requests per 1 000 records | lost / divergent | load |")
        w("|---|---|---|---|---|---|")
        for k, d in lag.items():
            b = d["report"]["lag_breakdown_ms"]
            l = d["report"]["lag_ms"]
            w(f"| `{d['command']}` | **{l['p50']} / {l['p95']} / {l['p99']}** | {b['to_buffer']['p50']} / "
              f"{b['in_buffer']['p50']} / {b['in_drain']['p50']} | {fmt(d['report']['sqs_requests_per_1000_records'], 1)} | "
              f"{d['report']['lost']} / {d['report']['divergent_keys']} | {d['load_1min'][0]:.1f} → {d['load_1min'][1]:.1f} |")
        w("")
        for k, d in lag.items():
            l = d["report"]["lag_ms"]
            w(f"- {k}: p50 ≤ 300 ms {verdict(l['p50'] <= 300)}, p99 ≤ 1 s {verdict(l['p99'] <= 1000)}.")
    c = r["cost"]
    u = c["usd_per_million"]
    w("")
    w(f"**Cost** per million replicated 1 KB writes per destination, beyond the destination's own "
      f"write units, at list prices {PRICES['as_of']}: SQS ${PRICES['sqs_standard_per_million_requests']:.2f} per million "
      f"requests (64 KiB chunks), Lambda arm64 ${PRICES['lambda_arm64_per_gb_s']:.10f} per GB-s and "
      f"${PRICES['lambda_per_million_requests']:.2f} per million requests, against on-demand "
      f"${PRICES['dynamodb_on_demand_per_million_wru']} per million WRU:")
    w("")
    g = c["lambda_gb_s_per_million_records"]
    w(f"| SQS (billed requests/1 000: {fmt(c['sqs_billed_requests_per_1000_records'], 1)}) | Lambda GB-s per million (enqueue + drain) | Lambda compute | Lambda requests | **total** | share of $0.625 |")
    w("|---|---|---|---|---|---|")
    w(f"| ${u['sqs']:.4f} | {fmt(g['enqueue'], 0)} + {fmt(g['drain'], 0)} = {fmt(g['total'], 0)} | ${u['lambda_compute']:.4f} | "
      f"${u['lambda_requests']:.4f} | **${u['total']:.4f}** | **{100 * c['share_of_destination_wru_price']:.1f} %** "
      f"— target ≤ 5 % {verdict(c['share_of_destination_wru_price'] <= 0.05)} |")
    w("")
    w("Assumptions: " + "; ".join(c["assumptions"]) + f". Fixed cost beside it: {c['fixed_drain_idle_note']}: "
      f"about ${c['fixed_drain_idle_usd_per_month_per_pair']:.2f} a month per source→destination pair.")
    sz = r.get("sizes")
    if sz:
        w("")
        w(f"**Size and memory** ({sz['command']}): stripped arm64 bootstraps "
          + ", ".join(f"{b} {fmt(v['bytes'])} B ({v['bytes'] / 2**20:.2f} MiB, built {v['mtime']})" for b, v in sz["files"].items())
          + f" — ≤ 8 MB {verdict(all(v['bytes'] <= 8_000_000 for v in sz['files'].values()))}"
          + (f"; peak RSS at a 1 000-record batch (x86 bench build): enqueue {fmt(lb['enqueue']['peak_rss_first_batch_mib'], 1)} MiB after its first batch "
             f"({fmt(lb['enqueue']['peak_rss_mib'], 1)} after 20), drain {fmt(lb['drain']['peak_rss_mib'], 1)} MiB (takes of up to 10 messages of ~1 000 records, 2 takes held)." if lb else "."))
    cap = r["capacity"]
    pr, pm = cap["per_region"], cap["per_month_all_regions"]
    w("")
    w("**Scale on paper** — 100 000 writes/s per region × 3 regions, each write replicated to the 2 others, "
      "from the loopback figures above:")
    w("")
    w("| per region | |")
    w("|---|---|")
    w(f"| enqueue | {fmt(pr['enqueue_vcpu'], 1)} vCPU busy; concurrency ≥ {pr['enqueue_concurrency_min_shards']} (one per stream shard) |")
    busy_per_destination = math.ceil(pr['drain_concurrency_at_1_vcpu_each'] / 2)
    # The fan-out plans for 70 % of a worker's measured rate (FanoutPolicy::headroom).
    cap_per_destination = math.ceil(busy_per_destination / 0.7)
    worker_rate = 1e6 / r["pipeline"]["scenarios"]["loopback"]["drain"]["cpu_us_per_record"]
    in_flight = math.ceil(worker_rate * 0.08)
    w(f"| drain | {fmt(pr['drain_vcpu'], 1)} vCPU busy → ≥ {pr['drain_concurrency_at_1_vcpu_each']} workers busy at `DrainMemoryMB` 1769 (1 vCPU each), "
      f"{busy_per_destination} per destination; with the fan-out's 70 % headroom `MaxDrainConcurrency` {cap_per_destination} (allowed: ≤ 100), "
      f"so each destination's drain function reserves {2 * cap_per_destination} (two ticks overlap) and the region {4 * cap_per_destination} "
      f"of its 1 000 default concurrent executions; one worker does ~{fmt(worker_rate)} records/s, so `DrainMaxInFlight` ≥ {in_flight} "
      f"for an 80 ms cross-region round trip |")
    w(f"| SQS | {fmt(pr['sqs_requests_per_s'])} requests/s across the region's buffers |")
    w(f"| DynamoDB | {fmt(pr['dynamodb_wcu_per_s'])} WCU/s (local + replicated-in) → ≥ {pr['dynamodb_partitions_min']} partitions |")
    w(f"| **per month, all regions** | {fmt(pm['million_replicated_writes'])} million replicated writes: Ferry ≈ **${fmt(pm['ferry_usd'])}**, "
      f"the destinations' own WRUs ${fmt(pm['destination_wru_usd'])} |")
    w("")
    w("Assumptions: " + "; ".join(cap["assumptions"]) + ".")
    return "\n".join(out) + "\n"


def update_benchmarks(md, path="BENCHMARKS.md"):
    text = open(path).read()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin not in text or end not in text:
        sys.exit(f"{path} has no {begin} … {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    open(path, "w").write(head + begin + "\n" + md + end + tail)
    print(f"updated {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short pass (~5 min): fewer records, a 10 s outage, a 60 s sustained load, short demos, no callgrind, no Lambda build")
    ap.add_argument("--update", action="store_true", help="write the markdown into BENCHMARKS.md between its markers")
    ap.add_argument("--scenarios", default="loopback,rtt60,naive,outage30,outage300",
                    help="the pipeline bench's scenarios (full run)")
    ap.add_argument("--skip-sizes", action="store_true", help="report the last `make lambda-build`'s files instead of building")
    ap.add_argument("--report-only", action="store_true", help="rebuild report.json/.md from the last run's files")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    steps = []
    saved = os.path.join(OUT, "steps.json")
    if a.report_only:
        steps = json.load(open(saved))
    else:
        step("build", "cargo bench --no-run -q -p ferry-e2e --bench pipeline && "
             "cargo build -q --profile bench -p ferry-cli --bin ferry", steps)
        pipe_args = ("--events 5 --naive-records 300 --scenarios loopback,rtt60,naive,outage10"
                     if a.quick else f"--scenarios {a.scenarios} --instructions")
        # cargo runs a bench in its package's directory: the output path must be absolute.
        step("pipeline", f"cargo bench -q -p ferry-e2e --bench pipeline -- {pipe_args} --out {os.path.abspath(OUT)}/pipeline.json", steps)
        # Issue #16: the fan-out at 60 ms RTT (1, 2, 4 workers) and a sustained write rate with
        # the drain ticking as the template runs it (scale_bench.rs).
        scale_args = ("--scale-records 4000 --sustained-s 60" if a.quick else "")
        step("scale", f"cargo bench -q -p ferry-e2e --bench pipeline -- --scenarios scaleout,sustained "
             f"{scale_args} --out {os.path.abspath(OUT)}/scale.json", steps)
        ferry = os.path.join(target_dir(), "release", "ferry")
        demo_extra = " --duration 20s --outage 5s" if a.quick else ""
        for name, extra in (("lag", ""), ("lag_rtt60", " --rtt 60ms")):
            cmd = f"{ferry} demo --json{demo_extra}{extra} --out {OUT}/{name}"
            text = step(name, cmd, steps)
            steps[-1]["report"] = last_json_line(text)
        if not (a.quick or a.skip_sizes):
            step("sizes", "make -s lambda-build", steps)
        json.dump(steps, open(saved, "w"), indent=1)
    pipeline = json.load(open(os.path.join(OUT, "pipeline.json")))
    scale_file = os.path.join(OUT, "scale.json")
    if os.path.exists(scale_file):
        pipeline["scenarios"].update(json.load(open(scale_file))["scenarios"])
    by = {s["step"]: s for s in steps}
    lag = {}
    for k in ("lag", "lag_rtt60"):
        if k in by:
            s = by[k]
            lag[k] = {"command": s["command"].replace(target_dir() + "/release/", ""), "report": s["report"],
                      "date": s["date"], "load_1min": [s["load_1min_before"], s["load_1min_after"]]}
    files = {}
    for b in ("enqueue", "drain"):
        f = os.path.join(target_dir(), "lambda", b, "bootstrap")
        if os.path.exists(f):
            files[b] = {"bytes": os.path.getsize(f),
                        "mtime": dt.datetime.fromtimestamp(os.path.getmtime(f), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    c = cost(pipeline)
    report = {
        "date": by.get("pipeline", {}).get("date", now_iso()),
        "quick": a.quick,
        "machine": machine(),
        "targets": TARGETS,
        "steps": [{k: v for k, v in s.items() if k != "report"} for s in steps],
        "pipeline": pipeline,
        "lag": lag,
        "sizes": {"command": "`make lambda-build`" if "sizes" in by else "the last `make lambda-build`, not re-run", "files": files} if files else None,
        "cost": c,
        "capacity": capacity(pipeline, c),
    }
    json.dump(report, open(os.path.join(OUT, "report.json"), "w"), indent=1)
    md = markdown(report)
    open(os.path.join(OUT, "report.md"), "w").write(md)
    print("\n" + md)
    print(f"wrote {OUT}/report.json and {OUT}/report.md")
    if a.update:
        update_benchmarks(md)


if __name__ == "__main__":
    main()
