//! The names a session has queued for: each name at most once per session,
//! and reserved until every key it may have put is known gone.
//!
//! A name's keys are the same for every request on one session (one per
//! shape: `{name}/{lease}`, `{name}/read/{lease}`, `{name}/permit/{lease}`),
//! so two requests for one name must never overlap: the second would take
//! over the first one's key (and its stale fencing token), and the first
//! one's cleanup could delete the second one's key.
//!
//! [`Slots`] is the bookkeeping as a pure state machine (data in, data
//! out; no I/O, no clock), explored exhaustively by its tests. Its rules:
//!
//! - A name has one owner at a time, named by a [`Ticket`]: a request or a
//!   guard (others are refused), or whoever is removing its keys (others
//!   wait). Only the ticket's holder changes the slot.
//! - The slot lists every key of this lease under the name that may exist
//!   (its *debts*), with its create revision when known. A key leaves the
//!   list only when it is known gone.
//! - The owner gives the name up with [`Slots::finish`]: the slot goes when
//!   no debt is left; otherwise it stays as a note, and the next request
//!   for the name pays the debts before it queues.
//!
//! So a cleanup never runs while another request owns the name, a key is
//! never forgotten while it may exist, and nobody reads or deletes a key
//! that the name may meanwhile have given to someone else.

use std::collections::{BTreeMap, BTreeSet};

use super::lease::SessionInner;
use crate::error::{Error, Result};
use crate::types::Revision;

/// A key of this session's lease under a name that may exist; its create
/// revision when known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Debt {
    pub(crate) key: String,
    pub(crate) rev: Option<Revision>,
}

/// Who owns a name: handed out by [`Slots::reserve`], given up with
/// [`Slots::finish`]. Whoever has it may hand it on (to a background
/// task), never copy it to two places that both act.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct Ticket(u64);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Owner {
    /// Nobody: the debts are a note for the next request.
    Nobody,
    /// A request or a guard: other requests for the name are refused.
    Using(Ticket),
    /// Removing the name's keys: other requests for the name wait.
    Cleaning(Ticket),
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
struct Slot {
    owner: Owner,
    /// The create revision of the owner's key once known (for errors).
    rev: Revision,
    debts: Vec<Debt>,
}

/// What [`Slots::reserve`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reserve {
    /// The name is mine; delete these keys before queueing.
    Got(Ticket, Vec<Debt>),
    /// A request or guard owns the name (its key's create revision, 0
    /// while unknown).
    Busy(Revision),
    /// The name's keys are being removed: ask again once the slots change.
    Wait,
}

/// The per-name bookkeeping of one session.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct Slots {
    map: BTreeMap<String, Slot>,
    next: u64,
    /// On a session resumed on an earlier lease: the names already
    /// reserved once (`None`: a new lease, which has no earlier run).
    visited: Option<BTreeSet<String>>,
}

impl Slots {
    /// The slots of a new lease, or (`resumed`) of a lease taken over from
    /// an earlier run, whose keys under a name may be of any shape.
    pub(crate) fn new(resumed: bool) -> Slots {
        Slots {
            map: BTreeMap::new(),
            next: 1,
            visited: resumed.then(BTreeSet::new),
        }
    }

    /// Reserves `name` for a request whose key is `mine`. Returns the keys
    /// to delete before queueing: what earlier requests for the name left
    /// and, on a resumed session's first reservation of the name, the
    /// earlier run's keys in `every_shape` but `mine`. That one is owed too,
    /// not to be deleted now: the request finds it and keeps its place, and
    /// if the request ends before, its removal deletes it.
    pub(crate) fn reserve(&mut self, name: &str, mine: &str, every_shape: &[String]) -> Reserve {
        let slot = self.map.get(name);
        match slot.map(|s| s.owner) {
            Some(Owner::Using(_)) => return Reserve::Busy(slot.map_or(Revision(0), |s| s.rev)),
            Some(Owner::Cleaning(_)) => return Reserve::Wait,
            Some(Owner::Nobody) | None => {}
        }
        let ticket = Ticket(self.next);
        self.next += 1;
        let slot = self.map.entry(name.to_owned()).or_insert(Slot {
            owner: Owner::Nobody,
            rev: Revision(0),
            debts: Vec::new(),
        });
        slot.owner = Owner::Using(ticket);
        slot.rev = Revision(0);
        let mut to_pay = slot.debts.clone();
        if let Some(visited) = &mut self.visited {
            if visited.insert(name.to_owned()) {
                for key in every_shape {
                    owe(&mut slot.debts, key, None);
                    if key != mine {
                        owe(&mut to_pay, key, None);
                    }
                }
            }
        }
        Reserve::Got(ticket, to_pay)
    }

