//! The proxy's own HTTP/1.1 upstream client over real sockets, against a scripted upstream
//! that answers each request head with bytes the test chooses: framings `switchyard
//! backend` never sends (chunked with trailers, until-close, `Connection: close`,
//! informational answers, malformed heads) and a keep-alive connection the upstream
//! closes while it sits in the pool.

#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What the scripted upstream does after answering one request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Waits for the next request on the same connection.
    KeepOpen,
    /// Closes the connection.
    Close,
}

/// A scripted upstream: for every request head (and its body, by Content-Length or
/// chunked) it writes `answer(path, body)`; counts connections and requests.
struct Scripted {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

type Answer = fn(&str, &[u8]) -> (Vec<u8>, After);

async fn scripted(answer: Answer) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = Arc::clone(&r);
            tokio::spawn(serve_scripted(stream, answer, r));
        }
    });
    Scripted {
        address,
        connections,
        requests,
    }
}

/// Reads requests off `stream` (heads with a Content-Length or chunked body) and answers
/// each; a bounded loop (at most 100 requests per connection).
async fn serve_scripted(mut stream: TcpStream, answer: Answer, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    for _ in 0..100 {
        let Some((path, body)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        requests.fetch_add(1, Ordering::SeqCst);
        let (bytes, after) = answer(&path, &body);
        if stream.write_all(&bytes).await.is_err() || after == After::Close {
            return;
        }
    }
}

/// One request from `stream`: its path and body; `None` at the end of the stream.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let path = head.split_whitespace().nth(1)?.to_owned();
    buf.drain(..head_end);
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let mut body = Vec::new();
    if let Some(length) = length {
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        body = buf.drain(..length).collect();
    } else if chunked {
        // Good enough for the test's own bodies: read through the last chunk and its
        // trailer section.
        let end = loop {
            if let Some(end) = chunked_end(buf) {
                break end;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        body = buf.drain(..end).collect();
    }
    Some((path, body))
}

/// Where a chunked body at the front of `wire` ends: past its last chunk (`0` at the
/// start of a line) and the empty line that ends its trailer section.
fn chunked_end(wire: &[u8]) -> Option<usize> {
    let last = if wire.starts_with(b"0\r\n") {
        0
    } else {
        wire.windows(5).position(|w| w == b"\r\n0\r\n")? + 2
    };
    let rest = &wire[last + 1..];
    rest.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| last + 1 + at + 4)
}

fn one_endpoint(address: SocketAddr, extra: &str) -> String {
    format!(
        r#"{WEB}
cluster = "app"
[[cluster]]
name = "app"
endpoints = ["{address}"]
{extra}
"#
    )
}

/// The data of a chunked body (no extensions, no trailers), if it is one.
fn dechunk(mut wire: &str) -> Option<String> {
    let mut data = String::new();
    loop {
        let (size, rest) = wire.split_once("\r\n")?;
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            return (rest == "\r\n").then_some(data);
        }
        data.push_str(rest.get(..size)?);
        wire = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

fn answer_by_path(path: &str, body: &[u8]) -> (Vec<u8>, After) {
    let keep = After::KeepOpen;
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-checksum: 42\r\n\r\n".to_vec(),
            keep,
        ),
        "/until-close" => (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it until the close".to_vec(),
            After::Close,
        ),
        "/close" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
            After::Close,
        ),
        "/continue" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone".to_vec(),
            keep,
        ),
        "/malformed" => (b"HTTP/1.1 2OO OK\r\n\r\n".to_vec(), After::Close),
        "/bad-length" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            After::Close,
        ),
        "/short" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".to_vec(),
            After::Close,
        ),
        "/echo" => {
            let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            out.extend_from_slice(body);
            (out, keep)
        }
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), keep),
    }
}

