//! The `locker` command-line tool, driven as a user would drive it, against
//! real etcd processes started by `locker::testing`.
//!
//! Run with `cargo test --features testing,cli --test cli`.
#![cfg(all(feature = "testing", feature = "cli"))]

use std::time::Duration;

use locker::testing::{Etcd, Proxy, ProxyMode, closed_port, wait_until};
use tokio::process::Command;
use tokio::time::{Instant, sleep, timeout};

mod common;
use common::{Proc, Run, SHORT, assert_one_error_line, etcd, locker, prepare, run, unique};

/// etcdctl (of the etcd under test) talking to member 0, with a clean
/// environment.
fn etcdctl(etcd: &Etcd, args: &[&str]) -> Command {
    let mut c = Command::from(etcd.etcdctl(0).expect("etcdctl"));
    prepare(&mut c);
    c.args(args);
    c
}

/// `locker lock NAME [extra]` without a command: waits until it prints the
/// key line, and returns the process with the key and fencing token.
async fn hold(ep: &str, name: &str, extra: &[&str]) -> (Proc, String, i64) {
    let mut args = vec!["lock", name];
    args.extend_from_slice(extra);
    let p = Proc::spawn(locker(ep, &args));
    let line = p.line("key=...", SHORT, |l| l.starts_with("key=")).await;
    let field = |f: &str| {
        line.split(' ')
            .find_map(|w| w.strip_prefix(f))
            .unwrap_or_else(|| panic!("no {f} in {line:?}"))
            .to_owned()
    };
    let key = field("key=");
    let token: i64 = field("fencing_token=").parse().expect("a numeric token");
    (p, key, token)
}

