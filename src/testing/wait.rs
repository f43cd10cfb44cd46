//! Small helpers to wait on a condition, with a deadline, in tests.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::time::Duration;

use tokio::time::Instant;

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
