//! Read-write locks and counting semaphores, specified against real etcd.
//!
//! Every test starts its own single-member etcd through the `testing`
//! harness, so tests share nothing and may run in parallel. Every wait has a
//! deadline and every loop a bound. To show that a request is still waiting,
//! a test waits until its key is visible in etcd, then checks that its
//! future has not finished; nothing sleeps and hopes.
//!
//! Run with `cargo test --all-features --test shared`.
#![cfg(feature = "testing")]

use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locker::testing::connect;
use locker::testing::{Etcd, Proxy, ProxyMode, wait_until, within};
use locker::testing::{queue, queue_keys, wait_queue_is, wait_queued};
use locker::{Client, Error, KeyValue, LockGuard, Session, TryLock, WireKind, WireRecord, paths};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The longest any single wait on etcd may take in these tests.
const WAIT: Duration = Duration::from_secs(10);

async fn start_etcd() -> Etcd {
    Etcd::single().await.expect("start a single-member etcd")
}

async fn session(client: &Client) -> Session {
    within("open a session", WAIT, client.session(WAIT))
        .await
        .expect("open a session")
}

/// Asserts that nothing at all is left under `{name}/`.
async fn assert_nothing_queued(client: &Client, name: &str) {
    let left = queue_keys(client, name).await;
    assert!(left.is_empty(), "keys left under {name}/: {left:?}");
}

/// A request running in the background, and the instant it got its guard.
struct Pending {
    task: JoinHandle<(locker::Result<LockGuard>, Instant)>,
}

impl Pending {
    fn spawn<R>(req: R) -> Self
    where
        R: IntoFuture<Output = locker::Result<LockGuard>>,
        R::IntoFuture: Send + 'static,
    {
        let req = req.into_future();
        Pending {
            task: tokio::spawn(async move {
                let r = req.await;
                (r, Instant::now())
            }),
        }
    }

    fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    async fn guard(self, what: &str) -> (LockGuard, Instant) {
        let (r, at) = within(what, WAIT, self.task)
            .await
            .unwrap_or_else(|e| panic!("{what}: the task failed: {e}"));
        (r.unwrap_or_else(|e| panic!("{what}: {e}")), at)
    }

    async fn outcome(self, what: &str) -> locker::Result<LockGuard> {
        within(what, WAIT, self.task)
            .await
            .unwrap_or_else(|e| panic!("{what}: the task failed: {e}"))
            .0
    }
}

/// Queues `req` in the background and returns once its key (the newest
/// under `{name}/`) is in etcd, with that key.
async fn queue_behind<R>(client: &Client, name: &str, req: R) -> (Pending, String)
where
    R: IntoFuture<Output = locker::Result<LockGuard>>,
    R::IntoFuture: Send + 'static,
{
    let before = queue(client, name).await.len();
    let p = Pending::spawn(req);
    wait_queued(client, name, before + 1).await;
    let key = queue(client, name)
        .await
        .last()
        .map(KeyValue::key_str)
        .expect("a queued key");
    (p, key)
}

async fn release(g: LockGuard) -> Instant {
    let at = Instant::now();
    within("release", WAIT, g.release()).await.expect("release");
    at
}

fn etcdctl(endpoint: &str) -> Command {
    let bin = std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".to_owned());
    let mut cmd = Command::new(bin);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Records every wire call of a client, with the instant it was seen.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(Instant, WireRecord)>>>);

impl Recorder {
    fn sink(&self) -> impl Fn(&WireRecord) + Send + Sync + 'static {
        let records = self.0.clone();
        move |r: &WireRecord| {
            records
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Instant::now(), r.clone()));
        }
    }

    /// How many records match `pred`.
    fn count(&self, pred: impl Fn(&WireRecord) -> bool) -> usize {
        let records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().filter(|(_, r)| pred(r)).count()
    }

    /// How many records since `t` match `pred`.
    fn count_since(&self, t: Instant, pred: impl Fn(&WireRecord) -> bool) -> usize {
        let records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().filter(|(at, r)| *at > t && pred(r)).count()
    }
}

async fn connect_recorded(endpoints: Vec<String>, recorder: &Recorder) -> Client {
    let builder = Client::builder()
        .endpoints(endpoints)
        .audit(recorder.sink());
    within("connect", WAIT, builder.connect())
        .await
        .expect("connect to etcd")
}

// ---------------------------------------------------------------------------
// Readers share, writers are alone
// ---------------------------------------------------------------------------

/// Three readers, each on its own connection, all hold at once: every one
/// got its guard before any of them let go (their held intervals overlap).
/// A writer that arrives then waits until the last of them released, and a
/// reader that arrives while the writer holds waits until the writer
/// released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_hold_together_and_a_writer_holds_alone() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "rw/overlap";

    // Each reader holds until told to let go.
    let held = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for r in 0..3 {
        let own = connect(etcd.endpoints()).await;
        let held = held.clone();
        let (go, let_go) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let g = within(
                "read_lock",
                WAIT,
                own.read_lock(name).value(format!("r{r}")),
            )
            .await
            .unwrap_or_else(|e| panic!("reader {r}: {e}"));
            let start = Instant::now();
            held.fetch_add(1, Ordering::SeqCst);
            within("the test letting go", WAIT, let_go)
                .await
                .expect("the test dropped its sender");
            let end = Instant::now();
            within("release", WAIT, g.release()).await.expect("release");
            (start, end)
        });
        readers.push((go, task));
    }
    // All three hold at the same time; with readers excluding each other
    // only one would.
    wait_until("all three readers hold", WAIT, || async {
        held.load(Ordering::SeqCst) == 3
    })
    .await;
    let keys = queue_keys(&client, name).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with(&format!("{name}/read/"))));

    // A writer arrives: it queues and waits.
    let writer_client = connect(etcd.endpoints()).await;
    let (writer, writer_key) = queue_behind(&client, name, writer_client.write_lock(name)).await;
    assert!(!writer_key.contains("/read/"), "{writer_key}");
    assert!(!writer.is_finished(), "the writer got in among readers");

    let mut intervals = Vec::new();
    for (r, (go, task)) in readers.into_iter().enumerate() {
        assert!(
            !writer.is_finished(),
            "the writer got in before reader {r} left"
        );
        go.send(()).expect("the reader is waiting");
        intervals.push(
            within("a reader finishing", WAIT, task)
                .await
                .expect("reader task"),
        );
    }
    let last_start = intervals.iter().map(|i| i.0).max().expect("starts");
    let first_end = intervals.iter().map(|i| i.1).min().expect("ends");
    let last_end = intervals.iter().map(|i| i.1).max().expect("ends");
    assert!(
        last_start < first_end,
        "the readers' held intervals do not overlap: {intervals:?}"
    );
    let (w, w_at) = writer.guard("the writer").await;
    assert!(
        w_at > last_end,
        "the writer got in before the last reader left"
    );
    assert_eq!(w.key(), writer_key);
    let w_token = w.fencing_token();

    // A reader arriving while the writer holds waits for it.
    let late_client = connect(etcd.endpoints()).await;
    let (late, late_key) = queue_behind(&client, name, late_client.read_lock(name)).await;
    assert!(late_key.starts_with(&format!("{name}/read/")));
    assert!(!late.is_finished(), "a reader got in while a writer held");
    let w_released = release(w).await;
    let (r, r_at) = late.guard("the late reader").await;
    assert!(r_at > w_released);
    assert!(r.fencing_token() > w_token);
    release(r).await;
    assert_nothing_queued(&client, name).await;
}

// ---------------------------------------------------------------------------
// Fairness: arrival order
// ---------------------------------------------------------------------------

/// A reader that arrives after a waiting writer does not join the readers
/// that hold: it gets the lock only after that writer held and released it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_behind_a_waiting_writer_waits_for_that_writer() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "rw/fair";
    let first = within("read_lock", WAIT, client.read_lock(name))
        .await
        .expect("a free read lock");

    let wc = connect(etcd.endpoints()).await;
    let (writer, writer_key) = queue_behind(&client, name, wc.write_lock(name)).await;
    let rc = connect(etcd.endpoints()).await;
    let (reader, reader_key) = queue_behind(&client, name, rc.read_lock(name)).await;
    assert_eq!(
        queue_keys(&client, name).await,
        [
            first.key().to_owned(),
            writer_key.clone(),
            reader_key.clone()
        ]
    );
    // Only a reader holds, yet the later reader waits behind the writer.
    assert!(!writer.is_finished(), "the writer got in among a reader");
    assert!(!reader.is_finished(), "a reader overtook a waiting writer");

    release(first).await;
    let (w, _) = writer.guard("the writer").await;
    // The writer holds now; the reader's key is still there, waiting.
    assert_eq!(queue_keys(&client, name).await, [writer_key, reader_key]);
    assert!(
        !reader.is_finished(),
        "a reader got in while the writer held"
    );
    let w_released = release(w).await;
    let (r, r_at) = reader.guard("the reader").await;
    assert!(
        r_at > w_released,
        "the reader got in before the writer left"
    );
    release(r).await;
    assert_nothing_queued(&client, name).await;
}

