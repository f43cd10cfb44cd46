//! Guards of held locks, permits and leaderships: the crate's `LockGuard`
//! and `Leadership`, with the lost signal as a state that can be polled,
//! waited on, or given a callback.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tokio::sync::{RwLock, watch};
use tokio::task::JoinHandle;

use crate::errors::{LockerError, Raise, Released};
use crate::rt::{InRuntime, async_run, runtime, sync_run};
use crate::values::{Bytes, opt_seconds, reason};

/// What a guard holds.
pub(crate) enum Held {
    Lock(locker::LockGuard),
    Leader(locker::Leadership),
}

impl Held {
    fn guard(&self) -> &locker::LockGuard {
        match self {
            Held::Lock(g) => g,
            Held::Leader(l) => l,
        }
    }
}

/// The lost signal, followed by one task per guard: None until it fires.
/// The task ends when the signal fires, at the latest at release or drop
/// (reason "closed").
pub(crate) struct Lost {
    rx: watch::Receiver<Option<&'static str>>,
    task: JoinHandle<()>,
}

impl Lost {
    pub(crate) fn follow(
        signal: impl Future<Output = locker::LostReason> + Send + 'static,
    ) -> Lost {
        let (tx, rx) = watch::channel(None);
        let task = runtime().spawn(async move {
            let _ = tx.send(Some(reason(signal.await)));
        });
        Lost { rx, task }
    }

    pub(crate) fn reason(&self) -> Option<&'static str> {
        *self.rx.borrow()
    }

    /// Waits for the signal, for at most `timeout`: the reason, or None.
    pub(crate) fn wait(
        &self,
        timeout: Option<Duration>,
    ) -> impl Future<Output = PyResult<Option<&'static str>>> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            let fired = async {
                match rx.wait_for(Option::is_some).await {
                    Ok(r) => *r,
                    Err(_) => Some("closed"),
                }
            };
            Ok(match timeout {
                Some(t) => tokio::time::timeout(t, fired).await.ok().flatten(),
                None => fired.await,
            })
        }
    }

    /// Calls `callback(reason)` once, from a background thread, when the
    /// signal fires. An exception it raises is reported as unraisable.
    pub(crate) fn on_lost(&self, callback: Py<PyAny>) {
        let wait = self.wait(None);
        runtime().spawn(async move {
            if let Ok(Some(why)) = wait.await {
                Python::attach(|py| {
                    if let Err(e) = callback.call1(py, (why,)) {
                        e.write_unraisable(py, Some(callback.bind(py)));
                    }
                });
            }
        });
    }
}

impl Drop for Lost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A guard's state, shared by the sync and asyncio classes.
pub(crate) struct GuardCore {
    held: Arc<InRuntime<RwLock<Option<Held>>>>,
    name: String,
    key: String,
    lease: i64,
    token: i64,
    ttl: f64,
    lost: Lost,
}

impl GuardCore {
    pub(crate) fn new(held: Held) -> GuardCore {
        let g = held.guard();
        GuardCore {
            name: g.name().to_owned(),
            key: g.key().to_owned(),
            lease: g.lease().0,
            token: g.fencing_token().0,
            ttl: g.ttl().as_secs_f64(),
            lost: Lost::follow(g.lost_signal()),
            held: Arc::new(InRuntime::new(RwLock::new(Some(held)))),
        }
    }

    fn is_lost(&self) -> bool {
        match self.held.get().try_read() {
            Ok(h) => h.as_ref().is_none_or(|h| h.guard().is_lost()),
            Err(_) => self.lost.reason().is_some(),
        }
    }

    fn value(&self) -> Option<Vec<u8>> {
        let h = self.held.get().try_read().ok()?;
        h.as_ref().map(|h| h.guard().value().to_vec())
    }

    fn time_left(&self) -> Option<f64> {
        let h = self.held.get().try_read().ok()?;
        let deadline = h.as_ref()?.guard().deadline()?;
        Some(
            deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_secs_f64(),
        )
    }

    fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = PyResult<i64>> + Send + 'static {
        let held = self.held.clone();
        async move {
            let h = held.get().read().await;
            let g = h.as_ref().ok_or_else(released)?;
            Ok(g.guard().put(key, value).await.raise()?.0)
        }
    }

    fn proclaim(&self, value: Vec<u8>) -> impl Future<Output = PyResult<i64>> + Send + 'static {
        let held = self.held.clone();
        async move {
            let mut h = held.get().write().await;
            match h.as_mut() {
                Some(Held::Leader(l)) => Ok(l.proclaim(value).await.raise()?.0),
                Some(Held::Lock(_)) => Err(LockerError::new_err("not a leadership")),
                None => Err(released()),
            }
        }
    }

    /// Releases (a lock) or resigns (a leadership); a second call does
    /// nothing.
    fn release(&self) -> impl Future<Output = PyResult<()>> + Send + 'static {
        let held = self.held.clone();
        async move {
            let taken = held.get().write().await.take();
            match taken {
                Some(Held::Lock(g)) => g.release().await.raise(),
                Some(Held::Leader(l)) => l.resign().await.raise(),
                None => Ok(()),
            }
        }
    }
}

fn released() -> PyErr {
    Released::new_err("this guard was released already; nothing was sent")
}

