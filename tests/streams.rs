//! The client's shared streams at scale and under faults: one watch stream
//! for every waiter, waiters that leave nothing on etcd when dropped, a
//! stream cut under hundreds of waiters, and a lost signal that follows the
//! key itself.
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use locker::testing::{Etcd, Proxy, ProxyMode, connect, connect_through, wait_until, within};
use locker::{Error, LostReason};
use tokio::task::JoinSet;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);
/// Long: no keepalive comes due while a test waits for a lost signal, so
/// only the key's own event can fire it.
const LONG_TTL: Duration = Duration::from_secs(60);
/// What "within one event delivery" is allowed, generously (it takes
/// milliseconds; the next keepalive would come after TTL/3 = 20 s).
const ONE_EVENT: Duration = Duration::from_secs(3);

const WATCH_STREAMS: &str = "etcd_debugging_mvcc_watch_stream_total";
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

async fn start_etcd() -> Etcd {
    Etcd::single().await.expect("start etcd")
}

async fn metric(etcd: &Etcd, name: &str) -> f64 {
    etcd.metric(0, name).await.expect("read etcd's metrics")
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The number of live tasks once it is at most `enough`, or after `WAIT`
/// (after 500 ms at least: what a drop hands to the background, a revoke
/// say, must have started).
async fn settled_tasks(enough: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = alive_tasks();
        if n <= enough || Instant::now() > deadline {
            return n;
        }
    }
}

