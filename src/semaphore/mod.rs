//! Counting semaphores on the queue engine: at most N holders of a name,
//! in arrival order.
//!
//! Layout: a holder's key is `{name}/permit/{lease hex}`; the holders are
//! the first N live keys by create revision. A new key always gets a higher
//! revision, so a holder stays a holder until it leaves, and waiters are
//! served first come, first served. A waiter watches only the N keys just
//! ahead of it: a release wakes at most N waiters, whatever the queue's
//! length.
//!
//! Agreement on N: the first user of an idle name stores N in the key
//! `{name}.permits` (outside the queue's range; it stays when the name is
//! idle); every acquire compares it in the same `Txn`, so a client asking
//! for another number gets [`Error::LimitMismatch`](crate::Error::LimitMismatch)
//! naming both, and no mix of limits can let in more holders than agreed.
//! N can change only while nobody holds or waits. A name used as a plain
//! lock (or a read-write lock) is refused the same way, and a plain lock of
//! the same name waits for every permit holder.
//!
//! Fencing: each holder's token is its own key's create revision. Tokens
//! grow in arrival order, but with N > 1 several holders are valid at once:
//! a resource can refuse a holder's write only by remembering which tokens
//! have left, not by "the highest seen wins".

use crate::client::Client;
use crate::lock::{LockRequest, TryLockRequest};
use crate::queue::{Entry, Rule};
use crate::session::{Session, SessionInner};
use std::sync::Arc;

/// A counting semaphore: `permits` holders at most, from [`Client::semaphore`]
/// or [`Session::semaphore`]. Cheap to clone; it sends nothing by itself.
#[derive(Clone, Debug)]
pub struct Semaphore {
    on: On,
    name: String,
    permits: u32,
}

#[derive(Clone)]
enum On {
    Client(Client),
    Session(Arc<SessionInner>),
}

impl std::fmt::Debug for On {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            On::Client(_) => f.write_str("own lease"),
            On::Session(s) => write!(f, "session {}", s.lease),
        }
    }
}

impl Semaphore {
    fn entry(&self) -> Entry {
        let (name, rule) = (self.name.clone(), Rule::semaphore(self.permits));
        match &self.on {
            On::Client(c) => Entry::own(c, name, rule),
            On::Session(s) => Entry::on_session(s.clone(), name, rule),
        }
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of permits.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Waits for a permit, in FIFO order. Options, wire calls and errors as
    /// [`LockRequest`], plus [`Error::LimitMismatch`](crate::Error::LimitMismatch)
    /// when the name's users agreed on another number of permits, and
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for 0 or
    /// more than [`MAX_PERMITS`](crate::MAX_PERMITS) permits. A waiter
    /// watches up to N keys (one `Watch` stream each).
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// let builds = client.semaphore("ci/builders", 4);
    /// let permit = builds.acquire().await?;
    /// // ... at most 4 of these run at once ...
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn acquire(&self) -> LockRequest {
        LockRequest::new(self.entry())
    }

    /// Takes a permit only if one is free now: the key is queued, and
    /// removed at once unless it is among the first N. A busy semaphore
    /// costs one more commit than a free one (the removal).
    pub fn try_acquire(&self) -> TryLockRequest {
        TryLockRequest::new(self.entry())
    }
}

impl Client {
    /// A semaphore of `permits` on `name`; each permit on a lease of its own.
    pub fn semaphore(&self, name: impl Into<String>, permits: u32) -> Semaphore {
        Semaphore {
            on: On::Client(self.clone()),
            name: name.into(),
            permits,
        }
    }
}

impl Session {
    /// A semaphore of `permits` on `name`, its permits on this session's
    /// lease (one permit of a name per session at a time).
    pub fn semaphore(&self, name: impl Into<String>, permits: u32) -> Semaphore {
        Semaphore {
            on: On::Session(self.inner.clone()),
            name: name.into(),
            permits,
        }
    }
}
