//! Bad input and bad servers: each gives a typed error whose message is one
//! clear line, within the request timeout, and nothing panics.
//!
//! - Arguments (names, TTLs, values, endpoints, timeouts) are rejected
//!   before anything is sent: the tests check that no wire record was made.
//! - Servers that are not etcd, or that answer malformed gRPC, are played by
//!   a fake HTTP/2 server on `127.0.0.1:0` (the `h2` crate): garbage
//!   protobuf, a truncated gRPC frame, a valid but empty message (no
//!   header), a non-200 HTTP status, an unknown grpc-status code, no answer.
//!
//! Each test prints its row of the bad-input table in docs/reliability.md
//! (`| bad input | error |`) with the exact `Display` text; see them with
//! `cargo test --features testing --test bad_input -- --nocapture --test-threads 1`.
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use locker::testing::{Etcd, closed_port};
use locker::wire::etcdserverpb as pb;
use locker::{Client, Error, MAX_NAME_LEN, MAX_VALUE_LEN, WireRecord};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout};

/// The request timeout of every client here; no case may take much longer.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(800);

/// The bound on one case: a few attempts of the request timeout.
const BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A client that is never used on the network (its endpoint is closed),
/// with a count of the wire records it makes.
fn offline_client() -> (Client, Arc<AtomicUsize>) {
    let records = Arc::new(AtomicUsize::new(0));
    let seen = records.clone();
    let client = Client::builder()
        .endpoints([closed_port().to_string()])
        .request_timeout(REQUEST_TIMEOUT)
        .audit(move |_: &WireRecord| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .expect("build a client");
    (client, records)
}

/// Awaits `fut` within [`BOUND`] and checks that it fails with a message of
/// one clear line; prints the table row and returns the error.
async fn fails<T, F>(input: &str, fut: F) -> Error
where
    T: std::fmt::Debug,
    F: IntoFuture<Output = locker::Result<T>>,
{
    let started = Instant::now();
    let out = timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("{input}: no outcome within {BOUND:?}"));
    let elapsed = started.elapsed();
    let err = match out {
        Ok(v) => panic!("{input}: accepted ({v:?})"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        !msg.is_empty() && !msg.contains('\n') && !msg.contains('\r'),
        "{input}: the message is not one line: {msg:?}"
    );
    assert!(
        msg.len() <= 400,
        "{input}: the message is {} bytes long: {msg}",
        msg.len()
    );
    assert!(
        msg.chars().all(|c| !c.is_control()),
        "{input}: the message has control characters: {msg:?}"
    );
    let variant = format!("{err:?}");
    let variant = variant.split([' ', '{', '(']).next().unwrap_or_default();
    eprintln!("| {input} | `{variant}`: {msg} |");
    assert!(elapsed < BOUND, "{input}: took {elapsed:?}");
    err
}

/// A checked error that must be [`Error::InvalidArgument`], with nothing
/// sent.
async fn invalid<T: std::fmt::Debug>(
    input: &str,
    records: &AtomicUsize,
    fut: impl IntoFuture<Output = locker::Result<T>>,
) {
    let before = records.load(Ordering::SeqCst);
    let err = fails(input, fut).await;
    assert!(
        matches!(err, Error::InvalidArgument { .. }),
        "{input}: {err:?}"
    );
    assert!(!err.is_connectivity() && !err.is_lost());
    assert_eq!(
        records.load(Ordering::SeqCst),
        before,
        "{input}: something was sent before the argument was rejected"
    );
}

async fn bad_endpoint(input: &str, endpoints: Vec<String>) -> Error {
    let builder = Client::builder()
        .endpoints(endpoints)
        .request_timeout(REQUEST_TIMEOUT);
    fails(input, builder.connect()).await
}

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

#[tokio::test]
async fn name_empty() {
    let (client, records) = offline_client();
    invalid("lock name `\"\"`", &records, client.lock("")).await;
    invalid("try-lock name `\"\"`", &records, client.try_lock("")).await;
    invalid("holder of `\"\"`", &records, client.holder("")).await;
}

#[tokio::test]
async fn name_too_long() {
    let (client, records) = offline_client();
    let name = "n".repeat(MAX_NAME_LEN + 1);
    invalid(
        "lock name of 4097 bytes",
        &records,
        client.lock(name.clone()),
    )
    .await;
    invalid(
        "try-lock name of 4097 bytes",
        &records,
        client.try_lock(name),
    )
    .await;
}

#[tokio::test]
async fn name_with_control_characters() {
    let (client, records) = offline_client();
    for (input, name) in [
        ("lock name with a newline `a\\nb`", "a\nb"),
        ("lock name with NUL `a\\0b`", "a\0b"),
        ("lock name with ESC `a\\x1bb`", "a\x1bb"),
        ("lock name with DEL `a\\x7fb`", "a\x7fb"),
        ("lock name with U+0085 `a\\u{85}b`", "a\u{85}b"),
    ] {
        invalid(input, &records, client.lock(name)).await;
    }
}

#[tokio::test]
async fn ttl_zero() {
    let (client, records) = offline_client();
    invalid("lock TTL 0", &records, client.lock("a").ttl(Duration::ZERO)).await;
    invalid(
        "try-lock TTL 0",
        &records,
        client.try_lock("a").ttl(Duration::ZERO),
    )
    .await;
    invalid("session TTL 0", &records, client.session(Duration::ZERO)).await;
    invalid(
        "lease grant TTL 0",
        &records,
        client.lease_grant(Duration::ZERO),
    )
    .await;
}

#[tokio::test]
async fn ttl_absurdly_large() {
    let (client, records) = offline_client();
    let huge = Duration::MAX;
    invalid(
        "lock TTL Duration::MAX",
        &records,
        client.lock("a").ttl(huge),
    )
    .await;
    invalid("session TTL Duration::MAX", &records, client.session(huge)).await;
    invalid(
        "lease grant TTL 10^10 s",
        &records,
        client.lease_grant(Duration::from_secs(10_000_000_000)),
    )
    .await;
}

/// A huge acquire timeout is no timeout (and no overflow).
#[tokio::test]
async fn acquire_timeout_absurdly_large() {
    let (client, records) = offline_client();
    // The offline client fails to connect: what matters is that it fails
    // with an error, not a panic.
    let r = timeout(BOUND, client.lock("a").timeout(Duration::MAX)).await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
    let _ = records;
}

#[tokio::test]
async fn value_too_large() {
    let (client, records) = offline_client();
    let value = vec![b'v'; MAX_VALUE_LEN + 1];
    invalid(
        "lock value of 1 MiB + 1 byte",
        &records,
        client.lock("a").value(value.clone()),
    )
    .await;
    invalid(
        "try-lock value of 1 MiB + 1 byte",
        &records,
        client.try_lock("a").value(value),
    )
    .await;
}

/// With a real etcd: the same checks on a session, nothing written, and the
/// limits themselves accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_rejects_bad_input_and_accepts_the_limits() {
    let etcd = Etcd::single().await.expect("start etcd");
    let records = Arc::new(AtomicUsize::new(0));
    let seen = records.clone();
    let client = Client::builder()
        .endpoints(etcd.endpoints())
        .audit(move |_: &WireRecord| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .connect()
        .await
        .expect("connect");
    let session = client
        .session(Duration::from_secs(10))
        .await
        .expect("open a session");
    let long = "n".repeat(MAX_NAME_LEN + 1);
    let big = vec![b'v'; MAX_VALUE_LEN + 1];
    invalid("session lock name `\"\"`", &records, session.lock("")).await;
    invalid(
        "session lock name of 4097 bytes",
        &records,
        session.lock(long),
    )
    .await;
    invalid("session lock name `a\\nb`", &records, session.lock("a\nb")).await;
    invalid(
        "session lock value of 1 MiB + 1 byte",
        &records,
        session.lock("a").value(big),
    )
    .await;
    for prefix in ["a", "n"] {
        let (kvs, _) = client.get_prefix(prefix).await.expect("read the prefix");
        assert!(kvs.is_empty(), "a rejected lock wrote {kvs:?}");
    }

    // The limits are accepted by locker and by etcd.
    let at_limit = "n".repeat(MAX_NAME_LEN);
    let g = timeout(BOUND, session.lock(at_limit.clone()))
        .await
        .expect("in time")
        .expect("a 4096-byte name");
    g.release().await.expect("release");
    session.close().await.expect("close");
}

/// A value of `MAX_VALUE_LEN` is accepted by the argument check, so etcd
/// must accept the lock too: free (the fast path) and held (the queueing
/// branch, which carries the value a second time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_at_the_limit_is_accepted() {
    let etcd = Etcd::single().await.expect("start etcd");
    let client = Client::builder()
        .endpoints(etcd.endpoints())
        .connect()
        .await
        .expect("connect");
    let g = timeout(
        BOUND,
        client
            .lock("big-value")
            .value(vec![b'v'; MAX_VALUE_LEN])
            .ttl(Duration::from_secs(5)),
    )
    .await
    .expect("in time")
    .expect("a lock with a 1 MiB value");
    assert_eq!(g.value().len(), MAX_VALUE_LEN);
    let queued = timeout(
        BOUND,
        client
            .lock("big-value")
            .value(vec![b'w'; MAX_VALUE_LEN])
            .timeout(Duration::from_millis(500)),
    )
    .await
    .expect("in time");
    assert!(
        matches!(queued, Err(Error::AcquireTimeout { .. })),
        "the queued request with a big value: {queued:?}"
    );
    g.release().await.expect("release");
}

