//! Several locks at once: all or nothing, first come first served, free of
//! deadlock by construction, with one fencing token for the set.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use crate::client::Client;
use crate::error::Result;
use crate::queue::{SetEntry, SetHeld};
use crate::session::{LostReason, Session};
use crate::types::{Holder, LeaseId, Revision};
use crate::wire::etcdserverpb as pb;

/// A request to wait for every lock of a set: set options, then `.await`.
///
/// The names are deduplicated and sorted; each gets the mutex key
/// `{name}/{lease hex}` on one lease, so `etcdctl lock`, etcd's Go Mutex
/// and [`Client::lock`] queue with the set on each name. A name's key
/// is exactly a [`Client::lock`] key: a set is a writer to read locks on
/// that name and, like a plain lock, makes a semaphore's acquire there
/// fail with [`Error::LimitMismatch`](crate::Error::LimitMismatch).
///
/// Wire calls: one `KV/Txn` (one commit) that puts every key, all with one
/// create revision R, and reads each name's first key; plus one
/// `Lease/LeaseGrant` first for a set with its own lease. When every name
/// is free, that is all. Otherwise, for each name whose first key is older
/// than R, the wait of [`LockRequest`](crate::LockRequest) on the keys
/// older than R (never on newer ones), then one read-only `KV/Txn` of
/// every key of the set.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for no name,
/// a bad name, a name that is a `/`-prefix of another (`a` and `a/b`), a
/// bad value or TTL; [`Error::TooManyNames`](crate::Error::TooManyNames)
/// beyond [`MAX_SET_NAMES`](crate::MAX_SET_NAMES);
/// [`Error::AcquireTimeout`](crate::Error::AcquireTimeout) when
/// [`timeout`](Self::timeout) passes; [`Error::LockLost`](crate::Error::LockLost)
/// or [`Error::LeaseExpired`](crate::Error::LeaseExpired) when the lease or
/// a key was lost while waiting; [`Error::AlreadyLocked`](crate::Error::AlreadyLocked)
/// when the session already holds or waits for one of the names; network
/// errors. Bad input is refused before anything is sent.
///
/// # Cancel safety
/// Dropping the future leaves no key on any name: a set with its own
/// lease is revoked in the background, keys on a session are deleted in
/// the background.
#[must_use = "a lock request does nothing until awaited"]
pub struct LockAllRequest {
    entry: SetEntry,
    timeout: Option<Duration>,
}

impl LockAllRequest {
    /// The TTL of the set's own lease (default 10 s); ignored on a session.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.entry.set_ttl(ttl);
        self
    }

    /// The value stored in every key of the set (default:
    /// [`default_value`](crate::default_value)).
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.entry.value = Some(value.into());
        self
    }

    /// Give up waiting after this long (the grant and the reservations
    /// count too). No key is left on any name when the error is returned.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl IntoFuture for LockAllRequest {
    type Output = Result<MultiLockGuard>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<MultiLockGuard>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let held = self.entry.wait(self.timeout).await?;
            Ok(MultiLockGuard { held })
        })
    }
}

/// The outcome of a try on a set.
#[derive(Debug)]
#[must_use]
pub enum TryLockAll {
    /// Every name was free and is now held.
    Acquired(MultiLockGuard),
    /// A name was held or awaited: its first holder (the first busy name
    /// in canonical order). Nothing of ours was left on any name.
    Held(Holder),
}

/// A request to take every lock of a set only if all are free.
///
/// Wire calls: one `KV/Txn` that puts every key only if no name has any
/// key, and otherwise reads each name's first key; so a busy set leaves
/// nothing to clean up. A set with its own lease adds one
/// `Lease/LeaseGrant` before, and one `Lease/LeaseRevoke` after when busy.
///
/// # Errors
/// As for [`LockAllRequest`], without the timeout.
///
/// # Cancel safety
/// As for [`LockAllRequest`].
#[must_use = "a try-lock request does nothing until awaited"]
pub struct TryLockAllRequest {
    entry: SetEntry,
}

