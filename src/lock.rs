//! The lock recipe: acquire, wait for the predecessor, hold, release.
//!
//! Key layout: `{name}/{lease id in lowercase hex}`, as etcd's Go
//! `concurrency.Mutex`, `etcdctl lock` and the server-side `Lock` RPC use,
//! so one name is one lock across all of them. Each contender's key is its
//! place in a FIFO queue, ordered by the key's create revision, and that
//! revision is the holder's fencing token.
//!
//! 1. **Acquire** — one `Txn`: if no key exists under `{name}/`, put mine
//!    (with my lease): I hold the lock. Otherwise, in a nested transaction:
//!    if my key does not exist, put it and read the oldest key under
//!    `{name}/`; else read my key and the oldest key. My queue revision is the
//!    put's revision (or my existing key's create revision). When the oldest
//!    key is mine, I hold the lock.
//! 2. **Wait** — one read-only `Txn` reads the newest key created before
//!    mine (sorted by create revision, descending, limit 1,
//!    `max_create_revision` = mine - 1: my immediate predecessor), my own
//!    key, and the holder. Watch only the predecessor until it is deleted.
//!    If it was the holder, it was the only key older than mine (no key can
//!    be created with an older revision), so the lock is mine once a read
//!    at the delete's revision shows my key still there; otherwise read the
//!    queue again. No thundering herd: each release wakes one waiter. The
//!    read also proves that my own key still exists: if my lease expired
//!    while I waited, I do not get the lock (the flaw of etcd issue 11456),
//!    and after the last read the lease is alive as long as the lost signal
//!    has not fired, which is checked before the guard is handed out.
//! 3. **Release** — a lock with its own lease: `LeaseRevoke` (key and lease
//!    go in one commit). A lock on a shared session: a `Txn` that deletes my
//!    key only if its create revision is still mine.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{Client, Retry, prefix_end};
use crate::error::{Error, Result};
use crate::session::{LostReason, SessionInner, StaleKey};
use crate::types::{Holder, KeyValue, LeaseId, Revision};
use crate::watch::{key_exists, wait_deleted};
use crate::wire::etcdserverpb as pb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::range_request::{SortOrder, SortTarget};
use pb::request_op::Request as Op;
use pb::response_op::Response as OpResp;

/// The default lease TTL of a lock with its own lease.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Longest lock name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// Largest holder value accepted, in bytes. etcd refuses requests over
/// 1.5 MiB by default, and the acquire transaction carries the value twice
/// (in its fast path and in its queueing branch).
pub const MAX_VALUE_LEN: usize = 512 * 1024;

/// The default value stored in a holder's key: `host:pid`, read from
/// `/proc/sys/kernel/hostname` (or `$HOSTNAME`) once per process, so others
/// can see who holds a lock.
pub fn default_value() -> Vec<u8> {
    static VALUE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    VALUE
        .get_or_init(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown-host".to_owned());
            format!("{host}:{}", std::process::id()).into_bytes()
        })
        .clone()
}

/// Checks a lock name as every operation does before sending anything:
/// not empty, at most [`MAX_NAME_LEN`] bytes, no control characters.
///
/// # Errors
/// [`Error::InvalidArgument`] saying which rule the name breaks.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("lock name must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "lock name is {} bytes; at most {MAX_NAME_LEN} are allowed",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "lock name must not contain control characters",
        ));
    }
    Ok(())
}

fn validate_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::invalid(format!(
            "lock value is {} bytes; at most {MAX_VALUE_LEN} are allowed",
            value.len()
        )));
    }
    Ok(())
}

fn lock_key(name: &str, lease: LeaseId) -> String {
    format!("{name}/{lease}")
}

fn lock_prefix(name: &str) -> String {
    format!("{name}/")
}

/// `Range` of the oldest key under the prefix: the holder.
fn owner_range(prefix: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        limit: 1,
        ..Default::default()
    }
}

/// The two newest keys under `prefix` (by create revision).
fn newest_two(prefix: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        sort_order: SortOrder::Descend as i32,
        limit: 2,
        keys_only: true,
        ..owner_range(prefix)
    }
}

fn compare_create(key: &str, rev: Revision) -> pb::Compare {
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(TargetUnion::CreateRevision(rev.0)),
        range_end: Vec::new(),
    }
}

