//! The clients: `Client` (blocking calls) and `AsyncClient` (awaitables),
//! each a `locker::Client`.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::Raise;
use crate::guard::{AsyncGuard, AsyncLeadership, Guard, Leadership};
use crate::methods::{lock_helpers, lock_methods};
use crate::rt::{InRuntime, async_request, async_run, block, runtime, sync_run};
use crate::session::{AsyncSession, Session, SessionCore};
use crate::source::Source;
use crate::values::{Bytes, Holder, Holders, opt_seconds, seconds};
use crate::watch::{AsyncWatch, Stream, Watch, shared};
use crate::{AsyncSemaphore, Semaphore};

/// The builder's options, as the constructors take them.
#[allow(clippy::too_many_arguments)]
fn builder(
    endpoints: Vec<String>,
    request_timeout: Option<f64>,
    connect_timeout: Option<f64>,
    user: Option<String>,
    password: Option<String>,
    ca: Option<std::path::PathBuf>,
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
    server_name: Option<String>,
    audit: Option<Py<PyAny>>,
) -> PyResult<locker::ClientBuilder> {
    let mut b = locker::Client::builder().endpoints(endpoints);
    if let Some(t) = opt_seconds("request_timeout", request_timeout)? {
        b = b.request_timeout(t);
    }
    if let Some(t) = opt_seconds("connect_timeout", connect_timeout)? {
        b = b.connect_timeout(t);
    }
    match (user, password) {
        (Some(u), p) => b = b.user(u, p.unwrap_or_default()),
        (None, Some(_)) => {
            return Err(crate::errors::InvalidArgument::new_err(
                "invalid argument: a password needs a user",
            ));
        }
        (None, None) => {}
    }
    if let Some(ca) = ca {
        b = b.ca_cert_file(ca);
    }
    match (cert, key) {
        (Some(c), Some(k)) => b = b.client_cert_files(c, k),
        (None, None) => {}
        _ => {
            return Err(crate::errors::InvalidArgument::new_err(
                "invalid argument: cert and key go together",
            ));
        }
    }
    if let Some(name) = server_name {
        b = b.tls_server_name(name);
    }
    if let Some(callback) = audit {
        b = b.audit(audit_sink(callback));
    }
    Ok(b)
}

/// A sink that hands each wire record to `callback` as a dict, from a
/// thread of its own (the crate calls sinks inline on its tasks, which
/// must not wait for the GIL). The thread ends when the client is dropped.
fn audit_sink(callback: Py<PyAny>) -> impl Fn(&locker::WireRecord) + Send + Sync + 'static {
    let (tx, rx) = std::sync::mpsc::channel::<locker::WireRecord>();
    std::thread::spawn(move || {
        for r in rx {
            Python::attach(|py| {
                let call = record_dict(py, &r).and_then(|d| callback.call1(py, (d,)));
                if let Err(e) = call {
                    e.write_unraisable(py, Some(callback.bind(py)));
                }
            });
        }
    });
    move |r: &locker::WireRecord| {
        let _ = tx.send(r.clone());
    }
}

fn record_dict<'py>(py: Python<'py>, r: &locker::WireRecord) -> PyResult<Bound<'py, PyDict>> {
    let kind = match r.kind {
        locker::WireKind::Unary => "call",
        locker::WireKind::StreamOpen => "open",
        locker::WireKind::StreamSend => "send",
        locker::WireKind::StreamRecv => "recv",
        locker::WireKind::StreamClose => "close",
        _ => "other",
    };
    let d = PyDict::new(py);
    d.set_item("kind", kind)?;
    d.set_item("endpoint", &r.endpoint)?;
    d.set_item("path", r.path)?;
    d.set_item("request", &r.request)?;
    d.set_item("response", &r.response)?;
    d.set_item("status", &r.status)?;
    d.set_item("latency", r.latency.map(|l| l.as_secs_f64()))?;
    d.set_item("line", r.to_string())?;
    Ok(d)
}