// ---------------------------------------------------------------------------
// Endpoints and timeouts
// ---------------------------------------------------------------------------

#[tokio::test]
async fn endpoints_empty_list() {
    let err = bad_endpoint("endpoints: empty list", Vec::new()).await;
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn endpoint_empty_string() {
    let err = bad_endpoint("endpoint `\"\"`", vec![String::new()]).await;
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
}

#[tokio::test]
async fn endpoint_without_port() {
    let err = bad_endpoint("endpoint `nohost`", vec!["nohost".into()]).await;
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
}

#[tokio::test]
async fn endpoint_port_zero() {
    let err = bad_endpoint("endpoint `http://h:0`", vec!["http://h:0".into()]).await;
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
}

#[tokio::test]
async fn endpoint_port_out_of_range() {
    let err = bad_endpoint("endpoint `h:99999`", vec!["h:99999".into()]).await;
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
}

#[tokio::test]
async fn endpoint_other_scheme() {
    let err = bad_endpoint("endpoint `ftp://x:1`", vec!["ftp://x:1".into()]).await;
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
}

#[tokio::test]
async fn endpoint_with_path() {
    let err = bad_endpoint("endpoint `http://h:1/v3`", vec!["http://h:1/v3".into()]).await;
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn endpoint_https_without_tls() {
    let err = bad_endpoint(
        "endpoint `https://127.0.0.1:2379`",
        vec!["https://127.0.0.1:2379".into()],
    )
    .await;
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[tokio::test]
async fn one_bad_endpoint_among_good_ones() {
    let err = bad_endpoint(
        "endpoints `127.0.0.1:2379`, `nohost`",
        vec!["127.0.0.1:2379".into(), "nohost".into()],
    )
    .await;
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
    assert!(err.to_string().contains("nohost"), "{err}");
}

#[tokio::test]
async fn timeouts_zero() {
    let ep = closed_port().to_string();
    let err = fails(
        "request timeout 0",
        Client::builder()
            .endpoints([ep.as_str()])
            .request_timeout(Duration::ZERO)
            .connect(),
    )
    .await;
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    let err = fails(
        "connect timeout 0",
        Client::builder()
            .endpoints([ep.as_str()])
            .connect_timeout(Duration::ZERO)
            .connect(),
    )
    .await;
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn nothing_listening() {
    let ep = closed_port().to_string();
    let err = bad_endpoint("endpoint with nothing listening", vec![ep.clone()]).await;
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_connectivity());
    assert!(err.to_string().contains(&ep), "{err}");
}

/// A TCP server that answers every connection with `reply`, then keeps it
/// open for a while.
async fn raw_server(reply: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = timeout(Duration::from_millis(200), s.read(&mut buf)).await;
                let _ = s.write_all(reply).await;
                let _ = timeout(Duration::from_secs(3), s.read(&mut buf)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_server_answering_garbage() {
    let ep = raw_server(&[0xff; 64]).await;
    let err = bad_endpoint("a TCP server answering 64 bytes of 0xff", vec![ep]).await;
    assert!(matches!(err, Error::NotEtcd { .. }), "{err:?}");
}

#[tokio::test]
async fn an_http1_server() {
    let ep = raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").await;
    let err = bad_endpoint("an HTTP/1.1 server", vec![ep]).await;
    assert!(matches!(err, Error::NotEtcd { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------
// A fake gRPC server answering malformed responses
// ---------------------------------------------------------------------------

/// How the fake server answers a call.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// HTTP 200, a gRPC frame whose protobuf bytes are garbage, grpc-status 0.
    GarbageProtobuf,
    /// HTTP 200, a gRPC frame whose length prefix (100) is larger than the
    /// 5 bytes that follow, then END_STREAM (no trailers).
    TruncatedFrame,
    /// HTTP 200, a valid empty message (every field default: no header),
    /// grpc-status 0.
    EmptyMessage,
    /// This HTTP status, no body.
    HttpStatus(u16),
    /// HTTP 200, no message, grpc-status with this code.
    GrpcStatus(&'static str),
    /// Headers never sent: the call gets no answer.
    Silent,
    /// The stream is reset (`RST_STREAM` with `CANCEL`) without an answer.
    Reset,
    /// A valid answer.
    Valid,
}

/// A gRPC frame: compression flag 0, big-endian length, message.
fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(5 + msg.len());
    f.push(0);
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    Bytes::from(f)
}

fn header() -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: 1,
        member_id: 1,
        revision: 1,
        raft_term: 1,
    })
}

/// A valid answer for `path` (only the ones the cases need).
fn valid_answer(path: &str) -> Vec<u8> {
    match path {
        "/etcdserverpb.Maintenance/Status" => pb::StatusResponse {
            header: header(),
            version: "3.4.23".into(),
            leader: 1,
            ..Default::default()
        }
        .encode_to_vec(),
        "/etcdserverpb.Lease/LeaseGrant" => pb::LeaseGrantResponse {
            header: header(),
            id: 0x1234,
            ttl: 10,
            error: String::new(),
        }
        .encode_to_vec(),
        "/etcdserverpb.Lease/LeaseKeepAlive" => pb::LeaseKeepAliveResponse {
            header: header(),
            id: 0x1234,
            ttl: 10,
        }
        .encode_to_vec(),
        _ => Vec::new(),
    }
}

/// Serves HTTP/2 on `127.0.0.1:0`; each call is answered as `answer(path)`
/// says. Returns the endpoint.
async fn fake_grpc(answer: fn(&str) -> Answer) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = conn.accept().await {
                    let path = request.uri().path().to_owned();
                    tokio::spawn(reply(answer(&path), path, request, respond));
                }
            });
        }
    });
    addr
}

