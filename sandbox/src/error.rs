//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting, driving or stopping the sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A local I/O operation failed (binding a socket, spawning a process, writing a file, ...).
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the sandbox was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The embedded dynoxide engine reported an error.
    #[error("dynoxide: {0}")]
    Dynoxide(String),

    /// Something did not happen within the time allowed.
    #[error("{what} did not happen within {timeout:?}{detail}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long it was waited for.
        timeout: Duration,
        /// Extra context (for instance the tail of a child process's log), possibly empty.
        detail: String,
    },

    /// A child process (moto, DynamoDB Local) exited while it should have been running.
    #[error("{name} exited early ({status}); log {log}: {log_tail}")]
    ProcessExited {
        /// The process's name.
        name: String,
        /// Its exit status, as text.
        status: String,
        /// Where its output went.
        log: PathBuf,
        /// The last lines of that output.
        log_tail: String,
    },

    /// A tool the sandbox needs is not installed (java, python3, npm, ...).
    #[error("required tool `{tool}` is not available: {detail}")]
    ToolMissing {
        /// The tool's name.
        tool: String,
        /// Why it is considered missing.
        detail: String,
    },

    /// A setup command (venv creation, pip install, npm pack, javac, ...) failed.
    #[error("setup command `{command}` failed: {detail}")]
    Setup {
        /// The command line.
        command: String,
        /// Its status and output.
        detail: String,
    },

    /// An HTTP exchange failed at the transport level (connection refused, reset, timed out, ...).
    #[error("HTTP request to {url} failed: {detail}")]
    Http {
        /// Where the request went.
        url: String,
        /// What happened.
        detail: String,
    },

    /// A service answered with an error response.
    #[error("{operation} returned HTTP {status}: {error_type}: {message}")]
    Service {
        /// The operation (for instance `GetRecords`).
        operation: String,
        /// The HTTP status code.
        status: u16,
        /// The error's `__type` (possibly with its namespace prefix).
        error_type: String,
        /// The error message.
        message: String,
    },

    /// An AWS SDK call failed; `detail` holds the full error chain.
    #[error("AWS SDK call {operation} failed: {detail}")]
    Sdk {
        /// The operation.
        operation: String,
        /// The error, with its causes.
        detail: String,
    },

    /// Data from an emulator could not be decoded.
    #[error("could not decode {what}: {detail}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// Why it failed.
        detail: String,
    },

    /// The caller passed something the sandbox refuses (for instance a non-loopback address).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sdk<E>(operation: &str, err: E) -> Self
    where
        E: std::error::Error,
    {
        SandboxError::Sdk {
            operation: operation.to_string(),
            detail: aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string(),
        }
    }

    /// True for transport-level failures (the endpoint is down, refused, reset or timed out),
    /// as opposed to an answer from the service.
    pub fn is_transport(&self) -> bool {
        match self {
            SandboxError::Http { .. } | SandboxError::Timeout { .. } => true,
            SandboxError::Sdk { detail, .. } => {
                let d = detail.to_ascii_lowercase();
                d.contains("dispatch failure")
                    || d.contains("io error")
                    || d.contains("timeout")
                    || d.contains("timed out")
                    || d.contains("connection")
            }
            _ => false,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;
