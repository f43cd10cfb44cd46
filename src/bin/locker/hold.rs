//! `lock` and `try`: take the lock on a session's lease, hold it (running the
//! command, or until a signal), then release it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::time::Duration;

use locker::{Client, Error, LockGuard, Session, TryLock};
use tokio::time::Instant;

use crate::args::HoldArgs;
use crate::output::{lost_text, print_line, say};
use crate::signals::{Signals, send_signal};
use crate::{code, report, signal_code};

pub(crate) enum Mode {
    Wait { timeout: Option<Duration> },
    Try { conflict: u8 },
}

/// How the time under the lock ended.
enum Outcome {
    /// Finished normally: release, then exit with this code.
    Done(u8),
    /// The lock was lost (already reported): clean up, exit 78.
    Lost,
}

/// How long the clean-up after a lost lock may take (the network may be cut).
const LOST_CLEANUP: Duration = Duration::from_secs(3);

/// Revokes the session's lease (removing anything it queued), bounded in time.
async fn close_session(session: Session, bound: Duration) {
    let _ = tokio::time::timeout(bound, session.close()).await;
}

fn timeout_message(name: &str, t: Duration) -> u8 {
    say(&format!(
        "lock {name:?} was not acquired within {t:?}; nothing is left queued"
    ));
    code::ACQUIRE_TIMEOUT
}

