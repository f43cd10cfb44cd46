//! The time under the lock: the command run with the lock's key and token,
//! its signals passed on, and stopped if the lock is lost; or, without a
//! command, nothing until a signal.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::time::Duration;

use crate::guard::Guard;
use tokio::process::Child;

use crate::code;
use crate::output::{lost_text, print_line, say};
use crate::signals::{Signals, send_signal};

/// How the time under the lock ended.
pub(crate) enum Outcome {
    /// Finished normally: release, then exit with this code.
    Done(u8),
    /// The lock was lost (already reported): clean up, exit 78.
    Lost,
}

/// Without a command: print the key and token, then hold until a signal or loss.
pub(crate) async fn hold_until_signal(guard: &Guard, signals: &mut Signals) -> Outcome {
    // A reader that went away is no reason to drop the lock.
    let _ = print_line(&format!(
        "key={} fencing_token={} lease={}",
        guard.key(),
        guard.fencing_token(),
        guard.lease()
    ));
    tokio::select! {
        _ = signals.recv() => Outcome::Done(code::OK),
        reason = guard.lost() => {
            say(&format!("lock lost: key {}: {}", guard.key(), lost_text(reason)));
            Outcome::Lost
        }
    }
}

/// Runs the command under the lock; forwards signals; on loss, stops it.
pub(crate) async fn run_command(
    guard: &Guard,
    cmd: &[OsString],
    kill_after: Duration,
    signals: &mut Signals,
) -> Outcome {
    let mut child = match spawn(guard, cmd) {
        Ok(child) => child,
        Err(exit) => return Outcome::Done(exit),
    };
    let reason = tokio::select! {
        exit = wait_forwarding(&mut child, signals) => return Outcome::Done(exit),
        reason = guard.lost() => reason,
    };
    say(&format!(
        "lock lost: key {}: {}; sending SIGTERM to the command (SIGKILL in {:?})",
        guard.key(),
        lost_text(reason),
        kill_after
    ));
    stop(&mut child, kill_after, signals).await;
    Outcome::Lost
}

/// Starts the command with the lock's key and fencing token in its
/// environment; if it cannot start, says why and returns 126 or 127.
fn spawn(guard: &Guard, cmd: &[OsString]) -> Result<Child, u8> {
    let token = guard.fencing_token().to_string();
    let mut command = tokio::process::Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .env("LOCKER_KEY", guard.key())
        .env("LOCKER_FENCING_TOKEN", &token)
        .env("ETCD_LOCK_KEY", guard.key())
        .env("ETCD_LOCK_REV", &token);
    command.spawn().map_err(|e| {
        let program = cmd[0].to_string_lossy();
        say(&format!("cannot run {program:?}: {e}"));
        if e.kind() == std::io::ErrorKind::NotFound {
            code::NOT_FOUND
        } else {
            code::CANNOT_EXECUTE
        }
    })
}

/// Waits for the command to exit, passing on the signals locker receives;
/// returns its exit code.
///
/// Cancel safe: the command keeps running.
async fn wait_forwarding(child: &mut Child, signals: &mut Signals) -> u8 {
    let pid = child.id();
    loop {
        tokio::select! {
            status = child.wait() => return exit_code(status),
            sig = signals.recv() => send_signal(pid, sig),
        }
    }
}

/// After a loss: SIGTERM to the command, SIGKILL if it has not exited
/// after `kill_after`; returns once it has exited.
async fn stop(child: &mut Child, kill_after: Duration, signals: &mut Signals) {
    let pid = child.id();
    send_signal(pid, libc::SIGTERM);
    let exited = tokio::time::timeout(kill_after, wait_forwarding(child, signals)).await;
    if exited.is_err() {
        say("the command did not exit after SIGTERM; sending SIGKILL");
        send_signal(pid, libc::SIGKILL);
        wait_forwarding(child, signals).await;
    }
}

/// The command's exit code, as locker's: its own, or 128+N when killed by
/// signal N.
fn exit_code(status: std::io::Result<ExitStatus>) -> u8 {
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            say(&format!("cannot wait for the command: {e}"));
            return code::FAILURE;
        }
    };
    if let Some(c) = status.code() {
        return (c & 0xff) as u8;
    }
    match status.signal() {
        Some(n) => code::SIGNAL_BASE.saturating_add(u8::try_from(n).unwrap_or(127)),
        None => code::FAILURE,
    }
}
