//! UDP listeners end to end: real client sockets, the in-process balancer, `switchyard
//! backend --udp-echo` upstreams, all on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard::backend::{BackendArgs, BackendHandle};
use switchyard::runtime::{Server, StartError};
use tokio::net::UdpSocket;

use crate::support::*;

fn udp_config(listener_extra: &str, balance: &str, endpoints: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "udp"
listen = "127.0.0.1:0"
protocol = "udp"
cluster = "echo"
{listener_extra}

[[cluster]]
name = "echo"
balance = "{balance}"
endpoints = {endpoints}
"#
    )
}

/// `n` UDP echo backends named `u1`..`un`.
async fn udp_backends(n: usize) -> Vec<BackendHandle> {
    let mut all = Vec::new();
    for i in 1..=n {
        let mut args = BackendArgs::for_test(&format!("u{i}"));
        args.udp_echo = true;
        all.push(backend(args).await);
    }
    all
}

/// The `endpoints = [...]` value for `backends`' UDP addresses, named `u1`..`un`.
fn udp_endpoints(backends: &[BackendHandle]) -> String {
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.udp_addr().unwrap()).collect();
    let names: Vec<String> = (1..=backends.len()).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    endpoints(&addresses, &names)
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn client_from(ip: &str) -> UdpSocket {
    UdpSocket::bind(format!("{ip}:0")).await.unwrap()
}

/// Sends `payload` to `to` and returns the reply and where it came from.
async fn exchange(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> (Vec<u8>, SocketAddr) {
    within(socket.send_to(payload, to)).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, from) = within(socket.recv_from(&mut buf)).await.unwrap();
    buf.truncate(n);
    (buf, from)
}

/// Datagrams each backend received so far.
fn counts(backends: &[BackendHandle]) -> Vec<u64> {
    backends.iter().map(|b| b.control().requests()).collect()
}

/// The index of the one backend whose counter moved between `before` and now.
fn which(backends: &[BackendHandle], before: &[u64]) -> usize {
    let now = counts(backends);
    let moved: Vec<usize> = (0..now.len()).filter(|&i| now[i] != before[i]).collect();
    assert_eq!(
        moved.len(),
        1,
        "exactly one backend got it: {before:?} -> {now:?}"
    );
    moved[0]
}

