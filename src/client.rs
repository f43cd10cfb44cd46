//! The connection to etcd: endpoints, timeouts, failover, auth token and the
//! audit hook. Every RPC locker makes goes through [`Client::unary`] or
//! [`Client::open_stream`], the one place that times it, fails it over and
//! records it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::audit::{AuditSink, Describe, Sink, WireKind, WireRecord};
use crate::error::{Error, Result};
use crate::types::{KeyValue, LeaseId, Revision};
use crate::wire::etcdserverpb as pb;
use crate::wire::etcdserverpb::{
    auth_client::AuthClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient,
};

/// gRPC paths of every RPC locker can send, as they appear in audit records.
pub mod paths {
    /// `KV.Range`
    pub const RANGE: &str = "/etcdserverpb.KV/Range";
    /// `KV.Put`
    pub const PUT: &str = "/etcdserverpb.KV/Put";
    /// `KV.DeleteRange`
    pub const DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";
    /// `KV.Txn`
    pub const TXN: &str = "/etcdserverpb.KV/Txn";
    /// `Lease.LeaseGrant`
    pub const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
    /// `Lease.LeaseRevoke`
    pub const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";
    /// `Lease.LeaseKeepAlive` (a bidirectional stream)
    pub const LEASE_KEEPALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
    /// `Lease.LeaseTimeToLive`
    pub const LEASE_TTL: &str = "/etcdserverpb.Lease/LeaseTimeToLive";
    /// `Watch.Watch` (a bidirectional stream)
    pub const WATCH: &str = "/etcdserverpb.Watch/Watch";
    /// `Maintenance.Status`
    pub const STATUS: &str = "/etcdserverpb.Maintenance/Status";
    /// `Auth.Authenticate`
    pub const AUTHENTICATE: &str = "/etcdserverpb.Auth/Authenticate";
}

/// Whether a call may be sent again after it may already have reached etcd.
///
/// The failover rule: a call that could not be sent (connection refused or
/// not established in time) goes to the next endpoint, whatever it is. A
/// call that was sent but whose answer was lost goes to the next endpoint
/// only when it is [`Retry::Safe`]: a read, or a write whose repetition is
/// harmless (locker's create-if-absent acquire, a guarded delete, a revoke,
/// a lease grant whose duplicate is an unused lease that expires by itself).
/// Any other write reports [`Error::Ambiguous`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Retry {
    Safe,
    IfNotSent,
}

/// How long an endpoint that failed is skipped before it is tried again
/// (unless every endpoint is failing).
const DOWN_BACKOFF: Duration = Duration::from_secs(2);

/// Builds a [`Client`].
#[must_use = "a builder does nothing until connect() is called"]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    http2_keepalive: Option<(Duration, Duration)>,
    user: Option<(String, String)>,
    audit: Option<Sink>,
    #[cfg(feature = "tls")]
    tls: TlsOptions,
}

/// TLS settings for `https://` endpoints.
#[cfg(feature = "tls")]
#[derive(Default)]
struct TlsOptions {
    ca: Option<std::path::PathBuf>,
    identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    server_name: Option<String>,
}

#[cfg(feature = "tls")]
impl TlsOptions {
    fn read(path: &std::path::Path) -> Result<Vec<u8>> {
        let bytes = std::fs::read(path).map_err(|e| Error::CertFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if !String::from_utf8_lossy(&bytes).contains("-----BEGIN") {
            return Err(Error::CertFile {
                path: path.display().to_string(),
                reason: "not a PEM file (no -----BEGIN line)".into(),
            });
        }
        Ok(bytes)
    }

    fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some() || self.server_name.is_some()
    }

    fn config(&self) -> Result<tonic::transport::ClientTlsConfig> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut cfg = ClientTlsConfig::new().assume_http2(true);
        cfg = match &self.ca {
            Some(ca) => cfg.ca_certificate(Certificate::from_pem(Self::read(ca)?)),
            None => cfg.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            cfg = cfg.identity(Identity::from_pem(Self::read(cert)?, Self::read(key)?));
        }
        if let Some(name) = &self.server_name {
            cfg = cfg.domain_name(name.clone());
        }
        Ok(cfg)
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoints: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            http2_keepalive: Some((Duration::from_secs(5), Duration::from_secs(3))),
            user: None,
            audit: None,
            #[cfg(feature = "tls")]
            tls: TlsOptions::default(),
        }
    }
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("http2_keepalive", &self.http2_keepalive)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("audit", &self.audit.is_some())
            .finish()
    }
}

impl ClientBuilder {
    /// The etcd endpoints: `http://host:port`, or `host:port` (taken as
    /// `http://`). Several endpoints of one cluster give failover.
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Time allowed to establish a connection to one endpoint (default 3 s).
    /// An endpoint that fails it is skipped for a while.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Time allowed for one attempt of one unary call (default 5 s).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// HTTP/2 keepalive pings: interval and timeout (default 5 s and 3 s);
    /// `None` turns them off. They let a dead connection be noticed while a
    /// stream is idle.
    pub fn http2_keepalive(mut self, interval_and_timeout: Option<(Duration, Duration)>) -> Self {
        self.http2_keepalive = interval_and_timeout;
        self
    }

