//! A key that holds its turn: the state behind every guard, its guarded
//! writes, its release, and its release in the background when dropped.

use std::sync::Arc;

use super::acquire::op;
use super::follow::LostSignal;
use super::release::{LeaseUse, Reservation};
use super::rule::compare_create;
use crate::client::Retry;
use crate::error::{Error, Result};
use crate::session::{LostReason, SessionInner};
use crate::types::Revision;
use crate::wire::etcdserverpb as pb;
use pb::request_op::Request as Op;

/// My key, holding. Dropped without [`release`](Held::release), it is
/// released in the background (by its reservation).
pub(crate) struct Held {
    pub(crate) session: Arc<SessionInner>,
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    /// My key's create revision: the fencing token.
    pub(crate) rev: Revision,
    /// The name, reserved on the session until my key is gone.
    slot: Reservation,
    /// Follows my key once something asks for the lost signal.
    lost: LostSignal,
}

impl Held {
    pub(crate) fn new(slot: Reservation, key: String, value: Vec<u8>, rev: Revision) -> Held {
        slot.known(&key, rev);
        Held {
            session: slot.session.clone(),
            name: slot.name.clone(),
            lost: LostSignal::new(vec![key.clone()], rev),
            key,
            value,
            rev,
            slot,
        }
    }

    /// Whether the lock is known to be lost: the lease (judged by the
    /// clock) or, once followed, the key. Starts following the key.
    pub(crate) fn lost_now(&self) -> Option<LostReason> {
        self.lost.lost_now(&self.session)
    }

    /// Resolves when the lock is lost: the lease's signal, or my key's
    /// deletion event (the key is followed from the first call on: one
    /// watch on the client's stream).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn wait_lost(&self) -> LostReason {
        self.lost.wait_lost(&self.session).await
    }

    /// [`wait_lost`](Self::wait_lost) as a `'static` future: the lease's
    /// signal, or my key's deletion; [`LostReason::Closed`] once this
    /// guard is gone (its follower with it). Starts following the key.
    pub(crate) fn lost_signal(
        &self,
    ) -> impl std::future::Future<Output = LostReason> + Send + 'static {
        self.lost.signal(&self.session)
    }

    /// `create_revision(my key) == my token`: true exactly while I hold.
    pub(crate) fn is_owner(&self) -> pb::Compare {
        compare_create(self.key.as_bytes(), self.rev)
    }

    /// Runs `ops` in one `Txn` only while I hold.
    ///
    /// Wire calls: one `KV/Txn`, not resent once it may have reached etcd.
    ///
    /// # Errors
    /// [`Error::LockLost`] when my key is gone or not mine; the loss when
    /// the lost signal fired (nothing sent); [`Error::Ambiguous`].
    pub(crate) async fn txn(&self, ops: Vec<pb::RequestOp>) -> Result<pb::TxnResponse> {
        self.lost.check_keys(&self.session)?;
        guarded_txn(&self.session, vec![self.is_owner()], ops, &self.key).await
    }

    /// Writes `key = value` only while I hold; returns its revision.
    ///
    /// # Errors
    /// As [`txn`](Self::txn).
    pub(crate) async fn put(&self, key: &[u8], value: &[u8]) -> Result<Revision> {
        let resp = self.txn(vec![put_op(key, value)]).await?;
        Ok(Revision(resp.header.map_or(0, |h| h.revision)))
    }

    /// Releases: revokes a lease of its own (key and lease go in one
    /// commit), or deletes my key on a session if its create revision is
    /// still mine.
    ///
    /// # Errors
    /// The loss ([`Error::LockLost`], [`Error::LeaseExpired`]) when it came
    /// before the release; network errors.
    pub(crate) async fn release(self) -> Result<()> {
        let lost = self.session.lost();
        // My key seen deleted by someone else: the release may still find
        // the lease (a revoke that finds it says nothing of the key).
        let key_gone = self.lost.key_gone();
        let lease_use = self.slot.lease_use;
        // Until my key is known gone, the name stays reserved: a new request
        // for it on this session waits, even if this future is dropped
        // before the answer.
        let left = self.slot.leave().await;
        if lost.is_none() && key_gone && left.is_ok() {
            return Err(Error::LockLost { key: self.key });
        }
        released(&self.session, lost, left, lease_use, &self.key)
    }
}

/// Runs `ops` in one `Txn` only if every compare of `owner` holds.
///
/// Wire calls: one `KV/Txn`, not resent once it may have reached etcd.
///
/// # Errors
/// [`Error::LockLost`] naming `key` when a compare failed; the loss when
/// the lost signal fired (nothing sent); [`Error::Ambiguous`].
pub(crate) async fn guarded_txn(
    session: &SessionInner,
    owner: Vec<pb::Compare>,
    ops: Vec<pb::RequestOp>,
    key: &str,
) -> Result<pb::TxnResponse> {
    session.check_alive()?;
    let req = pb::TxnRequest {
        compare: owner,
        success: ops,
        failure: vec![],
    };
    let resp = session.client.txn(Retry::IfNotSent, req).await?;
    if !resp.succeeded {
        return Err(Error::LockLost { key: key.into() });
    }
    Ok(resp)
}

/// The put of `key = value`, on no lease.
pub(crate) fn put_op(key: &[u8], value: &[u8]) -> pb::RequestOp {
    op(Op::RequestPut(pb::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease: 0,
        prev_kv: false,
    }))
}

/// The answer to a release, from the loss known before it (`lost`, which
/// wins whether or not the release's own call got through) and what the
/// leave did: whether it found what it released (`LockLost` naming `key`,
/// or `LeaseExpired` for a lease of its own, when not).
pub(crate) fn released(
    session: &SessionInner,
    lost: Option<LostReason>,
    left: Result<bool>,
    lease_use: LeaseUse,
    key: &str,
) -> Result<()> {
    let done = match (left, lost) {
        (Ok(done), _) => done,
        (Err(_), Some(r)) => return Err(session.lost_error(r)),
        (Err(e), None) => return Err(e),
    };
    let gone = || match lease_use {
        LeaseUse::Own => Error::LeaseExpired {
            lease: session.lease,
        },
        LeaseUse::Shared => Error::LockLost { key: key.into() },
    };
    session.release_outcome(lost, done, gone)
}
