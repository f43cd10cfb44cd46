//! The per-name bookkeeping of one session (issue 26), against real etcd:
//! one test per double grant or stuck name an adversarial review found in
//! the earlier slot code, each named after the promise it keeps. The slot
//! machine itself is walked exhaustively by the unit tests of
//! `src/session/names.rs`; these prove the wiring around it.
//!
//! A second review then looked for siblings (the second half of this
//! file). Three were bugs, each failing before its fix: a removal that
//! failed once was never retried (it is now, in the background, while the
//! session lives), a removal whose runtime never ran it held the name for
//! ever (a waiting request now takes it over after a request timeout), and
//! a wait for a name being cleaned ignored the session's close. The others
//! are hypotheses the review disproved.
//!
//! Everything runs on loopback, against etcd processes and proxies the
//! tests start themselves; every wait has a deadline. The sleeps here time
//! a fault (when a request is dropped, when a member freezes); none is
//! waited on in the hope that something has happened.

use std::future::IntoFuture;
use std::time::Duration;

use locker::testing::{
    Etcd, Proxy, ProxyMode, connect_for_faults as connect, put_on_lease, queue_keys, wait_queued,
    wait_until, within,
};
use locker::{Client, Error, LockGuard, Session, TryLock};
use tokio::time::Instant;

/// The bound of one test step.
const STEP: Duration = Duration::from_secs(20);

async fn start_etcd() -> Etcd {
    within("start etcd", Duration::from_secs(30), Etcd::single())
        .await
        .expect("start etcd")
}

async fn exists(client: &Client, key: &str) -> bool {
    within("read a key", STEP, client.get(key))
        .await
        .expect("read a key")
        .is_some()
}

/// Checks that `guard` is the only holder of its name: its key is there
/// with its token, another client's try is refused with its key, and its
/// session refuses a second request for the name.
async fn assert_sole_holder(guard: &LockGuard, session: &Session, other: &Client) {
    let kv = within("read the key", STEP, other.get(guard.key()))
        .await
        .expect("read the key")
        .unwrap_or_else(|| panic!("the holder's key {} is gone", guard.key()));
    assert_eq!(
        kv.create_revision,
        guard.fencing_token(),
        "the holder's key was re-created"
    );
    match within(
        "try from another client",
        STEP,
        other.try_lock(guard.name()).into_future(),
    )
    .await
    .expect("try")
    {
        TryLock::Held(h) => assert_eq!(h.key, guard.key(), "another key holds"),
        TryLock::Acquired(g) => panic!("granted twice: {} and {}", guard.key(), g.key()),
    }
    match within(
        "a second request on the session",
        STEP,
        session.try_lock(guard.name()).into_future(),
    )
    .await
    {
        Err(Error::AlreadyLocked { revision, .. }) => assert_eq!(revision, guard.fencing_token()),
        other => panic!("the session's second request for a held name: {other:?}"),
    }
    assert!(!guard.is_lost());
}

/// Scenario 1: request A times out and is dropped while its leave is in
/// flight (each way delayed 400 ms); B, the session's next request for the
/// name, must not lose the name to A's cleanup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_while_it_leaves_never_frees_the_name_under_the_next_request() {
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let direct = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let slow = connect(vec![proxy.url()], Duration::from_secs(5)).await;
    let session = within("session", STEP, slow.session(Duration::from_secs(20)))
        .await
        .expect("session");
    let name = "slots/leaving";
    let holder = within("hold", STEP, direct.lock(name).into_future())
        .await
        .expect("hold");
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(400)));
    let start = Instant::now();
    let a = tokio::spawn(
        session
            .lock(name)
            .timeout(Duration::from_secs(1))
            .into_future(),
    );
    // A times out at 1 s, then leaves through the slow proxy. B asks for
    // the name while A leaves, and A is dropped half-way through its leave.
    tokio::time::sleep_until(start + Duration::from_millis(1200)).await;
    let b = tokio::spawn(session.lock(name).into_future());
    tokio::time::sleep_until(start + Duration::from_millis(1500)).await;
    a.abort();
    within("release the holder", STEP, holder.release())
        .await
        .expect("release");
    let b = within("B's lock", STEP, b)
        .await
        .expect("B's task")
        .expect("B holds");
    proxy.set_mode(ProxyMode::Pass);
    assert_sole_holder(&b, &session, &direct).await;
    within("release B", STEP, b.release())
        .await
        .expect("B's release finds its own key");
}

