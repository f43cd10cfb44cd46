//! An exhaustive exploration of the slot machine: a few requests for one
//! name on one session, each able to give up, fail or be dropped at every
//! await, with the background removals their drops start, against a model
//! of etcd's keys. Every interleaving is walked (depth first, each state
//! once); in every state no name is held twice, no holder's key is gone,
//! and every key that exists is still owed by the name; no state hangs.
//!
//! The requests follow what `queue::release::Reservation` and
//! `queue::entry` do, one atomic step per wire call.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const NAME: &str = "n";
const SHAPES: [&str; 2] = ["n/p", "n/r"];

/// Where a request (or a background removal) is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Pc {
    /// About to reserve the name.
    Start,
    /// Deleting `debts` (`read`: what a read of the first one, of unknown
    /// revision, found), then queueing (`queue`) or giving the name up.
    Pay {
        t: Ticket,
        debts: Vec<Debt>,
        read: Option<Option<u64>>,
        queue: bool,
    },
    /// A background removal handed `t`, not begun yet.
    Spawned {
        t: Ticket,
    },
    /// The acquire is about to be sent.
    Acquire {
        t: Ticket,
    },
    Held {
        t: Ticket,
        rev: u64,
    },
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Actor {
    key: &'static str,
    pc: Pc,
    /// A removal a drop started: its drop only leaves a note.
    background: bool,
    /// Requests this caller makes after this one ends (or is dropped).
    rounds: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct World {
    slots: Slots,
    /// etcd: key -> create revision.
    etcd: BTreeMap<&'static str, u64>,
    rev: u64,
    actors: Vec<Actor>,
    /// Faults still allowed (gives up, failures, drops).
    faults: u8,
}

/// How a wire call ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Call {
    Answered,
    /// Applied, but the answer was lost (or came after the give-up).
    AppliedLost,
    /// Never applied.
    Failed,
}