macro_rules! client_class {
    (
        $(#[$doc:meta])* $Class:ident, $run:ident, $req:ident,
        $Guard:ident, $Leadership:ident, $Semaphore:ident, $Session:ident, $Watch:ident,
        { $($extra:tt)* }
    ) => {
        $(#[$doc])*
        #[pyclass(module = "locker", frozen)]
        pub(crate) struct $Class {
            client: Arc<InRuntime<locker::Client>>,
        }

        lock_helpers!($Class, $req, $Guard);

        impl $Class {
            fn source(&self) -> Source {
                Source::Client(self.client.get().clone())
            }

            fn c(&self) -> locker::Client {
                self.client.get().clone()
            }
        }

        lock_methods!($Class, $req, $Guard, $Leadership, $Semaphore);

        #[pymethods]
        impl $Class {

            /// The endpoints, as given.
            #[getter]
            fn endpoints(&self) -> Vec<String> {
                self.client.get().endpoints()
            }

            /// Opens a session: a lease of `ttl` seconds kept alive until
            /// closed, for many locks on one lease.
            #[pyo3(signature = (ttl=10.0))]
            fn session(&self, py: Python<'_>, ttl: f64) -> PyResult<Py<PyAny>> {
                let (c, ttl) = (self.c(), seconds("ttl", ttl)?);
                $req(py, async move {
                    Ok($Session {
                        core: SessionCore::new(c.session(ttl).await.raise()?),
                    })
                })
            }

            /// Resumes a session on a lease granted earlier (its id kept
            /// across a restart): its locks and campaigns keep their place.
            fn resume_session(&self, py: Python<'_>, lease: i64) -> PyResult<Py<PyAny>> {
                let c = self.c();
                $req(py, async move {
                    Ok($Session {
                        core: SessionCore::new(c.resume_session(locker::LeaseId(lease)).await.raise()?),
                    })
                })
            }

            /// Who holds the lock `name`, or None.
            fn holder(&self, py: Python<'_>, name: String) -> PyResult<Py<PyAny>> {
                let c = self.c();
                $run(py, async move { Ok(c.holder(&name).await.raise()?.map(Holder::from)) })
            }

            /// Everyone in the queue of `name`: holders and waiters, in order.
            fn holders(&self, py: Python<'_>, name: String) -> PyResult<Py<PyAny>> {
                let c = self.c();
                $run(py, async move { Ok(Holders::from(c.holders(&name).await.raise()?)) })
            }

            /// The leader of the election `name`, or None.
            fn leader(&self, py: Python<'_>, name: String) -> PyResult<Py<PyAny>> {
                let c = self.c();
                $run(py, async move { Ok(c.leader(&name).await.raise()?.map(Holder::from)) })
            }

            /// The lock's state, then every change: an iterator of Events
            /// ("snapshot", "acquired", "released").
            fn watch_lock(&self, py: Python<'_>, name: String) -> PyResult<Py<PyAny>> {
                let c = self.c();
                $run(py, async move {
                    let w = c.watch_lock(&name).await.raise()?;
                    Ok($Watch { stream: shared(Stream::Lock(w)) })
                })
            }

            /// The election's leader, then every change and proclamation:
            /// an iterator of Events ("leader", "proclaimed", "no_leader",
            /// "resynced").
            fn observe(&self, py: Python<'_>, name: String) -> PyResult<Py<PyAny>> {
                let c = self.c();
                $run(py, async move {
                    let w = c.observe(&name).await.raise()?;
                    Ok($Watch { stream: shared(Stream::Leader(w)) })
                })
            }

            /// Reads a key: its value, or None.
            fn get(&self, py: Python<'_>, key: Bytes) -> PyResult<Py<PyAny>> {
                let (c, key) = (self.c(), key.into_vec());
                $run(py, async move { Ok(c.get(key).await.raise()?.map(|kv| kv.value)) })
            }

            /// Writes a key (unguarded; see `Guard.put` for a fenced write);
            /// returns the revision.
            fn put(&self, py: Python<'_>, key: Bytes, value: Bytes) -> PyResult<Py<PyAny>> {
                let (c, key, value) = (self.c(), key.into_vec(), value.into_vec());
                $run(py, async move { Ok(c.put(key, value).await.raise()?.0) })
            }

            /// Deletes a key; returns how many were deleted (0 or 1).
            fn delete(&self, py: Python<'_>, key: Bytes) -> PyResult<Py<PyAny>> {
                let (c, key) = (self.c(), key.into_vec());
                $run(py, async move { c.delete(key).await.raise() })
            }

            /// Revokes a lease (an operator's act: every key on it goes, and
            /// its holder's lost signal fires); returns whether it existed.
            fn lease_revoke(&self, py: Python<'_>, lease: i64) -> PyResult<Py<PyAny>> {
                let c = self.c();
                $run(py, async move { c.lease_revoke(locker::LeaseId(lease)).await.raise() })
            }

            fn __repr__(&self) -> String {
                format!("{}(endpoints={:?})", stringify!($Class), self.client.get().endpoints())
            }

        }

        #[pymethods]
        impl $Class {
            $($extra)*
        }
    };
}

client_class!(
    /// A connection to an etcd cluster; every method blocks (with the GIL
    /// released; Ctrl-C interrupts a wait and leaves nothing queued).
    ///
    /// `Client(endpoints, *, request_timeout=None, connect_timeout=None,
    /// user=None, password=None, ca=None, cert=None, key=None,
    /// server_name=None, audit=None)` connects and checks that an etcd
    /// answers. Timeouts in seconds; `ca`, `cert`, `key`: PEM files for
    /// https:// endpoints; `audit`: a callable receiving a dict per wire
    /// call and stream message.
    Client, sync_run, sync_run, Guard, Leadership, Semaphore, Session, Watch, {
        #[new]
        #[pyo3(signature = (endpoints, *, request_timeout=None, connect_timeout=None, user=None,
            password=None, ca=None, cert=None, key=None, server_name=None, audit=None))]
        #[allow(clippy::too_many_arguments)]
        fn new(
            py: Python<'_>,
            endpoints: Vec<String>,
            request_timeout: Option<f64>,
            connect_timeout: Option<f64>,
            user: Option<String>,
            password: Option<String>,
            ca: Option<std::path::PathBuf>,
            cert: Option<std::path::PathBuf>,
            key: Option<std::path::PathBuf>,
            server_name: Option<String>,
            audit: Option<Py<PyAny>>,
        ) -> PyResult<Self> {
            let b = builder(
                endpoints, request_timeout, connect_timeout, user, password, ca, cert, key,
                server_name, audit,
            )?;
            let client = block(py, async move { b.connect().await.raise() })?;
            Ok(Client { client: Arc::new(InRuntime::new(client)) })
        }
    }
);

