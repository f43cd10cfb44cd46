//! The etcd binary, and spawning, signalling and reaping its processes.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Member;
use crate::testing::HarnessError;

pub(super) fn kill_and_reap(child: &mut Child) {
    // SIGKILL also ends a SIGSTOPped process. Errors only mean "already dead".
    let _ = child.kill();
    let _ = child.wait();
}

/// An etcd tool the harness runs, and where it is looked for.
pub(super) struct Tool {
    /// The program's name, looked for on `PATH`.
    pub(super) name: &'static str,
    /// The environment variable that names it instead.
    pub(super) var: &'static str,
    /// The Debian package that has it.
    pub(super) package: &'static str,
}

/// The etcd server.
pub(super) const ETCD: Tool = Tool {
    name: "etcd",
    var: "ETCD_BIN",
    package: "etcd-server",
};

/// etcd's command-line client.
pub(super) const ETCDCTL: Tool = Tool {
    name: "etcdctl",
    var: "ETCDCTL_BIN",
    package: "etcd-client",
};

pub(super) fn missing_binary(tool: &Tool, detail: &str) -> HarnessError {
    let Tool { name, var, package } = tool;
    HarnessError::new(format!(
        "{name} binary not found: {detail}. The locker test harness needs a real {name}: \
         install {package} (e.g. `apt-get install {package}`) or set {var} to the path \
         of an {name} binary"
    ))
}

/// `tool.var` if set (a path, or a name looked for on `PATH`), else
/// `tool.name` in `beside` (the directory of the etcd in use, so that etcd
/// and etcdctl come from one release) if it is there, else on `PATH`.
pub(super) fn find_binary(tool: &Tool, beside: Option<&Path>) -> Result<PathBuf, HarnessError> {
    let var = tool.var;
    if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(&value);
        if path.components().count() == 1 {
            if let Some(found) = search_path(&value) {
                return Ok(found);
            }
        } else if path.is_file() {
            return Ok(path);
        }
        return Err(missing_binary(
            tool,
            &format!("{var}={} is not an existing file", path.display()),
        ));
    }
    let name = OsString::from(tool.name);
    beside
        .map(|dir| dir.join(&name))
        .filter(|path| path.is_file())
        .or_else(|| search_path(&name))
        .ok_or_else(|| {
            let name = tool.name;
            missing_binary(
                tool,
                &format!("{var} is not set and there is no `{name}` on PATH"),
            )
        })
}

fn search_path(name: &OsString) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

pub(super) fn spawn_member(bin: &Path, member: &Member) -> Result<Child, HarnessError> {
    let open_log = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .map_err(|e| {
                HarnessError::new(format!(
                    "cannot open log file {}: {e}",
                    member.log_path.display()
                ))
            })
    };
    let (stdout, stderr) = (open_log()?, open_log()?);
    Command::new(bin)
        .args(&member.args)
        .env_remove(ETCD.var)
        .env_remove(ETCDCTL.var)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                missing_binary(&ETCD, &format!("cannot execute {}: {e}", bin.display()))
            } else {
                HarnessError::new(format!(
                    "cannot spawn etcd member {} ({}): {e}",
                    member.name,
                    bin.display()
                ))
            }
        })
}

/// Waits (bounded by 1 s) until `/proc/<pid>/stat` shows the process stopped
/// (`stopped == true`) or not stopped. Returns at once where `/proc` is absent.
pub(super) fn wait_proc_state(pid: u32, stopped: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return;
        };
        // The state is the first field after the parenthesised command name.
        let state = stat
            .rfind(')')
            .and_then(|p| stat[p + 1..].split_whitespace().next())
            .unwrap_or("");
        let is_stopped = state == "T" || state == "t";
        if is_stopped == stopped || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `n` distinct free loopback ports: all listeners stay open until every port
/// is known, so no port is handed out twice.
pub(super) fn free_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    let listeners = (0..n)
        .map(|_| StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| HarnessError::new(format!("cannot bind a free port on 127.0.0.1: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| HarnessError::new(format!("cannot read a listener's port: {e}")))
}

pub(super) fn unique_cluster_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "locker-test-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(super) fn path_flag(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push("=");
    arg.push(path);
    arg
}