    /// Authenticate as this user; the token is sent with every call.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// Trust the CA certificates in this PEM file for `https://` endpoints
    /// (default: the system's roots).
    #[cfg(feature = "tls")]
    pub fn ca_cert_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca = Some(path.into());
        self
    }

    /// Present this client certificate and key (PEM files) to `https://`
    /// endpoints: mutual TLS.
    #[cfg(feature = "tls")]
    pub fn client_cert_files(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls.identity = Some((cert.into(), key.into()));
        self
    }

    /// Check the servers' certificates against this name instead of the
    /// endpoint's host.
    #[cfg(feature = "tls")]
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls.server_name = Some(name.into());
        self
    }

    /// Receive a [`WireRecord`] for every wire call and stream message.
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Some(Arc::new(sink));
        self
    }

    /// Checks the endpoints, connects, and asks etcd for its status (and
    /// authenticates, when a user is set).
    ///
    /// Wire calls: `Maintenance/Status` to the first endpoint that answers
    /// (preceded by `Auth/Authenticate` when a user is set).
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] for an endpoint that cannot be parsed,
    /// [`Error::InvalidArgument`] for an empty list or a zero timeout,
    /// [`Error::Unreachable`] when no endpoint answers, [`Error::NotEtcd`]
    /// when the peer is not etcd, [`Error::AuthFailed`] for bad credentials.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is left behind but the connections, which close
    /// when the future is dropped.
    pub async fn connect(self) -> Result<Client> {
        let client = self.build()?;
        let first_contact = async {
            if client.inner.user.is_some() {
                client.authenticate().await?;
            }
            client.status().await
        };
        match first_contact.await {
            Ok(_) => Ok(client),
            // Every endpoint accepted TCP, then dropped the connection
            // without an HTTP/2 answer: not an etcd gRPC port.
            Err(Error::Unreachable { attempts })
                if !attempts.is_empty()
                    && attempts.iter().all(|(_, why)| {
                        why.contains("connection closed") || why.contains("broken pipe")
                    }) =>
            {
                let (endpoint, why) = attempts.last().cloned().unwrap_or_default();
                Err(Error::NotEtcd {
                    endpoint,
                    detail: format!(
                        "it accepted the connection, then closed it without an HTTP/2 answer: {why}"
                    ),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Builds the client without sending anything; connections are made on
    /// first use. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// As for [`connect`](Self::connect), minus the network errors.
    pub fn build(self) -> Result<Client> {
        if self.endpoints.is_empty() {
            return Err(Error::invalid("at least one etcd endpoint is needed"));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::invalid("timeouts must be greater than zero"));
        }
        let urls = self
            .endpoints
            .iter()
            .map(|raw| Ok((raw, normalize_endpoint(raw)?)))
            .collect::<Result<Vec<_>>>()?;
        // Certificate files are checked even for http:// endpoints: a bad
        // path is reported at once, not when an https endpoint is added.
        #[cfg(feature = "tls")]
        let tls = if self.tls.is_set() || urls.iter().any(|(_, u)| u.starts_with("https://")) {
            Some(self.tls.config()?)
        } else {
            None
        };
        let mut eps = Vec::new();
        for (raw, url) in urls {
            if eps.iter().any(|e: &Ep| e.url == url) {
                continue;
            }
            let mut ep = Endpoint::from_shared(url.clone())
                .map_err(|e| Error::InvalidEndpoint {
                    endpoint: raw.clone(),
                    reason: e.to_string(),
                })?
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true);
            #[cfg(feature = "tls")]
            if let (Some(tls), true) = (&tls, url.starts_with("https://")) {
                ep = ep
                    .tls_config(tls.clone())
                    .map_err(|e| Error::InvalidEndpoint {
                        endpoint: raw.clone(),
                        reason: format!("TLS setup failed: {e}"),
                    })?;
            }
            if let Some((interval, timeout)) = self.http2_keepalive {
                ep = ep
                    .http2_keep_alive_interval(interval)
                    .keep_alive_timeout(timeout)
                    .keep_alive_while_idle(true);
            }
            eps.push(Ep {
                url,
                channel: ep.connect_lazy(),
                down_until: Mutex::new(None),
            });
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: eps,
                preferred: AtomicUsize::new(0),
                request_timeout: self.request_timeout,
                audit: self.audit,
                user: self.user,
                token: RwLock::new(None),
                auth_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }
}

/// Accepts `http://host:port`, `https://host:port` and `host:port`.
fn normalize_endpoint(raw: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidEndpoint {
        endpoint: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let s = raw.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_owned(), s),
    };
    match scheme.as_str() {
        "http" => {}
        "https" if cfg!(feature = "tls") => {}
        "https" => {
            return Err(bad(
                "https endpoints need TLS: build locker with the `tls` feature",
            ));
        }
        _ => return Err(bad("the scheme must be http:// or https://")),
    }
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') {
        return Err(bad("an endpoint is host:port, without a path"));
    }
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| bad("a port is needed, e.g. 127.0.0.1:2379"))?;
    if host.is_empty() || host == "[]" {
        return Err(bad("the host is empty"));
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad("the port must be a number from 1 to 65535"));
    }
    Ok(format!("{scheme}://{hostport}"))
}

struct Ep {
    url: String,
    channel: Channel,
    down_until: Mutex<Option<Instant>>,
}

impl Ep {
    fn is_down(&self, now: Instant) -> bool {
        crate::rt::lock(&self.down_until).is_some_and(|t| t > now)
    }

    fn mark_down(&self) {
        *crate::rt::lock(&self.down_until) = Some(Instant::now() + DOWN_BACKOFF);
    }

