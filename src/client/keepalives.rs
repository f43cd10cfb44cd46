//! The keepalive hub: one task and one `LeaseKeepAlive` stream per client,
//! carrying the keepalives of every lease the client keeps alive.
//!
//! Each lease is sent on its own schedule, one keepalive every TTL/3 (at
//! least 300 ms apart), the first one TTL/3 after its registration, as
//! etcd's Go lessor does on its one stream per client. The stream is opened
//! when the first keepalive is due (through [`Client::open_stream`], which
//! audits it and fails it over), so a short lock cycle opens none.
//!
//! Answers name their lease, and etcd answers one lease's keepalives in the
//! order they were sent; so the hub keeps, per lease ID, the send times of
//! the keepalives not yet answered, and an answer moves its lease's deadline
//! to the *send* time of the keepalive it answers plus the TTL (never more
//! than the granted one). An answer with `TTL <= 0` ends that lease only.
//!
//! When the stream fails the hub gives it up for the next endpoint: on an
//! error or its end; when a keepalive went a whole period of its lease
//! unanswered (normally it takes milliseconds: the connection or the member
//! is dead); when an open is not answered within the shortest period. A new
//! stream gets a keepalive for every lease at once.
//!
//! With no lease left the hub keeps its stream open, so that a client that
//! takes one lock after another does not open a stream per lock. The task is
//! owned by the client's `Hubs` (aborted when the user's last clone of the
//! client drops) and holds only a detached client.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{BiStream, Client, MAX_TTL_SECS, paths};
use crate::error::{Error, Result};
use crate::types::LeaseId;
use crate::wire::etcdserverpb as pb;
use crate::wire::etcdserverpb::lease_client::LeaseClient;

type Stream = BiStream<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>;
type Opening = Pin<Box<dyn Future<Output = Result<Stream>> + Send>>;
/// Where the answer to a one-off keepalive goes: its send time and TTL.
type Reply = oneshot::Sender<Result<(Instant, i64)>>;

/// The shortest time between two keepalives of one lease.
const MIN_PERIOD: Duration = Duration::from_millis(300);
/// How soon a stream that broke is opened again.
const AFTER_BREAK: Duration = Duration::from_millis(100);
/// How soon an open that failed (not for a refusal) is tried again.
const AFTER_FAILED_OPEN: Duration = Duration::from_millis(200);

/// What the hub tells the owner of a registered lease.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Renewal {
    /// An answer moved the lease's local deadline to this time.
    Until(Instant),
    /// etcd answered that the lease is gone (`TTL <= 0`). The lease has
    /// left the hub.
    Expired,
    /// No keepalive was answered before the deadline. The lease has left
    /// the hub.
    Unreachable,
}

/// How the hub reports to a lease's owner. Called on the hub's task, so it
/// must never block.
pub(crate) type Report = Box<dyn FnMut(Renewal) + Send>;

/// `at + secs` seconds, for a TTL from an answer (clamped to etcd's range:
/// answers beyond it are not trusted).
pub(crate) fn plus_ttl(at: Instant, secs: i64) -> Instant {
    let d = Duration::from_secs(secs.clamp(0, MAX_TTL_SECS) as u64);
    at.checked_add(d).unwrap_or(at)
}

/// A message to the hub's task.
enum Command {
    Register(u64, Kept),
    Unregister(u64),
    /// Send one keepalive of this lease at once and reply with its answer.
    Once(LeaseId, Reply),
}

/// The hub of one client, as its `Hubs` keep it: the way to its task.
pub(crate) struct KeepAlives {
    commands: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
}

/// A lease the hub keeps alive. Dropping it stops the keepalives.
pub(crate) struct Registration {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unregister(self.id));
    }
}

