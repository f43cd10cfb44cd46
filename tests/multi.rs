//! Several locks at once (`lock_all`, `try_lock_all`), specified against
//! real etcd processes that each test starts itself.
//!
//! Run with `cargo test --features testing --test multi`.
#![cfg(all(feature = "testing", feature = "cli"))]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locker::testing::{Etcd, connect, queue, queue_keys, wait_queued, within};
use locker::{Client, Error, MAX_SET_NAMES, Revision, TryLockAll, WireKind, WireRecord, paths};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

/// The longest any single wait on etcd may take in these tests.
const WAIT: Duration = Duration::from_secs(10);

async fn start_etcd() -> Etcd {
    Etcd::single().await.expect("start a single-member etcd")
}

/// A client that counts its unary calls per path.
async fn counted(etcd: &Etcd) -> (Client, Arc<Mutex<Vec<WireRecord>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let client = Client::builder()
        .endpoints(etcd.endpoints())
        .audit(move |r: &WireRecord| sink.lock().unwrap().push(r.clone()));
    let client = within("connect", WAIT, client.connect())
        .await
        .expect("connect");
    (client, seen)
}

fn calls(seen: &Mutex<Vec<WireRecord>>, path: &str) -> usize {
    let seen = seen.lock().unwrap();
    seen.iter()
        .filter(|r| r.kind == WireKind::Unary && r.path == path)
        .count()
}

/// Asserts that no name in `names` has any key left.
async fn assert_no_key(client: &Client, names: &[&str]) {
    for name in names {
        let left = queue_keys(client, name).await;
        assert!(left.is_empty(), "keys left on {name}: {left:?}");
    }
}

fn etcdctl(etcd: &Etcd) -> Command {
    let mut cmd = Command::from(etcd.etcdctl(0).expect("etcdctl"));
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

// ---------------------------------------------------------------------------
// One commit, one token
// ---------------------------------------------------------------------------

/// k free names: one `Txn` to take them all (one create revision for every
/// key, the fencing token), one revoke to release them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_names_are_taken_in_one_txn_and_released_in_one_commit() {
    let etcd = start_etcd().await;
    let (client, seen) = counted(&etcd).await;
    let set = within("lock_all", WAIT, client.lock_all(["c", "a", "b", "a"]))
        .await
        .expect("lock_all");
    assert_eq!(set.names(), ["a", "b", "c"]);
    assert_eq!(calls(&seen, paths::TXN), 1, "one acquire Txn");
    assert_eq!(calls(&seen, paths::LEASE_GRANT), 1);
    for (name, key) in set.names().iter().zip(set.keys()) {
        assert_eq!(*key, format!("{name}/{}", set.lease()));
        let q = queue(&client, name).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].create_revision, set.fencing_token());
    }
    let before = calls(&seen, paths::TXN);
    within("release", WAIT, set.release())
        .await
        .expect("release");
    assert_eq!(calls(&seen, paths::LEASE_REVOKE), 1);
    assert_eq!(calls(&seen, paths::TXN), before, "no Txn for an own lease");
    assert_no_key(&client, &["a", "b", "c"]).await;
}

/// On a session: one `Txn` to take, one `Txn` of guarded deletes to release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_on_a_session_is_one_txn_each_way() {
    let etcd = start_etcd().await;
    let (client, seen) = counted(&etcd).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let names: Vec<String> = (0..16).map(|i| format!("s/{i:02}")).collect();
    let t0 = calls(&seen, paths::TXN);
    let set = within("lock_all", WAIT, session.lock_all(names.clone()))
        .await
        .expect("lock_all");
    assert_eq!(calls(&seen, paths::TXN) - t0, 1);
    // A name of the set is the session's: refused, as for a lock.
    let again = within("lock", WAIT, session.lock("s/03")).await;
    assert!(
        matches!(again, Err(Error::AlreadyLocked { .. })),
        "{again:?}"
    );
    let t1 = calls(&seen, paths::TXN);
    within("release", WAIT, set.release())
        .await
        .expect("release");
    assert_eq!(calls(&seen, paths::TXN) - t1, 1);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_no_key(&client, &refs).await;
    // The names are free on the session again.
    let g = within("lock", WAIT, session.lock("s/03"))
        .await
        .expect("relock");
    g.release().await.expect("release");
}

