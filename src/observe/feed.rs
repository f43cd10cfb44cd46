//! The task behind every observing stream: a snapshot of a name's keys,
//! then one watch of `{name}/` from the next revision, turned into events
//! by revision, exactly once and in order; resumed by revision after a
//! broken stream, and resynced from a fresh snapshot after a compaction.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::keys::KeysByRevision;
use crate::client::{Client, prefix_end};
use crate::error::{Error, Result};
use crate::queue::{limit_key, prefix, watch_request};
use crate::types::{KeyValue, Revision};
use crate::wire::etcdserverpb as pb;
use crate::wire::mvccpb;

/// How a stream turns the keys of a name into its own events.
pub(super) trait Events: Send + Sync + 'static {
    type Event: Send + 'static;
    /// What the stream reports changes of (the holders, the leader).
    type State: Send + 'static;
    /// The state the keys are in (`permits`: a semaphore's limit, else 1).
    fn state(&self, keys: &KeysByRevision, permits: u32) -> Self::State;
    /// The first events: the state at the snapshot's revision.
    fn snapshot(&self, state: &Self::State, rev: Revision) -> Vec<Self::Event>;
    /// The events that turn state `before` into `after` at `rev`.
    fn changed(&self, before: &Self::State, after: &Self::State, rev: Revision)
    -> Vec<Self::Event>;
    /// Said when a compaction forced a fresh snapshot at `rev`, before the
    /// events of the difference.
    fn resynced(&self, rev: Revision) -> Option<Self::Event>;
}

/// A stream of events fed by a background task, which it owns: dropping
/// the stream stops the task. [`LockWatch`](crate::LockWatch) and
/// [`LeaderWatch`](crate::LeaderWatch) are its two kinds.
///
/// Implements [`Stream`](tokio_stream::Stream); [`next`](EventStream::next)
/// needs no extra trait.
pub struct EventStream<E> {
    rx: mpsc::Receiver<Result<E>>,
    task: JoinHandle<()>,
}

impl<E> Drop for EventStream<E> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<E> std::fmt::Debug for EventStream<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl<E> EventStream<E> {
    /// The next event; `None` after a final error.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn next(&mut self) -> Option<Result<E>> {
        self.rx.recv().await
    }
}

impl<E> tokio_stream::Stream for EventStream<E> {
    type Item = Result<E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Reads the snapshot of `name` (at `at`, or the newest), sends its event,
/// and starts the task that watches from the next revision.
///
/// Wire calls: one `KV/Range` of `{name}/`, then one `Watch` stream.
///
/// # Errors
/// Network errors of the snapshot read; a compacted `at`.
pub(super) async fn start<T: Events>(
    client: &Client,
    name: &str,
    at: Option<Revision>,
    events: T,
) -> Result<EventStream<T::Event>> {
    let prefix = prefix(name);
    let mut first = Vec::new();
    let (kvs, rev) = match snapshot(client, &prefix, at).await {
        Err(Error::Etcd { message, .. }) if message.contains("compacted") => {
            // The revision to resume from is gone: a fresh snapshot, said so.
            let (kvs, now) = client.get_prefix(&prefix).await?;
            first.extend(events.resynced(now));
            (kvs, now)
        }
        r => r?,
    };
    let keys = KeysByRevision::new(&prefix, kvs);
    let permits = permits_at(client, &prefix, &keys, rev, 1).await;
    first.extend(events.snapshot(&events.state(&keys, permits), rev));
    let (tx, rx) = mpsc::channel(64);
    let watcher = Watcher {
        client: client.clone(),
        prefix,
        keys,
        permits,
        rev,
        tx,
        events,
    };
    // Owned by the feed, which aborts it on drop.
    let task = tokio::spawn(watcher.run(first));
    Ok(EventStream { rx, task })
}

/// A semaphore's limit at `rev`, read only when the keys hold permits;
/// `known` when it is not read or cannot be.
pub(super) async fn permits_at(
    client: &Client,
    prefix: &str,
    keys: &KeysByRevision,
    rev: Revision,
    known: u32,
) -> u32 {
    if !keys.has_permits() {
        return known;
    }
    let req = pb::RangeRequest {
        key: limit_key(prefix).into_bytes(),
        revision: rev.0,
        ..Default::default()
    };
    let Ok(resp) = client.range(req).await else {
        return known;
    };
    resp.kvs
        .first()
        .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok())
        .unwrap_or(known)
}

