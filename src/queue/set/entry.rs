//! A request for a set of names: its lease, its reservations (every name,
//! in canonical order), and the two ways to run it, waiting or trying.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::super::acquire::{Mode, op, ranges};
use super::super::entry::{DEFAULT_TTL, LeaseSource, before, while_alive};
use super::super::key;
use super::super::release::{LeaseUse, Reservation, leave_all};
use super::super::rule::{Rule, Turn};
use super::super::wait::{Place, wait_turn};
use super::acquire::{SetAcquire, SetQueued, acquire};
use super::held::SetHeld;
use super::names::canonical;
use crate::client::{Client, Retry};
use crate::error::{Error, Result};
use crate::session::SessionInner;
use crate::types::{KeyValue, Revision};
use crate::wire::etcdserverpb as pb;
use pb::request_op::Request as Op;

/// A request for every name of a set, with one lease.
pub(crate) struct SetEntry {
    pub(crate) source: LeaseSource,
    /// As the caller gave them: checked and ordered when the request runs.
    pub(crate) names: Vec<String>,
    pub(crate) value: Option<Vec<u8>>,
}

/// A request ready to send its acquire: its lease, its names reserved (in
/// canonical order) with a key each.
pub(crate) struct SetReady {
    pub(crate) session: Arc<SessionInner>,
    pub(crate) slots: Vec<Reservation>,
    pub(crate) names: Vec<String>,
    pub(crate) prefixes: Vec<String>,
    pub(crate) keys: Vec<String>,
    pub(crate) value: Vec<u8>,
}

impl SetReady {
    fn acquire(&self) -> SetAcquire<'_> {
        SetAcquire {
            prefixes: &self.prefixes,
            keys: &self.keys,
            value: &self.value,
            lease: self.session.lease,
        }
    }

    /// My keys exist, all created at `rev`.
    fn known(&self, rev: Revision) {
        for (slot, key) in self.slots.iter().zip(&self.keys) {
            slot.known(key, rev);
        }
    }
}

impl SetEntry {
    /// A request on a lease of its own, with the default TTL.
    pub(crate) fn own(client: &Client, names: Vec<String>) -> SetEntry {
        let source = LeaseSource::Own {
            client: client.clone(),
            ttl: DEFAULT_TTL,
        };
        SetEntry {
            source,
            names,
            value: None,
        }
    }

    /// A request on a session's lease.
    pub(crate) fn on_session(session: Arc<SessionInner>, names: Vec<String>) -> SetEntry {
        SetEntry {
            source: LeaseSource::Session(session),
            names,
            value: None,
        }
    }

    /// Sets the TTL of a lease of its own; ignored on a session.
    pub(crate) fn set_ttl(&mut self, ttl: Duration) {
        if let LeaseSource::Own { ttl: t, .. } = &mut self.source {
            *t = ttl;
        }
    }

    /// The names for messages: `a, b, c` as given.
    pub(crate) fn label(&self) -> String {
        self.names.join(", ")
    }

    /// Checks the input (nothing is sent for bad input), gets the lease,
    /// then reserves every name in canonical order, so that two requests
    /// of one session never wait for each other's names. A name's earlier
    /// keys on the lease, of any shape, are deleted first: a set never
    /// takes over a key it did not create.
    async fn ready(&self) -> Result<SetReady> {
        let names = canonical(self.names.iter().cloned())?;
        let value = self.value.clone().unwrap_or_else(key::default_value);
        key::validate_value(&value)?;
        // The acquire carries the value once per name.
        if value.len().saturating_mul(names.len()) > 2 * key::MAX_VALUE_LEN {
            return Err(Error::invalid(format!(
                "a value of {} bytes on each of {} names; at most {} bytes in all fit in the set's transaction",
                value.len(),
                names.len(),
                2 * key::MAX_VALUE_LEN
            )));
        }
        let (session, lease_use) = match &self.source {
            LeaseSource::Own { client, ttl } => {
                crate::client::ttl_secs(*ttl)?;
                (SessionInner::grant(client, *ttl).await?, LeaseUse::Own)
            }
            LeaseSource::Session(s) => {
                s.check_alive()?;
                (s.clone(), LeaseUse::Shared)
            }
        };
        let keys: Vec<String> = names.iter().map(|n| key::key(n, session.lease)).collect();
        let mut slots = Vec::with_capacity(names.len());
        for name in &names {
            // No shape is mine to keep: every earlier key is a debt.
            slots.push(Reservation::take(session.clone(), lease_use, name, "").await?);
        }
        for (slot, key) in slots.iter().zip(&keys) {
            slot.may_put(key);
        }
        Ok(SetReady {
            session,
            slots,
            prefixes: names.iter().map(|n| key::prefix(n)).collect(),
            names,
            keys,
            value,
        })
    }

