//! Least privilege: a user whose role only reads and writes the lock keys
//! takes every primitive, through the library and the CLI, on every etcd
//! version the suite runs on. No call on the way needs the root role: etcd
//! 3.5.28 and later refuse `Maintenance/Status` to anyone else, so neither
//! `connect` nor any primitive may send one.
//!
//! Run with `cargo test --all-features --test least_privilege`.
#![cfg(all(feature = "testing", feature = "cli"))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use locker::testing::{Etcd, wait_until, within};
use locker::{Client, ElectionEvent, Error, LockEvent, TryLock, WireKind, WireRecord};

mod common;
use common::{Proc, SHORT, locker, run};

/// Limit for one step against a local etcd.
const WAIT: Duration = Duration::from_secs(15);

/// The password of the `root` user the harness creates to enable auth.
const ROOT_PASSWORD: &str = "root-password";

/// The message of a refusal for lack of permission on the lock's keys.
const PREFIX_MESSAGE: &str = "the user needs read-write permission on the lock's key prefix";

/// A single-member etcd with auth on, and `user` (password `{user}pw`)
/// whose only role may read and write keys under `locks/`.
async fn etcd_with_lock_user(user: &str) -> Etcd {
    let etcd = Etcd::single().await.expect("etcd");
    etcd.enable_auth(user, &format!("{user}pw"), "locks/")
        .expect("auth");
    etcd
}

/// Every wire record of a client, as (path, kind, status).
#[derive(Clone, Default)]
struct Wire(Arc<Mutex<Vec<(String, WireKind, String)>>>);

impl Wire {
    fn sink(&self) -> impl Fn(&WireRecord) + Send + Sync + 'static {
        let records = self.0.clone();
        move |r: &WireRecord| {
            records
                .lock()
                .unwrap()
                .push((r.path.to_owned(), r.kind, r.status.clone()));
        }
    }

    fn paths(&self) -> Vec<String> {
        let records = self.0.lock().unwrap();
        records.iter().map(|(p, _, _)| p.clone()).collect()
    }

    /// Keepalive answers received so far.
    fn keepalive_answers(&self) -> usize {
        let records = self.0.lock().unwrap();
        records
            .iter()
            .filter(|(p, k, _)| p == locker::paths::LEASE_KEEPALIVE && *k == WireKind::StreamRecv)
            .count()
    }
}

async fn connect_as(etcd: &Etcd, user: &str, password: &str, wire: &Wire) -> Client {
    Client::builder()
        .endpoints(etcd.endpoints())
        .user(user, password)
        .audit(wire.sink())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"))
}

/// Takes and releases each primitive on names under `base`, as a user
/// whose role covers `{base}...` only.
async fn every_primitive(client: &Client, wire: &Wire, base: &str) {
    locks(client, wire, base).await;
    election(client, base).await;
    shared(client, base).await;
    watched(client, base).await;
}

/// A lock, try_lock, a session lock across keepalives.
async fn locks(client: &Client, wire: &Wire, base: &str) {
    // A lock on its own lease, seen by holder() and holders().
    let name = format!("{base}/lock");
    let g = within("lock", WAIT, client.lock(name.as_str()))
        .await
        .expect("lock");
    let h = client
        .holder(&name)
        .await
        .expect("holder")
        .expect("a holder");
    assert_eq!(h.key, g.key());
    let all = client.holders(&name).await.expect("holders");
    assert_eq!(all.holders.len(), 1, "{all:?}");
    g.put(format!("{base}/data"), "x")
        .await
        .expect("a guarded write");
    g.release().await.expect("release");

    // try_lock, free.
    match client.try_lock(name.as_str()).await.expect("try_lock") {
        TryLock::Acquired(g) => g.release().await.expect("release"),
        TryLock::Held(h) => panic!("held by {h:?}"),
    }

    // A session lock, held across keepalives (each needs write permission
    // on the lease's keys since etcd 3.5.28).
    let s = client
        .session(Duration::from_secs(2))
        .await
        .expect("session");
    let g = s
        .lock(format!("{base}/session").as_str())
        .await
        .expect("session lock");
    let before = wire.keepalive_answers();
    wait_until("two keepalives are answered", WAIT, || async {
        wire.keepalive_answers() >= before + 2
    })
    .await;
    assert!(!g.is_lost(), "the session lock survived its keepalives");
    g.release().await.expect("session release");
    s.close().await.expect("session close");
}

