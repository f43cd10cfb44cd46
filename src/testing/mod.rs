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
//! else `etcd` on `PATH` (Debian: `apt-get install etcd-server`); `etcdctl`
//! ([`Etcd::etcdctl`]) from `ETCDCTL_BIN` if set, else from the directory of
//! that etcd binary, else from `PATH` (Debian: `etcd-client`). A missing
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

mod certs;
mod connect;
mod etcd;
mod proxy;
mod queue;
mod wait;

use std::fmt;

pub use certs::TestCerts;
pub use connect::{connect, connect_for_faults, connect_through};
pub use etcd::{Etcd, EtcdBuilder};
pub use proxy::{Proxy, ProxyMode};
pub use queue::{put_on_lease, queue, queue_keys, wait_queue_is, wait_queued};
pub use wait::{closed_port, wait_until, within};

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
