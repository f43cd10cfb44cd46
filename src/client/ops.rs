//! The typed calls: member status, reads, writes, leases and transactions,
//! each one [`Client::unary`] call; and the small helpers they share.

use std::time::Duration;

use super::{Client, Retry, paths};
use crate::error::{Error, Result};
use crate::types::{KeyValue, LeaseId, Revision};
use crate::wire::etcdserverpb as pb;
use crate::wire::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
};

/// What etcd's member status says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// The endpoint that answered.
    pub endpoint: String,
    /// etcd's version, e.g. `3.4.23`.
    pub version: String,
    /// The member's id.
    pub member_id: u64,
    /// The leader's member id (0: no leader).
    pub leader: u64,
    /// The store revision.
    pub revision: Revision,
}

impl Client {
    /// The status of the member that answers first.
    ///
    /// Wire calls: one `Maintenance/Status`. On a cluster with auth
    /// enabled, etcd 3.5.28 and later answer it only to a user with the
    /// root role; no lock, election or semaphore needs it.
    ///
    /// # Errors
    /// Network errors as for [`ClientBuilder::connect`](crate::ClientBuilder::connect);
    /// [`Error::PermissionDenied`] when the user lacks the root role that
    /// etcd 3.5.28 and later require.
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn status(&self) -> Result<MemberStatus> {
        let resp = self
            .unary(
                paths::STATUS,
                Retry::Safe,
                pb::StatusRequest {},
                |ch, r| async move { MaintenanceClient::new(ch).status(r).await },
            )
            .await?;
        let header = header(paths::STATUS, resp.header)?;
        Ok(MemberStatus {
            endpoint: self.preferred_endpoint(),
            version: resp.version,
            member_id: header.member_id,
            leader: resp.leader,
            revision: Revision(header.revision),
        })
    }

    /// Reads one key. Wire calls: one `KV/Range`.
    ///
    /// # Errors
    /// Network and server errors.
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>> {
        let resp = self
            .range(pb::RangeRequest {
                key: key.as_ref().to_vec(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next().map(KeyValue::from))
    }

    /// Reads every key under a prefix, in key order, with the revision read
    /// at. Wire calls: one `KV/Range`.
    ///
    /// # Errors
    /// Network and server errors.
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn get_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.as_ref();
        // etcd's way to say "every key": from "\0" to "\0".
        let key = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.to_vec()
        };
        let resp = self
            .range(pb::RangeRequest {
                key,
                range_end: prefix_end(prefix),
                ..Default::default()
            })
            .await?;
        let rev = header(paths::RANGE, resp.header)?.revision;
        Ok((
            resp.kvs.into_iter().map(KeyValue::from).collect(),
            Revision(rev),
        ))
    }

