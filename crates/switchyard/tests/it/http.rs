//! The L7 tier over real sockets: reqwest (h1, h2c), raw hyper/h2 clients for gRPC
//! trailers and rapid reset, tokio-tungstenite for WebSocket, `switchyard backend`
//! upstreams.

#![allow(clippy::unwrap_used)]
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use switchyard::backend::{BackendArgs, BackendHandle, Latency};
use switchyard::runtime::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn one_cluster(endpoints: &str, extra: &str) -> String {
    format!(
        r#"{WEB}
cluster = "app"
{extra}
[[cluster]]
name = "app"
balance = "round-robin"
endpoints = {endpoints}
"#
    )
}

/// One backend (`b1`) behind the `web` listener's one cluster, the listener with `extra`
/// keys; the backends are returned to be kept alive.
async fn one_backend(extra: &str) -> (Vec<BackendHandle>, Server) {
    let backends = http_backends(1).await;
    let server = balancer(&one_cluster(
        &endpoints(&[backends[0].local_addr()], &["b1"]),
        extra,
    ))
    .await;
    (backends, server)
}

async fn backend_names(client: &reqwest::Client, url: &str, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let response = within(client.get(url).send()).await.unwrap();
        assert_eq!(response.status(), 200);
        let name = response.headers()["x-backend"].to_str().unwrap().to_owned();
        *seen.entry(name).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn http1_and_h2c_share_one_port_and_balance_per_request() {
    let backends = http_backends(3).await;
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.local_addr()).collect();
    let server = balancer(&one_cluster(
        &endpoints(&addresses, &["b1", "b2", "b3"]),
        "",
    ))
    .await;
    let url = format!("http://{}/", address(&server, "web"));
    // One keep-alive HTTP/1.1 connection and one HTTP/2 connection: each request is
    // balanced on its own, so both see every endpoint.
    for client in [keepalive_client(), h2_client()] {
        let seen = backend_names(&client, &url, 30).await;
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen.values().all(|&n| n == 10), "{seen:?}");
    }
}

#[tokio::test]
async fn one_h2_connection_with_100_concurrent_streams_spreads_over_every_endpoint() {
    let backends = http_backends(4).await;
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.local_addr()).collect();
    let server = balancer(&one_cluster(
        &endpoints(&addresses, &["b1", "b2", "b3", "b4"]),
        "",
    ))
    .await;
    let url = format!("http://{}/", address(&server, "web"));
    let client = h2_client();
    let requests = (0..100).map(|_| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client.get(&url).send().await.unwrap();
            response.headers()["x-backend"].to_str().unwrap().to_owned()
        }
    });
    let names = within(futures_util::future::join_all(requests)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for name in names {
        *seen.entry(name).or_default() += 1;
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.values().all(|&n| n == 25), "{seen:?}");
}

