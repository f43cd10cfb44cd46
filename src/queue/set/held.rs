//! A set that holds every one of its names: the state behind the set's
//! guard, its guarded writes and its one-commit release.

use std::sync::Arc;

use super::super::acquire::op;
use super::super::release::{LeaseUse, Reservation, leave_all};
use super::super::rule::compare_create;
use super::entry::SetReady;
use crate::client::Retry;
use crate::error::{Error, Result};
use crate::session::SessionInner;
use crate::types::Revision;
use crate::wire::etcdserverpb as pb;
use pb::request_op::Request as Op;

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
        self.session.check_alive()?;
        let req = pb::TxnRequest {
            compare: self.is_owner(),
            success: ops,
            failure: vec![],
        };
        let resp = self.session.client.txn(Retry::IfNotSent, req).await?;
        if !resp.succeeded {
            return Err(Error::LockLost {
                key: self.keys[0].clone(),
            });
        }
        Ok(resp)
    }

    /// Writes `key = value` only while I hold every name.
    ///
    /// # Errors
    /// As [`txn`](Self::txn).
    pub(crate) async fn put(&self, key: &[u8], value: &[u8]) -> Result<Revision> {
        let put = pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: 0,
            prev_kv: false,
        };
        let resp = self.txn(vec![op(Op::RequestPut(put))]).await?;
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
        let done = match (leave_all(self.slots).await, lost) {
            (Ok(done), _) => done,
            (Err(_), Some(r)) => return Err(self.session.lost_error(r)),
            (Err(e), None) => return Err(e),
        };
        let gone = || match self.lease_use {
            LeaseUse::Own => Error::LeaseExpired {
                lease: self.session.lease,
            },
            LeaseUse::Shared => Error::LockLost {
                key: self.keys[0].clone(),
            },
        };
        self.session.release_outcome(lost, done, gone)
    }
}