/// Behind a holding writer, a queue W1 R2 R3 W4 R5 (each on its own
/// connection, half on sessions) is served in arrival order: W1 alone, then
/// R2 and R3 together, then W4 alone, then R5. Each contender logs when it
/// gets in and when it leaves; the log must be exactly that sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_and_writers_are_served_in_arrival_order() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "rw/fifo";
    let head = within("write_lock", WAIT, client.write_lock(name))
        .await
        .expect("a free write lock");

    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let readers_in = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    for (i, label) in ["W1", "R2", "R3", "W4", "R5"].into_iter().enumerate() {
        let own = connect(etcd.endpoints()).await;
        let s = if i % 2 == 1 {
            Some(session(&own).await)
        } else {
            None
        };
        let req = match (label.starts_with('R'), &s) {
            (true, Some(s)) => s.read_lock(name),
            (true, None) => own.read_lock(name),
            (false, Some(s)) => s.write_lock(name),
            (false, None) => own.write_lock(name),
        };
        if let Some(s) = s {
            sessions.push(s);
        }
        let before = queue(&client, name).await.len();
        let (log, readers_in) = (log.clone(), readers_in.clone());
        tasks.push(tokio::spawn(async move {
            let g = within("lock", WAIT, req.value(label))
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            log.lock().unwrap().push(format!("+{label}"));
            if label == "R2" || label == "R3" {
                // Both readers of the group hold before either leaves: this
                // waits for the other one to get in.
                readers_in.fetch_add(1, Ordering::SeqCst);
                wait_until("both readers of the group hold", WAIT, || async {
                    readers_in.load(Ordering::SeqCst) == 2
                })
                .await;
            }
            log.lock().unwrap().push(format!("-{label}"));
            within("release", WAIT, g.release()).await.expect("release");
        }));
        wait_queued(&client, name, before + 1).await;
    }
    let values: Vec<String> = queue(&client, name)
        .await
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .skip(1)
        .collect();
    assert_eq!(values, ["W1", "R2", "R3", "W4", "R5"], "arrival order");
    assert!(
        log.lock().unwrap().is_empty(),
        "someone got in while a writer held"
    );

    release(head).await;
    for t in tasks {
        within("a contender finishing", WAIT, t)
            .await
            .expect("contender");
    }
    let log = log.lock().unwrap().clone();
    // R2 and R3 get in in either order, and leave in either order, but
    // both get in before either leaves.
    let group: Vec<&str> = log[2..6].iter().map(String::as_str).collect();
    assert_eq!(&log[..2], ["+W1", "-W1"], "{log:?}");
    assert!(
        group[..2].iter().all(|e| e.starts_with('+'))
            && group[2..].iter().all(|e| e.starts_with('-')),
        "{log:?}"
    );
    assert_eq!(&log[6..], ["+W4", "-W4", "+R5", "-R5"], "{log:?}");
    for s in sessions {
        within("close", WAIT, s.close()).await.expect("close");
    }
    assert_nothing_queued(&client, name).await;
}

// ---------------------------------------------------------------------------
// try forms
// ---------------------------------------------------------------------------

fn expect_held(t: TryLock, what: &str) -> locker::Holder {
    match t {
        TryLock::Held(h) => h,
        TryLock::Acquired(g) => panic!("{what}: got the lock: {g:?}"),
    }
}

fn expect_acquired(t: TryLock, what: &str) -> LockGuard {
    match t {
        TryLock::Acquired(g) => g,
        TryLock::Held(h) => panic!("{what}: held by {h:?}"),
    }
}

/// `try_read_lock` succeeds while only readers hold, and is refused
/// (`Held`) while a writer holds or waits; `try_write_lock` is refused while
/// any reader holds. A refused try leaves nothing behind, with its own lease
/// or on a session (which can lock the name right after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_forms_share_with_readers_only_and_leave_nothing_when_refused() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let s = session(&other).await;
    let name = "rw/try";

    // Only readers: another reader gets in, a writer does not.
    let r1 = expect_acquired(
        within("try_read_lock", WAIT, client.try_read_lock(name))
            .await
            .expect("try_read_lock"),
        "a free name",
    );
    let r2 = expect_acquired(
        within("try_read_lock", WAIT, s.try_read_lock(name))
            .await
            .expect("try_read_lock"),
        "a name held by a reader",
    );
    let readers = vec![r1.key().to_owned(), r2.key().to_owned()];
    let h = expect_held(
        within("try_write_lock", WAIT, other.try_write_lock(name))
            .await
            .expect("try_write_lock"),
        "try_write_lock with readers holding",
    );
    assert_eq!(h.key, r1.key(), "the first reader is reported");
    assert_eq!(queue_keys(&client, name).await, readers, "nothing left");
    // On the session that holds a read lock of the name: refused (one
    // request per name and session), and its reader is untouched.
    let refused = within("try_write_lock on a session", WAIT, s.try_write_lock(name)).await;
    assert!(
        matches!(refused, Err(Error::AlreadyLocked { .. })),
        "{refused:?}"
    );
    assert_eq!(queue_keys(&client, name).await, readers, "nothing left");
    release(r2).await;

    // A writer waiting behind a reader: readers are refused.
    let wc = connect(etcd.endpoints()).await;
    let (writer, writer_key) = queue_behind(&client, name, wc.write_lock(name)).await;
    let h = expect_held(
        within("try_read_lock", WAIT, other.try_read_lock(name))
            .await
            .expect("try_read_lock"),
        "try_read_lock with a writer waiting",
    );
    assert_eq!(h.key, writer_key, "the waiting writer is reported");
    let h = expect_held(
        within("try_read_lock", WAIT, s.try_read_lock(name))
            .await
            .expect("try_read_lock on a session"),
        "try_read_lock on a session with a writer waiting",
    );
    assert_eq!(h.key, writer_key);
    assert_eq!(
        queue_keys(&client, name).await,
        [r1.key().to_owned(), writer_key.clone()],
        "a refused try left a key"
    );
    assert!(!writer.is_finished());

    // The writer holds: readers and writers are refused.
    release(r1).await;
    let (w, _) = writer.guard("the writer").await;
    for t in [
        other.try_read_lock(name),
        s.try_read_lock(name),
        other.try_write_lock(name),
        s.try_write_lock(name),
    ] {
        let h = expect_held(
            within("try", WAIT, t).await.expect("try"),
            "a try with a writer holding",
        );
        assert_eq!(h.key, writer_key);
    }
    assert_eq!(queue_keys(&client, name).await, [writer_key.as_str()]);
    release(w).await;
    assert_nothing_queued(&client, name).await;

    // The session that was refused can take the name at once.
    let g = within("read_lock on the session", WAIT, s.read_lock(name))
        .await
        .expect("the session is not left reserved");
    release(g).await;
    within("close", WAIT, s.close()).await.expect("close");
    assert_nothing_queued(&client, name).await;
}

// ---------------------------------------------------------------------------
// Interop with the plain mutex and `etcdctl lock`
// ---------------------------------------------------------------------------

/// Starts `etcdctl lock NAME` (no command: it prints the key it got, then
/// holds until killed) and returns the child with a task that yields the
/// first line naming a key under `{name}/`, and when it came. Parsed by
/// prefix only, so any etcdctl version's extra output is ignored.
fn etcdctl_lock(
    endpoint: &str,
    name: &str,
) -> (tokio::process::Child, JoinHandle<(String, Instant)>) {
    let mut child = etcdctl(endpoint)
        .args(["lock", name])
        .spawn()
        .expect("run etcdctl (set ETCDCTL_BIN to its path)");
    let stdout = child.stdout.take().expect("stdout");
    let prefix = format!("{name}/");
    let line = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = within(
                "etcdctl printing its key",
                Duration::from_secs(30),
                lines.next_line(),
            )
            .await
            .expect("read etcdctl's output")
            .expect("etcdctl ended without printing its key");
            if line.trim().starts_with(&prefix) {
                return (line.trim().to_owned(), Instant::now());
            }
        }
    });
    (child, line)
}

/// Ends an `etcdctl lock` at once: kill it, then revoke its session's lease
/// (a killed etcdctl would otherwise hold for its 60 s TTL).
async fn end_etcdctl(client: &Client, mut child: tokio::process::Child, key: &str) {
    child.start_kill().expect("kill etcdctl");
    let _ = within("etcdctl exiting", WAIT, child.wait()).await;
    let kv = within("get", WAIT, client.get(key))
        .await
        .expect("get")
        .expect("etcdctl's key is there");
    let lease = kv.lease.expect("etcdctl's key has a lease");
    within("revoke", WAIT, client.lease_revoke(lease))
        .await
        .expect("revoke etcdctl's lease");
}

