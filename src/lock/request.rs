//! Lock requests: wait for a lock, or take it only if it is free.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use super::guard::LockGuard;
use crate::client::Client;
use crate::error::Result;
use crate::queue::{Entry, Rule};
use crate::session::Session;
use crate::types::Holder;

/// A request to wait for a lock: set options, then `.await` it.
///
/// Wire calls when the lock is free: one `KV/Txn` (plus one
/// `Lease/LeaseGrant` first for a lock with its own lease). When it is
/// held, the same `KV/Txn` queues my key and reads my predecessor; then,
/// per predecessor, one `Watch` stream on that key with its create request
/// and one `KV/Range` of the key (up to two more creates and reads on the
/// same stream when the store moved meanwhile, then `KV/Range` reads of
/// the key 2, 4, 8 … 64 ms apart if none of the three watches is proven
/// synced), and one read-only `KV/Txn` to find the next predecessor when
/// one leaves that was not the holder; finally one `KV/Range` proving my
/// key was still there when the holder left. Reads are serializable; one
/// that does not show my own key is repeated as a linearizable read before
/// the lock is reported lost.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad
/// name, value or TTL; [`Error::AcquireTimeout`](crate::Error::AcquireTimeout)
/// when [`timeout`](Self::timeout) passes;
/// [`Error::LockLost`](crate::Error::LockLost) or
/// [`Error::LeaseExpired`](crate::Error::LeaseExpired) when the lease was
/// lost while waiting; [`Error::AlreadyLocked`](crate::Error::AlreadyLocked)
/// when the session already holds or waits for this name; network errors.
///
/// # Cancel safety
/// Dropping the future leaves nothing queued: a lock with its own lease is
/// revoked in the background, a key on a session is deleted in the
/// background.
#[must_use = "a lock request does nothing until awaited"]
pub struct LockRequest {
    entry: Entry,
    timeout: Option<Duration>,
}

impl LockRequest {
    pub(crate) fn new(entry: Entry) -> Self {
        LockRequest {
            entry,
            timeout: None,
        }
    }

    /// The TTL of the lock's own lease (default 10 s). Ignored for a lock on
    /// a session, which uses the session's lease.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.entry.set_ttl(ttl);
        self
    }

    /// The value stored in the key, visible to others as the holder's
    /// identity (default: [`default_value`](crate::default_value)).
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.entry.value = Some(value.into());
        self
    }

    /// Give up waiting after this long (the grant and first transaction
    /// count too). The queue key is removed before the error is returned.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl IntoFuture for LockRequest {
    type Output = Result<LockGuard>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<LockGuard>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let held = self.entry.wait(self.timeout).await?;
            Ok(LockGuard { held })
        })
    }
}

/// The outcome of a try-lock.
#[derive(Debug)]
#[must_use]
pub enum TryLock {
    /// The lock was free and is now held.
    Acquired(LockGuard),
    /// Someone else holds the lock (or waits for it first); nothing of ours
    /// was left behind.
    Held(Holder),
}

/// A request to take a lock only if it is free: set options, then `.await`.
///
/// Wire calls: one `KV/Txn` that creates the key only if no key exists
/// under `{name}/`, and otherwise reads the holder; so a busy lock leaves
/// nothing to clean up. A lock with its own lease adds one
/// `Lease/LeaseGrant` before, and one `Lease/LeaseRevoke` after when the
/// lock was busy.
///
/// # Errors
/// As for [`LockRequest`], without the timeout.
///
/// # Cancel safety
/// As for [`LockRequest`].
#[must_use = "a try-lock request does nothing until awaited"]
pub struct TryLockRequest {
    entry: Entry,
}

impl TryLockRequest {
    pub(crate) fn new(entry: Entry) -> Self {
        TryLockRequest { entry }
    }

    /// The TTL of the lock's own lease (default 10 s); ignored on a session.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.entry.set_ttl(ttl);
        self
    }

    /// The value stored in the key (default: [`default_value`](crate::default_value)).
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.entry.value = Some(value.into());
        self
    }
}

impl IntoFuture for TryLockRequest {
    type Output = Result<TryLock>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<TryLock>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let name = self.entry.name.clone();
            Ok(match self.entry.try_once().await? {
                Ok(held) => TryLock::Acquired(LockGuard { held }),
                Err(holder) => TryLock::Held(Holder::from_kv(&name, holder)),
            })
        })
    }
}

impl Client {
    /// Waits in FIFO order for the lock `name`, on a lease of its own kept
    /// alive until release (the original Go locker's model).
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// use std::time::Duration;
    /// let guard = client
    ///     .lock("jobs/nightly")
    ///     .ttl(Duration::from_secs(5))
    ///     .value("host-a")
    ///     .timeout(Duration::from_secs(30))
    ///     .await?;
    /// println!("fencing token {}", guard.fencing_token());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock(&self, name: impl Into<String>) -> LockRequest {
        LockRequest {
            entry: Entry::own(self, name.into(), Rule::EXCLUSIVE),
            timeout: None,
        }
    }

    /// Takes the lock `name` only if it is free, on a lease of its own.
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// match client.try_lock("jobs/nightly").await? {
    ///     locker::TryLock::Acquired(guard) => guard.release().await?,
    ///     locker::TryLock::Held(h) => println!("held by {}", h.value_str()),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_lock(&self, name: impl Into<String>) -> TryLockRequest {
        TryLockRequest {
            entry: Entry::own(self, name.into(), Rule::EXCLUSIVE),
        }
    }
}

impl Session {
    /// Waits in FIFO order for the lock `name` on this session's lease.
    /// See [`LockRequest`] for options and wire calls.
    pub fn lock(&self, name: impl Into<String>) -> LockRequest {
        LockRequest {
            entry: Entry::on_session(self.inner.clone(), name.into(), Rule::EXCLUSIVE),
            timeout: None,
        }
    }

    /// Takes the lock `name` on this session's lease only if it is free.
    /// See [`TryLockRequest`].
    pub fn try_lock(&self, name: impl Into<String>) -> TryLockRequest {
        TryLockRequest {
            entry: Entry::on_session(self.inner.clone(), name.into(), Rule::EXCLUSIVE),
        }
    }
}