/// Polls `series` until it equals `want` (bounded by the harness limit).
async fn wait_metric(server: &Server, series: &str, want: f64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let value = metric_of(server, series).await;
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed {value}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// No datagram arrives on `socket` within `wait`.
async fn nothing_arrives(socket: &UdpSocket, wait: Duration) {
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await;
    assert!(got.is_err(), "expected silence, got {got:?}");
}

const FLOWS: &str = "switchyard_l4_flows_active{listener=\"udp\"}";

#[tokio::test]
async fn a_datagram_is_echoed_back_from_the_listener_address() {
    let echo = udp_backends(1).await;
    let server = balancer(&udp_config("", "round-robin", &udp_endpoints(&echo))).await;
    let proxy = address(&server, "udp");
    let socket = client().await;
    let (reply, from) = exchange(&socket, proxy, b"hello udp").await;
    assert_eq!(reply, b"hello udp");
    assert_eq!(
        from, proxy,
        "the reply comes from the address the client sent to"
    );
    assert_eq!(metric_of(&server, FLOWS).await, 1.0);
    assert_eq!(
        metric_of(&server, "switchyard_connections_active{listener=\"udp\"}").await,
        1.0
    );
    assert_eq!(
        metric_of(&server, "switchyard_connections_total{listener=\"udp\"}").await,
        1.0
    );
    assert_eq!(
        metric_of(
            &server,
            "switchyard_endpoint_in_flight{cluster=\"echo\",endpoint=\"u1\"}"
        )
        .await,
        1.0,
        "the flow counts as in flight on its endpoint"
    );
    let (_, listeners) = admin_get(&server, "/api/v1/listeners").await;
    let listeners: serde_json::Value = serde_json::from_str(&listeners).unwrap();
    assert_eq!(listeners["listeners"][0]["protocol"], "udp", "{listeners}");
    assert_eq!(listeners["listeners"][0]["address"], proxy.to_string());
}

#[tokio::test]
async fn two_clients_at_once_each_get_their_own_replies() {
    let echo = udp_backends(2).await;
    let server = balancer(&udp_config("", "round-robin", &udp_endpoints(&echo))).await;
    let proxy = address(&server, "udp");
    let a = client().await;
    let b = client().await;
    for i in 0..20 {
        let to_a = format!("a-{i}");
        let to_b = format!("b-{i}");
        within(a.send_to(to_a.as_bytes(), proxy)).await.unwrap();
        within(b.send_to(to_b.as_bytes(), proxy)).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = within(b.recv_from(&mut buf)).await.unwrap();
        assert_eq!((&buf[..n], from), (to_b.as_bytes(), proxy));
        let (n, from) = within(a.recv_from(&mut buf)).await.unwrap();
        assert_eq!((&buf[..n], from), (to_a.as_bytes(), proxy));
    }
    assert_eq!(metric_of(&server, FLOWS).await, 2.0);
    assert_eq!(counts(&echo), vec![20, 20], "one flow per backend");
}

#[tokio::test]
async fn a_65507_byte_datagram_arrives_intact() {
    let echo = udp_backends(1).await;
    let server = balancer(&udp_config("", "round-robin", &udp_endpoints(&echo))).await;
    let proxy = address(&server, "udp");
    let socket = client().await;
    let payload: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
    let (reply, _) = exchange(&socket, proxy, &payload).await;
    assert_eq!(reply.len(), 65_507);
    assert!(
        reply == payload,
        "the largest IPv4 datagram passes unchanged"
    );
}

#[tokio::test]
async fn round_robin_puts_new_flows_on_new_endpoints_while_a_flow_stays_pinned() {
    let echo = udp_backends(3).await;
    let server = balancer(&udp_config("", "round-robin", &udp_endpoints(&echo))).await;
    let proxy = address(&server, "udp");
    let first = client().await;
    for i in 0..6u8 {
        exchange(&first, proxy, &[i]).await;
    }
    let mut sorted = counts(&echo);
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        vec![0, 0, 6],
        "every datagram of one flow on one endpoint"
    );
    let mut owners = Vec::new();
    // Sockets stay open so no later one reuses a port (and with it a flow).
    let mut open = Vec::new();
    for _ in 0..2 {
        let before = counts(&echo);
        let socket = client().await;
        exchange(&socket, proxy, b"new").await;
        owners.push(which(&echo, &before));
        // The new flow stays where it went too.
        let before = counts(&echo);
        exchange(&socket, proxy, b"again").await;
        assert_eq!(which(&echo, &before), *owners.last().unwrap());
        open.push(socket);
    }
    let mut all = counts(&echo);
    all.sort_unstable();
    assert_eq!(all, vec![2, 2, 6], "each new flow went to another endpoint");
    // And the first flow is still pinned.
    let before = counts(&echo);
    exchange(&first, proxy, b"still").await;
    assert_eq!(
        counts(&echo).iter().sum::<u64>(),
        before.iter().sum::<u64>() + 1
    );
    assert_eq!(echo[which(&echo, &before)].control().requests(), 7);
}

#[tokio::test]
async fn maglev_on_source_ip_pins_each_source_the_same_way_on_two_instances() {
    let echo = udp_backends(4).await;
    let config = udp_config("", "maglev", &udp_endpoints(&echo))
        .replace("endpoints =", "hash_key = \"source-ip\"\nendpoints =");
    let a = balancer(&config).await;
    let b = balancer(&config).await;
    let mut owners = std::collections::BTreeSet::new();
    let mut open = Vec::new();
    for last in 1..=12 {
        let source = format!("127.0.0.{last}");
        let mut seen = Vec::new();
        for server in [&a, &a, &b] {
            // A new socket each time: a new flow (new source port), the same source ip.
            let socket = client_from(&source).await;
            let before = counts(&echo);
            exchange(&socket, address(server, "udp"), b"hash me").await;
            seen.push(which(&echo, &before));
            open.push(socket);
        }
        assert_eq!(seen[0], seen[1], "{source} is sticky on one instance");
        assert_eq!(
            seen[0], seen[2],
            "{source} maps identically on both instances"
        );
        owners.insert(seen[0]);
    }
    assert!(owners.len() >= 2, "12 sources over more than one endpoint");
}

