//! The keepalive task of one lease: one stream, one message every TTL/3,
//! and the deadline each answer moves.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::lease::{LeaseState, LostReason, plus_ttl};
use crate::client::{BiStream, Client, paths};
use crate::error::{Error, Result};
use crate::types::LeaseId;
use crate::wire::etcdserverpb as pb;
use crate::wire::etcdserverpb::lease_client::LeaseClient;

pub(super) type KeepAliveStream = BiStream<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>;

/// Opens a keepalive stream for `lease` with one keepalive, and waits for
/// its answer: the stream, the keepalive's send time and the answer's TTL
/// (`<= 0`: the lease is gone).
///
/// # Errors
/// Network errors, and a stream that ends before it answers.
pub(super) async fn first_keepalive(
    client: &Client,
    lease: LeaseId,
) -> Result<(KeepAliveStream, Instant, i64)> {
    let sent = Instant::now();
    let mut stream = open(client, lease).await?;
    let wait = client.request_timeout();
    match tokio::time::timeout(wait, stream.recv()).await {
        Ok(Ok(Some(resp))) => Ok((stream, sent, resp.ttl)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(None)) => Err(Error::Protocol {
            path: paths::LEASE_KEEPALIVE,
            detail: "the keepalive stream ended before its first answer".into(),
        }),
        Err(_) => Err(Error::Timeout {
            endpoint: stream.endpoint().to_owned(),
            path: paths::LEASE_KEEPALIVE,
            after: wait,
        }),
    }
}

/// Opens a keepalive stream whose first message is a keepalive of `lease`.
async fn open(client: &Client, lease: LeaseId) -> Result<KeepAliveStream> {
    client
        .open_stream(
            paths::LEASE_KEEPALIVE,
            || pb::LeaseKeepAliveRequest { id: lease.0 },
            |ch, r| async move { LeaseClient::new(ch).lease_keep_alive(r).await },
        )
        .await
}

/// The keepalive task of one lease. Owned by its `SessionInner`, which
/// aborts it on close and on drop; it also ends by itself when the lease is
/// lost, after saying so on `state`. `stream` is one already open (its
/// keepalives all answered), for a resumed lease.
pub(super) async fn keepalive_loop(
    client: Client,
    lease: LeaseId,
    ttl: Duration,
    deadline: Instant,
    state: watch::Sender<LeaseState>,
    stream: Option<KeepAliveStream>,
) {
    let period = (ttl / 3).max(Duration::from_millis(300));
    let mut k = KeepAlive {
        client,
        lease,
        ttl,
        period,
        deadline,
        state,
        stream,
        in_flight: VecDeque::new(),
        next_send: Instant::now() + period,
    };
    loop {
        let lost = tokio::select! {
            _ = tokio::time::sleep_until(k.deadline) => Some(LostReason::Unreachable),
            _ = tokio::time::sleep_until(k.next_send) => {
                k.tick().await;
                None
            }
            msg = recv(&mut k.stream) => k.on_answer(msg),
        };
        if let Some(reason) = lost {
            k.state.send_if_modified(|s| {
                let alive = matches!(s, LeaseState::Alive { .. });
                if alive {
                    *s = LeaseState::Lost(reason);
                }
                alive
            });
            return;
        }
    }
}

struct KeepAlive {
    client: Client,
    lease: LeaseId,
    ttl: Duration,
    period: Duration,
    deadline: Instant,
    state: watch::Sender<LeaseState>,
    stream: Option<KeepAliveStream>,
    /// Send times of keepalives not yet answered on the current stream.
    in_flight: VecDeque<Instant>,
    next_send: Instant,
}

impl KeepAlive {
    fn request(&self) -> pb::LeaseKeepAliveRequest {
        pb::LeaseKeepAliveRequest { id: self.lease.0 }
    }

    /// Gives up the current stream: its endpoint is marked down.
    fn drop_stream(&mut self) {
        if let Some(s) = self.stream.take() {
            self.client.mark_down(s.endpoint());
        }
        self.in_flight.clear();
    }

    /// Time to send a keepalive: on the current stream, or on a new one.
    async fn tick(&mut self) {
        self.next_send = Instant::now() + self.period;
        if !self.in_flight.is_empty() {
            // A keepalive went a whole period without an answer (normally
            // it takes milliseconds): the connection or the member is
            // probably dead. Try another stream on another endpoint, with a
            // period to spare before the deadline.
            self.drop_stream();
        }
        let now = Instant::now();
        match &self.stream {
            Some(s) => {
                if s.send(self.request()).await.is_ok() {
                    self.in_flight.push_back(now);
                } else {
                    self.stream = None;
                    self.in_flight.clear();
                }
            }
            None => self.open(now).await,
        }
    }

    /// Opens a stream whose first message is a keepalive sent at `now`.
    async fn open(&mut self, now: Instant) {
        let open = open(&self.client, self.lease);
        tokio::select! {
            _ = tokio::time::sleep_until(self.deadline) => {}
            // An endpoint that does not answer the open within a period is
            // given up for another.
            _ = tokio::time::sleep(self.period) => {
                self.client.mark_down(&self.client.preferred_endpoint());
                self.next_send = Instant::now();
            }
            r = open => match r {
                Ok(s) => {
                    self.stream = Some(s);
                    self.in_flight.clear();
                    self.in_flight.push_back(now);
                }
                Err(Error::NotEtcd { .. } | Error::AuthFailed { .. } | Error::PermissionDenied { .. }) => {}
                Err(_) => {
                    // Retry soon rather than a whole period later.
                    self.next_send = Instant::now() + Duration::from_millis(200).min(self.period);
                }
            }
        }
    }

    /// An answer (or the end) of the stream; `Some` when the lease is gone.
    fn on_answer(&mut self, msg: Result<Option<pb::LeaseKeepAliveResponse>>) -> Option<LostReason> {
        let Ok(Some(resp)) = msg else {
            self.drop_stream();
            self.next_send = Instant::now() + Duration::from_millis(100).min(self.period);
            return None;
        };
        let sent = self.in_flight.pop_front();
        if resp.ttl <= 0 {
            return Some(LostReason::Expired);
        }
        if let Some(sent) = sent {
            // Never trust an answer beyond the granted TTL.
            let secs = resp.ttl.min(self.ttl.as_secs() as i64);
            let d = plus_ttl(sent, secs);
            if d > self.deadline {
                self.deadline = d;
                // Never over a loss or a close said meanwhile (a close
                // aborts this task, but not a poll already running).
                self.state.send_if_modified(|s| {
                    let alive = matches!(s, LeaseState::Alive { .. });
                    if alive {
                        *s = LeaseState::Alive { deadline: d };
                    }
                    alive
                });
            }
        }
        None
    }
}

async fn recv(stream: &mut Option<KeepAliveStream>) -> Result<Option<pb::LeaseKeepAliveResponse>> {
    match stream {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
