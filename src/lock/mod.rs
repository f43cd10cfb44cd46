//! The mutex on the queue engine: requests ([`LockRequest`],
//! [`TryLockRequest`]) and the guard ([`LockGuard`]). Its rule: I hold
//! when no key under `{name}/` was created before mine.

mod guard;
mod request;
mod run;

pub use guard::LockGuard;
pub use request::{LockRequest, TryLock, TryLockRequest};
pub use run::RunStopped;
