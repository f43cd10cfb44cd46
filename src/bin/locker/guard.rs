//! What `lock`, `try` and `elect` hold: a lock or a leadership, seen the
//! same way by the code that runs the command and releases.

use locker::{Leadership, LeaseId, LockGuard, LostReason, Revision};

/// A held lock, or leadership of an election.
pub(crate) enum Guard {
    Lock(LockGuard),
    Leader(Leadership),
}

impl Guard {
    pub(crate) fn key(&self) -> &str {
        match self {
            Guard::Lock(g) => g.key(),
            Guard::Leader(l) => l.key(),
        }
    }

    pub(crate) fn fencing_token(&self) -> Revision {
        match self {
            Guard::Lock(g) => g.fencing_token(),
            Guard::Leader(l) => l.fencing_token(),
        }
    }

    pub(crate) fn lease(&self) -> LeaseId {
        match self {
            Guard::Lock(g) => g.lease(),
            Guard::Leader(l) => l.lease(),
        }
    }

    /// The TTL etcd granted to the lease.
    pub(crate) fn ttl(&self) -> std::time::Duration {
        match self {
            Guard::Lock(g) => g.ttl(),
            Guard::Leader(l) => l.ttl(),
        }
    }

    /// Until when the lease is known to be alive (local monotonic time);
    /// `None` once that passed or the lease is lost.
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        match self {
            Guard::Lock(g) => g.deadline(),
            Guard::Leader(l) => l.deadline(),
        }
    }

    /// `lock key KEY` or `leadership key KEY`, for messages.
    pub(crate) fn what(&self) -> String {
        match self {
            Guard::Lock(g) => format!("lock key {}", g.key()),
            Guard::Leader(l) => format!("leadership key {}", l.key()),
        }
    }

    /// Resolves when the lock or leadership can no longer be assumed.
    pub(crate) async fn lost(&self) -> LostReason {
        match self {
            Guard::Lock(g) => g.lost().await,
            Guard::Leader(l) => l.lost().await,
        }
    }

    /// Whether the lost signal has fired.
    pub(crate) fn is_lost(&self) -> bool {
        match self {
            Guard::Lock(g) => g.is_lost(),
            Guard::Leader(l) => l.is_lost(),
        }
    }
}
