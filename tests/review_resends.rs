//! An adversarial review of resent and late acquires, written against the
//! shapes tried in issue 16. The first (b14d487) put my key with `prev_kv`
//! whenever the lock was busy, so that a late copy of a resent acquire
//! rewrote the key (and undid a later proclamation: the test below). The
//! acquire kept puts my key only if it is absent, and otherwise only reads:
//! every late or resent copy of a queued or held key here must write
//! nothing and wake nobody.
//!
//! These are regression tests (`cargo test --all-features --test
//! review_resends`). Everything runs against etcd processes and proxies
//! the tests start themselves; every wait has a deadline.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use locker::testing::{
    Etcd, Proxy, ProxyMode, connect_for_faults as connect, queue, wait_queued, wait_until, within,
};
use locker::{Client, KeyValue, Revision};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The bound of one test step.
const STEP: Duration = Duration::from_secs(15);

async fn start_etcd() -> Etcd {
    within("start etcd", Duration::from_secs(30), Etcd::single())
        .await
        .expect("start etcd")
}

/// The raft proposals etcd has committed so far: every acquire `Txn` is
/// one (it holds a put), also when its compare sends it to the reads.
async fn committed(etcd: &Etcd) -> f64 {
    etcd.metric(0, "etcd_server_proposals_committed_total")
        .await
        .expect("etcd's commit count")
}

/// One etcd, a proxy in front of it, and a client that sends to the proxy
/// first and resends directly to etcd when an answer is late.
async fn etcd_behind_a_proxy() -> (Etcd, Proxy, Client) {
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let client = connect(vec![proxy.url(), etcd.endpoint(0)], Duration::from_secs(1)).await;
    (etcd, proxy, client)
}

/// Queues `waiter` (whose key is `w_key`, behind `ahead` keys) through
/// `proxy` held up, so that its acquire is resent directly and its first
/// copy reaches etcd late, then queues `last` behind it. Returns once the
/// late copy has reached etcd and is seen to have written nothing (its key
/// is still at version 1), with the proxy passing again: both tasks, and
/// the waiter's key's create revision.
async fn queue_with_a_late_copy<T: Send + 'static>(
    (etcd, proxy, reader): (&Etcd, &Proxy, &Client),
    (name, w_key, ahead): (&str, &str, usize),
    waiter: impl Future<Output = T> + Send + 'static,
    last: impl Future<Output = T> + Send + 'static,
) -> (JoinHandle<T>, Revision, JoinHandle<T>) {
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(2500)));
    let before = committed(etcd).await;
    let w = tokio::spawn(waiter);
    wait_queued(reader, name, ahead + 1).await;
    let w_rev = get(reader, w_key)
        .await
        .expect("the waiter's key")
        .create_revision;
    let x = tokio::spawn(last);
    wait_queued(reader, name, ahead + 2).await;
    // Three acquires reach etcd: the waiter's resent copy, the last
    // waiter's, and the waiter's late first copy. Nothing else writes.
    wait_until("the late copy reached etcd", STEP, || async {
        committed(etcd).await - before >= 3.0
    })
    .await;
    let kv = get(reader, w_key).await.expect("the waiter's key");
    assert_eq!(kv.version, 1, "the late copy wrote the key: {kv:?}");
    proxy.set_mode(ProxyMode::Pass);
    (w, w_rev, x)
}

async fn get(client: &Client, key: &str) -> Option<KeyValue> {
    within("read a key", STEP, client.get(key))
        .await
        .expect("read a key")
}

