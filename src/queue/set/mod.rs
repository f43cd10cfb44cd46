//! A set of names held at once, all or nothing, on the same engine.
//!
//! 1. **Acquire** (`acquire.rs`): one `Txn` puts my key
//!    `{name}/{lease hex}` on every name (if none of mine exists), all on
//!    one lease, so they share one create revision R: the set's fencing
//!    token. The same `Txn` reads each name's first key.
//! 2. **Wait** (`entry.rs`): I hold when no name has a key created before
//!    R. On each name whose first key is older, the engine's wait
//!    ([`wait_turn`](super::wait::wait_turn)) on the keys older than R,
//!    with its check of my own key afterwards. Every request waits only on
//!    older revisions, and revisions are totally ordered: no waits-for
//!    cycle, so no deadlock, whatever order callers list their names in.
//! 3. **Release** (`held.rs`): one commit, a revoke of a lease of its own
//!    or one `Txn` of guarded deletes on a session.
//!
//! Names (`names.rs`) are deduplicated and sorted; the reservations on a
//! session are taken in that order.

mod acquire;
mod entry;
mod held;
mod names;

pub(crate) use entry::SetEntry;
pub(crate) use held::SetHeld;
pub use names::MAX_SET_NAMES;
