//! The connection to etcd: endpoints, timeouts, failover, auth token and the
//! audit hook. Every RPC locker makes goes through [`Client::unary`] or
//! [`Client::open_stream`], the one place that times it, fails it over and
//! records it.
//!
//! A tour of the files:
//!
//! - `mod.rs`: [`Client`] and what it shares between clones, [`Retry`], the
//!   audit hook.
//! - `builder.rs`: [`ClientBuilder`], TLS settings, the first contact.
//! - `endpoints.rs`: endpoint URLs, which endpoint to try first, and the
//!   2 s during which an endpoint that failed is tried last.
//! - `call.rs`: [`Client::unary`], the funnel every unary RPC passes through.
//! - `stream.rs`: [`Client::open_stream`] and [`BiStream`], the same for
//!   bidirectional streams and each of their messages.
//! - `failure.rs`: what a gRPC status means for the call (`classify`).
//! - `hubs.rs`: who owns the shared streams' tasks.
//! - `watches.rs`: the one watch stream that carries every watch.
//! - `mirror.rs`: a live copy of a prefix's keys, shared by the client's
//!   waiters on it (a semaphore's waiters).
//! - `keepalives.rs`: the one keepalive stream and task of a client, for
//!   all its leases.
//! - `auth.rs`: the auth token, and authenticating again when etcd refuses it.
//! - `ops.rs`: the typed calls (status, get, put, delete, leases, txn).
//! - `paths.rs`: the gRPC path of every RPC.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;

use crate::audit::{Sink, WireRecord};

mod auth;
mod builder;
mod call;
mod endpoints;
mod failover;
mod failure;
mod hubs;
mod keepalives;
mod mirror;
mod ops;
pub mod paths;
mod stream;
mod watches;

pub use builder::ClientBuilder;
use endpoints::Ep;
pub(crate) use keepalives::{Registration, Renewal, plus_ttl};
pub(crate) use mirror::Mirror;
pub use ops::MemberStatus;
pub(crate) use ops::{MAX_TTL_SECS, header, prefix_end, ttl_secs};
pub(crate) use stream::BiStream;

/// Whether a call may be sent again after it may already have reached etcd.
///
/// The failover rule: a call that could not be sent (connection refused or
/// not established in time) goes to the next endpoint, whatever it is. A
/// call that was sent but whose answer was lost goes to the next endpoint
/// only when it is [`Retry::Safe`]: a read, or a write whose repetition is
/// harmless (locker's create-if-absent acquire, a guarded delete, a revoke,
/// a lease grant whose duplicate is an unused lease that expires by itself).
/// Any other write reports [`Error::Ambiguous`](crate::Error::Ambiguous).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Retry {
    Safe,
    IfNotSent,
}

struct Inner {
    endpoints: Vec<Ep>,
    preferred: AtomicUsize,
    request_timeout: Duration,
    audit: Option<Sink>,
    user: Option<(String, String)>,
    token: RwLock<Option<AsciiMetadataValue>>,
    auth_lock: tokio::sync::Mutex<()>,
    /// One permit per unary call in flight (see
    /// [`ClientBuilder::max_in_flight`]).
    in_flight: tokio::sync::Semaphore,
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
    /// The shared watch and keepalive streams' tasks (see `hubs.rs`).
    hubs: Arc<hubs::Hubs>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .finish()
    }
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
}
