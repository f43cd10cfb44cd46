//! The command line: clap definitions, help texts, and the parsing of
//! durations and lock names.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use locker::Error;

use crate::code;
use crate::deadline::{DEFAULT_KILL_AFTER, KILL_MARGIN, LOCKER_LEAD, max_kill_after};
use crate::output::say;
use crate::under_lock::KillPolicy;

const EXIT_STATUS: &str = "\
Exit status:
  CODE   with a command: the command's own exit status
  0      success; `lock` or `elect` without a command, `watch` or `elect --listen`, stopped by
         SIGINT, SIGTERM or SIGHUP
  1      `holder`: the lock is free; any other failure
  2      usage error: unknown option, empty lock name, zero TTL, a --limit other than the
         one the name's users agreed on (both numbers are named), bad duration or
         endpoint, missing password, --cert without --key (or the reverse),
         an unreadable certificate file
  69     etcd cannot be reached: no endpoint answered, a request timed out, the
         server is not etcd, or a request's outcome is unknown
  75     `try`: the lock is held by someone else (see --conflict-exit-code)
  77     etcd rejected the user name or password, or the user lacks permission
  78     the lock or leadership was lost while held: etcd says its lease is gone (the command
         got SIGTERM, then SIGKILL)
  79     the lease could not be kept alive (no keepalive answered in time; etcd unreachable?):
         the command got SIGTERM, then SIGKILL, and was gone before the lease could expire
  80     locker stalled (stopped, frozen) while the command ran: its watchdog stopped the
         command before the lease could expire. (If locker dies, the watchdog does the same,
         and says so on stderr.)
  124    `lock --timeout`, `elect --timeout`: not acquired or elected in time (nothing is
         left queued)
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
pub(crate) struct Cli {
    /// etcd endpoints, comma-separated (http://HOST:PORT or HOST:PORT). If unset, ETCDCTL_ENDPOINTS
    /// is used, then http://127.0.0.1:2379
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URLS",
        env = "LOCKER_ENDPOINTS"
    )]
    pub(crate) endpoints: Option<String>,

    /// Time allowed to connect to one endpoint [default: 3s]
    #[arg(long, global = true, help_heading = "Global options", value_name = "DUR", env = "LOCKER_CONNECT_TIMEOUT",
          value_parser = parse_positive_duration)]
    pub(crate) connect_timeout: Option<Duration>,

    /// Time allowed for one request to etcd [default: 5s]
    #[arg(long, global = true, help_heading = "Global options", value_name = "DUR", env = "LOCKER_REQUEST_TIMEOUT",
          value_parser = parse_positive_duration)]
    pub(crate) request_timeout: Option<Duration>,

    /// Authenticate as user NAME; the password follows a colon or comes from LOCKER_PASSWORD
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "NAME[:PASSWORD]",
        env = "LOCKER_USER",
        hide_env_values = true
    )]
    pub(crate) user: Option<String>,

    /// CA bundle (PEM) to verify etcd's TLS certificate (default: the system's roots)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        env = "LOCKER_CACERT_FILE"
    )]
    pub(crate) cacert: Option<PathBuf>,

    /// TLS client certificate (PEM), for mutual TLS; needs --key
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        env = "LOCKER_CERT_FILE"
    )]
    pub(crate) cert: Option<PathBuf>,

    /// TLS client key (PEM), for mutual TLS; needs --cert
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        env = "LOCKER_KEY_FILE"
    )]
    pub(crate) key: Option<PathBuf>,

    /// Print every call to etcd on stderr, one line each, starting with "wire "
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "LOCKER_WIRE_LOG",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) wire_log: bool,
    /// Say nothing on stderr about waiting (who holds the lock, how many are ahead, the wait's end)
    #[arg(long, short = 'q', global = true, help_heading = "Global options", env = "LOCKER_QUIET",
          action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) quiet: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Wait for the lock (in FIFO order), then run CMD while holding it, or hold it until
    /// interrupted
    #[command(
        after_help = EXIT_STATUS,
        long_about = "\
Wait for the lock (in FIFO order), then run CMD while holding it, or hold it until interrupted.