    /// Waits for every name: the acquire, then per name behind an older
    /// key the engine's wait (which checks my key on that name after it);
    /// gives up at `timeout`, leaving no key on any name.
    ///
    /// # Errors
    /// See [`LockAllRequest`](crate::LockAllRequest).
    pub(crate) async fn wait(self, timeout: Option<Duration>) -> Result<SetHeld> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let timed_out = || Error::AcquireTimeout {
            name: self.label(),
            after: timeout.unwrap_or_default(),
        };
        let r = before(deadline, self.ready(), timed_out).await?;
        let outcome = {
            let turn = std::pin::pin!(async {
                let q = acquire(&r.session.client, &r.acquire(), Mode::Queue).await?;
                r.known(q.rev);
                wait_behind(&r, &q).await?;
                Ok(q.rev)
            });
            while_alive(&r.session, deadline, turn, timed_out).await
        };
        finish(r, outcome).await
    }

    /// Tries once: holds every name if none has a key, else reports the
    /// first holder of the first busy name and leaves nothing behind.
    ///
    /// # Errors
    /// See [`TryLockAllRequest`](crate::TryLockAllRequest).
    pub(crate) async fn try_once(self) -> Result<std::result::Result<SetHeld, (String, KeyValue)>> {
        let r = self.ready().await?;
        // An error drops the reservations, which remove my keys in the
        // background.
        let q: SetQueued = acquire(&r.session.client, &r.acquire(), Mode::OnlyIfFree).await?;
        if q.holds() {
            r.known(q.rev);
            let alive = r.session.check_alive().map(|()| q.rev);
            return Ok(Ok(finish(r, alive).await?));
        }
        if q.rev.0 == 0 {
            // Nothing was put: no key to delete on any name.
            for (slot, key) in r.slots.iter().zip(&r.keys) {
                slot.gone(key);
            }
        } else {
            r.known(q.rev);
        }
        let busy = q.busy.map(|(i, kv)| (r.names[i].clone(), kv));
        let _ = leave_all(r.slots).await;
        busy.map(Err).ok_or_else(|| Error::Protocol {
            path: crate::client::paths::TXN,
            detail: "a resent try found its keys behind older ones".into(),
        })
    }
}

/// Step 2 for a set: for each name (in canonical order) whose first key
/// is older than mine, the engine's wait for my turn there, with its
/// check of my own key afterwards. A name's turn, once mine, stays mine
/// (no key can be created before mine any more), so the names are waited
/// for one after another. After any wait, one read confirms that every
/// key of mine is still there.
async fn wait_behind(r: &SetReady, q: &SetQueued) -> Result<()> {
    let mut waited = false;
    for (i, behind) in q.behind.iter().enumerate() {
        if !*behind {
            continue;
        }
        let me = Place {
            rule: Rule::EXCLUSIVE,
            prefix: &r.prefixes[i],
            key: &r.keys[i],
            rev: q.rev,
            view: None,
        };
        wait_turn(&r.session, &me, Turn::Unknown).await?;
        waited = true;
    }
    if waited {
        all_mine(&r.session.client, &r.keys, q.rev).await?;
    }
    Ok(())
}

/// One read-only `Txn` (linearizable, no commit): every key of mine is
/// there with create revision `rev`.
///
/// # Errors
/// [`Error::LockLost`] naming a key that is gone; network errors.
pub(crate) async fn all_mine(client: &Client, keys: &[String], rev: Revision) -> Result<()> {
    let reads = keys.iter().map(|key| {
        op(Op::RequestRange(pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            keys_only: true,
            ..Default::default()
        }))
    });
    let req = pb::TxnRequest {
        compare: vec![],
        success: reads.collect(),
        failure: vec![],
    };
    // Safe to resend: it only reads.
    let resp = client.txn(Retry::Safe, req).await?;
    let answers = ranges(&resp, keys.len())?;
    match answers
        .iter()
        .position(|a| a.kvs.first().is_none_or(|kv| kv.create_revision != rev.0))
    {
        Some(i) => Err(Error::LockLost {
            key: keys[i].clone(),
        }),
        None => Ok(()),
    }
}

/// Hands out the held set, or leaves every name before reporting the error.
async fn finish(r: SetReady, outcome: Result<Revision>) -> Result<SetHeld> {
    match outcome {
        Ok(rev) => Ok(SetHeld::new(r, rev)),
        Err(e) => {
            let _ = leave_all(r.slots).await;
            Err(e)
        }
    }
}