#[tokio::test]
async fn chunked_bodies_with_trailers_and_until_close_bodies_arrive_whole() {
    let upstream = scripted(answer_by_path).await;
    let server = balancer(&one_endpoint(upstream.address, "")).await;
    let web = address(&server, "web");
    let response = within(
        keepalive_client()
            .get(format!("http://{web}/chunked"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-up"], "1");
    assert_eq!(within(response.text()).await.unwrap(), "hello, world");

    // Over HTTP/2 the upstream's trailers reach the client as trailers.
    let mut sender = h2_sender(web).await;
    let request = http::Request::get(format!("http://{web}/chunked"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    let collected = within(response.into_body().collect()).await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers["x-checksum"], "42");
    assert_eq!(&collected.to_bytes()[..], b"hello, world");

    let response = within(client().get(format!("http://{web}/until-close")).send())
        .await
        .unwrap();
    assert_eq!(
        within(response.text()).await.unwrap(),
        "all of it until the close"
    );
}

#[tokio::test]
async fn informational_answers_are_skipped_and_request_bodies_go_out_framed() {
    let upstream = scripted(answer_by_path).await;
    let server = balancer(&one_endpoint(upstream.address, "")).await;
    let web = address(&server, "web");
    let client = keepalive_client();
    let response = within(client.get(format!("http://{web}/continue")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(within(response.text()).await.unwrap(), "done");

    // A body of known length, then one streamed without a length (chunked upstream).
    let response = within(
        client
            .post(format!("http://{web}/echo"))
            .body("twelve bytes")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(within(response.text()).await.unwrap(), "twelve bytes");
    let pieces = futures_util::stream::iter(
        ["one ", "two ", "three"].map(|p| Ok::<_, std::io::Error>(Frame::data(Bytes::from(p)))),
    );
    let response = within(
        client
            .post(format!("http://{web}/echo"))
            .body(reqwest::Body::wrap(StreamBody::new(pieces)))
            .send(),
    )
    .await
    .unwrap();
    // The upstream echoes what it received on the wire: a chunked body.
    let echoed = within(response.text()).await.unwrap();
    assert_eq!(
        dechunk(&echoed),
        Some("one two three".to_owned()),
        "{echoed:?}"
    );
    // Every exchange ended cleanly, so one connection served them all.
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn request_trailers_go_upstream_in_the_last_chunk() {
    let upstream = scripted(answer_by_path).await;
    let server = balancer(&one_endpoint(upstream.address, "")).await;
    let web = address(&server, "web");
    // An HTTP/2 client sends a body without a length and trailers after it.
    let mut sender = h2_sender(web).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("4242"));
    let frames = futures_util::stream::iter([
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"chunk one, "))),
        Ok(Frame::data(Bytes::from_static(b"chunk two"))),
        Ok(Frame::trailers(trailers)),
    ]);
    let request = http::Request::post(format!("http://{web}/echo"))
        .header("te", "trailers")
        .body(StreamBody::new(frames))
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    // The upstream echoes the body as it came on the wire: chunked, the trailers in the
    // section after the last chunk.
    let wire = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let wire = String::from_utf8_lossy(&wire);
    let (data, trailer_section) = wire
        .split_once("0\r\n")
        .filter(|(data, _)| data.ends_with("\r\n"))
        .expect("a last chunk");
    assert_eq!(
        dechunk(&format!("{data}0\r\n\r\n")),
        Some("chunk one, chunk two".to_owned()),
        "{wire:?}"
    );
    assert_eq!(trailer_section, "x-checksum: 4242\r\n\r\n", "{wire:?}");
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_never_reused() {
    let upstream = scripted(answer_by_path).await;
    let server = balancer(&one_endpoint(upstream.address, "")).await;
    let web = address(&server, "web");
    let client = keepalive_client();
    for path in ["/close", "/until-close", "/close", "/"] {
        let response = within(client.get(format!("http://{web}{path}")).send())
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        within(response.bytes()).await.unwrap();
    }
    // Three answers closed their connection; the fourth request needed a new one.
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 4);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_pooled_connection_closed_while_idle_is_replaced_without_an_error() {
    // Answers keep-alive, then closes the idle connection 100 ms later (an upstream's
    // keepalive_timeout).
    fn answer(_: &str, _: &[u8]) -> (Vec<u8>, After) {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            After::KeepOpen,
        )
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if let Some((path, body)) = read_request(&mut stream, &mut buf).await {
                    let (bytes, _) = answer(&path, &body);
                    let _ = stream.write_all(&bytes).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    let server = balancer(&one_endpoint(upstream, "")).await;
    let web = address(&server, "web");
    for round in 0..3 {
        let response = within(client().get(format!("http://{web}/")).send())
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "round {round}");
        within(response.bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_broken_upstream_answer_is_a_502_and_its_connection_is_dropped() {
    let upstream = scripted(answer_by_path).await;
    let server = balancer(&one_endpoint(upstream.address, "")).await;
    let web = address(&server, "web");
    for path in ["/malformed", "/bad-length"] {
        let response = within(client().get(format!("http://{web}{path}")).send())
            .await
            .unwrap();
        assert_eq!(response.status(), 502, "{path}");
        assert_eq!(
            response.headers()["proxy-status"],
            "switchyard; error=connection_terminated",
            "{path}"
        );
    }
    // A body shorter than its Content-Length: the head went out, the client sees the
    // body cut short rather than a response that looks complete.
    let result = within(async {
        let response = client().get(format!("http://{web}/short")).send().await?;
        response.bytes().await
    })
    .await;
    assert!(
        result.is_err(),
        "a truncated body must not look complete: {result:?}"
    );
    // The proxy is still healthy for the next request.
    let response = within(client().get(format!("http://{web}/")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn head_requests_read_no_body_and_keep_the_connection() {
    let upstream = scripted(|_, _| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n".to_vec(),
            After::KeepOpen,
        )
    })
    .await;
    let server = balancer(&one_endpoint(upstream.address, "")).await;
    let web = address(&server, "web");
    let client = keepalive_client();
    for _ in 0..3 {
        let response = within(client.head(format!("http://{web}/")).send())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-length"], "12");
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 3);
}

/// Answers with fields in mixed case, an id of its own on `/own-id`, and a hop-by-hop
/// field on `/hop`.
fn answer_with_fields(path: &str, _body: &[u8]) -> (Vec<u8>, After) {
    let extra = match path {
        "/own-id" => "X-Request-Id: from-upstream\r\n",
        "/hop" => "Proxy-Authenticate: Basic\r\n",
        _ => "",
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\nX-Mixed-Case: Yes\r\nServer: scripted\r\n{extra}Content-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    );
    (response.into_bytes(), After::KeepOpen)
}

/// One raw HTTP/1.1 exchange with `web`: the response head as text.
async fn raw_head(web: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(web).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    within(stream.read_to_end(&mut all)).await.unwrap();
    let text = String::from_utf8(all).unwrap();
    text.split("\r\n\r\n").next().unwrap().to_owned()
}

#[tokio::test]
async fn an_upstreams_fields_pass_as_they_came_with_one_request_id_and_route_edits_apply() {
    let upstream = scripted(answer_with_fields).await;
    let server = balancer(&one_endpoint(upstream.address, "")).await;
    let web = address(&server, "web");

    // HTTP/1.1: the upstream's spelling, our request id once, the hop-by-hop field gone.
    let head = raw_head(web, "/").await;
    assert!(head.contains("\r\nX-Mixed-Case: Yes\r\n"), "{head}");
    assert!(head.contains("\r\nServer: scripted\r\n"), "{head}");
    assert_eq!(head.matches("x-request-id: ").count(), 1, "{head}");
    let head = raw_head(web, "/own-id").await;
    let ids: Vec<&str> = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-request-id:"))
        .collect();
    assert_eq!(ids, ["X-Request-Id: from-upstream"], "{head}");
    let head = raw_head(web, "/hop").await;
    assert!(
        !head.to_ascii_lowercase().contains("proxy-authenticate"),
        "{head}"
    );
    assert!(
        head.contains("X-Mixed-Case: Yes") || head.contains("x-mixed-case: Yes"),
        "{head}"
    );

    // HTTP/2: the same fields, in lowercase as HTTP/2 requires.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = within(h2.get(format!("http://{web}/own-id")).send())
        .await
        .unwrap();
    assert_eq!(response.headers()["x-mixed-case"], "Yes");
    let ids: Vec<_> = response.headers().get_all("x-request-id").iter().collect();
    assert_eq!(ids, ["from-upstream"]);
    // The raw fields are encoded beside the map: each once, the proxy's request id, one
    // `Date` and the upstream's one length, no connection-specific field.
    let response = within(h2.get(format!("http://{web}/")).send())
        .await
        .unwrap();
    let fields = response.headers();
    let count = |name: &str| fields.get_all(name).iter().count();
    assert_eq!(fields["server"], "scripted");
    assert_eq!(count("server"), 1, "{fields:?}");
    assert_eq!(count("x-mixed-case"), 1, "{fields:?}");
    assert_eq!(count("x-request-id"), 1, "{fields:?}");
    assert_eq!(count("date"), 1, "{fields:?}");
    assert_eq!(
        fields.get_all("content-length").iter().collect::<Vec<_>>(),
        ["2"]
    );
    assert_eq!(count("connection"), 0, "{fields:?}");
    assert_eq!(within(response.text()).await.unwrap(), "ok");

    // A route that edits response fields sees the upstream's: `set` replaces its value.
    let edited = balancer(&format!(
        r#"{WEB}
  [[listener.route]]
  name = "edit"
  cluster = "app"
  response_headers = {{ set = {{ "x-mixed-case" = "edited" }}, remove = ["server"] }}
[[cluster]]
name = "app"
endpoints = ["{}"]
"#,
        upstream.address
    ))
    .await;
    let head = raw_head(address(&edited, "web"), "/").await;
    let lower = head.to_ascii_lowercase();
    assert_eq!(lower.matches("x-mixed-case:").count(), 1, "{head}");
    assert!(lower.contains("x-mixed-case: edited"), "{head}");
    assert!(!lower.contains("server:"), "{head}");
}
