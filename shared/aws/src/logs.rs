//! How both Lambda functions log: one JSON object per line on stdout (CloudWatch Logs), event
//! fields at the top level so Logs Insights can query them, levels from `RUST_LOG` (default
//! `info`).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Installs the Lambda log format. `RUST_LOG` is read as a `Targets` list
/// (`info,ferry_drain=debug`): the full `EnvFilter` syntax would bring regex into the bootstrap.
/// A value that does not parse falls back to `info` rather than silencing the function.
pub fn init_lambda_logs() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_target(false)
                .with_ansi(false)
                .with_filter(filter),
        )
        .try_init();
}