/// Generates a guard class of one flavour: `$run` is `sync_run` or
/// `async_run`; `$extra` adds the context manager methods.
macro_rules! guard_class {
    ($(#[$doc:meta])* $Class:ident, $run:ident, { $($extra:tt)* }) => {
        $(#[$doc])*
        #[pyclass(module = "locker", frozen)]
        pub(crate) struct $Class {
            pub(crate) core: GuardCore,
        }

        #[pymethods]
        impl $Class {
            /// The lock (or election) name.
            #[getter]
            fn name(&self) -> &str {
                &self.core.name
            }

            /// The key, `{name}/{lease hex}` (readers and permits have
            /// `/read/` and `/permit/` before the lease).
            #[getter]
            fn key(&self) -> &str {
                &self.core.key
            }

            /// The lease id the key is attached to.
            #[getter]
            fn lease(&self) -> i64 {
                self.core.lease
            }

            /// The TTL etcd granted, in seconds.
            #[getter]
            fn ttl(&self) -> f64 {
                self.core.ttl
            }

            /// The fencing token: the key's create revision, growing across
            /// holders of the name.
            #[getter]
            fn fencing_token(&self) -> i64 {
                self.core.token
            }

            /// The value stored in the key; None once released.
            #[getter]
            fn value(&self) -> Option<Vec<u8>> {
                self.core.value()
            }

            /// Seconds until the lease's local deadline; None once lost.
            #[getter]
            fn time_left(&self) -> Option<f64> {
                self.core.time_left()
            }

            /// Whether the lock can no longer be assumed held (the lost
            /// signal fired, or the guard was released).
            #[getter]
            fn is_lost(&self) -> bool {
                self.core.is_lost()
            }

            /// Why it was lost ("expired", "unreachable", "closed", "key_deleted"), or None.
            #[getter]
            fn lost_reason(&self) -> Option<&'static str> {
                self.core.lost.reason()
            }

            /// Waits until the lock is lost and returns why; None if
            /// `timeout` seconds pass first.
            #[pyo3(signature = (timeout=None))]
            fn lost(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
                let wait = self.core.lost.wait(opt_seconds("timeout", timeout)?);
                $run(py, wait)
            }

            /// Calls `callback(reason)` once when the lock is lost (also at
            /// release: reason "closed"), from a background thread.
            fn on_lost(&self, callback: Py<PyAny>) {
                self.core.lost.on_lost(callback)
            }

            /// Writes `key = value` only while this guard holds the lock;
            /// returns the write's revision. Raises LockLost when the key is
            /// gone or another's, LeaseExpired when the lost signal fired.
            fn put(&self, py: Python<'_>, key: Bytes, value: Bytes) -> PyResult<Py<PyAny>> {
                $run(py, self.core.put(key.into_vec(), value.into_vec()))
            }

            /// Releases the lock (a leadership resigns). Raises a LostError
            /// when it had been lost before: the work done under it was not
            /// protected to the end. A second call does nothing.
            fn release(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                $run(py, self.core.release())
            }

            fn __repr__(&self) -> String {
                format!(
                    "{}(key={:?}, fencing_token={}, lost={})",
                    stringify!($Class),
                    self.core.key,
                    self.core.token,
                    self.core.is_lost()
                )
            }

        }

        $($extra)*
    };
}

macro_rules! leadership_methods {
    ($Class:ident, $run:ident) => {
        #[pymethods]
        impl $Class {
            /// Proclaims a new value (guarded by the fencing token); returns its
            /// revision. Raises NotLeader when no longer leading.
            fn proclaim(&self, py: Python<'_>, value: Bytes) -> PyResult<Py<PyAny>> {
                $run(py, self.core.proclaim(value.into_vec()))
            }

            /// Resigns: the next candidate is elected.
            fn resign(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                $run(py, self.core.release())
            }
        }
    };
}

macro_rules! sync_context {
    ($Class:ident) => {
        #[pymethods]
        impl $Class {
            fn __enter__(slf: Py<Self>) -> Py<Self> {
                slf
            }

            /// Releases; an error of the release is raised.
            #[pyo3(signature = (*_exc))]
            fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
                crate::rt::block(py, self.core.release())?;
                Ok(false)
            }
        }
    };
}

macro_rules! async_context {
    ($Class:ident) => {
        #[pymethods]
        impl $Class {
            fn __aenter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
                async_run(py, async move { Ok(slf) })
            }

            /// Releases; an error of the release is raised.
            #[pyo3(signature = (*_exc))]
            fn __aexit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
                let release = self.core.release();
                async_run(py, async move {
                    release.await?;
                    Ok(false)
                })
            }
        }
    };
}

guard_class!(
    /// A held lock, read lock, write lock or semaphore permit. Use it as a
    /// context manager (`with client.lock("name") as guard:`), or call
    /// `release()`. Dropped without release, its key goes in the background.
    Guard, sync_run, { sync_context!(Guard); }
);
guard_class!(
    /// A held lock, read lock, write lock or permit, from an AsyncClient:
    /// `async with await client.lock("name") as guard:`; methods return
    /// awaitables.
    AsyncGuard, async_run, { async_context!(AsyncGuard); }
);
guard_class!(
    /// Leadership of an election: a guard with `proclaim` and `resign`.
    Leadership, sync_run, { sync_context!(Leadership); leadership_methods!(Leadership, sync_run); }
);
guard_class!(
    /// Leadership of an election, from an AsyncClient.
    AsyncLeadership, async_run, { async_context!(AsyncLeadership); leadership_methods!(AsyncLeadership, async_run); }
);
