//! The scale benchmark: many waiters in one process, on one `Client` per
//! case, against one etcd. One JSON line per case, with etcd's own counters
//! (watch streams and watchers open, Watch and LeaseKeepAlive streams
//! started, etcd's memory) and the client's memory, before, at their peak
//! during, and after the case.
//!
//! ```text
//! cargo run --release --example scale -- --endpoints http://127.0.0.1:2379 [--cases queued1000,mutex10,mutex1000,sem50,mutex10000]
//! ```
//!
//! Each waiter takes the lock (or a permit) on a lease of its own (TTL
//! 10 s), holds it 2 ms, releases it, and queues again, for a number of
//! rounds. First (`queued1000`), the client's heap per waiter while 1,000
//! waiters wait behind a holder. `scripts/bench --mode scale` runs it against a throwaway etcd and
//! writes the table into docs/performance.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::Duration;

use locker::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The system allocator, counting the bytes this process has allocated
/// and not freed: the client's heap, without what the allocator keeps.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to the system allocator with its own arguments;
// only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const TTL: Duration = Duration::from_secs(10);
const HOLD: Duration = Duration::from_millis(2);
/// No case may run longer than this; one that does is reported failed.
const CASE_LIMIT: Duration = Duration::from_secs(600);

struct Case {
    name: &'static str,
    waiters: usize,
    rounds: usize,
    /// 0: a mutex; else a semaphore of this many permits.
    permits: u32,
}

static CASES: [Case; 4] = [
    Case {
        name: "mutex10",
        waiters: 10,
        rounds: 30,
        permits: 0,
    },
    Case {
        name: "mutex1000",
        waiters: 1000,
        rounds: 3,
        permits: 0,
    },
    Case {
        name: "sem50",
        waiters: 1000,
        rounds: 2,
        permits: 50,
    },
    Case {
        name: "mutex10000",
        waiters: 10_000,
        rounds: 1,
        permits: 0,
    },
];

