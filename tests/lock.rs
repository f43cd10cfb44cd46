//! The lock's behaviour, specified against real etcd processes.
//!
//! Every test starts its own single-member etcd through the `testing`
//! harness (and, where a fault is needed, a TCP proxy of its own between a
//! client and etcd), so tests share nothing and may run in parallel. Each
//! wait has a deadline and every loop a bound; nothing sleeps and hopes.
//!
//! Run with `cargo test --features testing --test lock`.
#![cfg(feature = "testing")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locker::testing::{Etcd, Proxy, ProxyMode, closed_port, wait_until, within};
use locker::testing::{connect, connect_through};
use locker::testing::{queue, queue_keys, wait_queue_is, wait_queued};
use locker::wire::etcdserverpb as pb;
use locker::{
    Client, Error, LockEvent, LockGuard, LockWatch, LostReason, Revision, Session, TryLock,
    WireKind, WireRecord, paths,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The longest any single wait on etcd may take in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// How soon a lock given up without `release` (guard dropped) must reach the
/// next waiter: far less than the 30 s TTL the dropped holder had.
const FREED_WITHIN: Duration = Duration::from_secs(1);

async fn start_etcd() -> Etcd {
    Etcd::single().await.expect("start a single-member etcd")
}

/// Asserts that nobody holds lock `name`.
async fn assert_free(client: &Client, name: &str) {
    let holder = within("holder", WAIT, client.holder(name))
        .await
        .expect("holder");
    assert_eq!(holder, None, "{name} is still held");
}

/// Records every wire call of a client, with the instant it was seen.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(Instant, WireRecord)>>>);

impl Recorder {
    fn sink(&self) -> impl Fn(&WireRecord) + Send + Sync + 'static {
        let records = self.0.clone();
        move |r: &WireRecord| {
            records
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Instant::now(), r.clone()));
        }
    }

    /// How many records match `pred`.
    fn count(&self, pred: impl Fn(&WireRecord) -> bool) -> usize {
        let records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().filter(|(_, r)| pred(r)).count()
    }

    /// Unary calls to `path`.
    fn calls(&self, path: &str) -> usize {
        self.count(|r| r.kind == WireKind::Unary && r.path == path)
    }

    /// Records seen after `t`.
    fn since(&self, t: Instant) -> Vec<WireRecord> {
        let records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        records
            .iter()
            .filter(|(at, _)| *at > t)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The instant of the first record matching `pred`.
    fn first(&self, pred: impl Fn(&WireRecord) -> bool) -> Option<Instant> {
        let records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().find(|(_, r)| pred(r)).map(|(at, _)| *at)
    }
}

async fn connect_recorded(endpoints: Vec<String>, recorder: &Recorder) -> Client {
    let builder = Client::builder()
        .endpoints(endpoints)
        .audit(recorder.sink());
    within("connect", WAIT, builder.connect())
        .await
        .expect("connect to etcd")
}

/// A lock event reduced to what a test compares: kind, holder key, token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Acquired(String, Revision),
    Released(String, Revision),
}

fn acquired(g: &LockGuard) -> Seen {
    Seen::Acquired(g.key().to_owned(), g.fencing_token())
}

fn released(g: &LockGuard) -> Seen {
    Seen::Released(g.key().to_owned(), g.fencing_token())
}

/// The next event of a watch (not a snapshot), with its revision.
async fn next_change(watch: &mut LockWatch) -> (Seen, Revision) {
    let event = within("the next lock event", WAIT, watch.next())
        .await
        .expect("the watch ended")
        .expect("the watch reported an error");
    match event {
        LockEvent::Acquired { holder, revision } => {
            (Seen::Acquired(holder.key, holder.fencing_token), revision)
        }
        LockEvent::Released { holder, revision } => {
            (Seen::Released(holder.key, holder.fencing_token), revision)
        }
        other => panic!("expected an acquire or release, got {other:?}"),
    }
}

/// The first event of a watch: its snapshot.
async fn snapshot(watch: &mut LockWatch) -> Option<locker::Holder> {
    let event = within("the watch snapshot", WAIT, watch.next())
        .await
        .expect("the watch ended")
        .expect("the watch reported an error");
    match event {
        LockEvent::Snapshot { holder, .. } => holder,
        other => panic!("the first event must be a snapshot, got {other:?}"),
    }
}

/// Locks `name` with a lease of its own and releases it again, returning
/// the events that must be seen for it.
async fn lock_and_release(client: &Client, name: &str, expected: &mut Vec<Seen>) {
    let g = within("lock", WAIT, client.lock(name))
        .await
        .expect("lock a free lock");
    expected.push(acquired(&g));
    expected.push(released(&g));
    within("release", WAIT, g.release()).await.expect("release");
}

/// etcdctl (of the etcd under test) talking to member 0, its output piped.
fn etcdctl(etcd: &Etcd) -> Command {
    let mut cmd = Command::from(etcd.etcdctl(0).expect("etcdctl"));
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

// ---------------------------------------------------------------------------
// Mutual exclusion, fencing, FIFO
// ---------------------------------------------------------------------------

/// 8 contenders, each with its own connection (half with a lease per lock,
/// half on a session of their own), take and release one lock 130 times
/// each: never two holders at once, and the fencing tokens grow strictly in
/// the order the lock was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_holder_at_a_time_and_fencing_tokens_grow_strictly() {
    const CONTENDERS: usize = 8;
    const ROUNDS: usize = 130;
    let etcd = start_etcd().await;
    let name = "mutex/contended";
    let inside = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::with_capacity(CONTENDERS * ROUNDS)));

    let mut contenders = Vec::new();
    for c in 0..CONTENDERS {
        let client = connect(etcd.endpoints()).await;
        let session = match c % 2 {
            0 => None,
            _ => Some(
                within(
                    "open a session",
                    WAIT,
                    client.session(Duration::from_secs(10)),
                )
                .await
                .expect("open a session"),
            ),
        };
        let (inside, tokens) = (inside.clone(), tokens.clone());
        contenders.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let request = match &session {
                    Some(s) => s.lock(name),
                    None => client.lock(name),
                };
                let guard = within("acquire", WAIT, request.value(format!("c{c}")))
                    .await
                    .unwrap_or_else(|e| panic!("contender {c} round {round}: {e}"));
                let holders = inside.fetch_add(1, Ordering::SeqCst) + 1;
                assert_eq!(holders, 1, "contender {c} got the lock while it was held");
                tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(guard.fencing_token());
                // Let any other (wrongly) granted contender run in between.
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                within("release", WAIT, guard.release())
                    .await
                    .unwrap_or_else(|e| panic!("contender {c} round {round} release: {e}"));
            }
            if let Some(s) = session {
                within("close the session", WAIT, s.close())
                    .await
                    .expect("close the session");
            }
        }));
    }
    for (c, task) in contenders.into_iter().enumerate() {
        within("a contender finishing", Duration::from_secs(60), task)
            .await
            .unwrap_or_else(|e| panic!("contender {c} failed: {e}"));
    }

    let tokens = std::mem::take(&mut *tokens.lock().unwrap_or_else(|e| e.into_inner()));
    assert_eq!(tokens.len(), CONTENDERS * ROUNDS);
    for pair in tokens.windows(2) {
        assert!(
            pair[0] < pair[1],
            "fencing tokens must grow strictly in acquisition order: {} then {}",
            pair[0],
            pair[1]
        );
    }
    let client = connect(etcd.endpoints()).await;
    assert!(
        queue(&client, name).await.is_empty(),
        "nothing is left queued"
    );
}