// ---------------------------------------------------------------------------
// FIFO, interop
// ---------------------------------------------------------------------------

/// `lock("A")` holds; a set {A, B} queues on both; a later `lock("B")`
/// queues behind the set on B although B was free when it came: the set
/// holds when A is released, and B's lock only after the set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_locks_and_a_set_are_served_in_arrival_order() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let a = within("lock A", WAIT, client.lock("A")).await.expect("A");
    let order = Arc::new(Mutex::new(Vec::new()));
    let set_task = {
        let (client, order) = (client.clone(), order.clone());
        tokio::spawn(async move {
            let set = client.lock_all(["B", "A"]).await.expect("set");
            order.lock().unwrap().push(("set", set.fencing_token()));
            tokio::time::sleep(Duration::from_millis(200)).await;
            set.release().await.expect("release set");
        })
    };
    wait_queued(&client, "A", 2).await;
    wait_queued(&client, "B", 1).await;
    let b_task = {
        let (client, order) = (client.clone(), order.clone());
        tokio::spawn(async move {
            let b = client.lock("B").await.expect("B");
            order.lock().unwrap().push(("B", b.fencing_token()));
            b.release().await.expect("release B");
        })
    };
    wait_queued(&client, "B", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(order.lock().unwrap().is_empty(), "someone jumped the queue");
    a.release().await.expect("release A");
    within("set", WAIT, set_task).await.expect("set task");
    within("B", WAIT, b_task).await.expect("B task");
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        ["set", "B"]
    );
    assert!(order[0].1 < order[1].1, "tokens grow: {order:?}");
}

/// `etcdctl lock A` waits while a set holds A; the set waits while
/// `etcdctl lock B` holds B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_and_a_set_wait_for_each_other() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let set = within("lock_all", WAIT, client.lock_all(["A", "B"]))
        .await
        .expect("lock_all");
    let waiter = etcdctl(&etcd)
        .args(["lock", "A", "echo", "got"])
        .spawn()
        .expect("etcdctl");
    wait_queued(&client, "A", 2).await;
    set.release().await.expect("release");
    let out = within("etcdctl", WAIT, waiter.wait_with_output())
        .await
        .expect("etcdctl output");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "got");

    // Now etcdctl holds B, and the set waits for it.
    let mut holder = etcdctl(&etcd).args(["lock", "B"]).spawn().expect("etcdctl");
    // Kept open: etcdctl must not meet a closed pipe.
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let line = within("etcdctl's key", WAIT, lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    assert!(line.starts_with("B/"), "{line}");
    match within("try", WAIT, client.try_lock_all(["A", "B"]))
        .await
        .expect("try")
    {
        TryLockAll::Held(h) => assert_eq!((h.name.as_str(), h.key.as_str()), ("B", line.trim())),
        TryLockAll::Acquired(g) => panic!("took B from etcdctl: {g:?}"),
    }
    assert_no_key(&client, &["A"]).await;
    let set = tokio::spawn({
        let client = client.clone();
        async move { client.lock_all(["A", "B"]).await }
    });
    wait_queued(&client, "B", 2).await;
    assert_eq!(
        queue(&client, "A").await.len(),
        1,
        "the set holds its place on A"
    );
    // Interrupted, etcdctl revokes its session's lease: B is free.
    let pid = holder.id().expect("etcdctl's pid") as i32;
    // SAFETY: a signal to a child process of this test.
    unsafe { libc::kill(pid, libc::SIGINT) };
    wait_queued(&client, "B", 1).await;
    let set = within("the set", WAIT, set)
        .await
        .expect("join")
        .expect("set");
    assert_eq!(queue_keys(&client, "B").await, [set.keys()[1].clone()]);
    set.release().await.expect("release");
}

