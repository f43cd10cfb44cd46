//! Regression tests for the client's shared copy of a name's keys and of
//! the waiters behind it, run against real etcd processes.
//!
//! The copy is attacked with churn that writes or removes several keys of
//! one name at a single revision: transactions that put three keys at once,
//! transactions that delete one key and put another, prefix deletes in one
//! transaction and `etcdctl del --prefix`, while unrelated puts keep the
//! revision moving. This runs on a single node and on a 3-member cluster,
//! for a mutex and for a semaphore, with many waiters sharing one client.
//!
//! The file also checks that waiters dropped at random moments leave no
//! watcher and no key behind, that one session can take, drop and release
//! hundreds of names (some releases failing through a blackholed proxy),
//! and that a client allowed one request in flight gets every waiter its
//! lock after a blackhole has come and gone.
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use locker::testing::{
    Etcd, Proxy, ProxyMode, connect, connect_through, wait_queued, wait_until, within,
};
use locker::wire::etcdserverpb as pb;
use locker::{Client, LockGuard, Session};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The limit for one ordinary step (a lock, a release, a read).
const WAIT: Duration = Duration::from_secs(60);
/// The limit for every waiter of a test to finish.
const ALL: Duration = Duration::from_secs(240);
/// The limit for etcd's state to settle once a test's clients are done.
const SETTLE: Duration = Duration::from_secs(15);
/// etcd's count of open watchers, per member.
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// The number of watchers open on all members of `etcd`.
async fn watchers(etcd: &Etcd) -> f64 {
    let mut sum = 0.0;
    for i in 0..etcd.len() {
        sum += etcd.metric(i, WATCHERS).await.expect("scrape metrics");
    }
    sum
}

/// Waits until the watchers of `etcd` are back to `base`.
async fn settle_watchers(etcd: &Etcd, base: f64, what: &str) {
    let now = watchers(etcd).await;
    if now <= base {
        return;
    }
    let msg = format!("{what}: watchers ({now} at the end) fall back to baseline {base}");
    wait_until(&msg, SETTLE, || async { watchers(etcd).await <= base }).await;
}

/// The keys under `prefix`, as text.
async fn keys_under(client: &Client, prefix: &str) -> Vec<String> {
    let (kvs, _) = within("read keys", WAIT, client.get_prefix(prefix))
        .await
        .expect("read keys");
    kvs.iter().map(|kv| kv.key_str()).collect()
}

/// Asserts that no key is under `prefix` now.
async fn assert_no_key_under(client: &Client, prefix: &str) {
    let left = keys_under(client, prefix).await;
    assert!(left.is_empty(), "keys left under {prefix}: {left:?}");
}

/// Waits until no key is under `prefix` (cleanups may still be running).
async fn wait_no_key_under(client: &Client, prefix: &str) {
    let left = keys_under(client, prefix).await;
    if left.is_empty() {
        return;
    }
    let msg = format!("no key is left under {prefix} (at first: {left:?})");
    wait_until(&msg, SETTLE, || async {
        keys_under(client, prefix).await.is_empty()
    })
    .await;
}

fn put_op(key: String) -> pb::RequestOp {
    let put = pb::PutRequest {
        key: key.into_bytes(),
        value: Vec::new(),
        lease: 0,
        prev_kv: false,
    };
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put)),
    }
}

fn del_prefix_op(prefix: &str) -> pb::RequestOp {
    let key = prefix.as_bytes().to_vec();
    let mut range_end = key.clone();
    *range_end.last_mut().expect("a non-empty prefix") += 1;
    let del = pb::DeleteRangeRequest {
        key,
        range_end,
        prev_kv: false,
    };
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(del)),
    }
}

/// Commits `ops` in one transaction: all of them at one revision.
async fn txn(client: &Client, ops: Vec<pb::RequestOp>) {
    let req = pb::TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    };
    within("churn txn", WAIT, client.txn_raw(req))
        .await
        .expect("churn txn");
}

