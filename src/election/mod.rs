//! Leader election on the queue engine, with etcd's layout: a candidate's
//! key is `{name}/{lease hex}` holding its proposal, and the leader is the
//! live key with the lowest create revision (the mutex rule). So locker
//! candidates, `etcdctl elect NAME` and etcd's Go `concurrency.Election` are
//! one election, and an `etcdctl lock NAME` holder keeps everyone waiting.
//!
//! What it does that etcd's own recipe does not:
//! - No zombie leader (etcd #19597): after waiting, a candidate checks its
//!   own key at the revision it was woken at; one whose lease expired while
//!   it waited is told so, never that it leads.
//! - The lease is kept alive and its loss is signalled (`lost()`), before
//!   the server could elect anyone else.
//! - Proclaim and resign are guarded by the candidate's create revision,
//!   which is also its fencing token.
//!
//! - `campaign.rs`: [`CampaignRequest`] and `campaign` on a client or a
//!   session.
//! - `leadership.rs`: [`Leadership`], the guard of a leader.
//! - Observing an election lives in `observe/`.

mod campaign;
mod leadership;

pub use campaign::CampaignRequest;
pub use leadership::Leadership;