// ---------------------------------------------------------------------------
// Nothing left behind
// ---------------------------------------------------------------------------

/// A set that times out, or whose future is dropped while it waits, leaves
/// no key on any name: on its own lease and on a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_or_a_drop_leaves_no_key_on_any_name() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let blocker = within("lock m", WAIT, client.lock("m")).await.expect("m");
    let names = ["k", "m", "z"];
    let session = client
        .session(Duration::from_secs(10))
        .await
        .expect("session");
    for on_session in [false, true] {
        let req = if on_session {
            session.lock_all(names)
        } else {
            client.lock_all(names)
        };
        let r = within("lock_all", WAIT, req.timeout(Duration::from_millis(300))).await;
        assert!(matches!(r, Err(Error::AcquireTimeout { .. })), "{r:?}");
        assert_no_key(&client, &["k", "z"]).await;
        assert_eq!(queue_keys(&client, "m").await, [blocker.key()]);
        // Dropped while waiting.
        let req = if on_session {
            session.lock_all(names)
        } else {
            client.lock_all(names)
        };
        let waiting = tokio::spawn(req.into_future());
        wait_queued(&client, "m", 2).await;
        waiting.abort();
        let _ = waiting.await;
        locker::testing::wait_until("the dropped set's keys go", WAIT, || async {
            queue(&client, "k").await.is_empty()
                && queue(&client, "z").await.is_empty()
                && queue(&client, "m").await.len() == 1
        })
        .await;
    }
    // The session can take the names again at once.
    blocker.release().await.expect("release m");
    let set = within("lock_all", WAIT, session.lock_all(names))
        .await
        .expect("set");
    set.release().await.expect("release");
}

/// A set whose key on one name is deleted from outside: its guarded write
/// is refused, and its release reports the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_missing_one_key_writes_nothing_and_reports_the_loss() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let session = client
        .session(Duration::from_secs(10))
        .await
        .expect("session");
    let set = within("lock_all", WAIT, session.lock_all(["x", "y"]))
        .await
        .expect("set");
    assert!(set.put("x-data", "1").await.is_ok());
    client.delete(&set.keys()[1]).await.expect("delete y's key");
    let w = set.put("x-data", "2").await;
    assert!(matches!(w, Err(Error::LockLost { .. })), "{w:?}");
    assert_eq!(client.get("x-data").await.unwrap().unwrap().value, b"1");
    let r = set.release().await;
    assert!(matches!(r, Err(Error::LockLost { .. })), "{r:?}");
    assert_no_key(&client, &["x", "y"]).await;
}

/// A set's lost signal follows each of its keys, not only its lease: a key
/// deleted from outside (the last name's here, the lease still alive)
/// fires `lost()` with `KeyDeleted` as its event arrives, well before any
/// keepalive; the guarded write is then refused without a call, and the
/// release reports the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sets_lost_signal_fires_when_any_of_its_keys_is_deleted() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let set = within(
        "lock_all",
        WAIT,
        client
            .lock_all(["k1", "k2", "k3"])
            .ttl(Duration::from_secs(60)),
    )
    .await
    .expect("set");
    assert!(!set.is_lost(), "a fresh set is not lost");
    let signal = tokio::spawn(set.lost_signal());
    // The keys are followed from the set's revision on: a deletion before
    // their watches are created is seen as well.
    set.put("k-data", "1").await.expect("guarded put");
    client
        .delete(&set.keys()[2])
        .await
        .expect("delete k3's key");
    let reason = within("the lost signal", Duration::from_secs(3), set.lost()).await;
    assert_eq!(reason, locker::LostReason::KeyDeleted);
    assert!(set.is_lost());
    let from_task = within("the spawned signal", WAIT, signal)
        .await
        .expect("join");
    assert_eq!(from_task, locker::LostReason::KeyDeleted);
    let w = set.put("k-data", "2").await;
    assert!(matches!(w, Err(Error::LockLost { .. })), "{w:?}");
    assert_eq!(client.get("k-data").await.unwrap().unwrap().value, b"1");
    let r = set.release().await;
    assert!(matches!(r, Err(Error::LockLost { .. })), "{r:?}");
    assert_no_key(&client, &["k1", "k2", "k3"]).await;
}

