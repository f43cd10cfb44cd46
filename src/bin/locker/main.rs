//! `locker`: distributed locks on etcd v3 from the shell.
//!
//! Run `locker --help` for the commands, options and exit codes. Built only
//! with the `cli` feature.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use locker::{
    Client, Error, Holder, LockEvent, LockGuard, LostReason, Session, TryLock, WireRecord,
};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

/// Exit codes (see [`EXIT_STATUS`]).
mod code {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const FREE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNAVAILABLE: u8 = 69;
    pub const HELD: u8 = 75;
    pub const NO_PERMISSION: u8 = 77;
    pub const LOST: u8 = 78;
    pub const ACQUIRE_TIMEOUT: u8 = 124;
    pub const CANNOT_EXECUTE: u8 = 126;
    pub const NOT_FOUND: u8 = 127;
    pub const SIGNAL_BASE: u8 = 128;
}

const EXIT_STATUS: &str = "\
Exit status:
  CODE   with a command: the command's own exit status
  0      success; `lock` without a command, or `watch`, stopped by SIGINT, SIGTERM or SIGHUP
  1      `holder`: the lock is free; any other failure
  2      usage error: unknown option, empty lock name, zero TTL, bad duration or
         endpoint, missing password, --cert without --key (or the reverse),
         an unreadable certificate file
  69     etcd cannot be reached: no endpoint answered, a request timed out, the
         server is not etcd, or a request's outcome is unknown
  75     `try`: the lock is held by someone else (see --conflict-exit-code)
  77     etcd rejected the user name or password, or the user lacks permission
  78     the lock was lost while held (the command got SIGTERM, then SIGKILL)
  124    `lock --timeout`: the lock was not acquired in time (nothing is left queued)
  126    the command could not be started
  127    the command was not found
  128+N  the command was killed by signal N, or locker got signal N before it held the lock

Durations: 500ms, 5s, 2m, 1h; a bare number means seconds.";

const ABOUT: &str = "Distributed locks on etcd v3: run a command while holding a lock";

const LONG_ABOUT: &str = "\
Distributed locks on etcd v3: run a command while holding a lock.

Locks are FIFO and fenced: waiters get the lock in arrival order, and each holder gets a
fencing token (the lock key's create revision) that only grows. A lock is kept alive by a
lease; if locker dies, the lock is freed when the lease's TTL runs out. Lock keys are
NAME/<lease id in hex>, as with `etcdctl lock`, so locker and etcdctl exclude each other.";

#[derive(Parser, Debug)]
#[command(
    name = "locker",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXIT_STATUS,
    disable_help_subcommand = true,
    arg_required_else_help = true
)]
struct Cli {
    /// etcd endpoints, comma-separated (http://HOST:PORT or HOST:PORT). If unset, ETCDCTL_ENDPOINTS
    /// is used, then http://127.0.0.1:2379
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URLS",
        env = "LOCKER_ENDPOINTS"
    )]
    endpoints: Option<String>,

    /// Time allowed to connect to one endpoint [default: 3s]
    #[arg(long, global = true, help_heading = "Global options", value_name = "DUR", env = "LOCKER_CONNECT_TIMEOUT",
          value_parser = parse_positive_duration)]
    connect_timeout: Option<Duration>,

    /// Time allowed for one request to etcd [default: 5s]
    #[arg(long, global = true, help_heading = "Global options", value_name = "DUR", env = "LOCKER_REQUEST_TIMEOUT",
          value_parser = parse_positive_duration)]
    request_timeout: Option<Duration>,

    /// Authenticate as user NAME; the password follows a colon or comes from LOCKER_PASSWORD
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "NAME[:PASSWORD]",
        env = "LOCKER_USER",
        hide_env_values = true
    )]
    user: Option<String>,

    /// CA bundle (PEM) to verify etcd's TLS certificate (default: the system's roots)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        env = "LOCKER_CACERT_FILE"
    )]
    cacert: Option<PathBuf>,

    /// TLS client certificate (PEM), for mutual TLS; needs --key
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        env = "LOCKER_CERT_FILE"
    )]
    cert: Option<PathBuf>,

    /// TLS client key (PEM), for mutual TLS; needs --cert
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        env = "LOCKER_KEY_FILE"
    )]
    key: Option<PathBuf>,

    /// Print every call to etcd on stderr, one line each, starting with "wire "
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "LOCKER_WIRE_LOG",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    wire_log: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Wait for the lock (in FIFO order), then run CMD while holding it, or hold it until
    /// interrupted
    #[command(
        after_help = EXIT_STATUS,
        long_about = "\
Wait for the lock (in FIFO order), then run CMD while holding it, or hold it until interrupted.

