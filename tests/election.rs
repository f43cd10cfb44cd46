//! Leader election, specified against real etcd processes.
//!
//! Every test starts its own single-member etcd through the `testing`
//! harness (and, where a fault is needed, a TCP proxy of its own between a
//! client and etcd), so tests share nothing and may run in parallel. Each
//! wait has a deadline and every loop a bound; nothing sleeps and hopes.
//! Interop tests run etcd's own `etcdctl` (`ETCDCTL_BIN`, else `etcdctl` on
//! `PATH`) as child processes, killed when the test ends.
//!
//! Run with `cargo test --features testing --test election`.
#![cfg(feature = "testing")]

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locker::testing::{Etcd, Proxy, ProxyMode, wait_until, within};
use locker::testing::{connect, connect_through};
use locker::testing::{
    queue as candidates, queue_keys as candidate_keys, wait_queue_is as wait_candidates_are,
    wait_queued as wait_candidates,
};
use locker::wire::etcdserverpb as pb;
use locker::wire::etcdserverpb::watch_client::WatchClient;
use locker::wire::mvccpb;
use locker::{
    Client, ElectionEvent, Error, Holder, LeaderWatch, Leadership, LeaseId, Revision, WireKind,
    WireRecord, paths,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamExt as _;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The longest any single wait on etcd may take in these tests.
const WAIT: Duration = Duration::from_secs(10);

async fn start_etcd() -> Etcd {
    Etcd::single().await.expect("start a single-member etcd")
}

async fn leader(client: &Client, name: &str) -> Option<Holder> {
    within("leader", WAIT, client.leader(name))
        .await
        .expect("read the leader")
}

/// Asserts that `client.leader(name)` reports exactly `l`.
async fn assert_leads(client: &Client, name: &str, l: &Leadership) {
    let h = leader(client, name)
        .await
        .unwrap_or_else(|| panic!("nobody leads {name}; expected {l:?}"));
    assert_eq!(h.name, name);
    assert_eq!(h.key, l.key());
    assert_eq!(h.value, l.value(), "the leader's value");
    assert_eq!(h.lease, l.lease());
    assert_eq!(h.fencing_token, l.fencing_token());
}

/// Campaigns in the background; the task owns its client.
fn spawn_campaign(
    client: &Client,
    name: &'static str,
    value: &'static str,
    ttl: Duration,
) -> tokio::task::JoinHandle<locker::Result<Leadership>> {
    let client = client.clone();
    tokio::spawn(async move { client.campaign(name, value).ttl(ttl).await })
}

/// The next event of an election stream.
async fn next_event(watch: &mut LeaderWatch) -> ElectionEvent {
    within("the next election event", WAIT, watch.next())
        .await
        .expect("the election stream ended")
        .expect("the election stream reported an error")
}

/// Up to `n` events of a stream, stopping early when none comes within
/// 2 s (so that a test shows what it got, not only that it waited).
async fn take_events(watch: &mut LeaderWatch, n: usize) -> Vec<ElectionEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(2), watch.next()).await {
            Ok(Some(e)) => got.push(e.expect("the election stream reported an error")),
            Ok(None) | Err(_) => break,
        }
    }
    got
}

fn event_revision(e: &ElectionEvent) -> Revision {
    match e {
        ElectionEvent::Leader { revision, .. }
        | ElectionEvent::Proclaimed { revision, .. }
        | ElectionEvent::NoLeader { revision }
        | ElectionEvent::Resynced { revision } => *revision,
        other => panic!("an event this test does not know: {other:?}"),
    }
}

/// The `Leader` event that reports `l` (with its campaign value) at `revision`.
fn leader_event(l: &Leadership, value: &str, revision: Revision) -> ElectionEvent {
    ElectionEvent::Leader {
        key: l.key().to_owned(),
        value: value.as_bytes().to_vec(),
        lease: l.lease(),
        token: l.fencing_token(),
        revision,
    }
}

/// Records every wire record of a client.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<WireRecord>>>);

impl Recorder {
    fn sink(&self) -> impl Fn(&WireRecord) + Send + Sync + 'static {
        let records = self.0.clone();
        move |r: &WireRecord| {
            records
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(r.clone());
        }
    }

    fn take(&self) -> Vec<WireRecord> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// etcd's own `etcdctl`: `ETCDCTL_BIN`, else `etcdctl` on `PATH`.
fn etcdctl(endpoint: &str) -> Command {
    let bin = std::env::var_os("ETCDCTL_BIN").unwrap_or_else(|| "etcdctl".into());
    let mut cmd = Command::new(bin);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A running `etcdctl` whose output lines arrive, with the instant each was
/// read, on a channel. Killed when dropped.
struct Etcdctl {
    child: Child,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
}

impl Etcdctl {
    fn spawn(endpoint: &str, args: &[&str]) -> Etcdctl {
        let mut child = etcdctl(endpoint)
            .args(args)
            .spawn()
            .expect("run etcdctl (set ETCDCTL_BIN or put etcdctl on PATH)");
        let stdout = child.stdout.take().expect("etcdctl's stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                // Blank lines are formatting, not output (versions differ).
                if !line.trim().is_empty() && tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Etcdctl { child, lines }
    }

    /// The next non-blank output line and when it was read.
    async fn line(&mut self) -> (Instant, String) {
        within("an etcdctl output line", WAIT, self.lines.recv())
            .await
            .expect("etcdctl ended its output")
    }

    /// The next output pair: a key line and its value line (the format of
    /// `etcdctl elect`, `elect -l` and `get`, in every version).
    async fn key_value(&mut self) -> (Instant, String, String) {
        let (at, key) = self.line().await;
        let (_, value) = self.line().await;
        (at, key, value)
    }

    fn has_printed(&mut self) -> bool {
        !self.lines.is_empty()
    }

    /// SIGINT: `etcdctl elect` and `lock` resign or unlock, then exit.
    async fn interrupt(&mut self) -> Instant {
        let pid = self.child.id().expect("etcdctl is running");
        let at = Instant::now();
        let status = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -INT {pid}");
        at
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        within("etcdctl exiting", WAIT, self.child.wait())
            .await
            .expect("wait for etcdctl")
    }
}

/// Every event under `{name}/` from revision `from` through `through`, read
/// with a watch of etcd's own history (no locker code involved).
async fn history(
    endpoint: &str,
    name: &str,
    from: Revision,
    through: Revision,
) -> Vec<mvccpb::Event> {
    let read = async {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect for the history");
        let mut watch = WatchClient::new(channel);
        let key = format!("{name}/").into_bytes();
        let mut range_end = key.clone();
        *range_end.last_mut().expect("non-empty") += 1;
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key,
                    range_end,
                    start_revision: from.0,
                    ..Default::default()
                },
            )),
        };
        // Keep the request side open: the watch lives as long as it.
        let requests = tokio_stream::iter([create]).chain(tokio_stream::pending());
        let mut stream = watch
            .watch(requests)
            .await
            .expect("open the history watch")
            .into_inner();
        let mut out: Vec<mvccpb::Event> = Vec::new();
        while out.last().is_none_or(|e| mod_rev(e) < through.0) {
            let resp = stream
                .message()
                .await
                .expect("read the history")
                .expect("the history watch ended");
            assert!(!resp.canceled, "history watch cancelled: {resp:?}");
            out.extend(resp.events);
        }
        out
    };
    within("read the history", WAIT, read).await
}

