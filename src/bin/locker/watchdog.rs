//! The watchdog: a small process between locker and the command, so that
//! the command's whole process tree never outlives the lock, however
//! locker ends or stalls.
//!
//! locker starts it (itself, re-executed with a hidden first argument) once
//! the lock is held, in a process group of its own (a `kill -STOP` of
//! locker's group, or Ctrl-Z, does not stop it), with one end of a socket
//! pair as fd 3. It makes itself a child subreaper, starts the command (in
//! locker's process group, so that the terminal treats it as before) and
//! then keeps the lease's deadline, which locker moves forward as
//! keepalives are answered:
//!
//! - locker asks for a stop (lock lost, or the lease at risk): SIGTERM to
//!   the tree, SIGKILL at `deadline - KILL_MARGIN` or `--kill-after`
//!   later, whichever comes first;
//! - locker's end closes (it died: SIGKILL, OOM, panic): the same, at once;
//! - the deadline nears and locker has not moved it (stopped, stalled):
//!   SIGTERM `lead` before `deadline - KILL_MARGIN`, SIGKILL there;
//! - the command exits by itself: what it left running gets the same
//!   SIGTERM then SIGKILL, so that nothing of it runs once the lock is
//!   released.
//!
//! Then it tells locker how the command ended and who stopped it, and exits.
//!
//! Messages, one line each. To the watchdog: `deadline NANOS` (on the
//! monotonic clock), `signal N` (pass it on to the command), `stop`. From
//! it: `started PID`, `stopping` (the stop locker asked for is under way),
//! `acting` (it stops the command on its own: locker
//! stalled), then `done BY CODE` with BY one of `exited`, `stopped`,
//! `watchdog`.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use crate::code;
use crate::deadline::{KILL_MARGIN, Mono};
use crate::output::say;
use crate::tree;

/// How long a finished watchdog waits for its lines to be written.
const SAY_WAIT: Duration = Duration::from_secs(1);

/// The watchdog's own lines on stderr, each written by a thread of its
/// own: stderr may be a full pipe whose reader is stopped with locker, and
/// the watchdog must not wait on it to stop the command.
#[derive(Default)]
struct Lines(Vec<std::thread::JoinHandle<()>>);

impl Lines {
    fn say(&mut self, line: String) {
        if let Ok(h) = std::thread::Builder::new().spawn(move || say(&line)) {
            self.0.push(h);
        }
    }

