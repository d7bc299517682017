//! One active health check against one endpoint: connect (tcp), a TLS handshake (tls), a
//! GET whose status and body are judged (http), or `grpc.health.v1.Health/Check` (grpc);
//! with `[cluster.tls]` every kind connects through the pools' own TLS connector. Every probe is bounded
//! by the check's `timeout` as a whole, reads at most [`MAX_BODY`] bytes of an answer, and
//! uses its own connection (closed afterwards), so a probe never borrows a pooled
//! connection that real traffic is waiting for.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use regex::Regex;
use std::sync::Arc;

use crate::cluster::connect;
use crate::config::model::{Health, HealthKind, StatusRange, UpstreamProtocol, ValueMatch};
use crate::grpc_wire;
use crate::tls::upstream::UpstreamTls;

/// The most of a health answer's body that is read.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a probe failed, for the log line.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    /// Connect refused, timed out or failed.
    #[error("connect: {0}")]
    Connect(String),
    /// No complete answer within the check's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The HTTP or HTTP/2 exchange broke.
    #[error("exchange: {0}")]
    Exchange(String),
    /// The status was outside `expect_status`.
    #[error("status {0} not expected")]
    Status(u16),
    /// The body did not contain `expect_body`.
    #[error("body does not match expect_body")]
    Body,
    /// The gRPC answer was not SERVING.
    #[error("grpc: {0}")]
    Grpc(String),
    /// The check kind is not served by this build.
    #[error("check kind {0:?} not supported")]
    Unsupported(HealthKind),
}

/// What a probe needs beyond the endpoint's address, compiled once per cluster.
#[derive(Debug)]
pub struct ProbeSpec {
    /// The check configuration.
    pub health: Health,
    /// The cluster's upstream protocol (`h2` checks over HTTP/2 prior knowledge).
    pub protocol: UpstreamProtocol,
    /// The cluster's connect timeout (within the check's timeout).
    pub connect_timeout: Duration,
    /// `expect_body` as a regex, when written `/.../`.
    body_regex: Option<Regex>,
    /// The cluster's re-encryption client: every check kind then connects over TLS, and
    /// `kind = "tls"` passes on a completed handshake.
    tls: Option<Arc<UpstreamTls>>,
}

impl ProbeSpec {
    /// Compiles the probe of a cluster.
    pub fn new(
        health: &Health,
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Self {
        let body_regex = match &health.expect_body {
            Some(ValueMatch::Regex(pattern)) => Regex::new(pattern).ok(),
            _ => None,
        };
        ProbeSpec {
            health: health.clone(),
            protocol,
            connect_timeout,
            body_regex,
            tls,
        }
    }

    fn body_matches(&self, body: &[u8]) -> bool {
        match &self.health.expect_body {
            None => true,
            Some(ValueMatch::Exact(needle)) => {
                let needle = needle.as_bytes();
                needle.is_empty() || body.windows(needle.len()).any(|w| w == needle)
            }
            Some(ValueMatch::Regex(_)) => self
                .body_regex
                .as_ref()
                .is_some_and(|re| re.is_match(&String::from_utf8_lossy(body))),
        }
    }
}

/// Whether `status` lies in one of `ranges`.
pub fn status_expected(ranges: &[StatusRange], status: u16) -> bool {
    ranges.iter().any(|r| r.contains(status))
}

/// Checks `address` once.
pub async fn check(spec: &ProbeSpec, address: SocketAddr) -> Result<(), ProbeFailure> {
    let timeout = spec.health.timeout;
    match tokio::time::timeout(timeout, check_unbounded(spec, address)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeFailure::Timeout(timeout)),
    }
}

async fn check_unbounded(spec: &ProbeSpec, address: SocketAddr) -> Result<(), ProbeFailure> {
    let connect_timeout = spec.connect_timeout.min(spec.health.timeout);
    let Some(tls) = &spec.tls else {
        let stream = connect::tcp(address, connect_timeout, None)
            .await
            .map_err(|(_, error)| ProbeFailure::Connect(error))?;
        return speak(spec, address, stream, spec.protocol == UpstreamProtocol::H2).await;
    };
    // The same connector the pools use, so a check fails exactly when traffic would.
    let (stream, h2) = tls
        .connect(address, spec.health.timeout, None)
        .await
        .map_err(|error| ProbeFailure::Connect(error.to_string()))?;
    speak(spec, address, stream, h2).await
}

/// The check's exchange over an open connection (plain or TLS).
async fn speak<IO>(
    spec: &ProbeSpec,
    address: SocketAddr,
    io: IO,
    h2: bool,
) -> Result<(), ProbeFailure>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match spec.health.kind {
        HealthKind::Tcp => Ok(()),
        HealthKind::Tls if spec.tls.is_some() => Ok(()),
        HealthKind::Tls => Err(ProbeFailure::Unsupported(HealthKind::Tls)),
        HealthKind::Http => http_check(spec, address, io, h2).await,
        HealthKind::Grpc => grpc_check(spec, address, io).await,
    }
}

