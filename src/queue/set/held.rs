//! A set that holds every one of its names: the state behind the set's
//! guard, its guarded writes and its one-commit release.

use std::sync::Arc;

use super::super::held::{guarded_txn, put_op, released};
use super::super::release::{LeaseUse, Reservation, leave_all};
use super::super::rule::compare_create;
use super::entry::SetReady;
use crate::error::Result;
use crate::session::SessionInner;
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
}

impl SetHeld {
    pub(crate) fn new(r: SetReady, rev: Revision) -> SetHeld {
        let lease_use = r.slots.first().map_or(LeaseUse::Shared, |s| s.lease_use);
        SetHeld {
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

    /// Runs `ops` in one `Txn` only while I hold every name.
    ///
    /// Wire calls: one `KV/Txn`, not resent once it may have reached etcd.
    ///
    /// # Errors
    /// [`Error::LockLost`] (naming the first key) when a key is gone or not
    /// mine; the loss when the lost signal fired (nothing sent);
    /// [`Error::Ambiguous`].
    pub(crate) async fn txn(&self, ops: Vec<pb::RequestOp>) -> Result<pb::TxnResponse> {
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
        let left = leave_all(self.slots).await;
        released(&self.session, lost, left, self.lease_use, &self.keys[0])
    }
}
