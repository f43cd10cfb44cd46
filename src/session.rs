//! A lease and its keepalive task: the deadline, the lost signal, and the
//! revoke on close.
//!
//! # When is a lease lost?
//!
//! The keepalive task sends one `LeaseKeepAlive` message every TTL/3 on one
//! stream per lease. Each answer with a positive TTL moves the lease's
//! *local deadline* to `sent + TTL`, where `sent` is the monotonic time at
//! which the answered keepalive was sent. etcd starts its own countdown only
//! after it has received that message, so the local deadline is never later
//! than the server's expiry (the clocks of the two machines are not
//! compared; only the local monotonic clock is used). The lost signal fires
//! at the deadline, or at once when etcd answers that the lease is gone:
//! before the server could give the lock to anyone else.
//!
//! # Background traffic
//!
//! A held lease costs one keepalive message and one answer every TTL/3
//! (with the default 10 s TTL: 18 messages each way per minute, no raft
//! commits), however many locks share it. The first keepalive goes out
//! TTL/3 after the grant, so a short lock cycle sends none.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{BiStream, Client, MAX_TTL_SECS, paths};
use crate::error::{Error, Result};
use crate::lock::{LockRequest, TryLockRequest};
use crate::types::{LeaseId, Revision};

use crate::wire::etcdserverpb as pb;
use crate::wire::etcdserverpb::lease_client::LeaseClient;

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
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum LeaseState {
    Alive { deadline: Instant },
    Lost(LostReason),
}

impl LeaseState {
    /// Lost, judged at `now`: a deadline in the past is a loss even when
    /// the keepalive task has not run to say so (starved, frozen, gone).
    fn lost_at(&self, now: Instant) -> Option<LostReason> {
        match self {
            LeaseState::Lost(r) => Some(*r),
            LeaseState::Alive { deadline } if now >= *deadline => Some(LostReason::Unreachable),
            LeaseState::Alive { .. } => None,
        }
    }
}

/// `at + secs` seconds, for a TTL from an answer (clamped to etcd's range:
/// answers beyond it are not trusted).
fn plus_ttl(at: Instant, secs: i64) -> Instant {
    let d = Duration::from_secs(secs.clamp(0, MAX_TTL_SECS) as u64);
    at.checked_add(d).unwrap_or(at)
}

/// The shared state behind a [`Session`] and the guards taken on it.
pub(crate) struct SessionInner {
    pub(crate) client: Client,
    pub(crate) lease: LeaseId,
    pub(crate) ttl: Duration,
    state: watch::Sender<LeaseState>,
    keepalive: Mutex<Option<JoinHandle<()>>>,
    /// What this session knows of each lock name it queued for.
    names: Mutex<HashMap<String, Slot>>,
}

/// The state of one lock name on a session. A name's key is
/// `{name}/{lease}` for every request on the session, so two requests for
/// one name must never overlap: the second would take over the first one's
/// key (and its stale fencing token), and the first one's cleanup could
/// delete the second one's key.
enum Slot {
    /// A lock request or a guard owns the name; its queue revision (0 while
    /// the acquire transaction is in flight).
    Owned(Revision),
    /// A background task is deleting the name's key; requests for the name
    /// wait until it is done.
    Cleaning(watch::Receiver<()>),
    /// The key may still exist with this create revision (`None`: unknown):
    /// the next request deletes it before queueing.
    Stale(Option<Revision>),
}

/// A key left behind by an earlier request for the same name, to be
/// deleted before queueing again.
pub(crate) struct StaleKey(pub(crate) Option<Revision>);

