//! Step 3, release, and the cleanup of a request that ends without
//! holding: never delete a key that a later request created.

use std::sync::Arc;
use std::time::Duration;

use super::acquire::op;
use super::rule::{Rule, compare_create};
use crate::client::{Client, Retry};
use crate::error::Result;
use crate::session::{Debt, LostReason, SessionInner, Ticket};
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

/// Deletes `key` whatever its create revision: reads it, then deletes it
/// only if its create revision is the one read (an unconditional delete
/// could be resent or applied late, and hit a key created after it). Only
/// called while the name is reserved, so that no request of this session
/// can create the key between the read and the delete.
///
/// # Errors
/// Network errors.
pub(crate) async fn delete_queued(client: &Client, key: &str) -> Result<()> {
    if let Some(kv) = client.get(key).await? {
        delete_if_mine(client, key, kv.create_revision).await?;
    }
    Ok(())
}

/// A name reserved on a session, from the request that reserves it to the
/// end of the guard that holds it, and on to the end of the removal of its
/// keys. It owns the name's slot (its [`Ticket`]); dropped before it has
/// removed them, it hands the removal to a background task, which keeps
/// the name reserved until it ends.
pub(crate) struct Reservation {
    pub(crate) session: Arc<SessionInner>,
    pub(crate) lease_use: LeaseUse,
    pub(crate) name: String,
    ticket: Ticket,
    /// Given up: nothing to do on drop.
    done: bool,
    /// Owned by a background removal: a drop does not start another.
    background: bool,
}

impl Reservation {
    /// Reserves `name` for a request whose key will be `mine`, waiting
    /// while the name's keys are being removed, then deletes what earlier
    /// requests for the name left (each shape of key, by its create
    /// revision when known) and, on a resumed session, the earlier run's
    /// keys of other shapes than `mine`.
    ///
    /// # Errors
    /// [`Error::AlreadyLocked`](crate::Error::AlreadyLocked) while a
    /// request or guard of the session owns the name; network errors (the
    /// keys not deleted yet stay owed, and the name's next request deletes
    /// them).
    ///
    /// # Cancel safety
    /// Cancel safe: a drop after the reservation removes the owed keys in
    /// the background.
    pub(crate) async fn take(
        session: Arc<SessionInner>,
        lease_use: LeaseUse,
        name: &str,
        mine: &str,
    ) -> Result<Reservation> {
        let shapes = Rule::every_shape(name, session.lease);
        let (ticket, debts) = session.reserve(name, mine, &shapes).await?;
        let r = Reservation {
            session,
            lease_use,
            name: name.to_owned(),
            ticket,
            done: false,
            background: false,
        };
        r.pay(debts).await?;
        Ok(r)
    }

    /// My key may exist from now on: an acquire that puts it is about to be
    /// sent.
    pub(crate) fn may_put(&self, key: &str) {
        self.session
            .slots(|s| s.may_put(&self.name, self.ticket, key));
    }

    /// My key exists with create revision `rev`.
    pub(crate) fn known(&self, key: &str, rev: Revision) {
        self.session
            .slots(|s| s.known(&self.name, self.ticket, key, rev));
    }

    /// My key is known not to exist (a try that put nothing).
    pub(crate) fn gone(&self, key: &str) {
        self.session.slots(|s| s.gone(&self.name, self.ticket, key));
    }

    /// Deletes the keys `debts`, each by its create revision when known
    /// (read first when not); the name stays mine meanwhile. Returns
    /// whether every key of known revision was still there to delete.
    async fn pay(&self, debts: Vec<Debt>) -> Result<bool> {
        let mut found = true;
        for d in debts {
            match d.rev {
                Some(rev) => found &= delete_if_mine(&self.session.client, &d.key, rev).await?,
                None => delete_queued(&self.session.client, &d.key).await?,
            }
            self.session
                .slots(|s| s.gone(&self.name, self.ticket, &d.key));
        }
        Ok(found)
    }

