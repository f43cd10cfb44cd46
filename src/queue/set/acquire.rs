//! Step 1 for a set: one `Txn` that puts my key on every name, all with
//! one lease and so one create revision, built and read by pure functions.

use crate::client::{Client, header, paths};
use crate::error::{Error, Result};
use crate::types::{KeyValue, LeaseId, Revision};
use crate::wire::etcdserverpb as pb;
use pb::request_op::Request as Op;

use super::super::acquire::{Mode, op, ranges, send};
use super::super::rule::{Rule, compare_create};

/// One set's acquire: a key per name (same order), one value, one lease.
pub(crate) struct SetAcquire<'a> {
    pub(crate) prefixes: &'a [String],
    pub(crate) keys: &'a [String],
    pub(crate) value: &'a [u8],
    pub(crate) lease: LeaseId,
}

/// Where my keys stand after the acquire.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SetQueued {
    /// The create revision of every key of mine (the fencing token); 0
    /// when a try put nothing.
    pub(crate) rev: Revision,
    /// Per name (in order): whether an older key was there, to wait on.
    pub(crate) behind: Vec<bool>,
    /// A try that put nothing: the first holder of the first busy name.
    pub(crate) busy: Option<(usize, KeyValue)>,
}

impl SetQueued {
    /// Whether the acquire left me holding every name.
    pub(crate) fn holds(&self) -> bool {
        self.rev.0 != 0 && !self.behind.contains(&true)
    }
}

/// Sends the acquire and reads its answer.
///
/// Wire calls: one `KV/Txn`, resent when its answer was lost (a second try
/// finds my keys and reads them back).
///
/// # Errors
/// [`Error::LeaseExpired`] when etcd no longer knows my lease; network
/// errors; [`Error::LockLost`] when only some of my keys are there (one
/// was deleted by someone else); [`Error::Protocol`].
pub(crate) async fn acquire(client: &Client, a: &SetAcquire<'_>, mode: Mode) -> Result<SetQueued> {
    let resp = send(client, a.lease, request(a, mode)).await?;
    read_answer(a, mode, &resp)
}

/// The acquire `Txn`.
///
/// - Queueing: if none of my keys exists, put them all and read each
///   name's first key (mine, or an older one to wait on); else read my
///   keys back with each name's first key (a resent acquire).
/// - Trying: if no name has any key, put them all; else read my keys and
///   each name's first key (a resent try finds its keys there).
///
/// Either way the largest branch has two operations per name.
pub(crate) fn request(a: &SetAcquire<'_>, mode: Mode) -> pb::TxnRequest {
    let rule = Rule::EXCLUSIVE;
    let puts = a.keys.iter().map(|key| {
        op(Op::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: a.value.to_vec(),
            lease: a.lease.0,
            prev_kv: false,
        }))
    });
    let firsts = || {
        a.prefixes
            .iter()
            .flat_map(|p| rule.holder_reads(p))
            .map(|r| op(Op::RequestRange(r)))
    };
    let mine = a.keys.iter().map(|key| {
        op(Op::RequestRange(pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }))
    });
    let read_back = mine.chain(firsts()).collect();
    match mode {
        Mode::Queue => pb::TxnRequest {
            compare: a
                .keys
                .iter()
                .map(|k| compare_create(k.as_bytes(), Revision(0)))
                .collect(),
            success: puts.chain(firsts()).collect(),
            failure: read_back,
        },
        Mode::OnlyIfFree => pb::TxnRequest {
            compare: a.prefixes.iter().flat_map(|p| rule.none_exist(p)).collect(),
            success: puts.collect(),
            failure: read_back,
        },
    }
}

/// Reads the acquire's answer (pure).
///
/// # Errors
/// [`Error::LockLost`] when only some of my keys are there, or not with
/// one create revision; [`Error::Protocol`] for an answer of the wrong
/// shape.
pub(crate) fn read_answer(
    a: &SetAcquire<'_>,
    mode: Mode,
    resp: &pb::TxnResponse,
) -> Result<SetQueued> {
    let at = header(paths::TXN, resp.header)?.revision;
    if at <= 0 {
        return Err(protocol(format!(
            "the set's transaction answered at revision {at}"
        )));
    }
    let k = a.keys.len();
    if resp.succeeded && mode == Mode::OnlyIfFree {
        return Ok(SetQueued {
            rev: Revision(at),
            behind: vec![false; k],
            busy: None,
        });
    }
    if resp.succeeded {
        // My keys were created now, at `at`: behind any older first key.
        let firsts = ranges(resp, k)?;
        return Ok(queued(Revision(at), &firsts));
    }
    let answers = ranges(resp, 2 * k)?;
    let (mine, firsts) = answers.split_at(k);
    let found: Vec<Option<i64>> = mine
        .iter()
        .map(|r| r.kvs.first().map(|kv| kv.create_revision))
        .collect();
    match (found.iter().flatten().next(), mode) {
        (Some(&rev), _) => {
            // A resent acquire: every key of mine is there, created by
            // one transaction.
            if let Some(i) = found.iter().position(|f| *f != Some(rev)) {
                return Err(Error::LockLost {
                    key: a.keys[i].clone(),
                });
            }
            Ok(queued(Revision(rev), firsts))
        }
        (None, Mode::OnlyIfFree) => {
            let busy = firsts
                .iter()
                .enumerate()
                .find_map(|(i, r)| r.kvs.first().map(|kv| (i, KeyValue::from(kv.clone()))));
            match busy {
                Some(b) => Ok(SetQueued {
                    rev: Revision(0),
                    behind: vec![true; k],
                    busy: Some(b),
                }),
                None => Err(protocol(
                    "the try found the names busy, then read no key".into(),
                )),
            }
        }
        (None, Mode::Queue) => Err(protocol(
            "a key of mine was there by the compare and not by the read".into(),
        )),
    }
}

