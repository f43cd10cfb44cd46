//! Step 1, acquire: one `Txn` that creates my key only if absent and reads
//! what the rule needs, built and read by pure functions around the one
//! `client.txn` call.

use crate::client::{Client, Retry, header, paths};
use crate::error::{Error, Result};
use crate::types::{KeyValue, LeaseId, Revision};
use crate::wire::{etcdserverpb as pb, mvccpb};
use pb::request_op::Request as Op;
use pb::response_op::Response as OpResp;

use super::key;
use super::rule::{PERMITS, Rule, Turn, compare_create, outside};
use pb::compare::{CompareTarget, TargetUnion};

/// What the acquire does when blockers exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Queue my key behind them (a blocking acquire).
    Queue,
    /// Put nothing, read who holds (a try): nothing is left to clean up.
    OnlyIfFree,
}

/// One contender's acquire: its key, value and lease, under a rule.
pub(crate) struct Acquire<'a> {
    pub(crate) rule: Rule,
    pub(crate) prefix: &'a str,
    pub(crate) key: &'a str,
    pub(crate) value: &'a [u8],
    pub(crate) lease: LeaseId,
    /// Whether a queueing put reads where it stands (the holders and the
    /// newest keys). Without, my turn is left for the client's live copy
    /// of the name to tell: etcd answers those sorted reads by reading
    /// every key under the name.
    pub(crate) reads_queue: bool,
}

/// Where my key stands after the acquire.
#[derive(Debug)]
pub(crate) struct Queued {
    /// My key's create revision; 0 when a try put nothing.
    pub(crate) rev: Revision,
    /// My turn, as far as the answer tells.
    pub(crate) turn: Turn,
    /// The first holder, when the answer read it.
    pub(crate) holder: Option<KeyValue>,
    /// The value of my key, when the acquire found it already there (a
    /// resent acquire, or a restarted process on its old lease) and left
    /// it as it was.
    pub(crate) found: Option<Vec<u8>>,
}

impl Queued {
    /// Whether the acquire left me holding.
    pub(crate) fn holds(&self) -> bool {
        self.rev.0 != 0 && self.turn == Turn::Mine
    }
}

/// Sends the acquire and reads its answer.
///
/// Wire calls: one `KV/Txn`, resent when its answer was lost (a second try
/// finds my key and reads it back).
///
/// # Errors
/// [`Error::LeaseExpired`] when etcd no longer knows my lease; network
/// errors; [`Error::Protocol`] for an answer of the wrong shape.
pub(crate) async fn acquire(client: &Client, a: &Acquire<'_>, mode: Mode) -> Result<Queued> {
    let resp = send(client, a.lease, request(a, mode)).await?;
    read_answer(a, mode, &resp)
}

/// Sends an acquire `Txn` that puts keys on `lease`; etcd's "lease not
/// found" is the lease's expiry.
///
/// # Errors
/// [`Error::LeaseExpired`]; network errors.
pub(crate) async fn send(
    client: &Client,
    lease: LeaseId,
    req: pb::TxnRequest,
) -> Result<pb::TxnResponse> {
    // Safe to resend: a second try finds the keys it put and reads them back.
    match client.txn(Retry::Safe, req).await {
        Err(Error::Etcd { message, .. }) if message.contains("lease not found") => {
            Err(Error::LeaseExpired { lease })
        }
        r => r,
    }
}