/// `etcdctl del --prefix prefix` on member 0 of `etcd`.
async fn etcdctl_del_prefix(etcd: &Etcd, prefix: &str) {
    let mut cmd = tokio::process::Command::from(etcd.etcdctl(0).expect("find etcdctl"));
    cmd.args(["del", "--prefix", prefix]);
    let out = within("etcdctl del", WAIT, cmd.output())
        .await
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl del --prefix {prefix}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that `g` was a fair grant: fewer than `limit` keys under
/// `{name}/` are older than its own. A key that exists now with an older
/// create revision than the guard's also existed when the guard was
/// granted (no key is ever created at an older revision), so `limit` or
/// more of them would mean a double grant.
async fn assert_granted_fairly(client: &Client, name: &str, g: &LockGuard, limit: usize) {
    let (kvs, _) = within(
        "read the queue",
        WAIT,
        client.get_prefix(format!("{name}/")),
    )
    .await
    .expect("read the queue");
    let mine = kvs
        .iter()
        .find(|kv| kv.key == g.key().as_bytes())
        .unwrap_or_else(|| panic!("my key {} is gone while I hold", g.key()));
    let older: Vec<String> = kvs
        .iter()
        .filter(|kv| kv.create_revision < mine.create_revision)
        .map(|kv| format!("{}@{}", kv.key_str(), kv.create_revision.0))
        .collect();
    assert!(
        older.len() < limit,
        "double grant: {} holds (created {}) with {} older keys: {older:?}",
        g.key(),
        mine.create_revision.0,
        older.len()
    );
}

/// One round of multi-key churn on the keys `{zz}*`: three keys put in one
/// transaction, puts of unrelated keys, then either `etcdctl del --prefix`
/// (every 25th round) or a transaction deleting one key and putting
/// another, followed by a transaction deleting the whole prefix.
async fn churn_round(client: &Client, etcd: &Etcd, zz: &str, round: usize) {
    let ops = (0..3)
        .map(|j| put_op(format!("{zz}{round:06}-{j}")))
        .collect();
    txn(client, ops).await;
    for k in 0..3 {
        within(
            "unrelated put",
            WAIT,
            client.put(format!("unrelated/{k}"), b"x"),
        )
        .await
        .expect("unrelated put");
    }
    if round % 25 == 0 {
        etcdctl_del_prefix(etcd, zz).await;
    } else {
        let swap = vec![
            del_prefix_op(&format!("{zz}{round:06}-0")),
            put_op(format!("{zz}{round:06}-x")),
        ];
        txn(client, swap).await;
        txn(client, vec![del_prefix_op(zz)]).await;
    }
}

/// Churns `{foreign}/zz*` until `stop` (at most 5,000 rounds or 120 s),
/// then deletes what is left of it. Returns the number of rounds.
async fn churn(client: Client, etcd: Arc<Etcd>, foreign: String, stop: Arc<AtomicBool>) -> usize {
    let zz = format!("{foreign}/zz");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && rounds < 5_000 {
        rounds += 1;
        churn_round(&client, &etcd, &zz, rounds).await;
    }
    txn(&client, vec![del_prefix_op(&zz)]).await;
    rounds
}

/// What the waiters of one copy test saw.
#[derive(Default)]
struct Stats {
    grants: AtomicUsize,
    holders: AtomicUsize,
    last_token: AtomicU64,
    token_violations: AtomicUsize,
}

/// Holds `g` for a few milliseconds, checking that at most `limit` guards
/// hold at once, that the grant was fair in etcd, and (for a mutex) that
/// the fencing token is above every earlier one; then releases it.
async fn hold(stats: &Stats, client: &Client, name: &str, g: LockGuard, limit: usize) {
    let n = stats.holders.fetch_add(1, Ordering::SeqCst) + 1;
    assert!(n <= limit, "{n} holders of {name} at once (limit {limit})");
    if limit == 1 {
        let token = u64::try_from(g.fencing_token().0).expect("a positive token");
        let prev = stats.last_token.swap(token, Ordering::SeqCst);
        if token <= prev {
            stats.token_violations.fetch_add(1, Ordering::SeqCst);
        }
    }
    assert_granted_fairly(client, name, &g, limit).await;
    let k = stats.grants.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1 + (k % 7) as u64)).await;
    stats.holders.fetch_sub(1, Ordering::SeqCst);
    within("release", WAIT, g.release()).await.expect("release");
}

