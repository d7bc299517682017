//! The bounds of an exchange after its response head (SPEC 3.1): no bytes either way for
//! the listener's `idle_timeout` ends it, and so does the route's `max_duration`, over
//! HTTP/1.1 and HTTP/2; a client that stops reading is cut off after `idle_timeout`; a
//! body that keeps moving is never cut by the idle bound; an endpoint drained by the
//! operator or removed by a reload has its running exchanges cut after its cluster's
//! `drain_timeout`.

#![allow(clippy::unwrap_used)]
use std::time::{Duration, Instant};

use switchyard::backend::BackendHandle;
use switchyard::runtime::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::h2_wire::*;
use crate::support::*;

/// One backend behind listener `web` (with `listener_extra` keys) and one route (with
/// `route_extra` keys).
async fn start(listener_extra: &str, route_extra: &str) -> (Vec<BackendHandle>, Server) {
    let backends = http_backends(1).await;
    let toml = format!(
        r#"{WEB}
{listener_extra}
  [[listener.route]]
  name = "all"
  cluster = "app"
  {route_extra}
[[cluster]]
name = "app"
endpoints = {}
"#,
        endpoints(&[backends[0].local_addr()], &["b1"])
    );
    (backends, balancer(&toml).await)
}

/// GETs `path` with `client`: the status and, after the head, how the body ended and when
/// (from the request's start).
async fn fetch(client: &reqwest::Client, url: &str) -> (u16, Result<usize, String>, Duration) {
    let started = Instant::now();
    let response = within(client.get(url).send()).await.unwrap();
    let status = response.status().as_u16();
    let body = within(response.bytes()).await;
    (
        status,
        body.map(|b| b.len()).map_err(|e| format!("{e:?}")),
        started.elapsed(),
    )
}

#[tokio::test]
async fn an_upstream_body_silent_for_idle_timeout_is_cut_over_h1_and_h2() {
    let (_backends, server) = start(r#"idle_timeout = "400ms""#, "").await;
    // 4 pieces, 1.5 s apart: the first wait is already past idle_timeout.
    let url = format!(
        "http://{}/bytes/4000?chunk=1000&delay=1500ms",
        address(&server, "web")
    );
    for client in [client(), h2_client()] {
        let (status, body, took) = fetch(&client, &url).await;
        assert_eq!(status, 200);
        assert!(body.is_err(), "the body is cut: {body:?}");
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(3000),
            "cut after {took:?}"
        );
    }
}

