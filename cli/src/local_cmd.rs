//! The binary's `ferry local` and `ferry demo` (the default `local` feature): their flags and
//! how they start the sandbox. Durations go through `ferry_cli::duration`, the one parser.

use clap::{Args, Subcommand};
use ferry_cli::cluster::{Cluster, ClusterOptions};
use ferry_cli::control;
use ferry_cli::demo::{self, DemoOptions};
use ferry_cli::duration::{parse_duration, parse_offset_ms};
use ferry_cli::workload::Workload;
use ferry_core::MergeMode;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum LocalCommand {
    /// Starts the sandbox and keeps it running until Ctrl-C.
    #[command(after_help = "Example: ferry local up --region-count 3 --rtt 60ms")]
    Up(UpArgs),
    /// Cuts a region of the running sandbox off from the others for a while.
    #[command(after_help = "Example: ferry local outage eu-west-1 --for 30s")]
    Outage {
        /// The region cut off, e.g. `eu-west-1`.
        region: String,
        /// How long, e.g. `30s` or `2m`.
        #[arg(long = "for", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
        length: Duration,
    },
}

#[derive(Args)]
pub struct UpArgs {
    /// How many emulated regions, e.g. `--region-count 3` (us-east-1, eu-west-1, ...).
    #[arg(long, value_name = "N", default_value_t = 2)]
    region_count: usize,
    /// Round trip added on the cross-region path, e.g. `60ms`.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    rtt: Duration,
    /// Clock offset between neighbouring regions, e.g. `200ms` or `-1s`.
    #[arg(long, value_name = "DURATION", default_value = "0ms", allow_hyphen_values = true, value_parser = parse_offset_ms)]
    clock_skew: i64,
    /// The table created in every region, e.g. `orders`.
    #[arg(long, default_value = "ferry-demo")]
    table: String,
}

#[derive(Args)]
pub struct DemoArgs {
    /// How many emulated regions, e.g. `--region-count 3`.
    #[arg(long, value_name = "N", default_value_t = 2)]
    region_count: usize,
    /// The workload's random seed, e.g. `7`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the workload writes, e.g. `45s` or `2m`.
    #[arg(long, value_name = "DURATION", default_value = "45s", value_parser = parse_duration)]
    duration: Duration,
    /// Application writes per second, all regions together, e.g. `40`.
    #[arg(long, default_value_t = 40)]
    rate: u64,
    /// How long the last region is cut off (starting a third of the way in), e.g. `15s`.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    outage: Duration,
    /// Round trip added on the cross-region path, e.g. `60ms`.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    rtt: Duration,
    /// Clock offset between neighbouring regions, e.g. `200ms` or `-1s`.
    #[arg(long, value_name = "DURATION", default_value = "0ms", allow_hyphen_values = true, value_parser = parse_offset_ms)]
    clock_skew: i64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Where to draw the run's picture (SVG), e.g. `run.svg`; default `<out>/demo.svg`.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The run's output folder, e.g. `out/run1`.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    /// Give up waiting for convergence after this long, e.g. `2m`.
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = parse_duration)]
    converge_timeout: Duration,
    /// How replicas settle concurrent writes: `item` (whole-item last-writer-wins) or
    /// `attribute` (per-attribute merge, docs/attribute-merge.md); FERRY_MERGE_MODE's values.
    #[arg(long = "merge", default_value = "item", value_parser = parse_merge_mode)]
    merge_mode: MergeMode,
    /// `mixed`: puts, updates and deletes on own and shared keys; `disjoint`: every region
    /// updates its own attribute of the same items, and the demo counts lost updates.
    #[arg(long, value_enum, default_value_t = Workload::Mixed)]
    workload: Workload,
}

fn parse_merge_mode(text: &str) -> Result<MergeMode, String> {
    MergeMode::parse(text).map_err(|e| e.to_string())
}

/// Whole seconds, at least one: what the sandbox's control line and the demo count in.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub async fn main(command: LocalCommand) -> ExitCode {
    match command {
        LocalCommand::Up(args) => local_up(args).await,
        LocalCommand::Outage { region, length } => {
            let seconds = whole_seconds(length).max(1);
            match control::send(&format!("outage {region} {seconds}")).await {
                Ok(answer) if answer.starts_with("ok") => {
                    println!("{answer}");
                    ExitCode::SUCCESS
                }
                Ok(answer) => {
                    eprintln!("{answer}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

pub async fn run_demo(a: DemoArgs) -> ExitCode {
    let options = DemoOptions {
        regions: a.region_count,
        seed: a.seed,
        duration_s: whole_seconds(a.duration),
        rate: a.rate,
        outage_s: whole_seconds(a.outage),
        rtt_ms: a.rtt.as_millis() as u64,
        clock_skew_ms: a.clock_skew,
        json: a.json,
        plot: a.plot,
        out_dir: a.out,
        converge_timeout_s: whole_seconds(a.converge_timeout),
        merge_mode: a.merge_mode,
        workload: a.workload,
    };
    let json = options.json;
    match demo::run(options).await {
        Ok(report) => {
            let ok = report.passed();
            if json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", demo::render(&report));
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(2)
        }
    }
}

async fn local_up(a: UpArgs) -> ExitCode {
    let cluster = match Cluster::start(ClusterOptions {
        regions: a.region_count,
        rtt_ms: a.rtt.as_millis() as u64,
        clock_skew_ms: a.clock_skew,
        table: a.table,
        ..ClusterOptions::default()
    })
    .await
    {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => {
            eprintln!("ferry local up: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match control::listen().await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ferry local up: control port: {e}");
            return ExitCode::from(2);
        }
    };
    let control_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let state = cluster.state(std::process::id(), control_addr);
    if let Err(e) = control::write_state(&state) {
        eprintln!(
            "ferry local up: writing {}: {e}",
            control::state_path().display()
        );
    }
    for line in cluster.endpoint_lines() {
        println!("{line}");
    }
    println!("# To point boto3 or an AWS SDK at one region, paste its line:");
    for line in cluster.export_lines() {
        println!("{line}");
    }
    eprintln!(
        "ready. `ferry local outage <region> --for 30s` cuts a region off; Ctrl-C stops everything."
    );
    let serve = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let cluster = cluster.clone();
                tokio::spawn(ferry_cli::cluster::serve_control(cluster, stream));
            }
        })
    };
    let status = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!("{}", cluster.status_line().await);
            }
        })
    };
    wait_for_signal().await;
    serve.abort();
    status.abort();
    // An aborted task drops its clone of the cluster only once it has been awaited.
    let _ = serve.await;
    let _ = status.await;
    control::remove_state(std::process::id());
    match std::sync::Arc::try_unwrap(cluster) {
        Ok(c) => c.shutdown().await,
        Err(_) => eprintln!(
            "ferry local up: the cluster is still in use; its emulators stop with this process"
        ),
    }
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
