//! locker's errors as Python exceptions: one class per `locker::Error`
//! variant, under a base `LockerError`, with two groups that follow the
//! crate's `is_lost` and `is_connectivity`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    locker,
    LockerError,
    PyException,
    "Base of every error locker raises."
);
create_exception!(
    locker,
    LostError,
    LockerError,
    "The lock, the leadership or their lease is gone: stop the work done under it."
);
create_exception!(
    locker,
    ConnectivityError,
    LockerError,
    "etcd could not be reached or did not answer in time; it may heal by itself."
);
create_exception!(
    locker,
    InvalidArgument,
    LockerError,
    "An argument was rejected before anything was sent."
);
create_exception!(
    locker,
    InvalidEndpoint,
    LockerError,
    "An endpoint could not be parsed."
);
create_exception!(
    locker,
    Unreachable,
    ConnectivityError,
    "No endpoint could be reached; every one was tried."
);
create_exception!(
    locker,
    Timeout,
    ConnectivityError,
    "A call got no answer within the request timeout."
);
create_exception!(
    locker,
    Ambiguous,
    ConnectivityError,
    "A write was sent but its answer was lost: it may or may not have been applied."
);
create_exception!(
    locker,
    NotEtcd,
    LockerError,
    "The server at the endpoint is not an etcd v3 gRPC server."
);
create_exception!(
    locker,
    EtcdError,
    LockerError,
    "etcd answered with an error status."
);
create_exception!(
    locker,
    TlsError,
    LockerError,
    "The TLS handshake with an endpoint failed."
);
create_exception!(
    locker,
    CertFile,
    LockerError,
    "A certificate or key file could not be used."
);
create_exception!(
    locker,
    AuthFailed,
    LockerError,
    "The user name or password was rejected."
);
create_exception!(
    locker,
    PermissionDenied,
    LockerError,
    "The user lacks a permission the operation needs."
);
create_exception!(
    locker,
    ProtocolError,
    LockerError,
    "An answer from the server broke the protocol."
);
create_exception!(
    locker,
    LeaseExpired,
    LostError,
    "The lease is gone or can no longer be assumed alive."
);
create_exception!(
    locker,
    LockLost,
    LostError,
    "The lock is no longer held: its key is gone or a newer holder's."
);
create_exception!(
    locker,
    NotLeader,
    LostError,
    "This candidate is not the leader any more."
);
create_exception!(
    locker,
    LimitMismatch,
    LockerError,
    "A semaphore was asked for with another number of permits than its users agreed on."
);
create_exception!(
    locker,
    AcquireTimeout,
    LockerError,
    "The lock was not acquired within the timeout; nothing is left queued."
);
create_exception!(
    locker,
    AlreadyLocked,
    LockerError,
    "This session already holds or waits for this name."
);
create_exception!(locker, SessionClosed, LockerError, "The session is closed.");
create_exception!(
    locker,
    WatchCanceled,
    LockerError,
    "etcd cancelled a watch that cannot resume."
);
create_exception!(
    locker,
    Released,
    LockerError,
    "The guard was released (or resigned) already: nothing was sent."
);
create_exception!(
    locker,
    LockHeld,
    LockerError,
    "A try_lock found the lock held; the attribute `holder` says by whom."
);

/// The exception for `e`, with the crate's message.
pub(crate) fn to_py(e: locker::Error) -> PyErr {
    use locker::Error as E;
    let msg = e.to_string();
    match e {
        E::InvalidArgument { .. } => InvalidArgument::new_err(msg),
        E::InvalidEndpoint { .. } => InvalidEndpoint::new_err(msg),
        E::Unreachable { .. } => Unreachable::new_err(msg),
        E::NotEtcd { .. } => NotEtcd::new_err(msg),
        E::Timeout { .. } => Timeout::new_err(msg),
        E::Ambiguous { .. } => Ambiguous::new_err(msg),
        E::Etcd { .. } => EtcdError::new_err(msg),
        E::Tls { .. } => TlsError::new_err(msg),
        E::CertFile { .. } => CertFile::new_err(msg),
        E::AuthFailed { .. } => AuthFailed::new_err(msg),
        E::PermissionDenied { .. } => PermissionDenied::new_err(msg),
        E::Protocol { .. } => ProtocolError::new_err(msg),
        E::LeaseExpired { .. } => LeaseExpired::new_err(msg),
        E::LockLost { .. } => LockLost::new_err(msg),
        E::NotLeader { .. } => NotLeader::new_err(msg),
        E::LimitMismatch { .. } => LimitMismatch::new_err(msg),
        E::AcquireTimeout { .. } => AcquireTimeout::new_err(msg),
        E::AlreadyLocked { .. } => AlreadyLocked::new_err(msg),
        E::SessionClosed => SessionClosed::new_err(msg),
        E::WatchCanceled { .. } => WatchCanceled::new_err(msg),
        _ => LockerError::new_err(msg),
    }
}

/// The crate's results as Python's.
pub(crate) trait Raise<T> {
    fn raise(self) -> PyResult<T>;
}

impl<T> Raise<T> for locker::Result<T> {
    fn raise(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Registers every exception class on the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    macro_rules! add {
        ($($t:ident),*) => { $( m.add(stringify!($t), py.get_type::<$t>())?; )* };
    }
    add!(
        LockerError,
        LostError,
        ConnectivityError,
        InvalidArgument,
        InvalidEndpoint,
        Unreachable,
        Timeout,
        Ambiguous,
        NotEtcd,
        EtcdError,
        TlsError,
        CertFile,
        AuthFailed,
        PermissionDenied,
        ProtocolError,
        LeaseExpired,
        LockLost,
        NotLeader,
        LimitMismatch,
        AcquireTimeout,
        AlreadyLocked,
        SessionClosed,
        WatchCanceled,
        Released,
        LockHeld
    );
    Ok(())
}