/// With a holder and waiters A, B and C queued one after the other, the
/// lock goes to A, then B, then C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_lock_in_the_order_they_queued() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "fifo/order";
    let holder = within("lock", WAIT, client.lock(name).value("holder"))
        .await
        .expect("lock a free lock");

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for (i, label) in ["A", "B", "C"].into_iter().enumerate() {
        let own = connect(etcd.endpoints()).await;
        let order = order.clone();
        waiters.push(tokio::spawn(async move {
            let g = within("wait for the lock", WAIT, own.lock(name).value(label))
                .await
                .unwrap_or_else(|e| panic!("waiter {label}: {e}"));
            order
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((label, g.fencing_token()));
            within("release", WAIT, g.release()).await.expect("release");
        }));
        // Queue the next waiter only once this one's key is in etcd.
        wait_queued(&client, name, i + 2).await;
    }
    let values: Vec<Vec<u8>> = queue(&client, name)
        .await
        .into_iter()
        .map(|kv| kv.value)
        .collect();
    assert_eq!(values, [&b"holder"[..], b"A", b"B", b"C"]);

    within("release", WAIT, holder.release())
        .await
        .expect("release");
    for w in waiters {
        within("a waiter finishing", WAIT, w)
            .await
            .expect("waiter failed");
    }
    let order = order.lock().unwrap_or_else(|e| e.into_inner());
    let labels: Vec<&str> = order.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        labels,
        ["A", "B", "C"],
        "the lock is granted in queue order"
    );
    assert!(order.windows(2).all(|p| p[0].1 < p[1].1));
}

/// etcd 3.4 registers a watch as unsynced (its events then come up to
/// ~100 ms late) when a commit lands while it creates it. A waiter that
/// finds the store moved past its watch's `created` revision creates
/// another watch of its predecessor on the same stream, up to three in all,
/// and then also reads the key at intervals. Here every byte to and from
/// the waiter is delayed 50 ms while another client commits all the time,
/// so the store has always moved by the time the waiter reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_watches_again_when_the_store_moved_under_its_watch() {
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let recorder = Recorder::default();
    let slow = connect_recorded(vec![proxy.url()], &recorder).await;
    let name = "rewatch/moved";
    let holder = within("lock", WAIT, direct.lock(name).value("H"))
        .await
        .expect("lock a free lock");

    // Two writers commit all the time, bounded in count and time, so that
    // each 2 x 50 ms window between a watch's creation and the waiter's
    // read holds commits even on a busy machine.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (client, stop) = (direct.clone(), stop.clone());
            tokio::spawn(async move {
                let until = Instant::now() + WAIT;
                for i in 0..50_000u32 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > until {
                        break;
                    }
                    client
                        .put(format!("rewatch/noise-{w}"), i.to_string())
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(50)));
    let waiter = tokio::spawn(async move { slow.lock(name).value("W").await });
    let creates = |r: &WireRecord| {
        r.kind == WireKind::StreamSend && r.path == paths::WATCH && r.request.contains("create")
    };
    wait_until("the waiter to create a third watch", WAIT, || async {
        recorder.count(creates) >= 3
    })
    .await;
    // After the third watch: a read after `created`, then polls.
    let ranges = recorder.calls(paths::RANGE);
    wait_until("the waiter to poll its predecessor", WAIT, || async {
        recorder.calls(paths::RANGE) >= ranges + 2
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        within("a writer stopping", WAIT, writer)
            .await
            .expect("writer");
    }
    proxy.set_mode(ProxyMode::Pass);

    within("release", WAIT, holder.release())
        .await
        .expect("release");
    let w = within("the waiter getting the lock", WAIT, waiter)
        .await
        .expect("waiter task")
        .expect("the waiter gets the lock");
    assert_eq!(
        recorder.count(|r| r.kind == WireKind::StreamOpen && r.path == paths::WATCH),
        1,
        "the watches share one stream"
    );
    assert_eq!(recorder.count(creates), 3, "three watches, no more");
    within("release", WAIT, w.release()).await.expect("release");
}

// ---------------------------------------------------------------------------
// No false grant (etcd issue 11456)
// ---------------------------------------------------------------------------

/// A waiter cut off from etcd long enough for its lease to expire must not
/// come back holding the lock once the holder releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_lease_expired_while_waiting_is_not_granted() {
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let cut_off = connect_through(&proxy).await;
    let name = "false-grant/expired";

    let holder = within(
        "lock",
        WAIT,
        direct.lock(name).ttl(Duration::from_secs(30)).value("H"),
    )
    .await
    .expect("lock a free lock");
    let waiter = tokio::spawn(async move {
        cut_off
            .lock(name)
            .ttl(Duration::from_secs(2))
            .value("W")
            .await
    });
    wait_queued(&direct, name, 2).await;
    let waiter_key = queue(&direct, name).await[1].key_str();
    assert_ne!(waiter_key, holder.key());

    // The waiter's keepalives stop reaching etcd: its lease expires.
    proxy.set_mode(ProxyMode::Blackhole);
    wait_until("the waiter's key expired in etcd", WAIT, || async {
        direct.get(&waiter_key).await.expect("get").is_none()
    })
    .await;

    within("release", WAIT, holder.release())
        .await
        .expect("release");
    proxy.set_mode(ProxyMode::Pass);

    let outcome = within("the waiter's lock future", WAIT, waiter)
        .await
        .expect("the waiter task panicked");
    match outcome {
        Ok(g) => panic!("a waiter whose lease expired got the lock: {g:?}"),
        Err(e) => {
            eprintln!("the expired waiter's lock() failed: {e}");
            assert!(
                e.is_lost() || e.is_connectivity(),
                "expected a lost lease or a connectivity error, got {e:?}"
            );
        }
    }
    let now = within("holder", WAIT, direct.holder(name))
        .await
        .expect("holder");
    assert!(
        now.as_ref().is_none_or(|h| h.key != waiter_key),
        "the expired waiter's key must not hold the lock: {now:?}"
    );
    assert!(!queue_keys(&direct, name).await.contains(&waiter_key));
}

/// A waiter whose key vanished while it waited (its lease revoked behind
/// its back, before its own keepalive could notice) reads its own key again
/// when its predecessor leaves, and does not take the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_key_vanished_while_waiting_is_not_granted() {
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let name = "false-grant/revoked";

    let holder = within("lock", WAIT, direct.lock(name).value("H"))
        .await
        .expect("lock a free lock");
    // A 30 s lease: its first keepalive goes out 10 s from now, long after
    // this test has decided.
    let waiter = tokio::spawn(async move { other.lock(name).ttl(Duration::from_secs(30)).await });
    wait_queued(&direct, name, 2).await;
    let waiter_kv = queue(&direct, name).await.remove(1);
    let lease = waiter_kv.lease.expect("the waiter's key has a lease");
    assert!(
        within("revoke", WAIT, direct.lease_revoke(lease))
            .await
            .expect("revoke the waiter's lease")
    );
    wait_queue_is(&direct, name, &[holder.key()]).await;

    within("release", WAIT, holder.release())
        .await
        .expect("release");
    let outcome = within("the waiter's lock future", Duration::from_secs(3), waiter)
        .await
        .expect("the waiter task panicked");
    match outcome {
        Ok(g) => panic!("a waiter whose key was gone got the lock: {g:?}"),
        Err(e) => assert!(e.is_lost(), "expected LockLost or LeaseExpired, got {e:?}"),
    }
    assert_free(&direct, name).await;
}

