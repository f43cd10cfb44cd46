//! Running the crate's futures for Python: blocking (GIL released, Ctrl-C
//! honoured) for the sync classes, as awaitables for the asyncio ones.

use std::future::Future;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::Duration;

use pyo3::BoundObject;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// How often a blocked call looks for a signal (Ctrl-C) to deliver.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// The one tokio runtime of the process (pyo3-async-runtimes' own, so that
/// sync and asyncio calls share streams and tasks).
pub(crate) fn runtime() -> &'static Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Runs `fut` on the runtime and waits for it with the GIL released. Every
/// [`SIGNAL_POLL`] the wait runs Python's signal handlers; when one raises
/// (KeyboardInterrupt), the future is dropped, which leaves nothing queued
/// (the crate's cancel safety), and the exception is raised.
pub(crate) fn block<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = sync_channel(1);
    let task = runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    let mut rx = rx;
    loop {
        let (got, back) = py.detach(move || (rx.recv_timeout(SIGNAL_POLL), rx));
        rx = back;
        match got {
            Ok(result) => return result,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    task.abort();
                    return Err(interrupt);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err("locker: the call's task panicked"));
            }
        }
    }
}

/// The sync flavour: the value itself.
pub(crate) fn sync_run<T, F>(py: Python<'_>, fut: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    let value = block(py, fut)?;
    Ok(value
        .into_pyobject(py)
        .map_err(Into::into)?
        .into_any()
        .unbind())
}

/// The asyncio flavour: an awaitable. Cancelling it drops the future.
pub(crate) fn async_run<T, F>(py: Python<'_>, fut: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    Ok(pyo3_async_runtimes::tokio::future_into_py(py, fut)?.unbind())
}

/// Holds a value of the crate whose drop may start background work (a
/// revoke, a delete) and so must run inside the runtime: Python drops its
/// objects on its own threads, outside of it.
pub(crate) struct InRuntime<T>(Option<T>);

impl<T> InRuntime<T> {
    pub(crate) fn new(value: T) -> Self {
        InRuntime(Some(value))
    }

    pub(crate) fn get(&self) -> &T {
        self.0.as_ref().expect("set until dropped")
    }
}

impl<T> Drop for InRuntime<T> {
    fn drop(&mut self) {
        let _in = runtime().enter();
        drop(self.0.take());
    }
}
