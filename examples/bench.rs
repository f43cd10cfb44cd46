//! The lock benchmark: one JSON line per mode, all modes in one run against
//! the same etcd, so the ratios between them are meaningful.
//!
//! ```sh
//! cargo run --release --example bench -- --endpoints http://127.0.0.1:2379 [--mode M] [--ops N] [--clients C]
//! ```
//!
//! Modes: `floor` (the two commits any lock cycle needs: a create-if-absent
//! put with a lease, then a delete — the baseline), `session_cycle`,
//! `lease_cycle`, `contended` (C clients on one name; C = 2, 8, 32 unless
//! `--clients` is given), `many` (one session holding N distinct locks,
//! 64 acquisitions in flight, compared with N raw txns at 64 in flight, in
//! alternating rounds).
//! Commits per op come from etcd's `etcd_server_proposals_committed_total`
//! on the first endpoint (plain http only), keepalive streams and messages
//! from its `grpc_server_started_total` and `grpc_server_msg_received_total`
//! for `LeaseKeepAlive`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use locker::Client;
use locker::wire::etcdserverpb as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    endpoints: Vec<String>,
    modes: Vec<String>,
    ops: Option<usize>,
    clients: Option<Vec<usize>>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        endpoints: vec!["http://127.0.0.1:2379".into()],
        modes: ["floor", "session_cycle", "lease_cycle", "contended", "many"]
            .map(String::from)
            .to_vec(),
        ops: None,
        clients: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoints" => a.endpoints = val()?.split(',').map(String::from).collect(),
            "--mode" => a.modes = val()?.split(',').map(String::from).collect(),
            "--ops" => a.ops = Some(val()?.parse().map_err(|e| format!("--ops: {e}"))?),
            "--clients" => {
                a.clients = Some(
                    val()?
                        .split(',')
                        .map(|c| c.parse().map_err(|e| format!("--clients: {e}")))
                        .collect::<Result<_, _>>()?,
                )
            }
            "-h" | "--help" => {
                println!(
                    "bench --endpoints URLS [--mode floor,session_cycle,lease_cycle,contended,many] [--ops N] [--clients C,..]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Stats {
    p50: f64,
    p99: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Stats {
        p50: pct(&v, 0.5),
        p99: pct(&v, 0.99),
    }
}

/// Scrapes one counter from `/metrics` over plain HTTP/1.1: the sum of the
/// samples of `name` whose labels contain `labels`.
async fn metric(endpoint: &str, name: &str, labels: &str) -> Option<f64> {
    for _ in 0..3 {
        if let Some(v) = metric_once(endpoint, name, labels).await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn metric_once(endpoint: &str, name: &str, labels: &str) -> Option<f64> {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(hostport).await.ok()?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

async fn commits(endpoint: &str) -> f64 {
    metric(endpoint, "etcd_server_proposals_committed_total", "")
        .await
        .unwrap_or(f64::NAN)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn connect(endpoints: &[String]) -> Client {
    Client::builder()
        .endpoints(endpoints.iter().cloned())
        .connect()
        .await
        .unwrap_or_else(|e| {
            eprintln!("bench: {e}");
            std::process::exit(1)
        })
}

/// `create_revision == rev` for `key` (or for every key up to `range_end`).
fn created_at(key: &str, range_end: Vec<u8>, rev: i64) -> pb::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        range_end,
    }
}

fn put_if_absent(key: &str, lease: i64) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![created_at(key, vec![], 0)],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"bench".to_vec(),
                lease,
                prev_kv: false,
            })),
        }],
        failure: vec![],
    }
}

fn line(mode: &str, clients: usize, ops: usize, lat: &Stats, elapsed: Duration, extra: &str) {
    println!(
        "{{\"mode\":\"{mode}\",\"clients\":{clients},\"ops\":{ops},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"ops_per_s\":{:.1}{extra}}}",
        lat.p50,
        lat.p99,
        ops as f64 / elapsed.as_secs_f64()
    );
}

