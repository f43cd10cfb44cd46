//! locker's end of the watchdog (see `watchdog.rs`): starting it with the
//! command, moving its deadline, passing signals on, and its report.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::Child;

use crate::deadline::Mono;
use crate::watchdog::{By, CHANNEL_FD, Config, HIDDEN_ARG};

/// What the watchdog reports.
pub(crate) enum Report {
    /// The command runs, as this pid.
    Started(i32),
    /// The stop locker asked for is under way.
    Stopping,
    /// The watchdog began a stop on its own (and said why on stderr).
    Acting,
    /// The command and everything it started are gone.
    Done(By, u8),
}

/// A running watchdog: locker's end of the socket pair, and the process.
pub(crate) struct Dog {
    process: Child,
    lines: Lines<BufReader<OwnedReadHalf>>,
    tx: OwnedWriteHalf,
    last_deadline: Mono,
}

impl Dog {
    /// Starts the watchdog, which starts the command with `env` added to
    /// its environment.
    pub(crate) fn spawn(cfg: &Config, env: &[(&str, String)]) -> std::io::Result<Dog> {
        let (ours, theirs) = StdUnixStream::pair()?;
        let theirs = OwnedFd::from(theirs);
        let fd = theirs.as_raw_fd();
        let mut c = tokio::process::Command::new(self_exe());
        c.arg0("locker-watchdog")
            .arg(HIDDEN_ARG)
            .args(cfg.to_args())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .process_group(0);
        // SAFETY: between fork and exec only dup2 and fcntl, which are
        // async-signal-safe, are called, on a descriptor open in the parent.
        unsafe {
            c.pre_exec(move || {
                let rc = if fd == CHANNEL_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, CHANNEL_FD)
                };
                if rc == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let process = c.spawn()?;
        drop(theirs);
        ours.set_nonblocking(true)?;
        let (rx, tx) = UnixStream::from_std(ours)?.into_split();
        Ok(Dog {
            process,
            lines: BufReader::new(rx).lines(),
            tx,
            last_deadline: cfg.deadline,
        })
    }

    /// The watchdog's pid.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// The next report; `None` when the watchdog closed its end without one.
    ///
    /// Cancel safe.
    pub(crate) async fn next(&mut self) -> Option<Report> {
        loop {
            let line = self.lines.next_line().await.ok()??;
            let mut words = line.split(' ');
            match (words.next(), words.next(), words.next()) {
                (Some("started"), Some(pid), None) => {
                    if let Ok(pid) = pid.parse() {
                        return Some(Report::Started(pid));
                    }
                }
                (Some("acting"), None, None) => return Some(Report::Acting),
                (Some("stopping"), None, None) => return Some(Report::Stopping),
                (Some("done"), Some(by), Some(code)) => {
                    if let (Some(by), Ok(code)) = (By::parse(by), code.parse()) {
                        return Some(Report::Done(by, code));
                    }
                }
                _ => {}
            }
        }
    }

    /// Moves the watchdog's deadline forward, if `deadline` is later.
    pub(crate) async fn extend(&mut self, deadline: std::time::Instant) {
        let d = Mono::from_instant(deadline);
        if d > self.last_deadline {
            self.last_deadline = d;
            self.send(&format!("deadline {}", d.0)).await;
        }
    }

    /// Passes signal `sig` on to the command.
    pub(crate) async fn signal(&mut self, sig: i32) {
        self.send(&format!("signal {sig}")).await;
    }

    /// Asks for the stop: SIGTERM now, SIGKILL in time.
    pub(crate) async fn stop(&mut self) {
        self.send("stop").await;
    }

    async fn send(&mut self, line: &str) {
        // A watchdog that is gone says so by closing its end: `next` sees it.
        let _ = self.tx.write_all(format!("{line}\n").as_bytes()).await;
    }

    /// Waits for the watchdog process to exit (after its report).
    pub(crate) async fn reap(mut self) {
        drop(self.tx);
        let _ = self.process.wait().await;
    }
}

/// This very program, to run as the watchdog.
fn self_exe() -> std::path::PathBuf {
    // /proc/self/exe is the running binary even if its file was replaced
    // or removed since.
    std::path::PathBuf::from("/proc/self/exe")
}
