//! The lock-state stream: [`Client::watch_lock`].

use super::feed::{EventStream, Events, start};
use super::keys::KeysByRevision;
use crate::client::Client;
use crate::error::Result;
use crate::queue::validate_name;
use crate::types::{Holder, KeyValue, Revision};

/// A change of a lock's state, as seen by [`Client::watch_lock`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockEvent {
    /// The first event: the state at the revision the watch started from.
    Snapshot {
        /// The holder then, if any.
        holder: Option<Holder>,
        /// The revision of the snapshot.
        revision: Revision,
    },
    /// A new holder got the lock.
    Acquired {
        /// The new holder (`ttl_left` is not filled in).
        holder: Holder,
        /// The revision at which it became the holder.
        revision: Revision,
    },
    /// The holder let go (released, expired, or deleted).
    Released {
        /// The holder that let go.
        holder: Holder,
        /// The revision of the release.
        revision: Revision,
    },
}

/// A stream of [`LockEvent`]s. It starts with a [`LockEvent::Snapshot`],
/// then reports each change once, in revision order; it resumes by revision
/// after a broken connection, so nothing is missed or repeated. If the
/// revision to resume from was compacted away, it reads a fresh snapshot
/// and reports the difference. Dropping it stops its background task.
pub type LockWatch = EventStream<LockEvent>;

/// Holder changes, as lock events.
struct HolderEvents {
    name: String,
}

impl HolderEvents {
    fn holder(&self, kv: &KeyValue) -> Holder {
        Holder::from_kv(&self.name, kv.clone())
    }
}

/// Whether `kv` is among `list` (the same key, created at the same revision).
fn among(kv: &KeyValue, list: &[KeyValue]) -> bool {
    list.iter()
        .any(|o| o.key == kv.key && o.create_revision == kv.create_revision)
}

impl Events for HolderEvents {
    type Event = LockEvent;
    type State = Vec<KeyValue>;

    fn state(&self, keys: &KeysByRevision, permits: u32) -> Vec<KeyValue> {
        keys.holders(permits)
    }

    /// The snapshot names the first holder; other holders at that revision
    /// (readers, permits) follow as [`LockEvent::Acquired`] events.
    fn snapshot(&self, holders: &Vec<KeyValue>, revision: Revision) -> Vec<LockEvent> {
        let first = LockEvent::Snapshot {
            holder: holders.first().map(|kv| self.holder(kv)),
            revision,
        };
        let others = holders.iter().skip(1).map(|kv| LockEvent::Acquired {
            holder: self.holder(kv),
            revision,
        });
        std::iter::once(first).chain(others).collect()
    }

    fn changed(
        &self,
        before: &Vec<KeyValue>,
        after: &Vec<KeyValue>,
        revision: Revision,
    ) -> Vec<LockEvent> {
        let released = before
            .iter()
            .filter(|kv| !among(kv, after))
            .map(|kv| LockEvent::Released {
                holder: self.holder(kv),
                revision,
            });
        let acquired = after
            .iter()
            .filter(|kv| !among(kv, before))
            .map(|kv| LockEvent::Acquired {
                holder: self.holder(kv),
                revision,
            });
        released.chain(acquired).collect()
    }

    fn resynced(&self, _: Revision) -> Option<LockEvent> {
        None
    }
}

impl Client {
    /// Watches the lock `name`: a stream that starts with the current state
    /// and then reports each change of holder. Shared holders (readers) and
    /// a semaphore's holders are reported each: one
    /// [`LockEvent::Acquired`] or [`LockEvent::Released`] per holder.
    ///
    /// Wire calls: one `KV/Range` of `{name}/` (the snapshot), then one
    /// `Watch` stream on `{name}/` from the next revision; after a broken
    /// stream, a new `Watch` from the revision after the last one seen.
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// let mut events = client.watch_lock("jobs/nightly").await?;
    /// while let Some(event) = events.next().await {
    ///     println!("{:?}", event?);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad
    /// name; network errors for the snapshot. Later errors arrive on the
    /// stream, which retries connectivity failures by itself.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn watch_lock(&self, name: &str) -> Result<LockWatch> {
        validate_name(name)?;
        let events = HolderEvents {
            name: name.to_owned(),
        };
        start(self, name, None, events).await
    }
}