impl SessionInner {
    /// Grants a lease and starts its keepalive task.
    pub(crate) async fn grant(client: &Client, ttl: Duration) -> Result<Arc<SessionInner>> {
        let secs = crate::client::ttl_secs(ttl)?;
        let sent = Instant::now();
        let resp = client.lease_grant_raw(secs).await?;
        let granted = Duration::from_secs(resp.ttl.clamp(1, MAX_TTL_SECS) as u64);
        let (state, _) = watch::channel(LeaseState::Alive {
            deadline: plus_ttl(sent, resp.ttl),
        });
        let inner = Arc::new(SessionInner {
            client: client.clone(),
            lease: LeaseId(resp.id),
            ttl: granted,
            state,
            keepalive: Mutex::new(None),
            names: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(keepalive_loop(
            client.clone(),
            inner.lease,
            granted,
            plus_ttl(sent, resp.ttl),
            inner.state.clone(),
        ));
        *crate::rt::lock(&inner.keepalive) = Some(task);
        Ok(inner)
    }

    pub(crate) fn lost(&self) -> Option<LostReason> {
        self.state.borrow().lost_at(Instant::now())
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
    pub(crate) async fn wait_lost(&self) -> LostReason {
        let mut rx = self.state.subscribe();
        wait_lost(&mut rx).await
    }

    pub(crate) fn lost_error(&self, reason: LostReason) -> Error {
        match reason {
            LostReason::Closed => Error::SessionClosed,
            _ => Error::LeaseExpired { lease: self.lease },
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        crate::rt::lock(&self.names)
    }

    /// Reserves a lock name on this session, waiting for a background
    /// cleanup of the name to finish first. Returns the key an earlier
    /// request may have left behind, which the caller deletes before
    /// queueing.
    ///
    /// # Errors
    /// [`Error::AlreadyLocked`] while a request or guard owns the name.
    pub(crate) async fn reserve(&self, name: &str) -> Result<Option<StaleKey>> {
        loop {
            let mut cleaning = {
                let mut slots = self.slots();
                match slots.get(name) {
                    None => {
                        slots.insert(name.to_owned(), Slot::Owned(Revision(0)));
                        return Ok(None);
                    }
                    Some(Slot::Owned(rev)) => {
                        return Err(Error::AlreadyLocked {
                            name: name.to_owned(),
                            revision: *rev,
                        });
                    }
                    Some(Slot::Stale(rev)) => {
                        let stale = StaleKey(*rev);
                        slots.insert(name.to_owned(), Slot::Owned(Revision(0)));
                        return Ok(Some(stale));
                    }
                    Some(Slot::Cleaning(rx)) if rx.has_changed().is_err() => {
                        // The cleanup task ended without saying how (its
                        // runtime shut down): assume the key may remain.
                        slots.insert(name.to_owned(), Slot::Owned(Revision(0)));
                        return Ok(Some(StaleKey(None)));
                    }
                    Some(Slot::Cleaning(rx)) => rx.clone(),
                }
            };
            // Ends when the cleanup task drops its sender.
            let _ = cleaning.changed().await;
        }
    }

    pub(crate) fn set_revision(&self, name: &str, rev: Revision) {
        if let Some(slot) = self.slots().get_mut(name) {
            *slot = Slot::Owned(rev);
        }
    }

    /// Frees the name: its key is gone.
    pub(crate) fn unreserve(&self, name: &str) {
        self.slots().remove(name);
    }

    /// Frees the name, but remembers that its key may still exist.
    pub(crate) fn mark_stale(&self, name: &str, rev: Option<Revision>) {
        self.slots().insert(name.to_owned(), Slot::Stale(rev));
    }

    /// Runs `cleanup` (which deletes the name's key and says whether it
    /// succeeded) in the background when a tokio runtime is there; requests
    /// for the name wait for it. Without a runtime, the name is marked
    /// stale and the next request deletes the key first.
    pub(crate) fn clean_in_background<F>(
        self: &Arc<Self>,
        name: &str,
        rev: Option<Revision>,
        cleanup: F,
    ) where
        F: std::future::Future<Output = bool> + Send + 'static,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.mark_stale(name, rev);
            return;
        };
        let (tx, rx) = watch::channel(());
        self.slots()
            .insert(name.to_owned(), Slot::Cleaning(rx.clone()));
        let session = self.clone();
        let name = name.to_owned();
        rt.spawn(async move {
            let deleted = cleanup.await;
            let mut slots = session.slots();
            let ours = matches!(slots.get(&name), Some(Slot::Cleaning(r)) if r.same_channel(&rx));
            if ours {
                if deleted {
                    slots.remove(&name);
                } else {
                    slots.insert(name, Slot::Stale(rev));
                }
            }
            drop(slots);
            drop(tx);
        });
    }

    fn stop_keepalive(&self) {
        if let Some(task) = crate::rt::lock(&self.keepalive).take() {
            task.abort();
        }
    }

    /// Stops the keepalive and revokes the lease (deleting its keys).
    /// Returns whether the lease still existed.
    pub(crate) async fn revoke(&self) -> Result<bool> {
        let was = self.lost();
        if was == Some(LostReason::Closed) {
            return Err(Error::SessionClosed);
        }
        self.stop_keepalive();
        // Closed is recorded only once the revoke has an answer: if this
        // future is dropped meanwhile, the drop of the session revokes in
        // the background instead.
        let r = self.client.lease_revoke(self.lease).await;
        self.state
            .send_replace(LeaseState::Lost(LostReason::Closed));
        Ok(r? && was.is_none())
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        self.stop_keepalive();
        if self.lost() == Some(LostReason::Closed) {
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

pub(crate) async fn wait_lost(rx: &mut watch::Receiver<LeaseState>) -> LostReason {
    loop {
        let state = *rx.borrow_and_update();
        if let Some(r) = state.lost_at(Instant::now()) {
            return r;
        }
        let LeaseState::Alive { deadline } = state else {
            continue;
        };
        // The deadline is checked here too, not only by the keepalive task:
        // the signal must fire on time even if that task cannot run.
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The session is gone: treat as closed.
                    return LostReason::Closed;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return LostReason::Unreachable,
        }
    }
}

type KeepAliveStream = BiStream<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>;

/// The keepalive task of one lease. Owned by its `SessionInner`, which
/// aborts it on close and on drop; it also ends by itself when the lease is
/// lost.
async fn keepalive_loop(
    client: Client,
    lease: LeaseId,
    ttl: Duration,
    mut deadline: Instant,
    state: watch::Sender<LeaseState>,
) {
    let period = (ttl / 3).max(Duration::from_millis(300));
    let mut stream: Option<KeepAliveStream> = None;
    // Send times of keepalives not yet answered on the current stream.
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    let mut next_send = Instant::now() + period;
    loop {
        let lost = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Some(LostReason::Unreachable),
            _ = tokio::time::sleep_until(next_send) => {
                next_send = Instant::now() + period;
                if !in_flight.is_empty() {
                    // A keepalive went a whole period without an answer
                    // (normally it takes milliseconds): the connection or
                    // the member is probably dead. Try another stream on
                    // another endpoint, with a period to spare before the
                    // deadline.
                    if let Some(s) = stream.take() {
                        client.mark_down(s.endpoint());
                    }
                    in_flight.clear();
                }
                match &stream {
                    Some(s) => {
                        let now = Instant::now();
                        if s.send(pb::LeaseKeepAliveRequest { id: lease.0 }).await.is_ok() {
                            in_flight.push_back(now);
                        } else {
                            stream = None;
                            in_flight.clear();
                        }
                    }
                    None => {
                        let now = Instant::now();
                        let open = client.open_stream(
                            paths::LEASE_KEEPALIVE,
                            || pb::LeaseKeepAliveRequest { id: lease.0 },
                            |ch, r| async move { LeaseClient::new(ch).lease_keep_alive(r).await },
                        );
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => {}
                            // An endpoint that does not answer the open
                            // within a period is given up for another.
                            _ = tokio::time::sleep(period) => {
                                client.mark_down(&client.preferred_endpoint());
                                next_send = Instant::now();
                            }
                            r = open => match r {
                                Ok(s) => {
                                    stream = Some(s);
                                    in_flight.clear();
                                    in_flight.push_back(now);
                                }
                                Err(Error::NotEtcd { .. } | Error::AuthFailed { .. } | Error::PermissionDenied { .. }) => {}
                                Err(_) => {
                                    // Retry soon rather than a whole period later.
                                    next_send = Instant::now() + Duration::from_millis(200).min(period);
                                }
                            }
                        }
                    }
                }
                None
            }
            msg = recv(&mut stream) => match msg {
                Ok(Some(resp)) => {
                    let sent = in_flight.pop_front();
                    if resp.ttl <= 0 {
                        Some(LostReason::Expired)
                    } else {
                        if let Some(sent) = sent {
                            // Never trust an answer beyond the granted TTL.
                            let secs = resp.ttl.min(ttl.as_secs() as i64);
                            let d = plus_ttl(sent, secs);
                            if d > deadline {
                                deadline = d;
                                state.send_replace(LeaseState::Alive { deadline });
                            }
                        }
                        None
                    }
                }
                Ok(None) | Err(_) => {
                    if let Some(s) = stream.take() {
                        client.mark_down(s.endpoint());
                    }
                    in_flight.clear();
                    next_send = Instant::now() + Duration::from_millis(100).min(period);
                    None
                }
            },
        };
        if let Some(reason) = lost {
            state.send_if_modified(|s| {
                if matches!(s, LeaseState::Alive { .. }) {
                    *s = LeaseState::Lost(reason);
                    true
                } else {
                    false
                }
            });
            return;
        }
    }
}

async fn recv(stream: &mut Option<KeepAliveStream>) -> Result<Option<pb::LeaseKeepAliveResponse>> {
    match stream {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// One lease shared by many locks. Locking and releasing on a session costs
/// one transaction each; the lease is kept alive by one background task
/// until [`close`](Session::close).
///
/// Dropping a session without `close` stops its keepalive and, when a tokio
/// runtime is running, revokes the lease in the background (deleting every
/// lock key on it) as soon as no guard taken on it is alive; guards keep the
/// session's lease alive while they exist.
///
/// ```no_run
/// # async fn f(client: locker::Client) -> locker::Result<()> {
/// use std::time::Duration;
/// let session = client.session(Duration::from_secs(10)).await?;
/// let a = session.lock("a").await?;
/// let b = session.lock("b").await?;
/// a.release().await?;
/// b.release().await?;
/// session.close().await?;
/// # Ok(()) }
/// ```
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lease", &self.inner.lease)
            .field("ttl", &self.inner.ttl)
            .field("lost", &self.inner.lost())
            .finish()
    }
}

impl Client {
    /// Opens a session: grants a lease of `ttl` (rounded up to whole
    /// seconds; etcd may raise it to its minimum) and starts its keepalive.
    ///
    /// Wire calls: one `Lease/LeaseGrant`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero TTL; network and server errors.
    ///
    /// # Cancel safety
    /// Cancel safe in effect: a lease granted for a dropped future has no
    /// keys and expires after its TTL.
    pub async fn session(&self, ttl: Duration) -> Result<Session> {
        Ok(Session {
            inner: SessionInner::grant(self, ttl).await?,
        })
    }
}

impl Session {
    /// The session's lease.
    pub fn lease(&self) -> LeaseId {
        self.inner.lease
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The local monotonic time until which the lease is known to be alive
    /// (the lost signal fires then unless a keepalive answer moves it);
    /// `None` once lost.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.inner.deadline()
    }

    /// Whether the lease is lost (or the session closed), and why.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.inner.lost()
    }

    /// Resolves when the lease is lost or the session closed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> LostReason {
        self.inner.wait_lost().await
    }

