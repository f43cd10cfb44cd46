//! [`EtcdBuilder`]: the members' command lines, and startup with retries.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::time::Instant;

use super::health::HEALTH_TIMEOUT;
use super::process::{
    ETCD, find_binary, free_ports, path_flag, spawn_member, unique_cluster_token,
};
use super::{Etcd, Member};
use crate::rt::lock;
use crate::testing::HarnessError;

/// How many times startup is tried when a member lost one of its ports.
const START_ATTEMPTS: usize = 4;

/// A failed startup / health wait, and whether it looks like a port conflict
/// (in which case startup is retried with fresh ports).
pub(super) struct StartFailure {
    pub(super) error: HarnessError,
    pub(super) port_conflict: bool,
}

impl From<HarnessError> for StartFailure {
    fn from(error: HarnessError) -> Self {
        Self {
            error,
            port_conflict: false,
        }
    }
}

#[derive(Debug, Clone)]
struct ClientTls {
    cert: PathBuf,
    key: PathBuf,
    trusted_ca: Option<PathBuf>,
}

/// What the members of one cluster share: their directory, their ports
/// (`ports_per_member` for each, in member order: client, peer, and with
/// client TLS a plain-http metrics port), and their `--initial-cluster`.
struct Plan<'a> {
    dir: &'a Path,
    ports: &'a [u16],
    ports_per_member: usize,
    initial_cluster: String,
    token: String,
}

/// Configures and starts an etcd cluster of real `etcd` processes.
///
/// ```no_run
/// # async fn demo() -> Result<(), locker::testing::HarnessError> {
/// use locker::testing::EtcdBuilder;
/// let etcd = EtcdBuilder::new(3).arg("--auth-token=simple").start().await?;
/// # drop(etcd); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EtcdBuilder {
    members: usize,
    extra_args: Vec<String>,
    tls: Option<ClientTls>,
}

impl EtcdBuilder {
    /// A builder for a cluster of `members` members (typically 1 or 3).
    ///
    /// A member count of 0 is rejected by [`EtcdBuilder::start`].
    #[must_use]
    pub fn new(members: usize) -> Self {
        Self {
            members,
            extra_args: Vec::new(),
            tls: None,
        }
    }