/// One cycle of a sequential mode.
#[derive(Clone, Copy, PartialEq)]
enum Cycle {
    /// floor: a create-if-absent put with a lease, then a delete.
    Floor,
    /// session_cycle: lock and release on one session.
    Session,
    /// lease_cycle: lock on a lease of its own (grant, txn, revoke).
    Lease,
    /// The session cycle's two calls sent raw exactly as locker sends them
    /// (the acquire with its queueing branch, the guarded delete).
    RawSessionShaped,
    /// The lease cycle's three calls sent raw, on one fixed key with a
    /// key-only compare: etcd's cost of grant, txn and revoke.
    RawLease,
    /// The lease cycle's three calls sent raw exactly as locker sends them
    /// (a prefix compare with the queueing branch, a new key per lease), to
    /// tell locker's own cost from etcd's.
    RawLeaseShaped,
}

struct Sequential {
    client: Client,
    session: locker::Session,
    floor_lease: locker::LeaseId,
}

impl Sequential {
    async fn cycle(&self, c: Cycle) {
        match c {
            Cycle::Floor => {
                let r = self
                    .client
                    .txn_raw(put_if_absent("bench/floor", self.floor_lease.0))
                    .await
                    .unwrap();
                assert!(r.succeeded);
                self.client.delete("bench/floor").await.unwrap();
            }
            Cycle::Session => {
                let g = self.session.lock("bench/session").await.unwrap();
                g.release().await.unwrap();
            }
            Cycle::Lease => {
                let g = self
                    .client
                    .lock("bench/lease")
                    .ttl(Duration::from_secs(10))
                    .await
                    .unwrap();
                g.release().await.unwrap();
            }
            Cycle::RawSessionShaped => {
                let lease = self.session.lease().0;
                let r = self
                    .client
                    .txn_raw(acquire_shaped("bench/session-shaped/", lease))
                    .await
                    .unwrap();
                assert!(r.succeeded);
                let rev = r.header.unwrap().revision;
                let key = format!("bench/session-shaped/{lease:x}");
                let r = self.client.txn_raw(delete_if(&key, rev)).await.unwrap();
                assert!(r.succeeded);
            }
            Cycle::RawLease => {
                let (lease, _) = self
                    .client
                    .lease_grant(Duration::from_secs(10))
                    .await
                    .unwrap();
                self.client
                    .txn_raw(put_if_absent("bench/lease-raw/k", lease.0))
                    .await
                    .unwrap();
                self.client.lease_revoke(lease).await.unwrap();
            }
            Cycle::RawLeaseShaped => {
                let (lease, _) = self
                    .client
                    .lease_grant(Duration::from_secs(10))
                    .await
                    .unwrap();
                let r = self
                    .client
                    .txn_raw(acquire_shaped("bench/lease-shaped/", lease.0))
                    .await
                    .unwrap();
                assert!(r.succeeded);
                self.client.lease_revoke(lease).await.unwrap();
            }
        }
    }
}

/// Delete `key` if its create revision is `rev` (locker's session release).
fn delete_if(key: &str, rev: i64) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![created_at(key, vec![], rev)],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                },
            )),
        }],
        failure: vec![],
    }
}

/// locker's acquire transaction, as `tests/transcripts.rs` pins it down: if
/// no key exists under `prefix`, put mine; else (unused here) put it if
/// absent and read the holder and the two newest keys.
fn acquire_shaped(prefix: &str, lease: i64) -> pb::TxnRequest {
    use pb::request_op::Request;
    let key = format!("{prefix}{lease:x}");
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let range = |sort_order, limit, keys_only| pb::RequestOp {
        request: Some(Request::RequestRange(pb::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end.clone(),
            sort_order,
            sort_target: pb::range_request::SortTarget::Create as i32,
            limit,
            keys_only,
            ..Default::default()
        })),
    };
    let asc = pb::range_request::SortOrder::Ascend as i32;
    let desc = pb::range_request::SortOrder::Descend as i32;
    let queue_empty = created_at(prefix, end.clone(), 0);
    let mut put_mine = put_if_absent(&key, lease);
    put_mine.success.push(range(asc, 1, false));
    put_mine.success.push(range(desc, 2, true));
    put_mine.failure = vec![
        pb::RequestOp {
            request: Some(Request::RequestRange(pb::RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })),
        },
        range(asc, 1, false),
    ];
    pb::TxnRequest {
        compare: vec![queue_empty],
        success: put_if_absent(&key, lease).success,
        failure: vec![pb::RequestOp {
            request: Some(Request::RequestTxn(put_mine)),
        }],
    }
}

