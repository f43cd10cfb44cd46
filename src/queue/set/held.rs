//! A set that holds every one of its names: the state behind the set's
//! guard, its guarded writes and its one-commit release.

use std::sync::Arc;

use super::super::follow::LostSignal;
use super::super::held::{guarded_txn, put_op, released};
use super::super::release::{LeaseUse, Reservation, leave_all};
use super::super::rule::compare_create;
use super::entry::SetReady;
use crate::error::{Error, Result};
use crate::session::{LostReason, SessionInner};
use crate::types::Revision;
use crate::wire::etcdserverpb as pb;

/// My keys, holding every name. Dropped without
/// [`release`](SetHeld::release), each name is released in the background
/// (by its reservation).
pub(crate) struct SetHeld {
    pub(crate) session: Arc<SessionInner>,
    /// In canonical order; `keys` in the same order.
    pub(crate) names: Vec<String>,
    pub(crate) keys: Vec<String>,
    pub(crate) value: Vec<u8>,
    /// The create revision of every key: the set's one fencing token.
    pub(crate) rev: Revision,
    lease_use: LeaseUse,
    slots: Vec<Reservation>,
    /// Follows every key once something asks for the lost signal.
    lost: LostSignal,
}

impl SetHeld {
    pub(crate) fn new(r: SetReady, rev: Revision) -> SetHeld {
        let lease_use = r.slots.first().map_or(LeaseUse::Shared, |s| s.lease_use);
        SetHeld {
            lost: LostSignal::new(r.keys.clone(), rev),
            session: r.session,
            names: r.names,
            keys: r.keys,
            value: r.value,
            rev,
            lease_use,
            slots: r.slots,
        }
    }

    /// `create_revision(key) == token` for every key of the set: all true
    /// exactly while I hold every name.
    pub(crate) fn is_owner(&self) -> Vec<pb::Compare> {
        self.keys
            .iter()
            .map(|k| compare_create(k.as_bytes(), self.rev))
            .collect()
    }

    /// Whether the set is known to be lost: the lease (judged by the
    /// clock) or, once followed, a key. Starts following the keys.
    pub(crate) fn lost_now(&self) -> Option<LostReason> {
        self.lost.lost_now(&self.session)
    }

    /// Resolves when the set is lost: the lease's signal, or a key's
    /// deletion event (every key is followed from the first call on).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn wait_lost(&self) -> LostReason {
        self.lost.wait_lost(&self.session).await
    }

    /// [`wait_lost`](Self::wait_lost) as a `'static` future.
    pub(crate) fn lost_signal(
        &self,
    ) -> impl std::future::Future<Output = LostReason> + Send + 'static {
        self.lost.signal(&self.session)
    }

    /// Runs `ops` in one `Txn` only while I hold every name.
    ///
    /// Wire calls: one `KV/Txn`, not resent once it may have reached etcd;
    /// none when a key was seen deleted.
    ///
    /// # Errors
    /// [`Error::LockLost`] (naming the first key) when a key is gone or not
    /// mine; the loss when the lost signal fired (nothing sent);
    /// [`Error::Ambiguous`].
    pub(crate) async fn txn(&self, ops: Vec<pb::RequestOp>) -> Result<pb::TxnResponse> {
        self.lost.check_keys(&self.session)?;
        guarded_txn(&self.session, self.is_owner(), ops, &self.keys[0]).await
    }

    /// Writes `key = value` only while I hold every name.
    ///
    /// # Errors
    /// As [`txn`](Self::txn).
    pub(crate) async fn put(&self, key: &[u8], value: &[u8]) -> Result<Revision> {
        let resp = self.txn(vec![put_op(key, value)]).await?;
        Ok(Revision(resp.header.map_or(0, |h| h.revision)))
    }

    /// Releases every name in one commit: a revoke of a lease of its own,
    /// or one `Txn` of guarded deletes on a session.
    ///
    /// # Errors
    /// The loss when it came before the release (or a key was gone);
    /// network errors.
    pub(crate) async fn release(self) -> Result<()> {
        let lost = self.session.lost();
        // A key seen deleted by someone else: the release may still find
        // the lease (a revoke that finds it says nothing of the keys).
        let key_gone = self.lost.key_gone();
        let left = leave_all(self.slots).await;
        if lost.is_none() && key_gone && left.is_ok() {
            return Err(Error::LockLost {
                key: self.keys[0].clone(),
            });
        }
        released(&self.session, lost, left, self.lease_use, &self.keys[0])
    }
}