async fn reply(
    answer: Answer,
    path: String,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    // Keep the request body (and so the stream) alive while answering.
    let mut body = request.into_body();
    let ok = || {
        http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .expect("response")
    };
    let status = |code: &str| {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", code.parse().expect("header value"));
        t
    };
    match answer {
        Answer::GarbageProtobuf => {
            if let Ok(mut s) = respond.send_response(ok(), false) {
                let _ = s.send_data(grpc_frame(&[0xff; 12]), false);
                let _ = s.send_trailers(status("0"));
            }
        }
        Answer::TruncatedFrame => {
            if let Ok(mut s) = respond.send_response(ok(), false) {
                let mut f = vec![0, 0, 0, 0, 100];
                f.extend_from_slice(&[0x0a, 0x03, 0x08, 0x01, 0x10]);
                let _ = s.send_data(Bytes::from(f), true);
            }
        }
        Answer::EmptyMessage => {
            if let Ok(mut s) = respond.send_response(ok(), false) {
                let _ = s.send_data(grpc_frame(&[]), false);
                let _ = s.send_trailers(status("0"));
            }
        }
        Answer::HttpStatus(code) => {
            let r = http::Response::builder()
                .status(code)
                .body(())
                .expect("response");
            let _ = respond.send_response(r, true);
        }
        Answer::GrpcStatus(code) => {
            let mut t = status(code);
            t.insert("grpc-message", "weird".parse().expect("header value"));
            if let Ok(mut s) = respond.send_response(ok(), false) {
                let _ = s.send_trailers(t);
            }
        }
        Answer::Silent => {
            // Hold the stream without a word until the test is over.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(respond);
        }
        Answer::Reset => respond.send_reset(h2::Reason::CANCEL),
        Answer::Valid => {
            if let Ok(mut s) = respond.send_response(ok(), false) {
                let _ = s.send_data(grpc_frame(&valid_answer(&path)), false);
                if path.contains("KeepAlive") {
                    // A stream: answer each keepalive, end with the client.
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        let _ = s.send_data(grpc_frame(&valid_answer(&path)), false);
                    }
                }
                let _ = s.send_trailers(status("0"));
            }
        }
    }
    // Hold the stream open until the client is done with it.
    while let Ok(Some(Ok(chunk))) = timeout(Duration::from_secs(10), body.data()).await {
        let _ = body.flow_control().release_capacity(chunk.len());
    }
}

