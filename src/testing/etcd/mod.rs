//! Running etcd clusters: the [`Etcd`] handle, its members' processes, and
//! crashing, freezing and restarting them.

mod builder;
mod etcdctl;
mod health;
mod metrics;
mod process;

use std::ffi::OsString;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;

pub use builder::EtcdBuilder;

use super::HarnessError;
use crate::rt::lock;
use process::{kill_and_reap, spawn_member, wait_proc_state};

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    /// Plain-HTTP metrics/health listener (only with client TLS).
    metrics_port: Option<u16>,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Full command line (without the binary), reused by `restart`.
    args: Vec<OsString>,
    /// The process; `None` once killed or reaped.
    child: Mutex<Option<Child>>,
}

/// What became of a member's process.
enum ProcessState {
    Running,
    Exited(ExitStatus),
    NotRunning,
}

/// A running etcd cluster of real `etcd` child processes (see the
/// [module documentation](crate::testing)).
///
/// Members are numbered `0..len()` and named `m0`, `m1`, ... Dropping an
/// `Etcd` kills (`SIGKILL`, which also ends paused members) and reaps every
/// member synchronously, then deletes the temporary directory holding the data
/// directories and logs. No process outlives it.
///
/// Methods taking a member index `i` panic if `i >= self.len()`.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    bin: PathBuf,
    tls: bool,
    /// Removed on drop, after the processes are dead (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts a single-member cluster: `EtcdBuilder::new(1).start()`.
    ///
    /// # Errors
    ///
    /// As [`EtcdBuilder::start`].
    pub async fn single() -> Result<Etcd, HarnessError> {
        EtcdBuilder::new(1).start().await
    }

    /// Starts an `n`-member cluster: `EtcdBuilder::new(n).start()`.
    ///
    /// # Errors
    ///
    /// As [`EtcdBuilder::start`] (including `n == 0`).
    pub async fn cluster(n: usize) -> Result<Etcd, HarnessError> {
        EtcdBuilder::new(n).start().await
    }

    /// Number of members (running or not).
    #[must_use]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always `false`: a started cluster has at least one member.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Client URLs of all members in member order, e.g.
    /// `["http://127.0.0.1:41234", ...]` (`https://` with client TLS).
    #[must_use]
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Client URL of member `i`, e.g. `"http://127.0.0.1:41234"`.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    #[must_use]
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.member(i).client_port)
    }

    /// Client address (`127.0.0.1:PORT`) of member `i`, e.g. as a
    /// [`Proxy`](crate::testing::Proxy) target.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    #[must_use]
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.member(i).client_port))
    }

    /// Kills member `i` with `SIGKILL` (like `kill -9`) and reaps it. Does
    /// nothing if it is not running. Works on paused members too.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = lock(&self.member(i).child).take() {
            kill_and_reap(&mut child);
        }
    }

    /// Starts member `i` again with the same name, data directory, ports and
    /// flags, then waits (up to 20 s) until it is healthy. If the member is
    /// still running it is killed first, so this also serves as
    /// "crash and restart".
    ///
    /// With a multi-member cluster, "healthy" requires a leader, i.e. a quorum
    /// of running members.
    ///
    /// # Errors
    ///
    /// If the process cannot be spawned, exits (e.g. because its port was
    /// taken meanwhile; ports are not changed on restart), or is not healthy
    /// within 20 s. The message includes the tail of the member's log.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.kill(i);
        let member = self.member(i);
        let child = spawn_member(&self.bin, member)?;
        *lock(&member.child) = Some(child);
        self.wait_healthy(i).await
    }

    /// Pauses member `i` with `SIGSTOP` (it keeps its sockets but answers
    /// nothing, like a frozen machine). Returns once the process is stopped
    /// (checked via `/proc` on Linux, bounded by 1 s).
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`, if the member is not running (killed or exited),
    /// or if the `kill` command cannot be run or fails.
    pub fn pause(&self, i: usize) {
        let pid = self.signal(i, "STOP");
        wait_proc_state(pid, true);
    }

    /// Resumes a member paused with [`Etcd::pause`] (`SIGCONT`). Harmless on
    /// a member that is not paused.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`, if the member is not running (killed or exited),
    /// or if the `kill` command cannot be run or fails.
    pub fn resume(&self, i: usize) {
        let pid = self.signal(i, "CONT");
        wait_proc_state(pid, false);
    }

    /// Whether member `i`'s process exists and has not exited (a paused
    /// member counts as running). Reaps the process if it exited.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    #[must_use]
    pub fn is_running(&self, i: usize) -> bool {
        matches!(self.process_state(i), ProcessState::Running)
    }

    /// Data directory of member `i` (`<tempdir>/m{i}`). Its parent is the
    /// cluster's temporary directory, which also holds the logs.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    #[must_use]
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.member(i).data_dir
    }

    /// The last `lines` lines of member `i`'s log file (`<tempdir>/m{i}.log`,
    /// which also receives the process's stdout and stderr). If the file
    /// cannot be read, a note saying so is returned instead.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    #[must_use]
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let path = &self.member(i).log_path;
        match fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("<cannot read {}: {e}>", path.display()),
        }
    }

    fn member(&self, i: usize) -> &Member {
        assert!(
            i < self.members.len(),
            "etcd member index {i} out of range (the cluster has {} members)",
            self.members.len()
        );
        &self.members[i]
    }

    fn process_state(&self, i: usize) -> ProcessState {
        let mut guard = lock(&self.member(i).child);
        let Some(child) = guard.as_mut() else {
            return ProcessState::NotRunning;
        };
        match child.try_wait() {
            Ok(None) | Err(_) => ProcessState::Running,
            Ok(Some(status)) => {
                *guard = None;
                ProcessState::Exited(status)
            }
        }
    }

    /// Sends `SIG<sig>` to member `i` with the `kill` command; returns the pid.
    fn signal(&self, i: usize, sig: &str) -> u32 {
        let member = self.member(i);
        // Holding the lock keeps the child un-reaped, so the pid cannot be reused.
        let mut guard = lock(&member.child);
        let Some(child) = guard.as_mut() else {
            panic!(
                "cannot send SIG{sig} to etcd member {}: it is not running",
                member.name
            );
        };
        if let Ok(Some(status)) = child.try_wait() {
            *guard = None;
            panic!(
                "cannot send SIG{sig} to etcd member {}: it exited ({status})",
                member.name
            );
        }
        let pid = child.id();
        let result = Command::new("kill")
            .args(["-s", sig, &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match result {
            Ok(status) if status.success() => pid,
            Ok(status) => panic!("`kill -s {sig} {pid}` failed: {status}"),
            Err(e) => panic!("cannot run `kill -s {sig} {pid}`: {e}"),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &self.members {
            if let Some(mut child) = lock(&member.child).take() {
                kill_and_reap(&mut child);
            }
        }
        // `self._dir` (a TempDir) is removed after this, when the fields drop.
    }
}