fn mod_rev(e: &mvccpb::Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// The events an exact observer must report for `history`, starting from
/// an empty election: a model of the rule written from scratch (the
/// leader is the live key with the lowest create revision), applied per
/// revision.
fn expected_events(history: &[mvccpb::Event]) -> Vec<ElectionEvent> {
    let mut live: BTreeMap<Vec<u8>, mvccpb::KeyValue> = BTreeMap::new();
    let lowest = |live: &BTreeMap<Vec<u8>, mvccpb::KeyValue>| {
        live.values().min_by_key(|kv| kv.create_revision).cloned()
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < history.len() {
        let rev = mod_rev(&history[i]);
        let before = lowest(&live);
        let mut put_keys = Vec::new();
        while i < history.len() && mod_rev(&history[i]) == rev {
            let ev = &history[i];
            let kv = ev.kv.clone().expect("an event with a key");
            if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                live.remove(&kv.key);
            } else {
                put_keys.push(kv.key.clone());
                live.insert(kv.key.clone(), kv);
            }
            i += 1;
        }
        let after = lowest(&live);
        let revision = Revision(rev);
        match (before, after) {
            (None, None) => {}
            (Some(_), None) => out.push(ElectionEvent::NoLeader { revision }),
            (b, Some(a)) => {
                let same = b
                    .as_ref()
                    .is_some_and(|b| b.key == a.key && b.create_revision == a.create_revision);
                if !same {
                    out.push(ElectionEvent::Leader {
                        key: String::from_utf8_lossy(&a.key).into_owned(),
                        value: a.value.clone(),
                        lease: LeaseId(a.lease),
                        token: Revision(a.create_revision),
                        revision,
                    });
                } else if put_keys.contains(&a.key) {
                    out.push(ElectionEvent::Proclaimed {
                        key: String::from_utf8_lossy(&a.key).into_owned(),
                        value: a.value.clone(),
                        token: Revision(a.create_revision),
                        revision,
                    });
                }
            }
        }
    }
    out
}

/// Asserts that two event sequences are equal, showing the first difference.
fn assert_same_events(seen: &[ElectionEvent], expected: &[ElectionEvent], what: &str) {
    if let Some(i) = (0..seen.len().max(expected.len())).find(|&i| seen.get(i) != expected.get(i)) {
        let from = i.saturating_sub(2);
        panic!(
            "{what}: first difference at event {i} of {} seen / {} expected\nseen:     {:#?}\nexpected: {:#?}",
            seen.len(),
            expected.len(),
            &seen[from.min(seen.len())..(i + 3).min(seen.len())],
            &expected[from.min(expected.len())..(i + 3).min(expected.len())],
        );
    }
}

/// Collects the events of `watch` in the background.
fn collect(
    mut watch: LeaderWatch,
) -> (Arc<Mutex<Vec<ElectionEvent>>>, tokio::task::JoinHandle<()>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let task = tokio::spawn(async move {
        while let Some(e) = watch.next().await {
            let e = e.expect("the election stream reported an error");
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(e);
        }
    });
    (events, task)
}

fn seen(events: &Arc<Mutex<Vec<ElectionEvent>>>) -> Vec<ElectionEvent> {
    events.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Waits until the collected events contain `l` becoming leader.
async fn wait_seen_leader(events: &Arc<Mutex<Vec<ElectionEvent>>>, token: Revision) {
    wait_until("the observer reports the marker leader", WAIT, || async {
        seen(events)
            .iter()
            .any(|e| matches!(e, ElectionEvent::Leader { token: t, .. } if *t == token))
    })
    .await;
}

// ---------------------------------------------------------------------------
// Campaign, resign, leader, fencing
// ---------------------------------------------------------------------------

/// With nobody campaigning `leader()` is None; a campaign on a free
/// election returns leadership after its acquire alone (no watch opened);
/// `leader()` reports it exactly; a second candidate waits until the first
/// resigns, then leads with a larger token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_election_is_won_at_once_and_the_next_candidate_leads_after_resign() {
    let etcd = start_etcd().await;
    let rec = Recorder::default();
    let a_client = within(
        "connect",
        WAIT,
        Client::builder()
            .endpoints(etcd.endpoints())
            .audit(rec.sink())
            .connect(),
    )
    .await
    .expect("connect");
    let b_client = connect(etcd.endpoints()).await;
    let name = "elect/basic";
    assert_eq!(leader(&a_client, name).await, None, "nobody campaigns yet");

    rec.take();
    let a = within("campaign", WAIT, a_client.campaign(name, "a").ttl(WAIT))
        .await
        .expect("campaign on a free election");
    let sent = rec.take();
    assert!(
        !sent
            .iter()
            .any(|r| r.kind == WireKind::StreamOpen && r.path == paths::WATCH),
        "a free campaign must not wait on anything: {sent:#?}"
    );
    assert_eq!(a.name(), name);
    assert_eq!(a.key(), format!("{name}/{}", a.lease()));
    assert_eq!(a.value(), b"a");
    assert!(!a.is_lost());
    assert_leads(&b_client, name, &a).await;

    let b = spawn_campaign(&b_client, name, "b", WAIT);
    wait_candidates(&b_client, name, 2).await;
    // B waits: leadership does not move while A leads.
    assert!(!b.is_finished(), "B returned while A leads");
    assert_leads(&b_client, name, &a).await;

    let resigned_at = Instant::now();
    within("resign", WAIT, a.resign()).await.expect("resign");
    let b = within("B's campaign", WAIT, b)
        .await
        .expect("B's task")
        .expect("B leads once A resigned");
    assert!(Instant::now() > resigned_at);
    assert_leads(&a_client, name, &b).await;
    assert_eq!(b.value(), b"b");

    within("resign", WAIT, b.resign()).await.expect("resign");
    assert_eq!(
        leader(&a_client, name).await,
        None,
        "no leader after both resigned"
    );
    assert!(candidates(&a_client, name).await.is_empty());
}

/// Candidates on leases of their own and on sessions queue in arrival
/// order; each leads in turn and every fencing token is larger than the one
/// before; at each step `leader()` reports the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_lead_in_arrival_order_and_fencing_tokens_only_grow() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "elect/order";
    let first = within("campaign", WAIT, client.campaign(name, "first"))
        .await
        .expect("campaign");
    let mut waiting = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..4 {
        let c = connect(etcd.endpoints()).await;
        let value = format!("c{i}");
        let task = if i % 2 == 0 {
            tokio::spawn(async move { c.campaign(name, value).await })
        } else {
            let s = within("session", WAIT, c.session(WAIT))
                .await
                .expect("session");
            let request = s.campaign(name, value);
            sessions.push(s);
            tokio::spawn(request.into_future())
        };
        waiting.push(task);
        // Arrival order is the order of their keys: queue one at a time.
        wait_candidates(&client, name, i + 2).await;
    }
    let queued = candidate_keys(&client, name).await;

    let mut tokens = vec![first.fencing_token()];
    let mut current = first;
    for (i, task) in waiting.into_iter().enumerate() {
        assert_leads(&client, name, &current).await;
        within("resign", WAIT, current.resign())
            .await
            .expect("resign");
        let next = within("the next campaign", WAIT, task)
            .await
            .expect("task")
            .expect("the next candidate leads");
        assert_eq!(next.key(), queued[i + 1], "arrival order");
        assert_eq!(next.value(), format!("c{i}").as_bytes());
        assert!(
            next.fencing_token() > *tokens.last().expect("a token"),
            "tokens only grow: {tokens:?} then {}",
            next.fencing_token()
        );
        tokens.push(next.fencing_token());
        current = next;
    }
    within("resign", WAIT, current.resign())
        .await
        .expect("resign");
    assert_eq!(leader(&client, name).await, None);
}

// ---------------------------------------------------------------------------
// Proclaim
// ---------------------------------------------------------------------------

/// A proclamation is a put of the leader's key: an observer reports it as
/// `Proclaimed` at the revision proclaim returned, and `leader()` shows the
/// new value with the same token and lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proclamation_is_seen_by_observers_and_by_leader() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let watcher = connect(etcd.endpoints()).await;
    let name = "elect/proclaim";
    let mut events = within("observe", WAIT, watcher.observe(name))
        .await
        .expect("observe");
    let ElectionEvent::NoLeader { revision: start } = next_event(&mut events).await else {
        panic!("an empty election starts with NoLeader")
    };

    let mut l = within("campaign", WAIT, client.campaign(name, "v0"))
        .await
        .expect("campaign");
    assert_eq!(
        next_event(&mut events).await,
        leader_event(&l, "v0", l.fencing_token())
    );
    assert!(l.fencing_token() > start);

    let mut last = l.fencing_token();
    for v in ["v1", "v2", "v2"] {
        let at = within("proclaim", WAIT, l.proclaim(v))
            .await
            .expect("proclaim");
        assert!(at > last, "a proclamation is a new revision");
        last = at;
        assert_eq!(l.value(), v.as_bytes());
        assert_eq!(
            next_event(&mut events).await,
            ElectionEvent::Proclaimed {
                key: l.key().to_owned(),
                value: v.as_bytes().to_vec(),
                token: l.fencing_token(),
                revision: at,
            },
            "every proclamation, even of the same value"
        );
        assert_leads(&client, name, &l).await;
    }
    let resigned = l.fencing_token();
    within("resign", WAIT, l.resign()).await.expect("resign");
    assert!(matches!(
        next_event(&mut events).await,
        ElectionEvent::NoLeader { revision } if revision > resigned
    ));
}

