//! A live copy of the create revisions of the keys under one prefix, shared
//! by every waiter of the client on that prefix: one watch on the client's
//! stream, whatever the number of waiters.
//!
//! A waiter asks "tell me when fewer than `limit` keys under the prefix
//! were created before revision `rev`" (a semaphore's turn). No key can be
//! created with an older revision than an existing one, so once true it
//! stays true. The copy is a snapshot read at the revision the watch was
//! created at, then every event after it; a waiter is judged only once the
//! copy has reached its own revision (all keys older than it are then
//! known), and is woken only when its answer became yes.
//!
//! When the watch ends (etcd cancelled it, its resume revision was
//! compacted, or it fell behind), the copy is read again from a new watch;
//! waiters wait on.
//!
//! A semaphore's waiters always count on the copy. A mutex's (or a
//! writer's, or a candidate's) do when several contenders of the client
//! are on the name at once ([`Client::contend`]): then each acquire reads
//! nothing of the queue (whose sorted reads cost etcd a scan of every key
//! under the name) and the copy tells each waiter its turn.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::watches::Watch;
use super::{Client, prefix_end};
use crate::error::Result;
use crate::types::Revision;
use crate::wire::etcdserverpb as pb;
use crate::wire::mvccpb::event::EventType;

/// The mirrors of a client, by prefix, and how many of its contenders are
/// on each prefix (kept by its `Hubs`).
#[derive(Default)]
pub(crate) struct Mirrors {
    views: Mutex<HashMap<Vec<u8>, Weak<Mirror>>>,
    contenders: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
}

/// One contender of the client on a prefix, counted while it lives.
pub(crate) struct Contender {
    contenders: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
    prefix: Vec<u8>,
}

impl Drop for Contender {
    fn drop(&mut self) {
        let mut all = crate::rt::lock(&self.contenders);
        if let Some(n) = all.get_mut(&self.prefix) {
            *n -= 1;
            if *n == 0 {
                all.remove(&self.prefix);
            }
        }
    }
}

/// One prefix's copy; its task ends when the last waiter lets go of it.
pub(crate) struct Mirror {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct State {
    /// The revision the copy holds at (0: no snapshot yet).
    rev: i64,
    keys: HashMap<Vec<u8>, i64>,
    /// How many keys have each create revision.
    created: BTreeMap<i64, u32>,
    /// Waiters by (their revision, a number of their own).
    waiters: BTreeMap<(i64, u64), Waiter>,
    next_waiter: u64,
}

struct Waiter {
    limit: u32,
    tx: oneshot::Sender<Revision>,
}

impl Mirror {
    /// Waits until fewer than `limit` keys under the prefix were created
    /// before `rev`; returns a revision at which that holds.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves the copy.
    pub(crate) async fn wait_fewer_before(&self, rev: Revision, limit: u32) -> Revision {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut s = crate::rt::lock(&self.state);
            let id = (rev.0, s.next_waiter);
            s.next_waiter += 1;
            s.waiters.insert(id, Waiter { limit, tx });
            s.judge();
            id
        };
        // Leaves the waiter list however this future ends.
        let _leave = Leave(&self.state, id);
        match rx.await {
            Ok(at) => at,
            // The task ended, which only the mirror's drop does.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Client {
    /// Waits until fewer than `limit` keys under `prefix` were created
    /// before `rev`; returns a revision at which that holds.
    ///
    /// Wire calls: when no other waiter of this client watches `prefix`
    /// already, a watch create of the prefix on the client's watch stream
    /// and a `KV/Range` of its keys (keys only, serializable, at the
    /// watch's revision), drawn again up to twice when the watch may be
    /// unsynced; nothing more per waiter.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves the copy (and, when it was
    /// the last waiter, cancels its watch).
    pub(crate) async fn wait_fewer_before(
        &self,
        prefix: &str,
        rev: Revision,
        limit: u32,
    ) -> Revision {
        let mirror = self.mirror(prefix.as_bytes());
        mirror.wait_fewer_before(rev, limit).await
    }

    /// Counts one more contender of this client on `prefix` while the
    /// returned guard lives. When the client has a copy of the prefix
    /// already, or another contender is on it, also returns the copy
    /// (started now if need be), on which this contender counts instead
    /// of reading the queue.
    ///
    /// Wire calls: when the copy starts, those of
    /// [`wait_fewer_before`](Self::wait_fewer_before)'s first waiter.
    pub(crate) fn contend(&self, prefix: &str) -> (Option<Contender>, Option<Arc<Mirror>>) {
        let mirrors = &self.hubs().mirrors;
        let prefix = prefix.as_bytes().to_vec();
        let others = {
            let mut all = crate::rt::lock(&mirrors.contenders);
            let n = all.entry(prefix.clone()).or_default();
            *n += 1;
            *n - 1
        };
        let live = crate::rt::lock(&mirrors.views)
            .get(&prefix)
            .and_then(Weak::upgrade);
        let view = live.or_else(|| (others > 0).then(|| self.mirror(&prefix)));
        let contender = Contender {
            contenders: mirrors.contenders.clone(),
            prefix,
        };
        (Some(contender), view)
    }

    fn mirror(&self, prefix: &[u8]) -> Arc<Mirror> {
        let mut all = crate::rt::lock(&self.hubs().mirrors.views);
        if let Some(m) = all.get(prefix).and_then(Weak::upgrade) {
            return m;
        }
        all.retain(|_, m| m.strong_count() > 0);
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(follow(self.clone(), prefix.to_vec(), state.clone()));
        let m = Arc::new(Mirror { state, task });
        all.insert(prefix.to_vec(), Arc::downgrade(&m));
        m
    }
}

struct Leave<'a>(&'a Mutex<State>, (i64, u64));

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        crate::rt::lock(self.0).waiters.remove(&self.1);
    }
}