/// Every key under `prefix` at revision `at` (or the newest), and the
/// revision the answer holds at.
async fn snapshot(
    client: &Client,
    prefix: &str,
    at: Option<Revision>,
) -> Result<(Vec<KeyValue>, Revision)> {
    let Some(at) = at else {
        return client.get_prefix(prefix).await;
    };
    if at.0 <= 0 {
        // etcd reads revision 0 as "the newest"; the state after revision
        // 0 is the empty store, before anything was written.
        return Ok((Vec::new(), Revision(0)));
    }
    let req = pb::RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        revision: at.0,
        ..Default::default()
    };
    let resp = client.range(req).await?;
    Ok((resp.kvs.into_iter().map(KeyValue::from).collect(), at))
}

struct Watcher<T: Events> {
    client: Client,
    prefix: String,
    keys: KeysByRevision,
    /// A semaphore's limit (1 for other names).
    permits: u32,
    /// The last revision reported.
    rev: Revision,
    tx: mpsc::Sender<Result<T::Event>>,
    events: T,
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

impl<T: Events> Watcher<T> {
    async fn run(mut self, first: Vec<T::Event>) {
        if let Next::Stop = self.send(first).await {
            return;
        }
        let end = prefix_end(self.prefix.as_bytes());
        let backoff = Duration::from_millis(100);
        loop {
            // On the client's one watch stream, which resumes the watch by
            // itself after a break; it ends here only when this reader fell
            // behind, and is then watched again from its revision.
            let start = Revision(self.rev.0 + 1);
            let key = self.prefix.as_bytes();
            let mut watch = self.client.watch(watch_request(key, end.clone(), start));
            while let Some(resp) = watch.recv().await {
                match self.on_answer(resp, backoff).await {
                    Next::More => {}
                    Next::Reopen => break,
                    Next::Stop => return,
                }
            }
        }
    }

    /// Reports what one watch answer changed.
    async fn on_answer(&mut self, resp: pb::WatchResponse, backoff: Duration) -> Next {
        if resp.compact_revision != 0 {
            return self.resync(backoff).await;
        }
        if resp.canceled {
            let reason = resp.cancel_reason.clone();
            let _ = self.tx.send(Err(Error::WatchCanceled { reason })).await;
            return Next::Stop;
        }
        // Events come grouped by revision, in order.
        let mut events = resp.events.iter().peekable();
        while let Some(first) = events.next() {
            let at = Revision(mod_revision(first));
            let was_idle = self.keys.is_empty();
            let before = self.state();
            self.keys.apply(first);
            while let Some(ev) = events.next_if(|e| mod_revision(e) == at.0) {
                self.keys.apply(ev);
            }
            if was_idle {
                // A semaphore's limit can change only while its name is idle.
                let (client, prefix) = (&self.client, &self.prefix);
                self.permits = permits_at(client, prefix, &self.keys, at, self.permits).await;
            }
            let out = self.events.changed(&before, &self.state(), at);
            if let Next::Stop = self.send(out).await {
                return Next::Stop;
            }
            self.rev = Revision(self.rev.0.max(at.0));
        }
        Next::More
    }

    fn state(&self) -> T::State {
        self.events.state(&self.keys, self.permits)
    }

    /// Our resume point was compacted: start again from a fresh snapshot.
    async fn resync(&mut self, backoff: Duration) -> Next {
        let Ok((kvs, now)) = self.client.get_prefix(&self.prefix).await else {
            tokio::time::sleep(backoff).await;
            return Next::Reopen;
        };
        let before = self.state();
        self.keys = KeysByRevision::new(&self.prefix, kvs);
        self.permits = permits_at(&self.client, &self.prefix, &self.keys, now, self.permits).await;
        self.rev = now;
        let said = self.events.resynced(now).into_iter();
        let diff = self.events.changed(&before, &self.state(), now);
        match self.send(said.chain(diff).collect()).await {
            Next::Stop => Next::Stop,
            _ => Next::Reopen,
        }
    }

    async fn send(&self, events: Vec<T::Event>) -> Next {
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
