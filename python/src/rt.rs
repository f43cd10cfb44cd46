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

type Pending = std::pin::Pin<Box<dyn Future<Output = PyResult<Py<PyAny>>> + Send>>;

/// The asyncio flavour of a request that yields a guard or a session: an
/// awaitable (`guard = await client.lock(...)`) that is also an async
/// context manager (`async with client.lock(...) as guard:`), whose exit
/// is the exit of what it yielded. Cancelling either drops the request.
#[pyclass(module = "locker", frozen)]
pub(crate) struct AsyncRequest {
    pending: std::sync::Mutex<Option<Pending>>,
    entered: std::sync::Arc<std::sync::Mutex<Option<Py<PyAny>>>>,
}

impl AsyncRequest {
    fn take(&self) -> PyResult<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this request was already awaited"))
    }
}

#[pymethods]
impl AsyncRequest {
    fn __await__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let fut = pyo3_async_runtimes::tokio::future_into_py(py, self.take()?)?;
        Ok(fut.call_method0("__await__")?.unbind())
    }

    fn __aenter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (pending, entered) = (self.take()?, self.entered.clone());
        async_run(py, async move {
            let value = pending.await?;
            let back = Python::attach(|py| value.clone_ref(py));
            *entered.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
            Ok(back)
        })
    }

    #[pyo3(signature = (*exc))]
    fn __aexit__(
        &self,
        py: Python<'_>,
        exc: &Bound<'_, pyo3::types::PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        let entered = self
            .entered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match entered {
            Some(value) => Ok(value.call_method1(py, "__aexit__", exc)?),
            None => Err(PyRuntimeError::new_err("__aexit__ without __aenter__")),
        }
    }
}

/// The asyncio flavour of a request: an [`AsyncRequest`].
pub(crate) fn async_request<T, F>(py: Python<'_>, fut: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    let pending: Pending = Box::pin(async move {
        let value = fut.await?;
        Python::attach(|py| {
            Ok(value
                .into_pyobject(py)
                .map_err(Into::into)?
                .into_any()
                .unbind())
        })
    });
    let req = AsyncRequest {
        pending: std::sync::Mutex::new(Some(pending)),
        entered: Default::default(),
    };
    Ok(Py::new(py, req)?.into_any())
}
