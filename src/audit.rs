//! One record per wire call, and the sink users plug in to see them.
//!
//! Every unary RPC locker makes produces one [`WireRecord`] with
//! [`WireKind::Unary`]; every message sent or received on a stream
//! (lease keepalive, watch) produces one record with [`WireKind::StreamSend`]
//! or [`WireKind::StreamRecv`], and opening a stream produces one
//! [`WireKind::StreamOpen`]. Passwords and tokens never appear in a record.
//!
//! Register a sink with [`ClientBuilder::audit`](crate::ClientBuilder::audit):
//!
//! ```
//! # async fn f() -> locker::Result<()> {
//! let client = locker::Client::builder()
//!     .endpoints(["127.0.0.1:2379"])
//!     .audit(|r: &locker::WireRecord| eprintln!("{r}"))
//!     .connect()
//!     .await?;
//! # Ok(()) }
//! ```

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use crate::types::escape;
use crate::wire::etcdserverpb as pb;
use crate::wire::mvccpb;

/// What kind of wire traffic a record describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum WireKind {
    /// A unary call: one request, one answer (or an error).
    Unary,
    /// A stream was opened.
    StreamOpen,
    /// A message sent on a stream.
    StreamSend,
    /// A message received on a stream.
    StreamRecv,
    /// A stream ended (error or end of stream).
    StreamClose,
}

/// One wire call or stream message.
#[derive(Clone, Debug)]
pub struct WireRecord {
    /// The endpoint the call went to, e.g. `http://127.0.0.1:2379`.
    pub endpoint: String,
    /// The gRPC path, e.g. `/etcdserverpb.KV/Txn`.
    pub path: &'static str,
    /// Unary call or stream message.
    pub kind: WireKind,
    /// Summary of the request (empty for a received stream message).
    pub request: String,
    /// Summary of the answer (empty for a sent stream message or an error).
    pub response: String,
    /// `OK`, or the error status code and message.
    pub status: String,
    /// Time from sending to the answer, for unary calls.
    pub latency: Option<Duration>,
}

impl WireRecord {
    /// A record of `kind` with empty summaries, status `OK` and no latency,
    /// for the call sites to fill in.
    pub(crate) fn new(endpoint: &str, path: &'static str, kind: WireKind) -> WireRecord {
        WireRecord {
            endpoint: endpoint.to_owned(),
            path,
            kind,
            request: String::new(),
            response: String::new(),
            status: "OK".to_owned(),
            latency: None,
        }
    }
}

impl fmt::Display for WireRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            WireKind::Unary => "call",
            WireKind::StreamOpen => "open",
            WireKind::StreamSend => "send",
            WireKind::StreamRecv => "recv",
            WireKind::StreamClose => "close",
        };
        write!(f, "wire {kind} {} {}", self.endpoint, self.path)?;
        if !self.request.is_empty() {
            write!(f, " req{{{}}}", self.request)?;
        }
        if !self.response.is_empty() {
            write!(f, " resp{{{}}}", self.response)?;
        }
        write!(f, " {}", self.status)?;
        if let Some(l) = self.latency {
            write!(f, " {:.3}ms", l.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

/// Receives every [`WireRecord`]. Implemented for every
/// `Fn(&WireRecord) + Send + Sync`. Called inline on the calling task: keep
/// it quick (push to a channel or a buffer).
pub trait AuditSink: Send + Sync + 'static {
    /// Called once per record.
    fn record(&self, record: &WireRecord);
}

impl<F: Fn(&WireRecord) + Send + Sync + 'static> AuditSink for F {
    fn record(&self, record: &WireRecord) {
        self(record)
    }
}

pub(crate) type Sink = Arc<dyn AuditSink>;

/// A faithful, printable summary of a wire message.
pub(crate) trait Describe {
    fn describe(&self) -> String;
}

fn key(k: &[u8]) -> String {
    format!("\"{}\"", escape(k))
}

fn range_of(k: &[u8], end: &[u8]) -> String {
    if end.is_empty() {
        key(k)
    } else if end == [0] {
        format!("{}..", key(k))
    } else {
        format!("{}..{}", key(k), key(end))
    }
}

fn rev(h: &Option<pb::ResponseHeader>) -> String {
    match h {
        Some(h) => format!("rev={}", h.revision),
        None => "rev=?".to_owned(),
    }
}