/// While `etcdctl lock NAME` holds, a locker reader and a locker writer of
/// NAME both wait; once it is gone, the reader gets in, then the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcdctl_lock_holder_makes_readers_and_writers_wait() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "interop/etcdctl-holds";
    let (child, line) = etcdctl_lock(&etcd.endpoint(0), name);
    let (etcdctl_key, _) = within("etcdctl's key", WAIT, line)
        .await
        .expect("the line task");
    assert_eq!(queue_keys(&client, name).await, [etcdctl_key.as_str()]);

    let rc = connect(etcd.endpoints()).await;
    let (reader, reader_key) = queue_behind(&client, name, rc.read_lock(name)).await;
    let wc = connect(etcd.endpoints()).await;
    let (writer, writer_key) = queue_behind(&client, name, wc.write_lock(name)).await;
    assert!(!reader.is_finished(), "a reader got in while etcdctl held");
    assert!(!writer.is_finished(), "a writer got in while etcdctl held");
    // A try sees etcdctl as the holder, for either side.
    let h = expect_held(
        within("try_read_lock", WAIT, client.try_read_lock(name))
            .await
            .expect("try_read_lock"),
        "try_read_lock while etcdctl holds",
    );
    assert_eq!(h.key, etcdctl_key);

    end_etcdctl(&client, child, &etcdctl_key).await;
    let (r, _) = reader.guard("the reader").await;
    assert_eq!(r.key(), reader_key);
    assert_eq!(
        queue_keys(&client, name).await,
        [reader_key, writer_key.clone()]
    );
    assert!(!writer.is_finished(), "the writer got in beside a reader");
    let r_released = release(r).await;
    let (w, w_at) = writer.guard("the writer").await;
    assert!(w_at > r_released);
    assert_eq!(w.key(), writer_key);
    release(w).await;
    assert_nothing_queued(&client, name).await;
}

/// While a locker reader holds NAME, `etcdctl lock NAME` queues and prints
/// the key it got only after the reader released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_waits_for_a_locker_reader() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "interop/reader-holds";
    let reader = within("read_lock", WAIT, client.read_lock(name))
        .await
        .expect("read_lock");
    let (child, line) = etcdctl_lock(&etcd.endpoint(0), name);
    wait_queued(&client, name, 2).await;
    let queued = queue_keys(&client, name).await;
    assert_eq!(queued[0], reader.key());
    assert!(!line.is_finished(), "etcdctl got the lock beside a reader");
    // The waiting etcdctl is a writer to locker: a later reader waits too.
    let rc = connect(etcd.endpoints()).await;
    let (later, later_key) = queue_behind(&client, name, rc.read_lock(name)).await;
    assert!(!later.is_finished(), "a reader overtook a waiting etcdctl");
    assert!(!line.is_finished(), "etcdctl got the lock beside a reader");

    let released = release(reader).await;
    let (etcdctl_key, printed) = within("etcdctl's key", WAIT, line)
        .await
        .expect("the line task");
    assert!(printed > released, "etcdctl printed before the reader left");
    assert_eq!(etcdctl_key, queued[1], "etcdctl printed its queued key");
    assert!(!later.is_finished(), "a reader got in while etcdctl held");
    end_etcdctl(&client, child, &etcdctl_key).await;
    let (r, _) = later.guard("the later reader").await;
    assert_eq!(r.key(), later_key);
    release(r).await;
    assert_nothing_queued(&client, name).await;
}

// ---------------------------------------------------------------------------
// Semaphores: at most N, everyone gets in, FIFO
// ---------------------------------------------------------------------------

/// A semaphore of 2 and 6 contenders, each on its own connection (half on a
/// session of their own), each taking and releasing a permit 5 times: never
/// more than 2 hold at once (counted by the holders themselves), 2 do hold
/// at once at some point, and every contender gets in every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_of_two_never_admits_a_third() {
    const CONTENDERS: usize = 6;
    const ROUNDS: usize = 5;
    let etcd = start_etcd().await;
    let name = "sem/two";
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let grants = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CONTENDERS {
        let client = connect(etcd.endpoints()).await;
        let s = if c % 2 == 1 {
            Some(session(&client).await)
        } else {
            None
        };
        let (inside, most, grants) = (inside.clone(), most.clone(), grants.clone());
        tasks.push(tokio::spawn(async move {
            let sem = match &s {
                Some(s) => s.semaphore(name, 2),
                None => client.semaphore(name, 2),
            };
            for round in 0..ROUNDS {
                let g = within("acquire", WAIT, sem.acquire().value(format!("c{c}")))
                    .await
                    .unwrap_or_else(|e| panic!("contender {c} round {round}: {e}"));
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(n <= 2, "contender {c} got a permit as holder number {n}");
                most.fetch_max(n, Ordering::SeqCst);
                grants.fetch_add(1, Ordering::SeqCst);
                // The work: long enough for a second holder to come in.
                tokio::time::sleep(Duration::from_millis(15)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                within("release", WAIT, g.release())
                    .await
                    .unwrap_or_else(|e| panic!("contender {c} round {round} release: {e}"));
            }
            if let Some(s) = s {
                within("close", WAIT, s.close()).await.expect("close");
            }
        }));
    }
    for (c, t) in tasks.into_iter().enumerate() {
        within("a contender finishing", Duration::from_secs(30), t)
            .await
            .unwrap_or_else(|e| panic!("contender {c}: {e}"));
    }
    assert_eq!(grants.load(Ordering::SeqCst), CONTENDERS * ROUNDS);
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "two held at once at some point"
    );
    let client = connect(etcd.endpoints()).await;
    assert_nothing_queued(&client, name).await;
}

/// Two holders and four waiters (own leases and sessions, each on its own
/// connection) of a semaphore of 2: each release admits exactly the oldest
/// waiter, so permits are granted in the order of the keys' create
/// revisions, and each holder's fencing token is its key's create revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_permits_are_granted_in_create_revision_order() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "sem/fifo";
    let mut holders = std::collections::VecDeque::new();
    let mut sessions = Vec::new();
    for h in 0..2 {
        let own = connect(etcd.endpoints()).await;
        let g = within(
            "acquire",
            WAIT,
            own.semaphore(name, 2).acquire().value(format!("h{h}")),
        )
        .await
        .expect("a free permit");
        holders.push_back(g);
    }
    let mut waiters = std::collections::VecDeque::new();
    for w in 0..4 {
        let own = connect(etcd.endpoints()).await;
        let req = if w % 2 == 1 {
            let s = session(&own).await;
            let req = s.semaphore(name, 2).acquire();
            sessions.push(s);
            req
        } else {
            own.semaphore(name, 2).acquire()
        };
        let (p, key) = queue_behind(&client, name, req.value(format!("w{w}"))).await;
        assert!(key.starts_with(&format!("{name}/permit/")), "{key}");
        waiters.push_back((p, key));
    }
    let revs: Vec<_> = queue(&client, name)
        .await
        .iter()
        .map(|kv| kv.create_revision)
        .collect();
    assert_eq!(revs.len(), 6);
    assert!(
        waiters.iter().all(|(p, _)| !p.is_finished()),
        "a third got in"
    );

    let mut granted = Vec::new();
    while let Some((next, key)) = waiters.pop_front() {
        let oldest = holders.pop_front().expect("a holder");
        release(oldest).await;
        let (g, _) = next.guard(&format!("the oldest waiter, {key}")).await;
        assert_eq!(g.key(), key);
        let kv = within("get", WAIT, client.get(&key))
            .await
            .expect("get")
            .expect("held key");
        assert_eq!(g.fencing_token(), kv.create_revision);
        granted.push(g.fencing_token());
        // Exactly two keys hold: the one left and the new one.
        assert_eq!(queue(&client, name).await.len(), 2 + waiters.len());
        assert!(
            waiters.iter().all(|(p, _)| !p.is_finished()),
            "a release admitted two"
        );
        holders.push_back(g);
    }
    assert_eq!(granted, revs[2..], "grants follow create revisions");
    for g in holders {
        release(g).await;
    }
    for s in sessions {
        within("close", WAIT, s.close()).await.expect("close");
    }
    assert_nothing_queued(&client, name).await;
}

// ---------------------------------------------------------------------------
// Semaphores: agreement on the limit
// ---------------------------------------------------------------------------

fn expect_mismatch(r: locker::Result<LockGuard>, asked: u32, found: Option<u32>) {
    match r {
        Err(Error::LimitMismatch {
            asked: a, found: f, ..
        }) => assert_eq!((a, f), (asked, found)),
        other => {
            panic!("expected LimitMismatch {{ asked: {asked}, found: {found:?} }}, got {other:?}")
        }
    }
}

