//! locker for Python: a thin PyO3 binding of the Rust crate `locker`.
//!
//! Every class wraps one of the crate's types and every method calls the
//! crate's method of the same name; the binding only converts arguments,
//! results and errors, and runs the crate's futures: blocking with the GIL
//! released for the sync classes ([`rt::block`]), as asyncio awaitables for
//! the `Async*` ones. Layers: `rt` (running futures), `errors`, `values`
//! (conversions), `guard`, `source` (client or session), `methods` (the
//! lock methods, once per flavour), `session`, `watch`, `client`.

use pyo3::prelude::*;

mod client;
mod errors;
mod guard;
mod methods;
mod rt;
mod session;
mod source;
mod values;
mod watch;

use guard::{AsyncGuard, Guard};

methods::semaphore_class!(
    /// A counting semaphore: at most `permits` holders at once, served
    /// first come, first served.
    Semaphore, sync_run, Guard
);
methods::semaphore_class!(
    /// A counting semaphore of an AsyncClient or AsyncSession.
    AsyncSemaphore, async_request, AsyncGuard
);

use rt::{async_request, sync_run};

/// The compiled part of the `locker` package; import `locker` instead.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<client::AsyncClient>()?;
    m.add_class::<session::Session>()?;
    m.add_class::<session::AsyncSession>()?;
    m.add_class::<Guard>()?;
    m.add_class::<AsyncGuard>()?;
    m.add_class::<guard::Leadership>()?;
    m.add_class::<guard::AsyncLeadership>()?;
    m.add_class::<Semaphore>()?;
    m.add_class::<AsyncSemaphore>()?;
    m.add_class::<watch::Watch>()?;
    m.add_class::<watch::AsyncWatch>()?;
    m.add_class::<values::Holder>()?;
    m.add_class::<values::Holders>()?;
    m.add_class::<values::Event>()?;
    m.add_class::<rt::AsyncRequest>()?;
    errors::register(m)?;
    m.add("DEFAULT_TTL", locker::DEFAULT_TTL.as_secs_f64())?;
    m.add("MAX_PERMITS", locker::MAX_PERMITS)?;
    Ok(())
}