/// The acquire `Txn`: if no blocker exists, put my key: I hold. Otherwise,
/// queueing, a nested transaction: if my key is absent, put it and read
/// what the rule needs to place it (the holders, the newest keys); else
/// read it back with the holders, writing nothing (a resent acquire, or a
/// restart on the same lease, finds its key and keeps its place and its
/// value). A try reads my key and the holders and puts nothing. A
/// semaphore's acquire does either only when the name's agreed limit is
/// the one asked for.
pub(crate) fn request(a: &Acquire<'_>, mode: Mode) -> pb::TxnRequest {
    let put = |prev_kv| {
        Op::RequestPut(pb::PutRequest {
            key: a.key.as_bytes().to_vec(),
            value: a.value.to_vec(),
            lease: a.lease.0,
            prev_kv,
        })
    };
    let reads = |rs: Vec<pb::RangeRequest>| rs.into_iter().map(Op::RequestRange);
    let read_mine = Op::RequestRange(pb::RangeRequest {
        key: a.key.as_bytes().to_vec(),
        ..Default::default()
    });
    let read_back: Vec<pb::RequestOp> = std::iter::once(read_mine)
        .chain(reads(a.rule.holder_reads(a.prefix)))
        .map(op)
        .collect();
    let queue = |read_back| pb::TxnRequest {
        compare: vec![compare_create(a.key.as_bytes(), Revision(0))],
        success: std::iter::once(put(false))
            .chain(reads(match a.reads_queue {
                true => a.rule.after_put_reads(a.prefix),
                false => Vec::new(),
            }))
            .map(op)
            .collect(),
        failure: read_back,
    };
    if flat(a, mode) {
        return queue(read_back);
    }
    let busy = match mode {
        Mode::Queue => vec![op(Op::RequestTxn(queue(read_back)))],
        Mode::OnlyIfFree => read_back,
    };
    if !a.rule.agreed_limit {
        // A reader's own key is no blocker: with no writer, its put takes
        // the free branch even when the key is there already (a resent
        // acquire, a resumed session), and the key it replaces tells its
        // create revision.
        return pb::TxnRequest {
            compare: a.rule.none_exist(a.prefix),
            success: vec![op(put(!a.rule.own_key_blocks()))],
            failure: busy,
        };
    }
    semaphore_request(a, op(put(false)), busy)
}

/// A semaphore's acquire: the first user of an idle name sets the limit
/// with its `put`; every other acquire goes on (`busy`, the queueing
/// transaction or a try's reads) only if it asks for the same limit.
fn semaphore_request(
    a: &Acquire<'_>,
    put: pb::RequestOp,
    busy: Vec<pb::RequestOp>,
) -> pb::TxnRequest {
    let limit_key = key::limit_key(a.prefix).into_bytes();
    let limit = a.rule.limit.to_string().into_bytes();
    let set_limit = Op::RequestPut(pb::PutRequest {
        key: limit_key.clone(),
        value: limit.clone(),
        lease: 0,
        prev_kv: false,
    });
    let same_limit = pb::Compare {
        target: CompareTarget::Value as i32,
        target_union: Some(TargetUnion::Value(limit)),
        ..compare_create(&limit_key, Revision(0))
    };
    let read_limit = Op::RequestRange(pb::RangeRequest {
        key: limit_key,
        ..Default::default()
    });
    // Nobody uses the name as a plain lock (or anything but a semaphore).
    let others = outside(a.prefix, PERMITS);
    let only_permits = others.iter().map(|(key, range_end)| pb::Compare {
        range_end: range_end.clone(),
        ..compare_create(key, Revision(0))
    });
    let read_others = read_one_of_each(&others);
    pb::TxnRequest {
        compare: a.rule.none_exist(a.prefix),
        success: vec![op(set_limit), put],
        failure: vec![op(Op::RequestTxn(pb::TxnRequest {
            compare: std::iter::once(same_limit).chain(only_permits).collect(),
            success: busy,
            failure: std::iter::once(read_limit)
                .chain(read_others)
                .map(op)
                .collect(),
        }))],
    }
}

/// Whether the acquire is the queueing transaction alone, without the
/// free branch around it: for a contender that counts on the client's
/// live copy of the name (other contenders of the client are there, so the
/// name is most likely busy), when no limit is to be agreed. The free
/// branch's compare over the name's range costs etcd a read of every key
/// under the name, in its apply loop; the compare of my own key costs one.
fn flat(a: &Acquire<'_>, mode: Mode) -> bool {
    mode == Mode::Queue && !a.reads_queue && !a.rule.agreed_limit
}

