//! One error type for the whole crate.

use std::fmt;
use std::time::Duration;

use crate::types::{LeaseId, Revision};

/// The gRPC path prefix of etcd's Maintenance service, whose calls etcd
/// 3.5.28 and later allow only to the root role when auth is enabled.
const MAINTENANCE: &str = "/etcdserverpb.Maintenance/";

/// Result alias used throughout locker.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each variant saying what happened and what
/// to try. Messages never contain passwords or tokens.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// An argument was rejected before anything was sent (for example an
    /// empty lock name or a zero TTL).
    InvalidArgument {
        /// What was wrong, e.g. "lock name must not be empty".
        reason: String,
    },
    /// An endpoint string could not be parsed as `http://host:port`,
    /// `https://host:port` or `host:port`.
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No endpoint could be reached; every one was tried.
    Unreachable {
        /// Each endpoint tried with the reason it failed.
        attempts: Vec<(String, String)>,
    },
    /// The peer at the endpoint answered, but it is not an etcd v3 gRPC
    /// server (plain HTTP/1, TLS mismatch, or a gRPC server without etcd's
    /// services).
    NotEtcd {
        /// The endpoint.
        endpoint: String,
        /// What was seen.
        detail: String,
    },
    /// A call got no answer within the request timeout.
    Timeout {
        /// The endpoint the call went to.
        endpoint: String,
        /// The gRPC path, e.g. `/etcdserverpb.KV/Txn`.
        path: &'static str,
        /// The time waited.
        after: Duration,
    },
    /// A write was sent but its answer was lost (connection broke or timed
    /// out); it may or may not have been applied. locker never retries such
    /// a write blindly.
    Ambiguous {
        /// The endpoint.
        endpoint: String,
        /// The gRPC path.
        path: &'static str,
        /// What happened to the connection.
        detail: String,
    },
    /// etcd answered with an error status.
    Etcd {
        /// The endpoint.
        endpoint: String,
        /// The gRPC path.
        path: &'static str,
        /// The gRPC status code (as its canonical name, e.g. `FailedPrecondition`).
        code: String,
        /// etcd's message, e.g. `etcdserver: requested lease not found`.
        message: String,
    },
    /// The TLS handshake with an endpoint failed (unknown CA, a name that
    /// does not match the certificate, a client certificate refused), or
    /// every endpoint cut the handshake off (TLS spoken to a plaintext
    /// server; one endpoint doing so among others is only skipped).
    Tls {
        /// The endpoint.
        endpoint: String,
        /// What the TLS layer said.
        detail: String,
    },
    /// A certificate or key file could not be used.
    CertFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The user name or password was rejected.
    AuthFailed {
        /// The endpoint.
        endpoint: String,
        /// etcd's message.
        message: String,
    },
    /// The authenticated user lacks a permission the operation needs: on
    /// the keys it reads or writes, or, for a `Maintenance` call such as
    /// [`Client::status`](crate::Client::status), the root role (etcd
    /// 3.5.28 and later).
    PermissionDenied {
        /// The endpoint.
        endpoint: String,
        /// The gRPC path.
        path: &'static str,
        /// etcd's message.
        message: String,
    },
    /// An answer from the server broke the protocol (a missing header, a
    /// transaction answer of the wrong shape, ...).
    Protocol {
        /// The gRPC path.
        path: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The lease no longer exists or can no longer be assumed alive; every
    /// lock on it is lost.
    LeaseExpired {
        /// The lease.
        lease: LeaseId,
    },
    /// The lock is no longer held: its key is gone or belongs to a newer
    /// holder. Work done under the lock must be treated as unprotected.
    LockLost {
        /// The lock key.
        key: String,
    },
    /// This candidate is not the leader any more: its key is gone or
    /// belongs to another campaign. Stop acting as leader.
    NotLeader {
        /// The candidate key.
        key: String,
    },
    /// A semaphore was asked for with another number of permits than the
    /// one its current users agreed on. The limit of a name can change only
    /// while nobody holds or waits.
    LimitMismatch {
        /// The semaphore's name.
        name: String,
        /// The permits this client asked for.
        asked: u32,
        /// The permits the name's users agreed on; `None` when the name is
        /// used by holders that set no limit (a plain lock, another tool).
        found: Option<u32>,
    },
    /// Waiting for the lock took longer than the acquire timeout; nothing is
    /// left queued.
    AcquireTimeout {
        /// The lock name.
        name: String,
        /// The timeout.
        after: Duration,
    },
    /// This session already holds or waits for this lock name.
    AlreadyLocked {
        /// The lock name.
        name: String,
        /// The queue revision of the existing key.
        revision: Revision,
    },
    /// A set of locks names more locks than one etcd transaction can
    /// take: its acquire has two operations per name, and etcd refuses a
    /// transaction of more than `--max-txn-ops` (128 by default).
    TooManyNames {
        /// The distinct names asked for.
        count: usize,
        /// The most names a set may hold, [`MAX_SET_NAMES`](crate::MAX_SET_NAMES).
        limit: usize,
    },
    /// The session was closed; it cannot take new locks.
    SessionClosed,
    /// A watch was cancelled by the server and cannot resume (for example
    /// because its revision was compacted and a resync failed).
    WatchCanceled {
        /// The server's reason.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            reason: reason.into(),
        }
    }

    /// True when the error says the lock, the leadership or their lease is
    /// gone ([`Error::LockLost`], [`Error::LeaseExpired`], [`Error::NotLeader`]).
    pub fn is_lost(&self) -> bool {
        matches!(
            self,
            Error::LockLost { .. } | Error::LeaseExpired { .. } | Error::NotLeader { .. }
        )
    }

    /// True when the failure is one of connectivity (unreachable, timeout,
    /// ambiguous outcome), which may heal by itself.
    pub fn is_connectivity(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::Timeout { .. } | Error::Ambiguous { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LeaseExpired { .. }
            | Error::LockLost { .. }
            | Error::NotLeader { .. }
            | Error::AcquireTimeout { .. }
            | Error::AlreadyLocked { .. }
            | Error::LimitMismatch { .. }
            | Error::TooManyNames { .. }
            | Error::SessionClosed
            | Error::WatchCanceled { .. } => self.fmt_state(f),
            _ => self.fmt_call(f),
        }
    }
}