// ---------------------------------------------------------------------------
// try_lock
// ---------------------------------------------------------------------------

/// `try_lock` on a free lock takes it; the fencing token is the key's create
/// revision in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_takes_a_free_lock_with_the_key_create_revision_as_token() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "try/free";
    let guard = match within("try_lock", WAIT, client.try_lock(name).value("me"))
        .await
        .expect("try_lock")
    {
        TryLock::Acquired(g) => g,
        TryLock::Held(h) => panic!("a free lock was reported held by {h:?}"),
    };
    let kv = within("get", WAIT, client.get(guard.key()))
        .await
        .expect("get")
        .expect("the lock key exists");
    assert_eq!(kv.create_revision, guard.fencing_token());
    assert_eq!(kv.value, b"me");
    assert_eq!(kv.lease, Some(guard.lease()));
    assert_eq!(guard.key(), format!("{name}/{}", guard.lease()));
    within("release", WAIT, guard.release())
        .await
        .expect("release");
    assert!(queue(&client, name).await.is_empty());
}

/// `try_lock` on a held lock reports the holder (value, key, lease, token)
/// and leaves nothing of its own queued, with a lease of its own or on a
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_on_a_held_lock_reports_the_holder_and_leaves_nothing_queued() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let name = "try/held";
    let guard = within("lock", WAIT, client.lock(name).value("the-holder"))
        .await
        .expect("lock a free lock");

    let session = within("session", WAIT, other.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let attempts = [
        other.try_lock(name).value("try-er"),
        session.try_lock(name).value("try-er"),
        // Twice on the session: the failed try released its claim on the name.
        session.try_lock(name).value("try-er"),
    ];
    for attempt in attempts {
        match within("try_lock", WAIT, attempt).await.expect("try_lock") {
            TryLock::Acquired(g) => panic!("a held lock was acquired: {g:?}"),
            TryLock::Held(h) => {
                assert_eq!(h.name, name);
                assert_eq!(h.value, b"the-holder");
                assert_eq!(h.key, guard.key());
                assert_eq!(h.lease, guard.lease());
                assert_eq!(h.fencing_token, guard.fencing_token());
            }
        }
        assert_eq!(queue_keys(&client, name).await, [guard.key()]);
    }
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

/// Taking and releasing a free lock on a session costs one `KV/Txn` each,
/// and no lease call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_locks_cost_one_txn_each() {
    let etcd = start_etcd().await;
    let recorder = Recorder::default();
    let client = connect_recorded(etcd.endpoints(), &recorder).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let grants = recorder.calls(paths::LEASE_GRANT);
    assert_eq!(grants, 1);

    let before = recorder.calls(paths::TXN);
    let a = within("lock a", WAIT, session.lock("session-cost/a"))
        .await
        .expect("lock a");
    assert_eq!(recorder.calls(paths::TXN) - before, 1, "lock a: one Txn");
    let b = within("lock b", WAIT, session.lock("session-cost/b"))
        .await
        .expect("lock b");
    assert_eq!(recorder.calls(paths::TXN) - before, 2, "lock b: one Txn");
    within("release a", WAIT, a.release())
        .await
        .expect("release a");
    within("release b", WAIT, b.release())
        .await
        .expect("release b");
    assert_eq!(
        recorder.calls(paths::TXN) - before,
        4,
        "one Txn per release"
    );
    assert_eq!(recorder.calls(paths::LEASE_GRANT), grants, "no new lease");
    assert_eq!(recorder.calls(paths::LEASE_REVOKE), 0, "no revoke");
    within("close", WAIT, session.close()).await.expect("close");
}

/// Releasing one of two locks on a session deletes only that lock's key:
/// the lease lives on and the other lock is still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_a_session_lock_deletes_only_its_own_key() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let (na, nb) = ("session-release/a", "session-release/b");
    let a = within("lock a", WAIT, session.lock(na))
        .await
        .expect("lock a");
    let b = within("lock b", WAIT, session.lock(nb))
        .await
        .expect("lock b");
    assert_eq!(a.lease(), b.lease());

    within("release a", WAIT, a.release())
        .await
        .expect("release a");
    assert!(queue(&client, na).await.is_empty());
    assert_eq!(queue_keys(&client, nb).await, [b.key()]);
    let ttl = within("ttl", WAIT, client.lease_time_to_live(session.lease()))
        .await
        .expect("lease time to live");
    assert!(ttl.is_some(), "the session's lease is still alive");
    assert_eq!(session.lost_reason(), None);
    assert!(!b.is_lost());
    within("fenced put", WAIT, b.put("session-release/data", "x"))
        .await
        .expect("b still holds its lock");
    let h = within("holder", WAIT, client.holder(nb))
        .await
        .expect("holder")
        .expect("b is held");
    assert_eq!(h.key, b.key());
}

/// A session holds or waits for a name at most once: a second lock (or
/// try-lock) of the same name fails at once with `AlreadyLocked`, touching
/// nothing of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_refuses_to_lock_the_same_name_twice() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let name = "session-twice/held";
    let g = within("lock", WAIT, session.lock(name))
        .await
        .expect("lock");
    let quick = Duration::from_secs(2);
    match within("second lock", quick, session.lock(name)).await {
        Err(Error::AlreadyLocked { name: n, revision }) => {
            assert_eq!(n, name);
            assert_eq!(revision, g.fencing_token());
        }
        other => panic!("expected AlreadyLocked, got {other:?}"),
    }
    match within("try_lock", quick, session.try_lock(name)).await {
        Err(Error::AlreadyLocked { .. }) => {}
        other => panic!("expected AlreadyLocked, got {other:?}"),
    }
    assert_eq!(queue_keys(&client, name).await, [g.key()]);
    assert!(!g.is_lost());

    // Also while the first request still waits.
    let waiting_name = "session-twice/waiting";
    let holder = within("lock", WAIT, client.lock(waiting_name))
        .await
        .expect("lock");
    let first = tokio::spawn(session.lock(waiting_name).into_future());
    wait_queued(&client, waiting_name, 2).await;
    match within(
        "second lock while waiting",
        quick,
        session.lock(waiting_name),
    )
    .await
    {
        Err(Error::AlreadyLocked { .. }) => {}
        other => panic!("expected AlreadyLocked, got {other:?}"),
    }
    within("release", WAIT, holder.release())
        .await
        .expect("release");
    let first = within("the first request", WAIT, first)
        .await
        .expect("task")
        .expect("the first request gets the lock");
    assert_eq!(first.lease(), session.lease());

    // Once released, the name can be locked again on the session.
    within("release", WAIT, g.release()).await.expect("release");
    let again = within("lock again", WAIT, session.lock(name))
        .await
        .expect("lock again after release");
    within("release", WAIT, again.release())
        .await
        .expect("release");
    within("release", WAIT, first.release())
        .await
        .expect("release");
}