With CMD: CMD runs with LOCKER_KEY and ETCD_LOCK_KEY (the lock key) and LOCKER_FENCING_TOKEN
and ETCD_LOCK_REV (the fencing token) in its environment. When CMD exits, the lock is released
and locker exits with CMD's exit status. SIGINT, SIGTERM and SIGHUP are passed on to CMD. If
the lock is lost while CMD runs, CMD gets SIGTERM (SIGKILL after --kill-after) and locker
exits with 78.

Without CMD: prints `key=KEY fencing_token=N lease=ID` on one line, holds the lock until
SIGINT, SIGTERM or SIGHUP, then releases it and exits with 0."
    )]
    Lock(LockArgs),

    /// Take the lock only if it is free, then as `lock`; if it is held, say who holds it and exit
    /// with 75
    #[command(after_help = EXIT_STATUS)]
    Try(TryArgs),

    /// Print who holds the lock: key, value, lease, fencing token and lease time left (exit 1 when
    /// free)
    #[command(
        after_help = EXIT_STATUS,
        long_about = "\
Print who holds the lock: key, value, lease, fencing token and lease time left.

Prints one line: `held key=KEY value=\"VALUE\" lease=ID fencing_token=N ttl_left=Ns` and exits
with 0, or `free` and exits with 1. With --json, one JSON object with the fields held, name,
key, value, lease, fencing_token and ttl_left_secs."
    )]
    Holder(HolderArgs),

    /// Print one line per change of the lock's holder (first the current state) until interrupted
    #[command(
        after_help = EXIT_STATUS,
        long_about = "\
Print one line per change of the lock's holder until SIGINT, SIGTERM or SIGHUP (then exit 0).

The first line is the current state: `snapshot revision=R free` or
`snapshot revision=R held key=KEY value=\"VALUE\" lease=ID fencing_token=N`. Then one line per
change: `acquired revision=R key=...` or `released revision=R key=...`. With --json, one JSON
object per line with the fields event, name, revision and holder (null when free)."
    )]
    Watch(WatchArgs),
}

/// Options shared by `lock` and `try`.
#[derive(Args, Debug)]
struct HoldArgs {
    /// Lock name
    #[arg(value_name = "NAME", value_parser = parse_name)]
    name: String,

    /// Lease TTL: if locker dies, the lock is freed after this long (seconds, or a duration such as
    /// 30s; rounded up to whole seconds)
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_positive_duration)]
    ttl: Duration,

    /// Value stored in the lock key, shown to others as the holder [default: HOST:PID]
    #[arg(long, value_name = "V")]
    value: Option<OsString>,

    /// When the lock is lost, how long CMD has to exit after SIGTERM before it gets SIGKILL
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    kill_after: Duration,

    /// Command to run while holding the lock, with its arguments (after --)
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<OsString>,
}

#[derive(Args, Debug)]
struct LockArgs {
    #[command(flatten)]
    hold: HoldArgs,

    /// Give up waiting for the lock after this long and exit with 124 [default: wait forever]
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    timeout: Option<Duration>,
}

#[derive(Args, Debug)]
struct TryArgs {
    #[command(flatten)]
    hold: HoldArgs,

