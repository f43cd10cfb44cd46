//! Golden wire transcripts: the exact ordered calls each public operation
//! sends to a real etcd, with their key fields, and the raft commits each
//! costs (from etcd's `etcd_server_proposals_committed_total`). The wire
//! table of `docs/wire.md` is checked against the same measurements, so the
//! two cannot drift. A change in wire behaviour breaks this test.
#![cfg(feature = "testing")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locker::testing::Etcd;
use locker::{Client, ElectionEvent, LockEvent, TryLock, TryLockAll, WireKind, WireRecord};
use tokio::time::{Instant, timeout};

const COMMITS: &str = "etcd_server_proposals_committed_total";
/// Long enough that no keepalive is due while a transcript is recorded.
const TTL: Duration = Duration::from_secs(60);

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<WireRecord>>>);

impl Recorder {
    fn take(&self) -> Vec<WireRecord> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// The sent side of the transcript: calls, stream opens and sends.
    /// Watch cancels come last: a wait that ends drops its watch, and the
    /// client's stream task sends the cancel in the background, in no fixed
    /// order with the calls the operation goes on with.
    fn sent(&self) -> Vec<String> {
        let (mut lines, cancels): (Vec<String>, Vec<String>) = self
            .take()
            .iter()
            .filter_map(sent_line)
            .partition(|l| !l.contains(" watch cancel "));
        lines.extend(cancels);
        lines
    }

    fn contains(&self, pred: impl Fn(&WireRecord) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(pred)
    }
}

fn sent_line(r: &WireRecord) -> Option<String> {
    match r.kind {
        WireKind::Unary => Some(format!("call {} {}", r.path, r.request)),
        WireKind::StreamOpen => Some(format!("open {}", r.path)),
        WireKind::StreamSend => Some(format!("send {} {}", r.path, r.request)),
        _ => None,
    }
}

/// `Lease/LeaseGrant` from `call /etcdserverpb.Lease/LeaseGrant ...`, and
/// `Watch` for a watch stream (the wire table's names).
fn method(line: &str) -> Option<String> {
    let mut parts = line.split_whitespace();
    let kind = parts.next()?;
    let path = parts.next()?.trim_start_matches("/etcdserverpb.");
    let rest: Vec<&str> = parts.collect();
    match kind {
        "call" => Some(path.to_owned()),
        // A watch: its create on the client's one watch stream (which the
        // client's first watch opens).
        "send" if path == "Watch/Watch" && rest.starts_with(&["watch", "create"]) => {
            Some("Watch/Watch".to_owned())
        }
        _ => None,
    }
}

async fn client(etcd: &Etcd, rec: &Recorder) -> Client {
    let r = rec.clone();
    Client::builder()
        .endpoints(etcd.endpoints())
        .audit(move |w: &WireRecord| r.0.lock().unwrap().push(w.clone()))
        .connect()
        .await
        .expect("connect")
}

