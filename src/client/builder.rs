//! [`ClientBuilder`]: endpoints, timeouts, keepalive, credentials, TLS and
//! the audit sink; `connect` and `build`.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::transport::Endpoint;

use super::endpoints::{Ep, normalize_endpoint};
use super::{Client, Inner};
use crate::audit::{AuditSink, Sink};
use crate::error::{Error, Result};

/// Builds a [`Client`].
#[must_use = "a builder does nothing until connect() is called"]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    http2_keepalive: Option<(Duration, Duration)>,
    max_in_flight: usize,
    user: Option<(String, String)>,
    audit: Option<Sink>,
    #[cfg(feature = "tls")]
    tls: TlsOptions,
}

/// The default of [`ClientBuilder::max_in_flight`].
const DEFAULT_MAX_IN_FLIGHT: usize = 128;

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
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
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
            .field("max_in_flight", &self.max_in_flight)
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

    /// How many unary calls this client (with its clones) has in flight at
    /// most (default 128); more wait, in order, until one ends. Thousands
    /// of waiters on one client then never flood etcd, which refuses
    /// writes with `too many requests` once 5,000 entries wait to be
    /// applied. A call's wait here does not count against its
    /// [`request_timeout`](Self::request_timeout); each attempt of a call
    /// takes a place of its own. Streams (watches,
    /// keepalives) are not counted. `connect` refuses 0.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
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

    /// Receive a [`WireRecord`](crate::WireRecord) for every wire call and stream message.
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Some(Arc::new(sink));
        self
    }

    /// Checks the endpoints, connects, and makes one call that proves an
    /// etcd answers there, a call the client's user may make whatever its
    /// role: it authenticates when a user is set, else it asks for the
    /// member's status.
    ///
    /// Wire calls: `Auth/Authenticate` when a user is set, else
    /// `Maintenance/Status`, to the first endpoint that answers. On a
    /// cluster with auth enabled, etcd 3.5.28 and later refuse that `Status`
    /// to a caller without the root role (a client certificate's user, or
    /// nobody): the refusal is etcd's answer too, and `connect` succeeds.
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] for an endpoint that cannot be parsed,
    /// [`Error::InvalidArgument`] for an empty list or a zero timeout,
    /// [`Error::Unreachable`] when no endpoint answers, [`Error::NotEtcd`]
    /// when the peer is not etcd, [`Error::Tls`] when the TLS handshake
    /// fails, [`Error::AuthFailed`] for bad credentials.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is left behind but the connections, which close
    /// when the future is dropped.
    pub async fn connect(self) -> Result<Client> {
        let client = self.build()?;
        match client.first_contact().await {
            Ok(()) => Ok(client),
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
        let urls = self.checked_urls()?;
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
            eps.push(Ep::new(url, ep.connect_lazy()));
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
                in_flight: tokio::sync::Semaphore::new(self.max_in_flight),
            }),
            hubs: Arc::default(),
        })
    }

    /// Checks the settings; returns each endpoint as given with its
    /// normalized URL.
    fn checked_urls(&self) -> Result<Vec<(&String, String)>> {
        if self.endpoints.is_empty() {
            return Err(Error::invalid("at least one etcd endpoint is needed"));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::invalid("timeouts must be greater than zero"));
        }
        if self.max_in_flight == 0 || self.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(Error::invalid(format!(
                "max_in_flight must be between 1 and {}",
                tokio::sync::Semaphore::MAX_PERMITS
            )));
        }
        self.endpoints
            .iter()
            .map(|raw| Ok((raw, normalize_endpoint(raw)?)))
            .collect()
    }
}

impl Client {
    /// One call that needs no permission: an answer, even a refusal, shows
    /// that an etcd listens at the endpoint that gave it.
    ///
    /// With a user, `Authenticate` is that call (any caller may make it,
    /// and every later call needs its token). Without one, `Status`: every
    /// etcd grants it when auth is off; with auth on, the caller is a
    /// client certificate's user or nobody, and etcd 3.5.28 and later
    /// refuse it unless that user has the root role. Such a refusal is an
    /// answer: the calls a lock makes are judged by their keys, not by
    /// that role.
    async fn first_contact(&self) -> Result<()> {
        if self.inner.user.is_some() {
            return self.authenticate().await;
        }
        match self.status().await {
            Ok(_) => Ok(()),
            Err(Error::PermissionDenied { endpoint, .. }) => {
                self.prefer(&endpoint);
                Ok(())
            }
            Err(Error::Etcd {
                endpoint, message, ..
            }) if message.contains("user name is empty") => {
                self.prefer(&endpoint);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