impl Error {
    /// Errors of a call: its input, the way to etcd, etcd's answer.
    fn fmt_call(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument { reason } => write!(f, "invalid argument: {reason}"),
            Error::InvalidEndpoint { endpoint, reason } => {
                write!(f, "invalid endpoint {endpoint:?}: {reason}")
            }
            Error::Unreachable { attempts } => write!(
                f,
                "no etcd endpoint gave a usable answer: {}; check that etcd runs there and the address is right",
                attempts
                    .iter()
                    .map(|(ep, why)| format!("{ep} ({why})"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Error::NotEtcd { endpoint, detail } => write!(
                f,
                "the server at {endpoint} is not an etcd v3 gRPC endpoint ({detail}); check the address, port and http/https scheme"
            ),
            Error::Timeout {
                endpoint,
                path,
                after,
            } => write!(
                f,
                "{path} to {endpoint} got no answer within {after:?}; the cluster may have lost its leader or the network may be cut"
            ),
            Error::Ambiguous {
                endpoint,
                path,
                detail,
            } => write!(
                f,
                "{path} to {endpoint} was sent but its answer was lost ({detail}); it may or may not have been applied"
            ),
            Error::Etcd {
                endpoint,
                path,
                code,
                message,
            } => write!(f, "{path} to {endpoint} failed: {message} (gRPC {code})"),
            Error::Tls { endpoint, detail } => write!(
                f,
                "TLS with {endpoint} failed: {detail}; check the CA bundle, the server name, the client certificate, and that the server speaks TLS"
            ),
            Error::CertFile { path, reason } => {
                write!(f, "cannot use certificate file {path}: {reason}")
            }
            Error::AuthFailed { endpoint, message } => write!(
                f,
                "etcd at {endpoint} rejected the credentials: {message}; check the user name and password"
            ),
            Error::PermissionDenied {
                endpoint,
                path,
                message,
            } if path.starts_with(MAINTENANCE) => write!(
                f,
                "{path} to {endpoint} was refused: {message}; etcd 3.5.28 and later require the root role for this call (CVE-2026-33413): make it as a user with the root role, or do without it (locks, elections and semaphores need no Maintenance call)"
            ),
            Error::PermissionDenied {
                endpoint,
                path,
                message,
            } => write!(
                f,
                "{path} to {endpoint} was refused: {message}; the user needs read-write permission on the lock's key prefix"
            ),
            Error::Protocol { path, detail } => write!(f, "malformed answer to {path}: {detail}"),
            _ => self.fmt_state(f),
        }
    }

    /// Errors about a lock's, a lease's or a session's state.
    fn fmt_state(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LeaseExpired { lease } => write!(
                f,
                "lease {lease} expired or can no longer be assumed alive; its locks are lost"
            ),
            Error::LockLost { key } => write!(
                f,
                "lock key {key} is no longer held; work done under it is unprotected"
            ),
            Error::AcquireTimeout { name, after } => {
                write!(f, "lock {name:?} was not acquired within {after:?}")
            }
            Error::AlreadyLocked { name, revision } => write!(
                f,
                "this session already holds or waits for lock {name:?} (queue revision {revision}); use another session to queue twice"
            ),
            Error::NotLeader { key } => write!(
                f,
                "not the leader any more: candidate key {key} is gone or not this campaign's; stop acting as leader"
            ),
            Error::LimitMismatch {
                name,
                asked,
                found: Some(found),
            } => write!(
                f,
                "semaphore {name:?} is in use with {found} permits, not {asked}: every user of a name must ask for the same number (it can change only while nobody holds or waits)"
            ),
            Error::LimitMismatch {
                name,
                asked,
                found: None,
            } => write!(
                f,
                "{name:?} is held or awaited by users that set no permit limit (a plain lock?), so it cannot be used as a semaphore of {asked} now"
            ),
            Error::TooManyNames { count, limit } => write!(
                f,
                "a set of {count} lock names; at most {limit} fit in one etcd transaction (2 operations a name, etcd's default --max-txn-ops is 128): split the set"
            ),
            Error::SessionClosed => write!(f, "the session is closed"),
            Error::WatchCanceled { reason } => write!(f, "watch canceled by etcd: {reason}"),
            _ => write!(f, "{self:?}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(path: &'static str) -> String {
        Error::PermissionDenied {
            endpoint: "http://h:1".into(),
            path,
            message: "etcdserver: permission denied".into(),
        }
        .to_string()
    }

    #[test]
    fn a_refusal_names_the_root_role_for_maintenance_and_the_prefix_for_keys() {
        let status = denied("/etcdserverpb.Maintenance/Status");
        assert!(
            status.contains("root role") && status.contains("3.5.28"),
            "{status}"
        );
        assert!(!status.contains("prefix"), "{status}");
        for path in ["/etcdserverpb.KV/Txn", "/etcdserverpb.Watch/Watch"] {
            let text = denied(path);
            assert!(
                text.contains("read-write permission on the lock's key prefix"),
                "{text}"
            );
            assert!(!text.contains("root role"), "{text}");
        }
    }
}
