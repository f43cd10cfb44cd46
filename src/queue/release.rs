//! Step 3, release, and the cleanup of a request that ends without
//! holding: never delete a key that a later request created.

use std::sync::Arc;

use super::acquire::op;
use super::rule::{Rule, compare_create};
use crate::client::{Client, Retry};
use crate::error::Result;
use crate::session::{LostReason, SessionInner, StaleKey};
use crate::types::Revision;
use crate::wire::etcdserverpb as pb;
use pb::request_op::Request as Op;

/// Whose lease a key is on, which decides how it goes away.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum LeaseUse {
    /// A lease of its own: revoking it deletes the key in the same commit.
    Own,
    /// A session's lease, shared with other keys: delete the key, guarded
    /// by its create revision.
    Shared,
}

/// Deletes `key` if its create revision is `rev`; true if it was deleted.
///
/// Wire calls: one `KV/Txn`, resent when its answer is lost (the compare
/// makes a second delete a no-op).
///
/// # Errors
/// Network errors.
pub(crate) async fn delete_if_mine(client: &Client, key: &str, rev: Revision) -> Result<bool> {
    let req = pb::TxnRequest {
        compare: vec![compare_create(key.as_bytes(), rev)],
        success: vec![op(Op::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }))],
        failure: vec![],
    };
    // Safe to resend: the compare makes a second delete a no-op.
    Ok(client.txn(Retry::Safe, req).await?.succeeded)
}

/// Deletes `key` whatever its create revision, without ever deleting a key
/// created after this call started: the key is read, then deleted only if
/// its create revision is the one read. (An unconditional delete could be
/// resent or applied late, and hit the key of a later request for the same
/// name on the same lease.)
///
/// # Errors
/// Network errors.
pub(crate) async fn delete_queued(client: &Client, key: &str) -> Result<()> {
    if let Some(kv) = client.get(key).await? {
        delete_if_mine(client, key, kv.create_revision).await?;
    }
    Ok(())
}

/// Deletes what an earlier request for the same name on this session may
/// have left behind; on failure the name stays marked.
///
/// The earlier request may have been of another primitive than this one (a
/// reader before a writer, a permit before a lock): its key had another
/// shape, so each shape's key of this lease under the name is deleted, each
/// only if its create revision is the stale one (when known).
///
/// # Errors
/// Network errors.
pub(crate) async fn remove_stale(
    session: &SessionInner,
    name: &str,
    stale: Option<StaleKey>,
) -> Result<()> {
    let Some(StaleKey(rev)) = stale else {
        return Ok(());
    };
    for key in Rule::every_shape(name, session.lease) {
        let r = match rev {
            Some(rev) => delete_if_mine(&session.client, &key, rev).await.map(|_| ()),
            None => delete_queued(&session.client, &key).await,
        };
        if r.is_err() {
            let _ = session.mark_stale(name, rev);
            return r;
        }
    }
    Ok(())
}

/// On a session resumed on an earlier lease, deletes the keys the earlier
/// run left under `name` in other shapes than `mine` (a reader's key before
/// a writer's request, a permit before a lock): nothing else ever removes
/// them while the session lives, and `mine` would wait behind them. A key of
/// the same shape is `mine`, and keeps its place.
///
/// # Errors
/// Network errors; the name is then checked again by its next request, as
/// it is when this is dropped before its end.
pub(crate) async fn remove_inherited(session: &SessionInner, name: &str, mine: &str) -> Result<()> {
    if !session.may_inherit(name) {
        return Ok(());
    }
    for key in Rule::every_shape(name, session.lease) {
        if key != mine {
            delete_queued(&session.client, &key).await?;
        }
    }
    session.inherited_removed(name);
    Ok(())
}

/// Leaves nothing queued, now, for a request that ends without holding:
/// revokes a lease of its own, or deletes the key on a session (the name
/// is marked first, so that a drop while the delete is in flight still
/// leaves a note for the next request).
pub(crate) async fn leave(session: &SessionInner, lease_use: LeaseUse, name: &str, key: &str) {
    match lease_use {
        LeaseUse::Own => {
            session.unreserve(name);
            let _ = session.revoke().await;
        }
        LeaseUse::Shared => {
            let mark = session.mark_stale(name, None);
            if delete_queued(&session.client, key).await.is_ok() {
                let _ = session.clear(name, mark);
            }
        }
    }
}

/// Removes a queued key if the acquiring future is dropped before it
/// holds or leaves; [`disarm`](Self::disarm) once either happened.
pub(crate) struct CancelCleanup {
    pub(crate) session: Arc<SessionInner>,
    pub(crate) lease_use: LeaseUse,
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) armed: bool,
}

impl CancelCleanup {
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelCleanup {
    fn drop(&mut self) {
        if self.armed {
            // The create revision may be unknown (the transaction may have
            // been in flight), so the key is read first. A transaction that
            // etcd applies only after the cleanup (it was cancelled in
            // flight) leaves its key until the session ends.
            let key = std::mem::take(&mut self.key);
            leave_in_background(&self.session, self.lease_use, &self.name, key, None);
        }
    }
}

/// Removes `key` without waiting: a lease of its own goes when its session
/// is dropped (which the caller's drop does); a key on a shared session is
/// deleted by a background task, guarded by `rev` (read first when
/// unknown), and later requests for the name on the session wait for it.
pub(crate) fn leave_in_background(
    session: &Arc<SessionInner>,
    lease_use: LeaseUse,
    name: &str,
    key: String,
    rev: Option<Revision>,
) {
    // A closed session's revoke took its keys with it: nothing to delete.
    let closed = session.lost() == Some(LostReason::Closed);
    match lease_use {
        LeaseUse::Own => session.unreserve(name),
        LeaseUse::Shared if closed => session.unreserve(name),
        LeaseUse::Shared => {
            let client = session.client.clone();
            session.clean_in_background(name, rev, async move {
                match rev {
                    Some(rev) => delete_if_mine(&client, &key, rev).await.is_ok(),
                    None => delete_queued(&client, &key).await.is_ok(),
                }
            });
        }
    }
}
