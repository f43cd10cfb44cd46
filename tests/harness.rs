//! Self-test of the `testing` harness (real etcd processes + fault proxy).
//!
//! Run with `cargo test --features testing --test harness`.
#![cfg(feature = "testing")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use locker::testing::{Etcd, EtcdBuilder, Proxy, ProxyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const HEALTH_REQUEST: &[u8] =
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/// Raw `GET /health` over a fresh TCP connection; returns the whole response.
async fn get_health(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(HEALTH_REQUEST).await.expect("write");
    let mut response = Vec::new();
    timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("response within 5 s")
        .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

/// Polls `cond` every 20 ms until true; panics after `limit`.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(pid);
            }
        }
    }
    found
}

#[tokio::test]
async fn single_node_starts_and_is_healthy() {
    let etcd = Etcd::single().await.expect("start etcd");
    assert_eq!(etcd.len(), 1);
    assert!(!etcd.is_empty());
    let endpoint = etcd.endpoint(0);
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert_eq!(etcd.endpoints(), vec![endpoint.clone()]);
    assert_eq!(
        endpoint,
        format!("http://{}", etcd.client_addr(0)),
        "endpoint and client_addr agree"
    );
    let response = get_health(etcd.client_addr(0)).await;
    assert!(response.contains("\"health\":\"true\""), "{response}");
    assert!(etcd.is_running(0));
    assert_eq!(etcd.leader().await.expect("leader"), 0);
    assert!(etcd.data_dir(0).ends_with("m0"));
    assert!(etcd.data_dir(0).join("member").is_dir());
    let tail = etcd.log_tail(0, 5);
    assert!(!tail.is_empty() && tail.lines().count() <= 5, "{tail}");
}

#[tokio::test]
async fn three_node_cluster_elects_a_leader() {
    let etcd = Etcd::cluster(3).await.expect("start cluster");
    assert_eq!(etcd.len(), 3);
    let endpoints = etcd.endpoints();
    assert_eq!(endpoints.len(), 3);
    let mut unique = endpoints.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "distinct ports: {endpoints:?}");
    let leader = etcd.leader().await.expect("leader");
    assert!(leader < 3);
    for i in 0..3 {
        assert!(etcd.is_running(i));
        etcd.wait_healthy(i).await.expect("healthy");
        let is_leader = etcd
            .metric(i, "etcd_server_is_leader")
            .await
            .expect("metric");
        let expected = if i == leader { 1.0 } else { 0.0 };
        assert!((is_leader - expected).abs() < 0.5, "m{i}: {is_leader}");
    }
}

#[tokio::test]
async fn kill_and_restart_a_member() {
    let mut etcd = Etcd::cluster(3).await.expect("start cluster");
    let old_leader = etcd.leader().await.expect("leader");
    etcd.kill(old_leader);
    assert!(!etcd.is_running(old_leader));
    assert!(processes_mentioning(etcd.data_dir(old_leader)).is_empty());
    etcd.kill(old_leader); // killing a dead member is a no-op

    let new_leader = etcd.leader().await.expect("new leader after kill");
    assert_ne!(new_leader, old_leader);

    etcd.restart(old_leader).await.expect("restart");
    assert!(etcd.is_running(old_leader));
    let response = get_health(etcd.client_addr(old_leader)).await;
    assert!(response.contains("\"health\":\"true\""), "{response}");
    let leader = etcd.leader().await.expect("leader after restart");
    assert!(leader < 3);

    // Restarting a running member kills it first.
    etcd.restart(leader).await.expect("restart running member");
    etcd.leader().await.expect("leader after second restart");
}

#[tokio::test]
async fn pause_and_resume_a_member() {
    let etcd = Etcd::cluster(3).await.expect("start cluster");
    let leader = etcd.leader().await.expect("leader");
    etcd.pause(leader);
    assert!(
        etcd.is_running(leader),
        "a paused member still counts as running"
    );
    let new_leader = etcd.leader().await.expect("leader while old one is paused");
    assert_ne!(new_leader, leader);
    etcd.resume(leader);
    etcd.wait_healthy(leader)
        .await
        .expect("healthy after resume");
    etcd.leader().await.expect("leader after resume");
}