impl State {
    /// Wakes every waiter whose answer is now yes.
    fn judge(&mut self) {
        if self.rev == 0 {
            return;
        }
        let mut older = 0u64;
        let mut created = self.created.iter().peekable();
        let mut woken = Vec::new();
        for (&(rev, seq), w) in &self.waiters {
            if rev > self.rev {
                break; // keys older than it may not all be known yet
            }
            while let Some((_, n)) = created.next_if(|(c, _)| **c < rev) {
                older += u64::from(*n);
            }
            if older < u64::from(w.limit) {
                woken.push((rev, seq));
            }
        }
        for id in woken {
            if let Some(w) = self.waiters.remove(&id) {
                let _ = w.tx.send(Revision(self.rev));
            }
        }
    }

    fn reset(&mut self, kvs: Vec<crate::wire::mvccpb::KeyValue>, at: i64) {
        self.keys.clear();
        self.created.clear();
        for kv in kvs {
            self.put(kv.key, kv.create_revision);
        }
        self.rev = at;
    }

    fn put(&mut self, key: Vec<u8>, create_rev: i64) {
        if let Some(old) = self.keys.insert(key, create_rev) {
            self.forget(old);
        }
        *self.created.entry(create_rev).or_default() += 1;
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.keys.remove(key) {
            self.forget(old);
        }
    }

    fn forget(&mut self, create_rev: i64) {
        if let Some(n) = self.created.get_mut(&create_rev) {
            *n -= 1;
            if *n == 0 {
                self.created.remove(&create_rev);
            }
        }
    }

    /// Applies one watch answer's events newer than the copy. One
    /// revision may change several keys (a transaction, a `del --prefix`):
    /// its events share a revision and come in one answer, so what is
    /// skipped is judged against the copy's revision before the answer.
    fn apply(&mut self, resp: pb::WatchResponse) {
        let known = self.rev;
        for ev in resp.events {
            let Some(kv) = ev.kv else { continue };
            if kv.mod_revision <= known {
                continue; // in the snapshot already
            }
            if ev.r#type == EventType::Delete as i32 {
                self.delete(&kv.key);
            } else {
                self.put(kv.key, kv.create_revision);
            }
            self.rev = self.rev.max(kv.mod_revision);
        }
        self.judge();
    }
}

/// How many times a copy draws its watch (a new watch, and a new snapshot
/// at its revision) while the watch may be unsynced; the last draw is kept
/// either way.
const MAX_DRAWS: u32 = 3;