#[tokio::test]
async fn routes_match_host_path_method_and_header_first_match_wins() {
    let backends = http_backends(4).await;
    let a: Vec<SocketAddr> = backends.iter().map(|b| b.local_addr()).collect();
    let toml = format!(
        r#"{WEB}
  [[listener.route]]
  name = "canary-header"
  match = {{ host = "api.example.com", headers = {{ "x-canary" = "1" }} }}
  cluster = "c"
  [[listener.route]]
  name = "api"
  match = {{ host = "api.example.com", path_prefix = "/v2/", methods = ["GET"] }}
  cluster = "b"
  [[listener.route]]
  name = "wild"
  match = {{ host = "*.example.com" }}
  cluster = "a"
  [[listener.route]]
  name = "regex"
  match = {{ path_regex = "^/u/[0-9]+$" }}
  cluster = "d"
[[cluster]]
name = "a"
endpoints = ["{}"]
[[cluster]]
name = "b"
endpoints = ["{}"]
[[cluster]]
name = "c"
endpoints = ["{}"]
[[cluster]]
name = "d"
endpoints = ["{}"]
"#,
        a[0], a[1], a[2], a[3]
    );
    let server = balancer(&toml).await;
    let base = format!("http://{}", address(&server, "web"));
    let client = keepalive_client();
    let ask = |method: reqwest::Method, host: &'static str, path: &'static str, canary: bool| {
        let mut request = client
            .request(method, format!("{base}{path}"))
            .header("host", host);
        if canary {
            request = request.header("x-canary", "1");
        }
        async move {
            let response = within(request.send()).await.unwrap();
            let status = response.status().as_u16();
            let backend = response
                .headers()
                .get("x-backend")
                .map(|v| v.to_str().unwrap().to_owned());
            let proxy_status = response
                .headers()
                .get("proxy-status")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, backend, proxy_status)
        }
    };
    use reqwest::Method;
    let b = |name: &str| Some(name.to_owned());
    assert_eq!(
        ask(Method::GET, "API.example.com:8080", "/v2/x", false)
            .await
            .1,
        b("b2")
    );
    assert_eq!(
        ask(Method::GET, "api.example.com", "/v2/x", true).await.1,
        b("b3")
    );
    assert_eq!(
        ask(Method::POST, "api.example.com", "/v2/x", false).await.1,
        b("b1"),
        "POST is not in the api route's methods: the wildcard catches it"
    );
    assert_eq!(
        ask(Method::GET, "www.example.com", "/", false).await.1,
        b("b1")
    );
    assert_eq!(
        ask(Method::GET, "other.org", "/u/42", false).await.1,
        b("b4")
    );
    let (status, backend, proxy_status) = ask(Method::GET, "other.org", "/u/x", false).await;
    assert_eq!((status, backend), (404, None));
    assert_eq!(
        proxy_status.as_deref(),
        Some("switchyard; error=destination_not_found")
    );
}

#[tokio::test]
async fn load_a_99_to_1_canary_split_holds_over_10000_requests() {
    let backends = http_backends(2).await;
    let toml = format!(
        r#"{WEB}
split = [ {{ cluster = "stable", weight = 99 }}, {{ cluster = "canary", weight = 1 }} ]
[[cluster]]
name = "stable"
endpoints = ["{}"]
[[cluster]]
name = "canary"
endpoints = ["{}"]
"#,
        backends[0].local_addr(),
        backends[1].local_addr()
    );
    let server = balancer(&toml).await;
    let url = format!("http://{}/", address(&server, "web"));
    let client = h2_client();
    let mut canary = 0;
    for _ in 0..100 {
        let batch = (0..100).map(|_| {
            let client = client.clone();
            let url = url.clone();
            async move { client.get(&url).send().await.unwrap().headers()["x-backend"] == "b2" }
        });
        canary += within(futures_util::future::join_all(batch))
            .await
            .into_iter()
            .filter(|c| *c)
            .count();
    }
    // 5 sigma around 100 (sigma ~ 9.95).
    assert!((50..=150).contains(&canary), "canary got {canary} of 10000");
}

#[tokio::test]
async fn a_dead_endpoint_is_retried_on_another_and_all_dead_is_a_503() {
    let live = http_backends(1).await;
    let dead = dead_address();
    let server = balancer(&one_cluster(
        &endpoints(&[dead, live[0].local_addr()], &["dead", "b1"]),
        "",
    ))
    .await;
    let url = format!("http://{}/", address(&server, "web"));
    let seen = backend_names(&client(), &url, 6).await;
    assert_eq!(
        seen.get("b1"),
        Some(&6),
        "connect failures retried: {seen:?}"
    );

    let server = balancer(&one_cluster(&endpoints(&[dead], &["dead"]), "")).await;
    let url = format!("http://{}/", address(&server, "web"));
    let response = within(client().get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["proxy-status"],
        "switchyard; error=connection_refused"
    );
    let series = r#"switchyard_requests_total{listener="web",route="web#0",cluster="app",code="503",origin="proxy"}"#;
    assert_eq!(metric_of(&server, series).await, 1.0);
}