impl Client {
    /// The hub, started on first use.
    fn keepalives(&self) -> &KeepAlives {
        self.hubs().keepalives(|| {
            let (commands, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(Hub::new(self.detached(), rx).run());
            self.hubs().own(task);
            KeepAlives {
                commands,
                next_id: AtomicU64::new(0),
            }
        })
    }

    /// Keeps `lease` (granted `ttl`, known alive until `deadline`) alive on
    /// the client's keepalive stream until the registration is dropped;
    /// `report` hears of every deadline an answer moves, and of the end.
    pub(crate) fn keep_alive(
        &self,
        lease: LeaseId,
        ttl: Duration,
        deadline: Instant,
        report: impl FnMut(Renewal) + Send + 'static,
    ) -> Registration {
        let hub = self.keepalives();
        let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
        let period = (ttl / 3).max(MIN_PERIOD);
        let kept = Kept {
            lease,
            ttl,
            period,
            deadline,
            next_send: Instant::now() + period,
            unanswered: 0,
            report: Box::new(report),
        };
        let _ = hub.commands.send(Command::Register(id, kept));
        Registration {
            id,
            commands: hub.commands.clone(),
        }
    }

    /// Sends one keepalive of `lease` at once on the client's keepalive
    /// stream and waits for its answer: the keepalive's send time and the
    /// answer's TTL (`<= 0`: the lease is gone).
    ///
    /// # Errors
    /// The error of the stream's open when it fails; [`Error::Timeout`]
    /// when no answer comes within the request timeout per endpoint (the
    /// open may fail over), and one more.
    pub(crate) async fn keep_alive_once(&self, lease: LeaseId) -> Result<(Instant, i64)> {
        let (reply, answer) = oneshot::channel();
        let _ = self.keepalives().commands.send(Command::Once(lease, reply));
        let n = self.endpoints().len() as u32;
        let wait = self.request_timeout() * (n + 1);
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Error::Protocol {
                path: paths::LEASE_KEEPALIVE,
                detail: "the keepalive stream's task stopped".into(),
            }),
            Err(_) => Err(Error::Timeout {
                endpoint: self.preferred_endpoint(),
                path: paths::LEASE_KEEPALIVE,
                after: wait,
            }),
        }
    }
}

/// One registered lease.
struct Kept {
    lease: LeaseId,
    ttl: Duration,
    period: Duration,
    deadline: Instant,
    next_send: Instant,
    /// Its keepalives sent on the current stream and not yet answered.
    unanswered: usize,
    report: Report,
}

/// Who waits for the answer to a keepalive.
enum Who {
    Lease(u64),
    Once(Reply),
}

/// A keepalive sent and not yet answered.
struct Sent {
    at: Instant,
    who: Who,
}

/// A stream being opened, with its first keepalive.
struct Open {
    future: Opening,
    lease: LeaseId,
    first: Sent,
    /// When it is given up (its endpoint marked down) if still unanswered.
    give_up: Option<Instant>,
}

/// The hub's task.
struct Hub {
    client: Client,
    commands: mpsc::UnboundedReceiver<Command>,
    leases: HashMap<u64, Kept>,
    /// Per lease ID, the keepalives on the current stream not yet answered,
    /// in the order they were sent.
    in_flight: HashMap<i64, VecDeque<Sent>>,
    /// One-off keepalives waiting for a stream.
    waiting: Vec<(LeaseId, Reply)>,
    stream: Option<Stream>,
    opening: Option<Open>,
    /// No stream is opened before this time.
    retry_at: Instant,
    /// When the registry must be looked at next.
    wake: Instant,
}

impl Hub {
    /// A hub with no lease and no stream yet.
    fn new(client: Client, commands: mpsc::UnboundedReceiver<Command>) -> Hub {
        let now = Instant::now();
        Hub {
            client,
            commands,
            leases: HashMap::new(),
            in_flight: HashMap::new(),
            waiting: Vec::new(),
            stream: None,
            opening: None,
            retry_at: now,
            wake: far_from(now),
        }
    }