/// A set waiting behind an older key whose own key on another name is
/// deleted meanwhile does not report holding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_set_whose_key_vanishes_does_not_hold() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let blocker = client.lock("q").await.expect("q");
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.lock_all(["p", "q"]).await }
    });
    wait_queued(&client, "q", 2).await;
    let mine = queue_keys(&client, "q").await[1].clone();
    client
        .delete(&mine)
        .await
        .expect("delete the set's key on q");
    blocker.release().await.expect("release");
    let r = within("the set", WAIT, waiting).await.expect("join");
    assert!(matches!(r, Err(Error::LockLost { .. })), "{r:?}");
    assert_no_key(&client, &["p", "q"]).await;
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

/// Bad sets are typed errors, refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sets_are_refused_before_anything_is_sent() {
    let etcd = start_etcd().await;
    let (client, seen) = counted(&etcd).await;
    let before = seen.lock().unwrap().len();
    let none: [&str; 0] = [];
    let r = client.lock_all(none).await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    let r = client.try_lock_all(["a", "a/b"]).await;
    assert!(
        matches!(r, Err(Error::InvalidArgument { ref reason }) if reason.contains("one set")),
        "{r:?}"
    );
    let many: Vec<String> = (0..=MAX_SET_NAMES).map(|i| format!("n{i}")).collect();
    let r = client.lock_all(many).await;
    assert!(
        matches!(r, Err(Error::TooManyNames { count, limit }) if count == MAX_SET_NAMES + 1 && limit == MAX_SET_NAMES),
        "{r:?}"
    );
    let r = client.lock_all(["ok", "bad\n"]).await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    let r = client
        .lock_all(["a", "b"])
        .value(vec![0u8; 600 * 1024])
        .await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert_eq!(seen.lock().unwrap().len(), before, "something was sent");
    // The largest set etcd takes with its default --max-txn-ops.
    let most: Vec<String> = (0..MAX_SET_NAMES).map(|i| format!("n{i}")).collect();
    let set = within("lock_all", WAIT, client.lock_all(most))
        .await
        .expect("64 names");
    assert_eq!(set.keys().len(), MAX_SET_NAMES);
    set.release().await.expect("release");
}

// ---------------------------------------------------------------------------
// Deadlock
// ---------------------------------------------------------------------------

/// How long one round of the deadlock workload may take, at most.
const ROUND_BOUND: Duration = Duration::from_secs(5);

/// Per name, who is inside (to catch two holders at once).
type Inside = Arc<Mutex<BTreeMap<String, usize>>>;

/// Enters every name of a held set: no one else may be inside any of them.
fn enter(inside: &Inside, names: &[String], me: usize) {
    let mut inside = inside.lock().unwrap();
    for n in names {
        if let Some(other) = inside.insert(n.clone(), me) {
            panic!("{n} held by {other} and {me} at once");
        }
    }
}

fn leave(inside: &Inside, names: &[String]) {
    let mut inside = inside.lock().unwrap();
    for n in names {
        inside.remove(n);
    }
}

/// A small deterministic generator, so that a failure can be replayed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The names of round `round` of worker `w`: {A, B} or {B, A} for the
/// first two workers, a random subset of 5 names for the others, in a
/// random order.
fn round_names(w: usize, seed: &mut u64) -> Vec<String> {
    let mut names: Vec<String> = match w {
        0 => vec!["A".into(), "B".into()],
        1 => vec!["B".into(), "A".into()],
        _ => ["A", "B", "C", "D", "E"]
            .iter()
            .filter(|_| next(seed) % 2 == 0)
            .map(|s| s.to_string())
            .collect(),
    };
    if names.is_empty() {
        names.push("C".into());
    }
    for i in (1..names.len()).rev() {
        names.swap(i, (next(seed) % (i as u64 + 1)) as usize);
    }
    names
}

