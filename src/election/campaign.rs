//! Campaigning: wait to be elected.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use super::leadership::Leadership;
use crate::client::Client;
use crate::error::Result;
use crate::lock::LockRequest;
use crate::queue::{Entry, Rule};
use crate::session::Session;

/// A request to become leader of an election: set options, then `.await`
/// it. The proposal is stored in the candidate key and visible to
/// observers (`etcdctl elect -l` prints it).
///
/// Wire calls: those of [`LockRequest`](crate::LockRequest) on the same
/// name (the election is the mutex's queue); then, only when the candidate
/// key was found already there with another value (a restart on the same
/// lease), one `KV/Txn` proclaiming the new proposal.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad
/// name, proposal or TTL; [`Error::AcquireTimeout`](crate::Error::AcquireTimeout)
/// when [`timeout`](Self::timeout) passes; [`Error::LockLost`](crate::Error::LockLost)
/// or [`Error::LeaseExpired`](crate::Error::LeaseExpired) when the lease was
/// lost while waiting (never a zombie leadership);
/// [`Error::AlreadyLocked`](crate::Error::AlreadyLocked) when the session
/// already campaigns or locks on this name; network errors.
///
/// # Cancel safety
/// Dropping the future leaves no candidate key behind: a lease of its own
/// is revoked, a key on a session deleted, in the background.
#[must_use = "a campaign does nothing until awaited"]
pub struct CampaignRequest {
    lock: LockRequest,
    proposal: Vec<u8>,
}

impl CampaignRequest {
    fn new(entry: Entry, proposal: Vec<u8>) -> CampaignRequest {
        CampaignRequest {
            lock: LockRequest::new(entry).value(proposal.clone()),
            proposal,
        }
    }

    /// The TTL of the campaign's own lease (default 10 s). Ignored on a
    /// session, which uses the session's lease.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.lock = self.lock.ttl(ttl);
        self
    }

    /// Give up after this long; the candidate key is removed before the
    /// error is returned.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.lock = self.lock.timeout(timeout);
        self
    }
}

impl IntoFuture for CampaignRequest {
    type Output = Result<Leadership>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Leadership>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut leadership = Leadership {
                guard: self.lock.await?,
            };
            if leadership.value() != self.proposal.as_slice() {
                // Resumed on an old key with another value: say the new one.
                leadership.proclaim(self.proposal).await?;
            }
            Ok(leadership)
        })
    }
}

impl Client {
    /// Campaigns to lead the election `name` with `proposal`, on a lease of
    /// its own kept alive while leading. Returns once elected.
    ///
    /// ```no_run
    /// # async fn f(client: locker::Client) -> locker::Result<()> {
    /// use std::time::Duration;
    /// let leader = client
    ///     .campaign("service/primary", "host-a:8080")
    ///     .ttl(Duration::from_secs(5))
    ///     .await?;
    /// println!("leading with token {}", leader.fencing_token());
    /// tokio::select! {
    ///     _ = leader.lost() => eprintln!("leadership lost; stop serving"),
    ///     _ = async { /* serve as leader */ } => {}
    /// }
    /// leader.resign().await?;
    /// # Ok(()) }
    /// ```
    pub fn campaign(
        &self,
        name: impl Into<String>,
        proposal: impl Into<Vec<u8>>,
    ) -> CampaignRequest {
        let entry = Entry::own(self, name.into(), Rule::EXCLUSIVE);
        CampaignRequest::new(entry, proposal.into())
    }
}

impl Session {
    /// Campaigns to lead the election `name` on this session's lease. On a
    /// session resumed from a lease whose candidate key still exists
    /// ([`Client::resume_session`]), it returns at once if that key leads,
    /// keeping its place otherwise (etcd's `ResumeElection`).
    pub fn campaign(
        &self,
        name: impl Into<String>,
        proposal: impl Into<Vec<u8>>,
    ) -> CampaignRequest {
        let entry = Entry::on_session(self.inner.clone(), name.into(), Rule::EXCLUSIVE);
        CampaignRequest::new(entry, proposal.into())
    }
}