/// A client asking for another number of permits than the holders agreed
/// on is refused with both numbers, by `acquire` and `try_acquire`, leaving
/// nothing behind; once every holder left, a new number is accepted. A name
/// held as a plain lock or a read lock refuses a semaphore (`found: None`),
/// and a plain lock waits for the permit holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_refuses_another_limit_until_the_name_is_idle() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let name = "sem/limit";
    let g = within("acquire", WAIT, client.semaphore(name, 2).acquire())
        .await
        .expect("a free permit");
    let limit = within("get", WAIT, client.get(format!("{name}.permits")))
        .await
        .expect("get")
        .expect("the limit key");
    assert_eq!(limit.value, b"2");
    assert_eq!(limit.lease, None, "the limit outlives its setter's lease");

    let r = within("acquire", WAIT, other.semaphore(name, 3).acquire()).await;
    if let Err(e) = &r {
        let text = e.to_string();
        assert!(
            text.contains("with 2 permits, not 3") && text.contains(name),
            "the message names both numbers: {text}"
        );
    }
    expect_mismatch(r, 3, Some(2));
    let r = within("try_acquire", WAIT, other.semaphore(name, 1).try_acquire()).await;
    expect_mismatch(
        r.map(|t| expect_acquired(t, "a mismatched try")),
        1,
        Some(2),
    );
    let s = session(&other).await;
    let r = within("acquire", WAIT, s.semaphore(name, 3).acquire()).await;
    expect_mismatch(r, 3, Some(2));
    assert_eq!(
        queue_keys(&client, name).await,
        [g.key().to_owned()],
        "nothing left"
    );

    // A plain lock of the name waits for the permit holder.
    let (lock, lock_key) = queue_behind(&client, name, other.lock(name)).await;
    assert!(
        !lock.is_finished(),
        "a plain lock got in beside a permit holder"
    );
    // While a plain lock waits, a semaphore is refused even with the limit.
    let r = within("acquire", WAIT, other.semaphore(name, 2).acquire()).await;
    expect_mismatch(r, 2, None);
    release(g).await;
    let (l, _) = lock.guard("the plain lock").await;
    assert_eq!(l.key(), lock_key);
    // Held as a plain lock: refused, with the name's own limit too.
    let r = within("acquire", WAIT, s.semaphore(name, 2).acquire()).await;
    expect_mismatch(r, 2, None);
    release(l).await;

    // Idle now: a new limit is accepted and stored.
    let g3 = within("acquire", WAIT, s.semaphore(name, 3).acquire())
        .await
        .expect("a new limit on an idle name");
    let limit = within("get", WAIT, client.get(format!("{name}.permits")))
        .await
        .expect("get")
        .expect("the limit key");
    assert_eq!(limit.value, b"3");
    let r = within("acquire", WAIT, client.semaphore(name, 2).acquire()).await;
    expect_mismatch(r, 2, Some(3));
    release(g3).await;

    // A read lock is a holder of another kind too.
    let rl = within("read_lock", WAIT, client.read_lock(name))
        .await
        .expect("read_lock");
    let r = within("acquire", WAIT, s.semaphore(name, 3).acquire()).await;
    expect_mismatch(r, 3, None);
    release(rl).await;
    within("close", WAIT, s.close()).await.expect("close");
    assert_nothing_queued(&client, name).await;
}

/// A name held as a plain lock refuses a semaphore of any number of
/// permits, and says that no limit was agreed (`found: None`), even when a
/// limit is left from an earlier use of the name as a semaphore: that limit
/// binds nobody now (the name is not used as a semaphore), so reporting it
/// as "found" would send the caller to retry with a number that is refused
/// as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_held_as_a_plain_lock_refuses_every_semaphore_with_no_limit_found() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "sem/plain";
    // An earlier use as a semaphore of 2 leaves the limit key.
    let g = within("acquire", WAIT, client.semaphore(name, 2).acquire())
        .await
        .expect("a free permit");
    release(g).await;
    assert!(
        within("get", WAIT, client.get(format!("{name}.permits")))
            .await
            .expect("get")
            .is_some()
    );
    let l = within("lock", WAIT, client.lock(name)).await.expect("lock");
    for n in [1, 2, 5] {
        let r = within("acquire", WAIT, client.semaphore(name, n).acquire()).await;
        expect_mismatch(r, n, None);
        let r = within("try_acquire", WAIT, client.semaphore(name, n).try_acquire()).await;
        expect_mismatch(
            r.map(|t| expect_acquired(t, "a try beside a plain lock")),
            n,
            None,
        );
    }
    assert_eq!(queue_keys(&client, name).await, [l.key().to_owned()]);
    release(l).await;
    assert_nothing_queued(&client, name).await;
}

/// Clients with limits 1 and 3 race for an idle name, 25 times: whoever
/// commits first sets the limit, the others with another limit are refused,
/// and at every grant all holders share one limit and are no more than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_limits_never_admit_more_than_the_agreed_one() {
    const RACES: usize = 25;
    const LIMITS: [u32; 4] = [1, 3, 1, 3];
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "sem/race";
    let mut clients = Vec::new();
    for _ in LIMITS {
        clients.push(connect(etcd.endpoints()).await);
    }
    // The limits of the current holders.
    let inside: Arc<Mutex<Vec<u32>>> = Arc::default();
    let mut agreed = [0usize; 2];
    let mut most_inside = 0;
    for race in 0..RACES {
        let start = Arc::new(tokio::sync::Barrier::new(LIMITS.len()));
        let mut tasks = Vec::new();
        for (c, &n) in LIMITS.iter().enumerate() {
            let (own, inside, start) = (clients[c].clone(), inside.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                match within("acquire", WAIT, own.semaphore(name, n).acquire()).await {
                    Ok(g) => {
                        let count = {
                            let mut inside = inside.lock().unwrap();
                            inside.push(n);
                            assert!(
                                inside.iter().all(|&l| l == n),
                                "race {race}: holders with limits {inside:?}"
                            );
                            assert!(
                                inside.len() <= n as usize,
                                "race {race}: {} holders with limit {n}",
                                inside.len()
                            );
                            inside.len()
                        };
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        {
                            let mut inside = inside.lock().unwrap();
                            let at = inside.iter().position(|&l| l == n).expect("mine");
                            inside.remove(at);
                        }
                        within("release", WAIT, g.release()).await.expect("release");
                        Some((n, count))
                    }
                    Err(Error::LimitMismatch { asked, found, .. }) => {
                        assert_eq!(asked, n);
                        assert_eq!(found, Some(4 - n), "race {race}: the other limit");
                        None
                    }
                    Err(e) => panic!("race {race}, client {c}: {e}"),
                }
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            if let Some(r) = within("a racer finishing", WAIT, t).await.expect("racer") {
                got.push(r);
            }
        }
        assert!(!got.is_empty(), "race {race}: nobody got in");
        for &(n, count) in &got {
            agreed[usize::from(n == 3)] += 1;
            most_inside = most_inside.max(count);
        }
        assert_nothing_queued(&client, name).await;
    }
    eprintln!(
        "limit races: {} grants under limit 1, {} under limit 3, at most {most_inside} at once",
        agreed[0], agreed[1]
    );
}

// ---------------------------------------------------------------------------
// No false grant (etcd #16221), crashed holders
// ---------------------------------------------------------------------------

/// A reader waiting behind a writer, and a semaphore waiter waiting behind
/// two holders, each have their lease revoked by another client while they
/// wait. When the way clears, each request fails with a loss error and
/// never returns a guard, and leaves nothing queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_lease_was_revoked_is_never_granted() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;

    // A reader behind a writer.
    let name = "false-grant/reader";
    let w = within("write_lock", WAIT, client.write_lock(name))
        .await
        .expect("write_lock");
    let rc = connect(etcd.endpoints()).await;
    // A 30 s lease: its own keepalive would notice only 10 s from now.
    let (reader, reader_key) = queue_behind(
        &client,
        name,
        rc.read_lock(name).ttl(Duration::from_secs(30)),
    )
    .await;
    let lease = queue(&client, name).await[1].lease.expect("a lease");
    assert!(
        within("revoke", WAIT, client.lease_revoke(lease))
            .await
            .expect("revoke")
    );
    wait_queue_is(&client, name, &[w.key().to_owned()]).await;
    release(w).await;
    match reader.outcome("the reader").await {
        Ok(g) => panic!("a reader whose lease was revoked got the lock: {g:?}"),
        Err(e) => assert!(e.is_lost(), "{reader_key}: expected a loss, got {e:?}"),
    }
    assert_nothing_queued(&client, name).await;

    // A semaphore waiter behind two holders.
    let name = "false-grant/semaphore";
    let h1 = within("acquire", WAIT, client.semaphore(name, 2).acquire())
        .await
        .expect("a permit");
    let h2 = within("acquire", WAIT, rc.semaphore(name, 2).acquire())
        .await
        .expect("a permit");
    let wc = connect(etcd.endpoints()).await;
    let (waiter, waiter_key) = queue_behind(
        &client,
        name,
        wc.semaphore(name, 2).acquire().ttl(Duration::from_secs(30)),
    )
    .await;
    let lease = queue(&client, name).await[2].lease.expect("a lease");
    assert!(
        within("revoke", WAIT, client.lease_revoke(lease))
            .await
            .expect("revoke")
    );
    wait_queue_is(&client, name, &[h1.key().to_owned(), h2.key().to_owned()]).await;
    release(h1).await;
    match waiter.outcome("the waiter").await {
        Ok(g) => panic!("a waiter whose lease was revoked got a permit: {g:?}"),
        Err(e) => assert!(e.is_lost(), "{waiter_key}: expected a loss, got {e:?}"),
    }
    assert_eq!(queue_keys(&client, name).await, [h2.key().to_owned()]);
    release(h2).await;
    assert_nothing_queued(&client, name).await;
}