fn kvs(kvs: &[mvccpb::KeyValue]) -> String {
    let mut s = String::from("[");
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(
            s,
            "{} create={} mod={}",
            key(&kv.key),
            kv.create_revision,
            kv.mod_revision
        );
        if kv.lease != 0 {
            let _ = write!(s, " lease={:x}", kv.lease);
        }
    }
    s.push(']');
    s
}

impl Describe for pb::RangeRequest {
    fn describe(&self) -> String {
        let mut s = format!("range {}", range_of(&self.key, &self.range_end));
        if self.sort_order != 0 {
            let order = if self.sort_order == 1 { "asc" } else { "desc" };
            let target = match self.sort_target {
                0 => "key",
                1 => "version",
                2 => "create",
                3 => "mod",
                _ => "value",
            };
            let _ = write!(s, " sort={target}:{order}");
        }
        if self.limit != 0 {
            let _ = write!(s, " limit={}", self.limit);
        }
        if self.revision != 0 {
            let _ = write!(s, " at_rev={}", self.revision);
        }
        if self.max_create_revision != 0 {
            let _ = write!(s, " max_create={}", self.max_create_revision);
        }
        if self.serializable {
            s.push_str(" serializable");
        }
        if self.keys_only {
            s.push_str(" keys_only");
        }
        if self.count_only {
            s.push_str(" count_only");
        }
        s
    }
}

impl Describe for pb::RangeResponse {
    fn describe(&self) -> String {
        format!(
            "{} count={} kvs={}",
            rev(&self.header),
            self.count,
            kvs(&self.kvs)
        )
    }
}

impl Describe for pb::PutRequest {
    fn describe(&self) -> String {
        let mut s = format!("put {} value_len={}", key(&self.key), self.value.len());
        if self.lease != 0 {
            let _ = write!(s, " lease={:x}", self.lease);
        }
        if self.prev_kv {
            s.push_str(" prev_kv");
        }
        s
    }
}

impl Describe for pb::PutResponse {
    fn describe(&self) -> String {
        match &self.prev_kv {
            Some(prev) => format!(
                "{} prev={}",
                rev(&self.header),
                kvs(std::slice::from_ref(prev))
            ),
            None => rev(&self.header),
        }
    }
}

impl Describe for pb::DeleteRangeRequest {
    fn describe(&self) -> String {
        format!("delete {}", range_of(&self.key, &self.range_end))
    }
}

impl Describe for pb::DeleteRangeResponse {
    fn describe(&self) -> String {
        format!("{} deleted={}", rev(&self.header), self.deleted)
    }
}

fn compare(c: &pb::Compare) -> String {
    use pb::compare::TargetUnion as T;
    let op = match c.result {
        0 => "==",
        1 => ">",
        2 => "<",
        _ => "!=",
    };
    let (target, val) = match &c.target_union {
        Some(T::Version(v)) => ("version", v.to_string()),
        Some(T::CreateRevision(v)) => ("create", v.to_string()),
        Some(T::ModRevision(v)) => ("mod", v.to_string()),
        Some(T::Value(v)) => ("value", format!("\"{}\"", escape(v))),
        Some(T::Lease(v)) => ("lease", format!("{v:x}")),
        None => ("?", String::new()),
    };
    format!("{target}({}) {op} {val}", range_of(&c.key, &c.range_end))
}

