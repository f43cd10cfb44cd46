//! One lease: its grant, its local deadline and lost signal, its revoke.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::names::Slots;
use crate::client::{Client, MAX_TTL_SECS, Registration, Renewal, plus_ttl};
use crate::error::{Error, Result};
use crate::types::LeaseId;

/// Why a lease is no longer held.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum LostReason {
    /// etcd answered that the lease no longer exists (it expired or was
    /// revoked by someone else).
    Expired,
    /// No keepalive was answered in time: the lease may have expired on the
    /// server, so it can no longer be assumed alive.
    Unreachable,
    /// The session was closed or the guard released.
    Closed,
    /// The guard's key is gone from etcd though its lease may live: another
    /// client or an operator deleted it (or revoked the lease, and the
    /// deletion's event came first). Only a guard reports it, once
    /// something waits on or asks for its lost signal.
    KeyDeleted,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum LeaseState {
    Alive { deadline: Instant },
    Lost(LostReason),
}

impl LeaseState {
    /// Lost, judged at `now`: a deadline in the past is a loss even when
    /// the keepalive hub has not run to say so (starved, frozen, gone).
    fn lost_at(&self, now: Instant) -> Option<LostReason> {
        match self {
            LeaseState::Lost(r) => Some(*r),
            LeaseState::Alive { deadline } if now >= *deadline => Some(LostReason::Unreachable),
            LeaseState::Alive { .. } => None,
        }
    }
}

/// Applies what the client's keepalive hub says of the lease to `state`:
/// never over a loss or a close said before (a close unregisters the lease,
/// but an answer may already be on its way).
fn on_renewal(state: &watch::Sender<LeaseState>, renewal: Renewal) {
    let next = match renewal {
        Renewal::Until(deadline) => LeaseState::Alive { deadline },
        Renewal::Expired => LeaseState::Lost(LostReason::Expired),
        Renewal::Unreachable => LeaseState::Lost(LostReason::Unreachable),
    };
    state.send_if_modified(|s| {
        let alive = matches!(s, LeaseState::Alive { .. });
        if alive {
            *s = next;
        }
        alive
    });
}

/// The shared state behind a [`Session`](crate::Session) and every guard
/// taken on it.
pub(crate) struct SessionInner {
    pub(crate) client: Client,
    pub(crate) lease: LeaseId,
    pub(crate) ttl: Duration,
    state: watch::Sender<LeaseState>,
    /// The lease's place on the client's keepalive stream; dropped (which
    /// stops the keepalives) on close.
    keepalive: Mutex<Option<Registration>>,
    /// What this session knows of each name it queued for.
    pub(super) slots: Mutex<Slots>,
    /// Says "the slots changed" to requests waiting for a name; made when
    /// the first request waits (most sessions, such as a lock's own lease,
    /// never have one, and a channel is a few hundred bytes).
    pub(super) slots_changed: std::sync::OnceLock<watch::Sender<()>>,
    /// Whether a revoke of the lease was answered (so a drop need not send
    /// one again).
    revoked: AtomicBool,
}

impl SessionInner {
    /// Grants a lease and has the client keep it alive.
    pub(crate) async fn grant(client: &Client, ttl: Duration) -> Result<Arc<SessionInner>> {
        let secs = crate::client::ttl_secs(ttl)?;
        let sent = Instant::now();
        let resp = client.lease_grant_raw(secs).await?;
        let granted = Duration::from_secs(resp.ttl.clamp(1, MAX_TTL_SECS) as u64);
        Ok(SessionInner::start(
            client,
            LeaseId(resp.id),
            granted,
            plus_ttl(sent, resp.ttl),
            false,
        ))
    }

    /// The session of a live lease, registered with the client's keepalive
    /// hub (the registration is the session's: dropping it stops the
    /// keepalives). `resumed`: a lease granted earlier.
    fn start(
        client: &Client,
        lease: LeaseId,
        ttl: Duration,
        deadline: Instant,
        resumed: bool,
    ) -> Arc<Self> {
        let (state, _) = watch::channel(LeaseState::Alive { deadline });
        let report = state.clone();
        let registration = client.keep_alive(lease, ttl, deadline, move |r| on_renewal(&report, r));
        Arc::new(SessionInner {
            client: client.clone(),
            lease,
            ttl,
            state,
            keepalive: Mutex::new(Some(registration)),
            slots: Mutex::new(Slots::new(resumed)),
            slots_changed: std::sync::OnceLock::new(),
            revoked: AtomicBool::new(false),
        })
    }