/// Closing a session revokes its lease: every key on it is gone at once,
/// and its guards' `lost()` resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_session_revokes_its_lease_and_signals_its_guards() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let lease = session.lease();
    let (na, nb) = ("session-close/a", "session-close/b");
    let a = within("lock a", WAIT, session.lock(na))
        .await
        .expect("lock a");
    let b = within("lock b", WAIT, session.lock(nb))
        .await
        .expect("lock b");

    within("close", WAIT, session.close()).await.expect("close");
    assert!(queue(&client, na).await.is_empty());
    assert!(queue(&client, nb).await.is_empty());
    let ttl = within("ttl", WAIT, client.lease_time_to_live(lease))
        .await
        .expect("lease time to live");
    assert_eq!(ttl, None, "the lease is revoked");
    assert_eq!(within("a.lost()", WAIT, a.lost()).await, LostReason::Closed);
    assert_eq!(within("b.lost()", WAIT, b.lost()).await, LostReason::Closed);
    assert!(a.is_lost() && b.is_lost());
    // A guard of a closed session writes nothing and cannot be released as
    // if it had held the lock to the end.
    let err = within("a.put", WAIT, a.put("session-close/data", "x"))
        .await
        .expect_err("a write under a closed session");
    assert!(matches!(err, Error::SessionClosed), "{err:?}");
    assert!(
        within("get", WAIT, client.get("session-close/data"))
            .await
            .expect("get")
            .is_none()
    );
    let err = within("b.release", WAIT, b.release())
        .await
        .expect_err("release");
    assert!(matches!(err, Error::SessionClosed), "{err:?}");
    a.release().await.expect_err("release");
}

/// With the only endpoint down when a lock is asked for, the request fails
/// with a connectivity error, and nothing of it is left once etcd is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_asked_for_while_etcd_is_down_fails_and_leaves_nothing() {
    let mut etcd = start_etcd().await;
    let client = within(
        "connect",
        WAIT,
        Client::builder()
            .endpoints(etcd.endpoints())
            .request_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_millis(500))
            .connect(),
    )
    .await
    .expect("connect");
    let name = "down/at-acquire";
    etcd.kill(0);
    let err = within("lock", WAIT, client.lock(name))
        .await
        .expect_err("no etcd, no lock");
    assert!(err.is_connectivity(), "{err:?}");
    let err = within("try_lock", WAIT, client.try_lock(name))
        .await
        .expect_err("no etcd, no lock");
    assert!(err.is_connectivity(), "{err:?}");
    within("restart", WAIT, etcd.restart(0))
        .await
        .expect("restart");
    let direct = connect(etcd.endpoints()).await;
    assert!(queue(&direct, name).await.is_empty());
    let g = within("lock after restart", WAIT, client.lock(name))
        .await
        .expect("the client works again");
    g.release().await.expect("release");
}

/// Locking a name again on a session right after dropping its guard (its
/// background release still in flight) gives a fresh key with a greater
/// fencing token, and that lock stays held: the dropped guard's background
/// delete must not take it away and let someone else in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relocking_on_a_session_right_after_dropping_its_guard_stays_exclusive() {
    let etcd = start_etcd().await;
    let recorder = Recorder::default();
    let client = connect_recorded(etcd.endpoints(), &recorder).await;
    let other = connect(etcd.endpoints()).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let name = "session-relock/dropped";
    let mut guard = within("lock", WAIT, session.lock(name))
        .await
        .expect("lock");
    for round in 0..20 {
        let txns = recorder.calls(paths::TXN);
        let old_token = guard.fencing_token();
        drop(guard);
        guard = within("lock again", WAIT, session.lock(name))
            .await
            .expect("lock again");
        // Let the dropped guard's background delete land: one Txn for it,
        // one for the new lock.
        wait_until("the background delete ran", WAIT, || async {
            recorder.calls(paths::TXN) >= txns + 2
        })
        .await;
        match within("try_lock", WAIT, other.try_lock(name))
            .await
            .expect("try_lock")
        {
            TryLock::Held(h) => assert_eq!(h.key, guard.key(), "round {round}"),
            TryLock::Acquired(intruder) => panic!(
                "round {round}: another client took the lock while {guard:?} believes it \
                 holds it (is_lost: {}); the intruder got {intruder:?}; the dropped guard's \
                 token was {old_token}",
                guard.is_lost()
            ),
        }
        assert!(
            guard.fencing_token() > old_token,
            "round {round}: the fencing token did not grow: {old_token} then {}",
            guard.fencing_token()
        );
    }
}

/// Locking a name again on a session right after cancelling a pending lock
/// of it (its background cleanup still in flight) queues a key that stays
/// queued, and gets the lock when the holder leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relocking_on_a_session_right_after_cancelling_a_pending_lock_stays_queued() {
    let etcd = start_etcd().await;
    let recorder = Recorder::default();
    let client = connect_recorded(etcd.endpoints(), &recorder).await;
    let other = connect(etcd.endpoints()).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let name = "session-relock/cancelled";
    let holder = within("lock", WAIT, other.lock(name)).await.expect("lock");
    let mut pending = tokio::spawn(session.lock(name).into_future());
    wait_queued(&other, name, 2).await;
    for round in 0..10 {
        let reads = recorder.calls(paths::RANGE);
        let txns = recorder.calls(paths::TXN);
        pending.abort();
        let joined = within("the aborted task", WAIT, pending).await;
        assert!(joined.is_err_and(|e| e.is_cancelled()));
        pending = tokio::spawn(session.lock(name).into_future());
        // Wait for the cancelled request's cleanup (a read of its key, then
        // a delete guarded by the key's create revision) and the new
        // request's queue transaction.
        wait_until("the cleanup and the new request ran", WAIT, || async {
            recorder.calls(paths::RANGE) > reads && recorder.calls(paths::TXN) >= txns + 2
        })
        .await;
        let queued = queue_keys(&other, name).await;
        assert_eq!(
            queued.len(),
            2,
            "round {round}: the new request's key must stay queued behind the holder {}: {queued:?}",
            holder.key()
        );
    }
    within("release", WAIT, holder.release())
        .await
        .expect("release");
    let guard = within("the last request", WAIT, pending)
        .await
        .expect("task")
        .expect("the last request gets the lock");
    assert_eq!(guard.lease(), session.lease());
}

// ---------------------------------------------------------------------------
// Guard
// ---------------------------------------------------------------------------

/// `guard.put` writes while the lock is held, and reports `LockLost` (and
/// writes nothing) once the lock key was deleted behind the guard's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_put_writes_while_held_and_fails_with_lock_lost_once_the_key_is_gone() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "guard/put";
    let data = "guard/put-data";
    let g = within("lock", WAIT, client.lock(name)).await.expect("lock");
    let rev = within("put", WAIT, g.put(data, "1"))
        .await
        .expect("a fenced put while held");
    let kv = within("get", WAIT, client.get(data))
        .await
        .expect("get")
        .expect("written");
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"1"[..], rev));

    assert_eq!(
        within("delete", WAIT, client.delete(g.key()))
            .await
            .expect("delete the lock key"),
        1
    );
    match within("put", WAIT, g.put(data, "2")).await {
        Err(Error::LockLost { key }) => assert_eq!(key, g.key()),
        other => panic!("expected LockLost, got {other:?}"),
    }
    let kv = within("get", WAIT, client.get(data))
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(kv.value, b"1", "the fenced put wrote nothing");
}

