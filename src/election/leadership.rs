//! The guard of a leader: proclaim, resign, and the lost signal.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::queue::Held;
use crate::session::LostReason;
use crate::types::{LeaseId, Revision};
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
    pub(crate) held: Held,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &self.held.key)
            .field("fencing_token", &self.held.rev)
            .field("lease", &self.held.session.lease)
            .field("lost", &self.held.session.lost())
            .finish()
    }
}

impl Leadership {
    /// The election name.
    pub fn name(&self) -> &str {
        &self.held.name
    }

    /// The leader's key, `{name}/{lease hex}`.
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

    /// The value last proclaimed (at first, the campaign's proposal).
    pub fn value(&self) -> &[u8] {
        &self.held.value
    }

    /// The fencing token: the key's create revision. It only grows across
    /// successive leaders of one election.
    pub fn fencing_token(&self) -> Revision {
        self.held.rev
    }

    /// The local monotonic time until which the lease is known to be alive.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.held.session.deadline()
    }

    /// Whether the lost signal has fired.
    pub fn is_lost(&self) -> bool {
        self.held.session.lost().is_some()
    }

    /// Resolves when leadership can no longer be assumed: the lease's local
    /// deadline passed without a keepalive answer, etcd said the lease is
    /// gone, or the session was closed. It fires before etcd could elect
    /// anyone else.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> LostReason {
        self.held.session.wait_lost().await
    }

    /// A comparison that holds exactly while this candidate leads: put it
    /// into your own `Txn` to make a write conditional on leading.
    pub fn is_leader(&self) -> pb::Compare {
        self.held.is_owner()
    }

    /// Runs `ops` in one transaction only while this candidate leads.
    ///
    /// Wire calls: one `KV/Txn`, not resent once it may have reached etcd.
    ///
    /// # Errors
    /// [`Error::LockLost`] when the key is gone or not this candidate's;
    /// [`Error::LeaseExpired`] when the lost signal already fired (nothing
    /// sent); [`Error::Ambiguous`] when the answer was lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the transaction may be applied even if the future is dropped.
    pub async fn txn(&self, ops: Vec<pb::RequestOp>) -> Result<pb::TxnResponse> {
        self.held.txn(ops).await
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
            key: self.held.key.as_bytes().to_vec(),
            value: value.clone(),
            lease: self.held.session.lease.0,
            prev_kv: false,
        };
        let op = pb::RequestOp {
            request: Some(Op::RequestPut(put)),
        };
        let resp = match self.held.txn(vec![op]).await {
            Err(Error::LockLost { key }) => return Err(Error::NotLeader { key }),
            r => r?,
        };
        self.held.value = value;
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
        self.held.release().await
    }
}