/// Scrapes `/metrics` once over plain HTTP/1.1: the sum of the samples of
/// `name` whose labels contain `labels`.
async fn metric(endpoint: &str, name: &str, labels: &str) -> f64 {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let Ok(mut s) = tokio::net::TcpStream::connect(hostport).await else {
        return f64::NAN;
    };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    if s.write_all(req.as_bytes()).await.is_err() || s.read_to_string(&mut body).await.is_err() {
        return f64::NAN;
    }
    body.lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// etcd's counters and the client's memory at one instant.
#[derive(Clone, Copy, Default)]
struct Sample {
    watch_streams: f64,
    watchers: f64,
    watch_started: f64,
    keepalive_started: f64,
    etcd_mib: f64,
    client_mib: f64,
    /// The client's live heap (bytes allocated and not freed), in KiB.
    heap_kib: f64,
}

async fn sample(ep: &str) -> Sample {
    let started = "grpc_server_started_total";
    Sample {
        watch_streams: metric(ep, "etcd_debugging_mvcc_watch_stream_total", "").await,
        watchers: metric(ep, "etcd_debugging_mvcc_watcher_total", "").await,
        watch_started: metric(ep, started, "grpc_method=\"Watch\"").await,
        keepalive_started: metric(ep, started, "grpc_method=\"LeaseKeepAlive\"").await,
        etcd_mib: metric(ep, "process_resident_memory_bytes", "").await / 1048576.0,
        client_mib: rss_mib(),
        heap_kib: LIVE.load(Ordering::Relaxed) as f64 / 1024.0,
    }
}

impl Sample {
    fn max(self, o: Sample) -> Sample {
        Sample {
            watch_streams: self.watch_streams.max(o.watch_streams),
            watchers: self.watchers.max(o.watchers),
            watch_started: self.watch_started.max(o.watch_started),
            keepalive_started: self.keepalive_started.max(o.keepalive_started),
            etcd_mib: self.etcd_mib.max(o.etcd_mib),
            client_mib: self.client_mib.max(o.client_mib),
            heap_kib: self.heap_kib.max(o.heap_kib),
        }
    }

    fn json(&self) -> String {
        format!(
            "{{\"watch_streams\":{},\"watchers\":{},\"watch_started\":{},\"keepalive_started\":{},\"etcd_mib\":{:.1},\"client_mib\":{:.1},\"heap_kib\":{:.1}}}",
            self.watch_streams,
            self.watchers,
            self.watch_started,
            self.keepalive_started,
            self.etcd_mib,
            self.client_mib,
            self.heap_kib
        )
    }
}

/// One waiter: `rounds` times, take the lock, hold it, release it.
async fn waiter(
    client: Client,
    case: &'static Case,
    name: String,
    done: Arc<AtomicU64>,
) -> Result<(), locker::Error> {
    for _ in 0..case.rounds {
        let g = if case.permits == 0 {
            client.lock(&name).ttl(TTL).await?
        } else {
            client
                .semaphore(&name, case.permits)
                .acquire()
                .ttl(TTL)
                .await?
        };
        tokio::time::sleep(HOLD).await;
        g.release().await?;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// A client of `eps`; the benchmark ends if etcd cannot be reached.
async fn connect(eps: &[String]) -> Client {
    Client::builder()
        .endpoints(eps.iter().cloned())
        .connect()
        .await
        .unwrap_or_else(|e| {
            eprintln!("scale: {e}");
            std::process::exit(1)
        })
}

async fn run_case(ep: &str, eps: &[String], case: &'static Case, run: u128) {
    let client = connect(eps).await;
    let name = format!("scale/{run}/{}", case.name);
    let before = sample(ep).await;
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..case.waiters {
        let w = waiter(client.clone(), case, name.clone(), done.clone());
        tasks.spawn(w);
    }
    let mut peak = before;
    let mut errors = 0u64;
    let mut first_error = String::new();
    let deadline = t0 + CASE_LIMIT;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !tasks.is_empty() && Instant::now() < deadline {
        tokio::select! {
            r = tasks.join_next() => {
                if let Some(Ok(Err(e))) = r {
                    errors += 1;
                    if first_error.is_empty() { first_error = e.to_string(); }
                }
            }
            _ = tick.tick() => peak = peak.max(sample(ep).await),
        }
    }
    let elapsed = t0.elapsed();
    let finished = tasks.is_empty();
    tasks.shutdown().await;
    let n = done.load(Ordering::Relaxed);
    drop(client);
    // What the case leaves: after its keys and leases are gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = sample(ep).await;
    let per_waiter_kib = (peak.client_mib - before.client_mib) * 1024.0 / case.waiters as f64;
    let heap_per_waiter_kib = (peak.heap_kib - before.heap_kib) / case.waiters as f64;
    println!(
        "{{\"mode\":\"scale\",\"case\":\"{}\",\"waiters\":{},\"rounds\":{},\"permits\":{},\"completed\":{finished},\"acquisitions\":{n},\"errors\":{errors},\"first_error\":{:?},\"seconds\":{:.1},\"rate\":{:.1},\"watch_streams_opened\":{},\"keepalive_streams_opened\":{},\"client_kib_per_waiter\":{per_waiter_kib:.1},\"heap_kib_per_waiter\":{heap_per_waiter_kib:.1},\"before\":{},\"peak\":{},\"after\":{}}}",
        case.name,
        case.waiters,
        case.rounds,
        case.permits,
        first_error,
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        peak.watch_started.max(after.watch_started) - before.watch_started,
        peak.keepalive_started.max(after.keepalive_started) - before.keepalive_started,
        before.json(),
        peak.json(),
        after.json(),
    );
}

/// The client's live heap per waiter while `n` waiters (each on a lease of
/// its own, each in a task of its own that will release what it gets) wait
/// behind a holder: measured once every key is queued and the heap has
/// settled; then the holder lets them through.
async fn queued(eps: &[String], n: usize, run: u128) {
    let (client, other) = (connect(eps).await, connect(eps).await);
    let name = format!("scale/{run}/queued{n}");
    let holder = other.lock(&name).ttl(TTL).await.expect("the holder's lock");
    let before = LIVE.load(Ordering::Relaxed);
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (c, name) = (client.clone(), name.clone());
        tasks.spawn(async move { c.lock(&name).ttl(TTL).await?.release().await });
    }
    // Bounded: every key queued, then the heap steady over 200 ms.
    let deadline = Instant::now() + Duration::from_secs(60);
    let prefix = format!("{name}/");
    while Instant::now() < deadline {
        let keys = other
            .get_prefix(&prefix)
            .await
            .map_or(0, |(kvs, _)| kvs.len());
        if keys > n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut last = LIVE.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = LIVE.load(Ordering::Relaxed);
        if (now - last).abs() * 100 < now.abs() {
            break;
        }
        last = now;
    }
    let per_waiter = (LIVE.load(Ordering::Relaxed) - before) as f64 / n as f64 / 1024.0;
    holder.release().await.expect("the holder's release");
    let mut errors = 0;
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline + CASE_LIMIT, tasks.join_next()).await
    {
        if !matches!(r, Ok(Ok(()))) {
            errors += 1;
        }
    }
    println!(
        "{{\"mode\":\"scale_queued\",\"case\":\"queued{n}\",\"waiters\":{n},\"completed\":{},\"errors\":{errors},\"waiting_heap_kib_per_waiter\":{per_waiter:.2}}}",
        tasks.is_empty()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut endpoints = Vec::new();
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--endpoints", Some(v)) => endpoints = v.split(',').map(String::from).collect(),
            ("--cases", Some(v)) => only = Some(v.split(',').map(String::from).collect()),
            _ => {
                eprintln!(
                    "usage: scale --endpoints URLS [--cases queued1000,mutex10,mutex1000,sem50,mutex10000]"
                );
                std::process::exit(2);
            }
        }
    }
    let Some(ep) = endpoints.first().cloned() else {
        eprintln!("scale: --endpoints is required");
        std::process::exit(2);
    };
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    if only
        .as_ref()
        .is_none_or(|o| o.iter().any(|c| c == "queued1000"))
    {
        queued(&endpoints, 1000, run).await;
    }
    for case in &CASES {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|c| c == case.name))
        {
            continue;
        }
        run_case(&ep, &endpoints, case, run).await;
    }
}