fn op(r: Op) -> pb::RequestOp {
    pb::RequestOp { request: Some(r) }
}

fn range_resp(path_resp: &pb::TxnResponse, i: usize) -> Result<&pb::RangeResponse> {
    match path_resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(OpResp::ResponseRange(r)) => Ok(r),
        _ => Err(Error::Protocol {
            path: crate::client::paths::TXN,
            detail: format!("answer {i} of the lock transaction is not a range"),
        }),
    }
}

/// Where a lock's key sits in the queue after the acquire transaction.
struct Queued {
    rev: Revision,
    owner: Option<KeyValue>,
    /// Where my key stands behind its predecessor, when the transaction
    /// created my key behind others (it read the two newest keys after its
    /// put).
    behind: Option<Queue>,
}

/// Step 1: create my key if absent and read the holder, in one `Txn`.
///
/// The common case, an empty queue, is a compare and a put: if no key
/// exists under `{name}/`, put mine, and I hold the lock. Otherwise a nested
/// transaction puts my key if it is absent and reads the holder and the
/// two newest keys, mine and my predecessor (or, when my key exists
/// already, reads it back with the holder). With `only_if_free` (a try-lock)
/// nothing is put when the queue is not empty, so nothing needs cleaning up.
async fn enqueue(s: &SessionInner, name: &str, value: &[u8], only_if_free: bool) -> Result<Queued> {
    let key = lock_key(name, s.lease);
    let prefix = lock_prefix(name);
    let put = pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        lease: s.lease.0,
        prev_kv: false,
    };
    let get_mine = pb::RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    let read_back = vec![
        op(Op::RequestRange(get_mine)),
        op(Op::RequestRange(owner_range(&prefix))),
    ];
    let queue_empty = pb::Compare {
        range_end: prefix_end(prefix.as_bytes()),
        ..compare_create(&prefix, Revision(0))
    };
    let failure = if only_if_free {
        read_back
    } else {
        vec![op(Op::RequestTxn(pb::TxnRequest {
            compare: vec![compare_create(&key, Revision(0))],
            success: vec![
                op(Op::RequestPut(put.clone())),
                op(Op::RequestRange(owner_range(&prefix))),
                op(Op::RequestRange(newest_two(&prefix))),
            ],
            failure: read_back,
        }))]
    };
    let req = pb::TxnRequest {
        compare: vec![queue_empty],
        success: vec![op(Op::RequestPut(put))],
        failure,
    };
    // Safe to resend: a second try finds my key and reads it back.
    let resp = match s.client.txn(Retry::Safe, req).await {
        Ok(r) => r,
        Err(Error::Etcd { message, .. }) if message.contains("lease not found") => {
            return Err(Error::LeaseExpired { lease: s.lease });
        }
        Err(e) => return Err(e),
    };
    let rev = crate::client::header(crate::client::paths::TXN, resp.header)?.revision;
    if rev <= 0 {
        return Err(Error::Protocol {
            path: crate::client::paths::TXN,
            detail: format!("the lock transaction answered at revision {rev}"),
        });
    }
    if resp.succeeded {
        // The queue was empty: my key is the holder.
        let me = KeyValue {
            key: key.into_bytes(),
            value: value.to_vec(),
            create_revision: Revision(rev),
            mod_revision: Revision(rev),
            version: 1,
            lease: Some(s.lease),
        };
        return Ok(Queued {
            rev: Revision(rev),
            owner: Some(me),
            behind: None,
        });
    }
    let inner = if only_if_free {
        &resp
    } else {
        match resp.responses.first().and_then(|r| r.response.as_ref()) {
            Some(OpResp::ResponseTxn(t)) => t,
            _ => {
                return Err(Error::Protocol {
                    path: crate::client::paths::TXN,
                    detail: "the lock transaction's answer has no nested transaction".into(),
                });
            }
        }
    };
    let owner = range_resp(inner, 1)?
        .kvs
        .first()
        .cloned()
        .map(KeyValue::from);
    let created = !only_if_free && inner.succeeded;
    let behind = if created {
        // [mine, my predecessor]: mine is the newest key.
        range_resp(inner, 2)?.kvs.get(1).map(|pred| Queue::Behind {
            pred_key: pred.key.clone(),
            pred_rev: Revision(pred.create_revision),
            pred_is_holder: owner
                .as_ref()
                .is_some_and(|o| o.create_revision.0 == pred.create_revision),
        })
    } else {
        None
    };
    let my_rev = if created {
        Revision(rev)
    } else {
        match range_resp(inner, 0)?.kvs.first() {
            Some(kv) if kv.create_revision > 0 => Revision(kv.create_revision),
            Some(kv) => {
                return Err(Error::Protocol {
                    path: crate::client::paths::TXN,
                    detail: format!("my lock key has create revision {}", kv.create_revision),
                });
            }
            None => Revision(0), // only_if_free and someone else is queued
        }
    };
    Ok(Queued {
        rev: my_rev,
        owner,
        behind,
    })
}

