//! `locker elect` and `locker elect --listen`, driven as processes against
//! real etcd processes started by `locker::testing`, next to `etcdctl`.
//!
//! Run with `cargo test --all-features --test cli_elect`. etcdctl is
//! `$ETCDCTL_BIN`, else `etcdctl` on `PATH` (3.4 and 3.5 print the same lines
//! for what is used here; lease ids are compared as numbers, so a zero-padded
//! hex id reads the same).
//!
//! Every locker and etcdctl process runs in a process group of its own; the
//! group is killed when the test lets go of it (also on a panic), so that a
//! command left running by a `kill -9`ed locker goes too.
#![cfg(all(feature = "testing", feature = "cli"))]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::process::Command;
use tokio::time::{Instant, sleep};

mod common;
use common::{Proc, Run, SHORT, alive, locker, prepare, run, unique};

/// A single-member etcd for one test, of the version under test
/// (`scripts/test` runs each suite that calls `Etcd::` on every version).
async fn etcd() -> locker::testing::Etcd {
    locker::testing::Etcd::single()
        .await
        .unwrap_or_else(|e| panic!("cannot start etcd for the test: {e}"))
}

/// `etcdctl --endpoints=EP ARGS` (v3 API), in a process group of its own.
fn etcdctl(endpoint: &str, args: &[&str]) -> Command {
    let bin = std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".to_owned());
    let mut c = Command::new(bin);
    prepare(&mut c);
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args);
    c
}

/// Asserts that stderr holds exactly one line, `locker: ...`, and stdout nothing.
fn assert_one_error_line(r: &Run) {
    common::assert_one_error_line(r);
    assert_eq!(r.stdout, "", "{r:?}");
}

/// The live keys under `NAME/`, as (key, create revision), oldest first:
/// the candidates in election order.
async fn candidates(endpoint: &str, name: &str) -> Vec<(String, i64)> {
    let client = locker::Client::builder()
        .endpoints([endpoint])
        .connect()
        .await
        .expect("connect");
    let (kvs, _) = client
        .get_prefix(format!("{name}/"))
        .await
        .expect("get_prefix");
    let mut keys: Vec<(String, i64)> = kvs
        .iter()
        .map(|kv| (kv.key_str(), kv.create_revision.0))
        .collect();
    keys.sort_by_key(|(_, rev)| *rev);
    keys
}

/// Polls until there are exactly `n` candidates; returns them.
async fn wait_candidates(
    endpoint: &str,
    name: &str,
    n: usize,
    limit: Duration,
) -> Vec<(String, i64)> {
    let deadline = Instant::now() + limit;
    loop {
        let keys = candidates(endpoint, name).await;
        if keys.len() == n {
            return keys;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not {n} candidate(s) within {limit:?}: {keys:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// The lease id in a candidate key `NAME/<hex>`, as a number (so that a
/// zero-padded id compares equal).
fn lease_of_key(key: &str) -> u64 {
    let hex = key.rsplit('/').next().unwrap_or_default();
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("key {key:?} does not end in hex"))
}

fn hex_lease(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or_else(|_| panic!("lease {s:?} is not hex"))
}

/// `field=` of a space-separated `a=1 b=2` line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=");
    line.split(' ')
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

fn now_nanos() -> i128 {
    i128::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos(),
    )
    .expect("fits")
}

// ---------------------------------------------------------------------------
// The command candidates run as leader, and the trace it leaves.

/// Appends `start WHO TOKEN NANOS PID` to the trace file when it starts (as
/// leader), `end WHO TOKEN NANOS PID` on SIGTERM (then exits 0), and otherwise
/// sleeps. `$0` is WHO, `$1` the trace file.
const LEADER_SCRIPT: &str = r#"echo "start $0 $LOCKER_FENCING_TOKEN $(date +%s%N) $$" >> "$1"
trap 'echo "end $0 $LOCKER_FENCING_TOKEN $(date +%s%N) $$" >> "$1"; exit 0' TERM
while :; do sleep 0.05; done"#;

/// `locker elect NAME WHO [extra] -- sh -c LEADER_SCRIPT WHO TRACE`.
fn candidate(endpoint: &str, name: &str, who: &str, extra: &[&str], trace: &Path) -> Command {
    let trace = trace.to_str().expect("a UTF-8 path");
    let mut args = vec!["elect", name, who];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", LEADER_SCRIPT, who, trace]);
    locker(endpoint, &args)
}

/// One line of the trace.
#[derive(Debug, Clone, PartialEq)]
struct Mark {
    what: String,
    who: String,
    token: i64,
    nanos: i128,
    pid: i32,
}

fn read_trace(trace: &Path) -> Vec<Mark> {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    text.lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w.len(), 5, "bad trace line {l:?}");
            Mark {
                what: w[0].to_owned(),
                who: w[1].to_owned(),
                token: w[2].parse().unwrap_or_else(|_| panic!("token in {l:?}")),
                nanos: w[3]
                    .parse()
                    .unwrap_or_else(|_| panic!("`date +%s%N` in {l:?}")),
                pid: w[4].parse().unwrap_or_else(|_| panic!("pid in {l:?}")),
            }
        })
        .collect()
}