    /// Waits (a bounded time) until every line is written.
    fn flush(&mut self) {
        let start = std::time::Instant::now();
        while self.0.iter().any(|h| !h.is_finished()) && start.elapsed() < SAY_WAIT {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The first argument that makes `locker` a watchdog.
pub(crate) const HIDDEN_ARG: &str = "__locker_watchdog";

/// The watchdog's end of the socket pair.
pub(crate) const CHANNEL_FD: RawFd = 3;

/// How often a stopping watchdog looks whether the tree is gone.
const STOP_POLL: Duration = Duration::from_millis(20);

/// How long SIGKILLed processes may take to be gone before the watchdog
/// reports them stuck.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Who ended the command, as the watchdog reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum By {
    /// The command exited by itself.
    Exited,
    /// locker asked for the stop.
    Stopped,
    /// The watchdog stopped it on its own: locker died or stalled.
    Watchdog,
}

impl By {
    pub(crate) fn word(self) -> &'static str {
        match self {
            By::Exited => "exited",
            By::Stopped => "stopped",
            By::Watchdog => "watchdog",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<By> {
        [By::Exited, By::Stopped, By::Watchdog]
            .into_iter()
            .find(|b| b.word() == s)
    }
}

/// What locker tells the watchdog when it starts it.
pub(crate) struct Config {
    /// The lease's deadline when the watchdog starts.
    pub(crate) deadline: Mono,
    /// SIGTERM to SIGKILL after a stop.
    pub(crate) kill_after: Duration,
    /// `--unsafe-kill-after`: the SIGKILL waits `kill_after` even past the deadline.
    pub(crate) unsafe_kill_after: bool,
    /// How long before `deadline - KILL_MARGIN` the watchdog sends SIGTERM
    /// on its own when locker stops moving the deadline.
    pub(crate) lead: Duration,
    /// locker's process group, for the command.
    pub(crate) pgid: i32,
    /// locker's pid, for the watchdog's messages.
    pub(crate) locker_pid: i32,
    /// What is held, for the messages: `lock key K`.
    pub(crate) what: String,
    pub(crate) cmd: Vec<OsString>,
}

impl Config {
    /// The arguments after [`HIDDEN_ARG`].
    pub(crate) fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            self.deadline.0.to_string().into(),
            self.kill_after.as_millis().to_string().into(),
            u8::from(self.unsafe_kill_after).to_string().into(),
            self.lead.as_millis().to_string().into(),
            self.pgid.to_string().into(),
            self.locker_pid.to_string().into(),
            self.what.clone().into(),
        ];
        a.extend(self.cmd.iter().cloned());
        a
    }

    fn from_args(mut args: impl Iterator<Item = OsString>) -> Option<Config> {
        let mut next = || args.next()?.into_string().ok();
        let num = |s: Option<String>| s?.parse::<u64>().ok();
        let deadline = Mono(num(next())?);
        let kill_after = Duration::from_millis(num(next())?);
        let unsafe_kill_after = num(next())? == 1;
        let lead = Duration::from_millis(num(next())?);
        let pgid = next()?.parse().ok()?;
        let locker_pid = next()?.parse().ok()?;
        let what = next()?;
        let cmd: Vec<OsString> = args.collect();
        (!cmd.is_empty()).then_some(Config {
            deadline,
            kill_after,
            unsafe_kill_after,
            lead,
            pgid,
            locker_pid,
            what,
            cmd,
        })
    }
}

/// The watchdog's `main`: `args` are those after [`HIDDEN_ARG`]. Returns
/// its exit code (nobody may be left to read it).
pub(crate) fn run(args: impl Iterator<Item = OsString>) -> u8 {
    let Some(cfg) = Config::from_args(args) else {
        say("watchdog: bad arguments (it is started by locker itself, not by hand)");
        return code::USAGE;
    };
    // SAFETY: fd 3 was set up by locker as our end of the socket pair; we
    // take sole ownership of it here.
    let chan = unsafe { UnixStream::from_raw_fd(CHANNEL_FD) };
    let mut dog = match Watchdog::start(cfg, chan) {
        Ok(dog) => dog,
        Err(e) => {
            say(&format!("watchdog: cannot start: {e}"));
            return code::FAILURE;
        }
    };
    dog.run();
    dog.lines.flush();
    code::OK
}

/// The stop under way: when SIGKILL is due, and who asked.
struct Stop {
    by: By,
    kill_at: Mono,
}

struct Watchdog {
    cfg: Config,
    chan: UnixStream,
    /// Bytes read from locker, not yet a whole line.
    inbox: Vec<u8>,
    locker_gone: bool,
    signals: SignalFd,
    me: i32,
    command: Option<i32>,
    /// The command's exit code once reaped.
    status: Option<u8>,
    deadline: Mono,
    stop: Option<Stop>,
    /// The SIGKILL of the stop was sent (and the tree found gone, or given up on).
    killed: bool,
    lines: Lines,
}

impl Watchdog {
    fn start(cfg: Config, chan: UnixStream) -> std::io::Result<Watchdog> {
        set_cloexec(chan.as_raw_fd())?;
        chan.set_nonblocking(true)?;
        // SAFETY: prctl with these arguments only sets a flag of this process.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let signals = SignalFd::new()?;
        let deadline = cfg.deadline;
        Ok(Watchdog {
            cfg,
            chan,
            inbox: Vec::new(),
            locker_gone: false,
            signals,
            me: std::process::id().try_into().unwrap_or(0),
            command: None,
            status: None,
            deadline,
            stop: None,
            killed: false,
            lines: Lines::default(),
        })
    }

    fn run(&mut self) {
        match self.spawn() {
            Ok(pid) => {
                self.command = Some(pid);
                self.tell(&format!("started {pid}"));
            }
            Err(exit) => {
                self.status = Some(exit);
                self.tell(&format!("done {} {exit}", By::Exited.word()));
                return;
            }
        }
        loop {
            let now = Mono::now();
            self.step(now);
            if let Some(by) = self.finished() {
                let killed = code::SIGNAL_BASE + libc::SIGKILL as u8;
                let exit = self.status.unwrap_or(killed);
                self.tell(&format!("done {} {exit}", by.word()));
                return;
            }
            self.wait(self.next_wake(now));
        }
    }