/// Scenario 2: A's leave reads its key through a blackholed endpoint, and
/// the read is resent through the other endpoint, late. B, the session's
/// next request for the name, must not have its key deleted by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_requests_late_read_never_deletes_the_next_requests_key() {
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let direct = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let two = connect(vec![proxy.url(), etcd.endpoint(0)], Duration::from_secs(1)).await;
    let session = within("session", STEP, two.session(Duration::from_secs(20)))
        .await
        .expect("session");
    let name = "slots/late-read";
    let holder = within("hold", STEP, direct.lock(name).into_future())
        .await
        .expect("hold");
    let start = Instant::now();
    let a = tokio::spawn(
        session
            .lock(name)
            .timeout(Duration::from_millis(1500))
            .into_future(),
    );
    wait_queued(&direct, name, 2).await;
    // A's leave (after its timeout, at 1.5 s) reads through the blackholed
    // endpoint, still preferred then; its resend comes 1 s later. A probe
    // sent 0.95 s before that read times out 50 ms after it left, so the
    // blackholed endpoint is marked down and B's calls go straight to etcd.
    proxy.set_mode(ProxyMode::Blackhole);
    tokio::time::sleep_until(start + Duration::from_millis(550)).await;
    let probe = tokio::spawn({
        let two = two.clone();
        async move { two.get("slots/probe").await }
    });
    tokio::time::sleep_until(start + Duration::from_millis(1600)).await;
    let b = tokio::spawn(session.lock(name).into_future());
    within("release the holder", STEP, holder.release())
        .await
        .expect("release");
    let b = within("B's lock", STEP, b)
        .await
        .expect("B's task")
        .expect("B holds");
    match within("A ends", STEP, a).await.expect("A's task") {
        Err(Error::AcquireTimeout { .. }) => {}
        other => panic!("A: expected a timeout, got {other:?}"),
    }
    within("the probe", STEP, probe)
        .await
        .expect("the probe's task")
        .expect("the probe is resent to etcd");
    proxy.set_mode(ProxyMode::Pass);
    assert_sole_holder(&b, &session, &direct).await;
    within("release B", STEP, b.release())
        .await
        .expect("B's release finds its own key");
}

/// Scenario 3: a read lock's key is left behind (its guard dropped outside
/// a runtime); the next request for the name gives up while removing it.
/// The key must stay owed, and the request after that must remove it
/// instead of waiting behind it until the lease ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_key_of_another_shape_is_removed_even_after_a_request_gave_up_on_it() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints(), Duration::from_secs(2)).await;
    let session = within("session", STEP, client.session(Duration::from_secs(30)))
        .await
        .expect("session");
    let name = "slots/stale-shape";
    let reader = within("read lock", STEP, session.read_lock(name).into_future())
        .await
        .expect("read lock");
    let reader_key = reader.key().to_owned();
    // Dropped where no runtime is: only a note is left.
    std::thread::spawn(move || drop(reader))
        .join()
        .expect("drop outside a runtime");
    assert!(exists(&client, &reader_key).await);
    // The next lock gives up while etcd is frozen; etcd wakes before the
    // calls it left behind time out, so they end well.
    etcd.pause(0);
    let r = session.lock(name).timeout(Duration::from_millis(300)).await;
    assert!(r.is_err(), "a lock on a frozen etcd: {r:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.resume(0);
    let g = within(
        "the next lock (must not wait behind the old read key)",
        STEP,
        session
            .lock(name)
            .timeout(Duration::from_secs(10))
            .into_future(),
    )
    .await
    .expect("the next lock");
    assert!(
        !exists(&client, &reader_key).await,
        "{reader_key} is still there"
    );
    assert_sole_holder(&g, &session, &client).await;
    within("release", STEP, g.release()).await.expect("release");
}

/// Scenario 4: a session resumed with under a third of its TTL left (here
/// under one second) keeps its lease: it sends a keepalive at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumed_near_its_leases_end_keeps_the_lease() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let (lease, ttl) = within("grant", STEP, client.lease_grant(Duration::from_secs(3)))
        .await
        .expect("grant");
    let key = "slots/resumed/held";
    put_on_lease(&client, key, b"v", lease).await;
    // Wait until etcd says under a second is left (it reports 0).
    wait_until("the lease is nearly over", STEP, || async {
        let left = client.lease_time_to_live(lease).await.expect("ttl");
        left.is_some_and(|d| d < Duration::from_secs(1))
    })
    .await;
    let session = within("resume", STEP, client.resume_session(lease))
        .await
        .expect("a live lease is resumed");
    assert_eq!(session.ttl(), ttl);
    // Alive for more than twice the TTL: the keepalives go on.
    let until = Instant::now() + ttl * 2 + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(
            session.lost_reason(),
            None,
            "the resumed session lost its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exists(&client, key).await, "the lease's key expired");
    within("close", STEP, session.close()).await.expect("close");
    assert!(!exists(&client, key).await);
}