    fn mark_up(&self) {
        *crate::rt::lock(&self.down_until) = None;
    }
}

struct Inner {
    endpoints: Vec<Ep>,
    preferred: AtomicUsize,
    request_timeout: Duration,
    audit: Option<Sink>,
    user: Option<(String, String)>,
    token: RwLock<Option<AsciiMetadataValue>>,
    auth_lock: tokio::sync::Mutex<()>,
}

/// A connection to an etcd cluster. Cheap to clone; clones share the
/// connections. Dropping the last clone closes them.
///
/// ```no_run
/// # async fn f() -> locker::Result<()> {
/// let client = locker::Client::builder()
///     .endpoints(["http://127.0.0.1:2379"])
///     .connect()
///     .await?;
/// let guard = client.lock("jobs/nightly").await?;
/// // ... work ...
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

/// How one failed attempt is treated.
enum Failure {
    /// Nothing reached etcd: try the next endpoint.
    NotSent(String),
    /// An `https` endpoint closed or reset the connection during the TLS
    /// handshake: nothing was sent. A member dying, or a server that does
    /// not speak TLS; when every attempt ends so, the answer is
    /// [`Error::Tls`].
    TlsCutOff(String),
    /// The request may have reached etcd; its answer was lost.
    Lost(String),
    /// etcd refused it before applying it; another endpoint or a later try may work.
    Busy(String),
    /// The auth token expired or is stale: authenticate again and retry.
    Reauth,
    /// The peer does not speak etcd's gRPC (another endpoint may).
    NotEtcd(String),
    /// A final answer.
    Fatal(Error),
}

/// What etcd's member status says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// The endpoint that answered.
    pub endpoint: String,
    /// etcd's version, e.g. `3.4.23`.
    pub version: String,
    /// The member's id.
    pub member_id: u64,
    /// The leader's member id (0: no leader).
    pub leader: u64,
    /// The store revision.
    pub revision: Revision,
}