impl TryLockAllRequest {
    /// The TTL of the set's own lease (default 10 s); ignored on a session.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.entry.set_ttl(ttl);
        self
    }

    /// The value stored in every key (default: [`default_value`](crate::default_value)).
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.entry.value = Some(value.into());
        self
    }
}

impl IntoFuture for TryLockAllRequest {
    type Output = Result<TryLockAll>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<TryLockAll>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            Ok(match self.entry.try_once().await? {
                Ok(held) => TryLockAll::Acquired(MultiLockGuard { held }),
                Err((name, kv)) => TryLockAll::Held(Holder::from_kv(&name, kv)),
            })
        })
    }
}

/// Every lock of a set, held. Release it with
/// [`release`](MultiLockGuard::release).
///
/// Dropped without release, it goes as a [`LockGuard`](crate::LockGuard)
/// does: a set with its own lease by a background revoke, a set on a
/// session by a background guarded delete of each key.
#[must_use = "dropping the guard releases the locks in the background"]
pub struct MultiLockGuard {
    held: SetHeld,
}

impl std::fmt::Debug for MultiLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiLockGuard")
            .field("keys", &self.held.keys)
            .field("fencing_token", &self.held.rev)
            .field("lease", &self.held.session.lease)
            .field("lost", &self.held.session.lost())
            .finish()
    }
}

impl MultiLockGuard {
    /// The names held, deduplicated, in canonical (byte) order.
    pub fn names(&self) -> &[String] {
        &self.held.names
    }

    /// The keys, `{name}/{lease hex}`, in the order of [`names`](Self::names).
    pub fn keys(&self) -> &[String] {
        &self.held.keys
    }

    /// The one lease every key is attached to.
    pub fn lease(&self) -> LeaseId {
        self.held.session.lease
    }

    /// The TTL etcd granted to the lease.
    pub fn ttl(&self) -> Duration {
        self.held.session.ttl
    }

    /// The value stored in every key.
    pub fn value(&self) -> &[u8] {
        &self.held.value
    }

    /// The set's one fencing token: the create revision R that every key
    /// of the set shares. On each name it is larger than the token of
    /// every earlier holder of that name, and smaller than every later
    /// one's, whether that holder took the name alone or in a set.
    pub fn fencing_token(&self) -> Revision {
        self.held.rev
    }

    /// The local monotonic time until which the lease is known to be alive.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.held.session.deadline()
    }

    /// Whether the set is known to be lost: its lease (the lost signal has
    /// fired), or one of its keys seen deleted. The first call starts
    /// following the keys, like [`lost`](Self::lost).
    pub fn is_lost(&self) -> bool {
        self.held.lost_now().is_some()
    }

    /// Resolves when the set can no longer be assumed held (see
    /// [`LockGuard::lost`](crate::LockGuard::lost)): its one lease is
    /// lost, or any of its keys is deleted (by an operator or another
    /// client), as soon as the deletion's event arrives
    /// ([`LostReason::KeyDeleted`]). The keys are followed from the first
    /// call on: one watch each on the client's one watch stream.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> LostReason {
        self.held.wait_lost().await
    }

    /// [`lost`](Self::lost) as a future that owns what it needs (`Send`
    /// and `'static`: spawn it, or keep it past the guard's borrow). Once
    /// the guard is gone it resolves with [`LostReason::Closed`] (unless
    /// the set was lost before).
    pub fn lost_signal(&self) -> impl Future<Output = LostReason> + Send + 'static {
        self.held.lost_signal()
    }

    /// The comparisons that all hold exactly while this set holds every
    /// name (one per key): put them into your own `Txn`.
    pub fn is_owner(&self) -> Vec<pb::Compare> {
        self.held.is_owner()
    }

    /// Runs `ops` in one transaction only if this set still holds every
    /// name (each key's create revision is still the fencing token).
    ///
    /// Wire calls: one `KV/Txn`, comparing every key of the set; not resent
    /// once it may have reached etcd. The compares and `ops` count against
    /// etcd's `--max-txn-ops` separately.
    ///
    /// # Errors
    /// [`Error::LockLost`](crate::Error::LockLost) when a key is gone or
    /// not this set's, [`Error::LeaseExpired`](crate::Error::LeaseExpired)
    /// when the lost signal already fired (nothing is sent),
    /// [`Error::Ambiguous`](crate::Error::Ambiguous) when the answer was lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the transaction may be applied even if the future
    /// is dropped.
    pub async fn txn(&self, ops: Vec<pb::RequestOp>) -> Result<pb::TxnResponse> {
        self.held.txn(ops).await
    }

    /// Writes `key = value` only if this set still holds every name;
    /// returns the write's revision. See [`txn`](Self::txn).
    ///
    /// # Errors
    /// As for [`txn`](Self::txn).
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied even if the future is
    /// dropped.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Revision> {
        self.held.put(key.as_ref(), value.as_ref()).await
    }

    /// Releases every name in one commit.
    ///
    /// Wire calls: for a set with its own lease, one `Lease/LeaseRevoke`
    /// (every key and the lease in one commit); on a session, one `KV/Txn`
    /// of nested transactions, each deleting one key if its create revision
    /// is still the token.
    ///
    /// # Errors
    /// [`Error::LockLost`](crate::Error::LockLost) or
    /// [`Error::LeaseExpired`](crate::Error::LeaseExpired) when the set had
    /// been lost before the release (on a session: a key was gone). Network
    /// errors: a set with its own lease goes when its lease expires; on a
    /// session, each name's key is deleted in the background.
    ///
    /// # Cancel safety
    /// Cancel safe in effect: dropped before its answer, the release goes
    /// on in the background.
    pub fn release(self) -> impl Future<Output = Result<()>> + Send + 'static {
        // Boxed, as a lock guard's release is.
        Box::pin(self.held.release())
    }
}