/// A leader whose key was deleted behind its back (on a session), or whose
/// lease was revoked (own lease), is refused a proclamation with
/// `NotLeader` and nothing is written; once its lost signal fired, the
/// refusal is the loss error, and nothing is sent either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proclamation_after_losing_leadership_is_refused_and_writes_nothing() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let name = "elect/proclaim-refused";

    // On a session: the key is deleted by someone else.
    let session = within("session", WAIT, client.session(WAIT))
        .await
        .expect("session");
    let mut l = within("campaign", WAIT, session.campaign(name, "s0"))
        .await
        .expect("campaign");
    let key = l.key().to_owned();
    within("delete", WAIT, other.delete(&key))
        .await
        .expect("delete");
    match within("proclaim", WAIT, l.proclaim("s1")).await {
        Err(Error::NotLeader { key: k }) => assert_eq!(k, key),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert_eq!(
        within("get", WAIT, other.get(&key)).await.expect("get"),
        None,
        "a refused proclamation must not write the key again"
    );
    assert_eq!(leader(&other, name).await, None);
    // Its guarded txn is refused the same way.
    let put = pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: b"elect/data".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        })),
    };
    assert!(matches!(
        within("txn", WAIT, l.txn(vec![put])).await,
        Err(e) if e.is_lost()
    ));
    assert_eq!(
        within("get", WAIT, other.get("elect/data"))
            .await
            .expect("get"),
        None
    );
    let r = within("resign", WAIT, l.resign()).await;
    assert!(
        matches!(r, Err(ref e) if e.is_lost()),
        "resign reports the loss: {r:?}"
    );
    within("close", WAIT, session.close()).await.expect("close");

    // Own lease, revoked by someone else: refused at once (the key is
    // gone), then by the lost signal once the keepalive heard of it.
    let mut l = within(
        "campaign",
        WAIT,
        client.campaign(name, "o0").ttl(Duration::from_secs(3)),
    )
    .await
    .expect("campaign");
    let key = l.key().to_owned();
    assert!(
        within("revoke", WAIT, other.lease_revoke(l.lease()))
            .await
            .expect("revoke")
    );
    match within("proclaim", WAIT, l.proclaim("o1")).await {
        Err(Error::NotLeader { key: k }) => assert_eq!(k, key),
        // The keepalive may have heard of it already.
        Err(Error::LeaseExpired { lease }) => assert_eq!(lease, l.lease()),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    within("the lost signal", WAIT, l.lost()).await;
    assert!(l.is_lost());
    match within("proclaim", WAIT, l.proclaim("o2")).await {
        Err(Error::LeaseExpired { lease }) => assert_eq!(lease, l.lease()),
        // The lost signal follows the key too: the revoke's deletion event
        // may come before the keepalive's answer.
        Err(Error::NotLeader { key: k }) => assert_eq!(k, key),
        other => panic!("expected LeaseExpired or NotLeader after the lost signal, got {other:?}"),
    }
    assert_eq!(
        within("get", WAIT, other.get(&key)).await.expect("get"),
        None
    );
    assert_eq!(leader(&other, name).await, None);
    let r = within("resign", WAIT, l.resign()).await;
    assert!(
        matches!(r, Err(ref e) if e.is_lost()),
        "resign reports the loss: {r:?}"
    );
}

// ---------------------------------------------------------------------------
// No zombie leader (etcd #19597)
// ---------------------------------------------------------------------------

/// A waiting candidate whose lease is revoked (its keepalive has not yet
/// noticed: a 30 s TTL) is woken when the leader resigns and must not
/// return leadership; the next live candidate leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_whose_lease_was_revoked_while_waiting_never_leads() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "elect/zombie-revoked";
    let ttl = Duration::from_secs(30);
    let a = within("campaign", WAIT, client.campaign(name, "A"))
        .await
        .expect("campaign");
    let b = spawn_campaign(&connect(etcd.endpoints()).await, name, "B", ttl);
    wait_candidates(&client, name, 2).await;
    let c = spawn_campaign(&connect(etcd.endpoints()).await, name, "C", ttl);
    wait_candidates(&client, name, 3).await;
    let queued = candidates(&client, name).await;
    let (b_key, c_key) = (queued[1].key_str(), queued[2].key_str());
    let b_lease = queued[1].lease.expect("B's key has a lease");

    assert!(
        within("revoke", WAIT, client.lease_revoke(b_lease))
            .await
            .expect("revoke B's lease")
    );
    wait_candidates_are(&client, name, &[a.key(), &c_key]).await;
    within("resign", WAIT, a.resign()).await.expect("resign");

    match within("B's campaign", WAIT, b).await.expect("B's task") {
        Ok(l) => panic!("a candidate whose lease was revoked leads: {l:?}"),
        Err(e) => assert!(e.is_lost(), "expected a loss error, got {e:?}"),
    }
    let c = within("C's campaign", WAIT, c)
        .await
        .expect("C's task")
        .expect("C leads");
    assert_eq!(c.key(), c_key);
    assert_leads(&client, name, &c).await;
    assert!(!candidate_keys(&client, name).await.contains(&b_key));
    within("resign", WAIT, c.resign()).await.expect("resign");
}

/// A waiting candidate cut off from etcd until its lease expired never
/// returns leadership, even after its connection heals; the next live
/// candidate (queued behind it) leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_whose_lease_expired_while_waiting_never_leads() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let cut_off = connect_through(&proxy).await;
    let name = "elect/zombie-expired";
    let a = within("campaign", WAIT, client.campaign(name, "A"))
        .await
        .expect("campaign");
    let b = spawn_campaign(&cut_off, name, "B", Duration::from_secs(2));
    wait_candidates(&client, name, 2).await;
    let c = spawn_campaign(&connect(etcd.endpoints()).await, name, "C", WAIT);
    wait_candidates(&client, name, 3).await;
    let queued = candidates(&client, name).await;
    let (b_key, c_key) = (queued[1].key_str(), queued[2].key_str());

    proxy.set_mode(ProxyMode::Blackhole);
    wait_candidates_are(&client, name, &[a.key(), &c_key]).await;
    within("resign", WAIT, a.resign()).await.expect("resign");
    proxy.set_mode(ProxyMode::Pass);

    match within("B's campaign", WAIT, b).await.expect("B's task") {
        Ok(l) => panic!("a candidate whose lease expired leads: {l:?}"),
        Err(e) => assert!(
            e.is_lost() || e.is_connectivity(),
            "expected a loss error, got {e:?}"
        ),
    }
    let c = within("C's campaign", WAIT, c)
        .await
        .expect("C's task")
        .expect("C leads");
    assert_eq!(c.key(), c_key);
    assert_leads(&client, name, &c).await;
    assert!(!candidate_keys(&client, name).await.contains(&b_key));
}

// ---------------------------------------------------------------------------
// Timeout and cancellation
// ---------------------------------------------------------------------------

/// A campaign that times out, on its own lease or on a session, fails with
/// `AcquireTimeout` and leaves no candidate key; the session can campaign
/// again afterwards and wins once the leader resigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_that_times_out_leaves_no_candidate_key() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let name = "elect/timeout";
    let a = within("campaign", WAIT, client.campaign(name, "A"))
        .await
        .expect("campaign");
    let limit = Duration::from_millis(300);

    let started = Instant::now();
    let r = within("campaign", WAIT, other.campaign(name, "B").timeout(limit)).await;
    assert!(matches!(r, Err(Error::AcquireTimeout { .. })), "{r:?}");
    assert!(started.elapsed() >= limit);
    assert_eq!(candidate_keys(&client, name).await, [a.key()]);

    let session = within("session", WAIT, other.session(WAIT))
        .await
        .expect("session");
    let r = within("campaign", WAIT, session.campaign(name, "S").timeout(limit)).await;
    assert!(matches!(r, Err(Error::AcquireTimeout { .. })), "{r:?}");
    assert_eq!(candidate_keys(&client, name).await, [a.key()]);
    assert!(session.lost_reason().is_none(), "the session lives on");

    let again = tokio::spawn(session.campaign(name, "S2").into_future());
    wait_candidates(&client, name, 2).await;
    within("resign", WAIT, a.resign()).await.expect("resign");
    let s = within("the session's campaign", WAIT, again)
        .await
        .expect("task")
        .expect("the session leads");
    assert_eq!(s.lease(), session.lease());
    assert_leads(&client, name, &s).await;
}