fn ops(ops: &[pb::RequestOp]) -> String {
    use pb::request_op::Request as R;
    let parts: Vec<String> = ops
        .iter()
        .map(|op| match &op.request {
            Some(R::RequestRange(r)) => r.describe(),
            Some(R::RequestPut(r)) => r.describe(),
            Some(R::RequestDeleteRange(r)) => r.describe(),
            Some(R::RequestTxn(r)) => r.describe(),
            None => "?".to_owned(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

impl Describe for pb::TxnRequest {
    fn describe(&self) -> String {
        let cmps: Vec<String> = self.compare.iter().map(compare).collect();
        format!(
            "txn if [{}] then {} else {}",
            cmps.join(", "),
            ops(&self.success),
            ops(&self.failure)
        )
    }
}

impl Describe for pb::TxnResponse {
    fn describe(&self) -> String {
        use pb::response_op::Response as R;
        let parts: Vec<String> = self
            .responses
            .iter()
            .map(|r| match &r.response {
                Some(R::ResponseRange(r)) => format!("range count={} kvs={}", r.count, kvs(&r.kvs)),
                Some(R::ResponsePut(r)) => match &r.prev_kv {
                    Some(prev) => format!("put prev={}", kvs(std::slice::from_ref(prev))),
                    None => "put".to_owned(),
                },
                Some(R::ResponseDeleteRange(r)) => format!("delete deleted={}", r.deleted),
                Some(R::ResponseTxn(r)) => format!("txn {{{}}}", r.describe()),
                None => "?".to_owned(),
            })
            .collect();
        format!(
            "{} succeeded={} [{}]",
            rev(&self.header),
            self.succeeded,
            parts.join(", ")
        )
    }
}

impl Describe for pb::LeaseGrantRequest {
    fn describe(&self) -> String {
        if self.id == 0 {
            format!("grant ttl={}s", self.ttl)
        } else {
            format!("grant ttl={}s id={:x}", self.ttl, self.id)
        }
    }
}

impl Describe for pb::LeaseGrantResponse {
    fn describe(&self) -> String {
        format!("{} id={:x} ttl={}s", rev(&self.header), self.id, self.ttl)
    }
}

impl Describe for pb::LeaseRevokeRequest {
    fn describe(&self) -> String {
        format!("revoke id={:x}", self.id)
    }
}

impl Describe for pb::LeaseRevokeResponse {
    fn describe(&self) -> String {
        rev(&self.header)
    }
}

impl Describe for pb::LeaseKeepAliveRequest {
    fn describe(&self) -> String {
        format!("keepalive id={:x}", self.id)
    }
}

impl Describe for pb::LeaseKeepAliveResponse {
    fn describe(&self) -> String {
        format!("{} id={:x} ttl={}s", rev(&self.header), self.id, self.ttl)
    }
}

impl Describe for pb::LeaseTimeToLiveRequest {
    fn describe(&self) -> String {
        format!("ttl id={:x}", self.id)
    }
}

impl Describe for pb::LeaseTimeToLiveResponse {
    fn describe(&self) -> String {
        format!(
            "{} id={:x} ttl={}s granted={}s",
            rev(&self.header),
            self.id,
            self.ttl,
            self.granted_ttl
        )
    }
}

impl Describe for pb::StatusRequest {
    fn describe(&self) -> String {
        "status".to_owned()
    }
}

impl Describe for pb::StatusResponse {
    fn describe(&self) -> String {
        format!(
            "{} version={} member={:x} leader={:x}",
            rev(&self.header),
            self.version,
            self.header.as_ref().map_or(0, |h| h.member_id),
            self.leader
        )
    }
}

impl Describe for pb::AuthenticateRequest {
    fn describe(&self) -> String {
        // The password is a secret: never described.
        format!("authenticate user=\"{}\"", escape(self.name.as_bytes()))
    }
}

impl Describe for pb::AuthenticateResponse {
    fn describe(&self) -> String {
        // The token is a secret: never described.
        format!("{} token=<redacted>", rev(&self.header))
    }
}

impl Describe for pb::WatchRequest {
    fn describe(&self) -> String {
        use pb::watch_request::RequestUnion as U;
        match &self.request_union {
            Some(U::CreateRequest(c)) => {
                let mut s = format!("watch create {}", range_of(&c.key, &c.range_end));
                if c.start_revision != 0 {
                    let _ = write!(s, " start_rev={}", c.start_revision);
                }
                if c.prev_kv {
                    s.push_str(" prev_kv");
                }
                if c.progress_notify {
                    s.push_str(" progress_notify");
                }
                s
            }
            Some(U::CancelRequest(c)) => format!("watch cancel id={}", c.watch_id),
            Some(U::ProgressRequest(_)) => "watch progress".to_owned(),
            None => "watch ?".to_owned(),
        }
    }
}

impl Describe for pb::WatchResponse {
    fn describe(&self) -> String {
        let mut s = format!("{} watch_id={}", rev(&self.header), self.watch_id);
        if self.created {
            s.push_str(" created");
        }
        if self.canceled {
            let _ = write!(
                s,
                " canceled reason=\"{}\"",
                escape(self.cancel_reason.as_bytes())
            );
        }
        if self.compact_revision != 0 {
            let _ = write!(s, " compact_rev={}", self.compact_revision);
        }
        if !self.events.is_empty() {
            let evs: Vec<String> = self
                .events
                .iter()
                .map(|e| {
                    let kv = e.kv.clone().unwrap_or_default();
                    let t = if e.r#type == 1 { "delete" } else { "put" };
                    format!("{t} {} mod={}", key(&kv.key), kv.mod_revision)
                })
                .collect();
            let _ = write!(s, " events=[{}]", evs.join(", "));
        }
        s
    }
}
