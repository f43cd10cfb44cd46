//! A request to enter a name's queue: where its lease comes from, its
//! value, its rule; and the two ways to run it, waiting or trying.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::acquire::{Acquire, Mode, acquire};
use super::held::Held;
use super::key;
use super::release::{LeaseUse, Reservation};
use super::rule::Rule;
use super::wait::{Place, wait_turn};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::session::SessionInner;
use crate::types::{KeyValue, Revision};

/// The default lease TTL of a lock with its own lease.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Where a request gets its lease.
pub(crate) enum LeaseSource {
    /// A lease of its own, granted for this request.
    Own { client: Client, ttl: Duration },
    /// A session's lease, shared with its other keys.
    Session(Arc<SessionInner>),
}

/// A request to enter the queue of `name` under `rule`.
pub(crate) struct Entry {
    pub(crate) source: LeaseSource,
    pub(crate) name: String,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) rule: Rule,
}

/// A request ready to send its acquire: its lease and its reserved name
/// (which removes my key if the request is dropped).
struct Ready {
    session: Arc<SessionInner>,
    slot: Reservation,
    key: String,
    value: Vec<u8>,
}

impl Entry {
    /// A request on a lease of its own, with the default TTL.
    pub(crate) fn own(client: &Client, name: String, rule: Rule) -> Entry {
        let source = LeaseSource::Own {
            client: client.clone(),
            ttl: DEFAULT_TTL,
        };
        Entry::new(source, name, rule)
    }

    /// A request on a session's lease.
    pub(crate) fn on_session(session: Arc<SessionInner>, name: String, rule: Rule) -> Entry {
        Entry::new(LeaseSource::Session(session), name, rule)
    }

    fn new(source: LeaseSource, name: String, rule: Rule) -> Entry {
        Entry {
            source,
            name,
            value: None,
            rule,
        }
    }

    /// Sets the TTL of a lease of its own; ignored on a session.
    pub(crate) fn set_ttl(&mut self, ttl: Duration) {
        if let LeaseSource::Own { ttl: t, .. } = &mut self.source {
            *t = ttl;
        }
    }

    /// Checks the input, then gets the lease (granting one of its own).
    async fn lease(&self) -> Result<(Arc<SessionInner>, LeaseUse)> {
        key::validate_name(&self.name)?;
        key::validate_permits(self.rule.limit)?;
        if let Some(v) = &self.value {
            key::validate_value(v)?;
        }
        match &self.source {
            LeaseSource::Own { client, ttl } => {
                crate::client::ttl_secs(*ttl)?;
                Ok((SessionInner::grant(client, *ttl).await?, LeaseUse::Own))
            }
            LeaseSource::Session(s) => {
                s.check_alive()?;
                Ok((s.clone(), LeaseUse::Shared))
            }
        }
    }

    /// The start shared by waiting and trying: get the lease, reserve the
    /// name on it (removing what earlier requests for the name left, and on
    /// a resumed session what the earlier run left in other shapes), and
    /// note that my key may exist from now on: a drop or an error removes
    /// it.
    ///
    /// Each step is boxed: thousands of requests waiting for their place
    /// among the client's calls in flight then hold only the step at hand.
    async fn ready(&self) -> Result<Ready> {
        let (session, lease_use) = Box::pin(self.lease()).await?;
        let key = self.rule.key(&self.name, session.lease);
        let take = Reservation::take(session.clone(), lease_use, &self.name, &key);
        let slot = Box::pin(take).await?;
        slot.may_put(&key);
        let value = self.value.clone().unwrap_or_else(key::default_value);
        Ok(Ready {
            session,
            slot,
            key,
            value,
        })
    }