impl Client {
    /// Starts a [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The normalized endpoint URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// The per-attempt request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    pub(crate) fn audit(&self, record: impl FnOnce() -> WireRecord) {
        #[cfg(feature = "tracing")]
        let traced = tracing::enabled!(target: "locker::wire", tracing::Level::DEBUG);
        #[cfg(not(feature = "tracing"))]
        let traced = false;
        if self.inner.audit.is_none() && !traced {
            return;
        }
        let record = record();
        if let Some(sink) = &self.inner.audit {
            sink.record(&record);
        }
        #[cfg(feature = "tracing")]
        if traced {
            tracing::debug!(
                target: "locker::wire",
                endpoint = %record.endpoint,
                path = record.path,
                kind = ?record.kind,
                request = %record.request,
                response = %record.response,
                status = %record.status,
                latency_us = record.latency.map(|l| l.as_micros() as u64),
                "wire"
            );
        }
    }

    /// Endpoint indices in the order to try them: the preferred one, then
    /// the others round-robin; endpoints that failed lately go last.
    fn order(&self) -> Vec<usize> {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        let now = Instant::now();
        let (mut up, down): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|i| (start + i) % n)
            .partition(|&i| !self.inner.endpoints[i].is_down(now));
        up.extend(down);
        up
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(token) = crate::rt::read(&self.inner.token).clone() {
            req.metadata_mut().insert("token", token);
        }
        req
    }

    /// Sends one unary RPC with timeout, failover, re-authentication and an
    /// audit record per attempt.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        path: &'static str,
        retry: Retry,
        msg: Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: Describe + Clone,
        Resp: Describe,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let timeout = self.inner.request_timeout;
        let mut attempts: Vec<(String, String)> = Vec::new();
        let mut reauthed = false;
        let mut timeouts = 0;
        let mut not_etcd = 0;
        let mut cut_offs = 0;
        // First round: every endpoint once, healthy ones first. Second
        // round, after a short pause: the endpoints that refused quickly
        // (not reachable, or no leader yet), never one that timed out.
        let mut plan: Vec<usize> = self.order();
        plan.reverse();
        let mut second: Vec<usize> = Vec::new();
        let mut in_second = false;
        loop {
            let Some(i) = plan.pop() else {
                if in_second || second.is_empty() {
                    break;
                }
                in_second = true;
                plan = std::mem::take(&mut second);
                plan.reverse();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let ep = &self.inner.endpoints[i];
            let started = Instant::now();
            let outcome =
                tokio::time::timeout(timeout, call(ep.channel.clone(), self.request(msg.clone())))
                    .await;
            let latency = started.elapsed();
            let record = |response: String, status: String| WireRecord {
                request: msg.describe(),
                response,
                status,
                latency: Some(latency),
                ..WireRecord::new(&ep.url, path, WireKind::Unary)
            };
            let failure = match outcome {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    self.audit(|| record(resp.describe(), "OK".to_owned()));
                    ep.mark_up();
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return Ok(resp);
                }
                Ok(Err(status)) => {
                    self.audit(|| record(String::new(), status_text(&status)));
                    classify(&ep.url, path, &status)
                }
                Err(_) => {
                    self.audit(|| record(String::new(), format!("timeout after {timeout:?}")));
                    if retry == Retry::IfNotSent {
                        ep.mark_down();
                        return Err(Error::Timeout {
                            endpoint: ep.url.clone(),
                            path,
                            after: timeout,
                        });
                    }
                    timeouts += 1;
                    Failure::Lost(format!("no answer within {timeout:?}"))
                }
            };
            cut_offs += usize::from(matches!(failure, Failure::TlsCutOff(_)));
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Reauth if path == paths::AUTHENTICATE => {
                    return Err(Error::AuthFailed {
                        endpoint: ep.url.clone(),
                        message: "etcd refused to authenticate (invalid auth token)".into(),
                    });
                }
                Failure::Reauth => {
                    self.reauth_once(&mut reauthed, &ep.url).await?;
                    plan.push(i);
                }
                Failure::NotSent(why) | Failure::TlsCutOff(why) => {
                    ep.mark_down();
                    attempts.push((ep.url.clone(), why));
                    second.push(i);
                }
                Failure::Busy(why) => {
                    attempts.push((ep.url.clone(), why));
                    second.push(i);
                }
                Failure::NotEtcd(why) => {
                    ep.mark_down();
                    if retry == Retry::IfNotSent {
                        return Err(Error::NotEtcd {
                            endpoint: ep.url.clone(),
                            detail: why,
                        });
                    }
                    not_etcd += 1;
                    attempts.push((ep.url.clone(), why));
                }
                Failure::Lost(why) => {
                    ep.mark_down();
                    if retry == Retry::IfNotSent {
                        return Err(Error::Ambiguous {
                            endpoint: ep.url.clone(),
                            path,
                            detail: why,
                        });
                    }
                    attempts.push((ep.url.clone(), why));
                }
            }
        }
        if let Some(e) = cut_off_everywhere(&mut attempts, cut_offs) {
            return Err(e);
        }
        attempts.dedup();
        if not_etcd > 0 && not_etcd == attempts.len() {
            let (endpoint, detail) = attempts.pop().unwrap_or_default();
            return Err(Error::NotEtcd { endpoint, detail });
        }
        if timeouts > 0 && timeouts == attempts.len() {
            let endpoint = attempts.pop().map(|a| a.0).unwrap_or_default();
            return Err(Error::Timeout {
                endpoint,
                path,
                after: timeout,
            });
        }
        Err(Error::Unreachable { attempts })
    }

    /// Opens a bidirectional stream on the first endpoint that accepts it,
    /// with `first()` as its first message.
    pub(crate) async fn open_stream<Req, Resp, F, Fut>(
        &self,
        path: &'static str,
        first: impl Fn() -> Req,
        call: F,
    ) -> Result<BiStream<Req, Resp>>
    where
        Req: Describe + Send + 'static,
        Resp: Describe,
        F: Fn(Channel, tonic::Request<ReceiverStream<Req>>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<tonic::Streaming<Resp>>, Status>>,
    {
        let timeout = self.inner.request_timeout;
        let mut attempts = Vec::new();
        let mut reauthed = false;
        let mut cut_offs = 0;
        let mut plan = self.order();
        plan.reverse();
        while let Some(i) = plan.pop() {
            let ep = &self.inner.endpoints[i];
            let (tx, rx) = mpsc::channel::<Req>(64);
            let msg = first();
            let summary = msg.describe();
            // The first message goes in before the call: etcd answers a
            // stream's headers only once it has something to say.
            let _ = tx.try_send(msg);
            let mut req = self.request(ReceiverStream::new(rx));
            // Ask etcd to refuse, and later cancel, the stream when this
            // member has no leader: a watch or keepalive there would never
            // hear of the cluster's changes.
            req.metadata_mut()
                .insert("hasleader", AsciiMetadataValue::from_static("true"));
            let outcome = tokio::time::timeout(timeout, call(ep.channel.clone(), req)).await;
            let status = match &outcome {
                Ok(Ok(_)) => "OK".to_owned(),
                Ok(Err(s)) => status_text(s),
                Err(_) => format!("timeout after {timeout:?}"),
            };
            self.audit(|| WireRecord {
                status,
                ..WireRecord::new(&ep.url, path, WireKind::StreamOpen)
            });
            self.audit(|| WireRecord {
                request: summary,
                ..WireRecord::new(&ep.url, path, WireKind::StreamSend)
            });
            let failure = match outcome {
                Ok(Ok(resp)) => {
                    ep.mark_up();
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return Ok(BiStream {
                        client: self.clone(),
                        endpoint: ep.url.clone(),
                        path,
                        tx,
                        rx: resp.into_inner(),
                    });
                }
                Ok(Err(status)) => classify(&ep.url, path, &status),
                Err(_) => Failure::Lost(format!("no answer within {timeout:?}")),
            };
            drop(tx);
            cut_offs += usize::from(matches!(failure, Failure::TlsCutOff(_)));
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Reauth => {
                    self.reauth_once(&mut reauthed, &ep.url).await?;
                    plan.push(i);
                }
                Failure::NotSent(why)
                | Failure::TlsCutOff(why)
                | Failure::Busy(why)
                | Failure::Lost(why)
                | Failure::NotEtcd(why) => {
                    ep.mark_down();
                    attempts.push((ep.url.clone(), why));
                }
            }
        }
        Err(cut_off_everywhere(&mut attempts, cut_offs).unwrap_or(Error::Unreachable { attempts }))
    }
}

