//! Taking the lock for `lock` and `try`: a session's lease first, then the
//! lock on it, each step given up on a signal or at `--timeout`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::time::Duration;

use locker::{Client, Error, Holder, Session, TryLock, TryLockAll};
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
    quiet: bool,
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
            let turn = Turn {
                client,
                session: &session,
                args,
                elect,
                quiet,
            };
            turn.wait(signals, deadline).await
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
        name: args.label(),
        after: deadline.map_or(Duration::ZERO, |d| d.after),
    }
}

/// The `--value` as bytes, if given.
fn value(args: &HoldArgs) -> Option<Vec<u8>> {
    args.value.clone().map(OsString::into_vec)
}

/// A wait for the lock or leadership, for `lock` and `elect`.
struct Turn<'a> {
    client: &'a Client,
    session: &'a Session,
    args: &'a HoldArgs,
    elect: bool,
    quiet: bool,
}

/// After this long without the lock, say who holds it.
const WAIT_NOTICE: Duration = Duration::from_millis(500);

impl Turn<'_> {
    /// Waits in the queue, until the deadline if any; says once on stderr
    /// that it waits (who holds, how many are ahead) and when its turn came.
    async fn wait(
        self,
        signals: &mut Signals,
        deadline: Option<Deadline>,
    ) -> Result<Guard, NotTaken> {
        let left = match deadline {
            Some(d) => match d.at.saturating_duration_since(Instant::now()) {
                left if left.is_zero() => return Err(timed_out(self.args, deadline)),
                left => Some(left),
            },
            None => None,
        };
        let started = Instant::now();
        let turn = self.request(left);
        tokio::pin!(turn);
        let mut noticed = self.quiet;
        let r = loop {
            tokio::select! {
                r = &mut turn => break r,
                sig = signals.recv() => return Err(NotTaken::Signal(sig)),
                _ = tokio::time::sleep(WAIT_NOTICE), if !noticed => {
                    noticed = true;
                    self.notice_waiting().await;
                }
            }
        };
        if r.is_ok() && noticed && !self.quiet {
            let what = if self.elect {
                "elected in"
            } else {
                "got the lock of"
            };
            say(&format!(
                "{what} {:?} after {:.1?}",
                self.args.label(),
                started.elapsed()
            ));
        }
        r.map_err(|e| match e {
            Error::AcquireTimeout { name, .. } => NotTaken::TimedOut {
                name,
                after: deadline.map_or(Duration::ZERO, |d| d.after),
            },
            e => NotTaken::Failed(e),
        })
    }

    /// The request for the lock (in its mode) or the campaign.
    async fn request(&self, left: Option<Duration>) -> locker::Result<Guard> {
        let (s, name, args) = (self.session, self.args.name.clone(), self.args);
        if self.elect {
            let mut req = s.campaign(name, value(args).unwrap_or_default());
            if let Some(left) = left {
                req = req.timeout(left);
            }
            return req.await.map(Guard::Leader);
        }
        if let Some(names) = args.set() {
            return self.request_set(names, left).await;
        }
        let mut req = match (args.shared, args.limit) {
            (true, _) => s.read_lock(name),
            (false, Some(n)) => s.semaphore(name, n).acquire(),
            (false, None) => s.lock(name),
        };
        if let Some(v) = value(args) {
            req = req.value(v);
        }
        if let Some(left) = left {
            req = req.timeout(left);
        }
        req.await.map(Guard::Lock)
    }

    /// The request for a set of locks.
    async fn request_set(
        &self,
        names: Vec<String>,
        left: Option<Duration>,
    ) -> locker::Result<Guard> {
        let mut req = self.session.lock_all(names);
        if let Some(v) = value(self.args) {
            req = req.value(v);
        }
        if let Some(left) = left {
            req = req.timeout(left);
        }
        req.await.map(Guard::Set)
    }

    /// `waiting for "A, B": "B" held by "VALUE" (key K, fencing token N)`:
    /// each name of the set still held or awaited by others.
    async fn notice_waiting_set(&self, names: &[String]) {
        let mine = self.session.lease();
        let mut busy = Vec::new();
        for name in names {
            let read = tokio::time::timeout(WAIT_NOTICE, self.client.holder(name)).await;
            if let Ok(Ok(Some(h))) = read.map(|r| r.map(|h| h.filter(|h| h.lease != mine))) {
                busy.push(format!(
                    "{name:?} held by {:?} (key {}, fencing token {})",
                    h.value_str(),
                    h.key,
                    h.fencing_token
                ));
            }
        }
        say(&format!(
            "waiting for {:?}: {}",
            self.args.label(),
            busy.join("; ")
        ));
    }

    /// `waiting for "NAME": held by "VALUE" (key K, fencing token N); 2 ahead`.
    async fn notice_waiting(&self) {
        if let Some(names) = self.args.set() {
            return self.notice_waiting_set(&names).await;
        }
        let Ok(Ok(q)) =
            tokio::time::timeout(WAIT_NOTICE, self.client.holders(&self.args.name)).await
        else {
            return;
        };
        let mine = self.session.lease();
        let ahead = q
            .waiters
            .iter()
            .take_while(|w| w.holder.lease != mine)
            .count();
        let held = match q.holders.as_slice() {
            [] => "nobody holds it now".to_owned(),
            [h] => format!(
                "held by {:?} (key {}, fencing token {})",
                h.holder.value_str(),
                h.holder.key,
                h.holder.fencing_token
            ),
            [h, rest @ ..] => format!(
                "held by {:?} (key {}, fencing token {}) and {} more",
                h.holder.value_str(),
                h.holder.key,
                h.holder.fencing_token,
                rest.len()
            ),
        };
        say(&format!(
            "waiting for {:?}: {held}; {ahead} ahead in the queue",
            self.args.name
        ));
    }
}

