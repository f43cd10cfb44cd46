//! `locker`: distributed locks on etcd v3 from the shell.
//!
//! Run `locker --help` for the commands, options and exit codes. Built only
//! with the `cli` feature.
//!
//! - `main.rs`: the entry point, the dispatch to a command, exit codes.
//! - `args.rs`: the command line (clap), help texts, durations and names.
//! - `connect.rs`: from the global options to a connected client.
//! - `hold.rs`: `lock`, `try` and `elect`, from taking the lock (or
//!   leadership) to releasing it; `guard.rs`: what they hold.
//! - `acquire.rs`: taking the lock on a session's lease.
//! - `under_lock.rs`: the command run under the lock, or a wait for a signal.
//! - `inspect.rs`: `holder`, `watch` and `elect --listen`.
//! - `output.rs`: every line locker prints.
//! - `signals.rs`: signals received and forwarded.
//! - `watchdog.rs`: the process that runs the command and makes sure its
//!   whole tree is gone before the lease could expire, even if locker dies
//!   or stalls; `tree.rs`: that tree; `dog.rs`: locker's end of it;
//!   `deadline.rs`: the lease deadline both share and the time a stop takes.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "the locker CLI needs Linux (PR_SET_CHILD_SUBREAPER, signalfd, /proc) to keep a command \
     from outliving its lock; the library builds everywhere"
);

mod acquire;
mod args;
mod connect;
mod deadline;
mod dog;
mod guard;
mod hold;
mod inspect;
mod output;
mod signals;
mod tree;
mod under_lock;
mod watchdog;

use std::process::ExitCode;

use clap::Parser as _;
use locker::Error;

use crate::acquire::Mode;
use crate::args::{Cli, Command, check_kill_after, usage_error};
use crate::connect::client_builder;
use crate::hold::hold;
use crate::inspect::{holder, listen, watch};
use crate::output::say;
use crate::signals::Signals;

/// Exit codes, as `locker --help` lists them under "Exit status".
mod code {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const FREE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNAVAILABLE: u8 = 69;
    pub const HELD: u8 = 75;
    pub const NO_PERMISSION: u8 = 77;
    pub const LOST: u8 = 78;
    pub const NOT_KEPT: u8 = 79;
    pub const WATCHDOG: u8 = 80;
    pub const ACQUIRE_TIMEOUT: u8 = 124;
    pub const CANNOT_EXECUTE: u8 = 126;
    pub const NOT_FOUND: u8 = 127;
    pub const SIGNAL_BASE: u8 = 128;
}

fn exit_code_for(e: &Error) -> u8 {
    match e {
        Error::InvalidArgument { .. }
        | Error::InvalidEndpoint { .. }
        | Error::CertFile { .. }
        | Error::LimitMismatch { .. }
        | Error::TooManyNames { .. } => code::USAGE,
        Error::Unreachable { .. }
        | Error::Timeout { .. }
        | Error::NotEtcd { .. }
        | Error::Tls { .. }
        | Error::Ambiguous { .. } => code::UNAVAILABLE,
        Error::AuthFailed { .. } | Error::PermissionDenied { .. } => code::NO_PERMISSION,
        Error::LockLost { .. } | Error::LeaseExpired { .. } | Error::NotLeader { .. } => code::LOST,
        Error::AcquireTimeout { .. } => code::ACQUIRE_TIMEOUT,
        _ => code::FAILURE,
    }
}

/// Prints the error and returns its exit code.
fn report(e: &Error) -> u8 {
    say(&e.to_string());
    exit_code_for(e)
}

fn signal_code(sig: i32) -> u8 {
    code::SIGNAL_BASE.saturating_add(u8::try_from(sig).unwrap_or(0))
}

/// Parses the command line, then runs it on a two-thread runtime.
fn main() -> ExitCode {
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == watchdog::HIDDEN_ARG) {
        return ExitCode::from(watchdog::run(argv));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if matches!(&cli.command, Command::Elect(a) if a.json && !a.listen) {
        // clap lets `--json` through beside a proposal (which conflicts
        // with --listen, and that waives --json's need of it).
        say("--json goes with --listen; see 'locker elect --help'");
        return ExitCode::from(code::USAGE);
    }
    if let Err(msg) = check_kill_after(&cli.command) {
        say(&msg);
        return ExitCode::from(code::USAGE);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(code::FAILURE);
        }
    };
    let code = rt.block_on(run(cli));
    rt.shutdown_background();
    ExitCode::from(code)
}

/// Listens for signals, connects, then runs the command; returns the exit code.
async fn run(cli: Cli) -> u8 {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            say(&format!("cannot listen for signals: {e}"));
            return code::FAILURE;
        }
    };
    let builder = match client_builder(&cli) {
        Ok(b) => b,
        Err(msg) => {
            say(&msg);
            return code::USAGE;
        }
    };
    let client = tokio::select! {
        r = builder.connect() => match r {
            Ok(c) => c,
            Err(e) => return report(&e),
        },
        sig = signals.recv() => return signal_code(sig),
    };
    let quiet = cli.quiet;
    match cli.command {
        Command::Lock(a) => {
            let mode = Mode::Wait { timeout: a.timeout };
            hold(&client, &mut signals, a.hold, mode, quiet).await
        }
        Command::Try(a) => {
            let mode = Mode::Try {
                conflict: a.conflict_exit_code,
            };
            hold(&client, &mut signals, a.hold, mode, quiet).await
        }
        Command::Holder(a) => holder(&client, &mut signals, a).await,
        Command::Watch(a) => watch(&client, &mut signals, a).await,
        Command::Elect(a) if a.listen => listen(&client, &mut signals, a).await,
        Command::Elect(a) => {
            let mode = Mode::Elect { timeout: a.timeout };
            hold(&client, &mut signals, a.into_hold(), mode, quiet).await
        }
    }
}
