//! Seeing a lock from outside: who holds it ([`Client::holder`]) and every
//! change of holder ([`Client::watch_lock`]), on the queue's key layout.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Client, prefix_end};
use crate::error::{Error, Result};
use crate::queue::{Rule, open_watch, prefix, validate_name};
use crate::types::{Holder, KeyValue, Revision};
use crate::wire::etcdserverpb as pb;
use crate::wire::mvccpb;

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
/// and reports the difference.
///
/// Implements [`Stream`](tokio_stream::Stream); [`next`](LockWatch::next)
/// needs no extra trait. Dropping it stops its background task.
pub struct LockWatch {
    rx: mpsc::Receiver<Result<LockEvent>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LockWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockWatch").finish_non_exhaustive()
    }
}

impl Drop for LockWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LockWatch {
    /// The next event; `None` after a final error.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn next(&mut self) -> Option<Result<LockEvent>> {
        self.rx.recv().await
    }
}

impl tokio_stream::Stream for LockWatch {
    type Item = Result<LockEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The keys of one lock name, as the watcher knows them.
struct KeysByRevision {
    name: String,
    by_rev: BTreeMap<i64, KeyValue>,
    by_key: HashMap<Vec<u8>, i64>,
}

impl KeysByRevision {
    fn new(name: &str, kvs: Vec<KeyValue>) -> KeysByRevision {
        let mut q = KeysByRevision {
            name: name.to_owned(),
            by_rev: BTreeMap::new(),
            by_key: HashMap::new(),
        };
        for kv in kvs {
            q.put(kv);
        }
        q
    }

    fn put(&mut self, kv: KeyValue) {
        if let Some(old) = self.by_key.insert(kv.key.clone(), kv.create_revision.0) {
            self.by_rev.remove(&old);
        }
        self.by_rev.insert(kv.create_revision.0, kv);
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(rev) = self.by_key.remove(key) {
            self.by_rev.remove(&rev);
        }
    }

    fn apply(&mut self, ev: &mvccpb::Event) {
        if let Some(kv) = ev.kv.clone() {
            if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                self.delete(&kv.key);
            } else {
                self.put(KeyValue::from(kv));
            }
        }
    }

    fn holder(&self) -> Option<Holder> {
        self.by_rev
            .values()
            .next()
            .map(|kv| Holder::from_kv(&self.name, kv.clone()))
    }
}

/// The events that turn holder `before` into holder `after`.
fn transition(before: &Option<Holder>, after: &Option<Holder>, rev: Revision) -> Vec<LockEvent> {
    let same = match (before, after) {
        (Some(a), Some(b)) => a.key == b.key && a.fencing_token == b.fencing_token,
        (None, None) => true,
        _ => false,
    };
    if same {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(h) = before {
        out.push(LockEvent::Released {
            holder: h.clone(),
            revision: rev,
        });
    }
    if let Some(h) = after {
        out.push(LockEvent::Acquired {
            holder: h.clone(),
            revision: rev,
        });
    }
    out
}

impl Client {
    /// The current holder of `name` (the oldest key in its queue), with the
    /// time left on its lease; `None` when the lock is free.
    ///
    /// Wire calls: one `KV/Range`, then one `Lease/LeaseTimeToLive` when held.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name; network errors.
    ///
    /// # Cancel safety
    /// Cancel safe (reads only).
    pub async fn holder(&self, name: &str) -> Result<Option<Holder>> {
        validate_name(name)?;
        let read = Rule::EXCLUSIVE.holder_reads(&prefix(name));
        let Some(read) = read.into_iter().next() else {
            return Ok(None);
        };
        let resp = self.range(read).await?;
        let Some(kv) = resp.kvs.into_iter().next() else {
            return Ok(None);
        };
        let mut holder = Holder::from_kv(name, KeyValue::from(kv));
        if holder.lease.0 != 0 {
            holder.ttl_left = self.lease_time_to_live(holder.lease).await?;
        }
        Ok(Some(holder))
    }

    /// Watches the lock `name`: a stream that starts with the current state
    /// and then reports each change of holder.
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
    /// [`Error::InvalidArgument`] for a bad name; network errors for the
    /// snapshot. Later errors arrive on the stream, which retries
    /// connectivity failures by itself.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn watch_lock(&self, name: &str) -> Result<LockWatch> {
        validate_name(name)?;
        let prefix = prefix(name);
        let (kvs, rev) = self.get_prefix(&prefix).await?;
        let keys = KeysByRevision::new(name, kvs);
        let (tx, rx) = mpsc::channel(64);
        let first = LockEvent::Snapshot {
            holder: keys.holder(),
            revision: rev,
        };
        // The channel is empty, so this cannot fail.
        let _ = tx.try_send(Ok(first));
        let watcher = Watcher {
            client: self.clone(),
            prefix,
            keys,
            rev,
            tx,
        };
        // Owned by the LockWatch, which aborts it on drop.
        let task = tokio::spawn(watcher.run());
        Ok(LockWatch { rx, task })
    }
}

