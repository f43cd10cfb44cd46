//! [`Client::unary`]: every unary RPC, with its timeout, its failover and
//! an audit record per attempt.
//!
//! A call tries one endpoint at a time ([`Client::attempt`]); what a failed
//! attempt means for the next endpoint is decided by the resend rule of
//! [`Retry`] ([`Client::after_failure`], [`Client::after_timeout`]); the
//! endpoints to try and the error when none answered are kept by
//! [`Failover`].

use std::future::Future;
use std::time::Instant;

use tonic::Status;
use tonic::transport::Channel;

use super::failover::Failover;
use super::failure::{Failure, classify, status_text};
use super::{Client, Retry, paths};
use crate::audit::{Describe, WireKind, WireRecord};
use crate::error::{Error, Result};

/// How one attempt of a unary call on one endpoint ended.
enum Attempt<Resp> {
    /// The endpoint answered.
    Answered(Resp),
    /// It failed with a status.
    Failed(Failure),
    /// No answer within the request timeout: it may have been applied.
    TimedOut,
}

impl Client {
    /// Sends one unary RPC with timeout, failover, re-authentication and an
    /// audit record per attempt.
    ///
    /// The call's state (its gRPC future, its failover) lives on the heap
    /// while the call is in flight: a caller's future, such as a waiter's
    /// that spends most of its life waiting for its turn, then stays small
    /// (a pointer where the call was). A call waits for its first place
    /// among the client's calls in flight before that state is made, so
    /// thousands of calls waiting for their turn cost their requests, not
    /// their gRPC futures.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        path: &'static str,
        retry: Retry,
        msg: Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: Describe + Clone,
        Resp: Describe,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        // Never closed: the permit always comes, in turn.
        let first = self.inner.in_flight.acquire().await.ok();
        Box::pin(self.unary_inline(path, retry, msg, call, first)).await
    }

    /// [`unary`](Self::unary), its state inline; `first`: the place in
    /// flight of its first attempt.
    ///
    /// Each attempt holds a place in flight, and only while it is sent and
    /// answered: what comes between attempts (a pause, a re-authentication,
    /// which is a call of its own) holds none, or calls that all hold a
    /// place could wait for ever on each other.
    async fn unary_inline<Req, Resp, F, Fut>(
        &self,
        path: &'static str,
        retry: Retry,
        msg: Req,
        call: F,
        mut first: Option<tokio::sync::SemaphorePermit<'_>>,
    ) -> Result<Resp>
    where
        Req: Describe + Clone,
        Resp: Describe,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let mut way = Failover::new(self.order()).retry_busy_for(self.inner.request_timeout);
        while let Some(i) = way.next().await {
            let place = match first.take() {
                Some(p) => Some(p),
                // Never closed: the permit always comes, in turn.
                None => self.inner.in_flight.acquire().await.ok(),
            };
            let outcome = self.attempt(i, path, &msg, &call).await;
            drop(place);
            match outcome {
                Attempt::Answered(resp) => return Ok(resp),
                Attempt::TimedOut => self.after_timeout(i, path, retry, &mut way)?,
                Attempt::Failed(failure) => {
                    self.after_failure(i, path, retry, failure, &mut way)
                        .await?;
                }
            }
        }
        Err(way.unary_error(path, self.inner.request_timeout))
    }

    /// One attempt on endpoint `i`, under the request timeout, with its
    /// audit record. An endpoint that answers becomes the preferred one.
    async fn attempt<Req, Resp, F, Fut>(
        &self,
        i: usize,
        path: &'static str,
        msg: &Req,
        call: &F,
    ) -> Attempt<Resp>
    where
        Req: Describe + Clone,
        Resp: Describe,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let ep = &self.inner.endpoints[i];
        let timeout = self.inner.request_timeout;
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(timeout, call(ep.channel.clone(), self.request(msg.clone())))
                .await;
        let latency = started.elapsed();
        let record = |response: String, status: String| WireRecord {
            request: msg.describe(),
            response,
            status,
            latency: Some(latency),
            ..WireRecord::new(&ep.url, path, WireKind::Unary)
        };
        match outcome {
            Ok(Ok(resp)) => {
                let resp = resp.into_inner();
                self.audit(|| record(resp.describe(), "OK".to_owned()));
                self.answered(i);
                Attempt::Answered(resp)
            }
            Ok(Err(status)) => {
                self.audit(|| record(String::new(), status_text(&status)));
                Attempt::Failed(classify(&ep.url, path, &status))
            }
            Err(_) => {
                self.audit(|| record(String::new(), format!("timeout after {timeout:?}")));
                Attempt::TimedOut
            }
        }
    }

    /// Endpoint `i` gave no answer in time. The call may have been applied:
    /// only a [`Retry::Safe`] call goes on to the next endpoint.
    fn after_timeout(
        &self,
        i: usize,
        path: &'static str,
        retry: Retry,
        way: &mut Failover,
    ) -> Result<()> {
        let ep = &self.inner.endpoints[i];
        let timeout = self.inner.request_timeout;
        ep.mark_down();
        if retry == Retry::IfNotSent {
            return Err(Error::Timeout {
                endpoint: ep.url.clone(),
                path,
                after: timeout,
            });
        }
        way.timed_out(&ep.url, format!("no answer within {timeout:?}"));
        Ok(())
    }

    /// What a failed attempt on endpoint `i` means for the call: `Ok` to go
    /// on with the next endpoint, or the call's final error. A call that
    /// may have reached etcd goes on only when it is [`Retry::Safe`].
    async fn after_failure(
        &self,
        i: usize,
        path: &'static str,
        retry: Retry,
        failure: Failure,
        way: &mut Failover,
    ) -> Result<()> {
        let ep = &self.inner.endpoints[i];
        match failure {
            Failure::Fatal(e) => return Err(e),
            Failure::Reauth if path == paths::AUTHENTICATE => {
                return Err(Error::AuthFailed {
                    endpoint: ep.url.clone(),
                    message: "etcd refused to authenticate (invalid auth token)".into(),
                });
            }
            Failure::Reauth => {
                self.reauth_once(&mut way.reauthed, &ep.url).await?;
                way.retry_now(i);
            }
            Failure::NotSent(why) => {
                ep.mark_down();
                way.failed(&ep.url, why);
                way.retry_later(i);
            }
            Failure::TlsCutOff(why) => {
                ep.mark_down();
                way.cut_off(&ep.url, why);
                way.retry_later(i);
            }
            Failure::Busy(why) => way.busy(&ep.url, i, why),
            Failure::NotEtcd(why) => {
                ep.mark_down();
                if retry == Retry::IfNotSent {
                    return Err(Error::NotEtcd {
                        endpoint: ep.url.clone(),
                        detail: why,
                    });
                }
                way.not_etcd(&ep.url, why);
            }
            Failure::Lost(why) => {
                ep.mark_down();
                if retry == Retry::IfNotSent {
                    return Err(Error::Ambiguous {
                        endpoint: ep.url.clone(),
                        path,
                        detail: why,
                    });
                }
                way.failed(&ep.url, why);
            }
        }
        Ok(())
    }
}