/// Waits until the trace has the mark `what who`; returns it.
async fn wait_mark(trace: &Path, what: &str, who: &str, limit: Duration) -> Mark {
    let deadline = Instant::now() + limit;
    loop {
        let marks = read_trace(trace);
        if let Some(m) = marks.iter().find(|m| m.what == what && m.who == who) {
            return m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no `{what} {who}` in the trace within {limit:?}: {marks:?}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that no two commands ran at once, each start after the previous
/// end, and that the fencing tokens grow with each new leader.
fn assert_one_leader_at_a_time(marks: &[Mark]) {
    let mut running: Option<&Mark> = None;
    let mut last_token = 0;
    for m in marks {
        match m.what.as_str() {
            "start" => {
                assert!(
                    running.is_none(),
                    "{} started while {:?} ran: {marks:?}",
                    m.who,
                    running
                );
                assert!(
                    m.token > last_token,
                    "fencing token {} after {last_token}: {marks:?}",
                    m.token
                );
                last_token = m.token;
                running = Some(m);
            }
            "end" => {
                let r = running.take();
                assert_eq!(r.map(|r| &r.who), Some(&m.who), "{marks:?}");
            }
            other => panic!("unknown mark {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------

/// etcd #19597: a candidate whose lease expired while it waited must never be
/// told it leads. B queues behind A, is frozen (SIGSTOP) until etcd has
/// expired its lease, A resigns, C is elected; when B thaws, it must not run
/// its command (C leads), and must exit with 78 or an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_frozen_past_its_ttl_never_leads() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("zombie");
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace");

    let mut a = Proc::spawn(candidate(&ep, &name, "a", &[], &trace));
    wait_mark(&trace, "start", "a", SHORT).await;
    let mut b = Proc::spawn(candidate(&ep, &name, "b", &["--ttl", "2"], &trace));
    let queued = wait_candidates(&ep, &name, 2, SHORT).await;
    let (a_key, b_key) = (queued[0].0.clone(), queued[1].0.clone());

    b.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    // etcd expires B's lease (TTL 2 s) while B cannot renew it: its key goes.
    let left = wait_candidates(&ep, &name, 1, Duration::from_secs(10)).await;
    assert_eq!(left[0].0, a_key, "A's key went, not B's: {left:?}");
    eprintln!(
        "zombie: B's key {b_key} expired {:?} after SIGSTOP",
        frozen.elapsed()
    );

    // A resigns (SIGTERM reaches its command, which exits 0; locker resigns).
    a.signal(libc::SIGTERM);
    assert_eq!(a.exit(SHORT).await, 0, "A: {}", a.stderr());
    wait_mark(&trace, "end", "a", SHORT).await;
    assert!(candidates(&ep, &name).await.is_empty());

    let mut c = Proc::spawn(candidate(&ep, &name, "c", &[], &trace));
    wait_mark(&trace, "start", "c", SHORT).await;
    let c_key = wait_candidates(&ep, &name, 1, SHORT).await[0].0.clone();
    eprintln!("zombie: B frozen for {:?} in all", frozen.elapsed());

    b.signal(libc::SIGCONT);
    let b_code = b.exit(SHORT).await;
    let b_err = b.stderr();
    eprintln!("zombie: B exited {b_code} after SIGCONT; stderr: {b_err:?}");
    assert!(
        b_code == 78 || b_code == 1 || b_code == 69,
        "B exited with {b_code}, not 78 or an error; stderr: {b_err}"
    );
    assert!(!b_err.contains("panicked"), "{b_err}");
    assert!(
        b.stdout().is_empty(),
        "B printed as if leader: {:?}",
        b.stdout()
    );

    // Let a zombie's command, had one started, write its mark.
    sleep(Duration::from_millis(500)).await;
    let marks = read_trace(&trace);
    assert!(
        marks.iter().all(|m| m.who != "b"),
        "B ran its command: {marks:?}"
    );
    assert!(!c.has_exited(), "C stopped leading: {}", c.stderr());
    let client = locker::Client::builder()
        .endpoints([ep.as_str()])
        .connect()
        .await
        .expect("connect");
    let leader = client
        .leader(&name)
        .await
        .expect("leader")
        .expect("a leader");
    assert_eq!(leader.key, c_key);
    assert_eq!(leader.value, b"c");

    c.signal(libc::SIGTERM);
    assert_eq!(c.exit(SHORT).await, 0, "C: {}", c.stderr());
    let marks = read_trace(&trace);
    let order: Vec<String> = marks
        .iter()
        .map(|m| format!("{} {}", m.what, m.who))
        .collect();
    assert_eq!(order, ["start a", "end a", "start c", "end c"], "{marks:?}");
    assert_one_leader_at_a_time(&marks);
    assert!(candidates(&ep, &name).await.is_empty());
}

/// A leader killed with SIGKILL cannot resign: the next candidate is elected
/// when etcd expires the dead leader's lease. Two failovers in a row (A → B
/// → C, all with --ttl 2), each timed from the kill to the moment the next
/// leader's command wrote its start mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_ttl_plus_one_second() {
    const TTL: Duration = Duration::from_secs(2);
    // The bound, from the TTL: etcd expires a lease TTL after its last
    // renewal, and the killed leader renewed it no later than the kill, so
    // the lease is due at most TTL after the kill. The second on top covers
    // etcd's lessor, which looks for expired leases every 500 ms, the revoke
    // (one raft commit), the waiting candidate's watch seeing the delete, its
    // check of its own key, and the start of its command.
    let bound = TTL + Duration::from_secs(1);

    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("sigkill");
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace");
    let ttl = ["--ttl", "2"];

    let mut a = Proc::spawn(candidate(&ep, &name, "a", &ttl, &trace));
    let a_start = wait_mark(&trace, "start", "a", SHORT).await;
    let mut b = Proc::spawn(candidate(&ep, &name, "b", &ttl, &trace));
    wait_candidates(&ep, &name, 2, SHORT).await;
    let mut c = Proc::spawn(candidate(&ep, &name, "c", &ttl, &trace));
    let keys = wait_candidates(&ep, &name, 3, SHORT).await;

    let mut failovers = Vec::new();
    for (dead, next, waiting) in [(&mut a, "b", Some("c")), (&mut b, "c", None)] {
        dead.signal(libc::SIGKILL);
        let killed = now_nanos();
        assert_eq!(dead.exit(SHORT).await, 128 + libc::SIGKILL);
        let started = wait_mark(&trace, "start", next, Duration::from_secs(10)).await;
        let took = Duration::from_nanos(u64::try_from(started.nanos - killed).unwrap_or(0));
        eprintln!("sigkill: {next} leads {took:?} after the kill -9 (bound {bound:?})");
        assert!(
            took <= bound,
            "{next} took {took:?} to lead after kill -9 (TTL {TTL:?})"
        );
        failovers.push(took);
        if let Some(w) = waiting {
            let marks = read_trace(&trace);
            assert!(
                marks.iter().all(|m| m.who != w),
                "{w} ran while {next} led: {marks:?}"
            );
        }
    }
    // The first leader's command outlived its locker (nothing can stop it
    // after SIGKILL); it is reported, not asserted.
    eprintln!(
        "sigkill: A's command (pid {}) still running after B took over: {}",
        a_start.pid,
        alive(a_start.pid)
    );

    let marks = read_trace(&trace);
    let starts: Vec<(&str, i64)> = marks
        .iter()
        .filter(|m| m.what == "start")
        .map(|m| (m.who.as_str(), m.token))
        .collect();
    assert_eq!(starts.len(), 3, "{marks:?}");
    assert_eq!(
        starts.iter().map(|s| s.0).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert!(
        starts[0].1 < starts[1].1 && starts[1].1 < starts[2].1,
        "fencing tokens do not grow: {starts:?}"
    );
    // Each token is its candidate key's create revision.
    let revs: Vec<i64> = keys.iter().map(|k| k.1).collect();
    assert_eq!(
        starts.iter().map(|s| s.1).collect::<Vec<_>>(),
        revs,
        "{keys:?}"
    );

    c.signal(libc::SIGTERM);
    assert_eq!(c.exit(SHORT).await, 0, "C: {}", c.stderr());
    assert!(candidates(&ep, &name).await.is_empty());
}

/// CMD's exit status comes back; `--timeout` while another leads exits 124
/// and leaves no candidate key; usage errors exit 2 with one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_exit_codes() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("codes");

    // The command's own status, after resigning.
    let r = run(
        locker(
            &ep,
            &[
                "elect",
                &name,
                "p",
                "--",
                "sh",
                "-c",
                "test -n \"$LOCKER_KEY\" && echo token=$LOCKER_FENCING_TOKEN; exit 7",
            ],
        ),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 7, "{r:?}");
    assert!(r.stdout.starts_with("token="), "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
    assert!(candidates(&ep, &name).await.is_empty(), "did not resign");
    let r = run(
        locker(&ep, &["elect", &name, "p", "--", "/nonexistent/cmd"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 127, "{r:?}");
    assert!(candidates(&ep, &name).await.is_empty(), "did not resign");

    // A leader without a command prints its line and leads until SIGTERM.
    let mut leader = Proc::spawn(locker(&ep, &["elect", &name, "lead"]));
    let line = leader
        .line("key=...", SHORT, |l| l.starts_with("key="))
        .await;
    let key = field(&line, "key").to_owned();
    assert!(key.starts_with(&format!("{name}/")), "{line}");
    assert_eq!(
        hex_lease(field(&line, "lease")),
        lease_of_key(&key),
        "{line}"
    );
    let token: i64 = field(&line, "fencing_token").parse().expect("a number");
    assert_eq!(candidates(&ep, &name).await, [(key.clone(), token)]);

    // --timeout while it leads: 124, after about the timeout, nothing left.
    let started = Instant::now();
    let r = run(
        locker(&ep, &["--quiet", "elect", &name, "late", "--timeout", "1s"]),
        SHORT,
    )
    .await;
    let took = started.elapsed();
    eprintln!("codes: --timeout 1s gave up after {took:?}");
    assert_eq!(r.code, 124, "{r:?}");
    assert_one_error_line(&r);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "--timeout 1s took {took:?}"
    );
    assert_eq!(candidates(&ep, &name).await, [(key.clone(), token)]);
    // The same seen by `elect --listen`: the leader, and no other event.
    let mut listen = Proc::spawn(locker(&ep, &["elect", "--listen", &name]));
    let first = listen.line("leader", SHORT, |_| true).await;
    assert!(first.starts_with("leader revision="), "{first}");
    assert_eq!(field(&first, "key"), key);
    assert_eq!(field(&first, "value"), "\"lead\"");
    assert_eq!(field(&first, "fencing_token"), token.to_string());
    sleep(Duration::from_millis(300)).await;
    assert_eq!(listen.stdout().len(), 1, "{:?}", listen.stdout());
    listen.signal(libc::SIGINT);
    assert_eq!(listen.exit(SHORT).await, 0);

    leader.signal(libc::SIGTERM);
    assert_eq!(leader.exit(SHORT).await, 0, "{}", leader.stderr());
    assert!(candidates(&ep, &name).await.is_empty(), "did not resign");

    // Usage errors, before anything is sent.
    for args in [
        &["elect", name.as_str()][..],
        &["elect", "--listen", &name, "p"],
        &["elect", "--listen", &name, "--timeout", "1s"],
        &["elect", &name, "p", "--ttl", "0"],
        &["elect", &name, "p", "--timeout", "soon"],
        &["elect", "", "p"],
    ] {
        let r = run(locker(&ep, args), SHORT).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_one_error_line(&r);
    }
}

/// `--json` belongs to `--listen`: without it, a usage error (exit 2) before
/// anything is sent, not a campaign. The endpoint is a closed port, so that
/// a campaign, if it is tried, fails at once (69) instead of leading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_without_listen_is_a_usage_error() {
    let ep = format!("http://{}", locker::testing::closed_port());
    let r = run(locker(&ep, &["elect", "n", "p", "--json"]), SHORT).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert_one_error_line(&r);
    assert!(r.stderr.contains("--json"), "{r:?}");
}

/// A missing PROPOSAL is named in the one-line usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_proposal_is_named_in_the_usage_error() {
    let ep = format!("http://{}", locker::testing::closed_port());
    let r = run(locker(&ep, &["elect", "n"]), SHORT).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert_one_error_line(&r);
    assert!(r.stderr.contains("PROPOSAL"), "{r:?}");
}

/// `etcdctl elect -l` sees locker's leaders, one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_listen_prints_locker_leaders() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("ctl-listen");

    let mut ctl = Proc::spawn(etcdctl(&ep, &["elect", "-l", &name]));
    // etcdctl prints nothing until there is a leader; give it time to watch.
    sleep(Duration::from_millis(300)).await;

    let mut l1 = Proc::spawn(locker(&ep, &["elect", &name, "first"]));
    let k1 = field(
        &l1.line("key=", SHORT, |l| l.starts_with("key=")).await,
        "key",
    )
    .to_owned();
    let l2 = Proc::spawn(locker(&ep, &["elect", &name, "second"]));
    wait_candidates(&ep, &name, 2, SHORT).await;
    let (i, _) = ctl.line_after(0, "first", SHORT, |l| l == "first").await;
    l1.signal(libc::SIGTERM);
    assert_eq!(l1.exit(SHORT).await, 0);
    let k2 = field(
        &l2.line("key=", SHORT, |l| l.starts_with("key=")).await,
        "key",
    )
    .to_owned();
    ctl.line_after(i + 1, "second", SHORT, |l| l == "second")
        .await;

    // etcdctl prints KEY then VALUE for each leader.
    let out = ctl.stdout();
    assert_eq!(out, [k1, "first".to_owned(), k2, "second".to_owned()]);
    ctl.signal(libc::SIGINT);
    ctl.exit(SHORT).await;
}

/// `locker elect --listen` sees etcdctl's leader, and etcdctl and locker
/// candidates are one election, in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locker_and_etcdctl_candidates_are_one_election() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("ctl-elect");

    let listen = Proc::spawn(locker(&ep, &["elect", "--listen", &name]));
    listen
        .line("no-leader", SHORT, |l| l.starts_with("no-leader revision="))
        .await;

    // etcdctl leads; locker's listener prints it, with etcdctl's lease.
    let mut ctl = Proc::spawn(etcdctl(&ep, &["elect", &name, "ctl-prop"]));
    let (_, kc) = ctl
        .line_after(0, "etcdctl's key", SHORT, |l| l.starts_with(&name))
        .await;
    let (i, line) = listen
        .line_after(1, "etcdctl's leader", SHORT, |l| l.starts_with("leader "))
        .await;
    assert_eq!(field(&line, "key"), kc, "{line}");
    assert_eq!(field(&line, "value"), "\"ctl-prop\"", "{line}");
    assert_eq!(
        hex_lease(field(&line, "lease")),
        lease_of_key(&kc),
        "{line}"
    );

    // An etcdctl leader keeps a locker candidate waiting.
    let r = run(
        locker(&ep, &["--quiet", "elect", &name, "late", "--timeout", "1s"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 124, "{r:?}");
    assert_eq!(wait_candidates(&ep, &name, 1, SHORT).await[0].0, kc);

    // A queued locker candidate is elected when etcdctl resigns (SIGINT).
    let mut l = Proc::spawn(locker(&ep, &["elect", &name, "locker-prop"]));
    wait_candidates(&ep, &name, 2, SHORT).await;
    sleep(Duration::from_millis(300)).await;
    assert!(
        l.stdout().is_empty(),
        "locker led with etcdctl: {:?}",
        l.stdout()
    );
    ctl.signal(libc::SIGINT);
    assert_eq!(ctl.exit(SHORT).await, 0, "etcdctl: {}", ctl.stderr());
    let kl = field(
        &l.line("key=", SHORT, |l| l.starts_with("key=")).await,
        "key",
    )
    .to_owned();
    let (j, line) = listen
        .line_after(i + 1, "locker's leader", SHORT, |l| {
            l.starts_with("leader ")
        })
        .await;
    assert_eq!(field(&line, "key"), kl, "{line}");
    assert_eq!(field(&line, "value"), "\"locker-prop\"", "{line}");

    // And an etcdctl candidate waits for locker's leader to resign.
    let mut ctl2 = Proc::spawn(etcdctl(&ep, &["elect", &name, "ctl-2"]));
    wait_candidates(&ep, &name, 2, SHORT).await;
    sleep(Duration::from_millis(300)).await;
    assert!(
        ctl2.stdout().is_empty(),
        "etcdctl led with locker: {:?}",
        ctl2.stdout()
    );
    l.signal(libc::SIGTERM);
    assert_eq!(l.exit(SHORT).await, 0, "{}", l.stderr());
    ctl2.line("ctl-2", SHORT, |l| l == "ctl-2").await;
    let kc2 = ctl2.stdout()[0].clone();
    let (_, line) = listen
        .line_after(j + 1, "etcdctl's second leader", SHORT, |l| {
            l.starts_with("leader ")
        })
        .await;
    assert_eq!(field(&line, "key"), kc2, "{line}");
    ctl2.signal(libc::SIGINT);
    assert_eq!(ctl2.exit(SHORT).await, 0, "etcdctl: {}", ctl2.stderr());
    listen
        .line_after(j + 1, "no-leader", SHORT, |l| l.starts_with("no-leader "))
        .await;

    // Every event line, in order, with growing revisions.
    let out = listen.stdout();
    let kinds: Vec<&str> = out.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        kinds,
        ["no-leader", "leader", "leader", "leader", "no-leader"],
        "{out:?}"
    );
    let revs: Vec<i64> = out
        .iter()
        .map(|l| field(l, "revision").parse().expect("a revision"))
        .collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{out:?}");
}

/// A running `etcdctl lock NAME` keeps every candidate of the election NAME
/// waiting, as in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_holder_keeps_locker_candidates_waiting() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("ctl-lock");
    let mut ctl = Proc::spawn(etcdctl(&ep, &["lock", &name]));
    let kc = ctl
        .line("etcdctl's lock key", SHORT, |l| l.starts_with(&name))
        .await;

    let r = run(
        locker(&ep, &["--quiet", "elect", &name, "x", "--timeout", "1s"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 124, "{r:?}");
    assert_one_error_line(&r);
    let left = candidates(&ep, &name).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, kc);

    ctl.signal(libc::SIGINT);
    assert_eq!(ctl.exit(SHORT).await, 0, "etcdctl: {}", ctl.stderr());
    let r = run(
        locker(&ep, &["elect", &name, "x", "--timeout", "2s", "--", "true"]),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
}

/// Leadership lost under a running command (its lease revoked from outside):
/// the command gets SIGTERM, SIGKILL after --kill-after, and locker exits 78.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_leadership_stops_the_command_and_exits_78() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("lost");
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace");
    let t = trace.to_str().unwrap();
    // Ignores SIGTERM (after noting it): only SIGKILL ends it.
    let script = r#"trap 'echo "term $(date +%s%N)" >> "$0"' TERM
echo "start $(date +%s%N) $$" >> "$0"; while :; do sleep 0.05; done"#;
    let mut p = Proc::spawn(locker(
        &ep,
        &[
            "elect",
            &name,
            "p",
            "--ttl",
            "5",
            "--kill-after",
            "1s",
            "--",
            "sh",
            "-c",
            script,
            t,
        ],
    ));
    let started = Instant::now();
    loop {
        if std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .starts_with("start ")
        {
            break;
        }
        assert!(started.elapsed() < SHORT, "the command never started");
        sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&trace).unwrap();
    let cmd_pid: i32 = text.split_whitespace().nth(2).unwrap().parse().unwrap();
    let key = wait_candidates(&ep, &name, 1, SHORT).await[0].0.clone();

    let r = run(
        etcdctl(
            &ep,
            &["lease", "revoke", &format!("{:x}", lease_of_key(&key))],
        ),
        SHORT,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let revoked = now_nanos();
    let code = p.exit(SHORT).await;
    let exited = now_nanos();
    assert_eq!(code, 78, "stderr: {}", p.stderr());
    let text = std::fs::read_to_string(&trace).unwrap();
    let term: i128 = text
        .lines()
        .find_map(|l| l.strip_prefix("term "))
        .unwrap_or_else(|| panic!("the command got no SIGTERM: {text:?}"))
        .parse()
        .unwrap();
    let ms = |n: i128| n / 1_000_000;
    eprintln!(
        "lost: SIGTERM {} ms after the revoke, locker exited {} ms after SIGTERM",
        ms(term - revoked),
        ms(exited - term)
    );
    // Revoked from outside, the lease is found gone at the next keepalive
    // (every TTL/3 or so), well within the TTL.
    assert!(term - revoked < 5_000_000_000, "SIGTERM came too late");
    // SIGKILL a second (--kill-after) after SIGTERM; the trap ran up to one
    // `sleep 0.05` after SIGTERM.
    assert!(
        exited - term >= 900_000_000,
        "SIGKILL came before --kill-after"
    );
    assert!(!alive(cmd_pid), "the command survived");
    assert!(p.stderr().contains("lost"), "{}", p.stderr());
}

/// A leader whose key is deleted from outside (its lease still alive) no
/// longer leads: etcd elects the next candidate at once. Its command should
/// be stopped (SIGTERM, exit 78) before the next leader's command starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "gap: Leadership::lost() watches only the lease, so a leader whose key is deleted (`etcdctl del KEY`) never learns it: its command runs on while the next candidate's runs (two leaders, indefinitely)"]
async fn a_leader_whose_key_is_deleted_stops_its_command() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("deleted");
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace");
    let mut a = Proc::spawn(candidate(&ep, &name, "a", &[], &trace));
    wait_mark(&trace, "start", "a", SHORT).await;
    let _b = Proc::spawn(candidate(&ep, &name, "b", &[], &trace));
    let keys = wait_candidates(&ep, &name, 2, SHORT).await;
    let r = run(etcdctl(&ep, &["del", &keys[0].0]), SHORT).await;
    assert_eq!(r.code, 0, "{r:?}");
    let b_start = wait_mark(&trace, "start", "b", SHORT).await;
    let a_end = wait_mark(&trace, "end", "a", Duration::from_secs(5)).await;
    assert!(
        a_end.nanos <= b_start.nanos,
        "A's command ran {} ms into B's leadership",
        (a_end.nanos - b_start.nanos) / 1_000_000
    );
    assert_eq!(a.exit(SHORT).await, 78, "{}", a.stderr());
}

// ---------------------------------------------------------------------------
// A small JSON reader, to check that each --json line is one well-formed
// object (no dependency for it).

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut r = Reader {
            s: text.as_bytes(),
            i: 0,
        };
        let v = r.value()?;
        r.ws();
        if r.i != r.s.len() {
            return Err(format!("trailing text at {}", r.i));
        }
        Ok(v)
    }

    fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(n, _)| n == k).map(|(_, v)| v),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(members) => members.iter().map(|(n, _)| n.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn int(&self) -> i64 {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| panic!("not an integer: {n}")),
            other => panic!("not a number: {other:?}"),
        }
    }
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn next(&mut self) -> Result<u8, String> {
        let b = *self.s.get(self.i).ok_or("unexpected end")?;
        self.i += 1;
        Ok(b)
    }

    fn expect(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(format!("expected {lit:?} at {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i).copied().ok_or("unexpected end")? {
            b'n' => self.expect("null").map(|()| Json::Null),
            b't' => self.expect("true").map(|()| Json::Bool(true)),
            b'f' => self.expect("false").map(|()| Json::Bool(false)),
            b'"' => self.string().map(Json::Str),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.next()? {
                        b',' => {}
                        b']' => return Ok(Json::Arr(items)),
                        c => return Err(format!("unexpected {:?} in array", c as char)),
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut members: Vec<(String, Json)> = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(members));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    if members.iter().any(|(n, _)| *n == k) {
                        return Err(format!("duplicate member {k:?}"));
                    }
                    self.ws();
                    self.expect(":")?;
                    let v = self.value()?;
                    members.push((k, v));
                    self.ws();
                    match self.next()? {
                        b',' => {}
                        b'}' => return Ok(Json::Obj(members)),
                        c => return Err(format!("unexpected {:?} in object", c as char)),
                    }
                }
            }
            b'-' | b'0'..=b'9' => self.number(),
            c => Err(format!("unexpected {:?} at {}", c as char, self.i)),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.s.get(self.i), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        let lead = self.s.get(self.i).copied();
        let n = self.digits();
        if n == 0 || (lead == Some(b'0') && n > 1) {
            return Err(format!("bad number at {start}"));
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(format!("bad fraction at {start}"));
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(format!("bad exponent at {start}"));
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        Ok(Json::Num(text.to_owned()))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
        let h = std::str::from_utf8(h).map_err(|e| e.to_string())?;
        self.i += 4;
        u32::from_str_radix(h, 16).map_err(|_| format!("bad \\u{h}"))
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect("\"")?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.next()? {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let c = match self.next()? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let mut u = self.hex4()?;
                            if (0xd800..0xdc00).contains(&u) {
                                self.expect("\\u")?;
                                let low = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&low) {
                                    return Err("lone high surrogate".to_owned());
                                }
                                u = 0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00);
                            }
                            char::from_u32(u).ok_or("lone low surrogate")?
                        }
                        c => return Err(format!("bad escape \\{}", c as char)),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(format!("raw control byte {c:#x} in a string")),
                c => out.push(c),
            }
        }
    }
}

