//! Distributed locks on etcd v3, over raw gRPC, with every wire call visible.
//!
//! locker speaks etcd's gRPC protocol through its own minimal schema
//! ([`wire`]), with no etcd client crate in between. A small state machine
//! sits on top:
//!
//! - [`Client`] (`client.rs`): endpoints, timeouts, failover, auth token,
//!   the audit hook. Every RPC passes through one function.
//! - [`Session`] (`session.rs`): a lease, its keepalive task, its deadline
//!   and lost signal, the revoke on close.
//! - [`LockGuard`] (`lock.rs`): the lock recipe — one `Txn` to queue, a
//!   wait on the immediate predecessor only, a release that revokes or
//!   deletes only its own key; the fencing token.
//! - [`LockWatch`] (`watch.rs`): the lock-state stream and the predecessor wait.
//! - [`WireRecord`] (`audit.rs`): one record per wire call or stream message.
//!
//! # Quick start
//!
//! ```no_run
//! # async fn f() -> locker::Result<()> {
//! use std::time::Duration;
//!
//! let client = locker::Client::builder()
//!     .endpoints(["http://127.0.0.1:2379"])
//!     .connect()
//!     .await?;
//!
//! // A lock with its own lease, kept alive until release.
//! let guard = client.lock("jobs/nightly").ttl(Duration::from_secs(5)).await?;
//! tokio::select! {
//!     _ = guard.lost() => eprintln!("lost the lock; stop the work"),
//!     _ = async { /* work, using guard.fencing_token() */ } => {}
//! }
//! guard.release().await?;
//!
//! // Many locks on one lease.
//! let session = client.session(Duration::from_secs(10)).await?;
//! let a = session.lock("a").await?;
//! a.release().await?;
//! session.close().await?;
//! # Ok(()) }
//! ```
//!
//! The lock key layout is that of etcd's Go `concurrency.Mutex`, so locker,
//! `etcdctl lock` and etcd's `Lock` RPC exclude each other on the same name.

#![warn(missing_docs)]

pub mod audit;
mod client;
mod error;
mod lock;
mod rt;
mod session;
#[cfg(feature = "testing")]
pub mod testing;
mod types;
mod watch;
pub mod wire;

pub use audit::{AuditSink, WireKind, WireRecord};
pub use client::{Client, ClientBuilder, MemberStatus, paths};
pub use error::{Error, Result};
pub use lock::{
    DEFAULT_TTL, LockGuard, LockRequest, MAX_NAME_LEN, MAX_VALUE_LEN, TryLock, TryLockRequest,
    default_value, validate_name,
};
pub use session::{LostReason, Session};
pub use types::{Holder, KeyValue, LeaseId, Revision};
pub use watch::{LockEvent, LockWatch};
