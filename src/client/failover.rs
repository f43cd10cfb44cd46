//! One call's way through the endpoints: which endpoint to try next, and
//! what the failed attempts add up to when none answered.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// The pause before the second round of a unary call.
const SECOND_ROUND_PAUSE: Duration = Duration::from_millis(100);

/// The longest pause between two rounds for an endpoint that stays busy.
const BUSY_PAUSE_CAP: Duration = Duration::from_millis(1600);

/// The endpoints one call tries, and its failed attempts so far.
///
/// First round: every endpoint once, healthy ones first. Second round,
/// after a short pause: the endpoints that refused quickly (not reachable,
/// or no leader yet), never one that timed out. Later rounds, each after a
/// pause twice as long as the one before (jittered, at most 1.6 s), while
/// the call's busy budget lasts: the endpoints that refused because they
/// were busy (etcd's `too many requests`, no leader yet), which applied
/// nothing. A stream never asks for a second round.
pub(super) struct Failover {
    /// This round's endpoints still to try, the next one last.
    plan: Vec<usize>,
    /// The endpoints for the second round, in the order they failed.
    second: Vec<usize>,
    in_second: bool,
    /// The endpoints that were busy this round, for the next one.
    busy: Vec<usize>,
    /// Until when busy endpoints are tried again (`None`: never).
    busy_until: Option<Instant>,
    /// The pause before the next round.
    pause: Duration,
    /// (endpoint, why) of every failed attempt, in order.
    attempts: Vec<(String, String)>,
    /// How many of the attempts were cut off during the TLS handshake.
    cut_offs: usize,
    /// How many of the attempts got no answer within the request timeout.
    timeouts: usize,
    /// How many of the attempts reached something that is not etcd.
    not_etcd: usize,
    /// Whether this call has authenticated again already.
    pub(super) reauthed: bool,
}

impl Failover {
    /// Starts a call on the endpoints in this order.
    pub(super) fn new(order: Vec<usize>) -> Failover {
        let mut plan = order;
        plan.reverse();
        Failover {
            plan,
            second: Vec::new(),
            in_second: false,
            busy: Vec::new(),
            busy_until: None,
            pause: SECOND_ROUND_PAUSE,
            attempts: Vec::new(),
            cut_offs: 0,
            timeouts: 0,
            not_etcd: 0,
            reauthed: false,
        }
    }

    /// Tries busy endpoints again for `budget` from now.
    pub(super) fn retry_busy_for(mut self, budget: Duration) -> Failover {
        self.busy_until = Some(Instant::now() + budget);
        self
    }

    /// The next endpoint to try; `None` when the call has run out of them.
    ///
    /// # Cancel safety
    /// Cancel safe: only the pause between rounds awaits.
    pub(super) async fn next(&mut self) -> Option<usize> {
        if let Some(i) = self.plan.pop() {
            return Some(i);
        }
        let mut round = Vec::new();
        if !self.in_second {
            self.in_second = true;
            round.append(&mut self.second);
        }
        let pause = jittered(self.pause);
        if self
            .busy_until
            .is_some_and(|until| Instant::now() + pause < until)
        {
            round.append(&mut self.busy);
        }
        if round.is_empty() {
            return None;
        }
        round.reverse();
        self.plan = round;
        tokio::time::sleep(pause).await;
        self.pause = (self.pause * 2).min(BUSY_PAUSE_CAP);
        self.plan.pop()
    }

    /// Tries endpoint `i` again at once (after authenticating again).
    pub(super) fn retry_now(&mut self, i: usize) {
        self.plan.push(i);
    }

    /// Tries endpoint `i` again in the second round.
    pub(super) fn retry_later(&mut self, i: usize) {
        self.second.push(i);
    }

    /// Endpoint `i` refused as busy: it is tried again in the next round,
    /// while the busy budget lasts.
    pub(super) fn busy(&mut self, endpoint: &str, i: usize, why: String) {
        self.failed(endpoint, why);
        if !self.busy.contains(&i) {
            self.busy.push(i);
        }
    }

    /// An attempt failed.
    pub(super) fn failed(&mut self, endpoint: &str, why: String) {
        self.attempts.push((endpoint.to_owned(), why));
    }

