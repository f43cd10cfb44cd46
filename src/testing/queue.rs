//! Reading a name's queue straight from etcd, in tests: every key under
//! `{name}/`, oldest first, and waits on it.

use std::time::Duration;

use super::wait::{wait_until, within};
use crate::client::Client;
use crate::types::{KeyValue, LeaseId};
use crate::wire::etcdserverpb as pb;

/// How long one read of the queue, or one wait on it, may take.
const LIMIT: Duration = Duration::from_secs(10);

/// Every key under `{name}/`, oldest (lowest create revision) first: the
/// holders and the waiters of a lock, the candidates of an election.
///
/// # Panics
/// When the read fails or takes over 10 s.
pub async fn queue(client: &Client, name: &str) -> Vec<KeyValue> {
    let (mut kvs, _) = within(
        "read the queue",
        LIMIT,
        client.get_prefix(format!("{name}/")),
    )
    .await
    .unwrap_or_else(|e| panic!("read the queue of {name}: {e}"));
    kvs.sort_by_key(|kv| kv.create_revision);
    kvs
}

/// The keys of [`queue`], as text.
///
/// # Panics
/// As [`queue`].
pub async fn queue_keys(client: &Client, name: &str) -> Vec<String> {
    queue(client, name)
        .await
        .iter()
        .map(KeyValue::key_str)
        .collect()
}

/// Waits until `n` keys are under `{name}/` (holders included).
///
/// # Panics
/// When that does not happen within 10 s.
pub async fn wait_queued(client: &Client, name: &str, n: usize) {
    wait_until(
        &format!("{n} keys are queued for {name}"),
        LIMIT,
        || async { queue(client, name).await.len() == n },
    )
    .await;
}

/// Waits until the keys under `{name}/`, oldest first, are exactly `keys`.
///
/// # Panics
/// When that does not happen within 10 s.
pub async fn wait_queue_is<S: AsRef<str>>(client: &Client, name: &str, keys: &[S]) {
    let want: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
    wait_until(
        &format!("the queue of {name} is {want:?}"),
        LIMIT,
        || async { queue_keys(client, name).await == want },
    )
    .await;
}

/// Puts `key = value` on `lease` as another process would (an earlier run
/// of a resumed session, say): one `Txn` with one put.
///
/// # Panics
/// When the put fails or takes over 10 s.
pub async fn put_on_lease(client: &Client, key: &str, value: &[u8], lease: LeaseId) {
    let put = pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        lease: lease.0,
        prev_kv: false,
    };
    let req = pb::TxnRequest {
        compare: vec![],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put)),
        }],
        failure: vec![],
    };
    within("put on the lease", LIMIT, client.txn_raw(req))
        .await
        .unwrap_or_else(|e| panic!("put {key} on lease {lease}: {e}"));
}
