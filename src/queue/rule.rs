//! "Is it my turn?": the one thing that differs between the primitives.
//!
//! A [`Rule`] says which keys of a name's queue can stand in my way (the
//! *blockers*: a range of keys under `{name}/`) and how many of them may
//! have been created before mine while I still hold (`limit`):
//!
//! | primitive | blockers | limit |
//! |---|---|---|
//! | mutex, election | every key under `{name}/` | 1 |
//! | semaphore of N | every key under `{name}/` | N |
//! | reader | writers' keys only | 1 |
//! | writer | every key | 1 |
//!
//! I hold when fewer than `limit` blockers were created before my key. No
//! key can be created with an older revision than mine, so once that is
//! true it stays true until I leave. While it is not, the `limit` newest
//! blockers older than mine are the *witnesses*: while all of them exist,
//! at least `limit` blockers precede me, so I wait until one of them is
//! deleted, and only then read again. When the witnesses are all the
//! blockers before me (`last`), the first deletion makes it my turn, if my
//! own key still existed at that revision.
//!
//! The rule only builds reads and judges their answers; it sends nothing.

use super::key;
use crate::client::prefix_end;
use crate::types::{KeyValue, LeaseId, Revision};
use crate::wire::etcdserverpb as pb;
use crate::wire::mvccpb;
use pb::range_request::{SortOrder, SortTarget};

/// Where readers' keys live under `{name}/`.
pub(crate) const READERS: &str = "read/";

/// Where a semaphore's holders' keys live under `{name}/`.
pub(crate) const PERMITS: &str = "permit/";

/// A key that stands between me and my turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Witness {
    pub(crate) key: Vec<u8>,
    pub(crate) rev: Revision,
}

/// What a read of the queue says about my turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Fewer than `limit` blockers precede my key: I hold.
    Mine,
    /// Wait until one of `witnesses` is deleted. With `last`, they are all
    /// the blockers before me: the first deletion makes it my turn.
    Wait { witnesses: Vec<Witness>, last: bool },
    /// The answer does not tell (a read raced a change): read again.
    Unknown,
}

/// Which keys under a name block a contender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blockers {
    /// Every key under `{name}/`.
    All,
    /// Every key under `{name}/` but readers' (`{name}/read/...`).
    Writers,
}

/// What my own key looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `{name}/{lease hex}`: a mutex holder, writer, candidate or permit.
    Plain,
    /// `{name}/read/{lease hex}`: a reader, recognisable from the key alone.
    Reader,
    /// `{name}/permit/{lease hex}`: a semaphore holder, recognisable too.
    Permit,
}

/// The rule of one primitive: hold when fewer than `limit` of `blockers`
/// were created before my key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) blockers: Blockers,
    pub(crate) limit: u32,
    pub(crate) shape: Shape,
    /// Whether every user of the name must agree on `limit`, stored in the
    /// key `{name}.permits` and compared by every acquire, and use it only
    /// as a semaphore (no key outside `{name}/permit/`).
    pub(crate) agreed_limit: bool,
}

impl Rule {
    /// The mutex (and election, and writer) rule: no key created before mine.
    pub(crate) const EXCLUSIVE: Rule = Rule {
        blockers: Blockers::All,
        limit: 1,
        shape: Shape::Plain,
        agreed_limit: false,
    };

    /// A reader: no writer's key created before mine.
    pub(crate) const READER: Rule = Rule {
        blockers: Blockers::Writers,
        limit: 1,
        shape: Shape::Reader,
        agreed_limit: false,
    };

    /// A semaphore of `permits`: fewer than `permits` keys created before
    /// mine, with the limit agreed by every user of the name.
    pub(crate) const fn semaphore(permits: u32) -> Rule {
        Rule {
            blockers: Blockers::All,
            limit: permits,
            shape: Shape::Permit,
            agreed_limit: true,
        }
    }

    /// My key on `lease`.
    pub(crate) fn key(&self, name: &str, lease: LeaseId) -> String {
        match self.shape {
            Shape::Plain => key::key(name, lease),
            Shape::Reader => format!("{name}/{READERS}{lease}"),
            Shape::Permit => format!("{name}/{PERMITS}{lease}"),
        }
    }

    /// Every key a session on `lease` can have under `name`, whatever the
    /// primitive: a plain key, a reader's, a permit's.
    pub(crate) fn every_shape(name: &str, lease: LeaseId) -> [String; 3] {
        [
            key::key(name, lease),
            format!("{name}/{READERS}{lease}"),
            format!("{name}/{PERMITS}{lease}"),
        ]
    }