#[tokio::test]
async fn metric_returns_committed_proposals() {
    let etcd = Etcd::single().await.expect("start etcd");
    let committed = etcd
        .metric(0, "etcd_server_proposals_committed_total")
        .await
        .expect("metric");
    assert!(committed > 0.0, "committed = {committed}");
    // A metric with a label set: `etcd_server_version{server_version="3.4.23"} 1`.
    let version = etcd.metric(0, "etcd_server_version").await.expect("metric");
    assert!((version - 1.0).abs() < f64::EPSILON, "version = {version}");
    let missing = etcd.metric(0, "no_such_metric_xyz").await;
    let err = missing.expect_err("missing metric is an error");
    assert!(err.to_string().contains("no_such_metric_xyz"), "{err}");
}

#[tokio::test]
async fn proxy_forwards_and_blackhole_stops_traffic() {
    let etcd = Etcd::single().await.expect("start etcd");
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    assert!(proxy.url().starts_with("http://127.0.0.1:"));
    assert_eq!(proxy.connections(), 0);
    assert_eq!(proxy.mode(), ProxyMode::Pass);

    // Pass: a request goes through and bytes are counted both ways.
    let response = get_health(proxy.addr()).await;
    assert!(response.contains("\"health\":\"true\""), "{response}");
    let (up, down) = proxy.bytes_forwarded();
    assert_eq!(up, HEALTH_REQUEST.len() as u64);
    assert!(down > 0);
    assert_eq!(proxy.connections(), 1);

    // Blackhole: a new connection is accepted, a request written, nothing forwarded.
    proxy.set_mode(ProxyMode::Blackhole);
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.write_all(HEALTH_REQUEST).await.expect("write");
    wait_for("accept", Duration::from_secs(2), || {
        proxy.connections() == 2
    })
    .await;
    let mut buf = [0u8; 256];
    let read = timeout(Duration::from_millis(400), stream.read(&mut buf)).await;
    assert!(read.is_err(), "no response through a blackhole: {read:?}");
    assert_eq!(proxy.bytes_forwarded(), (up, down), "nothing forwarded");

    // Back to Pass: the held request flows (like a healed partition).
    proxy.set_mode(ProxyMode::Pass);
    let mut response = Vec::new();
    timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("response after unblackholing")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.contains("\"health\":\"true\""), "{response}");
    assert_eq!(proxy.bytes_forwarded().0, 2 * up);

    // Blackhole also freezes an existing, idle connection.
    let mut idle = TcpStream::connect(proxy.addr()).await.expect("connect");
    wait_for("accept", Duration::from_secs(2), || {
        proxy.connections() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await; // let it connect upstream
    proxy.set_mode(ProxyMode::Blackhole);
    let before = proxy.bytes_forwarded();
    idle.write_all(HEALTH_REQUEST).await.expect("write");
    let read = timeout(Duration::from_millis(400), idle.read(&mut buf)).await;
    assert!(read.is_err(), "no response through a blackhole: {read:?}");
    assert_eq!(proxy.bytes_forwarded(), before, "nothing forwarded");
}

#[tokio::test]
async fn proxy_refuse_drop_responses_delay_and_cut() {
    let etcd = Etcd::single().await.expect("start etcd");
    let proxy = Proxy::start(etcd.client_addr(0)).await.expect("proxy");
    let mut buf = [0u8; 256];

    // Refuse closes an existing connection and new ones.
    let mut existing = TcpStream::connect(proxy.addr()).await.expect("connect");
    wait_for("accept", Duration::from_secs(2), || {
        proxy.connections() == 1
    })
    .await;
    proxy.set_mode(ProxyMode::Refuse);
    let read = timeout(Duration::from_secs(2), existing.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let mut refused = TcpStream::connect(proxy.addr())
        .await
        .expect("still listening");
    let read = timeout(Duration::from_secs(2), refused.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // DropResponses: the request is forwarded, the response discarded.
    proxy.set_mode(ProxyMode::DropResponses);
    let (up0, down0) = proxy.bytes_forwarded();
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.write_all(HEALTH_REQUEST).await.expect("write");
    wait_for("request forwarded", Duration::from_secs(2), || {
        proxy.bytes_forwarded().0 == up0 + HEALTH_REQUEST.len() as u64
    })
    .await;
    let read = timeout(Duration::from_millis(300), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Err(_) | Ok(Ok(0))),
        "no response bytes: {read:?}"
    );
    assert_eq!(proxy.bytes_forwarded().1, down0);

    // Delay: the response arrives, but not before the delay.
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let response = get_health(proxy.addr()).await;
    assert!(response.contains("\"health\":\"true\""), "{response}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "request and response each delayed: {:?}",
        started.elapsed()
    );

    // Cut closes current connections; new ones still work in Pass.
    proxy.set_mode(ProxyMode::Pass);
    let accepted = proxy.connections();
    let mut victim = TcpStream::connect(proxy.addr()).await.expect("connect");
    wait_for("accept", Duration::from_secs(2), || {
        proxy.connections() == accepted + 1
    })
    .await;
    proxy.cut();
    let read = timeout(Duration::from_secs(2), victim.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let response = get_health(proxy.addr()).await;
    assert!(response.contains("\"health\":\"true\""), "{response}");

    // Dropping the proxy closes its listener.
    let addr = proxy.addr();
    drop(proxy);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxy still listening after drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn drop_leaves_no_etcd_process() {
    let etcd = Etcd::cluster(3).await.expect("start cluster");
    let dir: PathBuf = etcd.data_dir(0).parent().expect("temp dir").to_path_buf();
    assert_eq!(processes_mentioning(&dir).len(), 3);
    etcd.pause(1); // a stopped member must die too
    drop(etcd);
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "leaked etcd processes: {left:?}");
    assert!(!dir.exists(), "temp dir {} removed", dir.display());
}

#[tokio::test]
async fn client_tls_cluster() {
    let certs = locker::testing::TestCerts::generate().expect("certificates");
    let etcd = EtcdBuilder::new(3)
        .client_tls(certs.server_cert(), certs.server_key(), Some(certs.ca()))
        .start()
        .await
        .expect("start TLS cluster");
    for endpoint in etcd.endpoints() {
        assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    }
    let leader = etcd.leader().await.expect("leader");
    assert!(leader < 3);
    assert!(
        etcd.metric(0, "etcd_server_has_leader")
            .await
            .expect("metric")
            > 0.0
    );
}

#[tokio::test]
async fn extra_args_are_passed() {
    let etcd = EtcdBuilder::new(1)
        .arg("--quota-backend-bytes=12345678")
        .start()
        .await
        .expect("start etcd");
    let quota = etcd
        .metric(0, "etcd_server_quota_backend_bytes")
        .await
        .expect("metric");
    assert!((quota - 12_345_678.0).abs() < 0.5, "quota = {quota}");
}

#[tokio::test]
async fn bad_flag_fails_loudly_with_log_tail() {
    let err = EtcdBuilder::new(1)
        .arg("--no-such-flag-xyz")
        .start()
        .await
        .expect_err("bad flag");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("exited"), "{msg}");
    assert!(msg.contains("no-such-flag-xyz"), "log tail included: {msg}");
}

/// Runs `missing_binary_child` in a child test process with `ETCD_BIN` set to
/// a missing file (the environment must not be changed in this process).
#[test]
fn missing_binary_is_a_loud_error() {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args([
            "--exact",
            "missing_binary_child",
            "--ignored",
            "--nocapture",
        ])
        .env("ETCD_BIN", "/nonexistent/etcd")
        .output()
        .expect("run child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[tokio::test]
#[ignore = "run by missing_binary_is_a_loud_error with ETCD_BIN set"]
async fn missing_binary_child() {
    let err = Etcd::single().await.expect_err("missing binary");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains("etcd-server") && msg.contains("ETCD_BIN"),
        "{msg}"
    );
}