/// 6 workers (2 on {A, B} / {B, A}, 4 on random subsets of 5 names, each
/// in a random order), 50 rounds each, 300 rounds in all: every round ends
/// within [`ROUND_BOUND`], no name ever has two holders, and every name's
/// fencing tokens grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_in_any_order_never_deadlock() {
    const WORKERS: usize = 6;
    const ROUNDS: usize = 50;
    let etcd = start_etcd().await;
    let inside: Inside = Arc::default();
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let tokens: Arc<Mutex<BTreeMap<String, Revision>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let client = connect(etcd.endpoints()).await;
        let (inside, slowest, tokens) = (inside.clone(), slowest.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1);
            for _ in 0..ROUNDS {
                let names = round_names(w, &mut seed);
                let t = Instant::now();
                let set = tokio::time::timeout(ROUND_BOUND, client.lock_all(names))
                    .await
                    .unwrap_or_else(|_| panic!("worker {w}: a round took over {ROUND_BOUND:?}"))
                    .expect("lock_all");
                enter(&inside, set.names(), w);
                for n in set.names() {
                    let mut tokens = tokens.lock().unwrap();
                    let last = tokens.insert(n.clone(), set.fencing_token());
                    assert!(
                        last.is_none_or(|l| l < set.fencing_token()),
                        "{n}: token went back"
                    );
                }
                tokio::time::sleep(Duration::from_millis(next(&mut seed) % 3)).await;
                leave(&inside, set.names());
                set.release().await.expect("release");
                let took = t.elapsed();
                let mut s = slowest.lock().unwrap();
                *s = (*s).max(took);
            }
        }));
    }
    for t in tasks {
        within("a worker", Duration::from_secs(120), t)
            .await
            .expect("worker");
    }
    let slowest = *slowest.lock().unwrap();
    println!(
        "sets: {} rounds in {:.1?}, slowest round {slowest:.1?} (bound {ROUND_BOUND:?})",
        WORKERS * ROUNDS,
        started.elapsed()
    );
}

/// The same {A, B} / {B, A} workload with locks taken one by one in the
/// caller's order deadlocks: with a 2 s timeout on each lock, rounds time
/// out (each worker holds one name and waits for the other's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_by_one_in_callers_order_deadlocks() {
    const ROUNDS: usize = 30;
    let etcd = start_etcd().await;
    let timeouts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..2 {
        let client = connect(etcd.endpoints()).await;
        let timeouts = timeouts.clone();
        tasks.push(tokio::spawn(async move {
            let order = if w == 0 { ["A", "B"] } else { ["B", "A"] };
            for _ in 0..ROUNDS {
                let first = client.lock(order[0]).await.expect("first");
                // Both workers now hold their first name at about the same time.
                tokio::time::sleep(Duration::from_millis(20)).await;
                match client.lock(order[1]).timeout(Duration::from_secs(2)).await {
                    Ok(second) => second.release().await.expect("release"),
                    Err(Error::AcquireTimeout { .. }) => {
                        timeouts.fetch_add(1, Ordering::SeqCst);
                        first.release().await.expect("release");
                        return;
                    }
                    Err(e) => panic!("{e}"),
                }
                first.release().await.expect("release");
            }
        }));
    }
    for t in tasks {
        within("a worker", Duration::from_secs(120), t)
            .await
            .expect("worker");
    }
    let n = timeouts.load(Ordering::SeqCst);
    println!("one by one: {n} worker(s) timed out in a deadlock");
    assert!(n >= 1, "the one-by-one workload never deadlocked");
}

// ---------------------------------------------------------------------------
// Trying to break it
// ---------------------------------------------------------------------------