    /// Exit status when the lock is held by someone else
    #[arg(long, value_name = "N", default_value_t = code::HELD)]
    conflict_exit_code: u8,
}

#[derive(Args, Debug)]
struct HolderArgs {
    /// Lock name
    #[arg(value_name = "NAME", value_parser = parse_name)]
    name: String,

    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// Lock name
    #[arg(value_name = "NAME", value_parser = parse_name)]
    name: String,

    /// Print one JSON object per line instead of text
    #[arg(long)]
    json: bool,
}

// ---------------------------------------------------------------------------
// Argument parsing
// ---------------------------------------------------------------------------

/// `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {s:?}: use a whole number with an optional unit ms, s, m or h \
             (e.g. 500ms, 5s, 2m, 1h; a bare number means seconds)"
        )
    };
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let millis = n
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("duration {s:?} is too large"))?;
    Ok(Duration::from_millis(millis))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

fn parse_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the lock name must not be empty".to_owned());
    }
    if s.chars().any(char::is_control) {
        return Err("the lock name must not contain control characters".to_owned());
    }
    Ok(s.to_owned())
}

/// Turns a clap error into locker's one-line form (help and version are printed as they are).
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(code::USAGE));
        }
        _ => {}
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid usage");
    let mut msg = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    for tip in lines.filter(|l| l.starts_with("tip: ")) {
        msg.push_str(&format!(" ({tip})"));
    }
    say(&format!("{msg}; see 'locker --help'"));
    ExitCode::from(code::USAGE)
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// One line on stderr, prefixed `locker: `, written at once so that it does
/// not interleave with the command's output.
fn say(msg: &str) {
    let line = format!("locker: {}\n", msg.replace('\n', " "));
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// One line on stdout, flushed.
fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn holder_text(h: &Holder) -> String {
    format!(
        "key={} value={:?} lease={} fencing_token={}",
        h.key,
        h.value_str(),
        h.lease,
        h.fencing_token
    )
}

/// The holder's fields as JSON object members (without braces); `ttl_left_secs`
/// only when `with_ttl`.
fn holder_json_fields(h: &Holder, with_ttl: bool) -> String {
    let mut s = format!(
        "\"key\":{},\"value\":{},\"lease\":{},\"fencing_token\":{}",
        json_str(&h.key),
        json_str(&h.value_str()),
        json_str(&h.lease.to_string()),
        h.fencing_token
    );
    if with_ttl {
        let ttl = h
            .ttl_left
            .map_or_else(|| "null".to_owned(), |t| t.as_secs().to_string());
        s.push_str(&format!(",\"ttl_left_secs\":{ttl}"));
    }
    s
}

fn lost_text(reason: LostReason) -> &'static str {
    match reason {
        LostReason::Expired => "etcd says its lease no longer exists",
        LostReason::Unreachable => {
            "no keepalive was answered before the lease could expire (etcd unreachable?)"
        }
        LostReason::Closed => "its lease was closed",
        _ => "its lease can no longer be assumed alive",
    }
}

// ---------------------------------------------------------------------------
// Errors and exit codes
// ---------------------------------------------------------------------------

fn exit_code_for(e: &Error) -> u8 {
    match e {
        Error::InvalidArgument { .. } | Error::InvalidEndpoint { .. } | Error::CertFile { .. } => {
            code::USAGE
        }
        Error::Unreachable { .. }
        | Error::Timeout { .. }
        | Error::NotEtcd { .. }
        | Error::Tls { .. }
        | Error::Ambiguous { .. } => code::UNAVAILABLE,
        Error::AuthFailed { .. } | Error::PermissionDenied { .. } => code::NO_PERMISSION,
        Error::LockLost { .. } | Error::LeaseExpired { .. } => code::LOST,
        Error::AcquireTimeout { .. } => code::ACQUIRE_TIMEOUT,
        Error::Held(_) => code::HELD,
        _ => code::FAILURE,
    }
}

