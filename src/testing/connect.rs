//! Connecting a test's client to the etcd under test, bounded in time.

use std::time::Duration;

use super::proxy::Proxy;
use super::wait::within;
use crate::client::Client;

/// How long a connect may take.
const LIMIT: Duration = Duration::from_secs(10);

/// A client with its own connection to `endpoints`.
///
/// # Panics
/// When it cannot connect within 10 s.
pub async fn connect(endpoints: Vec<String>) -> Client {
    within(
        "connect",
        LIMIT,
        Client::builder().endpoints(endpoints).connect(),
    )
    .await
    .unwrap_or_else(|e| panic!("connect to etcd: {e}"))
}

/// A client that reaches etcd through `proxy`, with 1 s connect and request
/// timeouts, so that a blackholed call gives up quickly.
///
/// # Panics
/// When it cannot connect within 10 s.
pub async fn connect_through(proxy: &Proxy) -> Client {
    let builder = Client::builder()
        .endpoints([proxy.url()])
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1));
    within("connect through the proxy", LIMIT, builder.connect())
        .await
        .unwrap_or_else(|e| panic!("connect to etcd through the proxy: {e}"))
}

/// A client for fault tests: its own connection to `endpoints`, a 1 s
/// connect timeout, the given request timeout, and no HTTP/2 keepalive
/// pings (so that a connection a proxy holds up stays open, as a slow
/// network would keep it).
///
/// # Panics
/// When it cannot connect within 10 s.
pub async fn connect_for_faults(endpoints: Vec<String>, request_timeout: Duration) -> Client {
    let builder = Client::builder()
        .endpoints(endpoints)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(request_timeout)
        .http2_keepalive(None);
    within("connect", LIMIT, builder.connect())
        .await
        .unwrap_or_else(|e| panic!("connect to etcd: {e}"))
}