    /// The task: commands first, then answers, the open, the clock. Ends
    /// when every sender of commands is gone (normally it is aborted
    /// first). Answers come before the clock so that an answer already
    /// received is never taken for a missing one.
    async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => return,
                },
                msg = recv(&mut self.stream) => self.on_message(msg),
                opened = open_outcome(&mut self.opening) => self.on_open(opened).await,
                _ = tokio::time::sleep_until(self.wake) => self.scan().await,
            }
        }
    }

    /// A registration, an end of one, or a one-off keepalive to send.
    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Register(id, kept) => {
                self.wake = self.wake.min(kept.next_send).min(kept.deadline);
                self.leases.insert(id, kept);
            }
            Command::Unregister(id) => {
                // Its keepalives in flight stay in their queue (answers of
                // the same lease ID for others come after them), unheard.
                self.leases.remove(&id);
            }
            Command::Once(lease, reply) => {
                if self.stream.is_some() {
                    self.send(lease, Who::Once(reply)).await;
                } else {
                    self.waiting.push((lease, reply));
                    self.wake = Instant::now();
                }
            }
        }
    }

    /// Reports the leases whose deadline passed, gives up a dead stream or
    /// open, sends what is due, opens a stream when one is needed.
    async fn scan(&mut self) {
        let now = Instant::now();
        let passed: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, k)| k.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in passed {
            if let Some(mut k) = self.leases.remove(&id) {
                (k.report)(Renewal::Unreachable);
            }
        }
        let dead = self
            .leases
            .values()
            .any(|k| k.next_send <= now && k.unanswered > 0);
        let timeout = self.client.request_timeout();
        let once_late = self.oldest_once().is_some_and(|at| at + timeout <= now);
        if (dead || once_late) && self.stream.is_some() {
            // A keepalive went a whole period (a one-off one, a request
            // timeout) without an answer: try another endpoint, with every
            // lease at once.
            self.drop_stream(now);
        }
        if self
            .opening
            .as_ref()
            .is_some_and(|o| o.give_up.is_some_and(|g| g <= now))
        {
            self.give_up_open(now);
        }
        if self.stream.is_some() {
            self.send_due(now).await;
        } else if self.opening.is_none() && self.retry_at <= now {
            self.start_open(now);
        }
        self.wake = self.next_wake();
    }

    /// Sends a keepalive for every lease whose time has come.
    async fn send_due(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, k)| k.next_send <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(k) = self.leases.get_mut(&id) else {
                continue;
            };
            if self.stream.is_none() {
                // The stream broke meanwhile: every lease is due again.
                return;
            }
            k.next_send = now + k.period;
            let lease = k.lease;
            self.send(lease, Who::Lease(id)).await;
        }
        for (lease, reply) in std::mem::take(&mut self.waiting) {
            if !reply.is_closed() {
                self.send(lease, Who::Once(reply)).await;
            }
        }
    }

    /// Sends one keepalive of `lease` on the current stream. A stream that
    /// cannot take it (closed, or full for a whole request timeout) is
    /// given up.
    async fn send(&mut self, lease: LeaseId, who: Who) {
        let Some(stream) = &self.stream else {
            self.park(lease, who);
            return;
        };
        let at = Instant::now();
        let req = pb::LeaseKeepAliveRequest { id: lease.0 };
        let wait = self.client.request_timeout();
        let sent = tokio::time::timeout(wait, stream.send(req)).await;
        if matches!(sent, Ok(Ok(()))) {
            if let Who::Lease(id) = &who {
                if let Some(k) = self.leases.get_mut(id) {
                    k.unanswered += 1;
                }
            }
            let queue = self.in_flight.entry(lease.0).or_default();
            queue.push_back(Sent { at, who });
        } else {
            self.park(lease, who);
            self.drop_stream(Instant::now());
        }
    }

    /// A keepalive that found no stream: a one-off waits for the next one
    /// (a lease's is due again anyway).
    fn park(&mut self, lease: LeaseId, who: Who) {
        if let Who::Once(reply) = who {
            self.waiting.push((lease, reply));
        }
    }

    /// Opens a stream whose first message is the keepalive of a due lease,
    /// or a one-off one.
    fn start_open(&mut self, now: Instant) {
        let due = self
            .leases
            .iter_mut()
            .filter(|(_, k)| k.next_send <= now)
            .min_by_key(|(_, k)| k.next_send);
        let (lease, who) = match due {
            Some((id, k)) => {
                k.next_send = now + k.period;
                (k.lease, Who::Lease(*id))
            }
            None => {
                self.waiting.retain(|(_, r)| !r.is_closed());
                if self.waiting.is_empty() {
                    return;
                }
                let (lease, reply) = self.waiting.remove(0);
                (lease, Who::Once(reply))
            }
        };
        let client = self.client.clone();
        let future = Box::pin(async move {
            client
                .open_stream(
                    paths::LEASE_KEEPALIVE,
                    || pb::LeaseKeepAliveRequest { id: lease.0 },
                    |ch, r| async move { LeaseClient::new(ch).lease_keep_alive(r).await },
                )
                .await
        });
        self.opening = Some(Open {
            future,
            lease,
            first: Sent { at: now, who },
            give_up: self.shortest_period().map(|p| now + p),
        });
    }

    /// An open went a whole period unanswered: its endpoint is given up
    /// for another, at once.
    fn give_up_open(&mut self, now: Instant) {
        if let Some(open) = self.opening.take() {
            self.client.mark_down(&self.client.preferred_endpoint());
            self.unsend(open.lease, open.first.who, now);
        }
        self.retry_at = now;
    }

    /// A keepalive that was never sent after all: due again.
    fn unsend(&mut self, lease: LeaseId, who: Who, now: Instant) {
        match who {
            Who::Lease(id) => {
                if let Some(k) = self.leases.get_mut(&id) {
                    k.next_send = now;
                }
            }
            once => self.park(lease, once),
        }
    }

    /// The outcome of an open.
    async fn on_open(&mut self, opened: Result<Stream>) {
        let now = Instant::now();
        let Some(open) = self.opening.take() else {
            return;
        };
        match opened {
            Ok(stream) => {
                self.stream = Some(stream);
                if let Who::Lease(id) = &open.first.who {
                    if let Some(k) = self.leases.get_mut(id) {
                        k.unanswered += 1;
                    }
                }
                let queue = self.in_flight.entry(open.lease.0).or_default();
                queue.push_back(open.first);
                self.send_due(now).await;
            }
            Err(e) => {
                // Refusals (not etcd, credentials, permissions) may end
                // with a fix on the server: try again a period later, until
                // each lease's deadline. Anything else: soon.
                let refused = matches!(
                    e,
                    Error::NotEtcd { .. }
                        | Error::AuthFailed { .. }
                        | Error::PermissionDenied { .. }
                );
                let period = self.shortest_period().unwrap_or(MIN_PERIOD);
                let after = if refused {
                    period
                } else {
                    AFTER_FAILED_OPEN.min(period)
                };
                self.retry_at = now + after;
                self.unsend(open.lease, open.first.who, now);
                // A one-off keepalive is answered with the failure.
                for (_, reply) in self.waiting.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        self.wake = self.next_wake();
    }

    /// An answer, or the end of the stream.
    fn on_message(&mut self, msg: Result<Option<pb::LeaseKeepAliveResponse>>) {
        let Ok(Some(resp)) = msg else {
            self.drop_stream(Instant::now() + AFTER_BREAK);
            return;
        };
        let Some(queue) = self.in_flight.get_mut(&resp.id) else {
            return;
        };
        let sent = queue.pop_front();
        if queue.is_empty() {
            self.in_flight.remove(&resp.id);
        }
        match sent {
            Some(Sent {
                who: Who::Once(reply),
                at,
            }) => {
                let _ = reply.send(Ok((at, resp.ttl)));
            }
            Some(Sent {
                who: Who::Lease(id),
                at,
            }) => self.answered(id, at, resp.ttl),
            None => {}
        }
    }

    /// Registration `id`'s keepalive sent `at` was answered with `ttl`.
    fn answered(&mut self, id: u64, at: Instant, ttl: i64) {
        let Some(k) = self.leases.get_mut(&id) else {
            return;
        };
        k.unanswered = k.unanswered.saturating_sub(1);
        if ttl <= 0 {
            if let Some(mut k) = self.leases.remove(&id) {
                (k.report)(Renewal::Expired);
            }
            return;
        }
        // Never trust an answer beyond the granted TTL.
        let d = plus_ttl(at, ttl.min(k.ttl.as_secs() as i64));
        if d > k.deadline {
            k.deadline = d;
            (k.report)(Renewal::Until(d));
        }
    }

    /// Gives up the current stream (its endpoint is marked down): what was
    /// in flight on it will never be answered; every lease sends again at
    /// `resend` on the next stream, one-off keepalives as soon as it opens.
    fn drop_stream(&mut self, resend: Instant) {
        if let Some(s) = self.stream.take() {
            self.client.mark_down(s.endpoint());
        }
        for (lease, queue) in self.in_flight.drain() {
            for sent in queue {
                if let Who::Once(reply) = sent.who {
                    self.waiting.push((LeaseId(lease), reply));
                }
            }
        }
        for k in self.leases.values_mut() {
            k.unanswered = 0;
            k.next_send = resend;
        }
        self.retry_at = Instant::now();
        self.wake = self.next_wake();
    }

    /// The send time of the oldest one-off keepalive still unanswered on
    /// the current stream.
    fn oldest_once(&self) -> Option<Instant> {
        let sent = self.in_flight.values().flatten();
        sent.filter(|s| matches!(s.who, Who::Once(_)))
            .map(|s| s.at)
            .min()
    }

    /// The shortest keepalive period of the registered leases.
    fn shortest_period(&self) -> Option<Duration> {
        self.leases.values().map(|k| k.period).min()
    }

    /// When the registry must be looked at next: a deadline, a keepalive
    /// due (while there is a stream to send it on, or one to open), the
    /// end of an open's patience.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = far_from(now);
        let mut due = !self.waiting.is_empty();
        for k in self.leases.values() {
            wake = wake.min(k.deadline);
            if k.next_send > now {
                wake = wake.min(k.next_send);
            } else {
                due = true;
            }
        }
        if let Some(at) = self.oldest_once() {
            wake = wake.min(at + self.client.request_timeout());
        }
        match &self.opening {
            Some(open) => wake = open.give_up.map_or(wake, |g| wake.min(g)),
            None if due => wake = wake.min(self.retry_at.max(now)),
            None => {}
        }
        wake
    }
}

/// An hour from `now`: the wake-up when nothing is pending.
fn far_from(now: Instant) -> Instant {
    now + Duration::from_secs(3600)
}

/// The next message of the stream; never, when there is none.
async fn recv(stream: &mut Option<Stream>) -> Result<Option<pb::LeaseKeepAliveResponse>> {
    match stream {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The outcome of the open under way; never, when there is none.
async fn open_outcome(opening: &mut Option<Open>) -> Result<Stream> {
    match opening {
        Some(open) => (&mut open.future).await,
        None => std::future::pending().await,
    }
}