With CMD: CMD runs with LOCKER_KEY and ETCD_LOCK_KEY (the lock key), LOCKER_FENCING_TOKEN
and ETCD_LOCK_REV (the fencing token), LOCKER_NAMES and LOCKER_KEYS in its environment. When CMD exits, the lock is released
and locker exits with CMD's exit status. SIGINT, SIGTERM and SIGHUP are passed on to CMD. If
the lock is lost while CMD runs, CMD gets SIGTERM (SIGKILL after --kill-after) and locker
exits with 78 (79 if the lease could not be kept alive).

CMD runs under a watchdog process: CMD and every process it starts (even one that detaches
with setsid or a double fork) are gone before the lease could expire, however locker ends:
lock lost, locker killed (SIGKILL, OOM), stopped (SIGSTOP, Ctrl-Z) or stalled. What CMD leaves
running when it exits gets SIGTERM (then SIGKILL) before the lock is released.

Without CMD: prints `key=KEY fencing_token=N lease=ID` on one line, holds the lock until
SIGINT, SIGTERM or SIGHUP, then releases it and exits with 0.

Several names (`locker lock A B C -- CMD`): all are taken at once or none, in FIFO order on
each name, without deadlock whatever order other callers list them in; one lease and one
fencing token for the set. CMD gets LOCKER_NAMES and LOCKER_KEYS (one per line) and
LOCKER_FENCING_TOKEN and ETCD_LOCK_REV (no LOCKER_KEY); without CMD the line has one `key=` per
name. Not with --shared or --limit."
    )]
    Lock(LockArgs),

    /// Take the lock only if it is free, then as `lock`; if it is held, say who holds it and exit
    /// with 75
    #[command(after_help = EXIT_STATUS)]
    Try(TryArgs),

    /// Print who holds the lock (every holder of a shared lock or semaphore): key, value, lease,
    /// fencing token and lease time left (exit 1 when free); with --queue, the waiters too
    #[command(
        after_help = EXIT_STATUS,
        long_about = "\
Print who holds the lock: key, value, lease, fencing token and lease time left.

Prints one line per holder: `held key=KEY value=\"VALUE\" lease=ID fencing_token=N ttl_left=Ns`
(then ` mode=shared` or ` mode=permit` for a reader or a semaphore's holder) and exits with 0,
or `free` and exits with 1. With --queue, then one line per waiter, in the order they will be
served: `waiting key=KEY value=\"VALUE\" lease=ID fencing_token=N`. With --json, one JSON object
with the fields held, name, key, value, lease, fencing_token and ttl_left_secs (of the first
holder), holders (each with its mode) and, with --queue, waiters."
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
    /// Campaign to lead an election, then run CMD while leader, or lead until interrupted; with
    /// --listen, print the election's leaders and proclamations
    #[command(
        after_help = EXIT_STATUS,
        long_about = "\
Campaign to lead the election NAME with PROPOSAL as the candidate's value (in FIFO order: the
candidate that campaigned first leads), then run CMD while leader, or lead until interrupted.
Candidates are NAME/<lease id in hex>, as with `etcdctl elect`: locker and etcdctl candidates
are one election, and an `etcdctl lock NAME` holder keeps every candidate waiting.
With CMD: when elected, CMD runs with LOCKER_KEY and LOCKER_FENCING_TOKEN in its environment;
when it exits, locker resigns and exits with CMD's exit status; if leadership is lost, CMD gets
SIGTERM (SIGKILL after --kill-after) and locker exits with 78 (79 if the lease could not be
kept alive). CMD and every process it starts are gone before the lease could expire, even if
locker dies or stalls (see `locker lock --help`). Without CMD: when elected, prints
`key=KEY fencing_token=N lease=ID` on one line, leads until SIGINT, SIGTERM or SIGHUP, then
resigns and exits with 0.
With --listen (like `etcdctl elect -l`): prints `leader revision=R key=KEY value=\"V\" lease=ID
fencing_token=N`, `proclaimed revision=R key=...`, `no-leader revision=R` or
`resynced revision=R`, one line per event (the first is the current state), until interrupted.
With --json, one JSON object per line with the fields event, name, revision and leader."
    )]
    Elect(ElectArgs),
}

