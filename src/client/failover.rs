//! One call's way through the endpoints: which endpoint to try next, and
//! what the failed attempts add up to when none answered.

use std::time::Duration;

use crate::error::Error;

/// The pause before the second round of a unary call.
const SECOND_ROUND_PAUSE: Duration = Duration::from_millis(100);

/// The endpoints one call tries, and its failed attempts so far.
///
/// First round: every endpoint once, healthy ones first. Second round,
/// after a short pause: the endpoints that refused quickly (not reachable,
/// or no leader yet), never one that timed out. A stream never asks for a
/// second round.
pub(super) struct Failover {
    /// This round's endpoints still to try, the next one last.
    plan: Vec<usize>,
    /// The endpoints for the second round, in the order they failed.
    second: Vec<usize>,
    in_second: bool,
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
            attempts: Vec::new(),
            cut_offs: 0,
            timeouts: 0,
            not_etcd: 0,
            reauthed: false,
        }
    }

    /// The next endpoint to try; `None` when the call has run out of them.
    ///
    /// # Cancel safety
    /// Cancel safe: only the pause before the second round awaits.
    pub(super) async fn next(&mut self) -> Option<usize> {
        if let Some(i) = self.plan.pop() {
            return Some(i);
        }
        if self.in_second || self.second.is_empty() {
            return None;
        }
        self.in_second = true;
        self.plan = std::mem::take(&mut self.second);
        self.plan.reverse();
        tokio::time::sleep(SECOND_ROUND_PAUSE).await;
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
