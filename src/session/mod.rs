//! A lease and everything that hangs on it: the grant, its place on the
//! client's keepalive stream, the local deadline and lost signal, the revoke on close; and the names
//! the session has queued for.
//!
//! - `lease.rs`: [`SessionInner`], the state shared by a [`Session`] and
//!   every guard taken on it; [`LostReason`].
//! - `names.rs`: the per-name reservations the session owns.
//!
//! # When is a lease lost?
//!
//! The client's keepalive hub (`client/keepalives.rs`: one task and one
//! `LeaseKeepAlive` stream per client, for all its leases) sends one
//! keepalive of the lease every TTL/3, on the lease's own schedule. Each
//! answer with a positive TTL moves the lease's
//! *local deadline* to `sent + TTL`, where `sent` is the monotonic time at
//! which the answered keepalive was sent. etcd starts its own countdown only
//! after it has received that message, so the local deadline is never later
//! than the server's expiry (the clocks of the two machines are not
//! compared; only the local monotonic clock is used). The lost signal fires
//! at the deadline, or at once when etcd answers that the lease is gone:
//! before the server could give the lock to anyone else.
//!
//! # Background traffic
//!
//! A held lease costs one keepalive message and one answer every TTL/3
//! (with the default 10 s TTL: 18 messages each way per minute, no raft
//! commits), however many locks share it. The first keepalive goes out
//! TTL/3 after the grant (after a resume, at once), so a short lock cycle
//! sends none.

mod lease;
mod names;

use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::LeaseId;

pub use lease::LostReason;
pub(crate) use lease::SessionInner;
pub(crate) use names::{Debt, Ticket};

/// One lease shared by many locks. Locking and releasing on a session costs
/// one transaction each; the lease is kept alive on the client's one
/// keepalive stream until [`close`](Session::close).
///
/// Dropping a session without `close` stops its keepalive and, when a tokio
/// runtime is running, revokes the lease in the background (deleting every
/// lock key on it) as soon as no guard taken on it is alive; guards keep the
/// session's lease alive while they exist.
///
/// ```no_run
/// # async fn f(client: locker::Client) -> locker::Result<()> {
/// use std::time::Duration;
/// let session = client.session(Duration::from_secs(10)).await?;
/// let a = session.lock("a").await?;
/// let b = session.lock("b").await?;
/// a.release().await?;
/// b.release().await?;
/// session.close().await?;
/// # Ok(()) }
/// ```
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lease", &self.inner.lease)
            .field("ttl", &self.inner.ttl)
            .field("lost", &self.inner.lost())
            .finish()
    }
}

impl Client {
    /// Opens a session: grants a lease of `ttl` (rounded up to whole
    /// seconds; etcd may raise it to its minimum) and starts its keepalive.
    ///
    /// Wire calls: one `Lease/LeaseGrant`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero TTL; network and server errors.
    ///
    /// # Cancel safety
    /// Cancel safe in effect: a lease granted for a dropped future has no
    /// keys and expires after its TTL.
    pub async fn session(&self, ttl: Duration) -> Result<Session> {
        Ok(Session {
            inner: SessionInner::grant(self, ttl).await?,
        })
    }
}

impl Client {
    /// Resumes a session on a lease granted earlier, for a process that
    /// restarted and kept the lease id (within its TTL): the lease is kept
    /// alive from now on, and a lock or campaign on the session finds its
    /// old key and keeps its place (etcd's `ResumeElection`). A key the
    /// earlier run left under a name in another shape (its read lock, when
    /// a write lock is asked for now; a permit, when a lock) is deleted by
    /// the first request for that name: it would block that request, and
    /// nothing would remove it while the lease lives.
    ///
    /// The lease is renewed at once: with under a third of its TTL left
    /// (even under the whole second etcd reports as 0), waiting for the
    /// usual first keepalive would let it expire.
    ///
    /// Wire calls: one keepalive, sent at once on the client's
    /// `Lease/LeaseKeepAlive` stream (opened now if it is not open yet),
    /// whose answer (the granted TTL, or 0 for a lease that is gone) is
    /// awaited; the same stream keeps the lease alive afterwards.
    /// Later, the first request for each name on the session first sends
    /// one `KV/Range` per other shape, and one `KV/Txn` (a guarded delete)
    /// per key found; a request that gives up or fails before these end
    /// leaves them owed by the name, and the name's next request (or the
    /// background removal of the one that gave up) deletes them.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] when the lease is gone; network errors.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn resume_session(&self, lease: LeaseId) -> Result<Session> {
        Ok(Session {
            inner: SessionInner::adopt(self, lease).await?,
        })
    }
}

impl Session {
    /// The session's lease.
    pub fn lease(&self) -> LeaseId {
        self.inner.lease
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The local monotonic time until which the lease is known to be alive
    /// (the lost signal fires then unless a keepalive answer moves it);
    /// `None` once lost.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.inner.deadline()
    }

    /// Whether the lease is lost (or the session closed), and why.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.inner.lost()
    }

    /// Resolves when the lease is lost or the session closed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> LostReason {
        self.inner.wait_lost().await
    }

    /// The lost signal as a `'static` future (see
    /// [`LockGuard::lost_signal`](crate::LockGuard::lost_signal)); it
    /// resolves with [`LostReason::Closed`] once the session is closed or
    /// dropped, and keeps nothing alive.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost_signal(&self) -> impl Future<Output = LostReason> + Send + 'static {
        self.inner.lost_signal()
    }

    /// Stops the keepalive and revokes the lease, which deletes every lock
    /// key on it in one commit. Guards still alive report the lock lost.
    ///
    /// Wire calls: one `Lease/LeaseRevoke`.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] when the lease had already expired (its locks
    /// were lost before the close); network errors (the lease then expires
    /// by itself after its TTL).
    ///
    /// # Cancel safety
    /// Not cancel safe: the revoke may or may not be applied.
    pub async fn close(self) -> Result<()> {
        let lost = self.inner.lost();
        let existed = self.inner.revoke().await?;
        let lease = self.inner.lease;
        self.inner
            .release_outcome(lost, existed, || Error::LeaseExpired { lease })
    }
}