/// A reader's acquire whose answer is lost (the proxy drops it) is resent
/// through the other endpoint. The name is free, so both copies take the
/// "no blocker" branch (a reader's own key is not a blocker): the guard
/// must still carry its key's create revision as its token, write while it
/// holds, and its release must remove the key (or writers wait forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_read_lock_on_a_free_name_keeps_its_keys_token() {
    const NAME: &str = "rw-resent";
    let etcd = start_etcd().await;
    let dropping = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let passing = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let client = connect(
        vec![dropping.url(), passing.url()],
        Duration::from_millis(500),
    )
    .await;
    let observer = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let writer_client = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let session = within("session", STEP, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let key = format!("{NAME}/read/{}", session.lease());
    let before = committed(&etcd).await;
    dropping.set_mode(ProxyMode::DropResponses);
    let guard = within("read_lock", STEP, session.read_lock(NAME).timeout(STEP))
        .await
        .expect("read_lock while answers are dropped");
    dropping.set_mode(ProxyMode::Pass);
    assert!(
        committed(&etcd).await - before >= 2.0,
        "the acquire was not resent"
    );
    // Both copies found no writer: the second put the key again (a
    // reader's own key is no blocker), same lease, same value.
    let kv = get(&observer, &key).await.expect("the reader's key");
    assert_eq!(kv.version, 2, "{kv:?}");
    assert_eq!(
        guard.fencing_token(),
        kv.create_revision,
        "the guard's token is not its key's create revision: {kv:?}"
    );
    within("guarded put", STEP, guard.put("rw-data", "reader"))
        .await
        .expect("a guarded write while holding the read lock");
    within("release", STEP, guard.release())
        .await
        .expect("release");
    assert!(get(&observer, &key).await.is_none(), "the key stayed");
    let w = within(
        "a writer after the reader left",
        STEP,
        writer_client.lock(NAME).timeout(Duration::from_secs(5)),
    )
    .await
    .expect("the writer");
    within("writer release", STEP, w.release())
        .await
        .expect("writer release");
    within("close", STEP, session.close()).await.expect("close");
}

/// A process restarted on its old lease (`resume_session`) takes the read
/// lock it held before: it keeps its old key, so its token is that key's
/// create revision, for `read_lock` and for `try_read_lock` alike, and its
/// release removes the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_lock_on_a_resumed_session_keeps_its_old_keys_token() {
    let etcd = start_etcd().await;
    let before = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let after = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let old = within("session", STEP, before.session(Duration::from_secs(10)))
        .await
        .expect("session");
    // The old process's readers stay alive (dropping them would release).
    let mut old_guards = Vec::new();
    for name in ["rw-resumed", "rw-resumed-try"] {
        let g = within("old read_lock", STEP, old.read_lock(name))
            .await
            .expect("old read_lock");
        old_guards.push(g);
    }
    let resumed = within("resume", STEP, after.resume_session(old.lease()))
        .await
        .expect("resume");
    let waiting = within("resumed read_lock", STEP, resumed.read_lock("rw-resumed"))
        .await
        .expect("resumed read_lock");
    let tried = match within(
        "resumed try_read_lock",
        STEP,
        resumed.try_read_lock("rw-resumed-try"),
    )
    .await
    .expect("resumed try_read_lock")
    {
        locker::TryLock::Acquired(g) => g,
        locker::TryLock::Held(h) => panic!("a free name was held by {h:?}"),
    };
    for (guard, old_guard) in [waiting, tried].into_iter().zip(&old_guards) {
        let kv = get(&after, guard.key()).await.expect("the reader's key");
        assert_eq!(kv.create_revision, old_guard.fencing_token());
        assert_eq!(
            guard.fencing_token(),
            kv.create_revision,
            "{}: the resumed guard's token is not its key's create revision",
            guard.key()
        );
        within("guarded put", STEP, guard.put("rw-data", "resumed"))
            .await
            .expect("a guarded write while holding the read lock");
        let key = guard.key().to_owned();
        within("release", STEP, guard.release())
            .await
            .expect("release");
        assert!(get(&after, &key).await.is_none(), "{key} stayed");
    }
    drop(old_guards);
    within("close", STEP, resumed.close()).await.expect("close");
    drop(old);
}

