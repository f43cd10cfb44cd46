//! `lock`, `try` and `elect`: take the lock or leadership, hold it (running
//! the command, or until a signal), then release or resign.

use std::time::Duration;

use locker::{Client, Session};

use crate::acquire::{Mode, acquire, close_session};
use crate::args::HoldArgs;
use crate::args::kill_policy;
use crate::code;
use crate::guard::Guard;
use crate::output::say;
use crate::signals::Signals;
use crate::under_lock::{Outcome, hold_until_signal, run_command};

/// How long the clean-up after a lost lock may take (the network may be cut).
const LOST_CLEANUP: Duration = Duration::from_secs(3);

/// Runs `lock`, `try` or `elect`; returns the exit code.
pub(crate) async fn hold(
    client: &Client,
    signals: &mut Signals,
    args: HoldArgs,
    mode: Mode,
    quiet: bool,
) -> u8 {
    let (session, guard) = match acquire(client, signals, &args, mode, quiet).await {
        Ok(taken) => taken,
        Err(exit) => return exit,
    };
    let outcome = if args.cmd.is_empty() {
        hold_until_signal(&guard, signals).await
    } else {
        let kill = kill_policy(&args, guard.ttl());
        run_command(&guard, &args.cmd, kill, signals).await
    };
    let lost_code = match outcome {
        Outcome::Done(exit) => return release(session, guard, exit).await,
        Outcome::Lost => code::LOST,
        Outcome::NotKept => code::NOT_KEPT,
        Outcome::Watchdog => code::WATCHDOG,
        Outcome::WatchdogGone => code::FAILURE,
    };
    clean_up_after_loss(session, guard).await;
    lost_code
}

/// Tries to remove what may be left of a lost lock, but does not wait long:
/// etcd may be unreachable.
async fn clean_up_after_loss(session: Session, guard: Guard) {
    close_session(session, LOST_CLEANUP).await;
    drop(guard);
}

/// Releases the lock (or resigns) and ends the session's lease in one
/// `LeaseRevoke`, which deletes the key with the lease; returns `exit`, or
/// 78 if the lock turns out to have been lost.
async fn release(session: Session, guard: Guard, exit: u8) -> u8 {
    let key = guard.keys().join(", ");
    let ttl = session.ttl();
    let lost_before = guard.is_lost();
    let closed = session.close().await;
    // The revoke took the key: the guard has nothing left to delete.
    drop(guard);
    match closed {
        Ok(()) if !lost_before => exit,
        Err(e) if !lost_before && !e.is_lost() => {
            say(&format!(
                "warning: could not release lock key {key} ({e}); etcd frees it when its \
                 lease expires (TTL {ttl:?})"
            ));
            exit
        }
        _ => {
            say(&format!(
                "lock key {key} was lost before it was released; the work done under it \
                 was not protected to the end"
            ));
            code::LOST
        }
    }
}
