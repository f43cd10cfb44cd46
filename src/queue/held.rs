//! A key that holds its turn: the state behind every guard, its guarded
//! writes, its release, and its release in the background when dropped.

use std::sync::Arc;

use super::acquire::op;
use super::release::{LeaseUse, Reservation};
use super::rule::compare_create;
use crate::client::Retry;
use crate::error::{Error, Result};
use crate::session::SessionInner;
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
}

impl Held {
    pub(crate) fn new(slot: Reservation, key: String, value: Vec<u8>, rev: Revision) -> Held {
        slot.known(&key, rev);
        Held {
            session: slot.session.clone(),
            name: slot.name.clone(),
            key,
            value,
            rev,
            slot,
        }
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
        self.session.check_alive()?;
        let req = pb::TxnRequest {
            compare: vec![self.is_owner()],
            success: ops,
            failure: vec![],
        };
        let resp = self.session.client.txn(Retry::IfNotSent, req).await?;
        if !resp.succeeded {
            return Err(Error::LockLost {
                key: self.key.clone(),
            });
        }
        Ok(resp)
    }

    /// Writes `key = value` only while I hold; returns its revision.
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

    /// Releases: revokes a lease of its own (key and lease go in one
    /// commit), or deletes my key on a session if its create revision is
    /// still mine.
    ///
    /// # Errors
    /// The loss ([`Error::LockLost`], [`Error::LeaseExpired`]) when it came
    /// before the release; network errors.
    pub(crate) async fn release(self) -> Result<()> {
        let lost = self.session.lost();
        let lease_use = self.slot.lease_use;
        // A loss known here is the answer, whether or not the release's own
        // call gets through. Until my key is known gone, the name stays
        // reserved: a new request for it on this session waits, even if
        // this future is dropped before the answer.
        let done = match (self.slot.leave().await, lost) {
            (Ok(done), _) => done,
            (Err(_), Some(r)) => return Err(self.session.lost_error(r)),
            (Err(e), None) => return Err(e),
        };
        let gone = || match lease_use {
            LeaseUse::Own => Error::LeaseExpired {
                lease: self.session.lease,
            },
            LeaseUse::Shared => Error::LockLost {
                key: self.key.clone(),
            },
        };
        self.session.release_outcome(lost, done, gone)
    }
}