/// Scenario 5: two names whose keys would be one on a lease
/// (`read_lock("a")` and `lock("a/read")`; `semaphore("a")` and
/// `lock("a/permit")`) are never both granted: the second name is refused
/// before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_would_share_a_key_with_another_shape_are_refused() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let session = within("session", STEP, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let reader = within("read lock", STEP, session.read_lock("a").into_future())
        .await
        .expect("read lock");
    let permit = within(
        "permit",
        STEP,
        session.semaphore("s", 2).acquire().into_future(),
    )
    .await
    .expect("permit");
    for name in ["a/read", "s/permit"] {
        match session.lock(name).await {
            Err(Error::InvalidArgument { reason }) => {
                assert!(reason.contains(name), "{reason}");
            }
            other => panic!("lock({name:?}): {other:?}"),
        }
        match client.try_lock(name).await {
            Err(Error::InvalidArgument { .. }) => {}
            other => panic!("try_lock({name:?}): {other:?}"),
        }
    }
    assert!(exists(&client, reader.key()).await);
    assert!(exists(&client, permit.key()).await);
    within("release", STEP, reader.release())
        .await
        .expect("release");
    within("release", STEP, permit.release())
        .await
        .expect("release");
}

/// A guard on a session being closed reports the lock lost as soon as the
/// close has started, not only once etcd answered the revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_say_lost_as_soon_as_their_sessions_close_starts() {
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let slow = connect(vec![proxy.url()], Duration::from_secs(5)).await;
    let session = within("session", STEP, slow.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let g = within("lock", STEP, session.lock("slots/closing").into_future())
        .await
        .expect("lock");
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(500)));
    let close = tokio::spawn(session.close());
    wait_until(
        "the guard says lost",
        Duration::from_millis(400),
        || async { g.is_lost() },
    )
    .await;
    assert!(!close.is_finished(), "the revoke was answered already");
    within("close", STEP, close)
        .await
        .expect("close task")
        .expect("close");
}

// ---------------------------------------------------------------------------
// The second review: siblings of the bugs above
// ---------------------------------------------------------------------------

