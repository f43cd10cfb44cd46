//! The election stream: [`Client::observe`].

use super::feed::{EventStream, Events, start};
use super::keys::KeysByRevision;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::queue::validate_name;
use crate::types::{KeyValue, LeaseId, Revision};

/// A change of an election, as seen by [`Client::observe`].
///
/// The leader is the live candidate key with the lowest create revision;
/// `token` is that revision, the leader's fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ElectionEvent {
    /// A leader, at `revision`: the first event when there is one, and each
    /// time another candidate becomes leader.
    Leader {
        /// The leader's key, `{name}/{lease hex}`.
        key: String,
        /// Its proposal.
        value: Vec<u8>,
        /// Its lease.
        lease: LeaseId,
        /// Its fencing token (the key's create revision).
        token: Revision,
        /// The revision at which it was leader.
        revision: Revision,
    },
    /// The leader proclaimed a new value (a put of its key) at `revision`.
    Proclaimed {
        /// The leader's key.
        key: String,
        /// The new value.
        value: Vec<u8>,
        /// The leader's fencing token.
        token: Revision,
        /// The revision of the proclamation.
        revision: Revision,
    },
    /// No candidate is left, at `revision`: the first event when there is
    /// none, and each time the last candidate leaves.
    NoLeader {
        /// The revision at which no candidate was left.
        revision: Revision,
    },
    /// The revision to resume from was compacted away: the stream read a
    /// fresh snapshot at `revision`, and the events that follow describe
    /// the difference. Changes in between (proclamations, short-lived
    /// leaders) are not known.
    Resynced {
        /// The revision of the fresh snapshot.
        revision: Revision,
    },
}

/// A stream of [`ElectionEvent`]s: the state at the start, then every
/// change of leader and every proclamation, each once, in revision order.
/// It resumes by revision after a broken connection; after a compaction it
/// says [`ElectionEvent::Resynced`] and reports the difference. Dropping it
/// stops its background task.
pub type LeaderWatch = EventStream<ElectionEvent>;

/// Leader changes and proclamations, as election events.
struct LeaderEvents;

fn leader(kv: &KeyValue, revision: Revision) -> ElectionEvent {
    ElectionEvent::Leader {
        key: kv.key_str(),
        value: kv.value.clone(),
        lease: kv.lease.unwrap_or(LeaseId(0)),
        token: kv.create_revision,
        revision,
    }
}

impl Events for LeaderEvents {
    type Event = ElectionEvent;
    type State = Option<KeyValue>;

    fn state(&self, keys: &KeysByRevision, _: u32) -> Option<KeyValue> {
        keys.first().cloned()
    }

    fn snapshot(&self, first: &Option<KeyValue>, revision: Revision) -> Vec<ElectionEvent> {
        vec![match first {
            Some(kv) => leader(kv, revision),
            None => ElectionEvent::NoLeader { revision },
        }]
    }

    fn changed(
        &self,
        before: &Option<KeyValue>,
        after: &Option<KeyValue>,
        revision: Revision,
    ) -> Vec<ElectionEvent> {
        match (before, after) {
            (None, None) => vec![],
            (Some(_), None) => vec![ElectionEvent::NoLeader { revision }],
            (Some(b), Some(a)) if b.key == a.key && b.create_revision == a.create_revision => {
                if a.mod_revision == b.mod_revision {
                    return vec![];
                }
                vec![ElectionEvent::Proclaimed {
                    key: a.key_str(),
                    value: a.value.clone(),
                    token: a.create_revision,
                    revision,
                }]
            }
            (_, Some(a)) => vec![leader(a, revision)],
        }
    }

    fn resynced(&self, revision: Revision) -> Option<ElectionEvent> {
        Some(ElectionEvent::Resynced { revision })
    }
}

impl Client {
    /// Observes the election `name`: a stream that starts with the leader
    /// (or [`ElectionEvent::NoLeader`]) and then reports every change of
    /// leader and every proclamation.
    ///
    /// Unlike etcd's Go `Election.Observe`, the leader reported is always
    /// the lowest live key at the event's revision (never a later
    /// candidate's put, etcd #18163), "no leader" is reported, and a
    /// compacted resume point is recovered from (etcd #7815).
    ///
    /// Wire calls: one `KV/Range` of `{name}/` (the snapshot), then one
    /// `Watch` stream on `{name}/` from the next revision; after a broken
    /// stream, a new `Watch` from the revision after the last one seen.
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// use locker::ElectionEvent;
    /// let mut events = client.observe("service/primary").await?;
    /// while let Some(event) = events.next().await {
    ///     match event? {
    ///         ElectionEvent::Leader { key, token, .. } => println!("leader {key} ({token})"),
    ///         ElectionEvent::NoLeader { .. } => println!("no leader"),
    ///         other => println!("{other:?}"),
    ///     }
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
    pub async fn observe(&self, name: &str) -> Result<LeaderWatch> {
        self.observe_inner(name, None).await
    }

    /// As [`observe`](Self::observe), resuming after `revision`: the first
    /// event is the state at `revision`, then every change after it.
    /// `Revision(0)` is the empty store before the first write: the stream
    /// starts with [`ElectionEvent::NoLeader`] and replays the history. A
    /// compacted `revision` starts with [`ElectionEvent::Resynced`] and the
    /// newest state.
    ///
    /// # Errors
    /// As [`observe`](Self::observe);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a
    /// negative revision.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn observe_from(&self, name: &str, revision: Revision) -> Result<LeaderWatch> {
        self.observe_inner(name, Some(revision)).await
    }

    async fn observe_inner(&self, name: &str, at: Option<Revision>) -> Result<LeaderWatch> {
        validate_name(name)?;
        if at.is_some_and(|r| r.0 < 0) {
            return Err(Error::invalid("a revision to observe from is at least 0"));
        }
        start(self, name, at, LeaderEvents).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, create: i64, modified: i64, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: Revision(create),
            mod_revision: Revision(modified),
            version: 1,
            lease: Some(LeaseId(1)),
        }
    }

    #[test]
    fn a_put_of_the_leaders_key_is_a_proclamation_and_a_new_key_a_new_leader() {
        let e = LeaderEvents;
        let a = kv("e/a", 5, 5, "one");
        let a2 = kv("e/a", 5, 9, "two");
        let b = kv("e/b", 7, 7, "b");
        let at = Revision(9);
        assert!(matches!(
            e.changed(&Some(a.clone()), &Some(a2), at).as_slice(),
            [ElectionEvent::Proclaimed { value, .. }] if value == b"two"
        ));
        assert!(
            e.changed(&Some(a.clone()), &Some(a.clone()), at).is_empty(),
            "a later candidate's put"
        );
        assert!(matches!(
            e.changed(&Some(a.clone()), &Some(b.clone()), at).as_slice(),
            [ElectionEvent::Leader {
                token: Revision(7),
                ..
            }]
        ));
        assert_eq!(
            e.changed(&Some(b), &None, at),
            [ElectionEvent::NoLeader { revision: at }]
        );
        assert!(matches!(
            e.snapshot(&None, at).as_slice(),
            [ElectionEvent::NoLeader { .. }]
        ));
        // The same key re-created (a new lease id is a new key; the same
        // key again is a new create revision): a new leader.
        let a_again = kv("e/a", 11, 11, "one");
        assert!(matches!(
            e.changed(&Some(a), &Some(a_again), at).as_slice(),
            [ElectionEvent::Leader {
                token: Revision(11),
                ..
            }]
        ));
    }
}