fn client_of(ep: &str) -> Client {
    Client::builder()
        .endpoints([ep])
        .request_timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build")
}

#[tokio::test]
async fn grpc_garbage_protobuf() {
    let ep = fake_grpc(|_| Answer::GarbageProtobuf).await;
    let err = bad_endpoint(
        "Status answered with garbage protobuf bytes",
        vec![ep.clone()],
    )
    .await;
    assert!(!err.is_lost(), "{err:?}");
    let err = fails(
        "Put answered with garbage protobuf bytes",
        client_of(&ep).put("k", "v"),
    )
    .await;
    assert!(!err.is_lost(), "{err:?}");
}

#[tokio::test]
async fn grpc_truncated_frame() {
    let ep = fake_grpc(|_| Answer::TruncatedFrame).await;
    let err = bad_endpoint(
        "Status answered with a truncated gRPC frame",
        vec![ep.clone()],
    )
    .await;
    assert!(!err.is_lost(), "{err:?}");
    let err = fails(
        "Txn answered with a truncated gRPC frame",
        client_of(&ep).txn_raw(pb::TxnRequest::default()),
    )
    .await;
    assert!(!err.is_lost(), "{err:?}");
}

#[tokio::test]
async fn grpc_message_without_header() {
    let ep = fake_grpc(|_| Answer::EmptyMessage).await;
    let err = bad_endpoint(
        "Status answered with an empty message (no header)",
        vec![ep.clone()],
    )
    .await;
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let client = client_of(&ep);
    let err = fails(
        "Txn answered with an empty message (no header)",
        client.txn_raw(pb::TxnRequest::default()),
    )
    .await;
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let err = fails(
        "Put answered with an empty message (no header)",
        client.put("k", "v"),
    )
    .await;
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let err = fails(
        "LeaseGrant answered with an empty message (lease id 0)",
        client.lock("a").ttl(Duration::from_secs(5)),
    )
    .await;
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let err = fails(
        "Range (prefix) answered with an empty message (no header)",
        client.get_prefix("a/"),
    )
    .await;
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
}

