//! Driving the `locker` binary (and etcdctl) as processes, for the CLI
//! suites (`cli.rs`, `cli_elect.rs`). Each suite uses part of it.
#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locker::testing::Etcd;

pub mod tree;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

pub const LOCKER: &str = env!("CARGO_BIN_EXE_locker");

/// Limit for a step that should take well under a second.
pub const SHORT: Duration = Duration::from_secs(15);

/// A name no other test uses.
pub fn unique(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "cli/{test}/{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A single-member etcd for one test.
pub async fn etcd() -> Etcd {
    match Etcd::single().await {
        Ok(e) => e,
        Err(e) => panic!("cannot start etcd for the test: {e}"),
    }
}

/// Environment variables that would change how locker (or etcdctl) behaves.
const ENV_TO_CLEAR: &[&str] = &[
    "LOCKER_ENDPOINTS",
    "ETCDCTL_ENDPOINTS",
    "LOCKER_CONNECT_TIMEOUT",
    "LOCKER_REQUEST_TIMEOUT",
    "LOCKER_USER",
    "LOCKER_PASSWORD",
    "LOCKER_CACERT_FILE",
    "LOCKER_CERT_FILE",
    "LOCKER_KEY_FILE",
    "LOCKER_WIRE_LOG",
    "LOCKER_KEY",
    "LOCKER_FENCING_TOKEN",
    "ETCD_LOCK_KEY",
    "ETCD_LOCK_REV",
];

/// Prepares `c` as every process of these suites starts: a clean
/// environment, stdin closed, killed when dropped, in a process group of
/// its own (which [`Proc`] kills as a whole), and the default action for
/// SIGINT, SIGTERM and SIGHUP.
///
/// The last matters: a process inherits ignored signals, and a test run
/// started in the background of a script (`cargo test &`, as CI runners and
/// test loops may) has SIGINT ignored; locker then keeps ignoring it, as it
/// should, and a test that stops it with SIGINT would wait in vain.
pub fn prepare(c: &mut Command) {
    for v in ENV_TO_CLEAR {
        c.env_remove(v);
    }
    c.stdin(Stdio::null()).process_group(0).kill_on_drop(true);
    // SAFETY: between fork and exec only `signal`, which is
    // async-signal-safe, is called.
    unsafe {
        c.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// `locker --endpoints ENDPOINTS ARGS`, prepared.
pub fn locker(endpoints: &str, args: &[&str]) -> Command {
    let mut c = Command::new(LOCKER);
    prepare(&mut c);
    c.arg("--endpoints").arg(endpoints).args(args);
    c
}

pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// What the kernel says of process `pid`: its state (`R`, `S`, `Z` for
/// exited but not yet reaped...) and the kernel function it waits in, for a
/// failure message.
pub fn proc_state(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|p| stat[p + 1..].split_whitespace().next())
        .unwrap_or("gone");
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
    format!("state {state}, wchan {wchan:?}, {threads} threads")
}

pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to its end, within `limit`.
pub async fn run(cmd: Command, limit: Duration) -> Run {
    let mut p = Proc::spawn(cmd);
    let code = p.exit(limit).await;
    let mut stdout = p.stdout().join("\n");
    if !stdout.is_empty() {
        stdout.push('\n');
    }
    Run {
        code,
        stdout,
        stderr: p.stderr(),
    }
}

/// Asserts that stderr holds exactly one line, `locker: ...`.
pub fn assert_one_error_line(r: &Run) {
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr: {r:?}");
    assert!(lines[0].starts_with("locker: "), "no prefix: {r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
}

/// A running process (the leader of its own process group) whose stdout and
/// stderr are collected line by line. Dropping it kills the whole group.
pub struct Proc {
    child: Child,
    pub pid: i32,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(reader: impl AsyncRead + Unpin + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            into.lock().unwrap().push(line);
        }
    });
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
        let pid = i32::try_from(child.id().expect("a pid")).expect("a pid fits i32");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        Proc {
            child,
            pid,
            stdout,
            stderr,
        }
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until stdout has more than `skip` lines and one after the first
    /// `skip` satisfies `pred`; returns its index and text.
    pub async fn line_after(
        &self,
        skip: usize,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (usize, String) {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.stdout();
            if let Some((i, l)) = lines.iter().enumerate().skip(skip).find(|(_, l)| pred(l)) {
                return (i, l.clone());
            }
            assert!(
                Instant::now() < deadline,
                "no stdout line {what} within {limit:?}; stdout: {lines:?}; stderr: {:?}",
                self.stderr()
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a stdout line satisfies `pred`; returns it.
    pub async fn line(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.line_after(0, what, limit, pred).await.1
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid);
    }

    /// Waits for the process to exit, within `limit`; returns its exit code.
    pub async fn exit(&mut self, limit: Duration) -> i32 {
        match timeout(limit, self.child.wait()).await {
            Ok(status) => {
                let code = exit_code(status.expect("wait"));
                // Let the readers drain what is left in the pipes.
                sleep(Duration::from_millis(50)).await;
                code
            }
            Err(_) => panic!(
                "process {} did not exit within {limit:?} ({}); stdout: {:?}; stderr: {:?}",
                self.pid,
                proc_state(self.pid),
                self.stdout(),
                self.stderr()
            ),
        }
    }

    /// Waits for the process to exit, however long; returns its exit code.
    pub async fn wait_code(&mut self) -> i32 {
        exit_code(self.child.wait().await.expect("wait"))
    }

    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: as above. The group id is the pid of a process this test
        // started; what is left of the group (a command orphaned by a
        // `kill -9`ed locker, say) goes with it. SIGKILL also ends a stopped
        // process.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
        }
    }
}