/// The client process's resident memory, in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_when_another_client_deletes_the_held_key() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let g = within("lock", WAIT, client.lock("follow/del").ttl(LONG_TTL))
        .await
        .expect("lock");
    assert!(!g.is_lost(), "lost before anything happened");
    let t0 = Instant::now();
    within("delete", WAIT, other.delete(g.key()))
        .await
        .expect("delete");
    let reason = within("the lost signal", ONE_EVENT, g.lost()).await;
    eprintln!("lost {:?} after the key's deletion", t0.elapsed());
    assert_eq!(reason, LostReason::KeyDeleted);
    assert!(g.is_lost());
    match within("put", WAIT, g.put("follow/data", "x")).await {
        Err(Error::LockLost { .. }) => {}
        r => panic!("a guarded put after the key's deletion: {r:?}"),
    }
    match within("release", WAIT, g.release()).await {
        Err(Error::LockLost { .. }) => {}
        r => panic!("the release of a lock whose key was deleted: {r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_when_an_operator_revokes_the_lease_with_etcdctl() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let g = within("lock", WAIT, client.lock("follow/revoke").ttl(LONG_TTL))
        .await
        .expect("lock");
    // Following starts with the first ask, before the revoke.
    assert!(!g.is_lost());
    let hex = format!("{:x}", g.lease().0);
    let t0 = Instant::now();
    let out = etcd
        .etcdctl(0)
        .expect("etcdctl")
        .args(["lease", "revoke", &hex])
        .output()
        .expect("run etcdctl");
    assert!(out.status.success(), "etcdctl lease revoke: {out:?}");
    let reason = within("the lost signal", ONE_EVENT, g.lost()).await;
    eprintln!("lost {:?} after etcdctl lease revoke", t0.elapsed());
    assert!(
        matches!(reason, LostReason::KeyDeleted | LostReason::Expired),
        "{reason:?}"
    );
    assert!(within("release", WAIT, g.release()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_lost_fires_when_its_key_is_deleted_but_not_when_it_proclaims() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let leader = within(
        "campaign",
        WAIT,
        client.campaign("follow/elect", "a").ttl(LONG_TTL),
    )
    .await
    .expect("campaign");
    let mut leader = leader;
    assert!(!leader.is_lost(), "lost before anything happened");
    // A proclaim rewrites the key (same create revision): not a loss. Its
    // event reaches the follower within milliseconds; give it 300 ms.
    within("proclaim", WAIT, leader.proclaim("b"))
        .await
        .expect("proclaim");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!leader.is_lost(), "a proclaim fired the lost signal");
    within("delete", WAIT, other.delete(leader.key()))
        .await
        .expect("delete");
    assert_eq!(
        within("the lost signal", ONE_EVENT, leader.lost()).await,
        LostReason::KeyDeleted
    );
}

/// 1,000 waiters on one client queue behind a holder on another, then are
/// all dropped. The client opens one watch stream for them all, and etcd
/// holds a few watchers for them, not one per waiter (the first waiter
/// watches the holder's key, the others count on the client's one copy of
/// the name); the watchers come back to where they were, and so do the
/// client's tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_dropped_waiters_leave_no_watcher_task_or_stream_behind() {
    const WAITERS: usize = 1000;
    let etcd = start_etcd().await;
    let holder_client = connect(etcd.endpoints()).await;
    let name = "scale/drop";
    let kept = r#"grpc_server_started_total{grpc_method="LeaseKeepAlive"}"#;
    let keepalives0 = metric(&etcd, kept).await;
    // Its keepalive comes after a second: the stream it opens (a task in
    // this runtime) is there before the count starts.
    let holder = within(
        "lock",
        WAIT,
        holder_client.lock(name).ttl(Duration::from_secs(3)),
    )
    .await
    .expect("lock");
    let client = connect(etcd.endpoints()).await;
    let (streams0, watchers0) = (
        metric(&etcd, WATCH_STREAMS).await,
        metric(&etcd, WATCHERS).await,
    );
    // One waiter first, dropped: the client's watch stream (its task and
    // its connection's) is then open, and stays while the client lives.
    let warm = tokio::spawn(client.lock(name).into_future());
    wait_until("the first waiter watches", WAIT, || async {
        metric(&etcd, WATCHERS).await > watchers0
    })
    .await;
    warm.abort();
    wait_until("its watcher goes", WAIT, || async {
        metric(&etcd, WATCHERS).await <= watchers0
    })
    .await;
    // And one short session, whose keepalive starts the client's one
    // keepalive stream (a waiter that waits longer than TTL/3 would).
    let session = within("session", WAIT, client.session(Duration::from_secs(2)))
        .await
        .expect("session");
    wait_until("both clients' keepalive streams open", WAIT, || async {
        metric(&etcd, kept).await >= keepalives0 + 2.0
    })
    .await;
    within("close", WAIT, session.close()).await.expect("close");
    let (tasks0, rss0) = (settled_tasks(usize::MAX).await, rss_kib());
    let mut waiters = JoinSet::new();
    for _ in 0..WAITERS {
        waiters.spawn(client.lock(name).ttl(Duration::from_secs(30)).into_future());
    }
    locker::testing::wait_queued(&holder_client, name, WAITERS + 1).await;
    // The first waiter watches the holder's key; the others count on the
    // client's one copy of the name, which one watch keeps.
    wait_until("the waiters watch", WAIT, || async {
        metric(&etcd, WATCHERS).await >= watchers0 + 2.0
    })
    .await;
    let streams = metric(&etcd, WATCH_STREAMS).await;
    let watchers = metric(&etcd, WATCHERS).await;
    let (tasks1, rss1) = (alive_tasks(), rss_kib());
    eprintln!(
        "{WAITERS} waiters: watch streams {streams0} -> {streams}, watchers {watchers0} -> \
         {watchers}, client tasks {tasks0} -> {tasks1}, client RSS {rss0} -> {rss1} KiB \
         ({:.1} KiB per waiter)",
        (rss1.saturating_sub(rss0)) as f64 / WAITERS as f64
    );
    assert!(
        streams <= streams0 + 1.0,
        "waiters on one client opened {} watch streams",
        streams - streams0
    );
    assert!(
        watchers <= watchers0 + 4.0,
        "{WAITERS} waiters on one client hold {} watchers",
        watchers - watchers0
    );
    waiters.shutdown().await;
    wait_until("etcd's watchers come back", WAIT, || async {
        metric(&etcd, WATCHERS).await <= watchers0
    })
    .await;
    let tasks = settled_tasks(tasks0).await;
    assert!(
        tasks <= tasks0,
        "client tasks: {tasks0} before, {tasks} after"
    );
    eprintln!(
        "after the drop: watchers {}, client tasks {}, client RSS {} KiB",
        metric(&etcd, WATCHERS).await,
        alive_tasks(),
        rss_kib()
    );
    within("release", WAIT, holder.release())
        .await
        .expect("release");
    let left = locker::testing::queue_keys(&holder_client, name).await;
    assert!(left.is_empty(), "keys left: {}", left.len());
}

/// 200 waiters on a client behind a proxy. The proxy refuses the client's
/// connections (its one watch stream breaks), the holder releases during
/// the outage, and the connections come back: the stream is resumed from
/// each watch's revision, and the waiters then hold one at a time, in
/// fencing-token order, each within the test's bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_watch_stream_under_hundreds_of_waiters_grants_no_one_twice() {
    const WAITERS: usize = 200;
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let client = connect_through(&proxy).await;
    let name = "scale/cut";
    let holder = within("lock", WAIT, direct.lock(name)).await.expect("lock");
    let inside = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicUsize::new(0));
    let mut waiters = JoinSet::new();
    for _ in 0..WAITERS {
        let req = client.lock(name).ttl(Duration::from_secs(20));
        let (inside, held) = (inside.clone(), held.clone());
        waiters.spawn(async move { hold_once(req.into_future(), &inside, &held).await });
    }
    locker::testing::wait_queued(&direct, name, WAITERS + 1).await;
    // The first waiter's watch of the holder's key and the client's copy
    // of the name, on the one stream the cut breaks.
    wait_until("the waiters watch", WAIT, || async {
        metric(&etcd, WATCHERS).await >= 2.0
    })
    .await;
    proxy.set_mode(ProxyMode::Refuse);
    within("release", WAIT, holder.release())
        .await
        .expect("release");
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.set_mode(ProxyMode::Pass);
    let t0 = Instant::now();
    let mut tokens = Vec::new();
    while let Some(r) = within(
        "every waiter holds once",
        Duration::from_secs(120),
        waiters.join_next(),
    )
    .await
    {
        tokens.push(r.expect("a waiter's task").expect("a waiter held"));
    }
    eprintln!(
        "{WAITERS} waiters held one at a time after the cut, in {:?}",
        t0.elapsed()
    );
    assert_eq!(held.load(Ordering::SeqCst), WAITERS);
    tokens.sort_by_key(|(at, _)| *at);
    let in_order = tokens.windows(2).all(|w| w[0].1 < w[1].1);
    assert!(in_order, "not granted in fencing-token order");
}