    /// Takes over a lease granted earlier (by this process before a
    /// restart, say): sends it a keepalive at once on the client's
    /// keepalive stream, which then keeps it alive like a new one. The
    /// answer renews the lease to its granted TTL, so the deadline is the
    /// keepalive's send time plus that TTL, however little of the lease was
    /// left (even under the whole second that etcd's `LeaseTimeToLive`
    /// would report as 0).
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] when etcd no longer knows the lease; network
    /// errors.
    pub(crate) async fn adopt(client: &Client, lease: LeaseId) -> Result<Arc<SessionInner>> {
        let (sent, ttl) = client.keep_alive_once(lease).await?;
        if ttl <= 0 {
            return Err(Error::LeaseExpired { lease });
        }
        let granted = Duration::from_secs(ttl.clamp(1, MAX_TTL_SECS) as u64);
        Ok(SessionInner::start(
            client,
            lease,
            granted,
            plus_ttl(sent, ttl),
            true,
        ))
    }

    /// Whether the lease is lost, judged by the clock now.
    pub(crate) fn lost(&self) -> Option<LostReason> {
        self.state.borrow().lost_at(Instant::now())
    }

    /// `Ok` while the lease may be assumed alive; else the error that says
    /// why not.
    ///
    /// # Errors
    /// [`Error::SessionClosed`] or [`Error::LeaseExpired`].
    pub(crate) fn check_alive(&self) -> Result<()> {
        match self.lost() {
            Some(r) => Err(self.lost_error(r)),
            None => Ok(()),
        }
    }

    /// The answer to a release: the loss known before it (`lost_before`)
    /// wins; else `done` says whether the release found what it released,
    /// and `gone` is the error when it did not.
    pub(crate) fn release_outcome(
        &self,
        lost_before: Option<LostReason>,
        done: bool,
        gone: impl FnOnce() -> Error,
    ) -> Result<()> {
        match lost_before {
            Some(r) => Err(self.lost_error(r)),
            None if !done => Err(gone()),
            None => Ok(()),
        }
    }

    /// The local time until which the lease is known to be alive.
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        match *self.state.borrow() {
            LeaseState::Alive { deadline } if deadline > Instant::now() => {
                Some(deadline.into_std())
            }
            _ => None,
        }
    }

    /// Resolves when the lease is lost (or closed).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn wait_lost(&self) -> LostReason {
        self.lost_signal().await
    }

    /// The lost signal as a future holding only a receiver of the lease's
    /// state, not the session: it keeps nothing alive, and resolves with
    /// [`LostReason::Closed`] once the session is gone.
    pub(crate) fn lost_signal(&self) -> impl Future<Output = LostReason> + Send + 'static {
        wait_lost(self.state.subscribe())
    }

    pub(crate) fn lost_error(&self, reason: LostReason) -> Error {
        match reason {
            LostReason::Closed => Error::SessionClosed,
            _ => Error::LeaseExpired { lease: self.lease },
        }
    }

    fn stop_keepalive(&self) {
        drop(crate::rt::lock(&self.keepalive).take());
    }

    /// Stops the keepalive and revokes the lease (deleting its keys).
    /// Returns whether the lease still existed.
    ///
    /// The session counts as closed from the start: once the revoke may be
    /// on its way, no guard on the lease may say it holds. If this future
    /// is dropped before the answer, the drop of the session revokes in the
    /// background instead.
    pub(crate) async fn revoke(&self) -> Result<bool> {
        let was = self.lost();
        if was == Some(LostReason::Closed) {
            return Err(Error::SessionClosed);
        }
        self.stop_keepalive();
        self.state
            .send_replace(LeaseState::Lost(LostReason::Closed));
        let existed = self.client.lease_revoke(self.lease).await?;
        self.revoked.store(true, Ordering::Relaxed);
        Ok(existed && was.is_none())
    }
}

/// Waits on `rx` until the lease is lost, or its deadline passes.
async fn wait_lost(mut rx: watch::Receiver<LeaseState>) -> LostReason {
    loop {
        let state = *rx.borrow_and_update();
        if let Some(r) = state.lost_at(Instant::now()) {
            return r;
        }
        let LeaseState::Alive { deadline } = state else {
            continue;
        };
        // The deadline is checked here too, not only by the keepalive
        // task: the signal must fire on time even if that task cannot run.
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return LostReason::Closed;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return LostReason::Unreachable,
        }
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        self.stop_keepalive();
        if self.revoked.load(Ordering::Relaxed) {
            return;
        }
        // Dropped without close: revoke in the background when a runtime is
        // there, so the locks go now rather than after a whole TTL. The task
        // is bounded by the client's request timeout (a few attempts).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let lease = self.lease;
            rt.spawn(async move {
                let _ = client.lease_revoke(lease).await;
            });
        }
    }
}