/// `is_owner()` is a compare that holds in a raw `Txn` exactly while the
/// guard is the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_owner_makes_a_raw_txn_conditional_on_holding_the_lock() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let name = "guard/is-owner";
    let data = "guard/is-owner-data";
    let fenced_put = |g: &LockGuard, value: &str| pb::TxnRequest {
        compare: vec![g.is_owner()],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: data.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };

    let first = within("lock", WAIT, client.lock(name)).await.expect("lock");
    let resp = within("txn", WAIT, client.txn_raw(fenced_put(&first, "first")))
        .await
        .expect("txn");
    assert!(resp.succeeded, "the holder's compare holds");

    let waiter = tokio::spawn(async move { other.lock(name).await });
    wait_queued(&client, name, 2).await;
    let stale = fenced_put(&first, "stale");
    within("release", WAIT, first.release())
        .await
        .expect("release");
    let second = within("the next holder", WAIT, waiter)
        .await
        .expect("task")
        .expect("the waiter gets the lock");

    let resp = within("txn", WAIT, client.txn_raw(stale))
        .await
        .expect("txn");
    assert!(!resp.succeeded, "a former holder's compare fails");
    let resp = within("txn", WAIT, client.txn_raw(fenced_put(&second, "second")))
        .await
        .expect("txn");
    assert!(resp.succeeded, "the new holder's compare holds");
    let kv = within("get", WAIT, client.get(data))
        .await
        .expect("get")
        .expect("written");
    assert_eq!(kv.value, b"second");
}

// ---------------------------------------------------------------------------
// Lost signal
// ---------------------------------------------------------------------------

/// Cut off from etcd, a guard's `lost()` fires before etcd expires its key
/// (so before anyone else could get the lock); once the network is back,
/// `release()` reports the loss instead of success. TTL 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_before_the_key_expires_and_release_then_reports_the_loss() {
    lost_before_expiry("lost/signal-2s", 2).await;
}

/// The same with a 5 s TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_before_the_key_expires_with_a_5s_ttl() {
    lost_before_expiry("lost/signal-5s", 5).await;
}

async fn lost_before_expiry(name: &str, ttl: u64) {
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let cut_off = connect_through(&proxy).await;
    let guard = within(
        "lock",
        WAIT,
        cut_off.lock(name).ttl(Duration::from_secs(ttl)),
    )
    .await
    .expect("lock");
    assert_eq!(guard.ttl(), Duration::from_secs(ttl));
    let key = guard.key().to_owned();
    // Cut only once a keepalive was answered, so the lost deadline comes
    // from the keepalive round trip rather than from the grant.
    let granted_deadline = guard.deadline().expect("alive");
    wait_until("a keepalive moved the deadline", WAIT, || async {
        guard.deadline().is_some_and(|d| d > granted_deadline)
    })
    .await;

    proxy.set_mode(ProxyMode::Blackhole);
    let blackholed = Instant::now();
    // Poll etcd directly every ~20 ms while waiting for the lost signal.
    let mut lost_at: Option<(Instant, LostReason)> = None;
    let mut seen_after_lost = false;
    let mut polls = 0u32;
    let gone_at = loop {
        assert!(
            blackholed.elapsed() < WAIT,
            "the key did not expire within {WAIT:?}"
        );
        let pause = if polls == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        };
        let poll = async {
            tokio::time::sleep(pause).await;
            let at = Instant::now();
            let present = direct.get(&key).await.expect("get").is_some();
            (at, present)
        };
        tokio::select! {
            biased;
            reason = guard.lost(), if lost_at.is_none() => {
                lost_at = Some((Instant::now(), reason));
            }
            (at, present) = poll => {
                polls += 1;
                if !present {
                    assert!(
                        guard.is_lost(),
                        "etcd dropped the key while the guard still believed it held the lock"
                    );
                    break Instant::now();
                }
                if lost_at.is_some_and(|(l, _)| l <= at) {
                    seen_after_lost = true;
                }
            }
        }
    };
    let (lost_at, reason) = lost_at.expect("lost() fired");
    assert_eq!(reason, LostReason::Unreachable);
    assert!(
        lost_at < gone_at,
        "lost() must fire before the key disappears from etcd"
    );
    eprintln!(
        "TTL {ttl} s: lost {:?} after the cut, the key gone {:?} later (still seen after lost: {seen_after_lost})",
        lost_at - blackholed,
        gone_at - lost_at
    );

    proxy.set_mode(ProxyMode::Pass);
    match within("release", WAIT, guard.release()).await {
        Err(e) if e.is_lost() => {}
        other => panic!("release after a loss must report it, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Acquire timeout and cancellation
// ---------------------------------------------------------------------------

/// A lock that is not acquired within its timeout fails with
/// `AcquireTimeout`, and nothing of the waiter is queued when the error
/// returns (own lease and session alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_timeout_fails_and_leaves_nothing_queued() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let name = "timeout/held";
    let holder = within("lock", WAIT, client.lock(name)).await.expect("lock");
    let session = within("session", WAIT, other.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let limit = Duration::from_millis(500);

    let requests = [
        ("own lease", other.lock(name).timeout(limit)),
        ("session", session.lock(name).timeout(limit)),
        // The session's claim on the name was given back: a second timeout,
        // not AlreadyLocked.
        ("session again", session.lock(name).timeout(limit)),
    ];
    for (kind, request) in requests {
        let started = Instant::now();
        match within(kind, WAIT, request).await {
            Err(Error::AcquireTimeout { name: n, after }) => {
                assert_eq!((n.as_str(), after), (name, limit), "{kind}");
            }
            other => panic!("{kind}: expected AcquireTimeout, got {other:?}"),
        }
        assert!(started.elapsed() >= limit, "{kind}: gave up early");
        assert_eq!(
            queue_keys(&client, name).await,
            [holder.key()],
            "{kind}: the waiter's key is gone when the error returns"
        );
    }
}

/// Dropping a pending `lock()` future leaves nothing queued: its key goes
/// (own lease and session alike) and the holder is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pending_lock_leaves_nothing_queued() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let name = "cancel/pending";
    let holder = within("lock", WAIT, client.lock(name)).await.expect("lock");
    let session = within("session", WAIT, other.session(Duration::from_secs(10)))
        .await
        .expect("session");

    let requests = [
        ("own lease", other.lock(name)),
        ("session", session.lock(name)),
    ];
    for (kind, request) in requests {
        let pending = tokio::spawn(request.into_future());
        wait_queued(&client, name, 2).await;
        pending.abort();
        let joined = within("the aborted task", WAIT, pending).await;
        assert!(joined.is_err_and(|e| e.is_cancelled()), "{kind}");
        wait_queue_is(&client, name, &[holder.key()]).await;
    }
    // The session may queue for the name again: nothing of it is left.
    match within("try_lock", WAIT, session.try_lock(name))
        .await
        .expect("try_lock")
    {
        TryLock::Held(h) => assert_eq!(h.key, holder.key()),
        TryLock::Acquired(g) => panic!("a held lock was acquired: {g:?}"),
    }
    // Once the holder leaves, nobody (no forgotten waiter) holds the lock.
    within("release", WAIT, holder.release())
        .await
        .expect("release");
    assert_free(&client, name).await;
}

// ---------------------------------------------------------------------------
// Dropping a held guard
// ---------------------------------------------------------------------------

/// Dropping a held guard without `release` frees the lock for the next
/// waiter within about a second, not after the 30 s TTL; for a lock with its
/// own lease and for a lock on a session alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_held_guard_frees_the_lock_promptly() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(30)))
        .await
        .expect("session");
    let ttl = Duration::from_secs(30);

    for kind in ["own lease", "session"] {
        let name = format!("drop/{}", kind.replace(' ', "-"));
        let guard = match kind {
            "own lease" => within("lock", WAIT, client.lock(&name).ttl(ttl)).await,
            _ => within("lock", WAIT, session.lock(&name)).await,
        }
        .expect("lock");
        let waiter = tokio::spawn(other.lock(&name).into_future());
        wait_queued(&client, &name, 2).await;

        let dropped = Instant::now();
        drop(guard);
        let next = within(
            &format!("{kind}: the waiter getting a dropped lock"),
            FREED_WITHIN,
            waiter,
        )
        .await
        .expect("task")
        .expect("the waiter gets the lock");
        eprintln!(
            "{kind}: the waiter got the lock {:?} after the drop",
            dropped.elapsed()
        );
        within("release", WAIT, next.release())
            .await
            .expect("release");
    }
    // The session itself is still alive: only the guard's key went.
    assert_eq!(session.lost_reason(), None);
}