impl Client {
    /// Waits, in FIFO order on every name, for all the locks `names` at
    /// once, on one lease of its own: all or nothing, with one fencing
    /// token. Two callers that list the same names in different orders
    /// cannot deadlock. See [`LockAllRequest`].
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// use std::time::Duration;
    /// let set = client
    ///     .lock_all(["accounts/bob", "accounts/alice"])
    ///     .timeout(Duration::from_secs(30))
    ///     .await?;
    /// assert_eq!(set.names(), ["accounts/alice", "accounts/bob"]);
    /// set.put("accounts/transfer-log", "alice -> bob: 10").await?;
    /// println!("fencing token {}", set.fencing_token());
    /// set.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock_all<I, S>(&self, names: I) -> LockAllRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        LockAllRequest {
            entry: SetEntry::own(self, names.into_iter().map(Into::into).collect()),
            timeout: None,
        }
    }

    /// Takes all the locks `names` only if every one is free, on one lease
    /// of its own. See [`TryLockAllRequest`].
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// match client.try_lock_all(["shard/a", "shard/b"]).await? {
    ///     locker::TryLockAll::Acquired(set) => set.release().await?,
    ///     locker::TryLockAll::Held(h) => println!("{} is held by {}", h.name, h.value_str()),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_lock_all<I, S>(&self, names: I) -> TryLockAllRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        TryLockAllRequest {
            entry: SetEntry::own(self, names.into_iter().map(Into::into).collect()),
        }
    }
}

impl Session {
    /// Waits for all the locks `names` at once on this session's lease.
    /// The session reserves every name (in canonical order) for the
    /// request; a name it already holds or waits for is refused with
    /// [`Error::AlreadyLocked`](crate::Error::AlreadyLocked). See
    /// [`LockAllRequest`].
    ///
    /// ```no_run
    /// # async fn f(session: locker::Session) -> locker::Result<()> {
    /// let set = session.lock_all(["a", "b", "c"]).await?;
    /// set.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock_all<I, S>(&self, names: I) -> LockAllRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        LockAllRequest {
            entry: SetEntry::on_session(self.inner.clone(), names),
            timeout: None,
        }
    }

    /// Takes all the locks `names` on this session's lease only if every
    /// one is free. See [`TryLockAllRequest`].
    pub fn try_lock_all<I, S>(&self, names: I) -> TryLockAllRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        TryLockAllRequest {
            entry: SetEntry::on_session(self.inner.clone(), names),
        }
    }
}
