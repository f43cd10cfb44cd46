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