/// A lock whose lease grant is answered properly but whose acquire `Txn`
/// answer has no header.
#[tokio::test]
async fn lock_txn_answer_without_header() {
    let ep = fake_grpc(|path| match path {
        "/etcdserverpb.KV/Txn" => Answer::EmptyMessage,
        _ => Answer::Valid,
    })
    .await;
    let client = client_of(&ep);
    client.status().await.expect("the fake status is valid");
    let err = fails(
        "lock: the acquire Txn answered with an empty message (no header)",
        client.lock("a").ttl(Duration::from_secs(5)),
    )
    .await;
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let session = client
        .session(Duration::from_secs(5))
        .await
        .expect("the fake grant is valid");
    let err = fails(
        "session lock: the acquire Txn answered with an empty message (no header)",
        session.lock("a"),
    )
    .await;
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
}

/// Every answer without a header is as malformed as the ones above.
#[tokio::test]
async fn other_answers_without_header() {
    let ep = fake_grpc(|_| Answer::EmptyMessage).await;
    let client = client_of(&ep);
    let lease = locker::LeaseId(0x1234);
    let accepted: Vec<String> = [
        ("get", format!("{:?}", client.get("k").await)),
        ("holder", format!("{:?}", client.holder("a").await)),
        ("delete", format!("{:?}", client.delete("k").await)),
        (
            "lease_revoke",
            format!("{:?}", client.lease_revoke(lease).await),
        ),
        (
            "lease_time_to_live",
            format!("{:?}", client.lease_time_to_live(lease).await),
        ),
    ]
    .into_iter()
    .filter(|(_, r)| !r.starts_with("Err(Protocol"))
    .map(|(call, r)| format!("{call} -> {r}"))
    .collect();
    assert!(
        accepted.is_empty(),
        "answers without a header accepted: {accepted:?}"
    );
}