/// Step 2: wait until no key older than mine is left. Returns when I hold
/// the lock; errors when my key vanished (lease lost) or the session ended.
///
/// `known`: where my key stood, when the acquire transaction read it; the
/// first read is then skipped.
async fn wait_turn(
    s: &SessionInner,
    name: &str,
    my_rev: Revision,
    mut known: Option<Queue>,
) -> Result<()> {
    let key = lock_key(name, s.lease);
    let prefix = lock_prefix(name);
    let mut backoff = Duration::from_millis(50);
    // Serializable reads first (served by the member at hand, no ReadIndex
    // round): "no key older than mine" can only become true, never false
    // again, since no key can be created with an older revision; and my own
    // key is alive while the lost signal has not fired (its deadline comes
    // before the server's expiry). A read that does not show my key may be
    // from a member that is behind: it is repeated as a linearizable read
    // before the key is declared gone.
    let mut serializable = true;
    loop {
        if let Some(r) = s.lost() {
            return Err(s.lost_error(r));
        }
        let queue = match known.take() {
            Some(q) => Ok(q),
            None => read_queue(s, &key, &prefix, my_rev, serializable).await,
        };
        let (pred_key, pred_rev, pred_is_holder) = match queue {
            Ok(Queue::Mine) => return Ok(()),
            Ok(Queue::Behind {
                pred_key,
                pred_rev,
                pred_is_holder,
            }) => (pred_key, pred_rev, pred_is_holder),
            Ok(Queue::MyKeyMissing) if serializable => {
                serializable = false;
                continue;
            }
            Ok(Queue::MyKeyMissing) => {
                // My key is gone: my lease expired (or someone deleted
                // the key) while I waited. I must not take the lock.
                return Err(Error::LockLost { key });
            }
            Err(e) if e.is_connectivity() => {
                // The cluster is unreachable: keep waiting while the
                // lease may still be alive; the lost signal ends the wait.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(e) => return Err(e),
        };
        backoff = Duration::from_millis(50);
        serializable = true;
        match wait_deleted(&s.client, &pred_key, pred_rev).await {
            Ok(Some(gone_at)) if pred_is_holder => {
                // My own key must still have existed then (a lease revoked
                // behind my back shows here); one serializable read.
                if key_exists(&s.client, key.as_bytes(), my_rev, gone_at.0)
                    .await?
                    .exists
                {
                    return Ok(());
                }
                serializable = false;
            }
            Ok(_) => {}
            Err(e) if e.is_connectivity() => tokio::time::sleep(backoff).await,
            Err(e) => return Err(e),
        }
    }
}

/// What a read of the queue showed.
enum Queue {
    /// No key older than mine: I hold the lock.
    Mine,
    /// My key is not there.
    MyKeyMissing,
    /// Waiting behind `pred_key` (created at `pred_rev`).
    Behind {
        pred_key: Vec<u8>,
        pred_rev: Revision,
        pred_is_holder: bool,
    },
}

/// One read-only Txn (no raft commit): my immediate predecessor, my own
/// key, and the holder.
async fn read_queue(
    s: &SessionInner,
    key: &str,
    prefix: &str,
    my_rev: Revision,
    serializable: bool,
) -> Result<Queue> {
    let pred = pb::RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision: my_rev.0 - 1,
        limit: 1,
        serializable,
        ..Default::default()
    };
    let mine = pb::RangeRequest {
        key: key.as_bytes().to_vec(),
        serializable,
        ..Default::default()
    };
    let owner = pb::RangeRequest {
        serializable,
        ..owner_range(prefix)
    };
    let req = pb::TxnRequest {
        compare: vec![],
        success: vec![
            op(Op::RequestRange(pred)),
            op(Op::RequestRange(mine)),
            op(Op::RequestRange(owner)),
        ],
        failure: vec![],
    };
    let resp = s.client.txn(Retry::Safe, req).await?;
    let still_mine = range_resp(&resp, 1)?
        .kvs
        .first()
        .is_some_and(|kv| kv.create_revision == my_rev.0);
    if !still_mine {
        return Ok(Queue::MyKeyMissing);
    }
    let Some(pred) = range_resp(&resp, 0)?.kvs.first().cloned() else {
        return Ok(Queue::Mine);
    };
    // When my predecessor is also the oldest key (the holder), it is the
    // only key older than mine: once it is gone, the lock is mine if my key
    // still existed at that revision (keys older than mine are never
    // created).
    let pred_is_holder = range_resp(&resp, 2)?
        .kvs
        .first()
        .is_some_and(|o| o.create_revision == pred.create_revision);
    Ok(Queue::Behind {
        pred_key: pred.key,
        pred_rev: Revision(pred.create_revision),
        pred_is_holder,
    })
}