/// Takes `name` `rounds` times: a mutex through `lock` when `limit` is 1,
/// else a semaphore of `limit` permits.
async fn take_rounds(client: Client, name: String, limit: usize, rounds: usize, stats: Arc<Stats>) {
    for _ in 0..rounds {
        let g = if limit == 1 {
            let lock = client.lock(&name).ttl(Duration::from_secs(30));
            within("lock", Duration::from_secs(20), lock)
                .await
                .expect("lock")
        } else {
            let permits = u32::try_from(limit).expect("a small limit");
            let sem = client.semaphore(&name, permits);
            within("acquire", WAIT, sem.acquire().ttl(Duration::from_secs(20)))
                .await
                .expect("acquire")
        };
        hold(&stats, &client, &name, g, limit).await;
    }
}

/// `mine` waiters of one client and `theirs` of another take `name`
/// `rounds` times each (a mutex when `limit` is 1, else a semaphore) under
/// multi-key churn on the name. Asserts every grant happened, the fencing
/// tokens rose, no key is left and the watchers fall back to baseline.
async fn copy_under_churn(
    etcd: Etcd,
    name: &str,
    limit: usize,
    mine: usize,
    theirs: usize,
    rounds: usize,
) {
    let etcd = Arc::new(etcd);
    let a = connect(etcd.endpoints()).await;
    let b = connect(etcd.endpoints()).await;
    let c = connect(etcd.endpoints()).await;
    let base = watchers(&etcd).await;
    // A semaphore's foreign keys must look like permits, or its acquires
    // are refused; a mutex takes any key under the name.
    let foreign = if limit == 1 {
        name.to_owned()
    } else {
        let put = c.put(format!("{name}.permits"), limit.to_string());
        within("put the limit", WAIT, put).await.expect("limit key");
        format!("{name}/permit")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let churner = tokio::spawn(churn(c.clone(), etcd.clone(), foreign, stop.clone()));
    let stats = Arc::new(Stats::default());
    let mut set = JoinSet::new();
    for (client, n) in [(&a, mine), (&b, theirs)] {
        for _ in 0..n {
            let task = take_rounds(
                client.clone(),
                name.to_owned(),
                limit,
                rounds,
                stats.clone(),
            );
            set.spawn(task);
        }
    }
    while let Some(r) = within("all waiters", ALL, set.join_next()).await {
        let grants = stats.grants.load(Ordering::SeqCst);
        r.unwrap_or_else(|e| panic!("a waiter of {name} failed after {grants} grants: {e}"));
    }
    stop.store(true, Ordering::SeqCst);
    within("the churn stops", WAIT, churner)
        .await
        .expect("churn task");
    let grants = stats.grants.load(Ordering::SeqCst);
    assert_eq!(grants, (mine + theirs) * rounds, "grants of {name}");
    let violations = stats.token_violations.load(Ordering::SeqCst);
    assert_eq!(
        violations, 0,
        "{violations} fencing tokens of {name} did not rise"
    );
    assert_no_key_under(&a, &format!("{name}/")).await;
    settle_watchers(&etcd, base, name).await;
}

/// A semaphore of 3 permits on one node, 24 waiters on one client and 4
/// on another, 30 rounds each under multi-key churn: never more than 3
/// holders, every grant fair in etcd, all 840 grants done, no key left,
/// watchers back to baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_copy_one_client_many_waiters_under_multi_key_churn() {
    let etcd = Etcd::single().await.expect("start etcd");
    copy_under_churn(etcd, "rt-sem", 3, 24, 4, 30).await;
}

/// A mutex on one node, 16 waiters on one client and 4 on another, 20
/// rounds each under multi-key churn: one holder at a time, fair grants,
/// fencing tokens strictly rising, all 400 grants done, no key left,
/// watchers back to baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutex_copy_one_client_many_waiters_under_multi_key_churn() {
    let etcd = Etcd::single().await.expect("start etcd");
    copy_under_churn(etcd, "rt-mtx", 1, 16, 4, 20).await;
}