    /// An attempt was cut off during the TLS handshake.
    pub(super) fn cut_off(&mut self, endpoint: &str, why: String) {
        self.cut_offs += 1;
        self.failed(endpoint, why);
    }

    /// An attempt got no answer within the request timeout.
    pub(super) fn timed_out(&mut self, endpoint: &str, why: String) {
        self.timeouts += 1;
        self.failed(endpoint, why);
    }

    /// An attempt reached something that does not speak etcd's gRPC.
    pub(super) fn not_etcd(&mut self, endpoint: &str, why: String) {
        self.not_etcd += 1;
        self.failed(endpoint, why);
    }

    /// The answer of a unary call no endpoint answered: [`Error::Tls`],
    /// [`Error::NotEtcd`] or [`Error::Timeout`] when every attempt failed
    /// so, else [`Error::Unreachable`].
    pub(super) fn unary_error(mut self, path: &'static str, timeout: Duration) -> Error {
        if let Some(e) = self.cut_off_everywhere() {
            return e;
        }
        let mut attempts = self.attempts;
        attempts.dedup();
        if self.not_etcd > 0 && self.not_etcd == attempts.len() {
            let (endpoint, detail) = attempts.pop().unwrap_or_default();
            return Error::NotEtcd { endpoint, detail };
        }
        if self.timeouts > 0 && self.timeouts == attempts.len() {
            let endpoint = attempts.pop().map(|a| a.0).unwrap_or_default();
            return Error::Timeout {
                endpoint,
                path,
                after: timeout,
            };
        }
        Error::Unreachable { attempts }
    }

    /// The answer of a stream no endpoint opened: [`Error::Tls`] when every
    /// attempt was cut off, else [`Error::Unreachable`].
    pub(super) fn stream_error(mut self) -> Error {
        match self.cut_off_everywhere() {
            Some(e) => e,
            None => Error::Unreachable {
                attempts: self.attempts,
            },
        }
    }

    /// [`Error::Tls`] when every attempt was cut off during the TLS
    /// handshake: the server most likely does not speak TLS. One endpoint
    /// doing so among others is just down.
    fn cut_off_everywhere(&mut self) -> Option<Error> {
        if self.cut_offs == 0 || self.cut_offs != self.attempts.len() {
            return None;
        }
        let (endpoint, detail) = self.attempts.pop()?;
        Some(Error::Tls { endpoint, detail })
    }
}

/// `pause` scaled by a random factor in [0.5, 1.5): callers refused
/// together do not all come back together.
fn jittered(pause: Duration) -> Duration {
    let draw = RandomState::new().hash_one(Instant::now());
    let permille = u32::try_from(draw % 1000).unwrap_or(0);
    pause * (500 + permille) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy endpoints (etcd refused before applying anything) are tried
    /// again, round after round with growing pauses, until the call's busy
    /// budget is spent; a call without a budget (a stream's open) stops
    /// after its first round, as does an endpoint that refused otherwise
    /// after its second.
    #[tokio::test]
    async fn busy_endpoints_are_tried_again_until_the_budget_is_spent() {
        let budget = Duration::from_secs(2);
        let mut way = Failover::new(vec![0, 1]).retry_busy_for(budget);
        let t0 = Instant::now();
        let mut tries = Vec::new();
        while let Some(i) = way.next().await {
            tries.push(i);
            way.busy("http://e", i, "etcdserver: too many requests".into());
        }
        let took = t0.elapsed();
        assert!(tries.len() >= 6, "fewer than three rounds: {tries:?}");
        assert!(tries.chunks(2).all(|r| r == [0, 1]), "{tries:?}");
        assert!(took <= budget, "went on past the budget: {took:?}");

        let mut stream = Failover::new(vec![0]);
        assert_eq!(stream.next().await, Some(0));
        stream.busy("http://e", 0, "no leader".into());
        assert_eq!(stream.next().await, None);

        let mut refused = Failover::new(vec![0]).retry_busy_for(budget);
        assert_eq!(refused.next().await, Some(0));
        refused.retry_later(0);
        assert_eq!(refused.next().await, Some(0), "the second round");
        refused.retry_later(0);
        assert_eq!(refused.next().await, None);
    }
}