/// A campaign future dropped while it waits, on its own lease or on a
/// session, leaves no candidate key behind; the session can campaign again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_campaign_leaves_no_candidate_key() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let name = "elect/cancel";
    let a = within("campaign", WAIT, client.campaign(name, "A"))
        .await
        .expect("campaign");

    let own = spawn_campaign(&other, name, "B", WAIT);
    wait_candidates(&client, name, 2).await;
    own.abort();
    wait_candidates_are(&client, name, &[a.key()]).await;

    let session = within("session", WAIT, other.session(WAIT))
        .await
        .expect("session");
    let pending = tokio::spawn(session.campaign(name, "S").into_future());
    wait_candidates(&client, name, 2).await;
    pending.abort();
    wait_candidates_are(&client, name, &[a.key()]).await;

    let again = tokio::spawn(session.campaign(name, "S2").into_future());
    wait_candidates(&client, name, 2).await;
    within("resign", WAIT, a.resign()).await.expect("resign");
    let s = within("the session's campaign", WAIT, again)
        .await
        .expect("task")
        .expect("the session leads after its cancelled campaign");
    assert_eq!(s.value(), b"S2");
    assert_leads(&client, name, &s).await;
}

// ---------------------------------------------------------------------------
// Interop with etcdctl
// ---------------------------------------------------------------------------

/// While locker leads, `etcdctl elect NAME prop` queues and prints nothing;
/// once locker resigns etcdctl prints its key and proposal, and locker's
/// `leader()` reports it. Interrupted, etcdctl resigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_waits_while_locker_leads() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "interop/elect-a";
    let l = within("campaign", WAIT, client.campaign(name, "locker"))
        .await
        .expect("campaign");
    let mut e = Etcdctl::spawn(&etcd.endpoint(0), &["elect", name, "etcdctl-prop"]);
    wait_candidates(&client, name, 2).await;
    let e_key = candidates(&client, name).await[1].key_str();
    assert_leads(&client, name, &l).await;

    let resigned_at = Instant::now();
    within("resign", WAIT, l.resign()).await.expect("resign");
    let (printed_at, key, value) = e.key_value().await;
    assert!(
        printed_at > resigned_at,
        "etcdctl said it leads before locker resigned"
    );
    assert_eq!(key, e_key);
    assert_eq!(value, "etcdctl-prop");
    let h = leader(&client, name).await.expect("etcdctl leads");
    assert_eq!(
        (h.key.as_str(), h.value_str().as_str()),
        (key.as_str(), "etcdctl-prop")
    );

    e.interrupt().await;
    e.wait_exit().await;
    wait_candidates(&client, name, 0).await;
}

/// While `etcdctl elect` leads (and locker's observer reports it), locker's
/// campaign waits; it returns only after etcdctl was interrupted (and
/// resigned), with a larger token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locker_waits_while_etcdctl_elect_leads() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "interop/elect-b";
    let mut events = within("observe", WAIT, client.observe(name))
        .await
        .expect("observe");
    next_event(&mut events).await;
    let mut e = Etcdctl::spawn(&etcd.endpoint(0), &["elect", name, "etcdctl-prop"]);
    let (_, e_key, value) = e.key_value().await;
    assert_eq!(value, "etcdctl-prop");
    let h = leader(&client, name).await.expect("etcdctl leads");
    assert_eq!(h.key, e_key);
    // locker's observer sees etcdctl's leader and proposal.
    assert_eq!(
        next_event(&mut events).await,
        ElectionEvent::Leader {
            key: e_key.clone(),
            value: b"etcdctl-prop".to_vec(),
            lease: h.lease,
            token: h.fencing_token,
            revision: h.fencing_token,
        }
    );

    let campaign = spawn_campaign(&client, name, "locker", WAIT);
    wait_candidates(&client, name, 2).await;
    assert!(
        !campaign.is_finished(),
        "locker returned while etcdctl leads"
    );
    let interrupted_at = e.interrupt().await;
    let l = within("locker's campaign", WAIT, campaign)
        .await
        .expect("task")
        .expect("locker leads once etcdctl resigned");
    assert!(Instant::now() > interrupted_at);
    assert!(l.fencing_token() > h.fencing_token);
    assert_leads(&client, name, &l).await;
    e.wait_exit().await;
    within("resign", WAIT, l.resign()).await.expect("resign");
}

/// `etcdctl elect -l NAME` prints locker's leader and each of its
/// proclamations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_listen_prints_lockers_proclamations() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "interop/listen";
    let mut l = within("campaign", WAIT, client.campaign(name, "p0"))
        .await
        .expect("campaign");
    let mut e = Etcdctl::spawn(&etcd.endpoint(0), &["elect", "-l", name]);
    let (_, key, value) = e.key_value().await;
    assert_eq!((key.as_str(), value.as_str()), (l.key(), "p0"));
    for v in ["p1", "p2", "p3"] {
        within("proclaim", WAIT, l.proclaim(v))
            .await
            .expect("proclaim");
        let (_, key, value) = e.key_value().await;
        assert_eq!((key.as_str(), value.as_str()), (l.key(), v));
    }
    assert!(!e.has_printed(), "etcdctl printed more than was proclaimed");
    within("resign", WAIT, l.resign()).await.expect("resign");
}

/// An `etcdctl lock NAME` holder is a candidate key like any other: a
/// campaign waits until etcdctl unlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcdctl_lock_holder_blocks_a_campaign() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "interop/lock";
    let mut e = Etcdctl::spawn(&etcd.endpoint(0), &["lock", name]);
    let (_, e_key) = e.line().await;
    assert!(e_key.starts_with(&format!("{name}/")), "{e_key:?}");
    assert_eq!(leader(&client, name).await.expect("held").key, e_key);

    let campaign = spawn_campaign(&client, name, "locker", WAIT);
    wait_candidates(&client, name, 2).await;
    assert!(
        !campaign.is_finished(),
        "a campaign won while etcdctl holds the lock"
    );
    let interrupted_at = e.interrupt().await;
    let l = within("locker's campaign", WAIT, campaign)
        .await
        .expect("task")
        .expect("locker leads once etcdctl unlocked");
    assert!(Instant::now() > interrupted_at);
    assert_leads(&client, name, &l).await;
    e.wait_exit().await;
}

// ---------------------------------------------------------------------------
// Loss
// ---------------------------------------------------------------------------

/// A leader cut off from etcd by a blackhole: its `lost()` fires before the
/// next candidate is elected; the next leader's token is larger; the old
/// leader's proclamation is refused and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_loses_before_the_next_is_elected() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let cut_off = connect_through(&proxy).await;
    let name = "elect/cut-off";
    let a = within(
        "campaign",
        WAIT,
        cut_off.campaign(name, "A").ttl(Duration::from_secs(2)),
    )
    .await
    .expect("campaign");
    let a_token = a.fencing_token();
    let next = spawn_campaign(&client, name, "B", WAIT);
    wait_candidates(&client, name, 2).await;

    let lost = tokio::spawn(async move {
        let reason = a.lost().await;
        (Instant::now(), reason, a)
    });
    proxy.set_mode(ProxyMode::Blackhole);
    let b = within("B's campaign", WAIT, next)
        .await
        .expect("task")
        .expect("B leads once A's lease expired");
    let elected_at = Instant::now();
    let (lost_at, reason, mut a) = within("A's lost signal", WAIT, lost).await.expect("task");
    assert!(
        lost_at < elected_at,
        "A lost ({reason:?}) {:?} after B was elected",
        lost_at - elected_at
    );
    assert!(b.fencing_token() > a_token, "tokens only grow");
    assert!(a.is_lost());
    let r = within("proclaim", WAIT, a.proclaim("A2")).await;
    assert!(matches!(r, Err(ref e) if e.is_lost()), "{r:?}");
    assert_leads(&client, name, &b).await;
    proxy.set_mode(ProxyMode::Pass);
    within("resign", WAIT, b.resign()).await.expect("resign");
}

