//! `locker lock A B C`, `locker try A B`: several names at once from the
//! shell, against real etcd processes started by `locker::testing`.
//!
//! Run with `cargo test --features testing,cli --test cli_sets`.
#![cfg(all(feature = "testing", feature = "cli"))]

use std::time::Duration;

use tokio::time::{Instant, sleep};

mod common;
use common::{Proc, SHORT, assert_one_error_line, etcd, locker, run, unique};

/// `locker lock NAMES...` without a command: waits for its line and
/// returns the process with its keys and token.
async fn hold_set(ep: &str, names: &[&str]) -> (Proc, Vec<String>, i64) {
    let mut args = vec!["lock"];
    args.extend_from_slice(names);
    let p = Proc::spawn(locker(ep, &args));
    let line = p.line("key=...", SHORT, |l| l.starts_with("key=")).await;
    let keys = line
        .split(' ')
        .filter_map(|w| w.strip_prefix("key="))
        .map(str::to_owned)
        .collect();
    let token = line
        .split(' ')
        .find_map(|w| w.strip_prefix("fencing_token="))
        .expect("a token")
        .parse()
        .expect("a number");
    (p, keys, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_under_every_lock_of_a_set_with_one_token() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let (a, b) = (unique("set-a"), unique("set-b"));
    let script = "echo \"NAMES=$(echo $LOCKER_NAMES)\"; echo \"KEYS=$(echo $LOCKER_KEYS)\"; \
                  echo TOKEN=$LOCKER_FENCING_TOKEN; echo REV=$ETCD_LOCK_REV; \
                  echo KEY=${LOCKER_KEY-unset}; exit 4";
    let r = run(
        locker(&ep, &["lock", &b, &a, &b, "--", "sh", "-c", script]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 4, "{r:?}");
    let var = |v: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{v}=")))
            .unwrap_or_else(|| panic!("{v} not printed: {r:?}"))
            .to_owned()
    };
    assert_eq!(var("NAMES"), format!("{a} {b}"));
    let keys: Vec<String> = var("KEYS").split(' ').map(str::to_owned).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].starts_with(&format!("{a}/")) && keys[1].starts_with(&format!("{b}/")));
    assert_eq!(var("TOKEN"), var("REV"));
    assert_eq!(var("KEY"), "unset", "a set has no single key");
    for n in [&a, &b] {
        assert_eq!(run(locker(&ep, &["holder", n]), SHORT).await.code, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_shows_the_set_and_what_a_waiting_set_waits_on() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let (a, b, c) = (unique("h-a"), unique("h-b"), unique("h-c"));
    let (mut first, keys, token) = hold_set(&ep, &[&a, &b]).await;
    let r = run(locker(&ep, &["holder", &a]), SHORT).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&format!("key={}", keys[0])), "{r:?}");
    assert!(
        r.stdout.contains(&format!("fencing_token={token}")),
        "{r:?}"
    );
    assert!(r.stdout.contains(&format!(" set={a},{b}")), "{r:?}");
    // A second set {B, C} waits on B only.
    let second = Proc::spawn(locker(&ep, &["lock", &c, &b]));
    let deadline = Instant::now() + SHORT;
    let r = loop {
        let r = run(locker(&ep, &["holder", "--queue", &b]), SHORT).await;
        if r.stdout.contains("waiting ") || Instant::now() > deadline {
            break r;
        }
        sleep(Duration::from_millis(50)).await;
    };
    assert!(
        r.stdout.contains(&format!(" set={b},{c} waiting_on={b}")),
        "{r:?}"
    );
    // The try of a busy set names the busy name's holder and leaves nothing.
    let t = run(locker(&ep, &["try", &a, &c]), SHORT).await;
    assert_eq!(t.code, 75, "{t:?}");
    assert_one_error_line(&t);
    assert!(t.stderr.contains(&a), "{t:?}");
    first.signal(libc::SIGTERM);
    assert_eq!(first.exit(SHORT).await, 0);
    let line = second
        .line("key=...", SHORT, |l| l.starts_with("key="))
        .await;
    assert_eq!(line.matches("key=").count(), 2, "{line}");
    second.signal(libc::SIGINT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sets_are_usage_errors() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    for args in [
        vec!["lock", "n", "n/sub"],
        vec!["lock", "a", "b", "--shared"],
        vec!["try", "a", "b", "--limit", "2"],
    ] {
        let r = run(locker(&ep, &args), SHORT).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_one_error_line(&r);
    }
    let many: Vec<String> = (0..65).map(|i| format!("m{i}")).collect();
    let mut args = vec!["lock"];
    args.extend(many.iter().map(String::as_str));
    let r = run(locker(&ep, &args), SHORT).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--max-txn-ops"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_set_leaves_nothing_queued() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let (a, b) = (unique("t-a"), unique("t-b"));
    let (mut holder, _, _) = hold_set(&ep, &[&b]).await;
    let r = run(
        locker(&ep, &["lock", &a, &b, "--timeout", "300ms", "--", "true"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 124, "{r:?}");
    assert_eq!(run(locker(&ep, &["holder", &a]), SHORT).await.code, 1);
    let q = run(locker(&ep, &["holder", "--queue", &b]), SHORT).await;
    assert!(!q.stdout.contains("waiting"), "{q:?}");
    holder.signal(libc::SIGTERM);
    assert_eq!(holder.exit(SHORT).await, 0);
}