/// A request that gives up (its timeout) while etcd is unreachable for a
/// moment leaves its queued key owed by the name. Once etcd is reachable
/// again, with the session alive, that key must go: "the candidate key is
/// removed before the error is returned". Otherwise it becomes the head of
/// the queue when the holder leaves, and nobody ever releases it while the
/// session lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_gave_up_during_an_outage_leaves_no_key_once_etcd_is_back() {
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let direct = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let slow = connect(vec![proxy.url()], Duration::from_secs(1)).await;
    let session = within("session", STEP, slow.session(Duration::from_secs(30)))
        .await
        .expect("session");
    let name = "slots2/outage";
    let my_key = format!("{name}/{}", session.lease());
    let holder = within("hold", STEP, direct.lock(name).into_future())
        .await
        .expect("hold");
    let a = tokio::spawn(
        session
            .lock(name)
            .timeout(Duration::from_millis(1500))
            .into_future(),
    );
    wait_queued(&direct, name, 2).await;
    // A short outage between the session and etcd: connections refused,
    // nothing applied. The request times out meanwhile.
    proxy.set_mode(ProxyMode::Refuse);
    // It times out, or (when the outage takes its acquire's answer) fails
    // as unreachable: either way it leaves through the same removal.
    match within("A gives up", STEP, a).await.expect("A's task") {
        Err(Error::AcquireTimeout { .. }) => {}
        Err(e) if e.is_connectivity() => {}
        other => panic!("A: expected a timeout or a connectivity error, got {other:?}"),
    }
    proxy.set_mode(ProxyMode::Pass);
    within("release the holder", STEP, holder.release())
        .await
        .expect("release");
    // The session is alive (30 s lease), etcd reachable again.
    let gone = tokio::time::timeout(Duration::from_secs(8), async {
        while exists(&direct, &my_key).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(session.lost_reason(), None, "the session lost its lease");
    if gone.is_err() {
        let blocked = match within(
            "try from another client",
            STEP,
            direct.try_lock(name).into_future(),
        )
        .await
        .expect("try")
        {
            TryLock::Held(h) => format!("another client's try_lock is refused, held by {}", h.key),
            TryLock::Acquired(g) => {
                let _ = g.release().await;
                "(yet the name is free)".to_owned()
            }
        };
        panic!(
            "8 s after etcd came back, the key {my_key} of a request that gave up is still there \
             (queue: {:?}); {blocked}",
            queue_keys(&direct, name).await
        );
    }
    within("close", STEP, session.close()).await.expect("close");
}

/// A runtime shut down while a guard's background removal and a queued
/// request are in flight on it: neither may leave its name stuck (the
/// session's next requests, on another runtime, must not wait forever),
/// and what they owed is removed by the next request for each name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_shut_down_mid_removal_leaves_every_name_usable() {
    let etcd = start_etcd().await;
    let proxy = std::sync::Arc::new(Proxy::start(etcd.client_addr(0)).await.expect("proxy"));
    let direct = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let client = connect(vec![proxy.url()], Duration::from_secs(5)).await;
    let (held, queued) = ("slots2/rt/held", "slots2/rt/queued");
    let holder = within("hold", STEP, direct.lock(queued).into_future())
        .await
        .expect("hold");
    let (p, c, d) = (proxy.clone(), client.clone(), direct.clone());
    let other_rt = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a second runtime");
        let session = rt
            .block_on(c.session(Duration::from_secs(30)))
            .expect("session");
        let g = rt.block_on(session.lock(held).into_future()).expect("lock");
        let old_key = (g.key().to_owned(), g.fencing_token());
        let waiting = rt.spawn(session.lock(queued).into_future());
        rt.block_on(wait_queued(&d, queued, 2));
        p.set_mode(ProxyMode::Delay(Duration::from_millis(1500)));
        rt.block_on(async {
            drop(g);
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        assert!(!waiting.is_finished());
        drop(rt);
        (session, old_key)
    });
    let (session, (old_key, old_rev)) = within("the other runtime", STEP, other_rt)
        .await
        .expect("the other runtime's thread");
    proxy.set_mode(ProxyMode::Pass);
    let g = within(
        "the next lock of the name whose removal was cut short",
        STEP,
        session
            .lock(held)
            .timeout(Duration::from_secs(10))
            .into_future(),
    )
    .await
    .expect("the next lock");
    let kv = direct.get(&old_key).await.expect("read").expect("my key");
    assert_ne!(kv.create_revision, old_rev, "the old key was not removed");
    assert_eq!(kv.create_revision, g.fencing_token());
    within("release the holder", STEP, holder.release())
        .await
        .expect("release");
    let q = within(
        "the next lock of the name whose request was dropped",
        STEP,
        session
            .lock(queued)
            .timeout(Duration::from_secs(10))
            .into_future(),
    )
    .await
    .expect("the next lock");
    assert_eq!(queue_keys(&direct, queued).await, vec![q.key().to_owned()]);
    within("release", STEP, g.release()).await.expect("release");
    within("release", STEP, q.release()).await.expect("release");
    within("close", STEP, session.close()).await.expect("close");
}

/// A resumed session's first request for a name, dropped while it deletes
/// the earlier run's key of another shape: no key of the earlier run may
/// be forgotten (the removal the drop starts deletes them all, the old key
/// of the request's own shape too, since the request did not go on), and
/// the next request queues with a key of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_sessions_first_request_dropped_while_paying_forgets_no_key() {
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let direct = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let slow = connect(vec![proxy.url()], Duration::from_secs(5)).await;
    let (lease, _) = within("grant", STEP, direct.lease_grant(Duration::from_secs(30)))
        .await
        .expect("grant");
    let name = "slots2/resumed";
    let (reader_key, own_key) = (format!("{name}/read/{lease}"), format!("{name}/{lease}"));
    for key in [&reader_key, &own_key] {
        put_on_lease(&direct, key, b"v", lease).await;
    }
    let old_rev = direct
        .get(&own_key)
        .await
        .expect("read")
        .expect("key")
        .create_revision;
    let session = within("resume", STEP, slow.resume_session(lease))
        .await
        .expect("resume");
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(300)));
    let start = Instant::now();
    let a = tokio::spawn(session.lock(name).into_future());
    // The first read of the other shapes is on its way (each way 300 ms).
    tokio::time::sleep_until(start + Duration::from_millis(200)).await;
    a.abort();
    proxy.set_mode(ProxyMode::Pass);
    wait_until(
        "the earlier run's keys are gone",
        Duration::from_secs(10),
        || async { !exists(&direct, &reader_key).await && !exists(&direct, &own_key).await },
    )
    .await;
    let g = within(
        "the next lock",
        STEP,
        session
            .lock(name)
            .timeout(Duration::from_secs(10))
            .into_future(),
    )
    .await
    .expect("the next lock");
    assert!(g.fencing_token() > old_rev, "the old key kept its place");
    assert_eq!(queue_keys(&direct, name).await, vec![own_key.clone()]);
    within("release", STEP, g.release()).await.expect("release");
    within("close", STEP, session.close()).await.expect("close");
}

