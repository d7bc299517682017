//! The HTTP/1.1 server loop over raw client sockets, so every byte on the wire is the
//! test's: `100 Continue`, pipelined requests, HTTP/1.0 keep-alive, a request body the
//! proxy did not forward (drained to keep the connection, or the connection closed),
//! and garbage refused at once. Upstreams are `switchyard backend`.

#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One cluster behind `web`; only paths under `/api` are routed (anything else is a
/// proxy-made 404 that never reads the request body).
async fn proxy() -> (
    Vec<switchyard::backend::BackendHandle>,
    switchyard::runtime::Server,
    SocketAddr,
) {
    let backends = http_backends(1).await;
    let config = format!(
        r#"{WEB}
[[listener.route]]
match = {{ path_prefix = "/api" }}
cluster = "app"
[[listener.route]]
match = {{ path = "/echo" }}
cluster = "app"

[[cluster]]
name = "app"
endpoints = {}
"#,
        endpoints(&[backends[0].local_addr()], &["b1"])
    );
    let server = balancer(&config).await;
    let web = address(&server, "web");
    (backends, server, web)
}

/// Reads from `stream` until `buffered` holds `pattern`; returns the bytes through it.
async fn read_through(stream: &mut TcpStream, buffered: &mut Vec<u8>, pattern: &[u8]) -> Vec<u8> {
    loop {
        if let Some(at) = buffered.windows(pattern.len()).position(|w| w == pattern) {
            return buffered.drain(..at + pattern.len()).collect();
        }
        let mut chunk = [0u8; 4096];
        let n = within(stream.read(&mut chunk)).await.unwrap();
        assert!(
            n > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(buffered)
        );
        buffered.extend_from_slice(&chunk[..n]);
    }
}

/// Reads `stream` until `buffered` holds at least `n` bytes; returns the first `n`.
async fn read_exactly(stream: &mut TcpStream, buffered: &mut Vec<u8>, n: usize) -> Vec<u8> {
    while buffered.len() < n {
        let mut chunk = [0u8; 4096];
        let read = within(stream.read(&mut chunk)).await.unwrap();
        assert!(read > 0, "closed inside a body");
        buffered.extend_from_slice(&chunk[..read]);
    }
    buffered.drain(..n).collect()
}

/// Reads one response from `stream` (head, then a `content-length` or chunked body,
/// without trailers); returns the head and the body.
async fn read_response(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> (String, Vec<u8>) {
    let head = String::from_utf8(read_through(stream, buffered, b"\r\n\r\n").await).unwrap();
    if head.contains("transfer-encoding: chunked\r\n") {
        let mut body = Vec::new();
        loop {
            let line = read_through(stream, buffered, b"\r\n").await;
            let size = std::str::from_utf8(&line).unwrap().trim();
            let size = usize::from_str_radix(size, 16).unwrap();
            let data = read_exactly(stream, buffered, size + 2).await;
            if size == 0 {
                return (head, body);
            }
            body.extend_from_slice(&data[..size]);
        }
    }
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    let body = read_exactly(stream, buffered, length).await;
    (head, body)
}

/// Whether the proxy closed `stream` (reads to its end within the test limit).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    within(stream.read_to_end(&mut rest)).await.is_ok() && rest.is_empty()
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (_backends, _server, web) = proxy().await;
    let mut stream = TcpStream::connect(web).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buffered = Vec::new();
    let (interim, _) = read_response(&mut stream, &mut buffered).await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let (head, body) = read_response(&mut stream, &mut buffered).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, b"hello");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (_backends, _server, web) = proxy().await;
    let mut stream = TcpStream::connect(web).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\none\
              POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n\
              POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthree",
        )
        .await
        .unwrap();
    let mut buffered = Vec::new();
    for expected in [&b"one"[..], b"two"] {
        let (head, body) = read_response(&mut stream, &mut buffered).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        assert_eq!(body, expected);
    }
    let (head, body) = read_response(&mut stream, &mut buffered).await;
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert_eq!(body, b"three");
    assert!(buffered.is_empty());
    assert!(
        closed(&mut stream).await,
        "closed after the request that asked"
    );
}

#[tokio::test]
async fn http10_keeps_the_connection_only_when_asked() {
    let (_backends, _server, web) = proxy().await;
    let mut stream = TcpStream::connect(web).await.unwrap();
    stream
        .write_all(b"GET /api HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut buffered = Vec::new();
    let (head, _) = read_response(&mut stream, &mut buffered).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("connection: keep-alive\r\n"), "{head}");
    assert!(
        head.contains("content-length: "),
        "a length, never chunked: {head}"
    );
    stream
        .write_all(b"GET /api HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut stream, &mut buffered).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(closed(&mut stream).await);
}

#[tokio::test]
async fn an_unread_body_is_drained_to_keep_the_connection_or_the_connection_closes() {
    let (backends, _server, web) = proxy().await;
    let mut stream = TcpStream::connect(web).await.unwrap();
    let small = format!(
        "POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{}",
        "x".repeat(1000)
    );
    stream.write_all(small.as_bytes()).await.unwrap();
    let mut buffered = Vec::new();
    let (head, _) = read_response(&mut stream, &mut buffered).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    stream
        .write_all(b"GET /api HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut stream, &mut buffered).await;
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n"),
        "the body was drained: {head}"
    );
    assert_eq!(
        backends[0].control().snapshot().requests,
        1,
        "only /api went upstream"
    );

    // Past the drain budget (64 KiB) the connection is closed instead, and says so; the
    // close lingers, so the 256 KiB the client sends meanwhile do not reset it.
    let mut stream = TcpStream::connect(web).await.unwrap();
    stream
        .write_all(b"POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let writer = {
        let chunk = vec![b'y'; 64 * 1024];
        let (mut reader, mut writer) = stream.into_split();
        let sending = tokio::spawn(async move {
            for _ in 0..4 {
                if writer.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let mut out = Vec::new();
        let _ = within(reader.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out).into_owned();
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
        sending
    };
    writer.abort();
}

#[tokio::test]
async fn garbage_is_refused_at_once_not_after_the_head_timeout() {
    let (_backends, _server, web) = proxy().await;
    let mut stream = TcpStream::connect(web).await.unwrap();
    stream.write_all(b"\x00\x01\x02 not http").await.unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    within(stream.read_to_end(&mut out)).await.unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        out.contains("proxy-status: switchyard; error=http_request_error"),
        "{out}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
