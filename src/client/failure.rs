//! What a failed attempt means: a gRPC status, read by its code, by etcd's
//! message text and by the transport errors behind it.

use tonic::{Code, Status};

use crate::error::Error;

/// How one failed attempt is treated.
pub(super) enum Failure {
    /// Nothing reached etcd: try the next endpoint.
    NotSent(String),
    /// An `https` endpoint closed or reset the connection during the TLS
    /// handshake: nothing was sent. A member dying, or a server that does
    /// not speak TLS; when every attempt ends so, the answer is
    /// [`Error::Tls`].
    TlsCutOff(String),
    /// The request may have reached etcd; its answer was lost.
    Lost(String),
    /// etcd refused it before applying it; another endpoint or a later try may work.
    Busy(String),
    /// The auth token expired or is stale: authenticate again and retry.
    Reauth,
    /// The peer does not speak etcd's gRPC (another endpoint may).
    NotEtcd(String),
    /// A final answer.
    Fatal(Error),
}

/// A status as audit records show it: code and message.
pub(super) fn status_text(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Walks an error's sources looking for a failure to connect.
fn connect_failure(status: &Status) -> Option<String> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut connect = false;
    let mut last = None;
    while let Some(e) = src {
        let text = e.to_string();
        if text.contains("tcp connect error")
            || text.contains("error trying to connect")
            || format!("{e:?}").starts_with("ConnectError(")
        {
            connect = true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            ) {
                connect = true;
            }
        }
        last = Some(text);
        src = e.source();
    }
    if status.message().contains("timed out") && status.code() == Code::Cancelled {
        connect = true;
    }
    connect.then(|| last.unwrap_or_else(|| status.message().to_owned()))
}

fn error_chain(status: &Status) -> String {
    let mut s = status.message().to_owned();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = src {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = e.source();
    }
    s
}

/// Text in an error chain (lowercase) saying the TLS handshake failed.
const TLS_FAILURE: &[&str] = &[
    "certificate",
    "invalidcontenttype",
    "corrupt message",
    "handshake",
    "alert",
];

/// A TLS handshake failure somewhere in the error's sources.
fn tls_failure(status: &Status) -> Option<String> {
    let chain = error_chain(status);
    let lower = chain.to_ascii_lowercase();
    TLS_FAILURE
        .iter()
        .any(|t| lower.contains(t))
        .then_some(chain)
}

/// The connection was closed or reset before it was established (so, on
/// an `https` endpoint, during the TLS handshake).
fn cut_off_while_connecting(status: &Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut cut = false;
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            cut |= matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        src = e.source();
    }
    cut && connect_failure(status).is_some()
}

/// What an etcd message says to do, whatever else its status says.
#[derive(Clone, Copy)]
enum Meaning {
    /// The token expired or predates an auth change: authenticate again.
    Reauth,
    /// Bad credentials.
    AuthFailed,
    /// Refused before being applied: another member, or a later try, may
    /// take it.
    Busy,
}

/// The etcd messages that decide what a status means, first match wins:
/// the codes the message comes with, a text it contains, its meaning.
const ETCD_MESSAGES: &[(&[Code], &str, Meaning)] = &[
    (
        &[Code::Unauthenticated],
        "invalid auth token",
        Meaning::Reauth,
    ),
    (
        &[Code::Unauthenticated, Code::FailedPrecondition],
        "revision of auth store is old",
        Meaning::Reauth,
    ),
    (
        &[Code::Unauthenticated, Code::InvalidArgument],
        "authentication failed",
        Meaning::AuthFailed,
    ),
    (&[Code::Unavailable], "no leader", Meaning::Busy),
    (&[Code::Unavailable], "not capable", Meaning::Busy),
    // etcd 3.4 sends this one (its apply lagging commits by 5,000 entries)
    // as Unknown from some calls (LeaseGrant): refused before it was
    // proposed, so safe to send again a little later.
    (
        &[Code::Unavailable, Code::Unknown],
        "too many requests",
        Meaning::Busy,
    ),
];

