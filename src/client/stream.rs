//! [`Client::open_stream`] and [`BiStream`]: bidirectional streams, with an
//! audit record per message.

use std::future::Future;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use super::Client;
use super::failure::{Failure, classify, cut_off_everywhere, status_text};
use crate::audit::{Describe, WireKind, WireRecord};
use crate::error::{Error, Result};

impl Client {
    /// Opens a bidirectional stream on the first endpoint that accepts it,
    /// with `first()` as its first message.
    pub(crate) async fn open_stream<Req, Resp, F, Fut>(
        &self,
        path: &'static str,
        first: impl Fn() -> Req,
        call: F,
    ) -> Result<BiStream<Req, Resp>>
    where
        Req: Describe + Send + 'static,
        Resp: Describe,
        F: Fn(Channel, tonic::Request<ReceiverStream<Req>>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<tonic::Streaming<Resp>>, Status>>,
    {
        let timeout = self.inner.request_timeout;
        let mut attempts = Vec::new();
        let mut reauthed = false;
        let mut cut_offs = 0;
        let mut plan = self.order();
        plan.reverse();
        while let Some(i) = plan.pop() {
            let ep = &self.inner.endpoints[i];
            let (tx, rx) = mpsc::channel::<Req>(64);
            let msg = first();
            let summary = msg.describe();
            // The first message goes in before the call: etcd answers a
            // stream's headers only once it has something to say.
            let _ = tx.try_send(msg);
            let mut req = self.request(ReceiverStream::new(rx));
            // Ask etcd to refuse, and later cancel, the stream when this
            // member has no leader: a watch or keepalive there would never
            // hear of the cluster's changes.
            req.metadata_mut()
                .insert("hasleader", AsciiMetadataValue::from_static("true"));
            let outcome = tokio::time::timeout(timeout, call(ep.channel.clone(), req)).await;
            let status = match &outcome {
                Ok(Ok(_)) => "OK".to_owned(),
                Ok(Err(s)) => status_text(s),
                Err(_) => format!("timeout after {timeout:?}"),
            };
            self.audit(|| WireRecord {
                status,
                ..WireRecord::new(&ep.url, path, WireKind::StreamOpen)
            });
            self.audit(|| WireRecord {
                request: summary,
                ..WireRecord::new(&ep.url, path, WireKind::StreamSend)
            });
            let failure = match outcome {
                Ok(Ok(resp)) => {
                    ep.mark_up();
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return Ok(BiStream {
                        client: self.clone(),
                        endpoint: ep.url.clone(),
                        path,
                        tx,
                        rx: resp.into_inner(),
                    });
                }
                Ok(Err(status)) => classify(&ep.url, path, &status),
                Err(_) => Failure::Lost(format!("no answer within {timeout:?}")),
            };
            drop(tx);
            cut_offs += usize::from(matches!(failure, Failure::TlsCutOff(_)));
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Reauth => {
                    self.reauth_once(&mut reauthed, &ep.url).await?;
                    plan.push(i);
                }
                Failure::NotSent(why)
                | Failure::TlsCutOff(why)
                | Failure::Busy(why)
                | Failure::Lost(why)
                | Failure::NotEtcd(why) => {
                    ep.mark_down();
                    attempts.push((ep.url.clone(), why));
                }
            }
        }
        Err(cut_off_everywhere(&mut attempts, cut_offs).unwrap_or(Error::Unreachable { attempts }))
    }
}

/// An open bidirectional stream, with an audit record per message.
pub(crate) struct BiStream<Req, Resp> {
    client: Client,
    endpoint: String,
    path: &'static str,
    tx: mpsc::Sender<Req>,
    rx: tonic::Streaming<Resp>,
}

impl<Req: Describe, Resp: Describe> BiStream<Req, Resp> {
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Queues a message; fails only when the stream is gone.
    pub(crate) async fn send(&self, msg: Req) -> Result<()> {
        self.client.audit(|| WireRecord {
            request: msg.describe(),
            ..self.record(WireKind::StreamSend)
        });
        self.tx.send(msg).await.map_err(|_| Error::Ambiguous {
            endpoint: self.endpoint.clone(),
            path: self.path,
            detail: "the stream closed".into(),
        })
    }

    /// Next message; `Ok(None)` when the server ended the stream.
    ///
    /// # Cancel safety
    /// Cancel safe (tonic's `Streaming::message` is).
    pub(crate) async fn recv(&mut self) -> Result<Option<Resp>> {
        match self.rx.message().await {
            Ok(Some(m)) => {
                self.client.audit(|| WireRecord {
                    response: m.describe(),
                    ..self.record(WireKind::StreamRecv)
                });
                Ok(Some(m))
            }
            Ok(None) => {
                self.close_record("end of stream".into());
                Ok(None)
            }
            Err(status) => {
                self.close_record(status_text(&status));
                Err(match classify(&self.endpoint, self.path, &status) {
                    Failure::Fatal(e) => e,
                    Failure::NotEtcd(detail) => Error::NotEtcd {
                        endpoint: self.endpoint.clone(),
                        detail,
                    },
                    Failure::NotSent(why)
                    | Failure::TlsCutOff(why)
                    | Failure::Lost(why)
                    | Failure::Busy(why) => Error::Ambiguous {
                        endpoint: self.endpoint.clone(),
                        path: self.path,
                        detail: why,
                    },
                    Failure::Reauth => Error::AuthFailed {
                        endpoint: self.endpoint.clone(),
                        message: status.message().to_owned(),
                    },
                })
            }
        }
    }

    fn record(&self, kind: WireKind) -> WireRecord {
        WireRecord::new(&self.endpoint, self.path, kind)
    }

    fn close_record(&self, status: String) {
        self.client.audit(|| WireRecord {
            status,
            ..self.record(WireKind::StreamClose)
        });
    }
}