/// Takes the lock, checks that no one else holds it in this process, holds
/// it a millisecond, releases; returns when it held and its token.
async fn hold_once(
    req: impl std::future::Future<Output = locker::Result<locker::LockGuard>>,
    inside: &AtomicBool,
    held: &AtomicUsize,
) -> locker::Result<(Instant, i64)> {
    let g = req.await?;
    let at = Instant::now();
    assert!(
        !inside.swap(true, Ordering::SeqCst),
        "two waiters held the lock at once"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    inside.store(false, Ordering::SeqCst);
    held.fetch_add(1, Ordering::SeqCst);
    let token = g.fencing_token().0;
    g.release().await?;
    Ok((at, token))
}

/// Waiters that share their clients' copies of a name, on three clients
/// (ten on each), half on sessions, take the lock five times each behind
/// a holder on a fourth; every third request gives up after 20 ms and
/// every fifth task is aborted while it waits. No two ever hold at once, the fencing tokens
/// of the holders grow, and no key is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_sharing_copies_with_timeouts_and_drops_never_hold_together() {
    const CLIENTS: usize = 3;
    const PER_CLIENT: usize = 10;
    const ROUNDS: usize = 5;
    let etcd = start_etcd().await;
    let name = "scale/mixed";
    let inside = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    // A holder on a client of its own keeps everyone queued at first.
    let first = connect(etcd.endpoints()).await;
    let holder = within("lock", WAIT, first.lock(name)).await.expect("lock");
    let mut tasks = JoinSet::new();
    let mut doomed = Vec::new();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let client = connect(etcd.endpoints()).await;
        clients.push(client.clone());
        for w in 0..PER_CLIENT {
            let (client, inside, tokens) = (client.clone(), inside.clone(), tokens.clone());
            let session = match w % 2 {
                0 => None,
                _ => Some(
                    within("session", WAIT, client.session(Duration::from_secs(10)))
                        .await
                        .expect("session"),
                ),
            };
            let handle = tasks.spawn(async move {
                for round in 0..ROUNDS {
                    let i = c * PER_CLIENT + w + round;
                    let timeout = match i % 3 {
                        0 => Duration::from_millis(20),
                        _ => Duration::from_secs(30),
                    };
                    let g = match &session {
                        Some(s) => s.lock(name).timeout(timeout).await,
                        None => client.lock(name).timeout(timeout).await,
                    };
                    let g = match g {
                        Ok(g) => g,
                        Err(Error::AcquireTimeout { .. }) => continue,
                        Err(e) => panic!("lock: {e}"),
                    };
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                    tokens.lock().unwrap().push(g.fencing_token().0);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    inside.store(false, Ordering::SeqCst);
                    g.release().await.expect("release");
                }
                session
            });
            if (c * PER_CLIENT + w) % 5 == 4 {
                doomed.push(handle);
            }
        }
    }
    // Every fifth task is aborted while it waits behind the holder, most
    // of them on their client's copy (dropped waiters); then the holder
    // lets go.
    // (`wait_queued` counts exactly: the holder and every waiter, those
    // whose first request timed out having queued again.)
    locker::testing::wait_queued(&first, name, 1 + CLIENTS * PER_CLIENT).await;
    for h in &doomed {
        h.abort();
    }
    within("release", WAIT, holder.release())
        .await
        .expect("release");
    let (mut joined, mut aborted) = (0, 0);
    while let Some(r) = within(
        "every waiter ends",
        Duration::from_secs(120),
        tasks.join_next(),
    )
    .await
    {
        match r {
            Ok(_) => joined += 1,
            Err(e) if e.is_cancelled() => aborted += 1,
            Err(e) => panic!("a waiter panicked: {e}"),
        }
    }
    let tokens = tokens.lock().unwrap().clone();
    eprintln!(
        "{} holds, {joined} tasks ended, {aborted} aborted",
        tokens.len()
    );
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens not growing: {tokens:?}"
    );
    assert!(
        tokens.len() >= CLIENTS * PER_CLIENT,
        "too few holds: {}",
        tokens.len()
    );
    wait_until("no key is left", WAIT, || async {
        locker::testing::queue_keys(&clients[0], name)
            .await
            .is_empty()
    })
    .await;
}
