//! The guard of a held lock.

use std::time::Duration;

use crate::error::Result;
use crate::queue::Held;
use crate::session::LostReason;
use crate::types::{LeaseId, Revision};
use crate::wire::etcdserverpb as pb;

/// A held lock. Release it with [`release`](LockGuard::release).
///
/// # Dropping without release
///
/// - A lock with its own lease (from [`Client::lock`](crate::Client::lock)):
///   the keepalive stops at once and, when a tokio runtime is running, the
///   lease is revoked by a background task (bounded by the request
///   timeout), so the next waiter gets the lock within about one round
///   trip. Without a runtime, the lease expires after its TTL.
/// - A lock on a [`Session`](crate::Session): a background task deletes the
///   key if its create revision is still this guard's; without a runtime
///   the key stays until the session is closed or its lease expires.
#[must_use = "dropping the guard releases the lock in the background"]
pub struct LockGuard {
    pub(crate) held: Held,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.held.key)
            .field("fencing_token", &self.held.rev)
            .field("lease", &self.held.session.lease)
            .field("lost", &self.held.session.lost())
            .finish()
    }
}

impl LockGuard {
    /// The lock name.
    pub fn name(&self) -> &str {
        &self.held.name
    }

    /// The lock key, `{name}/{lease hex}`.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The lease the key is attached to.
    pub fn lease(&self) -> LeaseId {
        self.held.session.lease
    }

    /// The TTL etcd granted to the lease.
    pub fn ttl(&self) -> Duration {
        self.held.session.ttl
    }

    /// The value stored in the key.
    pub fn value(&self) -> &[u8] {
        &self.held.value
    }

    /// The fencing token: the key's create revision. It only grows across
    /// successive holders of one name. Pass it to an outside resource and
    /// have it refuse writes carrying a smaller token than one it has seen.
    pub fn fencing_token(&self) -> Revision {
        self.held.rev
    }

    /// The local monotonic time until which the lease is known to be alive
    /// (see [`Session::deadline`](crate::Session::deadline)).
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.held.session.deadline()
    }

    /// Whether the lock is known to be lost: the lost signal has fired, or
    /// would fire now. The first call starts following the key, like
    /// [`lost`](Self::lost); a deletion is known once its event arrives.
    pub fn is_lost(&self) -> bool {
        self.held.lost_now().is_some()
    }

    /// Resolves when the lock can no longer be assumed held: the lease's
    /// local deadline passed without a keepalive answer, etcd said the lease
    /// is gone, or the session was closed. When the lease expires, it fires
    /// before etcd could give the lock to anyone else. It also follows the
    /// key: from the first call of `lost` or [`is_lost`](Self::is_lost)
    /// on, the key is watched (one watch on the client's shared watch
    /// stream, from the revision after the key's creation, so a deletion
    /// that came earlier counts too), and its deletion by another client,
    /// or an operator's revoke of the lease, fires [`LostReason::KeyDeleted`]
    /// as soon as the event arrives, not at the next keepalive. A guard
    /// nobody asks stays off the watch stream (the uncontended lock and
    /// unlock send nothing more).
    ///
    /// ```no_run
    /// # async fn f(guard: locker::LockGuard) {
    /// tokio::select! {
    ///     reason = guard.lost() => eprintln!("lock lost: {reason:?}; stopping"),
    ///     _ = async { /* the work */ } => {}
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> LostReason {
        self.held.wait_lost().await
    }

    /// The lost signal as a `'static` future, for a task or a language
    /// binding that waits while the guard is used, released or dropped
    /// elsewhere. It resolves as [`lost`](Self::lost) does, and with
    /// [`LostReason::Closed`] once the guard is released or dropped; it
    /// keeps neither the lock nor its lease alive.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost_signal(&self) -> impl Future<Output = LostReason> + Send + 'static {
        self.held.lost_signal()
    }

    /// A comparison that holds exactly while this guard's key is the one
    /// that won the lock: put it into your own `Txn` (see
    /// [`Client::txn_raw`](crate::Client::txn_raw)) to make a write
    /// conditional on holding the lock.
    pub fn is_owner(&self) -> pb::Compare {
        self.held.is_owner()
    }

    /// Runs `ops` in one transaction only if this guard still holds the
    /// lock (its key's create revision is still the fencing token).
    /// Returns the answers of the ops.
    ///
    /// Wire calls: one `KV/Txn` (one raft commit); it is not resent once it
    /// may have reached etcd.
    ///
    /// # Errors
    /// [`Error::LockLost`](crate::Error::LockLost) when the key is gone or
    /// is not this guard's, [`Error::LeaseExpired`](crate::Error::LeaseExpired)
    /// when the lost signal already fired (nothing is sent),
    /// [`Error::Ambiguous`](crate::Error::Ambiguous) when the answer was lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the transaction may be applied even if the future is dropped.
    pub async fn txn(&self, ops: Vec<pb::RequestOp>) -> Result<pb::TxnResponse> {
        self.held.txn(ops).await
    }

    /// Writes `key = value` only if this guard still holds the lock; returns
    /// the write's revision. See [`txn`](Self::txn).
    ///
    /// # Errors
    /// As for [`txn`](Self::txn).
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied even if the future is dropped.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Revision> {
        self.held.put(key.as_ref(), value.as_ref()).await
    }

    /// Releases the lock.
    ///
    /// Wire calls: for a lock with its own lease, one `Lease/LeaseRevoke`
    /// (key and lease deleted in one commit); for a lock on a session, one
    /// `KV/Txn` deleting the key if its create revision is still the fencing
    /// token (one commit).
    ///
    /// # Errors
    /// [`Error::LockLost`](crate::Error::LockLost) or
    /// [`Error::LeaseExpired`](crate::Error::LeaseExpired) when the lock had
    /// been lost before the release: the work done under it was not
    /// protected to the end. One false alarm is possible: on a session, a
    /// delete whose first answer was lost is resent, and if the first copy
    /// was applied, the resend finds the key gone and reports `LockLost`
    /// (etcd's answer cannot tell that from a key deleted by someone else).
    /// Network errors: a lock with its own lease then goes when its lease
    /// expires; on a session, the name stays reserved with its key owed, and
    /// the session's next request for the name deletes the key first.
    ///
    /// # Cancel safety
    /// Cancel safe in effect: dropped before its answer, the release goes
    /// on in the background (on a session, the name stays reserved until the
    /// key is gone); a lock with its own lease goes with the drop of its
    /// lease.
    pub fn release(self) -> impl Future<Output = Result<()>> + Send + 'static {
        // Boxed, the guard with it: a caller's future that releases after
        // waiting for the lock holds this future all its life (as much room
        // as its largest step), and the release's state (the guard, its
        // guarded transaction) is needed only while it runs.
        Box::pin(self.held.release())
    }
}