/// A permit holder that crashes (cut off from etcd: its keepalives stop)
/// gives its permit back within its 2 s TTL: the waiter behind it gets in
/// no later than the TTL plus a margin after the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_permit_comes_back_within_its_ttl() {
    const TTL: Duration = Duration::from_secs(2);
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let crashing = within(
        "connect through the proxy",
        WAIT,
        Client::builder()
            .endpoints([proxy.url()])
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1))
            .connect(),
    )
    .await
    .expect("connect");
    let name = "sem/crash";
    let alive = within("acquire", WAIT, client.semaphore(name, 2).acquire())
        .await
        .expect("a permit");
    let crashed = within(
        "acquire",
        WAIT,
        crashing.semaphore(name, 2).acquire().ttl(TTL),
    )
    .await
    .expect("a permit");
    let crashed_key = crashed.key().to_owned();
    let wc = connect(etcd.endpoints()).await;
    let (waiter, _) = queue_behind(&client, name, wc.semaphore(name, 2).acquire()).await;
    assert!(!waiter.is_finished());

    let cut = Instant::now();
    proxy.set_mode(ProxyMode::Blackhole);
    let (g, at) = waiter.guard("the waiter").await;
    let after = at - cut;
    eprintln!("a crashed holder's permit came back {after:?} after the cut (TTL {TTL:?})");
    assert!(after <= TTL + Duration::from_millis(1500), "{after:?}");
    assert!(
        !queue_keys(&client, name).await.contains(&crashed_key),
        "the crashed holder's key is gone"
    );
    release(g).await;
    release(alive).await;
    drop(crashed);
    assert_nothing_queued(&client, name).await;
}

// ---------------------------------------------------------------------------
// Bounded wakeups
// ---------------------------------------------------------------------------

/// What one waiter's client sent and received in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Traffic {
    watch: usize,
    txn: usize,
    range: usize,
}

impl Traffic {
    fn since(rec: &Recorder, t: Instant) -> Traffic {
        Traffic {
            watch: rec.count_since(t, |r| r.path == paths::WATCH),
            txn: rec.count_since(t, |r| r.kind == WireKind::Unary && r.path == paths::TXN),
            range: rec.count_since(t, |r| r.kind == WireKind::Unary && r.path == paths::RANGE),
        }
    }

    /// Whether the waiter read nothing (it may have received the name's
    /// events on its client's one copy of the name: that wakes no one).
    fn no_reads(&self) -> bool {
        self.txn == 0 && self.range == 0
    }
}

/// Waits until a waiter's client has its copy of the name: one watch of
/// the name's range, created.
async fn wait_watching(rec: &Recorder) {
    wait_until("the waiter's client watches the name", WAIT, || async {
        rec.count(|r| {
            r.kind == WireKind::StreamRecv
                && r.path == paths::WATCH
                && r.response.contains("created")
        }) >= 1
    })
    .await;
}

/// Waits until no waiter's client records anything but lease keepalives
/// for 300 ms (a waiter may poll its witnesses for up to 126 ms after a
/// watch it cannot prove synced), bounded by `WAIT`.
async fn wait_quiet(recs: &[Recorder]) {
    let total = || {
        recs.iter()
            .map(|r| r.count(|w| w.path != paths::LEASE_KEEPALIVE))
            .sum::<usize>()
    };
    let mut seen = total();
    let mut since = Instant::now();
    let deadline = Instant::now() + WAIT;
    while since.elapsed() < Duration::from_millis(300) {
        assert!(Instant::now() < deadline, "the waiters never went quiet");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = total();
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
    }
}

/// A semaphore of 2, two holders and 6 waiters queued, each waiter on its
/// own audited connection. Each release of the oldest holder admits the
/// oldest waiter and causes reads on that waiter's connection only; the 5
/// others receive the deletion on their client's one copy of the name and
/// read nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_only_the_waiter_it_admits() {
    const WAITERS: usize = 6;
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "sem/wakeups";
    let mut holders = std::collections::VecDeque::new();
    for _ in 0..2 {
        let own = connect(etcd.endpoints()).await;
        holders.push_back(
            within("acquire", WAIT, own.semaphore(name, 2).acquire())
                .await
                .expect("a permit"),
        );
    }
    let mut recs = Vec::new();
    let mut clients = Vec::new();
    let mut waiters = std::collections::VecDeque::new();
    for _ in 0..WAITERS {
        let rec = Recorder::default();
        let own = connect_recorded(etcd.endpoints(), &rec).await;
        let (p, _) = queue_behind(&client, name, own.semaphore(name, 2).acquire()).await;
        wait_watching(&rec).await;
        recs.push(rec);
        clients.push(own);
        waiters.push_back(p);
    }
    let streams: usize = recs
        .iter()
        .map(|r| r.count(|w| w.kind == WireKind::StreamOpen))
        .sum();

    let mut woken_per_release = Vec::new();
    let mut per_release = Vec::new();
    for step in 0..WAITERS {
        wait_quiet(&recs).await;
        let t0 = Instant::now();
        release(holders.pop_front().expect("a holder")).await;
        let (g, _) = waiters
            .pop_front()
            .expect("a waiter")
            .guard("the oldest waiter")
            .await;
        // A round trip on every waiter's connection: anything etcd sent on
        // it before this answer has arrived.
        for c in &clients {
            within("status", WAIT, c.status()).await.expect("status");
        }
        wait_quiet(&recs).await;
        let traffic: Vec<Traffic> = recs.iter().map(|r| Traffic::since(r, t0)).collect();
        let woken: Vec<usize> = (0..WAITERS).filter(|&i| !traffic[i].no_reads()).collect();
        assert_eq!(woken, [step], "release {step} woke {woken:?}: {traffic:?}");
        woken_per_release.push(woken.len());
        per_release.push(traffic[step]);
        holders.push_back(g);
    }
    eprintln!(
        "wakeups with a semaphore of 2 and {WAITERS} waiters ({streams} watch streams opened while queueing): \
         waiters woken per release {woken_per_release:?}; the woken waiter's traffic per release \
         (watch messages, KV/Txn, KV/Range): {:?}",
        per_release
            .iter()
            .map(|t| (t.watch, t.txn, t.range))
            .collect::<Vec<_>>()
    );
    for g in holders {
        release(g).await;
    }
    assert_nothing_queued(&client, name).await;
}

/// A semaphore of 2 with two holders, and 20 waiters on one client: the
/// client watches the name once (one stream, one watch), not twice per
/// waiter, and a release that admits one waiter costs that client one read
/// (the admitted waiter's check of its own key), not one per waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_one_client_share_one_watch_and_a_release_costs_one_read() {
    const WAITERS: usize = 20;
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "sem/one-client";
    let mut holders = Vec::new();
    for _ in 0..2 {
        holders.push(
            within("acquire", WAIT, client.semaphore(name, 2).acquire())
                .await
                .expect("a permit"),
        );
    }
    let rec = Recorder::default();
    let own = connect_recorded(etcd.endpoints(), &rec).await;
    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        let (p, _) = queue_behind(&client, name, own.semaphore(name, 2).acquire()).await;
        waiters.push(p);
    }
    wait_watching(&rec).await;
    wait_quiet(std::slice::from_ref(&rec)).await;
    let opened = rec.count(|r| r.kind == WireKind::StreamOpen && r.path == paths::WATCH);
    let creates = rec.count(|r| {
        r.kind == WireKind::StreamSend && r.path == paths::WATCH && r.request.contains("create")
    });
    assert_eq!(
        (opened, creates),
        (1, 1),
        "watch streams opened, watches created"
    );

    let t0 = Instant::now();
    release(holders.remove(0)).await;
    let (g, _) = waiters.remove(0).guard("the oldest waiter").await;
    within("status", WAIT, own.status()).await.expect("status");
    wait_quiet(std::slice::from_ref(&rec)).await;
    let t = Traffic::since(&rec, t0);
    assert_eq!((t.txn, t.range), (0, 1), "reads after one release: {t:?}");
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "a second waiter was admitted"
    );
    release(g).await;
    for g in holders {
        release(g).await;
    }
    for w in waiters {
        let (g, _) = w.guard("a waiter").await;
        release(g).await;
    }
    assert_nothing_queued(&client, name).await;
}

