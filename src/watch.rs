//! Watching: the predecessor wait of the lock recipe, and the lock-state
//! stream of [`Client::watch_lock`].

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Client, paths, prefix_end};
use crate::error::{Error, Result};
use crate::types::{Holder, KeyValue, Revision};
use crate::wire::etcdserverpb as pb;
use crate::wire::etcdserverpb::watch_client::WatchClient;
use crate::wire::mvccpb;
use pb::watch_request::RequestUnion;

fn create_request(key: &[u8], range_end: Vec<u8>, start: Revision) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.to_vec(),
            range_end,
            start_revision: start.0,
            ..Default::default()
        })),
    }
}

async fn open(
    client: &Client,
    key: &[u8],
    range_end: Vec<u8>,
    start: Revision,
) -> Result<crate::client::BiStream<pb::WatchRequest, pb::WatchResponse>> {
    client
        .open_stream(
            paths::WATCH,
            || create_request(key, range_end.clone(), start),
            |ch, r| async move { WatchClient::new(ch).watch(r).await },
        )
        .await
}

fn stream_ended() -> Error {
    Error::Ambiguous {
        endpoint: String::new(),
        path: paths::WATCH,
        detail: "the watch stream ended".into(),
    }
}

/// Waits until the key `key` (created at `create_rev`) is deleted.
///
/// The watch starts at the store's current revision (`start_revision` 0),
/// so etcd normally registers it as synced and delivers the delete at once
/// (a watch that starts in the past is caught up by a background loop, up
/// to ~100 ms late). The key may have been deleted between the caller's
/// read and the watch's creation, so it is read once more after `created`
/// (a serializable read, no commit).
///
/// etcd 3.4 turns `start_revision` 0 into "the revision it read + 1" before
/// registering the watch; a commit in between leaves the watch unsynced, so
/// its events come up to ~100 ms late (measured here: about 4% of waits
/// with 8 clients on one name). When the read after `created` shows the
/// member that holds the watch still at the `created` revision, that cannot
/// have happened.
/// Otherwise a second watch of the key is created on the same stream (one
/// message; each registration is a new draw, so both are rarely unsynced)
/// and read after in the same way, then a third; only when all three may
/// be unsynced is the key also read at growing intervals (2, 4, 8, 16, 32,
/// 64 ms; serializable), after which the watches alone are enough.
///
/// Returns a revision at which the key is known to be gone, or `None` when
/// one of the watches was cancelled by etcd (the caller reads again). A
/// broken stream is an error.
pub(crate) async fn wait_deleted(
    client: &Client,
    key: &[u8],
    create_rev: Revision,
) -> Result<Option<Revision>> {
    const FIRST_POLL: Duration = Duration::from_millis(2);
    const LAST_POLL: Duration = Duration::from_millis(64);
    const MAX_WATCHES: u32 = 3;
    let mut stream = open(client, key, Vec::new(), Revision(0)).await?;
    let mut watches = 1;
    let mut poll: Option<Duration> = None;
    loop {
        let resp = tokio::select! {
            r = stream.recv() => r?.ok_or_else(stream_ended)?,
            _ = crate::rt::sleep_until_opt(poll.map(|p| tokio::time::Instant::now() + p)) => {
                let read = key_exists(client, key, create_rev, 0).await?;
                if !read.exists {
                    return Ok(Some(read.at));
                }
                poll = poll.map(|p| p * 2).filter(|p| *p <= LAST_POLL);
                continue;
            }
        };
        if resp.canceled {
            // One of the watches was cancelled (a compacted start, a
            // refused create): the key is not known to be deleted, so let
            // the caller read the queue again.
            return Ok(None);
        }
        if resp.created {
            // Each watch covers every change after its `created`. Read the
            // key once now: it may be gone already, and if the member that
            // holds the watch is still at `created`, this watch is surely
            // synced.
            let header = resp.header.unwrap_or_default();
            let created = if header.revision > 0 {
                header.revision
            } else {
                i64::MAX
            };
            let read = key_exists(client, key, create_rev, 0).await?;
            if !read.exists {
                return Ok(Some(read.at));
            }
            if read.at.0 < created {
                // A member behind the watch's: ask at the watch's revision.
                let then = key_exists(client, key, create_rev, created).await?;
                if !then.exists {
                    return Ok(Some(then.at));
                }
            }
            if read.at.0 == created && read.member == header.member_id {
                // This watch is synced: it will tell in time.
                poll = None;
            } else if watches < MAX_WATCHES {
                watches += 1;
                stream
                    .send(create_request(key, Vec::new(), Revision(0)))
                    .await?;
            } else {
                poll = Some(FIRST_POLL);
            }
        }
        for ev in &resp.events {
            let gone = ev.r#type == mvccpb::event::EventType::Delete as i32
                || ev
                    .kv
                    .as_ref()
                    .is_some_and(|kv| kv.create_revision != create_rev.0);
            if gone {
                let at = ev.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                return Ok(Some(Revision(at)));
            }
        }
    }
}

/// The answer of [`key_exists`].
pub(crate) struct KeyRead {
    /// Whether the key existed (with the create revision asked about).
    pub(crate) exists: bool,
    /// The revision the answer holds at.
    pub(crate) at: Revision,
    /// The member that answered.
    pub(crate) member: u64,
}

