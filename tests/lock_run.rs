//! `LockGuard::run` (and `Leadership::run`): the work finishes, or it is
//! dropped before the lock could be lost, and the answer says why.
//!
//! Run with `cargo test --features testing --test lock_run`.
#![cfg(feature = "testing")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use locker::testing::{Etcd, Proxy, ProxyMode, connect, connect_through, within};
use locker::{LostReason, RunStopped};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

async fn start_etcd() -> Etcd {
    Etcd::single().await.expect("start a single-member etcd")
}

/// Notes when it is dropped: the moment the work stopped.
struct DropClock(Arc<Mutex<Option<Instant>>>);

impl Drop for DropClock {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

/// Work that never ends by itself, and the clock of its drop.
fn endless() -> (impl Future<Output = ()>, Arc<Mutex<Option<Instant>>>) {
    let dropped = Arc::new(Mutex::new(None));
    let clock = DropClock(dropped.clone());
    let work = async move {
        let _clock = clock;
        std::future::pending::<()>().await;
    };
    (work, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_the_output_of_work_that_finishes() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let guard = within("lock", WAIT, client.lock("run/finish"))
        .await
        .expect("lock");
    let out = guard
        .run(Duration::from_millis(300), async { 42 })
        .await
        .expect("the work finishes");
    assert_eq!(out, 42);
    guard.release().await.expect("release");
}

/// Cut off from etcd, the guard's deadline stops moving: the work is
/// dropped `margin` before it, while the lock is still held, and well
/// before a client straight to etcd is granted the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_drops_the_work_before_the_lease_of_a_cut_off_holder_could_expire() {
    let etcd = start_etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let cut_off = connect_through(&proxy).await;
    let direct = connect(etcd.endpoints()).await;
    let name = "run/cut";
    let guard = within("lock", WAIT, cut_off.lock(name).ttl(Duration::from_secs(2)))
        .await
        .expect("lock");
    let (work, dropped) = endless();

    proxy.set_mode(ProxyMode::Blackhole);
    let margin = Duration::from_millis(300);
    let stopped = within("run", WAIT, guard.run(margin, work)).await;
    assert_eq!(stopped, Err(RunStopped::DeadlineNear));
    let dropped_at = dropped.lock().unwrap().expect("the work was dropped");
    // Blackholed, no answer moves the deadline any more: this is the last.
    let deadline = guard.deadline().map_or(dropped_at, Instant::from_std);
    let next = within("the next holder", WAIT, direct.lock(name))
        .await
        .expect("lock");
    let granted = Instant::now();
    eprintln!(
        "run: work dropped {:?} before the guard's deadline, {:?} before the next holder",
        deadline.saturating_duration_since(dropped_at),
        granted.saturating_duration_since(dropped_at)
    );
    assert!(
        guard.deadline().is_none() || dropped_at + margin <= deadline + Duration::from_millis(50),
        "dropped later than the margin before the deadline"
    );
    assert!(dropped_at < granted);
    next.release().await.expect("release");
}

/// A leader whose lease is revoked from outside: the work is dropped when
/// the loss is seen, and the answer names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_run_stops_when_the_lease_is_revoked() {
    let etcd = start_etcd().await;
    let client = connect(etcd.endpoints()).await;
    let leader = within("campaign", WAIT, client.campaign("run/elect", "a"))
        .await
        .expect("campaign");
    let (work, dropped) = endless();
    let revoke = async {
        client.lease_revoke(leader.lease()).await.expect("revoke");
        std::future::pending::<()>().await
    };
    let stopped = within("run", WAIT, async {
        tokio::select! {
            r = leader.run(Duration::from_millis(300), work) => r,
            () = revoke => unreachable!(),
        }
    })
    .await;
    // The revoke shows as the key's deletion event or as the keepalive's
    // answer, whichever comes first.
    assert!(
        matches!(
            stopped,
            Err(RunStopped::Lost(
                LostReason::Expired | LostReason::KeyDeleted
            ))
        ),
        "{stopped:?}"
    );
    assert!(
        dropped.lock().unwrap().is_some(),
        "the work was not dropped"
    );
}