/// An election, observed.
async fn election(client: &Client, base: &str) {
    let name = format!("{base}/election");
    let mut events = client.observe(&name).await.expect("observe");
    let first = within("the first event", WAIT, events.next()).await;
    assert!(
        matches!(first, Some(Ok(ElectionEvent::NoLeader { .. }))),
        "{first:?}"
    );
    let mut leader = client
        .campaign(name.as_str(), "me")
        .await
        .expect("campaign");
    let seen = within("the leader event", WAIT, events.next()).await;
    match seen {
        Some(Ok(ElectionEvent::Leader { key, .. })) => assert_eq!(key, leader.key()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        client.leader(&name).await.expect("leader").map(|h| h.key),
        Some(leader.key().to_owned())
    );
    leader.proclaim("me too").await.expect("proclaim");
    leader.resign().await.expect("resign");
}

/// A read-write lock and a semaphore.
async fn shared(client: &Client, base: &str) {
    // A read-write lock: two readers, then a writer.
    let name = format!("{base}/rw");
    let r1 = client.read_lock(name.as_str()).await.expect("read lock");
    let r2 = client
        .read_lock(name.as_str())
        .await
        .expect("another read lock");
    r1.release().await.expect("release");
    r2.release().await.expect("release");
    let w = client.write_lock(name.as_str()).await.expect("write lock");
    w.release().await.expect("release");

    // A semaphore of two, and its limit key.
    let name = format!("{base}/sem");
    let sem = client.semaphore(name.as_str(), 2);
    let p1 = sem.acquire().await.expect("a permit");
    let p2 = sem.try_acquire().await.expect("try a permit");
    let TryLock::Acquired(p2) = p2 else {
        panic!("the second permit is free: {p2:?}")
    };
    let all = client.holders(&name).await.expect("holders");
    assert_eq!((all.holders.len(), all.permits), (2, Some(2)), "{all:?}");
    p1.release().await.expect("release");
    p2.release().await.expect("release");
}

/// The lock-state stream.
async fn watched(client: &Client, base: &str) {
    let name = format!("{base}/watched");
    let mut watch = client.watch_lock(&name).await.expect("watch_lock");
    let first = within("the snapshot", WAIT, watch.next()).await;
    assert!(
        matches!(first, Some(Ok(LockEvent::Snapshot { holder: None, .. }))),
        "{first:?}"
    );
    let g = client.lock(name.as_str()).await.expect("lock");
    let seen = within("the acquired event", WAIT, watch.next()).await;
    assert!(
        matches!(&seen, Some(Ok(LockEvent::Acquired { holder, .. })) if holder.key == g.key()),
        "{seen:?}"
    );
    g.release().await.expect("release");
}

/// The versions whose `Maintenance/Status` needs the root role, from etcd's
/// source (`authMaintenanceServer.Status`): 3.5.28 to 3.5.31, and 3.6
/// before 3.6.12. Earlier versions check nothing; later ones only that the
/// caller is authenticated.
fn status_needs_root(version: &str) -> bool {
    let v: Vec<u32> = version
        .split('.')
        .map(|n| n.parse().expect("a numeric version"))
        .collect();
    matches!(v[..], [3, 5, p] if (28..32).contains(&p)) || matches!(v[..], [3, 6, p] if p < 12)
}

/// Asserts that no Maintenance call was made.
fn assert_no_maintenance(wire: &Wire) {
    let paths = wire.paths();
    assert!(
        !paths.iter().any(|p| p.contains("Maintenance")),
        "a Maintenance call was made: {paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_readwrite_on_the_lock_prefix_takes_every_primitive() {
    let etcd = etcd_with_lock_user("lp").await;
    let wire = Wire::default();
    let client = connect_as(&etcd, "lp", "lppw", &wire).await;
    assert_eq!(
        wire.paths(),
        [locker::paths::AUTHENTICATE],
        "connect with a user authenticates, and sends nothing else"
    );
    every_primitive(&client, &wire, "locks/lp").await;
    assert_no_maintenance(&wire);

    // Outside its prefix: refused, with the prefix message.
    let err = client.lock("other/x").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(err.to_string().contains(PREFIX_MESSAGE), "{err}");
}

/// A role for one name only: read-write on `{name}/` (its queue) and on
/// `{name}.permits` (a semaphore's limit, which `holders` reads too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_on_one_name_and_its_limit_key_is_enough() {
    let etcd = etcd_with_lock_user("lp").await;
    let root = |args: &[&str]| {
        let out = etcd
            .etcdctl(0)
            .expect("etcdctl")
            .arg(format!("--user=root:{ROOT_PASSWORD}"))
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    };
    root(&["role", "add", "one-name"]);
    for base in [
        "one/lock",
        "one/election",
        "one/rw",
        "one/sem",
        "one/watched",
    ] {
        let queue = format!("{base}/");
        let limit = format!("{base}.permits");
        root(&[
            "role",
            "grant-permission",
            "one-name",
            "readwrite",
            &queue,
            "--prefix=true",
        ]);
        root(&["role", "grant-permission", "one-name", "readwrite", &limit]);
    }
    root(&[
        "role",
        "grant-permission",
        "one-name",
        "readwrite",
        "one/session/",
        "--prefix=true",
    ]);
    root(&[
        "role",
        "grant-permission",
        "one-name",
        "readwrite",
        "one/data",
    ]);
    root(&["user", "add", "narrow:narrowpw"]);
    root(&["user", "grant-role", "narrow", "one-name"]);

    let wire = Wire::default();
    let client = connect_as(&etcd, "narrow", "narrowpw", &wire).await;
    every_primitive(&client, &wire, "one").await;
    assert_no_maintenance(&wire);

    // A name whose queue the role does not cover.
    let err = client.lock("one/other").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    // holders() reads the name's limit key as well as its queue.
    let err = client.holders("one/session").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
}

/// `Client::status` stays for those with the rights: root always gets it,
/// a user without the root role gets it only where etcd allows, and the
/// refusal names the root role and the etcd version that requires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_needs_the_root_role_only_where_etcd_says_so() {
    let etcd = etcd_with_lock_user("lp").await;
    let wire = Wire::default();
    let root = connect_as(&etcd, "root", ROOT_PASSWORD, &wire).await;
    let version = root.status().await.expect("root's status").version;
    let user = connect_as(&etcd, "lp", "lppw", &wire).await;
    match user.status().await {
        Ok(_) => assert!(!status_needs_root(&version), "etcd {version} answered"),
        Err(err) => {
            assert!(status_needs_root(&version), "etcd {version}: {err:?}");
            assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains("root role") && text.contains("3.5.28"),
                "{text}"
            );
            assert!(!text.contains(PREFIX_MESSAGE), "{text}");
        }
    }
    eprintln!(
        "etcd {version}: Status for a non-root user: {}",
        if status_needs_root(&version) {
            "refused"
        } else {
            "answered"
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_every_command_as_a_user_with_readwrite_on_the_lock_prefix() {
    let etcd = etcd_with_lock_user("cli").await;
    let ep = etcd.endpoints().join(",");
    let as_user = |args: &[&str]| {
        let mut all = vec!["--user", "cli:clipw"];
        all.extend_from_slice(args);
        locker(&ep, &all)
    };

    let r = run(
        as_user(&["--wire-log", "try", "locks/cli/try", "--", "true"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("Maintenance"), "{r:?}");
    let r = run(as_user(&["lock", "locks/cli/lock", "--", "true"]), SHORT).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(
        as_user(&["elect", "locks/cli/elect", "me", "--", "true"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");

    // A holder without a command; holder and watch see it.
    let name = "locks/cli/held";
    let mut holder = Proc::spawn(as_user(&["lock", name]));
    let line = holder
        .line("key=...", SHORT, |l| l.starts_with("key="))
        .await;
    let key = line
        .split(' ')
        .find_map(|w| w.strip_prefix("key="))
        .expect("a key")
        .to_owned();
    let r = run(as_user(&["holder", name]), SHORT).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&key), "{r:?}");
    let mut watch = Proc::spawn(as_user(&["watch", name]));
    let snap = watch
        .line("snapshot", SHORT, |l| l.starts_with("snapshot "))
        .await;
    assert!(snap.contains(&key), "{snap}");
    holder.signal(libc::SIGTERM);
    assert_eq!(holder.exit(SHORT).await, 0);
    watch
        .line("released", SHORT, |l| {
            l.starts_with("released ") && l.contains(&key)
        })
        .await;
    watch.signal(libc::SIGTERM);
    assert_eq!(watch.exit(SHORT).await, 0);

    // Outside the prefix: 77, and the message names the prefix.
    let r = run(as_user(&["try", "other/cli", "--", "true"]), SHORT).await;
    assert_eq!(r.code, 77, "{r:?}");
    assert!(r.stderr.contains(PREFIX_MESSAGE), "{r:?}");
}

/// Without a user, on a cluster with auth on: etcd 3.5.28 and later refuse
/// `Status` to a caller with no name, earlier versions answer it. Either
/// way etcd answered, so `connect` succeeds on every version; the first
/// lock is refused for want of a user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_user_connect_succeeds_on_every_version_and_a_lock_is_refused() {
    let etcd = etcd_with_lock_user("lp").await;
    let wire = Wire::default();
    let client = Client::builder()
        .endpoints(etcd.endpoints())
        .audit(wire.sink())
        .connect()
        .await
        .expect("connect without a user");
    assert_eq!(wire.paths(), [locker::paths::STATUS]);
    let err = client.lock("locks/anonymous").await.unwrap_err();
    assert!(err.to_string().contains("user name is empty"), "{err:?}");
}