/// How a guard gives its lock back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Release {
    /// The lock has its own lease: revoke it.
    RevokeLease,
    /// The lock is one of many on a session: delete the key if still mine.
    DeleteKey,
}

/// A held lock. Release it with [`release`](LockGuard::release).
///
/// # Dropping without release
///
/// - A lock with its own lease (from [`Client::lock`]): the keepalive stops
///   at once and, when a tokio runtime is running, the lease is revoked by a
///   background task (bounded by the request timeout), so the next waiter
///   gets the lock within about one round trip. Without a runtime, the lease
///   expires after its TTL.
/// - A lock on a [`Session`](crate::Session): a background task deletes the
///   key if its create revision is still this guard's; without a runtime
///   the key stays until the session is closed or its lease expires.
#[must_use = "dropping the guard releases the lock in the background"]
pub struct LockGuard {
    session: Arc<SessionInner>,
    release: Release,
    name: String,
    key: String,
    value: Vec<u8>,
    rev: Revision,
    done: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("fencing_token", &self.rev)
            .field("lease", &self.session.lease)
            .field("lost", &self.session.lost())
            .finish()
    }
}

impl LockGuard {
    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lock key, `{name}/{lease hex}`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease the key is attached to.
    pub fn lease(&self) -> LeaseId {
        self.session.lease
    }

    /// The TTL etcd granted to the lease.
    pub fn ttl(&self) -> Duration {
        self.session.ttl
    }

    /// The value stored in the key.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The fencing token: the key's create revision. It only grows across
    /// successive holders of one name. Pass it to an outside resource and
    /// have it refuse writes carrying a smaller token than one it has seen.
    pub fn fencing_token(&self) -> Revision {
        self.rev
    }

