//! Read-write locks on the queue engine: readers share, a writer is alone,
//! in arrival order.
//!
//! Layout: a writer's key is `{name}/{lease hex}`, the mutex's (so a writer,
//! a [`Client::lock`] holder and an `etcdctl lock NAME` holder exclude each
//! other); a reader's key is `{name}/read/{lease hex}`, recognisable from
//! the key alone. The rules:
//! - a reader holds when no writer's key (any key under `{name}/` outside
//!   `{name}/read/`) was created before its own;
//! - a writer holds when no key at all was created before its own (the
//!   mutex rule, so etcd's Go `Mutex` and `etcdctl lock` wait for readers
//!   too).
//!
//! Fair by arrival: a reader that arrives after a waiting writer waits
//! behind it, so writers do not starve. Readers wait on the newest writer
//! ahead of them only; a writer on its immediate predecessor only.
//!
//! Unlike etcd's Go `recipes.RWMutex`: a try form, cancellation that
//! leaves nothing queued, and the post-wait check of the waiter's own key
//! (etcd #16221: a waiter whose lease was revoked there still gets the lock).

use crate::client::Client;
use crate::lock::{LockRequest, TryLockRequest};
use crate::queue::{Entry, Rule};
use crate::session::Session;

impl Client {
    /// Waits for a shared (read) lock on `name`, on a lease of its own.
    /// Options, wire calls and errors as [`LockRequest`]; the guard is a
    /// [`LockGuard`](crate::LockGuard) whose key is `{name}/read/{lease}`.
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// let reader = client.read_lock("config").await?;
    /// // ... read, alongside other readers; no writer meanwhile ...
    /// reader.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn read_lock(&self, name: impl Into<String>) -> LockRequest {
        LockRequest::new(Entry::own(self, name.into(), Rule::READER))
    }

    /// Waits for the exclusive (write) lock on `name`: the same as
    /// [`lock`](Client::lock), which excludes readers too.
    pub fn write_lock(&self, name: impl Into<String>) -> LockRequest {
        self.lock(name)
    }

    /// Takes a read lock on `name` only if no writer holds or waits.
    pub fn try_read_lock(&self, name: impl Into<String>) -> TryLockRequest {
        TryLockRequest::new(Entry::own(self, name.into(), Rule::READER))
    }

    /// Takes the write lock on `name` only if nobody holds or waits: the
    /// same as [`try_lock`](Client::try_lock).
    pub fn try_write_lock(&self, name: impl Into<String>) -> TryLockRequest {
        self.try_lock(name)
    }
}

impl Session {
    /// Waits for a read lock on `name` on this session's lease.
    pub fn read_lock(&self, name: impl Into<String>) -> LockRequest {
        LockRequest::new(Entry::on_session(
            self.inner.clone(),
            name.into(),
            Rule::READER,
        ))
    }

    /// Waits for the write lock on `name` on this session's lease.
    pub fn write_lock(&self, name: impl Into<String>) -> LockRequest {
        self.lock(name)
    }

    /// Takes a read lock on `name` on this session's lease, only if no
    /// writer holds or waits.
    pub fn try_read_lock(&self, name: impl Into<String>) -> TryLockRequest {
        TryLockRequest::new(Entry::on_session(
            self.inner.clone(),
            name.into(),
            Rule::READER,
        ))
    }

    /// Takes the write lock on `name` on this session's lease, only if
    /// nobody holds or waits.
    pub fn try_write_lock(&self, name: impl Into<String>) -> TryLockRequest {
        self.try_lock(name)
    }
}
