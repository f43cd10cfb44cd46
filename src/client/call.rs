//! [`Client::unary`]: every unary RPC, with its timeout, its failover and
//! an audit record per attempt.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::transport::Channel;

use super::failure::{Failure, classify, cut_off_everywhere, status_text};
use super::{Client, Retry, paths};
use crate::audit::{Describe, WireKind, WireRecord};
use crate::error::{Error, Result};

impl Client {
    /// Sends one unary RPC with timeout, failover, re-authentication and an
    /// audit record per attempt.
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
        let timeout = self.inner.request_timeout;
        let mut attempts: Vec<(String, String)> = Vec::new();
        let mut reauthed = false;
        let mut timeouts = 0;
        let mut not_etcd = 0;
        let mut cut_offs = 0;
        // First round: every endpoint once, healthy ones first. Second
        // round, after a short pause: the endpoints that refused quickly
        // (not reachable, or no leader yet), never one that timed out.
        let mut plan: Vec<usize> = self.order();
        plan.reverse();
        let mut second: Vec<usize> = Vec::new();
        let mut in_second = false;
        loop {
            let Some(i) = plan.pop() else {
                if in_second || second.is_empty() {
                    break;
                }
                in_second = true;
                plan = std::mem::take(&mut second);
                plan.reverse();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let ep = &self.inner.endpoints[i];
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
            let failure = match outcome {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    self.audit(|| record(resp.describe(), "OK".to_owned()));
                    ep.mark_up();
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return Ok(resp);
                }
                Ok(Err(status)) => {
                    self.audit(|| record(String::new(), status_text(&status)));
                    classify(&ep.url, path, &status)
                }
                Err(_) => {
                    self.audit(|| record(String::new(), format!("timeout after {timeout:?}")));
                    if retry == Retry::IfNotSent {
                        ep.mark_down();
                        return Err(Error::Timeout {
                            endpoint: ep.url.clone(),
                            path,
                            after: timeout,
                        });
                    }
                    timeouts += 1;
                    Failure::Lost(format!("no answer within {timeout:?}"))
                }
            };
            cut_offs += usize::from(matches!(failure, Failure::TlsCutOff(_)));
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Reauth if path == paths::AUTHENTICATE => {
                    return Err(Error::AuthFailed {
                        endpoint: ep.url.clone(),
                        message: "etcd refused to authenticate (invalid auth token)".into(),
                    });
                }
                Failure::Reauth => {
                    self.reauth_once(&mut reauthed, &ep.url).await?;
                    plan.push(i);
                }
                Failure::NotSent(why) | Failure::TlsCutOff(why) => {
                    ep.mark_down();
                    attempts.push((ep.url.clone(), why));
                    second.push(i);
                }
                Failure::Busy(why) => {
                    attempts.push((ep.url.clone(), why));
                    second.push(i);
                }
                Failure::NotEtcd(why) => {
                    ep.mark_down();
                    if retry == Retry::IfNotSent {
                        return Err(Error::NotEtcd {
                            endpoint: ep.url.clone(),
                            detail: why,
                        });
                    }
                    not_etcd += 1;
                    attempts.push((ep.url.clone(), why));
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
                    attempts.push((ep.url.clone(), why));
                }
            }
        }
        if let Some(e) = cut_off_everywhere(&mut attempts, cut_offs) {
            return Err(e);
        }
        attempts.dedup();
        if not_etcd > 0 && not_etcd == attempts.len() {
            let (endpoint, detail) = attempts.pop().unwrap_or_default();
            return Err(Error::NotEtcd { endpoint, detail });
        }
        if timeouts > 0 && timeouts == attempts.len() {
            let endpoint = attempts.pop().map(|a| a.0).unwrap_or_default();
            return Err(Error::Timeout {
                endpoint,
                path,
                after: timeout,
            });
        }
        Err(Error::Unreachable { attempts })
    }
}