    /// Whether a waiter counts the blockers before it on the client's live
    /// copy of the name's keys rather than watching `limit` witnesses: a
    /// limit above one, over every key of the name (a semaphore's).
    pub(crate) fn counts_locally(&self) -> bool {
        self.limit > 1 && self.blockers == Blockers::All
    }

    /// Whether a waiter may count the blockers before it on the client's
    /// live copy of the name's keys when other contenders of the client
    /// share it: when every key of the name is a blocker (all but a
    /// reader).
    pub(crate) fn counts_on_copy(&self) -> bool {
        self.blockers == Blockers::All
    }

    /// Whether my own key is one of the blockers (all but a reader's): a
    /// free branch then never finds my key there already.
    pub(crate) fn own_key_blocks(&self) -> bool {
        self.blockers == Blockers::All
    }

    /// The key ranges that hold blockers, as `(key, range_end)`.
    pub(crate) fn ranges(&self, prefix: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let p = prefix.as_bytes();
        match self.blockers {
            Blockers::All => vec![(p.to_vec(), prefix_end(p))],
            // Lease ids are lowercase hex, which sorts before "read/": the
            // writers' keys of locker and etcdctl are all in the first
            // range; the second holds any other key after the readers'.
            Blockers::Writers => outside(prefix, READERS),
        }
    }

    /// The compares that hold when no blocker exists at all.
    pub(crate) fn none_exist(&self, prefix: &str) -> Vec<pb::Compare> {
        self.ranges(prefix)
            .into_iter()
            .map(|(key, range_end)| pb::Compare {
                range_end,
                ..compare_create(&key, Revision(0))
            })
            .collect()
    }

    /// The oldest `limit` blockers of each range (ascending): the holders.
    pub(crate) fn holder_reads(&self, prefix: &str) -> Vec<pb::RangeRequest> {
        self.ranges(prefix)
            .into_iter()
            .map(|(key, range_end)| pb::RangeRequest {
                key,
                range_end,
                sort_order: SortOrder::Ascend as i32,
                sort_target: SortTarget::Create as i32,
                limit: i64::from(self.limit),
                ..Default::default()
            })
            .collect()
    }

    /// Sent with the put of my key, when it is the newest key of all: the
    /// holders, then the `limit + 1` newest blockers of each range (mine
    /// among them when my key is a blocker), keys only.
    pub(crate) fn after_put_reads(&self, prefix: &str) -> Vec<pb::RangeRequest> {
        let holders = self.holder_reads(prefix);
        let newest = holders.iter().map(|h| pb::RangeRequest {
            sort_order: SortOrder::Descend as i32,
            limit: i64::from(self.limit) + 1,
            keys_only: true,
            ..h.clone()
        });
        let newest: Vec<_> = newest.collect();
        holders.into_iter().chain(newest).collect()
    }

    /// Knowing my key's create revision: the `limit` newest blockers
    /// created before it (the witnesses), then the holders.
    pub(crate) fn turn_reads(
        &self,
        prefix: &str,
        mine: Revision,
        serializable: bool,
    ) -> Vec<pb::RangeRequest> {
        let holders = self.holder_reads(prefix);
        let witnesses = holders.iter().map(|h| pb::RangeRequest {
            sort_order: SortOrder::Descend as i32,
            max_create_revision: mine.0 - 1,
            keys_only: true,
            serializable,
            ..h.clone()
        });
        let witnesses: Vec<_> = witnesses.collect();
        let holders = holders
            .into_iter()
            .map(|h| pb::RangeRequest { serializable, ..h });
        witnesses.into_iter().chain(holders).collect()
    }

    /// Judges the answers to [`holder_reads`](Self::holder_reads): mine
    /// when fewer than `limit` holders precede my key; else unknown (where
    /// I wait needs [`turn_reads`](Self::turn_reads)).
    pub(crate) fn judge_holders(&self, mine: Revision, holders: &[&pb::RangeResponse]) -> Turn {
        let before = merged(holders, true, self.limit)
            .iter()
            .filter(|kv| kv.create_revision < mine.0)
            .count();
        if before < self.limit as usize {
            Turn::Mine
        } else {
            Turn::Unknown
        }
    }

    /// Judges the answers to [`after_put_reads`](Self::after_put_reads).
    pub(crate) fn judge_after_put(&self, mine: Revision, answers: &[&pb::RangeResponse]) -> Turn {
        let (holders, newest) = answers.split_at(answers.len() / 2);
        if self.judge_holders(mine, holders) == Turn::Mine {
            return Turn::Mine;
        }
        let witnesses: Vec<_> = merged(newest, false, self.limit + 1)
            .into_iter()
            .filter(|kv| kv.create_revision < mine.0)
            .take(self.limit as usize)
            .collect();
        let exactly = self.exactly_limit_before(newest, Some(mine));
        self.wait_on(witnesses, holders, exactly)
    }