    /// Waits in FIFO order for the lock `name` on this session's lease.
    /// See [`LockRequest`] for options and wire calls.
    pub fn lock(&self, name: impl Into<String>) -> LockRequest {
        LockRequest::on_session(self.inner.clone(), name.into())
    }

    /// Takes the lock `name` on this session's lease only if it is free.
    /// See [`TryLockRequest`].
    pub fn try_lock(&self, name: impl Into<String>) -> TryLockRequest {
        TryLockRequest::on_session(self.inner.clone(), name.into())
    }

    /// Stops the keepalive and revokes the lease, which deletes every lock
    /// key on it in one commit. Guards still alive report the lock lost.
    ///
    /// Wire calls: one `Lease/LeaseRevoke`.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] when the lease had already expired (its locks
    /// were lost before the close); network errors (the lease then expires
    /// by itself after its TTL).
    ///
    /// # Cancel safety
    /// Not cancel safe: the revoke may or may not be applied.
    pub async fn close(self) -> Result<()> {
        let lost = self.inner.lost();
        let existed = self.inner.revoke().await?;
        match lost {
            Some(LostReason::Closed) => Err(Error::SessionClosed),
            Some(_) => Err(Error::LeaseExpired {
                lease: self.inner.lease,
            }),
            None if !existed => Err(Error::LeaseExpired {
                lease: self.inner.lease,
            }),
            None => Ok(()),
        }
    }
}