/// Reads of one key (keys only) in each range: for a refused semaphore,
/// whether a key of another kind is there (then the stored limit, if any,
/// binds nobody now).
fn read_one_of_each(ranges: &[(Vec<u8>, Vec<u8>)]) -> impl Iterator<Item = Op> + '_ {
    ranges.iter().map(|(key, range_end)| {
        Op::RequestRange(pb::RangeRequest {
            key: key.clone(),
            range_end: range_end.clone(),
            limit: 1,
            keys_only: true,
            ..Default::default()
        })
    })
}

/// Reads the acquire's answer (pure).
///
/// # Errors
/// [`Error::Protocol`] for an answer of the wrong shape.
pub(crate) fn read_answer(a: &Acquire<'_>, mode: Mode, resp: &pb::TxnResponse) -> Result<Queued> {
    let rev = header(paths::TXN, resp.header)?.revision;
    if rev <= 0 {
        return Err(protocol(format!(
            "the lock transaction answered at revision {rev}"
        )));
    }
    let flat = flat(a, mode);
    if resp.succeeded && !flat {
        // No blocker: I hold, with my key created now unless the put
        // replaced it (a reader's, which keeps its create revision).
        return Ok(holding(replaced(resp)?.unwrap_or(Revision(rev))));
    }
    let resp = if a.rule.agreed_limit {
        let agreed = nested(resp)?;
        if !agreed.succeeded {
            return Err(limit_mismatch(a, agreed));
        }
        agreed
    } else {
        resp
    };
    let resp = match mode {
        Mode::Queue if !flat => nested(resp)?,
        _ => resp,
    };
    let per_read = a.rule.ranges(a.prefix).len();
    if mode == Mode::Queue && resp.succeeded && !a.reads_queue {
        // My key was created now, behind others; the live copy tells when
        // my turn comes.
        ranges(resp, 0)?;
        return Ok(Queued {
            rev: Revision(rev),
            turn: Turn::Wait {
                witnesses: Vec::new(),
                last: true,
            },
            holder: None,
            found: None,
        });
    }
    if mode == Mode::Queue && resp.succeeded {
        // My key was created now: it is the newest key.
        let answers = ranges(resp, 2 * per_read)?;
        return Ok(Queued {
            rev: Revision(rev),
            turn: a.rule.judge_after_put(Revision(rev), &answers),
            holder: a.rule.first_holder(&answers[..per_read]),
            found: None,
        });
    }
    let answers = ranges(resp, 1 + per_read)?;
    let (mine, holders) = (answers[0], &answers[1..]);
    let rev = match (mine.kvs.first(), mode) {
        (Some(kv), _) => created(kv)?,
        (None, Mode::OnlyIfFree) => Revision(0), // someone else is there
        (None, Mode::Queue) => {
            return Err(protocol(
                "my key was there by the compare and not by the read".into(),
            ));
        }
    };
    Ok(Queued {
        rev,
        turn: a.rule.judge_holders(rev, holders),
        holder: a.rule.first_holder(holders),
        found: mine.kvs.first().map(|kv| kv.value.clone()),
    })
}

/// Holding at once, with my key created at `rev`.
fn holding(rev: Revision) -> Queued {
    Queued {
        rev,
        turn: Turn::Mine,
        holder: None,
        found: None,
    }
}

/// The create revision of the key my put replaced (`None`: the put
/// created it, or asked nothing), from the put's answer, first in `resp`
/// (a semaphore's first put is its limit's, which asks nothing).
fn replaced(resp: &pb::TxnResponse) -> Result<Option<Revision>> {
    match resp.responses.first().and_then(|r| r.response.as_ref()) {
        Some(OpResp::ResponsePut(put)) => put.prev_kv.as_ref().map(created).transpose(),
        _ => Err(protocol("the answer has no put of my key first".into())),
    }
}