/// A guard dropped without release frees every name within a second, on
/// its own lease and on a session (whose names are free again for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_set_frees_every_name_soon() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let session = client
        .session(Duration::from_secs(30))
        .await
        .expect("session");
    for on_session in [false, true] {
        let req = if on_session {
            session.lock_all(["d1", "d2", "d3"])
        } else {
            client
                .lock_all(["d1", "d2", "d3"])
                .ttl(Duration::from_secs(30))
        };
        let set = within("lock_all", WAIT, req).await.expect("set");
        drop(set);
        let t = Instant::now();
        locker::testing::wait_until("the dropped set's keys go", WAIT, || async {
            queue(&client, "d1").await.is_empty()
                && queue(&client, "d2").await.is_empty()
                && queue(&client, "d3").await.is_empty()
        })
        .await;
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    let again = within("lock_all", WAIT, session.lock_all(["d3", "d1"]))
        .await
        .expect("again");
    again.release().await.expect("release");
}

/// A set refused because its session already holds one of its names
/// leaves the names it had reserved free for the session at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_refused_for_one_name_leaves_the_others_free() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let session = client
        .session(Duration::from_secs(10))
        .await
        .expect("session");
    let b = session.lock("b").await.expect("b");
    let r = within("lock_all", WAIT, session.lock_all(["c", "b", "a"])).await;
    assert!(
        matches!(r, Err(Error::AlreadyLocked { ref name, .. }) if name == "b"),
        "{r:?}"
    );
    let a = within("lock a", WAIT, session.lock("a"))
        .await
        .expect("a is free");
    assert_no_key(&client, &["c"]).await;
    // Two sets of one session in opposite orders: one is refused, no wait.
    let other = within("try", WAIT, session.try_lock_all(["x", "a"])).await;
    assert!(
        matches!(other, Err(Error::AlreadyLocked { .. })),
        "{other:?}"
    );
    a.release().await.expect("release a");
    b.release().await.expect("release b");
}

/// Sets cancelled at random moments (before, during and after their
/// acquire, while they wait) never leave a key behind, on their own lease
/// or on a session, and never take a name from its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_cancelled_at_any_moment_leave_no_key() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let session = client
        .session(Duration::from_secs(30))
        .await
        .expect("session");
    let holder = client.lock("c2").await.expect("c2");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..60 {
        let req = if i % 2 == 0 {
            session.lock_all(["c1", "c2", "c3"])
        } else {
            client.lock_all(["c3", "c2", "c1"])
        };
        let task = tokio::spawn(req.into_future());
        tokio::time::sleep(Duration::from_micros(next(&mut seed) % 8000)).await;
        task.abort();
        match task.await {
            Ok(Ok(g)) => panic!("took c2 from its holder: {g:?}"),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {}
        }
    }
    locker::testing::wait_until("every cancelled set's keys go", WAIT, || async {
        queue(&client, "c1").await.is_empty()
            && queue(&client, "c3").await.is_empty()
            && queue_keys(&client, "c2").await == [holder.key()]
    })
    .await;
    holder.release().await.expect("release");
    let set = within("lock_all", WAIT, session.lock_all(["c1", "c2", "c3"]))
        .await
        .expect("set");
    set.release().await.expect("release");
}

/// A set waiting on a session whose lease is revoked from outside ends
/// with the loss and leaves no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_set_whose_lease_is_revoked_ends_with_the_loss() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let holder = client.lock("r2").await.expect("r2");
    let session = client
        .session(Duration::from_secs(10))
        .await
        .expect("session");
    let lease = session.lease();
    let waiting = tokio::spawn(session.lock_all(["r1", "r2"]).into_future());
    wait_queued(&client, "r2", 2).await;
    client.lease_revoke(lease).await.expect("revoke");
    let r = within("the set", WAIT, waiting).await.expect("join");
    assert!(r.as_ref().is_err_and(Error::is_lost), "{r:?}");
    assert_no_key(&client, &["r1"]).await;
    assert_eq!(queue_keys(&client, "r2").await, [holder.key()]);
}