fn exchange(error: impl std::fmt::Display) -> ProbeFailure {
    ProbeFailure::Exchange(error.to_string())
}

async fn http_check<IO>(
    spec: &ProbeSpec,
    address: SocketAddr,
    stream: IO,
    h2: bool,
) -> Result<(), ProbeFailure>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let request = probe_request(Method::GET, address, &spec.health.path, h2, Bytes::new())?;
    let response = send(stream, request, h2).await?;
    let status = response.status().as_u16();
    if !status_expected(&spec.health.expect_status, status) {
        return Err(ProbeFailure::Status(status));
    }
    if spec.health.expect_body.is_some() {
        let (body, _) = read_bounded(response.into_body()).await?;
        if !spec.body_matches(&body) {
            return Err(ProbeFailure::Body);
        }
    }
    Ok(())
}

async fn grpc_check<IO>(
    spec: &ProbeSpec,
    address: SocketAddr,
    stream: IO,
) -> Result<(), ProbeFailure>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let message = grpc_wire::frame(&grpc_wire::health_request(&spec.health.service));
    let mut request = probe_request(
        Method::POST,
        address,
        grpc_wire::HEALTH_CHECK,
        true,
        message,
    )?;
    let headers = request.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("te", http::HeaderValue::from_static("trailers"));
    let response = send(stream, request, true).await?;
    if response.status() != http::StatusCode::OK {
        return Err(ProbeFailure::Status(response.status().as_u16()));
    }
    let (body, trailers) = read_bounded(response.into_body()).await?;
    let grpc_status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing");
    if grpc_status != "0" {
        return Err(ProbeFailure::Grpc(format!("grpc-status {grpc_status}")));
    }
    let serving = grpc_wire::unframe(&body)
        .map_err(|e| ProbeFailure::Grpc(e.to_string()))
        .and_then(|m| {
            grpc_wire::decode_health_response(m).map_err(|e| ProbeFailure::Grpc(e.to_string()))
        })?;
    if serving != grpc_wire::SERVING {
        return Err(ProbeFailure::Grpc(format!("serving status {serving}")));
    }
    Ok(())
}

fn probe_request(
    method: Method,
    address: SocketAddr,
    path: &str,
    h2: bool,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, ProbeFailure> {
    let authority = address.to_string();
    let uri: Uri = if h2 {
        format!("http://{authority}{path}").parse()
    } else {
        path.parse()
    }
    .map_err(exchange)?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(
        USER_AGENT,
        http::HeaderValue::from_static("switchyard-health"),
    );
    if h2 {
        *request.version_mut() = Version::HTTP_2;
    } else {
        headers.insert(
            HOST,
            http::HeaderValue::from_str(&authority).map_err(exchange)?,
        );
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Ok(request)
}

async fn send<IO>(
    stream: IO,
    request: Request<Full<Bytes>>,
    h2: bool,
) -> Result<http::Response<Incoming>, ProbeFailure>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    if h2 {
        let (mut sender, connection) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(exchange)?;
        tokio::spawn(connection);
        sender.send_request(request).await.map_err(exchange)
    } else {
        let (mut sender, connection) = http1::handshake(io).await.map_err(exchange)?;
        tokio::spawn(connection);
        sender.send_request(request).await.map_err(exchange)
    }
}

/// The body up to [`MAX_BODY`] bytes (the rest is not read) and the trailers, if any.
async fn read_bounded(
    mut body: Incoming,
) -> Result<(BytesMut, Option<http::HeaderMap>), ProbeFailure> {
    let mut out = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(exchange)?;
        match frame.into_data() {
            Ok(data) => {
                let room = MAX_BODY.saturating_sub(out.len());
                out.extend_from_slice(&data[..data.len().min(room)]);
                if out.len() >= MAX_BODY {
                    break;
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok((out, trailers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(expect_body: Option<ValueMatch>) -> ProbeSpec {
        let health = Health {
            kind: HealthKind::Http,
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            expect_status: vec![StatusRange { from: 200, to: 399 }],
            expect_body,
            service: String::new(),
            jitter_percent: 10.0,
        };
        ProbeSpec::new(
            &health,
            UpstreamProtocol::Http1,
            Duration::from_secs(1),
            None,
        )
    }

    #[test]
    fn expect_body_is_a_substring_or_a_regex() {
        assert!(spec(None).body_matches(b"anything"));
        let exact = spec(Some(ValueMatch::Exact("ok".into())));
        assert!(exact.body_matches(b"all ok here"));
        assert!(!exact.body_matches(b"unhealthy"));
        let regex = spec(Some(ValueMatch::Regex("^status=(up|ok)$".into())));
        assert!(regex.body_matches(b"status=up"));
        assert!(!regex.body_matches(b"status=down"));
    }

    #[test]
    fn statuses_are_judged_against_every_range() {
        let ranges = [
            StatusRange { from: 200, to: 204 },
            StatusRange { from: 418, to: 418 },
        ];
        assert!(status_expected(&ranges, 204));
        assert!(status_expected(&ranges, 418));
        assert!(!status_expected(&ranges, 301));
    }
}