/// The mirror's task: watch, snapshot, then follow; again from a new watch
/// whenever the watch ends.
///
/// etcd 3.4 registers a watch created "from now" at the revision it read
/// before, plus one: a commit in between leaves it unsynced, and its
/// events then wait for etcd's sync loop (up to ~100 ms), which a fast
/// queue would feel at every handoff. When the snapshot's first read shows
/// the member that holds the watch past the watch's revision, that may have
/// happened: the copy is drawn again (the old watch cancelled), at most
/// [`MAX_DRAWS`] times. Each draw's snapshot is the truth at its revision,
/// so waiters are judged on it at once.
async fn follow(client: Client, prefix: Vec<u8>, state: Arc<Mutex<State>>) {
    let end = prefix_end(&prefix);
    let mut pause = Duration::from_millis(50);
    loop {
        let mut watch = None;
        for draw in 1..=MAX_DRAWS {
            match start(&client, &prefix, &end, &state).await {
                Some((w, synced)) if synced || draw == MAX_DRAWS => {
                    watch = Some(w);
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        let Some(mut watch) = watch else {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            continue;
        };
        pause = Duration::from_millis(50);
        while let Some(resp) = watch.recv().await {
            if resp.canceled {
                break;
            }
            crate::rt::lock(&state).apply(resp);
        }
    }
}

/// Watches the prefix, reads its keys at the watch's revision into the
/// copy and wakes whom that lets in. Returns the watch, and whether it is
/// surely synced; `None` when the watch or the read failed.
async fn start(
    client: &Client,
    prefix: &[u8],
    end: &[u8],
    state: &Mutex<State>,
) -> Option<(Watch, bool)> {
    let mut watch = client.watch(pb::WatchCreateRequest {
        key: prefix.to_vec(),
        range_end: end.to_vec(),
        ..Default::default()
    });
    let created = watch.recv().await.filter(|r| r.created && !r.canceled)?;
    let header = created.header.unwrap_or_default();
    let snap = snapshot(client, prefix, end, header.revision).await.ok()?;
    let synced = snap.read_at == header.revision && snap.member == header.member_id;
    let mut s = crate::rt::lock(state);
    s.reset(snap.kvs, snap.at);
    s.judge();
    Some((watch, synced))
}

/// How many keys one read of a copy's snapshot asks for: a page stays far
/// below gRPC's 4 MiB message limit even with etcd's longest keys.
const SNAPSHOT_PAGE: i64 = 512;

/// A copy's snapshot: the keys under the prefix at `at`.
struct Snapshot {
    kvs: Vec<crate::wire::mvccpb::KeyValue>,
    at: i64,
    /// The revision of the member that answered the first read, when it
    /// answered, and that member.
    read_at: i64,
    member: u64,
}

/// The keys under the prefix at revision `at` (from the member at hand;
/// one that has not reached `at` or compacted it gives way to the newest
/// state, dated where it holds), read in pages at that one revision.
async fn snapshot(client: &Client, prefix: &[u8], end: &[u8], at: i64) -> Result<Snapshot> {
    let first = if at > 0 {
        pages(client, prefix.to_vec(), end, at, true).await
    } else {
        Err(crate::Error::invalid("no revision to read at"))
    };
    let (kvs, at, header) = match first {
        Ok((kvs, header)) => (kvs, at, header),
        Err(crate::Error::Etcd { .. } | crate::Error::InvalidArgument { .. }) => {
            // The newest state: a linearizable first page dates it, the
            // other pages are read at its revision.
            let r = client.range(page(prefix.to_vec(), end, 0, false)).await?;
            let header = r.header.unwrap_or_default();
            let mut kvs = r.kvs;
            if r.more {
                if let Some(last) = kvs.last() {
                    let next = after(&last.key);
                    kvs.extend(pages(client, next, end, header.revision, false).await?.0);
                }
            }
            (kvs, header.revision, header)
        }
        Err(e) => return Err(e),
    };
    Ok(Snapshot {
        kvs,
        at,
        read_at: header.revision,
        member: header.member_id,
    })
}

/// One page of keys (keys only) from `start` to `end` at `revision`.
fn page(start: Vec<u8>, end: &[u8], revision: i64, serializable: bool) -> pb::RangeRequest {
    pb::RangeRequest {
        key: start,
        range_end: end.to_vec(),
        revision,
        serializable,
        keys_only: true,
        limit: SNAPSHOT_PAGE,
        ..Default::default()
    }
}

/// The smallest key after `key`.
fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Every key from `start` to `end` at `revision`, page after page; and
/// the header of the first page's answer.
async fn pages(
    client: &Client,
    mut start: Vec<u8>,
    end: &[u8],
    revision: i64,
    serializable: bool,
) -> Result<(Vec<crate::wire::mvccpb::KeyValue>, pb::ResponseHeader)> {
    let mut kvs = Vec::new();
    let mut first = None;
    loop {
        let r = client
            .range(page(start, end, revision, serializable))
            .await?;
        let header = first.get_or_insert(r.header.unwrap_or_default());
        let more = r.more;
        kvs.extend(r.kvs);
        match kvs.last() {
            Some(last) if more => start = after(&last.key),
            _ => return Ok((kvs, *header)),
        }
    }
}