impl World {
    fn new(
        keys: &[&'static str],
        rounds: u8,
        resumed: bool,
        faults: u8,
        etcd: &[(&'static str, u64)],
    ) -> World {
        World {
            slots: Slots::new(resumed),
            etcd: etcd.iter().copied().collect(),
            rev: 100,
            actors: keys
                .iter()
                .map(|&key| Actor {
                    key,
                    pc: Pc::Start,
                    background: false,
                    rounds,
                })
                .collect(),
            faults,
        }
    }

    fn shapes() -> Vec<String> {
        SHAPES.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The reservation of actor `a` (a request about to start).
    fn start_step(&self, a: usize) -> Option<World> {
        let key = self.actors[a].key;
        let mut w = self.clone();
        let decided = w.slots.reserve(NAME, key, &World::shapes());
        // A removal that never began: after its patience, the waiting
        // request takes the name over.
        let decided = match decided {
            Reserve::Wait(Some(stalled)) => w.slots.take_over(NAME, stalled, key, &World::shapes()),
            other => other,
        };
        match decided {
            Reserve::Got(t, debts) => {
                w.actors[a].pc = Pc::Pay {
                    t,
                    debts,
                    read: None,
                    queue: true,
                };
            }
            Reserve::Busy(_) => w.end(a),
            Reserve::Wait(_) => return None,
        }
        Some(w)
    }

    /// Every world one step of actor `a` can lead to.
    fn steps(&self, a: usize) -> Vec<World> {
        let actor = &self.actors[a];
        let mut out = Vec::new();
        match actor.pc.clone() {
            Pc::Done => {}
            Pc::Start => out.extend(self.start_step(a)),
            Pc::Spawned { t } => {
                let mut w = self.clone();
                if w.slots.clean(NAME, t) {
                    w.leave(a, t);
                } else {
                    w.end(a);
                }
                out.push(w);
            }
            Pc::Pay {
                t,
                debts,
                read,
                queue,
            } => {
                for call in self.calls() {
                    out.extend(self.pay_step(a, t, &debts, read, queue, call));
                }
                out.extend(self.drop_at(a, t));
            }
            Pc::Acquire { t } => {
                for call in self.calls() {
                    let mut w = self.clone();
                    let key = actor.key;
                    if call != Call::Failed && !w.etcd.contains_key(key) {
                        w.rev += 1;
                        w.etcd.insert(key, w.rev);
                    }
                    if call == Call::Answered {
                        let rev = w.etcd[key];
                        w.slots.known(NAME, t, key, Revision(rev as i64));
                        w.actors[a].pc = Pc::Held { t, rev };
                    } else {
                        w.faults -= 1;
                        w.leave(a, t);
                    }
                    out.push(w);
                }
                out.extend(self.drop_at(a, t));
            }
            Pc::Held { t, .. } => {
                let mut w = self.clone();
                w.leave(a, t);
                out.push(w);
                out.extend(self.drop_at(a, t));
            }
        }
        out
    }

    fn calls(&self) -> Vec<Call> {
        if self.faults > 0 {
            vec![Call::Answered, Call::AppliedLost, Call::Failed]
        } else {
            vec![Call::Answered]
        }
    }

    /// The foreground leave: the name is being cleaned, every debt paid.
    fn leave(&mut self, a: usize, t: Ticket) {
        assert!(self.slots.clean(NAME, t), "a leave without the name");
        let debts = self.slots.debts(NAME, t);
        self.actors[a].pc = Pc::Pay {
            t,
            debts,
            read: None,
            queue: false,
        };
    }

    /// One wire call of a payment, ending as `call`.
    fn pay_step(
        &self,
        a: usize,
        t: Ticket,
        debts: &[Debt],
        read: Option<Option<u64>>,
        queue: bool,
        call: Call,
    ) -> Vec<World> {
        let mut w = self.clone();
        let Some(d) = debts.first() else {
            if call != Call::Answered {
                return Vec::new();
            }
            if queue {
                w.slots.may_put(NAME, t, w.actors[a].key);
                w.actors[a].pc = Pc::Acquire { t };
            } else {
                w.slots.finish(NAME, t);
                w.end(a);
            }
            return vec![w];
        };
        let key: &'static str = SHAPES.iter().find(|s| **s == d.key).expect("a known key");
        let rest = debts[1..].to_vec();
        let guarded = match (d.rev, read) {
            (Some(r), _) => Some(Some(r.0 as u64)),
            (None, Some(found)) => Some(found),
            (None, None) => None,
        };
        match guarded {
            // A read: no effect on etcd.
            None => {
                if call == Call::AppliedLost {
                    return Vec::new();
                }
                if call == Call::Failed {
                    w.faults -= 1;
                    return w.pay_failed(a, t);
                }
                let found = w.etcd.get(key).copied();
                w.actors[a].pc = Pc::Pay {
                    t,
                    debts: debts.to_vec(),
                    read: Some(found),
                    queue,
                };
                vec![w]
            }
            // A guarded delete (nothing to delete when the read found none).
            Some(expected) => {
                if call != Call::Failed
                    && expected.is_some()
                    && w.etcd.get(key).copied() == expected
                {
                    w.etcd.remove(key);
                }
                if call != Call::Answered {
                    w.faults -= 1;
                    return w.pay_failed(a, t);
                }
                w.slots.gone(NAME, t, key);
                w.actors[a].pc = Pc::Pay {
                    t,
                    debts: rest,
                    read: None,
                    queue,
                };
                vec![w]
            }
        }
    }

    /// A payment failed. A request (its start, or its leave) ends with the
    /// error, and its drop hands the removal to a background task; that
    /// task tries again (the session lives) or gives the name up with its
    /// debts as a note (the session was lost).
    fn pay_failed(mut self, a: usize, t: Ticket) -> Vec<World> {
        if !self.actors[a].background {
            self.hand_on(a, t);
            return vec![self];
        }
        let mut retry = self.clone();
        retry.leave(a, t);
        self.slots.finish(NAME, t);
        self.end(a);
        vec![retry, self]
    }

    /// Actor `a` ended: its caller makes its next request, if any.
    fn end(&mut self, a: usize) {
        let actor = &mut self.actors[a];
        actor.pc = Pc::Done;
        if !actor.background && actor.rounds > 0 {
            actor.rounds -= 1;
            actor.pc = Pc::Start;
        }
    }

    /// The drop of actor `a` at an await (a fault).
    fn drop_at(&self, a: usize, t: Ticket) -> Vec<World> {
        if self.faults == 0 {
            return Vec::new();
        }
        let mut w = self.clone();
        w.faults -= 1;
        w.hand_on(a, t);
        // The same drop outside a runtime: only a note is left.
        let mut note = self.clone();
        note.faults -= 1;
        note.slots.finish(NAME, t);
        note.end(a);
        vec![w, note]
    }

    /// What `Reservation`'s drop does with a runtime: a background task
    /// takes the ticket over and leaves; a background task's own drop
    /// leaves a note.
    fn hand_on(&mut self, a: usize, t: Ticket) {
        let key = self.actors[a].key;
        let background = self.actors[a].background;
        self.end(a);
        if background {
            self.slots.finish(NAME, t);
            return;
        }
        assert!(
            self.slots.hand_over(NAME, t),
            "a hand-over without the name"
        );
        self.actors.push(Actor {
            key,
            pc: Pc::Spawned { t },
            background: true,
            rounds: 0,
        });
    }

    /// The promises, checked in every state.
    fn check(&self) -> Result<(), String> {
        let held: Vec<_> = self
            .actors
            .iter()
            .filter_map(|a| match a.pc {
                Pc::Held { rev, .. } => Some((a.key, rev)),
                _ => None,
            })
            .collect();
        if held.len() > 1 {
            return Err(format!("the name is held twice: {held:?}"));
        }
        for (key, rev) in &held {
            if self.etcd.get(key) != Some(rev) {
                return Err(format!("a holder's key {key}@{rev} is gone"));
            }
        }
        let visited = self.slots.visited.as_ref().is_none_or(|v| v.contains(NAME));
        if visited {
            let owed = self
                .slots
                .map
                .get(NAME)
                .map(|s| s.debts.clone())
                .unwrap_or_default();
            for (key, rev) in &self.etcd {
                let covered = owed
                    .iter()
                    .any(|d| d.key == *key && d.rev.is_none_or(|r| r.0 as u64 == *rev));
                if !covered {
                    return Err(format!(
                        "{key}@{rev} exists, but the name no longer owes it: {owed:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.actors.iter().all(|a| a.pc == Pc::Done)
    }
}

/// Walks every interleaving from `start`; returns how many states it saw.
fn explore(start: World) -> usize {
    let all_faults = start.faults;
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    let mut ends = 0;
    while let Some(w) = stack.pop() {
        if !seen.insert(w.clone()) {
            continue;
        }
        if let Err(e) = w.check() {
            panic!("{e}\nin {w:#?}");
        }
        let next: Vec<World> = (0..w.actors.len()).flat_map(|a| w.steps(a)).collect();
        if next.is_empty() {
            assert!(
                w.finished(),
                "no step can be taken, yet not all ended: {w:#?}"
            );
            ends += 1;
            // Ended with no fault at all: nothing is left anywhere.
            if w.faults == all_faults {
                assert!(w.etcd.is_empty(), "a key outlived every request: {w:#?}");
                assert!(
                    w.slots.map.is_empty(),
                    "a slot outlived every request: {w:#?}"
                );
            }
        }
        stack.extend(next);
    }
    assert!(ends > 0);
    eprintln!("{} states, {ends} ends", seen.len());
    seen.len()
}

#[test]
fn two_requests_of_one_shape_never_hold_twice_nor_forget_a_key() {
    let states = explore(World::new(&["n/p", "n/p"], 1, false, 3, &[]));
    assert!(states > 1_000, "{states} states");
}

#[test]
fn three_requests_with_two_faults_never_hold_twice_nor_forget_a_key() {
    let states = explore(World::new(&["n/p", "n/p", "n/p"], 1, false, 2, &[]));
    assert!(states > 1_000, "{states} states");
}

#[test]
fn requests_of_two_shapes_on_a_resumed_session_never_forget_the_earlier_runs_keys() {
    let earlier = [("n/r", 7), ("n/p", 8)];
    for keys in [["n/p", "n/r"], ["n/r", "n/p"]] {
        let states = explore(World::new(&keys, 1, true, 2, &earlier));
        assert!(states > 1_000, "{states} states");
    }
}

#[test]
fn a_name_is_refused_while_used_and_waited_for_while_cleaned() {
    let mut s = Slots::new(false);
    let shapes = World::shapes();
    let Reserve::Got(t, debts) = s.reserve(NAME, "n/p", &shapes) else {
        panic!("a free name")
    };
    assert!(debts.is_empty());
    s.may_put(NAME, t, "n/p");
    s.known(NAME, t, "n/p", Revision(5));
    assert_eq!(s.reserve(NAME, "n/p", &shapes), Reserve::Busy(Revision(5)));
    assert!(s.clean(NAME, t));
    assert_eq!(s.reserve(NAME, "n/p", &shapes), Reserve::Wait(None));
    // Given up with its key still owed: a note for the next request.
    assert!(!s.finish(NAME, t));
    let Reserve::Got(t2, debts) = s.reserve(NAME, "n/r", &shapes) else {
        panic!("a noted name is free")
    };
    assert_eq!(
        debts,
        [Debt {
            key: "n/p".into(),
            rev: Some(Revision(5))
        }]
    );
    // The old ticket changes nothing any more.
    s.gone(NAME, t, "n/p");
    assert!(!s.finish(NAME, t));
    assert_eq!(s.debts(NAME, t2).len(), 1);
    s.gone(NAME, t2, "n/p");
    assert!(s.finish(NAME, t2));
    assert!(s.map.is_empty());
}
