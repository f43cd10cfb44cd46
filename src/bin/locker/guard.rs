//! What `lock`, `try` and `elect` hold: a lock, a set of locks or a
//! leadership, seen the same way by the code that runs the command and
//! releases.

use locker::{Leadership, LeaseId, LockGuard, LostReason, MultiLockGuard, Revision};

/// A held lock, a held set of locks, or leadership of an election.
pub(crate) enum Guard {
    Lock(LockGuard),
    Set(MultiLockGuard),
    Leader(Leadership),
}

impl Guard {
    /// The key (the first key of a set).
    pub(crate) fn key(&self) -> &str {
        match self {
            Guard::Lock(g) => g.key(),
            Guard::Set(s) => &s.keys()[0],
            Guard::Leader(l) => l.key(),
        }
    }

    /// Every key held: one, or a set's in the order of its names.
    pub(crate) fn keys(&self) -> Vec<&str> {
        match self {
            Guard::Set(s) => s.keys().iter().map(String::as_str).collect(),
            _ => vec![self.key()],
        }
    }

    /// Every name held: one, or a set's in canonical order.
    pub(crate) fn names(&self) -> Vec<&str> {
        match self {
            Guard::Lock(g) => vec![g.name()],
            Guard::Set(s) => s.names().iter().map(String::as_str).collect(),
            Guard::Leader(l) => vec![l.name()],
        }
    }

    /// Whether this is a set of more than one lock.
    pub(crate) fn is_set(&self) -> bool {
        matches!(self, Guard::Set(_))
    }

    pub(crate) fn fencing_token(&self) -> Revision {
        match self {
            Guard::Lock(g) => g.fencing_token(),
            Guard::Set(s) => s.fencing_token(),
            Guard::Leader(l) => l.fencing_token(),
        }
    }

    pub(crate) fn lease(&self) -> LeaseId {
        match self {
            Guard::Lock(g) => g.lease(),
            Guard::Set(s) => s.lease(),
            Guard::Leader(l) => l.lease(),
        }
    }

    /// The TTL etcd granted to the lease.
    pub(crate) fn ttl(&self) -> std::time::Duration {
        match self {
            Guard::Lock(g) => g.ttl(),
            Guard::Set(s) => s.ttl(),
            Guard::Leader(l) => l.ttl(),
        }
    }

    /// Until when the lease is known to be alive (local monotonic time);
    /// `None` once that passed or the lease is lost.
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        match self {
            Guard::Lock(g) => g.deadline(),
            Guard::Set(s) => s.deadline(),
            Guard::Leader(l) => l.deadline(),
        }
    }

    /// `lock key KEY` or `leadership key KEY`, for messages.
    pub(crate) fn what(&self) -> String {
        match self {
            Guard::Lock(g) => format!("lock key {}", g.key()),
            Guard::Set(s) => format!("lock keys {}", s.keys().join(", ")),
            Guard::Leader(l) => format!("leadership key {}", l.key()),
        }
    }

    /// Resolves when the lock or leadership can no longer be assumed.
    pub(crate) async fn lost(&self) -> LostReason {
        match self {
            Guard::Lock(g) => g.lost().await,
            Guard::Set(s) => s.lost().await,
            Guard::Leader(l) => l.lost().await,
        }
    }

    /// Whether the lost signal has fired.
    pub(crate) fn is_lost(&self) -> bool {
        match self {
            Guard::Lock(g) => g.is_lost(),
            Guard::Set(s) => s.is_lost(),
            Guard::Leader(l) => l.is_lost(),
        }
    }
}