/// My key's create revision, as read back.
fn created(kv: &mvccpb::KeyValue) -> Result<Revision> {
    match kv.create_revision {
        rev if rev > 0 => Ok(Revision(rev)),
        rev => Err(protocol(format!("my key has create revision {rev}"))),
    }
}

/// The transaction nested first in `resp`'s answers.
fn nested(resp: &pb::TxnResponse) -> Result<&pb::TxnResponse> {
    match resp.responses.first().and_then(|r| r.response.as_ref()) {
        Some(OpResp::ResponseTxn(t)) => Ok(t),
        _ => Err(protocol("the answer has no nested transaction".into())),
    }
}

/// The error for a semaphore acquire whose limit is not the name's, or on
/// a name used otherwise: `agreed` holds the read of the limit key, then
/// the reads of the keys of other kinds. A name used otherwise has no
/// agreed limit, whatever a former use as a semaphore left in the key.
fn limit_mismatch(a: &Acquire<'_>, agreed: &pb::TxnResponse) -> Error {
    let found = ranges(agreed, 3)
        .ok()
        .filter(|r| r[1..].iter().all(|other| other.kvs.is_empty()))
        .and_then(|r| {
            let kv = r[0].kvs.first()?;
            std::str::from_utf8(&kv.value).ok()?.parse().ok()
        })
        // The same limit, so the compare failed on a key of another kind.
        .filter(|found| *found != a.rule.limit);
    Error::LimitMismatch {
        name: a.prefix.trim_end_matches('/').to_owned(),
        asked: a.rule.limit,
        found,
    }
}

/// The range answers of a transaction, in order; `n` of them.
///
/// # Errors
/// [`Error::Protocol`] when there are not `n` range answers.
pub(crate) fn ranges(resp: &pb::TxnResponse, n: usize) -> Result<Vec<&pb::RangeResponse>> {
    let out: Vec<_> = resp
        .responses
        .iter()
        .filter_map(|r| match r.response.as_ref() {
            Some(OpResp::ResponseRange(r)) => Some(r),
            _ => None,
        })
        .collect();
    if out.len() != n {
        return Err(protocol(format!(
            "the transaction's answer has {} reads where {n} were sent",
            out.len()
        )));
    }
    Ok(out)
}

pub(crate) fn op(r: Op) -> pb::RequestOp {
    pb::RequestOp { request: Some(r) }
}

