//! Test harness: real `etcd` processes and a fault-injecting loopback TCP proxy.
//!
//! This module is compiled only with the `testing` feature. It exists so that
//! tests (the crate's own and its users') can run against a **real** etcd v3
//! server instead of a mock, and can inject the faults a distributed lock must
//! survive: crashed members, frozen members, leader changes, dropped or delayed
//! packets and broken connections.
//!
//! * [`Etcd`] (built with [`EtcdBuilder`], or [`Etcd::single`] /
//!   [`Etcd::cluster`]) starts one or more etcd members as child processes on
//!   free `127.0.0.1` ports, with their data directories and log files in a
//!   private temporary directory. Members can be killed, restarted, paused
//!   (`SIGSTOP`) and resumed (`SIGCONT`); the current leader can be found and
//!   Prometheus metrics scraped. Dropping the [`Etcd`] kills (`SIGKILL`) and
//!   reaps every member and deletes the temporary directory.
//! * [`Proxy`] is a loopback TCP proxy placed between a client and one member,
//!   whose behaviour ([`ProxyMode`]) the test switches at any time: pass,
//!   blackhole, refuse, drop responses, or delay.
//!
//! The etcd binary is taken from the `ETCD_BIN` environment variable if set,
//! else `etcd` on `PATH` (Debian: `apt-get install etcd-server`). A missing
//! binary is an error, never a silent skip. All traffic stays on `127.0.0.1`,
//! and every wait in this module has a deadline.
//!
//! Members run with fast elections (`--heartbeat-interval=50
//! --election-timeout=500`) so fault tests finish quickly, and log to
//! `<tempdir>/m{i}.log` (see [`Etcd::log_tail`]) rather than to the test
//! output.
//!
//! # Example
//!
//! ```no_run
//! use locker::testing::{Etcd, HarnessError, Proxy, ProxyMode};
//!
//! async fn fault_test() -> Result<(), HarnessError> {
//!     let mut etcd = Etcd::cluster(3).await?;
//!     let leader = etcd.leader().await?;
//!
//!     // Put a proxy in front of the leader and point the client under test
//!     // at `proxy.url()` instead of `etcd.endpoint(leader)`.
//!     let proxy = Proxy::start(etcd.client_addr(leader)).await?;
//!     let _url = proxy.url();
//!
//!     // Partition the client from the leader, then crash and restart it.
//!     proxy.set_mode(ProxyMode::Blackhole);
//!     etcd.kill(leader);
//!     let new_leader = etcd.leader().await?;
//!     assert_ne!(new_leader, leader);
//!     etcd.restart(leader).await?;
//!     proxy.set_mode(ProxyMode::Pass);
//!
//!     let committed = etcd.metric(new_leader, "etcd_server_proposals_committed_total").await?;
//!     assert!(committed > 0.0);
//!     Ok(())
//! } // `etcd` and `proxy` are dropped here: no process or socket outlives the test.
//! ```

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How long [`EtcdBuilder::start`], [`Etcd::restart`] and
/// [`Etcd::wait_healthy`] wait for members to become healthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Etcd::leader`] waits for the members to agree on a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Deadline of one HTTP request to a member (health, status).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Deadline of one `/metrics` scrape.
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the proxy waits for the upstream TCP connection.
const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Startup attempts (the first one plus retries after a port conflict).
const START_ATTEMPTS: usize = 4;
/// Lines of member log quoted in startup / health errors.
const ERROR_LOG_LINES: usize = 40;
/// Largest HTTP response the harness reads.
const MAX_HTTP_RESPONSE: u64 = 32 * 1024 * 1024;
/// Read buffer of one proxy direction.
const PROXY_CHUNK: usize = 16 * 1024;
/// Chunks one proxy direction buffers (in `Delay` mode) before it stops reading.
const PROXY_MAX_PENDING: usize = 256;

// ---------------------------------------------------------------------------
// Error type
// ---------------------------------------------------------------------------

/// Error returned by the harness: says what failed and, when a member failed
/// to start or become healthy, includes the tail of that member's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessError {
    message: String,
}

impl HarnessError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The full error message (the same text as the [`fmt::Display`] output).
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HarnessError {}

/// A failed startup / health wait, and whether it looks like a port conflict
/// (in which case startup is retried with fresh ports).
struct StartFailure {
    error: HarnessError,
    port_conflict: bool,
}

impl From<HarnessError> for StartFailure {
    fn from(error: HarnessError) -> Self {
        Self {
            error,
            port_conflict: false,
        }
    }
}