/// A campaign's acquire is resent when its answer is late: the copy sent
/// directly elects the candidate, which then proclaims a new value. The
/// first copy, held up by the network, reaches etcd only after that. The
/// leader must keep the value it proclaimed, in etcd and for observers: a
/// copy that finds the key only reads it. (b14d487's acquire put the key
/// again, with the old proposal.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_copy_of_a_resent_campaign_does_not_undo_a_later_proclamation() {
    const NAME: &str = "elect-late";
    let (etcd, proxy, client) = etcd_behind_a_proxy().await;
    let observer = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let session = within("session", STEP, client.session(Duration::from_secs(15)))
        .await
        .expect("session");
    let key = format!("{NAME}/{}", session.lease());
    let mut events = within("observe", STEP, observer.observe(NAME))
        .await
        .expect("observe");
    let (to_server_before, _) = proxy.bytes_forwarded();
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(2500)));
    let mut leader = within("campaign", STEP, session.campaign(NAME, "first"))
        .await
        .expect("campaign");
    within("proclaim", STEP, leader.proclaim("second"))
        .await
        .expect("proclaim");
    assert_eq!(leader.value(), b"second");
    // The held-up copy reaches etcd; give etcd up to 2 s to apply it.
    wait_until("the delayed copy reached etcd", STEP, || async {
        proxy.bytes_forwarded().0 > to_server_before
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut kv = get(&observer, &key).await.expect("the leader's key");
    while kv.value == b"second" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        kv = get(&observer, &key).await.expect("the leader's key");
    }
    proxy.set_mode(ProxyMode::Pass);
    // What the observer saw last about the leader's value.
    let mut last = None;
    while let Ok(Some(Ok(ev))) =
        tokio::time::timeout(Duration::from_millis(300), events.next()).await
    {
        match ev {
            locker::ElectionEvent::Leader { value, .. }
            | locker::ElectionEvent::Proclaimed { value, .. } => last = Some(value),
            _ => {}
        }
    }
    assert_eq!(
        (kv.value.as_slice(), last.as_deref()),
        (&b"second"[..], Some(&b"second"[..])),
        "the leader proclaimed \"second\" (Leadership::value() = {:?}); etcd holds {:?} \
         (version {}), observers last saw {:?}",
        String::from_utf8_lossy(leader.value()),
        String::from_utf8_lossy(&kv.value),
        kv.version,
        last.as_deref().map(String::from_utf8_lossy),
    );
    within("resign", STEP, leader.resign())
        .await
        .expect("resign");
    within("close", STEP, session.close()).await.expect("close");
}

/// A waiter whose acquire is resent while it waits (the first copy, held
/// up, arrives after the copy that queued it) keeps its place and token;
/// the late copy writes nothing and wakes nobody: the waiter behind it
/// (which watches that key) keeps waiting, and the order stays FIFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_copy_of_a_waiters_acquire_keeps_its_place_and_wakes_nobody() {
    const NAME: &str = "resend-waiting";
    let (etcd, proxy, w_client) = etcd_behind_a_proxy().await;
    let h_client = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let x_client = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let holder = within("holder", STEP, h_client.lock(NAME))
        .await
        .expect("holder");
    let w_session = within("session", STEP, w_client.session(Duration::from_secs(15)))
        .await
        .expect("session");
    let w_key = format!("{NAME}/{}", w_session.lease());
    let (w, w_rev, x) = queue_with_a_late_copy(
        (&etcd, &proxy, &h_client),
        (NAME, &w_key, 1),
        w_session.lock(NAME).timeout(STEP).into_future(),
        x_client.lock(NAME).timeout(STEP).into_future(),
    )
    .await;
    within("holder's guarded put", STEP, holder.put("data", "holder"))
        .await
        .expect("the holder still holds");
    assert!(!w.is_finished(), "the waiter got a lock that is held");
    assert!(!x.is_finished(), "the last waiter got a lock that is held");
    let order: Vec<_> = queue(&h_client, NAME).await;
    assert_eq!(order[1].key_str(), w_key);
    assert_eq!(order[1].create_revision, w_rev, "the waiter lost its place");
    within("holder release", STEP, holder.release())
        .await
        .expect("holder release");
    let w = within("the waiter", STEP, w)
        .await
        .expect("task")
        .expect("the waiter's lock");
    assert_eq!(w.fencing_token(), w_rev);
    within("waiter's guarded put", STEP, w.put("data", "waiter"))
        .await
        .expect("the waiter holds");
    assert!(!x.is_finished(), "the last waiter got in beside the waiter");
    within("waiter release", STEP, w.release())
        .await
        .expect("waiter release");
    let x = within("the last waiter", STEP, x)
        .await
        .expect("task")
        .expect("the last waiter's lock");
    assert!(x.fencing_token() > w_rev);
    within("last release", STEP, x.release())
        .await
        .expect("last release");
    assert!(queue(&h_client, NAME).await.is_empty());
    within("close", STEP, w_session.close())
        .await
        .expect("close");
}