/// 20 mutex waiters on one client, behind a holder on another. The first
/// waits on the holder's key; the others count on the client's one copy of
/// the name, so their acquires are a put alone, with none of the sorted
/// reads that cost etcd every key under the name. Each release then admits
/// exactly the oldest waiter, in fencing-token order, at the cost of one
/// read on the waiters' client (the admitted waiter's check of its key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutex_waiters_on_one_client_count_on_one_copy_of_the_name() {
    const WAITERS: usize = 20;
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "mutex/one-client";
    let mut holder = within("lock", WAIT, client.lock(name)).await.expect("lock");
    let rec = Recorder::default();
    let own = connect_recorded(etcd.endpoints(), &rec).await;
    let mut waiters = std::collections::VecDeque::new();
    for _ in 0..WAITERS {
        let (p, _) = queue_behind(&client, name, own.lock(name)).await;
        waiters.push_back(p);
    }
    wait_quiet(std::slice::from_ref(&rec)).await;
    // The read of the newest keys is in a queueing put's reads only (the
    // holder's read is also in the branch that finds my key already there).
    let sorted = rec.count(|r| {
        r.kind == WireKind::Unary && r.path == paths::TXN && r.request.contains("sort=create:desc")
    });
    let opened = rec.count(|r| r.kind == WireKind::StreamOpen && r.path == paths::WATCH);
    assert_eq!(
        (sorted, opened),
        (1, 1),
        "acquires with sorted reads, watch streams opened"
    );
    let mut tokens = vec![holder.fencing_token()];
    for step in 0..WAITERS {
        wait_quiet(std::slice::from_ref(&rec)).await;
        let t0 = Instant::now();
        release(holder).await;
        let (g, _) = waiters
            .pop_front()
            .expect("a waiter")
            .guard("the oldest waiter")
            .await;
        within("status", WAIT, own.status()).await.expect("status");
        wait_quiet(std::slice::from_ref(&rec)).await;
        let t = Traffic::since(&rec, t0);
        assert_eq!(
            (t.txn, t.range),
            (0, 1),
            "reads after release {step}: {t:?}"
        );
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "release {step} admitted a second waiter"
        );
        tokens.push(g.fencing_token());
        holder = g;
    }
    release(holder).await;
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "not granted in token order: {tokens:?}"
    );
    assert_nothing_queued(&client, name).await;
}

/// One revision may delete several keys of a name (a transaction, an
/// operator's `etcdctl del --prefix`): the client's copy of the name must
/// see every one of them, or a waiter counting on it waits for ever behind
/// a key that is gone (its events share one revision; the copy once
/// applied the first and skipped the rest as already seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_sees_every_key_one_revision_deletes() {
    use locker::wire::etcdserverpb as pb;
    let etcd = start_etcd().await;
    let (a, b, c) = (
        connect(etcd.endpoints()).await,
        connect(etcd.endpoints()).await,
        connect(etcd.endpoints()).await,
    );
    let name = "copy/one-revision";
    let holder = within("lock", WAIT, a.lock(name)).await.expect("lock");
    let (queued, queued_key) = queue_behind(&b, name, b.lock(name)).await;
    // Two waiters of one client: the second counts on the client's copy.
    let (first, _) = queue_behind(&c, name, c.lock(name)).await;
    let (second, _) = queue_behind(&c, name, c.lock(name)).await;
    let delete = |key: &str| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            },
        )),
    };
    let both = pb::TxnRequest {
        success: vec![delete(holder.key()), delete(&queued_key)],
        ..Default::default()
    };
    let resp = within("delete both", WAIT, a.txn_raw(both))
        .await
        .expect("txn");
    assert!(resp.succeeded);
    let (g, _) = first.guard("the first waiter of the client").await;
    assert!(!second.is_finished(), "two holders at once");
    release(g).await;
    let (g, _) = second.guard("the waiter counting on the copy").await;
    release(g).await;
    assert!(queued.outcome("the deleted waiter").await.is_err());
    drop(holder);
    assert_nothing_queued(&a, name).await;
}

/// Two keys under a lock's name created by one transaction share a create
/// revision. A waiter behind both must wait for both: the newest key
/// before mine and the oldest key of all having one revision does not make
/// them one key (it took the lock as soon as the one it watched went,
/// with the other still there; found by review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_behind_two_keys_of_one_revision_waits_for_both() {
    use locker::wire::etcdserverpb as pb;
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let rec = Recorder::default();
    let own = connect_recorded(etcd.endpoints(), &rec).await;
    let name = "one-revision/lock";
    let (a, b) = (format!("{name}/a"), format!("{name}/b"));
    let put = |key: &str| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        })),
    };
    let both = pb::TxnRequest {
        success: vec![put(&a), put(&b)],
        ..Default::default()
    };
    within("put both", WAIT, client.txn_raw(both))
        .await
        .expect("txn");
    let (waiter, _) = queue_behind(&client, name, own.lock(name)).await;
    wait_quiet(std::slice::from_ref(&rec)).await;
    // Delete first the key the waiter watches (either may be its witness).
    let watched = |key: &str| {
        rec.count(|r| r.path == paths::WATCH && r.request.contains(&format!("create \"{key}\"")))
    };
    let (first, second) = match (watched(&a), watched(&b)) {
        (0, 0) => panic!("the waiter watches neither key"),
        (0, _) => (b, a),
        _ => (a, b),
    };
    let t = Instant::now();
    within("delete", WAIT, client.delete(&first))
        .await
        .expect("delete");
    wait_until("the waiter to read after the deletion", WAIT, || {
        let n = rec.count_since(t, |r| r.kind == WireKind::Unary);
        async move { n > 0 }
    })
    .await;
    wait_quiet(std::slice::from_ref(&rec)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter took the lock while {second} was still there"
    );
    within("delete", WAIT, client.delete(&second))
        .await
        .expect("delete");
    let (g, _) = waiter.guard("the waiter").await;
    release(g).await;
    assert_nothing_queued(&client, name).await;
}

// ---------------------------------------------------------------------------
// Sessions: a name's keys of different shapes
// ---------------------------------------------------------------------------

/// A session reader whose release could not reach etcd leaves its key
/// `{name}/read/{lease}` behind, and the session marks the name so that its
/// next request for it deletes that key first. The next request being a
/// writer (key `{name}/{lease}`) must delete the reader's key, not only a
/// key of its own shape: otherwise the writer queues behind its own
/// session's reader and never gets the lock while the session lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_writer_after_a_failed_reader_release_is_not_blocked_by_it() {
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let client = within(
        "connect through the proxy",
        WAIT,
        Client::builder()
            .endpoints([proxy.url()])
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1))
            .connect(),
    )
    .await
    .expect("connect");
    let s = within("session", WAIT, client.session(Duration::from_secs(20)))
        .await
        .expect("session");
    let name = "session/shapes";
    let r = within("read_lock", WAIT, s.read_lock(name))
        .await
        .expect("read_lock");
    let reader_key = r.key().to_owned();

    proxy.set_mode(ProxyMode::Refuse);
    let failed = within("release", WAIT, r.release()).await;
    assert!(
        failed.is_err(),
        "the release reached etcd through a refusing proxy"
    );
    proxy.set_mode(ProxyMode::Pass);
    assert_eq!(
        queue_keys(&direct, name).await,
        [reader_key.as_str()],
        "the reader's key is left"
    );

    let w = within(
        "write_lock on the same session",
        WAIT,
        s.write_lock(name).timeout(Duration::from_secs(3)),
    )
    .await
    .unwrap_or_else(|e| {
        panic!("the session's writer is blocked by its own stale reader {reader_key}: {e}")
    });
    assert_eq!(queue_keys(&direct, name).await, [w.key()]);
    release(w).await;
    within("close", WAIT, s.close()).await.expect("close");
    assert_nothing_queued(&direct, name).await;
}