/// [`Error::Tls`] when every attempt was cut off during the TLS handshake
/// (`cut_offs` of the `attempts`): the server most likely does not speak
/// TLS. One endpoint doing so among others is just down.
fn cut_off_everywhere(attempts: &mut Vec<(String, String)>, cut_offs: usize) -> Option<Error> {
    if cut_offs == 0 || cut_offs != attempts.len() {
        return None;
    }
    let (endpoint, detail) = attempts.pop()?;
    Some(Error::Tls { endpoint, detail })
}

/// An open bidirectional stream, with an audit record per message.
pub(crate) struct BiStream<Req, Resp> {
    client: Client,
    endpoint: String,
    path: &'static str,
    tx: mpsc::Sender<Req>,
    rx: tonic::Streaming<Resp>,
}

impl<Req: Describe, Resp: Describe> BiStream<Req, Resp> {
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Queues a message; fails only when the stream is gone.
    pub(crate) async fn send(&self, msg: Req) -> Result<()> {
        self.client.audit(|| WireRecord {
            request: msg.describe(),
            ..self.record(WireKind::StreamSend)
        });
        self.tx.send(msg).await.map_err(|_| Error::Ambiguous {
            endpoint: self.endpoint.clone(),
            path: self.path,
            detail: "the stream closed".into(),
        })
    }

    /// Next message; `Ok(None)` when the server ended the stream.
    ///
    /// # Cancel safety
    /// Cancel safe (tonic's `Streaming::message` is).
    pub(crate) async fn recv(&mut self) -> Result<Option<Resp>> {
        match self.rx.message().await {
            Ok(Some(m)) => {
                self.client.audit(|| WireRecord {
                    response: m.describe(),
                    ..self.record(WireKind::StreamRecv)
                });
                Ok(Some(m))
            }
            Ok(None) => {
                self.close_record("end of stream".into());
                Ok(None)
            }
            Err(status) => {
                self.close_record(status_text(&status));
                Err(match classify(&self.endpoint, self.path, &status) {
                    Failure::Fatal(e) => e,
                    Failure::NotEtcd(detail) => Error::NotEtcd {
                        endpoint: self.endpoint.clone(),
                        detail,
                    },
                    Failure::NotSent(why)
                    | Failure::TlsCutOff(why)
                    | Failure::Lost(why)
                    | Failure::Busy(why) => Error::Ambiguous {
                        endpoint: self.endpoint.clone(),
                        path: self.path,
                        detail: why,
                    },
                    Failure::Reauth => Error::AuthFailed {
                        endpoint: self.endpoint.clone(),
                        message: status.message().to_owned(),
                    },
                })
            }
        }
    }

    fn record(&self, kind: WireKind) -> WireRecord {
        WireRecord::new(&self.endpoint, self.path, kind)
    }

    fn close_record(&self, status: String) {
        self.client.audit(|| WireRecord {
            status,
            ..self.record(WireKind::StreamClose)
        });
    }
}

/// A status as audit records show it: code and message.
fn status_text(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Walks an error's sources looking for a failure to connect.
fn connect_failure(status: &Status) -> Option<String> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut connect = false;
    let mut last = None;
    while let Some(e) = src {
        let text = e.to_string();
        if text.contains("tcp connect error")
            || text.contains("error trying to connect")
            || format!("{e:?}").starts_with("ConnectError(")
        {
            connect = true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            ) {
                connect = true;
            }
        }
        last = Some(text);
        src = e.source();
    }
    if status.message().contains("timed out") && status.code() == Code::Cancelled {
        connect = true;
    }
    connect.then(|| last.unwrap_or_else(|| status.message().to_owned()))
}

fn error_chain(status: &Status) -> String {
    let mut s = status.message().to_owned();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = src {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = e.source();
    }
    s
}

/// A TLS handshake failure somewhere in the error's sources.
fn tls_failure(status: &Status) -> Option<String> {
    let chain = error_chain(status);
    let lower = chain.to_ascii_lowercase();
    let tls = [
        "certificate",
        "invalidcontenttype",
        "corrupt message",
        "handshake",
        "alert",
    ];
    tls.iter().any(|t| lower.contains(t)).then_some(chain)
}

/// The connection was closed or reset before it was established (so, on
/// an `https` endpoint, during the TLS handshake).
fn cut_off_while_connecting(status: &Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut cut = false;
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            cut |= matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        src = e.source();
    }
    cut && connect_failure(status).is_some()
}

