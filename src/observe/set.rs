//! Which set a key belongs to: every key of a set is on one lease and was
//! created by one transaction, so the set of a key `{name}/{lease hex}`
//! created at R is every key `{other}/{lease hex}` on that lease created
//! at R.

use crate::client::{Client, Retry, paths, prefix_end};
use crate::error::{Error, Result};
use crate::types::{Holder, Revision};
use crate::wire::etcdserverpb as pb;
use pb::range_request::{SortOrder, SortTarget};
use pb::request_op::Request as Op;
use pb::response_op::Response as OpResp;

/// The set a holder's or waiter's key belongs to.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct LockSet {
    /// Every name of the set, in canonical order (one name: a lock taken
    /// alone).
    pub names: Vec<String>,
    /// The set's one fencing token (its keys' create revision).
    pub fencing_token: Revision,
    /// The names of the set on which an older key is still there (held or
    /// awaited by others): where the set waits. Empty when it holds.
    pub waiting_on: Vec<String>,
}

/// Reads per `Txn`: etcd refuses more than `--max-txn-ops` (128).
const READS_PER_TXN: usize = 64;

impl Client {
    /// The set that `holder`'s key belongs to (a holder or waiter from
    /// [`holders`](Client::holders) or [`holder`](Client::holder)): the
    /// keys of the same shape on its lease with its create revision, and
    /// the names of the set where an older key still stands.
    ///
    /// Wire calls: one `Lease/LeaseTimeToLive` asking for the lease's keys,
    /// then one read-only `KV/Txn` (per 64 keys) of the keys that may be the
    /// set's, and one of each of the set's names' first key.
    ///
    /// # Errors
    /// Network errors; [`Error::PermissionDenied`](crate::Error::PermissionDenied)
    /// when the user may not read every key on the lease.
    ///
    /// # Cancel safety
    /// Cancel safe (reads only).
    pub async fn lock_set(&self, holder: &Holder) -> Result<LockSet> {
        let suffix = format!("/{}", holder.lease);
        let on_lease = self.lease_time_to_live_raw(holder.lease, true).await?.keys;
        let candidates: Vec<String> = on_lease
            .into_iter()
            .filter_map(|k| String::from_utf8(k).ok())
            .filter(|k| k.ends_with(&suffix) && k.len() > suffix.len())
            .collect();
        let mut names = Vec::new();
        for chunk in candidates.chunks(READS_PER_TXN) {
            let reads = chunk.iter().map(|k| pb::RangeRequest {
                key: k.as_bytes().to_vec(),
                keys_only: true,
                ..Default::default()
            });
            for (key, r) in chunk.iter().zip(self.read_all(reads).await?) {
                if r.kvs.first().map(|kv| kv.create_revision) == Some(holder.fencing_token.0) {
                    names.push(key[..key.len() - suffix.len()].to_owned());
                }
            }
        }
        if names.is_empty() {
            // Gone since it was read: it was a set of its own name at most.
            names.push(holder.name.clone());
        }
        names.sort_unstable();
        let waiting_on = self.older_first(&names, holder.fencing_token).await?;
        Ok(LockSet {
            names,
            fencing_token: holder.fencing_token,
            waiting_on,
        })
    }

    /// The names among `names` whose first key was created before `rev`.
    async fn older_first(&self, names: &[String], rev: Revision) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for chunk in names.chunks(READS_PER_TXN) {
            let reads = chunk.iter().map(|n| {
                let prefix = format!("{n}/").into_bytes();
                pb::RangeRequest {
                    range_end: prefix_end(&prefix),
                    key: prefix,
                    sort_order: SortOrder::Ascend as i32,
                    sort_target: SortTarget::Create as i32,
                    limit: 1,
                    keys_only: true,
                    ..Default::default()
                }
            });
            for (name, r) in chunk.iter().zip(self.read_all(reads).await?) {
                if r.kvs.first().is_some_and(|kv| kv.create_revision < rev.0) {
                    out.push(name.clone());
                }
            }
        }
        Ok(out)
    }

    /// One read-only `Txn` of `reads`; their answers in order.
    async fn read_all(
        &self,
        reads: impl Iterator<Item = pb::RangeRequest>,
    ) -> Result<Vec<pb::RangeResponse>> {
        let success: Vec<_> = reads
            .map(|r| pb::RequestOp {
                request: Some(Op::RequestRange(r)),
            })
            .collect();
        let n = success.len();
        let req = pb::TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        };
        // Safe to resend: it only reads.
        let resp = self.txn(Retry::Safe, req).await?;
        let out: Vec<_> = resp
            .responses
            .into_iter()
            .filter_map(|r| match r.response {
                Some(OpResp::ResponseRange(r)) => Some(r),
                _ => None,
            })
            .collect();
        if out.len() != n {
            return Err(Error::Protocol {
                path: paths::TXN,
                detail: format!("{} reads answered where {n} were sent", out.len()),
            });
        }
        Ok(out)
    }
}