/// The mutex attack on a 3-member cluster (12 + 4 waiters, 10 rounds):
/// one holder at a time, fair grants, rising fencing tokens, all 160
/// grants done, no key left, watchers on all members back to baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutex_copy_on_a_three_member_cluster_under_multi_key_churn() {
    let etcd = Etcd::cluster(3).await.expect("start a cluster");
    copy_under_churn(etcd, "rt-mtx3", 1, 12, 4, 10).await;
}

/// The semaphore attack on a 3-member cluster (3 permits, 16 + 4 waiters,
/// 15 rounds): never more than 3 holders, fair grants, all 300 grants
/// done, no key left, watchers on all members back to baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_copy_on_a_three_member_cluster_under_multi_key_churn() {
    let etcd = Etcd::cluster(3).await.expect("start a cluster");
    copy_under_churn(etcd, "rt-sem3", 3, 16, 4, 15).await;
}

/// Puts unrelated keys as fast as it can until `stop` (at most 50,000
/// puts or 120 s), so the revision moves between every watch create and
/// every read of the waiters. Returns the number of puts.
async fn revision_churn(client: Client, stop: Arc<AtomicBool>) -> usize {
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && n < 50_000 {
        n += 1;
        within(
            "put",
            WAIT,
            client.put(format!("unrelated/{}", n % 8), b"x"),
        )
        .await
        .expect("put");
    }
    n
}

/// Takes `name` on `client`: a mutex when `limit` is 1, else a semaphore.
async fn take(client: &Client, name: &str, limit: u32) -> locker::Result<LockGuard> {
    if limit == 1 {
        client.lock(name).await
    } else {
        client.semaphore(name, limit).acquire().await
    }
}

/// Starts `waiters` waiters of `a` on `name` (held elsewhere) and drops
/// them at staggered instants, a third of them at once: each must still
/// be waiting when it is dropped.
async fn drop_waiters(a: &Client, name: &str, limit: u32, waiters: usize, cycle: usize) {
    let mut tasks = Vec::new();
    for i in 0..waiters {
        let a = a.clone();
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            let r = take(&a, &name, limit).await;
            let got = r.map(|g| g.key().to_owned());
            panic!("waiter {i} got {got:?} while the name was held");
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        if i % 3 != 0 {
            let micros = ((i * 997 + cycle * 31) % 3000) as u64;
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
        t.abort();
        let r = t.await;
        assert!(
            r.as_ref().err().is_some_and(|e| e.is_cancelled()),
            "waiter {i} of cycle {cycle}: {r:?}"
        );
    }
}

/// Eight waiters of `a` take and release `name` at once.
async fn name_still_works(a: &Client, name: &str, limit: u32) {
    let mut set = JoinSet::new();
    for _ in 0..8 {
        let a = a.clone();
        let name = name.to_owned();
        set.spawn(async move {
            let g = within("take after the drops", WAIT, take(&a, &name, limit))
                .await
                .expect("take after the drops");
            within("release", WAIT, g.release()).await.expect("release");
        });
    }
    while let Some(r) = within("the takes after the drops", WAIT, set.join_next()).await {
        r.expect("a take after the drops");
    }
}

/// `cycles` times: another client takes every place of `name`, and
/// `waiters` waiters of `a` are dropped while they wait, under constant
/// commits. Then the name still works, no key is left and the watchers
/// fall back to baseline.
async fn dropped_waiters_leave_nothing(name: &str, limit: u32, waiters: usize, cycles: usize) {
    let etcd = Etcd::single().await.expect("start etcd");
    let a = connect(etcd.endpoints()).await;
    let b = connect(etcd.endpoints()).await;
    let c = connect(etcd.endpoints()).await;
    let base = watchers(&etcd).await;
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|_| tokio::spawn(revision_churn(c.clone(), stop.clone())))
        .collect();
    for cycle in 0..cycles {
        let mut held = Vec::new();
        for _ in 0..limit {
            held.push(
                within("hold", WAIT, take(&b, name, limit))
                    .await
                    .expect("hold"),
            );
        }
        drop_waiters(&a, name, limit, waiters, cycle).await;
        for g in held {
            within("release", WAIT, g.release()).await.expect("release");
        }
    }
    name_still_works(&a, name, limit).await;
    stop.store(true, Ordering::SeqCst);
    for ch in churners {
        within("the churn stops", WAIT, ch).await.expect("churn");
    }
    wait_no_key_under(&a, &format!("{name}/")).await;
    settle_watchers(&etcd, base, name).await;
}