#[test]
fn the_json_reader_rejects_what_it_should() {
    assert_eq!(
        Json::parse(r#" {"a":[1,-2.5e3,true,null],"b":"\"\\\n\u00e9\ud83d\ude00"} "#),
        Ok(Json::Obj(vec![
            (
                "a".to_owned(),
                Json::Arr(vec![
                    Json::Num("1".to_owned()),
                    Json::Num("-2.5e3".to_owned()),
                    Json::Bool(true),
                    Json::Null
                ])
            ),
            ("b".to_owned(), Json::Str("\"\\\né😀".to_owned())),
        ]))
    );
    for bad in [
        "",
        "{",
        "{\"a\":1,}",
        "{\"a\":1}{",
        "{\"a\" 1}",
        "\"a\nb\"",
        "01",
        "{\"a\":1,\"a\":2}",
        "\"\\x\"",
        "{a:1}",
    ] {
        assert!(Json::parse(bad).is_err(), "{bad:?} accepted");
    }
}

/// Checks one `elect --listen --json` line: an object with exactly the
/// fields event, name, revision and leader; returns it.
fn election_json(line: &str, name: &str) -> Json {
    let j = Json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(j.keys(), ["event", "name", "revision", "leader"], "{line}");
    assert_eq!(j.get("name").unwrap().str(), name, "{line}");
    assert!(j.get("revision").unwrap().int() > 0, "{line}");
    let event = j.get("event").unwrap().str();
    let leader = j.get("leader").unwrap();
    match event {
        "no-leader" | "resynced" => assert_eq!(leader, &Json::Null, "{line}"),
        "leader" | "proclaimed" => {
            let key = leader.get("key").expect("leader.key").str();
            assert!(key.starts_with(&format!("{name}/")), "{line}");
            leader.get("value").expect("leader.value").str();
            assert!(leader.get("fencing_token").expect("a token").int() > 0);
            if let Some(lease) = leader.get("lease") {
                assert_eq!(hex_lease(lease.str()), lease_of_key(key), "{line}");
            }
        }
        other => panic!("unknown event {other:?}: {line}"),
    }
    j
}

/// `elect --listen --json`: one JSON object per line, for each kind of event
/// (leader, proclamation, no leader); proposals with quotes, backslashes,
/// control characters and non-ASCII survive the round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_json_prints_one_object_per_event() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("json");
    let listen = Proc::spawn(locker(&ep, &["elect", "--listen", "--json", &name]));
    let first = listen.line("first event", SHORT, |_| true).await;
    assert_eq!(
        election_json(&first, &name).get("event").unwrap().str(),
        "no-leader"
    );

    // A CLI leader with an awkward proposal, then its resignation.
    let proposal = "say \"hi\" \\ tab\there\u{1} é ✓";
    let mut l = Proc::spawn(locker(&ep, &["elect", &name, proposal]));
    let line = l.line("key=", SHORT, |l| l.starts_with("key=")).await;
    let (key, token) = (field(&line, "key"), field(&line, "fencing_token"));
    let (i, ev) = listen
        .line_after(1, "leader", SHORT, |l| l.contains("\"event\":\"leader\""))
        .await;
    let j = election_json(&ev, &name);
    let leader = j.get("leader").unwrap();
    assert_eq!(leader.get("key").unwrap().str(), key);
    assert_eq!(leader.get("value").unwrap().str(), proposal);
    assert_eq!(
        leader.get("fencing_token").unwrap().int().to_string(),
        token
    );
    assert!(leader.get("lease").is_some(), "{ev}");
    l.signal(libc::SIGTERM);
    assert_eq!(l.exit(SHORT).await, 0);
    let (i, _) = listen
        .line_after(i + 1, "no-leader", SHORT, |l| l.contains("no-leader"))
        .await;

    // A library leader that proclaims, then resigns.
    let client = locker::Client::builder()
        .endpoints([ep.as_str()])
        .connect()
        .await
        .expect("connect");
    let mut leadership = client
        .campaign(name.as_str(), "v1")
        .await
        .expect("campaign");
    let proclaimed_at = leadership.proclaim("v2 \u{7f}").await.expect("proclaim");
    let (_, ev) = listen
        .line_after(i + 1, "proclaimed", SHORT, |l| l.contains("proclaimed"))
        .await;
    let j = election_json(&ev, &name);
    assert_eq!(j.get("revision").unwrap().int(), proclaimed_at.0, "{ev}");
    let leader = j.get("leader").unwrap();
    assert_eq!(leader.get("key").unwrap().str(), leadership.key());
    assert_eq!(leader.get("value").unwrap().str(), "v2 \u{7f}");
    assert_eq!(
        leader.get("fencing_token").unwrap().int(),
        leadership.fencing_token().0
    );
    leadership.resign().await.expect("resign");
    let deadline = Instant::now() + SHORT;
    while listen.stdout().len() < 6 {
        assert!(Instant::now() < deadline, "{:?}", listen.stdout());
        sleep(Duration::from_millis(20)).await;
    }
    sleep(Duration::from_millis(200)).await;

    let out = listen.stdout();
    let events: Vec<Json> = out.iter().map(|l| election_json(l, &name)).collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|j| j.get("event").unwrap().str())
        .collect();
    assert_eq!(
        kinds,
        [
            "no-leader",
            "leader",
            "no-leader",
            "leader",
            "proclaimed",
            "no-leader"
        ],
        "{out:?}"
    );
    let revs: Vec<i64> = events
        .iter()
        .map(|j| j.get("revision").unwrap().int())
        .collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{out:?}");
    assert_eq!(
        events[3].get("leader").unwrap().get("value").unwrap().str(),
        "v1"
    );
}
