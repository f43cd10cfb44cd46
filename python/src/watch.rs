//! The crate's event streams (`watch_lock`, `observe`) as iterators: a
//! sync one, and an async one for `async for`.

use std::sync::Arc;

use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use tokio::sync::{Mutex, watch};

use crate::errors::Raise;
use crate::rt::{InRuntime, async_run, block};
use crate::values::Event;

pub(crate) enum Stream {
    Lock(locker::LockWatch),
    Leader(locker::LeaderWatch),
}

/// A stream shared by the iterator and its pending `next`, and the flag
/// `close` raises: a pending `next` ends at once, then the stream is dropped.
#[derive(Clone)]
pub(crate) struct SharedStream {
    stream: Arc<InRuntime<Mutex<Option<Stream>>>>,
    closed: Arc<watch::Sender<bool>>,
}

pub(crate) fn shared(s: Stream) -> SharedStream {
    SharedStream {
        stream: Arc::new(InRuntime::new(Mutex::new(Some(s)))),
        closed: Arc::new(watch::channel(false).0),
    }
}

impl SharedStream {
    fn close(&self) {
        self.closed.send_replace(true);
        let stream = self.stream.clone();
        crate::rt::runtime().spawn(async move {
            stream.get().lock().await.take();
        });
    }
}

/// The next event; None at the end or once closed.
async fn next(shared: SharedStream) -> PyResult<Option<Event>> {
    let mut closed = shared.closed.subscribe();
    let mut s = tokio::select! {
        s = shared.stream.get().lock() => s,
        _ = closed.wait_for(|c| *c) => return Ok(None),
    };
    if *closed.borrow() {
        return Ok(None);
    }
    let item = tokio::select! {
        item = async {
            match s.as_mut() {
                Some(Stream::Lock(w)) => w.next().await.map(|r| r.map(Event::from)),
                Some(Stream::Leader(w)) => w.next().await.map(|r| r.map(Event::from)),
                None => None,
            }
        } => item,
        _ = closed.wait_for(|c| *c) => None,
    };
    item.transpose().raise()
}

/// Lock or election events, in revision order, as an iterator that blocks
/// for the next one (`for event in client.watch_lock("name"):`). It starts
/// with the state at the start ("snapshot", or "leader"/"no_leader"), and
/// resumes by revision after a broken connection. `close()` stops it.
#[pyclass(module = "locker", frozen)]
pub(crate) struct Watch {
    pub(crate) stream: SharedStream,
}

#[pymethods]
impl Watch {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Event>> {
        block(py, next(self.stream.clone()))
    }

    /// Stops the stream; iteration ends (a pending next too).
    fn close(&self) {
        self.stream.close()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }
}

/// The same events for `async for event in client.watch_lock("name"):`.
#[pyclass(module = "locker", frozen)]
pub(crate) struct AsyncWatch {
    pub(crate) stream: SharedStream,
}

#[pymethods]
impl AsyncWatch {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let stream = self.stream.clone();
        async_run(py, async move {
            match next(stream).await? {
                Some(e) => Ok(e),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }

    /// Stops the stream; iteration ends (a pending next too).
    fn close(&self) {
        self.stream.close()
    }
}