    /// Waits for my turn: acquire (step 1), then wait (step 2) unless the
    /// acquire already made it mine; gives up at `timeout`, leaving nothing
    /// queued.
    ///
    /// # Errors
    /// See [`LockRequest`](crate::LockRequest).
    pub(crate) async fn wait(&self, timeout: Option<Duration>) -> Result<Held> {
        // A timeout too large to add to the clock is no timeout.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let timed_out = || Error::AcquireTimeout {
            name: self.name.clone(),
            after: timeout.unwrap_or_default(),
        };
        // The grant and the name's reservation count against the timeout.
        // The steps that make calls are boxed: their state is on the heap
        // only while they run, so a waiter's future stays small while it
        // waits for its turn, which is most of its life.
        let r = before(deadline, Box::pin(self.ready()), timed_out).await?;
        let prefix = key::prefix(&self.name);
        // With other contenders of this client on the name, the client's
        // live copy of its keys tells my turn: the acquire reads nothing.
        let (_contender, view) = match self.rule.counts_on_copy() {
            true => r.session.client.contend(&prefix),
            false => (None, None),
        };
        let outcome = {
            let turn = std::pin::pin!(async {
                // Only what the wait needs is kept across it.
                let (holds, rev, turn, found) = {
                    let a = Acquire {
                        reads_queue: view.is_none(),
                        ..self.acquire(&r, &prefix)
                    };
                    let q = Box::pin(acquire(&r.session.client, &a, Mode::Queue)).await?;
                    (q.holds(), q.rev, q.turn, q.found)
                };
                if !holds {
                    let me = Place {
                        rule: self.rule,
                        prefix: &prefix,
                        key: &r.key,
                        rev,
                        view: view.as_deref(),
                    };
                    wait_turn(&r.session, &me, turn).await?;
                }
                Ok((rev, found))
            });
            while_alive(&r.session, deadline, turn, timed_out).await
        };
        Box::pin(self.finish(r, outcome)).await
    }

    /// Tries once: holds if no blocker exists, else reports the first
    /// holder and leaves nothing behind.
    ///
    /// # Errors
    /// See [`TryLockRequest`](crate::TryLockRequest).
    pub(crate) async fn try_once(self) -> Result<std::result::Result<Held, KeyValue>> {
        let r = self.ready().await?;
        let prefix = key::prefix(&self.name);
        let a = self.acquire(&r, &prefix);
        // One holder at most: put only if nobody is there. More (a
        // semaphore): queue, and leave at once unless among the holders.
        let mode = match self.rule.limit {
            1 => Mode::OnlyIfFree,
            _ => Mode::Queue,
        };
        // An error drops the reservation, which removes my key in the
        // background.
        let q = acquire(&r.session.client, &a, mode).await?;
        if q.holds() {
            // The lease may have been lost as the answer came.
            let alive = r.session.check_alive().map(|()| (q.rev, q.found));
            return Ok(Ok(self.finish(r, alive).await?));
        }
        let Some(holder) = q.holder else {
            return Err(no_holder());
        };
        // Leave nothing behind: my key if the try queued it or found it
        // (on a resumed session), and a lease of its own (best effort: an
        // unused lease also expires by itself). A try that put nothing and
        // found nothing has no key to delete.
        if mode == Mode::OnlyIfFree && q.rev.0 == 0 {
            r.slot.gone(&r.key);
        }
        let _ = r.slot.leave().await;
        Ok(Err(holder))
    }

    fn acquire<'a>(&self, r: &'a Ready, prefix: &'a str) -> Acquire<'a> {
        Acquire {
            rule: self.rule,
            prefix,
            key: &r.key,
            value: &r.value,
            lease: r.session.lease,
            reads_queue: true,
        }
    }

    /// Hands out the held key (with the value found in it, when it was
    /// there already), or leaves nothing queued before reporting the error.
    async fn finish(&self, r: Ready, outcome: Result<(Revision, Option<Vec<u8>>)>) -> Result<Held> {
        match outcome {
            Ok((rev, found)) => {
                let value = found.unwrap_or(r.value);
                Ok(Held::new(r.slot, r.key, value, rev))
            }
            Err(e) => {
                // A drop during the leave hands it to the background.
                let _ = r.slot.leave().await;
                Err(e)
            }
        }
    }
}

/// Runs `step` until `deadline` (none: to its end); past it, `timed_out()`.
///
/// # Errors
/// `step`'s; `timed_out()`.
pub(crate) async fn before<T>(
    deadline: Option<Instant>,
    step: impl Future<Output = Result<T>>,
    timed_out: impl FnOnce() -> Error,
) -> Result<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, step)
            .await
            .map_err(|_| timed_out())?,
        None => step.await,
    }
}

/// Runs `turn` while the session's lease lives, until `deadline`; then
/// checks the lease once more (it may have been lost just as `turn` ended).
///
/// `turn` is pinned by the caller and only borrowed here: a future taken
/// by value would be kept twice in this one's state (as the argument, and
/// moved into the race), and a waiter's future is its memory while it
/// waits.
///
/// # Errors
/// `turn`'s; the session's loss; `timed_out()` past the deadline.
pub(crate) async fn while_alive<T>(
    session: &SessionInner,
    deadline: Option<Instant>,
    turn: std::pin::Pin<&mut impl Future<Output = Result<T>>>,
    timed_out: impl FnOnce() -> Error,
) -> Result<T> {
    let outcome = tokio::select! {
        res = turn => res,
        lost = session.wait_lost() => Err(session.lost_error(lost)),
        _ = crate::rt::sleep_until_opt(deadline) => Err(timed_out()),
    };
    outcome.and_then(|t| session.check_alive().map(|()| t))
}

fn no_holder() -> Error {
    Error::Protocol {
        path: crate::client::paths::TXN,
        detail: "the try-lock transaction read no holder".into(),
    }
}