/// Prints the error and returns its exit code.
fn report(e: &Error) -> u8 {
    say(&e.to_string());
    exit_code_for(e)
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

fn signal_code(sig: i32) -> u8 {
    code::SIGNAL_BASE.saturating_add(u8::try_from(sig).unwrap_or(0))
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

/// SIGINT, SIGTERM and SIGHUP, each listened to only if it was not ignored
/// when locker started (a background job of a script ignores SIGINT, a
/// command under `nohup` ignores SIGHUP; they stay ignored).
struct Signals {
    int: Option<Signal>,
    term: Option<Signal>,
    hup: Option<Signal>,
}

fn is_ignored(sig: i32) -> bool {
    // SAFETY: a null new action only queries the current disposition; `old` is
    // a valid, zeroed sigaction for the kernel to fill in.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

fn listen(sig: i32) -> std::io::Result<Option<Signal>> {
    if is_ignored(sig) {
        return Ok(None);
    }
    signal(SignalKind::from_raw(sig)).map(Some)
}

async fn next_of(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            int: listen(libc::SIGINT)?,
            term: listen(libc::SIGTERM)?,
            hup: listen(libc::SIGHUP)?,
        })
    }

    /// The next signal received, as its number.
    ///
    /// Cancel safe.
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = next_of(&mut self.int) => libc::SIGINT,
            _ = next_of(&mut self.term) => libc::SIGTERM,
            _ = next_of(&mut self.hup) => libc::SIGHUP,
        }
    }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
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

/// The endpoints: `--endpoints`/`LOCKER_ENDPOINTS`, else `ETCDCTL_ENDPOINTS`,
/// else the local default.
fn endpoints(cli: &Cli) -> Result<Vec<String>, String> {
    let raw = match &cli.endpoints {
        Some(e) => e.clone(),
        None => match std::env::var("ETCDCTL_ENDPOINTS") {
            Ok(e) if !e.trim().is_empty() => e,
            _ => "http://127.0.0.1:2379".to_owned(),
        },
    };
    let list: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err("no etcd endpoint given: use --endpoints http://HOST:PORT[,...]".to_owned());
    }
    Ok(list)
}

fn client_builder(cli: &Cli) -> Result<locker::ClientBuilder, String> {
    let mut b = Client::builder().endpoints(endpoints(cli)?);
    if let Some(ca) = &cli.cacert {
        b = b.ca_cert_file(ca);
    }
    match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => b = b.client_cert_files(cert, key),
        (None, None) => {}
        _ => return Err("--cert and --key go together (mutual TLS needs both)".to_owned()),
    }
    if let Some(t) = cli.connect_timeout {
        b = b.connect_timeout(t);
    }
    if let Some(t) = cli.request_timeout {
        b = b.request_timeout(t);
    }
    if let Some(user) = &cli.user {
        let (name, password) = match user.split_once(':') {
            Some((n, p)) => (n.to_owned(), p.to_owned()),
            None => match std::env::var("LOCKER_PASSWORD") {
                Ok(p) => (user.clone(), p),
                Err(_) => {
                    return Err(format!(
                        "no password for user {user:?}: use --user NAME:PASSWORD or set LOCKER_PASSWORD"
                    ));
                }
            },
        };
        if name.is_empty() {
            return Err("the user name in --user must not be empty".to_owned());
        }
        b = b.user(name, password);
    }
    if cli.wire_log {
        b = b.audit(|r: &WireRecord| {
            // One write per line, so lines stay whole next to the command's output.
            let line = format!("{r}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
        });
    }
    Ok(b)
}

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
    match cli.command {
        Command::Lock(a) => {
            let mode = Mode::Wait { timeout: a.timeout };
            hold(&client, &mut signals, a.hold, mode).await
        }
        Command::Try(a) => {
            let mode = Mode::Try {
                conflict: a.conflict_exit_code,
            };
            hold(&client, &mut signals, a.hold, mode).await
        }
        Command::Holder(a) => holder(&client, &mut signals, a).await,
        Command::Watch(a) => watch(&client, &mut signals, a).await,
    }
}

