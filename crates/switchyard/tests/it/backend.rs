//! `switchyard backend`, the fault-injecting test upstream, over real sockets.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use switchyard::backend::{self, BackendArgs, BackendError, BackendHandle, Latency};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::h2_client;
use tokio_tungstenite::tungstenite::Message;

/// Every await that could hang is bounded by this.
const LIMIT: Duration = Duration::from_secs(10);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

async fn start(args: BackendArgs) -> BackendHandle {
    within(backend::spawn(args)).await.expect("backend starts")
}

fn http1() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(LIMIT)
        .build()
        .unwrap()
}

fn url(b: &BackendHandle, path: &str) -> String {
    format!("http://{}{path}", b.local_addr())
}

async fn get(client: &reqwest::Client, url: &str) -> reqwest::Response {
    within(client.get(url).send()).await.expect("request")
}

async fn put_control(b: &BackendHandle, body: &str) -> (u16, Value) {
    let resp = within(http1().put(url(b, "/control")).body(body.to_owned()).send())
        .await
        .expect("PUT /control");
    let status = resp.status().as_u16();
    (status, within(resp.json()).await.expect("JSON"))
}

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// One unary gRPC call over a fresh h2c connection: (HTTP status, message, grpc-status).
async fn grpc_call(b: &BackendHandle, method: &str, message: &[u8]) -> (u16, Bytes, String) {
    let tcp = within(TcpStream::connect(b.local_addr())).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut sender, conn) = within(hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    ))
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::post(url(b, method))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(message)))
        .unwrap();
    let resp = within(sender.send_request(req)).await.expect("response");
    let status = resp.status().as_u16();
    let collected = within(resp.into_body().collect()).await.expect("body");
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = collected.to_bytes();
    let message = if body.len() >= 5 {
        body.slice(5..)
    } else {
        Bytes::new()
    };
    (status, message, grpc_status)
}

#[tokio::test]
async fn answers_with_its_name_over_http1() {
    let b = start(BackendArgs::for_test("b1")).await;
    let resp = get(&http1(), &url(&b, "/some/path?x=1")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.headers()["x-backend"], "b1");
    let json: Value = within(resp.json()).await.unwrap();
    assert_eq!(json["name"], "b1");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/some/path");
    assert_eq!(json["query"], "x=1");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["body_len"], 0);
    assert!(json["headers"]["host"].is_string());
}

#[tokio::test]
async fn answers_with_its_name_over_h2c() {
    let b = start(BackendArgs::for_test("b2")).await;
    let resp = within(h2_client().post(url(&b, "/")).body("12345").send())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-backend"], "b2");
    let json: Value = within(resp.json()).await.unwrap();
    assert_eq!(json["version"], "HTTP/2.0");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["body_len"], 5);
}

#[tokio::test]
async fn the_default_name_is_the_bound_address() {
    let b = start(BackendArgs::default()).await;
    assert_eq!(b.name(), b.local_addr().to_string());
    let resp = get(&http1(), &url(&b, "/")).await;
    assert_eq!(
        resp.headers()["x-backend"],
        b.local_addr().to_string().as_str()
    );
}

