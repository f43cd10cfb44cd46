//! Step 2, wait: until the rule says it is my turn, watching only the
//! witnesses, and checking my own key after every wait.

use std::time::Duration;

use super::acquire::{op, ranges};
use super::rule::{Rule, Turn, Witness};
use super::watch::{key_exists, wait_any_deleted_with};
use crate::client::{Mirror, Retry};
use crate::error::{Error, Result};
use crate::session::SessionInner;
use crate::types::Revision;
use crate::wire::etcdserverpb as pb;
use pb::request_op::Request as Op;

/// My key in a name's queue.
pub(crate) struct Place<'a> {
    pub(crate) rule: Rule,
    pub(crate) prefix: &'a str,
    pub(crate) key: &'a str,
    /// My key's create revision.
    pub(crate) rev: Revision,
    /// The client's live copy of the name's keys, when I count on it (see
    /// [`Client::contend`](crate::client::Client::contend)).
    pub(crate) view: Option<&'a Mirror>,
}

/// What a read of the queue showed.
enum Read {
    Turn(Turn),
    /// My key is not there (or is another key of the same name).
    MyKeyMissing,
}

/// Waits until it is my turn. Returns when I hold; errors when my key
/// vanished (lease lost) or the session ended.
///
/// `known`: my turn as the acquire read it; the first read is then skipped.
///
/// Reads are serializable first (served by the member at hand, no
/// ReadIndex round): "fewer than `limit` blockers before mine" can only
/// become true, never false again, since no key can be created with an
/// older revision; and my own key is alive while the lost signal has not
/// fired (its deadline comes before the server's expiry). A read that does
/// not show my key may be from a member that is behind: it is repeated as
/// a linearizable read before the key is declared gone.
///
/// # Errors
/// [`Error::LockLost`] when my key is gone; the session's loss; errors
/// other than connectivity (which are retried while the lease may live).
pub(crate) async fn wait_turn(s: &SessionInner, me: &Place<'_>, known: Turn) -> Result<()> {
    let mut known = Some(known).filter(|t| *t != Turn::Unknown);
    let mut backoff = Duration::from_millis(50);
    let mut serializable = true;
    loop {
        s.check_alive()?;
        // Each read, answer and error lives in a block of its own and is
        // judged before any pause: only what the waits below need stays
        // across them (a waiter's future is its memory while it waits).
        let next = {
            let read = match known.take() {
                Some(t) => Ok(Read::Turn(t)),
                None => Box::pin(read_turn(s, me, serializable)).await,
            };
            match read {
                Ok(Read::Turn(Turn::Mine)) => return Ok(()),
                Ok(Read::Turn(Turn::Wait { witnesses, last })) => Some((witnesses, last)),
                Ok(Read::Turn(Turn::Unknown)) => continue,
                Ok(Read::MyKeyMissing) if serializable => {
                    serializable = false;
                    continue;
                }
                // My key is gone: my lease expired (or someone deleted the
                // key) while I waited. I must not take the lock.
                Ok(Read::MyKeyMissing) => return Err(Error::LockLost { key: me.key.into() }),
                // Unreachable: keep waiting while the lease may be alive;
                // the lost signal ends the wait.
                Err(e) if e.is_connectivity() => None,
                Err(e) => return Err(e),
            }
        };
        let Some(found) = next else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        backoff = Duration::from_millis(50);
        let (witnesses, last) = found;
        match wait_once(s, me, witnesses, last).await? {
            AfterWait::Mine => return Ok(()),
            AfterWait::ReadAgain {
                pause,
                linearizable,
            } => {
                serializable = !linearizable;
                if pause {
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }
}

/// How one wait ended.
enum AfterWait {
    Mine,
    /// Read the queue again: after a pause (etcd was unreachable), and
    /// linearizable when my own key's check did not find it.
    ReadAgain {
        pause: bool,
        linearizable: bool,
    },
}

/// Waits once: on the witnesses (or the client's copy), then, when that
/// wait ends my turn, checks that my own key still existed then.
///
/// # Errors
/// Errors other than connectivity.
async fn wait_once(
    s: &SessionInner,
    me: &Place<'_>,
    witnesses: Vec<Witness>,
    last: bool,
) -> Result<AfterWait> {
    let (waited, last) = if let Some(view) = me.view {
        // The client's copy of the name's keys, which its other contenders
        // share, says when my turn comes.
        let at = view.wait_fewer_before(me.rev, me.rule.limit).await;
        (Ok(Some(at)), true)
    } else if me.rule.counts_locally() {
        // A semaphore: the client's copy of the name's keys says when fewer
        // than N were created before mine (one watch per client and name,
        // however many wait), not N watches per waiter.
        let at = s.client.wait_fewer_before(me.prefix, me.rev, me.rule.limit);
        (Ok(Some(at.await)), true)
    } else {
        (
            Box::pin(wait_any_deleted_with(&s.client, &witnesses, last)).await,
            last,
        )
    };
    let again = |pause, linearizable| {
        Ok(AfterWait::ReadAgain {
            pause,
            linearizable,
        })
    };
    let gone_at = match waited {
        Ok(Some(gone_at)) if last => gone_at,
        Ok(_) => return again(false, false),
        Err(e) if e.is_connectivity() => return again(true, false),
        Err(e) => return Err(e),
    };
    // The post-wait check: my own key must still have existed then (a
    // lease revoked behind my back shows here). Boxed, like every call this
    // wait makes: its state is on the heap only while it runs.
    let check = key_exists(&s.client, me.key.as_bytes(), me.rev, gone_at.0);
    match Box::pin(check).await {
        Ok(read) if read.exists => Ok(AfterWait::Mine),
        Ok(_) => again(false, true),
        // Unreachable: read the queue again while the lease may live.
        Err(e) if e.is_connectivity() => again(true, true),
        Err(e) => Err(e),
    }
}

/// One read-only `Txn` (no raft commit): my own key, then the rule's
/// reads (my witnesses and the holders).
async fn read_turn(s: &SessionInner, me: &Place<'_>, serializable: bool) -> Result<Read> {
    let mine = pb::RangeRequest {
        key: me.key.as_bytes().to_vec(),
        serializable,
        ..Default::default()
    };
    let reads = me.rule.turn_reads(me.prefix, me.rev, serializable);
    let n = 1 + reads.len();
    let req = pb::TxnRequest {
        compare: vec![],
        success: std::iter::once(mine)
            .chain(reads)
            .map(|r| op(Op::RequestRange(r)))
            .collect(),
        failure: vec![],
    };
    // Safe to resend: it only reads.
    let resp = s.client.txn(Retry::Safe, req).await?;
    let answers = ranges(&resp, n)?;
    let still_mine = answers[0]
        .kvs
        .first()
        .is_some_and(|kv| kv.create_revision == me.rev.0);
    if !still_mine {
        return Ok(Read::MyKeyMissing);
    }
    Ok(Read::Turn(me.rule.judge_turn(&answers[1..])))
}
