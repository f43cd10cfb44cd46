//! The lock methods the clients and the sessions share, written once for
//! each flavour: `$req` is `sync_run` or `async_request`, the classes those
//! the flavour returns. Each method is the crate's method of the same name.

macro_rules! lock_methods {
    ($Class:ident, $req:ident, $Guard:ident, $Leadership:ident, $Semaphore:ident) => {
        #[pymethods]
        impl $Class {
            /// Waits in FIFO order for the lock `name`. `ttl`: the lease's TTL
            /// in seconds (a lock on a session uses the session's); `value`: the
            /// key's value, the holder's identity (default `host:pid`);
            /// `timeout`: give up after this many seconds (AcquireTimeout,
            /// nothing left queued).
            #[pyo3(signature = (name, *, ttl=None, value=None, timeout=None))]
            fn lock(
                &self,
                py: Python<'_>,
                name: String,
                ttl: Option<f64>,
                value: Option<crate::values::Bytes>,
                timeout: Option<f64>,
            ) -> PyResult<Py<PyAny>> {
                self.request(py, crate::source::Kind::Lock, name, ttl, value, timeout)
            }

            /// Waits for a shared (read) lock: readers hold together, a writer
            /// alone, in arrival order. Options as for `lock`.
            #[pyo3(signature = (name, *, ttl=None, value=None, timeout=None))]
            fn read_lock(
                &self,
                py: Python<'_>,
                name: String,
                ttl: Option<f64>,
                value: Option<crate::values::Bytes>,
                timeout: Option<f64>,
            ) -> PyResult<Py<PyAny>> {
                self.request(py, crate::source::Kind::Read, name, ttl, value, timeout)
            }

            /// Waits for an exclusive (write) lock; it excludes `lock` and
            /// `etcdctl lock` on the same name too. Options as for `lock`.
            #[pyo3(signature = (name, *, ttl=None, value=None, timeout=None))]
            fn write_lock(
                &self,
                py: Python<'_>,
                name: String,
                ttl: Option<f64>,
                value: Option<crate::values::Bytes>,
                timeout: Option<f64>,
            ) -> PyResult<Py<PyAny>> {
                self.request(py, crate::source::Kind::Write, name, ttl, value, timeout)
            }

            /// Takes the lock only if it is free, else raises LockHeld (its
            /// `holder` says who holds it); nothing is left queued.
            #[pyo3(signature = (name, *, ttl=None, value=None))]
            fn try_lock(
                &self,
                py: Python<'_>,
                name: String,
                ttl: Option<f64>,
                value: Option<crate::values::Bytes>,
            ) -> PyResult<Py<PyAny>> {
                self.try_request(py, crate::source::Kind::Lock, name, ttl, value)
            }

            /// `try_lock` for a read lock.
            #[pyo3(signature = (name, *, ttl=None, value=None))]
            fn try_read_lock(
                &self,
                py: Python<'_>,
                name: String,
                ttl: Option<f64>,
                value: Option<crate::values::Bytes>,
            ) -> PyResult<Py<PyAny>> {
                self.try_request(py, crate::source::Kind::Read, name, ttl, value)
            }

            /// `try_lock` for a write lock.
            #[pyo3(signature = (name, *, ttl=None, value=None))]
            fn try_write_lock(
                &self,
                py: Python<'_>,
                name: String,
                ttl: Option<f64>,
                value: Option<crate::values::Bytes>,
            ) -> PyResult<Py<PyAny>> {
                self.try_request(py, crate::source::Kind::Write, name, ttl, value)
            }

            /// A counting semaphore: at most `permits` holders of `name` at
            /// once. Every user of a name must ask for the same number.
            fn semaphore(&self, name: String, permits: u32) -> PyResult<$Semaphore> {
                Ok($Semaphore {
                    sem: std::sync::Arc::new(crate::rt::InRuntime::new(
                        self.source().semaphore(name, permits)?,
                    )),
                })
            }

            /// Campaigns to lead the election `name` with `value`; returns once
            /// elected. `ttl` and `timeout` as for `lock`.
            #[pyo3(signature = (name, value, *, ttl=None, timeout=None))]
            fn campaign(
                &self,
                py: Python<'_>,
                name: String,
                value: crate::values::Bytes,
                ttl: Option<f64>,
                timeout: Option<f64>,
            ) -> PyResult<Py<PyAny>> {
                let req = self.source().campaign(name, value.into_vec())?;
                let ttl = crate::values::opt_seconds("ttl", ttl)?;
                let timeout = crate::values::opt_seconds("timeout", timeout)?;
                $req(py, async move {
                    Ok($Leadership {
                        core: crate::source::campaign(req, ttl, timeout).await?,
                    })
                })
            }
        }
    };
}