/// Options shared by `lock` and `try`.
#[derive(Args, Debug)]
pub(crate) struct HoldArgs {
    /// Lock name
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub(crate) name: String,

    /// More lock names: all are taken at once, or none (one fencing token for the set)
    #[arg(value_name = "NAME", value_parser = parse_name, conflicts_with_all = ["shared", "limit"])]
    pub(crate) more: Vec<String>,

    /// Lease TTL: if locker dies, the lock is freed after this long (seconds, or a duration such as
    /// 30s; rounded up to whole seconds)
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_positive_duration)]
    pub(crate) ttl: Duration,

    /// Value stored in the lock key, shown to others as the holder [default: HOST:PID]
    #[arg(long, value_name = "V")]
    pub(crate) value: Option<OsString>,

    /// When the lock is lost or its lease cannot be kept, how long CMD has to exit after SIGTERM
    /// before it gets SIGKILL; at most TTL/2 - 350ms, so that CMD is gone before the lease could
    /// expire [default: 10s, or that most if less]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub(crate) kill_after: Option<Duration>,

    /// As --kill-after, without its limit: SIGKILL comes DUR after SIGTERM even if the lease
    /// expires first, so another holder may run while CMD still does. Unsafe: use only for a CMD
    /// that must not be killed and whose overlap with the next holder does no harm
    #[arg(long, value_name = "DUR", value_parser = parse_duration, conflicts_with = "kill_after")]
    pub(crate) unsafe_kill_after: Option<Duration>,

    /// Take a shared (read) lock: shared holders run together, an exclusive holder alone (like
    /// `flock -s`)
    #[arg(long, conflicts_with = "limit")]
    pub(crate) shared: bool,
    /// Take one of N permits of a semaphore: at most N holders at once (like `consul lock -n N`);
    /// every user of the name must give the same N
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u32>,
    /// Command to run while holding the lock, with its arguments (after --)
    #[arg(last = true, value_name = "CMD")]
    pub(crate) cmd: Vec<OsString>,
}

impl HoldArgs {
    /// Every name given, for a set (more than one distinct name); `None`
    /// for one lock.
    pub(crate) fn set(&self) -> Option<Vec<String>> {
        let mut all: Vec<String> = std::iter::once(&self.name)
            .chain(&self.more)
            .cloned()
            .collect();
        all.sort_unstable();
        all.dedup();
        (all.len() > 1).then_some(all)
    }

