//! The command never outlives its lock: however locker ends or stalls, the
//! command's whole process tree (a child in a session of its own, an orphan
//! of a double fork) is gone before another holder could be granted the
//! lock. Real etcd processes, real signals, loopback only.
//!
//! Run with `cargo test --features testing,cli --test cli_tree`.
#![cfg(all(feature = "testing", feature = "cli"))]

use locker::testing::{Proxy, ProxyMode, within};

mod common;
use common::tree::{Tree, now_secs, running};
use common::{Proc, SHORT, locker, unique};

/// A single-member etcd for one test, of the version under test
/// (`scripts/test` runs each suite that calls `Etcd::` on every version).
async fn etcd() -> locker::testing::Etcd {
    locker::testing::Etcd::single()
        .await
        .unwrap_or_else(|e| panic!("cannot start etcd for the test: {e}"))
}

/// `locker ARGS -- CMD`, as strings.
fn with_cmd(args: &[&str], cmd: &[String]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    v.push("--".into());
    v.extend(cmd.iter().cloned());
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// How many lines of `stderr` are locker's (the command's shell may say
/// `Terminated` of its own).
fn locker_lines(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.starts_with("locker: ")).count()
}

/// Runs the second holder (same name, same verb), which checks at its start
/// that nothing of the first tree runs; returns its exit code and stdout.
async fn second_holder(ep: &str, verb: &[&str], tree: &Tree) -> (i32, Vec<String>, String) {
    let args = with_cmd(verb, &tree.check_command("a-"));
    let mut p = Proc::spawn(locker(ep, &strs(&args)));
    let code = p.exit(SHORT).await;
    (code, p.stdout(), p.stderr())
}

/// locker killed with SIGKILL while its command runs a detached tree: the
/// next holder's command starts only once every process of it is gone.
async fn a_killed_holder_leaves_nothing_running(verb: &[&str], second: &[&str]) {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let tree = Tree::new();
    let args = with_cmd(verb, &tree.command("a-", false));
    let a = Proc::spawn(locker(&ep, &strs(&args)));
    tree.wait_beating("a-", SHORT).await;
    let pids = tree.pids("a-");

    a.signal(libc::SIGKILL);
    let killed = now_secs();
    let (code, out, err) = second_holder(&ep, second, &tree).await;
    assert_eq!(code, 0, "second holder: {out:?} {err}");
    assert_eq!(out, ["checked"], "the first tree still ran: {out:?}");
    let start = tree.second_start().expect("the second command started");
    let last = tree.last_beat_of_tree("a-");
    eprintln!(
        "killed holder: its tree's last beat {:.0} ms after the SIGKILL, the next command \
         started {:.0} ms after that",
        (last - killed) * 1e3,
        (start - last) * 1e3
    );
    assert!(
        last < start,
        "overlap: last beat {last}, next start {start}"
    );
    for pid in pids {
        assert!(!running(pid), "process {pid} of the first tree survives");
    }
    let stderr = a.stderr();
    assert!(
        stderr.contains("watchdog: locker") && stderr.contains("died"),
        "the watchdog said nothing: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locker_killed_with_sigkill_leaves_no_process_of_its_command_to_the_next_holder() {
    let name = unique("tree-kill");
    let verb = ["lock", &name, "--ttl", "2"];
    a_killed_holder_leaves_nothing_running(&verb, &verb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_with_sigkill_leaves_no_process_of_its_command_to_the_next_leader() {
    let name = unique("tree-elect");
    let first = ["elect", &name, "a", "--ttl", "2"];
    let second = ["elect", &name, "b", "--ttl", "2"];
    a_killed_holder_leaves_nothing_running(&first, &second).await;
}

/// locker's whole process group stopped (SIGSTOP) past its TTL: the
/// watchdog, in a group of its own, kills the tree before the lease could
/// expire; the next holder never overlaps it; the resumed locker exits 80
/// and runs nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_locker_has_its_tree_killed_before_the_lease_could_expire() {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let name = unique("tree-stop");
    let tree = Tree::new();
    let verb = ["lock", &name, "--ttl", "2"];
    let args = with_cmd(&verb, &tree.command("a-", false));
    let mut a = Proc::spawn(locker(&ep, &strs(&args)));
    tree.wait_beating("a-", SHORT).await;
    let pids = tree.pids("a-");

    // SAFETY: kill has no memory-safety preconditions; the group is the
    // one this test started (locker and its command).
    assert_eq!(unsafe { libc::kill(-a.pid, libc::SIGSTOP) }, 0);
    let stopped = now_secs();
    let (code, out, err) = second_holder(&ep, &verb, &tree).await;
    assert_eq!(code, 0, "second holder: {out:?} {err}");
    assert_eq!(out, ["checked"], "the first tree still ran: {out:?}");
    let start = tree.second_start().expect("the second command started");
    let last = tree.last_beat_of_tree("a-");
    eprintln!(
        "stopped holder: its tree's last beat {:.0} ms after the SIGSTOP (TTL 2000 ms), the \
         next command started {:.0} ms after that",
        (last - stopped) * 1e3,
        (start - last) * 1e3
    );
    assert!(
        last < start,
        "overlap: last beat {last}, next start {start}"
    );
    // The lease's local deadline was at most a TTL after the stop; the tree
    // had to be gone before it.
    assert!(
        last < stopped + 2.0,
        "the tree outlived the lease's deadline"
    );
    for &pid in &pids {
        assert!(!running(pid), "process {pid} of the first tree survives");
    }

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(-a.pid, libc::SIGCONT) }, 0);
    let code = a.exit(SHORT).await;
    let stderr = a.stderr();
    assert_eq!(code, 80, "stderr: {stderr}");
    assert!(stderr.contains("stopped renewing"), "{stderr}");
    assert_eq!(locker_lines(&stderr), 1, "one line: {stderr}");
    assert_eq!(
        tree.last_beat_of_tree("a-"),
        last,
        "the tree beat again after SIGCONT"
    );
}

