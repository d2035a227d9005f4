use clap::{Parser, Subcommand};
use ferry_cli::ops;
use std::process::ExitCode;

#[cfg(feature = "local")]
mod local_cmd;

/// Ferry: active/active cross-region replication for DynamoDB.
#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about,
    after_help = "Durations take a unit: 250ms, 30s, 5m, 1h. `--regions` lists region names \
                  (us-east-1,eu-west-1); `--region-count` counts the regions of `ferry local` \
                  and `ferry demo` (the default `local` feature).\n\
                  Examples:\n  \
                  ferry status --stack ferry-orders --regions us-east-1,eu-west-1\n  \
                  ferry doctor --stack ferry-orders --regions us-east-1,eu-west-1"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A multi-region Ferry on this machine (emulated regions, real handlers).
    #[cfg(feature = "local")]
    Local {
        #[command(subcommand)]
        command: local_cmd::LocalCommand,
    },
    /// Runs the demo: live replication between emulated regions, an outage, the replay, a report.
    #[cfg(feature = "local")]
    #[command(
        after_help = "Example: ferry demo --region-count 3 --duration 30s --outage 10s --rtt 60ms"
    )]
    Demo(local_cmd::DemoArgs),
    /// Bootstraps or re-seeds regions from one: stamps unversioned items, applies every item (LWW).
    #[command(
        after_help = "Example: ferry backfill --stack ferry-orders --from us-east-1 --to eu-west-1"
    )]
    Backfill(ops::backfill::BackfillArgs),
    /// Compares regions item by item (exit 1 on any difference); --repair fixes them (LWW).
    #[command(
        after_help = "Example: ferry verify --stack ferry-orders --regions us-east-1,eu-west-1"
    )]
    Verify(ops::verify::VerifyArgs),
    /// Lists, shows and redrives what sits in a buffer's dead-letter queue.
    #[command(
        after_help = "Example: ferry dlq list --stack ferry-orders --from us-east-1 --to eu-west-1"
    )]
    Dlq {
        #[command(subcommand)]
        command: ops::dlq::DlqCommand,
    },
    /// Lists, shows and re-applies the conflicts the drains resolved (each region's conflict log).
    #[command(
        after_help = "Example: ferry conflicts list --stack ferry-orders --region us-east-1 --since 1h"
    )]
    Conflicts {
        #[command(subcommand)]
        command: ops::conflicts::ConflictsCommand,
    },
    /// Replication health on one screen: buffers, DLQs, destinations, streams.
    #[command(
        after_help = "Example: ferry status --stack ferry-orders --regions us-east-1,eu-west-1"
    )]
    Status(ops::status::StatusArgs),
    /// Checks each region's table and queues (stream, TTL, key schema, settings, buffers) and
    /// says what to change; exit 1 on any finding.
    #[command(
        after_help = "Example: ferry doctor --stack ferry-orders --regions us-east-1,eu-west-1"
    )]
    Doctor(ops::doctor::DoctorArgs),
    /// Stops applying to a destination while its buffer keeps every change
    /// (e.g. `ferry pause --from us-east-1 --to eu-west-1 --note "restore, ops-123"`).
    Pause(ops::pause::PauseArgs),
    /// Lifts `ferry pause`: the next drain tick replays the backlog with its full fan-out.
    Resume(ops::pause::PauseArgs),
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
    #[cfg(feature = "local")]
    ferry_cli::home::use_cache_when_installed();
    init_logs();
    let cli = Cli::parse();
    match cli.command {
        #[cfg(feature = "local")]
        Command::Local { command } => local_cmd::main(command).await,
        #[cfg(feature = "local")]
        Command::Demo(a) => local_cmd::run_demo(a).await,
        Command::Backfill(a) => ops::backfill::main(a).await,
        Command::Verify(a) => ops::verify::main(a).await,
        Command::Dlq { command } => ops::dlq::main(command).await,
        Command::Conflicts { command } => ops::conflicts::main(command).await,
        Command::Status(a) => ops::status::main(a).await,
        Command::Doctor(a) => ops::doctor::main(a).await,
        Command::Pause(a) => ops::pause::main(a, true).await,
        Command::Resume(a) => ops::pause::main(a, false).await,
    }
}
