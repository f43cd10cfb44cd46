//! The guard of a leader: proclaim, resign, and the lost signal.

use crate::error::{Error, Result};
use crate::lock::LockGuard;
use crate::types::Revision;
use crate::wire::etcdserverpb as pb;
use pb::request_op::Request as Op;

/// Leadership of an election, held until [`resign`](Leadership::resign),
/// loss, or drop.
///
/// # Dropping without resign
/// As a [`LockGuard`](crate::LockGuard): the candidate key goes in the
/// background (its own lease revoked, or its key on a session deleted), and
/// the next candidate is elected.
#[must_use = "dropping the leadership resigns in the background"]
pub struct Leadership {
    pub(crate) guard: LockGuard,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Leadership").field(&self.guard).finish()
    }
}

/// A leader holds its election's name as a lock: its key, lease, value (the
/// last proclaimed), fencing token, deadline, lost signal and guarded
/// writes ([`LockGuard::txn`], [`LockGuard::put`], [`LockGuard::is_owner`])
/// are the guard's.
impl std::ops::Deref for Leadership {
    type Target = LockGuard;

    fn deref(&self) -> &LockGuard {
        &self.guard
    }
}

impl Leadership {
    /// A comparison that holds exactly while this candidate leads (the
    /// guard's [`is_owner`](LockGuard::is_owner)): put it into your own
    /// `Txn` to make a write conditional on leading.
    pub fn is_leader(&self) -> crate::wire::etcdserverpb::Compare {
        self.guard.is_owner()
    }

    /// Proclaims a new value: a put of the leader key (on its lease)
    /// guarded by its create revision, seen by every observer.
    ///
    /// Wire calls: one `KV/Txn` (one commit), not resent once it may have
    /// reached etcd.
    ///
    /// # Errors
    /// [`Error::NotLeader`] when this candidate no longer leads (nothing is
    /// written); [`Error::LeaseExpired`] when the lost signal already fired
    /// (nothing sent); [`Error::InvalidArgument`] for a value over
    /// [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN); [`Error::Ambiguous`].
    ///
    /// # Cancel safety
    /// Not cancel safe: the put may be applied even if the future is dropped.
    pub async fn proclaim(&mut self, value: impl Into<Vec<u8>>) -> Result<Revision> {
        let value = value.into();
        crate::queue::validate_value(&value)?;
        let put = pb::PutRequest {
            key: self.key().as_bytes().to_vec(),
            value: value.clone(),
            lease: self.lease().0,
            prev_kv: false,
        };
        let op = pb::RequestOp {
            request: Some(Op::RequestPut(put)),
        };
        let resp = match self.guard.txn(vec![op]).await {
            Err(Error::LockLost { key }) => return Err(Error::NotLeader { key }),
            r => r?,
        };
        self.guard.held.value = value;
        Ok(Revision(resp.header.map_or(0, |h| h.revision)))
    }

    /// Resigns: the candidate key goes, and the next candidate is elected.
    ///
    /// Wire calls: one `Lease/LeaseRevoke` for a campaign with its own
    /// lease; one `KV/Txn` deleting the key only if its create revision is
    /// still this campaign's, on a session.
    ///
    /// # Errors
    /// [`Error::LockLost`] or [`Error::LeaseExpired`] when leadership had
    /// been lost before: the work done as leader was not protected to the
    /// end. Network errors: the key then goes when its lease expires.
    ///
    /// # Cancel safety
    /// Not cancel safe: the resign may or may not be applied.
    pub async fn resign(self) -> Result<()> {
        self.guard.release().await
    }
}