    /// The local monotonic time until which the lease is known to be alive
    /// (see [`Session::deadline`](crate::Session::deadline)).
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.session.deadline()
    }

    /// Whether the lease is known to be lost (the lost signal has fired).
    pub fn is_lost(&self) -> bool {
        self.session.lost().is_some()
    }

    /// Resolves when the lock can no longer be assumed held: the lease's
    /// local deadline passed without a keepalive answer, etcd said the lease
    /// is gone, or the session was closed. It fires before etcd could
    /// give the lock to anyone else.
    ///
    /// ```no_run
    /// # async fn f(guard: locker::LockGuard) {
    /// tokio::select! {
    ///     reason = guard.lost() => eprintln!("lock lost: {reason:?}; stopping"),
    ///     _ = async { /* the work */ } => {}
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> LostReason {
        self.session.wait_lost().await
    }

    /// A comparison that holds exactly while this guard's key is the one
    /// that won the lock: put it into your own `Txn` (see
    /// [`Client::txn_raw`]) to make a write conditional on holding the lock.
    pub fn is_owner(&self) -> pb::Compare {
        compare_create(&self.key, self.rev)
    }

    /// Runs `ops` in one transaction only if this guard still holds the
    /// lock (its key's create revision is still the fencing token).
    /// Returns the answers of the ops.
    ///
    /// Wire calls: one `KV/Txn` (one raft commit); it is not resent once it
    /// may have reached etcd.
    ///
    /// # Errors
    /// [`Error::LockLost`] when the key is gone or is not this guard's,
    /// [`Error::LeaseExpired`] when the lost signal already fired (nothing
    /// is sent), [`Error::Ambiguous`] when the answer was lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the transaction may be applied even if the future is dropped.
    pub async fn txn(&self, ops: Vec<pb::RequestOp>) -> Result<pb::TxnResponse> {
        if let Some(r) = self.session.lost() {
            return Err(self.session.lost_error(r));
        }
        let req = pb::TxnRequest {
            compare: vec![self.is_owner()],
            success: ops,
            failure: vec![],
        };
        let resp = self.session.client.txn(Retry::IfNotSent, req).await?;
        if !resp.succeeded {
            return Err(Error::LockLost {
                key: self.key.clone(),
            });
        }
        Ok(resp)
    }

    /// Writes `key = value` only if this guard still holds the lock; returns
    /// the write's revision. See [`txn`](Self::txn).
    ///
    /// # Errors
    /// As for [`txn`](Self::txn).
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied even if the future is dropped.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Revision> {
        let put = pb::PutRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            lease: 0,
            prev_kv: false,
        };
        let resp = self.txn(vec![op(Op::RequestPut(put))]).await?;
        Ok(Revision(resp.header.map_or(0, |h| h.revision)))
    }

    /// Releases the lock.
    ///
    /// Wire calls: for a lock with its own lease, one `Lease/LeaseRevoke`
    /// (key and lease deleted in one commit); for a lock on a session, one
    /// `KV/Txn` deleting the key if its create revision is still the fencing
    /// token (one commit).
    ///
    /// # Errors
    /// [`Error::LockLost`] or [`Error::LeaseExpired`] when the lock had been
    /// lost before the release: the work done under it was not protected to
    /// the end. Network errors: the lock then goes when its lease expires.
    ///
    /// # Cancel safety
    /// Not cancel safe: the release may or may not be applied; if it is not,
    /// the lease expiry (or the drop of the session) frees the lock.
    pub async fn release(mut self) -> Result<()> {
        self.done = true;
        match self.release {
            Release::RevokeLease => {
                self.session.unreserve(&self.name);
                let lost = self.session.lost();
                // A loss known here is the answer, whether or not the
                // revoke gets through.
                let existed = match (self.session.revoke().await, lost) {
                    (Ok(existed), _) => existed,
                    (Err(_), Some(r)) => return Err(self.session.lost_error(r)),
                    (Err(e), None) => return Err(e),
                };
                match lost {
                    Some(r) => Err(self.session.lost_error(r)),
                    None if !existed => Err(Error::LeaseExpired {
                        lease: self.session.lease,
                    }),
                    None => Ok(()),
                }
            }
            Release::DeleteKey => {
                let lost = self.session.lost();
                // Until its key is known to be gone, the name is marked: a new
                // lock of it on this session first deletes this key, even if
                // this future is dropped before the answer.
                self.session.mark_stale(&self.name, Some(self.rev));
                let deleted = match delete_if_mine(&self.session.client, &self.key, self.rev).await
                {
                    Ok(d) => {
                        self.session.unreserve(&self.name);
                        d
                    }
                    Err(e) => {
                        return Err(match lost {
                            Some(r) => self.session.lost_error(r),
                            None => e,
                        });
                    }
                };
                match lost {
                    Some(r) => Err(self.session.lost_error(r)),
                    None if !deleted => Err(Error::LockLost {
                        key: self.key.clone(),
                    }),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Deletes `key` if its create revision is `rev`; true if it was deleted.
async fn delete_if_mine(client: &Client, key: &str, rev: Revision) -> Result<bool> {
    let req = pb::TxnRequest {
        compare: vec![compare_create(key, rev)],
        success: vec![op(Op::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }))],
        failure: vec![],
    };
    // Safe to resend: the compare makes a second delete a no-op.
    Ok(client.txn(Retry::Safe, req).await?.succeeded)
}

/// Deletes `key` whatever its create revision, without ever deleting a key
/// created after this call started: the key is read, then deleted only if
/// its create revision is the one read. (An unconditional delete could be
/// resent or applied late, and hit the key of a later lock of the same
/// name on the same lease.)
async fn delete_queued(client: &Client, key: &str) -> Result<()> {
    if let Some(kv) = client.get(key).await? {
        delete_if_mine(client, key, kv.create_revision).await?;
    }
    Ok(())
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.release {
            // Dropping the last reference to the session revokes its lease.
            Release::RevokeLease => self.session.unreserve(&self.name),
            Release::DeleteKey => {
                let client = self.session.client.clone();
                let key = std::mem::take(&mut self.key);
                let rev = self.rev;
                self.session
                    .clean_in_background(&self.name, Some(rev), async move {
                        delete_if_mine(&client, &key, rev).await.is_ok()
                    });
            }
        }
    }
}

/// Removes a queued key if the acquiring future is dropped or fails.
struct QueueCleanup {
    session: Arc<SessionInner>,
    release: Release,
    name: String,
    armed: bool,
}

impl QueueCleanup {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for QueueCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match self.release {
            // A lock with its own lease: the lease is revoked when its
            // session is dropped, which happens with this future.
            Release::RevokeLease => self.session.unreserve(&self.name),
            // A key on a shared session: delete it in the background. Its
            // create revision may be unknown (the transaction may have been
            // in flight), so it is read first; later requests for the name
            // on this session wait for the cleanup. A transaction that etcd
            // applies only after the cleanup (it was cancelled in flight)
            // leaves its key until the session ends.
            Release::DeleteKey => {
                let client = self.session.client.clone();
                let key = lock_key(&self.name, self.session.lease);
                self.session
                    .clean_in_background(&self.name, None, async move {
                        delete_queued(&client, &key).await.is_ok()
                    });
            }
        }
    }
}

