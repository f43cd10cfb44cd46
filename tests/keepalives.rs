//! The client's one keepalive stream, specified against real etcd: every
//! lease of a client is kept alive on one `LeaseKeepAlive` stream by one
//! task; a lease that is gone costs only its own session; a broken
//! connection is replaced by a new stream that carries every lease; and
//! nothing is left once the client and its sessions are dropped.
//!
//! Run with `cargo test --features testing --test keepalives`.
#![cfg(feature = "testing")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use locker::testing::{Etcd, Proxy, ProxyMode, wait_until, within};
use locker::{Client, LostReason, Session, WireKind, WireRecord, paths};
use tokio::time::Instant;

/// The longest any single wait on etcd may take in these tests.
const WAIT: Duration = Duration::from_secs(10);
/// A short TTL: a keepalive every second.
const TTL: Duration = Duration::from_secs(3);
/// etcd's count of `LeaseKeepAlive` streams opened, and of those ended.
const STARTED: &str = r#"grpc_server_started_total{grpc_method="LeaseKeepAlive"}"#;
const HANDLED: &str = r#"grpc_server_handled_total{grpc_method="LeaseKeepAlive"}"#;

async fn start_etcd() -> Etcd {
    Etcd::single().await.expect("start a single-member etcd")
}

/// Records every wire record of a client.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<WireRecord>>>);

impl Recorder {
    fn sink(&self) -> impl Fn(&WireRecord) + Send + Sync + 'static {
        let records = self.0.clone();
        move |r: &WireRecord| records.lock().unwrap().push(r.clone())
    }

    fn count(&self, pred: impl Fn(&WireRecord) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|r| pred(r)).count()
    }

    /// `LeaseKeepAlive` streams opened (attempts, whatever their outcome).
    fn keepalive_opens(&self) -> usize {
        self.count(|r| r.kind == WireKind::StreamOpen && r.path == paths::LEASE_KEEPALIVE)
    }

    /// `LeaseKeepAlive` streams opened that etcd accepted.
    fn keepalive_streams(&self) -> usize {
        self.count(|r| {
            r.kind == WireKind::StreamOpen && r.path == paths::LEASE_KEEPALIVE && r.status == "OK"
        })
    }

    /// Keepalive answers received.
    fn keepalive_answers(&self) -> usize {
        self.count(|r| r.kind == WireKind::StreamRecv && r.path == paths::LEASE_KEEPALIVE)
    }
}

async fn connect_recorded(endpoints: Vec<String>, rec: &Recorder) -> Client {
    let builder = Client::builder()
        .endpoints(endpoints)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1))
        .audit(rec.sink());
    within("connect", WAIT, builder.connect())
        .await
        .expect("connect")
}

async fn metric(etcd: &Etcd, name: &str) -> f64 {
    // etcd exposes no sample of a method before its first call.
    etcd.metric(0, name).await.unwrap_or(0.0)
}

/// `n` sessions of `ttl` on `client`, granted 50 at a time.
async fn sessions(client: &Client, n: usize, ttl: Duration) -> Vec<Session> {
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let batch = (n - all.len()).min(50);
        let grants = (0..batch).map(|_| {
            let client = client.clone();
            async move { client.session(ttl).await }
        });
        let granted = within("grant sessions", WAIT, join_all(grants)).await;
        all.extend(granted.into_iter().map(|s| s.expect("session")));
    }
    all
}

/// Awaits every future (all polled together, on spawned tasks).
async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

/// Whether every session is alive with a deadline after `t`.
fn all_alive_past(sessions: &[Session], t: std::time::Instant) -> bool {
    sessions
        .iter()
        .all(|s| s.lost_reason().is_none() && s.deadline().is_some_and(|d| d > t))
}

/// 1,000 sessions on one client: one keepalive stream (seen from both
/// ends), one task, and every lease renewed past twice its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_share_one_keepalive_stream_and_stay_alive() {
    const N: usize = 1000;
    let etcd = start_etcd().await;
    let rec = Recorder::default();
    let client = connect_recorded(etcd.endpoints(), &rec).await;
    let started = Instant::now();
    let sessions = sessions(&client, N, TTL).await;
    let granted = started.elapsed();
    let t0 = std::time::Instant::now();
    // Renewed beyond two TTLs from now: keepalives sent after t0 + TTL
    // were answered, for every lease.
    wait_until(
        "every lease is renewed past two TTLs",
        3 * TTL + WAIT,
        || async { all_alive_past(&sessions, t0 + 2 * TTL) },
    )
    .await;
    let (opens, streams) = (rec.keepalive_opens(), rec.keepalive_streams());
    let on_server = metric(&etcd, STARTED).await;
    let answers = rec.keepalive_answers();
    eprintln!(
        "{N} sessions granted in {granted:?}: {opens} keepalive stream open(s), \
         {streams} accepted, etcd counts {on_server}; {answers} keepalive answers"
    );
    assert_eq!(opens, 1, "keepalive streams opened by the client");
    assert_eq!(on_server, 1.0, "keepalive streams etcd saw opened");
    assert!(answers >= 2 * N, "{answers} answers for {N} leases");
    assert!(sessions.iter().all(|s| s.lost_reason().is_none()));
}

