//! The names a session has queued for: each name at most once per session,
//! and reserved until its key is known to be gone.
//!
//! A name's keys are the same for every request on one session (one per
//! shape: `{name}/{lease}`, `{name}/read/{lease}`, `{name}/permit/{lease}`),
//! so two requests for one name must never overlap: the second would take
//! over the first one's key (and its stale fencing token), and the first
//! one's cleanup could delete the second one's key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use tokio::sync::watch;

use super::lease::SessionInner;
use crate::error::{Error, Result};
use crate::types::Revision;

/// The state of one name on a session.
pub(crate) enum Slot {
    /// A request or a guard owns the name; its key's create revision (0
    /// while the acquire transaction is in flight).
    Owned(Revision),
    /// A background task is deleting the name's key; requests for the name
    /// wait until it is done.
    Cleaning(watch::Receiver<()>),
    /// The key may still exist with this create revision (`None`: unknown):
    /// the next request deletes it before queueing. `Mark` tells whose
    /// note it is.
    Stale(Option<Revision>, Mark),
}

/// Whose note a stale slot is: only the one who left it may clear it, and
/// only while it is still there (a new request may have reserved the name
/// meanwhile; clearing its slot would let a third request in).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Mark(u64);

impl Mark {
    fn new() -> Mark {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Mark(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A key left behind by an earlier request for the same name, to be
/// deleted before queueing again (its create revision, when known).
pub(crate) struct StaleKey(pub(crate) Option<Revision>);

impl SessionInner {
    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        crate::rt::lock(&self.names)
    }

    /// Reserves a name on this session, waiting for a background cleanup
    /// of the name to finish first. Returns the key an earlier request may
    /// have left behind, which the caller deletes before queueing.
    ///
    /// # Errors
    /// [`Error::AlreadyLocked`] while a request or guard owns the name.
    pub(crate) async fn reserve(&self, name: &str) -> Result<Option<StaleKey>> {
        loop {
            let mut cleaning = {
                let mut slots = self.slots();
                match slots.get(name) {
                    Some(Slot::Owned(rev)) => {
                        return Err(Error::AlreadyLocked {
                            name: name.to_owned(),
                            revision: *rev,
                        });
                    }
                    Some(Slot::Cleaning(rx)) if rx.has_changed().is_ok() => rx.clone(),
                    other => {
                        let stale = match other {
                            None => None,
                            Some(Slot::Stale(rev, _)) => Some(StaleKey(*rev)),
                            // The cleanup task ended without saying how (its
                            // runtime shut down): the key may remain.
                            Some(_) => Some(StaleKey(None)),
                        };
                        slots.insert(name.to_owned(), Slot::Owned(Revision(0)));
                        return Ok(stale);
                    }
                }
            };
            // Ends when the cleanup task drops its sender.
            let _ = cleaning.changed().await;
        }
    }

    /// On a session resumed on an earlier lease, whether `name` may still
    /// hold keys of the earlier run in another shape than the one asked for
    /// now: no request here has removed them yet. The caller removes them,
    /// then calls [`inherited_removed`](Self::inherited_removed).
    pub(crate) fn may_inherit(&self, name: &str) -> bool {
        self.inherited
            .as_ref()
            .is_some_and(|removed| !crate::rt::lock(removed).contains(name))
    }

    /// The keys of the earlier run under `name` are gone: later requests
    /// for the name need not look. Only said once the deletes all ended, so
    /// that a request given up (or failed) half-way leaves the name to the
    /// next one.
    pub(crate) fn inherited_removed(&self, name: &str) {
        if let Some(removed) = &self.inherited {
            crate::rt::lock(removed).insert(name.to_owned());
        }
    }

    /// Records the create revision of the name's key once it is known.
    pub(crate) fn set_revision(&self, name: &str, rev: Revision) {
        if let Some(slot) = self.slots().get_mut(name) {
            *slot = Slot::Owned(rev);
        }
    }

    /// Frees the name: its key is gone.
    pub(crate) fn unreserve(&self, name: &str) {
        self.slots().remove(name);
    }

    /// Frees the name, but remembers that its key may still exist; the
    /// mark clears the note with [`clear`](Self::clear).
    pub(crate) fn mark_stale(&self, name: &str, rev: Option<Revision>) -> Mark {
        let mark = Mark::new();
        self.slots().insert(name.to_owned(), Slot::Stale(rev, mark));
        mark
    }

    /// Frees the name once its key is known gone, if the note `mark` is
    /// still there; a request that reserved the name meanwhile keeps it.
    /// Returns whether the note was still there.
    pub(crate) fn clear(&self, name: &str, mark: Mark) -> bool {
        let mut slots = self.slots();
        let ours = matches!(slots.get(name), Some(Slot::Stale(_, m)) if *m == mark);
        if ours {
            slots.remove(name);
        }
        ours
    }

    /// Runs `cleanup` (which deletes the name's key and says whether it
    /// succeeded) in the background when a tokio runtime is there; requests
    /// for the name wait for it. Without a runtime, the name is marked
    /// stale and the next request deletes the key first.
    pub(crate) fn clean_in_background<F>(
        self: &Arc<Self>,
        name: &str,
        rev: Option<Revision>,
        cleanup: F,
    ) where
        F: std::future::Future<Output = bool> + Send + 'static,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            let _ = self.mark_stale(name, rev);
            return;
        };
        let (tx, rx) = watch::channel(());
        self.slots()
            .insert(name.to_owned(), Slot::Cleaning(rx.clone()));
        let session = self.clone();
        let name = name.to_owned();
        // Owned by the runtime; it ends when the cleanup's calls end
        // (each bounded by the request timeout).
        rt.spawn(async move {
            let deleted = cleanup.await;
            let mut slots = session.slots();
            let ours = matches!(slots.get(&name), Some(Slot::Cleaning(r)) if r.same_channel(&rx));
            if ours {
                if deleted {
                    slots.remove(&name);
                } else {
                    slots.insert(name, Slot::Stale(rev, Mark::new()));
                }
            }
            drop(slots);
            drop(tx);
        });
    }
}