/// Deletes what an earlier request for the same name on this session may
/// have left behind; on failure the name stays marked.
async fn remove_stale(session: &SessionInner, name: &str, stale: Option<StaleKey>) -> Result<()> {
    let Some(StaleKey(rev)) = stale else {
        return Ok(());
    };
    let key = lock_key(name, session.lease);
    let r = match rev {
        Some(rev) => delete_if_mine(&session.client, &key, rev).await.map(|_| ()),
        None => delete_queued(&session.client, &key).await,
    };
    if r.is_err() {
        session.mark_stale(name, rev);
    }
    r
}

/// Where a lock request gets its lease.
enum Lease {
    Own { client: Client, ttl: Duration },
    Shared(Arc<SessionInner>),
}

/// The options shared by [`LockRequest`] and [`TryLockRequest`].
struct Spec {
    lease: Lease,
    name: String,
    value: Option<Vec<u8>>,
}

impl Spec {
    fn new(lease: Lease, name: String) -> Spec {
        Spec {
            lease,
            name,
            value: None,
        }
    }

    fn set_ttl(&mut self, ttl: Duration) {
        if let Lease::Own { ttl: t, .. } = &mut self.lease {
            *t = ttl;
        }
    }

    /// Validates the input and gets the session (granting a lease if the
    /// lock has its own).
    async fn session(&self) -> Result<(Arc<SessionInner>, Release)> {
        validate_name(&self.name)?;
        if let Some(v) = &self.value {
            validate_value(v)?;
        }
        match &self.lease {
            Lease::Own { client, ttl } => {
                crate::client::ttl_secs(*ttl)?;
                Ok((
                    SessionInner::grant(client, *ttl).await?,
                    Release::RevokeLease,
                ))
            }
            Lease::Shared(s) => {
                if let Some(r) = s.lost() {
                    return Err(s.lost_error(r));
                }
                Ok((s.clone(), Release::DeleteKey))
            }
        }
    }

    /// The start shared by a lock and a try-lock: get the session, reserve
    /// the name on it, remove what an earlier request left under the key.
    /// Returns the session, how to release, the armed cleanup and the value.
    async fn prepare(&self) -> Result<(Arc<SessionInner>, Release, QueueCleanup, Vec<u8>)> {
        let (session, release) = self.session().await?;
        let stale = session.reserve(&self.name).await?;
        // From here on, a drop or an error removes whatever this request
        // (or an earlier one, for a stale key) left under its key.
        let cleanup = QueueCleanup {
            session: session.clone(),
            release,
            name: self.name.clone(),
            armed: true,
        };
        remove_stale(&session, &self.name, stale).await?;
        let value = self.value.clone().unwrap_or_else(default_value);
        Ok((session, release, cleanup, value))
    }

