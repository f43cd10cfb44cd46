"""locker: distributed locks on etcd v3, FIFO, fenced, leased and auditable.

A thin binding of the Rust crate ``locker``: every class wraps one of the
crate's types and every method calls the crate's method of the same name.
``Client`` blocks (with the GIL released; Ctrl-C interrupts a wait and leaves
nothing queued); ``AsyncClient`` returns awaitables (a cancelled task leaves
nothing queued).

    import locker

    client = locker.Client(["http://127.0.0.1:2379"])
    with client.lock("jobs/nightly", ttl=5) as guard:
        print("fencing token", guard.fencing_token)

See docs/python.md in the repository for the whole API.
"""

from ._native import (
    DEFAULT_TTL,
    MAX_PERMITS,
    AcquireTimeout,
    AlreadyLocked,
    Ambiguous,
    AsyncClient,
    AsyncGuard,
    AsyncLeadership,
    AsyncRequest,
    AsyncSemaphore,
    AsyncSession,
    AsyncWatch,
    AuthFailed,
    CertFile,
    Client,
    ConnectivityError,
    EtcdError,
    Event,
    Guard,
    Holder,
    Holders,
    InvalidArgument,
    InvalidEndpoint,
    Leadership,
    LeaseExpired,
    LimitMismatch,
    LockerError,
    LockHeld,
    LockLost,
    LostError,
    NotEtcd,
    NotLeader,
    PermissionDenied,
    ProtocolError,
    Released,
    Semaphore,
    Session,
    SessionClosed,
    Timeout,
    TlsError,
    Unreachable,
    Watch,
    WatchCanceled,
)

__all__ = [
    "DEFAULT_TTL",
    "MAX_PERMITS",
    "AcquireTimeout",
    "AlreadyLocked",
    "Ambiguous",
    "AsyncClient",
    "AsyncGuard",
    "AsyncLeadership",
    "AsyncRequest",
    "AsyncSemaphore",
    "AsyncSession",
    "AsyncWatch",
    "AuthFailed",
    "CertFile",
    "Client",
    "ConnectivityError",
    "EtcdError",
    "Event",
    "Guard",
    "Holder",
    "Holders",
    "InvalidArgument",
    "InvalidEndpoint",
    "Leadership",
    "LeaseExpired",
    "LimitMismatch",
    "LockerError",
    "LockHeld",
    "LockLost",
    "LostError",
    "NotEtcd",
    "NotLeader",
    "PermissionDenied",
    "ProtocolError",
    "Released",
    "Semaphore",
    "Session",
    "SessionClosed",
    "Timeout",
    "TlsError",
    "Unreachable",
    "Watch",
    "WatchCanceled",
]
