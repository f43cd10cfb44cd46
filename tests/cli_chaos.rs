//! Chaos under `locker lock NAME --ttl 2 -- CMD`: workers take turns on one
//! lock; each command (and a helper it detaches with setsid) appends the
//! time to a file of its own every 50 ms; a nemesis SIGKILLs or SIGSTOPs
//! locker processes (SIGCONT after more than the TTL), the current holder
//! most of the time. Afterwards every run's interval (first to last beat)
//! is compared with every other: any intersection is an overlap of two
//! holders' commands.
//!
//! The short run is part of the suite (0 overlaps asserted); the soak and
//! the same run under `etcdctl lock` (which overlaps: a killed etcdctl
//! leaves its command running) are `#[ignore]`d and print their figures.
//!
//! Run with `cargo test --features testing,cli --test cli_chaos -- --nocapture`.
#![cfg(all(feature = "testing", feature = "cli"))]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;
use tokio::time::{Instant, sleep, timeout};

mod common;
use common::{Proc, locker, prepare, unique};

/// A single-member etcd for one test, of the version under test
/// (`scripts/test` runs each suite that calls `Etcd::` on every version).
async fn etcd() -> locker::testing::Etcd {
    locker::testing::Etcd::single()
        .await
        .unwrap_or_else(|e| panic!("cannot start etcd for the test: {e}"))
}

const WORKERS: usize = 6;

/// The command each holder runs: `run.sh DIR`.
const RUN: &str = r#"#!/bin/bash
dir=$1
f="$dir/run.$BASHPID.${EPOCHREALTIME/./}"
echo "$WORKER" > "$dir/current"
setsid bash -c "while :; do echo \"\$EPOCHREALTIME\" >> '$f'; sleep 0.05; done" &
echo $! >> "$dir/helpers"
n=$(( RANDOM % 30 + 4 ))
for ((i = 0; i < n; i++)); do echo "$EPOCHREALTIME" >> "$f"; sleep 0.05; done
"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Locker,
    Etcdctl,
}

/// A small xorshift, seeded from the clock: no dependency for dice.
struct Dice(u64);