pub(crate) async fn hold(client: &Client, signals: &mut Signals, args: HoldArgs, mode: Mode) -> u8 {
    let cleanup_bound = client.request_timeout() * 2;
    let deadline = match &mode {
        Mode::Wait { timeout: Some(t) } => Some((Instant::now() + *t, *t)),
        _ => None,
    };
    // The lock lives on a session's lease, so that whatever happens (signal,
    // timeout, error) one revoke removes it or its place in the queue.
    let grant = client.session(args.ttl);
    let session = tokio::select! {
        r = grant => match r {
            Ok(s) => s,
            Err(e) => return report(&e),
        },
        _ = sleep_until_opt(deadline.map(|d| d.0)) => {
            return timeout_message(&args.name, deadline.map_or(Duration::ZERO, |d| d.1));
        }
        sig = signals.recv() => return signal_code(sig),
    };
    let value = args.value.clone().map(OsString::into_vec);
    let guard = match mode {
        Mode::Wait { .. } => {
            let mut req = session.lock(args.name.clone());
            if let Some(v) = &value {
                req = req.value(v.clone());
            }
            if let Some((at, t)) = deadline {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    close_session(session, cleanup_bound).await;
                    return timeout_message(&args.name, t);
                }
                req = req.timeout(left);
            }
            let r = tokio::select! {
                r = req => r,
                sig = signals.recv() => {
                    close_session(session, cleanup_bound).await;
                    return signal_code(sig);
                }
            };
            match r {
                Ok(g) => g,
                Err(Error::AcquireTimeout { name, .. }) => {
                    close_session(session, cleanup_bound).await;
                    return timeout_message(&name, deadline.map_or(Duration::ZERO, |d| d.1));
                }
                Err(e) => {
                    close_session(session, cleanup_bound).await;
                    return report(&e);
                }
            }
        }
        Mode::Try { conflict } => {
            let mut req = session.try_lock(args.name.clone());
            if let Some(v) = &value {
                req = req.value(v.clone());
            }
            let r = tokio::select! {
                r = req => r,
                sig = signals.recv() => {
                    close_session(session, cleanup_bound).await;
                    return signal_code(sig);
                }
            };
            match r {
                Ok(TryLock::Acquired(g)) => g,
                Ok(TryLock::Held(h)) => {
                    close_session(session, cleanup_bound).await;
                    say(&format!(
                        "lock {:?} is held by {:?} (key {}, lease {}, fencing token {})",
                        args.name,
                        h.value_str(),
                        h.key,
                        h.lease,
                        h.fencing_token
                    ));
                    return conflict;
                }
                Err(e) => {
                    close_session(session, cleanup_bound).await;
                    return report(&e);
                }
            }
        }
    };

    let outcome = if args.cmd.is_empty() {
        hold_until_signal(&guard, signals).await
    } else {
        run_command(&guard, &args.cmd, args.kill_after, signals).await
    };

    match outcome {
        Outcome::Lost => {
            // Try to remove what may be left, but do not wait long: etcd may be unreachable.
            let _ = tokio::time::timeout(LOST_CLEANUP, async {
                let _ = guard.release().await;
                let _ = session.close().await;
            })
            .await;
            code::LOST
        }
        Outcome::Done(c) => {
            let key = guard.key().to_owned();
            let ttl = session.ttl();
            match guard.release().await {
                Ok(()) => {
                    if let Err(e) = session.close().await {
                        // The key is already deleted; the lease just expires by itself.
                        if !e.is_lost() {
                            say(&format!("warning: the lock's lease was not revoked: {e}"));
                        }
                    }
                    c
                }
                Err(e) if e.is_lost() => {
                    close_session(session, LOST_CLEANUP).await;
                    say(&format!(
                        "lock key {key} was lost before it was released; the work done under it \
                         was not protected to the end"
                    ));
                    code::LOST
                }
                Err(e) => {
                    say(&format!(
                        "warning: could not release lock key {key} ({e}); etcd frees it when its \
                         lease expires (TTL {ttl:?})"
                    ));
                    close_session(session, LOST_CLEANUP).await;
                    c
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Without a command: print the key and token, then hold until a signal or loss.
async fn hold_until_signal(guard: &LockGuard, signals: &mut Signals) -> Outcome {
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
async fn run_command(
    guard: &LockGuard,
    cmd: &[OsString],
    kill_after: Duration,
    signals: &mut Signals,
) -> Outcome {
    let token = guard.fencing_token().to_string();
    let mut command = tokio::process::Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .env("LOCKER_KEY", guard.key())
        .env("LOCKER_FENCING_TOKEN", &token)
        .env("ETCD_LOCK_KEY", guard.key())
        .env("ETCD_LOCK_REV", &token);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let program = cmd[0].to_string_lossy();
            say(&format!("cannot run {program:?}: {e}"));
            let c = if e.kind() == std::io::ErrorKind::NotFound {
                code::NOT_FOUND
            } else {
                code::CANNOT_EXECUTE
            };
            return Outcome::Done(c);
        }
    };
    let pid = child.id();
    let mut lost = false;
    let mut kill_at: Option<Instant> = None;
    loop {
        tokio::select! {
            status = child.wait() => {
                let c = match status {
                    Ok(s) => status_code(s),
                    Err(e) => {
                        say(&format!("cannot wait for the command: {e}"));
                        code::FAILURE
                    }
                };
                return if lost { Outcome::Lost } else { Outcome::Done(c) };
            }
            sig = signals.recv() => send_signal(pid, sig),
            reason = guard.lost(), if !lost => {
                lost = true;
                say(&format!(
                    "lock lost: key {}: {}; sending SIGTERM to the command (SIGKILL in {:?})",
                    guard.key(),
                    lost_text(reason),
                    kill_after
                ));
                send_signal(pid, libc::SIGTERM);
                kill_at = Some(Instant::now() + kill_after);
            }
            _ = sleep_until_opt(kill_at) => {
                say("the command did not exit after SIGTERM; sending SIGKILL");
                send_signal(pid, libc::SIGKILL);
                kill_at = None;
            }
        }
    }
}

fn status_code(status: ExitStatus) -> u8 {
    if let Some(c) = status.code() {
        return (c & 0xff) as u8;
    }
    match status.signal() {
        Some(n) => code::SIGNAL_BASE.saturating_add(u8::try_from(n).unwrap_or(127)),
        None => code::FAILURE,
    }
}
