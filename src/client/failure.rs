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

/// A TLS handshake failure somewhere in the error's sources.
fn tls_failure(status: &Status) -> Option<String> {
    let chain = error_chain(status);
    let lower = chain.to_ascii_lowercase();
    let tls = [
        "certificate",
        "invalidcontenttype",
        "corrupt message",
        "handshake",
        "alert",
    ];
    tls.iter().any(|t| lower.contains(t)).then_some(chain)
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

pub(super) fn classify(endpoint: &str, path: &'static str, status: &Status) -> Failure {
    let msg = status.message();
    if endpoint.starts_with("https://") {
        if cut_off_while_connecting(status) {
            return Failure::TlsCutOff(format!(
                "the TLS handshake was cut off ({}); a member going down, or a server that does not speak TLS",
                error_chain(status)
            ));
        }
        if let Some(detail) = tls_failure(status) {
            return Failure::Fatal(Error::Tls {
                endpoint: endpoint.to_owned(),
                detail,
            });
        }
    }
    if let Some(why) = connect_failure(status) {
        return Failure::NotSent(why);
    }
    let etcd_error =
        msg.starts_with("etcdserver:") || msg.starts_with("mvcc:") || msg.starts_with("auth:");
    match status.code() {
        Code::Unauthenticated
            if msg.contains("invalid auth token")
                || msg.contains("revision of auth store is old") =>
        {
            Failure::Reauth
        }
        Code::FailedPrecondition if msg.contains("revision of auth store is old") => {
            Failure::Reauth
        }
        Code::Unauthenticated | Code::InvalidArgument if msg.contains("authentication failed") => {
            Failure::Fatal(Error::AuthFailed {
                endpoint: endpoint.to_owned(),
                message: msg.to_owned(),
            })
        }
        Code::ResourceExhausted | Code::InvalidArgument | Code::OutOfRange => {
            Failure::Fatal(Error::Etcd {
                endpoint: endpoint.to_owned(),
                path,
                code: format!("{:?}", status.code()),
                message: msg.to_owned(),
            })
        }
        Code::PermissionDenied => Failure::Fatal(Error::PermissionDenied {
            endpoint: endpoint.to_owned(),
            path,
            message: msg.to_owned(),
        }),
        Code::Unimplemented => {
            Failure::NotEtcd(format!("the server does not implement {path}: {msg}"))
        }
        Code::Unavailable
            if msg.contains("no leader")
                || msg.contains("not capable")
                || msg.contains("too many requests") =>
        {
            Failure::Busy(msg.to_owned())
        }
        Code::Unavailable | Code::DeadlineExceeded if etcd_error => {
            // "leader changed", "request timed out": may have been applied.
            Failure::Lost(msg.to_owned())
        }
        _ if etcd_error => Failure::Fatal(Error::Etcd {
            endpoint: endpoint.to_owned(),
            path,
            code: format!("{:?}", status.code()),
            message: msg.to_owned(),
        }),
        _ => {
            let chain = error_chain(status);
            let lower = chain.to_ascii_lowercase();
            if lower.contains("http2 error")
                || lower.contains("frame")
                || lower.contains("invalid content-type")
                || lower.contains("protocol error")
                || lower.contains("http status")
                || lower.contains("malformed")
                || lower.contains("bytes remaining on stream")
            {
                Failure::NotEtcd(chain)
            } else {
                Failure::Lost(chain)
            }
        }
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