#[tokio::test]
async fn grpc_http_status_not_200() {
    let ep = fake_grpc(|_| Answer::HttpStatus(503)).await;
    let err = bad_endpoint("Status answered with HTTP 503", vec![ep]).await;
    assert!(matches!(err, Error::NotEtcd { .. }), "{err:?}");
    let ep = fake_grpc(|_| Answer::HttpStatus(404)).await;
    let err = bad_endpoint("Status answered with HTTP 404", vec![ep.clone()]).await;
    assert!(matches!(err, Error::NotEtcd { .. }), "{err:?}");
    let err = fails("Put answered with HTTP 404", client_of(&ep).put("k", "v")).await;
    assert!(matches!(err, Error::NotEtcd { .. }), "{err:?}");
}

#[tokio::test]
async fn grpc_unknown_status_code() {
    let ep = fake_grpc(|_| Answer::GrpcStatus("99")).await;
    let err = bad_endpoint("Status answered with grpc-status 99", vec![ep.clone()]).await;
    assert!(!err.is_lost(), "{err:?}");
    let err = fails(
        "Put answered with grpc-status 99",
        client_of(&ep).put("k", "v"),
    )
    .await;
    assert!(!err.is_lost(), "{err:?}");
}

#[tokio::test]
async fn grpc_no_answer() {
    let ep = fake_grpc(|_| Answer::Silent).await;
    let err = bad_endpoint("Status never answered", vec![ep.clone()]).await;
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let err = fails("Put never answered", client_of(&ep).put("k", "v")).await;
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn grpc_stream_reset() {
    let ep = fake_grpc(|_| Answer::Reset).await;
    let err = bad_endpoint("Status answered with RST_STREAM(CANCEL)", vec![ep.clone()]).await;
    assert!(!err.is_lost(), "{err:?}");
    let err = fails(
        "Put answered with RST_STREAM(CANCEL)",
        client_of(&ep).put("k", "v"),
    )
    .await;
    assert!(!err.is_lost(), "{err:?}");
}
