//! The time under the lock: the command run (by the watchdog) with the
//! lock's key and token, its signals passed on, the lease's deadline kept
//! up to date, and a stop in time when the lock is lost or the lease at
//! risk; or, without a command, nothing until a signal.

use std::ffi::OsString;
use std::time::Duration;

use locker::LostReason;
use tokio::time::Instant;

use crate::code;
use crate::deadline::{KILL_MARGIN, LOCKER_LEAD, Mono};
use crate::dog::{Dog, Report};
use crate::guard::Guard;
use crate::output::{lost_text, print_line, say};
use crate::signals::Signals;
use crate::watchdog::{By, Config};

/// How the time under the lock ended.
pub(crate) enum Outcome {
    /// Finished normally: release, then exit with this code.
    Done(u8),
    /// etcd says the lease is gone (already reported): clean up, exit 78.
    Lost,
    /// No keepalive was answered in time to keep the lease (already
    /// reported): the command was stopped before the lease could expire;
    /// clean up, exit 79.
    NotKept,
    /// locker stalled and the watchdog stopped the command (it said so):
    /// clean up, exit 80.
    Watchdog,
    /// The watchdog itself ended without a report (already reported).
    WatchdogGone,
}

/// Without a command: print the key and token, then hold until a signal or loss.
pub(crate) async fn hold_until_signal(guard: &Guard, signals: &mut Signals) -> Outcome {
    // A reader that went away is no reason to drop the lock.
    // One `key=` per key: one for a lock, one per name for a set.
    let keys: Vec<String> = guard.keys().iter().map(|k| format!("key={k}")).collect();
    let _ = print_line(&format!(
        "{} fencing_token={} lease={}",
        keys.join(" "),
        guard.fencing_token(),
        guard.lease()
    ));
    tokio::select! {
        _ = signals.recv() => Outcome::Done(code::OK),
        reason = guard.lost() => {
            say(&format!("lock lost: {}: {}", guard.what(), lost_text(reason)));
            Outcome::Lost
        }
    }
}

/// How a command under the lock is stopped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KillPolicy {
    /// From SIGTERM to SIGKILL.
    pub(crate) kill_after: Duration,
    /// `--unsafe-kill-after`: SIGKILL waits `kill_after` even past the lease.
    pub(crate) unsafe_kill_after: bool,
    /// The part of `kill_after` that fits before the lease's deadline
    /// (all of it, unless unsafe).
    pub(crate) fitting: Duration,
}

/// How often locker passes the lease's deadline on to the watchdog.
const TICK: Duration = Duration::from_millis(50);

/// Runs the command under the watchdog; passes signals on; keeps the
/// watchdog's deadline; on loss or when the lease is at risk, stops it in
/// time.
pub(crate) async fn run_command(
    guard: &Guard,
    cmd: &[OsString],
    kill: KillPolicy,
    signals: &mut Signals,
) -> Outcome {
    let Some(deadline) = guard.deadline() else {
        say(&format!(
            "{} lost before the command started: {}",
            guard.what(),
            lost_text(guard.lost().await)
        ));
        return Outcome::Lost;
    };
    let cfg = Config {
        deadline: Mono::from_instant(deadline),
        kill_after: kill.kill_after,
        unsafe_kill_after: kill.unsafe_kill_after,
        lead: kill.fitting / 2,
        // SAFETY: getpgrp and getpid cannot fail and touch no memory.
        pgid: unsafe { libc::getpgrp() },
        locker_pid: std::process::id().try_into().unwrap_or(0),
        what: guard.what(),
        cmd: cmd.to_vec(),
    };
    let dog = match Dog::spawn(&cfg, &command_env(guard)) {
        Ok(dog) => dog,
        Err(e) => {
            say(&format!(
                "cannot start the watchdog that runs the command: {e}"
            ));
            return Outcome::Done(code::FAILURE);
        }
    };
    let mut under = Under {
        guard,
        dog,
        kill,
        stopping: None,
        unsaid: None,
        command: None,
    };
    let outcome = under.watch(signals).await;
    under.dog.reap().await;
    outcome
}

/// The command's environment: `LOCKER_NAMES` and `LOCKER_KEYS` (one a
/// line: names cannot hold control characters) and the one fencing token
/// (`LOCKER_FENCING_TOKEN`, `ETCD_LOCK_REV`); for a single lock or a
/// leadership also its key (`LOCKER_KEY`, `ETCD_LOCK_KEY`).
fn command_env(guard: &Guard) -> Vec<(&'static str, String)> {
    let token = guard.fencing_token().to_string();
    let mut env = vec![
        ("LOCKER_NAMES", guard.names().join("\n")),
        ("LOCKER_KEYS", guard.keys().join("\n")),
        ("LOCKER_FENCING_TOKEN", token.clone()),
        ("ETCD_LOCK_REV", token),
    ];
    if !guard.is_set() {
        env.push(("LOCKER_KEY", guard.key().to_owned()));
        env.push(("ETCD_LOCK_KEY", guard.key().to_owned()));
    }
    env
}

