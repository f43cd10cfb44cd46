//! The mutex on the queue engine: requests ([`LockRequest`],
//! [`TryLockRequest`]) and the guard ([`LockGuard`]); several names at
//! once ([`LockAllRequest`], [`MultiLockGuard`]). Its rule: I hold
//! when no key under `{name}/` was created before mine.

mod guard;
mod multi;
mod request;
mod run;

pub use guard::LockGuard;
pub use multi::{LockAllRequest, MultiLockGuard, TryLockAll, TryLockAllRequest};
pub use request::{LockRequest, TryLock, TryLockRequest};
pub use run::RunStopped;