    /// Whether `answers` (descending reads of the blockers) show exactly
    /// `limit` blockers created before `mine` (`None`: the reads hold only
    /// those): no read was cut short by its limit, and they hold that many.
    /// Keys created in one transaction share a revision, so the oldest and
    /// the newest blocker before mine having one revision does not make
    /// them one key.
    fn exactly_limit_before(&self, answers: &[&pb::RangeResponse], mine: Option<Revision>) -> bool {
        let before = answers
            .iter()
            .flat_map(|a| &a.kvs)
            .filter(|kv| mine.is_none_or(|m| kv.create_revision < m.0))
            .count();
        answers.iter().all(|a| !a.more) && before == self.limit as usize
    }

    /// Judges the answers to [`turn_reads`](Self::turn_reads).
    pub(crate) fn judge_turn(&self, answers: &[&pb::RangeResponse]) -> Turn {
        let (witnesses, holders) = answers.split_at(answers.len() / 2);
        let exactly = self.exactly_limit_before(witnesses, None);
        let witnesses = merged(witnesses, false, self.limit);
        if witnesses.len() < self.limit as usize {
            return Turn::Mine;
        }
        self.wait_on(witnesses, holders, exactly)
    }

    /// `limit` witnesses: wait on them; `last` when they are exactly the
    /// holders and no other blocker precedes me (`exactly`: `limit` of them
    /// precede me, no more).
    fn wait_on(
        &self,
        witnesses: Vec<&mvccpb::KeyValue>,
        holders: &[&pb::RangeResponse],
        exactly: bool,
    ) -> Turn {
        if witnesses.len() < self.limit as usize {
            // Not mine, yet fewer witnesses than the limit: the reads raced.
            return Turn::Unknown;
        }
        let mut held: Vec<i64> = merged(holders, true, self.limit)
            .iter()
            .map(|kv| kv.create_revision)
            .collect();
        let mut seen: Vec<i64> = witnesses.iter().map(|kv| kv.create_revision).collect();
        held.sort_unstable();
        seen.sort_unstable();
        Turn::Wait {
            last: exactly && held == seen,
            witnesses: witnesses
                .into_iter()
                .map(|kv| Witness {
                    key: kv.key.clone(),
                    rev: Revision(kv.create_revision),
                })
                .collect(),
        }
    }

    /// The first holder in `holders` (answers to
    /// [`holder_reads`](Self::holder_reads)), for a try that found the
    /// queue busy.
    pub(crate) fn first_holder(&self, holders: &[&pb::RangeResponse]) -> Option<KeyValue> {
        merged(holders, true, 1)
            .first()
            .map(|kv| KeyValue::from((*kv).clone()))
    }
}

/// The key ranges under `prefix` outside its sub-prefix `sub`.
pub(crate) fn outside(prefix: &str, sub: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let p = prefix.as_bytes();
    let inner = [p, sub.as_bytes()].concat();
    vec![
        (p.to_vec(), inner.clone()),
        (prefix_end(&inner), prefix_end(p)),
    ]
}

/// The keys of several range answers, sorted by create revision
/// (ascending or descending), at most `n`.
fn merged<'a>(
    answers: &[&'a pb::RangeResponse],
    ascending: bool,
    n: u32,
) -> Vec<&'a mvccpb::KeyValue> {
    let mut kvs: Vec<&mvccpb::KeyValue> = answers.iter().flat_map(|a| a.kvs.iter()).collect();
    kvs.sort_by_key(|kv| kv.create_revision);
    if !ascending {
        kvs.reverse();
    }
    kvs.truncate(n as usize);
    kvs
}