// ---------------------------------------------------------------------------
// Holder
// ---------------------------------------------------------------------------

/// `holder()` is `None` for a free lock; for a held one it reports the
/// holder's key, value, lease, fencing token and the time left on its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_reports_none_when_free_and_the_holder_when_held() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "holder/inspect";
    assert_free(&client, name).await;
    let ttl = Duration::from_secs(10);
    let g = within("lock", WAIT, client.lock(name).ttl(ttl).value("me:42"))
        .await
        .expect("lock");
    let h = within("holder", WAIT, client.holder(name))
        .await
        .expect("holder")
        .expect("held");
    assert_eq!(h.name, name);
    assert_eq!(h.key, g.key());
    assert_eq!(h.value_str(), "me:42");
    assert_eq!(h.lease, g.lease());
    assert_eq!(h.fencing_token, g.fencing_token());
    let left = h.ttl_left.expect("the time left is known");
    assert!(
        left > Duration::ZERO && left <= ttl,
        "ttl_left {left:?} within (0, {ttl:?}]"
    );
    within("release", WAIT, g.release()).await.expect("release");
    assert_free(&client, name).await;
}

// ---------------------------------------------------------------------------
// watch_lock
// ---------------------------------------------------------------------------

/// `watch_lock` starts with a snapshot, then reports every acquire and
/// release once, in order, with growing revisions; a hand-over from holder
/// to waiter is a release and an acquire at the same revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_lock_reports_each_acquire_and_release_once_in_order() {
    let etcd = start_etcd().await;
    let a = connect(etcd.endpoints()).await;
    let b = connect(etcd.endpoints()).await;
    let name = "watch/sequence";
    let mut watch = within("watch_lock", WAIT, a.watch_lock(name))
        .await
        .expect("watch_lock");
    assert_eq!(snapshot(&mut watch).await, None, "the lock starts free");

    let mut expected = Vec::new();
    for i in 0..4 {
        let holder = if i % 2 == 0 { &a } else { &b };
        lock_and_release(holder, name, &mut expected).await;
    }
    // Hand-over: a holds, b waits, a releases.
    let ga = within("lock", WAIT, a.lock(name)).await.expect("lock");
    let waiter = tokio::spawn(b.lock(name).into_future());
    wait_queued(&a, name, 2).await;
    expected.push(acquired(&ga));
    expected.push(released(&ga));
    within("release", WAIT, ga.release())
        .await
        .expect("release");
    let gb = within("the waiter", WAIT, waiter)
        .await
        .expect("task")
        .expect("the waiter gets the lock");
    expected.push(acquired(&gb));
    expected.push(released(&gb));
    within("release", WAIT, gb.release())
        .await
        .expect("release");
    // A last acquire marks the end: anything repeated would come before it.
    let marker = within("lock", WAIT, a.lock(name)).await.expect("lock");
    expected.push(acquired(&marker));

    let mut seen = Vec::new();
    for _ in 0..expected.len() {
        seen.push(next_change(&mut watch).await);
    }
    let kinds: Vec<Seen> = seen.iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(kinds, expected);
    for (i, pair) in seen.windows(2).enumerate() {
        let ((first, r1), (second, r2)) = (&pair[0], &pair[1]);
        match (first, second) {
            // The hand-over: one revision for both.
            (Seen::Released(..), Seen::Acquired(..)) if i == 9 => assert_eq!(r1, r2),
            _ => assert!(r1 < r2, "revisions must grow: {seen:?}"),
        }
    }
    // Acquired at its fencing token when the lock was free.
    match &seen[0] {
        (Seen::Acquired(_, token), rev) => assert_eq!(token, rev),
        other => panic!("{other:?}"),
    }
}

/// `watch_lock` through a connection that is cut twice while the lock
/// changes hands keeps reporting every transition exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_lock_resumes_after_a_broken_connection_without_gaps_or_repeats() {
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let watcher = connect_through(&proxy).await;
    let name = "watch/resume";
    let mut watch = within("watch_lock", WAIT, watcher.watch_lock(name))
        .await
        .expect("watch_lock");
    assert_eq!(snapshot(&mut watch).await, None);

    let mut expected = Vec::new();
    for _ in 0..3 {
        lock_and_release(&direct, name, &mut expected).await;
    }
    let mut seen = Vec::new();
    for _ in 0..expected.len() {
        seen.push(next_change(&mut watch).await.0);
    }
    assert_eq!(seen, expected, "before the cut");

    // Cut while nothing is read, change hands, cut again mid-way.
    proxy.cut();
    for i in 0..6 {
        if i == 3 {
            proxy.cut();
        }
        lock_and_release(&direct, name, &mut expected).await;
    }
    let marker = within("lock", WAIT, direct.lock(name)).await.expect("lock");
    expected.push(acquired(&marker));
    for _ in seen.len()..expected.len() {
        seen.push(next_change(&mut watch).await.0);
    }
    assert_eq!(seen, expected, "every transition exactly once");
    assert!(proxy.connections() >= 2, "the watch reconnected");
    let tokens: Vec<Revision> = expected
        .iter()
        .filter_map(|s| match s {
            Seen::Acquired(_, t) => Some(*t),
            Seen::Released(..) => None,
        })
        .collect();
    assert!(tokens.windows(2).all(|p| p[0] < p[1]));
}

/// A watch that resumes after its revision was compacted away is cancelled
/// by etcd; `watch_lock` then reads a fresh snapshot and reports the
/// difference (here: the new holder), with no error and no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_lock_resyncs_when_its_resume_revision_was_compacted() {
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let watcher = connect_through(&proxy).await;
    let name = "watch/compacted";
    let mut watch = within("watch_lock", WAIT, watcher.watch_lock(name))
        .await
        .expect("watch_lock");
    assert_eq!(snapshot(&mut watch).await, None);

    // Keep the watch away while the lock changes hands, then compact.
    proxy.set_mode(ProxyMode::Refuse);
    let mut missed = Vec::new();
    for _ in 0..3 {
        lock_and_release(&direct, name, &mut missed).await;
    }
    let marker = within("lock", WAIT, direct.lock(name)).await.expect("lock");
    let rev = within("status", WAIT, direct.status())
        .await
        .expect("status")
        .revision;
    let out = etcdctl(&etcd)
        .args(["compact", &rev.0.to_string()])
        .output()
        .await
        .expect("etcdctl compact");
    assert!(out.status.success(), "etcdctl compact: {out:?}");
    proxy.set_mode(ProxyMode::Pass);

    // The transitions in the compacted history are gone; the new holder is
    // reported once, and the stream goes on.
    assert_eq!(next_change(&mut watch).await.0, acquired(&marker));
    let mut after = Vec::new();
    within("release", WAIT, marker.release())
        .await
        .expect("release");
    lock_and_release(&direct, name, &mut after).await;
    let mut seen = Vec::new();
    for _ in 0..=after.len() {
        seen.push(next_change(&mut watch).await.0);
    }
    assert!(matches!(seen[0], Seen::Released(..)), "{seen:?}");
    assert_eq!(seen[1..], after[..], "every later transition exactly once");
}

