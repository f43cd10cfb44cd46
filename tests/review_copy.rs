//! Review of the shared live copy of a name's keys: a copy of a queue too
//! large for one gRPC message (over 4 MiB of keys) is read in pages, so
//! its waiters are woken like any others. (The review's churn and fault
//! attacks on the copy, all passing, are on branch `review-copy`.)
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use locker::Client;
use locker::testing::{Etcd, Proxy, connect, wait_until, within};
use tokio::task::JoinSet;

const WAIT: Duration = Duration::from_secs(30);

/// A tiny xorshift, one per task: no rand crate here.
/// Whether `{name}/` holds `n` keys (a count, for queues too large to read).
async fn count_under(client: &Client, name: &str, n: i64) -> bool {
    use locker::wire::etcdserverpb as pb;
    let prefix = format!("{name}/").into_bytes();
    let mut end = prefix.clone();
    *end.last_mut().unwrap() += 1;
    let req = pb::TxnRequest {
        compare: vec![],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                key: prefix,
                range_end: end,
                count_only: true,
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let Ok(resp) = client.txn_raw(req).await else {
        return false;
    };
    match resp.responses.first().and_then(|r| r.response.as_ref()) {
        Some(pb::response_op::Response::ResponseRange(r)) => r.count == n,
        _ => false,
    }
}

/// Puts `n` keys (no lease) under `{name}/`, as other contenders' keys
/// behind everyone, 50 to a transaction.
async fn put_many(client: &Client, name: &str, n: usize) {
    use locker::wire::etcdserverpb as pb;
    for chunk in 0..n.div_ceil(50) {
        let ops = (chunk * 50..((chunk + 1) * 50).min(n))
            .map(|i| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: format!("{name}/zz{i:08x}").into_bytes(),
                    value: Vec::new(),
                    lease: 0,
                    prev_kv: false,
                })),
            })
            .collect();
        let req = pb::TxnRequest {
            compare: vec![],
            success: ops,
            failure: vec![],
        };
        within("put many", WAIT, client.txn_raw(req))
            .await
            .expect("put many");
    }
}

/// BUG: the copy's snapshot is one unlimited `KV/Range` of every key under
/// the name; past the client's 4 MiB message limit (about 1,400 keys of a
/// 3,000-byte name, a name locker accepts: up to 4,096 bytes), it fails
/// every time, and a waiter counting on the copy is never told its turn,
/// though it is first in line (the same waiter on the old path, which
/// reads only the keys it needs, holds at once).
///
/// Setup: a holder on client B; a waiter W of client A whose key is first
/// behind the holder (a resumed session's key, kept in place), then 1,600
/// keys behind it; another waiter of A in flight, so that W counts on the
/// copy. The holder leaves: W must hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_in_line_waiter_on_the_copy_of_a_large_queue_holds() {
    first_in_line_on_a_large_queue(true).await;
}

/// The control of the test above: the same waiter alone on its client (the
/// old path, no copy) holds as soon as the holder leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_a_first_in_line_waiter_on_the_old_path_of_a_large_queue_holds() {
    first_in_line_on_a_large_queue(false).await;
}

async fn first_in_line_on_a_large_queue(with_other: bool) {
    let etcd = Etcd::single().await.expect("etcd");
    let a = connect(etcd.endpoints()).await;
    let b = connect(etcd.endpoints()).await;
    let c = connect(etcd.endpoints()).await;
    let name = format!("review/big/{}", "n".repeat(3000));
    let holder = within("lock", WAIT, b.lock(&name)).await.expect("lock");
    // W's key, as an earlier run of its session left it: first behind the holder.
    let earlier = within("session", WAIT, c.session(Duration::from_secs(60)))
        .await
        .expect("session");
    let lease = earlier.lease();
    locker::testing::put_on_lease(&b, &format!("{name}/{lease}"), b"w", lease).await;
    // Keys behind W: other contenders, 1,600 of them (> 4 MiB of keys).
    put_many(&b, &name, 1600).await;
    // Another waiter of A in flight (the old path: the first contender).
    let other = with_other.then(|| {
        let (a, name) = (a.clone(), name.clone());
        tokio::spawn(async move { a.lock(name).timeout(Duration::from_secs(40)).await })
    });
    if with_other {
        wait_until("the other waiter queued", WAIT, || {
            count_under(&b, &name, 1 + 1 + 1600 + 1)
        })
        .await;
    }
    // W: the resumed session on client A, a second contender: the copy.
    let resumed = within("resume", WAIT, a.resume_session(lease))
        .await
        .expect("resume");
    let w = {
        let name = name.clone();
        tokio::spawn(async move { resumed.lock(name).await.map(|g| (g, resumed)) })
    };
    // Let W's acquire find its key and start waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!w.is_finished(), "W held while the holder held");
    holder.release().await.expect("release");
    let held = tokio::time::timeout(Duration::from_secs(15), w).await;
    if let Some(o) = other {
        o.abort();
    }
    let (g, _s) = held
        .expect("W, first in line on a large queue, is never told its turn by the copy")
        .expect("join")
        .expect("W's lock");
    assert_eq!(g.key(), format!("{name}/{lease}"));
    g.release().await.expect("release W");
}

/// BUG (the same as above, reached by a compaction): 200 waiters of one
/// client on a 3,000-byte name, 1,300 keys behind them. The copy follows
/// the queue as it grows (events), until its watch must start again (etcd compacts past it, then the
/// path is cut): its new snapshot is over 4 MiB,
/// fails every time, and no waiter counting on the copy is ever told its
/// turn, though each is first in line in turn. Only the first contender
/// (the old path) holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_on_the_copy_hold_after_a_compaction_on_a_large_queue() {
    const WAITERS: usize = 200;
    let etcd = Etcd::single().await.expect("etcd");
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let client = locker::testing::connect_through(&proxy).await;
    let name = format!("review/bigc/{}", "n".repeat(3000));
    let holder = within("lock", WAIT, direct.lock(&name))
        .await
        .expect("lock");
    let held = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for i in 0..WAITERS {
        let (c, held, name) = (client.clone(), held.clone(), name.clone());
        set.spawn(async move {
            let g = c
                .lock(name)
                .ttl(Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("w{i}: {e}"));
            held.fetch_add(1, Ordering::SeqCst);
            let _ = g.release().await;
        });
    }
    wait_until("the waiters queued", WAIT, || {
        count_under(&direct, &name, WAITERS as i64 + 1)
    })
    .await;
    put_many(&direct, &name, 1300).await;
    // Compact past the copy's resume revision (the one after its last event).
    let mut rev = locker::Revision(0);
    for i in 0..3 {
        rev = direct
            .put(format!("review/bigc-other/{i}"), "x")
            .await
            .expect("put");
    }
    let out = etcd
        .etcdctl(0)
        .expect("etcdctl")
        .args(["compact", &rev.0.to_string()])
        .output()
        .expect("compact");
    assert!(out.status.success(), "compact: {out:?}");
    // Cut the waiters' path: every watch resumes from a compacted revision.
    proxy.cut();
    holder.release().await.expect("release");
    let all = tokio::time::timeout(Duration::from_secs(40), async {
        while let Some(r) = set.join_next().await {
            r.expect("waiter");
        }
    })
    .await;
    let n = held.load(Ordering::SeqCst);
    set.abort_all();
    assert!(
        all.is_ok(),
        "only {n} of {WAITERS} waiters held within 40 s after the holder left"
    );
}