// ---------------------------------------------------------------------------
// Observe
// ---------------------------------------------------------------------------

/// Four candidates on sessions cycle campaign → proclaim → resign, 50 times
/// each (200 leaderships), while an observer records every event (its
/// connection cut four times along the way). The
/// events are then checked against etcd's own history of the election read
/// with a raw watch: none missed, none duplicated, none out of order, each
/// leader the lowest live key at its revision, every proclamation there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_under_churn_matches_etcds_history_exactly() {
    const CANDIDATES: usize = 4;
    const ROUNDS: usize = 50;
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let watcher = connect_through(&proxy).await;
    let name = "elect/churn";
    let mut watch = within("observe", WAIT, watcher.observe(name))
        .await
        .expect("observe");
    let ElectionEvent::NoLeader { revision: start } = next_event(&mut watch).await else {
        panic!("an empty election starts with NoLeader")
    };
    let (events, collector) = collect(watch);

    let leading = Arc::new(AtomicUsize::new(0));
    let proclaimed = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..CANDIDATES {
        let candidate = connect(etcd.endpoints()).await;
        let session = within("session", WAIT, candidate.session(WAIT))
            .await
            .expect("session");
        let (leading, proclaimed) = (leading.clone(), proclaimed.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let mut l = within(
                    "campaign",
                    WAIT,
                    session.campaign(name, format!("c{c}r{round}")),
                )
                .await
                .unwrap_or_else(|e| panic!("candidate {c} round {round}: {e}"));
                assert_eq!(leading.fetch_add(1, Ordering::SeqCst), 0, "two leaders");
                let value = format!("c{c}r{round}-proclaimed");
                let at = within("proclaim", WAIT, l.proclaim(value.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("candidate {c} round {round} proclaim: {e}"));
                proclaimed.lock().unwrap_or_else(|e| e.into_inner()).push((
                    at,
                    l.key().to_owned(),
                    value,
                ));
                leading.fetch_sub(1, Ordering::SeqCst);
                within("resign", WAIT, l.resign())
                    .await
                    .unwrap_or_else(|e| panic!("candidate {c} round {round} resign: {e}"));
            }
            within("close", WAIT, session.close()).await.expect("close");
        }));
    }
    // Cut the observer's connection four times along the way: it resumes
    // by revision each time.
    for n in [30, 70, 110, 150] {
        wait_until(
            "the churn has progressed",
            Duration::from_secs(30),
            || async { proclaimed.lock().unwrap_or_else(|e| e.into_inner()).len() >= n },
        )
        .await;
        proxy.cut();
    }
    for (c, task) in tasks.into_iter().enumerate() {
        within("a candidate finishing", Duration::from_secs(60), task)
            .await
            .unwrap_or_else(|e| panic!("candidate {c} failed: {e}"));
    }
    // A last leader marks the end of the history.
    let marker = within("campaign", WAIT, client.campaign(name, "marker"))
        .await
        .expect("campaign");
    wait_seen_leader(&events, marker.fencing_token()).await;
    collector.abort();
    let seen = seen(&events);

    let history = history(
        &etcd.endpoint(0),
        name,
        Revision(start.0 + 1),
        marker.fencing_token(),
    )
    .await;
    let expected = expected_events(&history);
    assert_same_events(&seen, &expected, "observed vs etcd's history");
    assert!(
        proxy.connections() >= 5,
        "the observer reconnected after each cut"
    );

    let leaders: Vec<Revision> = seen
        .iter()
        .filter_map(|e| match e {
            ElectionEvent::Leader { token, .. } => Some(*token),
            _ => None,
        })
        .collect();
    assert_eq!(
        leaders.len(),
        CANDIDATES * ROUNDS + 1,
        "every leadership reported"
    );
    assert!(leaders.windows(2).all(|p| p[0] < p[1]), "tokens only grow");
    let revisions: Vec<Revision> = seen.iter().map(event_revision).collect();
    assert!(
        revisions.windows(2).all(|p| p[0] < p[1]),
        "in revision order, once each"
    );
    let proclaimed = std::mem::take(&mut *proclaimed.lock().unwrap_or_else(|e| e.into_inner()));
    assert_eq!(proclaimed.len(), CANDIDATES * ROUNDS);
    for (at, key, value) in proclaimed {
        assert!(
            seen.iter().any(|e| matches!(e,
                ElectionEvent::Proclaimed { key: k, value: v, revision, .. }
                    if *k == key && *v == value.as_bytes() && *revision == at)),
            "proclamation {value:?} at {at} was not reported"
        );
    }
    within("resign", WAIT, marker.resign())
        .await
        .expect("resign");
}

/// An observer whose connection is cut while leadership changes and etcd
/// compacts the history reports `Resynced`, then the state after it (the
/// new leader with its latest proclamation), then every later change; an
/// `observe_from` of a compacted revision starts with `Resynced` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_resyncs_across_a_compaction_and_reports_the_state_after_it() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let watcher = connect_through(&proxy).await;
    let name = "elect/compacted";
    let mut watch = within("observe", WAIT, watcher.observe(name))
        .await
        .expect("observe");
    let ElectionEvent::NoLeader { revision: start } = next_event(&mut watch).await else {
        panic!("an empty election starts with NoLeader")
    };
    let mut a = within("campaign", WAIT, client.campaign(name, "a0"))
        .await
        .expect("campaign");
    assert_eq!(
        next_event(&mut watch).await,
        leader_event(&a, "a0", a.fencing_token())
    );

    // Away: A proclaims and resigns, B leads and proclaims, C queues.
    proxy.set_mode(ProxyMode::Refuse);
    within("proclaim", WAIT, a.proclaim("a1"))
        .await
        .expect("proclaim");
    let b = spawn_campaign(&client, name, "b0", WAIT);
    wait_candidates(&client, name, 2).await;
    within("resign", WAIT, a.resign()).await.expect("resign");
    let mut b = within("B's campaign", WAIT, b)
        .await
        .expect("task")
        .expect("B leads");
    within("proclaim", WAIT, b.proclaim("b1"))
        .await
        .expect("proclaim");
    let c = spawn_campaign(&client, name, "c0", WAIT);
    wait_candidates(&client, name, 2).await;
    let compacted = within("status", WAIT, client.status())
        .await
        .expect("status")
        .revision;
    let out = etcdctl(&etcd.endpoint(0))
        .args(["compact", &compacted.0.to_string()])
        .output()
        .await
        .expect("etcdctl compact");
    assert!(out.status.success(), "etcdctl compact: {out:?}");
    proxy.set_mode(ProxyMode::Pass);

    let ElectionEvent::Resynced { revision } = next_event(&mut watch).await else {
        panic!("a compacted resume point must be said")
    };
    assert!(revision >= compacted);
    assert_eq!(
        next_event(&mut watch).await,
        leader_event(&b, "b1", revision),
        "the state after the resync: B with its latest value"
    );
    assert_leads(&client, name, &b).await;

    // Later changes are reported one by one again.
    within("resign", WAIT, b.resign()).await.expect("resign");
    let c = within("C's campaign", WAIT, c)
        .await
        .expect("task")
        .expect("C leads");
    assert_eq!(
        next_event(&mut watch).await,
        leader_event(&c, "c0", {
            // C became leader at B's resign: the revision after C's key.
            let (_, now) = within("read", WAIT, client.get_prefix(format!("{name}/")))
                .await
                .expect("read");
            now
        })
    );

    // Resuming from a compacted revision resyncs as well.
    let mut from = within("observe_from", WAIT, watcher.observe_from(name, start))
        .await
        .expect("observe_from a compacted revision");
    let ElectionEvent::Resynced { revision } = next_event(&mut from).await else {
        panic!("observe_from a compacted revision must say Resynced")
    };
    assert_eq!(
        next_event(&mut from).await,
        leader_event(&c, "c0", revision)
    );
    within("resign", WAIT, c.resign()).await.expect("resign");
}