    /// Leaves: removes every key the name owes (a lease of its own is
    /// revoked, which deletes them in one commit), then frees the name.
    /// Meanwhile, other requests for the name on the session wait. Returns
    /// whether the lease still existed, or every key of known revision was
    /// still there to delete.
    ///
    /// # Errors
    /// Network errors. On a session the removal then goes on in the
    /// background, retried while the session lives and the failures are
    /// ones of connectivity; the name stays reserved until it ends (the
    /// keys still owed then stay a note, deleted first by the name's next
    /// request).
    ///
    /// # Cancel safety
    /// Cancel safe: a drop hands the removal to a background task.
    pub(crate) async fn leave(mut self) -> Result<bool> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let r = self.remove().await;
            match &r {
                // The drop of `self` goes on in the background.
                Err(_) if !self.background => return r,
                Err(e) if e.is_connectivity() && self.session.lost().is_none() => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                _ => {
                    self.done = true;
                    let (name, ticket) = (&self.name, self.ticket);
                    self.session.slots(|s| s.finish(name, ticket));
                    return r;
                }
            }
        }
    }

    /// One try at removing the name's keys, the name marked as being
    /// cleaned.
    async fn remove(&self) -> Result<bool> {
        let (name, ticket) = (&self.name, self.ticket);
        self.session.slots(|s| s.clean(name, ticket));
        match self.lease_use {
            LeaseUse::Own => {
                let r = self.session.revoke().await;
                if r.is_ok() {
                    self.session.slots(|s| s.all_gone(name, ticket));
                }
                r
            }
            LeaseUse::Shared if self.session.lost() == Some(LostReason::Closed) => {
                // The close's revoke (or the session's drop) takes the
                // keys with it.
                self.session.slots(|s| s.all_gone(name, ticket));
                Ok(true)
            }
            LeaseUse::Shared => {
                let debts = self.session.slots(|s| s.debts(name, ticket));
                self.pay(debts).await
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (name, ticket) = (&self.name, self.ticket);
        let keys_go_anyway =
            self.lease_use == LeaseUse::Own || self.session.lost() == Some(LostReason::Closed);
        if keys_go_anyway {
            // A lease of its own is revoked by the drop of its session,
            // which follows; a closed session's by its close.
            self.session.slots(|s| {
                s.all_gone(name, ticket);
                s.finish(name, ticket)
            });
            return;
        }
        let rt = tokio::runtime::Handle::try_current().ok();
        match rt.filter(|_| !self.background) {
            // The name stays mine until the removal ends: the ticket moves
            // into the task, which the runtime owns; each of its calls is
            // bounded by the request timeout.
            Some(rt) => {
                // Cleaning from now on, not once the task first runs: a
                // request for the name meanwhile waits, is not refused.
                self.session.slots(|s| s.hand_over(name, ticket));
                let next = Reservation {
                    session: self.session.clone(),
                    lease_use: self.lease_use,
                    name: std::mem::take(&mut self.name),
                    ticket,
                    done: false,
                    background: true,
                };
                rt.spawn(async move {
                    let _ = next.leave().await;
                });
            }
            // No runtime to remove them with (or the removal itself was
            // cut short): the owed keys stay as a note, and the name's next
            // request deletes them first.
            None => {
                self.session.slots(|s| s.finish(name, ticket));
            }
        }
    }
}

/// Deletes every key in `debts` whose create revision is the one given,
/// in one `Txn` of guarded deletes (one commit); returns, per debt,
/// whether it was deleted.
///
/// Wire calls: one `KV/Txn`, resent when its answer is lost (each delete
/// is guarded by its compare, so a second copy deletes nothing).
///
/// # Errors
/// Network errors; [`Error::Protocol`](crate::Error::Protocol) for an
/// answer of the wrong shape.
pub(crate) async fn delete_all_if_mine(
    client: &Client,
    debts: &[(String, Revision)],
) -> Result<Vec<bool>> {
    let guarded = debts.iter().map(|(key, rev)| {
        op(Op::RequestTxn(pb::TxnRequest {
            compare: vec![compare_create(key.as_bytes(), *rev)],
            success: vec![op(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }))],
            failure: vec![],
        }))
    });
    let req = pb::TxnRequest {
        compare: vec![],
        success: guarded.collect(),
        failure: vec![],
    };
    // Safe to resend: every delete is guarded by its key's create revision.
    let resp = client.txn(Retry::Safe, req).await?;
    let done: Vec<bool> = resp
        .responses
        .iter()
        .filter_map(|r| match &r.response {
            Some(pb::response_op::Response::ResponseTxn(t)) => Some(t.succeeded),
            _ => None,
        })
        .collect();
    if done.len() != debts.len() {
        return Err(crate::error::Error::Protocol {
            path: crate::client::paths::TXN,
            detail: format!(
                "{} guarded deletes answered where {} were sent",
                done.len(),
                debts.len()
            ),
        });
    }
    Ok(done)
}