fn classify(endpoint: &str, path: &'static str, status: &Status) -> Failure {
    let msg = status.message();
    if endpoint.starts_with("https://") {
        if cut_off_while_connecting(status) {
            return Failure::TlsCutOff(format!(
                "the TLS handshake was cut off ({}); a member going down, or a server that does not speak TLS",
                error_chain(status)
            ));
        }
        if let Some(detail) = tls_failure(status) {
            return Failure::Fatal(Error::Tls {
                endpoint: endpoint.to_owned(),
                detail,
            });
        }
    }
    if let Some(why) = connect_failure(status) {
        return Failure::NotSent(why);
    }
    let etcd_error =
        msg.starts_with("etcdserver:") || msg.starts_with("mvcc:") || msg.starts_with("auth:");
    match status.code() {
        Code::Unauthenticated
            if msg.contains("invalid auth token")
                || msg.contains("revision of auth store is old") =>
        {
            Failure::Reauth
        }
        Code::FailedPrecondition if msg.contains("revision of auth store is old") => {
            Failure::Reauth
        }
        Code::Unauthenticated | Code::InvalidArgument if msg.contains("authentication failed") => {
            Failure::Fatal(Error::AuthFailed {
                endpoint: endpoint.to_owned(),
                message: msg.to_owned(),
            })
        }
        Code::ResourceExhausted | Code::InvalidArgument | Code::OutOfRange => {
            Failure::Fatal(Error::Etcd {
                endpoint: endpoint.to_owned(),
                path,
                code: format!("{:?}", status.code()),
                message: msg.to_owned(),
            })
        }
        Code::PermissionDenied => Failure::Fatal(Error::PermissionDenied {
            endpoint: endpoint.to_owned(),
            path,
            message: msg.to_owned(),
        }),
        Code::Unimplemented => {
            Failure::NotEtcd(format!("the server does not implement {path}: {msg}"))
        }
        Code::Unavailable
            if msg.contains("no leader")
                || msg.contains("not capable")
                || msg.contains("too many requests") =>
        {
            Failure::Busy(msg.to_owned())
        }
        Code::Unavailable | Code::DeadlineExceeded if etcd_error => {
            // "leader changed", "request timed out": may have been applied.
            Failure::Lost(msg.to_owned())
        }
        _ if etcd_error => Failure::Fatal(Error::Etcd {
            endpoint: endpoint.to_owned(),
            path,
            code: format!("{:?}", status.code()),
            message: msg.to_owned(),
        }),
        _ => {
            let chain = error_chain(status);
            let lower = chain.to_ascii_lowercase();
            if lower.contains("http2 error")
                || lower.contains("frame")
                || lower.contains("invalid content-type")
                || lower.contains("protocol error")
                || lower.contains("http status")
                || lower.contains("malformed")
                || lower.contains("bytes remaining on stream")
            {
                Failure::NotEtcd(chain)
            } else {
                Failure::Lost(chain)
            }
        }
    }
}

impl Client {
    /// After etcd refused the token: authenticate again, once per call.
    async fn reauth_once(&self, reauthed: &mut bool, endpoint: &str) -> Result<()> {
        if *reauthed || self.inner.user.is_none() {
            return Err(Error::AuthFailed {
                endpoint: endpoint.to_owned(),
                message: "etcd refused the auth token (and re-authenticating did not help)".into(),
            });
        }
        *reauthed = true;
        self.reauthenticate().await
    }

    /// Boxed, because authenticating is itself a unary call.
    fn reauthenticate(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(self.authenticate())
    }

    async fn authenticate(&self) -> Result<()> {
        let Some((name, password)) = self.inner.user.clone() else {
            return Ok(());
        };
        let _single = self.inner.auth_lock.lock().await;
        // Another task may have refreshed the token meanwhile; a fresh
        // token is harmless, so authenticate anyway (it is rare).
        *crate::rt::write(&self.inner.token) = None;
        let resp = self
            .unary(
                paths::AUTHENTICATE,
                Retry::Safe,
                pb::AuthenticateRequest { name, password },
                |ch, r| async move { AuthClient::new(ch).authenticate(r).await },
            )
            .await?;
        let token =
            AsciiMetadataValue::try_from(resp.token.as_str()).map_err(|_| Error::Protocol {
                path: paths::AUTHENTICATE,
                detail: "the token is not printable ASCII".into(),
            })?;
        *crate::rt::write(&self.inner.token) = Some(token);
        Ok(())
    }

    /// The status of the member that answers first.
    ///
    /// Wire calls: one `Maintenance/Status`.
    ///
    /// # Errors
    /// Network errors as for [`ClientBuilder::connect`].
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn status(&self) -> Result<MemberStatus> {
        let resp = self
            .unary(
                paths::STATUS,
                Retry::Safe,
                pb::StatusRequest {},
                |ch, r| async move { MaintenanceClient::new(ch).status(r).await },
            )
            .await?;
        let header = header(paths::STATUS, resp.header)?;
        Ok(MemberStatus {
            endpoint: self.preferred_endpoint(),
            version: resp.version,
            member_id: header.member_id,
            leader: resp.leader,
            revision: Revision(header.revision),
        })
    }

    pub(crate) fn preferred_endpoint(&self) -> String {
        let i = self.inner.preferred.load(Ordering::Relaxed) % self.inner.endpoints.len();
        self.inner.endpoints[i].url.clone()
    }

    /// Reads one key. Wire calls: one `KV/Range`.
    ///
    /// # Errors
    /// Network and server errors.
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>> {
        let resp = self
            .range(pb::RangeRequest {
                key: key.as_ref().to_vec(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next().map(KeyValue::from))
    }

    /// Reads every key under a prefix, in key order, with the revision read
    /// at. Wire calls: one `KV/Range`.
    ///
    /// # Errors
    /// Network and server errors.
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn get_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.as_ref();
        // etcd's way to say "every key": from "\0" to "\0".
        let key = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.to_vec()
        };
        let resp = self
            .range(pb::RangeRequest {
                key,
                range_end: prefix_end(prefix),
                ..Default::default()
            })
            .await?;
        let rev = header(paths::RANGE, resp.header)?.revision;
        Ok((
            resp.kvs.into_iter().map(KeyValue::from).collect(),
            Revision(rev),
        ))
    }