    /// The names for messages: `A` or `A, B, C`.
    pub(crate) fn label(&self) -> String {
        match self.set() {
            Some(names) => names.join(", "),
            None => self.name.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct LockArgs {
    #[command(flatten)]
    pub(crate) hold: HoldArgs,

    /// Give up waiting for the lock after this long and exit with 124 [default: wait forever]
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    pub(crate) timeout: Option<Duration>,
}

#[derive(Args, Debug)]
pub(crate) struct TryArgs {
    #[command(flatten)]
    pub(crate) hold: HoldArgs,

    /// Exit status when the lock is held by someone else
    #[arg(long, value_name = "N", default_value_t = code::HELD)]
    pub(crate) conflict_exit_code: u8,
}

#[derive(Args, Debug)]
pub(crate) struct ElectArgs {
    /// Election name
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub(crate) name: String,
    /// The candidate's value, seen by observers as the leader's proposal
    #[arg(value_name = "PROPOSAL", required_unless_present = "listen")]
    pub(crate) proposal: Option<OsString>,
    /// Print the leader and every change until interrupted, instead of campaigning
    #[arg(long, short = 'l', conflicts_with_all = ["proposal", "cmd", "timeout"])]
    pub(crate) listen: bool,
    /// With --listen: one JSON object per line instead of text
    #[arg(long, requires = "listen")]
    pub(crate) json: bool,
    /// Lease TTL: if locker dies, the next candidate is elected after this long (seconds, or a
    /// duration such as 30s; rounded up to whole seconds)
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_positive_duration)]
    pub(crate) ttl: Duration,
    /// Give up campaigning after this long and exit with 124 [default: wait forever]
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    pub(crate) timeout: Option<Duration>,
    /// When leadership is lost or its lease cannot be kept, how long CMD has to exit after SIGTERM
    /// before it gets SIGKILL; at most TTL/2 - 350ms, so that CMD is gone before the lease could
    /// expire [default: 10s, or that most if less]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub(crate) kill_after: Option<Duration>,

    /// As --kill-after, without its limit: SIGKILL comes DUR after SIGTERM even if the lease
    /// expires first, so another leader may run while CMD still does. Unsafe: use only for a CMD
    /// that must not be killed and whose overlap with the next leader does no harm
    #[arg(long, value_name = "DUR", value_parser = parse_duration, conflicts_with = "kill_after")]
    pub(crate) unsafe_kill_after: Option<Duration>,
    /// Command to run while leader, with its arguments (after --)
    #[arg(last = true, value_name = "CMD")]
    pub(crate) cmd: Vec<OsString>,
}

impl ElectArgs {
    /// The campaign as a hold: the proposal is the value.
    pub(crate) fn into_hold(self) -> HoldArgs {
        HoldArgs {
            name: self.name,
            more: Vec::new(),
            ttl: self.ttl,
            value: self.proposal,
            kill_after: self.kill_after,
            unsafe_kill_after: self.unsafe_kill_after,
            shared: false,
            limit: None,
            cmd: self.cmd,
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct HolderArgs {
    /// Lock name
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub(crate) name: String,
    /// Also list the waiters, in the order they will be served
    #[arg(long)]
    pub(crate) queue: bool,

    /// Print one JSON object instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    /// Lock name
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub(crate) name: String,

    /// Print one JSON object per line instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// The requested TTL as etcd will grant it at least: rounded up to whole seconds.
fn whole_seconds(ttl: Duration) -> Duration {
    Duration::from_secs(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
}

/// Refuses a `--kill-after` the lease cannot cover: CMD must be gone
/// before the lease could expire.
pub(crate) fn check_kill_after(command: &Command) -> Result<(), String> {
    let (ttl, kill_after, verb) = match command {
        Command::Lock(a) => (a.hold.ttl, a.hold.kill_after, "lock"),
        Command::Try(a) => (a.hold.ttl, a.hold.kill_after, "try"),
        Command::Elect(a) => (a.ttl, a.kill_after, "elect"),
        _ => return Ok(()),
    };
    let Some(kill_after) = kill_after else {
        return Ok(());
    };
    let ttl = whole_seconds(ttl);
    let most = max_kill_after(ttl);
    if kill_after <= most {
        return Ok(());
    }
    Err(format!(
        "--kill-after {kill_after:?} does not fit a lease of {ttl:?}: the command would still \
         run when the lease could expire and another holder start; with --ttl {}s it may be \
         at most {most:?} (TTL/2 - {:?}); raise --ttl, or accept the overlap with \
         --unsafe-kill-after; see 'locker {verb} --help'",
        ttl.as_secs(),
        KILL_MARGIN + LOCKER_LEAD
    ))
}

/// How CMD is stopped, for the lease etcd granted (`ttl`).
pub(crate) fn kill_policy(args: &HoldArgs, ttl: Duration) -> KillPolicy {
    let most = max_kill_after(ttl);
    match (args.kill_after, args.unsafe_kill_after) {
        (_, Some(d)) => KillPolicy {
            kill_after: d,
            unsafe_kill_after: true,
            fitting: d.min(most),
        },
        (Some(d), None) => KillPolicy {
            kill_after: d.min(most),
            unsafe_kill_after: false,
            fitting: d.min(most),
        },
        (None, None) => {
            let d = DEFAULT_KILL_AFTER.min(most);
            KillPolicy {
                kill_after: d,
                unsafe_kill_after: false,
                fitting: d,
            }
        }
    }
}

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

/// A lock name, checked by the library's own rules (not empty, not too long,
/// no control characters), so that a bad name is a usage error before
/// anything is sent.
fn parse_name(s: &str) -> Result<String, String> {
    match locker::validate_name(s) {
        Ok(()) => Ok(s.to_owned()),
        Err(Error::InvalidArgument { reason }) => Err(reason),
        Err(e) => Err(e.to_string()),
    }
}

/// Turns a clap error into locker's one-line form (help and version are printed as they are).
pub(crate) fn usage_error(e: clap::Error) -> ExitCode {
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
    let mut lines = text.lines().map(str::trim);
    let first = lines.next().unwrap_or("invalid usage");
    let mut msg = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    if msg.ends_with(':') {
        // "the following required arguments were not provided:", then a
        // line per argument: name them.
        let items: Vec<&str> = lines.by_ref().take_while(|l| !l.is_empty()).collect();
        msg = format!("{} {}", msg, items.join(", "));
    }
    for tip in lines.filter(|l| l.starts_with("tip: ")) {
        msg.push_str(&format!(" ({tip})"));
    }
    say(&format!("{msg}; see 'locker --help'"));
    ExitCode::from(code::USAGE)
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
    fn names_follow_the_library_rules() {
        assert_eq!(parse_name("jobs/nightly"), Ok("jobs/nightly".to_owned()));
        let longest = "n".repeat(locker::MAX_NAME_LEN);
        assert_eq!(parse_name(&longest), Ok(longest.clone()));
        for bad in [String::new(), "a\nb".to_owned(), format!("{longest}n")] {
            let e = parse_name(&bad).expect_err("a bad name was accepted");
            assert!(e.contains("lock name"), "{e}");
        }
    }

    #[test]
    fn kill_after_must_fit_the_lease_unless_unsafe() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).expect("parses");
            check_kill_after(&cli.command)
        };
        assert!(parse(&["locker", "lock", "x", "--ttl", "2", "--kill-after", "650ms"]).is_ok());
        let e = parse(&["locker", "lock", "x", "--ttl", "2", "--kill-after", "651ms"])
            .expect_err("a kill-after past the lease was accepted");
        assert!(
            e.contains("--unsafe-kill-after") && e.contains("650ms"),
            "{e}"
        );
        // A TTL of 1.5 s is granted as 2 s at least.
        assert!(
            parse(&[
                "locker",
                "try",
                "x",
                "--ttl",
                "1500ms",
                "--kill-after",
                "600ms"
            ])
            .is_ok()
        );
        assert!(parse(&["locker", "elect", "x", "p", "--kill-after", "5s"]).is_err());
        assert!(
            parse(&[
                "locker",
                "lock",
                "x",
                "--ttl",
                "2",
                "--unsafe-kill-after",
                "1m"
            ])
            .is_ok()
        );

        let cli = Cli::try_parse_from(["locker", "lock", "x", "--ttl", "2"]).expect("parses");
        let Command::Lock(a) = cli.command else {
            panic!("not lock")
        };
        let k = kill_policy(&a.hold, Duration::from_secs(2));
        assert_eq!(k.kill_after, Duration::from_millis(650), "the default fits");
        let k = kill_policy(&a.hold, Duration::from_secs(60));
        assert_eq!(
            k.kill_after,
            Duration::from_secs(10),
            "the default is 10 s at most"
        );
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
