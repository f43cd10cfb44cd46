//! The client's shared streams: one task per kind (watches, keepalives),
//! started on first use and owned by [`Hubs`], which every clone of a
//! [`Client`] shares. Dropping the last clone drops the `Hubs`, which
//! aborts the tasks (and so closes their streams).
//!
//! The tasks themselves hold a *detached* client ([`Client::detached`]):
//! the same connections and settings, but `Hubs` of its own that never
//! starts anything. A task's client (and the streams it opened, which hold
//! it) therefore never keeps the user's `Hubs` alive: no cycle.

use std::sync::{Arc, Mutex, OnceLock};

use tokio::task::JoinHandle;

use super::Client;
use super::keepalives::KeepAlives;
use super::mirror::Mirrors;
use super::watches::WatchHub;

/// The background tasks of one client (and its clones).
#[derive(Default)]
pub(crate) struct Hubs {
    /// The one watch stream's hub.
    pub(super) watches: OnceLock<WatchHub>,
    /// The live copies of prefixes that waiters share.
    pub(super) mirrors: Mirrors,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Whether this is a task's own client, which must start nothing.
    detached: bool,
    /// The keepalive hub (`keepalives.rs`), once started.
    keepalives: OnceLock<KeepAlives>,
}

impl Hubs {
    /// Hands `task` to this owner, which aborts it on drop.
    pub(crate) fn own(&self, task: JoinHandle<()>) {
        debug_assert!(!self.detached, "a hub task started a hub");
        crate::rt::lock(&self.tasks).push(task);
    }

    /// The keepalive hub, started by `start` on first use.
    pub(super) fn keepalives(&self, start: impl FnOnce() -> KeepAlives) -> &KeepAlives {
        self.keepalives.get_or_init(start)
    }
}

impl Drop for Hubs {
    fn drop(&mut self) {
        for task in crate::rt::lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Client {
    /// This client's connections and settings, with `Hubs` of its own that
    /// start nothing: for the hub tasks, so that what they hold never keeps
    /// the user's client (and its hubs) alive.
    pub(crate) fn detached(&self) -> Client {
        Client {
            inner: self.inner.clone(),
            hubs: Arc::new(Hubs {
                watches: OnceLock::new(),
                mirrors: Mirrors::default(),
                tasks: Mutex::default(),
                detached: true,
                keepalives: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn hubs(&self) -> &Hubs {
        &self.hubs
    }
}