// ---------------------------------------------------------------------------
// lock / try
// ---------------------------------------------------------------------------

enum Mode {
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

async fn hold(client: &Client, signals: &mut Signals, args: HoldArgs, mode: Mode) -> u8 {
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

fn send_signal(pid: Option<u32>, sig: i32) {
    if let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: kill has no memory-safety preconditions. The child is not yet
        // reaped (we still wait for it), so the pid cannot have been reused.
        unsafe {
            libc::kill(pid, sig);
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

// ---------------------------------------------------------------------------
// holder / watch
// ---------------------------------------------------------------------------

async fn holder(client: &Client, signals: &mut Signals, args: HolderArgs) -> u8 {
    let r = tokio::select! {
        r = client.holder(&args.name) => r,
        sig = signals.recv() => return signal_code(sig),
    };
    let name = json_str(&args.name);
    let (line, exit) = match r {
        Err(e) => return report(&e),
        Ok(None) if args.json => (format!("{{\"held\":false,\"name\":{name}}}"), code::FREE),
        Ok(None) => ("free".to_owned(), code::FREE),
        Ok(Some(h)) if args.json => (
            format!(
                "{{\"held\":true,\"name\":{name},{}}}",
                holder_json_fields(&h, true)
            ),
            code::OK,
        ),
        Ok(Some(h)) => {
            let ttl = h
                .ttl_left
                .map_or_else(|| "unknown".to_owned(), |t| format!("{}s", t.as_secs()));
            (format!("held {} ttl_left={ttl}", holder_text(&h)), code::OK)
        }
    };
    if let Err(e) = print_line(&line) {
        say(&format!("cannot write to stdout: {e}"));
        return code::FAILURE;
    }
    exit
}

fn event_line(name: &str, ev: &LockEvent, json: bool) -> Option<String> {
    let (kind, holder, revision) = match ev {
        LockEvent::Snapshot { holder, revision } => ("snapshot", holder.as_ref(), revision),
        LockEvent::Acquired { holder, revision } => ("acquired", Some(holder), revision),
        LockEvent::Released { holder, revision } => ("released", Some(holder), revision),
        _ => return None,
    };
    Some(if json {
        // The watch does not read lease times: no ttl_left_secs field.
        let holder = holder.map_or_else(
            || "null".to_owned(),
            |h| format!("{{{}}}", holder_json_fields(h, false)),
        );
        format!(
            "{{\"event\":\"{kind}\",\"name\":{},\"revision\":{revision},\"holder\":{holder}}}",
            json_str(name)
        )
    } else {
        match (kind, holder) {
            ("snapshot", None) => format!("snapshot revision={revision} free"),
            ("snapshot", Some(h)) => {
                format!("snapshot revision={revision} held {}", holder_text(h))
            }
            (_, Some(h)) => format!("{kind} revision={revision} {}", holder_text(h)),
            (_, None) => format!("{kind} revision={revision}"),
        }
    })
}

async fn watch(client: &Client, signals: &mut Signals, args: WatchArgs) -> u8 {
    let mut events = tokio::select! {
        r = client.watch_lock(&args.name) => match r {
            Ok(w) => w,
            Err(e) => return report(&e),
        },
        _ = signals.recv() => return code::OK,
    };
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    if let Some(line) = event_line(&args.name, &ev, args.json) {
                        if let Err(e) = print_line(&line) {
                            if e.kind() == std::io::ErrorKind::BrokenPipe {
                                // Nobody reads any more.
                                return code::OK;
                            }
                            say(&format!("cannot write to stdout: {e}"));
                            return code::FAILURE;
                        }
                    }
                }
                Some(Err(e)) => return report(&e),
                None => {
                    say("the watch ended unexpectedly");
                    return code::FAILURE;
                }
            },
            _ = signals.recv() => return code::OK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "s",
            "5x",
            "-1",
            "1.5s",
            " 5s",
            "5 s",
            "5sec",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
