//! Child processes that die with us.
//!
//! Every child is started in its own process group with `PR_SET_PDEATHSIG = SIGKILL`, so the
//! kernel kills it when this process dies, even by `SIGKILL`. Because that signal is tied to the
//! *thread* that forked the child, children are forked from one spawner thread that lives as long
//! as the process, never from a short-lived (test or blocking-pool) thread. Dropping a
//! [`ManagedChild`] kills its whole process group and reaps it.

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Result, SandboxError};
use crate::util::{free_port, log_dir, tail};

type SpawnReply = mpsc::Sender<std::io::Result<Child>>;

fn spawner() -> &'static Mutex<mpsc::Sender<(Command, SpawnReply)>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<(Command, SpawnReply)>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, SpawnReply)>();
        // The sender lives in a static, so this thread (and with it the children's death signal)
        // lasts until the process ends.
        let spawned = std::thread::Builder::new()
            .name("ferry-sandbox-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            tracing::error!("could not start the sandbox spawner thread: {e}");
        }
        Mutex::new(tx)
    })
}

/// Prepares `cmd` so that the child gets its own process group and dies with this process.
fn arm(cmd: &mut Command) {
    // SAFETY: getpid is async-signal-safe and called in the parent.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only calls async-signal-safe functions (setpgid, prctl, getppid, _exit)
    // and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// A child process that is killed (with its process group) and reaped on drop.
#[derive(Debug)]
pub struct ManagedChild {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Set once `try_wait` has reaped the child: its pid (and group id) may then be reused.
    reaped: bool,
}

impl ManagedChild {
    /// Spawns `cmd` with stdout and stderr going to a log file named after `name` in
    /// [`crate::util::log_dir`].
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self> {
        let dir = log_dir()?;
        let log = dir.join(format!(
            "{}-{}-{}.log",
            name,
            std::process::id(),
            rand::random::<u32>()
        ));
        let out = std::fs::File::create(&log)
            .map_err(|e| SandboxError::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| SandboxError::io(format!("duplicating {}", log.display()), e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        arm(&mut cmd);
        let program = format!("{:?}", cmd.get_program());
        let (reply_tx, reply_rx) = mpsc::channel();
        {
            let sender = spawner().lock().map_err(|_| SandboxError::Io {
                context: format!("spawning {name}"),
                source: std::io::Error::other("the spawner lock is poisoned"),
            })?;
            sender.send((cmd, reply_tx)).map_err(|_| SandboxError::Io {
                context: format!("spawning {name}"),
                source: std::io::Error::other("the spawner thread is gone"),
            })?;
        }
        let spawned = reply_rx.recv().map_err(|_| SandboxError::Io {
            context: format!("spawning {name}"),
            source: std::io::Error::other("the spawner thread did not answer"),
        })?;
        let child = spawned.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SandboxError::ToolMissing {
                    tool: program.clone(),
                    detail: e.to_string(),
                }
            } else {
                SandboxError::io(format!("spawning {name} ({program})"), e)
            }
        })?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "spawned child process");
        Ok(ManagedChild {
            name: name.to_string(),
            child: Some(child),
            log,
            reaped: false,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where the child's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the child's output.
    pub fn log_tail(&self, lines: usize) -> String {
        std::fs::read(&self.log)
            .map(|bytes| tail(&String::from_utf8_lossy(&bytes), lines))
            .unwrap_or_default()
    }

    /// The exit status if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if status.is_some() {
            self.reaped = true;
        }
        status
    }

    /// An error describing an early exit, or `None` while the child runs.
    pub fn exit_error(&mut self) -> Option<SandboxError> {
        let status = self.exited()?;
        Some(SandboxError::ProcessExited {
            name: self.name.clone(),
            status: status.to_string(),
            log: self.log.clone(),
            log_tail: self.log_tail(30),
        })
    }

    /// Waits until `answers` says the child's server answers, probing every `interval`: fails
    /// as soon as the child exits, and after `timeout` (naming `what` and the log's tail).
    pub(crate) async fn wait_answering<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        interval: Duration,
        mut answers: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.exit_error() {
                return Err(e);
            }
            if answers().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Timeout {
                    what: format!("{what} answering"),
                    timeout,
                    detail: format!("; log tail:\n{}", self.log_tail(30)),
                });
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Kills the child's process group with SIGKILL and reaps the child. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = libc::pid_t::try_from(child.id())
                .ok()
                .filter(|_| !self.reaped);
            if let Some(pid) = pgid {
                // SAFETY: signalling the process group we created for this child (pgid == pid).
                unsafe {
                    libc::killpg(pid, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            tracing::debug!(name = %self.name, "child process stopped");
        }
    }
}

/// Runs a blocking set-up step (an install, a download) off the async runtime; `what` names it
/// if the step cannot be run.
pub(crate) async fn set_up<T: Send + 'static>(
    what: &str,
    step: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(step)
        .await
        .map_err(|e| SandboxError::Io {
            context: what.into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// Starts a server child with `start_on(port)` on a free loopback port. The port can be taken
/// between the probe and the child's bind, which shows as the child exiting: that is tried
/// again on another port, three times in all.
pub(crate) async fn start_on_free_port<T, F, Fut>(mut start_on: F) -> Result<T>
where
    F: FnMut(u16) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut last_error = None;
    for _ in 0..3 {
        match start_on(free_port()?).await {
            Ok(server) => return Ok(server),
            Err(e @ SandboxError::ProcessExited { .. }) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| SandboxError::InvalidArgument("no attempt".into())))
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        self.kill();
    }
}