#[tokio::test]
async fn upstream_5xx_passes_through_without_proxy_status() {
    let mut args = BackendArgs::for_test("b1");
    args.error_rate = 1.0;
    args.error_status = 503;
    let failing = backend(args).await;
    let server = balancer(&one_cluster(
        &endpoints(&[failing.local_addr()], &["b1"]),
        "",
    ))
    .await;
    let url = format!("http://{}/", address(&server, "web"));
    let response = within(client().get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("proxy-status").is_none());
    let series = r#"switchyard_requests_total{listener="web",route="web#0",cluster="app",code="503",origin="upstream"}"#;
    assert_eq!(metric_of(&server, series).await, 1.0);
}

#[tokio::test]
async fn no_response_head_within_the_route_timeout_is_a_504() {
    let mut args = BackendArgs::for_test("slow");
    args.latency = Some(Latency::parse("3s").unwrap());
    let slow = backend(args).await;
    let toml = format!(
        r#"{WEB}
  [[listener.route]]
  cluster = "app"
  timeout = "300ms"
[[cluster]]
name = "app"
endpoints = ["{}"]
"#,
        slow.local_addr()
    );
    let server = balancer(&toml).await;
    let url = format!("http://{}/", address(&server, "web"));
    let started = std::time::Instant::now();
    let response = within(client().get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.headers()["proxy-status"],
        "switchyard; error=http_response_timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn bodies_past_max_request_body_get_413_declared_or_streamed() {
    let (_backends, server) = one_backend(r#"max_request_body = "1KiB""#).await;
    let url = format!("http://{}/echo", address(&server, "web"));
    let small = within(client().post(&url).body(vec![b'a'; 1000]).send())
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    let declared = within(client().post(&url).body(vec![b'a'; 4096]).send())
        .await
        .unwrap();
    assert_eq!(declared.status(), 413);
    assert_eq!(
        declared.headers()["proxy-status"],
        "switchyard; error=http_request_error; details=\"max_request_body\""
    );
    // A chunked body carries no length: it is cut off as it passes the limit.
    let chunks =
        futures_util::stream::iter((0..8).map(|_| {
            Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(vec![b'a'; 512])))
        }));
    let streamed = within(
        client()
            .post(&url)
            .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(streamed.status(), 413);
}

#[tokio::test]
async fn forwarding_headers_are_set_and_hop_by_hop_headers_stripped() {
    let (_backends, server) = one_backend("").await;
    let url = format!("http://{}/", address(&server, "web"));
    let response = within(
        client()
            .get(&url)
            .header("connection", "x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-for", "10.9.9.9")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .send(),
    )
    .await
    .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let echoed: serde_json::Value = within(response.json()).await.unwrap();
    let headers = &echoed["headers"];
    assert!(headers.get("x-secret").is_none(), "{headers}");
    assert!(headers.get("keep-alive").is_none(), "{headers}");
    assert_eq!(
        headers["x-forwarded-proto"], "http",
        "untrusted peer's value replaced"
    );
    assert_eq!(headers["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    assert_eq!(headers["via"], "1.1 switchyard");
    assert_eq!(
        headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(headers["x-request-id"], request_id.as_str());
    assert_eq!(request_id.len(), 32);

    let kept = within(client().get(&url).header("x-request-id", "abc-123").send())
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "abc-123");
}

/// What the proxy adds to a request (request id, `X-Forwarded-*`, `Forwarded`, `Via`) is
/// kept beside the header map until something needs the map whole; it reaches the upstream
/// exactly once on every path: an HTTP/1.1 upstream, an HTTP/2 upstream (hyper writes the
/// map), a retry after a send (the kept copy), and route edits that replace and remove
/// those fields.
#[tokio::test]
async fn the_fields_the_proxy_adds_reach_every_kind_of_upstream_once() {
    let plain = http_backends(1).await.remove(0);
    let mut failing_args = BackendArgs::for_test("failing");
    failing_args.error_rate = 1.0;
    let failing = backend(failing_args).await;
    let toml = format!(
        r#"{WEB}
  [[listener.route]]
  match = {{ path_prefix = "/h2/" }}
  cluster = "h2"
  [[listener.route]]
  match = {{ path_prefix = "/retry/" }}
  cluster = "flaky"
  retry = {{ attempts = 2, on = ["gateway-error"], backoff_base = "1ms", backoff_max = "1ms" }}
  [[listener.route]]
  match = {{ path_prefix = "/edit/" }}
  cluster = "h1"
  request_headers = {{ set = {{ "via" = "edited" }}, remove = ["x-forwarded-host"] }}
  [[listener.route]]
  match = {{ path_prefix = "/" }}
  cluster = "h1"
[[cluster]]
name = "h1"
endpoints = ["{plain}"]
[[cluster]]
name = "h2"
protocol = "h2"
endpoints = ["{plain}"]
[[cluster]]
name = "flaky"
balance = "round-robin"
endpoints = ["{failing}", "{plain}"]
  [cluster.outlier]
  enabled = false
"#,
        plain = plain.local_addr(),
        failing = failing.local_addr(),
    );
    let server = balancer(&toml).await;
    let web = address(&server, "web");
    let echo = |path: &'static str| {
        let url = format!("http://{web}{path}");
        async move {
            let response = within(client().get(&url).send()).await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let echoed: serde_json::Value = within(response.json()).await.unwrap();
            assert_eq!(echoed["headers"]["x-request-id"], id.as_str(), "{path}");
            echoed
        }
    };
    let every_added = |echoed: &serde_json::Value, what: &str| {
        let headers = &echoed["headers"];
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{what}: {headers}");
        assert_eq!(headers["x-forwarded-proto"], "http", "{what}: {headers}");
        assert_eq!(
            headers["x-forwarded-host"],
            web.to_string(),
            "{what}: {headers}"
        );
        assert_eq!(
            headers["forwarded"],
            format!("for=127.0.0.1;proto=http;host=\"{web}\";by=\"{web}\""),
            "{what}: {headers}"
        );
        assert_eq!(headers["via"], "1.1 switchyard", "{what}: {headers}");
    };
    let h1 = echo("/").await;
    assert_eq!(h1["version"], "HTTP/1.1");
    every_added(&h1, "HTTP/1.1 upstream");
    let h2 = echo("/h2/").await;
    assert_eq!(h2["version"], "HTTP/2.0");
    every_added(&h2, "HTTP/2 upstream");
    // Round robin over [failing, plain]: at least one of two requests goes first to the
    // failing endpoint, and every one is answered 200, so it was sent again from the kept
    // copy.
    for _ in 0..2 {
        every_added(&echo("/retry/").await, "a retry");
    }
    assert!(failing.control().requests() >= 1, "a request was retried");
    let edited = echo("/edit/").await;
    let headers = &edited["headers"];
    assert_eq!(headers["via"], "edited", "{headers}");
    assert!(headers.get("x-forwarded-host").is_none(), "{headers}");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{headers}");
}

#[tokio::test]
async fn route_header_edits_and_path_rewrite_apply() {
    let backends = http_backends(1).await;
    let toml = format!(
        r#"{WEB}
  [[listener.route]]
  match = {{ path_prefix = "/api/" }}
  rewrite = {{ path_prefix = "/", host = "internal.test" }}
  cluster = "app"
  request_headers = {{ add = {{ "x-env" = "test" }}, remove = ["x-internal"] }}
  response_headers = {{ set = {{ "x-served-by" = "switchyard" }} }}
[[cluster]]
name = "app"
endpoints = ["{}"]
"#,
        backends[0].local_addr()
    );
    let server = balancer(&toml).await;
    let url = format!("http://{}/api/items?x=1", address(&server, "web"));
    let response = within(client().get(&url).header("x-internal", "1").send())
        .await
        .unwrap();
    assert_eq!(response.headers()["x-served-by"], "switchyard");
    let echoed: serde_json::Value = within(response.json()).await.unwrap();
    assert_eq!(echoed["path"], "/items");
    assert_eq!(echoed["query"], "x=1");
    assert_eq!(echoed["headers"]["host"], "internal.test");
    assert_eq!(echoed["headers"]["x-env"], "test");
    assert!(echoed["headers"].get("x-internal").is_none());
}

#[tokio::test]
async fn a_header_edit_does_not_change_the_host_an_http1_upstream_is_sent() {
    let backends = http_backends(1).await;
    let toml = format!(
        r#"{WEB}
  [[listener.route]]
  match = {{ path_prefix = "/removed/" }}
  cluster = "app"
  request_headers = {{ remove = ["host"] }}
  [[listener.route]]
  match = {{ path_prefix = "/set/" }}
  cluster = "app"
  request_headers = {{ set = {{ "host" = "edited.test" }} }}
[[cluster]]
name = "app"
endpoints = ["{}"]
"#,
        backends[0].local_addr()
    );
    let server = balancer(&toml).await;
    let web = address(&server, "web");
    // `rewrite.host` is how a route changes the Host; a header edit is undone.
    for path in ["/removed/x", "/set/x"] {
        let response = within(client().get(format!("http://{web}{path}")).send())
            .await
            .unwrap();
        let echoed: serde_json::Value = within(response.json()).await.unwrap();
        assert_eq!(echoed["headers"]["host"], web.to_string(), "{path}");
    }
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let (_backends, server) = one_backend("").await;
    let url = format!("http://{}/", address(&server, "web"));
    for _ in 0..20 {
        let response = within(client().get(&url).send()).await.unwrap();
        within(response.bytes()).await.unwrap();
    }
    let idle = r#"switchyard_upstream_pool_connections{cluster="app",state="idle"}"#;
    assert_eq!(
        metric_of(&server, idle).await,
        1.0,
        "20 sequential requests, one connection"
    );
}

#[tokio::test]
async fn h2_upstreams_multiplex_streams_on_one_connection() {
    let backends = http_backends(1).await;
    let toml = one_cluster(&endpoints(&[backends[0].local_addr()], &["b1"]), "").replace(
        "balance = \"round-robin\"",
        "balance = \"round-robin\"\nprotocol = \"h2\"",
    );
    let server = balancer(&toml).await;
    let url = format!("http://{}/", address(&server, "web"));
    let requests = (0..20).map(|_| {
        let url = url.clone();
        async move {
            let response = client().get(&url).send().await.unwrap();
            let echoed: serde_json::Value = response.json().await.unwrap();
            echoed["version"].as_str().unwrap().to_owned()
        }
    });
    let versions = within(futures_util::future::join_all(requests)).await;
    assert!(versions.iter().all(|v| v == "HTTP/2.0"), "{versions:?}");
    let active = r#"switchyard_upstream_pool_connections{cluster="app",state="active"}"#;
    assert_eq!(metric_of(&server, active).await, 0.0);
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_both_ways() {
    let (_backends, server) = one_backend("").await;
    let web = address(&server, "web");
    let tcp = within(tokio::net::TcpStream::connect(web)).await.unwrap();
    let (mut socket, response) = within(tokio_tungstenite::client_async(
        format!("ws://{web}/ws"),
        tcp,
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello", "world"] {
        within(socket.send(tokio_tungstenite::tungstenite::Message::text(text)))
            .await
            .unwrap();
        let echoed = within(socket.next()).await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
}

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

fn grpc_request(authority: SocketAddr, path: &str, message: &[u8]) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(message)))
        .unwrap()
}

#[tokio::test]
async fn grpc_over_h2c_keeps_trailers_and_proxy_failures_answer_as_grpc() {
    let backends = http_backends(1).await;
    let toml = format!(
        r#"{WEB}
  [[listener.route]]
  match = {{ path_prefix = "/switchyard.test." }}
  cluster = "grpc"
  [[listener.route]]
  match = {{ path_prefix = "/dead." }}
  cluster = "dead"
[[cluster]]
name = "grpc"
protocol = "h2"
endpoints = ["{}"]
[[cluster]]
name = "dead"
endpoints = ["{}"]
"#,
        backends[0].local_addr(),
        dead_address()
    );
    let server = balancer(&toml).await;
    let web = address(&server, "web");
    let mut sender = h2_sender(web).await;
    let response =
        within(sender.send_request(grpc_request(web, "/switchyard.test.Echo/Echo", b"ping")))
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    let collected = within(response.into_body().collect()).await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers pass through");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[5..], b"ping");

    let failed = within(sender.send_request(grpc_request(web, "/dead.Svc/Call", b"x")))
        .await
        .unwrap();
    assert_eq!(failed.status(), 200);
    assert_eq!(failed.headers()["grpc-status"], "14");
    assert_eq!(
        failed.headers()["proxy-status"],
        "switchyard; error=connection_refused"
    );
    let unrouted = within(sender.send_request(grpc_request(web, "/nowhere/x", b"x")))
        .await
        .unwrap();
    assert_eq!(unrouted.headers()["grpc-status"], "12");
}

#[tokio::test]
async fn h2_expect_100_continue_is_answered_before_the_body() {
    let (_backends, server) = one_backend("").await;
    let web = address(&server, "web");
    let stream = tokio::net::TcpStream::connect(web).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = within(client.ready()).await.unwrap();
    let request = http::Request::post(format!("http://{web}/echo"))
        .header("expect", "100-continue")
        .header("content-length", "5")
        .body(())
        .unwrap();
    let (mut response, mut upload) = client.send_request(request, false).unwrap();
    let interim = within(std::future::poll_fn(|cx| response.poll_informational(cx)))
        .await
        .expect("an interim response")
        .unwrap();
    assert_eq!(interim.status(), 100);
    upload
        .send_data(Bytes::from_static(b"hello"), true)
        .unwrap();
    let response = within(response).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut echoed = Vec::new();
    while let Some(chunk) = within(body.data()).await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        echoed.extend_from_slice(&chunk);
    }
    assert_eq!(echoed, b"hello");
    driver.abort();
}

#[tokio::test]
async fn an_h2_rapid_reset_flood_does_not_stop_other_clients() {
    let (_backends, server) = one_backend("").await;
    let web = address(&server, "web");
    let stream = tokio::net::TcpStream::connect(web).await.unwrap();
    let (mut client, connection) = h2::client::handshake(stream).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut refused = false;
    for _ in 0..2000 {
        let request = http::Request::get(format!("http://{web}/"))
            .body(())
            .unwrap();
        match client.send_request(request, true) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => {
                refused = true;
                break;
            }
        }
        if client.clone().ready().await.is_err() {
            refused = true;
            break;
        }
    }
    let ended = within(driver).await.unwrap();
    assert!(
        refused || ended.is_err(),
        "the flooding connection is closed"
    );
    // Everyone else is still served.
    let response = within(client_get(web)).await;
    assert_eq!(response, 200);
}