#[tokio::test]
async fn echo_returns_the_request_body() {
    let b = start(BackendArgs::for_test("echo")).await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for client in [http1(), h2_client()] {
        let resp = within(
            client
                .post(url(&b, "/echo"))
                .header("content-type", "application/x-test")
                .body(body.clone())
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/x-test");
        let got = within(resp.bytes()).await.unwrap();
        assert_eq!(got.len(), body.len());
        assert!(got == body, "echoed body differs");
    }
}

#[tokio::test]
async fn bytes_streams_exactly_n_bytes() {
    let b = start(BackendArgs::for_test("bytes")).await;
    for (path, n) in [
        ("/bytes/0", 0usize),
        ("/bytes/1", 1),
        ("/bytes/1000000", 1_000_000),
        ("/bytes?size=70000", 70_000),
        ("/bytes/16KiB", 16 * 1024),
    ] {
        let resp = get(&http1(), &url(&b, path)).await;
        assert_eq!(resp.status(), 200, "{path}");
        let got = within(resp.bytes()).await.unwrap();
        assert_eq!(got.len(), n, "{path}");
    }
    let resp = get(&http1(), &url(&b, "/bytes/nope")).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn bytes_can_stream_slowly_in_chunks() {
    let b = start(BackendArgs::for_test("slow")).await;
    let started = Instant::now();
    let mut resp = get(&http1(), &url(&b, "/bytes/40?chunk=10&delay=50ms")).await;
    let mut chunks = 0;
    let mut total = 0;
    while let Some(c) = within(resp.chunk()).await.unwrap() {
        chunks += 1;
        total += c.len();
    }
    assert_eq!(total, 40);
    assert!(chunks >= 2, "expected several chunks, got {chunks}");
    // Three delays between four chunks.
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn status_and_delay_paths_answer_as_asked() {
    let b = start(BackendArgs::for_test("paths")).await;
    let resp = get(&http1(), &url(&b, "/status/418")).await;
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["x-backend"], "paths");
    assert_eq!(get(&http1(), &url(&b, "/status/42")).await.status(), 400);
    let started = Instant::now();
    let resp = get(&http1(), &url(&b, "/delay/200ms")).await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(get(&http1(), &url(&b, "/delay/soon")).await.status(), 400);
}

#[tokio::test]
async fn error_rate_one_fails_real_traffic_while_healthz_still_passes() {
    let b = start(BackendArgs::for_test("gray")).await;
    let (status, state) = put_control(&b, r#"{"error_rate":1.0,"error_status":502}"#).await;
    assert_eq!(status, 200);
    assert_eq!(state["error_rate"], 1.0);
    assert_eq!(state["error_status"], 502);
    for _ in 0..5 {
        assert_eq!(get(&http1(), &url(&b, "/")).await.status(), 502);
        assert_eq!(get(&h2_client(), &url(&b, "/echo")).await.status(), 502);
        let health = get(&http1(), &url(&b, "/healthz")).await;
        assert_eq!(health.status(), 200);
        assert_eq!(within(health.text()).await.unwrap(), "ok");
    }
    // apply_to_healthz makes the health check fail too.
    put_control(&b, r#"{"apply_to_healthz":true}"#).await;
    assert_eq!(get(&http1(), &url(&b, "/healthz")).await.status(), 502);
    // healthz_status is separate from real traffic.
    put_control(
        &b,
        r#"{"error_rate":0,"apply_to_healthz":false,"healthz_status":503}"#,
    )
    .await;
    assert_eq!(get(&http1(), &url(&b, "/")).await.status(), 200);
    assert_eq!(get(&http1(), &url(&b, "/healthz")).await.status(), 503);
    assert_eq!(b.control().snapshot().errors_injected, 11);
}

#[tokio::test]
async fn a_bad_control_body_is_rejected_naming_the_field() {
    let b = start(BackendArgs::for_test("bad")).await;
    for (body, field) in [
        (r#"{"error_rate":1.5}"#, Value::from("error_rate")),
        (r#"{"latency":"fast"}"#, Value::from("latency")),
        (
            r#"{"latency":{"min":"9ms","max":"1ms"}}"#,
            Value::from("latency"),
        ),
        (r#"{"healthz_status":"200"}"#, Value::from("healthz_status")),
        (r#"{"requests":0}"#, Value::from("requests")),
        (r#"{"no_such_field":1}"#, Value::from("no_such_field")),
        ("not json", Value::Null),
    ] {
        let (status, json) = put_control(&b, body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(json["field"], field, "{body}");
        assert!(json["error"].is_string());
    }
    // Nothing changed, not even the valid fields of a rejected body.
    put_control(&b, r#"{"error_rate":0.5,"reset_rate":7}"#).await;
    let state = b.control().faults();
    assert_eq!(state, backend::FaultState::default());
}

#[tokio::test]
async fn get_control_reports_state_and_counters() {
    let b = start(BackendArgs::for_test("count")).await;
    let client = http1();
    for _ in 0..3 {
        get(&client, &url(&b, "/")).await;
    }
    get(&h2_client(), &url(&b, "/bytes/10")).await;
    for _ in 0..2 {
        get(&client, &url(&b, "/healthz")).await;
    }
    let json: Value = within(get(&client, &url(&b, "/control")).await.json())
        .await
        .unwrap();
    assert_eq!(json["name"], "count");
    assert_eq!(json["requests"], 4);
    assert_eq!(json["healthz_requests"], 2);
    assert_eq!(json["latency"], "0ms");
    assert_eq!(json["error_rate"], 0.0);
    assert_eq!(json["error_status"], 503);
    assert_eq!(json["reset_rate"], 0.0);
    assert_eq!(json["healthz_status"], 200);
    assert_eq!(json["grpc_serving"], true);
    assert_eq!(json["body_delay"], "0ms");
    assert_eq!(json["apply_to_healthz"], false);
    assert_eq!(b.control().requests(), 4);
    assert_eq!(b.control().healthz_requests(), 2);
    b.control().reset_counters();
    assert_eq!(b.control().requests(), 0);
}

#[tokio::test]
async fn reset_rate_one_gives_a_client_visible_connection_error() {
    let b = start(BackendArgs {
        reset_rate: 1.0,
        ..BackendArgs::for_test("rst")
    })
    .await;
    let err = within(http1().get(url(&b, "/")).send())
        .await
        .expect_err("the connection is reset");
    assert!(!err.is_status(), "{err}");
    // Raw socket: the read fails or ends without a single response byte.
    let mut tcp = within(TcpStream::connect(b.local_addr())).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    match within(tcp.read_to_end(&mut buf)).await {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(_) => assert!(buf.is_empty(), "got a response: {buf:?}"),
    }
    assert_eq!(b.control().snapshot().resets_injected, 2);
    // The health check is spared.
    assert_eq!(get(&http1(), &url(&b, "/healthz")).await.status(), 200);
}

#[tokio::test]
async fn latency_is_applied_to_real_traffic() {
    let b = start(BackendArgs {
        latency: Some(Latency::Fixed(Duration::from_millis(200))),
        ..BackendArgs::for_test("slow")
    })
    .await;
    let started = Instant::now();
    assert_eq!(get(&http1(), &url(&b, "/")).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    put_control(&b, r#"{"latency":{"min":"100ms","max":"150ms"}}"#).await;
    let started = Instant::now();
    get(&h2_client(), &url(&b, "/")).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn body_delay_holds_the_body_back_after_the_head() {
    let b = start(BackendArgs::for_test("slowbody")).await;
    put_control(&b, r#"{"body_delay":"300ms"}"#).await;
    let started = Instant::now();
    let resp = get(&http1(), &url(&b, "/bytes/10")).await;
    assert_eq!(resp.status(), 200);
    let body = within(resp.bytes()).await.unwrap();
    assert_eq!(body.len(), 10);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn grpc_health_check_answers_serving_with_status_0_in_trailers() {
    let b = start(BackendArgs::for_test("grpc")).await;
    let (status, message, grpc_status) = grpc_call(&b, "/grpc.health.v1.Health/Check", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(grpc_status, "0");
    // HealthCheckResponse { status: SERVING (1) }
    assert_eq!(&message[..], &[0x08, 0x01]);

    put_control(&b, r#"{"grpc_serving":false,"grpc_services":{"api":true}}"#).await;
    let (_, message, grpc_status) = grpc_call(&b, "/grpc.health.v1.Health/Check", &[]).await;
    assert_eq!(grpc_status, "0");
    assert_eq!(&message[..], &[0x08, 0x02]);
    // HealthCheckRequest { service: "api" }
    let (_, message, _) = grpc_call(
        &b,
        "/grpc.health.v1.Health/Check",
        &[0x0a, 3, b'a', b'p', b'i'],
    )
    .await;
    assert_eq!(&message[..], &[0x08, 0x01]);
    assert_eq!(b.control().healthz_requests(), 3);
}

#[tokio::test]
async fn grpc_echo_returns_the_message_and_injected_errors_are_unavailable() {
    let b = start(BackendArgs::for_test("grpc-echo")).await;
    let payload = b"\x0a\x05hello";
    let (_, message, grpc_status) = grpc_call(&b, "/switchyard.test.Echo/Echo", payload).await;
    assert_eq!(grpc_status, "0");
    assert_eq!(&message[..], payload);
    let (_, _, grpc_status) = grpc_call(&b, "/no.Such/Method", &[]).await;
    assert_eq!(grpc_status, "12");

    b.control().set(|f| f.error_rate = 1.0);
    let (status, message, grpc_status) = grpc_call(&b, "/switchyard.test.Echo/Echo", payload).await;
    assert_eq!(status, 200);
    assert_eq!(grpc_status, "14");
    assert!(message.is_empty());
    // Health checks are spared by default.
    let (_, _, grpc_status) = grpc_call(&b, "/grpc.health.v1.Health/Check", &[]).await;
    assert_eq!(grpc_status, "0");
}

#[tokio::test]
async fn websocket_echoes_text_and_binary_and_answers_ping_and_close() {
    let b = start(BackendArgs::for_test("ws")).await;
    let tcp = within(TcpStream::connect(b.local_addr())).await.unwrap();
    let (mut ws, resp) = within(tokio_tungstenite::client_async(
        format!("ws://{}/ws", b.local_addr()),
        tcp,
    ))
    .await
    .expect("handshake");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["x-backend"], "ws");

    within(ws.send(Message::text("hello"))).await.unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::text("hello")
    );
    within(ws.send(Message::binary(vec![1u8, 2, 3])))
        .await
        .unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    within(ws.send(Message::Ping(Bytes::from_static(b"p"))))
        .await
        .unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"p"))
    );
    within(ws.close(None)).await.unwrap();
    // The server answers the close; the stream then ends.
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Close(_))) => {}
            None | Some(Err(_)) => break,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_plain_get_on_ws_is_told_to_upgrade() {
    let b = start(BackendArgs::for_test("ws")).await;
    assert_eq!(get(&http1(), &url(&b, "/ws")).await.status(), 426);
}

#[tokio::test]
async fn tcp_echo_honours_half_close() {
    let b = start(BackendArgs {
        tcp_echo: true,
        ..BackendArgs::for_test("tcp")
    })
    .await;
    let tcp = within(TcpStream::connect(b.local_addr())).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let sent: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
    let to_send = sent.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&to_send).await.unwrap();
        // Half-close: we are done writing but still read.
        wr.shutdown().await.unwrap();
        wr
    });
    let mut got = Vec::new();
    within(rd.read_to_end(&mut got))
        .await
        .expect("EOF after echo");
    let _wr = within(writer).await.unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "echoed bytes differ");
    assert_eq!(b.control().requests(), 1);
}

#[tokio::test]
async fn udp_echo_returns_each_datagram() {
    let b = start(BackendArgs {
        udp_echo: true,
        ..BackendArgs::for_test("udp")
    })
    .await;
    let udp_addr = b.udp_addr().expect("udp bound");
    assert_eq!(udp_addr.port(), b.local_addr().port());
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for msg in [&b"one"[..], b"two", &[0u8; 1200]] {
        within(sock.send_to(msg, udp_addr)).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = within(sock.recv_from(&mut buf)).await.unwrap();
        assert_eq!(&buf[..n], msg);
        assert_eq!(from, udp_addr);
    }
    // HTTP still answers on the TCP side of the same port.
    assert_eq!(get(&http1(), &url(&b, "/")).await.status(), 200);
}

async fn statuses(seed: u64) -> Vec<u16> {
    let b = start(BackendArgs {
        error_rate: 0.5,
        seed: Some(seed),
        ..BackendArgs::for_test("seeded")
    })
    .await;
    let client = http1();
    let mut out = Vec::new();
    for _ in 0..40 {
        out.push(get(&client, &url(&b, "/")).await.status().as_u16());
    }
    out
}

#[tokio::test]
async fn seeded_error_sampling_is_reproducible() {
    let a = statuses(42).await;
    let b = statuses(42).await;
    assert_eq!(a, b);
    assert!(a.contains(&200) && a.contains(&503), "{a:?}");
    assert_ne!(a, statuses(43).await);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let b = start(BackendArgs::for_test("drain")).await;
    let addr = b.local_addr();
    let client = http1();
    let in_flight = tokio::spawn({
        let url = url(&b, "/delay/300ms");
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    within(b.shutdown()).await;
    assert_eq!(within(in_flight).await.unwrap().expect("completed"), 200);
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let b = start(BackendArgs::for_test("drop")).await;
    let addr = b.local_addr();
    drop(b);
    let deadline = Instant::now() + LIMIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_bind_failure_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = backend::spawn(BackendArgs {
        listen: addr,
        ..BackendArgs::default()
    })
    .await
    .expect_err("address in use");
    assert!(matches!(err, BackendError::Bind { address, .. } if address == addr));
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    backend: BackendArgs,
}

#[test]
fn the_command_line_sets_the_initial_faults() {
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "backend",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "b9",
        "--latency",
        "5ms..50ms",
        "--error-rate",
        "0.1",
        "--error-status",
        "502",
        "--reset-rate",
        "0.05",
        "--body-delay",
        "1.5s",
        "--healthz-status",
        "503",
        "--apply-to-healthz",
        "--grpc-not-serving",
        "--seed",
        "7",
        "--udp-echo",
    ])
    .expect("parses");
    let args = cli.backend;
    assert_eq!(args.name.as_deref(), Some("b9"));
    assert_eq!(args.seed, Some(7));
    assert!(args.udp_echo && !args.tcp_echo);
    let f = args.faults();
    assert_eq!(
        f.latency,
        Latency::Uniform {
            min: Duration::from_millis(5),
            max: Duration::from_millis(50)
        }
    );
    assert!((f.error_rate - 0.1).abs() < 1e-12);
    assert_eq!(f.error_status, 502);
    assert!((f.reset_rate - 0.05).abs() < 1e-12);
    assert_eq!(f.body_delay, Duration::from_millis(1500));
    assert_eq!(f.healthz_status, 503);
    assert!(f.apply_to_healthz && !f.grpc_serving);
    for bad in [
        &["backend", "--latency", "5"][..],
        &["backend", "--latency", "50ms..5ms"],
        &["backend", "--error-rate", "1.5"],
        &["backend", "--error-status", "99"],
        &["backend", "--body-delay", "5 s"],
    ] {
        assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} accepted");
    }
}

#[tokio::test]
async fn a_reset_over_h2c_fails_the_request() {
    let b = start(BackendArgs::for_test("rst2")).await;
    b.control().set(|f| f.reset_rate = 1.0);
    let err = within(h2_client().get(url(&b, "/")).send())
        .await
        .expect_err("the connection is reset");
    assert!(!err.is_status(), "{err}");
    assert_eq!(b.control().snapshot().resets_injected, 1);
}

#[tokio::test]
async fn the_control_state_round_trips_through_put() {
    let b = start(BackendArgs::for_test("rt")).await;
    let (status, state) = put_control(
        &b,
        r#"{"latency":"1500ms","reset_rate":0.25,"body_delay":"250us","grpc_services":{"a":false}}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(state["latency"], "1500ms");
    assert_eq!(state["reset_rate"], 0.25);
    assert_eq!(state["body_delay"], "250us");
    assert_eq!(state["grpc_services"]["a"], false);
    let faults = b.control().faults();
    assert_eq!(faults.latency, Latency::Fixed(Duration::from_millis(1500)));
    assert!(faults.grpc_serving && !faults.grpc_serving_for("a"));
    // Writing the state back unchanged (minus read-only fields) is accepted and a no-op.
    let mut writable = state.as_object().unwrap().clone();
    for ro in [
        "name",
        "requests",
        "healthz_requests",
        "errors_injected",
        "resets_injected",
        "connections",
    ] {
        writable.remove(ro);
    }
    let (status, again) = put_control(&b, &Value::Object(writable).to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(b.control().faults(), faults);
    assert_eq!(again["latency"], state["latency"]);
}

#[tokio::test]
async fn garbage_on_the_wire_does_not_stop_the_backend() {
    let b = start(BackendArgs::for_test("sturdy")).await;
    let inputs: [&[u8]; 6] = [
        b"\x00\xff\x13garbage\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999\r\n\r\nshort",
        b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: x\r\n\r\n\xff\xff",
        b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc\r\ncontent-length: 7\r\n\r\n\x00\x00\x00\x00\x02\x0a\xff",
        b"PUT /control HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n{\"a",
    ];
    for input in inputs {
        let mut tcp = within(TcpStream::connect(b.local_addr())).await.unwrap();
        within(tcp.write_all(input)).await.unwrap();
        let _ = tcp.shutdown().await;
        let mut sink = Vec::new();
        // Whatever the answer (or none), the connection ends.
        let _ = within(tcp.read_to_end(&mut sink)).await;
    }
    let resp = get(&http1(), &url(&b, "/")).await;
    assert_eq!(resp.status(), 200);
}
