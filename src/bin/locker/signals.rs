//! SIGINT, SIGTERM and SIGHUP: received while locker waits, forwarded to the
//! command (through the watchdog) while it runs.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT, SIGTERM and SIGHUP, each listened to only if it was not ignored
/// when locker started (a background job of a script ignores SIGINT, a
/// command under `nohup` ignores SIGHUP; they stay ignored).
pub(crate) struct Signals {
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
    pub(crate) fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            int: listen(libc::SIGINT)?,
            term: listen(libc::SIGTERM)?,
            hup: listen(libc::SIGHUP)?,
        })
    }

    /// The next signal received, as its number.
    ///
    /// Cancel safe.
    pub(crate) async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = next_of(&mut self.int) => libc::SIGINT,
            _ = next_of(&mut self.term) => libc::SIGTERM,
            _ = next_of(&mut self.hup) => libc::SIGHUP,
        }
    }
}