/// One name per session at a time, whatever the primitive: a session that
/// holds a read lock, or a permit, of a name is refused a second request of
/// any kind for it (`AlreadyLocked`) and nothing is queued for the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_uses_a_name_once_whatever_the_primitive() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let s = session(&client).await;
    let name = "session/once";
    let r = within("read_lock", WAIT, s.read_lock(name))
        .await
        .expect("read_lock");
    let again: Vec<locker::Result<LockGuard>> = vec![
        within("read_lock", WAIT, s.read_lock(name)).await,
        within("write_lock", WAIT, s.write_lock(name)).await,
        within("lock", WAIT, s.lock(name)).await,
    ];
    for outcome in again {
        assert!(
            matches!(outcome, Err(Error::AlreadyLocked { .. })),
            "{outcome:?}"
        );
    }
    assert!(matches!(
        within("try_write_lock", WAIT, s.try_write_lock(name)).await,
        Err(Error::AlreadyLocked { .. })
    ));
    assert_eq!(queue_keys(&client, name).await, [r.key()]);
    release(r).await;

    let p = within("acquire", WAIT, s.semaphore(name, 2).acquire())
        .await
        .expect("a permit");
    assert!(matches!(
        within("acquire", WAIT, s.semaphore(name, 2).acquire()).await,
        Err(Error::AlreadyLocked { .. })
    ));
    assert_eq!(queue_keys(&client, name).await, [p.key()]);
    release(p).await;
    within("close", WAIT, s.close()).await.expect("close");
    assert_nothing_queued(&client, name).await;
}

// ---------------------------------------------------------------------------
// Semaphore try, cancellation, timeouts
// ---------------------------------------------------------------------------

/// `try_acquire` takes a free permit (up to N, with its own lease or on a
/// session), and when all N are held reports the oldest holder and leaves
/// nothing queued; a semaphore of 1 behaves as a try-lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_try_takes_free_permits_and_leaves_nothing_when_full() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let s = session(&other).await;
    let name = "sem/try";
    let p1 = expect_acquired(
        within("try_acquire", WAIT, client.semaphore(name, 2).try_acquire())
            .await
            .expect("try_acquire"),
        "a free semaphore",
    );
    let p2 = expect_acquired(
        within("try_acquire", WAIT, s.semaphore(name, 2).try_acquire())
            .await
            .expect("try_acquire"),
        "one permit left",
    );
    assert!(p1.fencing_token() < p2.fencing_token());
    for t in [
        other.semaphore(name, 2).try_acquire(),
        client.semaphore(name, 2).try_acquire(),
    ] {
        let h = expect_held(
            within("try", WAIT, t).await.expect("try"),
            "a full semaphore",
        );
        assert_eq!(h.key, p1.key(), "the oldest holder is reported");
    }
    assert_eq!(
        queue_keys(&client, name).await,
        [p1.key(), p2.key()],
        "a refused try left a key"
    );
    // A waiter queued: a try is refused too, and the waiter keeps its place.
    let (waiter, waiter_key) =
        queue_behind(&client, name, other.semaphore(name, 2).acquire()).await;
    let h = expect_held(
        within("try", WAIT, client.semaphore(name, 2).try_acquire())
            .await
            .expect("try"),
        "a full semaphore with a waiter",
    );
    assert_eq!(h.key, p1.key());
    assert_eq!(
        queue_keys(&client, name).await,
        [p1.key(), p2.key(), waiter_key.as_str()]
    );
    release(p1).await;
    let (w, _) = waiter.guard("the waiter").await;
    release(p2).await;
    release(w).await;
    assert_nothing_queued(&client, name).await;

    // A semaphore of 1.
    let one = "sem/try-one";
    let g = expect_acquired(
        within("try", WAIT, client.semaphore(one, 1).try_acquire())
            .await
            .expect("try"),
        "a free semaphore of 1",
    );
    let h = expect_held(
        within("try", WAIT, s.semaphore(one, 1).try_acquire())
            .await
            .expect("try"),
        "a held semaphore of 1",
    );
    assert_eq!(h.key, g.key());
    assert_eq!(queue_keys(&client, one).await, [g.key()]);
    release(g).await;
    within("close", WAIT, s.close()).await.expect("close");
    assert_nothing_queued(&client, one).await;
}

/// A waiting reader or permit request that is dropped, or that times out,
/// leaves nothing queued (own lease or session); the waiter queued behind
/// it keeps its turn and gets in when the holder leaves; the session can
/// ask for the name again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_timed_out_waiter_leaves_nothing_and_the_next_keeps_its_turn() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let s = session(&other).await;

    // Readers behind a writer.
    let name = "cancel/rw";
    let w = within("write_lock", WAIT, client.write_lock(name))
        .await
        .expect("write_lock");
    let (dropped, dropped_key) = queue_behind(&client, name, other.read_lock(name)).await;
    let (on_session, session_key) = queue_behind(&client, name, s.read_lock(name)).await;
    let third = connect(etcd.endpoints()).await;
    let (last, last_key) = queue_behind(&client, name, third.read_lock(name)).await;
    dropped.task.abort();
    on_session.task.abort();
    wait_queue_is(&client, name, &[w.key().to_owned(), last_key.clone()]).await;
    assert!(!last.is_finished());
    let timed_out = within(
        "read_lock with a timeout",
        WAIT,
        s.read_lock(name).timeout(Duration::from_millis(300)),
    )
    .await;
    assert!(
        matches!(timed_out, Err(Error::AcquireTimeout { .. })),
        "{timed_out:?}"
    );
    assert_eq!(
        queue_keys(&client, name).await,
        [w.key(), last_key.as_str()],
        "left behind: {dropped_key} or {session_key}"
    );
    release(w).await;
    let (r, _) = last.guard("the reader behind the cancelled ones").await;
    let again = within("read_lock on the session", WAIT, s.read_lock(name))
        .await
        .expect("the session asks again");
    release(again).await;
    release(r).await;
    assert_nothing_queued(&client, name).await;

    // Permits.
    let name = "cancel/sem";
    let h = within("acquire", WAIT, client.semaphore(name, 1).acquire())
        .await
        .expect("a permit");
    let (dropped, _) = queue_behind(&client, name, s.semaphore(name, 1).acquire()).await;
    let (last, last_key) = queue_behind(&client, name, third.semaphore(name, 1).acquire()).await;
    dropped.task.abort();
    wait_queue_is(&client, name, &[h.key().to_owned(), last_key.clone()]).await;
    let timed_out = within(
        "acquire with a timeout",
        WAIT,
        other
            .semaphore(name, 1)
            .acquire()
            .timeout(Duration::from_millis(300)),
    )
    .await;
    assert!(
        matches!(timed_out, Err(Error::AcquireTimeout { .. })),
        "{timed_out:?}"
    );
    assert_eq!(
        queue_keys(&client, name).await,
        [h.key(), last_key.as_str()]
    );
    release(h).await;
    let (p, _) = last
        .guard("the permit waiter behind the cancelled ones")
        .await;
    release(p).await;
    within("close", WAIT, s.close()).await.expect("close");
    assert_nothing_queued(&client, name).await;
}

// ---------------------------------------------------------------------------
// Guards of readers and permits
// ---------------------------------------------------------------------------

/// A reader's and a permit holder's guards write only while they hold:
/// a guarded put succeeds, then, once the lease is revoked behind their
/// back, fails with `LockLost`; `lost()` fires and `release` reports the
/// loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_and_permit_guards_write_only_while_they_hold() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let other = connect(etcd.endpoints()).await;
    let r = within("read_lock", WAIT, other.read_lock("guard/rw"))
        .await
        .expect("read_lock");
    let p = within("acquire", WAIT, other.semaphore("guard/sem", 3).acquire())
        .await
        .expect("a permit");
    for g in [&r, &p] {
        let at = within("put", WAIT, g.put("guard/data", g.key()))
            .await
            .expect("a guarded put while holding");
        assert!(at > g.fencing_token());
        assert!(
            within("revoke", WAIT, client.lease_revoke(g.lease()))
                .await
                .expect("revoke")
        );
        let e = within("put", WAIT, g.put("guard/data", "late")).await;
        assert!(matches!(e, Err(ref e) if e.is_lost()), "{e:?}");
        within("lost", WAIT, g.lost()).await;
    }
    let data = within("get", WAIT, client.get("guard/data"))
        .await
        .expect("get")
        .expect("data");
    assert_eq!(data.value, p.key().as_bytes(), "no late write landed");
    for g in [r, p] {
        let e = within("release", WAIT, g.release()).await;
        assert!(matches!(e, Err(ref e) if e.is_lost()), "{e:?}");
    }
}