    fn guard(
        self,
        session: Arc<SessionInner>,
        release: Release,
        value: Vec<u8>,
        rev: Revision,
    ) -> LockGuard {
        session.set_revision(&self.name, rev);
        LockGuard {
            key: lock_key(&self.name, session.lease),
            session,
            release,
            name: self.name,
            value,
            rev,
            done: false,
        }
    }
}

/// A request to wait for a lock: set options, then `.await` it.
///
/// Wire calls when the lock is free: one `KV/Txn` (plus one
/// `Lease/LeaseGrant` first for a lock with its own lease). When it is
/// held, the same `KV/Txn` queues my key and reads my predecessor; then,
/// per predecessor, one `Watch` stream on that key with its create request
/// and one `KV/Range` of the key (up to two more creates and reads on the
/// same stream when the store moved meanwhile, then `KV/Range` reads of
/// the key 2, 4, 8 … 64 ms apart if none of the three watches is proven
/// synced), and one read-only `KV/Txn`
/// to find the next predecessor when one leaves that was not the holder;
/// finally one `KV/Range` proving my key was still there when the holder
/// left. All reads are serializable.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad name, value or TTL;
/// [`Error::AcquireTimeout`] when [`timeout`](Self::timeout) passes;
/// [`Error::LockLost`] or [`Error::LeaseExpired`] when the lease was lost
/// while waiting; [`Error::AlreadyLocked`] when the session already holds
/// or waits for this name; network errors.
///
/// # Cancel safety
/// Dropping the future leaves nothing queued: a lock with its own lease is
/// revoked in the background, a key on a session is deleted in the
/// background.
#[must_use = "a lock request does nothing until awaited"]
pub struct LockRequest {
    spec: Spec,
    timeout: Option<Duration>,
}

impl LockRequest {
    pub(crate) fn on_session(session: Arc<SessionInner>, name: String) -> Self {
        LockRequest {
            spec: Spec::new(Lease::Shared(session), name),
            timeout: None,
        }
    }

    /// The TTL of the lock's own lease (default 10 s). Ignored for a lock on
    /// a session, which uses the session's lease.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.spec.set_ttl(ttl);
        self
    }

    /// The value stored in the key, visible to others as the holder's
    /// identity (default: [`default_value`]).
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.spec.value = Some(value.into());
        self
    }

    /// Give up waiting after this long (the grant and first transaction
    /// count too). The queue key is removed before the error is returned.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    async fn run(self) -> Result<LockGuard> {
        // A timeout too large to add to the clock is no timeout.
        let deadline = self.timeout.and_then(|t| Instant::now().checked_add(t));
        let (session, release, cleanup, value) = self.spec.prepare().await?;
        let wait = async {
            let q = enqueue(&session, &self.spec.name, &value, false).await?;
            let mine = q.owner.as_ref().is_some_and(|o| o.create_revision == q.rev);
            if !mine {
                wait_turn(&session, &self.spec.name, q.rev, q.behind).await?;
            }
            Ok::<Revision, Error>(q.rev)
        };
        let lost = session.wait_lost();
        let outcome = tokio::select! {
            r = wait => r,
            r = lost => Err(session.lost_error(r)),
            _ = crate::rt::sleep_until_opt(deadline) => Err(Error::AcquireTimeout {
                name: self.spec.name.clone(),
                after: self.timeout.unwrap_or_default(),
            }),
        };
        match outcome {
            Ok(rev) => {
                // The lease may have been lost just as the wait ended.
                if let Some(r) = session.lost() {
                    drop(cleanup);
                    return Err(session.lost_error(r));
                }
                cleanup.disarm();
                Ok(self.spec.guard(session, release, value, rev))
            }
            Err(e) => {
                cleanup.disarm();
                // Leave nothing queued before reporting the error.
                match release {
                    Release::RevokeLease => {
                        session.unreserve(&self.spec.name);
                        let _ = session.revoke().await;
                    }
                    Release::DeleteKey => {
                        // Marked first, so that a drop of this future while
                        // the delete is in flight still leaves a note.
                        session.mark_stale(&self.spec.name, None);
                        let key = lock_key(&self.spec.name, session.lease);
                        if delete_queued(&session.client, &key).await.is_ok() {
                            session.unreserve(&self.spec.name);
                        }
                    }
                }
                Err(e)
            }
        }
    }
}

