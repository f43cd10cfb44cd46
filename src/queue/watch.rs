//! Watching keys: a watch stream of one key or range, and the wait until a
//! witness key is deleted, proving that the watch is not late.

use std::time::Duration;

use tokio::task::JoinSet;

use super::rule::Witness;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::Revision;
use crate::wire::etcdserverpb as pb;
use crate::wire::mvccpb;

/// A watch's create request: `key` (to `range_end`, if any) from `start`
/// (0: from the store's revision when etcd registers it).
pub(crate) fn create_request(
    key: &[u8],
    range_end: Vec<u8>,
    start: Revision,
) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.to_vec(),
        range_end,
        start_revision: start.0,
        ..Default::default()
    }
}

/// Waits until any of `witnesses` is deleted (see [`wait_deleted_with`]):
/// one wait per witness, the first answer wins and the others are stopped.
///
/// # Errors
/// As [`wait_deleted_with`].
pub(crate) async fn wait_any_deleted_with(
    client: &Client,
    witnesses: &[Witness],
    eager: bool,
) -> Result<Option<Revision>> {
    if let [w] = witnesses {
        return wait_deleted_with(client, &w.key, w.rev, eager).await;
    }
    // Owned here: dropping the set (this future) aborts every wait.
    let mut waits = JoinSet::new();
    for w in witnesses.iter().cloned() {
        let client = client.clone();
        waits.spawn(async move { wait_deleted_with(&client, &w.key, w.rev, eager).await });
    }
    match waits.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(_)) | None => Ok(None),
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
/// and read after in the same way, then a third. Only when all three may
/// be unsynced, and only when `eager` (the deletion would be my turn), is
/// the key also read at growing intervals (2, 4, 8, 16, 32, 64 ms;
/// serializable), after which the watches alone are enough.
///
/// The watches go on the client's one watch stream, which resumes them by
/// itself after a break (see `client/watches.rs`).
///
/// A waiter further back (not `eager`) makes the extra watches too, but no
/// reads at intervals: when a queue moves fast, its predecessor's deletion
/// may come within the ~100 ms an unsynced watch lags (with one watch only,
/// 8 clients on one name saw handoffs of 80-100 ms at p99, against 6 ms),
/// while 1,000 waiters far back still cost etcd no reads but their own.
///
/// Returns a revision at which the key is known to be gone, or `None` when
/// one of the watches was cancelled by etcd, or this wait was dropped from
/// the stream for reading too slowly (the caller reads again).
pub(crate) async fn wait_deleted_with(
    client: &Client,
    key: &[u8],
    create_rev: Revision,
    eager: bool,
) -> Result<Option<Revision>> {
    const FIRST_POLL: Duration = Duration::from_millis(2);
    const LAST_POLL: Duration = Duration::from_millis(64);
    const MAX_WATCHES: u32 = 3;
    let mut watch = client.watch(create_request(key, Vec::new(), Revision(0)));
    let mut watches = 1;
    let mut poll: Option<Duration> = None;
    loop {
        let resp = tokio::select! {
            r = watch.recv() => match r {
                Some(r) => r,
                // Dropped for reading too slowly: read the queue again.
                None => return Ok(None),
            },
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
                watch.also(create_request(key, Vec::new(), Revision(0)));
            } else if eager {
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