/// A mutex held elsewhere, 20 waiters of one client dropped at staggered
/// instants, 15 times over, under constant commits: no waiter is granted
/// while the lock is held, the lock still works, no key is left and the
/// watchers fall back to baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_mutex_waiters_leave_no_watcher_under_revision_churn() {
    dropped_waiters_leave_nothing("rt-drop-m", 1, 20, 15).await;
}

/// As the mutex test, for a semaphore of 2 permits both held elsewhere:
/// no dropped waiter is granted, the semaphore still works, no key is
/// left and the watchers fall back to baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_semaphore_waiters_leave_no_watcher_under_revision_churn() {
    dropped_waiters_leave_nothing("rt-drop-s", 2, 20, 15).await;
}

/// Every name locked and released by `session` three times, all names at
/// once.
async fn lock_every_name(session: &Arc<Session>, names: &[String]) {
    let mut set = JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let s = session.clone();
        let name = name.clone();
        set.spawn(async move {
            for round in 0..3 {
                let g = within("session lock", WAIT, s.lock(&name))
                    .await
                    .unwrap_or_else(|e| panic!("{name} round {round}: {e:?}"));
                if (i + round) % 4 == 0 {
                    tokio::task::yield_now().await;
                }
                within("session release", WAIT, g.release())
                    .await
                    .unwrap_or_else(|e| panic!("{name} release {round}: {e:?}"));
            }
        });
    }
    while let Some(r) = within("every name", Duration::from_secs(120), set.join_next()).await {
        r.expect("a lock of a name");
    }
}

/// `names` held by `other`; the session's requests for them queue and
/// are dropped; the session asks again at once, while the dropped keys
/// are being removed, and gets every name once `other` lets go.
async fn drop_and_ask_again(session: &Arc<Session>, other: &Client, names: &[String]) {
    let mut held = Vec::new();
    for n in names {
        let g = within("other holds", WAIT, other.lock(n)).await;
        held.push(g.expect("other lock"));
    }
    let waiting: Vec<_> = names
        .iter()
        .map(|n| {
            let (s, n) = (session.clone(), n.clone());
            tokio::spawn(async move { s.lock(&n).await })
        })
        .collect();
    for n in names {
        wait_queued(other, n, 2).await;
    }
    for (i, w) in waiting.into_iter().enumerate() {
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        w.abort();
        let _ = w.await;
    }
    let mut again = JoinSet::new();
    for n in names {
        let (s, n) = (session.clone(), n.clone());
        again.spawn(async move {
            let g = within("session lock after drop", WAIT, s.lock(&n))
                .await
                .unwrap_or_else(|e| panic!("{n} after drop: {e:?}"));
            within("release", WAIT, g.release()).await.expect("release");
        });
    }
    for n in names {
        wait_queued(other, n, 2).await;
    }
    for g in held {
        within("other release", WAIT, g.release())
            .await
            .expect("other release");
    }
    while let Some(r) = within("ask again", Duration::from_secs(120), again.join_next()).await {
        r.expect("a lock asked again");
    }
}