// ---------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ClientTls {
    cert: PathBuf,
    key: PathBuf,
    trusted_ca: Option<PathBuf>,
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
        let bin = find_etcd_binary()?;
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

    async fn try_start(&self, bin: &Path) -> Result<Etcd, StartFailure> {
        let dir = tempfile::Builder::new()
            .prefix("locker-etcd-")
            .tempdir()
            .map_err(|e| HarnessError::new(format!("cannot create a temporary directory: {e}")))?;
        let ports_per_member = if self.tls.is_some() { 3 } else { 2 };
        let ports = free_ports(self.members * ports_per_member)?;
        let token = unique_cluster_token();
        let scheme = if self.tls.is_some() { "https" } else { "http" };

        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[i * ports_per_member + 1]);
        let initial_cluster = (0..self.members)
            .map(|i| format!("m{i}={}", peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");

        let mut members = Vec::with_capacity(self.members);
        for i in 0..self.members {
            let name = format!("m{i}");
            let client_port = ports[i * ports_per_member];
            let metrics_port = self.tls.as_ref().map(|_| ports[i * ports_per_member + 2]);
            let data_dir = dir.path().join(&name);
            let log_path = dir.path().join(format!("{name}.log"));
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

            members.push(Member {
                name,
                client_port,
                metrics_port,
                data_dir,
                log_path,
                args,
                child: Mutex::new(None),
            });
        }

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

// ---------------------------------------------------------------------------
// Running cluster
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    /// Plain-HTTP metrics/health listener (only with client TLS).
    metrics_port: Option<u16>,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Full command line (without the binary), reused by `restart`.
    args: Vec<OsString>,
    /// The process; `None` once killed or reaped.
    child: Mutex<Option<Child>>,
}

/// What became of a member's process.
enum ProcessState {
    Running,
    Exited(ExitStatus),
    NotRunning,
}

/// A running etcd cluster of real `etcd` child processes (see the
/// [module documentation](self)).
///
/// Members are numbered `0..len()` and named `m0`, `m1`, ... Dropping an
/// `Etcd` kills (`SIGKILL`, which also ends paused members) and reaps every
/// member synchronously, then deletes the temporary directory holding the data
/// directories and logs. No process outlives it.
///
/// Methods taking a member index `i` panic if `i >= self.len()`.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    bin: PathBuf,
    tls: bool,
    /// Removed on drop, after the processes are dead (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts a single-member cluster: `EtcdBuilder::new(1).start()`.
    ///
    /// # Errors
    ///
    /// As [`EtcdBuilder::start`].
    pub async fn single() -> Result<Etcd, HarnessError> {
        EtcdBuilder::new(1).start().await
    }

    /// Starts an `n`-member cluster: `EtcdBuilder::new(n).start()`.
    ///
    /// # Errors
    ///
    /// As [`EtcdBuilder::start`] (including `n == 0`).
    pub async fn cluster(n: usize) -> Result<Etcd, HarnessError> {
        EtcdBuilder::new(n).start().await
    }

    /// Number of members (running or not).
    #[must_use]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always `false`: a started cluster has at least one member.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Client URLs of all members in member order, e.g.
    /// `["http://127.0.0.1:41234", ...]` (`https://` with client TLS).
    #[must_use]
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Client URL of member `i`, e.g. `"http://127.0.0.1:41234"`.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    #[must_use]
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.member(i).client_port)
    }

    /// Client address (`127.0.0.1:PORT`) of member `i`, e.g. as a
    /// [`Proxy`] target.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    #[must_use]
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.member(i).client_port))
    }

    /// Kills member `i` with `SIGKILL` (like `kill -9`) and reaps it. Does
    /// nothing if it is not running. Works on paused members too.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = lock(&self.member(i).child).take() {
            kill_and_reap(&mut child);
        }
    }

    /// Starts member `i` again with the same name, data directory, ports and
    /// flags, then waits (up to 20 s) until it is healthy. If the member is
    /// still running it is killed first, so this also serves as
    /// "crash and restart".
    ///
    /// With a multi-member cluster, "healthy" requires a leader, i.e. a quorum
    /// of running members.
    ///
    /// # Errors
    ///
    /// If the process cannot be spawned, exits (e.g. because its port was
    /// taken meanwhile; ports are not changed on restart), or is not healthy
    /// within 20 s. The message includes the tail of the member's log.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.kill(i);
        let member = self.member(i);
        let child = spawn_member(&self.bin, member)?;
        *lock(&member.child) = Some(child);
        self.wait_healthy(i).await
    }

    /// Pauses member `i` with `SIGSTOP` (it keeps its sockets but answers
    /// nothing, like a frozen machine). Returns once the process is stopped
    /// (checked via `/proc` on Linux, bounded by 1 s).
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`, if the member is not running (killed or exited),
    /// or if the `kill` command cannot be run or fails.
    pub fn pause(&self, i: usize) {
        let pid = self.signal(i, "STOP");
        wait_proc_state(pid, true);
    }

    /// Resumes a member paused with [`Etcd::pause`] (`SIGCONT`). Harmless on
    /// a member that is not paused.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`, if the member is not running (killed or exited),
    /// or if the `kill` command cannot be run or fails.
    pub fn resume(&self, i: usize) {
        let pid = self.signal(i, "CONT");
        wait_proc_state(pid, false);
    }

    /// Whether member `i`'s process exists and has not exited (a paused
    /// member counts as running). Reaps the process if it exited.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    #[must_use]
    pub fn is_running(&self, i: usize) -> bool {
        matches!(self.process_state(i), ProcessState::Running)
    }

    /// Index of the current leader, once the members agree on one (waits up
    /// to 10 s).
    ///
    /// Every running member is asked (`POST /v3/maintenance/status`); members
    /// that do not answer within 1 s (e.g. paused) are ignored. The members
    /// that answer must all name the same leader, and that leader must be one
    /// of them. With client TLS the `etcd_server_is_leader` and
    /// `etcd_server_has_leader` gauges from the metrics listener are used
    /// instead: exactly one answering member is leader and all have one.
    ///
    /// # Errors
    ///
    /// If no agreed leader is found within 10 s; the message lists what each
    /// member answered last.
    pub async fn leader(&self) -> Result<usize, HarnessError> {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let last = match self.leader_once().await {
                Ok(i) => return Ok(i),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(HarnessError::new(format!(
                    "etcd members did not agree on a leader within {LEADER_TIMEOUT:?}: {last}"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits (up to 20 s) until member `i` is healthy: `GET /health` on its
    /// client port returns `{"health":"true"}` (the member serves and has a
    /// leader). With client TLS: the client port accepts TCP connections and
    /// `/health` on the plain-HTTP metrics listener is true.
    ///
    /// # Errors
    ///
    /// If the member is not running or exits, or is not healthy within 20 s.
    /// The message includes the last health-check result and the tail of the
    /// member's log.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub async fn wait_healthy(&self, i: usize) -> Result<(), HarnessError> {
        self.member(i);
        self.wait_members_healthy(&[i], Instant::now() + HEALTH_TIMEOUT)
            .await
            .map_err(|failure| failure.error)
    }

    /// Scrapes `GET /metrics` of member `i` and returns the value of metric
    /// `name` (e.g. `"etcd_server_proposals_committed_total"`): the sample on
    /// the line starting with `name` followed by a space or `{`, summed over
    /// all label sets if there are several.
    ///
    /// With client TLS the plain-HTTP metrics listener is scraped instead of
    /// the client port.
    ///
    /// # Errors
    ///
    /// If the member cannot be reached within 5 s, answers with a status other
    /// than 200, or exposes no sample of `name`.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub async fn metric(&self, i: usize, name: &str) -> Result<f64, HarnessError> {
        let member = self.member(i);
        let addr = self.metrics_addr(i);
        let (status, body) = http_request(addr, "GET", "/metrics", None, METRICS_TIMEOUT)
            .await
            .map_err(|e| {
                HarnessError::new(format!(
                    "scraping /metrics of etcd member {}: {e}",
                    member.name
                ))
            })?;
        if status != 200 {
            return Err(HarnessError::new(format!(
                "scraping /metrics of etcd member {}: HTTP status {status}",
                member.name
            )));
        }
        parse_metric(&body, name).ok_or_else(|| {
            HarnessError::new(format!(
                "metric `{name}` not found in /metrics of etcd member {}",
                member.name
            ))
        })
    }

    /// Data directory of member `i` (`<tempdir>/m{i}`). Its parent is the
    /// cluster's temporary directory, which also holds the logs.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    #[must_use]
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.member(i).data_dir
    }

    /// The last `lines` lines of member `i`'s log file (`<tempdir>/m{i}.log`,
    /// which also receives the process's stdout and stderr). If the file
    /// cannot be read, a note saying so is returned instead.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    #[must_use]
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let path = &self.member(i).log_path;
        match fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("<cannot read {}: {e}>", path.display()),
        }
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
        let endpoint = self.endpoint(0);
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
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={endpoint}"))
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| {
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

    // -- private helpers ---------------------------------------------------

    fn member(&self, i: usize) -> &Member {
        assert!(
            i < self.members.len(),
            "etcd member index {i} out of range (the cluster has {} members)",
            self.members.len()
        );
        &self.members[i]
    }

    /// Address serving plain-HTTP `/metrics` and `/health`.
    fn metrics_addr(&self, i: usize) -> SocketAddr {
        let member = self.member(i);
        let port = member.metrics_port.unwrap_or(member.client_port);
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    fn process_state(&self, i: usize) -> ProcessState {
        let mut guard = lock(&self.member(i).child);
        let Some(child) = guard.as_mut() else {
            return ProcessState::NotRunning;
        };
        match child.try_wait() {
            Ok(None) | Err(_) => ProcessState::Running,
            Ok(Some(status)) => {
                *guard = None;
                ProcessState::Exited(status)
            }
        }
    }

    /// Sends `SIG<sig>` to member `i` with the `kill` command; returns the pid.
    fn signal(&self, i: usize, sig: &str) -> u32 {
        let member = self.member(i);
        // Holding the lock keeps the child un-reaped, so the pid cannot be reused.
        let mut guard = lock(&member.child);
        let Some(child) = guard.as_mut() else {
            panic!(
                "cannot send SIG{sig} to etcd member {}: it is not running",
                member.name
            );
        };
        if let Ok(Some(status)) = child.try_wait() {
            *guard = None;
            panic!(
                "cannot send SIG{sig} to etcd member {}: it exited ({status})",
                member.name
            );
        }
        let pid = child.id();
        let result = Command::new("kill")
            .args(["-s", sig, &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match result {
            Ok(status) if status.success() => pid,
            Ok(status) => panic!("`kill -s {sig} {pid}` failed: {status}"),
            Err(e) => panic!("cannot run `kill -s {sig} {pid}`: {e}"),
        }
    }

    /// One health probe of member `i`: `Ok` if healthy, else why not.
    async fn check_health(&self, i: usize) -> Result<(), String> {
        if self.tls {
            let addr = self.client_addr(i);
            match tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("client port {addr}: {e}")),
                Err(_) => return Err(format!("client port {addr}: connect timed out")),
            }
        }
        let (status, body) = http_request(
            self.metrics_addr(i),
            "GET",
            "/health",
            None,
            REQUEST_TIMEOUT,
        )
        .await?;
        if status == 200 && body.contains("\"health\":\"true\"") {
            Ok(())
        } else {
            Err(format!("GET /health: HTTP {status} {}", body.trim()))
        }
    }

    /// Waits until every member in `which` is healthy, failing fast if one exits.
    async fn wait_members_healthy(
        &self,
        which: &[usize],
        deadline: Instant,
    ) -> Result<(), StartFailure> {
        let mut pending: Vec<usize> = which.to_vec();
        let mut last_problem = String::from("no health check completed yet");
        loop {
            // Fail fast if any member died (e.g. its port was taken).
            for &i in which {
                let member = self.member(i);
                match self.process_state(i) {
                    ProcessState::Running => {}
                    ProcessState::Exited(status) => {
                        let tail = self.log_tail(i, ERROR_LOG_LINES);
                        return Err(StartFailure {
                            port_conflict: tail.contains("address already in use"),
                            error: HarnessError::new(format!(
                                "etcd member {} exited ({status}) before becoming healthy; \
                                 log tail ({}):\n{tail}",
                                member.name,
                                member.log_path.display()
                            )),
                        });
                    }
                    ProcessState::NotRunning => {
                        return Err(HarnessError::new(format!(
                            "etcd member {} is not running (killed?); log tail ({}):\n{}",
                            member.name,
                            member.log_path.display(),
                            self.log_tail(i, ERROR_LOG_LINES)
                        ))
                        .into());
                    }
                }
            }
            let mut still_pending = Vec::new();
            for &i in &pending {
                if let Err(why) = self.check_health(i).await {
                    if still_pending.is_empty() {
                        last_problem = why;
                    }
                    still_pending.push(i);
                }
            }
            pending = still_pending;
            let Some(&first) = pending.first() else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                let member = self.member(first);
                return Err(HarnessError::new(format!(
                    "etcd member {} not healthy within {HEALTH_TIMEOUT:?} (last check: \
                     {last_problem}); log tail ({}):\n{}",
                    member.name,
                    member.log_path.display(),
                    self.log_tail(first, ERROR_LOG_LINES)
                ))
                .into());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// One leader probe: the agreed leader's index, or a description of what
    /// the members answered.
    async fn leader_once(&self) -> Result<usize, String> {
        let mut notes = Vec::new();
        // (member index, is that member the leader, leader as seen by it)
        let mut answers: Vec<(usize, bool, String)> = Vec::new();
        for i in 0..self.len() {
            let name = &self.member(i).name;
            if !self.is_running(i) {
                notes.push(format!("{name}: not running"));
                continue;
            }
            let answer = if self.tls {
                self.leader_view_from_metrics(i).await
            } else {
                self.leader_view_from_status(i).await
            };
            match answer {
                Ok((is_leader, leader)) => {
                    notes.push(format!("{name}: leader={leader}"));
                    answers.push((i, is_leader, leader));
                }
                Err(e) => notes.push(format!("{name}: {e}")),
            }
        }
        let summary = notes.join("; ");
        let Some((_, _, seen)) = answers.first() else {
            return Err(format!("no member answered ({summary})"));
        };
        if seen.is_empty() || seen == "0" || answers.iter().any(|(_, _, l)| l != seen) {
            return Err(format!("no agreement yet ({summary})"));
        }
        let leaders: Vec<usize> = answers
            .iter()
            .filter(|(_, is_leader, _)| *is_leader)
            .map(|(i, _, _)| *i)
            .collect();
        match leaders.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("the leader did not answer ({summary})")),
            _ => Err(format!("several members claim leadership ({summary})")),
        }
    }

    /// `(is this member the leader, leader id as seen by it)` from
    /// `/v3/maintenance/status`.
    async fn leader_view_from_status(&self, i: usize) -> Result<(bool, String), String> {
        let (status, body) = http_request(
            self.client_addr(i),
            "POST",
            "/v3/maintenance/status",
            Some("{}"),
            REQUEST_TIMEOUT,
        )
        .await?;
        if status != 200 {
            return Err(format!("status: HTTP {status} {}", body.trim()));
        }
        let id = json_field(&body, "member_id")
            .ok_or_else(|| format!("status: no member_id in {}", body.trim()))?;
        let leader = json_field(&body, "leader").unwrap_or_else(|| "0".to_owned());
        Ok((id == leader && leader != "0", leader))
    }

    /// `(is this member the leader, "yes"/"0")` from the leader gauges; used
    /// with client TLS, where the gauges are the only plain-HTTP view.
    async fn leader_view_from_metrics(&self, i: usize) -> Result<(bool, String), String> {
        let is_leader = self
            .metric(i, "etcd_server_is_leader")
            .await
            .map_err(|e| e.to_string())?;
        let has_leader = self
            .metric(i, "etcd_server_has_leader")
            .await
            .map_err(|e| e.to_string())?;
        let seen = if has_leader > 0.0 { "yes" } else { "0" };
        Ok((is_leader > 0.0, seen.to_owned()))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &self.members {
            if let Some(mut child) = lock(&member.child).take() {
                kill_and_reap(&mut child);
            }
        }
        // `self._dir` (a TempDir) is removed after this, when the fields drop.
    }
}

// ---------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn kill_and_reap(child: &mut Child) {
    // SIGKILL also ends a SIGSTOPped process. Errors only mean "already dead".
    let _ = child.kill();
    let _ = child.wait();
}

fn missing_binary(detail: &str) -> HarnessError {
    HarnessError::new(format!(
        "etcd binary not found: {detail}. The locker test harness needs a real etcd server: \
         install etcd-server (e.g. `apt-get install etcd-server`) or set ETCD_BIN to the path \
         of an etcd binary"
    ))
}

/// `ETCD_BIN` if set, else `etcd` on `PATH`.
fn find_etcd_binary() -> Result<PathBuf, HarnessError> {
    if let Some(value) = std::env::var_os("ETCD_BIN").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(&value);
        if path.components().count() == 1 {
            if let Some(found) = search_path(&value) {
                return Ok(found);
            }
        } else if path.is_file() {
            return Ok(path);
        }
        return Err(missing_binary(&format!(
            "ETCD_BIN={} is not an existing file",
            path.display()
        )));
    }
    search_path(&OsString::from("etcd"))
        .ok_or_else(|| missing_binary("ETCD_BIN is not set and there is no `etcd` on PATH"))
}