/// `observe_from(rev)` for each revision an observer reported: the first
/// event is the state at `rev`, then exactly the events after `rev`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_from_a_revision_resumes_exactly_after_it() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "elect/from";
    let watch = within("observe", WAIT, client.observe(name))
        .await
        .expect("observe");
    let (events, collector) = collect(watch);

    let mut a = within("campaign", WAIT, client.campaign(name, "a0"))
        .await
        .expect("campaign");
    within("proclaim", WAIT, a.proclaim("a1"))
        .await
        .expect("proclaim");
    let b = spawn_campaign(&client, name, "b0", WAIT);
    wait_candidates(&client, name, 2).await;
    within("resign", WAIT, a.resign()).await.expect("resign");
    let mut b = within("B", WAIT, b).await.expect("task").expect("B leads");
    within("proclaim", WAIT, b.proclaim("b1"))
        .await
        .expect("proclaim");
    within("resign", WAIT, b.resign()).await.expect("resign");
    let marker = within("campaign", WAIT, client.campaign(name, "marker"))
        .await
        .expect("campaign");
    wait_seen_leader(&events, marker.fencing_token()).await;
    collector.abort();
    let all = seen(&events);
    assert_eq!(all.len(), 7, "{all:#?}");

    for (k, event) in all.iter().enumerate() {
        let rev = event_revision(event);
        // The state at `rev`: the last leader (or none) with its last value.
        let mut state = None;
        for e in &all[..=k] {
            match e {
                ElectionEvent::Leader { .. } => state = Some(e.clone()),
                ElectionEvent::NoLeader { .. } => state = None,
                ElectionEvent::Proclaimed { value: v, .. } => {
                    if let Some(ElectionEvent::Leader { value, .. }) = &mut state {
                        *value = v.clone();
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let first = match state {
            Some(ElectionEvent::Leader {
                key,
                value,
                lease,
                token,
                ..
            }) => ElectionEvent::Leader {
                key,
                value,
                lease,
                token,
                revision: rev,
            },
            _ => ElectionEvent::NoLeader { revision: rev },
        };
        let mut from = within("observe_from", WAIT, client.observe_from(name, rev))
            .await
            .expect("observe_from");
        let mut got = vec![next_event(&mut from).await];
        for _ in k + 1..all.len() {
            got.push(next_event(&mut from).await);
        }
        let mut expected = vec![first];
        expected.extend_from_slice(&all[k + 1..]);
        assert_same_events(&got, &expected, &format!("observe_from({rev})"));
    }
    within("resign", WAIT, marker.resign())
        .await
        .expect("resign");
}

// ---------------------------------------------------------------------------
// Resume after a restart
// ---------------------------------------------------------------------------

/// A process that crashed while leading (simulated: its client is cut off
/// and its leadership forgotten, never resigned) is replaced by a new
/// process with the same lease id: its campaign returns at once with the
/// same key and token; with another proposal the value is proclaimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_resumes_its_leadership_with_the_same_token() {
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let crashed = connect_through(&proxy).await;
    let name = "elect/resume";
    let mut watch = within("observe", WAIT, direct.observe(name))
        .await
        .expect("observe");
    next_event(&mut watch).await;

    let first = within(
        "campaign",
        WAIT,
        crashed.campaign(name, "v1").ttl(Duration::from_secs(20)),
    )
    .await
    .expect("campaign");
    let (key, lease, token) = (first.key().to_owned(), first.lease(), first.fencing_token());
    assert_eq!(
        next_event(&mut watch).await,
        leader_event(&first, "v1", token)
    );
    let waiting = spawn_campaign(&direct, name, "other", WAIT);
    wait_candidates(&direct, name, 2).await;
    // The first process dies: nothing more from it, no resign.
    proxy.set_mode(ProxyMode::Refuse);
    std::mem::forget(first);

    // Restarted with the same proposal: leads at once, nothing written.
    let second = connect(etcd.endpoints()).await;
    let session = within("resume_session", WAIT, second.resume_session(lease))
        .await
        .expect("resume the lease");
    let kv_before = within("get", WAIT, direct.get(&key)).await.expect("get");
    let resumed = within("campaign", WAIT, session.campaign(name, "v1"))
        .await
        .expect("the resumed campaign leads at once");
    assert_eq!(resumed.key(), key);
    assert_eq!(
        resumed.fencing_token(),
        token,
        "the same place, the same token"
    );
    assert_eq!(resumed.value(), b"v1");
    assert_eq!(
        within("get", WAIT, direct.get(&key)).await.expect("get"),
        kv_before,
        "nothing written for the same proposal"
    );
    assert_leads(&direct, name, &resumed).await;
    assert!(!waiting.is_finished(), "the other candidate still waits");

    // Restarted again with a new proposal: proclaimed.
    std::mem::forget(resumed);
    std::mem::forget(session);
    let third = connect(etcd.endpoints()).await;
    let session = within("resume_session", WAIT, third.resume_session(lease))
        .await
        .expect("resume the lease");
    let resumed = within("campaign", WAIT, session.campaign(name, "v2"))
        .await
        .expect("the resumed campaign leads at once");
    assert_eq!(resumed.fencing_token(), token);
    assert_eq!(resumed.value(), b"v2");
    assert_leads(&direct, name, &resumed).await;
    let ElectionEvent::Proclaimed {
        key: k,
        value,
        token: t,
        ..
    } = next_event(&mut watch).await
    else {
        panic!("the new proposal must be proclaimed")
    };
    assert_eq!(
        (k.as_str(), value.as_slice(), t),
        (key.as_str(), &b"v2"[..], token)
    );

    within("resign", WAIT, resumed.resign())
        .await
        .expect("resign");
    let other = within("the other campaign", WAIT, waiting)
        .await
        .expect("task")
        .expect("the other candidate leads");
    assert!(other.fencing_token() > token);
    within("close", WAIT, session.close()).await.expect("close");
}

/// A restarted process whose candidate key was still waiting keeps its
/// place in the queue: a candidate that queued after it leads only after
/// it; and a lease that is gone cannot be resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_waiting_candidate_keeps_its_place() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "elect/resume-waiting";
    let a = within("campaign", WAIT, client.campaign(name, "A"))
        .await
        .expect("campaign");
    // A candidate key left by a process that died while waiting: a key
    // `{name}/{lease hex}` on its lease, as any candidate writes it.
    let (lease, _) = within("grant", WAIT, client.lease_grant(Duration::from_secs(20)))
        .await
        .expect("grant");
    let key = format!("{name}/{lease}");
    let put = pb::TxnRequest {
        compare: vec![],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.clone().into_bytes(),
                value: b"old".to_vec(),
                lease: lease.0,
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let token = Revision(
        within("put", WAIT, client.txn_raw(put))
            .await
            .expect("put")
            .header
            .expect("header")
            .revision,
    );
    let later = spawn_campaign(&connect(etcd.endpoints()).await, name, "later", WAIT);
    wait_candidates(&client, name, 3).await;

    let restarted = connect(etcd.endpoints()).await;
    let session = within("resume_session", WAIT, restarted.resume_session(lease))
        .await
        .expect("resume");
    let resumed = tokio::spawn(session.campaign(name, "new").into_future());
    within("resign", WAIT, a.resign()).await.expect("resign");
    let resumed = within("the resumed campaign", WAIT, resumed)
        .await
        .expect("task")
        .expect("the resumed candidate leads in its old place");
    assert_eq!(resumed.key(), key);
    assert_eq!(resumed.fencing_token(), token);
    assert_eq!(resumed.value(), b"new", "the new proposal is proclaimed");
    assert_leads(&client, name, &resumed).await;
    assert!(!later.is_finished(), "the later candidate waits for it");
    within("resign", WAIT, resumed.resign())
        .await
        .expect("resign");
    let later = within("the later campaign", WAIT, later)
        .await
        .expect("task")
        .expect("the later candidate leads");
    assert!(later.fencing_token() > token);

    let (gone, _) = within("grant", WAIT, client.lease_grant(Duration::from_secs(5)))
        .await
        .expect("grant");
    assert!(
        within("revoke", WAIT, client.lease_revoke(gone))
            .await
            .expect("revoke")
    );
    let r = within("resume_session", WAIT, restarted.resume_session(gone)).await;
    assert!(
        matches!(r, Err(Error::LeaseExpired { lease }) if lease == gone),
        "{r:?}"
    );
    within("close", WAIT, session.close()).await.expect("close");
}

// ---------------------------------------------------------------------------
// Observe, continued
// ---------------------------------------------------------------------------

/// `observe_from(Revision(0))` resumes after revision 0, before anything
/// was written: it starts with no leader and replays the whole history,
/// exactly as etcd recorded it (and never reports a long-gone candidate as
/// the leader on top of today's state). A negative revision is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_from_revision_zero_replays_the_whole_history() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "elect/from-zero";
    let mut a = within("campaign", WAIT, client.campaign(name, "a0"))
        .await
        .expect("campaign");
    within("proclaim", WAIT, a.proclaim("a1"))
        .await
        .expect("proclaim");
    within("resign", WAIT, a.resign()).await.expect("resign");
    let b = within("campaign", WAIT, client.campaign(name, "b0"))
        .await
        .expect("campaign");

    let mut from = within("observe_from", WAIT, client.observe_from(name, Revision(0)))
        .await
        .expect("observe_from(0)");
    let history = history(&etcd.endpoint(0), name, Revision(1), b.fencing_token()).await;
    let mut expected = vec![ElectionEvent::NoLeader {
        revision: Revision(0),
    }];
    expected.extend(expected_events(&history));
    let got = take_events(&mut from, expected.len()).await;
    assert_same_events(&got, &expected, "observe_from(0)");

    let r = within(
        "observe_from",
        WAIT,
        client.observe_from(name, Revision(-1)),
    )
    .await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------
// Handover
// ---------------------------------------------------------------------------

/// A leadership dropped without resign is released in the background: the
/// next candidate leads promptly (far sooner than the dropped leader's
/// 30 s TTL), on its own lease and on a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_leadership_hands_over_promptly() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "elect/dropped";
    let ttl = Duration::from_secs(30);
    let session = within("session", WAIT, client.session(ttl))
        .await
        .expect("session");
    let own = within("campaign", WAIT, client.campaign(name, "own").ttl(ttl))
        .await
        .expect("campaign");
    let on_session = tokio::spawn(session.campaign(name, "session").into_future());
    wait_candidates(&client, name, 2).await;
    let third = spawn_campaign(&client, name, "third", ttl);
    wait_candidates(&client, name, 3).await;

    drop(own);
    let on_session = within("the session's campaign", Duration::from_secs(2), on_session)
        .await
        .expect("task")
        .expect("the session candidate leads");
    drop(on_session);
    let third = within("the third campaign", Duration::from_secs(2), third)
        .await
        .expect("task")
        .expect("the third candidate leads");
    assert_leads(&client, name, &third).await;
    assert!(session.lost_reason().is_none(), "the session lives on");
    within("resign", WAIT, third.resign())
        .await
        .expect("resign");
}

/// A leader that dies without a word (its connection refused from then on,
/// its leadership never resigned): the next candidate leads within the
/// TTL + 1 s, with a larger token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_candidate_leads_within_the_ttl_after_a_leader_dies() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let dying = connect_through(&proxy).await;
    let name = "elect/dies";
    let ttl = Duration::from_secs(2);
    let a = within("campaign", WAIT, dying.campaign(name, "A").ttl(ttl))
        .await
        .expect("campaign");
    let token = a.fencing_token();
    let next = spawn_campaign(&client, name, "B", WAIT);
    wait_candidates(&client, name, 2).await;

    proxy.set_mode(ProxyMode::Refuse);
    let died_at = Instant::now();
    std::mem::forget(a);
    let b = within("B's campaign", ttl + Duration::from_secs(1), next)
        .await
        .expect("task")
        .expect("B leads");
    eprintln!("B led {:?} after A died", died_at.elapsed());
    assert!(b.fencing_token() > token);
    assert_leads(&client, name, &b).await;
}