/// A semaphore waiter cut off from etcd until its lease expired is not
/// granted a permit when the holder leaves (etcd #16221 with an expired
/// lease rather than a revoked one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_waiter_whose_lease_expired_while_waiting_is_not_granted() {
    let etcd = start_etcd().await;
    let direct = connect(etcd.endpoints()).await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let cut_off = within(
        "connect through the proxy",
        WAIT,
        Client::builder()
            .endpoints([proxy.url()])
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1))
            .connect(),
    )
    .await
    .expect("connect");
    let name = "false-grant/expired-permit";
    let h = within("acquire", WAIT, direct.semaphore(name, 1).acquire())
        .await
        .expect("a permit");
    let (waiter, waiter_key) = queue_behind(
        &direct,
        name,
        cut_off
            .semaphore(name, 1)
            .acquire()
            .ttl(Duration::from_secs(2)),
    )
    .await;
    proxy.set_mode(ProxyMode::Blackhole);
    wait_until("the waiter's key expired", WAIT, || async {
        direct.get(&waiter_key).await.expect("get").is_none()
    })
    .await;
    release(h).await;
    proxy.set_mode(ProxyMode::Pass);
    match waiter.outcome("the waiter").await {
        Ok(g) => panic!("a waiter whose lease expired got a permit: {g:?}"),
        Err(e) => assert!(e.is_lost() || e.is_connectivity(), "{e:?}"),
    }
    assert_nothing_queued(&direct, name).await;
}

/// A semaphore of 2, two holders and 6 waiters queued, each on a client of
/// its own. A waiter in the middle of the queue gives up (its request is
/// dropped): every client's copy of the name sees the deletion, no waiter
/// behind it is admitted (two permits are still held), and none of them
/// reads anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_leaving_the_queue_wakes_no_one_and_reads_nothing() {
    const WAITERS: usize = 6;
    const LEAVING: usize = 2;
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let name = "sem/leaving";
    let mut holders = Vec::new();
    for _ in 0..2 {
        holders.push(
            within("acquire", WAIT, client.semaphore(name, 2).acquire())
                .await
                .expect("a permit"),
        );
    }
    let mut recs = Vec::new();
    let mut clients = Vec::new();
    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        let rec = Recorder::default();
        let own = connect_recorded(etcd.endpoints(), &rec).await;
        let (p, _) = queue_behind(&client, name, own.semaphore(name, 2).acquire()).await;
        wait_watching(&rec).await;
        recs.push(rec);
        clients.push(own);
        waiters.push(p);
    }
    wait_quiet(&recs).await;
    let t0 = Instant::now();
    waiters[LEAVING].task.abort();
    wait_queued(&client, name, 2 + WAITERS - 1).await;
    for c in &clients {
        within("status", WAIT, c.status()).await.expect("status");
    }
    wait_quiet(&recs).await;
    let traffic: Vec<Traffic> = recs.iter().map(|r| Traffic::since(r, t0)).collect();
    let woken: Vec<usize> = (0..WAITERS)
        .filter(|&i| i != LEAVING && !traffic[i].no_reads())
        .collect();
    assert_eq!(woken, Vec::<usize>::new(), "{traffic:?}");
    for (i, w) in waiters.iter().enumerate() {
        assert!(i == LEAVING || !w.is_finished(), "waiter {i} was admitted");
    }
    eprintln!(
        "a waiter leaving a semaphore of 2 with {WAITERS} waiters: woke {woken:?}; their traffic \
         (watch messages, KV/Txn, KV/Range): {:?}",
        woken
            .iter()
            .map(|&i| (traffic[i].watch, traffic[i].txn, traffic[i].range))
            .collect::<Vec<_>>()
    );
    for g in holders {
        release(g).await;
    }
    for (i, w) in waiters.into_iter().enumerate() {
        if i != LEAVING {
            let (g, _) = w.guard("a waiter").await;
            release(g).await;
        }
    }
    assert_nothing_queued(&client, name).await;
}

// ---------------------------------------------------------------------------
// Mixed contention
// ---------------------------------------------------------------------------

/// 6 contenders on their own connections (half on sessions) take a name
/// 12 times each, as readers or writers by turns, some rounds by the try
/// forms: a writer never holds beside anyone, a reader never beside a
/// writer, and readers do hold together at some point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_overlap_a_writer_under_contention() {
    const CONTENDERS: usize = 6;
    const ROUNDS: usize = 12;
    let etcd = start_etcd().await;
    let name = "rw/mixed";
    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let most_readers = Arc::new(AtomicUsize::new(0));
    let tried = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CONTENDERS {
        let client = connect(etcd.endpoints()).await;
        let s = if c % 2 == 1 {
            Some(session(&client).await)
        } else {
            None
        };
        let (readers, writers, most_readers, tried) = (
            readers.clone(),
            writers.clone(),
            most_readers.clone(),
            tried.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                // Two readers for each writer; every fourth round a try.
                let write = (c + round) % 3 == 0;
                let try_it = round % 4 == 3;
                let g = match (&s, write, try_it) {
                    (Some(s), true, true) => {
                        within("try", WAIT, s.try_write_lock(name)).await.map(Some)
                    }
                    (Some(s), false, true) => {
                        within("try", WAIT, s.try_read_lock(name)).await.map(Some)
                    }
                    (None, true, true) => within("try", WAIT, client.try_write_lock(name))
                        .await
                        .map(Some),
                    (None, false, true) => within("try", WAIT, client.try_read_lock(name))
                        .await
                        .map(Some),
                    (Some(s), true, false) => within("lock", WAIT, s.write_lock(name))
                        .await
                        .map(|g| Some(TryLock::Acquired(g))),
                    (Some(s), false, false) => within("lock", WAIT, s.read_lock(name))
                        .await
                        .map(|g| Some(TryLock::Acquired(g))),
                    (None, true, false) => within("lock", WAIT, client.write_lock(name))
                        .await
                        .map(|g| Some(TryLock::Acquired(g))),
                    (None, false, false) => within("lock", WAIT, client.read_lock(name))
                        .await
                        .map(|g| Some(TryLock::Acquired(g))),
                }
                .unwrap_or_else(|e| panic!("contender {c} round {round}: {e}"));
                let g = match g {
                    Some(TryLock::Acquired(g)) => g,
                    _ => continue,
                };
                if try_it {
                    tried.fetch_add(1, Ordering::SeqCst);
                }
                if write {
                    let w = writers.fetch_add(1, Ordering::SeqCst) + 1;
                    let r = readers.load(Ordering::SeqCst);
                    assert!(
                        w == 1 && r == 0,
                        "contender {c}: a writer beside {w} writers, {r} readers"
                    );
                } else {
                    let r = readers.fetch_add(1, Ordering::SeqCst) + 1;
                    most_readers.fetch_max(r, Ordering::SeqCst);
                    let w = writers.load(Ordering::SeqCst);
                    assert_eq!(w, 0, "contender {c}: a reader beside a writer");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                if write {
                    writers.fetch_sub(1, Ordering::SeqCst);
                } else {
                    readers.fetch_sub(1, Ordering::SeqCst);
                }
                within("release", WAIT, g.release())
                    .await
                    .unwrap_or_else(|e| panic!("contender {c} round {round} release: {e}"));
            }
            if let Some(s) = s {
                within("close", WAIT, s.close()).await.expect("close");
            }
        }));
    }
    for (c, t) in tasks.into_iter().enumerate() {
        within("a contender finishing", Duration::from_secs(30), t)
            .await
            .unwrap_or_else(|e| panic!("contender {c}: {e}"));
    }
    let most = most_readers.load(Ordering::SeqCst);
    eprintln!(
        "mixed contention: at most {most} readers at once; {} tries got in",
        tried.load(Ordering::SeqCst)
    );
    assert!(most >= 2, "readers never held together");
    let client = connect(etcd.endpoints()).await;
    assert_nothing_queued(&client, name).await;
}

/// 6 clients race `try_acquire` on a semaphore of 2, 15 times each: a try
/// that queues and leaves never lets a third in, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_semaphore_tries_never_admit_a_third() {
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 15;
    let etcd = start_etcd().await;
    let name = "sem/try-race";
    let inside = Arc::new(AtomicUsize::new(0));
    let got = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = connect(etcd.endpoints()).await;
        let (inside, got) = (inside.clone(), got.clone());
        tasks.push(tokio::spawn(async move {
            let sem = client.semaphore(name, 2);
            for round in 0..ROUNDS {
                let t = within("try_acquire", WAIT, sem.try_acquire())
                    .await
                    .unwrap_or_else(|e| panic!("client {c} round {round}: {e}"));
                if let TryLock::Acquired(g) = t {
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(n <= 2, "client {c}: holder number {n}");
                    got.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    within("release", WAIT, g.release()).await.expect("release");
                }
            }
        }));
    }
    for (c, t) in tasks.into_iter().enumerate() {
        within("a client finishing", Duration::from_secs(30), t)
            .await
            .unwrap_or_else(|e| panic!("client {c}: {e}"));
    }
    let got = got.load(Ordering::SeqCst);
    eprintln!("racing tries: {got} of {} got a permit", CLIENTS * ROUNDS);
    assert!(got > 0);
    let client = connect(etcd.endpoints()).await;
    assert_nothing_queued(&client, name).await;
}