#[tokio::test]
async fn a_body_that_keeps_moving_outlives_idle_timeout() {
    let (_backends, server) = start(r#"idle_timeout = "600ms""#, "").await;
    // 8 pieces 200 ms apart: 1.6 s in all, never 600 ms without a byte.
    let url = format!(
        "http://{}/bytes/4000?chunk=500&delay=200ms",
        address(&server, "web")
    );
    for client in [client(), h2_client()] {
        let (status, body, took) = fetch(&client, &url).await;
        assert_eq!((status, body), (200, Ok(4000)));
        assert!(took >= Duration::from_millis(1400), "took {took:?}");
    }
}

#[tokio::test]
async fn max_duration_cuts_a_moving_body_and_bounds_the_wait_for_the_head() {
    let (_backends, server) = start("", r#"max_duration = "800ms""#).await;
    let web = address(&server, "web");
    // 40 pieces 100 ms apart (4 s), never idle: max_duration ends it.
    let url = format!("http://{web}/bytes/40000?chunk=1000&delay=100ms");
    for client in [client(), h2_client()] {
        let (status, body, took) = fetch(&client, &url).await;
        assert_eq!(status, 200);
        assert!(body.is_err(), "the body is cut: {body:?}");
        assert!(
            took >= Duration::from_millis(750) && took < Duration::from_millis(2500),
            "cut after {took:?}"
        );
    }
    // A head later than max_duration (and sooner than `timeout`, 15 s): 504.
    let started = Instant::now();
    let response = within(client().get(format!("http://{web}/delay/5s")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.headers()["proxy-status"],
        "switchyard; error=http_response_timeout"
    );
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn a_config_with_max_duration_is_accepted_and_zero_means_off() {
    let (_backends, server) = start("", r#"max_duration = "0s""#).await;
    let url = format!(
        "http://{}/bytes/2000?chunk=1000&delay=300ms",
        address(&server, "web")
    );
    let (status, body, _) = fetch(&client(), &url).await;
    assert_eq!((status, body), (200, Ok(2000)));
}

#[tokio::test]
async fn an_h1_client_that_stops_reading_is_cut_off_after_idle_timeout() {
    let (_backends, server) = start(r#"idle_timeout = "500ms""#, "").await;
    let total: usize = 64 << 20;
    let mut stream = tokio::net::TcpStream::connect(address(&server, "web"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /bytes/64MiB HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = within(stream.read(&mut head)).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    // Stop reading well past idle_timeout, then read what is left.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut rest = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let started = Instant::now();
    loop {
        match within(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => rest += n,
        }
    }
    assert!(
        n + rest < total / 2,
        "the proxy gave up on the client: {} of {total} bytes came",
        n + rest
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_h2_client_that_grants_no_window_is_cut_off_after_idle_timeout() {
    let (_backends, server) = start(r#"idle_timeout = "500ms""#, "").await;
    let mut conn = Conn::open(address(&server, "web"), &[]).await;
    conn.send(&headers(1, &get("/bytes/1MiB"), true)).await;
    // The default windows let 65,535 bytes through; no WINDOW_UPDATE follows.
    let started = Instant::now();
    let (frames, end) = conn.until(|_| false).await;
    let waited = started.elapsed();
    assert!(end.is_none(), "the connection ends");
    let data: usize = frames
        .iter()
        .filter(|f| f.kind == DATA)
        .map(|f| f.payload.len())
        .sum();
    assert!(data <= 65_535, "{data} bytes within a 65,535-byte window");
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(3000),
        "closed after {waited:?}"
    );
}

/// Listener `web` over cluster `app` (`drain_timeout = "900ms"`) of the named backends.
fn drain_config(backends: &[(&BackendHandle, &str)]) -> String {
    let addresses: Vec<_> = backends.iter().map(|(b, _)| b.local_addr()).collect();
    let names: Vec<_> = backends.iter().map(|(_, name)| *name).collect();
    format!(
        "{WEB}\ncluster = \"app\"\n[[cluster]]\nname = \"app\"\ndrain_timeout = \"900ms\"\nendpoints = {}\n",
        endpoints(&addresses, &names)
    )
}

/// Starts a 40-piece body (100 ms apart: 4 s, never idle) from `web` with `client`, runs
/// `drain` once the head came, and returns how the body ended and how long after the
/// drain.
async fn drain_during_a_body<F: std::future::Future>(
    server: &Server,
    client: &reqwest::Client,
    drain: F,
) -> (Result<usize, String>, Duration) {
    let url = format!(
        "http://{}/bytes/40000?chunk=1000&delay=100ms",
        address(server, "web")
    );
    let response = within(client.get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::spawn(async move { within(response.bytes()).await });
    drain.await;
    let drained = Instant::now();
    let body = within(body).await.unwrap();
    (
        body.map(|b| b.len()).map_err(|e| format!("{e:?}")),
        drained.elapsed(),
    )
}

#[tokio::test]
async fn an_endpoint_drained_by_the_operator_has_its_running_bodies_cut_after_drain_timeout() {
    let backends = http_backends(1).await;
    let server = balancer(&drain_config(&[(&backends[0], "b1")])).await;
    let admin = server.admin_address().unwrap();
    let post = |action: &'static str| {
        let url = format!("http://{admin}/api/v1/clusters/app/endpoints/b1/{action}");
        async move {
            let response = within(client().post(url).send()).await.unwrap();
            assert_eq!(response.status(), 200, "{action}");
        }
    };
    for client in [client(), h2_client()] {
        let (body, took) = drain_during_a_body(&server, &client, post("drain")).await;
        assert!(body.is_err(), "the body is cut: {body:?}");
        // drain_timeout, found by the once-a-second housekeeping.
        assert!(
            took >= Duration::from_millis(850) && took < Duration::from_millis(2500),
            "cut {took:?} after the drain"
        );
        post("undrain").await;
    }
    // Undrained, the endpoint serves a long body whole again.
    let url = format!(
        "http://{}/bytes/3000?chunk=1000&delay=500ms",
        address(&server, "web")
    );
    let (status, body, _) = fetch(&client(), &url).await;
    assert_eq!((status, body), (200, Ok(3000)));
}

#[tokio::test]
async fn an_endpoint_a_reload_removed_has_its_running_bodies_cut_after_drain_timeout() {
    let backends = http_backends(2).await;
    let (b1, b2) = (&backends[0], &backends[1]);
    let file = ConfigFile::new("drain-timeout-removed", &drain_config(&[(b1, "b1")]));
    let server = balancer_from_file(&file).await;
    let reload = async {
        file.write(&drain_config(&[(b2, "b2")]));
        let (status, body) = admin_reload(&server).await;
        assert_eq!(status, 200, "{body}");
    };
    let (body, took) = drain_during_a_body(&server, &client(), reload).await;
    assert!(body.is_err(), "the body is cut: {body:?}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2000),
        "cut {took:?} after the reload"
    );
    // The new endpoint serves.
    let response = within(
        client()
            .get(format!("http://{}/", address(&server, "web")))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["x-backend"], "b2");
}
