//! The command's process tree as the watchdog sees it: every live
//! descendant of the watchdog, found by walking `/proc`, and the signals
//! that end them.
//!
//! The watchdog is a child subreaper, so a process that leaves its parent
//! (a daemon's double fork, `setsid`, `nohup ... &`) is re-parented to the
//! watchdog and stays in this tree, whatever process group or session it
//! moved to.

use std::collections::HashMap;
use std::time::Duration;

/// Every live (not zombie) descendant of `root`, by parent links read from
/// `/proc/PID/stat`.
pub(crate) fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<(i32, bool)>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((ppid, zombie)) = parent_of(pid) {
            children.entry(ppid).or_default().push((pid, zombie));
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &(c, zombie) in children.get(&p).map_or(&[][..], Vec::as_slice) {
            if !zombie {
                found.push(c);
            }
            todo.push(c);
        }
    }
    found
}

/// The parent of `pid` and whether it is a zombie; `None` if it is gone.
fn parent_of(pid: i32) -> Option<(i32, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state == "Z" || state == "X"))
}

/// Sends `sig` to every live descendant of `root` (SIGTERM is followed by
/// SIGCONT, so that a stopped process can act on it); returns how many
/// there were.
pub(crate) fn signal_all(root: i32, sig: i32) -> usize {
    let pids = descendants(root);
    for &p in &pids {
        send(p, sig);
        if sig == libc::SIGTERM {
            send(p, libc::SIGCONT);
        }
    }
    pids.len()
}

/// SIGKILLs every descendant of `root` until none is left alive (a process
/// forked meanwhile is found on the next round), reaping with `reap`
/// between rounds. Returns false if some are still alive after `limit`
/// (a process stuck in the kernel, which no signal ends sooner).
pub(crate) fn kill_all(root: i32, limit: Duration, mut reap: impl FnMut()) -> bool {
    let start = std::time::Instant::now();
    loop {
        let n = signal_all(root, libc::SIGKILL);
        reap();
        if n == 0 {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(crate) fn send(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions. `pid` was a live
    // descendant an instant ago; it can only have been reused if it exited
    // and was reaped in between, within the tree (see docs/cli.md).
    unsafe {
        libc::kill(pid, sig);
    }
}
