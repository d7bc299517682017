//! The HTTP request handler: faults first, then the test paths (`/echo`, `/bytes/N`, ...).
//!
//! One function decides, for every request, whether it is control, health or real traffic,
//! samples its faults once and only then routes it, so every path sees the same faults and the
//! counters stay exact.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};

use super::body::{Delayed, Generated, RespBody, boxed, full};
use super::faults::Control;
use super::units::{parse_duration, parse_size};
use super::{control, grpc, ws};

/// What every request handler of one backend shares.
pub(crate) struct Shared {
    /// Fault state and counters.
    pub(crate) control: Control,
    /// The `x-backend` header value.
    pub(crate) name_header: HeaderValue,
    /// Flips to `true` (or closes) when the backend shuts down; upgraded connections watch it.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// `--concurrency`: the worker pool real requests wait for (`None` = unlimited).
    workers: Option<tokio::sync::Semaphore>,
}

impl Shared {
    pub(crate) fn new(control: Control, shutdown: watch::Receiver<bool>, workers: usize) -> Self {
        let name_header = HeaderValue::from_str(control.name())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-name"));
        Self {
            control,
            name_header,
            shutdown,
            workers: (workers > 0).then(|| tokio::sync::Semaphore::new(workers)),
        }
    }
}

/// Per-connection state: lets a handler ask its connection task to reset the connection.
#[derive(Default)]
pub(crate) struct ConnCtx {
    /// Notified when a handler injects a reset.
    pub(crate) reset: Notify,
}

/// The longest `/delay/DUR` honoured (longer values are clamped).
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Answers one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let mut resp = if req.uri().path() == "/control" {
        let (parts, body) = req.into_parts();
        control::serve(&shared.control, &parts.method, body).await
    } else {
        traffic(&shared, &conn, req).await
    };
    resp.headers_mut()
        .insert("x-backend", shared.name_header.clone());
    resp
}

async fn traffic(shared: &Shared, conn: &ConnCtx, req: Request<Incoming>) -> Response<RespBody> {
    let is_grpc = grpc::is_grpc(&req);
    let path = req.uri().path();
    let health = path == "/healthz" || (is_grpc && path == grpc::HEALTH_CHECK);
    let decision = shared.control.decide(health);
    // Real requests take a worker for their service time (latency included); health checks
    // are answered beside the pool, as many servers do.
    let _worker = match (&shared.workers, health) {
        (Some(workers), false) => workers.acquire().await.ok(),
        _ => None,
    };
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    if decision.reset {
        conn.reset.notify_one();
        // The connection task drops this future along with the connection.
        std::future::pending::<()>().await;
    }
    if let Some(status) = decision.error {
        return if is_grpc {
            grpc::status_response(grpc::UNAVAILABLE, "injected fault")
        } else {
            error_response(status, shared.control.name())
        };
    }
    let resp = if is_grpc {
        grpc::serve(&shared.control, req).await
    } else {
        route(shared, req).await
    };
    if decision.body_delay.is_zero() {
        resp
    } else {
        resp.map(|b| boxed(Delayed::new(b, decision.body_delay)))
    }
}

async fn route(shared: &Shared, mut req: Request<Incoming>) -> Response<RespBody> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if path == "/healthz" {
        let status = shared.control.faults_arc().healthz_status;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = if status.is_success() || status.is_redirection() {
            "ok"
        } else {
            "unhealthy"
        };
        return text(status, body);
    }
    if path == "/echo" {
        return echo(req);
    }
    if path == "/ws" {
        return ws::upgrade(&mut req, shared.shutdown.clone());
    }
    if path == "/bytes" || path.starts_with("/bytes/") {
        return bytes(&path, &query);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code.parse::<u16>().ok().filter(|c| (200..=599).contains(c)) {
            Some(c) => {
                let status = StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = json_response(status, &serde_json::json!({"status": c}));
                let retry_after = query_param(&query, "retry_after")
                    .and_then(|v| http::HeaderValue::from_str(v).ok());
                if let Some(value) = retry_after {
                    response
                        .headers_mut()
                        .insert(http::header::RETRY_AFTER, value);
                }
                response
            }
            None => bad_request(&format!("/status/{code}: expected a status 200-599")),
        };
    }
    if let Some(d) = path.strip_prefix("/delay/") {
        return match parse_duration(d) {
            Ok(d) => {
                tokio::time::sleep(d.min(MAX_DELAY)).await;
                describe(shared, req).await
            }
            Err(e) => bad_request(&format!("/delay/{d}: {e}")),
        };
    }
    describe(shared, req).await
}

fn echo(req: Request<Incoming>) -> Response<RespBody> {
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let mut resp = Response::new(boxed(req.into_body()));
    if let Some(ct) = content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// The value of query parameter `name`.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bytes(path: &str, query: &str) -> Response<RespBody> {
    let param = |name: &str| query_param(query, name);
    let size = match path.strip_prefix("/bytes/") {
        Some(n) => Some(n),
        None => param("size"),
    };
    let Some(size) = size else {
        return bad_request("/bytes: give the size as /bytes/N or ?size=N");
    };
    let Some(total) = parse_count(size) else {
        return bad_request(&format!(
            "/bytes: bad size {size:?} (bytes, or like \"16KiB\")"
        ));
    };
    let chunk = match param("chunk").map(parse_count) {
        None => 16 * 1024,
        Some(Some(c)) => usize::try_from(c).unwrap_or(usize::MAX),
        Some(None) => return bad_request("/bytes: bad chunk (bytes, or like \"1KiB\")"),
    };
    let delay = match param("delay").map(parse_duration) {
        None => Duration::ZERO,
        Some(Ok(d)) => d.min(MAX_DELAY),
        Some(Err(e)) => return bad_request(&format!("/bytes: bad delay: {e}")),
    };
    let mut resp = Response::new(boxed(Generated::new(total, chunk, delay)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

fn parse_count(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| parse_size(s).ok())
}

/// The default answer: what the backend saw, as JSON. The request body is drained and counted,
/// never kept.
async fn describe(shared: &Shared, req: Request<Incoming>) -> Response<RespBody> {
    let (parts, mut body) = req.into_parts();
    let mut body_len: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_len += d.len() as u64;
                }
            }
            Err(e) => return bad_request(&format!("reading the request body: {e}")),
        }
    }
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(v));
            }
        }
    }
    let json = serde_json::json!({
        "name": shared.control.name(),
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body_len": body_len,
        "version": format!("{:?}", parts.version),
    });
    json_response(StatusCode::OK, &json)
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<RespBody> {
    let mut body = value.to_string();
    body.push('\n');
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn bad_request(message: &str) -> Response<RespBody> {
    json_response(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": message }),
    )
}

fn error_response(status: u16, name: &str) -> Response<RespBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        status,
        &serde_json::json!({ "error": "injected fault", "name": name, "status": status.as_u16() }),
    )
}