impl IntoFuture for LockRequest {
    type Output = Result<LockGuard>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<LockGuard>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// The outcome of a try-lock.
#[derive(Debug)]
#[must_use]
pub enum TryLock {
    /// The lock was free and is now held.
    Acquired(LockGuard),
    /// Someone else holds the lock (or waits for it first); nothing of ours
    /// was left behind.
    Held(Holder),
}

/// A request to take a lock only if it is free: set options, then `.await`.
///
/// Wire calls: one `KV/Txn` that creates the key only if no key exists
/// under `{name}/`, and otherwise reads the holder; so a busy lock leaves
/// nothing to clean up. A lock with its own lease adds one
/// `Lease/LeaseGrant` before, and one `Lease/LeaseRevoke` after when the
/// lock was busy.
///
/// # Errors
/// As for [`LockRequest`], without the timeout.
///
/// # Cancel safety
/// As for [`LockRequest`].
#[must_use = "a try-lock request does nothing until awaited"]
pub struct TryLockRequest {
    spec: Spec,
}

impl TryLockRequest {
    pub(crate) fn on_session(session: Arc<SessionInner>, name: String) -> Self {
        TryLockRequest {
            spec: Spec::new(Lease::Shared(session), name),
        }
    }

    /// The TTL of the lock's own lease (default 10 s); ignored on a session.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.spec.set_ttl(ttl);
        self
    }

    /// The value stored in the key (default: [`default_value`]).
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.spec.value = Some(value.into());
        self
    }

    async fn run(self) -> Result<TryLock> {
        let (session, release, cleanup, value) = self.spec.prepare().await?;
        let q = enqueue(&session, &self.spec.name, &value, true).await?;
        match q.owner {
            Some(owner) if q.rev.0 != 0 && owner.create_revision == q.rev => {
                cleanup.disarm();
                Ok(TryLock::Acquired(
                    self.spec.guard(session, release, value, q.rev),
                ))
            }
            Some(owner) if q.rev.0 == 0 || owner.create_revision != q.rev => {
                cleanup.disarm();
                session.unreserve(&self.spec.name);
                if release == Release::RevokeLease {
                    // Best effort: an unused lease also expires by itself.
                    let _ = session.revoke().await;
                }
                Ok(TryLock::Held(Holder::from_kv(&self.spec.name, owner)))
            }
            _ => Err(Error::Protocol {
                path: crate::client::paths::TXN,
                detail: "the try-lock transaction read no holder".into(),
            }),
        }
    }
}

impl IntoFuture for TryLockRequest {
    type Output = Result<TryLock>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<TryLock>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl Client {
    /// Waits in FIFO order for the lock `name`, on a lease of its own kept
    /// alive until release (the original Go locker's model).
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// use std::time::Duration;
    /// let guard = client
    ///     .lock("jobs/nightly")
    ///     .ttl(Duration::from_secs(5))
    ///     .value("host-a")
    ///     .timeout(Duration::from_secs(30))
    ///     .await?;
    /// println!("fencing token {}", guard.fencing_token());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock(&self, name: impl Into<String>) -> LockRequest {
        LockRequest {
            spec: Spec::new(
                Lease::Own {
                    client: self.clone(),
                    ttl: DEFAULT_TTL,
                },
                name.into(),
            ),
            timeout: None,
        }
    }

    /// Takes the lock `name` only if it is free, on a lease of its own.
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// match client.try_lock("jobs/nightly").await? {
    ///     locker::TryLock::Acquired(guard) => guard.release().await?,
    ///     locker::TryLock::Held(h) => println!("held by {}", h.value_str()),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_lock(&self, name: impl Into<String>) -> TryLockRequest {
        TryLockRequest {
            spec: Spec::new(
                Lease::Own {
                    client: self.clone(),
                    ttl: DEFAULT_TTL,
                },
                name.into(),
            ),
        }
    }

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
        let resp = self.range(owner_range(&lock_prefix(name))).await?;
        let Some(kv) = resp.kvs.into_iter().next() else {
            return Ok(None);
        };
        let mut holder = Holder::from_kv(name, KeyValue::from(kv));
        if holder.lease.0 != 0 {
            holder.ttl_left = self.lease_time_to_live(holder.lease).await?;
        }
        Ok(Some(holder))
    }
}
