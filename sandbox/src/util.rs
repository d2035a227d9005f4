//! Small helpers: ports, waiting, paths, locks, background runtimes.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Result, SandboxError};

/// The loopback address every sandbox server binds to.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How often [`wait_until`] and [`wait_for`] re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and releasing it, so another process can take it
/// before the caller binds it; callers that start external processes on it retry on failure.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((LOOPBACK, 0)))
        .map_err(|e| SandboxError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| SandboxError::io("reading the address of a probe socket", e))?;
    Ok(addr.port())
}

/// Polls `condition` every [`POLL_INTERVAL`] until it returns `true`; fails with
/// [`SandboxError::Timeout`] once `timeout` has passed (the condition is always checked at least
/// once, and once more at the deadline).
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, "condition", move || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `probe` every [`POLL_INTERVAL`] until it returns `Some(value)` and returns the value;
/// fails with [`SandboxError::Timeout`] (naming `what`) once `timeout` has passed.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(SandboxError::Timeout {
                what: what.to_string(),
                timeout,
                detail: String::new(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// The repository root: `$FERRY_REPO_ROOT`, or the parent of this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRY_REPO_ROOT") {
        return PathBuf::from(p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// Where sandbox child processes write their logs (`$TMPDIR/ferry-sandbox`).
pub fn log_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join("ferry-sandbox");
    std::fs::create_dir_all(&dir)
        .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

/// Checks that an endpoint such as `http://127.0.0.1:8000` points at loopback and returns its
/// socket address. `localhost` is accepted and mapped to 127.0.0.1.
pub fn loopback_addr(endpoint: &str) -> Result<SocketAddr> {
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| SandboxError::InvalidArgument(format!("{endpoint}: not an http:// URL")))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.replacen("localhost", "127.0.0.1", 1);
    let addr: SocketAddr = authority
        .parse()
        .map_err(|e| SandboxError::InvalidArgument(format!("{endpoint}: not host:port ({e})")))?;
    if !addr.ip().is_loopback() {
        return Err(SandboxError::InvalidArgument(format!(
            "{endpoint}: the sandbox only talks to loopback addresses"
        )));
    }
    Ok(addr)
}

/// An exclusive advisory lock on a file (`flock`), released on drop. Serialises one-time setup
/// (venv creation, downloads) between test threads and processes.
pub(crate) struct FileLock {
    file: std::fs::File,
}

impl FileLock {
    pub(crate) fn acquire(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| SandboxError::io(format!("creating {}", parent.display()), e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| SandboxError::io(format!("opening lock file {}", path.display()), e))?;
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(SandboxError::io(format!("locking {}", path.display()), err));
            }
        }
        Ok(FileLock { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking a descriptor we own; closing it would release the lock anyway.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Runs a setup command to completion, failing with its output on a non-zero status.
pub(crate) fn run_setup_command(cmd: &mut std::process::Command) -> Result<String> {
    let line = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SandboxError::ToolMissing {
                tool: format!("{:?}", cmd.get_program()),
                detail: e.to_string(),
            }
        } else {
            SandboxError::io(format!("running {line}"), e)
        }
    })?;
    if !out.status.success() {
        let mut detail = format!("{}", out.status);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        detail.push_str(&format!(
            "\nstdout: {}\nstderr: {}",
            tail(&stdout, 20),
            tail(&stderr, 20)
        ));
        return Err(SandboxError::Setup {
            command: line,
            detail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Finds an executable on `PATH`.
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A future driven by its own thread and single-threaded Tokio runtime, independent of the
/// caller's runtime. Dropping it (or calling [`BackgroundRuntime::shutdown`]) stops the future
/// and drops every task spawned on that runtime, which closes all of its sockets, then joins the
/// thread.
pub(crate) struct BackgroundRuntime {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundRuntime {
    /// Starts `make(...)` on a fresh thread. `make` runs inside the new runtime (so it may bind
    /// Tokio sockets) and returns either an early result for the caller plus the future to drive,
    /// or an error, which is handed back here.
    pub(crate) fn start<T, F, Fut>(name: &str, make: F) -> Result<(Self, T)>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<(T, Fut)> + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<T>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(SandboxError::io("building a Tokio runtime", e)));
                        return;
                    }
                };
                let fut = {
                    let _guard = rt.enter();
                    match make() {
                        Ok((early, fut)) => {
                            if ready_tx.send(Ok(early)).is_err() {
                                return;
                            }
                            fut
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    }
                };
                rt.block_on(async move {
                    tokio::select! {
                        _ = fut => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime drops every spawned task (and so every socket) first.
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .map_err(|e| SandboxError::io(format!("spawning thread {name}"), e))?;
        let early = match ready_rx.recv() {
            Ok(Ok(early)) => early,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(SandboxError::Io {
                    context: format!("starting thread {name}"),
                    source: std::io::Error::other("the thread ended before it was ready"),
                });
            }
        };
        Ok((
            BackgroundRuntime {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            early,
        ))
    }

    /// Stops the future, drops all its tasks and joins the thread.
    pub(crate) fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds a listening socket on `addr` with `SO_REUSEADDR` (so a port can be re-bound while old
/// connections sit in TIME_WAIT). Must run inside a Tokio runtime.
pub(crate) fn bind_reuse(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(loopback_addr("http://127.0.0.1:8000").is_ok());
        assert_eq!(
            loopback_addr("http://localhost:8000/x")
                .map(|a| a.port())
                .ok(),
            Some(8000)
        );
        assert!(loopback_addr("http://10.0.0.1:8000").is_err());
        assert!(loopback_addr("https://127.0.0.1:8000").is_err());
        assert!(loopback_addr("http://example.com:80").is_err());
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