/// How etcd's own error messages start (gRPC's and proxies' do not).
const ETCD_PREFIXES: &[&str] = &["etcdserver:", "mvcc:", "auth:"];

/// Text in an error chain (lowercase) saying the peer does not speak gRPC
/// over HTTP/2.
const NOT_GRPC: &[&str] = &[
    "http2 error",
    "frame",
    "invalid content-type",
    "protocol error",
    "http status",
    "malformed",
    "bytes remaining on stream",
];

/// What a failed attempt on `endpoint` means, in this order: a TLS failure
/// (`https` only), a failure to connect, a known etcd message, the code.
pub(super) fn classify(endpoint: &str, path: &'static str, status: &Status) -> Failure {
    if endpoint.starts_with("https://") {
        if let Some(failure) = tls_trouble(endpoint, status) {
            return failure;
        }
    }
    if let Some(why) = connect_failure(status) {
        return Failure::NotSent(why);
    }
    if let Some(meaning) = etcd_message(status) {
        return meaning.failure(endpoint, status);
    }
    by_code(endpoint, path, status)
}

/// On an `https` endpoint: a handshake cut off, or a TLS failure.
fn tls_trouble(endpoint: &str, status: &Status) -> Option<Failure> {
    if cut_off_while_connecting(status) {
        return Some(Failure::TlsCutOff(format!(
            "the TLS handshake was cut off ({}); a member going down, or a server that does not speak TLS",
            error_chain(status)
        )));
    }
    let detail = tls_failure(status)?;
    Some(Failure::Fatal(Error::Tls {
        endpoint: endpoint.to_owned(),
        detail,
    }))
}

/// Whether an etcd message (a watch's cancel reason, say, which comes
/// without a status code) says the token must be renewed.
pub(super) fn asks_reauth(message: &str) -> bool {
    ETCD_MESSAGES
        .iter()
        .any(|(_, text, meaning)| matches!(meaning, Meaning::Reauth) && message.contains(text))
}

/// The meaning of the first of [`ETCD_MESSAGES`] the status matches.
fn etcd_message(status: &Status) -> Option<Meaning> {
    let (code, msg) = (status.code(), status.message());
    ETCD_MESSAGES
        .iter()
        .find(|(codes, text, _)| codes.contains(&code) && msg.contains(text))
        .map(|&(_, _, meaning)| meaning)
}

impl Meaning {
    fn failure(self, endpoint: &str, status: &Status) -> Failure {
        match self {
            Meaning::Reauth => Failure::Reauth,
            Meaning::AuthFailed => Failure::Fatal(Error::AuthFailed {
                endpoint: endpoint.to_owned(),
                message: status.message().to_owned(),
            }),
            Meaning::Busy => Failure::Busy(status.message().to_owned()),
        }
    }
}

/// What the status code says, when no known etcd message decided.
fn by_code(endpoint: &str, path: &'static str, status: &Status) -> Failure {
    let msg = status.message();
    let etcd_error = ETCD_PREFIXES.iter().any(|p| msg.starts_with(p));
    let etcd = || {
        Failure::Fatal(Error::Etcd {
            endpoint: endpoint.to_owned(),
            path,
            code: format!("{:?}", status.code()),
            message: msg.to_owned(),
        })
    };
    match status.code() {
        Code::ResourceExhausted | Code::InvalidArgument | Code::OutOfRange => etcd(),
        Code::PermissionDenied => Failure::Fatal(Error::PermissionDenied {
            endpoint: endpoint.to_owned(),
            path,
            message: msg.to_owned(),
        }),
        Code::Unimplemented => {
            Failure::NotEtcd(format!("the server does not implement {path}: {msg}"))
        }
        Code::Unavailable | Code::DeadlineExceeded if etcd_error => {
            // "leader changed", "request timed out": may have been applied.
            Failure::Lost(msg.to_owned())
        }
        _ if etcd_error => etcd(),
        _ => by_transport(status),
    }
}

