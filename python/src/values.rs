//! Conversions of arguments and of the crate's small types.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;

use crate::errors::InvalidArgument;

/// A value or key given as `str` (UTF-8) or `bytes`.
#[derive(FromPyObject)]
pub(crate) enum Bytes {
    Text(String),
    Raw(PyBackedBytes),
}

impl Bytes {
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Bytes::Text(s) => s.into_bytes(),
            Bytes::Raw(b) => b.to_vec(),
        }
    }
}

/// Seconds as a `Duration`; refuses negative, infinite and NaN values.
pub(crate) fn seconds(what: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        InvalidArgument::new_err(format!(
            "invalid argument: {what} must be a finite number of seconds >= 0, not {secs}"
        ))
    })
}

pub(crate) fn opt_seconds(what: &str, secs: Option<f64>) -> PyResult<Option<Duration>> {
    secs.map(|s| seconds(what, s)).transpose()
}

/// Why a lease is lost, as the strings the stubs name.
pub(crate) fn reason(r: locker::LostReason) -> &'static str {
    match r {
        locker::LostReason::Expired => "expired",
        locker::LostReason::Unreachable => "unreachable",
        locker::LostReason::Closed => "closed",
        locker::LostReason::KeyDeleted => "key_deleted",
        _ => "lost",
    }
}

/// Who holds a lock: the key at the head of the name's queue.
#[pyclass(module = "locker", frozen, get_all)]
#[derive(Clone)]
pub(crate) struct Holder {
    /// The lock name.
    name: String,
    /// The holder's key, `{name}/{lease hex}`.
    key: String,
    /// The value the holder stored (by default `host:pid`).
    value: Vec<u8>,
    /// The holder's lease id.
    lease: i64,
    /// The holder's fencing token (its key's create revision).
    fencing_token: i64,
    /// Seconds left on the holder's lease when it was read, if known.
    ttl_left: Option<f64>,
    /// "exclusive", "shared" (a reader) or "permit" (a semaphore holder);
    /// None where the crate does not say (holder, leader, events).
    mode: Option<&'static str>,
}

#[pymethods]
impl Holder {
    /// The value as text (undecodable bytes replaced).
    #[getter]
    fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }

    fn __repr__(&self) -> String {
        format!(
            "Holder(key={:?}, value={:?}, lease={:x}, fencing_token={})",
            self.key,
            self.value_str(),
            self.lease,
            self.fencing_token
        )
    }
}

impl From<locker::Holder> for Holder {
    fn from(h: locker::Holder) -> Self {
        Holder {
            name: h.name,
            key: h.key,
            value: h.value,
            lease: h.lease.0,
            fencing_token: h.fencing_token.0,
            ttl_left: h.ttl_left.map(|d| d.as_secs_f64()),
            mode: None,
        }
    }
}

impl From<locker::Contender> for Holder {
    fn from(c: locker::Contender) -> Self {
        let mode = match c.mode {
            locker::HoldMode::Exclusive => "exclusive",
            locker::HoldMode::Shared => "shared",
            locker::HoldMode::Permit => "permit",
            _ => "other",
        };
        Holder {
            mode: Some(mode),
            ..Holder::from(c.holder)
        }
    }
}

/// Everyone in a name's queue: who holds, who waits, in arrival order.
#[pyclass(module = "locker", frozen, get_all)]
pub(crate) struct Holders {
    /// The name.
    name: String,
    /// The keys that hold, oldest first.
    holders: Vec<Holder>,
    /// The keys that wait, in the order they will be served.
    waiters: Vec<Holder>,
    /// A semaphore's agreed number of permits, when the name has one.
    permits: Option<u32>,
    /// The revision the answer holds at.
    revision: i64,
}

#[pymethods]
impl Holders {
    fn __repr__(&self) -> String {
        format!(
            "Holders(name={:?}, holders={}, waiters={}, permits={:?}, revision={})",
            self.name,
            self.holders.len(),
            self.waiters.len(),
            self.permits,
            self.revision
        )
    }
}

impl From<locker::Holders> for Holders {
    fn from(h: locker::Holders) -> Self {
        Holders {
            name: h.name,
            holders: h.holders.into_iter().map(Holder::from).collect(),
            waiters: h.waiters.into_iter().map(Holder::from).collect(),
            permits: h.permits,
            revision: h.revision.0,
        }
    }
}

/// A change of a lock's state (`Client.watch_lock`), or of an election
/// (`Client.observe`). `kind` says which; the other fields are set as the
/// kind has them, None otherwise.
///
/// Lock kinds: "snapshot" (the first event; `holder` may be None),
/// "acquired", "released". Election kinds: "leader", "proclaimed",
/// "no_leader", "resynced".
#[pyclass(module = "locker", frozen, get_all)]
pub(crate) struct Event {
    kind: &'static str,
    revision: i64,
    /// The holder (lock events).
    holder: Option<Holder>,
    /// The leader's key (election events).
    key: Option<String>,
    /// The leader's value (election events).
    value: Option<Vec<u8>>,
    /// The leader's lease (the "leader" event).
    lease: Option<i64>,
    /// The leader's fencing token (election events).
    token: Option<i64>,
}

#[pymethods]
impl Event {
    fn __repr__(&self) -> String {
        let mut s = format!("Event(kind={:?}, revision={}", self.kind, self.revision);
        if let Some(h) = &self.holder {
            s += &format!(", holder={}", h.__repr__());
        }
        if let Some(k) = &self.key {
            s += &format!(", key={k:?}");
        }
        if let Some(v) = &self.value {
            s += &format!(", value={:?}", String::from_utf8_lossy(v));
        }
        s + ")"
    }
}

impl Event {
    fn bare(kind: &'static str, revision: locker::Revision) -> Event {
        Event {
            kind,
            revision: revision.0,
            holder: None,
            key: None,
            value: None,
            lease: None,
            token: None,
        }
    }
}

impl From<locker::LockEvent> for Event {
    fn from(e: locker::LockEvent) -> Self {
        use locker::LockEvent as L;
        let (kind, holder, revision) = match e {
            L::Snapshot { holder, revision } => ("snapshot", holder, revision),
            L::Acquired { holder, revision } => ("acquired", Some(holder), revision),
            L::Released { holder, revision } => ("released", Some(holder), revision),
            _ => ("other", None, locker::Revision(0)),
        };
        Event {
            holder: holder.map(Holder::from),
            ..Event::bare(kind, revision)
        }
    }
}

impl From<locker::ElectionEvent> for Event {
    fn from(e: locker::ElectionEvent) -> Self {
        use locker::ElectionEvent as E;
        match e {
            E::Leader {
                key,
                value,
                lease,
                token,
                revision,
            } => Event {
                key: Some(key),
                value: Some(value),
                lease: Some(lease.0),
                token: Some(token.0),
                ..Event::bare("leader", revision)
            },
            E::Proclaimed {
                key,
                value,
                token,
                revision,
            } => Event {
                key: Some(key),
                value: Some(value),
                token: Some(token.0),
                ..Event::bare("proclaimed", revision)
            },
            E::NoLeader { revision } => Event::bare("no_leader", revision),
            E::Resynced { revision } => Event::bare("resynced", revision),
            _ => Event::bare("other", locker::Revision(0)),
        }
    }
}
