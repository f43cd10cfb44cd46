//! Seeing a name from outside, on the queue's key layout: who holds it or
//! leads it ([`Client::holder`], [`Client::leader`]), and every change
//! ([`Client::watch_lock`], [`Client::observe`]).
//!
//! - `keys.rs`: a name's live keys by create revision, as a watcher sees them.
//! - `feed.rs`: the one watcher task under both streams: snapshot, watch
//!   from the next revision, events by revision, resume, resync.
//! - `lock_watch.rs`, `leader_watch.rs`: the two streams' events.

mod feed;
mod keys;
mod leader_watch;
mod lock_watch;

pub use leader_watch::{ElectionEvent, LeaderWatch};
pub use lock_watch::{LockEvent, LockWatch};

use crate::client::Client;
use crate::error::Result;
use crate::queue::{Rule, prefix, validate_name};
use crate::types::{Holder, KeyValue};

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
