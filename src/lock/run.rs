//! Work under a held lock that stops in time: [`LockGuard::run`] drops the
//! work before the lock could be lost, and says why it stopped.

use std::time::Duration;

use tokio::time::Instant;

use super::LockGuard;
use crate::session::LostReason;

/// Why [`LockGuard::run`] stopped the work before it finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunStopped {
    /// The lock was lost: etcd says its lease is gone, the session was
    /// closed, or its deadline passed without a keepalive answer.
    Lost(LostReason),
    /// The lease's deadline came within the margin and no keepalive answer
    /// had moved it: the lease could expire soon, so the work was dropped
    /// while the lock was still held.
    DeadlineNear,
}

impl std::fmt::Display for RunStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunStopped::Lost(r) => write!(f, "the lock was lost ({r:?})"),
            RunStopped::DeadlineNear => {
                f.write_str("the lease could not be kept alive: no keepalive answered in time")
            }
        }
    }
}

impl std::error::Error for RunStopped {}

impl LockGuard {
    /// Runs `work` while the lock is held: returns its output if it
    /// finishes first; drops it (and so cancels it at its next `.await`) as
    /// soon as the lock is lost, or `margin` before the lease's
    /// [`deadline`](Self::deadline) if no keepalive answer has moved the
    /// deadline by then. Since the deadline is never later than etcd's
    /// expiry of the lease, work that yields often is dropped before anyone
    /// else could be granted the lock (unless the lease was revoked or the
    /// key deleted from outside). A [`Leadership`](crate::Leadership) has
    /// it too (through `Deref`).
    ///
    /// `margin` is the time the drop itself needs (its `Drop` impls, and
    /// how long your work may go between two `.await`s). A keepalive is
    /// answered every TTL/3, so the deadline normally stays 2/3 TTL or more
    /// ahead: a margin over TTL/2 stops work that a merely slow keepalive
    /// answer would have saved. Work that blocks its thread cannot be
    /// dropped until it yields: run such work in a process of its own and
    /// kill it (as `locker lock -- CMD` does).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// let guard = client.lock("jobs/nightly").ttl(Duration::from_secs(10)).await?;
    /// match guard.run(Duration::from_millis(500), async { /* the work */ }).await {
    ///     Ok(()) => guard.release().await?,
    ///     Err(why) => eprintln!("stopped: {why}"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RunStopped`]: why the work was dropped before it finished.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the returned future drops the work with it.
    pub async fn run<F: IntoFuture>(
        &self,
        margin: Duration,
        work: F,
    ) -> Result<F::Output, RunStopped> {
        let work = work.into_future();
        tokio::pin!(work);
        loop {
            let Some(deadline) = self.deadline() else {
                return Err(RunStopped::Lost(self.lost().await));
            };
            let stop_at = Instant::from_std(deadline.checked_sub(margin).unwrap_or(deadline));
            tokio::select! {
                // The stop is checked before the work is polled again.
                biased;
                reason = self.lost() => return Err(RunStopped::Lost(reason)),
                _ = tokio::time::sleep_until(stop_at) => {
                    let moved = self
                        .deadline()
                        .is_some_and(|d| d.saturating_duration_since(std::time::Instant::now()) > margin);
                    if !moved {
                        return Err(RunStopped::DeadlineNear);
                    }
                }
                out = &mut work => return Ok(out),
            }
        }
    }
}
