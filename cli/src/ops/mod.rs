//! The operator tools (`ferry backfill`, `verify`, `dlq`, `conflicts`, `status`, `doctor`). Each verb is a module: its
//! arguments, a `run` that returns a report (what the tests call), and a `main` that prints the
//! report (human or `--json`) and maps it to an exit code. Decisions are pure functions with
//! unit tests; every AWS call goes through `ferry-aws`.

pub mod backfill;
pub mod conflicts;
pub mod dlq;
pub mod doctor;
pub mod doctor_checks;
pub mod doctor_iam;
pub mod iam_policy;
pub mod pause;
pub mod stack;
pub mod status;
pub mod target;
pub mod verify;
pub mod verify_key;
pub mod write_cap;

use ferry_aws::AwsError;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Exit codes a script can trust: 0 all good, 1 the answer is "no" (differences, pending keys,
/// an unhealthy buffer, an incomplete backfill), 2 the tool could not do its job (usage, access,
/// an endpoint down).
pub const EXIT_OK: u8 = 0;
pub const EXIT_FOUND: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Data(String),
}

impl OpsError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OpsError {
        let what = what.into();
        move |source| OpsError::Io { what, source }
    }
}

/// Prints the report (human or JSON) and turns the verb's result into its exit code.
pub fn finish<R: serde::Serialize>(
    verb: &str,
    json: bool,
    result: Result<R, OpsError>,
    render: impl FnOnce(&R) -> String,
    code: impl FnOnce(&R) -> u8,
) -> ExitCode {
    match result {
        Ok(report) => {
            if json {
                match serde_json::to_string(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("ferry {verb}: {e}");
                        return ExitCode::from(EXIT_ERROR);
                    }
                }
            } else {
                print!("{}", render(&report));
            }
            ExitCode::from(code(&report))
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
            }
            eprintln!("ferry {verb}: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A progress bar on stderr; hidden for `--json`, when stderr is not a terminal, and in tests.
pub fn progress(show: bool, len: Option<u64>, template: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if show && std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// Items per second, for reports.
pub fn rate(n: u64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 {
        (n as f64 / elapsed_s * 10.0).round() / 10.0
    } else {
        0.0
    }
}