/// The lost signal is judged by the clock, not only by the keepalive task:
/// after the whole runtime stalled past the deadline (a frozen process, a
/// starved task), the guard reports the loss at once and writes nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_stalled_runtime_sees_its_lock_lost_at_once() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let g = within(
        "lock",
        WAIT,
        client.lock("stall/x").ttl(Duration::from_secs(2)),
    )
    .await
    .expect("lock");
    assert!(!g.is_lost());
    // The fault: block the only runtime thread past the deadline, so the
    // keepalive task cannot run.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(g.is_lost(), "the deadline passed while the runtime stalled");
    assert_eq!(g.deadline(), None);
    let lost = within("lost()", Duration::from_millis(100), g.lost()).await;
    assert_eq!(lost, LostReason::Unreachable);
    let err = within("put", WAIT, g.put("stall/data", "x"))
        .await
        .expect_err("a write after the deadline");
    assert!(err.is_lost(), "{err:?}");
}

/// One silent endpoint among healthy ones does not cost the lock: the
/// keepalive moves to another endpoint before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keepalive_moves_off_a_silent_endpoint_in_time() {
    let etcd = start_etcd().await;
    let p1 = Proxy::start(etcd.client_addr(0)).await.expect("proxy 1");
    let p2 = Proxy::start(etcd.client_addr(0)).await.expect("proxy 2");
    let client = within(
        "connect",
        WAIT,
        Client::builder()
            .endpoints([p1.url(), p2.url()])
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1))
            .connect(),
    )
    .await
    .expect("connect");
    let ttl = Duration::from_secs(3);
    let g = within("lock", WAIT, client.lock("silent/x").ttl(ttl))
        .await
        .expect("lock");
    let granted = g.deadline().expect("alive");
    wait_until("a keepalive was answered", WAIT, || async {
        g.deadline().is_some_and(|d| d > granted)
    })
    .await;
    p1.set_mode(ProxyMode::Blackhole);
    let cut = std::time::Instant::now();
    // Alive past the point where the old deadline would have run out: a
    // keepalive sent after the cut was answered through the other proxy.
    wait_until("a keepalive answered after the cut", WAIT, || async {
        g.deadline().is_some_and(|d| d > cut + ttl)
    })
    .await;
    assert!(!g.is_lost());
    within("release", WAIT, g.release()).await.expect("release");
}

/// A session lock request that times out while etcd is unreachable, and is
/// then dropped while it cleans up, leaves the name usable: the next lock
/// of it on the session first removes what is left, then queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lock_cancelled_during_its_cleanup_leaves_the_name_usable() {
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let client = connect_through(&proxy).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let name = "cancel-cleanup/x";
    let holder = within("lock", WAIT, direct.lock(name)).await.expect("lock");
    let attempt = session.lock(name).timeout(Duration::from_millis(800));
    let outcome = tokio::time::timeout(Duration::from_millis(1500), async {
        let queued = async {
            wait_queued(&direct, name, 2).await;
            proxy.set_mode(ProxyMode::Blackhole);
            std::future::pending::<()>().await;
        };
        tokio::select! {
            r = attempt => r.map(|_| ()),
            _ = queued => unreachable!(),
        }
    })
    .await;
    // Either the outer timeout dropped the request while it was cleaning
    // up, or its cleanup failed: both must leave the name usable.
    assert!(outcome.is_err() || outcome.is_ok_and(|r| r.is_err()));
    proxy.set_mode(ProxyMode::Pass);
    let next = tokio::spawn({
        let lock = session.lock(name);
        async move { lock.await }
    });
    within("release", WAIT, holder.release())
        .await
        .expect("release");
    let g = within("the next request", WAIT, next)
        .await
        .expect("task")
        .expect("the name is usable again");
    assert_eq!(
        queue(&direct, name).await.len(),
        1,
        "one key, the new holder's"
    );
    g.release().await.expect("release");
}

// ---------------------------------------------------------------------------
// Interoperability with etcd's own tools
// ---------------------------------------------------------------------------

/// While `etcdctl lock NAME` holds the lock, locker's `try_lock` sees it
/// held, by a key under `NAME/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_sees_a_lock_held_by_etcdctl() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "interop/etcdctl-holds";
    let mut child = etcdctl(&etcd)
        .args(["lock", name])
        .spawn()
        .expect("run etcdctl");
    let stdout = child.stdout.take().expect("stdout");
    let line = within(
        "etcdctl printing its lock key",
        WAIT,
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("read etcdctl's output")
    .expect("etcdctl printed its key");
    let etcdctl_key = line.trim().to_owned();
    assert!(
        etcdctl_key.starts_with(&format!("{name}/")),
        "{etcdctl_key:?}"
    );

    match within("try_lock", WAIT, client.try_lock(name))
        .await
        .expect("try_lock")
    {
        TryLock::Held(h) => {
            assert_eq!(h.key, etcdctl_key);
            assert!(h.key.starts_with(&format!("{name}/")));
            assert_eq!(h.key, format!("{name}/{}", h.lease));
        }
        TryLock::Acquired(g) => panic!("locker took a lock etcdctl holds: {g:?}"),
    }
    assert_eq!(queue_keys(&client, name).await, [etcdctl_key]);
    child.start_kill().expect("stop etcdctl");
    let _ = within("etcdctl exiting", WAIT, child.wait()).await;
}

/// While locker holds the lock, `etcdctl lock NAME echo got` waits, and
/// runs its command only after locker releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_waits_while_locker_holds() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "interop/locker-holds";
    let guard = within("lock", WAIT, client.lock(name)).await.expect("lock");
    let mut child = etcdctl(&etcd)
        .args(["lock", name, "echo", "got"])
        .spawn()
        .expect("run etcdctl");
    // etcdctl queues behind locker's key...
    wait_queued(&client, name, 2).await;
    let queued = queue_keys(&client, name).await;
    assert_eq!(queued[0], guard.key());
    // ...and has not run its command.
    assert!(
        child.try_wait().expect("etcdctl status").is_none(),
        "etcdctl finished while locker held the lock"
    );

    within("release", WAIT, guard.release())
        .await
        .expect("release");
    let out = within("etcdctl finishing", WAIT, child.wait_with_output())
        .await
        .expect("etcdctl output");
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "got");
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