/// My keys at `rev`, behind each name's first key when that is older.
fn queued(rev: Revision, firsts: &[&pb::RangeResponse]) -> SetQueued {
    SetQueued {
        rev,
        behind: firsts
            .iter()
            .map(|r| r.kvs.first().is_some_and(|kv| kv.create_revision < rev.0))
            .collect(),
        busy: None,
    }
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
    use pb::response_op::Response as OpResp;

    fn set() -> (Vec<String>, Vec<String>) {
        (
            vec!["a/".into(), "b/".into(), "c/".into()],
            vec!["a/1f".into(), "b/1f".into(), "c/1f".into()],
        )
    }

    fn acquire_of<'a>(p: &'a [String], k: &'a [String]) -> SetAcquire<'a> {
        SetAcquire {
            prefixes: p,
            keys: k,
            value: b"v",
            lease: LeaseId(0x1f),
        }
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

    fn put() -> pb::ResponseOp {
        pb::ResponseOp {
            response: Some(OpResp::ResponsePut(pb::PutResponse::default())),
        }
    }

    fn answer(succeeded: bool, responses: Vec<pb::ResponseOp>) -> pb::TxnResponse {
        pb::TxnResponse {
            header: Some(pb::ResponseHeader {
                revision: 9,
                ..Default::default()
            }),
            succeeded,
            responses,
        }
    }

    #[test]
    fn the_largest_branch_has_two_operations_a_name() {
        let (p, k) = set();
        let a = acquire_of(&p, &k);
        for mode in [Mode::Queue, Mode::OnlyIfFree] {
            let req = request(&a, mode);
            let most = req
                .compare
                .len()
                .max(req.success.len())
                .max(req.failure.len());
            assert_eq!(most, 2 * k.len(), "{mode:?}");
            assert!(
                req.success[..3]
                    .iter()
                    .all(|o| matches!(&o.request, Some(Op::RequestPut(p)) if p.lease == 0x1f))
            );
        }
        let q = request(&a, Mode::Queue);
        assert_eq!(q.compare[1].key, b"b/1f");
        assert!(q.compare[1].range_end.is_empty());
        let t = request(&a, Mode::OnlyIfFree);
        assert_eq!(t.compare[1].key, b"b/");
        assert_eq!(t.compare[1].range_end, b"b0");
    }

    #[test]
    fn a_set_waits_only_on_the_names_with_an_older_key() {
        let (p, k) = set();
        let a = acquire_of(&p, &k);
        let created = answer(
            true,
            vec![
                put(),
                put(),
                put(),
                range(&[("a/1f", 9)]),
                range(&[("b/e", 4)]),
                range(&[("c/1f", 9)]),
            ],
        );
        let q = read_answer(&a, Mode::Queue, &created).unwrap();
        assert_eq!(q.rev, Revision(9));
        assert_eq!(q.behind, [false, true, false]);
        assert!(!q.holds());
        // A resent acquire finds its keys, created at 7, and now holds.
        let mine = [("a/1f", 7), ("b/1f", 7), ("c/1f", 7)].map(|kv| range(&[kv]));
        let again = answer(false, mine.iter().cloned().chain(mine.clone()).collect());
        let q = read_answer(&a, Mode::Queue, &again).unwrap();
        assert_eq!((q.rev, q.holds()), (Revision(7), true));
        // Only some of them: one was deleted from outside.
        let partial = answer(
            false,
            vec![range(&[("a/1f", 7)]), range(&[]), range(&[("c/1f", 7)])]
                .into_iter()
                .chain(mine.clone())
                .collect(),
        );
        assert!(matches!(
            read_answer(&a, Mode::Queue, &partial),
            Err(Error::LockLost { key }) if key == "b/1f"
        ));
    }

    #[test]
    fn a_busy_try_names_the_first_busy_name_and_put_nothing() {
        let (p, k) = set();
        let a = acquire_of(&p, &k);
        let free = answer(true, vec![put(), put(), put()]);
        assert!(read_answer(&a, Mode::OnlyIfFree, &free).unwrap().holds());
        let busy = answer(
            false,
            vec![
                range(&[]),
                range(&[]),
                range(&[]),
                range(&[]),
                range(&[("b/e", 4)]),
                range(&[]),
            ],
        );
        let q = read_answer(&a, Mode::OnlyIfFree, &busy).unwrap();
        assert_eq!(q.rev, Revision(0));
        let (i, kv) = q.busy.unwrap();
        assert_eq!((i, kv.key.as_slice()), (1, &b"b/e"[..]));
        // Malformed answers are errors, not panics.
        for bad in [
            answer(true, vec![]),
            answer(false, vec![range(&[])]),
            pb::TxnResponse::default(),
        ] {
            assert!(read_answer(&a, Mode::Queue, &bad).is_err());
        }
    }
}
