//! moto's server (`moto_server`) from the repository's Python venv: SQS and STS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;

use crate::clients::{sdk_config, sqs_client_with, ClientOptions};
use crate::error::{Result, SandboxError};
use crate::http::RawClient;
use crate::process::{set_up, start_on_free_port, ManagedChild};
use crate::util::{is_executable, repo_root, run_setup_command, FileLock};

/// The pip requirement installed into the venv when `moto_server` is missing.
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.*";

/// How long [`Moto::start`] waits for the server to answer.
pub const MOTO_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The Python venv holding `moto_server`: `$FERRY_VENV`, or `<repo>/.venv`.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("FERRY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"))
}

/// Makes sure `<venv>/bin/moto_server` exists: if it does not, creates the venv with
/// `$FERRY_PYTHON` (default `python3`) `-m venv` and runs `pip install "moto[server]==5.*"` in it
/// (about 35 s, once; `make` does the same up front). Serialised across threads and processes
/// by a lock file inside the venv directory. Blocking. Returns the path of `moto_server`.
pub fn ensure_moto_installed() -> Result<PathBuf> {
    let venv = venv_dir();
    let moto = venv.join("bin").join("moto_server");
    if is_executable(&moto) {
        return Ok(moto);
    }
    // The lock lives inside the (possibly still empty) venv directory, which is gitignored;
    // `python -m venv` accepts an existing directory.
    let _lock = FileLock::acquire(&venv.join(".ferry-setup.lock"))?;
    if is_executable(&moto) {
        return Ok(moto);
    }
    let python_bin = venv.join("bin").join("python");
    if !is_executable(&python_bin) {
        let python = std::env::var("FERRY_PYTHON").unwrap_or_else(|_| "python3".to_string());
        tracing::info!(venv = %venv.display(), "creating the Python venv for moto");
        run_setup_command(Command::new(&python).arg("-m").arg("venv").arg(&venv))?;
    }
    tracing::info!("installing {MOTO_REQUIREMENT} into {}", venv.display());
    run_setup_command(
        Command::new(&python_bin)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(MOTO_REQUIREMENT),
    )?;
    if is_executable(&moto) {
        Ok(moto)
    } else {
        Err(SandboxError::Setup {
            command: format!("pip install {MOTO_REQUIREMENT}"),
            detail: format!("{} is still missing", moto.display()),
        })
    }
}

/// A running `moto_server -H 127.0.0.1 -p PORT`, killed on drop.
#[derive(Debug)]
pub struct Moto {
    port: u16,
    child: ManagedChild,
    http: RawClient,
}

impl Moto {
    /// Installs moto if needed ([`ensure_moto_installed`]), starts it on a free loopback port and
    /// waits until it answers (at most [`MOTO_START_TIMEOUT`]).
    pub async fn start() -> Result<Self> {
        let moto_bin = set_up("installing moto", ensure_moto_installed).await?;
        start_on_free_port(|port| Self::start_on(&moto_bin, port)).await
    }

    /// Like [`start`](Self::start), on the fixed port `127.0.0.1:port` (for the emulators a local
    /// `cargo lambda watch` is configured for).
    pub async fn start_on_port(port: u16) -> Result<Self> {
        let moto_bin = set_up("installing moto", ensure_moto_installed).await?;
        Self::start_on(&moto_bin, port).await
    }

    async fn start_on(moto_bin: &Path, port: u16) -> Result<Self> {
        let mut cmd = Command::new(moto_bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            // Never let a developer's real credentials or endpoints leak in.
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
        let child = ManagedChild::spawn("moto", cmd)?;
        let mut moto = Moto {
            port,
            child,
            http: RawClient::new(),
        };
        let http = &moto.http;
        let probe_url = format!("{}/moto-api/data.json", moto.endpoint());
        moto.child
            .wait_answering(
                "moto",
                MOTO_START_TIMEOUT,
                Duration::from_millis(50),
                || async {
                    let probe = http
                        .send(
                            hyper::Method::GET,
                            &probe_url,
                            &[],
                            Bytes::new(),
                            Duration::from_secs(2),
                        )
                        .await;
                    matches!(probe, Ok(ref r) if r.status == 200)
                },
            )
            .await?;
        tracing::info!(endpoint = %moto.endpoint(), "moto started");
        Ok(moto)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where moto's output goes.
    pub fn log_path(&self) -> &Path {
        self.child.log_path()
    }

    /// Wipes all of moto's state (`POST /moto-api/reset`).
    pub async fn reset(&self) -> Result<()> {
        let url = format!("{}/moto-api/reset", self.endpoint());
        let response = self
            .http
            .send(
                hyper::Method::POST,
                &url,
                &[],
                Bytes::new(),
                Duration::from_secs(10),
            )
            .await?;
        if response.status == 200 {
            Ok(())
        } else {
            Err(SandboxError::Service {
                operation: "moto reset".into(),
                status: response.status,
                error_type: "unexpected status".into(),
                message: String::from_utf8_lossy(&response.body)
                    .chars()
                    .take(300)
                    .collect(),
            })
        }
    }

    /// An SQS client for `region` with [`ClientOptions::default`].
    pub fn sqs_client(&self, region: &str) -> aws_sdk_sqs::Client {
        self.sqs_client_with(region, &ClientOptions::default())
    }

    /// An SQS client for `region` with the given options.
    pub fn sqs_client_with(&self, region: &str, options: &ClientOptions) -> aws_sdk_sqs::Client {
        sqs_client_with(&self.endpoint(), region, options)
    }

    /// An `SdkConfig` pointed at moto, for any other client (for instance STS).
    pub fn sdk_config(&self, region: &str) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint(), region, &ClientOptions::default())
    }

    /// Kills moto now (also done on drop).
    pub fn stop(&mut self) {
        self.child.kill();
    }
}