    /// The owner's slot, if `ticket` still owns `name`.
    fn owned(&mut self, name: &str, ticket: Ticket) -> Option<&mut Slot> {
        self.map
            .get_mut(name)
            .filter(|s| matches!(s.owner, Owner::Using(t) | Owner::Cleaning(t) if t == ticket))
    }

    /// `key` may exist from now on (an acquire that puts it is about to be
    /// sent); its create revision is not known yet.
    pub(crate) fn may_put(&mut self, name: &str, ticket: Ticket, key: &str) {
        if let Some(slot) = self.owned(name, ticket) {
            owe(&mut slot.debts, key, None);
        }
    }

    /// `key` exists with create revision `rev`.
    pub(crate) fn known(&mut self, name: &str, ticket: Ticket, key: &str, rev: Revision) {
        if let Some(slot) = self.owned(name, ticket) {
            slot.rev = rev;
            owe(&mut slot.debts, key, Some(rev));
        }
    }

    /// `key` is known gone (deleted, or never put).
    pub(crate) fn gone(&mut self, name: &str, ticket: Ticket, key: &str) {
        if let Some(slot) = self.owned(name, ticket) {
            slot.debts.retain(|d| d.key != key);
        }
    }

    /// Every key of the lease is gone (it was revoked).
    pub(crate) fn all_gone(&mut self, name: &str, ticket: Ticket) {
        if let Some(slot) = self.owned(name, ticket) {
            slot.debts.clear();
        }
    }

    /// The keys the owner still has to delete.
    pub(crate) fn debts(&mut self, name: &str, ticket: Ticket) -> Vec<Debt> {
        self.owned(name, ticket)
            .map(|s| s.debts.clone())
            .unwrap_or_default()
    }

    /// The owner starts removing the name's keys: other requests for the
    /// name wait for it instead of being refused. False if `ticket` does
    /// not own the name.
    pub(crate) fn clean(&mut self, name: &str, ticket: Ticket) -> bool {
        match self.owned(name, ticket) {
            Some(slot) => {
                slot.owner = Owner::Cleaning(ticket);
                true
            }
            None => false,
        }
    }

    /// The owner gives the name up: it is free when no debt is left, else
    /// the debts stay as a note for the next request. Returns whether the
    /// name is free of keys.
    pub(crate) fn finish(&mut self, name: &str, ticket: Ticket) -> bool {
        let Some(slot) = self.owned(name, ticket) else {
            return false;
        };
        if slot.debts.is_empty() {
            self.map.remove(name);
            true
        } else {
            slot.owner = Owner::Nobody;
            false
        }
    }
}

/// Adds `key` to `debts`, or updates its revision when `rev` is known.
fn owe(debts: &mut Vec<Debt>, key: &str, rev: Option<Revision>) {
    match debts.iter_mut().find(|d| d.key == key) {
        Some(d) => d.rev = rev.or(d.rev),
        None => debts.push(Debt {
            key: key.to_owned(),
            rev,
        }),
    }
}

impl SessionInner {
    /// Applies `f` to the session's slots, then wakes the requests waiting
    /// for a name (each looks again).
    pub(crate) fn slots<R>(&self, f: impl FnOnce(&mut Slots) -> R) -> R {
        let r = f(&mut crate::rt::lock(&self.slots));
        self.slots_changed.send_replace(());
        r
    }

    /// Reserves a name on this session, waiting while its keys are being
    /// removed. Returns the ticket and the keys to delete before queueing
    /// (see [`Slots::reserve`]).
    ///
    /// # Errors
    /// [`Error::AlreadyLocked`] while a request or guard owns the name.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is reserved until it returns.
    pub(crate) async fn reserve(
        &self,
        name: &str,
        mine: &str,
        every_shape: &[String],
    ) -> Result<(Ticket, Vec<Debt>)> {
        loop {
            // Subscribed before the look, so no change after it is missed.
            let mut changed = self.slots_changed.subscribe();
            let decided = crate::rt::lock(&self.slots).reserve(name, mine, every_shape);
            match decided {
                Reserve::Got(ticket, debts) => return Ok((ticket, debts)),
                Reserve::Busy(revision) => {
                    return Err(Error::AlreadyLocked {
                        name: name.to_owned(),
                        revision,
                    });
                }
                Reserve::Wait => {
                    // The sender lives as long as the session.
                    let _ = changed.changed().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