    /// Passes an extra command-line flag to every member, e.g.
    /// `"--auth-token=simple"` or `"--quota-backend-bytes=1048576"`.
    ///
    /// Extra flags come after the harness's own flags.
    #[must_use]
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra_args.push(a.into());
        self
    }

    /// Serves clients over TLS: adds `--cert-file` and `--key-file` and, when
    /// `trusted_ca` is given, `--client-cert-auth --trusted-ca-file` (clients
    /// must then present a certificate signed by that CA).
    ///
    /// Client URLs become `https://127.0.0.1:PORT`. The certificate must be
    /// valid for IP `127.0.0.1`. Because the harness speaks no TLS, each
    /// member also gets a plain-HTTP `--listen-metrics-urls` listener on
    /// another loopback port; health checks ([`Etcd::wait_healthy`]: client
    /// port accepts TCP connections **and** `/health` on the metrics listener
    /// is true), [`Etcd::metric`] and [`Etcd::leader`] (via the
    /// `etcd_server_is_leader` / `etcd_server_has_leader` gauges) use it.
    #[must_use]
    pub fn client_tls(mut self, cert: PathBuf, key: PathBuf, trusted_ca: Option<PathBuf>) -> Self {
        self.tls = Some(ClientTls {
            cert,
            key,
            trusted_ca,
        });
        self
    }

    /// Starts every member and waits (up to 20 s) until all of them report
    /// healthy.
    ///
    /// If a member exits because one of its ports was taken in the meantime,
    /// startup is retried with fresh ports (up to 3 retries).
    ///
    /// # Errors
    ///
    /// * the etcd binary is missing (`ETCD_BIN` unset and no `etcd` on
    ///   `PATH`, or `ETCD_BIN` points to no file): the message says to install
    ///   etcd-server or set `ETCD_BIN`;
    /// * the member count is 0;
    /// * the temporary directory, a log file or a free port cannot be
    ///   obtained, or a process cannot be spawned;
    /// * a member exits during startup or the cluster is not healthy within
    ///   20 s: the message includes the tail of the member's log.
    ///
    /// On error every process already started is killed and the temporary
    /// directory removed.
    pub async fn start(self) -> Result<Etcd, HarnessError> {
        if self.members == 0 {
            return Err(HarnessError::new(
                "EtcdBuilder: a cluster needs at least one member",
            ));
        }
        let bin = find_binary(&ETCD, None)?;
        let mut attempt = 1;
        loop {
            match self.try_start(&bin).await {
                Ok(etcd) => return Ok(etcd),
                Err(failure) if failure.port_conflict && attempt < START_ATTEMPTS => {
                    attempt += 1;
                }
                Err(failure) if attempt > 1 => {
                    return Err(HarnessError::new(format!(
                        "etcd startup failed after {attempt} attempts: {}",
                        failure.error
                    )));
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// Member `i` of the cluster `plan` describes: its ports, files and
    /// command line.
    fn member(&self, i: usize, plan: &Plan<'_>) -> Member {
        let Plan {
            dir,
            ports,
            ports_per_member,
            ref initial_cluster,
            ref token,
        } = *plan;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[i * ports_per_member + 1]);
        let name = format!("m{i}");
        let client_port = ports[i * ports_per_member];
        let metrics_port = self.tls.as_ref().map(|_| ports[i * ports_per_member + 2]);
        let data_dir = dir.join(&name);
        let log_path = dir.join(format!("{name}.log"));
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");

        let mut args: Vec<OsString> = vec![
            format!("--name={name}").into(),
            path_flag("--data-dir", &data_dir),
            format!("--listen-client-urls={client_url}").into(),
            format!("--advertise-client-urls={client_url}").into(),
            format!("--listen-peer-urls={}", peer_url(i)).into(),
            format!("--initial-advertise-peer-urls={}", peer_url(i)).into(),
            format!("--initial-cluster={initial_cluster}").into(),
            "--initial-cluster-state=new".into(),
            format!("--initial-cluster-token={token}").into(),
            "--logger=zap".into(),
            path_flag("--log-outputs", &log_path),
            "--heartbeat-interval=50".into(),
            "--election-timeout=500".into(),
            "--snapshot-count=10000".into(),
        ];
        if let Some(tls) = &self.tls {
            args.push(path_flag("--cert-file", &tls.cert));
            args.push(path_flag("--key-file", &tls.key));
            if let Some(ca) = &tls.trusted_ca {
                args.push("--client-cert-auth=true".into());
                args.push(path_flag("--trusted-ca-file", ca));
            }
        }
        if let Some(port) = metrics_port {
            args.push(format!("--listen-metrics-urls=http://127.0.0.1:{port}").into());
        }
        args.extend(self.extra_args.iter().map(OsString::from));

        Member {
            name,
            client_port,
            metrics_port,
            data_dir,
            log_path,
            args,
            child: Mutex::new(None),
        }
    }

    async fn try_start(&self, bin: &Path) -> Result<Etcd, StartFailure> {
        let dir = tempfile::Builder::new()
            .prefix("locker-etcd-")
            .tempdir()
            .map_err(|e| HarnessError::new(format!("cannot create a temporary directory: {e}")))?;
        let ports_per_member = if self.tls.is_some() { 3 } else { 2 };
        let ports = free_ports(self.members * ports_per_member)?;
        let plan = Plan {
            dir: dir.path(),
            ports_per_member,
            initial_cluster: (0..self.members)
                .map(|i| format!("m{i}=http://127.0.0.1:{}", ports[i * ports_per_member + 1]))
                .collect::<Vec<_>>()
                .join(","),
            ports: &ports,
            token: unique_cluster_token(),
        };
        let members = (0..self.members).map(|i| self.member(i, &plan)).collect();

        let etcd = Etcd {
            members,
            bin: bin.to_path_buf(),
            tls: self.tls.is_some(),
            _dir: dir,
        };
        // From here on, dropping `etcd` (on any error) kills what was spawned.
        for member in &etcd.members {
            let child = spawn_member(&etcd.bin, member)?;
            *lock(&member.child) = Some(child);
        }
        let all: Vec<usize> = (0..etcd.len()).collect();
        etcd.wait_members_healthy(&all, Instant::now() + HEALTH_TIMEOUT)
            .await?;
        Ok(etcd)
    }
}