/// The sequential modes (floor, session_cycle, lease_cycle), interleaved op
/// by op, so that drift in etcd's speed (its store grows; the two cores are
/// shared) hits them alike. Commits per op are counted in a short pass per
/// mode first. Returns the floor's p50.
async fn sequential(eps: &[String], ops: usize, modes: &[String]) -> f64 {
    let client = connect(eps).await;
    let session = client.session(Duration::from_secs(10)).await.unwrap();
    let (floor_lease, _) = client.lease_grant(Duration::from_secs(600)).await.unwrap();
    let seq = Sequential {
        client: client.clone(),
        session,
        floor_lease,
    };
    let cycles = [
        Cycle::Floor,
        Cycle::Session,
        Cycle::Lease,
        Cycle::RawLease,
        Cycle::RawLeaseShaped,
        Cycle::RawSessionShaped,
    ];
    let mut per_op = [0.0; 6];
    for (k, c) in cycles.iter().enumerate() {
        const N: usize = 100;
        let c0 = commits(&eps[0]).await;
        for _ in 0..N {
            seq.cycle(*c).await;
        }
        per_op[k] = (commits(&eps[0]).await - c0) / N as f64;
    }
    let mut lat: [Vec<f64>; 6] = Default::default();
    let mut spent = [Duration::ZERO; 6];
    for _ in 0..ops {
        for (k, c) in cycles.iter().enumerate() {
            let t = Instant::now();
            seq.cycle(*c).await;
            let d = t.elapsed();
            spent[k] += d;
            lat[k].push(ms(d));
        }
    }
    let [floor, session, lease, raw, shaped, session_shaped] = lat.map(stats);
    line(
        "floor",
        1,
        ops,
        &floor,
        spent[0],
        &format!(",\"commits_per_op\":{:.2}", per_op[0]),
    );
    if modes.iter().any(|m| m == "session_cycle") {
        line(
            "session_cycle",
            1,
            ops,
            &session,
            spent[1],
            &format!(
                ",\"commits_per_op\":{:.2},\"p50_vs_floor\":{:.3},\"raw_shaped_p50_ms\":{:.3},\"raw_shaped_commits_per_op\":{:.2},\"raw_shaped_p50_vs_floor\":{:.3}",
                per_op[1],
                session.p50 / floor.p50,
                session_shaped.p50,
                per_op[5],
                session_shaped.p50 / floor.p50
            ),
        );
    }
    if modes.iter().any(|m| m == "lease_cycle") {
        line(
            "lease_cycle",
            1,
            ops,
            &lease,
            spent[2],
            &format!(
                ",\"commits_per_op\":{:.2},\"p50_vs_floor\":{:.3},\"raw_grant_txn_revoke_p50_ms\":{:.3},\"raw_commits_per_op\":{:.2},\"raw_p50_vs_floor\":{:.3},\"raw_shaped_p50_ms\":{:.3},\"raw_shaped_commits_per_op\":{:.2},\"raw_shaped_p50_vs_floor\":{:.3}",
                per_op[2],
                lease.p50 / floor.p50,
                raw.p50,
                per_op[3],
                raw.p50 / floor.p50,
                shaped.p50,
                per_op[4],
                shaped.p50 / floor.p50
            ),
        );
    }
    seq.session.close().await.unwrap();
    client.lease_revoke(floor_lease).await.unwrap();
    floor.p50
}