/// The helpers `lock_methods!` calls, for a class with `fn source()`.
macro_rules! lock_helpers {
    ($Class:ident, $req:ident, $Guard:ident) => {
        impl $Class {
            fn request(
                &self,
                py: Python<'_>,
                kind: crate::source::Kind,
                name: String,
                ttl: Option<f64>,
                value: Option<crate::values::Bytes>,
                timeout: Option<f64>,
            ) -> PyResult<Py<PyAny>> {
                let req = self.source().lock(kind, name)?;
                let opts = crate::source::Opts::new(ttl, value, timeout)?;
                $req(py, async move {
                    Ok($Guard {
                        core: crate::source::acquire(req, opts).await?,
                    })
                })
            }

            fn try_request(
                &self,
                py: Python<'_>,
                kind: crate::source::Kind,
                name: String,
                ttl: Option<f64>,
                value: Option<crate::values::Bytes>,
            ) -> PyResult<Py<PyAny>> {
                let req = self.source().try_lock(kind, name)?;
                let opts = crate::source::Opts::new(ttl, value, None)?;
                $req(py, async move {
                    Ok($Guard {
                        core: crate::source::try_acquire(req, opts).await?,
                    })
                })
            }
        }
    };
}

/// A semaphore class of one flavour.
macro_rules! semaphore_class {
    ($(#[$doc:meta])* $Class:ident, $req:ident, $Guard:ident) => {
        $(#[$doc])*
        #[pyclass(module = "locker", frozen)]
        pub(crate) struct $Class {
            pub(crate) sem: std::sync::Arc<crate::rt::InRuntime<locker::Semaphore>>,
        }

        #[pymethods]
        impl $Class {
            /// The semaphore's name.
            #[getter]
            fn name(&self) -> String {
                self.sem.get().name().to_owned()
            }

            /// The number of permits.
            #[getter]
            fn permits(&self) -> u32 {
                self.sem.get().permits()
            }

            /// Waits for a permit, in FIFO order. Options as for `lock`.
            #[pyo3(signature = (*, ttl=None, value=None, timeout=None))]
            fn acquire(
                &self,
                py: Python<'_>,
                ttl: Option<f64>,
                value: Option<crate::values::Bytes>,
                timeout: Option<f64>,
            ) -> PyResult<Py<PyAny>> {
                let req = {
                    let _in = crate::rt::runtime().enter();
                    self.sem.get().acquire()
                };
                let opts = crate::source::Opts::new(ttl, value, timeout)?;
                $req(py, async move {
                    Ok($Guard {
                        core: crate::source::acquire(req, opts).await?,
                    })
                })
            }

            /// Takes a permit only if one is free now, else raises LockHeld.
            #[pyo3(signature = (*, ttl=None, value=None))]
            fn try_acquire(
                &self,
                py: Python<'_>,
                ttl: Option<f64>,
                value: Option<crate::values::Bytes>,
            ) -> PyResult<Py<PyAny>> {
                let req = {
                    let _in = crate::rt::runtime().enter();
                    self.sem.get().try_acquire()
                };
                let opts = crate::source::Opts::new(ttl, value, None)?;
                $req(py, async move {
                    Ok($Guard {
                        core: crate::source::try_acquire(req, opts).await?,
                    })
                })
            }

            fn __repr__(&self) -> String {
                format!(
                    "{}(name={:?}, permits={})",
                    stringify!($Class),
                    self.sem.get().name(),
                    self.sem.get().permits()
                )
            }
        }
    };
}

pub(crate) use {lock_helpers, lock_methods, semaphore_class};