// ---------------------------------------------------------------------------
// Observe after a gap (etcd #18163)
// ---------------------------------------------------------------------------

/// etcd #18163: with no leader, etcd's Observe takes the first PUT of a
/// watch batch. Here an observer away while several candidates come and go
/// gets one batch of them on reconnecting, and reports each leader at the
/// revision it led, as etcd's history says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_back_from_a_gap_reports_each_leader_of_the_gap() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0))
        .await
        .expect("start proxy");
    let watcher = connect_through(&proxy).await;
    let name = "elect/gap";
    let mut watch = within("observe", WAIT, watcher.observe(name))
        .await
        .expect("observe");
    let ElectionEvent::NoLeader { revision: start } = next_event(&mut watch).await else {
        panic!("an empty election starts with NoLeader")
    };

    proxy.set_mode(ProxyMode::Refuse);
    let x = within("campaign", WAIT, client.campaign(name, "x"))
        .await
        .expect("campaign");
    let y = spawn_campaign(&client, name, "y", WAIT);
    wait_candidates(&client, name, 2).await;
    within("resign", WAIT, x.resign()).await.expect("resign");
    let mut y = within("Y", WAIT, y).await.expect("task").expect("Y leads");
    within("proclaim", WAIT, y.proclaim("y1"))
        .await
        .expect("proclaim");
    let z = spawn_campaign(&client, name, "z", WAIT);
    wait_candidates(&client, name, 2).await;
    within("resign", WAIT, y.resign()).await.expect("resign");
    let z = within("Z", WAIT, z).await.expect("task").expect("Z leads");
    let (_, last) = within("read", WAIT, client.get_prefix(format!("{name}/")))
        .await
        .expect("read");
    proxy.set_mode(ProxyMode::Pass);

    let history = history(&etcd.endpoint(0), name, Revision(start.0 + 1), last).await;
    let expected = expected_events(&history);
    assert_eq!(
        expected.len(),
        4,
        "X, Y, Y's proclamation, Z: {expected:#?}"
    );
    let got = take_events(&mut watch, expected.len()).await;
    assert_same_events(&got, &expected, "after the gap");
    assert_eq!(got.last(), Some(&leader_event(&z, "z", last)));
}

// ---------------------------------------------------------------------------
// Guards, sessions, arguments
// ---------------------------------------------------------------------------

/// `is_leader()` put into a caller's own `Txn` holds exactly while the
/// candidate leads: the write applies while leading, and not once its key
/// is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_leader_makes_a_raw_txn_conditional_on_leading() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "elect/is-leader";
    let l = within("campaign", WAIT, client.campaign(name, "L"))
        .await
        .expect("campaign");
    let write = |v: &str| pb::TxnRequest {
        compare: vec![l.is_leader()],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: b"elect/is-leader-data".to_vec(),
                value: v.as_bytes().to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let r = within("txn", WAIT, client.txn_raw(write("one")))
        .await
        .expect("txn");
    assert!(r.succeeded, "the compare holds while leading");
    within("delete", WAIT, client.delete(l.key()))
        .await
        .expect("delete");
    let r = within("txn", WAIT, client.txn_raw(write("two")))
        .await
        .expect("txn");
    assert!(!r.succeeded, "the compare fails once the key is gone");
    let kv = within("get", WAIT, client.get("elect/is-leader-data"))
        .await
        .expect("get")
        .expect("the first write");
    assert_eq!(kv.value, b"one");
}

/// A session campaigns for a name once at a time: a second campaign or a
/// lock of the same name on it is refused with `AlreadyLocked` while the
/// first leads, and sends nothing; closing the session fires the leader's
/// lost signal, after which proclaim is refused and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_campaigns_for_a_name_once_and_its_close_ends_the_leadership() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "elect/once";
    let session = within("session", WAIT, client.session(WAIT))
        .await
        .expect("session");
    let mut l = within("campaign", WAIT, session.campaign(name, "first"))
        .await
        .expect("campaign");
    let r = within("campaign", WAIT, session.campaign(name, "second")).await;
    assert!(matches!(r, Err(Error::AlreadyLocked { .. })), "{r:?}");
    let r = within("lock", WAIT, session.lock(name)).await;
    assert!(matches!(r, Err(Error::AlreadyLocked { .. })), "{r:?}");
    assert_leads(&client, name, &l).await;
    assert_eq!(candidates(&client, name).await.len(), 1);

    within("close", WAIT, session.close()).await.expect("close");
    within("the lost signal", WAIT, l.lost()).await;
    let r = within("proclaim", WAIT, l.proclaim("after close")).await;
    assert!(r.is_err(), "proclaim after the session closed: {r:?}");
    assert_eq!(leader(&client, name).await, None);
}

fn invalid<T>(r: &locker::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidArgument { .. }))
}