fn search_path(name: &OsString) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn spawn_member(bin: &Path, member: &Member) -> Result<Child, HarnessError> {
    let open_log = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .map_err(|e| {
                HarnessError::new(format!(
                    "cannot open log file {}: {e}",
                    member.log_path.display()
                ))
            })
    };
    let (stdout, stderr) = (open_log()?, open_log()?);
    Command::new(bin)
        .args(&member.args)
        .env_remove("ETCD_BIN")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                missing_binary(&format!("cannot execute {}: {e}", bin.display()))
            } else {
                HarnessError::new(format!(
                    "cannot spawn etcd member {} ({}): {e}",
                    member.name,
                    bin.display()
                ))
            }
        })
}

/// Waits (bounded by 1 s) until `/proc/<pid>/stat` shows the process stopped
/// (`stopped == true`) or not stopped. Returns at once where `/proc` is absent.
fn wait_proc_state(pid: u32, stopped: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return;
        };
        // The state is the first field after the parenthesised command name.
        let state = stat
            .rfind(')')
            .and_then(|p| stat[p + 1..].split_whitespace().next())
            .unwrap_or("");
        let is_stopped = state == "T" || state == "t";
        if is_stopped == stopped || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `n` distinct free loopback ports: all listeners stay open until every port
/// is known, so no port is handed out twice.
fn free_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    let listeners = (0..n)
        .map(|_| StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| HarnessError::new(format!("cannot bind a free port on 127.0.0.1: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| HarnessError::new(format!("cannot read a listener's port: {e}")))
}

fn unique_cluster_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "locker-test-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn path_flag(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push("=");
    arg.push(path);
    arg
}

// ---------------------------------------------------------------------------
// Minimal HTTP/1.1 client and parsers
// ---------------------------------------------------------------------------

/// One HTTP/1.1 request (`Connection: close`) to `addr`; returns the status
/// code and the body (de-chunked, lossily decoded as UTF-8).
async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Accept: */*\r\nUser-Agent: locker-testing\r\n"
        );
        if let Some(body) = body {
            let _ = write!(
                request,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or(""));
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_HTTP_RESPONSE)
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        parse_http_response(&response)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{method} http://{addr}{path} timed out after {timeout:?}"))?
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_http_response(raw: &[u8]) -> Result<(u16, String), String> {
    let head_end = find_bytes(raw, b"\r\n\r\n").ok_or_else(|| {
        format!(
            "malformed HTTP response ({} bytes, no end of headers)",
            raw.len()
        )
    })?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("malformed HTTP status line {status_line:?}"))?;
    let mut chunked = false;
    let mut content_length = None;
    for line in lines {
        if let Some((key, value)) = line.split_once(':') {
            let key = key.trim();
            if key.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if key.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(len) = content_length {
        rest.get(..len)
            .ok_or_else(|| format!("truncated HTTP body ({} of {len} bytes)", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end =
            find_bytes(data, b"\r\n").ok_or("truncated chunked body (no chunk size line)")?;
        let size_line = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        data = data[size..]
            .strip_prefix(b"\r\n")
            .ok_or("chunk not followed by CRLF")?;
    }
}

/// Value of `"key": "value"` (or `"key": 123`) found by plain string search.
fn json_field(body: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\"");
    let mut from = 0;
    while let Some(pos) = body[from..].find(&pattern) {
        from += pos + pattern.len();
        let Some(after) = body[from..].trim_start().strip_prefix(':') else {
            continue;
        };
        let after = after.trim_start();
        if let Some(quoted) = after.strip_prefix('"') {
            return quoted.find('"').map(|end| quoted[..end].to_owned());
        }
        let end = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if end > 0 {
            return Some(after[..end].to_owned());
        }
    }
    None
}

/// Sum of the samples of metric `name` in a Prometheus text exposition.
fn parse_metric(body: &str, name: &str) -> Option<f64> {
    let mut sum: Option<f64> = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value_part = if let Some(labels_and_value) = rest.strip_prefix('{') {
            match labels_and_value.rfind('}') {
                Some(end) => &labels_and_value[end + 1..],
                None => continue,
            }
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            continue; // another metric whose name starts with `name`
        };
        if let Some(value) = value_part
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            sum = Some(sum.unwrap_or(0.0) + value);
        }
    }
    sum
}

// ---------------------------------------------------------------------------
// Fault-injecting proxy
// ---------------------------------------------------------------------------

/// Behaviour of a [`Proxy`]; switch with [`Proxy::set_mode`]. A switch applies
/// to existing connections too, within milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// Forward bytes both ways unchanged (the default).
    #[default]
    Pass,
    /// Keep connections open but forward nothing either way; new connections
    /// are accepted but get nothing forwarded either (the upstream connection
    /// is only opened once the mode allows traffic). Nothing is discarded:
    /// bytes wait in socket buffers and flow again after switching back, like
    /// a healed network partition.
    Blackhole,
    /// Close existing connections at once and close new ones right after
    /// accepting them; the proxy keeps listening.
    Refuse,
    /// Forward client-to-server bytes; read and silently discard
    /// server-to-client bytes.
    DropResponses,
    /// Forward both ways, each chunk delayed by the duration after it was
    /// read; order is preserved.
    Delay(Duration),
}

/// A loopback TCP proxy the test controls, placed between a client and one
/// etcd member (see the [module documentation](self)).
///
/// Listens on `127.0.0.1:<free port>` and opens one upstream connection to
/// the target per accepted client connection. Dropping the proxy aborts its
/// accept task and all connection tasks, which closes every socket.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    accept_task: AbortHandle,
}

#[derive(Debug)]
struct ProxyShared {
    target: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    connections: Mutex<Vec<AbortHandle>>,
    to_server: AtomicU64,
    to_client: AtomicU64,
    accepted: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

impl Proxy {
    /// Starts a proxy listening on `127.0.0.1:0` (a free port) that forwards
    /// to `target`, in [`ProxyMode::Pass`].
    ///
    /// # Errors
    ///
    /// If the listening socket cannot be bound.
    ///
    /// # Panics
    ///
    /// If not called from within a Tokio runtime (tasks are spawned on it).
    pub async fn start(target: SocketAddr) -> Result<Proxy, HarnessError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| HarnessError::new(format!("proxy: cannot bind 127.0.0.1:0: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::new(format!("proxy: cannot read local address: {e}")))?;
        let shared = Arc::new(ProxyShared {
            target,
            mode: watch::Sender::new(ProxyMode::Pass),
            connections: Mutex::new(Vec::new()),
            to_server: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared))).abort_handle();
        Ok(Proxy {
            addr,
            shared,
            accept_task,
        })
    }

    /// The address clients connect to (`127.0.0.1:PORT`).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as an etcd endpoint URL: `"http://127.0.0.1:PORT"`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current mode.
    #[must_use]
    pub fn mode(&self) -> ProxyMode {
        *self.shared.mode.borrow()
    }

    /// Switches the mode; existing connections follow promptly.
    /// [`ProxyMode::Refuse`] also closes every current connection at once.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.shared.mode.send_replace(mode);
        if mode == ProxyMode::Refuse {
            self.cut();
        }
    }

    /// Closes every current connection now (both the client and the upstream
    /// socket). New connections are handled per the current mode.
    pub fn cut(&self) {
        let handles = std::mem::take(&mut *lock(&self.shared.connections));
        for handle in handles {
            handle.abort();
        }
    }

    /// Total bytes forwarded so far: `(client -> server, server -> client)`.
    /// Bytes held back (blackhole, delay) or discarded (drop responses) are
    /// not counted.
    #[must_use]
    pub fn bytes_forwarded(&self) -> (u64, u64) {
        (
            self.shared.to_server.load(Ordering::SeqCst),
            self.shared.to_client.load(Ordering::SeqCst),
        )
    }

    /// Number of client connections accepted so far (including ones closed
    /// at once in [`ProxyMode::Refuse`]).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // E.g. out of file descriptors: back off briefly, keep serving.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *shared.mode.borrow() == ProxyMode::Refuse {
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        let _ = client.set_nodelay(true);
        let task = tokio::spawn(proxy_connection(client, Arc::clone(&shared)));
        {
            let mut connections = lock(&shared.connections);
            connections.retain(|handle| !handle.is_finished());
            connections.push(task.abort_handle());
        }
        // Counted once registered, so a test that saw the count can `cut()` it.
        shared.accepted.fetch_add(1, Ordering::SeqCst);
    }
}

async fn proxy_connection(client: TcpStream, shared: Arc<ProxyShared>) {
    let mut mode_rx = shared.mode.subscribe();
    // Connect upstream only once the mode lets traffic through.
    loop {
        let mode = *mode_rx.borrow_and_update();
        match mode {
            ProxyMode::Refuse => return,
            ProxyMode::Blackhole => {
                if mode_rx.changed().await.is_err() {
                    return;
                }
            }
            _ => break,
        }
    }
    let connect = tokio::time::timeout(PROXY_CONNECT_TIMEOUT, TcpStream::connect(shared.target));
    let Ok(Ok(server)) = connect.await else {
        return; // upstream down: close the client connection
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let _ = tokio::try_join!(
        pump(client_read, server_write, Direction::ToServer, &shared),
        pump(server_read, client_write, Direction::ToClient, &shared),
    );
    // Returning drops all four halves, closing both sockets.
}

/// Copies one direction of a connection according to the current mode.
/// `Ok` after a clean end of stream (forwarded as a half-close), `Err` when
/// the whole connection must be closed.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
    shared: &ProxyShared,
) -> Result<(), ()> {
    let mut mode_rx = shared.mode.subscribe();
    let counter = match direction {
        Direction::ToServer => &shared.to_server,
        Direction::ToClient => &shared.to_client,
    };
    let mut buf = vec![0u8; PROXY_CHUNK];
    // Chunks read but not yet (fully) written, with the time they are due.
    let mut pending: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut written_of_front = 0usize;
    let mut eof = false;
    loop {
        let mode = *mode_rx.borrow_and_update();
        let discard = mode == ProxyMode::DropResponses && direction == Direction::ToClient;
        match mode {
            ProxyMode::Refuse => return Err(()),
            _ if discard => {
                pending.clear();
                written_of_front = 0;
            }
            _ => {}
        }
        if eof && pending.is_empty() {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let flowing = mode != ProxyMode::Blackhole;
        let can_read = flowing && !eof && pending.len() < PROXY_MAX_PENDING;
        let front = if flowing { pending.front() } else { None };
        let can_write = front.is_some();
        tokio::select! {
            changed = mode_rx.changed() => {
                if changed.is_err() {
                    return Err(());
                }
            }
            read = from.read(&mut buf), if can_read => match read {
                Ok(0) => eof = true,
                Ok(_) if discard => {}
                Ok(n) => {
                    let due = match mode {
                        ProxyMode::Delay(delay) => Instant::now() + delay,
                        _ => Instant::now(),
                    };
                    pending.push_back((due, buf[..n].to_vec()));
                }
                Err(_) => return Err(()),
            },
            written = write_when_due(&mut to, front, written_of_front), if can_write => match written {
                Ok(0) | Err(_) => return Err(()),
                Ok(n) => {
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                    written_of_front += n;
                    if pending.front().is_some_and(|(_, chunk)| written_of_front >= chunk.len()) {
                        pending.pop_front();
                        written_of_front = 0;
                    }
                }
            },
        }
    }
}

/// Waits until `front` is due, then writes (part of) its unwritten rest.
/// Cancel-safe: a cancelled call has written nothing.
async fn write_when_due(
    to: &mut OwnedWriteHalf,
    front: Option<&(Instant, Vec<u8>)>,
    offset: usize,
) -> io::Result<usize> {
    let Some((due, chunk)) = front else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(*due).await;
    to.write(&chunk[offset..]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics() {
        let body = "# HELP x_total help\n# TYPE x_total counter\nx_total 5\nx_total_other 7\n\
                    y{a=\"1\"} 2\ny{a=\"}\"} 3 1700000000\nz 1e3\n";
        assert_eq!(parse_metric(body, "x_total"), Some(5.0));
        assert_eq!(parse_metric(body, "y"), Some(5.0));
        assert_eq!(parse_metric(body, "z"), Some(1000.0));
        assert_eq!(parse_metric(body, "w"), None);
    }

    #[test]
    fn parses_json_fields() {
        let body =
            r#"{"header":{"cluster_id":"1","member_id":"42","revision":"1"},"leader":"42","n": 7}"#;
        assert_eq!(json_field(body, "member_id").as_deref(), Some("42"));
        assert_eq!(json_field(body, "leader").as_deref(), Some("42"));
        assert_eq!(json_field(body, "n").as_deref(), Some("7"));
        assert_eq!(json_field(body, "missing"), None);
    }

    #[test]
    fn parses_http_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_http_response(plain), Ok((200, "hello".to_owned())));
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                        3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n";
        assert_eq!(
            parse_http_response(chunked),
            Ok((503, "abcdefg".to_owned()))
        );
        assert!(parse_http_response(b"garbage").is_err());
    }
}

/// Certificates for TLS tests, made with the `openssl` command in a private
/// temporary directory (removed on drop): a CA, a server certificate for
/// `127.0.0.1` and `localhost` signed by it, a client certificate signed by
/// it, and a second, unrelated CA (for "wrong CA" tests).
#[derive(Debug)]
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Generates the certificates (EC P-256 keys, valid for one day).
    ///
    /// # Errors
    /// When `openssl` is missing (Debian: `apt-get install openssl`) or fails.
    pub fn generate() -> Result<TestCerts, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("locker-certs-")
            .tempdir()
            .map_err(|e| {
                HarnessError::new(format!("cannot create a temp dir for certificates: {e}"))
            })?;
        let d = dir.path();
        let openssl = |args: &[&str]| -> Result<(), HarnessError> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| {
                    HarnessError::new(format!("cannot run openssl (apt-get install openssl): {e}"))
                })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(HarnessError::new(format!(
                    "openssl {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )))
            }
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let subj = format!("/CN=locker test {ca}");
            let (k, c) = (format!("{ca}.key"), format!("{ca}.crt"));
            let mut args = vec![
                "req", "-x509", "-days", "1", "-subj", &subj, "-keyout", &k, "-out", &c,
            ];
            args.extend(key);
            openssl(&args)?;
        }
        fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .map_err(|e| HarnessError::new(format!("cannot write server.ext: {e}")))?;
        fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .map_err(|e| HarnessError::new(format!("cannot write client.ext: {e}")))?;
        for (name, cn) in [("server", "127.0.0.1"), ("client", "locker-test-client")] {
            let subj = format!("/CN={cn}");
            let (k, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            let mut args = vec!["req", "-subj", &subj, "-keyout", &k, "-out", &csr];
            args.extend(key);
            openssl(&args)?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ])?;
        }
        Ok(TestCerts { dir })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate (PEM) that signed the server and client certificates.
    #[must_use]
    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }

    /// A CA certificate that signed nothing here.
    #[must_use]
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.crt")
    }

    /// The server certificate, for `127.0.0.1` and `localhost`.
    #[must_use]
    pub fn server_cert(&self) -> PathBuf {
        self.file("server.crt")
    }

    /// The server's private key.
    #[must_use]
    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }

    /// The client certificate, for mutual TLS.
    #[must_use]
    pub fn client_cert(&self) -> PathBuf {
        self.file("client.crt")
    }

    /// The client's private key.
    #[must_use]
    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }
}

/// Awaits `fut`, panicking with a message naming `what` if it has no
/// outcome within `limit`: a test step that hangs fails instead.
///
/// # Panics
/// When `limit` passes first.
pub async fn within<F: std::future::IntoFuture>(what: &str, limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no outcome within {limit:?}"),
    }
}

/// Checks `cond` every 20 ms until it holds; panics after `limit`. The way
/// to wait for a condition in a test, instead of sleeping and hoping.
///
/// # Panics
/// When `cond` does not hold within `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(true) = tokio::time::timeout(left, cond()).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback address with nothing listening on it, for "connection
/// refused" tests. It is on 127.0.0.3, where no server of this harness
/// listens (they all use 127.0.0.1), so no other test can take the port
/// between its release here and its use.
///
/// # Panics
/// If no port can be bound on 127.0.0.3.
#[must_use]
pub fn closed_port() -> SocketAddr {
    let l = StdTcpListener::bind((Ipv4Addr::new(127, 0, 0, 3), 0))
        .expect("bind a free port on 127.0.0.3");
    l.local_addr().expect("the bound address")
}