/// Why the command is being stopped.
#[derive(Clone, Copy)]
enum Why {
    /// etcd says the lease is gone.
    Lost,
    /// No keepalive was answered in time.
    NotKept,
    /// The watchdog acted on its own (locker stalled); it said why.
    Watchdog,
}

struct Under<'a> {
    guard: &'a Guard,
    dog: Dog,
    kill: KillPolicy,
    stopping: Option<Why>,
    /// locker's line about its stop, said once the watchdog confirms the
    /// stop is locker's (a locker resumed after a stall finds the watchdog
    /// acted already, and says nothing more).
    unsaid: Option<String>,
    /// The command's pid, once started.
    command: Option<i32>,
}

impl Under<'_> {
    /// Until the watchdog's report.
    async fn watch(&mut self, signals: &mut Signals) -> Outcome {
        loop {
            let wake = self.next_check();
            tokio::select! {
                // A report waiting when a stalled locker resumes comes first.
                biased;
                report = self.dog.next() => match report {
                    Some(Report::Started(pid)) => self.command = Some(pid),
                    Some(Report::Stopping) => self.say_unsaid(),
                    Some(Report::Acting) => {
                        self.unsaid = None;
                        self.stopping = Some(Why::Watchdog);
                    }
                    Some(Report::Done(by, exit)) => return self.outcome(by, exit),
                    None => return self.dog_gone(),
                },
                sig = signals.recv() => self.dog.signal(sig).await,
                reason = self.guard.lost(), if self.stopping.is_none() => {
                    self.on_lost(reason).await;
                }
                _ = tokio::time::sleep_until(wake), if self.stopping.is_none() => {
                    self.check_deadline().await;
                }
            }
        }
    }

    /// When to look at the deadline next: within a tick, or when the stop
    /// must begin if the deadline has not moved by then.
    fn next_check(&self) -> Instant {
        let tick = Instant::now() + TICK;
        match self.guard.deadline() {
            Some(d) => {
                let begin = d.checked_sub(self.stop_lead()).unwrap_or(d);
                tick.min(Instant::from_std(begin))
            }
            None => Instant::now(),
        }
    }

    /// How long before the deadline locker begins a stop.
    fn stop_lead(&self) -> Duration {
        self.kill.fitting + KILL_MARGIN + LOCKER_LEAD
    }

    /// Passes the deadline on; begins the stop if it is too near.
    async fn check_deadline(&mut self) {
        let Some(d) = self.guard.deadline() else {
            // Past: `lost()` fires too; report it as such.
            return self.on_lost(LostReason::Unreachable).await;
        };
        self.dog.extend(d).await;
        let left = d.saturating_duration_since(std::time::Instant::now());
        if left <= self.stop_lead() {
            let line = format!(
                "lease of {} could not be kept alive (no keepalive answered for {:.1?}; etcd \
                 unreachable?): stopping the command before the lease can expire (SIGTERM, \
                 SIGKILL within {:?}; exit {})",
                self.guard.what(),
                self.guard.ttl().saturating_sub(left),
                self.kill.kill_after,
                code::NOT_KEPT
            );
            self.begin_stop(Why::NotKept, line).await;
        }
    }

    async fn on_lost(&mut self, reason: LostReason) {
        let (why, exit) = match reason {
            LostReason::Unreachable => (Why::NotKept, code::NOT_KEPT),
            _ => (Why::Lost, code::LOST),
        };
        let line = format!(
            "{} lost: {}; stopping the command (SIGTERM, SIGKILL within {:?}; exit {exit})",
            self.guard.what(),
            lost_text(reason),
            self.kill.kill_after
        );
        self.begin_stop(why, line).await;
    }

    async fn begin_stop(&mut self, why: Why, line: String) {
        self.stopping = Some(why);
        self.unsaid = Some(line);
        self.dog.stop().await;
    }

    fn say_unsaid(&mut self) {
        if let Some(line) = self.unsaid.take() {
            say(&line);
        }
    }

    fn outcome(&mut self, by: By, exit: u8) -> Outcome {
        if by == By::Watchdog {
            return Outcome::Watchdog;
        }
        if by == By::Exited && self.unsaid.take().is_some() {
            // The command had ended by itself before the watchdog heard of
            // the stop (a locker resumed after a stall finds it so): its
            // tree was gone in time, and the release says whether the lock
            // was still held.
            return Outcome::Done(exit);
        }
        self.say_unsaid();
        match self.stopping {
            Some(Why::Watchdog) => Outcome::Watchdog,
            Some(Why::Lost) => Outcome::Lost,
            Some(Why::NotKept) => Outcome::NotKept,
            None => Outcome::Done(exit),
        }
    }

    fn dog_gone(&self) -> Outcome {
        let Some(command) = self.command else {
            // It said why on stderr.
            return Outcome::Done(code::FAILURE);
        };
        // The command got SIGKILL when the watchdog died (its parent-death
        // signal); what it started may run on.
        say(&format!(
            "the watchdog (pid {}) that ran the command (pid {}) ended without a report; \
             processes the command started may still run (exit {})",
            self.dog.pid().unwrap_or(0),
            command,
            code::FAILURE
        ));
        Outcome::WatchdogGone
    }
}
