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

use std::collections::BTreeSet;

use tokio::time::Instant;

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
    /// Removing the name's keys: other requests for the name wait. With
    /// `started` false, a task is to do it but has not begun (its runtime
    /// may never run it): a request that waited long enough may take the
    /// name over.
    Cleaning { ticket: Ticket, started: bool },
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
    /// Carries the ticket of a removal not begun yet, which
    /// [`take_over`](Slots::take_over) may end.
    Wait(Option<Ticket>),
}

/// A session's slots, by name: a vector kept sorted by name. Most sessions
/// have one name at a time or a few (a lock's own lease: exactly one),
/// where a tree's first node alone is some 800 bytes.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
struct ByName(Vec<(String, Slot)>);

impl ByName {
    fn find(&self, name: &str) -> std::result::Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    fn get(&self, name: &str) -> Option<&Slot> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Slot> {
        self.find(name).ok().map(|i| &mut self.0[i].1)
    }

    fn get_or_insert(&mut self, name: &str, new: impl FnOnce() -> Slot) -> &mut Slot {
        let i = self.find(name).unwrap_or_else(|i| {
            if self.0.capacity() == 0 {
                self.0.reserve_exact(1);
            }
            self.0.insert(i, (name.to_owned(), new()));
            i
        });
        &mut self.0[i].1
    }

    fn remove(&mut self, name: &str) {
        if let Ok(i) = self.find(name) {
            self.0.remove(i);
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The per-name bookkeeping of one session.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct Slots {
    map: ByName,
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
            map: ByName::default(),
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
            Some(Owner::Cleaning { ticket, started }) => {
                return Reserve::Wait((!started).then_some(ticket));
            }
            Some(Owner::Nobody) | None => {}
        }
        self.grant(name, mine, every_shape)
    }

    /// Reserves `name` as [`reserve`](Self::reserve) does, but also when a
    /// removal of its keys that `stalled` was to do has still not begun:
    /// that removal is ended (its ticket changes nothing any more), and its
    /// keys stay owed, for the new owner to delete.
    pub(crate) fn take_over(
        &mut self,
        name: &str,
        stalled: Ticket,
        mine: &str,
        every_shape: &[String],
    ) -> Reserve {
        let owner = self.map.get(name).map(|s| s.owner);
        if owner
            == Some(Owner::Cleaning {
                ticket: stalled,
                started: false,
            })
        {
            return self.grant(name, mine, every_shape);
        }
        self.reserve(name, mine, every_shape)
    }

    /// Makes a new ticket the owner of `name` (see [`reserve`](Self::reserve)).
    fn grant(&mut self, name: &str, mine: &str, every_shape: &[String]) -> Reserve {
        let ticket = Ticket(self.next);
        self.next += 1;
        let slot = self.map.get_or_insert(name, || Slot {
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
            .filter(|s| {
                matches!(s.owner, Owner::Using(t) | Owner::Cleaning { ticket: t, .. } if t == ticket)
            })
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
    /// not own the name (a stalled removal that was taken over).
    pub(crate) fn clean(&mut self, name: &str, ticket: Ticket) -> bool {
        self.set_cleaning(name, ticket, true)
    }

    /// The owner hands the removal of the name's keys to a task that has
    /// not begun yet: requests wait for it, and may take the name over if
    /// it never begins.
    pub(crate) fn hand_over(&mut self, name: &str, ticket: Ticket) -> bool {
        self.set_cleaning(name, ticket, false)
    }

    fn set_cleaning(&mut self, name: &str, ticket: Ticket, started: bool) -> bool {
        match self.owned(name, ticket) {
            Some(slot) => {
                slot.owner = Owner::Cleaning { ticket, started };
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
        self.wake_waiting();
        r
    }

    /// Wakes the requests waiting for a name, if any ever waited.
    fn wake_waiting(&self) {
        if let Some(tx) = self.slots_changed.get() {
            tx.send_replace(());
        }
    }

    /// Reserves a name on this session, waiting while its keys are being
    /// removed. Returns the ticket and the keys to delete before queueing
    /// (see [`Slots::reserve`]).
    ///
    /// # Errors
    /// [`Error::AlreadyLocked`] while a request or guard owns the name; the
    /// session's loss or close, also when it comes during the wait.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is reserved until it returns.
    pub(crate) async fn reserve(
        &self,
        name: &str,
        mine: &str,
        every_shape: &[String],
    ) -> Result<(Ticket, Vec<Debt>)> {
        let mut stalled_for = None;
        loop {
            // The session may have ended while the name was being cleaned.
            self.check_alive()?;
            // Subscribed before the look, so no change after it is missed
            // (no channel yet: nothing has waited; see `Reserve::Wait`).
            let mut changed = self.slots_changed.get().map(|tx| tx.subscribe());
            let decided = {
                let mut slots = crate::rt::lock(&self.slots);
                match stalled_for.take() {
                    Some(stalled) => slots.take_over(name, stalled, mine, every_shape),
                    None => slots.reserve(name, mine, every_shape),
                }
            };
            match decided {
                Reserve::Got(ticket, debts) => {
                    self.wake_waiting();
                    return Ok((ticket, debts));
                }
                Reserve::Busy(revision) => {
                    return Err(Error::AlreadyLocked {
                        name: name.to_owned(),
                        revision,
                    });
                }
                Reserve::Wait(stalled) => {
                    let Some(changed) = changed.as_mut() else {
                        // The session's first wait: make the channel, then
                        // look again, subscribed before the look.
                        self.slots_changed
                            .get_or_init(|| tokio::sync::watch::channel(()).0);
                        continue;
                    };
                    // A removal that has not begun within a request
                    // timeout is not coming (its runtime is not running
                    // it): this request then takes the name over and
                    // deletes the keys itself.
                    let patience = stalled.map(|_| Instant::now() + self.client.request_timeout());
                    // The sender lives as long as the session.
                    tokio::select! {
                        _ = changed.changed() => {}
                        _ = self.wait_lost() => {}
                        _ = crate::rt::sleep_until_opt(patience) => stalled_for = stalled,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