/// A lease revoked behind the client's back is lost for its own session
/// only (etcd answers its keepalive with TTL 0); the client's other leases
/// go on being renewed on the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_loses_only_its_own_session() {
    let etcd = start_etcd().await;
    let rec = Recorder::default();
    let client = connect_recorded(etcd.endpoints(), &rec).await;
    let other = connect_recorded(etcd.endpoints(), &Recorder::default()).await;
    let sessions = sessions(&client, 10, TTL).await;
    let victim = &sessions[3];
    wait_until("a keepalive was answered", WAIT, || async {
        rec.keepalive_answers() >= 10
    })
    .await;
    let existed = within("revoke", WAIT, other.lease_revoke(victim.lease()))
        .await
        .expect("revoke");
    assert!(existed);
    let revoked = std::time::Instant::now();
    let reason = within("the victim's lost signal", WAIT, victim.lost()).await;
    assert_eq!(reason, LostReason::Expired);
    let rest: Vec<&Session> = sessions
        .iter()
        .filter(|s| s.lease() != victim.lease())
        .collect();
    wait_until(
        "the others are renewed past the revoke plus a TTL",
        2 * WAIT,
        || async {
            rest.iter().all(|s| {
                s.lost_reason().is_none() && s.deadline().is_some_and(|d| d > revoked + TTL)
            })
        },
    )
    .await;
    assert_eq!(victim.lost_reason(), Some(LostReason::Expired));
    assert_eq!(rec.keepalive_opens(), 1, "one stream throughout");
}

/// The connection is cut (and refused) for a while, shorter than the TTL:
/// the client opens a new keepalive stream once it is back, sends every
/// lease's keepalive on it, and no lease is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_restored_in_time_keeps_every_lease_on_a_new_stream() {
    let ttl = Duration::from_secs(6);
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let rec = Recorder::default();
    let client = connect_recorded(vec![proxy.url()], &rec).await;
    let sessions = sessions(&client, 20, ttl).await;
    wait_until("every lease was renewed once", WAIT, || async {
        rec.keepalive_answers() >= 20
    })
    .await;
    assert_eq!(rec.keepalive_streams(), 1);
    proxy.set_mode(ProxyMode::Refuse);
    let cut = std::time::Instant::now();
    // Down for a whole keepalive period and more (TTL/3 = 2 s).
    let down = Duration::from_millis(2500);
    tokio::time::sleep(down).await;
    assert!(
        all_alive_past(&sessions, cut),
        "a lease was lost during the cut"
    );
    proxy.set_mode(ProxyMode::Pass);
    wait_until("every lease is renewed after the cut", WAIT, || async {
        all_alive_past(&sessions, cut + down + ttl)
    })
    .await;
    assert!(sessions.iter().all(|s| s.lost_reason().is_none()));
    let streams = rec.keepalive_streams();
    eprintln!(
        "cut for {down:?}: {} open attempts, {streams} streams accepted",
        rec.keepalive_opens()
    );
    assert_eq!(streams, 2, "the first stream and one after the cut");
}

/// The keepalive task lives as long as a client or a session needs it, and
/// ends with the last of them: etcd sees the stream end, no task is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_client_and_session_ends_the_keepalive_task() {
    let etcd = start_etcd().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let rec = Recorder::default();
    let client = connect_recorded(etcd.endpoints(), &rec).await;
    let sessions = sessions(&client, 3, TTL).await;
    wait_until("the stream is open", WAIT, || async {
        rec.keepalive_answers() >= 3
    })
    .await;
    assert_eq!(metric(&etcd, STARTED).await, 1.0);
    assert_eq!(metric(&etcd, HANDLED).await, 0.0);
    // The sessions still need it: without the user's client, the task
    // goes on.
    drop(client);
    let answered = rec.keepalive_answers();
    wait_until("keepalives go on without the client", WAIT, || async {
        rec.keepalive_answers() >= answered + 3
    })
    .await;
    assert!(metrics.num_alive_tasks() > baseline);
    drop(sessions);
    wait_until("etcd sees the keepalive stream end", WAIT, || async {
        metric(&etcd, HANDLED).await == 1.0
    })
    .await;
    wait_until("no background task is left", WAIT, || async {
        metrics.num_alive_tasks() <= baseline
    })
    .await;
    assert_eq!(metric(&etcd, STARTED).await, 1.0);
}