/// The task behind a [`LockWatch`].
struct Watcher {
    client: Client,
    prefix: String,
    keys: KeysByRevision,
    /// The last revision reported.
    rev: Revision,
    tx: mpsc::Sender<Result<LockEvent>>,
}

/// What to do after a watch answer.
enum Next {
    /// Read on.
    More,
    /// Open a new watch (after a pause).
    Reopen,
    /// The receiver is gone or an error was final.
    Stop,
}

impl Watcher {
    async fn run(mut self) {
        let end = prefix_end(self.prefix.as_bytes());
        let mut backoff = Duration::from_millis(100);
        loop {
            let start = Revision(self.rev.0 + 1);
            let mut stream =
                match open_watch(&self.client, self.prefix.as_bytes(), end.clone(), start).await {
                    Ok(s) => s,
                    Err(e) if e.is_connectivity() => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                    Err(e) => {
                        let _ = self.tx.send(Err(e)).await;
                        return;
                    }
                };
            while let Ok(Some(resp)) = stream.recv().await {
                backoff = Duration::from_millis(100);
                match self.on_answer(resp, backoff).await {
                    Next::More => {}
                    Next::Reopen => break,
                    Next::Stop => return,
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }

    /// Reports what one watch answer changed.
    async fn on_answer(&mut self, resp: pb::WatchResponse, backoff: Duration) -> Next {
        if resp.compact_revision != 0 {
            // Our resume point was compacted: start again from a fresh snapshot.
            return match self.client.get_prefix(&self.prefix).await {
                Ok((kvs, now)) => {
                    let fresh = KeysByRevision::new(&self.keys.name, kvs);
                    let before = std::mem::replace(&mut self.keys, fresh).holder();
                    self.rev = now;
                    match self
                        .send(transition(&before, &self.keys.holder(), now))
                        .await
                    {
                        Next::Stop => Next::Stop,
                        _ => Next::Reopen,
                    }
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    Next::Reopen
                }
            };
        }
        if resp.canceled {
            let reason = resp.cancel_reason.clone();
            let _ = self.tx.send(Err(Error::WatchCanceled { reason })).await;
            return Next::Stop;
        }
        // Events come grouped by revision, in order.
        let mut events = resp.events.iter().peekable();
        while let Some(first) = events.next() {
            let at = mod_revision(first);
            let before = self.keys.holder();
            self.keys.apply(first);
            while let Some(ev) = events.next_if(|e| mod_revision(e) == at) {
                self.keys.apply(ev);
            }
            let after = self.keys.holder();
            if let Next::Stop = self.send(transition(&before, &after, Revision(at))).await {
                return Next::Stop;
            }
            self.rev = Revision(self.rev.0.max(at));
        }
        Next::More
    }

    async fn send(&self, events: Vec<LockEvent>) -> Next {
        for e in events {
            if self.tx.send(Ok(e)).await.is_err() {
                return Next::Stop;
            }
        }
        Next::More
    }
}

fn mod_revision(ev: &mvccpb::Event) -> i64 {
    ev.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}