/// Cut off from etcd (blackholed) while its command ignores SIGTERM:
/// locker says the lease could not be kept, the command gets SIGTERM, then
/// SIGKILL, and is gone before a client that waits for the lock (straight
/// to etcd) gets it when the lease expires. Exit 79.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_locker_sigkills_a_command_ignoring_sigterm_before_the_lease_expires() {
    let etcd = etcd().await;
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let name = unique("tree-cut");
    let tree = Tree::new();
    let verb = ["lock", &name, "--ttl", "2", "--kill-after", "500ms"];
    let args = with_cmd(&verb, &tree.command("a-", true));
    let mut a = Proc::spawn(locker(&proxy.url(), &strs(&args)));
    tree.wait_beating("a-", SHORT).await;
    let pids = tree.pids("a-");
    let client = locker::Client::builder()
        .endpoints([etcd.endpoint(0)])
        .connect()
        .await
        .expect("connect");

    proxy.set_mode(ProxyMode::Blackhole);
    let cut = now_secs();
    let next = within("the lease expires", SHORT, client.lock(name.as_str()))
        .await
        .expect("lock");
    let granted = now_secs();
    let code = a.exit(SHORT).await;
    let last = tree.last_beat_of_tree("a-");
    eprintln!(
        "blackholed holder: its tree's last beat {:.0} ms after the cut, the lock granted to \
         the next {:.0} ms after that",
        (last - cut) * 1e3,
        (granted - last) * 1e3
    );
    assert!(
        last < granted,
        "overlap: last beat {last}, granted {granted}"
    );
    assert!(
        tree.got_term("a-cmd"),
        "the command got no SIGTERM before SIGKILL"
    );
    for &pid in &pids {
        assert!(!running(pid), "process {pid} survives");
    }
    let stderr = a.stderr();
    assert_eq!(code, 79, "stderr: {stderr}");
    assert!(stderr.contains("could not be kept alive"), "{stderr}");
    assert_eq!(locker_lines(&stderr), 1, "one line: {stderr}");
    next.release().await.expect("release");
}
