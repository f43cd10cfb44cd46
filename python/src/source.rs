//! What a lock is requested from (a client, each lock on a lease of its
//! own, or a session, every lock on its lease), and the awaiting of the
//! crate's requests, shared by the sync and asyncio classes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors::{LockHeld, Raise};
use crate::guard::{GuardCore, Held};
use crate::rt::InRuntime;
use crate::values::{Bytes, Holder, opt_seconds};

/// A session as the classes share it: taken out by `close`.
pub(crate) type SharedSession = Arc<InRuntime<Mutex<Option<locker::Session>>>>;

#[derive(Clone)]
pub(crate) enum Source {
    Client(locker::Client),
    Session(SharedSession),
}

/// Which primitive a request is for.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Lock,
    Read,
    Write,
}

impl Source {
    fn session<T>(s: &SharedSession, f: impl FnOnce(&locker::Session) -> T) -> PyResult<T> {
        let guard = s.get().lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(session) => Ok(f(session)),
            None => Err(crate::errors::to_py(locker::Error::SessionClosed)),
        }
    }

    pub(crate) fn lock(&self, kind: Kind, name: String) -> PyResult<locker::LockRequest> {
        let _in = crate::rt::runtime().enter();
        match self {
            Source::Client(c) => Ok(match kind {
                Kind::Lock => c.lock(name),
                Kind::Read => c.read_lock(name),
                Kind::Write => c.write_lock(name),
            }),
            Source::Session(s) => Source::session(s, |s| match kind {
                Kind::Lock => s.lock(name),
                Kind::Read => s.read_lock(name),
                Kind::Write => s.write_lock(name),
            }),
        }
    }

    pub(crate) fn try_lock(&self, kind: Kind, name: String) -> PyResult<locker::TryLockRequest> {
        let _in = crate::rt::runtime().enter();
        match self {
            Source::Client(c) => Ok(match kind {
                Kind::Lock => c.try_lock(name),
                Kind::Read => c.try_read_lock(name),
                Kind::Write => c.try_write_lock(name),
            }),
            Source::Session(s) => Source::session(s, |s| match kind {
                Kind::Lock => s.try_lock(name),
                Kind::Read => s.try_read_lock(name),
                Kind::Write => s.try_write_lock(name),
            }),
        }
    }

    pub(crate) fn campaign(
        &self,
        name: String,
        value: Vec<u8>,
    ) -> PyResult<locker::CampaignRequest> {
        let _in = crate::rt::runtime().enter();
        match self {
            Source::Client(c) => Ok(c.campaign(name, value)),
            Source::Session(s) => Source::session(s, |s| s.campaign(name, value)),
        }
    }

    pub(crate) fn semaphore(&self, name: String, permits: u32) -> PyResult<locker::Semaphore> {
        let _in = crate::rt::runtime().enter();
        match self {
            Source::Client(c) => Ok(c.semaphore(name, permits)),
            Source::Session(s) => Source::session(s, |s| s.semaphore(name, permits)),
        }
    }
}

/// The options of a lock request, checked.
pub(crate) struct Opts {
    ttl: Option<Duration>,
    value: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

impl Opts {
    pub(crate) fn new(
        ttl: Option<f64>,
        value: Option<Bytes>,
        timeout: Option<f64>,
    ) -> PyResult<Opts> {
        Ok(Opts {
            ttl: opt_seconds("ttl", ttl)?,
            value: value.map(Bytes::into_vec),
            timeout: opt_seconds("timeout", timeout)?,
        })
    }
}

/// Waits for the lock of `req`.
pub(crate) async fn acquire(req: locker::LockRequest, o: Opts) -> PyResult<GuardCore> {
    let mut req = req;
    if let Some(t) = o.ttl {
        req = req.ttl(t);
    }
    if let Some(v) = o.value {
        req = req.value(v);
    }
    if let Some(t) = o.timeout {
        req = req.timeout(t);
    }
    Ok(GuardCore::new(Held::Lock(req.await.raise()?)))
}

/// Takes the lock of `req` if it is free; else raises LockHeld, whose
/// `holder` attribute is the holder.
pub(crate) async fn try_acquire(req: locker::TryLockRequest, o: Opts) -> PyResult<GuardCore> {
    let mut req = req;
    if let Some(t) = o.ttl {
        req = req.ttl(t);
    }
    if let Some(v) = o.value {
        req = req.value(v);
    }
    match req.await.raise()? {
        locker::TryLock::Acquired(g) => Ok(GuardCore::new(Held::Lock(g))),
        locker::TryLock::Held(h) => Err(held_error(h)),
    }
}

fn held_error(h: locker::Holder) -> PyErr {
    let msg = format!(
        "lock {:?} is held by {:?} (key {}, fencing token {})",
        h.name,
        h.value_str(),
        h.key,
        h.fencing_token
    );
    Python::attach(|py| {
        let err = LockHeld::new_err(msg);
        let holder = Holder::from(h);
        match Py::new(py, holder).and_then(|holder| err.value(py).setattr("holder", holder)) {
            Ok(()) => err,
            Err(e) => e,
        }
    })
}

/// Campaigns with `req`.
pub(crate) async fn campaign(
    req: locker::CampaignRequest,
    ttl: Option<Duration>,
    timeout: Option<Duration>,
) -> PyResult<GuardCore> {
    let mut req = req;
    if let Some(t) = ttl {
        req = req.ttl(t);
    }
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    Ok(GuardCore::new(Held::Leader(req.await.raise()?)))
}