/// A process restarted on its old lease asks for the write lock of a name
/// whose read lock its previous run held (or for the plain lock of a name
/// whose permit it held): a key of another shape, on its own lease. The
/// request must not wait behind its own old key forever (the resumed
/// session keeps that key alive, and nothing else removes it): the first
/// request for the name on the resumed session deletes it, and holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_on_a_resumed_session_does_not_wait_behind_its_own_old_key_of_another_shape() {
    let etcd = start_etcd().await;
    let before = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let after = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let old = within("session", STEP, before.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let reader = within("old read_lock", STEP, old.read_lock("shape-rw"))
        .await
        .expect("old read_lock");
    let permit = within("old permit", STEP, old.semaphore("shape-sem", 2).acquire())
        .await
        .expect("old permit");
    let resumed = within("resume", STEP, after.resume_session(old.lease()))
        .await
        .expect("resume");
    for name in ["shape-rw", "shape-sem"] {
        let outcome = within(
            "resumed lock",
            STEP,
            resumed.lock(name).timeout(Duration::from_secs(3)),
        )
        .await;
        let keys: Vec<_> = queue(&after, name)
            .await
            .iter()
            .map(KeyValue::key_str)
            .collect();
        match outcome {
            Err(locker::Error::AcquireTimeout { .. }) => {
                panic!("{name}: the resumed session's lock waited behind its own old key: {keys:?}")
            }
            Ok(g) => {
                assert_eq!(keys, [g.key()], "{name}: the earlier run's key stayed");
                within("release", STEP, g.release()).await.expect("release");
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    drop((reader, permit));
    within("close", STEP, resumed.close()).await.expect("close");
    drop(old);
}

/// As above, when the first request for the name on the resumed session
/// gives up (its timeout) while it is still removing the earlier run's
/// key: the name is not yet clean, so the next request removes the key
/// and holds, instead of waiting behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_sessions_cleanup_cut_short_by_a_timeout_is_done_by_the_next_request() {
    const NAME: &str = "shape-cut";
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let before = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    // Only the proxy, and a request timeout longer than the lock's: the
    // held-up read is neither resent elsewhere nor failed, only given up.
    let after = connect(vec![proxy.url()], Duration::from_secs(10)).await;
    let old = within("session", STEP, before.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let reader = within("old read_lock", STEP, old.read_lock(NAME))
        .await
        .expect("old read_lock");
    let resumed = within("resume", STEP, after.resume_session(old.lease()))
        .await
        .expect("resume");
    proxy.set_mode(ProxyMode::Blackhole);
    let cut = within(
        "the cut-short lock",
        STEP,
        resumed.lock(NAME).timeout(Duration::from_millis(500)),
    )
    .await;
    assert!(
        matches!(cut, Err(locker::Error::AcquireTimeout { .. })),
        "{cut:?}"
    );
    proxy.set_mode(ProxyMode::Pass);
    let outcome = within(
        "the next lock",
        STEP,
        resumed.lock(NAME).timeout(Duration::from_secs(3)),
    )
    .await;
    let keys: Vec<_> = queue(&before, NAME)
        .await
        .iter()
        .map(KeyValue::key_str)
        .collect();
    match outcome {
        Err(locker::Error::AcquireTimeout { .. }) => {
            panic!("the next lock waited behind the earlier run's key: {keys:?}")
        }
        Ok(g) => {
            assert_eq!(keys, [g.key()], "the earlier run's key stayed");
            within("release", STEP, g.release()).await.expect("release");
        }
        Err(e) => panic!("{e}"),
    }
    drop(reader);
    within("close", STEP, resumed.close()).await.expect("close");
    drop(old);
}

/// The same with a semaphore of 2, whose waiters watch two keys each: a
/// late copy of a waiter's acquire reaches etcd while the waiter behind it
/// watches its key. Nobody is admitted early (never more than 2), the
/// resent waiter keeps its token, and `watch_lock` reports exactly the
/// changes of holders, none for the late copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_copy_of_a_semaphore_waiters_acquire_admits_nobody_early() {
    const NAME: &str = "sem-late";
    let (etcd, proxy, w_client) = etcd_behind_a_proxy().await;
    let direct = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let x_client = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let sem = direct.semaphore(NAME, 2);
    let a = within("a", STEP, sem.acquire()).await.expect("a");
    let b = within("b", STEP, sem.acquire()).await.expect("b");
    let mut events = within("watch_lock", STEP, direct.watch_lock(NAME))
        .await
        .expect("watch_lock");
    let w_session = within("session", STEP, w_client.session(Duration::from_secs(15)))
        .await
        .expect("session");
    let w_key = format!("{NAME}/permit/{}", w_session.lease());
    let (w, w_rev, x) = queue_with_a_late_copy(
        (&etcd, &proxy, &direct),
        (NAME, &w_key, 2),
        w_session
            .semaphore(NAME, 2)
            .acquire()
            .timeout(STEP)
            .into_future(),
        x_client
            .semaphore(NAME, 2)
            .acquire()
            .timeout(STEP)
            .into_future(),
    )
    .await;
    for (g, who) in [(&a, "a"), (&b, "b")] {
        within("guarded put", STEP, g.put("data", who))
            .await
            .expect("a holder still holds");
    }
    assert!(!w.is_finished(), "a third permit was granted");
    assert!(!x.is_finished(), "a third permit was granted");
    let (a_key, b_key) = (a.key().to_owned(), b.key().to_owned());
    within("a release", STEP, a.release())
        .await
        .expect("a release");
    let w = within("the waiter", STEP, w)
        .await
        .expect("task")
        .expect("the waiter's permit");
    assert_eq!(w.fencing_token(), w_rev);
    assert!(!x.is_finished(), "a third permit was granted");
    within("b release", STEP, b.release())
        .await
        .expect("b release");
    let x = within("the last waiter", STEP, x)
        .await
        .expect("task")
        .expect("the last waiter's permit");
    let x_key = x.key().to_owned();
    for g in [w, x] {
        within("release", STEP, g.release()).await.expect("release");
    }
    wait_queued(&direct, NAME, 0).await;
    let mut seen = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        seen.push(match ev.expect("an event") {
            locker::LockEvent::Snapshot { holder, .. } => {
                format!("snapshot {}", holder.map_or(String::new(), |h| h.key))
            }
            locker::LockEvent::Acquired { holder, .. } => format!("acquired {}", holder.key),
            locker::LockEvent::Released { holder, .. } => format!("released {}", holder.key),
            other => format!("{other:?}"),
        });
    }
    let expected = [
        format!("snapshot {a_key}"),
        format!("acquired {b_key}"),
        format!("released {a_key}"),
        format!("acquired {w_key}"),
        format!("released {b_key}"),
        format!("acquired {x_key}"),
        format!("released {w_key}"),
        format!("released {x_key}"),
    ];
    assert_eq!(seen, expected);
    within("close", STEP, w_session.close())
        .await
        .expect("close");
}