client_class!(
    /// The asyncio flavour: every method returns an awaitable; cancelling
    /// it drops the request, which leaves nothing queued.
    ///
    /// `AsyncClient(endpoints, ...)` (options as for Client) sends nothing:
    /// connections are made on first use. `await AsyncClient.connect(...)`
    /// also checks that an etcd answers.
    AsyncClient, async_run, async_request, AsyncGuard, AsyncLeadership, AsyncSemaphore, AsyncSession, AsyncWatch, {
        #[new]
        #[pyo3(signature = (endpoints, *, request_timeout=None, connect_timeout=None, user=None,
            password=None, ca=None, cert=None, key=None, server_name=None, audit=None))]
        #[allow(clippy::too_many_arguments)]
        fn new(
            endpoints: Vec<String>,
            request_timeout: Option<f64>,
            connect_timeout: Option<f64>,
            user: Option<String>,
            password: Option<String>,
            ca: Option<std::path::PathBuf>,
            cert: Option<std::path::PathBuf>,
            key: Option<std::path::PathBuf>,
            server_name: Option<String>,
            audit: Option<Py<PyAny>>,
        ) -> PyResult<Self> {
            let b = builder(
                endpoints, request_timeout, connect_timeout, user, password, ca, cert, key,
                server_name, audit,
            )?;
            let _in = runtime().enter();
            let client = b.build().raise()?;
            Ok(AsyncClient { client: Arc::new(InRuntime::new(client)) })
        }

        /// Connects and checks that an etcd answers; options as for the
        /// constructor.
        #[staticmethod]
        #[pyo3(signature = (endpoints, *, request_timeout=None, connect_timeout=None, user=None,
            password=None, ca=None, cert=None, key=None, server_name=None, audit=None))]
        #[allow(clippy::too_many_arguments)]
        fn connect(
            py: Python<'_>,
            endpoints: Vec<String>,
            request_timeout: Option<f64>,
            connect_timeout: Option<f64>,
            user: Option<String>,
            password: Option<String>,
            ca: Option<std::path::PathBuf>,
            cert: Option<std::path::PathBuf>,
            key: Option<std::path::PathBuf>,
            server_name: Option<String>,
            audit: Option<Py<PyAny>>,
        ) -> PyResult<Py<PyAny>> {
            let b = builder(
                endpoints, request_timeout, connect_timeout, user, password, ca, cert, key,
                server_name, audit,
            )?;
            async_run(py, async move {
                let client = b.connect().await.raise()?;
                Ok(AsyncClient { client: Arc::new(InRuntime::new(client)) })
            })
        }
    }
);