async fn client_get(web: SocketAddr) -> u16 {
    client()
        .get(format!("http://{web}/"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn raw_exchange(address: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = within(stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn ambiguous_framing_is_refused_with_400_and_never_forwarded() {
    let (backends, server) = one_backend("").await;
    let web = address(&server, "web");
    let cases: [(&str, &[u8]); 7] = [
        (
            "HTTP/1.1 400",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "HTTP/1.1 400",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
        ),
        (
            "HTTP/1.1 501",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: bogus, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "HTTP/1.1 400",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n  folded\r\n\r\n",
        ),
        ("HTTP/1.1 400", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"),
        ("HTTP/1.1 400", b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"),
        ("HTTP/1.1 400", b"GET nothing HTTP/1.1\r\nHost: a\r\n\r\n"),
    ];
    for (expected, bytes) in cases {
        let answer = raw_exchange(web, bytes).await;
        assert!(
            answer.starts_with(expected),
            "{:?} -> {answer:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            answer.contains("proxy-status: switchyard; error=http_request_error"),
            "{answer:?}"
        );
    }
    let control = backends[0].control().snapshot();
    assert_eq!(control.requests, 0, "nothing reached the upstream");
}

#[tokio::test]
async fn a_head_past_max_header_bytes_gets_431() {
    let (_backends, server) = one_backend(r#"max_header_bytes = "8KiB""#).await;
    let web = address(&server, "web");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let answer = raw_exchange(web, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    let response = within(
        h2_client()
            .get(format!("http://{web}/"))
            .header("x-big", "a".repeat(9000))
            .send(),
    )
    .await;
    match response {
        Ok(response) => assert_eq!(response.status(), 431),
        Err(error) => panic!("h2 oversized head: {error}"),
    }
}

#[tokio::test]
async fn a_slowloris_head_is_closed_after_header_read_timeout() {
    let (_backends, server) = one_backend(r#"header_read_timeout = "300ms""#).await;
    let web = address(&server, "web");
    let mut stream = tokio::net::TcpStream::connect(web).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let _ = within(stream.read_to_end(&mut out)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let rejected = r#"switchyard_connections_rejected_total{listener="web",reason="slow_head"}"#;
    assert_eq!(metric_of(&server, rejected).await, 1.0);
}

#[tokio::test]
async fn access_log_lines_carry_every_spec_key() {
    let backends = http_backends(1).await;
    let path = std::env::temp_dir().join(format!("sy-http-log-{}.jsonl", std::process::id()));
    let toml = one_cluster(&endpoints(&[backends[0].local_addr()], &["b1"]), "").replace(
        "[access_log]\nenabled = false",
        &format!("[access_log]\npath = \"{}\"", path.display()),
    );
    let server = balancer(&toml).await;
    let url = format!("http://{}/logged?secret=1", address(&server, "web"));
    let response = within(client().get(&url).send()).await.unwrap();
    within(response.bytes()).await.unwrap();
    let text = read_when_written(&path).await;
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for key in [
        "time",
        "listener",
        "route",
        "cluster",
        "endpoint",
        "method",
        "authority",
        "path",
        "status",
        "origin",
        "proxy_status",
        "attempts",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_duration_ms",
        "request_id",
        "client",
        "tls_version",
        "tls_cipher",
        "sni",
        "grpc_status",
    ] {
        assert!(line.get(key).is_some(), "{key} missing in {line}");
    }
    assert_eq!(line["path"], "/logged", "no query without include_query");
    assert_eq!(line["status"], 200);
    assert_eq!(line["origin"], "upstream");
    assert_eq!(line["endpoint"], "b1");
    drop(server);
}

#[tokio::test]
async fn an_idle_keepalive_connection_is_closed_after_idle_timeout() {
    let (_backends, server) = one_backend(r#"idle_timeout = "400ms""#).await;
    let web = address(&server, "web");
    let mut stream = tokio::net::TcpStream::connect(web).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within(stream.read(&mut buf)).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Nothing more is sent: the proxy closes the connection once idle_timeout has passed.
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = within(stream.read_to_end(&mut rest)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "closed too early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "not closed: {waited:?}");
}

#[tokio::test]
async fn past_max_requests_the_cluster_sheds_with_a_fast_503() {
    let mut args = BackendArgs::for_test("slow");
    args.latency = Some(Latency::parse("600ms").unwrap());
    let slow = backend(args).await;
    let toml = format!(
        "{}\n[cluster.limits]\nmax_requests = 1\n",
        one_cluster(&endpoints(&[slow.local_addr()], &["slow"]), "")
    );
    let server = balancer(&toml).await;
    let url = format!("http://{}/", address(&server, "web"));
    let first = tokio::spawn({
        let url = url.clone();
        async move { client().get(&url).send().await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    let shed = within(client().get(&url).send()).await.unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(
        shed.headers()["proxy-status"],
        "switchyard; error=connection_limit_reached; details=\"shed\""
    );
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "shed fast, not queued"
    );
    assert_eq!(within(first).await.unwrap(), 200);
    let series = r#"switchyard_shed_total{cluster="app",reason="requests"}"#;
    assert_eq!(metric_of(&server, series).await, 1.0);
}

/// A balancer whose `web` listener paces request bodies with `pace` (TOML lines).
async fn paced_balancer(
    pace: &str,
) -> (
    switchyard::runtime::Server,
    Vec<switchyard::backend::BackendHandle>,
) {
    let backends = http_backends(1).await;
    let toml = format!(
        "{WEB}\ncluster = \"app\"\n{pace}\n[[cluster]]\nname = \"app\"\nendpoints = [\"{}\"]\n",
        backends[0].local_addr()
    );
    (balancer(&toml).await, backends)
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_off_with_408_and_counted() {
    let (server, _backends) = paced_balancer("request_body_timeout = \"300ms\"").await;
    let mut stream = within(tokio::net::TcpStream::connect(address(&server, "web")))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    within(stream.write_all(
        b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 10000\r\n\r\nfirst hundred bytes",
    ))
    .await
    .unwrap();
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(
        answer.contains("details=\"min_request_body_rate\""),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let rejected = r#"switchyard_connections_rejected_total{listener="web",reason="slow_body"}"#;
    assert_eq!(metric_of(&server, rejected).await, 1.0);
}

#[tokio::test]
async fn a_slow_body_that_keeps_the_pace_goes_through() {
    let (server, _backends) =
        paced_balancer("request_body_timeout = \"300ms\"\nmin_request_body_rate = \"5B\"").await;
    let mut stream = within(tokio::net::TcpStream::connect(address(&server, "web")))
        .await
        .unwrap();
    within(stream.write_all(
        b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 8\r\nconnection: close\r\n\r\n",
    ))
    .await
    .unwrap();
    // One byte every 150 ms: under the 300 ms gap, above 5 bytes per second.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        within(stream.write_all(b"x")).await.unwrap();
    }
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn h2_bodies_larger_than_the_windows_stream_both_ways_with_date_and_length() {
    let backends = http_backends(1).await;
    let toml = one_cluster(&endpoints(&[backends[0].local_addr()], &["b1"]), "").replace(
        "protocol = \"http\"",
        "protocol = \"http\"\nhttp2_initial_stream_window = \"64KiB\"\nhttp2_initial_connection_window = \"64KiB\"",
    );
    let server = balancer(&toml).await;
    let web = address(&server, "web");
    let client = h2_client();
    // 1 MiB up and echoed back: sixteen windows' worth each way.
    let upload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let response = within(
        client
            .post(format!("http://{web}/echo"))
            .body(upload.clone())
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert!(response.headers().contains_key("date"));
    let echoed = within(response.bytes()).await.unwrap();
    assert_eq!(echoed.len(), upload.len());
    assert!(echoed[..] == upload[..], "the echo differs");
    // A known length is declared.
    let response = within(client.get(format!("http://{web}/bytes/300000")).send())
        .await
        .unwrap();
    assert_eq!(response.headers()["content-length"], "300000");
    assert_eq!(within(response.bytes()).await.unwrap().len(), 300_000);
}
