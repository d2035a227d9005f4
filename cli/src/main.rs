use clap::{Args, Parser, Subcommand};
use ferry_cli::cluster::{Cluster, ClusterOptions};
use ferry_cli::control;
use ferry_cli::demo::{self, DemoOptions};
use ferry_cli::ops;
use ferry_cli::workload::Workload;
use ferry_core::MergeMode;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Ferry: active/active cross-region replication for DynamoDB.
#[derive(Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A multi-region Ferry on this machine (emulated regions, real handlers).
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Runs the demo: live replication between emulated regions, an outage, the replay, a report.
    Demo(DemoArgs),
    /// Bootstraps or re-seeds regions from one: stamps unversioned items, applies every item (LWW).
    Backfill(ops::backfill::BackfillArgs),
    /// Compares regions item by item (exit 1 on any difference); --repair fixes them (LWW).
    Verify(ops::verify::VerifyArgs),
    /// Lists, shows and redrives what sits in a buffer's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: ops::dlq::DlqCommand,
    },
    /// Replication health on one screen: buffers, DLQs, destinations, streams.
    Status(ops::status::StatusArgs),
    /// Checks each region's table and queues (stream, TTL, key schema, settings, buffers) and
    /// says what to change; exit 1 on any finding.
    Doctor(ops::doctor::DoctorArgs),
    /// Stops applying to a destination while its buffer keeps every change
    /// (e.g. `ferry pause --from us-east-1 --to eu-west-1 --note "restore, ops-123"`).
    Pause(ops::pause::PauseArgs),
    /// Lifts `ferry pause`: the next drain tick replays the backlog with its full fan-out.
    Resume(ops::pause::PauseArgs),
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Starts the sandbox and keeps it running until Ctrl-C.
    Up(UpArgs),
    /// Cuts a region of the running sandbox off from the others for a while.
    Outage {
        region: String,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

#[derive(Args)]
struct UpArgs {
    #[arg(long, default_value_t = 2)]
    regions: usize,
    /// Round trip added on the cross-region path.
    #[arg(long, default_value_t = 0)]
    rtt_ms: u64,
    /// Clock offset between neighbouring regions.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_skew_ms: i64,
    #[arg(long, default_value = "ferry-demo")]
    table: String,
}

#[derive(Args)]
struct DemoArgs {
    #[arg(long, default_value_t = 2)]
    regions: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of workload.
    #[arg(long, default_value_t = 45)]
    duration: u64,
    /// Application writes per second, all regions together.
    #[arg(long, default_value_t = 40)]
    rate: u64,
    /// How long the last region is cut off (starting a third of the way in).
    #[arg(long, default_value_t = 15)]
    outage_s: u64,
    #[arg(long, default_value_t = 0)]
    rtt_ms: u64,
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_skew_ms: i64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Where to draw the run's picture (SVG); default `<out>/demo.svg`.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The run's output folder.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    /// Give up waiting for convergence after this many seconds.
    #[arg(long, default_value_t = 90)]
    converge_timeout: u64,
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

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    ferry_cli::home::use_cache_when_installed();
    init_logs();
    let cli = Cli::parse();
    match cli.command {
        Command::Local {
            command: LocalCommand::Up(args),
        } => local_up(args).await,
        Command::Local {
            command: LocalCommand::Outage { region, seconds },
        } => match control::send(&format!("outage {region} {seconds}")).await {
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
        },
        Command::Demo(a) => run_demo(a).await,
        Command::Backfill(a) => ops::backfill::main(a).await,
        Command::Verify(a) => ops::verify::main(a).await,
        Command::Dlq { command } => ops::dlq::main(command).await,
        Command::Status(a) => ops::status::main(a).await,
        Command::Doctor(a) => ops::doctor::main(a).await,
        Command::Pause(a) => ops::pause::main(a, true).await,
        Command::Resume(a) => ops::pause::main(a, false).await,
    }
}

async fn run_demo(a: DemoArgs) -> ExitCode {
    let options = DemoOptions {
        regions: a.regions,
        seed: a.seed,
        duration_s: a.duration,
        rate: a.rate,
        outage_s: a.outage_s,
        rtt_ms: a.rtt_ms,
        clock_skew_ms: a.clock_skew_ms,
        json: a.json,
        plot: a.plot,
        out_dir: a.out,
        converge_timeout_s: a.converge_timeout,
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
        regions: a.regions,
        rtt_ms: a.rtt_ms,
        clock_skew_ms: a.clock_skew_ms,
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
        "ready. `ferry local outage <region> --seconds S` cuts a region off; Ctrl-C stops everything."
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
