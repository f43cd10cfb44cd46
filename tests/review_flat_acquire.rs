//! An adversarial review of the flat acquire `Txn` (commit b14d487): the
//! busy branch puts my key with `prev_kv` instead of a nested transaction,
//! so a resent or resumed acquire writes the key again and keeps its place.
//!
//! Tests marked `#[ignore = "bug: ..."]` fail today and are the evidence
//! for a bug not fixed here (`cargo test --all-features --test
//! review_flat_acquire -- --ignored`); the others are regression tests.
//! Everything runs against etcd processes and proxies the tests start
//! themselves; every wait has a deadline.

use std::time::Duration;

use locker::testing::{Etcd, Proxy, ProxyMode, within};
use locker::{Client, KeyValue};

/// The bound of one test step.
const STEP: Duration = Duration::from_secs(15);

async fn start_etcd() -> Etcd {
    within("start etcd", Duration::from_secs(30), Etcd::single())
        .await
        .expect("start etcd")
}

/// A client of its own to `endpoints`, without HTTP/2 keepalive pings.
async fn connect(endpoints: Vec<String>, request_timeout: Duration) -> Client {
    let builder = Client::builder()
        .endpoints(endpoints)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(request_timeout)
        .http2_keepalive(None);
    within("connect", STEP, builder.connect())
        .await
        .expect("connect")
}

async fn get(client: &Client, key: &str) -> Option<KeyValue> {
    within("read a key", STEP, client.get(key))
        .await
        .expect("read a key")
}

/// A reader's acquire whose answer is lost (the proxy drops it) is resent
/// through the other endpoint. The name is free, so both copies take the
/// "no blocker" branch (a reader's own key is not a blocker): the guard
/// must still carry its key's create revision as its token, write while it
/// holds, and its release must remove the key (or writers wait forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_read_lock_on_a_free_name_keeps_its_keys_token() {
    const NAME: &str = "rw-resent";
    let etcd = start_etcd().await;
    let dropping = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let passing = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let client = connect(
        vec![dropping.url(), passing.url()],
        Duration::from_millis(500),
    )
    .await;
    let observer = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let writer_client = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let session = within("session", STEP, client.session(Duration::from_secs(10)))
        .await
        .expect("session");
    let key = format!("{NAME}/read/{}", session.lease());
    dropping.set_mode(ProxyMode::DropResponses);
    let guard = within("read_lock", STEP, session.read_lock(NAME).timeout(STEP))
        .await
        .expect("read_lock while answers are dropped");
    dropping.set_mode(ProxyMode::Pass);
    let kv = get(&observer, &key).await.expect("the reader's key");
    assert_eq!(kv.version, 2, "the acquire was not resent: {kv:?}");
    assert_eq!(
        guard.fencing_token(),
        kv.create_revision,
        "the guard's token is not its key's create revision: {kv:?}"
    );
    within("guarded put", STEP, guard.put("rw-data", "reader"))
        .await
        .expect("a guarded write while holding the read lock");
    within("release", STEP, guard.release())
        .await
        .expect("release");
    assert!(get(&observer, &key).await.is_none(), "the key stayed");
    let w = within(
        "a writer after the reader left",
        STEP,
        writer_client.lock(NAME).timeout(Duration::from_secs(5)),
    )
    .await
    .expect("the writer");
    within("writer release", STEP, w.release())
        .await
        .expect("writer release");
    within("close", STEP, session.close()).await.expect("close");
}

/// A process restarted on its old lease (`resume_session`) takes the read
/// lock it held before: it keeps its old key, so its token is that key's
/// create revision, for `read_lock` and for `try_read_lock` alike, and its
/// release removes the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_lock_on_a_resumed_session_keeps_its_old_keys_token() {
    let etcd = start_etcd().await;
    let before = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let after = connect(etcd.endpoints(), Duration::from_secs(5)).await;
    let old = within("session", STEP, before.session(Duration::from_secs(10)))
        .await
        .expect("session");
    // The old process's readers stay alive (dropping them would release).
    let mut old_guards = Vec::new();
    for name in ["rw-resumed", "rw-resumed-try"] {
        let g = within("old read_lock", STEP, old.read_lock(name))
            .await
            .expect("old read_lock");
        old_guards.push(g);
    }
    let resumed = within("resume", STEP, after.resume_session(old.lease()))
        .await
        .expect("resume");
    let waiting = within("resumed read_lock", STEP, resumed.read_lock("rw-resumed"))
        .await
        .expect("resumed read_lock");
    let tried = match within(
        "resumed try_read_lock",
        STEP,
        resumed.try_read_lock("rw-resumed-try"),
    )
    .await
    .expect("resumed try_read_lock")
    {
        locker::TryLock::Acquired(g) => g,
        locker::TryLock::Held(h) => panic!("a free name was held by {h:?}"),
    };
    for (guard, old_guard) in [waiting, tried].into_iter().zip(&old_guards) {
        let kv = get(&after, guard.key()).await.expect("the reader's key");
        assert_eq!(kv.create_revision, old_guard.fencing_token());
        assert_eq!(
            guard.fencing_token(),
            kv.create_revision,
            "{}: the resumed guard's token is not its key's create revision",
            guard.key()
        );
        within("guarded put", STEP, guard.put("rw-data", "resumed"))
            .await
            .expect("a guarded write while holding the read lock");
        let key = guard.key().to_owned();
        within("release", STEP, guard.release())
            .await
            .expect("release");
        assert!(get(&after, &key).await.is_none(), "{key} stayed");
    }
    drop(old_guards);
    within("close", STEP, resumed.close()).await.expect("close");
    drop(old);
}
