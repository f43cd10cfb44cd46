//! Distributed locks on etcd v3, over raw gRPC, with every wire call visible.
//!
//! locker speaks etcd's gRPC protocol through its own minimal schema
//! ([`wire`]), with no etcd client crate in between. Layers, each a folder
//! or file under `src/`, import only downward:
//!
//! - Leaves: [`wire`] (the schema), `types` ([`LeaseId`], [`Revision`],
//!   [`Holder`]), `error` ([`Error`]), [`audit`] ([`WireRecord`]: one record
//!   per wire call or stream message), `rt` (two small runtime helpers).
//! - `client/`: [`Client`], the connection: endpoints and failover, timeouts,
//!   auth token, the audit hook. Every RPC passes through one funnel.
//! - `session/`: [`Session`], a lease: its keepalives, its deadline and
//!   lost signal, the revoke on close, and the names it has queued for.
//! - `queue/`: the recipe engine under every primitive, in three steps:
//!   one `Txn` to queue, a wait on the fewest keys that matter with a check
//!   of my own key after it, a release that never deletes another's key.
//!   Whose turn it is, is a parameter (the rule).
//! - `lock/`: the mutex on the engine: [`LockRequest`], [`TryLock`],
//!   [`LockGuard`] with its fencing token; several names at once, all or
//!   none and free of deadlock, with one token: [`LockAllRequest`],
//!   [`MultiLockGuard`].
//! - `rwlock/`, `semaphore/`: shared and counted holders on the engine:
//!   [`Client::read_lock`], [`Client::write_lock`], [`Semaphore`].
//! - `election/`: leader election on the engine: [`CampaignRequest`],
//!   [`Leadership`] (proclaim, resign, fencing token, lost signal).
//! - `observe/`: [`Client::holder`], [`Client::leader`], and the streams
//!   [`LockWatch`] and [`LeaderWatch`].
//! - `testing` (feature `testing`): real etcd processes and a fault proxy.
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
mod election;
mod error;
mod lock;
mod observe;
mod queue;
mod rt;
mod rwlock;
mod semaphore;
mod session;
#[cfg(feature = "testing")]
pub mod testing;
mod types;
pub mod wire;

pub use audit::{AuditSink, WireKind, WireRecord};
pub use client::{Client, ClientBuilder, MemberStatus, paths};
pub use election::{CampaignRequest, Leadership};
pub use error::{Error, Result};
pub use lock::{
    LockAllRequest, LockGuard, LockRequest, MultiLockGuard, RunStopped, TryLock, TryLockAll,
    TryLockAllRequest, TryLockRequest,
};
pub use observe::{ElectionEvent, EventStream, LeaderWatch, LockEvent, LockSet, LockWatch};
pub use queue::{
    DEFAULT_TTL, MAX_NAME_LEN, MAX_PERMITS, MAX_SET_NAMES, MAX_VALUE_LEN, RESERVED_LAST_SEGMENTS,
    default_value, validate_name,
};
pub use semaphore::Semaphore;
pub use session::{LostReason, Session};
pub use types::{Contender, HoldMode, Holder, Holders, KeyValue, LeaseId, Revision};
