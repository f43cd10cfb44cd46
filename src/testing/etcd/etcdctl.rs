//! etcdctl, for what the harness does through etcd's own tool.

use std::process::{Command, Stdio};

use super::Etcd;
use super::process::{ETCD, ETCDCTL, find_binary};
use crate::testing::HarnessError;

impl Etcd {
    /// An `etcdctl` command (API v3) talking to member `i`, with no
    /// arguments yet and stdin closed; add a subcommand and run it.
    ///
    /// The binary is `ETCDCTL_BIN` if set, else the `etcdctl` in the
    /// directory of the etcd binary in use (so that both come from one etcd
    /// release), else `etcdctl` on `PATH` (Debian: `etcd-client`). For
    /// plain-http clusters; with client TLS, add etcdctl's TLS flags.
    ///
    /// Read its output in a way that does not depend on the etcd version
    /// (e.g. `-w json`): etcdctl 3.4 and 3.5 print some values differently,
    /// such as lease IDs (3.5 zero-pads them to 16 hex digits).
    ///
    /// ```no_run
    /// # fn demo(etcd: &locker::testing::Etcd) -> Result<(), Box<dyn std::error::Error>> {
    /// let out = etcd.etcdctl(0)?.args(["put", "k", "v"]).output()?;
    /// assert!(out.status.success());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When no etcdctl binary is found.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn etcdctl(&self, i: usize) -> Result<Command, HarnessError> {
        let bin = find_binary(&ETCDCTL, self.bin.parent())?;
        let mut cmd = Command::new(bin);
        cmd.env("ETCDCTL_API", "3")
            // etcdctl reads ETCDCTL_* variables as flags: not ours.
            .env_remove(ETCDCTL.var)
            .env_remove(ETCD.var)
            .arg(format!("--endpoints={}", self.endpoint(i)))
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Enables etcd's authentication (plain-http clusters): creates `root`
    /// (password `root-password`, role `root`), a role that may read and write
    /// only keys under `prefix`, and `user` with `password` holding that role.
    /// Runs `etcdctl` (Debian: `etcd-client`).
    ///
    /// # Errors
    /// When `etcdctl` is missing or one of its commands fails.
    pub fn enable_auth(
        &self,
        user: &str,
        password: &str,
        prefix: &str,
    ) -> Result<(), HarnessError> {
        let role = format!("{user}-role");
        let user_pw = format!("{user}:{password}");
        let steps: [&[&str]; 8] = [
            &["user", "add", "root:root-password"],
            &["role", "add", "root"],
            &["user", "grant-role", "root", "root"],
            &["role", "add", &role],
            &[
                "role",
                "grant-permission",
                &role,
                "readwrite",
                prefix,
                "--prefix=true",
            ],
            &["user", "add", &user_pw],
            &["user", "grant-role", user, &role],
            &["auth", "enable"],
        ];
        for args in steps {
            let out = self.etcdctl(0)?.args(args).output().map_err(|e| {
                HarnessError::new(format!(
                    "cannot run etcdctl (apt-get install etcd-client): {e}"
                ))
            })?;
            if !out.status.success() {
                return Err(HarnessError::new(format!(
                    "etcdctl {} failed: {}",
                    args[..2].join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }
}
