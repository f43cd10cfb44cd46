//! Sessions: one lease, many locks, kept alive until closed.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::Raise;
use crate::guard::{AsyncGuard, AsyncLeadership, Guard, Leadership, Lost};
use crate::methods::{lock_helpers, lock_methods};
use crate::rt::{InRuntime, async_request, async_run, sync_run};
use crate::source::{SharedSession, Source};
use crate::values::opt_seconds;
use crate::{AsyncSemaphore, Semaphore};

/// A session's state, shared by both flavours.
pub(crate) struct SessionCore {
    session: SharedSession,
    lease: i64,
    ttl: f64,
    lost: Lost,
}

impl SessionCore {
    pub(crate) fn new(s: locker::Session) -> SessionCore {
        SessionCore {
            lease: s.lease().0,
            ttl: s.ttl().as_secs_f64(),
            lost: Lost::follow(s.lost_signal()),
            session: Arc::new(InRuntime::new(Mutex::new(Some(s)))),
        }
    }

    fn source(&self) -> Source {
        Source::Session(self.session.clone())
    }

    fn is_lost(&self) -> bool {
        let s = self.session.get().lock().unwrap_or_else(|p| p.into_inner());
        s.as_ref().is_none_or(|s| s.lost_reason().is_some())
    }

    /// Closes the session (revoking its lease); a second call does nothing.
    fn close(&self) -> impl Future<Output = PyResult<()>> + Send + 'static {
        let taken = self
            .session
            .get()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        async move {
            match taken {
                Some(s) => s.close().await.raise(),
                None => Ok(()),
            }
        }
    }
}

macro_rules! session_class {
    ($(#[$doc:meta])* $Class:ident, $run:ident, $req:ident, $Guard:ident, $Leadership:ident, $Semaphore:ident, { $($extra:tt)* }) => {
        $(#[$doc])*
        #[pyclass(module = "locker", frozen)]
        pub(crate) struct $Class {
            pub(crate) core: SessionCore,
        }

        lock_helpers!($Class, $req, $Guard);

        impl $Class {
            fn source(&self) -> Source {
                self.core.source()
            }
        }

        lock_methods!($Class, $req, $Guard, $Leadership, $Semaphore);

        #[pymethods]
        impl $Class {

            /// The session's lease id (keep it to `resume_session` after a
            /// restart).
            #[getter]
            fn lease(&self) -> i64 {
                self.core.lease
            }

            /// The TTL etcd granted, in seconds.
            #[getter]
            fn ttl(&self) -> f64 {
                self.core.ttl
            }

            /// Whether the lease is lost or the session closed.
            #[getter]
            fn is_lost(&self) -> bool {
                self.core.is_lost()
            }

            /// Why the lease was lost ("expired", "unreachable", "closed", "key_deleted"), or None.
            #[getter]
            fn lost_reason(&self) -> Option<&'static str> {
                self.core.lost.reason()
            }

            /// Waits until the lease is lost and returns why; None if
            /// `timeout` seconds pass first.
            #[pyo3(signature = (timeout=None))]
            fn lost(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
                let wait = self.core.lost.wait(opt_seconds("timeout", timeout)?);
                $run(py, wait)
            }

            /// Calls `callback(reason)` once when the lease is lost (also at
            /// close: reason "closed"), from a background thread.
            fn on_lost(&self, callback: Py<PyAny>) {
                self.core.lost.on_lost(callback)
            }

            /// Revokes the lease, which deletes every key on it in one
            /// commit. Raises LeaseExpired when it had expired before.
            fn close(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                $run(py, self.core.close())
            }

            fn __repr__(&self) -> String {
                format!("{}(lease={:x}, ttl={})", stringify!($Class), self.core.lease, self.core.ttl)
            }

        }

        #[pymethods]
        impl $Class {
            $($extra)*
        }
    };
}

session_class!(
    /// A lease kept alive until `close()`: many locks on one lease (one
    /// commit to close them all). A context manager that closes on exit.
    Session, sync_run, sync_run, Guard, Leadership, Semaphore, {
        fn __enter__(slf: Py<Self>) -> Py<Self> {
            slf
        }

        #[pyo3(signature = (*_exc))]
        fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
            crate::rt::block(py, self.core.close())?;
            Ok(false)
        }
    }
);

session_class!(
    /// A session of an AsyncClient; `async with` closes it on exit.
    AsyncSession, async_run, async_request, AsyncGuard, AsyncLeadership, AsyncSemaphore, {
        fn __aenter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
            async_run(py, async move { Ok(slf) })
        }

        #[pyo3(signature = (*_exc))]
        fn __aexit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
            let close = self.core.close();
            async_run(py, async move {
                close.await?;
                Ok(false)
            })
        }
    }
);