/// Polls `locker holder NAME` until it exits with `want`.
async fn wait_holder_code(ep: &str, name: &str, want: i32, limit: Duration) -> Run {
    let deadline = Instant::now() + limit;
    loop {
        let r = run(locker(ep, &["holder", name]), SHORT).await;
        if r.code == want {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "holder {name} did not exit with {want} within {limit:?}; last: {r:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

async fn keys_under(ep: &str, name: &str) -> Vec<String> {
    let client = locker::Client::builder()
        .endpoints([ep])
        .connect()
        .await
        .expect("connect");
    let (kvs, _) = client
        .get_prefix(format!("{name}/"))
        .await
        .expect("get_prefix");
    kvs.iter().map(|kv| kv.key_str()).collect()
}

/// A shell command that says `ready`, then loops until SIGTERM, on which it
/// runs `on_term` and exits 0.
fn trap_term(on_term: &str) -> String {
    format!("trap '{on_term}; exit 0' TERM; echo ready; while :; do sleep 0.1; done")
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_gets_env_and_its_exit_code_is_passed_through() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("env");
    let script = "echo LOCKER_KEY=$LOCKER_KEY; echo LOCKER_FENCING_TOKEN=$LOCKER_FENCING_TOKEN; \
                  echo ETCD_LOCK_KEY=$ETCD_LOCK_KEY; echo ETCD_LOCK_REV=$ETCD_LOCK_REV; exit 3";
    let r = run(
        locker(&ep, &["lock", &name, "--", "sh", "-c", script]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
    let var = |v: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{v}=")))
            .unwrap_or_else(|| panic!("{v} not printed: {r:?}"))
            .to_owned()
    };
    let key = var("LOCKER_KEY");
    let hex = key
        .strip_prefix(&format!("{name}/"))
        .unwrap_or_else(|| panic!("key {key:?} is not {name}/<hex>"));
    assert!(
        !hex.is_empty()
            && hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "key {key:?} does not end in lowercase hex"
    );
    assert_eq!(var("ETCD_LOCK_KEY"), key);
    let token: i64 = var("LOCKER_FENCING_TOKEN")
        .parse()
        .expect("the token is a number");
    assert!(token > 0);
    assert_eq!(var("ETCD_LOCK_REV"), token.to_string());
    // Released on exit.
    assert_eq!(run(locker(&ep, &["holder", &name]), SHORT).await.code, 1);

    // Killed by a signal: 128 + N.
    let r = run(
        locker(&ep, &["lock", &name, "--", "sh", "-c", "kill -KILL $$"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 128 + libc::SIGKILL, "{r:?}");

    // A command that does not exist: 127, one line, and the lock is released.
    let r = run(
        locker(&ep, &["lock", &name, "--", "/nonexistent/locker-test-cmd"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 127, "{r:?}");
    assert_one_error_line(&r);
    assert_eq!(run(locker(&ep, &["holder", &name]), SHORT).await.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_while_held_exits_75_and_names_the_holder() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("try");
    let (mut a, key, token) = hold(&ep, &name, &["--value", "holder-A"]).await;

    let r = run(
        locker(&ep, &["try", &name, "--value", "B", "--", "true"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 75, "{r:?}");
    assert_one_error_line(&r);
    assert!(r.stderr.contains("holder-A"), "{r:?}");
    assert!(r.stderr.contains(&key), "{r:?}");
    assert!(r.stderr.contains(&token.to_string()), "{r:?}");
    assert_eq!(r.stdout, "", "the command must not run: {r:?}");

    let r = run(
        locker(&ep, &["try", &name, "--conflict-exit-code", "9"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 9, "{r:?}");

    // try left nothing queued: only A's key.
    assert_eq!(keys_under(&ep, &name).await, vec![key.clone()]);

    a.signal(libc::SIGINT);
    assert_eq!(a.exit(SHORT).await, 0);
    let r = run(
        locker(
            &ep,
            &["try", &name, "--", "sh", "-c", "echo got $LOCKER_KEY"],
        ),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with(&format!("got {name}/")), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_reports_free_and_held_as_text_and_json() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("holder");

    let r = run(locker(&ep, &["holder", &name]), SHORT).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout.trim(), "free");
    let r = run(locker(&ep, &["holder", "--json", &name]), SHORT).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("\"held\":false"), "{r:?}");

    let (mut a, key, token) = hold(&ep, &name, &["--value", "val \"q\"", "--ttl", "30"]).await;
    let r = run(locker(&ep, &["holder", &name]), SHORT).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("held "), "{r:?}");
    assert!(r.stdout.contains(&format!("key={key} ")), "{r:?}");
    assert!(r.stdout.contains(r#"value="val \"q\"""#), "{r:?}");
    assert!(
        r.stdout.contains(&format!("fencing_token={token} ")),
        "{r:?}"
    );
    assert!(r.stdout.contains("ttl_left="), "{r:?}");

    let r = run(locker(&ep, &["holder", "--json", &name]), SHORT).await;
    assert_eq!(r.code, 0, "{r:?}");
    let json = r.stdout.trim();
    assert!(json.starts_with('{') && json.ends_with('}'), "{r:?}");
    assert_eq!(json.lines().count(), 1, "{r:?}");
    assert!(json.contains("\"held\":true"), "{json}");
    assert!(json.contains(&format!("\"key\":\"{key}\"")), "{json}");
    assert!(json.contains(r#""value":"val \"q\"""#), "{json}");
    assert!(
        json.contains(&format!("\"fencing_token\":{token}")),
        "{json}"
    );
    assert!(json.contains("\"lease\":\""), "{json}");
    assert!(json.contains("\"ttl_left_secs\":"), "{json}");

    a.signal(libc::SIGINT);
    assert_eq!(a.exit(SHORT).await, 0);
    wait_holder_code(&ep, &name, 1, SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_snapshot_then_acquired_and_released() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("watch");
    let (mut a, key_a, _) = hold(&ep, &name, &["--value", "w-A"]).await;

    let mut text = Proc::spawn(locker(&ep, &["watch", &name]));
    let mut json = Proc::spawn(locker(&ep, &["watch", "--json", &name]));
    let snap = text
        .line("snapshot", SHORT, |l| l.starts_with("snapshot "))
        .await;
    assert!(snap.contains(" held ") && snap.contains(&key_a), "{snap}");
    let snap = json
        .line("snapshot", SHORT, |l| l.contains("\"event\":\"snapshot\""))
        .await;
    assert!(snap.contains(&format!("\"key\":\"{key_a}\"")), "{snap}");

    a.signal(libc::SIGTERM);
    assert_eq!(a.exit(SHORT).await, 0);
    text.line("released A", SHORT, |l| {
        l.starts_with("released ") && l.contains(&key_a)
    })
    .await;

    let r = run(
        locker(&ep, &["lock", &name, "--value", "w-B", "--", "true"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let acquired = text
        .line("acquired B", SHORT, |l| {
            l.starts_with("acquired ") && l.contains(r#"value="w-B""#)
        })
        .await;
    let key_b = acquired
        .split(' ')
        .find_map(|w| w.strip_prefix("key="))
        .expect("a key")
        .to_owned();
    text.line("released B", SHORT, |l| {
        l.starts_with("released ") && l.contains(&key_b)
    })
    .await;
    json.line("acquired B", SHORT, |l| {
        l.starts_with('{')
            && l.contains("\"event\":\"acquired\"")
            && l.contains("\"value\":\"w-B\"")
    })
    .await;
    json.line("released B", SHORT, |l| {
        l.contains("\"event\":\"released\"") && l.contains(&key_b)
    })
    .await;

    // Order: snapshot, released A, acquired B, released B.
    let lines = text.stdout();
    let kinds: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        kinds,
        ["snapshot", "released", "acquired", "released"],
        "{lines:?}"
    );

    text.signal(libc::SIGTERM);
    json.signal(libc::SIGINT);
    assert_eq!(text.exit(SHORT).await, 0);
    assert_eq!(json.exit(SHORT).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_forwarded_to_the_command_and_the_lock_released() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("sigterm");
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("marker");
    let script = trap_term(&format!("echo term > {}", marker.display()));
    let mut p = Proc::spawn(locker(&ep, &["lock", &name, "--", "sh", "-c", &script]));
    p.line("ready", SHORT, |l| l == "ready").await;
    assert_eq!(run(locker(&ep, &["holder", &name]), SHORT).await.code, 0);

    p.signal(libc::SIGTERM);
    assert_eq!(p.exit(SHORT).await, 0, "stderr: {}", p.stderr());
    assert_eq!(
        std::fs::read_to_string(&marker).expect("the command's TERM trap ran"),
        "term\n"
    );
    wait_holder_code(&ep, &name, 1, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_timeout_exits_124_and_leaves_nothing_queued() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("timeout");
    let (mut a, key_a, _) = hold(&ep, &name, &["--value", "first"]).await;

    let started = Instant::now();
    let r = run(
        locker(
            &ep,
            &[
                "--quiet",
                "lock",
                &name,
                "--timeout",
                "1s",
                "--",
                "echo",
                "ran",
            ],
        ),
        SHORT,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.code, 124, "{r:?}");
    assert_one_error_line(&r);
    assert!(!r.stdout.contains("ran"), "{r:?}");
    assert!(took >= Duration::from_secs(1), "gave up after {took:?}");
    assert!(took < Duration::from_secs(8), "gave up only after {took:?}");

    // Nothing queued: only the holder's key, and it is still the holder.
    assert_eq!(keys_under(&ep, &name).await, vec![key_a.clone()]);
    let r = run(locker(&ep, &["holder", &name]), SHORT).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&key_a) && r.stdout.contains("\"first\""),
        "{r:?}"
    );

    a.signal(libc::SIGTERM);
    assert_eq!(a.exit(SHORT).await, 0);
    wait_holder_code(&ep, &name, 1, Duration::from_secs(5)).await;
    assert!(keys_under(&ep, &name).await.is_empty());
}

/// Cut off from etcd, locker cannot keep its lease: it stops the command
/// (SIGTERM) before the lease could expire and exits 79.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_kept_stops_the_command_and_exits_79() {
    let etcd = etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let name = unique("lost");
    let script = trap_term("echo got-term");
    let mut p = Proc::spawn(locker(
        &proxy.url(),
        &[
            "lock",
            &name,
            "--ttl",
            "2",
            "--kill-after",
            "500ms",
            "--",
            "sh",
            "-c",
            &script,
        ],
    ));
    p.line("ready", SHORT, |l| l == "ready").await;

    proxy.set_mode(ProxyMode::Blackhole);
    let cut = Instant::now();
    let code = p.exit(Duration::from_secs(15)).await;
    let took = cut.elapsed();
    assert_eq!(code, 79, "stderr: {}", p.stderr());
    assert!(
        took < Duration::from_secs(2 + 4),
        "locker took {took:?} to give up a lock with a 2 s TTL"
    );
    p.line("got-term", SHORT, |l| l == "got-term").await;
    let stderr = p.stderr();
    assert!(stderr.contains("could not be kept alive"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // On etcd's side the lease expires by itself.
    wait_holder_code(&etcd.endpoint(0), &name, 1, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_log_prints_one_line_per_wire_call() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("wire");
    let r = run(
        locker(&ep, &["--wire-log", "lock", &name, "--", "echo", "done"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "done\n");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(!lines.is_empty(), "{r:?}");
    for l in &lines {
        assert!(l.starts_with("wire "), "not a wire line: {l:?}");
    }
    assert!(
        lines.iter().any(|l| l.contains("/etcdserverpb.KV/Txn")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/etcdserverpb.Lease/LeaseGrant")),
        "{lines:?}"
    );

    // Without the flag, nothing on stderr.
    let r = run(locker(&ep, &["lock", &name, "--", "true"]), SHORT).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stderr, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_with_one_line() {
    // Nothing listens there: every one of these must fail before connecting.
    let ep = format!("http://{}", closed_port());
    let cases: &[&[&str]] = &[
        &["lock", ""],
        &["holder", ""],
        &["lock", "x", "--ttl", "0"],
        &["lock", "x", "--timeout", "5x"],
        &["lock", "x", "--timeout", "1.5s"],
        &["lock", "x", "--kill-after", "soon"],
        &["--connect-timeout", "0", "holder", "x"],
        &["try", "x", "--conflict-exit-code", "300"],
        &["lock", "x", "--no-such-option"],
        &["--endpoints", "ftp://127.0.0.1:2379", "holder", "x"],
        &["--endpoints", "127.0.0.1", "holder", "x"],
        &["--cacert", "/nonexistent/ca.pem", "holder", "x"],
        &[
            "--cert",
            "/nonexistent/c.pem",
            "--key",
            "/nonexistent/k.pem",
            "holder",
            "x",
        ],
        &["--user", "bob", "holder", "x"],
        &["frobnicate"],
        // A --kill-after that outlasts the lease.
        &[
            "lock",
            "x",
            "--ttl",
            "2",
            "--kill-after",
            "1s",
            "--",
            "true",
        ],
        &[
            "elect",
            "x",
            "p",
            "--ttl",
            "10",
            "--kill-after",
            "5s",
            "--",
            "true",
        ],
        &[
            "lock",
            "x",
            "--kill-after",
            "1s",
            "--unsafe-kill-after",
            "2s",
            "--",
            "true",
        ],
    ];
    for args in cases {
        let r = run(locker(&ep, args), SHORT).await;
        assert_eq!(r.code, 2, "locker {args:?}: {r:?}");
        assert_one_error_line(&r);
    }
    let r = run(locker(&ep, &["--cacert", "/x", "holder", "x"]), SHORT).await;
    assert!(r.stderr.contains("/x"), "{r:?}");
    let r = run(locker(&ep, &["--cert", "/x", "holder", "x"]), SHORT).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--key"), "{r:?}");

    // The help documents the exit codes.
    for args in [&["--help"][..], &["lock", "--help"], &["try", "--help"]] {
        let r = run(locker(&ep, args), SHORT).await;
        assert_eq!(r.code, 0, "{r:?}");
        for code in ["69", "75", "77", "78", "79", "80", "124", "128+N"] {
            assert!(
                r.stdout.contains(code),
                "help lacks exit code {code}: {r:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_exits_69_with_one_line() {
    let addr = closed_port();
    let ep = format!("http://{addr}");
    for args in [
        &["holder", "x"][..],
        &["lock", "x", "--", "true"],
        &["try", "x"],
        &["watch", "x"],
    ] {
        let r = run(
            locker(&ep, &[&["--connect-timeout", "1s"][..], args].concat()),
            SHORT,
        )
        .await;
        assert_eq!(r.code, 69, "locker {args:?}: {r:?}");
        assert_one_error_line(&r);
        assert!(r.stderr.contains(&addr.port().to_string()), "{r:?}");
        assert_eq!(r.stdout, "");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_exits_75_while_etcdctl_holds_the_lock() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("etcdctl-holds");
    let mut ctl = Proc::spawn(etcdctl(&etcd, &["lock", &name]));
    let key = ctl
        .line("etcdctl's key", SHORT, |l| {
            l.starts_with(&format!("{name}/"))
        })
        .await;

    let r = run(locker(&ep, &["try", &name, "--", "true"]), SHORT).await;
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains(&key), "{r:?}");
    let r = run(locker(&ep, &["holder", &name]), SHORT).await;
    assert!(r.stdout.contains(&format!("key={key} ")), "{r:?}");

    // etcdctl unlocks on SIGINT.
    ctl.signal(libc::SIGINT);
    ctl.exit(SHORT).await;
    let r = run(locker(&ep, &["try", &name, "--", "true"]), SHORT).await;
    assert_eq!(r.code, 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_waits_while_locker_holds_the_lock() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("locker-holds");
    let (mut held, key, _) = hold(&ep, &name, &[]).await;

    let mut ctl = Proc::spawn(etcdctl(&etcd, &["lock", &name, "--", "echo", "x"]));
    // etcdctl has queued behind locker's key...
    let deadline = Instant::now() + SHORT;
    loop {
        let keys = keys_under(&ep, &name).await;
        if keys.len() == 2 {
            assert_eq!(keys.iter().filter(|k| **k == key).count(), 1, "{keys:?}");
            break;
        }
        assert!(
            !ctl.has_exited(),
            "etcdctl finished while locker held the lock: {:?}",
            ctl.stdout()
        );
        assert!(Instant::now() < deadline, "etcdctl never queued: {keys:?}");
        sleep(Duration::from_millis(50)).await;
    }
    // ...and does not run its command while locker holds the lock.
    sleep(Duration::from_millis(300)).await;
    assert!(
        !ctl.has_exited(),
        "etcdctl finished while locker held the lock"
    );
    assert!(ctl.stdout().is_empty(), "{:?}", ctl.stdout());

    held.signal(libc::SIGTERM);
    assert_eq!(held.exit(SHORT).await, 0);
    assert_eq!(ctl.exit(SHORT).await, 0, "stderr: {}", ctl.stderr());
    assert!(ctl.stdout().iter().any(|l| l == "x"), "{:?}", ctl.stdout());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags_reach_a_mutual_tls_cluster() {
    let certs = locker::testing::TestCerts::generate().expect("certificates");
    let etcd = locker::testing::EtcdBuilder::new(1)
        .client_tls(certs.server_cert(), certs.server_key(), Some(certs.ca()))
        .start()
        .await
        .expect("TLS etcd");
    let ep = etcd.endpoint(0);
    let (ca, cert, key) = (certs.ca(), certs.client_cert(), certs.client_key());
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let r = run(
        locker(
            &ep,
            &[
                "--cacert", ca, "--cert", cert, "--key", key, "try", "tls/cli", "--", "true",
            ],
        ),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    // Without the client certificate the server refuses: a connection failure.
    let r = run(locker(&ep, &["--cacert", ca, "holder", "tls/cli"]), SHORT).await;
    assert_eq!(r.code, 69, "{r:?}");
    assert_one_error_line(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_flag_authenticates_and_a_wrong_password_exits_77() {
    let etcd = etcd().await;
    etcd.enable_auth("carol", "carolpw", "jobs/").expect("auth");
    let ep = etcd.endpoints().join(",");
    let r = run(
        locker(
            &ep,
            &["--user", "carol:carolpw", "try", "jobs/cli", "--", "true"],
        ),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let mut cmd = locker(&ep, &["--user", "carol", "holder", "jobs/cli"]);
    cmd.env("LOCKER_PASSWORD", "carolpw");
    let r = run(cmd, SHORT).await;
    assert_eq!(r.code, 1, "free: {r:?}");
    let r = run(
        locker(&ep, &["--user", "carol:nope", "holder", "jobs/cli"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 77, "{r:?}");
    assert!(!r.stderr.contains("nope"), "the password leaked: {r:?}");
    let r = run(
        locker(
            &ep,
            &["--user", "carol:carolpw", "try", "other/cli", "--", "true"],
        ),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 77, "no permission outside jobs/: {r:?}");
}

/// A holder killed with SIGKILL cannot release: its lease runs out, and a
/// waiter gets the lock within the TTL (less the part already run since the
/// last keepalive) plus about a second (etcd checks expiries every 500 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_with_sigkill_frees_the_lock_when_its_lease_runs_out() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("crash");
    let ttl = Duration::from_secs(2);
    let (mut holder, key, _) = hold(&ep, &name, &["--ttl", "2"]).await;
    // Let a keepalive or two go by, so that the lease lives on them.
    sleep(Duration::from_millis(1500)).await;
    holder.signal(libc::SIGKILL);
    let killed = Instant::now();
    assert_eq!(holder.exit(SHORT).await, 128 + libc::SIGKILL);
    assert_eq!(
        keys_under(&ep, &name).await,
        vec![key],
        "the key outlives its process"
    );

    let client = locker::Client::builder()
        .endpoints([ep.as_str()])
        .connect()
        .await
        .expect("connect");
    let g = timeout(SHORT, client.lock(name.as_str()))
        .await
        .expect("the lock is freed in time")
        .expect("lock");
    let after = killed.elapsed();
    eprintln!("crash: the next holder got the lock {after:?} after the SIGKILL (TTL {ttl:?})");
    // The last keepalive went out at most TTL/3 before the kill.
    assert!(
        after >= ttl - ttl / 3 - Duration::from_millis(100),
        "too early: {after:?}"
    );
    assert!(after <= ttl + Duration::from_secs(1), "too late: {after:?}");
    g.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lock_says_once_who_holds_it_and_quiet_silences_it() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("notice");
    let (mut a, key_a, token_a) = hold(&ep, &name, &["--value", "first"]).await;

    let r = run(
        locker(&ep, &["lock", &name, "--timeout", "2s", "--", "true"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 124, "{r:?}");
    let waiting: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("waiting for"))
        .collect();
    assert_eq!(waiting.len(), 1, "said once: {r:?}");
    assert!(waiting[0].contains("\"first\""), "{r:?}");
    assert!(waiting[0].contains(&key_a), "{r:?}");
    assert!(
        waiting[0].contains(&format!("fencing token {token_a}")),
        "{r:?}"
    );
    assert!(waiting[0].contains("0 ahead"), "{r:?}");

    let r = run(
        locker(
            &ep,
            &["lock", "--quiet", &name, "--timeout", "1s", "--", "true"],
        ),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 124, "{r:?}");
    assert_one_error_line(&r);

    a.signal(libc::SIGINT);
    assert_eq!(a.exit(SHORT).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_try_costs_a_grant_a_txn_and_one_revoke() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("three");
    let r = run(
        locker(&ep, &["--wire-log", "try", &name, "--", "true"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    // While the command runs, its lock's key is followed on the client's
    // one watch stream (a create, and a cancel when done): that is no
    // commit and no unary call, and is checked apart.
    let watch: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("/etcdserverpb.Watch/Watch") && l.contains("req{"))
        .collect();
    assert!(
        watch.first().is_some_and(|l| l.contains("watch create")),
        "{watch:?}"
    );
    assert!(watch.len() <= 2, "{watch:?}");
    let calls: Vec<&str> = r
        .stderr
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|p| *p != "/etcdserverpb.Watch/Watch")
        .collect();
    assert_eq!(
        calls,
        [
            "/etcdserverpb.Maintenance/Status",
            "/etcdserverpb.Lease/LeaseGrant",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.Lease/LeaseRevoke",
        ],
        "{r:?}"
    );
    assert_eq!(keys_under(&ep, &name).await, Vec::<String>::new());
}

/// The `start`/`end` lines commands appended to `file`, as (tag, kind, ns).
fn timeline(file: &std::path::Path) -> Vec<(String, String, u128)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "bad line {l:?}");
            (f[1].to_owned(), f[0].to_owned(), f[2].parse().expect("ns"))
        })
        .collect()
}

/// A command that appends `start TAG NS`, sleeps `secs`, appends `end TAG NS`.
fn stamped(file: &std::path::Path, tag: &str, secs: &str) -> Vec<String> {
    let f = file.display();
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo start {tag} $(date +%s%N) >> {f}; sleep {secs}; echo end {tag} $(date +%s%N) >> {f}"
        ),
    ]
}

/// (start, end) of `tag` in the timeline.
fn span(t: &[(String, String, u128)], tag: &str) -> (u128, u128) {
    let at = |kind: &str| {
        t.iter()
            .find(|(g, k, _)| g == tag && k == kind)
            .map(|(_, _, ns)| *ns)
            .unwrap_or_else(|| panic!("no {kind} of {tag} in {t:?}"))
    };
    (at("start"), at("end"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_commands_run_together_and_a_writer_runs_alone() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("shared");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("timeline");
    let mut procs = Vec::new();
    for r in ["r1", "r2", "r3"] {
        let cmd = stamped(&file, r, "1");
        let mut args = vec!["--quiet", "lock", "--shared", &name, "--"];
        args.extend(cmd.iter().map(String::as_str));
        procs.push(Proc::spawn(locker(&ep, &args)));
    }
    // The writer queues behind the three readers' keys.
    wait_until("three readers queued", SHORT, || async {
        keys_under(&ep, &name).await.len() == 3
    })
    .await;
    let cmd = stamped(&file, "w", "0.5");
    let mut args = vec!["--quiet", "lock", &name, "--"];
    args.extend(cmd.iter().map(String::as_str));
    procs.push(Proc::spawn(locker(&ep, &args)));
    wait_until("the writer queued", SHORT, || async {
        keys_under(&ep, &name).await.len() == 4
    })
    .await;
    // A reader after the waiting writer waits for it.
    let cmd = stamped(&file, "r4", "0");
    let mut args = vec!["--quiet", "lock", "--shared", &name, "--"];
    args.extend(cmd.iter().map(String::as_str));
    procs.push(Proc::spawn(locker(&ep, &args)));
    for p in &mut procs {
        assert_eq!(p.exit(SHORT).await, 0);
    }
    let t = timeline(&file);
    let readers: Vec<(u128, u128)> = ["r1", "r2", "r3"].iter().map(|r| span(&t, r)).collect();
    let last_start = readers.iter().map(|s| s.0).max().unwrap();
    let first_end = readers.iter().map(|s| s.1).min().unwrap();
    assert!(last_start < first_end, "the readers did not overlap: {t:?}");
    let (w_start, w_end) = span(&t, "w");
    let last_end = readers.iter().map(|s| s.1).max().unwrap();
    assert!(w_start >= last_end, "the writer ran beside a reader: {t:?}");
    assert!(
        span(&t, "r4").0 >= w_end,
        "a later reader overtook the writer: {t:?}"
    );
    assert_eq!(keys_under(&ep, &name).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_two_runs_at_most_two_commands_at_once_in_arrival_order() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("limit");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("timeline");
    let tags: Vec<String> = (1..=6).map(|i| format!("c{i}")).collect();
    let mut procs = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        let cmd = stamped(&file, tag, "0.3");
        let mut args = vec!["--quiet", "lock", "--limit", "2", &name, "--"];
        args.extend(cmd.iter().map(String::as_str));
        procs.push(Proc::spawn(locker(&ep, &args)));
        // One at a time into the queue, so that arrival order is known.
        wait_until("the contender queued", SHORT, || async {
            let t = timeline(&file);
            let done = t.iter().filter(|(_, k, _)| k == "end").count();
            keys_under(&ep, &name).await.len() + done > i
        })
        .await;
    }
    // Another limit is a usage error naming both numbers.
    let r = run(
        locker(&ep, &["lock", "--limit", "3", &name, "--", "true"]),
        SHORT,
    )
    .await;
    let refused = r.code == 2 && r.stderr.contains('2') && r.stderr.contains('3');
    let idle = r.code == 0; // every contender may already be done
    assert!(refused || idle, "{r:?}");
    for p in &mut procs {
        assert_eq!(p.exit(SHORT).await, 0);
    }
    let t = timeline(&file);
    let mut events: Vec<(u128, i32)> = t
        .iter()
        .map(|(_, k, ns)| (*ns, if k == "start" { 1 } else { -1 }))
        .collect();
    events.sort();
    let mut running = 0;
    let mut most = 0;
    for (_, d) in events {
        running += d;
        most = most.max(running);
    }
    assert!(most <= 2, "{most} commands ran at once: {t:?}");
    assert_eq!(most, 2, "never two at once: {t:?}");
    // FIFO, as far as the commands' own stamps can show it: contender j may
    // start before an earlier arrival i only if i was admitted already,
    // that is once all but `limit - 1` of the contenders ahead of i had
    // ended. An end is stamped before its release and a start after its
    // admission, so a correct run never fails this; two contenders admitted
    // at once (when two holders end together) may start in either order.
    // No timing margin is involved.
    const LIMIT: usize = 2;
    let spans: Vec<(u128, u128)> = tags.iter().map(|tag| span(&t, tag)).collect();
    for (j, &(start_j, _)) in spans.iter().enumerate() {
        for (i, &(start_i, _)) in spans.iter().enumerate().take(j) {
            if start_i <= start_j {
                continue;
            }
            let ended_ahead_of_i = spans[..i].iter().filter(|(_, end)| *end <= start_j).count();
            assert!(
                ended_ahead_of_i + LIMIT > i,
                "not FIFO: {} started while {} still waited ({ended_ahead_of_i} of the {i} ahead of it had ended): {t:?}",
                tags[j],
                tags[i],
            );
        }
    }
}