/// Not etcd's answer: a peer that is not gRPC, or a connection lost.
fn by_transport(status: &Status) -> Failure {
    let chain = error_chain(status);
    let lower = chain.to_ascii_lowercase();
    if NOT_GRPC.iter().any(|t| lower.contains(t)) {
        Failure::NotEtcd(chain)
    } else {
        Failure::Lost(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::paths;

    /// What `classify` makes of a status with no source error, by name.
    fn classified(endpoint: &str, code: Code, msg: &str) -> &'static str {
        match classify(endpoint, paths::TXN, &Status::new(code, msg)) {
            Failure::NotSent(_) => "NotSent",
            Failure::TlsCutOff(_) => "TlsCutOff",
            Failure::Lost(_) => "Lost",
            Failure::Busy(_) => "Busy",
            Failure::Reauth => "Reauth",
            Failure::NotEtcd(_) => "NotEtcd",
            Failure::Fatal(Error::Tls { .. }) => "Tls",
            Failure::Fatal(Error::AuthFailed { .. }) => "AuthFailed",
            Failure::Fatal(Error::Etcd { .. }) => "Etcd",
            Failure::Fatal(Error::PermissionDenied { .. }) => "PermissionDenied",
            Failure::Fatal(_) => "another error",
        }
    }

    #[test]
    fn statuses_are_classified_by_code_and_etcd_text() {
        use Code::*;
        let http = "http://h:1";
        let cases = [
            (Unauthenticated, "etcdserver: invalid auth token", "Reauth"),
            (
                Unauthenticated,
                "auth: revision of auth store is old",
                "Reauth",
            ),
            (
                FailedPrecondition,
                "auth: revision of auth store is old",
                "Reauth",
            ),
            (
                Unauthenticated,
                "etcdserver: authentication failed, invalid user ID or password",
                "AuthFailed",
            ),
            (
                InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
                "AuthFailed",
            ),
            (
                Unauthenticated,
                "etcdserver: invalid auth token; authentication failed",
                "Reauth",
            ),
            (
                InvalidArgument,
                "etcdserver: too many operations in txn request",
                "Etcd",
            ),
            (
                ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
                "Etcd",
            ),
            (
                OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
                "Etcd",
            ),
            (InvalidArgument, "bad request", "Etcd"),
            (
                PermissionDenied,
                "etcdserver: permission denied",
                "PermissionDenied",
            ),
            (Unimplemented, "unknown service etcdserverpb.KV", "NotEtcd"),
            (Unavailable, "etcdserver: no leader", "Busy"),
            (Unavailable, "etcdserver: not capable", "Busy"),
            (Unavailable, "etcdserver: too many requests", "Busy"),
            (Unknown, "etcdserver: too many requests", "Busy"),
            (Unavailable, "no leader", "Busy"),
            (Unavailable, "etcdserver: leader changed", "Lost"),
            (DeadlineExceeded, "etcdserver: request timed out", "Lost"),
            (Unavailable, "mvcc: something", "Lost"),
            (NotFound, "etcdserver: requested lease not found", "Etcd"),
            (FailedPrecondition, "auth: user name not found", "Etcd"),
            (Unauthenticated, "a proxy refused it", "Lost"),
            (Unknown, "h2 protocol error: http2 error", "NotEtcd"),
            (
                Internal,
                "protocol error: invalid compression flag",
                "NotEtcd",
            ),
            (Unknown, "invalid content-type: text/html", "NotEtcd"),
            (Unknown, "unexpected HTTP status code: 404", "NotEtcd"),
            (Unknown, "transport error", "Lost"),
            (Unavailable, "connection reset", "Lost"),
            (Cancelled, "operation timed out", "NotSent"),
            (Unknown, "invalid peer certificate: UnknownIssuer", "Lost"),
        ];
        for (code, msg, want) in cases {
            assert_eq!(classified(http, code, msg), want, "{code:?} {msg:?}");
        }
        let https = "https://h:1";
        assert_eq!(
            classified(https, Unknown, "invalid peer certificate: UnknownIssuer"),
            "Tls"
        );
        assert_eq!(
            classified(https, Unknown, "received fatal alert: BadCertificate"),
            "Tls"
        );
        assert_eq!(
            classified(https, Unavailable, "etcdserver: no leader"),
            "Busy"
        );
    }
}
