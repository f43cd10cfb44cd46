//! The client against real etcd and against things that are not etcd:
//! each failure is a distinct, clear error; failover skips dead endpoints.
#![cfg(feature = "testing")]

use std::time::Duration;

use locker::testing::{Etcd, Proxy, ProxyMode, closed_port};
use locker::{Client, Error, LeaseId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout};

/// A server that answers every connection with `reply`.
async fn fake_server(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        for _ in 0..50 {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = timeout(Duration::from_millis(200), s.read(&mut buf)).await;
            let _ = s.write_all(reply).await;
            // Keep the connection open until the client gives up on it.
            let _ = timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_checks_it_talks_to_etcd() {
    let etcd = Etcd::single().await.unwrap();
    let client = Client::builder()
        .endpoints(etcd.endpoints())
        .connect()
        .await
        .unwrap();
    let status = client.status().await.unwrap();
    assert!(status.version.starts_with("3."), "{status:?}");
    assert_ne!(status.leader, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_unreachable_and_names_the_endpoint() {
    let ep = closed_port().to_string();
    let started = Instant::now();
    let err = Client::builder()
        .endpoints([ep.as_str()])
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&ep) && msg.contains("refused"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_server_is_not_etcd() {
    let (ep, _task) = fake_server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").await;
    let err = Client::builder()
        .endpoints([ep.as_str()])
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotEtcd { .. }), "{err:?}");
    assert!(err.to_string().contains("not an etcd"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_garbage_is_not_etcd() {
    // Not an HTTP/2 frame: the first "frame header" claims 16 MiB.
    let (ep, _task) = fake_server(&[0xff; 64]).await;
    let err = Client::builder()
        .endpoints([ep.as_str()])
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotEtcd { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_a_timeout() {
    let etcd = Etcd::single().await.unwrap();
    let proxy = Proxy::start(etcd.client_addr(0)).await.unwrap();
    proxy.set_mode(ProxyMode::Blackhole);
    let started = Instant::now();
    let err = Client::builder()
        .endpoints([proxy.url()])
        .request_timeout(Duration::from_millis(800))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("no answer within"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_error_status_is_reported_as_etcd_error() {
    let etcd = Etcd::single().await.unwrap();
    let client = Client::builder()
        .endpoints(etcd.endpoints())
        .connect()
        .await
        .unwrap();
    // A key attached to a lease that does not exist.
    let err = client
        .txn_raw(locker::wire::etcdserverpb::TxnRequest {
            compare: vec![],
            success: vec![locker::wire::etcdserverpb::RequestOp {
                request: Some(locker::wire::etcdserverpb::request_op::Request::RequestPut(
                    locker::wire::etcdserverpb::PutRequest {
                        key: b"k".to_vec(),
                        value: b"v".to_vec(),
                        lease: 0x1234,
                        prev_kv: false,
                    },
                )),
            }],
            failure: vec![],
        })
        .await
        .unwrap_err();
    match &err {
        Error::Etcd { message, path, .. } => {
            assert!(message.contains("lease not found"), "{message}");
            assert_eq!(*path, "/etcdserverpb.KV/Txn");
        }
        other => panic!("{other:?}"),
    }
    // Revoking a missing lease is not an error: it reports it did not exist.
    assert!(!client.lease_revoke(LeaseId(0x1234)).await.unwrap());
    assert_eq!(
        client.lease_time_to_live(LeaseId(0x1234)).await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_builder_input_is_rejected_before_anything_is_sent() {
    let err = Client::builder()
        .endpoints(Vec::<String>::new())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    for bad in [
        "",
        "localhost",
        "unix:///tmp/x",
        "http://h:0",
        "http://h:2379/path",
    ] {
        let err = Client::builder().endpoints([bad]).build().unwrap_err();
        assert!(
            matches!(err, Error::InvalidEndpoint { .. }),
            "{bad:?}: {err:?}"
        );
    }
    #[cfg(not(feature = "tls"))]
    {
        let err = Client::builder()
            .endpoints(["https://h:1"])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`tls` feature"), "{err}");
    }
    let err = Client::builder()
        .endpoints(["127.0.0.1:2379"])
        .request_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_over_when_the_member_in_use_is_killed() {
    let mut etcd = Etcd::cluster(3).await.unwrap();
    let client = Client::builder()
        .endpoints(etcd.endpoints())
        .connect()
        .await
        .unwrap();
    client.put("k", "v").await.unwrap();
    let in_use = client.status().await.unwrap().endpoint;
    let i = etcd.endpoints().iter().position(|e| *e == in_use).unwrap();
    etcd.kill(i);
    let started = Instant::now();
    let kv = client.get("k").await.unwrap().unwrap();
    let took = started.elapsed();
    eprintln!("failover: the first read after killing the member in use took {took:?}");
    assert_eq!(kv.value, b"v");
    assert_ne!(client.status().await.unwrap().endpoint, in_use);
    for _ in 0..10 {
        assert_eq!(client.get("k").await.unwrap().unwrap().value, b"v");
    }
    // Writes that can be learned or repeated safely fail over too.
    let (lease, _) = client.lease_grant(Duration::from_secs(5)).await.unwrap();
    assert!(client.lease_revoke(lease).await.unwrap());
    assert!(took < client.request_timeout(), "failover took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_written_by_etcdctl_and_by_locker_read_the_same() {
    let etcd = Etcd::single().await.unwrap();
    let client = Client::builder()
        .endpoints(etcd.endpoints())
        .connect()
        .await
        .unwrap();
    let etcdctl = |args: &[&str]| {
        let out = etcd
            .etcdctl(0)
            .unwrap()
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    etcdctl(&["put", "interop/from-etcdctl", "hello from etcdctl"]);
    let kv = client.get("interop/from-etcdctl").await.unwrap().unwrap();
    assert_eq!(kv.value, b"hello from etcdctl");
    assert_eq!(kv.version, 1);

    client
        .put("interop/from-locker", "hello from locker")
        .await
        .unwrap();
    let out = etcdctl(&["get", "interop/from-locker", "--print-value-only"]);
    assert_eq!(out.trim(), "hello from locker");

    // A lock key as etcdctl sees it: the layout and the lease match.
    let g = client.lock("interop/lock").value("v").await.unwrap();
    let out = etcdctl(&["get", "interop/lock/", "--prefix", "--keys-only"]);
    assert_eq!(out.trim(), g.key());
    // The lease by its ID: in JSON, as etcdctl's text differs by version
    // (3.5 zero-pads the hex ID to 16 digits, 3.4 does not).
    let ttl = etcdctl(&["lease", "timetolive", &g.lease().to_string(), "-w", "json"]);
    let id = format!("\"id\":{},", g.lease().0);
    assert!(ttl.contains(&id), "{id} not in {ttl}");
    assert!(!ttl.contains("\"ttl\":-1"), "the lease has expired: {ttl}");
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_endpoint_stalls_at_most_one_call() {
    let etcd = Etcd::cluster(3).await.unwrap();
    let proxy = Proxy::start(etcd.client_addr(0)).await.unwrap();
    let client = Client::builder()
        .endpoints([proxy.url(), etcd.endpoint(1), etcd.endpoint(2)])
        .request_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    client.put("k", "v").await.unwrap();
    proxy.set_mode(ProxyMode::Blackhole);
    let mut slow = 0;
    for _ in 0..10 {
        let started = Instant::now();
        client.get("k").await.unwrap();
        if started.elapsed() > Duration::from_secs(1) {
            slow += 1;
        }
    }
    assert!(slow <= 1, "{slow} of 10 reads waited for the dead endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_lost_is_ambiguous_not_resent() {
    let etcd = Etcd::single().await.unwrap();
    let proxy = Proxy::start(etcd.client_addr(0)).await.unwrap();
    let client = Client::builder()
        .endpoints([proxy.url()])
        .request_timeout(Duration::from_millis(800))
        .connect()
        .await
        .unwrap();
    proxy.set_mode(ProxyMode::DropResponses);
    let err = client.put("ambiguous", "1").await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { .. } | Error::Ambiguous { .. }),
        "{err:?}"
    );
    // The write did reach etcd exactly once.
    let direct = Client::builder()
        .endpoints(etcd.endpoints())
        .connect()
        .await
        .unwrap();
    let kv = direct
        .get("ambiguous")
        .await
        .unwrap()
        .expect("the put was applied");
    assert_eq!(kv.version, 1);
}

/// A client has at most `max_in_flight` unary calls on the wire; more wait
/// their turn. Through a proxy that delays every byte by `D` each way, six
/// reads sent at once by a client allowed two in flight go in three waves
/// (at least 3 × 2D), where six reads in flight together take about 2D.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_beyond_max_in_flight_wait_their_turn() {
    const D: Duration = Duration::from_millis(150);
    let etcd = Etcd::single().await.unwrap();
    let proxy = Proxy::start(etcd.client_addr(0)).await.unwrap();
    let client = Client::builder()
        .endpoints([proxy.url()])
        .max_in_flight(2)
        .connect()
        .await
        .unwrap();
    proxy.set_mode(ProxyMode::Delay(D));
    let t0 = Instant::now();
    let mut reads = tokio::task::JoinSet::new();
    for i in 0..6 {
        let c = client.clone();
        reads.spawn(async move { c.get(format!("capped/{i}")).await });
    }
    while let Some(r) = reads.join_next().await {
        r.expect("task").expect("read");
    }
    let took = t0.elapsed();
    eprintln!("6 reads, 2 in flight, {D:?} each way: {took:?}");
    assert!(
        took >= 3 * 2 * D,
        "six reads went faster than three waves: {took:?}"
    );
}

/// `max_in_flight(0)` is refused before anything is sent.
#[tokio::test]
async fn no_call_in_flight_is_refused() {
    let err = Client::builder()
        .endpoints([closed_port().to_string()])
        .max_in_flight(0)
        .connect()
        .await
        .expect_err("max_in_flight 0");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert!(err.to_string().contains("max_in_flight"), "{err}");
}
