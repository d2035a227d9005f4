//! # ferry-sandbox
//!
//! The loopback emulator harness shared by Ferry's integration tests, the end-to-end suite and
//! `ferry local up`. Everything listens on `127.0.0.1` only, and everything it starts it stops:
//! in-process servers stop when their handle is dropped, child processes are killed on drop and
//! also die with this process (`PR_SET_PDEATHSIG`).
//!
//! - [`DynamoRegion`]: one embedded dynoxide server per region (DynamoDB + Streams), with a
//!   skewed clock, clean outages ([`DynamoRegion::stop`] / [`DynamoRegion::resume`] on the same
//!   port with the same data) and on-demand TTL sweeps.
//! - [`Moto`]: `moto_server` from the repository's venv (SQS, STS); installs moto into the venv
//!   if it is missing.
//! - [`FaultProxy`]: an HTTP proxy with runtime-switchable [`FaultMode`]s (pass, refuse,
//!   black-hole, delay, throttle) and, in front of moto, SQS's own faults ([`SqsFaults`]:
//!   per-entry batch failures, invalid receipt handles, SQS throttling, slow answers).
//! - [`StreamPoller`]: reads a stream and hands out Lambda's exact
//!   [`EventRecord`](aws_lambda_events::event::dynamodb::EventRecord)s.
//! - [`DynamoDbLocal`]: Amazon's DynamoDB Local (from the npm package
//!   `amplify-dynamodb-simulator`), bound to loopback, for fidelity checks.
//! - Helpers: [`free_port`], [`wait_until`], [`wait_for`], SDK client builders
//!   ([`dynamodb_client`], [`sdk_config`], ...), [`create_table`].
//!
//! One-time downloads (moto into `<repo>/.venv`, DynamoDB Local into
//! `<repo>/.tools/dynamodb-local`) are done on first use and serialised by lock files;
//! `FERRY_VENV`, `FERRY_TOOLS_DIR`, `FERRY_REPO_ROOT` and `FERRY_PYTHON` override the locations.
//! Child process output goes to `$TMPDIR/ferry-sandbox/*.log`.

#![warn(missing_docs)]

mod clients;
mod ddb_local;
mod dynamo;
mod error;
mod http;
mod moto;
mod poller;
mod process;
mod proxy;
mod sqs_proxy;
mod util;

pub use clients::{
    dynamodb_client, dynamodb_client_with, sdk_config, sqs_client_with, streams_client_with,
    test_credentials, ClientOptions,
};
pub use ddb_local::{
    dynamodb_local_dir, ensure_dynamodb_local, DynamoDbLocal, DynamoDbLocalInstall,
    DYNAMODB_LOCAL_NPM_PACKAGE, DYNAMODB_LOCAL_START_TIMEOUT,
};
pub use dynamo::{
    count_items, create_destination_table, create_table, stream_arn_of, DynamoRegion, SkewedClock,
    TableInfo, TableSpec,
};
pub use error::{Result, SandboxError};
pub use moto::{ensure_moto_installed, venv_dir, Moto, MOTO_REQUIREMENT, MOTO_START_TIMEOUT};
pub use poller::{resend_from, StartingPosition, StreamPoller};
pub use process::ManagedChild;
pub use proxy::{FaultMode, FaultProxy, ProxyStats, THROTTLE_BODY};
pub use sqs_proxy::{Slow, SqsAction, SqsFaults, INJECTED_ENTRY_CODE, SQS_THROTTLE_BODY};
pub use util::{
    free_port, log_dir, loopback_addr, repo_root, wait_for, wait_until, LOOPBACK, POLL_INTERVAL,
};

/// Re-exported so users can name the Lambda event type without another dependency line.
pub use aws_lambda_events::event::dynamodb::EventRecord;
