//! TCP listeners end to end: real clients, the in-process balancer, `switchyard backend`
//! upstreams, all on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard::runtime::StartError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

fn tcp_config(listener_extra: &str, cluster: &str, balance: &str, endpoints: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "tcp"
listen = "127.0.0.1:0"
protocol = "tcp"
cluster = "{cluster}"
{listener_extra}

[[cluster]]
name = "{cluster}"
balance = "{balance}"
connect_timeout = "500ms"
endpoints = {endpoints}
"#
    )
}

/// Sends a raw HTTP/1.1 request over a new TCP connection and returns the `x-backend` name.
async fn backend_name_via(proxy: SocketAddr, source: Option<&str>) -> String {
    let stream = match source {
        Some(ip) => {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
            within(socket.connect(proxy)).await.unwrap()
        }
        None => within(TcpStream::connect(proxy)).await.unwrap(),
    };
    let mut stream = stream;
    within(stream.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"))
        .await
        .unwrap();
    let mut response = Vec::new();
    within(stream.read_to_end(&mut response)).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_lowercase();
    text.lines()
        .find_map(|l| l.strip_prefix("x-backend: ").map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no x-backend in {text}"))
}

#[tokio::test]
async fn bytes_are_relayed_both_ways_and_counted() {
    let echo = echo_backends(1).await;
    let server = balancer(&tcp_config(
        "",
        "echo",
        "round-robin",
        &endpoints(&[echo[0].local_addr()], &["e1"]),
    ))
    .await;
    let mut stream = within(TcpStream::connect(address(&server, "tcp")))
        .await
        .unwrap();
    let payload = vec![7u8; 100_000];
    within(stream.write_all(&payload)).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    within(stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, payload);
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rx = metric_of(
        &server,
        "switchyard_bytes_total{listener=\"tcp\",direction=\"rx\"}",
    )
    .await;
    let tx = metric_of(
        &server,
        "switchyard_bytes_total{listener=\"tcp\",direction=\"tx\"}",
    )
    .await;
    assert_eq!((rx, tx), (100_000.0, 100_000.0));
    assert_eq!(
        metric_of(&server, "switchyard_connections_total{listener=\"tcp\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_half_close_from_the_client_reaches_the_upstream_and_the_reply_still_arrives() {
    let echo = echo_backends(1).await;
    let server = balancer(&tcp_config(
        "",
        "echo",
        "p2c-ewma",
        &endpoints(&[echo[0].local_addr()], &["e1"]),
    ))
    .await;
    let mut stream = within(TcpStream::connect(address(&server, "tcp")))
        .await
        .unwrap();
    within(stream.write_all(b"last words")).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    within(stream.read_to_end(&mut back)).await.unwrap();
    assert_eq!(
        back, b"last words",
        "echo finished after our FIN, then sent its own"
    );
}

#[tokio::test]
async fn each_connection_writes_one_access_log_line_with_every_l4_key() {
    let echo = echo_backends(1).await;
    let path = std::env::temp_dir().join(format!("switchyard-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let config = tcp_config(
        "",
        "echo",
        "round-robin",
        &endpoints(&[echo[0].local_addr()], &["e1"]),
    )
    .replace(
        "[admin]",
        &format!(
            "[access_log]\npath = {:?}\n\n[admin]",
            path.display().to_string()
        ),
    );
    let server = balancer(&config).await;
    let mut stream = within(TcpStream::connect(address(&server, "tcp")))
        .await
        .unwrap();
    let client = stream.local_addr().unwrap();
    within(stream.write_all(b"hello")).await.unwrap();
    let mut back = [0u8; 5];
    within(stream.read_exact(&mut back)).await.unwrap();
    drop(stream);
    let text = read_when_written(&path).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["listener"], "tcp");
    assert_eq!(line["cluster"], "echo");
    assert_eq!(line["endpoint"], "e1");
    assert_eq!(line["protocol"], "tcp");
    assert_eq!(line["client"], client.to_string());
    assert_eq!(line["bytes_in"], 5);
    assert_eq!(line["bytes_out"], 5);
    assert_eq!(line["close_reason"], "done");
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn round_robin_spreads_connections_evenly() {
    let backends = http_backends(3).await;
    let addresses: Vec<_> = backends.iter().map(|b| b.local_addr()).collect();
    let server = balancer(&tcp_config(
        "",
        "web",
        "round-robin",
        &endpoints(&addresses, &["b1", "b2", "b3"]),
    ))
    .await;
    let proxy = address(&server, "tcp");
    let mut seen = BTreeMap::new();
    for _ in 0..9 {
        *seen.entry(backend_name_via(proxy, None).await).or_insert(0) += 1;
    }
    let expected: BTreeMap<String, i32> =
        [("b1".into(), 3), ("b2".into(), 3), ("b3".into(), 3)].into();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_failed_connect_moves_to_the_next_endpoint() {
    let live = http_backends(1).await;
    let dead = dead_address();
    let server = balancer(&tcp_config(
        "",
        "web",
        "round-robin",
        &endpoints(&[dead, live[0].local_addr()], &["dead", "b1"]),
    ))
    .await;
    let proxy = address(&server, "tcp");
    for _ in 0..6 {
        assert_eq!(backend_name_via(proxy, None).await, "b1");
    }
    let refused = metric_of(
        &server,
        "switchyard_upstream_connect_errors_total{cluster=\"web\",endpoint=\"dead\",reason=\"refused\"}",
    )
    .await;
    // The failed attempt and the fallback each take one round-robin turn, so with two
    // endpoints every connection tries the dead one first and then succeeds on b1, until
    // passive detection ejects it after 5 consecutive gateway failures (SPEC default): the
    // sixth connection no longer tries it.
    assert_eq!(refused, 5.0);
    let ejected = metric_of(
        &server,
        "switchyard_ejections_total{cluster=\"web\",endpoint=\"dead\",reason=\"gateway_failures\"}",
    )
    .await;
    assert_eq!(ejected, 1.0);
    let state = metric_of(
        &server,
        "switchyard_endpoint_state{cluster=\"web\",endpoint=\"dead\",state=\"ejected\"}",
    )
    .await;
    assert_eq!(state, 1.0);
}

#[tokio::test]
async fn a_connection_with_no_reachable_endpoint_is_closed() {
    let server = balancer(&tcp_config(
        "",
        "web",
        "round-robin",
        &endpoints(&[dead_address(), dead_address()], &["d1", "d2"]),
    ))
    .await;
    let mut stream = within(TcpStream::connect(address(&server, "tcp")))
        .await
        .unwrap();
    assert_closed(&mut stream, "closed without data").await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_idle_timeout() {
    let echo = echo_backends(1).await;
    let server = balancer(&tcp_config(
        "idle_timeout = \"300ms\"",
        "echo",
        "round-robin",
        &endpoints(&[echo[0].local_addr()], &["e1"]),
    ))
    .await;
    let mut stream = within(TcpStream::connect(address(&server, "tcp")))
        .await
        .unwrap();
    within(stream.write_all(b"x")).await.unwrap();
    let mut one = [0u8; 1];
    within(stream.read_exact(&mut one)).await.unwrap();
    let quiet_since = Instant::now();
    assert_closed(&mut stream, "closed").await;
    let waited = quiet_since.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
}

#[tokio::test]
async fn connections_past_max_connections_are_refused_and_counted() {
    let echo = echo_backends(1).await;
    let server = balancer(&tcp_config(
        "max_connections = 2",
        "echo",
        "round-robin",
        &endpoints(&[echo[0].local_addr()], &["e1"]),
    ))
    .await;
    let proxy = address(&server, "tcp");
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = within(TcpStream::connect(proxy)).await.unwrap();
        within(s.write_all(b"hi")).await.unwrap();
        let mut two = [0u8; 2];
        within(s.read_exact(&mut two)).await.unwrap();
        open.push(s);
    }
    let mut third = within(TcpStream::connect(proxy)).await.unwrap();
    let _ = third.write_all(b"hi").await;
    assert_closed(&mut third, "third connection closed").await;
    assert_eq!(
        metric_of(
            &server,
            "switchyard_connections_rejected_total{listener=\"tcp\",reason=\"max_connections\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric_of(&server, "switchyard_connections_active{listener=\"tcp\"}").await,
        2.0
    );
    drop(open);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = within(TcpStream::connect(proxy)).await.unwrap();
    within(again.write_all(b"ok")).await.unwrap();
    let mut two = [0u8; 2];
    within(again.read_exact(&mut two)).await.unwrap();
    assert_eq!(&two, b"ok", "a slot freed up");
}

/// Connects from `source` (a loopback address) and checks the echo answers.
async fn echo_from(proxy: SocketAddr, source: &str) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = within(socket.connect(proxy)).await.unwrap();
    let _ = stream.write_all(b"hi").await;
    let mut two = [0u8; 2];
    match within(stream.read_exact(&mut two)).await {
        Ok(_) => Some(stream),
        Err(_) => None,
    }
}

#[tokio::test]
async fn max_connections_per_ip_caps_each_client_separately() {
    let echo = echo_backends(1).await;
    let server = balancer(&tcp_config(
        "max_connections_per_ip = 2",
        "echo",
        "round-robin",
        &endpoints(&[echo[0].local_addr()], &["e1"]),
    ))
    .await;
    let proxy = address(&server, "tcp");
    let first = echo_from(proxy, "127.0.0.1").await.expect("first");
    let _second = echo_from(proxy, "127.0.0.1").await.expect("second");
    assert!(
        echo_from(proxy, "127.0.0.1").await.is_none(),
        "third from one IP refused"
    );
    let _other = echo_from(proxy, "127.0.0.2")
        .await
        .expect("another client is not affected");
    assert_eq!(
        metric_of(
            &server,
            "switchyard_connections_rejected_total{listener=\"tcp\",reason=\"per_ip\"}"
        )
        .await,
        1.0
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        echo_from(proxy, "127.0.0.1").await.is_some(),
        "a slot came back"
    );
}

#[tokio::test]
async fn two_instances_with_one_maglev_config_send_each_source_to_the_same_endpoint() {
    let backends = http_backends(5).await;
    let addresses: Vec<_> = backends.iter().map(|b| b.local_addr()).collect();
    let config = tcp_config(
        "",
        "web",
        "maglev",
        &endpoints(&addresses, &["b1", "b2", "b3", "b4", "b5"]),
    )
    .replace(
        "connect_timeout",
        "hash_key = \"source-ip\"\nconnect_timeout",
    );
    let a = balancer(&config).await;
    let b = balancer(&config).await;
    let mut owners = BTreeMap::new();
    for last in 1..=12 {
        let source = format!("127.0.0.{last}");
        let via_a = backend_name_via(address(&a, "tcp"), Some(&source)).await;
        let via_a_again = backend_name_via(address(&a, "tcp"), Some(&source)).await;
        let via_b = backend_name_via(address(&b, "tcp"), Some(&source)).await;
        assert_eq!(via_a, via_a_again, "{source} is sticky on one instance");
        assert_eq!(via_a, via_b, "{source} maps identically on both instances");
        owners.insert(via_a, ());
    }
    assert!(
        owners.len() >= 2,
        "12 sources spread over more than one endpoint: {owners:?}"
    );
}

#[tokio::test]
async fn a_weighted_split_chooses_a_cluster_per_connection() {
    let backends = http_backends(2).await;
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "tcp"
listen = "127.0.0.1:0"
protocol = "tcp"
split = [ {{ cluster = "big", weight = 3 }}, {{ cluster = "small", weight = 1 }} ]
[[cluster]]
name = "big"
balance = "round-robin"
endpoints = {}
[[cluster]]
name = "small"
balance = "round-robin"
endpoints = {}
"#,
        endpoints(&[backends[0].local_addr()], &["b1"]),
        endpoints(&[backends[1].local_addr()], &["b2"]),
    );
    let server = balancer(&config).await;
    let proxy = address(&server, "tcp");
    let mut big = 0;
    for _ in 0..200 {
        if backend_name_via(proxy, None).await == "b1" {
            big += 1;
        }
    }
    // 200 x 0.75 = 150, sigma = 6.1: 5 sigma either side.
    assert!(
        (120..=180).contains(&big),
        "{big} of 200 went to the weight-3 branch"
    );
}

#[tokio::test]
async fn a_listener_address_in_use_fails_the_start_naming_listener_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let echo = echo_backends(1).await;
    let config = tcp_config(
        "",
        "echo",
        "round-robin",
        &endpoints(&[echo[0].local_addr()], &["e1"]),
    )
    .replacen(
        "listen = \"127.0.0.1:0\"\nprotocol",
        &format!("listen = \"{address}\"\nprotocol"),
        1,
    );
    let model = switchyard::config::load_str(&config, std::path::Path::new("t.toml")).unwrap();
    let error = switchyard::runtime::Server::start(model).await.unwrap_err();
    assert!(matches!(error, StartError::Bind(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("\"tcp\"") && message.contains(&address.to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn shutdown_lets_open_connections_finish_then_refuses_new_ones() {
    let echo = echo_backends(1).await;
    let config = tcp_config(
        "",
        "echo",
        "round-robin",
        &endpoints(&[echo[0].local_addr()], &["e1"]),
    )
    .replace("[admin]", "[defaults]\ndrain_timeout = \"2s\"\n\n[admin]");
    let server = balancer(&config).await;
    let proxy = address(&server, "tcp");
    let mut open = within(TcpStream::connect(proxy)).await.unwrap();
    within(open.write_all(b"a")).await.unwrap();
    let mut one = [0u8; 1];
    within(open.read_exact(&mut one)).await.unwrap();

    let started = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The open connection still relays during the drain.
    within(open.write_all(b"b")).await.unwrap();
    within(open.read_exact(&mut one)).await.unwrap();
    assert_eq!(&one, b"b");
    // New connections are refused once listeners closed.
    assert!(TcpStream::connect(proxy).await.is_err(), "listener closed");
    // After drain_timeout the open connection is closed and shutdown completes.
    within(shutdown).await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900),
        "waited for the drain: {elapsed:?}"
    );
    assert_closed(&mut open, "closed at the deadline").await;
}

#[tokio::test]
async fn shutdown_returns_at_once_when_no_connection_is_open() {
    let echo = echo_backends(1).await;
    let server = balancer(&tcp_config(
        "",
        "echo",
        "round-robin",
        &endpoints(&[echo[0].local_addr()], &["e1"]),
    ))
    .await;
    let started = Instant::now();
    within(server.shutdown()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
}
