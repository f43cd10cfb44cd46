//! A command's process tree that leaves traces: each of its processes
//! records its pid and a heartbeat (wall-clock time) every 50 ms in a
//! directory, so that a test can tell when the last of them stopped, and a
//! second holder's command can check at its start that none is left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use locker::testing::wait_until;

/// `hb.sh DIR NAME`: writes its pid to DIR/pid.NAME, then appends the
/// time to DIR/hb.NAME every 50 ms. With a third argument `ignore-term`, it
/// notes SIGTERM in DIR/term.NAME and carries on.
const HEARTBEAT: &str = r#"#!/bin/bash
dir=$1; name=$2
if [ "$3" = ignore-term ]; then
  trap 'echo "$EPOCHREALTIME" >> "$dir/term.$name"' TERM
fi
echo $$ > "$dir/pid.$name"
while :; do echo "$EPOCHREALTIME" >> "$dir/hb.$name"; sleep 0.05; done
"#;

/// The processes of the tree: the command itself, a child that left for a
/// session of its own (`setsid`), and an orphan of a double fork.
pub const TREE: [&str; 3] = ["cmd", "setsid", "orphan"];

pub struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("hb.sh");
        std::fs::write(&script, HEARTBEAT).expect("write hb.sh");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod hb.sh");
        Tree { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The command that starts the tree (after `--`); `prefix` tells this
    /// tree's files from another's in the same directory.
    pub fn command(&self, prefix: &str, ignore_term: bool) -> Vec<String> {
        let d = self.dir.path().display();
        let ig = if ignore_term { " ignore-term" } else { "" };
        let script = format!(
            "setsid {d}/hb.sh {d} {prefix}setsid{ig} & \
             ( {d}/hb.sh {d} {prefix}orphan{ig} & ) ; \
             exec {d}/hb.sh {d} {prefix}cmd{ig}"
        );
        vec!["bash".into(), "-c".into(), script]
    }

    /// The second holder's command: notes the time it starts, then a line
    /// `alive NAME PID` for each process of the tree still alive (not a
    /// zombie), then `checked`.
    pub fn check_command(&self, prefix: &str) -> Vec<String> {
        let d = self.dir.path().display();
        let script = format!(
            r#"echo "$EPOCHREALTIME" > {d}/second.start
for f in {d}/pid.{prefix}*; do p=$(cat "$f")
  if [ -r /proc/$p/stat ] && ! grep -q ') Z' /proc/$p/stat 2>/dev/null; then echo "alive $f $p"; fi
done
echo checked"#
        );
        vec!["bash".into(), "-c".into(), script]
    }

    /// Waits until every process of the tree has beaten at least once.
    pub async fn wait_beating(&self, prefix: &str, limit: Duration) {
        wait_until("every process of the tree beats", limit, || async {
            TREE.iter()
                .all(|n| self.last_beat(&format!("{prefix}{n}")).is_some())
        })
        .await;
    }

    /// The pids of the tree's processes.
    pub fn pids(&self, prefix: &str) -> Vec<i32> {
        TREE.iter()
            .map(|n| {
                let f = self.file(&format!("pid.{prefix}{n}"));
                std::fs::read_to_string(&f)
                    .unwrap_or_else(|e| panic!("{f:?}: {e}"))
                    .trim()
                    .parse()
                    .expect("a pid")
            })
            .collect()
    }

    /// The last heartbeat of process NAME, in seconds since the epoch.
    pub fn last_beat(&self, name: &str) -> Option<f64> {
        let text = std::fs::read_to_string(self.file(&format!("hb.{name}"))).ok()?;
        text.lines()
            .filter_map(|l| l.trim().parse().ok())
            .next_back()
    }

    /// The last heartbeat of any process of the tree.
    pub fn last_beat_of_tree(&self, prefix: &str) -> f64 {
        TREE.iter()
            .filter_map(|n| self.last_beat(&format!("{prefix}{n}")))
            .fold(0.0, f64::max)
    }

    /// When the second holder's command started.
    pub fn second_start(&self) -> Option<f64> {
        let text = std::fs::read_to_string(self.file("second.start")).ok()?;
        text.trim().parse().ok()
    }

    /// Whether process NAME noted a SIGTERM.
    pub fn got_term(&self, name: &str) -> bool {
        self.file(&format!("term.{name}")).exists()
    }
}

/// The wall-clock time now, in seconds since the epoch (as `$EPOCHREALTIME`).
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Whether `pid` is alive and not a zombie.
pub fn running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|p| stat[p + 1..].split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}