    /// Starts the command in locker's process group; it gets SIGKILL if
    /// the watchdog dies. On failure says why and returns 126 or 127.
    fn spawn(&self) -> Result<i32, u8> {
        let cfg = &self.cfg;
        let mut c = std::process::Command::new(&cfg.cmd[0]);
        c.args(&cfg.cmd[1..]).process_group(cfg.pgid);
        let restore_ttou = !self.signals.ttou_was_ignored;
        // SAFETY: between fork and exec only prctl, signal and sigprocmask,
        // which are async-signal-safe, are called.
        unsafe {
            c.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if restore_ttou {
                    libc::signal(libc::SIGTTOU, libc::SIG_DFL);
                }
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                Ok(())
            });
        }
        match c.spawn() {
            Ok(child) => Ok(i32::try_from(child.id()).unwrap_or(0)),
            Err(e) => {
                let program = cfg.cmd[0].to_string_lossy();
                say(&format!("cannot run {program:?}: {e}"));
                Err(if e.kind() == std::io::ErrorKind::NotFound {
                    code::NOT_FOUND
                } else {
                    code::CANNOT_EXECUTE
                })
            }
        }
    }

    /// Acts on what is due at `now`: locker's messages, exits, the
    /// deadline, the SIGKILL.
    fn step(&mut self, now: Mono) {
        self.read_locker();
        self.reap();
        if self.stop.is_none() {
            if self.locker_gone {
                self.lines.say(format!(
                    "watchdog: locker (pid {}) died holding {}; stopping the command's \
                     process tree (exit {})",
                    self.cfg.locker_pid,
                    self.cfg.what,
                    code::WATCHDOG
                ));
                self.begin_stop(By::Watchdog, now);
            } else if now >= self.own_term_at() {
                self.tell("acting");
                self.lines.say(format!(
                    "watchdog: locker (pid {}) stopped renewing the lease of {} (stopped or \
                     stalled?); stopping the command's process tree before the lease can \
                     expire (exit {})",
                    self.cfg.locker_pid,
                    self.cfg.what,
                    code::WATCHDOG
                ));
                self.begin_stop(By::Watchdog, now);
            } else if self.status.is_some() {
                self.begin_stop(By::Exited, now);
            }
        }
        let due = self.stop.as_ref().is_some_and(|s| now >= s.kill_at);
        if due && !self.killed {
            let me = self.me;
            if !tree::kill_all(me, KILL_WAIT, || self.reap()) {
                self.lines.say(
                    "watchdog: some of the command's processes survive SIGKILL (stuck in the \
                     kernel?)"
                        .to_owned(),
                );
            }
            self.killed = true;
        }
    }

    /// When the watchdog sends SIGTERM on its own, if locker has not moved
    /// the deadline by then.
    fn own_term_at(&self) -> Mono {
        self.deadline.saturating_sub(KILL_MARGIN + self.cfg.lead)
    }

    /// SIGTERM to the tree now, SIGKILL when due.
    fn begin_stop(&mut self, by: By, now: Mono) {
        let bound = self.deadline.saturating_sub(KILL_MARGIN);
        let after = now + self.cfg.kill_after;
        let kill_at = if self.cfg.unsafe_kill_after {
            after
        } else {
            after.min(bound)
        };
        tree::signal_all(self.me, libc::SIGTERM);
        self.stop = Some(Stop { by, kill_at });
    }

    /// Who ended the command, once it and everything it started are gone.
    fn finished(&self) -> Option<By> {
        let stop = self.stop.as_ref()?;
        let gone = self.status.is_some() && tree::descendants(self.me).is_empty();
        (gone || self.killed).then_some(stop.by)
    }

    fn next_wake(&self, now: Mono) -> Mono {
        match &self.stop {
            Some(stop) => stop.kill_at.min(now + STOP_POLL),
            None => self.own_term_at(),
        }
    }

    /// Waits for a message, a signal, or `until`.
    fn wait(&mut self, until: Mono) {
        let ms = Mono::now().until(until).as_millis().saturating_add(1);
        let timeout = i32::try_from(ms).unwrap_or(i32::MAX);
        let chan_events = if self.locker_gone { 0 } else { libc::POLLIN };
        let mut fds = [
            libc::pollfd {
                fd: self.chan.as_raw_fd(),
                events: chan_events,
                revents: 0,
            },
            libc::pollfd {
                fd: self.signals.fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds.
        unsafe {
            libc::poll(fds.as_mut_ptr(), 2, timeout);
        }
        if self.signals.drain_asked_to_stop() && self.stop.is_none() {
            // SIGTERM, SIGINT or SIGHUP sent to the watchdog itself: it
            // cannot stay, so neither can the command.
            self.lines.say(format!(
                "watchdog: told to end (SIGTERM, SIGINT or SIGHUP); stopping the command's \
                 process tree (exit {})",
                code::WATCHDOG
            ));
            self.tell("acting");
            self.begin_stop(By::Watchdog, Mono::now());
        }
    }

    /// Reads what locker sent; notes when its end closed.
    fn read_locker(&mut self) {
        if self.locker_gone {
            return;
        }
        let mut buf = [0u8; 512];
        loop {
            match self.chan.read(&mut buf) {
                Ok(0) => {
                    self.locker_gone = true;
                    break;
                }
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.locker_gone = true;
                    break;
                }
            }
        }
        while let Some(end) = self.inbox.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.inbox.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            self.on_message(&line);
        }
    }

    fn on_message(&mut self, line: &str) {
        let (word, arg) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "deadline" => {
                if let Ok(n) = arg.parse() {
                    self.deadline = self.deadline.max(Mono(n));
                }
            }
            "signal" => {
                if let (Ok(sig), Some(pid), None) = (arg.parse(), self.command, self.status) {
                    tree::send(pid, sig);
                }
            }
            "stop" => match self.stop.as_ref().map(|s| s.by) {
                // Said already: `acting`.
                Some(By::Watchdog) => {}
                Some(_) => self.tell("stopping"),
                None => {
                    self.begin_stop(By::Stopped, Mono::now());
                    self.tell("stopping");
                }
            },
            _ => {}
        }
    }

    /// Reaps every exited child (the command, and orphans re-parented
    /// here); notes the command's exit code.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid int for the kernel to fill in.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if Some(pid) == self.command {
                self.status = Some(exit_code(status));
            }
        }
    }

    /// One line to locker; lost if locker is gone. Never blocks: the
    /// watchdog sends a handful of lines in all, which fit the socket's
    /// buffer even when locker is frozen and reads none.
    fn tell(&mut self, line: &str) {
        if self.locker_gone {
            return;
        }
        let _ = self.chan.write_all(format!("{line}\n").as_bytes());
    }
}