#[tokio::test]
async fn an_idle_flow_is_removed_after_idle_timeout() {
    let echo = udp_backends(1).await;
    let server = balancer(&udp_config(
        "idle_timeout = \"300ms\"",
        "round-robin",
        &udp_endpoints(&echo),
    ))
    .await;
    let proxy = address(&server, "udp");
    let socket = client().await;
    exchange(&socket, proxy, b"x").await;
    let quiet_since = Instant::now();
    assert_eq!(metric_of(&server, FLOWS).await, 1.0);
    wait_metric(&server, FLOWS, 0.0).await;
    let waited = quiet_since.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "removed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(300 + 1500),
        "removed late: {waited:?}"
    );
    assert_eq!(
        metric_of(&server, "switchyard_connections_active{listener=\"udp\"}").await,
        0.0
    );
    assert_eq!(
        metric_of(
            &server,
            "switchyard_endpoint_in_flight{cluster=\"echo\",endpoint=\"u1\"}"
        )
        .await,
        0.0
    );
    // The same client address starts a new flow.
    let (reply, _) = exchange(&socket, proxy, b"back").await;
    assert_eq!(reply, b"back");
    assert_eq!(
        metric_of(&server, "switchyard_connections_total{listener=\"udp\"}").await,
        2.0
    );
}

#[tokio::test]
async fn traffic_keeps_a_flow_alive_past_idle_timeout() {
    let echo = udp_backends(1).await;
    let server = balancer(&udp_config(
        "idle_timeout = \"300ms\"",
        "round-robin",
        &udp_endpoints(&echo),
    ))
    .await;
    let proxy = address(&server, "udp");
    let socket = client().await;
    for _ in 0..8 {
        exchange(&socket, proxy, b"tick").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric_of(&server, "switchyard_connections_total{listener=\"udp\"}").await,
        1.0,
        "800 ms of traffic every 100 ms is one flow"
    );
}

#[tokio::test]
async fn datagrams_that_would_open_a_flow_past_max_connections_are_dropped_and_counted() {
    let echo = udp_backends(1).await;
    let server = balancer(&udp_config(
        "max_connections = 2",
        "round-robin",
        &udp_endpoints(&echo),
    ))
    .await;
    let proxy = address(&server, "udp");
    let a = client().await;
    let b = client().await;
    exchange(&a, proxy, b"a").await;
    exchange(&b, proxy, b"b").await;
    let third = client().await;
    within(third.send_to(b"c", proxy)).await.unwrap();
    nothing_arrives(&third, Duration::from_millis(300)).await;
    assert_eq!(
        metric_of(
            &server,
            "switchyard_connections_rejected_total{listener=\"udp\",reason=\"max_connections\"}"
        )
        .await,
        1.0
    );
    assert_eq!(metric_of(&server, FLOWS).await, 2.0);
    assert_eq!(
        counts(&echo),
        vec![2],
        "the third datagram never reached the backend"
    );
    // The two flows still work.
    assert_eq!(exchange(&a, proxy, b"a2").await.0, b"a2");
}