/// Whether `key` (created at `create_rev`) exists at revision `at` (0: the
/// newest).
///
/// A serializable read: a member that is behind may still show the key,
/// which only means waiting on. If that member has not applied `at` yet (or
/// compacted it), a linearizable read of the newest state answers instead,
/// and the answer holds at that newer revision: as good for the caller,
/// whose watch covers every change after `at`.
pub(crate) async fn key_exists(
    client: &Client,
    key: &[u8],
    create_rev: Revision,
    at: i64,
) -> Result<KeyRead> {
    let read = |revision, serializable| pb::RangeRequest {
        key: key.to_vec(),
        revision,
        serializable,
        ..Default::default()
    };
    let (resp, answered_at) = match client.range(read(at, true)).await {
        Err(Error::Etcd { .. }) if at != 0 => (client.range(read(0, false)).await?, None),
        r => (r?, Some(at).filter(|a| *a != 0)),
    };
    let exists = resp
        .kvs
        .first()
        .is_some_and(|kv| kv.create_revision == create_rev.0);
    let header = resp.header.unwrap_or_default();
    Ok(KeyRead {
        exists,
        at: Revision(answered_at.unwrap_or(header.revision)),
        member: header.member_id,
    })
}

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

/// The queue of one lock name, as the watcher knows it.
struct Queue {
    name: String,
    by_rev: BTreeMap<i64, KeyValue>,
    by_key: HashMap<Vec<u8>, i64>,
}

impl Queue {
    fn new(name: &str, kvs: Vec<KeyValue>) -> Queue {
        let mut q = Queue {
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
        crate::lock::validate_name(name)?;
        let prefix = format!("{name}/");
        let (kvs, rev) = self.get_prefix(&prefix).await?;
        let queue = Queue::new(name, kvs);
        let (tx, rx) = mpsc::channel(64);
        let first = LockEvent::Snapshot {
            holder: queue.holder(),
            revision: rev,
        };
        // The channel is empty, so this cannot fail.
        let _ = tx.try_send(Ok(first));
        let task = tokio::spawn(watch_loop(self.clone(), prefix, queue, rev, tx));
        Ok(LockWatch { rx, task })
    }
}

async fn watch_loop(
    client: Client,
    prefix: String,
    mut queue: Queue,
    mut rev: Revision,
    tx: mpsc::Sender<Result<LockEvent>>,
) {
    let end = prefix_end(prefix.as_bytes());
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut stream =
            match open(&client, prefix.as_bytes(), end.clone(), Revision(rev.0 + 1)).await {
                Ok(s) => s,
                Err(e) if e.is_connectivity() => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
        loop {
            let resp = match stream.recv().await {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            backoff = Duration::from_millis(100);
            if resp.compact_revision != 0 {
                // Our resume point was compacted: start again from a fresh snapshot.
                match client.get_prefix(&prefix).await {
                    Ok((kvs, now)) => {
                        let before = queue.holder();
                        queue = Queue::new(&queue.name, kvs);
                        for ev in transition(&before, &queue.holder(), now) {
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                        rev = now;
                    }
                    Err(_) => tokio::time::sleep(backoff).await,
                }
                break;
            }
            if resp.canceled {
                let _ = tx
                    .send(Err(Error::WatchCanceled {
                        reason: resp.cancel_reason.clone(),
                    }))
                    .await;
                return;
            }
            // Events come grouped by revision, in order.
            let mut i = 0;
            while i < resp.events.len() {
                let ev_rev = resp.events[i].kv.as_ref().map_or(0, |kv| kv.mod_revision);
                let before = queue.holder();
                while i < resp.events.len()
                    && resp.events[i].kv.as_ref().map_or(0, |kv| kv.mod_revision) == ev_rev
                {
                    let ev = &resp.events[i];
                    if let Some(kv) = ev.kv.clone() {
                        if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                            queue.delete(&kv.key);
                        } else {
                            queue.put(KeyValue::from(kv));
                        }
                    }
                    i += 1;
                }
                for e in transition(&before, &queue.holder(), Revision(ev_rev)) {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                rev = Revision(rev.0.max(ev_rev));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::{Etcd, within};

    /// A read at a revision the member has not reached falls back to the
    /// newest state, and the answer says it holds there, not at the
    /// revision asked for (a wait that ended would otherwise be dated too
    /// early, and the waiter's own key checked at the wrong revision).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_past_the_store_is_dated_at_the_revision_that_answered() {
        let limit = Duration::from_secs(10);
        let etcd = Etcd::single().await.expect("start etcd");
        let client = within(
            "connect",
            limit,
            Client::builder().endpoints(etcd.endpoints()).connect(),
        )
        .await
        .expect("connect");
        let created = within("put", limit, client.put("k", "v"))
            .await
            .expect("put");
        let read = within("read", limit, key_exists(&client, b"k", created, created.0))
            .await
            .expect("read at the put");
        assert!(read.exists);
        assert_eq!(read.at, created);
        within("delete", limit, client.delete("k"))
            .await
            .expect("delete");
        let deleted = Revision(created.0 + 1);
        let future = deleted.0 + 1000;
        let read = within("read", limit, key_exists(&client, b"k", created, future))
            .await
            .expect("read past the store");
        assert!(!read.exists);
        assert_eq!(read.at, deleted, "dated at the newest revision");
        assert_ne!(read.member, 0);
    }
}