    /// Writes one key (no lease). Wire calls: one `KV/Put`; it is not
    /// retried once it may have been sent.
    ///
    /// # Errors
    /// Network and server errors; [`Error::Ambiguous`] when the answer was lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied even if the future is dropped.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Revision> {
        let req = pb::PutRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            ..Default::default()
        };
        let resp = self
            .unary(paths::PUT, Retry::IfNotSent, req, |ch, r| async move {
                KvClient::new(ch).put(r).await
            })
            .await?;
        Ok(Revision(header(paths::PUT, resp.header)?.revision))
    }

    /// Deletes one key; returns how many keys were deleted (0 or 1).
    /// Wire calls: one `KV/DeleteRange`; it is not resent once it may have
    /// reached etcd (a late copy could delete a key written since).
    ///
    /// # Errors
    /// Network and server errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: the delete may be applied even if the future is dropped.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<i64> {
        let req = pb::DeleteRangeRequest {
            key: key.as_ref().to_vec(),
            ..Default::default()
        };
        let resp = self
            .unary(
                paths::DELETE_RANGE,
                Retry::IfNotSent,
                req,
                |ch, r| async move { KvClient::new(ch).delete_range(r).await },
            )
            .await?;
        header(paths::DELETE_RANGE, resp.header)?;
        Ok(resp.deleted)
    }

    /// Grants a lease of at least `ttl` (rounded up to whole seconds); returns
    /// its id and the TTL the server granted. Wire calls: one `Lease/LeaseGrant`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero TTL; network and server errors.
    ///
    /// # Cancel safety
    /// Cancel safe in effect: a lease granted for a dropped future has no
    /// keys and expires after its TTL.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<(LeaseId, Duration)> {
        let secs = ttl_secs(ttl)?;
        let resp = self.lease_grant_raw(secs).await?;
        Ok((
            LeaseId(resp.id),
            Duration::from_secs(resp.ttl.max(0) as u64),
        ))
    }

    pub(crate) async fn lease_grant_raw(&self, secs: i64) -> Result<pb::LeaseGrantResponse> {
        let resp = self
            .unary(
                paths::LEASE_GRANT,
                Retry::Safe,
                pb::LeaseGrantRequest { ttl: secs, id: 0 },
                |ch, r| async move { LeaseClient::new(ch).lease_grant(r).await },
            )
            .await?;
        if !resp.error.is_empty() || resp.id == 0 || resp.ttl <= 0 {
            return Err(Error::Protocol {
                path: paths::LEASE_GRANT,
                detail: format!(
                    "grant answered id={} ttl={} error={:?}",
                    resp.id, resp.ttl, resp.error
                ),
            });
        }
        Ok(resp)
    }

    /// Revokes a lease, deleting every key attached to it in the same commit.
    /// Returns `false` when the lease did not exist (it had expired).
    /// Wire calls: one `Lease/LeaseRevoke`.
    ///
    /// # Errors
    /// Network and server errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: the revoke may be applied even if the future is dropped.
    pub async fn lease_revoke(&self, lease: LeaseId) -> Result<bool> {
        let r = self
            .unary(
                paths::LEASE_REVOKE,
                Retry::Safe,
                pb::LeaseRevokeRequest { id: lease.0 },
                |ch, r| async move { LeaseClient::new(ch).lease_revoke(r).await },
            )
            .await;
        match r {
            Ok(resp) => header(paths::LEASE_REVOKE, resp.header).map(|_| true),
            Err(Error::Etcd { message, .. }) if message.contains("lease not found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Time left on a lease, `None` when it does not exist.
    /// Wire calls: one `Lease/LeaseTimeToLive`.
    ///
    /// # Errors
    /// Network and server errors.
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let resp = self
            .unary(
                paths::LEASE_TTL,
                Retry::Safe,
                pb::LeaseTimeToLiveRequest {
                    id: lease.0,
                    keys: false,
                },
                |ch, r| async move { LeaseClient::new(ch).lease_time_to_live(r).await },
            )
            .await?;
        header(paths::LEASE_TTL, resp.header)?;
        Ok((resp.ttl >= 0).then(|| Duration::from_secs(resp.ttl as u64)))
    }

    pub(crate) async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse> {
        let resp = self
            .unary(paths::RANGE, Retry::Safe, req, |ch, r| async move {
                KvClient::new(ch).range(r).await
            })
            .await?;
        header(paths::RANGE, resp.header)?;
        Ok(resp)
    }

    pub(crate) async fn txn(&self, retry: Retry, req: pb::TxnRequest) -> Result<pb::TxnResponse> {
        let resp = self
            .unary(paths::TXN, retry, req, |ch, r| async move {
                KvClient::new(ch).txn(r).await
            })
            .await?;
        header(paths::TXN, resp.header)?;
        Ok(resp)
    }

    /// Runs a raw transaction, sent exactly as given; it is not retried once
    /// it may have been sent. For auditors and for writes conditional on a
    /// lock (see [`LockGuard::is_owner`](crate::LockGuard::is_owner)).
    /// Wire calls: one `KV/Txn`.
    ///
    /// # Errors
    /// Network and server errors; [`Error::Ambiguous`] when the answer was lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the transaction may be applied even if the future is dropped.
    pub async fn txn_raw(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse> {
        self.txn(Retry::IfNotSent, req).await
    }
}

/// The answer header, which etcd always sends.
pub(crate) fn header(
    path: &'static str,
    h: Option<pb::ResponseHeader>,
) -> Result<pb::ResponseHeader> {
    h.ok_or_else(|| Error::Protocol {
        path,
        detail: "the answer has no header".into(),
    })
}

/// The end of the range of every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The largest lease TTL etcd grants, in seconds.
pub(crate) const MAX_TTL_SECS: i64 = 9_000_000_000;

/// A TTL in whole seconds, rounded up; at least 1 s and within etcd's limit.
pub(crate) fn ttl_secs(ttl: Duration) -> Result<i64> {
    if ttl.is_zero() {
        return Err(Error::invalid("the TTL must be at least one second"));
    }
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    if secs > MAX_TTL_SECS as u64 {
        return Err(Error::invalid(format!(
            "the TTL must be at most {MAX_TTL_SECS} s (etcd's limit)"
        )));
    }
    Ok(secs as i64)
}

impl Client {
    /// Marks an endpoint as failing so the next calls prefer others.
    pub(crate) fn mark_down(&self, url: &str) {
        if self.inner.endpoints.len() > 1 {
            if let Some(ep) = self.inner.endpoints.iter().find(|e| e.url == url) {
                ep.mark_down();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized_or_rejected() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalize_endpoint("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(
            normalize_endpoint("[::1]:2379").unwrap(),
            "http://[::1]:2379"
        );
        for bad in ["", "h", "h:0", "h:99999", "ftp://h:1", "http://h:1/x", ":1"] {
            assert!(
                matches!(normalize_endpoint(bad), Err(Error::InvalidEndpoint { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    /// What `classify` makes of a status with no source error, by name.
    fn classified(endpoint: &str, code: Code, msg: &str) -> &'static str {
        match classify(endpoint, paths::TXN, &Status::new(code, msg)) {
            Failure::NotSent(_) => "NotSent",
            Failure::TlsCutOff(_) => "TlsCutOff",
            Failure::Lost(_) => "Lost",
            Failure::Busy(_) => "Busy",
            Failure::Reauth => "Reauth",
            Failure::NotEtcd(_) => "NotEtcd",
            Failure::Fatal(Error::Tls { .. }) => "Tls",
            Failure::Fatal(Error::AuthFailed { .. }) => "AuthFailed",
            Failure::Fatal(Error::Etcd { .. }) => "Etcd",
            Failure::Fatal(Error::PermissionDenied { .. }) => "PermissionDenied",
            Failure::Fatal(_) => "another error",
        }
    }

    #[test]
    fn statuses_are_classified_by_code_and_etcd_text() {
        use Code::*;
        let http = "http://h:1";
        let cases = [
            (Unauthenticated, "etcdserver: invalid auth token", "Reauth"),
            (
                Unauthenticated,
                "auth: revision of auth store is old",
                "Reauth",
            ),
            (
                FailedPrecondition,
                "auth: revision of auth store is old",
                "Reauth",
            ),
            (
                Unauthenticated,
                "etcdserver: authentication failed, invalid user ID or password",
                "AuthFailed",
            ),
            (
                InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
                "AuthFailed",
            ),
            (
                Unauthenticated,
                "etcdserver: invalid auth token; authentication failed",
                "Reauth",
            ),
            (
                InvalidArgument,
                "etcdserver: too many operations in txn request",
                "Etcd",
            ),
            (
                ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
                "Etcd",
            ),
            (
                OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
                "Etcd",
            ),
            (InvalidArgument, "bad request", "Etcd"),
            (
                PermissionDenied,
                "etcdserver: permission denied",
                "PermissionDenied",
            ),
            (Unimplemented, "unknown service etcdserverpb.KV", "NotEtcd"),
            (Unavailable, "etcdserver: no leader", "Busy"),
            (Unavailable, "etcdserver: not capable", "Busy"),
            (Unavailable, "etcdserver: too many requests", "Busy"),
            (Unavailable, "no leader", "Busy"),
            (Unavailable, "etcdserver: leader changed", "Lost"),
            (DeadlineExceeded, "etcdserver: request timed out", "Lost"),
            (Unavailable, "mvcc: something", "Lost"),
            (NotFound, "etcdserver: requested lease not found", "Etcd"),
            (FailedPrecondition, "auth: user name not found", "Etcd"),
            (Unauthenticated, "a proxy refused it", "Lost"),
            (Unknown, "h2 protocol error: http2 error", "NotEtcd"),
            (
                Internal,
                "protocol error: invalid compression flag",
                "NotEtcd",
            ),
            (Unknown, "invalid content-type: text/html", "NotEtcd"),
            (Unknown, "unexpected HTTP status code: 404", "NotEtcd"),
            (Unknown, "transport error", "Lost"),
            (Unavailable, "connection reset", "Lost"),
            (Cancelled, "operation timed out", "NotSent"),
            (Unknown, "invalid peer certificate: UnknownIssuer", "Lost"),
        ];
        for (code, msg, want) in cases {
            assert_eq!(classified(http, code, msg), want, "{code:?} {msg:?}");
        }
        let https = "https://h:1";
        assert_eq!(
            classified(https, Unknown, "invalid peer certificate: UnknownIssuer"),
            "Tls"
        );
        assert_eq!(
            classified(https, Unknown, "received fatal alert: BadCertificate"),
            "Tls"
        );
        assert_eq!(
            classified(https, Unavailable, "etcdserver: no leader"),
            "Busy"
        );
    }

    #[test]
    fn ttl_rounds_up_and_rejects_zero() {
        assert_eq!(ttl_secs(Duration::from_millis(1500)).unwrap(), 2);
        assert_eq!(ttl_secs(Duration::from_secs(5)).unwrap(), 5);
        assert!(ttl_secs(Duration::ZERO).is_err());
    }
}