    /// Writes one key (no lease). Wire calls: one `KV/Put`; it is not
    /// retried once it may have been sent.
    ///
    /// # Errors
    /// Network and server errors; [`Error::Ambiguous`] when the answer was lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied even if the future is dropped.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Revision> {
        let req = pb::PutRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            ..Default::default()
        };
        let resp = self
            .unary(paths::PUT, Retry::IfNotSent, req, |ch, r| async move {
                KvClient::new(ch).put(r).await
            })
            .await?;
        Ok(Revision(header(paths::PUT, resp.header)?.revision))
    }

    /// Deletes one key; returns how many keys were deleted (0 or 1).
    /// Wire calls: one `KV/DeleteRange`; it is not resent once it may have
    /// reached etcd (a late copy could delete a key written since).
    ///
    /// # Errors
    /// Network and server errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: the delete may be applied even if the future is dropped.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<i64> {
        let req = pb::DeleteRangeRequest {
            key: key.as_ref().to_vec(),
            ..Default::default()
        };
        let resp = self
            .unary(
                paths::DELETE_RANGE,
                Retry::IfNotSent,
                req,
                |ch, r| async move { KvClient::new(ch).delete_range(r).await },
            )
            .await?;
        header(paths::DELETE_RANGE, resp.header)?;
        Ok(resp.deleted)
    }

    /// Grants a lease of at least `ttl` (rounded up to whole seconds); returns
    /// its id and the TTL the server granted. Wire calls: one `Lease/LeaseGrant`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero TTL; network and server errors.
    ///
    /// # Cancel safety
    /// Cancel safe in effect: a lease granted for a dropped future has no
    /// keys and expires after its TTL.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<(LeaseId, Duration)> {
        let secs = ttl_secs(ttl)?;
        let resp = self.lease_grant_raw(secs).await?;
        Ok((
            LeaseId(resp.id),
            Duration::from_secs(resp.ttl.max(0) as u64),
        ))
    }

    pub(crate) async fn lease_grant_raw(&self, secs: i64) -> Result<pb::LeaseGrantResponse> {
        let resp = self
            .unary(
                paths::LEASE_GRANT,
                Retry::Safe,
                pb::LeaseGrantRequest { ttl: secs, id: 0 },
                |ch, r| async move { LeaseClient::new(ch).lease_grant(r).await },
            )
            .await?;
        if !resp.error.is_empty() || resp.id == 0 || resp.ttl <= 0 {
            return Err(Error::Protocol {
                path: paths::LEASE_GRANT,
                detail: format!(
                    "grant answered id={} ttl={} error={:?}",
                    resp.id, resp.ttl, resp.error
                ),
            });
        }
        Ok(resp)
    }

    /// Revokes a lease, deleting every key attached to it in the same commit.
    /// Returns `false` when the lease did not exist (it had expired).
    /// Wire calls: one `Lease/LeaseRevoke`.
    ///
    /// # Errors
    /// Network and server errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: the revoke may be applied even if the future is dropped.
    pub async fn lease_revoke(&self, lease: LeaseId) -> Result<bool> {
        let r = self
            .unary(
                paths::LEASE_REVOKE,
                Retry::Safe,
                pb::LeaseRevokeRequest { id: lease.0 },
                |ch, r| async move { LeaseClient::new(ch).lease_revoke(r).await },
            )
            .await;
        match r {
            Ok(resp) => header(paths::LEASE_REVOKE, resp.header).map(|_| true),
            Err(Error::Etcd { message, .. }) if message.contains("lease not found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Time left on a lease, `None` when it does not exist.
    /// Wire calls: one `Lease/LeaseTimeToLive`.
    ///
    /// # Errors
    /// Network and server errors.
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let resp = self.lease_time_to_live_raw(lease, false).await?;
        Ok((resp.ttl >= 0).then(|| Duration::from_secs(resp.ttl as u64)))
    }

    /// `Lease/LeaseTimeToLive`, the whole answer (remaining and granted TTL;
    /// with `keys`, the keys attached to the lease).
    pub(crate) async fn lease_time_to_live_raw(
        &self,
        lease: LeaseId,
        keys: bool,
    ) -> Result<pb::LeaseTimeToLiveResponse> {
        let resp = self
            .unary(
                paths::LEASE_TTL,
                Retry::Safe,
                pb::LeaseTimeToLiveRequest { id: lease.0, keys },
                |ch, r| async move { LeaseClient::new(ch).lease_time_to_live(r).await },
            )
            .await?;
        header(paths::LEASE_TTL, resp.header)?;
        Ok(resp)
    }

    pub(crate) async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse> {
        let resp = self
            .unary(paths::RANGE, Retry::Safe, req, |ch, r| async move {
                KvClient::new(ch).range(r).await
            })
            .await?;
        header(paths::RANGE, resp.header)?;
        Ok(resp)
    }

    pub(crate) async fn txn(&self, retry: Retry, req: pb::TxnRequest) -> Result<pb::TxnResponse> {
        let resp = self
            .unary(paths::TXN, retry, req, |ch, r| async move {
                KvClient::new(ch).txn(r).await
            })
            .await?;
        header(paths::TXN, resp.header)?;
        Ok(resp)
    }

    /// Runs a raw transaction, sent exactly as given; it is not retried once
    /// it may have been sent. For auditors and for writes conditional on a
    /// lock (see [`LockGuard::is_owner`](crate::LockGuard::is_owner)).
    /// Wire calls: one `KV/Txn`.
    ///
    /// # Errors
    /// Network and server errors; [`Error::Ambiguous`] when the answer was lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the transaction may be applied even if the future is dropped.
    pub async fn txn_raw(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse> {
        self.txn(Retry::IfNotSent, req).await
    }
}

/// The answer header, which etcd always sends.
pub(crate) fn header(
    path: &'static str,
    h: Option<pb::ResponseHeader>,
) -> Result<pb::ResponseHeader> {
    h.ok_or_else(|| Error::Protocol {
        path,
        detail: "the answer has no header".into(),
    })
}

/// The end of the range of every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The largest lease TTL etcd grants, in seconds.
pub(crate) const MAX_TTL_SECS: i64 = 9_000_000_000;

/// A TTL in whole seconds, rounded up; at least 1 s and within etcd's limit.
pub(crate) fn ttl_secs(ttl: Duration) -> Result<i64> {
    if ttl.is_zero() {
        return Err(Error::invalid("the TTL must be at least one second"));
    }
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    if secs > MAX_TTL_SECS as u64 {
        return Err(Error::invalid(format!(
            "the TTL must be at most {MAX_TTL_SECS} s (etcd's limit)"
        )));
    }
    Ok(secs as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn ttl_rounds_up_and_rejects_zero() {
        assert_eq!(ttl_secs(Duration::from_millis(1500)).unwrap(), 2);
        assert_eq!(ttl_secs(Duration::from_secs(5)).unwrap(), 5);
        assert!(ttl_secs(Duration::ZERO).is_err());
    }
}