impl Dice {
    fn new() -> Dice {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos();
        Dice((t as u64) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the run did and found.
#[derive(Default, Debug)]
struct Figures {
    runs: usize,
    kills: usize,
    stops: usize,
    overlaps: usize,
    max_overlap_ms: f64,
    exits: BTreeMap<i32, usize>,
}

fn holder_cmd(
    tool: Tool,
    ep: &str,
    etcdctl: &Path,
    name: &str,
    dir: &Path,
    worker: usize,
) -> Command {
    let run = dir.join("run.sh");
    let mut c = match tool {
        Tool::Locker => {
            let mut c = locker(ep, &["--quiet", "lock", name, "--ttl", "2", "--", "bash"]);
            c.arg(&run).arg(dir);
            c
        }
        Tool::Etcdctl => {
            let mut c = Command::new(etcdctl);
            prepare(&mut c);
            c.arg("--endpoints")
                .arg(ep)
                .args(["lock", "--ttl", "2", name, "bash"])
                .arg(&run)
                .arg(dir);
            c
        }
    };
    c.env("WORKER", worker.to_string());
    c
}

async fn chaos(tool: Tool, secs: u64) -> Figures {
    let etcd = etcd().await;
    let ep = etcd.endpoint(0);
    let etcdctl = {
        let c = etcd.etcdctl(0).expect("etcdctl");
        std::path::PathBuf::from(c.get_program())
    };
    let name = unique("chaos");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("run.sh"), RUN).expect("run.sh");
    let pids: Arc<Mutex<Vec<Option<i32>>>> = Arc::new(Mutex::new(vec![None; WORKERS]));
    let exits: Arc<Mutex<BTreeMap<i32, usize>>> = Arc::default();
    let end = Instant::now() + Duration::from_secs(secs);

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (ep, etcdctl, name) = (ep.clone(), etcdctl.clone(), name.clone());
        let (dir, pids, exits) = (dir.path().to_owned(), pids.clone(), exits.clone());
        workers.push(tokio::spawn(async move {
            // Kept until the end: dropping a Proc kills its process group,
            // which would also end a command its holder left running.
            let mut done = Vec::new();
            while Instant::now() < end {
                let mut p = Proc::spawn(holder_cmd(tool, &ep, &etcdctl, &name, &dir, w));
                pids.lock().unwrap()[w] = Some(p.pid);
                let left = end.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
                let code = timeout(left, p.wait_code()).await.unwrap_or(-1);
                pids.lock().unwrap()[w] = None;
                *exits.lock().unwrap().entry(code).or_default() += 1;
                done.push(p);
            }
            done
        }));
    }

    let mut fig = Figures::default();
    let mut dice = Dice::new();
    let mut stopped: Vec<(i32, Instant)> = Vec::new();
    while Instant::now() < end {
        sleep(Duration::from_millis(400 + dice.below(400))).await;
        let now = Instant::now();
        stopped.retain(|&(pid, at)| {
            let due = now >= at;
            if due {
                signal(pid, libc::SIGCONT);
            }
            !due
        });
        let current = std::fs::read_to_string(dir.path().join("current"))
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok());
        let w = match current {
            Some(c) if c < WORKERS && dice.below(10) < 7 => c,
            _ => dice.below(WORKERS as u64) as usize,
        };
        let Some(pid) = pids.lock().unwrap()[w] else {
            continue;
        };
        if stopped.iter().any(|&(p, _)| p == pid) {
            continue;
        }
        if dice.below(2) == 0 {
            signal(pid, libc::SIGKILL);
            fig.kills += 1;
        } else {
            signal(pid, libc::SIGSTOP);
            stopped.push((pid, now + Duration::from_millis(2500)));
            fig.stops += 1;
        }
    }
    for (pid, _) in stopped {
        signal(pid, libc::SIGCONT);
    }
    let mut procs = Vec::new();
    for w in workers {
        procs.extend(w.await.expect("worker"));
    }
    // What a killed etcdctl left running (locker's watchdog left nothing).
    for pid in std::fs::read_to_string(dir.path().join("helpers"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
    {
        signal(pid, libc::SIGKILL);
    }
    let (runs, overlaps, max_ms) = overlaps(dir.path());
    drop(procs);
    fig.runs = runs;
    fig.overlaps = overlaps;
    fig.max_overlap_ms = max_ms;
    fig.exits = exits.lock().unwrap().clone();
    fig
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions. `pid` is a process of
    // this test, or one its worker reaped an instant ago (pids are not
    // reused that fast).
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Every run's interval, from its files; how many pairs intersect, and by
/// how much at most (ms).
fn overlaps(dir: &Path) -> (usize, usize, f64) {
    let mut runs: Vec<(f64, f64)> = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        if !e.file_name().to_string_lossy().starts_with("run.") || e.file_name() == "run.sh" {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let beats: Vec<f64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if let (Some(first), Some(last)) = (
            beats.iter().copied().reduce(f64::min),
            beats.iter().copied().reduce(f64::max),
        ) {
            runs.push((first, last));
        }
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut count, mut max_ms) = (0, 0.0f64);
    for (i, &(start, _)) in runs.iter().enumerate() {
        for &(_, end) in &runs[..i] {
            if end > start {
                count += 1;
                max_ms = max_ms.max((end - start) * 1e3);
            }
        }
    }
    (runs.len(), count, max_ms)
}

fn print(what: &str, secs: u64, f: &Figures) {
    eprintln!(
        "chaos {what}: {secs} s, {WORKERS} workers, {} runs, {} SIGKILLs, {} SIGSTOPs: {} \
         overlapping pairs (longest {:.0} ms); exit codes {:?} (-1: still running at the end)",
        f.runs, f.kills, f.stops, f.overlaps, f.max_overlap_ms, f.exits
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_kills_and_stops_no_two_locker_commands_overlap() {
    let f = chaos(Tool::Locker, 20).await;
    print("locker", 20, &f);
    assert!(f.runs >= 6, "too few runs to mean anything: {f:?}");
    assert!(f.kills + f.stops >= 10, "too few faults: {f:?}");
    assert_eq!(f.overlaps, 0, "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 5 minutes"]
async fn soak_under_kills_and_stops_no_two_locker_commands_overlap() {
    let f = chaos(Tool::Locker, 300).await;
    print("locker soak", 300, &f);
    assert_eq!(f.overlaps, 0, "{f:?}");
}

/// The same run under `etcdctl lock`, for comparison: printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "comparison: etcdctl lock overlaps, by design of its exec form"]
async fn etcdctl_lock_under_the_same_chaos_for_comparison() {
    let f = chaos(Tool::Etcdctl, 20).await;
    print("etcdctl", 20, &f);
}
