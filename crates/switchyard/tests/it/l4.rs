//! TLS passthrough by SNI and the PROXY protocol, end to end over real sockets. The
//! ClientHellos are captured from real clients (tests/fixtures/client_hello/README.md).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard::listener::proxy_protocol::{self, Parsed, ProxiedAddresses, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

fn hello(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/client_hello/{name}.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).unwrap()
}

/// An upstream that reads everything until the client's FIN, then answers
/// `<name>\n<the bytes it received>` and closes.
async fn tagging_upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if stream.read_to_end(&mut got).await.is_ok() {
                    let mut reply = format!("{name}\n").into_bytes();
                    reply.extend_from_slice(&got);
                    let _ = stream.write_all(&reply).await;
                }
            });
        }
    });
    address
}

/// Sends `chunks` (with a pause between), half-closes, and returns what came back.
async fn exchange(proxy: SocketAddr, chunks: &[&[u8]]) -> Vec<u8> {
    let mut stream = within(TcpStream::connect(proxy)).await.unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if stream.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = stream.shutdown().await;
    let mut back = Vec::new();
    let _ = within(stream.read_to_end(&mut back)).await;
    back
}

fn split_reply(reply: &[u8]) -> (String, Vec<u8>) {
    let newline = reply
        .iter()
        .position(|b| *b == b'\n')
        .expect("tagged reply");
    (
        String::from_utf8(reply[..newline].to_vec()).unwrap(),
        reply[newline + 1..].to_vec(),
    )
}

async fn passthrough(routes: &str, extra: &str) -> (switchyard::runtime::Server, SocketAddr) {
    let db = tagging_upstream("db").await;
    let edge = tagging_upstream("edge").await;
    let fallback = tagging_upstream("fallback").await;
    let server = balancer(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "sni"
listen = "127.0.0.1:0"
protocol = "tls-passthrough"
routes = {routes}
{extra}

[[cluster]]
name = "db"
endpoints = ["{db}"]
[[cluster]]
name = "edge"
endpoints = ["{edge}"]
[[cluster]]
name = "fallback"
endpoints = ["{fallback}"]
"#
    ))
    .await;
    let proxy = address(&server, "sni");
    (server, proxy)
}

const ROUTES: &str = r#"[ { sni = "db.example.com", cluster = "db" }, { sni = "*.example.com", cluster = "edge" }, { sni = "*", cluster = "fallback" } ]"#;

#[tokio::test]
async fn passthrough_routes_by_exact_name_then_wildcard_then_default_and_replays_the_hello() {
    let (_server, proxy) = passthrough(ROUTES, "").await;
    for (fixture, expected) in [
        ("openssl_tls13_db_alpn", "db"),
        ("curl_api", "edge"),
        ("rustls_0_23_ring", "edge"),
        ("openssl_tls12_legacy", "edge"),
        ("python_ssl_py", "edge"),
        ("openssl_no_sni", "fallback"),
    ] {
        let bytes = hello(fixture);
        let (cluster, replayed) = split_reply(&exchange(proxy, &[&bytes]).await);
        assert_eq!(cluster, expected, "{fixture}");
        assert_eq!(
            replayed, bytes,
            "{fixture}: the upstream sees the hello byte for byte"
        );
    }
}