fn protocol(detail: String) -> Error {
    Error::Protocol {
        path: paths::TXN,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mvccpb;

    fn acquire_of<'a>(key: &'a str) -> Acquire<'a> {
        Acquire {
            rule: Rule::EXCLUSIVE,
            prefix: "n/",
            key,
            value: b"v",
            lease: LeaseId(0x1f),
            reads_queue: true,
        }
    }

    /// A semaphore of one permit's acquire under `s/`.
    fn one_permit() -> Acquire<'static> {
        Acquire {
            rule: Rule::semaphore(1),
            prefix: "s/",
            ..acquire_of("s/permit/1f")
        }
    }

    fn header(revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    fn range(kvs: &[(&str, i64)]) -> pb::ResponseOp {
        let kvs = kvs
            .iter()
            .map(|(k, r)| mvccpb::KeyValue {
                key: k.as_bytes().to_vec(),
                create_revision: *r,
                ..Default::default()
            })
            .collect();
        pb::ResponseOp {
            response: Some(OpResp::ResponseRange(pb::RangeResponse {
                kvs,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn the_queueing_acquire_is_one_txn_with_a_nested_branch() {
        let req = request(&acquire_of("n/1f"), Mode::Queue);
        assert_eq!(req.compare.len(), 1);
        assert_eq!(req.compare[0].range_end, b"n0");
        assert!(
            matches!(req.success[0].request, Some(Op::RequestPut(ref p)) if p.lease == 0x1f && !p.prev_kv)
        );
        let Some(Op::RequestTxn(nested)) = &req.failure[0].request else {
            panic!("no nested txn: {req:?}")
        };
        assert_eq!(nested.compare[0].key, b"n/1f");
        assert_eq!(nested.success.len(), 3, "put, holder, newest two");
        assert_eq!(nested.failure.len(), 2, "my key, holder: nothing written");
        let only_reads = |ops: &[pb::RequestOp]| {
            ops.iter()
                .all(|o| matches!(o.request, Some(Op::RequestRange(_))))
        };
        assert!(only_reads(&nested.success[1..]));
        assert!(only_reads(&nested.failure));
        // A try puts nothing when the lock is busy.
        let t = request(&acquire_of("n/1f"), Mode::OnlyIfFree);
        assert_eq!(t.failure.len(), 2);
        assert!(only_reads(&t.failure));
    }

    /// A contender that counts on the client's live copy of the name sends
    /// the queueing transaction alone: a compare of its own key (not of the
    /// name's whole range) and the put, with no read of the queue (whose
    /// sorted reads, like the range compare, cost etcd every key under the
    /// name); its turn is left for the copy to tell.
    #[test]
    fn a_queueing_put_on_the_live_copy_reads_nothing() {
        let a = Acquire {
            reads_queue: false,
            ..acquire_of("n/1f")
        };
        let req = request(&a, Mode::Queue);
        assert_eq!(req.compare.len(), 1);
        assert_eq!(
            req.compare[0].key, b"n/1f",
            "my key's compare, not the name's"
        );
        assert!(req.compare[0].range_end.is_empty());
        assert_eq!(req.success.len(), 1, "the put alone");
        assert!(matches!(req.success[0].request, Some(Op::RequestPut(ref p)) if p.lease == 0x1f));
        assert_eq!(req.failure.len(), 2, "my key, holder: nothing written");
        let queued = pb::TxnResponse {
            header: header(9),
            succeeded: true,
            responses: vec![put_answer(None)],
        };
        let q = read_answer(&a, Mode::Queue, &queued).unwrap();
        assert_eq!(q.rev, Revision(9));
        assert!(!q.holds(), "a put behind others does not hold by itself");
        assert!(matches!(q.turn, Turn::Wait { ref witnesses, last: true } if witnesses.is_empty()));
        // A resent acquire finds my key and reads it back.
        let again = pb::TxnResponse {
            header: header(9),
            succeeded: false,
            responses: vec![range(&[("n/1f", 4)]), range(&[("n/0a", 3)])],
        };
        let q = read_answer(&a, Mode::Queue, &again).unwrap();
        assert_eq!(q.rev, Revision(4));
        assert!(!q.holds());
        // An answer with reads where none were asked is refused.
        let wrong = pb::TxnResponse {
            responses: vec![put_answer(None), range(&[("n/0a", 3)])],
            ..queued
        };
        assert!(matches!(
            read_answer(&a, Mode::Queue, &wrong),
            Err(Error::Protocol { .. })
        ));
        // A semaphore keeps the branch that agrees on its limit.
        let sem = Acquire {
            reads_queue: false,
            ..one_permit()
        };
        assert!(!request(&sem, Mode::Queue).compare[0].range_end.is_empty());
    }

    fn put_answer(prev: Option<(&str, i64)>) -> pb::ResponseOp {
        pb::ResponseOp {
            response: Some(OpResp::ResponsePut(pb::PutResponse {
                header: header(9),
                prev_kv: prev.map(|(k, r)| mvccpb::KeyValue {
                    key: k.as_bytes().to_vec(),
                    create_revision: r,
                    value: b"old".to_vec(),
                    ..Default::default()
                }),
            })),
        }
    }

    /// The nested transaction's answer inside a failed top-level one.
    fn nested_answer(succeeded: bool, responses: Vec<pb::ResponseOp>) -> pb::TxnResponse {
        pb::TxnResponse {
            header: header(9),
            succeeded: false,
            responses: vec![pb::ResponseOp {
                response: Some(OpResp::ResponseTxn(pb::TxnResponse {
                    header: header(9),
                    succeeded,
                    responses,
                })),
            }],
        }
    }

    #[test]
    fn an_answer_is_read_without_etcd() {
        let a = acquire_of("n/1f");
        let free = pb::TxnResponse {
            header: header(7),
            succeeded: true,
            responses: vec![put_answer(None)],
        };
        for mode in [Mode::Queue, Mode::OnlyIfFree] {
            let q = read_answer(&a, mode, &free).unwrap();
            assert!(q.holds());
            assert_eq!(q.rev, Revision(7));
        }
        // Created now, behind the holder: wait on it.
        let queued = nested_answer(
            true,
            vec![
                put_answer(None),
                range(&[("n/a", 3)]),
                range(&[("n/1f", 9), ("n/a", 3)]),
            ],
        );
        let q = read_answer(&a, Mode::Queue, &queued).unwrap();
        assert!(!q.holds());
        assert_eq!(q.rev, Revision(9));
        assert!(matches!(q.turn, Turn::Wait { last: true, .. }));
        assert_eq!(q.holder.unwrap().key, b"n/a");
        // A try on a busy name puts nothing.
        let busy = pb::TxnResponse {
            header: header(9),
            succeeded: false,
            responses: vec![range(&[]), range(&[("n/a", 3)])],
        };
        let q = read_answer(&a, Mode::OnlyIfFree, &busy).unwrap();
        assert!(!q.holds());
        assert_eq!(q.rev, Revision(0));
    }

    #[test]
    fn a_resent_acquire_keeps_the_place_and_value_its_key_had() {
        let a = acquire_of("n/1f");
        let mine = |rev| pb::ResponseOp {
            response: Some(OpResp::ResponseRange(pb::RangeResponse {
                kvs: vec![mvccpb::KeyValue {
                    key: b"n/1f".to_vec(),
                    create_revision: rev,
                    value: b"old".to_vec(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        };
        // My key was there since revision 2, before the other key: I hold,
        // with its create revision as the token and its value untouched.
        let answer = nested_answer(false, vec![mine(2), range(&[("n/1f", 2)])]);
        let q = read_answer(&a, Mode::Queue, &answer).unwrap();
        assert!(q.holds());
        assert_eq!(q.rev, Revision(2));
        assert_eq!(q.found.as_deref(), Some(&b"old"[..]));
        // Behind another: it waits (where is read next), at its old place.
        let behind = nested_answer(false, vec![mine(5), range(&[("n/a", 3)])]);
        let q = read_answer(&a, Mode::Queue, &behind).unwrap();
        assert_eq!(q.rev, Revision(5));
        assert_eq!(q.turn, Turn::Unknown);
        // The compare found my key, the read did not: not believed.
        let bad = nested_answer(false, vec![range(&[]), range(&[("n/a", 3)])]);
        assert!(matches!(
            read_answer(&a, Mode::Queue, &bad),
            Err(Error::Protocol { .. })
        ));
    }

    /// A reader's key is no blocker: with no writer, a resent read lock, or
    /// one on a resumed session, takes the free branch with its key already
    /// there. The put asks for the key it replaces, whose create revision
    /// stays the token.
    #[test]
    fn a_readers_free_put_that_replaced_its_key_keeps_its_create_revision() {
        let a = Acquire {
            rule: Rule::READER,
            ..acquire_of("n/read/1f")
        };
        for mode in [Mode::Queue, Mode::OnlyIfFree] {
            let req = request(&a, mode);
            assert!(
                matches!(req.success[0].request, Some(Op::RequestPut(ref p)) if p.prev_kv),
                "{mode:?}"
            );
            // A mutex's free branch cannot find its key: no prev_kv asked.
            let m = request(&acquire_of("n/1f"), mode);
            assert!(matches!(m.success[0].request, Some(Op::RequestPut(ref p)) if !p.prev_kv));
        }
        let free = |prev| pb::TxnResponse {
            header: header(9),
            succeeded: true,
            responses: vec![put_answer(prev)],
        };
        for mode in [Mode::Queue, Mode::OnlyIfFree] {
            let q = read_answer(&a, mode, &free(Some(("n/read/1f", 4)))).unwrap();
            assert!(q.holds());
            assert_eq!(q.rev, Revision(4));
        }
        let q = read_answer(&a, Mode::OnlyIfFree, &free(None)).unwrap();
        assert_eq!(q.rev, Revision(9));
        // A replaced key without a create revision is not believed.
        assert!(matches!(
            read_answer(&a, Mode::OnlyIfFree, &free(Some(("n/read/1f", 0)))),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn a_limit_left_beside_keys_of_another_kind_is_not_reported_as_agreed() {
        let a = one_permit();
        let refused = |others: &[(&str, i64)]| pb::TxnResponse {
            header: header(9),
            succeeded: false,
            responses: vec![pb::ResponseOp {
                response: Some(OpResp::ResponseTxn(pb::TxnResponse {
                    header: header(9),
                    succeeded: false,
                    responses: vec![
                        pb::ResponseOp {
                            response: Some(OpResp::ResponseRange(pb::RangeResponse {
                                kvs: vec![mvccpb::KeyValue {
                                    key: b"s.permits".to_vec(),
                                    value: b"2".to_vec(),
                                    create_revision: 3,
                                    ..Default::default()
                                }],
                                ..Default::default()
                            })),
                        },
                        range(others),
                        range(&[]),
                    ],
                })),
            }],
        };
        let found = |r: Result<Queued>| match r {
            Err(Error::LimitMismatch {
                asked: 1, found, ..
            }) => found,
            other => panic!("{other:?}"),
        };
        assert_eq!(found(read_answer(&a, Mode::Queue, &refused(&[]))), Some(2));
        let plain = refused(&[("s/2a", 5)]);
        assert_eq!(found(read_answer(&a, Mode::Queue, &plain)), None);
    }

    /// A semaphore's answers come nested: the limit compare, then the
    /// acquire (queueing) or the reads (a try of a busy name, whose agreed
    /// limit says nothing about a put).
    #[test]
    fn a_semaphores_nested_answers_are_read_at_their_depth() {
        let a = one_permit();
        // The limit agreed: the inner answers sit one level down.
        let agreed = |responses| nested_answer(true, responses);
        let busy = agreed(vec![range(&[]), range(&[("s/permit/a", 3)])]);
        let q = read_answer(&a, Mode::OnlyIfFree, &busy).unwrap();
        assert!(!q.holds());
        assert_eq!(q.rev, Revision(0));
        assert_eq!(q.holder.unwrap().key, b"s/permit/a");
        // The queueing txn, created my key: one level further down.
        let queued = agreed(
            nested_answer(
                true,
                vec![
                    put_answer(None),
                    range(&[("s/permit/a", 3)]),
                    range(&[("s/permit/1f", 9), ("s/permit/a", 3)]),
                ],
            )
            .responses,
        );
        let q = read_answer(&a, Mode::Queue, &queued).unwrap();
        assert!(!q.holds());
        assert_eq!(q.rev, Revision(9));
    }

    #[test]
    fn a_malformed_answer_is_a_protocol_error_not_a_panic() {
        let a = acquire_of("n/1f");
        let no_header = pb::TxnResponse::default();
        assert!(matches!(
            read_answer(&a, Mode::Queue, &no_header),
            Err(Error::Protocol { .. })
        ));
        let short = pb::TxnResponse {
            header: header(9),
            responses: vec![range(&[])],
            ..Default::default()
        };
        assert!(matches!(
            read_answer(&a, Mode::OnlyIfFree, &short),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            read_answer(&a, Mode::Queue, &short),
            Err(Error::Protocol { .. })
        ));
    }
}
