//! Seeing a name from outside, on the queue's key layout: who holds it or
//! leads it ([`Client::holder`], [`Client::leader`]), and every change
//! ([`Client::watch_lock`], [`Client::observe`]).
//!
//! - `keys.rs`: a name's live keys by create revision, as a watcher sees them.
//! - `feed.rs`: the one watcher task under both streams: snapshot, watch
//!   from the next revision, events by revision, resume, resync.
//! - `lock_watch.rs`, `leader_watch.rs`: the two streams' events.
//! - `set.rs`: the set a key belongs to ([`Client::lock_set`]).

mod feed;
mod keys;
mod leader_watch;
mod lock_watch;
mod set;

pub use feed::EventStream;
pub use leader_watch::{ElectionEvent, LeaderWatch};
pub use lock_watch::{LockEvent, LockWatch};
pub use set::LockSet;

use crate::client::{Client, Retry, prefix_end};
use crate::error::{Error, Result};
use crate::queue::{Rule, limit_key, prefix, validate_name};
use crate::types::{Contender, Holder, Holders, KeyValue, Revision};
use crate::wire::etcdserverpb as pb;
use keys::KeysByRevision;
use pb::range_request::{SortOrder, SortTarget};
use pb::request_op::Request as Op;
use pb::response_op::Response as OpResp;

impl Client {
    /// The current holder of `name` (the oldest key in its queue), with the
    /// time left on its lease; `None` when the lock is free.
    ///
    /// Wire calls: one `KV/Range`, then one `Lease/LeaseTimeToLive` when held.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad
    /// name; network errors.
    ///
    /// # Cancel safety
    /// Cancel safe (reads only).
    pub async fn holder(&self, name: &str) -> Result<Option<Holder>> {
        let Some(mut holder) = self.leader(name).await? else {
            return Ok(None);
        };
        if holder.lease.0 != 0 {
            holder.ttl_left = self.lease_time_to_live(holder.lease).await?;
        }
        Ok(Some(holder))
    }

    /// The current leader of the election `name` (the live candidate key
    /// with the lowest create revision: key, value, lease, fencing token);
    /// `None` when there is no candidate. On the same name this is also the
    /// lock's holder.
    ///
    /// Wire calls: one `KV/Range`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad
    /// name; network errors.
    ///
    /// # Cancel safety
    /// Cancel safe (reads only).
    pub async fn leader(&self, name: &str) -> Result<Option<Holder>> {
        validate_name(name)?;
        let Some(read) = Rule::EXCLUSIVE.holder_reads(&prefix(name)).pop() else {
            return Ok(None);
        };
        let resp = self.range(read).await?;
        Ok(resp
            .kvs
            .into_iter()
            .next()
            .map(|kv| Holder::from_kv(name, KeyValue::from(kv))))
    }
}

impl Client {
    /// Everyone in the queue of `name`: the holders (one exclusive holder,
    /// the readers before the first writer, or a semaphore's first N) and
    /// the waiters in the order they will be served, each with its mode.
    ///
    /// Wire calls: one read-only `KV/Txn` (no commit): the keys under
    /// `{name}/` by create revision, and `{name}.permits`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name; network errors.
    ///
    /// # Cancel safety
    /// Cancel safe (reads only).
    pub async fn holders(&self, name: &str) -> Result<Holders> {
        validate_name(name)?;
        let prefix = prefix(name);
        let queue = pb::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            ..Default::default()
        };
        let limit = pb::RangeRequest {
            key: limit_key(&prefix).into_bytes(),
            ..Default::default()
        };
        let op = |r| pb::RequestOp {
            request: Some(Op::RequestRange(r)),
        };
        let req = pb::TxnRequest {
            compare: vec![],
            success: vec![op(queue), op(limit)],
            failure: vec![],
        };
        // Safe to resend: it only reads.
        let resp = self.txn(Retry::Safe, req).await?;
        let revision = Revision(resp.header.map_or(0, |h| h.revision));
        let mut answers = resp.responses.into_iter().filter_map(|r| match r.response {
            Some(OpResp::ResponseRange(r)) => Some(r),
            _ => None,
        });
        let (Some(queue), Some(limit)) = (answers.next(), answers.next()) else {
            return Err(Error::Protocol {
                path: crate::client::paths::TXN,
                detail: "the queue read did not answer both reads".into(),
            });
        };
        let kvs = queue.kvs.into_iter().map(KeyValue::from).collect();
        let keys = KeysByRevision::new(&prefix, kvs);
        let permits = limit
            .kvs
            .first()
            .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok())
            .filter(|_| keys.has_permits());
        let mut out = Holders {
            name: name.to_owned(),
            holders: Vec::new(),
            waiters: Vec::new(),
            permits,
            revision,
        };
        for (kv, holds) in keys.judged(permits.unwrap_or(1)) {
            let c = Contender {
                mode: keys.mode(kv),
                holder: Holder::from_kv(name, kv.clone()),
            };
            match holds {
                true => out.holders.push(c),
                false => out.waiters.push(c),
            }
        }
        Ok(out)
    }
}