/// A client that takes one short-lived session after another keeps the one
/// stream: a lease that ends does not take the stream with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_one_after_another_reuse_the_stream() {
    let etcd = start_etcd().await;
    let rec = Recorder::default();
    let client = connect_recorded(etcd.endpoints(), &rec).await;
    for round in 0..3 {
        let session = within("session", WAIT, client.session(TTL))
            .await
            .expect("session");
        let answered = rec.keepalive_answers();
        wait_until("a keepalive is answered", WAIT, || async {
            rec.keepalive_answers() > answered
        })
        .await;
        within("close", WAIT, session.close())
            .await
            .unwrap_or_else(|e| panic!("close {round}: {e}"));
    }
    assert_eq!(rec.keepalive_opens(), 1);
    assert_eq!(metric(&etcd, STARTED).await, 1.0);
}

/// Resuming a lease sends its first keepalive at once on the client's open
/// stream (no stream of its own), and a lease that is gone is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_lease_is_renewed_at_once_on_the_shared_stream() {
    let etcd = start_etcd().await;
    let rec = Recorder::default();
    let client = connect_recorded(etcd.endpoints(), &rec).await;
    let other = connect_recorded(etcd.endpoints(), &Recorder::default()).await;
    let first = within("session", WAIT, client.session(TTL))
        .await
        .expect("session");
    wait_until("the stream is open", WAIT, || async {
        rec.keepalive_answers() >= 1
    })
    .await;
    let (lease, _) = within("grant", WAIT, other.lease_grant(TTL))
        .await
        .expect("grant");
    let asked = std::time::Instant::now();
    let resumed = within("resume", WAIT, client.resume_session(lease))
        .await
        .expect("resume");
    let deadline = resumed.deadline().expect("alive");
    assert!(
        deadline >= asked + TTL,
        "renewed to a whole TTL from the resume"
    );
    let (gone, _) = within("grant", WAIT, other.lease_grant(TTL))
        .await
        .expect("grant");
    within("revoke", WAIT, other.lease_revoke(gone))
        .await
        .expect("revoke");
    let refused = within("resume", WAIT, client.resume_session(gone)).await;
    assert!(
        matches!(refused, Err(locker::Error::LeaseExpired { lease }) if lease == gone),
        "{refused:?}"
    );
    wait_until(
        "both leases are renewed past a TTL from now",
        2 * WAIT,
        || async {
            [&first, &resumed].iter().all(|s| {
                s.deadline()
                    .is_some_and(|d| d > asked + TTL + Duration::from_secs(1))
            })
        },
    )
    .await;
    assert_eq!(rec.keepalive_opens(), 1, "one stream throughout");
}

/// The member behind the keepalive stream goes silent (its connection is
/// blackholed): a whole period without an answer gives the stream up, and
/// every lease is renewed on a new stream through the other endpoint, long
/// before any deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_moves_every_lease_to_another_in_time() {
    let etcd = start_etcd().await;
    let proxies = [
        Proxy::start(etcd.client_addr(0)).await.expect("proxy 1"),
        Proxy::start(etcd.client_addr(0)).await.expect("proxy 2"),
    ];
    let rec = Recorder::default();
    let client = connect_recorded(proxies.iter().map(Proxy::url).collect(), &rec).await;
    let sessions = sessions(&client, 20, TTL).await;
    wait_until("every lease was renewed once", WAIT, || async {
        rec.keepalive_answers() >= 20
    })
    .await;
    let on = rec.0.lock().unwrap().iter().find_map(|r| {
        (r.kind == WireKind::StreamOpen && r.path == paths::LEASE_KEEPALIVE)
            .then(|| r.endpoint.clone())
    });
    let on = on.expect("the stream's endpoint");
    let silent = proxies.iter().find(|p| p.url() == on).expect("its proxy");
    silent.set_mode(ProxyMode::Blackhole);
    let cut = std::time::Instant::now();
    wait_until(
        "every lease is renewed past the cut plus a TTL",
        WAIT,
        || async { all_alive_past(&sessions, cut + TTL) },
    )
    .await;
    let moved = rec.count(|r| {
        r.kind == WireKind::StreamOpen
            && r.path == paths::LEASE_KEEPALIVE
            && r.status == "OK"
            && r.endpoint != on
    });
    assert_eq!(moved, 1, "one new stream, on the other endpoint");
    assert!(sessions.iter().all(|s| s.lost_reason().is_none()));
}
