//! [`Client::open_stream`] and [`BiStream`]: bidirectional streams, with an
//! audit record per message.

use std::future::Future;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream as ReceiverStream;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use super::Client;
use super::failover::Failover;
use super::failure::{Failure, classify, status_text};
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
        let mut way = Failover::new(self.order());
        while let Some(i) = way.next().await {
            let failure = match self.open_on(i, path, &first, &call).await {
                Ok(stream) => return Ok(stream),
                Err(failure) => failure,
            };
            // Opening a stream is safe to repeat (its first message is a
            // watch request or a keepalive): every failure that is not
            // final goes on to the next endpoint.
            let ep = &self.inner.endpoints[i];
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Reauth => {
                    self.reauth_once(&mut way.reauthed, &ep.url).await?;
                    way.retry_now(i);
                }
                Failure::TlsCutOff(why) => {
                    ep.mark_down();
                    way.cut_off(&ep.url, why);
                }
                Failure::NotSent(why)
                | Failure::Busy(why)
                | Failure::Lost(why)
                | Failure::NotEtcd(why) => {
                    ep.mark_down();
                    way.failed(&ep.url, why);
                }
            }
        }
        Err(way.stream_error())
    }

    /// One attempt to open the stream on endpoint `i`, under the request
    /// timeout, with its audit records (the open and the first message).
    /// An endpoint that accepts it becomes the preferred one.
    async fn open_on<Req, Resp, F, Fut>(
        &self,
        i: usize,
        path: &'static str,
        first: &impl Fn() -> Req,
        call: &F,
    ) -> std::result::Result<BiStream<Req, Resp>, Failure>
    where
        Req: Describe + Send + 'static,
        Resp: Describe,
        F: Fn(Channel, tonic::Request<ReceiverStream<Req>>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<tonic::Streaming<Resp>>, Status>>,
    {
        let ep = &self.inner.endpoints[i];
        let timeout = self.inner.request_timeout;
        let (tx, req, summary) = self.stream_request(first());
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
        match outcome {
            Ok(Ok(resp)) => {
                self.answered(i);
                Ok(BiStream {
                    client: self.clone(),
                    endpoint: ep.url.clone(),
                    path,
                    tx,
                    rx: resp.into_inner(),
                })
            }
            Ok(Err(status)) => Err(classify(&ep.url, path, &status)),
            Err(_) => Err(Failure::Lost(format!("no answer within {timeout:?}"))),
        }
    }

    /// A stream's request, with `msg` already queued as its first message;
    /// the sender for the next ones, and `msg` as audit records show it.
    fn stream_request<Req: Describe>(
        &self,
        msg: Req,
    ) -> (
        mpsc::UnboundedSender<Req>,
        tonic::Request<ReceiverStream<Req>>,
        String,
    ) {
        // Unbounded: a sender that waited for room while not reading its
        // answers could stall both sides (etcd stops reading a stream whose
        // answers are not read). What is queued is locker's own requests.
        let (tx, rx) = mpsc::unbounded_channel::<Req>();
        let summary = msg.describe();
        // The first message goes in before the call: etcd answers a
        // stream's headers only once it has something to say.
        let _ = tx.send(msg);
        let mut req = self.request(ReceiverStream::new(rx));
        // Ask etcd to refuse, and later cancel, the stream when this
        // member has no leader: a watch or keepalive there would never
        // hear of the cluster's changes.
        req.metadata_mut()
            .insert("hasleader", AsciiMetadataValue::from_static("true"));
        (tx, req, summary)
    }
}

/// An open bidirectional stream, with an audit record per message.
pub(crate) struct BiStream<Req, Resp> {
    client: Client,
    endpoint: String,
    path: &'static str,
    tx: mpsc::UnboundedSender<Req>,
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
        self.tx.send(msg).map_err(|_| Error::Ambiguous {
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
                Err(self.broken(&status))
            }
        }
    }

    /// The error for a stream that broke with `status`: whatever was sent
    /// on it may or may not have been applied. The peer answered the open
    /// as etcd, so a break that reads like another protocol (an HTTP/2
    /// frame or protocol error from a connection cut mid-stream) is a
    /// broken connection to retry, not a peer that is not etcd.
    fn broken(&self, status: &Status) -> Error {
        match classify(&self.endpoint, self.path, status) {
            Failure::Fatal(e) => e,
            Failure::NotEtcd(why)
            | Failure::NotSent(why)
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