/// For each name: the session locks it, its release is sent into a
/// blackhole, and a new request for the name is made before the proxy
/// heals; that request must get the name.
async fn fail_releases(session: &Arc<Session>, proxy: &Proxy, names: &[String]) {
    for n in names {
        let g = within("lock before the cut", WAIT, session.lock(n))
            .await
            .expect("lock before the cut");
        proxy.set_mode(ProxyMode::Blackhole);
        // The release may fail or not: what follows must work either way.
        let _ = within("release in the blackhole", WAIT, g.release()).await;
        let (s, n2) = (session.clone(), n.clone());
        let next = tokio::spawn(async move { s.lock(&n2).await });
        // The blackhole lasts a little longer, with the request made.
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.set_mode(ProxyMode::Pass);
        let g = within("the next request for the name", WAIT, next)
            .await
            .expect("the next request's task")
            .unwrap_or_else(|e| panic!("{n} after a failed release: {e:?}"));
        within("release after", WAIT, g.release())
            .await
            .expect("release after");
    }
}

/// One session through a proxy, 240 names: each locked and released three
/// times concurrently; 40 of them held elsewhere while the session's
/// requests are dropped and made again; a `lock_all` over 30; 8 releases
/// sent into a blackhole, each followed by a request for the same name.
/// Every request gets its name in time and no key is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_many_names_with_drops_and_failed_releases() {
    let etcd = Etcd::single().await.expect("start etcd");
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let client = connect_through(&proxy).await;
    let other = connect(etcd.endpoints()).await;
    let session = within("session", WAIT, client.session(Duration::from_secs(30)))
        .await
        .expect("session");
    let session = Arc::new(session);
    let names: Vec<String> = (0..240)
        .map(|i| format!("rt-names/{:03}", (i * 37) % 240))
        .collect();
    lock_every_name(&session, &names).await;
    drop_and_ask_again(&session, &other, &names[..40]).await;
    let all = names[100..130].to_vec();
    let mg = within("lock_all", WAIT, session.lock_all(all))
        .await
        .expect("lock_all");
    within("release all", WAIT, mg.release())
        .await
        .expect("release all");
    fail_releases(&session, &proxy, &names[200..208]).await;
    wait_no_key_under(&other, "rt-names/").await;
}

/// Takes `rt-inflight` through `c`, up to five attempts 200 ms apart,
/// holds it 2 ms (alone) and releases it.
async fn take_inflight(c: Client, holders: Arc<AtomicUsize>, i: usize) {
    let mut errors = Vec::new();
    for _ in 0..5 {
        let lock = c.lock("rt-inflight").ttl(Duration::from_secs(15));
        match within("lock", WAIT, lock).await {
            Ok(g) => {
                assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                tokio::time::sleep(Duration::from_millis(2)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                let _ = within("release", WAIT, g.release()).await;
                return;
            }
            Err(e) => {
                errors.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("waiter {i} failed five times: {errors:?}");
}

/// A client allowed one request in flight, through a proxy, with 20
/// waiters behind another client's holder; the proxy is blackholed for
/// 3 s mid-wait, then healed, then the holder lets go. Every waiter gets
/// the lock, one at a time, within five attempts; no key is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_place_in_flight_many_waiters_through_a_blackhole() {
    let etcd = Etcd::single().await.expect("start etcd");
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let builder = Client::builder()
        .endpoints([proxy.url()])
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1))
        .max_in_flight(1);
    let client = within("connect", WAIT, builder.connect())
        .await
        .expect("connect");
    let other = connect(etcd.endpoints()).await;
    let g = within("holder", WAIT, other.lock("rt-inflight"))
        .await
        .expect("holder");
    let holders = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for i in 0..20 {
        set.spawn(take_inflight(client.clone(), holders.clone(), i));
    }
    // The fault's timing is the test: 0.5 s of waiting, 3 s of blackhole,
    // 0.5 s healed, and only then the holder's release.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.set_mode(ProxyMode::Blackhole);
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set_mode(ProxyMode::Pass);
    tokio::time::sleep(Duration::from_millis(500)).await;
    within("holder release", WAIT, g.release())
        .await
        .expect("release");
    while let Some(r) = within("all waiters", Duration::from_secs(120), set.join_next()).await {
        r.expect("a waiter");
    }
    wait_no_key_under(&other, "rt-inflight/").await;
}