/// Leaves every name of a set at once: one revoke for a lease of its own,
/// or one `Txn` of guarded deletes on a session (keys whose revision is
/// not known are read and deleted one by one first). Returns whether the
/// lease still existed, or every key of known revision was still there.
///
/// # Errors
/// Network errors: the reservations not given up yet then leave one by
/// one, in the background, as dropped ones do.
///
/// # Cancel safety
/// Cancel safe: a drop hands each name's removal to a background task.
pub(crate) async fn leave_all(slots: Vec<Reservation>) -> Result<bool> {
    let Some(first) = slots.first() else {
        return Ok(true);
    };
    let session = first.session.clone();
    for r in &slots {
        r.session.slots(|s| s.clean(&r.name, r.ticket));
    }
    let found = match first.lease_use {
        LeaseUse::Own => {
            let existed = session.revoke().await?;
            for r in &slots {
                r.session.slots(|s| s.all_gone(&r.name, r.ticket));
            }
            existed
        }
        LeaseUse::Shared if session.lost() == Some(LostReason::Closed) => {
            for r in &slots {
                r.session.slots(|s| s.all_gone(&r.name, r.ticket));
            }
            true
        }
        LeaseUse::Shared => pay_all(&session, &slots).await?,
    };
    for mut r in slots {
        r.done = true;
        r.session.slots(|s| s.finish(&r.name, r.ticket));
    }
    Ok(found)
}

/// Deletes what every reservation of `slots` owes: one guarded `Txn` (per
/// [`SET_DELETES_PER_TXN`] keys) for the keys of known revision, one by
/// one for the others.
async fn pay_all(session: &SessionInner, slots: &[Reservation]) -> Result<bool> {
    let mut known = Vec::new();
    for r in slots {
        for d in session.slots(|s| s.debts(&r.name, r.ticket)) {
            match d.rev {
                Some(rev) => known.push((r, d.key, rev)),
                None => {
                    delete_queued(&session.client, &d.key).await?;
                    session.slots(|s| s.gone(&r.name, r.ticket, &d.key));
                }
            }
        }
    }
    let mut found = true;
    for chunk in known.chunks(SET_DELETES_PER_TXN) {
        let debts: Vec<_> = chunk.iter().map(|(_, k, rev)| (k.clone(), *rev)).collect();
        let done = delete_all_if_mine(&session.client, &debts).await?;
        found &= done.iter().all(|d| *d);
        for (r, key, _) in chunk {
            session.slots(|s| s.gone(&r.name, r.ticket, key));
        }
    }
    Ok(found)
}

/// Guarded deletes in one release `Txn`: each is a nested transaction, one
/// operation of the outer one, within etcd's default `--max-txn-ops`.
const SET_DELETES_PER_TXN: usize = 64;