/// An exit status as locker's exit code: the command's own, or 128+N when
/// killed by signal N.
fn exit_code(status: i32) -> u8 {
    if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status) & 0xff) as u8
    } else if libc::WIFSIGNALED(status) {
        code::SIGNAL_BASE.saturating_add(u8::try_from(libc::WTERMSIG(status)).unwrap_or(127))
    } else {
        code::FAILURE
    }
}

fn set_cloexec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if rc == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SIGCHLD, SIGTERM, SIGINT and SIGHUP, blocked and read from a signalfd,
/// so that `poll` wakes for them; SIGTTOU ignored, so that a line on a
/// terminal never stops the watchdog.
struct SignalFd {
    fd: RawFd,
    ttou_was_ignored: bool,
}

impl SignalFd {
    fn new() -> std::io::Result<SignalFd> {
        // SAFETY: plain calls on a zeroed sigset_t that we own; the
        // watchdog has a single thread, so sigprocmask is its mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            Ok(SignalFd {
                fd,
                ttou_was_ignored: old == libc::SIG_IGN,
            })
        }
    }

    /// Reads every pending signal; true if one asks the watchdog to stop.
    fn drain_asked_to_stop(&self) -> bool {
        let mut asked = false;
        loop {
            // SAFETY: a zeroed signalfd_siginfo is a valid buffer of its size.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: `info` is writable for `size` bytes.
            let n = unsafe { libc::read(self.fd, (&raw mut info).cast(), size) };
            if usize::try_from(n).ok() != Some(size) {
                return asked;
            }
            let sig = i32::try_from(info.ssi_signo).unwrap_or(0);
            asked |= sig != libc::SIGCHLD;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_survives_the_command_line() {
        let cfg = Config {
            deadline: Mono(123_456_789),
            kill_after: Duration::from_millis(650),
            unsafe_kill_after: true,
            lead: Duration::from_millis(325),
            pgid: 42,
            locker_pid: 43,
            what: "lock key a b/1".to_owned(),
            cmd: vec!["sh".into(), "-c".into(), "echo 'x y'".into()],
        };
        let back = Config::from_args(cfg.to_args().into_iter()).expect("parses");
        assert_eq!(back.deadline, cfg.deadline);
        assert_eq!(back.kill_after, cfg.kill_after);
        assert!(back.unsafe_kill_after);
        assert_eq!(back.lead, cfg.lead);
        assert_eq!((back.pgid, back.locker_pid), (42, 43));
        assert_eq!(back.what, cfg.what);
        assert_eq!(back.cmd, cfg.cmd);
        assert!(Config::from_args(["1".into(), "x".into()].into_iter()).is_none());
    }

    #[test]
    fn exit_statuses_map_as_the_shell_does() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGKILL), 128 + 9);
    }
}