/// Bad names, values and TTLs are refused with `InvalidArgument` before
/// anything goes on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_refused_before_anything_is_sent() {
    let etcd = start_etcd().await;
    let recorder = Recorder::default();
    let client = connect_recorded(etcd.endpoints(), &recorder).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    // Keepalives may come and go; count everything else.
    let sent = || recorder.count(|r| r.path != paths::LEASE_KEEPALIVE);
    let before = sent();

    let long_name = "n".repeat(locker::MAX_NAME_LEN + 1);
    let big_value = vec![b'v'; locker::MAX_VALUE_LEN + 1];
    let quick = Duration::from_secs(2);
    let outcomes: Vec<(&str, locker::Result<()>)> = vec![
        (
            "lock empty name",
            within("", quick, client.lock("")).await.map(drop),
        ),
        (
            "try_lock empty name",
            within("", quick, client.try_lock("")).await.map(drop),
        ),
        (
            "session lock empty name",
            within("", quick, session.lock("")).await.map(drop),
        ),
        (
            "session try_lock empty name",
            within("", quick, session.try_lock("")).await.map(drop),
        ),
        (
            "holder empty name",
            within("", quick, client.holder("")).await.map(drop),
        ),
        (
            "watch empty name",
            within("", quick, client.watch_lock("")).await.map(drop),
        ),
        (
            "control character",
            within("", quick, client.lock("a\nb")).await.map(drop),
        ),
        (
            "name too long",
            within("", quick, client.lock(long_name.as_str()))
                .await
                .map(drop),
        ),
        (
            "value too large",
            within("", quick, client.lock("ok").value(big_value))
                .await
                .map(drop),
        ),
        (
            "lock zero ttl",
            within("", quick, client.lock("ok").ttl(Duration::ZERO))
                .await
                .map(drop),
        ),
        (
            "try_lock zero ttl",
            within("", quick, client.try_lock("ok").ttl(Duration::ZERO))
                .await
                .map(drop),
        ),
        (
            "session zero ttl",
            within("", quick, client.session(Duration::ZERO))
                .await
                .map(drop),
        ),
        (
            "lease_grant zero ttl",
            within("", quick, client.lease_grant(Duration::ZERO))
                .await
                .map(drop),
        ),
    ];
    for (what, outcome) in outcomes {
        assert!(
            matches!(outcome, Err(Error::InvalidArgument { .. })),
            "{what}: expected InvalidArgument, got {outcome:?}"
        );
    }
    assert_eq!(sent(), before, "nothing was sent for bad input");
}

/// Endpoint lists that cannot work are refused when the client is built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_endpoints_are_refused() {
    let empty = Client::builder().endpoints(Vec::<String>::new()).build();
    assert!(
        matches!(empty, Err(Error::InvalidArgument { .. })),
        "empty list: {empty:?}"
    );
    let quick = Duration::from_secs(2);
    let empty = within(
        "",
        quick,
        Client::builder().endpoints(Vec::<String>::new()).connect(),
    )
    .await;
    assert!(
        matches!(empty, Err(Error::InvalidArgument { .. })),
        "{empty:?}"
    );
    for bad in [
        "",
        "   ",
        "localhost",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "127.0.0.1:port",
        "ftp://127.0.0.1:2379",
        "http://127.0.0.1:2379/v3/kv",
        "http://:2379",
    ] {
        let outcome = within(bad, quick, Client::builder().endpoints([bad]).connect()).await;
        assert!(
            matches!(outcome, Err(Error::InvalidEndpoint { ref endpoint, .. }) if endpoint == bad),
            "{bad:?}: expected InvalidEndpoint, got {outcome:?}"
        );
        // One bad endpoint spoils a list.
        let mixed = Client::builder().endpoints(["127.0.0.1:2379", bad]).build();
        assert!(
            matches!(mixed, Err(Error::InvalidEndpoint { .. })),
            "{bad:?}"
        );
    }
    let zero = Client::builder()
        .endpoints(["127.0.0.1:2379"])
        .request_timeout(Duration::ZERO)
        .build();
    assert!(
        matches!(zero, Err(Error::InvalidArgument { .. })),
        "{zero:?}"
    );
}

/// A port nobody listens on is reported `Unreachable` within two connect
/// timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_unreachable_quickly() {
    let addr = closed_port();
    let connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let outcome = within(
        "connect to a closed port",
        WAIT,
        Client::builder()
            .endpoints([addr.to_string()])
            .connect_timeout(connect_timeout)
            .request_timeout(connect_timeout)
            .connect(),
    )
    .await;
    let took = started.elapsed();
    match outcome {
        Err(Error::Unreachable { attempts }) => {
            assert!(!attempts.is_empty());
            assert!(
                attempts
                    .iter()
                    .all(|(ep, _)| ep.contains(&addr.port().to_string()))
            );
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        took < 2 * connect_timeout,
        "took {took:?}, more than two connect timeouts"
    );
}

// ---------------------------------------------------------------------------
// Nothing leaks
// ---------------------------------------------------------------------------

/// Once a client, its session, its guards and its watch are dropped, the
/// background work ends: the leases are revoked, then no task is left and
/// no wire traffic (no keepalive) follows for two keepalive periods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_keeps_running_after_everything_is_dropped() {
    let etcd = start_etcd().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let recorder = Recorder::default();
    let ttl = Duration::from_secs(3);
    {
        let client = connect_recorded(etcd.endpoints(), &recorder).await;
        let guard = within("lock", WAIT, client.lock("leak/own").ttl(ttl))
            .await
            .expect("lock");
        let session = within("session", WAIT, client.session(ttl))
            .await
            .expect("session");
        let on_session = within("lock", WAIT, session.lock("leak/session"))
            .await
            .expect("lock");
        let mut watch = within("watch", WAIT, client.watch_lock("leak/own"))
            .await
            .expect("watch");
        assert!(snapshot(&mut watch).await.is_some());
        // Both leases are being kept alive.
        wait_until("both leases sent a keepalive", WAIT, || async {
            recorder.count(|r| r.path == paths::LEASE_KEEPALIVE && r.kind == WireKind::StreamRecv)
                >= 2
        })
        .await;
        drop(watch);
        drop(on_session);
        drop(guard);
        drop(session);
        drop(client);
    }
    // Dropped without release: both leases are revoked in the background.
    wait_until("both leases are revoked", WAIT, || async {
        recorder.count(|r| r.path == paths::LEASE_REVOKE && r.status == "OK") == 2
    })
    .await;
    let first_revoke = recorder
        .first(|r| r.path == paths::LEASE_REVOKE)
        .expect("a revoke was recorded");
    let check = Client::builder()
        .endpoints(etcd.endpoints())
        .build()
        .expect("client");
    assert!(queue(&check, "leak/own").await.is_empty());
    assert!(queue(&check, "leak/session").await.is_empty());
    drop(check);

    // Two keepalive periods (TTL/3 each) after the revoke: no keepalive, and
    // nothing but the background release calls themselves.
    tokio::time::sleep_until(first_revoke + 2 * ttl / 3).await;
    let after: Vec<String> = recorder
        .since(first_revoke)
        .iter()
        .filter(|r| {
            !(r.kind == WireKind::Unary && [paths::LEASE_REVOKE, paths::TXN].contains(&r.path))
        })
        .map(ToString::to_string)
        .collect();
    assert!(
        after.is_empty(),
        "wire traffic after everything was dropped and revoked: {after:#?}"
    );
    wait_until("no background task is left", WAIT, || async {
        metrics.num_alive_tasks() <= baseline
    })
    .await;
}

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

/// The public handles can move into spawned tasks and be shared.
#[test]
fn public_types_are_send_sync_and_static() {
    fn assert_send_sync_static<T: Send + Sync + 'static>() {}
    assert_send_sync_static::<Client>();
    assert_send_sync_static::<Session>();
    assert_send_sync_static::<LockGuard>();
    assert_send_sync_static::<LockWatch>();
    assert_send_sync_static::<Error>();
    assert_send_sync_static::<locker::Holder>();
    assert_send_sync_static::<TryLock>();
    fn assert_send_static<T: Send + 'static>() {}
    assert_send_static::<<locker::LockRequest as IntoFuture>::IntoFuture>();
    assert_send_static::<<locker::TryLockRequest as IntoFuture>::IntoFuture>();
}