#[tokio::test]
async fn max_connections_per_ip_caps_the_flows_of_each_client_address() {
    let echo = udp_backends(1).await;
    let server = balancer(&udp_config(
        "max_connections_per_ip = 1",
        "round-robin",
        &udp_endpoints(&echo),
    ))
    .await;
    let proxy = address(&server, "udp");
    let first = client_from("127.0.0.1").await;
    exchange(&first, proxy, b"one").await;
    let second_port = client_from("127.0.0.1").await;
    within(second_port.send_to(b"two", proxy)).await.unwrap();
    nothing_arrives(&second_port, Duration::from_millis(300)).await;
    let other = client_from("127.0.0.2").await;
    assert_eq!(exchange(&other, proxy, b"three").await.0, b"three");
    assert_eq!(
        metric_of(
            &server,
            "switchyard_connections_rejected_total{listener=\"udp\",reason=\"per_ip\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn an_ended_flow_writes_one_access_log_line() {
    let echo = udp_backends(1).await;
    let path =
        std::env::temp_dir().join(format!("switchyard-udp-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let config = udp_config(
        "idle_timeout = \"200ms\"",
        "round-robin",
        &udp_endpoints(&echo),
    )
    .replacen(
        "[admin]",
        &format!(
            "[access_log]\npath = {:?}\n\n[admin]",
            path.display().to_string()
        ),
        1,
    );
    let server = balancer(&config).await;
    let proxy = address(&server, "udp");
    let socket = client().await;
    let me = socket.local_addr().unwrap();
    exchange(&socket, proxy, b"twelve bytes").await;
    let text = read_when_written(&path).await;
    drop(server);
    let line: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a line")).unwrap();
    assert_eq!(line["protocol"], "udp");
    assert_eq!(line["listener"], "udp");
    assert_eq!(line["client"], me.to_string());
    assert_eq!(line["bytes_in"], 12);
    assert_eq!(line["bytes_out"], 12);
    assert_eq!(line["close_reason"], "idle_timeout");
}

#[tokio::test]
async fn bytes_are_counted_exactly_in_both_directions() {
    let echo = udp_backends(1).await;
    let server = balancer(&udp_config("", "round-robin", &udp_endpoints(&echo))).await;
    let proxy = address(&server, "udp");
    let a = client().await;
    let b = client().await;
    for size in [1usize, 100, 1_000, 10_000] {
        exchange(&a, proxy, &vec![1u8; size]).await;
    }
    exchange(&b, proxy, &[2u8; 500]).await;
    let rx = metric_of(
        &server,
        "switchyard_bytes_total{listener=\"udp\",direction=\"rx\"}",
    )
    .await;
    let tx = metric_of(
        &server,
        "switchyard_bytes_total{listener=\"udp\",direction=\"tx\"}",
    )
    .await;
    assert_eq!((rx, tx), (11_601.0, 11_601.0));
}

#[tokio::test]
async fn a_refused_endpoint_counts_a_connect_failure_and_keeps_the_flow() {
    // A UDP port nothing listens on: the kernel answers with ICMP port unreachable, which
    // the connected upstream socket reports as ECONNREFUSED.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_address = dead.local_addr().unwrap();
    drop(dead);
    let server = balancer(&udp_config(
        "",
        "round-robin",
        &endpoints(&[dead_address], &["dead"]),
    ))
    .await;
    let proxy = address(&server, "udp");
    let socket = client().await;
    within(socket.send_to(b"anyone?", proxy)).await.unwrap();
    wait_metric(
        &server,
        "switchyard_upstream_connect_errors_total{cluster=\"echo\",endpoint=\"dead\",reason=\"refused\"}",
        1.0,
    )
    .await;
    assert_eq!(metric_of(&server, FLOWS).await, 1.0, "the flow is kept");
    nothing_arrives(&socket, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_weighted_split_chooses_a_cluster_per_flow() {
    let echo = udp_backends(2).await;
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "udp"
listen = "127.0.0.1:0"
protocol = "udp"
split = [ {{ cluster = "big", weight = 3 }}, {{ cluster = "small", weight = 1 }} ]
[[cluster]]
name = "big"
endpoints = {}
[[cluster]]
name = "small"
endpoints = {}
"#,
        endpoints(&[echo[0].udp_addr().unwrap()], &["u1"]),
        endpoints(&[echo[1].udp_addr().unwrap()], &["u2"]),
    );
    let server = balancer(&config).await;
    let proxy = address(&server, "udp");
    let mut open = Vec::new();
    for _ in 0..200 {
        let socket = client().await;
        exchange(&socket, proxy, b"s").await;
        exchange(&socket, proxy, b"t").await;
        open.push(socket);
    }
    assert_eq!(metric_of(&server, FLOWS).await, 200.0);
    let big = echo[0].control().requests();
    assert_eq!(big % 2, 0, "both datagrams of a flow go to one cluster");
    let big = big / 2;
    // 200 x 0.75 = 150, sigma = 6.1: 5 sigma either side.
    assert!(
        (120..=180).contains(&big),
        "{big} of 200 flows went to the weight-3 branch"
    );
}

#[tokio::test]
async fn a_udp_address_in_use_fails_the_start_naming_listener_and_address() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let config = udp_config("", "round-robin", &endpoints(&[address], &["x"])).replacen(
        "listen = \"127.0.0.1:0\"\nprotocol",
        &format!("listen = \"{address}\"\nprotocol"),
        1,
    );
    let model = switchyard::config::load_str(&config, std::path::Path::new("t.toml")).unwrap();
    let error = Server::start(model).await.unwrap_err();
    assert!(matches!(error, StartError::Bind(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("\"udp\"") && message.contains(&address.to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn shutdown_keeps_open_flows_during_the_drain_and_starts_no_new_ones() {
    let echo = udp_backends(1).await;
    let config = udp_config("", "round-robin", &udp_endpoints(&echo))
        .replace("[admin]", "[defaults]\ndrain_timeout = \"1s\"\n\n[admin]");
    let server = balancer(&config).await;
    let proxy = address(&server, "udp");
    let open = client().await;
    exchange(&open, proxy, b"a").await;
    let started = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        exchange(&open, proxy, b"b").await.0,
        b"b",
        "the open flow still relays"
    );
    let late = client().await;
    within(late.send_to(b"new", proxy)).await.unwrap();
    nothing_arrives(&late, Duration::from_millis(200)).await;
    within(shutdown).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the flow got the drain time: {:?}",
        started.elapsed()
    );
}

#[test]
fn check_accepts_a_udp_listener() {
    let dir = std::env::temp_dir().join(format!("switchyard-udp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("udp.toml");
    std::fs::write(
        &path,
        udp_config("idle_timeout = \"30s\"", "maglev", "[\"127.0.0.1:53\"]"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env_remove("RUST_LOG")
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("udp"));
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[tokio::test]
async fn serial_memory_per_udp_flow_is_small() {
    const N: usize = 2_000;
    let echo = udp_backends(1).await;
    let server = balancer(&udp_config("", "round-robin", &udp_endpoints(&echo))).await;
    let proxy = address(&server, "udp");
    // Warm up (thread-local buffers, first allocations), then create every client socket
    // before the first reading so only the balancer's side of each flow is measured.
    // Warm-up sockets stay open: a reused client port would join an existing flow.
    let mut warm = Vec::new();
    for _ in 0..50 {
        let socket = client().await;
        exchange(&socket, proxy, b"warm").await;
        warm.push(socket);
    }
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        clients.push(client().await);
    }
    let mut buf = vec![0u8; 64];
    let Some(before) = rss_kib() else {
        eprintln!("no /proc/self/status: skipped");
        return;
    };
    for socket in &clients {
        within(socket.send_to(b"flow", proxy)).await.unwrap();
        let (n, _) = within(socket.recv_from(&mut buf)).await.unwrap();
        assert_eq!(&buf[..n], b"flow");
    }
    let after = rss_kib().unwrap();
    assert_eq!(metric_of(&server, FLOWS).await, (N + 50) as f64);
    let per_flow = (after.saturating_sub(before) * 1024) / N as u64;
    eprintln!("udp memory per flow: {per_flow} bytes (RSS {before} -> {after} KiB, {N} flows)");
    assert!(per_flow < 64 * 1024, "{per_flow} bytes per flow");
}

#[tokio::test]
async fn an_ipv6_listener_relays_to_an_ipv4_endpoint_and_replies_from_its_own_address() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback: skipped");
        return;
    }
    let echo = udp_backends(1).await;
    let config = udp_config("", "round-robin", &udp_endpoints(&echo)).replacen(
        "listen = \"127.0.0.1:0\"\nprotocol",
        "listen = \"[::1]:0\"\nprotocol",
        1,
    );
    let server = balancer(&config).await;
    let proxy = address(&server, "udp");
    assert!(proxy.is_ipv6(), "{proxy}");
    let socket = client_from("[::1]").await;
    let (reply, from) = exchange(&socket, proxy, b"six to four").await;
    assert_eq!((reply.as_slice(), from), (&b"six to four"[..], proxy));
}