/// A request that waits for a name whose keys are being removed, while its
/// session is closed: it ends (with the session's close), and puts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_name_being_cleaned_ends_when_its_session_closes() {
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let direct = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let slow = connect(vec![proxy.url()], Duration::from_secs(5)).await;
    let session = within("session", STEP, slow.session(Duration::from_secs(30)))
        .await
        .expect("session");
    let name = "slots2/closing";
    let g = within("lock", STEP, session.lock(name).into_future())
        .await
        .expect("lock");
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(500)));
    drop(g);
    let w = tokio::spawn(session.try_lock(name).into_future());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!w.is_finished(), "the try did not wait for the removal");
    let close = tokio::spawn(session.close());
    let r = within("the waiting request ends", STEP, w)
        .await
        .expect("the request's task");
    assert!(
        matches!(r, Err(Error::SessionClosed | Error::LeaseExpired { .. })),
        "a request on a closed session: {r:?}"
    );
    within("close", STEP, close)
        .await
        .expect("close task")
        .expect("close");
    proxy.set_mode(ProxyMode::Pass);
    assert_eq!(queue_keys(&direct, name).await, Vec::<String>::new());
}

/// The same wait, judged by its answer: a request on a session that was
/// closed while it waited for the name says `SessionClosed` ("it cannot
/// take new locks"), as one that starts after the close does, rather than
/// sending its acquire on the revoked lease and reporting the lease
/// expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waited_for_a_name_on_a_closed_session_says_session_closed() {
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let slow = connect(vec![proxy.url()], Duration::from_secs(5)).await;
    let session = within("session", STEP, slow.session(Duration::from_secs(30)))
        .await
        .expect("session");
    let name = "slots2/closed-answer";
    let g = within("lock", STEP, session.lock(name).into_future())
        .await
        .expect("lock");
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(500)));
    drop(g);
    let w = tokio::spawn(session.try_lock(name).into_future());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let close = tokio::spawn(session.close());
    let r = within("the waiting request ends", STEP, w)
        .await
        .expect("the request's task");
    assert!(
        matches!(r, Err(Error::SessionClosed)),
        "a request on a closed session: {r:?}"
    );
    within("close", STEP, close)
        .await
        .expect("close task")
        .expect("close");
}

/// A session guard dropped inside a current-thread runtime that is then no
/// longer driven (a sync wrapper's `block_on`), while the session lives on
/// another runtime: its removal cannot run there. The name must not stay
/// "being cleaned" for ever: the session's next request for it (here a
/// try, which has no timeout) must end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_dropped_on_an_idle_runtime_does_not_block_its_name_for_ever() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints(), Duration::from_secs(2)).await;
    let session = within("session", STEP, client.session(Duration::from_secs(30)))
        .await
        .expect("session");
    let name = "slots2/idle-runtime";
    let g = within("lock", STEP, session.lock(name).into_future())
        .await
        .expect("lock");
    let (keep_tx, keep_rx) = std::sync::mpsc::channel::<()>();
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
    // A thread with its own current-thread runtime, kept alive (idle) until
    // the end of the test.
    let idle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        rt.block_on(async { drop(g) });
        let _ = dropped_tx.send(());
        let _ = keep_rx.recv_timeout(Duration::from_secs(30));
        drop(rt);
    });
    within("the drop", STEP, dropped_rx).await.expect("dropped");
    let r =
        tokio::time::timeout(Duration::from_secs(8), session.try_lock(name).into_future()).await;
    let _ = keep_tx.send(());
    idle.join().expect("the idle runtime's thread");
    match r {
        Ok(Ok(locker::TryLock::Acquired(g))) => {
            within("release", STEP, g.release()).await.expect("release");
        }
        Ok(other) => panic!("the next try: {other:?}"),
        Err(_) => panic!("the session's next try for {name} did not end within 8 s"),
    }
    within("close", STEP, session.close()).await.expect("close");
}