/// `try`: takes the lock if it is free.
async fn try_lock(
    session: &Session,
    signals: &mut Signals,
    args: &HoldArgs,
    conflict: u8,
) -> Result<Guard, NotTaken> {
    if let Some(names) = args.set() {
        return try_set(session, signals, args, names, conflict).await;
    }
    let name = args.name.clone();
    let mut req = match (args.shared, args.limit) {
        (true, _) => session.try_read_lock(name),
        (false, Some(n)) => session.semaphore(name, n).try_acquire(),
        (false, None) => session.try_lock(name),
    };
    if let Some(v) = value(args) {
        req = req.value(v);
    }
    let taken = async {
        req.await.map(|t| match t {
            TryLock::Acquired(guard) => Ok(Guard::Lock(guard)),
            TryLock::Held(holder) => Err(holder),
        })
    };
    try_outcome(taken, signals, conflict).await
}

/// `try` of several names: takes them all if every one is free.
async fn try_set(
    session: &Session,
    signals: &mut Signals,
    args: &HoldArgs,
    names: Vec<String>,
    conflict: u8,
) -> Result<Guard, NotTaken> {
    let mut req = session.try_lock_all(names);
    if let Some(v) = value(args) {
        req = req.value(v);
    }
    let taken = async {
        req.await.map(|t| match t {
            TryLockAll::Acquired(set) => Ok(Guard::Set(set)),
            TryLockAll::Held(holder) => Err(holder),
        })
    };
    try_outcome(taken, signals, conflict).await
}

/// A try's outcome, unless a signal comes first: the guard, or who holds
/// (the first busy name's holder, for a set).
async fn try_outcome(
    taken: impl Future<Output = locker::Result<Result<Guard, Holder>>>,
    signals: &mut Signals,
    conflict: u8,
) -> Result<Guard, NotTaken> {
    let r = tokio::select! {
        r = taken => r,
        sig = signals.recv() => return Err(NotTaken::Signal(sig)),
    };
    match r {
        Ok(Ok(guard)) => Ok(guard),
        Ok(Err(holder)) => Err(NotTaken::Held {
            name: holder.name.clone(),
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