#[tokio::test]
async fn a_client_hello_split_over_several_segments_is_still_routed() {
    let (_server, proxy) = passthrough(ROUTES, "").await;
    let bytes = hello("openssl_tls13_db_alpn");
    let (a, rest) = bytes.split_at(3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let (cluster, replayed) = split_reply(&exchange(proxy, &[a, b, c]).await);
    assert_eq!(cluster, "db");
    assert_eq!(replayed, bytes);
}

#[tokio::test]
async fn a_server_name_without_a_route_is_closed() {
    let (server, proxy) =
        passthrough(r#"[ { sni = "db.example.com", cluster = "db" } ]"#, "").await;
    assert!(exchange(proxy, &[&hello("curl_api")]).await.is_empty());
    assert!(
        exchange(proxy, &[&hello("openssl_no_sni")])
            .await
            .is_empty()
    );
    let (cluster, _) = split_reply(&exchange(proxy, &[&hello("openssl_tls13_db_alpn")]).await);
    assert_eq!(cluster, "db", "the routed name still works");
    assert_eq!(
        metric_of(
            &server,
            "switchyard_bytes_total{listener=\"sni\",direction=\"tx\"}"
        )
        .await as usize,
        3 + hello("openssl_tls13_db_alpn").len(),
        "nothing was relayed for the unrouted ones"
    );
}

#[tokio::test]
async fn a_client_hello_that_never_completes_is_dropped_after_header_read_timeout() {
    let (server, proxy) = passthrough(ROUTES, "header_read_timeout = \"300ms\"").await;
    let bytes = hello("curl_api");
    let mut stream = within(TcpStream::connect(proxy)).await.unwrap();
    stream.write_all(&bytes[..bytes.len() / 2]).await.unwrap();
    let started = Instant::now();
    assert_closed(&mut stream, "closed").await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        metric_of(
            &server,
            "switchyard_connections_rejected_total{listener=\"sni\",reason=\"slow_head\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn bytes_that_are_not_tls_are_refused_and_counted() {
    let (server, proxy) = passthrough(ROUTES, "").await;
    assert!(
        exchange(proxy, &[b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"])
            .await
            .is_empty()
    );
    assert_eq!(
        metric_of(
            &server,
            "switchyard_connections_rejected_total{listener=\"sni\",reason=\"tls\"}"
        )
        .await,
        1.0
    );
}

async fn proxy_protocol_listener(
    extra: &str,
    cluster_extra: &str,
    upstream: SocketAddr,
) -> (switchyard::runtime::Server, SocketAddr) {
    let server = balancer(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "pp"
listen = "127.0.0.1:0"
protocol = "tcp"
cluster = "up"
{extra}

[[cluster]]
name = "up"
endpoints = ["{upstream}"]
{cluster_extra}
"#
    ))
    .await;
    let proxy = address(&server, "pp");
    (server, proxy)
}

fn carried(source: &str) -> ProxiedAddresses {
    ProxiedAddresses {
        source: source.parse().unwrap(),
        destination: "198.51.100.1:5432".parse().unwrap(),
        transport: Transport::Tcp,
    }
}

#[tokio::test]
async fn a_proxy_v1_or_v2_header_is_stripped_and_its_client_is_used() {
    let upstream = tagging_upstream("up").await;
    let (_server, proxy) = proxy_protocol_listener("proxy_protocol = true", "", upstream).await;
    let v1 = proxy_protocol::encode_v1(&carried("192.0.2.7:5555"));
    let (_, seen) = split_reply(&exchange(proxy, &[v1.as_bytes(), b"payload"]).await);
    assert_eq!(seen, b"payload", "v1 header stripped");
    let mut v2 = proxy_protocol::encode_v2(&carried("[2001:db8::7]:6666"));
    v2.extend_from_slice(b"right after the header");
    let (_, seen) = split_reply(&exchange(proxy, &[&v2]).await);
    assert_eq!(
        seen, b"right after the header",
        "v2 header stripped, trailing bytes kept"
    );
}

#[tokio::test]
async fn the_per_ip_cap_counts_the_address_the_proxy_header_carries() {
    let echo = echo_backends(1).await;
    let (_server, proxy) = proxy_protocol_listener(
        "proxy_protocol = true\nmax_connections_per_ip = 1",
        "",
        echo[0].local_addr(),
    )
    .await;
    async fn open(proxy: SocketAddr, source: &str) -> Option<TcpStream> {
        let mut stream = within(TcpStream::connect(proxy)).await.unwrap();
        let header = proxy_protocol::encode_v2(&carried(source));
        stream.write_all(&header).await.ok()?;
        stream.write_all(b"hi").await.ok()?;
        let mut two = [0u8; 2];
        within(stream.read_exact(&mut two)).await.ok()?;
        Some(stream)
    }
    let _a = open(proxy, "192.0.2.1:1000").await.expect("first client");
    let _b = open(proxy, "192.0.2.2:1000")
        .await
        .expect("another carried client");
    assert!(
        open(proxy, "192.0.2.1:2000").await.is_none(),
        "192.0.2.1 is at its cap"
    );
}

#[tokio::test]
async fn a_missing_or_malformed_proxy_header_closes_the_connection() {
    let upstream = tagging_upstream("up").await;
    let (_server, proxy) = proxy_protocol_listener("proxy_protocol = true", "", upstream).await;
    assert!(
        exchange(proxy, &[b"hello without a header"])
            .await
            .is_empty()
    );
    assert!(
        exchange(proxy, &[b"PROXY TCP4 1.2.3.4 nonsense\r\n"])
            .await
            .is_empty()
    );
}

/// An upstream that reads one PROXY header and answers with what it carried.
async fn header_reading_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ = stream.read_to_end(&mut got).await;
                let answer = match proxy_protocol::parse(&got) {
                    Ok(Parsed::Complete {
                        header_len,
                        addresses: Some(a),
                    }) => format!(
                        "{} {} {}",
                        a.source,
                        a.destination,
                        String::from_utf8_lossy(&got[header_len..])
                    ),
                    other => format!("no header: {other:?}"),
                };
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    address
}

#[tokio::test]
async fn send_proxy_protocol_tells_the_upstream_the_real_client_in_v1_and_v2() {
    for version in ["v1", "v2"] {
        let upstream = header_reading_upstream().await;
        let (_server, proxy) = proxy_protocol_listener(
            "",
            &format!("send_proxy_protocol = \"{version}\""),
            upstream,
        )
        .await;
        let mut stream = within(TcpStream::connect(proxy)).await.unwrap();
        let client = stream.local_addr().unwrap();
        stream.write_all(b"data").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = String::new();
        within(stream.read_to_string(&mut answer)).await.unwrap();
        assert_eq!(answer, format!("{client} {proxy} data"), "{version}");
    }
}

#[tokio::test]
async fn a_carried_client_is_forwarded_upstream_as_received() {
    let upstream = header_reading_upstream().await;
    let (_server, proxy) = proxy_protocol_listener(
        "proxy_protocol = true",
        "send_proxy_protocol = \"v2\"",
        upstream,
    )
    .await;
    let mut stream = within(TcpStream::connect(proxy)).await.unwrap();
    stream
        .write_all(&proxy_protocol::encode_v2(&carried("192.0.2.9:4242")))
        .await
        .unwrap();
    stream.write_all(b"x").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    within(stream.read_to_string(&mut answer)).await.unwrap();
    assert_eq!(answer, "192.0.2.9:4242 198.51.100.1:5432 x");
}