/// `create_revision(key) == rev`.
pub(crate) fn compare_create(key: &[u8], rev: Revision) -> pb::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(rev.0)),
        range_end: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: i64) -> mvccpb::KeyValue {
        mvccpb::KeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            ..Default::default()
        }
    }

    fn answer(kvs: &[(&str, i64)]) -> pb::RangeResponse {
        pb::RangeResponse {
            kvs: kvs.iter().map(|(k, r)| kv(k, *r)).collect(),
            count: kvs.len() as i64,
            ..Default::default()
        }
    }

    fn witness(key: &str, rev: i64) -> Witness {
        Witness {
            key: key.as_bytes().to_vec(),
            rev: Revision(rev),
        }
    }

    #[test]
    fn the_mutex_reads_the_holder_and_the_two_newest_keys_after_its_put() {
        let reads = Rule::EXCLUSIVE.after_put_reads("n/");
        assert_eq!(reads.len(), 2);
        let (holder, newest) = (&reads[0], &reads[1]);
        assert_eq!(
            (holder.key.as_slice(), holder.range_end.as_slice()),
            (&b"n/"[..], &b"n0"[..])
        );
        assert_eq!(
            (holder.sort_order, holder.limit, holder.keys_only),
            (SortOrder::Ascend as i32, 1, false)
        );
        assert_eq!(
            (newest.sort_order, newest.limit, newest.keys_only),
            (SortOrder::Descend as i32, 2, true)
        );
        assert!(
            reads
                .iter()
                .all(|r| r.sort_target == SortTarget::Create as i32)
        );
    }

    #[test]
    fn the_mutex_waits_on_its_predecessor_only() {
        let r = Rule::EXCLUSIVE;
        let holder = answer(&[("n/a", 10)]);
        let newest = answer(&[("n/me", 30), ("n/b", 20)]);
        assert_eq!(
            r.judge_after_put(Revision(30), &[&holder, &newest]),
            Turn::Wait {
                witnesses: vec![witness("n/b", 20)],
                last: false
            }
        );
        // Behind the holder itself: its deletion is my turn.
        let newest = answer(&[("n/me", 30), ("n/a", 10)]);
        assert_eq!(
            r.judge_after_put(Revision(30), &[&holder, &newest]),
            Turn::Wait {
                witnesses: vec![witness("n/a", 10)],
                last: true
            }
        );
        // My key is the oldest: mine.
        let mine = answer(&[("n/me", 30)]);
        assert_eq!(r.judge_after_put(Revision(30), &[&mine, &mine]), Turn::Mine);
    }

    #[test]
    fn the_mutex_turn_read_is_mine_once_no_older_key_is_left() {
        let r = Rule::EXCLUSIVE;
        let reads = r.turn_reads("n/", Revision(30), true);
        assert_eq!(reads[0].max_create_revision, 29);
        assert!(reads.iter().all(|r| r.serializable));
        let none = answer(&[]);
        let me = answer(&[("n/me", 30)]);
        assert_eq!(r.judge_turn(&[&none, &me]), Turn::Mine);
        let pred = answer(&[("n/b", 20)]);
        let holder = answer(&[("n/a", 10)]);
        assert_eq!(
            r.judge_turn(&[&pred, &holder]),
            Turn::Wait {
                witnesses: vec![witness("n/b", 20)],
                last: false
            }
        );
        // A resent acquire that finds my key judges by the holders alone.
        assert_eq!(r.judge_holders(Revision(30), &[&holder]), Turn::Unknown);
        assert_eq!(r.judge_holders(Revision(10), &[&holder]), Turn::Mine);
    }

    /// A second rule, plugged in as data: a semaphore of 2. The engine's
    /// code is the same; only the rule's numbers differ.
    #[test]
    fn a_limit_of_two_admits_two_and_waits_on_both_keys_ahead() {
        let r = Rule::semaphore(2);
        let reads = r.after_put_reads("s/");
        assert_eq!((reads[0].limit, reads[1].limit), (2, 3));
        // Second in line: a holder.
        let holders = answer(&[("s/a", 10), ("s/me", 30)]);
        let newest = answer(&[("s/me", 30), ("s/a", 10)]);
        assert_eq!(
            r.judge_after_put(Revision(30), &[&holders, &newest]),
            Turn::Mine
        );
        // Third: wait until either of the two before me goes; they are the
        // holders, so the first deletion admits me.
        let holders = answer(&[("s/a", 10), ("s/b", 20)]);
        let newest = answer(&[("s/me", 30), ("s/b", 20), ("s/a", 10)]);
        assert_eq!(
            r.judge_after_put(Revision(30), &[&holders, &newest]),
            Turn::Wait {
                witnesses: vec![witness("s/b", 20), witness("s/a", 10)],
                last: true
            }
        );
        // Fourth: the two newest before me are the witnesses, not the holders.
        let newest = answer(&[("s/me", 40), ("s/c", 30), ("s/b", 20)]);
        assert_eq!(
            r.judge_after_put(Revision(40), &[&holders, &newest]),
            Turn::Wait {
                witnesses: vec![witness("s/c", 30), witness("s/b", 20)],
                last: false
            }
        );
        // Later, one key ahead is left: fewer than two, mine.
        let one = answer(&[("s/c", 30)]);
        assert_eq!(r.judge_turn(&[&one, &one]), Turn::Mine);
    }

    #[test]
    fn answers_that_raced_are_read_again() {
        // Not among the holders, yet no key before mine in the newest keys.
        let holders = answer(&[("n/a", 10)]);
        let newest = answer(&[("n/me", 30)]);
        assert_eq!(
            Rule::EXCLUSIVE.judge_after_put(Revision(30), &[&holders, &newest]),
            Turn::Unknown
        );
    }
}