async fn contended(eps: &[String], clients: usize, ops: usize, floor_p50: f64) {
    let name = format!("bench/contended-{clients}");
    let per_client = ops.div_ceil(clients);
    let last_release = Arc::new(Mutex::new(None::<Instant>));
    let waits = Arc::new(Mutex::new(Vec::new()));
    let handoffs = Arc::new(Mutex::new(Vec::new()));
    let mut sessions = Vec::new();
    for _ in 0..clients {
        let c = connect(eps).await;
        sessions.push(c.session(Duration::from_secs(10)).await.unwrap());
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for session in sessions {
        let (name, last_release, waits, handoffs, done) = (
            name.clone(),
            last_release.clone(),
            waits.clone(),
            handoffs.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_client {
                let t = Instant::now();
                let g = session.lock(name.as_str()).await.unwrap();
                let got = Instant::now();
                waits.lock().unwrap().push(ms(got - t));
                if let Some(r) = last_release.lock().unwrap().take() {
                    handoffs
                        .lock()
                        .unwrap()
                        .push(ms(got.saturating_duration_since(r)));
                }
                g.release().await.unwrap();
                *last_release.lock().unwrap() = Some(Instant::now());
                done.fetch_add(1, Ordering::Relaxed);
            }
            session.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let n = done.load(Ordering::Relaxed) as usize;
    let s = stats(std::mem::take(&mut *waits.lock().unwrap()));
    let h = stats(std::mem::take(&mut *handoffs.lock().unwrap()));
    let floor_cycles = 1000.0 / floor_p50;
    let rate = n as f64 / elapsed.as_secs_f64();
    line(
        "contended",
        clients,
        n,
        &s,
        elapsed,
        &format!(
            ",\"handoff_p50_ms\":{:.3},\"handoff_p99_ms\":{:.3},\"rate_vs_floor\":{:.3},\"handoff_p50_vs_floor_p50\":{:.3},\"handoff_p99_vs_floor_p50\":{:.3}",
            h.p50,
            h.p99,
            rate / floor_cycles,
            h.p50 / floor_p50,
            h.p99 / floor_p50
        ),
    );
}

/// `n` create-if-absent puts with a lease (keys `bench/raw/{from..}`),
/// `in_flight` at a time; the time taken.
async fn raw_txns(
    client: &Client,
    lease: i64,
    from: usize,
    n: usize,
    in_flight: usize,
) -> Duration {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in from..from + n {
        if set.len() >= in_flight {
            set.join_next().await.unwrap().unwrap();
        }
        let c = client.clone();
        let key = format!("bench/raw/{i}");
        set.spawn(async move {
            c.txn_raw(put_if_absent(&key, lease)).await.unwrap();
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    start.elapsed()
}

/// Locks `bench/many/{from..}` on `session`, `in_flight` at a time; adds
/// the guards and latencies, returns the time taken.
async fn many_locks(
    session: &Arc<locker::Session>,
    from: usize,
    n: usize,
    in_flight: usize,
    guards: &mut Vec<locker::LockGuard>,
    lat: &mut Vec<f64>,
) -> Duration {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in from..from + n {
        if set.len() >= in_flight {
            let (g, l) = set.join_next().await.unwrap().unwrap();
            guards.push(g);
            lat.push(l);
        }
        let s = session.clone();
        set.spawn(async move {
            let t = Instant::now();
            let g = s.lock(format!("bench/many/{i}")).await.unwrap();
            (g, ms(t.elapsed()))
        });
    }
    while let Some(r) = set.join_next().await {
        let (g, l) = r.unwrap();
        guards.push(g);
        lat.push(l);
    }
    start.elapsed()
}

async fn many(eps: &[String], n: usize) {
    const IN_FLIGHT: usize = 64;
    const ROUNDS: usize = 5;
    const KEEPALIVE: &str = "grpc_method=\"LeaseKeepAlive\"";
    // No audit sink here: building every record costs client CPU, which
    // the two cores share with etcd. etcd's own counters tell the
    // keepalive traffic instead.
    let client = connect(eps).await;

    // Baseline: the same number of raw txns (create-if-absent puts with a
    // lease), 64 in flight, in rounds that alternate with the locks' (etcd
    // slows down as its store grows, and the two cores are shared: both
    // sides see the same drift). Their lease is revoked at the very end.
    let (lease, _) = client.lease_grant(Duration::from_secs(300)).await.unwrap();
    let ttl = Duration::from_secs(6);
    let streams0 = metric(&eps[0], "grpc_server_started_total", KEEPALIVE)
        .await
        .unwrap_or(f64::NAN);
    let session = Arc::new(client.session(ttl).await.unwrap());
    // One unmeasured round first, so that the memory the raw rounds use is
    // already the process's when the client's memory is first read.
    raw_txns(&client, lease.0, n, n / ROUNDS, IN_FLIGHT).await;
    let rss0 = rss_kib();
    let mut lat = Vec::with_capacity(n);
    let mut guards = Vec::with_capacity(n);
    let (mut raw_time, mut lock_time) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        let from = round * n / ROUNDS;
        let count = (round + 1) * n / ROUNDS - from;
        raw_time += raw_txns(&client, lease.0, from, count, IN_FLIGHT).await;
        lock_time += many_locks(&session, from, count, IN_FLIGHT, &mut guards, &mut lat).await;
    }
    let rss1 = rss_kib();
    // Hold through two keepalive periods (TTL/3 each).
    let k0 = metric(&eps[0], "grpc_server_msg_received_total", KEEPALIVE)
        .await
        .unwrap_or(f64::NAN);
    tokio::time::sleep(ttl / 3 * 2 + Duration::from_millis(500)).await;
    let held_keepalives = metric(&eps[0], "grpc_server_msg_received_total", KEEPALIVE)
        .await
        .unwrap_or(f64::NAN)
        - k0;
    let streams = metric(&eps[0], "grpc_server_started_total", KEEPALIVE)
        .await
        .unwrap_or(f64::NAN)
        - streams0;
    let mut set = tokio::task::JoinSet::new();
    for g in guards {
        if set.len() >= IN_FLIGHT {
            set.join_next().await.unwrap().unwrap();
        }
        set.spawn(async move { g.release().await.unwrap() });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let session = Arc::into_inner(session).expect("no other session handle");
    session.close().await.unwrap();
    client.lease_revoke(lease).await.unwrap();
    let raw_rate = n as f64 / raw_time.as_secs_f64();
    let s = stats(lat);
    let rate = n as f64 / lock_time.as_secs_f64();
    let per_lock = (rss1.saturating_sub(rss0)) as f64 * 1024.0 / n as f64;
    line(
        "many",
        1,
        n,
        &s,
        lock_time,
        &format!(
            ",\"in_flight\":{IN_FLIGHT},\"rounds\":{ROUNDS},\"raw_txn_ops_per_s\":{raw_rate:.1},\"rate_vs_raw\":{:.3},\"keepalive_streams\":{streams},\"keepalives_in_two_periods\":{held_keepalives},\"rss_before_kib\":{rss0},\"rss_after_kib\":{rss1},\"bytes_per_held_lock\":{per_lock:.0}",
            rate / raw_rate,
        ),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let ops = a.ops.unwrap_or(2000);
    let eps = a.endpoints;
    // The floor is always measured: the other modes are reported against it.
    let floor_p50 = sequential(&eps, ops, &a.modes).await;
    for mode in &a.modes {
        match mode.as_str() {
            "floor" | "session_cycle" | "lease_cycle" => {}
            "contended" => {
                for c in a.clients.clone().unwrap_or(vec![2, 8, 32]) {
                    contended(&eps, c, a.ops.unwrap_or(1000), floor_p50).await;
                }
            }
            "many" => many(&eps, a.ops.unwrap_or(10_000)).await,
            other => {
                eprintln!("bench: unknown mode {other}");
                std::process::exit(2);
            }
        }
    }
}