/// Bad names, proposals and proclamations are refused with
/// `InvalidArgument` before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_refused_before_anything_is_sent() {
    let etcd = start_etcd().await;
    let rec = Recorder::default();
    let client = within(
        "connect",
        WAIT,
        Client::builder()
            .endpoints(etcd.endpoints())
            .audit(rec.sink())
            .connect(),
    )
    .await
    .expect("connect");
    let name = "elect/invalid";
    let mut l = within("campaign", WAIT, client.campaign(name, "ok"))
        .await
        .expect("campaign");
    rec.take();
    let big = vec![b'x'; locker::MAX_VALUE_LEN + 1];
    assert!(invalid(
        &within("campaign", WAIT, client.campaign("", "v")).await
    ));
    assert!(invalid(
        &within("campaign", WAIT, client.campaign("bad\nname", "v")).await
    ));
    assert!(invalid(
        &within(
            "campaign",
            WAIT,
            client.campaign("elect/other", big.clone())
        )
        .await
    ));
    assert!(invalid(&within("proclaim", WAIT, l.proclaim(big)).await));
    assert!(invalid(&within("leader", WAIT, client.leader("")).await));
    assert!(invalid(&within("observe", WAIT, client.observe("")).await));
    let sent = rec.take();
    assert!(sent.is_empty(), "sent for invalid arguments: {sent:#?}");
    assert_leads(&client, name, &l).await;
    assert_eq!(l.value(), b"ok");
}

/// Names `a` and `ab` are separate elections (the `/` after the name keeps
/// `ab`'s keys out of `a`'s range, unlike etcd #6278).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_whose_name_extends_another_is_separate() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let ab = within("campaign", WAIT, client.campaign("elect/ab", "ab"))
        .await
        .expect("campaign");
    let a = within("campaign", WAIT, client.campaign("elect/a", "a"))
        .await
        .expect("a leads while ab leads");
    assert_leads(&client, "elect/a", &a).await;
    assert_leads(&client, "elect/ab", &ab).await;
}

/// A name nested under another (`a/b` under `a`) shares `a`'s key range:
/// a candidate of `a/b` blocks a campaign for `a` and is reported as `a`'s
/// leader. etcd's own election does the same (same key layout), so fixing
/// it is a design decision about the layout, not a local fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "design: `{name}/` ranges of nested names overlap (as in etcd); see the election report"]
async fn an_election_nested_under_another_name_is_separate() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let nested = within("campaign", WAIT, client.campaign("elect/a/b", "nested"))
        .await
        .expect("campaign");
    assert_leads(&client, "elect/a/b", &nested).await;
    assert_eq!(
        leader(&client, "elect/a").await,
        None,
        "a candidate of elect/a/b is not a candidate of elect/a"
    );
    let a = within(
        "campaign",
        Duration::from_secs(3),
        client.campaign("elect/a", "a"),
    )
    .await
    .expect("elect/a leads while elect/a/b leads");
    assert_leads(&client, "elect/a", &a).await;
}

// ---------------------------------------------------------------------------
// No zombie leader, continued
// ---------------------------------------------------------------------------

/// etcd #19597 with a frozen process: a waiting candidate whose whole
/// runtime stalls (as under SIGSTOP) past its TTL, while the leader resigns
/// and the candidate queued behind it is elected, never reports leadership
/// when it runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_frozen_past_its_ttl_never_leads_when_it_thaws() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "elect/frozen";
    let a = within("campaign", WAIT, client.campaign(name, "A"))
        .await
        .expect("campaign");

    // B runs on a runtime of its own, on a thread that the test freezes.
    let (freeze_tx, freeze_rx) = tokio::sync::oneshot::channel::<Duration>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let endpoints = etcd.endpoints();
    let frozen = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for B");
        rt.block_on(async move {
            let b_client = connect(endpoints).await;
            let campaign = b_client
                .campaign(name, "B")
                .ttl(Duration::from_secs(2))
                .timeout(Duration::from_secs(20));
            let freezer = async {
                if let Ok(d) = freeze_rx.await {
                    // Blocks the whole runtime: no keepalive, no watch.
                    std::thread::sleep(d);
                }
                std::future::pending::<()>().await;
            };
            let outcome = tokio::select! {
                r = campaign => r,
                () = freezer => unreachable!(),
            };
            let _ = done_tx.send(outcome.map(|l| (l.key().to_owned(), l.fencing_token())));
        });
    });
    wait_candidates(&client, name, 2).await;
    let b_key = candidates(&client, name).await[1].key_str();
    let c = spawn_campaign(&client, name, "C", WAIT);
    wait_candidates(&client, name, 3).await;

    let thaw_at = Instant::now() + Duration::from_secs(5);
    freeze_tx
        .send(Duration::from_secs(5))
        .expect("B's runtime is there");
    // While B is frozen: its lease expires, A resigns, C is elected.
    wait_until("B's key expired", WAIT, || async {
        !candidate_keys(&client, name).await.contains(&b_key)
    })
    .await;
    within("resign", WAIT, a.resign()).await.expect("resign");
    let c = within("C's campaign", WAIT, c)
        .await
        .expect("task")
        .expect("C leads");
    assert!(
        Instant::now() < thaw_at,
        "the test must elect C while B is still frozen"
    );

    let outcome = within("B's campaign after the thaw", WAIT, done_rx)
        .await
        .expect("B's outcome");
    match outcome {
        Ok((key, token)) => panic!("the frozen candidate reports leadership: {key} {token}"),
        Err(e) => assert!(e.is_lost(), "expected a loss error, got {e:?}"),
    }
    assert_leads(&client, name, &c).await;
    frozen.join().expect("B's thread");
}

// ---------------------------------------------------------------------------
// Observe on a cluster
// ---------------------------------------------------------------------------

/// On a 3-member cluster, the member serving an observer's watch is
/// killed while candidates keep changing leadership through the others:
/// the observer moves to another member and resumes by revision; its
/// events still match etcd's history exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_moves_to_another_member_without_gaps_or_repeats() {
    let mut etcd = Etcd::cluster(3).await.expect("start a 3-member etcd");
    let rec = Recorder::default();
    let watcher = within(
        "connect",
        WAIT,
        Client::builder()
            .endpoints(etcd.endpoints())
            .request_timeout(Duration::from_secs(2))
            .audit(rec.sink())
            .connect(),
    )
    .await
    .expect("connect");
    let name = "elect/failover";
    let mut watch = within("observe", WAIT, watcher.observe(name))
        .await
        .expect("observe");
    let ElectionEvent::NoLeader { revision: start } = next_event(&mut watch).await else {
        panic!("an empty election starts with NoLeader")
    };
    let (events, collector) = collect(watch);
    let mut watched = None;
    wait_until("the observer's watch is open", WAIT, || {
        watched = rec
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.kind == WireKind::StreamOpen && r.path == paths::WATCH)
            .map(|r| r.endpoint.clone());
        std::future::ready(watched.is_some())
    })
    .await;
    let watched = watched.expect("the watch's endpoint");
    let member = (0..etcd.len())
        .find(|&i| watched.contains(&etcd.client_addr(i).to_string()))
        .unwrap_or_else(|| panic!("the watch's endpoint {watched} is no member's"));
    let others: Vec<String> = (0..etcd.len())
        .filter(|&i| i != member)
        .map(|i| etcd.endpoint(i))
        .collect();
    let client = connect(others.clone()).await;

    let cycle = |client: Client, round: usize| async move {
        let mut l = within("campaign", WAIT, client.campaign(name, format!("r{round}")))
            .await
            .expect("campaign");
        within("proclaim", WAIT, l.proclaim(format!("r{round}-p")))
            .await
            .expect("proclaim");
        within("resign", WAIT, l.resign()).await.expect("resign");
    };
    for round in 0..10 {
        cycle(client.clone(), round).await;
    }
    etcd.kill(member);
    for round in 10..20 {
        cycle(client.clone(), round).await;
    }
    let marker = within("campaign", WAIT, client.campaign(name, "marker"))
        .await
        .expect("campaign");
    wait_seen_leader(&events, marker.fencing_token()).await;
    collector.abort();
    let history = history(
        &others[0],
        name,
        Revision(start.0 + 1),
        marker.fencing_token(),
    )
    .await;
    assert_same_events(
        &seen(&events),
        &expected_events(&history),
        "across the failover",
    );
    let moved = rec
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|r| r.kind == WireKind::StreamOpen && r.path == paths::WATCH && r.endpoint != watched);
    assert!(moved, "the observer's watch moved to another member");
}