async fn commits(etcd: &Etcd) -> i64 {
    etcd.metric(0, COMMITS).await.expect("metrics") as i64
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn owner_range(name: &str) -> String {
    format!("range \"{name}/\"..\"{name}0\" sort=create:asc limit=1")
}

fn acquire_txn(name: &str, key: &str, value_len: usize, lease: &str) -> String {
    let put = format!("put \"{key}\" value_len={value_len} lease={lease}");
    let newest = format!("range \"{name}/\"..\"{name}0\" sort=create:desc limit=2 keys_only");
    format!(
        "call /etcdserverpb.KV/Txn txn if [create(\"{name}/\"..\"{name}0\") == 0] then [{put}] else [txn if [create(\"{key}\") == 0] then [{put}, {o}, {n}] else [range \"{key}\", {o}]]",
        o = owner_range(name),
        n = newest,
    )
}

fn try_txn(name: &str, key: &str, value_len: usize, lease: &str) -> String {
    format!(
        "call /etcdserverpb.KV/Txn txn if [create(\"{name}/\"..\"{name}0\") == 0] then [put \"{key}\" value_len={value_len} lease={lease}] else [range \"{key}\", {o}]",
        o = owner_range(name)
    )
}

/// A reader's blockers: the two ranges under `{name}/` outside `{name}/read/`.
fn writer_ranges(name: &str) -> [String; 2] {
    [
        format!("\"{name}/\"..\"{name}/read/\""),
        format!("\"{name}/read0\"..\"{name}0\""),
    ]
}

/// A reader's own key is no blocker, so its free branch may find the key
/// there (a resent or resumed read lock): that put asks for what it replaces.
fn read_txn(name: &str, key: &str, value_len: usize, lease: &str) -> String {
    let put = format!("put \"{key}\" value_len={value_len} lease={lease}");
    let [a, b] = writer_ranges(name);
    let holders = format!("range {a} sort=create:asc limit=1, range {b} sort=create:asc limit=1");
    let newest = format!(
        "range {a} sort=create:desc limit=2 keys_only, range {b} sort=create:desc limit=2 keys_only"
    );
    format!(
        "call /etcdserverpb.KV/Txn txn if [create({a}) == 0, create({b}) == 0] then [{put} prev_kv] else [txn if [create(\"{key}\") == 0] then [{put}, {holders}, {newest}] else [range \"{key}\", {holders}]]"
    )
}

fn semaphore_txn(name: &str, permits: u32, key: &str, value_len: usize, lease: &str) -> String {
    let put = format!("put \"{key}\" value_len={value_len} lease={lease}");
    let all = format!("\"{name}/\"..\"{name}0\"");
    let holders = format!("range {all} sort=create:asc limit={permits}");
    let newest = format!(
        "range {all} sort=create:desc limit={} keys_only",
        permits + 1
    );
    let limit = format!("\"{name}.permits\"");
    let set_limit = format!("put {limit} value_len={}", permits.to_string().len());
    let only_permits = format!(
        "create(\"{name}/\"..\"{name}/permit/\") == 0, create(\"{name}/permit0\"..\"{name}0\") == 0"
    );
    let others = format!(
        "range \"{name}/\"..\"{name}/permit/\" limit=1 keys_only, range \"{name}/permit0\"..\"{name}0\" limit=1 keys_only"
    );
    format!(
        "call /etcdserverpb.KV/Txn txn if [create({all}) == 0] then [{set_limit}, {put}] else [txn if [value({limit}) == \"{permits}\", {only_permits}] then [txn if [create(\"{key}\") == 0] then [{put}, {holders}, {newest}] else [range \"{key}\", {holders}]] else [range {limit}, {others}]]"
    )
}

/// A set's acquire: every key absent, then the puts and each name's first
/// key; else my keys and each name's first key.
fn set_txn(names: &[&str], lease: &str, value_len: usize) -> String {
    let key = |n: &str| format!("\"{n}/{lease}\"");
    let compares: Vec<_> = names
        .iter()
        .map(|n| format!("create({}) == 0", key(n)))
        .collect();
    let puts = names
        .iter()
        .map(|n| format!("put {} value_len={value_len} lease={lease}", key(n)));
    let firsts: Vec<_> = names.iter().map(|n| owner_range(n)).collect();
    let mine = names.iter().map(|n| format!("range {}", key(n)));
    format!(
        "call /etcdserverpb.KV/Txn txn if [{}] then [{}] else [{}]",
        compares.join(", "),
        puts.chain(firsts.clone()).collect::<Vec<_>>().join(", "),
        mine.chain(firsts).collect::<Vec<_>>().join(", ")
    )
}

/// A set's try: no key under any name, then the puts; else my keys and
/// each name's first key.
fn set_try_txn(names: &[&str], lease: &str, value_len: usize) -> String {
    let key = |n: &str| format!("\"{n}/{lease}\"");
    let compares: Vec<_> = names
        .iter()
        .map(|n| format!("create(\"{n}/\"..\"{n}0\") == 0"))
        .collect();
    let puts: Vec<_> = names
        .iter()
        .map(|n| format!("put {} value_len={value_len} lease={lease}", key(n)))
        .collect();
    let firsts = names.iter().map(|n| owner_range(n));
    let mine = names.iter().map(|n| format!("range {}", key(n)));
    format!(
        "call /etcdserverpb.KV/Txn txn if [{}] then [{}] else [{}]",
        compares.join(", "),
        puts.join(", "),
        mine.chain(firsts).collect::<Vec<_>>().join(", ")
    )
}

/// A set's release on a session: one Txn of guarded deletes.
fn set_release_txn(keys: &[String], token: i64) -> String {
    let deletes: Vec<_> = keys
        .iter()
        .map(|k| format!("txn if [create(\"{k}\") == {token}] then [delete \"{k}\"] else []"))
        .collect();
    format!(
        "call /etcdserverpb.KV/Txn txn if [] then [{}] else []",
        deletes.join(", ")
    )
}

const GRANT_60: &str = "call /etcdserverpb.Lease/LeaseGrant grant ttl=60s";

/// Measured per operation: the sent transcript and the commits.
struct Measured {
    calls: Vec<String>,
    commits: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_sends_exactly_its_golden_transcript() {
    let etcd = Etcd::single().await.expect("etcd");
    let rec = Recorder::default();
    let other_rec = Recorder::default();
    let mut table: BTreeMap<&'static str, Measured> = BTreeMap::new();
    let mut measure = |op: &'static str, lines: &[String], commits: i64| {
        let calls = lines.iter().filter_map(|l| method(l)).collect();
        table.insert(op, Measured { calls, commits });
    };

    // connect
    let c0 = commits(&etcd).await;
    let client = client(&etcd, &rec).await;
    let other = self::client(&etcd, &other_rec).await;
    other_rec.take();
    let got = rec.sent();
    assert_eq!(got, ["call /etcdserverpb.Maintenance/Status status"]);
    measure("connect", &got, commits(&etcd).await - c0);

    // lock, free (own lease)
    let c0 = commits(&etcd).await;
    let g = client.lock("t/a").ttl(TTL).value("v1").await.unwrap();
    let (key, lease) = (g.key().to_owned(), g.lease().to_string());
    let got = rec.sent();
    assert_eq!(
        got,
        [GRANT_60.to_owned(), acquire_txn("t/a", &key, 2, &lease)]
    );
    measure("lock (free)", &got, commits(&etcd).await - c0);

    // try_lock while held (own lease)
    let c0 = commits(&etcd).await;
    let held = other.try_lock("t/a").ttl(TTL).value("v2").await.unwrap();
    let TryLock::Held(h) = held else {
        panic!("double grant")
    };
    assert_eq!(h.key, key);
    let got = other_rec.sent();
    assert_eq!(got.len(), 3, "{got:#?}");
    let other_lease = got[2].rsplit('=').next().unwrap().to_owned();
    assert_eq!(
        got,
        [
            GRANT_60.to_owned(),
            try_txn("t/a", &format!("t/a/{other_lease}"), 2, &other_lease),
            format!("call /etcdserverpb.Lease/LeaseRevoke revoke id={other_lease}"),
        ]
    );
    measure("try_lock (held)", &got, commits(&etcd).await - c0);

    // holder
    let c0 = commits(&etcd).await;
    let holder = client.holder("t/a").await.unwrap().unwrap();
    assert_eq!(holder.value, b"v1");
    let got = rec.sent();
    assert_eq!(
        got,
        [
            format!("call /etcdserverpb.KV/Range {}", owner_range("t/a")),
            format!("call /etcdserverpb.Lease/LeaseTimeToLive ttl id={lease}"),
        ]
    );
    measure("holder", &got, commits(&etcd).await - c0);

    // a lock-guarded write
    let c0 = commits(&etcd).await;
    g.put("t/data", "x").await.unwrap();
    let got = rec.sent();
    assert_eq!(
        got,
        [format!(
            "call /etcdserverpb.KV/Txn txn if [create(\"{key}\") == {}] then [put \"t/data\" value_len=1] else []",
            g.fencing_token()
        )]
    );
    measure("guarded write", &got, commits(&etcd).await - c0);

    // watch_lock
    let c0 = commits(&etcd).await;
    let mut events = client.watch_lock("t/a").await.unwrap();
    let first = timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let LockEvent::Snapshot { revision, .. } = first else {
        panic!("{first:?}")
    };
    wait_until("the watch stream to open", || {
        rec.contains(|r| r.kind == WireKind::StreamRecv && r.response.contains("created"))
    })
    .await;
    let got = rec.sent();
    assert_eq!(
        got,
        [
            "call /etcdserverpb.KV/Range range \"t/a/\"..\"t/a0\"".to_owned(),
            "open /etcdserverpb.Watch/Watch".to_owned(),
            format!(
                "send /etcdserverpb.Watch/Watch watch create \"t/a/\"..\"t/a0\" start_rev={}",
                revision.0 + 1
            ),
        ]
    );
    measure("watch_lock", &got, commits(&etcd).await - c0);
    // Dropping the stream cancels its watch on the client's watch stream,
    // which stays open for the client's next watch.
    drop(events);
    wait_until("the watch to be cancelled", || {
        rec.contains(|r| r.kind == WireKind::StreamSend && r.request.contains("cancel"))
    })
    .await;
    assert_eq!(
        rec.sent(),
        ["send /etcdserverpb.Watch/Watch watch cancel id=1"]
    );

    // lock after waiting: `other` queues behind `g`, then `g` is released.
    let c_wait0 = commits(&etcd).await;
    let waiter = {
        let other = other.clone();
        tokio::spawn(async move { other.lock("t/a").ttl(TTL).value("v2").await })
    };
    wait_until("the waiter to watch its predecessor", || {
        other_rec.contains(|r| r.kind == WireKind::StreamRecv && r.response.contains("created"))
    })
    .await;
    let c0 = commits(&etcd).await;
    g.release().await.unwrap();
    let got_release = rec.sent();
    let w = timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let c_after = commits(&etcd).await;
    // The revoke was the last write: its revision is the store's.
    let released_at = client.status().await.unwrap().revision;
    rec.take();
    assert_eq!(
        got_release,
        [format!(
            "call /etcdserverpb.Lease/LeaseRevoke revoke id={lease}"
        )]
    );
    let wl = w.lease().to_string();
    wait_until("the wait's watch to be cancelled", || {
        other_rec.contains(|r| r.kind == WireKind::StreamSend && r.request.contains("cancel"))
    })
    .await;
    let got = other_rec.sent();
    assert_eq!(
        got,
        [
            GRANT_60.to_owned(),
            acquire_txn("t/a", w.key(), 2, &wl),
            "open /etcdserverpb.Watch/Watch".to_owned(),
            format!("send /etcdserverpb.Watch/Watch watch create \"{key}\""),
            format!("call /etcdserverpb.KV/Range range \"{key}\" serializable"),
            format!(
                "call /etcdserverpb.KV/Range range \"{}\" at_rev={released_at} serializable",
                w.key()
            ),
            "send /etcdserverpb.Watch/Watch watch cancel id=1".to_owned(),
        ]
    );
    // The release's revoke is the one commit in the measured window.
    measure("release (own lease)", &got_release, c_after - c0);
    // The waiter's whole lock, less the holder's release.
    measure(
        "lock (after waiting)",
        &got,
        c_after - c_wait0 - (c_after - c0),
    );
    w.release().await.unwrap();
    other_rec.take();

    // try_lock, free
    let c0 = commits(&etcd).await;
    let TryLock::Acquired(t) = client.try_lock("t/b").ttl(TTL).value("v3").await.unwrap() else {
        panic!("free lock not acquired")
    };
    let tl = t.lease().to_string();
    let got = rec.sent();
    assert_eq!(got, [GRANT_60.to_owned(), try_txn("t/b", t.key(), 2, &tl)]);
    measure("try_lock (free)", &got, commits(&etcd).await - c0);
    t.release().await.unwrap();
    rec.take();

    // session: open, lock, release, close
    let c0 = commits(&etcd).await;
    let s = client.session(TTL).await.unwrap();
    let got = rec.sent();
    assert_eq!(got, [GRANT_60]);
    measure("session open", &got, commits(&etcd).await - c0);
    let sl = s.lease().to_string();

    let c0 = commits(&etcd).await;
    let sg = s.lock("t/c").value("v4").await.unwrap();
    let got = rec.sent();
    assert_eq!(got, [acquire_txn("t/c", sg.key(), 2, &sl)]);
    measure("session lock (free)", &got, commits(&etcd).await - c0);

    let c0 = commits(&etcd).await;
    let (skey, stok) = (sg.key().to_owned(), sg.fencing_token());
    sg.release().await.unwrap();
    let got = rec.sent();
    assert_eq!(
        got,
        [format!(
            "call /etcdserverpb.KV/Txn txn if [create(\"{skey}\") == {stok}] then [delete \"{skey}\"] else []"
        )]
    );
    measure("session release", &got, commits(&etcd).await - c0);

    let c0 = commits(&etcd).await;
    s.close().await.unwrap();
    let got = rec.sent();
    assert_eq!(
        got,
        [format!(
            "call /etcdserverpb.Lease/LeaseRevoke revoke id={sl}"
        )]
    );
    measure("session close", &got, commits(&etcd).await - c0);

    // campaign, free (own lease)
    let c0 = commits(&etcd).await;
    let mut l = client.campaign("t/e", "p1").ttl(TTL).await.unwrap();
    let (ekey, elease) = (l.key().to_owned(), l.lease().to_string());
    let got = rec.sent();
    assert_eq!(
        got,
        [GRANT_60.to_owned(), acquire_txn("t/e", &ekey, 2, &elease)]
    );
    measure("campaign (free)", &got, commits(&etcd).await - c0);

    // proclaim
    let c0 = commits(&etcd).await;
    l.proclaim("p22").await.unwrap();
    let got = rec.sent();
    assert_eq!(
        got,
        [format!(
            "call /etcdserverpb.KV/Txn txn if [create(\"{ekey}\") == {}] then [put \"{ekey}\" value_len=3 lease={elease}] else []",
            l.fencing_token()
        )]
    );
    measure("proclaim", &got, commits(&etcd).await - c0);

    // leader
    let c0 = commits(&etcd).await;
    let now = client.leader("t/e").await.unwrap().unwrap();
    assert_eq!(now.value, b"p22");
    let got = rec.sent();
    assert_eq!(
        got,
        [format!(
            "call /etcdserverpb.KV/Range {}",
            owner_range("t/e")
        )]
    );
    measure("leader", &got, commits(&etcd).await - c0);

    // observe
    let c0 = commits(&etcd).await;
    let mut events = client.observe("t/e").await.unwrap();
    let first = timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ElectionEvent::Leader { revision, .. } = first else {
        panic!("{first:?}")
    };
    wait_until("the watch stream to open", || {
        rec.contains(|r| r.kind == WireKind::StreamRecv && r.response.contains("created"))
    })
    .await;
    let got = rec.sent();
    assert_eq!(
        got,
        [
            "call /etcdserverpb.KV/Range range \"t/e/\"..\"t/e0\"".to_owned(),
            // On the stream that watch_lock opened.
            format!(
                "send /etcdserverpb.Watch/Watch watch create \"t/e/\"..\"t/e0\" start_rev={}",
                revision.0 + 1
            ),
        ]
    );
    measure("observe", &got, commits(&etcd).await - c0);
    drop(events);
    wait_until("the observer's watch to be cancelled", || {
        rec.contains(|r| r.kind == WireKind::StreamSend && r.request.contains("cancel id=2"))
    })
    .await;
    assert_eq!(
        rec.sent(),
        ["send /etcdserverpb.Watch/Watch watch cancel id=2"]
    );

    // campaign after waiting: `other` queues behind `l`, then `l` resigns.
    let c_wait0 = commits(&etcd).await;
    let waiter = {
        let other = other.clone();
        tokio::spawn(async move { other.campaign("t/e", "p3").ttl(TTL).await })
    };
    wait_until("the candidate to watch its predecessor", || {
        other_rec.contains(|r| r.kind == WireKind::StreamRecv && r.response.contains("created"))
    })
    .await;
    let c0 = commits(&etcd).await;
    l.resign().await.unwrap();
    let got_resign = rec.sent();
    let w = timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let c_after = commits(&etcd).await;
    let resigned_at = client.status().await.unwrap().revision;
    rec.take();
    assert_eq!(
        got_resign,
        [format!(
            "call /etcdserverpb.Lease/LeaseRevoke revoke id={elease}"
        )]
    );
    let wl = w.lease().to_string();
    wait_until("the wait's watch to be cancelled", || {
        other_rec.contains(|r| r.kind == WireKind::StreamSend && r.request.contains("cancel id=2"))
    })
    .await;
    let got = other_rec.sent();
    assert_eq!(
        got,
        [
            GRANT_60.to_owned(),
            acquire_txn("t/e", w.key(), 2, &wl),
            // On the stream that this client's first wait opened.
            format!("send /etcdserverpb.Watch/Watch watch create \"{ekey}\""),
            format!("call /etcdserverpb.KV/Range range \"{ekey}\" serializable"),
            format!(
                "call /etcdserverpb.KV/Range range \"{}\" at_rev={resigned_at} serializable",
                w.key()
            ),
            "send /etcdserverpb.Watch/Watch watch cancel id=2".to_owned(),
        ]
    );
    measure("resign", &got_resign, c_after - c0);
    measure(
        "campaign (after waiting)",
        &got,
        c_after - c_wait0 - (c_after - c0),
    );
    w.resign().await.unwrap();
    other_rec.take();
    rec.take();

    // read_lock, free (own lease)
    let c0 = commits(&etcd).await;
    let r = client.read_lock("t/r").ttl(TTL).value("v5").await.unwrap();
    let rl = r.lease().to_string();
    assert_eq!(r.key(), format!("t/r/read/{rl}"));
    let got = rec.sent();
    assert_eq!(got, [GRANT_60.to_owned(), read_txn("t/r", r.key(), 2, &rl)]);
    measure("read_lock (free)", &got, commits(&etcd).await - c0);
    r.release().await.unwrap();
    rec.take();

    // write_lock, free (own lease): the mutex's transcript
    let c0 = commits(&etcd).await;
    let w = client.write_lock("t/w").ttl(TTL).value("v6").await.unwrap();
    let wl = w.lease().to_string();
    assert_eq!(w.key(), format!("t/w/{wl}"));
    let got = rec.sent();
    assert_eq!(
        got,
        [GRANT_60.to_owned(), acquire_txn("t/w", w.key(), 2, &wl)]
    );
    measure("write_lock (free)", &got, commits(&etcd).await - c0);
    w.release().await.unwrap();
    rec.take();

    // semaphore acquire, free (own lease): sets the limit key too
    let c0 = commits(&etcd).await;
    let p1 = client
        .semaphore("t/s", 2)
        .acquire()
        .ttl(TTL)
        .value("v7")
        .await
        .unwrap();
    let pl = p1.lease().to_string();
    assert_eq!(p1.key(), format!("t/s/permit/{pl}"));
    let got = rec.sent();
    assert_eq!(
        got,
        [
            GRANT_60.to_owned(),
            semaphore_txn("t/s", 2, p1.key(), 2, &pl)
        ]
    );
    measure("semaphore acquire (free)", &got, commits(&etcd).await - c0);

    // semaphore try, busy: both permits held; the try queues and leaves
    let p2 = other
        .semaphore("t/s", 2)
        .acquire()
        .ttl(TTL)
        .value("v8")
        .await
        .unwrap();
    other_rec.take();
    let c0 = commits(&etcd).await;
    let busy = client
        .semaphore("t/s", 2)
        .try_acquire()
        .ttl(TTL)
        .value("v9")
        .await
        .unwrap();
    let TryLock::Held(h) = busy else {
        panic!("a third permit granted")
    };
    assert_eq!(h.key, p1.key());
    let got = rec.sent();
    assert_eq!(got.len(), 3, "{got:#?}");
    let tl = got[2].rsplit('=').next().unwrap().to_owned();
    assert_eq!(
        got,
        [
            GRANT_60.to_owned(),
            semaphore_txn("t/s", 2, &format!("t/s/permit/{tl}"), 2, &tl),
            format!("call /etcdserverpb.Lease/LeaseRevoke revoke id={tl}"),
        ]
    );
    measure("semaphore try (busy)", &got, commits(&etcd).await - c0);

    // semaphore acquire after waiting: a third client waits behind the two
    // permits; the first release admits it.
    let third_rec = Recorder::default();
    let third = self::client(&etcd, &third_rec).await;
    third_rec.take();
    let c_wait0 = commits(&etcd).await;
    let waiter = {
        let third = third.clone();
        tokio::spawn(async move {
            third
                .semaphore("t/s", 2)
                .acquire()
                .ttl(TTL)
                .value("v10")
                .await
        })
    };
    wait_until("the waiter to read its copy of the name", || {
        third_rec.contains(|r| r.kind == WireKind::Unary && r.request.contains("keys_only"))
    })
    .await;
    let c0 = commits(&etcd).await;
    p1.release().await.unwrap();
    let p3 = timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let c_after = commits(&etcd).await;
    let released_at = client.status().await.unwrap().revision;
    let p3l = p3.lease().to_string();
    wait_until("the copy's watch to be cancelled", || {
        third_rec.contains(|r| r.kind == WireKind::StreamSend && r.request.contains("cancel"))
    })
    .await;
    let got = third_rec.sent();
    assert_eq!(
        got,
        [
            GRANT_60.to_owned(),
            semaphore_txn("t/s", 2, p3.key(), 3, &p3l),
            "open /etcdserverpb.Watch/Watch".to_owned(),
            "send /etcdserverpb.Watch/Watch watch create \"t/s/\"..\"t/s0\"".to_owned(),
            format!(
                "call /etcdserverpb.KV/Range range \"t/s/\"..\"t/s0\" limit=512 at_rev={} serializable keys_only",
                // The copy of the name, at the watch's revision: nothing
                // was written after my key.
                p3.fencing_token()
            ),
            format!(
                "call /etcdserverpb.KV/Range range \"{}\" at_rev={released_at} serializable",
                p3.key()
            ),
            "send /etcdserverpb.Watch/Watch watch cancel id=1".to_owned(),
        ]
    );
    measure(
        "semaphore acquire (after waiting)",
        &got,
        c_after - c_wait0 - (c_after - c0),
    );
    p3.release().await.unwrap();
    p2.release().await.unwrap();
    rec.take();
    other_rec.take();
    sets(&client, &other, &rec, &other_rec, &etcd, &mut measure).await;
    second_waiter_of_a_client(&client, &rec, &etcd, &mut measure).await;
    check_readme_table(&table);
}

/// A second waiter of one client on a name, behind the client's first: it
/// counts on the client's copy of the name's keys. Its acquire compares its
/// own key only and puts it (no compare over the name's range, no sorted
/// read of the queue); the copy is a watch of the name and a read of its
/// keys; its turn, a read of its own key.
async fn second_waiter_of_a_client(
    client: &Client,
    rec: &Recorder,
    etcd: &Etcd,
    measure: &mut impl FnMut(&'static str, &[String], i64),
) {
    let holder = client.lock("t/c").ttl(TTL).value("h").await.unwrap();
    rec.take();
    let rec4 = Recorder::default();
    let fourth = self::client(etcd, &rec4).await;
    let spawn_lock = |value: &'static str| {
        let fourth = fourth.clone();
        tokio::spawn(async move { fourth.lock("t/c").ttl(TTL).value(value).await })
    };
    let first = spawn_lock("w1");
    wait_until("the first waiter to watch its predecessor", || {
        rec4.contains(|r| r.kind == WireKind::StreamRecv && r.response.contains("created"))
    })
    .await;
    rec4.take();
    let c_wait0 = commits(etcd).await;
    let second = spawn_lock("w2");
    wait_until("the second waiter's put and the copy's read", || {
        rec4.contains(|r| r.kind == WireKind::Unary && r.request.contains("keys_only"))
            && rec4.contains(|r| r.kind == WireKind::Unary && r.path.ends_with("KV/Txn"))
    })
    .await;
    // The copy starts (in the background) as the acquire is sent: the put
    // and the copy's watch and read come in no fixed order, and the copy
    // is read at the revision its watch was created at, which is before or
    // after the put.
    let mut queued: Vec<String> = rec4
        .sent()
        .into_iter()
        .map(|l| match l.split_once(" at_rev=") {
            Some((head, tail)) if l.contains("keys_only") => {
                format!(
                    "{head} at_rev=N {}",
                    tail.split_once(' ').map_or("", |t| t.1)
                )
            }
            _ => l,
        })
        .collect();
    let order = |l: &String| {
        ["LeaseGrant", "KV/Txn", "Watch/Watch", "KV/Range"]
            .iter()
            .position(|m| l.contains(m))
    };
    queued.sort_by_key(order);
    // The put may also land between the copy's watch and its read, which
    // then cannot prove the watch synced: the copy draws again (a new
    // create, the old watch's cancel, a new read), up to twice. The
    // redraws are set aside here, so the row shows the usual calls.
    let creates = queued.iter().filter(|l| l.contains("watch create")).count();
    let redraws = creates - 1;
    assert!((1..=3).contains(&creates), "copy creates: {queued:?}");
    let cancels = queued.iter().filter(|l| l.contains("watch cancel")).count();
    assert_eq!(cancels, redraws, "one cancel per redraw: {queued:?}");
    let (mut create, mut read) = (0, 0);
    queued.retain(|l| {
        if l.contains("watch create") {
            create += 1;
            create == 1
        } else if l.contains("keys_only") {
            read += 1;
            read == 1
        } else {
            !l.contains("watch cancel")
        }
    });
    assert_eq!(
        (create, read),
        (creates, creates),
        "a read per draw: {queued:?}"
    );
    // The first waiter leaves (its revoke, its watch's cancel): the second
    // is next after the holder.
    let c_first = commits(etcd).await;
    first.abort();
    wait_until("the first waiter to leave", || {
        rec4.contains(|r| r.path.ends_with("LeaseRevoke"))
            && rec4.contains(|r| r.kind == WireKind::StreamSend && r.request.contains("cancel"))
    })
    .await;
    rec4.take();
    let c0 = commits(etcd).await;
    holder.release().await.unwrap();
    let w = timeout(Duration::from_secs(10), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let c_after = commits(etcd).await;
    let released_at = client.status().await.unwrap().revision;
    rec.take();
    wait_until("the copy's watch to be cancelled", || {
        rec4.contains(|r| r.kind == WireKind::StreamSend && r.request.contains("cancel"))
    })
    .await;
    let wl = w.lease().to_string();
    let put = format!("put \"{}\" value_len=2 lease={wl}", w.key());
    let mut got = queued;
    got.extend(rec4.sent());
    assert_eq!(
        got,
        [
            GRANT_60.to_owned(),
            format!(
                "call /etcdserverpb.KV/Txn txn if [create(\"{key}\") == 0] then [{put}] else [range \"{key}\", {o}]",
                key = w.key(),
                o = owner_range("t/c"),
            ),
            "send /etcdserverpb.Watch/Watch watch create \"t/c/\"..\"t/c0\"".to_owned(),
            "call /etcdserverpb.KV/Range range \"t/c/\"..\"t/c0\" limit=512 at_rev=N serializable keys_only"
                .to_owned(),
            format!(
                "call /etcdserverpb.KV/Range range \"{}\" at_rev={released_at} serializable",
                w.key()
            ),
            format!("send /etcdserverpb.Watch/Watch watch cancel id={}", 2 + redraws),
        ]
    );
    // The waiter's lock, less the first waiter's revoke and the holder's.
    measure(
        "lock (after waiting, behind a waiter of the same client)",
        &got,
        c_after - c_wait0 - (c0 - c_first) - (c_after - c0),
    );
    w.release().await.unwrap();
    rec4.take();
}

/// The transcripts of a set of three names: free on its own lease, busy
/// for a try, and on a session.
async fn sets(
    client: &Client,
    other: &Client,
    rec: &Recorder,
    other_rec: &Recorder,
    etcd: &Etcd,
    measure: &mut impl FnMut(&'static str, &[String], i64),
) {
    let names = ["t/m1", "t/m2", "t/m3"];
    let c0 = commits(etcd).await;
    let set = client
        .lock_all(["t/m3", "t/m1", "t/m2"])
        .ttl(TTL)
        .value("v")
        .await
        .unwrap();
    let lease = set.lease().to_string();
    let got = rec.sent();
    assert_eq!(got, [GRANT_60.to_owned(), set_txn(&names, &lease, 1)]);
    measure("lock_all (3 free names)", &got, commits(etcd).await - c0);

    let c0 = commits(etcd).await;
    let busy = other.try_lock_all(names).ttl(TTL).value("v").await.unwrap();
    let TryLockAll::Held(h) = busy else {
        panic!("double grant")
    };
    assert_eq!(h.key, set.keys()[0]);
    let got = other_rec.sent();
    assert_eq!(got.len(), 3, "{got:#?}");
    let ol = got[2].rsplit('=').next().unwrap().to_owned();
    assert_eq!(
        got,
        [
            GRANT_60.to_owned(),
            set_try_txn(&names, &ol, 1),
            format!("call /etcdserverpb.Lease/LeaseRevoke revoke id={ol}"),
        ]
    );
    measure("try_lock_all (held)", &got, commits(etcd).await - c0);

    let c0 = commits(etcd).await;
    set.release().await.unwrap();
    let got = rec.sent();
    assert_eq!(
        got,
        [format!(
            "call /etcdserverpb.Lease/LeaseRevoke revoke id={lease}"
        )]
    );
    measure(
        "lock_all release (own lease)",
        &got,
        commits(etcd).await - c0,
    );

    let session = client.session(TTL).await.unwrap();
    let sl = session.lease().to_string();
    rec.take();
    let c0 = commits(etcd).await;
    let set = session.lock_all(names).value("v").await.unwrap();
    let got = rec.sent();
    assert_eq!(got, [set_txn(&names, &sl, 1)]);
    measure(
        "session lock_all (3 free names)",
        &got,
        commits(etcd).await - c0,
    );

    let c0 = commits(etcd).await;
    let (keys, token) = (set.keys().to_vec(), set.fencing_token().0);
    set.release().await.unwrap();
    let got = rec.sent();
    assert_eq!(got, [set_release_txn(&keys, token)]);
    measure("session lock_all release", &got, commits(etcd).await - c0);
    session.close().await.unwrap();
    rec.take();
}

/// The wire table (docs/wire.md), between its markers: operation -> (calls, commits).
fn readme_table() -> BTreeMap<String, (Vec<String>, i64)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/wire.md")).unwrap();
    let start = readme
        .find("<!-- wire-table:start -->")
        .expect("docs/wire.md has no wire table start marker");
    let end = readme
        .find("<!-- wire-table:end -->")
        .expect("docs/wire.md has no wire table end marker");
    let mut rows = BTreeMap::new();
    for line in readme[start..end]
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
    {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(
            cells.len(),
            4,
            "docs/wire.md wire table row has {} cells: {line}",
            cells.len()
        );
        let op = cells[0].trim_matches('`').to_owned();
        let calls = cells[1]
            .split(',')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        let commits = cells[2]
            .parse()
            .unwrap_or_else(|_| panic!("commits not a number: {line}"));
        rows.insert(op, (calls, commits));
    }
    rows
}

fn check_readme_table(measured: &BTreeMap<&'static str, Measured>) {
    let table = readme_table();
    let mut wrong = Vec::new();
    for (op, m) in measured {
        match table.get(*op) {
            None => wrong.push(format!("docs/wire.md has no row for `{op}`")),
            Some((calls, commits)) => {
                if *calls != m.calls {
                    wrong.push(format!(
                        "`{op}`: docs/wire.md says {calls:?}, measured {:?}",
                        m.calls
                    ));
                }
                if *commits != m.commits {
                    wrong.push(format!(
                        "`{op}`: docs/wire.md says {commits} commits, measured {}",
                        m.commits
                    ));
                }
            }
        }
    }
    for op in table.keys() {
        if !measured.contains_key(op.as_str()) {
            wrong.push(format!(
                "docs/wire.md row `{op}` is not measured by this test"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/wire.md wire table drifted:\n{}",
        wrong.join("\n")
    );
}
