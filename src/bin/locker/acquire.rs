//! Taking the lock for `lock` and `try`: a session's lease first, then the
//! lock on it, each step given up on a signal or at `--timeout`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::time::Duration;

use locker::{Client, Error, Holder, Session, TryLock};
use tokio::time::Instant;

use crate::args::HoldArgs;
use crate::guard::Guard;
use crate::output::{held_text, say};
use crate::signals::Signals;
use crate::{code, report, signal_code};

/// How `lock` and `try` take the lock.
pub(crate) enum Mode {
    /// `lock`: wait in the queue, at most `timeout` if given.
    Wait { timeout: Option<Duration> },
    /// `try`: take the lock only if it is free, else exit with `conflict`.
    Try { conflict: u8 },
    /// `elect`: campaign with the value as proposal, at most `timeout`.
    Elect { timeout: Option<Duration> },
}

/// A `lock --timeout`: when it runs out, and how long it was.
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    after: Duration,
}

/// Why the lock was not taken. Reported only once the session is closed,
/// so that "nothing is left queued" is true when it is said.
enum NotTaken {
    /// A signal arrived first.
    Signal(i32),
    /// `--timeout` ran out.
    TimedOut { name: String, after: Duration },
    /// `try`: someone else holds the lock.
    Held {
        name: String,
        holder: Holder,
        exit: u8,
    },
    /// etcd or the library refused.
    Failed(Error),
}

impl NotTaken {
    /// Says why, and returns the exit code.
    fn report(self) -> u8 {
        match self {
            NotTaken::Signal(sig) => signal_code(sig),
            NotTaken::TimedOut { name, after } => {
                say(&format!(
                    "lock {name:?} was not acquired within {after:?}; nothing is left queued"
                ));
                code::ACQUIRE_TIMEOUT
            }
            NotTaken::Held { name, holder, exit } => {
                say(&held_text(&name, holder));
                exit
            }
            NotTaken::Failed(e) => report(&e),
        }
    }
}

/// Takes the lock on a new session's lease. On failure the session is
/// closed (removing anything it queued), the reason is reported, and its
/// exit code returned.
///
/// The lock lives on a session's lease, so that whatever happens (signal,
/// timeout, error) one revoke removes it or its place in the queue.
pub(crate) async fn acquire(
    client: &Client,
    signals: &mut Signals,
    args: &HoldArgs,
    mode: Mode,
) -> Result<(Session, Guard), u8> {
    let deadline = match mode {
        Mode::Wait { timeout: Some(t) } | Mode::Elect { timeout: Some(t) } => Some(Deadline {
            at: Instant::now() + t,
            after: t,
        }),
        _ => None,
    };
    let session = open_session(client, signals, args, deadline)
        .await
        .map_err(NotTaken::report)?;
    let taken = match mode {
        Mode::Wait { .. } | Mode::Elect { .. } => {
            let elect = matches!(mode, Mode::Elect { .. });
            wait_for_turn(&session, signals, args, deadline, elect).await
        }
        Mode::Try { conflict } => try_lock(&session, signals, args, conflict).await,
    };
    match taken {
        Ok(guard) => Ok((session, guard)),
        Err(why) => {
            close_session(session, client.request_timeout() * 2).await;
            Err(why.report())
        }
    }
}

/// Grants the session's lease, unless a signal or the deadline comes first.
async fn open_session(
    client: &Client,
    signals: &mut Signals,
    args: &HoldArgs,
    deadline: Option<Deadline>,
) -> Result<Session, NotTaken> {
    tokio::select! {
        r = within(deadline, client.session(args.ttl)) => match r {
            Some(granted) => granted.map_err(NotTaken::Failed),
            None => Err(timed_out(args, deadline)),
        },
        sig = signals.recv() => Err(NotTaken::Signal(sig)),
    }
}

/// Runs `work` to its end, or until the deadline if there is one (then `None`).
async fn within<F: Future>(deadline: Option<Deadline>, work: F) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d.at, work).await.ok(),
        None => Some(work.await),
    }
}

fn timed_out(args: &HoldArgs, deadline: Option<Deadline>) -> NotTaken {
    NotTaken::TimedOut {
        name: args.name.clone(),
        after: deadline.map_or(Duration::ZERO, |d| d.after),
    }
}

/// The `--value` as bytes, if given.
fn value(args: &HoldArgs) -> Option<Vec<u8>> {
    args.value.clone().map(OsString::into_vec)
}

/// `lock` and `elect`: waits in the queue for the lock or leadership, until
/// the deadline if any.
async fn wait_for_turn(
    session: &Session,
    signals: &mut Signals,
    args: &HoldArgs,
    deadline: Option<Deadline>,
    elect: bool,
) -> Result<Guard, NotTaken> {
    let left = match deadline {
        Some(d) => match d.at.saturating_duration_since(Instant::now()) {
            left if left.is_zero() => return Err(timed_out(args, deadline)),
            left => Some(left),
        },
        None => None,
    };
    let name = args.name.clone();
    let turn = async {
        if elect {
            let mut req = session.campaign(name, value(args).unwrap_or_default());
            if let Some(left) = left {
                req = req.timeout(left);
            }
            req.await.map(Guard::Leader)
        } else {
            let mut req = session.lock(name);
            if let Some(v) = value(args) {
                req = req.value(v);
            }
            if let Some(left) = left {
                req = req.timeout(left);
            }
            req.await.map(Guard::Lock)
        }
    };
    let r = tokio::select! {
        r = turn => r,
        sig = signals.recv() => return Err(NotTaken::Signal(sig)),
    };
    r.map_err(|e| match e {
        Error::AcquireTimeout { name, .. } => NotTaken::TimedOut {
            name,
            after: deadline.map_or(Duration::ZERO, |d| d.after),
        },
        e => NotTaken::Failed(e),
    })
}

/// `try`: takes the lock if it is free.
async fn try_lock(
    session: &Session,
    signals: &mut Signals,
    args: &HoldArgs,
    conflict: u8,
) -> Result<Guard, NotTaken> {
    let mut req = session.try_lock(args.name.clone());
    if let Some(v) = value(args) {
        req = req.value(v);
    }
    let r = tokio::select! {
        r = req => r,
        sig = signals.recv() => return Err(NotTaken::Signal(sig)),
    };
    match r {
        Ok(TryLock::Acquired(guard)) => Ok(Guard::Lock(guard)),
        Ok(TryLock::Held(holder)) => Err(NotTaken::Held {
            name: args.name.clone(),
            holder,
            exit: conflict,
        }),
        Err(e) => Err(NotTaken::Failed(e)),
    }
}

/// Revokes the session's lease (removing anything it queued), bounded in time.
pub(crate) async fn close_session(session: Session, bound: Duration) {
    let _ = tokio::time::timeout(bound, session.close()).await;
}
