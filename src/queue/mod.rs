//! The recipe engine: one queue of keys per name, ordered by create
//! revision, under every primitive.
//!
//! Key layout (`key.rs`): `{name}/{lease id in lowercase hex}`, as etcd's
//! Go `concurrency.Mutex` and `Election`, `etcdctl lock`/`elect` and the
//! server-side `Lock` and `Election` RPCs use, so one name is one queue
//! across all of them. Each contender's key is its place in the queue; its
//! create revision orders the queue and is the holder's fencing token.
//! Whose turn it is is a parameter, the [`Rule`] (`rule.rs`): the mutex
//! holds when no key was created before its own, a semaphore of N when
//! fewer than N were.
//!
//! 1. **Acquire** (`acquire.rs`) — one `Txn`, built by a pure function and
//!    read by another around the one `client.txn` call: if no blocker
//!    exists, put my key (with my lease): I hold. Otherwise, in a nested
//!    transaction: if my key does not exist, put it and read the holders
//!    and the newest keys (mine and the witnesses before it); else read my
//!    key back with the holders (a resent acquire finds its own key and
//!    does not queue twice). A try puts nothing when a blocker exists.
//! 2. **Wait** (`wait.rs`, `watch.rs`) — watch only the witnesses: the
//!    `limit` newest blockers created before mine (for the mutex, my
//!    immediate predecessor), until one is deleted. When they were all the
//!    blockers before me, that deletion makes it my turn once a read at
//!    its revision shows my own key still there (the post-wait check: if
//!    my lease expired while I waited, I do not hold; etcd issues 11456,
//!    19597 and 16221 are this check missing); otherwise one read-only
//!    `Txn` reads my key and the new witnesses. Reads are serializable,
//!    repeated as linearizable before my key is declared gone. No
//!    thundering herd: a release wakes only the waiters that watch it.
//! 3. **Release** (`release.rs`, `held.rs`) — a key on a lease of its own:
//!    `LeaseRevoke` (key and lease go in one commit). A key on a shared
//!    session: a `Txn` that deletes it only if its create revision is
//!    still mine, so a resent or late release never deletes a later
//!    holder's key. A request that ends without holding (error, timeout,
//!    drop) leaves nothing queued, by the same guarded delete.
//!
//! `entry.rs` ties the steps together for a request: its lease (own or a
//! session's), its reserved name, its cleanup on drop. `set/` runs the
//! same steps for several names at once, with one key per name and one
//! create revision for them all.

mod acquire;
mod entry;
mod follow;
mod held;
mod key;
mod release;
mod rule;
mod set;
mod wait;
mod watch;

pub use entry::DEFAULT_TTL;
pub use key::{
    MAX_NAME_LEN, MAX_PERMITS, MAX_VALUE_LEN, RESERVED_LAST_SEGMENTS, default_value, validate_name,
};

pub(crate) use entry::Entry;
pub(crate) use held::Held;
pub(crate) use key::{limit_key, prefix, validate_value};
pub(crate) use rule::{PERMITS, READERS, Rule};
pub use set::MAX_SET_NAMES;
pub(crate) use set::{SetEntry, SetHeld};
pub(crate) use watch::create_request as watch_request;
