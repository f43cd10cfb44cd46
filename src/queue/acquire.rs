//! Step 1, acquire: one `Txn` that creates my key only if absent and reads
//! what the rule needs, built and read by pure functions around the one
//! `client.txn` call.

use crate::client::{Client, Retry, header, paths};
use crate::error::{Error, Result};
use crate::types::{KeyValue, LeaseId, Revision};
use crate::wire::etcdserverpb as pb;
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
    /// resent acquire, or a restarted process on its old lease).
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
    let req = request(a, mode);
    // Safe to resend: a second try finds my key and reads it back.
    let resp = match client.txn(Retry::Safe, req).await {
        Err(Error::Etcd { message, .. }) if message.contains("lease not found") => {
            return Err(Error::LeaseExpired { lease: a.lease });
        }
        r => r?,
    };
    read_answer(a, mode, &resp)
}

/// The acquire `Txn`: if no blocker exists, put my key: I hold. Otherwise
/// (queueing) a nested transaction: if my key does not exist, put it and
/// read what the rule needs to place it; else read it back with the
/// holders. A try reads my key and the holders and puts nothing.
pub(crate) fn request(a: &Acquire<'_>, mode: Mode) -> pb::TxnRequest {
    let put = Op::RequestPut(pb::PutRequest {
        key: a.key.as_bytes().to_vec(),
        value: a.value.to_vec(),
        lease: a.lease.0,
        prev_kv: false,
    });
    let read_mine = Op::RequestRange(pb::RangeRequest {
        key: a.key.as_bytes().to_vec(),
        ..Default::default()
    });
    let reads = |rs: Vec<pb::RangeRequest>| rs.into_iter().map(Op::RequestRange);
    let read_back: Vec<Op> = std::iter::once(read_mine)
        .chain(reads(a.rule.holder_reads(a.prefix)))
        .collect();
    let failure = match mode {
        Mode::OnlyIfFree => read_back,
        Mode::Queue => vec![Op::RequestTxn(pb::TxnRequest {
            compare: vec![compare_create(a.key.as_bytes(), Revision(0))],
            success: std::iter::once(put.clone())
                .chain(reads(a.rule.after_put_reads(a.prefix)))
                .map(op)
                .collect(),
            failure: read_back.into_iter().map(op).collect(),
        })],
    };
    if !a.rule.agreed_limit {
        return pb::TxnRequest {
            compare: a.rule.none_exist(a.prefix),
            success: vec![op(put)],
            failure: failure.into_iter().map(op).collect(),
        };
    }
    // A semaphore: the first user of an idle name sets the limit; every
    // other acquire goes on only if it asks for the same limit.
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
        success: vec![op(set_limit), op(put)],
        failure: vec![op(Op::RequestTxn(pb::TxnRequest {
            compare: std::iter::once(same_limit).chain(only_permits).collect(),
            success: failure.into_iter().map(op).collect(),
            failure: std::iter::once(read_limit)
                .chain(read_others)
                .map(op)
                .collect(),
        }))],
    }
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
    if resp.succeeded {
        // No blocker: my key is the holder.
        return Ok(Queued {
            rev: Revision(rev),
            turn: Turn::Mine,
            holder: None,
            found: None,
        });
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
    let inner = match mode {
        Mode::OnlyIfFree => resp,
        Mode::Queue => nested(resp)?,
    };
    let per_read = a.rule.ranges(a.prefix).len();
    if mode == Mode::Queue && inner.succeeded {
        // My key was created now: it is the newest key.
        let answers = ranges(inner, 2 * per_read)?;
        let mine = Revision(rev);
        return Ok(Queued {
            rev: mine,
            turn: a.rule.judge_after_put(mine, &answers),
            holder: a.rule.first_holder(&answers[..per_read]),
            found: None,
        });
    }
    let answers = ranges(inner, 1 + per_read)?;
    let (mine, holders) = (answers[0], &answers[1..]);
    let rev = match mine.kvs.first() {
        Some(kv) if kv.create_revision > 0 => Revision(kv.create_revision),
        Some(kv) => {
            return Err(protocol(format!(
                "my key has create revision {}",
                kv.create_revision
            )));
        }
        None => Revision(0), // a try, and someone else is there
    };
    Ok(Queued {
        rev,
        turn: a.rule.judge_holders(rev, holders),
        holder: a.rule.first_holder(holders),
        found: mine.kvs.first().map(|kv| kv.value.clone()),
    })
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
        assert!(matches!(req.success[0].request, Some(Op::RequestPut(ref p)) if p.lease == 0x1f));
        let Some(Op::RequestTxn(nested)) = &req.failure[0].request else {
            panic!("no nested txn: {req:?}")
        };
        assert_eq!(nested.compare[0].key, b"n/1f");
        assert_eq!(nested.success.len(), 3, "put, holder, newest two");
        assert_eq!(nested.failure.len(), 2, "my key, holder");
        // A try puts nothing when the lock is busy.
        let t = request(&acquire_of("n/1f"), Mode::OnlyIfFree);
        assert_eq!(t.failure.len(), 2);
        assert!(
            t.failure
                .iter()
                .all(|o| matches!(o.request, Some(Op::RequestRange(_))))
        );
    }

    #[test]
    fn an_answer_is_read_without_etcd() {
        let a = acquire_of("n/1f");
        let free = pb::TxnResponse {
            header: header(7),
            succeeded: true,
            ..Default::default()
        };
        let q = read_answer(&a, Mode::Queue, &free).unwrap();
        assert!(q.holds());
        assert_eq!(q.rev, Revision(7));

        let queued = pb::TxnResponse {
            header: header(9),
            succeeded: false,
            responses: vec![pb::ResponseOp {
                response: Some(OpResp::ResponseTxn(pb::TxnResponse {
                    header: header(9),
                    succeeded: true,
                    responses: vec![
                        pb::ResponseOp::default(),
                        range(&[("n/a", 3)]),
                        range(&[("n/1f", 9), ("n/a", 3)]),
                    ],
                })),
            }],
        };
        let q = read_answer(&a, Mode::Queue, &queued).unwrap();
        assert!(!q.holds());
        assert!(matches!(q.turn, Turn::Wait { last: true, .. }));
        assert_eq!(q.holder.unwrap().key, b"n/a");

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
    fn a_limit_left_beside_keys_of_another_kind_is_not_reported_as_agreed() {
        let a = Acquire {
            rule: Rule::semaphore(1),
            prefix: "s/",
            key: "s/permit/1f",
            value: b"v",
            lease: LeaseId(0x1f),
        };
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
